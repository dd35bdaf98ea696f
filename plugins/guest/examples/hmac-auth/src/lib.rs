//! HMAC bearer tokens and prefix grants: an authenticator and an authorizer
//! in one plugin.
//!
//! Tokens have the form `<principal>.<hex HMAC-SHA256(secret, principal)>`,
//! where principal is 1 to 64 of `[A-Za-z0-9_-]`. Anyone holding the secret
//! can mint tokens (e.g. `printf %s alice | openssl dgst -sha256 -hmac
//! "$SECRET"`). Tokens do not expire: plugins have no clock. Rotate the
//! secret to revoke every token at once.
//!
//! Config:
//! - `secret`: the HMAC key (at least 16 bytes).
//! - `grant.<principal>`: comma-separated key prefixes the principal may
//!   read and write (`*` = every key).
//! - `read.<principal>`: comma-separated prefixes the principal may only
//!   read.
//!
//! Passwords are not this plugin's business: it abstains on them.

use cairn_plugin_sdk::host::{self, Config, split_list};
use cairn_plugin_sdk::keys::range_within_prefix;
use cairn_plugin_sdk::{
    Access, AccessRequest, AuthOutcome, Authenticator, Authorizer, Credential, Verdict,
    export_authenticator, export_authorizer,
};
use hmac::{Hmac, Mac};
use sha2::Sha256;

const MIN_SECRET_BYTES: usize = 16;
const MAX_PRINCIPAL_BYTES: usize = 64;

struct HmacAuth;

impl Authenticator for HmacAuth {
    fn authenticate(credential: Credential) -> AuthOutcome {
        let Credential::BearerToken(token) = credential else {
            return AuthOutcome::Abstain;
        };
        let config = host::config();
        let secret = match config.require("secret") {
            Ok(s) if s.len() >= MIN_SECRET_BYTES => s,
            Ok(_) => {
                return AuthOutcome::refuse(format!(
                    "plugin misconfigured: `secret` must be at least {MIN_SECRET_BYTES} bytes"
                ));
            }
            Err(e) => return AuthOutcome::refuse(e),
        };
        match verify(secret.as_bytes(), &token) {
            Ok(principal) => AuthOutcome::Authenticated(principal.to_owned()),
            Err(reason) => {
                host::info(&format!("refused a bearer token: {reason}"));
                AuthOutcome::refuse(reason)
            }
        }
    }
}

/// Checks `token` and returns its principal. Reasons never echo the token.
fn verify<'t>(secret: &[u8], token: &'t str) -> Result<&'t str, &'static str> {
    let (principal, signature) = token
        .rsplit_once('.')
        .ok_or("malformed token: expected <principal>.<signature>")?;
    if principal.is_empty()
        || principal.len() > MAX_PRINCIPAL_BYTES
        || !principal
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        return Err("malformed token: bad principal");
    }
    let signature =
        decode_hex(signature).ok_or("malformed token: signature is not 64 hex digits")?;
    let mut mac = Hmac::<Sha256>::new_from_slice(secret)
        .map_err(|_| "plugin misconfigured: unusable secret")?;
    mac.update(principal.as_bytes());
    // `verify_slice` compares in constant time.
    mac.verify_slice(&signature)
        .map_err(|_| "invalid token signature")?;
    Ok(principal)
}

fn decode_hex(s: &str) -> Option<[u8; 32]> {
    let s = s.as_bytes();
    if s.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, pair) in s.chunks_exact(2).enumerate() {
        let digit = |c: u8| (c as char).to_digit(16);
        out[i] = (digit(pair[0])? * 16 + digit(pair[1])?) as u8;
    }
    Some(out)
}

impl Authorizer for HmacAuth {
    fn authorize(request: AccessRequest) -> Verdict {
        let Some(principal) = request.principal.as_deref() else {
            return Verdict::deny("anonymous access is not allowed; present a bearer token");
        };
        let config = host::config();
        let mut prefixes = grants(&config, "grant.", principal);
        if request.access == Access::Read {
            prefixes.extend(grants(&config, "read.", principal));
        }
        let covered = prefixes.iter().any(|p| {
            *p == "*"
                || range_within_prefix(&request.key, request.range_end.as_deref(), p.as_bytes())
        });
        if covered {
            return Verdict::Allow;
        }
        let what = match request.access {
            Access::Read => "read",
            Access::Put => "write",
            Access::DeleteRange => "delete",
        };
        let key = String::from_utf8_lossy(&request.key);
        let range = match request.range_end.as_deref() {
            None => format!("{key:?}"),
            Some([0]) => format!("[{key:?}, end of keyspace)"),
            Some(end) => format!("[{key:?}, {:?})", String::from_utf8_lossy(end)),
        };
        Verdict::deny(format!("principal {principal:?} may not {what} {range}"))
    }
}

/// The prefixes granted to `principal` by settings `<kind><principal>`.
fn grants<'c>(config: &'c Config, kind: &'c str, principal: &str) -> Vec<&'c str> {
    config
        .with_prefix(kind)
        .filter(|(who, _)| *who == principal)
        .flat_map(|(_, list)| split_list(list))
        .collect()
}

export_authenticator!(HmacAuth);
export_authorizer!(HmacAuth);
