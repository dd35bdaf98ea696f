//! The server's one HTTP/1.1 client, on hyper: a joining member asks a
//! running one for `/members`, discovery talks to a v2 discovery service
//! (optionally through `--discovery-proxy`), and the admin tools (`cairn
//! plugin`, `cairn config status`) call a member's admin endpoints.
//!
//! hyper speaks HTTP; this module dials the connection: TCP, a unix socket
//! file (`unix://host:port` and `unixs://host:port` name the file
//! `host:port` in the working directory, as etcd 3.4 dials them), TLS on
//! top for `https` and `unixs`, or an HTTP proxy. A proxy is used as Go's
//! transport uses one: `http://` requests go to it in absolute form,
//! `https://` ones through a CONNECT tunnel; credentials in the proxy URL
//! become `Proxy-Authorization`. One request per connection: every caller
//! makes a handful.
//!
//! Everything is bounded: the dial (TCP, tunnel and TLS handshake) by the
//! client's connect timeout, the whole exchange by the caller's timeout,
//! and the response body by the client's size limit.

use crate::tls::connect::PeerIo;
use bytes::Bytes;
use http_body_util::{BodyExt, Full, LengthLimitError, Limited};
use hyper_util::rt::TokioIo;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use url::Url;

/// Why a request got no (complete) response. The text is what users see,
/// after the URL the caller puts in front.
#[derive(Debug, thiserror::Error)]
pub enum HttpClientError {
    #[error("bad URL: {0}")]
    BadUrl(String),
    #[error("bad request: {0}")]
    BadRequest(String),
    #[error("no TLS settings for a secure endpoint")]
    NoTls,
    #[error("connect: {0}")]
    Connect(std::io::Error),
    #[error("connect to the proxy: {0}")]
    ProxyConnect(std::io::Error),
    #[error("proxy CONNECT: {0}")]
    Tunnel(String),
    #[error("TLS: {0}")]
    Tls(std::io::Error),
    #[error("no connection within {0:?}")]
    ConnectTimedOut(Duration),
    #[error("HTTP: {0}")]
    Http(#[from] hyper::Error),
    #[error("the response is larger than {0} bytes")]
    TooLarge(usize),
    #[error("reading the response: {0}")]
    Body(String),
    /// The caller's deadline for the whole exchange passed.
    #[error("no answer within {0:?}")]
    TimedOut(Duration),
}

/// A complete response: status, headers and the whole (bounded) body.
#[derive(Debug)]
pub struct Response {
    pub status: http::StatusCode,
    pub headers: http::HeaderMap,
    pub body: Bytes,
}

impl Response {
    /// A header's value, when present and text.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// The body as text (invalid UTF-8 replaced).
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// One request: the URL's path and query are sent as they are.
#[derive(Debug)]
pub struct Request<'a> {
    pub method: http::Method,
    /// `http`, `https`, `unix` or `unixs`.
    pub url: &'a Url,
    pub headers: Vec<(http::HeaderName, String)>,
    pub body: Bytes,
}

impl<'a> Request<'a> {
    pub fn new(method: http::Method, url: &'a Url) -> Request<'a> {
        Request {
            method,
            url,
            headers: Vec::new(),
            body: Bytes::new(),
        }
    }

    pub fn header(mut self, name: http::HeaderName, value: impl Into<String>) -> Self {
        self.headers.push((name, value.into()));
        self
    }

    /// The body and its `Content-Type`.
    pub fn body(mut self, content_type: &str, body: impl Into<Bytes>) -> Self {
        self.headers
            .push((http::header::CONTENT_TYPE, content_type.to_owned()));
        self.body = body.into();
        self
    }
}

/// How requests are made: TLS settings, proxy and bounds. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Client {
    tls: Option<Arc<rustls::ClientConfig>>,
    proxy: Option<Url>,
    connect_timeout: Duration,
    max_response_bytes: usize,
}

impl Client {
    /// A client with no TLS settings (so `https` and `unixs` URLs fail)
    /// and no proxy.
    pub fn new(connect_timeout: Duration, max_response_bytes: usize) -> Client {
        Client {
            tls: None,
            proxy: None,
            connect_timeout,
            max_response_bytes,
        }
    }

