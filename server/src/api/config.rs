//! Admin endpoints for the configuration on the client port:
//! `POST /config/reload` (reload now, answer with the outcome),
//! `GET /config/status` (the last reload's outcome), `GET /config` (the
//! effective configuration; `?sources` says where each value came from).
//!
//! With auth enabled, reloading and reading the configuration take a root
//! token (as the plugin admin API does): the configuration names files and
//! carries plugin settings, and a reload is an operator's action. The status
//! stays open, like `/health`, so monitoring needs no credentials — with
//! auth on, without the values, errors and files (root sees them).

use crate::api::plugins::require_admin;
use crate::etcdserver::EtcdServer;
use crate::etcdserver::reload::Reloader;
use axum::Json;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use std::collections::HashMap;
use std::sync::Arc;

#[derive(Clone)]
struct Ctx {
    reloader: Arc<Reloader>,
    srv: Arc<EtcdServer>,
}

pub fn routes(reloader: Arc<Reloader>, srv: Arc<EtcdServer>) -> axum::Router {
    axum::Router::new()
        .route("/config/reload", post(reload))
        .route("/config/status", get(status))
        .route("/config", get(show))
        .with_state(Ctx { reloader, srv })
}

async fn reload(State(c): State<Ctx>, headers: HeaderMap) -> Response {
    if let Err(denied) = require_admin(&c.srv, &headers).await {
        return denied;
    }
    let r = c.reloader;
    let st = match tokio::task::spawn_blocking(move || r.reload("http")).await {
        Ok(st) => st,
        Err(_) => {
            return (
                StatusCode::INTERNAL_SERVER_ERROR,
                Json(serde_json::json!({"error": "reload task failed"})),
            )
                .into_response();
        }
    };
    let code = if st.last_reload_successful {
        StatusCode::OK
    } else {
        StatusCode::BAD_REQUEST
    };
    (code, Json(serde_json::to_value(&st).unwrap_or_default())).into_response()
}

/// Open like `/health`, so monitoring needs no credentials; but while auth
/// is on, only root sees values, error texts and file names.
async fn status(State(c): State<Ctx>, headers: HeaderMap) -> impl IntoResponse {
    let status = c.reloader.status();
    if c.srv.auth_enabled() && require_admin(&c.srv, &headers).await.is_err() {
        return Json(status.redacted());
    }
    Json(status)
}

async fn show(
    State(c): State<Ctx>,
    headers: HeaderMap,
    Query(p): Query<HashMap<String, String>>,
) -> Response {
    if let Err(denied) = require_admin(&c.srv, &headers).await {
        return denied;
    }
    let cfg = c.reloader.config();
    (
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        cairn_config::show(&cfg, p.contains_key("sources")),
    )
        .into_response()
}
