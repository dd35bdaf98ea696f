//! The configuration page: every effective setting with where its value
//! came from (the `cairn config show --sources` text, one row each), whether
//! it applies live or needs a restart, and the last reload's outcome. Like
//! `GET /config`, it is for root only while auth is on: it names files and
//! carries plugin settings.

use super::Console;
use super::html::{self, Nav, esc};
use super::session::Session;
use axum::Extension;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use cairn_config::Reload;
use std::fmt::Write as _;
use std::sync::Arc;

/// `GET /ui/config`.
pub async fn page(State(c): State<Arc<Console>>, Extension(s): Extension<Session>) -> Response {
    if let Err(e) = c.srv.check_admin(&s.ctx) {
        return html::page_with_status(
            StatusCode::FORBIDDEN,
            &s,
            "Configuration",
            Nav::Config,
            &html::error_box(&format!("{e} (the configuration is shown to root only)")),
            "",
        );
    }
    let cfg = c.reloader.config();
    let status = c.reloader.status();
    let mut body = String::new();
    let outcome = if status.last_attempt_unix == 0 {
        "No reload yet (send SIGHUP, edit a config file, or run <code>cairn config reload</code>)."
            .to_string()
    } else {
        format!(
            "Last reload at {} ({}): <strong>{}</strong>{}",
            html::utc(status.last_attempt_unix as i64 * 1_000_000_000),
            esc(&status.last_trigger),
            esc(&status.outcome),
            status
                .last_error
                .as_deref()
                .map(|e| format!(r#" — <span class="bad">{}</span>"#, esc(e)))
                .unwrap_or_default()
        )
    };
    let _ = write!(body, r#"<p id="reload">{outcome}</p>"#);
    for (title, list) in [
        ("Ignored by the last reload", &status.warnings),
        ("Changed, waiting for a restart", &status.pending_restart),
    ] {
        if !list.is_empty() {
            let _ = write!(body, "<h2>{title}</h2><ul>");
            for w in list {
                let _ = write!(body, "<li>{}</li>", esc(w));
            }
            body.push_str("</ul>");
        }
    }
    body.push_str(
        r#"<div class="scroll"><table id="settings"><thead><tr><th scope="col">Setting</th><th scope="col">Value</th><th scope="col">Source</th><th scope="col">Applies</th></tr></thead><tbody>"#,
    );
    let shown = cairn_config::show(&cfg, true);
    let mut plugins = String::new();
    for line in shown.lines() {
        // `name = value  # from SOURCE`; what follows the settings (a
        // `[plugins]` table) is shown as it is.
        let parsed = line.split_once(" = ").and_then(|(name, rest)| {
            let setting = cairn_config::registry::lookup(name)?;
            let (value, source) = rest.split_once("  # from ").unwrap_or((rest, ""));
            Some((setting, value, source))
        });
        let Some((setting, value, source)) = parsed else {
            plugins.push_str(line);
            plugins.push('\n');
            continue;
        };
        let applies = match setting.reload {
            Reload::Live => "live",
            Reload::Restart => "after restart",
        };
        let _ = write!(
            body,
            "<tr><th scope=\"row\"><code>--{}</code></th><td><code>{}</code></td><td>{}</td><td>{applies}</td></tr>",
            esc(setting.name),
            esc(value),
            esc(source)
        );
    }
    body.push_str("</tbody></table></div>");
    if !plugins.trim().is_empty() {
        let _ = write!(body, "<h2>Plugins</h2><pre>{}</pre>", esc(&plugins));
    }
    html::page(&s, "Configuration", Nav::Config, &body)
}
