//! Short robustness runs against Cairn (or etcd, with
//! `CAIRN_TEST_TARGET=etcd`): a three-member cluster behind the fault proxy,
//! the recorded workload, one fault kind per test, then every checker. This
//! is the CI subset; `cargo xtask robustness` runs long randomized ones.
//!
//! `CAIRN_ROBUSTNESS_SEED` replaces the fixed seed of every test (printed
//! either way).

use cairn_robustness::check::Outcome;
use cairn_robustness::faults::{FaultKind, ScheduleShape};
use cairn_tests::robustness::{RunConfig, run};

/// Workload length: room for two faults of 3-4 s with healed gaps.
const SECONDS: u64 = 16;

fn short(kind: FaultKind, seed: u64) {
    let seed = std::env::var("CAIRN_ROBUSTNESS_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(seed);
    let mut cfg = RunConfig::new(seed, SECONDS, vec![kind]);
    cfg.shape = ScheduleShape {
        lead_in_ms: 2_000,
        lead_out_ms: 3_000,
        min_fault_ms: 3_000,
        max_fault_ms: 4_000,
        min_gap_ms: 2_000,
        max_gap_ms: 3_000,
    };
    println!("robustness: {kind} seed={seed}");
    let report = run(&cfg).expect("robustness run");
    println!("{}", report.render());
    let done: Vec<_> = report
        .faults
        .iter()
        .filter(|f| f.fault.skipped.is_none())
        .collect();
    if done.is_empty() {
        // Only where the fault cannot be made here (no root for a tmpfs,
        // etcd without a clock hook): said, not silently passed.
        let why = report.faults.first().and_then(|f| f.fault.skipped.clone());
        println!("{kind}: not available here: {why:?}");
        assert!(
            why.is_some(),
            "no fault was scheduled:\n{}",
            report.render()
        );
    }
    assert!(
        report.errors.is_empty(),
        "harness errors:\n{}\n{}",
        report.render(),
        report.render_failure()
    );
    assert_eq!(
        report.outcome,
        Outcome::Pass,
        "{}\n{}",
        report.render(),
        report.render_failure()
    );
    // The workload really ran and was checked.
    assert!(report.ops_ok > 100, "{}", report.render());
    assert!(report.watch_events > 50, "{}", report.render());
}

#[test]
fn no_faults() {
    short_without_faults();
}

fn short_without_faults() {
    let cfg = RunConfig::new(1, 8, vec![]);
    let report = run(&cfg).expect("robustness run");
    println!("{}", report.render());
    assert!(report.errors.is_empty(), "{}", report.render());
    assert_eq!(report.outcome, Outcome::Pass, "{}", report.render_failure());
    assert_eq!(
        report.baseline_write_availability.map(|a| a > 0.9),
        Some(true)
    );
}

#[test]
fn isolate_leader() {
    short(FaultKind::IsolateLeader, 11);
}

#[test]
fn isolate_follower() {
    short(FaultKind::IsolateFollower, 12);
}

#[test]
fn one_way_from_leader() {
    short(FaultKind::OneWayFromLeader, 13);
}

#[test]
fn one_way_to_leader() {
    short(FaultKind::OneWayToLeader, 14);
}

#[test]
fn delay() {
    short(FaultKind::Delay, 15);
}

#[test]
fn kill_leader() {
    short(FaultKind::KillLeader, 16);
}

#[test]
fn kill_follower() {
    short(FaultKind::KillFollower, 17);
}

#[test]
fn stop_leader() {
    short(FaultKind::StopLeader, 18);
}

#[test]
fn restart() {
    short(FaultKind::Restart, 19);
}

#[test]
fn disk_full() {
    short(FaultKind::DiskFull, 20);
}

#[test]
fn clock_skew() {
    short(FaultKind::ClockSkew, 21);
}
