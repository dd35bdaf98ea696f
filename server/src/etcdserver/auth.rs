//! Auth on the server side: who is calling, the checks reads and admin calls
//! make, and the Auth service's operations.
//!
//! Who is calling comes in the request's [`RequestCtx`], which the API
//! layer makes from the request's token or certificate before any handler
//! runs; every path — KV, lock and election (built on KV), the JSON
//! gateway — passes it down. A request with no resolved caller is
//! anonymous, which auth refuses: nothing fails open.
//!
//! Writes are checked in the apply loop against the auth state at that
//! point of the log (the entry carries the caller, see `propose`), so every
//! member reaches the same verdict. Reads are checked on the serving member
//! before reading and re-checked after (`check_unchanged`), as etcd does.

use super::{EtcdServer, RequestCtx};
pub use crate::auth::Credential;
use crate::auth::tokens::simple::SimpleTokens;
use crate::auth::{Access, AuthError, AuthInfo, AuthStore, Now, TokenProvider};
use crate::error::Error;
use crate::pb::cairnpb::internal_request::Request;
use crate::pb::cairnpb::{AuthenticateEntry, RequestAuth};
use crate::pb::etcdserverpb::*;
use parking_lot::RwLock;
use std::sync::atomic::Ordering;
use std::time::Duration;

/// A simple token whose index is further ahead of this member's log than
/// this cannot be one the cluster issued recently: refuse it at once
/// instead of waiting for the index to be applied.
const MAX_TOKEN_INDEX_AHEAD: u64 = 10_000;
/// etcd retries `Authenticate` when the auth store changed between the
/// password check and the apply; this many times.
const AUTHENTICATE_ATTEMPTS: usize = 3;

/// The caller recorded in an entry, as the auth store expects it.
pub fn entry_caller(a: &RequestAuth) -> Option<AuthInfo> {
    (a.revision != 0).then(|| AuthInfo {
        username: a.username.clone(),
        revision: a.revision,
    })
}

/// The replicated auth store, this member's tokens and the hashing cost.
pub struct AuthState {
    pub store: RwLock<AuthStore>,
    pub tokens: TokenProvider,
    pub bcrypt_cost: u32,
    /// Passwords bcrypt accepted lately (bounded, keyed fingerprints).
    pub verified: crate::auth::verified::VerifiedPasswords,
    /// bcrypt runs at once (see [`bcrypt_slots`]).
    pub bcrypt_slots: tokio::sync::Semaphore,
}

/// How long a password check waits for a bcrypt slot before the request
/// is refused with `too many requests`.
const BCRYPT_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

/// One bcrypt slot per core. A failed login costs a full bcrypt (tens of
/// milliseconds at cost 10) and anyone may try one, so without a bound
/// anonymous clients could occupy every blocking thread (docs/security.md).
pub fn bcrypt_slots() -> tokio::sync::Semaphore {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    tokio::sync::Semaphore::new(cores)
}

impl EtcdServer {
    pub fn auth_enabled(&self) -> bool {
        self.auth.store.read().is_enabled()
    }

    /// Who a token stands for. Any failure is `invalid auth token`, as etcd
    /// answers (even while auth is disabled).
    pub async fn resolve_token(&self, token: &str) -> Result<AuthInfo, Error> {
        if let (TokenProvider::Simple(_), Some(index)) =
            (&self.auth.tokens, SimpleTokens::index_of(token))
        {
            self.wait_for_token_index(index).await?;
        }
        let revision = self.auth.store.read().revision();
        Ok(self.auth.tokens.info(token, Now::current(), revision)?)
    }

    /// A simple token is issued by a login entry at `index`: this member
    /// knows it once it has applied that index. Waiting only makes sense for
    /// an index the cluster has committed — a made-up one would hold the
    /// request for the whole request timeout. So: an index this member knows
    /// to be committed is waited for (the apply loop is just behind); any
    /// other costs one ReadIndex round, after which every token the cluster
    /// had issued is applied here, and one still ahead was never issued.
    async fn wait_for_token_index(&self, index: u64) -> Result<(), Error> {
        let invalid = || Error::from(AuthError::InvalidAuthToken);
        if self.status.applied.load(Ordering::Acquire) >= index {
            return Ok(());
        }
        let last = self.status.last_index.load(Ordering::Acquire);
        if index > last.saturating_add(MAX_TOKEN_INDEX_AHEAD) {
            return Err(invalid());
        }
        if index > self.status.commit.load(Ordering::Acquire) {
            self.linearizable_read_notify().await?;
            return if self.status.applied.load(Ordering::Acquire) >= index {
                Ok(())
            } else {
                Err(invalid())
            };
        }
        let mut applied = self.applied_rx.clone();
        match tokio::time::timeout(self.request_timeout(), applied.wait_for(|a| *a >= index)).await
        {
            Ok(Ok(_)) => Ok(()),
            _ => Err(invalid()),
        }
    }

    /// READ over `[key, range_end)` for the request's caller.
    pub fn check_read(&self, ctx: &RequestCtx, key: &[u8], range_end: &[u8]) -> Result<(), Error> {
        Ok(self
            .auth
            .store
            .read()
            .authorize_request(ctx.caller(), Access::Read, key, range_end)?)
    }

    /// After a local read: the auth state must not have changed since the
    /// check, or data a revoke meant to hide could leak.
    pub fn check_unchanged(&self, ctx: &RequestCtx) -> Result<(), Error> {
        Ok(self.auth.store.read().check_unchanged(ctx.caller())?)
    }

