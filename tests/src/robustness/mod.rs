//! The robustness runner: a three-member cluster (Cairn, or etcd with
//! `CAIRN_TEST_TARGET=etcd`) whose peer traffic goes through the fault
//! proxy, a recorded workload, a seeded fault schedule, then the checkers of
//! `cairn-robustness` and a report (text and JSON).
//!
//! Used by `tests/robustness.rs` (short runs per fault kind) and by the
//! `cairn-robustness` binary behind `cargo xtask robustness`.

pub mod nemesis;
pub mod record;
pub mod workload;

use std::collections::HashSet;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use cairn_robustness::check::{self, Outcome as CheckOutcome};
use cairn_robustness::faults::{FaultKind, ScheduleShape, schedule};
use cairn_robustness::history::{History, Outcome, Request, Response, prefix_end};
use cairn_robustness::linearizability::KvCheckOptions;
use cairn_robustness::proxy::{PeerProxy, ProcIdentify, Route};
use cairn_robustness::rng::Rng;
use serde::Serialize;

use crate::clocks::Clocks;
use crate::{Cluster, Options, Target};
use nemesis::{DiskKind, Disks, FaultRecord, Nemesis};
use record::{Recorder, call, get_response};
use workload::{Ctx, FENCE_KEY, OpenLeases, PREFIX, WatcherState};

/// Members in a run.
pub const MEMBERS: usize = 3;
/// Port members really listen on for peers; 2380 (advertised) is the proxy.
const REAL_PEER_PORT: u16 = 2381;
/// Width of the time slots availability is counted in.
const SLOT_MS: u64 = 100;
/// Longest wait for the cluster to be healthy (start, and after the faults).
const HEALTHY_TIMEOUT: Duration = Duration::from_secs(30);
/// Longest wait for every watcher to deliver the fence write.
const FENCE_TIMEOUT: Duration = Duration::from_secs(20);
/// Extra time, past a lease's TTL, for it to expire after keep-alives stop
/// (leader changes extend leases by an election timeout or more).
const LEASE_EXPIRY_SLACK: Duration = Duration::from_secs(15);

#[derive(Debug, Clone)]
pub struct RunConfig {
    pub seed: u64,
    /// Length of the workload.
    pub seconds: u64,
    /// Fault kinds the schedule draws from (empty: no faults).
    pub faults: Vec<FaultKind>,
    pub shape: ScheduleShape,
    pub clients_per_member: usize,
    pub lease_clients: usize,
    pub check: KvCheckOptions,
    /// Where to keep the history (JSON), for re-checking.
    pub history_dir: Option<PathBuf>,
    pub snapshot_count: Option<u64>,
    /// In runs with auth (those with clock faults): JWT tokens (`true`) or
    /// simple ones (`false`); `None` draws it from the seed.
    pub jwt: Option<bool>,
}

impl RunConfig {
    pub fn new(seed: u64, seconds: u64, faults: Vec<FaultKind>) -> RunConfig {
        RunConfig {
            seed,
            seconds,
            faults,
            shape: ScheduleShape::default(),
            clients_per_member: 2,
            lease_clients: 2,
            check: KvCheckOptions::default(),
            history_dir: None,
            snapshot_count: None,
            jwt: None,
        }
    }
}

/// A fault with what clients saw during and after it.
#[derive(Debug, Clone, Serialize)]
pub struct FaultFigures {
    #[serde(flatten)]
    pub fault: FaultRecord,
    /// Fraction of 100 ms slots of the fault in which some write was
    /// acknowledged.
    pub write_availability: Option<f64>,
    /// From the heal until a write sent after it was acknowledged through
    /// every member (None: not before the next fault or the end).
    pub recovery_ms: Option<u64>,
    pub ops_ok: usize,
    pub ops_failed: usize,
    pub ops_unknown: usize,
}

