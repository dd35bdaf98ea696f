//! One member at a time: `stop` (SIGTERM, then SIGKILL after a grace
//! period), `kill` (SIGKILL, a crash), `start` (from its existing data and
//! config), `restart`, and membership changes: `add <name>` (etcdctl
//! member add, then start the new member and wait until it is healthy) and
//! `remove <member>` (etcdctl member remove, then stop it and delete its
//! data).

use std::fs;
use std::path::Path;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::Args;

use super::etcdctl::{self, ApiMember, MemberAddReply};
use super::{
    ClusterSpec, DEFAULT_UP_TIMEOUT_SECS, DirArgs, Member, check_ports, conf, config_via_for,
    dir_flag_hint, has_data, kill_members, port_free, resolve_dir, slot, start, stop_members,
    wait_gone, wait_members_healthy,
};

/// `add` and `remove` wait this long by default: the first add after `up`
/// is refused for ~5 s by etcd's strict reconfig check, and a new member
/// needs a few seconds to catch up and publish itself.
const DEFAULT_CHANGE_TIMEOUT_SECS: u64 = 60;
/// A removed member stops itself once it applies its removal; give it that
/// chance before signalling it.
const REMOVED_EXIT_WAIT: Duration = Duration::from_secs(5);
/// How many address/port slots `add` tries before giving up.
const MAX_SLOTS: usize = 256;

#[derive(Args)]
pub struct MemberArgs {
    #[command(flatten)]
    dir: DirArgs,
    /// The member (m1, m2, ...; `status` lists them).
    member: String,
    /// Seconds to wait for the member to become healthy (start, restart).
    #[arg(long, default_value_t = DEFAULT_UP_TIMEOUT_SECS)]
    timeout: u64,
}

#[derive(Args)]
pub struct AddArgs {
    #[command(flatten)]
    dir: DirArgs,
    /// Name of the new member (letters, digits, '-', '_', '.').
    name: String,
    /// Seconds to wait for the cluster to accept the member, and again for
    /// the new member to become healthy.
    #[arg(long, default_value_t = DEFAULT_CHANGE_TIMEOUT_SECS)]
    timeout: u64,
}

#[derive(Args)]
pub struct RemoveArgs {
    #[command(flatten)]
    dir: DirArgs,
    /// The member to remove.
    member: String,
    /// Keep the member's data dir (by default it is deleted: a removed
    /// member can never rejoin with it). Its log and etcd.conf are kept
    /// either way.
    #[arg(long)]
    keep_data: bool,
    /// Seconds to wait for the cluster to accept the removal.
    #[arg(long, default_value_t = DEFAULT_CHANGE_TIMEOUT_SECS)]
    timeout: u64,
}

fn load(dir: &DirArgs, member: &str) -> Result<(ClusterSpec, usize)> {
    let dir = resolve_dir(dir)?;
    let spec = ClusterSpec::load_existing(&dir)?;
    let i = spec.member_index(member)?;
    Ok((spec, i))
}

pub fn stop(args: MemberArgs) -> Result<ExitCode> {
    let (mut spec, i) = load(&args.dir, &args.member)?;
    stop_one(&mut spec, i, false)?;
    println!(
        "{} stopped; its data and config are kept (`cargo xtask cluster start{} {}` \
         starts it again).",
        args.member,
        dir_flag_hint(&spec.dir),
        args.member
    );
    Ok(ExitCode::SUCCESS)
}

pub fn kill_member(args: MemberArgs) -> Result<ExitCode> {
    let (mut spec, i) = load(&args.dir, &args.member)?;
    stop_one(&mut spec, i, true)?;
    println!(
        "{} killed (SIGKILL, like a crash); `cargo xtask cluster start{} {}` restarts it \
         from its data.",
        args.member,
        dir_flag_hint(&spec.dir),
        args.member
    );
    Ok(ExitCode::SUCCESS)
}

/// SIGTERM with a grace period (or SIGKILL), then records the member as
/// stopped.
fn stop_one(spec: &mut ClusterSpec, i: usize, kill: bool) -> Result<()> {
    let m = &spec.members[i];
    if m.alive() {
        let pid = m.pid.unwrap_or(0);
        if kill {
            eprintln!("xtask: killing {} (pid {pid}, SIGKILL)", m.name);
            kill_members(&[m])?;
        } else {
            eprintln!("xtask: stopping {} (pid {pid}, SIGTERM)", m.name);
            stop_members(&[m])?;
        }
    } else {
        eprintln!("xtask: {} is not running", m.name);
    }
    spec.members[i].pid = None;
    spec.save()
}

pub fn start_member(args: MemberArgs) -> Result<ExitCode> {
    let (spec, i) = load(&args.dir, &args.member)?;
    if spec.members[i].alive() {
        println!(
            "{} is already running (pid {}).",
            args.member,
            spec.members[i].pid.unwrap_or(0)
        );
        return Ok(ExitCode::SUCCESS);
    }
    start_one(spec, i, Duration::from_secs(args.timeout))
}

