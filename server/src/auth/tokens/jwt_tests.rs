//! JWT tests, against keys made with openssl and tokens issued by etcd
//! 3.4.23 with those keys (see `../testdata/README.md`).

use super::*;
use std::time::UNIX_EPOCH;

const RSA_KEY: &[u8] = include_bytes!("../testdata/rsa.key");
const RSA_PUB: &[u8] = include_bytes!("../testdata/rsa.pub");
const RSA_PKCS8_KEY: &[u8] = include_bytes!("../testdata/rsa_pkcs8.key");
const EC256_KEY: &[u8] = include_bytes!("../testdata/ec256.key");
const EC256_PKCS8_KEY: &[u8] = include_bytes!("../testdata/ec256_pkcs8.key");
const EC256_PUB: &[u8] = include_bytes!("../testdata/ec256.pub");
const EC384_KEY: &[u8] = include_bytes!("../testdata/ec384.key");
const EC384_PUB: &[u8] = include_bytes!("../testdata/ec384.pub");
const EC521_KEY: &[u8] = include_bytes!("../testdata/ec521.key");
const EC521_PUB: &[u8] = include_bytes!("../testdata/ec521.pub");
const HMAC_KEY: &[u8] = include_bytes!("../testdata/hmac.key");
const RSA_CRT: &[u8] = include_bytes!("../testdata/rsa.crt");
const RSA_PKCS1_PUB: &[u8] = include_bytes!("../testdata/rsa_pkcs1.pub");
const EC256_CRT: &[u8] = include_bytes!("../testdata/ec256.crt");
const EC384_CRT: &[u8] = include_bytes!("../testdata/ec384.crt");
const EC521_CRT: &[u8] = include_bytes!("../testdata/ec521.crt");
const ETCD_TOKENS: &str = include_str!("../testdata/etcd_tokens.txt");

const HOUR: Duration = Duration::from_secs(3600);

fn at(unix: i64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(u64::try_from(unix).unwrap())
}

/// The private and public key files for a method.
fn keys(m: SignMethod) -> (&'static [u8], Option<&'static [u8]>) {
    use SignMethod::*;
    match m {
        HS256 | HS384 | HS512 => (HMAC_KEY, None),
        RS256 | RS384 | RS512 | PS256 | PS384 | PS512 => (RSA_KEY, Some(RSA_PUB)),
        ES256 => (EC256_KEY, Some(EC256_PUB)),
        ES384 => (EC384_KEY, Some(EC384_PUB)),
        ES512 => (EC521_KEY, Some(EC521_PUB)),
    }
}

const ALL: [SignMethod; 12] = [
    SignMethod::HS256,
    SignMethod::HS384,
    SignMethod::HS512,
    SignMethod::RS256,
    SignMethod::RS384,
    SignMethod::RS512,
    SignMethod::PS256,
    SignMethod::PS384,
    SignMethod::PS512,
    SignMethod::ES256,
    SignMethod::ES384,
    SignMethod::ES512,
];

fn payload(token: &str) -> serde_json::Value {
    let p = token.split('.').nth(1).unwrap();
    serde_json::from_slice(&B64.decode(p).unwrap()).unwrap()
}

#[test]
fn method_names_round_trip() {
    for m in ALL {
        assert_eq!(SignMethod::parse(m.name()), Some(m));
    }
    assert_eq!(SignMethod::parse("none"), None);
    assert_eq!(SignMethod::parse("EdDSA"), None);
}

#[test]
fn sign_and_verify_every_method() {
    let now = at(1_800_000_000);
    for m in ALL {
        let (private, public) = keys(m);
        let j = JwtTokens::from_keys(m, Some(private), public, Duration::from_secs(300))
            .unwrap_or_else(|e| panic!("{m:?}: {e}"));
        assert!(j.can_sign());
        let t = j.sign("alice", 42, now).unwrap();
        assert_eq!(j.verify(&t, now), Some(("alice".into(), 42)), "{m:?}");
        let p = payload(&t);
        assert_eq!(p["exp"], 1_800_000_300, "{m:?}");
        assert_eq!(p["revision"], 42);
        assert_eq!(p["username"], "alice");
        // A verify-only member (public key alone) accepts it too.
        if let Some(public) = public {
            let v = JwtTokens::from_keys(m, None, Some(public), HOUR).unwrap();
            assert!(!v.can_sign());
            assert_eq!(v.verify(&t, now), Some(("alice".into(), 42)), "{m:?}");
            assert_eq!(v.sign("alice", 1, now), Err(AuthError::VerifyOnly));
        }
    }
}

