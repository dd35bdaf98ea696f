//! The raft loop: the only owner of the `RawNode`, and the only place a
//! `Ready` is handled.
//!
//! Order per Ready (raft-rs 0.7 semantics): send the leader's messages at
//! once; install a snapshot if any; persist entries and hard state with one
//! fsync (group commit: every proposal drained before `ready()` shares it);
//! only then send the messages that require persistence; advance; hand the
//! committed entries to the apply loop. Proposals, peer messages and
//! ReadIndex requests arrive on one bounded inbox; the apply loop talks back
//! on a separate control channel so the two loops can never wait on each
//! other in a cycle.

use super::wait::Waiters;
use super::{Applied, RaftStatus};
use crate::error::Error;
use crate::metrics::METRICS;
use crate::state::lease::Lessor;
use crate::storage::raftlog::RaftLog;
use crate::storage::snapfile::{self, SnapshotRegistry};
use crate::transport::{Outbox, Report};
use crossbeam_channel::{Receiver, Sender};
use raft::prelude::{ConfChangeV2, ConfState, Entry, Message, MessageType, SnapshotMetadata};
use raft::{RawNode, SnapshotStatus, StateRole};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};
use tokio::sync::oneshot;

/// Inbox messages handled per loop turn before a Ready is processed, so a
/// flood of proposals cannot starve ticks.
const MAX_DRAIN: usize = 4096;
/// How often a member without a leader says so in its log.
const NO_LEADER_LOG_INTERVAL: Duration = Duration::from_secs(5);
/// Proposals forwarded by other members that arrive while this member
/// cannot take or forward them: it leads but hands leadership over, or it
/// knows no leader (just stepped down). raft-rs would drop them silently
/// and their clients would wait for the request timeout; they are held and
/// stepped again once a leader is known. Past this many they are dropped as
/// before.
const MAX_HELD_PROPOSALS: usize = 4096;
/// A held proposal older than this is dropped: its client has (nearly)
/// given up, and a leaderless cluster should not replay a backlog.
const MAX_HELD_PROPOSAL_AGE: Duration = Duration::from_secs(3);

pub enum RaftMsg {
    /// A client proposal; its waiter is already registered under `id`.
    Propose { id: u64, data: Vec<u8> },
    /// A linearizable read wants the current commit index confirmed.
    ReadIndex(oneshot::Sender<Result<u64, Error>>),
    /// A message from a peer.
    Step(Message),
    /// What the transport learned about a delivery.
    Transport(crate::transport::Report),
    /// Ask raft to hand leadership to this member.
    TransferLeader(u64),
    /// A graceful stop: if this member leads, hand leadership to the voter
    /// whose log matches most of ours; answers the chosen voter, or `None`
    /// when there is nobody to hand over to (not leader, single voter).
    HandOver(oneshot::Sender<Option<u64>>),
    /// A membership change; its waiter is registered under `id`. With
    /// `promote`, the learner must first be in sync with the leader.
    ProposeConfChange {
        id: u64,
        cc: ConfChangeV2,
        context: Vec<u8>,
        promote: Option<u64>,
    },
}

/// From the apply loop; unbounded but naturally small (one per apply batch).
pub enum CtlMsg {
    Applied(u64),
    /// The state machine durably covers everything up to here: the log may
    /// drop entries up to this index.
    CompactLog(u64),
    ApplyConfChange(
        ConfChangeV2,
        crossbeam_channel::Sender<Result<ConfState, String>>,
    ),
}

pub enum ApplyMsg {
    Entries(Vec<Entry>),
    Snapshot {
        metadata: SnapshotMetadata,
        path: PathBuf,
        done: crossbeam_channel::Sender<Result<(), String>>,
    },
}

/// This member's proposals that were still waiting when something happened
/// after which nothing may ever answer them:
/// - a snapshot from the leader replaced its state: each was committed
///   inside the snapshot (its entry will never be applied here), comes later
///   as a log entry, or was never committed;
/// - it stepped down as leader: entries it appended in its term may have
///   been overwritten by the new leader (a leader frozen by a GC pause or
///   SIGSTOP takes proposals before it hears of the new term);
/// - a new leader took over from one that had gone silent: a proposal
///   forwarded to the old one was lost with it, or is in the new leader's
///   log (see `old_leader_was_lost`).
///
/// A ReadIndex issued afterwards tells which index the current leader had
/// committed by then (it has committed an entry of its own term, so every
/// older entry that will ever commit is at or below it). Once this member
/// has applied that far, whatever still waits gets an answer at once
/// instead of the full request timeout. The answer is "outcome unknown"
/// (etcd's timeout due to leader failure): an entry inside a snapshot did
/// take effect, and nothing records which ones a snapshot held.
struct Suspects {
    ids: Vec<u64>,
    read: oneshot::Receiver<Result<u64, Error>>,
    /// The leader's commit index confirmed after the install.
    barrier: Option<u64>,
}

struct PendingRead {
    issued: Instant,
    first_issued: Instant,
    waiters: Vec<oneshot::Sender<Result<u64, Error>>>,
    /// Every context this read was issued under (the first, then one per
    /// retry): the answer to any of them answers it.
    ctxs: Vec<u64>,
}

pub struct NodeConfig {
    /// The live configuration; tick periods are read from it every turn.
    pub config: Arc<arc_swap::ArcSwap<cairn_config::ServerConfig>>,
    /// The election timeout in ticks raft was created with (fixed).
    pub election_ticks: usize,
    pub fast_forward_ticks: usize,
    pub lessor: Arc<Lessor>,
    /// How long a restarted member neither votes nor campaigns unless it
    /// hears from a leader first (zero: not at all). See `hold_votes_until`.
    pub hold_votes_for: Duration,
}

