//! `cargo xtask cluster ...` end to end: every verb against a real cluster
//! in a temporary folder, on random loopback addresses (127.a.b.c, the
//! next addresses for the other members) so these tests run next to each
//! other, next to the other cluster tests and next to a developer's own
//! `cluster up` on 127.0.0.x.
//!
//! The tests run the already built xtask binary (target/debug/xtask, which
//! `cargo xtask test` has just been built as; or `$CAIRN_XTASK_BIN`) with
//! `CAIRN_BIN` pointing at target/debug/cairn, so nothing is compiled here.
//! Every command runs under a deadline.

use cairn_tests::{cairn_bin, etcdctl, eventually, http_get, stderr, stdout, wait_output};
use std::io::Read;
use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Ceiling for one xtask command: `up` waits up to 30 s for health, `add`
/// up to 60 s for the cluster to accept the member and 60 s for health.
const COMMAND: Duration = Duration::from_secs(150);
const WAIT: Duration = Duration::from_secs(20);

/// The xtask binary: `$CAIRN_XTASK_BIN`, or the one next to this test
/// executable (cargo puts tests in target/<profile>/deps/).
fn xtask_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("CAIRN_XTASK_BIN") {
        return PathBuf::from(p);
    }
    let exe = std::env::current_exe().expect("current exe");
    let mut dir = exe.parent().expect("exe dir").to_path_buf();
    if dir.ends_with("deps") {
        dir.pop();
    }
    let bin = dir.join("xtask");
    assert!(
        bin.exists(),
        "{} does not exist: build it first (cargo build -p xtask), or run the suite with \
         `cargo xtask test`",
        bin.display()
    );
    bin
}

/// A first address whose next `n` addresses all have 2379 and 2380 free.
fn pick_base(n: u8) -> Ipv4Addr {
    for _ in 0..1000 {
        // 127.0.x.x: a developer's cluster and bench compare; 127.77.x.x:
        // the golden tests' fixed addresses.
        let a: u8 = rand::random::<u8>().max(1);
        if a == 77 {
            continue;
        }
        let b: u8 = rand::random();
        let c: u8 = rand::random::<u8>().clamp(2, 240);
        let free = (0..n).all(|k| {
            let host = Ipv4Addr::new(127, a, b, c + k);
            [2379, 2380]
                .iter()
                .all(|&p| TcpListener::bind(SocketAddr::from((host, p))).is_ok())
        });
        if free {
            return Ipv4Addr::new(127, a, b, c);
        }
    }
    panic!("no free loopback addresses found");
}

fn nth(base: Ipv4Addr, k: u8) -> Ipv4Addr {
    let [a, b, c, d] = base.octets();
    Ipv4Addr::new(a, b, c, d + k)
}

/// One cluster folder; `down` on drop, so a failing test leaves nothing
/// running.
struct Xt {
    dir: tempfile::TempDir,
    base: Ipv4Addr,
}

