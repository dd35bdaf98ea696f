//! Serving gRPC and HTTP on one TCP listener, as etcd does: HTTP/2 with
//! prior knowledge (gRPC clients) and HTTP/1.1 (curl, etcdctl v2, health
//! checks) are told apart by the connection preface.

use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

/// Connections served at once per listener; more wait in the kernel backlog.
const MAX_CONNECTIONS: usize = 16 * 1024;

#[derive(Debug, Clone)]
pub struct ServeOptions {
    pub max_concurrent_streams: u32,
    pub keepalive_interval: Option<Duration>,
    pub keepalive_timeout: Duration,
}

impl Default for ServeOptions {
    fn default() -> Self {
        ServeOptions {
            max_concurrent_streams: u32::MAX,
            keepalive_interval: Some(Duration::from_secs(7200)),
            keepalive_timeout: Duration::from_secs(20),
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
        let (stream, _peer) = match listener.accept().await {
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
            let svc = hyper_util::service::TowerToHyperService::new(router);
            let mut builder =
                hyper_util::server::conn::auto::Builder::new(hyper_util::rt::TokioExecutor::new());
            builder
                .http2()
                .max_concurrent_streams(opts.max_concurrent_streams)
                .keep_alive_interval(opts.keepalive_interval)
                .keep_alive_timeout(opts.keepalive_timeout)
                .timer(hyper_util::rt::TokioTimer::new());
            builder.http1().timer(hyper_util::rt::TokioTimer::new());
            let conn =
                builder.serve_connection_with_upgrades(hyper_util::rt::TokioIo::new(stream), svc);
            // Protocol errors (garbage bytes, resets) end only this connection.
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "connection ended with an error");
            }
        });
    }
}
