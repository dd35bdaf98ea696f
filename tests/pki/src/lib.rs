//! Test-only certificate authorities: a CA, the certificates it issues and
//! its revocation lists, made with rcgen when a test runs (no private key
//! is ever committed). The server's TLS unit tests and the cross-process
//! tests (`cairn-tests`) both build their PKI here.

use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// A certificate authority.
#[derive(Clone)]
pub struct Ca {
    issuer: Arc<rcgen::Issuer<'static, rcgen::KeyPair>>,
    /// The CA certificate, PEM.
    pub pem: String,
}

impl std::fmt::Debug for Ca {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Ca")
    }
}

/// A certificate and its key, PEM.
#[derive(Debug, Clone)]
pub struct Issued {
    pub cert: String,
    pub key: String,
}

impl Ca {
    /// A self-signed CA named `name` that may sign certificates and CRLs.
    pub fn new(name: &str) -> Ca {
        let key = rcgen::KeyPair::generate().expect("CA key");
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params.distinguished_name = rcgen::DistinguishedName::new();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, name);
        params.key_usages = vec![
            rcgen::KeyUsagePurpose::KeyCertSign,
            rcgen::KeyUsagePurpose::CrlSign,
            rcgen::KeyUsagePurpose::DigitalSignature,
        ];
        let cert = params.self_signed(&key).expect("CA certificate");
        Ca {
            pem: cert.pem(),
            issuer: Arc::new(rcgen::Issuer::new(params, key)),
        }
    }

    /// A certificate for `cn`, valid for server and client use, with the
    /// given subject alternative names (IP addresses or DNS names). Every
    /// call makes a new key and a new random serial number.
    pub fn issue(&self, cn: &str, sans: &[&str]) -> Issued {
        self.issue_params(leaf_params(cn, sans))
    }

    /// Like [`Ca::issue`], with the given serial number (big-endian), so a
    /// revocation list can name it.
    pub fn issue_with_serial(&self, cn: &str, sans: &[&str], serial: &[u8]) -> Issued {
        let mut params = leaf_params(cn, sans);
        params.serial_number = Some(rcgen::SerialNumber::from_slice(serial));
        self.issue_params(params)
    }

    /// A certificate from `params` (for tests that need unusual fields),
    /// with a new key, signed by this CA.
    pub fn issue_params(&self, params: rcgen::CertificateParams) -> Issued {
        let key = rcgen::KeyPair::generate().expect("key");
        let cert = params.signed_by(&key, &self.issuer).expect("certificate");
        Issued {
            cert: cert.pem(),
            key: key.serialize_pem(),
        }
    }

    /// An intermediate CA signed by this one (with the serial number given,
    /// if any): the CA to issue from, and its own certificate and key.
    pub fn issue_ca(&self, name: &str, serial: Option<&[u8]>) -> (Ca, Issued) {
        let key = rcgen::KeyPair::generate().expect("key");
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params.serial_number = serial.map(rcgen::SerialNumber::from_slice);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, name);
        let cert = params
            .signed_by(&key, &self.issuer)
            .expect("intermediate CA");
        let issued = Issued {
            cert: cert.pem(),
            key: key.serialize_pem(),
        };
        let ca = Ca {
            pem: issued.cert.clone(),
            issuer: Arc::new(rcgen::Issuer::new(params, key)),
        };
        (ca, issued)
    }

    /// A certificate revocation list (PEM `X509 CRL`) signed by this CA,
    /// revoking the given serial numbers.
    pub fn crl(&self, serials: &[&[u8]]) -> String {
        let params = rcgen::CertificateRevocationListParams {
            this_update: rcgen::date_time_ymd(2024, 1, 1),
            next_update: rcgen::date_time_ymd(2100, 1, 1),
            crl_number: rcgen::SerialNumber::from(1u64),
            issuing_distribution_point: None,
            revoked_certs: serials
                .iter()
                .map(|s| rcgen::RevokedCertParams {
                    serial_number: rcgen::SerialNumber::from_slice(s),
                    revocation_time: rcgen::date_time_ymd(2024, 1, 1),
                    reason_code: Some(rcgen::RevocationReason::KeyCompromise),
                    invalidity_date: None,
                })
                .collect(),
            key_identifier_method: rcgen::KeyIdMethod::Sha256,
        };
        params
            .signed_by(&self.issuer)
            .expect("CRL")
            .pem()
            .expect("CRL PEM")
    }
}

/// Parameters of a leaf certificate for `cn` with `sans`, for server and
/// client use.
pub fn leaf_params(cn: &str, sans: &[&str]) -> rcgen::CertificateParams {
    let mut params =
        rcgen::CertificateParams::new(sans.iter().map(|s| s.to_string()).collect::<Vec<_>>())
            .expect("params");
    params.distinguished_name = rcgen::DistinguishedName::new();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, cn);
    params.key_usages = vec![
        rcgen::KeyUsagePurpose::DigitalSignature,
        rcgen::KeyUsagePurpose::KeyEncipherment,
    ];
    params.extended_key_usages = vec![
        rcgen::ExtendedKeyUsagePurpose::ServerAuth,
        rcgen::ExtendedKeyUsagePurpose::ClientAuth,
    ];
    params
}

/// One self-signed certificate that is its own CA (basicConstraints
/// CA:TRUE) and also a server and client certificate for `sans`: the
/// "one certificate for everything" setup, used as certificate, client
/// certificate and trusted CA file at once.
pub fn self_signed_ca_leaf(cn: &str, sans: &[&str]) -> Issued {
    let key = rcgen::KeyPair::generate().expect("key");
    let mut params = leaf_params(cn, sans);
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    params.key_usages.extend([
        rcgen::KeyUsagePurpose::KeyCertSign,
        rcgen::KeyUsagePurpose::CrlSign,
    ]);
    let cert = params.self_signed(&key).expect("self-signed certificate");
    Issued {
        cert: cert.pem(),
        key: key.serialize_pem(),
    }
}

impl Issued {
    /// Writes `<dir>/<name>.crt` and `<dir>/<name>.key`.
    pub fn write(&self, dir: &Path, name: &str) -> (PathBuf, PathBuf) {
        std::fs::create_dir_all(dir).expect("tls dir");
        let cert = dir.join(format!("{name}.crt"));
        let key = dir.join(format!("{name}.key"));
        write_atomic(&key, &self.key);
        write_atomic(&cert, &self.cert);
        (cert, key)
    }

    /// The certificate in DER, to compare with what a server presents.
    pub fn der(&self) -> Vec<u8> {
        cert_der(&self.cert)
    }
}

/// The first certificate of a PEM text, DER-encoded.
pub fn cert_der(pem: &str) -> Vec<u8> {
    CertificateDer::from_pem_slice(pem.as_bytes())
        .expect("PEM certificate")
        .to_vec()
}

/// Replaces a file the way deployment tools do: write a temporary file
/// next to it, then rename it over the old one.
pub fn write_atomic(path: &Path, text: &str) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).expect("write temp file");
    std::fs::rename(&tmp, path).expect("rename");
}
