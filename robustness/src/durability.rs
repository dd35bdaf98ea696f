//! Durability: every acknowledged write is in the final state or was
//! superseded, and the members agree on that state.
//!
//! The final state is the linearizable read of the workload range the
//! harness makes after every fault healed (`History::final_read`). For each
//! key:
//! - present with mod revision `M`: no acknowledged write of the key may
//!   have a revision above `M` (it would be lost), the acknowledged write at
//!   `M`, if any, must be the value shown, and some put must have written
//!   that value;
//! - absent: the last acknowledged write, if a put, must be followed by
//!   something that may have deleted the key (an acknowledged delete above
//!   it, a delete whose outcome is unknown, or the end of its lease).
//!
//! `History::member_reads` are serializable reads of the same range at the
//! final read's revision on each member: they must all be equal.

use std::collections::BTreeMap;

use crate::finding::Finding;
use crate::history::{
    History, KeyValue, LeaseId, Operation, Outcome, Request, Response, Rev, TxnOp, TxnOpResult,
    describe_op, key_in_range,
};

#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct DurabilityReport {
    /// Acknowledged writes checked.
    pub acknowledged: usize,
    pub violations: Vec<Finding>,
    /// Why nothing was checked, if so.
    pub note: Option<String>,
}

/// An acknowledged change to one key.
struct Acked<'a> {
    rev: Rev,
    /// `None`: a delete.
    value: Option<&'a str>,
    lease: LeaseId,
    op: &'a Operation,
}

fn acked_writes(h: &History) -> BTreeMap<&str, Vec<Acked<'_>>> {
    let mut out: BTreeMap<&str, Vec<Acked>> = BTreeMap::new();
    for op in &h.operations {
        let Outcome::Ok(resp) = &op.outcome else {
            continue;
        };
        match (&op.request, resp) {
            (Request::Put { key, value, lease }, Response::Put { revision }) => {
                out.entry(key).or_default().push(Acked {
                    rev: *revision,
                    value: Some(value),
                    lease: *lease,
                    op,
                })
            }
            (Request::Delete { key }, Response::Delete { revision, deleted }) if *deleted > 0 => {
                out.entry(key).or_default().push(Acked {
                    rev: *revision,
                    value: None,
                    lease: 0,
                    op,
                })
            }
            (
                Request::Txn {
                    success, failure, ..
                },
                Response::Txn {
                    revision,
                    succeeded,
                    results,
                },
            ) => {
                let branch = if *succeeded { success } else { failure };
                for (o, r) in branch.iter().zip(results) {
                    match (o, r) {
                        (TxnOp::Put { key, value, lease }, _) => {
                            out.entry(key).or_default().push(Acked {
                                rev: *revision,
                                value: Some(value),
                                lease: *lease,
                                op,
                            })
                        }
                        (TxnOp::Delete { key }, TxnOpResult::Delete { deleted })
                            if *deleted > 0 =>
                        {
                            out.entry(key).or_default().push(Acked {
                                rev: *revision,
                                value: None,
                                lease: 0,
                                op,
                            })
                        }
                        _ => {}
                    }
                }
            }
            _ => {}
        }
    }
    for v in out.values_mut() {
        v.sort_by_key(|a| a.rev);
    }
    out
}

/// True when some call may have deleted `key` after revision `after`.
fn may_have_deleted(h: &History, key: &str, after: Rev, lease: LeaseId) -> bool {
    if lease != 0 {
        // The lease may have expired or been revoked.
        return true;
    }
    h.operations.iter().any(|op| {
        let deletes = match &op.request {
            Request::Delete { key: k } => k == key,
            Request::Txn {
                success, failure, ..
            } => success
                .iter()
                .chain(failure)
                .any(|o| matches!(o, TxnOp::Delete { key: k } if k == key)),
            _ => false,
        };
        deletes
            && match &op.outcome {
                Outcome::Unknown { .. } => true,
                Outcome::Ok(Response::Delete { revision, deleted }) => {
                    *deleted > 0 && *revision > after
                }
                Outcome::Ok(Response::Txn { revision, .. }) => *revision > after,
                _ => false,
            }
    })
}

