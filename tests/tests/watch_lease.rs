//! Watch and lease semantics through the `etcd-client` crate: every watch
//! option, slow watchers, watchers across a leader failover, lease expiry
//! across a failover, state across restarts and snapshots, and the Lock and
//! Election services.

use cairn_tests::{Cluster, Options, client, runtime};
use etcd_client::{
    EventType, GetOptions, LeaseGrantOptions, LeaseTimeToLiveOptions, PutOptions, WatchFilterType,
    WatchOptions, WatchResponse, WatchStream,
};
use std::time::{Duration, Instant};

const WAIT: Duration = Duration::from_secs(15);

async fn next(stream: &mut WatchStream) -> WatchResponse {
    match tokio::time::timeout(WAIT, stream.message()).await {
        Ok(Ok(Some(r))) => r,
        other => panic!("no watch response: {other:?}"),
    }
}

/// Collects events (as (revision, key, is_put)) until `want` arrived.
async fn collect(stream: &mut WatchStream, want: usize) -> Vec<(i64, String, bool)> {
    let mut out = Vec::new();
    while out.len() < want {
        let r = next(stream).await;
        assert!(!r.canceled(), "watch canceled: {r:?}");
        for ev in r.events() {
            let kv = ev.kv().expect("event kv");
            out.push((
                kv.mod_revision(),
                kv.key_str().expect("utf8").to_string(),
                ev.event_type() == EventType::Put,
            ));
        }
    }
    out
}

fn one_member(extra: &[&str]) -> Cluster {
    Cluster::start(Options {
        members: 1,
        extra_args: extra.iter().map(|s| s.to_string()).collect(),
        ..Options::default()
    })
}

#[test]
fn watch_options() {
    let cluster = one_member(&["--experimental-watch-progress-notify-interval=500ms"]);
    runtime().block_on(async {
        let mut c = client(&cluster.endpoint_list()).await;
        c.put("a", "1", None).await.unwrap(); // 2
        c.put("b", "1", None).await.unwrap(); // 3
        c.delete("a", None).await.unwrap(); // 4

        // Client-chosen IDs; created responses come back in request order.
        let mut s = c
            .watch(
                "a",
                Some(WatchOptions::new().with_watch_id(7).with_start_revision(2)),
            )
            .await
            .unwrap();
        let r = next(&mut s).await;
        assert!(r.created());
        assert_eq!(r.watch_id(), 7);
        assert_eq!(r.header().unwrap().revision(), 4);
        for id in [9, 8] {
            s.watch("b", Some(WatchOptions::new().with_watch_id(id)))
                .await
                .unwrap();
        }
        // Duplicate ID: created+canceled with etcd's reason.
        s.watch("b", Some(WatchOptions::new().with_watch_id(7)))
            .await
            .unwrap();
        // Auto IDs start at 0 and skip taken ones.
        s.watch("b", None).await.unwrap();
        let mut created = Vec::new();
        let mut replay = Vec::new();
        while created.len() < 4 {
            let r = next(&mut s).await;
            if r.created() {
                created.push((r.watch_id(), r.canceled(), r.cancel_reason().to_string()));
            } else {
                replay.extend(r.events().iter().map(|e| e.kv().unwrap().mod_revision()));
            }
        }
        assert_eq!(
            created,
            vec![
                (9, false, String::new()),
                (8, false, String::new()),
                (
                    -1,
                    true,
                    "mvcc: duplicate watch ID provided on the WatchStream".to_string()
                ),
                (0, false, String::new()),
            ]
        );
        // Watch 7 replays a's history from revision 2: put, delete.
        while replay.len() < 2 {
            let r = next(&mut s).await;
            replay.extend(r.events().iter().map(|e| e.kv().unwrap().mod_revision()));
        }
        assert_eq!(replay, vec![2, 4]);

        // Cancel: answered with canceled=true for that ID.
        s.cancel(9).await.unwrap();
        let r = next(&mut s).await;
        assert!(r.canceled());
        assert_eq!(r.watch_id(), 9);
        drop(s);

        // Filters and prev_kv.
        let mut s = c
            .watch(
                "f",
                Some(
                    WatchOptions::new()
                        .with_prefix()
                        .with_prev_key()
                        .with_filters([WatchFilterType::NoPut]),
                ),
            )
            .await
            .unwrap();
        assert!(next(&mut s).await.created());
        c.put("f1", "x", None).await.unwrap();
        c.put("f1", "y", None).await.unwrap();
        c.delete("f1", None).await.unwrap();
        let r = next(&mut s).await;
        assert_eq!(r.events().len(), 1);
        let ev = &r.events()[0];
        assert_eq!(ev.event_type(), EventType::Delete);
        assert_eq!(ev.prev_kv().unwrap().value(), b"y");
        drop(s);

        // Progress notifications for an idle watcher, and on request.
        let mut s = c
            .watch("idle", Some(WatchOptions::new().with_progress_notify()))
            .await
            .unwrap();
        assert!(next(&mut s).await.created());
        let r = next(&mut s).await;
        assert!(r.events().is_empty() && !r.canceled() && !r.created());
        let current = c.get("x", None).await.unwrap().header().unwrap().revision();
        assert_eq!(r.header().unwrap().revision(), current);
        s.request_progress().await.unwrap();
        loop {
            let r = next(&mut s).await;
            if r.watch_id() == -1 {
                assert_eq!(r.header().unwrap().revision(), current);
                break;
            }
        }
    });
}

