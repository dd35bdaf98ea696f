//! Logging: `tracing` everywhere, with raft-rs's `slog` records bridged in.
//! The level can change at runtime (config reload).

use std::fmt::Write as _;
use std::sync::OnceLock;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Registry, reload};

static LEVEL: OnceLock<reload::Handle<EnvFilter, Registry>> = OnceLock::new();

fn filter_for(level: &str) -> EnvFilter {
    let directive = match level {
        "debug" => "debug",
        "warn" => "warn",
        "error" | "panic" | "fatal" => "error",
        _ => "info",
    };
    // Dependencies are chatty at debug; keep them at warn.
    EnvFilter::new(format!(
        "{directive},h2=warn,hyper=warn,hyper_util=warn,tower=warn,fjall=warn,lsm_tree=warn,notify=warn"
    ))
}

/// Installs the global subscriber. `level` is etcd's log level name;
/// `CAIRN_LOG` (an `EnvFilter` directive) overrides it for debugging.
pub fn init(level: &str) {
    let filter = EnvFilter::try_from_env("CAIRN_LOG").unwrap_or_else(|_| filter_for(level));
    let (filter, handle) = reload::Layer::new(filter);
    let fmt = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_target(true);
    if tracing_subscriber::registry()
        .with(filter)
        .with(fmt)
        .try_init()
        .is_ok()
    {
        let _ = LEVEL.set(handle);
    }
}

/// Changes the log level of the running process.
pub fn set_level(level: &str) -> bool {
    if std::env::var_os("CAIRN_LOG").is_some() {
        return false;
    }
    LEVEL
        .get()
        .is_some_and(|h| h.reload(filter_for(level)).is_ok())
}

/// A slog drain that forwards raft-rs's log records to `tracing`.
pub struct SlogToTracing;

struct KvCollector(String);

impl slog::Serializer for KvCollector {
    fn emit_arguments(&mut self, key: slog::Key, val: &std::fmt::Arguments<'_>) -> slog::Result {
        let _ = write!(self.0, " {key}={val}");
        Ok(())
    }
}

impl slog::Drain for SlogToTracing {
    type Ok = ();
    type Err = slog::Never;

    fn log(
        &self,
        record: &slog::Record<'_>,
        values: &slog::OwnedKVList,
    ) -> Result<(), slog::Never> {
        let mut kv = KvCollector(String::new());
        let _ = slog::KV::serialize(&record.kv(), record, &mut kv);
        let _ = slog::KV::serialize(values, record, &mut kv);
        let msg = format!("{}{}", record.msg(), kv.0);
        match record.level() {
            slog::Level::Critical | slog::Level::Error => tracing::error!(target: "raft", "{msg}"),
            slog::Level::Warning => tracing::warn!(target: "raft", "{msg}"),
            slog::Level::Info => tracing::info!(target: "raft", "{msg}"),
            slog::Level::Debug => tracing::debug!(target: "raft", "{msg}"),
            slog::Level::Trace => tracing::trace!(target: "raft", "{msg}"),
        }
        Ok(())
    }
}

pub fn raft_logger() -> slog::Logger {
    slog::Logger::root(SlogToTracing, slog::o!())
}
