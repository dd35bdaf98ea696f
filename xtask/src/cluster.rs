//! `cargo xtask cluster up|down|status`: a local three-member cluster whose
//! members behave like separate hosts (127.0.0.1, .2 and .3, each on the
//! standard ports 2379/2380), so etcd tooling works unchanged against it.
//!
//! Everything lives in one folder (default `target/cluster/`): per member
//! `mN/data` and `mN/cairn.log`, plus `cluster.json`, which records the pids,
//! endpoints and layout so later `down`/`status` calls find the members.
//!
//! The same machinery starts the throwaway clusters of `bench compare`.

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, bail};
use clap::Args;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde::{Deserialize, Serialize};

use crate::health::{Health, probe};
use crate::util::{
    cargo, describe, find_on_path, run_captured, run_streamed, tail, target_dir, wait_timeout,
};

/// How long `up` waits for a healthy cluster unless told otherwise.
const DEFAULT_UP_TIMEOUT_SECS: u64 = 30;
/// How long members get to exit after SIGTERM before they are SIGKILLed.
const STOP_GRACE: Duration = Duration::from_secs(10);
/// After SIGKILL a process is gone almost at once; this only bounds the wait.
const KILL_WAIT: Duration = Duration::from_secs(5);
const STATE_FILE: &str = "cluster.json";
const LOG_TAIL_LINES: usize = 25;

#[derive(Args)]
pub struct DirArgs {
    /// Folder holding the members' data and logs and cluster.json
    /// [default: target/cluster].
    #[arg(long)]
    dir: Option<PathBuf>,
}

#[derive(Args)]
pub struct UpArgs {
    #[command(flatten)]
    dir: DirArgs,
    /// Put all members on 127.0.0.1 (client ports 2379/22379/32379, peer
    /// ports 2380/22380/32380), for systems without 127.0.0.2 and 127.0.0.3.
    #[arg(long)]
    one_address: bool,
    /// Seconds to wait for the cluster to become healthy.
    #[arg(long, default_value_t = DEFAULT_UP_TIMEOUT_SECS)]
    timeout: u64,
}

#[derive(Args)]
pub struct DownArgs {
    #[command(flatten)]
    dir: DirArgs,
    /// Also delete the folder (data and logs).
    #[arg(long)]
    clean: bool,
}

/// Where the members listen.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum Layout {
    /// One loopback address per member, standard ports: like three hosts.
    ThreeAddresses,
    /// Everything on 127.0.0.1, told apart by port.
    OneAddress,
}

impl Layout {
    pub fn from_flag(one_address: bool) -> Self {
        if one_address {
            Layout::OneAddress
        } else {
            Layout::ThreeAddresses
        }
    }

    fn describe(self) -> &'static str {
        match self {
            Layout::ThreeAddresses => "three addresses (127.0.0.x style), standard ports",
            Layout::OneAddress => "one address (127.0.0.1), distinct ports",
        }
    }
}

#[derive(Serialize, Deserialize, Clone, Debug)]
pub struct Member {
    pub name: String,
    pub host: Ipv4Addr,
    pub client_port: u16,
    pub peer_port: u16,
    pub data_dir: PathBuf,
    pub log: PathBuf,
    /// Set while the member runs (as far as we know).
    #[serde(default)]
    pub pid: Option<u32>,
}

impl Member {
    pub fn client_addr(&self) -> SocketAddr {
        SocketAddr::V4(SocketAddrV4::new(self.host, self.client_port))
    }
    fn peer_addr(&self) -> SocketAddr {
        SocketAddr::V4(SocketAddrV4::new(self.host, self.peer_port))
    }
    pub fn client_url(&self) -> String {
        format!("http://{}", self.client_addr())
    }
    fn peer_url(&self) -> String {
        format!("http://{}", self.peer_addr())
    }
    fn member_dir(&self) -> &Path {
        self.data_dir.parent().unwrap_or(Path::new("."))
    }

