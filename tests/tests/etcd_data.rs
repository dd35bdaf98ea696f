//! etcd's data, both ways, against the real etcd 3.4.23 and etcdctl: an
//! etcd snapshot restored into a Cairn cluster, a Cairn snapshot restored
//! into real etcd, a stopped etcd cluster swapped for Cairn in place, and
//! damaged etcd files refused with a clear error that changes nothing.
//!
//! Every test starts real etcd processes (`/usr/bin/etcd`, whatever
//! `CAIRN_TEST_TARGET` says) next to Cairn's.

use cairn_tests::{
    Background, Cluster, Options, Target, cairn_bin, client, etcdctl, eventually, ok, runtime,
    stderr, stdout, wait_output,
};
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

const ROOT: &str = "--user=root:rootpw";
/// Keys under this prefix belong to the short lease and vanish with it.
const SHORT: &str = "/short/";
/// Short enough to run out during a test, long enough to outlive the
/// snapshot taken right after it was granted.
const SHORT_TTL_SECS: i64 = 20;
const LONG_TTL_SECS: i64 = 600;

fn json(out: Output) -> Value {
    let text = ok(out);
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("bad JSON ({e}): {text}"))
}

fn etcd_options(members: usize) -> Options {
    Options {
        members,
        target: Some(Target::Etcd),
        ..Options::default()
    }
}

/// What `write_history` left behind.
#[derive(Debug, Clone, Copy)]
struct History {
    compacted: i64,
    short_lease: i64,
    long_lease: i64,
}

/// Keys over many revisions, a txn, deletes (single and range), a
/// physical compaction, then more history; a long and a short lease with
/// keys; users and roles, then auth on. The same on etcd and on Cairn.
fn write_history(c: &Cluster, short_ttl_secs: i64) -> History {
    let h = runtime().block_on(async {
        let mut cl = client(&c.endpoint_list()).await;
        let long = cl.lease_grant(LONG_TTL_SECS, None).await.unwrap().id();
        for i in 0..60 {
            let opts = (i % 10 == 0).then(|| etcd_client::PutOptions::new().with_lease(long));
            cl.put(
                format!("/registry/pods/p{:02}", i % 15),
                format!("v{i}"),
                opts,
            )
            .await
            .unwrap();
        }
        cl.txn(etcd_client::Txn::new().and_then(vec![
            etcd_client::TxnOp::put("/registry/a", "1", None),
            etcd_client::TxnOp::put("/registry/b", "2", None),
            etcd_client::TxnOp::delete("/registry/pods/p03", None),
        ]))
        .await
        .unwrap();
        for i in 0..5 {
            cl.put(format!("/registry/tmp/{i}"), "t", None)
                .await
                .unwrap();
        }
        cl.delete(
            "/registry/tmp/",
            Some(etcd_client::DeleteOptions::new().with_prefix()),
        )
        .await
        .unwrap();
        let rev = cl
            .get("/", None)
            .await
            .unwrap()
            .header()
            .unwrap()
            .revision();
        let compacted = rev - 20;
        cl.compact(
            compacted,
            Some(etcd_client::CompactionOptions::new().with_physical()),
        )
        .await
        .unwrap();
        for i in 0..20 {
            cl.put(
                format!("/registry/pods/p{:02}", i % 7),
                format!("w{i}"),
                None,
            )
            .await
            .unwrap();
        }
        cl.delete("/registry/pods/p05", None).await.unwrap();
        let short = cl.lease_grant(short_ttl_secs, None).await.unwrap().id();
        cl.put(
            format!("{SHORT}key"),
            "gone soon",
            Some(etcd_client::PutOptions::new().with_lease(short)),
        )
        .await
        .unwrap();
        History {
            compacted,
            short_lease: short,
            long_lease: long,
        }
    });
    for args in [
        vec!["user", "add", "root:rootpw"],
        vec!["role", "add", "reader"],
        vec![
            "role",
            "grant-permission",
            "reader",
            "read",
            "/registry/pods/",
            "--prefix",
        ],
        vec!["user", "add", "alice:alicepw"],
        vec!["user", "grant-role", "alice", "reader"],
        vec!["auth", "enable"],
    ] {
        ok(c.etcdctl(&args));
    }
    h
}

