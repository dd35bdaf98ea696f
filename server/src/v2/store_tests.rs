//! V2Store: every operation and error, TTLs, watches, persistence.

use super::error::*;
use super::event::{V2Action, V2Event};
use super::store::{MAX_KEY_DEPTH, MIN_EXPIRE_TIME, NodeRecord};
use super::watch::{HISTORY_CAPACITY, WATCHER_QUEUE};
use super::{ApplyOutcome, V2Op, V2Request, V2Store};
use std::collections::BTreeMap;

/// 2026-01-01T00:00:00Z: a "now" well after `MIN_EXPIRE_TIME`.
const NOW: i64 = 1_767_225_600_000_000_000;
const SEC: i64 = 1_000_000_000;

fn req(op: V2Op, path: &str) -> V2Request {
    V2Request::new(op, path, NOW)
}

fn set(s: &mut V2Store, path: &str, value: &str) -> V2Event {
    let mut r = req(V2Op::Set, path);
    r.value = value.into();
    s.apply(&r).unwrap().event.unwrap()
}

fn apply_err(s: &mut V2Store, r: &V2Request) -> V2Error {
    s.apply(r).unwrap_err()
}

fn json(ev: &V2Event) -> String {
    ev.to_body(false).trim_end().to_string()
}

fn get(s: &V2Store, path: &str, recursive: bool) -> V2Event {
    s.get(path, recursive, false, NOW).unwrap()
}

#[test]
fn set_creates_then_replaces() {
    let mut s = V2Store::new();
    let ev = set(&mut s, "/foo", "bar");
    assert_eq!(
        json(&ev),
        r#"{"action":"set","node":{"key":"/foo","value":"bar","modifiedIndex":1,"createdIndex":1}}"#
    );
    assert!(ev.is_created());
    assert_eq!(ev.etcd_index, 1);
    let ev = set(&mut s, "/foo", "baz");
    assert!(!ev.is_created());
    // A set replaces the node: createdIndex moves too.
    assert_eq!(
        json(&ev),
        r#"{"action":"set","node":{"key":"/foo","value":"baz","modifiedIndex":2,"createdIndex":2},"prevNode":{"key":"/foo","value":"bar","modifiedIndex":1,"createdIndex":1}}"#
    );
    assert_eq!(s.index(), 2);
    // Empty values are shown.
    let ev = set(&mut s, "/empty", "");
    assert_eq!(
        json(&ev),
        r#"{"action":"set","node":{"key":"/empty","value":"","modifiedIndex":3,"createdIndex":3}}"#
    );
}

#[test]
fn get_files_dirs_root_and_hidden() {
    let mut s = V2Store::new();
    assert_eq!(
        json(&get(&s, "/", false)),
        r#"{"action":"get","node":{"dir":true}}"#
    );
    set(&mut s, "/dir/a", "1");
    set(&mut s, "/dir/b", "2");
    set(&mut s, "/dir/_hidden", "h");
    set(&mut s, "/dir/sub/c", "3");
    assert_eq!(
        json(&get(&s, "/dir", false)),
        r#"{"action":"get","node":{"key":"/dir","dir":true,"nodes":[{"key":"/dir/a","value":"1","modifiedIndex":1,"createdIndex":1},{"key":"/dir/b","value":"2","modifiedIndex":2,"createdIndex":2},{"key":"/dir/sub","dir":true,"modifiedIndex":4,"createdIndex":4}],"modifiedIndex":1,"createdIndex":1}}"#
    );
    assert_eq!(
        json(&get(&s, "/dir/", true)),
        r#"{"action":"get","node":{"key":"/dir","dir":true,"nodes":[{"key":"/dir/a","value":"1","modifiedIndex":1,"createdIndex":1},{"key":"/dir/b","value":"2","modifiedIndex":2,"createdIndex":2},{"key":"/dir/sub","dir":true,"nodes":[{"key":"/dir/sub/c","value":"3","modifiedIndex":4,"createdIndex":4}],"modifiedIndex":4,"createdIndex":4}],"modifiedIndex":1,"createdIndex":1}}"#
    );
    // A hidden key is readable by name.
    assert_eq!(
        json(&get(&s, "/dir/_hidden", false)),
        r#"{"action":"get","node":{"key":"/dir/_hidden","value":"h","modifiedIndex":3,"createdIndex":3}}"#
    );
    let ev = get(&s, "/", false);
    assert_eq!(ev.etcd_index, 4);
    assert_eq!(ev.node.unwrap().nodes.len(), 1);
}

#[test]
fn key_not_found_and_not_a_directory() {
    let mut s = V2Store::new();
    set(&mut s, "/foo", "bar");
    let e = s.get("/nokey", false, false, NOW).unwrap_err();
    assert_eq!((e.code, e.cause.as_str(), e.index), (100, "/nokey", 1));
    // The cause is the first missing component.
    let e = s.get("/nodir/x/y", false, false, NOW).unwrap_err();
    assert_eq!((e.code, e.cause.as_str()), (100, "/nodir"));
    let e = s.get("/foo/x/y", false, false, NOW).unwrap_err();
    assert_eq!((e.code, e.cause.as_str()), (104, "/foo"));
    let mut r = req(V2Op::Set, "/foo/bar");
    r.value = "x".into();
    let e = apply_err(&mut s, &r);
    assert_eq!((e.code, e.cause.as_str(), e.index), (104, "/foo", 1));
    r.op = V2Op::Create;
    let e = apply_err(&mut s, &r);
    assert_eq!((e.code, e.cause.as_str()), (104, "/foo"));
    let e = apply_err(&mut s, &req(V2Op::Delete, "/foo/bar"));
    assert_eq!((e.code, e.cause.as_str()), (104, "/foo"));
    assert_eq!(s.index(), 1);
}

