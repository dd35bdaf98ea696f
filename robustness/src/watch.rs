//! Watch checks: every watcher got every event of its range exactly once,
//! in revision order, with no gap, and the events match the KV history; a
//! watch resumed at a revision replays from exactly there.
//!
//! There is no oracle for "every event": the reference is the union of what
//! all watchers delivered and what the KV history proves was written
//! (acknowledged writes with their revisions). So a gap is found when another
//! watcher, or an acknowledged write, shows an event the watcher skipped
//! inside the span it covered. A watcher covers `[first, last]`: from the
//! revision it asked for (or the one after its creation) through the fence
//! write the harness saw it deliver (or its last event, when its stream broke
//! before the fence: etcd sends all events of one revision in one response,
//! so nothing at or below the last event may be missing).

use std::collections::{BTreeMap, HashMap};

use crate::finding::Finding;
use crate::history::{
    Event, EventKind, History, KeyValue, Operation, Outcome, Request, Response, Rev, TxnOp,
    TxnOpResult, Watch, describe_kv, describe_op,
};

#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct WatchReport {
    pub watches: usize,
    pub events: usize,
    pub violations: Vec<Finding>,
    /// Things worth knowing that are not violations (a cancelled watch).
    pub notes: Vec<String>,
}

fn describe_event(e: &Event) -> String {
    match e.kind {
        EventKind::Put => format!("PUT {}", describe_kv(&e.kv)),
        EventKind::Delete => format!("DELETE {} at {}", e.kv.key, e.kv.mod_revision),
    }
}

fn describe_watch(w: &Watch) -> String {
    let range = match &w.range_end {
        None => w.key.clone(),
        Some(end) => format!("[{}, {end:?})", w.key),
    };
    format!(
        "watch w{} on m{} {range} from rev {} (covers {}..={}){}",
        w.id,
        w.member + 1,
        w.start_revision,
        w.first_revision().map_or("?".into(), |r| r.to_string()),
        w.last_revision().map_or("?".into(), |r| r.to_string()),
        match w.resumes {
            Some(p) => format!(", resumes w{p}"),
            None => String::new(),
        }
    )
}

fn violation(kind: &'static str, message: String, ops: Vec<u64>, lines: Vec<String>) -> Finding {
    Finding {
        checker: "watch",
        kind,
        message,
        ops,
        lines,
    }
}

/// What an acknowledged write proves about the event at its revision.
#[derive(Debug, Clone)]
struct Expected {
    kind: EventKind,
    value: Option<String>,
    lease: i64,
    op: u64,
}

/// The events the KV history proves: (revision, key) → expectation.
fn expected_from_kv(h: &History) -> BTreeMap<(Rev, String), Expected> {
    let mut out = BTreeMap::new();
    for op in &h.operations {
        let Outcome::Ok(resp) = &op.outcome else {
            continue;
        };
        let mut add = |rev: Rev, key: &str, kind: EventKind, value: Option<&str>, lease: i64| {
            out.insert(
                (rev, key.to_string()),
                Expected {
                    kind,
                    value: value.map(str::to_string),
                    lease,
                    op: op.id,
                },
            );
        };
        match (&op.request, resp) {
            (Request::Put { key, value, lease }, Response::Put { revision }) => {
                add(*revision, key, EventKind::Put, Some(value), *lease)
            }
            (Request::Delete { key }, Response::Delete { revision, deleted }) if *deleted > 0 => {
                add(*revision, key, EventKind::Delete, None, 0)
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
                            add(*revision, key, EventKind::Put, Some(value), *lease)
                        }
                        (TxnOp::Delete { key }, TxnOpResult::Delete { deleted })
                            if *deleted > 0 =>
                        {
                            add(*revision, key, EventKind::Delete, None, 0)
                        }
                        _ => {}
                    }
                }
            }
            _ => {}
        }
    }
    out
}

/// The keys each acknowledged write at a revision wrote, when the response
/// says exactly which (for "an event at R the write at R did not make").
fn writes_by_revision(h: &History) -> HashMap<Rev, (u64, Vec<String>)> {
    let mut out: HashMap<Rev, (u64, Vec<String>)> = HashMap::new();
    for ((rev, key), e) in expected_from_kv(h) {
        out.entry(rev).or_insert((e.op, vec![])).1.push(key);
    }
    out
}

fn matches_expected(e: &Event, x: &Expected) -> bool {
    e.kind == x.kind
        && x.value.as_ref().is_none_or(|v| *v == e.kv.value)
        && (e.kind == EventKind::Delete || e.kv.lease == x.lease)
}

