//! The core simulation: three members' raft nodes and apply loops in one
//! process, on real fjall directories, exchanging raft messages over an
//! in-memory network that a seeded generator drops, delays, duplicates,
//! reorders and partitions, while members crash and restart on the same
//! directories. One thread drives everything on a simulated clock, so a
//! seed replays a run: a failure prints the seed, the fault schedule and
//! the operations that show the violation.
//!
//! What is real: `Node` (the Ready loop), `ApplyLoop`, `RaftLog` and the
//! MVCC store on fjall, snapshot files and their install, the recovery a
//! restart goes through (`prepare_dirs`, `identify`, `recover`, `Core`).
//! What is simulated: the peer transport (`Outbox`), the clock, and the
//! clients, which propose and read straight through the node's inbox as
//! `EtcdServer` does. A crash drops everything a member holds in memory
//! (what fjall had handed to the OS survives, as with `kill -9`).
//!
//! Checks after every run, on every member: the same applied index, the
//! same revision and the same KV hash; every acknowledged put is in the
//! history at the revision it was acknowledged with; no put that raft
//! refused is there; revisions order the puts as real time does; every
//! linearizable read saw the latest put acknowledged before it started and
//! nothing written after it ended; the cluster takes a write once healed.

use super::{Core, finish_interrupted_install, identify, prepare_dirs, raft_config, recover};
use crate::error::Error;
use crate::etcdserver::Applied;
use crate::etcdserver::apply::ApplyLoop;
use crate::etcdserver::node::{ApplyMsg, Node, RaftMsg};
use crate::pb::cairnpb::{InternalRequest, internal_request::Request};
use crate::pb::etcdserverpb::PutRequest;
use crate::storage::Db;
use crate::storage::snapfile::{self, SnapshotRegistry};
use crate::transport::{Outbox, Report};
use cairn_config::ServerConfig;
use prost::Message as _;
use raft::prelude::{Message, MessageType};
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::fmt::Write as _;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::oneshot;

const MEMBERS: usize = 3;
/// The simulated clock's resolution: one step of every member.
const STEP: Duration = Duration::from_micros(500);
/// A client gives up on a proposal after this long (etcd's default request
/// timeout is 5 s plus the election timeout).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(7);
/// Keys the clients write and read: few, so operations collide.
const KEYS: u64 = 6;
/// Entries between snapshots (and log compactions): small, so restarted and
/// partitioned members catch up from snapshots often.
const SNAPSHOT_COUNT: u64 = 25;
/// How long a healed cluster has to agree and take a write.
const SETTLE: Duration = Duration::from_secs(15);
/// Real time a snapshot file may take to write.
const SNAPSHOT_WRITE_LIMIT: Duration = Duration::from_secs(30);
/// How long a member that crashed in a snapshot install stays down.
const RESTART_AFTER_INSTALL_CRASH: Duration = Duration::from_millis(300);

/// SplitMix64: every random choice of a run comes from here.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }

    fn per_mille(&mut self, p: u64) -> bool {
        self.below(1000) < p
    }

    fn between(&mut self, lo: Duration, hi: Duration) -> Duration {
        let span = hi.saturating_sub(lo).as_micros() as u64;
        lo + Duration::from_micros(self.below(span + 1))
    }
}

/// What the network does to messages sent now.
#[derive(Clone, Debug)]
struct Faults {
    loss_per_mille: u64,
    dup_per_mille: u64,
    delay_min: Duration,
    delay_max: Duration,
    /// Directed links (from, to) that carry nothing.
    cut: BTreeSet<(u64, u64)>,
}

impl Default for Faults {
    fn default() -> Self {
        Faults {
            loss_per_mille: 0,
            dup_per_mille: 0,
            delay_min: Duration::from_micros(100),
            delay_max: Duration::from_millis(2),
            cut: BTreeSet::new(),
        }
    }
}

enum Delivery {
    Step(Message),
    Report(Report),
}

/// The in-memory network: messages in flight, keyed by delivery time.
struct Net {
    rng: Rng,
    /// Simulated time since the run began.
    now: Duration,
    seq: u64,
    in_flight: BTreeMap<(Duration, u64), (u64, Delivery)>,
    faults: Faults,
    down: BTreeSet<u64>,
    /// Each member's snapshot directory, where a sent snapshot's file lands.
    snap_dirs: BTreeMap<u64, PathBuf>,
    sent: u64,
    lost: u64,
    snapshots: u64,
    /// Messages a member sent under another member's ID (none may be).
    misaddressed: Vec<String>,
}

impl Net {
    fn post(&mut self, from: u64, m: Message) {
        let to = m.to;
        if to == from || to == 0 {
            return;
        }
        self.sent += 1;
        // The peer transport's rule: a message travels only under the ID of
        // the member that sends it (a peer ends the stream otherwise).
        if m.from != from {
            self.misaddressed.push(format!(
                "{:?} from {from:x} under {:x}'s ID",
                m.get_msg_type(),
                m.from
            ));
            return;
        }
        let snapshot = m.get_msg_type() == MessageType::MsgSnapshot;
        // Down or cut off: what the peer transport tells raft when its
        // stream to the peer fails.
        if self.down.contains(&to) || self.faults.cut.contains(&(from, to)) {
            self.lost += 1;
            let report = if snapshot {
                Report::SnapshotSent { to, ok: false }
            } else {
                Report::Unreachable(to)
            };
            self.schedule(from, Delivery::Report(report));
            return;
        }
        if snapshot {
            // A snapshot travels with its file, as on the snapshot stream.
            let ok = self.copy_snapshot_file(from, &m);
            if ok {
                self.snapshots += 1;
                self.schedule(to, Delivery::Step(m));
            }
            self.schedule(from, Delivery::Report(Report::SnapshotSent { to, ok }));
            return;
        }
        if self.rng.per_mille(self.faults.loss_per_mille) {
            self.lost += 1;
            return;
        }
        // Raft's own messages survive duplication; a forwarded proposal
        // does not (raft appends it again, as etcd's would): the peer
        // streams deliver each message at most once, never resending a
        // batch, so it is not duplicated here either.
        if m.get_msg_type() != MessageType::MsgPropose
            && self.rng.per_mille(self.faults.dup_per_mille)
        {
            self.schedule(to, Delivery::Step(m.clone()));
        }
        self.schedule(to, Delivery::Step(m));
    }

