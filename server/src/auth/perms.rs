//! Key-permission coverage: a user's grants merged into sorted, disjoint
//! intervals, so a check is one binary search.
//!
//! etcd keeps each user's grants in an interval tree and asks "is every key
//! of the request inside the union of the grants?". A merged interval set
//! answers the same question: after merging, a range is covered exactly
//! when a single merged interval contains it (touching grants such as
//! `[a,c)` and `[c,e)` merge into `[a,e)`).
//!
//! Grant forms (etcd's, from `authpb.Permission`):
//! - `range_end` empty: the single key `key`, i.e. `[key, key\0)`;
//! - `range_end == "\0"`: every key from `key` on, `[key, ∞)`;
//! - otherwise `[key, range_end)`.
//!
//! Two degenerate grants cover nothing, as in etcd 3.4.23 (checked): an
//! empty `key` (etcd's interval arithmetic reads the empty key as +∞;
//! etcdctl sends `\0` for "everything") and an inverted or empty
//! `[key, range_end)` with `range_end <= key`.

use crate::pb::authpb::{Permission, permission::Type as PermType};
use std::cmp::Ordering;

/// The end of an interval: a key (exclusive) or past every key.
#[derive(Debug, Clone, PartialEq, Eq)]
enum End {
    Key(Vec<u8>),
    Inf,
}

impl End {
    /// Is `key` strictly before this end?
    fn after(&self, key: &[u8]) -> bool {
        match self {
            End::Inf => true,
            End::Key(e) => key < e.as_slice(),
        }
    }

    /// Does this end come strictly before `key` (a gap between the span
    /// and a span starting at `key`)?
    fn before(&self, key: &[u8]) -> bool {
        match self {
            End::Inf => false,
            End::Key(e) => e.as_slice() < key,
        }
    }

