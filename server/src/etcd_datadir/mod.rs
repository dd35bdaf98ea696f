//! Starting `cairn` on a stopped etcd 3.4 member's data dir: the member
//! becomes the same member of the same cluster (member and cluster IDs,
//! peers, raft term, vote and log position kept), with its data — so an
//! operator can stop an etcd cluster, replace the binary on every member
//! and start it again.
//!
//! What is taken from where (as etcd boots, see `etcd_formats::datadir`):
//!
//! * the v3 state from the bbolt database (`etcd_import::load_db`), at
//!   its consistent index CI;
//! * membership, the raft configuration and the v2 key space from the
//!   newest usable `.snap` file's v2 store, then the WAL entries up to CI
//!   (`entries::Replay::apply_offline`);
//! * the WAL entries after CI — committed ones the database had not
//!   caught up with, and any not known to be committed — translated into
//!   Cairn's raft log at the same indexes and terms; Cairn's apply loop
//!   applies the committed ones at startup, raft decides the rest;
//! * member and cluster ID from the WAL metadata, term, vote and commit
//!   index from its last hard state.
//!
//! Nothing of etcd's is changed or deleted: Cairn's data is built in a
//! staging directory, then etcd's `member` directory is moved whole into
//! `<data-dir>/etcd-backup-<time>/member` (itself a data dir etcd can
//! start from again) and Cairn's moved into place. A crash at any point
//! leaves either the etcd data dir as it was, or a finished import whose
//! last renames the next start completes.
//!
//! An etcd-looking data dir that cannot be imported is refused with what
//! was found and what to do; never ignored.

mod entries;

use crate::pb::cairnpb::Membership;
use crate::storage::etcd_import::{self, ImportError, Loaded};
use crate::storage::meta::{self, AppliedState};
use crate::storage::{Db, Error, raftlog, snapfile};
use cairn_config::ServerConfig;
use entries::{Replay, ReplayOptions};
use etcd_formats::datadir::MemberData;
use etcd_formats::etcd::EtcdDb;
use raft::prelude::HardState;
use std::path::{Path, PathBuf};

/// Cairn's data while it is being built, in the data dir.
const STAGING_DIR: &str = "member.cairn-import";
/// Written into the staging dir once Cairn's data is complete and durable;
/// holds the backup directory's name.
const COMPLETE_MARKER: &str = "IMPORT_COMPLETE";
const BACKUP_PREFIX: &str = "etcd-backup-";
/// Translated raft entries written per batch.
const ENTRIES_PER_BATCH: usize = 4096;

/// Why an etcd data dir was not imported.
#[derive(Debug, thiserror::Error)]
pub enum DataDirError {
    #[error(
        "data dir {dir} holds both etcd's files ({etcd}) and Cairn's (member/db, written by an older Cairn that ignored etcd's files): to import etcd's data, move member/db away and start again; to keep Cairn's, move etcd's member/wal and member/snap/db away"
    )]
    Mixed { dir: PathBuf, etcd: String },
    #[error(
        "data dir {dir}: {file} is locked by another process: stop the etcd member using this data dir first, then start cairn"
    )]
    Locked { dir: PathBuf, file: PathBuf },
    #[error(
        "data dir {dir} looks like etcd's ({found}) but cannot be imported: {problem}. Nothing was changed. If this member's data is lost, remove it from the cluster and add it back empty, or restore a snapshot with `cairn snapshot restore`"
    )]
    Unreadable {
        dir: PathBuf,
        found: String,
        problem: String,
    },
    #[error("importing the etcd data dir {dir}: {source}")]
    Import {
        dir: PathBuf,
        #[source]
        source: ImportError,
    },
    #[error("importing the etcd data dir {dir}: {source}")]
    Storage {
        dir: PathBuf,
        #[source]
        source: Error,
    },
}

/// What an import did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Imported {
    pub member_id: u64,
    pub cluster_id: u64,
    /// Where etcd's files are now (`<backup_dir>/member`).
    pub backup_dir: PathBuf,
    pub loaded: Loaded,
    /// The raft index the imported state machine stands at.
    pub applied_index: u64,
    /// The last hard state's commit index: entries up to it are applied
    /// by Cairn at startup.
    pub commit_index: u64,
    /// WAL entries carried into Cairn's raft log (after the applied index).
    pub log_entries: usize,
    pub members: usize,
    /// v2 keys (nodes under `/1`) at the snapshot.
    pub v2_keys: usize,
}

