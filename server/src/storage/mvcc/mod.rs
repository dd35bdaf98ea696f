//! MVCC on fjall with etcd's semantics.
//!
//! Layout: the `kv` keyspace maps `revision (16 bytes, big endian)` to
//! `kind ‖ mvccpb.KeyValue`; kind 0 is a put, 1 a tombstone. The key →
//! revisions index lives in memory ([`index::TreeIndex`]) and is rebuilt from
//! the `kv` keyspace at startup, as etcd rebuilds its tree index.
//!
//! Concurrency: only the apply loop writes. It updates the index as it goes
//! but publishes the new store revision (`current`) only after the fjall batch
//! holding the values is committed, and readers never look past the published
//! revision — so a reader never finds an index entry whose value is missing.
//! Readers take a fjall snapshot while holding the index lock, so a
//! concurrent physical compaction cannot delete a value they are about to read.

pub mod index;

use super::checksum::Crc32c;
use super::{Db, Error as StorageError, meta};
use crate::pb::etcdserverpb::RangeRequest;
use crate::pb::etcdserverpb::range_request::{SortOrder, SortTarget};
use crate::pb::mvccpb::KeyValue;
use bytes::Bytes;
use fjall::{OwnedWriteBatch, PersistMode, Readable};
use index::{KeyRange, Rev, TreeIndex, Visible};
use parking_lot::{Mutex, RwLock};
use prost::Message as _;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicUsize, Ordering};
use std::time::Duration;

/// Value kinds in the `kv` keyspace (shared with the etcd snapshot export
/// and import, `storage::etcd_snapshot` / `storage::etcd_import`).
pub(crate) const KIND_PUT: u8 = 0;
pub(crate) const KIND_TOMBSTONE: u8 = 1;

/// MVCC-level failures.
#[derive(Debug, thiserror::Error)]
pub enum MvccError {
    #[error("required revision has been compacted")]
    Compacted,
    #[error("required revision is a future revision")]
    FutureRev,
    #[error(transparent)]
    Storage(#[from] StorageError),
}

impl From<fjall::Error> for MvccError {
    fn from(e: fjall::Error) -> Self {
        MvccError::Storage(e.into())
    }
}

pub type Result<T, E = MvccError> = std::result::Result<T, E>;

pub(crate) fn encode_value(kind: u8, kv: &KeyValue) -> Vec<u8> {
    let mut v = Vec::with_capacity(1 + kv.encoded_len());
    v.push(kind);
    kv.encode(&mut v).expect("Vec grows as needed");
    v
}

pub(crate) fn decode_value(bytes: &[u8]) -> Result<(u8, KeyValue)> {
    let Some((&kind, rest)) = bytes.split_first() else {
        return Err(StorageError::corrupt("mvcc value", "empty").into());
    };
    if kind != KIND_PUT && kind != KIND_TOMBSTONE {
        return Err(StorageError::corrupt("mvcc value", format!("kind {kind}")).into());
    }
    let kv = KeyValue::decode(rest).map_err(|e| StorageError::corrupt("mvcc value", e))?;
    Ok((kind, kv))
}

/// [`decode_value`] without the value: what rebuilding the index needs.
/// Copying every value out of the table blocks made a cold start of a
/// 1 GiB store spend most of its time allocating and zeroing memory.
fn decode_index_fields(bytes: &[u8]) -> Result<(u8, KeyValue)> {
    let corrupt = |why: &str| MvccError::from(StorageError::corrupt("mvcc value", why));
    let Some((&kind, mut rest)) = bytes.split_first() else {
        return Err(corrupt("empty"));
    };
    if kind != KIND_PUT && kind != KIND_TOMBSTONE {
        return Err(StorageError::corrupt("mvcc value", format!("kind {kind}")).into());
    }
    fn varint(b: &mut &[u8]) -> Option<u64> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let (&c, tail) = b.split_first()?;
            *b = tail;
            v |= u64::from(c & 0x7f) << shift;
            if c & 0x80 == 0 {
                return Some(v);
            }
        }
        None
    }
    let mut kv = KeyValue::default();
    while !rest.is_empty() {
        let tag = varint(&mut rest).ok_or_else(|| corrupt("bad tag"))?;
        match (tag >> 3, tag & 7) {
            (field, 0) => {
                let v = varint(&mut rest).ok_or_else(|| corrupt("bad varint"))? as i64;
                match field {
                    2 => kv.create_revision = v,
                    3 => kv.mod_revision = v,
                    4 => kv.version = v,
                    6 => kv.lease = v,
                    _ => {}
                }
            }
            (field, 2) => {
                let len = varint(&mut rest).ok_or_else(|| corrupt("bad length"))? as usize;
                if len > rest.len() {
                    return Err(corrupt("field past the end"));
                }
                let (data, tail) = rest.split_at(len);
                if field == 1 {
                    kv.key = Bytes::copy_from_slice(data);
                }
                rest = tail;
            }
            (_, 1) if rest.len() >= 8 => rest = &rest[8..],
            (_, 5) if rest.len() >= 4 => rest = &rest[4..],
            _ => return Err(corrupt("bad wire type")),
        }
    }
    Ok((kind, kv))
}

/// The answer to a range read, before it becomes a `RangeResponse`.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct RangeResult {
    pub kvs: Vec<KeyValue>,
    pub more: bool,
    pub count: i64,
}

/// What the first (index-only) half of a range read decided.
struct RangePlan {
    pairs: Vec<(Bytes, Rev)>,
    count: i64,
}

/// Whether the request needs every matching key fetched before the limit is
/// applied (sorting or revision filters), as etcd does.
fn fetches_everything(r: &RangeRequest) -> bool {
    // Only an explicit sort order counts here: a non-key sort target with
    // order NONE sorts just the first `limit + 1` keys, an etcd quirk that
    // clients can observe and that we keep.
    r.sort_order() != SortOrder::None
        || r.min_mod_revision != 0
        || r.max_mod_revision != 0
        || r.min_create_revision != 0
        || r.max_create_revision != 0
}

fn plan(index: &TreeIndex, r: &RangeRequest, at: i64) -> RangePlan {
    let range = KeyRange::new(&r.key, &r.range_end);
    let keep = if r.count_only {
        0
    } else if r.limit > 0 && !fetches_everything(r) {
        // One more than asked, so the caller can tell whether there is more.
        (r.limit as usize).saturating_add(1)
    } else {
        usize::MAX
    };
    let mut pairs = Vec::new();
    let mut count = 0i64;
    index.visit(&range, at, |k, v: Visible| {
        count += 1;
        if pairs.len() < keep {
            pairs.push((k.clone(), v.modified));
        }
        true
    });
    RangePlan { pairs, count }
}

