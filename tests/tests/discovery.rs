//! Discovery (issue 14, item 9): a new cluster's members find each other
//! through etcd's v2 discovery protocol (`--discovery`) against a
//! discovery service that is a one-member Cairn or the real etcd 3.4, or
//! through DNS SRV records (`--discovery-srv`) served by a DNS server on
//! loopback.

use cairn_tests::dns::{DNS_SERVER_ENV, DnsServer, Zone};
use cairn_tests::*;
use sha1::{Digest, Sha1};
use std::io::{Read, Write};
use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

/// etcd's member ID: SHA-1 of the sorted peer URLs and the token.
fn member_id(peer_url: &str, token: &str) -> u64 {
    let digest = Sha1::new()
        .chain_update(peer_url.as_bytes())
        .chain_update(token.as_bytes())
        .finalize();
    let mut word = [0u8; 8];
    word.copy_from_slice(&digest[..8]);
    u64::from_be_bytes(word)
}

/// `curl -s` with these arguments; its output.
fn curl(args: &[&str]) -> String {
    let child = Command::new("curl")
        .args(["-s", "--max-time", "10"])
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("curl");
    stdout(&wait_output(child, Duration::from_secs(15)))
}

/// `member list -w json` of the cluster: (ID, name, peer URLs) sorted by name.
fn members(c: &Cluster, at: &str) -> Vec<(u64, String, Vec<String>)> {
    let out = ok(c.etcdctl_at(at, &["member", "list", "-w", "json"]));
    let v: serde_json::Value = serde_json::from_str(&out).expect("member list JSON");
    let mut list: Vec<(u64, String, Vec<String>)> = v["members"]
        .as_array()
        .expect("members")
        .iter()
        .map(|m| {
            (
                m["ID"].as_u64().expect("ID"),
                m["name"].as_str().unwrap_or("").to_string(),
                m["peerURLs"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|u| u.as_str().map(String::from))
                    .collect(),
            )
        })
        .collect();
    list.sort_by(|a, b| a.1.cmp(&b.1));
    list
}

/// Eventually every member has published its name.
fn wait_named(c: &Cluster, at: &str, n: usize) -> Vec<(u64, String, Vec<String>)> {
    eventually(Duration::from_secs(20), || {
        let list = members(c, at);
        (list.len() == n && list.iter().all(|m| !m.1.is_empty())).then_some(list)
    })
    .unwrap_or_else(|| panic!("members never all named: {:?}", members(c, at)))
}

/// A write on one member is read back (linearizably) on every member.
fn check_replication(c: &Cluster) {
    ok(c.etcdctl_at(&c.members[0].endpoint(), &["put", "discovered", "yes"]));
    for m in &c.members {
        let out = ok(c.etcdctl_at(&m.endpoint(), &["get", "discovered", "--print-value-only"]));
        assert_eq!(out, "yes\n", "on {}", m.name);
    }
}

/// A plain-HTTP forward proxy (as `--discovery-proxy` expects): takes
/// absolute-form requests, forwards each connection to the host it names,
/// and counts the requests it saw.
struct Proxy {
    addr: String,
    requests: Arc<AtomicUsize>,
}

fn start_proxy() -> Proxy {
    let listener = TcpListener::bind("127.0.0.1:0").expect("proxy listener");
    let addr = listener.local_addr().expect("proxy addr").to_string();
    let requests = Arc::new(AtomicUsize::new(0));
    let seen = Arc::clone(&requests);
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(client) = conn else { continue };
            let seen = Arc::clone(&seen);
            std::thread::spawn(move || forward(client, &seen));
        }
    });
    Proxy { addr, requests }
}

