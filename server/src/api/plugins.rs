//! The plugin admin API, JSON over HTTP on the client URLs (what
//! `cairn plugin` talks to):
//!
//! | Method and path | Does |
//! | --- | --- |
//! | `GET /cairn/v1/plugins` | the set this member enforces, and its config declaration |
//! | `PUT /cairn/v1/plugins/{name}` | deploy (or replace) a plugin |
//! | `DELETE /cairn/v1/plugins/{name}` | remove an API-deployed plugin |
//! | `POST /cairn/v1/plugins/dry-run` | a candidate (or deployed plugin) against the keyspace |
//! | `POST /cairn/v1/plugins/check` | ask the authenticators / authorizers a question |
//!
//! Changes go through raft (`EtcdServer::change_plugins`) and are answered
//! once this member applied them: the answer's `version` and
//! `first_revision` say from where on the new set judges writes. With auth
//! enabled every route needs a token of a user with the root role in the
//! `Authorization` header: a plugin runs code inside every member.

use crate::error::Error;
use crate::etcdserver::EtcdServer;
use crate::pb::cairnpb::{PluginLoadStatus, PluginOrigin, PluginSetStatus};
use crate::policy::LoadStatus;
use crate::policy::config::load_declaration;
use crate::policy::dryrun;
use crate::policy::model::{self, Declaration, Mode, RecordExt, Source};
use crate::policy::set::ActiveSet;
use axum::Json;
use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use base64::Engine as _;
use bytes::Bytes;
use cairn_plugin_host::{Credential, PasswordCredential};
use serde::Deserialize;
use serde_json::{Value, json};
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

/// Largest request body: a plugin binary in base64 plus its settings.
pub(crate) const MAX_BODY_BYTES: usize = model::MAX_PLUGIN_BYTES / 3 * 4 + (2 << 20);
/// How long a dry run waits for a deployed plugin's component.
const LOAD_WAIT: Duration = Duration::from_secs(30);

pub fn routes(srv: Arc<EtcdServer>) -> axum::Router {
    axum::Router::new()
        .route("/cairn/v1/plugins", get(list))
        .route("/cairn/v1/plugins/dry-run", post(dry_run))
        .route("/cairn/v1/plugins/check", post(check))
        .route(
            "/cairn/v1/plugins/{name}",
            get(show).put(deploy).delete(remove),
        )
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(srv)
}

fn error(status: StatusCode, msg: impl Into<String>) -> Response {
    (status, Json(json!({ "error": msg.into() }))).into_response()
}

/// Why a change or dry run failed: the status the API answers with and the
/// message (the console shows the same).
pub(crate) type Failure = (StatusCode, String);

fn fail(status: StatusCode, msg: impl Into<String>) -> Failure {
    (status, msg.into())
}

fn failure_response((status, msg): Failure) -> Response {
    error(status, msg)
}

fn from_error(e: Error) -> Response {
    failure_response(failure_of(e))
}

fn failure_of(e: Error) -> Failure {
    let status = match &e {
        Error::PluginSetRejected(_) => StatusCode::BAD_REQUEST,
        Error::PluginSetChanged => StatusCode::CONFLICT,
        Error::Auth(_) => StatusCode::FORBIDDEN,
        Error::NoLeader
        | Error::Timeout
        | Error::TimeoutDueToLeaderFail
        | Error::TooManyRequests
        | Error::LeaderChanged
        | Error::Stopped => StatusCode::SERVICE_UNAVAILABLE,
        Error::RequestTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    };
    (status, e.to_string())
}

/// With auth enabled: a root user's token in `Authorization` (as etcd's
/// gateway takes it, with or without `Bearer `).
pub(crate) async fn require_admin(srv: &EtcdServer, headers: &HeaderMap) -> Result<(), Response> {
    admin_caller(srv, headers).await.map(drop)
}

