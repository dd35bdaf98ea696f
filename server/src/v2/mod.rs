//! etcd 3.4's v2 API (`/v2/keys`, `/v2/members`, `/v2/machines`,
//! `/v2/stats/*`, `/v2/auth/*`) as a self-contained module.
//!
//! As in etcd 3.4, the v2 keyspace is separate from v3: a tree of
//! directories and files with its own "etcd index", TTLs, compare-and-swap,
//! in-order keys and long-poll watches over a 1000-event history.
//!
//! - [`store`]: [`V2Store`], a deterministic state machine. Writes arrive as
//!   [`V2Request`]s through raft; [`V2Store::apply`] returns the event and
//!   the changed node records to persist. No clocks: the proposer puts TTL
//!   expirations and its time into the request, and keys expire only when
//!   the leader proposes a [`V2Op::Sync`].
//! - [`http`]: the axum routes, served against a [`V2Backend`] that the
//!   server implements (replication, membership, stats).
//!
//! Integration (the server's side):
//! - `propose`: serialize the request (`serde_json::to_vec`), replicate it,
//!   and in the apply loop call `store.write().apply(&req)`; persist
//!   `outcome.changes` (key → record bytes, `None` = delete) and
//!   `outcome.index` in the same batch as the applied index; answer the
//!   proposer with the event (or the `V2Error`, which is a normal outcome,
//!   not a failure) and the entry's raft index and term.
//! - At startup and after installing a raft snapshot: `store.write().load(
//!   records, index)`; [`V2Store::records`] dumps the keyspace for a
//!   snapshot.
//! - On the leader, while [`V2Store::has_ttl_keys`]: every 500 ms (etcd's
//!   cadence) propose `V2Request::new(V2Op::Sync, "", now)`. Nothing else
//!   ever expires a key, so followers and restarts agree on when it went.
//! - Mount [`routes`] on the client listener. Not in here, because etcd
//!   serves them outside its v2 handlers: CORS (`OPTIONS`,
//!   `Access-Control-*`), `/health`, `/version`, and the 404
//!   for unknown paths.

pub mod auth;
pub mod error;
pub mod event;
pub mod http;
pub mod store;
pub mod watch;

#[cfg(test)]
mod http_tests;
#[cfg(test)]
mod store_tests;

pub use error::V2Error;
pub use event::{V2Action, V2Event, V2Node, format_go_duration, format_rfc3339_nanos};
pub use http::routes;
pub use store::{ApplyOutcome, NodeChange, NodeRecord, V2Op, V2Request, V2Store};
pub use watch::V2Watcher;

use serde::Serialize;
use std::collections::BTreeMap;

/// What `propose` hands back once this member applied the request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct V2Applied {
    /// `ApplyOutcome::event` (always present for the requests the HTTP
    /// layer proposes: writes and quorum reads).
    pub event: V2Event,
    /// Raft index and term to report in `X-Raft-Index` / `X-Raft-Term`
    /// (etcd reports its commit index and current term after the apply).
    pub raft_index: u64,
    pub raft_term: u64,
}

/// A cluster member as `/v2/members` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct V2Member {
    pub id: u64,
    /// Empty until the member has published itself (etcdctl then prints it
    /// as `[unstarted]`).
    pub name: String,
    pub peer_urls: Vec<String>,
    pub client_urls: Vec<String>,
}

/// Why a membership change was refused; the HTTP layer maps each to
/// etcd's status and message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MemberError {
    /// 404 `No such member: <id>`.
    #[error("membership: member not found")]
    NotFound,
    /// 410 `Member permanently removed: <id>`.
    #[error("membership: ID removed")]
    Removed,
    /// 409.
    #[error("membership: ID exists")]
    IdExists,
    /// 409.
    #[error("membership: peerURL exists")]
    PeerUrlExists,
    /// 400 with this message.
    #[error("{0}")]
    BadRequest(String),
    /// Anything else (no leader, timeout, ...): 500 `Internal Server
    /// Error`, as etcd.
    #[error("{0}")]
    Other(String),
}

fn is_zero_f64(v: &f64) -> bool {
    *v == 0.0
}

/// `/v2/stats/self` (etcd's `ServerStats`). Times are RFC 3339 with
/// nanoseconds ([`format_rfc3339_nanos`]), the uptime a Go duration string
/// ([`format_go_duration`]); ids are lower-case hex.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct V2SelfStats {
    pub name: String,
    pub id: String,
    /// "StateLeader", "StateFollower", "StateCandidate" or "StatePreCandidate".
    pub state: String,
    #[serde(rename = "startTime")]
    pub start_time: String,
    #[serde(rename = "leaderInfo")]
    pub leader_info: V2LeaderInfo,
    #[serde(rename = "recvAppendRequestCnt")]
    pub recv_append_request_cnt: u64,
    #[serde(rename = "recvPkgRate", skip_serializing_if = "is_zero_f64")]
    pub recv_pkg_rate: f64,
    #[serde(rename = "recvBandwidthRate", skip_serializing_if = "is_zero_f64")]
    pub recv_bandwidth_rate: f64,
    #[serde(rename = "sendAppendRequestCnt")]
    pub send_append_request_cnt: u64,
    #[serde(rename = "sendPkgRate", skip_serializing_if = "is_zero_f64")]
    pub send_pkg_rate: f64,
    #[serde(rename = "sendBandwidthRate", skip_serializing_if = "is_zero_f64")]
    pub send_bandwidth_rate: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct V2LeaderInfo {
    /// The leader's id (hex).
    pub leader: String,
    /// How long that member has been leader, as this member saw it.
    pub uptime: String,
    #[serde(rename = "startTime")]
    pub start_time: String,
}

