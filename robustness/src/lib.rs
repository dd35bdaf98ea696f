//! Robustness tooling for Cairn, usable against real etcd too (it shares no
//! code with the server).
//!
//! - [`history`]: what a run records — calls with invocation and completion
//!   instants and outcomes (ok / failed / unknown), watch streams, events.
//! - [`linearizability`]: the KV history against etcd's sequential
//!   semantics (Wing–Gong search per key group, revisions to prune, time
//!   bounded; undecided is reported as such).
//! - [`watch`], [`lease`], [`durability`]: the other checkers.
//! - [`check`]: all checkers at once, one report.
//! - [`proxy`]: a TCP proxy for members' peer traffic with per-pair faults.
//! - [`faults`], [`rng`]: seeded fault schedules.

// Unit tests may be long scenarios (histories written out by hand);
// production code is still held to the limit by the non-test build.
#![cfg_attr(test, allow(clippy::too_many_lines))]

pub mod check;
pub mod durability;
pub mod faults;
pub mod finding;
pub mod history;
pub mod lease;
pub mod linearizability;
pub mod proxy;
pub mod rng;
#[cfg(test)]
mod testkit;
pub mod watch;
