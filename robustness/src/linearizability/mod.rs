//! Linearizability of the key-value history.
//!
//! # How
//!
//! A Wing–Gong search with memoization ([`search`]) over a sequential model of
//! etcd's key space ([`model`]), one partition at a time ([`build`]).
//! Linearizability is local (Herlihy & Wing): a history is linearizable iff
//! each object's sub-history is, provided every call touches one object. So
//! the objects are chosen such that every call does:
//!
//! - **Keys written together are one object.** A txn's compares and ops, and
//!   a put with the lease it attaches (a lease's end deletes its keys), tie
//!   keys together (union–find). The workload keeps these groups small (a
//!   txn touches the keys of one group), so each partition is a handful of
//!   keys. We chose grouping over checking multi-key txns per key because it
//!   is exact: a split txn could take its success branch in one partition and
//!   its failure branch in another, and nothing would notice.
//! - **Reads are split** by partition. Splitting a read alone would lose its
//!   atomicity, but every part carries the read's header revision and the
//!   model places a read exactly at its revision (after every write at or
//!   below it, before every write above), so the parts sit at one point of
//!   the one global revision order.
//!
//! # Revisions
//!
//! etcd numbers writes; the model uses these numbers to prune: a write with
//! a known revision can only follow the partition's writes with smaller
//! ones, and a read only sits where its header revision says. Most histories
//! then have one candidate order, and the search is close to linear. Writes
//! whose outcome is unknown take an interval-bounded revision variable,
//! pinned as soon as a read shows the key's `mod_revision`; a write whose
//! value a read saw gets that revision up front (values are unique per put).
//!
//! # What the result means
//!
//! - `Linearizable`: some order explains every result (sound: the model
//!   never refuses what etcd may do; unknown revisions are bounded loosely
//!   rather than exactly, which can let a rare bad history through, never
//!   the other way round).
//! - `Violation`: no order does. The report gives a minimized slice: the
//!   few calls that, as recorded, cannot be ordered even when every other
//!   read is dropped and every other write of the group is relaxed to "took
//!   effect at its revision at some time after its call" (relaxing only adds
//!   orders, so the slice proves the violation).
//! - `Undecided`: the search ran out of time or memory. Never a pass.
//!
//! Serializable reads may be stale: the model still requires them to show
//! the state at their header revision, but lets them be linearized before
//! their call.

mod build;
mod minimize;
mod model;
mod search;

use std::time::{Duration, Instant};

use serde::Serialize;

pub use build::BuildError;

use crate::history::{History, describe_op};
use model::{Partition, Source};
use search::{Limits, SearchOutcome};

/// Limits of the KV check.
#[derive(Debug, Clone)]
pub struct KvCheckOptions {
    /// For the whole check; partitions not searched by then are undecided.
    pub time_budget: Duration,
    /// For one partition's search.
    pub partition_budget: Duration,
    /// States the search may remember per partition.
    pub max_cache_entries: usize,
    /// For shrinking one violation to a minimal slice.
    pub minimize_budget: Duration,
    /// Partitions searched in parallel.
    pub threads: usize,
}

