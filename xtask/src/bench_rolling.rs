//! `cargo xtask bench rolling-restart`: what a rolling restart costs the
//! clients, on Cairn and on etcd 3.4 with the same procedure.
//!
//! Per side and round: a fresh three-member cluster; `cairn-bench
//! --failover` writers (each keeps one put in flight on one member and moves
//! on only when its member refuses connections, as clientv3 does for
//! writes); after a lead-in, every member in turn gets SIGTERM, is started
//! again and waited for until healthy, then a pause; then the writers stop.
//! Reported: writes, failed writes, the worst latency (first attempt to
//! answer) and p99. `CAIRN_BIN` / `CAIRN_BENCH_BIN` use prebuilt binaries
//! instead of release builds.

use std::path::PathBuf;
use std::process::{Command, ExitCode, Stdio};
use std::thread;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::Args;
use serde::Deserialize;

use crate::cluster::{self, ClusterSpec, Layout};
use crate::util::display_cmd;

const CLUSTER_START_TIMEOUT: Duration = Duration::from_secs(60);
/// Load before the first stop, and after each member is back.
const SETTLE: Duration = Duration::from_secs(3);

#[derive(Args)]
pub struct RollingArgs {
    /// etcd binary to compare against (default: `etcd` on PATH).
    #[arg(long, env = "ETCD_BIN")]
    etcd_bin: Option<PathBuf>,
    /// Rounds per side (fresh clusters each).
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..))]
    rounds: u32,
    /// Concurrent writers.
    #[arg(long, default_value_t = 8)]
    clients: u32,
    /// Where the clusters keep their data (removed afterwards).
    #[arg(long)]
    dir: Option<PathBuf>,
}

#[derive(Deserialize)]
struct Report {
    results: Vec<Result1>,
}

#[derive(Deserialize)]
struct Result1 {
    requests: u64,
    errors: u64,
    p99_ms: f64,
    max_ms: f64,
}

struct Round {
    requests: u64,
    errors: u64,
    p99_ms: f64,
    max_ms: f64,
    /// SIGTERM to exit, per member.
    stops_ms: Vec<u128>,
}

pub fn run(args: RollingArgs) -> Result<ExitCode> {
    let layout = Layout::from_flag(false);
    let base = std::path::absolute(args.dir.clone().unwrap_or_else(|| {
        crate::util::target_dir()
            .join("xtask")
            .join("bench-rolling")
    }))?;
    let etcd = super_find_etcd(args.etcd_bin.as_deref())?;
    let cairn = cluster::cairn_binary()?;
    // A prebuilt load generator (e.g. a debug build) skips the release build.
    let bench = match std::env::var_os("CAIRN_BENCH_BIN").filter(|b| !b.is_empty()) {
        Some(b) => PathBuf::from(b),
        None => crate::bench::build_bench()?,
    };
    let mut sides: Vec<(String, &str, PathBuf, u8)> = vec![("Cairn".into(), "cairn", cairn, 1)];
    if let Some((bin, version)) = etcd {
        sides.push((format!("etcd {version}"), "etcd", bin, 2));
    }
    let mut table = String::from(
        "| server | round | writes | failed | p99 ms | worst ms | SIGTERM→exit ms (per member) |\n\
         |---|---|---|---|---|---|---|\n",
    );
    let mut failed = false;
    for round in 0..args.rounds {
        for (label, kind, bin, slot) in &sides {
            eprintln!("xtask: round {} of {}: {label}", round + 1, args.rounds);
            match one_round(
                kind,
                bin.clone(),
                &base,
                layout,
                *slot,
                &bench,
                args.clients,
            ) {
                Ok(r) => {
                    let stops: Vec<String> = r.stops_ms.iter().map(u128::to_string).collect();
                    table.push_str(&format!(
                        "| {label} | {} | {} | {} | {:.1} | {:.1} | {} |\n",
                        round + 1,
                        r.requests,
                        r.errors,
                        r.p99_ms,
                        r.max_ms,
                        stops.join(", ")
                    ));
                }
                Err(e) => {
                    eprintln!("xtask: {label} round failed: {e:#}");
                    failed = true;
                }
            }
        }
    }
    if args.dir.is_none() {
        let _ = std::fs::remove_dir(&base);
    }
    println!(
        "Rolling restart of three members under {} steady writers ({} cores):\n\n{table}",
        args.clients,
        thread::available_parallelism().map_or(0, |n| n.get())
    );
    Ok(if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

fn super_find_etcd(explicit: Option<&std::path::Path>) -> Result<Option<(PathBuf, String)>> {
    crate::bench::find_etcd(explicit)
}

fn one_round(
    kind: &str,
    binary: PathBuf,
    base: &std::path::Path,
    layout: Layout,
    slot: u8,
    bench: &std::path::Path,
    clients: u32,
) -> Result<Round> {
    let dir = base.join(kind);
    if dir.join("cluster.json").is_file() {
        std::fs::remove_dir_all(&dir)?;
    }
    let spec = ClusterSpec::new(
        layout,
        binary,
        &format!("cairn-rolling-{kind}"),
        &dir,
        &format!("{kind}.log"),
        &cluster::bench_addresses(layout, slot),
    );
    let mut running = cluster::start(spec, &[0, 1, 2], false)?;
    cluster::wait_healthy(&mut running, CLUSTER_START_TIMEOUT)?;

    let mut cmd = Command::new(bench);
    cmd.args(["--failover", "--format", "json"])
        .arg("--clients")
        .arg(clients.to_string())
        .arg("--endpoints")
        .arg(running.spec.endpoints())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    eprintln!("$ {}", display_cmd(&cmd));
    let mut child = cmd.spawn().context("cannot run cairn-bench")?;
    thread::sleep(SETTLE);
    let mut stops_ms = Vec::new();
    let mut restart_error = None;
    for i in 0..running.spec.members.len() {
        eprintln!("xtask: restarting {}", running.spec.members[i].name);
        match running.restart_member(i, CLUSTER_START_TIMEOUT) {
            Ok(took) => stops_ms.push(took.as_millis()),
            Err(e) => {
                restart_error = Some(e);
                break;
            }
        }
        thread::sleep(SETTLE);
    }
    // Closing stdin tells cairn-bench to stop and report.
    drop(child.stdin.take());
    let report: Result<Report> = crate::bench::report_of(child);
    if let Some(e) = restart_error {
        return Err(e);
    }
    let report = report.with_context(|| format!("logs kept in {}", dir.display()))?;
    let r = report.results.first().context("empty report")?;
    running.remove_dir_on_drop = true;
    Ok(Round {
        requests: r.requests,
        errors: r.errors,
        p99_ms: r.p99_ms,
        max_ms: r.max_ms,
        stops_ms,
    })
}
