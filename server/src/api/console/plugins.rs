//! The policy plugins page: the set this member enforces (version, first
//! revision), each plugin's hooks, prefixes, mode, failure policy, limits
//! and load status here, and its calls, denials, errors and mean latency on
//! this member since it started. Root only while auth is on, as the admin
//! API is. Deploying, removing and dry runs stay with `cairn plugin` for
//! now (docs/plugins.md).

use super::Console;
use super::html::{self, Nav, esc};
use super::session::Session;
use crate::policy::metrics::PLUGIN_METRICS;
use axum::Extension;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use prometheus::core::Collector;
use serde_json::Value;
use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::Arc;

/// A metric vector's values summed per `plugin` label: (count, sum) —
/// counters give their value and 0; histograms their count and sum.
fn per_plugin(c: &dyn Collector) -> HashMap<String, (f64, f64)> {
    let mut out: HashMap<String, (f64, f64)> = HashMap::new();
    for family in c.collect() {
        for m in family.get_metric() {
            let Some(plugin) = m
                .get_label()
                .iter()
                .find(|l| l.name() == "plugin")
                .map(|l| l.value().to_string())
            else {
                continue;
            };
            let e = out.entry(plugin).or_default();
            let h = m.get_histogram();
            if h.get_sample_count() > 0 {
                e.0 += h.get_sample_count() as f64;
                e.1 += h.get_sample_sum();
            } else {
                e.0 += m.get_counter().get_value();
            }
        }
    }
    out
}

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

/// `GET /ui/plugins`.
pub async fn page(State(c): State<Arc<Console>>, Extension(s): Extension<Session>) -> Response {
    if let Err(e) = c.srv.check_admin(&s.ctx) {
        return html::page_with_status(
            StatusCode::FORBIDDEN,
            &s,
            "Policy plugins",
            Nav::Plugins,
            &html::error_box(&format!("{e} (plugins are shown to root only)")),
            "",
        );
    }
    let set = crate::api::plugins::set_json(&c.srv, &c.srv.plugins.current());
    let calls = per_plugin(&PLUGIN_METRICS.calls);
    let denials = per_plugin(&PLUGIN_METRICS.denials);
    let errors = per_plugin(&PLUGIN_METRICS.errors);
    let latency = per_plugin(&PLUGIN_METRICS.latency);
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
        body.push_str("<p>No plugins are deployed. Deploy one with <code>cairn plugin deploy</code> (docs/plugins.md).</p>");
        return html::page(&s, "Policy plugins", Nav::Plugins, &body);
    }
    body.push_str(
        r#"<div class="scroll"><table id="plugins"><thead><tr><th scope="col">Name</th><th scope="col">Hooks</th><th scope="col">Prefixes</th><th scope="col">Mode</th><th scope="col">On failure</th><th scope="col">Limits</th><th scope="col">Status here</th><th scope="col">Calls</th><th scope="col">Denials</th><th scope="col">Errors</th><th scope="col">Mean latency</th></tr></thead><tbody>"#,
    );
    for p in &plugins {
        let name = p["name"].as_str().unwrap_or_default();
        let count = |m: &HashMap<String, (f64, f64)>| m.get(name).map_or(0.0, |v| v.0);
        let mean = latency
            .get(name)
            .filter(|(n, _)| *n > 0.0)
            .map_or("—".to_string(), |(n, sum)| {
                format!("{:.2} ms", sum / n * 1000.0)
            });
        let status = match &p["status"] {
            Value::String(st) => esc(st),
            other => esc(&other.to_string()),
        };
        let _ = write!(
            body,
            "<tr><th scope=\"row\">{}</th><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{} ms, {}</td><td>{status}</td><td>{}</td><td>{}</td><td>{}</td><td>{mean}</td></tr>",
            esc(name),
            text_list(&p["hooks"]),
            text_list(&p["prefixes"]),
            esc(p["mode"].as_str().unwrap_or_default()),
            esc(p["failure_policy"].as_str().unwrap_or_default()),
            p["deadline_ms"],
            html::size(p["memory_bytes"].as_i64().unwrap_or(0)),
            count(&calls),
            count(&denials),
            count(&errors),
        );
    }
    body.push_str(
        "</tbody></table></div><p class=\"hint\">Counts are this member's since it started.</p>",
    );
    html::page(&s, "Policy plugins", Nav::Plugins, &body)
}