pub fn restart(args: MemberArgs) -> Result<ExitCode> {
    let (mut spec, i) = load(&args.dir, &args.member)?;
    stop_one(&mut spec, i, false)?;
    start_one(spec, i, Duration::from_secs(args.timeout))
}

/// Starts a stopped member from its data and config and waits (bounded)
/// until it is healthy — unless too few members run for it ever to be:
/// then it is left running and we say what it waits for.
fn start_one(mut spec: ClusterSpec, i: usize, timeout: Duration) -> Result<ExitCode> {
    spec.binary = super::binary_for(&spec)?;
    spec.config_via = config_via_for(&spec.binary);
    spec.members[i].pid = None;
    let m = &spec.members[i];
    if has_data(m) {
        eprintln!(
            "xtask: starting {} from its data in {}",
            m.name,
            m.data_dir.display()
        );
    } else {
        eprintln!(
            "xtask: {} has no data yet: it starts as configured in {} \
             (ETCD_INITIAL_CLUSTER_STATE)",
            m.name,
            m.config_path().display()
        );
    }
    let others_up = spec
        .members
        .iter()
        .enumerate()
        .filter(|(j, o)| *j != i && o.alive())
        .count();
    let quorum = spec.members.len() / 2 + 1;
    let name = m.name.clone();

    let mut running = start(spec, &[i], true)?;
    if others_up + 1 < quorum {
        let spec = running.release();
        println!(
            "{name} started (pid {}), but only {} of {} members run: it becomes healthy once \
             {quorum} do (start another, or `cargo xtask cluster up{}`).",
            spec.members[i].pid.unwrap_or(0),
            others_up + 1,
            spec.members.len(),
            dir_flag_hint(&spec.dir)
        );
        return Ok(ExitCode::SUCCESS);
    }
    wait_members_healthy(&mut running, &[i], timeout)
        .with_context(|| format!("{name} did not become healthy; stopped it again"))?;
    let spec = running.release();
    let m = &spec.members[i];
    println!(
        "{} is up (pid {}, {}).",
        m.name,
        m.pid.unwrap_or(0),
        m.client_url()
    );
    Ok(ExitCode::SUCCESS)
}

fn check_name(spec: &ClusterSpec, name: &str) -> Result<()> {
    let ok_char = |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.');
    if name.is_empty() || !name.chars().all(ok_char) || name.starts_with('.') {
        bail!(
            "{name:?} is not a usable member name: use letters, digits, '-', '_' and '.' \
             (it becomes a folder name and part of ETCD_INITIAL_CLUSTER)"
        );
    }
    if spec.members.iter().any(|m| m.name == name) {
        bail!("the cluster already has a member called {name}");
    }
    Ok(())
}

/// The first address/port slot that no member uses and whose ports are
/// free on this machine.
fn free_slot(spec: &ClusterSpec) -> Result<super::Slot> {
    for k in 0..MAX_SLOTS {
        let Some(s @ (host, client, peer)) = slot(spec.layout, spec.base, k) else {
            break;
        };
        let taken = spec.members.iter().any(|m| {
            m.slot() == s
                || (m.host == host
                    && [m.client_port, m.peer_port]
                        .iter()
                        .any(|p| *p == client || *p == peer))
        });
        if taken {
            continue;
        }
        let addr = |port| std::net::SocketAddr::from((host, port));
        if port_free(addr(client)).is_ok() && port_free(addr(peer)).is_ok() {
            return Ok(s);
        }
    }
    bail!(
        "no free address and ports for a new member (tried {MAX_SLOTS} slots from {}:{})",
        spec.base.address,
        spec.base.client_port
    )
}

pub fn add(args: AddArgs) -> Result<ExitCode> {
    let dir = resolve_dir(&args.dir)?;
    let mut spec = ClusterSpec::load_existing(&dir)?;
    check_name(&spec, &args.name)?;
    etcdctl::require("`cluster add`")?;
    let down: Vec<&Member> = spec.members.iter().filter(|m| !m.alive()).collect();
    if !down.is_empty() {
        let (verb, them) = if down.len() == 1 {
            ("is", "it")
        } else {
            ("are", "them")
        };
        bail!(
            "{} {verb} not running: start {them} first (`cargo xtask cluster start{} <member>`) \
             or remove {them}. etcd refuses to add a member while a voting member is \
             unreachable (strict reconfig check)",
            super::names(&down),
            dir_flag_hint(&dir),
        );
    }
    spec.binary = super::binary_for(&spec)?;
    spec.config_via = config_via_for(&spec.binary);

    let timeout = Duration::from_secs(args.timeout);
    let i = register(&mut spec, &args.name, Instant::now() + timeout)?;

    let mut running = start(spec, &[i], true)?;
    if let Err(err) = wait_members_healthy(&mut running, &[i], timeout) {
        let hint = format!(
            "the cluster has {} as a member but it did not become healthy, so it was stopped \
             again; see its log, then `cargo xtask cluster start{d} {}` to retry or \
             `cargo xtask cluster remove{d} {}` to undo the add",
            args.name,
            args.name,
            args.name,
            d = dir_flag_hint(&dir)
        );
        return Err(err.context(hint));
    }
    let spec = running.release();
    let m = &spec.members[i];
    println!(
        "{} added and healthy: pid {}, client {}, peer {}; its config is {}.",
        m.name,
        m.pid.unwrap_or(0),
        m.client_url(),
        m.peer_url(),
        m.config_path().display()
    );
    Ok(ExitCode::SUCCESS)
}

