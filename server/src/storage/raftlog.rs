//! The raft log on fjall, implementing `raft::Storage`.
//!
//! Layout in the `raft` keyspace: `e ‖ index(be u64)` → entry (raft's own
//! protobuf encoding), `hs` → hard state, `trunc` → (index, term) of the last
//! entry removed by log compaction or covered by an installed snapshot.
//!
//! Only the raft thread touches this type. It keeps first/last index and the
//! hard state in memory, plus a bounded cache of the newest entries so that
//! replication to followers rarely reads the disk.

use super::snapfile::SnapshotRegistry;
use super::{Db, Error as StorageError, Result as StorageResult, meta};
use fjall::PersistMode;
use protobuf::Message as _;
use raft::prelude::{ConfState, Entry, HardState, Snapshot, SnapshotMetadata};
use raft::{GetEntriesContext, RaftState, StorageError as RaftStorageError};
use std::collections::VecDeque;
use std::sync::Arc;

const HARD_STATE: &[u8] = b"hs";
const TRUNCATED: &[u8] = b"trunc";
/// Present while a snapshot from the leader is being loaded into the state
/// machine; names the snapshot file so an interrupted install is redone.
const INSTALLING: &[u8] = b"installing";
/// This member's identity (not replicated: a snapshot must not overwrite it).
const IDENTITY: &[u8] = b"identity";
const ENTRY_PREFIX: u8 = b'e';

/// Newest entries kept in memory, by count and by bytes, whichever is hit first.
const CACHE_MAX_ENTRIES: usize = 16 * 1024;
const CACHE_MAX_BYTES: usize = 64 * 1024 * 1024;

fn entry_key(index: u64) -> [u8; 9] {
    let mut k = [0u8; 9];
    k[0] = ENTRY_PREFIX;
    k[1..].copy_from_slice(&index.to_be_bytes());
    k
}

fn decode_entry(bytes: &[u8]) -> StorageResult<Entry> {
    let mut e = Entry::default();
    e.merge_from_bytes(bytes)
        .map_err(|err| StorageError::corrupt("raft entry", err))?;
    Ok(e)
}

fn encode<M: protobuf::Message>(m: &M, what: &'static str) -> StorageResult<Vec<u8>> {
    m.write_to_bytes()
        .map_err(|e| StorageError::corrupt(what, e))
}

fn other(e: StorageError) -> raft::Error {
    raft::Error::Store(RaftStorageError::Other(Box::new(e)))
}

pub struct RaftLog {
    db: Db,
    hard_state: HardState,
    conf_state: ConfState,
    /// Index and term of the entry just before the first one in the log.
    truncated: (u64, u64),
    last_index: u64,
    cache: VecDeque<Entry>,
    cache_bytes: usize,
    snapshots: Arc<SnapshotRegistry>,
}

