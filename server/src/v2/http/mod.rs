//! The v2 HTTP API on the client port, with etcd 3.4's wire contract. One
//! module per job: `keys` (the keyspace: Go's form parsing, validation
//! order and error codes, 201 for creates, the `X-Etcd-*` / `X-Raft-*`
//! headers, long-poll watches), `members` (`/v2/members`, `/v2/machines`,
//! `/v2/stats/*`: the cluster as v2 clients see it) and `auth` (the v2 auth
//! API, `/v2/auth/*`, and the access checks it puts on the other two).
//! What they share — Go's responses and path rules — is here.

mod auth;
mod keys;
mod members;

pub use keys::MAX_FORM_BYTES;
pub use members::MAX_MEMBER_BODY_BYTES;

use super::V2Backend;
use super::error::V2Error;
use super::event::to_go_json;
use crate::net::gohttp::{self, clean_path, unescape};
use axum::body::Body;
use axum::extract::Request;
use axum::response::{IntoResponse, Response};
use axum::routing::any;
use http::header::{ALLOW, CONTENT_LENGTH, CONTENT_TYPE};
use http::{HeaderMap, HeaderValue, Method, StatusCode};
use std::sync::Arc;
use tokio::sync::Semaphore;

/// Long-poll watches one member keeps open at once. etcd has no limit; each
/// open watch holds a connection and a queue of up to 100 events, so past
/// this a new watch gets 503 (the v2 client then tries another member).
pub const MAX_LONG_POLLS: usize = 10_000;

const JSON: &str = "application/json";

struct V2State {
    backend: Arc<dyn V2Backend>,
    long_polls: Arc<Semaphore>,
    auth: auth::V2Auth,
}

/// The v2 routes, to merge into the client router.
pub fn routes(backend: Arc<dyn V2Backend>) -> axum::Router {
    routes_with_limit(backend, MAX_LONG_POLLS)
}

/// `routes` with a different cap on concurrent long-poll watches.
pub fn routes_with_limit(backend: Arc<dyn V2Backend>, max_long_polls: usize) -> axum::Router {
    let state = Arc::new(V2State {
        auth: auth::V2Auth::new(Arc::clone(&backend)),
        backend,
        long_polls: Arc::new(Semaphore::new(max_long_polls)),
    });
    axum::Router::new()
        .route("/v2/keys", any(keys::keys))
        .route("/v2/keys/", any(keys::keys))
        .route("/v2/keys/{*rest}", any(keys::keys))
        .route("/v2/members", any(members::members))
        .route("/v2/members/", any(members::members))
        .route("/v2/members/{*rest}", any(members::members))
        .route("/v2/machines", any(members::machines))
        .route("/v2/stats/store", any(members::stats_store))
        .route("/v2/stats/self", any(members::stats_self))
        .route("/v2/stats/leader", any(members::stats_leader))
        .route("/v2/auth/enable", any(auth::enable))
        .route("/v2/auth/users", any(auth::users))
        .route("/v2/auth/users/", any(auth::users))
        .route("/v2/auth/users/{*rest}", any(auth::users))
        .route("/v2/auth/roles", any(auth::roles))
        .route("/v2/auth/roles/", any(auth::roles))
        .route("/v2/auth/roles/{*rest}", any(auth::roles))
        .with_state(state)
}

pub(super) fn error_response(e: &V2Error, cluster: &HeaderValue, head: bool) -> Response {
    let mut headers = HeaderMap::new();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static(JSON));
    headers.insert("x-etcd-cluster-id", cluster.clone());
    headers.insert("x-etcd-index", num(e.index));
    body_response(e.status(), headers, e.to_body(), head)
}

/// A complete response; for HEAD the body is left out but its length is
/// announced, as Go's server does.
pub(super) fn body_response(
    status: StatusCode,
    mut headers: HeaderMap,
    body: String,
    head: bool,
) -> Response {
    if head {
        headers.insert(CONTENT_LENGTH, num(body.len() as u64));
        return (status, headers, Body::empty()).into_response();
    }
    (status, headers, body).into_response()
}

pub(super) fn num(n: u64) -> HeaderValue {
    HeaderValue::from(n)
}

pub(super) fn cluster_header(b: &dyn V2Backend) -> HeaderValue {
    // Lower-case hex without padding (Go's `types.ID.String()`); always a
    // valid header value.
    HeaderValue::from_str(&format!("{:x}", b.cluster_id()))
        .unwrap_or_else(|_| HeaderValue::from_static("0"))
}

/// JSON with Go's escaping; `newline` for bodies written by `json.Encoder`.
pub(super) fn json_response<T: serde::Serialize>(
    status: StatusCode,
    v: &T,
    newline: bool,
) -> Response {
    let mut body = to_go_json(v);
    if newline {
        body.push('\n');
    }
    (status, [(CONTENT_TYPE, JSON)], body).into_response()
}

/// etcd's `httptypes.HTTPError`: `{"message":"..."}`, no trailing newline.
pub(super) fn http_error(status: StatusCode, message: &str) -> Response {
    json_response(status, &serde_json::json!({ "message": message }), false)
}

/// Go's `http.Error`.
pub(super) fn plain_error(status: StatusCode, text: &str) -> Response {
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

pub(super) fn method_not_allowed(allow: &'static str) -> Response {
    let mut resp = plain_error(StatusCode::METHOD_NOT_ALLOWED, "Method Not Allowed");
    resp.headers_mut()
        .insert(ALLOW, HeaderValue::from_static(allow));
    resp
}

/// The request path, percent-decoded as Go's `URL.Path` (a `%2F` becomes a
/// separator). A malformed escape is a 400, as Go's server answers.
pub(super) fn decoded_path(req: &Request) -> Result<String, Box<Response>> {
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
pub(super) fn redirect_unclean(path: &str, req: &Request) -> Option<Response> {
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
