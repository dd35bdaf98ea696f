//! etcd's Maintenance service through the real etcdctl 3.4: HashKV as the
//! cross-member consistency check, defragmentation, the NOSPACE alarm with
//! `--quota-backend-bytes`, and `snapshot save` restored into a new cluster
//! (`cairn snapshot restore`, or `etcdctl snapshot restore` when the target
//! is etcd).

use cairn_tests::{
    Cluster, Options, Target, cairn_bin, client, etcdctl, eventually, ok, runtime, stderr, stdout,
    target,
};
use rand::Rng;
use rand::distributions::Alphanumeric;
use serde_json::Value;
use std::process::{Command, Output};
use std::time::Duration;

/// Random, incompressible text: sizes on disk then mean what they say
/// (fjall compresses its tables).
fn random_value(len: usize) -> String {
    rand::thread_rng()
        .sample_iter(&Alphanumeric)
        .take(len)
        .map(char::from)
        .collect()
}

fn json(out: Output) -> Value {
    let text = ok(out);
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("bad JSON ({e}): {text}"))
}

/// `endpoint status` of member `i`.
fn status(c: &Cluster, i: usize) -> Value {
    let v = json(c.etcdctl_at(
        &c.members[i].endpoint(),
        &["endpoint", "status", "-w", "json"],
    ));
    v[0]["Status"].clone()
}

fn db_size(c: &Cluster, i: usize) -> i64 {
    status(c, i)["dbSize"].as_i64().expect("dbSize")
}

fn current_revision(c: &Cluster) -> i64 {
    status(c, 0)["header"]["revision"]
        .as_i64()
        .expect("revision")
}

/// `endpoint hashkv --cluster`: (endpoint, hash, compact revision, header
/// revision) per member.
fn hashkv_cluster(c: &Cluster, extra: &[&str]) -> Vec<(String, u64, i64, i64)> {
    let mut args = vec!["endpoint", "hashkv", "--cluster", "-w", "json"];
    args.extend_from_slice(extra);
    let v = json(c.etcdctl_at(&c.members[0].endpoint(), &args));
    v.as_array()
        .expect("array")
        .iter()
        .map(|e| {
            (
                e["Endpoint"].as_str().unwrap_or("").to_string(),
                e["HashKV"]["hash"].as_u64().unwrap_or(0),
                e["HashKV"]["compact_revision"].as_i64().unwrap_or(0),
                e["HashKV"]["header"]["revision"].as_i64().unwrap_or(0),
            )
        })
        .collect()
}

/// Waits until every member reports the same hash at the same revision and
/// compaction point (members apply a few milliseconds apart).
fn agreed_hashkv(c: &Cluster, extra: &[&str]) -> Vec<(String, u64, i64, i64)> {
    let mut last = Vec::new();
    let agreed = eventually(Duration::from_secs(15), || {
        last = hashkv_cluster(c, extra);
        let same = last.len() == c.members.len()
            && last
                .iter()
                .all(|(_, h, cr, r)| (*h, *cr, *r) == (last[0].1, last[0].2, last[0].3));
        same.then(|| last.clone())
    });
    agreed.unwrap_or_else(|| panic!("members never agreed on HashKV: {last:?}"))
}

