//! `cargo xtask bench plugins`: what a policy plugin costs.
//!
//! Runs the put workload of `cairn-bench` against fresh three-member Cairn
//! clusters (release build), once without plugins and once with one plugin
//! deployed on every write (default: the trivial `allow-all` validator),
//! alternating the order over rounds; prints the median throughput and
//! latency of both, their ratio, and the per-call latency the members'
//! `cairn_plugin_call_duration_seconds` histograms recorded.

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::Args;
use serde_json::Value;

use crate::cluster::{self, ClusterSpec, Layout, RunningCluster};
use crate::util::{describe, display_cmd, workspace_root};

const CLUSTER_START_TIMEOUT: Duration = Duration::from_secs(60);
/// How long every member may take to compile the deployed plugin.
const PLUGIN_READY_TIMEOUT: Duration = Duration::from_secs(60);
/// Name the plugin is deployed under (its metrics label).
const PLUGIN_NAME: &str = "bench";

#[derive(Args)]
pub struct PluginBenchArgs {
    /// The plugin to deploy (a validator component).
    /// Default: plugins/dist/allow-all.wasm.
    #[arg(long)]
    plugin: Option<PathBuf>,
    /// Rounds; each runs both variants on fresh clusters, alternating which
    /// goes first. The table shows medians.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..))]
    rounds: u32,
    /// Every member on 127.0.0.1 with distinct ports.
    #[arg(long)]
    one_address: bool,
    /// Where the clusters keep their data (default:
    /// target/xtask/bench-plugins; not /tmp, which may be tmpfs).
    #[arg(long)]
    dir: Option<PathBuf>,
    /// Extra arguments for cairn-bench (e.g. `--clients 64 --total 20000`);
    /// the workload is always `put`.
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    bench_args: Vec<String>,
}

/// One measured run.
#[derive(Debug, Clone, Default)]
struct Run {
    qps: f64,
    p50_ms: f64,
    p99_ms: f64,
    max_ms: f64,
    requests: u64,
    errors: u64,
    calls: Option<Histogram>,
}

/// `cairn_plugin_call_duration_seconds` summed over the members.
#[derive(Debug, Clone, Default)]
struct Histogram {
    count: f64,
    sum: f64,
    /// (upper bound in seconds, cumulative count), ascending.
    buckets: Vec<(f64, f64)>,
}

impl Histogram {
    fn merge(&mut self, other: &Histogram) {
        self.count += other.count;
        self.sum += other.sum;
        for (le, n) in &other.buckets {
            match self.buckets.iter_mut().find(|(l, _)| l == le) {
                Some((_, m)) => *m += n,
                None => self.buckets.push((*le, *n)),
            }
        }
        self.buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
    }

    /// The bucket bound below which `q` of the calls fall.
    fn quantile_bound(&self, q: f64) -> f64 {
        let want = q * self.count;
        self.buckets
            .iter()
            .find(|(_, n)| *n >= want)
            .map_or(f64::INFINITY, |(le, _)| *le)
    }
}

