//! `cargo xtask cluster ...`: a local cluster whose members behave like
//! separate hosts (127.0.0.1, .2, .3, ... each on the standard ports
//! 2379/2380), so etcd tooling works unchanged against it.
//!
//! Everything lives in one folder (default `target/cluster/`): per member
//! `<name>/etcd.conf` (its whole configuration, in the distro env-file
//! format), `<name>/data` and `<name>/cairn.log`, plus `cluster.json`, which
//! records the pids, addresses and layout so later calls find the members.
//! Members run as `cairn --config-file <name>/etcd.conf`, so editing that
//! file changes the running member (Cairn reloads it live).
//!
//! The verbs live in the submodules: `members` (stop/start/restart/kill,
//! add/remove), `status`, `logs`; `conf` writes the config files, `build`
//! builds cairn with a short progress summary, `etcdctl` runs the real
//! etcdctl for membership and raft status. The same start/stop machinery
//! starts the throwaway clusters of `bench compare`.

mod build;
mod conf;
pub mod etcdctl;
mod logs;
pub mod members;
mod status;

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
use crate::util::{describe, find_on_path, run_captured, tail, target_dir, wait_timeout};

pub use logs::{LogsArgs, logs};
pub use members::{
    AddArgs, MemberArgs, RemoveArgs, add, kill_member, remove, restart, start_member, stop,
};
pub use status::status;

/// How long `up`, `start` and `add` wait for health unless told otherwise.
const DEFAULT_UP_TIMEOUT_SECS: u64 = 30;
/// How long members get to exit after SIGTERM before they are SIGKILLed.
const STOP_GRACE: Duration = Duration::from_secs(10);
/// After SIGKILL a process is gone almost at once; this only bounds the wait.
const KILL_WAIT: Duration = Duration::from_secs(5);
const STATE_FILE: &str = "cluster.json";
const LOG_TAIL_LINES: usize = 25;
/// While waiting for health, how often to repeat what is still missing.
const PROGRESS_EVERY: Duration = Duration::from_secs(5);

#[derive(Args, Clone)]
pub struct DirArgs {
    /// Folder holding the members' configs, data and logs and cluster.json
    /// [default: target/cluster].
    #[arg(long)]
    dir: Option<PathBuf>,
}

#[derive(Args)]
pub struct UpArgs {
    #[command(flatten)]
    dir: DirArgs,
    /// Put all members on one address (client ports 2379/22379/32379, peer
    /// ports 2380/22380/32380 by default), for systems without 127.0.0.2
    /// and 127.0.0.3.
    #[arg(long)]
    one_address: bool,
    /// Address of the first member; the others get the next addresses
    /// (127.0.0.1, .2, .3 by default), or this one with --one-address.
    #[arg(long, value_name = "IPV4")]
    address: Option<Ipv4Addr>,
    /// Client port of the first member [default: 2379].
    #[arg(long, value_name = "PORT")]
    client_port: Option<u16>,
    /// Peer port of the first member [default: 2380].
    #[arg(long, value_name = "PORT")]
    peer_port: Option<u16>,
    /// How many members a new cluster gets [default: 3].
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u16).range(1..=9))]
    members: Option<u16>,
    /// Stop the cluster and delete its folder (data, logs, configs) first,
    /// then start a new one on the same addresses and ports (unless flags
    /// say otherwise). Without it, `up` restarts the members from their
    /// existing data and configs.
    #[arg(long)]
    fresh: bool,
    /// Seconds to wait for the cluster to become healthy.
    #[arg(long, default_value_t = DEFAULT_UP_TIMEOUT_SECS)]
    timeout: u64,
}

#[derive(Args)]
pub struct DownArgs {
    #[command(flatten)]
    dir: DirArgs,
    /// Also delete the folder (data, logs and configs).
    #[arg(long)]
    clean: bool,
}

/// Where the members listen.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum Layout {
    /// One loopback address per member, standard ports: like three hosts.
    ThreeAddresses,
    /// Everything on one address, told apart by port.
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
            Layout::ThreeAddresses => "one address per member (127.0.0.x style), standard ports",
            Layout::OneAddress => "one address, distinct ports",
        }
    }
}

/// Where the first member listens; every other member's address is derived
/// from it (see [`slot`]), so `add` can find the next one.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub struct Base {
    pub address: Ipv4Addr,
    pub client_port: u16,
    pub peer_port: u16,
}

