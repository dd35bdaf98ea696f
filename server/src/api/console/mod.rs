//! The operator web console under `/ui/` on the client URLs (same port,
//! same TLS, same `--host-whitelist` and `--cors` as every other HTTP
//! route): the cluster's members and health, a key browser with put and
//! delete, and a live watch. See `docs/console.md`.
//!
//! Pages are rendered here as HTML strings ([`html::esc`] on everything
//! from outside); `assets/` holds the one stylesheet and the one small
//! script, compiled into the binary. Nothing is fetched from elsewhere.
//! The read-only pages work without JavaScript (the cluster page refreshes
//! itself); with it, they update over server-sent events ([`sse`]).
//!
//! Every request runs as its session's user ([`session`]) and reaches the
//! data only through `EtcdServer`'s own range, put, delete and watch paths,
//! so auth, plugins and quotas judge the console exactly as they judge
//! etcdctl. `--enable-ui` is read on every request, so a reload that turns
//! it off takes the console away at once.

mod cluster;
mod config;
pub mod html;
mod keys;
mod metrics;
mod multipart;
mod plugins;
pub mod session;
mod sse;
mod watch;

use crate::etcdserver::EtcdServer;
use crate::etcdserver::reload::Reloader;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use std::sync::Arc;

/// Server-sent event streams one member serves at once, all pages
/// together; one more is refused (the pages still work by reloading).
pub const MAX_SSE_STREAMS: usize = 32;

/// What the console's handlers share.
pub struct Console {
    pub srv: Arc<EtcdServer>,
    pub reloader: Arc<Reloader>,
    /// One permit per open event stream (see [`MAX_SSE_STREAMS`]).
    pub streams: Arc<tokio::sync::Semaphore>,
    /// The metrics page's samples (see `metrics`).
    ring: Arc<metrics::Ring>,
}

const CSS: &str = include_str!("assets/console.css");
const JS: &str = include_str!("assets/console.js");

/// The console's routes, to merge into a client listener's HTTP router;
/// starts the metrics sampler (so call it once per member, in a runtime).
pub fn routes(srv: Arc<EtcdServer>, reloader: Arc<Reloader>) -> axum::Router {
    let ring = Arc::new(metrics::Ring::default());
    tokio::spawn(metrics::run_sampler(Arc::clone(&srv), Arc::clone(&ring)));
    let console = Arc::new(Console {
        srv,
        reloader,
        streams: Arc::new(tokio::sync::Semaphore::new(MAX_SSE_STREAMS)),
        ring,
    });
    axum::Router::new()
        .route("/ui", get(|| async { Redirect::permanent("/ui/") }))
        .route("/ui/", get(cluster::page))
        .route("/ui/events/cluster", get(cluster::events))
        .route("/ui/login", get(session::login_page).post(session::login))
        .route("/ui/logout", post(session::logout))
        .route("/ui/keys", get(keys::browse))
        .route("/ui/key", get(keys::view))
        .route("/ui/key/edit", get(keys::edit))
        .route("/ui/key/put", post(keys::put))
        .route("/ui/key/delete", post(keys::delete))
        .route("/ui/watch", get(watch::page))
        .route("/ui/events/watch", get(watch::events))
        .route("/ui/metrics", get(metrics::page))
        .route("/ui/plugins", get(plugins::page))
        .route("/ui/plugins/remove", post(plugins::remove))
        .merge(
            // The upload forms: as large as the admin API takes (the
            // session layer bounds the body to the same).
            axum::Router::new()
                .route("/ui/plugins/dry-run", post(plugins::dry_run))
                .route("/ui/plugins/deploy", post(plugins::deploy))
                .layer(axum::extract::DefaultBodyLimit::max(
                    crate::api::plugins::MAX_BODY_BYTES,
                )),
        )
        .route("/ui/config", get(config::page))
        .route("/ui/assets/console.css", get(css))
        .route("/ui/assets/console.js", get(js))
        .layer(axum::middleware::from_fn_with_state(
            Arc::clone(&console),
            session::session_layer,
        ))
        .layer(axum::middleware::from_fn_with_state(
            Arc::clone(&console),
            gate,
        ))
        // The session layer reads form bodies itself, bounded; handlers
        // then see at most that much.
        .layer(axum::extract::DefaultBodyLimit::max(
            session::MAX_FORM_BYTES,
        ))
        .with_state(console)
}

/// `--enable-ui`, read per request (live); and the headers every console
/// response carries: a content security policy that allows only this
/// member's own stylesheet and script (no inline script, no other origin,
/// no framing), no sniffing, no referrer to other sites, no caching of
/// pages.
async fn gate(State(c): State<Arc<Console>>, req: Request, next: Next) -> Response {
    if !c.srv.config().load().enable_ui {
        return crate::api::go_not_found();
    }
    let mut resp = next.run(req).await;
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; \
             connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
        ),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    // `same-origin`, not `no-referrer`: under `no-referrer` browsers send
    // `Origin: null` on form posts, and the CSRF layer needs the real one.
    // Key names in URLs still never reach another site.
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
    if !h.contains_key(header::CACHE_CONTROL) {
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    resp
}

async fn css() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/css; charset=utf-8"),
            (header::CACHE_CONTROL, "max-age=300"),
        ],
        CSS,
    )
        .into_response()
}

async fn js() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/javascript; charset=utf-8"),
            (header::CACHE_CONTROL, "max-age=300"),
        ],
        JS,
    )
        .into_response()
}
