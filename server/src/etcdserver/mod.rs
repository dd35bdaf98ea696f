//! The server layer (etcd's "etcdserver"): one raft node, its apply loop, and
//! the operations the API layer calls — propose-and-wait for writes,
//! ReadIndex for linearizable reads.
//!
//! Threads: the raft loop (`node`) owns the `RawNode` and is the only place a
//! `Ready` is handled; the apply loop (`apply`) owns all state-machine writes.
//! API handlers run on tokio and talk to both through bounded channels.

pub mod apply;
pub mod auth;
pub mod cluster;
pub mod compactor;
pub mod corrupt;
pub mod ctx;
mod forward;
pub mod node;
mod pipeline;
pub mod policy;
pub mod proposal;

pub use ctx::RequestCtx;
use forward::Leader;
pub mod reload;
pub mod wait;
pub mod watch;

use crate::error::Error;
use crate::ids::RequestIdGenerator;
use crate::pb::cairnpb::LeaseRenewRequest;
use crate::pb::etcdserverpb::{
    CompactionResponse, DeleteRangeResponse, LeaseGrantResponse, LeaseRevokeResponse,
    LeaseTimeToLiveRequest, LeaseTimeToLiveResponse, PutResponse, ResponseHeader, TxnResponse,
};
use crate::state::lease::{Lessor, Renewal};
use crate::state::membership::Membership;
use crate::storage::Db;
use crate::storage::mvcc::Store;
use crate::storage::snapfile::SnapshotRegistry;
use crate::transport::Transport;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;
use tokio::sync::watch as tokio_watch;
use wait::Waiters;
use watch::WatchHub;

/// Most proposals a member keeps waiting at once before it answers
/// `too many requests`.
pub const MAX_PENDING_PROPOSALS: usize = 32 * 1024;
/// etcd refuses new requests when the apply loop lags the commit index by more.
pub const MAX_APPLY_LAG: u64 = 5000;

/// What the apply loop hands back to the client that proposed an entry.
#[derive(Debug)]
pub enum Applied {
    Put(PutResponse),
    DeleteRange(DeleteRangeResponse),
    Txn(TxnResponse),
    Compaction(CompactionResponse),
    LeaseGrant(LeaseGrantResponse),
    LeaseRevoke(LeaseRevokeResponse),
    /// Lease checkpoints were recorded (nobody waits on the answer).
    LeaseCheckpointed,
    Published,
    /// A membership change (or peer URL update) was applied.
    Member,
    /// A v2 request: its event (none for `sync`) or the store's refusal,
    /// with the entry's raft position for `X-Raft-Index`/`X-Raft-Term`.
    /// An alarm change: the alarms it touched (etcd's `AlarmResponse`).
    Alarms(Vec<crate::pb::etcdserverpb::AlarmMember>),
    /// A login: the token for the client and the auth revision it is at.
    Authenticated {
        token: String,
        revision: u64,
    },
    /// An auth-management write was applied.
    AuthDone,
    /// A plugin-set change was applied (see `crate::policy`).
    Plugins(crate::policy::SetOutcome),
    V2 {
        outcome: Result<Option<crate::v2::V2Event>, crate::v2::V2Error>,
        raft_index: u64,
        raft_term: u64,
    },
}

/// Raft's externally visible state, updated by the raft and apply loops and
/// read lock-free by everyone else.
#[derive(Debug, Default)]
pub struct RaftStatus {
    pub term: AtomicU64,
    pub leader: AtomicU64,
    pub commit: AtomicU64,
    pub applied: AtomicU64,
    pub last_index: AtomicU64,
    pub is_leader: AtomicBool,
    /// Leader changes observed since start.
    pub leader_changes: AtomicU64,
    /// When this member last saw a new leader (Unix nanoseconds).
    pub leader_since_unix_nanos: std::sync::atomic::AtomicI64,
    /// On the leader: how far each member's log matches and whether it was
    /// heard from recently (refreshed every tick; empty on followers).
    pub progress: parking_lot::Mutex<Vec<PeerProgress>>,
    /// The last leader changes this member saw, oldest first, at most
    /// [`LEADER_HISTORY_LEN`] (the operator console shows them).
    pub leader_history: parking_lot::Mutex<std::collections::VecDeque<LeaderChange>>,
}

