//! The policy plugins page: the set this member enforces (version, first
//! revision), each plugin's hooks, prefixes, mode, failure policy, limits
//! and load status on every member, and its calls, denials, errors and
//! mean latency on each member since that member started. Root only while
//! auth is on, as the admin API is.
//!
//! For root, three forms: a dry run (upload a `.wasm`, see which existing
//! keys it would reject), a deploy and a remove (with a confirmation
//! step). They call the admin API's own functions (`api::plugins`:
//! `dry_run_body`, `deploy_spec`, `remove_plugin`), so a form is judged,
//! validated and answered exactly as `cairn plugin` is; only the encoding
//! differs (a `multipart/form-data` upload instead of base64 in JSON).

use super::Console;
use super::html::{self, Nav, esc};
use super::multipart::{self, Part};
use super::session::Session;
use crate::api::plugins::{ConfigPairs, DryRunBody, DryRunSpec, Failure, Spec};
use axum::Extension;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::Response;
use base64::Engine as _;
use bytes::Bytes;
use serde_json::Value;
use std::fmt::Write as _;
use std::sync::Arc;

fn text_list(v: &Value) -> String {
    v.as_array()
        .map(|a| {
            a.iter()
                .map(|x| format!("<code>{}</code>", esc(x.as_str().unwrap_or_default())))
                .collect::<Vec<_>>()
                .join(" ")
        })
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "—".to_string())
}

/// The 403 page for a user without the root role.
fn forbidden(s: &Session, e: &crate::error::Error) -> Response {
    html::page_with_status(
        StatusCode::FORBIDDEN,
        s,
        "Policy plugins",
        Nav::Plugins,
        &html::error_box(&format!("{e} (plugins are shown to root only)")),
        "",
    )
}

/// `GET /ui/plugins`.
pub async fn page(State(c): State<Arc<Console>>, Extension(s): Extension<Session>) -> Response {
    if let Err(e) = c.srv.check_admin(&s.ctx) {
        return forbidden(&s, &e);
    }
    let body = set_view(&c, &s);
    html::page(&s, "Policy plugins", Nav::Plugins, &body)
}

/// The set, its table (with a remove button per API-deployed plugin) and
/// the dry-run and deploy forms.
fn set_view(c: &Console, s: &Session) -> String {
    let mut body = table(c, s);
    body.push_str(&forms(s));
    body
}

#[allow(clippy::indexing_slicing)] // serde_json::Value's `v["k"]` reads Null when absent, never panics
fn table(c: &Console, s: &Session) -> String {
    let set = crate::api::plugins::set_json(&c.srv, &c.srv.plugins().current());
    let mut body = String::new();
    let _ = write!(
        body,
        r#"<dl class="summary"><div><dt>Set version</dt><dd id="set-version">{}</dd></div><div><dt>Judges writes from revision</dt><dd>{}</dd></div><div><dt>Config declaration in sync</dt><dd>{}</dd></div></dl>"#,
        set["version"],
        set["first_revision"],
        if set["config"]["in_sync"].as_bool().unwrap_or(false) {
            "yes"
        } else {
            "no"
        }
    );
    let plugins = set["plugins"].as_array().cloned().unwrap_or_default();
    if plugins.is_empty() {
        body.push_str("<p id=\"no-plugins\">No plugins are deployed. Deploy one below or with <code>cairn plugin deploy</code> (docs/plugins.md).</p>");
        return body;
    }
    body.push_str(
        r#"<div class="scroll"><table id="plugins"><thead><tr><th scope="col">Name</th><th scope="col">Hooks</th><th scope="col">Prefixes</th><th scope="col">Mode</th><th scope="col">On failure</th><th scope="col">Limits</th><th scope="col">Load status per member</th><th scope="col">Remove</th></tr></thead><tbody>"#,
    );
    for p in &plugins {
        let name = p["name"].as_str().unwrap_or_default();
        let loads: String = members(p)
            .iter()
            .map(|m| {
                format!(
                    "<li>{}: {}</li>",
                    esc(m["member"].as_str().unwrap_or_default()),
                    state(m)
                )
            })
            .collect();
        // Plugins declared in the config files are changed there.
        let remove = if p["origin"].as_str() == Some("api") {
            format!(
                r#"<form method="post" action="/ui/plugins/remove">{}<input type="hidden" name="name" value="{}"><button type="submit" aria-label="Remove {}">Remove…</button></form>"#,
                html::csrf_field(s),
                esc(name),
                esc(name)
            )
        } else {
            "config file".to_string()
        };
        let _ = write!(
            body,
            "<tr><th scope=\"row\">{}</th><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{} ms, {}</td><td><ul class=\"loads\">{loads}</ul></td><td>{remove}</td></tr>",
            esc(name),
            text_list(&p["hooks"]),
            text_list(&p["prefixes"]),
            esc(p["mode"].as_str().unwrap_or_default()),
            esc(p["failure_policy"].as_str().unwrap_or_default()),
            p["deadline_ms"],
            html::size(p["memory_bytes"].as_i64().unwrap_or(0)),
        );
    }
    body.push_str("</tbody></table></div>");
    body.push_str(&per_member(c, &plugins));
    body
}

