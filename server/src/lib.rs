//! Cairn: an etcd-compatible, Raft-replicated key-value store.
//!
//! Layers (see `docs/architecture.md`): `api` (gRPC and HTTP) → `server`
//! (raft node, apply loop) → `storage` (MVCC and raft log on fjall), with
//! `transport` carrying raft messages between members.

pub mod api;
pub mod auth;
pub mod boot;
pub mod cli;
pub mod crash;
pub mod error;
pub mod etcdserver;
pub mod files;
#[doc(hidden)]
pub mod fuzz_api;
pub mod ids;
pub mod logging;
pub mod metrics;
pub mod net;
pub mod pb;
pub mod policy;
pub mod raftwire;
pub mod state;
pub mod storage;
pub mod tls;
pub mod transport;
pub mod v2;
