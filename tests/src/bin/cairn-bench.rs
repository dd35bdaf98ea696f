//! cairn-bench: a load generator for anything that speaks etcd's v3 gRPC API
//! (Cairn, or a real etcd for comparison), built on the `etcd-client` crate.
//!
//! `--clients` tasks each keep exactly one request in flight, so the
//! concurrency is exactly N. The tasks share `--conns` clients round-robin
//! (one `etcd_client::Client` = one set of connections to the endpoints).
//! Every workload runs a short unmeasured warm-up first, then is measured for
//! `--total` requests or for `--duration`.
//!
//! Latency is recorded per successful request (microseconds, kept in memory
//! and sorted at the end: exact percentiles, and memory bounded by the number
//! of requests). QPS counts successful requests only.
//!
//! Progress and errors go to stderr; the report goes to stdout, so
//! `--format json` output can be piped (xtask's `bench compare` does).

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use cairn_tests::proc_cpu;
use clap::{Parser, ValueEnum};
use etcd_client::{Client, Compare, CompareOp, ConnectOptions, GetOptions, KvClient, Txn, TxnOp};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::Serialize;
use tokio::task::JoinSet;

/// Distinct error messages kept per workload (the rest are only counted).
const MAX_ERROR_MESSAGES: usize = 5;
/// How long the first contact with the endpoints may take.
const PREFLIGHT_TIMEOUT: Duration = Duration::from_secs(15);

#[derive(Parser, Debug)]
#[command(
    name = "cairn-bench",
    version,
    about = "Load generator for Cairn and etcd v3 (gRPC) endpoints",
    // Lets a wrapper (xtask bench compare) append e.g. `--format json` after
    // the user's own flags: the last occurrence wins instead of an error.
    args_override_self = true
)]
struct Args {
    /// Comma-separated client endpoints (host:port or http://host:port).
    #[arg(long, value_delimiter = ',', default_value = "127.0.0.1:2379")]
    endpoints: Vec<String>,

    /// Workloads to run, in order (repeatable or comma-separated).
    /// `mixed` is 80% linearizable single-key reads, 20% puts.
    #[arg(
        long,
        value_enum,
        value_delimiter = ',',
        action = clap::ArgAction::Append,
        default_values_t = [
            Workload::Put,
            Workload::RangeLinearizable,
            Workload::RangeSerializable,
            Workload::Txn,
        ]
    )]
    workload: Vec<Workload>,

    /// Concurrent clients; each keeps exactly one request in flight.
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u32).range(1..))]
    clients: u32,

    /// Connections (etcd clients) shared round-robin by the clients.
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u32).range(1..))]
    conns: u32,

    /// Measured requests per workload (ignored with --duration).
    #[arg(long, default_value_t = 20_000, value_parser = clap::value_parser!(u64).range(1..))]
    total: u64,

    /// Measure each workload for this long instead of --total requests
    /// (e.g. 10s, 1500ms, 2m).
    #[arg(long, value_parser = parse_duration)]
    duration: Option<Duration>,

    /// Key length in bytes (keys are zero-padded decimal numbers).
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u32).range(1..=1024))]
    key_size: u32,

    /// Value length in bytes.
    #[arg(long, default_value_t = 256)]
    val_size: usize,

    /// Number of distinct keys; each request picks one uniformly. Read
    /// workloads first write every key once.
    #[arg(long, default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(1..))]
    key_space: u64,

    /// Unmeasured warm-up requests before each workload.
    #[arg(long, default_value_t = 500)]
    warmup: u64,

    /// Per-request timeout (a timed-out request counts as an error).
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    timeout: Duration,

    /// Report format.
    #[arg(long, value_enum, default_value_t = Format::Text)]
    format: Format,

    /// Open this many watchers before the workloads (each on one key of the
    /// key space, round-robin), to measure writes with watchers attached.
    #[arg(long, default_value_t = 0)]
    watchers: u64,

    /// Watchers per gRPC watch stream.
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u64).range(1..))]
    watchers_per_stream: u64,

    /// Keys per page of the `scan` workload.
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(i64).range(1..=100_000))]
    page_size: i64,

    /// Report the CPU time (user + system) these processes, the members,
    /// used during each measured workload, per request
    /// (`members_cpu_us_per_request`; read from /proc, so Linux only).
    #[arg(long, value_delimiter = ',')]
    cpu_of: Vec<u32>,

    /// Member the watchers connect to (default: the first endpoint).
    #[arg(long)]
    watch_endpoint: Option<String>,

    /// Instead of the workloads: `--clients` writers, each putting its own
    /// key on one member at a time for `--duration` or until stdin closes
    /// (whichever comes first), moving to the next
    /// member only when theirs refuses connections (clientv3's rule for
    /// writes); any other error is a failed request. For rolling restarts
    /// (`cargo xtask bench rolling-restart`).
    #[arg(long)]
    failover: bool,
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
enum Workload {
    /// Put of a random key.
    Put,
    /// Get of one random key, linearizable (the default consistency).
    RangeLinearizable,
    /// Get of one random key, serializable (served by any member locally).
    RangeSerializable,
    /// Write transaction: if mod_revision(key) > 0 then put else put.
    Txn,
    /// 80% linearizable gets, 20% puts.
    Mixed,
    /// Every key of the key space put exactly once, in order across the
    /// clients (a bulk load; ignores --total, --duration and --warmup).
    Fill,
    /// One client reads the whole keyspace, keys only, in linearizable
    /// pages of --page-size keys, each page starting after the last key of
    /// the one before (how a client lists a large keyspace). A "request" is
    /// one page; ignores --clients, --total, --duration and --warmup.
    Scan,
}

