//! What a robustness run records: every client call with its invocation and
//! completion instants and its outcome, every watch stream with the events it
//! delivered, and the final state read after the faults healed.
//!
//! Instants are nanoseconds since the start of the run on one monotonic
//! clock (the harness's), so they compare across clients. Keys and values are
//! strings: the workload writes UTF-8 only, and a readable history matters
//! more when a violation has to be explained.

use serde::{Deserialize, Serialize};

/// A revision of the store (etcd's `revision`, `mod_revision`, ...).
pub type Rev = i64;
/// A lease ID as etcd returns it (0: no lease).
pub type LeaseId = i64;
/// Nanoseconds since the start of the run.
pub type Nanos = u64;

/// One key as a Range or a watch event shows it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct KeyValue {
    pub key: String,
    pub value: String,
    pub create_revision: Rev,
    pub mod_revision: Rev,
    pub version: i64,
    pub lease: LeaseId,
}

/// What a txn compare looks at, with the operand.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum CompareTarget {
    Value(String),
    Version(i64),
    ModRevision(Rev),
    CreateRevision(Rev),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum CompareOp {
    Equal,
    NotEqual,
    Greater,
    Less,
}

/// `key <op> target`, on one key (the workload never compares ranges).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Compare {
    pub key: String,
    pub op: CompareOp,
    pub target: CompareTarget,
}

/// One request inside a txn branch. Single keys only.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum TxnOp {
    Get {
        key: String,
    },
    Put {
        key: String,
        value: String,
        lease: LeaseId,
    },
    Delete {
        key: String,
    },
}

impl TxnOp {
    pub fn key(&self) -> &str {
        match self {
            TxnOp::Get { key } | TxnOp::Put { key, .. } | TxnOp::Delete { key } => key,
        }
    }
}

/// The answer to one [`TxnOp`], in branch order.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum TxnOpResult {
    Get { kvs: Vec<KeyValue> },
    Put,
    Delete { deleted: i64 },
}

/// A client call.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Request {
    /// A Range: one key, or `[key, range_end)` with etcd's meaning of
    /// `range_end` (`"\0"`: every key from `key` on).
    Get {
        key: String,
        range_end: Option<String>,
        serializable: bool,
    },
    Put {
        key: String,
        value: String,
        lease: LeaseId,
    },
    /// A single-key delete.
    Delete {
        key: String,
    },
    Txn {
        compares: Vec<Compare>,
        success: Vec<TxnOp>,
        failure: Vec<TxnOp>,
    },
    LeaseGrant {
        ttl_s: i64,
    },
    LeaseRevoke {
        lease: LeaseId,
    },
    /// One keep-alive request and its one response.
    LeaseKeepAlive {
        lease: LeaseId,
    },
    LeaseTimeToLive {
        lease: LeaseId,
    },
}

impl Request {
    /// True when the call can change the key space.
    pub fn may_write(&self) -> bool {
        match self {
            Request::Get { .. }
            | Request::LeaseGrant { .. }
            | Request::LeaseKeepAlive { .. }
            | Request::LeaseTimeToLive { .. } => false,
            Request::Put { .. } | Request::Delete { .. } | Request::LeaseRevoke { .. } => true,
            Request::Txn {
                success, failure, ..
            } => success
                .iter()
                .chain(failure)
                .any(|op| !matches!(op, TxnOp::Get { .. })),
        }
    }
}

/// The answer to a call that succeeded. `revision` is the response header's.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Response {
    Get {
        revision: Rev,
        kvs: Vec<KeyValue>,
    },
    Put {
        revision: Rev,
    },
    Delete {
        revision: Rev,
        deleted: i64,
    },
    Txn {
        revision: Rev,
        succeeded: bool,
        results: Vec<TxnOpResult>,
    },
    LeaseGrant {
        lease: LeaseId,
        ttl_s: i64,
    },
    LeaseRevoke {
        revision: Rev,
    },
    /// `ttl_s` 0: the lease was not found (already expired or revoked).
    LeaseKeepAlive {
        ttl_s: i64,
    },
    /// `ttl_s` -1: the lease was not found.
    LeaseTimeToLive {
        ttl_s: i64,
    },
}

/// How a call ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Outcome {
    Ok(Response),
    /// The server refused the call and it had no effect (an error that
    /// etcd returns only before or instead of applying, e.g. "requested
    /// lease not found"). `not_found` is set for lease-not-found errors:
    /// evidence that the lease no longer existed.
    Failed {
        error: String,
        not_found: bool,
    },
    /// No answer, or an error after which the call may still take effect
    /// (timeouts, connection loss, "leader changed"). The checkers let such a
    /// call take effect at any time after its invocation, or never.
    Unknown {
        error: String,
    },
}

