//! Serving gRPC and HTTP on one TCP listener, as etcd does: HTTP/2 with
//! prior knowledge (gRPC clients) and HTTP/1.1 (curl, etcdctl v2, health
//! checks) are told apart by the connection preface.
//!
//! On an `https` listener every connection first completes a TLS handshake
//! (bounded by `tls::HANDSHAKE_TIMEOUT`, with the certificate in force at
//! that moment; ALPN offers h2 and http/1.1), then is served the same way,
//! and each request carries a `tls::PeerIdentity` extension.
//!
//! A listener named by both an `http` and an `https` URL (etcd allows
//! `http://h:2379,https://h:2379`) serves both on the one socket: like
//! etcd's cmux, it looks at a connection's first byte, and a TLS handshake
//! record (0x16) gets TLS while anything else is served plain.
//!
//! The same serving runs on unix sockets (`unix://`, `unixs://` URLs, see
//! `net::unix`): [`Listener`] and [`Conn`] hide which kind it is.

use crate::tls::{PeerIdentity, ReloadableTlsConfig};
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream, UnixListener, UnixStream};
use tokio::sync::{Semaphore, watch};

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
    /// Stop accepting and close every connection gracefully when this
    /// turns true (see [`Drain`]); `None`: serve until the process exits.
    pub drain: Option<watch::Receiver<bool>>,
    /// With `tls`: also serve plain connections, told apart by their first
    /// byte (the address has both an `http` and an `https` URL).
    pub plain_too: bool,
    /// HTTP/2 receive windows (stream, connection) in bytes; `None` keeps
    /// hyper's 1 MiB. What a sender may have in flight before it waits for
    /// the receiver to read: the peer listener takes snapshots of hundreds
    /// of megabytes in 1 MiB chunks, which a 1 MiB window turns into one
    /// round trip per chunk. Also what one connection can make us buffer.
    pub h2_window_bytes: Option<(u32, u32)>,
}

/// A graceful stop of the listeners given its receivers: no new
/// connections, HTTP/2 connections get GOAWAY (requests already sent are
/// answered, clients open new streams elsewhere), idle HTTP/1.1 connections
/// close. etcd does the same with gRPC's GracefulStop on SIGTERM.
pub struct Drain {
    tx: watch::Sender<bool>,
}

impl Default for Drain {
    fn default() -> Self {
        Drain {
            tx: watch::channel(false).0,
        }
    }
}

impl Drain {
    /// What a listener and its connections watch.
    pub fn receiver(&self) -> watch::Receiver<bool> {
        self.tx.subscribe()
    }

    /// Starts the drain and waits until every listener and connection
    /// holding a receiver has ended, or `timeout` (long-lived streams such
    /// as watches would otherwise hold the stop forever). True if all ended.
    pub async fn drain(&self, timeout: Duration) -> bool {
        self.tx.send_replace(true);
        tokio::time::timeout(timeout, self.tx.closed())
            .await
            .is_ok()
    }
}

/// The first byte of every TLS connection: a handshake record.
const TLS_HANDSHAKE_RECORD: u8 = 0x16;
/// How long a connection on a shared plain/TLS port may take to send its
/// first byte before it is dropped.
const SNIFF_TIMEOUT: Duration = Duration::from_secs(10);

impl Default for ServeOptions {
    fn default() -> Self {
        ServeOptions {
            max_concurrent_streams: u32::MAX,
            keepalive_interval: Some(Duration::from_secs(7200)),
            keepalive_timeout: Duration::from_secs(20),
            tls: None,
            drain: None,
            plain_too: false,
            h2_window_bytes: None,
        }
    }
}

/// A listening socket: TCP, or a unix socket.
pub enum Listener {
    Tcp(TcpListener),
    Unix(UnixListener),
}

impl From<TcpListener> for Listener {
    fn from(l: TcpListener) -> Self {
        Listener::Tcp(l)
    }
}

impl From<UnixListener> for Listener {
    fn from(l: UnixListener) -> Self {
        Listener::Unix(l)
    }
}

impl Listener {
    /// The next connection and where it came from (for logs; a unix
    /// socket's clients have no address worth showing).
    async fn accept(&self) -> io::Result<(Conn, String)> {
        match self {
            Listener::Tcp(l) => {
                let (s, peer) = l.accept().await?;
                let _ = s.set_nodelay(true);
                Ok((Conn::Tcp(s), peer.to_string()))
            }
            Listener::Unix(l) => {
                let (s, _) = l.accept().await?;
                Ok((
                    Conn::Unix {
                        stream: s,
                        first: None,
                    },
                    // What Go shows for an unnamed unix peer.
                    "@".to_string(),
                ))
            }
        }
    }
}

