//! etcd's request semantics on top of MVCC: Put, DeleteRange, Txn and the
//! request checks that run before anything is proposed.
//!
//! Write requests run in the apply loop on every member and must be
//! deterministic. Read-only txns run on the read path against a pinned
//! revision through the same code (`Backend` abstracts the difference).

use crate::error::Error;
use crate::metrics::METRICS;
use crate::pb::etcdserverpb::{
    Compare, DeleteRangeRequest, DeleteRangeResponse, PutRequest, PutResponse, RangeRequest,
    RangeResponse, ResponseHeader, ResponseOp, TxnRequest, TxnResponse,
    compare::{CompareResult, CompareTarget, TargetUnion},
    request_op::Request,
    response_op::Response,
};
use crate::pb::mvccpb::KeyValue;
use crate::state::lease::Lessor;
use crate::storage::mvcc::index::KeyRange;
use crate::storage::mvcc::{ApplyBatch, MvccError, RangeResult, Store, TxnWrite};
use bytes::Bytes;
use std::cmp::Ordering;
use std::sync::Arc;

fn header(revision: i64) -> Option<ResponseHeader> {
    Some(ResponseHeader {
        revision,
        ..Default::default()
    })
}

/// Where a request's reads and writes go.
pub trait Backend {
    /// The revision a read of "the latest" sees right now.
    fn read_rev(&self) -> i64;
    fn range(&self, r: &RangeRequest) -> Result<RangeResult, MvccError>;
    fn put(&mut self, key: Bytes, value: Bytes, lease: i64) -> Result<(), MvccError>;
    fn delete(&mut self, range: &KeyRange) -> Result<i64, MvccError>;
    /// Whether this request has changed anything yet.
    fn changed(&self) -> bool;
    /// Does a lease with this ID exist?
    fn lease_exists(&self, id: i64) -> bool;
}

/// A write request being applied: one main revision for all its changes.
pub struct WriteBackend<'a> {
    pub batch: &'a mut ApplyBatch,
    pub w: TxnWrite,
    pub lessor: &'a Lessor,
}

impl Backend for WriteBackend<'_> {
    fn read_rev(&self) -> i64 {
        if self.w.changed() {
            self.batch.rev() + 1
        } else {
            self.batch.rev()
        }
    }
    fn range(&self, r: &RangeRequest) -> Result<RangeResult, MvccError> {
        self.batch.range(r, Some(&self.w))
    }
    fn put(&mut self, key: Bytes, value: Bytes, lease: i64) -> Result<(), MvccError> {
        self.batch.put(&mut self.w, key.clone(), value, lease)?;
        self.lessor.set_key_lease(&key, lease);
        Ok(())
    }
    fn delete(&mut self, range: &KeyRange) -> Result<i64, MvccError> {
        let keys = self.batch.delete_range(&mut self.w, range)?;
        for k in &keys {
            self.lessor.set_key_lease(k, 0);
        }
        Ok(keys.len() as i64)
    }
    fn changed(&self) -> bool {
        self.w.changed()
    }
    fn lease_exists(&self, id: i64) -> bool {
        self.lessor.exists(id)
    }
}

/// A read-only txn on the read path, pinned to one revision.
pub struct ReadBackend<'a> {
    pub store: &'a Arc<Store>,
    pub rev: i64,
}

impl Backend for ReadBackend<'_> {
    fn read_rev(&self) -> i64 {
        self.rev
    }
    fn range(&self, r: &RangeRequest) -> Result<RangeResult, MvccError> {
        let mut pinned = r.clone();
        if pinned.revision <= 0 {
            pinned.revision = self.rev;
        } else if pinned.revision > self.rev {
            return Err(MvccError::FutureRev);
        }
        self.store.range(&pinned).map(|(res, _)| res)
    }
    fn put(&mut self, _: Bytes, _: Bytes, _: i64) -> Result<(), MvccError> {
        unreachable_write()
    }
    fn delete(&mut self, _: &KeyRange) -> Result<i64, MvccError> {
        unreachable_write()
    }
    fn changed(&self) -> bool {
        false
    }
    fn lease_exists(&self, _id: i64) -> bool {
        // Read-only txns never put, so never ask.
        false
    }
}