pub fn run(args: PluginBenchArgs) -> Result<ExitCode> {
    let layout = Layout::from_flag(args.one_address);
    let base = std::path::absolute(args.dir.clone().unwrap_or_else(|| {
        crate::util::target_dir()
            .join("xtask")
            .join("bench-plugins")
    }))?;
    let plugin = std::path::absolute(
        args.plugin
            .clone()
            .unwrap_or_else(|| workspace_root().join("plugins/dist/allow-all.wasm")),
    )?;
    if !plugin.is_file() {
        bail!("{} does not exist", plugin.display());
    }
    let cairn = cluster::cairn_binary()?;
    let bench = crate::bench::build_bench()?;

    let mut without = Vec::new();
    let mut with = Vec::new();
    for round in 0..args.rounds {
        let order = if round % 2 == 0 {
            [false, true]
        } else {
            [true, false]
        };
        for with_plugin in order {
            eprintln!(
                "xtask: round {} of {}: {}",
                round + 1,
                args.rounds,
                if with_plugin {
                    "with the plugin"
                } else {
                    "without plugins"
                }
            );
            let r = measure(
                &cairn,
                &bench,
                &base,
                layout,
                with_plugin.then_some(plugin.as_path()),
                &args.bench_args,
            )?;
            if with_plugin {
                with.push(r);
            } else {
                without.push(r);
            }
        }
    }
    let _ = std::fs::remove_dir(&base);
    let (a, b) = (median(&without), median(&with));
    let mut calls = Histogram::default();
    for r in &with {
        if let Some(h) = &r.calls {
            calls.merge(h);
        }
    }
    let name = plugin
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    println!("| Put workload | QPS | p50 ms | p99 ms | max ms | requests | errors |");
    println!("|---|--:|--:|--:|--:|--:|--:|");
    for (label, r) in [
        ("no plugins".to_owned(), &a),
        (format!("`{name}` on every put"), &b),
    ] {
        println!(
            "| {label} | {:.0} | {:.2} | {:.2} | {:.2} | {} | {} |",
            r.qps, r.p50_ms, r.p99_ms, r.max_ms, r.requests, r.errors
        );
    }
    println!();
    println!(
        "Throughput with the plugin / without: {:.3} ({:+.1} %); p99 {:+.2} ms. Medians of {} rounds.",
        b.qps / a.qps,
        (b.qps / a.qps - 1.0) * 100.0,
        b.p99_ms - a.p99_ms,
        args.rounds
    );
    if calls.count > 0.0 {
        println!(
            "Plugin calls: {:.0}, mean {:.1} µs per call (a fresh instance each, instantiation included); \
             p50 ≤ {:.0} µs, p99 ≤ {:.0} µs (histogram bucket bounds).",
            calls.count,
            calls.sum / calls.count * 1e6,
            calls.quantile_bound(0.5) * 1e6,
            calls.quantile_bound(0.99) * 1e6
        );
    }
    let errors = without.iter().chain(&with).map(|r| r.errors).sum::<u64>();
    Ok(if errors == 0 {
        ExitCode::SUCCESS
    } else {
        eprintln!("xtask: {errors} requests failed");
        ExitCode::FAILURE
    })
}

fn median(runs: &[Run]) -> Run {
    let pick = |f: fn(&Run) -> f64| {
        let mut v: Vec<f64> = runs.iter().map(f).collect();
        v.sort_by(f64::total_cmp);
        let n = v.len();
        if n == 0 {
            0.0
        } else if n % 2 == 1 {
            v[n / 2]
        } else {
            (v[n / 2 - 1] + v[n / 2]) / 2.0
        }
    };
    Run {
        qps: pick(|r| r.qps),
        p50_ms: pick(|r| r.p50_ms),
        p99_ms: pick(|r| r.p99_ms),
        max_ms: runs.iter().map(|r| r.max_ms).fold(0.0, f64::max),
        requests: runs.iter().map(|r| r.requests).sum(),
        errors: runs.iter().map(|r| r.errors).sum(),
        calls: None,
    }
}

