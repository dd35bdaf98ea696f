//! `--host-whitelist` and `--cors` on the client URLs, driven with curl:
//! the defaults let any Host and any origin in; a whitelist refuses other
//! hosts on plain HTTP with 421 (gRPC and TLS are not affected); listed
//! origins are echoed, others get no CORS headers; preflights are answered
//! directly; and an edit of the config file changes all of it live.

use cairn_tests::curl::Reply;
use cairn_tests::{Cluster, Options, client, eventually, runtime};
use std::process::Command;
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(15);

/// What curl got back; header names in lower case.
/// `curl -i` of `url` with `method`, extra `-H` headers (or curl options,
/// those starting with `--`) and a body (and `-k` for the auto-TLS test's
/// self-signed certificate).
fn curl(url: &str, method: &str, headers: &[&str], body: Option<&str>) -> Reply {
    let mut cmd = Command::new("curl");
    cmd.args(["-sS", "-k", "-i", "--max-time", "10", "-X", method]);
    for h in headers {
        if h.starts_with("--") {
            cmd.arg(h);
        } else {
            cmd.args(["-H", h]);
        }
    }
    if let Some(body) = body {
        cmd.args(["--data-raw", body]);
    }
    cairn_tests::curl::run(cmd, url)
}

fn get(c: &Cluster, path: &str, headers: &[&str]) -> Reply {
    curl(
        &format!("{}{path}", c.members[0].client_url()),
        "GET",
        headers,
        None,
    )
}

fn options(c: &Cluster, path: &str, headers: &[&str]) -> Reply {
    curl(
        &format!("{}{path}", c.members[0].client_url()),
        "OPTIONS",
        headers,
        None,
    )
}

#[track_caller]
fn assert_cors(r: &Reply, origin: &str) {
    assert_eq!(
        r.header("access-control-allow-origin"),
        Some(origin),
        "{r:?}"
    );
    assert_eq!(
        r.header("access-control-allow-methods"),
        Some("POST, GET, OPTIONS, PUT, DELETE"),
        "{r:?}"
    );
    assert_eq!(
        r.header("access-control-allow-headers"),
        Some("accept, content-type, authorization"),
        "{r:?}"
    );
}

#[track_caller]
fn assert_no_cors(r: &Reply) {
    for h in [
        "access-control-allow-origin",
        "access-control-allow-methods",
        "access-control-allow-headers",
    ] {
        assert_eq!(r.header(h), None, "{r:?}");
    }
}

/// Sets `key = value` in the member's config file; the server reloads on
/// the edit.
fn set(c: &Cluster, key: &str, value: &str) {
    c.set_config_line(0, key, value);
}

/// Waits until `GET /config`, sent with `host`, shows `want`.
fn wait_config(c: &Cluster, host: &str, want: &str) {
    let header = format!("Host: {host}");
    let seen = eventually(WAIT, || {
        let r = get(c, "/config", &[&header]);
        r.body.lines().any(|l| l == want).then_some(())
    });
    assert!(
        seen.is_some(),
        "never applied {want}: {:?}",
        get(c, "/config/status", &[&header])
    );
}