/// etcd's files in `<data-dir>/member`, as found.
struct Found {
    wal_dir: bool,
    snap_db: bool,
}

impl Found {
    fn look(member: &Path) -> Found {
        Found {
            wal_dir: member.join("wal").is_dir(),
            snap_db: member.join("snap").join("db").is_file(),
        }
    }

    fn any(&self) -> bool {
        self.wal_dir || self.snap_db
    }

    fn describe(&self) -> String {
        match (self.wal_dir, self.snap_db) {
            (true, true) => "member/wal and member/snap/db".into(),
            (true, false) => "member/wal, no member/snap/db".into(),
            (false, true) => "member/snap/db, no member/wal".into(),
            (false, false) => "nothing".into(),
        }
    }
}

/// Called at startup, before anything opens the data dir: imports it if
/// it is a stopped etcd member's (or one written by `etcdctl snapshot
/// restore`), completes an import a crash interrupted, and otherwise
/// does nothing.
pub fn import_if_etcd(cfg: &ServerConfig) -> Result<Option<Imported>, DataDirError> {
    let dir = cfg.data_dir.as_path();
    let storage = |source| DataDirError::Storage {
        dir: dir.to_path_buf(),
        source,
    };
    finish_interrupted(dir).map_err(storage)?;
    let member = dir.join("member");
    let found = Found::look(&member);
    if !found.any() {
        return Ok(None);
    }
    if member.join("db").exists() {
        return Err(DataDirError::Mixed {
            dir: dir.to_path_buf(),
            etcd: found.describe(),
        });
    }
    // Held until the import is done: etcd cannot start on the dir meanwhile.
    let _locks = lock_etcd_files(dir, &member)?;
    tracing::warn!(
        data_dir = %dir.display(),
        "the data dir is a stopped etcd member's ({}): importing it",
        found.describe()
    );
    let started = std::time::Instant::now();
    let imported = import(cfg, &found)?;
    tracing::warn!(
        member_id = %format!("{:x}", imported.member_id),
        cluster_id = %format!("{:x}", imported.cluster_id),
        revision = imported.loaded.revision,
        applied_index = imported.applied_index,
        commit_index = imported.commit_index,
        log_entries = imported.log_entries,
        members = imported.members,
        v2_keys = imported.v2_keys,
        took_ms = started.elapsed().as_millis() as u64,
        "imported the etcd data dir; etcd's files are kept unchanged in {} (to go back to etcd: stop cairn, move {}/member away and move {}/member back)",
        imported.backup_dir.display(),
        dir.display(),
        imported.backup_dir.display(),
    );
    Ok(Some(imported))
}

/// Takes the exclusive `flock`s etcd holds on its database and WAL while
/// it runs: refused while etcd runs, and etcd cannot start meanwhile.
fn lock_etcd_files(dir: &Path, member: &Path) -> Result<Vec<std::fs::File>, DataDirError> {
    let mut candidates = vec![member.join("snap").join("db")];
    if let Ok(files) = etcd_formats::wal::list_wal_files(&member.join("wal")) {
        candidates.extend(files.into_iter().map(|f| f.path));
    }
    let mut held = Vec::new();
    for file in candidates {
        let Ok(f) = std::fs::File::open(&file) else {
            continue;
        };
        if let Err(std::fs::TryLockError::WouldBlock) = f.try_lock() {
            return Err(DataDirError::Locked {
                dir: dir.to_path_buf(),
                file,
            });
        }
        held.push(f);
    }
    Ok(held)
}

fn unreadable(dir: &Path, found: &Found, problem: impl std::fmt::Display) -> DataDirError {
    let mut problem = problem.to_string();
    if !found.wal_dir {
        problem.push_str(
            " (if etcd ran with --wal-dir, move that directory to <data-dir>/member/wal first)",
        );
    }
    DataDirError::Unreadable {
        dir: dir.to_path_buf(),
        found: found.describe(),
        problem,
    }
}

/// The etcd member as etcd would boot it, and what Cairn's data dir needs.
struct Plan {
    member_id: u64,
    cluster_id: u64,
    backend: Option<PathBuf>,
    applied: AppliedState,
    hard_state: HardState,
    replay: Replay,
    /// Cairn entries after `applied.index`.
    log: Vec<raft::prelude::Entry>,
}

