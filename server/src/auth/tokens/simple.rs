//! etcd's "simple" tokens: 16 random letters, a dot and the raft index of
//! the `Authenticate` entry that created them (`sssvIpwfnLAcWAQH.9`).
//!
//! They mean something only to members that know them, so they travel
//! through raft: the member that receives `Authenticate` draws the random
//! prefix ([`SimpleTokens::generate_prefix`]) and proposes it; every member
//! registers `prefix.index` when it applies the entry. Each member then
//! keeps its own expiry clock: a token lives `--auth-token-ttl` (default
//! 300 s) after its last use on that member, as in etcd.
//!
//! Clocks are parameters (`now`), so tests need no sleeping and nothing
//! here reads the time by itself. The number of live tokens is bounded:
//! registering beyond the bound first drops the tokens closest to expiry,
//! which keeps a login storm from growing memory without limit.

use parking_lot::Mutex;
use rand::Rng;
use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

/// Length of the random part.
pub const PREFIX_LEN: usize = 16;
/// etcd's default `--auth-token-ttl`.
pub const DEFAULT_TTL: Duration = Duration::from_secs(300);
/// Default bound on live tokens per member.
pub const DEFAULT_MAX_TOKENS: usize = 100_000;

const LETTERS: &[u8] = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ";

struct Entry {
    user: String,
    revision: u64,
    expires: Instant,
    /// Tie-breaker in `by_expiry` for tokens expiring at the same instant.
    seq: u64,
}

#[derive(Default)]
struct Inner {
    tokens: HashMap<String, Entry>,
    /// (expiry, seq) → token: the next to expire first.
    by_expiry: BTreeMap<(Instant, u64), String>,
    next_seq: u64,
}

impl Inner {
    fn remove(&mut self, token: &str) -> Option<Entry> {
        let e = self.tokens.remove(token)?;
        self.by_expiry.remove(&(e.expires, e.seq));
        Some(e)
    }

    fn pop_first(&mut self) {
        if let Some((_, token)) = self.by_expiry.pop_first() {
            self.tokens.remove(&token);
        }
    }
}

/// The live simple tokens of this member. Internally locked, so a shared
/// reference is enough for every operation.
pub struct SimpleTokens {
    ttl: Duration,
    max_tokens: usize,
    inner: Mutex<Inner>,
}

// Tokens are bearer secrets: never print them.
impl std::fmt::Debug for SimpleTokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SimpleTokens")
            .field("ttl", &self.ttl)
            .field("max_tokens", &self.max_tokens)
            .field("live", &self.len())
            .finish()
    }
}

impl SimpleTokens {
    /// `ttl`: `--auth-token-ttl`; `max_tokens`: the bound on live tokens
    /// (at least 1).
    pub fn new(ttl: Duration, max_tokens: usize) -> SimpleTokens {
        SimpleTokens {
            ttl,
            max_tokens: max_tokens.max(1),
            inner: Mutex::new(Inner::default()),
        }
    }

    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    /// The random part of a new token, drawn from the OS's CSPRNG (etcd
    /// uses a non-cryptographic generator; a bearer token deserves better).
    /// 16 letters out of 52 carry about 91 bits.
    pub fn generate_prefix() -> String {
        let mut rng = rand::rngs::OsRng;
        (0..PREFIX_LEN)
            .map(|_| LETTERS[rng.gen_range(0..LETTERS.len())] as char)
            .collect()
    }

    /// The token for a prefix and the raft index of its entry.
    pub fn token(prefix: &str, index: u64) -> String {
        format!("{prefix}.{index}")
    }

    /// The raft index a token was created at, if it has the simple form.
    /// A member that has not applied that index yet does not know the token
    /// yet: etcd waits until it has before looking the token up, and the
    /// lead should too (bounded by the request timeout).
    pub fn index_of(token: &str) -> Option<u64> {
        let (prefix, index) = token.split_once('.')?;
        if prefix.len() != PREFIX_LEN || !prefix.bytes().all(|b| b.is_ascii_alphabetic()) {
            return None;
        }
        if index.is_empty() || !index.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        index.parse().ok()
    }

