//! `/v2/keys`: etcd 3.4's keyspace requests — parsing (Go's `ParseForm`:
//! form body first, then the query), validation order and error codes,
//! status codes (201 for creates), the `X-Etcd-*` / `X-Raft-*` headers,
//! and long-poll watches.

use super::*;
use crate::v2::error::*;
use crate::v2::event::V2Event;
use crate::v2::{V2Keys, V2Op, V2Request, V2Watcher};
use axum::body::Bytes;
use axum::extract::State;
use tokio::sync::OwnedSemaphorePermit;

/// Largest form body read (Go's `ParseForm` limit; etcd inherits it).
pub const MAX_FORM_BYTES: usize = 10 << 20;

const KEYS_PREFIX: &str = "/v2/keys";

pub(super) async fn keys(State(st): State<Arc<V2State>>, req: Request) -> Response {
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
    let headers = req.headers().clone();
    let ext = req.extensions().clone();
    let cn = super::auth::client_cn(&req);
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
    if !st
        .auth
        .has_key_access(&method, &headers, cn.as_deref(), &key, kr.recursive)
        .await
    {
        // etcd's `writeKeyNoAuth`.
        let e = V2Error::new(UNAUTHORIZED, "Insufficient credentials", 0);
        return error_response(&e, &cluster, head);
    }
    let backend = st.backend.as_ref();
    let now = backend.now_unix_nanos();
    if let Some(v3) = backend.v3_keys() {
        return v3_keys_request(&st, v3, &ext, &method, key, &kr, &cluster, now).await;
    }

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

    let r = write_request(&method, key, &kr, now);
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

/// `/v2/keys` served from v3 keys (`--experimental-enable-v2v3`): the
/// same parameters and responses, another keyspace behind them.
async fn v3_keys_request(
    st: &V2State,
    v3: &dyn V2Keys,
    ext: &::http::Extensions,
    method: &Method,
    key: String,
    kr: &KeyRequest,
    cluster: &HeaderValue,
    now: i64,
) -> Response {
    let head = *method == Method::HEAD;
    let backend = st.backend.as_ref();
    if *method == Method::GET && kr.wait && !kr.quorum {
        let Ok(permit) = st.long_polls.clone().try_acquire_owned() else {
            return too_many_watches(cluster, v3.index());
        };
        let w = match v3
            .watch(ext, &key, kr.recursive, kr.stream, kr.wait_index)
            .await
        {
            Ok(w) => w,
            Err(e) => return error_response(&e, cluster, false),
        };
        let headers = watch_headers(backend, cluster, w.start_index);
        let stream = kr.stream;
        let body = futures::stream::unfold(Some((w.events, permit)), move |state| async move {
            let (mut events, permit) = state?;
            let ev = futures::StreamExt::next(&mut events).await?;
            let chunk = Bytes::from(ev.to_body(false));
            Some((
                Ok::<_, std::convert::Infallible>(chunk),
                stream.then_some((events, permit)),
            ))
        });
        return (StatusCode::OK, headers, Body::from_stream(body)).into_response();
    }
    let result = if *method == Method::GET || head {
        v3.get(ext, &key, kr.recursive, kr.sorted).await
    } else {
        v3.write(ext, write_request(method, key, kr, now)).await
    };
    let (ri, rt) = backend.raft_index_term();
    match result {
        Ok(ev) => event_response(&ev, ri, rt, cluster, kr.no_value_on_success, head),
        Err(e) => error_response(&e, cluster, head),
    }
}

/// The v2 write a PUT, POST or DELETE stands for.
fn write_request(method: &Method, key: String, kr: &KeyRequest, now: i64) -> V2Request {
    let conditional = kr.prev_index > 0 || !kr.prev_value.is_empty();
    let op = if *method == Method::PUT {
        match kr.prev_exist {
            Some(true) if conditional => V2Op::CompareAndSwap,
            Some(true) => V2Op::Update,
            Some(false) => V2Op::Create,
            None if conditional => V2Op::CompareAndSwap,
            None => V2Op::Set,
        }
    } else if *method == Method::POST {
        V2Op::CreateInOrder
    } else if conditional {
        V2Op::CompareAndDelete
    } else {
        V2Op::Delete
    };
    let mut r = V2Request::new(op, key, now);
    r.value = kr.value.clone();
    r.dir = kr.dir;
    r.prev_value = kr.prev_value.clone();
    r.prev_index = kr.prev_index;
    r.recursive = kr.recursive;
    r.refresh = kr.refresh;
    // Go: `clock.Now().Add(time.Duration(ttl) * time.Second).UnixNano()`,
    // all in wrapping int64; an overflow lands before 2000 and the store
    // then treats the key as permanent.
    r.expiration = kr
        .ttl
        .map(|ttl| now.wrapping_add((ttl as i64).wrapping_mul(1_000_000_000)));
    r
}

async fn watch(st: &V2State, key: &str, kr: &KeyRequest, cluster: &HeaderValue) -> Response {
    let backend = st.backend.as_ref();
    let Ok(permit) = st.long_polls.clone().try_acquire_owned() else {
        return too_many_watches(cluster, backend.store().read().index());
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
    let headers = watch_headers(backend, cluster, watcher.start_index());
    // The status and headers go out at once; the body is the event(s).
    // When the client goes away the server drops the body, and with it the
    // watcher (unregistered) and the long-poll permit.
    let body = Body::from_stream(watch_stream(watcher, kr.stream, permit));
    (StatusCode::OK, headers, body).into_response()
}

/// 503 when `MAX_LONG_POLLS` watches are open.
fn too_many_watches(cluster: &HeaderValue, index: u64) -> Response {
    let e = V2Error::new(RAFT_INTERNAL, "etcdserver: too many requests", index);
    let mut resp = error_response(&e, cluster, false);
    *resp.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
    resp
}

/// A watch's headers go out at once, before its first event.
fn watch_headers(backend: &dyn V2Backend, cluster: &HeaderValue, start_index: u64) -> HeaderMap {
    let (ri, rt) = backend.raft_index_term();
    let mut headers = HeaderMap::new();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static(JSON));
    headers.insert("x-etcd-cluster-id", cluster.clone());
    headers.insert("x-etcd-index", num(start_index));
    headers.insert("x-raft-index", num(ri));
    headers.insert("x-raft-term", num(rt));
    headers
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
}