#[test]
fn hashkv_is_equal_on_every_member_after_writes_and_compaction() {
    let c = Cluster::start(Options::default());
    runtime().block_on(async {
        let mut cl = client(&c.endpoint_list()).await;
        for i in 0..40 {
            cl.put(format!("k{}", i % 15), format!("v{i}"), None)
                .await
                .unwrap();
        }
        cl.delete("k3", None).await.unwrap();
    });
    let before = agreed_hashkv(&c, &[]);
    assert_eq!(before.len(), 3);
    assert_eq!(before[0].2, -1, "never compacted: {before:?}");

    let rev = current_revision(&c);
    ok(c.etcdctl(&["compaction", "--physical", &(rev - 10).to_string()]));
    runtime().block_on(async {
        let mut cl = client(&c.endpoint_list()).await;
        cl.put("k1", "after-compaction", None).await.unwrap();
    });
    let after = agreed_hashkv(&c, &[]);
    assert_eq!(after[0].2, rev - 10, "compact revision: {after:?}");
    assert_eq!(after[0].3, rev + 1);
    assert_ne!(after[0].1, before[0].1, "new data, same hash: {after:?}");
    // At an older revision every member agrees too, and the hash of a
    // revision does not change when later revisions are added.
    let at_rev = agreed_hashkv(&c, &["--rev", &rev.to_string()]);
    runtime().block_on(async {
        let mut cl = client(&c.endpoint_list()).await;
        cl.put("k2", "later", None).await.unwrap();
    });
    assert_eq!(
        agreed_hashkv(&c, &["--rev", &rev.to_string()])[0].1,
        at_rev[0].1
    );
    // The compaction revision itself can no longer be hashed (as etcd).
    let out = c.etcdctl(&["endpoint", "hashkv", "--rev", &(rev - 10).to_string()]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("etcdserver: mvcc: required revision has been compacted"),
        "{}",
        stderr(&out)
    );

    // Hash (the whole store) agrees across members once they are idle.
    let endpoints = c.endpoint_list();
    let hashes = eventually(Duration::from_secs(15), || {
        let hs: Vec<u32> = runtime().block_on(async {
            let mut out = Vec::new();
            for ep in &endpoints {
                let mut cl = client(std::slice::from_ref(ep)).await;
                out.push(cl.hash().await.unwrap().hash());
            }
            out
        });
        hs.iter().all(|h| *h == hs[0]).then_some(hs)
    });
    assert!(hashes.is_some(), "members never agreed on Hash");
}

#[test]
fn defrag_cluster_reclaims_the_space_of_deleted_data() {
    let c = Cluster::start(Options {
        // Lets the raft log, which shares the database, shrink too.
        snapshot_count: Some(50),
        ..Options::default()
    });
    runtime().block_on(async {
        let mut cl = client(&c.endpoint_list()).await;
        for i in 0..150 {
            cl.put(format!("big/{i:04}"), random_value(32 * 1024), None)
                .await
                .unwrap();
        }
    });
    let out = ok(c.etcdctl(&["del", "big/", "--prefix"]));
    assert_eq!(out.trim(), "150");
    let rev = current_revision(&c);
    ok(c.etcdctl(&["compaction", "--physical", &rev.to_string()]));
    // Let every member finish its own compaction before measuring.
    std::thread::sleep(Duration::from_millis(500));
    let before: Vec<i64> = (0..3).map(|i| db_size(&c, i)).collect();

    let out = ok(c.etcdctl_at(&c.members[0].endpoint(), &["defrag", "--cluster"]));
    for m in &c.members {
        assert!(
            out.contains(&format!(
                "Finished defragmenting etcd member[{}]",
                m.client_url()
            )),
            "{out}"
        );
    }
    let after: Vec<i64> = (0..3).map(|i| db_size(&c, i)).collect();
    eprintln!("db size before defrag {before:?}, after {after:?}");
    for i in 0..3 {
        assert!(
            after[i] < before[i],
            "member {i}: {} bytes before defrag, {} after",
            before[i],
            after[i]
        );
    }
    // The cluster still serves, and a second defrag changes little.
    ok(c.etcdctl(&["put", "small", "x"]));
    assert_eq!(
        ok(c.etcdctl(&["get", "small", "--print-value-only"])).trim(),
        "x"
    );
    ok(c.etcdctl_at(&c.members[1].endpoint(), &["defrag"]));
    assert!(db_size(&c, 1) <= after[1] + 64 * 1024);
}

const NO_SPACE: &str = "etcdserver: mvcc: database space exceeded";

