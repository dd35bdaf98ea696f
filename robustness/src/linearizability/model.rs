//! The sequential model of one partition (a group of keys, with the leases
//! attached to them): etcd's key-value semantics with revisions, create and
//! mod revisions, versions, txn compares, deletes, and lease ends.
//!
//! Revisions are global in etcd but a partition sees only its own writes, so
//! the model does not count revisions: it takes the revision of each write
//! from the write's response and checks that the partition's writes appear in
//! increasing revision order and that every read sits at its header revision
//! (after every write at or below it, before every write above). A write
//! whose response is unknown has an unknown revision ([`RevVal::Any`]),
//! fixed by the first read that shows it. That is looser than bounding it by
//! the writes around it, but keeps the state independent of where among
//! unrelated ops the write was placed, which memoization needs (see
//! `unknown_rev`); the model never refuses an execution etcd could produce.

use std::hash::Hash;

use crate::history::{CompareOp, LeaseId, Rev};

/// A revision in the model: known, or the unknown revision of a write
/// whose response was lost.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum RevVal {
    Known(Rev),
    Any,
}

/// One key as the model holds it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct KeyState {
    /// Index into [`Partition::values`].
    pub value: u32,
    pub create: RevVal,
    pub modr: RevVal,
    pub version: i64,
    pub lease: LeaseId,
}

/// The state of a partition.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct State {
    pub keys: Vec<Option<KeyState>>,
    /// The revision of the last write linearized so far.
    pub last_write: RevVal,
    /// Every later write must have a revision above this.
    pub floor: Rev,
    /// Bit i: lease i of the partition has ended (revoked or expired).
    pub ended: u64,
}

/// A key as a read observed it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct KvObs {
    pub value: u32,
    pub create: Rev,
    pub modr: Rev,
    pub version: i64,
    pub lease: LeaseId,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum PResult {
    Get(Option<KvObs>),
    Put,
    Delete(i64),
}