/// `/v2/stats/leader` (etcd's `LeaderStats`), only on the leader.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct V2LeaderStats {
    pub leader: String,
    /// Keyed by follower id (hex); JSON object keys come out sorted, as Go's.
    pub followers: BTreeMap<String, V2FollowerStats>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct V2FollowerStats {
    pub latency: V2LatencyStats,
    pub counts: V2CountsStats,
}

/// Append round-trip latencies in milliseconds.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct V2LatencyStats {
    pub current: f64,
    pub average: f64,
    #[serde(rename = "standardDeviation")]
    pub standard_deviation: f64,
    pub minimum: f64,
    pub maximum: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct V2CountsStats {
    pub fail: u64,
    pub success: u64,
}

/// What the v2 HTTP layer needs from the server.
#[async_trait::async_trait]
pub trait V2Backend: Send + Sync + 'static {
    /// Replicates a write or a quorum read (`V2Op::QGet`) through raft and
    /// returns once this member applied it. A store refusal (e.g. 100 Key
    /// not found) comes back as its `V2Error`; failures to replicate as
    /// `V2Error::raft_internal(<etcd's error text>)`.
    async fn propose(&self, req: V2Request) -> Result<V2Applied, V2Error>;

    /// The local store, for serializable reads, watches and stats. Handlers
    /// hold the lock only for the call itself, never across an await.
    fn store(&self) -> &parking_lot::RwLock<V2Store>;

    /// Current (commit index, term) for `X-Raft-Index` / `X-Raft-Term` on
    /// reads and watches.
    fn raft_index_term(&self) -> (u64, u64);

    fn cluster_id(&self) -> u64;

    /// This member's clock, unix nanoseconds: TTL expirations of the
    /// requests it proposes, and the `ttl` shown by local reads.
    fn now_unix_nanos(&self) -> i64;

    /// All members (any order; the HTTP layer sorts them by id).
    fn members(&self) -> Vec<V2Member>;

    /// The leader as this member knows it; `None` during an election.
    fn leader(&self) -> Option<V2Member>;

    /// Adds a member with these peer URLs (already validated: http(s) or
    /// unix(s), `host:port`, no path). Returns the new member (no name, no
    /// client URLs yet).
    async fn add_member(&self, peer_urls: Vec<String>) -> Result<V2Member, MemberError>;

    async fn remove_member(&self, id: u64) -> Result<(), MemberError>;

    async fn update_member(&self, id: u64, peer_urls: Vec<String>) -> Result<(), MemberError>;

    fn self_stats(&self) -> V2SelfStats;

    /// `None` unless this member is the leader.
    fn leader_stats(&self) -> Option<V2LeaderStats>;

    /// The keyspace `/v2/keys` serves when it is not the v2 store: with
    /// `--experimental-enable-v2v3` it is v3 keys under a prefix. `None`
    /// (the default): the v2 store, through `propose` and `store`.
    fn v3_keys(&self) -> Option<&dyn V2Keys> {
        None
    }
}

/// `/v2/keys` over another keyspace (etcd's v2v3 emulation): the same
/// requests the v2 store answers, with the same events and errors. The
/// v2 auth API and membership stay where they are.
#[async_trait::async_trait]
pub trait V2Keys: Send + Sync + 'static {
    /// A read (`quorum` or not; both are linearizable here). `ext`: the
    /// HTTP request's extensions, where the server's layers say who is
    /// calling (here and below).
    async fn get(
        &self,
        ext: &::http::Extensions,
        path: &str,
        recursive: bool,
        sorted: bool,
    ) -> Result<V2Event, V2Error>;

    /// A write: every [`V2Op`] except `QGet` and `Sync`. A TTL is refused.
    async fn write(&self, ext: &::http::Extensions, req: V2Request) -> Result<V2Event, V2Error>;

    /// A long-poll watch from `wait_index` (0: from now).
    async fn watch(
        &self,
        ext: &::http::Extensions,
        path: &str,
        recursive: bool,
        stream: bool,
        wait_index: u64,
    ) -> Result<V2KeysWatch, V2Error>;

    /// The current index, for errors that carry one.
    fn index(&self) -> u64;
}

/// A watch on a [`V2Keys`]: its start index (`X-Etcd-Index`) and its
/// events, which end when the watch does (dropping it unregisters it).
pub struct V2KeysWatch {
    pub start_index: u64,
    pub events: futures::stream::BoxStream<'static, V2Event>,
}
