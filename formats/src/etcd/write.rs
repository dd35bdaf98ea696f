//! Writing an etcd 3.4 database from typed records.

use super::{
    AuthState, CLUSTER_VERSION_KEY, EtcdError, KeyRecord, Member, MetaRecords,
    REMOVED_MEMBER_VALUE, Revision, TOMBSTONE_MARK, auth_key, bucket, meta_key,
};
use crate::bolt::{BoltWriter, WriteSummary};
use crate::pb::authpb::{Role, User};
use crate::pb::etcdserverpb::AlarmMember;
use crate::pb::leasepb::Lease;
use crate::pb::mvccpb::KeyValue;
use prost::Message as _;
use std::path::{Path, PathBuf};

/// Writes an etcd database bucket by bucket, in the file's bucket order:
/// alarm, auth, authRoles, authUsers, cluster, key, lease, members,
/// members_removed, meta. Call the methods in that order (skipping any);
/// calling one for a bucket already passed is an [`EtcdError::BucketOrder`]
/// error. [`EtcdDbWriter::finish`] creates every bucket not written, so the
/// file always has all ten, like a running member's.
///
/// `put_key` and `put_lease` stream: call them once per record, in key
/// order (revision order; lease ID order as u64). The other methods take a
/// whole (small) bucket and sort it themselves.
pub struct EtcdDbWriter {
    bolt: BoltWriter,
    path: PathBuf,
    /// Index in [`bucket::ALL`] of the next bucket not begun yet.
    next: usize,
    /// The bucket being written.
    open: Option<usize>,
    /// Reused encoding buffer.
    buf: Vec<u8>,
}

/// What [`EtcdDbWriter::finish`] wrote.
pub type EtcdWriteSummary = WriteSummary;

impl EtcdDbWriter {
    /// Creates (or truncates) the file at `path`.
    pub fn create(path: impl AsRef<Path>) -> Result<EtcdDbWriter, EtcdError> {
        let path = path.as_ref().to_path_buf();
        Ok(EtcdDbWriter {
            bolt: BoltWriter::create(&path)?,
            path,
            next: 0,
            open: None,
            buf: Vec::new(),
        })
    }

    /// Moves to bucket `name`, creating the skipped ones empty.
    fn enter(&mut self, name: &'static [u8]) -> Result<(), EtcdError> {
        let idx = bucket::ALL
            .iter()
            .position(|b| *b == name)
            .unwrap_or(bucket::ALL.len());
        if self.open == Some(idx) {
            return Ok(());
        }
        if idx < self.next {
            let after = name_of(bucket::ALL[self.next - 1]);
            return Err(EtcdError::BucketOrder {
                path: self.path.clone(),
                bucket: name_of(name),
                after,
            });
        }
        for b in &bucket::ALL[self.next..=idx] {
            self.bolt.begin_bucket(b)?;
        }
        self.next = idx + 1;
        self.open = Some(idx);
        Ok(())
    }

    fn put(&mut self, key: &[u8], value: &[u8]) -> Result<(), EtcdError> {
        Ok(self.bolt.put(key, value)?)
    }

    /// The `alarm` bucket.
    pub fn alarms(&mut self, alarms: &[AlarmMember]) -> Result<(), EtcdError> {
        self.enter(bucket::ALARM)?;
        let mut keys: Vec<Vec<u8>> = alarms.iter().map(|a| a.encode_to_vec()).collect();
        keys.sort();
        keys.dedup();
        for k in keys {
            self.put(&k, &[])?;
        }
        Ok(())
    }

    /// The `auth` bucket (`None` fields are left out).
    pub fn auth(&mut self, auth: &AuthState) -> Result<(), EtcdError> {
        self.enter(bucket::AUTH)?;
        if let Some(enabled) = auth.enabled {
            self.put(auth_key::ENABLED, &[u8::from(enabled)])?;
        }
        if let Some(rev) = auth.revision {
            self.put(auth_key::REVISION, &rev.to_be_bytes())?;
        }
        Ok(())
    }

    /// The `authRoles` bucket (sorted by name here).
    pub fn roles(&mut self, roles: &[Role]) -> Result<(), EtcdError> {
        self.enter(bucket::AUTH_ROLES)?;
        let mut sorted: Vec<&Role> = roles.iter().collect();
        sorted.sort_by(|a, b| a.name.cmp(&b.name));
        for r in sorted {
            let v = r.encode_to_vec();
            self.put(&r.name, &v)?;
        }
        Ok(())
    }

    /// The `authUsers` bucket (sorted by name here).
    pub fn users(&mut self, users: &[User]) -> Result<(), EtcdError> {
        self.enter(bucket::AUTH_USERS)?;
        let mut sorted: Vec<&User> = users.iter().collect();
        sorted.sort_by(|a, b| a.name.cmp(&b.name));
        for u in sorted {
            let v = u.encode_to_vec();
            self.put(&u.name, &v)?;
        }
        Ok(())
    }

