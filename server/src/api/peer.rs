//! The receiving side of the peer transport, served on the peer URLs.

use crate::api::snapshot_slot::SnapshotSlot;
use crate::auth::{AuthInfo, Credential};
use crate::etcdserver::EtcdServer;
use crate::etcdserver::node::RaftMsg;
use crate::pb::cairnpb::peer_server::Peer;
use crate::pb::cairnpb::{
    LeaseRenewRequest, LeaseRenewResponse, RaftBatch, SnapshotAck, SnapshotChunk, StreamAck,
    snapshot_chunk::Chunk,
};
use crate::pb::etcdserverpb::{LeaseTimeToLiveRequest, LeaseTimeToLiveResponse};
use crate::state::lease::Renewal;
use crate::storage::snapfile::{self, SnapshotRegistry};
use crate::tls::PeerIdentity;
use crate::transport::{
    HDR_CALLER_CN, HDR_CALLER_TOKEN, HDR_CLUSTER_ID, HDR_FROM, HDR_SNAPSHOT_BYTES, HDR_TO,
};
use protobuf::Message as _;
use raft::prelude::{Message, MessageType};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use tonic::{Request, Response, Status, Streaming};

/// The smallest size limit for a received snapshot file. Larger stores get
/// twice their backend quota (a snapshot holds the state machine, which the
/// quota bounds, plus what is in flight).
const MIN_SNAPSHOT_LIMIT_BYTES: u64 = 4 * 1024 * 1024 * 1024;
/// Longest a snapshot stream may go without a chunk before the receive is
/// abandoned (a sender that died or froze without closing it).
const SNAPSHOT_IDLE_TIMEOUT: Duration = Duration::from_secs(10);

pub struct PeerService {
    pub self_id: u64,
    pub cluster_id: u64,
    pub raft_tx: crossbeam_channel::Sender<RaftMsg>,
    pub snapshots: Arc<SnapshotRegistry>,
    pub srv: Arc<EtcdServer>,
    /// Which snapshot is being received (one at a time; a newer stream
    /// supersedes an older one).
    pub receiving: Arc<SnapshotSlot>,
}

/// The snapshot's size in bytes, which the sender announces up front.
fn header_size(md: &tonic::metadata::MetadataMap) -> Result<u64, Status> {
    md.get(HDR_SNAPSHOT_BYTES)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| Status::invalid_argument(format!("missing or bad {HDR_SNAPSHOT_BYTES}")))
}

fn header_id<T>(req: &Request<T>, name: &str) -> Result<u64, Status> {
    let v = req
        .metadata()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .ok_or_else(|| Status::invalid_argument(format!("missing {name}")))?;
    u64::from_str_radix(v, 16).map_err(|_| Status::invalid_argument(format!("bad {name}")))
}

impl PeerService {
    /// The peer must belong to this cluster and address this member.
    fn check<T>(&self, req: &Request<T>) -> Result<u64, Status> {
        let cluster = header_id(req, HDR_CLUSTER_ID)?;
        if cluster != self.cluster_id {
            return Err(Status::failed_precondition(format!(
                "request cluster ID mismatch (got {cluster:x} want {:x})",
                self.cluster_id
            )));
        }
        let to = header_id(req, HDR_TO)?;
        if to != self.self_id {
            return Err(Status::failed_precondition(format!(
                "request member ID mismatch (got {to:x} want {:x})",
                self.self_id
            )));
        }
        let from = header_id(req, HDR_FROM)?;
        // Only current members (etcd's transport likewise refuses removed
        // ones): a removed member's messages must not disrupt the cluster.
        if !self.srv.membership().contains(from) {
            return Err(Status::permission_denied(format!(
                "{from:x} is not a member of this cluster"
            )));
        }
        Ok(from)
    }

    /// The client on whose behalf a follower forwarded this request, checked
    /// here exactly as if it had called this member: a token is resolved
    /// again; a certificate's common name is believed only from a peer that
    /// presented a verified certificate itself (peer TLS with client
    /// certificates), since anyone can send a header. Without either, the
    /// caller is anonymous — which auth refuses.
    async fn forwarded_caller<T>(
        &self,
        req: &Request<T>,
    ) -> Result<(Option<AuthInfo>, Option<Credential>), Status> {
        let md = req.metadata();
        if let Some(token) = md.get(HDR_CALLER_TOKEN).and_then(|v| v.to_str().ok()) {
            let info = crate::api::auth::resolve_token(&self.srv, token).await?;
            return Ok((Some(info), Some(Credential::Token(token.to_string()))));
        }
        if let Some(cn) = md.get(HDR_CALLER_CN).and_then(|v| v.to_str().ok()) {
            let peer_verified = req
                .extensions()
                .get::<PeerIdentity>()
                .is_some_and(|p| p.common_name.is_some());
            if !peer_verified {
                return Err(Status::permission_denied(
                    "a forwarded certificate identity needs peer TLS with client certificates \
                     (--peer-client-cert-auth)",
                ));
            }
            let info = AuthInfo {
                username: cn.to_string(),
                revision: self.srv.auth().store.read().revision(),
            };
            return Ok((Some(info), Some(Credential::CommonName(cn.to_string()))));
        }
        Ok((None, None))
    }

