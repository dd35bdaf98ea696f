//! Per-call store state: what a plugin's host calls can reach, and the
//! limits that hold while it runs.

use std::sync::{Arc, Mutex, PoisonError};

use wasmtime::ResourceLimiter;
use wasmtime::component::ResourceTable;
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamResult};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

use crate::bindings::cairn::policy::host::{self, LogLevel};
use crate::bindings::cairn::policy::types;
use crate::{KeyReader, PluginShared};

/// Log lines a single call may write; later lines are dropped and counted.
pub(crate) const MAX_LOG_LINES_PER_CALL: u32 = 64;
/// Longest log line kept (bytes); longer lines are cut at a char boundary.
pub(crate) const MAX_LOG_LINE_BYTES: usize = 4096;
/// `host.get` calls a single call may make before it is trapped.
pub(crate) const MAX_GETS_PER_CALL: u32 = 256;
/// Largest buffer `wasi:random` hands out in one call. WASI's default is
/// 64 MiB, allocated on the host's heap outside the plugin's memory limit.
pub(crate) const MAX_RANDOM_BYTES: u64 = 64 * 1024;

/// The data of one call's `Store`. Built fresh for every call and dropped
/// with the store, so nothing a plugin does survives into the next call.
pub(crate) struct CallState {
    pub(crate) plugin: Arc<PluginShared>,
    pub(crate) reader: Arc<dyn KeyReader>,
    pub(crate) limiter: Limiter,
    /// WASI and the stderr it writes to are built on the call's first use
    /// of a WASI function. Most calls make none, and building a `WasiCtx`
    /// (clock reads, a seeded generator, a dozen boxed streams) cost more
    /// than a trivial validator's whole call.
    wasi: Option<(WasiCtx, StderrCapture)>,
    table: ResourceTable,
    log_lines: u32,
    dropped_log_lines: u32,
    gets: u32,
}

impl CallState {
    pub(crate) fn new(plugin: Arc<PluginShared>, reader: Arc<dyn KeyReader>) -> Self {
        let limiter = Limiter::new(plugin.limits.memory_bytes);
        CallState {
            plugin,
            reader,
            limiter,
            wasi: None,
            table: ResourceTable::new(),
            log_lines: 0,
            dropped_log_lines: 0,
            gets: 0,
        }
    }

    /// What the plugin wrote to stderr during this call, trimmed.
    pub(crate) fn stderr_text(&self) -> String {
        self.wasi
            .as_ref()
            .map_or_else(String::new, |(_, stderr)| stderr.text())
    }

    /// Reports log lines the budget swallowed (once, at the end of a call).
    pub(crate) fn finish(&self) {
        if self.dropped_log_lines > 0 {
            tracing::warn!(
                target: "cairn_plugin",
                plugin = %self.plugin.name,
                dropped = self.dropped_log_lines,
                "plugin exceeded its log budget of {MAX_LOG_LINES_PER_CALL} lines per call"
            );
        }
    }
}

/// WASI with no capabilities: no preopened directories, no environment, no
/// arguments, stdin empty, stdout discarded, stderr kept (bounded) for trap
/// messages, no network. The clocks
/// and filesystem interfaces are not even linked (see `host.rs`). Random
/// numbers come from a fixed cyclic pattern so two runs of the same request
/// behave alike; plugins must not use them for secrets.
fn capability_free_wasi(stderr: StderrCapture) -> WasiCtx {
    let pattern: Vec<u8> = (0..=255u8)
        .map(|b| b.wrapping_mul(167).wrapping_add(13))
        .collect();
    WasiCtx::builder()
        .secure_random(wasmtime_wasi::Deterministic::new(pattern.clone()))
        .insecure_random(wasmtime_wasi::Deterministic::new(pattern))
        .insecure_random_seed(0x6361_6972_6e2d_706f_6c69_6379_2d73_6565)
        .max_random_size(MAX_RANDOM_BYTES)
        .stderr(stderr)
        .build()
}

impl WasiView for CallState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        let (wasi, _) = self.wasi.get_or_insert_with(|| {
            let stderr = StderrCapture::default();
            (capability_free_wasi(stderr.clone()), stderr)
        });
        WasiCtxView {
            ctx: wasi,
            table: &mut self.table,
        }
    }
}

impl types::Host for CallState {}

