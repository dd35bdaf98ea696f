//! `cargo xtask robustness`: fault-injection runs with history checks
//! (the `cairn-robustness` binary of cairn-tests), against Cairn, real etcd
//! 3.4 or both with the same seeds, and a side-by-side summary.
//!
//! Short by default (one 30 s run drawing from every fault kind); `--long`
//! is 200 randomized runs of 60 s. Every run prints its seed; a failing run
//! prints its fault schedule and the minimal slice of history showing each
//! violation, and `--seed S --runs 1` replays its schedule.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

use anyhow::{Context, Result, bail};
use clap::{Args, ValueEnum};
use serde_json::Value;

use crate::protoc::add_protoc_to_path;
use crate::util::{cargo, describe, display_cmd, run_streamed, target_dir};

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum TargetArg {
    Cairn,
    Etcd,
    Both,
}

#[derive(Args)]
pub struct RobustnessArgs {
    /// What to run against.
    #[arg(long, value_enum, default_value = "cairn")]
    target: TargetArg,
    /// Number of runs (per target); run i uses seed + i.
    #[arg(long)]
    runs: Option<u64>,
    /// Workload length of each run.
    #[arg(long)]
    seconds: Option<u64>,
    /// First seed (default: from the clock).
    #[arg(long)]
    seed: Option<u64>,
    /// Fault kinds to draw from (repeat; default: all), e.g. kill-leader,
    /// isolate-follower, one-way-to-leader, delay, stop-leader, disk-full.
    #[arg(long = "fault")]
    faults: Vec<String>,
    /// 200 runs of 60 s (unless --runs/--seconds say otherwise).
    #[arg(long)]
    long: bool,
    /// Debug builds instead of release (slower members, more timeouts).
    #[arg(long)]
    debug: bool,
    /// Where reports, histories and the summary go
    /// (default target/robustness).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Pass --snapshot-count to the members.
    #[arg(long)]
    snapshot_count: Option<u64>,
    /// Run nothing: summarize the reports already in the output directory
    /// (e.g. of a campaign that was stopped early).
    #[arg(long)]
    summarize: bool,
}

/// The `report-<target>-<seed>.json` files in `out`, by target.
fn existing_reports(out: &Path) -> Result<BTreeMap<&'static str, Vec<PathBuf>>> {
    let mut reports: BTreeMap<&'static str, Vec<PathBuf>> = BTreeMap::new();
    for e in std::fs::read_dir(out).with_context(|| format!("cannot read {}", out.display()))? {
        let p = e?.path();
        let name = p
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        for t in ["cairn", "etcd"] {
            if name.starts_with(&format!("report-{t}-")) && name.ends_with(".json") {
                reports.entry(t).or_default().push(p.clone());
            }
        }
    }
    for v in reports.values_mut() {
        v.sort();
    }
    Ok(reports)
}

/// Builds cairn and cairn-robustness; returns (cairn, runner).
fn build(debug: bool) -> Result<(PathBuf, PathBuf)> {
    let mut cmd = cargo();
    cmd.arg("build");
    if !debug {
        cmd.arg("--release");
    }
    cmd.args([
        "-p",
        "cairn",
        "--bin",
        "cairn",
        "-p",
        "cairn-tests",
        "--bin",
        "cairn-robustness",
    ]);
    add_protoc_to_path(&mut cmd)?;
    run_streamed(&mut cmd)?;
    let dir = target_dir().join(if debug { "debug" } else { "release" });
    Ok((dir.join("cairn"), dir.join("cairn-robustness")))
}

