//! Runtime membership changes (etcd's Cluster service): add a voter or a
//! learner, remove (the leader too), update peer URLs, promote a learner, and
//! move leadership.
//!
//! Changes run on the leader, which alone knows which members are connected
//! and how far a learner has caught up; a follower forwards the request over
//! the peer service. Adds, removes and promotions are raft configuration
//! changes (ConfChangeV2) whose context carries the member record, so every
//! member updates its member table and raft configuration at the same log
//! index; a peer URL update is an ordinary entry.

use super::forward::Leader;
use super::{EtcdServer, MAX_APPLY_LAG, RequestCtx};
use crate::error::Error;
use crate::ids;
use crate::pb::cairnpb::{MemberChange, MemberRecord, member_change::Kind};
use crate::pb::etcdserverpb::{
    Member, MemberAddRequest, MemberAddResponse, MemberPromoteRequest, MemberPromoteResponse,
    MemberRemoveRequest, MemberRemoveResponse, MemberUpdateRequest, MemberUpdateResponse,
    MoveLeaderRequest, MoveLeaderResponse,
};
use prost::Message as _;
use raft::prelude::{ConfChangeSingle, ConfChangeType, ConfChangeV2};
use std::sync::atomic::Ordering;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Heartbeat intervals a stopping leader keeps running after handing over,
/// so proposals forwarded to it meanwhile still reach the new leader.
const HANDOVER_GRACE_HEARTBEATS: u64 = 3;
/// etcd allows at most one learner.
const MAX_LEARNERS: usize = 1;
/// How long a peer's stream must have been up before it counts as healthy
/// for a membership change (etcd's `HealthInterval`).
const HEALTH_INTERVAL: Duration = Duration::from_secs(5);

fn api_member(m: &MemberRecord) -> Member {
    Member {
        id: m.id,
        name: m.name.clone(),
        peer_ur_ls: m.peer_urls.clone(),
        client_ur_ls: m.client_urls.clone(),
        is_learner: m.is_learner,
    }
}

/// Peer URLs must be absolute http, https, unix or unixs URLs with a host
/// and port (etcd's `types.NewURLs`); they are
/// stored as given (minus a trailing slash), as etcd stores them.
fn check_urls(urls: &[String]) -> Result<Vec<String>, Error> {
    if urls.is_empty() {
        return Err(Error::MemberBadUrls);
    }
    let mut out = Vec::new();
    for u in urls {
        let parsed = url::Url::parse(u).map_err(|_| Error::MemberBadUrls)?;
        if !matches!(parsed.scheme(), "http" | "https" | "unix" | "unixs")
            || parsed.host_str().is_none()
            || parsed.port_or_known_default().is_none()
        {
            return Err(Error::MemberBadUrls);
        }
        out.push(u.trim_end_matches('/').to_string());
    }
    Ok(out)
}

impl EtcdServer {
    fn members_api(&self) -> Vec<Member> {
        self.membership.api_members()
    }