#[test]
fn not_a_file() {
    let mut s = V2Store::new();
    set(&mut s, "/dir/a", "1");
    let mut r = req(V2Op::Set, "/dir");
    r.value = "x".into();
    assert_eq!(apply_err(&mut s, &r).code, NOT_FILE);
    r.dir = true; // a set cannot replace a directory either
    assert_eq!(apply_err(&mut s, &r).code, NOT_FILE);
    let e = apply_err(&mut s, &req(V2Op::Delete, "/dir"));
    assert_eq!((e.code, e.cause.as_str()), (102, "/dir"));
    let mut r = req(V2Op::Update, "/dir");
    r.value = "x".into();
    assert_eq!(apply_err(&mut s, &r).code, NOT_FILE);
    let mut r = req(V2Op::CompareAndSwap, "/dir");
    r.prev_value = "x".into();
    assert_eq!(apply_err(&mut s, &r).code, NOT_FILE);
    let mut r = req(V2Op::CompareAndDelete, "/dir");
    r.prev_index = 1;
    assert_eq!(apply_err(&mut s, &r).code, NOT_FILE);
    // The root is a directory too; its (trimmed) key is empty.
    r.path = "/".into();
    let e = apply_err(&mut s, &r);
    assert_eq!((e.code, e.cause.as_str()), (102, ""));
    assert_eq!(
        e.to_body(),
        "{\"errorCode\":102,\"message\":\"Not a file\",\"index\":1}\n"
    );
}

#[test]
fn root_is_read_only() {
    let mut s = V2Store::new();
    for op in [
        V2Op::Set,
        V2Op::Create,
        V2Op::Update,
        V2Op::CompareAndSwap,
        V2Op::Delete,
    ] {
        let mut r = req(op, "/");
        r.value = "x".into();
        r.prev_value = "x".into();
        r.recursive = true;
        let e = apply_err(&mut s, &r);
        assert_eq!((e.code, e.cause.as_str()), (107, "/"), "{op:?}");
    }
    // "/.." and "" clean to the root as well.
    let e = apply_err(&mut s, &req(V2Op::Set, "/a/../.."));
    assert_eq!(e.code, ROOT_READ_ONLY);
    assert_eq!(
        apply_err(&mut s, &req(V2Op::Delete, "")).code,
        ROOT_READ_ONLY
    );
    // In-order creation under the root is fine.
    let ev = s
        .apply(&req(V2Op::CreateInOrder, "/"))
        .unwrap()
        .event
        .unwrap();
    assert_eq!(ev.key(), "/00000000000000000001");
}

#[test]
fn create_mkdir_and_in_order() {
    let mut s = V2Store::new();
    let mut r = req(V2Op::Create, "/k");
    r.value = "v".into();
    let ev = s.apply(&r).unwrap().event.unwrap();
    assert_eq!(ev.action, V2Action::Create);
    assert!(ev.is_created());
    let e = apply_err(&mut s, &r);
    assert_eq!((e.code, e.cause.as_str(), e.index), (105, "/k", 1));
    // mkdir
    let mut r = req(V2Op::Create, "/d");
    r.dir = true;
    let ev = s.apply(&r).unwrap().event.unwrap();
    assert_eq!(
        json(&ev),
        r#"{"action":"create","node":{"key":"/d","dir":true,"modifiedIndex":2,"createdIndex":2}}"#
    );
    assert_eq!(apply_err(&mut s, &r).code, NODE_EXIST);
    // in order: the new index, %020d
    let mut r = req(V2Op::CreateInOrder, "/q");
    r.value = "first".into();
    let ev = s.apply(&r).unwrap().event.unwrap();
    assert_eq!(
        json(&ev),
        r#"{"action":"create","node":{"key":"/q/00000000000000000003","value":"first","modifiedIndex":3,"createdIndex":3}}"#
    );
    r.dir = true;
    let ev = s.apply(&r).unwrap().event.unwrap();
    assert_eq!(ev.key(), "/q/00000000000000000004");
    assert!(ev.node.unwrap().dir);
    let listing = get(&s, "/q", false).node.unwrap();
    assert_eq!(listing.nodes.len(), 2);
    // A file in the way: 104, counted as a failed create and a failed set.
    let e = apply_err(&mut s, &req(V2Op::CreateInOrder, "/k"));
    assert_eq!((e.code, e.cause.as_str()), (104, "/k"));
    assert!(s.stats_json().contains("\"setsFail\":1,"));
    assert!(s.stats_json().contains("\"createFail\":3,"));
}

