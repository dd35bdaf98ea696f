//! `/metrics` scraped and parsed as Prometheus does: the exposition is
//! well-formed, etcd's main series exist, and they move when work happens.

use cairn_tests::{Cluster, Options, etcdctl, eventually, http_get, stderr};
use std::collections::BTreeMap;
use std::time::Duration;

/// Series (name plus sorted labels, as written) → value, checking the text
/// format on the way: every sample belongs to a family with HELP and TYPE,
/// and every value is a number.
fn scrape(c: &Cluster, i: usize) -> BTreeMap<String, f64> {
    let (status, body) = http_get(&c.members[i].client_addr(), "/metrics").expect("GET /metrics");
    assert_eq!(status, 200);
    let mut typed = std::collections::HashSet::new();
    let mut helped = std::collections::HashSet::new();
    let mut out = BTreeMap::new();
    for line in body.lines() {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            helped.insert(
                rest.split_whitespace()
                    .next()
                    .unwrap_or_default()
                    .to_string(),
            );
            continue;
        }
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let mut it = rest.split_whitespace();
            let name = it.next().unwrap_or_default().to_string();
            let kind = it.next().unwrap_or_default();
            assert!(
                ["counter", "gauge", "histogram", "summary", "untyped"].contains(&kind),
                "bad TYPE line {line:?}"
            );
            typed.insert(name);
            continue;
        }
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (series, value) = line
            .rsplit_once(' ')
            .unwrap_or_else(|| panic!("bad sample {line:?}"));
        let value: f64 = match value {
            "+Inf" => f64::INFINITY,
            "-Inf" => f64::NEG_INFINITY,
            v => v
                .parse()
                .unwrap_or_else(|_| panic!("bad value in {line:?}")),
        };
        let name = series.split('{').next().unwrap_or_default();
        let family = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|s| name.strip_suffix(s).filter(|f| typed.contains(*f)))
            .unwrap_or(name);
        assert!(typed.contains(family), "sample without TYPE: {line:?}");
        assert!(helped.contains(family), "sample without HELP: {line:?}");
        out.insert(series.to_string(), value);
    }
    out
}

fn get(m: &BTreeMap<String, f64>, series: &str) -> f64 {
    *m.get(series).unwrap_or_else(|| {
        panic!(
            "no series {series}; have:\n{}",
            m.keys().cloned().collect::<Vec<_>>().join("\n")
        )
    })
}

/// The sum over every series of a family whose labels contain all of `with`.
fn sum(m: &BTreeMap<String, f64>, name: &str, with: &[&str]) -> f64 {
    m.iter()
        .filter(|(k, _)| {
            (k.as_str() == name || k.starts_with(&format!("{name}{{")))
                && with.iter().all(|w| k.contains(w))
        })
        .map(|(_, v)| v)
        .sum()
}

#[test]
fn metrics_exist_and_move_with_work() {
    let c = Cluster::start(Options::default());
    let leader = c.wait_leader(Duration::from_secs(10));
    let e = c.members[leader].endpoint();
    let before = scrape(&c, leader);
    for name in [
        "etcd_server_has_leader",
        "etcd_server_is_leader",
        "etcd_server_leader_changes_seen_total",
        "etcd_server_proposals_committed_total",
        "etcd_server_proposals_applied_total",
        "etcd_server_proposals_pending",
        "etcd_server_proposals_failed_total",
        "etcd_mvcc_db_total_size_in_bytes",
        "etcd_debugging_mvcc_current_revision",
        "etcd_disk_wal_fsync_duration_seconds_count",
        "etcd_disk_backend_commit_duration_seconds_count",
        "etcd_server_quota_backend_bytes",
    ] {
        get(&before, name);
    }
    assert_eq!(get(&before, "etcd_server_has_leader"), 1.0);
    assert_eq!(get(&before, "etcd_server_is_leader"), 1.0);
    assert!(get(&before, "etcd_server_leader_changes_seen_total") >= 1.0);
    assert!(get(&before, "etcd_mvcc_db_total_size_in_bytes") > 0.0);
    assert!(
        before
            .keys()
            .any(|k| k.starts_with("etcd_server_version{server_version=\"3.4."))
    );

    for i in 0..10 {
        let out = etcdctl(&e, &["put", &format!("k{i}"), "v"], None);
        assert!(out.status.success(), "{}", stderr(&out));
    }
    let out = etcdctl(&e, &["get", "k", "--prefix"], None);
    assert!(out.status.success(), "{}", stderr(&out));
    let put_ok = [
        "grpc_method=\"Put\"",
        "grpc_code=\"OK\"",
        "grpc_service=\"etcdserverpb.KV\"",
    ];

    let after = scrape(&c, leader);
    let grew = |name: &str, by: f64| {
        let (a, b) = (get(&before, name), get(&after, name));
        assert!(
            b - a >= by,
            "{name} moved from {a} to {b}, expected at least +{by}"
        );
    };
    grew("etcd_server_proposals_committed_total", 10.0);
    grew("etcd_server_proposals_applied_total", 10.0);
    grew("etcd_debugging_mvcc_current_revision", 10.0);
    grew("etcd_disk_wal_fsync_duration_seconds_count", 1.0);
    grew("etcd_disk_backend_commit_duration_seconds_count", 1.0);
    let puts = sum(&after, "grpc_server_handled_total", &put_ok)
        - sum(&before, "grpc_server_handled_total", &put_ok);
    assert_eq!(puts, 10.0, "grpc_server_handled_total for Put");
    assert!(
        sum(
            &after,
            "grpc_server_started_total",
            &["grpc_method=\"Range\""]
        ) >= 1.0
    );

    // Peers are probed on their own: round-trip times appear per peer.
    let rtt = eventually(Duration::from_secs(10), || {
        let m = scrape(&c, leader);
        (sum(&m, "etcd_network_peer_round_trip_time_seconds_count", &[]) >= 2.0).then_some(())
    });
    assert!(rtt.is_some(), "no peer round-trip samples");
    // A follower's view agrees on the leader.
    let follower = (leader + 1) % 3;
    let f = scrape(&c, follower);
    assert_eq!(get(&f, "etcd_server_has_leader"), 1.0);
    assert_eq!(get(&f, "etcd_server_is_leader"), 0.0);
}

