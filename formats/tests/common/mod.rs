//! Runs the real etcd 3.4 and etcdctl for the format tests: a member on
//! loopback with free ports in a temp dir, etcdctl against it, and a small
//! HTTP client for etcd's JSON gateway (one process per write would make
//! thousands of writes take minutes).

#![allow(dead_code)]

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use serde_json::{Value, json};
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

pub const ETCD: &str = "/usr/bin/etcd";
pub const ETCDCTL: &str = "/usr/bin/etcdctl";
/// How long etcd gets to become healthy or to exit.
const START_DEADLINE: Duration = Duration::from_secs(60);
const STOP_DEADLINE: Duration = Duration::from_secs(30);
/// Per HTTP request to the gateway.
const HTTP_TIMEOUT: Duration = Duration::from_secs(30);

/// Fails (never skips) when etcd is missing: these tests are the proof
/// that Cairn's files are etcd's files.
pub fn require_etcd() {
    for bin in [ETCD, ETCDCTL] {
        assert!(
            Path::new(bin).exists(),
            "{bin} not found: these tests run the real etcd 3.4; install Debian's \
             etcd-server and etcd-client packages (apt-get install etcd-server etcd-client)"
        );
    }
}

/// A client and a peer port, free when chosen.
#[derive(Debug, Clone, Copy)]
pub struct Ports {
    pub client: u16,
    pub peer: u16,
}

impl Ports {
    pub fn free() -> Ports {
        let a = TcpListener::bind("127.0.0.1:0").unwrap();
        let b = TcpListener::bind("127.0.0.1:0").unwrap();
        Ports {
            client: a.local_addr().unwrap().port(),
            peer: b.local_addr().unwrap().port(),
        }
    }

    pub fn peer_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.peer)
    }

    pub fn client_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.client)
    }

    /// `--initial-cluster` for a one-member cluster named `default`.
    pub fn initial_cluster(&self) -> String {
        format!("default={}", self.peer_url())
    }
}

/// A running etcd member; killed on drop.
pub struct Etcd {
    child: Option<Child>,
    pub data_dir: PathBuf,
    pub ports: Ports,
    log: PathBuf,
    /// `--user` for etcdctl once auth is on.
    pub user: Option<String>,
}

