//! The v2 HTTP API on the client port, with etcd 3.4's wire contract:
//! request parsing (Go's `ParseForm`: form body first, then the query),
//! validation order and error codes, status codes (201 for creates), the
//! `X-Etcd-*` / `X-Raft-*` headers, and long-poll watches.

use super::error::*;
use super::event::{V2Event, to_go_json};
use super::{MemberError, V2Backend, V2Member, V2Op, V2Request, V2Watcher};
use crate::net::gohttp::{self, clean_path, unescape};
use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};
use axum::routing::any;
use http::header::{ALLOW, CONTENT_LENGTH, CONTENT_TYPE};
use http::{HeaderMap, HeaderValue, Method, StatusCode};
use std::sync::Arc;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Largest form body read (Go's `ParseForm` limit; etcd inherits it).
pub const MAX_FORM_BYTES: usize = 10 << 20;
/// Largest `/v2/members` JSON body read.
pub const MAX_MEMBER_BODY_BYTES: usize = 1 << 20;
/// Long-poll watches one member keeps open at once. etcd has no limit; each
/// open watch holds a connection and a queue of up to 100 events, so past
/// this a new watch gets 503 (the v2 client then tries another member).
pub const MAX_LONG_POLLS: usize = 10_000;

const KEYS_PREFIX: &str = "/v2/keys";
const MEMBERS_PREFIX: &str = "/v2/members";
const JSON: &str = "application/json";

struct V2State {
    backend: Arc<dyn V2Backend>,
    long_polls: Arc<Semaphore>,
}

/// The v2 routes, to merge into the client router.
pub fn routes(backend: Arc<dyn V2Backend>) -> axum::Router {
    routes_with_limit(backend, MAX_LONG_POLLS)
}

/// `routes` with a different cap on concurrent long-poll watches.
pub fn routes_with_limit(backend: Arc<dyn V2Backend>, max_long_polls: usize) -> axum::Router {
    let state = Arc::new(V2State {
        backend,
        long_polls: Arc::new(Semaphore::new(max_long_polls)),
    });
    axum::Router::new()
        .route("/v2/keys", any(keys))
        .route("/v2/keys/", any(keys))
        .route("/v2/keys/{*rest}", any(keys))
        .route("/v2/members", any(members))
        .route("/v2/members/", any(members))
        .route("/v2/members/{*rest}", any(members))
        .route("/v2/machines", any(machines))
        .route("/v2/stats/store", any(stats_store))
        .route("/v2/stats/self", any(stats_self))
        .route("/v2/stats/leader", any(stats_leader))
        .with_state(state)
}

// ---------------------------------------------------------------- keys

async fn keys(State(st): State<Arc<V2State>>, req: Request) -> Response {
    let path = match decoded_path(&req) {
        Ok(p) => p,
        Err(resp) => return *resp,
    };
    if let Some(resp) = redirect_unclean(&path, &req) {
        return resp;
    }
    let method = req.method().clone();
    if !matches!(
        method,
        Method::HEAD | Method::GET | Method::PUT | Method::POST | Method::DELETE
    ) {
        return method_not_allowed("HEAD,GET,PUT,POST,DELETE");
    }
    let head = method == Method::HEAD;
    let cluster = cluster_header(st.backend.as_ref());
    let key = path[KEYS_PREFIX.len()..].to_string();
    let form = match read_form(req).await {
        Ok(f) => f,
        Err(cause) => {
            return error_response(&V2Error::request(INVALID_FORM, cause), &cluster, head);
        }
    };
    let kr = match parse_key_request(&method, &form) {
        Ok(kr) => kr,
        Err(e) => return error_response(&e, &cluster, head),
    };
    let backend = st.backend.as_ref();
    let now = backend.now_unix_nanos();

    // etcd turns `GET ?quorum=true` into a raft read before looking at
    // `wait`, so a quorum watch is a quorum get.
    if method == Method::GET && kr.quorum {
        let mut r = V2Request::new(V2Op::QGet, key, now);
        r.recursive = kr.recursive;
        r.sorted = kr.sorted;
        return match backend.propose(r).await {
            Ok(a) => event_response(&a.event, a.raft_index, a.raft_term, &cluster, false, head),
            Err(e) => error_response(&e, &cluster, head),
        };
    }
    if method == Method::GET && kr.wait {
        return watch(&st, &key, &kr, &cluster).await;
    }
    if method == Method::GET || head {
        let r = backend
            .store()
            .read()
            .get(&key, kr.recursive, kr.sorted, now);
        let (ri, rt) = backend.raft_index_term();
        return match r {
            Ok(ev) => event_response(&ev, ri, rt, &cluster, false, head),
            Err(e) => error_response(&e, &cluster, head),
        };
    }

    let conditional = kr.prev_index > 0 || !kr.prev_value.is_empty();
    let op = if method == Method::PUT {
        match kr.prev_exist {
            Some(true) if conditional => V2Op::CompareAndSwap,
            Some(true) => V2Op::Update,
            Some(false) => V2Op::Create,
            None if conditional => V2Op::CompareAndSwap,
            None => V2Op::Set,
        }
    } else if method == Method::POST {
        V2Op::CreateInOrder
    } else if conditional {
        V2Op::CompareAndDelete
    } else {
        V2Op::Delete
    };
    let mut r = V2Request::new(op, key, now);
    r.value = kr.value;
    r.dir = kr.dir;
    r.prev_value = kr.prev_value;
    r.prev_index = kr.prev_index;
    r.recursive = kr.recursive;
    r.refresh = kr.refresh;
    // Go: `clock.Now().Add(time.Duration(ttl) * time.Second).UnixNano()`,
    // all in wrapping int64; an overflow lands before 2000 and the store
    // then treats the key as permanent.
    r.expiration = kr
        .ttl
        .map(|ttl| now.wrapping_add((ttl as i64).wrapping_mul(1_000_000_000)));
    match backend.propose(r).await {
        Ok(a) => event_response(
            &a.event,
            a.raft_index,
            a.raft_term,
            &cluster,
            kr.no_value_on_success,
            false,
        ),
        Err(e) => error_response(&e, &cluster, false),
    }
}

async fn watch(st: &V2State, key: &str, kr: &KeyRequest, cluster: &HeaderValue) -> Response {
    let backend = st.backend.as_ref();
    let Ok(permit) = st.long_polls.clone().try_acquire_owned() else {
        let index = backend.store().read().index();
        let e = V2Error::new(RAFT_INTERNAL, "etcdserver: too many requests", index);
        let mut resp = error_response(&e, cluster, false);
        *resp.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
        return resp;
    };
    // The store lock is held only to scan the history and register.
    let watcher = backend
        .store()
        .read()
        .watch(key, kr.recursive, kr.stream, kr.wait_index);
    let watcher = match watcher {
        Ok(w) => w,
        Err(e) => return error_response(&e, cluster, false),
    };
    let (ri, rt) = backend.raft_index_term();
    let mut headers = HeaderMap::new();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static(JSON));
    headers.insert("x-etcd-cluster-id", cluster.clone());
    headers.insert("x-etcd-index", num(watcher.start_index()));
    headers.insert("x-raft-index", num(ri));
    headers.insert("x-raft-term", num(rt));
    // The status and headers go out at once; the body is the event(s).
    // When the client goes away the server drops the body, and with it the
    // watcher (unregistered) and the long-poll permit.
    let body = Body::from_stream(watch_stream(watcher, kr.stream, permit));
    (StatusCode::OK, headers, body).into_response()
}

