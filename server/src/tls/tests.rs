//! Unit tests of loading, serving and reloading TLS files: real handshakes
//! over in-memory pipes with certificates made by rcgen at test time.

use super::*;
use cairn_config::{TlsIdentity, TlsSettings, TlsSide};
use rustls::pki_types::ServerName;

/// A CA that issues server and client certificates.
struct Ca {
    issuer: rcgen::Issuer<'static, rcgen::KeyPair>,
    pem: String,
}

impl Ca {
    fn new(name: &str) -> Ca {
        let key = rcgen::KeyPair::generate().expect("key");
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params.distinguished_name = rcgen::DistinguishedName::new();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, name);
        params.key_usages = vec![
            rcgen::KeyUsagePurpose::KeyCertSign,
            rcgen::KeyUsagePurpose::CrlSign,
        ];
        let cert = params.self_signed(&key).expect("ca cert");
        Ca {
            pem: cert.pem(),
            issuer: rcgen::Issuer::new(params, key),
        }
    }

    /// (certificate PEM, key PEM) for `cn` with `sans`.
    fn issue(&self, cn: &str, sans: &[&str]) -> (String, String) {
        let key = rcgen::KeyPair::generate().expect("key");
        let mut params =
            rcgen::CertificateParams::new(sans.iter().map(|s| s.to_string()).collect::<Vec<_>>())
                .expect("params");
        params.distinguished_name = rcgen::DistinguishedName::new();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, cn);
        params.extended_key_usages = vec![
            rcgen::ExtendedKeyUsagePurpose::ServerAuth,
            rcgen::ExtendedKeyUsagePurpose::ClientAuth,
        ];
        let cert = params.signed_by(&key, &self.issuer).expect("sign");
        (cert.pem(), key.serialize_pem())
    }
}

struct Fixture {
    dir: tempfile::TempDir,
    ca: Ca,
}

