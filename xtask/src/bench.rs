//! `cargo xtask bench [args]` runs the cairn-bench load generator;
//! `cargo xtask bench compare` runs the standard workloads against a fresh
//! three-member Cairn cluster and a fresh three-member etcd 3.4 cluster on
//! this machine, with the same client and flags, and prints a markdown table
//! for docs/benchmarks.md.

use std::fmt::Write as _;
use std::fs;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use serde::Deserialize;

use crate::bench_plugins::median_of;
use crate::cluster::{self, ClusterSpec, Layout, RunningCluster};
use crate::protoc::add_protoc_to_path;
use crate::util::{cargo, describe, display_cmd, find_on_path, run_captured, run_streamed};
use crate::{BenchClient, CompareArgs};

/// Startup of a fresh cluster is a few seconds; allow for a slow machine.
const CLUSTER_START_TIMEOUT: Duration = Duration::from_secs(60);

/// `cargo build --release -p cairn-tests --bin cairn-bench`; returns the
/// binary. cairn-tests depends on etcd-client, hence the protoc shim.
/// `$CAIRN_BENCH_BIN` names a binary to use instead (e.g. the one
/// `cargo build --release --workspace --bins` made: building it with `-p`
/// resolves features differently and recompiles many dependencies).
pub(crate) fn build_bench() -> Result<PathBuf> {
    if let Some(bin) = std::env::var_os("CAIRN_BENCH_BIN").filter(|b| !b.is_empty()) {
        let bin = std::path::absolute(PathBuf::from(bin))?;
        if !bin.is_file() {
            anyhow::bail!("$CAIRN_BENCH_BIN: {} is not a file", bin.display());
        }
        return Ok(bin);
    }
    let mut cmd = cargo();
    cmd.args([
        "build",
        "--release",
        "-p",
        "cairn-tests",
        "--bin",
        "cairn-bench",
    ]);
    add_protoc_to_path(&mut cmd)?;
    run_streamed(&mut cmd)?;
    Ok(crate::util::target_dir()
        .join("release")
        .join("cairn-bench"))
}

pub fn run(args: Vec<String>) -> Result<ExitCode> {
    let bench = build_bench()?;
    let mut cmd = Command::new(&bench);
    cmd.args(&args);
    eprintln!("$ {}", display_cmd(&cmd));
    let status = cmd
        .status()
        .with_context(|| format!("cannot run {}", bench.display()))?;
    // Pass cairn-bench's verdict through unchanged.
    Ok(match status.code() {
        Some(0) => ExitCode::SUCCESS,
        Some(code) => ExitCode::from(u8::try_from(code).unwrap_or(1)),
        None => {
            eprintln!("xtask: cairn-bench {}", describe(status));
            ExitCode::FAILURE
        }
    })
}

/// cairn-bench's `--format json` output (only the fields we show).
#[derive(Deserialize, Debug)]
struct BenchReport {
    settings: BenchSettings,
    results: Vec<WorkloadResult>,
}

#[derive(Deserialize, Debug)]
struct BenchSettings {
    clients: u64,
    conns: u64,
    total: Option<u64>,
    duration_secs: Option<f64>,
    key_size: u64,
    val_size: u64,
    key_space: u64,
}

#[derive(Deserialize, Debug)]
struct WorkloadResult {
    workload: String,
    requests: u64,
    errors: u64,
    qps: f64,
    p50_ms: f64,
    p99_ms: f64,
    max_ms: f64,
    /// The three members' CPU time per request during the measured phase
    /// (the load generator reads it, given `--cpu-of`).
    #[serde(default)]
    members_cpu_us_per_request: Option<f64>,
}

/// One side of the comparison.
struct Side {
    label: String,
    /// cairn-bench binary to run (Cairn or etcd).
    binary: PathBuf,
    /// Folder name under the compare dir, and log file stem.
    kind: &'static str,
    /// Address slot (see `cluster::bench_addresses`).
    slot: u8,
    /// One report per successful round.
    rounds: Vec<BenchReport>,
    /// Set once a round fails; the side then sits out the later rounds.
    error: Option<anyhow::Error>,
    /// The combined report, filled in after the last round.
    outcome: Option<BenchReport>,
}