/// One proxied connection: its first request goes to the host it names,
/// then bytes are piped both ways until either side closes (Cairn's
/// discovery client sends one request per connection).
fn forward(mut client: TcpStream, seen: &AtomicUsize) {
    let _ = client.set_read_timeout(Some(Duration::from_secs(120)));
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") && head.len() < 64 * 1024 {
        match client.read(&mut byte) {
            Ok(1) => head.push(byte[0]),
            _ => return,
        }
    }
    let text = String::from_utf8_lossy(&head).into_owned();
    let Some((line, rest)) = text.split_once("\r\n") else {
        return;
    };
    let mut parts = line.split(' ');
    let (Some(method), Some(target), Some(version)) = (parts.next(), parts.next(), parts.next())
    else {
        return;
    };
    if method == "CONNECT" {
        // A tunnel (to an https discovery service).
        seen.fetch_add(1, Ordering::Relaxed);
        let Ok(upstream) = TcpStream::connect(target) else {
            let _ = client.write_all(b"HTTP/1.1 502 Bad Gateway\r\ncontent-length: 0\r\n\r\n");
            return;
        };
        let _ = client.write_all(b"HTTP/1.1 200 Connection established\r\n\r\n");
        pipe(client, upstream);
        return;
    }
    // Only absolute-form requests are proxy requests.
    let Some(after) = target.strip_prefix("http://") else {
        let _ = client.write_all(b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n\r\n");
        return;
    };
    seen.fetch_add(1, Ordering::Relaxed);
    let (authority, path) = match after.find('/') {
        Some(i) => (&after[..i], &after[i..]),
        None => (after, "/"),
    };
    let Ok(mut upstream) = TcpStream::connect(authority) else {
        let _ = client.write_all(b"HTTP/1.1 502 Bad Gateway\r\ncontent-length: 0\r\n\r\n");
        return;
    };
    let _ = upstream.write_all(format!("{method} {path} {version}\r\n{rest}").as_bytes());
    pipe(client, upstream);
}

/// Copies bytes both ways until either side closes.
fn pipe(mut client: TcpStream, mut upstream: TcpStream) {
    let (Ok(mut up_read), Ok(mut client_write)) = (upstream.try_clone(), client.try_clone()) else {
        return;
    };
    let back = std::thread::spawn(move || {
        let _ = std::io::copy(&mut up_read, &mut client_write);
        let _ = client_write.shutdown(std::net::Shutdown::Both);
    });
    let _ = std::io::copy(&mut client, &mut upstream);
    let _ = upstream.shutdown(std::net::Shutdown::Write);
    let _ = back.join();
}

