//! Offline snapshot tools behind `cairn snapshot restore` and `cairn
//! snapshot status` (etcdctl's `snapshot restore|status`, for Cairn's
//! snapshot files).
//!
//! Restore builds the data dir of one member of a *new* cluster: the
//! snapshot's keys, revisions, compaction point and leases, with the
//! membership given on the command line (member and cluster IDs derived as
//! at bootstrap, so every member restored with the same flags agrees on
//! them). What tied the data to its old cluster — membership, conf state,
//! applied index, alarms naming old member IDs — is replaced or dropped.
//! Each member starts from the same position, as a freshly bootstrapped
//! member does, so the restored members form a cluster when started with
//! the same `--initial-cluster` flags.

use super::checksum::Crc32c;
use super::etcd_import::{self, SnapshotKind};
use super::mvcc::index::Rev;
use super::snapfile::{self, TAG_KV, TAG_META};
use super::{Db, Error, meta, raftlog};
use crate::ids;
use crate::pb::cairnpb::{MemberRecord, Membership};
use raft::prelude::ConfState;
use std::path::{Path, PathBuf};

/// Where the restored raft log begins. Any index works as long as every
/// restored member uses the same one; like a bootstrapped cluster's, it is
/// above 0 so a member added later is brought up by a snapshot that
/// carries the membership.
const RESTORED_INDEX: u64 = 5;
/// Records loaded per write batch.
const LOAD_BATCH_BYTES: usize = 8 * 1024 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum RestoreError {
    #[error("data-dir {0:?} exists")]
    Exists(PathBuf),
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    Storage(#[from] Error),
}

/// What `cairn snapshot restore` was asked for.
#[derive(Debug, Clone)]
pub struct RestoreOptions {
    pub snapshot: PathBuf,
    pub data_dir: PathBuf,
    pub name: String,
    /// (name, peer URLs exactly as etcd formats them) for every member.
    pub members: Vec<(String, Vec<String>)>,
    pub token: String,
    /// Skip the portable form's outer digest (etcdctl's `--skip-hash-check`);
    /// the body's own checksum is always verified.
    pub skip_hash_check: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Restored {
    pub member_id: u64,
    pub cluster_id: u64,
    /// The store revision the restored member starts at.
    pub revision: i64,
    /// MVCC records (revisions) restored.
    pub revisions: u64,
}

/// The membership a restore creates, computed like a bootstrap's.
fn membership(o: &RestoreOptions) -> Result<(u64, Membership), RestoreError> {
    let mut members = Vec::new();
    for (name, peer_urls) in &o.members {
        members.push(MemberRecord {
            id: ids::member_id(peer_urls, &o.token),
            name: name.clone(),
            peer_urls: peer_urls.clone(),
            client_urls: Vec::new(),
            is_learner: false,
        });
    }
    let mut ids_list: Vec<u64> = members.iter().map(|m| m.id).collect();
    ids_list.sort_unstable();
    ids_list.dedup();
    if ids_list.len() != members.len() {
        return Err(RestoreError::Invalid(
            "--initial-cluster lists the same peer URLs under two names".into(),
        ));
    }
    let self_id = members
        .iter()
        .find(|m| m.name == o.name)
        .map(|m| m.id)
        .ok_or_else(|| {
            RestoreError::Invalid(format!(
                "--initial-cluster has no member named {:?} (--name)",
                o.name
            ))
        })?;
    let cluster_id = ids::cluster_id(&ids_list);
    Ok((
        self_id,
        Membership {
            cluster_id,
            members,
        },
    ))
}

/// Restores `o.snapshot` into a new data dir `o.data_dir` (which must not
/// exist). The data dir is built beside it and renamed into place when
/// complete, so an interrupted restore never leaves a data dir a member
/// would start from.
pub fn restore(o: &RestoreOptions) -> Result<Restored, RestoreError> {
    let (self_id, membership) = membership(o)?;
    if o.data_dir.exists() {
        return Err(RestoreError::Exists(o.data_dir.clone()));
    }
    // Check the whole file (an etcd one: its SHA-256) before writing anything.
    let kind = etcd_import::detect(&o.snapshot)?;
    match kind {
        SnapshotKind::Cairn => {
            snapfile::read_records(&o.snapshot, o.skip_hash_check, |_, _, _| Ok(()))?;
        }
        SnapshotKind::Etcd => etcd_import::check_trailer(&o.snapshot, o.skip_hash_check)?,
    }

    let Some(file_name) = o.data_dir.file_name() else {
        return Err(RestoreError::Invalid(format!(
            "--data-dir {:?} names no directory",
            o.data_dir
        )));
    };
    let mut staging_name = file_name.to_os_string();
    staging_name.push(".restoring");
    let staging = o.data_dir.with_file_name(staging_name);
    if staging.exists() {
        std::fs::remove_dir_all(&staging).map_err(|e| Error::io(&staging, e))?;
    }
    let restored = match kind {
        SnapshotKind::Cairn => fill(o, &staging, self_id, &membership),
        SnapshotKind::Etcd => etcd_import::fill_from_etcd(o, &staging, self_id, &membership),
    };
    let restored = match restored {
        Ok(r) => r,
        Err(e) => {
            let _ = std::fs::remove_dir_all(&staging);
            return Err(e);
        }
    };
    std::fs::rename(&staging, &o.data_dir).map_err(|e| Error::io(&o.data_dir, e))?;
    if let Some(parent) = o.data_dir.parent().filter(|p| !p.as_os_str().is_empty()) {
        snapfile::sync_dir(parent)?;
    }
    Ok(restored)
}

fn fill(
    o: &RestoreOptions,
    staging: &Path,
    self_id: u64,
    membership: &Membership,
) -> Result<Restored, RestoreError> {
    let db = Db::open(&staging.join("member"))?;
    let mut batch = db.db.batch();
    let mut batch_bytes = 0usize;
    let mut revisions = 0u64;
    let mut revision = 1i64;
    snapfile::read_records(&o.snapshot, o.skip_hash_check, |tag, k, v| {
        match tag {
            TAG_KV => {
                let rev = Rev::from_key(&k)
                    .ok_or_else(|| Error::corrupt("snapshot revision key", hex::encode(&k)))?;
                revision = revision.max(rev.main);
                revisions += 1;
            }
            TAG_META if meta::is_cluster_record(&k) => return Ok(()),
            _ => {}
        }
        batch_bytes += k.len() + v.len();
        let ks = if tag == TAG_KV { &db.kv } else { &db.meta };
        batch.insert(ks, k, v);
        if batch_bytes >= LOAD_BATCH_BYTES {
            let full = std::mem::replace(&mut batch, db.db.batch());
            full.durability(Some(fjall::PersistMode::Buffer)).commit()?;
            batch_bytes = 0;
        }
        Ok(())
    })?;
    put_new_member(batch, &db, self_id, membership)?;
    // Dropping the handles stops fjall's threads before the rename.
    drop(db);
    Ok(Restored {
        member_id: self_id,
        cluster_id: membership.cluster_id,
        revision,
        revisions,
    })
}

/// Adds the new cluster's records to `batch` (as a bootstrap writes them),
/// commits it and makes everything in `db` durable.
pub(super) fn put_new_member(
    mut batch: fjall::OwnedWriteBatch,
    db: &Db,
    self_id: u64,
    membership: &Membership,
) -> Result<(), RestoreError> {
    let voters: Vec<u64> = membership.members.iter().map(|m| m.id).collect();
    meta::put_membership(&mut batch, db, membership);
    meta::put_conf_state(
        &mut batch,
        db,
        &ConfState {
            voters,
            ..Default::default()
        },
    )?;
    meta::put_applied(
        &mut batch,
        db,
        meta::AppliedState {
            index: RESTORED_INDEX,
            term: RESTORED_INDEX,
        },
    );
    raftlog::put_initial_position(&mut batch, db, RESTORED_INDEX, RESTORED_INDEX)?;
    raftlog::put_identity(&mut batch, db, self_id, membership.cluster_id);
    batch
        .durability(Some(fjall::PersistMode::SyncData))
        .commit()
        .map_err(Error::from)?;
    db.db
        .persist(fjall::PersistMode::SyncAll)
        .map_err(Error::from)?;
    Ok(())
}

/// What `cairn snapshot status` reports (etcdctl's columns).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SnapshotStatus {
    /// CRC-32C of every record (keyspace tag, key, value) in file order.
    pub hash: u32,
    /// The highest revision in the snapshot.
    pub revision: i64,
    /// Records of every kind (etcd counts every key of every bucket).
    pub total_keys: u64,
    /// The file size without the portable form's 32-byte digest (etcd
    /// reports the database size without it).
    pub total_size: u64,
}

/// Reads and checks a snapshot file (Cairn's or etcd's) and summarizes it.
pub fn status(path: &Path) -> Result<SnapshotStatus, RestoreError> {
    if etcd_import::detect(path)? == SnapshotKind::Etcd {
        return Ok(etcd_import::status(path)?);
    }
    let mut h = Crc32c::default();
    let mut revision = 1i64;
    let mut total_keys = 0u64;
    let header = snapfile::read_records(path, false, |tag, k, v| {
        if tag == TAG_KV
            && let Some(rev) = Rev::from_key(&k)
        {
            revision = revision.max(rev.main);
        }
        total_keys += 1;
        h.update(&[tag]);
        h.field(&k);
        h.field(&v);
        Ok(())
    })?;
    let size = std::fs::metadata(path)
        .map_err(|e| Error::io(path, e))?
        .len();
    Ok(SnapshotStatus {
        hash: h.finish(),
        revision,
        total_keys,
        total_size: if header.portable {
            size.saturating_sub(32)
        } else {
            size
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::mvcc::Store;
    use bytes::Bytes;

    fn options(snapshot: &Path, data_dir: &Path, name: &str) -> RestoreOptions {
        RestoreOptions {
            snapshot: snapshot.to_path_buf(),
            data_dir: data_dir.to_path_buf(),
            name: name.into(),
            members: vec![
                ("a".into(), vec!["http://127.0.0.1:2380".into()]),
                ("b".into(), vec!["http://127.0.0.2:2380".into()]),
            ],
            token: "t".into(),
            skip_hash_check: false,
        }
    }

    #[test]
    fn restore_keeps_data_and_replaces_membership() {
        let dir = tempfile::tempdir().unwrap();
        let src = Db::open(&dir.path().join("src")).unwrap();
        let (store, _) = Store::open(src.clone(), 1000).unwrap();
        for i in 0..3 {
            let mut b = store.begin_batch();
            let mut w = b.begin_write();
            b.put(
                &mut w,
                Bytes::from(format!("k{i}")),
                Bytes::from_static(b"v"),
                0,
            )
            .unwrap();
            b.end_write(w);
            b.commit().unwrap();
        }
        let mut b = src.db.batch();
        meta::put_membership(&mut b, &src, &Membership::default());
        meta::put_alarms(
            &mut b,
            &src,
            vec![crate::pb::etcdserverpb::AlarmMember {
                member_id: 1,
                alarm: 1,
            }],
        );
        meta::put_lease(&mut b, &src, 77, 60);
        b.commit().unwrap();
        let file = dir.path().join("snap.db");
        snapfile::write_portable(&src, &src.db.snapshot(), &file).unwrap();

        let st = status(&file).unwrap();
        assert_eq!(st.revision, 4);
        assert_eq!(st.total_size % 512, 0);
        assert!(st.total_keys >= 3);

        let out = dir.path().join("restored-a");
        let r = restore(&options(&file, &out, "a")).unwrap();
        assert_eq!(r.revision, 4);
        assert_eq!(r.revisions, 3);
        let other = restore(&options(&file, &dir.path().join("restored-b"), "b")).unwrap();
        assert_eq!(other.cluster_id, r.cluster_id);
        assert_ne!(other.member_id, r.member_id);
        assert!(!dir.path().join("restored-a.restoring").exists());

        let db = Db::open(&out.join("member")).unwrap();
        assert_eq!(
            raftlog::identity(&db).unwrap(),
            Some((r.member_id, r.cluster_id))
        );
        let m = meta::membership(&db).unwrap().unwrap();
        assert_eq!(m.members.len(), 2);
        assert_eq!(meta::conf_state(&db).unwrap().voters.len(), 2);
        assert!(db.alarms.is_empty(), "old alarms are dropped");
        assert_eq!(meta::leases(&db).unwrap(), vec![(77, 60)]);
        let (restored, _) = Store::open(db, 1000).unwrap();
        assert_eq!(restored.current_rev(), 4);
        assert_eq!(restored.hash_kv(0).unwrap(), store.hash_kv(0).unwrap());

        // Never over an existing data dir; never for a name not listed.
        assert!(matches!(
            restore(&options(&file, &out, "a")),
            Err(RestoreError::Exists(_))
        ));
        assert!(matches!(
            restore(&options(&file, &dir.path().join("x"), "zz")),
            Err(RestoreError::Invalid(_))
        ));
        // A damaged file leaves nothing behind.
        let mut bytes = std::fs::read(&file).unwrap();
        let mid = bytes.len() / 3;
        bytes[mid] ^= 0x55;
        std::fs::write(&file, &bytes).unwrap();
        let bad = dir.path().join("bad");
        assert!(restore(&options(&file, &bad, "a")).is_err());
        assert!(!bad.exists());
    }
}