/// `get "" --from-key` as root: (header revision, kvs).
fn everything(c: &Cluster, endpoint: &str, at_rev: Option<i64>) -> (i64, Value) {
    let mut args = vec![ROOT, "get", "", "--from-key", "-w", "json"];
    let rev = at_rev.map(|r| r.to_string());
    if let Some(r) = &rev {
        args.extend(["--rev", r]);
    }
    let v = json(c.etcdctl_at(endpoint, &args));
    (
        v["header"]["revision"].as_i64().expect("revision"),
        v["kvs"].clone(),
    )
}

/// Every event from `from` to `to` (revisions), as `etcdctl watch --rev
/// -w json` prints them.
fn watch_events(endpoint: &str, from: i64, to: i64) -> Vec<Value> {
    let from = from.to_string();
    let w = Background::etcdctl(
        endpoint,
        &[ROOT, "watch", "--rev", &from, "", "--prefix", "-w", "json"],
    );
    let parse = |text: &str| -> Vec<Value> {
        text.lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .flat_map(|v| v["Events"].as_array().cloned().unwrap_or_default())
            .collect()
    };
    let reached = |text: &str| {
        parse(text)
            .last()
            .and_then(|e| e["kv"]["mod_revision"].as_i64())
            .is_some_and(|r| r >= to)
    };
    let done = w.wait_for(Duration::from_secs(20), reached);
    let (out, err) = w.kill();
    assert!(done, "watch from {from} never reached {to}: {out}\n{err}");
    parse(&out)
        .into_iter()
        .filter(|e| e["kv"]["mod_revision"].as_i64().is_some_and(|r| r <= to))
        .collect()
}

fn without_short(kvs: &Value) -> Vec<Value> {
    // "/short" is 6 bytes: its base64 is a prefix of every key's under it.
    let short = base64_of(SHORT.trim_end_matches('/'));
    kvs.as_array()
        .expect("kvs")
        .iter()
        .filter(|kv| !kv["key"].as_str().unwrap_or("").starts_with(&short))
        .cloned()
        .collect()
}

/// Standard base64 of `s` (etcdctl's JSON encodes keys and values so).
fn base64_of(s: &str) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let b = s.as_bytes();
    let mut out = String::new();
    for chunk in b.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, &c)| n | (u32::from(c) << (16 - 8 * i)));
        for i in 0..=chunk.len() {
            out.push(T[(n >> (18 - 6 * i) & 63) as usize] as char);
        }
        for _ in chunk.len()..3 {
            out.push('=');
        }
    }
    out
}

/// `lease timetolive --keys` as root: (granted TTL, keys).
fn lease_ttl(c: &Cluster, endpoint: &str, id: i64) -> (i64, Vec<String>) {
    let hex = format!("{id:x}");
    let v = json(c.etcdctl_at(
        endpoint,
        &[ROOT, "lease", "timetolive", &hex, "--keys", "-w", "json"],
    ));
    let keys = v["keys"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|k| k.as_str().unwrap_or("").to_string())
                .collect()
        })
        .unwrap_or_default();
    (v["grantedTTL"].as_i64().unwrap_or(-1), keys)
}

/// The auth state as etcdctl shows it: users with roles, role permissions.
fn auth_state(c: &Cluster, endpoint: &str) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for u in ["root", "alice"] {
        out.insert(
            format!("user {u}"),
            ok(c.etcdctl_at(endpoint, &[ROOT, "user", "get", u])),
        );
    }
    out.insert(
        "role reader".into(),
        ok(c.etcdctl_at(endpoint, &[ROOT, "role", "get", "reader"])),
    );
    out.insert(
        "users".into(),
        ok(c.etcdctl_at(endpoint, &[ROOT, "user", "list"])),
    );
    out
}