#[test]
fn verifies_tokens_issued_by_etcd() {
    // etcd 3.4.23 ran with ttl=1h, user root, auth revision 4.
    let mut seen = 0;
    for line in ETCD_TOKENS.lines().filter(|l| !l.trim().is_empty()) {
        let (name, token) = line.split_once(' ').unwrap();
        let m = SignMethod::parse(name).unwrap();
        let j = match m {
            // Issued with the PKCS#8 key and no public key file.
            SignMethod::RS512 => JwtTokens::from_keys(m, Some(RSA_PKCS8_KEY), None, HOUR),
            SignMethod::HS256 => JwtTokens::from_keys(m, Some(HMAC_KEY), None, HOUR),
            _ => JwtTokens::from_keys(m, None, keys(m).1, HOUR),
        }
        .unwrap();
        let exp = payload(token)["exp"].as_i64().unwrap();
        assert_eq!(
            j.verify(token, at(exp - 10)),
            Some(("root".into(), 4)),
            "{m:?}"
        );
        assert_eq!(
            j.verify(token, at(exp)),
            Some(("root".into(), 4)),
            "{m:?}: exp is inclusive"
        );
        assert_eq!(j.verify(token, at(exp + 1)), None, "{m:?}: expired");
        seen += 1;
    }
    assert_eq!(seen, 7);
}

#[test]
fn tokens_issued_by_etcd_verify_with_a_certificate_as_public_key() {
    let mut seen = 0;
    for line in ETCD_TOKENS.lines().filter(|l| !l.trim().is_empty()) {
        let (name, token) = line.split_once(' ').unwrap();
        let m = SignMethod::parse(name).unwrap();
        let cert = match m {
            // Issued with rsa_pkcs8.key, which has no certificate here.
            SignMethod::RS512 | SignMethod::HS256 => continue,
            SignMethod::ES256 => EC256_CRT,
            SignMethod::ES384 => EC384_CRT,
            SignMethod::ES512 => EC521_CRT,
            _ => RSA_CRT,
        };
        let j = JwtTokens::from_keys(m, None, Some(cert), HOUR).unwrap();
        let exp = payload(token)["exp"].as_i64().unwrap();
        assert_eq!(j.verify(token, at(exp)), Some(("root".into(), 4)), "{m:?}");
        seen += 1;
    }
    assert_eq!(seen, 5);
}

/// Every private-key form etcd 3.4 reads, for each asymmetric method:
/// (private key PEM, what it is).
fn private_forms(m: SignMethod) -> Vec<(Vec<u8>, &'static str)> {
    use SignMethod::*;
    use p256::pkcs8::{EncodePrivateKey, LineEnding};
    let pkcs8 = |der: p256::pkcs8::Result<p256::pkcs8::der::zeroize::Zeroizing<String>>| {
        der.unwrap().as_bytes().to_vec()
    };
    match m {
        RS256 | RS384 | RS512 | PS256 | PS384 | PS512 => {
            let k =
                rsa::RsaPrivateKey::from_pkcs1_pem(std::str::from_utf8(RSA_KEY).unwrap()).unwrap();
            vec![
                (RSA_KEY.to_vec(), "PKCS#1 RSA PRIVATE KEY"),
                (pkcs8(k.to_pkcs8_pem(LineEnding::LF)), "PKCS#8 PRIVATE KEY"),
            ]
        }
        ES256 => {
            let params =
                b"-----BEGIN EC PARAMETERS-----\nBggqhkjOPQMBBw==\n-----END EC PARAMETERS-----\n";
            vec![
                (EC256_KEY.to_vec(), "SEC1 EC PRIVATE KEY"),
                (EC256_PKCS8_KEY.to_vec(), "PKCS#8 PRIVATE KEY"),
                (
                    [&params[..], EC256_KEY].concat(),
                    "EC PARAMETERS, then SEC1",
                ),
            ]
        }
        ES384 => {
            let k =
                p384::SecretKey::from_sec1_pem(std::str::from_utf8(EC384_KEY).unwrap()).unwrap();
            vec![
                (EC384_KEY.to_vec(), "SEC1 EC PRIVATE KEY"),
                (pkcs8(k.to_pkcs8_pem(LineEnding::LF)), "PKCS#8 PRIVATE KEY"),
            ]
        }
        ES512 => {
            let k =
                p521::SecretKey::from_sec1_pem(std::str::from_utf8(EC521_KEY).unwrap()).unwrap();
            vec![
                (EC521_KEY.to_vec(), "SEC1 EC PRIVATE KEY"),
                (pkcs8(k.to_pkcs8_pem(LineEnding::LF)), "PKCS#8 PRIVATE KEY"),
            ]
        }
        HS256 | HS384 | HS512 => vec![],
    }
}

