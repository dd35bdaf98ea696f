use std::time::Duration;

use super::*;
use crate::history::*;
use crate::testkit::*;

fn opts() -> KvCheckOptions {
    KvCheckOptions {
        time_budget: Duration::from_secs(20),
        partition_budget: Duration::from_secs(20),
        max_cache_entries: 1_000_000,
        minimize_budget: Duration::from_secs(10),
        threads: 1,
    }
}

fn verdict(h: &H) -> KvReport {
    check_kv(&h.h, &opts())
}

#[track_caller]
fn assert_passes(h: &H) {
    let r = verdict(h);
    assert_eq!(
        r.verdict,
        Verdict::Linearizable,
        "expected linearizable: {:#?}",
        r.violations().map(KvViolation::render).collect::<Vec<_>>()
    );
}

#[track_caller]
fn assert_rejects(h: &H) -> KvViolation {
    let r = verdict(h);
    assert_eq!(
        r.verdict,
        Verdict::Violation,
        "expected a violation: {r:#?}"
    );
    r.violations().next().expect("a violation").clone()
}

#[test]
fn sequential_puts_and_gets_pass() {
    let mut h = H::new();
    h.put((0, 1), "a", "1", 2);
    h.get((2, 3), "a", 2, Some(kv("a", "1", 2, 2, 1)));
    h.put((4, 5), "a", "2", 3);
    h.get((6, 7), "a", 3, Some(kv("a", "2", 2, 3, 2)));
    h.delete((8, 9), "a", 4, 1);
    h.get((10, 11), "a", 4, None);
    h.put((12, 13), "a", "3", 5);
    h.get((14, 15), "a", 5, Some(kv("a", "3", 5, 5, 1)));
    assert_passes(&h);
}

#[test]
fn concurrent_put_may_or_may_not_be_seen() {
    let mut h = H::new();
    h.put((0, 1), "a", "1", 2);
    h.put((2, 10), "a", "2", 3);
    h.get((3, 4), "a", 2, Some(kv("a", "1", 2, 2, 1)));
    h.get((5, 6), "a", 3, Some(kv("a", "2", 2, 3, 2)));
    assert_passes(&h);
}

#[test]
fn stale_read_is_rejected() {
    let mut h = H::new();
    h.put((0, 1), "a", "1", 2);
    h.put((2, 3), "a", "2", 3);
    // Invoked after the second put completed, yet shows the first.
    let stale = h.get((4, 5), "a", 2, Some(kv("a", "1", 2, 2, 1)));
    let v = assert_rejects(&h);
    assert!(
        v.slice.iter().any(|l| l.op == Some(stale)),
        "{}",
        v.render()
    );
    assert!(v.minimal, "{}", v.render());
}

#[test]
fn stale_read_with_current_header_is_rejected() {
    let mut h = H::new();
    h.put((0, 1), "a", "1", 2);
    h.put((2, 3), "a", "2", 3);
    h.get((4, 5), "a", 3, Some(kv("a", "1", 2, 2, 1)));
    assert_rejects(&h);
}

#[test]
fn lost_write_is_rejected() {
    let mut h = H::new();
    h.put((0, 1), "a", "1", 2);
    h.put((2, 3), "b", "x", 3);
    h.get((4, 5), "a", 3, None);
    assert_rejects(&h);
}

#[test]
fn revisions_against_real_time_are_rejected() {
    let mut h = H::new();
    h.put((0, 1), "a", "1", 5);
    h.put((2, 3), "a", "2", 4);
    assert_rejects(&h);
}

#[test]
fn wrong_version_is_rejected() {
    let mut h = H::new();
    h.put((0, 1), "a", "1", 2);
    h.put((2, 3), "a", "2", 3);
    h.get((4, 5), "a", 3, Some(kv("a", "2", 2, 3, 3)));
    assert_rejects(&h);
}

#[test]
fn phantom_value_is_rejected() {
    let mut h = H::new();
    h.put((0, 1), "a", "1", 2);
    h.get((4, 5), "a", 2, Some(kv("a", "never-written", 2, 2, 1)));
    assert_rejects(&h);
}

