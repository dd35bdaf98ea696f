//! etcd 3.4 databases into Cairn's storage: `cairn snapshot restore` and
//! `cairn snapshot status` of an etcd snapshot (`etcdctl snapshot save`,
//! or a stopped member's `member/snap/db`), and the database half of
//! starting on an etcd data dir (`etcd_datadir`).
//!
//! What a database carries, and where it goes:
//!
//! | etcd bucket | Cairn |
//! |---|---|
//! | `key` (revision → `mvccpb.KeyValue`, tombstones) | the `kv` keyspace, revision for revision (bulk ingestion, in order) |
//! | `meta` compaction marks | `compact_scheduled` / `compact_finished` |
//! | `lease` | lease records (ID, TTL); attachments come from the keys |
//! | `auth`, `authUsers`, `authRoles` | the auth store (password hashes verbatim) |
//! | `alarm` | alarms (data dir import only: a new cluster's IDs differ) |
//! | `members`, `members_removed`, `cluster` | not used: membership comes from the flags (restore) or the v2 store and WAL (data dir) |
//!
//! Memory stays bounded: the `key` bucket streams from positional page
//! reads into fjall's sorted ingestion, which writes tables directly.

use super::mvcc::index::Rev;
use super::mvcc::{KIND_PUT, KIND_TOMBSTONE, encode_value};
use super::restore::{RestoreError, RestoreOptions, Restored, SnapshotStatus};
use super::{Db, Error, meta};
use crate::pb::mvccpb::KeyValue;
use etcd_formats::etcd::{EtcdDb, EtcdError};
use etcd_formats::snapshot::{self, TrailerCheck};
use fjall::OwnedWriteBatch;
use prost::Message as _;
use std::io::Read;
use std::path::{Path, PathBuf};

/// Bytes at the start of a Cairn snapshot file (`snapfile`).
const CAIRN_MAGIC: &[u8] = b"CAIRNSNAP\x01";
/// Where bbolt keeps its magic in meta page 0, and the magic.
const BOLT_MAGIC_OFFSET: usize = 16;
/// Records per ingestion progress log line.
const PROGRESS_EVERY_REVISIONS: u64 = 1_000_000;

/// Why an etcd database could not be imported. Each names the file.
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    #[error("{0}")]
    Etcd(#[from] EtcdError),
    #[error("{0}")]
    Storage(#[from] Error),
    #[error("{path}: {problem}")]
    Bad { path: PathBuf, problem: String },
    #[error(
        "{path}: SHA-256 mismatch: the file says {stored}, its contents hash to {computed}: the snapshot is corrupt or truncated"
    )]
    HashMismatch {
        path: PathBuf,
        stored: String,
        computed: String,
    },
    #[error(
        "{path}: snapshot missing hash but --skip-hash-check=false (a stopped member's member/snap/db has none: pass --skip-hash-check)"
    )]
    MissingHash { path: PathBuf },
}

impl ImportError {
    fn bad(path: &Path, problem: impl Into<String>) -> ImportError {
        ImportError::Bad {
            path: path.to_path_buf(),
            problem: problem.into(),
        }
    }
}

impl From<ImportError> for RestoreError {
    fn from(e: ImportError) -> RestoreError {
        RestoreError::Invalid(e.to_string())
    }
}

/// The two snapshot formats `cairn snapshot restore|status` read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SnapshotKind {
    /// Cairn's own format (older Cairn versions streamed it).
    Cairn,
    /// An etcd bbolt database, with or without the SHA-256 trailer.
    Etcd,
}

/// Tells the formats apart by their first bytes.
pub fn detect(path: &Path) -> Result<SnapshotKind, ImportError> {
    let mut head = Vec::with_capacity(32);
    std::fs::File::open(path)
        .and_then(|f| f.take(32).read_to_end(&mut head))
        .map_err(|e| Error::io(path, e))?;
    if head.starts_with(CAIRN_MAGIC) {
        return Ok(SnapshotKind::Cairn);
    }
    let magic = head
        .get(BOLT_MAGIC_OFFSET..BOLT_MAGIC_OFFSET + 4)
        .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]));
    if magic == Some(etcd_formats::bolt::MAGIC) {
        return Ok(SnapshotKind::Etcd);
    }
    Err(ImportError::bad(
        path,
        format!(
            "not a snapshot: neither an etcd database (bbolt magic {:#010x} at byte {BOLT_MAGIC_OFFSET}) nor a Cairn snapshot ({} bytes read)",
            etcd_formats::bolt::MAGIC,
            head.len()
        ),
    ))
}