/// [`require_admin`], returning who the root caller is (`None` with auth
/// off), for a change whose entry must carry it.
pub(crate) async fn admin_caller(
    srv: &EtcdServer,
    headers: &HeaderMap,
) -> Result<Option<crate::auth::AuthInfo>, Response> {
    if !srv.auth_enabled() {
        return Ok(None);
    }
    let Some(token) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .map(|t| t.trim_start_matches("Bearer ").trim())
        .filter(|t| !t.is_empty())
    else {
        return Err(error(
            StatusCode::UNAUTHORIZED,
            "auth is enabled: send a root user's token in the Authorization header",
        ));
    };
    let info = srv
        .resolve_token(token)
        .await
        .map_err(|e| error(StatusCode::UNAUTHORIZED, e.to_string()))?;
    srv.check_admin(&srv.request_ctx(Some(info.clone()), None))
        .map_err(|e| error(StatusCode::FORBIDDEN, e.to_string()))?;
    Ok(Some(info))
}

fn plugin_json(p: &crate::policy::ActivePlugin) -> Value {
    let r = &p.record;
    json!({
        "name": r.name,
        "sha256": hex::encode(&r.sha256),
        "size_bytes": p.wasm.len(),
        "hooks": model::hook_names(r.hooks()),
        "prefixes": r.prefixes.iter().map(|p| String::from_utf8_lossy(p).into_owned()).collect::<Vec<_>>(),
        "mode": r.mode_().as_str(),
        "failure_policy": model::failure_policy_name(r.fail_open),
        "deadline_ms": r.deadline_us as f64 / 1000.0,
        "memory_bytes": r.memory_bytes,
        // Values may be secrets (an HMAC key): only the keys are shown.
        "config_keys": r.config.iter().map(|e| e.key.clone()).collect::<Vec<_>>(),
        "origin": if r.declared_in_config() { "config" } else { "api" },
        "order": r.order,
        "since_version": r.since_version,
        // An authenticator deployed while auth was off is not asked under
        // auth until root redeploys it (docs/plugins.md).
        "vouched_under_auth": r.vouched_under_auth,
        "status": p.load.status(),
    })
}

/// Longest load error a member reports to its peers' probes.
const MAX_REPORTED_ERROR_BYTES: usize = 1024;

/// This member's set and each plugin's load status and totals here: what
/// it answers its peers' probes with (and what its own row shows).
pub(crate) fn set_status(set: &ActiveSet) -> PluginSetStatus {
    let totals = if set.plugins.is_empty() {
        HashMap::new()
    } else {
        crate::policy::metrics::totals()
    };
    PluginSetStatus {
        version: set.version,
        plugins: set
            .plugins
            .iter()
            .map(|p| {
                let t = totals.get(&p.record.name).copied().unwrap_or_default();
                let (state, error) = match p.load.status() {
                    LoadStatus::Loading => ("loading", String::new()),
                    LoadStatus::Ready => ("ready", String::new()),
                    LoadStatus::Failed(e) => ("failed", cut(e, MAX_REPORTED_ERROR_BYTES)),
                };
                PluginLoadStatus {
                    name: p.record.name.clone(),
                    sha256: p.record.sha256.clone(),
                    state: state.to_string(),
                    error,
                    calls: t.calls,
                    denials: t.denials,
                    errors: t.errors,
                    mean_latency_seconds: t.mean_latency_seconds().unwrap_or(0.0),
                }
            })
            .collect(),
    }
}

/// `s` cut to at most `max` bytes, on a character boundary.
fn cut(mut s: String, max: usize) -> String {
    if s.len() > max {
        let mut end = max;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
        s.push('…');
    }
    s
}

