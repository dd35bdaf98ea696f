//! A rolling restart of every member under a steady write load, the way
//! operators upgrade a cluster: SIGTERM one member, start it again, wait
//! until it is healthy, next. The stopping leader hands leadership over and
//! its client connections drain, so no write fails (issue 20, item 2).
//! The latency figures live in `cargo xtask bench rolling-restart`.

use cairn_tests::steady::{self, Outcome};
use cairn_tests::{Cluster, Options};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

const WRITERS: usize = 6;
/// Load before the first stop and after each member is back.
const SETTLE: Duration = Duration::from_millis(1500);

#[test]
fn rolling_restart_under_writes_fails_no_request() {
    let mut c = Cluster::start(Options::default());
    let rt = cairn_tests::runtime();
    let endpoints = Arc::new(c.endpoint_list());
    let stop = Arc::new(AtomicBool::new(false));
    let writers: Vec<_> = (0..WRITERS)
        .map(|w| {
            rt.spawn(steady::writer(
                Arc::clone(&endpoints),
                w,
                format!("rolling/{w}"),
                Arc::clone(&stop),
            ))
        })
        .collect();
    std::thread::sleep(SETTLE);

    // The leader first, so the hand-over is certainly exercised.
    let leader = c.wait_leader(Duration::from_secs(10));
    let mut order = vec![leader];
    order.extend((0..c.members.len()).filter(|&i| i != leader));
    for &i in &order {
        c.stop(i);
        c.restart(i);
        c.wait_healthy(Duration::from_secs(30));
        std::thread::sleep(SETTLE);
    }
    stop.store(true, Ordering::Relaxed);
    let mut all = Outcome::default();
    for w in writers {
        all.merge(rt.block_on(w).expect("writer task"));
    }

    let old_leader_log = c.members[leader].log();
    assert!(
        old_leader_log.contains("leadership transfer finished"),
        "the stopped leader did not hand over:\n{}",
        cairn_tests::tail(&old_leader_log, 30)
    );
    assert!(
        all.latencies_us.len() > 100,
        "too few writes to judge: {}",
        all.latencies_us.len()
    );
    assert_eq!(
        all.failed,
        0,
        "{} of {} writes failed during the rolling restart: {:?}\n{}",
        all.failed,
        all.latencies_us.len() as u64 + all.failed,
        all.error_messages,
        c.logs_tail(20)
    );
    eprintln!(
        "rolling restart: {} writes, {} failovers, worst latency {:.1} ms",
        all.latencies_us.len(),
        all.failovers,
        all.max_ms()
    );
}