#[test]
fn nospace_alarm_with_a_small_quota() {
    // 4 MiB: some 60 values of 64 KiB.
    let quota = 4 * 1024 * 1024;
    let mut c = Cluster::start(Options {
        extra_args: vec![format!("--quota-backend-bytes={quota}")],
        ..Options::default()
    });
    let out = c.etcdctl(&["alarm", "list"]);
    assert_eq!(ok(out), "", "no alarm at first");

    let value = random_value(64 * 1024);
    let mut failed = None;
    for i in 0..400 {
        let out = c.etcdctl(&["put", &format!("fill/{i:04}"), &value]);
        if !out.status.success() {
            failed = Some((i, stderr(&out)));
            break;
        }
    }
    let (written, err) = failed.expect("the quota was never hit");
    assert!(err.contains(NO_SPACE), "unexpected failure: {err}");
    assert!(written > 10, "quota hit after only {written} puts");
    eprintln!("quota {quota} bytes hit after {written} puts of 64 KiB");

    let alarms = ok(c.etcdctl(&["alarm", "list"]));
    assert!(!alarms.is_empty());
    for line in alarms.lines() {
        assert!(
            line.starts_with("memberID:") && line.ends_with("alarm:NOSPACE "),
            "{alarms:?}"
        );
    }
    let st = status(&c, 0);
    assert!(
        st["errors"].to_string().contains("alarm:NOSPACE"),
        "endpoint status errors: {st}"
    );

    // Writes that grow the store are refused on every member...
    for m in &c.members {
        let out = c.etcdctl_at(&m.endpoint(), &["put", "more", "x"]);
        assert!(stderr(&out).contains(NO_SPACE), "{}", stderr(&out));
    }
    let out = c.etcdctl(&["lease", "grant", "100"]);
    assert!(stderr(&out).contains(NO_SPACE), "{}", stderr(&out));
    let out = cairn_tests::etcdctl_stdin(
        &c.endpoints(),
        &["txn"],
        None,
        Some("\nput fill/0000 x\n\n\n"),
    );
    assert!(stderr(&out).contains(NO_SPACE), "{}", stderr(&out));
    // /health reports an active alarm, as etcd's does.
    assert_eq!(
        cairn_tests::health(&c.members[0].client_addr()),
        Some(false)
    );
    // The alarm is stored state: a restarted member still enforces it.
    // (Not `wait_healthy`: etcd's /health says false while an alarm is
    // active.)
    c.stop(2);
    c.restart(2);
    let mut last = String::new();
    let refused = eventually(Duration::from_secs(30), || {
        let out = c.etcdctl_at(&c.members[2].endpoint(), &["put", "more", "x"]);
        last = stderr(&out);
        last.contains(NO_SPACE).then_some(())
    });
    assert!(refused.is_some(), "after a restart: {last}");
    // ...while reads, deletes and compaction work.
    // (The values themselves through the client library: etcdctl's output
    // would outgrow the pipe the harness reads after exit.)
    assert_eq!(
        ok(c.etcdctl(&["get", "fill/0000", "--keys-only"])).trim(),
        "fill/0000"
    );
    let got = runtime().block_on(async {
        let mut cl = client(&c.endpoint_list()).await;
        cl.get("fill/0001", None).await.unwrap().kvs()[0]
            .value()
            .to_vec()
    });
    assert_eq!(got, value.as_bytes());
    assert_eq!(ok(c.etcdctl(&["del", "fill/0000"])).trim(), "1");
    let deleted = ok(c.etcdctl(&["del", "fill/", "--prefix"]));
    assert_eq!(deleted.trim(), (written - 1).to_string());
    let rev = current_revision(&c);
    ok(c.etcdctl(&["compaction", "--physical", &rev.to_string()]));
    std::thread::sleep(Duration::from_millis(500));
    ok(c.etcdctl_at(&c.members[0].endpoint(), &["defrag", "--cluster"]));

    // Disarming answers the alarms it cleared; then writes work again.
    let disarmed = ok(c.etcdctl(&["alarm", "disarm"]));
    assert!(disarmed.contains("alarm:NOSPACE"), "{disarmed:?}");
    assert_eq!(ok(c.etcdctl(&["alarm", "list"])), "");
    assert_eq!(ok(c.etcdctl(&["put", "after", "works"])).trim(), "OK");
    assert_eq!(cairn_tests::health(&c.members[0].client_addr()), Some(true));
    assert_eq!(
        ok(c.etcdctl(&["get", "after", "--print-value-only"])).trim(),
        "works"
    );
    // Still clear a moment later: the space really was reclaimed.
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(ok(c.etcdctl(&["alarm", "list"])), "");
}

/// `snapshot restore` for member `i` of `c` from `file`, with `c`'s flags.
fn restore(c: &Cluster, i: usize, file: &str) -> Output {
    let m = &c.members[i];
    let initial_cluster = c
        .members
        .iter()
        .map(|m| format!("{}={}", m.name, m.peer_url()))
        .collect::<Vec<_>>()
        .join(",");
    let flags = [
        format!("--data-dir={}", m.data_dir.display()),
        format!("--name={}", m.name),
        format!("--initial-cluster={initial_cluster}"),
        format!("--initial-cluster-token={}", c.opts.token),
        format!("--initial-advertise-peer-urls={}", m.peer_url()),
    ];
    match target() {
        Target::Cairn => {
            let child = Command::new(cairn_bin())
                .args(["snapshot", "restore", file])
                .args(&flags)
                .stdin(std::process::Stdio::null())
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .expect("run cairn snapshot restore");
            cairn_tests::wait_output(child, Duration::from_secs(60))
        }
        Target::Etcd => {
            let mut args = vec!["snapshot", "restore", file];
            args.extend(flags.iter().map(String::as_str));
            etcdctl(&c.endpoints(), &args, None)
        }
    }
}

