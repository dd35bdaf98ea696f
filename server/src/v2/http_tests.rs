//! The v2 HTTP layer end to end (tower `oneshot`), against an in-memory
//! backend that "replicates" by applying directly to its own store; and a
//! replay of responses recorded from etcd 3.4.23 (`testdata/golden.jsonl`,
//! made by `testdata/record_golden.py`).

use super::http::{MAX_FORM_BYTES, routes_with_limit};
use super::*;
use ::http::{Request, Response, StatusCode};
use axum::body::{Body, to_bytes};
use http_body_util::BodyExt;
use parking_lot::{Mutex, RwLock};
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::Duration;
use tower::ServiceExt;

/// 2026-01-01T00:00:00Z
const NOW: i64 = 1_767_225_600_000_000_000;
const SEC: i64 = 1_000_000_000;
const CLUSTER: u64 = 0xd1cf_af99_9eb9_7a2a;
const SELF_ID: u64 = 0xbdae_9bbc_11dd_390d;

struct TestBackend {
    store: RwLock<V2Store>,
    raft_index: AtomicU64,
    now: AtomicI64,
    members: Mutex<Vec<V2Member>>,
    removed: Mutex<Vec<u64>>,
    leader: Mutex<Option<u64>>,
    next_id: AtomicU64,
    /// When set, proposals fail like a raft timeout.
    fail_proposals: Mutex<bool>,
    /// Use the wall clock instead of `now` (the manual etcdctl check).
    wall_clock: bool,
}

impl TestBackend {
    fn new() -> Arc<Self> {
        Arc::new(TestBackend {
            store: RwLock::new(V2Store::new()),
            raft_index: AtomicU64::new(4),
            now: AtomicI64::new(NOW),
            members: Mutex::new(vec![V2Member {
                id: SELF_ID,
                name: "e1".into(),
                peer_urls: vec!["http://127.0.0.1:23801".into()],
                client_urls: vec!["http://127.0.0.1:23791".into()],
            }]),
            removed: Mutex::new(Vec::new()),
            leader: Mutex::new(Some(SELF_ID)),
            next_id: AtomicU64::new(0x1000),
            fail_proposals: Mutex::new(false),
            wall_clock: false,
        })
    }

    fn member(&self, id: u64) -> Option<V2Member> {
        self.members.lock().iter().find(|m| m.id == id).cloned()
    }

    fn url_taken(&self, urls: &[String], except: u64) -> bool {
        self.members
            .lock()
            .iter()
            .any(|m| m.id != except && m.peer_urls.iter().any(|u| urls.contains(u)))
    }
}