    /// Is the recorded pid still this member? The data dir is on the command
    /// line, so checking it guards against the pid having been reused by an
    /// unrelated process since (we must never signal one of those).
    fn alive(&self) -> bool {
        self.pid.is_some_and(|pid| process_is(pid, &self.data_dir))
    }
}

/// Everything needed to start, find and stop one cluster; persisted as
/// `cluster.json`.
#[derive(Serialize, Deserialize, Clone, Debug)]
pub struct ClusterSpec {
    pub layout: Layout,
    pub binary: PathBuf,
    pub token: String,
    pub dir: PathBuf,
    pub members: Vec<Member>,
}

impl ClusterSpec {
    /// Three members m1..m3 under `dir`. `hosts_and_ports` gives each member's
    /// address, client port and peer port.
    pub fn new(
        layout: Layout,
        binary: PathBuf,
        token: &str,
        dir: &Path,
        log_name: &str,
        hosts_and_ports: [(Ipv4Addr, u16, u16); 3],
    ) -> Self {
        let members = hosts_and_ports
            .iter()
            .enumerate()
            .map(|(i, &(host, client_port, peer_port))| {
                let member_dir = dir.join(format!("m{}", i + 1));
                Member {
                    name: format!("m{}", i + 1),
                    host,
                    client_port,
                    peer_port,
                    data_dir: member_dir.join("data"),
                    log: member_dir.join(log_name),
                    pid: None,
                }
            })
            .collect();
        ClusterSpec {
            layout,
            binary,
            token: token.to_string(),
            dir: dir.to_path_buf(),
            members,
        }
    }

    /// `host:port` of every member's client listener, comma separated: the
    /// form `etcdctl --endpoints` and cairn-bench take.
    pub fn endpoints(&self) -> String {
        self.members
            .iter()
            .map(|m| m.client_addr().to_string())
            .collect::<Vec<_>>()
            .join(",")
    }

    fn initial_cluster(&self) -> String {
        self.members
            .iter()
            .map(|m| format!("{}={}", m.name, m.peer_url()))
            .collect::<Vec<_>>()
            .join(",")
    }

    fn state_path(&self) -> PathBuf {
        self.dir.join(STATE_FILE)
    }

    fn save(&self) -> Result<()> {
        let path = self.state_path();
        let tmp = path.with_extension("json.tmp");
        let json = serde_json::to_string_pretty(self)?;
        fs::write(&tmp, json + "\n").with_context(|| format!("cannot write {}", tmp.display()))?;
        fs::rename(&tmp, &path).with_context(|| format!("cannot write {}", path.display()))?;
        Ok(())
    }

    fn load(dir: &Path) -> Result<Option<Self>> {
        let path = dir.join(STATE_FILE);
        match fs::read_to_string(&path) {
            Ok(text) => serde_json::from_str(&text)
                .map(Some)
                .with_context(|| format!("{} is not a cluster state file", path.display())),
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(err) => Err(err).with_context(|| format!("cannot read {}", path.display())),
        }
    }
}

/// Addresses for `cluster up`.
fn local_addresses(layout: Layout) -> [(Ipv4Addr, u16, u16); 3] {
    match layout {
        Layout::ThreeAddresses => [1, 2, 3].map(|n| (Ipv4Addr::new(127, 0, 0, n), 2379, 2380)),
        Layout::OneAddress => [(2379, 2380), (22379, 22380), (32379, 32380)]
            .map(|(client, peer)| (Ipv4Addr::LOCALHOST, client, peer)),
    }
}

/// Addresses for the throwaway clusters of `bench compare`: `slot` (1, 2, ...)
/// keeps them apart from each other and from a running `cluster up`, which
/// uses 127.0.0.x and ports 2379-32380.
pub fn bench_addresses(layout: Layout, slot: u8) -> [(Ipv4Addr, u16, u16); 3] {
    match layout {
        Layout::ThreeAddresses => [1, 2, 3].map(|n| (Ipv4Addr::new(127, 0, slot, n), 2379, 2380)),
        Layout::OneAddress => [0u16, 1, 2].map(|i| {
            let client = 12379 + 1000 * u16::from(slot - 1) + 100 * i;
            (Ipv4Addr::LOCALHOST, client, client + 1)
        }),
    }
}

