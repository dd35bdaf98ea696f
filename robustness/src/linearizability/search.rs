//! The Wing–Gong search with Lowe's memoization, as Porcupine runs it: walk
//! the history's call and return events in time order, linearize any op
//! whose call comes before the first pending return, backtrack when a return
//! is reached with its op not yet linearized, and never revisit a (set of
//! linearized ops, model state) pair.
//!
//! Two changes from the textbook form:
//! - an op with an unknown outcome has no return event. It can be linearized
//!   at any point after its call, and it need not be linearized at all: the
//!   search succeeds once every op *with* a return is linearized. Leaving it
//!   out is how "it never took effect" is expressed.
//! - the model may offer several next states for one op (a txn whose branch
//!   depends on an unknown revision); each is tried in turn.
//!
//! The search is bounded in time and memory; running out of either gives
//! `Undecided`, never a pass.

use std::collections::{BTreeMap, HashSet};
use std::time::Instant;

use super::model::{PKind, PResult, PTxnOp, Partition, State};
use crate::history::Rev;

/// Sentinel index of the event list's head.
const HEAD: usize = 0;
/// No next or previous entry.
const NIL: usize = usize::MAX;
/// How often (in search steps) the deadline is checked.
const DEADLINE_CHECK_EVERY: u64 = 256;
/// Longest history for which the search keeps a copy of its deepest
/// linearization (for the report); beyond, copying it costs too much.
const MAX_PARTITION_FOR_FRONTIER: usize = 20_000;

pub(crate) struct Limits {
    pub deadline: Instant,
    pub max_cache_entries: usize,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum SearchOutcome {
    Linearizable,
    Violation(Frontier),
    Undecided(String),
}

/// Where a failed search got furthest.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Frontier {
    /// The longest sequence of ops the search linearized (indices into the
    /// partition's ops, in linearization order).
    pub longest: Vec<usize>,
    /// The op whose return the search could not get past at that depth.
    pub stuck: Option<usize>,
}

#[derive(Debug, Clone, Copy)]
struct Entry {
    op: usize,
    is_call: bool,
    prev: usize,
    next: usize,
}

struct Frame {
    op: usize,
    prev_state: State,
    /// Next states of `op` not tried yet.
    alternatives: Vec<State>,
    /// The candidates at the node this frame left, and the next to try.
    candidates: Vec<usize>,
    next_candidate: usize,
}

struct Events {
    entries: Vec<Entry>,
    call_of: Vec<usize>,
    ret_of: Vec<Option<usize>>,
}

impl Events {
    fn new(p: &Partition) -> Events {
        // (time, returns after calls at the same instant, op, is_call): an op
        // returning at t and one called at t count as concurrent, which can
        // only let more histories pass.
        let mut evs: Vec<(u64, u8, usize, bool)> = Vec::with_capacity(p.ops.len() * 2);
        for (i, op) in p.ops.iter().enumerate() {
            evs.push((op.call, 0, i, true));
            if let Some(r) = op.ret {
                evs.push((r.max(op.call), 1, i, false));
            }
        }
        evs.sort_unstable();
        let mut entries = Vec::with_capacity(evs.len() + 1);
        entries.push(Entry {
            op: usize::MAX,
            is_call: false,
            prev: NIL,
            next: if evs.is_empty() { NIL } else { 1 },
        });
        let mut call_of = vec![0; p.ops.len()];
        let mut ret_of = vec![None; p.ops.len()];
        for (i, &(_, _, op, is_call)) in evs.iter().enumerate() {
            let idx = i + 1;
            entries.push(Entry {
                op,
                is_call,
                prev: idx - 1,
                next: if idx == evs.len() { NIL } else { idx + 1 },
            });
            if is_call {
                call_of[op] = idx;
            } else {
                ret_of[op] = Some(idx);
            }
        }
        Events {
            entries,
            call_of,
            ret_of,
        }
    }

    fn unlink(&mut self, i: usize) {
        let Entry { prev, next, .. } = self.entries[i];
        self.entries[prev].next = next;
        if next != NIL {
            self.entries[next].prev = prev;
        }
    }

    fn relink(&mut self, i: usize) {
        let Entry { prev, next, .. } = self.entries[i];
        self.entries[prev].next = i;
        if next != NIL {
            self.entries[next].prev = i;
        }
    }

    fn lift(&mut self, op: usize) {
        self.unlink(self.call_of[op]);
        if let Some(r) = self.ret_of[op] {
            self.unlink(r);
        }
    }

    /// Undoes the last `lift` (lifts are undone in reverse order).
    fn unlift(&mut self, op: usize) {
        if let Some(r) = self.ret_of[op] {
            self.relink(r);
        }
        self.relink(self.call_of[op]);
    }
}

