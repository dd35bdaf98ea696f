//! Storage: one fjall `Database` holding both the raft log and the state
//! machine (MVCC data and metadata).
//!
//! Keeping everything in one database means one journal: the fsync that makes
//! a batch of new raft entries durable also makes every earlier state-machine
//! write durable, and the applied index is always written in the same atomic
//! batch as the data it covers. See `docs/architecture.md` for the invariants.
//!
//! With `--wal-dir` (etcd's dedicated WAL directory, usually a faster disk)
//! the raft log is a second database there (`<wal-dir>/raft`, keyspace
//! `raft`), with its own journal: the per-Ready fsync then touches only the
//! WAL disk. The state machine's writes are no longer made durable by that
//! fsync, so whatever removes raft entries (log compaction, a snapshot
//! install) first syncs the state machine (`Db::sync_state_for_log`): an
//! entry leaves the log only once its effects are durable (invariant 3).
//! `wal.rs` records which layout a member was created with and refuses a
//! restart with the other one.

pub mod alarm;
pub mod checksum;
pub mod etcd_import;
pub mod etcd_snapshot;
pub mod journal_check;
pub mod meta;
pub mod mvcc;
pub mod raftlog;
pub mod restore;
pub mod snapfile;
pub mod wal;

use fjall::{AbstractTree, Database, Keyspace, KeyspaceCreateOptions, PersistMode};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

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
    /// `--wal-dir` does not match the layout the member was created with.
    #[error("{0}")]
    Layout(String),
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
    /// The state machine's database (and the raft log's, without `--wal-dir`).
    pub db: Database,
    /// The database holding `raft`: `db` itself, or the one in `--wal-dir`.
    /// Batches that write `raft` must come from here.
    pub raft_db: Database,
    /// The `--wal-dir` raft log database's folder, when there is one.
    pub wal_dir: Option<PathBuf>,
    /// Raft log entries and raft's own persistent state (hard state, truncation point).
    pub raft: Keyspace,
    /// MVCC revisions: `revision → KeyValue`.
    pub kv: Keyspace,
    /// State-machine metadata: applied index, membership, conf state, compaction.
    pub meta: Keyspace,
    pub dir: PathBuf,
    /// The replicated alarm table, loaded from `meta` (see `alarm`).
    pub alarms: Arc<alarm::AlarmTable>,
}

/// The memtable size of the keyspaces every write goes through (`raft`,
/// `kv`). fjall's default is 64 MiB per keyspace, and a memtable stays in
/// memory until it is full and flushed: with a million keys and as many
/// overwrites, 16 MiB took a member's RSS from 455 to 334 MB (etcd 3.4:
/// 810 MB), and overwrite throughput did not drop (docs/benchmarks.md,
/// "A million keys"). fjall recommends 8–64 MiB. It stores the size with
/// the keyspace when it creates it: data dirs made before this keep
/// theirs.
const WRITE_HEAVY_MEMTABLE_BYTES: u64 = 16 * 1024 * 1024;

fn write_heavy_keyspace() -> KeyspaceCreateOptions {
    KeyspaceCreateOptions::default().max_memtable_size(WRITE_HEAVY_MEMTABLE_BYTES)
}

/// How long a defragmentation waits for a keyspace's memtable to flush.
const DEFRAG_FLUSH_TIMEOUT: Duration = Duration::from_secs(60);

/// What a defragmentation did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DefragReport {
    pub before: u64,
    pub after: u64,
    pub took: Duration,
}

