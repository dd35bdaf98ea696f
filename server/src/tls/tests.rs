//! Unit tests of loading, serving and reloading TLS files: real handshakes
//! over in-memory pipes with certificates made by rcgen at test time.

use super::*;
use cairn_config::{TlsIdentity, TlsSettings, TlsSide};
use rustls::pki_types::{CertificateRevocationListDer, ServerName};

use cairn_test_pki::{Ca, Issued};

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
        let Issued { cert, key } = self.ca.issue(cn, &["127.0.0.1", "localhost"]);
        TlsSettings {
            side,
            identity: TlsIdentity::Files {
                cert_file: self.write("server.crt", &cert),
                key_file: self.write("server.key", &key),
            },
            trusted_ca_file: Some(self.write("ca.crt", &self.ca.pem)),
            client_cert_auth,
            allowed_cn: None,
            allowed_hostname: None,
            crl_file: None,
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
    identity: Option<Issued>,
) -> Arc<rustls::ClientConfig> {
    let builder = rustls::ClientConfig::builder_with_provider(Arc::new(provider(None)))
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_root_certificates(roots);
    let config = match identity {
        Some(Issued { cert, key }) => builder
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
        match tls.accept(a, "127.0.0.1:1".to_string()).await {
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
    let Issued {
        cert: cert2,
        key: key2,
    } = f.ca.issue("server-2", &["127.0.0.1"]);
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
    let other_key = f.ca.issue("x", &[]).key;
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
    let other_key = f.ca.issue("x", &[]).key;
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
        allowed_hostname: None,
        crl_file: None,
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
    let server = tokio::spawn(crate::net::listener::serve(
        listener,
        router,
        crate::net::listener::ServeOptions {
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

/// A self-signed certificate that is its own CA, for server and client use
/// on 127.0.0.1: (certificate PEM, key PEM).
fn self_signed_ca(cn: &str, edit: impl FnOnce(&mut rcgen::CertificateParams)) -> (String, String) {
    let key = rcgen::KeyPair::generate().expect("key");
    let mut params = rcgen::CertificateParams::new(vec!["127.0.0.1".to_string()]).expect("params");
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    params.distinguished_name = rcgen::DistinguishedName::new();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, cn);
    params.extended_key_usages = vec![
        rcgen::ExtendedKeyUsagePurpose::ServerAuth,
        rcgen::ExtendedKeyUsagePurpose::ClientAuth,
    ];
    edit(&mut params);
    let cert = params.self_signed(&key).expect("cert");
    (cert.pem(), key.serialize_pem())
}

/// Peer-side settings using `name.crt`/`name.key` in `dir`, trusting
/// `ca_file`, with client certificates required.
fn peer_settings(dir: &Path, name: &str, ca_file: PathBuf) -> TlsSettings {
    TlsSettings {
        side: TlsSide::Peer,
        identity: TlsIdentity::Files {
            cert_file: dir.join(format!("{name}.crt")),
            key_file: dir.join(format!("{name}.key")),
        },
        trusted_ca_file: Some(ca_file),
        client_cert_auth: true,
        allowed_cn: None,
        allowed_hostname: None,
        crl_file: None,
    }
}

#[tokio::test]
async fn a_trusted_self_signed_ca_serves_as_leaf_in_both_directions() {
    let f = Fixture::new();
    let (cert, key) = self_signed_ca("everything", |_| {});
    f.write("self.crt", &cert);
    f.write("self.key", &key);
    // One certificate as server certificate, client certificate and CA
    // bundle, on the peer side (which also dials).
    let settings = peer_settings(f.dir.path(), "self", f.path("self.crt"));
    let tls = ReloadableTlsConfig::load(&settings, None, f.dir.path(), &[]).expect("load");
    let (id, served) = handshake(&tls, tls.client_config().expect("dialer")).await;
    assert_eq!(
        id.expect("accepted").common_name.as_deref(),
        Some("everything")
    );
    assert_eq!(served, Some(pem_der(&cert)));

    // The same with the client side's listener and a plain client.
    let mut client_side = settings.clone();
    client_side.side = TlsSide::Client;
    let tls = ReloadableTlsConfig::load(&client_side, None, f.dir.path(), &[]).expect("load");
    let (id, _) = handshake(
        &tls,
        // The test client verifies with webpki, so it cannot take the
        // anchor as a leaf; the dialer above shows that direction.
        Arc::new(
            rustls::ClientConfig::builder_with_provider(Arc::new(provider(None)))
                .with_safe_default_protocol_versions()
                .expect("versions")
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(AcceptAnyServerCert {
                    provider: Arc::new(provider(None)),
                }))
                .with_client_auth_cert(
                    vec![CertificateDer::from_pem_slice(cert.as_bytes()).expect("cert")],
                    PrivateKeyDer::from_pem_slice(key.as_bytes()).expect("key"),
                )
                .expect("client cert"),
        ),
    )
    .await;
    assert!(id.is_ok(), "{id:?}");
}

#[tokio::test]
async fn only_an_exact_anchor_passes_as_leaf_and_its_checks_still_apply() {
    let f = Fixture::new();
    let (cert, key) = self_signed_ca("server", |_| {});
    f.write("self.crt", &cert);
    f.write("self.key", &key);
    // Candidate client certificates, each a CA certificate used as a leaf.
    let other = self_signed_ca("stranger", |_| {});
    let expired = self_signed_ca("expired", |p| {
        p.not_before = rcgen::date_time_ymd(2001, 1, 1);
        p.not_after = rcgen::date_time_ymd(2002, 1, 1);
    });
    let server_only = self_signed_ca("server-only", |p| {
        p.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
    });
    let any_usage = self_signed_ca("any-usage", |p| p.extended_key_usages = vec![]);
    // A CA certificate issued by the trusted CA is an intermediate, not an
    // anchor: still refused as a leaf.
    let sub_ca = {
        let (_, issued) = f.ca.issue_ca("sub CA", None);
        (issued.cert, issued.key)
    };
    let bundle = [&cert, &expired.0, &server_only.0, &any_usage.0, &f.ca.pem]
        .iter()
        .map(|s| s.as_str())
        .collect::<String>();
    let mut settings = peer_settings(f.dir.path(), "self", f.write("bundle.crt", &bundle));
    settings.side = TlsSide::Client;
    let tls = ReloadableTlsConfig::load(&settings, None, f.dir.path(), &[]).expect("load");
    let as_client = |id: &(String, String)| {
        let config = rustls::ClientConfig::builder_with_provider(Arc::new(provider(None)))
            .with_safe_default_protocol_versions()
            .expect("versions")
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AcceptAnyServerCert {
                provider: Arc::new(provider(None)),
            }))
            .with_client_auth_cert(
                vec![CertificateDer::from_pem_slice(id.0.as_bytes()).expect("cert")],
                PrivateKeyDer::from_pem_slice(id.1.as_bytes()).expect("key"),
            )
            .expect("client cert");
        Arc::new(config)
    };
    assert!(
        handshake(&tls, as_client(&(cert.clone(), key.clone())))
            .await
            .0
            .is_ok()
    );
    assert!(handshake(&tls, as_client(&any_usage)).await.0.is_ok());
    for (what, id) in [
        ("not in the bundle", &other),
        ("expired", &expired),
        ("server use only", &server_only),
        ("issued sub-CA", &sub_ca),
    ] {
        let (verdict, _) = handshake(&tls, as_client(id)).await;
        assert!(verdict.is_err(), "{what}: {verdict:?}");
    }
    let (verdict, _) = handshake(&tls, as_client(&expired)).await;
    assert_eq!(
        verdict.unwrap_err(),
        "tls: failed to verify client certificate: x509: certificate has expired or is not yet valid"
    );
    let (verdict, _) = handshake(&tls, as_client(&server_only)).await;
    assert_eq!(
        verdict.unwrap_err(),
        "tls: failed to verify client certificate: x509: certificate specifies an incompatible key usage"
    );
}

#[tokio::test]
async fn revoked_serials_are_refused_and_the_list_reloads() {
    let f = Fixture::new();
    let mut settings = f.settings(TlsSide::Client, "server", true);
    let alice_serial: &[u8] = &[0x0c, 0xa1, 0x01];
    let bob_serial: &[u8] = &[0x00, 0x9b, 0x0b];
    let alice = f.ca.issue_with_serial("alice", &[], alice_serial);
    let bob = f.ca.issue_with_serial("bob", &[], bob_serial);
    settings.crl_file = Some(f.write("revoked.crl", &f.ca.crl(&[bob_serial])));
    let tls = ReloadableTlsConfig::load(&settings, None, f.dir.path(), &[]).expect("load");
    let roots = || roots_of(&[&f.ca.pem]);
    let (id, _) = handshake(&tls, client_config(roots(), Some(alice.clone()))).await;
    assert_eq!(id.expect("alice").common_name.as_deref(), Some("alice"));
    let (id, served) = handshake(&tls, client_config(roots(), Some(bob.clone()))).await;
    // etcd's text; the serial as Go prints it (no leading zero byte).
    assert_eq!(
        id.unwrap_err(),
        "transport: certificate serial 9b0b revoked"
    );
    assert!(served.is_none());

    // Revoke alice too, by replacing the list: new connections see it.
    f.write("revoked.crl", &f.ca.crl(&[bob_serial, alice_serial]));
    assert!(tls.reload("test"));
    let (id, _) = handshake(&tls, client_config(roots(), Some(alice.clone()))).await;
    assert_eq!(
        id.unwrap_err(),
        "transport: certificate serial 0ca101 revoked"
    );
    // A broken list is refused and the last good one stays.
    f.write(
        "revoked.crl",
        "-----BEGIN X509 CRL-----\ngarbage\n-----END X509 CRL-----\n",
    );
    assert!(!tls.reload("test"));
    let (id, _) = handshake(&tls, client_config(roots(), Some(alice.clone()))).await;
    assert!(id.is_err());
    // DER works as well as PEM.
    let der = CertificateRevocationListDer::from_pem_slice(f.ca.crl(&[]).as_bytes()).expect("crl");
    std::fs::write(f.path("revoked.crl"), der.as_ref()).expect("write");
    assert!(tls.reload("test"));
    let (id, _) = handshake(&tls, client_config(roots(), Some(bob))).await;
    assert!(id.is_ok(), "{id:?}");
    // At startup a broken list is an error naming the flag.
    f.write("revoked.crl", "not a CRL");
    let e = ReloadableTlsConfig::load(&settings, None, f.dir.path(), &[]).expect_err("broken CRL");
    assert!(e.starts_with("--client-crl-file="), "{e}");
}

#[tokio::test]
async fn a_revoked_intermediate_refuses_its_leaves() {
    let f = Fixture::new();
    // root -> intermediate (serial 0x77) -> carol
    let (intermediate, _) = f.ca.issue_ca("intermediate", Some(&[0x77]));
    let Issued {
        cert: carol_cert,
        key: carol_key,
    } = intermediate.issue("carol", &[]);
    let carol = Issued {
        cert: format!("{carol_cert}{}", intermediate.pem),
        key: carol_key,
    };
    let mut settings = f.settings(TlsSide::Client, "server", true);
    settings.crl_file = Some(f.write("revoked.crl", &f.ca.crl(&[])));
    let tls = ReloadableTlsConfig::load(&settings, None, f.dir.path(), &[]).expect("load");
    let roots = || roots_of(&[&f.ca.pem]);
    let (id, _) = handshake(&tls, client_config(roots(), Some(carol.clone()))).await;
    assert!(id.is_ok(), "{id:?}");
    f.write("revoked.crl", &f.ca.crl(&[&[0x77]]));
    assert!(tls.reload("test"));
    let (id, _) = handshake(&tls, client_config(roots(), Some(carol))).await;
    assert_eq!(id.unwrap_err(), "transport: certificate serial 77 revoked");
}

#[tokio::test]
async fn allowed_hostname_matches_client_certificate_sans() {
    let f = Fixture::new();
    let mut settings = f.settings(TlsSide::Client, "server", true);
    settings.allowed_hostname = Some("client.example.com".into());
    let tls = ReloadableTlsConfig::load(&settings, None, f.dir.path(), &[]).expect("load");
    let roots = || roots_of(&[&f.ca.pem]);
    for (sans, ok) in [
        (&["client.example.com"][..], true),
        (&["*.example.com"][..], true),
        (&["other.example.com", "10.0.0.1"][..], false),
        (&[][..], false),
    ] {
        let (id, _) = handshake(&tls, client_config(roots(), Some(f.ca.issue("u", sans)))).await;
        if ok {
            assert!(id.is_ok(), "{sans:?}: {id:?}");
        } else {
            assert_eq!(
                id.unwrap_err(),
                "client certificate authentication failed",
                "{sans:?}"
            );
        }
    }
    // No common-name fallback (Go 1.19).
    let (id, _) = handshake(
        &tls,
        client_config(roots(), Some(f.ca.issue("client.example.com", &[]))),
    )
    .await;
    assert!(id.is_err());
    // An IP address matches IP SANs.
    settings.allowed_hostname = Some("10.0.0.1".into());
    let tls = ReloadableTlsConfig::load(&settings, None, f.dir.path(), &[]).expect("load");
    let (id, _) = handshake(
        &tls,
        client_config(roots(), Some(f.ca.issue("u", &["10.0.0.1"]))),
    )
    .await;
    assert!(id.is_ok(), "{id:?}");
}

#[tokio::test]
async fn a_peer_checks_the_allowed_cn_of_the_members_it_dials_too() {
    let f = Fixture::new();
    let mut settings = f.settings(TlsSide::Peer, "etcd-peer", true);
    settings.allowed_cn = Some("etcd-peer".into());
    let ours = ReloadableTlsConfig::load(&settings, None, f.dir.path(), &[]).expect("load");
    let dialer = ours.client_config().expect("dialer");
    // A member whose certificate carries another CN (same CA).
    let other_dir = tempfile::tempdir().expect("dir");
    let Issued { cert, key } = f.ca.issue("intruder", &["127.0.0.1"]);
    std::fs::write(other_dir.path().join("p.crt"), cert).expect("write");
    std::fs::write(other_dir.path().join("p.key"), key).expect("write");
    let theirs = ReloadableTlsConfig::load(
        &peer_settings(other_dir.path(), "p", f.path("ca.crt")),
        None,
        other_dir.path(),
        &[],
    )
    .expect("load");
    let (_, served) = handshake(&theirs, Arc::clone(&dialer)).await;
    assert!(served.is_none(), "dialed a peer with the wrong CN");
    // And it refuses that member's connections.
    let (id, _) = handshake(&ours, theirs.client_config().expect("dialer")).await;
    assert_eq!(id.unwrap_err(), "client certificate authentication failed");
    // Members with the right CN talk both ways.
    let (id, served) = handshake(&ours, dialer).await;
    assert!(id.is_ok() && served.is_some(), "{id:?}");
}