impl RaftLog {
    /// Loads the log's in-memory bookkeeping from disk.
    pub fn open(db: Db, snapshots: Arc<SnapshotRegistry>) -> StorageResult<RaftLog> {
        let mut hard_state = HardState::default();
        if let Some(v) = db.raft.get(HARD_STATE)? {
            hard_state
                .merge_from_bytes(&v)
                .map_err(|e| StorageError::corrupt("hard state", e))?;
        }
        let truncated = match db.raft.get(TRUNCATED)? {
            None => (0, 0),
            Some(v) => {
                if v.len() != 16 {
                    return Err(StorageError::corrupt("truncation point", "bad length"));
                }
                let mut a = [0u8; 8];
                let mut b = [0u8; 8];
                a.copy_from_slice(&v[..8]);
                b.copy_from_slice(&v[8..]);
                (u64::from_be_bytes(a), u64::from_be_bytes(b))
            }
        };
        let last_index = match db.raft.prefix([ENTRY_PREFIX]).next_back() {
            None => truncated.0,
            Some(guard) => {
                let key = guard.key()?;
                if key.len() != 9 {
                    return Err(StorageError::corrupt("raft entry key", "bad length"));
                }
                let mut idx = [0u8; 8];
                idx.copy_from_slice(&key[1..]);
                u64::from_be_bytes(idx).max(truncated.0)
            }
        };
        let conf_state = meta::conf_state(&db)?;
        // The state machine may have applied (and durably recorded) entries
        // whose commit index never reached the hard state before a crash; an
        // applied entry is committed by definition, so lift the commit index.
        let applied = meta::applied(&db)?;
        if hard_state.commit < applied.index {
            hard_state.commit = applied.index;
        }
        let mut truncated = truncated;
        let mut last_index = last_index;
        // The log lost entries the state machine applied: its journal's tail
        // was cut on recovery after `meta` had been flushed past the cut
        // (keyspaces flush on their own). Applied entries are committed, so
        // the log restarts just after them, as after a snapshot install;
        // raft would otherwise stop at a commit index beyond its last entry.
        // (A snapshot install a crash interrupted looks the same until it is
        // redone; that is left to the redo.)
        if applied.index > last_index && db.raft.get(INSTALLING)?.is_none() {
            tracing::warn!(
                applied = applied.index,
                last_index,
                "the raft log ends before the applied index (the journal's tail was cut on \
                 recovery); the log restarts after the applied entry"
            );
            if hard_state.term < applied.term {
                hard_state.term = applied.term;
            }
            let mut batch = db.raft_batch();
            for idx in truncated.0 + 1..=last_index {
                batch.remove(&db.raft, entry_key(idx));
            }
            batch.insert(&db.raft, TRUNCATED, pair(applied.index, applied.term));
            batch.insert(&db.raft, HARD_STATE, encode(&hard_state, "hard state")?);
            batch.durability(Some(PersistMode::SyncData)).commit()?;
            truncated = (applied.index, applied.term);
            last_index = applied.index;
        }
        Ok(RaftLog {
            db,
            hard_state,
            conf_state,
            truncated,
            last_index,
            cache: VecDeque::new(),
            cache_bytes: 0,
            snapshots,
        })
    }

    pub fn hard_state(&self) -> &HardState {
        &self.hard_state
    }

    /// Whether this member has ever been initialised (bootstrapped or joined).
    pub fn is_initialized(&self) -> bool {
        self.conf_state != ConfState::default()
    }

    /// Sets the conf state raft starts from (bootstrap, or after a conf
    /// change was applied). The durable copy lives in the state machine's
    /// metadata; this is raft's view for `initial_state`.
    pub fn set_conf_state(&mut self, cs: ConfState) {
        self.conf_state = cs;
    }

    pub fn first_index_value(&self) -> u64 {
        self.truncated.0 + 1
    }

    pub fn last_index_value(&self) -> u64 {
        self.last_index
    }

    /// Appends `entries` (overwriting any conflicting suffix) and stores the
    /// hard state, in one batch. `sync` makes the batch durable before return.
    pub fn persist(
        &mut self,
        entries: &[Entry],
        hs: Option<&HardState>,
        sync: bool,
    ) -> StorageResult<()> {
        debug_assert!(
            entries.windows(2).all(|w| w[1].index == w[0].index + 1),
            "raft handed over a non-contiguous batch of entries"
        );
        let mut batch = self.db.raft_batch();
        if let Some(first) = entries.first() {
            let first_idx = first.index;
            if first_idx <= self.truncated.0 {
                return Err(StorageError::Raft(format!(
                    "append at {first_idx} is below the truncation point {}",
                    self.truncated.0
                )));
            }
            if first_idx > self.last_index + 1 {
                return Err(StorageError::Raft(format!(
                    "append at {first_idx} leaves a gap after last index {}",
                    self.last_index
                )));
            }
            let new_last = entries[entries.len() - 1].index;
            // Raft overwrites a conflicting suffix; drop whatever lies beyond
            // the new last index so no stale entry survives a restart.
            for idx in (new_last + 1)..=self.last_index {
                batch.remove(&self.db.raft, entry_key(idx));
            }
            for e in entries {
                batch.insert(&self.db.raft, entry_key(e.index), encode(e, "raft entry")?);
            }
        }
        if let Some(hs) = hs {
            batch.insert(&self.db.raft, HARD_STATE, encode(hs, "hard state")?);
        }
        let mode = if sync {
            PersistMode::SyncData
        } else {
            PersistMode::Buffer
        };
        let started = std::time::Instant::now();
        batch.durability(Some(mode)).commit()?;
        if sync {
            crate::metrics::METRICS
                .wal_fsync
                .observe(started.elapsed().as_secs_f64());
        }

        if let Some(hs) = hs {
            self.hard_state = hs.clone();
        }
        if let Some(first) = entries.first() {
            self.cache_append(first.index, entries);
            self.last_index = entries[entries.len() - 1].index;
        }
        Ok(())
    }

