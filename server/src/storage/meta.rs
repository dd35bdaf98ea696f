//! State-machine metadata records in the `meta` keyspace.
//!
//! Every record here is written by the apply loop in the same batch as the
//! data changes of the entry that produced it, so the metadata and the MVCC
//! data always describe the same applied index.

use super::{Db, Error, Result};
use crate::pb::cairnpb::Membership;
use fjall::OwnedWriteBatch;
use prost::Message as _;
use protobuf::Message as _;
use raft::prelude::ConfState;

const APPLIED: &[u8] = b"applied";
const CONF_STATE: &[u8] = b"conf_state";
const MEMBERSHIP: &[u8] = b"membership";
const COMPACT_SCHEDULED: &[u8] = b"compact_scheduled";
const COMPACT_FINISHED: &[u8] = b"compact_finished";
const ALARMS: &[u8] = b"alarms";
const KV_REVISION: &[u8] = b"kv_revision";

/// Records that say which cluster the state machine belongs to and where it
/// stands in that cluster's raft log, rather than what it holds: a snapshot
/// restored into a new cluster replaces them (alarms name old member IDs).
pub fn is_cluster_record(key: &[u8]) -> bool {
    [APPLIED, CONF_STATE, MEMBERSHIP, ALARMS].contains(&key)
}

/// Records whose value depends on this member's timing rather than on the
/// applied entries (how far the raft log is applied, how far background
/// compaction got); left out of the state-machine hash so that members at
/// the same revision agree.
///
/// The revision keyspace's own record is deterministic, but members written
/// by an older build lack it until their next apply: left out too, so a
/// mixed cluster's hashes still agree.
pub fn is_member_local(key: &[u8]) -> bool {
    [APPLIED, COMPACT_FINISHED, KV_REVISION].contains(&key)
}

/// The raft position the state machine reflects.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AppliedState {
    pub index: u64,
    pub term: u64,
}

fn read_u64_pair(bytes: &[u8], what: &'static str) -> Result<(u64, u64)> {
    if bytes.len() != 16 {
        return Err(Error::corrupt(what, format!("{} bytes", bytes.len())));
    }
    let mut a = [0u8; 8];
    let mut b = [0u8; 8];
    a.copy_from_slice(&bytes[..8]);
    b.copy_from_slice(&bytes[8..]);
    Ok((u64::from_be_bytes(a), u64::from_be_bytes(b)))
}

fn read_i64(bytes: &[u8], what: &'static str) -> Result<i64> {
    let arr: [u8; 8] = bytes
        .try_into()
        .map_err(|_| Error::corrupt(what, format!("{} bytes", bytes.len())))?;
    Ok(i64::from_be_bytes(arr))
}

pub fn applied(db: &Db) -> Result<AppliedState> {
    match db.meta.get(APPLIED)? {
        None => Ok(AppliedState::default()),
        Some(v) => {
            let (index, term) = read_u64_pair(&v, "applied index")?;
            Ok(AppliedState { index, term })
        }
    }
}

pub fn put_applied(batch: &mut OwnedWriteBatch, db: &Db, a: AppliedState) {
    let mut v = Vec::with_capacity(16);
    v.extend_from_slice(&a.index.to_be_bytes());
    v.extend_from_slice(&a.term.to_be_bytes());
    batch.insert(&db.meta, APPLIED, v);
}

pub fn conf_state(db: &Db) -> Result<ConfState> {
    decode_conf_state(db.meta.get(CONF_STATE)?)
}

fn decode_conf_state(v: Option<fjall::Slice>) -> Result<ConfState> {
    match v {
        None => Ok(ConfState::default()),
        Some(v) => {
            let mut cs = ConfState::default();
            cs.merge_from_bytes(&v)
                .map_err(|e| Error::corrupt("conf state", e))?;
            Ok(cs)
        }
    }
}

/// The applied position and conf state as a consistent view of the
/// database sees them (the apply loop writes both in the batch of the data
/// they cover).
pub fn position_in(db: &Db, view: &fjall::Snapshot) -> Result<(AppliedState, ConfState)> {
    use fjall::Readable;
    let applied = match view.get(&db.meta, APPLIED)? {
        None => AppliedState::default(),
        Some(v) => {
            let (index, term) = read_u64_pair(&v, "applied index")?;
            AppliedState { index, term }
        }
    };
    let cs = decode_conf_state(view.get(&db.meta, CONF_STATE)?)?;
    Ok((applied, cs))
}

pub fn put_conf_state(batch: &mut OwnedWriteBatch, db: &Db, cs: &ConfState) -> Result<()> {
    let bytes = cs
        .write_to_bytes()
        .map_err(|e| Error::corrupt("conf state", e))?;
    batch.insert(&db.meta, CONF_STATE, bytes);
    Ok(())
}

pub fn membership(db: &Db) -> Result<Option<Membership>> {
    match db.meta.get(MEMBERSHIP)? {
        None => Ok(None),
        Some(v) => Membership::decode(&*v)
            .map(Some)
            .map_err(|e| Error::corrupt("membership", e)),
    }
}