/// Three members bootstrap through a discovery service running `service`;
/// a fourth finds the cluster full; a missing size key is refused as etcd
/// refuses it; a restarted member no longer needs the service.
fn discovery_cluster(service: Target) {
    let mut svc = Cluster::start(Options {
        members: 1,
        target: Some(service),
        ..Options::default()
    });
    let svc_url = svc.members[0].client_url();
    let token = format!("tok-{}", rand::random::<u32>());
    let durl = format!("{svc_url}/v2/keys/_etcd/registry/{token}");
    let set = curl(&["-XPUT", &format!("{durl}/_config/size"), "-d", "value=3"]);
    assert!(set.contains("\"value\":\"3\""), "{set}");

    // Bad discovery directories. The size key must exist (etcd 3.4 prints
    // the service's v2 error), be a number, and the URL must be a v2 API.
    let bad_size = format!("{svc_url}/v2/keys/_etcd/registry/{token}-badsize");
    curl(&[
        "-XPUT",
        &format!("{bad_size}/_config/size"),
        "-d",
        "value=three",
    ]);
    let mut probe = Cluster::launch(Options {
        members: 0,
        static_bootstrap: false,
        ..Options::default()
    });
    for (url, error) in [
        (
            format!("{svc_url}/v2/keys/_etcd/registry/{token}-nosize"),
            format!("100: Key not found (/_etcd/registry/{token}-nosize) ["),
        ),
        (bad_size, "discovery: size key is bad".to_string()),
        (
            format!("{svc_url}/not-v2/{token}"),
            "discovery: bad discovery endpoint".to_string(),
        ),
    ] {
        let i = probe.new_member(&format!("probe{}", probe.members.len()));
        probe.launch_member(i, &[&format!("--discovery={url}")]);
        let code = probe.wait_exit(i, Duration::from_secs(30));
        assert_eq!(code, Some(1), "{url}");
        let log = probe.members[i].log();
        assert!(
            log.contains(&format!("failed to join discovery cluster ({error}")),
            "{url}: {log}"
        );
    }

    // One member goes through an HTTP proxy.
    let proxy = start_proxy();
    let mut c = Cluster::launch(Options {
        static_bootstrap: false,
        extra_args: vec![format!("--discovery={durl}")],
        member_args: vec![(1, format!("--discovery-proxy={}", proxy.addr))],
        ..Options::default()
    });
    c.wait_healthy(Duration::from_secs(60));
    // (etcd keeps its connection to the proxy alive, so the proxy, which
    // looks at a connection's first request only, may count just one.)
    assert!(
        proxy.requests.load(Ordering::Relaxed) >= 1,
        "the proxy saw no discovery requests"
    );
    let at = c.members[0].endpoint();
    let list = wait_named(&c, &at, 3);
    for (m, (id, name, urls)) in c.members.iter().zip(&list) {
        assert_eq!(name, &m.name);
        assert_eq!(urls, &vec![m.peer_url()]);
        // etcd hashes the discovery URL in as the cluster token.
        assert_eq!(*id, member_id(&m.peer_url(), &durl), "ID of {name}");
    }
    check_replication(&c);
    // The registrations in the discovery directory.
    let dir = curl(&[&durl]);
    for (id, name, urls) in &list {
        assert!(
            dir.contains(&format!("\"value\":\"{name}={}\"", urls[0])),
            "{id:x}: {dir}"
        );
        assert!(dir.contains(&format!("/{id:x}\"")), "{id:x}: {dir}");
    }

    // A fourth member: the cluster is full.
    let fourth = c.new_member("m4");
    c.launch_member(fourth, &["--discovery-fallback=exit"]);
    let code = c.wait_exit(fourth, Duration::from_secs(30));
    assert_eq!(code, Some(1));
    let log = c.members[fourth].log();
    assert!(
        log.contains("failed to join discovery cluster (discovery: cluster is full)"),
        "{log}"
    );
    if target() == Target::Cairn {
        // etcd's default fallback would start a v2 proxy; Cairn has none.
        let fifth = c.new_member("m5");
        c.launch_member(fifth, &[]);
        assert_eq!(c.wait_exit(fifth, Duration::from_secs(30)), Some(1));
        let log = c.members[fifth].log();
        assert!(log.contains("discovery: cluster is full"), "{log}");
        assert!(log.contains("cairn has no proxy mode"), "{log}");
        c.forget(fifth);
    }
    c.forget(fourth);

    // With data, a member skips discovery: it restarts with the service gone.
    svc.stop(0);
    c.stop(2);
    c.restart(2);
    c.wait_healthy(Duration::from_secs(30));
    assert_eq!(members(&c, &c.members[2].endpoint()).len(), 3);
    let out = ok(c.etcdctl_at(
        &c.members[2].endpoint(),
        &["get", "discovered", "--print-value-only"],
    ));
    assert_eq!(out, "yes\n");
}

#[test]
fn discovery_bootstraps_through_a_cairn_discovery_service() {
    discovery_cluster(Target::Cairn);
}

#[test]
fn discovery_bootstraps_through_an_etcd_discovery_service() {
    discovery_cluster(Target::Etcd);
}

/// An https discovery service (its CA given as Go's `SSL_CERT_FILE`), one
/// member direct, one through the proxy's CONNECT tunnel.
#[test]
fn discovery_over_https_directly_and_through_a_connect_proxy() {
    let svc = Cluster::start(Options {
        members: 1,
        tls: Some(tls::TlsOptions {
            client: true,
            ..Default::default()
        }),
        ..Options::default()
    });
    let ca = svc.pki.as_ref().expect("pki").ca_file();
    let ca = ca.to_str().expect("CA path").to_string();
    let durl = format!(
        "{}/v2/keys/_etcd/registry/tls-{}",
        svc.members[0].client_url(),
        rand::random::<u32>()
    );
    assert!(durl.starts_with("https://"));
    let set = curl(&[
        "--cacert",
        &ca,
        "-XPUT",
        &format!("{durl}/_config/size"),
        "-d",
        "value=2",
    ]);
    assert!(set.contains("\"value\":\"2\""), "{set}");
    let proxy = start_proxy();
    let c = Cluster::launch(Options {
        members: 2,
        static_bootstrap: false,
        extra_args: vec![format!("--discovery={durl}")],
        member_args: vec![(1, format!("--discovery-proxy=http://{}", proxy.addr))],
        member_env: (0..2)
            .map(|i| (i, "SSL_CERT_FILE".to_string(), ca.clone()))
            .collect(),
        ..Options::default()
    });
    c.wait_healthy(Duration::from_secs(60));
    assert!(
        proxy.requests.load(Ordering::Relaxed) >= 1,
        "no CONNECT through the proxy"
    );
    let list = wait_named(&c, &c.members[0].endpoint(), 2);
    for (m, (id, _, _)) in c.members.iter().zip(&list) {
        assert_eq!(*id, member_id(&m.peer_url(), &durl));
    }
    check_replication(&c);
}