/// Every metric the etcd-mixin's alerts and recording rules and etcd's
/// Grafana dashboards (etcd 3.4's `Documentation/op-guide/grafana.json`,
/// `contrib/mixin`) read, with the labels they select or group by. Names
/// the mixin reads that etcd 3.4 itself never exports (the etcd 2
/// `etcd_http_*` family) are left out.
const MIXIN_SERIES: &[(&str, &[&str])] = &[
    ("etcd_server_has_leader", &[]),
    ("etcd_server_leader_changes_seen_total", &[]),
    ("etcd_server_proposals_failed_total", &[]),
    ("etcd_server_proposals_pending", &[]),
    ("etcd_server_proposals_committed_total", &[]),
    ("etcd_server_proposals_applied_total", &[]),
    ("etcd_server_quota_backend_bytes", &[]),
    ("etcd_network_peer_sent_failures_total", &["To="]),
    (
        "etcd_network_peer_round_trip_time_seconds_bucket",
        &["To=", "le="],
    ),
    ("etcd_network_peer_sent_bytes_total", &["To="]),
    ("etcd_network_peer_received_bytes_total", &["From="]),
    ("etcd_network_client_grpc_sent_bytes_total", &[]),
    ("etcd_network_client_grpc_received_bytes_total", &[]),
    ("etcd_disk_wal_fsync_duration_seconds_bucket", &["le="]),
    ("etcd_disk_backend_commit_duration_seconds_bucket", &["le="]),
    ("etcd_mvcc_db_total_size_in_bytes", &[]),
    ("etcd_mvcc_db_total_size_in_use_in_bytes", &[]),
    ("etcd_debugging_mvcc_db_total_size_in_bytes", &[]),
    ("etcd_mvcc_put_total", &[]),
    ("etcd_mvcc_range_total", &[]),
    ("etcd_mvcc_txn_total", &[]),
    ("etcd_mvcc_delete_total", &[]),
    (
        "grpc_server_started_total",
        &["grpc_type=", "grpc_service=", "grpc_method="],
    ),
    (
        "grpc_server_handled_total",
        &["grpc_type=", "grpc_service=", "grpc_method=", "grpc_code="],
    ),
    (
        "grpc_server_handling_seconds_bucket",
        &["grpc_type=", "grpc_service=", "grpc_method=", "le="],
    ),
    ("process_resident_memory_bytes", &[]),
];

