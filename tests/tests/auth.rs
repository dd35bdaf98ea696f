//! etcd v3 auth through the real etcdctl 3.4 (golden transcript recorded
//! against etcd 3.4.23), token expiry with a client library that
//! re-authenticates, and a walk over every API surface as an unprivileged
//! user.

use cairn_tests::golden::Transcript;
use cairn_tests::{
    Background, Cluster, Options, etcdctl, etcdctl_stdin, http_get, runtime, stderr, stdout,
};
use std::time::Duration;

fn hosts(test: u8) -> Option<Vec<String>> {
    Some((1..=3).map(|i| format!("127.77.{test}.{i}")).collect())
}

const WAIT: Duration = Duration::from_secs(15);

#[test]
fn users_roles_and_permissions_match_etcd() {
    let c = Cluster::start(Options {
        hosts: hosts(9),
        ..Options::default()
    });
    let e = c.members[0].endpoint();
    let mut t = Transcript::new(&c);
    let root = "--user=root:rootpw";
    let alice = "--user=alice:alicepw";

    // Users and roles, before auth is on.
    t.run(&e, &["user", "add", "root:rootpw"]);
    t.run(&e, &["user", "add", "root:again"]);
    t.run(&e, &["role", "add", "reader"]);
    t.run(&e, &["role", "add", "writer"]);
    t.run(&e, &["role", "add", "writer"]);
    t.run(
        &e,
        &[
            "role",
            "grant-permission",
            "reader",
            "read",
            "foo",
            "--prefix=true",
        ],
    );
    t.run(
        &e,
        &[
            "role",
            "grant-permission",
            "writer",
            "readwrite",
            "foo/",
            "--prefix=true",
        ],
    );
    t.run(&e, &["role", "grant-permission", "writer", "write", "bar"]);
    t.run(
        &e,
        &[
            "role",
            "grant-permission",
            "writer",
            "read",
            "m",
            "--from-key",
        ],
    );
    t.run(&e, &["role", "grant-permission", "nosuch", "read", "x"]);
    t.run(&e, &["role", "get", "reader"]);
    t.run(&e, &["role", "get", "writer"]);
    t.run(&e, &["role", "list"]);
    t.run(&e, &["user", "add", "alice:alicepw"]);
    t.run(&e, &["user", "grant-role", "alice", "writer"]);
    t.run(&e, &["user", "grant-role", "alice", "nosuch"]);
    t.run(&e, &["user", "get", "alice"]);
    t.run(&e, &["user", "get", "nobody"]);
    t.run(&e, &["user", "list"]);
    t.run(&e, &["put", "foo/x", "1"]);

    // Auth on: root must hold the root role first.
    t.run(&e, &["auth", "enable"]);
    t.run(&e, &["user", "grant-role", "root", "root"]);
    t.run(&e, &["auth", "enable"]);

    // Anonymous and wrong-password clients.
    t.run(&e, &["put", "foo/x", "2"]);
    t.run(&e, &["get", "foo/x"]);
    t.run(&e, &["--user=alice:wrong", "get", "foo/x"]);
    t.run(&e, &["--user=nobody:pw", "get", "foo/x"]);

    // A limited user: allowed and denied.
    t.run(&e, &[alice, "put", "foo/x", "3"]);
    t.run(&e, &[alice, "get", "foo/x"]);
    t.run(&e, &[alice, "get", "foo/", "--prefix"]);
    t.run(&e, &[alice, "put", "baz", "1"]);
    t.run(&e, &[alice, "get", "baz"]);
    t.run(&e, &[alice, "put", "bar", "1"]);
    t.run(&e, &[alice, "get", "bar"]);
    t.run(&e, &[alice, "get", "m"]);
    t.run(&e, &[alice, "get", "zzz"]);
    t.run(&e, &[alice, "del", "foo/x"]);
    t.run(&e, &[alice, "del", "baz"]);
    t.run_with_input(
        &e,
        &[alice, "txn"],
        Some("value(\"foo/a\") = \"1\"\n\nput foo/b 1\n\nput foo/c 1\n\n"),
    );
    t.run_with_input(
        &e,
        &[alice, "txn"],
        Some("value(\"foo/a\") = \"1\"\n\nput foo/b 1\n\nput baz 1\n\n"),
    );
    t.run_with_input(
        &e,
        &[alice, "txn"],
        Some("value(\"zzz\") = \"1\"\n\nput foo/b 1\n\n\n"),
    );
    let args = [alice, "watch", "baz"];
    let w = Background::etcdctl(&e, &args);
    let (out, err, code) = w.finish(WAIT);
    t.record(&args, "", &out, &err, code);
    let args = [alice, "watch", "foo/w"];
    let w = Background::etcdctl(&e, &args);
    std::thread::sleep(Duration::from_millis(500));
    t.run(&e, &[alice, "put", "foo/w", "seen"]);
    assert!(w.wait_for(WAIT, |o| o.contains("seen")), "{}", w.stdout());
    let (out, err) = w.kill();
    t.record(&args, "", &out, &err, None);

    // Leases: a grant is fine; attaching to keys it may not write is not.
    let granted = t.run(&e, &[alice, "lease", "grant", "100"]);
    let lease = granted
        .split_whitespace()
        .nth(1)
        .unwrap_or_else(|| panic!("no lease ID in {granted:?}"))
        .to_string();
    t.alias(
        u64::from_str_radix(&lease, 16).expect("hex lease"),
        "<lease>",
    );
    t.run(
        &e,
        &[alice, "put", "foo/l", "v", &format!("--lease={lease}")],
    );
    t.run(&e, &[root, "put", "baz", "v", &format!("--lease={lease}")]);
    t.run(&e, &[alice, "lease", "revoke", &lease]);
    t.run(&e, &[root, "lease", "revoke", &lease]);

    // Admin operations are root's.
    t.run(&e, &[alice, "user", "list"]);
    t.run(&e, &[alice, "role", "list"]);
    t.run(&e, &[alice, "user", "get", "alice"]);
    t.run(&e, &[alice, "role", "get", "writer"]);
    t.run(&e, &[alice, "role", "get", "reader"]);
    t.run(
        &e,
        &[
            alice,
            "member",
            "add",
            "x",
            "--peer-urls=http://127.77.9.9:2380",
        ],
    );
    t.run(&e, &[alice, "auth", "disable"]);
    // etcdctl counts "permission denied" on the health key as healthy.
    let out = etcdctl(&e, &[alice, "endpoint", "health"], None);
    assert!(
        stderr(&out).contains("is healthy: successfully committed proposal"),
        "{}{}",
        stdout(&out),
        stderr(&out)
    );
    t.run(&e, &[root, "user", "list"]);

    // Revocations take effect at once.
    t.run(&e, &[root, "role", "revoke-permission", "writer", "bar"]);
    t.run(&e, &[root, "role", "revoke-permission", "writer", "bar"]);
    t.run(&e, &[alice, "put", "bar", "2"]);
    t.run(&e, &[root, "user", "revoke-role", "alice", "writer"]);
    t.run(&e, &[alice, "get", "foo/x"]);
    t.run_with_input(
        &e,
        &[root, "user", "passwd", "alice", "--interactive=false"],
        Some("newpw\n"),
    );
    t.run(&e, &[alice, "get", "foo/x"]);
    t.run(&e, &["--user=alice:newpw", "user", "get", "alice"]);
    t.run(&e, &[root, "user", "delete", "alice"]);
    t.run(&e, &[root, "user", "delete", "root"]);
    t.run(&e, &[root, "role", "delete", "reader"]);
    t.run(&e, &[root, "role", "delete", "root"]);
    t.run(&e, &[root, "auth", "disable"]);
    t.run(&e, &["put", "foo/x", "4"]);
    t.run(&e, &["get", "foo/x"]);
    t.check("auth");
}