#[async_trait::async_trait]
impl V2Backend for TestBackend {
    async fn propose(&self, req: V2Request) -> Result<V2Applied, V2Error> {
        if *self.fail_proposals.lock() {
            return Err(V2Error::raft_internal("etcdserver: request timed out"));
        }
        // Through the wire format, as raft would carry it.
        let wire = serde_json::to_vec(&req).map_err(|e| V2Error::raft_internal(e.to_string()))?;
        let req: V2Request =
            serde_json::from_slice(&wire).map_err(|e| V2Error::raft_internal(e.to_string()))?;
        let raft_index = self.raft_index.fetch_add(1, Ordering::SeqCst) + 1;
        let out = self.store.write().apply(&req)?;
        Ok(V2Applied {
            event: out
                .event
                .ok_or_else(|| V2Error::raft_internal("no event"))?,
            raft_index,
            raft_term: 2,
        })
    }
    fn store(&self) -> &RwLock<V2Store> {
        &self.store
    }
    fn raft_index_term(&self) -> (u64, u64) {
        (self.raft_index.load(Ordering::SeqCst), 2)
    }
    fn cluster_id(&self) -> u64 {
        CLUSTER
    }
    fn now_unix_nanos(&self) -> i64 {
        if self.wall_clock {
            return std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos() as i64);
        }
        self.now.load(Ordering::SeqCst)
    }
    fn members(&self) -> Vec<V2Member> {
        self.members.lock().clone()
    }
    fn leader(&self) -> Option<V2Member> {
        let id = (*self.leader.lock())?;
        self.member(id)
    }
    async fn add_member(&self, peer_urls: Vec<String>) -> Result<V2Member, MemberError> {
        if self.url_taken(&peer_urls, 0) {
            return Err(MemberError::PeerUrlExists);
        }
        let m = V2Member {
            id: self.next_id.fetch_add(1, Ordering::SeqCst),
            name: String::new(),
            peer_urls,
            client_urls: Vec::new(),
        };
        self.members.lock().push(m.clone());
        Ok(m)
    }
    async fn remove_member(&self, id: u64) -> Result<(), MemberError> {
        if self.removed.lock().contains(&id) {
            return Err(MemberError::Removed);
        }
        let mut ms = self.members.lock();
        let before = ms.len();
        ms.retain(|m| m.id != id);
        if ms.len() == before {
            return Err(MemberError::NotFound);
        }
        self.removed.lock().push(id);
        Ok(())
    }
    async fn update_member(&self, id: u64, peer_urls: Vec<String>) -> Result<(), MemberError> {
        if self.member(id).is_none() {
            return Err(MemberError::NotFound);
        }
        if self.url_taken(&peer_urls, id) {
            return Err(MemberError::PeerUrlExists);
        }
        for m in self.members.lock().iter_mut().filter(|m| m.id == id) {
            m.peer_urls = peer_urls.clone();
        }
        Ok(())
    }
    fn self_stats(&self) -> V2SelfStats {
        V2SelfStats {
            name: "e1".into(),
            id: format!("{SELF_ID:x}"),
            state: "StateLeader".into(),
            start_time: format_rfc3339_nanos(NOW),
            leader_info: V2LeaderInfo {
                leader: format!("{SELF_ID:x}"),
                uptime: format_go_duration(Duration::from_nanos(6_366_001_197)),
                start_time: format_rfc3339_nanos(NOW + SEC),
            },
            recv_append_request_cnt: 0,
            recv_pkg_rate: 0.0,
            recv_bandwidth_rate: 0.0,
            send_append_request_cnt: 7,
            send_pkg_rate: 1.5,
            send_bandwidth_rate: 298.25,
        }
    }
    fn leader_stats(&self) -> Option<V2LeaderStats> {
        if *self.leader.lock() != Some(SELF_ID) {
            return None;
        }
        let mut followers = std::collections::BTreeMap::new();
        followers.insert(
            "aba1fe252252386b".to_string(),
            V2FollowerStats {
                latency: V2LatencyStats {
                    current: 0.5,
                    average: 0.25,
                    standard_deviation: 0.125,
                    minimum: 0.1,
                    maximum: 2.0,
                },
                counts: V2CountsStats {
                    fail: 1,
                    success: 9,
                },
            },
        );
        Some(V2LeaderStats {
            leader: format!("{SELF_ID:x}"),
            followers,
        })
    }
}

fn router(b: &Arc<TestBackend>) -> axum::Router {
    routes_with_limit(b.clone(), 64)
}

fn request(method: &str, target: &str, body: Option<(&str, &str)>) -> Request<Body> {
    let mut r = Request::builder().method(method).uri(target);
    let body = match body {
        Some((ctype, b)) => {
            r = r.header("content-type", ctype);
            Body::from(b.to_string())
        }
        None => Body::empty(),
    };
    r.body(body).unwrap()
}

const FORM: &str = "application/x-www-form-urlencoded";

async fn send(app: &axum::Router, req: Request<Body>) -> (Response<Body>, String) {
    let resp = app.clone().oneshot(req).await.unwrap();
    let (parts, body) = resp.into_parts();
    let bytes = to_bytes(body, usize::MAX).await.unwrap();
    (
        Response::from_parts(parts, Body::empty()),
        String::from_utf8(bytes.to_vec()).unwrap(),
    )
}

async fn call(
    app: &axum::Router,
    method: &str,
    target: &str,
    form: Option<&str>,
) -> (Response<Body>, String) {
    send(app, request(method, target, form.map(|f| (FORM, f)))).await
}

fn header<'a>(r: &'a Response<Body>, name: &str) -> Option<&'a str> {
    r.headers().get(name).map(|v| v.to_str().unwrap())
}

// ------------------------------------------------------------ golden replay

/// Replaces every `"expiration":"…"` value: the recorded ones are etcd's
/// wall clock.
fn mask_expirations(s: &str) -> String {
    let mut out = String::new();
    let mut rest = s;
    let pat = "\"expiration\":\"";
    while let Some(i) = rest.find(pat) {
        out.push_str(&rest[..i + pat.len()]);
        rest = &rest[i + pat.len()..];
        let end = rest.find('"').unwrap_or(rest.len());
        out.push('T');
        rest = &rest[end..];
    }
    out.push_str(rest);
    out
}

