//! The plain HTTP surfaces and the gRPC health service, as etcd 3.4 clients
//! and probes see them: `/health`, `/version` (client and peer URLs),
//! `/livez`, `/readyz`, `--listen-metrics-urls`, `--enable-v2=false`, and
//! `grpc.health.v1.Health/Check`.

use cairn_tests::{
    Cluster, Options, Target, etcdctl, eventually, free_host, free_port, http_get, ok, runtime,
    stderr, target,
};
use std::net::SocketAddr;
use std::time::Duration;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

const WAIT: Duration = Duration::from_secs(20);

fn get(addr: &SocketAddr, path: &str) -> (u16, String) {
    http_get(addr, path).unwrap_or_else(|e| panic!("GET {path} on {addr}: {e}"))
}

fn json(body: &str) -> serde_json::Value {
    serde_json::from_str(body).unwrap_or_else(|e| panic!("not JSON ({e}): {body:?}"))
}

/// `/version` as etcd 3.4 writes it and as clients read it (the v2 client's
/// `GetVersion`, members' cluster-version checks): `etcdserver` a 3.4.x
/// server version, `etcdcluster` the cluster version 3.4.0, both semver.
fn check_version(addr: &SocketAddr) {
    let (status, body) = get(addr, "/version");
    assert_eq!(status, 200, "/version on {addr}: {body}");
    let v = json(&body);
    let semver = |field: &str| -> Vec<u64> {
        let s = v[field]
            .as_str()
            .unwrap_or_else(|| panic!("no string {field:?} in {body}"));
        let parts: Vec<u64> = s
            .split('.')
            .map(|p| {
                p.parse()
                    .unwrap_or_else(|_| panic!("{field} {s:?} is not semver"))
            })
            .collect();
        assert_eq!(parts.len(), 3, "{field} {s:?} is not major.minor.patch");
        parts
    };
    assert_eq!(semver("etcdserver")[..2], [3, 4], "{body}");
    assert_eq!(v["etcdcluster"], "3.4.0", "{body}");
}

async fn grpc_health(endpoint: &str, service: &str) -> Result<i32, tonic::Status> {
    let channel = tonic::transport::Channel::from_shared(format!("http://{endpoint}"))
        .expect("uri")
        .connect_timeout(Duration::from_secs(3))
        .timeout(Duration::from_secs(5))
        .connect()
        .await
        .expect("connect to the client URL");
    HealthClient::new(channel)
        .check(HealthCheckRequest {
            service: service.to_string(),
        })
        .await
        .map(|r| r.into_inner().status)
}

#[test]
fn health_version_probes_and_grpc_health_on_three_members() {
    let mut c = Cluster::start(Options::default());
    c.wait_leader(WAIT);
    for m in &c.members {
        let addr = m.client_addr();
        // etcd 3.4's exact body: one field, a string.
        let (status, body) = get(&addr, "/health");
        assert_eq!(status, 200, "{}: {body}", m.name);
        assert_eq!(
            json(&body),
            serde_json::json!({ "health": "true" }),
            "{}",
            m.name
        );
        check_version(&addr);
        // Members read each other's version on the peer URL.
        check_version(&m.peer_addr());
        if target() == Target::Cairn {
            // etcd 3.4 has no /livez or /readyz (3.5 added them).
            for path in ["/livez", "/readyz"] {
                let (status, body) = get(&addr, path);
                assert_eq!((status, body.as_str()), (200, "ok\n"), "{} {path}", m.name);
            }
            let (status, body) = get(&addr, "/readyz?verbose");
            assert_eq!(status, 200, "{body}");
            for check in ["serializable_read", "linearizable_read", "non_learner"] {
                assert!(body.contains(&format!("[+]{check} ok")), "{body}");
            }
        }
    }
    runtime().block_on(async {
        for m in &c.members {
            let status = grpc_health(&m.endpoint(), "").await;
            assert_eq!(
                status.map_err(|s| s.to_string()),
                Ok(ServingStatus::Serving as i32),
                "{}",
                m.name
            );
            // grpc-go's health server (etcd's) answers NotFound for a
            // service it does not know.
            let unknown = grpc_health(&m.endpoint(), "no.such.Service").await;
            assert_eq!(
                unknown.map_err(|s| s.code()),
                Err(tonic::Code::NotFound),
                "{}",
                m.name
            );
        }
    });

    // Without a quorum the survivor says so: 503 and "false" (and /readyz
    // fails its linearizable read) while it still lives.
    c.kill(1);
    c.kill(2);
    let addr = c.members[0].client_addr();
    let unhealthy = eventually(WAIT, || {
        let (status, body) = http_get(&addr, "/health").ok()?;
        (status == 503).then_some(body)
    });
    let body = unhealthy.expect("/health never turned 503 without a quorum");
    assert_eq!(json(&body), serde_json::json!({ "health": "false" }));
    if target() == Target::Cairn {
        let (status, body) = get(&addr, "/readyz");
        assert_eq!(status, 503, "{body}");
        assert!(body.contains("[-]linearizable_read failed"), "{body}");
        assert_eq!(get(&addr, "/livez"), (200, "ok\n".to_string()));
    }
}

