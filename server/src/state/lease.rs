//! Leases: etcd's lessor.
//!
//! Two halves. The replicated half — which leases exist, their granted TTL
//! and the keys attached to them — changes only in the apply loop, so every
//! member agrees on it; the lease list is stored in the state machine's
//! metadata and key attachments are derived from the keys' `lease` field.
//! The leader's half — when each lease expires — lives only in the leader's
//! memory: the leader renews leases on keep-alive and proposes a revoke when
//! one expires. When a member becomes leader (once it has applied its own
//! first entry of the term, so it knows every lease) it "promotes": every
//! lease gets a fresh full TTL plus an election timeout, so no lease expires
//! early because of a leader change.
//!
//! With `--experimental-enable-lease-checkpoint` the leader also records,
//! through raft, how much of each long lease is left (every checkpoint
//! interval, for leases that outlive it), and a new leader starts a
//! checkpointed lease at that remainder instead of its full TTL: leader
//! changes no longer extend leases. A renewal clears the record (again
//! through raft) so the next leader does not cut a renewed lease short.

use bytes::Bytes;
use parking_lot::Mutex;
use std::collections::{BTreeSet, HashMap};
use std::time::{Duration, Instant};

/// etcd's upper bound for a lease TTL, in seconds.
pub const MAX_LEASE_TTL_SECS: i64 = 9_000_000_000;
/// Leases the leader revokes per expiry sweep at most (etcd: 1000/s).
pub const MAX_REVOKES_PER_SWEEP: usize = 500;
/// A revoke that has not been applied after this long is proposed again.
const REVOKE_RETRY: Duration = Duration::from_secs(3);
/// Lease checkpoints in one raft entry at most (etcd: 1000).
pub const MAX_CHECKPOINTS_PER_ENTRY: usize = 1000;

#[derive(Debug)]
struct Lease {
    ttl_secs: i64,
    /// Replicated: the remaining TTL the leader last checkpointed (0: none).
    checkpoint_secs: i64,
    keys: BTreeSet<Bytes>,
    /// Leader only: when the lease expires.
    expiry: Option<Instant>,
    /// Leader only: a revoke was proposed at this time.
    revoking: Option<Instant>,
}

#[derive(Debug, Default)]
struct State {
    leases: HashMap<i64, Lease>,
    /// key → lease, for keys that have one.
    key_lease: HashMap<Bytes, i64>,
    /// The raft term this member leads and tracks expiry in; 0 while it
    /// is not the primary (leaders' terms start at 1).
    primary_term: u64,
    /// Leader only: leases renewed while they carried a checkpoint, whose
    /// record must be cleared through raft.
    clear: BTreeSet<i64>,
}

#[derive(Debug, Default)]
pub struct Lessor {
    state: Mutex<State>,
}

/// The outcome of a keep-alive on this member.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Renewal {
    /// Renewed; the lease's TTL in seconds.
    Renewed(i64),
    NotFound,
    /// This member does not (yet) track expiry: ask the leader, or wait
    /// until the new leader has promoted.
    NotPrimary,
}

/// What TimeToLive reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseInfo {
    pub remaining_secs: i64,
    pub granted_secs: i64,
    pub keys: Vec<Bytes>,
}

impl Lessor {
    /// Replaces all state (startup, or after a snapshot was installed).
    /// `leases` are (id, granted TTL, checkpointed remaining TTL or 0).
    pub fn restore(
        &self,
        leases: Vec<(i64, i64, i64)>,
        attachments: Vec<(Bytes, i64)>,
        extend: Duration,
    ) {
        let mut st = self.state.lock();
        let primary = st.primary_term != 0;
        let now = Instant::now();
        st.clear.clear();
        st.leases = leases
            .into_iter()
            .map(|(id, ttl, checkpoint)| {
                let expiry = primary.then(|| now + extend + secs(ttl));
                (
                    id,
                    Lease {
                        ttl_secs: ttl,
                        checkpoint_secs: checkpoint,
                        keys: BTreeSet::new(),
                        expiry,
                        revoking: None,
                    },
                )
            })
            .collect();
        st.key_lease.clear();
        for (key, id) in attachments {
            if let Some(l) = st.leases.get_mut(&id) {
                l.keys.insert(key.clone());
                st.key_lease.insert(key, id);
            }
        }
    }