/// The SHA-256 trailer rules of `etcdctl snapshot restore`: a trailer that
/// does not match is always an error; a file without one (a raw
/// `member/snap/db`) needs `--skip-hash-check`, which also skips checking
/// a trailer that is there.
pub fn check_trailer(path: &Path, skip_hash_check: bool) -> Result<(), ImportError> {
    if skip_hash_check {
        return Ok(());
    }
    match snapshot::check_trailer(path).map_err(EtcdError::from)? {
        TrailerCheck::Valid => Ok(()),
        TrailerCheck::Absent => {
            // A cut-off snapshot has no trailer either: say that instead.
            etcd_formats::bolt::BoltReader::open(path).map_err(EtcdError::from)?;
            Err(ImportError::MissingHash {
                path: path.to_path_buf(),
            })
        }
        TrailerCheck::Mismatch { stored, computed } => Err(ImportError::HashMismatch {
            path: path.to_path_buf(),
            stored: hex::encode(stored),
            computed: hex::encode(computed),
        }),
    }
}

/// What [`load_db`] put into the Cairn database.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Loaded {
    /// The store revision: the last revision's main, raised to the
    /// compaction revision (etcd's rule).
    pub revision: i64,
    /// Entries of the `key` bucket (revisions, tombstones included).
    pub revisions: u64,
    /// The compaction revision Cairn starts from (0: never compacted).
    pub compacted: i64,
    pub leases: u64,
    pub users: u64,
    pub roles: u64,
    /// The database's `meta/consistent_index` (0 if absent).
    pub consistent_index: u64,
}

/// An etcd `KeyValue` as Cairn stores it, after the checks etcd's own
/// store relies on. A tombstone keeps the key and gets its deletion's
/// revision, as Cairn reports deletions to watchers.
fn convert(path: &Path, rec: etcd_formats::etcd::KeyRecord) -> Result<(Rev, Vec<u8>), ImportError> {
    let r = rec.revision;
    let bad = |problem: String| {
        ImportError::bad(
            path,
            format!("bucket key: revision {}_{}: {problem}", r.main, r.sub),
        )
    };
    if r.main < 0 || r.sub < 0 {
        return Err(bad("negative revision".into()));
    }
    let kv = rec.kv;
    if kv.key.is_empty() {
        return Err(bad("empty key".into()));
    }
    let rev = Rev::new(r.main, r.sub);
    if rec.tombstone {
        let tomb = KeyValue {
            key: kv.key,
            mod_revision: r.main,
            ..Default::default()
        };
        return Ok((rev, encode_value(KIND_TOMBSTONE, &tomb)));
    }
    if kv.mod_revision != r.main {
        return Err(bad(format!(
            "mod_revision {} is not the revision it is stored at",
            kv.mod_revision
        )));
    }
    if kv.create_revision <= 0 || kv.create_revision > r.main || kv.version <= 0 {
        return Err(bad(format!(
            "create_revision {} / version {} out of range",
            kv.create_revision, kv.version
        )));
    }
    let put = KeyValue {
        key: kv.key,
        create_revision: kv.create_revision,
        mod_revision: kv.mod_revision,
        version: kv.version,
        value: kv.value,
        lease: kv.lease,
    };
    Ok((rev, encode_value(KIND_PUT, &put)))
}

