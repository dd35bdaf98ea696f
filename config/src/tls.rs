//! TLS settings: the typed form of etcd's `--cert-file`/`--peer-*` flags and
//! `--cipher-suites`.
//!
//! This crate only checks the settings' shape (which flags go together,
//! which cipher-suite names exist); reading and parsing the certificate
//! files is the server's job at startup, so a reload of the configuration
//! never depends on the state of certificate files being rotated.

use std::path::PathBuf;

/// Which listener a set of TLS settings belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TlsSide {
    /// The client listeners (`--listen-client-urls`, and `https` metrics URLs).
    Client,
    /// The peer listeners and this member's connections to other members.
    Peer,
}

impl TlsSide {
    /// `client` or `peer`, as used in metric labels and log lines.
    pub fn as_str(self) -> &'static str {
        match self {
            TlsSide::Client => "client",
            TlsSide::Peer => "peer",
        }
    }

    /// The flag names for this side, for messages that point at them.
    pub fn flags(self) -> TlsFlags {
        match self {
            TlsSide::Client => TlsFlags {
                cert_file: "cert-file",
                key_file: "key-file",
                trusted_ca_file: "trusted-ca-file",
                client_cert_auth: "client-cert-auth",
                auto_tls: "auto-tls",
                crl_file: "client-crl-file",
                allowed_hostname: "client-cert-allowed-hostname",
            },
            TlsSide::Peer => TlsFlags {
                cert_file: "peer-cert-file",
                key_file: "peer-key-file",
                trusted_ca_file: "peer-trusted-ca-file",
                client_cert_auth: "peer-client-cert-auth",
                auto_tls: "peer-auto-tls",
                crl_file: "peer-crl-file",
                allowed_hostname: "peer-cert-allowed-hostname",
            },
        }
    }
}

/// The flag names (without dashes) of one side's TLS settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TlsFlags {
    pub cert_file: &'static str,
    pub key_file: &'static str,
    pub trusted_ca_file: &'static str,
    pub client_cert_auth: &'static str,
    pub auto_tls: &'static str,
    pub crl_file: &'static str,
    pub allowed_hostname: &'static str,
}

/// Where one side's certificate comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TlsIdentity {
    /// `--cert-file` and `--key-file` (or the `--peer-*` pair): PEM files,
    /// re-read by the server whenever they change.
    Files {
        cert_file: PathBuf,
        key_file: PathBuf,
    },
    /// `--auto-tls` / `--peer-auto-tls` without certificate files: the
    /// server generates a self-signed certificate for the listen hosts and
    /// keeps it under `<data-dir>/fixtures/client` (or `peer`), as etcd does.
    Auto,
}

/// The TLS settings of one side (clients or peers).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsSettings {
    pub side: TlsSide,
    pub identity: TlsIdentity,
    /// PEM bundle of CAs that sign the other end's certificates: clients'
    /// certificates on the client side; on the peer side both the peers'
    /// client certificates and their server certificates. Re-read when it
    /// changes. `None` with auto TLS (etcd drops it there too).
    pub trusted_ca_file: Option<PathBuf>,
    /// Whether connecting clients (or peers) must present a certificate
    /// signed by `trusted_ca_file`. True with `--client-cert-auth`, and also
    /// whenever a trusted CA file is given, as in etcd.
    pub client_cert_auth: bool,
    /// `--peer-cert-allowed-cn`: a peer's client certificate must carry this
    /// common name. Always `None` on the client side.
    pub allowed_cn: Option<String>,
    /// `--client-cert-allowed-hostname` / `--peer-cert-allowed-hostname`: a
    /// client certificate's subject alternative names must match this DNS
    /// name or IP address (Go's `VerifyHostname`). Never set together with
    /// `allowed_cn` (etcd refuses that combination).
    pub allowed_hostname: Option<String>,
    /// `--client-crl-file` / `--peer-crl-file`: a certificate revocation
    /// list (PEM `X509 CRL` or DER). A client certificate, or any
    /// certificate sent with it, whose serial number the list names is
    /// refused. Re-read when it changes, like the other files.
    pub crl_file: Option<PathBuf>,
}

impl TlsSettings {
    pub fn is_auto(&self) -> bool {
        self.identity == TlsIdentity::Auto
    }
}

