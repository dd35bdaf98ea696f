//! TLS on the client and peer ports (issue 7): etcdctl (v3 and v2) and curl
//! over https with client certificates, a three-member cluster with peer
//! TLS, certificates from the wrong CA refused, auto TLS, and certificates
//! and CA bundles rotated on disk while the member runs.
//!
//! Every certificate is made at test time (`cairn_tests::tls`). With
//! `CAIRN_TEST_TARGET=etcd` the same tests run against etcd 3.4, except
//! that etcd does not reload CA bundles: there the rotated bundle is
//! checked to be ignored.

use cairn_tests::tls::{Ca, Issued, TlsOptions, Verify, https_get, write_atomic};
use cairn_tests::{
    Background, Cluster, Options, Target, etcdctl, eventually, ok, stderr, stdout, target,
    wait_output,
};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(20);

fn tls_cluster(members: usize, tls: TlsOptions) -> Cluster {
    Cluster::start(Options {
        members,
        tls: Some(tls),
        ..Options::default()
    })
}

/// etcdctl (v3) against `endpoints` with the given TLS flags.
fn ctl(endpoints: &str, tls: &[String], args: &[&str]) -> std::process::Output {
    let mut all: Vec<&str> = tls.iter().map(String::as_str).collect();
    all.extend_from_slice(args);
    etcdctl(endpoints, &all, None)
}

/// TLS flags for a client certificate other than the cluster's.
fn flags_with(c: &Cluster, id_dir: &Path, name: &str) -> Vec<String> {
    let pki = c.pki.as_ref().expect("pki");
    vec![
        format!("--cacert={}", pki.ca_file().display()),
        format!("--cert={}", id_dir.join(format!("{name}.crt")).display()),
        format!("--key={}", id_dir.join(format!("{name}.key")).display()),
    ]
}

fn curl(args: &[&str]) -> std::process::Output {
    let child = Command::new("curl")
        .args(["-sS", "--max-time", "10"])
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("curl must be installed");
    wait_output(child, Duration::from_secs(20))
}

/// etcdctl with the v2 API over https (the harness's v2 helper speaks http).
fn ctl_v2(endpoint_url: &str, c: &Cluster, args: &[&str]) -> std::process::Output {
    let pki = c.pki.as_ref().expect("pki");
    let mut cmd = Command::new("etcdctl");
    for (k, _) in std::env::vars() {
        if k.starts_with("ETCDCTL_") {
            cmd.env_remove(k);
        }
    }
    let child = cmd
        .env("ETCDCTL_API", "2")
        .arg(format!("--endpoints={endpoint_url}"))
        .arg(format!("--ca-file={}", pki.ca_file().display()))
        .arg(format!("--cert-file={}", pki.client_cert().display()))
        .arg(format!("--key-file={}", pki.client_key().display()))
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("etcdctl");
    wait_output(child, Duration::from_secs(30))
}

fn read(p: &Path) -> String {
    std::fs::read_to_string(p).expect("read")
}

