//! The KV service.

use super::{check_leader, check_size};
use crate::error::Error;
use crate::pb::cairnpb::internal_request::Request as Internal;
use crate::pb::etcdserverpb::kv_server::Kv;
use crate::pb::etcdserverpb::{
    CompactionRequest, CompactionResponse, DeleteRangeRequest, DeleteRangeResponse, PutRequest,
    PutResponse, RangeRequest, RangeResponse, TxnRequest, TxnResponse,
};
use crate::server::txn::{self, ReadBackend};
use crate::server::{Applied, EtcdServer};
use std::sync::Arc;
use std::time::Duration;
use tonic::{Request, Response, Status};

/// Longest a `physical: true` compaction waits for the deletion to finish.
const PHYSICAL_COMPACTION_WAIT: Duration = Duration::from_secs(300);

pub struct KvService {
    pub srv: Arc<EtcdServer>,
}

fn unexpected(a: Applied) -> Status {
    Error::Internal(format!("unexpected apply result {a:?}")).into()
}

impl KvService {
    async fn read(&self, serializable: bool) -> Result<(), Status> {
        if !serializable {
            self.srv.linearizable_read_notify().await?;
        }
        Ok(())
    }
}

#[tonic::async_trait]
impl Kv for KvService {
    async fn range(&self, req: Request<RangeRequest>) -> Result<Response<RangeResponse>, Status> {
        check_leader(&self.srv, &req)?;
        let r = req.into_inner();
        check_size(&self.srv, &r)?;
        txn::check_range(&r)?;
        self.read(r.serializable).await?;
        let (res, rev) = self.srv.store.range(&r).map_err(Error::from)?;
        Ok(Response::new(RangeResponse {
            header: Some(self.srv.header(rev)),
            kvs: res.kvs,
            more: res.more,
            count: res.count,
        }))
    }

    async fn put(&self, req: Request<PutRequest>) -> Result<Response<PutResponse>, Status> {
        check_leader(&self.srv, &req)?;
        let r = req.into_inner();
        check_size(&self.srv, &r)?;
        txn::check_put(&r)?;
        match self.srv.propose(Internal::Put(r)).await? {
            Applied::Put(mut resp) => {
                self.srv.fill_header(&mut resp.header);
                Ok(Response::new(resp))
            }
            other => Err(unexpected(other)),
        }
    }

    async fn delete_range(
        &self,
        req: Request<DeleteRangeRequest>,
    ) -> Result<Response<DeleteRangeResponse>, Status> {
        check_leader(&self.srv, &req)?;
        let r = req.into_inner();
        check_size(&self.srv, &r)?;
        txn::check_delete(&r)?;
        match self.srv.propose(Internal::DeleteRange(r)).await? {
            Applied::DeleteRange(mut resp) => {
                self.srv.fill_header(&mut resp.header);
                Ok(Response::new(resp))
            }
            other => Err(unexpected(other)),
        }
    }

    async fn txn(&self, req: Request<TxnRequest>) -> Result<Response<TxnResponse>, Status> {
        check_leader(&self.srv, &req)?;
        let r = req.into_inner();
        check_size(&self.srv, &r)?;
        txn::check_txn(&r, self.srv.limits.max_txn_ops)?;
        if txn::is_txn_read_only(&r) {
            self.read(txn::is_txn_serializable(&r)).await?;
            let store = &self.srv.store;
            let mut backend = ReadBackend {
                store,
                rev: store.current_rev(),
            };
            let mut resp = txn::txn(&mut backend, &r, store.compact_rev())?;
            self.srv.fill_header(&mut resp.header);
            return Ok(Response::new(resp));
        }
        match self.srv.propose(Internal::Txn(r)).await? {
            Applied::Txn(mut resp) => {
                self.srv.fill_header(&mut resp.header);
                Ok(Response::new(resp))
            }
            other => Err(unexpected(other)),
        }
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
        match self.srv.propose(Internal::Compaction(r)).await? {
            Applied::Compaction(mut resp) => {
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
            other => Err(unexpected(other)),
        }
    }
}
