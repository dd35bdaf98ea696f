//! WebAssembly policy plugins in the server (`docs/plugins.md` is the
//! operator's guide; `cairn-plugin-host` runs the components).
//!
//! # The replicated plugin set
//!
//! The plugins a cluster enforces are replicated state: a raft entry
//! (`PluginSetChange`, carrying the complete new set and the binaries the
//! cluster does not hold yet) replaces the set, and the apply loop stores
//! it in `meta` (`plugin/set`, binaries under `plugin/blob/<sha256>`), so a
//! member that restarts or installs a snapshot enforces the same set. Each
//! change that alters the set gets the next *version* and records the store
//! revision from which it judges writes (`first_revision`). A change names
//! the version it was computed from and is refused if the set moved on
//! (compare-and-set), so concurrent deploys never lose one another.
//!
//! # Judging writes before they are proposed
//!
//! The member that receives a write asks the plugins *before* proposing it
//! ([`gate`]): a denial never enters the raft log. The proposal carries a
//! `PluginStamp`: the set version it was judged under and, for a txn, the
//! branches the judgement assumed. The apply loop refuses an entry whose
//! stamp is not the current version, or whose txn would take other
//! branches ([`Enforcer::refuse_stale`]); the proposer then judges it again
//! under the new set and re-proposes. So the verdict changes at exactly one
//! raft index on every member: every write with a mod revision below a
//! set's `first_revision` was judged by the previous set, every write at or
//! above it by the new one. A cluster that never deployed a plugin is at
//! version 0 and its writes carry no stamp.
//!
//! # Where the pieces are
//!
//! - `model`: declarations (config file, admin API), limits, records.
//! - `set`: the set in memory and in `meta`, applying changes, loading the
//!   components in the background.
//! - `judge`: what a write asks of which plugins; the authenticate and
//!   authorize hooks for the auth layer.
//! - `gate`: `EtcdServer::propose_write` (judge, stamp, propose, re-judge)
//!   and the v2 write path.
//! - `config`: `[plugins]` in `cairn.toml` and live reload.
//! - `admin`: the admin API under `/cairn/v1/plugins`; `cli`: `cairn plugin`.
//! - `dryrun`: a candidate against the keyspace at one revision.
//! - `metrics`: `cairn_plugin_*`.

pub mod config;
pub(crate) mod dryrun;
pub(crate) mod gate;
pub(crate) mod judge;
pub mod metrics;
pub mod model;
pub(crate) mod set;

#[cfg(test)]
mod tests;

pub use gate::{proposal_limit, v2_error};
pub use judge::AuthDecision;
pub use set::{ActivePlugin, ActiveSet, LoadStatus, SetOutcome};

use crate::storage::mvcc::Store;
use arc_swap::ArcSwap;
use cairn_plugin_host::{HostOptions, PluginHost};
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};

/// A plugin engine with the server's limits.
fn new_host() -> Result<PluginHost, String> {
    PluginHost::new(HostOptions {
        epoch_tick: model::EPOCH_TICK,
        max_memory_bytes: model::MAX_MEMORY_BYTES,
        max_deadline: model::MAX_DEADLINE,
        max_wasm_bytes: model::MAX_PLUGIN_BYTES,
        ..HostOptions::default()
    })
    .map_err(|e| e.to_string())
}

/// Compiles and checks a candidate on `host`: the same load every member
/// does (see `Enforcer::load_candidate`).
fn load_with(
    host: &PluginHost,
    name: &str,
    wasm: bytes::Bytes,
    limits: cairn_plugin_host::Limits,
    config: Vec<(String, String)>,
) -> Result<Arc<cairn_plugin_host::LoadedPlugin>, String> {
    let mut spec = cairn_plugin_host::PluginSpec::new(
        name,
        cairn_plugin_host::WasmSource::Bytes(wasm.to_vec().into()),
    );
    spec.limits = limits;
    spec.config = config;
    host.load(spec).map_err(|e| e.to_string())
}

/// The server's plugin state: the host that runs components, the active set
/// (what proposers judge with, swapped whole by the apply loop), and this
/// member's own `[plugins]` declaration.
pub struct Enforcer {
    store: Arc<Store>,
    host: OnceLock<Result<PluginHost, String>>,
    active: ArcSwap<ActiveSet>,
    /// Serializes writers of `active` (the apply loop; boot; snapshot install).
    writer: parking_lot::Mutex<()>,
    declared: parking_lot::Mutex<config::DeclaredState>,
    /// One config reconciliation at a time.
    reconciling: tokio::sync::Mutex<()>,
    /// `<data-dir>/member`: where this member remembers the last declaration
    /// it pushed or saw applied (see `config`).
    member_dir: PathBuf,
}

impl Enforcer {
    /// The host, created on first use: a cluster without plugins never pays
    /// for an engine (or its address-space reservations).
    pub fn host(&self) -> Result<PluginHost, String> {
        self.host.get_or_init(new_host).clone()
    }

    /// The set proposers judge with.
    pub fn current(&self) -> Arc<ActiveSet> {
        self.active.load_full()
    }

    /// The version of the active set (0: no plugin set was ever deployed).
    pub fn version(&self) -> u64 {
        self.active.load().version
    }
}