impl Default for Base {
    fn default() -> Self {
        Base {
            address: Ipv4Addr::LOCALHOST,
            client_port: 2379,
            peer_port: 2380,
        }
    }
}

/// How a member gets its settings.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "kebab-case")]
pub enum ConfigVia {
    /// `cairn --config-file <member>/etcd.conf`: the file is live.
    File,
    /// Flags built from `<member>/etcd.conf` at each start: for servers that
    /// cannot read an env-file themselves (real etcd, via `CAIRN_BIN`).
    /// Also what state files written before config files existed mean.
    #[default]
    Flags,
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
    fn new(dir: &Path, name: &str, log_name: &str, (host, client_port, peer_port): Slot) -> Self {
        let member_dir = dir.join(name);
        Member {
            name: name.to_string(),
            host,
            client_port,
            peer_port,
            data_dir: member_dir.join("data"),
            log: member_dir.join(log_name),
            pid: None,
        }
    }

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
    /// The member's configuration file (see `conf`).
    pub fn config_path(&self) -> PathBuf {
        self.member_dir().join(conf::CONFIG_FILE)
    }

    /// Is the recorded pid still this member? The config file (or, for
    /// members started with flags, the data dir) is on the command line, so
    /// checking it guards against the pid having been reused by an
    /// unrelated process since (we must never signal one of those).
    fn alive(&self) -> bool {
        self.pid
            .is_some_and(|pid| process_is(pid, &[&self.config_path(), &self.data_dir]))
    }

    fn slot(&self) -> Slot {
        (self.host, self.client_port, self.peer_port)
    }
}

/// A member's address, client port and peer port.
pub type Slot = (Ipv4Addr, u16, u16);

/// Everything needed to start, find and stop one cluster; persisted as
/// `cluster.json`.
#[derive(Serialize, Deserialize, Clone, Debug)]
pub struct ClusterSpec {
    pub layout: Layout,
    pub binary: PathBuf,
    pub token: String,
    pub dir: PathBuf,
    pub members: Vec<Member>,
    /// Missing in state files from before `add` existed: the old defaults.
    #[serde(default)]
    pub base: Base,
    #[serde(default)]
    pub config_via: ConfigVia,
}

impl ClusterSpec {
    /// Members m1..mN under `dir`, one per entry of `slots` (address, client
    /// port, peer port).
    pub fn new(
        layout: Layout,
        binary: PathBuf,
        token: &str,
        dir: &Path,
        log_name: &str,
        slots: &[Slot],
    ) -> Self {
        let members: Vec<Member> = slots
            .iter()
            .enumerate()
            .map(|(i, &s)| Member::new(dir, &format!("m{}", i + 1), log_name, s))
            .collect();
        let base = slots.first().map_or_else(Base::default, |&(a, c, p)| Base {
            address: a,
            client_port: c,
            peer_port: p,
        });
        let config_via = config_via_for(&binary);
        ClusterSpec {
            layout,
            binary,
            token: token.to_string(),
            dir: dir.to_path_buf(),
            members,
            base,
            config_via,
        }
    }

    /// `host:port` of every member's client listener, comma separated: the
    /// form `etcdctl --endpoints` and cairn-bench take.
    pub fn endpoints(&self) -> String {
        endpoints_of(self.members.iter())
    }

    fn initial_cluster(&self) -> String {
        self.members
            .iter()
            .map(|m| format!("{}={}", m.name, m.peer_url()))
            .collect::<Vec<_>>()
            .join(",")
    }

    fn member_index(&self, name: &str) -> Result<usize> {
        self.members
            .iter()
            .position(|m| m.name == name)
            .with_context(|| {
                let names: Vec<&str> = self.members.iter().map(|m| m.name.as_str()).collect();
                format!(
                    "no member called {name:?} in {} (members: {})",
                    self.dir.display(),
                    names.join(", ")
                )
            })
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

    /// The state file, or an error telling how to create one.
    fn load_existing(dir: &Path) -> Result<Self> {
        Self::load(dir)?.with_context(|| {
            format!(
                "no cluster in {} (start one with `cargo xtask cluster up{}`)",
                dir.display(),
                dir_flag_hint(dir)
            )
        })
    }
}

fn endpoints_of<'a>(members: impl Iterator<Item = &'a Member>) -> String {
    members
        .map(|m| m.client_addr().to_string())
        .collect::<Vec<_>>()
        .join(",")
}

