//! etcd 3.4's schema on top of bbolt: bucket names, key encodings and value
//! types of `member/snap/db` and of snapshot files.
//!
//! | bucket | key | value |
//! |---|---|---|
//! | `key` | [`Revision`] (17 bytes; 18 with the tombstone mark `t`) | `mvccpb.KeyValue` |
//! | `meta` | `consistent_index`, `scheduledCompactRev`, `finishedCompactRev` | u64 BE; 17-byte revisions |
//! | `lease` | lease ID, i64 BE | `leasepb.Lease` |
//! | `auth` | `authEnabled`, `authRevision` | 1 byte; u64 BE |
//! | `authUsers` / `authRoles` | name | `authpb.User` / `authpb.Role` |
//! | `members` / `members_removed` | member ID in lowercase hex | [`Member`] JSON / `removed` |
//! | `cluster` | `clusterVersion` | semver text |
//! | `alarm` | encoded `AlarmMember` | empty |

mod read;
mod write;

pub use read::{EtcdDb, KeyIter, LeaseIter};
pub use write::{EtcdDbWriter, EtcdWriteSummary};

use crate::bolt::BoltError;
use crate::pb::mvccpb::KeyValue;
use std::path::PathBuf;

/// Top-level bucket names, and [`bucket::ALL`] in the (sorted) order they
/// appear in a file.
pub mod bucket {
    pub const ALARM: &[u8] = b"alarm";
    pub const AUTH: &[u8] = b"auth";
    pub const AUTH_ROLES: &[u8] = b"authRoles";
    pub const AUTH_USERS: &[u8] = b"authUsers";
    pub const CLUSTER: &[u8] = b"cluster";
    pub const KEY: &[u8] = b"key";
    pub const LEASE: &[u8] = b"lease";
    pub const MEMBERS: &[u8] = b"members";
    pub const MEMBERS_REMOVED: &[u8] = b"members_removed";
    pub const META: &[u8] = b"meta";
    /// Every bucket a running etcd 3.4 member has, in byte order.
    pub const ALL: [&[u8]; 10] = [
        ALARM,
        AUTH,
        AUTH_ROLES,
        AUTH_USERS,
        CLUSTER,
        KEY,
        LEASE,
        MEMBERS,
        MEMBERS_REMOVED,
        META,
    ];
}

/// Keys of the `meta` bucket.
pub mod meta_key {
    /// The last raft index applied to this database (u64 BE).
    pub const CONSISTENT_INDEX: &[u8] = b"consistent_index";
    /// A compaction's target, stored before it runs ([`super::Revision`] bytes).
    pub const SCHEDULED_COMPACT_REV: &[u8] = b"scheduledCompactRev";
    /// The last compaction that finished ([`super::Revision`] bytes).
    pub const FINISHED_COMPACT_REV: &[u8] = b"finishedCompactRev";
}

/// Keys of the `auth` bucket.
pub mod auth_key {
    pub const ENABLED: &[u8] = b"authEnabled";
    pub const REVISION: &[u8] = b"authRevision";
}

/// The one key of the `cluster` bucket.
pub const CLUSTER_VERSION_KEY: &[u8] = b"clusterVersion";
/// The value of every `members_removed` entry.
pub const REMOVED_MEMBER_VALUE: &[u8] = b"removed";
/// The byte after a revision that marks a deletion.
pub const TOMBSTONE_MARK: u8 = b't';

/// An mvcc revision: `main` per write transaction, `sub` per change in it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Revision {
    pub main: i64,
    pub sub: i64,
}

impl Revision {
    /// Encoded size: `main` BE, `_`, `sub` BE.
    pub const BYTES: usize = 17;

    pub fn new(main: i64, sub: i64) -> Revision {
        Revision { main, sub }
    }

    pub fn to_bytes(self) -> [u8; Revision::BYTES] {
        let mut b = [0u8; Revision::BYTES];
        b[..8].copy_from_slice(&self.main.to_be_bytes());
        b[8] = b'_';
        b[9..].copy_from_slice(&self.sub.to_be_bytes());
        b
    }

    /// Decodes exactly 17 revision bytes.
    pub fn from_bytes(b: &[u8]) -> Option<Revision> {
        if b.len() != Revision::BYTES || b[8] != b'_' {
            return None;
        }
        let mut main = [0u8; 8];
        let mut sub = [0u8; 8];
        main.copy_from_slice(&b[..8]);
        sub.copy_from_slice(&b[9..]);
        Some(Revision {
            main: i64::from_be_bytes(main),
            sub: i64::from_be_bytes(sub),
        })
    }

    /// Decodes a `key` bucket key: the revision and whether it is a
    /// tombstone.
    pub fn from_key(b: &[u8]) -> Option<(Revision, bool)> {
        match b.len() {
            Revision::BYTES => Some((Revision::from_bytes(b)?, false)),
            18 if b[17] == TOMBSTONE_MARK => Some((Revision::from_bytes(&b[..17])?, true)),
            _ => None,
        }
    }
}