#[derive(Debug, Clone, Serialize)]
pub struct RunReport {
    pub target: String,
    pub seed: u64,
    pub seconds: u64,
    pub fault_kinds: Vec<FaultKind>,
    pub faults: Vec<FaultFigures>,
    pub ops_ok: usize,
    pub ops_failed: usize,
    pub ops_unknown: usize,
    pub watches: usize,
    pub watch_events: usize,
    /// Write availability outside fault windows.
    pub baseline_write_availability: Option<f64>,
    pub outcome: CheckOutcome,
    pub violations: usize,
    /// Harness-level problems: members that crashed or did not recover.
    pub errors: Vec<String>,
    /// Allowed events worth knowing (a member that stopped on a full disk).
    pub notes: Vec<String>,
    pub check_ms: u64,
    pub history_file: Option<PathBuf>,
    /// The raft term when the workload started and at the end: how many
    /// elections the faults caused (at most).
    pub term_start: u64,
    pub term_end: u64,
    /// Peer connections the proxy saw, and how many it could attribute.
    pub proxy_connections: u64,
    pub proxy_identified: u64,
    pub check: check::Report,
    /// The recorded history (also in `history_file` when kept).
    #[serde(skip)]
    pub history: History,
}

fn target_name(t: Target) -> &'static str {
    match t {
        Target::Cairn => "cairn",
        Target::Etcd => "etcd",
    }
}

fn fmt_frac(f: Option<f64>) -> String {
    f.map_or("-".into(), |f| format!("{f:.2}"))
}

fn fmt_ms(ms: Option<u64>) -> String {
    ms.map_or("-".into(), |ms| format!("{:.2}s", ms as f64 / 1000.0))
}

impl RunReport {
    /// The run as a table, one line per fault.
    pub fn render(&self) -> String {
        let mut s = format!(
            "robustness run: target={} seed={} seconds={} faults={}\n",
            self.target,
            self.seed,
            self.seconds,
            self.fault_kinds
                .iter()
                .map(|k| k.name())
                .collect::<Vec<_>>()
                .join(",")
        );
        let _ = writeln!(
            s,
            "{:<20} {:<7} {:>7} {:>6} {:>7} {:>9}  {:>16}  detail",
            "fault", "target", "start", "dur", "w-avail", "recovery", "ok/failed/unknown"
        );
        for f in &self.faults {
            let targets: Vec<String> = f
                .fault
                .targets
                .iter()
                .map(|t| format!("m{}", t + 1))
                .collect();
            let _ = writeln!(
                s,
                "{:<20} {:<7} {:>6.1}s {:>5.1}s {:>7} {:>9}  {:>16}  {}",
                f.fault.kind.name(),
                targets.join(","),
                f.fault.start_ms as f64 / 1000.0,
                (f.fault.end_ms - f.fault.start_ms) as f64 / 1000.0,
                fmt_frac(f.write_availability),
                fmt_ms(f.recovery_ms),
                format!("{}/{}/{}", f.ops_ok, f.ops_failed, f.ops_unknown),
                f.fault
                    .skipped
                    .as_ref()
                    .map_or(f.fault.detail.clone(), |why| format!("skipped: {why}"))
            );
        }
        let _ = writeln!(
            s,
            "ops: {} ok, {} failed, {} unknown; watches: {} streams, {} events; \
             baseline write availability {}; raft term {} -> {}; \
             proxy: {}/{} peer connections attributed",
            self.ops_ok,
            self.ops_failed,
            self.ops_unknown,
            self.watches,
            self.watch_events,
            fmt_frac(self.baseline_write_availability),
            self.term_start,
            self.term_end,
            self.proxy_identified,
            self.proxy_connections
        );
        let kv = &self.check.kv;
        let _ = writeln!(
            s,
            "check: {:?} in {} ms ({} key groups; {} violation(s))",
            self.outcome,
            self.check_ms,
            kv.partitions.len(),
            self.violations
        );
        for e in &self.errors {
            let _ = writeln!(s, "harness error: {e}");
        }
        for n in &self.notes {
            let _ = writeln!(s, "note: {n}");
        }
        s
    }

    /// What a failure must show: seed, schedule, and each violation's slice.
    pub fn render_failure(&self) -> String {
        let mut s = format!(
            "FAILED: target={} seed={} seconds={} (replay: cargo xtask robustness --target {} --seed {} --seconds {}{})\nschedule:\n",
            self.target,
            self.seed,
            self.seconds,
            self.target,
            self.seed,
            self.seconds,
            self.fault_kinds
                .iter()
                .map(|k| format!(" --fault {}", k.name()))
                .collect::<String>()
        );
        for f in &self.faults {
            let _ = writeln!(
                s,
                "  {:>7.3}s..{:>7.3}s {} {}",
                f.fault.start_ms as f64 / 1000.0,
                f.fault.end_ms as f64 / 1000.0,
                f.fault.kind,
                f.fault.skipped.as_deref().unwrap_or(&f.fault.detail)
            );
        }
        s.push_str(&self.check.render_violations());
        if let Some(p) = &self.history_file {
            let _ = writeln!(s, "history: {}", p.display());
        }
        s
    }
}