#[test]
fn listen_metrics_urls_serve_metrics_and_health() {
    let port = free_port();
    let host = free_host(&[port]);
    let metrics_url = format!("http://{host}:{port}");
    let c = Cluster::start(Options {
        members: 1,
        extra_args: vec![format!("--listen-metrics-urls={metrics_url}")],
        ..Options::default()
    });
    let addr: SocketAddr = format!("{host}:{port}").parse().expect("addr");
    let (status, body) = eventually(WAIT, || {
        let r = http_get(&addr, "/metrics").ok()?;
        (r.0 == 200).then_some(r)
    })
    .unwrap_or_else(|| panic!("no /metrics on {metrics_url}"));
    assert_eq!(status, 200);
    assert!(
        body.lines().any(|l| l == "etcd_server_has_leader 1"),
        "no `etcd_server_has_leader 1` on {metrics_url}:\n{body}"
    );
    assert!(
        body.lines()
            .any(|l| l.starts_with("# TYPE etcd_server_has_leader gauge")),
        "{body}"
    );
    let (status, body) = get(&addr, "/health");
    assert_eq!(status, 200, "{body}");
    assert_eq!(json(&body), serde_json::json!({ "health": "true" }));
    // Only metrics and health there: not the v2 API.
    assert_eq!(get(&addr, "/v2/keys").0, 404);
    // The client URL still serves everything.
    ok(c.etcdctl(&["put", "k", "v"]));
    assert_eq!(get(&c.members[0].client_addr(), "/health").0, 200);
}

#[test]
fn enable_v2_false_turns_off_the_v2_api_only() {
    let c = Cluster::start(Options {
        members: 1,
        extra_args: vec!["--enable-v2=false".into()],
        ..Options::default()
    });
    let addr = c.members[0].client_addr();
    for path in ["/v2/keys", "/v2/keys/foo", "/v2/members", "/v2/stats/self"] {
        let (status, body) = get(&addr, path);
        assert_eq!(status, 404, "{path}: {body}");
    }
    let ep = c.members[0].endpoint();
    let out = etcdctl(&ep, &["set", "foo", "bar"], Some("2"));
    assert!(
        !out.status.success(),
        "v2 set succeeded with --enable-v2=false"
    );
    assert!(!stderr(&out).is_empty(), "v2 set failed without saying why");
    // v3 is unaffected.
    ok(c.etcdctl(&["put", "foo", "bar"]));
    assert_eq!(
        ok(c.etcdctl(&["get", "foo", "--print-value-only"])),
        "bar\n"
    );
    assert_eq!(get(&addr, "/health").0, 200);
}

/// `--enable-grpc-gateway=false` (hidden in etcd 3.4's help, but accepted):
/// the `/v3/` and `/v3beta/` JSON gateway answers Go's 404, gRPC is
/// unaffected. Also run against etcd.
#[test]
fn enable_grpc_gateway_false_turns_off_the_json_gateway_only() {
    let c = Cluster::start(Options {
        members: 1,
        extra_args: vec!["--enable-grpc-gateway=false".into()],
        ..Options::default()
    });
    let ep = c.members[0].endpoint();
    for path in ["/v3/kv/range", "/v3beta/kv/range"] {
        let out = std::process::Command::new("curl")
            .args(["-s", "-m", "10", "-w", "\n%{http_code}", "-X", "POST", "-d"])
            .arg(r#"{"key":"Zm9v"}"#)
            .arg(format!("{ep}{path}"))
            .output()
            .expect("curl");
        assert_eq!(ok(out), "404 page not found\n\n404", "{path}");
    }
    // Go's http.NotFound, like any unknown path: plain text, no sniffing.
    for path in ["/v3/kv/range", "/no-such-path"] {
        let out = std::process::Command::new("curl")
            .args(["-s", "-m", "10", "-o", "/dev/null", "-D", "-"])
            .arg(format!("{ep}{path}"))
            .output()
            .expect("curl");
        let headers = ok(out).to_ascii_lowercase();
        assert!(
            headers.contains("x-content-type-options: nosniff")
                && headers.contains("content-type: text/plain; charset=utf-8"),
            "{path}: {headers}"
        );
    }
    ok(c.etcdctl(&["put", "foo", "bar"]));
    assert_eq!(
        ok(c.etcdctl(&["get", "foo", "--print-value-only"])),
        "bar\n"
    );
}