fn default_dir() -> PathBuf {
    target_dir().join("cluster")
}

fn resolve_dir(args: &DirArgs) -> Result<PathBuf> {
    let dir = args.dir.clone().unwrap_or_else(default_dir);
    std::path::absolute(&dir).with_context(|| format!("bad --dir {}", dir.display()))
}

/// The server binary: `$CAIRN_BIN` if set (e.g. /usr/bin/etcd, to try the
/// tooling against real etcd), else a fresh `cargo build --release -p cairn`.
/// Building cairn needs no protoc (the server compiles its protos with protox).
pub fn cairn_binary() -> Result<PathBuf> {
    if let Some(bin) = std::env::var_os("CAIRN_BIN").filter(|b| !b.is_empty()) {
        let bin = PathBuf::from(bin);
        let path = if bin.components().count() == 1 {
            find_on_path(&bin.to_string_lossy())
                .with_context(|| format!("CAIRN_BIN={} is not on PATH", bin.display()))?
        } else {
            std::path::absolute(&bin)?
        };
        if !path.is_file() {
            bail!("CAIRN_BIN={} does not exist", path.display());
        }
        eprintln!("xtask: using CAIRN_BIN={}", path.display());
        return Ok(path);
    }
    run_streamed(cargo().args(["build", "--release", "-p", "cairn"]))?;
    let path = target_dir().join("release").join("cairn");
    if !path.is_file() {
        bail!("cargo built cairn but {} is missing", path.display());
    }
    Ok(path)
}

pub fn up(args: UpArgs) -> Result<ExitCode> {
    let dir = resolve_dir(&args.dir)?;
    let layout = Layout::from_flag(args.one_address);
    let existing = ClusterSpec::load(&dir)?;

    if let Some(old) = &existing {
        if old.layout != layout {
            bail!(
                "the cluster in {} was created with layout \"{}\"; run \
                 `cargo xtask cluster down --clean` first, or {} --one-address",
                dir.display(),
                old.layout.describe(),
                if old.layout == Layout::OneAddress {
                    "pass"
                } else {
                    "drop"
                }
            );
        }
        if old.members.iter().all(Member::alive) {
            println!("The cluster in {} is already up.", dir.display());
            print_summary(old);
            return Ok(ExitCode::SUCCESS);
        }
    }

    let binary = cairn_binary()?;
    let mut spec = ClusterSpec::new(
        layout,
        binary,
        "cairn-local",
        &dir,
        "cairn.log",
        local_addresses(layout),
    );
    // Keep members of a half-running cluster that are still alive; start
    // the rest. A member whose data dir already exists restarts from it
    // (the --initial-cluster* flags only matter on first start).
    if let Some(old) = &existing {
        for (member, old_member) in spec.members.iter_mut().zip(&old.members) {
            if old_member.alive() {
                member.pid = old_member.pid;
            }
        }
    }
    let to_start: Vec<usize> = (0..spec.members.len())
        .filter(|&i| spec.members[i].pid.is_none())
        .collect();
    if to_start.len() < spec.members.len() {
        let names: Vec<&str> = to_start
            .iter()
            .map(|&i| spec.members[i].name.as_str())
            .collect();
        eprintln!(
            "xtask: some members are still running; starting {}",
            names.join(", ")
        );
    }

    let mut running = start(spec, &to_start, true)?;
    if let Err(err) = wait_healthy(&mut running, Duration::from_secs(args.timeout)) {
        // Stop what we started rather than leave a broken cluster holding
        // the ports; the data and logs stay for a look.
        drop(running);
        eprintln!(
            "xtask: stopped the members started here; data and logs are in {}",
            dir.display()
        );
        return Err(err);
    }
    let spec = running.release();
    println!("Cluster is up.");
    print_summary(&spec);
    Ok(ExitCode::SUCCESS)
}