fn watch_stream(
    watcher: V2Watcher,
    stream: bool,
    permit: OwnedSemaphorePermit,
) -> impl futures::Stream<Item = Result<Bytes, std::convert::Infallible>> + Send {
    futures::stream::unfold(Some((watcher, permit)), move |state| async move {
        let (mut watcher, permit) = state?;
        // `None`: the hub dropped us (queue full, store reloaded); the
        // response just ends, as etcd's does, and clients re-watch.
        let ev = watcher.next().await?;
        let chunk = Bytes::from(ev.to_body(false));
        let next = stream.then_some((watcher, permit));
        Some((Ok(chunk), next))
    })
}

/// The parameters of a keys request, parsed and checked in etcd's order.
#[derive(Debug, Default)]
struct KeyRequest {
    prev_index: u64,
    wait_index: u64,
    recursive: bool,
    sorted: bool,
    wait: bool,
    dir: bool,
    quorum: bool,
    stream: bool,
    prev_value: String,
    no_value_on_success: bool,
    ttl: Option<u64>,
    prev_exist: Option<bool>,
    refresh: bool,
    value: String,
}

fn parse_key_request(method: &Method, f: &Form) -> Result<KeyRequest, V2Error> {
    let bad_index =
        |name: &str| V2Error::request(INDEX_NAN, format!("invalid value for \"{name}\""));
    let bad_field =
        |name: &str| V2Error::request(INVALID_FIELD, format!("invalid value for \"{name}\""));
    let uint = |name: &str| f.first(name).map(parse_go_uint).unwrap_or(Some(0));
    let boolean = |name: &str| f.first(name).map(parse_go_bool).unwrap_or(Some(false));

    let mut r = KeyRequest {
        prev_index: uint("prevIndex").ok_or_else(|| bad_index("prevIndex"))?,
        wait_index: uint("waitIndex").ok_or_else(|| bad_index("waitIndex"))?,
        ..Default::default()
    };
    r.recursive = boolean("recursive").ok_or_else(|| bad_field("recursive"))?;
    r.sorted = boolean("sorted").ok_or_else(|| bad_field("sorted"))?;
    r.wait = boolean("wait").ok_or_else(|| bad_field("wait"))?;
    r.dir = boolean("dir").ok_or_else(|| bad_field("dir"))?;
    r.quorum = boolean("quorum").ok_or_else(|| bad_field("quorum"))?;
    r.stream = boolean("stream").ok_or_else(|| bad_field("stream"))?;
    if r.wait && method != Method::GET {
        return Err(V2Error::request(
            INVALID_FIELD,
            "\"wait\" can only be used with GET requests",
        ));
    }
    r.prev_value = f.value("prevValue").to_string();
    if f.has("prevValue") && r.prev_value.is_empty() {
        return Err(V2Error::request(
            PREV_VALUE_REQUIRED,
            "\"prevValue\" cannot be empty",
        ));
    }
    r.no_value_on_success =
        boolean("noValueOnSuccess").ok_or_else(|| bad_field("noValueOnSuccess"))?;
    // An empty `ttl` is the same as none.
    let ttl = f.value("ttl");
    if !ttl.is_empty() {
        r.ttl = Some(
            parse_go_uint(ttl)
                .ok_or_else(|| V2Error::request(TTL_NAN, "invalid value for \"ttl\""))?,
        );
    }
    if let Some(v) = f.first("prevExist") {
        r.prev_exist = Some(
            parse_go_bool(v)
                .ok_or_else(|| V2Error::request(INVALID_FIELD, "invalid value for prevExist"))?,
        );
    }
    if let Some(v) = f.first("refresh") {
        r.refresh = parse_go_bool(v)
            .ok_or_else(|| V2Error::request(INVALID_FIELD, "invalid value for refresh"))?;
        if r.refresh {
            if !f.value("value").is_empty() {
                return Err(V2Error::request(
                    REFRESH_VALUE,
                    "A value was provided on a refresh",
                ));
            }
            if r.ttl.is_none() {
                return Err(V2Error::request(REFRESH_TTL_REQUIRED, "No TTL value set"));
            }
        }
    }
    r.value = f.value("value").to_string();
    Ok(r)
}