pub fn check_watches(h: &History) -> WatchReport {
    let mut report = WatchReport {
        watches: h.watches.len(),
        events: h.watches.iter().map(|w| w.events.len()).sum(),
        ..WatchReport::default()
    };
    let expected = expected_from_kv(h);
    let by_rev = writes_by_revision(h);
    for w in &h.watches {
        check_watcher(w, &mut report);
    }
    let reference = reference_events(h, &mut report.violations);
    check_against_writes(h, &reference, &expected, &by_rev, &mut report.violations);
    for w in &h.watches {
        check_no_gaps(h, w, &reference, &expected, &mut report.violations);
    }
    check_against_reads(h, &reference, &mut report.violations);
    report
}

/// Every event any watcher got, by (revision, key), with the watcher.
type Reference<'a> = BTreeMap<(Rev, String), (&'a Event, u32)>;

fn op_line(h: &History, id: u64) -> String {
    h.op(id).map(describe_op).unwrap_or_default()
}

/// Step 1: each watcher on its own: range, start, order, uniqueness, versions.
fn check_watcher(w: &Watch, report: &mut WatchReport) {
    let first = w.first_revision();
    let mut prev: Option<&Event> = None;
    let mut last_of_key: HashMap<&str, &Event> = HashMap::new();
    for re in &w.events {
        let e = &re.event;
        let rev = e.revision();
        if !w.covers_key(&e.kv.key) {
            report.violations.push(violation(
                "outside-range",
                format!("w{} got an event for a key outside its range", w.id),
                vec![],
                vec![describe_watch(w), describe_event(e)],
            ));
        }
        if let Some(f) = first
            && rev < f
        {
            report.violations.push(violation(
                "before-start",
                format!(
                    "w{} asked for events from revision {f} but got one at {rev}",
                    w.id
                ),
                vec![],
                vec![describe_watch(w), describe_event(e)],
            ));
        }
        if let Some(p) = prev {
            let prev_rev = p.revision();
            if rev < prev_rev {
                report.violations.push(violation(
                    "out-of-order",
                    format!("w{} got revision {rev} after {prev_rev}", w.id),
                    vec![],
                    vec![describe_watch(w), describe_event(p), describe_event(e)],
                ));
            }
        }
        if let Some(p) = last_of_key.get(e.kv.key.as_str()) {
            if p.revision() == rev {
                report.violations.push(violation(
                    "duplicate-event",
                    format!(
                        "w{} got the event of {} at revision {rev} twice",
                        w.id, e.kv.key
                    ),
                    vec![],
                    vec![describe_watch(w), describe_event(p), describe_event(e)],
                ));
            } else if let Some(why) = chain_error(p, e) {
                report.violations.push(violation(
                    "bad-event",
                    format!("w{}: {why}", w.id),
                    vec![],
                    vec![describe_watch(w), describe_event(p), describe_event(e)],
                ));
            }
        }
        last_of_key.insert(&e.kv.key, e);
        prev = Some(e);
    }
    if w.end.starts_with("stalled") {
        report.violations.push(violation(
            "stalled",
            format!("w{} {}", w.id, w.end),
            vec![],
            vec![describe_watch(w)],
        ));
    } else if w.end.starts_with("canceled") {
        report
            .notes
            .push(format!("w{} was cancelled by the server: {}", w.id, w.end));
    }
}

/// Step 2: the reference: every event any watcher got, by (revision, key);
/// watchers that got different events for one are reported.
fn reference_events<'a>(h: &'a History, out: &mut Vec<Finding>) -> Reference<'a> {
    let mut reference: BTreeMap<(Rev, String), (&Event, u32)> = BTreeMap::new();
    for w in &h.watches {
        for re in &w.events {
            let e = &re.event;
            let k = (e.revision(), e.kv.key.clone());
            match reference.get(&k) {
                None => {
                    reference.insert(k, (e, w.id));
                }
                Some((other, ow)) if *other != e => {
                    out.push(violation(
                        "watchers-disagree",
                        format!(
                            "w{ow} and w{} got different events for {} at revision {}",
                            w.id, k.1, k.0
                        ),
                        vec![],
                        vec![
                            format!("w{ow}: {}", describe_event(other)),
                            format!("w{}: {}", w.id, describe_event(e)),
                        ],
                    ));
                }
                Some(_) => {}
            }
        }
    }
    reference
}