    // --- replicated half: called only by the apply loop -------------------

    pub fn exists(&self, id: i64) -> bool {
        self.state.lock().leases.contains_key(&id)
    }

    /// Creates a lease; false if the ID is taken.
    pub fn grant(&self, id: i64, ttl_secs: i64) -> bool {
        let mut st = self.state.lock();
        if st.leases.contains_key(&id) {
            return false;
        }
        let expiry = (st.primary_term != 0).then(|| Instant::now() + secs(ttl_secs));
        st.leases.insert(
            id,
            Lease {
                ttl_secs,
                checkpoint_secs: 0,
                keys: BTreeSet::new(),
                expiry,
                revoking: None,
            },
        );
        true
    }

    /// Records a checkpointed remaining TTL (0 clears it); the lease's
    /// granted TTL, or None if the lease is gone.
    pub fn checkpoint(&self, id: i64, remaining_secs: i64) -> Option<i64> {
        let mut st = self.state.lock();
        let l = st.leases.get_mut(&id)?;
        l.checkpoint_secs = remaining_secs.clamp(0, l.ttl_secs);
        Some(l.ttl_secs)
    }

    /// Removes a lease; returns its keys (to delete), or None if unknown.
    pub fn revoke(&self, id: i64) -> Option<Vec<Bytes>> {
        let mut st = self.state.lock();
        let lease = st.leases.remove(&id)?;
        st.clear.remove(&id);
        for k in &lease.keys {
            st.key_lease.remove(k);
        }
        Some(lease.keys.into_iter().collect())
    }

    /// Records that `key` now carries `lease` (0: none), detaching it from
    /// any previous lease.
    pub fn set_key_lease(&self, key: &Bytes, lease: i64) {
        let mut st = self.state.lock();
        if let Some(old) = st.key_lease.remove(key)
            && let Some(l) = st.leases.get_mut(&old)
        {
            l.keys.remove(key);
        }
        if lease != 0
            && let Some(l) = st.leases.get_mut(&lease)
        {
            l.keys.insert(key.clone());
            st.key_lease.insert(key.clone(), lease);
        }
    }

    pub fn ids(&self) -> Vec<i64> {
        let mut v: Vec<i64> = self.state.lock().leases.keys().copied().collect();
        v.sort_unstable();
        v
    }

    // --- leader half ------------------------------------------------------

    /// This member became leader of `term` and has applied everything
    /// before it: start every lease's clock afresh, from its checkpointed
    /// remainder when `use_checkpoints` and it has one.
    ///
    /// Called for every leader's empty entry the member applies while it
    /// leads, and that can be an earlier term's: a leader that never
    /// committed its own entry (it lost its quorum first) and is elected
    /// again commits the old and the new one together. The later term wins.
    /// Staying primary in the earlier term would stamp every revoke with
    /// it, and the apply loop refuses those for good (a lease would never
    /// expire).
    pub fn promote(&self, extend: Duration, use_checkpoints: bool, term: u64) {
        assert!(term > 0, "raft leaders' terms start at 1");
        let mut st = self.state.lock();
        if st.primary_term >= term {
            return;
        }
        st.primary_term = term;
        st.clear.clear();
        let now = Instant::now();
        for l in st.leases.values_mut() {
            let left = if use_checkpoints && l.checkpoint_secs > 0 {
                l.checkpoint_secs
            } else {
                l.ttl_secs
            };
            l.expiry = Some(now + extend + secs(left));
            l.revoking = None;
        }
    }

    pub fn demote(&self) {
        let mut st = self.state.lock();
        st.primary_term = 0;
        st.clear.clear();
        for l in st.leases.values_mut() {
            l.expiry = None;
            l.revoking = None;
        }
    }

    pub fn is_primary(&self) -> bool {
        self.state.lock().primary_term != 0
    }

    /// Keep-alive on the leader.
    pub fn renew(&self, id: i64) -> Renewal {
        let mut st = self.state.lock();
        if st.primary_term == 0 {
            return Renewal::NotPrimary;
        }
        let Some(l) = st.leases.get_mut(&id) else {
            return Renewal::NotFound;
        };
        if l.revoking.is_some() {
            // Already expired; the revoke is on its way.
            return Renewal::NotFound;
        }
        l.expiry = Some(Instant::now() + secs(l.ttl_secs));
        let ttl = l.ttl_secs;
        if l.checkpoint_secs > 0 {
            st.clear.insert(id);
        }
        Renewal::Renewed(ttl)
    }