fn event_response(
    ev: &V2Event,
    raft_index: u64,
    raft_term: u64,
    cluster: &HeaderValue,
    no_value_on_success: bool,
    head: bool,
) -> Response {
    let status = if ev.is_created() {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    let mut headers = HeaderMap::new();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static(JSON));
    headers.insert("x-etcd-cluster-id", cluster.clone());
    headers.insert("x-etcd-index", num(ev.etcd_index));
    headers.insert("x-raft-index", num(raft_index));
    headers.insert("x-raft-term", num(raft_term));
    body_response(status, headers, ev.to_body(no_value_on_success), head)
}

fn error_response(e: &V2Error, cluster: &HeaderValue, head: bool) -> Response {
    let mut headers = HeaderMap::new();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static(JSON));
    headers.insert("x-etcd-cluster-id", cluster.clone());
    headers.insert("x-etcd-index", num(e.index));
    body_response(e.status(), headers, e.to_body(), head)
}

/// A complete response; for HEAD the body is left out but its length is
/// announced, as Go's server does.
fn body_response(status: StatusCode, mut headers: HeaderMap, body: String, head: bool) -> Response {
    if head {
        headers.insert(CONTENT_LENGTH, num(body.len() as u64));
        return (status, headers, Body::empty()).into_response();
    }
    (status, headers, body).into_response()
}