/// Every member's view of each plugin of this member's set: for this
/// member its own state, for a peer what the peer said in its last probe
/// (`transport::prober`, every 2 s, 1 s timeout). Nothing here calls a
/// peer, so a member that does not answer costs the page nothing: without
/// a fresh probe it is `unreachable`.
fn members_json(srv: &EtcdServer, set: &ActiveSet) -> HashMap<String, Vec<Value>> {
    let mut out: HashMap<String, Vec<Value>> = HashMap::new();
    for m in srv.membership().api_members() {
        let id = format!("{:x}", m.id);
        let name = if m.name.is_empty() {
            id.clone()
        } else {
            m.name
        };
        let reported = if m.id == srv.member_id() {
            Ok(set_status(set))
        } else {
            match srv.transport().probes.get(m.id) {
                Some(p) if p.is_fresh() => match p.status.and_then(|s| s.plugins) {
                    Some(s) => Ok(s),
                    None => Err((
                        "unknown",
                        "the member does not report plugin status (an older version)".to_string(),
                    )),
                },
                _ => Err(("unreachable", "no answer to the last probes".to_string())),
            }
        };
        for p in &set.plugins {
            let row = match &reported {
                Ok(s) => match s
                    .plugins
                    .iter()
                    .find(|q| q.name == p.record.name && q.sha256 == p.record.sha256)
                {
                    Some(q) => json!({
                        "state": q.state,
                        "error": (!q.error.is_empty()).then_some(&q.error),
                        "set_version": s.version,
                        "calls": q.calls,
                        "denials": q.denials,
                        "errors": q.errors,
                        "mean_latency_ms": (q.calls > 0).then_some(q.mean_latency_seconds * 1000.0),
                    }),
                    None => json!({
                        "state": "absent",
                        "error": format!("the member enforces set version {}, without this deploy of the plugin", s.version),
                        "set_version": s.version,
                    }),
                },
                Err((state, why)) => json!({ "state": state, "error": why }),
            };
            let mut row = row;
            if let Some(fields) = row.as_object_mut() {
                fields.insert("member".into(), json!(name));
                fields.insert("id".into(), json!(id));
            }
            out.entry(p.record.name.clone()).or_default().push(row);
        }
    }
    out
}

pub(crate) fn set_json(srv: &EtcdServer, set: &ActiveSet) -> Value {
    let declared = srv.plugins().declared();
    let mut members = members_json(srv, set);
    json!({
        "member": srv.name(),
        "version": set.version,
        "raft_index": set.raft_index,
        "first_revision": set.first_revision,
        "cause": set.cause,
        "config": {
            "cluster_hash": hex::encode(&set.config_hash),
            "declared_hash": declared.hash,
            "declared": declared.plugins,
            "in_sync": declared.in_sync_with(set),
            "error": declared.error,
            "trigger": declared.trigger,
        },
        "plugins": set.plugins.iter().map(|p| {
            let mut v = plugin_json(p);
            if let Some(fields) = v.as_object_mut() {
                fields.insert(
                    "members".into(),
                    json!(members.remove(&p.record.name).unwrap_or_default()),
                );
            }
            v
        }).collect::<Vec<_>>(),
    })
}

async fn list(
    State(srv): State<Arc<EtcdServer>>,
    headers: HeaderMap,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    if let Err(r) = require_admin(&srv, &headers).await {
        return r;
    }
    // Linearizable unless asked otherwise: the answer reflects every change
    // committed before the call.
    if !q.contains_key("serializable")
        && let Err(e) = srv.linearizable_read_notify().await
    {
        return from_error(e);
    }
    Json(set_json(&srv, &srv.plugins().current())).into_response()
}

async fn show(
    State(srv): State<Arc<EtcdServer>>,
    headers: HeaderMap,
    Path(name): Path<String>,
) -> Response {
    if let Err(r) = require_admin(&srv, &headers).await {
        return r;
    }
    if let Err(e) = srv.linearizable_read_notify().await {
        return from_error(e);
    }
    let set = srv.plugins().current();
    match set.get(&name) {
        Some(p) => Json(plugin_json(p)).into_response(),
        None => error(
            StatusCode::NOT_FOUND,
            format!("no plugin named {name:?} is deployed"),
        ),
    }
}

