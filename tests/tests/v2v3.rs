//! `--experimental-enable-v2v3`: the v2 API served from v3 keys under a
//! prefix, in etcd 3.4's layout. The first test runs against Cairn or (with
//! `CAIRN_TEST_TARGET=etcd`) etcd and checks what both do alike; the second
//! writes v2 keys with real etcd, hands its data dir to Cairn and reads
//! them back, so the layout is etcd's and not only self-consistent.

use cairn_tests::{
    Background, Cluster, Options, Target, etcdctl, eventually, ok, stderr, stdout, target,
};
use serde_json::Value;
use std::time::Duration;

const PREFIX_FLAG: &str = "--experimental-enable-v2v3=v2/";
const WAIT: Duration = Duration::from_secs(15);

fn v2(endpoint: &str, args: &[&str]) -> std::process::Output {
    etcdctl(endpoint, args, Some("2"))
}

/// Every v3 key under the prefix, in order.
fn v3_keys(endpoint: &str) -> Vec<String> {
    let out = ok(etcdctl(
        endpoint,
        &["get", "--prefix", "v2/", "--keys-only"],
        None,
    ));
    out.lines()
        .filter(|l| !l.is_empty())
        .map(str::to_string)
        .collect()
}

fn v3_revision(endpoint: &str) -> u64 {
    let out = ok(etcdctl(endpoint, &["get", "x", "-w", "json"], None));
    let v: Value = serde_json::from_str(&out).expect("get -w json");
    v["header"]["revision"].as_u64().expect("revision")
}

/// Starts the cluster and waits until every member answers a v3 read:
/// etcd's `/health` (what `Cluster::start` waits for) fails in this mode,
/// as its v2v3 server stubs out what health and `/v2/members` call.
fn start(opts: Options) -> Cluster {
    let c = Cluster::launch(opts);
    wait_serving(&c);
    c
}

fn wait_serving(c: &Cluster) {
    for m in &c.members {
        let e = m.endpoint();
        eventually(Duration::from_secs(60), || {
            etcdctl(&e, &["get", "x"], None)
                .status
                .success()
                .then_some(())
        })
        .unwrap_or_else(|| panic!("{e} never served a read:\n{}", c.logs_tail(40)));
    }
}

/// A v2 PUT with curl: (status, body).
fn curl_put(endpoint: &str, key: &str, form: &[&str]) -> (u16, String) {
    let mut cmd = std::process::Command::new("curl");
    cmd.args(["-s", "-m", "10", "-w", "\n%{http_code}", "-X", "PUT"]);
    for f in form {
        cmd.args(["-d", f]);
    }
    cmd.arg(format!("{endpoint}/v2/keys{key}"));
    let out = ok(cmd.output().expect("curl"));
    let (body, code) = out.trim_end().rsplit_once('\n').expect("status line");
    (code.parse().expect("status"), body.trim_end().to_string())
}

fn json(out: std::process::Output) -> Value {
    let text = ok(out);
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("bad JSON ({e}): {text}"))
}