#[test]
fn set_dir_over_file_and_intermediate_dirs() {
    let mut s = V2Store::new();
    set(&mut s, "/k", "x");
    let mut r = req(V2Op::Set, "/k");
    r.dir = true;
    r.value = "ignored".into();
    let ev = s.apply(&r).unwrap().event.unwrap();
    assert_eq!(
        json(&ev),
        r#"{"action":"set","node":{"key":"/k","dir":true,"modifiedIndex":2,"createdIndex":2},"prevNode":{"key":"/k","value":"x","modifiedIndex":1,"createdIndex":1}}"#
    );
    let out = s
        .apply(&{
            let mut r = req(V2Op::Set, "/a/b/c");
            r.value = "v".into();
            r
        })
        .unwrap();
    // Parents are created at the new index and persisted too.
    let keys: Vec<&str> = out.changes.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(keys, ["/a", "/a/b", "/a/b/c"]);
    let a = get(&s, "/a", false).node.unwrap();
    assert_eq!((a.created_index, a.modified_index), (3, 3));
}

#[test]
fn update_semantics() {
    let mut s = V2Store::new();
    let mut r = req(V2Op::Update, "/k");
    r.value = "v".into();
    let e = apply_err(&mut s, &r);
    assert_eq!((e.code, e.cause.as_str()), (100, "/k"));
    set(&mut s, "/k", "a");
    r.expiration = Some(NOW + 100 * SEC);
    let ev = s.apply(&r).unwrap().event.unwrap();
    assert_eq!(
        json(&ev),
        r#"{"action":"update","node":{"key":"/k","value":"v","expiration":"2026-01-01T00:01:40Z","ttl":100,"modifiedIndex":2,"createdIndex":1},"prevNode":{"key":"/k","value":"a","modifiedIndex":1,"createdIndex":1}}"#
    );
    assert!(s.has_ttl_keys());
    // An update without ttl makes the key permanent again.
    r.expiration = None;
    r.value = "w".into();
    let ev = s.apply(&r).unwrap().event.unwrap();
    assert_eq!(ev.node.as_ref().unwrap().expiration, None);
    assert_eq!(ev.prev_node.as_ref().unwrap().ttl, 100);
    assert!(!s.has_ttl_keys());
    // A directory: only the TTL changes, and it keeps its modifiedIndex
    // although the event reports the new one (etcd does the same).
    let mut d = req(V2Op::Create, "/d");
    d.dir = true;
    s.apply(&d).unwrap();
    let mut u = req(V2Op::Update, "/d");
    u.expiration = Some(NOW + 5 * SEC);
    let ev = s.apply(&u).unwrap().event.unwrap();
    let n = ev.node.unwrap();
    assert!(n.dir && n.value.is_none());
    assert_eq!((n.modified_index, n.created_index, n.ttl), (5, 4, 5));
    let n = get(&s, "/d", false).node.unwrap();
    assert_eq!((n.modified_index, n.ttl), (4, 5));
}

#[test]
fn compare_and_swap() {
    let mut s = V2Store::new();
    set(&mut s, "/c", "one");
    let mut r = req(V2Op::CompareAndSwap, "/c");
    r.value = "x".into();
    r.prev_value = "two".into();
    let e = apply_err(&mut s, &r);
    assert_eq!(
        e.to_body(),
        "{\"errorCode\":101,\"message\":\"Compare failed\",\"cause\":\"[two != one]\",\"index\":1}\n"
    );
    r.prev_value.clear();
    r.prev_index = 3;
    assert_eq!(apply_err(&mut s, &r).cause, "[3 != 1]");
    r.prev_value = "two".into();
    assert_eq!(apply_err(&mut s, &r).cause, "[two != one] [3 != 1]");
    r.prev_index = 1;
    r.prev_value = "one".into();
    let ev = s.apply(&r).unwrap().event.unwrap();
    assert_eq!(
        json(&ev),
        r#"{"action":"compareAndSwap","node":{"key":"/c","value":"x","modifiedIndex":2,"createdIndex":1},"prevNode":{"key":"/c","value":"one","modifiedIndex":1,"createdIndex":1}}"#
    );
    r.path = "/missing".into();
    assert_eq!(apply_err(&mut s, &r).code, KEY_NOT_FOUND);
    assert!(
        s.stats_json()
            .contains("\"compareAndSwapSuccess\":1,\"compareAndSwapFail\":4,")
    );
}