/// What the client saw of a call (everything `None` when the outcome is
/// unknown).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Obs {
    /// The header revision.
    pub revision: Option<Rev>,
    pub succeeded: Option<bool>,
    /// One result per op of the branch that ran.
    pub results: Option<Vec<PResult>>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum PTarget {
    Value(String),
    Version(i64),
    Mod(Rev),
    Create(Rev),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct PCompare {
    pub key: u16,
    pub op: CompareOp,
    pub target: PTarget,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum PTxnOp {
    Get {
        key: u16,
    },
    Put {
        key: u16,
        value: u32,
        /// The lease (index into [`Partition::leases`]), if any.
        lease: Option<u16>,
    },
    Delete {
        key: u16,
    },
}

impl PTxnOp {
    pub fn key(&self) -> u16 {
        match self {
            PTxnOp::Get { key } | PTxnOp::Put { key, .. } | PTxnOp::Delete { key } => *key,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum PKind {
    /// Every KV call is a txn here: a put is a txn with one put and no
    /// compares, a get (or the part of a range read in this partition) one
    /// with gets.
    Txn {
        compares: Vec<PCompare>,
        success: Vec<PTxnOp>,
        failure: Vec<PTxnOp>,
        obs: Obs,
    },
    /// The end of a lease: a client revoke or an expiry. Deletes every key
    /// still attached to the lease, at one revision.
    LeaseEnd { lease: u16, revision: Option<Rev> },
}

/// Where a partition op came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Source {
    /// A history operation (or its part in this partition).
    Op(u64),
    /// The end of a lease; `revoke` is the client's revoke call when it
    /// succeeded.
    LeaseEnd { lease: LeaseId, revoke: Option<u64> },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct POp {
    pub source: Source,
    pub call: u64,
    /// `None`: the op may take effect at any time after `call`, or never.
    pub ret: Option<u64>,
    pub kind: PKind,
}

impl POp {
    pub fn may_write(&self) -> bool {
        match &self.kind {
            PKind::LeaseEnd { .. } => true,
            PKind::Txn {
                success, failure, ..
            } => success
                .iter()
                .chain(failure)
                .any(|o| !matches!(o, PTxnOp::Get { .. })),
        }
    }

    /// The revision the client saw, if any.
    pub fn revision(&self) -> Option<Rev> {
        match &self.kind {
            PKind::Txn { obs, .. } => obs.revision,
            PKind::LeaseEnd { revision, .. } => *revision,
        }
    }

    /// The same op with no deadline and no reads checked, keeping its
    /// revision, branch and delete counts: a write the client saw succeed happened at
    /// that revision at some time after its call; one with an unknown
    /// outcome still may or may not have happened. Every order of the
    /// original is an order of the relaxed op, so a history that fails with
    /// relaxed ops fails as recorded; keeping the revision keeps the search
    /// as cheap as on the original. Used to shrink a violation to a slice.
    pub fn relaxed(&self) -> POp {
        let kind = match &self.kind {
            PKind::Txn {
                compares,
                success,
                failure,
                obs,
            } => PKind::Txn {
                compares: compares.clone(),
                success: success.clone(),
                failure: failure.clone(),
                obs: Obs {
                    revision: obs.revision,
                    succeeded: obs.succeeded,
                    // What it read goes; what it did (delete counts) stays.
                    results: obs
                        .results
                        .clone()
                        .filter(|r| r.iter().all(|x| !matches!(x, PResult::Get(_)))),
                },
            },
            PKind::LeaseEnd { lease, revision } => PKind::LeaseEnd {
                lease: *lease,
                revision: *revision,
            },
        };
        POp {
            source: self.source,
            call: self.call,
            ret: self.ret.map(|_| u64::MAX),
            kind,
        }
    }
}

/// A group of keys (and leases) that no call crosses.
#[derive(Debug, Clone, Default)]
pub(crate) struct Partition {
    pub keys: Vec<String>,
    pub leases: Vec<LeaseId>,
    pub values: Vec<String>,
    /// Sorted by call.
    pub ops: Vec<POp>,
    /// Classes of interchangeable ops (indices into `ops`, by call): see
    /// [`Partition::classify`].
    pub classes: Vec<Vec<usize>>,
}

/// Most leases one partition may hold (a bit each in [`State::ended`]).
pub(crate) const MAX_LEASES_PER_PARTITION: usize = 64;

impl Partition {
    /// Gives a write with an unknown outcome the revision a read saw its
    /// value at (and the branch that wrote it). Values are unique per put in
    /// the workload; a value two calls put is not used.
    pub fn patch_unknown_writes(&mut self) {
        use std::collections::HashMap;
        let mut writers: HashMap<(u16, u32), usize> = HashMap::new();
        let mut seen: HashMap<(u16, u32), Rev> = HashMap::new();
        for op in &self.ops {
            if let PKind::Txn {
                success,
                failure,
                obs,
                ..
            } = &op.kind
            {
                for o in success.iter().chain(failure) {
                    if let PTxnOp::Put { key, value, .. } = o {
                        *writers.entry((*key, *value)).or_default() += 1;
                    }
                }
                let branch = if obs.succeeded == Some(false) {
                    failure
                } else {
                    success
                };
                for (o, r) in branch.iter().zip(obs.results.iter().flatten()) {
                    if let (PTxnOp::Get { key }, PResult::Get(Some(kv))) = (o, r) {
                        seen.entry((*key, kv.value)).or_insert(kv.modr);
                    }
                }
            }
        }
        let found = |ops: &[PTxnOp]| {
            ops.iter().find_map(|o| match o {
                PTxnOp::Put { key, value, .. } if writers.get(&(*key, *value)) == Some(&1) => {
                    seen.get(&(*key, *value)).copied()
                }
                _ => None,
            })
        };
        for op in &mut self.ops {
            if op.ret.is_some() {
                continue;
            }
            if let PKind::Txn {
                success,
                failure,
                obs,
                ..
            } = &mut op.kind
                && obs.revision.is_none()
            {
                match (found(success), found(failure)) {
                    (Some(r), None) => {
                        obs.revision = Some(r);
                        obs.succeeded = Some(true);
                    }
                    (None, Some(r)) => {
                        obs.revision = Some(r);
                        obs.succeeded = Some(false);
                    }
                    _ => {}
                }
            }
        }
    }

    /// Finds the *blind* unknown writes and groups the interchangeable ones.
    ///
    /// A put with an unknown outcome whose value no read saw (and that no
    /// value compare can tell apart) changes only the key's version, its
    /// existence and revisions nobody saw; a delete with an unknown outcome
    /// only removes the key. Two such ops on the same key (and lease) have
    /// the same effect, and once both are called either can stand for the
    /// other. Without this, the search tells apart "the first of them
    /// happened" and "the second did" and explores each: exponential in the
    /// number of timed-out writes, which a partitioned member produces by
    /// the dozen. Blind puts get one value per class, so their states are
    /// equal too; the search then remembers states up to this symmetry
    /// (`search::canonical`).
    pub fn classify(&mut self) {
        use std::collections::{BTreeMap, HashSet};
        let mut observed: HashSet<(u16, u32)> = HashSet::new();
        let mut value_compared: HashSet<u16> = HashSet::new();
        for op in &self.ops {
            if let PKind::Txn {
                compares,
                success,
                failure,
                obs,
            } = &op.kind
            {
                for c in compares {
                    if matches!(c.target, PTarget::Value(_)) {
                        value_compared.insert(c.key);
                    }
                }
                let branch = if obs.succeeded == Some(false) {
                    failure
                } else {
                    success
                };
                for (o, r) in branch.iter().zip(obs.results.iter().flatten()) {
                    if let (PTxnOp::Get { key }, PResult::Get(Some(kv))) = (o, r) {
                        observed.insert((*key, kv.value));
                    }
                }
            }
        }
        // (is delete, key, lease) -> members.
        let mut classes: BTreeMap<(bool, u16, Option<u16>), Vec<usize>> = BTreeMap::new();
        for (i, op) in self.ops.iter_mut().enumerate() {
            if op.ret.is_some() {
                continue;
            }
            let PKind::Txn {
                compares,
                success,
                failure,
                obs,
            } = &mut op.kind
            else {
                continue;
            };
            if !compares.is_empty() || !failure.is_empty() || *obs != Obs::default() {
                continue;
            }
            match success.as_mut_slice() {
                [PTxnOp::Put { key, value, lease }]
                    if !observed.contains(&(*key, *value)) && !value_compared.contains(key) =>
                {
                    let name = format!("\u{0}blind put {} {:?}", self.keys[*key as usize], lease);
                    *value = match self.values.iter().position(|v| *v == name) {
                        Some(id) => id as u32,
                        None => {
                            self.values.push(name);
                            self.values.len() as u32 - 1
                        }
                    };
                    classes.entry((false, *key, *lease)).or_default().push(i);
                }
                [PTxnOp::Delete { key }] => classes.entry((true, *key, None)).or_default().push(i),
                _ => {}
            }
        }
        self.classes = classes.into_values().filter(|c| c.len() > 1).collect();
    }

    pub fn init(&self) -> State {
        State {
            keys: vec![None; self.keys.len()],
            last_write: RevVal::Known(0),
            floor: 0,
            ended: 0,
        }
    }

    /// Every state the op can lead to from `s` (none: it cannot be
    /// linearized here). Two only when a txn's branch depends on an unknown
    /// revision and the client did not see which branch ran.
    pub fn step(&self, s: &State, idx: usize) -> Vec<State> {
        let op = &self.ops[idx];
        match &op.kind {
            PKind::LeaseEnd { lease, revision } => {
                self.lease_end(s, *lease, *revision).into_iter().collect()
            }
            PKind::Txn {
                compares,
                success,
                failure,
                obs,
            } => {
                let mut out = Vec::new();
                for (branch, state) in self.branches(s, compares, obs.succeeded) {
                    let ops = if branch { success } else { failure };
                    if let Some(next) = self.execute(state, ops, obs) {
                        out.push(next);
                    }
                }
                out
            }
        }
    }

    /// The branches a txn can take from `s`, each with the state narrowed by
    /// what taking it implies about unknown revisions.
    fn branches(
        &self,
        s: &State,
        compares: &[PCompare],
        succeeded: Option<bool>,
    ) -> Vec<(bool, State)> {
        let evals: Vec<Eval> = compares.iter().map(|c| self.eval(s, c)).collect();
        let all_true = evals.iter().all(|e| matches!(e, Eval::True));
        let any_false = evals.iter().any(|e| matches!(e, Eval::False));
        let unknown: Vec<&Eval> = evals
            .iter()
            .filter(|e| matches!(e, Eval::Unknown { .. }))
            .collect();
        let take_true = |s: &State| -> Option<State> {
            if any_false {
                return None;
            }
            let mut st = s.clone();
            for e in &unknown {
                if let Eval::Unknown {
                    key,
                    field,
                    if_true: Some(r),
                    ..
                } = e
                {
                    set_rev(&mut st, *key, *field, *r);
                }
            }
            Some(st)
        };
        let take_false = |s: &State| -> Option<State> {
            if all_true {
                return None;
            }
            if any_false {
                return Some(s.clone());
            }
            // No compare is surely false: one of the unknown ones is. With
            // exactly one we know which; with more, the disjunction is not
            // expressible and nothing is narrowed.
            let mut st = s.clone();
            if let [
                Eval::Unknown {
                    key,
                    field,
                    if_false: Some(r),
                    ..
                },
            ] = unknown.as_slice()
            {
                set_rev(&mut st, *key, *field, *r);
            }
            Some(st)
        };
        let mut out = Vec::new();
        if succeeded != Some(false)
            && let Some(st) = take_true(s)
        {
            out.push((true, st));
        }
        if succeeded != Some(true)
            && let Some(st) = take_false(s)
        {
            out.push((false, st));
        }
        out
    }

    fn eval(&self, s: &State, c: &PCompare) -> Eval {
        let key = &s.keys[c.key as usize];
        let by_order = |ord: std::cmp::Ordering| -> Eval {
            use std::cmp::Ordering::*;
            let ok = match c.op {
                CompareOp::Equal => ord == Equal,
                CompareOp::NotEqual => ord != Equal,
                CompareOp::Greater => ord == Greater,
                CompareOp::Less => ord == Less,
            };
            if ok { Eval::True } else { Eval::False }
        };
        match &c.target {
            PTarget::Value(v) => match key {
                // etcd: a value compare on a missing key is false.
                None => Eval::False,
                Some(k) => by_order(self.values[k.value as usize].as_str().cmp(v.as_str())),
            },
            PTarget::Version(v) => by_order(key.as_ref().map_or(0, |k| k.version).cmp(v)),
            PTarget::Mod(v) | PTarget::Create(v) => {
                let field = if matches!(c.target, PTarget::Mod(_)) {
                    RevField::Mod
                } else {
                    RevField::Create
                };
                let rev = match (key, field) {
                    (None, _) => RevVal::Known(0),
                    (Some(k), RevField::Mod) => k.modr,
                    (Some(k), RevField::Create) => k.create,
                };
                match rev {
                    RevVal::Known(r) => by_order(r.cmp(v)),
                    // An unknown revision of a write is at least 1.
                    RevVal::Any if *v < 1 => by_order(std::cmp::Ordering::Greater),
                    RevVal::Any => Eval::Unknown {
                        key: c.key,
                        field,
                        if_true: (c.op == CompareOp::Equal).then_some(*v),
                        if_false: (c.op == CompareOp::NotEqual).then_some(*v),
                    },
                }
            }
        }
    }

    /// Runs a branch: checks every observed result, applies the writes at
    /// one revision, and places the op in revision order.
    fn execute(&self, mut st: State, ops: &[PTxnOp], obs: &Obs) -> Option<State> {
        if let Some(results) = &obs.results
            && results.len() != ops.len()
        {
            return None;
        }
        let before_floor = st.floor;
        let write_rev = match obs.revision {
            Some(r) => RevVal::Known(r),
            None => RevVal::Any,
        };
        let mut wrote = false;
        for (i, op) in ops.iter().enumerate() {
            let result = obs.results.as_ref().map(|r| &r[i]);
            match op {
                PTxnOp::Get { key } => {
                    if let Some(r) = result {
                        let PResult::Get(seen) = r else { return None };
                        st = self.check_read(st, *key, seen.as_ref())?;
                    }
                }
                PTxnOp::Put { key, value, lease } => {
                    if let Some(r) = result
                        && *r != PResult::Put
                    {
                        return None;
                    }
                    let lease_id = match lease {
                        Some(l) => {
                            if st.ended & (1 << l) != 0 {
                                // etcd refuses a put with a lease that is gone.
                                return None;
                            }
                            self.leases[*l as usize]
                        }
                        None => 0,
                    };
                    let k = &mut st.keys[*key as usize];
                    *k = Some(match k.take() {
                        Some(old) => KeyState {
                            value: *value,
                            create: old.create,
                            modr: write_rev,
                            version: old.version + 1,
                            lease: lease_id,
                        },
                        None => KeyState {
                            value: *value,
                            create: write_rev,
                            modr: write_rev,
                            version: 1,
                            lease: lease_id,
                        },
                    });
                    wrote = true;
                }
                PTxnOp::Delete { key } => {
                    let existed = st.keys[*key as usize].take().is_some();
                    if let Some(r) = result
                        && *r != PResult::Delete(i64::from(existed))
                    {
                        return None;
                    }
                    wrote |= existed;
                }
            }
        }
        if wrote {
            place_write(st, before_floor, write_rev)
        } else {
            match obs.revision {
                Some(h) => place_read(st, h),
                None => Some(st),
            }
        }
    }

    /// Checks what a read saw of one key against the model, pinning the
    /// key's unknown revisions to what was seen.
    fn check_read(&self, mut st: State, key: u16, seen: Option<&KvObs>) -> Option<State> {
        let slot = &mut st.keys[key as usize];
        match (slot.as_mut(), seen) {
            (None, None) => Some(st),
            (Some(h), Some(s)) => {
                if h.value != s.value
                    || h.version != s.version
                    || h.lease != s.lease
                    || !matches_rev(h.modr, s.modr)
                    || !matches_rev(h.create, s.create)
                {
                    return None;
                }
                // What the read showed of unknown revisions holds from now on.
                h.modr = RevVal::Known(s.modr);
                h.create = RevVal::Known(s.create);
                Some(st)
            }
            _ => None,
        }
    }

    fn lease_end(&self, s: &State, lease: u16, revision: Option<Rev>) -> Option<State> {
        if s.ended & (1 << lease) != 0 {
            return None;
        }
        let id = self.leases[lease as usize];
        let mut st = s.clone();
        st.ended |= 1 << lease;
        let mut wrote = false;
        for k in st.keys.iter_mut() {
            if k.as_ref().is_some_and(|k| k.lease == id) {
                *k = None;
                wrote = true;
            }
        }
        let before_floor = st.floor;
        if wrote {
            let rev = match revision {
                Some(r) => RevVal::Known(r),
                None => RevVal::Any,
            };
            place_write(st, before_floor, rev)
        } else {
            match revision {
                Some(h) => place_read(st, h),
                None => Some(st),
            }
        }
    }
}

/// A compare's value in a state.
#[derive(Debug, Clone, Copy)]
enum Eval {
    True,
    False,
    /// Depends on an unknown revision (`field` of `key`); taking the branch
    /// where the compare is true (false) fixes it to `if_true` (`if_false`)
    /// when that is a single value.
    Unknown {
        key: u16,
        field: RevField,
        if_true: Option<Rev>,
        if_false: Option<Rev>,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum RevField {
    Mod,
    Create,
}

fn set_rev(st: &mut State, key: u16, field: RevField, r: Rev) {
    if let Some(k) = st.keys[key as usize].as_mut() {
        match field {
            RevField::Mod => k.modr = RevVal::Known(r),
            RevField::Create => k.create = RevVal::Known(r),
        }
    }
}

/// Requires the model's `have` revision to equal the observed `seen`; an
/// unknown revision becomes `seen`.
fn matches_rev(have: RevVal, seen: Rev) -> bool {
    match have {
        RevVal::Known(r) => r == seen,
        RevVal::Any => seen >= 1,
    }
}

/// Places a write at `rev` after everything linearized so far.
fn place_write(mut st: State, before_floor: Rev, rev: RevVal) -> Option<State> {
    if let RevVal::Known(r) = rev {
        if r <= before_floor {
            return None;
        }
        st.floor = r;
    }
    st.last_write = rev;
    Some(st)
}

/// Places a read (or an op that wrote nothing) with header revision `h`:
/// after every write at or below `h`, before every write above.
fn place_read(mut st: State, h: Rev) -> Option<State> {
    if let RevVal::Known(w) = st.last_write
        && w > h
    {
        return None;
    }
    st.floor = st.floor.max(h);
    Some(st)
}