fn set_bit(bits: &mut [u64], i: usize) {
    bits[i / 64] |= 1 << (i % 64);
}

fn clear_bit(bits: &mut [u64], i: usize) {
    bits[i / 64] &= !(1 << (i % 64));
}

fn bit(bits: &[u64], i: usize) -> bool {
    bits[i / 64] & (1 << (i % 64)) != 0
}

/// The linearized set up to the symmetry of interchangeable ops (see
/// `Partition::classify`): of each class, the first members by call stand
/// for whichever members were linearized.
fn canonical(p: &Partition, bits: &mut [u64]) {
    for class in &p.classes {
        let taken = class.iter().filter(|&&i| bit(bits, i)).count();
        for (rank, &i) in class.iter().enumerate() {
            if rank < taken {
                set_bit(bits, i);
            } else {
                clear_bit(bits, i);
            }
        }
    }
}

/// Takes the first of `alternatives` not seen before with `op` added to
/// `linearized`, recording it as seen.
fn take_new(
    p: &Partition,
    alternatives: &mut Vec<State>,
    linearized: &[u64],
    op: usize,
    cache: &mut HashSet<(Box<[u64]>, State)>,
) -> Option<State> {
    while !alternatives.is_empty() {
        let st = alternatives.remove(0);
        let mut bits: Box<[u64]> = linearized.into();
        set_bit(&mut bits, op);
        canonical(p, &mut bits);
        if cache.insert((bits, st.clone())) {
            return Some(st);
        }
    }
    None
}

/// The ops that may be linearized next: those whose call precedes the first
/// pending return. Ops with a known outcome come first, unknown ones last:
/// an unknown write is then tried only where the known ones cannot go on,
/// i.e. where something needs it, which finds an order for a linearizable
/// history without guessing where every unknown write went.
fn candidates(p: &Partition, ev: &Events) -> Vec<usize> {
    let mut known = Vec::new();
    let mut unknown = Vec::new();
    let mut cur = ev.entries[HEAD].next;
    while cur != NIL && ev.entries[cur].is_call {
        let op = ev.entries[cur].op;
        if p.ops[op].ret.is_some() {
            known.push(op);
        } else {
            unknown.push(op);
        }
        cur = ev.entries[cur].next;
    }
    known.extend(unknown);
    known
}

/// The first return still in the list (the op blocking the search).
fn first_return(ev: &Events) -> Option<usize> {
    let mut cur = ev.entries[HEAD].next;
    while cur != NIL {
        if !ev.entries[cur].is_call {
            return Some(ev.entries[cur].op);
        }
        cur = ev.entries[cur].next;
    }
    None
}

/// Where an op must sit in revision order, when its outcome tells:
/// `(true, r)` a write at `r`, `(false, h)` a read (or a write that changed
/// nothing) at header `h`.
fn revision_slot(op: &super::model::POp) -> Option<(bool, Rev)> {
    op.ret?;
    match &op.kind {
        PKind::LeaseEnd { .. } => None,
        PKind::Txn {
            success,
            failure,
            obs,
            ..
        } => {
            let rev = obs.revision?;
            let branch = match obs.succeeded? {
                true => success,
                false => failure,
            };
            let wrote = match &obs.results {
                Some(results) => branch.iter().zip(results).any(|(o, r)| match (o, r) {
                    (PTxnOp::Put { .. }, _) => true,
                    (PTxnOp::Delete { .. }, PResult::Delete(n)) => *n > 0,
                    _ => false,
                }),
                None if branch.iter().any(|o| matches!(o, PTxnOp::Put { .. })) => true,
                None if branch.iter().all(|o| matches!(o, PTxnOp::Get { .. })) => false,
                None => return None,
            };
            Some((wrote, rev))
        }
    }
}

/// The revisions of the ops not linearized yet, to refuse early what the
/// model would refuse later: a write at `r` cannot precede a write below
/// `r` or a read at a header below `r`; a read at `h` cannot precede a write
/// at or below `h`. Without this, an op placed too early is found out only
/// when some much later return cannot be reached, after exploring
/// everything in between (a stale serializable read of revision 4 pending
/// while writes at 9, 10, ... go by).
struct Pending {
    slot: Vec<Option<(bool, Rev)>>,
    writes: BTreeMap<Rev, usize>,
    reads: BTreeMap<Rev, usize>,
}

impl Pending {
    fn new(p: &Partition) -> Pending {
        let slot: Vec<_> = p.ops.iter().map(revision_slot).collect();
        let mut pending = Pending {
            slot,
            writes: BTreeMap::new(),
            reads: BTreeMap::new(),
        };
        for i in 0..p.ops.len() {
            pending.add(i);
        }
        pending
    }