// ---------------------------------------------------------------- members

async fn members(State(st): State<Arc<V2State>>, req: Request) -> Response {
    let path = match decoded_path(&req) {
        Ok(p) => p,
        Err(resp) => return *resp,
    };
    if let Some(resp) = redirect_unclean(&path, &req) {
        return resp;
    }
    let method = req.method().clone();
    if !matches!(
        method,
        Method::GET | Method::POST | Method::DELETE | Method::PUT
    ) {
        return method_not_allowed("GET,POST,DELETE,PUT");
    }
    let backend = st.backend.as_ref();
    let cluster = cluster_header(backend);
    let mut resp = members_inner(backend, &method, &path, req).await;
    resp.headers_mut().insert("x-etcd-cluster-id", cluster);
    resp
}

async fn members_inner(
    backend: &dyn V2Backend,
    method: &Method,
    path: &str,
    req: Request,
) -> Response {
    let rest = path[MEMBERS_PREFIX.len()..].trim_start_matches('/');
    if *method == Method::GET {
        return match rest {
            "" => {
                let mut ms = backend.members();
                ms.sort_by_key(|m| m.id);
                #[derive(serde::Serialize)]
                struct Collection<'a> {
                    members: Vec<MemberJson<'a>>,
                }
                let members = ms.iter().map(member_json).collect();
                json_response(StatusCode::OK, &Collection { members }, true)
            }
            "leader" => match backend.leader() {
                Some(m) => json_response(StatusCode::OK, &member_json(&m), true),
                None => http_error(StatusCode::SERVICE_UNAVAILABLE, "During election"),
            },
            _ => http_error(StatusCode::NOT_FOUND, "Not found"),
        };
    }
    if *method == Method::POST {
        let urls = match read_peer_urls(req).await {
            Ok(u) => u,
            Err(resp) => return resp,
        };
        return match backend.add_member(urls).await {
            Ok(m) => json_response(StatusCode::CREATED, &member_json(&m), true),
            Err(e) => member_error(e, None),
        };
    }
    // DELETE and PUT name a member.
    if rest.is_empty() {
        return plain_error(StatusCode::METHOD_NOT_ALLOWED, "Method Not Allowed");
    }
    let Some(id) = parse_member_id(rest) else {
        return http_error(StatusCode::NOT_FOUND, &format!("No such member: {rest}"));
    };
    if *method == Method::DELETE {
        return match backend.remove_member(id).await {
            Ok(()) => StatusCode::NO_CONTENT.into_response(),
            Err(e) => member_error(e, Some(id)),
        };
    }
    let urls = match read_peer_urls(req).await {
        Ok(u) => u,
        Err(resp) => return resp,
    };
    match backend.update_member(id, urls).await {
        Ok(()) => StatusCode::NO_CONTENT.into_response(),
        // etcd's update handler has no 410 case: a removed member is 500.
        Err(MemberError::Removed) => member_error(MemberError::Other(String::new()), Some(id)),
        Err(e) => member_error(e, Some(id)),
    }
}

