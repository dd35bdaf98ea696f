//! The discovery client's HTTP/1.1 requests: one connection per request
//! (discovery makes a handful), bounded bodies, a deadline on each, and an
//! optional plain-HTTP proxy (`--discovery-proxy`), which gets the request
//! in absolute form as Go's `http.ProxyURL` sends it.

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::rt::TokioIo;
use std::time::Duration;
use url::Url;

/// The largest discovery response read: a discovery directory lists a
/// handful of members; anything near this is not a discovery service.
const MAX_RESPONSE_BYTES: usize = 4 << 20;

/// What came back.
#[derive(Debug)]
pub struct Response {
    pub status: u16,
    pub headers: http::HeaderMap,
    pub body: Bytes,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

/// Why no response: the connection, TLS or HTTP exchange failed, or the
/// deadline passed. Always worth a retry (etcd's `ClusterError`).
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct TransportError {
    pub message: String,
    /// Only the deadline passed (a long poll that saw nothing ends so).
    pub timed_out: bool,
}

impl TransportError {
    fn new(message: String) -> Self {
        TransportError {
            message,
            timed_out: false,
        }
    }
}

/// Sends `method` to `url` (whose path and query are sent as they are),
/// directly or through `proxy`, and reads the whole response by `timeout`.
pub async fn request(
    method: http::Method,
    url: &Url,
    form: Option<String>,
    proxy: Option<&Url>,
    timeout: Duration,
) -> Result<Response, TransportError> {
    tokio::time::timeout(timeout, exchange(method, url, form, proxy))
        .await
        .map_err(|_| TransportError {
            message: format!("{url}: no answer within {timeout:?}"),
            timed_out: true,
        })?
}

async fn exchange(
    method: http::Method,
    url: &Url,
    form: Option<String>,
    proxy: Option<&Url>,
) -> Result<Response, TransportError> {
    let err =
        |what: &str, e: &dyn std::fmt::Display| TransportError::new(format!("{url}: {what}: {e}"));
    let host = url
        .host_str()
        .ok_or_else(|| TransportError::new(format!("{url}: no host")))?;
    let port = url.port_or_known_default().unwrap_or(80);
    let authority = match url.port() {
        Some(p) => format!("{host}:{p}"),
        None => host.to_string(),
    };
    let path = match url.query() {
        Some(q) => format!("{}?{q}", url.path()),
        None => url.path().to_string(),
    };
    // Through a proxy the request line carries the absolute URL.
    let (dial_host, dial_port, target) = match proxy {
        Some(p) => {
            if url.scheme() == "https" {
                return Err(TransportError::new(format!(
                    "{url}: --discovery-proxy is supported for http:// discovery URLs only"
                )));
            }
            let ph = p
                .host_str()
                .ok_or_else(|| TransportError::new(format!("proxy {p}: no host")))?;
            let pp = p.port_or_known_default().unwrap_or(80);
            (ph.to_string(), pp, format!("http://{authority}{path}"))
        }
        None => (host.to_string(), port, path),
    };
    let mut req = http::Request::builder()
        .method(method)
        .uri(target)
        .header(http::header::HOST, authority);
    let body = match form {
        Some(f) => {
            req = req.header(
                http::header::CONTENT_TYPE,
                "application/x-www-form-urlencoded",
            );
            Full::new(Bytes::from(f))
        }
        None => Full::new(Bytes::new()),
    };
    let req = req.body(body).map_err(|e| err("request", &e))?;
    if url.scheme() == "https" {
        // System roots, no client certificate: etcd's `TLSInfo{}`.
        let config = crate::tls::fallback_client_config().map_err(|e| err("TLS", &e))?;
        let mut config = (*config).clone();
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        let tls = crate::tls::connect::connect(std::sync::Arc::new(config), &dial_host, dial_port)
            .await
            .map_err(|e| err("connect", &e))?;
        return send(TokioIo::new(tls), req, url).await;
    }
    let dial = dial_host.trim_start_matches('[').trim_end_matches(']');
    let tcp = tokio::net::TcpStream::connect((dial, dial_port))
        .await
        .map_err(|e| err("connect", &e))?;
    send(TokioIo::new(tcp), req, url).await
}

async fn send<I>(
    io: I,
    req: http::Request<Full<Bytes>>,
    url: &Url,
) -> Result<Response, TransportError>
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let err =
        |what: &str, e: &dyn std::fmt::Display| TransportError::new(format!("{url}: {what}: {e}"));
    let (mut sender, conn) = hyper::client::conn::http1::handshake(io)
        .await
        .map_err(|e| err("HTTP", &e))?;
    // The connection task ends with the exchange (or with the caller's
    // timeout, which drops the sender).
    tokio::spawn(async move {
        let _ = conn.await;
    });
    let resp = sender
        .send_request(req)
        .await
        .map_err(|e| err("HTTP", &e))?;
    let (parts, body) = resp.into_parts();
    let body = Limited::new(body, MAX_RESPONSE_BYTES)
        .collect()
        .await
        .map_err(|e| err("reading the response", &e))?
        .to_bytes();
    Ok(Response {
        status: parts.status.as_u16(),
        headers: parts.headers,
        body,
    })
}
