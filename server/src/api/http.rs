//! Plain HTTP endpoints on the client and peer URLs.

use super::{ETCD_CLUSTER_VERSION, ETCD_COMPAT_VERSION};
use crate::server::EtcdServer;
use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::get;
use std::sync::Arc;
use std::time::Duration;

/// How long /health waits for a quorum read.
const HEALTH_READ_TIMEOUT: Duration = Duration::from_secs(1);

pub fn client_routes(srv: Arc<EtcdServer>) -> axum::Router {
    axum::Router::new()
        .route("/health", get(health))
        .route("/version", get(version))
        .with_state(srv)
}

pub fn peer_routes(srv: Arc<EtcdServer>) -> axum::Router {
    axum::Router::new()
        .route("/version", get(version))
        .route("/members", get(peer_members))
        .with_state(srv)
}

/// etcd 3.4's shape: `{"health":"true"}` with 200, or `{"health":"false"}`
/// with 503 when there is no leader or a quorum read fails.
async fn health(State(srv): State<Arc<EtcdServer>>) -> impl IntoResponse {
    let healthy = srv.status.has_leader()
        && matches!(
            tokio::time::timeout(HEALTH_READ_TIMEOUT, srv.linearizable_read_notify()).await,
            Ok(Ok(()))
        );
    let (code, body) = if healthy {
        (StatusCode::OK, "true")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "false")
    };
    (code, Json(serde_json::json!({ "health": body })))
}

async fn version(State(_srv): State<Arc<EtcdServer>>) -> impl IntoResponse {
    Json(serde_json::json!({
        "etcdserver": ETCD_COMPAT_VERSION,
        "etcdcluster": ETCD_CLUSTER_VERSION,
        "cairn": env!("CARGO_PKG_VERSION"),
    }))
}

/// The peer port's member list, in etcd's JSON shape.
async fn peer_members(State(srv): State<Arc<EtcdServer>>) -> impl IntoResponse {
    let members: Vec<serde_json::Value> = srv
        .membership
        .api_members()
        .into_iter()
        .map(|m| {
            serde_json::json!({
                "id": m.id,
                "name": m.name,
                "peerURLs": m.peer_ur_ls,
                "clientURLs": m.client_ur_ls,
            })
        })
        .collect();
    Json(members)
}