    /// Records a new commit index (from a LightReady). Not synced: on restart
    /// the commit index is lifted to the applied index anyway.
    pub fn set_commit(&mut self, commit: u64) -> StorageResult<()> {
        if commit <= self.hard_state.commit {
            return Ok(());
        }
        let mut hs = self.hard_state.clone();
        hs.commit = commit;
        self.persist(&[], Some(&hs), false)
    }

    fn cache_append(&mut self, first_idx: u64, entries: &[Entry]) {
        // Drop the cached conflicting suffix first.
        while let Some(back) = self.cache.back() {
            if back.index >= first_idx {
                let e = self.cache.pop_back().expect("non-empty");
                self.cache_bytes -= e.compute_size() as usize;
            } else {
                break;
            }
        }
        // Keep the cache contiguous: if it does not end right before the new
        // entries, start over from them.
        if let Some(back) = self.cache.back()
            && back.index + 1 != first_idx
        {
            self.cache.clear();
            self.cache_bytes = 0;
        }
        for e in entries {
            self.cache_bytes += e.compute_size() as usize;
            self.cache.push_back(e.clone());
        }
        while self.cache.len() > CACHE_MAX_ENTRIES || self.cache_bytes > CACHE_MAX_BYTES {
            match self.cache.pop_front() {
                Some(e) => self.cache_bytes -= e.compute_size() as usize,
                None => break,
            }
        }
    }

    fn cached(&self, index: u64) -> Option<&Entry> {
        let front = self.cache.front()?.index;
        if index < front {
            return None;
        }
        self.cache.get((index - front) as usize)
    }

    fn read_entry(&self, index: u64) -> StorageResult<Entry> {
        if let Some(e) = self.cached(index) {
            return Ok(e.clone());
        }
        match self.db.raft.get(entry_key(index))? {
            Some(v) => decode_entry(&v),
            None => Err(StorageError::corrupt(
                "raft log",
                format!("entry {index} missing"),
            )),
        }
    }

    /// Removes entries up to and including `to` (log compaction). `to` must be
    /// applied and durable in the state machine; the caller guarantees that.
    pub fn compact(&mut self, to: u64) -> StorageResult<()> {
        if to <= self.truncated.0 {
            return Ok(());
        }
        if to > self.last_index {
            return Err(StorageError::Raft(format!(
                "compact to {to} beyond last index {}",
                self.last_index
            )));
        }
        let term = self.read_entry(to)?.term;
        self.db.sync_state_for_log()?;
        let mut batch = self.db.raft_batch();
        for idx in self.truncated.0 + 1..=to {
            batch.remove(&self.db.raft, entry_key(idx));
        }
        batch.insert(&self.db.raft, TRUNCATED, pair(to, term));
        batch.durability(Some(PersistMode::Buffer)).commit()?;
        self.truncated = (to, term);
        while let Some(front) = self.cache.front() {
            if front.index <= to {
                let e = self.cache.pop_front().expect("non-empty");
                self.cache_bytes -= e.compute_size() as usize;
            } else {
                break;
            }
        }
        Ok(())
    }

