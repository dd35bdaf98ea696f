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

#[derive(Debug)]
struct Lease {
    ttl_secs: i64,
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
    primary: bool,
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
    pub fn restore(
        &self,
        leases: Vec<(i64, i64)>,
        attachments: Vec<(Bytes, i64)>,
        extend: Duration,
    ) {
        let mut st = self.state.lock();
        let primary = st.primary;
        let now = Instant::now();
        st.leases = leases
            .into_iter()
            .map(|(id, ttl)| {
                let expiry = primary.then(|| now + extend + secs(ttl));
                (
                    id,
                    Lease {
                        ttl_secs: ttl,
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
        let expiry = st.primary.then(|| Instant::now() + secs(ttl_secs));
        st.leases.insert(
            id,
            Lease {
                ttl_secs,
                keys: BTreeSet::new(),
                expiry,
                revoking: None,
            },
        );
        true
    }

    /// Removes a lease; returns its keys (to delete), or None if unknown.
    pub fn revoke(&self, id: i64) -> Option<Vec<Bytes>> {
        let mut st = self.state.lock();
        let lease = st.leases.remove(&id)?;
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

    /// This member became leader and has applied everything before its
    /// term: start every lease's clock afresh.
    pub fn promote(&self, extend: Duration) {
        let mut st = self.state.lock();
        if st.primary {
            return;
        }
        st.primary = true;
        let now = Instant::now();
        for l in st.leases.values_mut() {
            l.expiry = Some(now + extend + secs(l.ttl_secs));
            l.revoking = None;
        }
    }

    pub fn demote(&self) {
        let mut st = self.state.lock();
        st.primary = false;
        for l in st.leases.values_mut() {
            l.expiry = None;
            l.revoking = None;
        }
    }

    pub fn is_primary(&self) -> bool {
        self.state.lock().primary
    }

    /// Keep-alive on the leader.
    pub fn renew(&self, id: i64) -> Renewal {
        let mut st = self.state.lock();
        if !st.primary {
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
        Renewal::Renewed(l.ttl_secs)
    }

    pub fn time_to_live(&self, id: i64, with_keys: bool) -> Option<LeaseInfo> {
        let st = self.state.lock();
        let l = st.leases.get(&id)?;
        let remaining_secs = match l.expiry {
            Some(e) => e.saturating_duration_since(Instant::now()).as_secs() as i64,
            // Followers do not track expiry; report the full TTL.
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
    /// only if its revoke has not been applied within a few seconds).
    pub fn expired(&self, max: usize) -> Vec<i64> {
        let mut st = self.state.lock();
        if !st.primary {
            return Vec::new();
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
        out
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
        assert!(l.expired(10).is_empty(), "followers never expire leases");
        assert_eq!(l.renew(7), Renewal::NotPrimary);
        l.promote(Duration::ZERO);
        assert_eq!(l.expired(10), vec![7]);
        // Handed out once, not again right away.
        assert!(l.expired(10).is_empty());
        l.demote();
        l.promote(Duration::from_secs(60));
        assert!(l.expired(10).is_empty(), "promotion restarts the clock");
        assert_eq!(l.renew(7), Renewal::Renewed(0));
        assert_eq!(l.renew(8), Renewal::NotFound);
    }
}