    fn decode(&self, from: u64, bytes: &[u8]) -> Result<Message, Status> {
        crate::raftwire::check_raft_message(bytes)
            .map_err(|e| Status::invalid_argument(format!("undecodable raft message: {e}")))?;
        let mut m = Message::default();
        m.merge_from_bytes(bytes)
            .map_err(|e| Status::invalid_argument(format!("undecodable raft message: {e}")))?;
        if m.from != from || m.to != self.self_id {
            return Err(Status::invalid_argument(
                "raft message addressed inconsistently",
            ));
        }
        Ok(m)
    }
}

/// A membership request forwarded by a follower: served here only while
/// this member leads (the caller retries on "not leader"), and only for a
/// caller who may change membership (root, when auth is on).
macro_rules! leader_only {
    ($self:ident, $req:ident, $method:ident) => {{
        $self.check(&$req)?;
        if !$self.srv.status().is_leader() {
            return Err(crate::error::Error::NotLeader.into());
        }
        let (info, credential) = $self.forwarded_caller(&$req).await?;
        let ctx = $self.srv.request_ctx(info, credential);
        $self.srv.check_admin(&ctx)?;
        let resp = $self.srv.$method(&ctx, $req.into_inner()).await?;
        Ok(Response::new(resp))
    }};
}

// async_trait turns the impl into one item, measured whole; each method
// is short.
#[allow(clippy::too_many_lines)]
#[tonic::async_trait]
impl Peer for PeerService {
    async fn member_add(
        &self,
        req: Request<crate::pb::etcdserverpb::MemberAddRequest>,
    ) -> Result<Response<crate::pb::etcdserverpb::MemberAddResponse>, Status> {
        leader_only!(self, req, member_add)
    }

    async fn member_remove(
        &self,
        req: Request<crate::pb::etcdserverpb::MemberRemoveRequest>,
    ) -> Result<Response<crate::pb::etcdserverpb::MemberRemoveResponse>, Status> {
        leader_only!(self, req, member_remove)
    }

    async fn member_update(
        &self,
        req: Request<crate::pb::etcdserverpb::MemberUpdateRequest>,
    ) -> Result<Response<crate::pb::etcdserverpb::MemberUpdateResponse>, Status> {
        leader_only!(self, req, member_update)
    }

    async fn member_promote(
        &self,
        req: Request<crate::pb::etcdserverpb::MemberPromoteRequest>,
    ) -> Result<Response<crate::pb::etcdserverpb::MemberPromoteResponse>, Status> {
        leader_only!(self, req, member_promote)
    }

    async fn move_leader(
        &self,
        req: Request<crate::pb::etcdserverpb::MoveLeaderRequest>,
    ) -> Result<Response<crate::pb::etcdserverpb::MoveLeaderResponse>, Status> {
        leader_only!(self, req, move_leader)
    }

    async fn probe(
        &self,
        req: Request<crate::pb::cairnpb::ProbeRequest>,
    ) -> Result<Response<crate::pb::cairnpb::ProbeResponse>, Status> {
        self.check(&req)?;
        let unix_nanos = crate::transport::prober::unix_nanos();
        let srv = &self.srv;
        let st = &srv.status();
        let status = crate::pb::cairnpb::ProbeStatus {
            term: st.term(),
            leader: st.leader(),
            applied_index: st.applied.load(std::sync::atomic::Ordering::Acquire),
            raft_index: st.last_index.load(std::sync::atomic::Ordering::Acquire),
            db_size: srv.db().disk_space() as i64,
            db_size_in_use: srv.db().state_machine_space() as i64,
            is_learner: srv.is_learner(),
            etcd_version: super::ETCD_COMPAT_VERSION.to_string(),
            cairn_version: env!("CARGO_PKG_VERSION").to_string(),
            plugins: Some(super::plugins::set_status(&srv.plugins().current())),
        };
        Ok(Response::new(crate::pb::cairnpb::ProbeResponse {
            unix_nanos,
            status: Some(status),
        }))
    }