/// The names the etcd-mixin and etcd's dashboards use exist, with their
/// labels, on a three-member cluster run with `--metrics=extensive` after
/// a little traffic (peer series appear once peers talk, as in etcd); a
/// member stopped shows up in the others' sent failures ("members down").
#[test]
fn etcd_mixin_metrics_exist() {
    let mut c = Cluster::start(Options {
        extra_args: vec!["--metrics=extensive".into()],
        ..Options::default()
    });
    let e = c.members[0].endpoint();
    for args in [
        &["put", "k", "v"][..],
        &["get", "k"],
        &["txn"],
        &["del", "k"],
    ] {
        let out = if args == ["txn"] {
            cairn_tests::etcdctl_stdin(&e, args, None, Some("\nput a 1\nput b 2\n\n\n"))
        } else {
            etcdctl(&e, args, None)
        };
        assert!(out.status.success(), "{args:?}: {}", stderr(&out));
    }
    // Series of a label vector appear with their first label value: peer
    // round trips once the prober has measured one (etcd probes every few
    // seconds), sent failures once a send failed (below).
    let later = ["etcd_network_peer_sent_failures_total"];
    let missing = |m: &BTreeMap<String, f64>, skip: &[&str]| -> Vec<String> {
        MIXIN_SERIES
            .iter()
            .filter(|(name, _)| !skip.contains(name))
            .filter(|(name, labels)| {
                !m.keys().any(|k| {
                    (k == name || k.starts_with(&format!("{name}{{")))
                        && labels
                            .iter()
                            .all(|l| k.contains(&format!("{{{l}")) || k.contains(&format!(",{l}")))
                })
            })
            .map(|(name, labels)| format!("{name} {labels:?}"))
            .collect()
    };
    let m = eventually(Duration::from_secs(20), || {
        let m = scrape(&c, 0);
        missing(&m, &later).is_empty().then_some(m)
    })
    .unwrap_or_else(|| {
        let m = scrape(&c, 0);
        panic!(
            "missing series:\n{}\nhave:\n{}",
            missing(&m, &later).join("\n"),
            m.keys().cloned().collect::<Vec<_>>().join("\n")
        )
    });
    assert!(get(&m, "etcd_mvcc_put_total") >= 3.0);
    assert!(get(&m, "etcd_mvcc_txn_total") >= 1.0);
    assert!(
        sum(
            &m,
            "grpc_server_handling_seconds_count",
            &["grpc_method=\"Put\""]
        ) >= 1.0,
        "Put latency not observed"
    );
    assert_eq!(
        get(&m, "etcd_debugging_mvcc_db_total_size_in_bytes"),
        get(&m, "etcd_mvcc_db_total_size_in_bytes")
    );

    // Members down: the leader, which sends heartbeats to every peer,
    // counts what it cannot send to a stopped follower (a follower only
    // talks to the leader, in etcd as here).
    let leader = c.wait_leader(Duration::from_secs(10));
    let victim = (0..3).find(|&i| i != leader).expect("a follower");
    let down = c.members[victim].name.clone();
    c.stop(victim);
    let e = c.members[leader].endpoint();
    let out = etcdctl(&e, &["put", "after", "stop"], None);
    assert!(out.status.success(), "{}", stderr(&out));
    let failures = eventually(Duration::from_secs(20), || {
        let m = scrape(&c, leader);
        let n = sum(&m, "etcd_network_peer_sent_failures_total", &["To=\""]);
        (n > 0.0 && missing(&m, &[]).is_empty()).then_some(n)
    });
    assert!(
        failures.is_some(),
        "no sent failures counted to stopped {down}"
    );
}

/// Without `--metrics=extensive` there is no latency histogram, as in etcd.
#[test]
fn grpc_latency_histogram_only_when_extensive() {
    let c = Cluster::start(Options {
        members: 1,
        ..Options::default()
    });
    let out = etcdctl(&c.members[0].endpoint(), &["put", "k", "v"], None);
    assert!(out.status.success(), "{}", stderr(&out));
    let m = scrape(&c, 0);
    assert!(
        !m.keys()
            .any(|k| k.starts_with("grpc_server_handling_seconds")),
        "histogram exported at --metrics=basic"
    );
    assert!(get(&m, "etcd_network_client_grpc_received_bytes_total") > 0.0);
    assert!(get(&m, "etcd_network_client_grpc_sent_bytes_total") > 0.0);
}

/// `etcd_network_active_peers` and `etcd_network_disconnected_peers_total`
/// follow a follower's restart as another follower sees it. That one sends
/// nothing to its fellow follower until an election, so it must notice the
/// dead stream and reconnect on its own: Cairn used to find the stream dead
/// only when its next message, a vote request, was lost on it, and that
/// election then took a whole extra timeout.
#[test]
fn peer_links_follow_a_restart_and_idle_followers_reconnect() {
    let mut c = Cluster::start(Options::default());
    c.wait_healthy(Duration::from_secs(30));
    let leader = c.wait_leader(Duration::from_secs(10));
    let (restarted, watcher) = ((leader + 1) % 3, (leader + 2) % 3);
    let series = |name: &str| {
        format!(
            "{name}{{Local=\"{}\",Remote=\"{}\"}}",
            c.member_id_hex(watcher),
            c.member_id_hex(restarted)
        )
    };
    let active = series("etcd_network_active_peers");
    let disconnected = series("etcd_network_disconnected_peers_total");
    let value = |c: &Cluster, s: &str| scrape(c, watcher).get(s).copied();
    eventually(Duration::from_secs(10), || {
        (value(&c, &active) == Some(1.0)).then_some(())
    })
    .unwrap_or_else(|| panic!("{active} never 1: {:?}", value(&c, &active)));
    let before = value(&c, &disconnected).unwrap_or(0.0);

    c.kill(restarted);
    eventually(Duration::from_secs(10), || {
        (value(&c, &active) == Some(0.0)).then_some(())
    })
    .unwrap_or_else(|| panic!("the killed peer still counts as active: {active}"));
    assert!(
        value(&c, &disconnected).unwrap_or(0.0) > before,
        "{disconnected} did not count the loss"
    );

    // Nothing is written: the watcher has no reason to send to the
    // restarted member, and must reconnect anyway.
    c.restart(restarted);
    c.wait_healthy(Duration::from_secs(30));
    eventually(Duration::from_secs(10), || {
        (value(&c, &active) == Some(1.0)).then_some(())
    })
    .unwrap_or_else(|| {
        panic!(
            "the watcher never reconnected to the restarted member: {active} = {:?}",
            value(&c, &active)
        )
    });
}