fn member_error(e: MemberError, id: Option<u64>) -> Response {
    let id = id.map(|i| format!("{i:x}")).unwrap_or_default();
    match e {
        MemberError::NotFound => {
            http_error(StatusCode::NOT_FOUND, &format!("No such member: {id}"))
        }
        MemberError::Removed => http_error(
            StatusCode::GONE,
            &format!("Member permanently removed: {id}"),
        ),
        MemberError::IdExists | MemberError::PeerUrlExists => {
            http_error(StatusCode::CONFLICT, &e.to_string())
        }
        MemberError::BadRequest(m) => http_error(StatusCode::BAD_REQUEST, &m),
        MemberError::Other(_) => {
            http_error(StatusCode::INTERNAL_SERVER_ERROR, "Internal Server Error")
        }
    }
}

/// etcd's `httptypes.Member`, fields in its order.
#[derive(serde::Serialize)]
struct MemberJson<'a> {
    id: String,
    name: &'a str,
    #[serde(rename = "peerURLs")]
    peer_urls: &'a [String],
    #[serde(rename = "clientURLs")]
    client_urls: &'a [String],
}

fn member_json(m: &V2Member) -> MemberJson<'_> {
    MemberJson {
        id: format!("{:x}", m.id),
        name: &m.name,
        peer_urls: &m.peer_urls,
        client_urls: &m.client_urls,
    }
}

/// The JSON body of a member add/update: `{"peerURLs":[...]}`, checked as
/// etcd does (content type, then JSON, then each URL).
async fn read_peer_urls(req: Request) -> Result<Vec<String>, Response> {
    let mut ctype = req
        .headers()
        .get(CONTENT_TYPE)
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
        .unwrap_or_default();
    // etcd normalizes the type only when it has parameters.
    if let Some(i) = ctype.find(';') {
        ctype = ctype[..i].trim().to_ascii_lowercase();
    }
    if ctype != JSON {
        return Err(http_error(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            &format!("Bad Content-Type {ctype}, accept application/json"),
        ));
    }
    let bad = |m: String| http_error(StatusCode::BAD_REQUEST, &m);
    let body = axum::body::to_bytes(req.into_body(), MAX_MEMBER_BODY_BYTES)
        .await
        .map_err(|e| bad(e.to_string()))?;
    let v: serde_json::Value = serde_json::from_slice(&body).map_err(|e| bad(e.to_string()))?;
    let serde_json::Value::Object(obj) = v else {
        return Err(bad("json: cannot unmarshal into member request".into()));
    };
    // Go matches JSON keys to fields case-insensitively (exact match first).
    let field = obj.get("peerURLs").or_else(|| {
        obj.iter()
            .find(|(k, _)| k.eq_ignore_ascii_case("peerURLs"))
            .map(|(_, v)| v)
    });
    let urls: Vec<String> = match field {
        None | Some(serde_json::Value::Null) => Vec::new(),
        Some(serde_json::Value::Array(a)) => a
            .iter()
            .map(|u| u.as_str().map(str::to_string))
            .collect::<Option<_>>()
            .ok_or_else(|| bad("json: cannot unmarshal non-string into peerURLs".into()))?,
        Some(_) => return Err(bad("json: cannot unmarshal peerURLs".into())),
    };
    check_urls(urls).map_err(bad)
}

