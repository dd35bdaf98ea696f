//! Counts gRPC calls as go-grpc-prometheus does (`grpc_server_started_total`,
//! `grpc_server_handled_total` by code), for every service on the client
//! port. The status code of a call is only known when its body ends (it
//! travels in the trailers), so the response body is wrapped.

use super::grpc_methods::GrpcMethod;
use crate::metrics::METRICS;
use axum::body::Body;
use http::{Request, Response};
use http_body::Frame;
use std::pin::Pin;
use std::task::{Context, Poll};

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

struct Call {
    ty: &'static str,
    method: &'static GrpcMethod,
}

impl Call {
    fn handled(&self, code: &'static str) {
        METRICS
            .grpc_handled
            .with_label_values(&[self.ty, self.method.service, self.method.method, code])
            .inc();
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
                if let Some(trailers) = frame.trailers_ref()
                    && let Some(call) = self.call.take()
                {
                    let code = trailers
                        .get("grpc-status")
                        .and_then(|v| v.to_str().ok())
                        .map_or("Unknown", code_name);
                    call.handled(code);
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
    let call = Call { ty, method };
    let resp = next.run(req).await;
    // A trailers-only response carries its status in the headers.
    if let Some(code) = resp
        .headers()
        .get("grpc-status")
        .and_then(|v| v.to_str().ok())
    {
        call.handled(code_name(code));
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