fn unreachable_write<T>() -> Result<T, MvccError> {
    // The caller routes only read-only txns here; reaching this is a bug,
    // reported as a storage invariant failure rather than a panic.
    Err(MvccError::Storage(crate::storage::Error::Raft(
        "write attempted on the read path".into(),
    )))
}

// ---------------------------------------------------------------------------
// Request checks (before proposing), as etcd's API layer does them.

pub fn check_range(r: &RangeRequest) -> Result<(), Error> {
    if r.key.is_empty() {
        return Err(Error::EmptyKey);
    }
    Ok(())
}

pub fn check_put(r: &PutRequest) -> Result<(), Error> {
    if r.key.is_empty() {
        return Err(Error::EmptyKey);
    }
    if r.ignore_value && !r.value.is_empty() {
        return Err(Error::ValueProvided);
    }
    if r.ignore_lease && r.lease != 0 {
        return Err(Error::LeaseProvided);
    }
    Ok(())
}

pub fn check_delete(r: &DeleteRangeRequest) -> Result<(), Error> {
    if r.key.is_empty() {
        return Err(Error::EmptyKey);
    }
    Ok(())
}

/// etcd's Txn checks: the op budget, empty keys and each op's own checks,
/// then the duplicate-key rule over the whole request.
///
/// Both halves cost time proportional to the request's size, so a large
/// hostile txn is refused as cheaply as it was decoded: the budget is shared
/// along every path (a nested txn gets what its parents left, `max_ops -
/// opc`, as etcd does), and the duplicate check is hash- and interval-based
/// (`txn_check`).
pub fn check_txn(r: &TxnRequest, max_ops: usize) -> Result<(), Error> {
    check_txn_ops(r, max_ops)?;
    // After the budget check, as etcd does, so the interval check only ever
    // sees a request within the budget.
    super::txn_check::check_intervals(&r.success)?;
    super::txn_check::check_intervals(&r.failure)?;
    Ok(())
}

fn check_txn_ops(r: &TxnRequest, max_ops: usize) -> Result<(), Error> {
    let ops = r.compare.len().max(r.success.len()).max(r.failure.len());
    if ops > max_ops {
        return Err(Error::TooManyOps);
    }
    for c in &r.compare {
        if c.key.is_empty() {
            return Err(Error::EmptyKey);
        }
    }
    for op in r.success.iter().chain(r.failure.iter()) {
        match &op.request {
            Some(Request::RequestRange(x)) => check_range(x)?,
            Some(Request::RequestPut(x)) => check_put(x)?,
            Some(Request::RequestDeleteRange(x)) => check_delete(x)?,
            Some(Request::RequestTxn(x)) => check_txn_ops(x, max_ops - ops)?,
            // An op naming no request: etcd's `checkRequestOp` answers
            // "key not found" for it.
            None => return Err(Error::KeyNotFound),
        }
    }
    Ok(())
}

pub fn is_txn_read_only(r: &TxnRequest) -> bool {
    r.success
        .iter()
        .chain(r.failure.iter())
        .all(|op| match &op.request {
            Some(Request::RequestRange(_)) | None => true,
            Some(Request::RequestTxn(t)) => is_txn_read_only(t),
            _ => false,
        })
}

pub fn is_txn_serializable(r: &TxnRequest) -> bool {
    r.success
        .iter()
        .chain(r.failure.iter())
        .all(|op| match &op.request {
            Some(Request::RequestRange(x)) => x.serializable,
            Some(Request::RequestTxn(t)) => is_txn_serializable(t),
            _ => true,
        })
}

// ---------------------------------------------------------------------------
// Applying requests.

fn map_err(e: MvccError) -> Error {
    e.into()
}

pub fn range<B: Backend>(b: &B, r: &RangeRequest) -> Result<RangeResponse, Error> {
    METRICS.mvcc_range.inc();
    let res = b.range(r).map_err(map_err)?;
    Ok(RangeResponse {
        header: header(b.read_rev()),
        kvs: res.kvs,
        more: res.more,
        count: res.count,
    })
}

fn latest<B: Backend>(b: &B, key: &Bytes) -> Result<Option<KeyValue>, Error> {
    let r = RangeRequest {
        key: key.clone(),
        ..Default::default()
    };
    Ok(b.range(&r).map_err(map_err)?.kvs.into_iter().next())
}