/// Filters, sorts and limits fetched key-values exactly as etcd's applier does.
fn finish(r: &RangeRequest, mut kvs: Vec<KeyValue>, count: i64) -> RangeResult {
    // Non-zero (not positive) enables a filter, as in etcd.
    if r.max_mod_revision != 0 {
        kvs.retain(|kv| kv.mod_revision <= r.max_mod_revision);
    }
    if r.min_mod_revision != 0 {
        kvs.retain(|kv| kv.mod_revision >= r.min_mod_revision);
    }
    if r.max_create_revision != 0 {
        kvs.retain(|kv| kv.create_revision <= r.max_create_revision);
    }
    if r.min_create_revision != 0 {
        kvs.retain(|kv| kv.create_revision >= r.min_create_revision);
    }
    let mut order = r.sort_order();
    if r.sort_target() != SortTarget::Key && order == SortOrder::None {
        order = SortOrder::Ascend;
    }
    if order != SortOrder::None {
        let target = r.sort_target();
        // Stable sort: ties keep key order.
        let cmp = |a: &KeyValue, b: &KeyValue| match target {
            SortTarget::Key => a.key.cmp(&b.key),
            SortTarget::Version => a.version.cmp(&b.version),
            SortTarget::Create => a.create_revision.cmp(&b.create_revision),
            SortTarget::Mod => a.mod_revision.cmp(&b.mod_revision),
            SortTarget::Value => a.value.cmp(&b.value),
        };
        if order == SortOrder::Descend {
            kvs.sort_by(|a, b| cmp(b, a));
        } else {
            kvs.sort_by(cmp);
        }
    }
    let mut more = false;
    if r.limit > 0 && kvs.len() > r.limit as usize {
        kvs.truncate(r.limit as usize);
        more = true;
    }
    if r.keys_only {
        for kv in &mut kvs {
            kv.value = Bytes::new();
        }
    }
    RangeResult { kvs, more, count }
}

/// (key, lease) for every live key that has a lease.
pub type LeaseAttachments = Vec<(Bytes, i64)>;

/// One record of the revision keyspace, as the index needs it.
struct DiskChange {
    key: Bytes,
    rev: Rev,
    /// `None`: a tombstone.
    put: Option<PutFields>,
}

#[derive(Clone, Copy)]
struct PutFields {
    created: Rev,
    version: i64,
    lease: i64,
}

/// The index's view of the revision keyspace, collected one record at a
/// time: read back from disk at start, or handed over by a snapshot
/// install as it ingests the records (so the install does not read back
/// what it just wrote).
#[derive(Default)]
pub struct IndexRecords {
    changes: Vec<DiskChange>,
    /// The highest main revision seen.
    last: i64,
}

impl IndexRecords {
    /// Every record of the revision keyspace on disk.
    fn read(db: &Db) -> Result<IndexRecords> {
        let mut records = IndexRecords::default();
        for guard in db.kv.iter() {
            let (k, v) = guard.into_inner()?;
            records.add(&k, &v)?;
        }
        Ok(records)
    }

    /// One record of the revision keyspace: its key (the revision) and
    /// value (the encoded key-value or tombstone).
    pub fn add(&mut self, key: &[u8], value: &[u8]) -> Result<()> {
        let rev = Rev::from_key(key)
            .ok_or_else(|| StorageError::corrupt("mvcc revision key", hex::encode(key)))?;
        let (kind, kv) = decode_index_fields(value)?;
        self.changes.push(DiskChange {
            rev,
            put: (kind == KIND_PUT).then(|| PutFields {
                created: Rev::new(kv.create_revision, 0),
                version: kv.version,
                lease: kv.lease,
            }),
            key: kv.key,
        });
        self.last = self.last.max(rev.main);
        Ok(())
    }
}

/// Most revision records removed per batch when `reconcile_with_meta`
/// rolls the revision keyspace back.
const ROLLBACK_BATCH_RECORDS: usize = 10_000;

/// Brings the revision keyspace to the position `meta` records for it
/// before anything reads it, or refuses to start.
///
/// Every apply batch writes its revisions and the metadata that covers them
/// (applied index, leases, `kv_revision`) atomically, into one journal. But
/// fjall flushes each keyspace's memtable to tables on its own: if the
/// journal's tail is later lost (a torn or damaged tail, which fjall cuts
/// off on recovery), a keyspace that was flushed past the cut keeps those
/// batches while one that was not loses them.
/// - `kv` ahead of `meta`: the revisions past the record belong to entries
///   the applied index does not count, which raft hands over again; left in
///   place, applying them again would assign them new revisions, and this
///   member's history would part from the others'. They are removed.
/// - `kv` behind `meta`: revisions the applied index counts are gone and
///   nothing would bring them back; the member refuses to start, naming the
///   way out (replace the member), rather than serve a history with holes.
fn reconcile_with_meta(db: &Db) -> Result<()> {
    let Some(recorded) = meta::kv_revision(db)? else {
        // Written before the record existed: nothing to compare with.
        return Ok(());
    };
    let last = match db.kv.last_key_value() {
        None => 0,
        Some(guard) => {
            let key = guard.key()?;
            Rev::from_key(&key)
                .ok_or_else(|| StorageError::corrupt("mvcc revision key", hex::encode(&key)))?
                .main
        }
    };
    if last > recorded {
        let from = Rev::new(recorded + 1, 0).to_key();
        let mut removed = 0usize;
        loop {
            let keys = db
                .kv
                .range(from..)
                .take(ROLLBACK_BATCH_RECORDS)
                .map(|g| g.key())
                .collect::<Result<Vec<_>, _>>()?;
            if keys.is_empty() {
                break;
            }
            let mut batch = db.db.batch();
            for k in &keys {
                batch.remove(&db.kv, k.clone());
            }
            batch.durability(Some(PersistMode::SyncData)).commit()?;
            removed += keys.len();
        }
        tracing::warn!(
            recorded,
            found = last,
            removed,
            "the revision keyspace was ahead of the applied index (the journal's tail was \
             cut on recovery); revisions past {recorded} were removed and their entries will be \
             applied again"
        );
    }
    let (scheduled, _) = meta::compaction(db)?;
    // The record's own revision is on disk unless compaction removed it
    // (a tombstone at or below the compaction point).
    if recorded > scheduled.max(1) {
        let at = Rev::new(recorded, 0).to_key()..Rev::new(recorded + 1, 0).to_key();
        if db.kv.range(at).next().is_none() {
            return Err(StorageError::corrupt(
                "revision keyspace",
                format!(
                    "the applied index covers revision {recorded}, but the revision keyspace ends \
                     at {last}: the journal lost writes the state machine had applied. This \
                     member's data cannot be trusted; remove it from the cluster and add it back \
                     with an empty data dir"
                ),
            )
            .into());
        }
    }
    Ok(())
}

struct Rebuilt {
    index: TreeIndex,
    current: i64,
    compacted: i64,
    finished: i64,
    leases: Vec<(Bytes, i64)>,
}

