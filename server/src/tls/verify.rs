//! Certificate checks, the way etcd 3.4 makes them (Go's `crypto/x509`
//! plus etcd's `pkg/transport`), on top of rustls' webpki verifiers:
//!
//! - **A trust anchor presented as a leaf.** Go accepts a certificate that
//!   is itself in the trusted CA bundle (the usual "one self-signed
//!   certificate for everything" setup), whatever its basicConstraints say.
//!   webpki refuses a CA certificate as an end entity (`CaUsedAsEndEntity`).
//!   [`ClientVerifier`] and [`ServerVerifier`] accept exactly that case; see
//!   [`anchor_as_leaf`] for the checks that still apply and why it is safe.
//! - **`--peer-cert-allowed-cn` / `--*-cert-allowed-hostname`**: the leaf's
//!   subject common name, or its subject alternative names matched with
//!   Go's `VerifyHostname`. etcd sets these checks on its peer TLS
//!   configuration for both directions, so a member also refuses to talk to
//!   a peer whose *server* certificate fails them.
//! - **`--*-crl-file`** (incoming connections only, as etcd): every
//!   certificate the client sent is refused if its serial number is in the
//!   list.
//!
//! A refusal by these checks carries a [`Rejection`] (etcd's error text and
//! the certificate's names) inside the rustls error, for the log line
//! `reject.rs` writes.

use super::crl::RevokedSerials;
use super::der::{self, AltNames};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{CertificateError, DigitallySignedStruct, DistinguishedName, SignatureScheme};
use std::net::IpAddr;
use std::sync::Arc;

/// etcd's error when the allowed CN or hostname does not match.
pub const NAME_CHECK_FAILED: &str = "client certificate authentication failed";

/// Which name a peer's (or client's) certificate must carry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AllowedName {
    /// `--peer-cert-allowed-cn`: the subject common name, exactly.
    CommonName(String),
    /// `--*-cert-allowed-hostname`: a DNS name or IP address matched
    /// against the subject alternative names.
    Hostname(String),
}

/// Why a certificate that the CA check let through was refused: etcd's
/// error text and the certificate's names (logged as Go's `IPAddresses`
/// and `DNSNames`).
#[derive(Debug, Clone)]
pub struct Rejection {
    pub message: String,
    pub names: AltNames,
}

impl std::fmt::Display for Rejection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Rejection {}

impl Rejection {
    fn of(cert: &CertificateDer<'_>, message: String) -> rustls::Error {
        let names = der::subject_alt_names(cert).unwrap_or_default();
        rustls::Error::InvalidCertificate(CertificateError::Other(rustls::OtherError(Arc::new(
            Rejection { message, names },
        ))))
    }

    /// The rejection inside a rustls error, if it is one.
    pub fn from_error(e: &rustls::Error) -> Option<&Rejection> {
        match e {
            rustls::Error::InvalidCertificate(CertificateError::Other(other)) => {
                other.0.downcast_ref::<Rejection>()
            }
            _ => None,
        }
    }
}

/// The checks one side adds to webpki's.
#[derive(Debug)]
pub struct Checks {
    /// The trusted CA bundle's certificates, byte for byte.
    anchors: Vec<CertificateDer<'static>>,
    allowed: Option<AllowedName>,
    /// Incoming connections only.
    revoked: Option<RevokedSerials>,
}

impl Checks {
    pub fn new(
        anchors: Vec<CertificateDer<'static>>,
        allowed: Option<AllowedName>,
        revoked: Option<RevokedSerials>,
    ) -> Checks {
        Checks {
            anchors,
            allowed,
            revoked,
        }
    }

    fn is_anchor(&self, cert: &CertificateDer<'_>) -> bool {
        self.anchors.iter().any(|a| a.as_ref() == cert.as_ref())
    }

    /// `--peer-cert-allowed-cn` / `--*-cert-allowed-hostname` on the leaf.
    fn check_name(&self, leaf: &CertificateDer<'_>) -> Result<(), rustls::Error> {
        let ok = match &self.allowed {
            None => true,
            Some(AllowedName::CommonName(cn)) => {
                der::subject_common_name(leaf).as_deref() == Some(cn.as_str())
            }
            Some(AllowedName::Hostname(host)) => {
                der::subject_alt_names(leaf).is_some_and(|names| verify_hostname(&names, host))
            }
        };
        if ok {
            Ok(())
        } else {
            Err(Rejection::of(leaf, NAME_CHECK_FAILED.to_string()))
        }
    }