    fn schedule(&mut self, to: u64, d: Delivery) {
        let delay = self
            .rng
            .between(self.faults.delay_min, self.faults.delay_max);
        self.seq += 1;
        self.in_flight.insert((self.now + delay, self.seq), (to, d));
    }

    fn copy_snapshot_file(&self, from: u64, m: &Message) -> bool {
        let md = m.get_snapshot().get_metadata();
        let name = snapfile::file_name(md.term, md.index);
        let (Some(src), Some(dst)) = (self.snap_dirs.get(&from), self.snap_dirs.get(&m.to)) else {
            return false;
        };
        let tmp = dst.join(format!("recv-{name}.tmp"));
        std::fs::copy(src.join(&name), &tmp).is_ok()
            && std::fs::rename(&tmp, dst.join(&name)).is_ok()
    }

    fn due(&mut self) -> Vec<(u64, Delivery)> {
        let mut out = Vec::new();
        while let Some(entry) = self.in_flight.first_entry() {
            if entry.key().0 > self.now {
                break;
            }
            out.push(entry.remove());
        }
        out
    }
}

/// A member's outbox: into the shared network.
struct SimOutbox {
    net: Arc<parking_lot::Mutex<Net>>,
    from: u64,
}

impl Outbox for SimOutbox {
    fn send(&self, msgs: Vec<Message>) {
        let mut net = self.net.lock();
        for m in msgs {
            net.post(self.from, m);
        }
    }

    fn describe_peers(&self) -> String {
        "the simulated network".into()
    }

    fn connected_count(&self) -> usize {
        let net = self.net.lock();
        net.snap_dirs
            .keys()
            .filter(|id| **id != self.from && !net.down.contains(id))
            .count()
    }
}

/// A running member: its two loops and the apply loop's queue.
struct Member {
    id: u64,
    node: Node,
    apply: ApplyLoop,
    queue: VecDeque<ApplyMsg>,
    raft_tx: crossbeam_channel::Sender<RaftMsg>,
    /// Crash while installing the next snapshot from the leader: after
    /// raft marked the install, before the state machine loaded it.
    crash_in_install: bool,
    /// The member's own runtime (the watch hub's task): dropped with it, as
    /// a process takes its tasks with it. Last, so it goes after the loops.
    rt: Option<tokio::runtime::Runtime>,
}

/// How a member's step ended.
#[derive(Debug, PartialEq)]
enum Stepped {
    Ok,
    /// It crashed in a snapshot install (see `Member::crash_in_install`).
    CrashedInInstall,
}

impl Member {
    fn is_leader(&self) -> bool {
        self.apply
            .status
            .is_leader
            .load(std::sync::atomic::Ordering::Acquire)
    }

    /// Proposes a put as `EtcdServer` does: a waiter under `id`, the entry
    /// into the node's inbox. `None`: refused at once (inbox or waiters
    /// full).
    fn propose_put(
        &self,
        id: u64,
        key: u64,
        value: String,
    ) -> Option<oneshot::Receiver<Result<Applied, Error>>> {
        let data = InternalRequest {
            id,
            request: Some(Request::Put(PutRequest {
                key: key_bytes(key).into(),
                value: value.into_bytes().into(),
                ..Default::default()
            })),
            ..Default::default()
        }
        .encode_to_vec();
        let rx = self.apply.waiters.register(id).ok()?;
        if self
            .raft_tx
            .try_send(RaftMsg::Propose { id, data })
            .is_err()
        {
            self.apply.waiters.cancel(id);
            return None;
        }
        Some(rx)
    }

