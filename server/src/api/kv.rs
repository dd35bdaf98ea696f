//! The KV service.

use super::{check_leader, check_size};
use crate::error::Error;
use crate::etcdserver::EtcdServer;
use crate::pb::etcdserverpb::kv_server::Kv;
use crate::pb::etcdserverpb::{
    CompactionRequest, CompactionResponse, DeleteRangeRequest, DeleteRangeResponse, PutRequest,
    PutResponse, RangeRequest, RangeResponse, TxnRequest, TxnResponse,
};
use std::sync::Arc;
use std::time::Duration;
use tonic::{Request, Response, Status};

/// Longest a `physical: true` compaction waits for the deletion to finish.
const PHYSICAL_COMPACTION_WAIT: Duration = Duration::from_secs(300);

pub struct KvService {
    pub srv: Arc<EtcdServer>,
}

#[tonic::async_trait]
impl Kv for KvService {
    async fn range(&self, req: Request<RangeRequest>) -> Result<Response<RangeResponse>, Status> {
        check_leader(&self.srv, &req)?;
        let r = req.into_inner();
        check_size(&self.srv, &r)?;
        Ok(Response::new(self.srv.range(r).await?))
    }

    async fn put(&self, req: Request<PutRequest>) -> Result<Response<PutResponse>, Status> {
        check_leader(&self.srv, &req)?;
        let r = req.into_inner();
        check_size(&self.srv, &r)?;
        Ok(Response::new(self.srv.put(r).await?))
    }

    async fn delete_range(
        &self,
        req: Request<DeleteRangeRequest>,
    ) -> Result<Response<DeleteRangeResponse>, Status> {
        check_leader(&self.srv, &req)?;
        let r = req.into_inner();
        check_size(&self.srv, &r)?;
        Ok(Response::new(self.srv.delete_range(r).await?))
    }

    async fn txn(&self, req: Request<TxnRequest>) -> Result<Response<TxnResponse>, Status> {
        check_leader(&self.srv, &req)?;
        let r = req.into_inner();
        check_size(&self.srv, &r)?;
        Ok(Response::new(self.srv.txn(r).await?))
    }

    async fn compact(
        &self,
        req: Request<CompactionRequest>,
    ) -> Result<Response<CompactionResponse>, Status> {
        check_leader(&self.srv, &req)?;
        let r = req.into_inner();
        let physical = r.physical;
        let target = r.revision;
        let mut done = self.srv.store.compaction_watch();
        let mut resp = self.srv.propose(r).await?;
        if physical {
            let waited = tokio::time::timeout(
                PHYSICAL_COMPACTION_WAIT,
                done.wait_for(|finished| *finished >= target),
            )
            .await;
            if !matches!(waited, Ok(Ok(_))) {
                return Err(Error::Timeout.into());
            }
        }
        self.srv.fill_header(&mut resp.header);
        Ok(Response::new(resp))
    }
}