/// One call by one client.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Operation {
    /// Unique in the history; ops are identified by it in reports.
    pub id: u64,
    pub client: u32,
    /// The member the client talked to (0-based index in the cluster; shown
    /// as m1, m2, ...).
    pub member: u32,
    pub request: Request,
    pub invoked: Nanos,
    /// When the outcome arrived (or the client gave up).
    pub completed: Nanos,
    pub outcome: Outcome,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum EventKind {
    Put,
    Delete,
}

/// One watch event. For a delete, `kv` has the key and `mod_revision` (the
/// revision of the delete); the other fields are zero as etcd sends them.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Event {
    pub kind: EventKind,
    pub kv: KeyValue,
}

impl Event {
    pub fn revision(&self) -> Rev {
        self.kv.mod_revision
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReceivedEvent {
    pub at: Nanos,
    pub event: Event,
}

/// One watch stream from creation to its end. A watch the harness resumes
/// after its stream broke is a new `Watch` with `start_revision` set to the
/// revision after the last one it got.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Watch {
    pub id: u32,
    pub member: u32,
    pub key: String,
    pub range_end: Option<String>,
    /// The revision asked for (0: from now).
    pub start_revision: Rev,
    /// The header revision of the created response, if the watch was created.
    pub created_revision: Option<Rev>,
    pub events: Vec<ReceivedEvent>,
    /// The watch the harness resumed with this one, if any.
    pub resumes: Option<u32>,
    /// The revision through which the harness knows this watch is complete
    /// (it saw the fence write at that revision), if it got that far.
    pub complete_through: Option<Rev>,
    /// Why the stream ended ("" while it ran until the harness closed it).
    pub end: String,
}

impl Watch {
    /// The first revision this watch is responsible for, if known.
    pub fn first_revision(&self) -> Option<Rev> {
        if self.start_revision > 0 {
            Some(self.start_revision)
        } else {
            self.created_revision.map(|r| r + 1)
        }
    }

    /// The last revision through which this watch claims to be complete:
    /// the fence, or else the revision of its last event (etcd sends every
    /// event of one revision in one response).
    pub fn last_revision(&self) -> Option<Rev> {
        let last_event = self.events.last().map(|e| e.event.revision());
        match (self.complete_through, last_event) {
            (Some(a), Some(b)) => Some(a.max(b)),
            (a, b) => a.or(b),
        }
    }

    pub fn covers_key(&self, key: &str) -> bool {
        key_in_range(key, &self.key, self.range_end.as_deref())
    }
}

/// etcd's range semantics: no end → exactly `key`; `"\0"` → every key ≥
/// `key`; otherwise `[key, end)`.
pub fn key_in_range(key: &str, start: &str, end: Option<&str>) -> bool {
    match end {
        None => key == start,
        Some("\0") => key >= start,
        Some(end) => key >= start && key < end,
    }
}

/// The range end that selects every key with this prefix (etcd's
/// `clientv3.GetPrefixRangeEnd`).
pub fn prefix_end(prefix: &str) -> String {
    let mut bytes = prefix.as_bytes().to_vec();
    while let Some(last) = bytes.pop() {
        if last < 0xff {
            bytes.push(last + 1);
            return String::from_utf8_lossy(&bytes).into_owned();
        }
    }
    "\0".into()
}

/// Everything the checkers look at.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct History {
    pub operations: Vec<Operation>,
    pub watches: Vec<Watch>,
    /// The linearizable read of the whole workload range made after the
    /// faults healed (an op in `operations`): the final state.
    pub final_read: Option<u64>,
    /// One serializable read of the same range per member, all at the final
    /// read's revision: the members must agree.
    pub member_reads: Vec<u64>,
}

impl History {
    pub fn op(&self, id: u64) -> Option<&Operation> {
        self.operations.iter().find(|o| o.id == id)
    }
}

/// The one-line form of a call, for reports.
pub fn describe_request(r: &Request) -> String {
    match r {
        Request::Get {
            key,
            range_end,
            serializable,
        } => {
            let mode = if *serializable { " serializable" } else { "" };
            match range_end {
                None => format!("get {key}{mode}"),
                Some(end) => format!("get [{key}, {end:?}){mode}"),
            }
        }
        Request::Put { key, value, lease } => {
            if *lease != 0 {
                format!("put {key}={value} lease={lease:x}")
            } else {
                format!("put {key}={value}")
            }
        }
        Request::Delete { key } => format!("delete {key}"),
        Request::Txn {
            compares,
            success,
            failure,
        } => {
            let cmps: Vec<String> = compares.iter().map(describe_compare).collect();
            let ops = |v: &[TxnOp]| v.iter().map(describe_txn_op).collect::<Vec<_>>().join("; ");
            format!(
                "txn if [{}] then [{}] else [{}]",
                cmps.join(" && "),
                ops(success),
                ops(failure)
            )
        }
        Request::LeaseGrant { ttl_s } => format!("lease grant ttl={ttl_s}s"),
        Request::LeaseRevoke { lease } => format!("lease revoke {lease:x}"),
        Request::LeaseKeepAlive { lease } => format!("lease keepalive {lease:x}"),
        Request::LeaseTimeToLive { lease } => format!("lease timetolive {lease:x}"),
    }
}

