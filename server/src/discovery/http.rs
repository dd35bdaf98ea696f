//! The discovery client's HTTP/1.1 requests: one connection per request
//! (discovery makes a handful), bounded bodies, a deadline on each, and an
//! optional HTTP proxy (`--discovery-proxy`) used as Go's transport uses
//! one: `http://` requests in absolute form, `https://` ones through a
//! CONNECT tunnel; credentials in the proxy URL become `Proxy-Authorization`.
//! `https://` services are verified against the system's CAs
//! (`$SSL_CERT_FILE` when set, as Go), with no client certificate, as etcd.

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
    // Plain HTTP through a proxy: the request line carries the absolute
    // URL. HTTPS through a proxy: a CONNECT tunnel, then the request as
    // to the server itself (what Go's transport does).
    let target = match proxy {
        Some(_) if url.scheme() == "http" => format!("http://{authority}{path}"),
        _ => path,
    };
    let mut req = http::Request::builder()
        .method(method)
        .uri(target)
        .header(http::header::HOST, &authority);
    if let (Some(p), "http") = (proxy, url.scheme())
        && let Some(auth) = proxy_authorization(p)
    {
        req = req.header("proxy-authorization", auth);
    }
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
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    let tcp = match proxy {
        Some(p) => {
            let ph = p
                .host_str()
                .ok_or_else(|| TransportError::new(format!("proxy {p}: no host")))?;
            let ph = ph.trim_start_matches('[').trim_end_matches(']');
            let pp = p.port_or_known_default().unwrap_or(80);
            let tcp = tokio::net::TcpStream::connect((ph, pp))
                .await
                .map_err(|e| err("connect to the proxy", &e))?;
            if url.scheme() == "https" {
                connect_tunnel(tcp, &format!("{}:{port}", host), p)
                    .await
                    .map_err(|e| err("proxy CONNECT", &e))?
            } else {
                tcp
            }
        }
        None => tokio::net::TcpStream::connect((bare, port))
            .await
            .map_err(|e| err("connect", &e))?,
    };
    if url.scheme() == "https" {
        // System roots, no client certificate: etcd's `TLSInfo{}`.
        let config = crate::tls::fallback_client_config().map_err(|e| err("TLS", &e))?;
        let mut config = (*config).clone();
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        let name = rustls::pki_types::ServerName::try_from(bare.to_string())
            .map_err(|e| err("TLS server name", &e))?;
        let tls = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config))
            .connect(name, tcp)
            .await
            .map_err(|e| err("TLS", &e))?;
        return send(TokioIo::new(tls), req, url).await;
    }
    send(TokioIo::new(tcp), req, url).await
}

/// `Basic` credentials from the proxy URL's user info, as Go sends them.
fn proxy_authorization(proxy: &Url) -> Option<String> {
    use base64::Engine as _;
    if proxy.username().is_empty() {
        return None;
    }
    let decode = |s: &str| {
        url::form_urlencoded::parse(format!("x={s}").as_bytes())
            .next()
            .map(|(_, v)| v.into_owned())
            .unwrap_or_default()
    };
    let user = decode(proxy.username());
    let pass = decode(proxy.password().unwrap_or(""));
    Some(format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{user}:{pass}"))
    ))
}

/// The most bytes of a proxy's answer to CONNECT read before the tunnel.
const MAX_CONNECT_HEAD_BYTES: usize = 16 * 1024;

/// Asks the proxy on `tcp` for a tunnel to `authority`; the stream is the
/// tunnel once the proxy answers 200.
async fn connect_tunnel(
    mut tcp: tokio::net::TcpStream,
    authority: &str,
    proxy: &Url,
) -> Result<tokio::net::TcpStream, String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut head = format!("CONNECT {authority} HTTP/1.1\r\nHost: {authority}\r\n");
    if let Some(auth) = proxy_authorization(proxy) {
        head.push_str(&format!("Proxy-Authorization: {auth}\r\n"));
    }
    head.push_str("\r\n");
    tcp.write_all(head.as_bytes())
        .await
        .map_err(|e| e.to_string())?;
    // Byte by byte: nothing of the tunnel may be read here.
    let mut answer = Vec::new();
    while !answer.ends_with(b"\r\n\r\n") {
        if answer.len() >= MAX_CONNECT_HEAD_BYTES {
            return Err("the proxy's answer has no end".into());
        }
        let b = tcp.read_u8().await.map_err(|e| e.to_string())?;
        answer.push(b);
    }
    let text = String::from_utf8_lossy(&answer);
    let status = text.lines().next().unwrap_or("");
    let code = status.split(' ').nth(1).unwrap_or("");
    if !status.starts_with("HTTP/1.") || code != "200" {
        return Err(format!("the proxy refused: {status}"));
    }
    Ok(tcp)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proxy_credentials_become_basic_auth() {
        let p = Url::parse("http://user:p%40ss@proxy:3128").unwrap();
        // base64("user:p@ss")
        assert_eq!(
            proxy_authorization(&p).as_deref(),
            Some("Basic dXNlcjpwQHNz")
        );
        assert_eq!(
            proxy_authorization(&Url::parse("http://proxy:3128").unwrap()),
            None
        );
    }
}
