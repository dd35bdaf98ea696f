//! Test support for Cairn's cross-process tests (`tests/tests/*.rs`):
//! real `cairn` processes on loopback, real fjall on disk, the real
//! `etcdctl` 3.4, and the `etcd-client` crate.
//!
//! Every cluster gets its own random 127.x.y.z addresses (one per member,
//! like separate hosts) so tests run in parallel without port clashes, and
//! its own temporary directory. Every wait here has a deadline.
//!
//! `CAIRN_TEST_TARGET=etcd` runs the same clusters with the real etcd binary
//! instead (used to record what etcd prints: see `golden`).

pub mod clocks;
pub mod curl;
pub mod dns;
pub mod golden;
pub mod proc_cpu;
pub mod robustness;
pub mod steady;
pub mod tls;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// Which server binary the harness runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    Cairn,
    Etcd,
}

pub fn target() -> Target {
    match std::env::var("CAIRN_TEST_TARGET").as_deref() {
        Ok("etcd") => Target::Etcd,
        _ => Target::Cairn,
    }
}

/// The `cairn` binary next to this test executable (cargo puts test
/// executables in `target/<profile>/deps/`), or `$CAIRN_BIN`.
pub fn cairn_bin() -> PathBuf {
    if let Ok(p) = std::env::var("CAIRN_BIN") {
        return PathBuf::from(p);
    }
    let exe = std::env::current_exe().expect("current exe");
    let mut dir = exe.parent().expect("exe dir").to_path_buf();
    if dir.ends_with("deps") {
        dir.pop();
    }
    let bin = dir.join("cairn");
    assert!(
        bin.exists(),
        "{} does not exist: build it first (cargo build -p cairn), or run the suite with `cargo xtask test`",
        bin.display()
    );
    bin
}

pub fn server_bin() -> PathBuf {
    match target() {
        Target::Cairn => cairn_bin(),
        Target::Etcd => PathBuf::from("/usr/bin/etcd"),
    }
}

/// A free loopback host: 127.a.b.c chosen at random, with these ports free.
pub fn free_host(ports: &[u16]) -> String {
    pick_host(ports)
}

/// A free port on 127.0.0.1 (the kernel's pick; free when this returns).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port on 127.0.0.1")
}

fn pick_host(ports: &[u16]) -> String {
    for _ in 0..1000 {
        // 127.77.x.x is reserved for the fixed addresses of golden tests.
        let a: u8 = rand::random::<u8>().max(1);
        if a == 77 {
            continue;
        }
        let b: u8 = rand::random();
        let c: u8 = rand::random::<u8>().clamp(2, 250);
        let host = format!("127.{a}.{b}.{c}");
        if ports
            .iter()
            .all(|p| TcpListener::bind(format!("{host}:{p}")).is_ok())
        {
            return host;
        }
    }
    panic!("no free loopback address found");
}

#[derive(Debug, Clone)]
pub struct Options {
    pub members: usize,
    pub heartbeat_ms: u64,
    pub election_ms: u64,
    pub snapshot_count: Option<u64>,
    pub extra_args: Vec<String>,
    pub token: String,
    /// Fixed member addresses instead of random ones: golden tests need the
    /// same peer URLs (hence the same member IDs) against etcd and Cairn.
    pub hosts: Option<Vec<String>>,
    /// Give every member a `cairn.toml` with this content (in its folder,
    /// see `Cluster::config_path`), passed with `--config-file`.
    pub config_toml: Option<String>,
    /// Extra environment variables for one member: (index, name, value).
    pub member_env: Vec<(usize, String, String)>,
    /// TLS on the client and/or peer URLs, with certificates from a CA made
    /// for the cluster (`Cluster::pki`) or auto TLS.
    pub tls: Option<tls::TlsOptions>,
    /// Members listen for peers on this port of their host but advertise
    /// port 2380, where something else (the robustness tests' fault proxy)
    /// listens and forwards. Choose hosts with this port free too.
    pub peer_listen_port: Option<u16>,
    /// Data dirs somewhere else than the cluster's temp dir: (index, path),
    /// e.g. on a small tmpfs to fill up.
    pub data_dirs: Vec<(usize, PathBuf)>,
    /// Called by `Cluster::launch` after the members' TLS files are
    /// written and before any process starts, to replace some of them
    /// (`Member::tls_dir`, `Pki::dir`).
    pub prepare: Option<fn(&Cluster)>,
    /// The server this cluster runs (default: `CAIRN_TEST_TARGET`'s).
    /// Changing it on a stopped cluster and restarting the members runs
    /// the other binary on the same data dirs and flags.
    pub target: Option<Target>,
    /// `false`: members get no `--initial-cluster` (they bootstrap with
    /// `--discovery` or `--discovery-srv` from `extra_args`).
    pub static_bootstrap: bool,
    /// (client, peer) ports per member instead of 2379/2380 (with `hosts`,
    /// several members on one address).
    pub ports: Option<Vec<(u16, u16)>>,
    /// Extra flags for one member: (index, flag).
    pub member_args: Vec<(usize, String)>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            members: 3,
            // Generous timing: tests share 2 cores with other clusters.
            heartbeat_ms: 50,
            election_ms: 750,
            snapshot_count: None,
            extra_args: Vec::new(),
            token: "cairn-test".into(),
            hosts: None,
            config_toml: None,
            member_env: Vec::new(),
            tls: None,
            peer_listen_port: None,
            data_dirs: Vec::new(),
            prepare: None,
            target: None,
            static_bootstrap: true,
            ports: None,
            member_args: Vec::new(),
        }
    }
}

