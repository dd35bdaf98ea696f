//! Counts gRPC calls as go-grpc-prometheus does (`grpc_server_started_total`,
//! `grpc_server_handled_total` by code), for every service on the client
//! port. The status code of a call is only known when its body ends (it
//! travels in the trailers), so the response body is wrapped.

use crate::metrics::METRICS;
use axum::body::Body;
use http::{Request, Response};
use http_body::Frame;
use std::pin::Pin;
use std::task::{Context, Poll};

fn grpc_type(service: &str, method: &str) -> &'static str {
    match (service, method) {
        ("etcdserverpb.Watch", "Watch") | ("etcdserverpb.Lease", "LeaseKeepAlive") => "bidi_stream",
        ("etcdserverpb.Maintenance", "Snapshot") | ("v3electionpb.Election", "Observe") => {
            "server_stream"
        }
        _ => "unary",
    }
}

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
    service: String,
    method: String,
}

impl Call {
    fn handled(&self, code: &'static str) {
        METRICS
            .grpc_handled
            .with_label_values(&[self.ty, &self.service, &self.method, code])
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

/// Runs `next` for a gRPC request and counts it.
pub async fn count(req: Request<Body>, next: axum::middleware::Next) -> Response<Body> {
    let path = req.uri().path().trim_start_matches('/').to_string();
    let Some((service, method)) = path.split_once('/') else {
        return next.run(req).await;
    };
    let ty = grpc_type(service, method);
    METRICS
        .grpc_started
        .with_label_values(&[ty, service, method])
        .inc();
    let call = Call {
        ty,
        service: service.to_string(),
        method: method.to_string(),
    };
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
