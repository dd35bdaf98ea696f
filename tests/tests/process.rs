//! The member as a process under a service manager: it exits promptly on
//! SIGTERM and SIGINT, releases its ports so an immediate restart binds
//! them, and tells systemd when it is ready (`Type=notify`).

use cairn_tests::*;
use std::os::unix::net::UnixDatagram;
use std::process::Command;
use std::time::{Duration, Instant};

/// How long a member may take to exit after SIGTERM/SIGINT; the harness
/// `stop` kills after 10 s, so this must be less.
const EXIT_BOUND: Duration = Duration::from_secs(8);

/// Sends `signal` to member `i` and returns how long it took to exit by
/// itself (panics past `EXIT_BOUND`).
fn signal_and_time_exit(c: &mut Cluster, i: usize, signal: &str) -> Duration {
    let pid = c.members[i].pid().to_string();
    let started = Instant::now();
    let status = Command::new("kill")
        .args([signal, &pid])
        .status()
        .expect("kill");
    assert!(status.success());
    let code = eventually(EXIT_BOUND, || c.members[i].try_exit_code())
        .unwrap_or_else(|| panic!("still running {EXIT_BOUND:?} after {signal}"));
    // Cairn exits 0 after its cleanup; etcd, after its own, re-raises the
    // signal with the default action (so it ends "killed by signal").
    let expected = match target() {
        Target::Cairn => Some(0),
        Target::Etcd => None,
    };
    assert_eq!(code, expected, "exit after {signal}");
    started.elapsed()
}

#[test]
fn sigterm_and_sigint_exit_promptly_and_a_restart_binds_at_once() {
    let mut c = Cluster::start(Options {
        members: 1,
        ..Default::default()
    });
    for signal in ["-TERM", "-INT"] {
        let value = signal.trim_start_matches('-');
        ok(c.etcdctl(&["put", "k", value]));
        // Open client connections (a watch stream) while the signal comes.
        let watch = Background::etcdctl(&c.endpoints(), &["watch", "k"]);
        std::thread::sleep(Duration::from_millis(300));
        let took = signal_and_time_exit(&mut c, 0, signal);
        let _ = watch.kill();
        // Immediately: the client and peer ports are free again.
        c.restart(0);
        c.wait_healthy(Duration::from_secs(30));
        let out = ok(c.etcdctl(&["get", "k", "--print-value-only"]));
        assert_eq!(out, format!("{value}\n"), "exited after {took:?}");
        let log = c.members[0].log();
        assert!(
            !log.contains("address already in use"),
            "{}",
            tail(&log, 20)
        );
    }
}

#[test]
fn systemd_notify_ready_is_sent_once_serving() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("notify.sock");
    let sock = UnixDatagram::bind(&path).expect("bind notify socket");
    sock.set_read_timeout(Some(Duration::from_secs(30)))
        .expect("timeout");
    let c = Cluster::launch(Options {
        members: 1,
        member_env: vec![(0, "NOTIFY_SOCKET".into(), path_str(&path))],
        ..Default::default()
    });
    let mut buf = [0u8; 256];
    let n = sock
        .recv(&mut buf)
        .unwrap_or_else(|e| panic!("no readiness message ({e}):\n{}", c.logs_tail(30)));
    let msg = String::from_utf8_lossy(&buf[..n]).to_string();
    assert!(msg.lines().any(|l| l == "READY=1"), "notification: {msg:?}");
    // Ready means serving: a client request works right away.
    let out = ok(c.etcdctl(&["put", "after-ready", "1"]));
    assert_eq!(out, "OK\n");
    assert_eq!(health(&c.members[0].client_addr()), Some(true));
}