/// Makes `name` a member of the running cluster: a free address, `etcdctl
/// member add` (retried until `deadline` while the cluster refuses for a
/// passing reason), and its config file to join with. Records it in
/// `spec` (saved: the cluster knows the member now, so must `status` and
/// `remove`, whatever happens next) and returns its index. The caller
/// starts it.
pub fn register(spec: &mut ClusterSpec, name: &str, deadline: Instant) -> Result<usize> {
    let log_name = spec
        .members
        .first()
        .and_then(|m| m.log.file_name())
        .map_or_else(|| "cairn.log".into(), |n| n.to_string_lossy().into_owned());
    let new = Member::new(&spec.dir, name, &log_name, free_slot(spec)?);
    if has_data(&new) {
        bail!(
            "{} already holds data (from an earlier member called {name}?): a new member must \
             start empty. Delete it or pick another name",
            new.data_dir.display(),
        );
    }
    check_ports(&[&new])?;
    eprintln!(
        "xtask: adding {} (peer {}, client {}): etcdctl member add",
        new.name,
        new.peer_url(),
        new.client_url()
    );
    let reply = member_add(&spec.endpoints(), &new, deadline)?;
    let initial_cluster = initial_cluster(spec, &new, &reply);
    eprintln!(
        "xtask: {} is member {:x}; it joins with ETCD_INITIAL_CLUSTER_STATE=\"existing\"",
        new.name, reply.member.id
    );
    let text = conf::render(spec, &new, &initial_cluster, conf::State::Existing);
    conf::write(&new.config_path(), &text)?;
    spec.members.push(new);
    spec.save()?;
    Ok(spec.members.len() - 1)
}

/// `etcdctl member add`, retried while the cluster refuses for a passing
/// reason. If an earlier attempt got through without us hearing the answer
/// (a timeout) or an earlier `add` failed to start the member, the peer URL
/// is already registered to a member that never started: that member is
/// this one.
fn member_add(endpoints: &str, new: &Member, deadline: Instant) -> Result<MemberAddReply> {
    match etcdctl::member_add(endpoints, &new.name, &new.peer_url(), deadline) {
        Ok(reply) => Ok(reply),
        Err(err) if format!("{err:#}").contains("Peer URLs already exists") => {
            let members = etcdctl::member_list(endpoints)?;
            let Some(earlier) = members
                .iter()
                .find(|a| a.peer_urls.contains(&new.peer_url()))
                .filter(|a| a.name.is_empty() || a.name == new.name)
                .cloned()
            else {
                return Err(err);
            };
            eprintln!(
                "xtask: {} is already registered as member {:x} (not started yet): using it",
                new.peer_url(),
                earlier.id
            );
            Ok(MemberAddReply {
                member: earlier,
                members,
            })
        }
        Err(err) => Err(err),
    }
}

/// ETCD_INITIAL_CLUSTER for a joining member: every member of the cluster
/// with its peer URLs (etcd checks the list against the cluster's), the new
/// one under its own name. Members that have not published a name yet get
/// the name xtask knows them by.
fn initial_cluster(spec: &ClusterSpec, new: &Member, reply: &MemberAddReply) -> String {
    let mut members: Vec<ApiMember> = reply.members.clone();
    if !members.iter().any(|a| a.id == reply.member.id) {
        members.push(reply.member.clone());
    }
    let mut parts = Vec::new();
    for a in &members {
        let name = if a.id == reply.member.id {
            new.name.clone()
        } else if !a.name.is_empty() {
            a.name.clone()
        } else {
            spec.members
                .iter()
                .find(|m| a.peer_urls.contains(&m.peer_url()))
                .map_or_else(|| format!("{:x}", a.id), |m| m.name.clone())
        };
        for url in &a.peer_urls {
            parts.push(format!("{name}={url}"));
        }
    }
    parts.join(",")
}

