//! The protobuf messages etcd 3.4 stores on disk, written here with etcd's
//! package names and field numbers (proto2 and proto3 encode these fields
//! the same way on the wire).
//!
//! Enums are plain `i32` fields with named constants, so an unknown value
//! read from a file is kept, not rejected. Strings that Go never checks for
//! UTF-8 are `bytes` here for the same reason.

/// `mvccpb` (`mvcc/mvccpb/kv.proto`): the values of the `key` bucket.
pub mod mvccpb {
    use bytes::Bytes;

    #[derive(Clone, PartialEq, Eq, ::prost::Message)]
    pub struct KeyValue {
        #[prost(bytes = "bytes", tag = "1")]
        pub key: Bytes,
        #[prost(int64, tag = "2")]
        pub create_revision: i64,
        #[prost(int64, tag = "3")]
        pub mod_revision: i64,
        #[prost(int64, tag = "4")]
        pub version: i64,
        #[prost(bytes = "bytes", tag = "5")]
        pub value: Bytes,
        #[prost(int64, tag = "6")]
        pub lease: i64,
    }
}

/// `leasepb` (`lease/leasepb/lease.proto`): the values of the `lease` bucket.
pub mod leasepb {
    #[derive(Clone, Copy, PartialEq, Eq, ::prost::Message)]
    pub struct Lease {
        #[prost(int64, tag = "1")]
        pub id: i64,
        #[prost(int64, tag = "2")]
        pub ttl: i64,
        /// 0 unless a checkpoint stored the remaining TTL.
        #[prost(int64, tag = "3")]
        pub remaining_ttl: i64,
    }
}

/// `authpb` (`auth/authpb/auth.proto`): the `authUsers`/`authRoles` values.
pub mod authpb {
    use bytes::Bytes;

    #[derive(Clone, Copy, PartialEq, Eq, ::prost::Message)]
    pub struct UserAddOptions {
        #[prost(bool, tag = "1")]
        pub no_password: bool,
    }

    #[derive(Clone, PartialEq, Eq, ::prost::Message)]
    pub struct User {
        #[prost(bytes = "bytes", tag = "1")]
        pub name: Bytes,
        /// bcrypt hash (empty for a user added with no password).
        #[prost(bytes = "bytes", tag = "2")]
        pub password: Bytes,
        #[prost(string, repeated, tag = "3")]
        pub roles: Vec<String>,
        #[prost(message, optional, tag = "4")]
        pub options: Option<UserAddOptions>,
    }

    /// `Permission.Type`.
    pub mod perm_type {
        pub const READ: i32 = 0;
        pub const WRITE: i32 = 1;
        pub const READWRITE: i32 = 2;
    }

    #[derive(Clone, PartialEq, Eq, ::prost::Message)]
    pub struct Permission {
        /// One of [`perm_type`].
        #[prost(int32, tag = "1")]
        pub perm_type: i32,
        #[prost(bytes = "bytes", tag = "2")]
        pub key: Bytes,
        #[prost(bytes = "bytes", tag = "3")]
        pub range_end: Bytes,
    }

    #[derive(Clone, PartialEq, Eq, ::prost::Message)]
    pub struct Role {
        #[prost(bytes = "bytes", tag = "1")]
        pub name: Bytes,
        #[prost(message, repeated, tag = "2")]
        pub key_permission: Vec<Permission>,
    }
}

/// `raftpb` (`raft/raftpb/raft.proto`, proto2).
pub mod raftpb {
    use bytes::Bytes;

    /// `EntryType`.
    pub mod entry_type {
        pub const NORMAL: i32 = 0;
        pub const CONF_CHANGE: i32 = 1;
        pub const CONF_CHANGE_V2: i32 = 2;
    }