pub struct Member {
    pub name: String,
    pub host: String,
    pub client_port: u16,
    /// The advertised peer port (the one peers dial).
    pub peer_port: u16,
    /// The port the member listens on for peers (= `peer_port` unless
    /// `Options::peer_listen_port`).
    pub listen_peer_port: u16,
    pub data_dir: PathBuf,
    pub log_path: PathBuf,
    /// `https` client / peer URLs (see `Options::tls`).
    pub client_https: bool,
    pub peer_https: bool,
    child: Option<Child>,
    args: Vec<String>,
}

impl Member {
    pub fn client_url(&self) -> String {
        let scheme = if self.client_https { "https" } else { "http" };
        format!("{scheme}://{}:{}", self.host, self.client_port)
    }
    pub fn endpoint(&self) -> String {
        format!("{}:{}", self.host, self.client_port)
    }
    pub fn peer_url(&self) -> String {
        let scheme = if self.peer_https { "https" } else { "http" };
        format!("{scheme}://{}:{}", self.host, self.peer_port)
    }
    pub fn listen_peer_url(&self) -> String {
        let scheme = if self.peer_https { "https" } else { "http" };
        format!("{scheme}://{}:{}", self.host, self.listen_peer_port)
    }
    /// The folder of this member's TLS files (`server.crt`, `peer.crt`,
    /// `ca.crt`, ... when the cluster has a `Pki`).
    pub fn tls_dir(&self) -> PathBuf {
        self.data_dir.parent().expect("member dir").join("tls")
    }
    pub fn peer_addr(&self) -> SocketAddr {
        format!("{}:{}", self.host, self.peer_port)
            .parse()
            .expect("peer addr")
    }
    pub fn client_addr(&self) -> SocketAddr {
        self.endpoint().parse().expect("client addr")
    }
    /// The process ID (0 when not running).
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    /// Sends `kill <sig>` (e.g. `-STOP`, `-CONT`) to the running member.
    pub fn signal(&self, sig: &str) {
        let pid = self.pid();
        assert!(pid != 0, "member is not running");
        let status = Command::new("kill")
            .args([sig, &pid.to_string()])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill {sig} {pid} failed");
    }

    pub fn is_running(&mut self) -> bool {
        match &mut self.child {
            Some(c) => matches!(c.try_wait(), Ok(None)),
            None => false,
        }
    }
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// If the process has exited: its exit code (`None` when a signal ended
    /// it), and the member counts as stopped from then on.
    pub fn try_exit_code(&mut self) -> Option<Option<i32>> {
        let status = self.child.as_mut()?.try_wait().ok()??;
        self.child = None;
        Some(status.code())
    }
}

pub struct Cluster {
    pub members: Vec<Member>,
    pub dir: tempfile::TempDir,
    pub opts: Options,
    /// The cluster's CA and etcdctl's client certificate (TLS clusters
    /// without auto TLS).
    pub pki: Option<tls::Pki>,
}

impl Cluster {
    /// Starts a cluster and waits until every member is healthy.
    pub fn start(opts: Options) -> Cluster {
        let c = Cluster::launch(opts);
        c.wait_healthy(Duration::from_secs(30));
        c
    }

