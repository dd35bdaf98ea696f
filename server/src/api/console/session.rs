//! Who is using the console, and the guards every console request passes:
//!
//! - **Login.** With auth on, the console asks for an etcd user and
//!   password and calls the same `Authenticate` the gRPC service and the
//!   gateway use (policy-plugin authenticators included). The token it
//!   gets goes into the `cairn_session` cookie — `HttpOnly` (no script can
//!   read it), `SameSite=Strict` (no other site's page sends it), `Secure`
//!   over TLS — and every later request runs as the token's user, exactly
//!   as a gRPC call carrying that token would: reads and writes meet the
//!   same permission checks (and plugins) as etcd's Range and Put. A token
//!   that no longer resolves (expired, or auth was reset) ends the session.
//! - **CSRF.** Each browser gets a random `cairn_csrf` cookie; every form
//!   carries its value in a hidden field, and every state-changing request
//!   (any POST under `/ui/`) is refused unless the field matches the cookie
//!   — a page on another site can make a browser post a form, but cannot
//!   read the value to put in it. On top, a request whose `Origin` is not
//!   this member's (or that a browser marks as cross-site) is refused. The
//!   check is here, in the layer, so no handler can forget it.

use super::Console;
use super::html::{self, Nav};
use crate::etcdserver::RequestCtx;
use crate::etcdserver::auth::Credential;
use crate::pb::etcdserverpb::AuthenticateRequest;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Redirect, Response};
use http_body_util::BodyExt as _;
use std::sync::Arc;

const SESSION_COOKIE: &str = "cairn_session";
const CSRF_COOKIE: &str = "cairn_csrf";
/// Random bytes in a CSRF token (hex-encoded in the cookie and forms).
const CSRF_TOKEN_BYTES: usize = 32;
/// The largest form body the console reads: a value of
/// `--max-request-bytes` (1.5 MiB by default) percent-encoded can triple.
pub const MAX_FORM_BYTES: usize = 6 * 1024 * 1024;
/// Where the plugin forms post (bounded by the admin API's body limit
/// instead: they carry a plugin binary).
pub const PLUGIN_FORMS: &str = "/ui/plugins/";

/// What a console handler knows about the request's user.
#[derive(Debug, Clone)]
pub struct Session {
    /// The CSRF token forms must carry.
    pub csrf: String,
    /// The signed-in user (or the client certificate's common name).
    pub user: Option<String>,
    pub auth_enabled: bool,
    /// Whether the request came over TLS (cookies are then `Secure`).
    pub tls: bool,
    /// Who is asking, for every server call the request makes: the
    /// session's user, with the request's deadline.
    pub ctx: RequestCtx,
}

/// The cookies of a request, by name (the first of each name wins).
fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|c| c.trim().split_once('='))
        .find(|(n, _)| *n == name)
        .map(|(_, v)| v)
}

fn new_csrf_token() -> String {
    use rand::RngCore as _;
    let mut b = [0u8; CSRF_TOKEN_BYTES];
    rand::rngs::OsRng.fill_bytes(&mut b);
    hex::encode(b)
}

fn is_csrf_token(s: &str) -> bool {
    s.len() == CSRF_TOKEN_BYTES * 2 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

/// Equal without revealing where they differ.
fn same_token(a: &str, b: &str) -> bool {
    a.len() == b.len() && a.bytes().zip(b.bytes()).fold(0u8, |d, (x, y)| d | (x ^ y)) == 0
}

/// A `Set-Cookie` value for the console's path.
fn set_cookie(name: &str, value: &str, tls: bool, max_age_secs: Option<u64>) -> HeaderValue {
    let mut c = format!("{name}={value}; Path=/ui/; HttpOnly; SameSite=Strict");
    if tls {
        c.push_str("; Secure");
    }
    if let Some(age) = max_age_secs {
        c.push_str(&format!("; Max-Age={age}"));
    }
    HeaderValue::from_str(&c).unwrap_or_else(|_| HeaderValue::from_static("invalid=1"))
}

fn is_tls(req: &Request) -> bool {
    req.extensions().get::<crate::tls::PeerIdentity>().is_some()
}

/// Whether a state-changing request comes from this member's own pages:
/// `Origin` (which browsers send on every form POST), when present, must
/// name this very host and scheme; `Sec-Fetch-Site` must not say the
/// request came from another site.
fn same_origin(req: &Request) -> bool {
    let headers = req.headers();
    if let Some(site) = headers.get("sec-fetch-site").and_then(|v| v.to_str().ok())
        && !matches!(site, "same-origin" | "none")
    {
        return false;
    }
    let Some(origin) = headers.get(header::ORIGIN) else {
        return true;
    };
    let host = req
        .uri()
        .authority()
        .map(|a| a.as_str())
        .or_else(|| headers.get(header::HOST).and_then(|v| v.to_str().ok()))
        .unwrap_or_default();
    let scheme = if is_tls(req) { "https" } else { "http" };
    origin.to_str().ok() == Some(&format!("{scheme}://{host}"))
}

fn refuse(status: StatusCode, why: &str) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        format!("{why}\n"),
    )
        .into_response()
}

