//! Token providers: what `Authenticate` hands out and what later requests
//! present in their `token` metadata (gRPC) or `Authorization` header (the
//! JSON gateway).
//!
//! `--auth-token` picks one: `simple` (the default; see `simple.rs`),
//! `jwt,…` (see `jwt.rs`) or the empty string (no tokens at all, as etcd's
//! "nop" provider).

pub mod jwt;
pub mod simple;

pub use jwt::{DEFAULT_JWT_TTL, JwtOptions, JwtTokens, SignMethod};
pub use simple::SimpleTokens;

use super::{AuthError, AuthInfo};
use std::collections::HashSet;
use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime};

/// `--auth-token`, parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenConfig {
    Simple,
    Jwt(JwtOptions),
    /// `--auth-token=""`: no provider; `Authenticate` cannot succeed.
    Nop,
}

/// Parses `--auth-token` the way etcd 3.4 does (all checked against
/// etcd 3.4.23): the type, then comma-separated `name=value` options; an
/// option without exactly one `=`, or given twice, is `auth: invalid auth
/// options`, and so is an unknown type. `simple` ignores options. For `jwt`:
/// `sign-method` is required (missing or unknown: `invalid auth options`),
/// `ttl` is a Go duration (default 5m, bad: `invalid auth options`),
/// `pub-key`/`priv-key` are file paths, unknown options are kept in
/// [`JwtOptions::unknown`] for a warning.
pub fn parse_token_option(option: &str) -> Result<TokenConfig, AuthError> {
    let mut parts = option.split(',');
    let kind = parts.next().unwrap_or_default();
    let mut opts: Vec<(&str, &str)> = Vec::new();
    let mut seen = HashSet::new();
    for p in parts {
        let mut kv = p.split('=');
        let (Some(k), Some(v), None) = (kv.next(), kv.next(), kv.next()) else {
            return Err(AuthError::InvalidAuthOpts);
        };
        if !seen.insert(k) {
            return Err(AuthError::InvalidAuthOpts);
        }
        opts.push((k, v));
    }
    match kind {
        "simple" => Ok(TokenConfig::Simple),
        "" => Ok(TokenConfig::Nop),
        "jwt" => {
            let mut sign_method = None;
            let mut pub_key = None;
            let mut priv_key = None;
            let mut ttl = None;
            let mut unknown = Vec::new();
            for (k, v) in opts {
                match k {
                    "sign-method" => sign_method = Some(v),
                    "pub-key" if !v.is_empty() => pub_key = Some(PathBuf::from(v)),
                    "priv-key" if !v.is_empty() => priv_key = Some(PathBuf::from(v)),
                    "ttl" if !v.is_empty() => {
                        ttl = Some(
                            cairn_config::parse_go_duration(v)
                                .map_err(|_| AuthError::InvalidAuthOpts)?,
                        )
                    }
                    "pub-key" | "priv-key" | "ttl" => {}
                    other => unknown.push(other.to_string()),
                }
            }
            let sign_method = sign_method
                .and_then(SignMethod::parse)
                .ok_or(AuthError::InvalidAuthOpts)?;
            Ok(TokenConfig::Jwt(JwtOptions {
                sign_method,
                pub_key,
                priv_key,
                ttl: ttl.unwrap_or(DEFAULT_JWT_TTL),
                unknown,
            }))
        }
        _ => Err(AuthError::InvalidAuthOpts),
    }
}

/// The two clocks tokens need: monotonic for simple-token TTLs, wall-clock
/// for JWT `exp`. Passed in, never read inside, so tests control time.
#[derive(Debug, Clone, Copy)]
pub struct Now {
    pub instant: Instant,
    pub wall: SystemTime,
}

impl Now {
    pub fn current() -> Now {
        Now {
            instant: Instant::now(),
            wall: SystemTime::now(),
        }
    }
}

/// The configured provider; the lead holds one (shared, `&self` methods).
#[derive(Debug)]
pub enum TokenProvider {
    Simple(SimpleTokens),
    Jwt(JwtTokens),
    Nop,
}