impl Fixture {
    fn new() -> Fixture {
        Fixture {
            dir: tempfile::tempdir().expect("tempdir"),
            ca: Ca::new("test CA"),
        }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn write(&self, name: &str, text: &str) -> PathBuf {
        let p = self.path(name);
        std::fs::write(&p, text).expect("write");
        p
    }

    /// Server files from `self.ca` for CN `server-cn`, the CA as the
    /// trusted bundle, and the settings that use them.
    fn settings(&self, side: TlsSide, cn: &str, client_cert_auth: bool) -> TlsSettings {
        let (cert, key) = self.ca.issue(cn, &["127.0.0.1", "localhost"]);
        TlsSettings {
            side,
            identity: TlsIdentity::Files {
                cert_file: self.write("server.crt", &cert),
                key_file: self.write("server.key", &key),
            },
            trusted_ca_file: Some(self.write("ca.crt", &self.ca.pem)),
            client_cert_auth,
            allowed_cn: None,
        }
    }
}

fn roots_of(pems: &[&str]) -> rustls::RootCertStore {
    let mut roots = rustls::RootCertStore::empty();
    for pem in pems {
        for c in CertificateDer::pem_slice_iter(pem.as_bytes()) {
            roots.add(c.expect("pem")).expect("root");
        }
    }
    roots
}

fn client_config(
    roots: rustls::RootCertStore,
    identity: Option<(String, String)>,
) -> Arc<rustls::ClientConfig> {
    let builder = rustls::ClientConfig::builder_with_provider(Arc::new(provider(None)))
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_root_certificates(roots);
    let config = match identity {
        Some((cert, key)) => builder
            .with_client_auth_cert(
                CertificateDer::pem_slice_iter(cert.as_bytes())
                    .collect::<Result<Vec<_>, _>>()
                    .expect("cert"),
                PrivateKeyDer::from_pem_slice(key.as_bytes()).expect("key"),
            )
            .expect("client cert"),
        None => builder.with_no_client_auth(),
    };
    Arc::new(config)
}

/// One handshake through an in-memory pipe: the server's verdict (with the
/// identity it saw) and the certificate the client was served.
async fn handshake(
    tls: &ReloadableTlsConfig,
    client: Arc<rustls::ClientConfig>,
) -> (Result<PeerIdentity, String>, Option<Vec<u8>>) {
    let (a, b) = tokio::io::duplex(64 * 1024);
    let server = async {
        match tls.accept(a).await {
            Ok((mut s, id)) => {
                // Drive the connection a little so a TLS 1.3 client learns
                // about a late rejection of its certificate.
                use tokio::io::AsyncWriteExt;
                let _ = s.write_all(b"ok").await;
                let _ = s.flush().await;
                Ok(id)
            }
            Err(e) => Err(e),
        }
    };
    let client = async {
        let name = ServerName::try_from("127.0.0.1").expect("name");
        match tokio_rustls::TlsConnector::from(client)
            .connect(name, b)
            .await
        {
            Ok(mut s) => {
                use tokio::io::AsyncReadExt;
                let mut buf = [0u8; 2];
                let served = s
                    .get_ref()
                    .1
                    .peer_certificates()
                    .and_then(|c| c.first())
                    .map(|c| c.to_vec());
                // A refused client certificate shows up on the first read.
                s.read_exact(&mut buf).await.ok().and(served)
            }
            Err(_) => None,
        }
    };
    tokio::join!(server, client)
}

fn pem_der(pem: &str) -> Vec<u8> {
    CertificateDer::from_pem_slice(pem.as_bytes())
        .expect("pem")
        .to_vec()
}

#[tokio::test]
async fn serves_and_verifies_client_certificates() {
    let f = Fixture::new();
    let settings = f.settings(TlsSide::Client, "server", true);
    let tls = ReloadableTlsConfig::load(&settings, None, f.dir.path(), &[]).expect("load");
    let roots = || roots_of(&[&f.ca.pem]);

    let user = f.ca.issue("alice", &[]);
    let (id, served) = handshake(&tls, client_config(roots(), Some(user))).await;
    assert_eq!(
        id.expect("accepted"),
        PeerIdentity {
            common_name: Some("alice".into())
        }
    );
    assert!(served.is_some());

    // No client certificate: refused.
    let (id, served) = handshake(&tls, client_config(roots(), None)).await;
    assert!(id.is_err() && served.is_none());

    // A certificate from another CA: refused.
    let other = Ca::new("other CA");
    let (id, served) = handshake(&tls, client_config(roots(), Some(other.issue("bob", &[])))).await;
    assert!(id.is_err(), "{id:?}");
    assert!(served.is_none());
}

#[tokio::test]
async fn certificates_and_ca_bundles_reload_and_bad_files_keep_the_old_ones() {
    let f = Fixture::new();
    let settings = f.settings(TlsSide::Client, "server-1", true);
    let tls = ReloadableTlsConfig::load(&settings, None, f.dir.path(), &[]).expect("load");
    let first_cert = std::fs::read_to_string(f.path("server.crt")).expect("cert");
    let roots = roots_of(&[&f.ca.pem]);
    let alice = f.ca.issue("alice", &[]);
    let (_, served) = handshake(&tls, client_config(roots.clone(), Some(alice.clone()))).await;
    assert_eq!(served, Some(pem_der(&first_cert)));
    assert!(!tls.reload("test"), "nothing changed");

    // A new server certificate from the same CA.
    let (cert2, key2) = f.ca.issue("server-2", &["127.0.0.1"]);
    f.write("server.key", &key2);
    f.write("server.crt", &cert2);
    assert!(tls.reload("test"));
    let (_, served) = handshake(&tls, client_config(roots.clone(), Some(alice.clone()))).await;
    assert_eq!(served, Some(pem_der(&cert2)));

    // A second CA joins the bundle: its clients get in from now on.
    let ca2 = Ca::new("second CA");
    let carol = ca2.issue("carol", &[]);
    let (id, _) = handshake(&tls, client_config(roots.clone(), Some(carol.clone()))).await;
    assert!(id.is_err());
    f.write("ca.crt", &format!("{}{}", f.ca.pem, ca2.pem));
    assert!(tls.reload("test"));
    let (id, _) = handshake(&tls, client_config(roots.clone(), Some(carol.clone()))).await;
    assert_eq!(id.expect("carol").common_name.as_deref(), Some("carol"));

    // Garbage: refused, counted, and the previous configuration stays.
    let failures = || {
        METRICS
            .tls_reloads
            .with_label_values(&["client", "failure"])
            .get()
    };
    let before = failures();
    f.write(
        "server.crt",
        "-----BEGIN CERTIFICATE-----\nnot base64 at all\n",
    );
    assert!(!tls.reload("test"));
    assert_eq!(failures(), before + 1);
    let (id, served) = handshake(&tls, client_config(roots.clone(), Some(carol))).await;
    assert!(id.is_ok());
    assert_eq!(served, Some(pem_der(&cert2)));
    // The same garbage again is not reported again.
    assert!(!tls.reload("test"));
    assert_eq!(failures(), before + 1);

    // A key that does not match the certificate is refused as well.
    let (_, other_key) = f.ca.issue("x", &[]);
    f.write("server.crt", &cert2);
    f.write("server.key", &other_key);
    assert!(!tls.reload("test"));
    f.write("server.key", &key2);
    assert!(tls.reload("test"));
}

#[test]
fn startup_errors_name_the_flag_and_the_file() {
    let f = Fixture::new();
    let mut settings = f.settings(TlsSide::Peer, "peer", true);
    let load = |s: &TlsSettings| {
        ReloadableTlsConfig::load(s, None, f.dir.path(), &[]).expect_err("must fail")
    };
    let missing = f.path("missing.crt");
    if let TlsIdentity::Files { cert_file, .. } = &mut settings.identity {
        *cert_file = missing.clone();
    }
    let e = load(&settings);
    assert!(
        e.starts_with(&format!(
            "--peer-cert-file={}: cannot open:",
            missing.display()
        )),
        "{e}"
    );

    let settings = f.settings(TlsSide::Client, "server", true);
    f.write("ca.crt", "hello\n");
    let e = load(&settings);
    assert_eq!(
        e,
        format!(
            "--trusted-ca-file={}: no certificate in the file (expected PEM \"-----BEGIN CERTIFICATE-----\" blocks)",
            f.path("ca.crt").display()
        )
    );

    let settings = f.settings(TlsSide::Client, "server", false);
    let (_, other_key) = f.ca.issue("x", &[]);
    f.write("server.key", &other_key);
    let e = load(&settings);
    assert_eq!(
        e,
        format!(
            "--cert-file={} with --key-file={}: the private key does not belong to the certificate",
            f.path("server.crt").display(),
            f.path("server.key").display()
        )
    );
    f.write("server.key", "");
    let e = load(&settings);
    assert!(e.starts_with("--key-file="), "{e}");
}

#[tokio::test]
async fn peer_cert_allowed_cn() {
    let f = Fixture::new();
    let mut settings = f.settings(TlsSide::Peer, "peer", true);
    settings.allowed_cn = Some("etcd-peer".into());
    let tls = ReloadableTlsConfig::load(&settings, None, f.dir.path(), &[]).expect("load");
    let roots = || roots_of(&[&f.ca.pem]);
    let (id, _) = handshake(
        &tls,
        client_config(roots(), Some(f.ca.issue("etcd-peer", &[]))),
    )
    .await;
    assert!(id.is_ok(), "{id:?}");
    let (id, _) = handshake(
        &tls,
        client_config(roots(), Some(f.ca.issue("intruder", &[]))),
    )
    .await;
    assert!(id.is_err());
    // The peer side also dials peers, presenting its own certificate.
    assert!(tls.client_config().is_some());
}

#[tokio::test]
async fn cipher_suites_restrict_tls12() {
    let f = Fixture::new();
    let settings = f.settings(TlsSide::Client, "server", false);
    let only = vec!["TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256".to_string()];
    let tls = ReloadableTlsConfig::load(&settings, Some(&only), f.dir.path(), &[]).expect("load");
    let tls12_client = |suite: rustls::CipherSuite| {
        let mut p = provider(None);
        p.cipher_suites.retain(|s| s.suite() == suite);
        Arc::new(
            rustls::ClientConfig::builder_with_provider(Arc::new(p))
                .with_protocol_versions(&[&rustls::version::TLS12])
                .expect("versions")
                .with_root_certificates(roots_of(&[&f.ca.pem]))
                .with_no_client_auth(),
        )
    };
    let (id, _) = handshake(
        &tls,
        tls12_client(rustls::CipherSuite::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256),
    )
    .await;
    assert!(id.is_ok(), "{id:?}");
    let (id, _) = handshake(
        &tls,
        tls12_client(rustls::CipherSuite::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256),
    )
    .await;
    assert!(id.is_err());
    // TLS 1.3 stays on.
    let (id, _) = handshake(&tls, client_config(roots_of(&[&f.ca.pem]), None)).await;
    assert!(id.is_ok(), "{id:?}");
}

#[tokio::test]
async fn auto_tls_makes_a_certificate_in_the_data_dir() {
    let dir = tempfile::tempdir().expect("tempdir");
    let settings = TlsSettings {
        side: TlsSide::Peer,
        identity: TlsIdentity::Auto,
        trusted_ca_file: None,
        client_cert_auth: false,
        allowed_cn: None,
    };
    let tls = ReloadableTlsConfig::load(&settings, None, dir.path(), &["127.0.0.1".into()])
        .expect("load");
    assert!(dir.path().join("fixtures/peer/cert.pem").exists());
    assert!(dir.path().join("fixtures/peer/key.pem").exists());
    // Another member's client config accepts it without any CA.
    let (id, served) = handshake(&tls, tls.client_config().expect("client")).await;
    assert_eq!(id.expect("accepted"), PeerIdentity { common_name: None });
    assert!(served.is_some());
}

#[tokio::test]
async fn https_listener_gives_handlers_the_client_cn() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let f = Fixture::new();
    let settings = f.settings(TlsSide::Client, "server", true);
    let tls = ReloadableTlsConfig::load(&settings, None, f.dir.path(), &[]).expect("load");
    let router = axum::Router::new().route(
        "/whoami",
        axum::routing::get(|req: http::Request<axum::body::Body>| async move {
            match req.extensions().get::<PeerIdentity>() {
                Some(id) => format!("cn={:?}", id.common_name),
                None => "plain".to_string(),
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let server = tokio::spawn(crate::api::listener::serve(
        listener,
        router,
        crate::api::listener::ServeOptions {
            tls: Some(tls),
            ..Default::default()
        },
    ));
    let mut config =
        (*client_config(roots_of(&[&f.ca.pem]), Some(f.ca.issue("alice", &[])))).clone();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let mut s = connect::connect(Arc::new(config), "127.0.0.1", addr.port())
        .await
        .expect("connect");
    s.write_all(b"GET /whoami HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .expect("write");
    let mut buf = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut buf)).await;
    let text = String::from_utf8_lossy(&buf);
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    assert!(text.ends_with("cn=Some(\"alice\")"), "{text}");
    server.abort();
}
