//! `cargo xtask bench scale`: what a large keyspace costs, on Cairn and on
//! etcd 3.4 with the same procedure and the same client.
//!
//! Per side and round, a fresh three-member cluster on disk (not /tmp,
//! often tmpfs, where fsync is free), then in order:
//! 1. **load**: `cairn-bench --workload fill` puts every key of `--keys`
//!    once from `--clients` clients; throughput, p99, and the members' CPU
//!    time per put (from /proc);
//! 2. **history**: `--overwrites` puts to random keys of the same space;
//! 3. after a pause: each member's RSS, and its data dir's size on disk
//!    (allocated blocks, as `du` counts);
//! 4. **scan**: one client lists the whole keyspace, keys only, in
//!    linearizable pages of 1,000 keys (`cairn-bench --workload scan`);
//! 5. **restart**: `kill -9` of a follower, started again at once;
//! 6. **join**: `etcdctl member add` of a fourth member, started empty (it
//!    catches up from a snapshot).
//!
//! A member counts as ready when it answers `etcdctl endpoint status` at the
//! cluster's revision (nothing writes meanwhile): serving and caught up.
//! Times run from the process start. `CAIRN_BIN` / `CAIRN_BENCH_BIN` use
//! prebuilt binaries instead of release builds.

use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::Args;
use serde::Deserialize;

use crate::bench_plugins::median_of;
use crate::cluster::{self, ClusterSpec, Layout, RunningCluster, etcdctl, members};
use crate::health;

const CLUSTER_START_TIMEOUT: Duration = Duration::from_secs(60);
/// Restart and join must be ready within this; a million keys take seconds.
const READY_TIMEOUT: Duration = Duration::from_secs(300);
/// How often readiness is asked while waiting.
const READY_POLL: Duration = Duration::from_millis(50);
/// Between the last write and the memory reading: background work (flushes,
/// compactions, snapshots) settles.
const SETTLE: Duration = Duration::from_secs(5);
const KEY_BYTES: u32 = 16;

#[derive(Args)]
pub struct ScaleArgs {
    /// etcd binary to compare against (default: `etcd` on PATH).
    #[arg(long, env = "ETCD_BIN")]
    etcd_bin: Option<PathBuf>,
    /// Distinct keys to load.
    #[arg(long, default_value_t = 1_000_000, value_parser = clap::value_parser!(u64).range(1..))]
    keys: u64,
    /// Puts to random existing keys after the load (history).
    #[arg(long, default_value_t = 1_000_000)]
    overwrites: u64,
    /// Bytes per value.
    #[arg(long, default_value_t = 256)]
    val_size: usize,
    /// Concurrent writers for the load and the overwrites.
    #[arg(long, default_value_t = 64)]
    clients: u32,
    /// Rounds per side (fresh clusters each, the sides alternating); the
    /// table shows medians.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..))]
    rounds: u32,
    /// Where the clusters keep their data (removed afterwards).
    #[arg(long)]
    dir: Option<PathBuf>,
    /// Also write the table to this file.
    #[arg(long)]
    out: Option<PathBuf>,
    /// Measure Cairn only (while working on it; published figures are
    /// side by side).
    #[arg(long)]
    cairn_only: bool,
    /// Keep each cluster's folder (data and logs) after its round; the
    /// next round of the same side replaces it.
    #[arg(long)]
    keep: bool,
}

/// One side's figures from one round.
#[derive(Clone, Default)]
struct Outcome {
    load_qps: f64,
    load_p99_ms: f64,
    load_cpu_us_per_put: f64,
    overwrite_qps: f64,
    rss_mb: f64,
    data_mb: f64,
    scan_s: f64,
    scan_keys: u64,
    restart_s: f64,
    join_s: f64,
    join_rss_mb: f64,
}

#[derive(Deserialize)]
struct BenchReport {
    results: Vec<BenchResult>,
}

#[derive(Deserialize)]
struct BenchResult {
    requests: u64,
    errors: u64,
    qps: f64,
    p99_ms: f64,
    elapsed_secs: f64,
    #[serde(default)]
    keys: Option<u64>,
    /// With `--cpu-of`.
    #[serde(default)]
    members_cpu_us_per_request: Option<f64>,
    #[serde(default)]
    error_messages: Vec<String>,
}