impl TokenProvider {
    /// `simple_ttl`: `--auth-token-ttl` (simple tokens only; JWT tokens
    /// have their own `ttl` option).
    pub fn new(config: &TokenConfig, simple_ttl: Duration) -> Result<TokenProvider, AuthError> {
        Ok(match config {
            TokenConfig::Simple => {
                TokenProvider::Simple(SimpleTokens::new(simple_ttl, simple::DEFAULT_MAX_TOKENS))
            }
            TokenConfig::Jwt(o) => TokenProvider::Jwt(JwtTokens::new(o)?),
            TokenConfig::Nop => TokenProvider::Nop,
        })
    }

    /// [`parse_token_option`] then [`TokenProvider::new`].
    pub fn from_option(option: &str, simple_ttl: Duration) -> Result<TokenProvider, AuthError> {
        TokenProvider::new(&parse_token_option(option)?, simple_ttl)
    }

    /// Step 1 of `Authenticate`, on the receiving member: the random part to
    /// propose with the request (empty for JWT, as etcd).
    pub fn generate_prefix(&self) -> String {
        match self {
            TokenProvider::Simple(_) => SimpleTokens::generate_prefix(),
            _ => String::new(),
        }
    }

    /// Step 2, when the `Authenticate` entry is applied (after
    /// `AuthStore::authenticate` returned `revision`). Simple: registers
    /// `prefix.index` on this member and returns it (every member must do
    /// this). JWT: signs a token; only the member answering the client needs
    /// it, so the others may skip this call.
    pub fn assign(
        &self,
        username: &str,
        revision: u64,
        prefix: &str,
        index: u64,
        now: Now,
    ) -> Result<String, AuthError> {
        match self {
            TokenProvider::Simple(s) => {
                let token = SimpleTokens::token(prefix, index);
                if SimpleTokens::index_of(&token).is_none() {
                    return Err(AuthError::Internal(format!(
                        "malformed simple token prefix {prefix:?}"
                    )));
                }
                s.register(&token, username, revision, now.instant);
                Ok(token)
            }
            TokenProvider::Jwt(j) => j.sign(username, revision, now.wall),
            TokenProvider::Nop => Err(AuthError::Internal("token provider is disabled".into())),
        }
    }

    /// Who a token stands for, and at which auth revision; any failure is
    /// `invalid auth token` (Unauthenticated), as etcd — also when auth is
    /// disabled (etcd 3.4.23 answers a bad token that way even then;
    /// checked). For a simple token the revision is `current_revision`, the
    /// store's revision now (etcd's choice: simple tokens never go stale by
    /// themselves, only requests racing a change do). For a JWT it is the
    /// `revision` claim.
    ///
    /// A simple token whose index this member has not applied yet is not
    /// known yet: wait for `SimpleTokens::index_of(token)` to be applied
    /// before calling this (etcd does).
    pub fn info(
        &self,
        token: &str,
        now: Now,
        current_revision: u64,
    ) -> Result<AuthInfo, AuthError> {
        let found = match self {
            TokenProvider::Simple(s) => s
                .lookup(token, now.instant)
                .map(|(user, _)| (user, current_revision)),
            TokenProvider::Jwt(j) => j.verify(token, now.wall),
            TokenProvider::Nop => None,
        };
        let (username, revision) = found.ok_or(AuthError::InvalidAuthToken)?;
        Ok(AuthInfo { username, revision })
    }

    /// After applying `UserDelete` or `UserChangePassword`: the user's
    /// simple tokens stop working (JWTs cannot be recalled; they go stale
    /// through the revision instead).
    pub fn invalidate_user(&self, username: &str) {
        if let TokenProvider::Simple(s) = self {
            s.invalidate_user(username);
        }
    }

    /// After applying an `AuthDisable` that disabled auth.
    pub fn disable(&self) {
        if let TokenProvider::Simple(s) = self {
            s.clear();
        }
    }