/// Loads the etcd database `etcd` into `db`, whose state machine must be
/// empty: every revision into `kv` (committed as it goes), leases, auth
/// and compaction marks (and alarms with `keep_alarms`) into `batch` for
/// the caller to commit with the records that make the data dir whole.
pub fn load_db(
    db: &Db,
    etcd: &EtcdDb,
    batch: &mut OwnedWriteBatch,
    keep_alarms: bool,
) -> Result<Loaded, ImportError> {
    let path = etcd.bolt().path().to_path_buf();
    let mut out = Loaded::default();
    let m = etcd.meta()?;
    out.consistent_index = m.consistent_index.unwrap_or(0);

    let started = std::time::Instant::now();
    let mut ingest = db.kv.start_ingestion().map_err(Error::from)?;
    let mut last: Option<Rev> = None;
    for rec in etcd.keys()? {
        let (rev, value) = convert(&path, rec?)?;
        // bbolt's cursor already refuses keys out of order; revisions
        // must also be increasing as numbers (fjall's ingestion requires
        // it), which non-negative big-endian keys are.
        if last.is_some_and(|l| l >= rev) {
            return Err(ImportError::bad(
                &path,
                format!("bucket key: revision {}_{} out of order", rev.main, rev.sub),
            ));
        }
        ingest
            .write(rev.to_key().to_vec(), value)
            .map_err(Error::from)?;
        last = Some(rev);
        out.revisions += 1;
        if out.revisions.is_multiple_of(PROGRESS_EVERY_REVISIONS) {
            tracing::info!(
                revisions = out.revisions,
                revision = rev.main,
                took_ms = started.elapsed().as_millis() as u64,
                "importing etcd revisions"
            );
        }
    }
    ingest.finish().map_err(Error::from)?;

    // etcd: a finished compaction is the compaction; a scheduled one past
    // it is redone at startup (Cairn resumes it the same way).
    let finished = m.finished_compact_rev.unwrap_or(0).max(0);
    let scheduled = m.scheduled_compact_rev.unwrap_or(0).max(finished);
    if scheduled > 0 {
        meta::put_compact_scheduled(batch, db, scheduled);
        meta::put_compact_finished(batch, db, finished);
    }
    out.compacted = scheduled;
    out.revision = last.map_or(1, |r| r.main).max(finished).max(1);

    for lease in etcd.leases()? {
        let lease = lease?;
        if lease.id == 0 {
            return Err(ImportError::bad(&path, "bucket lease: lease ID 0"));
        }
        meta::put_lease(batch, db, lease.id, lease.ttl);
        out.leases += 1;
    }

    let auth = etcd.auth()?;
    let users = etcd.users()?;
    let roles = etcd.roles()?;
    if auth.enabled.is_some() || auth.revision.is_some() || !users.is_empty() || !roles.is_empty() {
        out.users = users.len() as u64;
        out.roles = roles.len() as u64;
        // Same wire format: etcd's authpb messages are Cairn's.
        let users = users
            .iter()
            .map(|u| crate::pb::authpb::User::decode(u.encode_to_vec().as_slice()))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| ImportError::bad(&path, format!("bucket authUsers: {e}")))?;
        let roles = roles
            .iter()
            .map(|r| crate::pb::authpb::Role::decode(r.encode_to_vec().as_slice()))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| ImportError::bad(&path, format!("bucket authRoles: {e}")))?;
        let store = crate::auth::AuthStore::from_etcd_records(
            auth.enabled.unwrap_or(false),
            auth.revision.unwrap_or(1),
            users,
            roles,
        )
        .map_err(|e| ImportError::bad(&path, format!("buckets auth*: {e}")))?;
        meta::put_auth(batch, db, store.save());
    }

    if keep_alarms {
        let alarms = etcd
            .alarms()?
            .into_iter()
            .map(|a| crate::pb::etcdserverpb::AlarmMember {
                member_id: a.member_id,
                alarm: a.alarm,
            })
            .collect();
        meta::put_alarms(batch, db, alarms);
    }
    tracing::info!(
        path = %path.display(),
        revisions = out.revisions,
        revision = out.revision,
        compacted = out.compacted,
        leases = out.leases,
        users = out.users,
        roles = out.roles,
        took_ms = started.elapsed().as_millis() as u64,
        "loaded etcd database"
    );
    Ok(out)
}

/// `cairn snapshot restore` of an etcd snapshot into `staging` (a fresh
/// directory): the database, then the new cluster's records.
pub fn fill_from_etcd(
    o: &RestoreOptions,
    staging: &Path,
    self_id: u64,
    membership: &crate::pb::cairnpb::Membership,
) -> Result<Restored, RestoreError> {
    let etcd = EtcdDb::open(&o.snapshot).map_err(ImportError::from)?;
    let db = Db::open(&staging.join("member"))?;
    let mut batch = db.db.batch();
    // Alarms name the old cluster's members: a new cluster starts clear.
    let loaded = load_db(&db, &etcd, &mut batch, false)?;
    super::restore::put_new_member(batch, &db, self_id, membership)?;
    drop(db);
    Ok(Restored {
        member_id: self_id,
        cluster_id: membership.cluster_id,
        revision: loaded.revision,
        revisions: loaded.revisions,
    })
}