/// The `csrf` field of a url-encoded form body.
fn form_csrf(body: &[u8]) -> Option<String> {
    url::form_urlencoded::parse(body)
        .find(|(k, _)| k == "csrf")
        .map(|(_, v)| v.into_owned())
}

/// A POST's checks: same origin, a bounded body, and the form's CSRF
/// token matching the cookie's. The body read here is handed on.
async fn checked_post(req: Request, csrf: &str, fresh_csrf: bool) -> Result<Request, Response> {
    if !same_origin(&req) {
        return Err(refuse(
            StatusCode::FORBIDDEN,
            "Refused: this form was not sent from this member's console (Origin mismatch).",
        ));
    }
    // The plugin forms carry a `.wasm`: they may be as large as the
    // admin API takes.
    let limit = if req.uri().path().starts_with(PLUGIN_FORMS) {
        crate::api::plugins::MAX_BODY_BYTES
    } else {
        MAX_FORM_BYTES
    };
    let multipart = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(super::multipart::boundary);
    let (parts, body) = req.into_parts();
    let bytes = match http_body_util::Limited::new(body, limit).collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => {
            return Err(refuse(
                StatusCode::PAYLOAD_TOO_LARGE,
                &format!("Refused: the form is larger than {limit} bytes."),
            ));
        }
    };
    let sent = match &multipart {
        Some(b) => super::multipart::parse(&bytes, b)
            .ok()
            .and_then(|p| super::multipart::text(&p, "csrf")),
        None => form_csrf(&bytes),
    }
    .unwrap_or_default();
    if fresh_csrf || !same_token(&sent, csrf) {
        return Err(refuse(
            StatusCode::FORBIDDEN,
            "Refused: the form's CSRF token is missing or does not match this browser's. Reload the page and try again.",
        ));
    }
    Ok(Request::from_parts(parts, Body::from(bytes)))
}

/// The layer in front of every console route (see the module docs): the
/// CSRF check on POSTs, the session's user, the login requirement.
pub async fn session_layer(State(c): State<Arc<Console>>, req: Request, next: Next) -> Response {
    let srv = &c.srv;
    let tls = is_tls(&req);
    let cookie_csrf = cookie(req.headers(), CSRF_COOKIE)
        .filter(|t| is_csrf_token(t))
        .map(str::to_string);
    let fresh_csrf = cookie_csrf.is_none();
    let csrf = cookie_csrf.unwrap_or_else(new_csrf_token);

    // State-changing requests: same origin, and the form's token matches
    // the cookie. The body is read here (bounded) and handed on.
    let req = if req.method() == Method::POST {
        match checked_post(req, &csrf, fresh_csrf).await {
            Ok(req) => req,
            Err(refused) => return refused,
        }
    } else if req.method() == Method::GET || req.method() == Method::HEAD {
        req
    } else {
        return refuse(StatusCode::METHOD_NOT_ALLOWED, "Method not allowed.");
    };

    // The caller: the session cookie's token, resolved the way a gRPC
    // token is; else whoever the outer caller layer found (a client
    // certificate's common name), else nobody.
    let token = cookie(req.headers(), SESSION_COOKIE)
        .filter(|t| !t.is_empty())
        .map(str::to_string);
    let mut clear_session = false;
    let (info, credential) = match token {
        Some(t) => match super::super::auth::resolve_token(srv, &t).await {
            Ok(info) => (Some(info), Some(Credential::Token(t))),
            Err(_) => {
                clear_session = true;
                (None, None)
            }
        },
        None => {
            let outer = crate::api::ctx_from(srv, req.extensions());
            (outer.caller().cloned(), outer.credential().cloned())
        }
    };
    let auth_enabled = srv.auth_enabled();
    let session = Session {
        csrf: csrf.clone(),
        user: info.as_ref().map(|i| i.username.clone()),
        auth_enabled,
        tls,
        ctx: srv.request_ctx(info, credential),
    };
    let path = req.uri().path();
    let open = path == "/ui/login" || path.starts_with("/ui/assets/");
    let mut resp = if auth_enabled && session.user.is_none() && !open {
        if path.starts_with("/ui/events/") {
            refuse(StatusCode::UNAUTHORIZED, "Sign in first.")
        } else {
            Redirect::to("/ui/login").into_response()
        }
    } else {
        let mut req = req;
        // Handlers take the context from the session; replacing the outer
        // one too keeps anything that reads the extensions consistent.
        req.extensions_mut().insert(session.ctx.clone());
        req.extensions_mut().insert(session);
        next.run(req).await
    };
    let headers = resp.headers_mut();
    if fresh_csrf {
        headers.append(
            header::SET_COOKIE,
            set_cookie(CSRF_COOKIE, &csrf, tls, None),
        );
    }
    if clear_session {
        headers.append(
            header::SET_COOKIE,
            set_cookie(SESSION_COOKIE, "", tls, Some(0)),
        );
    }
    resp
}

