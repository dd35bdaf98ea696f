//! What can go wrong with a plugin, always naming the plugin.

use std::path::PathBuf;
use std::time::Duration;

use crate::Hook;

/// An error from loading or calling a plugin.
///
/// Every variant carries the plugin's name and its `Display` starts with it,
/// so a message that reaches a log or a client always says which plugin
/// failed and why. None of these errors leaves anything behind: each call
/// runs in a fresh instance, so the next call starts clean.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PluginError {
    /// The spec is unusable before we even look at the code: empty name,
    /// limits above what the host allows, a binary over the size limit.
    #[error("plugin `{plugin}`: invalid spec: {detail}")]
    InvalidSpec { plugin: String, detail: String },

    /// The wasm file could not be read.
    #[error("plugin `{plugin}`: cannot read {}: {source}", path.display())]
    Read {
        plugin: String,
        path: PathBuf,
        source: std::io::Error,
    },

    /// The bytes are not a valid component, or Cranelift refused them.
    #[error("plugin `{plugin}`: does not compile: {detail}")]
    Compile { plugin: String, detail: String },

    /// The component is valid WebAssembly but not a Cairn plugin: it exports
    /// none of the hooks, a hook with the wrong types, or imports something
    /// the host does not provide (files, sockets, clocks, other packages).
    #[error("plugin `{plugin}`: not a usable Cairn plugin: {detail}")]
    BadInterface { plugin: String, detail: String },

    /// The plugin was asked for a hook it does not export.
    #[error("plugin `{plugin}` does not implement the {hook} hook")]
    MissingHook { plugin: String, hook: Hook },

    /// The plugin trapped (`unreachable`, a Rust panic, an out-of-bounds
    /// access, `exit`, exceeding a host-call budget, ...).
    #[error("plugin `{plugin}` trapped: {message}")]
    Trap { plugin: String, message: String },

    /// The call ran past the plugin's deadline and was interrupted.
    #[error("plugin `{plugin}` exceeded its deadline of {} ms", deadline.as_millis())]
    Timeout { plugin: String, deadline: Duration },

    /// The plugin tried to grow its memory past its limit (and then failed
    /// because of it).
    #[error("plugin `{plugin}` ran out of memory (limit {limit} bytes)")]
    OutOfMemory { plugin: String, limit: usize },

    /// The plugin answered, but with something Cairn cannot use (for example
    /// an empty principal).
    #[error("plugin `{plugin}` returned an invalid result: {detail}")]
    InvalidResult { plugin: String, detail: String },

    /// All instance slots of the host were in use for longer than the
    /// plugin's deadline.
    #[error("plugin `{plugin}`: host busy, no instance slot free within {} ms", waited.as_millis())]
    Busy { plugin: String, waited: Duration },

    /// Instantiation failed for a reason other than the ones above.
    #[error("plugin `{plugin}`: cannot instantiate: {detail}")]
    Instantiate { plugin: String, detail: String },
}

impl PluginError {
    /// The name of the plugin this error is about.
    pub fn plugin(&self) -> &str {
        match self {
            PluginError::InvalidSpec { plugin, .. }
            | PluginError::Read { plugin, .. }
            | PluginError::Compile { plugin, .. }
            | PluginError::BadInterface { plugin, .. }
            | PluginError::MissingHook { plugin, .. }
            | PluginError::Trap { plugin, .. }
            | PluginError::Timeout { plugin, .. }
            | PluginError::OutOfMemory { plugin, .. }
            | PluginError::InvalidResult { plugin, .. }
            | PluginError::Busy { plugin, .. }
            | PluginError::Instantiate { plugin, .. } => plugin,
        }
    }

    /// A short, stable label for metrics and structured logs.
    pub fn kind(&self) -> &'static str {
        match self {
            PluginError::InvalidSpec { .. } => "invalid_spec",
            PluginError::Read { .. } => "read",
            PluginError::Compile { .. } => "compile",
            PluginError::BadInterface { .. } => "bad_interface",
            PluginError::MissingHook { .. } => "missing_hook",
            PluginError::Trap { .. } => "trap",
            PluginError::Timeout { .. } => "timeout",
            PluginError::OutOfMemory { .. } => "out_of_memory",
            PluginError::InvalidResult { .. } => "invalid_result",
            PluginError::Busy { .. } => "busy",
            PluginError::Instantiate { .. } => "instantiate",
        }
    }

    /// True for errors raised while loading (the plugin never ran a hook);
    /// false for errors of a call.
    pub fn is_load_error(&self) -> bool {
        matches!(
            self,
            PluginError::InvalidSpec { .. }
                | PluginError::Read { .. }
                | PluginError::Compile { .. }
                | PluginError::BadInterface { .. }
        )
    }
}