/// Three members on 127.0.0.1 bootstrap from SRV records that name
/// `localhost` (resolved through the test server, and dialable by the
/// peers); with `service_name`, only the `-<name>` records count.
fn srv_cluster(service_name: Option<&str>) {
    if target() == Target::Etcd {
        // etcd resolves with the system's DNS, which tests cannot point at
        // a server of their own.
        return;
    }
    let ports: Vec<(u16, u16)> = (0..3).map(|_| (free_port(), free_port())).collect();
    let suffix = service_name.map(|n| format!("-{n}")).unwrap_or_default();
    let mut zone = Zone::default();
    for (_, peer) in &ports {
        zone.add_srv(
            &format!("_etcd-server{suffix}._tcp.example.test."),
            *peer,
            "localhost.",
        );
    }
    if service_name.is_some() {
        // A decoy the named lookup must not use.
        zone.add_srv("_etcd-server._tcp.example.test.", 1, "localhost.");
    }
    zone.add_a("localhost.", Ipv4Addr::LOCALHOST);
    let dns = DnsServer::start(zone);
    let mut extra = vec!["--discovery-srv=example.test".to_string()];
    if let Some(n) = service_name {
        extra.push(format!("--discovery-srv-name={n}"));
    }
    let token = "srv-test";
    let mut c = Cluster::launch(Options {
        static_bootstrap: false,
        hosts: Some(vec!["127.0.0.1".into(); 3]),
        ports: Some(ports.clone()),
        extra_args: extra,
        token: token.into(),
        member_env: (0..3)
            .map(|i| (i, DNS_SERVER_ENV.to_string(), dns.addr.to_string()))
            .collect(),
        ..Options::default()
    });
    c.wait_healthy(Duration::from_secs(60));
    assert!(dns.queries.load(Ordering::Relaxed) > 0);
    let list = wait_named(&c, &c.members[0].endpoint(), 3);
    for (m, (id, name, urls)) in c.members.iter().zip(&list) {
        // The records' host names, not the advertised IP, as etcd.
        let from_dns = format!("http://localhost:{}", m.peer_port);
        assert_eq!(name, &m.name);
        assert_eq!(urls, &vec![from_dns.clone()]);
        assert_eq!(*id, member_id(&from_dns, token), "ID of {name}");
    }
    check_replication(&c);

    // A member the records do not list cannot bootstrap from them.
    let stranger = c.new_member("m4");
    c.members[stranger].host = "127.0.0.1".into();
    c.members[stranger].peer_port = free_port();
    c.members[stranger].listen_peer_port = c.members[stranger].peer_port;
    c.members[stranger].client_port = free_port();
    c.opts
        .member_env
        .push((stranger, DNS_SERVER_ENV.to_string(), dns.addr.to_string()));
    c.launch_member(stranger, &[]);
    assert_eq!(c.wait_exit(stranger, Duration::from_secs(30)), Some(1));
    let log = c.members[stranger].log();
    assert!(
        log.contains(
            "error setting up initial cluster: cannot find local etcd member \"m4\" in SRV records"
        ),
        "{log}"
    );
}

#[test]
fn discovery_srv_bootstraps_from_dns_records() {
    srv_cluster(None);
}

#[test]
fn discovery_srv_name_selects_the_named_records() {
    srv_cluster(Some("cl2"));
}