    async fn hash_kv(
        &self,
        req: Request<crate::pb::etcdserverpb::HashKvRequest>,
    ) -> Result<Response<crate::pb::etcdserverpb::HashKvResponse>, Status> {
        self.check(&req)?;
        let rev = req.into_inner().revision;
        let store = Arc::clone(self.srv.store());
        let h = tokio::task::spawn_blocking(move || store.hash_kv(rev))
            .await
            .map_err(|e| Status::internal(format!("hash task failed: {e}")))?
            .map_err(crate::error::Error::from)?;
        Ok(Response::new(crate::pb::etcdserverpb::HashKvResponse {
            header: Some(self.srv.header(h.current)),
            hash: h.hash,
            compact_revision: h.compacted,
            hash_revision: h.revision,
        }))
    }

    async fn lease_renew(
        &self,
        req: Request<LeaseRenewRequest>,
    ) -> Result<Response<LeaseRenewResponse>, Status> {
        self.check(&req)?;
        let (info, credential) = self.forwarded_caller(&req).await?;
        let ctx = self.srv.request_ctx(info, credential);
        self.srv.check_authenticated(&ctx)?;
        let id = req.into_inner().id;
        if !self.srv.status().is_leader() || !self.srv.ensure_leadership(ctx.deadline()).await {
            return Ok(Response::new(LeaseRenewResponse {
                ttl: -1,
                leader: false,
            }));
        }
        let ttl = match self.srv.lessor().renew(id) {
            Renewal::Renewed(ttl) => ttl,
            Renewal::NotFound => {
                // The grant may be committed but not applied here yet.
                self.srv.linearizable_read_until(ctx.deadline()).await?;
                match self.srv.lessor().renew(id) {
                    Renewal::Renewed(ttl) => ttl,
                    _ => -1,
                }
            }
            // Leader, but not yet promoted: the caller retries.
            Renewal::NotPrimary => {
                return Ok(Response::new(LeaseRenewResponse {
                    ttl: -1,
                    leader: false,
                }));
            }
        };
        Ok(Response::new(LeaseRenewResponse { ttl, leader: true }))
    }

    async fn lease_time_to_live(
        &self,
        req: Request<LeaseTimeToLiveRequest>,
    ) -> Result<Response<LeaseTimeToLiveResponse>, Status> {
        self.check(&req)?;
        if !(self.srv.status().is_leader() && self.srv.lessor().is_primary()) {
            return Err(Status::failed_precondition("not the leader"));
        }
        let (info, credential) = self.forwarded_caller(&req).await?;
        let r = req.into_inner();
        // The follower checks READ on each attached key it passes on; here,
        // as on the client API, only that the caller is authenticated.
        let ctx = self.srv.request_ctx(info, credential);
        self.srv.check_authenticated(&ctx)?;
        let resp = self.srv.lease_time_to_live(&ctx, r).await?;
        Ok(Response::new(resp))
    }

    async fn stream(
        &self,
        req: Request<Streaming<RaftBatch>>,
    ) -> Result<Response<StreamAck>, Status> {
        let from = self.check(&req)?;
        let mut stream = req.into_inner();
        while let Some(batch) = stream.message().await? {
            // A member removed while its stream is open is cut off too.
            if !self.srv.membership().contains(from) {
                return Err(Status::permission_denied(format!(
                    "{from:x} is no longer a member of this cluster"
                )));
            }
            let received: usize = batch.messages.iter().map(|b| b.len()).sum();
            crate::metrics::METRICS
                .peer_received_bytes
                .with_label_values(&[&format!("{from:x}")])
                .inc_by(received as u64);
            for bytes in batch.messages {
                let m = self.decode(from, &bytes)?;
                if m.get_msg_type() == MessageType::MsgSnapshot {
                    // Snapshots must arrive with their data on the snapshot stream.
                    return Err(Status::invalid_argument("snapshot on the message stream"));
                }
                if m.get_msg_type() == MessageType::MsgAppend {
                    self.srv.transport().stats.append_received();
                }
                // Full inbox: drop, raft retransmits.
                let _ = self.raft_tx.try_send(RaftMsg::Step(m));
            }
        }
        Ok(Response::new(StreamAck {}))
    }

