//! Plain HTTP endpoints: `/health`, `/livez`, `/readyz`, `/version`,
//! `/metrics` on the client (and metrics) URLs; `/members` and `/version` on
//! the peer URLs.

use super::{ETCD_CLUSTER_VERSION, ETCD_COMPAT_VERSION};
use crate::etcdserver::EtcdServer;
use crate::metrics::METRICS;
use axum::Json;
use axum::extract::{Query, State};
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

/// How long a health check waits for its read.
const HEALTH_READ_TIMEOUT: Duration = Duration::from_secs(1);

/// The routes every client listener serves.
pub fn client_routes(srv: Arc<EtcdServer>) -> axum::Router {
    metrics_routes(srv)
}

/// What `--listen-metrics-urls` serves (a subset of the client routes).
pub fn metrics_routes(srv: Arc<EtcdServer>) -> axum::Router {
    axum::Router::new()
        .route("/health", get(health))
        .route("/livez", get(livez))
        .route("/readyz", get(readyz))
        .route("/version", get(version))
        .route("/metrics", get(metrics))
        .with_state(srv)
}

pub fn peer_routes(srv: Arc<EtcdServer>) -> axum::Router {
    axum::Router::new()
        .route("/version", get(version))
        .route("/members", get(peer_members))
        .with_state(srv)
}

async fn linearizable_ok(srv: &EtcdServer) -> Result<(), String> {
    match tokio::time::timeout(HEALTH_READ_TIMEOUT, srv.linearizable_read_notify()).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err("etcdserver: request timed out".to_string()),
    }
}

/// etcd 3.4's shape: `{"health":"true"}` with 200, or `{"health":"false"}`
/// with 503 when an alarm is raised, there is no leader, or a quorum read
/// fails.
async fn health(State(srv): State<Arc<EtcdServer>>) -> impl IntoResponse {
    let healthy = srv.db().alarms.is_empty()
        && srv.status().has_leader()
        && linearizable_ok(&srv).await.is_ok();
    let (code, body) = if healthy {
        METRICS.health_success.inc();
        (StatusCode::OK, "true")
    } else {
        METRICS.health_failures.inc();
        (StatusCode::SERVICE_UNAVAILABLE, "false")
    };
    (code, Json(serde_json::json!({ "health": body })))
}

/// A local read through the store (the key is irrelevant: this exercises
/// the read path, not the data).
fn serializable_ok(srv: &EtcdServer) -> Result<(), String> {
    let probe = crate::pb::etcdserverpb::RangeRequest {
        key: bytes::Bytes::from_static(b"health"),
        ..Default::default()
    };
    srv.store()
        .range(&probe)
        .map(|_| ())
        .map_err(|e| e.to_string())
}

/// One named check of /livez or /readyz.
struct Check {
    name: &'static str,
    result: Result<(), String>,
}

/// The text etcd's /livez and /readyz answer: "ok" (or, with `verbose`, one
/// `[+]name ok` line per check); on failure 503 with `[-]name failed: why`.
fn checks_response(
    endpoint: &str,
    checks: Vec<Check>,
    params: &HashMap<String, String>,
) -> (StatusCode, String) {
    let excluded: Vec<&str> = params
        .get("exclude")
        .map(|v| v.split(',').collect())
        .unwrap_or_default();
    let verbose = params.contains_key("verbose");
    let mut failed = false;
    let mut lines = String::new();
    for c in &checks {
        if excluded.contains(&c.name) {
            lines.push_str(&format!("[+]{} excluded: ok\n", c.name));
            continue;
        }
        match &c.result {
            Ok(()) => lines.push_str(&format!("[+]{} ok\n", c.name)),
            Err(e) => {
                failed = true;
                lines.push_str(&format!("[-]{} failed: {e}\n", c.name));
            }
        }
    }
    if failed {
        lines.push_str(&format!("{endpoint} check failed\n"));
        (StatusCode::SERVICE_UNAVAILABLE, lines)
    } else if verbose {
        lines.push_str("ok\n");
        (StatusCode::OK, lines)
    } else {
        (StatusCode::OK, "ok\n".to_string())
    }
}

fn text(resp: (StatusCode, String)) -> impl IntoResponse {
    (
        resp.0,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        resp.1,
    )
}

/// Liveness: the member can serve a local (serializable) read.
async fn livez(
    State(srv): State<Arc<EtcdServer>>,
    Query(p): Query<HashMap<String, String>>,
) -> impl IntoResponse {
    let serializable = Check {
        name: "serializable_read",
        result: serializable_ok(&srv),
    };
    text(checks_response("livez", vec![serializable], &p))
}

/// Readiness: a linearizable read works (so there is a quorum and a
/// leader), no corruption alarm, and this member is not a learner.
async fn readyz(
    State(srv): State<Arc<EtcdServer>>,
    Query(p): Query<HashMap<String, String>>,
) -> impl IntoResponse {
    let learner = srv
        .membership()
        .member(srv.member_id())
        .is_some_and(|m| m.is_learner);
    let checks = vec![
        Check {
            name: "data_corruption",
            result: Ok(()),
        },
        Check {
            name: "serializable_read",
            result: serializable_ok(&srv),
        },
        Check {
            name: "linearizable_read",
            result: linearizable_ok(&srv).await,
        },
        Check {
            name: "non_learner",
            result: if learner {
                Err("this member is a learner".to_string())
            } else {
                Ok(())
            },
        },
    ];
    text(checks_response("readyz", checks, &p))
}

async fn version(State(_srv): State<Arc<EtcdServer>>) -> impl IntoResponse {
    Json(serde_json::json!({
        "etcdserver": ETCD_COMPAT_VERSION,
        "etcdcluster": ETCD_CLUSTER_VERSION,
        "cairn": env!("CARGO_PKG_VERSION"),
    }))
}

/// Prometheus text format; point-in-time gauges are refreshed here.
async fn metrics(State(srv): State<Arc<EtcdServer>>) -> impl IntoResponse {
    let size = srv.db().disk_space() as i64;
    METRICS.db_total_size.set(size);
    METRICS.debugging_db_total_size.set(size);
    METRICS.db_in_use_size.set(size);
    METRICS.watcher_total.set(srv.hub().watcher_count() as i64);
    METRICS.current_revision.set(srv.store().current_rev());
    METRICS
        .compact_revision
        .set(srv.store().compact_rev().max(0));
    METRICS.keys_total.set(srv.store().key_count() as i64);
    METRICS
        .quota_backend_bytes
        .set(srv.quota_backend_bytes() as i64);
    METRICS
        .server_version
        .with_label_values(&[ETCD_COMPAT_VERSION])
        .set(1);
    METRICS.cluster_version.with_label_values(&["3.4"]).set(1);
    METRICS
        .server_id
        .with_label_values(&[&format!("{:x}", srv.member_id())])
        .set(1);
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        METRICS.render(),
    )
}

/// The peer port's member list, in etcd's JSON shape, with the cluster ID
/// header a joining member reads.
async fn peer_members(State(srv): State<Arc<EtcdServer>>) -> impl IntoResponse {
    let members: Vec<serde_json::Value> = srv
        .membership()
        .api_members()
        .into_iter()
        .map(|m| {
            serde_json::json!({
                "id": m.id,
                "name": m.name,
                "peerURLs": m.peer_ur_ls,
                "clientURLs": m.client_ur_ls,
                "isLearner": m.is_learner,
            })
        })
        .collect();
    (
        [("X-Etcd-Cluster-ID", format!("{:x}", srv.cluster_id()))],
        Json(members),
    )
}
