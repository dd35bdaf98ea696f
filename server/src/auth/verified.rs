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

pub struct VerifiedPasswords {
    key: [u8; 32],
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    until: HashMap<Fingerprint, Instant>,
    order: VecDeque<Fingerprint>,
}

impl Default for VerifiedPasswords {
    fn default() -> Self {
        VerifiedPasswords {
            key: rand::random(),
            inner: Mutex::default(),
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
        self.inner.lock().until.get(f).is_some_and(|u| now < *u)
    }

    pub fn insert(&self, f: Fingerprint, now: Instant) {
        let mut inner = self.inner.lock();
        if inner.until.insert(f, now + VERIFIED_TTL).is_none() {
            inner.order.push_back(f);
        }
        while inner.order.len() > VERIFIED_CAPACITY {
            if let Some(old) = inner.order.pop_front() {
                inner.until.remove(&old);
            }
        }
        debug_assert_eq!(inner.order.len(), inner.until.len());
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
        assert_eq!(v.inner.lock().until.len(), VERIFIED_CAPACITY);
    }
}
