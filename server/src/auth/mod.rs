//! etcd v3 authentication and authorization: users, roles, key
//! permissions, password hashes and tokens, with etcd 3.4's semantics and
//! error text.
//!
//! - [`store::AuthStore`]: the replicated state machine (deterministic;
//!   mutated only by the apply loop) and the permission checks, including
//!   the single decision point [`AuthStore::authorize`].
//! - [`password`]: bcrypt hashing, done by the proposing member before a
//!   request enters raft, and verification.
//! - [`tokens`]: the `simple` and `jwt` token providers.
//! - [`error::AuthError`]: etcd's messages and gRPC codes
//!   (`impl From<AuthError> for tonic::Status`).
//!
//! How a request flows (etcd 3.4's design, which Cairn keeps):
//! 1. The API layer turns the `token` metadata into an [`AuthInfo`]
//!    (`TokenProvider::info`; no token: `None`).
//! 2. Reads (Range, Watch, read-only Txn) are checked on the serving member
//!    with `AuthStore::authorize_request` before reading, and
//!    `AuthStore::check_unchanged` after.
//! 3. Writes carry the `AuthInfo` in their raft entry and are checked in
//!    the apply loop against the auth state at that point of the log, so
//!    every member reaches the same verdict.

pub mod error;
pub mod password;
mod perms;
pub mod store;
pub mod tokens;
pub mod verified;

pub use error::AuthError;
pub use password::{hash_password, verify_password};
pub use store::{
    Access, AuthInfo, AuthStore, PasswordCheck, prepare_change_password, prepare_user_add,
};
pub use tokens::{Now, TokenConfig, TokenProvider, parse_token_option};

/// The user that must exist, with [`ROOT_ROLE`], before auth can be enabled.
pub const ROOT_USER: &str = "root";
/// The role that may do everything. It needs no role record: holding a
/// role of this name is what counts.
pub const ROOT_ROLE: &str = "root";

/// What a caller presented to prove who they are, kept with the request so
/// that a follower can forward it when the leader decides (membership
/// changes): the leader checks the caller again rather than trusting the
/// follower's word.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Credential {
    /// An auth token (simple or JWT, or one a plugin issued).
    Token(String),
    /// The common name of a client certificate the receiving member
    /// verified.
    CommonName(String),
}