impl Etcd {
    /// Starts etcd on `data_dir` (new or restored) and waits until healthy.
    pub fn start(data_dir: &Path, ports: Ports, extra: &[&str]) -> Etcd {
        require_etcd();
        let log = data_dir.with_extension("log");
        let log_file = std::fs::File::create(&log).unwrap();
        let child = Command::new(ETCD)
            .args(["--name", "default", "--data-dir"])
            .arg(data_dir)
            .args(["--listen-client-urls", &ports.client_url()])
            .args(["--advertise-client-urls", &ports.client_url()])
            .args(["--listen-peer-urls", &ports.peer_url()])
            .args(["--initial-advertise-peer-urls", &ports.peer_url()])
            .args(["--initial-cluster", &ports.initial_cluster()])
            .args(extra)
            .stdin(Stdio::null())
            .stdout(log_file.try_clone().unwrap())
            .stderr(log_file)
            .spawn()
            .unwrap();
        let mut e = Etcd {
            child: Some(child),
            data_dir: data_dir.to_path_buf(),
            ports,
            log,
            user: None,
        };
        let deadline = Instant::now() + START_DEADLINE;
        loop {
            if let Some(status) = e.child.as_mut().unwrap().try_wait().unwrap() {
                panic!(
                    "etcd exited with {status} while starting:\n{}",
                    e.log_tail()
                );
            }
            // /health, not `etcdctl endpoint health`: the latter needs
            // credentials once a restored db has auth on.
            if e.http_get("/health")
                .is_some_and(|b| b.contains(r#""health":"true""#))
            {
                return e;
            }
            assert!(
                Instant::now() < deadline,
                "etcd not healthy after {START_DEADLINE:?}:\n{}",
                e.log_tail()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    pub fn log_tail(&self) -> String {
        let s = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = s.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().unwrap().id()
    }

    /// etcdctl against this member.
    pub fn ctl_output(&self, args: &[&str]) -> Output {
        let mut c = Command::new(ETCDCTL);
        c.args(["--endpoints", &self.ports.client_url()]);
        if let Some(u) = &self.user {
            c.args(["--user", u]);
        }
        c.args(args).stdin(Stdio::null()).output().unwrap()
    }

    /// etcdctl's stdout; panics with its stderr on failure.
    pub fn ctl(&self, args: &[&str]) -> String {
        let out = self.ctl_output(args);
        assert!(
            out.status.success(),
            "etcdctl {args:?} failed: {}\n{}",
            String::from_utf8_lossy(&out.stderr),
            String::from_utf8_lossy(&out.stdout)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    pub fn ctl_json(&self, args: &[&str]) -> Value {
        let mut a = args.to_vec();
        a.extend(["-w", "json"]);
        serde_json::from_str(&self.ctl(&a)).unwrap()
    }

    /// The body of a GET, or `None` if the member does not answer (yet).
    pub fn http_get(&self, path: &str) -> Option<String> {
        let mut s = TcpStream::connect(("127.0.0.1", self.ports.client)).ok()?;
        s.set_read_timeout(Some(HTTP_TIMEOUT)).ok()?;
        write!(
            s,
            "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
        )
        .ok()?;
        let mut resp = String::new();
        s.read_to_string(&mut resp).ok()?;
        resp.split_once("\r\n\r\n").map(|(_, b)| b.to_string())
    }

    /// A POST to the JSON gateway (`/v3/...`); returns the response body.
    pub fn gateway(&self, path: &str, body: &Value) -> Value {
        let body = body.to_string();
        let mut s = TcpStream::connect(("127.0.0.1", self.ports.client)).unwrap();
        s.set_read_timeout(Some(HTTP_TIMEOUT)).unwrap();
        write!(
            s,
            "POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n\
             Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )
        .unwrap();
        let mut resp = Vec::new();
        s.read_to_end(&mut resp).unwrap();
        let split = resp
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .expect("no end of HTTP headers");
        let head = String::from_utf8_lossy(&resp[..split]).to_lowercase();
        let mut payload = resp[split + 4..].to_vec();
        if head.contains("transfer-encoding: chunked") {
            payload = dechunk(&payload);
        }
        assert!(
            head.starts_with("http/1.1 200"),
            "{path}: {head}\n{}",
            String::from_utf8_lossy(&payload)
        );
        serde_json::from_slice(&payload).unwrap()
    }

    /// Put via the gateway; returns the revision.
    pub fn put(&self, key: &str, value: &[u8], lease: i64) -> i64 {
        let mut req = json!({"key": b64(key.as_bytes()), "value": B64.encode(value)});
        if lease != 0 {
            req["lease"] = json!(lease.to_string());
        }
        header_rev(&self.gateway("/v3/kv/put", &req))
    }

    /// Deletes `[key, range_end)` (or `key` alone); returns the revision.
    pub fn delete(&self, key: &str, range_end: Option<&str>) -> i64 {
        let mut req = json!({"key": b64(key.as_bytes())});
        if let Some(end) = range_end {
            req["range_end"] = json!(b64(end.as_bytes()));
        }
        header_rev(&self.gateway("/v3/kv/deleterange", &req))
    }

    /// Grants a lease; returns its ID.
    pub fn lease_grant(&self, ttl_s: i64) -> i64 {
        let r = self.gateway("/v3/lease/grant", &json!({"TTL": ttl_s.to_string()}));
        r["ID"].as_str().unwrap().parse().unwrap()
    }

    /// Stops etcd with SIGTERM (a clean shutdown) and waits for it.
    pub fn stop(mut self) {
        let mut child = self.child.take().unwrap();
        let st = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .unwrap();
        assert!(st.success());
        let deadline = Instant::now() + STOP_DEADLINE;
        while child.try_wait().unwrap().is_none() {
            if Instant::now() > deadline {
                child.kill().unwrap();
                panic!("etcd did not stop within {STOP_DEADLINE:?}");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Kills etcd with SIGKILL, as a crash would.
    pub fn kill(mut self) {
        let mut child = self.child.take().unwrap();
        child.kill().unwrap();
        child.wait().unwrap();
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

pub fn b64(b: &[u8]) -> String {
    B64.encode(b)
}

pub fn unb64(v: &Value) -> Vec<u8> {
    v.as_str().map_or_else(Vec::new, |s| B64.decode(s).unwrap())
}

/// A JSON number that the gateway may print as a string.
pub fn num(v: &Value) -> i64 {
    match v {
        Value::Number(n) => n.as_i64().unwrap(),
        Value::String(s) => s.parse().unwrap(),
        Value::Null => 0,
        v => panic!("not a number: {v}"),
    }
}

pub fn unum(v: &Value) -> u64 {
    match v {
        Value::Number(n) => n.as_u64().unwrap(),
        Value::String(s) => s.parse().unwrap(),
        Value::Null => 0,
        v => panic!("not a number: {v}"),
    }
}

fn header_rev(r: &Value) -> i64 {
    num(&r["header"]["revision"])
}

fn dechunk(mut b: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let line_end = b.windows(2).position(|w| w == b"\r\n").unwrap();
        let size =
            usize::from_str_radix(std::str::from_utf8(&b[..line_end]).unwrap().trim(), 16).unwrap();
        b = &b[line_end + 2..];
        if size == 0 {
            return out;
        }
        out.extend_from_slice(&b[..size]);
        b = &b[size + 2..];
    }
}

/// `etcdctl snapshot status -w json` of a file.
pub fn snapshot_status(file: &Path) -> Value {
    let out = Command::new(ETCDCTL)
        .args(["snapshot", "status", "-w", "json"])
        .arg(file)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "snapshot status {}: {}",
        file.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// `etcdctl snapshot restore` into `data_dir` for a one-member cluster on
/// `ports`.
pub fn snapshot_restore(file: &Path, data_dir: &Path, ports: Ports, extra: &[&str]) -> Output {
    Command::new(ETCDCTL)
        .args(["snapshot", "restore"])
        .arg(file)
        .arg("--data-dir")
        .arg(data_dir)
        .args(["--name", "default"])
        .args(["--initial-cluster", &ports.initial_cluster()])
        .args(["--initial-advertise-peer-urls", &ports.peer_url()])
        .args(extra)
        .output()
        .unwrap()
}

/// The `kvs` of `etcdctl get "" --prefix -w json` as comparable tuples:
/// (key, value, create_revision, mod_revision, version, lease).
pub type KvTuple = (Vec<u8>, Vec<u8>, i64, i64, i64, i64);

pub fn get_all(e: &Etcd) -> (i64, Vec<KvTuple>) {
    let v = e.ctl_json(&["get", "", "--prefix"]);
    let kvs = v["kvs"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|kv| {
                    (
                        unb64(&kv["key"]),
                        unb64(&kv["value"]),
                        num(&kv["create_revision"]),
                        num(&kv["mod_revision"]),
                        num(&kv["version"]),
                        num(&kv["lease"]),
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    (num(&v["header"]["revision"]), kvs)
}

/// Lease IDs from `etcdctl lease list` (printed in hex).
pub fn lease_list(e: &Etcd) -> Vec<i64> {
    let out = e.ctl(&["lease", "list"]);
    let mut ids: Vec<i64> = out
        .lines()
        .skip(1)
        .filter(|l| !l.trim().is_empty())
        .map(|l| i64::from_str_radix(l.trim(), 16).unwrap())
        .collect();
    ids.sort_unstable();
    ids
}