    /// `--*-crl-file`: every certificate the other end sent, as etcd's
    /// `checkCRL` (serial numbers only, whoever issued them).
    fn check_revoked(
        &self,
        leaf: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
    ) -> Result<(), rustls::Error> {
        let Some(revoked) = &self.revoked else {
            return Ok(());
        };
        for cert in std::iter::once(leaf).chain(intermediates) {
            let serial = der::serial_number(cert).ok_or(rustls::Error::InvalidCertificate(
                CertificateError::BadEncoding,
            ))?;
            if revoked.contains(&serial) {
                return Err(Rejection::of(
                    leaf,
                    format!("transport: certificate serial {} revoked", hex(&serial)),
                ));
            }
        }
        Ok(())
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Whether webpki refused `e` only because the leaf is a CA certificate.
fn is_ca_used_as_end_entity(e: &rustls::Error) -> bool {
    matches!(
        e,
        rustls::Error::InvalidCertificate(CertificateError::Other(other))
            if matches!(other.0.downcast_ref::<webpki::Error>(), Some(webpki::Error::CaUsedAsEndEntity))
    )
}

/// Accepts a leaf that is byte for byte one of the trusted CA bundle's
/// certificates, as Go's `Certificate.Verify` does (its chain is then just
/// the leaf), with the checks Go still makes on such a leaf: no critical
/// extension it does not understand (webpki's parser refuses those), the
/// validity period, and the extended key usage for `purpose`.
///
/// Why this is safe: the operator named this exact certificate as trusted,
/// so it may vouch for anything, itself included; whoever presents it must
/// still prove in the handshake that they hold its private key (the
/// CertificateVerify signature, checked as for any leaf), and holding that
/// key already allows issuing a leaf webpki would accept. Only the error
/// "CA used as end entity" is overridden, and only for an exact match:
/// every other verdict of webpki stands.
fn anchor_as_leaf(
    leaf: &CertificateDer<'_>,
    now: UnixTime,
    purpose: &[u8],
) -> Result<(), rustls::Error> {
    rustls::server::ParsedCertificate::try_from(leaf)?;
    let bad = || rustls::Error::InvalidCertificate(CertificateError::BadEncoding);
    let (not_before, not_after) = der::validity(leaf).ok_or_else(bad)?;
    let now_secs = i64::try_from(now.as_secs()).unwrap_or(i64::MAX);
    if now_secs < not_before {
        return Err(CertificateError::NotValidYet.into());
    }
    if now_secs > not_after {
        return Err(CertificateError::Expired.into());
    }
    match der::extended_key_usages(leaf).ok_or_else(bad)? {
        None => Ok(()),
        Some(usages)
            if usages
                .iter()
                .any(|u| *u == purpose || *u == der::OID_ANY_EKU) =>
        {
            Ok(())
        }
        Some(_) => Err(CertificateError::InvalidPurpose.into()),
    }
}

/// Go's `Certificate.VerifyHostname` (Go 1.19, no common-name fallback):
/// an IP address (optionally in brackets) matches the IP SANs; a name
/// matches the DNS SANs case-insensitively, with a leading `*` label
/// matching one label, when both are valid host names, else only exactly.
pub fn verify_hostname(names: &AltNames, host: &str) -> bool {
    let ip_text = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    if let Ok(ip) = ip_text.parse::<IpAddr>() {
        let ip = ip.to_canonical();
        return names.ips.iter().any(|c| c.to_canonical() == ip);
    }
    let host = host.to_ascii_lowercase();
    let valid_host = valid_hostname(&host, false);
    names.dns.iter().any(|pattern| {
        if valid_host && valid_hostname(pattern, true) {
            match_hostnames(pattern, &host)
        } else {
            match_exactly(pattern, &host)
        }
    })
}

fn valid_hostname(host: &str, is_pattern: bool) -> bool {
    let host = if is_pattern {
        host
    } else {
        host.strip_suffix('.').unwrap_or(host)
    };
    if host.is_empty() {
        return false;
    }
    host.split('.').enumerate().all(|(i, part)| {
        if part.is_empty() {
            return false;
        }
        if is_pattern && i == 0 && part == "*" {
            return true;
        }
        part.char_indices()
            .all(|(j, c)| c.is_ascii_alphanumeric() || (c == '-' && j != 0) || c == '_')
    })
}

fn match_exactly(pattern: &str, host: &str) -> bool {
    if host.is_empty() || host == "." || pattern.is_empty() || pattern == "." {
        return false;
    }
    pattern.eq_ignore_ascii_case(host)
}

fn match_hostnames(pattern: &str, host: &str) -> bool {
    let pattern = pattern.to_ascii_lowercase();
    let pattern = pattern.strip_suffix('.').unwrap_or(&pattern);
    let host = host.strip_suffix('.').unwrap_or(host);
    if pattern.is_empty() || host.is_empty() {
        return false;
    }
    let pattern_parts: Vec<&str> = pattern.split('.').collect();
    let host_parts: Vec<&str> = host.split('.').collect();
    pattern_parts.len() == host_parts.len()
        && pattern_parts
            .iter()
            .zip(&host_parts)
            .enumerate()
            .all(|(i, (p, h))| (i == 0 && *p == "*") || p == h)
}

/// Verifies client certificates on a listener: webpki against the trusted
/// CA bundle, then etcd's rules (see the module docs).
#[derive(Debug)]
pub struct ClientVerifier {
    pub inner: Arc<dyn ClientCertVerifier>,
    pub checks: Arc<Checks>,
}

impl ClientCertVerifier for ClientVerifier {
    fn offer_client_auth(&self) -> bool {
        self.inner.offer_client_auth()
    }

    fn client_auth_mandatory(&self) -> bool {
        self.inner.client_auth_mandatory()
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.inner.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        let verified = match self
            .inner
            .verify_client_cert(end_entity, intermediates, now)
        {
            Ok(v) => v,
            Err(e) if is_ca_used_as_end_entity(&e) && self.checks.is_anchor(end_entity) => {
                anchor_as_leaf(end_entity, now, der::OID_CLIENT_AUTH)?;
                ClientCertVerified::assertion()
            }
            Err(e) => return Err(e),
        };
        // etcd's order: the name check (during the handshake), then the
        // revocation list (right after it).
        self.checks.check_name(end_entity)?;
        self.checks.check_revoked(end_entity, intermediates)?;
        Ok(verified)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// Verifies the server certificates of peers this member dials: webpki
/// against the trusted CA bundle (and the peer URL's host), then etcd's
/// rules (see the module docs).
#[derive(Debug)]
pub struct ServerVerifier {
    pub inner: Arc<dyn ServerCertVerifier>,
    pub checks: Arc<Checks>,
}

impl ServerCertVerifier for ServerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let verified = match self.inner.verify_server_cert(
            end_entity,
            intermediates,
            server_name,
            ocsp_response,
            now,
        ) {
            Ok(v) => v,
            Err(e) if is_ca_used_as_end_entity(&e) && self.checks.is_anchor(end_entity) => {
                anchor_as_leaf(end_entity, now, der::OID_SERVER_AUTH)?;
                let parsed = rustls::server::ParsedCertificate::try_from(end_entity)?;
                rustls::client::verify_server_name(&parsed, server_name)?;
                ServerCertVerified::assertion()
            }
            Err(e) => return Err(e),
        };
        self.checks.check_name(end_entity)?;
        Ok(verified)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(dns: &[&str], ips: &[&str]) -> AltNames {
        AltNames {
            dns: dns.iter().map(|s| s.to_string()).collect(),
            ips: ips.iter().map(|s| s.parse().expect("ip")).collect(),
        }
    }

    #[test]
    fn hostnames_match_as_in_go() {
        let n = names(
            &[
                "client.example.com",
                "*.pods.example.com",
                "Mixed.Example.COM",
            ],
            &["10.0.0.7", "::1"],
        );
        for host in [
            "client.example.com",
            "CLIENT.example.com",
            "client.example.com.",
            "a.pods.example.com",
            "mixed.example.com",
            "10.0.0.7",
            "::1",
            "[::1]",
            "::ffff:10.0.0.7",
        ] {
            assert!(verify_hostname(&n, host), "{host}");
        }
        for host in [
            "example.com",
            "other.example.com",
            "a.b.pods.example.com",
            "pods.example.com",
            "10.0.0.8",
            "",
            ".",
        ] {
            assert!(!verify_hostname(&n, host), "{host}");
        }
        // IP addresses never match DNS names, nor names IP SANs.
        assert!(!verify_hostname(&names(&["10.0.0.7"], &[]), "10.0.0.7"));
        // Invalid names only match exactly.
        let odd = names(&["weird name!"], &[]);
        assert!(verify_hostname(&odd, "weird name!"));
        assert!(!verify_hostname(
            &names(&["*.example.com"], &[]),
            "bad host!.example.com"
        ));
        assert!(!verify_hostname(&AltNames::default(), "client.example.com"));
    }
}
