//! `cargo xtask bench net`: writes and linearizable reads when the members
//! are a network apart, on Cairn and on etcd 3.4 with the same client.
//!
//! The delay comes from the robustness suite's peer proxy (`cairn-robustness
//! serve`): every member pair's traffic passes through it and each chunk is
//! held half the round trip in each direction, while the clients reach the
//! members directly, as a client next to its leader would. `tc netem` would
//! be more faithful but needs a kernel with the netem qdisc, which this
//! project's machines lack; the proxy costs both systems the same CPU.
//! Per round trip and side, a fresh cluster; `cairn-bench` runs the
//! workloads (default put and range-linearizable, 64 clients, 10 s each).
//! `CAIRN_BIN` / `CAIRN_BENCH_BIN` / `CAIRN_ROBUSTNESS_BIN` use prebuilt
//! binaries instead of release builds.

use std::io::{BufRead as _, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};

use anyhow::{Context, Result, bail};
use clap::Args;
use serde::Deserialize;

use crate::bench_plugins::median_of;
use crate::util::{cargo, display_cmd, run_streamed, target_dir};

#[derive(Args)]
pub struct NetArgs {
    /// Round-trip times between members, in milliseconds (repeat or comma
    /// separated).
    #[arg(long, value_delimiter = ',', default_values_t = [1.0, 10.0])]
    rtt_ms: Vec<f64>,
    /// Rounds per side and round trip (fresh clusters each, the sides
    /// alternating); the table shows medians.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..))]
    rounds: u32,
    /// Also write the table to this file.
    #[arg(long)]
    out: Option<PathBuf>,
    /// Arguments for cairn-bench after the defaults (`--workload
    /// put,range-linearizable --duration 10s --clients 64`); later ones win.
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    bench_args: Vec<String>,
}

#[derive(Deserialize)]
struct Report {
    results: Vec<WorkloadResult>,
}

#[derive(Deserialize, Clone)]
struct WorkloadResult {
    workload: String,
    errors: u64,
    qps: f64,
    p50_ms: f64,
    p99_ms: f64,
}

pub fn run(args: NetArgs) -> Result<ExitCode> {
    if args.rtt_ms.iter().any(|r| !(*r > 0.0 && *r <= 1000.0)) {
        bail!("--rtt-ms values must be more than 0 and at most 1000");
    }
    let sides: Vec<(&str, String)> = if Path::new("/usr/bin/etcd").exists() {
        vec![("cairn", "Cairn".into()), ("etcd", "etcd 3.4".into())]
    } else {
        eprintln!("xtask: /usr/bin/etcd is missing (apt-get install etcd-server): Cairn only");
        vec![("cairn", "Cairn".into())]
    };
    let (cairn, runner) = binaries()?;
    let bench = match std::env::var_os("CAIRN_BENCH_BIN").filter(|b| !b.is_empty()) {
        Some(b) => PathBuf::from(b),
        None => crate::bench::build_bench()?,
    };
    let mut table = format!(
        "Members a round trip apart through the peer proxy (clients direct); three members, \
         proxy and client on one machine ({} cores); medians of {} round(s).\n\n\
         | RTT ms | workload | Cairn QPS | etcd QPS | QPS Cairn/etcd | Cairn p50 ms | etcd p50 ms \
         | Cairn p99 ms | etcd p99 ms | p99 Cairn/etcd |\n|---|---|--:|--:|--:|--:|--:|--:|--:|--:|\n",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        args.rounds
    );
    for &rtt in &args.rtt_ms {
        // Per side: one result list per round.
        let mut results: Vec<Vec<Vec<WorkloadResult>>> = vec![Vec::new(); sides.len()];
        for round in 0..args.rounds {
            let mut order: Vec<usize> = (0..sides.len()).collect();
            if round % 2 == 1 {
                order.reverse();
            }
            for k in order {
                let (target, label) = &sides[k];
                eprintln!(
                    "xtask: {rtt} ms round trip, round {} of {}: {label}",
                    round + 1,
                    args.rounds
                );
                let r = one_round(target, &cairn, &runner, &bench, rtt, &args.bench_args)
                    .with_context(|| format!("{label} at {rtt} ms"))?;
                results[k].push(r);
            }
        }
        let workloads: Vec<String> = results[0]
            .first()
            .map(|r| r.iter().map(|w| w.workload.clone()).collect())
            .unwrap_or_default();
        for w in &workloads {
            let median = |side: usize, f: fn(&WorkloadResult) -> f64| -> Option<f64> {
                let v: Vec<f64> = results
                    .get(side)?
                    .iter()
                    .filter_map(|round| round.iter().find(|r| &r.workload == w))
                    .map(f)
                    .collect();
                (!v.is_empty()).then(|| median_of(&v))
            };
            let cell = |v: Option<f64>, decimals: usize| {
                v.map_or_else(|| "–".to_string(), |x| format!("{x:.decimals$}"))
            };
            let ratio = |a: Option<f64>, b: Option<f64>| match (a, b) {
                (Some(a), Some(b)) if b > 0.0 => format!("{:.2}", a / b),
                _ => "–".into(),
            };
            let (cq, eq) = (median(0, |r| r.qps), median(1, |r| r.qps));
            let (c50, e50) = (median(0, |r| r.p50_ms), median(1, |r| r.p50_ms));
            let (c99, e99) = (median(0, |r| r.p99_ms), median(1, |r| r.p99_ms));
            table.push_str(&format!(
                "| {rtt} | {w} | {} | {} | {} | {} | {} | {} | {} | {} |\n",
                cell(cq, 0),
                cell(eq, 0),
                ratio(cq, eq),
                cell(c50, 2),
                cell(e50, 2),
                cell(c99, 2),
                cell(e99, 2),
                ratio(c99, e99)
            ));
        }
    }
    println!("{table}");
    if let Some(out) = &args.out {
        std::fs::write(out, &table).with_context(|| format!("cannot write {}", out.display()))?;
    }
    Ok(ExitCode::SUCCESS)
}

