//! Reading an etcd 3.4 database into typed records.

use super::{
    AuthState, CLUSTER_VERSION_KEY, EtcdError, KeyRecord, Member, MetaRecords, Revision, auth_key,
    bucket, meta_key,
};
use crate::bolt::{BoltReader, Bucket, Cursor, Entry, show};
use crate::pb::authpb::{Role, User};
use crate::pb::etcdserverpb::AlarmMember;
use crate::pb::leasepb::Lease;
use crate::pb::mvccpb::KeyValue;
use crate::snapshot::{self, DbStatus};
use bytes::Bytes;
use prost::Message as _;
use std::path::Path;

/// An etcd database file (`member/snap/db` or a snapshot) opened for
/// reading. The `key` and `lease` buckets are iterated, never loaded whole.
pub struct EtcdDb {
    bolt: BoltReader,
}

impl EtcdDb {
    pub fn open(path: impl AsRef<Path>) -> Result<EtcdDb, EtcdError> {
        Ok(EtcdDb {
            bolt: BoltReader::open(path)?,
        })
    }

    pub fn from_bolt(bolt: BoltReader) -> EtcdDb {
        EtcdDb { bolt }
    }

    /// The underlying bbolt file.
    pub fn bolt(&self) -> &BoltReader {
        &self.bolt
    }

    /// Names of the top-level buckets, in order.
    pub fn bucket_names(&self) -> Result<Vec<Bytes>, EtcdError> {
        let mut names = Vec::new();
        for e in self.bolt.cursor(&self.bolt.root()) {
            names.push(e?.key);
        }
        Ok(names)
    }

    /// What `etcdctl snapshot status` reports (runs the integrity check).
    pub fn status(&self) -> Result<DbStatus, EtcdError> {
        Ok(snapshot::status(&self.bolt)?)
    }

    fn bucket(&self, name: &[u8]) -> Result<Option<Bucket>, EtcdError> {
        Ok(self.bolt.bucket(name)?)
    }

    fn bad(&self, bucket: &'static str, key: &[u8], problem: impl Into<String>) -> EtcdError {
        EtcdError::BadRecord {
            path: self.bolt.path().to_path_buf(),
            bucket,
            key: show(key),
            problem: problem.into(),
        }
    }

    /// Every entry of a small bucket (users, roles, members, alarms).
    fn entries(&self, name: &[u8]) -> Result<Vec<Entry>, EtcdError> {
        let Some(b) = self.bucket(name)? else {
            return Ok(Vec::new());
        };
        let mut out = Vec::new();
        for e in self.bolt.cursor(&b) {
            out.push(e?);
        }
        Ok(out)
    }

    /// The `meta` bucket.
    pub fn meta(&self) -> Result<MetaRecords, EtcdError> {
        let mut m = MetaRecords::default();
        let Some(b) = self.bucket(bucket::META)? else {
            return Ok(m);
        };
        if let Some(v) = self.bolt.get(&b, meta_key::CONSISTENT_INDEX)? {
            let a: [u8; 8] = v.as_ref().try_into().map_err(|_| {
                self.bad(
                    "meta",
                    meta_key::CONSISTENT_INDEX,
                    format!("{} bytes, want 8", v.len()),
                )
            })?;
            m.consistent_index = Some(u64::from_be_bytes(a));
        }
        for (key, slot) in [
            (
                meta_key::SCHEDULED_COMPACT_REV,
                &mut m.scheduled_compact_rev,
            ),
            (meta_key::FINISHED_COMPACT_REV, &mut m.finished_compact_rev),
        ] {
            if let Some(v) = self.bolt.get(&b, key)? {
                let rev = Revision::from_bytes(&v)
                    .ok_or_else(|| self.bad("meta", key, "not a 17-byte revision"))?;
                *slot = Some(rev.main);
            }
        }
        Ok(m)
    }

