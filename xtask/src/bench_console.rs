//! `cargo xtask bench console`: what an open web console costs the data
//! path (issue 19: with a browser on the metrics page, put throughput at 64
//! clients stays within noise of none).
//!
//! Every round starts a fresh three-member Cairn cluster (release build) and
//! runs the put workload of `cairn-bench` four times on it, with and
//! without viewers in ABBA order (mirrored every other round), as
//! `bench plugins` does for plugins: runs on the same cluster in an order
//! that cancels a linear drift are what make a few-percent difference
//! measurable on a noisy machine.
//!
//! A viewer does what a browser showing the metrics page does: it loads
//! `/ui/metrics` and the page's stylesheet and script, then reloads the
//! page at the interval the page itself asks for (its `<meta
//! http-equiv="refresh">`, 30 s; the metrics page opens no event stream),
//! fetching the assets again only when their `max-age` has run out. There
//! is one viewer on every member, so whichever member leads has one: an
//! upper bound on "a browser open on the metrics page". `--reload-every`
//! makes the viewers reload faster, to find what the page costs when it is
//! loaded far more often than a browser does. The in-process metrics
//! sampler runs in both variants (it runs whenever `--enable-ui` is on,
//! viewer or not).
//!
//! Each run measures for `--duration 30s` unless the extra arguments say
//! otherwise. A viewer opens the page as the run starts (during its
//! warm-up) and reloads it half a period later, then every period, so each
//! 30-s run holds one reload per member inside its measured window.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::Args;

use crate::bench_plugins::{Run, median, median_of, run_bench};
use crate::cluster::{self, ClusterSpec, Layout, RunningCluster};

const CLUSTER_START_TIMEOUT: Duration = Duration::from_secs(60);
/// What the console's assets say in `Cache-Control: max-age` (a browser
/// fetches them again after that).
const ASSETS_MAX_AGE: Duration = Duration::from_secs(300);
/// How long each run measures unless the extra arguments choose.
const DEFAULT_RUN: &str = "30s";
/// The metrics page's console assets, as a browser loads them with it.
const ASSETS: [&str; 2] = ["/ui/assets/console.css", "/ui/assets/console.js"];

#[derive(Args)]
pub struct ConsoleBenchArgs {
    /// Rounds; each starts a fresh cluster and runs both variants twice on
    /// it (ABBA, mirrored every other round).
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..))]
    rounds: u32,
    /// Every member on 127.0.0.1 with distinct ports.
    #[arg(long)]
    one_address: bool,
    /// Where the clusters keep their data (default:
    /// target/xtask/bench-console; not /tmp, which may be tmpfs).
    #[arg(long)]
    dir: Option<PathBuf>,
    /// Reload the metrics page this often (seconds) instead of the
    /// interval the page asks for: a stress variant, not a browser.
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    reload_every: Option<u64>,
    /// Extra arguments for cairn-bench (e.g. `--clients 64 --duration
    /// 30s`); the workload is always `put`. Default: `--duration 30s`.
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    bench_args: Vec<String>,
}