/// How Cairn treats one of Go's cipher-suite names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Availability {
    /// A TLS 1.2 suite rustls implements; the canonical (IANA) name.
    Tls12(&'static str),
    /// A TLS 1.3 suite. Go ignores these in `CipherSuites` (TLS 1.3 suites
    /// are always on) and so does Cairn.
    Tls13,
    /// A suite Go knows but rustls does not implement (CBC, RC4, 3DES or
    /// RSA key exchange).
    Unavailable,
}

use Availability::*;

/// Every name etcd 3.4 (built with Go 1.19) accepts in `--cipher-suites`.
const GO_CIPHER_SUITES: &[(&str, Availability)] = &[
    ("TLS_RSA_WITH_RC4_128_SHA", Unavailable),
    ("TLS_RSA_WITH_3DES_EDE_CBC_SHA", Unavailable),
    ("TLS_RSA_WITH_AES_128_CBC_SHA", Unavailable),
    ("TLS_RSA_WITH_AES_256_CBC_SHA", Unavailable),
    ("TLS_RSA_WITH_AES_128_CBC_SHA256", Unavailable),
    ("TLS_RSA_WITH_AES_128_GCM_SHA256", Unavailable),
    ("TLS_RSA_WITH_AES_256_GCM_SHA384", Unavailable),
    ("TLS_ECDHE_ECDSA_WITH_RC4_128_SHA", Unavailable),
    ("TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA", Unavailable),
    ("TLS_ECDHE_ECDSA_WITH_AES_256_CBC_SHA", Unavailable),
    ("TLS_ECDHE_RSA_WITH_RC4_128_SHA", Unavailable),
    ("TLS_ECDHE_RSA_WITH_3DES_EDE_CBC_SHA", Unavailable),
    ("TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA", Unavailable),
    ("TLS_ECDHE_RSA_WITH_AES_256_CBC_SHA", Unavailable),
    ("TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA256", Unavailable),
    ("TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA256", Unavailable),
    (
        "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256",
        Tls12("TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256"),
    ),
    (
        "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256",
        Tls12("TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256"),
    ),
    (
        "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384",
        Tls12("TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384"),
    ),
    (
        "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384",
        Tls12("TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384"),
    ),
    (
        "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256",
        Tls12("TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256"),
    ),
    (
        "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256",
        Tls12("TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256"),
    ),
    // Go's older spellings of the two ChaCha20 suites.
    (
        "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305",
        Tls12("TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256"),
    ),
    (
        "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305",
        Tls12("TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256"),
    ),
    ("TLS_AES_128_GCM_SHA256", Tls13),
    ("TLS_AES_256_GCM_SHA384", Tls13),
    ("TLS_CHACHA20_POLY1305_SHA256", Tls13),
];

/// The TLS 1.2 suites Cairn can offer, by their canonical names: what
/// [`crate::ServerConfig::cipher_suites`] may contain.
pub const TLS12_CIPHER_SUITES: &[&str] = &[
    "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256",
    "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384",
    "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256",
    "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256",
    "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384",
    "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256",
];

/// What one `--cipher-suites` item means.
pub(crate) enum SuiteName {
    /// Offer this TLS 1.2 suite (canonical name).
    Tls12(&'static str),
    /// A TLS 1.3 suite: always on, nothing to do.
    Tls13,
    /// Known to Go, not implemented by rustls.
    Unavailable,
}

/// Looks a Go cipher-suite name up; `None` for a name Go does not know
/// (etcd then fails with `unexpected TLS cipher suite`).
pub(crate) fn lookup_suite(name: &str) -> Option<SuiteName> {
    GO_CIPHER_SUITES
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, a)| match a {
            Tls12(canonical) => SuiteName::Tls12(canonical),
            Tls13 => SuiteName::Tls13,
            Unavailable => SuiteName::Unavailable,
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_available_suite_is_offered() {
        for (name, a) in GO_CIPHER_SUITES {
            if let Tls12(canonical) = a {
                assert!(TLS12_CIPHER_SUITES.contains(canonical), "{name}");
            }
        }
        for s in TLS12_CIPHER_SUITES {
            assert!(matches!(lookup_suite(s), Some(SuiteName::Tls12(c)) if c == *s));
        }
        assert!(lookup_suite("TLS_FOO").is_none());
    }
}
