//! Carrying out a fault schedule against a running cluster: network faults
//! through the peer proxy, process faults with signals, a full or slow disk
//! on a file system of the member's own, a wall-clock offset where the
//! binary supports one.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cairn_robustness::faults::{FaultKind, PlannedFault};
use cairn_robustness::proxy::{Link, PeerProxy};
use cairn_robustness::rng::Rng;
use serde::Serialize;

use crate::clocks::Clocks;
use crate::{Cluster, Target};

/// Size of each member's disk when disk faults are on. etcd preallocates
/// 64 MiB WAL segments, so less would not even start it.
const DISK_MIB: u64 = 256;
/// Write operations per second a slow disk allows (blkio throttling); an
/// fsync costs one or more, so these make fsyncs take tens to hundreds of
/// milliseconds.
const SLOW_DISK_IOPS: [u64; 3] = [10, 25, 50];
/// How long a restarted member may take to answer /health again before the
/// nemesis moves on (the run records it).
const RESTART_HEALTH_TIMEOUT: Duration = Duration::from_secs(20);
/// What Cairn's prober logs when a peer's clock is off by more than 1 s.
const DRIFT_WARNING: &str = "the clock difference against peer";
/// How long past a clock fault's planned end the nemesis waits for that
/// warning (the jump lands within 2 s; probes run every 2 s).
const DRIFT_WARNING_TIMEOUT: Duration = Duration::from_secs(8);
/// How long the token check retries calls that fail for reasons other than
/// the token (no leader yet, a member restarting under another fault).
const TOKEN_CHECK_TIMEOUT: Duration = Duration::from_secs(6);
/// How long each step of replacing a member (remove, add, promote) is
/// retried while the cluster settles.
const REPLACE_STEP_TIMEOUT: Duration = Duration::from_secs(10);

/// `--snapshot-count` of runs that may draw `snapshot-leader-change`.
pub const SNAPSHOT_FAULT_SNAPSHOT_COUNT: u64 = 500;
/// Writes made while the follower is cut off: past what a leader keeps for
/// followers only a little behind (etcd: 5,000 entries after each
/// snapshot; Cairn: at most that) plus a snapshot interval, so that only a
/// snapshot can catch the follower up.
const SNAPSHOT_BURST_WRITES: u64 = 6_500;
/// Value size of those writes (a few MiB of state to send).
const SNAPSHOT_BURST_VALUE_BYTES: usize = 512;
/// Burst writes in flight at once, and the longest the burst may take.
const SNAPSHOT_BURST_CONCURRENCY: usize = 64;
const SNAPSHOT_BURST_TIMEOUT: Duration = Duration::from_secs(30);
/// Keys of the burst: outside the workload's prefix, so that its checkers
/// and watchers never see them.
const SNAPSHOT_BURST_PREFIX: &str = "/rb-burst/";
/// The thin link's rate from the leader to the follower: a few MiB of
/// snapshot take seconds.
const SNAPSHOT_LINK_BYTES_PER_S: u64 = 1 << 20;
/// Bytes over the thin link that show the snapshot is under way (appends
/// and heartbeats to a follower that needs a snapshot are far fewer), and
/// the longest wait for them.
const SNAPSHOT_IN_FLIGHT_BYTES: u64 = 256 << 10;
const SNAPSHOT_IN_FLIGHT_TIMEOUT: Duration = Duration::from_secs(10);
/// After the leader change: how long the follower may take to catch up
/// before the fault ends anyway, and the least time the fault holds.
const SNAPSHOT_CATCH_UP_TIMEOUT: Duration = Duration::from_secs(8);
const SNAPSHOT_MIN_HOLD: Duration = Duration::from_secs(1);

/// A fault as it was carried out.
#[derive(Debug, Clone, Serialize)]
pub struct FaultRecord {
    pub kind: FaultKind,
    /// Members it hit (indices; m1 is 0).
    pub targets: Vec<usize>,
    /// Milliseconds since the workload started.
    pub start_ms: u64,
    pub end_ms: u64,
    pub detail: String,
    /// Set when the fault could not be done here (and was not).
    pub skipped: Option<String>,
}

/// What each member's data dir is on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DiskKind {
    /// A tmpfs: fills up, but has no block device to slow down, and makes
    /// fsync free.
    Tmpfs,
    /// An ext4 file system on a loop device (an image file on the real
    /// disk): fills up, and its writes can be throttled per process.
    Loop,
}

/// One small file system per member for its data dir, so that a member's
/// disk can be filled or slowed without touching anyone else's. Needs root.
pub struct Disks {
    pub dir: tempfile::TempDir,
    pub mounts: Vec<PathBuf>,
    /// The loop device under each mount (`DiskKind::Loop` only).
    pub devices: Vec<PathBuf>,
}

/// An administration tool by name, also where a non-root PATH misses it.
fn tool(name: &str) -> Command {
    let path = ["/usr/sbin", "/sbin", "/usr/bin", "/bin"]
        .iter()
        .map(|d| Path::new(d).join(name))
        .find(|p| p.exists())
        .unwrap_or_else(|| PathBuf::from(name));
    Command::new(path)
}