    /// Starts the processes without waiting.
    pub fn launch(opts: Options) -> Cluster {
        let dir = tempfile::Builder::new()
            .prefix("cairn-test-")
            .tempdir()
            .expect("tempdir");
        let mut members = Vec::new();
        for i in 0..opts.members {
            let host = match &opts.hosts {
                Some(h) => h[i].clone(),
                None => pick_host(&[2379, 2380]),
            };
            let name = format!("m{}", i + 1);
            let (client_port, peer_port) = opts.ports.as_ref().map_or((2379, 2380), |p| p[i]);
            let data_dir = match opts.data_dirs.iter().find(|(idx, _)| *idx == i) {
                Some((_, d)) => d.clone(),
                None => dir.path().join(&name).join("data"),
            };
            members.push(Member {
                data_dir,
                log_path: dir.path().join(&name).join("server.log"),
                name,
                host,
                client_port,
                peer_port,
                listen_peer_port: opts.peer_listen_port.unwrap_or(peer_port),
                client_https: opts.tls.as_ref().is_some_and(|t| t.client),
                peer_https: opts.tls.as_ref().is_some_and(|t| t.peer),
                child: None,
                args: Vec::new(),
            });
        }
        let pki = match &opts.tls {
            Some(t) if !t.auto => Some(tls::Pki::new(&dir.path().join("pki"))),
            _ => None,
        };
        if let Some(pki) = &pki {
            for m in &members {
                write_member_tls(m, pki);
            }
        }
        let initial_cluster = members
            .iter()
            .map(|m| format!("{}={}", m.name, m.peer_url()))
            .collect::<Vec<_>>()
            .join(",");
        for (i, m) in members.iter_mut().enumerate() {
            m.args = member_args(m, &opts, &initial_cluster, "new");
            m.args.extend(
                opts.member_args
                    .iter()
                    .filter(|(idx, _)| *idx == i)
                    .map(|(_, a)| a.clone()),
            );
        }
        let mut c = Cluster {
            members,
            dir,
            opts,
            pki,
        };
        if let Some(prepare) = c.opts.prepare {
            prepare(&c);
        }
        for i in 0..c.members.len() {
            c.spawn(i);
        }
        c
    }