    /// Clears that could not be proposed go back in line (leader only).
    pub fn requeue_clears(&self, ids: &[i64]) {
        let mut st = self.state.lock();
        if st.primary_term == 0 {
            return;
        }
        for id in ids {
            if st.leases.contains_key(id) {
                st.clear.insert(*id);
            }
        }
    }

    /// Leader only: the checkpoints to propose now, at most
    /// `MAX_CHECKPOINTS_PER_ENTRY`: renewed leases' records to clear (0),
    /// and with `due`, the remaining TTL of every lease that outlives
    /// `interval` (shorter ones expire or are renewed before the next
    /// round, as etcd skips them). They are valid only in the term they
    /// were computed in (see [`LeaderWork`]).
    pub fn checkpoints(&self, due: bool, interval: Duration) -> LeaderWork<(i64, i64)> {
        let mut st = self.state.lock();
        let term = st.primary_term;
        if term == 0 {
            return LeaderWork::none();
        }
        let mut out: Vec<(i64, i64)> = Vec::new();
        let mut cleared = BTreeSet::new();
        while out.len() < MAX_CHECKPOINTS_PER_ENTRY {
            let Some(id) = st.clear.pop_first() else {
                break;
            };
            out.push((id, 0));
            cleared.insert(id);
        }
        if due {
            let now = Instant::now();
            for (id, l) in &st.leases {
                if out.len() >= MAX_CHECKPOINTS_PER_ENTRY {
                    break;
                }
                let Some(left) = l.expiry.map(|e| e.saturating_duration_since(now)) else {
                    continue;
                };
                if left > interval && l.revoking.is_none() && !cleared.contains(id) {
                    out.push((*id, left.as_secs().max(1) as i64));
                }
            }
        }
        LeaderWork { term, items: out }
    }

    pub fn time_to_live(&self, id: i64, with_keys: bool) -> Option<LeaseInfo> {
        let st = self.state.lock();
        let l = st.leases.get(&id)?;
        let remaining_secs = match l.expiry {
            Some(e) => e.saturating_duration_since(Instant::now()).as_secs() as i64,
            // Followers do not track expiry: the last checkpoint, or the
            // full TTL.
            None if l.checkpoint_secs > 0 => l.checkpoint_secs,
            None => l.ttl_secs,
        };
        Some(LeaseInfo {
            remaining_secs,
            granted_secs: l.ttl_secs,
            keys: if with_keys {
                l.keys.iter().cloned().collect()
            } else {
                Vec::new()
            },
        })
    }

    /// Expired leases the leader should revoke now (each is handed out again
    /// only if its revoke has not been applied within a few seconds), valid
    /// only in the term they were found in (see [`LeaderWork`]).
    pub fn expired(&self, max: usize) -> LeaderWork<i64> {
        let mut st = self.state.lock();
        let term = st.primary_term;
        if term == 0 {
            return LeaderWork::none();
        }
        let now = Instant::now();
        let mut out = Vec::new();
        for (id, l) in st.leases.iter_mut() {
            if out.len() >= max {
                break;
            }
            let due = l.expiry.is_some_and(|e| e <= now);
            let retry = l
                .revoking
                .is_none_or(|t| now.duration_since(t) >= REVOKE_RETRY);
            if due && retry {
                l.revoking = Some(now);
                out.push(*id);
            }
        }
        LeaderWork { term, items: out }
    }
}

/// What the leader's half decided in `term`, to be proposed with that term
/// attached (`InternalRequest.leader_term`). The apply loop drops such an
/// entry unless raft appended it in the same term: a leader frozen past an
/// election wakes still primary and may find leases "expired" that the new
/// leader has renewed meanwhile; once it learns it is a follower, raft
/// forwards its proposal to the new leader, which appends it in a later
/// term, and every member then ignores it.
#[derive(Debug, PartialEq, Eq)]
pub struct LeaderWork<T> {
    pub term: u64,
    pub items: Vec<T>,
}