/// How many leader changes [`RaftStatus::leader_history`] keeps.
pub const LEADER_HISTORY_LEN: usize = 16;

/// One leader change as this member saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LeaderChange {
    pub unix_nanos: i64,
    pub term: u64,
    /// The new leader; 0 when the leader was lost.
    pub leader: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeerProgress {
    pub id: u64,
    pub matched: u64,
    pub recent_active: bool,
    pub is_learner: bool,
}

impl RaftStatus {
    pub fn term(&self) -> u64 {
        self.term.load(Ordering::Acquire)
    }
    pub fn leader(&self) -> u64 {
        self.leader.load(Ordering::Acquire)
    }
    pub fn has_leader(&self) -> bool {
        self.leader() != 0
    }
    pub fn is_leader(&self) -> bool {
        self.is_leader.load(Ordering::Acquire)
    }
    /// Records a leader change, dropping the oldest past the bound.
    pub fn record_leader_change(&self, change: LeaderChange) {
        let mut h = self.leader_history.lock();
        if h.len() >= LEADER_HISTORY_LEN {
            h.pop_front();
        }
        h.push_back(change);
    }
}

pub struct EtcdServer {
    member_id: u64,
    cluster_id: u64,
    name: String,
    db: Db,
    store: Arc<Store>,
    membership: Arc<Membership>,
    status: Arc<RaftStatus>,
    snapshots: Arc<SnapshotRegistry>,
    /// The live configuration: swapped whole by a reload, read per request.
    config: Arc<arc_swap::ArcSwap<cairn_config::ServerConfig>>,
    lessor: Arc<Lessor>,
    hub: Arc<WatchHub>,
    transport: Arc<Transport>,
    /// etcd's v2 keyspace, separate from v3 (written only by the apply loop).
    v2: Arc<parking_lot::RwLock<crate::v2::V2Store>>,
    /// etcd's v3 auth: the replicated store and this member's tokens.
    auth: Arc<auth::AuthState>,
    /// Policy plugins: the replicated set and what judges writes with it.
    plugins: Arc<crate::policy::Enforcer>,
    raft_tx: crossbeam_channel::Sender<node::RaftMsg>,
    waiters: Arc<Waiters<Applied>>,
    applied_rx: tokio_watch::Receiver<u64>,
    ids: RequestIdGenerator,
    /// Set once this member has published itself and serves clients.
    ready: tokio_watch::Sender<bool>,
}

/// Read access for the layers above (`api/`, `boot/`): the fields stay
/// private so only this module decides how they change.
impl EtcdServer {
    pub(crate) fn member_id(&self) -> u64 {
        self.member_id
    }
    pub(crate) fn cluster_id(&self) -> u64 {
        self.cluster_id
    }
    pub(crate) fn name(&self) -> &str {
        &self.name
    }
    pub(crate) fn db(&self) -> &Db {
        &self.db
    }
    pub(crate) fn store(&self) -> &Arc<Store> {
        &self.store
    }
    pub(crate) fn membership(&self) -> &Arc<Membership> {
        &self.membership
    }
    pub(crate) fn status(&self) -> &Arc<RaftStatus> {
        &self.status
    }
    pub(crate) fn snapshots(&self) -> &Arc<SnapshotRegistry> {
        &self.snapshots
    }
    pub(crate) fn config(&self) -> &Arc<arc_swap::ArcSwap<cairn_config::ServerConfig>> {
        &self.config
    }
    pub(crate) fn lessor(&self) -> &Arc<Lessor> {
        &self.lessor
    }
    pub(crate) fn hub(&self) -> &Arc<WatchHub> {
        &self.hub
    }
    pub(crate) fn transport(&self) -> &Arc<Transport> {
        &self.transport
    }
    pub(crate) fn v2(&self) -> &Arc<parking_lot::RwLock<crate::v2::V2Store>> {
        &self.v2
    }
    pub(crate) fn auth(&self) -> &Arc<auth::AuthState> {
        &self.auth
    }
    pub(crate) fn plugins(&self) -> &Arc<crate::policy::Enforcer> {
        &self.plugins
    }
}

