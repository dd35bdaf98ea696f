//! Lease checks, on top of what the KV check already covers (keys of a
//! lease vanish at one revision, no put with a lease that ended):
//!
//! - **No early expiry.** A grant or keep-alive that returned TTL `t` and was
//!   sent at instant `s` refreshed the lease at some point after `s`, so the
//!   lease lives at least until `s + t`. Evidence that it was gone before
//!   that (a call that found it missing, a read that no longer saw its key,
//!   a delete event whose revision some call had already seen) is a
//!   violation — unless the client itself had asked to revoke it by then.
//!   Both ends are on the harness's monotonic clock; the servers run on the
//!   same machine, whose monotonic clock does not jump.
//! - **Keys go with their lease.** Once a revoke succeeded, or a call found
//!   the lease gone, a linearizable read (the final state included) must not
//!   show a key attached to it.
//! - **A lease ends once.** No keep-alive refreshes it after it was found
//!   gone; no second revoke succeeds.

use std::collections::{BTreeMap, BTreeSet};

use crate::finding::Finding;
use crate::history::{
    History, LeaseId, Nanos, Operation, Outcome, Request, Response, Rev, TxnOp, TxnOpResult,
    describe_op,
};

#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct LeaseReport {
    pub leases: usize,
    pub violations: Vec<Finding>,
}

fn violation(kind: &'static str, message: String, ops: &[&Operation]) -> Finding {
    Finding {
        checker: "lease",
        kind,
        message,
        ops: ops.iter().map(|o| o.id).collect(),
        lines: ops.iter().map(|o| describe_op(o)).collect(),
    }
}

/// What the history tells about one lease.
#[derive(Default)]
struct LeaseFacts<'a> {
    /// Grants and keep-alives that refreshed the lease: until when each
    /// proves it alive.
    proofs: Vec<(Nanos, &'a Operation)>,
    /// The first time the client asked to revoke it.
    revoke_asked: Option<Nanos>,
    /// Successful revokes.
    revoked: Vec<&'a Operation>,
    /// Calls that found the lease gone.
    gone: Vec<&'a Operation>,
    /// Keys put with this lease (successfully).
    keys: BTreeSet<&'a str>,
    /// When the first put of each key with this lease completed.
    attached_at: BTreeMap<&'a str, Nanos>,
}

fn ttl_ns(ttl_s: i64) -> Nanos {
    u64::try_from(ttl_s).unwrap_or(0) * 1_000_000_000
}

/// True when the op found lease `l` gone.
fn found_gone(op: &Operation, l: LeaseId) -> bool {
    let names = match &op.request {
        Request::Put { lease, .. } => *lease == l,
        Request::Txn {
            success, failure, ..
        } => success
            .iter()
            .chain(failure)
            .any(|o| matches!(o, TxnOp::Put { lease, .. } if *lease == l)),
        Request::LeaseRevoke { lease }
        | Request::LeaseKeepAlive { lease }
        | Request::LeaseTimeToLive { lease } => *lease == l,
        _ => false,
    };
    names
        && match &op.outcome {
            Outcome::Failed { not_found, .. } => *not_found,
            Outcome::Ok(Response::LeaseKeepAlive { ttl_s }) => *ttl_s <= 0,
            Outcome::Ok(Response::LeaseTimeToLive { ttl_s }) => *ttl_s < 0,
            _ => false,
        }
}

fn leases_named(op: &Operation) -> Vec<LeaseId> {
    match &op.request {
        Request::Put { lease, .. } => vec![*lease],
        Request::Txn {
            success, failure, ..
        } => success
            .iter()
            .chain(failure)
            .filter_map(|o| match o {
                TxnOp::Put { lease, .. } => Some(*lease),
                _ => None,
            })
            .collect(),
        Request::LeaseRevoke { lease }
        | Request::LeaseKeepAlive { lease }
        | Request::LeaseTimeToLive { lease } => vec![*lease],
        _ => vec![],
    }
    .into_iter()
    .filter(|l| *l != 0)
    .collect()
}