/// One change read back from the revision keyspace (for watchers).
#[derive(Debug, Clone, PartialEq)]
pub struct Change {
    pub rev: Rev,
    pub deleted: bool,
    /// For a delete: the key and the deletion's revision only, as etcd
    /// reports delete events.
    pub kv: KeyValue,
}

/// The answer to HashKV.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KvHash {
    pub hash: u32,
    /// The revision hashed up to.
    pub revision: i64,
    /// The store revision when the hash was taken.
    pub current: i64,
    /// The compaction revision (-1: never compacted).
    pub compacted: i64,
}

/// One revision in HashKV's canonical encoding: fixed-width integers and
/// length-prefixed bytes, independent of how values are stored.
fn hash_record(h: &mut Crc32c, rev: Rev, kind: u8, kv: &KeyValue) {
    h.update(&rev.main.to_be_bytes());
    h.update(&rev.sub.to_be_bytes());
    h.update(&[kind]);
    h.field(&kv.key);
    h.update(&kv.create_revision.to_be_bytes());
    h.update(&kv.mod_revision.to_be_bytes());
    h.update(&kv.version.to_be_bytes());
    h.update(&kv.lease.to_be_bytes());
    h.field(&kv.value);
}

/// A completed physical compaction up to this revision can be awaited.
pub type CompactionWatch = tokio::sync::watch::Receiver<i64>;

struct CompactionJob {
    rev: i64,
    keep: HashSet<Rev>,
}

pub struct Store {
    db: Db,
    index: RwLock<TreeIndex>,
    /// The published store revision: everything at or below it is readable.
    current: AtomicI64,
    /// The compacted revision (-1: never compacted).
    compacted: AtomicI64,
    /// How far the watch hub has dispatched events; physical compaction
    /// never deletes revisions the hub has not read yet (`i64::MAX` until a
    /// hub exists).
    dispatched: AtomicI64,
    /// Physical compaction runs on its own thread so it never stalls applies.
    compactor: Mutex<Option<crossbeam_channel::Sender<CompactionJob>>>,
    compaction_done: tokio::sync::watch::Sender<i64>,
    /// Most revisions deleted per physical-compaction batch
    /// (`--experimental-compaction-batch-limit`, live: read at each batch).
    batch_limit: AtomicUsize,
}

impl Store {
    /// Opens the store: rebuilds the index from disk and resumes any
    /// physical compaction a crash interrupted.
    /// Also returns the lease of every live key that has one, for the lessor.
    pub fn open(db: Db, compaction_batch_limit: usize) -> Result<(Arc<Store>, LeaseAttachments)> {
        reconcile_with_meta(&db)?;
        let r = Self::rebuild(&db, IndexRecords::read(&db)?)?;
        let (done_tx, _) = tokio::sync::watch::channel(r.finished);
        let store = Arc::new(Store {
            db,
            index: RwLock::new(r.index),
            current: AtomicI64::new(r.current),
            compacted: AtomicI64::new(r.compacted),
            dispatched: AtomicI64::new(i64::MAX),
            compactor: Mutex::new(None),
            compaction_done: done_tx,
            batch_limit: AtomicUsize::new(compaction_batch_limit.max(1)),
        });
        store.start_compactor();
        store.resume_compaction(r.compacted, r.finished);
        Ok((store, r.leases))
    }

    /// Rebuilds everything in memory after the state machine was replaced
    /// (a snapshot from the leader was installed), from `records`: every
    /// record of the new revision keyspace, as the install ingested them.
    /// Returns the lease attachments like `open`.
    pub fn reload(&self, records: IndexRecords) -> Result<LeaseAttachments> {
        let mut index = self.index.write();
        let r = Self::rebuild(&self.db, records)?;
        *index = r.index;
        self.current.store(r.current, Ordering::Release);
        self.compacted.store(r.compacted, Ordering::Release);
        self.compaction_done.send_replace(r.finished);
        drop(index);
        self.resume_compaction(r.compacted, r.finished);
        Ok(r.leases)
    }

    /// Changes the batch size of physical compaction; a compaction already
    /// running uses it from its next batch.
    pub fn set_compaction_batch_limit(&self, limit: usize) {
        self.batch_limit.store(limit.max(1), Ordering::Relaxed);
    }

    fn resume_compaction(&self, compacted: i64, finished: i64) {
        if compacted > 0 {
            // Re-derive the index's view of the compaction point (a no-op on
            // history that was already removed), and redo the physical part
            // if a restart interrupted it.
            let keep = self.index.write().compact(compacted);
            if finished < compacted {
                tracing::info!(
                    revision = compacted,
                    "resuming physical compaction interrupted by a restart"
                );
                self.schedule_physical(compacted, keep);
            }
        }
    }

    /// (index, current revision, compacted revision, finished compaction).
    ///
    /// The revision keyspace gives each key's changes scattered in
    /// revision order; inserting them into the index one by one is a
    /// random B-tree descent each (at two million revisions most of a
    /// restart's time). So they are collected, grouped by key with a
    /// stable sort (keeping each key's revision order), and the index is
    /// built from the sorted keys in one pass.
    fn rebuild(db: &Db, records: IndexRecords) -> Result<Rebuilt> {
        let IndexRecords { mut changes, last } = records;
        changes.sort_by(|a, b| a.key.cmp(&b.key));
        let mut leases = Vec::new();
        let mut changes = changes.into_iter().peekable();
        // Keys move from `changes` into the index: a clone of each would
        // give every key a shared-buffer header for life.
        let keys = std::iter::from_fn(|| {
            loop {
                let first = changes.next()?;
                let mut history = index::KeyIndex::default();
                let mut last_put = None;
                let mut apply = |c: &DiskChange| {
                    match c.put {
                        Some(p) => history.restore_put(c.rev, p.created, p.version),
                        None => {
                            history.tombstone(c.rev);
                        }
                    }
                    last_put = c.put;
                };
                apply(&first);
                while let Some(c) = changes.next_if(|c| c.key == first.key) {
                    apply(&c);
                }
                // The last change decides the key's lease: a put's lease,
                // or none after a tombstone or a put without one.
                if let Some(p) = last_put
                    && p.lease != 0
                {
                    leases.push((first.key.clone(), p.lease));
                }
                if !history.is_empty() {
                    return Some((first.key, history));
                }
            }
        });
        let index = TreeIndex::from_sorted(keys);
        let (scheduled, finished) = meta::compaction(db)?;
        let compacted = if scheduled > 0 { scheduled } else { -1 };
        // The empty store is at revision 1; the first write creates 2.
        let current = last.max(compacted).max(1);
        Ok(Rebuilt {
            index,
            current,
            compacted,
            finished,
            leases,
        })
    }

    pub fn current_rev(&self) -> i64 {
        self.current.load(Ordering::Acquire)
    }

    pub fn compact_rev(&self) -> i64 {
        self.compacted.load(Ordering::Acquire)
    }