/// The checks etcd makes on a put at apply time, before any write of the
/// request happens (so a failing txn changes nothing).
fn check_put_applicable<B: Backend>(b: &B, p: &PutRequest) -> Result<(), Error> {
    if p.lease != 0 && !b.lease_exists(p.lease) {
        return Err(Error::LeaseNotFound);
    }
    if (p.ignore_value || p.ignore_lease) && latest(b, &p.key)?.is_none() {
        return Err(Error::KeyNotFound);
    }
    Ok(())
}

pub fn put<B: Backend>(b: &mut B, p: &PutRequest) -> Result<PutResponse, Error> {
    let prev = if p.ignore_value || p.ignore_lease || p.prev_kv {
        latest(b, &p.key)?
    } else {
        None
    };
    if (p.ignore_value || p.ignore_lease) && prev.is_none() {
        return Err(Error::KeyNotFound);
    }
    let value = match (&prev, p.ignore_value) {
        (Some(kv), true) => kv.value.clone(),
        _ => p.value.clone(),
    };
    let lease = match (&prev, p.ignore_lease) {
        (Some(kv), true) => kv.lease,
        _ => p.lease,
    };
    if lease != 0 && !b.lease_exists(lease) {
        return Err(Error::LeaseNotFound);
    }
    b.put(p.key.clone(), value, lease).map_err(map_err)?;
    METRICS.mvcc_put.inc();
    Ok(PutResponse {
        header: header(b.read_rev()),
        prev_kv: if p.prev_kv { prev } else { None },
    })
}

pub fn delete_range<B: Backend>(
    b: &mut B,
    d: &DeleteRangeRequest,
) -> Result<DeleteRangeResponse, Error> {
    let range = KeyRange::new(&d.key, &d.range_end);
    let prev_kvs = if d.prev_kv {
        let r = RangeRequest {
            key: d.key.clone(),
            range_end: d.range_end.clone(),
            ..Default::default()
        };
        b.range(&r).map_err(map_err)?.kvs
    } else {
        Vec::new()
    };
    let deleted = b.delete(&range).map_err(map_err)?;
    METRICS.mvcc_delete.inc();
    Ok(DeleteRangeResponse {
        header: header(b.read_rev()),
        deleted,
        prev_kvs,
    })
}

fn compare_ints(a: i64, b: i64) -> Ordering {
    a.cmp(&b)
}

fn compare_kv(c: &Compare, kv: &KeyValue) -> bool {
    let ord = match c.target() {
        CompareTarget::Value => {
            let want: &[u8] = match &c.target_union {
                Some(TargetUnion::Value(v)) => v,
                _ => &[],
            };
            kv.value.as_ref().cmp(want)
        }
        CompareTarget::Create => {
            let want = match c.target_union {
                Some(TargetUnion::CreateRevision(v)) => v,
                _ => 0,
            };
            compare_ints(kv.create_revision, want)
        }
        CompareTarget::Mod => {
            let want = match c.target_union {
                Some(TargetUnion::ModRevision(v)) => v,
                _ => 0,
            };
            compare_ints(kv.mod_revision, want)
        }
        CompareTarget::Version => {
            let want = match c.target_union {
                Some(TargetUnion::Version(v)) => v,
                _ => 0,
            };
            compare_ints(kv.version, want)
        }
        CompareTarget::Lease => {
            let want = match c.target_union {
                Some(TargetUnion::Lease(v)) => v,
                _ => 0,
            };
            compare_ints(kv.lease, want)
        }
    };
    match c.result() {
        CompareResult::Equal => ord == Ordering::Equal,
        CompareResult::NotEqual => ord != Ordering::Equal,
        CompareResult::Greater => ord == Ordering::Greater,
        CompareResult::Less => ord == Ordering::Less,
    }
}