/// For each key, (present?, op) for every linearizable read of it that
/// returned.
fn key_reads(h: &History) -> BTreeMap<&str, Vec<(bool, &Operation)>> {
    let mut out: BTreeMap<&str, Vec<(bool, &Operation)>> = BTreeMap::new();
    for op in &h.operations {
        match (&op.request, &op.outcome) {
            (
                Request::Get {
                    key,
                    range_end: None,
                    serializable: false,
                },
                Outcome::Ok(Response::Get { kvs, .. }),
            ) => out
                .entry(key.as_str())
                .or_default()
                .push((kvs.iter().any(|kv| kv.key == *key), op)),
            (
                Request::Get {
                    range_end: Some(_),
                    serializable: false,
                    ..
                },
                Outcome::Ok(Response::Get { .. }),
            ) => {
                // Range reads: only what they show present (absence is
                // judged per key by the caller, which knows the range).
            }
            (
                Request::Txn {
                    success, failure, ..
                },
                Outcome::Ok(Response::Txn {
                    succeeded, results, ..
                }),
            ) => {
                let branch = if *succeeded { success } else { failure };
                for (o, r) in branch.iter().zip(results) {
                    if let (TxnOp::Get { key }, TxnOpResult::Get { kvs }) = (o, r) {
                        out.entry(key.as_str())
                            .or_default()
                            .push((!kvs.is_empty(), op));
                    }
                }
            }
            _ => {}
        }
    }
    out
}

/// Earliest completion of a linearizable call whose revision is at least
/// `rev`: by then, the write at `rev` had happened.
fn first_seen_at_or_after(h: &History, rev: Rev) -> Option<&Operation> {
    h.operations
        .iter()
        .filter(|o| {
            let r = match &o.outcome {
                Outcome::Ok(Response::Get { revision, .. }) => {
                    if matches!(
                        o.request,
                        Request::Get {
                            serializable: true,
                            ..
                        }
                    ) {
                        return false;
                    }
                    *revision
                }
                Outcome::Ok(Response::Put { revision })
                | Outcome::Ok(Response::Delete { revision, .. })
                | Outcome::Ok(Response::Txn { revision, .. })
                | Outcome::Ok(Response::LeaseRevoke { revision }) => *revision,
                _ => return false,
            };
            r >= rev
        })
        .min_by_key(|o| o.completed)
}

pub fn check_leases(h: &History) -> LeaseReport {
    let facts = lease_facts(h);
    let mut report = LeaseReport {
        leases: facts.len(),
        violations: vec![],
    };
    let reads = key_reads(h);
    let shared_keys = keys_written_otherwise(h);
    for (lease, f) in &facts {
        // The lease checks stay off keys others write too.
        let keys: Vec<&str> = f
            .keys
            .iter()
            .copied()
            .filter(|k| !shared_keys.contains(k))
            .collect();
        early_expiry(h, *lease, f, &keys, &reads, &mut report.violations);
        after_end(h, *lease, f, &keys, &reads, &mut report.violations);
        if f.revoked.len() > 1 {
            report.violations.push(violation(
                "revoked-twice",
                format!("lease {lease:x} was revoked successfully twice"),
                &f.revoked,
            ));
        }
    }
    report
}

/// What the history tells about each lease.
fn lease_facts(h: &History) -> BTreeMap<LeaseId, LeaseFacts<'_>> {
    let mut facts: BTreeMap<LeaseId, LeaseFacts<'_>> = BTreeMap::new();
    for op in &h.operations {
        match (&op.request, &op.outcome) {
            (Request::LeaseGrant { .. }, Outcome::Ok(Response::LeaseGrant { lease, ttl_s })) => {
                let f = facts.entry(*lease).or_default();
                f.proofs.push((op.invoked + ttl_ns(*ttl_s), op));
            }
            (
                Request::LeaseKeepAlive { lease },
                Outcome::Ok(Response::LeaseKeepAlive { ttl_s }),
            ) if *ttl_s > 0 => {
                let f = facts.entry(*lease).or_default();
                f.proofs.push((op.invoked + ttl_ns(*ttl_s), op));
            }
            (Request::LeaseRevoke { lease }, outcome) => {
                let f = facts.entry(*lease).or_default();
                f.revoke_asked = Some(f.revoke_asked.map_or(op.invoked, |t| t.min(op.invoked)));
                if matches!(outcome, Outcome::Ok(_)) {
                    f.revoked.push(op);
                }
            }
            (Request::Put { key, lease, .. }, Outcome::Ok(_)) if *lease != 0 => {
                let f = facts.entry(*lease).or_default();
                f.keys.insert(key);
                f.attached_at.entry(key).or_insert(op.completed);
            }
            _ => {}
        }
        for l in leases_named(op) {
            if found_gone(op, l) {
                facts.entry(l).or_default().gone.push(op);
            }
        }
    }
    facts
}

/// Keys anything other than a put with its lease writes: the lease checks
/// stay off them (a delete or an unleased put would explain their absence).
fn keys_written_otherwise(h: &History) -> BTreeSet<&str> {
    let mut shared_keys: BTreeSet<&str> = BTreeSet::new();
    for op in &h.operations {
        match &op.request {
            Request::Put { key, lease: 0, .. } | Request::Delete { key } => {
                shared_keys.insert(key);
            }
            Request::Txn {
                success, failure, ..
            } => {
                for o in success.iter().chain(failure) {
                    match o {
                        TxnOp::Put { key, lease: 0, .. } | TxnOp::Delete { key } => {
                            shared_keys.insert(key);
                        }
                        _ => {}
                    }
                }
            }
            _ => {}
        }
    }
    shared_keys
}