struct Side {
    label: String,
    kind: &'static str,
    binary: PathBuf,
    slot: u8,
    outcomes: Vec<Outcome>,
}

pub fn run(args: ScaleArgs) -> Result<ExitCode> {
    let layout = Layout::from_flag(false);
    let base = std::path::absolute(
        args.dir
            .clone()
            .unwrap_or_else(|| crate::util::target_dir().join("xtask").join("bench-scale")),
    )?;
    etcdctl::require("`bench scale`")?;
    let bench = match std::env::var_os("CAIRN_BENCH_BIN").filter(|b| !b.is_empty()) {
        Some(b) => PathBuf::from(b),
        None => crate::bench::build_bench()?,
    };
    let mut sides = vec![Side {
        label: "Cairn".into(),
        kind: "cairn",
        binary: cluster::cairn_binary()?,
        slot: 1,
        outcomes: Vec::new(),
    }];
    let etcd = if args.cairn_only {
        None
    } else {
        crate::bench::find_etcd(args.etcd_bin.as_deref())?
    };
    if let Some((binary, version)) = etcd {
        sides.push(Side {
            label: format!("etcd {version}"),
            kind: "etcd",
            binary,
            slot: 2,
            outcomes: Vec::new(),
        });
    }
    for round in 0..args.rounds {
        // Alternate which side goes first: the machine warms up.
        let order: Vec<usize> = if round % 2 == 0 {
            (0..sides.len()).collect()
        } else {
            (0..sides.len()).rev().collect()
        };
        for k in order {
            let side = &mut sides[k];
            eprintln!(
                "xtask: scale round {} of {}: {}",
                round + 1,
                args.rounds,
                side.label
            );
            let outcome = one_round(side, &base, layout, &bench, &args)
                .with_context(|| format!("{} round {}", side.label, round + 1))?;
            side.outcomes.push(outcome);
        }
    }
    if args.dir.is_none() && !args.keep {
        let _ = std::fs::remove_dir(&base);
    }
    let table = render(&sides, &args);
    println!("{table}");
    if let Some(out) = &args.out {
        std::fs::write(out, &table).with_context(|| format!("cannot write {}", out.display()))?;
    }
    Ok(ExitCode::SUCCESS)
}

fn one_round(
    side: &Side,
    base: &Path,
    layout: Layout,
    bench: &Path,
    args: &ScaleArgs,
) -> Result<Outcome> {
    let dir = base.join(side.kind);
    if dir.exists() {
        std::fs::remove_dir_all(&dir)?;
    }
    let spec = ClusterSpec::new(
        layout,
        side.binary.clone(),
        &format!("cairn-scale-{}", side.kind),
        &dir,
        &format!("{}.log", side.kind),
        &cluster::bench_addresses(layout, side.slot),
    );
    let mut running = cluster::start(spec, &[0, 1, 2], false)?;
    cluster::wait_healthy(&mut running, CLUSTER_START_TIMEOUT)?;
    let endpoints = running.spec.endpoints();
    let pids = running.member_pids()?;
    let cpu_of = running.cpu_of_arg()?;
    let mut out = Outcome::default();

    let load = cairn_bench(
        bench,
        &endpoints,
        args,
        &["--workload", "fill", "--cpu-of", &cpu_of],
    )?;
    if load.errors > 0 {
        bail!(
            "{} of {} puts of the load failed: {:?}",
            load.errors,
            load.requests,
            load.error_messages
        );
    }
    out.load_qps = load.qps;
    out.load_p99_ms = load.p99_ms;
    out.load_cpu_us_per_put = load
        .members_cpu_us_per_request
        .context("cairn-bench reported no CPU time for the load")?;
    if args.overwrites > 0 {
        let total = args.overwrites.to_string();
        let history = cairn_bench(
            bench,
            &endpoints,
            args,
            &["--workload", "put", "--warmup", "0", "--total", &total],
        )?;
        out.overwrite_qps = history.qps;
    }

    thread::sleep(SETTLE);
    let rss: Vec<f64> = pids.iter().map(|&p| rss_mb(p)).collect::<Result<_>>()?;
    out.rss_mb = median_of(&rss);
    let sizes: Vec<f64> = running.spec.members[..3]
        .iter()
        .map(|m| disk_usage(&m.data_dir).map(|b| b as f64 / 1e6))
        .collect::<Result<_>>()?;
    out.data_mb = median_of(&sizes);
    eprintln!("xtask:   RSS {rss:.0?} MB, data dirs {sizes:.0?} MB");

    let scan = cairn_bench(bench, &endpoints, args, &["--workload", "scan"])?;
    if scan.errors > 0 {
        bail!("the scan failed: {:?}", scan.error_messages);
    }
    out.scan_s = scan.elapsed_secs;
    out.scan_keys = scan.keys.unwrap_or(0);
    if out.scan_keys != args.keys {
        bail!(
            "the scan listed {} keys, not the {} loaded",
            out.scan_keys,
            args.keys
        );
    }

    let revision = cluster_revision(&endpoints)?;
    let victim = a_follower(&running)?;
    eprintln!(
        "xtask:   kill -9 {} (a follower) at revision {revision}",
        running.spec.members[victim].name
    );
    running.crash_member(victim)?;
    let started = Instant::now();
    running.spawn_stopped(victim)?;
    out.restart_s = wait_ready(&running, victim, revision, started)?;

    let joiner = members::register(
        &mut running.spec,
        "m4",
        Instant::now() + CLUSTER_START_TIMEOUT,
    )?;
    let started = Instant::now();
    running.spawn_stopped(joiner)?;
    out.join_s = wait_ready(&running, joiner, revision, started)?;
    let joiner_pid = running.spec.members[joiner]
        .pid
        .context("the new member has no pid")?;
    out.join_rss_mb = rss_mb(joiner_pid)?;

    running.remove_dir_on_drop = !args.keep;
    Ok(out)
}

