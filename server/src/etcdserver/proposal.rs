//! Typed proposals: each kind of entry names the apply result it gets back,
//! so a handler proposing a `PutRequest` receives a `PutResponse` and never
//! matches on [`Applied`]. The apply loop answers each entry kind with one
//! `Applied` variant; the single place a mismatch could surface is
//! [`expect`], where it is a bug in apply, reported as `Internal`.

use super::Applied;
use crate::error::Error;
use crate::pb::cairnpb::internal_request::Request;
use crate::pb::cairnpb::{AlarmEntry, AuthenticateEntry, MemberRecord, PluginSetChange};
use crate::pb::etcdserverpb::*;

/// An entry kind and the apply result it gets.
pub trait Proposal {
    type Response;
    fn into_request(self) -> Request;
    /// The response, or the `Applied` back if apply answered another kind
    /// (a bug, reported with what came back; the size of that cold path
    /// does not matter).
    #[allow(clippy::result_large_err)]
    fn response(applied: Applied) -> Result<Self::Response, Applied>;
}

/// The typed response for `P` from what apply answered.
pub(crate) fn expect<P: Proposal>(applied: Applied) -> Result<P::Response, Error> {
    P::response(applied).map_err(|other| {
        Error::Internal(format!(
            "apply answered {other:?} to a {}",
            std::any::type_name::<P>()
        ))
    })
}

/// One entry kind per line: request type, `Request` variant, `Applied`
/// variant holding the response.
macro_rules! proposals {
    ($($req:ty => $variant:ident, $applied:ident($resp:ty);)*) => {
        $(impl Proposal for $req {
            type Response = $resp;
            fn into_request(self) -> Request {
                Request::$variant(self)
            }
            fn response(applied: Applied) -> Result<$resp, Applied> {
                match applied {
                    Applied::$applied(r) => Ok(r),
                    other => Err(other),
                }
            }
        })*
    };
}

proposals! {
    PutRequest => Put, Put(PutResponse);
    DeleteRangeRequest => DeleteRange, DeleteRange(DeleteRangeResponse);
    TxnRequest => Txn, Txn(TxnResponse);
    CompactionRequest => Compaction, Compaction(CompactionResponse);
    LeaseGrantRequest => LeaseGrant, LeaseGrant(LeaseGrantResponse);
    LeaseRevokeRequest => LeaseRevoke, LeaseRevoke(LeaseRevokeResponse);
    AlarmEntry => Alarm, Alarms(Vec<AlarmMember>);
    PluginSetChange => PluginSet, Plugins(crate::policy::SetOutcome);
}

/// The leader's lease checkpoints: recorded, nothing to report.
impl Proposal for LeaseCheckpointRequest {
    type Response = ();
    fn into_request(self) -> Request {
        Request::LeaseCheckpoint(self)
    }
    fn response(applied: Applied) -> Result<(), Applied> {
        match applied {
            Applied::LeaseCheckpointed => Ok(()),
            other => Err(other),
        }
    }
}

/// A member publishing its name and client URLs.
impl Proposal for crate::pb::cairnpb::MemberAttributes {
    type Response = ();
    fn into_request(self) -> Request {
        Request::Publish(self)
    }
    fn response(applied: Applied) -> Result<(), Applied> {
        match applied {
            Applied::Published => Ok(()),
            other => Err(other),
        }
    }
}

/// New peer URLs for a member: applied, nothing to report.
impl Proposal for MemberRecord {
    type Response = ();
    fn into_request(self) -> Request {
        Request::MemberUpdate(self)
    }
    fn response(applied: Applied) -> Result<(), Applied> {
        match applied {
            Applied::Member => Ok(()),
            other => Err(other),
        }
    }
}

/// A login the server verified: the token and the auth revision it is at.
pub struct Login {
    pub token: String,
    pub revision: u64,
}

impl Proposal for AuthenticateEntry {
    type Response = Login;
    fn into_request(self) -> Request {
        Request::Authenticate(self)
    }
    fn response(applied: Applied) -> Result<Login, Applied> {
        match applied {
            Applied::Authenticated { token, revision } => Ok(Login { token, revision }),
            other => Err(other),
        }
    }
}

/// A v2 request, encoded by the v2 module.
pub struct V2Entry(pub bytes::Bytes);

/// What applying a v2 request gave: its event (none for `sync`) or the
/// store's refusal, and the entry's raft position for
/// `X-Raft-Index`/`X-Raft-Term`.
pub struct V2Outcome {
    pub outcome: Result<Option<crate::v2::V2Event>, crate::v2::V2Error>,
    pub raft_index: u64,
    pub raft_term: u64,
}

impl Proposal for V2Entry {
    type Response = V2Outcome;
    fn into_request(self) -> Request {
        Request::V2(self.0)
    }
    fn response(applied: Applied) -> Result<V2Outcome, Applied> {
        match applied {
            Applied::V2 {
                outcome,
                raft_index,
                raft_term,
            } => Ok(V2Outcome {
                outcome,
                raft_index,
                raft_term,
            }),
            other => Err(other),
        }
    }
}

/// An auth-management write (the Auth service's writes), which every such
/// request gets: applied, nothing to report.
pub struct AuthWrite(pub Request);

impl Proposal for AuthWrite {
    type Response = ();
    fn into_request(self) -> Request {
        self.0
    }
    fn response(applied: Applied) -> Result<(), Applied> {
        match applied {
            Applied::AuthDone => Ok(()),
            other => Err(other),
        }
    }
}
