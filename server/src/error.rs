//! The errors clients see, with etcd's exact gRPC codes and messages.
//!
//! etcd's Go client turns a status back into a typed error by matching the
//! message text exactly, so these strings are API: never reword them.

use tonic::{Code, Status};

/// An error answered to a client. `Display` is etcd's message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    #[error("etcdserver: key is not provided")]
    EmptyKey,
    #[error("etcdserver: key not found")]
    KeyNotFound,
    #[error("etcdserver: value is provided")]
    ValueProvided,
    #[error("etcdserver: lease is provided")]
    LeaseProvided,
    #[error("etcdserver: too many operations in txn request")]
    TooManyOps,
    #[error("etcdserver: duplicate key given in txn request")]
    DuplicateKey,
    #[error("etcdserver: request is too large")]
    RequestTooLarge,
    #[error("etcdserver: too many requests")]
    TooManyRequests,
    #[error("etcdserver: mvcc: required revision has been compacted")]
    Compacted,
    #[error("etcdserver: mvcc: required revision is a future revision")]
    FutureRev,
    #[error("etcdserver: mvcc: database space exceeded")]
    NoSpace,
    #[error("etcdserver: requested lease not found")]
    LeaseNotFound,
    #[error("etcdserver: lease already exists")]
    LeaseExists,
    #[error("etcdserver: too large lease TTL")]
    LeaseTtlTooLarge,
    #[error("etcdserver: member not found")]
    MemberNotFound,
    #[error("etcdserver: member ID already exist")]
    MemberExists,
    #[error("etcdserver: Peer URLs already exists")]
    PeerUrlExists,
    #[error("etcdserver: given member URLs are invalid")]
    MemberBadUrls,
    #[error("etcdserver: too many learner members in cluster")]
    TooManyLearners,
    #[error("etcdserver: can only promote a learner member")]
    MemberNotLearner,
    #[error("etcdserver: can only promote a learner member which is in sync with leader")]
    LearnerNotReady,
    #[error("etcdserver: re-configuration failed due to not enough started members")]
    NotEnoughStartedMembers,
    #[error("etcdserver: unhealthy cluster")]
    Unhealthy,
    #[error("etcdserver: not leader")]
    NotLeader,
    #[error("etcdserver: bad leader transferee")]
    BadLeaderTransferee,
    #[error("etcdserver: no leader")]
    NoLeader,
    #[error("etcdserver: leader changed")]
    LeaderChanged,
    #[error("etcdserver: request timed out")]
    Timeout,
    #[error("etcdserver: request timed out, possibly due to previous leader failure")]
    TimeoutDueToLeaderFail,
    #[error("etcdserver: server stopped")]
    Stopped,
    #[error("etcdserver: rpc not supported for learner")]
    NotSupportedForLearner,
    #[error("etcdserver: corrupt cluster")]
    Corrupt,
    /// An auth refusal, with etcd's text and code (see `crate::auth`).
    #[error(transparent)]
    Auth(#[from] crate::auth::AuthError),
    /// A policy plugin denied the request (`what`: "the write" or "access").
    #[error("cairn: plugin {plugin:?} denied {what}: {reason}")]
    PluginDenied {
        plugin: String,
        what: String,
        reason: String,
    },
    /// A policy plugin could not answer and fails closed.
    #[error(
        "cairn: plugin {plugin:?} failed ({kind}) and fails closed, so the request was refused: {cause}"
    )]
    PluginFailed {
        plugin: String,
        kind: String,
        cause: String,
    },
    /// The plugin set changed between judging a write and applying it (the
    /// proposer judges it again; clients see this only if that keeps
    /// happening, and may retry).
    #[error("cairn: the plugin set changed while the request was being judged; retry")]
    PluginSetChanged,
    /// A plugin-set change the cluster refuses (bad record, missing binary).
    #[error("cairn: plugin set change refused: {0}")]
    PluginSetRejected(String),
    /// A failure inside this member (storage I/O, a broken invariant). The
    /// text is ours; etcd answers such cases with codes.Unknown too.
    #[error("cairn: internal error: {0}")]
    Internal(String),
}