/// A fresh cluster, the plugin deployed (if any), one put workload.
fn measure(
    cairn: &Path,
    bench: &Path,
    base: &Path,
    layout: Layout,
    plugin: Option<&Path>,
    extra: &[String],
) -> Result<Run> {
    let dir = base.join(if plugin.is_some() {
        "with-plugin"
    } else {
        "baseline"
    });
    if dir.join("cluster.json").is_file() {
        std::fs::remove_dir_all(&dir)
            .with_context(|| format!("cannot remove {}", dir.display()))?;
    } else if dir.exists() {
        bail!(
            "{} exists and was not made by xtask; pass another --dir",
            dir.display()
        );
    }
    let spec = ClusterSpec::new(
        layout,
        cairn.to_path_buf(),
        "cairn-bench-plugins",
        &dir,
        "cairn.log",
        &cluster::bench_addresses(layout, 1),
    );
    let mut running: RunningCluster = cluster::start(spec, &[0, 1, 2], false)?;
    cluster::wait_healthy(&mut running, CLUSTER_START_TIMEOUT)?;
    let members: Vec<_> = running
        .spec
        .members
        .iter()
        .map(|m| m.client_addr())
        .collect();

    if let Some(plugin) = plugin {
        let mut cmd = Command::new(cairn);
        cmd.args(["plugin", "deploy", PLUGIN_NAME])
            .arg(plugin)
            .arg(format!(
                "--endpoints={}",
                running.spec.members[0].client_url()
            ));
        eprintln!("$ {}", display_cmd(&cmd));
        let out = cmd.output().context("cannot run cairn plugin deploy")?;
        if !out.status.success() {
            bail!(
                "deploying the plugin failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        // Every member compiles it; measure only once all can call it.
        let deadline = Instant::now() + PLUGIN_READY_TIMEOUT;
        for addr in &members {
            loop {
                let ready = crate::health::get(*addr, "/cairn/v1/plugins?serializable")
                    .ok()
                    .and_then(|(_, body)| serde_json::from_str::<Value>(&body).ok())
                    .is_some_and(|v| v["plugins"][0]["status"]["state"] == "ready");
                if ready {
                    break;
                }
                if Instant::now() > deadline {
                    bail!("the plugin did not become ready on {addr}");
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    }

    let mut cmd = Command::new(bench);
    cmd.args(extra)
        .args(["--workload", "put"])
        .arg("--endpoints")
        .arg(running.spec.endpoints())
        .args(["--format", "json"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    eprintln!("$ {}", display_cmd(&cmd));
    let out = cmd.output().context("cannot run cairn-bench")?;
    if !out.status.success() {
        bail!(
            "cairn-bench failed ({}); logs kept in {}",
            describe(out.status),
            dir.display()
        );
    }
    let report: Value =
        serde_json::from_slice(&out.stdout).context("cairn-bench printed no JSON")?;
    let w = report["results"]
        .as_array()
        .and_then(|r| r.iter().find(|w| w["workload"] == "put"))
        .context("no put result in cairn-bench's report")?;
    let mut run = Run {
        qps: w["qps"].as_f64().unwrap_or(0.0),
        p50_ms: w["p50_ms"].as_f64().unwrap_or(0.0),
        p99_ms: w["p99_ms"].as_f64().unwrap_or(0.0),
        max_ms: w["max_ms"].as_f64().unwrap_or(0.0),
        requests: w["requests"].as_u64().unwrap_or(0),
        errors: w["errors"].as_u64().unwrap_or(0),
        calls: None,
    };
    if plugin.is_some() {
        let mut h = Histogram::default();
        for addr in &members {
            if let Ok((200, text)) = crate::health::get(*addr, "/metrics") {
                h.merge(&parse_histogram(&text));
            }
        }
        run.calls = Some(h);
    }
    running.remove_dir_on_drop = true;
    drop(running);
    Ok(run)
}

/// The plugin's `cairn_plugin_call_duration_seconds` from a `/metrics` text.
fn parse_histogram(text: &str) -> Histogram {
    let mut h = Histogram::default();
    let me = format!("plugin=\"{PLUGIN_NAME}\"");
    for line in text.lines().filter(|l| l.contains(&me)) {
        let Some((name_labels, value)) = line.rsplit_once(' ') else {
            continue;
        };
        let Ok(value) = value.parse::<f64>() else {
            continue;
        };
        if name_labels.starts_with("cairn_plugin_call_duration_seconds_count") {
            h.count += value;
        } else if name_labels.starts_with("cairn_plugin_call_duration_seconds_sum") {
            h.sum += value;
        } else if name_labels.starts_with("cairn_plugin_call_duration_seconds_bucket") {
            let le = name_labels
                .split("le=\"")
                .nth(1)
                .and_then(|s| s.split('"').next())
                .map(|s| {
                    if s == "+Inf" {
                        f64::INFINITY
                    } else {
                        s.parse().unwrap_or(f64::NAN)
                    }
                });
            if let Some(le) = le.filter(|l| !l.is_nan()) {
                h.buckets.push((le, value));
            }
        }
    }
    h.buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_from_metrics_text() {
        let text = "\
cairn_plugin_call_duration_seconds_bucket{hook=\"validator\",plugin=\"bench\",le=\"0.00001\"} 5
cairn_plugin_call_duration_seconds_bucket{hook=\"validator\",plugin=\"bench\",le=\"0.00002\"} 90
cairn_plugin_call_duration_seconds_bucket{hook=\"validator\",plugin=\"bench\",le=\"+Inf\"} 100
cairn_plugin_call_duration_seconds_sum{hook=\"validator\",plugin=\"bench\"} 0.0015
cairn_plugin_call_duration_seconds_count{hook=\"validator\",plugin=\"bench\"} 100
cairn_plugin_calls_total{hook=\"validator\",plugin=\"other\"} 7
";
        let h = parse_histogram(text);
        assert_eq!(h.count, 100.0);
        assert_eq!(h.buckets.len(), 3);
        assert_eq!(h.quantile_bound(0.5), 0.00002);
        assert_eq!(h.quantile_bound(0.99), f64::INFINITY);
    }
}