    /// Registers a token applied from raft (every member does this). A
    /// token already registered is replaced (cannot happen with distinct
    /// raft indexes; etcd would abort).
    pub fn register(&self, token: &str, user: &str, revision: u64, now: Instant) {
        let mut st = self.inner.lock();
        st.remove(token);
        while st.tokens.len() >= self.max_tokens {
            st.pop_first();
        }
        let seq = st.next_seq;
        st.next_seq += 1;
        let expires = now + self.ttl;
        st.by_expiry.insert((expires, seq), token.to_string());
        st.tokens.insert(
            token.to_string(),
            Entry {
                user: user.to_string(),
                revision,
                expires,
                seq,
            },
        );
    }

    /// The user and registration revision of a live token. Using a token
    /// restarts its TTL. An expired token is dropped and reported unknown.
    pub fn lookup(&self, token: &str, now: Instant) -> Option<(String, u64)> {
        let mut st = self.inner.lock();
        let e = st.remove(token)?;
        if now >= e.expires {
            return None;
        }
        let found = (e.user.clone(), e.revision);
        let expires = now + self.ttl;
        st.by_expiry.insert((expires, e.seq), token.to_string());
        st.tokens.insert(token.to_string(), Entry { expires, ..e });
        Some(found)
    }

    /// Drops every token expired at `now`; returns how many. Call it now
    /// and then (etcd sweeps once a second); lookups never return expired
    /// tokens either way.
    pub fn expire(&self, now: Instant) -> usize {
        let mut st = self.inner.lock();
        let mut n = 0;
        while let Some(((expires, _), _)) = st.by_expiry.first_key_value() {
            if *expires > now {
                break;
            }
            st.pop_first();
            n += 1;
        }
        n
    }

    /// Drops all tokens of a user (its password changed or it was deleted).
    pub fn invalidate_user(&self, user: &str) {
        let mut st = self.inner.lock();
        let doomed: Vec<String> = st
            .tokens
            .iter()
            .filter(|(_, e)| e.user == user)
            .map(|(t, _)| t.clone())
            .collect();
        for t in doomed {
            st.remove(&t);
        }
    }

    /// Drops every token (auth was disabled).
    pub fn clear(&self) {
        let mut st = self.inner.lock();
        st.tokens.clear();
        st.by_expiry.clear();
    }

