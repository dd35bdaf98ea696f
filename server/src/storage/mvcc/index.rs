//! The in-memory key index: for every key, the revisions at which it changed,
//! grouped into generations (creation … deletion). Values live on disk, keyed
//! by revision; this index answers "which revision of key K is visible at
//! revision R" without touching the disk.
//!
//! Invariant: within a key, revisions strictly increase across generations;
//! every generation but the last ends with its tombstone; the last generation
//! is open (possibly empty, meaning the key is currently deleted).

use std::collections::{BTreeMap, HashSet};
use std::ops::Bound;

/// A store revision: `main` is bumped once per write request (a whole txn
/// shares one), `sub` numbers the changes inside it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Rev {
    pub main: i64,
    pub sub: i64,
}

impl Rev {
    pub const fn new(main: i64, sub: i64) -> Rev {
        Rev { main, sub }
    }

    /// 16-byte big-endian key; byte order equals revision order because
    /// revisions are never negative.
    pub fn to_key(self) -> [u8; 16] {
        debug_assert!(self.main >= 0 && self.sub >= 0);
        let mut k = [0u8; 16];
        k[..8].copy_from_slice(&(self.main as u64).to_be_bytes());
        k[8..].copy_from_slice(&(self.sub as u64).to_be_bytes());
        k
    }

    pub fn from_key(k: &[u8]) -> Option<Rev> {
        if k.len() != 16 {
            return None;
        }
        let mut a = [0u8; 8];
        let mut b = [0u8; 8];
        a.copy_from_slice(&k[..8]);
        b.copy_from_slice(&k[8..]);
        let main = i64::try_from(u64::from_be_bytes(a)).ok()?;
        let sub = i64::try_from(u64::from_be_bytes(b)).ok()?;
        Some(Rev { main, sub })
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Generation {
    /// Version of the key at the generation's last revision.
    ver: i64,
    created: Rev,
    revs: Vec<Rev>,
}

/// What the index knows about a key's visible revision.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Visible {
    pub modified: Rev,
    pub created: Rev,
    pub version: i64,
}

/// One key's history. A million of these is most of a member's memory, and
/// most keys have one generation of one or two revisions, so capacities
/// grow from one ([`push_small`]) where `Vec` starts at four: four
/// generations are 192 bytes reserved for the one a key needs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KeyIndex {
    generations: Vec<Generation>,
}

/// Pushes with capacity doubling from one (Vec's own growth starts at
/// four), so a short list reserves little and a long one still grows in
/// amortized O(1).
fn push_small<T>(v: &mut Vec<T>, item: T) {
    if v.len() == v.capacity() {
        v.reserve_exact(v.capacity().max(1));
    }
    v.push(item);
}

/// Gives memory back once a list is down to a quarter of its capacity
/// (after a compaction dropped history).
fn shrink_small<T>(v: &mut Vec<T>) {
    if v.capacity() > 4 * v.len().max(1) {
        v.shrink_to(2 * v.len());
    }
}

impl KeyIndex {
    fn current(&mut self) -> &mut Generation {
        if self.generations.is_empty() {
            push_small(&mut self.generations, Generation::default());
        }
        let last = self.generations.len() - 1;
        &mut self.generations[last]
    }

    /// Records a put at `rev`. `restored` carries (create revision, version)
    /// when rebuilding from disk, where compaction may have removed history.
    fn put(&mut self, rev: Rev, restored: Option<(Rev, i64)>) {
        let g = self.current();
        if let Some(last) = g.revs.last() {
            debug_assert!(*last < rev, "revisions must increase");
        }
        if g.revs.is_empty() {
            g.created = restored.map_or(rev, |(c, _)| c);
            g.ver = 0;
        }
        push_small(&mut g.revs, rev);
        g.ver = restored.map_or(g.ver + 1, |(_, v)| v);
    }

    /// Records a delete at `rev`; false if the key is not live (as when
    /// compaction removed its puts, on the rebuild path).
    pub(super) fn tombstone(&mut self, rev: Rev) -> bool {
        let g = self.current();
        if g.revs.is_empty() {
            return false;
        }
        push_small(&mut g.revs, rev);
        g.ver += 1;
        push_small(&mut self.generations, Generation::default());
        true
    }

    /// Rebuild path: a put read back from disk with its stored create
    /// revision and version.
    pub fn restore_put(&mut self, rev: Rev, created: Rev, version: i64) {
        self.put(rev, Some((created, version)));
    }