pub struct Node {
    raw: RawNode<RaftLog>,
    id: u64,
    inbox: Receiver<RaftMsg>,
    ctl: Receiver<CtlMsg>,
    apply_tx: Sender<ApplyMsg>,
    outbox: Box<dyn Outbox>,
    status: Arc<RaftStatus>,
    waiters: Arc<Waiters<Applied>>,
    snapshots: Arc<SnapshotRegistry>,
    cfg: NodeConfig,
    /// The time of the current turn: every decision in a turn sees the same
    /// clock, and the core simulation drives it (see `turn`).
    now: Instant,
    /// When raft ticks next.
    next_tick: Instant,
    /// Reads collected this turn, issued as one ReadIndex.
    new_reads: Vec<oneshot::Sender<Result<u64, Error>>>,
    /// Ordered maps, so the order reads are retried in (and with it the
    /// messages a turn sends) depends only on what happened, which the core
    /// simulation relies on to replay a seed.
    reads: BTreeMap<u64, PendingRead>,
    /// Context → the key of its read in `reads`.
    read_ctxs: BTreeMap<u64, u64>,
    next_read_ctx: u64,
    /// Highest index handed to the apply loop / reported applied by it.
    sent_to_apply: u64,
    applied: u64,
    no_leader_since: Option<Instant>,
    last_no_leader_log: Instant,
    leader: u64,
    /// Forwarded proposals that arrived during a leadership transfer,
    /// stepped again once it ends (as follower raft forwards them to the
    /// new leader; if the transfer was aborted, we append them ourselves).
    held_proposals: Vec<(Instant, Message)>,
    suspects: Option<Suspects>,
    /// Until when (at most) this restarted member keeps out of elections:
    /// no vote granted, no campaign, until a leader has been heard. If its
    /// journal lost a tail it had acknowledged (fjall drops a damaged tail
    /// silently), voting with the shorter log could elect a leader without
    /// a committed entry; the leader's first heartbeat shows the loss
    /// instead (see `check_heartbeat`). Bounded, so a cluster restarted
    /// whole still elects.
    hold_votes_until: Option<Instant>,
    /// When a message from `leader` was last stepped: how long the old
    /// leader had been silent when a new one appears (see `on_soft_state`).
    leader_heard_at: Instant,
    /// The highest term of an election this member saw called by a
    /// leadership transfer (a vote request with raft-rs's transfer context,
    /// or our own `MsgTimeoutNow`).
    transfer_term: u64,
    /// Proposals handed to raft whose waiters may still be registered
    /// (pruned every tick): the only ones a snapshot, a step-down or a
    /// lost leader can strand. Proposals still queued in the inbox are
    /// proposed afterwards and answered normally.
    in_flight: Vec<u64>,
    /// Entries this member appended as leader for its own waiters: index →
    /// (term, waiter). When a new leader's log overwrites one, that
    /// proposal can never commit, and its waiter is answered at once
    /// rather than after catching up (see `answer_overwritten`). Pruned as
    /// entries apply, so it holds at most the uncommitted tail.
    own_entries: BTreeMap<u64, (u64, u64)>,
}

/// Drops each append that a later one to the same peer in `msgs` repeats:
/// same position (`index`, `log_term`) and at least as many entries (the
/// later one also carries the newer commit index). raft-rs resends its
/// whole probe for every heartbeat response while a follower is in probe
/// state; a leader frozen and woken answers the heartbeats queued for it
/// in one burst (hundreds after a few seconds, most of them ReadIndex
/// rounds), and the new leader answered each with the same append, tens of
/// kilobytes apiece: megabytes that the append which catches the member up
/// then waited behind (about 100 ms in the stop-leader runs, Finding 14).
/// One copy says everything the others do.
fn drop_superseded_appends(msgs: &mut Vec<Message>) {
    // Almost every Ready holds at most one append per peer (a follower's
    // none): then nothing is rebuilt or allocated. The scan stops at the
    // first repeat, so it stays short when there are many.
    let is_append = |m: &Message| m.get_msg_type() == MessageType::MsgAppend;
    let repeated = msgs.iter().enumerate().any(|(i, m)| {
        is_append(m)
            && msgs
                .iter()
                .skip(i + 1)
                .any(|l| is_append(l) && l.to == m.to)
    });
    if !repeated {
        return;
    }
    let mut latest: BTreeMap<u64, (u64, u64, usize)> = BTreeMap::new();
    // Newest first, so each append meets the ones after it.
    let mut kept: Vec<Message> = Vec::with_capacity(msgs.len());
    for m in msgs.drain(..).rev() {
        if m.get_msg_type() == MessageType::MsgAppend {
            let here = (m.index, m.log_term, m.entries.len());
            match latest.get(&m.to) {
                Some(&(index, term, n)) if (index, term) == (here.0, here.1) && n >= here.2 => {
                    continue;
                }
                _ => {
                    latest.insert(m.to, here);
                }
            }
        }
        kept.push(m);
    }
    kept.reverse();
    *msgs = kept;
}

