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

pub mod golden;

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

/// A free loopback host: 127.a.b.c chosen at random, with both ports free.
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
        }
    }
}

pub struct Member {
    pub name: String,
    pub host: String,
    pub client_port: u16,
    pub peer_port: u16,
    pub data_dir: PathBuf,
    pub log_path: PathBuf,
    child: Option<Child>,
    args: Vec<String>,
}

impl Member {
    pub fn client_url(&self) -> String {
        format!("http://{}:{}", self.host, self.client_port)
    }
    pub fn endpoint(&self) -> String {
        format!("{}:{}", self.host, self.client_port)
    }
    pub fn peer_url(&self) -> String {
        format!("http://{}:{}", self.host, self.peer_port)
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

    pub fn is_running(&mut self) -> bool {
        match &mut self.child {
            Some(c) => matches!(c.try_wait(), Ok(None)),
            None => false,
        }
    }
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }
}

pub struct Cluster {
    pub members: Vec<Member>,
    pub dir: tempfile::TempDir,
    pub opts: Options,
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
            members.push(Member {
                data_dir: dir.path().join(&name).join("data"),
                log_path: dir.path().join(&name).join("server.log"),
                name,
                host,
                client_port: 2379,
                peer_port: 2380,
                child: None,
                args: Vec::new(),
            });
        }
        let initial_cluster = members
            .iter()
            .map(|m| format!("{}={}", m.name, m.peer_url()))
            .collect::<Vec<_>>()
            .join(",");
        for m in &mut members {
            let mut args = vec![
                format!("--name={}", m.name),
                format!("--data-dir={}", m.data_dir.display()),
                format!("--listen-client-urls={}", m.client_url()),
                format!("--advertise-client-urls={}", m.client_url()),
                format!("--listen-peer-urls={}", m.peer_url()),
                format!("--initial-advertise-peer-urls={}", m.peer_url()),
                format!("--initial-cluster={initial_cluster}"),
                format!("--initial-cluster-token={}", opts.token),
                "--initial-cluster-state=new".into(),
            ];
            match &opts.config_toml {
                // Timing goes in the file, where a reload can change it
                // (flags would shadow the file).
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
            args.extend(opts.extra_args.iter().cloned());
            m.args = args;
        }
        let mut c = Cluster { members, dir, opts };
        for i in 0..c.members.len() {
            c.spawn(i);
        }
        c
    }

    fn spawn(&mut self, i: usize) {
        let m = &mut self.members[i];
        std::fs::create_dir_all(m.log_path.parent().expect("log dir")).expect("log dir");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&m.log_path)
            .expect("log file");
        let child = Command::new(server_bin())
            .args(&m.args)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log fd"))
            .stderr(log)
            .env_remove("CAIRN_LOG")
            .spawn()
            .expect("spawn server");
        m.child = Some(child);
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

    pub fn restart(&mut self, i: usize) {
        assert!(self.members[i].child.is_none(), "member {i} still running");
        self.spawn(i);
    }

    /// Waits until `/health` of every running member says healthy.
    pub fn wait_healthy(&self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        for m in &self.members {
            if m.child.is_none() {
                continue;
            }
            loop {
                if health(&m.client_addr()) == Some(true) {
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

    /// Runs etcdctl (v3 API) against the given endpoints.
    pub fn etcdctl_at(&self, endpoints: &str, args: &[&str]) -> Output {
        etcdctl(endpoints, args, None)
    }

    pub fn etcdctl(&self, args: &[&str]) -> Output {
        etcdctl(&self.endpoints(), args, None)
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

impl Drop for Cluster {
    fn drop(&mut self) {
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
        let mut cmd = Command::new("etcdctl");
        for (k, _) in std::env::vars() {
            if k.starts_with("ETCDCTL_") {
                cmd.env_remove(k);
            }
        }
        cmd.env("ETCDCTL_API", "3")
            .arg(format!("--endpoints={endpoints}"))
            .arg("--dial-timeout=3s")
            .args(args)
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
    let deadline = Instant::now() + timeout;
    loop {
        match child.try_wait() {
            Ok(Some(_)) => return child.wait_with_output().expect("output"),
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(10)),
            _ => {
                let _ = child.kill();
                return child.wait_with_output().expect("output");
            }
        }
    }
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
    let body = text.split("\r\n\r\n").nth(1).unwrap_or("").to_string();
    Ok((status, body))
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