pub fn remove(args: RemoveArgs) -> Result<ExitCode> {
    let (mut spec, i) = load(&args.dir, &args.member)?;
    etcdctl::require("`cluster remove`")?;
    let target = spec.members[i].clone();
    // Ask the others: the member being removed stops serving once it
    // applies its own removal.
    let others: Vec<&Member> = spec
        .members
        .iter()
        .enumerate()
        .filter(|(j, m)| *j != i && m.alive())
        .map(|(_, m)| m)
        .collect();
    let endpoints = if others.is_empty() {
        if !target.alive() {
            bail!(
                "no member is running: a removal goes through raft, so start the cluster \
                 first (`cargo xtask cluster up{}`)",
                dir_flag_hint(&spec.dir)
            );
        }
        target.client_addr().to_string()
    } else {
        super::endpoints_of(others.iter().copied())
    };

    let members = etcdctl::member_list(&endpoints)?;
    match members
        .iter()
        .find(|a| a.peer_urls.contains(&target.peer_url()) || a.name == target.name)
    {
        Some(api) => {
            eprintln!(
                "xtask: removing {} (member {:x}): etcdctl member remove",
                target.name, api.id
            );
            etcdctl::member_remove(
                &endpoints,
                api.id,
                Instant::now() + Duration::from_secs(args.timeout),
            )?;
        }
        None => eprintln!(
            "xtask: {} is not in the cluster's member list (removed already?); \
             cleaning up here",
            target.name
        ),
    }

    if target.alive() {
        // It normally exits by itself once it applies its removal.
        let survivors = wait_gone(&[&target], Instant::now() + REMOVED_EXIT_WAIT);
        if !survivors.is_empty() {
            eprintln!("xtask: {} still runs; stopping it", target.name);
            stop_members(&survivors)?;
        }
    }
    let data = if args.keep_data {
        format!(
            "its data dir {} is kept (it cannot rejoin with it)",
            target.data_dir.display()
        )
    } else {
        remove_data(&target.data_dir)?;
        format!(
            "its data dir {} was deleted (a removed member cannot rejoin with it; \
             --keep-data keeps it)",
            target.data_dir.display()
        )
    };
    spec.members.remove(i);
    spec.save()?;
    println!(
        "{} removed from the cluster and stopped; {data}. Its log and etcd.conf stay in {}.",
        target.name,
        target.member_dir().display()
    );
    Ok(ExitCode::SUCCESS)
}

fn remove_data(data_dir: &Path) -> Result<()> {
    match fs::remove_dir_all(data_dir) {
        Ok(()) => Ok(()),
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(err) => Err(err).with_context(|| format!("cannot delete {}", data_dir.display())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::{Layout, Slot};
    use std::net::Ipv4Addr;
    use std::path::PathBuf;

    fn api(id: u64, name: &str, url: &str) -> ApiMember {
        ApiMember {
            id,
            name: name.into(),
            peer_urls: vec![url.into()],
        }
    }

    #[test]
    fn joining_member_lists_everyone() {
        let slots: Vec<Slot> = (1..=3)
            .map(|n| (Ipv4Addr::new(127, 0, 0, n), 2379, 2380))
            .collect();
        let spec = ClusterSpec::new(
            Layout::ThreeAddresses,
            PathBuf::from("/nonexistent"),
            "t",
            Path::new("/tmp/x"),
            "cairn.log",
            &slots,
        );
        let new = Member::new(
            Path::new("/tmp/x"),
            "db4",
            "cairn.log",
            (Ipv4Addr::new(127, 0, 0, 4), 2379, 2380),
        );
        let reply = MemberAddReply {
            member: api(4, "", "http://127.0.0.4:2380"),
            members: vec![
                api(1, "m1", "http://127.0.0.1:2380"),
                // Not started yet: no name in the member list.
                api(2, "", "http://127.0.0.2:2380"),
                api(3, "m3", "http://127.0.0.3:2380"),
                api(4, "", "http://127.0.0.4:2380"),
            ],
        };
        assert_eq!(
            initial_cluster(&spec, &new, &reply),
            "m1=http://127.0.0.1:2380,m2=http://127.0.0.2:2380,m3=http://127.0.0.3:2380,\
             db4=http://127.0.0.4:2380"
        );
    }

    #[test]
    fn member_names() {
        let spec = ClusterSpec::new(
            Layout::OneAddress,
            PathBuf::from("/nonexistent"),
            "t",
            Path::new("/tmp/x"),
            "cairn.log",
            &[(Ipv4Addr::LOCALHOST, 2379, 2380)],
        );
        assert!(check_name(&spec, "m4").is_ok());
        assert!(check_name(&spec, "db-4.x").is_ok());
        assert!(check_name(&spec, "m1").is_err());
        assert!(check_name(&spec, "a=b").is_err());
        assert!(check_name(&spec, "../x").is_err());
        assert!(check_name(&spec, "").is_err());
    }
}
