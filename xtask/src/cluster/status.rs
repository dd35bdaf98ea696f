//! `cargo xtask cluster status`: one table row per member — process, member
//! ID, client and peer URL, the leader as that member sees it, raft term and
//! index, `/health` — then the leader, and members the cluster has that
//! xtask does not run. Exits non-zero unless every member runs and is
//! healthy, so scripts can wait on it.
//!
//! Health comes straight from `GET /health`. Raft term and index are only in
//! the Maintenance Status RPC, so they come from `etcdctl endpoint status`;
//! without etcdctl, the member ID, the leader flag and the commit index come
//! from `/metrics` and the term shows as `-`.

use std::collections::HashMap;
use std::process::ExitCode;
use std::thread;

use anyhow::Result;

use super::etcdctl::{self, ApiMember, EndpointStatus};
use super::{ClusterSpec, DirArgs, Member, dir_flag_hint, endpoints_of, resolve_dir};
use crate::health::{self, Health};

/// What we learnt about one member.
#[derive(Default, Clone)]
struct Raft {
    id: Option<u64>,
    leader: Option<u64>,
    term: Option<u64>,
    index: Option<u64>,
}

pub fn status(args: DirArgs) -> Result<ExitCode> {
    let dir = resolve_dir(&args)?;
    let Some(spec) = ClusterSpec::load(&dir)? else {
        println!(
            "No cluster in {} (start one with `cargo xtask cluster up{}`).",
            dir.display(),
            dir_flag_hint(&dir)
        );
        return Ok(ExitCode::FAILURE);
    };
    let alive: Vec<bool> = spec.members.iter().map(Member::alive).collect();
    let running: Vec<&Member> = spec
        .members
        .iter()
        .zip(&alive)
        .filter(|(_, a)| **a)
        .map(|(m, _)| m)
        .collect();

    // Probe everything at once: a hung member costs its timeout once, not
    // once per member.
    let (healths, raft, members, note) = thread::scope(|s| {
        let healths: Vec<_> = spec
            .members
            .iter()
            .map(|m| {
                let addr = m.client_addr();
                s.spawn(move || health::probe(addr))
            })
            .collect();
        let cluster_view = s.spawn(|| raft_view(&running));
        let healths: Vec<Health> = healths
            .into_iter()
            .map(|h| h.join().unwrap_or(Health::Down("probe panicked".into())))
            .collect();
        let (raft, members, note) = cluster_view
            .join()
            .unwrap_or_else(|_| (Vec::new(), None, Some("status probe panicked".into())));
        (healths, raft, members, note)
    });

    let (names, rows_raft) = member_ids(&spec, &raft, members.as_deref());
    print_table(&member_table(&spec, &rows_raft, &alive, &healths, &names));
    print_leader(&rows_raft, &names, running.is_empty());
    if let Some(list) = &members {
        print_strangers(&spec, list);
    }
    if let Some(note) = note {
        println!("Note: {note}");
    }
    println!(
        "Folder: {} (per member: etcd.conf, data/, log)",
        spec.dir.display()
    );

    let all_good = alive.iter().all(|a| *a)
        && healths
            .iter()
            .all(|h| matches!(h, Health::Healthy | Health::NoHealthEndpoint(_)));
    Ok(if all_good {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// Member IDs to names, and each member's raft details: what each member
/// said about itself, then the cluster's member list (which also knows
/// stopped members).
fn member_ids(
    spec: &ClusterSpec,
    raft: &[(String, Raft)],
    members: Option<&[ApiMember]>,
) -> (HashMap<u64, String>, Vec<Raft>) {
    let mut names: HashMap<u64, String> = HashMap::new();
    let mut rows_raft: Vec<Raft> = vec![Raft::default(); spec.members.len()];
    for (m, r) in spec.members.iter().zip(rows_raft.iter_mut()) {
        if let Some((_, got)) = raft
            .iter()
            .find(|(ep, _)| *ep == m.client_addr().to_string())
        {
            *r = got.clone();
        }
        if r.id.is_none()
            && let Some(api) = members
                .into_iter()
                .flatten()
                .find(|a| a.peer_urls.contains(&m.peer_url()))
        {
            r.id = Some(api.id);
        }
        if let Some(id) = r.id {
            names.insert(id, m.name.clone());
        }
    }
    for a in members.into_iter().flatten() {
        if !a.name.is_empty() {
            names.entry(a.id).or_insert_with(|| a.name.clone());
        }
    }
    (names, rows_raft)
}

/// One row per member: process, ID, URLs, raft view, health.
fn member_table(
    spec: &ClusterSpec,
    rows_raft: &[Raft],
    alive: &[bool],
    healths: &[Health],
    names: &HashMap<u64, String>,
) -> Vec<Vec<String>> {
    let mut table = vec![
        [
            "MEMBER",
            "PROCESS",
            "ID",
            "CLIENT URL",
            "PEER URL",
            "LEADER",
            "TERM",
            "INDEX",
            "HEALTH",
        ]
        .map(String::from)
        .to_vec(),
    ];
    let dash = || "-".to_string();
    for (i, m) in spec.members.iter().enumerate() {
        let r = &rows_raft[i];
        let process = match (m.pid, alive[i]) {
            (Some(pid), true) => format!("pid {pid}"),
            (Some(_), false) => "exited".to_string(),
            (None, _) => "stopped".to_string(),
        };
        let leader = r.leader.filter(|&l| l != 0).map_or_else(dash, |l| {
            names.get(&l).cloned().unwrap_or_else(|| format!("{l:x}"))
        });
        table.push(vec![
            m.name.clone(),
            process,
            r.id.map_or_else(dash, |id| format!("{id:x}")),
            m.client_url(),
            m.peer_url(),
            leader,
            r.term.map_or_else(dash, |t| t.to_string()),
            r.index.map_or_else(dash, |t| t.to_string()),
            healths[i].to_string(),
        ]);
    }
    table
}

/// The leader most members agree on, with the highest term seen.
fn print_leader(rows_raft: &[Raft], names: &HashMap<u64, String>, no_member_running: bool) {
    let leaders: Vec<u64> = rows_raft
        .iter()
        .filter_map(|r| r.leader)
        .filter(|&l| l != 0)
        .collect();
    match leaders.first() {
        Some(first) if leaders.iter().all(|l| l == first) => {
            let term = rows_raft.iter().filter_map(|r| r.term).max();
            println!(
                "Leader: {}{}",
                names
                    .get(first)
                    .cloned()
                    .unwrap_or_else(|| format!("{first:x}")),
                term.map_or_else(String::new, |t| format!(" (term {t})"))
            );
        }
        Some(_) => println!("Leader: members disagree (an election is under way?)"),
        None if no_member_running => println!("Leader: - (no member is running)"),
        None => println!("Leader: none known"),
    }
}

/// Members of the cluster that xtask did not start.
fn print_strangers(spec: &ClusterSpec, list: &[ApiMember]) {
    let strangers: Vec<&ApiMember> = list
        .iter()
        .filter(|a| {
            !spec
                .members
                .iter()
                .any(|m| a.peer_urls.contains(&m.peer_url()))
        })
        .collect();
    for a in strangers {
        println!(
            "Also in the cluster, not run by xtask: {} ({:x}, peer {})",
            if a.name.is_empty() {
                "(not started)"
            } else {
                &a.name
            },
            a.id,
            a.peer_urls.join(",")
        );
    }
}

type View = (Vec<(String, Raft)>, Option<Vec<ApiMember>>, Option<String>);

/// Raft details of the running members (keyed by `host:port`), the
/// cluster's member list, and a note when something could not be asked.
fn raft_view(running: &[&Member]) -> View {
    if running.is_empty() {
        return (Vec::new(), None, None);
    }
    let endpoints = endpoints_of(running.iter().copied());
    if !etcdctl::available() {
        let raft = running
            .iter()
            .map(|m| (m.client_addr().to_string(), from_metrics(m)))
            .collect();
        return (
            raft,
            None,
            Some("no etcdctl on PATH: ID, leader and INDEX (commit index) come from /metrics; TERM needs etcdctl".into()),
        );
    }
    let mut note = None;
    let raft = match etcdctl::endpoint_status(&endpoints) {
        Ok(list) => list
            .into_iter()
            .map(|s| (s.endpoint.clone(), to_raft(&s)))
            .collect(),
        Err(err) => {
            note = Some(format!("{err:#}"));
            Vec::new()
        }
    };
    let members = match etcdctl::member_list(&endpoints) {
        Ok(list) => Some(list),
        Err(err) => {
            note.get_or_insert(format!("{err:#}"));
            None
        }
    };
    (raft, members, note)
}

fn to_raft(s: &EndpointStatus) -> Raft {
    Raft {
        id: Some(s.member_id),
        leader: Some(s.leader),
        term: Some(s.raft_term),
        index: Some(s.raft_index),
    }
}

/// The little `/metrics` says about raft: `etcd_server_id{server_id="…"}`,
/// `etcd_server_is_leader`, `etcd_server_proposals_committed_total`.
fn from_metrics(m: &Member) -> Raft {
    let Ok((200, text)) = health::get(m.client_addr(), "/metrics") else {
        return Raft::default();
    };
    let value = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
            .and_then(|v| v.trim().parse::<f64>().ok())
    };
    let id = text.lines().find_map(|l| {
        let rest = l.strip_prefix("etcd_server_id{server_id=\"")?;
        u64::from_str_radix(rest.split('"').next()?, 16).ok()
    });
    let is_leader = value("etcd_server_is_leader").is_some_and(|v| v == 1.0);
    Raft {
        id,
        leader: if is_leader { id } else { None },
        term: None,
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
        index: value("etcd_server_proposals_committed_total").map(|v| v as u64),
    }
}

fn print_table(rows: &[Vec<String>]) {
    let columns = rows.first().map_or(0, Vec::len);
    let widths: Vec<usize> = (0..columns)
        .map(|c| rows.iter().map(|r| r[c].chars().count()).max().unwrap_or(0))
        .collect();
    for row in rows {
        let mut line = String::new();
        for (c, cell) in row.iter().enumerate() {
            if c + 1 == columns {
                line.push_str(cell);
            } else {
                line.push_str(&format!("{cell:<w$}  ", w = widths[c]));
            }
        }
        println!("{}", line.trim_end());
    }
}
