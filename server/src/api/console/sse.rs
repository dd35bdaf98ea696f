//! Server-sent event streams, bounded three ways: at most
//! [`super::MAX_SSE_STREAMS`] at once per member (a permit each), at most
//! [`BUFFER_EVENTS`] events queued per stream (a producer that finds the
//! queue full ends the stream rather than grow it — the browser's
//! `EventSource` reconnects, and the watch stream resumes from the last
//! event it delivered), and at most [`MAX_LIFETIME`] per stream, so an
//! abandoned tab does not hold a permit for ever.

use super::Console;
use axum::body::Body;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use std::time::Duration;
use tokio::sync::{OwnedSemaphorePermit, mpsc};

/// Events queued for one stream before it counts as stalled.
pub const BUFFER_EVENTS: usize = 16;
/// How long one stream lives; the browser then reconnects. Shorter than
/// the default `--auth-token-ttl` (5 min): the reconnect resolves the
/// session's token again, which both re-checks it and keeps an open page's
/// session alive, as any use of a simple token does.
pub const MAX_LIFETIME: Duration = Duration::from_secs(240);
/// A comment line this often keeps proxies from closing an idle stream.
pub const KEEPALIVE: Duration = Duration::from_secs(15);

/// The producer's end of a stream. Dropping it ends the stream.
pub struct Stream {
    tx: mpsc::Sender<Bytes>,
    _permit: OwnedSemaphorePermit,
}

/// What a send found.
#[derive(Debug, PartialEq, Eq)]
pub enum Sent {
    Queued,
    /// The browser is not reading fast enough: end the stream.
    Full,
    /// The browser went away.
    Closed,
}

impl Stream {
    /// Queues one event (`id` becomes the browser's `Last-Event-ID`).
    pub fn send(&self, event: &str, id: Option<i64>, data: &str) -> Sent {
        self.send_raw(format_event(event, id, data))
    }

    pub fn keepalive(&self) -> Sent {
        self.send_raw(Bytes::from_static(b": keepalive\n\n"))
    }

    fn send_raw(&self, b: Bytes) -> Sent {
        match self.tx.try_send(b) {
            Ok(()) => Sent::Queued,
            Err(mpsc::error::TrySendError::Full(_)) => Sent::Full,
            Err(mpsc::error::TrySendError::Closed(_)) => Sent::Closed,
        }
    }

    /// Resolves when the browser has gone away.
    pub async fn closed(&self) {
        self.tx.closed().await
    }
}

/// Opens a stream: the response to return and the producer's end; no
/// producer when every stream permit is taken (answer [`refused`] then).
pub fn open(c: &Console) -> (Response, Option<Stream>) {
    let Ok(permit) = std::sync::Arc::clone(&c.streams).try_acquire_owned() else {
        return (refused(), None);
    };
    let (tx, rx) = mpsc::channel::<Bytes>(BUFFER_EVENTS);
    let body = Body::from_stream(futures::stream::unfold(rx, |mut rx| async move {
        rx.recv()
            .await
            .map(|b| (Ok::<_, std::convert::Infallible>(b), rx))
    }));
    let resp = (
        [
            (header::CONTENT_TYPE, "text/event-stream; charset=utf-8"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        body,
    )
        .into_response();
    (
        resp,
        Some(Stream {
            tx,
            _permit: permit,
        }),
    )
}

/// The answer when every stream permit is taken: 503, and a reason.
pub fn refused() -> Response {
    (
        StatusCode::SERVICE_UNAVAILABLE,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        format!(
            "Too many live console streams on this member (limit {}); reload the page to see the current state.\n",
            super::MAX_SSE_STREAMS
        ),
    )
        .into_response()
}

/// One event in the SSE wire format: every line of `data` its own `data:`
/// line (a bare `\r` would end a line too, so it is dropped).
pub fn format_event(event: &str, id: Option<i64>, data: &str) -> Bytes {
    let mut out = String::with_capacity(data.len() + 64);
    out.push_str("event: ");
    out.push_str(event);
    out.push('\n');
    if let Some(id) = id {
        out.push_str(&format!("id: {id}\n"));
    }
    for line in data.split('\n') {
        out.push_str("data: ");
        out.push_str(&line.replace('\r', ""));
        out.push('\n');
    }
    out.push('\n');
    Bytes::from(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_are_framed_line_by_line() {
        assert_eq!(
            format_event("kv", Some(7), "a\nb\r\nc"),
            Bytes::from_static(b"event: kv\nid: 7\ndata: a\ndata: b\ndata: c\n\n")
        );
        assert_eq!(
            format_event("x", None, ""),
            Bytes::from_static(b"event: x\ndata: \n\n")
        );
    }
}