#[test]
fn delete_and_compare_and_delete() {
    let mut s = V2Store::new();
    set(&mut s, "/f", "v");
    let out = s.apply(&req(V2Op::Delete, "/f")).unwrap();
    assert_eq!(
        json(out.event.as_ref().unwrap()),
        r#"{"action":"delete","node":{"key":"/f","modifiedIndex":2,"createdIndex":1},"prevNode":{"key":"/f","value":"v","modifiedIndex":1,"createdIndex":1}}"#
    );
    assert_eq!(out.changes, vec![("/f".to_string(), None)]);
    assert_eq!(
        apply_err(&mut s, &req(V2Op::Delete, "/f")).code,
        KEY_NOT_FOUND
    );
    // rmdir: an empty directory, or a plain file, with dir=true
    let mut mk = req(V2Op::Create, "/d");
    mk.dir = true;
    s.apply(&mk).unwrap();
    set(&mut s, "/file", "x");
    let mut rm = req(V2Op::Delete, "/file");
    rm.dir = true;
    s.apply(&rm).unwrap();
    rm.path = "/d".into();
    let ev = s.apply(&rm).unwrap().event.unwrap();
    assert_eq!(
        json(&ev),
        r#"{"action":"delete","node":{"key":"/d","dir":true,"modifiedIndex":6,"createdIndex":3},"prevNode":{"key":"/d","dir":true,"modifiedIndex":3,"createdIndex":3}}"#
    );
    // Non-empty (a hidden child counts): 108 without recursive.
    set(&mut s, "/d2/_h", "x");
    rm.path = "/d2".into();
    let e = apply_err(&mut s, &rm);
    assert_eq!((e.code, e.cause.as_str()), (108, "/d2"));
    set(&mut s, "/d2/sub/x", "y");
    let mut rr = req(V2Op::Delete, "/d2");
    rr.recursive = true; // implies dir
    let out = s.apply(&rr).unwrap();
    let mut gone: Vec<&str> = out.changes.iter().map(|(k, _)| k.as_str()).collect();
    gone.sort();
    assert_eq!(gone, ["/d2", "/d2/_h", "/d2/sub", "/d2/sub/x"]);
    assert!(out.changes.iter().all(|(_, v)| v.is_none()));
    assert_eq!(s.get("/d2", false, false, NOW).unwrap_err().code, 100);
    // compareAndDelete
    set(&mut s, "/c", "x");
    let mut cad = req(V2Op::CompareAndDelete, "/c");
    cad.prev_value = "zz".into();
    let e = apply_err(&mut s, &cad);
    assert_eq!((e.code, e.cause.as_str()), (101, "[zz != x]"));
    cad.prev_value = "x".into();
    let ev = s.apply(&cad).unwrap().event.unwrap();
    assert_eq!(ev.action, V2Action::CompareAndDelete);
    assert_eq!(ev.prev_node.unwrap().value.as_deref(), Some("x"));
    assert_eq!(ev.node.unwrap().value, None);
    assert!(
        s.stats_json()
            .contains("\"compareAndDeleteSuccess\":1,\"compareAndDeleteFail\":1,")
    );
}

#[test]
fn ttl_and_sync_expiry() {
    let mut s = V2Store::new();
    let mut r = req(V2Op::Set, "/t");
    r.value = "a".into();
    r.expiration = Some(NOW + 5 * SEC + 123);
    let ev = s.apply(&r).unwrap().event.unwrap();
    assert_eq!(
        json(&ev),
        r#"{"action":"set","node":{"key":"/t","value":"a","expiration":"2026-01-01T00:00:05.000000123Z","ttl":6,"modifiedIndex":1,"createdIndex":1}}"#
    );
    assert_eq!(s.next_expiration(), Some(NOW + 5 * SEC + 123));
    // The TTL shown counts down with the reader's clock.
    assert_eq!(
        s.get("/t", false, false, NOW + 2 * SEC)
            .unwrap()
            .node
            .unwrap()
            .ttl,
        4
    );
    // A directory with a TTL takes its children with it.
    let mut d = req(V2Op::Create, "/td");
    d.dir = true;
    d.expiration = Some(NOW + 10 * SEC);
    s.apply(&d).unwrap();
    set(&mut s, "/td/child", "c");
    let mut w = s.watch("/td/child", false, false, 0).unwrap();
    // Nothing is due yet.
    let out = s
        .apply(&V2Request::new(V2Op::Sync, "", NOW + 5 * SEC))
        .unwrap();
    assert_eq!((out.expired, out.index, out.changes.len()), (0, 3, 0));
    // Expiry only with a sync at or after the expiration.
    let out = s
        .apply(&V2Request::new(V2Op::Sync, "", NOW + 10 * SEC))
        .unwrap();
    assert_eq!(out.event, None);
    assert_eq!((out.expired, out.index), (2, 5));
    let mut changed: Vec<&str> = out.changes.iter().map(|(k, _)| k.as_str()).collect();
    changed.sort();
    assert_eq!(changed, ["/t", "/td", "/td/child"]);
    assert!(!s.has_ttl_keys());
    // The watcher on the child saw its directory expire.
    let ev = w.try_next().unwrap();
    assert_eq!(
        json(&ev),
        r#"{"action":"expire","node":{"key":"/td","dir":true,"modifiedIndex":5,"createdIndex":2},"prevNode":{"key":"/td","dir":true,"expiration":"2026-01-01T00:00:10Z","modifiedIndex":2,"createdIndex":2}}"#
    );
    assert!(s.stats_json().contains("\"expireCount\":2,"));
    assert_eq!(s.get("/t", false, false, NOW).unwrap_err().code, 100);
}

#[test]
fn ttl_edge_cases() {
    let mut s = V2Store::new();
    // An expiration before 2000 (Go's TTL overflow) creates a permanent key.
    let mut r = req(V2Op::Set, "/huge");
    r.value = "x".into();
    r.expiration = Some(NOW.wrapping_add(9_999_999_999i64.wrapping_mul(SEC)));
    assert!(r.expiration.unwrap() < MIN_EXPIRE_TIME);
    let ev = s.apply(&r).unwrap().event.unwrap();
    assert_eq!(ev.node.unwrap().expiration, None);
    assert!(!s.has_ttl_keys());
    // ttl=0: expires at once, shows the expiration but no ttl (omitted 0).
    r.path = "/zero".into();
    r.expiration = Some(NOW);
    let ev = s.apply(&r).unwrap().event.unwrap();
    assert_eq!(
        json(&ev),
        r#"{"action":"set","node":{"key":"/zero","value":"x","expiration":"2026-01-01T00:00:00Z","modifiedIndex":2,"createdIndex":2}}"#
    );
    // Expired but not yet synced: still readable, ttl negative.
    assert_eq!(
        s.get("/zero", false, false, NOW + 3 * SEC)
            .unwrap()
            .node
            .unwrap()
            .ttl,
        -3
    );
    let out = s.apply(&V2Request::new(V2Op::Sync, "", NOW)).unwrap();
    assert_eq!(out.expired, 1);
    // Several due at once go soonest first, one index each.
    for (i, k) in ["/e3", "/e1", "/e2"].iter().enumerate() {
        let mut r = req(V2Op::Set, k);
        r.expiration = Some(NOW + [3, 1, 2][i] * SEC);
        s.apply(&r).unwrap();
    }
    let mut w = s.watch("/", true, true, 0).unwrap();
    let out = s
        .apply(&V2Request::new(V2Op::Sync, "", NOW + 9 * SEC))
        .unwrap();
    assert_eq!(out.expired, 3);
    let order: Vec<(String, u64)> = std::iter::from_fn(|| w.try_next())
        .map(|e| (e.key().to_string(), e.index()))
        .collect();
    assert_eq!(
        order,
        [("/e1".into(), 7), ("/e2".into(), 8), ("/e3".into(), 9)]
    );
}