    fn spawn(&mut self, i: usize) {
        let bin = self.server_bin();
        let m = &mut self.members[i];
        std::fs::create_dir_all(m.log_path.parent().expect("log dir")).expect("log dir");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&m.log_path)
            .expect("log file");
        let mut cmd = Command::new(bin);
        for (_, k, v) in self.opts.member_env.iter().filter(|(idx, _, _)| *idx == i) {
            cmd.env(k, v);
        }
        let child = cmd
            .args(&m.args)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log fd"))
            .stderr(log)
            .env_remove("CAIRN_LOG")
            .spawn()
            .expect("spawn server");
        m.child = Some(child);
    }

    /// The binary this cluster's members run (`Options::target`).
    pub fn server_bin(&self) -> PathBuf {
        match self.opts.target.unwrap_or_else(target) {
            Target::Cairn => cairn_bin(),
            Target::Etcd => PathBuf::from("/usr/bin/etcd"),
        }
    }

    /// Adds a member that is not started yet, on a fresh address (for
    /// `member add`); start it with [`Cluster::join`].
    pub fn new_member(&mut self, name: &str) -> usize {
        let host = pick_host(&[2379, 2380]);
        self.members.push(Member {
            data_dir: self.dir.path().join(name).join("data"),
            log_path: self.dir.path().join(name).join("server.log"),
            name: name.to_string(),
            host,
            client_port: 2379,
            peer_port: 2380,
            listen_peer_port: 2380,
            client_https: self.opts.tls.as_ref().is_some_and(|t| t.client),
            peer_https: self.opts.tls.as_ref().is_some_and(|t| t.peer),
            child: None,
            args: Vec::new(),
        });
        if let (Some(pki), Some(m)) = (&self.pki, self.members.last()) {
            write_member_tls(m, pki);
        }
        self.members.len() - 1
    }

    /// Starts member `i` joining the running cluster
    /// (`--initial-cluster-state existing`) with the `ETCD_INITIAL_CLUSTER`
    /// that `member add` printed.
    pub fn join(&mut self, i: usize, initial_cluster: &str) {
        let args = member_args(&self.members[i], &self.opts, initial_cluster, "existing");
        self.members[i].args = args;
        self.spawn(i);
    }

    /// Starts member `i` (from [`Cluster::new_member`]) as a new member of a
    /// new cluster that learns its peers by discovery (`extra_args`), with
    /// `extra` flags besides the cluster's.
    pub fn launch_member(&mut self, i: usize, extra: &[&str]) {
        let mut args = member_args(&self.members[i], &self.opts, "", "new");
        args.extend(extra.iter().map(|a| a.to_string()));
        self.members[i].args = args;
        self.spawn(i);
    }

    /// Waits for member `i` to exit; its exit code (`None`: a signal).
    /// Panics with the log if it still runs after `timeout`.
    pub fn wait_exit(&mut self, i: usize, timeout: Duration) -> Option<i32> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(code) = self.members[i].try_exit_code() {
                return code;
            }
            assert!(
                Instant::now() < deadline,
                "member {} still runs after {timeout:?}; log:\n{}",
                self.members[i].name,
                tail(&self.members[i].log(), 40)
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Forgets member `i` (after `member remove`): kills it if it still runs.
    pub fn forget(&mut self, i: usize) -> Member {
        self.kill(i);
        self.members.remove(i)
    }

    pub fn endpoints(&self) -> String {
        self.members
            .iter()
            .map(Member::endpoint)
            .collect::<Vec<_>>()
            .join(",")
    }

    pub fn endpoint_list(&self) -> Vec<String> {
        self.members.iter().map(Member::endpoint).collect()
    }

    /// SIGKILL: no chance to flush anything.
    pub fn kill(&mut self, i: usize) {
        if let Some(mut c) = self.members[i].child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM and wait for exit.
    pub fn stop(&mut self, i: usize) {
        if let Some(mut c) = self.members[i].child.take() {
            let _ = Command::new("kill")
                .args(["-TERM", &c.id().to_string()])
                .status();
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = c.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Member `i`'s config file (with `Options::config_toml`).
    pub fn config_path(&self, i: usize) -> PathBuf {
        self.members[i]
            .data_dir
            .parent()
            .expect("member dir")
            .join("cairn.toml")
    }

    /// Sets `key = value` in member `i`'s config file, replacing an earlier
    /// line for the key; a running member reloads on the edit.
    pub fn set_config_line(&self, i: usize, key: &str, value: &str) {
        let path = self.config_path(i);
        let text = std::fs::read_to_string(&path).expect("read config file");
        let mut lines: Vec<String> = text
            .lines()
            .filter(|l| !l.starts_with(&format!("{key} =")))
            .map(String::from)
            .collect();
        lines.push(format!("{key} = {value}"));
        std::fs::write(&path, lines.join("\n") + "\n").expect("write config file");
    }

    pub fn restart(&mut self, i: usize) {
        assert!(self.members[i].child.is_none(), "member {i} still running");
        self.spawn(i);
    }

    /// Starts stopped member `i` again with `extra` arguments after its
    /// usual ones, for this start only (later restarts go without them).
    pub fn restart_with(&mut self, i: usize, extra: &[&str]) {
        let usual = self.members[i].args.clone();
        self.members[i]
            .args
            .extend(extra.iter().map(|a| a.to_string()));
        self.restart(i);
        self.members[i].args = usual;
    }

    /// Waits until `/health` of every running member says healthy.
    pub fn wait_healthy(&self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        for m in &self.members {
            if m.child.is_none() {
                continue;
            }
            loop {
                let healthy = if m.client_https {
                    self.https_health(m)
                } else {
                    health(&m.client_addr())
                };
                if healthy == Some(true) {
                    break;
                }
                if Instant::now() >= deadline {
                    panic!(
                        "member {} not healthy after {:?}; log:\n{}",
                        m.name,
                        timeout,
                        tail(&m.log(), 40)
                    );
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }

    /// `/health` of a member with `https` client URLs, as a client with the
    /// cluster's CA and client certificate (or no verification with auto TLS).
    pub fn https_health(&self, m: &Member) -> Option<bool> {
        if self.pki.is_none() {
            // Auto TLS. curl, because etcd's generated certificates use
            // P-521, which the test's rustls (ring) cannot verify.
            let out = wait_output(
                Command::new("curl")
                    .args(["-sk", "--max-time", "2"])
                    .arg(format!("{}/health", m.client_url()))
                    .stdin(Stdio::null())
                    .stdout(Stdio::piped())
                    .stderr(Stdio::null())
                    .spawn()
                    .ok()?,
                Duration::from_secs(5),
            );
            return Some(stdout(&out).contains("\"true\""));
        }
        let identity = self.pki.as_ref().map(|p| tls::Issued {
            cert: std::fs::read_to_string(p.client_cert()).unwrap_or_default(),
            key: std::fs::read_to_string(p.client_key()).unwrap_or_default(),
        });
        let verify = match &self.pki {
            Some(p) => tls::Verify::Roots(&p.ca.pem),
            None => tls::Verify::Nothing,
        };
        let r = tls::https_get(
            m.client_addr(),
            &m.host,
            "/health",
            verify,
            identity.as_ref(),
        )
        .ok()?;
        Some(r.status == 200 && r.body.contains("\"true\""))
    }

    /// etcdctl's global TLS flags for this cluster: the CA and client
    /// certificate, or `--insecure-skip-tls-verify` with auto TLS.
    pub fn etcdctl_tls_flags(&self) -> Vec<String> {
        match &self.pki {
            Some(p) => vec![
                format!("--cacert={}", p.ca_file().display()),
                format!("--cert={}", p.client_cert().display()),
                format!("--key={}", p.client_key().display()),
            ],
            // etcdctl 3.4 dials without TLS unless told otherwise when it
            // has no certificate files.
            None => vec![
                "--insecure-transport=false".into(),
                "--insecure-skip-tls-verify".into(),
            ],
        }
    }

    /// The members' client URLs (with their scheme), comma-separated.
    pub fn client_urls(&self) -> String {
        self.members
            .iter()
            .map(Member::client_url)
            .collect::<Vec<_>>()
            .join(",")
    }

    /// Runs etcdctl (v3 API) against the given endpoints.
    pub fn etcdctl_at(&self, endpoints: &str, args: &[&str]) -> Output {
        etcdctl(endpoints, args, None)
    }

    pub fn etcdctl(&self, args: &[&str]) -> Output {
        etcdctl(&self.endpoints(), args, None)
    }

    /// Member `i`'s ID in hex, as etcd writes it in member lists and
    /// metric labels (from `endpoint status`).
    pub fn member_id_hex(&self, i: usize) -> String {
        let out = self.etcdctl_at(
            &self.members[i].endpoint(),
            &["endpoint", "status", "-w", "json"],
        );
        assert!(out.status.success(), "endpoint status: {}", stderr(&out));
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("status json");
        format!(
            "{:x}",
            v[0]["Status"]["header"]["member_id"]
                .as_u64()
                .expect("member_id")
        )
    }

    /// The index of the current leader, asked of every running member.
    pub fn leader(&self) -> Option<usize> {
        for m in &self.members {
            if m.child.is_none() {
                continue;
            }
            let out = etcdctl(&m.endpoint(), &["endpoint", "status", "-w", "json"], None);
            if !out.status.success() {
                continue;
            }
            let v: serde_json::Value = match serde_json::from_slice(&out.stdout) {
                Ok(v) => v,
                Err(_) => continue,
            };
            let leader = v[0]["Status"]["leader"].as_u64().unwrap_or(0);
            if leader == 0 {
                continue;
            }
            for (i, other) in self.members.iter().enumerate() {
                if other.child.is_none() {
                    continue;
                }
                let o = etcdctl(
                    &other.endpoint(),
                    &["endpoint", "status", "-w", "json"],
                    None,
                );
                if let Ok(ov) = serde_json::from_slice::<serde_json::Value>(&o.stdout)
                    && ov[0]["Status"]["header"]["member_id"].as_u64() == Some(leader)
                {
                    return Some(i);
                }
            }
        }
        None
    }

    /// Waits for a leader among the running members.
    pub fn wait_leader(&self, timeout: Duration) -> usize {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(l) = self.leader() {
                return l;
            }
            assert!(
                Instant::now() < deadline,
                "no leader after {timeout:?}:\n{}",
                self.logs_tail(20)
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    pub fn logs_tail(&self, lines: usize) -> String {
        self.members
            .iter()
            .map(|m| format!("--- {} ---\n{}", m.name, tail(&m.log(), lines)))
            .collect::<Vec<_>>()
            .join("\n")
    }
}

/// The flags every test member gets.
fn member_args(m: &Member, opts: &Options, initial_cluster: &str, state: &str) -> Vec<String> {
    let mut args = vec![
        format!("--name={}", m.name),
        format!("--data-dir={}", m.data_dir.display()),
        format!("--listen-client-urls={}", m.client_url()),
        format!("--advertise-client-urls={}", m.client_url()),
        format!("--listen-peer-urls={}", m.listen_peer_url()),
        format!("--initial-advertise-peer-urls={}", m.peer_url()),
        format!("--initial-cluster-token={}", opts.token),
        format!("--initial-cluster-state={state}"),
    ];
    if opts.static_bootstrap {
        args.push(format!("--initial-cluster={initial_cluster}"));
    }
    match &opts.config_toml {
        // Timing goes in the file, where a reload can change it (flags
        // would shadow the file).
        Some(toml) => {
            let path = m.data_dir.parent().expect("member dir").join("cairn.toml");
            std::fs::create_dir_all(path.parent().expect("dir")).expect("member dir");
            let text = format!(
                "heartbeat-interval = {}\nelection-timeout = {}\n{toml}",
                opts.heartbeat_ms, opts.election_ms
            );
            std::fs::write(&path, text).expect("write config");
            args.push(format!("--config-file={}", path.display()));
        }
        None => {
            // Never read the host's /etc/etcd/etcd.conf or /etc/cairn/cairn.toml.
            args.push("--config-file=".into());
            args.push(format!("--heartbeat-interval={}", opts.heartbeat_ms));
            args.push(format!("--election-timeout={}", opts.election_ms));
        }
    }
    if let Some(n) = opts.snapshot_count {
        args.push(format!("--snapshot-count={n}"));
    }
    if let Some(t) = &opts.tls {
        args.extend(tls_args(m, t));
    }
    if opts.target.unwrap_or_else(target) == Target::Etcd {
        // etcd 3.4 serves the v2 API only when asked; Cairn by default.
        args.push("--enable-v2=true".into());
    }
    args.extend(opts.extra_args.iter().cloned());
    args
}

/// A member's certificates from the cluster CA, in `Member::tls_dir`:
/// `server.crt`/`.key` for clients, `peer.crt`/`.key` for peers (valid for
/// the member's address and 127.0.0.1, where connections between members
/// come from), the CA bundles `ca.crt` and `peer-ca.crt` (separate
/// files, so a test can rotate one), and an empty revocation list
/// `revoked.crl` (used with `TlsOptions::crl`).
fn write_member_tls(m: &Member, pki: &tls::Pki) {
    let dir = m.tls_dir();
    let sans = [m.host.as_str(), "127.0.0.1", "localhost"];
    pki.ca.issue(&m.name, &sans).write(&dir, "server");
    pki.ca.issue(&m.name, &sans).write(&dir, "peer");
    std::fs::write(dir.join("ca.crt"), &pki.ca.pem).expect("ca.crt");
    std::fs::write(dir.join("peer-ca.crt"), &pki.ca.pem).expect("peer-ca.crt");
    std::fs::write(dir.join("revoked.crl"), pki.ca.crl(&[])).expect("revoked.crl");
}

/// The TLS flags of one member.
fn tls_args(m: &Member, t: &tls::TlsOptions) -> Vec<String> {
    let dir = m.tls_dir();
    let file = |name: &str| dir.join(name).display().to_string();
    let mut args = Vec::new();
    if t.client {
        if t.auto {
            args.push("--auto-tls".into());
        } else {
            args.push(format!("--cert-file={}", file("server.crt")));
            args.push(format!("--key-file={}", file("server.key")));
            if t.client_cert_auth {
                args.push("--client-cert-auth".into());
                args.push(format!("--trusted-ca-file={}", file("ca.crt")));
                if t.crl {
                    args.push(format!("--client-crl-file={}", file("revoked.crl")));
                }
            }
        }
    }
    if t.peer {
        if t.auto {
            args.push("--peer-auto-tls".into());
        } else {
            args.push(format!("--peer-cert-file={}", file("peer.crt")));
            args.push(format!("--peer-key-file={}", file("peer.key")));
            args.push(format!("--peer-trusted-ca-file={}", file("peer-ca.crt")));
            if t.peer_cert_auth {
                args.push("--peer-client-cert-auth".into());
            }
            if t.crl {
                args.push(format!("--peer-crl-file={}", file("revoked.crl")));
            }
        }
    }
    args
}

impl Drop for Cluster {
    fn drop(&mut self) {
        // A failing test shows what the members said: CI keeps no temp dirs.
        if std::thread::panicking() {
            eprintln!(
                "--- member logs (last 60 lines each) ---\n{}",
                self.logs_tail(60)
            );
        }
        for i in 0..self.members.len() {
            self.kill(i);
        }
    }
}

pub fn tail(s: &str, lines: usize) -> String {
    let v: Vec<&str> = s.lines().collect();
    v[v.len().saturating_sub(lines)..].join("\n")
}

/// Runs the real etcdctl with the v3 API (or the given API version) and a
/// command timeout, never inheriting ETCDCTL_* from the environment.
pub fn etcdctl(endpoints: &str, args: &[&str], api: Option<&str>) -> Output {
    etcdctl_stdin(endpoints, args, api, None)
}

pub fn etcdctl_stdin(
    endpoints: &str,
    args: &[&str],
    api: Option<&str>,
    stdin: Option<&str>,
) -> Output {
    let mut cmd = Command::new("etcdctl");
    for (k, _) in std::env::vars() {
        if k.starts_with("ETCDCTL_") {
            cmd.env_remove(k);
        }
    }
    cmd.env("ETCDCTL_API", api.unwrap_or("3"));
    if api.unwrap_or("3") == "3" {
        cmd.arg(format!("--endpoints={endpoints}"))
            .arg("--command-timeout=10s")
            .arg("--dial-timeout=3s");
    } else {
        let eps: Vec<String> = endpoints
            .split(',')
            .map(|e| format!("http://{e}"))
            .collect();
        cmd.arg(format!("--endpoints={}", eps.join(",")));
    }
    cmd.args(args);
    cmd.stdin(if stdin.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    });
    cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = cmd
        .spawn()
        .expect("etcdctl must be installed (apt-get install etcd-client)");
    if let (Some(input), Some(mut w)) = (stdin, child.stdin.take()) {
        w.write_all(input.as_bytes()).expect("etcdctl stdin");
    }
    wait_output(child, Duration::from_secs(30))
}

/// A command running in the background (etcdctl watch, lock, elect...)
/// whose output is collected as it comes.
pub struct Background {
    child: Child,
    stdin: Option<std::process::ChildStdin>,
    out: std::sync::Arc<std::sync::Mutex<String>>,
    err: std::sync::Arc<std::sync::Mutex<String>>,
    readers: Vec<std::thread::JoinHandle<()>>,
}

fn collect(
    mut r: impl Read + Send + 'static,
    into: std::sync::Arc<std::sync::Mutex<String>>,
) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        while let Ok(n) = r.read(&mut buf) {
            if n == 0 {
                break;
            }
            into.lock()
                .expect("output lock")
                .push_str(&String::from_utf8_lossy(&buf[..n]));
        }
    })
}

impl Background {
    /// Starts etcdctl (v3 API) against `endpoints`, stdin kept open.
    pub fn etcdctl(endpoints: &str, args: &[&str]) -> Background {
        Background::etcdctl_api(endpoints, args, "3")
    }

    /// Starts etcdctl with the v2 API (`host:port` endpoints get `http://`).
    pub fn etcdctl_v2(endpoints: &str, args: &[&str]) -> Background {
        Background::etcdctl_api(endpoints, args, "2")
    }

    fn etcdctl_api(endpoints: &str, args: &[&str], api: &str) -> Background {
        let mut cmd = Command::new("etcdctl");
        for (k, _) in std::env::vars() {
            if k.starts_with("ETCDCTL_") {
                cmd.env_remove(k);
            }
        }
        cmd.env("ETCDCTL_API", api);
        if api == "3" {
            cmd.arg(format!("--endpoints={endpoints}"))
                .arg("--dial-timeout=3s");
        } else {
            let eps: Vec<String> = endpoints
                .split(',')
                .map(|e| format!("http://{e}"))
                .collect();
            cmd.arg(format!("--endpoints={}", eps.join(",")));
        }
        cmd.args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("etcdctl must be installed");
        let out = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
        let err = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
        let readers = vec![
            collect(
                child.stdout.take().expect("stdout"),
                std::sync::Arc::clone(&out),
            ),
            collect(
                child.stderr.take().expect("stderr"),
                std::sync::Arc::clone(&err),
            ),
        ];
        Background {
            stdin: child.stdin.take(),
            child,
            out,
            err,
            readers,
        }
    }

    pub fn write_stdin(&mut self, text: &str) {
        if let Some(w) = &mut self.stdin {
            let _ = w.write_all(text.as_bytes());
            let _ = w.flush();
        }
    }

    pub fn close_stdin(&mut self) {
        self.stdin = None;
    }

    pub fn stdout(&self) -> String {
        self.out.lock().expect("output lock").clone()
    }

    pub fn stderr(&self) -> String {
        self.err.lock().expect("output lock").clone()
    }

    /// Waits until stdout satisfies `pred`; false on timeout.
    pub fn wait_for(&self, timeout: Duration, pred: impl Fn(&str) -> bool) -> bool {
        eventually(timeout, || pred(&self.stdout()).then_some(())).is_some()
    }

    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Waits for the process to exit by itself (killing it at the deadline);
    /// returns (stdout, stderr, exit code).
    pub fn finish(mut self, timeout: Duration) -> (String, String, Option<i32>) {
        self.stdin = None;
        let deadline = Instant::now() + timeout;
        let code = loop {
            match self.child.try_wait() {
                Ok(Some(st)) => break st.code(),
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(20))
                }
                _ => {
                    let _ = self.child.kill();
                    break self.child.wait().ok().and_then(|s| s.code());
                }
            }
        };
        for r in self.readers.drain(..) {
            let _ = r.join();
        }
        (self.stdout(), self.stderr(), code)
    }

    /// SIGKILL (a client that dies without cleaning up).
    pub fn kill(mut self) -> (String, String) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        for r in self.readers.drain(..) {
            let _ = r.join();
        }
        (self.stdout(), self.stderr())
    }

    /// SIGTERM (Ctrl-C-like: etcdctl cleans up).
    pub fn interrupt(self, timeout: Duration) -> (String, String, Option<i32>) {
        let _ = Command::new("kill")
            .args(["-INT", &self.child.id().to_string()])
            .status();
        self.finish(timeout)
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Waits for a child with a deadline; kills it past the deadline.
pub fn wait_output(mut child: Child, timeout: Duration) -> Output {
    // Drain the pipes while waiting: a child writing more than a pipe
    // buffer (64 KiB) would otherwise block until the timeout.
    let mut readers = Vec::new();
    if let Some(o) = child.stdout.take() {
        readers.push(collect_bytes(o));
    }
    if let Some(e) = child.stderr.take() {
        readers.push(collect_bytes(e));
    }
    let deadline = Instant::now() + timeout;
    let status = loop {
        match child.try_wait() {
            Ok(Some(s)) => break s,
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(10)),
            _ => {
                let _ = child.kill();
                break child.wait().expect("wait");
            }
        }
    };
    let mut bufs = readers.into_iter().map(|r| r.join().unwrap_or_default());
    Output {
        status,
        stdout: bufs.next().unwrap_or_default(),
        stderr: bufs.next().unwrap_or_default(),
    }
}

fn collect_bytes(mut r: impl Read + Send + 'static) -> std::thread::JoinHandle<Vec<u8>> {
    std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = r.read_to_end(&mut v);
        v
    })
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Asserts success and returns stdout.
#[track_caller]
pub fn ok(o: Output) -> String {
    assert!(
        o.status.success(),
        "command failed ({:?}):\nstdout: {}\nstderr: {}",
        o.status,
        stdout(&o),
        stderr(&o)
    );
    stdout(&o)
}

/// GET /health over plain HTTP/1.1: Some(healthy) or None if unreachable.
pub fn health(addr: &SocketAddr) -> Option<bool> {
    let (status, body) = http_get(addr, "/health").ok()?;
    Some(status == 200 && body.contains("\"true\""))
}

/// A minimal HTTP/1.1 GET with timeouts: (status, body).
pub fn http_get(addr: &SocketAddr, path: &str) -> std::io::Result<(u16, String)> {
    let mut s = TcpStream::connect_timeout(addr, Duration::from_millis(500))?;
    s.set_read_timeout(Some(Duration::from_secs(3)))?;
    s.set_write_timeout(Some(Duration::from_secs(3)))?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )?;
    // Read until the body is complete (Content-Length) or the peer closes:
    // some servers keep the connection open despite `Connection: close`.
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        if let Some(end) = find(&buf, b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
            let len = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse::<usize>().ok());
            if let Some(len) = len
                && buf.len() >= end + 4 + len
            {
                break;
            }
            if head.contains("transfer-encoding: chunked") && buf.ends_with(b"\r\n0\r\n\r\n") {
                break;
            }
        }
        match s.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e) if !buf.is_empty() && e.kind() == std::io::ErrorKind::WouldBlock => break,
            Err(e) => return Err(e),
        }
    }
    let text = String::from_utf8_lossy(&buf).into_owned();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let body = if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        dechunk(body)
    } else {
        body.to_string()
    };
    Ok((status, body))
}

