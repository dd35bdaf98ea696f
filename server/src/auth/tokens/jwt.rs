//! etcd's JWT tokens (`--auth-token jwt,pub-key=…,priv-key=…,sign-method=…,ttl=…`).
//!
//! A token is a compact JWS with etcd's header and claims:
//! `{"alg":"RS256","typ":"JWT"}` and `{"exp":…,"revision":…,"username":…}`
//! (the same bytes etcd writes, keys in Go's sorted order). Any member
//! verifies a token with the public key alone, so JWT tokens need no raft
//! round trip to be known; they carry the auth revision they were issued at.
//!
//! Cryptography: the `jsonwebtoken` crate (pure-Rust RustCrypto backend)
//! signs and verifies HS/RS/PS 256–512 and ES256/ES384; it has no ES512,
//! which etcd supports, so ES512 uses the `p521` crate directly (etcd 3.4's
//! jwt-go v3 has no EdDSA, and neither has Cairn). Keys are parsed here in
//! every PEM form etcd reads: private keys PKCS#1, PKCS#8 or SEC1 `EC
//! PRIVATE KEY`; public keys SPKI `PUBLIC KEY` or a `CERTIFICATE` (its
//! public key: a member's TLS certificate can serve as `pub-key`), and for
//! RSA also PKCS#1 `RSA PUBLIC KEY`.
//!
//! Validation follows etcd (jwt-go v3): the header's `alg` must be the
//! configured method, the signature must verify, `exp` (seconds) must not
//! be in the past (`now <= exp`, no leeway), `nbf`/`iat` if present must
//! not be in the future, and `username` and `revision` must be present.

use super::super::AuthError;
use super::super::verified::Bounded;
use base64::Engine;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey};
use p256::elliptic_curve::sec1::ToEncodedPoint;
use p256::pkcs8::{DecodePrivateKey, DecodePublicKey, EncodePrivateKey};
use rsa::pkcs1::{DecodeRsaPrivateKey, DecodeRsaPublicKey, EncodeRsaPrivateKey};
use rsa::traits::PublicKeyParts;
use serde::Serialize;
use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// etcd's default JWT lifetime when `ttl` is not given.
pub const DEFAULT_JWT_TTL: Duration = Duration::from_secs(300);

/// Base64url without padding on output, padding tolerated on input (as
/// jwt-go's decoder does).
const B64: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::URL_SAFE,
    GeneralPurposeConfig::new()
        .with_encode_padding(false)
        .with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// The signing methods etcd 3.4 accepts (jwt-go v3's set).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SignMethod {
    HS256,
    HS384,
    HS512,
    RS256,
    RS384,
    RS512,
    PS256,
    PS384,
    PS512,
    ES256,
    ES384,
    ES512,
}

impl SignMethod {
    pub fn parse(s: &str) -> Option<SignMethod> {
        use SignMethod::*;
        Some(match s {
            "HS256" => HS256,
            "HS384" => HS384,
            "HS512" => HS512,
            "RS256" => RS256,
            "RS384" => RS384,
            "RS512" => RS512,
            "PS256" => PS256,
            "PS384" => PS384,
            "PS512" => PS512,
            "ES256" => ES256,
            "ES384" => ES384,
            "ES512" => ES512,
            _ => return None,
        })
    }

    pub fn name(self) -> &'static str {
        use SignMethod::*;
        match self {
            HS256 => "HS256",
            HS384 => "HS384",
            HS512 => "HS512",
            RS256 => "RS256",
            RS384 => "RS384",
            RS512 => "RS512",
            PS256 => "PS256",
            PS384 => "PS384",
            PS512 => "PS512",
            ES256 => "ES256",
            ES384 => "ES384",
            ES512 => "ES512",
        }
    }

    /// The `jsonwebtoken` algorithm; None for ES512 (done with `p521`).
    fn jwt_alg(self) -> Option<Algorithm> {
        use SignMethod::*;
        Some(match self {
            HS256 => Algorithm::HS256,
            HS384 => Algorithm::HS384,
            HS512 => Algorithm::HS512,
            RS256 => Algorithm::RS256,
            RS384 => Algorithm::RS384,
            RS512 => Algorithm::RS512,
            PS256 => Algorithm::PS256,
            PS384 => Algorithm::PS384,
            PS512 => Algorithm::PS512,
            ES256 => Algorithm::ES256,
            ES384 => Algorithm::ES384,
            ES512 => return None,
        })
    }
}