impl host::Host for CallState {
    fn log(&mut self, level: LogLevel, message: String) {
        if self.log_lines >= MAX_LOG_LINES_PER_CALL {
            self.dropped_log_lines = self.dropped_log_lines.saturating_add(1);
            return;
        }
        self.log_lines += 1;
        let message = truncate_utf8(&message, MAX_LOG_LINE_BYTES);
        let plugin = &*self.plugin.name;
        // `tracing` levels are static per call site, hence one arm per level.
        match level {
            LogLevel::Trace => tracing::trace!(target: "cairn_plugin", plugin, "{message}"),
            LogLevel::Debug => tracing::debug!(target: "cairn_plugin", plugin, "{message}"),
            LogLevel::Info => tracing::info!(target: "cairn_plugin", plugin, "{message}"),
            LogLevel::Warn => tracing::warn!(target: "cairn_plugin", plugin, "{message}"),
            LogLevel::Error => tracing::error!(target: "cairn_plugin", plugin, "{message}"),
        }
    }

    fn get(&mut self, key: Vec<u8>) -> wasmtime::Result<Option<Vec<u8>>> {
        if self.gets >= MAX_GETS_PER_CALL {
            return Err(wasmtime::format_err!(
                "plugin exceeded its budget of {MAX_GETS_PER_CALL} host.get calls per call"
            ));
        }
        self.gets += 1;
        Ok(self.reader.get(&key))
    }

    fn config(&mut self) -> Vec<(String, String)> {
        self.plugin.config.to_vec()
    }
}

/// Cuts `s` to at most `max` bytes without splitting a character.
pub(crate) fn truncate_utf8(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// Enforces the plugin's memory limit and remembers whether it had to, so a
/// trap that follows a refused `memory.grow` (Rust aborts on allocation
/// failure) is reported as out-of-memory rather than as a generic trap.
pub(crate) struct Limiter {
    memory_bytes: usize,
    pub(crate) hit_memory_limit: bool,
}

impl Limiter {
    fn new(memory_bytes: usize) -> Self {
        Limiter {
            memory_bytes,
            hit_memory_limit: false,
        }
    }
}

/// Most tables a component may have elements in, summed over its instances
/// (each element is a pointer on the host).
const MAX_TABLE_ELEMENTS: usize = 100_000;

impl ResourceLimiter for Limiter {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > self.memory_bytes {
            self.hit_memory_limit = true;
            // Refuse the growth (`memory.grow` returns -1) rather than trap:
            // a plugin that can cope with a failed allocation may still
            // answer.
            return Ok(false);
        }
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired <= MAX_TABLE_ELEMENTS)
    }

    // Counts per store. A Rust component built for wasm32-wasip2 has a
    // handful of core instances (the program, shims, adapters); these leave
    // room for that and nothing like a fork bomb of instances.
    fn instances(&self) -> usize {
        32
    }

    fn tables(&self) -> usize {
        32
    }

    fn memories(&self) -> usize {
        8
    }
}

/// The first bytes a plugin writes to stderr during one call. A Rust plugin
/// prints its panic message there just before it traps, so a trap error can
/// say *why*. Writes past the cap are accepted and dropped: running out of
/// room must not turn into an error the plugin then has to handle.
#[derive(Clone, Default)]
pub(crate) struct StderrCapture(Arc<Mutex<Vec<u8>>>);

/// Bytes of stderr kept per call.
const STDERR_CAPTURE_BYTES: usize = 2048;

impl StderrCapture {
    /// What was captured, trimmed, as text (lossily: it is for humans).
    pub(crate) fn text(&self) -> String {
        let buf = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        String::from_utf8_lossy(&buf).trim().to_owned()
    }
}

impl IsTerminal for StderrCapture {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for StderrCapture {
    fn async_stream(&self) -> Box<dyn tokio::io::AsyncWrite + Send + Sync> {
        // Only used by WASI preview 3 and async embeddings; we are neither.
        Box::new(tokio::io::sink())
    }

    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(self.clone())
    }
}

#[wasmtime_wasi::async_trait]
impl Pollable for StderrCapture {
    async fn ready(&mut self) {}
}

impl OutputStream for StderrCapture {
    fn write(&mut self, bytes: bytes::Bytes) -> StreamResult<()> {
        let mut buf = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        let room = STDERR_CAPTURE_BYTES.saturating_sub(buf.len());
        buf.extend_from_slice(&bytes[..bytes.len().min(room)]);
        Ok(())
    }

    fn flush(&mut self) -> StreamResult<()> {
        Ok(())
    }

    fn check_write(&mut self) -> StreamResult<usize> {
        Ok(64 * 1024)
    }
}