/// Auth still holds: no user is refused, alice reads her prefix and
/// nothing else, and cannot write.
fn check_auth_holds(c: &Cluster, endpoint: &str) {
    let out = c.etcdctl_at(endpoint, &["get", "/registry/a"]);
    assert!(stderr(&out).contains("user name is empty"), "{out:?}");
    let alice = "--user=alice:alicepw";
    let v = json(c.etcdctl_at(
        endpoint,
        &[alice, "get", "/registry/pods/", "--prefix", "-w", "json"],
    ));
    assert!(v["count"].as_i64().unwrap_or(0) > 0, "{v}");
    let out = c.etcdctl_at(endpoint, &[alice, "get", "/registry/a"]);
    assert!(stderr(&out).contains("permission denied"), "{out:?}");
    let out = c.etcdctl_at(endpoint, &[alice, "put", "/registry/pods/x", "1"]);
    assert!(stderr(&out).contains("permission denied"), "{out:?}");
}

fn run(cmd: &mut Command) -> Output {
    let child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    wait_output(child, Duration::from_secs(120))
}

/// The restore flags etcdctl and cairn share, for member `i` of `c`.
fn restore_flags(c: &Cluster, i: usize) -> Vec<String> {
    let m = &c.members[i];
    let initial_cluster = c
        .members
        .iter()
        .map(|m| format!("{}={}", m.name, m.peer_url()))
        .collect::<Vec<_>>()
        .join(",");
    vec![
        format!("--data-dir={}", m.data_dir.display()),
        format!("--name={}", m.name),
        format!("--initial-cluster={initial_cluster}"),
        format!("--initial-cluster-token={}", c.opts.token),
        format!("--initial-advertise-peer-urls={}", m.peer_url()),
    ]
}

fn cairn_restore(c: &Cluster, i: usize, file: &Path, extra: &[&str]) -> Output {
    run(Command::new(cairn_bin())
        .args(["snapshot", "restore"])
        .arg(file)
        .args(restore_flags(c, i))
        .args(extra))
}

fn etcdctl_restore(c: &Cluster, i: usize, file: &Path) -> Output {
    let mut args = vec!["snapshot".to_string(), "restore".into(), path(file)];
    args.extend(restore_flags(c, i));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    etcdctl("127.0.0.1:1", &args, None)
}

fn path(p: &Path) -> String {
    p.display().to_string()
}

/// `snapshot status -w json` by etcdctl (or cairn).
fn snapshot_status(file: &Path, with_cairn: bool) -> Value {
    let out = if with_cairn {
        run(Command::new(cairn_bin())
            .args(["snapshot", "status"])
            .arg(file)
            .args(["-w", "json"]))
    } else {
        etcdctl(
            "127.0.0.1:1",
            &["snapshot", "status", &path(file), "-w", "json"],
            None,
        )
    };
    json(out)
}

/// Launches `c`'s processes on data dirs prepared by `prepare` (member
/// index → data dir filled): stops them, empties the dirs, prepares, and
/// starts them again with the same flags.
fn relaunch_on(c: &mut Cluster, mut prepare: impl FnMut(&Cluster, usize)) {
    for i in 0..c.members.len() {
        c.kill(i);
    }
    for i in 0..c.members.len() {
        let dir = c.members[i].data_dir.clone();
        if dir.exists() {
            std::fs::remove_dir_all(&dir).expect("remove data dir");
        }
        prepare(c, i);
    }
    for i in 0..c.members.len() {
        c.restart(i);
    }
    c.wait_healthy(Duration::from_secs(60));
}