/// The `jwt` part of `--auth-token`, parsed (keys not yet read).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JwtOptions {
    pub sign_method: SignMethod,
    pub pub_key: Option<PathBuf>,
    pub priv_key: Option<PathBuf>,
    pub ttl: Duration,
    /// Options etcd does not know: etcd logs a warning and carries on.
    pub unknown: Vec<String>,
}

enum Signer {
    Jwt(EncodingKey),
    Es512(p521::ecdsa::SigningKey),
}

enum Verifier {
    Jwt(DecodingKey),
    Es512(p521::ecdsa::VerifyingKey),
}

/// Signs and verifies etcd JWT tokens.
pub struct JwtTokens {
    method: SignMethod,
    /// None: only a public key was configured (verify-only member).
    signer: Option<Signer>,
    verifier: Verifier,
    ttl: Duration,
    /// Tokens whose signature checked out lately, so a client sending the
    /// same token with every request pays for one signature check (an
    /// RSA or ECDSA verify costs tens of microseconds; a burst of clients
    /// would spend a core on them). Time claims are still checked on every
    /// use. Bounded; the oldest entry goes first.
    verified: parking_lot::Mutex<Bounded<String, VerifiedClaims>>,
}

/// Verified tokens kept by each member.
pub const VERIFIED_TOKENS_CAPACITY: usize = 4096;

/// What a token says, once its signature is known good.
#[derive(Clone, Debug)]
struct VerifiedClaims {
    username: String,
    revision: u64,
    expires: Option<i64>,
    not_before: Vec<i64>,
}

impl VerifiedClaims {
    fn valid_at(&self, now_secs: i64) -> bool {
        self.expires.is_none_or(|exp| now_secs <= exp)
            && self.not_before.iter().all(|t| now_secs >= *t)
    }
}

impl std::fmt::Debug for JwtTokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JwtTokens")
            .field("method", &self.method)
            .field("can_sign", &self.signer.is_some())
            .field("ttl", &self.ttl)
            .finish()
    }
}

/// etcd's claims, fields in the order Go's JSON encoder writes a map.
#[derive(Serialize)]
struct Claims<'a> {
    exp: i64,
    revision: u64,
    username: &'a str,
}

#[derive(Serialize)]
struct Header<'a> {
    alg: &'a str,
    typ: &'a str,
}

fn unix_secs(t: SystemTime) -> i64 {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        Err(e) => -i64::try_from(e.duration().as_secs()).unwrap_or(i64::MAX),
    }
}

fn invalid_key(what: impl std::fmt::Display) -> AuthError {
    AuthError::InvalidKey(what.to_string())
}

/// PEM labels of the blocks that can hold a private key.
const PRIVATE_KEY_LABELS: &[&str] = &["PRIVATE KEY", "RSA PRIVATE KEY", "EC PRIVATE KEY"];
/// PEM labels of the blocks that can hold a public key.
const PUBLIC_KEY_LABELS: &[&str] = &["PUBLIC KEY", "RSA PUBLIC KEY", "CERTIFICATE"];

