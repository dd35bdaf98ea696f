//! Shrinking a violation to a minimal slice.
//!
//! Removing a call from a history can *create* a violation (a read of a value
//! nobody wrote any more), so shrinking never removes a write: it *relaxes*
//! it to "took effect at its revision at some time after its call" (see
//! `POp::relaxed`). Relaxing only adds possible orders, so a relaxed history
//! that still fails proves the original fails. Reads are dropped (a read
//! changes nothing). What stays as recorded is the slice.
//!
//! The shrinking is delta debugging over the recorded calls: relax chunks of
//! halving size while the history still fails, ending 1-minimal (relaxing
//! any single remaining call makes it pass) unless the time budget runs out.

use std::time::{Duration, Instant};

use super::model::{PKind, PResult, PTxnOp, Partition};
use super::search::{Frontier, Limits, SearchOutcome, search};
use crate::history::Rev;

/// Longest one trial search may take. Relaxing many writes at once can make
/// the search expensive; such a trial counts as "no longer fails" and the
/// shrinking goes on with smaller chunks, which are cheap to check.
const TRIAL_BUDGET: Duration = Duration::from_millis(300);

pub(crate) struct Minimized {
    pub original: Partition,
    /// Ops (indices into `original.ops`) kept as recorded.
    pub hard: Vec<usize>,
    /// Relaxed writes whose values the slice's reads saw.
    pub context: Vec<usize>,
    /// The deepest order found in the slice, and the op it could not place.
    pub deepest: Vec<usize>,
    pub stuck: Option<usize>,
    /// True when the slice is 1-minimal.
    pub complete: bool,
}

/// The partition with the ops not in `hard` relaxed (writes) or dropped
/// (reads); returns it with the original index of each op.
fn relax(p: &Partition, hard: &[bool]) -> (Partition, Vec<usize>) {
    let mut ops = Vec::new();
    let mut index = Vec::new();
    for (i, op) in p.ops.iter().enumerate() {
        if hard[i] {
            ops.push(op.clone());
        } else if op.may_write() {
            ops.push(op.relaxed());
        } else {
            continue;
        }
        index.push(i);
    }
    let mut q = Partition {
        keys: p.keys.clone(),
        leases: p.leases.clone(),
        values: p.values.clone(),
        ops,
        classes: vec![],
    };
    q.patch_unknown_writes();
    q.classify();
    (q, index)
}

fn run(p: &Partition, deadline: Instant, max_cache: usize) -> SearchOutcome {
    let limits = Limits {
        deadline: deadline.min(Instant::now() + TRIAL_BUDGET),
        max_cache_entries: max_cache,
    };
    search(p, &limits)
}

pub(crate) fn minimize(
    p: &Partition,
    frontier: &Frontier,
    deadline: Instant,
    max_cache: usize,
) -> Minimized {
    let n = p.ops.len();
    let mut hard = vec![true; n];
    let fails = |hard: &[bool]| -> bool {
        let (q, _) = relax(p, hard);
        matches!(run(&q, deadline, max_cache), SearchOutcome::Violation(_))
    };
    let mut complete = true;

    // First guess: nothing called after the stuck op's return matters.
    if let Some(ret) = frontier.stuck.and_then(|s| p.ops[s].ret) {
        let trial: Vec<bool> = p.ops.iter().map(|o| o.call <= ret).collect();
        if trial.iter().any(|h| !h) && fails(&trial) {
            hard = trial;
        }
    }

    // Reads first (dropping them is cheap to check), then writes.
    let is_read: Vec<bool> = p.ops.iter().map(|o| !o.may_write()).collect();
    for reads in [true, false] {
        match ddmin(&mut hard, |i| is_read[i] == reads, deadline, &fails) {
            Some(done) => complete = done,
            None => {
                complete = false;
                break;
            }
        }
    }

    let (q, index) = relax(p, &hard);
    let (deepest, stuck) = match run(&q, deadline + TRIAL_BUDGET, max_cache) {
        SearchOutcome::Violation(f) => (
            f.longest.iter().map(|&i| index[i]).collect(),
            f.stuck.map(|i| index[i]),
        ),
        _ => (vec![], None),
    };

    let context = read_context(p, &hard);

    Minimized {
        original: p.clone(),
        hard: (0..n).filter(|&i| hard[i]).collect(),
        context,
        deepest,
        stuck,
        complete,
    }
}