/// etcd's `types.NewURLs`: at least one URL; each http, https, unix or
/// unixs, with `host:port` and no path. Returned trimmed and sorted.
fn check_urls(urls: Vec<String>) -> Result<Vec<String>, String> {
    if urls.is_empty() {
        return Err("no valid URLs given".into());
    }
    let mut out = Vec::with_capacity(urls.len());
    for u in urls {
        let u = u.trim().to_string();
        let (scheme, rest) = match u.split_once(':') {
            Some((s, r))
                if !s.is_empty()
                    && s.starts_with(|c: char| c.is_ascii_alphabetic())
                    && s.chars()
                        .all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c)) =>
            {
                (s.to_ascii_lowercase(), r)
            }
            _ => ("".to_string(), u.as_str()),
        };
        if !matches!(scheme.as_str(), "http" | "https" | "unix" | "unixs") {
            return Err(format!(
                "URL scheme must be http, https, unix, or unixs: {u}"
            ));
        }
        let rest = rest.split(['?', '#']).next().unwrap_or("");
        let (authority, path) = match rest.strip_prefix("//") {
            Some(r) => match r.find('/') {
                Some(i) => (&r[..i], &r[i..]),
                None => (r, ""),
            },
            None => ("", rest),
        };
        let host = authority.rsplit('@').next().unwrap_or("");
        if !is_host_port(host) {
            return Err(format!(
                "URL address does not have the form \"host:port\": {u}"
            ));
        }
        if !path.is_empty() {
            return Err(format!("URL must not contain a path: {u}"));
        }
        out.push(u);
    }
    out.sort();
    Ok(out)
}

/// Go's `net.SplitHostPort` succeeds: `host:port` or `[v6]:port`.
fn is_host_port(s: &str) -> bool {
    if let Some(r) = s.strip_prefix('[') {
        return match r.find(']') {
            Some(i) => r[i + 1..].starts_with(':') && !r[i + 2..].contains([':', '[', ']']),
            None => false,
        };
    }
    match s.rfind(':') {
        Some(i) => !s[..i].contains(':') && !s.contains(['[', ']']),
        None => false,
    }
}

/// etcd's `types.IDFromString`: hex, at most 64 bits.
fn parse_member_id(s: &str) -> Option<u64> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    u64::from_str_radix(s, 16).ok()
}

// ---------------------------------------------------------------- others

async fn machines(State(st): State<Arc<V2State>>, req: Request) -> Response {
    let head = req.method() == Method::HEAD;
    if !head && req.method() != Method::GET {
        return method_not_allowed("GET,HEAD");
    }
    let mut urls: Vec<String> = st
        .backend
        .members()
        .into_iter()
        .flat_map(|m| m.client_urls)
        .collect();
    urls.sort();
    let mut headers = HeaderMap::new();
    headers.insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    body_response(StatusCode::OK, headers, urls.join(", "), head)
}

async fn stats_store(State(st): State<Arc<V2State>>, req: Request) -> Response {
    if req.method() != Method::GET {
        return method_not_allowed("GET");
    }
    let body = st.backend.store().read().stats_json();
    ([(CONTENT_TYPE, JSON)], body).into_response()
}

async fn stats_self(State(st): State<Arc<V2State>>, req: Request) -> Response {
    if req.method() != Method::GET {
        return method_not_allowed("GET");
    }
    json_response(StatusCode::OK, &st.backend.self_stats(), false)
}

async fn stats_leader(State(st): State<Arc<V2State>>, req: Request) -> Response {
    if req.method() != Method::GET {
        return method_not_allowed("GET");
    }
    match st.backend.leader_stats() {
        Some(s) => json_response(StatusCode::OK, &s, false),
        None => http_error(StatusCode::FORBIDDEN, "not current leader"),
    }
}

// ---------------------------------------------------------------- helpers

fn num(n: u64) -> HeaderValue {
    HeaderValue::from(n)
}

fn cluster_header(b: &dyn V2Backend) -> HeaderValue {
    // Lower-case hex without padding (Go's `types.ID.String()`); always a
    // valid header value.
    HeaderValue::from_str(&format!("{:x}", b.cluster_id()))
        .unwrap_or_else(|_| HeaderValue::from_static("0"))
}

/// JSON with Go's escaping; `newline` for bodies written by `json.Encoder`.
fn json_response<T: serde::Serialize>(status: StatusCode, v: &T, newline: bool) -> Response {
    let mut body = to_go_json(v);
    if newline {
        body.push('\n');
    }
    (status, [(CONTENT_TYPE, JSON)], body).into_response()
}