/// `config` as an object (applied in key order) or a list of pairs (in
/// the order given).
#[derive(Deserialize, Default)]
#[serde(untagged)]
pub(crate) enum ConfigPairs {
    #[default]
    Empty,
    Pairs(Vec<(String, String)>),
    Map(BTreeMap<String, String>),
}

impl ConfigPairs {
    fn into_vec(self) -> Vec<(String, String)> {
        match self {
            ConfigPairs::Empty => Vec::new(),
            ConfigPairs::Pairs(v) => v,
            ConfigPairs::Map(m) => m.into_iter().collect(),
        }
    }
}

/// A plugin as the API takes it.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(crate) struct Spec {
    /// The component, base64.
    #[serde(default)]
    pub wasm_base64: Option<String>,
    #[serde(default)]
    pub hooks: Option<Vec<String>>,
    #[serde(default)]
    pub prefixes: Option<Vec<String>>,
    #[serde(default)]
    pub mode: Option<String>,
    #[serde(default)]
    pub failure_policy: Option<String>,
    /// Go duration, e.g. "50ms".
    #[serde(default)]
    pub deadline: Option<String>,
    /// Bytes, or a size such as "16MiB".
    #[serde(default)]
    pub memory: Option<Value>,
    #[serde(default)]
    pub config: ConfigPairs,
    #[serde(default)]
    pub order: Option<i64>,
}

fn declaration(name: &str, spec: Spec) -> Result<Declaration, String> {
    let wasm = spec
        .wasm_base64
        .ok_or("`wasm_base64` (the component, base64-encoded) is required")?;
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(wasm.trim())
        .map_err(|e| format!("`wasm_base64` is not base64: {e}"))?;
    let mut d = Declaration::new(name, Source::Bytes(Bytes::from(bytes)));
    if let Some(h) = spec.hooks {
        d.hooks = Some(model::parse_hooks(h.iter().map(String::as_str))?);
    }
    if let Some(p) = spec.prefixes {
        d.prefixes = p.into_iter().map(Bytes::from).collect();
    }
    if let Some(m) = spec.mode {
        d.mode = Mode::parse(&m)?;
    }
    if let Some(f) = spec.failure_policy {
        d.fail_open = model::parse_failure_policy(&f)?;
    }
    if let Some(s) = spec.deadline {
        d.deadline =
            cairn_config::parse_go_duration(&s).map_err(|e| format!("`deadline` {s:?}: {e}"))?;
    }
    match spec.memory {
        None => {}
        Some(Value::Number(n)) => {
            d.memory_bytes = n
                .as_u64()
                .and_then(|n| usize::try_from(n).ok())
                .ok_or("`memory` must be a positive number of bytes")?;
        }
        Some(Value::String(s)) => d.memory_bytes = model::parse_size(&s)?,
        Some(_) => return Err("`memory` must be bytes or a size such as \"16MiB\"".into()),
    }
    d.config = spec.config.into_vec();
    d.order = spec.order.unwrap_or(0);
    d.check()?;
    Ok(d)
}

/// What a route checks of its body before it touches the server
/// (`crate::fuzz_api`): `route` 0 deploy, 1 dry run, 2 check. The handlers
/// below make the same calls.
pub(crate) fn check_body(route: u8, name: &str, body: &[u8]) -> Result<(), String> {
    match route % 3 {
        0 => {
            let spec: Spec = serde_json::from_slice(body).map_err(|e| e.to_string())?;
            declaration(name, spec).map(drop)
        }
        1 => {
            let body: DryRunBody = serde_json::from_slice(body).map_err(|e| e.to_string())?;
            if body.spec.wasm_base64.is_none() {
                return Ok(());
            }
            declaration("candidate", candidate_spec(body.spec)).map(drop)
        }
        _ => {
            let body: CheckBody = serde_json::from_slice(body).map_err(|e| e.to_string())?;
            if let Some(q) = body.authenticate {
                match (q.token, q.name, q.password) {
                    (Some(_), None, None) | (None, Some(_), Some(_)) => {}
                    _ => return Err("authenticate: give `token`, or `name` and `password`".into()),
                }
            }
            match body.authorize.map(|q| q.access) {
                None => Ok(()),
                Some(a)
                    if ["read", "put", "write", "delete-range", "delete"].contains(&a.as_str()) =>
                {
                    Ok(())
                }
                Some(other) => Err(format!("unknown access {other:?}")),
            }
        }
    }
}