#[test]
fn etcdctl_curl_and_v2_over_https_with_client_certificates() {
    let c = tls_cluster(
        1,
        TlsOptions {
            client: true,
            client_cert_auth: true,
            ..TlsOptions::default()
        },
    );
    let m = &c.members[0];
    let url = m.client_url();
    assert!(url.starts_with("https://"), "{url}");
    let pki = c.pki.as_ref().expect("pki");
    let flags = c.etcdctl_tls_flags();

    // v3 with --cacert/--cert/--key.
    assert_eq!(ok(ctl(&url, &flags, &["put", "k", "v"])).trim(), "OK");
    assert_eq!(ok(ctl(&url, &flags, &["get", "k"])), "k\nv\n");
    // etcdctl 3.4 prints the health line on stderr.
    let out = ctl(&url, &flags, &["endpoint", "health"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stderr(&out).contains("is healthy"), "{}", stderr(&out));

    // No client certificate: refused.
    let only_ca = vec![format!("--cacert={}", pki.ca_file().display())];
    let out = ctl(&url, &only_ca, &["get", "k"]);
    assert!(!out.status.success(), "{}", stdout(&out));

    // A client certificate from another CA: refused.
    let ids = c.dir.path().join("other-ids");
    Ca::new("wrong CA").issue("root", &[]).write(&ids, "wrong");
    let out = ctl(&url, &flags_with(&c, &ids, "wrong"), &["get", "k"]);
    assert!(!out.status.success(), "{}", stdout(&out));
    // Plain HTTP on the TLS port gets nothing useful.
    assert_ne!(cairn_tests::health(&m.client_addr()), Some(true));
    // The server itself is not trusted without the CA.
    let out = ctl(&url, &[], &["get", "k"]);
    assert!(!out.status.success());

    // curl (HTTP/1.1 over TLS, ALPN) to /health and the JSON gateway.
    let ca = pki.ca_file().display().to_string();
    let cert = pki.client_cert().display().to_string();
    let key = pki.client_key().display().to_string();
    let health = format!("{url}/health");
    let out = curl(&["--cacert", &ca, "--cert", &cert, "--key", &key, &health]);
    assert_eq!(
        stdout(&out).trim(),
        r#"{"health":"true"}"#,
        "{}",
        stderr(&out)
    );
    let out = curl(&[
        "--http1.1",
        "--cacert",
        &ca,
        "--cert",
        &cert,
        "--key",
        &key,
        &health,
    ]);
    assert!(
        stdout(&out).contains(r#""health":"true""#),
        "{}",
        stderr(&out)
    );
    let out = curl(&["--cacert", &ca, &health]);
    assert!(!out.status.success() || !stdout(&out).contains("true"));
    let range = format!("{url}/v3/kv/range");
    let out = curl(&[
        "--cacert",
        &ca,
        "--cert",
        &cert,
        "--key",
        &key,
        "-X",
        "POST",
        "-d",
        r#"{"key":"aw=="}"#,
        &range,
    ]);
    assert!(
        stdout(&out).contains(r#""value":"dg==""#),
        "{}",
        stdout(&out)
    );

    // The v2 API over https (etcdctl --ca-file/--cert-file/--key-file).
    let out = ctl_v2(&url, &c, &["set", "/v2key", "hello"]);
    assert_eq!(stdout(&out).trim(), "hello", "{}", stderr(&out));
    let out = ctl_v2(&url, &c, &["get", "/v2key"]);
    assert_eq!(stdout(&out).trim(), "hello", "{}", stderr(&out));
}

#[test]
fn three_members_replicate_over_peer_tls() {
    let c = tls_cluster(
        3,
        TlsOptions {
            client: true,
            peer: true,
            peer_cert_auth: true,
            ..TlsOptions::default()
        },
    );
    let pki = c.pki.as_ref().expect("pki");
    // Server-only TLS on the client port: the CA is enough.
    let flags = vec![format!("--cacert={}", pki.ca_file().display())];
    let first = c.members[0].client_url();
    let last = c.members[2].client_url();
    assert_eq!(
        ok(ctl(&first, &flags, &["put", "replicated", "yes"])).trim(),
        "OK"
    );
    let got = eventually(WAIT, || {
        let out = ctl(&last, &flags, &["get", "replicated", "--consistency=s"]);
        (stdout(&out) == "replicated\nyes\n").then_some(())
    });
    assert!(got.is_some(), "{}", c.logs_tail(20));
    // Linearizable reads need the leader over peer TLS too.
    assert_eq!(
        ok(ctl(&last, &flags, &["get", "replicated"])),
        "replicated\nyes\n"
    );

    let list = ok(ctl(&first, &flags, &["member", "list"]));
    assert_eq!(list.lines().count(), 3, "{list}");
    for m in &c.members {
        assert!(list.contains(&m.peer_url()), "{list}");
        assert!(m.peer_url().starts_with("https://"));
    }
    let status = ok(ctl(&c.client_urls(), &flags, &["endpoint", "status"]));
    assert_eq!(status.lines().count(), 3, "{status}");

    // The peer port wants a certificate from the peer CA.
    let peer = &c.members[1];
    let refused = https_get(
        peer.peer_addr(),
        &peer.host,
        "/members",
        Verify::Roots(&pki.ca.pem),
        None,
    );
    assert!(refused.map(|r| r.status != 200).unwrap_or(true));
    let wrong = Ca::new("wrong CA").issue("m9", &[]);
    let refused = https_get(
        peer.peer_addr(),
        &peer.host,
        "/members",
        Verify::Roots(&pki.ca.pem),
        Some(&wrong),
    );
    assert!(refused.map(|r| r.status != 200).unwrap_or(true));
    let member_cert = Issued {
        cert: read(&c.members[0].tls_dir().join("peer.crt")),
        key: read(&c.members[0].tls_dir().join("peer.key")),
    };
    let members = https_get(
        peer.peer_addr(),
        &peer.host,
        "/members",
        Verify::Roots(&pki.ca.pem),
        Some(&member_cert),
    )
    .expect("peer GET /members");
    assert_eq!(members.status, 200, "{}", members.body);
    assert!(members.body.contains("https://"), "{}", members.body);
}

#[test]
fn certificates_and_ca_bundles_rotate_without_a_restart() {
    let c = tls_cluster(
        1,
        TlsOptions {
            client: true,
            client_cert_auth: true,
            ..TlsOptions::default()
        },
    );
    let m = &c.members[0];
    let pid = m.pid();
    let url = m.client_url();
    let pki = c.pki.as_ref().expect("pki");
    let flags = c.etcdctl_tls_flags();
    let root = Issued {
        cert: read(&pki.client_cert()),
        key: read(&pki.client_key()),
    };
    let served = |id: &Issued| -> Option<Vec<u8>> {
        https_get(
            m.client_addr(),
            &m.host,
            "/health",
            Verify::Roots(&pki.ca.pem),
            Some(id),
        )
        .ok()
        .filter(|r| r.status == 200)
        .map(|r| r.served_cert)
    };
    let tls_dir = m.tls_dir();
    let original = read(&tls_dir.join("server.crt"));
    assert_eq!(served(&root), Some(cairn_tests::tls::cert_der(&original)));

    // A watch on a connection opened before any rotation.
    let mut watch_args: Vec<&str> = flags.iter().map(String::as_str).collect();
    watch_args.extend(["watch", "rotating"]);
    let watch = Background::etcdctl(&url, &watch_args);
    std::thread::sleep(Duration::from_millis(500));
    ok(ctl(&url, &flags, &["put", "rotating", "before"]));
    assert!(
        watch.wait_for(WAIT, |o| o.contains("before")),
        "{}",
        watch.stderr()
    );

    // 1. A new server certificate from the same CA, written on disk.
    let renewed = pki.ca.issue("m1-renewed", &[&m.host, "127.0.0.1"]);
    renewed.write(&tls_dir, "server");
    let now = eventually(WAIT, || served(&root).filter(|der| *der == renewed.der()));
    assert!(
        now.is_some(),
        "the renewed certificate is not served:\n{}",
        c.logs_tail(20)
    );
    ok(ctl(&url, &flags, &["put", "rotating", "after-cert"]));
    assert!(
        watch.wait_for(WAIT, |o| o.contains("after-cert")),
        "{}",
        watch.stderr()
    );

    // 2. A second CA joins the trusted bundle; its clients get in.
    let ca2 = Ca::new("second CA");
    let ids = c.dir.path().join("ca2-ids");
    let carol = ca2.issue("carol", &[]);
    carol.write(&ids, "carol");
    assert_eq!(
        served(&carol),
        None,
        "a CA2 client before the bundle changed"
    );
    write_atomic(
        &tls_dir.join("ca.crt"),
        &format!("{}{}", pki.ca.pem, ca2.pem),
    );
    if target() == Target::Etcd {
        // etcd reads CA bundles only at startup.
        std::thread::sleep(Duration::from_secs(2));
        assert_eq!(served(&carol), None);
    } else {
        assert!(
            eventually(WAIT, || served(&carol)).is_some(),
            "a client of the added CA is refused:\n{}",
            c.logs_tail(20)
        );
        let out = ctl(
            &url,
            &flags_with(&c, &ids, "carol"),
            &["put", "rotating", "ca2"],
        );
        assert_eq!(ok(out).trim(), "OK");
        assert!(
            watch.wait_for(WAIT, |o| o.contains("ca2")),
            "{}",
            watch.stderr()
        );
    }

    // 3. Garbage in the certificate file: logged, the renewed one stays.
    std::fs::write(
        tls_dir.join("server.crt"),
        "-----BEGIN CERTIFICATE-----\nthis is not a certificate\n-----END CERTIFICATE-----\n",
    )
    .expect("write");
    std::thread::sleep(Duration::from_secs(2));
    if target() == Target::Etcd {
        // etcd reads the files on every handshake: new connections fail
        // until the files are fixed.
        assert_eq!(served(&root), None);
        renewed.write(&tls_dir, "server");
    }
    assert_eq!(served(&root), Some(renewed.der()));
    ok(ctl(&url, &flags, &["put", "rotating", "after-garbage"]));
    assert!(
        watch.wait_for(WAIT, |o| o.contains("after-garbage")),
        "{}",
        watch.stderr()
    );
    if target() == Target::Cairn {
        let logged = eventually(WAIT, || {
            m.log()
                .contains("TLS files changed but cannot be used")
                .then_some(())
        });
        assert!(logged.is_some(), "{}", c.logs_tail(30));
        let metrics = https_get(
            m.client_addr(),
            &m.host,
            "/metrics",
            Verify::Roots(&pki.ca.pem),
            Some(&root),
        )
        .expect("metrics");
        assert!(
            metrics
                .body
                .contains(r#"cairn_tls_reloads_total{result="failure",side="client"}"#),
            "{}",
            metrics.body
        );
        assert!(
            metrics
                .body
                .contains(r#"cairn_tls_reloads_total{result="success",side="client"}"#)
        );
    }
    // Same process all along; the watch never broke.
    assert_eq!(c.members[0].pid(), pid);
    let mut watch = watch;
    assert!(watch.is_running(), "{}", watch.stderr());
}

#[test]
fn auto_tls_on_client_and_peer_ports() {
    let c = tls_cluster(
        2,
        TlsOptions {
            client: true,
            peer: true,
            auto: true,
            ..TlsOptions::default()
        },
    );
    assert!(c.pki.is_none());
    let flags = c.etcdctl_tls_flags();
    let first = c.members[0].client_url();
    let second = c.members[1].client_url();
    assert_eq!(
        ok(ctl(&first, &flags, &["put", "auto", "tls"])).trim(),
        "OK"
    );
    assert_eq!(ok(ctl(&second, &flags, &["get", "auto"])), "auto\ntls\n");
    // Nobody can verify a self-signed certificate.
    let out = ctl(&first, &[], &["get", "auto"]);
    assert!(!out.status.success());
    for m in &c.members {
        for side in ["client", "peer"] {
            let dir = m.data_dir.join("fixtures").join(side);
            assert!(dir.join("cert.pem").exists(), "{}", dir.display());
            assert!(dir.join("key.pem").exists(), "{}", dir.display());
        }
    }
    let list = ok(ctl(&first, &flags, &["member", "list"]));
    assert!(list.contains("https://"), "{list}");
}

#[test]
fn a_member_joins_over_peer_tls() {
    let mut c = tls_cluster(
        1,
        TlsOptions {
            peer: true,
            peer_cert_auth: true,
            ..TlsOptions::default()
        },
    );
    let eps = c.endpoints();
    let i = c.new_member("m2");
    let peer_url = c.members[i].peer_url();
    assert!(peer_url.starts_with("https://"));
    let text = ok(etcdctl(
        &eps,
        &["member", "add", "m2", &format!("--peer-urls={peer_url}")],
        None,
    ));
    let initial_cluster = text
        .lines()
        .find_map(|l| l.strip_prefix("ETCD_INITIAL_CLUSTER=\""))
        .and_then(|l| l.strip_suffix('"'))
        .unwrap_or_else(|| panic!("no ETCD_INITIAL_CLUSTER in {text}"))
        .to_string();
    // The new member learns the member list over https from m1.
    c.join(i, &initial_cluster);
    c.wait_healthy(WAIT);
    ok(etcdctl(&eps, &["put", "joined", "over-tls"], None));
    let second = c.members[i].endpoint();
    let got = eventually(WAIT, || {
        let out = etcdctl(&second, &["get", "joined", "--consistency=s"], None);
        (stdout(&out) == "joined\nover-tls\n").then_some(())
    });
    assert!(got.is_some(), "{}", c.logs_tail(20));
    let list = ok(etcdctl(&eps, &["member", "list"], None));
    assert_eq!(list.matches("https://").count(), 2, "{list}");
}

/// With `--client-cert-auth` and auth enabled, a client that presents a
/// certificate and no token is the user its certificate's common name
/// names (etcd's rule).
#[test]
fn client_certificate_common_name_is_the_user() {
    let c = tls_cluster(
        1,
        TlsOptions {
            client: true,
            client_cert_auth: true,
            ..TlsOptions::default()
        },
    );
    let e = c.members[0].client_url();
    let root = c.etcdctl_tls_flags(); // the cluster's client certificate: CN root
    for args in [
        &["user", "add", "root:rootpw"][..],
        &["user", "grant-role", "root", "root"],
        &["role", "add", "app"],
        &[
            "role",
            "grant-permission",
            "app",
            "readwrite",
            "app/",
            "--prefix=true",
        ],
        &["user", "add", "u:upw"],
        &["user", "grant-role", "u", "app"],
        &["auth", "enable"],
    ] {
        ok(ctl(&e, &root, args));
    }
    // No --user: the certificate speaks for root.
    ok(ctl(&e, &root, &["put", "secret", "s"]));
    assert!(ok(ctl(&e, &root, &["user", "list"])).contains('u'));
    // A certificate for u: u's permissions, no more.
    let ids = c.dir.path().join("ids");
    std::fs::create_dir_all(&ids).expect("ids dir");
    let pki = c.pki.as_ref().expect("pki");
    pki.ca.issue("u", &[]).write(&ids, "u");
    let as_u = flags_with(&c, &ids, "u");
    ok(ctl(&e, &as_u, &["put", "app/a", "1"]));
    let out = ctl(&e, &as_u, &["get", "secret"]);
    assert!(
        stderr(&out).contains("etcdserver: permission denied"),
        "{}",
        stderr(&out)
    );
    let out = ctl(&e, &as_u, &["user", "list"]);
    assert!(
        stderr(&out).contains("etcdserver: permission denied"),
        "{}",
        stderr(&out)
    );
    // A certificate whose name is no user gets nothing.
    pki.ca.issue("mallory", &[]).write(&ids, "mallory");
    let as_m = flags_with(&c, &ids, "mallory");
    let out = ctl(&e, &as_m, &["get", "app/a"]);
    assert!(
        !out.status.success() && !stdout(&out).contains('1'),
        "{}",
        stdout(&out)
    );
    // A token still wins over the certificate.
    let out = ctl(&e, &root, &["--user=u:upw", "get", "secret"]);
    assert!(
        stderr(&out).contains("etcdserver: permission denied"),
        "{}",
        stderr(&out)
    );
}

/// `--listen-client-urls=http://h:2379,https://h:2379`: one port serves
/// plain and TLS clients (told apart by the first byte, as etcd's cmux).
#[test]
fn http_and_https_client_urls_share_one_port() {
    let host = cairn_tests::free_host(&[2379, 2380]);
    let c = Cluster::start(Options {
        members: 1,
        hosts: Some(vec![host.clone()]),
        tls: Some(TlsOptions {
            client: true,
            ..TlsOptions::default()
        }),
        extra_args: vec![format!(
            "--listen-client-urls=http://{host}:2379,https://{host}:2379"
        )],
        ..Options::default()
    });
    let pki = c.pki.as_ref().expect("pki");
    let flags = c.etcdctl_tls_flags();
    let https = format!("https://{host}:2379");
    let http = format!("http://{host}:2379");

    // gRPC over TLS and in the clear, on the same port.
    assert_eq!(ok(ctl(&https, &flags, &["put", "k", "tls"])).trim(), "OK");
    assert_eq!(
        ok(ctl(&http, &[], &["get", "k", "--print-value-only"])),
        "tls\n"
    );
    assert_eq!(ok(ctl(&http, &[], &["put", "k", "plain"])).trim(), "OK");
    assert_eq!(
        ok(ctl(&https, &flags, &["get", "k", "--print-value-only"])),
        "plain\n"
    );
    // HTTP/1.1 both ways.
    let ca = pki.ca_file().display().to_string();
    let out = curl(&["--cacert", &ca, &format!("{https}/health")]);
    assert!(stdout(&out).contains("\"health\":\"true\""), "{out:?}");
    let out = curl(&[&format!("{http}/health")]);
    assert!(stdout(&out).contains("\"health\":\"true\""), "{out:?}");
    let out = curl(&[&format!("{http}/v2/keys/plain"), "-XPUT", "-d", "value=1"]);
    assert!(out.status.success(), "{out:?}");
}

/// `cairn` subcommands that talk to a cluster (`plugin`, `config status`)
/// take etcdctl's connection flags and `ETCDCTL_*` variables: https with a
/// client certificate, and `--user` when auth is on.
#[test]
fn admin_tools_take_etcdctl_connection_flags() {
    if target() == Target::Etcd {
        return; // Cairn's own subcommands.
    }
    let c = tls_cluster(
        1,
        TlsOptions {
            client: true,
            client_cert_auth: true,
            ..TlsOptions::default()
        },
    );
    let url = c.members[0].client_url();
    let pki = c.pki.as_ref().expect("pki");
    let flags = c.etcdctl_tls_flags();
    let cairn = |args: &[&str], env: &[(&str, String)]| {
        let mut cmd = Command::new(cairn_tests::cairn_bin());
        cmd.args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for (k, _) in std::env::vars() {
            if k.starts_with("ETCDCTL_") {
                cmd.env_remove(k);
            }
        }
        for (k, v) in env {
            cmd.env(k, v);
        }
        wait_output(cmd.spawn().expect("cairn"), WAIT)
    };
    let with_flags = |sub: &[&str]| -> Vec<String> {
        let mut all: Vec<String> = sub.iter().map(|s| s.to_string()).collect();
        all.push(format!("--endpoints={url}"));
        all.extend(flags.iter().cloned());
        all
    };

    let args = with_flags(&["plugin", "list"]);
    let out = cairn(&args.iter().map(String::as_str).collect::<Vec<_>>(), &[]);
    assert!(out.status.success(), "{}{}", stdout(&out), stderr(&out));

    let args = with_flags(&["config", "status"]);
    let out = cairn(&args.iter().map(String::as_str).collect::<Vec<_>>(), &[]);
    assert!(
        stdout(&out).contains("last_reload"),
        "{}{}",
        stdout(&out),
        stderr(&out)
    );

    // The same from ETCDCTL_* alone.
    let env = [
        ("ETCDCTL_ENDPOINTS", url.clone()),
        ("ETCDCTL_CACERT", pki.ca_file().display().to_string()),
        ("ETCDCTL_CERT", pki.client_cert().display().to_string()),
        ("ETCDCTL_KEY", pki.client_key().display().to_string()),
    ];
    let out = cairn(&["plugin", "list"], &env);
    assert!(out.status.success(), "{}{}", stdout(&out), stderr(&out));

    // The server insists on a client certificate.
    let out = cairn(&["plugin", "list"], &env[..2]);
    assert!(!out.status.success(), "{}", stdout(&out));
    assert!(
        stderr(&out).contains("cannot reach any endpoint"),
        "{}",
        stderr(&out)
    );

    // With auth on, --user (or ETCDCTL_USER/ETCDCTL_PASSWORD) logs in.
    for args in [&["user", "add", "root:rootpw"][..], &["auth", "enable"]] {
        ok(ctl(&url, &flags, args));
    }
    let out = cairn(&["plugin", "list", "--user=root:wrong"], &env);
    assert!(!out.status.success(), "{}", stdout(&out));
    assert!(
        stderr(&out).contains("authentication failed"),
        "{}",
        stderr(&out)
    );
    let out = cairn(&["plugin", "list", "--user=root:rootpw"], &env);
    assert!(out.status.success(), "{}{}", stdout(&out), stderr(&out));
    let mut with_user = env.to_vec();
    with_user.push(("ETCDCTL_USER", "root".into()));
    with_user.push(("ETCDCTL_PASSWORD", "rootpw".into()));
    let out = cairn(&["plugin", "list"], &with_user);
    assert!(out.status.success(), "{}{}", stdout(&out), stderr(&out));
}

/// With `--client-cert-auth`, etcd's v2 auth takes the verified client
/// certificate's common name as the user when a request carries no Basic
/// credentials (`userFromClientCertificate`); a CN that names no user
/// falls back to the guest role.
#[test]
fn v2_auth_takes_the_client_certificate_as_the_user() {
    let c = tls_cluster(
        1,
        TlsOptions {
            client: true,
            client_cert_auth: true,
            ..TlsOptions::default()
        },
    );
    let url = c.members[0].client_url();
    let pki = c.pki.as_ref().expect("pki");
    let ca = pki.ca_file().display().to_string();
    let ids = c.dir.path().join("v2-ids");
    pki.ca.issue("nobody", &[]).write(&ids, "nobody");
    let as_cert = |cert: &Path, key: &Path, extra: &[&str], path: &str| {
        let mut args = vec![
            "-w".to_string(),
            "\n%{http_code}".to_string(),
            "--cacert".to_string(),
            ca.clone(),
            "--cert".to_string(),
            cert.display().to_string(),
            "--key".to_string(),
            key.display().to_string(),
        ];
        args.extend(extra.iter().map(|s| s.to_string()));
        args.push(format!("{url}{path}"));
        let out = curl(&args.iter().map(String::as_str).collect::<Vec<_>>());
        let text = stdout(&out);
        let code = text.lines().last().unwrap_or("").to_string();
        (code, text)
    };
    let (root_crt, root_key) = (pki.client_cert(), pki.client_key());
    let (nobody_crt, nobody_key) = (ids.join("nobody.crt"), ids.join("nobody.key"));
    let basic = ["-u", "root:rootpw"];
    let put_json = |body: &'static str| {
        [
            "-X",
            "PUT",
            "-H",
            "Content-Type: application/json",
            "-d",
            body,
        ]
    };

    let (code, text) = as_cert(
        &root_crt,
        &root_key,
        &put_json(r#"{"user":"root","password":"rootpw"}"#),
        "/v2/auth/users/root",
    );
    assert!(code.starts_with('2'), "{text}");
    let (code, text) = as_cert(&root_crt, &root_key, &["-X", "PUT"], "/v2/auth/enable");
    assert!(code.starts_with('2'), "{text}");
    let mut revoke = basic.to_vec();
    revoke.extend(put_json(
        r#"{"role":"guest","revoke":{"kv":{"read":["/*"],"write":["/*"]}}}"#,
    ));
    let (code, text) = as_cert(&root_crt, &root_key, &revoke, "/v2/auth/roles/guest");
    assert!(code.starts_with('2'), "{text}");

    // The certificate of user "root", no Basic credentials: root.
    let put = ["-X", "PUT", "-d", "value=bar"];
    let (code, text) = as_cert(&root_crt, &root_key, &put, "/v2/keys/foo");
    assert_eq!(code, "201", "{text}");
    let (code, text) = as_cert(&root_crt, &root_key, &[], "/v2/auth/users");
    assert_eq!(code, "200", "{text}");
    // A CN that is no user: the guest role, which may do nothing now.
    let (code, text) = as_cert(&nobody_crt, &nobody_key, &put, "/v2/keys/foo");
    assert_eq!(code, "401", "{text}");
    let (code, text) = as_cert(&nobody_crt, &nobody_key, &[], "/v2/auth/users");
    assert_eq!(code, "401", "{text}");
    // Basic credentials win over the certificate.
    let mut wrong = vec!["-u", "root:wrong"];
    wrong.extend(put);
    let (code, text) = as_cert(&root_crt, &root_key, &wrong, "/v2/keys/foo");
    assert_eq!(code, "401", "{text}");
}