/// What a server is built from: its shared parts and the ends of the
/// channels to its raft loop (see `boot`).
pub struct ServerParts {
    pub member_id: u64,
    pub cluster_id: u64,
    pub name: String,
    pub db: Db,
    pub store: Arc<Store>,
    pub membership: Arc<Membership>,
    pub status: Arc<RaftStatus>,
    pub snapshots: Arc<SnapshotRegistry>,
    pub config: Arc<arc_swap::ArcSwap<cairn_config::ServerConfig>>,
    pub lessor: Arc<Lessor>,
    pub hub: Arc<WatchHub>,
    pub transport: Arc<Transport>,
    pub v2: Arc<parking_lot::RwLock<crate::v2::V2Store>>,
    pub auth: Arc<auth::AuthState>,
    pub plugins: Arc<crate::policy::Enforcer>,
    pub raft_tx: crossbeam_channel::Sender<node::RaftMsg>,
    pub waiters: Arc<Waiters<Applied>>,
    pub applied_rx: tokio_watch::Receiver<u64>,
}

impl EtcdServer {
    pub fn new(p: ServerParts) -> EtcdServer {
        let (ready, _) = tokio_watch::channel(false);
        EtcdServer {
            ids: RequestIdGenerator::new(p.member_id),
            member_id: p.member_id,
            cluster_id: p.cluster_id,
            name: p.name,
            db: p.db,
            store: p.store,
            membership: p.membership,
            status: p.status,
            snapshots: p.snapshots,
            config: p.config,
            lessor: p.lessor,
            hub: p.hub,
            transport: p.transport,
            v2: p.v2,
            auth: p.auth,
            plugins: p.plugins,
            raft_tx: p.raft_tx,
            waiters: p.waiters,
            applied_rx: p.applied_rx,
            ready,
        }
    }

    pub fn leader_since_unix_nanos(&self) -> i64 {
        self.status.leader_since_unix_nanos.load(Ordering::Acquire)
    }

    pub fn header(&self, revision: i64) -> ResponseHeader {
        ResponseHeader {
            cluster_id: self.cluster_id,
            member_id: self.member_id,
            revision,
            raft_term: self.status.term(),
        }
    }

    pub fn fill_header(&self, h: &mut Option<ResponseHeader>) {
        let revision = h.as_ref().map_or(0, |h| h.revision);
        let revision = if revision == 0 {
            self.store.current_rev()
        } else {
            revision
        };
        *h = Some(self.header(revision));
    }

    /// Whether this member is a (non-voting) learner right now.
    pub fn is_learner(&self) -> bool {
        self.membership
            .member(self.member_id)
            .is_some_and(|m| m.is_learner)
    }

    pub fn max_request_bytes(&self) -> usize {
        self.config.load().max_request_bytes as usize
    }

    pub fn request_timeout(&self) -> Duration {
        self.config.load().request_timeout()
    }

    pub fn quota_backend_bytes(&self) -> u64 {
        self.config.load().effective_quota_backend_bytes()
    }

    /// etcd's minimum lease TTL: 1.5 election timeouts, rounded up to
    /// seconds, so a lease cannot expire during a leader election.
    pub fn min_lease_ttl_secs(&self) -> i64 {
        let cfg = self.config.load();
        let ms = (3 * cfg.election_ticks() as u64 / 2) * cfg.heartbeat_interval_ms;
        ms.div_ceil(1000) as i64
    }

    pub fn election_timeout(&self) -> Duration {
        Duration::from_millis(self.config.load().election_timeout_ms)
    }

    pub fn ready_watch(&self) -> tokio_watch::Receiver<bool> {
        self.ready.subscribe()
    }

    pub fn set_ready(&self) {
        self.ready.send_replace(true);
    }

    /// The deadline of a request starting now. A client request gets one
    /// where it enters, in its [`RequestCtx`]: every stage after (judging,
    /// proposing, waiting) shares it, so no request waits longer than
    /// `--request-timeout` in all.
    pub fn deadline(&self) -> tokio::time::Instant {
        tokio::time::Instant::now() + self.request_timeout()
    }

    /// The context of a request entering now as `caller`.
    pub fn request_ctx(
        &self,
        caller: Option<crate::auth::AuthInfo>,
        credential: Option<crate::auth::Credential>,
    ) -> RequestCtx {
        RequestCtx::new(caller, credential, self.deadline())
    }

