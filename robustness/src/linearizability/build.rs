//! From a [`History`] to independent partitions for the search.
//!
//! - Keys that a non-read call touches together (a txn's compares and ops, a
//!   put and its lease) are one partition; a lease's end deletes its keys, so
//!   a lease joins the partition of its keys.
//! - Reads (Range) are split: each partition gets the part of the read in its
//!   keys, with the read's header revision. The revision pins every part to
//!   the same point of the global order, so splitting keeps a read atomic as
//!   far as revisions tell.
//! - A lease's end is an op of its own: the client's successful revoke, or an
//!   expiry (or a revoke with an unknown outcome) at an unknown time after
//!   the grant, before the first call that found the lease gone.
//! - A write with an unknown outcome whose value a read saw gets that read's
//!   mod revision (`Partition::patch_unknown_writes`).
//! - A serializable read may be stale, so it may be linearized before its
//!   call: from just before the first write it must precede.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use super::model::{
    KvObs, MAX_LEASES_PER_PARTITION, Obs, PCompare, PKind, POp, PResult, PTarget, PTxnOp,
    Partition, Source,
};
use crate::history::{
    CompareTarget, History, KeyValue, LeaseId, Operation, Outcome, Request, Response, Rev, TxnOp,
    TxnOpResult, key_in_range,
};

/// A value no put wrote: what a read of the wrong key is recorded as, so
/// that the model refuses it.
const WRONG_KEY_VALUE: &str = "\u{0}<a different key>";

#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error("{count} leases share one key group (at most {max})")]
    TooManyLeases { count: usize, max: usize },
}

struct UnionFind(Vec<usize>);

impl UnionFind {
    fn find(&mut self, mut i: usize) -> usize {
        while self.0[i] != i {
            self.0[i] = self.0[self.0[i]];
            i = self.0[i];
        }
        i
    }
    fn union(&mut self, a: usize, b: usize) {
        let (a, b) = (self.find(a), self.find(b));
        if a != b {
            self.0[a] = b;
        }
    }
}

fn is_kv(op: &Operation) -> bool {
    matches!(
        op.request,
        Request::Get { .. } | Request::Put { .. } | Request::Delete { .. } | Request::Txn { .. }
    )
}

/// Keys a call names, and the leases its puts attach (0: none).
fn named(op: &Operation) -> (Vec<String>, Vec<LeaseId>) {
    match &op.request {
        Request::Get {
            key,
            range_end: None,
            ..
        } => (vec![key.clone()], vec![]),
        Request::Put { key, lease, .. } => (vec![key.clone()], vec![*lease]),
        Request::Delete { key } => (vec![key.clone()], vec![]),
        Request::Txn {
            compares,
            success,
            failure,
        } => {
            let mut keys: Vec<String> = compares.iter().map(|c| c.key.clone()).collect();
            let mut leases = Vec::new();
            for o in success.iter().chain(failure) {
                keys.push(o.key().to_string());
                if let TxnOp::Put { lease, .. } = o {
                    leases.push(*lease);
                }
            }
            (keys, leases)
        }
        Request::LeaseRevoke { lease } => (vec![], vec![*lease]),
        _ => (vec![], vec![]),
    }
}

/// Every kv a call's response shows.
fn seen_kvs(op: &Operation) -> Vec<&KeyValue> {
    match &op.outcome {
        Outcome::Ok(Response::Get { kvs, .. }) => kvs.iter().collect(),
        Outcome::Ok(Response::Txn { results, .. }) => results
            .iter()
            .flat_map(|r| match r {
                TxnOpResult::Get { kvs } => kvs.iter().collect::<Vec<_>>(),
                _ => vec![],
            })
            .collect(),
        _ => vec![],
    }
}

/// Interns values per partition.
#[derive(Default)]
struct Values {
    ids: HashMap<String, u32>,
    list: Vec<String>,
}