impl<T> LeaderWork<T> {
    fn none() -> Self {
        LeaderWork {
            term: 0,
            items: Vec::new(),
        }
    }
}

fn secs(s: i64) -> Duration {
    Duration::from_secs(s.clamp(0, MAX_LEASE_TTL_SECS) as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attach_detach_revoke() {
        let l = Lessor::default();
        assert!(l.grant(1, 10));
        assert!(!l.grant(1, 10));
        assert!(l.grant(2, 10));
        let k = Bytes::from_static(b"k");
        l.set_key_lease(&k, 1);
        assert_eq!(l.time_to_live(1, true).unwrap().keys, vec![k.clone()]);
        l.set_key_lease(&k, 2);
        assert!(l.time_to_live(1, true).unwrap().keys.is_empty());
        assert_eq!(l.revoke(2), Some(vec![k.clone()]));
        assert_eq!(l.revoke(2), None);
        // The key is no longer attached anywhere.
        l.set_key_lease(&k, 0);
        assert_eq!(l.ids(), vec![1]);
    }

    #[test]
    fn only_the_primary_expires_and_promotion_extends() {
        let l = Lessor::default();
        l.grant(7, 0);
        assert!(
            l.expired(10).items.is_empty(),
            "followers never expire leases"
        );
        assert_eq!(l.renew(7), Renewal::NotPrimary);
        l.promote(Duration::ZERO, false, 3);
        assert_eq!(
            l.expired(10),
            LeaderWork {
                term: 3,
                items: vec![7]
            }
        );
        // Handed out once, not again right away.
        assert!(l.expired(10).items.is_empty());
        l.demote();
        l.promote(Duration::from_secs(60), false, 5);
        assert!(
            l.expired(10).items.is_empty(),
            "promotion restarts the clock"
        );
        assert_eq!(l.renew(7), Renewal::Renewed(0));
        assert_eq!(l.renew(8), Renewal::NotFound);
    }

    #[test]
    fn a_later_terms_promotion_takes_over_from_an_earlier_one() {
        let l = Lessor::default();
        l.grant(7, 0);
        // Re-elected: the entries of the term it lost and of the new one
        // are applied one after the other while it leads.
        l.promote(Duration::ZERO, false, 10);
        l.promote(Duration::ZERO, false, 11);
        assert_eq!(l.expired(10).term, 11, "revokes carry the current term");
        // Not back: an earlier term's entry applied later changes nothing.
        l.promote(Duration::ZERO, false, 10);
        assert_eq!(l.checkpoints(false, Duration::ZERO).term, 11);
    }

    #[test]
    fn checkpoints_carry_over_a_leader_change_and_renewals_clear_them() {
        let l = Lessor::default();
        l.grant(1, 600);
        l.grant(2, 5);
        l.promote(Duration::ZERO, true, 2);
        // Only leases outliving the interval are checkpointed.
        let cps = l.checkpoints(true, Duration::from_secs(60));
        assert_eq!(cps.term, 2);
        let cps = cps.items;
        assert_eq!(cps.len(), 1);
        assert_eq!(cps[0].0, 1);
        assert!((598..=600).contains(&cps[0].1), "{cps:?}");
        // Applied everywhere; then a new leader takes over.
        assert_eq!(l.checkpoint(1, 100), Some(600));
        assert_eq!(l.checkpoint(9, 100), None);
        l.demote();
        assert_eq!(l.time_to_live(1, false).unwrap().remaining_secs, 100);
        l.promote(Duration::ZERO, true, 3);
        assert!(l.time_to_live(1, false).unwrap().remaining_secs <= 100);
        // A renewal restores the full TTL and asks to clear the record.
        assert_eq!(l.renew(1), Renewal::Renewed(600));
        assert_eq!(
            l.checkpoints(false, Duration::from_secs(60)).items,
            vec![(1, 0)]
        );
        assert!(
            l.checkpoints(false, Duration::from_secs(60))
                .items
                .is_empty()
        );
        // Without checkpoints in use, promotion ignores a stale record.
        l.checkpoint(1, 10);
        l.demote();
        l.promote(Duration::ZERO, false, 4);
        assert!(l.time_to_live(1, false).unwrap().remaining_secs >= 599);
    }
}