    fn map(&mut self, write: bool) -> &mut BTreeMap<Rev, usize> {
        if write {
            &mut self.writes
        } else {
            &mut self.reads
        }
    }

    fn add(&mut self, op: usize) {
        if let Some((w, r)) = self.slot[op] {
            *self.map(w).entry(r).or_default() += 1;
        }
    }

    fn remove(&mut self, op: usize) {
        if let Some((w, r)) = self.slot[op] {
            let m = self.map(w);
            if let Some(c) = m.get_mut(&r) {
                *c -= 1;
                if *c == 0 {
                    m.remove(&r);
                }
            }
        }
    }

    fn allowed(&self, op: usize) -> bool {
        match self.slot[op] {
            None => true,
            Some((true, r)) => {
                self.writes.range(..r).next().is_none() && self.reads.range(..r).next().is_none()
            }
            Some((false, h)) => self.writes.range(..=h).next().is_none(),
        }
    }
}

pub(crate) fn search(p: &Partition, limits: &Limits) -> SearchOutcome {
    let n = p.ops.len();
    let mut ev = Events::new(p);
    let mut remaining_returns = p.ops.iter().filter(|o| o.ret.is_some()).count();
    let mut linearized = vec![0u64; n.div_ceil(64)];
    let mut cache: HashSet<(Box<[u64]>, State)> = HashSet::new();
    let mut stack: Vec<Frame> = Vec::new();
    let mut state = p.init();
    let mut frontier = Frontier::default();
    let mut deepest_stuck = 0usize;
    let mut steps = 0u64;
    // The node being expanded: its candidates and the next one to try.
    let mut cands = candidates(p, &ev);
    let mut next = 0usize;
    let mut pending = Pending::new(p);

    loop {
        if remaining_returns == 0 {
            return SearchOutcome::Linearizable;
        }
        steps += 1;
        if steps.is_multiple_of(DEADLINE_CHECK_EVERY) {
            if Instant::now() >= limits.deadline {
                return SearchOutcome::Undecided(format!(
                    "time limit reached after {steps} steps ({} states)",
                    cache.len()
                ));
            }
            if cache.len() >= limits.max_cache_entries {
                return SearchOutcome::Undecided(format!(
                    "memory limit reached: {} states remembered",
                    cache.len()
                ));
            }
        }
        if next < cands.len() {
            let op = cands[next];
            next += 1;
            if !pending.allowed(op) {
                continue;
            }
            let mut alternatives = p.step(&state, op);
            if let Some(new_state) = take_new(p, &mut alternatives, &linearized, op, &mut cache) {
                let prev_state = std::mem::replace(&mut state, new_state);
                stack.push(Frame {
                    op,
                    prev_state,
                    alternatives,
                    candidates: std::mem::take(&mut cands),
                    next_candidate: next,
                });
                set_bit(&mut linearized, op);
                ev.lift(op);
                pending.remove(op);
                if p.ops[op].ret.is_some() {
                    remaining_returns -= 1;
                }
                if stack.len() > frontier.longest.len() && n <= MAX_PARTITION_FOR_FRONTIER {
                    frontier.longest = stack.iter().map(|f| f.op).collect();
                }
                cands = candidates(p, &ev);
                next = 0;
            }
            continue;
        }
        // Every candidate of this node failed: the first pending return
        // cannot be reached from here. Undo the last choice.
        if stack.len() >= deepest_stuck {
            deepest_stuck = stack.len();
            frontier.stuck = first_return(&ev);
        }
        let Some(mut frame) = stack.pop() else {
            return SearchOutcome::Violation(frontier);
        };
        ev.unlift(frame.op);
        pending.add(frame.op);
        clear_bit(&mut linearized, frame.op);
        if p.ops[frame.op].ret.is_some() {
            remaining_returns += 1;
        }
        state = frame.prev_state;
        if let Some(new_state) = take_new(
            p,
            &mut frame.alternatives,
            &linearized,
            frame.op,
            &mut cache,
        ) {
            // Another outcome of the same op at the same place.
            frame.prev_state = std::mem::replace(&mut state, new_state);
            set_bit(&mut linearized, frame.op);
            ev.lift(frame.op);
            pending.remove(frame.op);
            if p.ops[frame.op].ret.is_some() {
                remaining_returns -= 1;
            }
            stack.push(frame);
            cands = candidates(p, &ev);
            next = 0;
        } else {
            cands = frame.candidates;
            next = frame.next_candidate;
        }
    }
}