fn plan(cfg: &ServerConfig, found: &Found) -> Result<Plan, DataDirError> {
    let dir = cfg.data_dir.as_path();
    let bad = |p: String| unreadable(dir, found, p);
    let md = MemberData::read(dir).map_err(|e| bad(e.to_string()))?;
    for (path, why) in &md.broken_snapshots {
        // etcd renames these `*.broken` and boots from an older one.
        tracing::warn!(path = %path.display(), "skipping an unreadable etcd snapshot file: {why}");
    }
    if let Some(t) = &md.wal.torn_tail {
        // etcd cuts it off when it opens the WAL for writing; so does raft
        // here by never seeing it.
        tracing::warn!("the etcd WAL ends in a torn record, ignored as etcd does: {t:?}");
    }
    let (Some(member_id), Some(cluster_id)) = (md.member_id(), md.cluster_id()) else {
        return Err(bad(format!(
            "the WAL in {} has no metadata record (member and cluster ID)",
            md.wal_dir.display()
        )));
    };
    let snap_index = md.snapshot_index();
    let ci = md.backend.as_ref().map_or(0, |b| b.consistent_index);
    if ci < snap_index {
        return Err(bad(format!(
            "the database's consistent index {ci} is behind the raft snapshot at {snap_index}"
        )));
    }
    let entries = &md.wal.entries;
    let last_index = entries.last().map_or(snap_index, |e| e.index);
    let wal = md.wal_dir.display();
    if ci > last_index {
        return Err(bad(format!(
            "the database's consistent index {ci} is past the last entry {last_index} of the WAL in {wal}: the WAL is missing entries"
        )));
    }
    let hs = md.wal.hard_state;
    if hs.commit > last_index {
        return Err(bad(format!(
            "the commit index {} of the WAL in {wal} is past its last entry {last_index}: the WAL is damaged",
            hs.commit
        )));
    }
    let ci_term = if ci == snap_index {
        md.snapshot.as_ref().map_or(0, |s| s.term())
    } else {
        entries
            .iter()
            .find(|e| e.index == ci)
            .map(|e| e.term)
            .ok_or_else(|| {
                bad(format!(
                    "no entry at the consistent index {ci} in the WAL in {wal}"
                ))
            })?
    };
    let opts = ReplayOptions {
        min_lease_ttl_secs: ((3 * cfg.election_ticks() as u64 / 2) * cfg.heartbeat_interval_ms)
            .div_ceil(1000) as i64,
        bcrypt_cost: cfg.bcrypt_cost,
        cluster_id,
    };
    let mut replay = Replay::new(md.snapshot.as_ref(), opts).map_err(bad)?;
    let mut log = Vec::new();
    for e in entries {
        if e.index <= ci {
            replay.apply_offline(e).map_err(|e| bad(e.to_string()))?;
        }
    }
    // Membership as of CI, before the translated tail changes the model.
    let at_ci = (replay.members.clone(), replay.conf_state());
    for e in entries.iter().filter(|e| e.index > ci) {
        log.push(replay.translate(e).map_err(|e| bad(e.to_string()))?);
    }
    let (members, conf) = at_ci;
    replay.members = members;
    replay.voters = conf.voters.into_iter().collect();
    replay.learners = conf.learners.into_iter().collect();
    if !replay.members.contains_key(&member_id) {
        return Err(bad(format!(
            "member {member_id:x} (the WAL's) is not in its cluster's member list at index {ci}: it was removed"
        )));
    }
    let hard_state = HardState {
        term: hs.term,
        vote: hs.vote,
        commit: hs.commit.max(ci),
        ..Default::default()
    };
    Ok(Plan {
        member_id,
        cluster_id,
        backend: md.backend.as_ref().map(|b| b.path.clone()),
        applied: AppliedState {
            index: ci,
            term: ci_term,
        },
        hard_state,
        replay,
        log,
    })
}

