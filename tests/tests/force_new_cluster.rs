//! `--force-new-cluster`: after losing a quorum for good, one surviving
//! member restarts as a one-member cluster with the data it has.

use cairn_tests::*;
use std::time::Duration;

#[test]
fn force_new_cluster_restarts_a_survivor_alone_with_its_data() {
    let mut c = Cluster::start(Options::default());
    for i in 0..3 {
        ok(c.etcdctl(&["put", &format!("k{i}"), &format!("v{i}")]));
    }
    let members = ok(c.etcdctl(&["member", "list"]));
    assert_eq!(members.lines().count(), 3, "{members}");

    // Two members are lost for good; the survivor is stopped.
    c.kill(1);
    c.kill(2);
    c.stop(0);

    c.restart_with(0, &["--force-new-cluster"]);
    c.wait_healthy(Duration::from_secs(30));
    let at = c.members[0].endpoint();
    let members = ok(c.etcdctl_at(&at, &["member", "list"]));
    assert_eq!(members.lines().count(), 1, "{members}");
    assert!(
        members.contains(", started, m1, "),
        "the survivor keeps its name and URLs: {members}"
    );
    // The data is there, and the one member is a quorum.
    for i in 0..3 {
        let out = ok(c.etcdctl_at(&at, &["get", &format!("k{i}"), "--print-value-only"]));
        assert_eq!(out, format!("v{i}\n"));
    }
    ok(c.etcdctl_at(&at, &["put", "k3", "v3"]));

    // A normal restart afterwards stays a one-member cluster.
    c.stop(0);
    c.restart(0);
    c.wait_healthy(Duration::from_secs(30));
    let members = ok(c.etcdctl_at(&at, &["member", "list"]));
    assert_eq!(members.lines().count(), 1, "{members}");
    let out = ok(c.etcdctl_at(&at, &["get", "k3", "--print-value-only"]));
    assert_eq!(out, "v3\n");
}