#[test]
fn refresh() {
    let mut s = V2Store::new();
    let mut r = req(V2Op::Set, "/r");
    r.refresh = true;
    r.expiration = Some(NOW + 10 * SEC);
    let e = apply_err(&mut s, &r);
    assert_eq!((e.code, e.cause.as_str()), (100, "/r"));
    let mut first = req(V2Op::Set, "/r");
    first.value = "keep".into();
    first.expiration = Some(NOW + 5 * SEC);
    s.apply(&first).unwrap();
    let mut w = s.watch("/r", false, false, 0).unwrap();
    let ev = s.apply(&r).unwrap().event.unwrap();
    assert!(ev.refresh);
    let n = ev.node.as_ref().unwrap();
    assert_eq!((n.value.as_deref(), n.ttl), (Some("keep"), 10));
    // Refreshes wake no watcher ...
    assert!(w.try_next().is_none());
    assert!(w.is_registered());
    // ... nor does the history serve them.
    let mut hw = s.watch("/r", false, false, 2).unwrap();
    assert!(hw.try_next().is_none());
    // Update with refresh keeps the value too.
    let mut u = req(V2Op::Update, "/r");
    u.refresh = true;
    u.expiration = Some(NOW + 20 * SEC);
    let ev = s.apply(&u).unwrap().event.unwrap();
    assert_eq!(ev.node.as_ref().unwrap().value.as_deref(), Some("keep"));
    assert_eq!(ev.node.as_ref().unwrap().ttl, 20);
    // CAS with refresh as well.
    let mut c = req(V2Op::CompareAndSwap, "/r");
    c.refresh = true;
    c.prev_value = "keep".into();
    c.expiration = Some(NOW + 30 * SEC);
    let ev = s.apply(&c).unwrap().event.unwrap();
    assert_eq!(ev.node.as_ref().unwrap().value.as_deref(), Some("keep"));
    assert!(w.try_next().is_none());
    // A real change then wakes it.
    set(&mut s, "/r", "new");
    assert_eq!(w.try_next().unwrap().index(), 5);
}

#[test]
fn watch_next_change_and_history() {
    let mut s = V2Store::new();
    set(&mut s, "/w", "1");
    let mut w = s.watch("/w", false, false, 0).unwrap();
    assert_eq!(w.start_index(), 1);
    assert_eq!(s.watcher_count(), 1);
    set(&mut s, "/other", "x");
    assert!(w.try_next().is_none());
    set(&mut s, "/w", "2");
    let ev = w.try_next().unwrap();
    assert_eq!((ev.action, ev.index()), (V2Action::Set, 3));
    // One-shot: done after one event.
    assert_eq!(s.watcher_count(), 0);
    assert!(!w.is_registered());
    // From the history.
    let mut h = s.watch("/w", false, false, 1).unwrap();
    assert_eq!(h.try_next().unwrap().index(), 1);
    let mut h = s.watch("/w", false, false, 2).unwrap();
    assert_eq!(h.try_next().unwrap().index(), 3);
    assert_eq!(s.watcher_count(), 0);
    // A future index waits for it.
    let mut f = s.watch("/w", false, false, 6).unwrap();
    set(&mut s, "/w", "3"); // 4
    set(&mut s, "/w", "4"); // 5
    assert!(f.try_next().is_none());
    set(&mut s, "/w", "5"); // 6
    assert_eq!(f.try_next().unwrap().index(), 6);
}

#[test]
fn watch_history_is_cleared_after_1000_events() {
    let mut s = V2Store::new();
    for i in 0..(HISTORY_CAPACITY + 10) {
        set(&mut s, "/loop", &i.to_string());
    }
    let e = s.watch("/loop", false, false, 5).err().unwrap();
    assert_eq!(
        e.to_body(),
        "{\"errorCode\":401,\"message\":\"The event in requested index is outdated and cleared\",\"cause\":\"the requested history has been cleared [11/5]\",\"index\":1010}\n"
    );
    assert_eq!(e.status().as_u16(), 400);
    let mut w = s.watch("/loop", false, false, 11).unwrap();
    assert_eq!(w.try_next().unwrap().index(), 11);
}