    /// The `cluster` bucket's `clusterVersion` (e.g. `3.4.0`).
    pub fn cluster_version(&mut self, version: &str) -> Result<(), EtcdError> {
        self.enter(bucket::CLUSTER)?;
        self.put(CLUSTER_VERSION_KEY, version.as_bytes())
    }

    /// One entry of the `key` bucket. Entries must come in revision order.
    pub fn put_key(&mut self, rec: &KeyRecord) -> Result<(), EtcdError> {
        self.put_key_parts(rec.revision, rec.tombstone, &rec.kv)
    }

    /// [`EtcdDbWriter::put_key`] without building a [`KeyRecord`]. For a
    /// tombstone etcd stores only the key in `kv`.
    pub fn put_key_parts(
        &mut self,
        revision: Revision,
        tombstone: bool,
        kv: &KeyValue,
    ) -> Result<(), EtcdError> {
        self.enter(bucket::KEY)?;
        let mut key = [0u8; Revision::BYTES + 1];
        key[..Revision::BYTES].copy_from_slice(&revision.to_bytes());
        let key_len = if tombstone {
            key[Revision::BYTES] = TOMBSTONE_MARK;
            Revision::BYTES + 1
        } else {
            Revision::BYTES
        };
        let mut buf = std::mem::take(&mut self.buf);
        buf.clear();
        kv.encode(&mut buf).map_err(|e| EtcdError::BadRecord {
            path: self.path.clone(),
            bucket: "key",
            key: format!("{revision:?}"),
            problem: e.to_string(),
        })?;
        let res = self.put(&key[..key_len], &buf);
        self.buf = buf;
        res
    }

    /// One entry of the `lease` bucket. Leases must come in ID order (IDs
    /// compared as u64, the order of their big-endian keys).
    pub fn put_lease(&mut self, lease: &Lease) -> Result<(), EtcdError> {
        self.enter(bucket::LEASE)?;
        let v = lease.encode_to_vec();
        self.put(&lease.id.to_be_bytes(), &v)
    }

    /// The `members` bucket (sorted by hex key here).
    pub fn members(&mut self, members: &[Member]) -> Result<(), EtcdError> {
        self.enter(bucket::MEMBERS)?;
        let mut sorted: Vec<(String, &Member)> = members.iter().map(|m| (m.key(), m)).collect();
        sorted.sort_by(|a, b| a.0.cmp(&b.0));
        for (k, m) in sorted {
            self.put(k.as_bytes(), &m.to_json())?;
        }
        Ok(())
    }

    /// The `members_removed` bucket.
    pub fn removed_members(&mut self, ids: &[u64]) -> Result<(), EtcdError> {
        self.enter(bucket::MEMBERS_REMOVED)?;
        let mut keys: Vec<String> = ids.iter().map(|id| format!("{id:x}")).collect();
        keys.sort();
        keys.dedup();
        for k in keys {
            self.put(k.as_bytes(), REMOVED_MEMBER_VALUE)?;
        }
        Ok(())
    }

    /// The `meta` bucket (`None` fields are left out).
    pub fn meta(&mut self, meta: &MetaRecords) -> Result<(), EtcdError> {
        self.enter(bucket::META)?;
        if let Some(ci) = meta.consistent_index {
            self.put(meta_key::CONSISTENT_INDEX, &ci.to_be_bytes())?;
        }
        if let Some(rev) = meta.finished_compact_rev {
            self.put(
                meta_key::FINISHED_COMPACT_REV,
                &Revision::new(rev, 0).to_bytes(),
            )?;
        }
        if let Some(rev) = meta.scheduled_compact_rev {
            self.put(
                meta_key::SCHEDULED_COMPACT_REV,
                &Revision::new(rev, 0).to_bytes(),
            )?;
        }
        Ok(())
    }

    /// Creates the buckets not written yet and finishes the file (fsynced).
    pub fn finish(self) -> Result<EtcdWriteSummary, EtcdError> {
        Ok(self.rest()?.finish()?)
    }

    /// [`EtcdDbWriter::finish`] without the fsync, for a temporary file
    /// that is streamed out (see [`BoltWriter::finish_without_sync`]).
    pub fn finish_without_sync(self) -> Result<EtcdWriteSummary, EtcdError> {
        Ok(self.rest()?.finish_without_sync()?)
    }

    fn rest(mut self) -> Result<BoltWriter, EtcdError> {
        for b in &bucket::ALL[self.next..] {
            self.bolt.begin_bucket(b)?;
        }
        Ok(self.bolt)
    }
}

fn name_of(b: &'static [u8]) -> &'static str {
    std::str::from_utf8(b).unwrap_or("?")
}