impl Values {
    fn id(&mut self, v: &str) -> u32 {
        if let Some(&id) = self.ids.get(v) {
            return id;
        }
        let id = self.list.len() as u32;
        self.list.push(v.to_string());
        self.ids.insert(v.to_string(), id);
        id
    }
}

/// A partition while it is being built.
#[derive(Default)]
struct Builder {
    keys: Vec<String>,
    key_local: HashMap<String, u16>,
    leases: Vec<LeaseId>,
    lease_local: HashMap<LeaseId, u16>,
    values: Values,
    ops: Vec<POp>,
    /// (op index, header revision) of serializable read parts.
    serializable: Vec<(usize, Rev)>,
}

impl Builder {
    fn key(&self, k: &str) -> u16 {
        self.key_local[k]
    }

    fn obs_for(&mut self, key: &str, kvs: &[KeyValue]) -> Option<KvObs> {
        match kvs {
            [] => None,
            [kv] if kv.key == key => Some(KvObs {
                value: self.values.id(&kv.value),
                create: kv.create_revision,
                modr: kv.mod_revision,
                version: kv.version,
                lease: kv.lease,
            }),
            _ => Some(KvObs {
                value: self.values.id(WRONG_KEY_VALUE),
                create: 0,
                modr: 0,
                version: 0,
                lease: 0,
            }),
        }
    }

    fn txn_op(&mut self, o: &TxnOp) -> PTxnOp {
        match o {
            TxnOp::Get { key } => PTxnOp::Get { key: self.key(key) },
            TxnOp::Put { key, value, lease } => PTxnOp::Put {
                key: self.key(key),
                value: self.values.id(value),
                lease: (*lease != 0).then(|| self.lease_local[lease]),
            },
            TxnOp::Delete { key } => PTxnOp::Delete { key: self.key(key) },
        }
    }
}

/// True for the lease-related calls that found the lease gone.
fn lease_gone_evidence(op: &Operation, lease: LeaseId) -> bool {
    let names_lease = match &op.request {
        Request::Put { lease: l, .. } => *l == lease,
        Request::Txn {
            success, failure, ..
        } => success
            .iter()
            .chain(failure)
            .any(|o| matches!(o, TxnOp::Put { lease: l, .. } if *l == lease)),
        Request::LeaseRevoke { lease: l }
        | Request::LeaseKeepAlive { lease: l }
        | Request::LeaseTimeToLive { lease: l } => *l == lease,
        _ => false,
    };
    if !names_lease {
        return false;
    }
    match &op.outcome {
        Outcome::Failed { not_found, .. } => *not_found,
        Outcome::Ok(Response::LeaseKeepAlive { ttl_s }) => *ttl_s <= 0,
        Outcome::Ok(Response::LeaseTimeToLive { ttl_s }) => *ttl_s < 0,
        _ => false,
    }
}