/// Copies the members' logs next to the history (`logs-<target>-<seed>/`),
/// with the wall-clock time of the history's zero (`start.txt`, Unix
/// seconds), so a run's timeline can be read against what each member logged.
fn keep_member_logs(
    cluster: &Cluster,
    dir: &Path,
    target: Target,
    seed: u64,
    base: std::time::SystemTime,
) -> std::io::Result<()> {
    let out = dir.join(format!("logs-{}-{seed}", target_name(target)));
    std::fs::create_dir_all(&out)?;
    let since_epoch = base
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    std::fs::write(
        out.join("start.txt"),
        format!(
            "{}.{:09}\n",
            since_epoch.as_secs(),
            since_epoch.subsec_nanos()
        ),
    )?;
    for m in &cluster.members {
        std::fs::write(out.join(format!("{}.log", m.name)), m.log())?;
    }
    Ok(())
}

/// Write availability over `[from_ms, to_ms)`: the fraction of slots in
/// which some write was acknowledged.
fn availability(write_slots: &HashSet<u64>, from_ms: u64, to_ms: u64) -> Option<f64> {
    let (a, b) = (from_ms / SLOT_MS, to_ms / SLOT_MS);
    if b <= a {
        return None;
    }
    let hit = (a..b).filter(|s| write_slots.contains(s)).count();
    Some(hit as f64 / (b - a) as f64)
}

fn figures(h: &History, faults: &[FaultRecord], workload_end_ms: u64) -> Vec<FaultFigures> {
    let ms = |ns: u64| ns / 1_000_000;
    let writes: Vec<_> = h
        .operations
        .iter()
        .filter(|o| o.request.may_write() && !matches!(o.request, Request::LeaseRevoke { .. }))
        .collect();
    let write_slots: HashSet<u64> = writes
        .iter()
        .filter(|o| matches!(o.outcome, Outcome::Ok(_)))
        .map(|o| ms(o.completed) / SLOT_MS)
        .collect();
    faults
        .iter()
        .enumerate()
        .map(|(i, f)| {
            let next = faults
                .get(i + 1)
                .map_or(workload_end_ms, |n| n.start_ms)
                .min(workload_end_ms);
            let recovery_ms = if f.skipped.is_some() {
                None
            } else {
                (0..MEMBERS as u32)
                    .map(|m| {
                        writes
                            .iter()
                            .filter(|o| {
                                o.member == m
                                    && ms(o.invoked) >= f.end_ms
                                    && ms(o.completed) < next
                                    && matches!(o.outcome, Outcome::Ok(_))
                            })
                            .map(|o| ms(o.completed) - f.end_ms)
                            .min()
                    })
                    .try_fold(0u64, |acc, r| r.map(|r| acc.max(r)))
            };
            let during: Vec<_> = h
                .operations
                .iter()
                .filter(|o| ms(o.invoked) >= f.start_ms && ms(o.invoked) < f.end_ms)
                .collect();
            FaultFigures {
                fault: f.clone(),
                write_availability: availability(&write_slots, f.start_ms, f.end_ms),
                recovery_ms,
                ops_ok: during
                    .iter()
                    .filter(|o| matches!(o.outcome, Outcome::Ok(_)))
                    .count(),
                ops_failed: during
                    .iter()
                    .filter(|o| matches!(o.outcome, Outcome::Failed { .. }))
                    .count(),
                ops_unknown: during
                    .iter()
                    .filter(|o| matches!(o.outcome, Outcome::Unknown { .. }))
                    .count(),
            }
        })
        .collect()
}

