//! The Lock service (v3lockpb), as etcd serves it: a lock is held by the
//! key `<name>/<lease in hex>`; holders queue by creation revision; the
//! caller keeps its lease alive, and the lock goes with the lease.

use super::check_leader;
use super::concurrency::{by_create, create_or_get, wait_deletes};
use crate::etcdserver::{EtcdServer, RequestCtx};
use crate::pb::etcdserverpb::DeleteRangeRequest;
use crate::pb::etcdserverpb::range_request::SortOrder;
use crate::pb::v3lockpb::lock_server::Lock;
use crate::pb::v3lockpb::{LockRequest, LockResponse, UnlockRequest, UnlockResponse};
use bytes::Bytes;
use std::sync::Arc;
use tonic::{Request, Response, Status};

pub struct LockService {
    pub srv: Arc<EtcdServer>,
}

/// Deletes the ownership key if the Lock call ends without the lock (error,
/// or the client gave up and the call was dropped).
struct ReleaseOnDrop {
    srv: Arc<EtcdServer>,
    /// The Lock caller's: the key is theirs to delete.
    ctx: RequestCtx,
    key: Option<Bytes>,
}

impl Drop for ReleaseOnDrop {
    fn drop(&mut self) {
        if let Some(key) = self.key.take() {
            let srv = Arc::clone(&self.srv);
            let ctx = self.ctx.until(srv.deadline());
            tokio::spawn(async move {
                let _ = srv
                    .delete_range(
                        &ctx,
                        DeleteRangeRequest {
                            key,
                            ..Default::default()
                        },
                    )
                    .await;
            });
        }
    }
}

#[tonic::async_trait]
impl Lock for LockService {
    async fn lock(&self, req: Request<LockRequest>) -> Result<Response<LockResponse>, Status> {
        check_leader(&self.srv, &req)?;
        let ctx = super::request_ctx(&self.srv, &req);
        let mut r = req.into_inner();
        r.lease = super::concurrency::session_lease(&self.srv, &ctx, r.lease).await?;
        let mut prefix = r.name.to_vec();
        prefix.push(b'/');
        let mut key = prefix.clone();
        key.extend_from_slice(format!("{:x}", r.lease).as_bytes());
        let key = Bytes::from(key);
        let (mine, header) =
            create_or_get(&self.srv, &ctx, key.clone(), Bytes::new(), r.lease).await?;
        let mut guard = ReleaseOnDrop {
            srv: Arc::clone(&self.srv),
            ctx: ctx.clone(),
            key: Some(key.clone()),
        };
        let (owner, _) = by_create(&self.srv, &ctx, &prefix, SortOrder::Ascend, 0).await?;
        let header = if owner.is_none_or(|o| o.create_revision == mine.create_revision) {
            header
        } else {
            wait_deletes(&self.srv, &ctx, &prefix, mine.create_revision).await?
        };
        guard.key = None;
        let mut header = Some(header);
        self.srv.fill_header(&mut header);
        Ok(Response::new(LockResponse { header, key }))
    }

    async fn unlock(
        &self,
        req: Request<UnlockRequest>,
    ) -> Result<Response<UnlockResponse>, Status> {
        check_leader(&self.srv, &req)?;
        let ctx = super::request_ctx(&self.srv, &req);
        let resp = self
            .srv
            .delete_range(
                &ctx,
                DeleteRangeRequest {
                    key: req.into_inner().key,
                    ..Default::default()
                },
            )
            .await?;
        Ok(Response::new(UnlockResponse {
            header: resp.header,
        }))
    }
}
