//! TLS fixtures for cross-process tests: CAs and certificates made with
//! rcgen at test time (no private key is ever committed), and a small
//! rustls HTTPS client that also reports which certificate a server
//! presented.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};

/// Which TLS a test cluster uses (see `Options::tls`). Certificates come
/// from the cluster's CA ([`Pki`]) unless `auto` is set.
#[derive(Debug, Clone, Default)]
pub struct TlsOptions {
    /// `https` client URLs, `--cert-file`/`--key-file`.
    pub client: bool,
    /// `--client-cert-auth` with `--trusted-ca-file` (the CA bundle file).
    pub client_cert_auth: bool,
    /// `https` peer URLs, `--peer-cert-file`/`--peer-key-file` and
    /// `--peer-trusted-ca-file`.
    pub peer: bool,
    /// `--peer-client-cert-auth`.
    pub peer_cert_auth: bool,
    /// `--auto-tls` / `--peer-auto-tls` instead of CA-issued certificates.
    pub auto: bool,
    /// `--client-crl-file` (with `client_cert_auth`) and `--peer-crl-file`
    /// (with `peer`): `revoked.crl` in the member's TLS folder, at first
    /// an empty list signed by the cluster CA.
    pub crl: bool,
}

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

    fn issue_params(&self, params: rcgen::CertificateParams) -> Issued {
        let key = rcgen::KeyPair::generate().expect("key");
        let cert = params.signed_by(&key, &self.issuer).expect("certificate");
        Issued {
            cert: cert.pem(),
            key: key.serialize_pem(),
        }
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
fn leaf_params(cn: &str, sans: &[&str]) -> rcgen::CertificateParams {
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

/// A cluster's CA and the files made from it: `ca.crt` and the client
/// certificate `client.crt`/`client.key` (CN `root`) for etcdctl.
#[derive(Debug, Clone)]
pub struct Pki {
    pub dir: PathBuf,
    pub ca: Ca,
}

impl Pki {
    pub fn new(dir: &Path) -> Pki {
        let ca = Ca::new("cairn test CA");
        std::fs::create_dir_all(dir).expect("pki dir");
        std::fs::write(dir.join("ca.crt"), &ca.pem).expect("ca.crt");
        ca.issue("root", &[]).write(dir, "client");
        Pki {
            dir: dir.to_path_buf(),
            ca,
        }
    }

    pub fn ca_file(&self) -> PathBuf {
        self.dir.join("ca.crt")
    }

    pub fn client_cert(&self) -> PathBuf {
        self.dir.join("client.crt")
    }

    pub fn client_key(&self) -> PathBuf {
        self.dir.join("client.key")
    }
}

/// How the test client verifies the server.
pub enum Verify<'a> {
    /// Against these CA certificates (PEM).
    Roots(&'a str),
    /// Not at all (auto-TLS members).
    Nothing,
}

/// What one HTTPS GET saw.
#[derive(Debug)]
pub struct HttpsResponse {
    pub status: u16,
    pub body: String,
    /// The certificate the server presented (DER).
    pub served_cert: Vec<u8>,
}

/// GET `path` over HTTPS/1.1 from `addr`, verifying the server as
/// `host`, presenting `identity` (certificate and key PEM) if given.
/// Bounded: 2 s to connect, 5 s per read or write.
pub fn https_get(
    addr: SocketAddr,
    host: &str,
    path: &str,
    verify: Verify<'_>,
    identity: Option<&Issued>,
) -> std::io::Result<HttpsResponse> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()
        .map_err(std::io::Error::other)?;
    let builder = match verify {
        Verify::Roots(pem) => {
            let mut roots = rustls::RootCertStore::empty();
            for c in CertificateDer::pem_slice_iter(pem.as_bytes()) {
                roots
                    .add(c.map_err(std::io::Error::other)?)
                    .map_err(std::io::Error::other)?;
            }
            builder.with_root_certificates(roots)
        }
        Verify::Nothing => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(NoVerify(provider))),
    };
    let mut config = match identity {
        Some(id) => builder
            .with_client_auth_cert(
                CertificateDer::pem_slice_iter(id.cert.as_bytes())
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(std::io::Error::other)?,
                PrivateKeyDer::from_pem_slice(id.key.as_bytes()).map_err(std::io::Error::other)?,
            )
            .map_err(std::io::Error::other)?,
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let name = ServerName::try_from(host.to_string()).map_err(std::io::Error::other)?;
    let conn =
        rustls::ClientConnection::new(Arc::new(config), name).map_err(std::io::Error::other)?;
    let tcp = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    tcp.set_read_timeout(Some(Duration::from_secs(5)))?;
    tcp.set_write_timeout(Some(Duration::from_secs(5)))?;
    let mut tls = rustls::StreamOwned::new(conn, tcp);
    write!(
        tls,
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
    )?;
    tls.flush()?;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        match tls.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            // Servers may close without close_notify.
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof && !buf.is_empty() => break,
            Err(e) => return Err(e),
        }
        if buf.len() > 1 << 20 {
            break;
        }
    }
    let served_cert = tls
        .conn
        .peer_certificates()
        .and_then(|c| c.first())
        .map(|c| c.to_vec())
        .unwrap_or_default();
    let text = String::from_utf8_lossy(&buf).into_owned();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = text.split("\r\n\r\n").nth(1).unwrap_or("").to_string();
    Ok(HttpsResponse {
        status,
        body,
        served_cert,
    })
}

#[derive(Debug)]
struct NoVerify(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for NoVerify {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}