pub fn compare(args: CompareArgs) -> Result<ExitCode> {
    let layout = Layout::from_flag(args.one_address);
    let base = std::path::absolute(args.dir.clone().unwrap_or_else(|| {
        crate::util::target_dir()
            .join("xtask")
            .join("bench-compare")
    }))?;

    // Cheap checks first, long builds after.
    let etcd_bin = find_etcd(args.etcd_bin.as_deref())?;
    let cairn_bin = cluster::cairn_binary()?;
    let (bench, client) = match args.client {
        BenchClient::Rust => (build_bench()?, "cairn-bench (Rust etcd-client)"),
        BenchClient::Go => (crate::gobench::build()?, "gobench (Go clientv3 3.4)"),
    };

    let mut sides = vec![Side {
        label: "Cairn".into(),
        binary: cairn_bin,
        kind: "cairn",
        slot: 1,
        rounds: Vec::new(),
        error: None,
        outcome: None,
    }];
    if let Some((bin, version)) = etcd_bin {
        sides.push(Side {
            label: format!("etcd {version}"),
            binary: bin,
            kind: "etcd",
            slot: 2,
            rounds: Vec::new(),
            error: None,
            outcome: None,
        });
    }

    // On a small shared machine run-to-run noise is large, and whichever
    // side runs second inherits the first one's disk and CPU aftermath. So
    // every round starts fresh clusters, rounds alternate the order, and the
    // table shows medians.
    for round in 0..args.rounds {
        let mut order: Vec<usize> = (0..sides.len()).collect();
        if round % 2 == 1 {
            order.reverse();
        }
        for i in order {
            let side = &mut sides[i];
            if side.error.is_some() {
                continue;
            }
            eprintln!(
                "xtask: round {} of {}: {}",
                round + 1,
                args.rounds,
                side.label
            );
            match bench_against(
                side.kind,
                side.binary.clone(),
                &base,
                layout,
                side.slot,
                &bench,
                &args.bench_args,
            ) {
                Ok(report) => side.rounds.push(report),
                Err(err) => {
                    eprintln!("xtask: the {} side failed: {err:#}", side.label);
                    side.error = Some(err);
                }
            }
        }
    }
    for side in &mut sides {
        if side.error.is_none() {
            side.outcome = combine(std::mem::take(&mut side.rounds));
        }
    }
    // Remove the (now empty) parent unless the user chose it.
    if args.dir.is_none() {
        let _ = fs::remove_dir(&base);
    }

    let table = render_table(&sides[0], sides.get(1), layout, args.rounds, client);
    println!("{table}");
    if let Some(out) = &args.out {
        if let Some(parent) = out.parent().filter(|p| !p.as_os_str().is_empty()) {
            fs::create_dir_all(parent)?;
        }
        fs::File::create(out)
            .and_then(|mut f| f.write_all(table.as_bytes()))
            .with_context(|| format!("cannot write {}", out.display()))?;
        eprintln!("xtask: table written to {}", out.display());
    }

    let failed = sides.iter().any(|s| s.error.is_some());
    Ok(if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

/// Folds the rounds of one side into one report: per workload the median of
/// QPS, p50 and p99 (robust to one disturbed round), the largest max, and
/// the summed request and error counts.
fn combine(mut rounds: Vec<BenchReport>) -> Option<BenchReport> {
    if rounds.len() <= 1 {
        return rounds.pop();
    }
    let mut results = Vec::new();
    for first in &rounds[0].results {
        let same: Vec<&WorkloadResult> = rounds
            .iter()
            .filter_map(|r| r.results.iter().find(|w| w.workload == first.workload))
            .collect();
        let median = |f: fn(&WorkloadResult) -> f64| {
            median_of(&same.iter().map(|w| f(w)).collect::<Vec<_>>())
        };
        // Only rounds that reported it (a generator without --cpu-of).
        let cpu: Vec<f64> = same
            .iter()
            .filter_map(|w| w.members_cpu_us_per_request)
            .collect();
        results.push(WorkloadResult {
            workload: first.workload.clone(),
            requests: same.iter().map(|w| w.requests).sum(),
            errors: same.iter().map(|w| w.errors).sum(),
            qps: median(|w| w.qps),
            p50_ms: median(|w| w.p50_ms),
            p99_ms: median(|w| w.p99_ms),
            max_ms: same.iter().map(|w| w.max_ms).fold(0.0, f64::max),
            members_cpu_us_per_request: (!cpu.is_empty()).then(|| median_of(&cpu)),
        });
    }
    let settings = rounds.swap_remove(0).settings;
    Some(BenchReport { settings, results })
}

/// The etcd to compare against, with its version; `None` (after saying how
/// to get one) if there is none, so only the Cairn half runs.
pub(crate) fn find_etcd(explicit: Option<&Path>) -> Result<Option<(PathBuf, String)>> {
    let bin = match explicit {
        Some(path) => {
            if !path.is_file() {
                bail!("etcd binary {} does not exist", path.display());
            }
            std::path::absolute(path)?
        }
        None => match find_on_path("etcd") {
            Some(path) => path,
            None => {
                eprintln!(
                    "xtask: no `etcd` on PATH, so only Cairn is measured. For the etcd half \
                     install etcd 3.4: `sudo apt-get install -y etcd-server` (Debian/Ubuntu), \
                     or pass --etcd-bin / ETCD_BIN"
                );
                return Ok(None);
            }
        },
    };
    let out = run_captured(Command::new(&bin).arg("--version"), Duration::from_secs(10))
        .with_context(|| format!("cannot run {} --version", bin.display()))?;
    // "etcd Version: 3.4.23"
    let version = out
        .stdout
        .lines()
        .find_map(|l| l.strip_prefix("etcd Version:"))
        .map(|v| v.trim().to_string())
        .unwrap_or_else(|| "(unknown version)".into());
    if !version.starts_with("3.4.") {
        eprintln!(
            "xtask: warning: {} is etcd {version}; Cairn targets etcd 3.4",
            bin.display()
        );
    }
    Ok(Some((bin, version)))
}

/// Starts a fresh cluster of `binary` under `base/<kind>`, runs cairn-bench
/// against it, and tears it down (also on error: the Drop guard).
fn bench_against(
    kind: &str,
    binary: PathBuf,
    base: &Path,
    layout: Layout,
    slot: u8,
    bench: &Path,
    extra: &[String],
) -> Result<BenchReport> {
    let dir = base.join(kind);
    clear_stale(&dir)?;
    let spec = ClusterSpec::new(
        layout,
        binary,
        &format!("cairn-bench-{kind}"),
        &dir,
        &format!("{kind}.log"),
        &cluster::bench_addresses(layout, slot),
    );
    eprintln!(
        "xtask: starting a three-member {kind} cluster ({}) in {}",
        spec.endpoints(),
        dir.display()
    );
    // Not detached: see `cluster::start`. Until the run has succeeded the
    // guard keeps the folder, so the logs of a failure can be read.
    let mut running: RunningCluster = cluster::start(spec, &[0, 1, 2], false)?;
    cluster::wait_healthy(&mut running, CLUSTER_START_TIMEOUT)?;

    let cpu_of = running.cpu_of_arg()?;
    let mut cmd = Command::new(bench);
    // The user's flags first; ours last, so they win (cairn-bench lets a
    // later occurrence override an earlier one).
    cmd.args(extra)
        .arg("--endpoints")
        .arg(running.spec.endpoints())
        .arg("--cpu-of")
        .arg(cpu_of);
    let report: BenchReport = run_json(&mut cmd).with_context(|| {
        format!(
            "cairn-bench against {kind}; the members' logs are kept in {}",
            dir.display()
        )
    })?;
    running.remove_dir_on_drop = true;
    drop(running);
    Ok(report)
}

/// Runs a load generator (cairn-bench or gobench) with `--format json` and
/// returns its parsed report; its progress goes to our stderr.
pub(crate) fn run_json<T: serde::de::DeserializeOwned>(cmd: &mut Command) -> Result<T> {
    cmd.args(["--format", "json"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    eprintln!("$ {}", display_cmd(cmd));
    let child = cmd
        .spawn()
        .with_context(|| format!("cannot run {}", display_cmd(cmd)))?;
    report_of(child)
}

/// Waits for a load generator started with its stdout piped and parses the
/// JSON report it printed there.
pub(crate) fn report_of<T: serde::de::DeserializeOwned>(child: std::process::Child) -> Result<T> {
    let out = child.wait_with_output()?;
    if !out.status.success() {
        bail!("the load generator failed ({})", describe(out.status));
    }
    let stdout = String::from_utf8_lossy(&out.stdout);
    serde_json::from_str(&stdout).with_context(|| {
        format!(
            "the load generator printed no JSON report: {:?}",
            stdout.trim()
        )
    })
}

/// A folder left by an interrupted earlier run is ours to delete if it has
/// our state file; anything else there is not touched.
fn clear_stale(dir: &Path) -> Result<()> {
    if !dir.exists() {
        return Ok(());
    }
    if dir.join("cluster.json").is_file() {
        fs::remove_dir_all(dir).with_context(|| format!("cannot remove {}", dir.display()))?;
        return Ok(());
    }
    bail!(
        "{} exists and was not made by xtask; pass another --dir",
        dir.display()
    )
}

/// What was measured and how: the lines above the table.
fn preamble(
    cairn: &Side,
    etcd: Option<&Side>,
    layout: Layout,
    rounds: u32,
    client: &str,
) -> String {
    let mut s = String::new();
    let settings = cairn
        .outcome
        .as_ref()
        .map(|r| &r.settings)
        .or_else(|| etcd.and_then(|e| e.outcome.as_ref()).map(|r| &r.settings));
    let etcd_label = etcd.map_or("etcd", |e| e.label.as_str());
    let _ = writeln!(
        s,
        "Cairn vs {etcd_label}: three members each, on one machine ({} cores), \
         members on {}.",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        match layout {
            Layout::ThreeAddresses => "separate loopback addresses",
            Layout::OneAddress => "127.0.0.1",
        }
    );
    if let Some(st) = settings {
        let amount = match (st.duration_secs, st.total) {
            (Some(d), _) => format!("{d}s per workload"),
            (None, Some(t)) => format!("{t} requests per workload"),
            _ => String::new(),
        };
        let _ = writeln!(
            s,
            "{client}: {} clients over {} connections, {amount}, {}-byte keys \
             (key space {}), {}-byte values.",
            st.clients, st.conns, st.key_size, st.key_space, st.val_size
        );
    }
    if rounds > 1 {
        let _ = writeln!(
            s,
            "Medians of {rounds} rounds (fresh clusters every round, the order of the two \
             alternating); max is the largest seen in any round."
        );
    } else {
        let _ = writeln!(
            s,
            "A single round: expect run-to-run noise; use --rounds 3 or more for numbers to publish."
        );
    }
    let _ = writeln!(
        s,
        "CPU µs/op: the three members' CPU time (user + system, from /proc) during a \
         workload's measured phase, per request."
    );
    s
}

fn render_table(
    cairn: &Side,
    etcd: Option<&Side>,
    layout: Layout,
    rounds: u32,
    client: &str,
) -> String {
    let mut s = preamble(cairn, etcd, layout, rounds, client);
    s.push('\n');
    s.push_str(
        "| Workload | Cairn QPS | etcd QPS | QPS Cairn/etcd | Cairn p50 ms | etcd p50 ms \
         | Cairn p99 ms | etcd p99 ms | p99 Cairn/etcd | Cairn max ms | etcd max ms \
         | Cairn CPU µs/op | etcd CPU µs/op | CPU Cairn/etcd |\n",
    );
    s.push_str("|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|\n");

    let cairn_rows = cairn.outcome.as_ref().map(|r| &r.results);
    let etcd_rows = etcd.and_then(|e| e.outcome.as_ref()).map(|r| &r.results);
    // Workloads in the order cairn-bench ran them (whichever side has them).
    let mut names: Vec<&str> = Vec::new();
    for rows in [cairn_rows, etcd_rows].into_iter().flatten() {
        for r in rows {
            if !names.contains(&r.workload.as_str()) {
                names.push(&r.workload);
            }
        }
    }
    let num = |v: Option<f64>, decimals: usize| {
        v.map_or("n/a".to_string(), |v| format!("{v:.decimals$}"))
    };
    let ratio = |a: Option<f64>, b: Option<f64>| match (a, b) {
        (Some(a), Some(b)) if b > 0.0 => format!("{:.2}", a / b),
        _ => "n/a".to_string(),
    };
    let mut notes = Vec::new();
    for name in names {
        let c = find_row(cairn_rows, name);
        let e = find_row(etcd_rows, name);
        let _ = writeln!(
            s,
            "| {name} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            num(c.map(|r| r.qps), 0),
            num(e.map(|r| r.qps), 0),
            ratio(c.map(|r| r.qps), e.map(|r| r.qps)),
            num(c.map(|r| r.p50_ms), 2),
            num(e.map(|r| r.p50_ms), 2),
            num(c.map(|r| r.p99_ms), 2),
            num(e.map(|r| r.p99_ms), 2),
            ratio(c.map(|r| r.p99_ms), e.map(|r| r.p99_ms)),
            num(c.map(|r| r.max_ms), 2),
            num(e.map(|r| r.max_ms), 2),
            num(c.and_then(|r| r.members_cpu_us_per_request), 0),
            num(e.and_then(|r| r.members_cpu_us_per_request), 0),
            ratio(
                c.and_then(|r| r.members_cpu_us_per_request),
                e.and_then(|r| r.members_cpu_us_per_request)
            ),
        );
        for (side, r) in [("Cairn", c), ("etcd", e)] {
            if let Some(r) = r.filter(|r| r.errors > 0) {
                notes.push(format!(
                    "{side} {name}: {} of {} requests failed",
                    r.errors, r.requests
                ));
            }
        }
    }
    for side in [Some(cairn), etcd].into_iter().flatten() {
        if let Some(err) = &side.error {
            notes.push(format!("{} not measured: {err:#}", side.label));
        }
    }
    if etcd.is_none() {
        notes.push("etcd not measured: no etcd binary found".into());
    }
    if !notes.is_empty() {
        s.push('\n');
        for n in notes {
            let _ = writeln!(s, "- {n}");
        }
    }
    s
}

fn find_row<'a>(rows: Option<&'a Vec<WorkloadResult>>, name: &str) -> Option<&'a WorkloadResult> {
    rows?.iter().find(|r| r.workload == name)
}
