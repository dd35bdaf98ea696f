//! Acknowledged writes survive `kill -9` of every member at once.

use cairn_tests::{Cluster, Options, client, runtime};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

#[test]
fn kill_9_every_member_while_clients_write() {
    let mut cluster = Cluster::start(Options::default());
    let rt = runtime();
    // key → revision of the acknowledged put (each key is written once).
    let acked: Arc<Mutex<BTreeMap<String, i64>>> = Arc::default();
    let endpoints = cluster.endpoint_list();
    let writers: Vec<_> = (0..8)
        .map(|w| {
            let acked = Arc::clone(&acked);
            // Spread the writers over all members (followers forward).
            let ep = vec![endpoints[w % endpoints.len()].clone()];
            rt.spawn(async move {
                let mut c = client(&ep).await;
                for i in 0.. {
                    let key = format!("w{w}-{i:06}");
                    match tokio::time::timeout(
                        Duration::from_secs(2),
                        c.put(key.clone(), format!("value-{w}-{i}"), None),
                    )
                    .await
                    {
                        Ok(Ok(r)) => {
                            let rev = r.header().expect("header").revision();
                            acked.lock().expect("lock").insert(key, rev);
                        }
                        // Once the members are gone every write fails.
                        _ => return,
                    }
                }
            })
        })
        .collect();

    std::thread::sleep(Duration::from_secs(2));
    // All at once, mid-stream.
    for i in 0..3 {
        cluster.kill(i);
    }
    rt.block_on(async {
        for w in writers {
            let _ = tokio::time::timeout(Duration::from_secs(10), w).await;
        }
    });
    let acked = acked.lock().expect("lock").clone();
    assert!(
        acked.len() > 50,
        "too few writes acknowledged: {}",
        acked.len()
    );

    for i in 0..3 {
        cluster.restart(i);
    }
    cluster.wait_healthy(Duration::from_secs(30));
    rt.block_on(async {
        let mut c = client(&cluster.endpoint_list()).await;
        for (key, rev) in &acked {
            let r = c.get(key.clone(), None).await.expect("get");
            assert_eq!(r.kvs().len(), 1, "acknowledged write {key} lost");
            let kv = &r.kvs()[0];
            assert_eq!(kv.mod_revision(), *rev, "{key} has the wrong revision");
            let (w, i) = key[1..].split_once('-').expect("key shape");
            let i: u64 = i.parse().expect("index");
            assert_eq!(kv.value_str().expect("utf8"), format!("value-{w}-{i}"));
        }
        // Revisions are unique per write: no two acknowledged writes share one.
        let mut revs: Vec<i64> = acked.values().copied().collect();
        revs.sort_unstable();
        revs.dedup();
        assert_eq!(revs.len(), acked.len());
        // And the cluster takes writes again.
        c.put("after-restart", "ok", None)
            .await
            .expect("put after restart");
    });
    eprintln!(
        "{} acknowledged writes all survived kill -9 of every member",
        acked.len()
    );
}

/// Journals are preallocated with zeros; the data ends at the last
/// non-zero byte. The newest `.jnl` under `dir`.
fn newest_journal(dir: &std::path::Path) -> std::path::PathBuf {
    let mut found = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).expect("read_dir").flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if p.extension().is_some_and(|x| x == "jnl") {
                let name = p.file_name().unwrap().to_string_lossy().into_owned();
                found.push(((name.len(), name), p));
            }
        }
    }
    found.into_iter().max().expect("a journal").1
}

/// A follower whose journal lost a tail it had acknowledged (the disk gave
/// back zeros where fsynced data was; fjall's recovery drops a damaged
/// tail without an error) must not rejoin as if nothing happened: raft-rs
/// panicked at the leader's first heartbeat ("to_commit is out of range"),
/// and until then the member could vote with the shorter log. It now stays
/// out of elections until it hears from the leader, and that heartbeat
/// stops it with an error that says what to do. The others keep serving
/// with every write.
#[test]
fn a_journal_that_lost_acknowledged_entries_is_refused() {
    let mut c = Cluster::start(Options::default());
    let leader = c.wait_leader(Duration::from_secs(10));
    let f = (leader + 1) % 3;
    let rt = runtime();
    rt.block_on(async {
        let mut cl = client(&[c.members[leader].endpoint()]).await;
        for i in 0..300 {
            cl.put(format!("k{i:03}"), vec![b'v'; 512], None)
                .await
                .unwrap();
        }
    });
    // The follower has persisted (and acknowledged) everything.
    let want = c.etcdctl_at(
        &c.members[leader].endpoint(),
        &["endpoint", "status", "-w", "json"],
    );
    let index = |out: &std::process::Output| {
        serde_json::from_slice::<serde_json::Value>(&out.stdout).ok()?[0]["Status"]["raftIndex"]
            .as_u64()
    };
    let target = index(&want).expect("leader raft index");
    let caught_up = cairn_tests::eventually(Duration::from_secs(10), || {
        let out = c.etcdctl_at(
            &c.members[f].endpoint(),
            &["endpoint", "status", "-w", "json"],
        );
        (index(&out)? >= target).then_some(())
    });
    assert!(caught_up.is_some(), "follower never caught up");
    let data_dir = c.members[f].data_dir.clone();
    c.kill(f);
    let file = newest_journal(&data_dir);
    let mut bytes = std::fs::read(&file).unwrap();
    let end = bytes.iter().rposition(|b| *b != 0).map_or(0, |p| p + 1);
    let span = (64 * 1024).min(end / 2);
    bytes[end - span..end].fill(0);
    std::fs::write(&file, &bytes).unwrap();
    c.restart(f);
    let exited = cairn_tests::eventually(Duration::from_secs(20), || c.members[f].try_exit_code());
    let log = c.members[f].log();
    let tail = cairn_tests::tail(&log, 20);
    assert!(!log.contains("panicked"), "raft panicked:\n{tail}");
    let code = exited.unwrap_or_else(|| panic!("the damaged member kept running:\n{tail}"));
    assert_eq!(code, Some(1), "{tail}");
    eprintln!("refused as expected:\n{}", cairn_tests::tail(&log, 3));
    assert!(
        log.contains("entries it had persisted and acknowledged are gone")
            || log.contains("the journal is damaged")
            || log.contains("cannot be recovered"),
        "no clear refusal:\n{tail}"
    );
    // The other two have every write.
    rt.block_on(async {
        let mut cl = client(&[c.members[leader].endpoint()]).await;
        let r = cl
            .get(
                "k",
                Some(
                    etcd_client::GetOptions::new()
                        .with_prefix()
                        .with_count_only(),
                ),
            )
            .await
            .unwrap();
        assert_eq!(r.count(), 300);
    });
}