/// Step 3: against the KV history: the event an acknowledged write made, and
/// no event at its revision it did not make.
fn check_against_writes(
    h: &History,
    reference: &Reference<'_>,
    expected: &BTreeMap<(Rev, String), Expected>,
    by_rev: &HashMap<Rev, (u64, Vec<String>)>,
    out: &mut Vec<Finding>,
) {
    for ((rev, key), (e, wid)) in reference {
        if let Some(x) = expected.get(&(*rev, key.clone()))
            && !matches_expected(e, x)
        {
            out.push(violation(
                "event-mismatch",
                format!("w{wid}'s event at revision {rev} is not what the write at {rev} wrote"),
                vec![x.op],
                vec![describe_event(e), op_line(h, x.op)],
            ));
        }
        if let Some((op, keys)) = by_rev.get(rev)
            && !keys.contains(key)
            && let Some(o) = h.op(*op)
            && writes_exactly_known(o)
        {
            out.push(violation(
                "event-mismatch",
                format!("w{wid} got an event for {key} at revision {rev}, where #{op} wrote only {keys:?}"),
                vec![*op],
                vec![describe_event(e), op_line(h, *op)],
            ));
        }
    }
}

/// Step 4: no gaps: every known event inside a watcher's span and range.
fn check_no_gaps(
    h: &History,
    w: &Watch,
    reference: &Reference<'_>,
    expected: &BTreeMap<(Rev, String), Expected>,
    out: &mut Vec<Finding>,
) {
    let (Some(first), Some(last)) = (w.first_revision(), w.last_revision()) else {
        return;
    };
    if last < first {
        return;
    }
    let got: std::collections::HashSet<(Rev, &str)> = w
        .events
        .iter()
        .map(|e| (e.event.revision(), e.event.kv.key.as_str()))
        .collect();
    let mut missing: Vec<String> = Vec::new();
    let mut ops = Vec::new();
    for ((rev, key), (e, wid)) in reference.range((first, String::new())..) {
        if *rev > last {
            break;
        }
        if w.covers_key(key) && !got.contains(&(*rev, key.as_str())) {
            missing.push(format!("(w{wid} got it) {}", describe_event(e)));
        }
    }
    for ((rev, key), x) in expected.range((first, String::new())..) {
        if *rev > last {
            break;
        }
        if w.covers_key(key)
            && !got.contains(&(*rev, key.as_str()))
            && !reference.contains_key(&(*rev, key.clone()))
        {
            missing.push(format!(
                "(acknowledged, no watcher got it) {}",
                op_line(h, x.op)
            ));
            ops.push(x.op);
        }
    }
    if !missing.is_empty() {
        let mut lines = vec![describe_watch(w)];
        let n = missing.len();
        lines.extend(missing.into_iter().take(MAX_LINES));
        if n > MAX_LINES {
            lines.push(format!("... {} more", n - MAX_LINES));
        }
        out.push(violation(
            "missing-event",
            format!("w{} skipped {n} event(s) inside the span it covered", w.id),
            ops,
            lines,
        ));
    }
}

/// Step 5: events against what reads saw: a kv a read returned is the put event
/// at its mod revision.
fn check_against_reads(h: &History, reference: &Reference<'_>, out: &mut Vec<Finding>) {
    for op in &h.operations {
        for kv in read_kvs(op) {
            if let Some((e, wid)) = reference.get(&(kv.mod_revision, kv.key.clone()))
                && (e.kind != EventKind::Put || e.kv != *kv)
            {
                out.push(violation(
                    "event-mismatch",
                    format!(
                        "#{} read {} but w{wid}'s event at that revision differs",
                        op.id, kv.key
                    ),
                    vec![op.id],
                    vec![describe_op(op), describe_event(e)],
                ));
            }
        }
    }
}

/// Most missing events listed per watcher.
const MAX_LINES: usize = 10;

/// True when the response tells exactly which keys the write changed.
fn writes_exactly_known(op: &Operation) -> bool {
    matches!(
        (&op.request, &op.outcome),
        (Request::Put { .. }, Outcome::Ok(_))
            | (Request::Delete { .. }, Outcome::Ok(_))
            | (Request::Txn { .. }, Outcome::Ok(_))
    )
}

