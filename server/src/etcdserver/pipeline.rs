//! The request pipeline: every KV write and read a client makes, from
//! the handler's call to its answer, in the order it happens.
//!
//! A write (`put`, `delete_range`, a `txn` that writes):
//! 1. **check**: etcd's request checks (`state::txn::check_*`);
//! 2. **quota**: refused with NOSPACE before it can grow a full store;
//! 3. **judge**: the policy plugins allow or deny it (`propose_write`);
//! 4. **stamp**: it carries the plugin-set version that judged it, and the
//!    apply loop refuses it if the set changed meanwhile (judged again);
//! 5. **propose**: an `InternalRequest` with the caller and the stamp goes
//!    into raft's inbox, a waiter registered under its ID (`propose_inner`);
//! 6. **wait**: for the apply loop's typed answer (`proposal::expect`),
//!    within the request's deadline.
//!
//! A read (`range`, a read-only `txn`): check → the caller's read
//! permission and the plugins' read checks → ReadIndex unless serializable
//! (`linearizable_read_until`) → the store → a last auth check.
//!
//! The deadline is set once, where the request enters (`RequestCtx`); no
//! stage restarts it. Server-internal proposals (lease expiry, alarms,
//! publishing) enter at step 5 through `propose_internal`.

use super::node;
use super::proposal::{self, Proposal};
use super::{Applied, EtcdServer, MAX_APPLY_LAG, RequestCtx};
use crate::error::Error;
use crate::pb::cairnpb::{InternalRequest, PluginStamp, RequestAuth, internal_request::Request};
use crate::pb::etcdserverpb::{
    DeleteRangeRequest, DeleteRangeResponse, PutRequest, PutResponse, RangeRequest, RangeResponse,
    TxnRequest, TxnResponse,
};
use crate::policy::ActiveSet;
use crate::policy::gate::MAX_JUDGEMENTS;
use crate::policy::metrics::PLUGIN_METRICS;
use crate::state::txn;
use prost::Message as _;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;
use tokio::sync::oneshot;

/// The KV operations, shared by the KV service, the gateway and the
/// lock/election services.
impl EtcdServer {
    pub async fn put(&self, ctx: &RequestCtx, r: PutRequest) -> Result<PutResponse, Error> {
        txn::check_put(&r)?;
        self.check_quota(r.key.len() + r.value.len()).await?;
        let mut resp = self.propose_write(ctx, r).await?;
        self.fill_header(&mut resp.header);
        Ok(resp)
    }

    pub async fn delete_range(
        &self,
        ctx: &RequestCtx,
        r: DeleteRangeRequest,
    ) -> Result<DeleteRangeResponse, Error> {
        txn::check_delete(&r)?;
        let mut resp = self.propose_write(ctx, r).await?;
        self.fill_header(&mut resp.header);
        Ok(resp)
    }

    pub async fn txn(&self, ctx: &RequestCtx, r: TxnRequest) -> Result<TxnResponse, Error> {
        txn::check_txn(&r, self.config.load().max_txn_ops as usize)?;
        if txn::is_txn_read_only(&r) {
            if !txn::is_txn_serializable(&r) {
                self.linearizable_read_until(ctx.deadline()).await?;
            }
            self.auth.store.read().check_txn(ctx.caller(), &r)?;
            self.plugin_check_txn_reads(ctx, &r).await?;
            let mut backend = txn::ReadBackend {
                store: &self.store,
                rev: self.store.current_rev(),
            };
            let mut resp = txn::txn(&mut backend, &r, self.store.compact_rev())?;
            self.check_unchanged(ctx)?;
            self.fill_header(&mut resp.header);
            return Ok(resp);
        }
        if txn_has_put(&r) {
            self.check_quota(prost::Message::encoded_len(&r)).await?;
        }
        let mut resp = self.propose_write(ctx, r).await?;
        self.fill_header(&mut resp.header);
        Ok(resp)
    }

    pub async fn range(&self, ctx: &RequestCtx, r: RangeRequest) -> Result<RangeResponse, Error> {
        txn::check_range(&r)?;
        if !r.serializable && self.is_learner() {
            return Err(Error::NotSupportedForLearner);
        }
        self.check_read(ctx, &r.key, &r.range_end)?;
        self.plugin_check_read(ctx, &r.key, &r.range_end).await?;
        if !r.serializable {
            self.linearizable_read_until(ctx.deadline()).await?;
        }
        let (res, rev) = self.store.range(&r)?;
        self.check_unchanged(ctx)?;
        Ok(RangeResponse {
            header: Some(self.header(rev)),
            kvs: res.kvs,
            more: res.more,
            count: res.count,
        })
    }

