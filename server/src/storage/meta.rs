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
    match db.meta.get(CONF_STATE)? {
        None => Ok(ConfState::default()),
        Some(v) => {
            let mut cs = ConfState::default();
            cs.merge_from_bytes(&v)
                .map_err(|e| Error::corrupt("conf state", e))?;
            Ok(cs)
        }
    }
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

pub fn put_lease(batch: &mut OwnedWriteBatch, db: &Db, id: i64, ttl: i64) {
    let rec = crate::pb::cairnpb::LeaseRecord { id, ttl };
    batch.insert(&db.meta, lease_key(id), rec.encode_to_vec());
}

pub fn delete_lease(batch: &mut OwnedWriteBatch, db: &Db, id: i64) {
    batch.remove(&db.meta, lease_key(id));
}