    /// The revision visible at `at`, if the key exists then.
    pub fn get(&self, at: i64) -> Option<Visible> {
        // Generations are in revision order; find the last one created at or
        // before `at`.
        let gi = self
            .generations
            .iter()
            .rposition(|g| g.revs.first().is_some_and(|r| r.main <= at))?;
        let g = &self.generations[gi];
        let is_last = gi + 1 == self.generations.len();
        if !is_last {
            // Closed generation: invisible from its tombstone on.
            let tomb = g.revs[g.revs.len() - 1];
            if tomb.main <= at {
                return None;
            }
        }
        let n = g.revs.iter().rposition(|r| r.main <= at)?;
        let newer = (g.revs.len() - 1 - n) as i64;
        Some(Visible {
            modified: g.revs[n],
            created: g.created,
            version: g.ver - newer,
        })
    }

    pub fn is_empty(&self) -> bool {
        self.generations.iter().all(|g| g.revs.is_empty())
    }

    /// Drops history older than `at`, keeping the revision visible at `at`.
    /// Adds the revisions at or below `at` that must stay on disk to `keep`.
    fn compact(&mut self, at: i64, keep: &mut HashSet<Rev>) {
        // Whole generations that ended (tombstone) at or before `at` go.
        let mut first = 0;
        while first + 1 < self.generations.len() {
            let g = &self.generations[first];
            match g.revs.last() {
                Some(tomb) if tomb.main <= at => first += 1,
                _ => break,
            }
        }
        self.generations.drain(..first);
        shrink_small(&mut self.generations);
        if let Some(g) = self.generations.first_mut()
            && let Some(n) = g.revs.iter().rposition(|r| r.main <= at)
        {
            keep.insert(g.revs[n]);
            g.revs.drain(..n);
            shrink_small(&mut g.revs);
        }
    }
}

impl KeyIndex {
    /// The revision at or below `at` that `compact(at)` keeps, without
    /// compacting (HashKV asks this of an index already compacted there).
    fn kept(&self, at: i64) -> Option<Rev> {
        let mut first = 0;
        while first + 1 < self.generations.len() {
            match self.generations[first].revs.last() {
                Some(tomb) if tomb.main <= at => first += 1,
                _ => break,
            }
        }
        let g = self.generations.get(first)?;
        g.revs.iter().rposition(|r| r.main <= at).map(|n| g.revs[n])
    }
}

type KeyBounds<'a> = (Bound<&'a [u8]>, Bound<&'a [u8]>);

/// Key → history, ordered by key.
#[derive(Debug, Default)]
pub struct TreeIndex {
    keys: BTreeMap<bytes::Bytes, KeyIndex>,
}

/// How a request names keys: one key, a half-open range, or everything from
/// a key on (etcd's `range_end == "\0"`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyRange {
    Single(bytes::Bytes),
    Range(bytes::Bytes, bytes::Bytes),
    FromKey(bytes::Bytes),
}

impl KeyRange {
    pub fn new(key: &bytes::Bytes, range_end: &bytes::Bytes) -> KeyRange {
        if range_end.is_empty() {
            KeyRange::Single(key.clone())
        } else if range_end.as_ref() == [0u8] {
            KeyRange::FromKey(key.clone())
        } else {
            KeyRange::Range(key.clone(), range_end.clone())
        }
    }

    pub fn contains(&self, k: &[u8]) -> bool {
        match self {
            KeyRange::Single(key) => key.as_ref() == k,
            KeyRange::Range(a, b) => a.as_ref() <= k && k < b.as_ref(),
            KeyRange::FromKey(a) => a.as_ref() <= k,
        }
    }

    fn bounds(&self) -> Option<KeyBounds<'_>> {
        match self {
            KeyRange::Single(k) => Some((Bound::Included(k.as_ref()), Bound::Included(k.as_ref()))),
            KeyRange::Range(a, b) => {
                if a >= b {
                    None
                } else {
                    Some((Bound::Included(a.as_ref()), Bound::Excluded(b.as_ref())))
                }
            }
            KeyRange::FromKey(a) => Some((Bound::Included(a.as_ref()), Bound::Unbounded)),
        }
    }
}