async fn deploy(
    State(srv): State<Arc<EtcdServer>>,
    headers: HeaderMap,
    Path(name): Path<String>,
    body: Bytes,
) -> Response {
    let admin = match admin_caller(&srv, &headers).await {
        Ok(a) => a,
        Err(r) => return r,
    };
    let spec: Spec = match serde_json::from_slice(&body) {
        Ok(s) => s,
        Err(e) => return error(StatusCode::BAD_REQUEST, format!("bad request body: {e}")),
    };
    match deploy_spec(&srv, admin, name, spec).await {
        Ok(v) => Json(v).into_response(),
        Err(f) => failure_response(f),
    }
}

/// Deploys (or replaces) plugin `name` as `admin` (a root user, or `None`
/// with auth off: the caller checked that): what `PUT
/// /cairn/v1/plugins/{name}` and the console's deploy form both do.
pub(crate) async fn deploy_spec(
    srv: &Arc<EtcdServer>,
    admin: Option<crate::auth::AuthInfo>,
    name: String,
    spec: Spec,
) -> Result<Value, Failure> {
    let decl = declaration(&name, spec).map_err(|e| fail(StatusCode::BAD_REQUEST, e))?;
    if let Some(p) = srv.plugins().current().get(&name)
        && p.record.declared_in_config()
    {
        return Err(fail(
            StatusCode::CONFLICT,
            format!(
                "plugin {name:?} is declared in the members' config files ([plugins.{name}]); change it there"
            ),
        ));
    }
    // Compile and check it here first: a binary that does not load on this
    // member is refused before anything is proposed.
    let enforcer = Arc::clone(srv.plugins());
    let loaded =
        tokio::task::spawn_blocking(move || load_declaration(&enforcer, &decl, PluginOrigin::Api))
            .await;
    let (record, bytes) = match loaded {
        Ok(Ok(x)) => x,
        Ok(Err(e)) => return Err(fail(StatusCode::BAD_REQUEST, e)),
        Err(e) => return Err(fail(StatusCode::INTERNAL_SERVER_ERROR, e.to_string())),
    };
    let binaries = HashMap::from([(record.sha256.clone(), bytes)]);
    let cause = format!("deploy {name} (sha256 {})", hex::encode(&record.sha256));
    let new = record.clone();
    let outcome = srv
        .change_plugins(cause, &binaries, None, admin, vec![name.clone()], |set| {
            if set
                .get(&new.name)
                .is_some_and(|p| p.record.declared_in_config())
            {
                return Err(Error::PluginSetRejected(format!(
                    "plugin {:?} is declared in the members' config files",
                    new.name
                )));
            }
            let mut records: Vec<_> = set
                .records()
                .into_iter()
                .filter(|r| r.name != new.name)
                .collect();
            records.push(new.clone());
            Ok(Some(records))
        })
        .await;
    match outcome {
        Ok(o) => Ok(json!({
            "deployed": name,
            "sha256": hex::encode(&record.sha256),
            "hooks": model::hook_names(record.hooks()),
            "version": o.version,
            "raft_index": o.raft_index,
            "first_revision": o.first_revision,
            "changed": o.changed,
        })),
        Err(e) => Err(failure_of(e)),
    }
}

async fn remove(
    State(srv): State<Arc<EtcdServer>>,
    headers: HeaderMap,
    Path(name): Path<String>,
) -> Response {
    let admin = match admin_caller(&srv, &headers).await {
        Ok(a) => a,
        Err(r) => return r,
    };
    match remove_plugin(&srv, admin, name).await {
        Ok(v) => Json(v).into_response(),
        Err(f) => failure_response(f),
    }
}