/// etcd's `httptypes.HTTPError`: `{"message":"..."}`, no trailing newline.
fn http_error(status: StatusCode, message: &str) -> Response {
    json_response(status, &serde_json::json!({ "message": message }), false)
}

/// Go's `http.Error`.
fn plain_error(status: StatusCode, text: &str) -> Response {
    (
        status,
        [
            (CONTENT_TYPE, "text/plain; charset=utf-8"),
            (http::header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        ],
        format!("{text}\n"),
    )
        .into_response()
}

fn method_not_allowed(allow: &'static str) -> Response {
    let mut resp = plain_error(StatusCode::METHOD_NOT_ALLOWED, "Method Not Allowed");
    resp.headers_mut()
        .insert(ALLOW, HeaderValue::from_static(allow));
    resp
}

/// The request path, percent-decoded as Go's `URL.Path` (a `%2F` becomes a
/// separator). A malformed escape is a 400, as Go's server answers.
fn decoded_path(req: &Request) -> Result<String, Box<Response>> {
    unescape(req.uri().path(), false).map_err(|_| {
        Box::new(
            (
                StatusCode::BAD_REQUEST,
                [(CONTENT_TYPE, "text/plain; charset=utf-8")],
                "400 Bad Request",
            )
                .into_response(),
        )
    })
}

/// Go's `ServeMux` answers a path that is not clean (`//`, `.`, `..`)
/// with 301 to the cleaned one, before any handler runs; so can we.
fn redirect_unclean(path: &str, req: &Request) -> Option<Response> {
    let clean = clean_path(path);
    if clean == path {
        return None;
    }
    Some(gohttp::redirect_to_clean(
        &clean,
        req.uri().query(),
        req.method(),
    ))
}

/// Decoded request parameters: form body values first, then the query's,
/// like Go's `Request.Form`.
#[derive(Debug, Default)]
struct Form(Vec<(String, String)>);

impl Form {
    fn first(&self, k: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(key, _)| key == k)
            .map(|(_, v)| v.as_str())
    }
    fn has(&self, k: &str) -> bool {
        self.first(k).is_some()
    }
    /// Go's `FormValue`: the first value or "".
    fn value(&self, k: &str) -> &str {
        self.first(k).unwrap_or("")
    }
}

/// Go's `ParseForm` for the keys API: the body is read only for PUT and
/// POST with a form content type (anything else leaves it unread); the
/// first error wins but both parts are parsed.
async fn read_form(req: Request) -> Result<Form, String> {
    let mut values = Vec::new();
    let mut err = None;
    let query = req.uri().query().unwrap_or("").to_string();
    if matches!(*req.method(), Method::PUT | Method::POST) {
        let ctype = req
            .headers()
            .get(CONTENT_TYPE)
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned());
        let media = ctype.as_deref().map(|c| {
            c.split(';')
                .next()
                .unwrap_or("")
                .trim()
                .to_ascii_lowercase()
        });
        match media.as_deref() {
            Some("") => err = Some("mime: no media type".to_string()),
            Some("application/x-www-form-urlencoded") => {
                match axum::body::to_bytes(req.into_body(), MAX_FORM_BYTES).await {
                    Ok(body) => {
                        let body = String::from_utf8_lossy(&body);
                        if let Err(e) = parse_query(&body, &mut values) {
                            err = Some(e);
                        }
                    }
                    Err(e) => {
                        let too_large = std::error::Error::source(&e)
                            .is_some_and(|s| s.is::<http_body_util::LengthLimitError>());
                        err = Some(if too_large {
                            "http: POST too large".to_string()
                        } else {
                            e.to_string()
                        });
                    }
                }
            }
            _ => {}
        }
    }
    if let Err(e) = parse_query(&query, &mut values)
        && err.is_none()
    {
        err = Some(e);
    }
    match err {
        Some(e) => Err(e),
        None => Ok(Form(values)),
    }
}

