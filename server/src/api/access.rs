//! Who may use the client HTTP surface from a browser: `--host-whitelist`
//! and `--cors`, as etcd 3.4's access controller applies them to every
//! HTTP request on the client URLs (gateway, v2, health, metrics, config).
//! gRPC calls are not HTTP pages a browser could be tricked into loading,
//! so they pass untouched, as in etcd, where they never reach that handler.
//!
//! Both settings are live: every request reads the configuration in force.
//!
//! - **Host whitelist.** A request that did not come over TLS must name,
//!   in its `Host` (the port is ignored), a host in `--host-whitelist`,
//!   unless the list is empty or holds `*` (the default). Otherwise it is
//!   answered 421 Misdirected Request. This stops DNS rebinding: a web page
//!   whose own name an attacker re-points at 127.0.0.1 reaches the member
//!   with the attacker's host name, which is not on the list
//!   (CVE-2018-5702). Over TLS the certificate already proves which host
//!   the client meant.
//! - **CORS.** With `*` among the allowed origins (or none listed: the
//!   default), responses allow any origin; otherwise a request whose
//!   `Origin` is listed gets that origin echoed back. Either way the allowed
//!   methods and headers are sent along, and a preflight (`OPTIONS`) is
//!   answered 200 right here, with those headers and an empty body.

use crate::etcdserver::EtcdServer;
use crate::tls::PeerIdentity;
use axum::body::Body;
use axum::response::{IntoResponse, Response};
use http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use std::sync::Arc;

const ALLOW_METHODS: &str = "POST, GET, OPTIONS, PUT, DELETE";
const ALLOW_HEADERS: &str = "accept, content-type, authorization";

/// The access checks, for every HTTP request on a client listener (gRPC
/// calls are routed around this layer: see `grpc_methods`).
pub async fn access_layer(
    axum::extract::State(srv): axum::extract::State<Arc<EtcdServer>>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    // Decided before the handler runs: the configuration guard must not be
    // held across an await, and a reload mid-request must not mix settings.
    let allow_origin = {
        let cfg = srv.config().load();
        // `PeerIdentity` is attached to every request of a TLS connection.
        if req.extensions().get::<PeerIdentity>().is_none() {
            let host = hostname(request_host(&req));
            if !host_allowed(&cfg.host_whitelist, host) {
                tracing::warn!(
                    host,
                    "refusing a plain-HTTP request whose Host is not in --host-whitelist (DNS rebinding protection)"
                );
                return misdirected(host);
            }
        }
        let origin = req
            .headers()
            .get(header::ORIGIN)
            .and_then(|v| v.to_str().ok());
        allowed_origin(&cfg.cors, origin).and_then(|o| HeaderValue::from_str(o).ok())
    };
    let mut resp = if req.method() == Method::OPTIONS {
        StatusCode::OK.into_response()
    } else {
        next.run(req).await
    };
    if let Some(origin) = allow_origin {
        add_cors_headers(resp.headers_mut(), origin);
    }
    resp
}

/// The host the request names: the URI's authority when it has one (HTTP/2,
/// or an absolute URI in HTTP/1.1), else the `Host` header, else nothing.
fn request_host(req: &axum::extract::Request) -> &str {
    if let Some(authority) = req.uri().authority() {
        return authority.as_str();
    }
    req.headers()
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
}

/// `host:port` without the port, `[v6]:port` without brackets and port; a
/// value without a port is returned as is (Go's `SplitHostPort` rules, which
/// etcd uses, so the whitelist matches the same spellings).
fn hostname(host: &str) -> &str {
    if let Some(rest) = host.strip_prefix('[') {
        return match rest.split_once("]:") {
            Some((inside, _)) => inside,
            None => host,
        };
    }
    match host.split_once(':') {
        Some((name, port)) if !port.contains(':') => name,
        _ => host,
    }
}

/// Whether a plain-HTTP request naming `host` is accepted. An empty list
/// allows everything, as `*` does (etcd's rule).
fn host_allowed(whitelist: &[String], host: &str) -> bool {
    whitelist.is_empty() || whitelist.iter().any(|h| h == "*" || h == host)
}

/// The `Access-Control-Allow-Origin` value for a request from `origin`:
/// `*` when any origin is allowed, the origin itself when it is listed,
/// nothing otherwise.
fn allowed_origin<'a>(cors: &[String], origin: Option<&'a str>) -> Option<&'a str> {
    if cors.is_empty() || cors.iter().any(|c| c == "*") {
        return Some("*");
    }
    origin.filter(|o| cors.iter().any(|c| c == o))
}

fn add_cors_headers(headers: &mut HeaderMap, origin: HeaderValue) {
    headers.insert(
        header::ACCESS_CONTROL_ALLOW_METHODS,
        HeaderValue::from_static(ALLOW_METHODS),
    );
    headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin);
    headers.insert(
        header::ACCESS_CONTROL_ALLOW_HEADERS,
        HeaderValue::from_static(ALLOW_HEADERS),
    );
}

/// The 421 answer, in plain text a person can act on.
fn misdirected(host: &str) -> Response {
    let body = format!(
        "Refused: this member does not recognise the Host header of the request ({host:?}).\n\
         Plain-HTTP requests are served only for the hosts listed in --host-whitelist: send the \
         request over TLS instead, or add the host to the list (for example \
         --host-whitelist={host}).\n\
         This check guards against DNS rebinding attacks (CVE-2018-5702).\n"
    );
    Response::builder()
        .status(StatusCode::MISDIRECTED_REQUEST)
        .header(header::CONTENT_TYPE, "text/plain; charset=utf-8")
        .header(header::X_CONTENT_TYPE_OPTIONS, "nosniff")
        .body(Body::from(body))
        .unwrap_or_else(|_| StatusCode::MISDIRECTED_REQUEST.into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list(items: &[&str]) -> Vec<String> {
        items.iter().map(|s| (*s).to_string()).collect()
    }

    #[test]
    fn hostnames_drop_the_port_like_go() {
        assert_eq!(hostname("example.com:2379"), "example.com");
        assert_eq!(hostname("example.com"), "example.com");
        assert_eq!(hostname("127.0.0.1:2379"), "127.0.0.1");
        assert_eq!(hostname("[::1]:2379"), "::1");
        assert_eq!(hostname("[::1]"), "[::1]");
        assert_eq!(hostname("::1"), "::1");
        assert_eq!(hostname(""), "");
    }

    #[test]
    fn whitelist_rules() {
        assert!(host_allowed(&[], "evil.example"));
        assert!(host_allowed(&list(&["*"]), "evil.example"));
        let wl = list(&["localhost", "10.0.0.1"]);
        assert!(host_allowed(&wl, "localhost"));
        assert!(host_allowed(&wl, "10.0.0.1"));
        assert!(!host_allowed(&wl, "evil.example"));
        assert!(!host_allowed(&wl, ""));
    }

    #[test]
    fn cors_rules() {
        assert_eq!(allowed_origin(&[], Some("https://a")), Some("*"));
        assert_eq!(allowed_origin(&list(&["*"]), None), Some("*"));
        let cors = list(&["https://a.example", "https://b.example"]);
        assert_eq!(
            allowed_origin(&cors, Some("https://b.example")),
            Some("https://b.example")
        );
        assert_eq!(allowed_origin(&cors, Some("https://c.example")), None);
        assert_eq!(allowed_origin(&cors, None), None);
    }
}
