//! The key pages: a prefix tree browser, one key's value, metadata and
//! history, and put/delete with a confirmation step.
//!
//! Every read is `EtcdServer::range` and every write `put` /
//! `delete_range`, run as the session's user: the same permission checks,
//! plugins and quota as the same call from etcdctl, and a refusal shows
//! its reason (a plugin's included). Everything is bounded: a browser page
//! lists at most [`PAGE_ENTRIES`] entries, reading at most that many keys
//! per range and [`PAGE_ENTRIES`] ranges; a history shows at most
//! [`HISTORY_ENTRIES`] versions; a value shows at most
//! [`MAX_SHOWN_VALUE_BYTES`].

use super::html::{self, Nav, csrf_field, esc, key_param, show_bytes, url_enc};
use super::session::Session;
use super::{Console, html::error_box};
use crate::error::Error;
use crate::etcdserver::{EtcdServer, RequestCtx};
use crate::pb::etcdserverpb::{
    DeleteRangeRequest, LeaseTimeToLiveRequest, PutRequest, RangeRequest,
};
use crate::pb::mvccpb::KeyValue;
use crate::state::prefix_end;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use axum::{Extension, Form};
use bytes::Bytes;
use std::fmt::Write as _;
use std::sync::Arc;

/// Entries (keys or folders) on one browser page, and the most ranges one
/// page may take (one per folder it steps over).
pub const PAGE_ENTRIES: usize = 100;
/// Versions one history page shows.
pub const HISTORY_ENTRIES: usize = 20;
/// The most of a value the page shows (the rest is counted, not sent).
pub const MAX_SHOWN_VALUE_BYTES: usize = 64 * 1024;
/// The most of a value a history row previews.
const PREVIEW_BYTES: usize = 120;

/// A key named in a query or form: `key` (text) or `hex` (any bytes).
#[derive(Debug, Default, serde::Deserialize)]
pub struct KeyName {
    key: Option<String>,
    hex: Option<String>,
}

impl KeyName {
    fn bytes(&self) -> Result<Option<Vec<u8>>, String> {
        match (&self.key, &self.hex) {
            (_, Some(h)) if !h.is_empty() => hex::decode(h)
                .map(Some)
                .map_err(|_| "the hex key is not valid hex".to_string()),
            (Some(k), _) if !k.is_empty() => Ok(Some(k.as_bytes().to_vec())),
            _ => Ok(None),
        }
    }
}

#[derive(Debug, Default, serde::Deserialize)]
pub struct BrowseQuery {
    #[serde(default)]
    prefix: String,
    /// Where this page starts (hex), from the previous page's "next" link.
    from: Option<String>,
}

enum Entry {
    Folder(Vec<u8>),
    Key(Vec<u8>),
}

/// One page of the tree under `prefix`: keys directly under it and the
/// folders (next `/`) below it, each folder once, at most `PAGE_ENTRIES`;
/// and where the next page starts, if there is more. All ranges read at
/// the revision of the first.
async fn list_page(
    srv: &EtcdServer,
    ctx: &RequestCtx,
    prefix: &[u8],
    from: Option<Vec<u8>>,
) -> Result<(Vec<Entry>, Option<Vec<u8>>, i64), Error> {
    let whole = prefix.is_empty();
    let end: Bytes = if whole {
        Bytes::from_static(b"\0")
    } else {
        prefix_end(prefix)
    };
    let mut cursor = from.unwrap_or_else(|| if whole { vec![0] } else { prefix.to_vec() });
    let mut entries = Vec::new();
    let mut rev = 0;
    let mut done = false;
    let mut rounds = 0;
    while !done && entries.len() < PAGE_ENTRIES && rounds < PAGE_ENTRIES {
        rounds += 1;
        let resp = srv
            .range(
                ctx,
                RangeRequest {
                    key: Bytes::from(cursor.clone()),
                    range_end: end.clone(),
                    limit: (PAGE_ENTRIES - entries.len()) as i64,
                    keys_only: true,
                    revision: rev,
                    serializable: rev != 0,
                    ..Default::default()
                },
            )
            .await?;
        if rev == 0 {
            rev = resp.header.as_ref().map_or(0, |h| h.revision);
        }
        let mut stepped_into_folder = false;
        for kv in &resp.kvs {
            let rel = kv.key.get(prefix.len()..).unwrap_or_default();
            if let Some(i) = rel.iter().position(|b| *b == b'/')
                && let Some(head) = rel.get(..=i)
            {
                let folder = [prefix, head].concat();
                cursor = prefix_end(&folder).to_vec();
                entries.push(Entry::Folder(folder));
                stepped_into_folder = true;
                break;
            }
            let mut next = kv.key.to_vec();
            next.push(0);
            cursor = next;
            entries.push(Entry::Key(kv.key.to_vec()));
        }
        if !stepped_into_folder && !resp.more {
            done = true;
        }
        // A folder whose end is the end of the range ends the listing too.
        if cursor.as_slice() >= end.as_ref() && !whole {
            done = true;
        }
    }
    Ok((entries, (!done).then_some(cursor), rev))
}

