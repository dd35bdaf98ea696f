//! Starting `cairn` the way operators start etcd: no flags at all, bad
//! flags, a member that comes up before its peers, and the log lines that
//! scripts wait for.

use cairn_tests::{Cluster, Options, cairn_bin, etcdctl, ok, stderr, wait_output};
use std::net::TcpListener;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

#[test]
fn unknown_flag_and_bad_values_fail_cleanly() {
    let run = |args: &[&str]| {
        let child = Command::new(cairn_bin())
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn");
        wait_output(child, Duration::from_secs(10))
    };
    let out = run(&["--no-such-flag"]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(stderr(&out).contains("--no-such-flag"), "{}", stderr(&out));
    assert!(!stderr(&out).contains("panicked"));

    let out = run(&["--heartbeat-interval=abc"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("--heartbeat-interval"),
        "{}",
        stderr(&out)
    );

    let out = run(&["--heartbeat-interval=100", "--election-timeout=200"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("--election-timeout"),
        "{}",
        stderr(&out)
    );

    // The v2 proxy modes are the one family of etcd flags Cairn recognises
    // and refuses by design; the refusal is an error, never silence.
    let out = run(&["--proxy=on"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("not supported yet"),
        "{}",
        stderr(&out)
    );

    let out = run(&["--version"]);
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("etcd Version: 3.4"), "{text}");
}

#[test]
fn no_flags_is_a_working_single_member_cluster_on_localhost() {
    for port in [2379, 2380] {
        assert!(
            TcpListener::bind(("127.0.0.1", port)).is_ok(),
            "this test runs `cairn` with no flags, which needs localhost:{port} free \
             (is `cargo xtask cluster up` running? stop it with `cargo xtask cluster down`)"
        );
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let log = std::fs::File::create(dir.path().join("log")).expect("log");
    let mut child = Command::new(cairn_bin())
        .current_dir(dir.path())
        .stdin(Stdio::null())
        .stdout(log.try_clone().expect("fd"))
        .stderr(log)
        .env_remove("ETCD_NAME")
        .spawn()
        .expect("spawn");
    let result = std::panic::catch_unwind(|| {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let out = etcdctl("127.0.0.1:2379", &["put", "foo", "bar"], None);
            if out.status.success() {
                break;
            }
            assert!(Instant::now() < deadline, "no-flags cairn never served");
            std::thread::sleep(Duration::from_millis(100));
        }
        // Plain `etcdctl` with its default endpoint.
        let mut cmd = Command::new("etcdctl");
        cmd.env("ETCDCTL_API", "3").args(["get", "foo"]);
        let out = cmd.output().expect("etcdctl");
        assert_eq!(String::from_utf8_lossy(&out.stdout), "foo\nbar\n");
        let members = ok(etcdctl("127.0.0.1:2379", &["member", "list"], None));
        assert!(
            members.contains(
                ", started, default, http://localhost:2380, http://localhost:2379, false"
            ),
            "{members}"
        );
        // The default data dir is <name>.etcd in the working directory.
        assert!(dir.path().join("default.etcd/member").is_dir());
    });
    let _ = child.kill();
    let _ = child.wait();
    if let Err(e) = result {
        let log = std::fs::read_to_string(dir.path().join("log")).unwrap_or_default();
        eprintln!("{}", cairn_tests::tail(&log, 40));
        std::panic::resume_unwind(e);
    }
}

#[test]
fn lone_member_waits_for_peers_then_cluster_forms() {
    // Start only m1 of three; it must say it is waiting, and must not
    // serve clients before it has joined the cluster.
    let mut c = Cluster::launch(Options::default());
    c.stop(1);
    c.stop(2);
    let waited = cairn_tests::eventually(Duration::from_secs(15), || {
        c.members[0]
            .log()
            .contains("waiting for peers")
            .then_some(())
    });
    assert!(
        waited.is_some(),
        "a lone member did not say it waits for peers:\n{}",
        cairn_tests::tail(&c.members[0].log(), 30)
    );
    let log = c.members[0].log();
    assert!(!log.contains("ready to serve client requests"));
    c.restart(1);
    c.restart(2);
    c.wait_healthy(Duration::from_secs(30));
    let log = c.members[0].log();
    for milestone in [
        "published local member to cluster",
        "ready to serve client requests",
        "enabled capabilities for version 3.4",
        "serving insecure client requests on",
    ] {
        assert!(
            log.contains(milestone),
            "missing log milestone {milestone:?}:\n{log}"
        );
    }
    ok(c.etcdctl(&["put", "formed", "yes"]));
}