/// Splits a history into partitions (see the module doc).
// One pass that turns each call into its partition's model ops: the
// per-kind arms share the partition maps built above them. Not split yet
// (issue 17 lists it).
#[allow(clippy::too_many_lines)]
pub(crate) fn build(h: &History) -> Result<Vec<Partition>, BuildError> {
    let live = |o: &&Operation| !matches!(o.outcome, Outcome::Failed { .. });
    let relevant: Vec<&Operation> = h
        .operations
        .iter()
        .filter(live)
        // Reads at a past revision, to compare members; not linearizable.
        .filter(|o| !h.member_reads.contains(&o.id))
        .filter(|o| is_kv(o) || matches!(o.request, Request::LeaseRevoke { .. }))
        .collect();

    // Keys and leases, then the groups that calls tie together.
    let mut key_set = BTreeSet::new();
    let mut lease_set = BTreeSet::new();
    for op in &relevant {
        let (keys, leases) = named(op);
        key_set.extend(keys);
        lease_set.extend(leases.into_iter().filter(|l| *l != 0));
        for kv in seen_kvs(op) {
            key_set.insert(kv.key.clone());
        }
    }
    let keys: Vec<String> = key_set.into_iter().collect();
    let leases: Vec<LeaseId> = lease_set.into_iter().collect();
    let key_node: HashMap<&str, usize> = keys
        .iter()
        .enumerate()
        .map(|(i, k)| (k.as_str(), i))
        .collect();
    let lease_node: HashMap<LeaseId, usize> = leases
        .iter()
        .enumerate()
        .map(|(i, l)| (*l, keys.len() + i))
        .collect();
    let mut uf = UnionFind((0..keys.len() + leases.len()).collect());
    for op in &relevant {
        if matches!(op.request, Request::Get { .. }) {
            continue;
        }
        let (ks, ls) = named(op);
        let nodes: Vec<usize> = ks
            .iter()
            .map(|k| key_node[k.as_str()])
            .chain(ls.iter().filter(|l| **l != 0).map(|l| lease_node[l]))
            .collect();
        for w in nodes.windows(2) {
            uf.union(w[0], w[1]);
        }
    }
    let mut root_part: BTreeMap<usize, usize> = BTreeMap::new();
    let mut builders: Vec<Builder> = Vec::new();
    let mut key_part: HashMap<&str, usize> = HashMap::new();
    for (i, k) in keys.iter().enumerate() {
        let root = uf.find(i);
        let p = *root_part.entry(root).or_insert_with(|| {
            builders.push(Builder::default());
            builders.len() - 1
        });
        let b = &mut builders[p];
        b.key_local.insert(k.clone(), b.keys.len() as u16);
        b.keys.push(k.clone());
        key_part.insert(k, p);
    }
    let mut lease_part: HashMap<LeaseId, usize> = HashMap::new();
    for (i, l) in leases.iter().enumerate() {
        let root = uf.find(keys.len() + i);
        // A lease no key was ever attached to changes nothing to check.
        if let Some(&p) = root_part.get(&root) {
            let b = &mut builders[p];
            b.lease_local.insert(*l, b.leases.len() as u16);
            b.leases.push(*l);
            lease_part.insert(*l, p);
        }
    }
    if let Some(b) = builders
        .iter()
        .find(|b| b.leases.len() > MAX_LEASES_PER_PARTITION)
    {
        return Err(BuildError::TooManyLeases {
            count: b.leases.len(),
            max: MAX_LEASES_PER_PARTITION,
        });
    }

    for op in &relevant {
        let ret = match op.outcome {
            Outcome::Ok(_) => Some(op.completed),
            _ => None,
        };
        let source = Source::Op(op.id);
        match (&op.request, &op.outcome) {
            (Request::Get { .. }, Outcome::Unknown { .. }) => {}
            (
                Request::Get {
                    key,
                    range_end,
                    serializable,
                },
                Outcome::Ok(Response::Get { revision, kvs }),
            ) => {
                // The keys of the read, by partition.
                let mut parts: BTreeMap<usize, Vec<&str>> = BTreeMap::new();
                match range_end {
                    None => parts.entry(key_part[key.as_str()]).or_default().push(key),
                    Some(end) => {
                        for k in &keys {
                            if key_in_range(k, key, Some(end)) {
                                parts.entry(key_part[k.as_str()]).or_default().push(k);
                            }
                        }
                    }
                }
                // A key the read returned outside what it asked for.
                for kv in kvs {
                    if !key_in_range(&kv.key, key, range_end.as_deref()) {
                        parts.entry(key_part[kv.key.as_str()]).or_default();
                    }
                }
                for (p, pkeys) in parts {
                    let b = &mut builders[p];
                    let mut success = Vec::new();
                    let mut results = Vec::new();
                    for k in &pkeys {
                        success.push(PTxnOp::Get { key: b.key(k) });
                        let mine: Vec<KeyValue> =
                            kvs.iter().filter(|kv| kv.key == *k).cloned().collect();
                        results.push(PResult::Get(b.obs_for(k, &mine)));
                    }
                    let outside: Vec<&KeyValue> = kvs
                        .iter()
                        .filter(|kv| !key_in_range(&kv.key, key, range_end.as_deref()))
                        .filter(|kv| b.key_local.contains_key(&kv.key))
                        .collect();
                    for kv in outside {
                        success.push(PTxnOp::Get {
                            key: b.key(&kv.key),
                        });
                        results.push(PResult::Get(b.obs_for("", std::slice::from_ref(kv))));
                    }
                    if *serializable {
                        b.serializable.push((b.ops.len(), *revision));
                    }
                    b.ops.push(POp {
                        source,
                        call: op.invoked,
                        ret,
                        kind: PKind::Txn {
                            compares: vec![],
                            success,
                            failure: vec![],
                            obs: Obs {
                                revision: Some(*revision),
                                succeeded: Some(true),
                                results: Some(results),
                            },
                        },
                    });
                }
            }
            (Request::Put { key, value, lease }, outcome) => {
                let b = &mut builders[key_part[key.as_str()]];
                let obs = match outcome {
                    Outcome::Ok(Response::Put { revision }) => Obs {
                        revision: Some(*revision),
                        succeeded: Some(true),
                        results: Some(vec![PResult::Put]),
                    },
                    Outcome::Ok(_) => mismatched_response(),
                    _ => Obs::default(),
                };
                let put = b.txn_op(&TxnOp::Put {
                    key: key.clone(),
                    value: value.clone(),
                    lease: *lease,
                });
                b.ops.push(txn_pop(
                    source,
                    op.invoked,
                    ret,
                    vec![],
                    vec![put],
                    vec![],
                    obs,
                ));
            }
            (Request::Delete { key }, outcome) => {
                let b = &mut builders[key_part[key.as_str()]];
                let obs = match outcome {
                    Outcome::Ok(Response::Delete { revision, deleted }) => Obs {
                        revision: Some(*revision),
                        succeeded: Some(true),
                        results: Some(vec![PResult::Delete(*deleted)]),
                    },
                    Outcome::Ok(_) => mismatched_response(),
                    _ => Obs::default(),
                };
                let del = PTxnOp::Delete { key: b.key(key) };
                b.ops.push(txn_pop(
                    source,
                    op.invoked,
                    ret,
                    vec![],
                    vec![del],
                    vec![],
                    obs,
                ));
            }
            (
                Request::Txn {
                    compares,
                    success,
                    failure,
                },
                outcome,
            ) => {
                let Some(first) = compares
                    .iter()
                    .map(|c| c.key.as_str())
                    .chain(success.iter().chain(failure).map(TxnOp::key))
                    .next()
                else {
                    // An empty txn touches nothing.
                    continue;
                };
                let b = &mut builders[key_part[first]];
                let pcompares: Vec<PCompare> = compares
                    .iter()
                    .map(|c| PCompare {
                        key: b.key(&c.key),
                        op: c.op,
                        target: match &c.target {
                            CompareTarget::Value(v) => PTarget::Value(v.clone()),
                            CompareTarget::Version(v) => PTarget::Version(*v),
                            CompareTarget::ModRevision(v) => PTarget::Mod(*v),
                            CompareTarget::CreateRevision(v) => PTarget::Create(*v),
                        },
                    })
                    .collect();
                let psuccess: Vec<PTxnOp> = success.iter().map(|o| b.txn_op(o)).collect();
                let pfailure: Vec<PTxnOp> = failure.iter().map(|o| b.txn_op(o)).collect();
                let obs = match outcome {
                    Outcome::Ok(Response::Txn {
                        revision,
                        succeeded,
                        results,
                    }) => {
                        let branch = if *succeeded { success } else { failure };
                        let mut pres = Vec::with_capacity(results.len());
                        for (i, r) in results.iter().enumerate() {
                            pres.push(match r {
                                TxnOpResult::Get { kvs } => {
                                    let key = branch.get(i).map_or("", TxnOp::key);
                                    PResult::Get(b.obs_for(key, kvs))
                                }
                                TxnOpResult::Put => PResult::Put,
                                TxnOpResult::Delete { deleted } => PResult::Delete(*deleted),
                            });
                        }
                        Obs {
                            revision: Some(*revision),
                            succeeded: Some(*succeeded),
                            results: Some(pres),
                        }
                    }
                    Outcome::Ok(_) => mismatched_response(),
                    _ => Obs::default(),
                };
                b.ops.push(txn_pop(
                    source, op.invoked, ret, pcompares, psuccess, pfailure, obs,
                ));
            }
            _ => {}
        }
    }

    // Lease ends.
    for (lease, &p) in &lease_part {
        let b = &mut builders[p];
        let local = b.lease_local[lease];
        let granted = h
            .operations
            .iter()
            .filter(|o| {
                matches!(o.outcome, Outcome::Ok(Response::LeaseGrant { lease: l, .. }) if l == *lease)
            })
            .map(|o| o.invoked)
            .min()
            .unwrap_or(0);
        let revoked = h
            .operations
            .iter()
            .filter(|o| matches!(o.request, Request::LeaseRevoke { lease: l } if l == *lease))
            .filter_map(|o| match o.outcome {
                Outcome::Ok(Response::LeaseRevoke { revision }) => Some((o, revision)),
                _ => None,
            })
            .min_by_key(|(o, _)| o.completed);
        let pop = match revoked {
            Some((o, revision)) => POp {
                source: Source::LeaseEnd {
                    lease: *lease,
                    revoke: Some(o.id),
                },
                call: o.invoked,
                ret: Some(o.completed),
                kind: PKind::LeaseEnd {
                    lease: local,
                    revision: Some(revision),
                },
            },
            None => POp {
                source: Source::LeaseEnd {
                    lease: *lease,
                    revoke: None,
                },
                call: granted,
                ret: h
                    .operations
                    .iter()
                    .filter(|o| lease_gone_evidence(o, *lease))
                    .map(|o| o.completed)
                    .min(),
                kind: PKind::LeaseEnd {
                    lease: local,
                    revision: None,
                },
            },
        };
        b.ops.push(pop);
    }

    Ok(builders.into_iter().map(finish).collect())
}