impl Xt {
    fn new() -> Xt {
        // Fail here, not in `drop` (a second panic there would abort).
        xtask_bin();
        Xt {
            dir: tempfile::Builder::new()
                .prefix("cairn-xtask-")
                .tempdir()
                .expect("tempdir"),
            // Room for a fourth member.
            base: pick_base(4),
        }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    fn command(&self, verb: &str, args: &[&str]) -> Command {
        let mut cmd = Command::new(xtask_bin());
        cmd.args(["cluster", verb, "--dir"])
            .arg(self.path())
            .args(args)
            .env("CAIRN_BIN", cairn_bin())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for (k, _) in std::env::vars() {
            if k.starts_with("ETCD_") || k.starts_with("ETCDCTL_") {
                cmd.env_remove(k);
            }
        }
        cmd
    }

    /// Runs `cargo xtask cluster <verb> --dir <dir> <args>`.
    fn run(&self, verb: &str, args: &[&str]) -> Output {
        let child = self.command(verb, args).spawn().expect("spawn xtask");
        wait_output(child, COMMAND)
    }

    /// Like `run`, asserting success; returns (stdout, stderr).
    #[track_caller]
    fn ok(&self, verb: &str, args: &[&str]) -> (String, String) {
        let out = self.run(verb, args);
        assert!(
            out.status.success(),
            "xtask cluster {verb} {args:?} failed ({:?}):\nstdout:\n{}\nstderr:\n{}",
            out.status,
            stdout(&out),
            stderr(&out)
        );
        (stdout(&out), stderr(&out))
    }

    fn up(&self) -> (String, String) {
        self.ok("up", &["--address", &self.base.to_string()])
    }

    fn member_dir(&self, name: &str) -> PathBuf {
        self.path().join(name)
    }

    fn endpoint(&self, k: u8) -> String {
        format!("{}:2379", nth(self.base, k))
    }

    fn endpoints(&self, n: u8) -> String {
        (0..n)
            .map(|k| self.endpoint(k))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// The status table, one map per member row.
    fn status(&self) -> (Option<i32>, Vec<Row>, String) {
        let out = self.run("status", &[]);
        let text = stdout(&out);
        (out.status.code(), parse_table(&text), text)
    }

    fn pid(&self, name: &str) -> u32 {
        let state: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(self.path().join("cluster.json")).expect("cluster.json"),
        )
        .expect("cluster.json is JSON");
        state["members"]
            .as_array()
            .expect("members")
            .iter()
            .find(|m| m["name"] == name)
            .and_then(|m| m["pid"].as_u64())
            .map(|p| u32::try_from(p).expect("pid"))
            .unwrap_or_else(|| panic!("{name} has no pid in {state}"))
    }
}

impl Drop for Xt {
    fn drop(&mut self) {
        let out = self.run("down", &[]);
        if !out.status.success() {
            eprintln!(
                "cleanup: xtask cluster down failed:\n{}\n{}",
                stdout(&out),
                stderr(&out)
            );
        }
    }
}

type Row = std::collections::HashMap<String, String>;

/// Splits the status table at the header's column starts (cells such as
/// "pid 123" and "down (connection refused)" hold spaces).
fn parse_table(text: &str) -> Vec<Row> {
    let mut lines = text.lines();
    let Some(header) = lines.next().filter(|h| h.starts_with("MEMBER")) else {
        return Vec::new();
    };
    let names = [
        "MEMBER",
        "PROCESS",
        "ID",
        "CLIENT URL",
        "PEER URL",
        "LEADER",
        "TERM",
        "INDEX",
        "HEALTH",
    ];
    let starts: Vec<usize> = names
        .iter()
        .map(|n| {
            header
                .find(&format!("{n} "))
                .or_else(|| header.find(n))
                .unwrap_or_else(|| panic!("no {n} column in {header:?}"))
        })
        .collect();
    let mut rows = Vec::new();
    for line in lines {
        if line.len() < starts[names.len() - 1] {
            break; // the lines after the table
        }
        let mut row = Row::new();
        for (i, name) in names.iter().enumerate() {
            let end = starts.get(i + 1).copied().unwrap_or(line.len());
            let cell = line.get(starts[i]..end.min(line.len())).unwrap_or("");
            row.insert((*name).to_string(), cell.trim().to_string());
        }
        rows.push(row);
    }
    rows
}

/// `etcdctl member list -w json`'s members; None if etcdctl failed (the
/// callers that poll retry then).
fn try_member_list(endpoints: &str) -> Option<Vec<serde_json::Value>> {
    let out = etcdctl(endpoints, &["member", "list", "-w", "json"], None);
    if !out.status.success() {
        return None;
    }
    let v: serde_json::Value = serde_json::from_str(&stdout(&out)).ok()?;
    v["members"].as_array().cloned()
}

#[track_caller]
fn member_list(endpoints: &str) -> Vec<serde_json::Value> {
    try_member_list(endpoints).expect("etcdctl member list")
}

/// Started members (those that have published a name), sorted.
fn started_names(endpoints: &str) -> Option<Vec<String>> {
    let mut names: Vec<String> = try_member_list(endpoints)?
        .iter()
        .filter_map(|m| m["name"].as_str().filter(|n| !n.is_empty()))
        .map(String::from)
        .collect();
    names.sort();
    Some(names)
}

fn get(endpoint: &str, key: &str) -> String {
    let out = etcdctl(
        endpoint,
        &["get", key, "--print-value-only", "--consistency=s"],
        None,
    );
    assert!(out.status.success(), "get {key}: {}", stderr(&out));
    stdout(&out).trim().to_string()
}

fn process_running(pid: u32) -> bool {
    // A zombie keeps its /proc entry but has an empty cmdline.
    std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|c| !c.is_empty())
}

