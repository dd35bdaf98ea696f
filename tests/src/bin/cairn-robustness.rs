//! `cairn-robustness`: robustness runs against a three-member cluster of the
//! harness's target (Cairn; real etcd with `CAIRN_TEST_TARGET=etcd`), or a
//! re-check of a saved history. `cargo xtask robustness` drives it.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Result;
use cairn_robustness::check::Outcome;
use cairn_robustness::faults::FaultKind;
use cairn_robustness::linearizability::KvCheckOptions;
use cairn_tests::robustness::{RunConfig, RunReport, recheck, run};
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "cairn-robustness",
    about = "Fault-injection runs with history checks"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Runs the workload under a seeded fault schedule and checks it.
    Run {
        /// Number of runs; run i uses seed + i.
        #[arg(long, default_value_t = 1)]
        runs: u64,
        /// Length of each run's workload.
        #[arg(long, default_value_t = 60)]
        seconds: u64,
        /// First seed (default: from the clock; printed).
        #[arg(long)]
        seed: Option<u64>,
        /// Fault kinds to draw from (repeat; default: all).
        #[arg(long = "fault")]
        faults: Vec<FaultKind>,
        /// Time budget of the KV check per run, in seconds.
        #[arg(long, default_value_t = 300)]
        check_seconds: u64,
        /// Write the reports (one JSON array) here.
        #[arg(long)]
        json: Option<PathBuf>,
        /// Keep each run's history here (JSON), to re-check with `check`.
        #[arg(long)]
        history_dir: Option<PathBuf>,
        /// Pass --snapshot-count to the members.
        #[arg(long)]
        snapshot_count: Option<u64>,
    },
    /// Starts a three-member cluster of the target whose peer traffic goes
    /// through the proxy with every link delayed `--one-way-ms` each way
    /// (a round trip of twice that between members; clients connect
    /// directly), prints the client endpoints as one line on stdout, and
    /// serves until stdin closes. `cargo xtask bench net` drives it.
    Serve {
        /// Delay of each direction of every member pair, in milliseconds
        /// (0: the proxy only).
        #[arg(long, default_value_t = 0.0)]
        one_way_ms: f64,
    },
    /// Re-checks a saved history and prints the violations.
    Check {
        history: PathBuf,
        #[arg(long, default_value_t = 300)]
        check_seconds: u64,
    },
}

fn kv_options(seconds: u64) -> KvCheckOptions {
    KvCheckOptions {
        time_budget: Duration::from_secs(seconds),
        ..KvCheckOptions::default()
    }
}

fn main() -> ExitCode {
    match real_main() {
        Ok(code) => code,
        Err(e) => {
            eprintln!("cairn-robustness: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// `serve`: see its help.
fn serve(one_way_ms: f64) -> Result<ExitCode> {
    use cairn_robustness::proxy::Link;
    if !(0.0..=1000.0).contains(&one_way_ms) {
        anyhow::bail!("--one-way-ms must be between 0 and 1000");
    }
    let (cluster, proxy) = cairn_tests::robustness::proxied_cluster(
        cairn_tests::Options {
            token: "netbench".into(),
            ..cairn_tests::Options::default()
        },
        1,
    )?;
    if one_way_ms > 0.0 {
        proxy.set_all(Link::Delay {
            base: Duration::from_secs_f64(one_way_ms / 1e3),
            jitter: Duration::ZERO,
        });
    }
    cluster.wait_healthy(Duration::from_secs(60));
    println!("{}", cluster.endpoints());
    // Our driver closes stdin when it is done; then the cluster and the
    // proxy stop with us (their Drop).
    let mut sink = Vec::new();
    std::io::Read::read_to_end(&mut std::io::stdin(), &mut sink)?;
    drop(proxy);
    drop(cluster);
    Ok(ExitCode::SUCCESS)
}

fn real_main() -> Result<ExitCode> {
    match Cli::parse().cmd {
        Cmd::Serve { one_way_ms } => serve(one_way_ms),
        Cmd::Check {
            history,
            check_seconds,
        } => {
            let report = recheck(&history, &kv_options(check_seconds))?;
            print!("{}", report.render_violations());
            println!(
                "{:?}: {} violation(s)",
                report.outcome(),
                report.violations()
            );
            Ok(match report.outcome() {
                Outcome::Pass => ExitCode::SUCCESS,
                Outcome::Violation => ExitCode::FAILURE,
                Outcome::Undecided => ExitCode::from(3),
            })
        }
        Cmd::Run {
            runs,
            seconds,
            seed,
            faults,
            check_seconds,
            json,
            history_dir,
            snapshot_count,
        } => {
            let first = seed.unwrap_or_else(|| {
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(1, |d| d.as_secs())
            });
            let faults = if faults.is_empty() {
                FaultKind::ALL.to_vec()
            } else {
                faults
            };
            let mut reports: Vec<RunReport> = Vec::new();
            let (mut failed, mut undecided) = (0, 0);
            for i in 0..runs {
                let seed = first + i;
                println!("== run {}/{runs}: seed {seed}", i + 1);
                let mut cfg = RunConfig::new(seed, seconds, faults.clone());
                cfg.check = kv_options(check_seconds);
                cfg.history_dir = history_dir.clone();
                cfg.snapshot_count = snapshot_count;
                let report = run(&cfg)?;
                print!("{}", report.render());
                match report.outcome {
                    Outcome::Violation => {
                        failed += 1;
                        print!("{}", report.render_failure());
                    }
                    Outcome::Undecided => {
                        undecided += 1;
                        print!("{}", report.render_failure());
                    }
                    Outcome::Pass if !report.errors.is_empty() => {
                        failed += 1;
                        print!("{}", report.render_failure());
                    }
                    Outcome::Pass => {}
                }
                reports.push(report);
                // Keep what we have, in case a later run is interrupted.
                if let Some(p) = &json {
                    std::fs::write(p, serde_json::to_vec_pretty(&reports)?)?;
                }
            }
            println!(
                "{runs} run(s) from seed {first}: {} passed, {failed} failed, {undecided} undecided",
                runs - failed - undecided
            );
            Ok(if failed > 0 {
                ExitCode::FAILURE
            } else if undecided > 0 {
                ExitCode::from(3)
            } else {
                ExitCode::SUCCESS
            })
        }
    }
}
