//! Recording calls as history operations, and turning `etcd-client`
//! answers and errors into the checker's types.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cairn_robustness::history::{
    self, History, KeyValue, Operation, Outcome, Request, Response, TxnOpResult, Watch,
};

/// Longest a client waits for one call; then the outcome is unknown.
pub const OP_TIMEOUT: Duration = Duration::from_millis(2500);

/// The shared, append-only history of a run.
#[derive(Clone)]
pub struct Recorder {
    base: Instant,
    next_id: Arc<AtomicU64>,
    ops: Arc<Mutex<Vec<Operation>>>,
    watches: Arc<Mutex<std::collections::BTreeMap<u32, Watch>>>,
    next_watch: Arc<AtomicU64>,
}

impl Recorder {
    pub fn new(base: Instant) -> Recorder {
        Recorder {
            base,
            next_id: Arc::new(AtomicU64::new(1)),
            ops: Arc::new(Mutex::new(Vec::new())),
            watches: Arc::new(Mutex::new(std::collections::BTreeMap::new())),
            next_watch: Arc::new(AtomicU64::new(1)),
        }
    }

    /// Nanoseconds since the run's start.
    pub fn now(&self) -> u64 {
        self.at(Instant::now())
    }

    pub fn at(&self, t: Instant) -> u64 {
        t.saturating_duration_since(self.base).as_nanos() as u64
    }

    pub fn base(&self) -> Instant {
        self.base
    }

    /// Records a finished call; returns its id.
    pub fn record(
        &self,
        client: u32,
        member: u32,
        request: Request,
        invoked: u64,
        outcome: Outcome,
    ) -> u64 {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let op = Operation {
            id,
            client,
            member,
            request,
            invoked,
            completed: self.now(),
            outcome,
        };
        self.ops.lock().expect("history lock").push(op);
        id
    }

    pub fn watch_id(&self) -> u32 {
        self.next_watch.fetch_add(1, Ordering::Relaxed) as u32
    }

    pub fn add_watch(&self, w: Watch) {
        self.watches.lock().expect("history lock").insert(w.id, w);
    }

    /// Changes a watch's record in place (events arrive one response at a
    /// time; the record is shared with the end-of-run fence check).
    pub fn edit_watch<T>(&self, id: u32, f: impl FnOnce(&mut Watch) -> T) -> Option<T> {
        self.watches
            .lock()
            .expect("history lock")
            .get_mut(&id)
            .map(f)
    }

    pub fn history(&self) -> History {
        let mut operations = self.ops.lock().expect("history lock").clone();
        operations.sort_by_key(|o| o.id);
        let watches = self
            .watches
            .lock()
            .expect("history lock")
            .values()
            .cloned()
            .collect();
        History {
            operations,
            watches,
            ..History::default()
        }
    }

    pub fn ops(&self) -> Vec<Operation> {
        self.ops.lock().expect("history lock").clone()
    }
}

pub fn kv(kv: &etcd_client::KeyValue) -> KeyValue {
    KeyValue {
        key: String::from_utf8_lossy(kv.key()).into_owned(),
        value: String::from_utf8_lossy(kv.value()).into_owned(),
        create_revision: kv.create_revision(),
        mod_revision: kv.mod_revision(),
        version: kv.version(),
        lease: kv.lease(),
    }
}

pub fn kvs(list: &[etcd_client::KeyValue]) -> Vec<KeyValue> {
    list.iter().map(kv).collect()
}

fn header_rev(h: Option<&etcd_client::ResponseHeader>) -> i64 {
    h.map_or(0, |h| h.revision())
}

pub fn get_response(r: &etcd_client::GetResponse) -> Response {
    Response::Get {
        revision: header_rev(r.header()),
        kvs: kvs(r.kvs()),
    }
}

pub fn txn_response(r: &etcd_client::TxnResponse) -> Response {
    let results = r
        .op_responses()
        .iter()
        .map(|o| match o {
            etcd_client::TxnOpResponse::Put(_) => TxnOpResult::Put,
            etcd_client::TxnOpResponse::Get(g) => TxnOpResult::Get { kvs: kvs(g.kvs()) },
            etcd_client::TxnOpResponse::Delete(d) => TxnOpResult::Delete {
                deleted: d.deleted(),
            },
            etcd_client::TxnOpResponse::Txn(_) => TxnOpResult::Put,
        })
        .collect();
    Response::Txn {
        revision: header_rev(r.header()),
        succeeded: r.succeeded(),
        results,
    }
}