#[test]
fn fragmented_responses() {
    // A 1 MiB request limit: a txn writing 3 × 600 KiB produces a response
    // that must be split.
    let cluster = one_member(&["--max-request-bytes=1048576"]);
    runtime().block_on(async {
        let mut c = client(&cluster.endpoint_list()).await;
        for i in 0..3 {
            c.put(format!("big{i}"), vec![b'x'; 600 * 1024], None)
                .await
                .unwrap();
        }
        let mut s = c
            .watch(
                "big",
                Some(
                    WatchOptions::new()
                        .with_prefix()
                        .with_start_revision(1)
                        .with_fragment(),
                ),
            )
            .await
            .unwrap();
        assert!(next(&mut s).await.created());
        // etcd-client reassembles nothing: we see the fragments.
        let mut events = 0;
        let mut responses = 0;
        while events < 3 {
            let r = next(&mut s).await;
            responses += 1;
            events += r.events().len();
        }
        assert_eq!(events, 3);
        assert!(responses >= 2, "a 1.8 MiB response was not fragmented");
    });
}

#[test]
fn slow_watcher_catches_up_without_losing_events() {
    let cluster = one_member(&[]);
    runtime().block_on(async {
        let mut c = client(&cluster.endpoint_list()).await;
        let start = c
            .put("s", "0", None)
            .await
            .unwrap()
            .header()
            .unwrap()
            .revision()
            + 1;
        let mut s = c
            .watch(
                "s",
                Some(WatchOptions::new().with_prefix().with_start_revision(start)),
            )
            .await
            .unwrap();
        assert!(next(&mut s).await.created());
        // Write far more than the stream buffers while nobody reads.
        const N: usize = 5000;
        let mut writer = c.clone();
        let writes = tokio::spawn(async move {
            for i in 0..N {
                writer
                    .put(format!("s{}", i % 50), i.to_string(), None)
                    .await
                    .unwrap();
            }
        });
        tokio::time::sleep(Duration::from_secs(2)).await;
        let events = collect(&mut s, N).await;
        writes.await.unwrap();
        let revs: Vec<i64> = events.iter().map(|e| e.0).collect();
        let want: Vec<i64> = (start..start + N as i64).collect();
        assert_eq!(revs, want, "events missing, duplicated or out of order");
    });
}

