//! Fault kinds and seeded schedules. The schedule says what happens when;
//! which member it hits (the leader, a follower) is decided when the fault
//! starts, from the cluster's state and the same seeded generator, and is
//! recorded with the run.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::rng::Rng;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum FaultKind {
    /// Cut the leader off from its peers (both ways).
    IsolateLeader,
    /// Cut one follower off from its peers.
    IsolateFollower,
    /// Bytes from the leader to the followers are held; the other way flows.
    OneWayFromLeader,
    /// Bytes from the followers to the leader are held.
    OneWayToLeader,
    /// Every peer link gets a delay with jitter.
    Delay,
    /// SIGKILL the leader; restart it at the end of the fault.
    KillLeader,
    /// SIGKILL a follower; restart it at the end of the fault.
    KillFollower,
    /// SIGSTOP the leader for the fault's duration, then SIGCONT.
    StopLeader,
    /// SIGTERM a member, wait for it to exit, start it again.
    Restart,
    /// Fill the file system under one member's data dir (needs a file
    /// system of its own, hence root); free it at the end of the fault.
    DiskFull,
    /// Jump one running member's wall clock 2-10 s forward or back, and
    /// back at the end (libfaketime, preloaded: programs that read the
    /// clock through libc only, so Cairn and not etcd).
    ClockSkew,
    /// SIGKILL a member, damage the tail of its newest journal file (zero
    /// or flip bits in its last bytes), start it again. It must recover
    /// safely or refuse to start with a clear error (then the original
    /// file is put back, as an operator would restore it).
    CorruptTail,
    /// Hand leadership to a follower (MoveLeader).
    MoveLeader,
    /// Membership under load: remove a follower, wipe its data dir, add it
    /// back as a learner, promote it once it caught up.
    ReplaceMember,
    /// A membership change (replace a follower, or move the leader) while
    /// another fault is on: the leader cut off, frozen, killed, or behind a
    /// one-way loss, or every link delayed. The change starts a moment
    /// after the other fault and may need it healed to finish.
    MemberChangeUnderFault,
    /// Throttle one member's writes to its disk (the leader half the
    /// time), so its fsyncs take tens to hundreds of milliseconds. Needs
    /// its data dir on a block device and a cgroup to limit it with.
    SlowDisk,
    /// Leadership changes while the leader is sending a follower a
    /// snapshot: the follower is cut off while a burst of writes takes the
    /// leader's log past it, then comes back over a thin link (the
    /// snapshot takes seconds), and part-way through the transfer the
    /// leader hands over, freezes or is killed. Needs a small
    /// `--snapshot-count` (runs drawing it set one).
    SnapshotLeaderChange,
}

impl FaultKind {
    pub const ALL: [FaultKind; 17] = [
        FaultKind::IsolateLeader,
        FaultKind::IsolateFollower,
        FaultKind::OneWayFromLeader,
        FaultKind::OneWayToLeader,
        FaultKind::Delay,
        FaultKind::KillLeader,
        FaultKind::KillFollower,
        FaultKind::StopLeader,
        FaultKind::Restart,
        FaultKind::DiskFull,
        FaultKind::ClockSkew,
        FaultKind::CorruptTail,
        FaultKind::MoveLeader,
        FaultKind::ReplaceMember,
        FaultKind::MemberChangeUnderFault,
        FaultKind::SlowDisk,
        FaultKind::SnapshotLeaderChange,
    ];

    pub fn name(self) -> &'static str {
        match self {
            FaultKind::IsolateLeader => "isolate-leader",
            FaultKind::IsolateFollower => "isolate-follower",
            FaultKind::OneWayFromLeader => "one-way-from-leader",
            FaultKind::OneWayToLeader => "one-way-to-leader",
            FaultKind::Delay => "delay",
            FaultKind::KillLeader => "kill-leader",
            FaultKind::KillFollower => "kill-follower",
            FaultKind::StopLeader => "stop-leader",
            FaultKind::Restart => "restart",
            FaultKind::DiskFull => "disk-full",
            FaultKind::ClockSkew => "clock-skew",
            FaultKind::CorruptTail => "corrupt-tail",
            FaultKind::MoveLeader => "move-leader",
            FaultKind::ReplaceMember => "replace-member",
            FaultKind::MemberChangeUnderFault => "member-change-under-fault",
            FaultKind::SlowDisk => "slow-disk",
            FaultKind::SnapshotLeaderChange => "snapshot-leader-change",
        }
    }

    /// True for faults done through the peer proxy.
    pub fn is_network(self) -> bool {
        matches!(
            self,
            FaultKind::IsolateLeader
                | FaultKind::IsolateFollower
                | FaultKind::OneWayFromLeader
                | FaultKind::OneWayToLeader
                | FaultKind::Delay
        )
    }
}

