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
            NoLeader | LeaderChanged | Timeout | TimeoutDueToLeaderFail | Stopped => {
                Code::Unavailable
            }
            NotSupportedForLearner => Code::Unavailable,
            Corrupt => Code::DataLoss,
            Internal(_) => Code::Unknown,
        }
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
}
