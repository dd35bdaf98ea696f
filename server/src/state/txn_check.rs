//! etcd's duplicate-key rule for a txn, checked before anything is proposed.
//!
//! The rule (etcd's `checkIntervals`): within one list of ops no key may be
//! put twice, and no key may be both put and covered by a delete — counting
//! nested txns, whose two branches exclude each other and so may put the same
//! key. A nested txn's puts are checked against the deletes of its level and
//! of the nested txns before it; a level's own puts against every delete
//! below it. We keep exactly those semantics, quirks included, since clients
//! see the verdict.
//!
//! What differs from a direct transcription is the cost. The check runs
//! before auth on an async worker, for anyone who can reach the port, on
//! requests with up to ~10^5 ops: it must cost about what decoding did.
//! So puts live in ordered sets and deletes in a set of disjoint intervals,
//! and every step that combines two sets walks the smaller one (looking the
//! other up in log time), so each key is touched O(log n) times however the
//! request is shaped — a deep spine of nested txns costs no more than a flat
//! list.

use crate::error::Error;
use crate::pb::etcdserverpb::{RequestOp, request_op::Request};
use bytes::Bytes;
use std::collections::{BTreeMap, BTreeSet};
use std::ops::Bound::{Excluded, Included, Unbounded};

/// Keys put by a list of ops (and the nested txns below it).
type Puts = BTreeSet<Bytes>;

/// Deleted key ranges as disjoint half-open intervals `[start, end)`, keyed
/// by start. Overlapping or touching intervals are merged on insert, so a
/// point lookup is one ordered-map probe.
#[derive(Debug, Default)]
struct Dels {
    by_start: BTreeMap<Vec<u8>, Vec<u8>>,
}

impl Dels {
    fn len(&self) -> usize {
        self.by_start.len()
    }

    fn is_empty(&self) -> bool {
        self.by_start.is_empty()
    }

    /// A DeleteRange's interval as etcd builds it: a single key when there is
    /// no range end, else `[key, range_end)` compared as raw bytes — so a
    /// from-key delete (`range_end = "\0"`) is an empty interval that
    /// conflicts with nothing (etcd's quirk, kept).
    fn insert_delete(&mut self, key: &[u8], range_end: &[u8]) {
        if range_end.is_empty() {
            self.insert(key.to_vec(), point_end(key));
        } else {
            self.insert(key.to_vec(), range_end.to_vec());
        }
    }

    fn insert(&mut self, mut start: Vec<u8>, mut end: Vec<u8>) {
        if end <= start {
            // Empty: contains no key.
            return;
        }
        // Merge with the interval that starts at or before ours and reaches it.
        let before = self
            .by_start
            .range::<[u8], _>((Unbounded, Included(start.as_slice())))
            .next_back()
            .filter(|(_, e)| e.as_slice() >= start.as_slice())
            .map(|(s, _)| s.clone());
        if let Some(s) = before
            && let Some(e) = self.by_start.remove(&s)
        {
            start = s;
            if e > end {
                end = e;
            }
        }
        // Swallow every interval that starts inside ours.
        loop {
            let inside = self
                .by_start
                .range::<[u8], _>((Included(start.as_slice()), Unbounded))
                .next()
                .filter(|(s, _)| s.as_slice() <= end.as_slice())
                .map(|(s, _)| s.clone());
            let Some(s) = inside else { break };
            if let Some(e) = self.by_start.remove(&s)
                && e > end
            {
                end = e;
            }
        }
        self.by_start.insert(start, end);
    }

    fn contains(&self, key: &[u8]) -> bool {
        self.by_start
            .range::<[u8], _>((Unbounded, Included(key)))
            .next_back()
            .is_some_and(|(_, end)| key < end.as_slice())
    }

    /// Adds `other`'s intervals, walking the smaller of the two sets.
    fn union(&mut self, mut other: Dels) {
        if other.len() > self.len() {
            std::mem::swap(self, &mut other);
        }
        for (s, e) in other.by_start {
            self.insert(s, e);
        }
    }