/// etcd → Cairn: a real etcd's snapshot (and its stopped member's
/// `member/snap/db`) restored with `cairn snapshot restore` into a
/// three-member Cairn cluster that serves the same keys with the same
/// revisions, replays the same watch events, expires the same leases and
/// enforces the same auth; and the dir `etcdctl snapshot restore` writes,
/// started as Cairn.
#[test]
fn etcd_snapshot_restored_into_a_cairn_cluster() {
    let mut e = Cluster::start(etcd_options(1));
    let h = write_history(&e, SHORT_TTL_SECS);
    let ep = e.members[0].endpoint();
    let (rev, kvs) = everything(&e, &ep, None);
    let events = watch_events(&ep, h.compacted + 1, rev);
    assert!(events.len() > 20, "{events:?}");
    let auth = auth_state(&e, &ep);
    let long = lease_ttl(&e, &ep, h.long_lease);
    let file = e.dir.path().join("etcd.db");
    ok(e.etcdctl(&[ROOT, "snapshot", "save", &path(&file)]));
    e.stop(0);
    let raw_db = e.members[0].data_dir.join("member/snap/db");

    // cairn snapshot status reads etcd's file as etcdctl does.
    assert_eq!(snapshot_status(&file, true), snapshot_status(&file, false));
    // A raw member/snap/db has no trailer: etcdctl's rule.
    let mut probe = Cluster::launch(Options::default());
    probe.kill(0);
    let out = cairn_restore(&probe, 0, &raw_db, &[]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("snapshot missing hash but --skip-hash-check=false"),
        "{}",
        stderr(&out)
    );
    drop(probe);

    let mut c = Cluster::launch(Options::default());
    relaunch_on(&mut c, |c, i| {
        let out = if i == 2 {
            cairn_restore(c, i, &raw_db, &["--skip-hash-check"])
        } else {
            cairn_restore(c, i, &file, &[])
        };
        assert!(out.status.success(), "{}\n{}", stdout(&out), stderr(&out));
    });
    for m in 0..3 {
        let at = c.members[m].endpoint();
        // At etcd's revision: every key, value and revision identical.
        let (_, got) = everything(&c, &at, Some(rev));
        assert_eq!(got, kvs, "member {m}");
    }
    let at = c.members[1].endpoint();
    let (now, got) = everything(&c, &at, None);
    assert!(now >= rev);
    assert_eq!(without_short(&got), without_short(&kvs));
    assert_eq!(watch_events(&at, h.compacted + 1, rev), events);
    let out = c.etcdctl(&[
        ROOT,
        "get",
        "/registry/a",
        "--rev",
        &(h.compacted - 1).to_string(),
    ]);
    assert!(
        stderr(&out).contains("required revision has been compacted"),
        "{out:?}"
    );
    assert_eq!(auth_state(&c, &at), auth);
    check_auth_holds(&c, &at);
    assert_eq!(lease_ttl(&c, &at, h.long_lease), long);
    // The short lease still runs out, and takes its key along.
    let gone = eventually(Duration::from_secs(SHORT_TTL_SECS as u64 + 30), || {
        let v = json(c.etcdctl(&[ROOT, "get", SHORT, "--prefix", "-w", "json"]));
        (v["count"].as_i64().unwrap_or(0) == 0).then_some(())
    });
    assert!(gone.is_some(), "the short lease never expired");
    let leases = ok(c.etcdctl(&[ROOT, "lease", "list"]));
    assert!(
        !leases.contains(&format!("{:x}", h.short_lease)),
        "{leases}"
    );
    assert!(leases.contains(&format!("{:x}", h.long_lease)), "{leases}");
    // New writes continue the revisions.
    ok(c.etcdctl(&[ROOT, "put", "/after", "1"]));
    let v = json(c.etcdctl(&[ROOT, "get", "/after", "-w", "json"]));
    assert!(v["kvs"][0]["mod_revision"].as_i64().unwrap() > rev);
    drop(c);

    // The dir etcdctl snapshot restore writes, started as a Cairn member.
    let mut r = Cluster::launch(Options {
        members: 1,
        ..Options::default()
    });
    relaunch_on(&mut r, |r, i| {
        let out = etcdctl_restore(r, i, &file);
        assert!(out.status.success(), "{}", stderr(&out));
    });
    let at = r.members[0].endpoint();
    assert_eq!(everything(&r, &at, Some(rev)).1, kvs);
    check_auth_holds(&r, &at);
    let log = r.members[0].log();
    assert!(log.contains("imported the etcd data dir"), "{log}");
}