pub fn put_membership(batch: &mut OwnedWriteBatch, db: &Db, m: &Membership) {
    batch.insert(&db.meta, MEMBERSHIP, m.encode_to_vec());
}

/// The highest main revision assigned by the apply batches, written in each
/// batch with the revisions it assigned. fjall flushes each keyspace's
/// memtable on its own, so after a damaged journal tail `kv` and `meta` can
/// come back at different points of the write order; this record, kept in
/// `meta` with the applied index, says where `kv` must stand (see
/// `mvcc::Store::open`). `None` in data written before the record existed.
pub fn kv_revision(db: &Db) -> Result<Option<i64>> {
    db.meta
        .get(KV_REVISION)?
        .map(|v| read_i64(&v, "revision keyspace position"))
        .transpose()
}

pub fn put_kv_revision(batch: &mut OwnedWriteBatch, db: &Db, rev: i64) {
    batch.insert(&db.meta, KV_REVISION, rev.to_be_bytes().to_vec());
}

/// (scheduled, finished) compaction revisions; 0 when never compacted.
pub fn compaction(db: &Db) -> Result<(i64, i64)> {
    let scheduled = match db.meta.get(COMPACT_SCHEDULED)? {
        None => 0,
        Some(v) => read_i64(&v, "scheduled compaction")?,
    };
    let finished = match db.meta.get(COMPACT_FINISHED)? {
        None => 0,
        Some(v) => read_i64(&v, "finished compaction")?,
    };
    Ok((scheduled, finished))
}

pub fn put_compact_scheduled(batch: &mut OwnedWriteBatch, db: &Db, rev: i64) {
    batch.insert(&db.meta, COMPACT_SCHEDULED, rev.to_be_bytes().to_vec());
}

pub fn put_compact_finished(batch: &mut OwnedWriteBatch, db: &Db, rev: i64) {
    batch.insert(&db.meta, COMPACT_FINISHED, rev.to_be_bytes().to_vec());
}

/// The active alarms (see `super::alarm`).
pub fn alarms(db: &Db) -> Result<Vec<crate::pb::etcdserverpb::AlarmMember>> {
    match db.meta.get(ALARMS)? {
        None => Ok(Vec::new()),
        Some(v) => crate::pb::cairnpb::AlarmList::decode(&*v)
            .map(|l| l.alarms)
            .map_err(|e| Error::corrupt("alarm list", e)),
    }
}

pub fn put_alarms(
    batch: &mut OwnedWriteBatch,
    db: &Db,
    alarms: Vec<crate::pb::etcdserverpb::AlarmMember>,
) {
    if alarms.is_empty() {
        batch.remove(&db.meta, ALARMS);
    } else {
        let list = crate::pb::cairnpb::AlarmList { alarms };
        batch.insert(&db.meta, ALARMS, list.encode_to_vec());
    }
}

const LEASE_PREFIX: &[u8] = b"lease/";

fn lease_key(id: i64) -> Vec<u8> {
    let mut k = LEASE_PREFIX.to_vec();
    k.extend_from_slice(&id.to_be_bytes());
    k
}

/// Every lease as (id, ttl seconds).
pub fn leases(db: &Db) -> Result<Vec<(i64, i64)>> {
    let mut out = Vec::new();
    for guard in db.meta.prefix(LEASE_PREFIX) {
        let (_, v) = guard.into_inner()?;
        let rec = crate::pb::cairnpb::LeaseRecord::decode(&*v)
            .map_err(|e| Error::corrupt("lease record", e))?;
        out.push((rec.id, rec.ttl));
    }
    Ok(out)
}

/// Every lease with its checkpointed remaining TTL (0: none).
pub fn lease_records(db: &Db) -> Result<Vec<crate::pb::cairnpb::LeaseRecord>> {
    let mut out = Vec::new();
    for guard in db.meta.prefix(LEASE_PREFIX) {
        let (_, v) = guard.into_inner()?;
        out.push(
            crate::pb::cairnpb::LeaseRecord::decode(&*v)
                .map_err(|e| Error::corrupt("lease record", e))?,
        );
    }
    Ok(out)
}

pub fn put_lease(batch: &mut OwnedWriteBatch, db: &Db, id: i64, ttl: i64) {
    put_lease_record(
        batch,
        db,
        &crate::pb::cairnpb::LeaseRecord {
            id,
            ttl,
            remaining_ttl: 0,
        },
    );
}

pub fn put_lease_record(
    batch: &mut OwnedWriteBatch,
    db: &Db,
    rec: &crate::pb::cairnpb::LeaseRecord,
) {
    batch.insert(&db.meta, lease_key(rec.id), rec.encode_to_vec());
}

pub fn delete_lease(batch: &mut OwnedWriteBatch, db: &Db, id: i64) {
    batch.remove(&db.meta, lease_key(id));
}

// The v2 keyspace (etcd's separate v2 store): one record per node, keyed by
// its path, plus the v2 store's own index. Kept in `meta` so snapshots and
// restores carry it without a format change of their own.
const V2_NODE_PREFIX: &[u8] = b"v2node";
const V2_INDEX: &[u8] = b"v2index";