    /// Records the watch hub's progress (see `dispatched`).
    pub fn set_dispatched(&self, rev: i64) {
        self.dispatched.store(rev, Ordering::Release);
    }

    /// Changes with revisions in `[from, to]`, in revision order, at most
    /// about `max_changes` of them and `max_bytes` of keys and values —
    /// but never splitting one revision's changes (a txn's events stay
    /// together), so a step holds at most one revision past either bound.
    /// Returns the changes and the last revision fully covered. Reads a
    /// fjall snapshot taken before checking the compaction point, so a
    /// concurrent compaction cannot tear it.
    pub fn changes(
        &self,
        from: i64,
        to: i64,
        max_changes: usize,
        max_bytes: usize,
    ) -> Result<(Vec<Change>, i64)> {
        let view = self.db.db.snapshot();
        if from < self.compact_rev() {
            return Err(MvccError::Compacted);
        }
        let mut out: Vec<Change> = Vec::new();
        if to < from {
            return Ok((out, from - 1));
        }
        let start = Rev::new(from.max(0), 0).to_key();
        let end = Rev::new(to + 1, 0).to_key();
        let mut bytes = 0usize;
        for guard in view.range(&self.db.kv, start..end) {
            let (k, v) = guard.into_inner()?;
            let rev = Rev::from_key(&k)
                .ok_or_else(|| StorageError::corrupt("mvcc revision key", hex::encode(&k)))?;
            let starts_revision = out.last().is_none_or(|c| c.rev.main != rev.main);
            if starts_revision && (out.len() >= max_changes || bytes >= max_bytes) {
                // Every revision before this one is complete.
                return Ok((out, rev.main - 1));
            }
            bytes = bytes.saturating_add(v.len());
            let (kind, kv) = decode_value(&v)?;
            out.push(Change {
                rev,
                deleted: kind == KIND_TOMBSTONE,
                kv,
            });
        }
        Ok((out, to))
    }

    /// The value of `key` as of revision `at`, if still readable (watchers'
    /// `prev_kv`). `None` when the key did not exist or history is compacted.
    pub fn get_at(&self, key: &[u8], at: i64) -> Result<Option<KeyValue>> {
        if at < self.compact_rev() {
            return Ok(None);
        }
        let found = {
            let index = self.index.read();
            index
                .get(key, at)
                .map(|v| (v.modified, self.db.db.snapshot()))
        };
        match found {
            None => Ok(None),
            Some((rev, view)) => match view.get(&self.db.kv, rev.to_key())? {
                None => Ok(None),
                Some(v) => {
                    let (kind, kv) = decode_value(&v)?;
                    Ok((kind == KIND_PUT).then_some(kv))
                }
            },
        }
    }

    /// etcd's HashKV: a CRC-32C over every revision up to `rev` (0: the
    /// current revision) that the store logically holds — all revisions
    /// after the compaction point, and at or below it only those the
    /// compaction keeps. Whether background compaction has physically
    /// deleted the rest yet makes no difference, so members that applied the
    /// same entries agree. Records are hashed in a canonical encoding (see
    /// `hash_record`), not as stored.
    pub fn hash_kv(&self, rev: i64) -> Result<KvHash> {
        let (view, current, compacted, keep) = {
            let index = self.index.read();
            let current = self.current_rev();
            let compacted = self.compact_rev();
            // As etcd: the compaction revision itself can no longer be hashed.
            if rev > 0 && rev <= compacted {
                return Err(MvccError::Compacted);
            }
            if rev > current {
                return Err(MvccError::FutureRev);
            }
            let keep = if compacted > 0 {
                index.kept(compacted)
            } else {
                HashSet::new()
            };
            // Taken under the index lock, like reads: see the module comment.
            (self.db.db.snapshot(), current, compacted, keep)
        };
        let at = if rev > 0 { rev } else { current };
        let mut h = Crc32c::default();
        let end = Rev::new(at + 1, 0).to_key();
        for guard in view.range(&self.db.kv, ..end) {
            let (k, v) = guard.into_inner()?;
            let r = Rev::from_key(&k)
                .ok_or_else(|| StorageError::corrupt("mvcc revision key", hex::encode(&k)))?;
            if r.main <= compacted && !keep.contains(&r) {
                continue;
            }
            let (kind, kv) = decode_value(&v)?;
            hash_record(&mut h, r, kind, &kv);
        }
        Ok(KvHash {
            hash: h.finish(),
            revision: at,
            current,
            compacted,
        })
    }

    /// Keys that currently exist or have history (the index size).
    pub fn key_count(&self) -> usize {
        self.index.read().len()
    }

    pub fn compaction_watch(&self) -> CompactionWatch {
        self.compaction_done.subscribe()
    }

    fn check_rev(&self, requested: i64, current: i64) -> Result<i64> {
        let at = if requested <= 0 { current } else { requested };
        if at > current {
            return Err(MvccError::FutureRev);
        }
        if at < self.compact_rev() {
            return Err(MvccError::Compacted);
        }
        Ok(at)
    }

    /// A read at the published revision (or an older one), as the client
    /// API's Range.
    pub fn range(&self, r: &RangeRequest) -> Result<(RangeResult, i64)> {
        let (plan, view, current) = {
            let index = self.index.read();
            let current = self.current_rev();
            let at = self.check_rev(r.revision, current)?;
            let plan = plan(&index, r, at);
            // Taken under the index lock: see the module comment.
            let view = if plan.pairs.is_empty() {
                None
            } else {
                Some(self.db.db.snapshot())
            };
            (plan, view, current)
        };
        let mut kvs = Vec::with_capacity(plan.pairs.len());
        if let Some(view) = view {
            for (key, rev) in &plan.pairs {
                kvs.push(self.read_kv(&view, key, *rev)?);
            }
        }
        Ok((finish(r, kvs, plan.count), current))
    }

    fn read_kv(&self, view: &impl Readable, key: &[u8], rev: Rev) -> Result<KeyValue> {
        self.decode_found(view.get(&self.db.kv, rev.to_key())?, key, rev)
    }

    fn decode_found(
        &self,
        found: Option<fjall::UserValue>,
        key: &[u8],
        rev: Rev,
    ) -> Result<KeyValue> {
        match found {
            Some(v) => {
                let (kind, kv) = decode_value(&v)?;
                if kind != KIND_PUT {
                    return Err(StorageError::corrupt(
                        "mvcc index",
                        format!("revision {rev:?} is a tombstone"),
                    )
                    .into());
                }
                Ok(kv)
            }
            None => Err(StorageError::corrupt(
                "mvcc index",
                format!(
                    "revision {}.{} of key {:?} is not on disk",
                    rev.main,
                    rev.sub,
                    String::from_utf8_lossy(key)
                ),
            )
            .into()),
        }
    }

