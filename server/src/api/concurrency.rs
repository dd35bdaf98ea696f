//! Building blocks of the Lock and Election services, on top of the KV
//! operations and the watch hub: the same recipes etcd's `concurrency`
//! package uses (ownership keys `<prefix><lease in hex>`, queueing by
//! creation revision, waiting for the keys ahead to be deleted).

use crate::error::Error;
use crate::etcdserver::watch::{HubMsg, WatchSpec};
use crate::etcdserver::{EtcdServer, RequestCtx};
use crate::pb::etcdserverpb::compare::{CompareResult, CompareTarget, TargetUnion};
use crate::pb::etcdserverpb::range_request::{SortOrder, SortTarget};
use crate::pb::etcdserverpb::request_op::Request as Op;
use crate::pb::etcdserverpb::response_op::Response as OpResponse;
use crate::pb::etcdserverpb::{
    Compare, PutRequest, RangeRequest, RequestOp, ResponseHeader, TxnRequest,
};
use crate::pb::mvccpb::KeyValue;
use crate::storage::mvcc::index::KeyRange;
use bytes::Bytes;

/// TTL of the session lease a Lock or Campaign without a lease gets
/// (etcd's `concurrency.NewSession` default).
const SESSION_TTL_SECS: i64 = 60;

/// The lease a Lock or Campaign holds its key with: the caller's, or — for
/// lease 0, as etcd's server-side `NewSession` does — a new lease of
/// `SESSION_TTL_SECS` that nobody keeps alive, so the key goes with it.
/// Without one, every lease-less caller would share the key `name/0`
/// and all of them would believe they hold the lock.
pub async fn session_lease(srv: &EtcdServer, ctx: &RequestCtx, lease: i64) -> Result<i64, Error> {
    if lease != 0 {
        return Ok(lease);
    }
    srv.check_quota(0).await?;
    let grant = crate::pb::etcdserverpb::LeaseGrantRequest {
        ttl: SESSION_TTL_SECS.max(srv.min_lease_ttl_secs()),
        id: srv.new_lease_id(),
    };
    Ok(srv.propose(ctx, grant).await?.id)
}

/// Creates `key` with `value` on `lease` unless it exists; returns the key's
/// current state (its creation revision is its place in the queue) and the
/// header of the txn.
pub async fn create_or_get(
    srv: &EtcdServer,
    ctx: &RequestCtx,
    key: Bytes,
    value: Bytes,
    lease: i64,
) -> Result<(KeyValue, ResponseHeader), Error> {
    let absent = Compare {
        result: CompareResult::Equal as i32,
        target: CompareTarget::Create as i32,
        key: key.clone(),
        target_union: Some(TargetUnion::CreateRevision(0)),
        range_end: Bytes::new(),
    };
    let get = RequestOp {
        request: Some(Op::RequestRange(RangeRequest {
            key: key.clone(),
            ..Default::default()
        })),
    };
    let t = TxnRequest {
        compare: vec![absent],
        success: vec![
            RequestOp {
                request: Some(Op::RequestPut(PutRequest {
                    key: key.clone(),
                    value,
                    lease,
                    ..Default::default()
                })),
            },
            get.clone(),
        ],
        failure: vec![get],
    };
    let resp = srv.txn(ctx, t).await?;
    let header = resp.header.unwrap_or_default();
    let kv = resp
        .responses
        .into_iter()
        .filter_map(|r| match r.response {
            Some(OpResponse::ResponseRange(rr)) => rr.kvs.into_iter().next(),
            _ => None,
        })
        .next()
        .ok_or_else(|| Error::Internal("ownership key vanished".into()))?;
    Ok((kv, header))
}

/// The key with the lowest (or highest, below `max_create_rev`) creation
/// revision under `prefix`.
pub async fn by_create(
    srv: &EtcdServer,
    ctx: &RequestCtx,
    prefix: &[u8],
    order: SortOrder,
    max_create_rev: i64,
) -> Result<(Option<KeyValue>, ResponseHeader), Error> {
    let resp = srv
        .range(
            ctx,
            RangeRequest {
                key: Bytes::copy_from_slice(prefix),
                range_end: crate::state::prefix_end(prefix),
                limit: 1,
                sort_order: order as i32,
                sort_target: SortTarget::Create as i32,
                max_create_revision: max_create_rev,
                ..Default::default()
            },
        )
        .await?;
    Ok((resp.kvs.into_iter().next(), resp.header.unwrap_or_default()))
}

/// Waits until `key` is deleted at or after revision `from`.
pub async fn wait_deleted(srv: &EtcdServer, key: Bytes, from: i64) -> Result<(), Error> {
    // One event is all this waits for; the byte bound only matters if the
    // watched key's value is large.
    let (tx, mut rx) = crate::etcdserver::watch::hub_channel(16, 1 << 20);
    let handle = srv.hub().add(
        WatchSpec {
            range: KeyRange::Single(key),
            start_rev: from,
            no_put: true,
            no_delete: false,
            prev_kv: false,
            progress_notify: false,
        },
        0,
        tx,
    );
    // Remove the watcher however this future ends (including when the
    // client goes away and the future is dropped).
    struct Guard<'a>(&'a EtcdServer, u64);
    impl Drop for Guard<'_> {
        fn drop(&mut self) {
            self.0.hub().remove(self.1);
        }
    }
    let _guard = Guard(srv, handle);
    loop {
        match rx.recv().await.map(|(msg, _)| msg) {
            Some(HubMsg::Events { events, .. }) if !events.is_empty() => return Ok(()),
            Some(HubMsg::Compacted { .. }) => return Err(Error::Compacted),
            Some(_) => continue,
            None => return Err(Error::Stopped),
        }
    }
}

/// Waits until every key under `prefix` created before `my_rev` is gone:
/// then the caller is first in line.
pub async fn wait_deletes(
    srv: &EtcdServer,
    ctx: &RequestCtx,
    prefix: &[u8],
    my_rev: i64,
) -> Result<ResponseHeader, Error> {
    loop {
        // A lock or campaign waits as long as it takes: each look is a read
        // of its own, with its own deadline.
        let look = ctx.until(srv.deadline());
        let (last, header) = by_create(srv, &look, prefix, SortOrder::Descend, my_rev - 1).await?;
        match last {
            None => return Ok(header),
            Some(kv) => wait_deleted(srv, kv.key, header.revision + 1).await?,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_ends() {
        use crate::state::prefix_end;
        assert_eq!(prefix_end(b"a/"), Bytes::from_static(b"a0"));
        assert_eq!(prefix_end(b"a\xff"), Bytes::from_static(b"b"));
        assert_eq!(prefix_end(b"\xff\xff"), Bytes::from_static(b"\0"));
    }
}
