//! Logging: `tracing` everywhere, with raft-rs's `slog` records bridged in.
//! The level can change at runtime (config reload); the format
//! (`--logger`, see `format`) and where the lines go (`--log-outputs`, see
//! `sinks`) are fixed at startup; log files are reopened on SIGUSR1.

pub mod format;
pub mod sinks;

pub use format::Style;
pub use sinks::{OpenError, Outputs};

use std::fmt::Write as _;
use std::sync::{Arc, OnceLock};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Registry, reload};

static LEVEL: OnceLock<reload::Handle<EnvFilter, Registry>> = OnceLock::new();

/// The outputs of the installed subscriber, for [`reopen_files`].
static SINKS: OnceLock<Arc<sinks::Sinks>> = OnceLock::new();

/// Cairn's own log targets, the ones `--log-level` sets (raft-rs's records
/// arrive under `raft`).
const OWN_TARGETS: &[&str] = &["cairn", "cairn_config", "cairn_plugin_host", "raft"];

/// Dependencies that log a lot even at info.
const CHATTY_TARGETS: &[&str] = &[
    "h2",
    "hyper",
    "hyper_util",
    "tower",
    "fjall",
    "lsm_tree",
    "notify",
    "cranelift_codegen",
    "wasmtime",
    "wasmtime_cranelift",
];

fn filter_for(level: &str) -> EnvFilter {
    let directive = match level {
        "debug" => "debug",
        "warn" => "warn",
        "error" | "panic" | "fatal" => "error",
        _ => "info",
    };
    // `--log-level debug` is about Cairn: third-party crates stay at info
    // (one plugin compile logged ~15,000 Cranelift lines at debug), and
    // the chattiest at warn. `CAIRN_LOG` can still ask for any of them.
    let others = if directive == "debug" {
        "info"
    } else {
        directive
    };
    let own: Vec<String> = OWN_TARGETS
        .iter()
        .map(|t| format!("{t}={directive}"))
        .collect();
    let quiet = if directive == "error" {
        "error"
    } else {
        "warn"
    };
    let chatty: Vec<String> = CHATTY_TARGETS
        .iter()
        .map(|t| format!("{t}={quiet}"))
        .collect();
    EnvFilter::new(format!("{others},{},{}", own.join(","), chatty.join(",")))
}

/// Installs the global subscriber. `level` is etcd's log level name;
/// `CAIRN_LOG` (an `EnvFilter` directive) overrides it for debugging. Fails
/// only when a log file cannot be opened.
pub fn init(level: &str, style: Style, outputs: &Outputs) -> Result<(), OpenError> {
    let sinks = Arc::new(sinks::Sinks::open(outputs)?);
    let filter = EnvFilter::try_from_env("CAIRN_LOG").unwrap_or_else(|_| filter_for(level));
    let (filter, handle) = reload::Layer::new(filter);
    let fmt = tracing_subscriber::fmt::layer()
        .with_writer(sinks::SinkWriter(Arc::clone(&sinks)))
        .with_ansi(false)
        .event_format(format::EtcdFormat(style));
    if tracing_subscriber::registry()
        .with(filter)
        .with(fmt)
        .try_init()
        .is_ok()
    {
        let _ = LEVEL.set(handle);
        let _ = SINKS.set(sinks);
    }
    Ok(())
}

/// Reopens the log files by their paths (logrotate renamed them), logging
/// the outcome. Files that cannot be reopened keep their old handle.
pub fn reopen_files() {
    let Some(sinks) = SINKS.get() else { return };
    match sinks.reopen() {
        Ok(0) => {}
        Ok(n) => tracing::info!(files = n, "reopened log files"),
        Err(errors) => {
            for e in errors {
                tracing::error!("{e}; still writing to the old file");
            }
        }
    }
}