/// Runs cairn-bench with the shared settings plus `extra`; its one result.
fn cairn_bench(
    bench: &Path,
    endpoints: &str,
    args: &ScaleArgs,
    extra: &[&str],
) -> Result<BenchResult> {
    let mut cmd = Command::new(bench);
    cmd.arg("--endpoints")
        .arg(endpoints)
        .arg("--key-space")
        .arg(args.keys.to_string())
        .arg("--key-size")
        .arg(KEY_BYTES.to_string())
        .arg("--val-size")
        .arg(args.val_size.to_string())
        .arg("--clients")
        .arg(args.clients.to_string())
        .args(extra);
    let report: BenchReport = crate::bench::run_json(&mut cmd)?;
    report.results.into_iter().next().context("empty report")
}

/// Resident memory of a process, from /proc.
fn rss_mb(pid: u32) -> Result<f64> {
    let path = format!("/proc/{pid}/status");
    let status = std::fs::read_to_string(&path).with_context(|| format!("cannot read {path}"))?;
    let kib: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .with_context(|| format!("no VmRSS in {path}"))?;
    Ok(kib * 1024.0 / 1e6)
}

/// Bytes allocated on disk under `dir`, as `du` counts them (sparse and
/// preallocated files count what they occupy, not their length).
fn disk_usage(dir: &Path) -> Result<u64> {
    let mut total = 0;
    let mut pending = vec![dir.to_path_buf()];
    while let Some(d) = pending.pop() {
        for entry in
            std::fs::read_dir(&d).with_context(|| format!("cannot list {}", d.display()))?
        {
            let entry = entry?;
            let meta = entry.metadata()?;
            if meta.is_dir() {
                pending.push(entry.path());
            } else {
                total += meta.blocks() * 512;
            }
        }
    }
    Ok(total)
}

/// The highest revision any member reports.
fn cluster_revision(endpoints: &str) -> Result<i64> {
    etcdctl::endpoint_status(endpoints)?
        .iter()
        .map(|s| s.revision)
        .max()
        .context("no member answered endpoint status")
}

/// The index of a member that is not the leader.
fn a_follower(running: &RunningCluster) -> Result<usize> {
    let statuses = etcdctl::endpoint_status(&running.spec.endpoints())?;
    let follower = statuses
        .iter()
        .find(|s| s.leader != 0 && s.member_id != s.leader)
        .context("no member reports a leader it is not")?;
    running
        .spec
        .members
        .iter()
        .position(|m| m.client_addr().to_string() == follower.endpoint)
        .with_context(|| format!("{} is none of our members", follower.endpoint))
}