/// Cairn → etcd: `etcdctl snapshot save` against a Cairn cluster (and
/// `cairn snapshot save`) gives a file `etcdctl snapshot status` reads
/// with the right revision, and that real etcd, after `etcdctl snapshot
/// restore`, serves identically: keys, revisions, leases with their TTLs,
/// users, roles, permissions, compaction.
#[test]
fn cairn_snapshot_restored_into_real_etcd() {
    let mut c = Cluster::start(Options::default());
    // Here the short lease must outlive the test.
    let h = write_history(&c, LONG_TTL_SECS);
    let ep = c.members[0].endpoint();
    let (rev, kvs) = everything(&c, &ep, None);
    let events = watch_events(&ep, h.compacted + 1, rev);
    let auth = auth_state(&c, &ep);
    let long = lease_ttl(&c, &ep, h.long_lease);
    let short = lease_ttl(&c, &ep, h.short_lease);
    // Files outlive the cluster (its folder goes with it).
    let work = tempfile::tempdir().unwrap();
    let file = work.path().join("cairn.db");
    ok(c.etcdctl_at(
        &c.members[1].endpoint(),
        &[ROOT, "snapshot", "save", &path(&file)],
    ));
    let st = snapshot_status(&file, false);
    assert_eq!(st["revision"].as_i64(), Some(rev), "{st}");
    assert_eq!(snapshot_status(&file, true), st, "cairn and etcdctl agree");
    let size = std::fs::metadata(&file).unwrap().len();
    assert_eq!(st["totalSize"].as_u64(), Some(size - 32));
    // cairn snapshot save, online and from a stopped member's data dir.
    let online = work.path().join("online.db");
    let out = run(Command::new(cairn_bin()).args([
        "snapshot",
        "save",
        &path(&online),
        "--endpoints",
        &ep,
        ROOT,
    ]));
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(snapshot_status(&online, false)["revision"], st["revision"]);
    c.stop(2);
    let offline = work.path().join("offline.db");
    let out = run(Command::new(cairn_bin())
        .args(["snapshot", "save", &path(&offline), "--data-dir"])
        .arg(&c.members[2].data_dir));
    assert!(out.status.success(), "{}", stderr(&out));
    let off = snapshot_status(&offline, false);
    assert_eq!(off["revision"], st["revision"]);
    assert_eq!(off["totalKey"], st["totalKey"]);
    drop(c);

    let mut e = Cluster::launch(etcd_options(1));
    relaunch_on(&mut e, |e, i| {
        let out = etcdctl_restore(e, i, &file);
        assert!(out.status.success(), "{}", stderr(&out));
    });
    let at = e.members[0].endpoint();
    let (erev, ekvs) = everything(&e, &at, None);
    assert_eq!(erev, rev);
    assert_eq!(ekvs, kvs, "real etcd serves what Cairn served");
    assert_eq!(watch_events(&at, h.compacted + 1, rev), events);
    let out = e.etcdctl(&[
        ROOT,
        "get",
        "/registry/a",
        "--rev",
        &(h.compacted - 1).to_string(),
    ]);
    assert!(
        stderr(&out).contains("required revision has been compacted"),
        "{out:?}"
    );
    assert_eq!(auth_state(&e, &at), auth);
    check_auth_holds(&e, &at);
    assert_eq!(lease_ttl(&e, &at, h.long_lease), long);
    assert_eq!(lease_ttl(&e, &at, h.short_lease).1, short.1);
}

/// Recursively: relative path → bytes.
fn read_tree(root: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut out = BTreeMap::new();
    let mut todo = vec![root.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d).expect("read dir").flatten() {
            let p = e.path();
            if p.is_dir() {
                todo.push(p);
            } else {
                let rel = p.strip_prefix(root).expect("prefix").to_path_buf();
                out.insert(rel, std::fs::read(&p).expect("read"));
            }
        }
    }
    out
}