/// Enables auth with a root user and a limited user `u` holding read and
/// write on `app/` only.
fn enable_auth(e: &str) {
    let run = |args: &[&str]| {
        let out = etcdctl(e, args, None);
        assert!(out.status.success(), "{args:?}: {}", stderr(&out));
    };
    run(&["user", "add", "root:rootpw"]);
    run(&["user", "grant-role", "root", "root"]);
    run(&["role", "add", "app"]);
    run(&[
        "role",
        "grant-permission",
        "app",
        "readwrite",
        "app/",
        "--prefix=true",
    ]);
    run(&["user", "add", "u:upw"]);
    run(&["user", "grant-role", "u", "app"]);
    run(&["auth", "enable"]);
    run(&["--user=root:rootpw", "put", "secret", "s3cr3t"]);
}

#[test]
fn expired_simple_token_is_refused_and_the_client_reauthenticates() {
    let c = Cluster::start(Options {
        members: 1,
        extra_args: vec!["--auth-token-ttl=2".into()],
        ..Options::default()
    });
    let e = c.members[0].endpoint();
    enable_auth(&e);
    runtime().block_on(async {
        let opts = etcd_client::ConnectOptions::new().with_user("u", "upw");
        // Without refreshing: the expired token is refused.
        let mut plain = etcd_client::Client::connect([e.clone()], Some(opts.clone()))
            .await
            .expect("connect");
        plain
            .put("app/a", "1", None)
            .await
            .expect("put with a fresh token");
        // Refreshing on `invalid auth token`, as etcd's own client does.
        let mut refreshing =
            etcd_client::Client::connect([e.clone()], Some(opts.with_auto_token_refresh(true)))
                .await
                .expect("connect");
        refreshing
            .get("app/a", None)
            .await
            .expect("get with a fresh token");
        tokio::time::sleep(Duration::from_secs(4)).await;
        let err = plain.get("app/a", None).await.expect_err("token expired");
        assert!(
            err.to_string().contains("etcdserver: invalid auth token"),
            "{err}"
        );
        let r = refreshing
            .get("app/a", None)
            .await
            .expect("the client re-authenticates and goes on");
        assert_eq!(r.kvs()[0].value(), b"1");
    });
}