    /// Periodic sweep of expired simple tokens (etcd: every second).
    pub fn expire(&self, now: Instant) {
        if let TokenProvider::Simple(s) = self {
            s.expire(now);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_etcd_token_options() {
        assert_eq!(parse_token_option("simple").unwrap(), TokenConfig::Simple);
        assert_eq!(
            parse_token_option("simple,x=y").unwrap(),
            TokenConfig::Simple,
            "etcd ignores simple's options"
        );
        assert_eq!(parse_token_option("").unwrap(), TokenConfig::Nop);
        let TokenConfig::Jwt(o) = parse_token_option(
            "jwt,pub-key=/k.pub,priv-key=/k.key,sign-method=RS256,ttl=10m,foo=bar",
        )
        .unwrap() else {
            panic!("not jwt");
        };
        assert_eq!(o.sign_method, SignMethod::RS256);
        assert_eq!(o.pub_key, Some(PathBuf::from("/k.pub")));
        assert_eq!(o.priv_key, Some(PathBuf::from("/k.key")));
        assert_eq!(o.ttl, Duration::from_secs(600));
        assert_eq!(o.unknown, vec!["foo".to_string()]);
        let TokenConfig::Jwt(d) = parse_token_option("jwt,sign-method=HS256").unwrap() else {
            panic!("not jwt");
        };
        assert_eq!(d.ttl, DEFAULT_JWT_TTL);
        assert_eq!(d.priv_key, None);
        let TokenConfig::Jwt(z) = parse_token_option("jwt,sign-method=ES512,ttl=0").unwrap() else {
            panic!("not jwt");
        };
        assert_eq!(z.ttl, Duration::ZERO);
    }

    #[test]
    fn rejects_what_etcd_rejects() {
        for bad in [
            "bogus",
            "jwt",
            "jwt,pub-key=/a,priv-key=/b",
            "jwt,sign-method=none",
            "jwt,sign-method=EdDSA",
            "jwt,sign-method=rs256",
            "jwt,priv-key",
            "jwt,priv-key=a=b,sign-method=RS256",
            "jwt,sign-method=RS256,sign-method=RS256",
            "jwt,sign-method=RS256,ttl=bogus",
            "jwt,sign-method=RS256,ttl=5",
            "simple,x",
        ] {
            assert_eq!(
                parse_token_option(bad),
                Err(AuthError::InvalidAuthOpts),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn missing_key_files_and_data() {
        assert_eq!(
            TokenProvider::from_option("jwt,sign-method=HS256", Duration::from_secs(1))
                .unwrap_err(),
            AuthError::MissingKey
        );
        assert_eq!(
            TokenProvider::from_option("jwt,sign-method=RS256", Duration::from_secs(1))
                .unwrap_err(),
            AuthError::MissingKey
        );
        let err = TokenProvider::from_option(
            "jwt,sign-method=RS256,priv-key=/nonexistent/cairn.key",
            Duration::from_secs(1),
        )
        .unwrap_err();
        assert!(matches!(err, AuthError::InvalidKey(_)), "{err:?}");
    }

    #[test]
    fn simple_provider_round_trip() {
        let p = TokenProvider::from_option("simple", Duration::from_secs(300)).unwrap();
        let now = Now::current();
        let prefix = p.generate_prefix();
        let token = p.assign("alice", 3, &prefix, 42, now).unwrap();
        assert_eq!(token, format!("{prefix}.42"));
        assert_eq!(SimpleTokens::index_of(&token), Some(42));
        // The revision of a simple token is the store's current one.
        let info = p.info(&token, now, 9).unwrap();
        assert_eq!(
            info,
            AuthInfo {
                username: "alice".into(),
                revision: 9
            }
        );
        assert_eq!(p.info("nope", now, 9), Err(AuthError::InvalidAuthToken));
        assert!(p.assign("alice", 3, "short", 43, now).is_err());
        p.invalidate_user("alice");
        assert_eq!(p.info(&token, now, 9), Err(AuthError::InvalidAuthToken));
        let t2 = p.assign("bob", 3, &p.generate_prefix(), 44, now).unwrap();
        p.disable();
        assert_eq!(p.info(&t2, now, 9), Err(AuthError::InvalidAuthToken));
        // Expiry through the provider.
        let t3 = p.assign("bob", 3, &p.generate_prefix(), 45, now).unwrap();
        p.expire(now.instant + Duration::from_secs(300));
        assert_eq!(p.info(&t3, now, 9), Err(AuthError::InvalidAuthToken));
    }

    #[test]
    fn nop_provider_issues_and_accepts_nothing() {
        let p = TokenProvider::from_option("", Duration::from_secs(1)).unwrap();
        let now = Now::current();
        assert_eq!(p.generate_prefix(), "");
        assert!(p.assign("root", 1, "", 1, now).is_err());
        assert_eq!(p.info("x", now, 1), Err(AuthError::InvalidAuthToken));
    }
}