#[allow(clippy::too_many_lines)] // a benchmark script: set up, measure each round, print the report
pub fn run(args: ConsoleBenchArgs) -> Result<ExitCode> {
    let layout = Layout::from_flag(args.one_address);
    let base = std::path::absolute(args.dir.clone().unwrap_or_else(|| {
        crate::util::target_dir()
            .join("xtask")
            .join("bench-console")
    }))?;
    let cairn = cluster::cairn_binary()?;
    let bench = crate::bench::build_bench()?;
    let mut bench_args = args.bench_args.clone();
    if !bench_args
        .iter()
        .any(|a| a.starts_with("--duration") || a.starts_with("--total"))
    {
        bench_args.extend(["--duration".to_string(), DEFAULT_RUN.to_string()]);
    }
    let reload = args.reload_every.map(Duration::from_secs);

    let (mut without, mut with) = (Vec::new(), Vec::new());
    let (mut qps_ratios, mut p99_ratios, mut cpu_ratios) = (Vec::new(), Vec::new(), Vec::new());
    let mut pages = 0;
    for round in 0..args.rounds {
        eprintln!("xtask: round {} of {}", round + 1, args.rounds);
        let order = if round % 2 == 0 {
            [false, true, true, false]
        } else {
            [true, false, false, true]
        };
        let (runs, loaded) =
            measure_round(&cairn, &bench, &base, layout, &order, &bench_args, reload)?;
        pages += loaded;
        let mean = |want: bool, f: fn(&Run) -> f64| {
            let v: Vec<f64> = order
                .iter()
                .zip(&runs)
                .filter(|(w, _)| **w == want)
                .map(|(_, r)| f(r))
                .collect();
            v.iter().sum::<f64>() / v.len() as f64
        };
        qps_ratios.push(mean(true, |r| r.qps) / mean(false, |r| r.qps));
        p99_ratios.push(mean(true, |r| r.p99_ms) / mean(false, |r| r.p99_ms));
        cpu_ratios.push(mean(true, |r| r.cpu_us_per_put) / mean(false, |r| r.cpu_us_per_put));
        for (viewed, run) in order.into_iter().zip(runs) {
            if viewed {
                with.push(run);
            } else {
                without.push(run);
            }
        }
    }
    let _ = std::fs::remove_dir(&base);
    let (a, b) = (median(&without), median(&with));
    let viewer = match reload {
        None => "a browser on the metrics page of every member".to_string(),
        Some(d) => format!(
            "the metrics page loaded every {} s on every member",
            d.as_secs()
        ),
    };
    println!(
        "Medians of {} runs each ({} rounds, ABBA on one cluster per round).",
        without.len(),
        args.rounds
    );
    println!();
    println!(
        "| Put workload | QPS | p50 ms | p99 ms | max ms | members' CPU µs per put | requests | errors |"
    );
    println!("|---|--:|--:|--:|--:|--:|--:|--:|");
    for (label, r) in [("no console open", &a), (viewer.as_str(), &b)] {
        println!(
            "| {label} | {:.0} | {:.2} | {:.2} | {:.2} | {:.0} | {} | {} |",
            r.qps, r.p50_ms, r.p99_ms, r.max_ms, r.cpu_us_per_put, r.requests, r.errors
        );
    }
    println!();
    let show = |v: &[f64]| {
        v.iter()
            .map(|r| format!("{r:.3}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let q = median_of(&qps_ratios);
    println!(
        "Throughput with viewers / without, median of {} rounds (each the same cluster, ABBA): \
         {q:.3} ({:+.1} %); per round: {}.",
        args.rounds,
        (q - 1.0) * 100.0,
        show(&qps_ratios)
    );
    let p = median_of(&p99_ratios);
    println!(
        "p99 latency with viewers / without: {p:.3} ({:+.1} %); per round: {}.",
        (p - 1.0) * 100.0,
        show(&p99_ratios)
    );
    let c = median_of(&cpu_ratios);
    println!(
        "Members' CPU time per put, with / without: {c:.3} ({:+.1} %); per round: {}.",
        (c - 1.0) * 100.0,
        show(&cpu_ratios)
    );
    println!(
        "Console requests served to the viewers: {pages} (pages and assets, all answered 200)."
    );
    let errors = without.iter().chain(&with).map(|r| r.errors).sum::<u64>();
    Ok(if errors == 0 {
        ExitCode::SUCCESS
    } else {
        eprintln!("xtask: {errors} requests failed");
        ExitCode::FAILURE
    })
}

/// One round: a fresh cluster, then one put workload per entry of `order`
/// (`true`: with viewers). Returns the runs and the pages the viewers
/// loaded.
fn measure_round(
    cairn: &Path,
    bench: &Path,
    base: &Path,
    layout: Layout,
    order: &[bool],
    extra: &[String],
    reload: Option<Duration>,
) -> Result<(Vec<Run>, u64)> {
    let dir = base.join("cluster");
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
        "cairn-bench-console",
        &dir,
        "cairn.log",
        &cluster::bench_addresses(layout, 5),
    );
    let mut running: RunningCluster = cluster::start(spec, &[0, 1, 2], false)?;
    cluster::wait_healthy(&mut running, CLUSTER_START_TIMEOUT)?;
    let members: Vec<SocketAddr> = running
        .spec
        .members
        .iter()
        .map(|m| m.client_addr())
        .collect();
    let cpu_of = running.cpu_of_arg()?;
    let mut runs = Vec::with_capacity(order.len());
    let mut pages = 0;
    for &viewed in order {
        eprintln!(
            "xtask: {}",
            if viewed {
                "with console viewers"
            } else {
                "without viewers"
            }
        );
        let viewers = viewed.then(|| Viewers::start(&members, reload));
        let run = run_bench(bench, &running.spec.endpoints(), &cpu_of, extra, &dir)?;
        if let Some(v) = viewers {
            pages += v.stop()?;
        }
        runs.push(run);
    }
    running.remove_dir_on_drop = true;
    drop(running);
    Ok((runs, pages))
}

/// One viewer thread per member.
struct Viewers {
    stop: Arc<AtomicBool>,
    loaded: Arc<AtomicU64>,
    failed: Arc<AtomicU64>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Viewers {
    fn start(members: &[SocketAddr], reload: Option<Duration>) -> Viewers {
        let stop = Arc::new(AtomicBool::new(false));
        let loaded = Arc::new(AtomicU64::new(0));
        let failed = Arc::new(AtomicU64::new(0));
        let mut threads = Vec::new();
        for &addr in members {
            let (s, l, f) = (Arc::clone(&stop), Arc::clone(&loaded), Arc::clone(&failed));
            threads.push(std::thread::spawn(move || view(addr, reload, &s, &l, &f)));
        }
        Viewers {
            stop,
            loaded,
            failed,
            threads,
        }
    }

    /// Stops the viewers; the requests they made, or an error if any failed.
    fn stop(self) -> Result<u64> {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads {
            let _ = t.join();
        }
        let failed = self.failed.load(Ordering::Relaxed);
        if failed > 0 {
            bail!("{failed} console requests failed");
        }
        Ok(self.loaded.load(Ordering::Relaxed))
    }
}

/// The refresh interval a page asks for in its `<meta http-equiv="refresh"
/// content="N">`.
fn refresh_of(page: &str) -> Option<Duration> {
    let (_, rest) = page.split_once(r#"http-equiv="refresh" content=""#)?;
    let secs: u64 = rest.split_once('"')?.0.trim().parse().ok()?;
    (secs > 0).then(|| Duration::from_secs(secs))
}

/// A browser on the metrics page of one member, until `stop`.
fn view(
    addr: SocketAddr,
    reload: Option<Duration>,
    stop: &AtomicBool,
    loaded: &AtomicU64,
    failed: &AtomicU64,
) {
    let mut assets_at: Option<Instant> = None;
    let mut first = true;
    while !stop.load(Ordering::Relaxed) {
        let mut next = reload;
        match crate::health::get(addr, "/ui/metrics") {
            Ok((200, page)) => {
                loaded.fetch_add(1, Ordering::Relaxed);
                // The page's own interval, as a browser would obey it.
                next = next.or_else(|| refresh_of(&page));
            }
            _ => {
                failed.fetch_add(1, Ordering::Relaxed);
            }
        }
        if assets_at.is_none_or(|t| t.elapsed() >= ASSETS_MAX_AGE) {
            for path in ASSETS {
                match crate::health::get(addr, path) {
                    Ok((200, _)) => loaded.fetch_add(1, Ordering::Relaxed),
                    _ => failed.fetch_add(1, Ordering::Relaxed),
                };
            }
            assets_at = Some(Instant::now());
        }
        let Some(period) = next else {
            // A page without a refresh: a browser would stay put.
            failed.fetch_add(1, Ordering::Relaxed);
            return;
        };
        // As if the browser had been open half a period before the run:
        // its first reload falls inside the measured window (a run as
        // long as the period then holds exactly one), not at its edge.
        let period = if std::mem::take(&mut first) {
            period / 2
        } else {
            period
        };
        let until = Instant::now() + period;
        while Instant::now() < until && !stop.load(Ordering::Relaxed) {
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}
