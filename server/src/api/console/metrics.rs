//! The metrics page: small charts of the last minutes to an hour, from an
//! in-process ring buffer — no Prometheus needed (it still scrapes
//! `/metrics`, untouched by this).
//!
//! A sampler task reads the process's own metric objects every
//! [`SAMPLE_EVERY`] into a ring of [`RING_SAMPLES`] (one hour); the page
//! turns consecutive samples into rates and, for histograms, into
//! percentiles of what was observed between them. Sampling is a few dozen
//! atomic loads: nothing on the data path waits for it. While
//! `--enable-ui` is off it samples nothing.

use super::Console;
use super::html::{self, Nav, esc};
use super::session::Session;
use crate::etcdserver::EtcdServer;
use crate::metrics::METRICS;
use axum::Extension;
use axum::extract::{Query, State};
use axum::response::Response;
use parking_lot::Mutex;
use prometheus::core::Collector;
use std::collections::{BTreeMap, VecDeque};
use std::fmt::Write as _;
use std::sync::Arc;
use std::time::Duration;

/// How often the sampler reads the metrics.
pub const SAMPLE_EVERY: Duration = Duration::from_secs(5);
/// Samples kept: one hour at `SAMPLE_EVERY`.
pub const RING_SAMPLES: usize = 720;
/// Chart size in SVG user units (it scales to the page's width).
const CHART_W: f64 = 600.0;
const CHART_H: f64 = 120.0;
/// Methods listed in the request-rate table.
const TOP_METHODS: usize = 8;

/// A histogram's cumulative bucket counts at one moment.
#[derive(Debug, Clone, Default)]
struct Hist {
    /// (upper bound, cumulative count), ascending.
    buckets: Vec<(f64, u64)>,
    count: u64,
}

impl Hist {
    fn of(c: &dyn Collector) -> Hist {
        // A histogram vector sums its label combinations.
        let mut h = Hist::default();
        for family in c.collect() {
            for m in family.get_metric() {
                let hist = m.get_histogram();
                h.count += hist.get_sample_count();
                for (i, b) in hist.get_bucket().iter().enumerate() {
                    match h.buckets.get_mut(i) {
                        Some(slot) => slot.1 += b.cumulative_count(),
                        None => h.buckets.push((b.upper_bound(), b.cumulative_count())),
                    }
                }
            }
        }
        h
    }

    /// The `q` quantile of what was observed between `earlier` and `self`
    /// (linear within a bucket, as Prometheus' `histogram_quantile`);
    /// `None` without observations.
    fn quantile_since(&self, earlier: &Hist, q: f64) -> Option<f64> {
        let total = self.count.checked_sub(earlier.count)?;
        if total == 0 || self.buckets.is_empty() {
            return None;
        }
        let rank = q * total as f64;
        let mut prev_bound = 0.0;
        let mut prev_count = 0.0;
        for (i, (bound, cum)) in self.buckets.iter().enumerate() {
            let before = earlier.buckets.get(i).map_or(0, |b| b.1);
            let delta = cum.saturating_sub(before) as f64;
            if delta >= rank {
                let within = (rank - prev_count) / (delta - prev_count).max(f64::MIN_POSITIVE);
                return Some(prev_bound + (bound - prev_bound) * within.clamp(0.0, 1.0));
            }
            prev_bound = *bound;
            prev_count = delta;
        }
        // Past the last bucket: say the last bound.
        Some(prev_bound)
    }
}

/// Everything the page charts, at one moment.
#[derive(Debug, Clone, Default)]
struct Sample {
    unix_secs: i64,
    /// Handled gRPC calls per `service/method`, cumulative.
    by_method: BTreeMap<String, u64>,
    grpc_latency: Hist,
    proposals_committed: i64,
    proposals_applied: i64,
    proposals_failed: u64,
    leader_changes: u64,
    fsync: Hist,
    backend_commit: Hist,
    db_size: i64,
    db_in_use: i64,
    watchers: i64,
    /// Open watch streams (gRPC and gateway).
    streams: i64,
}

fn sample(srv: &EtcdServer) -> Sample {
    let mut by_method = BTreeMap::new();
    for family in METRICS.grpc_handled.collect() {
        for m in family.get_metric() {
            let label = |name: &str| {
                m.get_label()
                    .iter()
                    .find(|l| l.name() == name)
                    .map(|l| l.value().to_string())
                    .unwrap_or_default()
            };
            let key = format!("{}/{}", label("grpc_service"), label("grpc_method"));
            *by_method.entry(key).or_insert(0) += m.get_counter().get_value() as u64;
        }
    }
    Sample {
        unix_secs: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() as i64),
        by_method,
        grpc_latency: Hist::of(&METRICS.grpc_handling_seconds),
        proposals_committed: METRICS.proposals_committed.get(),
        proposals_applied: METRICS.proposals_applied.get(),
        proposals_failed: METRICS.proposals_failed.get(),
        leader_changes: METRICS.leader_changes.get(),
        fsync: Hist::of(&METRICS.wal_fsync),
        backend_commit: Hist::of(&METRICS.backend_commit),
        db_size: srv.db().disk_space() as i64,
        db_in_use: srv.db().state_machine_space() as i64,
        watchers: srv.hub().watcher_count() as i64,
        streams: crate::api::watch::open_streams(),
    }
}