/// `cairn snapshot status` of an etcd database: `etcdctl snapshot status`.
pub fn status(path: &Path) -> Result<SnapshotStatus, ImportError> {
    let st = EtcdDb::open(path)?.status()?;
    Ok(SnapshotStatus {
        hash: st.hash,
        revision: st.revision,
        total_keys: st.total_key,
        total_size: st.total_size,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::etcd_snapshot;
    use crate::storage::mvcc::Store;
    use bytes::Bytes;

    fn put(store: &std::sync::Arc<Store>, k: &str, v: &str, lease: i64) {
        let mut b = store.begin_batch();
        let mut w = b.begin_write();
        b.put(
            &mut w,
            Bytes::from(k.to_string()),
            Bytes::from(v.to_string()),
            lease,
        )
        .unwrap();
        b.end_write(w);
        b.commit().unwrap();
    }

    /// Cairn → etcd database → Cairn keeps every revision, tombstone,
    /// lease, the compaction point and the auth state; `status` agrees
    /// with what the writer computed.
    #[test]
    fn export_then_import_round_trips() {
        let dir = tempfile::tempdir().unwrap();
        let src = Db::open(&dir.path().join("src")).unwrap();
        let (store, _) = Store::open(src.clone(), 1000).unwrap();
        for i in 0..20 {
            put(&store, &format!("k{}", i % 7), &format!("v{i}"), 0);
        }
        put(&store, "leased", "x", 77);
        let mut b = store.begin_batch();
        let mut w = b.begin_write();
        b.delete_range(
            &mut w,
            &crate::storage::mvcc::index::KeyRange::Single(Bytes::from_static(b"k3")),
        )
        .unwrap();
        b.end_write(w);
        b.compact(10).unwrap();
        b.commit().unwrap();
        let mut auth = crate::auth::AuthStore::new();
        auth.role_add(&crate::pb::etcdserverpb::AuthRoleAddRequest { name: "r".into() })
            .unwrap();
        let mut batch = src.db.batch();
        meta::put_lease(&mut batch, &src, 77, 60);
        meta::put_auth(&mut batch, &src, auth.save());
        batch.commit().unwrap();
        let before = store.hash_kv(0).unwrap();

        let file = dir.path().join("snap.db");
        let size = etcd_snapshot::write_snapshot(&src, &src.db.snapshot(), &file).unwrap();
        assert_eq!(size % 512, 32, "etcdctl's trailer test");
        assert_eq!(detect(&file).unwrap(), SnapshotKind::Etcd);
        check_trailer(&file, false).unwrap();
        let st = status(&file).unwrap();
        assert_eq!(st.revision, store.current_rev());
        assert_eq!(st.total_size, size - 32);

        let dst = Db::open(&dir.path().join("dst")).unwrap();
        let mut batch = dst.db.batch();
        let etcd = EtcdDb::open(&file).unwrap();
        let loaded = load_db(&dst, &etcd, &mut batch, false).unwrap();
        batch.commit().unwrap();
        assert_eq!(loaded.revision, store.current_rev());
        assert_eq!(loaded.compacted, 10);
        assert_eq!(loaded.leases, 1);
        let (restored, attached) = Store::open(dst.clone(), 1000).unwrap();
        assert_eq!(restored.current_rev(), store.current_rev());
        assert_eq!(restored.compact_rev(), 10);
        assert_eq!(restored.hash_kv(0).unwrap(), before);
        assert_eq!(attached, vec![(Bytes::from_static(b"leased"), 77)]);
        assert_eq!(meta::leases(&dst).unwrap(), vec![(77, 60)]);
        let back = crate::auth::AuthStore::load(&meta::auth(&dst).unwrap().unwrap()).unwrap();
        assert_eq!(back, auth);

        // A damaged trailer is caught; --skip-hash-check ignores it.
        let mut bytes = std::fs::read(&file).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 1;
        std::fs::write(&file, &bytes).unwrap();
        let e = check_trailer(&file, false).unwrap_err().to_string();
        assert!(
            e.contains("SHA-256 mismatch") && e.contains("snap.db"),
            "{e}"
        );
        check_trailer(&file, true).unwrap();
        // No trailer at all (a raw member/snap/db) needs the flag.
        std::fs::write(&file, &bytes[..bytes.len() - 32]).unwrap();
        let e = check_trailer(&file, false).unwrap_err().to_string();
        assert!(e.contains("--skip-hash-check"), "{e}");
        // Neither format.
        std::fs::write(&file, b"hello, world, this is no snapshot at all").unwrap();
        let e = detect(&file).unwrap_err().to_string();
        assert!(e.contains("not a snapshot"), "{e}");
    }
}