#[test]
fn unknown_put_may_have_happened() {
    let mut h = H::new();
    h.put((0, 1), "a", "1", 2);
    h.put_unknown((2, 3), "a", "2");
    h.get((10, 11), "a", 3, Some(kv("a", "2", 2, 3, 2)));
    assert_passes(&h);
}

#[test]
fn unknown_put_may_never_happen() {
    let mut h = H::new();
    h.put((0, 1), "a", "1", 2);
    h.put_unknown((2, 3), "a", "2");
    h.get((10, 11), "a", 9, Some(kv("a", "1", 2, 2, 1)));
    assert_passes(&h);
}

#[test]
fn unknown_put_seen_only_through_version_passes() {
    let mut h = H::new();
    h.put((0, 1), "a", "1", 2);
    h.put_unknown((2, 3), "a", "2");
    h.put((4, 5), "a", "3", 7);
    // Version 3: the unknown put happened, between the two others.
    h.get((6, 7), "a", 7, Some(kv("a", "3", 2, 7, 3)));
    assert_passes(&h);
}

#[test]
fn unknown_put_seen_before_its_call_is_rejected() {
    let mut h = H::new();
    h.put((0, 1), "a", "1", 2);
    h.get((2, 3), "a", 3, Some(kv("a", "2", 2, 3, 2)));
    h.put_unknown((5, 6), "a", "2");
    assert_rejects(&h);
}

#[test]
fn serializable_read_may_be_stale() {
    let mut h = H::new();
    h.put((0, 1), "a", "1", 2);
    h.put((2, 3), "a", "2", 3);
    h.get_mode((4, 5), "a", 2, Some(kv("a", "1", 2, 2, 1)), true);
    assert_passes(&h);
}

#[test]
fn serializable_read_of_the_future_is_rejected() {
    let mut h = H::new();
    h.put((0, 1), "a", "1", 2);
    h.get_mode((2, 3), "a", 3, Some(kv("a", "2", 2, 3, 2)), true);
    h.put((5, 6), "a", "2", 3);
    assert_rejects(&h);
}

#[test]
fn serializable_read_must_match_its_revision() {
    let mut h = H::new();
    h.put((0, 1), "a", "1", 2);
    h.put((2, 3), "a", "2", 3);
    // Header 3, but the state of revision 2.
    h.get_mode((4, 5), "a", 3, Some(kv("a", "1", 2, 2, 1)), true);
    assert_rejects(&h);
}

#[test]
fn cas_follows_mod_revision() {
    let mut h = H::new();
    h.put((0, 1), "a", "1", 2);
    h.cas(
        (2, 3),
        "a",
        2,
        "2",
        Outcome::Ok(Response::Txn {
            revision: 3,
            succeeded: true,
            results: vec![TxnOpResult::Put],
        }),
    );
    h.cas(
        (4, 5),
        "a",
        2,
        "3",
        Outcome::Ok(Response::Txn {
            revision: 3,
            succeeded: false,
            results: vec![TxnOpResult::Get {
                kvs: vec![kv("a", "2", 2, 3, 2)],
            }],
        }),
    );
    assert_passes(&h);
}

#[test]
fn cas_that_succeeds_on_a_stale_revision_is_rejected() {
    let mut h = H::new();
    h.put((0, 1), "a", "1", 2);
    h.put((2, 3), "a", "2", 3);
    h.cas(
        (4, 5),
        "a",
        2,
        "3",
        Outcome::Ok(Response::Txn {
            revision: 4,
            succeeded: true,
            results: vec![TxnOpResult::Put],
        }),
    );
    assert_rejects(&h);
}

#[test]
fn cas_with_unknown_outcome_branches_on_unknown_revision() {
    let mut h = H::new();
    h.put((0, 1), "a", "1", 2);
    // Unknown revision for "2"; the CAS on it may or may not succeed.
    h.put_unknown((2, 3), "a", "2");
    h.cas(
        (4, 5),
        "a",
        5,
        "3",
        Outcome::Unknown {
            error: "timeout".into(),
        },
    );
    h.get((9, 10), "a", 6, Some(kv("a", "3", 2, 6, 3)));
    assert_passes(&h);
}