/// Reopens the log files on every SIGUSR1, for as long as the process runs.
/// (SIGHUP is configuration reload.)
pub async fn reopen_on_sigusr1() {
    use tokio::signal::unix::{SignalKind, signal};
    let Ok(mut usr1) = signal(SignalKind::user_defined1()) else {
        tracing::warn!("cannot listen for SIGUSR1; log files will not be reopened");
        return;
    };
    while usr1.recv().await.is_some() {
        reopen_files();
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

/// The most of one raft record's key-values that gets rendered: a debug
/// record can carry a whole append message, megabytes of entry data.
const RAFT_RECORD_MAX_BYTES: usize = 2048;

/// Collects a record's key-values up to `RAFT_RECORD_MAX_BYTES`; past it,
/// writes fail, which makes `Debug` implementations stop early instead of
/// rendering the rest.
struct KvCollector(String);

impl std::fmt::Write for KvCollector {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        let room = RAFT_RECORD_MAX_BYTES.saturating_sub(self.0.len());
        if s.len() <= room {
            self.0.push_str(s);
            return Ok(());
        }
        let mut cut = room;
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        self.0.push_str(&s[..cut]);
        Err(std::fmt::Error)
    }
}

impl slog::Serializer for KvCollector {
    fn emit_arguments(&mut self, key: slog::Key, val: &std::fmt::Arguments<'_>) -> slog::Result {
        if self.0.len() >= RAFT_RECORD_MAX_BYTES {
            return Ok(());
        }
        if write!(self, " {key}={val}").is_err() {
            self.0.push('…');
        }
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
        // Formatting comes last: raft-rs attaches whole messages (entries
        // of up to --max-request-bytes) to its debug records, and
        // rendering those when nobody reads them stalled the raft thread
        // for most of a second per large write, long enough to lose
        // leadership.
        if !raft_level_enabled(record.level()) {
            return Ok(());
        }
        let mut kv = KvCollector(String::new());
        let _ = slog::KV::serialize(&record.kv(), record, &mut kv);
        let _ = slog::KV::serialize(values, record, &mut kv);
        let msg = format!("{}{}", record.msg(), kv.0);
        // zap's caller for raft-rs's own line: `raft/raft.rs:706`, as etcd's
        // `raft/raft.go:706`.
        let file = record.file().rsplit('/').next().unwrap_or_default();
        let caller = format!("raft/{file}:{}", record.line());
        match record.level() {
            slog::Level::Critical | slog::Level::Error => {
                tracing::error!(target: "raft", caller = caller.as_str(), "{msg}")
            }
            slog::Level::Warning => {
                tracing::warn!(target: "raft", caller = caller.as_str(), "{msg}")
            }
            slog::Level::Info => tracing::info!(target: "raft", caller = caller.as_str(), "{msg}"),
            slog::Level::Debug => {
                tracing::debug!(target: "raft", caller = caller.as_str(), "{msg}")
            }
            slog::Level::Trace => {
                tracing::trace!(target: "raft", caller = caller.as_str(), "{msg}")
            }
        }
        Ok(())
    }
}

fn raft_level_enabled(level: slog::Level) -> bool {
    match level {
        slog::Level::Critical | slog::Level::Error => {
            tracing::enabled!(target: "raft", tracing::Level::ERROR)
        }
        slog::Level::Warning => tracing::enabled!(target: "raft", tracing::Level::WARN),
        slog::Level::Info => tracing::enabled!(target: "raft", tracing::Level::INFO),
        slog::Level::Debug => tracing::enabled!(target: "raft", tracing::Level::DEBUG),
        slog::Level::Trace => tracing::enabled!(target: "raft", tracing::Level::TRACE),
    }
}

pub fn raft_logger() -> slog::Logger {
    slog::Logger::root(SlogToTracing, slog::o!())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A value that counts how often it is rendered.
    struct Counted<'a>(&'a std::sync::atomic::AtomicUsize);

    impl std::fmt::Display for Counted<'_> {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            self.0.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            f.write_str(&"x".repeat(10 * RAFT_RECORD_MAX_BYTES))
        }
    }

    #[test]
    fn raft_records_below_the_level_are_never_rendered() {
        let rendered = std::sync::atomic::AtomicUsize::new(0);
        let subscriber = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::INFO)
            .with_writer(std::io::sink)
            .finish();
        tracing::subscriber::with_default(subscriber, || {
            let log = raft_logger();
            slog::debug!(log, "sending"; "msg" => %Counted(&rendered));
            assert_eq!(rendered.load(std::sync::atomic::Ordering::Relaxed), 0);
            slog::info!(log, "sending"; "msg" => %Counted(&rendered));
            assert_eq!(rendered.load(std::sync::atomic::Ordering::Relaxed), 1);
        });
    }

    #[test]
    fn debug_is_for_cairn_not_its_dependencies() {
        let subscriber = tracing_subscriber::registry().with(filter_for("debug"));
        tracing::subscriber::with_default(subscriber, || {
            assert!(tracing::enabled!(target: "cairn::api::kv", tracing::Level::DEBUG));
            assert!(tracing::enabled!(target: "raft", tracing::Level::DEBUG));
            assert!(tracing::enabled!(target: "cairn_plugin_host", tracing::Level::DEBUG));
            assert!(!tracing::enabled!(target: "cranelift_codegen::isa", tracing::Level::DEBUG));
            assert!(!tracing::enabled!(target: "wasmtime::runtime", tracing::Level::INFO));
            assert!(tracing::enabled!(target: "tokio_util", tracing::Level::INFO));
            assert!(!tracing::enabled!(target: "tokio_util", tracing::Level::DEBUG));
        });
        let subscriber = tracing_subscriber::registry().with(filter_for("error"));
        tracing::subscriber::with_default(subscriber, || {
            assert!(!tracing::enabled!(target: "h2", tracing::Level::WARN));
            assert!(!tracing::enabled!(target: "cairn", tracing::Level::WARN));
        });
    }

    #[test]
    fn a_raft_record_is_cut_at_its_limit() {
        let mut kv = KvCollector(String::new());
        let big = "é".repeat(RAFT_RECORD_MAX_BYTES);
        let _ = slog::Serializer::emit_arguments(&mut kv, "a", &format_args!("{big}"));
        let _ = slog::Serializer::emit_arguments(&mut kv, "b", &format_args!("more"));
        assert!(
            kv.0.len() <= RAFT_RECORD_MAX_BYTES + "…".len(),
            "{}",
            kv.0.len()
        );
        assert!(kv.0.ends_with('…'));
        assert!(!kv.0.contains(" b="));
    }
}