/// ` --dir <dir>` when `dir` is not the default folder, for hints that show
/// a command to run.
fn dir_flag_hint(dir: &Path) -> String {
    if std::path::absolute(default_dir()).is_ok_and(|d| d == dir) {
        String::new()
    } else {
        format!(" --dir {}", dir.display())
    }
}

/// Cairn reads the member's etcd.conf itself; anything else (real etcd via
/// `CAIRN_BIN`) gets the same settings as flags. `--version` tells them
/// apart: cairn's first line is "cairn Version: ...".
fn config_via_for(binary: &Path) -> ConfigVia {
    let out = run_captured(
        Command::new(binary).arg("--version"),
        Duration::from_secs(10),
    );
    match out {
        Ok(out) if out.stdout.contains("cairn Version") => ConfigVia::File,
        _ => ConfigVia::Flags,
    }
}

/// Member `k`'s (0-based) address and ports for a cluster laid out from
/// `base`. One address per member: the next addresses, same ports. One
/// address: 2379, 22379, 32379, ... (the ports etcd's docs use for local
/// clusters), then base + 10, + 20, ... when those run out.
fn slot(layout: Layout, base: Base, k: usize) -> Option<Slot> {
    let k16 = u16::try_from(k).ok()?;
    match layout {
        Layout::ThreeAddresses => {
            let addr = u32::from(base.address).checked_add(u32::from(k16))?;
            let addr = Ipv4Addr::from(addr);
            // All of 127/8 is local on Linux; nothing past it is.
            addr.is_loopback()
                .then_some((addr, base.client_port, base.peer_port))
        }
        Layout::OneAddress => {
            let spaced = |port: u16| {
                if k == 0 {
                    Some(port)
                } else {
                    port.checked_add(10_000u16.checked_mul(k16 + 1)?)
                }
            };
            let (client, peer) = match (spaced(base.client_port), spaced(base.peer_port)) {
                (Some(c), Some(p)) => (c, p),
                // Past 65535: fall back to small steps above the base.
                _ => (
                    base.client_port.checked_add(10 * k16)?,
                    base.peer_port.checked_add(10 * k16)?,
                ),
            };
            (client != peer).then_some((base.address, client, peer))
        }
    }
}