fn multi_key_txn(h: &mut H, t: (u64, u64), a: &str, b: &str, rev: Rev) {
    h.op(
        2,
        t,
        Request::Txn {
            compares: vec![],
            success: vec![
                TxnOp::Put {
                    key: "g/a".into(),
                    value: a.into(),
                    lease: 0,
                },
                TxnOp::Put {
                    key: "g/b".into(),
                    value: b.into(),
                    lease: 0,
                },
            ],
            failure: vec![],
        },
        Outcome::Ok(Response::Txn {
            revision: rev,
            succeeded: true,
            results: vec![TxnOpResult::Put, TxnOpResult::Put],
        }),
    );
}

#[test]
fn multi_key_txn_reads_atomically() {
    let mut h = H::new();
    multi_key_txn(&mut h, (0, 1), "a1", "b1", 2);
    multi_key_txn(&mut h, (2, 6), "a2", "b2", 3);
    h.range(
        (3, 4),
        "g/",
        2,
        vec![kv("g/a", "a1", 2, 2, 1), kv("g/b", "b1", 2, 2, 1)],
    );
    h.range(
        (7, 8),
        "g/",
        3,
        vec![kv("g/a", "a2", 2, 3, 2), kv("g/b", "b2", 2, 3, 2)],
    );
    assert_passes(&h);
}

#[test]
fn torn_multi_key_txn_is_rejected() {
    let mut h = H::new();
    multi_key_txn(&mut h, (0, 1), "a1", "b1", 2);
    multi_key_txn(&mut h, (2, 6), "a2", "b2", 3);
    // Half of the second txn.
    h.range(
        (3, 4),
        "g/",
        3,
        vec![kv("g/a", "a2", 2, 3, 2), kv("g/b", "b1", 2, 2, 1)],
    );
    assert_rejects(&h);
}

#[test]
fn torn_read_across_groups_is_rejected_by_revision() {
    let mut h = H::new();
    h.put((0, 1), "x", "1", 2);
    h.put((2, 3), "y", "1", 3);
    // x and y are separate partitions; the range read is split, but its
    // revision 3 must include the write to y at 3.
    h.range((4, 5), "", 3, vec![kv("x", "1", 2, 2, 1)]);
    assert_rejects(&h);
}

#[test]
fn revoked_lease_keys_are_gone() {
    let mut h = H::new();
    h.grant((0, 1), 7, 10);
    h.put_lease((2, 3), "l", "1", 7, 2);
    h.get((4, 5), "l", 2, Some(leased(kv("l", "1", 2, 2, 1), 7)));
    h.revoke((6, 7), 7, 3);
    h.get((8, 9), "l", 3, None);
    assert_passes(&h);

    let mut bad = H::new();
    bad.grant((0, 1), 7, 10);
    bad.put_lease((2, 3), "l", "1", 7, 2);
    bad.revoke((6, 7), 7, 3);
    bad.get((8, 9), "l", 3, Some(leased(kv("l", "1", 2, 2, 1), 7)));
    assert_rejects(&bad);
}

#[test]
fn put_with_a_revoked_lease_is_rejected() {
    let mut h = H::new();
    h.grant((0, 1), 7, 10);
    h.revoke((2, 3), 7, 1);
    h.put_lease((4, 5), "l", "1", 7, 2);
    assert_rejects(&h);
}

#[test]
fn lease_expiry_may_delete_keys_at_any_time() {
    let mut h = H::new();
    h.grant((0, 1), 7, 1);
    h.put_lease((2, 3), "l", "1", 7, 2);
    h.get((4, 5), "l", 2, Some(leased(kv("l", "1", 2, 2, 1), 7)));
    h.get((2000, 2001), "l", 3, None);
    assert_passes(&h);
}