/// The server and the proxy runner: prebuilt (`CAIRN_BIN`,
/// `CAIRN_ROBUSTNESS_BIN`) or a release build.
fn binaries() -> Result<(PathBuf, PathBuf)> {
    let env = |name: &str| {
        std::env::var_os(name)
            .filter(|b| !b.is_empty())
            .map(PathBuf::from)
    };
    if let (Some(cairn), Some(runner)) = (env("CAIRN_BIN"), env("CAIRN_ROBUSTNESS_BIN")) {
        return Ok((cairn, runner));
    }
    let mut cmd = cargo();
    cmd.args(["build", "--release", "-p", "cairn", "--bin", "cairn"])
        .args(["-p", "cairn-tests", "--bin", "cairn-robustness"]);
    crate::protoc::add_protoc_to_path(&mut cmd)?;
    run_streamed(&mut cmd)?;
    let dir = target_dir().join("release");
    Ok((
        env("CAIRN_BIN").unwrap_or_else(|| dir.join("cairn")),
        dir.join("cairn-robustness"),
    ))
}

fn one_round(
    target: &str,
    cairn: &Path,
    runner: &Path,
    bench: &Path,
    rtt_ms: f64,
    extra: &[String],
) -> Result<Vec<WorkloadResult>> {
    let mut serve = Command::new(runner);
    serve
        .args(["serve", "--one-way-ms", &(rtt_ms / 2.0).to_string()])
        .env("CAIRN_TEST_TARGET", target)
        .env("CAIRN_BIN", cairn)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    eprintln!("$ CAIRN_TEST_TARGET={target} {}", display_cmd(&serve));
    let mut server = serve.spawn().context("cannot run cairn-robustness")?;
    let mut endpoints = String::new();
    BufReader::new(server.stdout.take().context("no stdout")?).read_line(&mut endpoints)?;
    let endpoints = endpoints.trim().to_string();
    let outcome = (|| {
        if endpoints.is_empty() {
            bail!("the cluster did not start (see above)");
        }
        let mut cmd = Command::new(bench);
        cmd.args(["--endpoints", &endpoints])
            .args(["--workload", "put,range-linearizable"])
            .args(["--duration", "10s", "--clients", "64"])
            .args(extra);
        let report: Report = crate::bench::run_json(&mut cmd)?;
        if let Some(w) = report.results.iter().find(|w| w.errors > 0) {
            eprintln!("xtask: warning: {} had {} errors", w.workload, w.errors);
        }
        Ok(report.results)
    })();
    // Closing its stdin stops the cluster and the proxy.
    drop(server.stdin.take());
    let _ = server.wait();
    outcome
}