    /// Every revision of every key, in revision order, tombstones included.
    pub fn keys(&self) -> Result<KeyIter<'_>, EtcdError> {
        let b = self.bucket(bucket::KEY)?;
        Ok(KeyIter {
            db: self,
            cursor: b.map(|b| self.bolt.cursor(&b)),
        })
    }

    /// The `lease` bucket, in lease ID order.
    pub fn leases(&self) -> Result<LeaseIter<'_>, EtcdError> {
        let b = self.bucket(bucket::LEASE)?;
        Ok(LeaseIter {
            db: self,
            cursor: b.map(|b| self.bolt.cursor(&b)),
        })
    }

    /// The `auth` bucket.
    pub fn auth(&self) -> Result<AuthState, EtcdError> {
        let mut a = AuthState::default();
        let Some(b) = self.bucket(bucket::AUTH)? else {
            return Ok(a);
        };
        if let Some(v) = self.bolt.get(&b, auth_key::ENABLED)? {
            a.enabled = match v.as_ref() {
                [0] => Some(false),
                [1] => Some(true),
                _ => return Err(self.bad("auth", auth_key::ENABLED, "not a 1-byte 0 or 1")),
            };
        }
        if let Some(v) = self.bolt.get(&b, auth_key::REVISION)? {
            let r: [u8; 8] = v.as_ref().try_into().map_err(|_| {
                self.bad(
                    "auth",
                    auth_key::REVISION,
                    format!("{} bytes, want 8", v.len()),
                )
            })?;
            a.revision = Some(u64::from_be_bytes(r));
        }
        Ok(a)
    }

    /// The `authUsers` bucket, by name.
    pub fn users(&self) -> Result<Vec<User>, EtcdError> {
        self.entries(bucket::AUTH_USERS)?
            .into_iter()
            .map(|e| {
                User::decode(e.value).map_err(|err| self.bad("authUsers", &e.key, err.to_string()))
            })
            .collect()
    }

    /// The `authRoles` bucket, by name.
    pub fn roles(&self) -> Result<Vec<Role>, EtcdError> {
        self.entries(bucket::AUTH_ROLES)?
            .into_iter()
            .map(|e| {
                Role::decode(e.value).map_err(|err| self.bad("authRoles", &e.key, err.to_string()))
            })
            .collect()
    }

    /// The `members` bucket. etcd 3.4 writes it but boots from the v2 store
    /// in the `.snap` file; the two normally agree.
    pub fn members(&self) -> Result<Vec<Member>, EtcdError> {
        self.entries(bucket::MEMBERS)?
            .into_iter()
            .map(|e| {
                serde_json::from_slice::<Member>(&e.value)
                    .map_err(|err| self.bad("members", &e.key, err.to_string()))
            })
            .collect()
    }

    /// The IDs in the `members_removed` bucket.
    pub fn removed_members(&self) -> Result<Vec<u64>, EtcdError> {
        self.entries(bucket::MEMBERS_REMOVED)?
            .into_iter()
            .map(|e| {
                std::str::from_utf8(&e.key)
                    .ok()
                    .and_then(|s| u64::from_str_radix(s, 16).ok())
                    .ok_or_else(|| self.bad("members_removed", &e.key, "not a hex member ID"))
            })
            .collect()
    }

    /// The `cluster` bucket's `clusterVersion`.
    pub fn cluster_version(&self) -> Result<Option<String>, EtcdError> {
        let Some(b) = self.bucket(bucket::CLUSTER)? else {
            return Ok(None);
        };
        match self.bolt.get(&b, CLUSTER_VERSION_KEY)? {
            None => Ok(None),
            Some(v) => String::from_utf8(v.to_vec())
                .map(Some)
                .map_err(|_| self.bad("cluster", CLUSTER_VERSION_KEY, "not UTF-8")),
        }
    }

    /// The `alarm` bucket.
    pub fn alarms(&self) -> Result<Vec<AlarmMember>, EtcdError> {
        self.entries(bucket::ALARM)?
            .into_iter()
            .map(|e| {
                AlarmMember::decode(e.key.clone())
                    .map_err(|err| self.bad("alarm", &e.key, err.to_string()))
            })
            .collect()
    }
}

/// The `key` bucket in revision order; see [`EtcdDb::keys`]. Keys and
/// values share the page buffers they were read into.
pub struct KeyIter<'r> {
    db: &'r EtcdDb,
    cursor: Option<Cursor<'r>>,
}

impl Iterator for KeyIter<'_> {
    type Item = Result<KeyRecord, EtcdError>;

    fn next(&mut self) -> Option<Self::Item> {
        let e = match self.cursor.as_mut()?.next()? {
            Ok(e) => e,
            Err(err) => return Some(Err(err.into())),
        };
        let db = self.db;
        let Some((revision, tombstone)) = Revision::from_key(&e.key) else {
            return Some(Err(db.bad("key", &e.key, "not a revision")));
        };
        if e.is_bucket {
            return Some(Err(db.bad(
                "key",
                &e.key,
                "a bucket where a KeyValue belongs",
            )));
        }
        Some(
            KeyValue::decode(e.value)
                .map(|kv| KeyRecord {
                    revision,
                    tombstone,
                    kv,
                })
                .map_err(|err| db.bad("key", &e.key, format!("bad KeyValue: {err}"))),
        )
    }
}

/// The `lease` bucket in ID order; see [`EtcdDb::leases`].
pub struct LeaseIter<'r> {
    db: &'r EtcdDb,
    cursor: Option<Cursor<'r>>,
}

impl Iterator for LeaseIter<'_> {
    type Item = Result<Lease, EtcdError>;

    fn next(&mut self) -> Option<Self::Item> {
        let e = match self.cursor.as_mut()?.next()? {
            Ok(e) => e,
            Err(err) => return Some(Err(err.into())),
        };
        let db = self.db;
        if e.key.len() != 8 {
            return Some(Err(db.bad("lease", &e.key, "lease ID is not 8 bytes")));
        }
        Some(
            Lease::decode(e.value)
                .map_err(|err| db.bad("lease", &e.key, format!("bad Lease: {err}"))),
        )
    }
}