    /// Starts the writes of one apply batch. Only the apply loop calls this,
    /// and only one batch exists at a time.
    pub fn begin_batch(self: &Arc<Self>) -> ApplyBatch {
        ApplyBatch {
            store: Arc::clone(self),
            batch: self.db.db.batch(),
            overlay: HashMap::new(),
            rev: self.current_rev(),
            compaction: None,
        }
    }

    fn start_compactor(self: &Arc<Self>) {
        let (tx, rx) = crossbeam_channel::bounded::<CompactionJob>(16);
        *self.compactor.lock() = Some(tx);
        let weak = Arc::downgrade(self);
        let spawned = crate::crash::spawn_thread("mvcc-compactor", move || {
            while let Ok(job) = rx.recv() {
                let Some(store) = weak.upgrade() else { return };
                if let Err(e) = store.physical_compaction(&job) {
                    tracing::error!(error = %e, revision = job.rev, "physical compaction failed");
                }
            }
        });
        if let Err(e) = spawned {
            tracing::error!(error = %e, "cannot start the compaction thread");
        }
    }

    fn schedule_physical(&self, rev: i64, keep: HashSet<Rev>) {
        let tx = self.compactor.lock().clone();
        if let Some(tx) = tx
            && tx.send(CompactionJob { rev, keep }).is_err()
        {
            tracing::error!(revision = rev, "compaction thread is gone");
        }
    }

    /// Deletes every revision at or below `job.rev` that the index no longer
    /// needs, in bounded batches with a pause between them so applies and
    /// reads keep flowing. Returns how many batches it took.
    fn physical_compaction(&self, job: &CompactionJob) -> Result<usize> {
        let start = std::time::Instant::now();
        // Watchers must see every event before its revision disappears; the
        // hub is normally a few milliseconds behind. Bounded: a stuck hub
        // must not stop compaction forever (its watchers then get
        // "compacted", as a slow etcd watcher does).
        while self.dispatched.load(Ordering::Acquire) < job.rev
            && start.elapsed() < Duration::from_secs(30)
        {
            std::thread::sleep(Duration::from_millis(5));
        }
        let end = Rev::new(job.rev + 1, 0).to_key();
        let mut cursor = Rev::new(0, 0).to_key().to_vec();
        let mut deleted = 0usize;
        let mut batches = 0usize;
        loop {
            let batch_limit = self.batch_limit.load(Ordering::Relaxed);
            let mut doomed = Vec::new();
            let mut next_cursor = None;
            for guard in self.db.kv.range(cursor.clone()..end.to_vec()) {
                let k = guard.key()?;
                let rev = Rev::from_key(&k)
                    .ok_or_else(|| StorageError::corrupt("mvcc revision key", hex::encode(&k)))?;
                if doomed.len() >= batch_limit {
                    next_cursor = Some(k.to_vec());
                    break;
                }
                if !job.keep.contains(&rev) {
                    doomed.push(k);
                }
            }
            if !doomed.is_empty() {
                let mut batch = self.db.db.batch();
                for k in &doomed {
                    batch.remove(&self.db.kv, k.clone());
                }
                batch.durability(Some(PersistMode::Buffer)).commit()?;
                deleted += doomed.len();
                batches += 1;
            }
            match next_cursor {
                Some(c) => {
                    cursor = c;
                    std::thread::sleep(Duration::from_millis(1));
                }
                None => break,
            }
        }
        let mut batch = self.db.db.batch();
        meta::put_compact_finished(&mut batch, &self.db, job.rev);
        batch.durability(Some(PersistMode::Buffer)).commit()?;
        self.compaction_done.send_replace(job.rev);
        tracing::info!(
            revision = job.rev,
            deleted_revisions = deleted,
            batches,
            took_ms = start.elapsed().as_millis() as u64,
            "finished scheduled compaction"
        );
        Ok(batches)
    }
}

/// A write request in progress: one main revision, one sub revision per change.
#[derive(Debug)]
pub struct TxnWrite {
    main: i64,
    sub: i64,
}

impl TxnWrite {
    /// The revision reads inside this request see: its own changes included.
    fn read_rev(&self) -> i64 {
        if self.sub > 0 {
            self.main
        } else {
            self.main - 1
        }
    }
    pub fn changed(&self) -> bool {
        self.sub > 0
    }
}

/// The changes of one apply batch (several raft entries). Values written in
/// the batch are kept in `overlay` until the batch commits, so later entries
/// in the same batch can read them.
pub struct ApplyBatch {
    store: Arc<Store>,
    batch: OwnedWriteBatch,
    overlay: HashMap<Rev, KeyValue>,
    /// Highest main revision assigned so far in this batch.
    rev: i64,
    compaction: Option<(i64, HashSet<Rev>)>,
}

impl ApplyBatch {
    pub fn db(&self) -> &Db {
        &self.store.db
    }

    /// The fjall batch, for metadata records that must commit atomically
    /// with this batch's data.
    pub fn raw(&mut self) -> &mut OwnedWriteBatch {
        &mut self.batch
    }

    /// The store revision as of the last completed write in this batch.
    pub fn rev(&self) -> i64 {
        self.rev
    }

    pub fn compact_rev(&self) -> i64 {
        self.store.compact_rev()
    }

    pub fn begin_write(&self) -> TxnWrite {
        TxnWrite {
            main: self.rev + 1,
            sub: 0,
        }
    }

    /// Ends a write request; returns the store revision after it.
    pub fn end_write(&mut self, w: TxnWrite) -> i64 {
        if w.changed() {
            self.rev = w.main;
        }
        self.rev
    }

    fn fetch(&self, key: &[u8], rev: Rev) -> Result<KeyValue> {
        if let Some(kv) = self.overlay.get(&rev) {
            return Ok(kv.clone());
        }
        // The apply loop is the only writer and compaction never removes a
        // revision it can still see, so it reads the keyspace directly.
        self.store
            .decode_found(self.store.db.kv.get(rev.to_key())?, key, rev)
    }

    /// A range read inside the apply loop (txn ops, prev_kv). Sees this
    /// batch's earlier writes.
    pub fn range(&self, r: &RangeRequest, w: Option<&TxnWrite>) -> Result<RangeResult> {
        let current = w.map_or(self.rev, TxnWrite::read_rev);
        let at = self.store.check_rev(r.revision, current)?;
        let plan = plan(&self.store.index.read(), r, at);
        let mut kvs = Vec::with_capacity(plan.pairs.len());
        for (key, rev) in &plan.pairs {
            kvs.push(self.fetch(key, *rev)?);
        }
        Ok(finish(r, kvs, plan.count))
    }