    /// Whether any of `puts` lies in one of these intervals.
    fn covers_any(&self, puts: &Puts) -> bool {
        if self.is_empty() || puts.is_empty() {
            return false;
        }
        if self.len() <= puts.len() {
            // Intervals are non-empty (start < end), so the range is valid.
            self.by_start.iter().any(|(s, e)| {
                puts.range::<[u8], _>((Included(s.as_slice()), Excluded(e.as_slice())))
                    .next()
                    .is_some()
            })
        } else {
            puts.iter().any(|k| self.contains(k))
        }
    }
}

/// The smallest byte string after `key`: a single-key interval's end.
fn point_end(key: &[u8]) -> Vec<u8> {
    let mut end = Vec::with_capacity(key.len() + 1);
    end.extend_from_slice(key);
    end.push(0);
    end
}

fn intersects(a: &Puts, b: &Puts) -> bool {
    let (small, large) = if a.len() <= b.len() { (a, b) } else { (b, a) };
    small.iter().any(|k| large.contains(k))
}

/// Moves `other` into `into`, walking the smaller set.
fn union_puts(into: &mut Puts, mut other: Puts) {
    if other.len() > into.len() {
        std::mem::swap(into, &mut other);
    }
    into.extend(other);
}

/// Checks one list of ops (a txn branch, nested txns included).
pub(super) fn check_intervals(ops: &[RequestOp]) -> Result<(), Error> {
    intervals(ops).map(drop)
}

