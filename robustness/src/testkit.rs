//! Hand-written histories for the checkers' unit tests. Times are in
//! milliseconds; revisions and values are spelled out.

use crate::history::*;

pub(crate) fn kv(key: &str, value: &str, create: Rev, modr: Rev, version: i64) -> KeyValue {
    KeyValue {
        key: key.into(),
        value: value.into(),
        create_revision: create,
        mod_revision: modr,
        version,
        lease: 0,
    }
}

pub(crate) fn leased(mut kv: KeyValue, lease: LeaseId) -> KeyValue {
    kv.lease = lease;
    kv
}

/// Builds a history call by call.
#[derive(Default)]
pub(crate) struct H {
    pub h: History,
}

const MS: u64 = 1_000_000;

impl H {
    pub fn new() -> H {
        H::default()
    }

    pub fn op(&mut self, client: u32, t: (u64, u64), request: Request, outcome: Outcome) -> u64 {
        let id = self.h.operations.len() as u64 + 1;
        self.h.operations.push(Operation {
            id,
            client,
            member: 0,
            request,
            invoked: t.0 * MS,
            completed: t.1 * MS,
            outcome,
        });
        id
    }

    pub fn put(&mut self, t: (u64, u64), key: &str, value: &str, rev: Rev) -> u64 {
        self.op(
            0,
            t,
            Request::Put {
                key: key.into(),
                value: value.into(),
                lease: 0,
            },
            Outcome::Ok(Response::Put { revision: rev }),
        )
    }

    pub fn put_lease(&mut self, t: (u64, u64), key: &str, value: &str, lease: LeaseId, rev: Rev) {
        self.op(
            0,
            t,
            Request::Put {
                key: key.into(),
                value: value.into(),
                lease,
            },
            Outcome::Ok(Response::Put { revision: rev }),
        );
    }

    pub fn put_unknown(&mut self, t: (u64, u64), key: &str, value: &str) {
        self.op(
            0,
            t,
            Request::Put {
                key: key.into(),
                value: value.into(),
                lease: 0,
            },
            Outcome::Unknown {
                error: "timeout".into(),
            },
        );
    }

    pub fn get(&mut self, t: (u64, u64), key: &str, rev: Rev, kv: Option<KeyValue>) -> u64 {
        self.get_mode(t, key, rev, kv, false)
    }

    pub fn get_mode(
        &mut self,
        t: (u64, u64),
        key: &str,
        rev: Rev,
        kv: Option<KeyValue>,
        serializable: bool,
    ) -> u64 {
        self.op(
            1,
            t,
            Request::Get {
                key: key.into(),
                range_end: None,
                serializable,
            },
            Outcome::Ok(Response::Get {
                revision: rev,
                kvs: kv.into_iter().collect(),
            }),
        )
    }

    pub fn range(&mut self, t: (u64, u64), prefix: &str, rev: Rev, kvs: Vec<KeyValue>) {
        self.op(
            1,
            t,
            Request::Get {
                key: prefix.into(),
                range_end: Some(prefix_end(prefix)),
                serializable: false,
            },
            Outcome::Ok(Response::Get { revision: rev, kvs }),
        );
    }

    pub fn delete(&mut self, t: (u64, u64), key: &str, rev: Rev, deleted: i64) {
        self.op(
            0,
            t,
            Request::Delete { key: key.into() },
            Outcome::Ok(Response::Delete {
                revision: rev,
                deleted,
            }),
        );
    }

    /// `if mod(key) == m then put key=value else get key`.
    pub fn cas(&mut self, t: (u64, u64), key: &str, m: Rev, value: &str, outcome: Outcome) -> u64 {
        self.op(
            2,
            t,
            Request::Txn {
                compares: vec![Compare {
                    key: key.into(),
                    op: CompareOp::Equal,
                    target: CompareTarget::ModRevision(m),
                }],
                success: vec![TxnOp::Put {
                    key: key.into(),
                    value: value.into(),
                    lease: 0,
                }],
                failure: vec![TxnOp::Get { key: key.into() }],
            },
            outcome,
        )
    }

    pub fn grant(&mut self, t: (u64, u64), lease: LeaseId, ttl_s: i64) {
        self.op(
            3,
            t,
            Request::LeaseGrant { ttl_s },
            Outcome::Ok(Response::LeaseGrant { lease, ttl_s }),
        );
    }

    pub fn revoke(&mut self, t: (u64, u64), lease: LeaseId, rev: Rev) {
        self.op(
            3,
            t,
            Request::LeaseRevoke { lease },
            Outcome::Ok(Response::LeaseRevoke { revision: rev }),
        );
    }

    pub fn keepalive(&mut self, t: (u64, u64), lease: LeaseId, ttl_s: i64) {
        self.op(
            3,
            t,
            Request::LeaseKeepAlive { lease },
            Outcome::Ok(Response::LeaseKeepAlive { ttl_s }),
        );
    }

    pub fn time_to_live(&mut self, t: (u64, u64), lease: LeaseId, ttl_s: i64) {
        self.op(
            3,
            t,
            Request::LeaseTimeToLive { lease },
            Outcome::Ok(Response::LeaseTimeToLive { ttl_s }),
        );
    }

    pub fn watch(&mut self, member: u32, prefix: &str, created: Rev, events: Vec<Event>) -> u32 {
        let id = self.h.watches.len() as u32 + 1;
        self.h.watches.push(Watch {
            id,
            member,
            key: prefix.into(),
            range_end: Some(prefix_end(prefix)),
            start_revision: 0,
            created_revision: Some(created),
            events: events
                .into_iter()
                .enumerate()
                .map(|(i, event)| ReceivedEvent {
                    at: i as u64 * MS,
                    event,
                })
                .collect(),
            resumes: None,
            complete_through: None,
            end: String::new(),
        });
        id
    }
}

pub(crate) fn put_event(kv: KeyValue) -> Event {
    Event {
        kind: EventKind::Put,
        kv,
    }
}

pub(crate) fn delete_event(key: &str, rev: Rev) -> Event {
    Event {
        kind: EventKind::Delete,
        kv: KeyValue {
            key: key.into(),
            value: String::new(),
            create_revision: 0,
            mod_revision: rev,
            version: 0,
            lease: 0,
        },
    }
}