fn member_list(c: &Cluster) -> Vec<Value> {
    let v = json(c.etcdctl(&["member", "list", "-w", "json"]));
    let mut m = v["members"].as_array().expect("members").clone();
    m.sort_by_key(|m| m["ID"].as_u64());
    m
}

/// A stopped three-member etcd cluster started again as Cairn, member by
/// member on the same data dirs and flags: same member and cluster IDs,
/// same peers, same data (v2 keys too), etcd's files kept unchanged in the
/// backup folder the log names.
#[test]
fn stopped_etcd_cluster_swapped_for_cairn_in_place() {
    let mut c = Cluster::start(Options {
        snapshot_count: Some(50),
        ..etcd_options(3)
    });
    let endpoints = c.endpoints();
    let v2 = |args: &[&str]| etcdctl(&endpoints, args, Some("2"));
    ok(v2(&["set", "/v2/before-snapshot", "one"]));
    ok(v2(&["mkdir", "/v2/dir"]));
    let _ = write_history_without_auth(&c);
    ok(v2(&["set", "/v2/dir/after-snapshot", "two"]));
    let ep = c.members[0].endpoint();
    let before = json(c.etcdctl(&["get", "", "--from-key", "-w", "json"]));
    let members = member_list(&c);
    let file = c.dir.path().join("etcd.db");
    ok(c.etcdctl_at(&ep, &["snapshot", "save", &path(&file)]));
    let etcd_status = snapshot_status(&file, false);
    for i in 0..3 {
        c.stop(i);
    }
    let snaps = std::fs::read_dir(c.members[0].data_dir.join("member/snap"))
        .unwrap()
        .flatten()
        .filter(|e| e.path().extension().is_some_and(|x| x == "snap"))
        .count();
    assert!(snaps > 0, "etcd wrote no .snap file: the test needs one");
    let pristine = read_tree(&c.members[0].data_dir.join("member"));

    c.opts.target = Some(Target::Cairn);
    for i in 0..3 {
        c.restart(i);
    }
    c.wait_healthy(Duration::from_secs(60));
    let after = json(c.etcdctl(&["get", "", "--from-key", "-w", "json"]));
    assert_eq!(after["kvs"], before["kvs"]);
    assert_eq!(after["header"]["revision"], before["header"]["revision"]);
    assert_eq!(
        after["header"]["cluster_id"],
        before["header"]["cluster_id"]
    );
    assert_eq!(member_list(&c), members);
    assert_eq!(ok(v2(&["get", "/v2/before-snapshot"])).trim(), "one");
    assert_eq!(ok(v2(&["get", "/v2/dir/after-snapshot"])).trim(), "two");
    // A Cairn snapshot now: etcd's revision and key count.
    let cairn_file = c.dir.path().join("cairn.db");
    ok(c.etcdctl_at(&ep, &["snapshot", "save", &path(&cairn_file)]));
    let cairn_status = snapshot_status(&cairn_file, false);
    assert_eq!(cairn_status["revision"], etcd_status["revision"]);
    assert_eq!(cairn_status["totalKey"], etcd_status["totalKey"]);
    // etcd's files, unchanged, in the folder the log names.
    let log = c.members[0].log();
    let line = log
        .lines()
        .find(|l| l.contains("imported the etcd data dir"))
        .unwrap_or_else(|| panic!("{log}"));
    let backup = std::fs::read_dir(&c.members[0].data_dir)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .find(|p| {
            p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with("etcd-backup-")
        })
        .expect("backup folder");
    assert!(line.contains(&path(&backup)), "{line}");
    assert!(
        read_tree(&backup.join("member")) == pristine,
        "etcd's files changed"
    );
    // The cluster goes on.
    ok(c.etcdctl(&["put", "/after-swap", "x"]));
    let v = json(c.etcdctl_at(&ep, &["get", "/after-swap", "-w", "json"]));
    assert_eq!(
        v["kvs"][0]["mod_revision"].as_i64(),
        before["header"]["revision"].as_i64().map(|r| r + 1)
    );
}

