//! `--wal-dir`: each member's raft log in a folder of its own. A
//! three-member cluster whose logs live there (compacted a few times on
//! the way) survives `kill -9` of every member with all acknowledged
//! writes; a member restarted without the flag is refused, naming it, and
//! starts again with it.

use cairn_tests::{Cluster, Options, Target, client, eventually, runtime, target};
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(30);

#[test]
fn a_cluster_with_wal_dirs_survives_kill_9() {
    let wal_root = tempfile::tempdir().unwrap();
    let wal = |i: usize| wal_root.path().join(format!("wal-m{}", i + 1));
    let mut c = Cluster::start(Options {
        // Log compaction (and its state-machine sync) happens several times.
        snapshot_count: Some(50),
        member_env: (0..3)
            .map(|i| (i, "ETCD_WAL_DIR".to_string(), wal(i).display().to_string()))
            .collect(),
        ..Options::default()
    });
    let rt = runtime();
    let keys = 300;
    rt.block_on(async {
        let mut cl = client(&c.endpoint_list()).await;
        for i in 0..keys {
            cl.put(format!("k{i:04}"), format!("v{i}"), None)
                .await
                .expect("put");
        }
    });
    for i in 0..3 {
        if target() == Target::Cairn {
            // The raft log is in the WAL dir, the state machine in the data dir.
            assert!(
                wal(i).join("raft").is_dir(),
                "no raft log in {}",
                wal(i).display()
            );
            assert!(c.members[i].data_dir.join("member/db").is_dir());
        } else {
            let wal_files = std::fs::read_dir(wal(i)).unwrap().count();
            assert!(wal_files > 0);
        }
    }
    for i in 0..3 {
        c.kill(i);
    }
    for i in 0..3 {
        c.restart(i);
    }
    c.wait_healthy(WAIT);
    let check_all = |c: &Cluster| {
        rt.block_on(async {
            let mut cl = client(&c.endpoint_list()).await;
            let r = cl
                .get("k", Some(etcd_client::GetOptions::new().with_prefix()))
                .await
                .expect("get");
            assert_eq!(r.kvs().len(), keys, "acknowledged writes lost");
            for (i, kv) in r.kvs().iter().enumerate() {
                assert_eq!(kv.key_str().unwrap(), format!("k{i:04}"));
                assert_eq!(kv.value_str().unwrap(), format!("v{i}"));
            }
            cl.put("after", "restart", None)
                .await
                .expect("put after restart");
        });
    };
    check_all(&c);
    if target() == Target::Etcd {
        // etcd 3.4 does not check the layout on restart.
        return;
    }

    // A follower that missed compacted entries installs a snapshot: the
    // state machine is replaced, then its separate log truncated.
    let leader = c.wait_leader(WAIT);
    let lagger = (leader + 1) % 3;
    c.kill(lagger);
    let live: Vec<String> = (0..3)
        .filter(|i| *i != lagger)
        .map(|i| c.members[i].endpoint())
        .collect();
    rt.block_on(async {
        let mut cl = client(&live).await;
        for i in keys..2 * keys {
            cl.put(format!("k{i:04}"), format!("v{i}"), None)
                .await
                .expect("put");
        }
    });
    c.restart(lagger);
    c.wait_healthy(WAIT);
    let ep = vec![c.members[lagger].endpoint()];
    let caught_up = eventually(WAIT, || {
        rt.block_on(async {
            let mut cl = client(&ep).await;
            let opts = etcd_client::GetOptions::new()
                .with_prefix()
                .with_count_only()
                .with_serializable();
            let r = cl.get("k", Some(opts)).await.ok()?;
            (r.count() == 2 * keys as i64).then_some(())
        })
    });
    assert!(caught_up.is_some(), "{}", c.logs_tail(20));
    assert!(
        c.members[lagger].log().contains("applied snapshot"),
        "caught up without a snapshot:\n{}",
        cairn_tests::tail(&c.members[lagger].log(), 30)
    );
    // And that survives a kill -9 too.
    c.kill(lagger);
    c.restart(lagger);
    c.wait_healthy(WAIT);
    let caught_up = eventually(WAIT, || {
        rt.block_on(async {
            let mut cl = client(&ep).await;
            let opts = etcd_client::GetOptions::new()
                .with_prefix()
                .with_count_only()
                .with_serializable();
            let r = cl.get("k", Some(opts)).await.ok()?;
            (r.count() == 2 * keys as i64).then_some(())
        })
    });
    assert!(caught_up.is_some(), "{}", c.logs_tail(20));

    // Without the flag the member would open an empty log: refused.
    c.kill(0);
    c.restart_with(0, &["--wal-dir="]);
    let code = eventually(WAIT, || c.members[0].try_exit_code());
    assert_eq!(code, Some(Some(1)), "{}", c.logs_tail(10));
    let log = c.members[0].log();
    assert!(
        log.contains(&format!("was created with --wal-dir={}", wal(0).display())),
        "{}",
        cairn_tests::tail(&log, 10)
    );
    // With it, it rejoins with everything.
    c.restart(0);
    c.wait_healthy(WAIT);
    rt.block_on(async {
        let mut cl = client(&c.endpoint_list()).await;
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
            .expect("get");
        assert_eq!(r.count(), 2 * keys as i64);
    });
}