    async fn snapshot(
        &self,
        req: Request<Streaming<SnapshotChunk>>,
    ) -> Result<Response<SnapshotAck>, Status> {
        let from = self.check(&req)?;
        let req_metadata = req.metadata().clone();
        let mut stream = req.into_inner();
        let first = stream
            .message()
            .await?
            .ok_or_else(|| Status::invalid_argument("empty snapshot stream"))?;
        let Some(Chunk::Message(header)) = first.chunk else {
            return Err(Status::invalid_argument(
                "snapshot stream must start with its raft message",
            ));
        };
        let msg = self.decode(from, &header)?;
        if msg.get_msg_type() != MessageType::MsgSnapshot {
            return Err(Status::invalid_argument("not a snapshot message"));
        }
        let md = msg.get_snapshot().get_metadata().clone();
        // Nothing touches the disk until the sender has shown it is the
        // leader this member follows, sending a snapshot this member can
        // use, of an announced size within bounds.
        let leader = self.srv.status().leader();
        if from != leader {
            return Err(Status::failed_precondition(format!(
                "snapshot from {from:x}, but this member follows {leader:x}"
            )));
        }
        if msg.term < self.srv.status().term() {
            return Err(Status::failed_precondition("snapshot from an earlier term"));
        }
        let commit = self
            .srv
            .status()
            .commit
            .load(std::sync::atomic::Ordering::Acquire);
        if md.index <= commit {
            return Err(Status::failed_precondition(format!(
                "snapshot at index {} is not past this member's commit index {commit}",
                md.index
            )));
        }
        let announced = header_size(&req_metadata)?;
        let limit = MIN_SNAPSHOT_LIMIT_BYTES.max(2 * self.srv.quota_backend_bytes());
        if announced > limit {
            return Err(Status::resource_exhausted(format!(
                "snapshot of {announced} bytes is over this member's limit of {limit} bytes"
            )));
        }
        // One at a time, the newest: a stream still running from a member
        // that no longer leads, or an earlier attempt of this one, stops
        // (and removes its partial file).
        let mut claim = self.receiving.claim(from, msg.term);
        let dir = self.snapshots.dir().to_path_buf();
        let final_path = dir.join(snapfile::file_name(md.term, md.index));
        // Named per stream: a superseded stream may still be winding down,
        // and the new leader's snapshot can have the same term and index.
        let tmp_path = dir.join(format!(
            "recv-{}-{}.tmp",
            claim.id(),
            snapfile::file_name(md.term, md.index)
        ));
        let internal = |e: std::io::Error| Status::internal(format!("writing snapshot: {e}"));
        let mut file = tokio::fs::File::create(&tmp_path).await.map_err(internal)?;
        let started = std::time::Instant::now();
        let mut total: u64 = 0;
        // Checked as it arrives, so the file needs no second read before
        // raft sees it (raft will replace the state machine with it).
        let mut check = snapfile::Arriving::default();
        let received = async {
            loop {
                let next = tokio::select! {
                    next = tokio::time::timeout(SNAPSHOT_IDLE_TIMEOUT, stream.message()) => next,
                    _ = claim.superseded.wait_for(|s| *s) => {
                        return Err(Status::aborted(
                            "snapshot superseded by a newer one from the leader",
                        ));
                    }
                };
                let Ok(next) = next else {
                    return Err(Status::deadline_exceeded(format!(
                        "no snapshot data for {SNAPSHOT_IDLE_TIMEOUT:?}"
                    )));
                };
                let Some(chunk) = next? else {
                    break;
                };
                match chunk.chunk {
                    Some(Chunk::Data(d)) => {
                        total += d.len() as u64;
                        if total > announced {
                            return Err(Status::invalid_argument(format!(
                                "snapshot longer than the {announced} bytes announced"
                            )));
                        }
                        check.update(&d);
                        file.write_all(&d).await.map_err(internal)?;
                    }
                    _ => return Err(Status::invalid_argument("unexpected snapshot chunk")),
                }
            }
            if total != announced {
                return Err(Status::invalid_argument(format!(
                    "snapshot of {total} bytes, {announced} announced"
                )));
            }
            file.sync_all().await.map_err(internal)?;
            Ok(())
        }
        .await;
        if let Err(e) = received {
            let _ = tokio::fs::remove_file(&tmp_path).await;
            return Err(e);
        }
        drop(file);
        let receive_ms = started.elapsed().as_millis();
        if let Err(e) = check.finish(md.index, md.term) {
            let _ = tokio::fs::remove_file(&tmp_path).await;
            return Err(Status::data_loss(format!(
                "received snapshot is corrupt: {e}"
            )));
        }
        tokio::fs::rename(&tmp_path, &final_path)
            .await
            .map_err(internal)?;
        let _ = snapfile::sync_dir(&dir);
        tracing::info!(
            from = %format!("{from:x}"),
            index = md.index,
            size_bytes = total,
            receive_ms,
            "received snapshot from peer"
        );
        // The transfer was expensive: wait for room in the inbox rather than drop.
        let tx = self.raft_tx.clone();
        let stepped = tokio::task::spawn_blocking(move || {
            tx.send_timeout(RaftMsg::Step(msg), Duration::from_secs(10))
                .is_ok()
        })
        .await
        .unwrap_or(false);
        if !stepped {
            return Err(Status::unavailable("raft inbox is full"));
        }
        Ok(Response::new(SnapshotAck {}))
    }
}