fn v2_node_key(path: &str) -> Vec<u8> {
    let mut k = V2_NODE_PREFIX.to_vec();
    k.extend_from_slice(path.as_bytes());
    k
}

/// v2 node records: (path, record bytes).
pub type V2Records = Vec<(String, Vec<u8>)>;

/// The v2 store's index and the index of its last client-visible event
/// (`V2Store::visible_index`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct V2Index {
    pub index: u64,
    pub visible: u64,
}

/// Every v2 node record and the v2 indexes.
pub fn v2_records(db: &Db) -> Result<(V2Records, V2Index)> {
    let mut out = Vec::new();
    for guard in db.meta.prefix(V2_NODE_PREFIX) {
        let (k, v) = guard.into_inner()?;
        let path = std::str::from_utf8(&k[V2_NODE_PREFIX.len()..])
            .map_err(|e| Error::corrupt("v2 node key", e))?
            .to_string();
        out.push((path, v.to_vec()));
    }
    // 8 bytes (the index alone) before the visible index was kept: then
    // every event counts as visible.
    let index = match db.meta.get(V2_INDEX)? {
        None => V2Index::default(),
        Some(v) if v.len() == 8 => {
            let index = read_i64(&v, "v2 index")? as u64;
            V2Index {
                index,
                visible: index,
            }
        }
        Some(v) => {
            let (index, visible) = read_u64_pair(&v, "v2 index")?;
            V2Index { index, visible }
        }
    };
    Ok((out, index))
}

/// Upserts (`Some`) or deletes (`None`) one v2 node record.
pub fn put_v2_node(batch: &mut OwnedWriteBatch, db: &Db, path: &str, record: Option<&[u8]>) {
    match record {
        Some(r) => batch.insert(&db.meta, v2_node_key(path), r),
        None => batch.remove(&db.meta, v2_node_key(path)),
    }
}

pub fn put_v2_index(batch: &mut OwnedWriteBatch, db: &Db, i: V2Index) {
    let mut v = Vec::with_capacity(16);
    v.extend_from_slice(&i.index.to_be_bytes());
    v.extend_from_slice(&i.visible.to_be_bytes());
    batch.insert(&db.meta, V2_INDEX, v);
}

// The v3 auth store (users, roles, enabled flag, auth revision) as one blob
// (`AuthStore::save`); rewritten whole by every auth change, which is rare.
const AUTH: &[u8] = b"auth";

pub fn auth(db: &Db) -> Result<Option<Vec<u8>>> {
    Ok(db.meta.get(AUTH)?.map(|v| v.to_vec()))
}

pub fn put_auth(batch: &mut OwnedWriteBatch, db: &Db, blob: Vec<u8>) {
    batch.insert(&db.meta, AUTH, blob);
}

/// The metadata records a consistent view of the state machine holds, for
/// exporting it (`storage::etcd_snapshot`): everything but the MVCC data,
/// the v2 tree and the plugin set.
#[derive(Debug, Clone, Default)]
pub struct ViewRecords {
    pub applied: AppliedState,
    pub membership: Option<Membership>,
    pub alarms: Vec<crate::pb::etcdserverpb::AlarmMember>,
    /// (id, ttl seconds).
    pub leases: Vec<(i64, i64)>,
    /// `AuthStore::save` bytes.
    pub auth: Option<Vec<u8>>,
    /// (scheduled, finished) compaction revisions; 0 when never compacted.
    pub compaction: (i64, i64),
}

/// Reads [`ViewRecords`] from `view`.
pub fn records_in(db: &Db, view: &fjall::Snapshot) -> Result<ViewRecords> {
    use fjall::Readable;
    let (applied, _) = position_in(db, view)?;
    let membership = match view.get(&db.meta, MEMBERSHIP)? {
        None => None,
        Some(v) => Some(Membership::decode(&*v).map_err(|e| Error::corrupt("membership", e))?),
    };
    let alarms = match view.get(&db.meta, ALARMS)? {
        None => Vec::new(),
        Some(v) => crate::pb::cairnpb::AlarmList::decode(&*v)
            .map(|l| l.alarms)
            .map_err(|e| Error::corrupt("alarm list", e))?,
    };
    let mut leases = Vec::new();
    for guard in view.prefix(&db.meta, LEASE_PREFIX) {
        let (_, v) = guard.into_inner()?;
        let rec = crate::pb::cairnpb::LeaseRecord::decode(&*v)
            .map_err(|e| Error::corrupt("lease record", e))?;
        leases.push((rec.id, rec.ttl));
    }
    let auth = view.get(&db.meta, AUTH)?.map(|v| v.to_vec());
    let read = |key: &[u8], what| -> Result<i64> {
        match view.get(&db.meta, key)? {
            None => Ok(0),
            Some(v) => read_i64(&v, what),
        }
    };
    let compaction = (
        read(COMPACT_SCHEDULED, "scheduled compaction")?,
        read(COMPACT_FINISHED, "finished compaction")?,
    );
    Ok(ViewRecords {
        applied,
        membership,
        alarms,
        leases,
        auth,
        compaction,
    })
}