    /// Proposes a configuration change and waits until this member applied it.
    async fn propose_member_change(
        &self,
        kind: Kind,
        member: MemberRecord,
        change: ConfChangeType,
        promote: Option<u64>,
    ) -> Result<(), Error> {
        let commit = self.status.commit.load(Ordering::Acquire);
        let applied = self.status.applied.load(Ordering::Acquire);
        if commit.saturating_sub(applied) > MAX_APPLY_LAG {
            return Err(Error::TooManyRequests);
        }
        let id = self.next_request_id();
        let context = MemberChange {
            request_id: id,
            kind: kind as i32,
            member: Some(member.clone()),
        }
        .encode_to_vec();
        let mut single = ConfChangeSingle::default();
        single.set_change_type(change);
        single.node_id = member.id;
        let mut cc = ConfChangeV2::default();
        cc.set_changes(vec![single].into());
        let deadline = tokio::time::Instant::now() + self.request_timeout();
        let mut backoff = Duration::from_millis(20);
        loop {
            let rx = self.waiters.register(id)?;
            let msg = super::node::RaftMsg::ProposeConfChange {
                id,
                cc: cc.clone(),
                context: context.clone(),
                promote,
            };
            if self.raft_tx.try_send(msg).is_err() {
                self.waiters.cancel(id);
                return Err(Error::TooManyRequests);
            }
            match tokio::time::timeout_at(deadline, rx).await {
                // A conf change answers like a member update.
                Ok(Ok(Ok(applied))) => {
                    return super::proposal::expect::<crate::pb::cairnpb::MemberRecord>(applied);
                }
                // Another change is still being applied, or this member
                // became leader and has not yet applied its log up to its
                // term (raft counts the unapplied tail as a pending
                // change): neither entered the log, so wait for it to
                // settle and offer again, until the deadline.
                Ok(Ok(Err(Error::TooManyRequests)))
                    if tokio::time::Instant::now() + backoff < deadline =>
                {
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_millis(200));
                }
                Ok(Ok(Err(e))) => return Err(e),
                Ok(Err(_)) => return Err(Error::Stopped),
                Err(_) => {
                    self.waiters.cancel(id);
                    return Err(Error::Timeout);
                }
            }
        }
    }

    fn strict(&self) -> bool {
        self.config.load().strict_reconfig_check
    }

    /// Whether the stream to `id` has been up for at least
    /// [`HEALTH_INTERVAL`]; this member always counts as connected.
    fn connected_long_enough(&self, id: u64) -> bool {
        id == self.member_id
            || self
                .transport
                .active_since(id)
                .is_some_and(|t| t.elapsed() >= HEALTH_INTERVAL)
    }

    /// Refuses a membership change that could cost the cluster its quorum,
    /// with etcd's rules (`--strict-reconfig-check`, on by default):
    /// "started" members are those that have published their name.
    fn may_add(&self, is_learner: bool) -> Result<(), Error> {
        if !self.strict() {
            return Ok(());
        }
        let voters = self.voters();
        if !is_learner {
            // Counting the new member, which has not started yet.
            let members = voters.len() + 1;
            let started = voters.iter().filter(|m| !m.name.is_empty()).count();
            // Growing a one-member cluster (e.g. one restored from a
            // snapshot) to two is always allowed.
            let growing_single = started == 1 && members == 2;
            if !growing_single && started < members / 2 + 1 {
                return Err(Error::NotEnoughStartedMembers);
            }
        }
        if !voters.iter().all(|m| self.connected_long_enough(m.id)) {
            return Err(Error::Unhealthy);
        }
        Ok(())
    }

    fn may_remove(&self, id: u64, is_learner: bool) -> Result<(), Error> {
        if !self.strict() || is_learner {
            return Ok(());
        }
        let voters = self.voters();
        let remaining: Vec<_> = voters.iter().filter(|m| m.id != id).collect();
        let started = remaining.iter().filter(|m| !m.name.is_empty()).count();
        if started < remaining.len() / 2 + 1 {
            return Err(Error::NotEnoughStartedMembers);
        }
        // A member that is down is not part of the working quorum, so
        // removing it cannot hurt.
        if id != self.member_id && self.transport.active_since(id).is_none() {
            return Ok(());
        }
        let connected = voters
            .iter()
            .filter(|m| self.connected_long_enough(m.id))
            .count();
        if connected.saturating_sub(1) < 1 + (voters.len() - 1) / 2 {
            return Err(Error::Unhealthy);
        }
        Ok(())
    }

    fn may_promote(&self, learner: &MemberRecord) -> Result<(), Error> {
        if !self.strict() {
            return Ok(());
        }
        let voters = self.voters();
        let members = voters.len() + 1;
        let started = voters.iter().filter(|m| !m.name.is_empty()).count()
            + usize::from(!learner.name.is_empty());
        if started < members / 2 + 1 {
            return Err(Error::NotEnoughStartedMembers);
        }
        Ok(())
    }

    fn voters(&self) -> Vec<MemberRecord> {
        self.membership
            .snapshot()
            .members
            .into_iter()
            .filter(|m| !m.is_learner)
            .collect()
    }

    pub async fn member_add(
        &self,
        ctx: &RequestCtx,
        r: MemberAddRequest,
    ) -> Result<MemberAddResponse, Error> {
        if !self.status.is_leader() {
            return self
                .forward(
                    ctx,
                    |mut c, req| Box::pin(async move { c.member_add(req).await }),
                    r,
                )
                .await;
        }
        let urls = check_urls(&r.peer_ur_ls)?;
        let current = self.membership.snapshot();
        if current
            .members
            .iter()
            .any(|m| m.peer_urls.iter().any(|u| urls.contains(u)))
        {
            return Err(Error::PeerUrlExists);
        }
        if r.is_learner && current.members.iter().filter(|m| m.is_learner).count() >= MAX_LEARNERS {
            return Err(Error::TooManyLearners);
        }
        self.may_add(r.is_learner)?;
        // etcd hashes the URLs with the time for members added at runtime,
        // so re-adding the same URLs later gives a new ID.
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let id = ids::member_id(&urls, &format!("{now}"));
        if current.members.iter().any(|m| m.id == id) {
            return Err(Error::MemberExists);
        }
        let record = MemberRecord {
            id,
            name: String::new(),
            peer_urls: urls,
            client_urls: Vec::new(),
            is_learner: r.is_learner,
        };
        let change = if r.is_learner {
            ConfChangeType::AddLearnerNode
        } else {
            ConfChangeType::AddNode
        };
        self.propose_member_change(Kind::Add, record.clone(), change, None)
            .await?;
        Ok(MemberAddResponse {
            header: Some(self.header(0)),
            member: Some(api_member(&record)),
            members: self.members_api(),
        })
    }

    pub async fn member_remove(
        &self,
        ctx: &RequestCtx,
        r: MemberRemoveRequest,
    ) -> Result<MemberRemoveResponse, Error> {
        if !self.status.is_leader() {
            // A member removing itself cannot read its own removal back:
            // it stops serving once it applies it.
            let sync_after = r.id != self.member_id;
            return self
                .forward_with(
                    ctx,
                    |mut c, req| Box::pin(async move { c.member_remove(req).await }),
                    r,
                    sync_after,
                )
                .await;
        }
        let Some(record) = self.membership.member(r.id) else {
            return Err(Error::MemberNotFound);
        };
        self.may_remove(r.id, record.is_learner)?;
        self.propose_member_change(Kind::Remove, record, ConfChangeType::RemoveNode, None)
            .await?;
        Ok(MemberRemoveResponse {
            header: Some(self.header(0)),
            members: self.members_api(),
        })
    }

    pub async fn member_update(
        &self,
        ctx: &RequestCtx,
        r: MemberUpdateRequest,
    ) -> Result<MemberUpdateResponse, Error> {
        if !self.status.is_leader() {
            return self
                .forward(
                    ctx,
                    |mut c, req| Box::pin(async move { c.member_update(req).await }),
                    r,
                )
                .await;
        }
        let urls = check_urls(&r.peer_ur_ls)?;
        let Some(mut record) = self.membership.member(r.id) else {
            return Err(Error::MemberNotFound);
        };
        let taken = self
            .membership
            .snapshot()
            .members
            .iter()
            .any(|m| m.id != r.id && m.peer_urls.iter().any(|u| urls.contains(u)));
        if taken {
            return Err(Error::PeerUrlExists);
        }
        record.peer_urls = urls;
        self.propose_internal(record).await?;
        Ok(MemberUpdateResponse {
            header: Some(self.header(0)),
            members: self.members_api(),
        })
    }

    pub async fn member_promote(
        &self,
        ctx: &RequestCtx,
        r: MemberPromoteRequest,
    ) -> Result<MemberPromoteResponse, Error> {
        if !self.status.is_leader() {
            return self
                .forward(
                    ctx,
                    |mut c, req| Box::pin(async move { c.member_promote(req).await }),
                    r,
                )
                .await;
        }
        let Some(record) = self.membership.member(r.id) else {
            return Err(Error::MemberNotFound);
        };
        if !record.is_learner {
            return Err(Error::MemberNotLearner);
        }
        self.may_promote(&record)?;
        self.propose_member_change(Kind::Promote, record, ConfChangeType::AddNode, Some(r.id))
            .await?;
        Ok(MemberPromoteResponse {
            header: Some(self.header(0)),
            members: self.members_api(),
        })
    }

    /// Hands leadership to `target` and waits (bounded) until it leads.
    pub async fn move_leader(
        &self,
        ctx: &RequestCtx,
        r: MoveLeaderRequest,
    ) -> Result<MoveLeaderResponse, Error> {
        if !self.status.is_leader() {
            return Err(Error::NotLeader);
        }
        let target = r.target_id;
        match self.membership.member(target) {
            Some(m) if !m.is_learner => {}
            _ => return Err(Error::BadLeaderTransferee),
        }
        if target != self.member_id {
            let _ = self
                .raft_tx
                .try_send(super::node::RaftMsg::TransferLeader(target));
            let deadline = ctx.deadline();
            while self.status.leader() != target {
                if tokio::time::Instant::now() >= deadline {
                    return Err(Error::Timeout);
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        // etcd 3.4 answers with an empty message: no header.
        Ok(MoveLeaderResponse { header: None })
    }

    /// A graceful stop's first step, as etcd's: a leader hands leadership to
    /// its most caught-up voter and waits (at most the request timeout) until
    /// someone else leads, so the cluster does not sit through an election
    /// timeout with its writes stalled. Returns whether leadership moved.
    pub async fn hand_over_leadership(&self) -> bool {
        if !self.status.is_leader() {
            return false;
        }
        let (tx, rx) = tokio::sync::oneshot::channel();
        if self
            .raft_tx
            .try_send(super::node::RaftMsg::HandOver(tx))
            .is_err()
        {
            tracing::warn!("leadership transfer skipped: the raft loop is busy");
            return false;
        }
        let target = match rx.await {
            Ok(Some(t)) => t,
            Ok(None) => {
                tracing::info!("skipped leadership transfer for single voting member cluster");
                return false;
            }
            Err(_) => return false,
        };
        let started = tokio::time::Instant::now();
        tracing::info!(
            "leadership transfer starting: {:x} -> {target:x}",
            self.member_id
        );
        let deadline = started + self.request_timeout();
        loop {
            let leader = self.status.leader();
            if leader != 0 && leader != self.member_id {
                tracing::info!(
                    "leadership transfer finished: new leader {leader:x} after {} ms",
                    started.elapsed().as_millis()
                );
                // The other members learn of the new leader from its next
                // heartbeat; until then they may still forward proposals
                // here, which we pass on only while we run.
                let heartbeat_ms = self.config.load().heartbeat_interval_ms;
                tokio::time::sleep(Duration::from_millis(
                    HANDOVER_GRACE_HEARTBEATS * heartbeat_ms,
                ))
                .await;
                return true;
            }
            if tokio::time::Instant::now() >= deadline {
                tracing::warn!(
                    "failed to transfer leadership to {target:x} within {} ms; stopping anyway",
                    started.elapsed().as_millis()
                );
                return false;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// Sends a membership request to the leader over the peer service, then
    /// waits until this member has applied it.
    async fn forward<Req, Resp, F>(
        &self,
        ctx: &RequestCtx,
        call: F,
        req: Req,
    ) -> Result<Resp, Error>
    where
        Req: Clone,
        F: Fn(
            crate::pb::cairnpb::peer_client::PeerClient<tonic::transport::Channel>,
            tonic::Request<Req>,
        ) -> std::pin::Pin<
            Box<
                dyn std::future::Future<Output = Result<tonic::Response<Resp>, tonic::Status>>
                    + Send,
            >,
        >,
    {
        self.forward_with(ctx, call, req, true).await
    }

    /// `forward`, optionally without waiting to apply the change locally.
    async fn forward_with<Req, Resp, F>(
        &self,
        ctx: &RequestCtx,
        call: F,
        req: Req,
        sync_after: bool,
    ) -> Result<Resp, Error>
    where
        Req: Clone,
        F: Fn(
            crate::pb::cairnpb::peer_client::PeerClient<tonic::transport::Channel>,
            tonic::Request<Req>,
        ) -> std::pin::Pin<
            Box<
                dyn std::future::Future<Output = Result<tonic::Response<Resp>, tonic::Status>>
                    + Send,
            >,
        >,
    {
        let deadline = ctx.deadline();
        // The leader checks the caller again with what the caller presented.
        let credential = ctx.credential();
        let call = &call;
        let resp = self
            .on_leader(deadline, |leader| {
                let req = req.clone();
                async move {
                    let Leader::Peer(to, client) = leader else {
                        // Leadership came here after the caller checked:
                        // its request was meant for another leader.
                        return Some(Err(Error::LeaderChanged));
                    };
                    let r = self.transport.request_for(to, req, credential);
                    match call(client, r).await {
                        Ok(resp) => Some(Ok(resp.into_inner())),
                        Err(s) if s.message() == Error::NotLeader.to_string() => None,
                        Err(s) => Some(Err(Error::from_status(&s))),
                    }
                }
            })
            .await?;
        // The leader applied the change; make sure this member has too, so
        // the caller's next read here (etcdctl lists members right after
        // adding one) sees it.
        if sync_after {
            self.linearizable_read_until(deadline).await?;
        }
        Ok(resp)
    }
}
