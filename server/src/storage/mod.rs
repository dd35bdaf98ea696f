//! Storage: one fjall `Database` holding both the raft log and the state
//! machine (MVCC data and metadata).
//!
//! Keeping everything in one database means one journal: the fsync that makes
//! a batch of new raft entries durable also makes every earlier state-machine
//! write durable, and the applied index is always written in the same atomic
//! batch as the data it covers. See `docs/architecture.md` for the invariants.

pub mod meta;
pub mod mvcc;
pub mod raftlog;
pub mod snapfile;

use fjall::{Database, Keyspace, KeyspaceCreateOptions, PersistMode};
use std::path::{Path, PathBuf};

/// Storage-layer failures. Any of these means the member cannot trust its
/// disk; callers treat them as fatal for the request (and the raft loop stops).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("storage engine: {0}")]
    Engine(#[from] fjall::Error),
    #[error("i/o on {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("corrupt record {what}: {detail}")]
    Corrupt { what: &'static str, detail: String },
    #[error("raft: {0}")]
    Raft(String),
}

impl Error {
    pub fn corrupt(what: &'static str, detail: impl std::fmt::Display) -> Self {
        Error::Corrupt {
            what,
            detail: detail.to_string(),
        }
    }
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Handles to the database and its keyspaces. Cheap to clone.
#[derive(Clone)]
pub struct Db {
    pub db: Database,
    /// Raft log entries and raft's own persistent state (hard state, truncation point).
    pub raft: Keyspace,
    /// MVCC revisions: `revision → KeyValue`.
    pub kv: Keyspace,
    /// State-machine metadata: applied index, membership, conf state, compaction.
    pub meta: Keyspace,
    pub dir: PathBuf,
}

impl Db {
    /// Opens (or creates) the database under `member_dir`.
    pub fn open(member_dir: &Path) -> Result<Db> {
        let dir = member_dir.join("db");
        if !dir.exists() {
            Self::create(member_dir, &dir)?;
        }
        let db = Database::builder(&dir)
            // The raft loop decides when to fsync (once per Ready); every
            // other write only needs to reach the OS, because the raft log
            // can replay it after a crash.
            .manual_journal_persist(true)
            .cache_size(64 * 1024 * 1024)
            .open()?;
        let raft = db.keyspace("raft", KeyspaceCreateOptions::default)?;
        let kv = db.keyspace("kv", KeyspaceCreateOptions::default)?;
        let meta = db.keyspace("meta", KeyspaceCreateOptions::default)?;
        Ok(Db {
            db,
            raft,
            kv,
            meta,
            dir,
        })
    }

    /// Creates an empty database atomically: fjall writes its "this is a
    /// database" marker last, so a process killed while fjall creates one
    /// leaves a folder fjall can neither recover nor recreate. We build it
    /// aside and rename it into place.
    fn create(member_dir: &Path, dir: &Path) -> Result<()> {
        std::fs::create_dir_all(member_dir).map_err(|e| Error::io(member_dir, e))?;
        let tmp = member_dir.join("db.creating");
        if tmp.exists() {
            std::fs::remove_dir_all(&tmp).map_err(|e| Error::io(&tmp, e))?;
        }
        drop(Database::builder(&tmp).open()?);
        std::fs::rename(&tmp, dir).map_err(|e| Error::io(dir, e))?;
        snapfile::sync_dir(member_dir)
    }

    /// Makes everything written so far durable (one fsync of the journal).
    pub fn sync(&self) -> Result<()> {
        self.db.persist(PersistMode::SyncData)?;
        Ok(())
    }

    /// The size of the stored data: tables on disk plus what still sits in
    /// memtables (covered by the journal). The journal itself is left out:
    /// fjall pre-allocates it, so its file size says nothing about the data.
    pub fn disk_space(&self) -> u64 {
        self.raft.disk_space()
            + self.kv.disk_space()
            + self.meta.disk_space()
            + self.db.write_buffer_size()
    }
}
