//! The HTTP side of etcd 3.4's gateway (grpc-gateway v1): status codes for
//! gRPC codes, the error bodies, and the framing of streamed responses.

use super::gojson;
use axum::body::Body;
use axum::response::Response;
use bytes::Bytes;
use futures::StreamExt as _;
use futures::stream::BoxStream;
use http::{HeaderMap, HeaderValue, StatusCode, header};
use http_body::Frame;
use std::convert::Infallible;
use tokio::sync::oneshot;
use tonic::{Code, Status};

const JSON: HeaderValue = HeaderValue::from_static("application/json");
/// grpc-gateway repeats the gRPC header metadata it got as
/// `Grpc-Metadata-*`; a gRPC server always sends its content type.
const GRPC_METADATA_CONTENT_TYPE: &str = "grpc-metadata-content-type";
/// ... and its trailer metadata as `Grpc-Trailer-*` on errors.
const GRPC_TRAILER_CONTENT_TYPE: &str = "grpc-trailer-content-type";
const GRPC: HeaderValue = HeaderValue::from_static("application/grpc");

/// The HTTP status grpc-gateway v1.9 (etcd 3.4) gives each gRPC code.
/// Checked against etcd 3.4.23 where a request can provoke the code; note
/// FailedPrecondition is 412 there (later gateways answer 400).
pub(super) fn http_status(code: Code) -> StatusCode {
    match code {
        Code::Ok => StatusCode::OK,
        Code::Cancelled => StatusCode::REQUEST_TIMEOUT,
        Code::InvalidArgument | Code::OutOfRange => StatusCode::BAD_REQUEST,
        Code::DeadlineExceeded => StatusCode::GATEWAY_TIMEOUT,
        Code::NotFound => StatusCode::NOT_FOUND,
        Code::AlreadyExists | Code::Aborted => StatusCode::CONFLICT,
        Code::PermissionDenied => StatusCode::FORBIDDEN,
        Code::Unauthenticated => StatusCode::UNAUTHORIZED,
        Code::ResourceExhausted => StatusCode::TOO_MANY_REQUESTS,
        Code::FailedPrecondition => StatusCode::PRECONDITION_FAILED,
        Code::Unimplemented => StatusCode::NOT_IMPLEMENTED,
        Code::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        Code::Unknown | Code::Internal | Code::DataLoss => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

/// `{"error":…,"message":…,"code":…}` — the message twice, as etcd 3.4
/// writes it; like every field of its JSON, left out when empty.
pub(super) fn error_body(code: Code, message: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(2 * message.len() + 40);
    out.push(b'{');
    if !message.is_empty() {
        out.extend_from_slice(b"\"error\":");
        gojson::write_str(&mut out, message);
        out.extend_from_slice(b",\"message\":");
        gojson::write_str(&mut out, message);
        out.push(b',');
    }
    out.extend_from_slice(format!("\"code\":{}}}", code as i32).as_bytes());
    out
}

/// A stream's error, as the last chunk of a streamed response (no newline
/// after it, as etcd).
pub(super) fn stream_error_chunk(status: &Status) -> Vec<u8> {
    let http = http_status(status.code());
    let mut out = Vec::with_capacity(status.message().len() + 100);
    out.extend_from_slice(
        format!(
            "{{\"error\":{{\"grpc_code\":{},\"http_code\":{}",
            status.code() as i32,
            http.as_u16()
        )
        .as_bytes(),
    );
    if !status.message().is_empty() {
        out.extend_from_slice(b",\"message\":");
        gojson::write_str(&mut out, status.message());
    }
    out.extend_from_slice(b",\"http_status\":");
    gojson::write_str(&mut out, http.canonical_reason().unwrap_or_default());
    out.extend_from_slice(b"}}");
    out
}

fn response(status: StatusCode, headers: HeaderMap, body: Body) -> Response {
    let mut r = Response::new(body);
    *r.status_mut() = status;
    *r.headers_mut() = headers;
    r
}

fn json_headers() -> HeaderMap {
    let mut h = HeaderMap::new();
    h.insert(header::CONTENT_TYPE, JSON);
    h
}

/// An error the gateway itself found before calling anything (a body that
/// is not the request message): a plain body, no gRPC trailer.
pub(super) fn gateway_error(code: Code, message: &str) -> Response {
    response(
        http_status(code),
        json_headers(),
        Body::from(error_body(code, message)),
    )
}

/// An error a service call returned. etcd sends these chunked, with the
/// gRPC trailer metadata forwarded as an HTTP trailer (hyper delivers it to
/// clients that ask with `TE: trailers`).
pub(super) fn call_error(status: &Status) -> Response {
    let mut headers = json_headers();
    headers.insert(
        header::TRAILER,
        HeaderValue::from_static("Grpc-Trailer-Content-Type"),
    );
    let mut trailers = HeaderMap::new();
    trailers.insert(GRPC_TRAILER_CONTENT_TYPE, GRPC);
    let frames: Vec<Result<Frame<Bytes>, Infallible>> = vec![
        Ok(Frame::data(Bytes::from(error_body(
            status.code(),
            status.message(),
        )))),
        Ok(Frame::trailers(trailers)),
    ];
    response(
        http_status(status.code()),
        headers,
        Body::new(http_body_util::StreamBody::new(futures::stream::iter(
            frames,
        ))),
    )
}

/// The answer to a unary call.
pub(super) fn unary<T: serde::Serialize>(result: Result<tonic::Response<T>, Status>) -> Response {
    let msg = match result {
        Ok(r) => r.into_inner(),
        Err(status) => return call_error(&status),
    };
    match gojson::to_vec(&msg) {
        Ok(body) => {
            let mut headers = json_headers();
            headers.insert(GRPC_METADATA_CONTENT_TYPE, GRPC);
            response(StatusCode::OK, headers, Body::from(body))
        }
        Err(e) => call_error(&Status::internal(format!(
            "cairn: cannot encode the response: {e}"
        ))),
    }
}

/// Go's `http.Error` text bodies, as grpc-gateway's mux answers an unknown
/// path or a method other than POST.
fn plain(status: StatusCode) -> Response {
    plain_text(
        status,
        format!("{}\n", status.canonical_reason().unwrap_or_default()),
    )
}

fn plain_text(status: StatusCode, text: String) -> Response {
    let mut headers = HeaderMap::new();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    response(status, headers, Body::from(text))
}

pub(super) fn not_found() -> Response {
    plain(StatusCode::NOT_FOUND)
}

/// Go's `http.NotFound`, what etcd's outer mux answers off the gateway.
pub(super) fn mux_not_found() -> Response {
    plain_text(StatusCode::NOT_FOUND, "404 page not found\n".to_string())
}

pub(super) fn method_not_allowed() -> Response {
    plain(StatusCode::METHOD_NOT_ALLOWED)
}

/// A stream of responses on its way to the client.
pub(super) struct Forward {
    /// Serialized messages (or the stream's error).
    inner: BoxStream<'static, Result<Vec<u8>, Status>>,
    /// The request side ending the stream: with an error the server would
    /// have ended it with (an oversized message), or quietly (`None`: the
    /// client is gone).
    fail: Option<oneshot::Receiver<Option<Status>>>,
    /// Dropped with the response: tells the request side the client left.
    _alive: Option<oneshot::Sender<()>>,
    done: bool,
}

impl Forward {
    pub(super) fn new<S, M>(
        stream: S,
        fail: Option<oneshot::Receiver<Option<Status>>>,
        alive: Option<oneshot::Sender<()>>,
    ) -> Forward
    where
        S: futures::Stream<Item = Result<M, Status>> + Send + 'static,
        M: serde::Serialize,
    {
        let inner = stream
            .map(|item| {
                item.and_then(|m| {
                    gojson::to_vec(&m).map_err(|e| {
                        Status::internal(format!("cairn: cannot encode the response: {e}"))
                    })
                })
            })
            .boxed();
        Forward {
            inner,
            fail,
            _alive: alive,
            done: false,
        }
    }

    /// The next message or the terminal error; `None` once finished.
    async fn next(&mut self) -> Option<Result<Vec<u8>, Status>> {
        if self.done {
            return None;
        }
        let item = loop {
            let Some(fail) = self.fail.as_mut() else {
                break self.inner.next().await;
            };
            tokio::select! {
                biased;
                r = fail => {
                    self.fail = None;
                    match r {
                        Ok(Some(status)) => break Some(Err(status)),
                        Ok(None) => break None,
                        // Dropped unused: only the service ends the stream.
                        Err(_) => {}
                    }
                }
                item = self.inner.next() => break item,
            }
        };
        if !matches!(item, Some(Ok(_))) {
            self.done = true;
        }
        item
    }
}

/// `{"result":…}` and a newline: one streamed message.
fn result_line(json: &[u8]) -> Bytes {
    let mut out = Vec::with_capacity(json.len() + 12);
    out.extend_from_slice(b"{\"result\":");
    out.extend_from_slice(json);
    out.extend_from_slice(b"}\n");
    Bytes::from(out)
}

/// Streams responses as etcd does: the HTTP status waits for the first
/// message (an error before any message becomes the status, with the error
/// as the body); after that, a failure can only be the last chunk.
pub(super) async fn forward(mut fwd: Forward) -> Response {
    let first = fwd.next().await;
    let mut headers = json_headers();
    let (status, first) = match first {
        None => (StatusCode::OK, None),
        Some(Err(st)) => (
            http_status(st.code()),
            Some(Bytes::from(stream_error_chunk(&st))),
        ),
        Some(Ok(json)) => {
            headers.insert(GRPC_METADATA_CONTENT_TYPE, GRPC);
            (StatusCode::OK, Some(result_line(&json)))
        }
    };
    let rest = futures::stream::unfold(fwd, |mut f| async move {
        let chunk = match f.next().await? {
            Ok(json) => result_line(&json),
            Err(st) => Bytes::from(stream_error_chunk(&st)),
        };
        Some((Ok::<_, Infallible>(chunk), f))
    });
    let body = futures::stream::iter(first.map(Ok::<_, Infallible>)).chain(rest);
    response(status, headers, Body::from_stream(body))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_bodies_match_etcd() {
        assert_eq!(
            String::from_utf8(error_body(
                Code::InvalidArgument,
                "etcdserver: key is not provided"
            ))
            .unwrap(),
            r#"{"error":"etcdserver: key is not provided","message":"etcdserver: key is not provided","code":3}"#
        );
        assert_eq!(
            String::from_utf8(error_body(Code::Unimplemented, "")).unwrap(),
            r#"{"code":12}"#
        );
        assert_eq!(
            String::from_utf8(stream_error_chunk(&Status::unavailable(
                "etcdserver: no leader"
            )))
            .unwrap(),
            r#"{"error":{"grpc_code":14,"http_code":503,"message":"etcdserver: no leader","http_status":"Service Unavailable"}}"#
        );
    }

    #[test]
    fn status_codes_match_etcd_3_4() {
        assert_eq!(http_status(Code::FailedPrecondition), 412);
        assert_eq!(http_status(Code::OutOfRange), 400);
        assert_eq!(http_status(Code::NotFound), 404);
        assert_eq!(http_status(Code::ResourceExhausted), 429);
        assert_eq!(http_status(Code::Unauthenticated), 401);
        assert_eq!(http_status(Code::PermissionDenied), 403);
        assert_eq!(http_status(Code::Unknown), 500);
        assert_eq!(http_status(Code::Unavailable), 503);
        assert_eq!(http_status(Code::Unimplemented), 501);
    }
}