    /// etcd checks the quota before a request that can grow the store (the
    /// quota monitor raises the NOSPACE alarm itself), so a burst of writes
    /// does not overshoot it by more than what is in flight.
    pub async fn check_quota(&self, cost_bytes: usize) -> Result<(), Error> {
        let used = self.db.state_machine_space();
        if used.saturating_add(cost_bytes as u64) <= self.quota_backend_bytes() {
            return Ok(());
        }
        // Like etcd, raise the alarm before refusing, so `alarm list` shows
        // why writes fail as soon as the first one does.
        let ours = crate::pb::etcdserverpb::AlarmType::Nospace;
        if !self.db.alarms.has(self.member_id, ours) {
            let entry = crate::pb::cairnpb::AlarmEntry {
                request: Some(crate::pb::etcdserverpb::AlarmRequest {
                    action: crate::pb::etcdserverpb::alarm_request::AlarmAction::Activate as i32,
                    member_id: self.member_id,
                    alarm: ours as i32,
                }),
                reply_token: 0,
            };
            if let Err(e) = self.propose_internal(entry).await {
                tracing::warn!(error = %e, "raising the NOSPACE alarm failed");
            }
        }
        Err(Error::NoSpace)
    }
}

/// Judge, stamp, propose, wait; and the ReadIndex reads wait on.
impl EtcdServer {
    /// Proposes a client write (Put, DeleteRange, Txn) after the plugins
    /// allowed it, stamped with the set version that judged it; judges it
    /// again if the apply loop refused the stamp as stale.
    pub async fn propose_write<P: Proposal>(
        &self,
        ctx: &RequestCtx,
        p: P,
    ) -> Result<P::Response, Error> {
        let request = p.into_request();
        let deadline = ctx.deadline();
        let verdict = |set: Arc<ActiveSet>| {
            let request = &request;
            async move {
                self.plugins
                    .judge_request(&set, request, ctx.principal(), deadline.into_std())
                    .await
            }
        };
        let auth = Some(ctx.request_auth());
        let applied = self
            .propose_judged(&request, auth, deadline, verdict)
            .await?;
        proposal::expect::<P>(applied)
    }

    /// Steps 3 to 6 for any judged write (the v3 KV writes above, v2
    /// writes in `policy.rs`): `judge` asks the plugin set it is given for
    /// a verdict and the stamp to carry; the write is proposed with it and
    /// judged again if the apply loop refused the stamp as stale, or if a
    /// denial came from a set the cluster has already replaced.
    pub(super) async fn propose_judged<J, F>(
        &self,
        request: &Request,
        auth: Option<RequestAuth>,
        deadline: tokio::time::Instant,
        mut judge: J,
    ) -> Result<Applied, Error>
    where
        J: FnMut(Arc<ActiveSet>) -> F,
        F: Future<Output = Result<Option<PluginStamp>, Error>>,
    {
        let mut attempts = 0;
        loop {
            attempts += 1;
            let set = self.plugins.current();
            let version = set.version;
            // Judged with no set at all (version 0), a write can still go
            // stale: the first set may be applied before it is, and apply
            // then refuses it like any other. So the request is kept for a
            // retry either way (a clone of its `Bytes` and op lists).
            let stamp = match judge(set).await {
                Err(e @ Error::PluginDenied { .. }) => {
                    if attempts < MAX_JUDGEMENTS
                        && self.denied_by_stale_set(version, deadline).await
                    {
                        continue;
                    }
                    return Err(e);
                }
                other => other?,
            };
            match self
                .propose_as(request.clone(), auth.clone(), stamp, deadline)
                .await
            {
                Err(Error::PluginSetChanged)
                    if attempts < MAX_JUDGEMENTS && tokio::time::Instant::now() < deadline =>
                {
                    PLUGIN_METRICS.rejudged.inc();
                }
                other => return other,
            }
        }
    }

    /// Whether a denial by set `version` came from a set the cluster has
    /// already replaced. An allowed write is checked against the set in
    /// force when it applies; a denied one never gets that far, so a denial
    /// is confirmed against the cluster's current set: this member may not
    /// have applied a change (say, the plugin's removal) that the client
    /// just made through another member. Costs a ReadIndex, on denials only.
    async fn denied_by_stale_set(&self, version: u64, deadline: tokio::time::Instant) -> bool {
        let stale = version != 0
            && self.linearizable_read_until(deadline).await.is_ok()
            && self.plugins.version() != version;
        if stale {
            PLUGIN_METRICS.rejudged.inc();
        }
        stale
    }

