//! Counts gRPC calls as go-grpc-prometheus does (`grpc_server_started_total`,
//! `grpc_server_handled_total` by code, and with `--metrics=extensive`
//! `grpc_server_handling_seconds`), for every service on the client port,
//! and the bytes clients send and receive (`etcd_network_client_grpc_*`).
//! The status code of a call is only known when its body ends (it travels
//! in the trailers), so the response body is wrapped.
//!
//! A policy plugin's denial travels as `FailedPrecondition` (see
//! docs/plugins.md) but is counted with `grpc_code="PermissionDenied"`:
//! etcd's alert on failed gRPC requests counts FailedPrecondition as a
//! server failure, and a denial is the policy working, not the server
//! failing. Denials are counted per plugin in `cairn_plugin_denials_total`;
//! a plugin that fails (fail-closed) still counts as FailedPrecondition.

use super::grpc_methods::GrpcMethod;
use crate::metrics::METRICS;
use axum::body::Body;
use http::{Request, Response};
use http_body::Frame;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Instant;

fn code_name(code: &str) -> &'static str {
    match code.parse::<i32>().map(tonic::Code::from) {
        Ok(tonic::Code::Ok) => "OK",
        Ok(tonic::Code::Cancelled) => "Canceled",
        Ok(tonic::Code::Unknown) => "Unknown",
        Ok(tonic::Code::InvalidArgument) => "InvalidArgument",
        Ok(tonic::Code::DeadlineExceeded) => "DeadlineExceeded",
        Ok(tonic::Code::NotFound) => "NotFound",
        Ok(tonic::Code::AlreadyExists) => "AlreadyExists",
        Ok(tonic::Code::PermissionDenied) => "PermissionDenied",
        Ok(tonic::Code::ResourceExhausted) => "ResourceExhausted",
        Ok(tonic::Code::FailedPrecondition) => "FailedPrecondition",
        Ok(tonic::Code::Aborted) => "Aborted",
        Ok(tonic::Code::OutOfRange) => "OutOfRange",
        Ok(tonic::Code::Unimplemented) => "Unimplemented",
        Ok(tonic::Code::Internal) => "Internal",
        Ok(tonic::Code::Unavailable) => "Unavailable",
        Ok(tonic::Code::DataLoss) => "DataLoss",
        Ok(tonic::Code::Unauthenticated) => "Unauthenticated",
        Err(_) => "Unknown",
    }
}

/// The code label for a call's status: its name, except a policy denial
/// (see the module docs).
fn code_label(status: Option<&str>, message: Option<&str>) -> &'static str {
    let Some(status) = status else {
        return "Unknown";
    };
    let name = code_name(status);
    if name == "FailedPrecondition"
        && message.is_some_and(|m| m.starts_with("cairn: plugin ") && m.contains(" denied "))
    {
        return "PermissionDenied";
    }
    name
}

fn status_label(headers: &http::HeaderMap) -> Option<&'static str> {
    let status = headers.get("grpc-status")?.to_str().ok();
    // The message travels percent-encoded.
    let message = headers
        .get("grpc-message")
        .and_then(|v| v.to_str().ok())
        .and_then(|m| crate::net::gohttp::unescape(m, false).ok());
    Some(code_label(status, message.as_deref()))
}

struct Call {
    ty: &'static str,
    method: &'static GrpcMethod,
    started: Instant,
}

impl Call {
    fn handled(&self, code: &'static str) {
        METRICS
            .grpc_handled
            .with_label_values(&[self.ty, self.method.service, self.method.method, code])
            .inc();
        if METRICS.extensive() {
            METRICS
                .grpc_handling_seconds
                .with_label_values(&[self.ty, self.method.service, self.method.method])
                .observe(self.started.elapsed().as_secs_f64());
        }
    }
}

/// Wraps a gRPC response body and records the call when its status arrives.
struct Counted {
    inner: Body,
    call: Option<Call>,
}

impl http_body::Body for Counted {
    type Data = bytes::Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let poll = Pin::new(&mut self.inner).poll_frame(cx);
        match &poll {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    METRICS.client_grpc_sent_bytes.inc_by(data.len() as u64);
                }
                if let Some(trailers) = frame.trailers_ref()
                    && let Some(call) = self.call.take()
                {
                    call.handled(status_label(trailers).unwrap_or("Unknown"));
                }
            }
            Poll::Ready(None) => {
                if let Some(call) = self.call.take() {
                    call.handled("OK");
                }
            }
            _ => {}
        }
        poll
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

/// A request body that counts the bytes clients send.
struct Received {
    inner: Body,
}

impl http_body::Body for Received {
    type Data = bytes::Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let poll = Pin::new(&mut self.inner).poll_frame(cx);
        if let Poll::Ready(Some(Ok(frame))) = &poll
            && let Some(data) = frame.data_ref()
        {
            METRICS.client_grpc_received_bytes.inc_by(data.len() as u64);
        }
        poll
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for Counted {
    fn drop(&mut self) {
        // The client went away before the status was sent.
        if let Some(call) = self.call.take() {
            call.handled("Canceled");
        }
    }
}

/// Runs `next` for a gRPC call and counts it. Only registered methods get
/// here (`grpc_methods::route` put the method in the request), so the label
/// sets are bounded by the protos, whatever paths clients make up.
pub async fn count(req: Request<Body>, next: axum::middleware::Next) -> Response<Body> {
    let Some(&method) = req.extensions().get::<&'static GrpcMethod>() else {
        return next.run(req).await;
    };
    let ty = method.kind.label();
    METRICS
        .grpc_started
        .with_label_values(&[ty, method.service, method.method])
        .inc();
    let call = Call {
        ty,
        method,
        started: Instant::now(),
    };
    let req = req.map(|b| Body::new(Received { inner: b }));
    let resp = next.run(req).await;
    // A trailers-only response carries its status in the headers.
    if let Some(code) = status_label(resp.headers()) {
        call.handled(code);
        return resp;
    }
    let (parts, body) = resp.into_parts();
    Response::from_parts(
        parts,
        Body::new(Counted {
            inner: body,
            call: Some(call),
        }),
    )
}

#[cfg(test)]
mod label_tests {
    use super::*;

    #[test]
    fn plugin_denials_are_not_failures() {
        let denied = "cairn: plugin \"naming\" denied the write: bad key";
        assert_eq!(code_label(Some("9"), Some(denied)), "PermissionDenied");
        let failed = "cairn: plugin \"naming\" failed (trap) and fails closed, so the request was refused: x";
        assert_eq!(code_label(Some("9"), Some(failed)), "FailedPrecondition");
        assert_eq!(
            code_label(Some("9"), Some("etcdserver: authentication is not enabled")),
            "FailedPrecondition"
        );
        assert_eq!(code_label(Some("0"), None), "OK");
        assert_eq!(code_label(None, None), "Unknown");
    }
}