#[test]
fn tiny_budget_is_undecided_never_passed() {
    let mut h = H::new();
    // Many concurrent unknown writes and a read that can only be explained
    // by none of them: the search has to try many subsets.
    h.put((0, 1), "a", "0", 2);
    for i in 0..40 {
        h.put_unknown((2, 1000), "a", &format!("u{i}"));
    }
    h.get((2000, 2001), "a", 100, Some(kv("a", "zz", 2, 100, 9)));
    let r = check_kv(
        &h.h,
        &KvCheckOptions {
            time_budget: Duration::from_millis(1),
            partition_budget: Duration::from_millis(1),
            ..opts()
        },
    );
    assert_ne!(r.verdict, Verdict::Linearizable);
}

// ---------------------------------------------------------------------------
// Randomized: linearizable histories from a sequential model must pass; one
// mutated response must be rejected.

mod generated {
    use std::collections::BTreeMap;

    use super::*;
    use crate::rng::Rng;

    /// The sequential store the generator runs calls against.
    #[derive(Default, Clone)]
    struct Store {
        rev: Rev,
        kvs: BTreeMap<String, KeyValue>,
        /// The state after each revision, for stale serializable reads.
        past: Vec<(Rev, BTreeMap<String, KeyValue>)>,
    }

    impl Store {
        fn put(&mut self, key: &str, value: &str, rev: Rev) {
            let kv = match self.kvs.get(key) {
                Some(old) => KeyValue {
                    value: value.into(),
                    mod_revision: rev,
                    version: old.version + 1,
                    ..old.clone()
                },
                None => kv(key, value, rev, rev, 1),
            };
            self.kvs.insert(key.into(), kv);
        }

        fn commit(&mut self) {
            self.past.push((self.rev, self.kvs.clone()));
        }

        /// Runs a request, returns the response.
        fn apply(&mut self, req: &Request, rng: &mut Rng) -> Response {
            match req {
                Request::Get {
                    key,
                    range_end,
                    serializable,
                } => {
                    let (rev, state) = if *serializable && !self.past.is_empty() {
                        let i = rng.below(self.past.len() as u64) as usize;
                        self.past[i].clone()
                    } else {
                        (self.rev, self.kvs.clone())
                    };
                    Response::Get {
                        revision: rev,
                        kvs: state
                            .values()
                            .filter(|kv| key_in_range(&kv.key, key, range_end.as_deref()))
                            .cloned()
                            .collect(),
                    }
                }
                Request::Put { key, value, .. } => {
                    self.rev += 1;
                    self.put(key, value, self.rev);
                    self.commit();
                    Response::Put { revision: self.rev }
                }
                Request::Delete { key } => {
                    let deleted = i64::from(self.kvs.contains_key(key));
                    if deleted == 1 {
                        self.rev += 1;
                        self.kvs.remove(key);
                        self.commit();
                    }
                    Response::Delete {
                        revision: self.rev,
                        deleted,
                    }
                }
                Request::Txn {
                    compares,
                    success,
                    failure,
                } => {
                    let ok = compares.iter().all(|c| {
                        let kv = self.kvs.get(&c.key);
                        let ord = match (&c.target, kv) {
                            (CompareTarget::Value(_), None) => return false,
                            (CompareTarget::Value(v), Some(kv)) => kv.value.cmp(v),
                            (CompareTarget::Version(v), kv) => kv.map_or(0, |k| k.version).cmp(v),
                            (CompareTarget::ModRevision(v), kv) => {
                                kv.map_or(0, |k| k.mod_revision).cmp(v)
                            }
                            (CompareTarget::CreateRevision(v), kv) => {
                                kv.map_or(0, |k| k.create_revision).cmp(v)
                            }
                        };
                        match c.op {
                            CompareOp::Equal => ord.is_eq(),
                            CompareOp::NotEqual => !ord.is_eq(),
                            CompareOp::Greater => ord.is_gt(),
                            CompareOp::Less => ord.is_lt(),
                        }
                    });
                    let branch = if ok { success } else { failure };
                    let writes = branch.iter().any(|o| match o {
                        TxnOp::Put { .. } => true,
                        TxnOp::Delete { key } => self.kvs.contains_key(key),
                        TxnOp::Get { .. } => false,
                    });
                    let rev = if writes { self.rev + 1 } else { self.rev };
                    let mut results = Vec::new();
                    for o in branch {
                        results.push(match o {
                            TxnOp::Get { key } => TxnOpResult::Get {
                                kvs: self.kvs.get(key).cloned().into_iter().collect(),
                            },
                            TxnOp::Put { key, value, .. } => {
                                self.put(key, value, rev);
                                TxnOpResult::Put
                            }
                            TxnOp::Delete { key } => TxnOpResult::Delete {
                                deleted: i64::from(self.kvs.remove(key).is_some()),
                            },
                        });
                    }
                    if writes {
                        self.rev = rev;
                        self.commit();
                    }
                    Response::Txn {
                        revision: self.rev,
                        succeeded: ok,
                        results,
                    }
                }
                _ => unreachable!("the generator makes KV calls only"),
            }
        }
    }

