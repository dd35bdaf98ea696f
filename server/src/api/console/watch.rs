//! The watch page: tail a key or a prefix live, from now or from a past
//! revision, over a server-sent event stream.
//!
//! The stream is an ordinary watcher on the watch hub, opened after the
//! same read checks a gRPC watch passes (auth, then plugins), as the
//! session's user. One SSE event carries one revision's changes (a JSON
//! array), with the revision as its `id`: when the browser falls behind,
//! the stream ends rather than buffer more (see `sse`), and `EventSource`
//! reconnects with `Last-Event-ID`, from which the watch resumes at the
//! next revision — nothing is lost unless it was compacted meanwhile,
//! which the stream then says.

use super::Console;
use super::html::{self, Nav, esc, url_enc};
use super::session::Session;
use super::sse::{self, Sent};
use crate::api::watch::watch_range;
use crate::etcdserver::EtcdServer;
use crate::etcdserver::watch::{HubMsg, HubReceiver, WatchSpec, hub_channel};
use crate::pb::mvccpb::{Event, event::EventType};
use crate::state::prefix_end;
use axum::Extension;
use axum::extract::{Query, State};
use axum::http::HeaderMap;
use axum::response::Response;
use bytes::Bytes;
use std::fmt::Write as _;
use std::sync::Arc;

/// Messages and bytes the hub may queue for one console watcher; past
/// either it treats the watcher as slow and replays it from the store.
const HUB_QUEUE_MESSAGES: usize = 64;
const HUB_QUEUE_BYTES: usize = 1 << 20;
/// The most of each value an event carries to the page.
const EVENT_VALUE_BYTES: usize = 1024;

#[derive(Debug, Default, serde::Deserialize)]
pub struct WatchQuery {
    #[serde(default)]
    key: String,
    /// Any non-empty value: watch every key starting with `key`.
    #[serde(default)]
    prefix: String,
    /// Start from this revision (empty: from now).
    #[serde(default)]
    rev: String,
}

impl WatchQuery {
    fn is_prefix(&self) -> bool {
        !self.prefix.is_empty()
    }

    fn start_rev(&self) -> Result<Option<i64>, String> {
        if self.rev.trim().is_empty() {
            return Ok(None);
        }
        match self.rev.trim().parse::<i64>() {
            Ok(r) if r > 0 => Ok(Some(r)),
            _ => Err(format!(
                "the start revision must be a positive number, not {:?}",
                self.rev
            )),
        }
    }
}

/// `GET /ui/watch`.
pub async fn page(Extension(s): Extension<Session>, Query(q): Query<WatchQuery>) -> Response {
    let mut body = format!(
        r#"<form class="card" method="get" action="/ui/watch">
<p><label for="key">Key or prefix</label><br><input id="key" name="key" value="{}" size="50"></p>
<p><input type="checkbox" id="prefix" name="prefix" value="1"{}> <label for="prefix">Every key with this prefix</label></p>
<p><label for="rev">From revision</label> <input id="rev" name="rev" value="{}" size="10" inputmode="numeric"> <span class="hint">empty: from now</span></p>
<p><button type="submit">Watch</button></p>
</form>
"#,
        esc(&q.key),
        if q.is_prefix() { " checked" } else { "" },
        esc(&q.rev)
    );
    if let Err(e) = q.start_rev() {
        body.push_str(&html::error_box(&e));
    } else if !q.key.is_empty() || q.is_prefix() {
        let src = format!(
            "/ui/events/watch?key={}&prefix={}&rev={}",
            url_enc(&q.key),
            if q.is_prefix() { "1" } else { "" },
            url_enc(q.rev.trim())
        );
        let _ = write!(
            body,
            r#"<p id="watch-status" role="status" aria-live="polite">Connecting…</p>
<noscript><p>The live tail needs JavaScript; without it, use <code>etcdctl watch</code>.</p></noscript>
<ol id="watch-events" class="events" data-src="{}" reversed></ol>"#,
            esc(&src)
        );
    }
    html::page(&s, "Watch", Nav::Watch, &body)
}

/// `GET /ui/events/watch?key=K&prefix=1&rev=N`: one SSE event per
/// revision (`kv`, data a JSON array of events), or `end` with a reason.
pub async fn events(
    State(c): State<Arc<Console>>,
    Extension(s): Extension<Session>,
    headers: HeaderMap,
    Query(q): Query<WatchQuery>,
) -> Response {
    let (resp, Some(stream)) = sse::open(&c) else {
        return sse::refused();
    };
    let srv = Arc::clone(&c.srv);
    let key = Bytes::from(q.key.clone().into_bytes());
    let range_end = if q.is_prefix() {
        if key.is_empty() {
            Bytes::from_static(b"\0")
        } else {
            prefix_end(&key)
        }
    } else {
        Bytes::new()
    };
    let end = |why: &str| {
        let _ = stream.send("end", None, why);
    };
    if key.is_empty() && !q.is_prefix() {
        end("name a key, or ask for a prefix");
        return resp;
    }
    // A reconnecting browser resumes after the last revision it got.
    let resumed = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<i64>().ok())
        .filter(|r| *r > 0)
        .map(|r| r + 1);
    let start = match q.start_rev() {
        Ok(asked) => resumed
            .or(asked)
            .unwrap_or_else(|| srv.store().current_rev() + 1),
        Err(e) => {
            end(&e);
            return resp;
        }
    };
    // The same checks a gRPC watch create passes, as this user.
    let checked = match srv.check_read(&s.ctx, &key, &range_end) {
        Ok(()) => srv.plugin_check_read(&s.ctx, &key, &range_end).await,
        Err(e) => Err(e),
    };
    if let Err(e) = checked {
        end(&format!("refused: {e}"));
        return resp;
    }
    let (hub_tx, hub_rx) = hub_channel(HUB_QUEUE_MESSAGES, HUB_QUEUE_BYTES);
    let spec = WatchSpec {
        range: watch_range(&key, &range_end),
        start_rev: start,
        no_put: false,
        no_delete: false,
        prev_kv: false,
        progress_notify: false,
    };
    let handle = srv.hub().add(spec, 0, hub_tx);
    let _ = stream.send("start", None, &format!("watching from revision {start}"));
    tokio::spawn(forward(srv, handle, stream, hub_rx, start));
    resp
}