#[test]
fn recursive_and_hidden_watches() {
    let mut s = V2Store::new();
    let mut child = s.watch("/wdir/a", false, false, 0).unwrap();
    let mut rec = s.watch("/wdir", true, false, 0).unwrap();
    let mut flat = s.watch("/wdir", false, false, 0).unwrap();
    let mut root = s.watch("/", true, false, 0).unwrap();
    let mut hidden = s.watch("/_hd", true, false, 0).unwrap();
    // Hidden keys are invisible to watchers above them.
    set(&mut s, "/wdir/_h", "1");
    assert!(rec.try_next().is_none());
    assert!(root.try_next().is_none());
    set(&mut s, "/wdir/a", "1");
    for w in [&mut child, &mut rec, &mut root] {
        assert_eq!(w.try_next().unwrap().key(), "/wdir/a");
    }
    assert!(flat.try_next().is_none());
    set(&mut s, "/_hd/q", "2");
    assert_eq!(hidden.try_next().unwrap().key(), "/_hd/q");
    // Deleting a directory reaches watchers on keys inside it, recursive or
    // not; a stream watcher gets it once.
    let mut inner = s.watch("/wdir/x/y", false, false, 0).unwrap();
    let mut stream = s.watch("/wdir", true, true, 0).unwrap();
    let mut del = req(V2Op::Delete, "/wdir");
    del.recursive = true;
    s.apply(&del).unwrap();
    assert_eq!(flat.try_next().unwrap().action, V2Action::Delete);
    assert!(inner.try_next().is_none(), "nothing existed at /wdir/x/y");
    let ev = stream.try_next().unwrap();
    assert_eq!((ev.action, ev.key()), (V2Action::Delete, "/wdir"));
    assert!(stream.try_next().is_none());
    // The history ignores hidden-ness (as etcd's) and matches deleted
    // parent directories.
    let mut h = s.watch("/", true, false, 2).unwrap();
    assert_eq!(h.try_next().unwrap().key(), "/wdir/a");
    let mut h = s.watch("/", true, false, 3).unwrap();
    assert_eq!(h.try_next().unwrap().key(), "/_hd/q");
    let mut h = s.watch("/wdir/x/y", false, false, 4).unwrap();
    assert_eq!(h.try_next().unwrap().key(), "/wdir");
}

#[test]
fn delete_reaches_watchers_on_children() {
    let mut s = V2Store::new();
    set(&mut s, "/p/c/leaf", "1");
    let mut leaf = s.watch("/p/c/leaf", false, false, 0).unwrap();
    let mut mid = s.watch("/p/c", false, false, 0).unwrap();
    let mut del = req(V2Op::Delete, "/p");
    del.recursive = true;
    s.apply(&del).unwrap();
    assert_eq!(leaf.try_next().unwrap().key(), "/p");
    assert_eq!(mid.try_next().unwrap().key(), "/p");
    assert_eq!(s.watcher_count(), 0);
}

#[test]
fn stream_watchers_and_slow_ones() {
    let mut s = V2Store::new();
    let mut w = s.watch("/s", false, true, 0).unwrap();
    for i in 0..3 {
        set(&mut s, "/s", &i.to_string());
    }
    for i in 1..=3 {
        assert_eq!(w.try_next().unwrap().index(), i);
    }
    assert!(w.is_registered());
    // A stream watcher that does not read is dropped when its queue is full.
    for i in 0..(WATCHER_QUEUE + 1) {
        set(&mut s, "/s", &i.to_string());
    }
    assert_eq!(s.watcher_count(), 0);
    let mut n = 0;
    while w.try_next().is_some() {
        n += 1;
    }
    assert_eq!(n, WATCHER_QUEUE);
    assert!(!w.is_registered());
    // A stream whose history backlog does not fit its queue gets a full
    // queue and is done, like a slow live one.
    let mut big = s.watch("/s", false, true, 1).unwrap();
    assert!(!big.is_registered());
    assert_eq!(std::iter::from_fn(|| big.try_next()).count(), WATCHER_QUEUE);
    // A stream from the history replays the matching events, then follows.
    let mut h = s.watch("/s", false, true, s.index() - 1).unwrap();
    assert_eq!(h.try_next().unwrap().index(), s.index() - 1);
    assert_eq!(h.try_next().unwrap().index(), s.index());
    assert!(h.is_registered());
    set(&mut s, "/s", "later");
    assert_eq!(h.try_next().unwrap().index(), s.index());
    // Dropping a watcher unregisters it.
    drop(h);
    assert_eq!(s.watcher_count(), 0);
    let w2 = s.watch("/s", true, false, 0).unwrap();
    assert_eq!(s.watcher_count(), 1);
    assert!(s.stats_json().ends_with("\"watchers\":1}"));
    drop(w2);
    assert_eq!(s.watcher_count(), 0);
}

/// Applies a sequence to `s`, mirroring every change into `disk`.
fn apply_persist(
    s: &mut V2Store,
    disk: &mut BTreeMap<String, Vec<u8>>,
    r: &V2Request,
) -> Option<ApplyOutcome> {
    let out = s.apply(r).ok()?;
    for (k, v) in &out.changes {
        match v {
            Some(b) => disk.insert(k.clone(), b.clone()),
            None => disk.remove(k),
        };
    }
    Some(out)
}

