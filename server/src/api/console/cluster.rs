//! The cluster page: every member with what `etcdctl endpoint status` and
//! `member list` would show, the prober's round-trip time and clock
//! difference (a drift past a second is flagged on the page, not only in
//! the log), the alarms, and the last leader changes this member saw.
//!
//! Other members' figures come from the prober's last answer from each
//! (`transport::prober`, every 2 s over the peer port), so the page costs
//! no extra connections. The page refreshes itself without JavaScript;
//! with it, the same fragment arrives over `/ui/events/cluster` each
//! second it changes.

use super::Console;
use super::html::{self, Nav, esc, size};
use super::session::Session;
use super::sse::{self, Sent};
use crate::api::ETCD_COMPAT_VERSION;
use crate::etcdserver::EtcdServer;
use crate::pb::etcdserverpb::AlarmType;
use axum::Extension;
use axum::extract::State;
use axum::response::Response;
use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

/// How often the live fragment is rebuilt (and sent if it changed).
const LIVE_INTERVAL: Duration = Duration::from_secs(1);
/// Without JavaScript, the page reloads itself this often.
const REFRESH_SECS: u32 = 5;

/// `GET /ui/`.
pub async fn page(State(c): State<Arc<Console>>, Extension(s): Extension<Session>) -> Response {
    let mut body = String::new();
    let _ = write!(
        body,
        r#"<p class="hint" id="live-status" aria-live="polite">Updated every {REFRESH_SECS} s.</p>
<div id="live" data-live="/ui/events/cluster">
{}
</div>"#,
        live_fragment(&c.srv)
    );
    let head =
        format!(r#"<noscript><meta http-equiv="refresh" content="{REFRESH_SECS}"></noscript>"#);
    html::page_with_status(
        axum::http::StatusCode::OK,
        &s,
        "Cluster",
        Nav::Cluster,
        &body,
        &head,
    )
}

/// `GET /ui/events/cluster`: the live fragment whenever it changes.
pub async fn events(State(c): State<Arc<Console>>) -> Response {
    let (resp, Some(stream)) = sse::open(&c) else {
        return sse::refused();
    };
    let srv = Arc::clone(&c.srv);
    tokio::spawn(async move {
        let started = tokio::time::Instant::now();
        let mut last = String::new();
        let mut last_sent = tokio::time::Instant::now();
        let mut tick = tokio::time::interval(LIVE_INTERVAL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        while started.elapsed() < sse::MAX_LIFETIME {
            tokio::select! {
                _ = tick.tick() => {}
                _ = stream.closed() => return,
            }
            let now = live_fragment(&srv);
            let sent = if now != last {
                last_sent = tokio::time::Instant::now();
                stream.send("cluster", None, &now)
            } else if last_sent.elapsed() >= sse::KEEPALIVE {
                last_sent = tokio::time::Instant::now();
                stream.keepalive()
            } else {
                Sent::Queued
            };
            match sent {
                Sent::Queued => last = now,
                // A browser too slow for one event a second: end the
                // stream; it reconnects and gets the state afresh.
                Sent::Full | Sent::Closed => return,
            }
        }
    });
    resp
}

/// One member's row, as far as this member knows it.
struct Row {
    name: String,
    id: u64,
    peer_urls: Vec<String>,
    client_urls: Vec<String>,
    learner: bool,
    /// term, applied index, db size, db size in use, version — when known.
    status: Option<Status>,
    /// `Some` for peers: (rtt, clock difference in ns, drift too high).
    probe: Option<(Duration, i64, bool)>,
    health: Health,
}

struct Status {
    term: u64,
    applied: u64,
    db_size: i64,
    db_in_use: i64,
    version: String,
}

#[derive(PartialEq, Eq)]
enum Health {
    Healthy,
    NoLeader,
    Unreachable,
}

fn rows(srv: &EtcdServer) -> Vec<Row> {
    let alarms_raised = !srv.db().alarms.is_empty();
    srv.membership()
        .api_members()
        .into_iter()
        .map(|m| {
            let (status, probe, health) = if m.id == srv.member_id() {
                let st = &srv.status();
                let health = if !st.has_leader() {
                    Health::NoLeader
                } else {
                    Health::Healthy
                };
                (
                    Some(Status {
                        term: st.term(),
                        applied: st.applied.load(Ordering::Acquire),
                        db_size: srv.db().disk_space() as i64,
                        db_in_use: srv.db().state_machine_space() as i64,
                        version: format!(
                            "{ETCD_COMPAT_VERSION} (cairn {})",
                            env!("CARGO_PKG_VERSION")
                        ),
                    }),
                    None,
                    health,
                )
            } else {
                match srv.transport().probes.get(m.id) {
                    Some(p) if p.is_fresh() => {
                        let health = match &p.status {
                            Some(s) if s.leader == 0 => Health::NoLeader,
                            _ => Health::Healthy,
                        };
                        let status = p.status.as_ref().map(|s| Status {
                            term: s.term,
                            applied: s.applied_index,
                            db_size: s.db_size,
                            db_in_use: s.db_size_in_use,
                            version: format!("{} (cairn {})", s.etcd_version, s.cairn_version),
                        });
                        (
                            status,
                            Some((p.rtt, p.clock_difference_nanos, p.clock_drift_too_high())),
                            health,
                        )
                    }
                    _ => (None, None, Health::Unreachable),
                }
            };
            Row {
                name: m.name,
                id: m.id,
                peer_urls: m.peer_ur_ls,
                client_urls: m.client_ur_ls,
                learner: m.is_learner,
                status,
                probe,
                health: if alarms_raised && health == Health::Healthy {
                    // An alarm makes etcd's /health false on every member.
                    Health::NoLeader
                } else {
                    health
                },
            }
        })
        .collect()
}

/// The part of the page that changes: summary, members, alarms, leader
/// changes. Every string from the membership or a peer is escaped.
pub fn live_fragment(srv: &EtcdServer) -> String {
    let leader = srv.status().leader();
    let rows = rows(srv);
    let mut out = String::new();
    write_summary(&mut out, srv, &rows, leader);
    write_members(&mut out, srv, &rows, leader);
    write_alarms(&mut out, srv);
    write_leader_changes(&mut out, srv, &rows);
    out
}

/// The summary list, then a banner per member whose clock drifts.
fn write_summary(out: &mut String, srv: &EtcdServer, rows: &[Row], leader: u64) {
    let leader_name = rows
        .iter()
        .find(|r| r.id == leader)
        .map(|r| esc(&r.name))
        .unwrap_or_else(|| "none".to_string());
    let _ = write!(
        out,
        r#"<dl class="summary">
<div><dt>Cluster ID</dt><dd>{:x}</dd></div>
<div><dt>Leader</dt><dd id="leader">{leader_name}</dd></div>
<div><dt>Revision</dt><dd>{}</dd></div>
<div><dt>Compacted at</dt><dd>{}</dd></div>
<div><dt>Served by</dt><dd>{}</dd></div>
</dl>
"#,
        srv.cluster_id(),
        srv.store().current_rev(),
        srv.store().compact_rev().max(0),
        esc(srv.name()),
    );
    for r in rows.iter().filter(|r| r.probe.is_some_and(|p| p.2)) {
        let diff_ms = r.probe.map_or(0, |p| p.1 / 1_000_000);
        let _ = write!(
            out,
            r#"<div class="banner warn" role="alert"><strong>Clock drift:</strong> the clock of member {} is {} ms away from this member's (more than 1 s). Leases and token expiry assume the clocks agree; check NTP on both machines.</div>"#,
            esc(&r.name),
            diff_ms
        );
    }
}

/// The members table, one row each.
fn write_members(out: &mut String, srv: &EtcdServer, rows: &[Row], leader: u64) {
    out.push_str(
        r#"<h2>Members</h2>
<div class="scroll"><table id="members">
<thead><tr><th scope="col">Name</th><th scope="col">ID</th><th scope="col">Role</th><th scope="col">Peer URLs</th><th scope="col">Client URLs</th><th scope="col">Term</th><th scope="col">Applied index</th><th scope="col">DB size / in use</th><th scope="col">Version</th><th scope="col">Health</th><th scope="col">RTT</th><th scope="col">Clock difference</th></tr></thead>
<tbody>
"#,
    );
    for r in rows {
        write_member_row(out, r, leader, srv.member_id());
    }
    out.push_str("</tbody></table></div>\n");
}

fn write_member_row(out: &mut String, r: &Row, leader: u64, this_id: u64) {
    let role = if r.id == leader {
        r#"<span class="badge leader">leader</span>"#
    } else if r.learner {
        r#"<span class="badge">learner</span>"#
    } else {
        "voter"
    };
    let this = if r.id == this_id {
        r#" <span class="hint">(this member)</span>"#
    } else {
        ""
    };
    let (term, applied, db, version) = match &r.status {
        Some(s) => (
            s.term.to_string(),
            s.applied.to_string(),
            format!("{} / {}", size(s.db_size), size(s.db_in_use)),
            esc(&s.version),
        ),
        None => ("—".into(), "—".into(), "—".into(), "—".into()),
    };
    let health = match r.health {
        Health::Healthy => r#"<span class="ok">healthy</span>"#,
        Health::NoLeader => r#"<span class="bad">unhealthy</span>"#,
        Health::Unreachable => r#"<span class="bad">unreachable</span>"#,
    };
    let (rtt, clock) = match r.probe {
        Some((rtt, diff, drift)) => (
            format!("{:.1} ms", rtt.as_secs_f64() * 1000.0),
            if drift {
                format!(r#"<span class="bad">⚠ {:+} ms</span>"#, diff / 1_000_000)
            } else {
                format!("{:+} ms", diff / 1_000_000)
            },
        ),
        None if r.id == this_id => ("—".into(), "—".into()),
        None => ("no answer".into(), "—".into()),
    };
    let _ = writeln!(
        out,
        "<tr><th scope=\"row\">{}{this}</th><td><code>{:x}</code></td><td>{role}</td><td>{}</td><td>{}</td><td>{term}</td><td>{applied}</td><td>{db}</td><td>{version}</td><td>{health}</td><td>{rtt}</td><td>{clock}</td></tr>",
        if r.name.is_empty() {
            "<em>(not started)</em>".to_string()
        } else {
            esc(&r.name)
        },
        r.id,
        urls(&r.peer_urls),
        urls(&r.client_urls),
    );
}

fn write_alarms(out: &mut String, srv: &EtcdServer) {
    let alarms = srv.db().alarms.list(AlarmType::None as i32);
    out.push_str("<h2>Alarms</h2>\n");
    if alarms.is_empty() {
        out.push_str(r#"<p id="alarms">No alarms.</p>"#);
        return;
    }
    out.push_str(r#"<ul id="alarms" class="bad">"#);
    for a in &alarms {
        let _ = write!(
            out,
            "<li>{} on member <code>{:x}</code></li>",
            esc(&crate::storage::alarm::type_name(a.alarm)),
            a.member_id
        );
    }
    out.push_str("</ul>");
}

/// Leader changes this member saw, newest first.
fn write_leader_changes(out: &mut String, srv: &EtcdServer, rows: &[Row]) {
    out.push_str("\n<h2>Leader changes</h2>\n");
    let history = srv.status().leader_history.lock().clone();
    if history.is_empty() {
        out.push_str("<p>None seen since this member started.</p>");
        return;
    }
    out.push_str(
        r#"<table id="leader-changes"><thead><tr><th scope="col">When</th><th scope="col">Term</th><th scope="col">New leader</th></tr></thead><tbody>"#,
    );
    for ch in history.iter().rev() {
        let who = if ch.leader == 0 {
            "<em>leader lost</em>".to_string()
        } else {
            rows.iter()
                .find(|r| r.id == ch.leader)
                .map(|r| esc(&r.name))
                .unwrap_or_else(|| format!("<code>{:x}</code>", ch.leader))
        };
        let _ = write!(
            out,
            "<tr><td>{}</td><td>{}</td><td>{who}</td></tr>",
            html::utc(ch.unix_nanos),
            ch.term
        );
    }
    out.push_str("</tbody></table>");
}

fn urls(list: &[String]) -> String {
    list.iter().map(|u| esc(u)).collect::<Vec<_>>().join("<br>")
}