/// Every public-key form etcd 3.4 reads (plus PKCS#1 for RSA, which etcd
/// refuses and Cairn takes): (public key PEM, what it is).
fn public_forms(m: SignMethod) -> Vec<(Vec<u8>, &'static str)> {
    use SignMethod::*;
    let (spki, cert): (&[u8], &[u8]) = match m {
        RS256 | RS384 | RS512 | PS256 | PS384 | PS512 => (RSA_PUB, RSA_CRT),
        ES256 => (EC256_PUB, EC256_CRT),
        ES384 => (EC384_PUB, EC384_CRT),
        ES512 => (EC521_PUB, EC521_CRT),
        HS256 | HS384 | HS512 => return vec![],
    };
    let mut forms = vec![
        (spki.to_vec(), "SPKI PUBLIC KEY"),
        (cert.to_vec(), "CERTIFICATE"),
        // A chain file: the first certificate's key counts.
        ([cert, EC256_CRT].concat(), "CERTIFICATE chain"),
    ];
    if matches!(m, RS256 | RS384 | RS512 | PS256 | PS384 | PS512) {
        forms.push((RSA_PKCS1_PUB.to_vec(), "PKCS#1 RSA PUBLIC KEY"));
    }
    forms
}

#[test]
fn every_key_form_works_with_every_asymmetric_method() {
    let now = at(1_800_000_000);
    let mut combinations = 0;
    for m in ALL {
        for (private, pf) in private_forms(m) {
            for (public, uf) in public_forms(m) {
                let signer = JwtTokens::from_keys(m, Some(&private), Some(&public), HOUR)
                    .unwrap_or_else(|e| panic!("{m:?} {pf} + {uf}: {e}"));
                let token = signer.sign("alice", 3, now).unwrap();
                let verifier = JwtTokens::from_keys(m, None, Some(&public), HOUR)
                    .unwrap_or_else(|e| panic!("{m:?} {uf} alone: {e}"));
                assert_eq!(
                    verifier.verify(&token, now),
                    Some(("alice".into(), 3)),
                    "{m:?} {pf} + {uf}"
                );
                combinations += 1;
            }
        }
    }
    // 6 RSA methods x 2 x 4, ES256 3 x 3, ES384 and ES512 2 x 3.
    assert_eq!(combinations, 6 * 2 * 4 + 3 * 3 + 2 * 2 * 3);
}

#[test]
fn a_certificate_of_the_wrong_key_type_or_curve_is_refused() {
    for (m, public) in [
        (SignMethod::RS256, EC256_CRT),
        (SignMethod::PS384, EC521_CRT),
        (SignMethod::ES256, RSA_CRT),
        (SignMethod::ES256, EC384_CRT),
        (SignMethod::ES384, EC521_CRT),
        (SignMethod::ES512, EC256_CRT),
    ] {
        let e = JwtTokens::from_keys(m, None, Some(public), HOUR).unwrap_err();
        assert!(matches!(e, AuthError::InvalidKey(_)), "{m:?}: {e:?}");
    }
    // A certificate whose key is not the private key's.
    assert_eq!(
        JwtTokens::from_keys(SignMethod::RS256, Some(RSA_PKCS8_KEY), Some(RSA_CRT), HOUR)
            .unwrap_err(),
        AuthError::KeyMismatch
    );
    // In a chain only the first certificate counts, as in etcd.
    assert_eq!(
        JwtTokens::from_keys(
            SignMethod::ES256,
            Some(EC256_KEY),
            Some(&[EC384_CRT, EC256_CRT].concat()),
            HOUR
        )
        .unwrap_err(),
        AuthError::InvalidKey("key is not a valid P-256 public key".into())
    );
    let broken = b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n";
    assert_eq!(
        JwtTokens::from_keys(SignMethod::RS256, None, Some(broken), HOUR).unwrap_err(),
        AuthError::InvalidKey("the PEM CERTIFICATE cannot be read".into())
    );
    assert_eq!(
        JwtTokens::from_keys(SignMethod::RS256, None, Some(HMAC_KEY), HOUR).unwrap_err(),
        AuthError::InvalidKey("key is not a valid RSA public key".into())
    );
}