/// The DER of the first PEM block whose label is one of `labels`, a
/// certificate standing for its SubjectPublicKeyInfo; `None` when there is
/// none. etcd (Go's `pem.Decode`) reads the very first block whatever its
/// label and lets the parser judge the contents; Cairn skips blocks that
/// cannot hold a key, so a key file that starts with `EC PARAMETERS` (what
/// `openssl ecparam -genkey` writes) works too, but, like etcd, it never
/// looks past the first key: in a certificate chain only the leaf counts.
/// Within a block the contents decide, as in Go (a PKCS#8 key labelled
/// `RSA PRIVATE KEY` works). Headers (`Proc-Type: 4,ENCRYPTED`) are
/// skipped; an encrypted key then fails to parse, as in etcd.
fn key_block(bytes: &[u8], labels: &[&str]) -> Result<Option<Vec<u8>>, AuthError> {
    let text = std::str::from_utf8(bytes).map_err(|_| invalid_key("key file is not PEM text"))?;
    let mut rest = text;
    while let Some(start) = rest.find("-----BEGIN ") {
        let after = &rest[start + "-----BEGIN ".len()..];
        let Some(label_end) = after.find("-----") else {
            break;
        };
        let label = &after[..label_end];
        let body = &after[label_end + "-----".len()..];
        let end_marker = format!("-----END {label}-----");
        let Some(end) = body.find(&end_marker) else {
            break;
        };
        rest = &body[end + end_marker.len()..];
        if !labels.contains(&label) {
            continue;
        }
        let b64: String = body[..end]
            .lines()
            .filter(|l| !l.contains(':'))
            .flat_map(|l| l.chars().filter(|c| !c.is_whitespace()))
            .collect();
        let der = base64::engine::general_purpose::STANDARD
            .decode(b64)
            .map_err(|e| invalid_key(format!("PEM block {label:?} is not valid base64: {e}")))?;
        if label == "CERTIFICATE" {
            let spki = crate::tls::subject_public_key_info(&der)
                .ok_or_else(|| invalid_key("the PEM CERTIFICATE cannot be read"))?;
            return Ok(Some(spki.to_vec()));
        }
        return Ok(Some(der));
    }
    Ok(None)
}

/// The private-key block of a key file, parsed by `parse`.
fn private_key<T>(
    pem: &[u8],
    parse: impl Fn(&[u8]) -> Option<T>,
    what: &str,
) -> Result<T, AuthError> {
    key_block(pem, PRIVATE_KEY_LABELS)?
        .and_then(|der| parse(&der))
        .ok_or_else(|| invalid_key(format!("key is not a valid {what} private key")))
}

/// The public-key block of a key file, parsed by `parse`. etcd 3.4
/// (jwt-go v3's parsers) takes a `PUBLIC KEY` (SPKI) or a `CERTIFICATE`;
/// for RSA Cairn also takes a PKCS#1 `RSA PUBLIC KEY`, which etcd refuses.
fn public_key<T>(
    pem: &[u8],
    parse: impl Fn(&[u8]) -> Option<T>,
    what: &str,
) -> Result<T, AuthError> {
    key_block(pem, PUBLIC_KEY_LABELS)?
        .and_then(|der| parse(&der))
        .ok_or_else(|| invalid_key(format!("key is not a valid {what} public key")))
}

/// PKCS#1 (`RSA PRIVATE KEY`) or PKCS#8 (`PRIVATE KEY`), as etcd.
fn rsa_private(pem: &[u8]) -> Result<rsa::RsaPrivateKey, AuthError> {
    private_key(
        pem,
        |der| {
            rsa::RsaPrivateKey::from_pkcs1_der(der)
                .ok()
                .or_else(|| rsa::RsaPrivateKey::from_pkcs8_der(der).ok())
        },
        "RSA",
    )
}

fn rsa_public(pem: &[u8]) -> Result<rsa::RsaPublicKey, AuthError> {
    public_key(
        pem,
        |der| {
            rsa::RsaPublicKey::from_public_key_der(der)
                .ok()
                .or_else(|| rsa::RsaPublicKey::from_pkcs1_der(der).ok())
        },
        "RSA",
    )
}