#[test]
fn watcher_sees_exact_history_across_leader_failover() {
    let mut cluster = Cluster::start(Options::default());
    let leader = cluster.wait_leader(WAIT);
    let watch_on = (leader + 1) % 3;
    let writer_on = (leader + 2) % 3;
    let rt = runtime();
    rt.block_on(async {
        let mut c = client(&[cluster.members[writer_on].endpoint()]).await;
        let r = c.put("h/0", "start", None).await.unwrap();
        let from = r.header().unwrap().revision();
        let mut w = client(&[cluster.members[watch_on].endpoint()]).await;
        let mut s = w
            .watch(
                "h/",
                Some(WatchOptions::new().with_prefix().with_start_revision(from)),
            )
            .await
            .unwrap();
        assert!(next(&mut s).await.created());
        // Writes continue while the leader is killed.
        let mut writer = c.clone();
        let writes = tokio::spawn(async move {
            let mut acked = 0;
            let deadline = Instant::now() + Duration::from_secs(6);
            let mut i = 1;
            while Instant::now() < deadline {
                let put = writer.put(format!("h/{i}"), i.to_string(), None);
                if let Ok(Ok(_)) = tokio::time::timeout(Duration::from_millis(500), put).await {
                    acked += 1;
                }
                i += 1;
            }
            acked
        });
        tokio::time::sleep(Duration::from_millis(1500)).await;
        cluster.kill(leader);
        let acked = writes.await.unwrap();
        assert!(acked > 20, "too few writes: {acked}");
        // The history as the store has it now.
        let now = c
            .get(
                "h/",
                Some(GetOptions::new().with_prefix().with_count_only()),
            )
            .await
            .unwrap();
        let last = now.header().unwrap().revision();
        let mut history = Vec::new();
        for rev in from..=last {
            let r = c
                .get(
                    "h/",
                    Some(
                        GetOptions::new()
                            .with_prefix()
                            .with_min_mod_revision(rev)
                            .with_max_mod_revision(rev)
                            .with_revision(rev),
                    ),
                )
                .await
                .unwrap();
            for kv in r.kvs() {
                history.push((rev, kv.key_str().unwrap().to_string(), true));
            }
        }
        let events = collect(&mut s, history.len()).await;
        assert_eq!(events, history, "watch diverged from the store's history");
        // Nothing extra arrives.
        let extra = tokio::time::timeout(Duration::from_millis(500), s.message()).await;
        if let Ok(Ok(Some(r))) = extra {
            assert!(
                r.events().is_empty(),
                "duplicate events after the history: {r:?}"
            );
        }
    });
}

