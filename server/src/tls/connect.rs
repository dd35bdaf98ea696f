//! The client side: connections to other members' `https`, `unix` and
//! `unixs` peer URLs, for the gRPC peer transport (as a tonic connector)
//! and for the HTTP/1.1 requests of `net::http_client`.
//!
//! A unix peer URL names a socket file by its `host:port`, relative to the
//! working directory, as etcd 3.4 dials it (Go's `http.Transport` with a
//! unix dialer: `unix://localhost:2380` connects to the file
//! `localhost:2380`; `unixs` adds TLS, verifying the server as `localhost`).

use super::{HANDSHAKE_TIMEOUT, ReloadableTlsConfig};
use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpStream, UnixStream};
use tokio_rustls::client::TlsStream;

/// Any connection to a peer: TCP or unix, with or without TLS.
pub trait PeerIo: AsyncRead + AsyncWrite + Send + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin> PeerIo for T {}

/// The client configuration for the next connection to a peer: the peer
/// side's current one (so reloaded certificates are used from the next
/// connection on), or system roots without a client certificate when this
/// member has no peer TLS settings.
pub fn peer_client_config(
    peer_tls: Option<&ReloadableTlsConfig>,
) -> Result<Arc<rustls::ClientConfig>, String> {
    match peer_tls.and_then(ReloadableTlsConfig::client_config) {
        Some(c) => Ok(c),
        None => super::fallback_client_config(),
    }
}

/// Completes a TLS handshake on `stream` (TCP, a unix socket, a proxy's
/// tunnel), verifying the server as `host` (an IP address or a DNS name,
/// brackets allowed). Unbounded: callers put their own deadline on it.
pub async fn handshake<S>(
    config: Arc<rustls::ClientConfig>,
    host: &str,
    stream: S,
) -> std::io::Result<TlsStream<S>>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let name = ServerName::try_from(host.to_string()).map_err(|e| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!("{host:?} is not a valid TLS server name: {e}"),
        )
    })?;
    tokio_rustls::TlsConnector::from(config)
        .connect(name, stream)
        .await
}

/// Opens a TCP connection to `host:port` and completes a TLS handshake,
/// verifying the server as `host` (an IP address or a DNS name), within
/// [`HANDSHAKE_TIMEOUT`].
pub async fn connect(
    config: Arc<rustls::ClientConfig>,
    host: &str,
    port: u16,
) -> std::io::Result<TlsStream<TcpStream>> {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let work = async {
        let tcp = TcpStream::connect((host, port)).await?;
        let _ = tcp.set_nodelay(true);
        handshake(config, host, tcp).await
    };
    tokio::time::timeout(HANDSHAKE_TIMEOUT, work)
        .await
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "TLS handshake timed out"))?
}

/// Connects to the unix socket a `unix://host:port` or `unixs://host:port`
/// URL names (`authority` is its `host:port`); with `config`, completes a
/// TLS handshake verifying the server as `host`. Bounded by
/// [`HANDSHAKE_TIMEOUT`].
pub async fn connect_unix(
    config: Option<Arc<rustls::ClientConfig>>,
    authority: &str,
) -> std::io::Result<Box<dyn PeerIo>> {
    let work = async {
        let stream = UnixStream::connect(authority).await?;
        let Some(config) = config else {
            return Ok(Box::new(stream) as Box<dyn PeerIo>);
        };
        let host = match authority.rsplit_once(':') {
            Some((h, _)) => h,
            None => authority,
        };
        let tls = handshake(config, host, stream).await?;
        Ok(Box::new(tls) as Box<dyn PeerIo>)
    };
    tokio::time::timeout(HANDSHAKE_TIMEOUT, work)
        .await
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "connection timed out"))?
}

/// How a [`PeerConnector`] reaches the address tonic hands it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PeerScheme {
    /// `https`: TCP and TLS.
    Https,
    /// `unix`: the socket file named by the URL's `host:port`.
    Unix,
    /// `unixs`: that socket file, and TLS.
    Unixs,
}

impl PeerScheme {
    /// The connector a peer URL needs; `None` for plain `http` (tonic's own).
    pub fn of(url: &str) -> Option<PeerScheme> {
        let (scheme, _) = url.split_once("://")?;
        match scheme {
            "https" => Some(PeerScheme::Https),
            "unix" => Some(PeerScheme::Unix),
            "unixs" => Some(PeerScheme::Unixs),
            _ => None,
        }
    }
}

/// A tonic connector for `https`, `unix` and `unixs` peer URLs. tonic is
/// handed the URL with an `http` scheme (so it never tries TLS itself,
/// whatever its features); this connector dials the same host and port
/// with TLS, or the socket file the `host:port` names.
#[derive(Clone)]
pub struct PeerConnector {
    pub tls: Option<Arc<ReloadableTlsConfig>>,
    pub scheme: PeerScheme,
}

impl tower::Service<http::Uri> for PeerConnector {
    type Response = TokioIo<Box<dyn PeerIo>>;
    type Error = std::io::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: http::Uri) -> Self::Future {
        let config = peer_client_config(self.tls.as_deref());
        let scheme = self.scheme;
        Box::pin(async move {
            if scheme != PeerScheme::Https {
                let authority = uri
                    .authority()
                    .ok_or_else(|| std::io::Error::other(format!("no host in {uri}")))?
                    .to_string();
                let config = match scheme {
                    PeerScheme::Unixs => Some(config.map_err(std::io::Error::other)?),
                    _ => None,
                };
                return connect_unix(config, &authority).await.map(TokioIo::new);
            }
            let config = config.map_err(std::io::Error::other)?;
            let host = uri
                .host()
                .ok_or_else(|| std::io::Error::other(format!("no host in {uri}")))?
                .to_string();
            let port = uri.port_u16().unwrap_or(443);
            connect(config, &host, port)
                .await
                .map(|s| TokioIo::new(Box::new(s) as Box<dyn PeerIo>))
        })
    }
}