/// Removes the API-deployed plugin `name` as `admin` (checked by the
/// caller): `DELETE /cairn/v1/plugins/{name}` and the console's remove.
pub(crate) async fn remove_plugin(
    srv: &Arc<EtcdServer>,
    admin: Option<crate::auth::AuthInfo>,
    name: String,
) -> Result<Value, Failure> {
    srv.linearizable_read_notify().await.map_err(failure_of)?;
    match srv.plugins().current().get(&name) {
        None => {
            return Err(fail(
                StatusCode::NOT_FOUND,
                format!("no plugin named {name:?} is deployed"),
            ));
        }
        Some(p) if p.record.declared_in_config() => {
            return Err(fail(
                StatusCode::CONFLICT,
                format!(
                    "plugin {name:?} is declared in the members' config files ([plugins.{name}]); remove it there"
                ),
            ));
        }
        Some(_) => {}
    }
    let outcome = srv
        .change_plugins(
            format!("remove {name}"),
            &HashMap::new(),
            None,
            admin,
            Vec::new(),
            |set| {
                if set.get(&name).is_none() {
                    return Ok(None);
                }
                Ok(Some(
                    set.records()
                        .into_iter()
                        .filter(|r| r.name != name)
                        .collect(),
                ))
            },
        )
        .await;
    match outcome {
        Ok(o) => Ok(json!({
            "removed": name,
            "version": o.version,
            "raft_index": o.raft_index,
            "first_revision": o.first_revision,
            "changed": o.changed,
        })),
        Err(e) => Err(failure_of(e)),
    }
}

/// The plugin a dry run evaluates and the prefixes it reads: a deployed
/// validator (once loaded on this member) or a candidate compiled here.
async fn dry_run_plugin(
    enforcer: &Arc<crate::policy::Enforcer>,
    name: Option<&str>,
    spec: DryRunSpec,
    prefixes_override: Option<Vec<Bytes>>,
) -> Result<(Arc<cairn_plugin_host::LoadedPlugin>, Vec<Bytes>), Failure> {
    let chosen = match (name, &spec.wasm_base64) {
        (Some(name), None) => {
            let set = enforcer.current();
            let Some(p) = set.get(name) else {
                return Err(fail(
                    StatusCode::NOT_FOUND,
                    format!("no plugin named {name:?} is deployed"),
                ));
            };
            if !p.record.validator {
                return Err(fail(
                    StatusCode::BAD_REQUEST,
                    format!("plugin {name:?} is not deployed as a validator"),
                ));
            }
            let cell = Arc::clone(&p.load);
            let prefixes = prefixes_override.unwrap_or_else(|| p.record.prefixes.clone());
            match tokio::task::spawn_blocking(move || cell.wait(LOAD_WAIT)).await {
                Ok(Ok(l)) => (l, prefixes),
                Ok(Err(e)) => {
                    return Err(fail(
                        StatusCode::SERVICE_UNAVAILABLE,
                        format!("plugin {name:?} is not loaded on this member: {e}"),
                    ));
                }
                Err(e) => return Err(fail(StatusCode::INTERNAL_SERVER_ERROR, e.to_string())),
            }
        }
        (None, Some(_)) => {
            let name = "candidate".to_owned();
            let decl = match declaration(&name, candidate_spec(spec)) {
                Ok(d) => d,
                Err(e) => return Err(fail(StatusCode::BAD_REQUEST, e)),
            };
            let Source::Bytes(wasm) = decl.source.clone() else {
                return Err(fail(StatusCode::BAD_REQUEST, "no binary"));
            };
            let e2 = Arc::clone(enforcer);
            let loaded = tokio::task::spawn_blocking(move || {
                e2.load_candidate(&decl.name, wasm, decl.limits(), decl.config.clone())
            })
            .await;
            match loaded {
                Ok(Ok(l)) if l.hooks().validator => (l, prefixes_override.unwrap_or_default()),
                Ok(Ok(_)) => {
                    return Err(fail(
                        StatusCode::BAD_REQUEST,
                        "the candidate does not export the validator hook: nothing to dry-run",
                    ));
                }
                Ok(Err(e)) => return Err(fail(StatusCode::BAD_REQUEST, e)),
                Err(e) => return Err(fail(StatusCode::INTERNAL_SERVER_ERROR, e.to_string())),
            }
        }
        _ => {
            return Err(fail(
                StatusCode::BAD_REQUEST,
                "give either `name` (a deployed plugin) or `wasm_base64` (a candidate)",
            ));
        }
    };
    Ok(chosen)
}

