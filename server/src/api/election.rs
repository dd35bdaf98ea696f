//! The Election service (v3electionpb), as etcd serves it: candidates hold
//! `<name>/<lease in hex>` keys; the one created first leads; its value is
//! the proclamation.

use super::check_leader;
use super::concurrency::{by_create, create_or_get, wait_deletes};
use crate::error::Error;
use crate::etcdserver::watch::WatchSpec;
use crate::etcdserver::{EtcdServer, RequestCtx};
use crate::pb::etcdserverpb::compare::{CompareResult, CompareTarget, TargetUnion};
use crate::pb::etcdserverpb::range_request::SortOrder;
use crate::pb::etcdserverpb::request_op::Request as Op;
use crate::pb::etcdserverpb::{
    Compare, DeleteRangeRequest, PutRequest, RequestOp, ResponseHeader, TxnRequest,
};
use crate::pb::v3electionpb::election_server::Election;
use crate::pb::v3electionpb::{
    CampaignRequest, CampaignResponse, LeaderKey, LeaderRequest, LeaderResponse, ProclaimRequest,
    ProclaimResponse, ResignRequest, ResignResponse,
};
use crate::state::prefix_end;
use crate::storage::mvcc::index::KeyRange;
use bytes::Bytes;
use std::sync::Arc;
use tokio::sync::mpsc;
use tonic::{Request, Response, Status};

pub struct ElectionService {
    pub srv: Arc<EtcdServer>,
}

const NOT_LEADER: &str = "election: not leader";
const NO_LEADER: &str = "election: no leader";
const MISSING_LEADER_KEY: &str = "\"leader\" field must be provided";

fn prefix_of(name: &[u8]) -> Vec<u8> {
    let mut p = name.to_vec();
    p.push(b'/');
    p
}

/// A txn guarded by "the leader key still has its creation revision".
async fn as_leader(
    srv: &EtcdServer,
    ctx: &RequestCtx,
    leader: &LeaderKey,
    op: Op,
) -> Result<Option<ResponseHeader>, Error> {
    let t = TxnRequest {
        compare: vec![Compare {
            result: CompareResult::Equal as i32,
            target: CompareTarget::Create as i32,
            key: leader.key.clone(),
            target_union: Some(TargetUnion::CreateRevision(leader.rev)),
            range_end: Bytes::new(),
        }],
        success: vec![RequestOp { request: Some(op) }],
        failure: vec![],
    };
    let resp = srv.txn(ctx, t).await?;
    Ok(resp.succeeded.then_some(resp.header.unwrap_or_default()))
}

type ObserveStream = tonic::codegen::BoxStream<LeaderResponse>;

#[tonic::async_trait]
impl Election for ElectionService {
    async fn campaign(
        &self,
        req: Request<CampaignRequest>,
    ) -> Result<Response<CampaignResponse>, Status> {
        check_leader(&self.srv, &req)?;
        let ctx = super::request_ctx(&self.srv, &req);
        let mut r = req.into_inner();
        r.lease = super::concurrency::session_lease(&self.srv, &ctx, r.lease).await?;
        let prefix = prefix_of(&r.name);
        let mut key = prefix.clone();
        key.extend_from_slice(format!("{:x}", r.lease).as_bytes());
        let key = Bytes::from(key);
        let (mine, header) =
            create_or_get(&self.srv, &ctx, key.clone(), r.value.clone(), r.lease).await?;
        let leader = LeaderKey {
            name: r.name.clone(),
            key: key.clone(),
            rev: mine.create_revision,
            lease: r.lease,
        };
        if mine.value != r.value {
            // Campaigning again with a new value proclaims it.
            let put = Op::RequestPut(PutRequest {
                key: key.clone(),
                value: r.value.clone(),
                lease: r.lease,
                ..Default::default()
            });
            if as_leader(&self.srv, &ctx, &leader, put).await?.is_none() {
                return Err(Status::unknown(NOT_LEADER));
            }
        }
        if let Err(e) = wait_deletes(&self.srv, &ctx, &prefix, mine.create_revision).await {
            let _ = self
                .srv
                .delete_range(
                    &ctx.until(self.srv.deadline()),
                    DeleteRangeRequest {
                        key,
                        ..Default::default()
                    },
                )
                .await;
            return Err(e.into());
        }
        let mut header = Some(header);
        self.srv.fill_header(&mut header);
        Ok(Response::new(CampaignResponse {
            header,
            leader: Some(leader),
        }))
    }