    const KEYS: [&str; 6] = ["g0/a", "g0/b", "g1/a", "g1/b", "g2/a", "g2/b"];

    fn request(rng: &mut Rng, client: u32, seq: u32, last_mod: &BTreeMap<String, Rev>) -> Request {
        let key = rng.pick(&KEYS).to_string();
        let value = format!("c{client}-{seq}");
        match rng.below(100) {
            0..=29 => Request::Put {
                key,
                value,
                lease: 0,
            },
            30..=49 => Request::Get {
                key,
                range_end: None,
                serializable: false,
            },
            50..=59 => Request::Get {
                key,
                range_end: None,
                serializable: true,
            },
            60..=67 => Request::Delete { key },
            68..=87 => Request::Txn {
                compares: vec![Compare {
                    key: key.clone(),
                    op: CompareOp::Equal,
                    target: CompareTarget::ModRevision(match last_mod.get(&key) {
                        Some(m) => *m,
                        None if rng.chance(0.5) => 0,
                        None => rng.below(seq as u64 / 2 + 2) as Rev,
                    }),
                }],
                success: vec![TxnOp::Put {
                    key: key.clone(),
                    value,
                    lease: 0,
                }],
                failure: vec![TxnOp::Get { key }],
            },
            88..=94 => {
                let g = &key[..2];
                Request::Txn {
                    compares: vec![Compare {
                        key: format!("{g}/a"),
                        op: CompareOp::Greater,
                        target: CompareTarget::Version(rng.below(3) as i64),
                    }],
                    success: vec![
                        TxnOp::Put {
                            key: format!("{g}/a"),
                            value: format!("{value}a"),
                            lease: 0,
                        },
                        TxnOp::Put {
                            key: format!("{g}/b"),
                            value: format!("{value}b"),
                            lease: 0,
                        },
                    ],
                    failure: vec![TxnOp::Delete {
                        key: format!("{g}/b"),
                    }],
                }
            }
            _ => Request::Get {
                key: "g".into(),
                range_end: Some("h".into()),
                serializable: false,
            },
        }
    }

    /// A linearizable history: clients' calls with random overlapping
    /// windows, each applied to the store at a random point inside its
    /// window (or, for unknown outcomes, maybe later, maybe never).
    pub(super) fn generate(seed: u64, calls: usize) -> History {
        generate_with_order(seed, calls).0
    }