/// `cluster logs` running in the background, its stdout collected.
struct Follower {
    child: Child,
    out: Arc<Mutex<String>>,
}

impl Follower {
    fn start(xt: &Xt, args: &[&str]) -> Follower {
        let mut child = xt.command("logs", args).spawn().expect("spawn logs");
        let out = Arc::new(Mutex::new(String::new()));
        let mut pipe = child.stdout.take().expect("stdout");
        let sink = Arc::clone(&out);
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = pipe.read(&mut buf) {
                if n == 0 {
                    break;
                }
                sink.lock()
                    .expect("lock")
                    .push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        });
        Follower { child, out }
    }

    fn text(&self) -> String {
        self.out.lock().expect("lock").clone()
    }

    #[track_caller]
    fn wait_for(&self, what: &str, pred: impl Fn(&str) -> bool) {
        let ok = eventually(WAIT, || pred(&self.text()).then_some(()));
        assert!(ok.is_some(), "logs never showed {what}:\n{}", self.text());
    }
}

impl Drop for Follower {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn up_status_kill_start_stop_logs_down_and_up_again() {
    let xt = Xt::new();
    let (out, err) = xt.up();
    assert!(out.contains("Cluster is up."), "{out}");
    // Progress while starting: which members are up.
    for name in ["m1", "m2", "m3"] {
        assert!(err.contains(&format!("{name} started (pid")), "{err}");
        assert!(err.contains(&format!("{name} healthy after")), "{err}");
    }

    // Each member's config is an etcd.conf that cairn itself accepts.
    for (k, name) in ["m1", "m2", "m3"].iter().enumerate() {
        let conf = xt.member_dir(name).join("etcd.conf");
        let text = std::fs::read_to_string(&conf).expect("member etcd.conf");
        assert!(text.contains("#[Member]\n"), "{text}");
        assert!(text.contains(&format!("ETCD_NAME=\"{name}\"\n")), "{text}");
        assert!(
            text.contains(&format!(
                "ETCD_LISTEN_CLIENT_URLS=\"http://{}\"\n",
                xt.endpoint(u8::try_from(k).unwrap())
            )),
            "{text}"
        );
        assert!(
            text.contains("ETCD_INITIAL_CLUSTER_STATE=\"new\"\n"),
            "{text}"
        );
        let check = Command::new(cairn_bin())
            .args(["config", "check"])
            .arg(&conf)
            .output()
            .expect("cairn config check");
        assert!(
            check.status.success(),
            "cairn config check {}: {}{}",
            conf.display(),
            stdout(&check),
            stderr(&check)
        );
    }

    // The status table: every member, its ID as etcd reports it, one leader.
    let (code, rows, text) = xt.status();
    assert_eq!(code, Some(0), "{text}");
    assert_eq!(rows.len(), 3, "{text}");
    let ids: Vec<(String, String)> = member_list(&xt.endpoints(3))
        .iter()
        .map(|m| {
            (
                m["name"].as_str().unwrap_or("").to_string(),
                format!("{:x}", m["ID"].as_u64().expect("ID")),
            )
        })
        .collect();
    let leader = rows[0]["LEADER"].clone();
    assert!(["m1", "m2", "m3"].contains(&leader.as_str()), "{text}");
    for (k, row) in rows.iter().enumerate() {
        let name = format!("m{}", k + 1);
        let host = nth(xt.base, u8::try_from(k).unwrap());
        assert_eq!(row["MEMBER"], name, "{text}");
        assert!(row["PROCESS"].starts_with("pid "), "{text}");
        assert!(
            ids.contains(&(name.clone(), row["ID"].clone())),
            "{text}\n{ids:?}"
        );
        assert_eq!(row["CLIENT URL"], format!("http://{host}:2379"), "{text}");
        assert_eq!(row["PEER URL"], format!("http://{host}:2380"), "{text}");
        assert_eq!(row["LEADER"], leader, "{text}");
        assert!(row["TERM"].parse::<u64>().unwrap() >= 1, "{text}");
        assert!(row["INDEX"].parse::<u64>().unwrap() >= 1, "{text}");
        assert_eq!(row["HEALTH"], "healthy", "{text}");
    }
    assert!(text.contains(&format!("Leader: {leader} (term ")), "{text}");

