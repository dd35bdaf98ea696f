//! The Lease service.

use super::check_leader;
use crate::error::Error;
use crate::etcdserver::{EtcdServer, RequestCtx};
use crate::pb::etcdserverpb::lease_server::Lease;
use crate::pb::etcdserverpb::{
    LeaseGrantRequest, LeaseGrantResponse, LeaseKeepAliveRequest, LeaseKeepAliveResponse,
    LeaseLeasesRequest, LeaseLeasesResponse, LeaseRevokeRequest, LeaseRevokeResponse, LeaseStatus,
    LeaseTimeToLiveRequest, LeaseTimeToLiveResponse,
};
use crate::state::lease::MAX_LEASE_TTL_SECS;
use std::sync::Arc;
use tokio::sync::mpsc;
use tonic::{Request, Response, Status, Streaming};

pub struct LeaseService {
    pub srv: Arc<EtcdServer>,
}

pub type KeepAliveStream = tonic::codegen::BoxStream<LeaseKeepAliveResponse>;

/// Serves one keep-alive stream (gRPC or the JSON gateway).
pub fn keep_alive_stream<S>(
    srv: Arc<EtcdServer>,
    ctx: RequestCtx,
    mut incoming: S,
) -> KeepAliveStream
where
    S: tokio_stream::Stream<Item = Result<LeaseKeepAliveRequest, Status>> + Send + Unpin + 'static,
{
    use tokio_stream::StreamExt;
    let (tx, rx) = mpsc::channel(16);
    // Renewals a follower forwards to the leader carry the caller along.
    tokio::spawn(async move {
        loop {
            let r = match incoming.next().await {
                Some(Ok(r)) => r,
                None | Some(Err(_)) => return,
            };
            // An unknown lease answers TTL 0 without an error (etcd); any
            // other failure ends the stream with its error.
            let resp = match srv.lease_renew(&ctx.until(srv.deadline()), r.id).await {
                Ok(ttl) => Ok(LeaseKeepAliveResponse {
                    header: Some(srv.header(srv.store().current_rev())),
                    id: r.id,
                    ttl,
                }),
                Err(e) => Err(Status::from(e)),
            };
            let failed = resp.is_err();
            if tx.send(resp).await.is_err() || failed {
                return;
            }
        }
    });
    Box::pin(tokio_stream::wrappers::ReceiverStream::new(rx))
}

#[tonic::async_trait]
impl Lease for LeaseService {
    async fn lease_grant(
        &self,
        req: Request<LeaseGrantRequest>,
    ) -> Result<Response<LeaseGrantResponse>, Status> {
        check_leader(&self.srv, &req)?;
        let ctx = super::request_ctx(&self.srv, &req);
        // (The apply loop checks the caller of a grant or revoke.)
        let mut r = req.into_inner();
        if r.ttl > MAX_LEASE_TTL_SECS {
            return Err(Error::LeaseTtlTooLarge.into());
        }
        // The proposer settles ID and TTL so every member applies the same.
        if r.id == 0 {
            r.id = self.srv.new_lease_id();
        }
        r.ttl = r.ttl.max(self.srv.min_lease_ttl_secs());
        self.srv.check_quota(0).await?;
        let mut resp = self.srv.propose(&ctx, r).await?;
        self.srv.fill_header(&mut resp.header);
        Ok(Response::new(resp))
    }

    async fn lease_revoke(
        &self,
        req: Request<LeaseRevokeRequest>,
    ) -> Result<Response<LeaseRevokeResponse>, Status> {
        check_leader(&self.srv, &req)?;
        let ctx = super::request_ctx(&self.srv, &req);
        let mut resp = self.srv.propose(&ctx, req.into_inner()).await?;
        self.srv.fill_header(&mut resp.header);
        Ok(Response::new(resp))
    }

    async fn lease_keep_alive(
        &self,
        req: Request<Streaming<LeaseKeepAliveRequest>>,
    ) -> Result<Response<KeepAliveStream>, Status> {
        check_leader(&self.srv, &req)?;
        let ctx = super::request_ctx(&self.srv, &req);
        self.srv.check_authenticated(&ctx)?;
        Ok(Response::new(keep_alive_stream(
            Arc::clone(&self.srv),
            ctx,
            req.into_inner(),
        )))
    }

    async fn lease_time_to_live(
        &self,
        req: Request<LeaseTimeToLiveRequest>,
    ) -> Result<Response<LeaseTimeToLiveResponse>, Status> {
        check_leader(&self.srv, &req)?;
        let ctx = super::request_ctx(&self.srv, &req);
        self.srv.check_authenticated(&ctx)?;
        let resp = self.srv.lease_time_to_live(&ctx, req.into_inner()).await?;
        // Listing the attached keys reveals them: READ on each is needed,
        // from RBAC and from the plugin authorizers alike, as a Range of the
        // key would be checked.
        for k in &resp.keys {
            self.srv.check_read(&ctx, k, b"")?;
            self.srv.plugin_check_read(&ctx, k, b"").await?;
        }
        Ok(Response::new(resp))
    }

    async fn lease_leases(
        &self,
        req: Request<LeaseLeasesRequest>,
    ) -> Result<Response<LeaseLeasesResponse>, Status> {
        check_leader(&self.srv, &req)?;
        let ctx = super::request_ctx(&self.srv, &req);
        self.srv.check_authenticated(&ctx)?;
        self.srv.linearizable_read_until(ctx.deadline()).await?;
        let leases = self
            .srv
            .lessor()
            .ids()
            .into_iter()
            .map(|id| LeaseStatus { id })
            .collect();
        Ok(Response::new(LeaseLeasesResponse {
            header: Some(self.srv.header(self.srv.store().current_rev())),
            leases,
        }))
    }
}