    /// The history and the ids of the applied calls in the order applied.
    pub(super) fn generate_with_order(seed: u64, calls: usize) -> (History, Vec<u64>) {
        let mut rng = Rng::new(seed);
        let clients = 4u32;
        struct Planned {
            client: u32,
            request: Request,
            invoked: u64,
            completed: u64,
            at: u64,
            unknown: bool,
            applies: bool,
        }
        let mut plans = Vec::new();
        let mut t = vec![0u64; clients as usize];
        let mut last_mod: BTreeMap<String, Rev> = BTreeMap::new();
        for seq in 0..calls as u32 {
            let c = rng.below(u64::from(clients)) as u32;
            let invoked = t[c as usize] + rng.below(5);
            let completed = invoked + 1 + rng.below(30);
            t[c as usize] = completed;
            let req = request(&mut rng, c, seq, &last_mod);
            if rng.chance(0.1) {
                last_mod.clear();
            }
            let unknown = req.may_write() && rng.chance(0.1);
            let at = if unknown {
                invoked + rng.below(60)
            } else {
                rng.range(invoked, completed)
            };
            plans.push(Planned {
                client: c,
                request: req,
                invoked,
                completed,
                at,
                unknown,
                applies: !unknown || rng.chance(0.5),
            });
        }
        let mut order: Vec<usize> = (0..plans.len()).collect();
        order.sort_by_key(|&i| (plans[i].at, i));
        let mut store = Store::default();
        let mut responses: Vec<Option<Response>> = vec![None; plans.len()];
        let mut applied = Vec::new();
        for i in order {
            if plans[i].applies {
                responses[i] = Some(store.apply(&plans[i].request, &mut rng));
                applied.push(i as u64 + 1);
            }
        }
        let ms = 1_000_000;
        let h = History {
            operations: plans
                .into_iter()
                .zip(responses)
                .enumerate()
                .map(|(i, (p, r))| Operation {
                    id: i as u64 + 1,
                    client: p.client,
                    member: 0,
                    request: p.request,
                    invoked: p.invoked * ms,
                    completed: p.completed * ms,
                    outcome: if p.unknown {
                        Outcome::Unknown {
                            error: "timeout".into(),
                        }
                    } else {
                        Outcome::Ok(r.expect("applied"))
                    },
                })
                .collect(),
            ..History::default()
        };
        (h, applied)
    }

    fn get_kv_mut(op: &mut Operation) -> Option<&mut KeyValue> {
        match &mut op.outcome {
            Outcome::Ok(Response::Get { kvs, .. }) => kvs.first_mut(),
            _ => None,
        }
    }