fn print_summary(spec: &ClusterSpec) {
    for m in &spec.members {
        let pid = m.pid.map_or("-".to_string(), |p| p.to_string());
        println!(
            "  {}  pid {:>7}  client {}  peer {}",
            m.name,
            pid,
            m.client_url(),
            m.peer_url()
        );
    }
    println!("Layout: {}", spec.layout.describe());
    println!(
        "Data and logs: {} (mN/data, mN/{}; state in {STATE_FILE})",
        spec.dir.display(),
        spec.members[0]
            .log
            .file_name()
            .map_or_else(Default::default, |n| n.to_string_lossy())
    );
    println!("Try:");
    println!("  etcdctl --endpoints={} member list", spec.endpoints());
    let first = &spec.members[0];
    if first.client_addr().to_string() == "127.0.0.1:2379" {
        println!(
            "  etcdctl put foo bar   # plain etcdctl works too: it talks to 127.0.0.1:2379, which is {}",
            first.name
        );
    }
    println!("Stop with `cargo xtask cluster down` (add --clean to delete the data).");
}

pub fn down(args: DownArgs) -> Result<ExitCode> {
    let dir = resolve_dir(&args.dir)?;
    let Some(mut spec) = ClusterSpec::load(&dir)? else {
        if args.clean && dir.exists() {
            // Without our state file we cannot tell this is our folder.
            bail!(
                "{} has no {STATE_FILE}; not deleting a folder xtask did not create",
                dir.display()
            );
        }
        println!("No cluster in {} (nothing to stop).", dir.display());
        return Ok(ExitCode::SUCCESS);
    };
    let running: Vec<&Member> = spec.members.iter().filter(|m| m.alive()).collect();
    if running.is_empty() {
        println!("No member is running.");
    } else {
        let names: Vec<&str> = running.iter().map(|m| m.name.as_str()).collect();
        println!("Stopping {} ...", names.join(", "));
        stop_members(&running)?;
        println!("Stopped.");
    }
    for m in &mut spec.members {
        m.pid = None;
    }
    spec.save()?;
    if args.clean {
        fs::remove_dir_all(&dir).with_context(|| format!("cannot remove {}", dir.display()))?;
        println!("Removed {}.", dir.display());
    } else {
        println!(
            "Data and logs kept in {} (`cargo xtask cluster up` restarts from them; \
             `down --clean` deletes them).",
            dir.display()
        );
    }
    Ok(ExitCode::SUCCESS)
}