/// How an error ends a call: `Failed` only when the request certainly had
/// no effect (refused by the server before or instead of applying, or never
/// sent because the connection could not be made); otherwise `Unknown`.
pub fn classify(e: &etcd_client::Error) -> Outcome {
    let text = e.to_string();
    let never_sent = text.contains("Connection refused")
        || text.contains("tcp connect error")
        || text.contains("error trying to connect");
    if let etcd_client::Error::GRpcStatus(st) = e {
        use tonic::Code;
        let definite = matches!(
            st.code(),
            Code::InvalidArgument
                | Code::FailedPrecondition
                | Code::NotFound
                | Code::OutOfRange
                | Code::PermissionDenied
                | Code::AlreadyExists
                | Code::Unauthenticated
        );
        if definite || never_sent {
            return Outcome::Failed {
                error: st.message().to_string(),
                not_found: st.message().contains("lease not found"),
            };
        }
        return Outcome::Unknown {
            error: format!("{:?}: {}", st.code(), st.message()),
        };
    }
    if never_sent {
        return Outcome::Failed {
            error: text,
            not_found: false,
        };
    }
    // etcd-client's keep-alive call reads the first response itself and
    // turns a TTL of 0 (the lease is gone) into this error.
    if let etcd_client::Error::LeaseKeepAliveError(m) = e
        && m == "lease not found"
    {
        return Outcome::Failed {
            error: text,
            not_found: true,
        };
    }
    Outcome::Unknown { error: text }
}

/// True when the outcome says the member could not even be reached.
pub fn unreachable(o: &Outcome) -> bool {
    matches!(o, Outcome::Failed { error, .. } if error.contains("connect") || error.contains("Connection refused"))
}

/// Runs a call with the client timeout and classifies its end.
pub async fn call<T>(
    fut: impl std::future::Future<Output = Result<T, etcd_client::Error>>,
    ok: impl FnOnce(&T) -> Response,
) -> (Outcome, Option<T>) {
    match tokio::time::timeout(OP_TIMEOUT, fut).await {
        Ok(Ok(v)) => (Outcome::Ok(ok(&v)), Some(v)),
        Ok(Err(e)) => (classify(&e), None),
        Err(_) => (
            Outcome::Unknown {
                error: format!("no answer within {OP_TIMEOUT:?}"),
            },
            None,
        ),
    }
}

pub fn describe(o: &Outcome) -> String {
    history::describe_outcome(o)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(code: tonic::Code, msg: &str) -> etcd_client::Error {
        etcd_client::Error::GRpcStatus(tonic::Status::new(code, msg))
    }

    #[test]
    fn only_errors_without_effect_are_failures() {
        let lease = classify(&status(
            tonic::Code::NotFound,
            "etcdserver: requested lease not found",
        ));
        assert_eq!(
            lease,
            Outcome::Failed {
                error: "etcdserver: requested lease not found".into(),
                not_found: true
            }
        );
        assert!(matches!(
            classify(&status(
                tonic::Code::InvalidArgument,
                "etcdserver: duplicate key given in txn request"
            )),
            Outcome::Failed {
                not_found: false,
                ..
            }
        ));
        assert_eq!(
            classify(&etcd_client::Error::LeaseKeepAliveError(
                "lease not found".into()
            )),
            Outcome::Failed {
                error: "lease keep alive error: lease not found".into(),
                not_found: true
            }
        );
        // Never sent: the connection could not be made.
        assert!(matches!(
            classify(&status(
                tonic::Code::Unavailable,
                "error trying to connect: tcp connect error: Connection refused (os error 111)"
            )),
            Outcome::Failed { .. }
        ));
        // May still take effect.
        for (code, msg) in [
            (tonic::Code::Unavailable, "etcdserver: leader changed"),
            (tonic::Code::Unavailable, "etcdserver: request timed out"),
            (tonic::Code::DeadlineExceeded, "Timeout expired"),
            (tonic::Code::Cancelled, "Timeout expired"),
            (tonic::Code::Unknown, "transport error"),
        ] {
            assert!(
                matches!(classify(&status(code, msg)), Outcome::Unknown { .. }),
                "{code:?} {msg}"
            );
        }
    }
}
