//! What the server needs to put policy verdicts into proposals: the stamp a
//! write carries, entry size limits, which v2 entries are judged, and how a
//! refusal reads on the v2 API. The server drives judging and re-judging
//! (`etcdserver::policy`).

use super::judge;
use crate::error::Error;
use crate::pb::cairnpb::internal_request::Request;
use bytes::Bytes;

/// How many times a write is judged again after the plugin set changed
/// under it before the client gets `PluginSetChanged` (retryable).
pub(crate) const MAX_JUDGEMENTS: usize = 8;
/// How many times a plugin-set change is recomputed after a concurrent one.
pub(crate) const MAX_CHANGE_ATTEMPTS: usize = 5;

/// The largest v2 entry: etcd 3.4 puts no size limit on v2 requests
/// (`--max-request-bytes` is a gRPC limit) beyond Go's 10 MiB form body, so
/// neither does Cairn; the entry is the request as JSON, in which a value
/// of control characters takes up to six bytes per byte. Still below what
/// a peer accepts in one message (`transport::PEER_MAX_MESSAGE_BYTES`).
pub const MAX_V2_ENTRY_BYTES: usize = 6 * crate::v2::http::MAX_FORM_BYTES + (1 << 20);

/// The largest entry `propose` may make for `request`: plugin-set changes
/// carry binaries and get their own bound, v2 requests etcd's; everything
/// else the client request limit.
pub fn proposal_limit(request: &Request, max_request_bytes: usize) -> usize {
    match request {
        Request::PluginSet(_) => super::model::MAX_CHANGE_ENTRY_BYTES.max(max_request_bytes),
        Request::V2(_) => MAX_V2_ENTRY_BYTES.max(max_request_bytes),
        _ => max_request_bytes,
    }
}

/// Whether a v2 entry is a write (judged and stamped) rather than a quorum
/// read or the TTL sweep.
pub(crate) fn v2_entry_is_write(bytes: &[u8]) -> bool {
    serde_json::from_slice::<crate::v2::V2Request>(bytes)
        .ok()
        .and_then(|r| judge::plan_v2(&r))
        .is_some()
}

/// A plugin refusal as the v2 API answers it: a 400 (`209 Invalid field`)
/// whose cause names the plugin and its reason; a failing plugin is the
/// server's problem (300). Other errors as before.
pub fn v2_error(e: Error) -> crate::v2::V2Error {
    match e {
        Error::PluginDenied { .. } => {
            crate::v2::V2Error::request(crate::v2::error::INVALID_FIELD, e.to_string())
        }
        other => crate::v2::V2Error::raft_internal(other.to_string()),
    }
}

/// The reads of a txn, nested ones included (bounded by the request size;
/// nesting beyond 64 levels is not looked into further).
pub(crate) fn collect_txn_reads(
    t: &crate::pb::etcdserverpb::TxnRequest,
    out: &mut Vec<(Bytes, Bytes)>,
    depth: usize,
) {
    use crate::pb::etcdserverpb::request_op::Request as Op;
    if depth > 64 {
        return;
    }
    for c in &t.compare {
        out.push((c.key.clone(), c.range_end.clone()));
    }
    for op in t.success.iter().chain(&t.failure) {
        match &op.request {
            Some(Op::RequestRange(r)) => out.push((r.key.clone(), r.range_end.clone())),
            Some(Op::RequestTxn(inner)) => collect_txn_reads(inner, out, depth + 1),
            _ => {}
        }
    }
}

#[cfg(test)]
mod limit_tests {
    #[test]
    fn v2_entries_fit_in_a_peer_message() {
        const { assert!(super::MAX_V2_ENTRY_BYTES < crate::transport::PEER_MAX_MESSAGE_BYTES) };
    }
}