fn run(cmd: &mut Command, what: &str) -> Result<String, String> {
    let out = cmd
        .output()
        .map_err(|e| format!("cannot run {what}: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "{what} failed (it needs root): {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

impl Disks {
    pub fn mount(members: usize, kind: DiskKind) -> Result<Disks, String> {
        let dir = tempfile::Builder::new()
            .prefix("cairn-rb-disk-")
            .tempdir()
            .map_err(|e| e.to_string())?;
        let mut disks = Disks {
            dir,
            mounts: Vec::new(),
            devices: Vec::new(),
        };
        for i in 0..members {
            let m = disks.dir.path().join(format!("m{}", i + 1));
            std::fs::create_dir_all(&m).map_err(|e| e.to_string())?;
            match kind {
                DiskKind::Tmpfs => {
                    run(
                        tool("mount")
                            .args(["-t", "tmpfs", "-o", &format!("size={DISK_MIB}m"), "tmpfs"])
                            .arg(&m),
                        "mount -t tmpfs",
                    )?;
                }
                DiskKind::Loop => {
                    let image = disks.dir.path().join(format!("m{}.img", i + 1));
                    std::fs::File::create(&image)
                        .and_then(|f| f.set_len(DISK_MIB << 20))
                        .map_err(|e| format!("disk image: {e}"))?;
                    let dev = run(
                        tool("losetup").args(["--find", "--show"]).arg(&image),
                        "losetup",
                    )?;
                    disks.devices.push(PathBuf::from(&dev));
                    // No blocks reserved for root: "full" means full.
                    run(tool("mkfs.ext4").args(["-q", "-m", "0", &dev]), "mkfs.ext4")?;
                    run(tool("mount").arg(&dev).arg(&m), "mount")?;
                }
            }
            disks.mounts.push(m);
        }
        Ok(disks)
    }

    pub fn data_dir(&self, i: usize) -> PathBuf {
        self.mounts[i].join("data")
    }

    fn filler(&self, i: usize) -> PathBuf {
        self.mounts[i].join("filler")
    }

    /// Writes zeros until the file system is full; returns bytes written.
    pub fn fill(&self, i: usize) -> std::io::Result<u64> {
        use std::io::Write;
        let mut f = std::fs::File::create(self.filler(i))?;
        let chunk = vec![0u8; 1 << 20];
        let mut written = 0u64;
        // Bounded by the disk's size (plus a margin for rounding).
        while written <= (DISK_MIB + 1) << 20 {
            match f.write(&chunk) {
                Ok(0) => break,
                Ok(n) => written += n as u64,
                Err(e) if e.raw_os_error() == Some(28) => break, // ENOSPC
                Err(e) => return Err(e),
            }
        }
        // No sync: ext4 reserves the blocks of delayed writes when they are
        // written, so the ENOSPC above is already the member's.
        Ok(written)
    }

    pub fn free(&self, i: usize) {
        let _ = std::fs::remove_file(self.filler(i));
    }

    /// The block device (major, minor) under member `i`'s data dir, if it
    /// is on one.
    pub fn block_device(&self, i: usize) -> Option<(u64, u64)> {
        use std::os::unix::fs::MetadataExt;
        let rdev = std::fs::metadata(self.devices.get(i)?).ok()?.rdev();
        // glibc's gnu_dev_major / gnu_dev_minor.
        let major = ((rdev >> 32) & 0xffff_f000) | ((rdev >> 8) & 0xfff);
        let minor = ((rdev >> 12) & 0xffff_ff00) | (rdev & 0xff);
        Some((major, minor))
    }
}

impl Drop for Disks {
    fn drop(&mut self) {
        for m in &self.mounts {
            let ok = tool("umount")
                .arg(m)
                .output()
                .is_ok_and(|o| o.status.success());
            if !ok {
                // Busy (a member still exiting): detach now, freed later.
                let _ = tool("umount").arg("-l").arg(m).output();
            }
        }
        for d in &self.devices {
            // After a lazy unmount the kernel frees it once unused.
            let _ = tool("losetup").arg("-d").arg(d).output();
        }
    }
}

/// A process's writes to one block device limited to `iops` per second,
/// through a cgroup of its own (v1 `blkio` or v2 `io`): a slow disk for one
/// member, whatever binary it is. Undone on drop: the limit is lifted, then
/// the process goes back to the cgroup it came from.
pub struct SlowDisk {
    cgroup: PathBuf,
    /// Where the process was, to put it back.
    home: PathBuf,
    limit_file: &'static str,
    /// What `limit_file` takes to lift the limit.
    unlimited: String,
    pid: u32,
}

impl SlowDisk {
    pub fn start(pid: u32, (major, minor): (u64, u64), iops: u64) -> Result<SlowDisk, String> {
        let v1 = Path::new("/sys/fs/cgroup/blkio");
        let v2 = Path::new("/sys/fs/cgroup");
        let write = |p: PathBuf, v: String| {
            std::fs::write(&p, &v).map_err(|e| format!("writing {v:?} to {}: {e}", p.display()))
        };
        // `/proc/<pid>/cgroup` lines: `id:controllers:path` (v2: `0::path`).
        let home_in = |root: &Path, v2: bool| {
            let own = std::fs::read_to_string(format!("/proc/{pid}/cgroup"))
                .map_err(|e| format!("reading the cgroup of {pid}: {e}"))?;
            own.lines()
                .filter_map(|l| l.splitn(3, ':').collect::<Vec<_>>().try_into().ok())
                .find(|[_, ctl, _]: &[&str; 3]| {
                    if v2 {
                        ctl.is_empty()
                    } else {
                        ctl.split(',').any(|c| c == "blkio")
                    }
                })
                .map(|[_, _, path]| root.join(path.trim_start_matches('/')))
                .ok_or_else(|| format!("process {pid} is in no cgroup of that hierarchy"))
        };
        let (root, home, limit_file, limit, unlimited) =
            if v1.join("blkio.throttle.write_iops_device").exists() {
                (
                    v1,
                    home_in(v1, false)?,
                    "blkio.throttle.write_iops_device",
                    format!("{major}:{minor} {iops}"),
                    format!("{major}:{minor} 0"),
                )
            } else if std::fs::read_to_string(v2.join("cgroup.controllers"))
                .is_ok_and(|c| c.split_whitespace().any(|x| x == "io"))
            {
                write(v2.join("cgroup.subtree_control"), "+io".into())?;
                (
                    v2,
                    home_in(v2, true)?,
                    "io.max",
                    format!("{major}:{minor} wiops={iops}"),
                    format!("{major}:{minor} wiops=max"),
                )
            } else {
                return Err(
                    "no cgroup blkio (v1) or io (v2) controller to throttle a disk with".into(),
                );
            };
        let cgroup = root.join(format!("cairn-rb-slow-{pid}"));
        std::fs::create_dir_all(&cgroup)
            .map_err(|e| format!("creating cgroup {}: {e}", cgroup.display()))?;
        let slow = SlowDisk {
            cgroup,
            home,
            limit_file,
            unlimited,
            pid,
        };
        write(slow.cgroup.join(limit_file), limit)?;
        write(slow.cgroup.join("cgroup.procs"), pid.to_string())?;
        Ok(slow)
    }
}

impl Drop for SlowDisk {
    fn drop(&mut self) {
        // Lift the limit first: should the move fail, the member is at
        // least no longer slow. (It may have exited meanwhile.)
        let _ = std::fs::write(self.cgroup.join(self.limit_file), &self.unlimited);
        let _ = std::fs::write(self.home.join("cgroup.procs"), self.pid.to_string());
        let _ = std::fs::remove_dir(&self.cgroup);
    }
}

/// A JSON-gateway call with curl: the reply's body, or why there was none.
fn gateway(
    addr: std::net::SocketAddr,
    path: &str,
    body: &str,
    token: Option<&str>,
) -> Result<serde_json::Value, String> {
    let mut cmd = Command::new("curl");
    cmd.args(["-s", "--max-time", "3", "-X", "POST", "-d", body]);
    if let Some(t) = token {
        cmd.args(["-H", &format!("Authorization: {t}")]);
    }
    let out = cmd
        .arg(format!("http://{addr}{path}"))
        .output()
        .map_err(|e| format!("cannot run curl: {e}"))?;
    let text = String::from_utf8_lossy(&out.stdout);
    let v: serde_json::Value = serde_json::from_str(&text).map_err(|_| {
        format!(
            "{path}: no JSON answer (curl exit {:?}): {text}",
            out.status.code()
        )
    })?;
    match v.get("error").or_else(|| v.get("message")) {
        Some(e) if v.get("header").is_none() => Err(format!("{path}: {e}")),
        _ => Ok(v),
    }
}

/// Logs in as the workload's user at `addr`: the token.
fn gateway_login(addr: std::net::SocketAddr) -> Result<String, String> {
    let (name, password) = super::workload::USER;
    let v = gateway(
        addr,
        "/v3/auth/authenticate",
        &serde_json::json!({ "name": name, "password": password }).to_string(),
        None,
    )?;
    v["token"]
        .as_str()
        .map(str::to_string)
        .ok_or_else(|| format!("no token in {v}"))
}

/// A linearizable read at `addr` with `token`.
fn gateway_read(addr: std::net::SocketAddr, token: &str) -> Result<(), String> {
    // "L3JiL2ZlbmNl" is base64 of /rb/fence.
    gateway(
        addr,
        "/v3/kv/range",
        r#"{"key":"L3JiL2ZlbmNl"}"#,
        Some(token),
    )
    .map(drop)
}

fn signal(pid: u32, sig: &str) {
    if pid != 0 {
        let _ = Command::new("kill")
            .args([&format!("-{sig}"), &pid.to_string()])
            .status();
    }
}

/// How to end a fault that has started.
type Undo = Box<dyn FnOnce(&Nemesis)>;

pub struct Nemesis {
    pub cluster: Arc<Mutex<Cluster>>,
    pub proxy: Arc<PeerProxy>,
    pub disks: Option<Arc<Disks>>,
    /// Why disk faults are unavailable, if they are.
    pub disks_unavailable: Option<String>,
    /// Each member's wall clock, when clock faults are on and possible.
    pub clocks: Option<Arc<Clocks>>,
    /// Why clock faults are unavailable, if they are.
    pub clocks_unavailable: Option<String>,
    /// The workload runs logged in (runs with clock faults).
    pub auth: bool,
    pub rt: tokio::runtime::Handle,
    pub clients: Vec<etcd_client::Client>,
    /// Raft member ID of each member, by index.
    pub ids: Vec<u64>,
    pub target: Target,
    pub base: Instant,
    pub rng: Rng,
    /// Problems worth reporting (a member that crashed, one that did not
    /// come back).
    pub errors: Arc<Mutex<Vec<String>>>,
    /// What happened that is allowed but worth knowing (a member that
    /// stopped on a full disk).
    pub notes: Arc<Mutex<Vec<String>>>,
}

impl Nemesis {
    fn ms(&self) -> u64 {
        self.base.elapsed().as_millis() as u64
    }

    /// The current leader, asked of each member (bounded).
    pub fn leader(&self) -> Option<usize> {
        for c in &self.clients {
            let mut c = c.clone();
            let st = self
                .rt
                .block_on(async { tokio::time::timeout(Duration::from_secs(1), c.status()).await });
            if let Ok(Ok(st)) = st
                && st.leader() != 0
                && let Some(l) = self.ids.iter().position(|id| *id == st.leader())
            {
                return Some(l);
            }
        }
        None
    }

    /// The members' own disks, or `None` with the fault marked skipped
    /// (and why) when this run has none.
    fn disks_or_skip(&self, rec: &mut FaultRecord) -> Option<Arc<Disks>> {
        if self.disks.is_none() {
            rec.skipped = Some(
                self.disks_unavailable
                    .clone()
                    .unwrap_or_else(|| "no disks of their own in this run".into()),
            );
        }
        self.disks.clone()
    }

    fn pick_leader(&mut self) -> (usize, String) {
        match self.leader() {
            Some(l) => (l, "leader".into()),
            None => {
                let m = self.rng.below(self.ids.len() as u64) as usize;
                (m, "no leader found; a random member".into())
            }
        }
    }

    fn pick_follower(&mut self) -> (usize, String) {
        let n = self.ids.len();
        let leader = self.leader();
        let followers: Vec<usize> = (0..n).filter(|i| Some(*i) != leader).collect();
        let f = *self.rng.pick(&followers);
        (
            f,
            if leader.is_some() {
                "follower".into()
            } else {
                "no leader found; a random member".into()
            },
        )
    }

    /// Runs the schedule; returns what was done. Stops early when `stop`.
    /// A fault starts at its planned time, or `min_gap_ms` after the last
    /// one ended if that is later (ending a fault can take seconds: a
    /// restart waits for the member to be healthy), so that recovery always
    /// has a healed stretch to be measured in.
    pub fn run(
        &mut self,
        schedule: &[PlannedFault],
        min_gap_ms: u64,
        stop: &AtomicBool,
    ) -> Vec<FaultRecord> {
        let mut out: Vec<FaultRecord> = Vec::new();
        for f in schedule {
            let earliest = out.last().map_or(0, |r| r.end_ms + min_gap_ms);
            if !self.sleep_until(f.start_ms.max(earliest), stop) {
                break;
            }
            let mut rec = FaultRecord {
                kind: f.kind,
                targets: vec![],
                start_ms: self.ms(),
                end_ms: 0,
                detail: String::new(),
                skipped: None,
            };
            if f.kind == FaultKind::MemberChangeUnderFault {
                self.member_change_under_fault(f.duration_ms, &mut rec, stop);
            } else {
                let undo = self.start(f.kind, &mut rec);
                let end = rec.start_ms + f.duration_ms;
                self.sleep_until(end, stop);
                if let Some(undo) = undo {
                    undo(self);
                }
            }
            rec.end_ms = self.ms();
            self.check_members(&format!("after {}", f.kind));
            out.push(rec);
        }
        out
    }

    /// Sleeps until `ms` after the start; false if stopped first.
    fn sleep_until(&self, ms: u64, stop: &AtomicBool) -> bool {
        let at = self.base + Duration::from_millis(ms);
        while Instant::now() < at {
            if stop.load(Ordering::Relaxed) {
                return false;
            }
            std::thread::sleep(Duration::from_millis(20).min(at - Instant::now()));
        }
        true
    }

    /// Starts a fault; returns how to end it.
    fn start(&mut self, kind: FaultKind, rec: &mut FaultRecord) -> Option<Undo> {
        let n = self.ids.len();
        match kind {
            FaultKind::IsolateLeader | FaultKind::IsolateFollower => {
                let (m, why) = if kind == FaultKind::IsolateLeader {
                    self.pick_leader()
                } else {
                    self.pick_follower()
                };
                rec.targets = vec![m];
                rec.detail = format!("m{} ({why}) cut off from its peers", m + 1);
                self.proxy.isolate(m);
                Some(Box::new(|s: &Nemesis| s.proxy.heal()))
            }
            FaultKind::OneWayFromLeader | FaultKind::OneWayToLeader => {
                let (l, why) = self.pick_leader();
                rec.targets = vec![l];
                for f in (0..n).filter(|f| *f != l) {
                    if kind == FaultKind::OneWayFromLeader {
                        self.proxy.set_link(l, f, Link::Blackhole);
                    } else {
                        self.proxy.set_link(f, l, Link::Blackhole);
                    }
                }
                rec.detail = format!(
                    "bytes {} m{} ({why}) held",
                    if kind == FaultKind::OneWayFromLeader {
                        "from"
                    } else {
                        "to"
                    },
                    l + 1
                );
                Some(Box::new(|s: &Nemesis| s.proxy.heal()))
            }
            FaultKind::Delay => {
                let base = Duration::from_millis(self.rng.range(50, 250));
                let jitter = base / 2;
                rec.targets = (0..n).collect();
                rec.detail = format!("every peer link delayed {base:?} ± {jitter:?}");
                self.proxy.set_all(Link::Delay { base, jitter });
                Some(Box::new(|s: &Nemesis| s.proxy.heal()))
            }
            FaultKind::KillLeader | FaultKind::KillFollower => {
                let (m, why) = if kind == FaultKind::KillLeader {
                    self.pick_leader()
                } else {
                    self.pick_follower()
                };
                rec.targets = vec![m];
                rec.detail = format!("m{} ({why}) SIGKILLed, restarted at the end", m + 1);
                self.cluster.lock().expect("cluster lock").kill(m);
                Some(Box::new(move |s: &Nemesis| s.restart(m)))
            }
            FaultKind::StopLeader => {
                let (m, why) = self.pick_leader();
                rec.targets = vec![m];
                let pid = self.cluster.lock().expect("cluster lock").members[m].pid();
                rec.detail = format!("m{} ({why}) SIGSTOPped, SIGCONT at the end", m + 1);
                signal(pid, "STOP");
                Some(Box::new(move |_s: &Nemesis| signal(pid, "CONT")))
            }
            FaultKind::Restart => {
                let m = self.rng.below(n as u64) as usize;
                rec.targets = vec![m];
                let role = if self.leader() == Some(m) {
                    "leader"
                } else {
                    "follower"
                };
                rec.detail = format!("m{} ({role}) SIGTERMed and started again", m + 1);
                self.cluster.lock().expect("cluster lock").stop(m);
                self.restart(m);
                None
            }
            FaultKind::DiskFull => {
                let disks = self.disks_or_skip(rec)?;
                let m = self.rng.below(n as u64) as usize;
                rec.targets = vec![m];
                match disks.fill(m) {
                    Ok(b) => {
                        rec.detail = format!(
                            "m{}'s data dir file system filled ({} MiB of filler)",
                            m + 1,
                            b >> 20
                        )
                    }
                    Err(e) => rec.detail = format!("filling m{}'s disk failed: {e}", m + 1),
                }
                Some(Box::new(move |s: &Nemesis| {
                    disks.free(m);
                    // A member that stopped on the full disk comes back.
                    let running = s.cluster.lock().expect("cluster lock").members[m].is_running();
                    if !running {
                        let log = {
                            let c = s.cluster.lock().expect("cluster lock");
                            crate::tail(&c.members[m].log(), 3)
                        };
                        s.notes.lock().expect("notes lock").push(format!(
                            "m{} exited on the full disk (restarted); log tail:\n{log}",
                            m + 1
                        ));
                        s.cluster.lock().expect("cluster lock").kill(m);
                        s.restart(m);
                    }
                }))
            }
            FaultKind::SlowDisk => {
                let disks = self.disks_or_skip(rec)?;
                let (m, role) = if self.rng.chance(0.5) {
                    self.pick_leader()
                } else {
                    self.pick_follower()
                };
                rec.targets = vec![m];
                let Some(dev) = disks.block_device(m) else {
                    rec.skipped = Some("the data dirs are not on block devices".into());
                    return None;
                };
                let iops = *self.rng.pick(&SLOW_DISK_IOPS);
                let pid = self.cluster.lock().expect("cluster lock").members[m].pid();
                match SlowDisk::start(pid, dev, iops) {
                    Ok(slow) => {
                        rec.detail = format!(
                            "m{} ({role}): writes to its disk limited to {iops} per second",
                            m + 1
                        );
                        Some(Box::new(move |_: &Nemesis| drop(slow)))
                    }
                    Err(e) => {
                        rec.skipped = Some(e);
                        None
                    }
                }
            }
            FaultKind::ClockSkew => {
                let Some(clocks) = self.clocks.clone() else {
                    rec.skipped = Some(
                        self.clocks_unavailable
                            .clone()
                            .unwrap_or_else(|| "members have no clocks of their own".into()),
                    );
                    return None;
                };
                let m = self.rng.below(n as u64) as usize;
                let offset_s =
                    self.rng.range(2, 10) as i64 * if self.rng.chance(0.5) { 1 } else { -1 };
                rec.targets = vec![m];
                rec.detail = format!(
                    "m{}'s wall clock jumped {offset_s:+} s while it ran, and back at the end",
                    m + 1
                );
                let before = self.drift_warnings();
                if let Err(e) = clocks.set(m, offset_s) {
                    rec.skipped = Some(format!("cannot write m{}'s clock offset: {e}", m + 1));
                    return None;
                }
                Some(Box::new(move |s: &Nemesis| {
                    // The peers' probers must notice (one probe per 2 s).
                    let deadline = Instant::now() + DRIFT_WARNING_TIMEOUT;
                    let warned = loop {
                        let now = s.drift_warnings();
                        let warned: Vec<String> = (0..now.len())
                            .filter(|i| now[*i] > before.get(*i).copied().unwrap_or(0))
                            .map(|i| format!("m{}", i + 1))
                            .collect();
                        if !warned.is_empty() || Instant::now() >= deadline {
                            break warned;
                        }
                        std::thread::sleep(Duration::from_millis(200));
                    };
                    if warned.is_empty() {
                        s.errors.lock().expect("errors lock").push(format!(
                            "m{}'s clock ran {offset_s:+} s off and no member logged a \
                             clock-drift warning",
                            m + 1
                        ));
                    } else {
                        s.notes.lock().expect("notes lock").push(format!(
                            "m{}'s clock ran {offset_s:+} s off: clock-drift warning logged by {}",
                            m + 1,
                            warned.join(", ")
                        ));
                    }
                    // Simple tokens expire on the monotonic clock, JWTs on
                    // the wall clock with a TTL well past any jump: either
                    // way no member may reject a fresh one.
                    if s.auth {
                        s.check_tokens(&format!("m{} {offset_s:+} s", m + 1));
                    }
                    if let Err(e) = clocks.set(m, 0) {
                        s.errors
                            .lock()
                            .expect("errors lock")
                            .push(format!("cannot set m{}'s clock back: {e}", m + 1));
                    }
                }))
            }
            FaultKind::CorruptTail => {
                let m = self.rng.below(n as u64) as usize;
                rec.targets = vec![m];
                rec.detail = self.corrupt_tail(m);
                None
            }
            FaultKind::MoveLeader => {
                let Some(l) = self.leader() else {
                    rec.detail = "no leader found; nothing moved".into();
                    return None;
                };
                let followers: Vec<usize> = (0..n).filter(|i| *i != l).collect();
                let to = *self.rng.pick(&followers);
                rec.targets = vec![l, to];
                rec.detail = self.membership().move_leader(l, to, self.ids[to]);
                None
            }
            FaultKind::ReplaceMember => {
                let (m, why) = self.pick_follower();
                rec.targets = vec![m];
                let r = self.membership().replace(m, self.ids[m]);
                rec.detail = self.replaced(m, &why, r);
                None
            }
            FaultKind::SnapshotLeaderChange => self.snapshot_leader_change(rec),
            FaultKind::MemberChangeUnderFault => {
                unreachable!("carried out by member_change_under_fault")
            }
        }
    }

    /// Gets a follower sent a snapshot over a thin link, then takes the
    /// leadership from the member sending it, part-way through: MoveLeader
    /// to the third member, SIGSTOP, or SIGKILL (one drawn). Holds until the
    /// follower has caught up (bounded); the undo heals the link and
    /// resumes or restarts the old leader.
    fn snapshot_leader_change(&mut self, rec: &mut FaultRecord) -> Option<Undo> {
        let n = self.ids.len();
        let Some(l) = self.leader() else {
            rec.detail = "no leader found; nothing done".into();
            return None;
        };
        let followers: Vec<usize> = (0..n).filter(|i| *i != l).collect();
        let f = *self.rng.pick(&followers);
        let how = self.rng.below(3);
        rec.targets = vec![l, f];

        self.proxy.isolate(f);
        let (ok, failed) = self.burst(l);
        let mut detail = format!(
            "m{} (follower) cut off while {ok} writes went through m{} (leader; {failed} failed); \
             back over links thinned to {} KiB/s",
            f + 1,
            l + 1,
            SNAPSHOT_LINK_BYTES_PER_S >> 10
        );
        // Every link into the follower is thin, since the leader may change
        // on its return (etcd without pre-vote: its raised term deposes the
        // leader); the one the snapshot comes over shows who sends it.
        let before: Vec<u64> = (0..n).map(|a| self.proxy.link_bytes(a, f)).collect();
        self.proxy.heal_except_into(
            f,
            Link::Throttle {
                bytes_per_s: SNAPSHOT_LINK_BYTES_PER_S,
            },
        );
        let waited = Instant::now();
        let sender = loop {
            let moved: Vec<u64> = (0..n)
                .map(|a| self.proxy.link_bytes(a, f) - before[a])
                .collect();
            if let Some(a) = (0..n).find(|a| moved[*a] >= SNAPSHOT_IN_FLIGHT_BYTES) {
                break Some(a);
            }
            if waited.elapsed() >= SNAPSHOT_IN_FLIGHT_TIMEOUT {
                break None;
            }
            std::thread::sleep(Duration::from_millis(10));
        };
        let Some(s) = sender else {
            detail.push_str(&format!(
                "; no snapshot seen on them in {SNAPSHOT_IN_FLIGHT_TIMEOUT:?}; nothing changed"
            ));
            rec.detail = detail;
            return Some(Box::new(|s: &Nemesis| s.proxy.heal()));
        };
        detail.push_str(&format!(
            "; the snapshot from m{} under way after {} ms",
            s + 1,
            waited.elapsed().as_millis()
        ));
        if !rec.targets.contains(&s) {
            rec.targets.push(s);
        }
        // Where the follower must get to: the sender's log now.
        let target_index = self.raft_index(s).unwrap_or(0);
        let changed = Instant::now();
        let pid = self.cluster.lock().expect("cluster lock").members[s].pid();
        let undo: Undo = match how {
            0 => {
                let to = (0..n).find(|i| *i != s && *i != f).unwrap_or(s);
                let said = self.membership().move_leader_anywhere(to, self.ids[to]);
                detail.push_str(&format!("; to m{}: {said}", to + 1));
                Box::new(|s: &Nemesis| s.proxy.heal())
            }
            1 => {
                signal(pid, "STOP");
                detail.push_str(&format!("; m{} SIGSTOPped (SIGCONT at the end)", s + 1));
                Box::new(move |s: &Nemesis| {
                    s.proxy.heal();
                    signal(pid, "CONT");
                })
            }
            _ => {
                self.cluster.lock().expect("cluster lock").kill(s);
                detail.push_str(&format!("; m{} SIGKILLed (restarted at the end)", s + 1));
                Box::new(move |nem: &Nemesis| {
                    nem.proxy.heal();
                    nem.restart(s);
                })
            }
        };
        // The new leader's snapshot goes at full speed; the old sender's
        // link stays thin until the end.
        for a in (0..n).filter(|a| *a != s && *a != f) {
            self.proxy.set_link(a, f, Link::Pass);
        }
        let caught_up = loop {
            let at = self.raft_index(f).unwrap_or(0);
            if target_index > 0 && at >= target_index {
                break Some(changed.elapsed());
            }
            if changed.elapsed() >= SNAPSHOT_CATCH_UP_TIMEOUT {
                break None;
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        match caught_up {
            Some(t) => detail.push_str(&format!(
                "; m{} caught up {} ms after the change",
                f + 1,
                t.as_millis()
            )),
            None => detail.push_str(&format!(
                "; m{} not caught up {SNAPSHOT_CATCH_UP_TIMEOUT:?} after it",
                f + 1
            )),
        }
        std::thread::sleep(SNAPSHOT_MIN_HOLD.saturating_sub(changed.elapsed()));
        rec.detail = detail;
        Some(undo)
    }

    /// Writes the snapshot fault's burst through member `via`; returns how
    /// many writes succeeded and failed.
    fn burst(&self, via: usize) -> (u64, u64) {
        use futures::StreamExt;
        let c = self.clients[via].clone();
        let value = vec![b'b'; SNAPSHOT_BURST_VALUE_BYTES];
        self.rt.block_on(async move {
            let puts = futures::stream::iter(0..SNAPSHOT_BURST_WRITES)
                .map(|i| {
                    let mut c = c.clone();
                    let value = value.clone();
                    async move {
                        let key = format!("{SNAPSHOT_BURST_PREFIX}{i}");
                        matches!(
                            tokio::time::timeout(Duration::from_secs(2), c.put(key, value, None))
                                .await,
                            Ok(Ok(_))
                        )
                    }
                })
                .buffer_unordered(SNAPSHOT_BURST_CONCURRENCY)
                .fold((0u64, 0u64), |(ok, failed), done| async move {
                    if done {
                        (ok + 1, failed)
                    } else {
                        (ok, failed + 1)
                    }
                });
            tokio::time::timeout(SNAPSHOT_BURST_TIMEOUT, puts)
                .await
                .unwrap_or((0, SNAPSHOT_BURST_WRITES))
        })
    }

    /// Member `m`'s raft index (bounded; `None` if it did not answer).
    fn raft_index(&self, m: usize) -> Option<u64> {
        let mut c = self.clients[m].clone();
        let st = self
            .rt
            .block_on(async { tokio::time::timeout(Duration::from_secs(1), c.status()).await });
        match st {
            Ok(Ok(st)) => Some(st.raft_index()),
            _ => None,
        }
    }

    /// What the membership steps need, to run beside the nemesis.
    fn membership(&self) -> Membership {
        Membership {
            cluster: self.cluster.clone(),
            clients: self.clients.clone(),
            rt: self.rt.clone(),
        }
    }

    /// Records a replacement's outcome (a failure is a harness error) and
    /// says what happened.
    fn replaced(&mut self, m: usize, why: &str, r: Result<(String, u64), String>) -> String {
        match r {
            Ok((d, new_id)) => {
                self.ids[m] = new_id;
                format!(
                    "m{} ({why}) removed, data dir wiped, added back as a learner, promoted: {d}",
                    m + 1
                )
            }
            // etcd's strict reconfiguration check (Cairn's too): removing
            // a member is refused while the rest would have no quorum, as
            // with the leader killed. Nothing changed; an operator would
            // see the same answer.
            Err(e)
                if e.starts_with("member remove:")
                    && e.contains("etcdserver: unhealthy cluster") =>
            {
                let detail = format!("replacing m{} ({why}) refused, nothing changed: {e}", m + 1);
                self.notes.lock().expect("notes lock").push(detail.clone());
                detail
            }
            Err(e) => {
                let detail = format!("replacing m{} ({why}) failed: {e}", m + 1);
                self.errors
                    .lock()
                    .expect("errors lock")
                    .push(detail.clone());
                detail
            }
        }
    }

    /// A membership change while another fault is on. The other fault is
    /// one that hits the leader or every link (a follower fault could hit
    /// the member being replaced); the change starts 0-1 s into it, on its
    /// own thread, because finishing may need the other fault healed (a
    /// two-voter configuration with its leader cut off has no quorum). The
    /// other fault ends at its planned time; the fault ends when both have.
    fn member_change_under_fault(
        &mut self,
        duration_ms: u64,
        rec: &mut FaultRecord,
        stop: &AtomicBool,
    ) {
        const COMPANIONS: [FaultKind; 6] = [
            FaultKind::IsolateLeader,
            FaultKind::OneWayFromLeader,
            FaultKind::OneWayToLeader,
            FaultKind::StopLeader,
            FaultKind::KillLeader,
            FaultKind::Delay,
        ];
        let companion = *self.rng.pick(&COMPANIONS);
        let replace = self.rng.chance(0.5);
        let delay = Duration::from_millis(self.rng.range(0, 1_000));
        // Chosen before the other fault moves the leadership: the follower
        // replaced, or the one leadership is moved to.
        let (m, why) = self.pick_follower();
        let mut sub = FaultRecord {
            kind: companion,
            ..rec.clone()
        };
        let undo = self.start(companion, &mut sub);
        let membership = self.membership();
        let old_id = self.ids[m];
        let change = std::thread::spawn(move || {
            std::thread::sleep(delay);
            if replace {
                Change::Replaced(membership.replace(m, old_id))
            } else {
                Change::Moved(membership.move_leader_anywhere(m, old_id))
            }
        });
        self.sleep_until(rec.start_ms + duration_ms, stop);
        if let Some(undo) = undo {
            undo(self);
        }
        let change = change
            .join()
            .unwrap_or_else(|_| Change::Replaced(Err("the membership thread panicked".into())));
        let change = match change {
            Change::Replaced(r) => self.replaced(m, &why, r),
            Change::Moved(d) => d,
        };
        rec.targets = sub.targets;
        rec.targets.push(m);
        rec.detail = format!("{companion}: {}; {delay:?} into it: {change}", sub.detail);
        if let Some(why) = sub.skipped {
            rec.detail
                .push_str(&format!(" ({companion} not done: {why})"));
        }
    }

    /// Kills member `m`, damages the tail of its newest journal file, and
    /// starts it again. Says what was done and how the member took it.
    fn corrupt_tail(&mut self, m: usize) -> String {
        let data_dir = {
            let mut c = self.cluster.lock().expect("cluster lock");
            c.kill(m);
            c.members[m].data_dir.clone()
        };
        let ext = if self.target == Target::Cairn {
            "jnl"
        } else {
            "wal"
        };
        let Some(file) = newest_file(&data_dir, ext) else {
            self.restart(m);
            return format!(
                "m{}: no .{ext} file found under {}",
                m + 1,
                data_dir.display()
            );
        };
        let original = match std::fs::read(&file) {
            Ok(b) => b,
            Err(e) => {
                self.restart(m);
                return format!("m{}: cannot read {}: {e}", m + 1, file.display());
            }
        };
        let mut damaged = original.clone();
        // Journals are preallocated with zeros: the data ends at the last
        // non-zero byte.
        let end = damaged.iter().rposition(|b| *b != 0).map_or(0, |p| p + 1);
        let span = (self.rng.range(1, 4096) as usize).min(end);
        let what = if self.rng.chance(0.5) {
            // A torn write: the last bytes never reached the disk.
            damaged[end - span..end].fill(0);
            format!("last {span} bytes zeroed")
        } else {
            let at = end - span;
            let bit = self.rng.below(8) as u8;
            damaged[at] ^= 1 << bit;
            format!("bit {bit} flipped {span} bytes before the end")
        };
        let name = file
            .file_name()
            .map(|f| f.to_string_lossy().into_owned())
            .unwrap_or_default();
        if let Err(e) = std::fs::write(&file, &damaged) {
            self.restart(m);
            return format!("m{}: cannot write {name}: {e}", m + 1);
        }
        let before = format!(
            "m{} SIGKILLed; journal {name} ({end} bytes of data): {what}",
            m + 1
        );
        {
            let mut c = self.cluster.lock().expect("cluster lock");
            c.restart(m);
        }
        // Healthy, or exited (a refusal): whichever comes first.
        let addr = self.cluster.lock().expect("cluster lock").members[m].client_addr();
        let deadline = Instant::now() + RESTART_HEALTH_TIMEOUT;
        while Instant::now() < deadline {
            if crate::health(&addr) == Some(true) {
                return format!("{before}; restarted and healthy");
            }
            if !self.cluster.lock().expect("cluster lock").members[m].is_running() {
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let (running, log) = {
            let mut c = self.cluster.lock().expect("cluster lock");
            let running = c.members[m].is_running();
            (running, crate::tail(&c.members[m].log(), 3))
        };
        // Detected: a clear refusal to start. Put the original back, as an
        // operator restoring the file would, so the run goes on.
        let outcome = if running {
            // Neither recovered nor a clear refusal: a hang is a finding.
            let o = format!("restarted but not healthy after {RESTART_HEALTH_TIMEOUT:?}");
            self.errors
                .lock()
                .expect("errors lock")
                .push(format!("{before}: {o}; log tail:\n{log}"));
            o
        } else {
            "refused to start".to_string()
        };
        self.notes
            .lock()
            .expect("notes lock")
            .push(format!("{before}: {outcome}; log tail:\n{log}"));
        self.cluster.lock().expect("cluster lock").kill(m);
        let restored = std::fs::write(&file, &original);
        self.restart(m);
        format!("{before}; {outcome}; original restored ({restored:?}) and restarted")
    }

    /// How many clock-drift warnings each member has logged so far.
    fn drift_warnings(&self) -> Vec<usize> {
        let c = self.cluster.lock().expect("cluster lock");
        c.members
            .iter()
            .map(|m| m.log().matches(DRIFT_WARNING).count())
            .collect()
    }

    /// Logs in at every running member and presents each token to every
    /// running member, over the JSON gateway as a script would. A fresh
    /// token refused as invalid is an error (one retry with a newer token:
    /// a member that restarted in between rightly forgot the first);
    /// failures for other reasons (no leader, a member down under another
    /// fault) are retried, then noted.
    fn check_tokens(&self, when: &str) {
        let addrs: Vec<(usize, std::net::SocketAddr)> = {
            let mut c = self.cluster.lock().expect("cluster lock");
            c.members
                .iter_mut()
                .enumerate()
                .filter_map(|(i, m)| m.is_running().then(|| (i, m.client_addr())))
                .collect()
        };
        let mut pending: Vec<(usize, usize, u32)> = addrs
            .iter()
            .flat_map(|(a, _)| addrs.iter().map(move |(b, _)| (*a, *b, 0)))
            .collect();
        let addr = |m: usize| addrs.iter().find(|(i, _)| *i == m).map(|(_, a)| *a);
        // A check that cannot fail proves nothing: a made-up token must be
        // refused the way a bad real one would be.
        if let Some((m, a)) = addrs.first() {
            match gateway_read(*a, "made-up.token") {
                Err(e) if e.contains("invalid auth token") => {}
                other => self.errors.lock().expect("errors lock").push(format!(
                    "{when}: m{} answered a made-up token with {other:?}, not \
                     \"invalid auth token\"",
                    m + 1
                )),
            }
        }
        let deadline = Instant::now() + TOKEN_CHECK_TIMEOUT;
        let mut checked = 0;
        let mut last_error = String::new();
        while !pending.is_empty() {
            let mut still = Vec::new();
            for (issuer, user, refused) in pending {
                let used = gateway_login(addr(issuer).expect("running member"))
                    .and_then(|token| gateway_read(addr(user).expect("running member"), &token));
                match used {
                    Ok(()) => checked += 1,
                    Err(e) if e.contains("invalid auth token") && refused > 0 => {
                        self.errors.lock().expect("errors lock").push(format!(
                            "{when}: fresh tokens m{} issued were refused by m{} twice: {e}",
                            issuer + 1,
                            user + 1
                        ));
                    }
                    Err(e) => {
                        let refused = refused + u32::from(e.contains("invalid auth token"));
                        last_error = format!("m{} -> m{}: {e}", issuer + 1, user + 1);
                        still.push((issuer, user, refused));
                    }
                }
            }
            pending = still;
            if pending.is_empty() || Instant::now() >= deadline {
                break;
            }
            std::thread::sleep(Duration::from_millis(300));
        }
        let mut notes = self.notes.lock().expect("notes lock");
        notes.push(format!(
            "{when}: {checked} token(s) issued and used across members"
        ));
        if !pending.is_empty() {
            notes.push(format!(
                "{when}: {} token check(s) undecided after {TOKEN_CHECK_TIMEOUT:?}; last: {last_error}",
                pending.len()
            ));
        }
    }

    /// Starts member `m` again and waits (bounded) until it is healthy.
    pub fn restart(&self, m: usize) {
        {
            let mut c = self.cluster.lock().expect("cluster lock");
            if c.members[m].is_running() {
                return;
            }
            c.kill(m);
            c.restart(m);
        }
        if !self.wait_member_healthy(m, RESTART_HEALTH_TIMEOUT) {
            self.errors.lock().expect("errors lock").push(format!(
                "m{} not healthy {RESTART_HEALTH_TIMEOUT:?} after its restart",
                m + 1
            ));
        }
    }

    pub fn wait_member_healthy(&self, m: usize, timeout: Duration) -> bool {
        let addr = self.cluster.lock().expect("cluster lock").members[m].client_addr();
        wait_healthy(&addr, timeout)
    }

    /// Restarts any member that exited by itself, recording it.
    pub fn check_members(&self, when: &str) {
        let n = self.ids.len();
        for m in 0..n {
            let (running, log) = {
                let mut c = self.cluster.lock().expect("cluster lock");
                let running = c.members[m].is_running();
                (running, crate::tail(&c.members[m].log(), 15))
            };
            if !running {
                self.errors.lock().expect("errors lock").push(format!(
                    "m{} exited unexpectedly ({when}); log tail:\n{log}",
                    m + 1
                ));
                self.restart(m);
            }
        }
    }

    /// Ends every fault that may still be on: heal the network, continue
    /// stopped processes, free disks, restart what is down.
    pub fn heal_all(&self) {
        self.proxy.heal();
        let pids: Vec<u32> = self
            .cluster
            .lock()
            .expect("cluster lock")
            .members
            .iter()
            .map(|m| m.pid())
            .collect();
        for pid in pids {
            signal(pid, "CONT");
        }
        if let Some(d) = &self.disks {
            for m in 0..self.ids.len() {
                d.free(m);
            }
        }
        self.check_members("at the end");
    }
}

/// How a membership change ended (see `member_change_under_fault`).
enum Change {
    Replaced(Result<(String, u64), String>),
    Moved(String),
}

/// Membership steps through the members' clients, runnable on a thread of
/// their own. Each step is retried through every member but the one being
/// replaced, and a step whose call failed is checked against the member
/// list: under faults a call can time out and still take effect, and its
/// retry would then be refused ("member not found", "Peer URLs already
/// exists").
struct Membership {
    cluster: Arc<Mutex<Cluster>>,
    clients: Vec<etcd_client::Client>,
    rt: tokio::runtime::Handle,
}

impl Membership {
    /// Removes member `m` (raft ID `old_id`), wipes its data dir, adds it
    /// back as a learner on the same URL, starts it, promotes it once it
    /// caught up, and waits until it is healthy. Returns what happened and
    /// its new ID.
    fn replace(&self, m: usize, old_id: u64) -> Result<(String, u64), String> {
        let via: Vec<usize> = (0..self.clients.len()).filter(|i| *i != m).collect();
        let started = Instant::now();
        self.step(
            &via,
            REPLACE_STEP_TIMEOUT,
            |mut c| async move { c.member_remove(old_id).await.map(|_| ()) },
            |list| (!list.iter().any(|mb| mb.id() == old_id)).then_some(()),
        )
        .map_err(|e| format!("member remove: {e}"))?;
        let (data_dir, peer_url) = {
            let mut cl = self.cluster.lock().expect("cluster lock");
            cl.kill(m);
            (cl.members[m].data_dir.clone(), cl.members[m].peer_url())
        };
        std::fs::remove_dir_all(&data_dir)
            .map_err(|e| format!("wiping {}: {e}", data_dir.display()))?;
        let url = peer_url.clone();
        let new_id = self
            .step(
                &via,
                REPLACE_STEP_TIMEOUT,
                |mut c| {
                    let url = url.clone();
                    async move {
                        let r = c
                            .member_add(
                                [url],
                                Some(etcd_client::MemberAddOptions::new().with_is_learner()),
                            )
                            .await?;
                        Ok(r.member().map_or(0, |mb| mb.id()))
                    }
                },
                // Not the removed member, which has the same URL: a member
                // that has not applied the removal yet still lists it.
                |list| {
                    list.iter()
                        .find(|mb| {
                            mb.id() != old_id
                                && mb.is_learner()
                                && mb.peer_urls().contains(&peer_url)
                        })
                        .map(|mb| mb.id())
                },
            )
            .map_err(|e| format!("member add --learner: {e}"))?;
        {
            let mut cl = self.cluster.lock().expect("cluster lock");
            let initial: Vec<String> = cl
                .members
                .iter()
                .map(|mb| format!("{}={}", mb.name, mb.peer_url()))
                .collect();
            cl.join(m, &initial.join(","));
        }
        // Promotion is refused until the learner is in sync with the leader.
        self.step(
            &via,
            REPLACE_STEP_TIMEOUT * 2,
            |mut c| async move { c.member_promote(new_id).await.map(|_| ()) },
            |list| {
                list.iter()
                    .any(|mb| mb.id() == new_id && !mb.is_learner())
                    .then_some(())
            },
        )
        .map_err(|e| format!("member promote: {e}"))?;
        let addr = self.cluster.lock().expect("cluster lock").members[m].client_addr();
        if !wait_healthy(&addr, RESTART_HEALTH_TIMEOUT) {
            return Err(format!(
                "not healthy {RESTART_HEALTH_TIMEOUT:?} after promotion"
            ));
        }
        Ok((
            format!(
                "new ID {new_id:x}, voter again after {:?}",
                started.elapsed()
            ),
            new_id,
        ))
    }

    /// MoveLeader from `from` (the leader) to `to`, once; says how it went.
    fn move_leader(&self, from: usize, to: usize, to_id: u64) -> String {
        let mut c = self.clients[from].clone();
        let r = self.rt.block_on(async {
            tokio::time::timeout(Duration::from_secs(5), c.move_leader(to_id)).await
        });
        match r {
            Ok(Ok(_)) => format!("leadership moved from m{} to m{}", from + 1, to + 1),
            Ok(Err(e)) => format!("moving leadership m{} → m{} failed: {e}", from + 1, to + 1),
            Err(_) => format!("moving leadership m{} → m{} timed out", from + 1, to + 1),
        }
    }

    /// MoveLeader to `to` through whichever member leads (only the leader
    /// takes it), retried for a while: under a fault the leader may be
    /// gone, or about to be replaced by an election. A move that cannot
    /// be done is said, not an error (an operator would see it refused).
    fn move_leader_anywhere(&self, to: usize, to_id: u64) -> String {
        let deadline = Instant::now() + REPLACE_STEP_TIMEOUT;
        let mut last = String::from("no attempt");
        while Instant::now() < deadline {
            for (from, c) in self.clients.iter().enumerate() {
                let mut c = c.clone();
                let leader = self.rt.block_on(async {
                    tokio::time::timeout(Duration::from_secs(1), c.status()).await
                });
                if !matches!(&leader, Ok(Ok(st)) if st.leader() != 0 && st.leader() == st.header().map_or(0, |h| h.member_id()))
                {
                    continue;
                }
                if from == to {
                    return format!("m{} already leads; nothing moved", to + 1);
                }
                last = self.move_leader(from, to, to_id);
                if last.starts_with("leadership moved") {
                    return last;
                }
            }
            std::thread::sleep(Duration::from_millis(300));
        }
        format!("gave up after {REPLACE_STEP_TIMEOUT:?}: {last}")
    }

    /// Calls `op` through the members `via` in turn until it succeeds or
    /// `timeout` passed (each call bounded). After a failed call, `done`
    /// reads the member list: `Some` means the step took effect anyway.
    fn step<T, F, Fut>(
        &self,
        via: &[usize],
        timeout: Duration,
        mut op: F,
        done: impl Fn(&[etcd_client::Member]) -> Option<T>,
    ) -> Result<T, String>
    where
        F: FnMut(etcd_client::Client) -> Fut,
        Fut: std::future::Future<Output = Result<T, etcd_client::Error>>,
    {
        let deadline = Instant::now() + timeout;
        let mut turn = 0usize;
        loop {
            let c = self.clients[via[turn % via.len()]].clone();
            turn += 1;
            let r = self.rt.block_on(async {
                tokio::time::timeout(Duration::from_secs(3), op(c.clone())).await
            });
            let e = match r {
                Ok(Ok(v)) => return Ok(v),
                Ok(Err(e)) => e.to_string(),
                Err(_) => "timed out".to_string(),
            };
            let mut c = c;
            let list = self.rt.block_on(async {
                tokio::time::timeout(Duration::from_secs(3), c.member_list()).await
            });
            if let Ok(Ok(list)) = list
                && let Some(v) = done(list.members())
            {
                return Ok(v);
            }
            if Instant::now() >= deadline {
                return Err(e);
            }
            std::thread::sleep(Duration::from_millis(300));
        }
    }
}

/// Polls a member's /health until it says healthy or `timeout` passed.
fn wait_healthy(addr: &std::net::SocketAddr, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if crate::health(addr) == Some(true) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    false
}

/// The file with extension `ext` under `dir` (recursively) whose name sorts
/// last: journals and WAL segments are numbered, the newest holds the tail.
fn newest_file(dir: &std::path::Path, ext: &str) -> Option<PathBuf> {
    let mut found: Vec<PathBuf> = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if p.extension().is_some_and(|x| x == ext) {
                found.push(p);
            }
        }
    }
    // Numbered names: compare by length first so that 10 sorts after 9.
    found.into_iter().max_by_key(|p| {
        let name = p
            .file_name()
            .map(|f| f.to_string_lossy().into_owned())
            .unwrap_or_default();
        (name.len(), name)
    })
}

/// The data dirs of the disk-fault tmpfs mounts, for `Options::data_dirs`.
pub fn data_dirs(disks: &Disks, members: usize) -> Vec<(usize, PathBuf)> {
    (0..members).map(|i| (i, disks.data_dir(i))).collect()
}