/// A leader that restarted has forgotten every simple token issued before
/// (they live in memory, in etcd too). A follower that still knows its
/// client's token forwards lease calls to that leader: the client must get
/// an answer — here, after logging in again on "invalid auth token" as
/// etcd's clients do — not a call held to the request timeout. (The
/// robustness runs with auth on found lease TTLs timing out for good.)
#[test]
fn lease_calls_through_a_follower_survive_a_leader_that_forgot_the_token() {
    let mut c = Cluster::start(Options::default());
    let ids: Vec<String> = (0..3).map(|i| c.member_id_hex(i)).collect();
    enable_auth(&c.members[0].endpoint());
    let leader = c.wait_leader(WAIT);
    let follower = (leader + 1) % 3;
    let rt = runtime();
    let opts = etcd_client::ConnectOptions::new()
        .with_user("root", "rootpw")
        .with_auto_token_refresh(true)
        .with_timeout(Duration::from_secs(15));
    let mut client = rt
        .block_on(etcd_client::Client::connect(
            [c.members[follower].endpoint()],
            Some(opts),
        ))
        .expect("connect");
    let lease = rt
        .block_on(client.lease_grant(60, None))
        .expect("grant")
        .id();

    // The leader restarts (forgetting the token) and leads again.
    c.stop(leader);
    c.restart(leader);
    c.wait_healthy(WAIT);
    let now = c.wait_leader(WAIT);
    if now != leader {
        let out = etcdctl(
            &c.members[now].endpoint(),
            &["--user=root:rootpw", "move-leader", &ids[leader]],
            None,
        );
        assert!(out.status.success(), "move-leader: {}", stderr(&out));
    }
    assert_eq!(c.wait_leader(WAIT), leader);

    let ttl = rt
        .block_on(client.lease_time_to_live(lease, None))
        .expect("TimeToLive through the follower");
    assert!(ttl.ttl() > 0, "ttl {}", ttl.ttl());
    // (The call itself sends one renewal and reads its answer.)
    let (mut keeper, mut stream) = rt
        .block_on(client.lease_keep_alive(lease))
        .expect("keep-alive through the follower");
    rt.block_on(keeper.keep_alive()).expect("second renewal");
    let renewed = rt
        .block_on(stream.message())
        .expect("keep-alive answer")
        .expect("a response");
    assert!(renewed.ttl() > 0, "ttl {}", renewed.ttl());
}

