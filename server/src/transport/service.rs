//! The receiving side of the peer transport, served on the peer URLs.

use super::{HDR_CLUSTER_ID, HDR_FROM, HDR_TO};
use crate::pb::cairnpb::peer_server::Peer;
use crate::pb::cairnpb::{
    LeaseRenewRequest, LeaseRenewResponse, RaftBatch, SnapshotAck, SnapshotChunk, StreamAck,
    snapshot_chunk::Chunk,
};
use crate::pb::etcdserverpb::{LeaseTimeToLiveRequest, LeaseTimeToLiveResponse};
use crate::server::EtcdServer;
use crate::server::lease::Renewal;
use crate::server::node::RaftMsg;
use crate::storage::snapfile::{self, SnapshotRegistry};
use protobuf::Message as _;
use raft::prelude::{Message, MessageType};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use tonic::{Request, Response, Status, Streaming};

/// Upper bound for one received snapshot file.
const MAX_SNAPSHOT_BYTES: u64 = 64 * 1024 * 1024 * 1024;

pub struct PeerService {
    pub self_id: u64,
    pub cluster_id: u64,
    pub raft_tx: crossbeam_channel::Sender<RaftMsg>,
    pub snapshots: Arc<SnapshotRegistry>,
    pub srv: Arc<EtcdServer>,
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
        header_id(req, HDR_FROM)
    }

    fn decode(&self, from: u64, bytes: &[u8]) -> Result<Message, Status> {
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
/// this member leads (the caller retries on "not leader").
macro_rules! leader_only {
    ($self:ident, $req:ident, $method:ident) => {{
        $self.check(&$req)?;
        if !$self.srv.status.is_leader() {
            return Err(crate::error::Error::NotLeader.into());
        }
        Ok(Response::new($self.srv.$method($req.into_inner()).await?))
    }};
}

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
        let unix_nanos = super::prober::reported_unix_nanos();
        Ok(Response::new(crate::pb::cairnpb::ProbeResponse {
            unix_nanos,
        }))
    }

    async fn lease_renew(
        &self,
        req: Request<LeaseRenewRequest>,
    ) -> Result<Response<LeaseRenewResponse>, Status> {
        self.check(&req)?;
        let id = req.into_inner().id;
        if !self.srv.status.is_leader() {
            return Ok(Response::new(LeaseRenewResponse {
                ttl: -1,
                leader: false,
            }));
        }
        let ttl = match self.srv.lessor.renew(id) {
            Renewal::Renewed(ttl) => ttl,
            Renewal::NotFound => {
                // The grant may be committed but not applied here yet.
                self.srv.linearizable_read_notify().await?;
                match self.srv.lessor.renew(id) {
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
        if !(self.srv.status.is_leader() && self.srv.lessor.is_primary()) {
            return Err(Status::failed_precondition("not the leader"));
        }
        let r = req.into_inner();
        let resp = self.srv.lease_time_to_live(r).await?;
        Ok(Response::new(resp))
    }

    async fn stream(
        &self,
        req: Request<Streaming<RaftBatch>>,
    ) -> Result<Response<StreamAck>, Status> {
        let from = self.check(&req)?;
        let mut stream = req.into_inner();
        while let Some(batch) = stream.message().await? {
            for bytes in batch.messages {
                let m = self.decode(from, &bytes)?;
                if m.get_msg_type() == MessageType::MsgSnapshot {
                    // Snapshots must arrive with their data on the snapshot stream.
                    return Err(Status::invalid_argument("snapshot on the message stream"));
                }
                if m.get_msg_type() == MessageType::MsgAppend {
                    self.srv.transport.stats.append_received();
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
        let dir = self.snapshots.dir().to_path_buf();
        let final_path = dir.join(snapfile::file_name(md.term, md.index));
        let tmp_path = dir.join(format!(
            "recv-{}.tmp",
            snapfile::file_name(md.term, md.index)
        ));
        let internal = |e: std::io::Error| Status::internal(format!("writing snapshot: {e}"));
        let mut file = tokio::fs::File::create(&tmp_path).await.map_err(internal)?;
        let mut total: u64 = 0;
        let received = async {
            while let Some(chunk) = stream.message().await? {
                match chunk.chunk {
                    Some(Chunk::Data(d)) => {
                        total += d.len() as u64;
                        if total > MAX_SNAPSHOT_BYTES {
                            return Err(Status::resource_exhausted("snapshot too large"));
                        }
                        file.write_all(&d).await.map_err(internal)?;
                    }
                    _ => return Err(Status::invalid_argument("unexpected snapshot chunk")),
                }
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
        // Verify before raft sees it: raft will replace the state machine
        // with this file.
        let verify_path = tmp_path.clone();
        let header = tokio::task::spawn_blocking(move || snapfile::verify(&verify_path))
            .await
            .map_err(|e| Status::internal(e.to_string()))?;
        let header = match header {
            Ok(h) => h,
            Err(e) => {
                let _ = tokio::fs::remove_file(&tmp_path).await;
                return Err(Status::data_loss(format!(
                    "received snapshot is corrupt: {e}"
                )));
            }
        };
        if header.index != md.index || header.term != md.term {
            let _ = tokio::fs::remove_file(&tmp_path).await;
            return Err(Status::invalid_argument(
                "snapshot file does not match its message",
            ));
        }
        tokio::fs::rename(&tmp_path, &final_path)
            .await
            .map_err(internal)?;
        let _ = snapfile::sync_dir(&dir);
        tracing::info!(
            from = %format!("{from:x}"),
            index = md.index,
            size_bytes = total,
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