/// `GET /ui/keys?prefix=P`.
pub async fn browse(
    State(c): State<Arc<Console>>,
    Extension(s): Extension<Session>,
    Query(q): Query<BrowseQuery>,
) -> Response {
    let prefix = q.prefix.as_bytes().to_vec();
    let from = q.from.as_deref().and_then(|h| hex::decode(h).ok());
    let mut body = String::new();
    let _ = write!(
        body,
        r#"<form class="inline" method="get" action="/ui/keys"><label for="prefix">Prefix</label> <input id="prefix" name="prefix" value="{}" size="40"> <button type="submit">Browse</button></form>
<form class="inline" method="get" action="/ui/key"><label for="open-key">Key</label> <input id="open-key" name="key" size="40"> <button type="submit">Open</button> <a href="/ui/key/edit">New key…</a></form>
"#,
        esc(&q.prefix)
    );
    body.push_str(&breadcrumbs(&q.prefix));
    match list_page(&c.srv, &s.ctx, &prefix, from).await {
        Err(e) => body.push_str(&error_box(&format!(
            "{e} (reading keys under {:?})",
            q.prefix
        ))),
        Ok((entries, next, rev)) => {
            let _ = write!(
                body,
                r#"<p class="hint">At revision {rev}; at most {PAGE_ENTRIES} entries a page.</p>"#
            );
            if entries.is_empty() {
                body.push_str("<p>No keys here.</p>");
            }
            body.push_str(r#"<ul class="tree" id="entries">"#);
            for e in &entries {
                match e {
                    Entry::Folder(f) => {
                        let label = show_bytes(f.strip_prefix(prefix.as_slice()).unwrap_or(f));
                        let _ = match std::str::from_utf8(f) {
                            Ok(t) => write!(
                                body,
                                r#"<li class="folder"><a href="/ui/keys?prefix={}">{label}</a></li>"#,
                                url_enc(t)
                            ),
                            Err(_) => write!(body, r#"<li class="folder">{label}</li>"#),
                        };
                    }
                    Entry::Key(k) => {
                        let rel = k.strip_prefix(prefix.as_slice()).unwrap_or(k);
                        let label = if rel.is_empty() {
                            show_bytes(k)
                        } else {
                            show_bytes(rel)
                        };
                        let _ = write!(
                            body,
                            r#"<li class="key"><a href="/ui/key?{}">{label}</a></li>"#,
                            key_param(k)
                        );
                    }
                }
            }
            body.push_str("</ul>");
            if let Some(next) = next {
                let _ = write!(
                    body,
                    r#"<p><a rel="next" href="/ui/keys?prefix={}&amp;from={}">Next page →</a></p>"#,
                    url_enc(&q.prefix),
                    hex::encode(next)
                );
            }
        }
    }
    html::page(&s, "Keys", Nav::Keys, &body)
}

/// Links to each enclosing folder of `prefix`.
fn breadcrumbs(prefix: &str) -> String {
    let mut out = String::from(
        r#"<nav aria-label="Folders" class="crumbs"><a href="/ui/keys">(all keys)</a>"#,
    );
    let mut at = 0;
    while let Some(i) = prefix[at..].find('/') {
        let upto = &prefix[..at + i + 1];
        let _ = write!(
            out,
            r#" › <a href="/ui/keys?prefix={}">{}</a>"#,
            url_enc(upto),
            esc(&prefix[at..at + i + 1])
        );
        at += i + 1;
    }
    if at < prefix.len() {
        let _ = write!(out, " › {}", esc(&prefix[at..]));
    }
    out.push_str("</nav>");
    out
}

#[derive(Debug, Default, serde::Deserialize)]
pub struct ViewQuery {
    #[serde(flatten)]
    name: KeyName,
    /// Show history from just below this revision (a string: numbers do
    /// not survive `serde(flatten)` in a query).
    before: Option<String>,
}

/// A key's lease for the metadata list: its ID and remaining TTL.
async fn lease_html(srv: &EtcdServer, ctx: &RequestCtx, lease: i64) -> String {
    if lease == 0 {
        return "none".to_string();
    }
    let ttl = srv
        .lease_time_to_live(
            ctx,
            LeaseTimeToLiveRequest {
                id: lease,
                keys: false,
            },
        )
        .await;
    match ttl {
        Ok(t) if t.ttl >= 0 => format!(
            "<code>{lease:x}</code> (expires in {} s; granted {} s)",
            t.ttl, t.granted_ttl
        ),
        Ok(_) => format!("<code>{lease:x}</code> (expired)"),
        Err(e) => format!(
            "<code>{lease:x}</code> (TTL unknown: {})",
            esc(&e.to_string())
        ),
    }
}

/// `GET /ui/key?key=K`: value, metadata, history, actions.
pub async fn view(
    State(c): State<Arc<Console>>,
    Extension(s): Extension<Session>,
    Query(q): Query<ViewQuery>,
) -> Response {
    let key = match q.name.bytes() {
        Ok(Some(k)) => k,
        Ok(None) => return bad(&s, "Name a key: /ui/key?key=…"),
        Err(e) => return bad(&s, &e),
    };
    let srv = &c.srv;
    let title = format!("Key {}", String::from_utf8_lossy(&key));
    let mut body = String::new();
    body.push_str(&breadcrumbs(&String::from_utf8_lossy(&key)));
    let got = srv
        .range(
            &s.ctx,
            RangeRequest {
                key: Bytes::from(key.clone()),
                ..Default::default()
            },
        )
        .await;
    let kv = match got {
        Err(e) => {
            body.push_str(&error_box(&e.to_string()));
            return html::page_with_status(StatusCode::FORBIDDEN, &s, &title, Nav::Keys, &body, "");
        }
        Ok(r) => r.kvs.into_iter().next(),
    };
    let Some(kv) = kv else {
        let _ = write!(
            body,
            r#"<p>There is no key <code>{}</code> at this revision.</p>"#,
            show_bytes(&key)
        );
        if std::str::from_utf8(&key).is_ok() {
            let _ = write!(
                body,
                r#"<p><a href="/ui/key/edit?{}">Create it…</a></p>"#,
                key_param(&key)
            );
        }
        return html::page_with_status(StatusCode::NOT_FOUND, &s, &title, Nav::Keys, &body, "");
    };
    let lease = lease_html(srv, &s.ctx, kv.lease).await;
    let _ = write!(
        body,
        r#"<dl class="summary" id="meta">
<div><dt>Key</dt><dd><code>{}</code></dd></div>
<div><dt>Create revision</dt><dd>{}</dd></div>
<div><dt>Mod revision</dt><dd id="mod-revision">{}</dd></div>
<div><dt>Version</dt><dd>{}</dd></div>
<div><dt>Lease</dt><dd>{lease}</dd></div>
<div><dt>Size</dt><dd>{} bytes</dd></div>
</dl>
"#,
        show_bytes(&kv.key),
        kv.create_revision,
        kv.mod_revision,
        kv.version,
        kv.value.len()
    );
    body.push_str(&value_html(&kv.value));
    body.push_str(r#"<div class="actions">"#);
    if std::str::from_utf8(&key).is_ok() {
        let _ = write!(
            body,
            r#"<a class="button" href="/ui/key/edit?{}">Edit…</a> "#,
            key_param(&key)
        );
    }
    let _ = writeln!(
        body,
        r#"<form class="inline" method="post" action="/ui/key/delete">{}<input type="hidden" name="hex" value="{}"><button type="submit" class="danger">Delete…</button></form></div>"#,
        csrf_field(&s),
        hex::encode(&key)
    );
    let before = q.before.as_deref().and_then(|b| b.parse().ok());
    body.push_str(&history_html(srv, &s.ctx, &kv, before).await);
    html::page(&s, &title, Nav::Keys, &body)
}

/// A value for reading: JSON pretty-printed, other text as is, anything
/// else as a hex dump; at most `MAX_SHOWN_VALUE_BYTES` of it.
fn value_html(v: &[u8]) -> String {
    let shown = v.get(..MAX_SHOWN_VALUE_BYTES).unwrap_or(v);
    let cut = if shown.len() < v.len() {
        format!(
            r#"<p class="hint">Showing the first {} of {} bytes.</p>"#,
            shown.len(),
            v.len()
        )
    } else {
        String::new()
    };
    let is_json_doc = matches!(
        v.iter().find(|b| !b.is_ascii_whitespace()),
        Some(b'{' | b'[')
    );
    if shown.len() == v.len()
        && is_json_doc
        && let Ok(doc) = serde_json::from_slice::<serde_json::Value>(v)
        && let Ok(pretty) = serde_json::to_string_pretty(&doc)
    {
        return format!(
            r#"<h2>Value <span class="hint">(JSON)</span></h2><pre id="value" class="value">{}</pre>"#,
            esc(&pretty)
        );
    }
    match std::str::from_utf8(shown) {
        Ok(t)
            if !t
                .chars()
                .any(|c| c.is_control() && c != '\n' && c != '\t' && c != '\r') =>
        {
            format!(
                r#"<h2>Value <span class="hint">(text)</span></h2>{cut}<pre id="value" class="value">{}</pre>"#,
                esc(t)
            )
        }
        _ => format!(
            r#"<h2>Value <span class="hint">(binary, hex)</span></h2>{cut}<pre id="value" class="value">{}</pre>"#,
            hex_dump(shown)
        ),
    }
}

/// Offset, 16 bytes in hex, and their printable ASCII.
fn hex_dump(b: &[u8]) -> String {
    let mut out = String::new();
    for (i, line) in b.chunks(16).enumerate() {
        let _ = write!(out, "{:08x}  ", i * 16);
        for (j, byte) in line.iter().enumerate() {
            let _ = write!(out, "{byte:02x}{}", if j == 7 { "  " } else { " " });
        }
        for j in line.len()..16 {
            out.push_str(if j == 7 { "    " } else { "   " });
        }
        out.push(' ');
        for byte in line {
            out.push(if byte.is_ascii_graphic() || *byte == b' ' {
                *byte as char
            } else {
                '.'
            });
        }
        out.push('\n');
    }
    esc(&out)
}

/// The key's earlier versions in its current life (since its create
/// revision), newest first, until the compaction point; bounded.
async fn history_html(
    srv: &EtcdServer,
    ctx: &RequestCtx,
    kv: &KeyValue,
    before: Option<i64>,
) -> String {
    let mut out = String::from(
        r#"<h2>History</h2><table id="history"><thead><tr><th scope="col">Mod revision</th><th scope="col">Version</th><th scope="col">Value</th></tr></thead><tbody>"#,
    );
    let mut rev = before
        .map_or(kv.mod_revision, |b| b - 1)
        .min(kv.mod_revision);
    let mut rows = 0;
    let mut note = String::new();
    while rows < HISTORY_ENTRIES {
        if rev < kv.create_revision {
            let _ = write!(
                note,
                "Created at revision {} (earlier lives of the key, before a delete, are not shown).",
                kv.create_revision
            );
            break;
        }
        let resp = srv
            .range(
                ctx,
                RangeRequest {
                    key: kv.key.clone(),
                    revision: rev,
                    serializable: true,
                    ..Default::default()
                },
            )
            .await;
        let old = match resp {
            Ok(r) => r.kvs.into_iter().next(),
            Err(Error::Compacted) => {
                let _ = write!(
                    note,
                    "Older versions were compacted away (compaction at revision {}).",
                    srv.store().compact_rev()
                );
                break;
            }
            Err(e) => {
                note = format!("History stops here: {}", esc(&e.to_string()));
                break;
            }
        };
        let Some(old) = old else {
            break;
        };
        let preview = old.value.get(..PREVIEW_BYTES).unwrap_or(&old.value);
        let more = if old.value.len() > PREVIEW_BYTES {
            "…"
        } else {
            ""
        };
        let _ = write!(
            out,
            "<tr><td>{}</td><td>{}</td><td><code>{}{more}</code></td></tr>",
            old.mod_revision,
            old.version,
            show_bytes(preview)
        );
        rows += 1;
        rev = old.mod_revision - 1;
    }
    out.push_str("</tbody></table>");
    if rows == HISTORY_ENTRIES && rev >= kv.create_revision {
        let _ = write!(
            out,
            r#"<p><a href="/ui/key?{}&amp;before={}">Older versions →</a></p>"#,
            key_param(&kv.key),
            rev + 1
        );
    }
    if !note.is_empty() {
        let _ = write!(out, r#"<p class="hint">{note}</p>"#);
    }
    out
}

fn bad(s: &Session, why: &str) -> Response {
    html::page_with_status(
        StatusCode::BAD_REQUEST,
        s,
        "Keys",
        Nav::Keys,
        &error_box(why),
        "",
    )
}

/// `GET /ui/key/edit?key=K`: the put form, filled with the current value
/// when it is text.
pub async fn edit(
    State(c): State<Arc<Console>>,
    Extension(s): Extension<Session>,
    Query(q): Query<KeyName>,
) -> Response {
    let key = match q.bytes() {
        Ok(k) => k.unwrap_or_default(),
        Err(e) => return bad(&s, &e),
    };
    let Ok(key_text) = String::from_utf8(key.clone()) else {
        return bad(
            &s,
            "This key is not UTF-8 text; change it with etcdctl instead.",
        );
    };
    let mut current = String::new();
    let mut crlf = false;
    if !key.is_empty() {
        match c
            .srv
            .range(
                &s.ctx,
                RangeRequest {
                    key: Bytes::from(key),
                    ..Default::default()
                },
            )
            .await
        {
            Ok(r) => {
                if let Some(kv) = r.kvs.first()
                    && let Ok(t) = std::str::from_utf8(&kv.value)
                {
                    current = t.to_string();
                    crlf = t.contains("\r\n");
                }
            }
            Err(e) => {
                return html::page_with_status(
                    StatusCode::FORBIDDEN,
                    &s,
                    "Edit key",
                    Nav::Keys,
                    &error_box(&e.to_string()),
                    "",
                );
            }
        }
    }
    let body = put_form(&s, &key_text, &current, crlf);
    html::page(&s, "Edit key", Nav::Keys, &body)
}

/// Browsers send a textarea's line breaks as CRLF whatever the text had;
/// the form says which the value should keep (CRLF only when the value
/// being edited used it), and [`PutForm::value`] restores it.
fn newlines_field(crlf: bool) -> &'static str {
    if crlf {
        r#"<input type="hidden" name="newlines" value="crlf">"#
    } else {
        ""
    }
}

fn put_form(s: &Session, key: &str, value: &str, crlf: bool) -> String {
    format!(
        r#"<form class="card" method="post" action="/ui/key/put">{}{}
<p><label for="key">Key</label><br><input id="key" name="key" value="{}" required size="60"></p>
<p><label for="value">Value</label><br><textarea id="value" name="value" rows="12" cols="60">{}</textarea></p>
<p><button type="submit">Review…</button> <span class="hint">You confirm on the next page.</span></p>
</form>"#,
        csrf_field(s),
        newlines_field(crlf),
        esc(key),
        esc(value)
    )
}

#[derive(Debug, serde::Deserialize)]
pub struct PutForm {
    key: String,
    #[serde(default)]
    value: String,
    confirm: Option<String>,
    /// `crlf` to keep the browser's CRLF line breaks (see `newlines_field`).
    newlines: Option<String>,
}

impl PutForm {
    fn crlf(&self) -> bool {
        self.newlines.as_deref() == Some("crlf")
    }

    /// The value to store: the browser's CRLFs turned back into LFs unless
    /// the form asked to keep them.
    fn value(&self) -> String {
        if self.crlf() {
            self.value.clone()
        } else {
            self.value.replace("\r\n", "\n")
        }
    }
}

/// `POST /ui/key/put`: without `confirm`, the confirmation page; with it,
/// the write, as the session's user.
pub async fn put(
    State(c): State<Arc<Console>>,
    Extension(s): Extension<Session>,
    Form(f): Form<PutForm>,
) -> Response {
    if f.key.is_empty() {
        return bad(&s, "A key is required.");
    }
    let value = f.value();
    if f.confirm.as_deref() != Some("yes") {
        let body = format!(
            r#"<p>Write this value ({} bytes) to <code>{}</code>?</p>
<pre class="value">{}</pre>
<form method="post" action="/ui/key/put">{}{}<input type="hidden" name="key" value="{}"><input type="hidden" name="value" value="{}"><input type="hidden" name="confirm" value="yes">
<button type="submit" autofocus>Put</button> <a href="/ui/key?key={}">Cancel</a></form>"#,
            value.len(),
            esc(&f.key),
            esc(&value),
            csrf_field(&s),
            newlines_field(f.crlf()),
            esc(&f.key),
            esc(&value),
            url_enc(&f.key)
        );
        return html::page(&s, "Confirm put", Nav::Keys, &body);
    }
    let r = c
        .srv
        .put(
            &s.ctx,
            PutRequest {
                key: Bytes::from(f.key.clone().into_bytes()),
                value: Bytes::from(value.into_bytes()),
                ..Default::default()
            },
        )
        .await;
    match r {
        Ok(resp) => {
            let rev = resp.header.map_or(0, |h| h.revision);
            let body = format!(
                r#"<p class="ok" role="status" id="result">Written at revision {rev}.</p><p><a href="/ui/key?key={}">View the key</a></p>"#,
                url_enc(&f.key)
            );
            html::page(&s, "Put done", Nav::Keys, &body)
        }
        Err(e) => {
            let mut body = error_box(&e.to_string());
            body.push_str(&put_form(&s, &f.key, &f.value(), f.crlf()));
            html::page_with_status(refusal_status(&e), &s, "Put refused", Nav::Keys, &body, "")
        }
    }
}

#[derive(Debug, serde::Deserialize)]
pub struct DeleteForm {
    #[serde(flatten)]
    name: KeyName,
    confirm: Option<String>,
}

/// `POST /ui/key/delete`: confirmation first, then the delete.
pub async fn delete(
    State(c): State<Arc<Console>>,
    Extension(s): Extension<Session>,
    Form(f): Form<DeleteForm>,
) -> Response {
    let key = match f.name.bytes() {
        Ok(Some(k)) => k,
        Ok(None) => return bad(&s, "A key is required."),
        Err(e) => return bad(&s, &e),
    };
    if f.confirm.as_deref() != Some("yes") {
        let body = format!(
            r#"<p>Delete <code>{}</code>? This cannot be undone (its history stays until compaction).</p>
<form method="post" action="/ui/key/delete">{}<input type="hidden" name="hex" value="{}"><input type="hidden" name="confirm" value="yes">
<button type="submit" class="danger" autofocus>Delete</button> <a href="/ui/key?{}">Cancel</a></form>"#,
            show_bytes(&key),
            csrf_field(&s),
            hex::encode(&key),
            key_param(&key)
        );
        return html::page(&s, "Confirm delete", Nav::Keys, &body);
    }
    let r = c
        .srv
        .delete_range(
            &s.ctx,
            DeleteRangeRequest {
                key: Bytes::from(key.clone()),
                ..Default::default()
            },
        )
        .await;
    match r {
        Ok(resp) => {
            let rev = resp.header.map_or(0, |h| h.revision);
            let body = format!(
                r#"<p class="ok" role="status" id="result">Deleted {} key(s) at revision {rev}.</p><p><a href="/ui/keys">Back to the keys</a></p>"#,
                resp.deleted
            );
            html::page(&s, "Delete done", Nav::Keys, &body)
        }
        Err(e) => html::page_with_status(
            refusal_status(&e),
            &s,
            "Delete refused",
            Nav::Keys,
            &error_box(&e.to_string()),
            "",
        ),
    }
}

/// The HTTP status for a refused write: 403 for auth and plugin denials,
/// 400 for bad requests, 503 for the cluster's state.
fn refusal_status(e: &Error) -> StatusCode {
    match e {
        Error::Auth(_) | Error::PluginDenied { .. } => StatusCode::FORBIDDEN,
        Error::NoLeader | Error::Timeout | Error::TimeoutDueToLeaderFail | Error::NoSpace => {
            StatusCode::SERVICE_UNAVAILABLE
        }
        _ => StatusCode::BAD_REQUEST,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_dumps_align_and_escape() {
        let d = hex_dump(b"<a>\x00\x01bcdefghijklmnopq");
        let first = d.lines().next().unwrap();
        assert!(
            first.starts_with("00000000  3c 61 3e 00 01 62 63 64  65"),
            "{first}"
        );
        assert!(first.ends_with("&lt;a&gt;..bcdefghijkl"), "{first}");
        assert!(
            d.lines()
                .nth(1)
                .unwrap()
                .starts_with("00000010  6d 6e 6f 70 71")
        );
    }

    #[test]
    fn values_render_by_kind() {
        let j = value_html(br#"{"a":[1,2],"b":"<x>"}"#);
        assert!(
            j.contains("(JSON)") && j.contains("&quot;&lt;x&gt;&quot;"),
            "{j}"
        );
        assert!(j.contains("\n  &quot;a&quot;: [\n"), "{j}");
        let t = value_html(b"plain <b>text</b>");
        assert!(
            t.contains("(text)") && t.contains("plain &lt;b&gt;text&lt;/b&gt;"),
            "{t}"
        );
        let b = value_html(&[0, 159, 146, 150]);
        assert!(
            b.contains("(binary, hex)") && b.contains("00 9f 92 96"),
            "{b}"
        );
        let big = vec![b'x'; MAX_SHOWN_VALUE_BYTES + 10];
        assert!(value_html(&big).contains("Showing the first 65536 of 65546 bytes"));
    }

    #[test]
    fn textarea_line_breaks_are_restored() {
        let form = |newlines: Option<&str>| PutForm {
            key: "k".into(),
            value: "a\r\nb\r\n".into(),
            confirm: None,
            newlines: newlines.map(String::from),
        };
        assert_eq!(form(None).value(), "a\nb\n");
        assert_eq!(form(Some("crlf")).value(), "a\r\nb\r\n");
        assert!(newlines_field(true).contains(r#"value="crlf""#));
        assert_eq!(newlines_field(false), "");
    }

    #[test]
    fn breadcrumbs_link_each_folder() {
        let b = breadcrumbs("/apps/<x>/le");
        assert!(b.contains(r#"href="/ui/keys?prefix=%2F">/</a>"#), "{b}");
        assert!(
            b.contains(r#"href="/ui/keys?prefix=%2Fapps%2F">apps/</a>"#),
            "{b}"
        );
        assert!(b.contains("&lt;x&gt;/</a> › le"), "{b}");
    }
}
