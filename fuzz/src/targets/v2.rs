//! The v2 HTTP API (`v2/http.rs` forms, paths and members bodies; `v2/store.rs`
//! keys), end to end through its axum routes against an in-memory backend
//! that applies proposals to its own store.
//!
//! Input: requests separated by NUL bytes; each is a method byte, a byte of
//! flags (content type, path prefix), then `path[?query]`, a `\n`, and the
//! body. Checks after every request: the status is one etcd's v2 API uses;
//! a JSON response parses as JSON; and the store survives its own
//! persistence (records → load → the same records). A long poll (`wait`)
//! nothing wakes is given up after [`LONG_POLL`].

use super::{Cursor, MIB};
use crate::engine::{Outcome, Target, feature, with_count};
use cairn::v2::http::routes_with_limit;
use cairn::v2::{
    MemberError, V2Applied, V2Backend, V2Error, V2LeaderStats, V2Member, V2Request, V2SelfStats,
    V2Store,
};
use http_body_util::BodyExt as _;
use parking_lot::{Mutex, RwLock};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tower::ServiceExt as _;

pub const TARGET: Target = Target {
    name: "v2-http",
    about: "v2 keys/members/stats requests through the real routes; store persistence round trip",
    run,
    dict: &[
        b"\x00",
        b"\n",
        b"?",
        b"&",
        b"=",
        b"%",
        b"%2F",
        b"%00",
        b"%zz",
        b"+",
        b"/",
        b"//",
        b"/./",
        b"/../",
        b"value=",
        b"ttl=",
        b"ttl=-1",
        b"ttl=18446744073709551616",
        b"dir=true",
        b"prevExist=false",
        b"prevExist=true",
        b"prevValue=",
        b"prevIndex=",
        b"recursive=true",
        b"sorted=true",
        b"wait=true",
        b"waitIndex=",
        b"quorum=true",
        b"refresh=true",
        b"noValueOnSuccess=true",
        b"stream=true",
        b"_hidden",
        b"{\"peerURLs\":[\"http://127.0.0.1:2380\"]}",
        b"{\"peerURLs\":",
        b"unix://a:1",
        b"/v2/keys",
        b"/v2/members",
        b"/v2/machines",
        b"/v2/stats/self",
        b"/v2/stats/leader",
        b"/v2/stats/store",
    ],
    max_len: 4096,
    heap_budget_bytes: 32 * MIB,
};

/// How long a request that has not answered (a long poll) is waited for.
const LONG_POLL: Duration = Duration::from_millis(5);

const NOW: i64 = 1_767_225_600_000_000_000;
const SELF_ID: u64 = 0xbdae_9bbc_11dd_390d;

/// Statuses etcd 3.4's v2 API answers with.
/// (301: Go's ServeMux redirects an unclean path to its clean form.)
const STATUSES: &[u16] = &[
    200, 201, 204, 301, 307, 400, 401, 403, 404, 405, 409, 412, 415, 500, 503,
];

struct Backend {
    store: RwLock<V2Store>,
    index: AtomicU64,
    members: Mutex<Vec<V2Member>>,
    next_id: AtomicU64,
}

#[async_trait::async_trait]
impl V2Backend for Backend {
    async fn propose(&self, req: V2Request) -> Result<V2Applied, V2Error> {
        // Through the wire encoding, as raft carries it.
        let wire = serde_json::to_vec(&req).map_err(|e| V2Error::raft_internal(e.to_string()))?;
        let req: V2Request =
            serde_json::from_slice(&wire).map_err(|e| V2Error::raft_internal(e.to_string()))?;
        let out = self.store.write().apply(&req)?;
        Ok(V2Applied {
            event: out
                .event
                .ok_or_else(|| V2Error::raft_internal("no event"))?,
            raft_index: self.index.fetch_add(1, Ordering::SeqCst) + 1,
            raft_term: 2,
        })
    }
    fn store(&self) -> &RwLock<V2Store> {
        &self.store
    }
    fn raft_index_term(&self) -> (u64, u64) {
        (self.index.load(Ordering::SeqCst), 2)
    }
    fn cluster_id(&self) -> u64 {
        0xd1cf_af99_9eb9_7a2a
    }
    fn now_unix_nanos(&self) -> i64 {
        NOW
    }
    fn members(&self) -> Vec<V2Member> {
        self.members.lock().clone()
    }
    fn leader(&self) -> Option<V2Member> {
        self.members
            .lock()
            .iter()
            .find(|m| m.id == SELF_ID)
            .cloned()
    }
    async fn add_member(&self, peer_urls: Vec<String>) -> Result<V2Member, MemberError> {
        let mut ms = self.members.lock();
        if ms
            .iter()
            .any(|m| m.peer_urls.iter().any(|u| peer_urls.contains(u)))
        {
            return Err(MemberError::PeerUrlExists);
        }
        let m = V2Member {
            id: self.next_id.fetch_add(1, Ordering::SeqCst),
            name: String::new(),
            peer_urls,
            client_urls: Vec::new(),
        };
        ms.push(m.clone());
        Ok(m)
    }
    async fn remove_member(&self, id: u64) -> Result<(), MemberError> {
        let mut ms = self.members.lock();
        let before = ms.len();
        ms.retain(|m| m.id != id);
        if ms.len() == before {
            return Err(MemberError::NotFound);
        }
        Ok(())
    }
    async fn update_member(&self, id: u64, peer_urls: Vec<String>) -> Result<(), MemberError> {
        let mut ms = self.members.lock();
        let m = ms
            .iter_mut()
            .find(|m| m.id == id)
            .ok_or(MemberError::NotFound)?;
        m.peer_urls = peer_urls;
        Ok(())
    }
    fn self_stats(&self) -> V2SelfStats {
        V2SelfStats {
            name: "m1".into(),
            id: format!("{SELF_ID:x}"),
            state: "StateLeader".into(),
            start_time: cairn::v2::format_rfc3339_nanos(NOW),
            leader_info: cairn::v2::V2LeaderInfo {
                leader: format!("{SELF_ID:x}"),
                uptime: "1s".into(),
                start_time: cairn::v2::format_rfc3339_nanos(NOW),
            },
            recv_append_request_cnt: 0,
            recv_pkg_rate: 0.0,
            recv_bandwidth_rate: 0.0,
            send_append_request_cnt: 0,
            send_pkg_rate: 0.0,
            send_bandwidth_rate: 0.0,
        }
    }
    fn leader_stats(&self) -> Option<V2LeaderStats> {
        Some(V2LeaderStats {
            leader: format!("{SELF_ID:x}"),
            followers: Default::default(),
        })
    }
}