/// As a user with access to `app/` only, every surface that could read or
/// write other keys refuses: gRPC (KV, txn, watch, lease, cluster,
/// maintenance, auth), the JSON gateway and the v2 API.
#[test]
fn unprivileged_user_gets_nothing_past_auth() {
    if cairn_tests::target() == cairn_tests::Target::Etcd {
        return; // etcd's v2 API ignores v3 auth; this checks Cairn's rule.
    }
    let c = Cluster::start(Options {
        members: 1,
        // A config file, so /config/status has one to show (or hide).
        config_toml: Some(String::new()),
        ..Options::default()
    });
    let e = c.members[0].endpoint();
    enable_auth(&e);
    let u = "--user=u:upw";
    let denied = |args: &[&str]| {
        let out = etcdctl(&e, args, None);
        assert!(
            !out.status.success(),
            "{args:?} succeeded: {}",
            stdout(&out)
        );
        assert!(
            !stdout(&out).contains("s3cr3t"),
            "{args:?} leaked the secret"
        );
        stderr(&out)
    };
    // KV and txn.
    assert!(denied(&[u, "get", "secret"]).contains("permission denied"));
    assert!(denied(&[u, "get", "", "--from-key"]).contains("permission denied"));
    assert!(denied(&[u, "get", "secret", "--consistency=s"]).contains("permission denied"));
    assert!(denied(&[u, "put", "secret", "x"]).contains("permission denied"));
    assert!(denied(&[u, "del", "secret"]).contains("permission denied"));
    assert!(denied(&[u, "del", "", "--from-key"]).contains("permission denied"));
    let out = etcdctl_stdin(&e, &[u, "txn"], None, Some("\nget secret\n\n\n"));
    assert!(!out.status.success() && !stdout(&out).contains("s3cr3t"));
    let out = etcdctl_stdin(
        &e,
        &[u, "txn"],
        None,
        Some("value(\"secret\") = \"s3cr3t\"\n\nput app/x 1\n\n\n"),
    );
    assert!(!out.status.success(), "{}", stdout(&out));
    // Watch (a denied watch is canceled at once).
    let w = Background::etcdctl(&e, &[u, "watch", "secret"]);
    let (out, err, _) = w.finish(WAIT);
    assert!(
        format!("{out}{err}").contains("permission denied"),
        "{out}{err}"
    );
    // Anonymous everything.
    assert!(denied(&["get", "secret"]).contains("user name is empty"));
    assert!(denied(&["lease", "grant", "10"]).contains("user name is empty"));
    assert!(denied(&["lease", "list"]).contains("user name is empty"));
    // Cluster, maintenance and auth administration.
    assert!(
        denied(&[u, "member", "add", "x", "--peer-urls=http://127.0.0.1:9"])
            .contains("permission denied")
    );
    assert!(denied(&[u, "user", "list"]).contains("permission denied"));
    assert!(denied(&[u, "role", "add", "r"]).contains("permission denied"));
    assert!(denied(&[u, "user", "grant-role", "u", "root"]).contains("permission denied"));
    assert!(denied(&[u, "auth", "disable"]).contains("permission denied"));
    assert!(denied(&[u, "defrag"]).contains("permission denied"));
    assert!(denied(&[u, "endpoint", "hashkv"]).contains("permission denied"));
    let snap = c.dir.path().join("u.snap");
    let snap = snap.to_str().expect("utf8 path");
    assert!(denied(&[u, "snapshot", "save", snap]).contains("permission denied"));
    assert!(
        !std::path::Path::new(snap).exists(),
        "a snapshot file was written"
    );
    assert!(denied(&[u, "move-leader", "1"]).contains("permission denied"));
    assert!(denied(&[u, "member", "remove", "1234"]).contains("permission denied"));
    assert!(
        denied(&[
            u,
            "member",
            "update",
            "1234",
            "--peer-urls=http://127.0.0.1:9"
        ])
        .contains("permission denied")
    );
    assert!(denied(&[u, "member", "promote", "1234"]).contains("permission denied"));
    // Compaction and alarms are root's (stricter than etcd 3.4).
    assert!(denied(&[u, "compaction", "1"]).contains("permission denied"));
    // (`alarm disarm` with no alarm raised only lists them: the gateway
    // DEACTIVATE below is the denied write.)
    // Lock: the lock's key is written under its name.
    assert!(denied(&[u, "lock", "secret", "echo", "held"]).contains("permission denied"));
    // Someone else's lease holding a key u may not write or read.
    let out = etcdctl(&e, &["--user=root:rootpw", "lease", "grant", "300"], None);
    assert!(out.status.success(), "{}", stderr(&out));
    let lease = stdout(&out)
        .split_whitespace()
        .nth(1)
        .expect("lease id")
        .to_string();
    let out = etcdctl(
        &e,
        &[
            "--user=root:rootpw",
            "put",
            "secret",
            "s3cr3t",
            "--lease",
            &lease,
        ],
        None,
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(denied(&[u, "lease", "timetolive", &lease, "--keys"]).contains("permission denied"));
    assert!(denied(&[u, "lease", "revoke", &lease]).contains("permission denied"));
    assert!(denied(&[u, "put", "app/x", "1", "--lease", &lease]).contains("permission denied"));
    // A bad token is refused outright.
    let (status, body) = post_json(
        &c,
        "/v3/kv/range",
        r#"{"key":"c2VjcmV0"}"#,
        Some("not-a-token"),
    );
    assert_eq!(status, 401, "{body}");
    assert!(body.contains("invalid auth token"), "{body}");
    // The gateway without a token, and with u's token.
    let (status, body) = post_json(&c, "/v3/kv/range", r#"{"key":"c2VjcmV0"}"#, None);
    assert_ne!(status, 200, "{body}");
    assert!(
        !body.contains("czNjcjN0"),
        "gateway leaked the secret: {body}"
    );
    let (_, body) = post_json(
        &c,
        "/v3/auth/authenticate",
        r#"{"name":"u","password":"upw"}"#,
        None,
    );
    let token = serde_json::from_str::<serde_json::Value>(&body).expect("json")["token"]
        .as_str()
        .expect("token")
        .to_string();
    let (status, body) = post_json(&c, "/v3/kv/range", r#"{"key":"c2VjcmV0"}"#, Some(&token));
    assert_ne!(status, 200, "{body}");
    assert!(body.contains("permission denied"), "{body}");
    let (status, body) = post_json(&c, "/v3/kv/range", r#"{"key":"YXBwL2E="}"#, Some(&token));
    assert_eq!(status, 200, "u may read app/: {body}");
    // Every other gateway family, as u: key "secret" is c2VjcmV0.
    for (path, body) in [
        ("/v3/kv/put", r#"{"key":"c2VjcmV0","value":"eA=="}"#),
        ("/v3/kv/deleterange", r#"{"key":"c2VjcmV0"}"#),
        (
            "/v3/kv/txn",
            r#"{"success":[{"requestRange":{"key":"c2VjcmV0"}}]}"#,
        ),
        ("/v3/kv/compaction", r#"{"revision":"1"}"#),
        ("/v3/maintenance/defragment", "{}"),
        ("/v3/maintenance/snapshot", "{}"),
        ("/v3/maintenance/hash", "{}"),
        ("/v3/maintenance/alarm", r#"{"action":"DEACTIVATE"}"#),
        ("/v3/cluster/member/remove", r#"{"ID":"1234"}"#),
        ("/v3/auth/user/list", "{}"),
        ("/v3/auth/role/add", r#"{"name":"r2"}"#),
        ("/v3/auth/disable", "{}"),
        (
            "/v3/lease/timetolive",
            &format!(
                r#"{{"ID":"{}","keys":true}}"#,
                i64::from_str_radix(&lease, 16).expect("hex lease")
            ),
        ),
        ("/v3/lock/lock", r#"{"name":"c2VjcmV0"}"#),
        ("/v3/election/leader", r#"{"name":"c2VjcmV0"}"#),
        (
            "/v3/election/campaign",
            r#"{"name":"c2VjcmV0","value":"eA=="}"#,
        ),
    ] {
        let (status, reply) = post_json(&c, path, body, Some(&token));
        assert_ne!(status, 200, "{path} as u: {reply}");
        assert!(reply.contains("permission denied"), "{path} as u: {reply}");
        assert!(
            !reply.contains("czNjcjN0"),
            "{path} leaked the secret: {reply}"
        );
    }
    // Cairn's own admin endpoints: the plugin API and the configuration
    // (which names files and carries plugin settings) are root's.
    for (method, path) in [
        ("GET", "/cairn/v1/plugins"),
        ("GET", "/config"),
        ("POST", "/config/reload"),
    ] {
        let (status, reply) = http(&c, method, path, "", None);
        assert_eq!(status, 401, "{method} {path} anonymous: {reply}");
        let (status, reply) = http(&c, method, path, "", Some(&token));
        assert_eq!(status, 403, "{method} {path} as u: {reply}");
    }
    let (status, reply) = http(&c, "GET", "/config", "", Some(&root_token(&c)));
    assert_eq!(status, 200, "{reply}");
    let (status, reply) = http(&c, "GET", "/config/status", "", None);
    assert_eq!(
        status, 200,
        "the reload outcome stays open, like /health: {reply}"
    );
    // ... but names no files (nor values, nor error texts) to anonymous
    // callers while auth is on; root sees them.
    let anonymous: serde_json::Value = serde_json::from_str(&reply).expect("json");
    assert_eq!(anonymous["config_files"], serde_json::json!([]), "{reply}");
    let (status, reply) = http(&c, "GET", "/config/status", "", Some(&root_token(&c)));
    assert_eq!(status, 200, "{reply}");
    let full: serde_json::Value = serde_json::from_str(&reply).expect("json");
    assert_ne!(full["config_files"], serde_json::json!([]), "{reply}");
    // v2: keys need root credentials while auth is on.
    let (status, body) = http_get(&c.members[0].client_addr(), "/v2/keys/").expect("v2");
    assert_eq!(status, 401, "{body}");
    let out = etcdctl(&e, &["set", "x", "y"], Some("2"));
    assert!(!out.status.success());
    let out = etcdctl(&e, &["--username=root:rootpw", "set", "x", "y"], Some("2"));
    assert!(out.status.success(), "{}", stderr(&out));
    let out = etcdctl(&e, &["--username=u:upw", "get", "x"], Some("2"));
    assert!(!out.status.success(), "u read a v2 key: {}", stdout(&out));
    // v2 membership writes, too.
    let (status, reply) = http(
        &c,
        "POST",
        "/v2/members",
        r#"{"peerURLs":["http://127.0.0.1:9"]}"#,
        None,
    );
    assert_eq!(status, 401, "{reply}");
    let (status, reply) = http(&c, "DELETE", "/v2/members/1234", "", None);
    assert_eq!(status, 401, "{reply}");
    let out = etcdctl(
        &e,
        &[
            "--username=u:upw",
            "member",
            "add",
            "x",
            "http://127.0.0.1:9",
        ],
        Some("2"),
    );
    assert!(!out.status.success(), "u added a member over v2");
}

/// A root token from the gateway's Authenticate.
fn root_token(c: &Cluster) -> String {
    let (_, body) = post_json(
        c,
        "/v3/auth/authenticate",
        r#"{"name":"root","password":"rootpw"}"#,
        None,
    );
    serde_json::from_str::<serde_json::Value>(&body).expect("json")["token"]
        .as_str()
        .expect("token")
        .to_string()
}

/// A minimal HTTP/1.1 POST of a JSON body (curl-like) to the gateway.
fn post_json(c: &Cluster, path: &str, body: &str, token: Option<&str>) -> (u16, String) {
    http(c, "POST", path, body, token)
}

/// A minimal HTTP/1.1 request with an optional `Authorization` token.
fn http(c: &Cluster, method: &str, path: &str, body: &str, token: Option<&str>) -> (u16, String) {
    use std::io::{Read, Write};
    let addr = c.members[0].client_addr();
    let mut s =
        std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(5)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(15)))
        .expect("timeout");
    let auth = token
        .map(|t| format!("Authorization: {t}\r\n"))
        .unwrap_or_default();
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\n{auth}Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).expect("write");
    let mut resp = String::new();
    let _ = s.read_to_string(&mut resp);
    let status = resp
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = resp
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (status, body)
}