fn violation(kind: &'static str, message: String, ops: &[&Operation]) -> Finding {
    Finding {
        checker: "durability",
        kind,
        message,
        ops: ops.iter().map(|o| o.id).collect(),
        lines: ops.iter().map(|o| describe_op(o)).collect(),
    }
}

pub fn check_durability(h: &History) -> DurabilityReport {
    let mut report = DurabilityReport::default();
    let Some(final_op) = h.final_read.and_then(|id| h.op(id)) else {
        report.note = Some("no final read in the history".into());
        return report;
    };
    let (
        Request::Get { key, range_end, .. },
        Outcome::Ok(Response::Get {
            revision: final_rev,
            kvs,
        }),
    ) = (&final_op.request, &final_op.outcome)
    else {
        report.note = Some(format!("the final read #{} did not succeed", final_op.id));
        return report;
    };
    let final_state: BTreeMap<&str, &KeyValue> =
        kvs.iter().map(|kv| (kv.key.as_str(), kv)).collect();
    let acked = acked_writes(h);
    let written = written_values(h);

    for (k, writes) in &acked {
        if !key_in_range(k, key, range_end.as_deref()) {
            continue;
        }
        report.acknowledged += writes.len();
        match final_state.get(k) {
            Some(kv) => {
                for w in writes.iter().filter(|w| w.rev > kv.mod_revision) {
                    report.violations.push(violation(
                        "lost-write",
                        format!(
                            "{k}: the write acknowledged at revision {} is not in the final state (mod revision {})",
                            w.rev, kv.mod_revision
                        ),
                        &[w.op, final_op],
                    ));
                }
                if let Some(w) = writes.iter().find(|w| w.rev == kv.mod_revision)
                    && w.value != Some(kv.value.as_str())
                {
                    report.violations.push(violation(
                        "wrong-value",
                        format!(
                            "{k}: the final state shows {:?} at revision {}, where the acknowledged write did something else",
                            kv.value, kv.mod_revision
                        ),
                        &[w.op, final_op],
                    ));
                }
            }
            None => {
                if let Some(last) = writes.last()
                    && last.value.is_some()
                    && last.rev <= *final_rev
                    && !may_have_deleted(h, k, last.rev, last.lease)
                {
                    report.violations.push(violation(
                        "lost-write",
                        format!(
                            "{k}: acknowledged at revision {} and never deleted, but absent from the final state",
                            last.rev
                        ),
                        &[last.op, final_op],
                    ));
                }
            }
        }
    }
    for kv in kvs {
        if !written.contains_key(&(kv.key.as_str(), kv.value.as_str())) {
            report.violations.push(violation(
                "phantom-value",
                format!(
                    "{}={:?} in the final state was never written",
                    kv.key, kv.value
                ),
                &[final_op],
            ));
        }
    }

    members_disagree(h, &mut report.violations);
    report
}

/// Every (key, value) a put that may have applied wrote.
fn written_values(h: &History) -> BTreeMap<(&str, &str), ()> {
    let mut written: BTreeMap<(&str, &str), ()> = BTreeMap::new();
    for op in &h.operations {
        if matches!(op.outcome, Outcome::Failed { .. }) {
            continue;
        }
        match &op.request {
            Request::Put { key, value, .. } => {
                written.insert((key, value), ());
            }
            Request::Txn {
                success, failure, ..
            } => {
                for o in success.iter().chain(failure) {
                    if let TxnOp::Put { key, value, .. } = o {
                        written.insert((key, value), ());
                    }
                }
            }
            _ => {}
        }
    }
    written
}

