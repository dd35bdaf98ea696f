//! The server layer (etcd's "etcdserver"): one raft node, its apply loop, and
//! the operations the API layer calls — propose-and-wait for writes,
//! ReadIndex for linearizable reads.
//!
//! Threads: the raft loop (`node`) owns the `RawNode` and is the only place a
//! `Ready` is handled; the apply loop (`apply`) owns all state-machine writes.
//! API handlers run on tokio and talk to both through bounded channels.

pub mod apply;
pub mod bootstrap;
pub mod membership;
pub mod node;
pub mod txn;
pub mod wait;

use crate::error::Error;
use crate::ids::RequestIdGenerator;
use crate::pb::cairnpb::{InternalRequest, internal_request::Request};
use crate::pb::etcdserverpb::{
    CompactionResponse, DeleteRangeResponse, PutResponse, ResponseHeader, TxnResponse,
};
use crate::storage::Db;
use crate::storage::mvcc::Store;
use crate::storage::snapfile::SnapshotRegistry;
use membership::Membership;
use prost::Message as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;
use tokio::sync::{oneshot, watch};
use wait::Waiters;

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
    Published,
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
}

/// Limits the API layer enforces, from the configuration.
#[derive(Debug, Clone)]
pub struct Limits {
    pub max_request_bytes: usize,
    pub max_txn_ops: usize,
    pub request_timeout: Duration,
}

pub struct EtcdServer {
    pub member_id: u64,
    pub cluster_id: u64,
    pub name: String,
    pub db: Db,
    pub store: Arc<Store>,
    pub membership: Arc<Membership>,
    pub status: Arc<RaftStatus>,
    pub snapshots: Arc<SnapshotRegistry>,
    pub limits: Limits,
    raft_tx: crossbeam_channel::Sender<node::RaftMsg>,
    waiters: Arc<Waiters<Applied>>,
    applied_rx: watch::Receiver<u64>,
    ids: RequestIdGenerator,
    /// Set once this member has published itself and serves clients.
    ready: watch::Sender<bool>,
}

impl EtcdServer {
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

    pub fn ready_watch(&self) -> watch::Receiver<bool> {
        self.ready.subscribe()
    }

    pub fn set_ready(&self) {
        self.ready.send_replace(true);
    }

    /// Proposes a request through raft and waits until this member applied
    /// it, returning the apply result.
    pub async fn propose(&self, request: Request) -> Result<Applied, Error> {
        let deadline = tokio::time::Instant::now() + self.limits.request_timeout;
        let commit = self.status.commit.load(Ordering::Acquire);
        let applied = self.status.applied.load(Ordering::Acquire);
        if commit.saturating_sub(applied) > MAX_APPLY_LAG {
            return Err(Error::TooManyRequests);
        }
        let leader_changes_at_start = self.status.leader_changes.load(Ordering::Acquire);
        let id = self.ids.next();
        let data = InternalRequest {
            id,
            request: Some(request),
        }
        .encode_to_vec();
        if data.len() > self.limits.max_request_bytes {
            return Err(Error::RequestTooLarge);
        }
        // A proposal raft refuses outright (no leader yet, leadership in
        // transfer) never entered the log, so it is safe to offer again
        // until the deadline.
        let mut backoff = Duration::from_millis(20);
        loop {
            let rx = self.waiters.register(id)?;
            if self
                .raft_tx
                .try_send(node::RaftMsg::Propose {
                    id,
                    data: data.clone(),
                })
                .is_err()
            {
                self.waiters.cancel(id);
                return Err(Error::TooManyRequests);
            }
            match tokio::time::timeout_at(deadline, rx).await {
                Ok(Ok(Ok(applied))) => return Ok(applied),
                Ok(Ok(Err(Error::NoLeader))) => {
                    if tokio::time::Instant::now() + backoff >= deadline {
                        return Err(Error::NoLeader);
                    }
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_millis(200));
                }
                Ok(Ok(Err(e))) => return Err(e),
                Ok(Err(_)) => return Err(Error::Stopped),
                Err(_) => {
                    self.waiters.cancel(id);
                    // As etcd: say so when the leader failed meanwhile (the
                    // write may or may not have been committed).
                    let changed = self.status.leader_changes.load(Ordering::Acquire)
                        != leader_changes_at_start;
                    return Err(if changed || !self.status.has_leader() {
                        Error::TimeoutDueToLeaderFail
                    } else {
                        Error::Timeout
                    });
                }
            }
        }
    }

    /// Waits until this member has applied everything committed when the
    /// call started, confirmed by a quorum (raft ReadIndex). After it
    /// returns, a local read is linearizable.
    pub async fn linearizable_read_notify(&self) -> Result<(), Error> {
        let deadline = tokio::time::Instant::now() + self.limits.request_timeout;
        let (tx, rx) = oneshot::channel();
        if self.raft_tx.try_send(node::RaftMsg::ReadIndex(tx)).is_err() {
            return Err(Error::TooManyRequests);
        }
        let index = match tokio::time::timeout_at(deadline, rx).await {
            Ok(Ok(r)) => r?,
            Ok(Err(_)) => return Err(Error::Stopped),
            Err(_) => return Err(Error::Timeout),
        };
        let mut applied = self.applied_rx.clone();
        match tokio::time::timeout_at(deadline, applied.wait_for(|a| *a >= index)).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(_)) => Err(Error::Stopped),
            Err(_) => Err(Error::Timeout),
        }
    }
}
