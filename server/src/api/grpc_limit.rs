//! The gRPC receive limit, applied while a request body streams in.
//!
//! etcd caps every gRPC message a client sends at `--max-request-bytes`
//! plus 512 KiB (grpc-go's `MaxRecvMsgSize`). That setting is live in
//! Cairn, but tonic fixes its own per-service limit when the services are
//! built. So the services get a fixed ceiling (see [`DECODE_CEILING`]) and
//! this layer enforces the limit in force when the request started: it reads
//! the 5-byte header of each length-prefixed gRPC message as the body
//! arrives and fails the body as soon as a header announces a message over
//! the limit. Nothing of such a message is buffered, and the client gets
//! grpc-go's error (RESOURCE_EXHAUSTED, "grpc: received message larger than
//! max (N vs. M)"), which tonic passes on because the body error is a
//! `Status`.

use super::GRPC_OVERHEAD_BYTES;
use crate::etcdserver::EtcdServer;
use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use tonic::Status;

/// The ceiling given to tonic: the largest limit configuration can ask for
/// (`--max-request-bytes` is a `u32`) plus gRPC's overhead, so a limit
/// raised by a reload is never cut short by the value at startup. The real
/// limit is enforced by [`limit_layer`].
pub const DECODE_CEILING: usize = u32::MAX as usize + GRPC_OVERHEAD_BYTES;

/// Length of a gRPC message header: a compression flag and a big-endian
/// `u32` length.
const HEADER_LEN: usize = 5;

/// Wraps a client gRPC request's body in a [`FrameLimit`] with the receive
/// limit in force now (a reload applies to calls that start after it).
pub async fn limit_layer(
    axum::extract::State(srv): axum::extract::State<Arc<EtcdServer>>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    let limit = srv.max_request_bytes() + GRPC_OVERHEAD_BYTES;
    let req = req.map(|body| axum::body::Body::new(FrameLimit::new(body, limit)));
    next.run(req).await
}

/// A request body that fails once a gRPC message header announces more than
/// `limit` bytes. Frames pass through unchanged otherwise.
pub struct FrameLimit<B> {
    inner: B,
    limit: usize,
    /// The header being read, `have` bytes of it so far.
    header: [u8; HEADER_LEN],
    have: usize,
    /// Bytes of the current message still to come (after its header).
    payload_left: usize,
    /// The limit was exceeded and reported; the body ends here.
    failed: bool,
}

impl<B> FrameLimit<B> {
    pub fn new(inner: B, limit: usize) -> Self {
        FrameLimit {
            inner,
            limit,
            header: [0; HEADER_LEN],
            have: 0,
            payload_left: 0,
            failed: false,
        }
    }

    /// Follows the message boundaries through one chunk of the body.
    fn scan(&mut self, mut data: &[u8]) -> Result<(), Status> {
        while !data.is_empty() {
            if self.payload_left > 0 {
                let n = self.payload_left.min(data.len());
                self.payload_left -= n;
                data = data.get(n..).unwrap_or_default();
                continue;
            }
            // `n` fits both the header's free part and `data`.
            let n = (HEADER_LEN - self.have).min(data.len());
            if let (Some(free), Some(head)) =
                (self.header.get_mut(self.have..self.have + n), data.get(..n))
            {
                free.copy_from_slice(head);
            }
            self.have += n;
            data = data.get(n..).unwrap_or_default();
            if self.have == HEADER_LEN {
                self.have = 0;
                let [_, a, b, c, d] = self.header;
                let len = u32::from_be_bytes([a, b, c, d]) as usize;
                if len > self.limit {
                    return Err(Status::resource_exhausted(format!(
                        "grpc: received message larger than max ({len} vs. {})",
                        self.limit
                    )));
                }
                self.payload_left = len;
            }
        }
        Ok(())
    }
}

impl<B> Body for FrameLimit<B>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<tower::BoxError>,
{
    type Data = Bytes;
    type Error = tower::BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = self.get_mut();
        if this.failed {
            return Poll::Ready(None);
        }
        match ready!(Pin::new(&mut this.inner).poll_frame(cx)) {
            Some(Ok(frame)) => {
                if let Some(data) = frame.data_ref()
                    && let Err(status) = this.scan(data)
                {
                    this.failed = true;
                    return Poll::Ready(Some(Err(Box::new(status))));
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Some(Err(e)) => Poll::Ready(Some(Err(e.into()))),
            None => Poll::Ready(None),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.failed || self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        if self.failed {
            SizeHint::with_exact(0)
        } else {
            self.inner.size_hint()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    /// A gRPC message with a `len`-byte payload.
    fn message(len: usize) -> Vec<u8> {
        let mut m = vec![0u8];
        m.extend_from_slice(&(len as u32).to_be_bytes());
        m.resize(HEADER_LEN + len, 7);
        m
    }

    /// Feeds `body` in chunks of `chunk` bytes; the bytes that got through
    /// and the error, if any.
    fn run(body: &[u8], chunk: usize, limit: usize) -> (usize, Option<Status>) {
        let chunks: Vec<Result<Frame<Bytes>, std::convert::Infallible>> = body
            .chunks(chunk)
            .map(|c| Ok(Frame::data(Bytes::copy_from_slice(c))))
            .collect();
        let inner = http_body_util::StreamBody::new(futures::stream::iter(chunks));
        let mut limited = FrameLimit::new(inner, limit);
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        rt.block_on(async {
            let mut passed = 0;
            while let Some(frame) = limited.frame().await {
                match frame {
                    Ok(f) => passed += f.data_ref().map_or(0, Bytes::len),
                    Err(e) => {
                        let status = e.downcast::<Status>().map(|s| *s).ok();
                        return (passed, status);
                    }
                }
            }
            (passed, None)
        })
    }

    #[test]
    fn messages_within_the_limit_pass_whatever_the_chunking() {
        let mut body = message(100);
        body.extend(message(0));
        body.extend(message(40));
        for chunk in [1, 2, 3, 5, 7, 64, 1000] {
            let (passed, status) = run(&body, chunk, 100);
            assert!(status.is_none(), "chunk {chunk}: {status:?}");
            assert_eq!(passed, body.len(), "chunk {chunk}");
        }
    }

    #[test]
    fn a_header_over_the_limit_fails_the_body_at_once() {
        // The second message is too big: the first passes, the second's
        // header chunk is refused before any of its payload is read.
        let mut body = message(10);
        body.extend(message(101));
        let (passed, status) = run(&body, HEADER_LEN + 10, 100);
        assert_eq!(passed, HEADER_LEN + 10);
        let status = status.expect("an error");
        assert_eq!(status.code(), tonic::Code::ResourceExhausted);
        assert_eq!(
            status.message(),
            "grpc: received message larger than max (101 vs. 100)"
        );
        // Split headers are read correctly too.
        let (_, status) = run(&message(4096), 2, 4095);
        assert_eq!(
            status.map(|s| s.message().to_string()).as_deref(),
            Some("grpc: received message larger than max (4096 vs. 4095)")
        );
    }
}