/// Opens fjall's database in `dir`, replaying its journal. A damaged
/// journal can trip an assertion inside fjall's recovery (in builds with
/// debug assertions) instead of returning an error: that is caught here and
/// reported as the corruption it is, without a panic message, rather than
/// crashing the process at start.
fn open_recovering(dir: &Path, cache_bytes: u64) -> Result<Database> {
    // Before fjall replays the journal: what its recovery lets through.
    journal_check::check(dir)?;
    use std::sync::{Arc, Mutex};
    let me = std::thread::current().id();
    let message: Arc<Mutex<Option<String>>> = Arc::default();
    let previous: Arc<dyn Fn(&std::panic::PanicHookInfo<'_>) + Send + Sync> =
        Arc::from(std::panic::take_hook());
    {
        let message = Arc::clone(&message);
        let previous = Arc::clone(&previous);
        std::panic::set_hook(Box::new(move |info| {
            if std::thread::current().id() == me {
                if let Ok(mut m) = message.lock() {
                    *m = Some(info.to_string());
                }
            } else {
                previous(info);
            }
        }));
    }
    let opened = std::panic::catch_unwind(|| {
        Database::builder(dir)
            // The raft loop decides when to fsync (once per Ready); every
            // other write only needs to reach the OS, because the raft log
            // can replay it after a crash.
            .manual_journal_persist(true)
            .cache_size(cache_bytes)
            .open()
    });
    let _ = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| previous(info)));
    match opened {
        Ok(Ok(db)) => Ok(db),
        // A batch inside the journal (not a torn tail, which fjall cuts)
        // fails its checks: said as such, with the way out, rather than as
        // fjall's enum.
        Ok(Err(fjall::Error::JournalRecovery(why))) => Err(Error::corrupt(
            "journal",
            format!(
                "{}: a batch fails fjall's recovery checks ({why:?}): the journal is damaged. \
                 This member's data cannot be trusted; remove it from the cluster and add it \
                 back with an empty data dir",
                dir.display()
            ),
        )),
        Ok(Err(e)) => Err(e.into()),
        Err(_) => {
            let detail = message
                .lock()
                .ok()
                .and_then(|m| m.clone())
                .unwrap_or_else(|| "recovery failed".into());
            Err(Error::corrupt(
                "journal",
                format!("{} cannot be recovered ({detail})", dir.display()),
            ))
        }
    }
}

impl Db {
    /// Opens (or creates) the database under `member_dir`, raft log
    /// included.
    pub fn open(member_dir: &Path) -> Result<Db> {
        Self::open_with_wal(member_dir, None)
    }

    /// Opens (or creates) the member's storage: the state machine under
    /// `member_dir`, the raft log there too or, with `wal_dir`
    /// (`--wal-dir`), in its own database in that folder. The caller checks
    /// first that the layout is the member's (`wal::check_layout`).
    pub fn open_with_wal(member_dir: &Path, wal_dir: Option<&Path>) -> Result<Db> {
        let dir = member_dir.join("db");
        // The raft log's database first: a member database never exists
        // without the log database it was created with.
        let wal = match wal_dir {
            Some(w) => {
                let wal_db_dir = w.join(wal::WAL_DB_DIR);
                if !wal_db_dir.exists() {
                    Self::create(w, &wal_db_dir)?;
                }
                Some((
                    wal_db_dir.clone(),
                    open_recovering(&wal_db_dir, 16 * 1024 * 1024)?,
                ))
            }
            None => None,
        };
        if !dir.exists() {
            Self::create(member_dir, &dir)?;
        }
        let db = open_recovering(&dir, 64 * 1024 * 1024)?;
        let (raft_db, wal_dir) = match wal {
            Some((wal_db_dir, wal_db)) => (wal_db, Some(wal_db_dir)),
            None => (db.clone(), None),
        };
        let raft = raft_db.keyspace("raft", write_heavy_keyspace)?;
        let kv = db.keyspace("kv", write_heavy_keyspace)?;
        let meta = db.keyspace("meta", KeyspaceCreateOptions::default)?;
        let db = Db {
            db,
            raft_db,
            wal_dir,
            raft,
            kv,
            meta,
            dir,
            alarms: Arc::default(),
        };
        db.alarms.reload(&db)?;
        Ok(db)
    }

    /// A batch for the `raft` keyspace (on the raft log's database).
    pub fn raft_batch(&self) -> fjall::OwnedWriteBatch {
        self.raft_db.batch()
    }

    /// Whether the raft log has a database (and journal) of its own.
    pub fn has_separate_wal(&self) -> bool {
        self.wal_dir.is_some()
    }