/// The private key (SEC1 `EC PRIVATE KEY` or PKCS#8 `PRIVATE KEY`) and the
/// public key (`PUBLIC KEY` or `CERTIFICATE`) of one NIST curve, checked to
/// belong together. The curve crates share their traits, so one macro
/// serves P-256, P-384 and P-521.
macro_rules! ec_key_pair {
    ($name:ident, $curve:ident, $label:literal) => {
        fn $name(
            priv_pem: Option<&[u8]>,
            pub_pem: Option<&[u8]>,
        ) -> Result<(Option<$curve::SecretKey>, $curve::PublicKey), AuthError> {
            let secret = match priv_pem {
                Some(p) => Some(private_key(
                    p,
                    |der| {
                        $curve::SecretKey::from_sec1_der(der)
                            .ok()
                            .or_else(|| $curve::SecretKey::from_pkcs8_der(der).ok())
                    },
                    $label,
                )?),
                None => None,
            };
            let public = match pub_pem {
                Some(p) => Some(public_key(
                    p,
                    |der| $curve::PublicKey::from_public_key_der(der).ok(),
                    $label,
                )?),
                None => None,
            };
            let derived = secret.as_ref().map(|s| s.public_key());
            let public = match (derived, public) {
                (Some(d), Some(p)) if d != p => return Err(AuthError::KeyMismatch),
                (Some(d), _) => d,
                (None, Some(p)) => p,
                (None, None) => return Err(AuthError::MissingKey),
            };
            Ok((secret, public))
        }
    };
}

ec_key_pair!(p256_key_pair, p256, "P-256");
ec_key_pair!(p384_key_pair, p384, "P-384");
ec_key_pair!(p521_key_pair, p521, "P-521");

/// For `jsonwebtoken`: (PKCS#8 DER of the private key, SEC1 uncompressed
/// public point).
macro_rules! ec_jwt_keys {
    ($name:ident, $pair:ident) => {
        fn $name(
            priv_pem: Option<&[u8]>,
            pub_pem: Option<&[u8]>,
        ) -> Result<(Option<Vec<u8>>, Vec<u8>), AuthError> {
            let (secret, public) = $pair(priv_pem, pub_pem)?;
            let der = match secret {
                Some(s) => Some(s.to_pkcs8_der().map_err(invalid_key)?.as_bytes().to_vec()),
                None => None,
            };
            Ok((der, public.to_encoded_point(false).as_bytes().to_vec()))
        }
    };
}

ec_jwt_keys!(p256_keys, p256_key_pair);
ec_jwt_keys!(p384_keys, p384_key_pair);

fn p521_keys(
    priv_pem: Option<&[u8]>,
    pub_pem: Option<&[u8]>,
) -> Result<(Option<p521::ecdsa::SigningKey>, p521::ecdsa::VerifyingKey), AuthError> {
    let (secret, public) = p521_key_pair(priv_pem, pub_pem)?;
    let signer = match secret {
        Some(s) => Some(p521::ecdsa::SigningKey::from_bytes(&s.to_bytes()).map_err(invalid_key)?),
        None => None,
    };
    let verifier =
        p521::ecdsa::VerifyingKey::from_affine(*public.as_affine()).map_err(invalid_key)?;
    Ok((signer, verifier))
}

impl JwtTokens {
    /// Reads the key files named by the options.
    pub fn new(opts: &JwtOptions) -> Result<JwtTokens, AuthError> {
        let read = |p: &Option<PathBuf>| -> Result<Option<Vec<u8>>, AuthError> {
            match p {
                Some(path) => std::fs::read(path)
                    .map(Some)
                    .map_err(|e| invalid_key(format!("{}: {e}", path.display()))),
                None => Ok(None),
            }
        };
        let private = read(&opts.priv_key)?;
        let public = read(&opts.pub_key)?;
        JwtTokens::from_keys(
            opts.sign_method,
            private.as_deref(),
            public.as_deref(),
            opts.ttl,
        )
    }

