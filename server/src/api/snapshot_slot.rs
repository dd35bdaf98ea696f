//! Which incoming snapshot stream a member is receiving: one at a time,
//! and a newer leader's stream takes the place of an older one.
//!
//! Why not simply "first come, first served": a leader that loses its
//! leadership in the middle of a transfer (moved, partitioned, frozen)
//! can hold its stream open for as long as the link lets it, and the new
//! leader's snapshot, the only one raft will accept, would be refused
//! until then. Its follower cannot catch up, and if the cluster needs that
//! follower for a quorum, writes stop (found by the robustness runs'
//! `snapshot-leader-change` fault).

use std::sync::{Arc, Mutex, PoisonError};

use tokio::sync::watch;

/// The member's one receive slot.
#[derive(Default)]
pub struct SnapshotSlot {
    current: Mutex<Option<Holder>>,
    next_id: std::sync::atomic::AtomicU64,
}

struct Holder {
    id: u64,
    from: u64,
    term: u64,
    /// Set to true to tell the holder's stream to stop.
    cancel: watch::Sender<bool>,
}

/// Why a stream may not start.
#[derive(Debug, PartialEq, Eq)]
pub struct Busy;

/// A claimed slot; dropping it frees the slot (unless a newer stream
/// took it over meanwhile).
pub struct Claim {
    slot: Arc<SnapshotSlot>,
    id: u64,
    /// Becomes true when a newer leader's stream supersedes this one.
    pub superseded: watch::Receiver<bool>,
}

impl SnapshotSlot {
    /// Claims the slot for a stream from `from` at `term`. The caller has
    /// already checked that `from` is the leader this member follows now
    /// and that `term` is not behind this member's. A stream already
    /// running from the same member at the same or a later term keeps the
    /// slot (`Busy`); any other (an earlier leader's, or an earlier term's)
    /// is told to stop and loses it.
    pub fn claim(self: &Arc<Self>, from: u64, term: u64) -> Result<Claim, Busy> {
        let mut current = self.current.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(h) = current.as_ref() {
            if h.from == from && h.term >= term {
                return Err(Busy);
            }
            tracing::info!(
                from = %format!("{:x}", h.from),
                term = h.term,
                new_from = %format!("{from:x}"),
                new_term = term,
                "abandoning a snapshot being received from a member that no longer leads"
            );
            let _ = h.cancel.send(true);
        }
        let id = self
            .next_id
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let (cancel, superseded) = watch::channel(false);
        *current = Some(Holder {
            id,
            from,
            term,
            cancel,
        });
        Ok(Claim {
            slot: Arc::clone(self),
            id,
            superseded,
        })
    }
}

impl Drop for Claim {
    fn drop(&mut self) {
        let mut current = self
            .slot
            .current
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if current.as_ref().is_some_and(|h| h.id == self.id) {
            *current = None;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_leader_waits_for_its_own_stream() {
        let slot = Arc::new(SnapshotSlot::default());
        let first = slot.claim(1, 5).expect("free");
        assert_eq!(slot.claim(1, 5).err(), Some(Busy));
        assert_eq!(slot.claim(1, 4).err(), Some(Busy));
        assert!(!*first.superseded.borrow());
        drop(first);
        assert!(slot.claim(1, 5).is_ok(), "freed on drop");
    }

    #[test]
    fn a_newer_leader_supersedes_the_old_stream() {
        let slot = Arc::new(SnapshotSlot::default());
        let old = slot.claim(1, 5).expect("free");
        let new = slot.claim(2, 6).expect("a new leader takes the slot");
        assert!(*old.superseded.borrow(), "the old stream is told to stop");
        assert!(!*new.superseded.borrow());
        // The old stream ending must not free the new one's slot.
        drop(old);
        assert_eq!(slot.claim(2, 6).err(), Some(Busy));
        // The same member at a later term (it was re-elected) also takes over.
        let again = slot.claim(2, 7).expect("later term");
        assert!(*new.superseded.borrow());
        drop(again);
        drop(new);
        assert!(slot.claim(3, 7).is_ok());
    }
}
