//! `--logger` and `--log-outputs` seen from outside: a running member's zap
//! JSON lines in a log file (with etcd 3.4's keys and types), the file
//! reopened on SIGUSR1 after a logrotate-style rename, and the capnslog text
//! lines of the default logger.

use cairn_tests::{Cluster, Options, Target, eventually, target};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(20);

/// Every line of a zap log parsed, checked for etcd's keys, types and level
/// words.
fn zap_lines(text: &str) -> Vec<serde_json::Value> {
    text.lines()
        .map(|l| {
            let v: serde_json::Value =
                serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}"));
            let level = v["level"].as_str().unwrap_or_else(|| panic!("level: {l}"));
            assert!(
                ["debug", "info", "warn", "error", "dpanic", "panic", "fatal"].contains(&level),
                "{l}"
            );
            // 2026-12-06T16:08:01.952Z: milliseconds, UTC.
            let ts = v["ts"].as_str().unwrap_or_else(|| panic!("ts: {l}"));
            let b = ts.as_bytes();
            assert!(
                b.len() == 24
                    && b[4] == b'-'
                    && b[10] == b'T'
                    && b[19] == b'.'
                    && ts.ends_with('Z'),
                "{l}"
            );
            let caller = v["caller"]
                .as_str()
                .unwrap_or_else(|| panic!("caller: {l}"));
            let (file, line) = caller.rsplit_once(':').unwrap_or_else(|| panic!("{l}"));
            assert!(file.contains('/') && line.parse::<u32>().is_ok(), "{l}");
            assert!(v["msg"].is_string(), "{l}");
            // The keys come in zap's order.
            assert!(
                l.starts_with("{\"level\":") && l.find("\"ts\":") < l.find("\"caller\":"),
                "{l}"
            );
            v
        })
        .collect()
}

fn has_msg(lines: &[serde_json::Value], msg: &str) -> bool {
    lines.iter().any(|v| v["msg"].as_str() == Some(msg))
}

/// The line that says the member serves clients: Cairn's (capnslog's
/// wording) or etcd 3.4 zap's.
fn is_ready(v: &serde_json::Value) -> bool {
    v["msg"].as_str().is_some_and(|m| {
        m == "ready to serve client requests" || m.starts_with("serving client traffic")
    })
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

#[test]
fn zap_lines_go_to_a_log_file_that_sigusr1_reopens() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("member.log");
    let c = Cluster::start(Options {
        members: 1,
        extra_args: vec![
            "--logger=zap".into(),
            format!("--log-outputs=stderr,{}", path.display()),
        ],
        ..Options::default()
    });
    let ready = eventually(WAIT, || {
        let lines = zap_lines(&read(&path));
        lines.iter().any(is_ready).then_some(lines)
    })
    .unwrap_or_else(|| panic!("no readiness line in the file:\n{}", read(&path)));
    assert!(ready.len() >= 5, "{} lines", ready.len());
    // The same lines went to stderr too.
    let stderr = c.members[0].log();
    assert!(zap_lines(&stderr).iter().any(is_ready), "{stderr}");
    if target() == Target::Etcd {
        // etcd has no reopen signal (SIGUSR1 would end it).
        return;
    }
    // logrotate: rename, then SIGUSR1.
    let rotated = dir.path().join("member.log.1");
    std::fs::rename(&path, &rotated).unwrap();
    let status = Command::new("kill")
        .args(["-USR1", &c.members[0].pid().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let fresh = eventually(WAIT, || {
        let lines = zap_lines(&read(&path));
        has_msg(&lines, "reopened log files").then_some(lines)
    })
    .unwrap_or_else(|| panic!("not reopened:\n{}", c.logs_tail(20)));
    assert!(!fresh.iter().any(is_ready));
    // Numbers stay JSON numbers.
    let reopened = fresh
        .iter()
        .find(|v| v["msg"] == "reopened log files")
        .unwrap();
    assert_eq!(reopened["files"], 1, "{reopened}");
    let old = zap_lines(&read(&rotated));
    assert!(old.iter().any(is_ready));
    assert!(!has_msg(&old, "reopened log files"));
    // The member still serves, and keeps logging to the new file.
    assert_eq!(cairn_tests::health(&c.members[0].client_addr()), Some(true));
}

/// The default logger writes etcd 3.4's capnslog lines:
/// `2026-12-06 16:08:13.338932 I | pkg: message`.
#[test]
fn capnslog_lines_by_default() {
    if target() == Target::Etcd {
        // etcd's raft lines have a format of their own (`raft2026/12/06 …`).
        return;
    }
    let c = Cluster::start(Options {
        members: 1,
        ..Options::default()
    });
    let log = eventually(WAIT, || {
        let log = c.members[0].log();
        log.contains("ready to serve client requests")
            .then_some(log)
    })
    .unwrap_or_else(|| panic!("not ready:\n{}", c.logs_tail(20)));
    for l in log.lines() {
        let b = l.as_bytes();
        assert!(b.len() > 32, "{l}");
        assert!(
            b[4] == b'-'
                && b[10] == b' '
                && b[19] == b'.'
                && b[26] == b' '
                && b"EWIDT".contains(&b[27])
                && &l[28..31] == " | ",
            "not a capnslog line: {l}"
        );
        let pkg = l[31..].split(": ").next().unwrap_or_default();
        assert!(!pkg.is_empty() && !pkg.contains(' '), "{l}");
    }
}

#[test]
fn an_unopenable_log_file_stops_the_server_naming_it() {
    if target() == Target::Etcd {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("missing/dir/cairn.log");
    let out = Command::new(cairn_tests::cairn_bin())
        .args([
            "--config-file=".to_string(),
            format!("--data-dir={}", dir.path().join("data").display()),
            format!("--log-outputs={}", bad.display()),
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("cannot open log output"), "{err}");
    assert!(err.contains("missing/dir/cairn.log"), "{err}");
    assert!(
        !dir.path().join("data").exists(),
        "the data dir was created"
    );
}
