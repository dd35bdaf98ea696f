//! The API layer: gRPC services and HTTP endpoints on the client URLs, and
//! the peer endpoints on the peer URLs. Handlers validate requests the way
//! etcd's API layer does, then call into `server::EtcdServer`.

pub mod access;
pub mod auth;
pub mod cluster;
pub mod concurrency;
pub mod config;
pub mod console;
pub mod election;
pub mod gateway;
pub mod grpc_limit;
pub mod grpc_methods;
pub mod grpc_metrics;
pub mod http;
pub mod kv;
pub mod lease;
pub mod lock;
pub mod maintenance;
pub mod peer;
pub mod plugins;
pub mod pprof;
pub mod snapshot_slot;
pub mod v2;
pub mod v2v3;
pub mod watch;

use crate::error::Error;
use crate::etcdserver::{EtcdServer, RequestCtx};
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
/// The request's context, as the caller layer (`auth::caller_layer`) put it
/// in the request's extensions; anonymous when none did.
pub fn request_ctx<T>(srv: &EtcdServer, req: &Request<T>) -> RequestCtx {
    req.extensions()
        .get::<RequestCtx>()
        .cloned()
        .unwrap_or_else(|| RequestCtx::anonymous(srv.deadline()))
}

/// [`request_ctx`] from a request's extensions (HTTP handlers).
pub fn ctx_from(srv: &EtcdServer, ext: &::http::Extensions) -> RequestCtx {
    ext.get::<RequestCtx>()
        .cloned()
        .unwrap_or_else(|| RequestCtx::anonymous(srv.deadline()))
}

pub fn check_leader<T>(srv: &EtcdServer, req: &Request<T>) -> Result<(), Status> {
    let wants = req
        .metadata()
        .get("hasleader")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v == "true");
    if wants && !srv.status().has_leader() {
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

/// Go's `http.NotFound`, which etcd's HTTP mux answers unknown paths with
/// (clients and scripts see exactly this): plain text, no sniffing.
pub(crate) fn go_not_found() -> axum::response::Response {
    use axum::response::IntoResponse;
    (
        ::http::StatusCode::NOT_FOUND,
        [
            (::http::header::CONTENT_TYPE, "text/plain; charset=utf-8"),
            (::http::header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        ],
        "404 page not found\n",
    )
        .into_response()
}

/// One router for a listener: requests that are gRPC calls to a method this
/// listener serves (`grpc_methods::route`: HTTP/2, a gRPC content type, a
/// registered path) go to the gRPC services; gRPC-shaped requests for any
/// other path get `Unimplemented`; everything else goes to the HTTP routes,
/// whose unknown paths get Go's plain "404 page not found" like etcd's HTTP
/// mux.
///
/// On a client listener (`client` given) every request also runs as its
/// caller (`auth::caller_layer`); HTTP requests pass the host whitelist and
/// get CORS headers first (`access`); gRPC calls are counted
/// (`grpc_metrics`) and their messages held to the live
/// `--max-request-bytes` (`grpc_limit`).
pub fn grpc_and_http(
    grpc: tonic::service::Routes,
    http: axum::Router,
    surface: grpc_methods::Surface,
    client: Option<Arc<EtcdServer>>,
) -> axum::Router {
    use axum::response::IntoResponse;
    use grpc_methods::Route;
    use tower::ServiceExt;
    let mut grpc = grpc.prepare().into_axum_router();
    let mut http = http.fallback(|| async { go_not_found() });
    if let Some(srv) = client {
        // Layers run outermost last-added: the caller is known before the
        // call is counted; the access checks come before anything else on
        // the HTTP side, as etcd's access controller wraps its whole mux.
        grpc = grpc
            .layer(axum::middleware::from_fn_with_state(
                Arc::clone(&srv),
                learner_gate,
            ))
            .layer(axum::middleware::from_fn_with_state(
                Arc::clone(&srv),
                grpc_limit::limit_layer,
            ))
            .layer(axum::middleware::from_fn(grpc_metrics::count))
            .layer(axum::middleware::from_fn_with_state(
                Arc::clone(&srv),
                auth::grpc_caller_layer,
            ));
        http = http
            .layer(axum::middleware::from_fn_with_state(
                Arc::clone(&srv),
                auth::http_caller_layer,
            ))
            .layer(axum::middleware::from_fn_with_state(
                srv,
                access::access_layer,
            ));
    }
    axum::Router::new().fallback(move |mut req: axum::extract::Request| {
        let (grpc, http) = (grpc.clone(), http.clone());
        async move {
            let served = match grpc_methods::route(surface, &req) {
                Route::Grpc(method) => {
                    req.extensions_mut().insert(method);
                    grpc.oneshot(req).await
                }
                Route::UnknownGrpc(status) => {
                    return status.into_http::<axum::body::Body>();
                }
                Route::Http => http.oneshot(req).await,
            };
            match served {
                Ok(resp) => resp.into_response(),
                Err(never) => match never {},
            }
        }
    })
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
