//! Who is asking, and until when.
//!
//! A [`RequestCtx`] is made once per client request, where the request
//! enters (the API layer resolves the token or certificate, `api::auth`),
//! and passed explicitly to every server operation the request causes:
//! auth checks, plugin judgements, the proposal (whose raft entry carries
//! the caller, checked again on apply) and forwarding to the leader (which
//! carries the credential). Its deadline is fixed there too, so every
//! stage after — judging, proposing, waiting for apply or a ReadIndex —
//! shares one `--request-timeout`.
//!
//! Requests the server makes on its own behalf (lease expiry, publishing
//! itself, a login it verified) take no context: they go through
//! `propose_internal`, which no auth check applies to. A request without a
//! resolved caller is anonymous, which auth refuses when it is on: a missing
//! caller fails closed.

use crate::auth::{AuthInfo, Credential};
use crate::pb::cairnpb::RequestAuth;
use tokio::time::Instant;

#[derive(Debug, Clone)]
pub struct RequestCtx {
    caller: Option<AuthInfo>,
    credential: Option<Credential>,
    deadline: Instant,
}

impl RequestCtx {
    /// `caller` proved who it is with `credential`; the request may take
    /// until `deadline`.
    pub fn new(
        caller: Option<AuthInfo>,
        credential: Option<Credential>,
        deadline: Instant,
    ) -> RequestCtx {
        RequestCtx {
            caller,
            credential,
            deadline,
        }
    }

    /// No token, no certificate.
    pub fn anonymous(deadline: Instant) -> RequestCtx {
        RequestCtx::new(None, None, deadline)
    }

    pub fn caller(&self) -> Option<&AuthInfo> {
        self.caller.as_ref()
    }

    pub fn credential(&self) -> Option<&Credential> {
        self.credential.as_ref()
    }

    pub fn deadline(&self) -> Instant {
        self.deadline
    }

    /// The same request, now as `caller` (a handler that authenticated the
    /// user itself, e.g. the v2 API's Basic credentials).
    pub fn as_caller(&self, caller: Option<AuthInfo>) -> RequestCtx {
        RequestCtx {
            caller,
            ..self.clone()
        }
    }

    /// The same caller with a new deadline: a long-lived stream (watch,
    /// lease keep-alive) makes one per request it sends on.
    pub fn until(&self, deadline: Instant) -> RequestCtx {
        RequestCtx {
            deadline,
            ..self.clone()
        }
    }

    /// What a proposal's raft entry carries, for the apply loop's check.
    pub fn request_auth(&self) -> RequestAuth {
        match &self.caller {
            Some(i) => RequestAuth {
                username: i.username.clone(),
                revision: i.revision,
            },
            None => RequestAuth::default(),
        }
    }

    /// The caller's user name, for plugins.
    pub fn principal(&self) -> Option<String> {
        self.caller.as_ref().map(|i| i.username.clone())
    }
}