    pub fn len(&self) -> usize {
        self.inner.lock().tokens.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: Duration = Duration::from_secs(1);

    #[test]
    fn prefixes_are_16_random_letters() {
        let a = SimpleTokens::generate_prefix();
        let b = SimpleTokens::generate_prefix();
        assert_eq!(a.len(), PREFIX_LEN);
        assert!(a.bytes().all(|c| c.is_ascii_alphabetic()), "{a}");
        assert_ne!(a, b);
        let t = SimpleTokens::token(&a, 9);
        assert_eq!(SimpleTokens::index_of(&t), Some(9));
    }

    #[test]
    fn index_of_accepts_only_the_simple_form() {
        assert_eq!(SimpleTokens::index_of("sssvIpwfnLAcWAQH.9"), Some(9));
        assert_eq!(SimpleTokens::index_of("pohxxEkgcuGldwVi.1115"), Some(1115));
        for bad in [
            "",
            ".",
            "sssvIpwfnLAcWAQH.",
            "sssvIpwfnLAcWAQH.-1",
            "sssvIpwfnLAcWAQH.1.2",
            "sssvIpwfnLAcWAQ.9",
            "sssvIpwfnLAcWA1H.9",
            "sssvIpwfnLAcWAQH.99999999999999999999999",
            "eyJhbGciOiJSUzI1NiJ9.e30.sig",
        ] {
            assert_eq!(SimpleTokens::index_of(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn ttl_restarts_on_every_use() {
        let t0 = Instant::now();
        let st = SimpleTokens::new(10 * S, 10);
        st.register("AAAAAAAAAAAAAAAA.1", "alice", 7, t0);
        assert_eq!(
            st.lookup("AAAAAAAAAAAAAAAA.1", t0 + 9 * S),
            Some(("alice".into(), 7))
        );
        // 18 s after registration but 9 s after the last use: still alive.
        assert!(st.lookup("AAAAAAAAAAAAAAAA.1", t0 + 18 * S).is_some());
        // 10 s without use: gone for good.
        assert_eq!(st.lookup("AAAAAAAAAAAAAAAA.1", t0 + 28 * S), None);
        assert_eq!(st.lookup("AAAAAAAAAAAAAAAA.1", t0 + 18 * S), None);
        assert!(st.is_empty());
        assert_eq!(st.lookup("unknown", t0), None);
    }

    #[test]
    fn expire_sweeps_only_expired_tokens() {
        let t0 = Instant::now();
        let st = SimpleTokens::new(10 * S, 10);
        st.register("a.1", "u", 1, t0);
        st.register("b.2", "u", 1, t0 + 5 * S);
        st.register("c.3", "v", 1, t0 + 5 * S);
        assert_eq!(st.expire(t0 + 9 * S), 0);
        assert_eq!(st.expire(t0 + 10 * S), 1);
        assert_eq!(st.len(), 2);
        // A use pushes b's expiry out past c's.
        assert!(st.lookup("b.2", t0 + 14 * S).is_some());
        assert_eq!(st.expire(t0 + 15 * S), 1);
        assert!(st.lookup("c.3", t0 + 15 * S).is_none());
        assert!(st.lookup("b.2", t0 + 15 * S).is_some());
    }

    #[test]
    fn capacity_drops_the_tokens_closest_to_expiry() {
        let t0 = Instant::now();
        let st = SimpleTokens::new(100 * S, 3);
        st.register("a.1", "u", 1, t0);
        st.register("b.2", "u", 1, t0 + S);
        st.register("c.3", "u", 1, t0 + 2 * S);
        // Using a makes b the least recently used.
        assert!(st.lookup("a.1", t0 + 3 * S).is_some());
        st.register("d.4", "u", 1, t0 + 4 * S);
        assert_eq!(st.len(), 3);
        assert!(st.lookup("b.2", t0 + 5 * S).is_none());
        for t in ["a.1", "c.3", "d.4"] {
            assert!(st.lookup(t, t0 + 5 * S).is_some(), "{t}");
        }
        // A bound of 0 still keeps the newest token.
        let one = SimpleTokens::new(S, 0);
        one.register("x.1", "u", 1, t0);
        one.register("y.2", "u", 1, t0);
        assert_eq!(one.len(), 1);
        assert!(one.lookup("y.2", t0).is_some());
    }

    #[test]
    fn debug_output_hides_tokens() {
        let st = SimpleTokens::new(S, 10);
        st.register("SECRETSECRETSECR.1", "alice", 1, Instant::now());
        let shown = format!("{st:?}");
        assert!(
            !shown.contains("SECRET") && !shown.contains("alice"),
            "{shown}"
        );
        assert!(shown.contains("live: 1"), "{shown}");
    }

    #[test]
    fn invalidate_and_clear() {
        let t0 = Instant::now();
        let st = SimpleTokens::new(10 * S, 10);
        st.register("a.1", "alice", 1, t0);
        st.register("b.2", "alice", 1, t0);
        st.register("c.3", "bob", 1, t0);
        st.invalidate_user("alice");
        assert_eq!(st.len(), 1);
        assert!(st.lookup("a.1", t0).is_none());
        assert!(st.lookup("c.3", t0).is_some());
        // Re-registering a token replaces it.
        st.register("c.3", "carol", 2, t0);
        assert_eq!(st.lookup("c.3", t0), Some(("carol".into(), 2)));
        assert_eq!(st.len(), 1);
        st.clear();
        assert!(st.is_empty());
        assert_eq!(st.expire(t0 + 100 * S), 0);
    }
}
