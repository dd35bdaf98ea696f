//! Runs Cairn's WebAssembly policy plugins.
//!
//! A plugin is a WebAssembly *component* implementing one or more hooks of
//! the `cairn:policy@0.1.0` contract (`plugins/wit/policy.wit`):
//!
//! - a **validator** judges every write (put, delete-range, each write of a
//!   transaction) before it is proposed;
//! - an **authenticator** turns a credential (bearer token, password) into a
//!   principal, refuses it, or abstains;
//! - an **authorizer** allows or denies a principal's access to a key range.
//!
//! [`PluginHost`] owns the wasmtime engine (pooling allocator, epoch
//! interruption driven by a ticker thread) and compiles plugins;
//! [`PluginHost::load`] checks a component's interface and returns a
//! [`LoadedPlugin`], which is `Send + Sync` and cheap to call from many
//! threads: every call instantiates a fresh, isolated instance from a
//! pre-linked template, under the plugin's deadline and memory limit.
//!
//! Plugins reach nothing but the `host` interface (log, read a key through
//! the caller's [`KeyReader`], read their config) and a capability-free WASI
//! (no files, network, environment or clocks). A misbehaving plugin costs at
//! most its deadline and its memory limit and never affects other plugins or
//! later calls; [`FailurePolicy`] decides what its failure means for the
//! request.

mod bindings;
mod cache;
mod error;
mod host;
mod plugin;
mod policy;
mod state;

use std::collections::BTreeMap;
use std::sync::Arc;

pub use bindings::cairn::policy::types::{
    Access, AccessRequest, AuthOutcome, Credential, Operation, PasswordCredential, Verdict,
    WriteRequest,
};
pub use error::PluginError;
pub use host::{HostError, HostOptions, PluginHost};
pub use plugin::{Hook, Hooks, Limits, LoadedPlugin, PluginSpec, WasmSource};
pub use policy::{FailurePolicy, MAX_DENY_REASON_BYTES, denial_message};

/// The WIT package (and version) this host implements.
pub const WIT_PACKAGE: &str = "cairn:policy@0.1.0";

/// The WIT text of the contract, for tools that want to show or check it.
pub const WIT_SOURCE: &str = include_str!("../../wit/policy.wit");

/// Reads keys for a plugin's `host.get`, at the revision the current request
/// is judged at. The server implements this over its MVCC store; it must not
/// block for long (a plugin's deadline does not interrupt host code).
pub trait KeyReader: Send + Sync {
    /// The value of `key`, or `None` when it does not exist at that revision.
    fn get(&self, key: &[u8]) -> Option<Vec<u8>>;
}

/// A [`KeyReader`] over an empty keyspace.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoKeys;

impl KeyReader for NoKeys {
    fn get(&self, _key: &[u8]) -> Option<Vec<u8>> {
        None
    }
}

/// A fixed set of keys (tests, tools, dry runs over an exported keyspace).
impl KeyReader for BTreeMap<Vec<u8>, Vec<u8>> {
    fn get(&self, key: &[u8]) -> Option<Vec<u8>> {
        BTreeMap::get(self, key).cloned()
    }
}

/// What one loaded plugin shares with its calls.
pub(crate) struct PluginShared {
    pub(crate) name: Arc<str>,
    pub(crate) config: Arc<[(String, String)]>,
    pub(crate) limits: Limits,
}
