//! A bounded memory of passwords that bcrypt already accepted.
//!
//! bcrypt is slow on purpose (tens of milliseconds at the default cost), so
//! a burst of clients logging in — or v2 clients, which send Basic
//! credentials with every request — would otherwise queue behind one
//! another on the blocking pool. A successful check is remembered as a
//! keyed SHA-256 fingerprint of (user, password, stored hash): the stored
//! hash in the fingerprint means a password change or a user re-created
//! with another password never matches an old entry, and the per-process
//! random key means the fingerprints are useless outside this process.
//! Failed checks are never remembered, so guessing still pays bcrypt.

use parking_lot::Mutex;
use sha2::{Digest, Sha256};
use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

/// Fingerprints kept; the oldest is forgotten first.
pub const VERIFIED_CAPACITY: usize = 1024;
/// How long a fingerprint is trusted before bcrypt runs again.
pub const VERIFIED_TTL: Duration = Duration::from_secs(300);

pub type Fingerprint = [u8; 32];

/// A map that keeps at most `capacity` entries, forgetting the oldest
/// insertion first. Both remembered checks (passwords here, JWT signatures
/// in `tokens::jwt`) are bounded this way.
pub struct Bounded<K, V> {
    capacity: usize,
    map: HashMap<K, V>,
    order: VecDeque<K>,
}

impl<K: std::hash::Hash + Eq + Clone, V> Bounded<K, V> {
    pub fn new(capacity: usize) -> Self {
        assert!(capacity > 0, "a bounded map needs room for one entry");
        Bounded {
            capacity,
            map: HashMap::new(),
            order: VecDeque::new(),
        }
    }

    pub fn get<Q>(&self, k: &Q) -> Option<&V>
    where
        K: std::borrow::Borrow<Q>,
        Q: std::hash::Hash + Eq + ?Sized,
    {
        self.map.get(k)
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    pub fn insert(&mut self, k: K, v: V) {
        if self.map.insert(k.clone(), v).is_none() {
            self.order.push_back(k);
        }
        while self.order.len() > self.capacity {
            if let Some(old) = self.order.pop_front() {
                self.map.remove(&old);
            }
        }
        debug_assert_eq!(self.order.len(), self.map.len());
    }
}

pub struct VerifiedPasswords {
    key: [u8; 32],
    /// Fingerprint → trusted until.
    until: Mutex<Bounded<Fingerprint, Instant>>,
}

impl Default for VerifiedPasswords {
    fn default() -> Self {
        VerifiedPasswords {
            key: rand::random(),
            until: Mutex::new(Bounded::new(VERIFIED_CAPACITY)),
        }
    }
}

impl VerifiedPasswords {
    pub fn fingerprint(&self, user: &str, password: &str, stored_hash: &str) -> Fingerprint {
        let mut h = Sha256::new();
        h.update(self.key);
        // Length prefixes keep ("ab","c") and ("a","bc") apart.
        for part in [user, password, stored_hash] {
            h.update((part.len() as u64).to_le_bytes());
            h.update(part.as_bytes());
        }
        h.finalize().into()
    }

    /// Was this exact check accepted recently?
    pub fn contains(&self, f: &Fingerprint, now: Instant) -> bool {
        self.until.lock().get(f).is_some_and(|u| now < *u)
    }

    pub fn insert(&self, f: Fingerprint, now: Instant) {
        self.until.lock().insert(f, now + VERIFIED_TTL);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remembers_only_the_same_user_password_and_hash() {
        let v = VerifiedPasswords::default();
        let now = Instant::now();
        let f = v.fingerprint("alice", "pw", "$2b$10$hash");
        v.insert(f, now);
        assert!(v.contains(&f, now));
        assert!(!v.contains(&v.fingerprint("alice", "pw", "$2b$10$other"), now));
        assert!(!v.contains(&v.fingerprint("alice", "pw2", "$2b$10$hash"), now));
        assert!(!v.contains(&v.fingerprint("alic", "epw", "$2b$10$hash"), now));
        assert!(!v.contains(&f, now + VERIFIED_TTL));
        // Another process (another key) computes other fingerprints.
        let w = VerifiedPasswords::default();
        assert_ne!(w.fingerprint("alice", "pw", "$2b$10$hash"), f);
    }

    #[test]
    fn bounded() {
        let v = VerifiedPasswords::default();
        let now = Instant::now();
        let first = v.fingerprint("u0", "p", "h");
        for i in 0..VERIFIED_CAPACITY + 10 {
            v.insert(v.fingerprint(&format!("u{i}"), "p", "h"), now);
        }
        assert!(!v.contains(&first, now), "the oldest entry is forgotten");
        assert_eq!(v.until.lock().len(), VERIFIED_CAPACITY);
    }
}
