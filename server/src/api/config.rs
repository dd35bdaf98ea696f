//! Admin endpoints for the configuration on the client port:
//! `POST /config/reload` (reload now, answer with the outcome),
//! `GET /config/status` (the last reload's outcome), `GET /config` (the
//! effective configuration; `?sources` says where each value came from).

use crate::server::reload::Reloader;
use axum::Json;
use axum::extract::{Query, State};
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::{get, post};
use std::collections::HashMap;
use std::sync::Arc;

pub fn routes(reloader: Arc<Reloader>) -> axum::Router {
    axum::Router::new()
        .route("/config/reload", post(reload))
        .route("/config/status", get(status))
        .route("/config", get(show))
        .with_state(reloader)
}

async fn reload(State(r): State<Arc<Reloader>>) -> impl IntoResponse {
    let st = match tokio::task::spawn_blocking(move || r.reload("http")).await {
        Ok(st) => st,
        Err(_) => {
            return (
                StatusCode::INTERNAL_SERVER_ERROR,
                Json(serde_json::json!({"error": "reload task failed"})),
            );
        }
    };
    let code = if st.last_reload_successful {
        StatusCode::OK
    } else {
        StatusCode::BAD_REQUEST
    };
    (code, Json(serde_json::to_value(&st).unwrap_or_default()))
}

async fn status(State(r): State<Arc<Reloader>>) -> impl IntoResponse {
    Json(r.status())
}

async fn show(
    State(r): State<Arc<Reloader>>,
    Query(p): Query<HashMap<String, String>>,
) -> impl IntoResponse {
    let cfg = r.config();
    (
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        cairn_config::show(&cfg, p.contains_key("sources")),
    )
}