/// The ring of samples, newest last.
#[derive(Default)]
pub struct Ring {
    samples: Mutex<VecDeque<Sample>>,
}

impl Ring {
    fn push(&self, s: Sample) {
        let mut q = self.samples.lock();
        if q.len() >= RING_SAMPLES {
            q.pop_front();
        }
        q.push_back(s);
    }

    fn last(&self, n: usize) -> Vec<Sample> {
        let q = self.samples.lock();
        q.iter().skip(q.len().saturating_sub(n)).cloned().collect()
    }
}

/// Samples forever (spawned once per member with the console's routes).
pub async fn run_sampler(srv: Arc<EtcdServer>, ring: Arc<Ring>) {
    let mut tick = tokio::time::interval(SAMPLE_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        if srv.config().load().enable_ui {
            ring.push(sample(&srv));
        }
    }
}

#[derive(Debug, Default, serde::Deserialize)]
pub struct MetricsQuery {
    /// The window: 5, 15 or 60 minutes.
    minutes: Option<String>,
}

/// One line of a chart: a name and a value per interval (`None`: no data).
struct Series {
    name: &'static str,
    values: Vec<Option<f64>>,
}

/// `GET /ui/metrics?minutes=N`.
pub async fn page(
    State(c): State<Arc<Console>>,
    Extension(s): Extension<Session>,
    Query(q): Query<MetricsQuery>,
) -> Response {
    // The figures are the member's, like /metrics; while auth is on they
    // are root's, as the configuration is.
    if let Err(e) = c.srv.check_admin(&s.ctx) {
        return html::page_with_status(
            axum::http::StatusCode::FORBIDDEN,
            &s,
            "Metrics",
            Nav::Metrics,
            &html::error_box(&format!("{e} (metrics are shown to root only)")),
            "",
        );
    }
    let minutes: u64 = match q.minutes.as_deref() {
        Some("5") => 5,
        Some("60") => 60,
        _ => 15,
    };
    let n = (minutes * 60 / SAMPLE_EVERY.as_secs()) as usize + 1;
    let samples = c.ring.last(n);
    let mut body = String::new();
    body.push_str(r#"<nav class="crumbs" aria-label="Window">Window: "#);
    for m in [5, 15, 60] {
        if m == minutes {
            let _ = write!(body, r#"<strong aria-current="true">{m} min</strong> "#);
        } else {
            let _ = write!(body, r#"<a href="/ui/metrics?minutes={m}">{m} min</a> "#);
        }
    }
    let _ = write!(
        body,
        "</nav><p class=\"hint\">This member, sampled every {} s; {} samples so far in this window. The page reloads every 30 s.</p>",
        SAMPLE_EVERY.as_secs(),
        samples.len()
    );
    if samples.len() < 2 {
        body.push_str("<p>Not enough samples yet: come back in a few seconds.</p>");
    } else {
        let pairs: Vec<Interval<'_>> = samples.iter().zip(samples.iter().skip(1)).collect();
        let slots = n - 1;
        body.push_str(&request_charts(&pairs, &samples, slots));
        body.push_str(&raft_and_backend_charts(&pairs, slots));
    }
    html::page_with_status(
        axum::http::StatusCode::OK,
        &s,
        "Metrics",
        Nav::Metrics,
        &body,
        r#"<meta http-equiv="refresh" content="30">"#,
    )
}

/// Two consecutive samples: one interval of a chart.
type Interval<'a> = (&'a Sample, &'a Sample);

fn interval_secs(a: &Sample, b: &Sample) -> f64 {
    ((b.unix_secs - a.unix_secs).max(1)) as f64
}

/// A counter's rate per second in each interval.
fn rate(pairs: &[Interval<'_>], f: &dyn Fn(&Sample) -> f64) -> Vec<Option<f64>> {
    pairs
        .iter()
        .map(|(a, b)| Some(((f(b) - f(a)) / interval_secs(a, b)).max(0.0)))
        .collect()
}

/// A histogram's quantile `q` over each interval, times `scale`.
fn quant(
    pairs: &[Interval<'_>],
    f: &dyn Fn(&Sample) -> &Hist,
    q: f64,
    scale: f64,
) -> Vec<Option<f64>> {
    pairs
        .iter()
        .map(|(a, b)| f(b).quantile_since(f(a), q).map(|v| v * scale))
        .collect()
}

/// Requests: calls per second, the per-method table, latency.
fn request_charts(pairs: &[Interval<'_>], samples: &[Sample], slots: usize) -> String {
    let mut body = String::new();
    let total = |s: &Sample| s.by_method.values().sum::<u64>() as f64;
    body.push_str(&chart(
        "Requests",
        "calls/s",
        slots,
        &[Series {
            name: "gRPC calls handled",
            values: rate(pairs, &total),
        }],
    ));
    body.push_str(&method_table(samples));
    if METRICS.extensive() {
        body.push_str(&chart(
            "Request latency",
            "ms",
            slots,
            &[
                Series {
                    name: "p50",
                    values: quant(pairs, &|s| &s.grpc_latency, 0.5, 1000.0),
                },
                Series {
                    name: "p99",
                    values: quant(pairs, &|s| &s.grpc_latency, 0.99, 1000.0),
                },
            ],
        ));
    } else {
        body.push_str("<h2>Request latency</h2><p class=\"hint\">Latency by request needs <code>--metrics=extensive</code> (as in etcd, the histogram is kept only then).</p>");
    }
    body
}

/// Raft and the backend: proposals, fsync and commit latency, leader
/// changes, database size, watchers.
fn raft_and_backend_charts(pairs: &[Interval<'_>], slots: usize) -> String {
    let mut body = String::new();
    body.push_str(&chart(
        "Proposals",
        "per s",
        slots,
        &[
            Series {
                name: "committed",
                values: rate(pairs, &|s| s.proposals_committed as f64),
            },
            Series {
                name: "applied",
                values: rate(pairs, &|s| s.proposals_applied as f64),
            },
            Series {
                name: "failed",
                values: rate(pairs, &|s| s.proposals_failed as f64),
            },
        ],
    ));
    for (title, pick) in [
        (
            "Log fsync duration",
            (|s: &Sample| &s.fsync) as fn(&Sample) -> &Hist,
        ),
        ("Backend commit duration", |s: &Sample| &s.backend_commit),
    ] {
        body.push_str(&chart(
            title,
            "ms",
            slots,
            &[
                Series {
                    name: "p50",
                    values: quant(pairs, &pick, 0.5, 1000.0),
                },
                Series {
                    name: "p99",
                    values: quant(pairs, &pick, 0.99, 1000.0),
                },
            ],
        ));
    }
    body.push_str(&chart(
        "Leader changes",
        "per interval",
        slots,
        &[Series {
            name: "leader changes",
            values: pairs
                .iter()
                .map(|(a, b)| Some(b.leader_changes.saturating_sub(a.leader_changes) as f64))
                .collect(),
        }],
    ));
    let mib = 1024.0 * 1024.0;
    body.push_str(&chart(
        "Database size",
        "MiB",
        slots,
        &[
            Series {
                name: "total",
                values: pairs
                    .iter()
                    .map(|(_, b)| Some(b.db_size as f64 / mib))
                    .collect(),
            },
            Series {
                name: "in use",
                values: pairs
                    .iter()
                    .map(|(_, b)| Some(b.db_in_use as f64 / mib))
                    .collect(),
            },
        ],
    ));
    body.push_str(&chart(
        "Watchers and watch streams",
        "watchers",
        slots,
        &[
            Series {
                name: "watchers",
                values: pairs.iter().map(|(_, b)| Some(b.watchers as f64)).collect(),
            },
            Series {
                name: "streams",
                values: pairs.iter().map(|(_, b)| Some(b.streams as f64)).collect(),
            },
        ],
    ));
    body
}

/// Calls per second by method over the last minute, busiest first.
fn method_table(samples: &[Sample]) -> String {
    let per_minute = (60 / SAMPLE_EVERY.as_secs()) as usize;
    let (Some(new), Some(old)) = (
        samples.last(),
        samples.get(samples.len().saturating_sub(per_minute + 1)),
    ) else {
        return String::new();
    };
    let secs = ((new.unix_secs - old.unix_secs).max(1)) as f64;
    let mut rates: Vec<(&String, f64)> = new
        .by_method
        .iter()
        .map(|(m, n)| {
            let before = old.by_method.get(m).copied().unwrap_or(0);
            (m, n.saturating_sub(before) as f64 / secs)
        })
        .filter(|(_, r)| *r > 0.0)
        .collect();
    rates.sort_by(|a, b| b.1.total_cmp(&a.1));
    if rates.is_empty() {
        return "<p class=\"hint\">No gRPC calls in the last minute.</p>".to_string();
    }
    let mut out = String::from(
        r#"<table id="methods"><caption>Busiest methods, last minute</caption><thead><tr><th scope="col">Method</th><th scope="col">Calls/s</th></tr></thead><tbody>"#,
    );
    for (m, r) in rates.into_iter().take(TOP_METHODS) {
        let _ = write!(
            out,
            "<tr><td><code>{}</code></td><td>{r:.2}</td></tr>",
            esc(m)
        );
    }
    out.push_str("</tbody></table>");
    out
}

/// A line chart as inline SVG, with a text summary for screen readers
/// and for anyone who wants the numbers.
/// `slots` is how many intervals the window holds: values are drawn right
/// aligned (the newest at the right edge), so a young ring fills the chart
/// from the right rather than stretching.
fn chart(title: &str, unit: &str, slots: usize, series: &[Series]) -> String {
    let max = series
        .iter()
        .flat_map(|s| s.values.iter().flatten())
        .fold(0.0f64, |m, v| m.max(*v));
    let top = if max > 0.0 { max * 1.1 } else { 1.0 };
    let n = series.iter().map(|s| s.values.len()).max().unwrap_or(0);
    let step = CHART_W / slots.max(n).saturating_sub(1).max(1) as f64;
    let x = |i: usize| CHART_W - (n - 1 - i) as f64 * step;
    let y = |v: f64| CHART_H - v / top * CHART_H;
    let mut out = String::new();
    let _ = write!(
        out,
        r#"<figure class="chart"><figcaption><h2>{}</h2></figcaption><svg viewBox="0 0 {CHART_W} {CHART_H}" preserveAspectRatio="none" role="img" aria-label="{} over the window, in {}"><rect class="frame" x="0" y="0" width="{CHART_W}" height="{CHART_H}"/>"#,
        esc(title),
        esc(title),
        esc(unit)
    );
    let mut legend = String::new();
    for (k, s) in series.iter().enumerate() {
        let mut points = String::new();
        for (i, v) in s.values.iter().enumerate() {
            if let Some(v) = v {
                let _ = write!(points, "{:.1},{:.1} ", x(i), y(*v));
            }
        }
        let _ = write!(
            out,
            r#"<polyline class="s{k}" points="{}"/>"#,
            points.trim_end()
        );
        let latest = s.values.iter().rev().flatten().next();
        let peak = s
            .values
            .iter()
            .flatten()
            .fold(None, |m: Option<f64>, v| Some(m.map_or(*v, |m| m.max(*v))));
        let _ = write!(
            legend,
            r#"<li><span class="key s{k}"></span>{}: now {}, peak {} {}</li>"#,
            esc(s.name),
            latest.map_or("—".to_string(), |v| format!("{v:.2}")),
            peak.map_or("—".to_string(), |v| format!("{v:.2}")),
            esc(unit)
        );
    }
    let _ = write!(
        out,
        r#"</svg><ul class="legend">{legend}</ul><p class="hint">Scale: 0 to {top:.2} {}</p></figure>"#,
        esc(unit)
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hist(buckets: &[(f64, u64)]) -> Hist {
        Hist {
            buckets: buckets.to_vec(),
            count: buckets.last().map_or(0, |b| b.1),
        }
    }

    #[test]
    fn quantiles_come_from_bucket_deltas() {
        let before = hist(&[(0.001, 10), (0.01, 10), (0.1, 10)]);
        // 100 new observations: 50 under 1 ms, 40 up to 10 ms, 10 up to 100 ms.
        let after = hist(&[(0.001, 60), (0.01, 100), (0.1, 110)]);
        let p50 = after.quantile_since(&before, 0.5).unwrap();
        assert!((p50 - 0.001).abs() < 1e-9, "{p50}");
        let p99 = after.quantile_since(&before, 0.99).unwrap();
        assert!(p99 > 0.01 && p99 <= 0.1, "{p99}");
        assert_eq!(after.quantile_since(&after, 0.5), None);
    }

    #[test]
    fn the_ring_keeps_the_newest() {
        let r = Ring::default();
        for i in 0..(RING_SAMPLES + 5) {
            r.push(Sample {
                unix_secs: i as i64,
                ..Default::default()
            });
        }
        let all = r.last(usize::MAX);
        assert_eq!(all.len(), RING_SAMPLES);
        assert_eq!(all.last().unwrap().unix_secs, (RING_SAMPLES + 4) as i64);
        assert_eq!(r.last(3).len(), 3);
    }

    #[test]
    fn charts_escape_and_summarise() {
        let svg = chart(
            "A <b> chart",
            "ms",
            5,
            &[Series {
                name: "p<99>",
                values: vec![Some(1.0), None, Some(3.0)],
            }],
        );
        assert!(svg.contains("A &lt;b&gt; chart"), "{svg}");
        assert!(svg.contains("p&lt;99&gt;: now 3.00, peak 3.00 ms"), "{svg}");
        assert!(svg.contains(r#"points="300.0,83.6 600.0,10.9""#), "{svg}");
    }
}