    #[derive(Clone, PartialEq, Eq, ::prost::Message)]
    pub struct Entry {
        /// One of [`entry_type`].
        #[prost(int32, tag = "1")]
        pub entry_type: i32,
        #[prost(uint64, tag = "2")]
        pub term: u64,
        #[prost(uint64, tag = "3")]
        pub index: u64,
        #[prost(bytes = "bytes", tag = "4")]
        pub data: Bytes,
    }

    #[derive(Clone, Copy, PartialEq, Eq, ::prost::Message)]
    pub struct HardState {
        #[prost(uint64, tag = "1")]
        pub term: u64,
        #[prost(uint64, tag = "2")]
        pub vote: u64,
        #[prost(uint64, tag = "3")]
        pub commit: u64,
    }

    #[derive(Clone, PartialEq, Eq, ::prost::Message)]
    pub struct ConfState {
        #[prost(uint64, repeated, packed = "false", tag = "1")]
        pub voters: Vec<u64>,
        #[prost(uint64, repeated, packed = "false", tag = "2")]
        pub learners: Vec<u64>,
        #[prost(uint64, repeated, packed = "false", tag = "3")]
        pub voters_outgoing: Vec<u64>,
        #[prost(uint64, repeated, packed = "false", tag = "4")]
        pub learners_next: Vec<u64>,
        #[prost(bool, tag = "5")]
        pub auto_leave: bool,
    }

    #[derive(Clone, PartialEq, Eq, ::prost::Message)]
    pub struct SnapshotMetadata {
        #[prost(message, optional, tag = "1")]
        pub conf_state: Option<ConfState>,
        #[prost(uint64, tag = "2")]
        pub index: u64,
        #[prost(uint64, tag = "3")]
        pub term: u64,
    }

    #[derive(Clone, PartialEq, Eq, ::prost::Message)]
    pub struct Snapshot {
        /// In etcd 3.4: the v2 store as JSON (membership under `/0`).
        #[prost(bytes = "bytes", tag = "1")]
        pub data: Bytes,
        #[prost(message, optional, tag = "2")]
        pub metadata: Option<SnapshotMetadata>,
    }

    /// `ConfChangeType`.
    pub mod conf_change_type {
        pub const ADD_NODE: i32 = 0;
        pub const REMOVE_NODE: i32 = 1;
        pub const UPDATE_NODE: i32 = 2;
        pub const ADD_LEARNER_NODE: i32 = 3;
    }

    #[derive(Clone, PartialEq, Eq, ::prost::Message)]
    pub struct ConfChange {
        #[prost(uint64, tag = "1")]
        pub id: u64,
        /// One of [`conf_change_type`].
        #[prost(int32, tag = "2")]
        pub change_type: i32,
        #[prost(uint64, tag = "3")]
        pub node_id: u64,
        /// For add/update in etcd: the member as JSON.
        #[prost(bytes = "bytes", tag = "4")]
        pub context: Bytes,
    }

    #[derive(Clone, Copy, PartialEq, Eq, ::prost::Message)]
    pub struct ConfChangeSingle {
        #[prost(int32, tag = "1")]
        pub change_type: i32,
        #[prost(uint64, tag = "2")]
        pub node_id: u64,
    }

    #[derive(Clone, PartialEq, Eq, ::prost::Message)]
    pub struct ConfChangeV2 {
        #[prost(int32, tag = "1")]
        pub transition: i32,
        #[prost(message, repeated, tag = "2")]
        pub changes: Vec<ConfChangeSingle>,
        #[prost(bytes = "bytes", tag = "3")]
        pub context: Bytes,
    }
}

/// `walpb` (`wal/walpb/record.proto`, proto2).
pub mod walpb {
    use bytes::Bytes;

    #[derive(Clone, PartialEq, Eq, ::prost::Message)]
    pub struct Record {
        #[prost(int64, tag = "1")]
        pub record_type: i64,
        #[prost(uint32, tag = "2")]
        pub crc: u32,
        #[prost(bytes = "bytes", tag = "3")]
        pub data: Bytes,
    }