    async fn proclaim(
        &self,
        req: Request<ProclaimRequest>,
    ) -> Result<Response<ProclaimResponse>, Status> {
        check_leader(&self.srv, &req)?;
        let ctx = super::request_ctx(&self.srv, &req);
        let r = req.into_inner();
        let leader = r
            .leader
            .ok_or_else(|| Status::unknown(MISSING_LEADER_KEY))?;
        let put = Op::RequestPut(PutRequest {
            key: leader.key.clone(),
            value: r.value,
            lease: leader.lease,
            ..Default::default()
        });
        match as_leader(&self.srv, &ctx, &leader, put).await? {
            Some(h) => {
                let mut header = Some(h);
                self.srv.fill_header(&mut header);
                Ok(Response::new(ProclaimResponse { header }))
            }
            None => Err(Status::unknown(NOT_LEADER)),
        }
    }

    async fn leader(
        &self,
        req: Request<LeaderRequest>,
    ) -> Result<Response<LeaderResponse>, Status> {
        check_leader(&self.srv, &req)?;
        let ctx = super::request_ctx(&self.srv, &req);
        let prefix = prefix_of(&req.into_inner().name);
        let (first, header) = by_create(&self.srv, &ctx, &prefix, SortOrder::Ascend, 0).await?;
        match first {
            Some(kv) => Ok(Response::new(LeaderResponse {
                header: Some(header),
                kv: Some(kv),
            })),
            None => Err(Status::unknown(NO_LEADER)),
        }
    }

    async fn observe(
        &self,
        req: Request<LeaderRequest>,
    ) -> Result<Response<ObserveStream>, Status> {
        check_leader(&self.srv, &req)?;
        let ctx = super::request_ctx(&self.srv, &req);
        let prefix = prefix_of(&req.into_inner().name);
        let (out_tx, out_rx) = mpsc::channel(16);
        let srv = Arc::clone(&self.srv);
        tokio::spawn(async move {
            let mut last: Option<(Bytes, i64)> = None;
            loop {
                // Each look is a read of its own, with its own deadline.
                let look = ctx.until(srv.deadline());
                let (first, header) =
                    match by_create(&srv, &look, &prefix, SortOrder::Ascend, 0).await {
                        Ok(r) => r,
                        Err(e) => {
                            let _ = out_tx.send(Err(e.into())).await;
                            return;
                        }
                    };
                // Watch what can change the answer: the leader's key, or
                // (without a leader) anything under the prefix.
                let range = match &first {
                    Some(kv) => {
                        let now = (kv.key.clone(), kv.mod_revision);
                        if last.as_ref() != Some(&now) {
                            let resp = LeaderResponse {
                                header: Some(header),
                                kv: Some(kv.clone()),
                            };
                            if out_tx.send(Ok(resp)).await.is_err() {
                                return;
                            }
                            last = Some(now);
                        }
                        KeyRange::Single(kv.key.clone())
                    }
                    None => KeyRange::Range(Bytes::from(prefix.clone()), prefix_end(&prefix)),
                };
                // Only "something changed" matters; see wait_deleted.
                let (tx, mut rx) = crate::etcdserver::watch::hub_channel(16, 1 << 20);
                let handle = srv.hub().add(
                    WatchSpec {
                        range,
                        start_rev: header.revision + 1,
                        no_put: false,
                        no_delete: false,
                        prev_kv: false,
                        progress_notify: false,
                    },
                    0,
                    tx,
                );
                let changed = tokio::select! {
                    m = rx.recv() => m.is_some(),
                    _ = out_tx.closed() => false,
                };
                srv.hub().remove(handle);
                if !changed {
                    return;
                }
            }
        });
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(out_rx),
        )))
    }

    async fn resign(
        &self,
        req: Request<ResignRequest>,
    ) -> Result<Response<ResignResponse>, Status> {
        check_leader(&self.srv, &req)?;
        let ctx = super::request_ctx(&self.srv, &req);
        let r = req.into_inner();
        let leader = r
            .leader
            .ok_or_else(|| Status::unknown(MISSING_LEADER_KEY))?;
        let del = Op::RequestDeleteRange(DeleteRangeRequest {
            key: leader.key.clone(),
            ..Default::default()
        });
        let header = match as_leader(&self.srv, &ctx, &leader, del).await? {
            Some(h) => Some(h),
            // Not the leader (any more): nothing to give up, as etcd.
            None => Some(self.srv.header(self.srv.store().current_rev())),
        };
        let mut header = header;
        self.srv.fill_header(&mut header);
        Ok(Response::new(ResignResponse { header }))
    }
}