    /// Proposes a client's request through raft and waits until this member
    /// applied it, returning the apply result. The entry carries the caller,
    /// which the apply loop checks.
    pub async fn propose<P: Proposal>(&self, ctx: &RequestCtx, p: P) -> Result<P::Response, Error> {
        let auth = Some(ctx.request_auth());
        let applied = self
            .propose_as(p.into_request(), auth, None, ctx.deadline())
            .await?;
        proposal::expect::<P>(applied)
    }

    /// Proposes a request the server makes on its own behalf (lease expiry,
    /// publishing itself, a login it verified): not subject to auth checks.
    pub async fn propose_internal<P: Proposal>(&self, p: P) -> Result<P::Response, Error> {
        let deadline = self.deadline();
        let applied = self
            .propose_as(p.into_request(), None, None, deadline)
            .await?;
        proposal::expect::<P>(applied)
    }

    /// A proposal only the leader of `term` may make (its lessor's revokes
    /// and checkpoints): applied only if raft appends it in that term, and
    /// answered [`Error::LeaderChanged`] everywhere otherwise.
    pub async fn propose_as_leader_of<P: Proposal>(
        &self,
        term: u64,
        p: P,
    ) -> Result<P::Response, Error> {
        assert!(term > 0, "a leader's term is at least 1");
        let applied = self
            .propose_counted(p.into_request(), None, None, term, self.deadline())
            .await?;
        proposal::expect::<P>(applied)
    }

    /// Proposes `request` with the caller `auth` (`None`: the server's
    /// own) and the plugin `stamp` that judged it, waiting until
    /// `deadline` at most.
    pub(crate) async fn propose_as(
        &self,
        request: Request,
        auth: Option<crate::pb::cairnpb::RequestAuth>,
        stamp: Option<crate::pb::cairnpb::PluginStamp>,
        deadline: tokio::time::Instant,
    ) -> Result<Applied, Error> {
        self.propose_counted(request, auth, stamp, 0, deadline)
            .await
    }

    /// [`Self::propose_inner`], counted in the proposal metrics.
    async fn propose_counted(
        &self,
        request: Request,
        auth: Option<crate::pb::cairnpb::RequestAuth>,
        stamp: Option<crate::pb::cairnpb::PluginStamp>,
        leader_term: u64,
        deadline: tokio::time::Instant,
    ) -> Result<Applied, Error> {
        crate::metrics::METRICS.proposals_pending.inc();
        let result = self
            .propose_inner(request, auth, stamp, leader_term, deadline)
            .await;
        crate::metrics::METRICS.proposals_pending.dec();
        // Failures of consensus, not requests refused by the state machine.
        if matches!(
            result,
            Err(Error::Timeout
                | Error::TimeoutDueToLeaderFail
                | Error::NoLeader
                | Error::Stopped
                | Error::TooManyRequests)
        ) {
            crate::metrics::METRICS.proposals_failed.inc();
        }
        result
    }

    async fn propose_inner(
        &self,
        request: Request,
        auth: Option<crate::pb::cairnpb::RequestAuth>,
        plugin_stamp: Option<crate::pb::cairnpb::PluginStamp>,
        leader_term: u64,
        deadline: tokio::time::Instant,
    ) -> Result<Applied, Error> {
        let commit = self.status.commit.load(Ordering::Acquire);
        let applied = self.status.applied.load(Ordering::Acquire);
        if commit.saturating_sub(applied) > MAX_APPLY_LAG {
            return Err(Error::TooManyRequests);
        }
        let leader_changes_at_start = self.status.leader_changes.load(Ordering::Acquire);
        let id = self.ids.next();
        let limit = crate::policy::proposal_limit(&request, self.max_request_bytes());
        let data = InternalRequest {
            id,
            request: Some(request),
            auth,
            plugin_stamp,
            leader_term,
        }
        .encode_to_vec();
        if data.len() > limit {
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
        self.linearizable_read_until(self.deadline()).await
    }

    /// [`Self::linearizable_read_notify`] within a request's deadline.
    pub async fn linearizable_read_until(
        &self,
        deadline: tokio::time::Instant,
    ) -> Result<(), Error> {
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

/// Whether a txn may write a value (in either branch, at any depth).
fn txn_has_put(t: &TxnRequest) -> bool {
    use crate::pb::etcdserverpb::request_op::Request as Op;
    t.success
        .iter()
        .chain(t.failure.iter())
        .any(|op| match &op.request {
            Some(Op::RequestPut(_)) => true,
            Some(Op::RequestTxn(inner)) => txn_has_put(inner),
            _ => false,
        })
}