    pub fn put(
        &mut self,
        w: &mut TxnWrite,
        key: Bytes,
        value: Bytes,
        lease: i64,
    ) -> Result<KeyValue> {
        let rev = Rev::new(w.main, w.sub);
        let prev = self.store.index.read().get(&key, w.read_rev());
        let (created, version) = match prev {
            Some(v) => (v.created.main, v.version + 1),
            None => (w.main, 1),
        };
        let kv = KeyValue {
            key: key.clone(),
            create_revision: created,
            mod_revision: w.main,
            version,
            value,
            lease,
        };
        self.batch
            .insert(&self.store.db.kv, rev.to_key(), encode_value(KIND_PUT, &kv));
        self.overlay.insert(rev, kv.clone());
        self.store.index.write().put(&key, rev);
        w.sub += 1;
        Ok(kv)
    }

    /// Deletes every key visible in `range`; returns the keys deleted.
    pub fn delete_range(&mut self, w: &mut TxnWrite, range: &KeyRange) -> Result<Vec<Bytes>> {
        let at = w.read_rev();
        let mut keys = Vec::new();
        self.store.index.read().visit(range, at, |k, _| {
            keys.push(k.clone());
            true
        });
        for key in &keys {
            let rev = Rev::new(w.main, w.sub);
            let tomb = KeyValue {
                key: key.clone(),
                mod_revision: w.main,
                ..Default::default()
            };
            self.batch.insert(
                &self.store.db.kv,
                rev.to_key(),
                encode_value(KIND_TOMBSTONE, &tomb),
            );
            self.store.index.write().tombstone(key, rev);
            w.sub += 1;
        }
        Ok(keys)
    }

    /// Compacts history at `rev` (etcd's rules: at most the current revision,
    /// more than the last compaction). Physical deletion follows the commit.
    pub fn compact(&mut self, rev: i64) -> Result<()> {
        if rev <= self.store.compact_rev() {
            return Err(MvccError::Compacted);
        }
        if rev > self.rev {
            return Err(MvccError::FutureRev);
        }
        let keep = self.store.index.write().compact(rev);
        self.store.compacted.store(rev, Ordering::Release);
        meta::put_compact_scheduled(&mut self.batch, &self.store.db, rev);
        self.compaction = Some((rev, keep));
        Ok(())
    }