impl Workload {
    fn name(self) -> &'static str {
        match self {
            Workload::Put => "put",
            Workload::RangeLinearizable => "range-linearizable",
            Workload::RangeSerializable => "range-serializable",
            Workload::Txn => "txn",
            Workload::Mixed => "mixed",
            Workload::Fill => "fill",
            Workload::Scan => "scan",
        }
    }

    /// Workloads that run once over the key space rather than for a budget.
    fn once_over_keys(self) -> bool {
        matches!(self, Workload::Fill | Workload::Scan)
    }

    /// Reads want every key to exist, or they would measure misses.
    fn reads(self) -> bool {
        matches!(
            self,
            Workload::RangeLinearizable | Workload::RangeSerializable | Workload::Mixed
        )
    }
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
enum Format {
    Text,
    Markdown,
    Json,
}

/// Accepts `10s`, `1500ms`, `2m`, `1h`, `250us` or a bare number of seconds.
fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (number, unit) = s.split_at(split);
    let value: f64 = number
        .parse()
        .map_err(|_| format!("{s:?} is not a duration (try 10s, 500ms, 2m)"))?;
    let seconds = match unit.trim() {
        "" | "s" => value,
        "ms" => value / 1e3,
        "us" | "µs" => value / 1e6,
        "m" | "min" => value * 60.0,
        "h" => value * 3600.0,
        other => return Err(format!("unknown duration unit {other:?} (use s, ms, m, h)")),
    };
    if !seconds.is_finite() || seconds <= 0.0 {
        return Err(format!("{s:?}: duration must be positive"));
    }
    Ok(Duration::from_secs_f64(seconds))
}

/// What is shared by every request of a run.
struct Setup {
    kv: Vec<KvClient>,
    clients: u32,
    key_size: usize,
    key_space: u64,
    value: Vec<u8>,
    timeout: Duration,
}

/// When a phase stops issuing requests.
#[derive(Clone, Copy)]
enum Budget {
    Requests(u64),
    Until(Instant),
}

/// Per-task tallies, merged after the phase.
#[derive(Default)]
struct Tally {
    requests: u64,
    errors: u64,
    latencies_us: Vec<u32>,
    messages: BTreeSet<String>,
}

impl Tally {
    fn merge(&mut self, other: Tally) {
        self.requests += other.requests;
        self.errors += other.errors;
        self.latencies_us.extend(other.latencies_us);
        for m in other.messages {
            if self.messages.len() < MAX_ERROR_MESSAGES {
                self.messages.insert(m);
            }
        }
    }
}