fn read_kvs(op: &Operation) -> Vec<&KeyValue> {
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

/// Why `next` cannot follow `prev` for the same key in one watcher's stream
/// (nothing in between was missed: a gap is reported separately).
fn chain_error(prev: &Event, next: &Event) -> Option<String> {
    let rev = next.revision();
    match (prev.kind, next.kind) {
        (EventKind::Delete, EventKind::Delete) => Some(format!(
            "{} deleted at {rev} after it was deleted at {}",
            next.kv.key,
            prev.revision()
        )),
        (EventKind::Delete, EventKind::Put)
            if next.kv.version != 1 || next.kv.create_revision != rev =>
        {
            Some(format!(
                "{} recreated at {rev} with version {} and create revision {}",
                next.kv.key, next.kv.version, next.kv.create_revision
            ))
        }
        (EventKind::Put, EventKind::Put)
            if next.kv.version != prev.kv.version + 1
                || next.kv.create_revision != prev.kv.create_revision =>
        {
            Some(format!(
                "{} at {rev}: version {} after {} (create {} after {})",
                next.kv.key,
                next.kv.version,
                prev.kv.version,
                next.kv.create_revision,
                prev.kv.create_revision
            ))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testkit::*;

    fn base() -> H {
        let mut h = H::new();
        h.put((0, 1), "p/a", "1", 2);
        h.put((2, 3), "p/b", "1", 3);
        h.put((4, 5), "p/a", "2", 4);
        h.delete((6, 7), "p/b", 5, 1);
        h
    }

    fn events() -> Vec<Event> {
        vec![
            put_event(kv("p/a", "1", 2, 2, 1)),
            put_event(kv("p/b", "1", 3, 3, 1)),
            put_event(kv("p/a", "2", 2, 4, 2)),
            delete_event("p/b", 5),
        ]
    }

    fn kinds(r: &WatchReport) -> Vec<&'static str> {
        r.violations.iter().map(|v| v.kind).collect()
    }

    #[test]
    fn complete_watchers_pass() {
        let mut h = base();
        h.watch(0, "p/", 1, events());
        h.watch(1, "p/", 1, events());
        let r = check_watches(&h.h);
        assert!(r.violations.is_empty(), "{:#?}", r.violations);
        assert_eq!(r.events, 8);
    }

    #[test]
    fn duplicated_event_is_rejected() {
        let mut h = base();
        let mut ev = events();
        ev.insert(2, put_event(kv("p/b", "1", 3, 3, 1)));
        h.watch(0, "p/", 1, ev);
        assert_eq!(kinds(&check_watches(&h.h)), vec!["duplicate-event"]);
    }

    #[test]
    fn missing_event_is_rejected_against_another_watcher() {
        let mut h = H::new();
        let mut ev = events();
        ev.remove(1);
        h.watch(0, "p/", 1, events());
        h.watch(1, "p/", 1, ev);
        let r = check_watches(&h.h);
        assert_eq!(kinds(&r), vec!["missing-event"], "{:#?}", r.violations);
        assert!(r.violations[0].message.contains("w2"));
    }

    #[test]
    fn missing_event_is_rejected_against_an_acknowledged_write() {
        let mut h = base();
        let mut ev = events();
        ev.remove(2);
        h.watch(0, "p/", 1, ev);
        let r = check_watches(&h.h);
        // The gap, and the version chain that skips a put.
        assert!(kinds(&r).contains(&"missing-event"), "{:#?}", r.violations);
    }

    #[test]
    fn out_of_order_is_rejected() {
        let mut h = base();
        let mut ev = events();
        ev.swap(0, 1);
        h.watch(0, "p/", 1, ev);
        assert!(kinds(&check_watches(&h.h)).contains(&"out-of-order"));
    }

    #[test]
    fn event_that_does_not_match_the_write_is_rejected() {
        let mut h = base();
        let mut ev = events();
        ev[2] = put_event(kv("p/a", "other", 2, 4, 2));
        h.watch(0, "p/", 1, ev);
        assert!(kinds(&check_watches(&h.h)).contains(&"event-mismatch"));
    }

    #[test]
    fn resumed_watch_must_start_at_its_revision() {
        let mut h = base();
        let all = events();
        h.watch(0, "p/", 1, all[..2].to_vec());
        // Resumed at 4 (after the last event, 3), replays from 3: duplicate.
        let id = h.watch(1, "p/", 0, all[1..].to_vec());
        let w = h.h.watches.last_mut().expect("watch");
        w.start_revision = 4;
        w.created_revision = None;
        w.resumes = Some(id - 1);
        assert_eq!(kinds(&check_watches(&h.h)), vec!["before-start"]);

        // Resumed exactly at 4: fine.
        let w = h.h.watches.last_mut().expect("watch");
        w.events = all[2..]
            .iter()
            .map(|e| crate::history::ReceivedEvent {
                at: 0,
                event: e.clone(),
            })
            .collect();
        assert!(check_watches(&h.h).violations.is_empty());
    }

    #[test]
    fn broken_version_chain_is_rejected() {
        let mut h = H::new();
        h.watch(
            0,
            "p/",
            1,
            vec![
                put_event(kv("p/a", "1", 2, 2, 1)),
                put_event(kv("p/a", "2", 2, 4, 3)),
            ],
        );
        assert_eq!(kinds(&check_watches(&h.h)), vec!["bad-event"]);
    }

    #[test]
    fn stalled_watch_is_reported() {
        let mut h = base();
        h.watch(0, "p/", 1, events());
        h.h.watches[0].end = "stalled: no fence event 20 s after the fence write".into();
        assert_eq!(kinds(&check_watches(&h.h)), vec!["stalled"]);
    }
}