    /// Replaces the whole log by a snapshot's position. Called only after the
    /// state machine durably holds the snapshot's data.
    pub fn apply_snapshot(&mut self, md: &SnapshotMetadata) -> StorageResult<()> {
        self.db.sync_state_for_log()?;
        let mut batch = self.db.raft_batch();
        for idx in self.truncated.0 + 1..=self.last_index {
            batch.remove(&self.db.raft, entry_key(idx));
        }
        batch.insert(&self.db.raft, TRUNCATED, pair(md.index, md.term));
        let mut hs = self.hard_state.clone();
        if hs.commit < md.index {
            hs.commit = md.index;
        }
        if hs.term < md.term {
            hs.term = md.term;
        }
        batch.insert(&self.db.raft, HARD_STATE, encode(&hs, "hard state")?);
        batch.remove(&self.db.raft, INSTALLING);
        batch.durability(Some(PersistMode::SyncData)).commit()?;
        self.hard_state = hs;
        self.truncated = (md.index, md.term);
        self.last_index = md.index;
        self.conf_state = md.get_conf_state().clone();
        self.cache.clear();
        self.cache_bytes = 0;
        debug_assert!(self.cache.is_empty() && self.last_index + 1 == self.first_index_value());
        Ok(())
    }
}

/// Records that the state machine is about to be replaced by this snapshot file.
impl RaftLog {
    pub fn mark_installing(&mut self, path: &std::path::Path) -> StorageResult<()> {
        let mut batch = self.db.raft_batch();
        batch.insert(
            &self.db.raft,
            INSTALLING,
            path.to_string_lossy().as_bytes().to_vec(),
        );
        batch.durability(Some(PersistMode::SyncData)).commit()?;
        Ok(())
    }
}

/// The snapshot file whose install a crash interrupted, if any.
pub fn interrupted_install(db: &Db) -> StorageResult<Option<std::path::PathBuf>> {
    Ok(db
        .raft
        .get(INSTALLING)?
        .map(|v| std::path::PathBuf::from(String::from_utf8_lossy(&v).into_owned())))
}

/// Starts an empty log after `index` (the entry at `index` has `term`), with
/// that much committed: used when bootstrapping a new cluster.
pub fn put_initial_position(
    batch: &mut fjall::OwnedWriteBatch,
    db: &Db,
    index: u64,
    term: u64,
) -> StorageResult<()> {
    batch.insert(&db.raft, TRUNCATED, pair(index, term));
    let hs = HardState {
        term,
        vote: 0,
        commit: index,
        ..Default::default()
    };
    batch.insert(&db.raft, HARD_STATE, encode(&hs, "hard state")?);
    Ok(())
}

/// Stores `entries` and `hs` as they are, before raft ever runs on this
/// database: the log of a member imported from etcd
/// (`crate::etcd_datadir`), after `put_initial_position`.
pub fn put_imported(
    batch: &mut fjall::OwnedWriteBatch,
    db: &Db,
    entries: &[Entry],
    hs: &HardState,
) -> StorageResult<()> {
    for e in entries {
        batch.insert(&db.raft, entry_key(e.index), encode(e, "raft entry")?);
    }
    batch.insert(&db.raft, HARD_STATE, encode(hs, "hard state")?);
    Ok(())
}

/// This member's (member ID, cluster ID), once bootstrapped.
pub fn identity(db: &Db) -> StorageResult<Option<(u64, u64)>> {
    match db.raft.get(IDENTITY)? {
        None => Ok(None),
        Some(v) if v.len() == 16 => {
            let mut a = [0u8; 8];
            let mut b = [0u8; 8];
            a.copy_from_slice(&v[..8]);
            b.copy_from_slice(&v[8..]);
            Ok(Some((u64::from_be_bytes(a), u64::from_be_bytes(b))))
        }
        Some(_) => Err(StorageError::corrupt("member identity", "bad length")),
    }
}