#[test]
fn deterministic_methods_reproduce_etcd_tokens_byte_for_byte() {
    // RSASSA-PKCS1-v1_5 and HMAC are deterministic: same key, claims and
    // header give the same token etcd issued.
    for (name, private) in [
        ("RS256", RSA_KEY),
        ("RS512", RSA_PKCS8_KEY),
        ("HS256", HMAC_KEY),
    ] {
        let line = ETCD_TOKENS
            .lines()
            .find(|l| l.starts_with(&format!("{name} ")))
            .unwrap();
        let etcd_token = &line[name.len() + 1..];
        let exp = payload(etcd_token)["exp"].as_i64().unwrap();
        let m = SignMethod::parse(name).unwrap();
        let j = JwtTokens::from_keys(m, Some(private), None, HOUR).unwrap();
        assert_eq!(
            j.sign("root", 4, at(exp - 3600)).unwrap(),
            etcd_token,
            "{name}"
        );
    }
}

#[test]
fn tampered_tokens_are_refused() {
    let now = at(1_800_000_000);
    let j = JwtTokens::from_keys(SignMethod::RS256, Some(RSA_KEY), None, HOUR).unwrap();
    let t = j.sign("alice", 7, now).unwrap();
    let parts: Vec<&str> = t.split('.').collect();
    let forged_claims = B64.encode(br#"{"exp":1900000000,"revision":7,"username":"root"}"#);
    let forged = format!("{}.{}.{}", parts[0], forged_claims, parts[2]);
    assert_eq!(j.verify(&forged, now), None, "claims changed");
    let mut sig = B64.decode(parts[2]).unwrap();
    sig[0] ^= 1;
    let bad_sig = format!("{}.{}.{}", parts[0], parts[1], B64.encode(&sig));
    assert_eq!(j.verify(&bad_sig, now), None, "signature changed");
    // Algorithm confusion: an HS256 token keyed with the public key, and
    // an unsigned "none" token.
    let hs_header = B64.encode(br#"{"alg":"HS256","typ":"JWT"}"#);
    let msg = format!("{hs_header}.{}", parts[1]);
    let hs_sig = jsonwebtoken::crypto::sign(
        msg.as_bytes(),
        &EncodingKey::from_secret(RSA_PUB),
        Algorithm::HS256,
    )
    .unwrap();
    assert_eq!(j.verify(&format!("{msg}.{hs_sig}"), now), None);
    let none_header = B64.encode(br#"{"alg":"none","typ":"JWT"}"#);
    assert_eq!(j.verify(&format!("{none_header}.{}.", parts[1]), now), None);
    // Shape.
    for junk in [
        "",
        ".",
        "..",
        "a.b.c",
        "a.b.c.d",
        &format!("{t}.x"),
        &t[..t.len() - 1],
        "sssvIpwfnLAcWAQH.9",
        "\u{1F600}.\u{1F600}.\u{1F600}",
    ] {
        assert_eq!(j.verify(junk, now), None, "{junk:?}");
    }
    // The same token under another key or method.
    let other = JwtTokens::from_keys(SignMethod::RS256, Some(RSA_PKCS8_KEY), None, HOUR).unwrap();
    assert_eq!(other.verify(&t, now), None);
    let ps = JwtTokens::from_keys(SignMethod::PS256, Some(RSA_KEY), None, HOUR).unwrap();
    assert_eq!(
        ps.verify(&t, now),
        None,
        "header alg must match the configured method"
    );
}

#[test]
fn expiry_and_time_claims() {
    let j = JwtTokens::from_keys(SignMethod::HS256, Some(HMAC_KEY), None, HOUR).unwrap();
    let t = j.sign("u", 1, at(1000)).unwrap();
    assert!(j.verify(&t, at(4600)).is_some());
    assert!(j.verify(&t, at(4601)).is_none());
    // A zero TTL (`ttl=0`) is valid within the same second only.
    let z = JwtTokens::from_keys(SignMethod::HS256, Some(HMAC_KEY), None, Duration::ZERO).unwrap();
    let t0 = z.sign("u", 1, at(1000)).unwrap();
    assert!(z.verify(&t0, at(1000)).is_some());
    assert!(z.verify(&t0, at(1001)).is_none());

    // Hand-made claims, signed with the same secret.
    let craft = |claims: &str| {
        let msg = format!(
            "{}.{}",
            B64.encode(br#"{"alg":"HS256","typ":"JWT"}"#),
            B64.encode(claims)
        );
        let sig = jsonwebtoken::crypto::sign(
            msg.as_bytes(),
            &EncodingKey::from_secret(HMAC_KEY),
            Algorithm::HS256,
        )
        .unwrap();
        format!("{msg}.{sig}")
    };
    let now = at(2000);
    let ok = |c: &str| j.verify(&craft(c), now);
    assert_eq!(
        ok(r#"{"revision":3,"username":"a"}"#),
        Some(("a".into(), 3)),
        "no exp: valid (as jwt-go)"
    );
    assert_eq!(
        ok(r#"{"exp":3000.0,"revision":3.0,"username":"a"}"#),
        Some(("a".into(), 3)),
        "Go floats"
    );
    assert_eq!(ok(r#"{"exp":1999,"revision":3,"username":"a"}"#), None);
    assert_eq!(ok(r#"{"exp":"3000","revision":3,"username":"a"}"#), None);
    assert_eq!(ok(r#"{"nbf":2001,"revision":3,"username":"a"}"#), None);
    assert_eq!(ok(r#"{"iat":2001,"revision":3,"username":"a"}"#), None);
    assert_eq!(
        ok(r#"{"nbf":2000,"iat":1,"revision":3,"username":"a"}"#),
        Some(("a".into(), 3))
    );
    assert_eq!(ok(r#"{"revision":3}"#), None, "no username");
    assert_eq!(ok(r#"{"username":"a"}"#), None, "no revision");
    assert_eq!(ok(r#"{"revision":-1,"username":"a"}"#), None);
    assert_eq!(ok(r#"{"revision":1.5,"username":"a"}"#), None);
    assert_eq!(ok(r#"{"revision":3,"username":7}"#), None);
    assert_eq!(ok("[]"), None);
    assert_eq!(ok("not json"), None);
}

#[test]
fn key_forms_and_mismatches() {
    let now = at(1_800_000_000);
    // PKCS#8 EC key, and an EC key file with its parameters block first.
    let j = JwtTokens::from_keys(
        SignMethod::ES256,
        Some(EC256_PKCS8_KEY),
        Some(EC256_PUB),
        HOUR,
    )
    .unwrap();
    let t = j.sign("u", 1, now).unwrap();
    let params = b"-----BEGIN EC PARAMETERS-----\nBggqhkjOPQMBBw==\n-----END EC PARAMETERS-----\n";
    let with_params = [&params[..], EC256_KEY].concat();
    let k = JwtTokens::from_keys(SignMethod::ES256, Some(&with_params), None, HOUR).unwrap();
    assert_eq!(k.verify(&t, now), Some(("u".into(), 1)));

    // Private and public key that do not belong together.
    assert_eq!(
        JwtTokens::from_keys(SignMethod::RS256, Some(RSA_PKCS8_KEY), Some(RSA_PUB), HOUR)
            .unwrap_err(),
        AuthError::KeyMismatch
    );
    let other_p256 = p256::SecretKey::random(&mut rand::rngs::OsRng);
    let other_pub = p256::pkcs8::EncodePublicKey::to_public_key_pem(
        &other_p256.public_key(),
        p256::pkcs8::LineEnding::LF,
    )
    .unwrap();
    assert_eq!(
        JwtTokens::from_keys(
            SignMethod::ES256,
            Some(EC256_KEY),
            Some(other_pub.as_bytes()),
            HOUR
        )
        .unwrap_err(),
        AuthError::KeyMismatch
    );
    assert_eq!(
        JwtTokens::from_keys(SignMethod::ES512, Some(EC521_KEY), Some(EC256_PUB), HOUR)
            .unwrap_err(),
        AuthError::InvalidKey("key is not a valid P-521 public key".into())
    );

    // Keys of the wrong kind or curve.
    for (m, private) in [
        (SignMethod::ES256, RSA_KEY),
        (SignMethod::ES256, EC384_KEY),
        (SignMethod::ES384, EC256_KEY),
        (SignMethod::ES512, EC256_KEY),
        (SignMethod::RS256, EC256_KEY),
        (SignMethod::PS256, b"not a key".as_slice()),
        (SignMethod::ES512, b"\xff\xfe".as_slice()),
    ] {
        let e = JwtTokens::from_keys(m, Some(private), None, HOUR).unwrap_err();
        assert!(matches!(e, AuthError::InvalidKey(_)), "{m:?}: {e:?}");
    }
    // No key at all, and an empty HMAC secret.
    for m in ALL {
        assert_eq!(
            JwtTokens::from_keys(m, None, None, HOUR).unwrap_err(),
            AuthError::MissingKey,
            "{m:?}"
        );
    }
    assert_eq!(
        JwtTokens::from_keys(SignMethod::HS256, Some(b""), None, HOUR).unwrap_err(),
        AuthError::MissingKey
    );
}

#[test]
fn reads_key_files_named_by_the_option() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/src/auth/testdata");
    let opt =
        format!("jwt,pub-key={dir}/ec521.pub,priv-key={dir}/ec521.key,sign-method=ES512,ttl=1h");
    let p = crate::auth::TokenProvider::from_option(&opt, Duration::from_secs(300)).unwrap();
    let crate::auth::TokenProvider::Jwt(j) = &p else {
        panic!("not jwt");
    };
    assert_eq!(j.method(), SignMethod::ES512);
    assert_eq!(j.ttl(), HOUR);
    let now = crate::auth::Now {
        instant: std::time::Instant::now(),
        wall: at(1_800_000_000),
    };
    assert_eq!(p.generate_prefix(), "", "JWT needs no prefix");
    let t = p.assign("bob", 9, "", 123, now).unwrap();
    let i = p.info(&t, now, 100).unwrap();
    assert_eq!(
        (i.username.as_str(), i.revision),
        ("bob", 9),
        "JWT keeps its own revision"
    );
    // invalidate/disable do not recall JWTs.
    p.invalidate_user("bob");
    p.disable();
    assert!(p.info(&t, now, 100).is_ok());
    assert_eq!(
        p.info("garbage", now, 100),
        Err(AuthError::InvalidAuthToken)
    );
}

#[test]
fn verified_tokens_are_remembered_within_bounds_and_still_expire() {
    let j = JwtTokens::from_keys(SignMethod::HS256, Some(HMAC_KEY), None, HOUR).unwrap();
    let first = j.sign("u0", 1, at(1000)).unwrap();
    assert!(j.verify(&first, at(1000)).is_some());
    assert!(j.verified.lock().get(first.as_str()).is_some());
    // A cached token is still checked against the clock.
    assert!(j.verify(&first, at(4601)).is_none());
    // Failures are not remembered.
    let forged = format!("{first}x");
    assert!(j.verify(&forged, at(1000)).is_none());
    assert!(j.verified.lock().get(forged.as_str()).is_none());
    for i in 1..=VERIFIED_TOKENS_CAPACITY {
        let t = j.sign(&format!("u{i}"), 1, at(1000)).unwrap();
        assert!(j.verify(&t, at(1000)).is_some());
    }
    let v = j.verified.lock();
    assert_eq!(v.len(), VERIFIED_TOKENS_CAPACITY);
    assert!(v.get(first.as_str()).is_none(), "the oldest is forgotten");
}