    /// From key material. HMAC methods use the private-key file's bytes as
    /// the secret (as etcd; a trailing newline is part of it). Asymmetric
    /// methods need a private key to sign; with only a public key the
    /// provider can verify but not sign. With both, they must match.
    pub fn from_keys(
        method: SignMethod,
        private_pem: Option<&[u8]>,
        public_pem: Option<&[u8]>,
        ttl: Duration,
    ) -> Result<JwtTokens, AuthError> {
        use SignMethod::*;
        let (signer, verifier) = match method {
            HS256 | HS384 | HS512 => {
                let secret = private_pem
                    .filter(|s| !s.is_empty())
                    .ok_or(AuthError::MissingKey)?;
                (
                    Some(Signer::Jwt(EncodingKey::from_secret(secret))),
                    Verifier::Jwt(DecodingKey::from_secret(secret)),
                )
            }
            RS256 | RS384 | RS512 | PS256 | PS384 | PS512 => {
                let private = private_pem.map(rsa_private).transpose()?;
                let public = public_pem.map(rsa_public).transpose()?;
                let derived = private.as_ref().map(|k| k.to_public_key());
                let public = match (derived, public) {
                    (Some(d), Some(p)) if d != p => return Err(AuthError::KeyMismatch),
                    (Some(d), _) => d,
                    (None, Some(p)) => p,
                    (None, None) => return Err(AuthError::MissingKey),
                };
                let signer = match private {
                    Some(k) => {
                        let der = k.to_pkcs1_der().map_err(invalid_key)?;
                        Some(Signer::Jwt(EncodingKey::from_rsa_der(der.as_bytes())))
                    }
                    None => None,
                };
                let verifier = Verifier::Jwt(DecodingKey::from_rsa_raw_components(
                    &public.n().to_bytes_be(),
                    &public.e().to_bytes_be(),
                ));
                (signer, verifier)
            }
            ES256 | ES384 => {
                let (der, point) = if method == ES256 {
                    p256_keys(private_pem, public_pem)?
                } else {
                    p384_keys(private_pem, public_pem)?
                };
                (
                    der.map(|d| Signer::Jwt(EncodingKey::from_ec_der(&d))),
                    Verifier::Jwt(DecodingKey::from_ec_der(&point)),
                )
            }
            ES512 => {
                let (s, v) = p521_keys(private_pem, public_pem)?;
                (s.map(Signer::Es512), Verifier::Es512(v))
            }
        };
        Ok(JwtTokens {
            method,
            signer,
            verifier,
            ttl,
            verified: parking_lot::Mutex::new(Bounded::new(VERIFIED_TOKENS_CAPACITY)),
        })
    }

    pub fn method(&self) -> SignMethod {
        self.method
    }

    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    /// False on a verify-only member (public key only).
    pub fn can_sign(&self) -> bool {
        self.signer.is_some()
    }

    /// A token for `username` at auth revision `revision`, expiring `ttl`
    /// after `now` (whole seconds, as etcd).
    pub fn sign(
        &self,
        username: &str,
        revision: u64,
        now: SystemTime,
    ) -> Result<String, AuthError> {
        let signer = self.signer.as_ref().ok_or(AuthError::VerifyOnly)?;
        let ttl = i64::try_from(self.ttl.as_secs()).unwrap_or(i64::MAX);
        let claims = Claims {
            exp: unix_secs(now).saturating_add(ttl),
            revision,
            username,
        };
        let header = Header {
            alg: self.method.name(),
            typ: "JWT",
        };
        let mut token = format!("{}.{}", b64_json(&header)?, b64_json(&claims)?);
        let sig = match signer {
            Signer::Jwt(key) => {
                let alg = self
                    .method
                    .jwt_alg()
                    .ok_or_else(|| AuthError::Internal("no jsonwebtoken algorithm".into()))?;
                jsonwebtoken::crypto::sign(token.as_bytes(), key, alg)
                    .map_err(|e| AuthError::Internal(format!("jwt sign: {e}")))?
            }
            Signer::Es512(key) => {
                use p521::ecdsa::signature::Signer as _;
                let sig: p521::ecdsa::Signature = key
                    .try_sign(token.as_bytes())
                    .map_err(|e| AuthError::Internal(format!("jwt sign: {e}")))?;
                B64.encode(sig.to_bytes())
            }
        };
        token.push('.');
        token.push_str(&sig);
        Ok(token)
    }