#[derive(Serialize, Debug)]
struct WorkloadReport {
    workload: &'static str,
    requests: u64,
    errors: u64,
    elapsed_secs: f64,
    qps: f64,
    mean_ms: f64,
    p50_ms: f64,
    p90_ms: f64,
    p99_ms: f64,
    p999_ms: f64,
    max_ms: f64,
    /// Keys read (the `scan` workload).
    #[serde(skip_serializing_if = "Option::is_none")]
    keys: Option<u64>,
    /// With --cpu-of: those processes' CPU time during this workload's
    /// measured phase, per completed request (µs).
    #[serde(skip_serializing_if = "Option::is_none")]
    members_cpu_us_per_request: Option<f64>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    error_messages: Vec<String>,
}

#[derive(Serialize, Debug)]
struct Settings {
    endpoints: Vec<String>,
    clients: u32,
    conns: u32,
    total: Option<u64>,
    duration_secs: Option<f64>,
    warmup: u64,
    key_size: u32,
    val_size: usize,
    key_space: u64,
}

#[derive(Serialize, Debug)]
struct Report {
    settings: Settings,
    results: Vec<WorkloadReport>,
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    match run(args).await {
        Ok(code) => code,
        Err(err) => {
            eprintln!("cairn-bench: error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(args: Args) -> Result<ExitCode> {
    // Keys are zero-padded decimals, so the key space must fit the width.
    let digits = (args.key_space - 1).to_string().len();
    if digits > args.key_size as usize {
        bail!(
            "--key-space {} needs keys of at least {digits} bytes (--key-size is {})",
            args.key_space,
            args.key_size
        );
    }
    let mut workloads: Vec<Workload> = Vec::new();
    for w in &args.workload {
        if !workloads.contains(w) {
            workloads.push(*w);
        }
    }

    if args.failover {
        return run_failover(&args).await;
    }
    let setup = connect(&args).await?;
    let watch_events = if args.watchers > 0 {
        Some(open_watchers(&args).await?)
    } else {
        None
    };
    let budget_text = match args.duration {
        Some(d) => format!("{:.1}s per workload", d.as_secs_f64()),
        None => format!("{} requests per workload", args.total),
    };
    eprintln!(
        "cairn-bench: {} clients over {} connections to {}; {budget_text}; \
         {}-byte keys (space {}), {}-byte values",
        args.clients,
        args.conns,
        args.endpoints.join(","),
        args.key_size,
        args.key_space,
        args.val_size
    );

    let mut populated = false;
    let mut results = Vec::new();
    for &workload in &workloads {
        if workload.reads() && !populated {
            populate(&setup).await?;
            populated = true;
        }
        if args.warmup > 0 && !workload.once_over_keys() {
            run_phase(&setup, workload, Budget::Requests(args.warmup)).await;
        }
        let budget = match (workload, args.duration) {
            (Workload::Fill, _) => Budget::Requests(args.key_space),
            (_, Some(d)) => Budget::Until(Instant::now() + d),
            (_, None) => Budget::Requests(args.total),
        };
        let cpu_before = members_cpu(&args.cpu_of)?;
        let started = Instant::now();
        let mut report = if workload == Workload::Scan {
            let (tally, keys) = scan(&setup, args.page_size).await;
            let mut report = summarize(workload, tally, started.elapsed());
            report.keys = Some(keys);
            report
        } else {
            summarize(
                workload,
                run_phase(&setup, workload, budget).await,
                started.elapsed(),
            )
        };
        if let Some(before) = cpu_before {
            let after = members_cpu(&args.cpu_of)?.unwrap_or(before);
            let used = after.saturating_sub(before);
            report.members_cpu_us_per_request =
                Some(proc_cpu::us_per_request(used, report.requests));
        }
        eprintln!(
            "cairn-bench: {}: {} requests, {} errors, {:.2}s, {:.0} QPS, p99 {:.2} ms",
            report.workload,
            report.requests,
            report.errors,
            report.elapsed_secs,
            report.qps,
            report.p99_ms
        );
        for m in &report.error_messages {
            eprintln!("cairn-bench:   error: {m}");
        }
        results.push(report);
    }

    if let Some(events) = &watch_events {
        // Let in-flight events arrive before counting.
        tokio::time::sleep(Duration::from_secs(1)).await;
        eprintln!(
            "cairn-bench: {} watchers received {} events",
            args.watchers,
            events.load(std::sync::atomic::Ordering::Relaxed)
        );
    }

    let report = Report {
        settings: Settings {
            endpoints: args.endpoints.clone(),
            clients: args.clients,
            conns: args.conns,
            total: args.duration.is_none().then_some(args.total),
            duration_secs: args.duration.map(|d| d.as_secs_f64()),
            warmup: args.warmup,
            key_size: args.key_size,
            val_size: args.val_size,
            key_space: args.key_space,
        },
        results,
    };
    match args.format {
        Format::Json => println!("{}", serde_json::to_string_pretty(&report)?),
        Format::Text => print!("{}", render_text(&report)),
        Format::Markdown => print!("{}", render_markdown(&report)),
    }

    let all_failed: Vec<&str> = report
        .results
        .iter()
        .filter(|r| r.requests > 0 && r.errors == r.requests)
        .map(|r| r.workload)
        .collect();
    if !all_failed.is_empty() {
        eprintln!(
            "cairn-bench: every request failed in: {}",
            all_failed.join(", ")
        );
        return Ok(ExitCode::FAILURE);
    }
    Ok(ExitCode::SUCCESS)
}

/// `--failover`: steady writers (see `cairn_tests::steady`), one report.
async fn run_failover(args: &Args) -> Result<ExitCode> {
    use cairn_tests::steady;
    use std::sync::atomic::AtomicBool;
    let duration = args.duration.unwrap_or(Duration::from_secs(3600));
    let endpoints = Arc::new(args.endpoints.clone());
    let stop = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    let writers: Vec<_> = (0..args.clients as usize)
        .map(|w| {
            tokio::spawn(steady::writer(
                Arc::clone(&endpoints),
                w,
                format!("failover/{w}"),
                Arc::clone(&stop),
            ))
        })
        .collect();
    // The driver (xtask) closes our stdin when its restarts are done.
    // A plain thread, not spawn_blocking: the runtime would wait for it at
    // exit when --duration ends first with stdin still open.
    let (closed_tx, stdin_closed) = tokio::sync::oneshot::channel::<()>();
    std::thread::spawn(move || {
        let mut sink = Vec::new();
        let _ = std::io::Read::read_to_end(&mut std::io::stdin(), &mut sink);
        let _ = closed_tx.send(());
    });
    tokio::select! {
        _ = tokio::time::sleep(duration) => {}
        _ = stdin_closed => {}
    }
    stop.store(true, Ordering::Relaxed);
    let mut all = steady::Outcome::default();
    for w in writers {
        all.merge(w.await.context("writer task")?);
    }
    let tally = Tally {
        requests: all.latencies_us.len() as u64 + all.failed,
        errors: all.failed,
        latencies_us: all
            .latencies_us
            .iter()
            .map(|&us| us.min(u32::MAX as u64) as u32)
            .collect(),
        messages: all.error_messages.into_iter().collect(),
    };
    let report = summarize(Workload::Put, tally, started.elapsed());
    eprintln!(
        "cairn-bench: failover writes: {} requests, {} failed, {} failovers, max {:.1} ms",
        report.requests, report.errors, all.failovers, report.max_ms
    );
    for m in &report.error_messages {
        eprintln!("cairn-bench:   error: {m}");
    }
    let report = Report {
        settings: Settings {
            endpoints: args.endpoints.clone(),
            clients: args.clients,
            conns: args.clients,
            total: None,
            duration_secs: Some(started.elapsed().as_secs_f64()),
            warmup: 0,
            key_size: 0,
            val_size: 0,
            key_space: u64::from(args.clients),
        },
        results: vec![report],
    };
    match args.format {
        Format::Json => println!("{}", serde_json::to_string_pretty(&report)?),
        Format::Text => print!("{}", render_text(&report)),
        Format::Markdown => print!("{}", render_markdown(&report)),
    }
    Ok(ExitCode::SUCCESS)
}

/// Opens `--watchers` watchers over streams of `--watchers-per-stream`,
/// each on one key; returns a counter of the events they receive.
async fn open_watchers(args: &Args) -> Result<std::sync::Arc<std::sync::atomic::AtomicU64>> {
    use std::sync::atomic::{AtomicU64, Ordering};
    let events = std::sync::Arc::new(AtomicU64::new(0));
    let endpoint = args
        .watch_endpoint
        .clone()
        .unwrap_or_else(|| args.endpoints[0].clone());
    let options = ConnectOptions::new().with_connect_timeout(Duration::from_secs(5));
    let client = Client::connect([endpoint.clone()], Some(options))
        .await
        .with_context(|| format!("cannot connect to {endpoint} for watchers"))?;
    let started = Instant::now();
    let width = args.key_size as usize;
    let mut opened = 0u64;
    while opened < args.watchers {
        let n = args.watchers_per_stream.min(args.watchers - opened);
        let key = |i: u64| format!("{:0width$}", i % args.key_space).into_bytes();
        let mut stream = client.watch_client().watch(key(opened), None).await?;
        for i in 1..n {
            stream.watch(key(opened + i), None).await?;
        }
        let counter = std::sync::Arc::clone(&events);
        tokio::spawn(async move {
            while let Ok(Some(resp)) = stream.message().await {
                counter.fetch_add(resp.events().len() as u64, Ordering::Relaxed);
            }
        });
        opened += n;
    }
    eprintln!(
        "cairn-bench: opened {} watchers on {endpoint} in {:.1}s",
        args.watchers,
        started.elapsed().as_secs_f64()
    );
    Ok(events)
}

/// Opens `--conns` clients and checks, with one bounded request, that the
/// endpoints answer at all (a typo in --endpoints should fail in seconds,
/// not after N timeouts per workload).
async fn connect(args: &Args) -> Result<Setup> {
    let options = ConnectOptions::new()
        .with_connect_timeout(Duration::from_secs(5))
        .with_timeout(args.timeout);
    let mut kv = Vec::new();
    for _ in 0..args.conns {
        let client = Client::connect(&args.endpoints, Some(options.clone()))
            .await
            .with_context(|| format!("cannot connect to {}", args.endpoints.join(",")))?;
        kv.push(client.kv_client());
    }
    let mut probe = kv[0].clone();
    match tokio::time::timeout(PREFLIGHT_TIMEOUT, probe.get("cairn-bench-preflight", None)).await {
        Ok(Ok(_)) => {}
        Ok(Err(err)) => bail!("{} did not answer: {err}", args.endpoints.join(",")),
        Err(_) => bail!(
            "{} did not answer within {}s",
            args.endpoints.join(","),
            PREFLIGHT_TIMEOUT.as_secs()
        ),
    }
    // Values are random printable bytes, made once: what is sent matters for
    // size, not content.
    let value: Vec<u8> = StdRng::from_entropy()
        .sample_iter(rand::distributions::Alphanumeric)
        .take(args.val_size)
        .collect();
    Ok(Setup {
        kv,
        clients: args.clients,
        key_size: args.key_size as usize,
        key_space: args.key_space,
        value,
        timeout: args.timeout,
    })
}

/// Writes every key of the key space once (unmeasured), with the same
/// bounded concurrency as the workloads.
async fn populate(setup: &Setup) -> Result<()> {
    let started = Instant::now();
    eprintln!(
        "cairn-bench: writing {} keys for the read workloads",
        setup.key_space
    );
    let next = Arc::new(AtomicU64::new(0));
    let mut tasks = JoinSet::new();
    for i in 0..setup.clients {
        let mut kv = setup.kv[i as usize % setup.kv.len()].clone();
        let next = next.clone();
        let (key_space, key_size, value, timeout) = (
            setup.key_space,
            setup.key_size,
            setup.value.clone(),
            setup.timeout,
        );
        tasks.spawn(async move {
            let mut tally = Tally::default();
            loop {
                let index = next.fetch_add(1, Ordering::Relaxed);
                if index >= key_space {
                    return tally;
                }
                let key = format!("{index:0key_size$}");
                tally.requests += 1;
                let put = kv.put(key, value.clone(), None);
                if let Err(message) = flatten(tokio::time::timeout(timeout, put).await, timeout) {
                    tally.errors += 1;
                    if tally.messages.len() < MAX_ERROR_MESSAGES {
                        tally.messages.insert(message);
                    }
                }
            }
        });
    }
    let mut total = Tally::default();
    while let Some(joined) = tasks.join_next().await {
        total.merge(joined.context("populate task panicked")?);
    }
    if total.errors > 0 {
        let messages: Vec<String> = total.messages.into_iter().collect();
        if total.errors == total.requests {
            bail!("could not write any key: {}", messages.join("; "));
        }
        eprintln!(
            "cairn-bench: warning: {} of {} initial puts failed: {}",
            total.errors,
            total.requests,
            messages.join("; ")
        );
    }
    eprintln!(
        "cairn-bench: wrote {} keys in {:.1}s",
        setup.key_space,
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// Runs `workload` with exactly `setup.clients` requests in flight until the
/// budget is spent.
async fn run_phase(setup: &Setup, workload: Workload, budget: Budget) -> Tally {
    let issued = Arc::new(AtomicU64::new(0));
    let mut tasks = JoinSet::new();
    for i in 0..setup.clients {
        let mut kv = setup.kv[i as usize % setup.kv.len()].clone();
        let issued = issued.clone();
        let value = setup.value.clone();
        let timeout = setup.timeout;
        // Each task picks its own keys; only the per-request key choice
        // needs the shared setup, so copy what it uses.
        let keys = KeyPicker {
            key_size: setup.key_size,
            key_space: setup.key_space,
        };
        tasks.spawn(async move {
            let mut rng = StdRng::from_entropy();
            let mut tally = Tally::default();
            loop {
                // A request budget hands out numbered tickets; `fill` puts
                // the key of its ticket, so every key exactly once.
                let ticket = match budget {
                    Budget::Requests(n) => {
                        let ticket = issued.fetch_add(1, Ordering::Relaxed);
                        (ticket < n).then_some(ticket)
                    }
                    Budget::Until(deadline) => (Instant::now() < deadline).then_some(0),
                };
                let Some(ticket) = ticket else {
                    return tally;
                };
                let key = if workload == Workload::Fill {
                    keys.nth(ticket)
                } else {
                    keys.pick(&mut rng)
                };
                let started = Instant::now();
                let outcome = tokio::time::timeout(
                    timeout,
                    one_request(&mut kv, workload, key, &value, &mut rng),
                )
                .await;
                let latency = started.elapsed();
                tally.requests += 1;
                match flatten(outcome, timeout) {
                    Ok(()) => tally
                        .latencies_us
                        .push(u32::try_from(latency.as_micros()).unwrap_or(u32::MAX)),
                    Err(message) => {
                        tally.errors += 1;
                        if tally.messages.len() < MAX_ERROR_MESSAGES {
                            tally.messages.insert(message);
                        }
                    }
                }
            }
        });
    }
    let mut total = Tally::default();
    while let Some(joined) = tasks.join_next().await {
        match joined {
            Ok(tally) => total.merge(tally),
            Err(err) => {
                // A panicking task is a bug in this tool; count it loudly
                // rather than hiding it.
                total.errors += 1;
                total.messages.insert(format!("client task failed: {err}"));
            }
        }
    }
    total
}

#[derive(Clone, Copy)]
struct KeyPicker {
    key_size: usize,
    key_space: u64,
}

impl KeyPicker {
    fn pick(&self, rng: &mut StdRng) -> Vec<u8> {
        self.nth(rng.gen_range(0..self.key_space))
    }

    fn nth(&self, index: u64) -> Vec<u8> {
        format!("{index:0width$}", width = self.key_size).into_bytes()
    }
}

/// Turns "timed out or failed" into one error message.
fn flatten<T>(
    outcome: Result<Result<T, etcd_client::Error>, tokio::time::error::Elapsed>,
    timeout: Duration,
) -> Result<(), String> {
    match outcome {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(err)) => Err(err.to_string()),
        Err(_) => Err(format!("timed out after {:.1}s", timeout.as_secs_f64())),
    }
}

async fn one_request(
    kv: &mut KvClient,
    workload: Workload,
    key: Vec<u8>,
    value: &[u8],
    rng: &mut StdRng,
) -> Result<(), etcd_client::Error> {
    match workload {
        Workload::Put | Workload::Fill => kv.put(key, value, None).await.map(drop),
        // Runs in `scan`, never per request.
        Workload::Scan => Ok(()),
        Workload::RangeLinearizable => kv.get(key, None).await.map(drop),
        Workload::RangeSerializable => kv
            .get(key, Some(GetOptions::new().with_serializable()))
            .await
            .map(drop),
        Workload::Txn => {
            // Both branches write, so every txn goes through consensus; the
            // compare makes the server evaluate a condition first.
            let txn = Txn::new()
                .when([Compare::mod_revision(key.clone(), CompareOp::Greater, 0)])
                .and_then([TxnOp::put(key.clone(), value, None)])
                .or_else([TxnOp::put(key, value, None)]);
            kv.txn(txn).await.map(drop)
        }
        Workload::Mixed => {
            if rng.gen_bool(0.8) {
                kv.get(key, None).await.map(drop)
            } else {
                kv.put(key, value, None).await.map(drop)
            }
        }
    }
}

/// The `scan` workload: pages through every key from the first, keys only,
/// each page a linearizable range of at most `page_size` keys from just
/// after the last key of the page before. Stops at the first failed page
/// (a client cannot go on without its last key). Returns the pages as
/// requests, and how many keys were read.
async fn scan(setup: &Setup, page_size: i64) -> (Tally, u64) {
    let mut kv = setup.kv[0].clone();
    let mut tally = Tally::default();
    let mut keys = 0u64;
    // "\0" with the from-key range end: every key there is.
    let mut from = vec![0u8];
    loop {
        let options = GetOptions::new()
            .with_from_key()
            .with_keys_only()
            .with_limit(page_size);
        let started = Instant::now();
        let outcome =
            tokio::time::timeout(setup.timeout, kv.get(from.clone(), Some(options))).await;
        tally.requests += 1;
        let page = match outcome {
            Ok(Ok(page)) => page,
            other => {
                tally.errors += 1;
                if let Err(message) = flatten(other, setup.timeout) {
                    tally.messages.insert(message);
                }
                return (tally, keys);
            }
        };
        tally
            .latencies_us
            .push(u32::try_from(started.elapsed().as_micros()).unwrap_or(u32::MAX));
        keys += page.kvs().len() as u64;
        match page.kvs().last() {
            Some(last) if page.more() => {
                from = last.key().to_vec();
                from.push(0);
            }
            _ => return (tally, keys),
        }
    }
}

/// The `--cpu-of` processes' CPU ticks so far (`None` without the flag).
fn members_cpu(pids: &[u32]) -> Result<Option<u64>> {
    if pids.is_empty() {
        return Ok(None);
    }
    Ok(Some(proc_cpu::cpu_ticks(pids).context("--cpu-of")?))
}

fn summarize(workload: Workload, mut tally: Tally, elapsed: Duration) -> WorkloadReport {
    tally.latencies_us.sort_unstable();
    let lat = &tally.latencies_us;
    let ms = |us: u32| f64::from(us) / 1000.0;
    // Nearest-rank percentile over the sorted latencies.
    let pct = |q: f64| -> f64 {
        if lat.is_empty() {
            return 0.0;
        }
        let rank = (q * lat.len() as f64).ceil() as usize;
        ms(lat[rank.clamp(1, lat.len()) - 1])
    };
    let mean_ms = if lat.is_empty() {
        0.0
    } else {
        lat.iter().map(|&us| f64::from(us)).sum::<f64>() / lat.len() as f64 / 1000.0
    };
    let secs = elapsed.as_secs_f64();
    WorkloadReport {
        workload: workload.name(),
        requests: tally.requests,
        errors: tally.errors,
        elapsed_secs: secs,
        qps: if secs > 0.0 {
            lat.len() as f64 / secs
        } else {
            0.0
        },
        mean_ms,
        p50_ms: pct(0.50),
        p90_ms: pct(0.90),
        p99_ms: pct(0.99),
        p999_ms: pct(0.999),
        max_ms: lat.last().map_or(0.0, |&us| ms(us)),
        keys: None,
        members_cpu_us_per_request: None,
        error_messages: tally.messages.into_iter().collect(),
    }
}

fn header(report: &Report) -> String {
    let s = &report.settings;
    let amount = match (s.duration_secs, s.total) {
        (Some(d), _) => format!("{d:.1}s per workload"),
        (_, Some(t)) => format!("{t} requests per workload"),
        _ => String::new(),
    };
    format!(
        "{} clients over {} connections to {}; {amount}; {}-byte keys (space {}), {}-byte values",
        s.clients,
        s.conns,
        s.endpoints.join(","),
        s.key_size,
        s.key_space,
        s.val_size
    )
}

fn render_text(report: &Report) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "{}", header(report));
    let _ = writeln!(
        out,
        "{:<20} {:>9} {:>7} {:>9} {:>9} {:>9} {:>9} {:>9}",
        "workload", "requests", "errors", "elapsed", "QPS", "p50 ms", "p99 ms", "max ms"
    );
    for r in &report.results {
        let _ = writeln!(
            out,
            "{:<20} {:>9} {:>7} {:>8.2}s {:>9.0} {:>9.2} {:>9.2} {:>9.2}",
            r.workload, r.requests, r.errors, r.elapsed_secs, r.qps, r.p50_ms, r.p99_ms, r.max_ms
        );
    }
    out
}

fn render_markdown(report: &Report) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "{}\n", header(report));
    out.push_str("| Workload | Requests | Errors | Elapsed s | QPS | p50 ms | p99 ms | max ms |\n");
    out.push_str("|---|--:|--:|--:|--:|--:|--:|--:|\n");
    for r in &report.results {
        let _ = writeln!(
            out,
            "| {} | {} | {} | {:.2} | {:.0} | {:.2} | {:.2} | {:.2} |",
            r.workload, r.requests, r.errors, r.elapsed_secs, r.qps, r.p50_ms, r.p99_ms, r.max_ms
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("1500ms"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("3"), Ok(Duration::from_secs(3)));
        assert!(parse_duration("0s").is_err());
        assert!(parse_duration("ten").is_err());
        assert!(parse_duration("5 parsecs").is_err());
    }

    #[test]
    fn percentiles_are_nearest_rank() {
        let tally = Tally {
            requests: 100,
            errors: 0,
            latencies_us: (1..=100).rev().map(|ms| ms * 1000).collect(),
            messages: BTreeSet::new(),
        };
        let r = summarize(Workload::Put, tally, Duration::from_secs(2));
        assert_eq!(r.p50_ms, 50.0);
        assert_eq!(r.p99_ms, 99.0);
        assert_eq!(r.max_ms, 100.0);
        assert_eq!(r.qps, 50.0);
    }

    #[test]
    fn flags_repeat_and_override() {
        let args = Args::try_parse_from([
            "cairn-bench",
            "--workload",
            "put,txn",
            "--workload",
            "mixed",
            "--format",
            "text",
            "--format",
            "json",
        ])
        .unwrap();
        assert_eq!(
            args.workload,
            [Workload::Put, Workload::Txn, Workload::Mixed]
        );
        assert_eq!(args.format, Format::Json);
    }
}