fn workload() -> Vec<V2Request> {
    let mut v = Vec::new();
    let mut put = |op: V2Op, path: &str, value: &str, f: &dyn Fn(&mut V2Request)| {
        let mut r = V2Request::new(op, path, NOW);
        r.value = value.into();
        f(&mut r);
        v.push(r);
    };
    let none = &|_: &mut V2Request| {};
    put(V2Op::Set, "/a", "1", none);
    put(V2Op::Set, "/dir/b", "2", none);
    put(V2Op::Set, "/dir/_h", "hidden", none);
    put(V2Op::Set, "/dir/sub/deep/c", "3", none);
    put(V2Op::Create, "/mk", "", &|r| r.dir = true);
    put(V2Op::CreateInOrder, "/queue", "job1", none);
    put(V2Op::CreateInOrder, "/queue", "job2", &|r| {
        r.expiration = Some(NOW + 60 * SEC)
    });
    put(V2Op::Update, "/a", "1b", &|r| {
        r.expiration = Some(NOW + 5 * SEC)
    });
    put(V2Op::CompareAndSwap, "/dir/b", "2b", &|r| {
        r.prev_value = "2".into()
    });
    put(V2Op::CompareAndSwap, "/dir/b", "nope", &|r| {
        r.prev_index = 1
    });
    put(V2Op::Set, "/ttl-dir", "", &|r| {
        r.dir = true;
        r.expiration = Some(NOW + 2 * SEC)
    });
    put(V2Op::Set, "/ttl-dir/x", "x", none);
    put(V2Op::Delete, "/dir/sub", "", &|r| r.recursive = true);
    put(
        V2Op::CompareAndDelete,
        "/queue/00000000000000000006",
        "",
        &|r| r.prev_value = "job1".into(),
    );
    put(V2Op::Set, "/ttl-dir/x", "", &|r| {
        r.refresh = true;
        r.expiration = Some(NOW + 30 * SEC)
    });
    put(V2Op::Sync, "", "", &|r| r.time = NOW + 3 * SEC);
    put(V2Op::Set, "/after", "sync", none);
    v
}

fn everything(s: &V2Store) -> (String, u64) {
    let ev = s.get("/", true, true, NOW).unwrap();
    (json(&ev), ev.etcd_index)
}

#[test]
fn persistence_round_trip() {
    let mut s = V2Store::new();
    let mut disk = BTreeMap::new();
    let mut last = 0;
    for r in workload() {
        if let Some(out) = apply_persist(&mut s, &mut disk, &r) {
            last = out.index;
        }
    }
    assert_eq!(last, s.index());
    // The persisted records are exactly the store's own dump.
    let dump: BTreeMap<String, Vec<u8>> = s.records().into_iter().collect();
    assert_eq!(dump, disk);
    let mut fresh = V2Store::new();
    fresh.load(disk.clone(), last).unwrap();
    assert_eq!(everything(&fresh), everything(&s));
    for k in ["/dir/_h", "/a", "/queue"] {
        assert_eq!(
            json(&fresh.get(k, true, false, NOW).unwrap()),
            json(&s.get(k, true, false, NOW).unwrap())
        );
    }
    // TTLs survive: the queue job still expires.
    assert_eq!(fresh.next_expiration(), s.next_expiration());
    let out = fresh
        .apply(&V2Request::new(V2Op::Sync, "", NOW + 61 * SEC))
        .unwrap();
    assert_eq!(
        out.expired,
        s.apply(&V2Request::new(V2Op::Sync, "", NOW + 61 * SEC))
            .unwrap()
            .expired
    );
    assert_eq!(everything(&fresh), everything(&s));
    // Records load in any order.
    let mut reversed: Vec<(String, Vec<u8>)> = disk.into_iter().collect();
    reversed.reverse();
    let mut other = V2Store::new();
    other.load(reversed, last).unwrap();
    // After a load the history starts over: older indexes are gone.
    let e = other.watch("/", true, false, last).err().unwrap();
    assert_eq!(e.code, EVENT_INDEX_CLEARED);
    assert_eq!(
        e.cause,
        format!(
            "the requested history has been cleared [{}/{}]",
            last + 1,
            last
        )
    );
    assert!(other.watch("/", true, false, last + 1).is_ok());
}

#[test]
fn load_drops_watchers_and_rejects_bad_records() {
    let mut s = V2Store::new();
    set(&mut s, "/a", "1");
    let mut w = s.watch("/a", false, false, 0).unwrap();
    s.load(s.records(), s.index()).unwrap();
    assert_eq!(s.watcher_count(), 0);
    assert!(!w.is_registered());
    assert!(w.try_next().is_none());
    let rec = |dir: bool| {
        serde_json::to_vec(&NodeRecord {
            dir,
            value: (!dir).then(|| "v".to_string()),
            created_index: 1,
            modified_index: 1,
            expiration: None,
        })
        .unwrap()
    };
    let e = s
        .load(vec![("/x/y".to_string(), rec(false))], 1)
        .unwrap_err();
    assert_eq!(e.reason, "parent directory missing");
    let e = s
        .load(
            vec![
                ("/x".to_string(), rec(false)),
                ("/x/y".to_string(), rec(false)),
            ],
            1,
        )
        .unwrap_err();
    assert_eq!(e.reason, "parent is a file");
    assert!(s.load(vec![("/x".to_string(), b"{".to_vec())], 1).is_err());
    assert!(s.load(vec![("/".to_string(), rec(true))], 1).is_err());
    // Failed loads left the store as it was.
    assert_eq!(
        get(&s, "/a", false).node.unwrap().value.as_deref(),
        Some("1")
    );
    assert_eq!(
        std::str::from_utf8(&rec(true)).unwrap(),
        r#"{"dir":true,"createdIndex":1,"modifiedIndex":1}"#
    );
}