fn runtime() -> &'static tokio::runtime::Runtime {
    static RT: std::sync::OnceLock<tokio::runtime::Runtime> = std::sync::OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .expect("a current-thread runtime")
    })
}

const METHODS: &[&str] = &["GET", "PUT", "POST", "DELETE", "HEAD", "OPTIONS", "PATCH"];
const PREFIXES: &[&str] = &[
    "/v2/keys",
    "/v2/members",
    "",
    "/v2/stats",
    "/v2/machines",
    "/v2/keys/",
];

fn run(data: &[u8]) -> Outcome {
    let backend = Arc::new(Backend {
        store: RwLock::new(V2Store::new()),
        index: AtomicU64::new(4),
        members: Mutex::new(vec![V2Member {
            id: SELF_ID,
            name: "m1".into(),
            peer_urls: vec!["http://127.0.0.1:2380".into()],
            client_urls: vec!["http://127.0.0.1:2379".into()],
        }]),
        next_id: AtomicU64::new(0x1000),
    });
    let app = routes_with_limit(backend.clone(), 4);
    let mut statuses = Vec::new();
    // At most 16 requests per input.
    for raw in data.split(|&b| b == 0).take(16) {
        let mut c = Cursor::new(raw);
        let method = METHODS[usize::from(c.byte()) % METHODS.len()];
        let flags = c.byte();
        let rest = c.rest();
        let (target, body) = match rest.iter().position(|&b| b == b'\n') {
            Some(i) => (&rest[..i], &rest[i + 1..]),
            None => (rest, &[][..]),
        };
        let prefix = PREFIXES[usize::from(flags & 7) % PREFIXES.len()];
        let uri = format!("{prefix}{}", String::from_utf8_lossy(target));
        let mut req = http::Request::builder().method(method).uri(uri.as_str());
        match flags >> 4 & 3 {
            0 => req = req.header("content-type", "application/x-www-form-urlencoded"),
            1 => req = req.header("content-type", "application/json"),
            2 => req = req.header("content-type", "text/plain; charset=utf-8"),
            _ => {}
        }
        // Not a request hyper would hand on (bad method or URI): skip.
        let Ok(req) = req.body(axum::body::Body::from(body.to_vec())) else {
            continue;
        };
        let app = app.clone();
        let answer = runtime().block_on(async move {
            let call = async {
                let resp = app.oneshot(req).await.map_err(|e| e.to_string())?;
                let status = resp.status().as_u16();
                let json = resp
                    .headers()
                    .get("content-type")
                    .is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
                // A stream (a `wait` without end) is read for a while only.
                let body = tokio::time::timeout(LONG_POLL, resp.into_body().collect())
                    .await
                    .ok()
                    .and_then(|r| r.ok())
                    .map(|c| c.to_bytes());
                Ok::<_, String>((status, json, body))
            };
            tokio::time::timeout(LONG_POLL, call).await
        });
        let Ok(answer) = answer else {
            // A long poll nothing woke: fine, and nothing to check.
            statuses.push(0);
            continue;
        };
        let (status, json, body) = answer?;
        if !STATUSES.contains(&status) {
            return Err(format!("unexpected status {status}: {method} {uri}"));
        }
        if let Some(body) = body
            && json
            && method != "HEAD"
            && !body.is_empty()
        {
            // A watch stream is one JSON value per event.
            for line in body.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
                serde_json::from_slice::<serde_json::Value>(line).map_err(|e| {
                    format!("a JSON answer does not parse: {method} {uri} ({status}): {e}")
                })?;
            }
        }
        statuses.push(status);
    }
    let store = backend.store.read();
    let records = store.records();
    let mut again = V2Store::new();
    again
        .load(records.clone(), store.index())
        .map_err(|e| format!("the store does not load its own records: {e:?}"))?;
    if again.records() != records {
        return Err("the store's records changed through a save and load".into());
    }
    // Features drop digits: spell the statuses in letters.
    let words: String = statuses
        .iter()
        .flat_map(|s| {
            [
                char::from(b'a' + (s / 100) as u8),
                char::from(b'a' + (s % 26) as u8),
            ]
        })
        .collect();
    Ok(with_count(feature(&[&words]), records.len()))
}