pub fn run(args: RobustnessArgs) -> Result<ExitCode> {
    let targets: Vec<&str> = match args.target {
        TargetArg::Cairn => vec!["cairn"],
        TargetArg::Etcd => vec!["etcd"],
        TargetArg::Both => vec!["cairn", "etcd"],
    };
    if targets.contains(&"etcd") && !Path::new("/usr/bin/etcd").exists() {
        bail!("/usr/bin/etcd is missing (apt-get install etcd-server)");
    }
    let runs = args.runs.unwrap_or(if args.long { 200 } else { 1 });
    let seconds = args.seconds.unwrap_or(if args.long { 60 } else { 30 });
    let seed = args.seed.unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| d.as_secs())
    });
    let out = args
        .out
        .clone()
        .unwrap_or_else(|| target_dir().join("robustness"));
    std::fs::create_dir_all(&out).with_context(|| format!("cannot create {}", out.display()))?;
    if args.summarize {
        let summary = summarize(&existing_reports(&out)?)?;
        print!("{summary}");
        std::fs::write(out.join("summary.md"), &summary)?;
        return Ok(ExitCode::SUCCESS);
    }
    let (cairn, runner) = build(args.debug)?;
    eprintln!(
        "robustness: {runs} run(s) of {seconds} s per target from seed {seed}; reports in {}",
        out.display()
    );

    let mut failures = Vec::new();
    let mut reports: BTreeMap<&str, Vec<PathBuf>> = BTreeMap::new();
    for i in 0..runs {
        let s = seed + i;
        for t in &targets {
            let json = out.join(format!("report-{t}-{s}.json"));
            let mut cmd = Command::new(&runner);
            cmd.args(["run", "--runs", "1"])
                .args(["--seconds", &seconds.to_string()])
                .args(["--seed", &s.to_string()])
                .arg("--json")
                .arg(&json)
                .arg("--history-dir")
                .arg(out.join("histories"))
                .env("CAIRN_TEST_TARGET", t)
                .env("CAIRN_BIN", &cairn);
            for f in &args.faults {
                cmd.args(["--fault", f]);
            }
            if let Some(n) = args.snapshot_count {
                cmd.args(["--snapshot-count", &n.to_string()]);
            }
            eprintln!("$ CAIRN_TEST_TARGET={t} {}", display_cmd(&cmd));
            let status = cmd
                .status()
                .with_context(|| format!("cannot run {}", runner.display()))?;
            if !status.success() {
                failures.push(format!("{t} seed {s}: {}", describe(status)));
            }
            if json.exists() {
                reports.entry(t).or_default().push(json);
            }
        }
    }

    let summary = summarize(&reports)?;
    print!("{summary}");
    std::fs::write(out.join("summary.md"), &summary)?;
    if failures.is_empty() {
        Ok(ExitCode::SUCCESS)
    } else {
        eprintln!("robustness: {} run(s) failed:", failures.len());
        for f in &failures {
            eprintln!("  {f}");
        }
        Ok(ExitCode::FAILURE)
    }
}

/// Totals per fault kind over a target's runs.
#[derive(Default)]
struct Totals {
    faults: u64,
    skipped: u64,
    availability: Vec<f64>,
    recovery_ms: Vec<f64>,
    unrecovered: u64,
    ok: u64,
    failed: u64,
    unknown: u64,
    /// Runs with at least one such fault, and the violations in them (a
    /// run mixes faults: its violations count for each of its kinds).
    runs: u64,
    run_violations: u64,
    run_lost_writes: u64,
}

/// Totals over a target's runs.
#[derive(Default, Clone, Copy)]
struct RunTotals {
    runs: u64,
    passed: u64,
    failed: u64,
    undecided: u64,
    ops_ok: u64,
    ops_failed: u64,
    ops_unknown: u64,
    violations: u64,
    /// Acknowledged writes the durability check covered, and those it found
    /// lost.
    acked: u64,
    lost: u64,
    faults: u64,
    /// Raft term increase over the runs (an upper bound on elections).
    terms: u64,
}

/// Durability findings of kind "lost-write" in a run report.
fn lost_writes(r: &Value) -> u64 {
    r["check"]["durability"]["violations"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|f| f["kind"].as_str() == Some("lost-write"))
        .count() as u64
}

fn mean(v: &[f64]) -> Option<f64> {
    (!v.is_empty()).then(|| v.iter().sum::<f64>() / v.len() as f64)
}

fn summarize(reports: &BTreeMap<&str, Vec<PathBuf>>) -> Result<String> {
    let (per, overall) = tally(reports)?;
    let targets: Vec<&str> = reports.keys().copied().collect();
    Ok(render_summary(&targets, &per, &overall))
}

/// Per target: totals over its runs, and per fault kind.
type Tallies<'a> = (
    BTreeMap<&'a str, BTreeMap<String, Totals>>,
    BTreeMap<&'a str, RunTotals>,
);

