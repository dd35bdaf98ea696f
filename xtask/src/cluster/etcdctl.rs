//! The real `etcdctl` (3.4) for what only etcd's gRPC API offers: member
//! add/remove/list and each member's raft status. Shelling out keeps xtask
//! free of a gRPC stack (which would need protoc to build, see `protoc.rs`),
//! and etcdctl is the tool an operator would use for the same job.
//!
//! Every call has a deadline; output is parsed from `-w json`.

use std::path::PathBuf;
use std::process::Command;
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use serde::Deserialize;

use crate::util::{Captured, find_on_path, run_captured};

/// Ceiling for one etcdctl run (its own timeouts are shorter).
const RUN_TIMEOUT: Duration = Duration::from_secs(20);

/// Refusals that go away by themselves, so `add`/`remove` retry them until
/// their deadline. "unhealthy cluster" is the strict reconfig check: the
/// leader wants every voting member's peer stream up for 5 s first, which is
/// not yet the case right after `up` or a restart.
const TRANSIENT: &[&str] = &[
    "etcdserver: unhealthy cluster",
    "etcdserver: re-configuration failed due to not enough started members",
    "etcdserver: no leader",
    "etcdserver: leader changed",
];

#[derive(Deserialize, Debug, Clone)]
pub struct ApiMember {
    #[serde(rename = "ID")]
    pub id: u64,
    /// Empty until the member has started and published itself.
    #[serde(default)]
    pub name: String,
    #[serde(rename = "peerURLs", default)]
    pub peer_urls: Vec<String>,
}

#[derive(Deserialize)]
struct MemberListReply {
    #[serde(default)]
    members: Vec<ApiMember>,
}

#[derive(Deserialize)]
pub struct MemberAddReply {
    pub member: ApiMember,
    #[serde(default)]
    pub members: Vec<ApiMember>,
}

/// One line of `etcdctl endpoint status -w json`.
#[derive(Deserialize)]
struct EndpointStatusJson {
    #[serde(rename = "Endpoint")]
    endpoint: String,
    #[serde(rename = "Status")]
    status: StatusJson,
}

#[derive(Deserialize)]
struct StatusJson {
    header: HeaderJson,
    #[serde(default)]
    leader: u64,
    #[serde(rename = "raftIndex", default)]
    raft_index: u64,
    #[serde(rename = "raftTerm", default)]
    raft_term: u64,
}

#[derive(Deserialize)]
struct HeaderJson {
    #[serde(default)]
    member_id: u64,
    #[serde(default)]
    revision: i64,
}

/// What one member says about itself.
#[derive(Debug, Clone)]
pub struct EndpointStatus {
    /// `host:port` as passed in `--endpoints`.
    pub endpoint: String,
    pub member_id: u64,
    pub leader: u64,
    pub raft_term: u64,
    pub raft_index: u64,
    /// The store revision the member has applied.
    pub revision: i64,
}

pub fn available() -> bool {
    find_on_path("etcdctl").is_some()
}

/// etcdctl's path, or an error saying how to get it.
pub fn require(what: &str) -> Result<PathBuf> {
    find_on_path("etcdctl").with_context(|| {
        format!(
            "{what} needs etcdctl 3.4 on PATH: `sudo apt-get install -y etcd-client` \
             (Debian/Ubuntu), or an etcd 3.4 release's etcdctl"
        )
    })
}

/// `etcdctl --endpoints=<endpoints> <args>` with the v3 API and short
/// timeouts, ignoring the user's ETCDCTL_* settings (which could point it
/// at another cluster or switch on TLS).
pub fn run(endpoints: &str, args: &[&str]) -> Result<Captured> {
    let mut cmd = Command::new("etcdctl");
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("ETCDCTL_") {
            cmd.env_remove(key);
        }
    }
    cmd.env("ETCDCTL_API", "3")
        .arg(format!("--endpoints={endpoints}"))
        .args(["--dial-timeout=2s", "--command-timeout=10s"])
        .args(args);
    run_captured(&mut cmd, RUN_TIMEOUT)
        .with_context(|| format!("cannot run etcdctl {}", args.join(" ")))
}