/// Checks one list of ops and returns the keys it puts and the ranges it
/// deletes, this level and below, for its parent's check.
fn intervals(ops: &[RequestOp]) -> Result<(Puts, Dels), Error> {
    // This level's deletes first: nested puts are checked against them.
    let mut dels = Dels::default();
    for op in ops {
        if let Some(Request::RequestDeleteRange(d)) = &op.request {
            dels.insert_delete(&d.key, &d.range_end);
        }
    }
    let mut puts = Puts::new();
    for op in ops {
        let Some(Request::RequestTxn(t)) = &op.request else {
            continue;
        };
        let (then_puts, then_dels) = intervals(&t.success)?;
        let (else_puts, else_dels) = intervals(&t.failure)?;
        // A key from either branch must be new to this level (the two
        // branches may share keys: they never both run) and not deleted by
        // this level or an earlier nested txn.
        if intersects(&puts, &then_puts)
            || intersects(&puts, &else_puts)
            || dels.covers_any(&then_puts)
            || dels.covers_any(&else_puts)
        {
            return Err(Error::DuplicateKey);
        }
        union_puts(&mut puts, then_puts);
        union_puts(&mut puts, else_puts);
        dels.union(then_dels);
        dels.union(else_dels);
    }
    // This level's own puts, against everything put and deleted at or below it.
    for op in ops {
        let Some(Request::RequestPut(p)) = &op.request else {
            continue;
        };
        if dels.contains(&p.key) || !puts.insert(p.key.clone()) {
            return Err(Error::DuplicateKey);
        }
    }
    Ok((puts, dels))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pb::etcdserverpb::{DeleteRangeRequest, PutRequest, TxnRequest};
    use std::time::Instant;

    fn put(k: &str) -> RequestOp {
        RequestOp {
            request: Some(Request::RequestPut(PutRequest {
                key: Bytes::from(k.to_string()),
                ..Default::default()
            })),
        }
    }

    fn del(k: &str, end: &str) -> RequestOp {
        RequestOp {
            request: Some(Request::RequestDeleteRange(DeleteRangeRequest {
                key: Bytes::from(k.to_string()),
                range_end: Bytes::from(end.to_string()),
                ..Default::default()
            })),
        }
    }

    fn nested(success: Vec<RequestOp>, failure: Vec<RequestOp>) -> RequestOp {
        RequestOp {
            request: Some(Request::RequestTxn(TxnRequest {
                success,
                failure,
                ..Default::default()
            })),
        }
    }

    #[test]
    fn intervals_merge_and_answer_point_queries() {
        let mut d = Dels::default();
        d.insert_delete(b"b", b"d");
        d.insert_delete(b"c", b"f");
        d.insert_delete(b"x", b"");
        d.insert_delete(b"m", b"\0"); // from-key: empty, as etcd compares bytes
        assert_eq!(d.len(), 2, "{d:?}");
        for k in ["b", "c", "d", "e", "x"] {
            assert!(d.contains(k.as_bytes()), "{k}");
        }
        for k in ["a", "f", "m", "n", "x\0", "w"] {
            assert!(!d.contains(k.as_bytes()), "{k}");
        }
        // A wide interval swallows the ones inside it.
        d.insert_delete(b"a", b"z");
        assert_eq!(d.len(), 1);
        assert!(d.contains(b"x\0"));
    }

    #[test]
    fn delete_after_a_nested_put_is_not_seen_by_it() {
        // etcd checks a nested txn's puts against the deletes known when it
        // is reached: this level's and earlier nested txns'. A delete in a
        // *later* nested txn is never compared with it.
        let ops = vec![
            nested(vec![put("k")], vec![]),
            nested(vec![del("k", "")], vec![]),
        ];
        assert_eq!(check_intervals(&ops), Ok(()));
        let ops = vec![
            nested(vec![del("k", "")], vec![]),
            nested(vec![put("k")], vec![]),
        ];
        assert_eq!(check_intervals(&ops), Err(Error::DuplicateKey));
        // This level's own puts are checked against every delete below it.
        let ops = vec![put("k"), nested(vec![], vec![del("a", "z")])];
        assert_eq!(check_intervals(&ops), Err(Error::DuplicateKey));
    }

    /// A binary tree of nested txns, `depth` levels, with `leaf_puts`
    /// distinct keys in each leaf's success branch.
    fn tree(depth: u32, leaf_puts: usize, next: &mut usize) -> RequestOp {
        if depth == 0 {
            let puts = (0..leaf_puts)
                .map(|_| {
                    *next += 1;
                    put(&format!("k{next}"))
                })
                .collect();
            return nested(puts, vec![]);
        }
        let a = tree(depth - 1, leaf_puts, next);
        let b = tree(depth - 1, leaf_puts, next);
        nested(vec![a], vec![b])
    }

    #[test]
    fn a_huge_txn_is_checked_in_about_linear_time() {
        // 2^15 leaves × 2 puts: 65,536 distinct keys, then one repeated key
        // at the top — the shape that took seconds with linear scans.
        let mut next = 0;
        let t = tree(15, 2, &mut next);
        let ops = vec![t, put("k1")];
        let started = Instant::now();
        assert_eq!(check_intervals(&ops), Err(Error::DuplicateKey));
        let dup_at_top = started.elapsed();
        // The same request without the repeat passes.
        let ops = &ops[..1];
        assert_eq!(check_intervals(ops), Ok(()));
        // Not a benchmark: an order of magnitude of slack for debug builds
        // and busy machines, against the old ~100x slower shape.
        assert!(
            dup_at_top.as_secs_f64() < 5.0,
            "65,536 puts took {dup_at_top:?} to check"
        );
    }

    #[test]
    fn a_spine_of_deletes_does_not_make_each_key_pay_per_level() {
        // 60 levels, each with its own delete and one nested txn; 20,000
        // keys at the bottom. Every level checks the keys below it against
        // its deletes: one probe per interval, not one per key.
        let bottom: Vec<RequestOp> = (0..20_000).map(|i| put(&format!("b{i:05}"))).collect();
        let mut op = nested(bottom, vec![]);
        for level in 0..60 {
            op = nested(vec![del(&format!("a{level:02}"), ""), op], vec![]);
        }
        let started = Instant::now();
        assert_eq!(check_intervals(&[op]), Ok(()));
        assert!(started.elapsed().as_secs_f64() < 5.0);
    }
}