/// An accepted connection on either kind of [`Listener`].
pub enum Conn {
    Tcp(TcpStream),
    /// `first`: a byte already read to tell TLS from plain (tokio's unix
    /// streams cannot peek), handed out before anything else.
    Unix {
        stream: UnixStream,
        first: Option<u8>,
    },
}

impl AsyncRead for Conn {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Conn::Tcp(s) => Pin::new(s).poll_read(cx, buf),
            Conn::Unix { stream, first } => {
                if buf.remaining() > 0
                    && let Some(b) = first.take()
                {
                    buf.put_slice(&[b]);
                    return Poll::Ready(Ok(()));
                }
                Pin::new(stream).poll_read(cx, buf)
            }
        }
    }
}

impl AsyncWrite for Conn {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Conn::Tcp(s) => Pin::new(s).poll_write(cx, buf),
            Conn::Unix { stream, .. } => Pin::new(stream).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Conn::Tcp(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Conn::Unix { stream, .. } => Pin::new(stream).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Conn::Tcp(s) => s.is_write_vectored(),
            Conn::Unix { stream, .. } => stream.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Conn::Tcp(s) => Pin::new(s).poll_flush(cx),
            Conn::Unix { stream, .. } => Pin::new(stream).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Conn::Tcp(s) => Pin::new(s).poll_shutdown(cx),
            Conn::Unix { stream, .. } => Pin::new(stream).poll_shutdown(cx),
        }
    }
}

/// Accepts connections until the task is dropped or `opts.drain` says stop.
pub async fn serve(listener: impl Into<Listener>, router: axum::Router, opts: ServeOptions) {
    let listener = listener.into();
    let permits = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    // The loop's own receiver; connections get clones of it.
    let mut drain = opts.drain.clone();
    loop {
        let permit = match Arc::clone(&permits).acquire_owned().await {
            Ok(p) => p,
            Err(_) => return,
        };
        let accepted = match drain.as_mut() {
            None => listener.accept().await,
            Some(rx) => tokio::select! {
                a = listener.accept() => a,
                _ = stop_requested(rx) => {
                    // Dropping the listener refuses new connections at once.
                    return;
                }
            },
        };
        let (mut stream, peer) = match accepted {
            Ok(s) => s,
            Err(e) => {
                // Out of file descriptors and the like: back off, keep serving.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let router = router.clone();
        let opts = opts.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let tls = match opts.tls.clone() {
                Some(_) if opts.plain_too && !starts_with_tls(&mut stream).await => None,
                tls => tls,
            };
            match tls {
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

/// Resolves once a drain starts; never if its [`Drain`] is gone.
async fn stop_requested(rx: &mut watch::Receiver<bool>) {
    if rx.wait_for(|stop| *stop).await.is_err() {
        std::future::pending::<()>().await;
    }
}

/// Whether the connection's first byte opens a TLS handshake (peeked, or
/// on a unix socket read and kept for the reader). A connection silent
/// past `SNIFF_TIMEOUT`, or closed, is treated as TLS: the handshake then
/// fails and ends it.
async fn starts_with_tls(conn: &mut Conn) -> bool {
    let mut byte = [0u8; 1];
    let read = match conn {
        Conn::Tcp(s) => tokio::time::timeout(SNIFF_TIMEOUT, s.peek(&mut byte)).await,
        Conn::Unix { stream, first } => {
            let r = tokio::time::timeout(SNIFF_TIMEOUT, stream.read(&mut byte)).await;
            if let Ok(Ok(1)) = r {
                *first = Some(byte[0]);
            }
            r
        }
    };
    match read {
        Ok(Ok(1)) => byte[0] == TLS_HANDSHAKE_RECORD,
        _ => true,
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
    if let Some((stream_bytes, connection_bytes)) = opts.h2_window_bytes {
        builder
            .http2()
            .initial_stream_window_size(stream_bytes)
            .initial_connection_window_size(connection_bytes);
    }
    builder.http1().timer(hyper_util::rt::TokioTimer::new());
    // etcdctl dials members' advertised URLs with the whole URL as
    // the HTTP/2 authority; h2 would reset those streams.
    let stream = super::h2_authority::NormalizeAuthority::new(stream);
    let conn = builder.serve_connection_with_upgrades(hyper_util::rt::TokioIo::new(stream), svc);
    tokio::pin!(conn);
    let result = match opts.drain.clone() {
        None => conn.await,
        Some(mut rx) => tokio::select! {
            r = conn.as_mut() => r,
            _ = stop_requested(&mut rx) => {
                conn.as_mut().graceful_shutdown();
                conn.await
            }
        },
    };
    // Protocol errors (garbage bytes, resets) end only this connection.
    if let Err(e) = result {
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