/// Addresses for the throwaway clusters of `bench compare`: `slot` (1, 2, ...)
/// keeps them apart from each other and from a running `cluster up`, which
/// uses 127.0.0.x and ports 2379-32380 by default.
pub fn bench_addresses(layout: Layout, slot: u8) -> [Slot; 3] {
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

/// `$CAIRN_BIN` if set (e.g. target/debug/cairn, or /usr/bin/etcd to try the
/// tooling against real etcd), resolved to an absolute path.
fn cairn_bin_from_env() -> Result<Option<PathBuf>> {
    let Some(bin) = std::env::var_os("CAIRN_BIN").filter(|b| !b.is_empty()) else {
        return Ok(None);
    };
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
    Ok(Some(path))
}

/// The server binary: `$CAIRN_BIN` if set, else a fresh
/// `cargo build --release -p cairn` (with a progress summary). Building
/// cairn needs no protoc (the server compiles its protos with protox).
pub fn cairn_binary() -> Result<PathBuf> {
    if let Some(path) = cairn_bin_from_env()? {
        return Ok(path);
    }
    build::build_cairn_release()
}

/// The binary for starting members of an existing cluster without a build:
/// `$CAIRN_BIN`, else the one `up` used.
fn binary_for(spec: &ClusterSpec) -> Result<PathBuf> {
    if let Some(path) = cairn_bin_from_env()? {
        return Ok(path);
    }
    if !spec.binary.is_file() {
        bail!(
            "{} (the server binary this cluster was started with) is gone; \
             `cargo xtask cluster up` builds it again",
            spec.binary.display()
        );
    }
    Ok(spec.binary.clone())
}

pub fn up(args: UpArgs) -> Result<ExitCode> {
    let dir = resolve_dir(&args.dir)?;
    let mut existing = ClusterSpec::load(&dir)?;

    // `--fresh` keeps the addresses and ports of the cluster it replaces
    // unless flags say otherwise: starting over should not move it.
    let mut inherited = None;
    if args.fresh {
        if let Some(old) = existing.take() {
            inherited = Some((old.layout, old.base));
            let running: Vec<&Member> = old.members.iter().filter(|m| m.alive()).collect();
            if !running.is_empty() {
                eprintln!("xtask: --fresh: stopping {}", names(&running));
                stop_members(&running)?;
            }
        }
        wipe_dir(&dir)?;
    }

    if let Some(old) = &existing {
        check_same_layout(old, &args)?;
        if old.members.iter().all(Member::alive) {
            println!("The cluster in {} is already up.", dir.display());
            print_summary(old);
            return Ok(ExitCode::SUCCESS);
        }
    }

    let binary = cairn_binary()?;
    let mut spec = match existing {
        Some(mut old) => {
            // The binary may be a new build; how it takes its settings may
            // have changed with it.
            old.config_via = config_via_for(&binary);
            old.binary = binary;
            old
        }
        None => new_spec(&args, &dir, binary, inherited)?,
    };

    // Keep members that are still alive; start the rest. A member whose data
    // dir exists restarts from it (its config's initial-cluster settings
    // only matter on first start).
    let to_start: Vec<usize> = (0..spec.members.len())
        .filter(|&i| !spec.members[i].alive())
        .collect();
    for &i in &to_start {
        spec.members[i].pid = None;
    }
    let restarting: Vec<&Member> = to_start
        .iter()
        .map(|&i| &spec.members[i])
        .filter(|m| has_data(m))
        .collect();
    let fresh: Vec<&Member> = to_start
        .iter()
        .map(|&i| &spec.members[i])
        .filter(|m| !has_data(m))
        .collect();
    if !restarting.is_empty() {
        eprintln!(
            "xtask: restarting {} from existing data in {} (--fresh starts over)",
            names(&restarting),
            dir.display()
        );
    }
    if !fresh.is_empty() {
        eprintln!("xtask: starting {} with new data", names(&fresh));
    }
    let alive: Vec<&Member> = spec.members.iter().filter(|m| m.alive()).collect();
    if !alive.is_empty() {
        eprintln!("xtask: already running: {}", names(&alive));
    }

    let mut running = start(spec, &to_start, true)?;
    let all: Vec<usize> = (0..running.spec.members.len()).collect();
    if let Err(err) = wait_members_healthy(&mut running, &all, Duration::from_secs(args.timeout)) {
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

fn names(members: &[&Member]) -> String {
    members
        .iter()
        .map(|m| m.name.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

fn has_data(m: &Member) -> bool {
    fs::read_dir(&m.data_dir).is_ok_and(|mut d| d.next().is_some())
}

/// Deletes a cluster folder, but only one that xtask made (it holds our
/// state file) or an empty one: `--dir` might point anywhere.
fn wipe_dir(dir: &Path) -> Result<()> {
    if !dir.exists() {
        return Ok(());
    }
    let empty = fs::read_dir(dir).is_ok_and(|mut d| d.next().is_none());
    if !empty && !dir.join(STATE_FILE).is_file() {
        bail!(
            "{} has no {STATE_FILE}; not deleting a folder xtask did not create",
            dir.display()
        );
    }
    fs::remove_dir_all(dir).with_context(|| format!("cannot remove {}", dir.display()))?;
    eprintln!("xtask: removed {}", dir.display());
    Ok(())
}

/// Flags that would lay out a new cluster differently from the existing one
/// are refused: `up` restarts what is there, `--fresh` starts over.
fn check_same_layout(old: &ClusterSpec, args: &UpArgs) -> Result<()> {
    let mut differences = Vec::new();
    if args.one_address && old.layout != Layout::OneAddress {
        differences.push(format!("--one-address (it has {})", old.layout.describe()));
    }
    if let Some(a) = args.address.filter(|&a| a != old.base.address) {
        differences.push(format!("--address {a} (it has {})", old.base.address));
    }
    if let Some(p) = args.client_port.filter(|&p| p != old.base.client_port) {
        differences.push(format!(
            "--client-port {p} (it has {})",
            old.base.client_port
        ));
    }
    if let Some(p) = args.peer_port.filter(|&p| p != old.base.peer_port) {
        differences.push(format!("--peer-port {p} (it has {})", old.base.peer_port));
    }
    if let Some(n) = args
        .members
        .filter(|&n| usize::from(n) != old.members.len())
    {
        differences.push(format!("--members {n} (it has {})", old.members.len()));
    }
    if !differences.is_empty() {
        bail!(
            "the cluster in {} was created differently: {}. Run `up` without those flags \
             to restart it, or add --fresh to delete it and start a new one",
            old.dir.display(),
            differences.join(", ")
        );
    }
    Ok(())
}

fn new_spec(
    args: &UpArgs,
    dir: &Path,
    binary: PathBuf,
    inherited: Option<(Layout, Base)>,
) -> Result<ClusterSpec> {
    let (old_layout, defaults) = inherited.unwrap_or((Layout::ThreeAddresses, Base::default()));
    let layout = if args.one_address {
        Layout::OneAddress
    } else {
        old_layout
    };
    let base = Base {
        address: args.address.unwrap_or(defaults.address),
        client_port: args.client_port.unwrap_or(defaults.client_port),
        peer_port: args.peer_port.unwrap_or(defaults.peer_port),
    };
    if base.client_port == base.peer_port && layout == Layout::OneAddress {
        bail!("--client-port and --peer-port must differ");
    }
    let n = usize::from(args.members.unwrap_or(3));
    let slots = (0..n)
        .map(|k| {
            slot(layout, base, k).with_context(|| {
                format!(
                    "member {} would need an address or port past the end of the range \
                     (base {}:{}/{})",
                    k + 1,
                    base.address,
                    base.client_port,
                    base.peer_port
                )
            })
        })
        .collect::<Result<Vec<_>>>()?;
    let mut spec = ClusterSpec::new(layout, binary, "cairn-local", dir, "cairn.log", &slots);
    spec.base = base;
    // A new cluster: configs left behind in the folder (without a state
    // file) describe some other cluster.
    for m in &spec.members {
        let _ = fs::remove_file(m.config_path());
    }
    Ok(spec)
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
    let log_name = spec.members.first().map_or_else(String::new, |m| {
        m.log
            .file_name()
            .map_or_else(String::new, |n| n.to_string_lossy().into_owned())
    });
    println!(
        "Folder: {} (per member: {}, data/, {log_name}; state in {STATE_FILE})",
        spec.dir.display(),
        conf::CONFIG_FILE
    );
    if spec.config_via == ConfigVia::File {
        println!(
            "Edit a member's {} to change it while it runs (live settings apply at once; \
             `cairn config status --endpoint <client URL>` shows the outcome).",
            conf::CONFIG_FILE
        );
    }
    println!("Try:");
    println!("  etcdctl --endpoints={} member list", spec.endpoints());
    if let Some(first) = spec.members.first()
        && first.client_addr().to_string() == "127.0.0.1:2379"
    {
        println!(
            "  etcdctl put foo bar   # plain etcdctl works too: it talks to 127.0.0.1:2379, which is {}",
            first.name
        );
    }
    let d = dir_flag_hint(&spec.dir);
    println!(
        "  cargo xtask cluster status|logs [member]|stop|start|restart|kill <member>|add <name>|\
         remove <member>{}",
        if d.is_empty() {
            String::new()
        } else {
            format!("  (with{d})")
        }
    );
    println!("Stop with `cargo xtask cluster down{d}` (add --clean to delete the data).");
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
        println!("Stopping {} ...", names(&running));
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
            "Data, logs and configs kept in {} (`cargo xtask cluster up` restarts from them; \
             `down --clean` deletes them).",
            dir.display()
        );
    }
    Ok(ExitCode::SUCCESS)
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
    /// The members' process ids, in member order (for CPU and memory
    /// readings from /proc).
    pub fn member_pids(&self) -> Result<Vec<u32>> {
        self.spec
            .members
            .iter()
            .map(|m| m.pid.with_context(|| format!("{} has no pid", m.name)))
            .collect()
    }

    /// The members' process ids as the load generators' `--cpu-of` takes
    /// them (comma-separated).
    pub fn cpu_of_arg(&self) -> Result<String> {
        let pids: Vec<String> = self.member_pids()?.iter().map(u32::to_string).collect();
        Ok(pids.join(","))
    }

    /// A rolling-restart step: SIGTERM member `i` (SIGKILL past the grace
    /// period), start it again from its data and config, and wait (bounded)
    /// until it is healthy. Returns how long it took to exit after SIGTERM.
    pub fn restart_member(&mut self, i: usize, timeout: Duration) -> Result<Duration> {
        let mut child = self.take_child(i)?;
        let stopping = Instant::now();
        signal(child.id(), Signal::SIGTERM);
        if !matches!(wait_timeout(&mut child, STOP_GRACE), Ok(Some(_))) {
            eprintln!(
                "xtask: {} did not exit within {}s of SIGTERM; killing it",
                self.spec.members[i].name,
                STOP_GRACE.as_secs()
            );
            let _ = child.kill();
            let _ = wait_timeout(&mut child, KILL_WAIT);
        }
        let stop_took = stopping.elapsed();
        self.stopped(i);
        self.spawn_stopped(i)?;
        wait_members_healthy(self, &[i], timeout)?;
        Ok(stop_took)
    }

    /// A crash: SIGKILL member `i`, then wait (bounded) until it is gone
    /// and its ports can be bound again.
    pub fn crash_member(&mut self, i: usize) -> Result<()> {
        let mut child = self.take_child(i)?;
        let _ = child.kill();
        if !matches!(wait_timeout(&mut child, KILL_WAIT), Ok(Some(_))) {
            bail!("{} survived SIGKILL", self.spec.members[i].name);
        }
        self.stopped(i);
        Ok(())
    }

    /// Starts member `i`, which is not running, from its data and config
    /// file (a new member's must be written first), as our child. Does not
    /// wait for it.
    pub fn spawn_stopped(&mut self, i: usize) -> Result<()> {
        let child = spawn_member(&self.spec, &self.spec.members[i], false)?;
        self.spec.members[i].pid = Some(child.id());
        self.children.push((i, child));
        self.spec.save()
    }

    fn take_child(&mut self, i: usize) -> Result<Child> {
        let pos = self
            .children
            .iter()
            .position(|(j, _)| *j == i)
            .with_context(|| format!("member {i} was not started here"))?;
        Ok(self.children.remove(pos).1)
    }

    fn stopped(&mut self, i: usize) {
        self.spec.members[i].pid = None;
        wait_ports_released(&[&self.spec.members[i]]);
    }

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
            stop_children(&mut self.children, &mut self.spec);
            if !self.remove_dir_on_drop {
                // Best effort: record that what we started runs no more.
                // Members started elsewhere keep their pids.
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
/// next. A member without a config file gets one for a new cluster.
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
    for m in &chosen {
        if !m.config_path().is_file() {
            let text = conf::render(&spec, m, &spec.initial_cluster(), conf::State::New);
            conf::write(&m.config_path(), &text)?;
        }
    }

    let mut running = RunningCluster {
        spec,
        children: Vec::new(),
        remove_dir_on_drop: false,
    };
    for &i in which {
        let child = spawn_member(&running.spec, &running.spec.members[i], detach)?;
        eprintln!(
            "xtask:   {} started (pid {}, {})",
            running.spec.members[i].name,
            child.id(),
            running.spec.members[i].client_url()
        );
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

    let config = m.config_path();
    let mut cmd = Command::new(&spec.binary);
    match spec.config_via {
        ConfigVia::File => {
            cmd.arg("--config-file").arg(&config);
        }
        ConfigVia::Flags => {
            for (key, value) in conf::read(&config)? {
                cmd.arg(conf::flag(&key, &value).with_context(|| {
                    format!("{}: {key} is not an ETCD_* setting", config.display())
                })?);
            }
        }
    }
    // The member's file must be its whole configuration: an ETCD_* variable
    // in our environment would override it (Cairn) or clash with the flags
    // (etcd refuses a setting given both ways).
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("ETCD_") {
            cmd.env_remove(key);
        }
    }
    cmd.current_dir(member_dir)
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
            if let Err(err) = port_free(addr) {
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
        bail!("cannot start:\n  {}", problems.join("\n  "));
    }
    Ok(())
}

/// Binding is the one reliable test; the listener closes at once.
fn port_free(addr: SocketAddr) -> std::io::Result<()> {
    TcpListener::bind(addr).map(drop)
}

/// Outcome of one look at some members.
enum Readiness {
    Ready(Option<String>),
    NotYet,
}

fn readiness(spec: &ClusterSpec, which: &[usize], probes: &[Health]) -> Readiness {
    if probes.iter().all(|h| *h == Health::Healthy) {
        return Readiness::Ready(None);
    }
    // Cairn always serves /health, but accepts connections before it
    // answers them (it serves clients once it has joined the cluster): no
    // answer there means "not yet", not "no /health".
    if spec.config_via == ConfigVia::File
        || probes
            .iter()
            .any(|h| matches!(h, Health::Down(_) | Health::Unhealthy(_)))
    {
        return Readiness::NotYet;
    }
    // Some member has no HTTP /health. Ask etcdctl (a real gRPC round trip)
    // if it is installed; otherwise an open port on a live process is the
    // best we can tell.
    let endpoints = endpoints_of(which.iter().map(|&i| &spec.members[i]));
    match etcdctl::endpoint_health(&endpoints) {
        Some(true) => Readiness::Ready(Some("checked with `etcdctl endpoint health`".into())),
        Some(false) => Readiness::NotYet,
        None => Readiness::Ready(Some(
            "no /health endpoint and no etcdctl: only checked that every member runs and \
             accepts connections"
                .into(),
        )),
    }
}

/// Waits (bounded) until every member answers healthy (`bench compare`).
pub fn wait_healthy(running: &mut RunningCluster, timeout: Duration) -> Result<()> {
    let all: Vec<usize> = (0..running.spec.members.len()).collect();
    wait_members_healthy(running, &all, timeout)
}

/// Waits (bounded) until the members at `which` answer healthy, saying
/// which ones are up as they come. Fails early if a member we started
/// exits; on failure prints the log tails of the members concerned (the
/// Drop guard then stops what we started).
fn wait_members_healthy(
    running: &mut RunningCluster,
    which: &[usize],
    timeout: Duration,
) -> Result<()> {
    let started = Instant::now();
    let deadline = started + timeout;
    let mut healthy = vec![false; which.len()];
    let mut next_progress = started + PROGRESS_EVERY;
    loop {
        for (i, child) in &mut running.children {
            if let Some(status) = child.try_wait()? {
                let m = &running.spec.members[*i];
                print_log_tails(&running.spec, which);
                bail!(
                    "{} exited during startup ({}); its log is {}",
                    m.name,
                    describe(status),
                    m.log.display()
                );
            }
        }
        let probes: Vec<Health> = thread::scope(|s| {
            let handles: Vec<_> = which
                .iter()
                .map(|&i| {
                    let addr = running.spec.members[i].client_addr();
                    s.spawn(move || probe(addr))
                })
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().unwrap_or(Health::Down("probe panicked".into())))
                .collect()
        });
        for (k, h) in probes.iter().enumerate() {
            if *h == Health::Healthy && !healthy[k] {
                healthy[k] = true;
                eprintln!(
                    "xtask:   {} healthy after {:.1}s",
                    running.spec.members[which[k]].name,
                    started.elapsed().as_secs_f64()
                );
            }
        }
        let summary = || {
            which
                .iter()
                .zip(&probes)
                .filter(|(_, h)| **h != Health::Healthy)
                .map(|(&i, h)| format!("{}: {h}", running.spec.members[i].name))
                .collect::<Vec<_>>()
                .join("; ")
        };
        match readiness(&running.spec, which, &probes) {
            Readiness::Ready(note) => {
                eprintln!(
                    "xtask: healthy after {:.1}s",
                    started.elapsed().as_secs_f64()
                );
                if let Some(note) = note {
                    eprintln!("xtask: note: {note}");
                }
                return Ok(());
            }
            Readiness::NotYet => {}
        }
        let now = Instant::now();
        if now >= deadline {
            print_log_tails(&running.spec, which);
            bail!(
                "not healthy within {}s (last check: {})",
                timeout.as_secs(),
                summary()
            );
        }
        if now >= next_progress {
            eprintln!("xtask:   still waiting: {}", summary());
            next_progress = now + PROGRESS_EVERY;
        }
        thread::sleep(Duration::from_millis(300));
    }
}

fn print_log_tails(spec: &ClusterSpec, which: &[usize]) {
    for &i in which {
        let m = &spec.members[i];
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

/// Waits until none of `members` is alive or the deadline passes; returns
/// the survivors.
fn wait_gone<'a>(members: &[&'a Member], deadline: Instant) -> Vec<&'a Member> {
    loop {
        let alive: Vec<&Member> = members.iter().copied().filter(|m| m.alive()).collect();
        if alive.is_empty() || Instant::now() >= deadline {
            return alive;
        }
        thread::sleep(Duration::from_millis(100));
    }
}

/// Waits (bounded) until the members' client and peer ports can be bound
/// again. A killed process loses its command line (our liveness test)
/// before the kernel has closed its sockets; in between, a connection to
/// its port is accepted and reset, and a restart on the port would fail.
/// So "stopped" waits for the ports too. Only warns at the deadline: by
/// then something else may hold the port, which `start` reports.
fn wait_ports_released(members: &[&Member]) {
    let deadline = Instant::now() + KILL_WAIT;
    loop {
        let busy: Vec<String> = members
            .iter()
            .flat_map(|m| [m.client_addr(), m.peer_addr()])
            .filter(|&a| port_free(a).is_err())
            .map(|a| a.to_string())
            .collect();
        if busy.is_empty() {
            return;
        }
        if Instant::now() >= deadline {
            eprintln!(
                "xtask: warning: still in use {}s after the process exited: {}",
                KILL_WAIT.as_secs(),
                busy.join(", ")
            );
            return;
        }
        thread::sleep(Duration::from_millis(50));
    }
}

/// Stops members that are not our children (started by an earlier xtask):
/// SIGTERM, wait, SIGKILL the survivors.
fn stop_members(members: &[&Member]) -> Result<()> {
    for m in members {
        if m.alive() {
            signal(m.pid.expect("running member has a pid"), Signal::SIGTERM);
        }
    }
    let survivors = wait_gone(members, Instant::now() + STOP_GRACE);
    if survivors.is_empty() {
        wait_ports_released(members);
        return Ok(());
    }
    for m in &survivors {
        eprintln!(
            "xtask: {} did not exit within {}s of SIGTERM; sending SIGKILL",
            m.name,
            STOP_GRACE.as_secs()
        );
    }
    kill_members(&survivors)
}

/// SIGKILL, then wait (bounded) until the processes are gone.
fn kill_members(members: &[&Member]) -> Result<()> {
    for m in members {
        if m.alive() {
            signal(m.pid.expect("running member has a pid"), Signal::SIGKILL);
        }
    }
    let survivors = wait_gone(members, Instant::now() + KILL_WAIT);
    if !survivors.is_empty() {
        let names: Vec<String> = survivors
            .iter()
            .map(|m| format!("{} (pid {})", m.name, m.pid.unwrap_or(0)))
            .collect();
        bail!("could not stop {}", names.join(", "));
    }
    wait_ports_released(members);
    Ok(())
}

/// Stops members that are our children, reaping them.
fn stop_children(children: &mut Vec<(usize, Child)>, spec: &mut ClusterSpec) {
    for (_, child) in children.iter() {
        signal(child.id(), Signal::SIGTERM);
    }
    let deadline = Instant::now() + STOP_GRACE;
    for (i, child) in children.iter_mut() {
        spec.members[*i].pid = None;
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

/// Is `pid` a live process whose command line mentions one of `markers`
/// (the member's config file or data dir)? Uses /proc where there is one;
/// elsewhere falls back to "some process has this pid", which is the best a
/// portable check can do.
fn process_is(pid: u32, markers: &[&Path]) -> bool {
    let proc_dir = Path::new("/proc");
    if !proc_dir.join("self").exists() {
        return i32::try_from(pid).is_ok_and(|raw| kill(Pid::from_raw(raw), None).is_ok());
    }
    // A zombie (exited, not yet reaped) has an empty cmdline: counted dead.
    let Ok(cmdline) = fs::read(proc_dir.join(pid.to_string()).join("cmdline")) else {
        return false;
    };
    markers.iter().any(|marker| {
        let marker = marker.as_os_str().as_encoded_bytes();
        !marker.is_empty() && cmdline.windows(marker.len()).any(|w| w == marker)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_slots_are_the_documented_ones() {
        let base = Base::default();
        let three: Vec<Slot> = (0..4)
            .map(|k| slot(Layout::ThreeAddresses, base, k).unwrap())
            .collect();
        assert_eq!(three[0], (Ipv4Addr::new(127, 0, 0, 1), 2379, 2380));
        assert_eq!(three[2], (Ipv4Addr::new(127, 0, 0, 3), 2379, 2380));
        assert_eq!(three[3], (Ipv4Addr::new(127, 0, 0, 4), 2379, 2380));
        let one: Vec<(u16, u16)> = (0..4)
            .map(|k| {
                let (_, c, p) = slot(Layout::OneAddress, base, k).unwrap();
                (c, p)
            })
            .collect();
        assert_eq!(
            one,
            [(2379, 2380), (22379, 22380), (32379, 32380), (42379, 42380)]
        );
    }

    #[test]
    fn slots_stay_in_range() {
        let base = Base {
            address: Ipv4Addr::new(127, 255, 255, 254),
            ..Base::default()
        };
        assert!(slot(Layout::ThreeAddresses, base, 1).is_some());
        // 128.0.0.0 is not on this machine.
        assert!(slot(Layout::ThreeAddresses, base, 2).is_none());
        let high = Base {
            address: Ipv4Addr::LOCALHOST,
            client_port: 50000,
            peer_port: 50001,
        };
        assert_eq!(
            slot(Layout::OneAddress, high, 1),
            Some((Ipv4Addr::LOCALHOST, 50010, 50011))
        );
    }
}
