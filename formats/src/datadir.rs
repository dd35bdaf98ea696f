//! A stopped etcd 3.4 member's data dir, read the way etcd boots from it.
//!
//! 1. Collect the WAL's SNAPSHOT records up to the last commit index.
//! 2. Take the newest `.snap` file that reads cleanly and is one of them.
//! 3. Read the WAL from that snapshot: metadata (member and cluster ID), the
//!    last hard state, the entries after the snapshot.
//! 4. Pick the bbolt backend: `member/snap/db` if its consistent index has
//!    reached the snapshot, else `member/snap/<index:016x>.snap.db` (a
//!    database received from the leader and not yet moved into place).
//!
//! An importer then loads the backend and applies the committed entries
//! after its consistent index ([`MemberData::entries_to_apply`]).

use crate::etcd::{EtcdDb, EtcdError};
use crate::pb::raftpb::Entry;
use crate::pb::walpb::Snapshot as WalSnapshot;
use crate::snap::{self, LoadedSnapshot};
use crate::wal::{self, WalContents, WalError};
use std::path::{Path, PathBuf};

/// Errors reading a data dir.
#[derive(Debug, thiserror::Error)]
pub enum DataDirError {
    #[error(transparent)]
    Wal(#[from] WalError),
    #[error(transparent)]
    Db(#[from] EtcdError),
    #[error(
        "{path}: database consistent index {consistent_index} is behind snapshot index {snapshot_index} and no {snap_db} exists"
    )]
    BackendBehindSnapshot {
        path: PathBuf,
        consistent_index: u64,
        snapshot_index: u64,
        snap_db: String,
    },
}

/// The bbolt database a member boots from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Backend {
    pub path: PathBuf,
    /// Its `meta/consistent_index` (0 if absent).
    pub consistent_index: u64,
}

/// Everything etcd reads at boot from a member's data dir.
#[derive(Debug, Clone)]
pub struct MemberData {
    pub wal_dir: PathBuf,
    pub snap_dir: PathBuf,
    /// The raft snapshot booted from (`None`: from the start of the log).
    pub snapshot: Option<LoadedSnapshot>,
    /// `.snap` files that did not read, with why.
    pub broken_snapshots: Vec<(PathBuf, String)>,
    pub wal: WalContents,
    /// `None` only when there is no database and no snapshot: the member
    /// starts from an empty store.
    pub backend: Option<Backend>,
}

impl MemberData {
    /// Reads `<data_dir>/member/{wal,snap}`.
    pub fn read(data_dir: &Path) -> Result<MemberData, DataDirError> {
        let member = data_dir.join("member");
        MemberData::read_dirs(&member.join("wal"), &member.join("snap"))
    }

    /// Reads a WAL dir (etcd's `--wal-dir` may be elsewhere) and a snap dir.
    pub fn read_dirs(wal_dir: &Path, snap_dir: &Path) -> Result<MemberData, DataDirError> {
        let valid = wal::valid_snapshot_entries(wal_dir)?;
        let (snapshot, broken) = snap::load_newest_available(snap_dir, &valid)?;
        let start = snapshot
            .as_ref()
            .map_or(WalSnapshot::default(), |s| WalSnapshot {
                index: s.index(),
                term: s.term(),
            });
        let wal = wal::read_wal(wal_dir, start)?;
        let backend = choose_backend(snap_dir, start.index)?;
        Ok(MemberData {
            wal_dir: wal_dir.to_path_buf(),
            snap_dir: snap_dir.to_path_buf(),
            snapshot,
            broken_snapshots: broken
                .into_iter()
                .map(|(p, e)| (p, e.to_string()))
                .collect(),
            wal,
            backend,
        })
    }

    /// The member's ID, from the WAL metadata.
    pub fn member_id(&self) -> Option<u64> {
        self.wal.metadata.map(|m| m.node_id)
    }

    /// The cluster's ID, from the WAL metadata.
    pub fn cluster_id(&self) -> Option<u64> {
        self.wal.metadata.map(|m| m.cluster_id)
    }

    /// Raft index of the snapshot booted from (0 for none).
    pub fn snapshot_index(&self) -> u64 {
        self.snapshot.as_ref().map_or(0, LoadedSnapshot::index)
    }

    /// Committed entries the backend has not applied yet: those with
    /// `consistent_index < index <= commit`. etcd replays all committed
    /// entries after the snapshot, but applies v3 requests only past the
    /// consistent index; conf changes and v2 requests before it already
    /// live in the snapshot's v2 store.
    pub fn entries_to_apply(&self) -> &[Entry] {
        let ci = self.backend.as_ref().map_or(0, |b| b.consistent_index);
        let committed = self.wal.committed_entries();
        let start = committed.partition_point(|e| e.index <= ci);
        &committed[start..]
    }
}

fn consistent_index(path: &Path) -> Result<u64, DataDirError> {
    Ok(EtcdDb::open(path)?.meta()?.consistent_index.unwrap_or(0))
}

fn choose_backend(snap_dir: &Path, snapshot_index: u64) -> Result<Option<Backend>, DataDirError> {
    let db = snap_dir.join("db");
    let db_ci = if db.exists() {
        Some(consistent_index(&db)?)
    } else {
        None
    };
    if let Some(ci) = db_ci
        && snapshot_index <= ci
    {
        return Ok(Some(Backend {
            path: db,
            consistent_index: ci,
        }));
    }
    let snap_db_name = format!("{snapshot_index:016x}.snap.db");
    let snap_db = snap_dir.join(&snap_db_name);
    if snapshot_index > 0 && snap_db.exists() {
        let ci = consistent_index(&snap_db)?;
        return Ok(Some(Backend {
            path: snap_db,
            consistent_index: ci,
        }));
    }
    match db_ci {
        None if snapshot_index == 0 => Ok(None),
        ci => Err(DataDirError::BackendBehindSnapshot {
            path: db,
            consistent_index: ci.unwrap_or(0),
            snapshot_index,
            snap_db: snap_db_name,
        }),
    }
}