/// Context for the slice's reads: the relaxed writes of the values they
/// saw, and for each key read, the last relaxed write at or below the
/// read's revision (the one it should have seen). Sorted.
fn read_context(p: &Partition, hard: &[bool]) -> Vec<usize> {
    let n = p.ops.len();
    let mut seen: Vec<(u16, u32)> = Vec::new();
    let mut should_see: Vec<(u16, Rev)> = Vec::new();
    for (i, op) in p.ops.iter().enumerate() {
        if !hard[i] {
            continue;
        }
        if let PKind::Txn {
            success,
            failure,
            obs,
            ..
        } = &op.kind
            && let Some(results) = &obs.results
        {
            let branch = if obs.succeeded == Some(false) {
                failure
            } else {
                success
            };
            for (o, r) in branch.iter().zip(results) {
                if let PTxnOp::Get { key } = o {
                    if let PResult::Get(Some(kv)) = r {
                        seen.push((*key, kv.value));
                    }
                    if let Some(h) = obs.revision {
                        should_see.push((*key, h));
                    }
                }
            }
        }
    }
    let writes_key = |op: &super::model::POp, k: u16| match &op.kind {
        PKind::Txn {
            success, failure, ..
        } => success
            .iter()
            .chain(failure)
            .any(|o| !matches!(o, PTxnOp::Get { .. }) && o.key() == k),
        PKind::LeaseEnd { .. } => false,
    };
    let mut context: Vec<usize> = (0..n)
        .filter(|&i| !hard[i])
        .filter(|&i| match &p.ops[i].kind {
            PKind::Txn {
                success, failure, ..
            } => success.iter().chain(failure).any(
                |o| matches!(o, PTxnOp::Put { key, value, .. } if seen.contains(&(*key, *value))),
            ),
            PKind::LeaseEnd { .. } => false,
        })
        .collect();
    for (k, h) in should_see {
        let last = (0..n)
            .filter(|&i| !hard[i] && writes_key(&p.ops[i], k))
            .filter(|&i| p.ops[i].revision().is_some_and(|r| r <= h))
            .max_by_key(|&i| p.ops[i].revision());
        if let Some(i) = last
            && !context.contains(&i)
        {
            context.push(i);
        }
    }
    context.sort_unstable();
    context
}

/// Delta debugging over the ops `eligible` selects: relaxes chunks of
/// halving size while `fails` holds. Some(true) when 1-minimal over them,
/// None when the deadline passed.
fn ddmin(
    hard: &mut Vec<bool>,
    eligible: impl Fn(usize) -> bool,
    deadline: Instant,
    fails: &impl Fn(&[bool]) -> bool,
) -> Option<bool> {
    let n = hard.len();
    let count = (0..n).filter(|&i| hard[i] && eligible(i)).count();
    let mut chunk = (count / 2).max(1);
    loop {
        let kept: Vec<usize> = (0..n).filter(|&i| hard[i] && eligible(i)).collect();
        if kept.is_empty() {
            return Some(true);
        }
        let mut changed = false;
        for group in kept.chunks(chunk) {
            if Instant::now() >= deadline {
                return None;
            }
            let mut trial = hard.clone();
            for &i in group {
                trial[i] = false;
            }
            if fails(&trial) {
                *hard = trial;
                changed = true;
            }
        }
        if chunk == 1 && !changed {
            return Some(true);
        }
        chunk = (chunk / 2).max(1);
    }
}