/// A response of the wrong type: an observation no model state matches.
fn mismatched_response() -> Obs {
    Obs {
        revision: Some(-1),
        succeeded: None,
        results: Some(vec![]),
    }
}

fn txn_pop(
    source: Source,
    call: u64,
    ret: Option<u64>,
    compares: Vec<PCompare>,
    success: Vec<PTxnOp>,
    failure: Vec<PTxnOp>,
    obs: Obs,
) -> POp {
    POp {
        source,
        call,
        ret,
        kind: PKind::Txn {
            compares,
            success,
            failure,
            obs,
        },
    }
}

/// Moves serializable reads' calls back as far as they may be linearized,
/// and sorts the ops by call.
fn finish(b: Builder) -> Partition {
    let mut p = Partition {
        keys: b.keys,
        leases: b.leases,
        values: b.values.list,
        ops: b.ops,
        classes: vec![],
    };
    p.patch_unknown_writes();
    for &(i, h) in &b.serializable {
        // A stale read can be linearized anywhere before the first write it
        // must precede: any write above its revision, or of unknown revision.
        let earliest_later_write = p
            .ops
            .iter()
            .filter(|o| o.may_write() && o.revision().is_none_or(|r| r > h))
            .map(|o| o.call)
            .min();
        if let Some(c) = earliest_later_write {
            p.ops[i].call = p.ops[i].call.min(c);
        }
    }
    p.ops.sort_by_key(|o| o.call);
    p.classify();
    p
}