// (No `deny_unknown_fields`: serde does not support it with `flatten`.)
#[derive(Deserialize, Default)]
pub(crate) struct DryRunBody {
    /// A deployed plugin to evaluate (any mode); or give `wasm_base64`.
    #[serde(default)]
    pub name: Option<String>,
    #[serde(flatten)]
    pub spec: DryRunSpec,
    /// Revision to read the keyspace at (default: the current one).
    #[serde(default)]
    pub revision: Option<i64>,
    #[serde(default)]
    pub max_keys: Option<u64>,
    #[serde(default)]
    pub max_reported: Option<usize>,
}

/// The candidate's settings (as in a deploy; hooks, mode and policy do not
/// matter for a dry run).
#[derive(Deserialize, Default)]
pub(crate) struct DryRunSpec {
    #[serde(default)]
    pub wasm_base64: Option<String>,
    #[serde(default)]
    pub prefixes: Option<Vec<String>>,
    #[serde(default)]
    pub deadline: Option<String>,
    #[serde(default)]
    pub memory: Option<Value>,
    #[serde(default)]
    pub config: ConfigPairs,
}

/// A dry run's candidate as a deploy would declare it.
fn candidate_spec(spec: DryRunSpec) -> Spec {
    Spec {
        wasm_base64: spec.wasm_base64,
        prefixes: spec.prefixes,
        deadline: spec.deadline,
        memory: spec.memory,
        config: spec.config,
        ..Spec::default()
    }
}

async fn dry_run(State(srv): State<Arc<EtcdServer>>, headers: HeaderMap, body: Bytes) -> Response {
    if let Err(r) = require_admin(&srv, &headers).await {
        return r;
    }
    let body: DryRunBody = match serde_json::from_slice(&body) {
        Ok(b) => b,
        Err(e) => return error(StatusCode::BAD_REQUEST, format!("bad request body: {e}")),
    };
    match dry_run_body(&srv, body).await {
        Ok(report) => Json(report).into_response(),
        Err(f) => failure_response(f),
    }
}

