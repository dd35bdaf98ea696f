//! Auth errors with etcd 3.4's exact client-facing text and gRPC codes.
//!
//! etcd has two layers of auth errors: the auth package's own (`auth: …`)
//! and the gRPC statuses the API layer translates them into
//! (`etcdserver: …`). clientv3 matches the translated text exactly, so
//! `Display` gives the translated text for every error etcd translates,
//! and the raw `auth: …` text (with `codes.Unknown`) for the few it does
//! not: those reach etcd clients untranslated too (seen with etcd 3.4.23,
//! e.g. authenticating a `--no-password` user).

use tonic::{Code, Status};

/// An auth failure. `Display` is what an etcd 3.4 client sees; see
/// [`AuthError::code`] for the gRPC code and [`AuthError::raw_message`]
/// for the untranslated `auth: …` text.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("etcdserver: root user does not exist")]
    RootUserNotExist,
    #[error("etcdserver: root user does not have root role")]
    RootRoleNotExist,
    #[error("etcdserver: user name already exists")]
    UserAlreadyExist,
    #[error("etcdserver: user name is empty")]
    UserEmpty,
    #[error("etcdserver: user name not found")]
    UserNotFound,
    #[error("etcdserver: role name already exists")]
    RoleAlreadyExist,
    #[error("etcdserver: role name not found")]
    RoleNotFound,
    #[error("etcdserver: role name is empty")]
    RoleEmpty,
    #[error("etcdserver: authentication failed, invalid user ID or password")]
    AuthFailed,
    #[error("etcdserver: permission denied")]
    PermissionDenied,
    #[error("etcdserver: role is not granted to the user")]
    RoleNotGranted,
    #[error("etcdserver: permission is not granted to the role")]
    PermissionNotGranted,
    /// A grant request without a permission. etcd 3.4.23 crashes on it
    /// (nil dereference while applying); later etcd releases answer this.
    #[error("etcdserver: permission not given")]
    PermissionNotGiven,
    #[error("etcdserver: authentication is not enabled")]
    AuthNotEnabled,
    #[error("etcdserver: invalid auth token")]
    InvalidAuthToken,
    #[error("etcdserver: invalid auth management")]
    InvalidAuthMgmt,
    #[error("etcdserver: revision of auth store is old")]
    AuthOldRevision,

    // --- not translated by etcd: clients get `codes.Unknown` and this text.
    #[error("auth: authentication failed, password was given for no password user")]
    NoPasswordUser,
    #[error("auth: token signing attempted with verify-only key")]
    VerifyOnly,

    // --- configuration (`--auth-token`, `--bcrypt-cost`): startup errors.
    #[error("auth: invalid auth options")]
    InvalidAuthOpts,
    #[error("auth: invalid auth signature method")]
    InvalidAuthMethod,
    #[error("auth: missing key data")]
    MissingKey,
    #[error("auth: public and private keys don't match")]
    KeyMismatch,
    /// A key file that could not be read or parsed (our wording).
    #[error("auth: invalid key: {0}")]
    InvalidKey(String),
    /// `--bcrypt-cost` outside 4..=31 (our wording).
    #[error("auth: invalid bcrypt cost {0} (must be 4 to 31)")]
    InvalidBcryptCost(u32),

    /// A broken invariant inside this member: undecodable persisted state,
    /// an unhashed password reaching the apply loop, a hashing failure.
    /// The text is ours; etcd answers such cases with `codes.Unknown` too.
    #[error("cairn: auth: {0}")]
    Internal(String),
}

impl AuthError {
    /// The gRPC code etcd 3.4 answers this error with.
    pub fn code(&self) -> Code {
        use AuthError::*;
        match self {
            RootUserNotExist | RootRoleNotExist | UserAlreadyExist | UserNotFound
            | RoleAlreadyExist | RoleNotFound | RoleNotGranted | PermissionNotGranted
            | AuthNotEnabled => Code::FailedPrecondition,
            UserEmpty | RoleEmpty | AuthFailed | PermissionNotGiven | InvalidAuthMgmt
            | AuthOldRevision => Code::InvalidArgument,
            PermissionDenied => Code::PermissionDenied,
            InvalidAuthToken => Code::Unauthenticated,
            NoPasswordUser | VerifyOnly | InvalidAuthOpts | InvalidAuthMethod | MissingKey
            | KeyMismatch | InvalidKey(_) | InvalidBcryptCost(_) | Internal(_) => Code::Unknown,
        }
    }