    let put = etcdctl(&xt.endpoints(3), &["put", "kept", "across-restarts"], None);
    assert!(put.status.success(), "{}", stderr(&put));

    // kill: SIGKILL; status shows it stopped and exits non-zero. A
    // follower, so that the others stay healthy throughout (killing the
    // leader would leave them leaderless until the next election).
    let k = (0..3u8)
        .find(|&k| rows[usize::from(k)]["MEMBER"] != leader)
        .expect("a follower");
    let (victim, other) = (format!("m{}", k + 1), usize::from((k + 1) % 3));
    let row = usize::from(k);
    let victim_pid = xt.pid(&victim);
    xt.ok("kill", &[&victim]);
    assert!(
        !process_running(victim_pid),
        "{victim} (pid {victim_pid}) survived kill"
    );
    let (code, rows, text) = xt.status();
    assert_ne!(code, Some(0), "{text}");
    assert_eq!(rows[row]["PROCESS"], "stopped", "{text}");
    assert!(rows[row]["HEALTH"].starts_with("down"), "{text}");
    assert_eq!(rows[other]["HEALTH"], "healthy", "{text}");

    // start: from its existing data, which still holds the key.
    let (out, _) = xt.ok("start", &[&victim]);
    assert!(out.contains(&format!("{victim} is up (pid")), "{out}");
    assert_eq!(get(&xt.endpoint(k), "kept"), "across-restarts");

    // logs, one member, not following: the last lines of its log file.
    let (out, _) = xt.ok("logs", &["m1", "-n", "3", "--no-follow"]);
    let log = std::fs::read_to_string(xt.member_dir("m1").join("cairn.log")).unwrap();
    let last: Vec<&str> = log.lines().rev().take(3).collect::<Vec<_>>();
    let printed: Vec<&str> = out.lines().collect();
    assert_eq!(printed.len(), 3, "{out}");
    // The log may have grown since; what was printed is in it, in order.
    assert!(
        log.contains(&printed.join("\n")),
        "{out}\nis not from the log, which ends:\n{last:?}"
    );

    // logs, all members, following: name-prefixed, and new lines show up.
    let follow = Follower::start(&xt, &["-n", "2"]);
    follow.wait_for("every member's lines", |t| {
        ["m1 | ", "m2 | ", "m3 | "].iter().all(|p| t.contains(p))
    });
    let (out, _) = xt.ok("restart", &["m3"]);
    assert!(out.contains("m3 is up (pid"), "{out}");
    follow.wait_for("m3's restart", |t| {
        t.lines()
            .any(|l| l.starts_with("m3 | === xtask: starting m3 at unix time"))
    });
    drop(follow);

    // stop: SIGTERM, and the member shuts down cleanly.
    let m3_pid = xt.pid("m3");
    xt.ok("stop", &["m3"]);
    assert!(!process_running(m3_pid), "m3 survived stop");
    let log = std::fs::read_to_string(xt.member_dir("m3").join("cairn.log")).unwrap();
    assert!(
        log.contains("shutting down"),
        "{}",
        cairn_tests::tail(&log, 10)
    );

    // down, then up again: the same cluster, from its data.
    let (out, _) = xt.ok("down", &[]);
    assert!(out.contains("Stopping m1, m2"), "{out}");
    let (_, err) = xt.up();
    assert!(
        err.contains("restarting m1, m2, m3 from existing data"),
        "{err}"
    );
    assert_eq!(get(&xt.endpoint(2), "kept"), "across-restarts");
    let (code, rows, text) = xt.status();
    assert_eq!(code, Some(0), "{text}");
    assert!(rows.iter().all(|r| r["HEALTH"] == "healthy"), "{text}");

