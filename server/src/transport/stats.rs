//! Per-peer transport statistics behind `/v2/stats/self` and
//! `/v2/stats/leader`: append messages sent and received, messages handed to
//! or dropped by each peer's queue, and round-trip times from the prober.

use parking_lot::Mutex;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};

#[derive(Debug, Default)]
pub struct TransportStats {
    appends_sent: AtomicU64,
    appends_received: AtomicU64,
    peers: Mutex<HashMap<u64, PeerAcc>>,
}

#[derive(Debug, Default, Clone, Copy)]
struct PeerAcc {
    success: u64,
    fail: u64,
    rtt_samples: u64,
    rtt_current_ms: f64,
    rtt_sum_ms: f64,
    rtt_sum_sq_ms: f64,
    rtt_min_ms: f64,
    rtt_max_ms: f64,
}

#[derive(Debug, Default, Clone, Copy, PartialEq)]
pub struct AppendCounts {
    pub sent: u64,
    pub received: u64,
}

/// Round-trip times in milliseconds (all zero before the first probe).
#[derive(Debug, Default, Clone, Copy, PartialEq)]
pub struct RttStats {
    pub current: f64,
    pub average: f64,
    pub standard_deviation: f64,
    pub minimum: f64,
    pub maximum: f64,
}

#[derive(Debug, Default, Clone, Copy, PartialEq)]
pub struct PeerStats {
    pub success: u64,
    pub fail: u64,
    pub rtt_ms: RttStats,
}

impl TransportStats {
    pub fn append_sent(&self) {
        self.appends_sent.fetch_add(1, Ordering::Relaxed);
    }

    pub fn append_received(&self) {
        self.appends_received.fetch_add(1, Ordering::Relaxed);
    }

    pub fn append_counts(&self) -> AppendCounts {
        AppendCounts {
            sent: self.appends_sent.load(Ordering::Relaxed),
            received: self.appends_received.load(Ordering::Relaxed),
        }
    }

    /// A message was queued for `peer` (`ok`) or dropped.
    pub fn delivery(&self, peer: u64, ok: bool) {
        let mut peers = self.peers.lock();
        let acc = peers.entry(peer).or_default();
        if ok {
            acc.success += 1;
        } else {
            acc.fail += 1;
        }
    }

    pub fn rtt(&self, peer: u64, rtt_ms: f64) {
        let mut peers = self.peers.lock();
        let acc = peers.entry(peer).or_default();
        if acc.rtt_samples == 0 || rtt_ms < acc.rtt_min_ms {
            acc.rtt_min_ms = rtt_ms;
        }
        if rtt_ms > acc.rtt_max_ms {
            acc.rtt_max_ms = rtt_ms;
        }
        acc.rtt_samples += 1;
        acc.rtt_current_ms = rtt_ms;
        acc.rtt_sum_ms += rtt_ms;
        acc.rtt_sum_sq_ms += rtt_ms * rtt_ms;
    }

    pub fn forget(&self, peer: u64) {
        self.peers.lock().remove(&peer);
    }

    pub fn peer(&self, peer: u64) -> PeerStats {
        let acc = self.peers.lock().get(&peer).copied().unwrap_or_default();
        let n = acc.rtt_samples as f64;
        let (average, standard_deviation) = if acc.rtt_samples == 0 {
            (0.0, 0.0)
        } else {
            let mean = acc.rtt_sum_ms / n;
            let var = (acc.rtt_sum_sq_ms / n - mean * mean).max(0.0);
            (mean, var.sqrt())
        };
        PeerStats {
            success: acc.success,
            fail: acc.fail,
            rtt_ms: RttStats {
                current: acc.rtt_current_ms,
                average,
                standard_deviation,
                minimum: acc.rtt_min_ms,
                maximum: acc.rtt_max_ms,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rtt_summary() {
        let s = TransportStats::default();
        assert_eq!(s.peer(7), PeerStats::default());
        for ms in [2.0, 4.0, 6.0] {
            s.rtt(7, ms);
        }
        s.delivery(7, true);
        s.delivery(7, false);
        let p = s.peer(7);
        assert_eq!((p.success, p.fail), (1, 1));
        assert_eq!(p.rtt_ms.current, 6.0);
        assert_eq!(p.rtt_ms.average, 4.0);
        assert_eq!((p.rtt_ms.minimum, p.rtt_ms.maximum), (2.0, 6.0));
        assert!((p.rtt_ms.standard_deviation - (8.0f64 / 3.0).sqrt()).abs() < 1e-9);
    }
}