fn members(p: &Value) -> Vec<Value> {
    p["members"].as_array().cloned().unwrap_or_default()
}

/// One member's load status of a plugin, as words: loaded, compiling,
/// failed (with the member's error), or why there is no answer.
fn state(m: &Value) -> String {
    let error = m["error"].as_str().unwrap_or_default();
    match m["state"].as_str().unwrap_or_default() {
        "ready" => r#"<span class="ok">loaded</span>"#.to_string(),
        "loading" => "compiling".to_string(),
        "failed" => format!(r#"<span class="bad">failed</span>: {}"#, esc(error)),
        "unreachable" => r#"<span class="bad">unreachable</span>"#.to_string(),
        other => format!("{} ({})", esc(other), esc(error)),
    }
}

/// Calls, denials, errors and mean latency of each plugin on each member,
/// since that member started (from its last probe answer for the others).
#[allow(clippy::indexing_slicing)] // serde_json::Value's `v["k"]` reads Null when absent, never panics
fn per_member(c: &Console, plugins: &[Value]) -> String {
    let mut out = String::from(
        r#"<h2 id="on-each-member">On each member</h2><div class="scroll"><table id="plugin-members"><thead><tr><th scope="col">Plugin</th><th scope="col">Member</th><th scope="col">Load status</th><th scope="col">Calls</th><th scope="col">Denials</th><th scope="col">Errors</th><th scope="col">Mean latency</th></tr></thead><tbody>"#,
    );
    let this_id = format!("{:x}", c.srv.member_id());
    for p in plugins {
        let name = esc(p["name"].as_str().unwrap_or_default());
        for m in members(p) {
            let member = m["member"].as_str().unwrap_or_default();
            let this = if m["id"].as_str() == Some(this_id.as_str()) {
                r#" <span class="hint">(this member)</span>"#
            } else {
                ""
            };
            let count = |k: &str| m[k].as_u64().map_or("—".to_string(), |n| n.to_string());
            let mean = m["mean_latency_ms"]
                .as_f64()
                .map_or("—".to_string(), |ms| format!("{ms:.2} ms"));
            let _ = write!(
                out,
                "<tr><td>{name}</td><th scope=\"row\">{}{this}</th><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{mean}</td></tr>",
                esc(member),
                state(&m),
                count("calls"),
                count("denials"),
                count("errors"),
            );
        }
    }
    out.push_str(
        "</tbody></table></div><p class=\"hint\">Counts are each member's since it started. Other members' figures come from their answers to this member's probes (every 2 s); a member without an answer in the last 6 s shows as unreachable.</p>",
    );
    out
}

/// The dry-run and deploy forms (multipart: they upload the binary).
fn forms(s: &Session) -> String {
    let csrf = html::csrf_field(s);
    let common = r#"<p><label for="{p}-wasm">Component (<code>.wasm</code>)</label><br><input id="{p}-wasm" name="wasm" type="file" accept=".wasm,application/wasm" required></p>
<p><label for="{p}-prefixes">Key prefixes, one per line (none: every key)</label><br><textarea id="{p}-prefixes" name="prefixes" rows="2"></textarea></p>
<p><label for="{p}-config">Config, one <code>key=value</code> per line</label><br><textarea id="{p}-config" name="config" rows="2"></textarea></p>
<p><label for="{p}-deadline">Deadline per call (Go duration, e.g. <code>50ms</code>; empty: default)</label><br><input id="{p}-deadline" name="deadline"></p>
<p><label for="{p}-memory">Memory limit (bytes or e.g. <code>16MiB</code>; empty: default)</label><br><input id="{p}-memory" name="memory"></p>"#;
    format!(
        r#"<h2 id="dry-run">Dry run</h2>
<form class="card" method="post" action="/ui/plugins/dry-run" enctype="multipart/form-data">{csrf}
{dry}
<p><button type="submit">Dry run</button> <span class="hint">Judges every existing key in the prefixes as if it were written again; changes nothing.</span></p>
</form>
<h2 id="deploy">Deploy</h2>
<form class="card" method="post" action="/ui/plugins/deploy" enctype="multipart/form-data">{csrf}
<p><label for="deploy-name">Name</label><br><input id="deploy-name" name="name" required></p>
{dep}
<fieldset><legend>Hooks (none ticked: what the component exports)</legend>
<label><input type="checkbox" name="hooks" value="validator"> validator</label>
<label><input type="checkbox" name="hooks" value="authenticator"> authenticator</label>
<label><input type="checkbox" name="hooks" value="authorizer"> authorizer</label></fieldset>
<p><label for="deploy-mode">Mode</label><br><select id="deploy-mode" name="mode"><option value="">default (enforce)</option><option>enforce</option><option>audit</option><option>dry-run</option></select></p>
<p><label for="deploy-policy">On failure</label><br><select id="deploy-policy" name="failure_policy"><option value="">default (fail-closed)</option><option>fail-closed</option><option>fail-open</option></select></p>
<p><button type="submit">Deploy</button> <span class="hint">Replaces a deployed plugin of the same name. Every member loads it; writes are judged from the answer's revision on.</span></p>
</form>"#,
        dry = common.replace("{p}", "dry"),
        dep = common.replace("{p}", "deploy"),
    )
}

/// A form field as an optional setting: empty means the default.
fn field(parts: &[Part], name: &str) -> Option<String> {
    multipart::text(parts, name)
        .map(|v| v.trim().to_string())
        .filter(|v| !v.is_empty())
}

/// One item a line (prefixes); blank lines are skipped. Only `\r` at a
/// line's end is dropped: a prefix may end in spaces.
fn lines(parts: &[Part], name: &str) -> Option<Vec<String>> {
    let v: Vec<String> = multipart::text(parts, name)?
        .split('\n')
        .map(|l| l.strip_suffix('\r').unwrap_or(l).to_string())
        .filter(|l| !l.trim().is_empty())
        .collect();
    (!v.is_empty()).then_some(v)
}

/// `key=value` lines, in the order given.
fn config_pairs(parts: &[Part]) -> Result<ConfigPairs, String> {
    let mut pairs = Vec::new();
    for (i, line) in multipart::text(parts, "config")
        .unwrap_or_default()
        .lines()
        .enumerate()
    {
        if line.trim().is_empty() {
            continue;
        }
        let (k, v) = line
            .split_once('=')
            .ok_or_else(|| format!("config line {}: expected key=value", i + 1))?;
        pairs.push((k.trim().to_string(), v.to_string()));
    }
    Ok(if pairs.is_empty() {
        ConfigPairs::Empty
    } else {
        ConfigPairs::Pairs(pairs)
    })
}

/// The uploaded component, base64 as the admin API takes it.
fn wasm_base64(parts: &[Part]) -> Result<String, String> {
    let wasm = parts
        .iter()
        .find(|p| p.name == "wasm" && p.filename.is_some() && !p.data.is_empty())
        .ok_or("choose the plugin's .wasm file")?;
    Ok(base64::engine::general_purpose::STANDARD.encode(&wasm.data))
}

fn form_parts(headers: &HeaderMap, body: &Bytes) -> Result<Vec<Part>, String> {
    let boundary = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(multipart::boundary)
        .ok_or("the form must be sent as multipart/form-data")?;
    multipart::parse(body, &boundary)
}

/// The plugins page with an outcome box above the set.
fn outcome(c: &Console, s: &Session, status: StatusCode, result: &str) -> Response {
    let body = format!("{result}{}", set_view(c, s));
    html::page_with_status(status, s, "Policy plugins", Nav::Plugins, &body, "")
}

fn failed(c: &Console, s: &Session, what: &str, (status, msg): Failure) -> Response {
    outcome(
        c,
        s,
        status,
        &html::error_box(&format!("{what} refused: {msg}")),
    )
}

/// Root's identity for a change entry (`None` with auth off), after the
/// same root check the admin API makes.
fn admin(c: &Console, s: &Session) -> Result<Option<crate::auth::AuthInfo>, Box<Response>> {
    c.srv
        .check_admin(&s.ctx)
        .map_err(|e| Box::new(forbidden(s, &e)))?;
    Ok(if c.srv.auth_enabled() {
        s.ctx.caller().cloned()
    } else {
        None
    })
}

/// `POST /ui/plugins/dry-run`.
pub async fn dry_run(
    State(c): State<Arc<Console>>,
    Extension(s): Extension<Session>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if let Err(r) = admin(&c, &s) {
        return *r;
    }
    let req = form_parts(&headers, &body).and_then(|parts| {
        Ok(DryRunBody {
            spec: DryRunSpec {
                wasm_base64: Some(wasm_base64(&parts)?),
                prefixes: lines(&parts, "prefixes"),
                deadline: field(&parts, "deadline"),
                memory: field(&parts, "memory").map(Value::String),
                config: config_pairs(&parts)?,
            },
            ..DryRunBody::default()
        })
    });
    let req = match req {
        Ok(r) => r,
        Err(e) => return failed(&c, &s, "Dry run", (StatusCode::BAD_REQUEST, e)),
    };
    let report = match crate::api::plugins::dry_run_body(&c.srv, req).await {
        Ok(r) => r,
        Err(f) => return failed(&c, &s, "Dry run", f),
    };
    let mut out = format!(
        r#"<section class="card" id="dry-run-report" aria-label="Dry run result"><h2>Dry run at revision {}</h2><p>Scanned {} keys: <strong>{}</strong> would be rejected, {} would fail (the failure policy would decide them).{}</p>"#,
        report.revision,
        report.scanned,
        report.rejected_total,
        report.failed_total,
        report
            .truncated
            .as_deref()
            .map(|t| format!(" Stopped early: {}.", esc(t)))
            .unwrap_or_default()
    );
    for (title, list) in [("Rejected", &report.rejected), ("Failed", &report.failed)] {
        if list.is_empty() {
            continue;
        }
        let _ = write!(
            out,
            r#"<div class="scroll"><table class="dry-run-{}"><caption>{title}</caption><thead><tr><th scope="col">Key</th><th scope="col">Reason</th></tr></thead><tbody>"#,
            title.to_ascii_lowercase()
        );
        for f in list {
            let _ = write!(
                out,
                "<tr><td><code>{}</code></td><td>{}</td></tr>",
                esc(&f.key),
                esc(&f.reason)
            );
        }
        out.push_str("</tbody></table></div>");
    }
    out.push_str("</section>");
    outcome(&c, &s, StatusCode::OK, &out)
}

/// `POST /ui/plugins/deploy`.
#[allow(clippy::indexing_slicing)] // serde_json::Value's `v["k"]` reads Null when absent, never panics
pub async fn deploy(
    State(c): State<Arc<Console>>,
    Extension(s): Extension<Session>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let admin = match admin(&c, &s) {
        Ok(a) => a,
        Err(r) => return *r,
    };
    let req = form_parts(&headers, &body).and_then(|parts| {
        let name = field(&parts, "name").ok_or("give the plugin a name")?;
        let hooks: Vec<String> = parts
            .iter()
            .filter(|p| p.name == "hooks")
            .map(|p| String::from_utf8_lossy(&p.data).into_owned())
            .collect();
        let spec = Spec {
            wasm_base64: Some(wasm_base64(&parts)?),
            hooks: (!hooks.is_empty()).then_some(hooks),
            prefixes: lines(&parts, "prefixes"),
            mode: field(&parts, "mode"),
            failure_policy: field(&parts, "failure_policy"),
            deadline: field(&parts, "deadline"),
            memory: field(&parts, "memory").map(Value::String),
            config: config_pairs(&parts)?,
            order: None,
        };
        Ok((name, spec))
    });
    let (name, spec) = match req {
        Ok(r) => r,
        Err(e) => return failed(&c, &s, "Deploy", (StatusCode::BAD_REQUEST, e)),
    };
    match crate::api::plugins::deploy_spec(&c.srv, admin, name.clone(), spec).await {
        Ok(v) => outcome(
            &c,
            &s,
            StatusCode::OK,
            &format!(
                r#"<p class="card ok" id="deployed" role="status">Deployed <strong>{}</strong> (hooks {}, sha256 <code>{}</code>): set version {}, judging writes from revision {}.</p>"#,
                esc(&name),
                text_list(&v["hooks"]),
                esc(v["sha256"].as_str().unwrap_or_default()),
                v["version"],
                v["first_revision"]
            ),
        ),
        Err(f) => failed(&c, &s, "Deploy", f),
    }
}

#[derive(serde::Deserialize)]
pub struct RemoveForm {
    name: String,
    #[serde(default)]
    confirm: Option<String>,
}

/// `POST /ui/plugins/remove`: the confirmation page first, then the
/// removal.
#[allow(clippy::indexing_slicing)] // serde_json::Value's `v["k"]` reads Null when absent, never panics
pub async fn remove(
    State(c): State<Arc<Console>>,
    Extension(s): Extension<Session>,
    axum::Form(f): axum::Form<RemoveForm>,
) -> Response {
    let admin = match admin(&c, &s) {
        Ok(a) => a,
        Err(r) => return *r,
    };
    if f.confirm.as_deref() != Some("yes") {
        let body = format!(
            r#"<form class="card" method="post" action="/ui/plugins/remove">{}<input type="hidden" name="name" value="{}"><input type="hidden" name="confirm" value="yes">
<p>Remove plugin <strong>{}</strong> from every member? Writes are no longer judged by it from the change's revision on.</p>
<p><button type="submit">Remove</button> <a href="/ui/plugins">Cancel</a></p></form>"#,
            html::csrf_field(&s),
            esc(&f.name),
            esc(&f.name)
        );
        return html::page(&s, "Remove a plugin", Nav::Plugins, &body);
    }
    match crate::api::plugins::remove_plugin(&c.srv, admin, f.name.clone()).await {
        Ok(v) => outcome(
            &c,
            &s,
            StatusCode::OK,
            &format!(
                r#"<p class="card ok" id="removed" role="status">Removed <strong>{}</strong>: set version {}, from revision {}.</p>"#,
                esc(&f.name),
                v["version"],
                v["first_revision"]
            ),
        ),
        Err(f) => failed(&c, &s, "Remove", f),
    }
}