    /// The (username, revision) of a valid token; None for anything else
    /// (bad form, other algorithm, bad signature, expired, missing claims).
    pub fn verify(&self, token: &str, now: SystemTime) -> Option<(String, u64)> {
        let now = unix_secs(now);
        let cached = self.verified.lock().get(token).cloned();
        let claims = match cached {
            Some(c) => c,
            None => {
                let c = self.check_signature_and_claims(token)?;
                self.verified.lock().insert(token.to_string(), c.clone());
                c
            }
        };
        claims
            .valid_at(now)
            .then_some((claims.username, claims.revision))
    }

    /// The slow half of [`Self::verify`]: form, algorithm, signature and
    /// claims, without the time checks.
    fn check_signature_and_claims(&self, token: &str) -> Option<VerifiedClaims> {
        let mut parts = token.split('.');
        let (h, c, s) = (parts.next()?, parts.next()?, parts.next()?);
        if parts.next().is_some() {
            return None;
        }
        let header: serde_json::Value = serde_json::from_slice(&B64.decode(h).ok()?).ok()?;
        if header.get("alg")?.as_str()? != self.method.name() {
            return None;
        }
        let signed = &token[..h.len() + 1 + c.len()];
        let ok = match &self.verifier {
            Verifier::Jwt(key) => {
                let alg = self.method.jwt_alg()?;
                jsonwebtoken::crypto::verify(s, signed.as_bytes(), key, alg).unwrap_or(false)
            }
            Verifier::Es512(key) => {
                use p521::ecdsa::signature::Verifier as _;
                let raw = B64.decode(s).ok()?;
                let sig = p521::ecdsa::Signature::from_slice(&raw).ok()?;
                key.verify(signed.as_bytes(), &sig).is_ok()
            }
        };
        if !ok {
            return None;
        }
        let claims: serde_json::Map<String, serde_json::Value> =
            serde_json::from_slice(&B64.decode(c).ok()?).ok()?;
        let secs = |v: &serde_json::Value| v.as_i64().or_else(|| v.as_f64().map(|f| f as i64));
        // A time claim that is present but not a number makes the token
        // invalid, as before caching.
        let expires = match claims.get("exp") {
            Some(exp) => Some(secs(exp)?),
            None => None,
        };
        let mut not_before = Vec::new();
        for name in ["nbf", "iat"] {
            if let Some(t) = claims.get(name) {
                not_before.push(secs(t)?);
            }
        }
        let username = claims.get("username")?.as_str()?.to_string();
        // Go decodes JSON numbers as float64; accept either spelling.
        let rev = claims.get("revision")?;
        let revision = rev.as_u64().or_else(|| {
            rev.as_f64()
                .filter(|f| f.is_finite() && *f >= 0.0 && f.fract() == 0.0)
                .map(|f| f as u64)
        })?;
        Some(VerifiedClaims {
            username,
            revision,
            expires,
            not_before,
        })
    }
}

fn b64_json<T: Serialize>(v: &T) -> Result<String, AuthError> {
    serde_json::to_vec(v)
        .map(|j| B64.encode(j))
        .map_err(|e| AuthError::Internal(format!("jwt encode: {e}")))
}

#[cfg(test)]
#[path = "jwt_tests.rs"]
mod tests;
