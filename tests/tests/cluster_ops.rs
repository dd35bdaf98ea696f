//! Day-to-day cluster checks: clock drift between members and the
//! cluster-wide etcdctl views (`endpoint status|health --cluster`).

use cairn_tests::clocks::Clocks;
use cairn_tests::{Cluster, Options, eventually, http_get, stderr, stdout};
use std::time::Duration;

/// The value of `metric{To="<peer>"}` in a member's /metrics.
fn peer_gauge(c: &Cluster, i: usize, metric: &str, peer: &str) -> Option<f64> {
    let (status, body) = http_get(&c.members[i].client_addr(), "/metrics").ok()?;
    assert_eq!(status, 200);
    let prefix = format!("{metric}{{To=\"{peer}\"}} ");
    body.lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .and_then(|v| v.trim().parse().ok())
}

#[test]
fn clock_drift_is_reported_by_peers() {
    let clocks = match Clocks::new(3, cairn_tests::target()) {
        Ok(c) => c,
        // etcd reads its clock where libfaketime cannot reach; Cairn must.
        Err(why) if cairn_tests::target() == cairn_tests::Target::Etcd => {
            eprintln!("skipped for etcd: {why}");
            return;
        }
        Err(why) => panic!("cannot give members their own clocks: {why}"),
    };
    let c = Cluster::start(Options {
        member_env: clocks.member_env(),
        ..Options::default()
    });
    // m3's wall clock jumps three seconds ahead while it runs.
    clocks.set(2, 3).expect("offset file");
    let t = Duration::from_secs(20);
    let ids: Vec<String> = (0..3).map(|i| c.member_id_hex(i)).collect();
    for i in 0..2 {
        let warned = eventually(t, || {
            let log = c.members[i].log();
            log.lines()
                .find(|l| {
                    l.contains(&format!(
                        "the clock difference against peer {} is too high",
                        ids[2]
                    ))
                })
                .map(str::to_string)
        })
        .unwrap_or_else(|| {
            panic!(
                "{} never warned about m3:\n{}",
                c.members[i].name,
                c.logs_tail(20)
            )
        });
        assert!(warned.contains("> 1s]"), "{warned}");
        let diff = peer_gauge(&c, i, "cairn_peer_clock_difference_seconds", &ids[2])
            .expect("clock metric");
        assert!(
            (2.5..3.5).contains(&diff),
            "measured {diff} s, expected about 3"
        );
        // The members whose clocks agree are not reported.
        let other = ids[1 - i].clone();
        assert!(
            !c.members[i]
                .log()
                .contains(&format!("against peer {other} is too high"))
        );
        let small = eventually(t, || {
            peer_gauge(&c, i, "cairn_peer_clock_difference_seconds", &other)
        })
        .expect("clock metric");
        assert!(small.abs() < 0.5, "{small}");
        // Round-trip times are measured on the way.
        let (_, body) = http_get(&c.members[i].client_addr(), "/metrics").expect("metrics");
        assert!(
            body.contains(&format!(
                "etcd_network_peer_round_trip_time_seconds_count{{To=\"{}\"}}",
                ids[2]
            )),
            "no rtt series"
        );
    }
    // And m3 sees the others three seconds behind.
    let seen = eventually(t, || {
        peer_gauge(&c, 2, "cairn_peer_clock_difference_seconds", &ids[0])
    });
    let diff = seen.expect("m3's clock metric");
    assert!((-3.5..-2.5).contains(&diff), "m3 measured {diff} s");

    // And back: the difference measured goes back to about zero.
    clocks.set(2, 0).expect("offset file");
    let back = eventually(t, || {
        peer_gauge(&c, 0, "cairn_peer_clock_difference_seconds", &ids[2]).filter(|d| d.abs() < 0.5)
    });
    assert!(
        back.is_some(),
        "m1 still measures m3 off after the jump back"
    );
    // Nothing was lost to either jump: every member still serves writes.
    for i in 0..3 {
        let out = c.etcdctl_at(&c.members[i].endpoint(), &["put", "after-jumps", "ok"]);
        assert!(out.status.success(), "{}", stderr(&out));
    }
}

#[test]
fn endpoint_status_and_health_across_the_cluster() {
    let c = Cluster::start(Options::default());
    let one = c.members[0].endpoint();
    // `--cluster` asks member list for the client URLs, then dials each.
    let out = c.etcdctl_at(&one, &["endpoint", "status", "--cluster", "-w", "json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    let rows = v.as_array().expect("array");
    assert_eq!(rows.len(), 3, "{v}");
    let leaders: Vec<u64> = rows
        .iter()
        .map(|r| r["Status"]["leader"].as_u64().unwrap_or(0))
        .collect();
    assert!(
        leaders[0] != 0 && leaders.iter().all(|l| *l == leaders[0]),
        "{leaders:?}"
    );
    for r in rows {
        let ep = r["Endpoint"].as_str().unwrap_or_default();
        assert!(c.members.iter().any(|m| ep == m.client_url()), "{ep}");
        assert!(r["Status"]["raftIndex"].as_u64().unwrap_or(0) > 0, "{r}");
        let version = r["Status"]["version"].as_str().unwrap_or_default();
        assert!(version.starts_with("3.4."), "{version}");
    }
    let out = c.etcdctl_at(&one, &["endpoint", "health", "--cluster"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out) + &stderr(&out);
    for m in &c.members {
        assert!(
            text.contains(&format!(
                "{} is healthy: successfully committed proposal",
                m.client_url()
            )),
            "{text}"
        );
    }
    // The table form too (what operators read).
    let out = c.etcdctl_at(&one, &["endpoint", "status", "--cluster", "-w", "table"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        stdout(&out).matches("http://").count(),
        3,
        "{}",
        stdout(&out)
    );
}