/// Sorts every `nodes` array by key (etcd lists unsorted directories in Go
/// map order).
fn sort_nodes(v: &mut serde_json::Value) {
    match v {
        serde_json::Value::Object(m) => {
            if let Some(serde_json::Value::Array(a)) = m.get_mut("nodes") {
                a.sort_by(|x, y| x["key"].as_str().cmp(&y["key"].as_str()));
            }
            m.values_mut().for_each(sort_nodes);
        }
        serde_json::Value::Array(a) => a.iter_mut().for_each(sort_nodes),
        _ => {}
    }
}

#[tokio::test]
async fn golden_responses_from_etcd_3_4() {
    let b = TestBackend::new();
    // A fresh etcd's v2 index is 3 after boot (its own membership writes).
    b.store.write().load(Vec::new(), 3).unwrap();
    let app = router(&b);
    let golden = include_str!("testdata/golden.jsonl");
    let mut checked = 0;
    for line in golden.lines() {
        let case: serde_json::Value = serde_json::from_str(line).unwrap();
        let method = case["method"].as_str().unwrap();
        let target = case["target"].as_str().unwrap();
        let what = format!("{method} {target} {}", case["req_body"]);
        let mut req = Request::builder().method(method).uri(target);
        if let Some(ct) = case["req_content_type"].as_str() {
            req = req.header("content-type", ct);
        }
        let body = case["req_body"].as_str().unwrap_or("").to_string();
        let (resp, got) = send(&app, req.body(Body::from(body)).unwrap()).await;
        assert_eq!(
            resp.status().as_u16() as u64,
            case["status"].as_u64().unwrap(),
            "{what}: {got}"
        );
        let want_headers = case["headers"].as_object().unwrap();
        for name in [
            "content-type",
            "x-etcd-index",
            "x-etcd-cluster-id",
            "allow",
            "location",
            "x-content-type-options",
        ] {
            assert_eq!(
                header(&resp, name),
                want_headers.get(name).and_then(|v| v.as_str()),
                "{what}: header {name}"
            );
        }
        if method == "HEAD" {
            // The server drops a HEAD body; the announced length must match.
            let len = header(&resp, "content-length")
                .map(str::to_string)
                .unwrap_or_else(|| got.len().to_string());
            assert_eq!(
                Some(len.as_str()),
                want_headers["content-length"].as_str(),
                "{what}"
            );
            checked += 1;
            continue;
        }
        if case["loose"].as_bool() == Some(true) {
            checked += 1;
            continue;
        }
        let want = mask_expirations(case["body"].as_str().unwrap());
        let got = mask_expirations(&got);
        if want.contains("\"nodes\"") && !target.contains("sorted=true") {
            let mut w: serde_json::Value = serde_json::from_str(&want).unwrap();
            let mut g: serde_json::Value = serde_json::from_str(&got).unwrap();
            sort_nodes(&mut w);
            sort_nodes(&mut g);
            assert_eq!(g, w, "{what}");
            assert!(got.ends_with('\n'));
        } else {
            assert_eq!(got, want, "{what}");
        }
        checked += 1;
    }
    assert_eq!(checked, golden.lines().count());
    assert!(checked > 130);
}

// ------------------------------------------------------------ keys