impl TreeIndex {
    /// A new key is stored as a copy: the caller's `Bytes` is often a slice
    /// of a whole decoded request, which the index would keep alive. An
    /// existing key (most writes) costs one lookup and no allocation; a new
    /// one a second descent, along the nodes the first just brought into
    /// cache.
    pub fn put(&mut self, key: &bytes::Bytes, rev: Rev) {
        if let Some(history) = self.keys.get_mut(key.as_ref()) {
            history.put(rev, None);
            return;
        }
        let mut history = KeyIndex::default();
        history.put(rev, None);
        self.keys
            .insert(bytes::Bytes::copy_from_slice(key), history);
    }

    /// The index of keys given in ascending order, each once, with their
    /// histories (the rebuild at startup). Built in one pass, with full
    /// B-tree nodes.
    pub fn from_sorted(keys: impl Iterator<Item = (bytes::Bytes, KeyIndex)>) -> TreeIndex {
        TreeIndex {
            keys: keys.collect(),
        }
    }

    pub fn tombstone(&mut self, key: &[u8], rev: Rev) -> bool {
        match self.keys.get_mut(key) {
            Some(ki) => ki.tombstone(rev),
            None => false,
        }
    }

    pub fn get(&self, key: &[u8], at: i64) -> Option<Visible> {
        self.keys.get(key)?.get(at)
    }

    /// Calls `f` for every key in `range` that exists at `at`, in key order,
    /// until it returns false.
    pub fn visit(
        &self,
        range: &KeyRange,
        at: i64,
        mut f: impl FnMut(&bytes::Bytes, Visible) -> bool,
    ) {
        if let KeyRange::Single(k) = range {
            if let Some(v) = self.get(k, at) {
                f(k, v);
            }
            return;
        }
        let Some(bounds) = range.bounds() else {
            return;
        };
        for (k, ki) in self.keys.range::<[u8], _>(bounds) {
            if let Some(v) = ki.get(at)
                && !f(k, v)
            {
                return;
            }
        }
    }

    /// Compacts every key's history at `at`; returns the revisions at or
    /// below `at` that must be kept on disk.
    pub fn compact(&mut self, at: i64) -> HashSet<Rev> {
        let mut keep = HashSet::new();
        self.keys.retain(|_, ki| {
            ki.compact(at, &mut keep);
            !ki.is_empty()
        });
        keep
    }

    /// The revisions at or below `at` a compaction at `at` keeps on disk
    /// (what `compact` returns), leaving the index as it is.
    pub fn kept(&self, at: i64) -> HashSet<Rev> {
        self.keys.values().filter_map(|ki| ki.kept(at)).collect()
    }