#[test]
fn host_whitelist_and_cors_follow_the_live_config() {
    let c = Cluster::start(Options {
        members: 1,
        config_toml: Some(String::new()),
        ..Options::default()
    });
    const EVIL: &str = "Host: evil.example:2379";
    const GOOD: &str = "Host: good.example:2379";

    // Defaults (`*` for both): any Host, any origin.
    let r = get(&c, "/health", &[EVIL, "Origin: https://any.example"]);
    assert_eq!(r.status, 200, "{r:?}");
    assert_cors(&r, "*");
    let r = get(&c, "/health", &[EVIL]);
    assert_cors(&r, "*");
    // A preflight is answered here: 200, the headers, nothing else.
    let r = options(
        &c,
        "/v3/kv/put",
        &[
            EVIL,
            "Origin: https://any.example",
            "Access-Control-Request-Method: POST",
        ],
    );
    assert_eq!((r.status, r.body.as_str()), (200, ""), "{r:?}");
    assert_cors(&r, "*");

    // Only good.example, and one listed origin.
    set(&c, "host-whitelist", "\"good.example\"");
    set(
        &c,
        "cors",
        "[\"https://good.example\", \"https://other.example\"]",
    );
    wait_config(&c, "good.example", "host-whitelist = good.example");
    wait_config(
        &c,
        "good.example",
        "cors = https://good.example,https://other.example",
    );

    // Another Host: 421 with an explanation, and no CORS headers.
    let r = get(&c, "/health", &[EVIL, "Origin: https://good.example"]);
    assert_eq!(r.status, 421, "{r:?}");
    assert_eq!(
        r.header("content-type"),
        Some("text/plain; charset=utf-8"),
        "{r:?}"
    );
    assert!(r.body.contains("\"evil.example\""), "{}", r.body);
    assert!(r.body.contains("--host-whitelist"), "{}", r.body);
    assert!(r.body.contains("TLS"), "{}", r.body);
    assert!(r.body.contains("CVE-2018-5702"), "{}", r.body);
    assert_no_cors(&r);
    // Whatever the path or method: the gateway, preflights, unknown pages.
    assert_eq!(options(&c, "/v3/kv/put", &[EVIL]).status, 421);
    assert_eq!(get(&c, "/no/such/page", &[EVIL]).status, 421);
    // The member's own address is not listed either.
    let (status, _) = cairn_tests::http_get(&c.members[0].client_addr(), "/health").unwrap();
    assert_eq!(status, 421);
    assert!(
        c.members[0]
            .log()
            .contains("refusing a plain-HTTP request whose Host is not in --host-whitelist"),
        "no warning logged"
    );
    // The listed host, with or without a port.
    assert_eq!(get(&c, "/health", &[GOOD]).status, 200);
    assert_eq!(get(&c, "/health", &["Host: good.example"]).status, 200);

    // gRPC is not HTTP a browser could be led to: the whitelist does not
    // apply (the client names the member's address).
    let rt = runtime();
    rt.block_on(async {
        let mut cl = client(&c.endpoint_list()).await;
        cl.put("grpc", "ok", None).await.expect("gRPC put");
        let r = cl.get("grpc", None).await.expect("gRPC get");
        assert_eq!(r.kvs()[0].value(), b"ok");
    });

    // A listed origin is echoed; another gets no CORS headers.
    let r = get(&c, "/health", &[GOOD, "Origin: https://other.example"]);
    assert_eq!(r.status, 200);
    assert_cors(&r, "https://other.example");
    let r = get(&c, "/health", &[GOOD, "Origin: https://bad.example"]);
    assert_eq!(r.status, 200);
    assert_no_cors(&r);
    let r = get(&c, "/health", &[GOOD]);
    assert_no_cors(&r);
    let r = options(
        &c,
        "/v3/kv/range",
        &[
            GOOD,
            "Origin: https://good.example",
            "Access-Control-Request-Method: POST",
            "Access-Control-Request-Headers: content-type",
        ],
    );
    assert_eq!((r.status, r.body.as_str()), (200, ""), "{r:?}");
    assert_cors(&r, "https://good.example");
    let r = options(&c, "/v3/kv/range", &[GOOD, "Origin: https://bad.example"]);
    assert_eq!((r.status, r.body.as_str()), (200, ""), "{r:?}");
    assert_no_cors(&r);
    // A real gateway call from the listed origin.
    let r = curl(
        &format!("{}/v3/kv/range", c.members[0].client_url()),
        "POST",
        &[
            GOOD,
            "Origin: https://good.example",
            "Content-Type: application/json",
        ],
        Some(r#"{"key":"Z3JwYw=="}"#),
    );
    assert_eq!(r.status, 200, "{r:?}");
    assert!(r.body.contains(r#""value":"b2s=""#), "{}", r.body);
    assert_cors(&r, "https://good.example");

    // Back to any host, live.
    set(&c, "host-whitelist", "\"*\"");
    let back = eventually(WAIT, || {
        (get(&c, "/health", &[EVIL]).status == 200).then_some(())
    });
    assert!(back.is_some(), "{:?}", get(&c, "/health", &[EVIL]));
}

#[test]
fn tls_requests_skip_the_host_whitelist() {
    let c = Cluster::start(Options {
        members: 1,
        tls: Some(cairn_tests::tls::TlsOptions {
            client: true,
            auto: true,
            ..Default::default()
        }),
        extra_args: vec!["--host-whitelist=good.example".into()],
        ..Options::default()
    });
    // Over TLS the certificate says which host the client meant: no 421.
    let r = get(&c, "/health", &["Host: evil.example:2379"]);
    assert_eq!(r.status, 200, "{r:?}");
    assert_cors(&r, "*");
}

/// A gRPC content type is not a pass: a request is gRPC only when it is
/// HTTP/2 and names a gRPC method, so every HTTP route — gateway, v2,
/// config — gets the whitelist whatever the request claims to be. (Over
/// HTTP/1.1 with a gRPC content type, and over HTTP/2 to an HTTP path, a
/// foreign Host used to get 200 and a write.)
#[test]
fn a_grpc_content_type_does_not_bypass_the_host_whitelist() {
    let c = Cluster::start(Options {
        members: 1,
        config_toml: Some(String::new()),
        extra_args: vec!["--enable-v2=true".into()],
        ..Options::default()
    });
    // Set live: the harness's health checks name the member's address.
    set(&c, "host-whitelist", "\"good.example\"");
    wait_config(&c, "good.example", "host-whitelist = good.example");
    const EVIL: &str = "Host: evil.example:2379";
    let base = c.members[0].client_url();
    for ct in [
        "Content-Type: application/grpc",
        "Content-Type: application/grpc+proto",
    ] {
        let put = curl(
            &format!("{base}/v3/kv/put"),
            "POST",
            &[EVIL, ct],
            Some(r#"{"key":"ZXZpbA==","value":"MQ=="}"#),
        );
        assert_eq!(put.status, 421, "{put:?}");
        let v2 = curl(
            &format!("{base}/v2/keys/evil"),
            "PUT",
            &[EVIL, ct],
            Some("value=1"),
        );
        assert_eq!(v2.status, 421, "{v2:?}");
        let config = curl(&format!("{base}/config"), "GET", &[EVIL, ct], None);
        assert_eq!(config.status, 421, "{config:?}");
    }
    // HTTP/2 with a gRPC content type to an HTTP path: not a gRPC method
    // either, so gRPC's Unimplemented (as grpc-go answers an unknown
    // service), and no write. (No body: the answer comes before the body
    // is read, and curl calls the stream reset that ends an unread upload
    // an error.)
    let h2 = curl(
        &format!("{base}/v3/kv/put"),
        "POST",
        &[
            EVIL,
            "Content-Type: application/grpc",
            "--http2-prior-knowledge",
        ],
        None,
    );
    assert_eq!(h2.header("grpc-status"), Some("12"), "{h2:?}");
    let rt = runtime();
    rt.block_on(async {
        let mut cl = client(&c.endpoint_list()).await;
        let r = cl.get("evil", None).await.expect("gRPC get");
        assert!(r.kvs().is_empty(), "a refused request wrote: {:?}", r.kvs());
    });
    let v2 = curl(
        &format!("{base}/v2/keys/evil"),
        "GET",
        &["Host: good.example"],
        None,
    );
    assert_eq!(v2.status, 404, "{v2:?}");
}