/// `write_history` without the auth part (the v2 API then needs no
/// credentials).
fn write_history_without_auth(c: &Cluster) -> Value {
    runtime().block_on(async {
        let mut cl = client(&c.endpoint_list()).await;
        let lease = cl.lease_grant(LONG_TTL_SECS, None).await.unwrap().id();
        for i in 0..80 {
            let opts = (i % 10 == 0).then(|| etcd_client::PutOptions::new().with_lease(lease));
            cl.put(format!("/registry/k{:02}", i % 25), format!("v{i}"), opts)
                .await
                .unwrap();
        }
        cl.delete("/registry/k07", None).await.unwrap();
        let rev = cl
            .get("/", None)
            .await
            .unwrap()
            .header()
            .unwrap()
            .revision();
        cl.compact(
            rev - 10,
            Some(etcd_client::CompactionOptions::new().with_physical()),
        )
        .await
        .unwrap();
        Value::from(rev)
    })
}

/// Damaged etcd files give a clear error that names the file and what is
/// wrong, and change nothing on disk; so does a running etcd, and a data
/// dir holding both etcd's files and Cairn's.
#[test]
fn damaged_etcd_files_are_refused_and_nothing_changes() {
    let mut e = Cluster::start(etcd_options(1));
    write_history_without_auth(&e);
    let file = e.dir.path().join("etcd.db");
    ok(e.etcdctl(&["snapshot", "save", &path(&file)]));
    let good = std::fs::read(&file).unwrap();
    let mut probe = Cluster::launch(Options {
        members: 1,
        ..Options::default()
    });
    probe.kill(0);
    let target = probe.members[0].data_dir.clone();
    let refused = |bytes: &[u8], extra: &[&str], expect: &str| {
        let bad = e.dir.path().join("bad.db");
        std::fs::write(&bad, bytes).unwrap();
        if target.exists() {
            std::fs::remove_dir_all(&target).unwrap();
        }
        let out = cairn_restore(&probe, 0, &bad, extra);
        let err = stderr(&out);
        assert!(!out.status.success(), "{err}");
        assert!(err.contains(&path(&bad)) && err.contains(expect), "{err}");
        assert!(
            !target.exists(),
            "a refused restore left {}",
            target.display()
        );
    };
    let mut flipped = good.clone();
    flipped[good.len() / 2] ^= 0x20;
    refused(&flipped, &[], "SHA-256 mismatch");
    refused(&good[..good.len() - 1000], &[], "truncated");
    refused(
        &good[..good.len() - 1000],
        &["--skip-hash-check"],
        "truncated",
    );
    refused(&good[..4096], &["--skip-hash-check"], "");

    // A running etcd's data dir is not taken from under it.
    let dir = e.members[0].data_dir.clone();
    let running = start_cairn_on(&e, &dir);
    assert_refused(running, "locked", &dir);
    e.stop(0);
    let pristine = read_tree(&dir);
    let copy = |name: &str| -> PathBuf {
        let to = e.dir.path().join(name);
        for (rel, bytes) in &pristine {
            let p = to.join(rel);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, bytes).unwrap();
        }
        to
    };
    let wal = |d: &Path| -> PathBuf {
        std::fs::read_dir(d.join("member/wal"))
            .unwrap()
            .flatten()
            .map(|e| e.path())
            .find(|p| p.extension().is_some_and(|x| x == "wal"))
            .expect("a WAL file")
    };

    // A flipped byte inside a WAL record: its CRC no longer matches.
    let d = copy("bad-wal");
    let w = wal(&d);
    let mut bytes = std::fs::read(&w).unwrap();
    let at = bytes
        .windows(11)
        .position(|b| b == b"/registry/k")
        .expect("a put in the WAL");
    bytes[at + 3] ^= 0x01;
    std::fs::write(&w, &bytes).unwrap();
    let before = read_tree(&d);
    assert_refused(start_cairn_on(&e, &d), &path(&w), &d);
    assert!(
        read_tree(&d) == before,
        "a refused import changed {}",
        d.display()
    );

    // The WAL cut short before what the database already holds.
    let d = copy("short-wal");
    let w = wal(&d);
    let bytes = std::fs::read(&w).unwrap();
    std::fs::write(&w, &bytes[..600]).unwrap();
    let before = read_tree(&d);
    assert_refused(start_cairn_on(&e, &d), "member/wal", &d);
    assert!(read_tree(&d) == before);

    // A database whose pages are garbage.
    let d = copy("bad-db");
    let db = d.join("member/snap/db");
    let mut bytes = std::fs::read(&db).unwrap();
    for b in bytes.iter_mut().skip(2 * 4096) {
        *b = 0xab;
    }
    std::fs::write(&db, &bytes).unwrap();
    let before = read_tree(&d);
    assert_refused(start_cairn_on(&e, &d), &path(&db), &d);
    assert!(read_tree(&d) == before);

    // etcd's files next to Cairn's (what an older Cairn left behind).
    let d = copy("mixed");
    std::fs::create_dir_all(d.join("member/db")).unwrap();
    assert_refused(start_cairn_on(&e, &d), "holds both etcd's files", &d);

    // Issue 20: a data dir given the distro way, by ETCD_DATA_DIR, is
    // imported too, never served empty beside etcd's files.
    let d = copy("by-env");
    let mut cmd = cairn_on(&e, None);
    let host = cmd.1.clone();
    let mut child = cmd
        .0
        .env("ETCD_DATA_DIR", &d)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn cairn");
    let endpoint = format!("http://{host}:2379");
    let got = eventually(Duration::from_secs(60), || {
        let out = etcdctl(&endpoint, &["get", "/registry/k01", "-w", "json"], None);
        out.status
            .success()
            .then(|| json(out))
            .filter(|v| v["count"] == 1)
    });
    let _ = child.kill();
    let _ = child.wait();
    let got = got.expect("cairn on ETCD_DATA_DIR never served etcd's keys");
    assert_eq!(got["kvs"][0]["value"], base64_of("v76").as_str());
    assert!(d.join("member/db").is_dir());
    let backups = std::fs::read_dir(&d)
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("etcd-backup-"))
        .count();
    assert_eq!(backups, 1);
}

