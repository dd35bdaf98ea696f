//! The client side: TLS connections to other members' `https` peer URLs,
//! for the gRPC peer transport (as a tonic connector) and for the plain
//! HTTP/1.1 requests of `http_client`.

use super::{HANDSHAKE_TIMEOUT, ReloadableTlsConfig};
use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

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

/// Opens a TCP connection to `host:port` and completes a TLS handshake,
/// verifying the server as `host` (an IP address or a DNS name), within
/// [`HANDSHAKE_TIMEOUT`].
pub async fn connect(
    config: Arc<rustls::ClientConfig>,
    host: &str,
    port: u16,
) -> std::io::Result<TlsStream<TcpStream>> {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let name = ServerName::try_from(host.to_string()).map_err(|e| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!("{host:?} is not a valid TLS server name: {e}"),
        )
    })?;
    let work = async {
        let tcp = TcpStream::connect((host, port)).await?;
        let _ = tcp.set_nodelay(true);
        tokio_rustls::TlsConnector::from(config)
            .connect(name, tcp)
            .await
    };
    tokio::time::timeout(HANDSHAKE_TIMEOUT, work)
        .await
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "TLS handshake timed out"))?
}

/// A tonic connector for `https` peer URLs. tonic is handed the URL with
/// an `http` scheme (so it never tries TLS itself, whatever its features);
/// this connector dials the same host and port with TLS.
#[derive(Clone)]
pub struct PeerConnector {
    pub tls: Option<Arc<ReloadableTlsConfig>>,
}

impl tower::Service<http::Uri> for PeerConnector {
    type Response = TokioIo<TlsStream<TcpStream>>;
    type Error = std::io::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: http::Uri) -> Self::Future {
        let config = peer_client_config(self.tls.as_deref());
        Box::pin(async move {
            let config = config.map_err(std::io::Error::other)?;
            let host = uri
                .host()
                .ok_or_else(|| std::io::Error::other(format!("no host in {uri}")))?
                .to_string();
            let port = uri.port_u16().unwrap_or(443);
            connect(config, &host, port).await.map(TokioIo::new)
        })
    }
}