impl Node {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        raw: RawNode<RaftLog>,
        id: u64,
        inbox: Receiver<RaftMsg>,
        ctl: Receiver<CtlMsg>,
        apply_tx: Sender<ApplyMsg>,
        outbox: Box<dyn Outbox>,
        status: Arc<RaftStatus>,
        waiters: Arc<Waiters<Applied>>,
        snapshots: Arc<SnapshotRegistry>,
        cfg: NodeConfig,
        applied: u64,
    ) -> Node {
        let now = Instant::now();
        Node {
            raw,
            id,
            inbox,
            ctl,
            apply_tx,
            outbox,
            status,
            waiters,
            snapshots,
            cfg,
            now,
            next_tick: now,
            new_reads: Vec::new(),
            reads: BTreeMap::new(),
            read_ctxs: BTreeMap::new(),
            next_read_ctx: 1,
            sent_to_apply: applied,
            applied,
            no_leader_since: Some(now),
            last_no_leader_log: now,
            leader: 0,
            held_proposals: Vec::new(),
            suspects: None,
            in_flight: Vec::new(),
            own_entries: BTreeMap::new(),
            hold_votes_until: None,
            leader_heard_at: now,
            transfer_term: 0,
        }
    }

    /// Runs until every sender of the inbox is gone (shutdown) or storage
    /// fails, which stops the member: a raft node must not continue on a disk
    /// it cannot trust.
    pub fn run(mut self) {
        self.start(Instant::now());
        loop {
            let timeout = self.next_tick.saturating_duration_since(Instant::now());
            crossbeam_channel::select! {
                recv(self.inbox) -> m => match m {
                    Ok(m) => {
                        // What `handle` stamps (held proposals, the time
                        // the leader was lost) is stamped now.
                        self.now = Instant::now();
                        self.handle(m);
                    }
                    Err(_) => break,
                },
                recv(self.ctl) -> m => {
                    if let Ok(m) = m {
                        self.handle_ctl(m);
                    }
                },
                default(timeout) => {},
            }
            if let Err(e) = self.turn(Instant::now()) {
                tracing::error!(error = %e, "raft storage failed; stopping this member");
                std::process::exit(1);
            }
        }
        tracing::info!("raft loop stopped");
    }

    /// Sets the clock running at `now`: the first election may be brought
    /// forward, and a restarted member may be held out of elections.
    pub fn start(&mut self, now: Instant) {
        self.now = now;
        for _ in 0..self.cfg.fast_forward_ticks {
            self.raw.tick();
        }
        if !self.cfg.hold_votes_for.is_zero() {
            self.hold_votes_until = Some(now + self.cfg.hold_votes_for);
        }
        self.next_tick = now + self.tick_period();
    }

    /// When the node wants its next turn if no message arrives first.
    pub fn next_tick(&self) -> Instant {
        self.next_tick
    }

    /// One turn of the loop at time `now`: whatever the inbox and the apply
    /// loop sent, a tick if one is due, then the Ready. `run` calls it after
    /// waiting for a message or the tick; the core simulation calls its two
    /// halves with its own clock. A storage error means the member must stop.
    pub fn turn(&mut self, now: Instant) -> Result<(), crate::storage::Error> {
        self.take_input(now);
        self.make_progress()
    }

    /// The first half of a turn: messages, the apply loop's reports, a due
    /// tick.
    pub fn take_input(&mut self, now: Instant) {
        self.now = now;
        for _ in 0..MAX_DRAIN {
            match self.inbox.try_recv() {
                Ok(m) => self.handle(m),
                Err(_) => break,
            }
        }
        while let Ok(m) = self.ctl.try_recv() {
            self.handle_ctl(m);
        }
        if self.hold_votes_until.is_some_and(|t| now >= t) {
            tracing::info!("heard from no leader since restarting; taking part in elections again");
            self.hold_votes_until = None;
        }
        if now >= self.next_tick {
            // Held out of elections: a follower's election clock does
            // not run (leaders and candidates are never held).
            if self.hold_votes_until.is_none() || self.raw.raft.state != StateRole::Follower {
                self.raw.tick();
            }
            self.on_tick(now);
            let tick = self.tick_period();
            self.next_tick += tick;
            if self.next_tick < now {
                // We fell behind (a long fsync or snapshot install);
                // don't burst ticks, which would trigger elections.
                self.next_tick = now + tick;
            }
        }
    }

    /// The second half of a turn: held proposals and new reads go to raft,
    /// then the Ready is handled.
    pub fn make_progress(&mut self) -> Result<(), crate::storage::Error> {
        let now = self.now;
        if !self.held_proposals.is_empty() && !self.must_hold_proposals() {
            for (at, mut msg) in std::mem::take(&mut self.held_proposals) {
                if now.duration_since(at) > MAX_HELD_PROPOSAL_AGE {
                    continue;
                }
                // Passed on as ours: peers accept a message only from
                // the member whose stream carries it.
                msg.from = self.id;
                if let Err(e) = self.raw.step(msg) {
                    tracing::debug!(error = %e, "dropped a held proposal");
                }
            }
        }
        if !self.new_reads.is_empty() {
            let reads = std::mem::take(&mut self.new_reads);
            self.issue_read(reads, now);
        }
        self.process_ready()?;
        self.settle_suspects();
        Ok(())
    }

    /// Whether `make_progress` would install a snapshot from the leader,
    /// which blocks until the apply loop has loaded it (the core simulation
    /// runs such a turn beside the apply loop).
    pub fn installs_snapshot_next(&self) -> bool {
        self.raw.has_ready() && self.raw.snap().is_some_and(|s| s.get_metadata().index != 0)
    }

    /// raft-rs counts both timeouts in ticks fixed at creation (heartbeat =
    /// 1 tick, election = `election_ticks`). A leader only uses the heartbeat
    /// and a follower only the election timeout, so each role ticks at its
    /// own period: that lets both intervals change live with a reload.
    fn tick_period(&self) -> Duration {
        let cfg = self.cfg.config.load();
        let ms = if self.raw.raft.state == StateRole::Leader {
            cfg.heartbeat_interval_ms
        } else {
            cfg.election_timeout_ms / self.cfg.election_ticks.max(1) as u64
        };
        Duration::from_millis(ms.max(1))
    }

    fn handle(&mut self, m: RaftMsg) {
        match m {
            RaftMsg::Propose { id, data } => self.propose(id, data),
            RaftMsg::ReadIndex(tx) => self.new_reads.push(tx),
            RaftMsg::Step(msg)
                if msg.get_msg_type() == raft::prelude::MessageType::MsgPropose
                    && self.must_hold_proposals()
                    && self.held_proposals.len() < MAX_HELD_PROPOSALS =>
            {
                self.held_proposals.push((self.now, msg));
            }
            RaftMsg::Step(msg)
                if self.hold_votes_until.is_some()
                    && matches!(
                        msg.get_msg_type(),
                        MessageType::MsgRequestVote | MessageType::MsgRequestPreVote
                    ) =>
            {
                // Not a vote yet (see `hold_votes_until`); the candidate
                // asks again or wins without this member.
                tracing::debug!(from = %format!("{:x}", msg.from), "restarted member does not vote before it hears from a leader");
            }
            RaftMsg::Step(mut msg) => {
                if msg.get_msg_type() == MessageType::MsgPropose {
                    // A follower passes a proposal on to its leader as
                    // raft-rs received it, under the original sender's ID;
                    // peers accept a message only from the member whose
                    // stream carries it, so the leader would drop it (a
                    // write forwarded to a former leader was lost that way).
                    // Relayed, it is ours.
                    msg.from = self.id;
                }
                if msg.get_msg_type() == MessageType::MsgHeartbeat {
                    self.check_heartbeat(&msg);
                }
                if self.leader != raft::INVALID_ID && msg.from == self.leader {
                    self.leader_heard_at = self.now;
                }
                match msg.get_msg_type() {
                    MessageType::MsgRequestVote if msg.context == raft::CAMPAIGN_TRANSFER => {
                        self.transfer_term = self.transfer_term.max(msg.term);
                    }
                    MessageType::MsgTimeoutNow => {
                        self.transfer_term = self.transfer_term.max(self.raw.raft.term + 1);
                    }
                    _ => {}
                }
                let from_leader = matches!(
                    msg.get_msg_type(),
                    MessageType::MsgHeartbeat | MessageType::MsgAppend
                ) && msg.term >= self.raw.raft.term;
                if let Err(e) = self.raw.step(msg) {
                    tracing::debug!(error = %e, "dropped raft message");
                } else if from_leader && self.hold_votes_until.take().is_some() {
                    tracing::info!(
                        "heard from the leader since restarting; taking part in elections again"
                    );
                }
            }
            RaftMsg::Transport(Report::Unreachable(id)) => self.raw.report_unreachable(id),
            RaftMsg::Transport(Report::SnapshotSent { to, ok }) => {
                let status = if ok {
                    SnapshotStatus::Finish
                } else {
                    SnapshotStatus::Failure
                };
                self.raw.report_snapshot(to, status);
            }
            RaftMsg::TransferLeader(to) => self.raw.transfer_leader(to),
            RaftMsg::HandOver(reply) => {
                let target = self.most_caught_up_voter();
                if let Some(to) = target {
                    self.raw.transfer_leader(to);
                }
                let _ = reply.send(target);
            }
            RaftMsg::ProposeConfChange {
                id,
                cc,
                context,
                promote,
            } => {
                if let Err(e) = self.check_conf_change(promote) {
                    self.waiters.complete(id, Err(e));
                    return;
                }
                match self.raw.propose_conf_change(context, cc) {
                    Ok(()) => self.in_flight.push(id),
                    Err(raft::Error::ProposalDropped) => {
                        self.waiters.complete(id, Err(Error::NoLeader))
                    }
                    Err(e) => self.waiters.complete(
                        id,
                        Err(Error::Internal(format!("raft refused the change: {e}"))),
                    ),
                }
            }
        }
    }

    fn propose(&mut self, id: u64, data: Vec<u8>) {
        match self.raw.propose(vec![], data) {
            Ok(()) => {
                self.in_flight.push(id);
                // A leader appends at once: the entry is its last.
                if self.raw.raft.state == StateRole::Leader {
                    let r = &self.raw.raft;
                    self.own_entries
                        .insert(r.raft_log.last_index(), (r.term, id));
                }
            }
            Err(raft::Error::ProposalDropped) => self.waiters.complete(id, Err(Error::NoLeader)),
            Err(e) => self.waiters.complete(
                id,
                Err(Error::Internal(format!("raft refused proposal: {e}"))),
            ),
        }
    }

    /// Whether raft would drop a forwarded proposal now (see
    /// `MAX_HELD_PROPOSALS`).
    fn must_hold_proposals(&self) -> bool {
        let r = &self.raw.raft;
        (r.state == StateRole::Leader && r.lead_transferee.is_some())
            || r.leader_id == raft::INVALID_ID
    }

    /// The voter other than us with the highest matched index (ties: the
    /// one raft saw active most recently, then the lowest ID), if we lead.
    fn most_caught_up_voter(&self) -> Option<u64> {
        if self.raw.raft.state != StateRole::Leader {
            return None;
        }
        let prs = self.raw.raft.prs();
        let voters = prs.conf().to_conf_state().voters;
        voters
            .into_iter()
            .filter(|&id| id != self.id)
            .filter_map(|id| prs.get(id).map(|p| (id, p.matched, p.recent_active)))
            .max_by_key(|&(id, matched, active)| (matched, active, std::cmp::Reverse(id)))
            .map(|(id, _, _)| id)
    }

    /// Checks that only the leader can make: one change at a time, and a
    /// learner is promoted only once it has (nearly) caught up — etcd's rule
    /// is 90% of the leader's log.
    fn check_conf_change(&self, promote: Option<u64>) -> Result<(), Error> {
        if self.raw.raft.state != StateRole::Leader {
            return Err(Error::NotLeader);
        }
        if self.raw.raft.has_pending_conf() {
            // raft-rs would silently turn a second one into an empty entry.
            return Err(Error::TooManyRequests);
        }
        if let Some(learner) = promote {
            let prs = self.raw.raft.prs();
            let leader_match = prs.get(self.id).map_or(0, |p| p.matched);
            let Some(p) = prs.get(learner) else {
                return Err(Error::MemberNotFound);
            };
            if (p.matched as f64) < leader_match as f64 * 0.9 {
                return Err(Error::LearnerNotReady);
            }
        }
        Ok(())
    }

    /// A leader's heartbeat carries the commit index it knows this member
    /// holds (what this member acknowledged, capped by the commit). Beyond
    /// this member's last index, acknowledged entries are gone from its
    /// journal: raft-rs would panic, and voting on would risk committed
    /// writes. Stop with an error that says what happened and what to do.
    fn check_heartbeat(&self, m: &Message) {
        let last = self.raw.raft.raft_log.last_index();
        if m.term < self.raw.raft.term || m.commit <= last {
            return;
        }
        let msg = format!(
            "this member's raft log ends at index {last}, but leader {:x} counts it as holding \
             entries up to {}: entries it had persisted and acknowledged are gone (a damaged or \
             truncated journal). Refusing to continue: remove this member \
             (etcdctl member remove {:x}) and add it back with an empty data dir",
            m.from, m.commit, self.id
        );
        tracing::error!("{msg}");
        eprintln!("cairn: {msg}");
        std::process::exit(1);
    }

    fn handle_ctl(&mut self, m: CtlMsg) {
        match m {
            CtlMsg::Applied(idx) => {
                if idx > self.applied {
                    self.applied = idx;
                    self.raw.advance_apply_to(idx);
                    self.own_entries = self.own_entries.split_off(&(idx + 1));
                }
            }
            CtlMsg::CompactLog(idx) => {
                let idx = idx.min(self.applied);
                if let Err(e) = self.raw.mut_store().compact(idx) {
                    tracing::warn!(error = %e, index = idx, "raft log compaction failed");
                } else {
                    tracing::info!(index = idx, "compacted raft log");
                }
            }
            CtlMsg::ApplyConfChange(cc, reply) => {
                let result = self.raw.apply_conf_change(&cc).map_err(|e| e.to_string());
                if let Ok(cs) = &result {
                    self.raw.mut_store().set_conf_state(cs.clone());
                }
                let _ = reply.send(result);
            }
        }
    }

    fn issue_read(&mut self, waiters: Vec<oneshot::Sender<Result<u64, Error>>>, now: Instant) {
        let ctx = self.next_read_ctx;
        self.next_read_ctx += 1;
        self.raw.read_index(self.read_ctx(ctx));
        self.read_ctxs.insert(ctx, ctx);
        self.reads.insert(
            ctx,
            PendingRead {
                issued: now,
                first_issued: now,
                waiters,
                ctxs: vec![ctx],
            },
        );
    }

    /// Takes the read `key` out, with all its contexts.
    fn take_read(&mut self, key: u64) -> Option<PendingRead> {
        let r = self.reads.remove(&key)?;
        for c in &r.ctxs {
            self.read_ctxs.remove(c);
        }
        Some(r)
    }

    fn on_tick(&mut self, now: Instant) {
        self.publish_progress();
        let waiters = &self.waiters;
        self.in_flight.retain(|id| waiters.is_registered(*id));
        // raft-rs drops a ReadIndex silently when the leader has not yet
        // committed in its term or a follower knows no leader: re-issue
        // stale ones, and give up on those past the request timeout.
        let retry_after = self.tick_period() * 3;
        let stale: Vec<u64> = self
            .reads
            .iter()
            .filter(|(_, r)| now.duration_since(r.issued) >= retry_after)
            .map(|(ctx, _)| *ctx)
            .collect();
        // A retry gets a new context (the leader ignores one it already
        // has pending) but keeps the earlier ones: on a link slower than
        // `retry_after` the answer to an earlier one is still on its way,
        // and it answers the read as well.
        for key in stale {
            let Some(mut r) = self.take_read(key) else {
                continue;
            };
            r.waiters.retain(|w| !w.is_closed());
            if r.waiters.is_empty() {
                continue;
            }
            if now.duration_since(r.first_issued) >= self.cfg.config.load().request_timeout() {
                for w in r.waiters {
                    let _ = w.send(Err(Error::Timeout));
                }
                continue;
            }
            let new_ctx = self.next_read_ctx;
            self.next_read_ctx += 1;
            self.raw.read_index(self.read_ctx(new_ctx));
            r.issued = now;
            // Bounded by the request timeout over `retry_after`.
            r.ctxs.push(new_ctx);
            for c in &r.ctxs {
                self.read_ctxs.insert(*c, key);
            }
            self.reads.insert(key, r);
        }

        if self.leader == 0 {
            let since = *self.no_leader_since.get_or_insert(now);
            if now.duration_since(since) >= NO_LEADER_LOG_INTERVAL
                && now.duration_since(self.last_no_leader_log) >= NO_LEADER_LOG_INTERVAL
            {
                self.last_no_leader_log = now;
                let voters = self.raw.raft.prs().conf().voters().ids().len();
                let reachable = self.outbox.connected_count();
                tracing::warn!(
                    "waiting for peers: no leader for {}s; {} of {} other voting members reachable ({}), a quorum of {} is needed to elect a leader",
                    now.duration_since(since).as_secs(),
                    reachable,
                    voters.saturating_sub(1),
                    self.outbox.describe_peers(),
                    voters / 2 + 1,
                );
            }
        }
    }

    /// ReadIndex contexts must be unique across the cluster: the leader
    /// ignores a request whose context it already has pending, so two
    /// members counting from 1 would silently starve each other's reads.
    fn read_ctx(&self, ctx: u64) -> Vec<u8> {
        let mut v = Vec::with_capacity(16);
        v.extend_from_slice(&self.id.to_be_bytes());
        v.extend_from_slice(&ctx.to_be_bytes());
        v
    }

    /// Shares the leader's view of its followers with the API layer (strict
    /// reconfiguration checks, learner promotion, stats).
    fn publish_progress(&self) {
        let mut out = Vec::new();
        if self.raw.raft.state == StateRole::Leader {
            let learners = self.raw.raft.prs().conf().learners().clone();
            for (id, p) in self.raw.raft.prs().iter() {
                out.push(super::PeerProgress {
                    id: *id,
                    matched: p.matched,
                    recent_active: p.recent_active || *id == self.id,
                    is_learner: learners.contains(id),
                });
            }
        }
        *self.status.progress.lock() = out;
    }

    fn resolve_reads(&mut self, states: Vec<raft::ReadState>) {
        for rs in states {
            // Ours: this member's ID, then the context (see `read_ctx`).
            let Ok(ctx): Result<[u8; 16], _> = rs.request_ctx.as_slice().try_into() else {
                continue;
            };
            let (member, ctx) = ctx.split_at(8);
            if member != self.id.to_be_bytes() {
                continue;
            }
            let Ok(ctx) = <[u8; 8]>::try_from(ctx) else {
                continue;
            };
            let ctx = u64::from_be_bytes(ctx);
            let Some(&key) = self.read_ctxs.get(&ctx) else {
                continue;
            };
            if let Some(r) = self.take_read(key) {
                for w in r.waiters {
                    let _ = w.send(Ok(rs.index));
                }
            }
        }
    }

    fn on_soft_state(&mut self, leader: u64, role: StateRole) {
        let term = self.raw.raft.term;
        if leader != self.leader {
            self.status.record_leader_change(super::LeaderChange {
                unix_nanos: std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_nanos() as i64)
                    .unwrap_or(0),
                term,
                leader,
            });
            if leader == 0 {
                tracing::info!(
                    "raft.node: {:x} lost leader {:x} at term {}",
                    self.id,
                    self.leader,
                    term
                );
                self.no_leader_since = Some(self.now);
                METRICS.has_leader.set(0);
            } else {
                METRICS.has_leader.set(1);
                METRICS.leader_changes.inc();
                tracing::info!(
                    "raft.node: {:x} elected leader {:x} at term {}",
                    self.id,
                    leader,
                    term
                );
                self.no_leader_since = None;
                self.status.leader_changes.fetch_add(1, Ordering::Relaxed);
                // (A deposed leader's own suspects are taken below.)
                if self.leader != self.id && self.old_leader_was_lost(term) {
                    self.suspect_waiters();
                }
                self.leader_heard_at = self.now;
                let now = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_nanos() as i64)
                    .unwrap_or(0);
                self.status
                    .leader_since_unix_nanos
                    .store(now, Ordering::Release);
            }
            self.leader = leader;
            // Reads waiting on the old leader will never be answered.
            let pending: Vec<u64> = self.reads.keys().copied().collect();
            for key in pending {
                if let Some(r) = self.take_read(key) {
                    self.new_reads.extend(r.waiters);
                }
            }
        }
        self.status.leader.store(leader, Ordering::Release);
        let was_leader = self
            .status
            .is_leader
            .swap(role == StateRole::Leader, Ordering::AcqRel);
        if was_leader && role != StateRole::Leader {
            self.suspect_waiters();
        }
        METRICS.is_leader.set(i64::from(role == StateRole::Leader));
        if role != StateRole::Leader && self.cfg.lessor.is_primary() {
            // Only the leader tracks expiry; a new leader promotes once it
            // has applied its first entry (see the apply loop).
            self.cfg.lessor.demote();
        }
    }

    /// Whether a new leader (of `term`) took over from one that had gone
    /// silent: killed, frozen or cut off. Proposals this member forwarded to
    /// it may have been lost with it, and nobody would ever answer them (a
    /// client would wait the full request timeout). So they become suspects:
    /// answered "outcome unknown" once this member has applied what the new
    /// leader had committed, unless applied by then.
    ///
    /// Not after a leadership transfer, nor while the old leader was still
    /// heard recently: it is alive then and passes the proposals it holds
    /// (see `held_proposals`) to the new leader, maybe after the barrier
    /// read, and they are committed. Under a vote with check-quorum and
    /// pre-vote, a member followed a new leader only after hearing nothing
    /// from the old one for about an election timeout; half of it tells
    /// the two cases apart.
    fn old_leader_was_lost(&self, term: u64) -> bool {
        if self.transfer_term >= term {
            return false;
        }
        let election = Duration::from_millis(self.cfg.config.load().election_timeout_ms);
        self.now.saturating_duration_since(self.leader_heard_at) >= election / 2
    }

    fn process_ready(&mut self) -> Result<(), crate::storage::Error> {
        if !self.raw.has_ready() {
            return Ok(());
        }
        // Backpressure: if the apply loop is saturated, let raft wait (it
        // keeps everything in its unstable log) rather than queue unboundedly.
        if self.apply_tx.is_full() {
            return Ok(());
        }
        // A snapshot replaces the state machine: let the apply loop finish
        // what it has first, so nothing is applied on top of the wrong state.
        if self.raw.snap().is_some_and(|s| s.get_metadata().index != 0)
            && self.applied < self.sent_to_apply
        {
            return Ok(());
        }

        let mut rd = self.raw.ready();

        if let Some(ss) = rd.ss() {
            let (leader, role) = (ss.leader_id, ss.raft_state);
            self.on_soft_state(leader, role);
        }

        // The leader may send before persisting (raft thesis 10.2.1).
        self.send_out(rd.take_messages());

        let mut installed = None;
        if !rd.snapshot().is_empty() {
            let md = rd.snapshot().get_metadata().clone();
            installed = Some(md.index);
            self.install_snapshot(md)?;
        }

        let mut committed = rd.take_committed_entries();

        if !rd.entries().is_empty() {
            METRICS
                .raft_ready_entries
                .observe(rd.entries().len() as f64);
        }
        if let Some(first) = rd.entries().first() {
            self.answer_overwritten(first.index, rd.entries());
        }
        self.raw
            .mut_store()
            .persist(rd.entries(), rd.hs(), rd.must_sync())?;
        if let Some(hs) = rd.hs() {
            self.status.term.store(hs.term, Ordering::Release);
            self.status.commit.store(hs.commit, Ordering::Release);
            METRICS.proposals_committed.set(hs.commit as i64);
        }
        self.status
            .last_index
            .store(self.raw.store().last_index_value(), Ordering::Release);

        let states = rd.take_read_states();
        self.resolve_reads(states);

        // Votes and append responses only after the fsync above.
        self.send_out(rd.take_persisted_messages());

        let mut light = self.raw.advance_append(rd);
        // raft-rs's own applied index must reach an installed snapshot now,
        // not with the next applied entry: until then it points below the
        // snapshot, and an election started in between (this member's
        // timeout, or a leadership transfer to it) reads the entries after
        // it, which the snapshot compacted away, and raft-rs panics. Only
        // after `advance_append`: raft-rs accepts an applied index up to
        // what is persisted, and that counts the snapshot only from there.
        if let Some(index) = installed {
            self.raw.advance_apply_to(index);
        }
        if let Some(commit) = light.commit_index() {
            self.raw.mut_store().set_commit(commit)?;
            self.status.commit.store(commit, Ordering::Release);
            METRICS.proposals_committed.set(commit as i64);
        }
        self.send_out(light.take_messages());
        committed.extend(light.take_committed_entries());

        if let Some(last) = committed.last() {
            debug_assert!(
                committed
                    .iter()
                    .zip(committed.iter().skip(1))
                    .all(|(a, b)| b.index == a.index + 1)
                    && committed
                        .first()
                        .is_some_and(|f| f.index <= self.sent_to_apply + 1),
                "committed entries handed to the apply loop out of order or with a gap \
                 (sent up to {})",
                self.sent_to_apply
            );
            self.sent_to_apply = last.index;
            // Capacity was checked above and only this thread sends.
            if self.apply_tx.send(ApplyMsg::Entries(committed)).is_err() {
                return Err(crate::storage::Error::Raft("apply loop is gone".into()));
            }
        }
        Ok(())
    }

    /// `entries`, from index `first` on, replace this member's log from
    /// there (raft truncates at a conflict): its own entries at those
    /// indices under another term, or past the new end, are gone and can
    /// never commit. Their waiters are answered now. A deposed leader's
    /// clients used to wait until it had caught up with everything the new
    /// leader committed meanwhile (the suspects' barrier), 20-150 ms after
    /// a freeze, before they could try again. The answer is etcd's "outcome
    /// unknown" all the same: the client cannot tell this case apart.
    fn answer_overwritten(&mut self, first: u64, entries: &[Entry]) {
        let gone: Vec<u64> = self
            .own_entries
            .range(first..)
            .filter(|(index, (term, _))| {
                entries
                    .get((**index - first) as usize)
                    .is_none_or(|e| e.term != *term)
            })
            .map(|(index, _)| *index)
            .collect();
        let ids: Vec<u64> = gone
            .into_iter()
            .filter_map(|index| self.own_entries.remove(&index).map(|(_, id)| id))
            .collect();
        self.answer_unknown(ids, "whose entries a new leader overwrote");
    }

    /// Answers the proposals among `ids` still waiting with "outcome
    /// unknown" (etcd's `request timed out, possibly due to previous leader
    /// failure`), and says how many and `why` in one line.
    fn answer_unknown(&self, ids: Vec<u64>, why: &str) {
        let mut answered = 0usize;
        for id in ids {
            if self.waiters.is_registered(id) {
                self.waiters
                    .complete(id, Err(Error::TimeoutDueToLeaderFail));
                answered += 1;
            }
        }
        if answered > 0 {
            tracing::info!(
                proposals = answered,
                "answered proposals {why}: outcome unknown"
            );
        }
    }

    /// Hands raft's messages to the outbox, minus those no peer would take.
    /// A member that is not the leader relays a ReadIndex or a leadership
    /// transfer it received to its leader under the asker's ID. Peers accept
    /// a message only from the member whose stream carries it, and end the
    /// stream on one that is not, losing every message behind it: a leader
    /// frozen while followers asked it to read lost its own barrier read
    /// that way after it resumed, and its clients waited 200 ms more
    /// (Finding 11). The asker does not need the relay: it asks its leader
    /// again after three ticks, or at once when it learns of a new leader.
    fn send_out(&self, mut msgs: Vec<Message>) {
        msgs.retain(|m| {
            let ours = m.from == self.id;
            if !ours {
                tracing::debug!(
                    kind = ?m.get_msg_type(),
                    from = %format!("{:x}", m.from),
                    to = %format!("{:x}", m.to),
                    "not relaying another member's message"
                );
            }
            ours
        });
        drop_superseded_appends(&mut msgs);
        self.outbox.send(msgs);
    }

    fn install_snapshot(&mut self, md: SnapshotMetadata) -> Result<(), crate::storage::Error> {
        let path = self
            .snapshots
            .dir()
            .join(snapfile::file_name(md.term, md.index));
        tracing::info!(
            index = md.index,
            term = md.term,
            "applying snapshot from leader"
        );
        self.raw.mut_store().mark_installing(&path)?;
        let (done_tx, done_rx) = crossbeam_channel::bounded(1);
        self.apply_tx
            .send(ApplyMsg::Snapshot {
                metadata: md.clone(),
                path: path.clone(),
                done: done_tx,
            })
            .map_err(|_| crate::storage::Error::Raft("apply loop is gone".into()))?;
        match done_rx.recv() {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                return Err(crate::storage::Error::Raft(format!(
                    "snapshot install: {e}"
                )));
            }
            Err(_) => return Err(crate::storage::Error::Raft("apply loop is gone".into())),
        }
        self.raw.mut_store().apply_snapshot(&md)?;
        self.applied = md.index;
        // Entries the snapshot covers: their waiters are suspects now.
        self.own_entries = self.own_entries.split_off(&(md.index + 1));
        self.sent_to_apply = md.index;
        self.status.applied.store(md.index, Ordering::Release);
        if let Ok(meta) = std::fs::metadata(&path) {
            self.snapshots.adopt_received(snapfile::SnapshotInfo {
                index: md.index,
                term: md.term,
                conf_state: md.get_conf_state().clone(),
                path,
                size_bytes: meta.len(),
            });
        }
        tracing::info!(index = md.index, "applied snapshot");
        self.suspect_waiters();
        Ok(())
    }

    /// After a snapshot install or a step-down: remember who is waiting, and
    /// ask the leader how far it has committed (see `Suspects`).
    fn suspect_waiters(&mut self) {
        let waiters = &self.waiters;
        self.in_flight.retain(|id| waiters.is_registered(*id));
        let mut ids = self.in_flight.clone();
        if ids.is_empty() {
            return;
        }
        if let Some(old) = self.suspects.take() {
            ids.extend(old.ids);
            ids.sort_unstable();
            ids.dedup();
        }
        let (tx, rx) = oneshot::channel();
        self.new_reads.push(tx);
        self.suspects = Some(Suspects {
            ids,
            read: rx,
            barrier: None,
        });
    }

    /// Answers the suspects still waiting once this member applied what the
    /// leader had committed after the event: their entries were inside the
    /// snapshot, overwritten, or (forwarded ones still in flight) come later.
    fn settle_suspects(&mut self) {
        let Some(s) = self.suspects.as_mut() else {
            return;
        };
        if s.barrier.is_none() {
            match s.read.try_recv() {
                Ok(Ok(index)) => s.barrier = Some(index),
                Err(oneshot::error::TryRecvError::Empty) => return,
                // The read itself timed out: so do the waiters, on their own.
                Ok(Err(_)) | Err(oneshot::error::TryRecvError::Closed) => {
                    self.suspects = None;
                    return;
                }
            }
        }
        if s.barrier.is_some_and(|b| self.applied >= b) {
            let Some(s) = self.suspects.take() else {
                return;
            };
            self.answer_unknown(s.ids, "a snapshot or a new leader may have overtaken");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use raft::prelude::Entry;

    fn append(to: u64, index: u64, entries: usize, commit: u64) -> Message {
        let mut m = Message::default();
        m.set_msg_type(MessageType::MsgAppend);
        m.to = to;
        m.index = index;
        m.log_term = 3;
        m.commit = commit;
        m.entries = (0..entries)
            .map(|i| Entry {
                index: index + 1 + i as u64,
                term: 3,
                ..Default::default()
            })
            .collect::<Vec<_>>()
            .into();
        m
    }

    fn heartbeat(to: u64) -> Message {
        let mut m = Message::default();
        m.set_msg_type(MessageType::MsgHeartbeat);
        m.to = to;
        m
    }

    /// A probe resent for every heartbeat response in one turn goes out
    /// once, in its newest form; anything that differs still goes.
    #[test]
    fn repeated_probes_go_out_once() {
        let mut msgs = vec![
            append(2, 10, 5, 20),
            heartbeat(2),
            append(2, 10, 5, 21),
            append(3, 10, 5, 21),
            append(2, 10, 6, 22),
        ];
        drop_superseded_appends(&mut msgs);
        let left: Vec<(MessageType, u64, u64)> = msgs
            .iter()
            .map(|m| (m.get_msg_type(), m.to, m.commit))
            .collect();
        assert_eq!(
            left,
            vec![
                (MessageType::MsgHeartbeat, 2, 0),
                (MessageType::MsgAppend, 3, 21),
                (MessageType::MsgAppend, 2, 22),
            ]
        );

        // Another position, or fewer entries later on: both go.
        let mut msgs = vec![append(2, 10, 5, 20), append(2, 15, 5, 21)];
        drop_superseded_appends(&mut msgs);
        assert_eq!(msgs.len(), 2);
        let mut msgs = vec![append(2, 10, 5, 20), append(2, 10, 4, 21)];
        drop_superseded_appends(&mut msgs);
        assert_eq!(msgs.len(), 2);
    }
}