    pub fn len(&self) -> usize {
        self.keys.len()
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn r(main: i64) -> Rev {
        Rev::new(main, 0)
    }

    #[test]
    fn a_key_reserves_what_it_holds() {
        let mut t = TreeIndex::default();
        // A slice of a larger buffer, as a decoded request's key is.
        let request = Bytes::from(vec![b'k'; 4096]);
        let k = request.slice(..16);
        t.put(&k, r(2));
        let (stored, ki) = t.keys.iter().next().unwrap();
        assert_eq!(stored.as_ref(), k.as_ref());
        assert_ne!(stored.as_ptr(), k.as_ptr(), "the index keeps a copy");
        assert_eq!(ki.generations.capacity(), 1);
        assert_eq!(ki.generations[0].revs.capacity(), 1);
        for main in 3..=100 {
            t.put(&k, r(main));
        }
        let revs = &t.keys[k.as_ref()].generations[0].revs;
        assert_eq!(
            (revs.len(), revs.capacity()),
            (99, 128),
            "doubling from one"
        );
        // Compaction gives the history back.
        let keep = t.compact(100);
        assert_eq!(keep, HashSet::from([r(100)]));
        let revs = &t.keys[k.as_ref()].generations[0].revs;
        assert_eq!(revs.as_slice(), &[r(100)]);
        assert!(revs.capacity() <= 2, "{}", revs.capacity());
        assert_eq!(t.get(&k, 100).unwrap().version, 99);
    }

    #[test]
    fn versions_and_visibility_follow_etcd() {
        let mut t = TreeIndex::default();
        let k = Bytes::from_static(b"foo");
        t.put(&k, r(2));
        t.put(&k, r(3));
        assert!(t.tombstone(&k, r(4)));
        t.put(&k, r(6));
        assert_eq!(t.get(&k, 1), None);
        let v = t.get(&k, 2).unwrap();
        assert_eq!((v.modified, v.created, v.version), (r(2), r(2), 1));
        let v = t.get(&k, 3).unwrap();
        assert_eq!((v.modified, v.created, v.version), (r(3), r(2), 2));
        assert_eq!(t.get(&k, 4), None);
        assert_eq!(t.get(&k, 5), None);
        let v = t.get(&k, 6).unwrap();
        assert_eq!((v.modified, v.created, v.version), (r(6), r(6), 1));
        assert!(!t.tombstone(b"nope", r(7)));
    }

    #[test]
    fn compaction_keeps_what_is_visible() {
        let mut t = TreeIndex::default();
        let a = Bytes::from_static(b"a");
        let b = Bytes::from_static(b"b");
        t.put(&a, r(2));
        t.put(&a, r(3));
        t.put(&b, r(4));
        t.tombstone(&b, r(5));
        t.put(&a, r(6));
        let keep = t.compact(5);
        assert_eq!(keep, HashSet::from([r(3)]));
        // b was deleted at or before 5: gone entirely.
        assert_eq!(t.get(b"b", 6), None);
        assert_eq!(t.len(), 1);
        // a at 5 still reads revision 3 with its version.
        let v = t.get(b"a", 5).unwrap();
        assert_eq!((v.modified, v.version), (r(3), 2));
        assert_eq!(t.get(b"a", 6).unwrap().version, 3);
    }

    #[test]
    fn compaction_of_live_generation_after_tombstone_boundary() {
        let mut t = TreeIndex::default();
        let a = Bytes::from_static(b"a");
        t.put(&a, r(2));
        t.tombstone(&a, r(3));
        t.put(&a, r(4));
        let keep = t.compact(3);
        assert!(keep.is_empty());
        assert_eq!(t.get(b"a", 4).unwrap().created, r(4));
        // A generation whose tombstone is after the compaction point stays.
        let mut t = TreeIndex::default();
        t.put(&a, r(2));
        t.tombstone(&a, r(5));
        let keep = t.compact(3);
        assert_eq!(keep, HashSet::from([r(2)]));
        assert!(t.get(b"a", 4).is_some());
        assert!(t.get(b"a", 5).is_none());
    }

    #[test]
    fn kept_matches_what_compaction_keeps() {
        let mut t = TreeIndex::default();
        let (a, b, c) = (
            Bytes::from_static(b"a"),
            Bytes::from_static(b"b"),
            Bytes::from_static(b"c"),
        );
        t.put(&a, r(2));
        t.put(&b, r(3));
        t.put(&a, r(4));
        t.tombstone(&b, r(5));
        t.put(&c, r(6));
        t.tombstone(&c, r(8));
        t.put(&a, r(9));
        for at in 1..10 {
            let mut copy = TreeIndex {
                keys: t.keys.clone(),
            };
            let before = copy.kept(at);
            let kept = copy.compact(at);
            assert_eq!(before, kept, "at {at}");
            // Asking again after compacting gives the same answer.
            assert_eq!(copy.kept(at), kept, "again at {at}");
        }
    }

    #[test]
    fn ranges() {
        let mut t = TreeIndex::default();
        for (i, k) in ["a", "b", "c", "d"].iter().enumerate() {
            t.put(&Bytes::from(k.to_string()), r(i as i64 + 2));
        }
        let mut seen = Vec::new();
        t.visit(
            &KeyRange::new(&Bytes::from_static(b"b"), &Bytes::from_static(b"d")),
            10,
            |k, _| {
                seen.push(k.clone());
                true
            },
        );
        assert_eq!(
            seen,
            vec![Bytes::from_static(b"b"), Bytes::from_static(b"c")]
        );
        seen.clear();
        t.visit(
            &KeyRange::new(&Bytes::from_static(b"b"), &Bytes::from_static(b"\0")),
            3,
            |k, _| {
                seen.push(k.clone());
                true
            },
        );
        assert_eq!(seen, vec![Bytes::from_static(b"b")]);
        seen.clear();
        // An inverted range matches nothing.
        t.visit(
            &KeyRange::new(&Bytes::from_static(b"d"), &Bytes::from_static(b"a")),
            10,
            |k, _| {
                seen.push(k.clone());
                true
            },
        );
        assert!(seen.is_empty());
    }

    #[test]
    fn rev_keys_sort_like_revisions() {
        let a = Rev::new(2, 5).to_key();
        let b = Rev::new(3, 0).to_key();
        assert!(a < b);
        assert_eq!(Rev::from_key(&a), Some(Rev::new(2, 5)));
    }
}