    /// A request ID unique across the cluster (see `ids`).
    pub fn next_request_id(&self) -> u64 {
        self.ids.next()
    }

    /// A new lease ID chosen by this member: positive and cluster-unique.
    pub fn new_lease_id(&self) -> i64 {
        loop {
            let id = (self.ids.next() & (i64::MAX as u64)) as i64;
            if id != 0 {
                return id;
            }
        }
    }

    /// Whether this member is still the leader, confirmed by a quorum (a
    /// ReadIndex round). A leader that was frozen (SIGSTOP, a long pause)
    /// still believes it leads when it wakes, and its lessor would renew a
    /// lease the real leader is about to expire; so renewals are answered
    /// only after this (as etcd does since 3.4.25).
    pub async fn ensure_leadership(&self, deadline: tokio::time::Instant) -> bool {
        self.linearizable_read_until(deadline).await.is_ok() && self.status.is_leader()
    }

    /// Keep-alive: renews on the leader (forwarding there if this member is
    /// a follower). Returns the lease's TTL, or 0 if it does not exist.
    pub async fn lease_renew(&self, ctx: &RequestCtx, id: i64) -> Result<i64, Error> {
        let deadline = ctx.deadline();
        self.on_leader(deadline, |leader| async move {
            match leader {
                Leader::Me => {
                    if !self.ensure_leadership(deadline).await {
                        return None;
                    }
                    match self.lessor.renew(id) {
                        Renewal::Renewed(ttl) => Some(Ok(ttl)),
                        Renewal::NotFound => {
                            // The grant may be committed but not yet applied
                            // here: catch up, then look once more.
                            if let Err(e) = self.linearizable_read_until(deadline).await {
                                return Some(Err(e));
                            }
                            match self.lessor.renew(id) {
                                Renewal::Renewed(ttl) => Some(Ok(ttl)),
                                Renewal::NotFound => Some(Ok(0)),
                                Renewal::NotPrimary => None,
                            }
                        }
                        // A new leader promotes once it applied its first entry.
                        Renewal::NotPrimary => None,
                    }
                }
                Leader::Peer(to, mut c) => {
                    let req =
                        self.transport
                            .request_for(to, LeaseRenewRequest { id }, ctx.credential());
                    match c.lease_renew(req).await {
                        Ok(resp) if resp.get_ref().leader => Some(Ok(resp.into_inner().ttl.max(0))),
                        Ok(_) => None,
                        Err(s) => Self::forwarded_failure(&s).map(Err),
                    }
                }
            }
        })
        .await
    }

    /// TimeToLive, answered by the leader (which alone knows expiry). TTL -1
    /// means the lease does not exist.
    pub async fn lease_time_to_live(
        &self,
        ctx: &RequestCtx,
        req: LeaseTimeToLiveRequest,
    ) -> Result<LeaseTimeToLiveResponse, Error> {
        let deadline = ctx.deadline();
        self.on_leader(deadline, |leader| {
            async move {
                match leader {
                    Leader::Me if !self.lessor.is_primary() => None,
                    Leader::Me => {
                        if let Err(e) = self.linearizable_read_until(deadline).await {
                            return Some(Err(e));
                        }
                        let header = Some(self.header(self.store.current_rev()));
                        Some(Ok(match self.lessor.time_to_live(req.id, req.keys) {
                            Some(i) => LeaseTimeToLiveResponse {
                                header,
                                id: req.id,
                                ttl: i.remaining_secs,
                                granted_ttl: i.granted_secs,
                                keys: i.keys,
                            },
                            None => LeaseTimeToLiveResponse {
                                header,
                                id: req.id,
                                ttl: -1,
                                ..Default::default()
                            },
                        }))
                    }
                    Leader::Peer(to, mut c) => {
                        let r = self.transport.request_for(to, req, ctx.credential());
                        let mut resp = match c.lease_time_to_live(r).await {
                            Ok(resp) => resp.into_inner(),
                            Err(s) => return Self::forwarded_failure(&s).map(Err),
                        };
                        // The header speaks for the member the client asked.
                        resp.header = Some(self.header(self.store.current_rev()));
                        Some(Ok(resp))
                    }
                }
            }
        })
        .await
    }
}