/// Waits (bounded) until member `i` answers at `revision`; the seconds
/// since `started`. Asks the `/v3/` gateway over plain HTTP (a new
/// connection per try, so a port that is not open yet costs nothing, where
/// a gRPC client would back off for a second).
fn wait_ready(running: &RunningCluster, i: usize, revision: i64, started: Instant) -> Result<f64> {
    let m = &running.spec.members[i];
    loop {
        if status_revision(m.client_addr()).is_some_and(|r| r >= revision) {
            let took = started.elapsed().as_secs_f64();
            eprintln!(
                "xtask:   {} ready at revision {revision} after {took:.2} s",
                m.name
            );
            return Ok(took);
        }
        if started.elapsed() > READY_TIMEOUT {
            bail!(
                "{} not ready at revision {revision} within {} s; its log is {}",
                m.name,
                READY_TIMEOUT.as_secs(),
                m.log.display()
            );
        }
        thread::sleep(READY_POLL);
    }
}

/// The revision in a member's `Maintenance.Status` answer, if it gives one.
fn status_revision(addr: std::net::SocketAddr) -> Option<i64> {
    #[derive(Deserialize)]
    struct Status {
        header: Header,
    }
    #[derive(Deserialize)]
    struct Header {
        // The gateway writes int64 as a JSON string.
        revision: String,
    }
    let (code, body) = health::post_json(addr, "/v3/maintenance/status", "{}").ok()?;
    if code != 200 {
        return None;
    }
    let status: Status = serde_json::from_str(&body).ok()?;
    status.header.revision.parse().ok()
}

fn render(sides: &[Side], args: &ScaleArgs) -> String {
    type Metric = (&'static str, fn(&Outcome) -> f64, usize);
    let metrics: [Metric; 11] = [
        ("load, puts/s", |o| o.load_qps, 0),
        ("load p99, ms", |o| o.load_p99_ms, 1),
        (
            "load CPU per put (3 members), µs",
            |o| o.load_cpu_us_per_put,
            0,
        ),
        ("overwrites, puts/s", |o| o.overwrite_qps, 0),
        ("RSS per member, MB", |o| o.rss_mb, 0),
        ("data dir per member, MB", |o| o.data_mb, 0),
        ("scan, keys only, pages of 1000, s", |o| o.scan_s, 2),
        ("restart after kill -9 to ready, s", |o| o.restart_s, 2),
        ("new member join to caught up, s", |o| o.join_s, 2),
        ("new member RSS, MB", |o| o.join_rss_mb, 0),
        ("keys listed by the scan", |o| o.scan_keys as f64, 0),
    ];
    let mut table = format!(
        "{} keys of {} bytes ({KEY_BYTES}-byte keys), then {} overwrites; {} clients; \
         three members and the client on one machine ({} cores); medians of {} round(s).\n\n",
        args.keys,
        args.val_size,
        args.overwrites,
        args.clients,
        thread::available_parallelism().map_or(0, |n| n.get()),
        args.rounds
    );
    table.push_str("| measure |");
    for s in sides {
        table.push_str(&format!(" {} |", s.label));
    }
    let ratio = sides.len() == 2;
    table.push_str(if ratio { " Cairn / etcd |\n" } else { "\n" });
    table.push_str(&"|---".repeat(1 + sides.len() + usize::from(ratio)));
    table.push_str("|\n");
    for (name, get, decimals) in metrics {
        let medians: Vec<f64> = sides
            .iter()
            .map(|s| median_of(&s.outcomes.iter().map(get).collect::<Vec<_>>()))
            .collect();
        table.push_str(&format!("| {name} |"));
        for m in &medians {
            table.push_str(&format!(" {m:.decimals$} |"));
        }
        if ratio {
            let cell = match medians.as_slice() {
                [a, b] if *b > 0.0 => format!("{:.2}×", a / b),
                _ => "–".into(),
            };
            table.push_str(&format!(" {cell} |"));
        }
        table.push('\n');
    }
    table
}
