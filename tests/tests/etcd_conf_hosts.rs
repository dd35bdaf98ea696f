//! The three-host workflow operators know from distro packages: each member
//! gets only its own `/etc/etcd/etcd.conf` (`#[Member]`/`#[Clustering]`
//! sections, `KEY="value"` lines, commented defaults). Two members read it
//! with `--config-file`; the third gets it the way systemd's
//! `EnvironmentFile=` passes it, as `ETCD_*` variables. Then the real
//! etcdctl, v3 and v2, sees one healthy three-member cluster.

use cairn_tests::{
    etcdctl, eventually, free_host, free_port, health, server_bin, stderr, stdout, tail,
};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

struct Host {
    name: String,
    addr: String,
    /// The second client URL every member also listens on (distro configs
    /// add the loopback address so local tools work).
    local_port: u16,
}

/// An etcd.conf as distro packages ship it, filled in for one host.
fn etcd_conf(h: &Host, all: &[Host], data_dir: &Path) -> String {
    let cluster = all
        .iter()
        .map(|o| format!("{}=http://{}:2380", o.name, o.addr))
        .collect::<Vec<_>>()
        .join(",");
    format!(
        r#"#[Member]
#ETCD_CORS=""
ETCD_DATA_DIR="{data}"
#ETCD_WAL_DIR=""
ETCD_LISTEN_PEER_URLS="http://{addr}:2380"
ETCD_LISTEN_CLIENT_URLS="http://{addr}:2379,http://127.0.0.1:{local}"
#ETCD_MAX_SNAPSHOTS="5"
#ETCD_MAX_WALS="5"
ETCD_NAME="{name}"
#ETCD_SNAPSHOT_COUNT="100000"
ETCD_HEARTBEAT_INTERVAL="50"
ETCD_ELECTION_TIMEOUT="750"
#ETCD_QUOTA_BACKEND_BYTES="0"
#
#[Clustering]
ETCD_INITIAL_ADVERTISE_PEER_URLS="http://{addr}:2380"
ETCD_ADVERTISE_CLIENT_URLS="http://{addr}:2379"
#ETCD_DISCOVERY=""
#ETCD_DISCOVERY_FALLBACK="proxy"
#ETCD_DISCOVERY_PROXY=""
#ETCD_DISCOVERY_SRV=""
ETCD_INITIAL_CLUSTER="{cluster}"
ETCD_INITIAL_CLUSTER_TOKEN="etcd-cluster"
ETCD_INITIAL_CLUSTER_STATE="new"
#ETCD_STRICT_RECONFIG_CHECK="true"
#ETCD_ENABLE_V2="true"
#
#[Security]
#ETCD_CERT_FILE=""
#ETCD_KEY_FILE=""
#ETCD_CLIENT_CERT_AUTH="false"
#
#[Logging]
#ETCD_DEBUG="false"
"#,
        data = data_dir.display(),
        addr = h.addr,
        local = h.local_port,
        name = h.name,
    )
}

/// What systemd's `EnvironmentFile=` makes of such a file: the uncommented
/// `KEY="value"` lines as environment variables.
fn environment_file(text: &str) -> Vec<(String, String)> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.trim_matches('"').to_string()))
        .collect()
}

struct Members(Vec<Child>);

impl Drop for Members {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn spawn(cmd: &mut Command, log: &Path) -> Child {
    let f = std::fs::File::create(log).expect("log file");
    for (k, _) in std::env::vars() {
        if k.starts_with("ETCD_") {
            cmd.env_remove(k);
        }
    }
    cmd.stdin(Stdio::null())
        .stdout(f.try_clone().expect("log fd"))
        .stderr(f)
        .spawn()
        .expect("start member")
}

#[test]
fn three_hosts_from_their_etcd_conf() {
    if cairn_tests::target() == cairn_tests::Target::Etcd {
        return; // etcd reads etcd.conf only through systemd, never itself.
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let hosts: Vec<Host> = (1..=3)
        .map(|i| Host {
            name: format!("etcd{i}"),
            addr: free_host(&[2379, 2380]),
            local_port: free_port(),
        })
        .collect();
    let mut members = Members(Vec::new());
    let logs: Vec<_> = hosts
        .iter()
        .map(|h| dir.path().join(format!("{}.log", h.name)))
        .collect();
    let log_of = |i: usize| std::fs::read_to_string(&logs[i]).unwrap_or_default();
    let confs: Vec<String> = hosts
        .iter()
        .map(|h| etcd_conf(h, &hosts, &dir.path().join(&h.name)))
        .collect();
    let start = |i: usize| -> Child {
        let conf = dir.path().join(format!("{}.conf", hosts[i].name));
        std::fs::write(&conf, &confs[i]).expect("write etcd.conf");
        let mut cmd = Command::new(server_bin());
        if i < 2 {
            cmd.arg(format!("--config-file={}", conf.display()));
        } else {
            // systemd style; and no file of the host's is read.
            cmd.arg("--config-file=").envs(environment_file(&confs[i]));
        }
        spawn(&mut cmd, &logs[i])
    };

    // The first member alone waits for the others, and says so.
    members.0.push(start(0));
    let waiting = eventually(Duration::from_secs(20), || {
        log_of(0).contains("waiting for peers").then_some(())
    });
    assert!(
        waiting.is_some(),
        "no 'waiting for peers' in:\n{}",
        tail(&log_of(0), 20)
    );
    members.0.push(start(1));
    members.0.push(start(2));
    for (i, h) in hosts.iter().enumerate() {
        let addr = format!("{}:2379", h.addr).parse().expect("addr");
        let up = eventually(Duration::from_secs(30), || {
            (health(&addr) == Some(true)).then_some(())
        });
        assert!(
            up.is_some(),
            "{} never became healthy:\n{}",
            h.name,
            tail(&log_of(i), 30)
        );
    }

    // Three started members, also reachable on the loopback client URL.
    let local = format!("127.0.0.1:{}", hosts[0].local_port);
    let out = etcdctl(&local, &["member", "list"], None);
    assert!(out.status.success(), "{}", stderr(&out));
    let list = stdout(&out);
    assert_eq!(list.lines().count(), 3, "{list}");
    for h in &hosts {
        assert!(
            list.contains(&format!(
                ", started, {}, http://{}:2380, http://{}:2379, false",
                h.name, h.addr, h.addr
            )),
            "{list}"
        );
    }

    // v2 written on one member, read on another; cluster-health.
    let e1 = format!("{}:2379", hosts[0].addr);
    let e2 = format!("{}:2379", hosts[1].addr);
    let out = etcdctl(&e1, &["set", "name", "value"], Some("2"));
    assert_eq!(stdout(&out).trim(), "value", "{}", stderr(&out));
    let out = etcdctl(&e2, &["get", "name"], Some("2"));
    assert_eq!(stdout(&out).trim(), "value", "{}", stderr(&out));
    let out = etcdctl(&e2, &["cluster-health"], Some("2"));
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stdout(&out).ends_with("cluster is healthy\n"),
        "{}",
        stdout(&out)
    );
    // And v3 across members.
    let out = etcdctl(&e1, &["put", "k", "v3"], None);
    assert!(out.status.success(), "{}", stderr(&out));
    let e3 = format!("{}:2379", hosts[2].addr);
    let out = etcdctl(&e3, &["get", "k", "--print-value-only"], None);
    assert_eq!(stdout(&out).trim(), "v3", "{}", stderr(&out));
    let out = etcdctl(&format!("{e1},{e2},{e3}"), &["endpoint", "health"], None);
    assert!(out.status.success(), "{}", stderr(&out));
}
