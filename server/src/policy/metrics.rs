//! Per-plugin metrics, registered in the server's registry (so `/metrics`
//! shows them next to everything else).
//!
//! Label values are plugin names (at most `MAX_PLUGINS` per set, checked
//! names), hooks and small fixed vocabularies, so cardinality stays bounded.

use prometheus::{HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, Opts};
use std::sync::LazyLock;
use std::time::Duration;

pub struct PluginMetrics {
    /// Calls per plugin and hook (`validator`, `authenticator`, `authorizer`).
    pub calls: IntCounterVec,
    /// Denials (and authenticator refusals); `mode` says whether they were
    /// enforced (`enforce`) or only recorded (`audit`).
    pub denials: IntCounterVec,
    /// Calls that failed (trap, timeout, out of memory, ...), by kind.
    pub errors: IntCounterVec,
    /// Wall-clock time per call, instantiation included.
    pub latency: HistogramVec,
    /// The version of the plugin set this member enforces.
    pub set_version: IntGauge,
    /// 1 when this member's `[plugins]` declaration is the cluster's
    /// config-declared set, 0 when they differ (or the declaration fails
    /// to load).
    pub config_in_sync: IntGauge,
    /// Writes judged again because the plugin set changed (or a txn's
    /// branch did) between judging and applying.
    pub rejudged: IntCounter,
}

fn reg<T: prometheus::core::Collector + Clone + 'static>(c: T) -> T {
    // Names are static and unique; registering twice cannot happen (this is
    // a process-wide `LazyLock`).
    let _ = crate::metrics::METRICS
        .registry
        .register(Box::new(c.clone()));
    c
}

pub static PLUGIN_METRICS: LazyLock<PluginMetrics> = LazyLock::new(|| {
    let latency_buckets = prometheus::exponential_buckets(0.000_01, 2.0, 18).unwrap_or_default();
    PluginMetrics {
        calls: reg(IntCounterVec::new(
            Opts::new("cairn_plugin_calls_total", "Policy plugin calls."),
            &["plugin", "hook"],
        )
        .expect("metric")),
        denials: reg(IntCounterVec::new(
            Opts::new(
                "cairn_plugin_denials_total",
                "Requests a policy plugin denied (mode=audit: recorded, not enforced).",
            ),
            &["plugin", "hook", "mode"],
        )
        .expect("metric")),
        errors: reg(IntCounterVec::new(
            Opts::new(
                "cairn_plugin_errors_total",
                "Policy plugin calls that failed, by kind (trap, timeout, out_of_memory, ...).",
            ),
            &["plugin", "hook", "kind"],
        )
        .expect("metric")),
        latency: reg(HistogramVec::new(
            HistogramOpts::new(
                "cairn_plugin_call_duration_seconds",
                "Duration of one policy plugin call, instantiation included.",
            )
            .buckets(latency_buckets),
            &["plugin", "hook"],
        )
        .expect("metric")),
        set_version: reg(IntGauge::new(
            "cairn_plugin_set_version",
            "Version of the replicated plugin set this member enforces (0: none ever deployed).",
        )
        .expect("metric")),
        config_in_sync: reg(IntGauge::new(
            "cairn_plugin_config_in_sync",
            "1 if this member's [plugins] declaration matches the cluster's config-declared plugin set.",
        )
        .expect("metric")),
        rejudged: reg(IntCounter::new(
            "cairn_plugin_rejudged_total",
            "Writes judged again because the plugin set (or a txn's branch) changed before they applied.",
        )
        .expect("metric")),
    }
});

/// One plugin's call counter and latency histogram for one hook, looked up
/// once (a labelled lookup per call would hash and lock on the hot path).
pub struct CallMetrics {
    calls: prometheus::IntCounter,
    latency: prometheus::Histogram,
}

impl CallMetrics {
    pub fn new(plugin: &str, hook: &str) -> CallMetrics {
        CallMetrics {
            calls: PLUGIN_METRICS.calls.with_label_values(&[plugin, hook]),
            latency: PLUGIN_METRICS.latency.with_label_values(&[plugin, hook]),
        }
    }

    pub fn observe(&self, took: Duration) {
        self.calls.inc();
        self.latency.observe(took.as_secs_f64());
    }
}