    /// `https` and `unixs` servers are verified, and this client
    /// identified, with `config`. Its ALPN is replaced: this client speaks
    /// HTTP/1.1 whatever the shared configuration offers.
    pub fn tls(mut self, config: impl std::ops::Deref<Target = rustls::ClientConfig>) -> Client {
        let mut config = (*config).clone();
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        self.tls = Some(Arc::new(config));
        self
    }

    /// TCP requests go through the HTTP proxy at `proxy`.
    pub fn proxy(mut self, proxy: Url) -> Client {
        self.proxy = Some(proxy);
        self
    }

    /// Sends `req` and reads the whole response, all within `timeout`.
    pub async fn send(
        &self,
        req: Request<'_>,
        timeout: Duration,
    ) -> Result<Response, HttpClientError> {
        tokio::time::timeout(timeout, self.exchange(req))
            .await
            .map_err(|_| HttpClientError::TimedOut(timeout))?
    }

    async fn exchange(&self, req: Request<'_>) -> Result<Response, HttpClientError> {
        let target = Target::of(req.url)?;
        let via_proxy = self.proxy.as_ref().filter(|_| !target.unix);
        let hreq = self.build(req, &target, via_proxy)?;
        let io = tokio::time::timeout(self.connect_timeout, self.dial(&target, via_proxy))
            .await
            .map_err(|_| HttpClientError::ConnectTimedOut(self.connect_timeout))??;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io)).await?;
        let limit = self.max_response_bytes;
        let work = async move {
            let resp = sender.send_request(hreq).await?;
            let (parts, body) = resp.into_parts();
            // A declared length over the limit is refused unread.
            if hyper::body::Body::size_hint(&body).lower() > limit as u64 {
                return Err(HttpClientError::TooLarge(limit));
            }
            let body = Limited::new(body, limit)
                .collect()
                .await
                .map_err(|e| {
                    if e.is::<LengthLimitError>() {
                        HttpClientError::TooLarge(limit)
                    } else {
                        HttpClientError::Body(e.to_string())
                    }
                })?
                .to_bytes();
            Ok(Response {
                status: parts.status,
                headers: parts.headers,
                body,
            })
        };
        alongside(conn, work).await
    }

    /// The hyper request: origin-form, or absolute-form for plain HTTP
    /// through a proxy (with the proxy's credentials).
    fn build(
        &self,
        req: Request<'_>,
        target: &Target,
        via_proxy: Option<&Url>,
    ) -> Result<http::Request<Full<Bytes>>, HttpClientError> {
        let mut path = req.url.path().to_owned();
        if path.is_empty() {
            path.push('/');
        }
        if let Some(q) = req.url.query() {
            path = format!("{path}?{q}");
        }
        let uri = match via_proxy {
            Some(_) if !target.secure => format!("http://{}{path}", target.authority),
            _ => path,
        };
        let mut b = http::Request::builder()
            .method(req.method)
            .uri(uri)
            .header(http::header::HOST, &target.authority);
        if let Some(p) = via_proxy
            && !target.secure
            && let Some(auth) = proxy_authorization(p)
        {
            b = b.header(http::header::PROXY_AUTHORIZATION, auth);
        }
        for (name, value) in req.headers {
            b = b.header(name, value);
        }
        b.body(Full::new(req.body))
            .map_err(|e| HttpClientError::BadRequest(e.to_string()))
    }

    /// The connection the request goes on, TLS included.
    async fn dial(
        &self,
        target: &Target,
        via_proxy: Option<&Url>,
    ) -> Result<Box<dyn PeerIo>, HttpClientError> {
        let stream: Box<dyn PeerIo> = if target.unix {
            Box::new(
                tokio::net::UnixStream::connect(&target.authority)
                    .await
                    .map_err(HttpClientError::Connect)?,
            )
        } else if let Some(proxy) = via_proxy {
            let host = proxy
                .host_str()
                .ok_or_else(|| HttpClientError::BadUrl(format!("proxy {proxy}: no host")))?;
            let port = proxy.port_or_known_default().unwrap_or(80);
            let tcp = tcp_connect(host, port)
                .await
                .map_err(HttpClientError::ProxyConnect)?;
            if target.secure {
                tunnel(tcp, &target.host_port(), proxy).await?
            } else {
                Box::new(tcp)
            }
        } else {
            Box::new(
                tcp_connect(&target.host, target.port)
                    .await
                    .map_err(HttpClientError::Connect)?,
            )
        };
        if !target.secure {
            return Ok(stream);
        }
        let config = self.tls.clone().ok_or(HttpClientError::NoTls)?;
        let tls = crate::tls::connect::handshake(config, &target.host, stream)
            .await
            .map_err(HttpClientError::Tls)?;
        Ok(Box::new(tls))
    }
}

