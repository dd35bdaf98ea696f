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
use std::time::{Duration, Instant};
use tonic::{Request, Response, Status};

/// Most of a key shown in a request's debug line.
const LOGGED_KEY_BYTES: usize = 64;

/// One debug line per KV request (`--log-level debug`): what was asked, of
/// which key, at which revision, how long it took and how it ended.
/// `key` is `None` when debug was off as the request began (no copy of
/// the key is made then).
fn log_request<T>(
    method: &'static str,
    key: Option<Vec<u8>>,
    started: Instant,
    result: &Result<T, Error>,
    revision: impl Fn(&T) -> i64,
) {
    let Some(key) = key else {
        return;
    };
    let shown = key.get(..LOGGED_KEY_BYTES).unwrap_or(&key);
    let key = format!(
        "{}{}",
        String::from_utf8_lossy(shown).escape_debug(),
        if key.len() > LOGGED_KEY_BYTES {
            "…"
        } else {
            ""
        }
    );
    let took_us = started.elapsed().as_micros() as u64;
    match result {
        Ok(r) => tracing::debug!(
            method,
            key,
            revision = revision(r),
            took_us,
            outcome = "ok",
            "request"
        ),
        Err(e) => tracing::debug!(method, key, took_us, outcome = %e, "request"),
    }
}

fn debug_on() -> bool {
    tracing::enabled!(tracing::Level::DEBUG)
}

fn header_revision(h: &Option<crate::pb::etcdserverpb::ResponseHeader>) -> i64 {
    h.as_ref().map_or(0, |h| h.revision)
}

/// A txn's debug line names its first key (compares first, then ops,
/// then the first op's nested txn, a bounded number of levels down).
fn txn_first_key(r: &TxnRequest) -> Vec<u8> {
    use crate::pb::etcdserverpb::request_op::Request as Op;
    let mut txn = r;
    for _ in 0..8 {
        if let Some(c) = txn.compare.first() {
            return c.key.to_vec();
        }
        match txn
            .success
            .iter()
            .chain(&txn.failure)
            .next()
            .and_then(|op| op.request.as_ref())
        {
            Some(Op::RequestRange(x)) => return x.key.to_vec(),
            Some(Op::RequestPut(x)) => return x.key.to_vec(),
            Some(Op::RequestDeleteRange(x)) => return x.key.to_vec(),
            Some(Op::RequestTxn(t)) => txn = t,
            None => break,
        }
    }
    Vec::new()
}

/// Longest a `physical: true` compaction waits for the deletion to finish.
const PHYSICAL_COMPACTION_WAIT: Duration = Duration::from_secs(300);

pub struct KvService {
    pub srv: Arc<EtcdServer>,
}

#[tonic::async_trait]
impl Kv for KvService {
    async fn range(&self, req: Request<RangeRequest>) -> Result<Response<RangeResponse>, Status> {
        check_leader(&self.srv, &req)?;
        let ctx = super::request_ctx(&self.srv, &req);
        let r = req.into_inner();
        check_size(&self.srv, &r)?;
        let (started, key) = (Instant::now(), debug_on().then(|| r.key.to_vec()));
        let result = self.srv.range(&ctx, r).await;
        log_request("Range", key, started, &result, |x| {
            header_revision(&x.header)
        });
        Ok(Response::new(result?))
    }

    async fn put(&self, req: Request<PutRequest>) -> Result<Response<PutResponse>, Status> {
        check_leader(&self.srv, &req)?;
        let ctx = super::request_ctx(&self.srv, &req);
        let r = req.into_inner();
        check_size(&self.srv, &r)?;
        let (started, key) = (Instant::now(), debug_on().then(|| r.key.to_vec()));
        let result = self.srv.put(&ctx, r).await;
        log_request("Put", key, started, &result, |x| header_revision(&x.header));
        Ok(Response::new(result?))
    }

    async fn delete_range(
        &self,
        req: Request<DeleteRangeRequest>,
    ) -> Result<Response<DeleteRangeResponse>, Status> {
        check_leader(&self.srv, &req)?;
        let ctx = super::request_ctx(&self.srv, &req);
        let r = req.into_inner();
        check_size(&self.srv, &r)?;
        let (started, key) = (Instant::now(), debug_on().then(|| r.key.to_vec()));
        let result = self.srv.delete_range(&ctx, r).await;
        log_request("DeleteRange", key, started, &result, |x| {
            header_revision(&x.header)
        });
        Ok(Response::new(result?))
    }

    async fn txn(&self, req: Request<TxnRequest>) -> Result<Response<TxnResponse>, Status> {
        check_leader(&self.srv, &req)?;
        let ctx = super::request_ctx(&self.srv, &req);
        let r = req.into_inner();
        check_size(&self.srv, &r)?;
        let (started, key) = (Instant::now(), debug_on().then(|| txn_first_key(&r)));
        let result = self.srv.txn(&ctx, r).await;
        log_request("Txn", key, started, &result, |x| header_revision(&x.header));
        Ok(Response::new(result?))
    }

    async fn compact(
        &self,
        req: Request<CompactionRequest>,
    ) -> Result<Response<CompactionResponse>, Status> {
        check_leader(&self.srv, &req)?;
        let ctx = super::request_ctx(&self.srv, &req);
        let r = req.into_inner();
        let physical = r.physical;
        let target = r.revision;
        let mut done = self.srv.store().compaction_watch();
        let mut resp = self.srv.propose(&ctx, r).await?;
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