#[test]
fn deterministic_across_members() {
    let mut a = V2Store::new();
    let mut b = V2Store::new();
    // Member b has watchers and serves reads; that must not matter.
    let _w = b.watch("/", true, true, 0).unwrap();
    for r in workload() {
        // Requests travel as JSON.
        let wire = serde_json::to_vec(&r).unwrap();
        let r2: V2Request = serde_json::from_slice(&wire).unwrap();
        assert_eq!(r, r2);
        let _ = b.get("/", true, false, NOW);
        assert_eq!(a.apply(&r), b.apply(&r2));
    }
    assert_eq!(a.records(), b.records());
}

#[test]
fn request_wire_format() {
    let mut r = V2Request::new(V2Op::CompareAndSwap, "/k", 7);
    r.value = "v".into();
    r.prev_index = 3;
    assert_eq!(
        serde_json::to_string(&r).unwrap(),
        r#"{"op":"compareAndSwap","path":"/k","value":"v","prevIndex":3,"time":7}"#
    );
    let r: V2Request = serde_json::from_str(r#"{"op":"sync","time":5,"future":1}"#).unwrap();
    assert_eq!((r.op, r.time, r.path.as_str()), (V2Op::Sync, 5, ""));
    for (op, name) in [
        (V2Op::Set, "set"),
        (V2Op::Create, "create"),
        (V2Op::CreateInOrder, "createInOrder"),
        (V2Op::Update, "update"),
        (V2Op::Delete, "delete"),
        (V2Op::CompareAndDelete, "compareAndDelete"),
        (V2Op::QGet, "qget"),
    ] {
        assert_eq!(serde_json::to_string(&op).unwrap(), format!("\"{name}\""));
    }
}

#[test]
fn quorum_get_through_apply() {
    let mut s = V2Store::new();
    set(&mut s, "/q", "v");
    let mut r = req(V2Op::QGet, "/q");
    r.recursive = true;
    let out = s.apply(&r).unwrap();
    assert_eq!(out.event.unwrap().action, V2Action::Get);
    assert!(out.changes.is_empty());
    assert_eq!(out.index, 1);
    assert_eq!(
        apply_err(&mut s, &req(V2Op::QGet, "/nope")).code,
        KEY_NOT_FOUND
    );
    assert!(
        s.stats_json()
            .starts_with("{\"getsSuccess\":1,\"getsFail\":1,")
    );
}

#[test]
fn paths_are_cleaned_and_bounded() {
    let mut s = V2Store::new();
    set(&mut s, "//a/./b/../c//", "1");
    assert_eq!(
        get(&s, "/a/c", false).node.unwrap().value.as_deref(),
        Some("1")
    );
    // ".." cannot climb above the root.
    set(&mut s, "/../../x", "2");
    assert_eq!(
        get(&s, "/x", false).node.unwrap().value.as_deref(),
        Some("2")
    );
    let deep = "/d".repeat(MAX_KEY_DEPTH + 1);
    let mut r = req(V2Op::Set, &deep);
    r.value = "v".into();
    let e = apply_err(&mut s, &r);
    assert_eq!((e.code, e.status().as_u16()), (INVALID_FIELD, 400));
    assert_eq!(
        s.get(&deep, false, false, NOW).unwrap_err().code,
        INVALID_FIELD
    );
    assert_eq!(
        s.watch(&deep, false, false, 0).err().unwrap().code,
        INVALID_FIELD
    );
    // At the limit it works, and in-order creation is checked after the
    // new name is added.
    let max = "/d".repeat(MAX_KEY_DEPTH);
    r.path = max.clone();
    s.apply(&r).unwrap();
    r.op = V2Op::CreateInOrder;
    assert_eq!(apply_err(&mut s, &r).code, INVALID_FIELD);
    let mut del = req(V2Op::Delete, "/d");
    del.recursive = true;
    assert_eq!(s.apply(&del).unwrap().changes.len(), MAX_KEY_DEPTH);
}

#[test]
fn stats_counters() {
    let mut s = V2Store::new();
    set(&mut s, "/a", "1");
    let _ = s.get("/a", false, false, NOW);
    let _ = s.get("/b", false, false, NOW);
    let mut u = req(V2Op::Update, "/a");
    u.value = "2".into();
    s.apply(&u).unwrap();
    let mut c = req(V2Op::Create, "/a");
    c.value = "x".into();
    let _ = s.apply(&c);
    s.apply(&req(V2Op::Delete, "/a")).unwrap();
    let _ = s.apply(&req(V2Op::Delete, "/a"));
    assert_eq!(
        s.stats_json(),
        "{\"getsSuccess\":1,\"getsFail\":1,\"setsSuccess\":1,\"setsFail\":0,\"deleteSuccess\":1,\"deleteFail\":1,\"updateSuccess\":1,\"updateFail\":0,\"createSuccess\":0,\"createFail\":1,\"compareAndSwapSuccess\":0,\"compareAndSwapFail\":0,\"compareAndDeleteSuccess\":0,\"compareAndDeleteFail\":0,\"expireCount\":0,\"watchers\":0}"
    );
}