impl Error {
    pub fn code(&self) -> Code {
        use Error::*;
        match self {
            EmptyKey | KeyNotFound | ValueProvided | LeaseProvided | TooManyOps | DuplicateKey
            | RequestTooLarge => Code::InvalidArgument,
            TooManyRequests | NoSpace => Code::ResourceExhausted,
            Compacted | FutureRev | LeaseTtlTooLarge => Code::OutOfRange,
            LeaseExists => Code::FailedPrecondition,
            LeaseNotFound | MemberNotFound => Code::NotFound,
            MemberExists
            | PeerUrlExists
            | TooManyLearners
            | MemberNotLearner
            | LearnerNotReady
            | NotEnoughStartedMembers
            | NotLeader
            | BadLeaderTransferee => Code::FailedPrecondition,
            MemberBadUrls => Code::InvalidArgument,
            Unhealthy => Code::Unavailable,
            NoLeader | LeaderChanged | Timeout | TimeoutDueToLeaderFail | Stopped => {
                Code::Unavailable
            }
            NotSupportedForLearner => Code::Unavailable,
            Corrupt => Code::DataLoss,
            Auth(e) => e.code(),
            PluginDenied { .. } | PluginFailed { .. } => Code::FailedPrecondition,
            PluginSetChanged => Code::Unavailable,
            PluginSetRejected(_) => Code::InvalidArgument,
            Internal(_) => Code::Unknown,
        }
    }
}

impl Error {
    /// The error a status stands for, matched by etcd's message text (how
    /// clientv3 does it); used for answers forwarded from another member.
    pub fn from_status(s: &Status) -> Error {
        use Error::*;
        let known = [
            EmptyKey,
            KeyNotFound,
            ValueProvided,
            LeaseProvided,
            TooManyOps,
            DuplicateKey,
            RequestTooLarge,
            TooManyRequests,
            Compacted,
            FutureRev,
            NoSpace,
            LeaseNotFound,
            LeaseExists,
            LeaseTtlTooLarge,
            MemberNotFound,
            MemberExists,
            PeerUrlExists,
            MemberBadUrls,
            TooManyLearners,
            MemberNotLearner,
            LearnerNotReady,
            NotEnoughStartedMembers,
            Unhealthy,
            NotLeader,
            BadLeaderTransferee,
            NoLeader,
            LeaderChanged,
            Timeout,
            TimeoutDueToLeaderFail,
            Stopped,
            NotSupportedForLearner,
            Corrupt,
        ];
        if let Some(e) = known.into_iter().find(|e| e.to_string() == s.message()) {
            return e;
        }
        // The leader's verdicts on a forwarded caller: kept as auth errors,
        // so the client gets etcd's code with them (its library logs in
        // again on `Unauthenticated` + "invalid auth token").
        use crate::auth::AuthError as A;
        let auth = [
            A::UserEmpty,
            A::AuthFailed,
            A::PermissionDenied,
            A::InvalidAuthToken,
            A::InvalidAuthMgmt,
            A::AuthOldRevision,
            A::AuthNotEnabled,
        ];
        auth.into_iter()
            .find(|e| e.to_string() == s.message())
            .map_or_else(|| Internal(s.message().to_string()), Auth)
    }
}

impl From<Error> for Status {
    fn from(e: Error) -> Status {
        Status::new(e.code(), e.to_string())
    }
}

impl From<crate::storage::Error> for Error {
    fn from(e: crate::storage::Error) -> Error {
        Error::Internal(e.to_string())
    }
}

impl From<crate::storage::mvcc::MvccError> for Error {
    fn from(e: crate::storage::mvcc::MvccError) -> Error {
        use crate::storage::mvcc::MvccError;
        match e {
            MvccError::Compacted => Error::Compacted,
            MvccError::FutureRev => Error::FutureRev,
            MvccError::Storage(s) => s.into(),
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_and_codes_match_etcd() {
        let s: Status = Error::Compacted.into();
        assert_eq!(s.code(), Code::OutOfRange);
        assert_eq!(
            s.message(),
            "etcdserver: mvcc: required revision has been compacted"
        );
        let s: Status = Error::NoLeader.into();
        assert_eq!(s.code(), Code::Unavailable);
        assert_eq!(s.message(), "etcdserver: no leader");
        let s: Status = Error::DuplicateKey.into();
        assert_eq!(s.code(), Code::InvalidArgument);
    }

    /// An answer forwarded from the leader keeps etcd's code and text.
    #[test]
    fn forwarded_answers_keep_their_code() {
        for e in [
            Error::LeaseNotFound,
            Error::NotLeader,
            Error::Auth(crate::auth::AuthError::InvalidAuthToken),
            Error::Auth(crate::auth::AuthError::PermissionDenied),
        ] {
            let s: Status = e.into();
            let back: Status = Error::from_status(&s).into();
            assert_eq!((back.code(), back.message()), (s.code(), s.message()));
        }
        let s: Status = Error::Auth(crate::auth::AuthError::InvalidAuthToken).into();
        assert_eq!(s.code(), Code::Unauthenticated);
    }
}
