//! Reads and writes etcd 3.4's on-disk formats, so Cairn can take etcd's
//! data and give it back: snapshots `etcdctl snapshot status|restore`
//! accept, and a stopped etcd member's data dir.
//!
//! ```text
//! <data-dir>/member/
//!   snap/db                          bbolt database: the v3 keyspace  -> etcd::EtcdDb
//!   snap/<term>-<index>.snap         raft snapshot (v2 store JSON)    -> snap
//!   snap/<index>.snap.db             database received from a leader -> datadir::Backend
//!   wal/<seq>-<index>.wal            write-ahead log segments         -> wal
//! etcdctl snapshot save F            F = bbolt bytes ‖ SHA-256 of them -> snapshot
//! ```
//!
//! Layers, bottom up:
//!
//! * [`bolt`] — the bbolt v1.3.6 file format: pages, meta pages, B+tree
//!   buckets (inline ones too). [`bolt::BoltReader`] walks a file with
//!   positional reads (a 1 GiB file is never loaded whole) and checks every
//!   offset; [`bolt::BoltWriter`] streams a new file from sorted buckets.
//! * [`etcd`] — etcd 3.4's buckets on top: revisions, `mvccpb.KeyValue`,
//!   leases, auth, members, meta. [`etcd::EtcdDb`] reads typed records
//!   (the `key` bucket as an iterator), [`etcd::EtcdDbWriter`] writes them.
//! * [`snapshot`] — the SHA-256 trailer and `etcdctl snapshot status`.
//! * [`wal`], [`snap`] — WAL segments (framing, CRC-32C chain, torn tails)
//!   and `.snap` files; [`datadir::MemberData`] combines them the way etcd
//!   boots; [`request`] tells what a raft entry carries (v3
//!   `InternalRaftRequest` with each request kept raw, or a v2 `Request`);
//!   [`v2store`] reads the v2 store a `.snap` carries (membership).
//! * [`pb`] — the protobuf messages involved, with etcd's field numbers.
//!
//! Integers are little-endian in bbolt's structures and big-endian in
//! etcd's keys (revisions, lease IDs, the consistent index). Limits are
//! named constants in each module ([`bolt::MAX_TREE_DEPTH`],
//! [`wal::MAX_WAL_RECORD_BYTES`], …). Nothing here panics on bad input: a
//! damaged file gives an error naming the file and where in it.

pub mod bolt;
pub mod checksum;
pub mod datadir;
pub mod etcd;
pub mod pb;
pub mod request;
pub mod snap;
pub mod snapshot;
pub mod v2store;
pub mod wal;