/// The members' final reads: they must agree.
fn members_disagree(h: &History, out: &mut Vec<Finding>) {
    let member_reads: Vec<&Operation> = h.member_reads.iter().filter_map(|id| h.op(*id)).collect();
    let mut reference: Option<(&Operation, &Vec<KeyValue>)> = None;
    for op in member_reads {
        let Outcome::Ok(Response::Get { kvs, .. }) = &op.outcome else {
            continue;
        };
        match reference {
            None => reference = Some((op, kvs)),
            Some((r, rkvs)) if rkvs != kvs => {
                let diff: Vec<String> = rkvs
                    .iter()
                    .filter(|kv| !kvs.contains(kv))
                    .chain(kvs.iter().filter(|kv| !rkvs.contains(kv)))
                    .take(5)
                    .map(crate::history::describe_kv)
                    .collect();
                let mut f = violation(
                    "members-disagree",
                    format!(
                        "m{} and m{} hold different states at the same revision",
                        r.member + 1,
                        op.member + 1
                    ),
                    &[r, op],
                );
                f.lines = diff;
                out.push(f);
            }
            Some(_) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testkit::*;

    fn with_final(mut h: H, rev: Rev, kvs: Vec<KeyValue>) -> H {
        h.range((100, 101), "", rev, kvs);
        h.h.final_read = Some(h.h.operations.len() as u64);
        h
    }

    #[test]
    fn final_state_with_every_write_passes() {
        let mut h = H::new();
        h.put((0, 1), "a", "1", 2);
        h.put((2, 3), "a", "2", 3);
        h.put((4, 5), "b", "1", 4);
        h.delete((6, 7), "b", 5, 1);
        let h = with_final(h, 5, vec![kv("a", "2", 2, 3, 2)]);
        let r = check_durability(&h.h);
        assert!(r.violations.is_empty(), "{:#?}", r.violations);
        assert_eq!(r.acknowledged, 4);
    }

    #[test]
    fn lost_write_is_rejected() {
        let mut h = H::new();
        h.put((0, 1), "a", "1", 2);
        h.put((2, 3), "a", "2", 3);
        let h = with_final(h, 3, vec![kv("a", "1", 2, 2, 1)]);
        let r = check_durability(&h.h);
        assert_eq!(
            r.violations.iter().map(|v| v.kind).collect::<Vec<_>>(),
            vec!["lost-write"]
        );
    }

    #[test]
    fn vanished_key_is_rejected_unless_something_could_delete_it() {
        let mut h = H::new();
        h.put((0, 1), "a", "1", 2);
        let lost = with_final(h, 3, vec![]);
        assert_eq!(check_durability(&lost.h).violations.len(), 1);

        let mut h = H::new();
        h.put((0, 1), "a", "1", 2);
        h.op(
            0,
            (2, 3),
            Request::Delete { key: "a".into() },
            Outcome::Unknown {
                error: "timeout".into(),
            },
        );
        let ok = with_final(h, 3, vec![]);
        assert!(check_durability(&ok.h).violations.is_empty());
    }

    #[test]
    fn phantom_and_disagreeing_members_are_rejected() {
        let mut h = H::new();
        h.put((0, 1), "a", "1", 2);
        let mut h = with_final(h, 2, vec![kv("a", "x", 2, 2, 1)]);
        h.range((200, 201), "", 2, vec![kv("a", "1", 2, 2, 1)]);
        h.range((200, 201), "", 2, vec![]);
        let n = h.h.operations.len() as u64;
        h.h.member_reads = vec![n - 1, n];
        let kinds: Vec<&str> = check_durability(&h.h)
            .violations
            .iter()
            .map(|v| v.kind)
            .collect();
        assert!(kinds.contains(&"phantom-value"), "{kinds:?}");
        assert!(kinds.contains(&"wrong-value"), "{kinds:?}");
        assert!(kinds.contains(&"members-disagree"), "{kinds:?}");
    }
}
