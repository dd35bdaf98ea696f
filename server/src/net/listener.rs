//! Serving gRPC and HTTP on one TCP listener, as etcd does: HTTP/2 with
//! prior knowledge (gRPC clients) and HTTP/1.1 (curl, etcdctl v2, health
//! checks) are told apart by the connection preface.
//!
//! On an `https` listener every connection first completes a TLS handshake
//! (bounded by `tls::HANDSHAKE_TIMEOUT`, with the certificate in force at
//! that moment; ALPN offers h2 and http/1.1), then is served the same way,
//! and each request carries a `tls::PeerIdentity` extension.

use crate::tls::{PeerIdentity, ReloadableTlsConfig};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

/// Connections served at once per listener; more wait in the kernel backlog.
const MAX_CONNECTIONS: usize = 16 * 1024;

#[derive(Debug, Clone)]
pub struct ServeOptions {
    pub max_concurrent_streams: u32,
    pub keepalive_interval: Option<Duration>,
    pub keepalive_timeout: Duration,
    /// Serve TLS with this (live-reloaded) configuration; `None` for a
    /// plain `http` listener.
    pub tls: Option<Arc<ReloadableTlsConfig>>,
}

impl Default for ServeOptions {
    fn default() -> Self {
        ServeOptions {
            max_concurrent_streams: u32::MAX,
            keepalive_interval: Some(Duration::from_secs(7200)),
            keepalive_timeout: Duration::from_secs(20),
            tls: None,
        }
    }
}

/// Accepts connections until the task is dropped.
pub async fn serve(listener: TcpListener, router: axum::Router, opts: ServeOptions) {
    let permits = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        let permit = match Arc::clone(&permits).acquire_owned().await {
            Ok(p) => p,
            Err(_) => return,
        };
        let (stream, peer) = match listener.accept().await {
            Ok(s) => s,
            Err(e) => {
                // Out of file descriptors and the like: back off, keep serving.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let router = router.clone();
        let opts = opts.clone();
        tokio::spawn(async move {
            let _permit = permit;
            match opts.tls.clone() {
                None => serve_connection(stream, router, &opts, None).await,
                Some(tls) => {
                    // Scanners, plain-HTTP clients, wrong CAs: only this
                    // connection ends (`accept` counts and logs it).
                    if let Ok((stream, identity)) = tls.accept(stream, peer).await {
                        serve_connection(stream, router, &opts, Some(identity)).await
                    }
                }
            }
        });
    }
}

/// Serves HTTP/1.1 and HTTP/2 on one accepted (and, for TLS, handshaken)
/// connection until it ends.
async fn serve_connection<IO>(
    stream: IO,
    router: axum::Router,
    opts: &ServeOptions,
    identity: Option<PeerIdentity>,
) where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let svc = hyper_util::service::TowerToHyperService::new(WithIdentity {
        inner: router,
        identity,
    });
    let mut builder =
        hyper_util::server::conn::auto::Builder::new(hyper_util::rt::TokioExecutor::new());
    builder
        .http2()
        .max_concurrent_streams(opts.max_concurrent_streams)
        .keep_alive_interval(opts.keepalive_interval)
        .keep_alive_timeout(opts.keepalive_timeout)
        .timer(hyper_util::rt::TokioTimer::new());
    builder.http1().timer(hyper_util::rt::TokioTimer::new());
    // etcdctl dials members' advertised URLs with the whole URL as
    // the HTTP/2 authority; h2 would reset those streams.
    let stream = super::h2_authority::NormalizeAuthority::new(stream);
    let conn = builder.serve_connection_with_upgrades(hyper_util::rt::TokioIo::new(stream), svc);
    // Protocol errors (garbage bytes, resets) end only this connection.
    if let Err(e) = conn.await {
        tracing::debug!(error = %e, "connection ended with an error");
    }
}

/// Adds the connection's [`PeerIdentity`] (TLS connections only) to every
/// request before the router sees it.
#[derive(Clone)]
struct WithIdentity<S> {
    inner: S,
    identity: Option<PeerIdentity>,
}

impl<S, B> tower::Service<http::Request<B>> for WithIdentity<S>
where
    S: tower::Service<http::Request<B>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: http::Request<B>) -> Self::Future {
        if let Some(id) = &self.identity {
            req.extensions_mut().insert(id.clone());
        }
        self.inner.call(req)
    }
}