#[tokio::test]
async fn write_headers_and_statuses() {
    let b = TestBackend::new();
    let app = router(&b);
    let (r, body) = call(&app, "PUT", "/v2/keys/message", Some("value=Hello+world")).await;
    assert_eq!(r.status(), StatusCode::CREATED);
    assert_eq!(
        body,
        "{\"action\":\"set\",\"node\":{\"key\":\"/message\",\"value\":\"Hello world\",\"modifiedIndex\":1,\"createdIndex\":1}}\n"
    );
    assert_eq!(header(&r, "content-type"), Some("application/json"));
    assert_eq!(header(&r, "x-etcd-index"), Some("1"));
    assert_eq!(header(&r, "x-etcd-cluster-id"), Some("d1cfaf999eb97a2a"));
    assert_eq!(header(&r, "x-raft-index"), Some("5"));
    assert_eq!(header(&r, "x-raft-term"), Some("2"));
    let (r, _) = call(&app, "PUT", "/v2/keys/message", Some("value=again")).await;
    assert_eq!(r.status(), StatusCode::OK);
    // Reads report the current raft position; errors carry no raft headers.
    let (r, _) = call(&app, "GET", "/v2/keys/message", None).await;
    assert_eq!(header(&r, "x-raft-index"), Some("6"));
    let (r, body) = call(&app, "GET", "/v2/keys/missing", None).await;
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    assert_eq!(header(&r, "x-etcd-index"), Some("2"));
    assert_eq!(header(&r, "x-raft-index"), None);
    assert!(body.ends_with("\"index\":2}\n"));
    // A quorum read goes through propose.
    let (r, body) = call(&app, "GET", "/v2/keys/message?quorum=true&wait=true", None).await;
    assert_eq!(r.status(), StatusCode::OK);
    assert!(body.starts_with("{\"action\":\"get\""));
    assert_eq!(header(&r, "x-raft-index"), Some("7"));
    // mk / mkdir / in-order
    let (r, _) = call(&app, "PUT", "/v2/keys/mk?prevExist=false", Some("value=1")).await;
    assert_eq!(r.status(), StatusCode::CREATED);
    let (r, body) = call(&app, "PUT", "/v2/keys/mk?prevExist=false", Some("value=1")).await;
    assert_eq!(r.status(), StatusCode::PRECONDITION_FAILED);
    assert!(body.contains("\"errorCode\":105"));
    let (r, body) = call(&app, "PUT", "/v2/keys/d?dir=true&prevExist=false", None).await;
    assert_eq!(r.status(), StatusCode::CREATED);
    assert!(body.contains("\"dir\":true"));
    let (r, body) = call(&app, "POST", "/v2/keys/d", Some("value=job")).await;
    assert_eq!(r.status(), StatusCode::CREATED);
    assert!(body.contains("\"key\":\"/d/00000000000000000005\""));
    // rm with prevNode, rmdir
    let (r, body) = call(&app, "DELETE", "/v2/keys/mk", None).await;
    assert_eq!(r.status(), StatusCode::OK);
    assert!(body.contains("\"prevNode\":{\"key\":\"/mk\",\"value\":\"1\""));
    let (r, _) = call(&app, "DELETE", "/v2/keys/d?dir=true", None).await;
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    let (r, _) = call(&app, "DELETE", "/v2/keys/d?dir=true&recursive=true", None).await;
    assert_eq!(r.status(), StatusCode::OK);
    // A replication failure is a 300 with a 500.
    *b.fail_proposals.lock() = true;
    let (r, body) = call(&app, "PUT", "/v2/keys/x", Some("value=1")).await;
    assert_eq!(r.status(), StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(
        body,
        "{\"errorCode\":300,\"message\":\"Raft Internal Error\",\"cause\":\"etcdserver: request timed out\",\"index\":0}\n"
    );
    assert_eq!(header(&r, "x-etcd-index"), Some("0"));
}

#[tokio::test]
async fn ttl_is_computed_by_the_proposer() {
    let b = TestBackend::new();
    let app = router(&b);
    let (r, body) = call(&app, "PUT", "/v2/keys/t", Some("value=a&ttl=5")).await;
    assert_eq!(r.status(), StatusCode::CREATED);
    assert!(
        body.contains("\"expiration\":\"2026-01-01T00:00:05Z\",\"ttl\":5,"),
        "{body}"
    );
    b.now.store(NOW + 2 * SEC + 1, Ordering::SeqCst);
    let (_, body) = call(&app, "GET", "/v2/keys/t", None).await;
    assert!(body.contains("\"ttl\":3,"), "{body}");
    // Expiry happens only when a sync is applied.
    b.now.store(NOW + 6 * SEC, Ordering::SeqCst);
    let (r, _) = call(&app, "GET", "/v2/keys/t", None).await;
    assert_eq!(r.status(), StatusCode::OK);
    b.store
        .write()
        .apply(&V2Request::new(V2Op::Sync, "", NOW + 6 * SEC))
        .unwrap();
    let (r, _) = call(&app, "GET", "/v2/keys/t", None).await;
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    // Overflowing TTLs: the biggest u64 wraps like Go's and lands before
    // 2000, so the key is permanent; no panic anywhere.
    for ttl in ["18446744073709551615", "9223372036854775807", "9999999999"] {
        let (r, body) = call(
            &app,
            "PUT",
            "/v2/keys/huge",
            Some(&format!("value=x&ttl={ttl}")),
        )
        .await;
        assert!(r.status().is_success(), "{ttl}: {body}");
    }
    let (r, body) = call(
        &app,
        "PUT",
        "/v2/keys/huge",
        Some("value=x&ttl=18446744073709551616"),
    )
    .await;
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    assert!(body.contains("\"errorCode\":202"));
}

#[tokio::test]
async fn bad_input_never_panics() {
    let b = TestBackend::new();
    let app = router(&b);
    let deep = "/a".repeat(2000);
    let cases = [
        ("PUT", format!("/v2/keys{deep}"), Some("value=1")),
        ("GET", format!("/v2/keys{deep}?recursive=true"), None),
        ("GET", format!("/v2/keys{deep}?wait=true"), None),
        ("PUT", "/v2/keys/%FF%FE".to_string(), Some("value=%FF")),
        (
            "PUT",
            "/v2/keys/x?prevIndex=-1".to_string(),
            Some("value=1"),
        ),
        (
            "PUT",
            "/v2/keys/x?prevIndex=99999999999999999999".to_string(),
            Some("value=1"),
        ),
        ("GET", "/v2/keys/x?waitIndex=%".to_string(), None),
        ("DELETE", "/v2/keys/x?recursive=maybe".to_string(), None),
        ("POST", "/v2/keys/x?ttl=1e3".to_string(), None),
        ("GET", "/v2/keys/%zz".to_string(), None),
    ];
    for (m, t, f) in cases {
        let (r, body) = call(&app, m, &t, f).await;
        assert!(
            r.status().is_client_error() || r.status().is_success(),
            "{m} {t}: {} {body}",
            r.status()
        );
    }
    let (r, body) = call(&app, "PUT", &format!("/v2/keys{deep}"), Some("value=1")).await;
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    assert!(body.contains("\"errorCode\":209"));
    let (r, _) = call(&app, "GET", "/v2/keys/%zz", None).await;
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    // Over Go's form limit: 210 "http: POST too large".
    let big = format!("value={}", "v".repeat(MAX_FORM_BYTES));
    let (r, body) = call(&app, "PUT", "/v2/keys/big", Some(&big)).await;
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    assert_eq!(
        body,
        "{\"errorCode\":210,\"message\":\"Invalid POST form\",\"cause\":\"http: POST too large\",\"index\":0}\n"
    );
}

#[tokio::test]
async fn head_requests_have_no_body() {
    let b = TestBackend::new();
    let app = router(&b);
    call(&app, "PUT", "/v2/keys/h", Some("value=1")).await;
    let (r, body) = call(&app, "HEAD", "/v2/keys/h", None).await;
    assert_eq!(r.status(), StatusCode::OK);
    assert!(body.is_empty());
    assert_eq!(header(&r, "content-length"), Some("84"));
    let (r, body) = call(&app, "HEAD", "/v2/keys/none", None).await;
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    assert!(body.is_empty());
    let (r, body) = call(&app, "HEAD", "/v2/machines", None).await;
    assert_eq!((r.status(), body.as_str()), (StatusCode::OK, ""));
    assert_eq!(header(&r, "content-length"), Some("22"));
}

// ------------------------------------------------------------ watches

#[tokio::test]
async fn long_poll_gets_exactly_one_event() {
    let b = TestBackend::new();
    let app = router(&b);
    call(&app, "PUT", "/v2/keys/w", Some("value=0")).await;
    let resp = app
        .clone()
        .oneshot(request("GET", "/v2/keys/w?wait=true", None))
        .await
        .unwrap();
    // Status and headers come at once, before any event.
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(header(&resp, "x-etcd-index"), Some("1"));
    assert_eq!(header(&resp, "content-type"), Some("application/json"));
    assert!(header(&resp, "x-raft-index").is_some());
    assert_eq!(b.store.read().watcher_count(), 1);
    let body = tokio::spawn(to_bytes(resp.into_body(), usize::MAX));
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert!(!body.is_finished());
    call(&app, "PUT", "/v2/keys/other", Some("value=x")).await;
    call(&app, "PUT", "/v2/keys/w", Some("value=1")).await;
    call(&app, "PUT", "/v2/keys/w", Some("value=2")).await;
    let body = tokio::time::timeout(Duration::from_secs(5), body)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(
        std::str::from_utf8(&body).unwrap(),
        "{\"action\":\"set\",\"node\":{\"key\":\"/w\",\"value\":\"1\",\"modifiedIndex\":3,\"createdIndex\":3},\"prevNode\":{\"key\":\"/w\",\"value\":\"0\",\"modifiedIndex\":1,\"createdIndex\":1}}\n"
    );
    assert_eq!(b.store.read().watcher_count(), 0);
    // etcdctl watch --after-index: waitIndex from the history, at once.
    let (r, body) = call(
        &app,
        "GET",
        "/v2/keys/w?recursive=false&wait=true&waitIndex=4",
        None,
    )
    .await;
    assert_eq!(header(&r, "x-etcd-index"), Some("4"));
    assert!(body.contains("\"value\":\"2\""));
}

#[tokio::test]
async fn stream_watch_and_recursive() {
    let b = TestBackend::new();
    let app = router(&b);
    let resp = app
        .clone()
        .oneshot(request(
            "GET",
            "/v2/keys/dir?wait=true&recursive=true&stream=true",
            None,
        ))
        .await
        .unwrap();
    let mut body = resp.into_body();
    for i in 0..3 {
        call(&app, "PUT", &format!("/v2/keys/dir/k{i}"), Some("value=v")).await;
        let frame = tokio::time::timeout(Duration::from_secs(5), body.frame())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        let chunk = frame.into_data().unwrap();
        let text = std::str::from_utf8(&chunk).unwrap();
        assert!(text.contains(&format!("\"key\":\"/dir/k{i}\"")), "{text}");
        assert!(text.ends_with('\n'));
    }
    assert_eq!(b.store.read().watcher_count(), 1);
    // The client goes away: the watcher goes with it.
    drop(body);
    assert_eq!(b.store.read().watcher_count(), 0);
    assert!(b.store.read().stats_json().ends_with("\"watchers\":0}"));
}

#[tokio::test]
async fn watch_errors_and_disconnects() {
    let b = TestBackend::new();
    let app = routes_with_limit(b.clone(), 1);
    for i in 0..1005 {
        b.store
            .write()
            .apply(&{
                let mut r = V2Request::new(V2Op::Set, "/loop", NOW);
                r.value = i.to_string();
                r
            })
            .unwrap();
    }
    let (r, body) = call(&app, "GET", "/v2/keys/loop?wait=true&waitIndex=5", None).await;
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    assert_eq!(header(&r, "x-etcd-index"), Some("1005"));
    assert_eq!(
        body,
        "{\"errorCode\":401,\"message\":\"The event in requested index is outdated and cleared\",\"cause\":\"the requested history has been cleared [6/5]\",\"index\":1005}\n"
    );
    // One long poll allowed: the second gets 503 until the first is gone.
    let first = app
        .clone()
        .oneshot(request("GET", "/v2/keys/loop?wait=true", None))
        .await
        .unwrap();
    assert_eq!(first.status(), StatusCode::OK);
    let (r, body) = call(&app, "GET", "/v2/keys/loop?wait=true", None).await;
    assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(body.contains("\"errorCode\":300"), "{body}");
    assert_eq!(header(&r, "x-etcd-index"), Some("1005"));
    drop(first);
    assert_eq!(b.store.read().watcher_count(), 0);
    let second = app
        .clone()
        .oneshot(request("GET", "/v2/keys/loop?wait=true", None))
        .await
        .unwrap();
    assert_eq!(second.status(), StatusCode::OK);
    assert_eq!(b.store.read().watcher_count(), 1);
    // A watcher dropped by the store (reload) ends its response, empty.
    let body = tokio::spawn(to_bytes(second.into_body(), usize::MAX));
    let records = b.store.read().records();
    b.store.write().load(records, 1005).unwrap();
    let body = tokio::time::timeout(Duration::from_secs(5), body)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert!(body.is_empty());
}

#[tokio::test]
async fn served_over_tcp_with_disconnect_detection() {
    let b = TestBackend::new();
    let app = router(&b);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(async move { axum::serve(listener, app).await });
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut conn = tokio::net::TcpStream::connect(addr).await.unwrap();
    conn.write_all(b"GET /v2/keys/tcp?wait=true HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    // The header block arrives before any event.
    let mut buf = vec![0u8; 4096];
    let n = tokio::time::timeout(Duration::from_secs(5), conn.read(&mut buf))
        .await
        .unwrap()
        .unwrap();
    let head = String::from_utf8_lossy(&buf[..n]).to_lowercase();
    assert!(head.starts_with("http/1.1 200 ok"), "{head}");
    assert!(head.contains("x-etcd-index: 0"), "{head}");
    assert_eq!(b.store.read().watcher_count(), 1);
    // The client hangs up while waiting: the server notices and unregisters.
    drop(conn);
    let mut gone = false;
    for _ in 0..100 {
        if b.store.read().watcher_count() == 0 {
            gone = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(gone, "watcher of a closed connection still registered");
    server.abort();
}

// ------------------------------------------------------------ members

async fn json_call(
    app: &axum::Router,
    method: &str,
    target: &str,
    json: &str,
) -> (Response<Body>, String) {
    send(
        app,
        request(method, target, Some(("application/json", json))),
    )
    .await
}

#[tokio::test]
async fn members_api() {
    let b = TestBackend::new();
    let app = router(&b);
    let (r, body) = json_call(
        &app,
        "POST",
        "/v2/members",
        r#"{"peerURLs":["http://10.0.0.2:2380"," http://10.0.0.1:2380"]}"#,
    )
    .await;
    assert_eq!(r.status(), StatusCode::CREATED);
    assert_eq!(header(&r, "x-etcd-cluster-id"), Some("d1cfaf999eb97a2a"));
    assert_eq!(
        body,
        "{\"id\":\"1000\",\"name\":\"\",\"peerURLs\":[\"http://10.0.0.1:2380\",\"http://10.0.0.2:2380\"],\"clientURLs\":[]}\n"
    );
    // Listed by id.
    let (_, body) = call(&app, "GET", "/v2/members", None).await;
    assert!(body.starts_with("{\"members\":[{\"id\":\"1000\""), "{body}");
    // Go's case-insensitive field match.
    let (r, _) = json_call(
        &app,
        "POST",
        "/v2/members",
        r#"{"peerurls":["http://10.0.0.3:2380"]}"#,
    )
    .await;
    assert_eq!(r.status(), StatusCode::CREATED);
    let (r, body) = json_call(
        &app,
        "POST",
        "/v2/members",
        r#"{"peerURLs":["http://10.0.0.1:2380"]}"#,
    )
    .await;
    assert_eq!(
        (r.status(), body.as_str()),
        (
            StatusCode::CONFLICT,
            "{\"message\":\"membership: peerURL exists\"}"
        )
    );
    let (r, _) = json_call(&app, "POST", "/v2/members", r#"{"peerURLs":[1]}"#).await;
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    let (r, _) = json_call(&app, "POST", "/v2/members", "[]").await;
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    // update
    let (r, body) = json_call(
        &app,
        "PUT",
        "/v2/members/1000",
        r#"{"peerURLs":["http://10.0.0.9:2380"]}"#,
    )
    .await;
    assert_eq!((r.status(), body.as_str()), (StatusCode::NO_CONTENT, ""));
    let (r, _) = json_call(
        &app,
        "PUT",
        "/v2/members/1000",
        r#"{"peerURLs":["http://127.0.0.1:23801"]}"#,
    )
    .await;
    assert_eq!(r.status(), StatusCode::CONFLICT);
    // remove, then again: 410
    let (r, _) = call(&app, "DELETE", "/v2/members/1000", None).await;
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    let (r, body) = call(&app, "DELETE", "/v2/members/0001000", None).await;
    assert_eq!(
        (r.status(), body.as_str()),
        (
            StatusCode::GONE,
            "{\"message\":\"Member permanently removed: 1000\"}"
        )
    );
    let (r, body) = call(&app, "DELETE", "/v2/members/abcd", None).await;
    assert_eq!(
        (r.status(), body.as_str()),
        (
            StatusCode::NOT_FOUND,
            "{\"message\":\"No such member: abcd\"}"
        )
    );
    // leader
    let (r, body) = call(&app, "GET", "/v2/members/leader", None).await;
    assert_eq!(r.status(), StatusCode::OK);
    assert!(body.starts_with("{\"id\":\"bdae9bbc11dd390d\",\"name\":\"e1\""));
    *b.leader.lock() = None;
    let (r, body) = call(&app, "GET", "/v2/members/leader", None).await;
    assert_eq!(
        (r.status(), body.as_str()),
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "{\"message\":\"During election\"}"
        )
    );
    assert_eq!(header(&r, "content-type"), Some("application/json"));
    // Oversized bodies are refused, not buffered.
    let huge = format!("{{\"peerURLs\":[\"{}\"]}}", "h".repeat(2 << 20));
    let (r, _) = json_call(&app, "POST", "/v2/members", &huge).await;
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn machines_and_stats() {
    let b = TestBackend::new();
    let app = router(&b);
    b.members.lock().push(V2Member {
        id: 1,
        name: "e0".into(),
        peer_urls: vec!["http://p:1".into()],
        client_urls: vec!["http://a:2379".into(), "http://z:2379".into()],
    });
    let (r, body) = call(&app, "GET", "/v2/machines", None).await;
    assert_eq!(body, "http://127.0.0.1:23791, http://a:2379, http://z:2379");
    assert_eq!(
        header(&r, "content-type"),
        Some("text/plain; charset=utf-8")
    );
    let (r, body) = call(&app, "GET", "/v2/stats/self", None).await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(
        body,
        "{\"name\":\"e1\",\"id\":\"bdae9bbc11dd390d\",\"state\":\"StateLeader\",\"startTime\":\"2026-01-01T00:00:00Z\",\"leaderInfo\":{\"leader\":\"bdae9bbc11dd390d\",\"uptime\":\"6.366001197s\",\"startTime\":\"2026-01-01T00:00:01Z\"},\"recvAppendRequestCnt\":0,\"sendAppendRequestCnt\":7,\"sendPkgRate\":1.5,\"sendBandwidthRate\":298.25}"
    );
    let (r, body) = call(&app, "GET", "/v2/stats/leader", None).await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(
        body,
        "{\"leader\":\"bdae9bbc11dd390d\",\"followers\":{\"aba1fe252252386b\":{\"latency\":{\"current\":0.5,\"average\":0.25,\"standardDeviation\":0.125,\"minimum\":0.1,\"maximum\":2.0},\"counts\":{\"fail\":1,\"success\":9}}}}"
    );
    *b.leader.lock() = Some(1);
    let (r, body) = call(&app, "GET", "/v2/stats/leader", None).await;
    assert_eq!(
        (r.status(), body.as_str()),
        (
            StatusCode::FORBIDDEN,
            "{\"message\":\"not current leader\"}"
        )
    );
    call(&app, "PUT", "/v2/keys/s", Some("value=1")).await;
    call(&app, "GET", "/v2/keys/s", None).await;
    call(&app, "GET", "/v2/keys/nope", None).await;
    let (r, body) = call(&app, "GET", "/v2/stats/store", None).await;
    assert_eq!(header(&r, "content-type"), Some("application/json"));
    assert_eq!(
        body,
        "{\"getsSuccess\":1,\"getsFail\":1,\"setsSuccess\":1,\"setsFail\":0,\"deleteSuccess\":0,\"deleteFail\":0,\"updateSuccess\":0,\"updateFail\":0,\"createSuccess\":0,\"createFail\":0,\"compareAndSwapSuccess\":0,\"compareAndSwapFail\":0,\"compareAndDeleteSuccess\":0,\"compareAndDeleteFail\":0,\"expireCount\":0,\"watchers\":0}"
    );
}

/// Serves the v2 API on `CAIRN_V2_ADDR` (e.g. 127.0.0.1:23790) for
/// `CAIRN_V2_SECS` seconds, with a leader-style sync loop, so that
/// `ETCDCTL_API=2 etcdctl --endpoints http://<addr>` can be run against it
/// by hand: `cargo test -p cairn --lib v2::http_tests::serve_for_etcdctl
/// -- --ignored --nocapture`.
#[tokio::test]
#[ignore]
async fn serve_for_etcdctl() {
    let addr = std::env::var("CAIRN_V2_ADDR").unwrap_or_else(|_| "127.0.0.1:23790".into());
    let secs: u64 = std::env::var("CAIRN_V2_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(60);
    let mut b = TestBackend::new();
    {
        let b = Arc::get_mut(&mut b).unwrap();
        b.wall_clock = true;
        b.members.get_mut()[0].client_urls = vec![format!("http://{addr}")];
    }
    // A fresh etcd's v2 index is 3; start there to compare transcripts.
    if let Some(i) = std::env::var("CAIRN_V2_START_INDEX")
        .ok()
        .and_then(|s| s.parse().ok())
    {
        b.store.write().load(Vec::new(), i).unwrap();
    }
    let syncer = b.clone();
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(Duration::from_millis(500)).await;
            if syncer.store.read().has_ttl_keys() {
                let now = syncer.now_unix_nanos();
                let _ = syncer
                    .store
                    .write()
                    .apply(&V2Request::new(V2Op::Sync, "", now));
            }
        }
    });
    let listener = tokio::net::TcpListener::bind(&addr).await.unwrap();
    println!("serving v2 on http://{addr} for {secs}s");
    let app = router(&b);
    let _ = tokio::time::timeout(Duration::from_secs(secs), axum::serve(listener, app)).await;
}
