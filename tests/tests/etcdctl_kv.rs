//! The real etcdctl 3.4 against a three-member cluster: every KV command of
//! the core issue, simple and JSON output, compared with what etcd 3.4.23
//! prints for the same script (see `cairn_tests::golden`).

use cairn_tests::golden::Transcript;
use cairn_tests::{Cluster, Options};

fn hosts(test: u8) -> Option<Vec<String>> {
    Some((1..=3).map(|i| format!("127.77.{test}.{i}")).collect())
}

#[test]
fn put_get_del_match_etcd() {
    let c = Cluster::start(Options {
        hosts: hosts(1),
        ..Options::default()
    });
    // One endpoint, so the member answering (and its ID in headers) is fixed.
    let e = c.members[0].endpoint();
    let mut t = Transcript::new(&c);
    t.run(&e, &["put", "foo", "bar"]);
    t.run(&e, &["put", "foo2", "bar2", "-w", "json"]);
    for (k, v) in [("foo/a", "1"), ("foo/b", "2"), ("foo/c", "3"), ("zoo", "4")] {
        t.run(&e, &["put", k, v]);
    }
    t.run(&e, &["put", "foo", "bar-v2", "--prev-kv"]);
    t.run(&e, &["put", "foo/b", "22", "--prev-kv", "-w", "json"]);
    t.run(&e, &["get", "foo"]);
    t.run(&e, &["get", "foo", "-w", "json"]);
    t.run(&e, &["get", "foo", "--prefix"]);
    t.run(&e, &["get", "foo", "--prefix", "-w", "json"]);
    t.run(&e, &["get", "foo/b", "--from-key"]);
    t.run(&e, &["get", "foo", "zoo"]);
    t.run(&e, &["get", "foo", "--rev=2"]);
    t.run(&e, &["get", "foo", "--rev=2", "-w", "json"]);
    t.run(&e, &["get", "", "--prefix", "--limit=2"]);
    t.run(&e, &["get", "", "--prefix", "--limit=2", "-w", "json"]);
    t.run(&e, &["get", "foo", "--prefix", "--keys-only"]);
    t.run(&e, &["get", "foo", "--prefix", "--keys-only", "-w", "json"]);
    t.run(
        &e,
        &[
            "get",
            "foo",
            "--prefix",
            "--sort-by=MODIFY",
            "--order=DESCEND",
        ],
    );
    t.run(
        &e,
        &[
            "get",
            "foo",
            "--prefix",
            "--sort-by=VALUE",
            "--order=ASCEND",
            "-w",
            "json",
        ],
    );
    t.run(
        &e,
        &[
            "get",
            "foo",
            "--prefix",
            "--sort-by=CREATE",
            "--order=DESCEND",
            "--limit=2",
        ],
    );
    t.run(&e, &["get", "foo", "--prefix", "--sort-by=VERSION"]);
    t.run(
        &e,
        &[
            "get",
            "foo",
            "--prefix",
            "--sort-by=KEY",
            "--order=DESCEND",
            "-w",
            "json",
        ],
    );
    t.run(&e, &["get", "missing"]);
    t.run(&e, &["get", "missing", "-w", "json"]);
    t.run(&e, &["get", "foo", "--rev=100"]);
    t.run(&e, &["get", "foo", "--consistency=s"]);
    t.run(&e, &["del", "foo/a"]);
    t.run(&e, &["del", "foo/", "--prefix", "--prev-kv"]);
    t.run(&e, &["del", "missing"]);
    t.run(&e, &["del", "foo2", "-w", "json"]);
    t.run(&e, &["del", "a", "--from-key", "--prev-kv", "-w", "json"]);
    t.run(&e, &["get", "", "--prefix"]);
    t.check("put_get_del");
}

#[test]
fn txn_compaction_status_and_members_match_etcd() {
    let c = Cluster::start(Options {
        hosts: hosts(2),
        ..Options::default()
    });
    // One endpoint, so the member answering (and its ID in headers) is fixed.
    let e = c.members[0].endpoint();
    let mut t = Transcript::new(&c);
    t.run(&e, &["put", "foo", "bar"]);
    t.run(&e, &["put", "counter", "1"]);
    // Interactive txn, success branch.
    t.run_with_input(
        &e,
        &["txn", "-i"],
        Some("value(\"foo\") = \"bar\"\n\nput foo bar2\nget counter\n\nput foo nope\n\n"),
    );
    // Failure branch.
    t.run_with_input(
        &e,
        &["txn", "-i"],
        Some("mod(\"foo\") > \"100\"\n\nput foo never\n\nget foo\nput counter 2\n\n"),
    );
    t.run_with_input(
        &e,
        &["txn", "-i", "-w", "json"],
        Some("version(\"counter\") = \"2\"\ncreate(\"foo\") > \"0\"\n\ndel counter\n\nput x y\n\n"),
    );
    // Non-interactive txn from stdin.
    t.run_with_input(
        &e,
        &["txn"],
        Some("value(\"missing\") = \"x\"\n\nput a b\n\nget foo --prefix\n\n"),
    );
    for i in 0..5 {
        t.run(&e, &["put", "churn", &i.to_string()]);
    }
    t.run(&e, &["get", "churn", "--rev=6", "-w", "json"]);
    t.run(&e, &["compaction", "7"]);
    t.run(&e, &["get", "churn", "--rev=6"]);
    t.run(&e, &["get", "churn", "--rev=7"]);
    t.run(&e, &["compaction", "5"]);
    t.run(&e, &["compaction", "100"]);
    t.run(&e, &["compaction", "--physical", "9"]);
    t.run(&e, &["get", "churn", "-w", "json"]);
    t.run(&e, &["member", "list"]);
    t.run(&e, &["member", "list", "-w", "json"]);
    t.run(&e, &["member", "list", "-w", "table"]);
    let first = c.members[0].endpoint();
    t.run(&first, &["endpoint", "status", "-w", "table"]);
    t.run(&first, &["endpoint", "status", "-w", "json"]);
    t.run(&first, &["endpoint", "health"]);
    t.check("txn_compaction_status_members");
}
