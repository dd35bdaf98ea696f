//! The API layer: gRPC services and HTTP endpoints on the client URLs, and
//! the peer endpoints on the peer URLs. Handlers validate requests the way
//! etcd's API layer does, then call into `server::EtcdServer`.

pub mod access;
pub mod auth;
pub mod cluster;
pub mod concurrency;
pub mod config;
pub mod election;
pub mod gateway;
pub mod grpc_limit;
pub mod grpc_metrics;
pub mod h2_authority;
pub mod http;
pub mod kv;
pub mod lease;
pub mod listener;
pub mod lock;
pub mod maintenance;
pub mod v2;
pub mod watch;

use crate::error::Error;
use crate::server::EtcdServer;
use prost::Message;
use std::sync::Arc;
use tonic::{Request, Status};

/// The etcd release whose client API Cairn implements; reported wherever
/// etcd reports its version, so client version checks pass.
pub const ETCD_COMPAT_VERSION: &str = "3.4.23";
/// The cluster version etcd 3.4 reports once the cluster is up.
pub const ETCD_CLUSTER_VERSION: &str = "3.4.0";
/// gRPC allows this much on top of `--max-request-bytes`, as etcd does.
pub const GRPC_OVERHEAD_BYTES: usize = 512 * 1024;

/// `hasleader: true` asks to fail at once when this member knows no leader.
pub fn check_leader<T>(srv: &EtcdServer, req: &Request<T>) -> Result<(), Status> {
    let wants = req
        .metadata()
        .get("hasleader")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v == "true");
    if wants && !srv.status.has_leader() {
        return Err(Error::NoLeader.into());
    }
    Ok(())
}

/// Enforces the receive limit with grpc-go's code and wording (tonic's own
/// limit is set higher so that this check is the one clients see).
pub fn check_size<M: Message>(srv: &EtcdServer, m: &M) -> Result<(), Status> {
    let limit = srv.max_request_bytes() + GRPC_OVERHEAD_BYTES;
    let len = m.encoded_len();
    if len > limit {
        return Err(Status::resource_exhausted(format!(
            "grpc: received message larger than max ({len} vs. {limit})"
        )));
    }
    Ok(())
}

/// Whether a request is a gRPC call: an `application/grpc` content type, as
/// etcd tells them apart.
pub fn is_grpc<B>(req: &::http::Request<B>) -> bool {
    req.headers()
        .get(::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| ct.starts_with("application/grpc"))
}

/// One router for a listener: gRPC requests (see [`is_grpc`]) go to the
/// gRPC services; everything else to the HTTP routes, whose unknown paths
/// get Go's plain "404 page not found" like etcd's HTTP mux.
///
/// On a client listener (`client` given) every request also runs as its
/// caller (`auth::caller_layer`), HTTP requests pass the host whitelist and
/// get CORS headers first (`access`), and gRPC messages are held to the
/// live `--max-request-bytes` (`grpc_limit`).
pub fn grpc_and_http(
    grpc: tonic::service::Routes,
    http: axum::Router,
    client: Option<Arc<EtcdServer>>,
) -> axum::Router {
    use axum::response::IntoResponse;
    let mut grpc = grpc.prepare().into_axum_router();
    if let Some(srv) = client.clone() {
        grpc = grpc
            .layer(axum::middleware::from_fn_with_state(
                Arc::clone(&srv),
                learner_gate,
            ))
            .layer(axum::middleware::from_fn_with_state(
                srv,
                grpc_limit::limit_layer,
            ))
            .layer(axum::middleware::from_fn(grpc_metrics::count));
    }
    let router = http.fallback(move |req: axum::extract::Request| {
        let grpc = grpc.clone();
        async move {
            if is_grpc(&req) {
                use tower::ServiceExt;
                match grpc.oneshot(req).await {
                    Ok(resp) => resp.into_response(),
                    Err(never) => match never {},
                }
            } else {
                (
                    ::http::StatusCode::NOT_FOUND,
                    [(::http::header::CONTENT_TYPE, "text/plain; charset=utf-8")],
                    "404 page not found\n",
                )
                    .into_response()
            }
        }
    });
    match client {
        // Layers run outermost first: the access checks come before
        // anything else, as etcd's access controller wraps its whole mux.
        Some(srv) => router
            .layer(axum::middleware::from_fn_with_state(
                Arc::clone(&srv),
                auth::caller_layer,
            ))
            .layer(axum::middleware::from_fn_with_state(
                srv,
                access::access_layer,
            )),
        None => router,
    }
}

/// A learner serves only Status and serializable Range (etcd's rule); every
/// other RPC — streams included — is refused before it reaches a service.
/// (Range checks `serializable` itself.)
async fn learner_gate(
    axum::extract::State(srv): axum::extract::State<Arc<EtcdServer>>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    let allowed = matches!(
        req.uri().path(),
        "/etcdserverpb.Maintenance/Status" | "/etcdserverpb.KV/Range"
    );
    if !allowed && srv.is_learner() {
        return Status::from(Error::NotSupportedForLearner).into_http::<axum::body::Body>();
    }
    next.run(req).await
}