    /// The root role (membership changes, maintenance, auth management).
    pub fn check_admin(&self, ctx: &RequestCtx) -> Result<(), Error> {
        Ok(self
            .auth
            .store
            .read()
            .authorize_request(ctx.caller(), Access::Admin, b"", b"")?)
    }

    /// Any authenticated user (lease operations when auth is on). Stricter
    /// than etcd 3.4, which lets anonymous clients grant leases.
    pub fn check_authenticated(&self, ctx: &RequestCtx) -> Result<(), Error> {
        let store = self.auth.store.read();
        if !store.is_enabled() {
            return Ok(());
        }
        match ctx.caller() {
            Some(i) if !i.username.is_empty() && i.revision != 0 => Ok(()),
            _ => Err(AuthError::UserEmpty.into()),
        }
    }

    /// `Authenticate`: check the password here (bcrypt off the async
    /// threads), then replicate the login so every member knows the token.
    pub async fn authenticate(
        &self,
        r: AuthenticateRequest,
    ) -> Result<AuthenticateResponse, Error> {
        for _ in 0..AUTHENTICATE_ATTEMPTS {
            // Check against the latest auth state, as etcd does.
            self.linearizable_read_notify().await?;
            let check = self.auth.store.read().password_check(&r.name);
            let verified = match check {
                Ok(check) => {
                    self.verify_password(&r.name, check, r.password.clone())
                        .await
                }
                Err(e) => Err(e.into()),
            };
            let verified = match verified {
                Ok(revision) => revision,
                // No built-in user has this name and password (or etcd auth
                // is off): a policy plugin's authenticator may know them.
                Err(Error::Auth(e @ (AuthError::AuthFailed | AuthError::AuthNotEnabled))) => {
                    return super::policy::authenticate_password(self, &r.name, &r.password, e)
                        .await;
                }
                Err(e) => return Err(e),
            };
            let entry = AuthenticateEntry {
                name: r.name.clone(),
                simple_token_prefix: self.auth.tokens.generate_prefix(),
                plugin_principal: false,
            };
            let login = self.propose_internal(entry).await?;
            if login.revision != verified {
                // The user changed meanwhile: check again.
                continue;
            }
            return Ok(AuthenticateResponse {
                header: Some(self.header(self.store.current_rev())),
                token: login.token,
            });
        }
        Err(AuthError::AuthOldRevision.into())
    }

    /// A bcrypt slot, waited for at most `BCRYPT_WAIT`.
    async fn bcrypt_slot(&self) -> Result<tokio::sync::SemaphorePermit<'_>, Error> {
        match tokio::time::timeout(BCRYPT_WAIT, self.auth.bcrypt_slots.acquire()).await {
            Ok(Ok(permit)) => Ok(permit),
            Ok(Err(_closed)) => Err(Error::Internal("password checks are shut down".into())),
            Err(_elapsed) => Err(Error::TooManyRequests),
        }
    }

    /// bcrypt off the async threads, skipped when the same user, password
    /// and stored hash passed lately: a burst of logins (or v2 requests,
    /// which carry Basic credentials every time) costs one bcrypt per user.
    pub async fn verify_password(
        &self,
        user: &str,
        check: crate::auth::PasswordCheck,
        password: String,
    ) -> Result<u64, Error> {
        let cache = &self.auth.verified;
        let fingerprint = check.fingerprint(cache, user, &password);
        if cache.contains(&fingerprint, std::time::Instant::now()) {
            return Ok(check.revision());
        }
        let _slot = self.bcrypt_slot().await?;
        let revision = tokio::task::spawn_blocking(move || check.verify(&password))
            .await
            .map_err(|e| Error::Internal(format!("password check failed: {e}")))??;
        cache.insert(fingerprint, std::time::Instant::now());
        Ok(revision)
    }

    /// An auth-management write through raft; the apply loop checks that
    /// the caller may do it.
    pub async fn auth_write(&self, ctx: &RequestCtx, mut request: Request) -> Result<(), Error> {
        let cost = self.auth.bcrypt_cost;
        let slot = self.bcrypt_slot().await?;
        // Hash passwords before they enter the log (never store plaintext).
        let hashed = tokio::task::spawn_blocking(move || {
            match &mut request {
                Request::UserAdd(r) => crate::auth::prepare_user_add(r, cost)?,
                Request::UserChangePassword(r) => crate::auth::prepare_change_password(r, cost)?,
                _ => {}
            }
            Ok::<_, AuthError>(request)
        })
        .await
        .map_err(|e| Error::Internal(format!("password hashing failed: {e}")))??;
        drop(slot);
        self.propose(ctx, super::proposal::AuthWrite(hashed)).await
    }

    /// Auth reads (`user get|list`, `role get|list`, `auth status`) are
    /// served from this member's copy after a ReadIndex.
    pub async fn auth_read<T>(
        &self,
        ctx: &RequestCtx,
        f: impl FnOnce(&AuthStore, Option<&AuthInfo>) -> Result<T, AuthError>,
    ) -> Result<T, Error> {
        self.linearizable_read_until(ctx.deadline()).await?;
        let store = self.auth.store.read();
        Ok(f(&store, ctx.caller())?)
    }
}

/// How often expired simple tokens are swept (etcd: every second).
pub const TOKEN_SWEEP_INTERVAL: Duration = Duration::from_secs(1);

pub async fn sweep_tokens(srv: std::sync::Arc<EtcdServer>) {
    let mut tick = tokio::time::interval(TOKEN_SWEEP_INTERVAL);
    loop {
        tick.tick().await;
        srv.auth.tokens.expire(std::time::Instant::now());
    }
}