    fn cmp_end(&self, other: &End) -> Ordering {
        match (self, other) {
            (End::Inf, End::Inf) => Ordering::Equal,
            (End::Inf, End::Key(_)) => Ordering::Greater,
            (End::Key(_), End::Inf) => Ordering::Less,
            (End::Key(a), End::Key(b)) => a.cmp(b),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Span {
    start: Vec<u8>,
    end: End,
}

/// The union of some key intervals, kept sorted, disjoint and with no two
/// spans touching.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct IntervalSet {
    spans: Vec<Span>,
}

/// The interval a grant covers, or None for the degenerate grants.
fn grant_span(key: &[u8], range_end: &[u8]) -> Option<Span> {
    if key.is_empty() {
        return None;
    }
    let end = if range_end.is_empty() {
        let mut e = Vec::with_capacity(key.len() + 1);
        e.extend_from_slice(key);
        e.push(0);
        End::Key(e)
    } else if range_end == [0] {
        End::Inf
    } else if range_end <= key {
        return None;
    } else {
        End::Key(range_end.to_vec())
    };
    Some(Span {
        start: key.to_vec(),
        end,
    })
}

impl IntervalSet {
    fn from_spans(mut spans: Vec<Span>) -> IntervalSet {
        spans.sort_by(|a, b| a.start.cmp(&b.start));
        let mut out: Vec<Span> = Vec::with_capacity(spans.len());
        for s in spans {
            match out.last_mut() {
                // `s` starts inside `last` or right where it ends: merge.
                Some(last) if !last.end.before(&s.start) => {
                    if last.end.cmp_end(&s.end) == Ordering::Less {
                        last.end = s.end;
                    }
                }
                _ => out.push(s),
            }
        }
        IntervalSet { spans: out }
    }

    /// The span with the greatest start not after `key`.
    fn floor(&self, key: &[u8]) -> Option<&Span> {
        let idx = self.spans.partition_point(|s| s.start.as_slice() <= key);
        idx.checked_sub(1).map(|i| &self.spans[i])
    }

    /// Is every key of a request's `[key, range_end)` covered?
    ///
    /// Request forms, as etcd reads them: empty `range_end` is the single
    /// key; `"\0"` is "from `key` on"; an inverted or empty range
    /// (`range_end <= key`) selects no keys, and etcd 3.4 allows it exactly
    /// when `key` itself is covered (checked against etcd 3.4.23:
    /// `get b a` is allowed with a grant `[a,e)`, `get e b` is not). An
    /// empty `key` is covered by nothing (the KV layer rejects it first).
    pub(crate) fn covers(&self, key: &[u8], range_end: &[u8]) -> bool {
        if key.is_empty() {
            return false;
        }
        let Some(span) = self.floor(key) else {
            return false;
        };
        if range_end.is_empty() || (range_end <= key && range_end != [0]) {
            return span.end.after(key);
        }
        if range_end == [0] {
            return span.end == End::Inf;
        }
        // `span` starts at or before `key`; it must reach `range_end`.
        span.end.cmp_end(&End::Key(range_end.to_vec())) != Ordering::Less
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.spans.len()
    }
}

/// What one user may do: merged read and write intervals, or everything
/// (the `root` role).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct UserPerms {
    pub(crate) root: bool,
    pub(crate) read: IntervalSet,
    pub(crate) write: IntervalSet,
}

impl UserPerms {
    /// Merges the permissions of all of a user's roles. READWRITE grants
    /// count for both sets. An unknown permission type (a newer peer's
    /// enum value) grants nothing rather than everything.
    pub(crate) fn build<'a>(root: bool, perms: impl Iterator<Item = &'a Permission>) -> UserPerms {
        let mut read = Vec::new();
        let mut write = Vec::new();
        for p in perms {
            let Some(span) = grant_span(&p.key, &p.range_end) else {
                continue;
            };
            match PermType::try_from(p.perm_type) {
                Ok(PermType::Read) => read.push(span),
                Ok(PermType::Write) => write.push(span),
                Ok(PermType::Readwrite) => {
                    read.push(span.clone());
                    write.push(span);
                }
                Err(_) => {}
            }
        }
        UserPerms {
            root,
            read: IntervalSet::from_spans(read),
            write: IntervalSet::from_spans(write),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn perm(t: PermType, key: &[u8], end: &[u8]) -> Permission {
        Permission {
            perm_type: t as i32,
            key: Bytes::copy_from_slice(key),
            range_end: Bytes::copy_from_slice(end),
        }
    }

    fn reads(grants: &[(&[u8], &[u8])]) -> IntervalSet {
        let ps: Vec<Permission> = grants
            .iter()
            .map(|(k, e)| perm(PermType::Read, k, e))
            .collect();
        UserPerms::build(false, ps.iter()).read
    }

    #[test]
    fn single_key_grant_covers_only_that_key() {
        let s = reads(&[(b"a", b"")]);
        assert!(s.covers(b"a", b""));
        assert!(!s.covers(b"a\0", b""));
        assert!(!s.covers(b"b", b""));
        assert!(!s.covers(b"", b""));
        // [a, a\0) is exactly the key a.
        assert!(s.covers(b"a", b"a\0"));
        assert!(!s.covers(b"a", b"a\0\0"));
        assert!(!s.covers(b"a", b"b"));
        assert!(!s.covers(b"a", b"\0"));
    }

    #[test]
    fn ranges_union_overlapping_and_touching_grants() {
        let s = reads(&[(b"a", b"c"), (b"c", b"e"), (b"d", b"g"), (b"x", b"")]);
        assert_eq!(s.len(), 2, "[a,g) and the key x");
        assert!(s.covers(b"a", b"g"));
        assert!(s.covers(b"b", b"f"));
        assert!(!s.covers(b"a", b"g\0"));
        assert!(!s.covers(b"a", b"x"));
        assert!(s.covers(b"x", b""));
        assert!(!s.covers(b"f", b"y"), "gap between g and x");
        // A grant nested in another changes nothing.
        let t = reads(&[(b"a", b"z"), (b"c", b"d")]);
        assert_eq!(t.len(), 1);
        assert!(t.covers(b"a", b"z"));
    }

    #[test]
    fn gaps_between_adjacent_keys_are_not_covered() {
        // The key "a" and the range [b,d) leave (a\0 .. b) uncovered: etcd
        // denies `get a d` with exactly these grants (checked).
        let s = reads(&[(b"a", b""), (b"b", b"d")]);
        assert!(!s.covers(b"a", b"c"));
        assert!(!s.covers(b"a", b"d"));
        assert!(s.covers(b"b", b"d"));
        // a, a\0 ... covers [a, a\0\0) when both single keys are granted.
        let t = reads(&[(b"a", b""), (b"a\0", b"")]);
        assert!(t.covers(b"a", b"a\0\0"));
    }

    #[test]
    fn from_key_grants_and_requests() {
        let s = reads(&[(b"m", b"\0")]);
        assert!(s.covers(b"m", b""));
        assert!(s.covers(b"zzz", b""));
        assert!(s.covers(b"m", b"\0"));
        assert!(s.covers(b"n", b"\0"));
        assert!(!s.covers(b"l", b"\0"));
        assert!(s.covers(b"m", b"zz"));
        assert!(s.covers(b"m", b"n"), "prefix m");
        assert!(!s.covers(b"\0", b"\0"), "whole keyspace");
        // A bounded grant never covers a from-key request.
        let b = reads(&[(b"a", b"zzzz")]);
        assert!(!b.covers(b"b", b"\0"));
    }

    #[test]
    fn whole_keyspace_grant() {
        // etcdctl `role grant-permission r read --prefix ""` sends \0..\0.
        let s = reads(&[(b"\0", b"\0")]);
        assert!(s.covers(b"\0", b"\0"));
        assert!(s.covers(b"\0", b""));
        assert!(s.covers(b"a", b""));
        assert!(s.covers(b"\xff\xff", b"\0"));
        assert!(!s.covers(b"", b""), "the empty key is never covered");
        assert!(!s.covers(b"", b"\0"));
    }

    #[test]
    fn degenerate_grants_cover_nothing() {
        // Empty key with or without \0 (etcd 3.4.23 denies `get a` then).
        let s = reads(&[(b"", b"\0"), (b"", b""), (b"b", b"a"), (b"a", b"a")]);
        assert_eq!(s.len(), 0);
        assert!(!s.covers(b"a", b""));
        assert!(!s.covers(b"\0", b"\0"));
    }

    #[test]
    fn inverted_requests_need_their_start_key() {
        // Observed on etcd 3.4.23 with the grant [a,e): `get b a`, `get c b`,
        // `get b b` allowed; `get e b` denied.
        let s = reads(&[(b"a", b"e")]);
        assert!(s.covers(b"b", b"a"));
        assert!(s.covers(b"c", b"b"));
        assert!(s.covers(b"b", b"b"));
        assert!(!s.covers(b"e", b"b"));
    }

    #[test]
    fn readwrite_counts_for_both_and_root_is_flagged() {
        let ps = [
            perm(PermType::Readwrite, b"a", b"c"),
            perm(PermType::Write, b"x", b""),
            Permission {
                perm_type: 99,
                key: Bytes::from_static(b"q"),
                range_end: Bytes::new(),
            },
        ];
        let p = UserPerms::build(false, ps.iter());
        assert!(p.read.covers(b"b", b""));
        assert!(p.write.covers(b"b", b""));
        assert!(p.write.covers(b"x", b""));
        assert!(!p.read.covers(b"x", b""));
        assert!(!p.read.covers(b"q", b"") && !p.write.covers(b"q", b""));
        assert!(!p.root);
    }

    /// Independent oracle: split `[key, end)` at every grant boundary; each
    /// piece is covered iff its first key lies in some (unmerged) grant.
    fn oracle(grants: &[(Vec<u8>, Vec<u8>)], key: &[u8], end: &[u8]) -> bool {
        let spans: Vec<Span> = grants
            .iter()
            .filter_map(|(k, e)| grant_span(k, e))
            .collect();
        let inside = |x: &[u8]| {
            spans
                .iter()
                .any(|s| s.start.as_slice() <= x && s.end.after(x))
        };
        let req_end = if end == [0] {
            End::Inf
        } else {
            End::Key(end.to_vec())
        };
        let mut cuts: Vec<Vec<u8>> = vec![key.to_vec()];
        for s in &spans {
            cuts.push(s.start.clone());
            if let End::Key(e) = &s.end {
                cuts.push(e.clone());
            }
        }
        cuts.sort();
        cuts.dedup();
        cuts.iter()
            .filter(|c| c.as_slice() >= key && req_end.after(c))
            .all(|c| inside(c))
    }

    #[test]
    fn random_grants_agree_with_an_oracle() {
        // A small xorshift keeps the test deterministic without a crate.
        let mut seed = 0x9e37_79b9_7f4a_7c15_u64;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        let key = |n: u64| -> Vec<u8> {
            let len = 1 + (n % 3) as usize;
            (0..len)
                .map(|i| b"abc\0"[((n >> (8 * i + 2)) % 4) as usize])
                .collect()
        };
        for _ in 0..400 {
            let mut grants = Vec::new();
            for _ in 0..(next() % 5) {
                let k = key(next());
                let e = match next() % 4 {
                    0 => vec![],
                    1 => vec![0],
                    _ => key(next()),
                };
                grants.push((k, e));
            }
            let ps: Vec<Permission> = grants
                .iter()
                .map(|(k, e)| perm(PermType::Read, k, e))
                .collect();
            let set = UserPerms::build(false, ps.iter()).read;
            for _ in 0..20 {
                let k = key(next());
                let e = if next() % 5 == 0 {
                    vec![0]
                } else {
                    key(next())
                };
                if e != [0] && e <= k {
                    continue;
                }
                assert_eq!(
                    set.covers(&k, &e),
                    oracle(&grants, &k, &e),
                    "grants {grants:?} request {k:?}..{e:?}"
                );
            }
        }
    }
}