fn import(cfg: &ServerConfig, found: &Found) -> Result<Imported, DataDirError> {
    let dir = cfg.data_dir.as_path();
    let plan = plan(cfg, found)?;
    let staging = dir.join(STAGING_DIR);
    let storage = |source| DataDirError::Storage {
        dir: dir.to_path_buf(),
        source,
    };
    if staging.exists() {
        std::fs::remove_dir_all(&staging)
            .map_err(|e| Error::io(&staging, e))
            .map_err(storage)?;
    }
    let built = build(&plan, &staging);
    let loaded = match built {
        Ok(l) => l,
        Err(e) => {
            let _ = std::fs::remove_dir_all(&staging);
            return Err(e);
        }
    };
    let backup = dir.join(format!("{BACKUP_PREFIX}{}", utc_stamp()));
    if backup.exists() {
        let _ = std::fs::remove_dir_all(&staging);
        return Err(storage(Error::io(
            &backup,
            std::io::Error::new(std::io::ErrorKind::AlreadyExists, "backup dir exists"),
        )));
    }
    let marker = staging.join(COMPLETE_MARKER);
    write_synced(
        &marker,
        backup.file_name().unwrap_or_default().as_encoded_bytes(),
    )
    .map_err(storage)?;
    snapfile::sync_dir(&staging).map_err(storage)?;
    finish_interrupted(dir).map_err(storage)?;
    Ok(Imported {
        member_id: plan.member_id,
        cluster_id: plan.cluster_id,
        backup_dir: backup,
        loaded,
        applied_index: plan.applied.index,
        commit_index: plan.hard_state.commit,
        log_entries: plan.log.len(),
        members: plan.replay.members.len(),
        v2_keys: plan.replay.v2_keys,
    })
}

/// Cairn's data dir for `plan`, in `staging/member`, durable.
fn build(plan: &Plan, staging: &Path) -> Result<Loaded, DataDirError> {
    let dir = staging.parent().unwrap_or(staging).to_path_buf();
    let storage = |source| DataDirError::Storage {
        dir: dir.clone(),
        source,
    };
    let db = Db::open(&staging.join("member")).map_err(storage)?;
    let mut batch = db.db.batch();
    let loaded = match &plan.backend {
        Some(path) => {
            let etcd = EtcdDb::open(path).map_err(|e| DataDirError::Import {
                dir: dir.clone(),
                source: e.into(),
            })?;
            etcd_import::load_db(&db, &etcd, &mut batch, true).map_err(|source| {
                DataDirError::Import {
                    dir: dir.clone(),
                    source,
                }
            })?
        }
        None => Loaded::default(),
    };
    let membership = Membership {
        cluster_id: plan.cluster_id,
        members: plan.replay.members.values().cloned().collect(),
    };
    meta::put_membership(&mut batch, &db, &membership);
    meta::put_conf_state(&mut batch, &db, &plan.replay.conf_state()).map_err(storage)?;
    meta::put_applied(&mut batch, &db, plan.applied);
    for (path, record) in plan.replay.v2.records() {
        meta::put_v2_node(&mut batch, &db, &path, Some(&record));
    }
    if plan.replay.v2.index() > 0 {
        let v2 = &plan.replay.v2;
        let index = meta::V2Index {
            index: v2.index(),
            visible: v2.visible_index(),
        };
        meta::put_v2_index(&mut batch, &db, index);
    }
    raftlog::put_initial_position(&mut batch, &db, plan.applied.index, plan.applied.term)
        .map_err(storage)?;
    raftlog::put_identity(&mut batch, &db, plan.member_id, plan.cluster_id);
    let mut chunks = plan.log.chunks(ENTRIES_PER_BATCH).peekable();
    if chunks.peek().is_none() {
        raftlog::put_imported(&mut batch, &db, &[], &plan.hard_state).map_err(storage)?;
    }
    for chunk in chunks {
        raftlog::put_imported(&mut batch, &db, chunk, &plan.hard_state).map_err(storage)?;
        let full = std::mem::replace(&mut batch, db.db.batch());
        full.durability(Some(fjall::PersistMode::Buffer))
            .commit()
            .map_err(|e| storage(e.into()))?;
    }
    batch
        .durability(Some(fjall::PersistMode::SyncData))
        .commit()
        .map_err(|e| storage(e.into()))?;
    db.db
        .persist(fjall::PersistMode::SyncAll)
        .map_err(|e| storage(e.into()))?;
    drop(db);
    Ok(loaded)
}