fn baseline(h: &History, faults: &[FaultRecord], workload_end_ms: u64) -> Option<f64> {
    let slots: HashSet<u64> = h
        .operations
        .iter()
        .filter(|o| o.request.may_write() && matches!(o.outcome, Outcome::Ok(_)))
        .map(|o| o.completed / 1_000_000 / SLOT_MS)
        .collect();
    let in_fault = |slot: u64| {
        faults
            .iter()
            .any(|f| slot * SLOT_MS + SLOT_MS > f.start_ms && slot * SLOT_MS < f.end_ms)
    };
    // From 0.5 s: clients are still connecting before.
    let quiet: Vec<u64> = (5..workload_end_ms / SLOT_MS)
        .filter(|s| !in_fault(*s))
        .collect();
    if quiet.is_empty() {
        return None;
    }
    Some(quiet.iter().filter(|s| slots.contains(s)).count() as f64 / quiet.len() as f64)
}

/// Runs one robustness run against the harness's target (see `target()`).
/// Launches a three-member cluster whose peer traffic all passes through a
/// fault proxy: each member listens for peers on `host:2381` and advertises
/// `host:2380`, where the proxy listens (see docs/robustness.md). `opts`
/// gives everything else; its hosts and peer port are chosen here. The
/// members are launched, not yet waited for.
pub fn proxied_cluster(opts: Options, seed: u64) -> Result<(Cluster, PeerProxy)> {
    let hosts: Vec<String> = (0..MEMBERS)
        .map(|_| crate::free_host(&[2379, 2380, REAL_PEER_PORT]))
        .collect();
    let cluster = Cluster::launch(Options {
        hosts: Some(hosts),
        peer_listen_port: Some(REAL_PEER_PORT),
        ..opts
    });
    let routes: Vec<Route> = cluster
        .members
        .iter()
        .enumerate()
        .map(|(i, m)| Route {
            member: i,
            listen: m.peer_addr(),
            upstream: format!("{}:{}", m.host, m.listen_peer_port)
                .parse()
                .expect("peer addr"),
        })
        .collect();
    // A member's data dir flag is unique to it (and survives restarts).
    let needles: Vec<String> = cluster
        .members
        .iter()
        .map(|m| format!("--data-dir={}", m.data_dir.display()))
        .collect();
    let proxy = PeerProxy::start(MEMBERS, &routes, Arc::new(ProcIdentify::new(needles)), seed)
        .context("starting the peer proxy")?;
    Ok((cluster, proxy))
}