    /// Before raft entries are removed: with a separate raft log, the
    /// state-machine writes they produced must be durable first (with one
    /// database the shared journal already orders the removal after them).
    pub fn sync_state_for_log(&self) -> Result<()> {
        if self.has_separate_wal() {
            self.db.persist(PersistMode::SyncData)?;
        }
        Ok(())
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

    /// Makes everything written so far durable (one fsync of the journal;
    /// two with a separate raft log, the state machine's first).
    pub fn sync(&self) -> Result<()> {
        self.db.persist(PersistMode::SyncData)?;
        if self.has_separate_wal() {
            self.raft_db.persist(PersistMode::SyncData)?;
        }
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

    /// The size of the state machine alone (`kv` and `meta`: tables plus
    /// their memtables), without the raft log. This is what
    /// `--quota-backend-bytes` limits: etcd's quota covers its bbolt
    /// database, not its WAL, and only this part shrinks when a user
    /// compacts and defragments (the log shrinks by itself as it is
    /// compacted every `--snapshot-count` entries).
    pub fn state_machine_space(&self) -> u64 {
        [&self.kv, &self.meta]
            .iter()
            .map(|ks| ks.disk_space() + ks.tree.active_memtable().size())
            .sum()
    }

    /// etcd's defragmentation, LSM style: flushes each keyspace's memtable
    /// and rewrites its tables in one major compaction, which drops
    /// everything deleted or overwritten (deleted revisions, truncated raft
    /// log entries) unless an open read view still needs it. Writes go on
    /// meanwhile: they land in fresh memtables and are flushed as usual;
    /// only background compactions of the keyspace being rewritten wait.
    /// Keyspaces are done one at a time, the state machine first.
    pub fn defragment(&self) -> Result<DefragReport> {
        let started = Instant::now();
        let before = self.disk_space();
        for ks in [&self.kv, &self.meta, &self.raft] {
            // Flush first, so what the memtable deleted reaches the tables
            // the compaction rewrites. Bounded: a flush that cannot finish
            // (a failing disk) fails the defragmentation instead of hanging it.
            ks.rotate_memtable()?;
            let deadline = Instant::now() + DEFRAG_FLUSH_TIMEOUT;
            while ks.sealed_memtable_count() > 0 {
                if Instant::now() >= deadline {
                    return Err(Error::io(
                        &self.dir,
                        std::io::Error::new(
                            std::io::ErrorKind::TimedOut,
                            "memtable flush before defragmentation did not finish",
                        ),
                    ));
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            ks.major_compact()?;
        }
        Ok(DefragReport {
            before,
            after: self.disk_space(),
            took: started.elapsed(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pb::etcdserverpb::alarm_request::AlarmAction;
    use crate::pb::etcdserverpb::{AlarmRequest, AlarmType};
    use rand::RngCore;

    #[test]
    fn defragment_reclaims_deleted_data() {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open(dir.path()).unwrap();
        let mut value = vec![0u8; 16 * 1024];
        for i in 0..200u32 {
            rand::thread_rng().fill_bytes(&mut value);
            db.kv.insert(i.to_be_bytes(), value.clone()).unwrap();
        }
        // Flushed, so the data is in tables before it is deleted.
        db.defragment().unwrap();
        let full = db.state_machine_space();
        assert!(full > 3_000_000, "{full}");
        for i in 0..200u32 {
            db.kv.remove(i.to_be_bytes()).unwrap();
        }
        let report = db.defragment().unwrap();
        assert!(
            report.after < report.before / 4,
            "{} -> {}",
            report.before,
            report.after
        );
        assert!(db.state_machine_space() < full / 10);
        assert_eq!(db.kv.iter().count(), 0);
    }

    #[test]
    fn alarms_survive_reopening() {
        let dir = tempfile::tempdir().unwrap();
        {
            let db = Db::open(dir.path()).unwrap();
            let change = db.alarms.apply(&AlarmRequest {
                action: AlarmAction::Activate as i32,
                member_id: 42,
                alarm: AlarmType::Nospace as i32,
            });
            assert!(change.changed);
            let mut b = db.db.batch();
            meta::put_alarms(&mut b, &db, db.alarms.snapshot());
            b.commit().unwrap();
            db.sync().unwrap();
        }
        let db = Db::open(dir.path()).unwrap();
        assert!(db.alarms.has(42, AlarmType::Nospace));
        assert!(db.alarms.is_raised(AlarmType::Nospace));
    }
}
