//! Every checker at once, with one verdict and one printable report.

use serde::Serialize;

use crate::durability::{DurabilityReport, check_durability};
use crate::history::History;
use crate::lease::{LeaseReport, check_leases};
use crate::linearizability::{KvCheckOptions, KvReport, Verdict, check_kv};
use crate::watch::{WatchReport, check_watches};

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub kv: KvReport,
    pub watch: WatchReport,
    pub lease: LeaseReport,
    pub durability: DurabilityReport,
}

/// The overall verdict of a check.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Outcome {
    /// Every checker passed and the KV history is linearizable.
    Pass,
    /// A checker found a violation.
    Violation,
    /// No violation, but the KV search could not decide every key group.
    Undecided,
}

impl Report {
    pub fn violations(&self) -> usize {
        self.kv.violations().count()
            + self.watch.violations.len()
            + self.lease.violations.len()
            + self.durability.violations.len()
    }

    pub fn outcome(&self) -> Outcome {
        if self.violations() > 0 {
            Outcome::Violation
        } else if self.kv.verdict == Verdict::Undecided {
            Outcome::Undecided
        } else {
            Outcome::Pass
        }
    }

    /// Every violation with its slice, and the undecided key groups.
    pub fn render_violations(&self) -> String {
        let mut s = String::new();
        for v in self.kv.violations() {
            s.push_str(&v.render());
        }
        for f in self
            .watch
            .violations
            .iter()
            .chain(&self.lease.violations)
            .chain(&self.durability.violations)
        {
            s.push_str(&f.render());
        }
        for p in self.kv.undecided() {
            s.push_str(&format!(
                "undecided: key group {} ({} calls): {}\n",
                p.keys.join(", "),
                p.ops,
                p.note.as_deref().unwrap_or("")
            ));
        }
        if let Some(n) = &self.kv.note {
            s.push_str(&format!("kv check: {n}\n"));
        }
        s
    }
}

pub fn check(h: &History, kv: &KvCheckOptions) -> Report {
    Report {
        kv: check_kv(h, kv),
        watch: check_watches(h),
        lease: check_leases(h),
        durability: check_durability(h),
    }
}