/// Completes an import whose data is complete (the marker is there):
/// moves etcd's `member` into the backup dir and Cairn's into place. An
/// incomplete staging dir is removed: the next start imports again.
fn finish_interrupted(dir: &Path) -> Result<(), Error> {
    let staging = dir.join(STAGING_DIR);
    if !staging.exists() {
        return Ok(());
    }
    let marker = staging.join(COMPLETE_MARKER);
    let backup_name = match std::fs::read(&marker) {
        Ok(b) => String::from_utf8(b).map_err(|_| Error::corrupt("import marker", "not UTF-8"))?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            tracing::warn!(path = %staging.display(), "removing an unfinished import");
            std::fs::remove_dir_all(&staging).map_err(|e| Error::io(&staging, e))?;
            return Ok(());
        }
        Err(e) => return Err(Error::io(&marker, e)),
    };
    if backup_name.is_empty() || backup_name.contains('/') {
        return Err(Error::corrupt("import marker", backup_name));
    }
    let member = dir.join("member");
    let backup = dir.join(&backup_name);
    let cairn = staging.join("member");
    if cairn.exists() {
        if member.exists() {
            std::fs::create_dir_all(&backup).map_err(|e| Error::io(&backup, e))?;
            let to = backup.join("member");
            std::fs::rename(&member, &to).map_err(|e| Error::io(&to, e))?;
            snapfile::sync_dir(&backup)?;
            snapfile::sync_dir(dir)?;
        }
        std::fs::rename(&cairn, &member).map_err(|e| Error::io(&member, e))?;
        snapfile::sync_dir(dir)?;
    }
    std::fs::remove_dir_all(&staging).map_err(|e| Error::io(&staging, e))?;
    Ok(())
}

fn write_synced(path: &Path, bytes: &[u8]) -> Result<(), Error> {
    use std::io::Write;
    let mut f = std::fs::File::create(path).map_err(|e| Error::io(path, e))?;
    f.write_all(bytes)
        .and_then(|_| f.sync_all())
        .map_err(|e| Error::io(path, e))
}

/// `YYYYMMDDTHHMMSSZ` now, for the backup dir's name.
fn utc_stamp() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    // Civil from days, after Howard Hinnant.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}{month:02}{day:02}T{:02}{:02}{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(p: &Path, text: &str) {
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, text).unwrap();
    }

    /// A crash after Cairn's data was complete, at each step of the
    /// renames: the next start finishes the job; a crash before it was
    /// complete: the next start throws the half-built data away.
    #[test]
    fn interrupted_imports_finish_or_start_over() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        let staging = dir.join(STAGING_DIR);
        let backup = "etcd-backup-20260101T000000Z";
        let layout = |etcd_in_place: bool, cairn_staged: bool, marker: bool| {
            let _ = std::fs::remove_dir_all(dir.join("member"));
            let _ = std::fs::remove_dir_all(dir.join(backup));
            let _ = std::fs::remove_dir_all(&staging);
            let etcd = if etcd_in_place {
                dir.join("member")
            } else {
                dir.join(backup).join("member")
            };
            file(
                &etcd.join("wal/0000000000000000-0000000000000000.wal"),
                "etcd",
            );
            if cairn_staged {
                file(&staging.join("member/db/version"), "cairn");
            } else {
                file(&dir.join("member/db/version"), "cairn");
            }
            if marker {
                file(&staging.join(COMPLETE_MARKER), backup);
            }
        };
        let read = |p: PathBuf| std::fs::read_to_string(p).unwrap();
        for (etcd_in_place, cairn_staged) in [(true, true), (false, true), (false, false)] {
            layout(etcd_in_place, cairn_staged, true);
            finish_interrupted(dir).unwrap();
            assert_eq!(read(dir.join("member/db/version")), "cairn");
            assert_eq!(
                read(
                    dir.join(backup)
                        .join("member/wal/0000000000000000-0000000000000000.wal")
                ),
                "etcd"
            );
            assert!(!staging.exists());
        }
        // Not complete: etcd's dir stays, the staging dir goes.
        layout(true, true, false);
        finish_interrupted(dir).unwrap();
        assert!(!staging.exists());
        assert!(dir.join("member/wal").is_dir());
        assert!(!dir.join("member/db").exists());
        assert!(!dir.join(backup).exists());
        // A marker naming something else than a folder here is refused.
        layout(true, true, false);
        file(&staging.join(COMPLETE_MARKER), "../elsewhere");
        assert!(finish_interrupted(dir).is_err());
    }

    #[test]
    fn backup_names_sort_by_time() {
        let s = utc_stamp();
        assert_eq!(s.len(), 16, "{s}");
        assert!(s.starts_with("20") && s.ends_with('Z') && s.as_bytes()[8] == b'T');
    }
}