#[test]
fn lease_does_not_expire_early_across_leader_failover() {
    let mut cluster = Cluster::start(Options::default());
    let leader = cluster.wait_leader(WAIT);
    let survivors: Vec<String> = (0..3)
        .filter(|i| *i != leader)
        .map(|i| cluster.members[i].endpoint())
        .collect();
    let rt = runtime();
    let ttl = 4;
    let (id, renewed_at) = rt.block_on(async {
        let mut c = client(&survivors).await;
        let id = c.lease_grant(ttl, None).await.unwrap().id();
        c.put("leased", "v", Some(PutOptions::new().with_lease(id)))
            .await
            .unwrap();
        let (mut keeper, mut responses) = c.lease_keep_alive(id).await.unwrap();
        keeper.keep_alive().await.unwrap();
        let r = responses.message().await.unwrap().unwrap();
        assert_eq!(r.ttl(), ttl);
        (id, Instant::now())
    });
    cluster.kill(leader);
    rt.block_on(async {
        let mut c = client(&survivors).await;
        // Until the TTL has passed since the last keep-alive, the key stays.
        while renewed_at.elapsed() < Duration::from_secs(ttl as u64) - Duration::from_millis(300) {
            if let Ok(Ok(r)) = tokio::time::timeout(
                Duration::from_millis(500),
                c.get("leased", Some(GetOptions::new().with_serializable())),
            )
            .await
            {
                assert_eq!(
                    r.kvs().len(),
                    1,
                    "lease expired {:?} after its last renewal (TTL {ttl}s)",
                    renewed_at.elapsed()
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        // And it does expire afterwards (new leader: TTL + election timeout).
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let r = c.lease_time_to_live(id, None).await.unwrap();
            if r.ttl() == -1 {
                break;
            }
            assert!(Instant::now() < deadline, "lease never expired");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        assert!(c.get("leased", None).await.unwrap().kvs().is_empty());
    });
}

/// A leader frozen (SIGSTOP, a long pause) past its leases' TTL wakes still
/// believing it leads, with every lease "expired" by its clock, while its
/// successor kept them alive. The revokes it proposes before it learns of
/// the new term must never take effect: once it is a follower raft forwards
/// them to the new leader, and before the fix the keys of kept-alive leases
/// were deleted (robustness `stop_leader`, seed 18).
#[test]
fn a_frozen_leader_does_not_revoke_leases_its_successor_kept_alive() {
    const LEASES: usize = 20;
    const TTL_SECS: i64 = 3;
    let cluster = Cluster::start(Options::default());
    let old = cluster.wait_leader(WAIT);
    let followers: Vec<String> = (0..3)
        .filter(|i| *i != old)
        .map(|i| cluster.members[i].endpoint())
        .collect();
    let signal = |sig: &str| cluster.members[old].signal(sig);
    let rt = runtime();
    rt.block_on(async {
        let mut c = client(&followers).await;
        let mut ids = Vec::new();
        for i in 0..LEASES {
            let id = c.lease_grant(TTL_SECS, None).await.unwrap().id();
            c.put(
                format!("frozen/{i}"),
                "v",
                Some(PutOptions::new().with_lease(id)),
            )
            .await
            .unwrap();
            ids.push(id);
        }
        // Keep every lease alive through the followers, about twice per
        // TTL each, for the whole test.
        let keepers: Vec<_> = ids
            .iter()
            .map(|id| {
                let (mut c, id) = (c.clone(), *id);
                tokio::spawn(async move {
                    loop {
                        let _ = tokio::time::timeout(Duration::from_millis(1_000), async {
                            let (mut k, mut s) = c.lease_keep_alive(id).await?;
                            k.keep_alive().await?;
                            s.message().await
                        })
                        .await;
                        tokio::time::sleep(Duration::from_millis(300)).await;
                    }
                })
            })
            .collect();
        signal("-STOP");
        // Frozen past the TTL (and past an election) by its clock.
        tokio::time::sleep(Duration::from_secs(TTL_SECS as u64 + 2)).await;
        signal("-CONT");
        // For two TTLs after it wakes, every kept-alive key stays.
        let until = Instant::now() + Duration::from_secs(2 * TTL_SECS as u64);
        while Instant::now() < until {
            if let Ok(Ok(r)) = tokio::time::timeout(
                Duration::from_millis(500),
                c.get("frozen/", Some(GetOptions::new().with_prefix())),
            )
            .await
            {
                assert_eq!(
                    r.kvs().len(),
                    LEASES,
                    "kept-alive leases' keys were deleted after the old leader woke: {:?}",
                    r.kvs()
                        .iter()
                        .map(|kv| kv.key_str().unwrap_or("?"))
                        .collect::<Vec<_>>()
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        for k in keepers {
            k.abort();
        }
        for id in ids {
            let r = c.lease_time_to_live(id, None).await.unwrap();
            assert!(r.ttl() > 0, "lease {id:x} gone: {r:?}");
        }
    });
}

/// `--experimental-enable-lease-checkpoint`: the leader records leases'
/// remaining TTLs through raft, so a new leader continues a lease where the
/// old one was instead of granting it its full TTL again; and a lease
/// renewed since is not cut short by the next leader (the renewal clears
/// the record; that step itself is unit-tested in `state::lease`).
#[test]
fn lease_checkpoints_survive_a_leader_kill() {
    let env = |v: &str| {
        (0..3)
            .map(|i| {
                (
                    i,
                    "CAIRN_TEST_LEASE_CHECKPOINT_INTERVAL_MS".to_string(),
                    v.to_string(),
                )
            })
            .collect::<Vec<_>>()
    };
    let mut cluster = Cluster::start(Options {
        extra_args: vec!["--experimental-enable-lease-checkpoint".into()],
        member_env: env("500"),
        ..Options::default()
    });
    let rt = runtime();
    let ttl: i64 = 60;
    let remaining_after_failover =
        |cluster: &mut Cluster, rt: &tokio::runtime::Runtime, id: i64| {
            let leader = cluster.wait_leader(WAIT);
            cluster.kill(leader);
            let survivors: Vec<String> = (0..3)
                .filter(|i| *i != leader)
                .map(|i| cluster.members[i].endpoint())
                .collect();
            let new_leader = cluster.wait_leader(WAIT);
            assert_ne!(new_leader, leader);
            let remaining = rt.block_on(async {
                let mut c = client(&survivors).await;
                // Asked until the new leader has taken over the lease clocks.
                let deadline = Instant::now() + WAIT;
                loop {
                    if let Ok(r) = c.lease_time_to_live(id, None).await
                        && r.ttl() > 0
                        && r.ttl() != ttl
                    {
                        break r.ttl();
                    }
                    assert!(Instant::now() < deadline, "no answer from the new leader");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            });
            cluster.restart(leader);
            cluster.wait_healthy(WAIT);
            remaining
        };

    let (id, granted) = rt.block_on(async {
        let mut c = client(&cluster.endpoint_list()).await;
        let id = c.lease_grant(ttl, None).await.unwrap().id();
        (id, Instant::now())
    });
    // Several checkpoint rounds go by.
    std::thread::sleep(Duration::from_secs(6));
    let remaining = remaining_after_failover(&mut cluster, &rt, id);
    let elapsed = granted.elapsed().as_secs() as i64;
    // Without checkpoints the new leader would give the lease its full TTL
    // plus an election timeout (60). With them it continues from the last
    // checkpoint: at most a round's worth (plus the election) above what
    // is really left.
    assert!(
        remaining <= ttl - 5,
        "after {elapsed}s of a {ttl}s lease the new leader says {remaining}s remain"
    );

    // A keep-alive restores the full TTL, and clears the checkpoint record.
    rt.block_on(async {
        let mut c = client(&cluster.endpoint_list()).await;
        let (mut keeper, mut responses) = c.lease_keep_alive(id).await.unwrap();
        keeper.keep_alive().await.unwrap();
        let r = responses.message().await.unwrap().unwrap();
        assert_eq!(r.ttl(), ttl);
    });
    let renewed = Instant::now();
    // Whatever the records say now (cleared, or a later round's), none
    // may be below what is really left.
    std::thread::sleep(Duration::from_secs(2));
    let remaining = remaining_after_failover(&mut cluster, &rt, id);
    let left = ttl - renewed.elapsed().as_secs() as i64;
    assert!(
        remaining >= left - 3,
        "{remaining}s remain after a renewal {:?} ago (TTL {ttl}s): the record was not cleared",
        renewed.elapsed()
    );
}

#[test]
fn leases_and_history_survive_restarts_and_snapshots() {
    let mut cluster = Cluster::start(Options {
        snapshot_count: Some(50),
        ..Options::default()
    });
    let rt = runtime();
    let (id, first_rev) = rt.block_on(async {
        let mut c = client(&cluster.endpoint_list()).await;
        let id = c
            .lease_grant(300, Some(LeaseGrantOptions::new().with_id(0x1234)))
            .await
            .unwrap()
            .id();
        assert_eq!(id, 0x1234);
        let r = c
            .put("held", "v", Some(PutOptions::new().with_lease(id)))
            .await
            .unwrap();
        (id, r.header().unwrap().revision())
    });
    // Every member restarts from disk.
    for i in 0..3 {
        cluster.stop(i);
    }
    for i in 0..3 {
        cluster.restart(i);
    }
    cluster.wait_healthy(WAIT);
    // One member misses enough entries to need a snapshot.
    let leader = cluster.wait_leader(WAIT);
    let lagger = (leader + 1) % 3;
    cluster.stop(lagger);
    rt.block_on(async {
        let live: Vec<String> = (0..3)
            .filter(|i| *i != lagger)
            .map(|i| cluster.members[i].endpoint())
            .collect();
        let mut c = client(&live).await;
        for i in 0..200 {
            c.put(format!("fill{i}"), "x", None).await.unwrap();
        }
    });
    cluster.restart(lagger);
    cluster.wait_healthy(WAIT);
    rt.block_on(async {
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut c = client(&[cluster.members[lagger].endpoint()]).await;
        loop {
            let r = c
                .get(
                    "fill",
                    Some(
                        GetOptions::new()
                            .with_prefix()
                            .with_count_only()
                            .with_serializable(),
                    ),
                )
                .await
                .unwrap();
            if r.count() == 200 {
                break;
            }
            assert!(Instant::now() < deadline, "lagging member never caught up");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        // The snapshot carried the lease and its key, on this member too.
        let r = c
            .lease_time_to_live(id, Some(LeaseTimeToLiveOptions::new().with_keys()))
            .await
            .unwrap();
        assert_eq!(r.granted_ttl(), 300);
        assert_eq!(r.keys(), [b"held".to_vec()]);
        assert_eq!(c.leases().await.unwrap().leases().len(), 1);
        // History replays from before the restarts.
        let mut s = c
            .watch(
                "held",
                Some(WatchOptions::new().with_start_revision(first_rev)),
            )
            .await
            .unwrap();
        assert!(next(&mut s).await.created());
        let ev = collect(&mut s, 1).await;
        assert_eq!(ev[0], (first_rev, "held".to_string(), true));
        c.lease_revoke(id).await.unwrap();
        assert!(c.get("held", None).await.unwrap().kvs().is_empty());
    });
    assert!(cluster.members[lagger].log().contains("applied snapshot"));
}

/// A Lock without a lease gets a session lease of its own, as etcd's
/// server-side session does; before, every lease-less caller got the key
/// `name/0` and all of them "held" the lock at once.
#[test]
fn locks_without_a_lease_still_exclude_each_other() {
    let cluster = Cluster::start(Options::default());
    runtime().block_on(async {
        let mut c = client(&cluster.endpoint_list()).await;
        let held = c.lock("bare-lock", None).await.unwrap();
        let key1 = held.key().to_vec();
        let lease_hex = String::from_utf8_lossy(&key1["bare-lock/".len()..]).into_owned();
        let lease = i64::from_str_radix(&lease_hex, 16).expect("key ends in a lease ID");
        assert_ne!(lease, 0, "{}", String::from_utf8_lossy(&key1));
        let ttl = c.lease_time_to_live(lease, None).await.unwrap().ttl();
        assert!((1..=60).contains(&ttl), "session lease TTL {ttl}");

        let mut c2 = c.clone();
        let waiter =
            tokio::spawn(async move { c2.lock("bare-lock", None).await.unwrap().key().to_vec() });
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert!(
            !waiter.is_finished(),
            "a second lease-less lock was granted while the first is held"
        );
        c.unlock(key1.clone()).await.unwrap();
        let key2 = tokio::time::timeout(WAIT, waiter).await.unwrap().unwrap();
        assert_ne!(key2, key1);
    });
}

#[test]
fn lock_and_election_services() {
    let cluster = Cluster::start(Options::default());
    runtime().block_on(async {
        let mut c = client(&cluster.endpoint_list()).await;
        let l1 = c.lease_grant(30, None).await.unwrap().id();
        let l2 = c.lease_grant(30, None).await.unwrap().id();
        let held = c
            .lock(
                "svc-lock",
                Some(etcd_client::LockOptions::new().with_lease(l1)),
            )
            .await
            .unwrap();
        let key1 = held.key().to_vec();
        assert!(key1.starts_with(b"svc-lock/"));
        // A second holder waits until the first unlocks.
        let mut c2 = c.clone();
        let waiter = tokio::spawn(async move {
            let r = c2
                .lock(
                    "svc-lock",
                    Some(etcd_client::LockOptions::new().with_lease(l2)),
                )
                .await
                .unwrap();
            (r.key().to_vec(), Instant::now())
        });
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert!(
            !waiter.is_finished(),
            "second lock granted while the first is held"
        );
        let released = Instant::now();
        c.unlock(key1).await.unwrap();
        let (key2, got) = tokio::time::timeout(WAIT, waiter).await.unwrap().unwrap();
        assert!(got >= released);
        assert!(key2.starts_with(b"svc-lock/"));

        // Election: campaign, leader, proclaim, observe, resign.
        let e1 = c.lease_grant(30, None).await.unwrap().id();
        let e2 = c.lease_grant(30, None).await.unwrap().id();
        let won = c.campaign("svc-elect", "one", e1).await.unwrap();
        let leader_key = won.leader().unwrap().clone();
        let l = c.leader("svc-elect").await.unwrap();
        assert_eq!(l.kv().unwrap().value(), b"one");
        let mut observe = c.observe("svc-elect").await.unwrap();
        let first = tokio::time::timeout(WAIT, observe.message())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        assert_eq!(first.kv().unwrap().value(), b"one");
        c.proclaim(
            "uno",
            Some(etcd_client::ProclaimOptions::new().with_leader(leader_key.clone())),
        )
        .await
        .unwrap();
        let next_obs = tokio::time::timeout(WAIT, observe.message())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        assert_eq!(next_obs.kv().unwrap().value(), b"uno");
        let mut c3 = c.clone();
        let second =
            tokio::spawn(async move { c3.campaign("svc-elect", "two", e2).await.unwrap() });
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert!(!second.is_finished());
        c.resign(Some(
            etcd_client::ResignOptions::new().with_leader(leader_key),
        ))
        .await
        .unwrap();
        tokio::time::timeout(WAIT, second).await.unwrap().unwrap();
        let l = c.leader("svc-elect").await.unwrap();
        assert_eq!(l.kv().unwrap().value(), b"two");
        let obs = tokio::time::timeout(WAIT, observe.message())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        assert_eq!(obs.kv().unwrap().value(), b"two");
        // No leader for an unknown election.
        let e = c.leader("nobody").await.unwrap_err();
        assert!(e.to_string().contains("election: no leader"), "{e}");
    });
}

#[test]
fn lease_grant_rules() {
    let cluster = one_member(&[]);
    runtime().block_on(async {
        let mut c = client(&cluster.endpoint_list()).await;
        // Below the minimum TTL (1.5 election timeouts = 2 s here): raised.
        let r = c.lease_grant(1, None).await.unwrap();
        assert_eq!(r.ttl(), 2);
        let r = c
            .lease_grant(10, Some(LeaseGrantOptions::new().with_id(42)))
            .await
            .unwrap();
        assert_eq!(r.id(), 42);
        let e = c
            .lease_grant(10, Some(LeaseGrantOptions::new().with_id(42)))
            .await
            .unwrap_err();
        assert!(
            e.to_string().contains("etcdserver: lease already exists"),
            "{e}"
        );
        let e = c.lease_grant(9_000_000_001, None).await.unwrap_err();
        assert!(
            e.to_string().contains("etcdserver: too large lease TTL"),
            "{e}"
        );
        // Keep-alive of an unknown lease: the server answers TTL 0 without
        // an error, which etcd-client reports as "lease not found".
        // (etcd-client sends the first keep-alive when opening the stream.)
        match c.lease_keep_alive(999).await {
            Err(etcd_client::Error::LeaseKeepAliveError(m)) => assert_eq!(m, "lease not found"),
            Err(e) => panic!("expected TTL 0 for an unknown lease, got {e}"),
            Ok(_) => panic!("expected TTL 0 for an unknown lease"),
        }
        // TTL of an unknown lease: -1.
        assert_eq!(c.lease_time_to_live(999, None).await.unwrap().ttl(), -1);
        // ignore_lease keeps the key's lease.
        c.put("k", "v", Some(PutOptions::new().with_lease(42)))
            .await
            .unwrap();
        c.put("k", "v2", Some(PutOptions::new().with_ignore_lease()))
            .await
            .unwrap();
        let kv = c.get("k", None).await.unwrap().kvs()[0].clone();
        assert_eq!((kv.lease(), kv.value()), (42, &b"v2"[..]));
        // A put without a lease detaches the key.
        c.put("k", "v3", None).await.unwrap();
        let r = c
            .lease_time_to_live(42, Some(LeaseTimeToLiveOptions::new().with_keys()))
            .await
            .unwrap();
        assert!(r.keys().is_empty());
    });
}
