//! Cairn: an etcd-compatible, Raft-replicated key-value store.
//!
//! Layers (see `docs/architecture.md`, checked by `cargo xtask layers`):
//! `boot` wires `api` (handlers) → `etcdserver` (write pipeline, raft
//! node, apply loop) → `policy`, `transport`, `state` → `storage` and the
//! other leaves.

// A panic on input takes a member down: errors are values here. Tests
// may unwrap.
#![deny(clippy::unwrap_used)]
#![cfg_attr(test, allow(clippy::unwrap_used))]
// Unit tests may be long scenarios; production code is still held to the
// limit, as the non-test build of the crate is linted too.
#![cfg_attr(test, allow(clippy::too_many_lines))]

#[cfg_attr(not(test), warn(clippy::expect_used, clippy::indexing_slicing))]
pub mod api;
pub mod auth;
pub mod boot;
pub mod cli;
pub mod crash;
pub mod discovery;
pub mod error;
pub mod etcd_datadir;
#[cfg_attr(not(test), warn(clippy::expect_used, clippy::indexing_slicing))]
pub mod etcdserver;
pub mod files;
#[doc(hidden)]
pub mod fuzz_api;
pub mod ids;
pub mod logging;
pub mod metrics;
pub mod net;
pub mod pb;
#[cfg_attr(not(test), warn(clippy::expect_used, clippy::indexing_slicing))]
pub mod policy;
pub mod raftwire;
#[cfg_attr(not(test), warn(clippy::expect_used, clippy::indexing_slicing))]
pub mod state;
pub mod storage;
pub mod tls;
pub mod transport;
#[cfg_attr(not(test), warn(clippy::expect_used, clippy::indexing_slicing))]
pub mod v2;