    /// Changes one response so that no order can explain it; None when the
    /// history offers nothing to mutate with that kind.
    pub(super) fn mutate(h: &History, kind: u64, rng: &mut Rng) -> Option<(History, String)> {
        let mut h = h.clone();
        let single_lin_reads: Vec<usize> = h
            .operations
            .iter()
            .enumerate()
            .filter(|(_, o)| {
                matches!(
                    &o.request,
                    Request::Get {
                        range_end: None,
                        serializable: false,
                        ..
                    }
                ) && matches!(&o.outcome, Outcome::Ok(Response::Get { kvs, .. }) if !kvs.is_empty())
            })
            .map(|(i, _)| i)
            .collect();
        match kind {
            // A version no put produced (on a key no unknown write touches:
            // a timed-out put may take effect late, which explains a higher
            // version).
            0 => {
                let unknown_keys: Vec<String> = h
                    .operations
                    .iter()
                    .filter(|o| matches!(o.outcome, Outcome::Unknown { .. }))
                    .flat_map(|o| match &o.request {
                        Request::Put { key, .. } | Request::Delete { key } => vec![key.clone()],
                        Request::Txn {
                            success, failure, ..
                        } => success
                            .iter()
                            .chain(failure)
                            .map(|t| t.key().to_string())
                            .collect(),
                        _ => vec![],
                    })
                    .collect();
                let candidates: Vec<usize> = single_lin_reads
                    .iter()
                    .copied()
                    .filter(|&i| match &h.operations[i].request {
                        Request::Get { key, .. } => !unknown_keys.contains(key),
                        _ => false,
                    })
                    .collect();
                if candidates.is_empty() {
                    return None;
                }
                let &i = rng.pick(&candidates);
                let op = &mut h.operations[i];
                let kv = get_kv_mut(op)?;
                kv.version += 1;
                let what = format!("#{} version+1", op.id);
                Some((h, what))
            }
            // A value nobody wrote.
            1 => {
                let &i = rng.pick(&single_lin_reads);
                let op = &mut h.operations[i];
                get_kv_mut(op)?.value = "phantom".into();
                let what = format!("#{} phantom value", op.id);
                Some((h, what))
            }
            // A stale read: an older read's result, though a known write to
            // the key landed between the two reads' revisions.
            2 => {
                for &i in &single_lin_reads {
                    for &j in &single_lin_reads {
                        let (
                            Outcome::Ok(Response::Get {
                                revision: ri,
                                kvs: ki,
                            }),
                            Outcome::Ok(Response::Get {
                                revision: rj,
                                kvs: kj,
                            }),
                        ) = (&h.operations[i].outcome, &h.operations[j].outcome)
                        else {
                            continue;
                        };
                        if ki[0].key != kj[0].key || rj >= ri || ki[0] == kj[0] {
                            continue;
                        }
                        let key = ki[0].key.clone();
                        let between = h.operations.iter().any(|o| match (&o.request, &o.outcome) {
                            (
                                Request::Put { key: k, .. },
                                Outcome::Ok(Response::Put { revision }),
                            ) => *k == key && revision > rj && revision <= ri,
                            _ => false,
                        });
                        if between {
                            let old = kj[0].clone();
                            let id = h.operations[i].id;
                            *get_kv_mut(&mut h.operations[i])? = old;
                            return Some((h, format!("#{id} stale result")));
                        }
                    }
                }
                None
            }
            // Two puts on one key in real-time order with swapped revisions.
            _ => {
                let puts: Vec<usize> = h
                    .operations
                    .iter()
                    .enumerate()
                    .filter(|(_, o)| {
                        matches!(o.request, Request::Put { .. })
                            && matches!(o.outcome, Outcome::Ok(_))
                    })
                    .map(|(i, _)| i)
                    .collect();
                for &a in &puts {
                    for &b in &puts {
                        let (oa, ob) = (&h.operations[a], &h.operations[b]);
                        let (Request::Put { key: ka, .. }, Request::Put { key: kb, .. }) =
                            (&oa.request, &ob.request)
                        else {
                            continue;
                        };
                        if ka == kb && oa.completed < ob.invoked {
                            let (Outcome::Ok(ra), Outcome::Ok(rb)) =
                                (oa.outcome.clone(), ob.outcome.clone())
                            else {
                                continue;
                            };
                            let what = format!("#{} and #{} revisions swapped", oa.id, ob.id);
                            h.operations[a].outcome = Outcome::Ok(rb);
                            h.operations[b].outcome = Outcome::Ok(ra);
                            return Some((h, what));
                        }
                    }
                }
                None
            }
        }
    }
}

#[test]
fn generated_linearizable_histories_pass() {
    for seed in 0..30 {
        let h = generated::generate(seed, 200);
        let r = check_kv(&h, &opts());
        assert_eq!(
            r.verdict,
            Verdict::Linearizable,
            "seed {seed}: {}",
            r.violations()
                .map(KvViolation::render)
                .collect::<Vec<_>>()
                .join("\n")
        );
    }
}

#[test]
fn generated_histories_with_one_bad_response_are_rejected() {
    let mut rejected = 0;
    let opts = KvCheckOptions {
        minimize_budget: Duration::from_secs(2),
        ..opts()
    };
    for seed in 0..24 {
        let h = generated::generate(1000 + seed, 200);
        let mut rng = crate::rng::Rng::new(seed);
        let Some((bad, what)) = generated::mutate(&h, seed % 4, &mut rng) else {
            continue;
        };
        let r = check_kv(&bad, &opts);
        assert_eq!(
            r.verdict,
            Verdict::Violation,
            "seed {seed}: mutation {what} was not caught"
        );
        // The slice names the mutated call.
        let id: u64 = what[1..].split(' ').next().unwrap().parse().unwrap();
        let named = r.violations().any(|v| {
            v.slice
                .iter()
                .chain(&v.relaxed_context)
                .any(|l| l.op == Some(id))
        });
        assert!(
            named || what.contains("swapped"),
            "seed {seed}: {what} not in slice"
        );
        rejected += 1;
    }
    assert!(rejected >= 18, "only {rejected} mutations applied");
}
