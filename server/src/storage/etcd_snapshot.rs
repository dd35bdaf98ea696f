//! Cairn's state machine as an etcd 3.4 snapshot: a bbolt database with
//! etcd's ten buckets, followed by the SHA-256 of its bytes. It is what
//! `Maintenance.Snapshot` streams (so `etcdctl snapshot save` stores it and
//! `etcdctl snapshot status|restore` and real etcd take it) and what `cairn
//! snapshot save` writes.
//!
//! From one consistent view of the state machine, in the file's bucket
//! order: alarms, auth state, roles, users, cluster version, every MVCC
//! revision ascending (tombstones carry only the key, as etcd's do), the
//! leases, the members, and `meta` (consistent index = the applied raft
//! index, scheduled and finished compaction). The v2 tree is not part of
//! an etcd snapshot either and is left out. Memory stays bounded: records
//! stream from the view into the writer, which keeps one page per tree
//! level.

use super::meta::{self, ViewRecords};
use super::mvcc::index::Rev;
use super::mvcc::{KIND_TOMBSTONE, decode_value};
use super::{Db, Error};
use crate::pb::cairnpb::MemberRecord;
use etcd_formats::etcd::{AuthState, EtcdDbWriter, Member, MetaRecords, Revision};
use etcd_formats::pb::{authpb, etcdserverpb, leasepb, mvccpb};
use etcd_formats::snapshot::DbStatus;
use prost::Message as _;
use std::fs::OpenOptions;
use std::io::{Seek, SeekFrom, Write};
use std::path::Path;

/// The `cluster` bucket's value. Cairn speaks etcd 3.4's API; a 3.4 member
/// restoring the file finds the version it runs.
pub const CLUSTER_VERSION: &str = "3.4.0";

/// What [`write_db`] wrote.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Exported {
    /// The database's size (without the trailer).
    pub db_bytes: u64,
    /// What `etcdctl snapshot status` reports for it.
    pub status: DbStatus,
    /// The applied raft index the view stood at.
    pub applied_index: u64,
}

/// Failures while exporting; every one names the file or the record.
fn export_err(path: &Path, e: impl std::fmt::Display) -> Error {
    Error::io(path, std::io::Error::other(e.to_string()))
}

/// Writes the state machine as `view` sees it to `path` as an etcd
/// database (no trailer, not fsynced).
pub fn write_db(db: &Db, view: &fjall::Snapshot, path: &Path) -> Result<Exported, Error> {
    use fjall::Readable;
    let rec: ViewRecords = meta::records_in(db, view)?;
    let err = |e: etcd_formats::etcd::EtcdError| export_err(path, e);
    let mut w = EtcdDbWriter::create(path).map_err(err)?;

    let alarms: Vec<etcdserverpb::AlarmMember> = rec
        .alarms
        .iter()
        .map(|a| etcdserverpb::AlarmMember {
            member_id: a.member_id,
            alarm: a.alarm,
        })
        .collect();
    w.alarms(&alarms).map_err(err)?;

    let (enabled, revision, users, roles) = match &rec.auth {
        None => crate::auth::AuthStore::new().etcd_records(),
        Some(blob) => crate::auth::AuthStore::load(blob)
            .map_err(|e| Error::corrupt("auth state", e))?
            .etcd_records(),
    };
    // etcd writes `authEnabled` on the first `auth enable`; a cluster that
    // never had auth on has only the revision.
    w.auth(&AuthState {
        enabled: enabled.then_some(true),
        revision: Some(revision),
    })
    .map_err(err)?;
    // Same wire format: etcd's authpb messages are Cairn's.
    let roles = roles
        .iter()
        .map(|r| authpb::Role::decode(r.encode_to_vec().as_slice()))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| Error::corrupt("auth role", e))?;
    let users = users
        .iter()
        .map(|u| authpb::User::decode(u.encode_to_vec().as_slice()))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| Error::corrupt("auth user", e))?;
    w.roles(&roles).map_err(err)?;
    w.users(&users).map_err(err)?;
    w.cluster_version(CLUSTER_VERSION).map_err(err)?;

    for guard in view.iter(&db.kv) {
        let (k, v) = guard.into_inner()?;
        let rev = Rev::from_key(&k)
            .ok_or_else(|| Error::corrupt("mvcc revision key", hex::encode(&k)))?;
        let (kind, kv) = decode_value(&v).map_err(|e| Error::corrupt("mvcc value", e))?;
        let tombstone = kind == KIND_TOMBSTONE;
        let out = if tombstone {
            // etcd stores a deletion as the key alone.
            mvccpb::KeyValue {
                key: kv.key,
                ..Default::default()
            }
        } else {
            mvccpb::KeyValue {
                key: kv.key,
                create_revision: kv.create_revision,
                mod_revision: kv.mod_revision,
                version: kv.version,
                value: kv.value,
                lease: kv.lease,
            }
        };
        w.put_key_parts(Revision::new(rev.main, rev.sub), tombstone, &out)
            .map_err(err)?;
    }

    // The bucket's keys are the IDs' big-endian bytes: u64 order.
    let mut leases = rec.leases.clone();
    leases.sort_unstable_by_key(|(id, _)| *id as u64);
    for (id, ttl) in leases {
        w.put_lease(&leasepb::Lease {
            id,
            ttl,
            remaining_ttl: 0,
        })
        .map_err(err)?;
    }

    let members: Vec<Member> = rec
        .membership
        .as_ref()
        .map(|m| m.members.iter().map(etcd_member).collect())
        .unwrap_or_default();
    w.members(&members).map_err(err)?;
    // Cairn keeps no list of removed members: the bucket stays empty.
    w.removed_members(&[]).map_err(err)?;
    let (scheduled, finished) = rec.compaction;
    w.meta(&MetaRecords {
        consistent_index: Some(rec.applied.index),
        scheduled_compact_rev: (scheduled > 0).then_some(scheduled),
        finished_compact_rev: (finished > 0).then_some(finished),
    })
    .map_err(err)?;
    let summary = w.finish_without_sync().map_err(err)?;
    Ok(Exported {
        db_bytes: summary.size_bytes,
        status: summary.status,
        applied_index: rec.applied.index,
    })
}

/// A member as etcd's `members` bucket stores it.
fn etcd_member(m: &MemberRecord) -> Member {
    Member {
        id: m.id,
        peer_urls: m.peer_urls.clone(),
        is_learner: m.is_learner,
        name: m.name.clone(),
        client_urls: m.client_urls.clone(),
    }
}

/// Writes the snapshot — database, then the SHA-256 of its bytes — to
/// `path` (created; the caller picks the name and removes or renames it).
/// Flushed, not fsynced: a download reads it back at once and deletes it;
/// `cairn snapshot save` syncs it itself. Returns the file size.
pub fn write_snapshot(db: &Db, view: &fjall::Snapshot, path: &Path) -> Result<u64, Error> {
    let exported = write_db(db, view, path)?;
    let io = |e| Error::io(path, e);
    let mut f = OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .map_err(io)?;
    let digest = etcd_formats::snapshot::sha256_prefix(
        &mut std::io::BufReader::with_capacity(1 << 20, &mut f),
        exported.db_bytes,
    )
    .map_err(io)?;
    f.seek(SeekFrom::Start(exported.db_bytes)).map_err(io)?;
    f.write_all(&digest).map_err(io)?;
    f.set_len(exported.db_bytes + digest.len() as u64)
        .map_err(io)?;
    Ok(exported.db_bytes + digest.len() as u64)
}