/// `Some(healthy)` from `etcdctl endpoint health`, `None` without etcdctl.
pub fn endpoint_health(endpoints: &str) -> Option<bool> {
    if !available() {
        return None;
    }
    let out = run(endpoints, &["endpoint", "health"]).ok()?;
    Some(out.status.success())
}

/// The first line of etcdctl's complaint, without its log-line noise.
fn error_text(out: &Captured) -> String {
    let text = out
        .stderr
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('{'))
        .collect::<Vec<_>>()
        .join(" ");
    if text.is_empty() {
        format!("etcdctl failed ({})", crate::util::describe(out.status))
    } else {
        text
    }
}

pub fn member_list(endpoints: &str) -> Result<Vec<ApiMember>> {
    let out = run(endpoints, &["member", "list", "-w", "json"])?;
    if !out.status.success() {
        bail!("etcdctl member list: {}", error_text(&out));
    }
    let reply: MemberListReply = serde_json::from_str(out.stdout.trim())
        .context("cannot parse `etcdctl member list -w json`")?;
    Ok(reply.members)
}

/// Each reachable member's own status. etcdctl prints the members that
/// answered and exits non-zero if any did not: the answers still count.
pub fn endpoint_status(endpoints: &str) -> Result<Vec<EndpointStatus>> {
    let out = run(endpoints, &["endpoint", "status", "-w", "json"])?;
    let text = out.stdout.trim();
    if text.is_empty() {
        if out.status.success() {
            return Ok(Vec::new());
        }
        bail!("etcdctl endpoint status: {}", error_text(&out));
    }
    let parsed: Vec<EndpointStatusJson> =
        serde_json::from_str(text).context("cannot parse `etcdctl endpoint status -w json`")?;
    Ok(parsed
        .into_iter()
        .map(|e| EndpointStatus {
            endpoint: e.endpoint,
            member_id: e.status.header.member_id,
            leader: e.status.leader,
            raft_term: e.status.raft_term,
            raft_index: e.status.raft_index,
            revision: e.status.header.revision,
        })
        .collect())
}

/// Runs `args` until it succeeds, fails for good, or `deadline` passes
/// while the cluster keeps refusing with a transient error (then the error
/// says how long we tried).
fn retrying(endpoints: &str, args: &[&str], what: &str, deadline: Instant) -> Result<Captured> {
    let started = Instant::now();
    let mut told = false;
    loop {
        let out = run(endpoints, args)?;
        if out.status.success() {
            return Ok(out);
        }
        let err = error_text(&out);
        let Some(refusal) = TRANSIENT.iter().find(|t| err.contains(*t)) else {
            bail!("{what}: {err}");
        };
        if Instant::now() >= deadline {
            bail!(
                "{what}: still refused after {:.0}s: {err}",
                started.elapsed().as_secs_f64()
            );
        }
        if !told {
            let why = if refusal.contains("unhealthy") {
                " (etcd's strict reconfig check: every voting member's peer connection \
                 must have been up for 5s)"
            } else {
                ""
            };
            eprintln!(
                "xtask: the cluster refused {what}: {refusal}{why}; retrying for up to {:.0}s",
                deadline
                    .saturating_duration_since(Instant::now())
                    .as_secs_f64()
            );
            told = true;
        }
        thread::sleep(Duration::from_millis(500));
    }
}

pub fn member_add(
    endpoints: &str,
    name: &str,
    peer_url: &str,
    deadline: Instant,
) -> Result<MemberAddReply> {
    let peer = format!("--peer-urls={peer_url}");
    let out = retrying(
        endpoints,
        &["member", "add", name, &peer, "-w", "json"],
        "member add",
        deadline,
    )?;
    serde_json::from_str(out.stdout.trim()).context("cannot parse `etcdctl member add -w json`")
}

pub fn member_remove(endpoints: &str, id: u64, deadline: Instant) -> Result<()> {
    let hex = format!("{id:x}");
    retrying(
        endpoints,
        &["member", "remove", &hex],
        "member remove",
        deadline,
    )?;
    Ok(())
}