    /// One turn of the raft node, then everything the apply loop was sent.
    fn step(&mut self, now: Instant) -> Result<Stepped, String> {
        self.node.take_input(now);
        if self.node.installs_snapshot_next() {
            // The turn waits for the apply loop to load the snapshot: run
            // it beside this thread, which serves the apply loop meanwhile.
            let crash = self.crash_in_install;
            let (node, apply, queue) = (&mut self.node, &mut self.apply, &mut self.queue);
            let crashed = std::thread::scope(|s| {
                let turn = s.spawn(move || node.make_progress());
                let mut crashed = false;
                while !turn.is_finished() {
                    match apply.rx.recv_timeout(Duration::from_millis(1)) {
                        // Dropping the request is the crash: the turn
                        // fails with the apply loop gone.
                        Ok(ApplyMsg::Snapshot { .. }) if crash => crashed = true,
                        Ok(m) => {
                            queue.push_back(m);
                            apply.apply_next(queue).map_err(|e| e.to_string())?;
                        }
                        Err(_) => {}
                    }
                }
                match turn.join() {
                    Ok(_) if crashed => Ok(true),
                    Ok(r) => r.map(|()| false).map_err(|e| e.to_string()),
                    Err(_) => Err("the raft turn panicked".to_string()),
                }
            })?;
            if crashed {
                return Ok(Stepped::CrashedInInstall);
            }
        } else {
            self.node.make_progress().map_err(|e| e.to_string())?;
        }
        while let Ok(m) = self.apply.rx.try_recv() {
            self.queue.push_back(m);
        }
        while !self.queue.is_empty() {
            self.apply
                .apply_next(&mut self.queue)
                .map_err(|e| e.to_string())?;
        }
        self.apply.between_batches();
        // Snapshot files are written on a thread of their own; wait for it
        // here so when the snapshot is ready does not depend on the OS.
        let started = Instant::now();
        while self.apply.snapshots.is_generating() {
            if started.elapsed() > SNAPSHOT_WRITE_LIMIT {
                return Err("a snapshot file took too long to write".into());
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        Ok(Stepped::Ok)
    }
}

#[derive(Debug, Clone, PartialEq)]
enum Outcome {
    Pending,
    /// Acknowledged at this revision (a put) or read this key revision
    /// (a read; 0: the key did not exist).
    Ok(i64),
    /// Definitely not applied: raft refused the proposal.
    Refused,
    /// Timed out, stranded by a crash or a leader change: maybe applied.
    Unknown,
}

#[derive(Debug, Clone, PartialEq)]
enum Kind {
    Put { value: String },
    Read,
}

#[derive(Debug, Clone, PartialEq)]
struct Op {
    member: usize,
    key: u64,
    kind: Kind,
    invoked: Duration,
    completed: Duration,
    outcome: Outcome,
}

enum Waiting {
    Put {
        op: usize,
        rx: oneshot::Receiver<Result<Applied, Error>>,
        id: u64,
    },
    ReadIndex {
        op: usize,
        rx: oneshot::Receiver<Result<u64, Error>>,
    },
    /// The ReadIndex answered: read once the member has applied `index`.
    Read { op: usize, index: u64 },
}

impl Waiting {
    fn op(&self) -> usize {
        match self {
            Waiting::Put { op, .. } | Waiting::ReadIndex { op, .. } | Waiting::Read { op, .. } => {
                *op
            }
        }
    }
}

struct Sim {
    seed: u64,
    rng: Rng,
    _dir: tempfile::TempDir,
    base: Instant,
    net: Arc<parking_lot::Mutex<Net>>,
    cfgs: Vec<ServerConfig>,
    /// Each member's election timeout in ticks, fixed for the run.
    election_ticks: Vec<usize>,
    members: Vec<Option<Member>>,
    ids: Vec<u64>,
    ops: Vec<Op>,
    waiting: Vec<Waiting>,
    next_proposal: u64,
    schedule: Vec<String>,
    crashes: u64,
    /// Crashes inside a snapshot install (see `Member::crash_in_install`).
    install_crashes: u64,
    /// Members down after a crash in a snapshot install, and when they
    /// come back.
    restart_at: BTreeMap<usize, Duration>,
}

fn sim_dir() -> tempfile::TempDir {
    // tmpfs where there is one: fsync costs nothing there, and a crash here
    // is a process crash, which loses nothing the OS holds either way.
    let shm = std::path::Path::new("/dev/shm");
    let builder = {
        let mut b = tempfile::Builder::new();
        b.prefix("cairn-sim-");
        b
    };
    if shm.is_dir()
        && let Ok(d) = builder.tempdir_in(shm)
    {
        return d;
    }
    builder.tempdir().expect("a temporary directory")
}

fn member_config(dir: &std::path::Path, i: usize) -> ServerConfig {
    let url = |j: usize| format!("http://127.0.0.1:{}", 2380 + j);
    let cluster: Vec<String> = (0..MEMBERS).map(|j| format!("m{j}={}", url(j))).collect();
    let args = [
        "--name".to_string(),
        format!("m{i}"),
        "--data-dir".into(),
        dir.join(format!("m{i}")).display().to_string(),
        "--initial-cluster".into(),
        cluster.join(","),
        "--initial-advertise-peer-urls".into(),
        url(i),
        "--listen-peer-urls".into(),
        url(i),
        "--initial-cluster-token".into(),
        "sim".into(),
        "--snapshot-count".into(),
        SNAPSHOT_COUNT.to_string(),
    ];
    let empty: [(String, String); 0] = [];
    match cairn_config::parse_with(args, empty, &[]) {
        Ok(cairn_config::Invocation::Serve(cfg)) => *cfg,
        other => panic!("simulated member's config: {other:?}"),
    }
}

impl Sim {
    fn new(seed: u64) -> Sim {
        let dir = sim_dir();
        let mut rng = Rng(seed);
        let cfgs: Vec<ServerConfig> = (0..MEMBERS).map(|i| member_config(dir.path(), i)).collect();
        // raft-rs draws election timeouts from the thread's generator; a
        // range one tick wide takes that out, and the seed spreads the
        // members' timeouts instead.
        let election_ticks = (0..MEMBERS)
            .map(|_| rng.below(10) as usize)
            .collect::<Vec<_>>();
        let net = Net {
            rng: Rng(rng.next()),
            now: Duration::ZERO,
            seq: 0,
            in_flight: BTreeMap::new(),
            faults: Faults::default(),
            down: BTreeSet::new(),
            snap_dirs: BTreeMap::new(),
            sent: 0,
            lost: 0,
            snapshots: 0,
            misaddressed: Vec::new(),
        };
        let mut sim = Sim {
            seed,
            rng,
            _dir: dir,
            base: Instant::now(),
            net: Arc::new(parking_lot::Mutex::new(net)),
            cfgs,
            election_ticks,
            members: (0..MEMBERS).map(|_| None).collect(),
            ids: Vec::new(),
            ops: Vec::new(),
            waiting: Vec::new(),
            next_proposal: 1,
            schedule: Vec::new(),
            crashes: 0,
            install_crashes: 0,
            restart_at: BTreeMap::new(),
        };
        for i in 0..MEMBERS {
            sim.start(i);
            let id = sim.members[i].as_ref().map_or(0, |m| m.id);
            sim.ids.push(id);
        }
        sim
    }

    fn elapsed(&self) -> Duration {
        self.net.lock().now
    }

    fn now(&self) -> Instant {
        self.base + self.elapsed()
    }

    fn note(&mut self, what: impl std::fmt::Display) {
        let line = format!("{:>8.3}s  {what}", self.elapsed().as_secs_f64());
        self.schedule.push(line);
    }

    /// Opens member `i` from its directory: a new member the first time,
    /// a restart after that, through the same steps as `boot::start`.
    fn start(&mut self, i: usize) {
        if self.members[i].is_some() {
            return;
        }
        self.restart_at.remove(&i);
        let cfg = &self.cfgs[i];
        let rt = match tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        {
            Ok(rt) => rt,
            Err(e) => self.fail(&format!("a runtime for m{i}: {e}")),
        };
        let entered = rt.enter();
        let opened = (|| -> Result<Member, super::BootError> {
            prepare_dirs(cfg)?;
            let member_dir = cfg.data_dir.join("member");
            let db = Db::open_with_wal(&member_dir, None)?;
            let snapshots = Arc::new(SnapshotRegistry::new(
                member_dir.join("snap"),
                cfg.max_snapshots as usize,
            )?);
            finish_interrupted_install(&db, &snapshots)?;
            let identity = rt.block_on(identify(&db, cfg, None))?;
            let state = recover(&db, &snapshots, cfg, &identity)?;
            let mut raft_cfg = raft_config(cfg, identity.member_id, state.applied.index);
            raft_cfg.min_election_tick = raft_cfg.election_tick + self.election_ticks[i];
            raft_cfg.max_election_tick = raft_cfg.min_election_tick + 1;
            let config = Arc::new(arc_swap::ArcSwap::from_pointee(cfg.clone()));
            let core = Core::new(cfg, config, db, snapshots, &identity, state, raft_cfg)?;
            let raft_tx = core.raft_tx.clone();
            let id = identity.member_id;
            self.net
                .lock()
                .snap_dirs
                .insert(id, core.snapshots.dir().to_path_buf());
            let (mut node, apply) = core.into_loops(Box::new(SimOutbox {
                net: Arc::clone(&self.net),
                from: id,
            }));
            node.start(self.base + self.net.lock().now);
            Ok(Member {
                id,
                node,
                apply,
                queue: VecDeque::new(),
                raft_tx,
                crash_in_install: false,
                rt: None,
            })
        })();
        drop(entered);
        match opened {
            Ok(mut m) => {
                m.rt = Some(rt);
                self.net.lock().down.remove(&m.id);
                self.members[i] = Some(m);
            }
            Err(e) => self.fail(&format!("member m{i} failed to start: {e}")),
        }
    }

    /// Drops everything member `i` holds in memory.
    fn crash(&mut self, i: usize) {
        if let Some(m) = self.members[i].take() {
            self.net.lock().down.insert(m.id);
            self.crashes += 1;
        }
    }

    fn leader(&self) -> Option<usize> {
        self.members
            .iter()
            .position(|m| m.as_ref().is_some_and(Member::is_leader))
    }

    /// One step of the clock: deliver what is due, turn every member,
    /// settle what clients wait for.
    fn step(&mut self) {
        let due = {
            let mut net = self.net.lock();
            net.now += STEP;
            net.due()
        };
        let now = self.now();
        for (to, d) in due {
            let Some(m) = self.members.iter().flatten().find(|m| m.id == to) else {
                continue;
            };
            let msg = match d {
                Delivery::Step(msg) => RaftMsg::Step(msg),
                Delivery::Report(r) => RaftMsg::Transport(r),
            };
            // A full inbox drops, as the peer stream's bounded queue does.
            let _ = m.raft_tx.try_send(msg);
        }
        for i in 0..MEMBERS {
            let Some(m) = self.members[i].as_mut() else {
                continue;
            };
            match m.step(now) {
                Ok(Stepped::Ok) => {}
                Ok(Stepped::CrashedInInstall) => {
                    self.crash(i);
                    self.install_crashes += 1;
                    self.note(format!("m{i} crashed installing a snapshot"));
                    self.restart_at
                        .insert(i, self.elapsed() + RESTART_AFTER_INSTALL_CRASH);
                }
                Err(e) => self.fail(&format!("member m{i} stopped: {e}")),
            }
        }
        let now_sim = self.elapsed();
        let due: Vec<usize> = self
            .restart_at
            .iter()
            .filter(|(_, at)| **at <= now_sim)
            .map(|(i, _)| *i)
            .collect();
        for i in due {
            self.restart_at.remove(&i);
            if self.members[i].is_none() {
                self.start(i);
                self.note(format!("restart m{i}"));
            }
        }
        self.poll_clients();
    }

    fn run_for(&mut self, d: Duration, clients: bool) {
        let end = self.elapsed() + d;
        let mut next_op = self.elapsed();
        while self.elapsed() < end {
            if clients && self.elapsed() >= next_op {
                self.invoke();
                next_op = self.elapsed()
                    + self
                        .rng
                        .between(Duration::from_millis(1), Duration::from_millis(12));
            }
            self.step();
        }
    }

    /// A client operation at a random live member.
    fn invoke(&mut self) {
        let live: Vec<usize> = (0..MEMBERS)
            .filter(|i| self.members[*i].is_some())
            .collect();
        if live.is_empty() {
            return;
        }
        let member = live[self.rng.below(live.len() as u64) as usize];
        let key = self.rng.below(KEYS);
        let put = self.rng.per_mille(600);
        let op = self.ops.len();
        let invoked = self.elapsed();
        let kind = if put {
            Kind::Put {
                value: format!("v{op}"),
            }
        } else {
            Kind::Read
        };
        self.ops.push(Op {
            member,
            key,
            kind: kind.clone(),
            invoked,
            completed: Duration::ZERO,
            outcome: Outcome::Pending,
        });
        let id = self.next_proposal;
        self.next_proposal += 1;
        let Some(m) = self.members[member].as_ref() else {
            return;
        };
        let sent = match kind {
            Kind::Put { value } => {
                let rx = m.propose_put(id, key, value);
                let sent = rx.is_some();
                if let Some(rx) = rx {
                    self.waiting.push(Waiting::Put { op, rx, id });
                }
                sent
            }
            Kind::Read => {
                let (tx, rx) = oneshot::channel();
                let sent = m.raft_tx.try_send(RaftMsg::ReadIndex(tx)).is_ok();
                if sent {
                    self.waiting.push(Waiting::ReadIndex { op, rx });
                }
                sent
            }
        };
        if !sent {
            self.finish(op, Outcome::Refused);
        }
    }

    fn finish(&mut self, op: usize, outcome: Outcome) {
        let now = self.elapsed();
        let o = &mut self.ops[op];
        o.completed = now;
        o.outcome = outcome;
    }

    fn poll_clients(&mut self) {
        let now = self.elapsed();
        let mut still = Vec::with_capacity(self.waiting.len());
        for w in std::mem::take(&mut self.waiting) {
            let op = w.op();
            let member = self.ops[op].member;
            let timed_out = now.saturating_sub(self.ops[op].invoked) >= REQUEST_TIMEOUT;
            match w {
                Waiting::Put { op, mut rx, id } => match rx.try_recv() {
                    Ok(Ok(Applied::Put(resp))) => {
                        let rev = resp.header.map_or(0, |h| h.revision);
                        self.finish(op, Outcome::Ok(rev));
                    }
                    Ok(Ok(other)) => self.fail(&format!("a put was answered {other:?}")),
                    // Raft dropped it before it reached the log.
                    Ok(Err(Error::NoLeader)) => self.finish(op, Outcome::Refused),
                    Ok(Err(_)) | Err(oneshot::error::TryRecvError::Closed) => {
                        self.finish(op, Outcome::Unknown)
                    }
                    Err(oneshot::error::TryRecvError::Empty) if timed_out => {
                        if let Some(m) = self.members[member].as_ref() {
                            m.apply.waiters.cancel(id);
                        }
                        self.finish(op, Outcome::Unknown);
                    }
                    Err(oneshot::error::TryRecvError::Empty) => {
                        still.push(Waiting::Put { op, rx, id })
                    }
                },
                Waiting::ReadIndex { op, mut rx } => match rx.try_recv() {
                    Ok(Ok(index)) => still.push(Waiting::Read { op, index }),
                    Ok(Err(_)) | Err(oneshot::error::TryRecvError::Closed) => {
                        self.finish(op, Outcome::Refused)
                    }
                    Err(oneshot::error::TryRecvError::Empty) if timed_out => {
                        self.finish(op, Outcome::Refused)
                    }
                    Err(oneshot::error::TryRecvError::Empty) => {
                        still.push(Waiting::ReadIndex { op, rx })
                    }
                },
                Waiting::Read { op, index } => {
                    let Some(m) = self.members[member].as_ref() else {
                        self.finish(op, Outcome::Refused);
                        continue;
                    };
                    if m.apply.applied.index < index {
                        if timed_out {
                            self.finish(op, Outcome::Refused);
                        } else {
                            still.push(Waiting::Read { op, index });
                        }
                        continue;
                    }
                    let key = key_bytes(self.ops[op].key);
                    let store = &m.apply.store;
                    let read = store.get_at(&key, store.current_rev());
                    match read {
                        Ok(kv) => {
                            let rev = kv.map_or(0, |kv| kv.mod_revision);
                            self.finish(op, Outcome::Ok(rev));
                        }
                        Err(e) => self.fail(&format!("reading m{member}'s store: {e}")),
                    }
                }
            }
        }
        self.waiting = still;
    }

    /// A random fault for the next phase of the run.
    fn inject(&mut self) -> Option<usize> {
        let ids = self.ids.clone();
        // A running member (one may still be down after a crash in a
        // snapshot install).
        let live: Vec<usize> = (0..MEMBERS)
            .filter(|i| self.members[*i].is_some())
            .collect();
        let Some(&victim) = live.get(self.rng.below(live.len() as u64) as usize) else {
            self.note("no fault (every member is down)");
            return None;
        };
        let victim = match self.rng.below(3) {
            // Faults hit the leader more often: that is where they hurt.
            0 | 1 => self.leader().unwrap_or(victim),
            _ => victim,
        };
        let mut faults = Faults::default();
        let mut crashed = None;
        let what = match self.rng.below(9) {
            0 => "no fault".to_string(),
            1 => {
                faults.loss_per_mille = 100 + self.rng.below(300);
                format!("lose {}‰ of messages", faults.loss_per_mille)
            }
            2 => {
                faults.delay_min = Duration::from_millis(self.rng.below(20));
                faults.delay_max = faults.delay_min + Duration::from_millis(1 + self.rng.below(60));
                format!(
                    "delay messages {:?}..{:?} (reordering them)",
                    faults.delay_min, faults.delay_max
                )
            }
            3 => {
                faults.dup_per_mille = 100 + self.rng.below(400);
                faults.delay_max = Duration::from_millis(10);
                format!("duplicate {}‰ of messages", faults.dup_per_mille)
            }
            4 => {
                faults.cut = self.isolation(victim);
                format!("isolate m{victim}")
            }
            5 => {
                let other = (victim + 1 + self.rng.below(MEMBERS as u64 - 1) as usize) % MEMBERS;
                faults.cut.insert((ids[victim], ids[other]));
                format!("cut the link m{victim} -> m{other} (one way)")
            }
            6 => {
                // Cut off long enough to need a snapshot on its return.
                faults.cut = self.isolation(victim);
                if let Some(m) = self.members[victim].as_mut() {
                    m.crash_in_install = true;
                }
                format!("isolate m{victim}; it crashes in its next snapshot install")
            }
            _ => {
                self.crash(victim);
                crashed = Some(victim);
                format!("crash m{victim}")
            }
        };
        self.note(what);
        self.net.lock().faults = faults;
        crashed
    }

    /// The links that cut member `i` off from the others, both ways.
    fn isolation(&self, i: usize) -> BTreeSet<(u64, u64)> {
        let me = self.ids[i];
        let others = self.ids.iter().filter(|id| **id != me);
        others.flat_map(|&o| [(me, o), (o, me)]).collect()
    }

    fn heal(&mut self, crashed: Option<usize>) {
        self.net.lock().faults = Faults::default();
        if let Some(i) = crashed {
            self.start(i);
            self.note(format!("restart m{i}"));
        } else {
            self.note("heal");
        }
    }

    /// A seeded run: phases of faults under client load, then heal, settle
    /// and check.
    fn run(&mut self, phases: usize) {
        self.note(format!("election ticks +{:?}", self.election_ticks));
        self.run_for(Duration::from_secs(3), true);
        for _ in 0..phases {
            let crashed = self.inject();
            let d = self
                .rng
                .between(Duration::from_millis(300), Duration::from_millis(2500));
            self.run_for(d, true);
            self.heal(crashed);
            let d = self
                .rng
                .between(Duration::from_millis(100), Duration::from_millis(1500));
            self.run_for(d, true);
        }
        self.settle();
        self.check();
    }

    /// Runs without faults or new clients until every waiting client has an
    /// answer and the members agree, then proves the cluster takes a write.
    fn settle(&mut self) {
        self.note("settle");
        let end = self.elapsed() + SETTLE;
        while self.elapsed() < end && !(self.waiting.is_empty() && self.converged()) {
            self.step();
        }
        if !self.waiting.is_empty() {
            self.fail("clients still wait for an answer after the cluster healed");
        }
        let Some(leader) = self.leader() else {
            self.fail("no leader after the cluster healed");
        };
        let op = self.ops.len();
        self.ops.push(Op {
            member: leader,
            key: 0,
            kind: Kind::Put {
                value: format!("v{op}"),
            },
            invoked: self.elapsed(),
            completed: Duration::ZERO,
            outcome: Outcome::Pending,
        });
        self.propose_final(op, leader);
        let end = self.elapsed() + SETTLE;
        while self.elapsed() < end && !(self.waiting.is_empty() && self.converged()) {
            self.step();
        }
        if !matches!(self.ops[op].outcome, Outcome::Ok(_)) {
            self.fail(&format!(
                "the healed cluster did not take a write: {:?}",
                self.ops[op].outcome
            ));
        }
        if !self.converged() {
            self.fail("members did not converge after the cluster healed");
        }
    }

    fn propose_final(&mut self, op: usize, member: usize) {
        let id = self.next_proposal;
        self.next_proposal += 1;
        let Some(m) = self.members[member].as_ref() else {
            return;
        };
        if let Some(rx) = m.propose_put(id, 0, format!("v{op}")) {
            self.waiting.push(Waiting::Put { op, rx, id });
        }
    }

    fn converged(&self) -> bool {
        if self.members.iter().any(Option::is_none) {
            return false;
        }
        let applied: BTreeSet<(u64, i64)> = self
            .members
            .iter()
            .flatten()
            .map(|m| (m.apply.applied.index, m.apply.store.current_rev()))
            .collect();
        applied.len() == 1
    }

    /// The checks every run ends with (see the module's doc).
    fn check(&self) {
        let members: Vec<&Member> = self.members.iter().flatten().collect();
        if members.len() != MEMBERS {
            self.fail("a member is not running at the end");
        }
        let misaddressed = self.net.lock().misaddressed.clone();
        if !misaddressed.is_empty() {
            self.fail(&format!(
                "{} message(s) sent under another member's ID, which peers refuse \
                 (first: {})",
                misaddressed.len(),
                misaddressed[0]
            ));
        }
        let mut hashes = BTreeSet::new();
        for m in &members {
            match m.apply.store.hash_kv(0) {
                Ok(h) => {
                    hashes.insert((h.hash, h.revision, m.apply.applied.index));
                }
                Err(e) => self.fail(&format!("HashKV: {e}")),
            }
        }
        if hashes.len() != 1 {
            self.fail(&format!(
                "members differ (hash, revision, applied): {hashes:?}"
            ));
        }
        // The others hold the same history (same hash).
        let store = &members[0].apply.store;
        let changes = match store.changes(1, store.current_rev(), usize::MAX, usize::MAX) {
            Ok((changes, _)) => changes,
            Err(e) => self.fail(&format!("reading the history: {e}")),
        };
        let history: Vec<Write> = changes
            .iter()
            .map(|c| Write {
                key: String::from_utf8_lossy(&c.kv.key).to_string(),
                value: String::from_utf8_lossy(&c.kv.value).to_string(),
                rev: c.rev.main,
            })
            .collect();
        if let Err(e) = check_history(&self.ops, &history) {
            self.fail(&e);
        }
    }

    fn fail(&self, what: &str) -> ! {
        let mut out = String::new();
        let _ = writeln!(out, "core simulation failed: {what}");
        let _ = writeln!(
            out,
            "replay: CAIRN_SIM_SEED={} cargo nextest run -p cairn --lib sim::seeded_runs_under_faults_0",
            self.seed
        );
        let _ = writeln!(out, "fault schedule:");
        for line in &self.schedule {
            let _ = writeln!(out, "  {line}");
        }
        let _ = writeln!(out, "last operations:");
        let from = self.ops.len().saturating_sub(30);
        for (i, op) in self.ops.iter().enumerate().skip(from) {
            let _ = writeln!(out, "  #{i} {op:?}");
        }
        panic!("{out}");
    }

    fn summary(&self) -> String {
        let acked = self
            .ops
            .iter()
            .filter(|o| matches!(o.outcome, Outcome::Ok(_)))
            .count();
        let net = self.net.lock();
        format!(
            "seed {}: {:.1}s simulated, {} ops ({} ok), {} messages ({} lost), {} snapshots \
             sent, {} crashes ({} inside a snapshot install)",
            self.seed,
            net.now.as_secs_f64(),
            self.ops.len(),
            acked,
            net.sent,
            net.lost,
            net.snapshots,
            self.crashes,
            self.install_crashes
        )
    }
}

fn key_name(k: u64) -> String {
    format!("k{k}")
}

fn key_bytes(k: u64) -> Vec<u8> {
    key_name(k).into_bytes()
}

/// One write in the store's history.
struct Write {
    key: String,
    value: String,
    rev: i64,
}

/// The history checks (see the module's doc): `ops` as the clients saw
/// them, `history` every write the store holds, in revision order. Puts
/// write unique values `v<op index>`, which ties a write to its operation.
fn check_history(ops: &[Op], history: &[Write]) -> Result<(), String> {
    // Value → (key, revision) of the write that stored it.
    let mut written: BTreeMap<&str, (&str, i64)> = BTreeMap::new();
    for w in history {
        if written.insert(&w.value, (&w.key, w.rev)).is_some() {
            return Err(format!("value {} was written twice", w.value));
        }
    }
    for (i, op) in ops.iter().enumerate() {
        let Kind::Put { value } = &op.kind else {
            continue;
        };
        let key = key_name(op.key);
        match (&op.outcome, written.get(value.as_str())) {
            (Outcome::Ok(rev), Some(&(k, at))) if k == key && at == *rev => {}
            (Outcome::Ok(rev), found) => {
                return Err(format!(
                    "acknowledged put #{i} ({key}={value} at revision {rev}) is in the history \
                     as {found:?}"
                ));
            }
            (Outcome::Refused, Some(found)) => {
                return Err(format!(
                    "put #{i} ({value}) was refused but is in the history at {found:?}"
                ));
            }
            (Outcome::Pending, _) => return Err(format!("put #{i} never got an answer")),
            _ => {}
        }
    }
    let acked: Vec<(usize, &Op, i64)> = ops
        .iter()
        .enumerate()
        .filter_map(|(i, o)| match (&o.kind, &o.outcome) {
            (Kind::Put { .. }, Outcome::Ok(rev)) => Some((i, o, *rev)),
            _ => None,
        })
        .collect();
    // Revisions order the puts as real time does.
    let mut by_end = acked.clone();
    by_end.sort_by_key(|(_, o, _)| o.completed);
    let mut max_ended: Vec<(Duration, usize, i64)> = Vec::with_capacity(by_end.len());
    for &(i, o, rev) in &by_end {
        let best = max_ended.last().map_or(
            (i, rev),
            |&(_, j, r)| {
                if r >= rev { (j, r) } else { (i, rev) }
            },
        );
        max_ended.push((o.completed, best.0, best.1));
    }
    for &(j, b, rb) in &acked {
        // The highest revision of a put that ended before b began.
        let before = max_ended.partition_point(|(end, _, _)| *end < b.invoked);
        if let Some(&(_, i, ra)) = before.checked_sub(1).and_then(|k| max_ended.get(k))
            && ra >= rb
        {
            return Err(format!(
                "put #{i} (revision {ra}) ended before put #{j} began, which got the lower \
                 revision {rb}"
            ));
        }
    }
    // Reads: not stale, not from the future.
    for (i, r) in ops.iter().enumerate() {
        let (Kind::Read, Outcome::Ok(seen)) = (&r.kind, &r.outcome) else {
            continue;
        };
        let key = key_name(r.key);
        for &(j, p, rev) in &acked {
            if p.key == r.key && p.completed < r.invoked && rev > *seen {
                return Err(format!(
                    "stale read #{i}: saw {key} at revision {seen}, but put #{j} at revision \
                     {rev} was acknowledged before the read began"
                ));
            }
        }
        if *seen == 0 {
            continue;
        }
        let Some(w) = history.iter().find(|w| w.rev == *seen && w.key == key) else {
            return Err(format!(
                "read #{i} saw {key} at revision {seen}, which did not write {key}"
            ));
        };
        let writer = w
            .value
            .trim_start_matches('v')
            .parse::<usize>()
            .ok()
            .and_then(|k| ops.get(k));
        if writer.is_none_or(|p| p.invoked > r.completed) {
            return Err(format!(
                "read #{i} saw {}, written after the read ended",
                w.value
            ));
        }
    }
    Ok(())
}

/// The seeds a shard of the seeded runs takes: `CAIRN_SIM_SEED` replays one
/// seed (in shard 0), `CAIRN_SIM_SEEDS` sets how many seeds each shard runs
/// (default 16: 64 runs in the four shards, which nextest runs in
/// parallel); shard `n` takes seeds `n * count + 1 ..`.
fn shard_seeds(shard: u64) -> Vec<u64> {
    if let Some(seed) = std::env::var("CAIRN_SIM_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
    {
        return if shard == 0 { vec![seed] } else { vec![] };
    }
    let count: u64 = std::env::var("CAIRN_SIM_SEEDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(16);
    (shard * count + 1..=(shard + 1) * count).collect()
}

/// Phases of faults per run: about 20 s of simulated time.
const PHASES: usize = 6;

fn seeded_runs(shard: u64) {
    for seed in shard_seeds(shard) {
        let mut sim = Sim::new(seed);
        sim.run(PHASES);
        eprintln!("{}", sim.summary());
    }
}

#[test]
fn a_seed_replays_exactly() {
    let run = |seed| {
        let mut sim = Sim::new(seed);
        sim.run(3);
        let sent = sim.net.lock().sent;
        (sim.ops.clone(), sim.schedule.clone(), sent)
    };
    let seed = 1000;
    let (first, second) = (run(seed), run(seed));
    assert!(
        first == second,
        "seed {seed} ran differently twice: {} vs {} ops, {} vs {} messages",
        first.0.len(),
        second.0.len(),
        first.2,
        second.2
    );
}

/// Lets a cluster elect, cuts a follower off (after `prepare` on it; `why`
/// says what that does), and runs on until the leader's log has moved far
/// past it: on its return only a snapshot can catch it up. Returns the
/// follower, still cut off.
fn left_behind(sim: &mut Sim, why: &str, prepare: impl FnOnce(&mut Member)) -> usize {
    sim.run_for(Duration::from_secs(3), true);
    let Some(leader) = sim.leader() else {
        sim.fail("no leader after 3 s");
    };
    let victim = (leader + 1) % MEMBERS;
    let cut = sim.isolation(victim);
    sim.net.lock().faults.cut = cut;
    if let Some(m) = sim.members[victim].as_mut() {
        prepare(m);
    }
    sim.note(match why {
        "" => format!("isolate m{victim}"),
        why => format!("isolate m{victim}; {why}"),
    });
    // Far more entries than `SNAPSHOT_COUNT`: the leader's log moves on.
    sim.run_for(Duration::from_secs(3), true);
    victim
}

/// The reopen path for an interrupted snapshot install, every time: a
/// follower cut off while the log is compacted past it gets a snapshot on
/// its return, crashes after raft marked the install and before the state
/// machine loaded it, and restarts on the same directory.
#[test]
fn a_crash_inside_a_snapshot_install_is_redone_on_restart() {
    let mut sim = Sim::new(7);
    left_behind(&mut sim, "it crashes in its next snapshot install", |m| {
        m.crash_in_install = true
    });
    sim.heal(None);
    let end = sim.elapsed() + Duration::from_secs(10);
    while sim.install_crashes == 0 && sim.elapsed() < end {
        sim.step();
    }
    if sim.install_crashes != 1 {
        sim.fail("the isolated member never crashed inside a snapshot install");
    }
    sim.run_for(Duration::from_secs(2), true);
    sim.settle();
    sim.check();
}

/// A follower that installs a snapshot and then hears nothing more (its
/// leader was moved, frozen or killed in the middle of catching it up)
/// times out and starts an election. raft-rs must count the snapshot as
/// applied by then: its own applied index used to reach the snapshot only
/// with the next applied entry, and the election read the compacted
/// entries after the old one and panicked (found by the robustness runs'
/// `snapshot-leader-change`).
#[test]
fn a_member_that_installed_a_snapshot_can_campaign_at_once() {
    let mut sim = Sim::new(5);
    let victim = left_behind(&mut sim, "", |_| {});
    sim.heal(None);
    let sent = sim.net.lock().snapshots;
    let end = sim.elapsed() + Duration::from_secs(10);
    while sim.net.lock().snapshots == sent && sim.elapsed() < end {
        sim.step();
    }
    if sim.net.lock().snapshots == sent {
        sim.fail("the isolated member was never sent a snapshot");
    }
    // The snapshot is on its way; nothing after it will be.
    let cut = sim.isolation(victim);
    sim.net.lock().faults.cut = cut;
    sim.note(format!("isolate m{victim} again once its snapshot is sent"));
    sim.run_for(Duration::from_secs(3), true);
    sim.heal(None);
    sim.run_for(Duration::from_secs(2), true);
    sim.settle();
    sim.check();
}

/// A follower that gets a peer's read request (the peer still took it for
/// the leader: it had been frozen, say) must not pass it on to its leader
/// under the peer's ID: peers end the stream that carries such a message,
/// and every message queued behind it is lost (Finding 11). `check` fails
/// on any message sent under another member's ID.
#[test]
fn a_read_request_sent_to_a_follower_is_not_relayed_under_the_askers_id() {
    let mut sim = Sim::new(11);
    sim.run_for(Duration::from_secs(3), true);
    let Some(leader) = sim.leader() else {
        sim.fail("no leader after 3 s");
    };
    let (follower, asker) = ((leader + 1) % MEMBERS, (leader + 2) % MEMBERS);
    let id = |i: usize| sim.members[i].as_ref().map_or(0, |m| m.id);
    let (to, from) = (id(follower), id(asker));
    let mut read = Message::default();
    read.set_msg_type(MessageType::MsgReadIndex);
    read.from = from;
    read.to = to;
    read.entries = vec![raft::prelude::Entry {
        data: [from.to_be_bytes(), 1u64.to_be_bytes()].concat().into(),
        ..Default::default()
    }]
    .into();
    sim.note(format!(
        "m{asker}'s read request delivered to follower m{follower}"
    ));
    sim.net.lock().schedule(to, Delivery::Step(read));
    sim.run_for(Duration::from_secs(1), true);
    sim.settle();
    sim.check();
}

#[test]
fn seeded_runs_under_faults_0() {
    seeded_runs(0);
}

#[test]
fn seeded_runs_under_faults_1() {
    seeded_runs(1);
}

#[test]
fn seeded_runs_under_faults_2() {
    seeded_runs(2);
}

#[test]
fn seeded_runs_under_faults_3() {
    seeded_runs(3);
}

/// The checker must reject what it exists to catch; a checker that never
/// fails proves nothing.
mod checker {
    use super::*;

    fn at(ms: u64) -> Duration {
        Duration::from_millis(ms)
    }

    fn put(key: u64, i: usize, from: u64, to: u64, outcome: Outcome) -> Op {
        Op {
            member: 0,
            key,
            kind: Kind::Put {
                value: format!("v{i}"),
            },
            invoked: at(from),
            completed: at(to),
            outcome,
        }
    }

    fn read(key: u64, from: u64, to: u64, seen: i64) -> Op {
        Op {
            member: 0,
            key,
            kind: Kind::Read,
            invoked: at(from),
            completed: at(to),
            outcome: Outcome::Ok(seen),
        }
    }

    fn write(key: u64, i: usize, rev: i64) -> Write {
        Write {
            key: key_name(key),
            value: format!("v{i}"),
            rev,
        }
    }

    /// Two puts to k0 one after the other, a concurrent unknown put to k1
    /// that took effect, a refused one that did not, and reads that saw
    /// what they had to.
    fn good() -> (Vec<Op>, Vec<Write>) {
        let ops = vec![
            put(0, 0, 0, 10, Outcome::Ok(2)),
            put(0, 1, 20, 30, Outcome::Ok(3)),
            put(1, 2, 5, 40, Outcome::Unknown),
            put(1, 3, 5, 6, Outcome::Refused),
            read(0, 31, 35, 3),
            // Concurrent with put #1: either value is right.
            read(0, 25, 28, 2),
            read(1, 0, 1, 0),
        ];
        let history = vec![write(0, 0, 2), write(0, 1, 3), write(1, 2, 4)];
        (ops, history)
    }

    #[test]
    fn a_linearizable_history_passes() {
        let (ops, history) = good();
        assert_eq!(check_history(&ops, &history), Ok(()));
    }

    #[test]
    fn a_lost_acknowledged_write_is_caught() {
        let (ops, mut history) = good();
        history.remove(1);
        let e = check_history(&ops, &history).unwrap_err();
        assert!(e.contains("acknowledged put #1"), "{e}");
    }

    #[test]
    fn a_write_at_another_revision_than_acknowledged_is_caught() {
        let (ops, mut history) = good();
        history[1].rev = 5;
        let e = check_history(&ops, &history).unwrap_err();
        assert!(e.contains("acknowledged put #1"), "{e}");
    }

    #[test]
    fn a_refused_write_that_took_effect_is_caught() {
        let (ops, mut history) = good();
        history.push(write(1, 3, 5));
        let e = check_history(&ops, &history).unwrap_err();
        assert!(e.contains("put #3") && e.contains("refused"), "{e}");
    }

    #[test]
    fn a_write_applied_twice_is_caught() {
        let (ops, mut history) = good();
        history.push(write(1, 2, 5));
        let e = check_history(&ops, &history).unwrap_err();
        assert!(e.contains("written twice"), "{e}");
    }

    #[test]
    fn revisions_against_real_time_are_caught() {
        let (mut ops, mut history) = good();
        // Put #1 began after put #0 ended but got the lower revision.
        ops[0].outcome = Outcome::Ok(3);
        ops[1].outcome = Outcome::Ok(2);
        history[0].rev = 3;
        history[1].rev = 2;
        ops.truncate(4);
        let e = check_history(&ops, &history).unwrap_err();
        assert!(e.contains("ended before put #1 began"), "{e}");
    }

    #[test]
    fn a_stale_read_is_caught() {
        let (mut ops, history) = good();
        // Began after put #1 (revision 3) was acknowledged, saw revision 2.
        ops[4].outcome = Outcome::Ok(2);
        let e = check_history(&ops, &history).unwrap_err();
        assert!(e.contains("stale read #4"), "{e}");
    }

    #[test]
    fn a_read_from_the_future_is_caught() {
        let (mut ops, history) = good();
        // Ended at 28 ms, saw put #1's value; make put #1 begin later.
        ops[5].outcome = Outcome::Ok(3);
        ops[5].completed = at(19);
        ops[5].invoked = at(15);
        let e = check_history(&ops, &history).unwrap_err();
        assert!(e.contains("written after the read ended"), "{e}");
    }

    #[test]
    fn a_read_of_a_revision_that_wrote_another_key_is_caught() {
        let (mut ops, history) = good();
        ops[6].outcome = Outcome::Ok(2);
        let e = check_history(&ops, &history).unwrap_err();
        assert!(e.contains("did not write k1"), "{e}");
    }

    #[test]
    fn an_unanswered_put_is_caught() {
        let (mut ops, history) = good();
        ops[2].outcome = Outcome::Pending;
        let e = check_history(&ops, &history).unwrap_err();
        assert!(e.contains("never got an answer"), "{e}");
    }
}
