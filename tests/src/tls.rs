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

pub use cairn_test_pki::{Ca, Issued, cert_der, self_signed_ca_leaf, write_atomic};

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