impl Default for KvCheckOptions {
    fn default() -> Self {
        KvCheckOptions {
            time_budget: Duration::from_secs(300),
            partition_budget: Duration::from_secs(60),
            max_cache_entries: 2_000_000,
            minimize_budget: Duration::from_secs(30),
            threads: 2,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Verdict {
    Linearizable,
    Violation,
    Undecided,
}

/// Lines of the deepest order a rendered violation shows (its end).
const MAX_DEEPEST_LINES: usize = 8;

/// One line of a violation's slice.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SliceLine {
    /// The history op, if the line is one (not a lease's end).
    pub op: Option<u64>,
    pub text: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct KvViolation {
    pub keys: Vec<String>,
    /// The calls that cannot be ordered, as recorded.
    pub slice: Vec<SliceLine>,
    /// Relaxed writes of the group that explain the slice: those whose values
    /// its reads saw, and for each key read, the last write at or below the
    /// read's revision. Relaxed: each took effect at its revision at some
    /// time after its call (or, when its outcome was unknown, maybe never).
    pub relaxed_context: Vec<SliceLine>,
    /// The deepest order the search found in the slice, then the call it
    /// could not place.
    pub deepest: Vec<SliceLine>,
    pub stuck: Option<SliceLine>,
    /// False when minimizing ran out of time (the slice is then larger than
    /// needed, still a violation).
    pub minimal: bool,
}

impl KvViolation {
    pub fn render(&self) -> String {
        let mut s = format!(
            "linearizability violation on {}: these {} call(s) cannot be ordered{}\n",
            self.keys.join(", "),
            self.slice.len(),
            if self.minimal {
                " (minimal slice)"
            } else {
                " (slice not fully minimized: time budget)"
            }
        );
        for l in &self.slice {
            s.push_str(&format!("    {}\n", l.text));
        }
        if !self.relaxed_context.is_empty() {
            s.push_str(
                "  writes they read or should have read (relaxed, like every other write \
                 of the group: at their revision, at any time after their call):\n",
            );
            for l in &self.relaxed_context {
                s.push_str(&format!("    {}\n", l.text));
            }
        }
        if !self.deepest.is_empty() {
            let skip = self.deepest.len().saturating_sub(MAX_DEEPEST_LINES);
            if skip > 0 {
                s.push_str(&format!(
                    "  deepest order found (last {MAX_DEEPEST_LINES} of {}):\n",
                    self.deepest.len()
                ));
            } else {
                s.push_str("  deepest order found:\n");
            }
            for l in &self.deepest[skip..] {
                s.push_str(&format!("    {}\n", l.text));
            }
        }
        if let Some(st) = &self.stuck {
            s.push_str(&format!(
                "  then could not place before its return:\n    {}\n",
                st.text
            ));
        }
        s
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PartitionResult {
    pub keys: Vec<String>,
    pub ops: usize,
    pub verdict: Verdict,
    /// Why undecided.
    pub note: Option<String>,
    pub elapsed_ms: u64,
    pub violation: Option<KvViolation>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct KvReport {
    pub verdict: Verdict,
    pub partitions: Vec<PartitionResult>,
    pub note: Option<String>,
    pub elapsed_ms: u64,
}

impl KvReport {
    pub fn violations(&self) -> impl Iterator<Item = &KvViolation> {
        self.partitions.iter().filter_map(|p| p.violation.as_ref())
    }
    pub fn undecided(&self) -> impl Iterator<Item = &PartitionResult> {
        self.partitions
            .iter()
            .filter(|p| p.verdict == Verdict::Undecided)
    }
}

/// Checks the key-value calls of `h` (see the module doc).
pub fn check_kv(h: &History, opts: &KvCheckOptions) -> KvReport {
    let start = Instant::now();
    let parts = match build::build(h) {
        Ok(p) => p,
        Err(e) => {
            return KvReport {
                verdict: Verdict::Undecided,
                partitions: vec![],
                note: Some(e.to_string()),
                elapsed_ms: 0,
            };
        }
    };
    let overall = start + opts.time_budget;
    let next = std::sync::atomic::AtomicUsize::new(0);
    let results = std::sync::Mutex::new(vec![None; parts.len()]);
    std::thread::scope(|scope| {
        for _ in 0..opts.threads.max(1) {
            scope.spawn(|| {
                loop {
                    let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    let Some(p) = parts.get(i) else { break };
                    let r = check_partition(h, p, opts, overall);
                    results.lock().expect("results lock")[i] = Some(r);
                }
            });
        }
    });
    let partitions: Vec<PartitionResult> = results
        .into_inner()
        .expect("results lock")
        .into_iter()
        .flatten()
        .collect();
    let verdict = if partitions.iter().any(|p| p.verdict == Verdict::Violation) {
        Verdict::Violation
    } else if partitions.iter().any(|p| p.verdict == Verdict::Undecided) {
        Verdict::Undecided
    } else {
        Verdict::Linearizable
    };
    KvReport {
        verdict,
        partitions,
        note: None,
        elapsed_ms: start.elapsed().as_millis() as u64,
    }
}

fn check_partition(
    h: &History,
    p: &Partition,
    opts: &KvCheckOptions,
    overall: Instant,
) -> PartitionResult {
    let start = Instant::now();
    let limits = Limits {
        deadline: overall.min(start + opts.partition_budget),
        max_cache_entries: opts.max_cache_entries,
    };
    let outcome = if start >= overall {
        SearchOutcome::Undecided("the check's time budget was spent on other key groups".into())
    } else {
        search::search(p, &limits)
    };
    let mut result = PartitionResult {
        keys: p.keys.clone(),
        ops: p.ops.len(),
        verdict: Verdict::Linearizable,
        note: None,
        elapsed_ms: 0,
        violation: None,
    };
    match outcome {
        SearchOutcome::Linearizable => {}
        SearchOutcome::Undecided(why) => {
            result.verdict = Verdict::Undecided;
            result.note = Some(why);
        }
        SearchOutcome::Violation(frontier) => {
            result.verdict = Verdict::Violation;
            let min = minimize::minimize(
                p,
                &frontier,
                Instant::now() + opts.minimize_budget,
                opts.max_cache_entries,
            );
            result.violation = Some(render_violation(h, &min));
        }
    }
    result.elapsed_ms = start.elapsed().as_millis() as u64;
    result
}

fn line(h: &History, p: &Partition, i: usize) -> SliceLine {
    let op = &p.ops[i];
    match op.source {
        Source::Op(id) => SliceLine {
            op: Some(id),
            text: h
                .op(id)
                .map(describe_op)
                .unwrap_or_else(|| format!("#{id} (not in history)")),
        },
        Source::LeaseEnd { lease, revoke } => SliceLine {
            op: revoke,
            text: match revoke {
                Some(id) => format!("lease {lease:x} ends by revoke #{id}"),
                None => format!(
                    "lease {lease:x} ends (expiry or revoke with unknown outcome) after {:.3} ms{}",
                    op.call as f64 / 1e6,
                    match op.ret {
                        Some(r) => format!(", before {:.3} ms", r as f64 / 1e6),
                        None => String::new(),
                    }
                ),
            },
        },
    }
}

fn render_violation(h: &History, m: &minimize::Minimized) -> KvViolation {
    let p = &m.original;
    KvViolation {
        keys: p.keys.clone(),
        slice: m.hard.iter().map(|&i| line(h, p, i)).collect(),
        relaxed_context: m.context.iter().map(|&i| line(h, p, i)).collect(),
        deepest: m.deepest.iter().map(|&i| line(h, p, i)).collect(),
        stuck: m.stuck.map(|i| line(h, p, i)),
        minimal: m.complete,
    }
}

#[cfg(test)]
mod tests;