/// One entry of the `key` bucket. A tombstone's `kv` carries only the key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyRecord {
    pub revision: Revision,
    pub tombstone: bool,
    pub kv: KeyValue,
}

/// The `meta` bucket (absent keys are `None`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct MetaRecords {
    pub consistent_index: Option<u64>,
    /// Main revision of `scheduledCompactRev`.
    pub scheduled_compact_rev: Option<i64>,
    /// Main revision of `finishedCompactRev`.
    pub finished_compact_rev: Option<i64>,
}

/// The `auth` bucket (absent keys are `None`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct AuthState {
    pub enabled: Option<bool>,
    pub revision: Option<u64>,
}

/// A `members` bucket value: etcd's `membership.Member` as JSON
/// (`{"id":…,"peerURLs":[…],"isLearner":true,"name":"…","clientURLs":[…]}`,
/// `isLearner`, `name` and `clientURLs` left out when empty).
#[derive(Debug, Clone, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub struct Member {
    pub id: u64,
    #[serde(rename = "peerURLs", default, deserialize_with = "null_as_empty")]
    pub peer_urls: Vec<String>,
    #[serde(rename = "isLearner", default, skip_serializing_if = "is_false")]
    pub is_learner: bool,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub name: String,
    #[serde(
        rename = "clientURLs",
        default,
        skip_serializing_if = "Vec::is_empty",
        deserialize_with = "null_as_empty"
    )]
    pub client_urls: Vec<String>,
}

fn is_false(b: &bool) -> bool {
    !b
}

fn null_as_empty<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    use serde::Deserialize as _;
    Ok(Option::<Vec<String>>::deserialize(d)?.unwrap_or_default())
}

impl Member {
    /// The `members` bucket key: the ID in lowercase hex, no padding.
    pub fn key(&self) -> String {
        format!("{:x}", self.id)
    }

    /// Go's `json.Marshal` of the member, byte for byte: Go escapes `<`,
    /// `>`, `&`, U+2028 and U+2029 inside strings, serde_json does not.
    pub fn to_json(&self) -> Vec<u8> {
        let s = serde_json::to_string(self).unwrap_or_default();
        let mut out = String::with_capacity(s.len());
        for c in s.chars() {
            match c {
                '<' => out.push_str("\\u003c"),
                '>' => out.push_str("\\u003e"),
                '&' => out.push_str("\\u0026"),
                '\u{2028}' => out.push_str("\\u2028"),
                '\u{2029}' => out.push_str("\\u2029"),
                c => out.push(c),
            }
        }
        out.into_bytes()
    }
}

/// Errors of the etcd layer: the bbolt file's, or an etcd record that does
/// not decode (named by file, bucket and key), or misuse of the writer.
#[derive(Debug, thiserror::Error)]
pub enum EtcdError {
    #[error(transparent)]
    Bolt(#[from] BoltError),
    #[error("{path}: bucket {bucket}: key {key}: {problem}")]
    BadRecord {
        path: PathBuf,
        bucket: &'static str,
        key: String,
        problem: String,
    },
    #[error("{path}: bucket {bucket} must be written before bucket {after}")]
    BucketOrder {
        path: PathBuf,
        bucket: &'static str,
        after: &'static str,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn revision_bytes_round_trip_and_sort_like_revisions() {
        let r = Revision::new(0x0102, 3);
        let b = r.to_bytes();
        assert_eq!(b, [0, 0, 0, 0, 0, 0, 1, 2, b'_', 0, 0, 0, 0, 0, 0, 0, 3]);
        assert_eq!(Revision::from_bytes(&b), Some(r));
        let mut t = b.to_vec();
        t.push(b't');
        assert_eq!(Revision::from_key(&t), Some((r, true)));
        assert_eq!(Revision::from_key(&b), Some((r, false)));
        assert_eq!(Revision::from_key(&t[..16]), None);
        t[17] = b'x';
        assert_eq!(Revision::from_key(&t), None);
        assert!(Revision::new(2, 9).to_bytes() < Revision::new(3, 0).to_bytes());
    }

    #[test]
    fn member_json_matches_go() {
        let m = Member {
            id: 10276657743932975437,
            peer_urls: vec!["http://localhost:2380".into()],
            is_learner: false,
            name: "default".into(),
            client_urls: vec!["http://localhost:2379?a=1&b=<2>".into()],
        };
        assert_eq!(
            String::from_utf8(m.to_json()).unwrap(),
            r#"{"id":10276657743932975437,"peerURLs":["http://localhost:2380"],"name":"default","clientURLs":["http://localhost:2379?a=1\u0026b=\u003c2\u003e"]}"#
        );
        let back: Member = serde_json::from_slice(&m.to_json()).unwrap();
        assert_eq!(back, m);
        assert_eq!(m.key(), "8e9e05c52164694d");
        let unnamed: Member = serde_json::from_str(r#"{"id":1,"peerURLs":null}"#).unwrap();
        assert_eq!(
            String::from_utf8(unnamed.to_json()).unwrap(),
            r#"{"id":1,"peerURLs":[]}"#
        );
    }
}
