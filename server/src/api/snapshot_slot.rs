//! Which incoming snapshot stream a member is receiving: one at a time,
//! the newest from the current leader.
//!
//! Why not "first come, first served": a leader that loses its leadership
//! in the middle of a transfer (moved, partitioned, frozen) can hold its
//! stream open for as long as the link lets it, and the new leader's
//! snapshot, the only one raft will accept, would be refused until then.
//! Its follower cannot catch up, and if the cluster needs that follower
//! for a quorum, writes stop (found by the robustness runs'
//! `snapshot-leader-change` fault). A sender has at most one snapshot on
//! its way to a peer (raft waits for the report of one before it sends
//! another), so a new stream from the same leader means its earlier one
//! has failed on its side, whatever this side still sees.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use tokio::sync::watch;

/// The member's one receive slot.
#[derive(Default)]
pub struct SnapshotSlot {
    current: Mutex<Option<Holder>>,
    next_id: AtomicU64,
}

struct Holder {
    id: u64,
    from: u64,
    term: u64,
    /// Set to true to tell the holder's stream to stop.
    cancel: watch::Sender<bool>,
}

/// A claimed slot; dropping it frees the slot (unless a newer stream
/// took it over meanwhile).
pub struct Claim {
    slot: Arc<SnapshotSlot>,
    id: u64,
    /// Becomes true when a newer stream takes the slot over.
    pub superseded: watch::Receiver<bool>,
}

impl SnapshotSlot {
    /// Claims the slot for a stream from `from` at `term`. The caller has
    /// already checked that `from` is the leader this member follows now
    /// and that `term` is not behind this member's. A stream still holding
    /// the slot is told to stop: it is an earlier leader's, or an earlier
    /// attempt of this one's.
    pub fn claim(self: &Arc<Self>, from: u64, term: u64) -> Claim {
        let mut current = self.current.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(h) = current.as_ref() {
            tracing::info!(
                from = %format!("{:x}", h.from),
                term = h.term,
                new_from = %format!("{from:x}"),
                new_term = term,
                "abandoning a snapshot being received: a newer one from the leader is coming"
            );
            let _ = h.cancel.send(true);
        }
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (cancel, superseded) = watch::channel(false);
        *current = Some(Holder {
            id,
            from,
            term,
            cancel,
        });
        Claim {
            slot: Arc::clone(self),
            id,
            superseded,
        }
    }
}

impl Claim {
    /// Unique among this member's claims since it started.
    pub fn id(&self) -> u64 {
        self.id
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

    fn holder(slot: &SnapshotSlot) -> Option<(u64, u64)> {
        slot.current
            .lock()
            .unwrap()
            .as_ref()
            .map(|h| (h.from, h.term))
    }

    #[test]
    fn a_newer_stream_supersedes_the_one_holding_the_slot() {
        let slot = Arc::new(SnapshotSlot::default());
        let old = slot.claim(1, 5);
        assert!(!*old.superseded.borrow());
        // A new leader.
        let new = slot.claim(2, 6);
        assert!(*old.superseded.borrow(), "the old stream is told to stop");
        assert!(!*new.superseded.borrow());
        assert_ne!(old.id(), new.id());
        // The old stream ending must not free the new one's slot.
        drop(old);
        assert_eq!(holder(&slot), Some((2, 6)));
        // The same leader trying again: its first attempt failed on its side.
        let again = slot.claim(2, 6);
        assert!(*new.superseded.borrow());
        drop(new);
        assert_eq!(holder(&slot), Some((2, 6)));
        drop(again);
        assert_eq!(holder(&slot), None, "freed when the last stream ends");
    }
}