#[test]
fn snapshot_save_then_restore_into_a_new_cluster() {
    let a = Cluster::start(Options::default());
    runtime().block_on(async {
        let mut cl = client(&a.endpoint_list()).await;
        for i in 0..30 {
            cl.put(format!("key/{:02}", i % 20), format!("value-{i}"), None)
                .await
                .unwrap();
        }
        // Small enough for etcdctl's JSON output to fit the harness's pipe.
        cl.put("big", random_value(16 * 1024), None).await.unwrap();
        cl.delete("key/07", None).await.unwrap();
    });
    ok(a.etcdctl(&["compaction", "--physical", "10"]));
    let original = json(a.etcdctl(&["get", "", "--from-key", "-w", "json"]));
    let rev = original["header"]["revision"].as_i64().expect("revision");
    assert_eq!(original["count"].as_i64(), Some(20));

    let file = a.dir.path().join("backup.db");
    let file = file.to_str().expect("utf-8 path").to_string();
    let out = ok(a.etcdctl_at(&a.members[1].endpoint(), &["snapshot", "save", &file]));
    assert!(out.contains(&format!("Snapshot saved at {file}")), "{out}");
    let size = std::fs::metadata(&file).expect("snapshot file").len();
    assert_eq!(size % 512, 32, "etcdctl's own check");
    let hash_a = hashkv_cluster(&a, &["--rev", &rev.to_string()]);
    if target() == Target::Cairn {
        let st = Command::new(cairn_bin())
            .args(["snapshot", "status", &file, "-w", "json"])
            .output()
            .expect("cairn snapshot status");
        let st: Value = serde_json::from_slice(&st.stdout).expect("status JSON");
        assert_eq!(st["revision"].as_i64(), Some(rev), "{st}");
        assert_eq!(st["totalSize"].as_u64(), Some(size - 32));
    }

    // A new cluster on other addresses, started from the restored dirs:
    // launch it, stop it at once, replace its data dirs, start it again
    // with the same flags.
    let mut b = Cluster::launch(Options {
        token: "restored-cluster".into(),
        ..Options::default()
    });
    for i in 0..3 {
        b.kill(i);
    }
    for i in 0..3 {
        let dir = &b.members[i].data_dir;
        if dir.exists() {
            std::fs::remove_dir_all(dir).expect("remove data dir");
        }
        let out = restore(&b, i, &file);
        assert!(
            out.status.success(),
            "restore failed: {}\n{}",
            stdout(&out),
            stderr(&out)
        );
    }
    for i in 0..3 {
        b.restart(i);
    }
    b.wait_healthy(Duration::from_secs(30));

    let restored = json(b.etcdctl(&["get", "", "--from-key", "-w", "json"]));
    assert_eq!(restored["header"]["revision"].as_i64(), Some(rev));
    assert_eq!(
        restored["kvs"], original["kvs"],
        "same keys, values, revisions"
    );
    // The new membership, not the old one.
    let members = ok(b.etcdctl(&["member", "list"]));
    for m in &b.members {
        assert!(members.contains(&m.peer_url()), "{members}");
    }
    for m in &a.members {
        assert!(!members.contains(&m.peer_url()), "{members}");
    }
    // The restored members agree with each other and with the original.
    let hash_b = agreed_hashkv(&b, &[]);
    assert_eq!(hash_b[0].1, hash_a[0].1, "{hash_a:?} vs {hash_b:?}");
    // Compacted history stays compacted; new writes continue the revisions.
    let out = b.etcdctl(&["get", "key/01", "--rev", "5"]);
    assert!(stderr(&out).contains("required revision has been compacted"));
    ok(b.etcdctl(&["put", "new", "1"]));
    let got = json(b.etcdctl(&["get", "new", "-w", "json"]));
    assert_eq!(got["kvs"][0]["mod_revision"].as_i64(), Some(rev + 1));
}