/// Starts a lone Cairn member on `dir` with `e`'s first member's name and
/// fresh ports.
fn start_cairn_on(e: &Cluster, dir: &Path) -> std::process::Child {
    cairn_on(e, Some(dir))
        .0
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn cairn")
}

/// The command for a lone Cairn member with `e`'s first member's name on
/// fresh ports (and `--data-dir` if given), and its host.
fn cairn_on(e: &Cluster, dir: Option<&Path>) -> (Command, String) {
    let m = &e.members[0];
    let host = cairn_tests::free_host(&[2379, 2380]);
    let mut cmd = Command::new(cairn_bin());
    if let Some(dir) = dir {
        cmd.arg(format!("--data-dir={}", dir.display()));
    }
    cmd.arg(format!("--name={}", m.name))
        .arg(format!("--listen-client-urls=http://{host}:2379"))
        .arg(format!("--advertise-client-urls=http://{host}:2379"))
        .arg(format!("--listen-peer-urls=http://{host}:2380"))
        .arg(format!("--initial-advertise-peer-urls=http://{host}:2380"))
        .arg(format!("--initial-cluster={}=http://{host}:2380", m.name))
        .arg("--config-file=")
        .stdin(Stdio::null());
    (cmd, host)
}

/// The member exits with an error mentioning `expect`, and `dir` holds no
/// Cairn data.
fn assert_refused(child: std::process::Child, expect: &str, dir: &Path) {
    let out = wait_output(child, Duration::from_secs(60));
    let text = format!("{}{}", stdout(&out), stderr(&out));
    assert!(!out.status.success(), "cairn started: {text}");
    assert!(text.contains(expect), "no {expect:?} in: {text}");
    assert!(!dir.join("member/db").exists() || expect.contains("both"));
    assert!(!dir.join("member.cairn-import").exists());
}