pub fn status(args: DirArgs) -> Result<ExitCode> {
    let dir = resolve_dir(&args)?;
    let Some(spec) = ClusterSpec::load(&dir)? else {
        println!(
            "No cluster in {} (start one with `cargo xtask cluster up`).",
            dir.display()
        );
        return Ok(ExitCode::FAILURE);
    };
    let mut all_good = true;
    for m in &spec.members {
        let alive = m.alive();
        let health = probe(m.client_addr());
        all_good &= alive && matches!(health, Health::Healthy | Health::NoHealthEndpoint(_));
        let process = match (m.pid, alive) {
            (Some(pid), true) => format!("pid {pid} running"),
            (Some(pid), false) => format!("pid {pid} gone"),
            (None, _) => "not running".to_string(),
        };
        println!(
            "{}  {:<18}  {}  /health: {}",
            m.name,
            process,
            m.client_url(),
            health
        );
    }
    println!("Data and logs: {}", spec.dir.display());
    println!(
        "etcdctl --endpoints={} endpoint status -w table",
        spec.endpoints()
    );
    Ok(if all_good {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// Members started by this process. Dropping it stops them (SIGTERM, then
/// SIGKILL), so a failing `up` or an erroring/panicking `bench compare`
/// never leaves servers behind; `release` hands them over instead.
pub struct RunningCluster {
    pub spec: ClusterSpec,
    children: Vec<(usize, Child)>,
    /// Delete `spec.dir` after stopping (bench compare's throwaway clusters).
    pub remove_dir_on_drop: bool,
}

impl RunningCluster {
    /// Stop tracking the members: they keep running after xtask exits.
    pub fn release(mut self) -> ClusterSpec {
        self.children.clear();
        self.remove_dir_on_drop = false;
        self.spec.clone()
    }
}

impl Drop for RunningCluster {
    fn drop(&mut self) {
        if !self.children.is_empty() {
            stop_children(&mut self.children, &self.spec);
            for m in &mut self.spec.members {
                m.pid = None;
            }
            if !self.remove_dir_on_drop {
                // Best effort: record that nothing runs any more.
                let _ = self.spec.save();
            }
        }
        if self.remove_dir_on_drop {
            let _ = fs::remove_dir_all(&self.spec.dir);
        }
    }
}

/// Starts the members at indexes `which` (all of them for a new cluster),
/// after checking their ports are free, and records the pids in
/// `cluster.json` straight away so `down` can find them whatever happens
/// next.
///
/// `detach` puts each member in its own process group: a Ctrl-C in the
/// terminal that ran `cluster up` must not reach the cluster later. The
/// throwaway clusters of `bench compare` stay in our group on purpose, so
/// Ctrl-C (which skips our Drop guard) still takes them down.
pub fn start(spec: ClusterSpec, which: &[usize], detach: bool) -> Result<RunningCluster> {
    let chosen: Vec<&Member> = which.iter().map(|&i| &spec.members[i]).collect();
    check_ports(&chosen)?;
    fs::create_dir_all(&spec.dir)
        .with_context(|| format!("cannot create {}", spec.dir.display()))?;

    let mut running = RunningCluster {
        spec,
        children: Vec::new(),
        remove_dir_on_drop: false,
    };
    for &i in which {
        let child = spawn_member(&running.spec, &running.spec.members[i], detach)?;
        running.spec.members[i].pid = Some(child.id());
        running.children.push((i, child));
        running.spec.save()?;
    }
    Ok(running)
}

fn spawn_member(spec: &ClusterSpec, m: &Member, detach: bool) -> Result<Child> {
    let member_dir = m.member_dir();
    fs::create_dir_all(member_dir)
        .with_context(|| format!("cannot create {}", member_dir.display()))?;
    let mut log = OpenOptions::new()
        .create(true)
        .append(true)
        .open(&m.log)
        .with_context(|| format!("cannot open {}", m.log.display()))?;

    let mut cmd = Command::new(&spec.binary);
    cmd.arg("--name")
        .arg(&m.name)
        .arg("--data-dir")
        .arg(&m.data_dir)
        .arg("--listen-client-urls")
        .arg(m.client_url())
        .arg("--advertise-client-urls")
        .arg(m.client_url())
        .arg("--listen-peer-urls")
        .arg(m.peer_url())
        .arg("--initial-advertise-peer-urls")
        .arg(m.peer_url())
        .arg("--initial-cluster")
        .arg(spec.initial_cluster())
        .arg("--initial-cluster-token")
        .arg(&spec.token)
        .arg("--initial-cluster-state")
        .arg("new")
        .current_dir(member_dir)
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log.try_clone()?);
    if detach {
        use std::os::unix::process::CommandExt;
        cmd.process_group(0);
    }
    // A marker in the log shows where each run starts (the log is appended
    // to across restarts).
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    writeln!(
        log,
        "=== xtask: starting {} at unix time {now}: {}",
        m.name,
        crate::util::display_cmd(&cmd)
    )?;
    cmd.spawn()
        .with_context(|| format!("cannot start {} ({})", m.name, spec.binary.display()))
}

/// Fails, naming every culprit, if a member's client or peer port is taken
/// (or its address does not exist on this machine).
fn check_ports(members: &[&Member]) -> Result<()> {
    let mut problems = Vec::new();
    for m in members {
        for (what, addr) in [("client", m.client_addr()), ("peer", m.peer_addr())] {
            // Binding is the one reliable test; the listener closes at once.
            if let Err(err) = TcpListener::bind(addr) {
                problems.push(match err.kind() {
                    std::io::ErrorKind::AddrInUse => format!(
                        "{addr} ({} {what} port) is already in use: is another etcd or cairn \
                         running? (`ss -ltnp 'sport = :{}'` shows who)",
                        m.name,
                        addr.port()
                    ),
                    std::io::ErrorKind::AddrNotAvailable => format!(
                        "{addr} ({} {what} address) does not exist on this machine; \
                         use --one-address",
                        m.name
                    ),
                    _ => format!("{addr} ({} {what}): {err}", m.name),
                });
            }
        }
    }
    if !problems.is_empty() {
        bail!("cannot start the cluster:\n  {}", problems.join("\n  "));
    }
    Ok(())
}

/// Outcome of one look at the whole cluster.
enum Readiness {
    Ready(Option<String>),
    NotYet(String),
}

fn readiness(spec: &ClusterSpec) -> Readiness {
    let probes: Vec<Health> = spec
        .members
        .iter()
        .map(|m| probe(m.client_addr()))
        .collect();
    let summary = || {
        spec.members
            .iter()
            .zip(&probes)
            .map(|(m, h)| format!("{}: {h}", m.name))
            .collect::<Vec<_>>()
            .join("; ")
    };
    if probes.iter().all(|h| *h == Health::Healthy) {
        return Readiness::Ready(None);
    }
    if probes
        .iter()
        .any(|h| matches!(h, Health::Down(_) | Health::Unhealthy(_)))
    {
        return Readiness::NotYet(summary());
    }
    // Some member has no HTTP /health. Ask etcdctl (a real gRPC round trip)
    // if it is installed; otherwise an open port on a live process is the
    // best we can tell.
    match etcdctl_endpoint_health(&spec.endpoints()) {
        Some(true) => Readiness::Ready(Some("checked with `etcdctl endpoint health`".into())),
        Some(false) => Readiness::NotYet(format!("{}; etcdctl endpoint health failed", summary())),
        None => Readiness::Ready(Some(
            "no /health endpoint and no etcdctl: only checked that every member runs and \
             accepts connections"
                .into(),
        )),
    }
}

/// `Some(healthy)` from `etcdctl endpoint health`, `None` without etcdctl.
fn etcdctl_endpoint_health(endpoints: &str) -> Option<bool> {
    find_on_path("etcdctl")?;
    let out = run_captured(
        Command::new("etcdctl")
            .env("ETCDCTL_API", "3")
            .arg(format!("--endpoints={endpoints}"))
            .args([
                "--dial-timeout=1s",
                "--command-timeout=2s",
                "endpoint",
                "health",
            ]),
        Duration::from_secs(10),
    )
    .ok()?;
    Some(out.status.success())
}

/// Waits (bounded) until every member answers healthy. Fails early if a
/// member we started exits; on failure prints each member's log tail (the
/// Drop guard then stops what we started).
pub fn wait_healthy(running: &mut RunningCluster, timeout: Duration) -> Result<()> {
    let deadline = Instant::now() + timeout;
    let started = Instant::now();
    let mut last;
    loop {
        for (i, child) in &mut running.children {
            if let Some(status) = child.try_wait()? {
                let m = &running.spec.members[*i];
                print_log_tails(&running.spec);
                bail!(
                    "{} exited during startup ({}); its log is {}",
                    m.name,
                    describe(status),
                    m.log.display()
                );
            }
        }
        match readiness(&running.spec) {
            Readiness::Ready(note) => {
                eprintln!(
                    "xtask: cluster healthy after {:.1}s",
                    started.elapsed().as_secs_f64()
                );
                if let Some(note) = note {
                    eprintln!("xtask: note: {note}");
                }
                return Ok(());
            }
            Readiness::NotYet(why) => last = why,
        }
        if Instant::now() >= deadline {
            print_log_tails(&running.spec);
            bail!(
                "the cluster did not become healthy within {}s (last check: {last})",
                timeout.as_secs()
            );
        }
        thread::sleep(Duration::from_millis(300));
    }
}

fn print_log_tails(spec: &ClusterSpec) {
    for m in &spec.members {
        eprintln!(
            "----- last {LOG_TAIL_LINES} lines of {} ({}) -----",
            m.name,
            m.log.display()
        );
        eprintln!("{}", tail(&m.log, LOG_TAIL_LINES));
    }
    eprintln!("-----");
}

fn signal(pid: u32, sig: Signal) {
    if let Ok(raw) = i32::try_from(pid) {
        let _ = kill(Pid::from_raw(raw), sig);
    }
}

/// Stops members that are not our children (started by an earlier `up`):
/// SIGTERM, wait, SIGKILL the survivors.
fn stop_members(members: &[&Member]) -> Result<()> {
    for m in members {
        signal(m.pid.expect("running member has a pid"), Signal::SIGTERM);
    }
    let still_alive = |deadline: Instant| -> Vec<&Member> {
        loop {
            let alive: Vec<&Member> = members.iter().copied().filter(|m| m.alive()).collect();
            if alive.is_empty() || Instant::now() >= deadline {
                return alive;
            }
            thread::sleep(Duration::from_millis(100));
        }
    };
    let survivors = still_alive(Instant::now() + STOP_GRACE);
    if survivors.is_empty() {
        return Ok(());
    }
    for m in &survivors {
        eprintln!(
            "xtask: {} did not exit within {}s of SIGTERM; sending SIGKILL",
            m.name,
            STOP_GRACE.as_secs()
        );
        signal(m.pid.expect("running member has a pid"), Signal::SIGKILL);
    }
    let survivors = still_alive(Instant::now() + KILL_WAIT);
    if !survivors.is_empty() {
        let names: Vec<String> = survivors
            .iter()
            .map(|m| format!("{} (pid {})", m.name, m.pid.unwrap_or(0)))
            .collect();
        bail!("could not stop {}", names.join(", "));
    }
    Ok(())
}

/// Stops members that are our children, reaping them.
fn stop_children(children: &mut Vec<(usize, Child)>, spec: &ClusterSpec) {
    for (_, child) in children.iter() {
        signal(child.id(), Signal::SIGTERM);
    }
    let deadline = Instant::now() + STOP_GRACE;
    for (i, child) in children.iter_mut() {
        let left = deadline.saturating_duration_since(Instant::now());
        if let Ok(Some(_)) = wait_timeout(child, left) {
            continue;
        }
        eprintln!(
            "xtask: {} did not exit within {}s of SIGTERM; killing it",
            spec.members[*i].name,
            STOP_GRACE.as_secs()
        );
        let _ = child.kill();
        let _ = wait_timeout(child, KILL_WAIT);
    }
    children.clear();
}

/// Is `pid` a live process whose command line mentions `marker` (the data
/// dir)? Uses /proc where there is one; elsewhere falls back to "some
/// process has this pid", which is the best a portable check can do.
fn process_is(pid: u32, marker: &Path) -> bool {
    let proc_dir = Path::new("/proc");
    if !proc_dir.join("self").exists() {
        return i32::try_from(pid).is_ok_and(|raw| kill(Pid::from_raw(raw), None).is_ok());
    }
    // A zombie (exited, not yet reaped) has an empty cmdline: counted dead.
    let Ok(cmdline) = fs::read(proc_dir.join(pid.to_string()).join("cmdline")) else {
        return false;
    };
    let marker = marker.as_os_str().as_encoded_bytes();
    !marker.is_empty() && cmdline.windows(marker.len()).any(|w| w == marker)
}