    /// etcd's auth-package text (`auth: …`), before the API layer
    /// translates it. etcd 3.4's Maintenance service does not translate:
    /// a non-root `defrag`, `hashkv` or `snapshot` gets
    /// `Status::new(Code::Unknown, "auth: permission denied")` — see
    /// [`AuthError::untranslated_status`].
    pub fn raw_message(&self) -> String {
        use AuthError::*;
        let s = match self {
            RootUserNotExist => "auth: root user does not exist",
            RootRoleNotExist => "auth: root user does not have root role",
            UserAlreadyExist => "auth: user already exists",
            UserEmpty => "auth: user name is empty",
            UserNotFound => "auth: user not found",
            RoleAlreadyExist => "auth: role already exists",
            RoleNotFound => "auth: role not found",
            RoleEmpty => "auth: role name is empty",
            AuthFailed => "auth: authentication failed, invalid user ID or password",
            PermissionDenied => "auth: permission denied",
            RoleNotGranted => "auth: role is not granted to the user",
            PermissionNotGranted => "auth: permission is not granted to the role",
            PermissionNotGiven => "auth: permission not given",
            AuthNotEnabled => "auth: authentication is not enabled",
            InvalidAuthToken => "auth: invalid auth token",
            InvalidAuthMgmt => "auth: invalid auth management",
            AuthOldRevision => "auth: revision in header is old",
            _ => return self.to_string(),
        };
        s.to_string()
    }

    /// The status etcd 3.4's Maintenance service answers (code Unknown,
    /// untranslated text).
    pub fn untranslated_status(&self) -> Status {
        Status::new(Code::Unknown, self.raw_message())
    }
}

/// The status a client sees. The lead maps `AuthError` into responses
/// through this (the crate-wide `crate::error::Error` has no auth variants).
impl From<AuthError> for Status {
    fn from(e: AuthError) -> Status {
        Status::new(e.code(), e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_and_codes_match_etcd_3_4() {
        // Every pair below was observed from etcd 3.4.23 (etcdctl or the
        // JSON gateway, which shows the numeric code).
        let cases: &[(AuthError, Code, &str)] = &[
            (
                AuthError::RootUserNotExist,
                Code::FailedPrecondition,
                "etcdserver: root user does not exist",
            ),
            (
                AuthError::RootRoleNotExist,
                Code::FailedPrecondition,
                "etcdserver: root user does not have root role",
            ),
            (
                AuthError::UserAlreadyExist,
                Code::FailedPrecondition,
                "etcdserver: user name already exists",
            ),
            (
                AuthError::UserEmpty,
                Code::InvalidArgument,
                "etcdserver: user name is empty",
            ),
            (
                AuthError::UserNotFound,
                Code::FailedPrecondition,
                "etcdserver: user name not found",
            ),
            (
                AuthError::RoleAlreadyExist,
                Code::FailedPrecondition,
                "etcdserver: role name already exists",
            ),
            (
                AuthError::RoleNotFound,
                Code::FailedPrecondition,
                "etcdserver: role name not found",
            ),
            (
                AuthError::RoleEmpty,
                Code::InvalidArgument,
                "etcdserver: role name is empty",
            ),
            (
                AuthError::AuthFailed,
                Code::InvalidArgument,
                "etcdserver: authentication failed, invalid user ID or password",
            ),
            (
                AuthError::PermissionDenied,
                Code::PermissionDenied,
                "etcdserver: permission denied",
            ),
            (
                AuthError::RoleNotGranted,
                Code::FailedPrecondition,
                "etcdserver: role is not granted to the user",
            ),
            (
                AuthError::PermissionNotGranted,
                Code::FailedPrecondition,
                "etcdserver: permission is not granted to the role",
            ),
            (
                AuthError::AuthNotEnabled,
                Code::FailedPrecondition,
                "etcdserver: authentication is not enabled",
            ),
            (
                AuthError::InvalidAuthToken,
                Code::Unauthenticated,
                "etcdserver: invalid auth token",
            ),
            (
                AuthError::InvalidAuthMgmt,
                Code::InvalidArgument,
                "etcdserver: invalid auth management",
            ),
            (
                AuthError::AuthOldRevision,
                Code::InvalidArgument,
                "etcdserver: revision of auth store is old",
            ),
            (
                AuthError::NoPasswordUser,
                Code::Unknown,
                "auth: authentication failed, password was given for no password user",
            ),
        ];
        for (e, code, text) in cases {
            let s: Status = e.clone().into();
            assert_eq!(s.code(), *code, "{e:?}");
            assert_eq!(s.message(), *text, "{e:?}");
        }
    }

    #[test]
    fn maintenance_gets_the_untranslated_text() {
        let s = AuthError::PermissionDenied.untranslated_status();
        assert_eq!(s.code(), Code::Unknown);
        assert_eq!(s.message(), "auth: permission denied");
        assert_eq!(
            AuthError::NoPasswordUser.raw_message(),
            AuthError::NoPasswordUser.to_string()
        );
    }
}