/// Adds up the runs in the report files of each target.
fn tally<'a>(reports: &BTreeMap<&'a str, Vec<PathBuf>>) -> Result<Tallies<'a>> {
    let mut per: BTreeMap<&'a str, BTreeMap<String, Totals>> = BTreeMap::new();
    let mut overall: BTreeMap<&'a str, RunTotals> = BTreeMap::new();
    for (t, files) in reports {
        for f in files {
            let bytes = std::fs::read(f)?;
            let runs: Vec<Value> = serde_json::from_slice(&bytes)
                .with_context(|| format!("reading {}", f.display()))?;
            for r in runs {
                let o = overall.entry(t).or_default();
                o.runs += 1;
                let clean = r["errors"].as_array().is_none_or(|e| e.is_empty());
                match r["outcome"].as_str() {
                    Some("Pass") if clean => o.passed += 1,
                    Some("Undecided") => o.undecided += 1,
                    _ => o.failed += 1,
                }
                o.ops_ok += r["ops_ok"].as_u64().unwrap_or(0);
                o.ops_failed += r["ops_failed"].as_u64().unwrap_or(0);
                o.ops_unknown += r["ops_unknown"].as_u64().unwrap_or(0);
                o.violations += r["violations"].as_u64().unwrap_or(0);
                o.acked += r["check"]["durability"]["acknowledged"]
                    .as_u64()
                    .unwrap_or(0);
                o.lost += lost_writes(&r);
                let mut kinds_here = std::collections::BTreeSet::new();
                o.terms += r["term_end"]
                    .as_u64()
                    .unwrap_or(0)
                    .saturating_sub(r["term_start"].as_u64().unwrap_or(0));
                for fault in r["faults"].as_array().into_iter().flatten() {
                    let kind = fault["kind"].as_str().unwrap_or("?").to_string();
                    let tot = per.entry(t).or_default().entry(kind.clone()).or_default();
                    if kinds_here.insert(kind) {
                        tot.runs += 1;
                        tot.run_violations += r["violations"].as_u64().unwrap_or(0);
                        tot.run_lost_writes += lost_writes(&r);
                    }
                    if !fault["skipped"].is_null() {
                        tot.skipped += 1;
                        continue;
                    }
                    tot.faults += 1;
                    o.faults += 1;
                    if let Some(a) = fault["write_availability"].as_f64() {
                        tot.availability.push(a);
                    }
                    match fault["recovery_ms"].as_f64() {
                        Some(ms) => tot.recovery_ms.push(ms),
                        None => tot.unrecovered += 1,
                    }
                    tot.ok += fault["ops_ok"].as_u64().unwrap_or(0);
                    tot.failed += fault["ops_failed"].as_u64().unwrap_or(0);
                    tot.unknown += fault["ops_unknown"].as_u64().unwrap_or(0);
                }
            }
        }
    }
    Ok((per, overall))
}

/// The summary's two markdown tables: per target, and per fault kind.
fn render_summary(
    targets: &[&str],
    per: &BTreeMap<&str, BTreeMap<String, Totals>>,
    overall: &BTreeMap<&str, RunTotals>,
) -> String {
    let mut s = String::from("\n## Robustness summary\n\n");
    s.push_str(
        "| target | runs | passed | failed | undecided | ops ok | failed | unknown | faults | violations | acked writes | lost | terms |\n",
    );
    s.push_str("|---|---|---|---|---|---|---|---|---|---|---|---|---|\n");
    for t in targets {
        let o = overall.get(t).copied().unwrap_or_default();
        let _ = writeln!(
            s,
            "| {t} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            o.runs,
            o.passed,
            o.failed,
            o.undecided,
            o.ops_ok,
            o.ops_failed,
            o.ops_unknown,
            o.faults,
            o.violations,
            o.acked,
            o.lost,
            o.terms
        );
    }
    s.push_str("\nPer fault kind (means over the faults; availability = share of 100 ms slots with an acknowledged write; recovery = heal until a write succeeds through every member; ops invoked during the fault):\n\n");
    let _ = write!(s, "| fault |");
    for t in targets {
        let _ = write!(
            s,
            " {t}: runs | faults | violations / lost writes | avail | recovery | ok/failed/unknown |"
        );
    }
    s.push('\n');
    let _ = write!(s, "|---|");
    for _ in targets {
        s.push_str("---|---|---|---|---|---|");
    }
    s.push('\n');
    let kinds: std::collections::BTreeSet<&String> = per.values().flat_map(|m| m.keys()).collect();
    for k in kinds {
        let _ = write!(s, "| {k} |");
        for t in targets {
            match per.get(t).and_then(|m| m.get(k)) {
                Some(x) if x.faults == 0 => {
                    let _ = write!(
                        s,
                        " {} | 0 (skipped {}) | - | - | - | - |",
                        x.runs, x.skipped
                    );
                }
                Some(x) => {
                    let avail = mean(&x.availability).map_or("-".into(), |a| format!("{a:.2}"));
                    let rec = mean(&x.recovery_ms)
                        .map_or("-".into(), |ms| format!("{:.2} s", ms / 1000.0));
                    let unrec = if x.unrecovered > 0 {
                        format!(" ({} not recovered in window)", x.unrecovered)
                    } else {
                        String::new()
                    };
                    let _ = write!(
                        s,
                        " {} | {} | {} / {} | {avail} | {rec}{unrec} | {}/{}/{} |",
                        x.runs,
                        x.faults,
                        x.run_violations,
                        x.run_lost_writes,
                        x.ok,
                        x.failed,
                        x.unknown
                    );
                }
                None => {
                    let _ = write!(s, " - | - | - | - | - | - |");
                }
            }
        }
        s.push('\n');
    }
    s
}