/// Sends the watcher's events to the browser, one SSE event per revision,
/// until the stream closes, its lifetime ends or the watch is compacted.
async fn forward(
    srv: Arc<EtcdServer>,
    handle: u64,
    stream: sse::Stream,
    mut hub_rx: HubReceiver,
    start: i64,
) {
    // Removes the watcher however the stream ends.
    struct Unwatch(Arc<EtcdServer>, u64);
    impl Drop for Unwatch {
        fn drop(&mut self) {
            self.0.hub().remove(self.1);
        }
    }
    let _unwatch = Unwatch(Arc::clone(&srv), handle);
    let deadline = tokio::time::Instant::now() + sse::MAX_LIFETIME;
    let mut keepalive = tokio::time::interval(sse::KEEPALIVE);
    keepalive.tick().await;
    loop {
        let msg = tokio::select! {
            m = hub_rx.recv() => m,
            _ = stream.closed() => return,
            _ = tokio::time::sleep_until(deadline) => return,
            _ = keepalive.tick() => {
                if stream.keepalive() != Sent::Queued {
                    return;
                }
                continue;
            }
        };
        let Some((msg, _held)) = msg else {
            return;
        };
        match msg {
            HubMsg::Events { events, .. } => {
                for (rev, group) in by_revision(&events) {
                    if stream.send("kv", Some(rev), &events_json(group)) != Sent::Queued {
                        return;
                    }
                }
            }
            HubMsg::Compacted {
                compact_revision, ..
            } => {
                let _ = stream.send(
                    "end",
                    None,
                    &format!(
                        "revision {start} and later ones up to {compact_revision} were compacted away; watch from a newer revision"
                    ),
                );
                return;
            }
            HubMsg::Progress { .. } => {}
        }
    }
}

/// Events split into runs of one revision each (the hub sends them in
/// revision order).
fn by_revision(events: &[Event]) -> Vec<(i64, &[Event])> {
    let rev = |e: &Event| e.kv.as_ref().map_or(0, |kv| kv.mod_revision);
    events
        .chunk_by(|a, b| rev(a) == rev(b))
        .map(|run| (run.first().map_or(0, rev), run))
        .collect()
}

/// One revision's events for the page: type, key, value (text or `0x`
/// hex, cut to `EVENT_VALUE_BYTES`), revision, version.
fn events_json(events: &[Event]) -> String {
    let text = |b: &[u8]| match std::str::from_utf8(b) {
        Ok(s) => s.to_string(),
        Err(_) => format!("0x{}", hex::encode(b)),
    };
    let list: Vec<serde_json::Value> = events
        .iter()
        .filter_map(|e| {
            let kv = e.kv.as_ref()?;
            let ty = if e.r#type == EventType::Delete as i32 {
                "DELETE"
            } else {
                "PUT"
            };
            let cut = kv.value.len() > EVENT_VALUE_BYTES;
            let shown = kv.value.get(..EVENT_VALUE_BYTES).unwrap_or(&kv.value);
            Some(serde_json::json!({
                "type": ty,
                "key": text(&kv.key),
                "value": text(shown),
                "truncated": cut,
                "mod_revision": kv.mod_revision,
                "version": kv.version,
            }))
        })
        .collect();
    serde_json::Value::Array(list).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pb::mvccpb::KeyValue;

    fn ev(key: &str, rev: i64) -> Event {
        Event {
            r#type: EventType::Put as i32,
            kv: Some(KeyValue {
                key: Bytes::from(key.to_string()),
                value: Bytes::from_static(b"<v>"),
                mod_revision: rev,
                version: 1,
                ..Default::default()
            }),
            prev_kv: None,
        }
    }

    #[test]
    fn events_group_by_revision() {
        let evs = vec![ev("a", 5), ev("b", 5), ev("c", 6)];
        let groups = by_revision(&evs);
        assert_eq!(groups.len(), 2);
        assert_eq!((groups[0].0, groups[0].1.len()), (5, 2));
        assert_eq!((groups[1].0, groups[1].1.len()), (6, 1));
        assert!(by_revision(&[]).is_empty());
    }

    #[test]
    fn event_json_keeps_markup_as_data() {
        let j = events_json(&[ev("<script>", 3)]);
        let v: serde_json::Value = serde_json::from_str(&j).unwrap();
        assert_eq!(v[0]["key"], "<script>");
        assert_eq!(v[0]["value"], "<v>");
        assert_eq!(v[0]["mod_revision"], 3);
        assert_eq!(v[0]["type"], "PUT");
    }
}