impl fmt::Display for FaultKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for FaultKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        FaultKind::ALL
            .into_iter()
            .find(|k| k.name() == s)
            .ok_or_else(|| {
                let names: Vec<&str> = FaultKind::ALL.iter().map(|k| k.name()).collect();
                format!("unknown fault {s:?}; one of: {}", names.join(", "))
            })
    }
}

/// One fault of a schedule: from `start_ms` after the workload started, for
/// `duration_ms`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlannedFault {
    pub kind: FaultKind,
    pub start_ms: u64,
    pub duration_ms: u64,
}

/// How a schedule is laid out over a run.
#[derive(Debug, Clone, Copy)]
pub struct ScheduleShape {
    /// Quiet time before the first fault (a baseline for availability).
    pub lead_in_ms: u64,
    /// Time after the last fault healed, before the workload stops.
    pub lead_out_ms: u64,
    pub min_fault_ms: u64,
    pub max_fault_ms: u64,
    /// Healed time between faults (recovery is measured there).
    pub min_gap_ms: u64,
    pub max_gap_ms: u64,
}

impl Default for ScheduleShape {
    fn default() -> Self {
        ScheduleShape {
            lead_in_ms: 2_000,
            lead_out_ms: 3_000,
            min_fault_ms: 2_000,
            max_fault_ms: 5_000,
            min_gap_ms: 2_000,
            max_gap_ms: 4_000,
        }
    }
}

/// Faults one after another (never overlapping), each kind drawn from
/// `kinds`, until the run's end minus the lead-out. At least one fault when
/// the run is long enough for the shortest one.
pub fn schedule(
    seed: u64,
    run_ms: u64,
    kinds: &[FaultKind],
    shape: &ScheduleShape,
) -> Vec<PlannedFault> {
    let mut rng = Rng::new(seed);
    let mut out = Vec::new();
    if kinds.is_empty() {
        return out;
    }
    let mut t = shape.lead_in_ms;
    loop {
        let kind = *rng.pick(kinds);
        let duration_ms = rng.range(shape.min_fault_ms, shape.max_fault_ms);
        if t + duration_ms + shape.lead_out_ms > run_ms {
            break;
        }
        out.push(PlannedFault {
            kind,
            start_ms: t,
            duration_ms,
        });
        t += duration_ms + rng.range(shape.min_gap_ms, shape.max_gap_ms);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedules_replay_from_the_seed_and_fit_the_run() {
        let shape = ScheduleShape::default();
        let a = schedule(42, 60_000, &FaultKind::ALL, &shape);
        assert_eq!(a, schedule(42, 60_000, &FaultKind::ALL, &shape));
        assert_ne!(a, schedule(43, 60_000, &FaultKind::ALL, &shape));
        assert!(a.len() >= 5, "{a:?}");
        for w in a.windows(2) {
            assert!(w[0].start_ms + w[0].duration_ms + shape.min_gap_ms <= w[1].start_ms);
        }
        let last = a.last().unwrap();
        assert!(last.start_ms + last.duration_ms + shape.lead_out_ms <= 60_000);
        assert!(schedule(1, 1_000, &FaultKind::ALL, &shape).is_empty());
    }

    #[test]
    fn names_round_trip() {
        for k in FaultKind::ALL {
            assert_eq!(k.name().parse::<FaultKind>(), Ok(k));
            assert_eq!(
                serde_json::to_string(&k).unwrap(),
                format!("\"{}\"", k.name())
            );
        }
        assert!("nope".parse::<FaultKind>().is_err());
    }
}