#[test]
fn v2_requests_are_kept_in_v3_keys() {
    let c = start(Options {
        extra_args: vec![PREFIX_FLAG.into()],
        ..Options::default()
    });
    let e = c.members[0].endpoint();
    let other = c.members[1].endpoint();

    ok(v2(&e, &["set", "/foo", "bar"]));
    ok(v2(&e, &["set", "/a/b/c", "x"]));
    ok(v2(&e, &["mkdir", "/d"]));
    // Replicated like any v3 write: another member reads it.
    assert_eq!(ok(v2(&other, &["get", "/a/b/c"])).trim(), "x");
    assert_eq!(
        ok(v2(&other, &["ls", "--sort", "-r", "-p"])),
        "/a/\n/a/b/\n/a/b/c\n/d/\n/foo\n"
    );
    // etcd's layout: `<prefix>/<depth>/k/<store path>`, directories with a
    // trailing `/`, and the last action.
    assert_eq!(
        v3_keys(&e),
        [
            "v2//002/k//1/a/",
            "v2//002/k//1/d/",
            "v2//002/k//1/foo",
            "v2//003/k//1/a/b/",
            "v2//004/k//1/a/b/c",
            "v2//act",
        ]
    );
    // A v2 index is the v3 revision minus one.
    let set = json(v2(&e, &["-o", "json", "set", "/foo", "baz"]));
    assert_eq!(
        set["node"]["modifiedIndex"].as_u64().unwrap() + 1,
        v3_revision(&e)
    );
    assert_eq!(set["prevNode"]["value"], "bar");

    // Conditions and their errors, as the v2 API has them.
    let out = v2(&e, &["mk", "/foo", "again"]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("105: Key already exists (/foo)"),
        "{}",
        stderr(&out)
    );
    let out = v2(&e, &["set", "--swap-with-value", "wrong", "/foo", "v"]);
    assert!(
        stderr(&out).contains("101: Compare failed ([wrong != baz])"),
        "{}",
        stderr(&out)
    );
    ok(v2(&e, &["set", "--swap-with-value", "baz", "/foo", "qux"]));
    ok(v2(&e, &["update", "/foo", "quux"]));
    assert_eq!(ok(v2(&other, &["get", "/foo"])).trim(), "quux");
    let out = v2(&e, &["rm", "/a"]);
    assert!(
        stderr(&out).contains("102: Not a file (/a)"),
        "{}",
        stderr(&out)
    );
    let out = v2(&e, &["rm", "--dir", "/a"]);
    assert!(
        stderr(&out).contains("108: Directory not empty (/a)"),
        "{}",
        stderr(&out)
    );
    // etcd's emulation keeps no TTLs, and says so.
    let (status, body) = curl_put(&e, "/t", &["value=v", "ttl=30"]);
    assert_eq!(status, 500, "{body}");
    assert_eq!(
        body,
        r#"{"errorCode":300,"message":"Raft Internal Error","cause":"TTLs are unsupported","index":0}"#
    );

    // A watch hears the next write below it.
    let w = Background::etcdctl_v2(&e, &["watch", "-r", "/a"]);
    std::thread::sleep(Duration::from_millis(500));
    ok(v2(&other, &["set", "/a/b/new", "n"]));
    let (out, err, code) = w.finish(WAIT);
    assert_eq!(
        (out.trim(), code),
        ("[set] /a/b/new\nn", Some(0)),
        "stderr: {err}"
    );

    // A plain v3 write under the prefix is data too.
    ok(etcdctl(&e, &["put", "v2//002/k//1/from-v3", "hello"], None));
    assert_eq!(ok(v2(&other, &["get", "/from-v3"])).trim(), "hello");

    if target() == Target::Etcd {
        return;
    }
    // Where etcd's emulation departs from its own v2 API (it answers 102
    // for a missing key, drops the node of a deleted directory, which makes
    // etcdctl 3.4 crash, and replays the event at `--after-index`), Cairn
    // answers as the v2 API does.
    let out = v2(&e, &["update", "/nokey", "x"]);
    assert!(
        stderr(&out).contains("100: Key not found (/nokey)"),
        "{}",
        stderr(&out)
    );
    ok(v2(&e, &["rm", "-r", "/a/b"]));
    ok(v2(&e, &["rmdir", "/d"]));
    assert_eq!(
        ok(v2(&e, &["ls", "--sort", "-r", "-p"])),
        "/a/\n/foo\n/from-v3\n"
    );
    let set = json(v2(&e, &["-o", "json", "set", "/w", "one"]));
    let first = set["node"]["modifiedIndex"].as_u64().unwrap();
    ok(v2(&e, &["set", "/w", "two"]));
    let after = first.to_string();
    let w = Background::etcdctl_v2(&e, &["watch", "--after-index", &after, "/w"]);
    let (out, err, code) = w.finish(WAIT);
    assert_eq!((out.trim(), code), ("two", Some(0)), "stderr: {err}");
    // In-order keys are named by their index, like the v2 store's.
    let created = json(v2(&e, &["-o", "json", "mk", "--in-order", "/q", "job"]));
    let key = created["node"]["key"].as_str().unwrap().to_string();
    let index = created["node"]["createdIndex"].as_u64().unwrap();
    assert_eq!(key, format!("/q/{index:020}"), "{created}");
    assert_eq!(ok(v2(&other, &["get", &key])).trim(), "job");

    // Writers racing on one directory: each write re-reads and retries
    // when another got there first, so all land, each under its own name.
    let names: Vec<String> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..8)
            .map(|i| {
                let ep = c.members[i % 3].endpoint();
                s.spawn(move || {
                    let v = json(v2(&ep, &["-o", "json", "mk", "--in-order", "/race", "x"]));
                    v["node"]["key"].as_str().unwrap().to_string()
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let mut unique = names.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), 8, "{names:?}");
    assert_eq!(
        ok(v2(&e, &["ls", "--sort", "/race"]))
            .lines()
            .collect::<Vec<_>>(),
        unique
    );

    // Under v3 auth the v2 API takes root's credentials, and its v3 writes
    // run as root (anyone else is refused before reaching the keys).
    ok(etcdctl(&e, &["user", "add", "root:rootpw"], None));
    ok(etcdctl(&e, &["auth", "enable"], None));
    let out = v2(&e, &["set", "/locked", "no"]);
    assert!(!out.status.success(), "{}", stdout(&out));
    ok(v2(
        &e,
        &["--username", "root:rootpw", "set", "/locked", "yes"],
    ));
    let out = ok(etcdctl(
        &e,
        &[
            "--user",
            "root:rootpw",
            "get",
            "v2//002/k//1/locked",
            "--print-value-only",
        ],
        None,
    ));
    assert_eq!(out.trim(), "yes");
}

/// etcd 3.4 writes v2 keys in v2v3 mode; Cairn, started on its data dir
/// with the same flag, serves them with the same values and indexes.
#[test]
fn etcds_v2v3_keys_are_served_by_cairn() {
    let mut c = start(Options {
        members: 1,
        extra_args: vec![PREFIX_FLAG.into()],
        target: Some(Target::Etcd),
        ..Options::default()
    });
    let e = c.members[0].endpoint();
    ok(v2(&e, &["set", "/app/config", "{\"replicas\":3}"]));
    ok(v2(&e, &["mkdir", "/app/empty"]));
    ok(v2(&e, &["set", "/top", "t"]));
    ok(v2(&e, &["update", "/top", "t2"]));
    let before = json(v2(&e, &["-o", "json", "get", "/app/config"]));
    let listing = ok(v2(&e, &["ls", "--sort", "-r", "-p"]));
    let keys = v3_keys(&e);
    c.stop(0);

    c.opts.target = Some(Target::Cairn);
    c.restart(0);
    wait_serving(&c);
    let e = c.members[0].endpoint();
    assert_eq!(json(v2(&e, &["-o", "json", "get", "/app/config"])), before);
    assert_eq!(ok(v2(&e, &["ls", "--sort", "-r", "-p"])), listing);
    assert_eq!(ok(v2(&e, &["get", "/top"])).trim(), "t2");
    // And what Cairn writes lands where etcd would put it.
    ok(v2(&e, &["set", "/app/new", "n"]));
    let mut want = keys.clone();
    want.push("v2//003/k//1/app/new".into());
    want.sort();
    assert_eq!(v3_keys(&e), want);
    let out = stdout(&v2(&e, &["get", "/app/new"]));
    assert_eq!(out.trim(), "n");
}