fn apply_compare<B: Backend>(b: &B, c: &Compare) -> Result<bool, Error> {
    let r = RangeRequest {
        key: c.key.clone(),
        range_end: c.range_end.clone(),
        ..Default::default()
    };
    let kvs = b.range(&r).map_err(map_err)?.kvs;
    if kvs.is_empty() {
        // A missing key has no value to compare; every other target
        // compares against zero.
        if c.target() == CompareTarget::Value {
            return Ok(false);
        }
        return Ok(compare_kv(c, &KeyValue::default()));
    }
    Ok(kvs.iter().all(|kv| compare_kv(c, kv)))
}

/// The branch taken at every level, decided before any op runs (etcd
/// evaluates nested compares against the state before the txn).
pub(crate) struct Path {
    pub(crate) succeeded: bool,
    pub(crate) nested: Vec<Path>,
}

pub(crate) fn decide<B: Backend>(b: &B, t: &TxnRequest) -> Result<Path, Error> {
    let mut succeeded = true;
    for c in &t.compare {
        if !apply_compare(b, c)? {
            succeeded = false;
            break;
        }
    }
    let ops = if succeeded { &t.success } else { &t.failure };
    let mut nested = Vec::new();
    for op in ops {
        if let Some(Request::RequestTxn(inner)) = &op.request {
            nested.push(decide(b, inner)?);
        }
    }
    Ok(Path { succeeded, nested })
}

/// Apply-time checks on the ops along the chosen path: future/compacted
/// revisions in ranges, lease and key existence for puts.
fn check_path<B: Backend>(
    b: &B,
    t: &TxnRequest,
    path: &Path,
    compact_rev: i64,
) -> Result<(), Error> {
    let ops = if path.succeeded {
        &t.success
    } else {
        &t.failure
    };
    let mut nested = path.nested.iter();
    for op in ops {
        match &op.request {
            Some(Request::RequestRange(r)) => {
                if r.revision > 0 && r.revision > b.read_rev() {
                    return Err(Error::FutureRev);
                }
                if r.revision > 0 && r.revision < compact_rev {
                    return Err(Error::Compacted);
                }
            }
            Some(Request::RequestPut(p)) => check_put_applicable(b, p)?,
            Some(Request::RequestTxn(inner)) => {
                if let Some(np) = nested.next() {
                    check_path(b, inner, np, compact_rev)?;
                }
            }
            _ => {}
        }
    }
    Ok(())
}

fn run_path<B: Backend>(b: &mut B, t: &TxnRequest, path: &Path) -> Result<TxnResponse, Error> {
    let ops = if path.succeeded {
        &t.success
    } else {
        &t.failure
    };
    let mut nested = path.nested.iter();
    let mut responses = Vec::with_capacity(ops.len());
    for op in ops {
        let response = match &op.request {
            Some(Request::RequestRange(r)) => Some(Response::ResponseRange(range(b, r)?)),
            Some(Request::RequestPut(p)) => Some(Response::ResponsePut(put(b, p)?)),
            Some(Request::RequestDeleteRange(d)) => {
                Some(Response::ResponseDeleteRange(delete_range(b, d)?))
            }
            Some(Request::RequestTxn(inner)) => match nested.next() {
                Some(np) => Some(Response::ResponseTxn(run_path(b, inner, np)?)),
                None => None,
            },
            None => None,
        };
        responses.push(ResponseOp { response });
    }
    // A nested txn's response carries an empty header, as etcd's does;
    // `txn` fills in the outermost one.
    Ok(TxnResponse {
        header: Some(ResponseHeader::default()),
        succeeded: path.succeeded,
        responses,
    })
}

/// Runs a whole txn. On error nothing has been written (all checks precede
/// the first write).
pub fn txn<B: Backend>(b: &mut B, t: &TxnRequest, compact_rev: i64) -> Result<TxnResponse, Error> {
    let path = decide(b, t)?;
    check_path(b, t, &path, compact_rev)?;
    let mut resp = run_path(b, t, &path)?;
    resp.header = header(b.read_rev());
    // etcd counts at the storage txn: each compare is a range read, and a
    // txn is one that did more than one thing.
    let compares = t.compare.len() as u64;
    METRICS.mvcc_range.inc_by(compares);
    if compares + ops_done(&resp) > 1 {
        METRICS.mvcc_txn.inc();
    }
    Ok(resp)
}