/// Evidence that the lease was gone before its last proved refresh ran
/// out (and before the client asked to revoke it).
fn early_expiry<'a>(
    h: &'a History,
    lease: LeaseId,
    f: &LeaseFacts<'a>,
    keys: &[&'a str],
    reads: &BTreeMap<&str, Vec<(bool, &'a Operation)>>,
    out: &mut Vec<Finding>,
) {
    let asked = f.revoke_asked.unwrap_or(Nanos::MAX);
    // The longest life proved by refreshes that certainly came before
    // `t` (completed by then): a refresh after the lease was gone is a
    // resurrection, reported below, not a proof.
    let alive_until = |t: Nanos| -> Option<(Nanos, &Operation)> {
        f.proofs
            .iter()
            .filter(|(_, p)| p.completed <= t)
            .max_by_key(|(u, _)| *u)
            .copied()
    };
    // Calls that found it gone too early.
    for g in &f.gone {
        if let Some((until, proof)) = alive_until(g.invoked)
            && g.completed < until
            && g.completed < asked
        {
            out.push(violation(
                "early-expiry",
                format!(
                    "lease {lease:x} was gone {:.3} s before it could expire",
                    (until - g.completed) as f64 / 1e9
                ),
                &[proof, g],
            ));
        }
    }
    for key in keys {
        let attached = f.attached_at[key];
        // Reads that no longer saw a key of the lease.
        for (present, r) in reads.get(key).into_iter().flatten() {
            if let Some((until, proof)) = alive_until(r.invoked)
                && !present
                && r.invoked > attached
                && r.completed < until
                && r.completed < asked
            {
                out.push(violation(
                    "early-expiry",
                    format!(
                        "{key} (lease {lease:x}) was gone {:.3} s before the lease could expire",
                        (until - r.completed) as f64 / 1e9
                    ),
                    &[proof, r],
                ));
            }
        }
        // Delete events of the key (each revision once, whichever
        // watchers saw it): the deletion happened before any call that
        // saw its revision completed.
        let deletes: BTreeSet<Rev> = h
            .watches
            .iter()
            .flat_map(|w| &w.events)
            .filter(|e| {
                e.event.kv.key == **key && e.event.kind == crate::history::EventKind::Delete
            })
            .map(|e| e.event.revision())
            .collect();
        for rev in deletes {
            if let Some(seen) = first_seen_at_or_after(h, rev)
                && let Some((until, proof)) = alive_until(seen.invoked)
                && seen.completed < until
                && seen.completed < asked
                && seen.invoked > attached
            {
                out.push(violation(
                    "early-expiry",
                    format!(
                        "{key} (lease {lease:x}) was deleted at revision {rev}, seen by #{} {:.3} s before the lease could expire",
                        seen.id,
                        (until - seen.completed) as f64 / 1e9
                    ),
                    &[proof, seen],
                ));
            }
        }
    }
}

/// After the lease ended (revoked, or found gone): none of its keys in a
/// linearizable read, and no refresh.
fn after_end<'a>(
    h: &'a History,
    lease: LeaseId,
    f: &LeaseFacts<'a>,
    keys: &[&'a str],
    reads: &BTreeMap<&str, Vec<(bool, &'a Operation)>>,
    out: &mut Vec<Finding>,
) {
    // After the end: no key of the lease in a linearizable read.
    let ended = f
        .revoked
        .iter()
        .chain(&f.gone)
        .min_by_key(|o| o.completed)
        .copied();
    if let Some(end) = ended {
        for key in keys {
            for (present, r) in reads.get(key).into_iter().flatten() {
                if *present && r.invoked > end.completed {
                    out.push(violation(
                        "key-outlived-lease",
                        format!("{key} is still there after lease {lease:x} ended"),
                        &[end, r],
                    ));
                }
            }
            for r in final_reads(h) {
                if r.invoked > end.completed && shows(r, key) {
                    out.push(violation(
                        "key-outlived-lease",
                        format!("{key} is in the final state after lease {lease:x} ended"),
                        &[end, r],
                    ));
                }
            }
        }
        // Refreshed after it was found gone.
        for op in &h.operations {
            if let (
                Request::LeaseKeepAlive { lease: l },
                Outcome::Ok(Response::LeaseKeepAlive { ttl_s }),
            ) = (&op.request, &op.outcome)
                && *l == lease
                && *ttl_s > 0
                && op.invoked > end.completed
            {
                out.push(violation(
                    "lease-resurrected",
                    format!("lease {lease:x} was kept alive after it ended"),
                    &[end, op],
                ));
            }
        }
    }
}

fn final_reads(h: &History) -> Vec<&Operation> {
    h.final_read.iter().filter_map(|id| h.op(*id)).collect()
}

fn shows(op: &Operation, key: &str) -> bool {
    matches!(&op.outcome, Outcome::Ok(Response::Get { kvs, .. }) if kvs.iter().any(|kv| kv.key == key))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testkit::*;

    const S: u64 = 1000;

    fn kinds(r: &LeaseReport) -> Vec<&'static str> {
        r.violations.iter().map(|v| v.kind).collect()
    }

    fn kept_alive() -> H {
        let mut h = H::new();
        h.grant((0, 1), 7, 2);
        h.put_lease((2, 3), "l", "1", 7, 2);
        h.keepalive((S, S + 1), 7, 2);
        h.keepalive((2 * S, 2 * S + 1), 7, 2);
        h
    }

    #[test]
    fn kept_alive_lease_passes() {
        let mut h = kept_alive();
        h.get(
            (3 * S, 3 * S + 1),
            "l",
            2,
            Some(leased(kv("l", "1", 2, 2, 1), 7)),
        );
        // Expired 2 s after the last keep-alive: fine.
        h.get((4 * S + 10, 4 * S + 11), "l", 3, None);
        h.time_to_live((4 * S + 20, 4 * S + 21), 7, -1);
        let r = check_leases(&h.h);
        assert!(r.violations.is_empty(), "{:#?}", r.violations);
    }

    #[test]
    fn early_expiry_seen_by_a_read_is_rejected() {
        let mut h = kept_alive();
        // 2 s lease refreshed at 2 s: alive until at least 4 s.
        h.get((3 * S, 3 * S + 1), "l", 3, None);
        assert_eq!(kinds(&check_leases(&h.h)), vec!["early-expiry"]);
    }

    #[test]
    fn early_expiry_seen_by_keepalive_is_rejected() {
        let mut h = kept_alive();
        h.keepalive((3 * S, 3 * S + 1), 7, 0);
        assert_eq!(kinds(&check_leases(&h.h)), vec!["early-expiry"]);
    }

    #[test]
    fn early_expiry_seen_through_a_delete_event_is_rejected() {
        let mut h = kept_alive();
        h.watch(
            0,
            "",
            1,
            vec![
                put_event(leased(kv("l", "1", 2, 2, 1), 7)),
                delete_event("l", 3),
            ],
        );
        // A write at revision 4 completed at 3 s: the delete at 3 came
        // before, while the lease had to live until 4 s.
        h.put((3 * S - 5, 3 * S), "other", "x", 4);
        assert_eq!(kinds(&check_leases(&h.h)), vec!["early-expiry"]);
        // Reported once, however many watchers saw the delete.
        let again = h.h.watches[0].clone();
        h.h.watches.push(again);
        assert_eq!(kinds(&check_leases(&h.h)), vec!["early-expiry"]);
    }

    #[test]
    fn revoke_explains_early_disappearance() {
        let mut h = kept_alive();
        h.revoke((2 * S + 10, 2 * S + 11), 7, 3);
        h.get((3 * S, 3 * S + 1), "l", 3, None);
        assert!(check_leases(&h.h).violations.is_empty());
    }

    #[test]
    fn key_outliving_its_lease_is_rejected() {
        let mut h = kept_alive();
        h.revoke((2 * S + 10, 2 * S + 11), 7, 3);
        h.get(
            (3 * S, 3 * S + 1),
            "l",
            3,
            Some(leased(kv("l", "1", 2, 2, 1), 7)),
        );
        assert_eq!(kinds(&check_leases(&h.h)), vec!["key-outlived-lease"]);
    }

    #[test]
    fn key_in_final_state_after_expiry_is_rejected() {
        let mut h = kept_alive();
        h.time_to_live((5 * S, 5 * S + 1), 7, -1);
        h.range(
            (6 * S, 6 * S + 1),
            "",
            3,
            vec![leased(kv("l", "1", 2, 2, 1), 7)],
        );
        h.h.final_read = Some(h.h.operations.len() as u64);
        assert_eq!(kinds(&check_leases(&h.h)), vec!["key-outlived-lease"]);
    }

    #[test]
    fn keepalive_after_the_end_is_rejected() {
        let mut h = kept_alive();
        h.time_to_live((5 * S, 5 * S + 1), 7, -1);
        h.keepalive((6 * S, 6 * S + 1), 7, 2);
        assert_eq!(kinds(&check_leases(&h.h)), vec!["lease-resurrected"]);
    }
}
