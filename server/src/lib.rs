//! Cairn: an etcd-compatible, Raft-replicated key-value store.
//!
//! Layers (see `docs/architecture.md`): `api` (gRPC and HTTP) → `server`
//! (raft node, apply loop) → `storage` (MVCC and raft log on fjall), with
//! `transport` carrying raft messages between members.

pub mod api;
pub mod auth;
pub mod cli;
mod cli_snapshot;
pub mod crash;
pub mod error;
pub mod http_client;
pub mod ids;
pub mod logging;
pub mod metrics;
pub mod pb;
pub mod plugins;
pub mod server;
pub mod storage;
pub mod tls;
pub mod transport;
pub mod v2;