/// A dry run as `POST /cairn/v1/plugins/dry-run` and the console's form
/// make it (the caller checked for root).
pub(crate) async fn dry_run_body(
    srv: &Arc<EtcdServer>,
    body: DryRunBody,
) -> Result<dryrun::Report, Failure> {
    srv.linearizable_read_notify().await.map_err(failure_of)?;
    let current = srv.store().current_rev();
    let revision = body.revision.filter(|r| *r > 0).unwrap_or(current);
    if revision > current {
        return Err(fail(
            StatusCode::BAD_REQUEST,
            format!("revision {revision} is in the future (current {current})"),
        ));
    }
    if revision < srv.store().compact_rev() {
        return Err(fail(
            StatusCode::BAD_REQUEST,
            format!(
                "revision {revision} is compacted (compacted up to {})",
                srv.store().compact_rev()
            ),
        ));
    }
    let max_keys = body
        .max_keys
        .unwrap_or(dryrun::DEFAULT_MAX_KEYS)
        .clamp(1, dryrun::MAX_MAX_KEYS);
    let max_reported = body
        .max_reported
        .unwrap_or(dryrun::DEFAULT_MAX_REPORTED)
        .clamp(1, dryrun::MAX_MAX_REPORTED);
    let prefixes_override = body
        .spec
        .prefixes
        .clone()
        .map(|p| p.into_iter().map(Bytes::from).collect::<Vec<_>>());
    let store = Arc::clone(srv.store());
    let (plugin, prefixes) = dry_run_plugin(
        srv.plugins(),
        body.name.as_deref(),
        body.spec,
        prefixes_override,
    )
    .await?;
    let opts = dryrun::Options {
        prefixes,
        revision,
        max_keys,
        max_reported,
    };
    match tokio::task::spawn_blocking(move || dryrun::run(&store, &plugin, &opts)).await {
        Ok(Ok(report)) => Ok(report),
        Ok(Err(e)) => Err(fail(StatusCode::INTERNAL_SERVER_ERROR, e)),
        Err(e) => Err(fail(StatusCode::INTERNAL_SERVER_ERROR, e.to_string())),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CheckBody {
    #[serde(default)]
    authenticate: Option<AuthenticateQuestion>,
    #[serde(default)]
    authorize: Option<AuthorizeQuestion>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AuthenticateQuestion {
    #[serde(default)]
    token: Option<String>,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    password: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AuthorizeQuestion {
    #[serde(default)]
    principal: Option<String>,
    /// `read`, `put` or `delete-range`.
    access: String,
    key: String,
    #[serde(default)]
    range_end: Option<String>,
}

/// Asks the live authenticators and authorizers what they would answer:
/// for testing an auth policy, and what the auth layer calls in earnest.
async fn check(State(srv): State<Arc<EtcdServer>>, headers: HeaderMap, body: Bytes) -> Response {
    if let Err(r) = require_admin(&srv, &headers).await {
        return r;
    }
    let body: CheckBody = match serde_json::from_slice(&body) {
        Ok(b) => b,
        Err(e) => return error(StatusCode::BAD_REQUEST, format!("bad request body: {e}")),
    };
    let mut out = serde_json::Map::new();
    let mut principal_from_auth = None;
    if let Some(q) = body.authenticate {
        let credential = match (q.token, q.name, q.password) {
            (Some(t), None, None) => Credential::BearerToken(t),
            (None, Some(name), Some(password)) => {
                Credential::Password(PasswordCredential { name, password })
            }
            _ => {
                return error(
                    StatusCode::BAD_REQUEST,
                    "authenticate: give `token`, or `name` and `password`",
                );
            }
        };
        let decision = srv
            .plugins()
            .authenticate(credential, srv.auth_enabled())
            .await;
        let v = match decision {
            crate::policy::AuthDecision::Authenticated { plugin, principal } => {
                principal_from_auth = Some(principal.clone());
                json!({"decision": "authenticated", "plugin": plugin, "principal": principal})
            }
            crate::policy::AuthDecision::Refused { plugin, reason } => {
                json!({"decision": "refused", "plugin": plugin, "reason": reason})
            }
            crate::policy::AuthDecision::Abstain => json!({"decision": "abstain"}),
        };
        out.insert("authenticate".into(), v);
    }
    if let Some(q) = body.authorize {
        let access = match q.access.as_str() {
            "read" => crate::auth::Access::Read,
            "put" | "write" => crate::auth::Access::Put,
            "delete-range" | "delete" => crate::auth::Access::DeleteRange,
            other => {
                return error(
                    StatusCode::BAD_REQUEST,
                    format!("authorize: unknown access {other:?} (read, put, delete-range)"),
                );
            }
        };
        // Without a principal, the one the authenticate question produced.
        let principal = q.principal.or(principal_from_auth);
        let r = srv
            .plugins()
            .authorize(
                principal.clone(),
                access,
                Bytes::from(q.key),
                Bytes::from(q.range_end.unwrap_or_default()),
            )
            .await;
        let v = match r {
            Ok(()) => json!({"allowed": true, "principal": principal}),
            Err(e) => json!({"allowed": false, "principal": principal, "error": e.to_string()}),
        };
        out.insert("authorize".into(), v);
    }
    Json(Value::Object(out)).into_response()
}