    /// Commits the batch (no fsync: the raft log is the durable record; the
    /// next log fsync covers this batch too) and publishes its revision.
    pub fn commit(self) -> Result<i64> {
        let ApplyBatch {
            store,
            batch,
            rev,
            compaction,
            ..
        } = self;
        let mut batch = batch;
        meta::put_kv_revision(&mut batch, &store.db, rev);
        batch.durability(Some(PersistMode::Buffer)).commit()?;
        store.current.store(rev, Ordering::Release);
        if let Some((crev, keep)) = compaction {
            store.schedule_physical(crev, keep);
        }
        Ok(rev)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn open() -> (tempfile::TempDir, Arc<Store>) {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open(dir.path()).unwrap();
        let (s, _) = Store::open(db, 1000).unwrap();
        (dir, s)
    }

    fn put(s: &Arc<Store>, k: &str, v: &str) -> i64 {
        let mut b = s.begin_batch();
        let mut w = b.begin_write();
        b.put(
            &mut w,
            Bytes::from(k.to_string()),
            Bytes::from(v.to_string()),
            0,
        )
        .unwrap();
        b.end_write(w);
        b.commit().unwrap()
    }

    fn get(s: &Store, k: &str, rev: i64) -> Result<RangeResult> {
        let r = RangeRequest {
            key: Bytes::from(k.to_string()),
            revision: rev,
            ..Default::default()
        };
        s.range(&r).map(|(res, _)| res)
    }

    #[test]
    fn index_fields_decode_like_the_whole_value() {
        let kv = KeyValue {
            key: Bytes::from_static(b"some/key"),
            create_revision: 5,
            mod_revision: 300,
            version: 7,
            value: Bytes::from(vec![9u8; 1000]),
            lease: 1 << 40,
        };
        for kind in [KIND_PUT, KIND_TOMBSTONE] {
            let bytes = encode_value(kind, &kv);
            let (k, got) = decode_index_fields(&bytes).unwrap();
            assert_eq!(k, kind);
            assert_eq!(
                got,
                KeyValue {
                    value: Bytes::new(),
                    ..kv.clone()
                }
            );
            for cut in 1..bytes.len() {
                // Cut anywhere inside the value: an error, never a panic.
                let _ = decode_index_fields(&bytes[..cut]);
            }
        }
        assert!(decode_index_fields(&[7, 1, 2]).is_err());
    }

    #[test]
    fn revisions_start_at_one_and_history_is_readable() {
        let (_d, s) = open();
        assert_eq!(s.current_rev(), 1);
        assert_eq!(put(&s, "foo", "a"), 2);
        assert_eq!(put(&s, "foo", "b"), 3);
        let r = get(&s, "foo", 2).unwrap();
        assert_eq!(&r.kvs[0].value[..], b"a");
        assert_eq!(r.kvs[0].version, 1);
        let r = get(&s, "foo", 0).unwrap();
        assert_eq!(&r.kvs[0].value[..], b"b");
        assert_eq!(
            (
                r.kvs[0].create_revision,
                r.kvs[0].mod_revision,
                r.kvs[0].version
            ),
            (2, 3, 2)
        );
        assert!(matches!(get(&s, "foo", 4), Err(MvccError::FutureRev)));
    }

    #[test]
    fn changes_are_read_in_bounded_steps_of_whole_revisions() {
        let (_d, s) = open();
        let big = "v".repeat(1000);
        for i in 0..10 {
            put(&s, &format!("k{i}"), &big);
        }
        // One txn (revision 12) with three changes.
        let mut b = s.begin_batch();
        let mut w = b.begin_write();
        for k in ["t1", "t2", "t3"] {
            b.put(&mut w, Bytes::from(k), Bytes::from(big.clone()), 0)
                .unwrap();
        }
        b.end_write(w);
        assert_eq!(b.commit().unwrap(), 12);

        // Bounded by count.
        let (c, covered) = s.changes(2, 12, 4, usize::MAX).unwrap();
        assert_eq!((c.len(), covered), (4, 5));
        // Bounded by bytes: the step ends at the first revision boundary
        // past 2,500 bytes (three values of about 1,000).
        let (c, covered) = s.changes(2, 12, usize::MAX, 2500).unwrap();
        assert_eq!((c.len(), covered), (3, 4));
        // A revision is never split, whatever the bounds.
        let (c, covered) = s.changes(12, 12, 1, 1).unwrap();
        assert_eq!((c.len(), covered), (3, 12));
        let (c, covered) = s.changes(11, 12, 1, 1).unwrap();
        assert_eq!((c.len(), covered), (1, 11));
    }

    /// The rebuild at startup (sorted, in one pass) must give the index
    /// and lease attachments that applying the history one change at a
    /// time gave.
    #[test]
    fn a_rebuilt_index_answers_as_the_live_one() {
        let dir = tempfile::tempdir().unwrap();
        let write = |s: &Arc<Store>, ops: &[(&str, Option<i64>)]| {
            let mut b = s.begin_batch();
            let mut w = b.begin_write();
            for (k, lease) in ops {
                let key = Bytes::from(k.to_string());
                match lease {
                    Some(l) => {
                        b.put(&mut w, key, Bytes::from_static(b"v"), *l).unwrap();
                    }
                    None => {
                        b.delete_range(&mut w, &KeyRange::Single(key)).unwrap();
                    }
                }
            }
            b.end_write(w);
            b.commit().unwrap()
        };
        let keys = ["a", "b", "c", "d", "e"];
        let live = {
            let (s, _) = Store::open(Db::open(dir.path()).unwrap(), 1000).unwrap();
            // A seeded mix of puts (some leased), deletes, recreations and
            // multi-key writes, with a compaction in the middle.
            let mut x = 7u64;
            for step in 0..300 {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                let k = keys[(x % 5) as usize];
                let op = match x % 7 {
                    0 | 1 => None,
                    2 => Some(100 + (x % 3) as i64),
                    _ => Some(0),
                };
                if x.is_multiple_of(11) {
                    write(&s, &[(k, op), (keys[((x >> 8) % 5) as usize], Some(0))]);
                } else {
                    write(&s, &[(k, op)]);
                }
                if step == 150 {
                    let mut b = s.begin_batch();
                    b.compact(s.current_rev() - 20).unwrap();
                    b.commit().unwrap();
                }
            }
            // Some key ends leased whatever the draw; another loses its
            // lease to a plain put.
            write(&s, &[("a", Some(101)), ("b", Some(102))]);
            write(&s, &[("b", Some(0))]);
            let current = s.current_rev();
            let compacted = s.compact_rev();
            let answers: Vec<Option<index::Visible>> = (compacted..=current)
                .flat_map(|at| keys.iter().map(move |k| (at, *k)))
                .map(|(at, k)| s.index.read().get(k.as_bytes(), at))
                .collect();
            (current, compacted, answers)
        };
        let (s, leases) = Store::open(Db::open(dir.path()).unwrap(), 1000).unwrap();
        let (current, compacted, answers) = live;
        assert_eq!((s.current_rev(), s.compact_rev()), (current, compacted));
        let rebuilt: Vec<Option<index::Visible>> = (compacted..=current)
            .flat_map(|at| keys.iter().map(move |k| (at, *k)))
            .map(|(at, k)| s.index.read().get(k.as_bytes(), at))
            .collect();
        let points: Vec<(i64, &str)> = (compacted..=current)
            .flat_map(|at| keys.iter().map(move |k| (at, *k)))
            .collect();
        // Only a creation's main revision is stored (it is what clients
        // see): the live index also knows its sub-revision.
        let seen = |v: &Option<index::Visible>| v.map(|v| (v.modified, v.created.main, v.version));
        for ((point, live), rebuilt) in points.iter().zip(&answers).zip(&rebuilt) {
            assert_eq!(
                seen(live),
                seen(rebuilt),
                "key {} at revision {}",
                point.1,
                point.0
            );
        }
        // Leases: what each live key's current revision carries.
        let mut expected: Vec<(Bytes, i64)> = keys
            .iter()
            .filter_map(|k| {
                let r = get(&s, k, 0).unwrap();
                let kv = r.kvs.first()?;
                (kv.lease != 0).then(|| (kv.key.clone(), kv.lease))
            })
            .collect();
        let mut leases = leases;
        leases.sort();
        expected.sort();
        assert_eq!(leases, expected);
        assert!(!expected.is_empty(), "the history leaves some key leased");
    }

    #[test]
    fn compaction_and_restart() {
        let dir = tempfile::tempdir().unwrap();
        {
            let (s, _) = Store::open(Db::open(dir.path()).unwrap(), 2).unwrap();
            for i in 0..10 {
                put(&s, "k", &i.to_string());
            }
            put(&s, "other", "x");
            let mut w = s.compaction_watch();
            let mut b = s.begin_batch();
            b.compact(8).unwrap();
            b.commit().unwrap();
            let rt = tokio::runtime::Builder::new_current_thread()
                .build()
                .unwrap();
            rt.block_on(w.wait_for(|r| *r >= 8)).unwrap();
            assert!(matches!(get(&s, "k", 7), Err(MvccError::Compacted)));
            let r = get(&s, "k", 8).unwrap();
            assert_eq!(&r.kvs[0].value[..], b"6");
            let mut b = s.begin_batch();
            assert!(matches!(b.compact(8), Err(MvccError::Compacted)));
            assert!(matches!(b.compact(100), Err(MvccError::FutureRev)));
        }
        let (s, _) = Store::open(Db::open(dir.path()).unwrap(), 1000).unwrap();
        assert_eq!(s.current_rev(), 12);
        assert_eq!(s.compact_rev(), 8);
        let r = get(&s, "k", 0).unwrap();
        assert_eq!(r.kvs[0].version, 10);
        assert_eq!(put(&s, "k", "new"), 13);
        assert_eq!(get(&s, "k", 0).unwrap().kvs[0].version, 11);
        // On disk: k's kept revision 8, its revisions 9-11 and 13, other's 12.
        assert_eq!(s.db.kv.iter().count(), 6);
    }

    #[test]
    fn compaction_batch_limit_changes_apply_to_the_next_batch() {
        let (_d, s) = open();
        for i in 0..30 {
            put(&s, "k", &i.to_string()); // revisions 2..=31
        }
        let job = |rev| CompactionJob {
            rev,
            keep: s.index.write().compact(rev),
        };
        // At the limit it was opened with (1000), 2..=10 go in one batch.
        assert_eq!(s.physical_compaction(&job(11)).unwrap(), 1);
        // What a reload of --experimental-compaction-batch-limit does.
        s.set_compaction_batch_limit(4);
        // 11..=30: 20 revisions in batches of 4.
        assert_eq!(s.physical_compaction(&job(31)).unwrap(), 5);
        assert_eq!(s.db.kv.iter().count(), 1);
        assert_eq!(&get(&s, "k", 0).unwrap().kvs[0].value[..], b"29");
    }

    #[test]
    fn hash_kv_is_logical_and_checks_revisions() {
        let (_d, a) = open();
        let (_e, b) = open();
        for s in [&a, &b] {
            for i in 0..5 {
                put(s, "k", &i.to_string());
            }
            put(s, "other", "x");
        }
        // Same history: same hash, at every revision.
        for rev in [0, 2, 5, 7] {
            assert_eq!(a.hash_kv(rev).unwrap(), b.hash_kv(rev).unwrap());
        }
        let h = a.hash_kv(0).unwrap();
        assert_eq!((h.revision, h.current, h.compacted), (7, 7, -1));
        assert_ne!(a.hash_kv(5).unwrap().hash, h.hash);
        assert!(matches!(a.hash_kv(8), Err(MvccError::FutureRev)));

        // Compact `a` only: its hash at 6 and 7 stays what `b` (which has
        // the history physically) says once `b` compacts logically too —
        // whether the old revisions are physically gone yet does not matter.
        let mut w = a.compaction_watch();
        let mut batch = a.begin_batch();
        batch.compact(5).unwrap();
        batch.commit().unwrap();
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        rt.block_on(w.wait_for(|r| *r >= 5)).unwrap();
        assert!(matches!(a.hash_kv(5), Err(MvccError::Compacted)));
        assert!(matches!(a.hash_kv(3), Err(MvccError::Compacted)));
        {
            // `b`: the same logical compaction, physical deletion not run yet.
            let keep = b.index.write().compact(5);
            b.compacted.store(5, Ordering::Release);
            assert_eq!(keep.len(), 1);
        }
        assert_eq!(a.hash_kv(0).unwrap(), b.hash_kv(0).unwrap());
        assert_eq!(a.hash_kv(6).unwrap(), b.hash_kv(6).unwrap());
        assert_eq!(a.hash_kv(0).unwrap().compacted, 5);
        // Compaction dropped history: the hash differs from before.
        assert_ne!(a.hash_kv(0).unwrap().hash, h.hash);
    }

    #[test]
    fn range_limits_sorting_and_count() {
        let (_d, s) = open();
        for k in ["a", "b", "c", "d"] {
            put(&s, k, k);
        }
        put(&s, "b", "bb");
        let mut r = RangeRequest {
            key: Bytes::from_static(b"a"),
            range_end: Bytes::from_static(b"\0"),
            limit: 2,
            ..Default::default()
        };
        let (res, rev) = s.range(&r).unwrap();
        assert_eq!(rev, 6);
        assert_eq!(res.count, 4);
        assert!(res.more);
        assert_eq!(res.kvs.len(), 2);
        r.sort_target = SortTarget::Mod as i32;
        r.sort_order = SortOrder::Descend as i32;
        let (res, _) = s.range(&r).unwrap();
        assert_eq!(&res.kvs[0].key[..], b"b");
        assert_eq!(&res.kvs[1].key[..], b"d");
        r.limit = 0;
        r.sort_order = 0;
        r.sort_target = 0;
        r.min_mod_revision = 4;
        let (res, _) = s.range(&r).unwrap();
        let keys: Vec<_> = res.kvs.iter().map(|kv| kv.key.clone()).collect();
        assert_eq!(
            keys,
            vec![
                Bytes::from_static(b"b"),
                Bytes::from_static(b"c"),
                Bytes::from_static(b"d")
            ]
        );
        // etcd counts before filtering.
        assert_eq!(res.count, 4);
        r.min_mod_revision = 0;
        r.count_only = true;
        let (res, _) = s.range(&r).unwrap();
        assert!(res.kvs.is_empty());
        assert_eq!(res.count, 4);
    }

    /// The member's journal files (fjall keeps them under the database).
    fn journals(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
        let mut out = Vec::new();
        let mut todo = vec![dir.to_path_buf()];
        while let Some(d) = todo.pop() {
            for e in std::fs::read_dir(&d).unwrap() {
                let p = e.unwrap().path();
                if p.is_dir() {
                    todo.push(p);
                } else if p.extension().is_some_and(|x| x == "jnl") {
                    out.push(p);
                }
            }
        }
        out
    }

    /// Where each journal's data ends (fjall preallocates with zeros).
    fn journal_ends(dir: &std::path::Path) -> Vec<(std::path::PathBuf, usize)> {
        journals(dir)
            .into_iter()
            .map(|p| {
                let bytes = std::fs::read(&p).unwrap();
                let end = bytes.iter().rposition(|b| *b != 0).map_or(0, |i| i + 1);
                (p, end)
            })
            .collect()
    }

    /// Writes `a` (revision 2), then `b` (revision 3); flushes `flushed`'s
    /// memtable to a table; then cuts every journal back to where it ended
    /// after `a`, as a torn or damaged tail cut off on recovery would.
    fn cut_after_first_put(dir: &std::path::Path, flushed: fn(&Db) -> &fjall::Keyspace) {
        let cut = {
            let db = Db::open(dir).unwrap();
            let (s, _) = Store::open(db.clone(), 1000).unwrap();
            assert_eq!(put(&s, "a", "1"), 2);
            db.sync().unwrap();
            let cut = journal_ends(dir);
            assert_eq!(put(&s, "b", "2"), 3);
            db.sync().unwrap();
            flushed(&db).rotate_memtable_and_wait().unwrap();
            cut
        };
        let mut cut_any = false;
        for (path, end) in cut {
            let mut bytes = std::fs::read(&path).unwrap();
            if bytes[end..].iter().any(|b| *b != 0) {
                bytes[end..].fill(0);
                std::fs::write(&path, &bytes).unwrap();
                cut_any = true;
            }
        }
        assert!(cut_any, "the second put reached no journal");
    }

    /// `kv` flushed past the cut, `meta` not: the store comes back at the
    /// revision `meta` records, so raft's re-delivered entry gets the same
    /// revision again rather than a new one.
    #[test]
    fn a_revision_keyspace_ahead_of_the_applied_state_is_rolled_back() {
        let dir = tempfile::tempdir().unwrap();
        cut_after_first_put(dir.path(), |db| &db.kv);
        let db = Db::open(dir.path()).unwrap();
        assert_eq!(meta::kv_revision(&db).unwrap(), Some(2));
        assert!(
            db.kv.range(Rev::new(3, 0).to_key()..).next().is_some(),
            "the flushed table kept revision 3 (else this test shows nothing)"
        );
        let (s, _) = Store::open(db.clone(), 1000).unwrap();
        assert_eq!(s.current_rev(), 2);
        assert!(db.kv.range(Rev::new(3, 0).to_key()..).next().is_none());
        let got = get(&s, "b", 0).unwrap();
        assert!(got.kvs.is_empty(), "{got:?}");
        assert_eq!(put(&s, "b", "2"), 3);
        drop((s, db));
        let (s, _) = Store::open(Db::open(dir.path()).unwrap(), 1000).unwrap();
        assert_eq!(s.current_rev(), 3);
    }

    /// `meta` flushed past the cut, `kv` not: revisions the applied index
    /// counts are gone, and the store refuses to open.
    #[test]
    fn a_revision_keyspace_behind_the_applied_state_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        cut_after_first_put(dir.path(), |db| &db.meta);
        let db = Db::open(dir.path()).unwrap();
        assert_eq!(meta::kv_revision(&db).unwrap(), Some(3));
        let err = Store::open(db, 1000).err().expect("refused");
        let msg = err.to_string();
        assert!(
            msg.contains("covers revision 3") && msg.contains("ends at 2"),
            "{msg}"
        );
    }
}