/// Requests a txn response carries, nested txns' included.
fn ops_done(r: &TxnResponse) -> u64 {
    r.responses
        .iter()
        .map(|op| match &op.response {
            Some(Response::ResponseTxn(inner)) => ops_done(inner),
            Some(_) => 1,
            None => 0,
        })
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pb::etcdserverpb::{RequestOp, compare};

    fn put_op(k: &str) -> RequestOp {
        RequestOp {
            request: Some(Request::RequestPut(PutRequest {
                key: Bytes::from(k.to_string()),
                ..Default::default()
            })),
        }
    }

    fn del_op(k: &str, end: &str) -> RequestOp {
        RequestOp {
            request: Some(Request::RequestDeleteRange(DeleteRangeRequest {
                key: Bytes::from(k.to_string()),
                range_end: Bytes::from(end.to_string()),
                ..Default::default()
            })),
        }
    }

    #[test]
    fn duplicate_keys_are_rejected_like_etcd() {
        let t = TxnRequest {
            success: vec![put_op("a"), put_op("a")],
            ..Default::default()
        };
        assert_eq!(check_txn(&t, 128), Err(Error::DuplicateKey));
        let t = TxnRequest {
            success: vec![put_op("b"), del_op("a", "c")],
            ..Default::default()
        };
        assert_eq!(check_txn(&t, 128), Err(Error::DuplicateKey));
        // Overlapping deletes and the same key in different branches are fine.
        let t = TxnRequest {
            success: vec![del_op("a", "c"), del_op("b", "d"), put_op("x")],
            failure: vec![put_op("x")],
            ..Default::default()
        };
        assert_eq!(check_txn(&t, 128), Ok(()));
        // ... also inside a nested txn ...
        let both = RequestOp {
            request: Some(Request::RequestTxn(TxnRequest {
                success: vec![put_op("n")],
                failure: vec![put_op("n")],
                ..Default::default()
            })),
        };
        let t = TxnRequest {
            success: vec![put_op("o"), both.clone()],
            ..Default::default()
        };
        assert_eq!(check_txn(&t, 128), Ok(()));
        // ... but not against a put of the outer level.
        let t = TxnRequest {
            success: vec![put_op("n"), both],
            ..Default::default()
        };
        assert_eq!(check_txn(&t, 128), Err(Error::DuplicateKey));
        // A from-key delete conflicts with nothing (etcd compares raw bytes).
        let t = TxnRequest {
            success: vec![del_op("a", "\0"), put_op("b")],
            ..Default::default()
        };
        assert_eq!(check_txn(&t, 128), Ok(()));
        // Nested txns count too.
        let nested = RequestOp {
            request: Some(Request::RequestTxn(TxnRequest {
                success: vec![put_op("a")],
                ..Default::default()
            })),
        };
        let t = TxnRequest {
            success: vec![put_op("a"), nested],
            ..Default::default()
        };
        assert_eq!(check_txn(&t, 128), Err(Error::DuplicateKey));
    }

    #[test]
    fn too_many_ops_and_empty_keys() {
        let t = TxnRequest {
            success: (0..3).map(|i| put_op(&i.to_string())).collect(),
            ..Default::default()
        };
        assert_eq!(check_txn(&t, 2), Err(Error::TooManyOps));
        let t = TxnRequest {
            compare: vec![Compare::default()],
            ..Default::default()
        };
        assert_eq!(check_txn(&t, 2), Err(Error::EmptyKey));
    }

    #[test]
    fn compare_semantics() {
        let kv = KeyValue {
            key: Bytes::from_static(b"k"),
            value: Bytes::from_static(b"v"),
            version: 2,
            ..Default::default()
        };
        let c = Compare {
            result: CompareResult::Greater as i32,
            target: CompareTarget::Version as i32,
            key: Bytes::from_static(b"k"),
            target_union: Some(compare::TargetUnion::Version(1)),
            range_end: Bytes::new(),
        };
        assert!(compare_kv(&c, &kv));
        let c = Compare {
            result: CompareResult::Equal as i32,
            target: CompareTarget::Value as i32,
            key: Bytes::from_static(b"k"),
            target_union: Some(compare::TargetUnion::Value(Bytes::from_static(b"v"))),
            range_end: Bytes::new(),
        };
        assert!(compare_kv(&c, &kv));
    }
}