    // up --fresh: a new cluster on the same addresses, without the key.
    let (_, err) = xt.ok("up", &["--fresh"]);
    assert!(err.contains("starting m1, m2, m3 with new data"), "{err}");
    assert_eq!(get(&xt.endpoint(0), "kept"), "");

    xt.ok("down", &["--clean"]);
    assert!(!xt.path().exists());
}

#[test]
fn add_and_remove_a_member() {
    let xt = Xt::new();
    xt.up();

    // Right after `up` the strict reconfig check refuses the add for a few
    // seconds; `add` rides that out by itself.
    let (out, err) = xt.ok("add", &["m4"]);
    assert!(out.contains("m4 added and healthy"), "{out}\n{err}");
    let m4_host = nth(xt.base, 3);
    let conf = std::fs::read_to_string(xt.member_dir("m4").join("etcd.conf")).unwrap();
    assert!(
        conf.contains("ETCD_INITIAL_CLUSTER_STATE=\"existing\"\n"),
        "{conf}"
    );
    assert!(
        conf.contains(&format!("m4=http://{m4_host}:2380")) && conf.contains("m1=http://"),
        "{conf}"
    );

    let names = eventually(WAIT, || {
        let names = started_names(&xt.endpoints(3))?;
        (names.len() == 4).then_some(names)
    });
    assert_eq!(
        names,
        Some(vec!["m1".into(), "m2".into(), "m3".into(), "m4".into()]),
        "etcdctl member list should show four started members"
    );
    let (code, rows, text) = xt.status();
    assert_eq!(code, Some(0), "{text}");
    assert_eq!(rows.len(), 4, "{text}");
    assert_eq!(rows[3]["MEMBER"], "m4", "{text}");
    assert_eq!(
        rows[3]["CLIENT URL"],
        format!("http://{m4_host}:2379"),
        "{text}"
    );
    assert_eq!(rows[3]["HEALTH"], "healthy", "{text}");
    assert_eq!(rows[3]["LEADER"], rows[0]["LEADER"], "{text}");

    // The new member serves reads and writes.
    let put = etcdctl(&xt.endpoint(3), &["put", "via-m4", "yes"], None);
    assert!(put.status.success(), "{}", stderr(&put));
    assert_eq!(get(&xt.endpoint(0), "via-m4"), "yes");

    // A name that exists is refused before anything changes.
    let again = xt.run("add", &["m4"]);
    assert!(!again.status.success());
    assert!(
        stderr(&again).contains("already has a member called m4"),
        "{}",
        stderr(&again)
    );

    let m4_pid = xt.pid("m4");
    let (out, err) = xt.ok("remove", &["m4"]);
    assert!(out.contains("m4 removed from the cluster"), "{out}\n{err}");
    assert!(out.contains("was deleted"), "{out}");
    assert!(!process_running(m4_pid), "m4 still runs after remove");
    assert!(!xt.member_dir("m4").join("data").exists());
    assert!(
        xt.member_dir("m4").join("cairn.log").exists(),
        "the log is kept"
    );

    let names = eventually(WAIT, || {
        let names = started_names(&xt.endpoints(3))?;
        (names.len() == 3).then_some(names)
    });
    assert_eq!(
        names,
        Some(vec!["m1".into(), "m2".into(), "m3".into()]),
        "etcdctl member list should be back to three"
    );
    assert_eq!(member_list(&xt.endpoints(3)).len(), 3);
    let (code, rows, text) = xt.status();
    assert_eq!(code, Some(0), "{text}");
    assert_eq!(rows.len(), 3, "{text}");
    assert_eq!(get(&xt.endpoint(2), "via-m4"), "yes");
}

/// `GET /config` line for `key`, if the member answers.
fn config_line(addr: &SocketAddr, key: &str) -> Option<String> {
    let (status, body) = http_get(addr, "/config").ok()?;
    if status != 200 {
        return None;
    }
    body.lines()
        .find(|l| l.starts_with(&format!("{key} = ")))
        .map(String::from)
}

#[test]
fn editing_a_member_config_file_changes_the_running_member() {
    let xt = Xt::new();
    xt.up();
    let m1: SocketAddr = xt.endpoint(0).parse().unwrap();
    let pid = xt.pid("m1");
    assert_eq!(
        config_line(&m1, "log-level").as_deref(),
        Some("log-level = info")
    );

    // What an operator does: uncomment and change lines, save with an
    // editor (write a new file, rename it over the old one).
    let path = xt.member_dir("m1").join("etcd.conf");
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(text.contains("\n#ETCD_LOG_LEVEL=\"info\"\n"), "{text}");
    assert!(
        text.contains("\n#ETCD_HEARTBEAT_INTERVAL=\"100\"\n"),
        "{text}"
    );
    let edited = text
        .replace(
            "\n#ETCD_LOG_LEVEL=\"info\"\n",
            "\nETCD_LOG_LEVEL=\"debug\"\n",
        )
        .replace(
            "\n#ETCD_HEARTBEAT_INTERVAL=\"100\"\n",
            "\nETCD_HEARTBEAT_INTERVAL=\"150\"\n",
        );
    let tmp = path.with_extension("swp");
    std::fs::write(&tmp, &edited).unwrap();
    std::fs::rename(&tmp, &path).unwrap();

    for (key, want) in [
        ("log-level", "log-level = debug"),
        ("heartbeat-interval", "heartbeat-interval = 150"),
    ] {
        let got = eventually(WAIT, || config_line(&m1, key).filter(|l| l == want));
        assert!(got.is_some(), "m1 never applied {want}");
    }
    let (_, body) = http_get(&m1, "/config/status").unwrap();
    let status: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(status["last_reload_successful"], true, "{status}");
    let applied = status["applied"].to_string();
    assert!(
        applied.contains("--log-level") && applied.contains("--heartbeat-interval"),
        "{status}"
    );
    assert_eq!(
        xt.pid("m1"),
        pid,
        "a live change must not restart the member"
    );
    assert!(process_running(pid));
    // The other members keep their own files and settings.
    let m2: SocketAddr = xt.endpoint(1).parse().unwrap();
    assert_eq!(
        config_line(&m2, "log-level").as_deref(),
        Some("log-level = info")
    );
    // The debug level shows in the member's log.
    let log_path = xt.member_dir("m1").join("cairn.log");
    let debug_logged = eventually(WAIT, || {
        let _ = etcdctl(&xt.endpoint(0), &["put", "after", "edit"], None);
        std::fs::read_to_string(&log_path)
            .ok()
            .filter(|l| l.contains(" D | "))
    });
    assert!(debug_logged.is_some(), "no DEBUG line in m1's log");

    // A restart-only setting waits for `restart`, which reads the file too.
    let edited = std::fs::read_to_string(&path).unwrap() + "ETCD_GRPC_KEEPALIVE_TIMEOUT=\"30s\"\n";
    std::fs::write(&path, edited).unwrap();
    let pending = eventually(WAIT, || {
        let (_, body) = http_get(&m1, "/config/status").ok()?;
        let status: serde_json::Value = serde_json::from_str(&body).ok()?;
        status["pending_restart"]
            .to_string()
            .contains("--grpc-keepalive-timeout")
            .then_some(status)
    });
    assert!(
        pending.is_some(),
        "the restart-only change was not reported"
    );
    assert_eq!(
        config_line(&m1, "grpc-keepalive-timeout").as_deref(),
        Some("grpc-keepalive-timeout = 20s")
    );
    xt.ok("restart", &["m1"]);
    assert_ne!(xt.pid("m1"), pid);
    assert_eq!(
        config_line(&m1, "grpc-keepalive-timeout").as_deref(),
        Some("grpc-keepalive-timeout = 30s")
    );
    assert_eq!(
        config_line(&m1, "log-level").as_deref(),
        Some("log-level = debug")
    );
}
