//! Peer prober: measures round-trip time and clock difference to every other
//! member over the peer port.
//!
//! Leases and JWT expiry assume the members' clocks roughly agree, and a
//! member whose clock jumped is a common cause of odd lease behaviour, so,
//! like etcd, every member probes its peers and warns when a peer's wall
//! clock is more than a second away from its own.
//!
//! The estimate is the classic one: the peer's clock reading is compared to
//! the midpoint of the local send and receive times, so half the round trip
//! is the error bound.

use super::Transport;
use crate::metrics::METRICS;
use crate::pb::cairnpb::ProbeRequest;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

const PROBE_INTERVAL: Duration = Duration::from_secs(2);
/// A probe slower than this counts as failed (and measures nothing).
const PROBE_TIMEOUT: Duration = Duration::from_secs(1);
/// A larger difference is worth a warning (etcd's threshold).
pub const MAX_CLOCK_DIFFERENCE: Duration = Duration::from_secs(1);
/// The same peer is warned about at most this often.
const WARN_EVERY: Duration = Duration::from_secs(30);

/// What the last successful probe of a peer measured and what the peer
/// said about itself (the operator console's member table reads it).
#[derive(Debug, Clone)]
pub struct PeerProbe {
    pub at: Instant,
    pub rtt: Duration,
    /// Peer clock minus ours.
    pub clock_difference_nanos: i64,
    pub status: Option<crate::pb::cairnpb::ProbeStatus>,
}

impl PeerProbe {
    /// Whether the probe is recent enough to call the peer reachable: three
    /// probe rounds without an answer mean it is not.
    pub fn is_fresh(&self) -> bool {
        self.at.elapsed() <= PROBE_INTERVAL * 3
    }

    pub fn clock_drift_too_high(&self) -> bool {
        Duration::from_nanos(self.clock_difference_nanos.unsigned_abs()) > MAX_CLOCK_DIFFERENCE
    }
}

/// The last probe per peer; bounded by the membership (removed members are
/// dropped each round).
#[derive(Debug, Default)]
pub struct ProbeTable {
    inner: parking_lot::Mutex<HashMap<u64, PeerProbe>>,
}

impl ProbeTable {
    pub fn get(&self, id: u64) -> Option<PeerProbe> {
        self.inner.lock().get(&id).cloned()
    }

    fn record(&self, id: u64, probe: PeerProbe) {
        self.inner.lock().insert(id, probe);
    }

    fn retain(&self, peers: &[u64]) {
        self.inner.lock().retain(|id, _| peers.contains(id));
    }
}

/// This member's wall clock, Unix nanoseconds: what it reports to peers.
pub fn unix_nanos() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as i64)
        .unwrap_or(0)
}

/// Peer clock minus local clock, from one probe: the peer read its clock
/// somewhere between our send and receive, most likely in the middle.
fn clock_difference_nanos(sent_unix_nanos: i64, rtt: Duration, peer_unix_nanos: i64) -> i64 {
    let midpoint = sent_unix_nanos.saturating_add(rtt.as_nanos() as i64 / 2);
    peer_unix_nanos.saturating_sub(midpoint)
}

/// Probes every peer forever; runs as one task per member.
pub async fn run(transport: Arc<Transport>) {
    let mut last_warned: HashMap<u64, Instant> = HashMap::new();
    let mut ticker = tokio::time::interval(PROBE_INTERVAL);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        let peers: Vec<u64> = transport
            .membership
            .ids()
            .into_iter()
            .filter(|id| *id != transport.self_id)
            .collect();
        last_warned.retain(|id, _| peers.contains(id));
        transport.probes.retain(&peers);
        // Peers are probed one after another: a handful of members, each
        // bounded by the timeout, never delays the next round much.
        for id in peers {
            let Some(mut client) = transport.client(id) else {
                continue;
            };
            let req = transport.request(id, ProbeRequest {});
            // This member's clock as it reports it (the test offset shifts
            // both what it tells peers and what it compares them with).
            let sent = unix_nanos();
            let started = Instant::now();
            let answer = tokio::time::timeout(PROBE_TIMEOUT, client.probe(req)).await;
            let rtt = started.elapsed();
            let Ok(Ok(resp)) = answer else {
                continue;
            };
            transport.stats.rtt(id, rtt.as_secs_f64() * 1000.0);
            let label = format!("{id:x}");
            METRICS
                .peer_rtt
                .with_label_values(&[&label])
                .observe(rtt.as_secs_f64());
            let resp = resp.into_inner();
            let diff_nanos = clock_difference_nanos(sent, rtt, resp.unix_nanos);
            transport.probes.record(
                id,
                PeerProbe {
                    at: Instant::now(),
                    rtt,
                    clock_difference_nanos: diff_nanos,
                    status: resp.status,
                },
            );
            let diff = Duration::from_nanos(diff_nanos.unsigned_abs());
            METRICS
                .peer_clock_difference
                .with_label_values(&[&label])
                .set(diff_nanos as f64 / 1e9);
            if diff > MAX_CLOCK_DIFFERENCE {
                let due = last_warned
                    .get(&id)
                    .is_none_or(|t| t.elapsed() >= WARN_EVERY);
                if due {
                    last_warned.insert(id, Instant::now());
                    tracing::warn!(
                        peer = %label,
                        clock_difference_ms = diff_nanos / 1_000_000,
                        rtt_ms = rtt.as_millis() as u64,
                        "the clock difference against peer {label} is too high [{diff:?} > {MAX_CLOCK_DIFFERENCE:?}]"
                    );
                }
            } else {
                last_warned.remove(&id);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn difference_is_measured_against_the_midpoint() {
        let rtt = Duration::from_millis(10);
        // The peer read its clock exactly halfway: no difference.
        assert_eq!(clock_difference_nanos(1_000_000_000, rtt, 1_005_000_000), 0);
        // A peer two seconds ahead.
        assert_eq!(
            clock_difference_nanos(1_000_000_000, rtt, 3_005_000_000),
            2_000_000_000
        );
        // And one behind.
        assert_eq!(
            clock_difference_nanos(10_000_000_000, rtt, 8_505_000_000),
            -1_500_000_000
        );
    }
}