pub fn run(cfg: &RunConfig) -> Result<RunReport> {
    let target = crate::target();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let errors: Arc<Mutex<Vec<String>>> = Arc::new(Mutex::new(Vec::new()));
    let notes: Arc<Mutex<Vec<String>>> = Arc::new(Mutex::new(Vec::new()));

    // Disks first: data dirs must be on them before the members start.
    // A slow disk needs a block device to throttle; a full one only needs
    // a small file system, and a tmpfs keeps fsync out of the picture.
    let disk_kind = if cfg.faults.contains(&FaultKind::SlowDisk) {
        Some(DiskKind::Loop)
    } else if cfg.faults.contains(&FaultKind::DiskFull) {
        Some(DiskKind::Tmpfs)
    } else {
        None
    };
    let (disks, disks_unavailable) = match disk_kind.map(|k| Disks::mount(MEMBERS, k)) {
        Some(Ok(d)) => (Some(Arc::new(d)), None),
        Some(Err(e)) => (None, Some(e)),
        None => (None, None),
    };

    // Clock faults: a wall clock of its own per member, and the workload
    // logged in, so that the tokens it uses meet the jumps too.
    let clock_faults = cfg.faults.contains(&FaultKind::ClockSkew);
    let (clocks, clocks_unavailable) = match clock_faults.then(|| Clocks::new(MEMBERS, target)) {
        Some(Ok(c)) => (Some(Arc::new(c)), None),
        Some(Err(e)) => (None, Some(e)),
        None => (None, None),
    };
    let auth = clock_faults;
    // Half of those runs (by seed) sign their tokens as JWTs, whose expiry
    // every member checks against its own wall clock: a jumped clock meets
    // them too. The other half keep etcd's default simple tokens.
    let by_seed = Rng::new(cfg.seed ^ 0x0a17).chance(0.5);
    let jwt = match auth && cfg.jwt.unwrap_or(by_seed) {
        true => Some(JwtKeys::make()?),
        false => None,
    };
    if let Some(k) = &jwt {
        notes
            .lock()
            .expect("notes lock")
            .push(format!("auth tokens: {}", k.describe()));
    }

    let opts = Options {
        data_dirs: disks
            .as_ref()
            .map(|d| nemesis::data_dirs(d, MEMBERS))
            .unwrap_or_default(),
        member_env: clocks.as_ref().map(|c| c.member_env()).unwrap_or_default(),
        // A snapshot sent mid-run needs the leader to compact its log.
        extra_args: jwt.iter().map(JwtKeys::flag).collect(),
        snapshot_count: cfg.snapshot_count.or(cfg
            .faults
            .contains(&FaultKind::SnapshotLeaderChange)
            .then_some(nemesis::SNAPSHOT_FAULT_SNAPSHOT_COUNT)),
        token: format!("rb-{}", cfg.seed),
        ..Options::default()
    };
    let (cluster, proxy) = proxied_cluster(opts, cfg.seed)?;
    let proxy = Arc::new(proxy);
    cluster.wait_healthy(HEALTHY_TIMEOUT);
    let endpoints = cluster.endpoint_list();
    let cluster = Arc::new(Mutex::new(cluster));

    let clients: Vec<etcd_client::Client> = rt.block_on(async {
        if auth {
            workload::enable_auth(&workload::connect(&endpoints[0], false).await?).await?;
        }
        let mut v = Vec::new();
        for e in &endpoints {
            v.push(workload::connect(e, auth).await?);
        }
        Ok::<_, etcd_client::Error>(v)
    })?;
    let (ids, term_start) = rt.block_on(async {
        let mut v = Vec::new();
        let mut term = 0;
        for c in &clients {
            let st = c.clone().status().await?;
            v.push(st.header().map_or(0, |h| h.member_id()));
            term = term.max(st.raft_term());
        }
        Ok::<_, etcd_client::Error>((v, term))
    })?;

    // The workload.
    let base = Instant::now();
    let base_unix = std::time::SystemTime::now();
    let rec = Recorder::new(base);
    let stop = Arc::new(AtomicBool::new(false));
    let ctx = Ctx {
        rec: rec.clone(),
        clients: clients.clone(),
        stop: Arc::clone(&stop),
    };
    let mut seeds = Rng::new(cfg.seed ^ 0x5eed);
    let mut tasks = Vec::new();
    let mut client_no = 0u32;
    for m in 0..MEMBERS {
        for _ in 0..cfg.clients_per_member {
            tasks.push(rt.spawn(workload::kv_client(
                ctx.clone(),
                client_no,
                m,
                seeds.next_u64(),
            )));
            client_no += 1;
        }
    }
    let open_leases: OpenLeases = Arc::new(Mutex::new(Vec::new()));
    for _ in 0..cfg.lease_clients {
        tasks.push(rt.spawn(workload::lease_client(
            ctx.clone(),
            client_no,
            seeds.next_u64(),
            Arc::clone(&open_leases),
        )));
        client_no += 1;
    }
    let stop_watch = Arc::new(AtomicBool::new(false));
    let mut watchers = Vec::new();
    for m in 0..MEMBERS {
        let state = Arc::new(WatcherState {
            last_revision: AtomicI64::new(0),
            current: AtomicU32::new(0),
        });
        let task = rt.spawn(workload::watcher(
            ctx.clone(),
            m,
            Arc::clone(&stop_watch),
            Arc::clone(&state),
            0,
        ));
        watchers.push((state, task));
    }

    // The faults, on a thread of their own (signals, process restarts).
    let plan = schedule(cfg.seed, cfg.seconds * 1000, &cfg.faults, &cfg.shape);
    let mut nemesis = Nemesis {
        cluster: Arc::clone(&cluster),
        proxy: Arc::clone(&proxy),
        disks,
        disks_unavailable,
        clocks,
        clocks_unavailable,
        auth,
        rt: rt.handle().clone(),
        clients: clients.clone(),
        ids,
        target,
        base,
        rng: Rng::new(cfg.seed ^ 0xfa17),
        errors: Arc::clone(&errors),
        notes: Arc::clone(&notes),
    };
    let nemesis_stop = Arc::new(AtomicBool::new(false));
    let ns = Arc::clone(&nemesis_stop);
    let min_gap_ms = cfg.shape.min_gap_ms;
    let nemesis_thread = std::thread::spawn(move || {
        let done = nemesis.run(&plan, min_gap_ms, &ns);
        (nemesis, done)
    });

    let workload_end = base + Duration::from_secs(cfg.seconds);
    while Instant::now() < workload_end {
        std::thread::sleep(Duration::from_millis(50));
    }
    let workload_end_ms = base.elapsed().as_millis() as u64;
    nemesis_stop.store(true, Ordering::Relaxed);
    let (nemesis, done) = nemesis_thread
        .join()
        .map_err(|_| anyhow::anyhow!("the nemesis thread panicked"))?;
    stop.store(true, Ordering::Relaxed);
    rt.block_on(async {
        // Every call is bounded by the client timeout.
        let all = futures::future::join_all(tasks);
        if tokio::time::timeout(record::OP_TIMEOUT * 2, all)
            .await
            .is_err()
        {
            errors
                .lock()
                .expect("errors lock")
                .push("workload clients did not stop in time".into());
        }
    });

    // After the faults: everything healed, everyone back.
    nemesis.heal_all();
    for m in 0..MEMBERS {
        if !nemesis.wait_member_healthy(m, HEALTHY_TIMEOUT) {
            errors.lock().expect("errors lock").push(format!(
                "m{} not healthy {HEALTHY_TIMEOUT:?} after the faults healed",
                m + 1
            ));
        }
    }

    // Leases not revoked must expire, and their keys go with them.
    let final_client = client_no;
    let leases: Vec<(i64, u32)> = open_leases.lock().expect("leases lock").clone();
    rt.block_on(async {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(4) + LEASE_EXPIRY_SLACK;
        let mut pending: Vec<(i64, u32)> = leases;
        while !pending.is_empty() && tokio::time::Instant::now() < deadline {
            let mut still = Vec::new();
            for (lease, m) in pending {
                match workload::time_to_live(&ctx, final_client, m as usize, lease).await {
                    Some(ttl) if ttl < 0 => {}
                    _ => still.push((lease, m)),
                }
            }
            pending = still;
            if !pending.is_empty() {
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }
        if !pending.is_empty() {
            errors.lock().expect("errors lock").push(format!(
                "{} lease(s) not expired {:?} after keep-alives stopped",
                pending.len(),
                Duration::from_secs(4) + LEASE_EXPIRY_SLACK
            ));
        }
    });

    // The fence: a last write every watcher must deliver.
    let fence_rev = rt.block_on(async {
        for (m, c) in clients.iter().enumerate() {
            let mut c = c.clone();
            let invoked = rec.now();
            let (o, r) = call(c.put(FENCE_KEY, "fence", None), |r| Response::Put {
                revision: r.header().map_or(0, |h| h.revision()),
            })
            .await;
            rec.record(
                final_client,
                m as u32,
                Request::Put {
                    key: FENCE_KEY.into(),
                    value: "fence".into(),
                    lease: 0,
                },
                invoked,
                o,
            );
            if let Some(r) = r {
                return r.header().map(|h| h.revision());
            }
        }
        None
    });
    match fence_rev {
        None => errors
            .lock()
            .expect("errors lock")
            .push("no member took the fence write".into()),
        Some(f) => {
            let deadline = Instant::now() + FENCE_TIMEOUT;
            while Instant::now() < deadline
                && watchers
                    .iter()
                    .any(|(s, _)| s.last_revision.load(Ordering::Relaxed) < f)
            {
                std::thread::sleep(Duration::from_millis(50));
            }
            for (s, _) in &watchers {
                let id = s.current.load(Ordering::Relaxed);
                if s.last_revision.load(Ordering::Relaxed) >= f {
                    rec.edit_watch(id, |w| w.complete_through = Some(f));
                } else {
                    rec.edit_watch(id, |w| {
                        w.end = format!(
                            "stalled: no event at or after the fence (revision {f}) {FENCE_TIMEOUT:?} after it"
                        )
                    });
                }
            }
        }
    }
    stop_watch.store(true, Ordering::Relaxed);
    rt.block_on(async {
        for (_, t) in watchers {
            let _ = tokio::time::timeout(Duration::from_secs(2), t).await;
        }
    });

    // The final state, and each member's copy of it.
    let end = prefix_end(PREFIX);
    let (final_read, member_reads) = rt.block_on(async {
        let mut final_read = None;
        let mut final_rev = 0;
        for (m, c) in clients.iter().enumerate() {
            let mut c = c.clone();
            let invoked = rec.now();
            let opts = etcd_client::GetOptions::new().with_range(end.clone());
            let (o, r) = call(c.get(PREFIX, Some(opts)), get_response).await;
            let id = rec.record(
                final_client,
                m as u32,
                Request::Get {
                    key: PREFIX.into(),
                    range_end: Some(end.clone()),
                    serializable: false,
                },
                invoked,
                o,
            );
            if let Some(r) = r {
                final_read = Some(id);
                final_rev = r.header().map_or(0, |h| h.revision());
                break;
            }
        }
        let mut member_reads = Vec::new();
        if final_read.is_some() {
            for (m, c) in clients.iter().enumerate() {
                let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
                while tokio::time::Instant::now() < deadline {
                    let mut c = c.clone();
                    let invoked = rec.now();
                    let opts = etcd_client::GetOptions::new()
                        .with_range(end.clone())
                        .with_serializable()
                        .with_revision(final_rev);
                    let (o, r) = call(c.get(PREFIX, Some(opts)), get_response).await;
                    if r.is_some() {
                        member_reads.push(rec.record(
                            final_client,
                            m as u32,
                            Request::Get {
                                key: PREFIX.into(),
                                range_end: Some(end.clone()),
                                serializable: true,
                            },
                            invoked,
                            o,
                        ));
                        break;
                    }
                    // Not there yet (a future revision for this member).
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
        }
        (final_read, member_reads)
    });
    if final_read.is_none() {
        errors
            .lock()
            .expect("errors lock")
            .push("no member answered the final read".into());
    }
    let term_end = rt.block_on(async {
        let mut term = 0;
        for c in &clients {
            let mut c = c.clone();
            if let Ok(Ok(st)) = tokio::time::timeout(Duration::from_secs(2), c.status()).await {
                term = term.max(st.raft_term());
            }
        }
        term
    });
    let stats = proxy.stats();
    drop(nemesis);
    drop(proxy);
    if let Some(dir) = &cfg.history_dir {
        keep_member_logs(
            &cluster.lock().expect("cluster lock"),
            dir,
            target,
            cfg.seed,
            base_unix,
        )?;
    }
    // Stop the members before the long check: it needs the CPU.
    drop(cluster);

    let mut history = rec.history();
    history.final_read = final_read;
    history.member_reads = member_reads;
    let history_file = match &cfg.history_dir {
        Some(dir) => {
            std::fs::create_dir_all(dir)?;
            let p = dir.join(format!("history-{}-{}.json", target_name(target), cfg.seed));
            std::fs::write(&p, serde_json::to_vec(&history)?)?;
            Some(p)
        }
        None => None,
    };
    let t = Instant::now();
    let report = check::check(&history, &cfg.check);
    let check_ms = t.elapsed().as_millis() as u64;

    let workload_ops: Vec<_> = history
        .operations
        .iter()
        .filter(|o| o.invoked / 1_000_000 < workload_end_ms)
        .collect();
    let errors = errors.lock().expect("errors lock").clone();
    let notes = notes.lock().expect("notes lock").clone();
    let violations = report.violations();
    Ok(RunReport {
        target: target_name(target).into(),
        seed: cfg.seed,
        seconds: cfg.seconds,
        fault_kinds: cfg.faults.clone(),
        faults: figures(&history, &done, workload_end_ms),
        ops_ok: workload_ops
            .iter()
            .filter(|o| matches!(o.outcome, Outcome::Ok(_)))
            .count(),
        ops_failed: workload_ops
            .iter()
            .filter(|o| matches!(o.outcome, Outcome::Failed { .. }))
            .count(),
        ops_unknown: workload_ops
            .iter()
            .filter(|o| matches!(o.outcome, Outcome::Unknown { .. }))
            .count(),
        watches: history.watches.len(),
        watch_events: history.watches.iter().map(|w| w.events.len()).sum(),
        baseline_write_availability: baseline(&history, &done, workload_end_ms),
        outcome: report.outcome(),
        violations,
        errors,
        notes,
        check_ms,
        history_file,
        term_start,
        term_end,
        proxy_connections: stats.accepted,
        proxy_identified: stats.identified,
        check: report,
        history,
    })
}

/// Re-checks a saved history.
pub fn recheck(path: &std::path::Path, opts: &KvCheckOptions) -> Result<check::Report> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let h: History = serde_json::from_slice(&bytes)?;
    if h.operations.is_empty() {
        bail!("{} holds no operations", path.display());
    }
    Ok(check::check(&h, opts))
}

/// Token TTL of runs with JWT tokens: well past the largest clock jump
/// (10 s), so a token is never refused for a skewed clock alone, and short
/// enough that clients renew theirs during a run.
const JWT_TTL: &str = "1m";

/// An RSA key pair for `--auth-token jwt,...`, made with openssl in a
/// directory that lives as long as the run.
struct JwtKeys {
    dir: tempfile::TempDir,
}

impl JwtKeys {
    fn make() -> Result<JwtKeys> {
        let dir = tempfile::Builder::new().prefix("cairn-rb-jwt-").tempdir()?;
        let (key, public) = (dir.path().join("jwt.key"), dir.path().join("jwt.pub"));
        let run = |args: &[&std::ffi::OsStr]| -> Result<()> {
            let out = std::process::Command::new("openssl")
                .args(args)
                .stdin(std::process::Stdio::null())
                .output()
                .map_err(|e| anyhow::anyhow!("openssl (for JWT keys): {e}"))?;
            anyhow::ensure!(
                out.status.success(),
                "openssl: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            );
            Ok(())
        };
        run(&[
            "genrsa".as_ref(),
            "-out".as_ref(),
            key.as_os_str(),
            "2048".as_ref(),
        ])?;
        run(&[
            "rsa".as_ref(),
            "-in".as_ref(),
            key.as_os_str(),
            "-pubout".as_ref(),
            "-out".as_ref(),
            public.as_os_str(),
        ])?;
        Ok(JwtKeys { dir })
    }

    fn flag(&self) -> String {
        format!(
            "--auth-token=jwt,pub-key={},priv-key={},sign-method=RS256,ttl={JWT_TTL}",
            self.dir.path().join("jwt.pub").display(),
            self.dir.path().join("jwt.key").display()
        )
    }

    fn describe(&self) -> String {
        format!("JWT (RS256, ttl {JWT_TTL})")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cairn_robustness::history::Operation;

    fn put(id: u64, member: u32, invoked_ms: u64, completed_ms: u64, ok: bool) -> Operation {
        Operation {
            id,
            client: 0,
            member,
            request: Request::Put {
                key: "k".into(),
                value: id.to_string(),
                lease: 0,
            },
            invoked: invoked_ms * 1_000_000,
            completed: completed_ms * 1_000_000,
            outcome: if ok {
                Outcome::Ok(Response::Put {
                    revision: id as i64,
                })
            } else {
                Outcome::Unknown {
                    error: "timeout".into(),
                }
            },
        }
    }

    fn fault(start_ms: u64, end_ms: u64) -> FaultRecord {
        FaultRecord {
            kind: FaultKind::KillLeader,
            targets: vec![0],
            start_ms,
            end_ms,
            detail: String::new(),
            skipped: None,
        }
    }

    #[test]
    fn availability_counts_slots_with_an_acknowledged_write() {
        // Writes acknowledged at 1.05 s and 1.25 s; nothing in between.
        let h = History {
            operations: vec![
                put(1, 0, 1000, 1050, true),
                put(2, 1, 1000, 1150, false),
                put(3, 2, 1200, 1250, true),
            ],
            ..History::default()
        };
        let f = figures(&h, &[fault(1000, 1400)], 5000);
        assert_eq!(f[0].write_availability, Some(0.5));
        assert_eq!((f[0].ops_ok, f[0].ops_unknown), (2, 1));
    }

    #[test]
    fn recovery_waits_for_every_member() {
        // Heal at 2 s; m1 writes at 2.1 s, m2 at 2.3 s, m3 at 2.6 s.
        let mut ops = vec![
            put(1, 0, 2000, 2100, true),
            put(2, 1, 2100, 2300, true),
            put(3, 2, 2500, 2600, true),
        ];
        let h = History {
            operations: ops.clone(),
            ..History::default()
        };
        assert_eq!(
            figures(&h, &[fault(1000, 2000)], 5000)[0].recovery_ms,
            Some(600)
        );
        // A member that never writes again: not recovered in the window.
        ops.pop();
        let h = History {
            operations: ops,
            ..History::default()
        };
        assert_eq!(figures(&h, &[fault(1000, 2000)], 5000)[0].recovery_ms, None);
    }
}
