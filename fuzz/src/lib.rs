//! Cairn's fuzz targets and the driver that runs them on the stable
//! toolchain (`cargo xtask fuzz`, `docs/testing.md`).
//!
//! - [`targets`]: one function per parser that sees bytes from outside
//!   (`fn(&[u8]) -> Outcome`). A target must never panic, hang or allocate
//!   without bound on any input; where the parser has invariants (round
//!   trips, a second decoder to agree with) the target checks them and
//!   reports a broken one as a finding.
//! - [`engine`]: a seeded, reproducible mutational engine (bit flips, byte
//!   edits, inserts, deletes, splices between corpus entries, dictionary
//!   tokens per target) that keeps inputs producing an outcome not seen
//!   before (a cheap coverage signal: the kind of result or error, digits
//!   stripped), catches panics, times every input and counts what it
//!   allocates.
//! - [`alloc`]: the counting allocator behind the per-input memory budget.

pub mod alloc;
pub mod engine;
pub mod rng;
pub mod targets;
