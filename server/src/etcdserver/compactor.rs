//! Auto-compaction (`--auto-compaction-mode`, `--auto-compaction-retention`),
//! with etcd's cadence. Runs on every member, acts only on the leader, and
//! compacts through raft like a client's Compact. Reads the live
//! configuration each round, so a reload takes effect without a restart.
//!
//! - periodic, retention P: the current revision is sampled every
//!   min(P, 1h)/10; every min(P, 1h) the leader compacts to the revision
//!   sampled P ago (so history newer than P is always kept).
//! - revision, retention N: every 5 minutes the leader compacts to
//!   (current revision − N).

use super::EtcdServer;
use crate::pb::etcdserverpb::CompactionRequest;
use cairn_config::AutoCompactionRetention;
use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

const HOUR: Duration = Duration::from_secs(3600);
/// etcd's revision-mode cadence.
const REVISION_INTERVAL: Duration = Duration::from_secs(300);
/// How often a disabled compactor looks at the configuration again.
const IDLE: Duration = Duration::from_secs(1);
/// Samples kept at most (ten per interval plus slack).
const MAX_SAMPLES: usize = 64;

/// The revision to compact to in periodic mode: the newest sample taken at
/// least `retention` ago. Drops samples older than that one.
fn periodic_target(
    samples: &mut VecDeque<(Instant, i64)>,
    now: Instant,
    retention: Duration,
) -> Option<i64> {
    while samples.len() >= 2 && now.duration_since(samples[1].0) >= retention {
        samples.pop_front();
    }
    let &(t, rev) = samples.front()?;
    (now.duration_since(t) >= retention).then_some(rev)
}

async fn compact(srv: &EtcdServer, rev: i64, why: &str) {
    if rev <= srv.store.compact_rev() {
        return;
    }
    tracing::info!(revision = rev, retention = why, "starting auto-compaction");
    let req = CompactionRequest {
        revision: rev,
        physical: false,
    };
    match srv.propose_internal(req).await {
        Ok(_) => tracing::info!(revision = rev, "auto-compaction scheduled"),
        Err(e) => tracing::warn!(revision = rev, error = %e, "auto-compaction failed"),
    }
}

pub async fn run(srv: Arc<EtcdServer>) {
    let mut samples: VecDeque<(Instant, i64)> = VecDeque::new();
    let mut last_compaction = Instant::now();
    let mut last_revision_check = Instant::now();
    loop {
        let retention = srv.config.load().auto_compaction_retention;
        let pause = match retention {
            AutoCompactionRetention::Disabled => {
                samples.clear();
                IDLE
            }
            AutoCompactionRetention::Period(p) => {
                let interval = p.min(HOUR);
                let now = Instant::now();
                samples.push_back((now, srv.store.current_rev()));
                if samples.len() > MAX_SAMPLES {
                    samples.pop_front();
                }
                let target = periodic_target(&mut samples, now, p);
                if srv.status.is_leader()
                    && now.duration_since(last_compaction) >= interval
                    && let Some(rev) = target
                {
                    last_compaction = now;
                    compact(&srv, rev, &format!("{p:?}")).await;
                }
                (interval / 10).max(Duration::from_millis(100))
            }
            AutoCompactionRetention::Revisions(n) => {
                samples.clear();
                if srv.status.is_leader() && last_revision_check.elapsed() >= REVISION_INTERVAL {
                    last_revision_check = Instant::now();
                    let target = srv.store.current_rev() - n as i64;
                    if target > 0 {
                        compact(&srv, target, &format!("{n} revisions")).await;
                    }
                }
                IDLE
            }
        };
        tokio::time::sleep(pause).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn periodic_target_keeps_history_newer_than_retention() {
        let t0 = Instant::now();
        let s = |secs: u64| t0 + Duration::from_secs(secs);
        let mut samples: VecDeque<(Instant, i64)> =
            [(s(0), 10), (s(1), 20), (s(2), 30), (s(3), 40)]
                .into_iter()
                .collect();
        // Retention 2 s at t=3: the newest sample at least 2 s old is t=1.
        assert_eq!(
            periodic_target(&mut samples, s(3), Duration::from_secs(2)),
            Some(20)
        );
        assert_eq!(samples.front().map(|x| x.1), Some(20));
        // Nothing old enough yet.
        let mut fresh: VecDeque<(Instant, i64)> = [(s(3), 40)].into_iter().collect();
        assert_eq!(
            periodic_target(&mut fresh, s(3), Duration::from_secs(2)),
            None
        );
    }
}