/// `GET /ui/login`.
pub async fn login_page(axum::Extension(s): axum::Extension<Session>) -> Response {
    login_form(&s, StatusCode::OK, None)
}

fn login_form(s: &Session, status: StatusCode, error: Option<&str>) -> Response {
    let mut body = String::new();
    if let Some(e) = error {
        body.push_str(&html::error_box(e));
    }
    if !s.auth_enabled {
        body.push_str("<p>Authentication is off: there is nothing to sign in to. <a href=\"/ui/\">Go to the cluster</a>.</p>");
    }
    body.push_str(&format!(
        r#"<form class="card" method="post" action="/ui/login">{}
<p><label for="name">User</label><br><input id="name" name="name" autocomplete="username" required autofocus></p>
<p><label for="password">Password</label><br><input id="password" name="password" type="password" autocomplete="current-password" required></p>
<p><button type="submit">Sign in</button></p>
</form>
<p class="hint">The same users and roles as <code>etcdctl --user</code>; you see and change only what your roles allow.</p>"#,
        html::csrf_field(s)
    ));
    html::page_with_status(status, s, "Sign in", Nav::None, &body, "")
}

#[derive(serde::Deserialize)]
pub struct LoginForm {
    name: String,
    password: String,
}

/// `POST /ui/login`: etcd's Authenticate; the token becomes the session.
pub async fn login(
    State(c): State<Arc<Console>>,
    axum::Extension(s): axum::Extension<Session>,
    axum::Form(f): axum::Form<LoginForm>,
) -> Response {
    let r = c
        .srv
        .authenticate(AuthenticateRequest {
            name: f.name,
            password: f.password,
        })
        .await;
    match r {
        Ok(resp) => {
            let tls = s.tls;
            let mut out = Redirect::to("/ui/").into_response();
            out.headers_mut().append(
                header::SET_COOKIE,
                set_cookie(SESSION_COOKIE, &resp.token, tls, None),
            );
            // A new session gets a new CSRF token, so one planted before
            // the login is worthless after it.
            out.headers_mut().append(
                header::SET_COOKIE,
                set_cookie(CSRF_COOKIE, &new_csrf_token(), tls, None),
            );
            out
        }
        Err(e) => login_form(&s, StatusCode::UNAUTHORIZED, Some(&e.to_string())),
    }
}

/// `POST /ui/logout`: forgets the session cookie (the token itself expires
/// after `--auth-token-ttl` unused, as any simple token does).
pub async fn logout(axum::Extension(s): axum::Extension<Session>) -> Response {
    let mut out = Redirect::to("/ui/login").into_response();
    out.headers_mut().append(
        header::SET_COOKIE,
        set_cookie(SESSION_COOKIE, "", s.tls, Some(0)),
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cookies_are_found_by_exact_name() {
        let mut h = HeaderMap::new();
        h.insert(
            header::COOKIE,
            HeaderValue::from_static("xcairn_csrf=evil; cairn_csrf=abc; cairn_session=t"),
        );
        assert_eq!(cookie(&h, "cairn_csrf"), Some("abc"));
        assert_eq!(cookie(&h, "cairn_session"), Some("t"));
        assert_eq!(cookie(&h, "other"), None);
    }

    #[test]
    fn csrf_tokens_are_random_hex_and_compared_whole() {
        let (a, b) = (new_csrf_token(), new_csrf_token());
        assert!(is_csrf_token(&a) && is_csrf_token(&b));
        assert_ne!(a, b);
        assert!(same_token(&a, &a.clone()));
        assert!(!same_token(&a, &b));
        assert!(!same_token(&a, &a[1..]));
        assert!(!is_csrf_token("zz"));
    }

    #[test]
    fn the_form_token_is_read_from_the_body() {
        assert_eq!(
            form_csrf(b"key=%2Fa&csrf=abc&value=x").as_deref(),
            Some("abc")
        );
        assert_eq!(form_csrf(b"key=a"), None);
    }
}