/// Decodes an HTTP/1.1 chunked body (etcd sends /metrics that way).
fn dechunk(mut rest: &str) -> String {
    let mut out = String::new();
    while let Some((size, tail)) = rest.split_once("\r\n") {
        let size = size.split(';').next().unwrap_or_default().trim();
        let Ok(n) = usize::from_str_radix(size, 16) else {
            break;
        };
        if n == 0 || tail.len() < n {
            break;
        }
        out.push_str(&tail[..n]);
        rest = tail[n..].strip_prefix("\r\n").unwrap_or(&tail[n..]);
    }
    out
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// Sends raw bytes and returns whatever comes back before the peer closes
/// or the timeout passes.
pub fn raw_exchange(addr: &SocketAddr, bytes: &[u8]) -> Vec<u8> {
    let mut s = TcpStream::connect_timeout(addr, Duration::from_secs(1)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(2)))
        .expect("timeout");
    let _ = s.write_all(bytes);
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        match s.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(_) => break,
        }
        if buf.len() > 1 << 20 {
            break;
        }
    }
    buf
}

/// A tokio runtime for tests that use the `etcd-client` crate.
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
}

/// Connects the etcd-client crate to the given endpoints.
pub async fn client(endpoints: &[String]) -> etcd_client::Client {
    let opts = etcd_client::ConnectOptions::new()
        .with_connect_timeout(Duration::from_secs(3))
        .with_timeout(Duration::from_secs(10));
    etcd_client::Client::connect(endpoints, Some(opts))
        .await
        .expect("connect etcd client")
}

/// Retries `f` until it returns Some or the deadline passes.
pub fn eventually<T>(timeout: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

pub fn path_str(p: &Path) -> String {
    p.display().to_string()
}