/// Go's `url.ParseQuery`: `&`-separated pairs, `+` is a space, a `;` or a
/// bad escape is an error (reported after parsing the rest).
fn parse_query(s: &str, out: &mut Vec<(String, String)>) -> Result<(), String> {
    let mut err = None;
    for pair in s.split('&') {
        if pair.contains(';') {
            err.get_or_insert_with(|| "invalid semicolon separator in query".to_string());
            continue;
        }
        if pair.is_empty() {
            continue;
        }
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        match (unescape(k, true), unescape(v, true)) {
            (Ok(k), Ok(v)) => out.push((k, v)),
            (Err(e), _) | (_, Err(e)) => {
                err.get_or_insert(e);
            }
        }
    }
    match err {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

/// Go's `strconv.ParseUint(s, 10, 64)`: digits only, no sign.
fn parse_go_uint(s: &str) -> Option<u64> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

/// Go's `strconv.ParseBool`.
fn parse_go_bool(s: &str) -> Option<bool> {
    match s {
        "1" | "t" | "T" | "TRUE" | "true" | "True" => Some(true),
        "0" | "f" | "F" | "FALSE" | "false" | "False" => Some(false),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_parsing_matches_go() {
        let mut v = Vec::new();
        parse_query("a=1&b=x+y&c=%41&d&&e=", &mut v).unwrap();
        assert_eq!(
            v,
            [
                ("a".into(), "1".into()),
                ("b".into(), "x y".into()),
                ("c".into(), "A".into()),
                ("d".into(), "".into()),
                ("e".into(), "".into()),
            ]
        );
        let mut v = Vec::new();
        assert_eq!(
            parse_query("a=%zz&b=2", &mut v),
            Err("invalid URL escape \"%zz\"".to_string())
        );
        assert_eq!(v, [("b".to_string(), "2".to_string())]);
        assert_eq!(
            parse_query("a=%4", &mut Vec::new()),
            Err("invalid URL escape \"%4\"".to_string())
        );
        assert_eq!(
            parse_query("a=1;b=2", &mut Vec::new()),
            Err("invalid semicolon separator in query".to_string())
        );
    }

    #[test]
    fn go_numbers_and_bools() {
        assert_eq!(parse_go_uint("0"), Some(0));
        assert_eq!(parse_go_uint("18446744073709551615"), Some(u64::MAX));
        assert_eq!(parse_go_uint("18446744073709551616"), None);
        assert_eq!(parse_go_uint("+1"), None);
        assert_eq!(parse_go_uint("-1"), None);
        assert_eq!(parse_go_uint(""), None);
        assert_eq!(parse_go_bool("T"), Some(true));
        assert_eq!(parse_go_bool("False"), Some(false));
        assert_eq!(parse_go_bool("yes"), None);
        assert_eq!(parse_go_bool(""), None);
    }

    #[test]
    fn urls_and_ids() {
        assert_eq!(
            check_urls(vec![" http://b:2 ".into(), "https://a:1".into()]),
            Ok(vec!["http://b:2".to_string(), "https://a:1".to_string()])
        );
        assert_eq!(
            check_urls(vec!["unix://sock:1".into(), "http://[::1]:2380".into()]).map(|v| v.len()),
            Ok(2)
        );
        assert_eq!(check_urls(vec![]), Err("no valid URLs given".into()));
        assert_eq!(
            check_urls(vec!["foo".into()]),
            Err("URL scheme must be http, https, unix, or unixs: foo".into())
        );
        assert_eq!(
            check_urls(vec!["http://host".into()]),
            Err("URL address does not have the form \"host:port\": http://host".into())
        );
        assert_eq!(
            check_urls(vec!["http://h:1/p".into()]),
            Err("URL must not contain a path: http://h:1/p".into())
        );
        assert_eq!(
            parse_member_id("8e9e05c52164694d"),
            Some(0x8e9e05c52164694d)
        );
        assert_eq!(parse_member_id("0x1"), None);
        assert_eq!(parse_member_id("zz"), None);
        assert_eq!(parse_member_id("11112222333344445"), None);
    }
}
