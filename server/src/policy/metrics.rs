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

// Constructing a metric fails only on an invalid name, label or bucket
// list, all constants here: a programming error every test touching the
// metrics would hit at once, never a request's doing.
#[allow(clippy::expect_used)]
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

/// One plugin's figures on this member since it started, all hooks (and
/// modes and error kinds) together: what the console's plugins page shows
/// per member.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct PluginTotals {
    pub calls: u64,
    pub denials: u64,
    pub errors: u64,
    /// Observations and their sum in the latency histogram.
    pub timed_calls: u64,
    pub time_sum_seconds: f64,
}

impl PluginTotals {
    /// The mean call time; `None` before the first call.
    pub fn mean_latency_seconds(&self) -> Option<f64> {
        (self.timed_calls > 0).then(|| self.time_sum_seconds / self.timed_calls as f64)
    }
}

/// Adds one labelled series of a vector to a plugin's totals.
type AddTo = fn(&mut PluginTotals, &prometheus::proto::Metric);

/// Every plugin's totals, by name. Reads the metric vectors (a few
/// hundred series at most: `MAX_PLUGINS` names times hooks and kinds), so
/// it is for pages and probes, not for the data path.
pub fn totals() -> std::collections::HashMap<String, PluginTotals> {
    use prometheus::core::Collector;
    let mut out: std::collections::HashMap<String, PluginTotals> = Default::default();
    let m = &*PLUGIN_METRICS;
    let vectors: [(&dyn Collector, AddTo); 4] = [
        (&m.calls, |t, m| {
            t.calls += m.get_counter().get_value() as u64
        }),
        (&m.denials, |t, m| {
            t.denials += m.get_counter().get_value() as u64
        }),
        (&m.errors, |t, m| {
            t.errors += m.get_counter().get_value() as u64
        }),
        (&m.latency, |t, m| {
            let h = m.get_histogram();
            t.timed_calls += h.get_sample_count();
            t.time_sum_seconds += h.get_sample_sum();
        }),
    ];
    for (c, add) in vectors {
        for family in c.collect() {
            for metric in family.get_metric() {
                let Some(plugin) = metric.get_label().iter().find(|l| l.name() == "plugin") else {
                    continue;
                };
                add(out.entry(plugin.value().to_string()).or_default(), metric);
            }
        }
    }
    out
}