    /// A SNAPSHOT record's payload: a raft snapshot's position.
    #[derive(Clone, Copy, PartialEq, Eq, Hash, ::prost::Message)]
    pub struct Snapshot {
        #[prost(uint64, tag = "1")]
        pub index: u64,
        #[prost(uint64, tag = "2")]
        pub term: u64,
    }
}

/// `snappb` (`etcdserver/api/snap/snappb/snap.proto`, proto2): a `.snap` file.
pub mod snappb {
    use bytes::Bytes;

    #[derive(Clone, PartialEq, Eq, ::prost::Message)]
    pub struct Snapshot {
        #[prost(uint32, tag = "1")]
        pub crc: u32,
        #[prost(bytes = "bytes", tag = "2")]
        pub data: Bytes,
    }
}

/// `etcdserverpb`: WAL metadata, alarm keys, and the raft request envelope.
pub mod etcdserverpb {
    use bytes::Bytes;

    /// A WAL METADATA record's payload.
    #[derive(Clone, Copy, PartialEq, Eq, ::prost::Message)]
    pub struct Metadata {
        #[prost(uint64, tag = "1")]
        pub node_id: u64,
        #[prost(uint64, tag = "2")]
        pub cluster_id: u64,
    }

    /// `AlarmType`.
    pub mod alarm_type {
        pub const NONE: i32 = 0;
        pub const NOSPACE: i32 = 1;
        pub const CORRUPT: i32 = 2;
    }

    /// The keys of the `alarm` bucket (values are empty).
    #[derive(Clone, Copy, PartialEq, Eq, ::prost::Message)]
    pub struct AlarmMember {
        #[prost(uint64, tag = "1")]
        pub member_id: u64,
        /// One of [`alarm_type`].
        #[prost(int32, tag = "2")]
        pub alarm: i32,
    }

    /// `RequestHeader` of an `InternalRaftRequest`.
    #[derive(Clone, PartialEq, Eq, ::prost::Message)]
    pub struct RequestHeader {
        #[prost(uint64, tag = "1")]
        pub id: u64,
        #[prost(bytes = "bytes", tag = "2")]
        pub username: Bytes,
        #[prost(uint64, tag = "3")]
        pub auth_revision: u64,
    }

    /// The v2 API's `Request` (`etcdserver.proto`, proto2). etcd 3.4
    /// proposes these bare (not wrapped) for v2 writes, member attribute
    /// publication, cluster version updates and TTL `SYNC`s.
    #[derive(Clone, PartialEq, Eq, ::prost::Message)]
    pub struct Request {
        #[prost(uint64, tag = "1")]
        pub id: u64,
        #[prost(bytes = "bytes", tag = "2")]
        pub method: Bytes,
        #[prost(bytes = "bytes", tag = "3")]
        pub path: Bytes,
        #[prost(bytes = "bytes", tag = "4")]
        pub val: Bytes,
        #[prost(bool, tag = "5")]
        pub dir: bool,
        #[prost(bytes = "bytes", tag = "6")]
        pub prev_value: Bytes,
        #[prost(uint64, tag = "7")]
        pub prev_index: u64,
        #[prost(bool, optional, tag = "8")]
        pub prev_exist: Option<bool>,
        #[prost(int64, tag = "9")]
        pub expiration: i64,
        #[prost(bool, tag = "10")]
        pub wait: bool,
        #[prost(uint64, tag = "11")]
        pub since: u64,
        #[prost(bool, tag = "12")]
        pub recursive: bool,
        #[prost(bool, tag = "13")]
        pub sorted: bool,
        #[prost(bool, tag = "14")]
        pub quorum: bool,
        #[prost(int64, tag = "15")]
        pub time: i64,
        #[prost(bool, tag = "16")]
        pub stream: bool,
        #[prost(bool, optional, tag = "17")]
        pub refresh: Option<bool>,
    }
}