fn describe_compare(c: &Compare) -> String {
    let op = match c.op {
        CompareOp::Equal => "==",
        CompareOp::NotEqual => "!=",
        CompareOp::Greater => ">",
        CompareOp::Less => "<",
    };
    match &c.target {
        CompareTarget::Value(v) => format!("value({}) {op} {v:?}", c.key),
        CompareTarget::Version(v) => format!("version({}) {op} {v}", c.key),
        CompareTarget::ModRevision(v) => format!("mod({}) {op} {v}", c.key),
        CompareTarget::CreateRevision(v) => format!("create({}) {op} {v}", c.key),
    }
}

fn describe_txn_op(op: &TxnOp) -> String {
    match op {
        TxnOp::Get { key } => format!("get {key}"),
        TxnOp::Put { key, value, lease } => {
            if *lease != 0 {
                format!("put {key}={value} lease={lease:x}")
            } else {
                format!("put {key}={value}")
            }
        }
        TxnOp::Delete { key } => format!("delete {key}"),
    }
}

pub fn describe_kv(kv: &KeyValue) -> String {
    let lease = if kv.lease != 0 {
        format!(" lease={:x}", kv.lease)
    } else {
        String::new()
    };
    format!(
        "{}={} (create={} mod={} ver={}{lease})",
        kv.key, kv.value, kv.create_revision, kv.mod_revision, kv.version
    )
}

/// The one-line form of an outcome, for reports.
pub fn describe_outcome(o: &Outcome) -> String {
    match o {
        Outcome::Failed { error, .. } => format!("failed: {error}"),
        Outcome::Unknown { error } => format!("unknown: {error}"),
        Outcome::Ok(r) => match r {
            Response::Get { revision, kvs } => {
                if kvs.is_empty() {
                    format!("rev={revision} (none)")
                } else {
                    let kvs: Vec<String> = kvs.iter().map(describe_kv).collect();
                    format!("rev={revision} {}", kvs.join(", "))
                }
            }
            Response::Put { revision } => format!("rev={revision}"),
            Response::Delete { revision, deleted } => format!("rev={revision} deleted={deleted}"),
            Response::Txn {
                revision,
                succeeded,
                results,
            } => {
                let res: Vec<String> = results
                    .iter()
                    .map(|r| match r {
                        TxnOpResult::Get { kvs } if kvs.is_empty() => "(none)".to_string(),
                        TxnOpResult::Get { kvs } => {
                            kvs.iter().map(describe_kv).collect::<Vec<_>>().join(", ")
                        }
                        TxnOpResult::Put => "ok".into(),
                        TxnOpResult::Delete { deleted } => format!("deleted={deleted}"),
                    })
                    .collect();
                format!(
                    "rev={revision} {} [{}]",
                    if *succeeded { "then" } else { "else" },
                    res.join("; ")
                )
            }
            Response::LeaseGrant { lease, ttl_s } => format!("lease={lease:x} ttl={ttl_s}s"),
            Response::LeaseRevoke { revision } => format!("rev={revision}"),
            Response::LeaseKeepAlive { ttl_s } => format!("ttl={ttl_s}s"),
            Response::LeaseTimeToLive { ttl_s } => format!("ttl={ttl_s}s"),
        },
    }
}

/// The one-line form of an operation: times in milliseconds since the start;
/// members named m1, m2, ... like the cluster's (`member` is 0-based).
pub fn describe_op(op: &Operation) -> String {
    format!(
        "#{:<6} c{:<2} m{} [{:>9.3} ms .. {:>9.3} ms] {} -> {}",
        op.id,
        op.client,
        op.member + 1,
        op.invoked as f64 / 1e6,
        op.completed as f64 / 1e6,
        describe_request(&op.request),
        describe_outcome(&op.outcome)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_follow_etcd() {
        assert!(key_in_range("a", "a", None));
        assert!(!key_in_range("ab", "a", None));
        assert!(key_in_range("zz", "a", Some("\0")));
        assert!(key_in_range("a/x", "a/", Some(&prefix_end("a/"))));
        assert!(!key_in_range("a0", "a/", Some(&prefix_end("a/"))));
        assert_eq!(prefix_end("a/"), "a0");
    }
}
