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