/// Where a URL points.
struct Target {
    /// TLS on the connection (`https`, `unixs`).
    secure: bool,
    /// A socket file named by `authority` (`unix`, `unixs`).
    unix: bool,
    /// The host as in the URL (IPv6 in brackets).
    host: String,
    port: u16,
    /// `host[:port]`: the `Host` header, and a unix URL's socket file.
    authority: String,
}

impl Target {
    fn of(url: &Url) -> Result<Target, HttpClientError> {
        let (secure, unix) = match url.scheme() {
            "http" => (false, false),
            "https" => (true, false),
            "unix" => (false, true),
            "unixs" => (true, true),
            s => {
                return Err(HttpClientError::BadUrl(format!(
                    "{url}: unsupported scheme {s:?}"
                )));
            }
        };
        let host = url
            .host_str()
            .ok_or_else(|| HttpClientError::BadUrl(format!("{url}: no host")))?
            .to_owned();
        let authority = match url.port() {
            Some(p) => format!("{host}:{p}"),
            None => host.clone(),
        };
        Ok(Target {
            secure,
            unix,
            port: url.port_or_known_default().unwrap_or(80),
            host,
            authority,
        })
    }

    /// `host:port`, the port always given (a CONNECT target).
    fn host_port(&self) -> String {
        format!("{}:{}", self.host, self.port)
    }
}

async fn tcp_connect(host: &str, port: u16) -> std::io::Result<tokio::net::TcpStream> {
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    let tcp = tokio::net::TcpStream::connect((bare, port)).await?;
    let _ = tcp.set_nodelay(true);
    Ok(tcp)
}

/// Asks the proxy on `tcp` for a tunnel to `authority`; the tunnel once the
/// proxy answers 200.
async fn tunnel(
    tcp: tokio::net::TcpStream,
    authority: &str,
    proxy: &Url,
) -> Result<Box<dyn PeerIo>, HttpClientError> {
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp)).await?;
    let mut b = http::Request::builder()
        .method(http::Method::CONNECT)
        .uri(authority)
        .header(http::header::HOST, authority);
    if let Some(auth) = proxy_authorization(proxy) {
        b = b.header(http::header::PROXY_AUTHORIZATION, auth);
    }
    let req = b
        .body(Full::new(Bytes::new()))
        .map_err(|e| HttpClientError::BadRequest(e.to_string()))?;
    let work = async move {
        let resp = sender.send_request(req).await?;
        if resp.status() != http::StatusCode::OK {
            return Err(HttpClientError::Tunnel(format!(
                "the proxy refused: {}",
                resp.status()
            )));
        }
        let upgraded = hyper::upgrade::on(resp).await?;
        Ok(Box::new(TokioIo::new(upgraded)) as Box<dyn PeerIo>)
    };
    alongside(conn.with_upgrades(), work).await
}

/// Runs hyper's connection task `conn` alongside `work`, the exchange on
/// it, in this task (nothing outlives the caller's deadline). When the
/// connection ends first, hyper has handed the work what it read (a
/// complete response stands even if the peer then resets) or failed its
/// request, so the work ends too; its error is reported as the
/// connection's, which says more.
async fn alongside<T>(
    conn: impl Future<Output = hyper::Result<()>>,
    work: impl Future<Output = Result<T, HttpClientError>>,
) -> Result<T, HttpClientError> {
    tokio::pin!(conn, work);
    let mut conn_result = None;
    loop {
        tokio::select! {
            r = &mut work => {
                return match (r, conn_result) {
                    (Err(_), Some(Err(e))) => Err(HttpClientError::Http(e)),
                    (r, _) => r,
                };
            }
            c = &mut conn, if conn_result.is_none() => conn_result = Some(c),
        }
    }
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

#[cfg(test)]
mod tests;