pub fn put_identity(batch: &mut fjall::OwnedWriteBatch, db: &Db, member_id: u64, cluster_id: u64) {
    batch.insert(&db.raft, IDENTITY, pair(member_id, cluster_id));
}

fn pair(a: u64, b: u64) -> Vec<u8> {
    let mut v = Vec::with_capacity(16);
    v.extend_from_slice(&a.to_be_bytes());
    v.extend_from_slice(&b.to_be_bytes());
    v
}

impl raft::Storage for RaftLog {
    fn initial_state(&self) -> raft::Result<RaftState> {
        Ok(RaftState {
            hard_state: self.hard_state.clone(),
            conf_state: self.conf_state.clone(),
        })
    }

    fn entries(
        &self,
        low: u64,
        high: u64,
        max_size: impl Into<Option<u64>>,
        _context: GetEntriesContext,
    ) -> raft::Result<Vec<Entry>> {
        let max_size = max_size.into().unwrap_or(u64::MAX);
        if low <= self.truncated.0 {
            return Err(raft::Error::Store(RaftStorageError::Compacted));
        }
        if high > self.last_index + 1 {
            return Err(raft::Error::Store(RaftStorageError::Unavailable));
        }
        let mut out = Vec::new();
        let mut size: u64 = 0;
        let mut idx = low;
        // Serve from the cache while it covers the range.
        while idx < high {
            let Some(e) = self.cached(idx) else { break };
            size += u64::from(e.compute_size());
            if !out.is_empty() && size > max_size {
                return Ok(out);
            }
            out.push(e.clone());
            idx += 1;
        }
        if idx < high {
            let start = entry_key(idx);
            let end = entry_key(high);
            for guard in self.db.raft.range(start..end) {
                let (_, v) = guard.into_inner().map_err(|e| other(e.into()))?;
                let e = decode_entry(&v).map_err(other)?;
                if e.index != idx {
                    return Err(other(StorageError::corrupt(
                        "raft log",
                        format!("expected entry {idx}, found {}", e.index),
                    )));
                }
                idx += 1;
                size += u64::from(e.compute_size());
                if !out.is_empty() && size > max_size {
                    return Ok(out);
                }
                out.push(e);
            }
        }
        // Every index in [low, high) is within the log, so a short read means
        // the disk lost entries it acknowledged.
        let expected_last = out.last().map(|e| e.index);
        if low < high && expected_last.is_none() {
            return Err(other(StorageError::corrupt(
                "raft log",
                format!("entries {low}..{high} missing"),
            )));
        }
        Ok(out)
    }

    fn term(&self, idx: u64) -> raft::Result<u64> {
        if idx == self.truncated.0 {
            return Ok(self.truncated.1);
        }
        if idx < self.truncated.0 {
            return Err(raft::Error::Store(RaftStorageError::Compacted));
        }
        if idx > self.last_index {
            return Err(raft::Error::Store(RaftStorageError::Unavailable));
        }
        self.read_entry(idx).map(|e| e.term).map_err(other)
    }

    fn first_index(&self) -> raft::Result<u64> {
        Ok(self.truncated.0 + 1)
    }

    fn last_index(&self) -> raft::Result<u64> {
        Ok(self.last_index)
    }

    fn snapshot(&self, request_index: u64, to: u64) -> raft::Result<Snapshot> {
        let need = request_index.max(self.truncated.0);
        match self.snapshots.latest_serving(need, to) {
            Some(info) => Ok(info.to_raft_snapshot()),
            None => {
                // Building one takes a while; raft asks again on its next
                // attempt to replicate to that follower.
                self.snapshots.request_generation(need, to);
                Err(raft::Error::Store(
                    RaftStorageError::SnapshotTemporarilyUnavailable,
                ))
            }
        }
    }
}

#[cfg(test)]
#[path = "raftlog_tests.rs"]
mod tests;
