//! The v2 keyspace: etcd 3.4's tree store (directories and files, TTLs,
//! compare-and-swap, in-order keys) as a deterministic state machine.
//!
//! `apply` is the only writer and depends on nothing but the request and
//! the current state: no clock (TTLs arrive as absolute expirations, expiry
//! happens only in `Sync` requests carrying the leader's time), no
//! randomness (children are kept in name order), no I/O (changed nodes are
//! returned as records for the caller to persist). Watchers and the event
//! history hang off the store but are not part of its replicated state.

use super::error::*;
use super::event::{V2Action, V2Event, V2Node, ttl_at};
use super::watch::{Hub, V2Watcher};
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

/// Deepest key accepted, in path components. etcd has no limit, but every
/// tree walk here recurses per level, so a key of a million components
/// would overflow the stack; no real keyspace comes near this.
pub const MAX_KEY_DEPTH: usize = 512;

/// Expirations before 2000-01-01T00:00:00Z make a new node permanent
/// (etcd's `minExpireTime`: such times come from TTL arithmetic that
/// overflowed, e.g. `ttl=9999999999`).
pub const MIN_EXPIRE_TIME: i64 = 946_684_800_000_000_000;

/// A write (or quorum read) as replicated through raft. The HTTP layer has
/// already turned etcd's PUT/POST/DELETE/GET parameters into one of these
/// operations, so applying it needs no further interpretation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum V2Op {
    /// PUT without conditions: create or replace a file (or, with `dir`,
    /// create a directory where there is nothing or a file). With `refresh`,
    /// only the TTL changes.
    #[serde(rename = "set")]
    Set,
    /// PUT `prevExist=false` (`mk`, `mkdir`): fails with 105 if the key
    /// exists.
    #[serde(rename = "create")]
    Create,
    /// POST: a new file (or `dir`) named by the new index, `%020d`, under
    /// `path`.
    #[serde(rename = "createInOrder")]
    CreateInOrder,
    /// PUT `prevExist=true` without prevValue/prevIndex: fails with 100 if
    /// the key is missing. On a directory only the TTL changes.
    #[serde(rename = "update")]
    Update,
    /// PUT with `prevValue` and/or `prevIndex`.
    #[serde(rename = "compareAndSwap")]
    CompareAndSwap,
    /// DELETE without conditions (`dir`, `recursive`).
    #[serde(rename = "delete")]
    Delete,
    /// DELETE with `prevValue` and/or `prevIndex` (files only).
    #[serde(rename = "compareAndDelete")]
    CompareAndDelete,
    /// GET `quorum=true`: a read ordered through raft.
    #[serde(rename = "qget")]
    QGet,
    /// Expire every node whose expiration is at or before `time`. Proposed
    /// by the leader (etcd: every 500 ms while any node has a TTL).
    #[serde(rename = "sync")]
    Sync,
}

fn is_false(b: &bool) -> bool {
    !*b
}
fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// One replicated v2 request. Carried through raft as JSON
/// (`serde_json::to_vec`); unknown fields are ignored and missing optional
/// ones default, so the format can grow.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct V2Request {
    pub op: V2Op,
    /// The key, e.g. "/foo/bar". Cleaned on apply ("//", ".", ".." cannot
    /// escape the root).
    #[serde(default)]
    pub path: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub value: String,
    #[serde(default, skip_serializing_if = "is_false")]
    pub dir: bool,
    /// Compare conditions; "" and 0 mean "not given", as in etcd.
    #[serde(
        default,
        rename = "prevValue",
        skip_serializing_if = "String::is_empty"
    )]
    pub prev_value: String,
    #[serde(default, rename = "prevIndex", skip_serializing_if = "is_zero")]
    pub prev_index: u64,
    #[serde(default, skip_serializing_if = "is_false")]
    pub recursive: bool,
    #[serde(default, skip_serializing_if = "is_false")]
    pub sorted: bool,
    /// Absolute expiry in unix nanoseconds, computed by the proposing member
    /// as `now + ttl` (with Go's wrapping arithmetic); `None` = no TTL, which
    /// also makes an existing node permanent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expiration: Option<i64>,
    /// Keep the value, change only the TTL; the event goes to the history
    /// but wakes no watcher.
    #[serde(default, skip_serializing_if = "is_false")]
    pub refresh: bool,
    /// The proposing member's clock (unix nanoseconds). `Sync` expires
    /// against it; every operation uses it to render `ttl` in its event.
    #[serde(default)]
    pub time: i64,
    /// Addresses the internal keyspace (etcd's `/2`, where the v2 auth API
    /// keeps its users, roles and switch) instead of the client keys. Only
    /// `Create`, `Update`, `Set`, `Delete` and `QGet` apply there; its
    /// writes use store indexes like any other, as in etcd, but no watcher
    /// ever sees them.
    #[serde(default, skip_serializing_if = "is_false")]
    pub internal: bool,
}

impl V2Request {
    /// A request with only the operation, path and time set.
    pub fn new(op: V2Op, path: impl Into<String>, time: i64) -> Self {
        V2Request {
            op,
            path: path.into(),
            value: String::new(),
            dir: false,
            prev_value: String::new(),
            prev_index: 0,
            recursive: false,
            sorted: false,
            expiration: None,
            refresh: false,
            time,
            internal: false,
        }
    }

    /// A request on the internal keyspace (see [`V2Request::internal`]).
    pub fn internal(op: V2Op, path: impl Into<String>, time: i64) -> Self {
        V2Request {
            internal: true,
            ..V2Request::new(op, path, time)
        }
    }
}

/// One persisted node change: the key and the node's record, or `None`
/// when the node was deleted.
pub type NodeChange = (String, Option<Vec<u8>>);

/// The result of applying one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApplyOutcome {
    /// The event to answer with; `None` for `Sync`.
    pub event: Option<V2Event>,
    /// Every node this request created, changed or deleted, in order.
    /// Writing them (upsert / delete by key) next to `index` keeps the
    /// persisted keyspace equal to the in-memory one; `V2Store::load`
    /// rebuilds from the result.
    pub changes: Vec<NodeChange>,
    /// The store ("etcd") index after the request.
    pub index: u64,
    /// `Sync`: how many expire events it produced.
    pub expired: usize,
}

/// A node's persisted record, stored under its key. JSON, e.g.
/// `{"value":"bar","createdIndex":4,"modifiedIndex":5}` or
/// `{"dir":true,"createdIndex":6,"modifiedIndex":6,"expiration":1764165000000000000}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeRecord {
    #[serde(default, skip_serializing_if = "is_false")]
    pub dir: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    #[serde(rename = "createdIndex")]
    pub created_index: u64,
    #[serde(rename = "modifiedIndex")]
    pub modified_index: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expiration: Option<i64>,
}

/// Why persisted records could not be loaded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("v2 store record {path:?}: {reason}")]
pub struct LoadError {
    pub path: String,
    pub reason: String,
}

#[derive(Debug, Clone)]
struct Node {
    created: u64,
    modified: u64,
    expiration: Option<i64>,
    kind: Kind,
}

#[derive(Debug, Clone)]
enum Kind {
    File(String),
    Dir(BTreeMap<String, Node>),
}

impl Node {
    fn new_dir(index: u64, expiration: Option<i64>) -> Node {
        Node {
            created: index,
            modified: index,
            expiration,
            kind: Kind::Dir(BTreeMap::new()),
        }
    }

    fn is_dir(&self) -> bool {
        matches!(self.kind, Kind::Dir(_))
    }

    fn value(&self) -> &str {
        match &self.kind {
            Kind::File(v) => v,
            Kind::Dir(_) => "",
        }
    }

    fn record(&self) -> Vec<u8> {
        let rec = NodeRecord {
            dir: self.is_dir(),
            value: match &self.kind {
                Kind::File(v) => Some(v.clone()),
                Kind::Dir(_) => None,
            },
            created_index: self.created,
            modified_index: self.modified,
            expiration: self.expiration,
        };
        serde_json::to_vec(&rec).unwrap_or_default()
    }

    /// etcd's `Repr`: the node alone, or with its subtree when `recursive`;
    /// hidden children (`_name`) are left out of listings.
    fn repr(&self, key: &str, recursive: bool, now: i64) -> V2Node {
        let mut n = V2Node {
            key: key.to_string(),
            modified_index: self.modified,
            created_index: self.created,
            ..Default::default()
        };
        if let Some(e) = self.expiration {
            n.expiration = Some(e);
            n.ttl = ttl_at(e, now);
        }
        match &self.kind {
            Kind::File(v) => n.value = Some(v.clone()),
            Kind::Dir(children) => {
                n.dir = true;
                if recursive {
                    n.nodes = list(children, key, true, now);
                }
            }
        }
        n
    }

    /// What a GET shows: a directory always lists its children (their
    /// subtrees only when `recursive`).
    fn view(&self, key: &str, recursive: bool, now: i64) -> V2Node {
        let mut n = self.repr(key, false, now);
        if let Kind::Dir(children) = &self.kind {
            n.nodes = list(children, key, recursive, now);
        }
        n
    }
}

fn list(children: &BTreeMap<String, Node>, key: &str, recursive: bool, now: i64) -> Vec<V2Node> {
    children
        .iter()
        .filter(|(name, _)| !name.starts_with('_'))
        .map(|(name, c)| c.repr(&child_key(key, name), recursive, now))
        .collect()
}

fn child_key(parent: &str, name: &str) -> String {
    if parent.is_empty() || parent == "/" {
        format!("/{name}")
    } else {
        format!("{parent}/{name}")
    }
}

/// The components of a key, cleaned like Go's `path.Clean(path.Join("/",
/// p))`: empty and "." components vanish, ".." climbs but never above root.
fn components(path: &str, index: u64) -> Result<Vec<&str>, V2Error> {
    let mut out: Vec<&str> = Vec::new();
    for c in path.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                out.pop();
            }
            c => out.push(c),
        }
    }
    if out.len() > MAX_KEY_DEPTH {
        return Err(V2Error::new(
            INVALID_FIELD,
            format!("key has more than {MAX_KEY_DEPTH} path components"),
            index,
        ));
    }
    Ok(out)
}

/// The key as clients see it: "/a/b", or "" for the root (etcd shows its
/// root, "/1" internally, with the prefix trimmed away).
fn key_of(comps: &[&str]) -> String {
    if comps.is_empty() {
        String::new()
    } else {
        let mut s = String::new();
        for c in comps {
            s.push('/');
            s.push_str(c);
        }
        s
    }
}

/// The key of the first `n` components (all of them if there are fewer).
fn key_of_first(comps: &[&str], n: usize) -> String {
    key_of(comps.get(..n).unwrap_or(comps))
}

/// The counters behind `/v2/stats/store`. Atomics, because reads count too
/// and run under the store's read lock. Not replicated state: each member
/// counts what it served and applied, as etcd's do.
#[derive(Debug, Default)]
pub struct V2StoreStats {
    pub gets_success: AtomicU64,
    pub gets_fail: AtomicU64,
    pub sets_success: AtomicU64,
    pub sets_fail: AtomicU64,
    pub delete_success: AtomicU64,
    pub delete_fail: AtomicU64,
    pub update_success: AtomicU64,
    pub update_fail: AtomicU64,
    pub create_success: AtomicU64,
    pub create_fail: AtomicU64,
    pub compare_and_swap_success: AtomicU64,
    pub compare_and_swap_fail: AtomicU64,
    pub compare_and_delete_success: AtomicU64,
    pub compare_and_delete_fail: AtomicU64,
    pub expire_count: AtomicU64,
}

fn bump(c: &AtomicU64) {
    c.fetch_add(1, Ordering::Relaxed);
}

/// The v2 store. Wrap it in a lock: `apply` and `load` take `&mut self`;
/// `get`, `watch` and the stats take `&self`.
pub struct V2Store {
    root: Node,
    index: u64,
    /// The index of the last event a client watch could match: writes to
    /// the internal keyspace and membership records move `index` but not
    /// this. Waits for an index past it can be answered after a reload
    /// even though the history is gone (nothing they could match is lost).
    visible_index: u64,
    /// etcd's `/2` keyspace, flat: "2/users/alice" → record. Keys carry no
    /// leading '/', which keeps them apart from client keys when persisted.
    internal: BTreeMap<String, NodeRecord>,
    /// (expiration, key) of every node with a TTL, soonest first.
    ttls: BTreeSet<(i64, String)>,
    hub: Arc<Mutex<Hub>>,
    stats: V2StoreStats,
}

impl Default for V2Store {
    fn default() -> Self {
        Self::new()
    }
}

/// What a write produced before it is published.
struct Done {
    event: V2Event,
    changes: Vec<NodeChange>,
    /// Keys of removed nodes (watchers on them hear about the deletion).
    removed: Vec<String>,
}

impl V2Store {
    pub fn new() -> Self {
        V2Store {
            root: Node::new_dir(0, None),
            index: 0,
            visible_index: 0,
            internal: BTreeMap::new(),
            ttls: BTreeSet::new(),
            hub: Arc::new(Mutex::new(Hub::default())),
            stats: V2StoreStats::default(),
        }
    }

    /// The current store ("etcd") index: incremented by every successful
    /// write and every expired node.
    pub fn index(&self) -> u64 {
        self.index
    }

    /// The index of the last event a client watch could match (see the
    /// field); persist it next to `index` and pass it to
    /// [`V2Store::set_visible_index`] after a load.
    pub fn visible_index(&self) -> u64 {
        self.visible_index
    }

    /// After [`V2Store::load`]: the last client-visible index persisted with
    /// the records. The history restarts just past it, so a wait for a later
    /// index is answered rather than refused with 401.
    pub fn set_visible_index(&mut self, visible: u64) {
        let visible = visible.min(self.index);
        self.visible_index = visible;
        self.hub.lock().reset(visible);
    }

    /// Records `count` writes that etcd makes to its own parts of the v2
    /// store (membership records under `/0`): each takes an index and a
    /// place in the history, and no watcher matches it. Returns the new
    /// index.
    pub fn bump_internal(&mut self, count: u64) -> u64 {
        for _ in 0..count {
            self.index = self.index.wrapping_add(1);
            self.hub
                .lock()
                .record(Arc::new(V2Event::internal(self.index)));
        }
        self.index
    }

    /// The value of a file in the internal keyspace (a local read).
    pub fn internal_value(&self, path: &str) -> Option<&str> {
        let rec = self.internal.get(&internal_key(path).ok()?)?;
        if rec.dir {
            return None;
        }
        Some(rec.value.as_deref().unwrap_or(""))
    }

    /// The files directly under an internal directory, in name order:
    /// (name, value).
    pub fn internal_list(&self, dir: &str) -> Vec<(String, String)> {
        let Ok(dir) = internal_key(dir) else {
            return Vec::new();
        };
        let prefix = format!("{dir}/");
        self.internal
            .range(prefix.clone()..)
            .take_while(|(k, _)| k.starts_with(&prefix))
            .filter(|(k, r)| !r.dir && !k[prefix.len()..].contains('/'))
            .map(|(k, r)| {
                (
                    k[prefix.len()..].to_string(),
                    r.value.clone().unwrap_or_default(),
                )
            })
            .collect()
    }

    /// Whether any node has a TTL: the leader proposes `Sync` only then.
    pub fn has_ttl_keys(&self) -> bool {
        !self.ttls.is_empty()
    }

    /// The soonest expiration (unix nanoseconds), if any node has a TTL.
    pub fn next_expiration(&self) -> Option<i64> {
        self.ttls.first().map(|(e, _)| *e)
    }

    pub fn stats(&self) -> &V2StoreStats {
        &self.stats
    }

    /// Watchers currently waiting.
    pub fn watcher_count(&self) -> usize {
        self.hub.lock().count()
    }

    /// The `/v2/stats/store` body (etcd's field order, no trailing newline).
    pub fn stats_json(&self) -> String {
        let s = &self.stats;
        let g = |c: &AtomicU64| c.load(Ordering::Relaxed);
        format!(
            "{{\"getsSuccess\":{},\"getsFail\":{},\"setsSuccess\":{},\"setsFail\":{},\
             \"deleteSuccess\":{},\"deleteFail\":{},\"updateSuccess\":{},\"updateFail\":{},\
             \"createSuccess\":{},\"createFail\":{},\"compareAndSwapSuccess\":{},\
             \"compareAndSwapFail\":{},\"compareAndDeleteSuccess\":{},\
             \"compareAndDeleteFail\":{},\"expireCount\":{},\"watchers\":{}}}",
            g(&s.gets_success),
            g(&s.gets_fail),
            g(&s.sets_success),
            g(&s.sets_fail),
            g(&s.delete_success),
            g(&s.delete_fail),
            g(&s.update_success),
            g(&s.update_fail),
            g(&s.create_success),
            g(&s.create_fail),
            g(&s.compare_and_swap_success),
            g(&s.compare_and_swap_fail),
            g(&s.compare_and_delete_success),
            g(&s.compare_and_delete_fail),
            g(&s.expire_count),
            self.watcher_count(),
        )
    }

    /// A local (serializable) read. `now` is the reader's clock, used only
    /// to show the remaining `ttl`. `sorted` is accepted for symmetry:
    /// listings always come in key order, which is also a valid unsorted
    /// order.
    pub fn get(
        &self,
        path: &str,
        recursive: bool,
        sorted: bool,
        now: i64,
    ) -> Result<V2Event, V2Error> {
        let _ = sorted;
        let r = self.get_inner(path, recursive, now);
        bump(if r.is_ok() {
            &self.stats.gets_success
        } else {
            &self.stats.gets_fail
        });
        r
    }

    fn get_inner(&self, path: &str, recursive: bool, now: i64) -> Result<V2Event, V2Error> {
        let comps = components(path, self.index)?;
        let n = self.lookup(&comps)?;
        Ok(V2Event {
            action: V2Action::Get,
            node: Some(n.view(&key_of(&comps), recursive, now)),
            prev_node: None,
            etcd_index: self.index,
            refresh: false,
        })
    }

    /// Starts a watch at `path`. `since` is `waitIndex`: 0 means the next
    /// change; an index older than the history gives error 401. Call it
    /// under the same lock that guards `apply`, so no event can slip between
    /// the history scan and the registration.
    pub fn watch(
        &self,
        path: &str,
        recursive: bool,
        stream: bool,
        since: u64,
    ) -> Result<V2Watcher, V2Error> {
        let comps = components(path, self.index)?;
        let key = if comps.is_empty() {
            "/".to_string()
        } else {
            key_of(&comps)
        };
        let since = if since == 0 {
            self.index.wrapping_add(1)
        } else {
            since
        };
        Hub::watch(&self.hub, key, recursive, stream, since, self.index)
    }

    /// Applies one replicated request. Same requests in the same order give
    /// the same state, results and changes on every member. On error
    /// nothing changed (only the stats counters moved).
    pub fn apply(&mut self, req: &V2Request) -> Result<ApplyOutcome, V2Error> {
        if req.internal {
            let r = self.apply_internal(req);
            if req.op != V2Op::QGet {
                self.count(req.op, r.is_ok());
            }
            return r;
        }
        let r = match req.op {
            V2Op::QGet => {
                let ev = self.get(&req.path, req.recursive, req.sorted, req.time)?;
                return Ok(ApplyOutcome {
                    event: Some(ev),
                    changes: Vec::new(),
                    index: self.index,
                    expired: 0,
                });
            }
            V2Op::Sync => return Ok(self.expire(req.time)),
            V2Op::Set => self.set(req),
            V2Op::Create => self.create(req, false),
            V2Op::CreateInOrder => self.create(req, true),
            V2Op::Update => self.update(req),
            V2Op::CompareAndSwap => self.compare_and_swap(req),
            V2Op::Delete => self.delete(req),
            V2Op::CompareAndDelete => self.compare_and_delete(req),
        };
        self.count(req.op, r.is_ok());
        let done = r?;
        let event = done.event.clone();
        self.visible_index = self.index;
        self.hub.lock().publish(Arc::new(done.event), &done.removed);
        Ok(ApplyOutcome {
            event: Some(event),
            changes: done.changes,
            index: self.index,
            expired: 0,
        })
    }

    fn count(&self, op: V2Op, success: bool) {
        let s = &self.stats;
        let (ok, fail) = match op {
            V2Op::Set => (&s.sets_success, &s.sets_fail),
            V2Op::Create | V2Op::CreateInOrder => (&s.create_success, &s.create_fail),
            V2Op::Update => (&s.update_success, &s.update_fail),
            V2Op::CompareAndSwap => (&s.compare_and_swap_success, &s.compare_and_swap_fail),
            V2Op::Delete => (&s.delete_success, &s.delete_fail),
            V2Op::CompareAndDelete => (&s.compare_and_delete_success, &s.compare_and_delete_fail),
            V2Op::QGet | V2Op::Sync => return,
        };
        bump(if success { ok } else { fail });
    }

    fn lookup(&self, comps: &[&str]) -> Result<&Node, V2Error> {
        let mut cur = &self.root;
        for (i, c) in comps.iter().enumerate() {
            let Kind::Dir(children) = &cur.kind else {
                return Err(V2Error::new(NOT_DIR, key_of_first(comps, i), self.index));
            };
            cur = children.get(*c).ok_or_else(|| {
                V2Error::new(KEY_NOT_FOUND, key_of_first(comps, i + 1), self.index)
            })?;
        }
        Ok(cur)
    }

    /// The node at an already validated key. A miss means the tree changed
    /// under us, which `&mut self` rules out; it is reported, not panicked.
    fn lookup_mut(&mut self, comps: &[&str]) -> Result<&mut Node, V2Error> {
        let mut cur = &mut self.root;
        for c in comps {
            let Kind::Dir(children) = &mut cur.kind else {
                return Err(broken());
            };
            cur = children.get_mut(*c).ok_or_else(broken)?;
        }
        Ok(cur)
    }

    fn set_ttl(&mut self, key: &str, old: Option<i64>, new: Option<i64>) {
        if let Some(e) = old {
            self.ttls.remove(&(e, key.to_string()));
        }
        if let Some(e) = new {
            self.ttls.insert((e, key.to_string()));
        }
    }

    /// etcd's `internalCreate`: makes the missing parent directories and the
    /// node itself, replacing a file at the key when `replace`.
    fn create_node(
        &mut self,
        comps: &[&str],
        dir: bool,
        value: String,
        expiration: Option<i64>,
        replace: bool,
        action: V2Action,
        now: i64,
    ) -> Result<Done, V2Error> {
        let cur = self.index;
        let next = cur.wrapping_add(1);
        let Some((name, parents)) = comps.split_last() else {
            return Err(V2Error::new(ROOT_READ_ONLY, "/", cur));
        };
        let key = key_of(comps);
        let expiration = expiration.filter(|e| *e >= MIN_EXPIRE_TIME);

        // Check everything first, so that a failing request changes nothing.
        let mut node = &self.root;
        let mut parents_exist = true;
        for (i, c) in parents.iter().enumerate() {
            let Kind::Dir(children) = &node.kind else {
                return Err(broken());
            };
            match children.get(*c) {
                Some(n) if n.is_dir() => node = n,
                Some(_) => return Err(V2Error::new(NOT_DIR, key_of_first(comps, i + 1), cur)),
                None => {
                    parents_exist = false;
                    break;
                }
            }
        }
        let mut prev = None;
        if parents_exist
            && let Kind::Dir(children) = &node.kind
            && let Some(existing) = children.get(*name)
        {
            if !replace {
                return Err(V2Error::new(NODE_EXIST, key, cur));
            }
            if existing.is_dir() {
                return Err(V2Error::new(NOT_FILE, key, cur));
            }
            prev = Some(existing.repr(&key, false, now));
        }

        let mut changes = Vec::new();
        let Kind::Dir(mut map) = std::mem::replace(&mut self.root.kind, Kind::File(String::new()))
        else {
            return Err(broken());
        };
        let result = (|| {
            let mut children = &mut map;
            for (i, c) in parents.iter().enumerate() {
                if !children.contains_key(*c) {
                    let d = Node::new_dir(next, None);
                    changes.push((key_of_first(comps, i + 1), Some(d.record())));
                    children.insert(c.to_string(), d);
                }
                children = match children.get_mut(*c).map(|n| &mut n.kind) {
                    Some(Kind::Dir(m)) => m,
                    _ => return Err(broken()),
                };
            }
            let old = children.remove(*name);
            let node = Node {
                created: next,
                modified: next,
                expiration,
                kind: if dir {
                    Kind::Dir(BTreeMap::new())
                } else {
                    Kind::File(value)
                },
            };
            changes.push((key.clone(), Some(node.record())));
            let view = node.repr(&key, false, now);
            children.insert(name.to_string(), node);
            Ok((old.and_then(|o| o.expiration), view))
        })();
        self.root.kind = Kind::Dir(map);
        let (old_expiration, view) = result?;
        self.set_ttl(&key, old_expiration, expiration);
        self.index = next;
        Ok(Done {
            event: V2Event {
                action,
                node: Some(view),
                prev_node: prev,
                etcd_index: next,
                refresh: false,
            },
            changes,
            removed: Vec::new(),
        })
    }

    fn set(&mut self, req: &V2Request) -> Result<Done, V2Error> {
        let comps = components(&req.path, self.index)?;
        let key = key_of(&comps);
        // etcd looks the key up first: a file in the way is 104 here, and a
        // refresh of a missing key is 100.
        let (prev, old_value) = match self.lookup(&comps) {
            Ok(n) => (Some(n.repr(&key, false, req.time)), n.value().to_string()),
            Err(e) if e.code == KEY_NOT_FOUND && !req.refresh => (None, String::new()),
            Err(e) => return Err(e),
        };
        let value = if req.refresh {
            old_value
        } else {
            req.value.clone()
        };
        let mut done = self.create_node(
            &comps,
            req.dir,
            value,
            req.expiration,
            true,
            V2Action::Set,
            req.time,
        )?;
        done.event.prev_node = prev;
        done.event.refresh = req.refresh;
        Ok(done)
    }

    fn create(&mut self, req: &V2Request, in_order: bool) -> Result<Done, V2Error> {
        let mut comps = components(&req.path, self.index)?;
        let name = format!("{:020}", self.index.wrapping_add(1));
        if in_order {
            comps.push(&name);
            if comps.len() > MAX_KEY_DEPTH {
                return Err(V2Error::new(
                    INVALID_FIELD,
                    format!("key has more than {MAX_KEY_DEPTH} path components"),
                    self.index,
                ));
            }
        }
        let r = self.create_node(
            &comps,
            req.dir,
            req.value.clone(),
            req.expiration,
            false,
            V2Action::Create,
            req.time,
        );
        // etcd counts a file in the way as a failed set too.
        if matches!(&r, Err(e) if e.code == NOT_DIR) {
            bump(&self.stats.sets_fail);
        }
        r
    }

    fn update(&mut self, req: &V2Request) -> Result<Done, V2Error> {
        let comps = components(&req.path, self.index)?;
        if comps.is_empty() {
            return Err(V2Error::new(ROOT_READ_ONLY, "/", self.index));
        }
        let key = key_of(&comps);
        let next = self.index.wrapping_add(1);
        let n = self.lookup(&comps)?;
        if n.is_dir() && !req.value.is_empty() {
            return Err(V2Error::new(NOT_FILE, key, self.index));
        }
        let value = if req.refresh {
            n.value().to_string()
        } else {
            req.value.clone()
        };
        let prev = n.repr(&key, false, req.time);
        let n = self.lookup_mut(&comps)?;
        // etcd writes the value through a call that refuses directories, so
        // a directory keeps its modifiedIndex although the event shows the
        // new index. Observable, hence kept.
        if let Kind::File(v) = &mut n.kind {
            *v = value;
            n.modified = next;
        }
        let old_expiration = std::mem::replace(&mut n.expiration, req.expiration);
        let mut view = n.repr(&key, false, req.time);
        view.modified_index = next;
        let record = n.record();
        self.set_ttl(&key, old_expiration, req.expiration);
        self.index = next;
        Ok(Done {
            event: V2Event {
                action: V2Action::Update,
                node: Some(view),
                prev_node: Some(prev),
                etcd_index: next,
                refresh: req.refresh,
            },
            changes: vec![(key, Some(record))],
            removed: Vec::new(),
        })
    }

    fn compare_and_swap(&mut self, req: &V2Request) -> Result<Done, V2Error> {
        let comps = components(&req.path, self.index)?;
        if comps.is_empty() {
            return Err(V2Error::new(ROOT_READ_ONLY, "/", self.index));
        }
        let key = key_of(&comps);
        let next = self.index.wrapping_add(1);
        let n = self.lookup(&comps)?;
        if n.is_dir() {
            return Err(V2Error::new(NOT_FILE, key, self.index));
        }
        compare(n, &req.prev_value, req.prev_index, self.index)?;
        let value = if req.refresh {
            n.value().to_string()
        } else {
            req.value.clone()
        };
        let prev = n.repr(&key, false, req.time);
        let n = self.lookup_mut(&comps)?;
        n.kind = Kind::File(value);
        n.modified = next;
        let old_expiration = std::mem::replace(&mut n.expiration, req.expiration);
        let view = n.repr(&key, false, req.time);
        let record = n.record();
        self.set_ttl(&key, old_expiration, req.expiration);
        self.index = next;
        Ok(Done {
            event: V2Event {
                action: V2Action::CompareAndSwap,
                node: Some(view),
                prev_node: Some(prev),
                etcd_index: next,
                refresh: req.refresh,
            },
            changes: vec![(key, Some(record))],
            removed: Vec::new(),
        })
    }

    fn delete(&mut self, req: &V2Request) -> Result<Done, V2Error> {
        let comps = components(&req.path, self.index)?;
        if comps.is_empty() {
            return Err(V2Error::new(ROOT_READ_ONLY, "/", self.index));
        }
        let key = key_of(&comps);
        // recursive implies dir
        let dir = req.dir || req.recursive;
        let n = self.lookup(&comps)?;
        if let Kind::Dir(children) = &n.kind {
            if !dir {
                return Err(V2Error::new(NOT_FILE, key, self.index));
            }
            // Hidden children count: a directory holding only `_x` is not
            // empty.
            if !children.is_empty() && !req.recursive {
                return Err(V2Error::new(DIR_NOT_EMPTY, key, self.index));
            }
        }
        self.remove_with_event(&comps, V2Action::Delete, req.time)
    }

    fn compare_and_delete(&mut self, req: &V2Request) -> Result<Done, V2Error> {
        let comps = components(&req.path, self.index)?;
        let n = self.lookup(&comps)?;
        // No root check here in etcd: the root is a directory, so this is
        // 102 with the (trimmed, hence empty) root key as cause.
        if n.is_dir() {
            return Err(V2Error::new(NOT_FILE, key_of(&comps), self.index));
        }
        compare(n, &req.prev_value, req.prev_index, self.index)?;
        self.remove_with_event(&comps, V2Action::CompareAndDelete, req.time)
    }

    /// Removes the node at `comps` (with its subtree) as one event at the
    /// next index.
    fn remove_with_event(
        &mut self,
        comps: &[&str],
        action: V2Action,
        now: i64,
    ) -> Result<Done, V2Error> {
        let key = key_of(comps);
        let next = self.index.wrapping_add(1);
        let n = self.lookup(comps)?;
        let prev = n.repr(&key, false, now);
        let node = V2Node {
            key: key.clone(),
            dir: n.is_dir(),
            modified_index: next,
            created_index: n.created,
            ..Default::default()
        };
        let (parent, name) = match comps.split_last() {
            Some((name, parent)) => (parent, *name),
            None => return Err(V2Error::new(ROOT_READ_ONLY, "/", self.index)),
        };
        let Kind::Dir(children) = &mut self.lookup_mut(parent)?.kind else {
            return Err(broken());
        };
        let removed_node = children.remove(name).ok_or_else(broken)?;
        let mut gone = Vec::new();
        collect_subtree(&removed_node, key, &mut gone);
        let mut removed = Vec::with_capacity(gone.len());
        let mut changes = Vec::with_capacity(gone.len());
        for (k, expiration) in gone {
            if let Some(e) = expiration {
                self.ttls.remove(&(e, k.clone()));
            }
            changes.push((k.clone(), None));
            removed.push(k);
        }
        self.index = next;
        Ok(Done {
            event: V2Event {
                action,
                node: Some(node),
                prev_node: Some(prev),
                etcd_index: next,
                refresh: false,
            },
            changes,
            removed,
        })
    }

    /// `Sync`: every node expired at `now` goes, soonest first, each as an
    /// `expire` event at its own index.
    fn expire(&mut self, now: i64) -> ApplyOutcome {
        let mut changes = Vec::new();
        let mut expired = 0;
        while let Some((e, key)) = self.ttls.first().cloned() {
            if e > now {
                break;
            }
            let comps: Vec<&str> = key.split('/').filter(|c| !c.is_empty()).collect();
            let done = match self.lookup(&comps) {
                Ok(_) => self.remove_with_event(&comps, V2Action::Expire, now),
                Err(err) => Err(err),
            };
            let Ok(done) = done else {
                // A TTL entry without its node cannot happen; drop it
                // rather than loop on it.
                self.ttls.remove(&(e, key));
                continue;
            };
            expired += 1;
            bump(&self.stats.expire_count);
            changes.extend(done.changes);
            self.visible_index = self.index;
            self.hub.lock().publish(Arc::new(done.event), &done.removed);
        }
        ApplyOutcome {
            event: None,
            changes,
            index: self.index,
            expired,
        }
    }

    /// A request on the internal keyspace: etcd's v2 store operations as
    /// its v2 auth uses them (create with `prevExist=false`, update with
    /// `prevExist=true`, set, delete, quorum get), on a flat map. The event
    /// goes to the history as an internal one, so no watch matches it.
    fn apply_internal(&mut self, req: &V2Request) -> Result<ApplyOutcome, V2Error> {
        let cur = self.index;
        let key =
            internal_key(&req.path).map_err(|cause| V2Error::new(INVALID_FIELD, cause, cur))?;
        let shown = format!("/{key}");
        let existing = self.internal.get(&key).cloned();
        if req.op == V2Op::QGet {
            return self.internal_get(&key, &shown, existing);
        }
        let next = cur.wrapping_add(1);
        let record = |created: u64| NodeRecord {
            dir: req.dir,
            value: (!req.dir).then(|| req.value.clone()),
            created_index: created,
            modified_index: next,
            expiration: None,
        };
        let (action, new) = match (req.op, &existing) {
            (V2Op::Create, Some(_)) => return Err(V2Error::new(NODE_EXIST, shown, cur)),
            (V2Op::Create, None) => (V2Action::Create, Some(record(next))),
            (V2Op::Update, None) | (V2Op::Delete, None) => {
                return Err(V2Error::new(KEY_NOT_FOUND, shown, cur));
            }
            (V2Op::Update, Some(old)) => (V2Action::Update, Some(record(old.created_index))),
            (V2Op::Set, old) => (
                V2Action::Set,
                Some(record(old.as_ref().map_or(next, |o| o.created_index))),
            ),
            (V2Op::Delete, Some(_)) => (V2Action::Delete, None),
            _ => {
                return Err(V2Error::new(
                    INVALID_FIELD,
                    "operation not supported on the internal keyspace",
                    cur,
                ));
            }
        };
        let mut changes = Vec::new();
        match &new {
            Some(rec) => {
                self.internal.insert(key.clone(), rec.clone());
                changes.push((key.clone(), serde_json::to_vec(rec).ok()));
            }
            None => {
                let prefix = format!("{key}/");
                let below: Vec<String> = self
                    .internal
                    .range(prefix.clone()..)
                    .take_while(|(k, _)| k.starts_with(&prefix))
                    .map(|(k, _)| k.clone())
                    .collect();
                for k in below.into_iter().chain(std::iter::once(key.clone())) {
                    self.internal.remove(&k);
                    changes.push((k, None));
                }
            }
        }
        self.index = next;
        let mut node = match &new {
            Some(rec) => internal_node(&shown, rec),
            None => V2Node {
                key: shown.clone(),
                modified_index: next,
                ..Default::default()
            },
        };
        node.modified_index = next;
        let event = V2Event {
            action,
            node: Some(node),
            prev_node: existing.as_ref().map(|r| internal_node(&shown, r)),
            etcd_index: next,
            refresh: false,
        };
        self.hub.lock().record(Arc::new(V2Event::internal(next)));
        Ok(ApplyOutcome {
            event: Some(event),
            changes,
            index: next,
            expired: 0,
        })
    }

    /// A quorum get on the internal keyspace: the node, and a directory's
    /// children.
    fn internal_get(
        &self,
        key: &str,
        shown: &str,
        existing: Option<NodeRecord>,
    ) -> Result<ApplyOutcome, V2Error> {
        let cur = self.index;
        let Some(rec) = existing else {
            return Err(V2Error::new(KEY_NOT_FOUND, shown, cur));
        };
        let mut node = internal_node(shown, &rec);
        if rec.dir {
            node.nodes = self
                .internal_list(key)
                .into_iter()
                .filter_map(|(name, _)| {
                    let k = format!("{key}/{name}");
                    self.internal
                        .get(&k)
                        .map(|r| internal_node(&format!("/{k}"), r))
                })
                .collect();
        }
        let event = V2Event {
            action: V2Action::Get,
            node: Some(node),
            prev_node: None,
            etcd_index: cur,
            refresh: false,
        };
        Ok(ApplyOutcome {
            event: Some(event),
            changes: Vec::new(),
            index: cur,
            expired: 0,
        })
    }

    /// Every node as a persistence record (parents before children): what
    /// `load` needs to rebuild this store, e.g. for a snapshot.
    pub fn records(&self) -> Vec<(String, Vec<u8>)> {
        fn walk(children: &BTreeMap<String, Node>, key: &str, out: &mut Vec<(String, Vec<u8>)>) {
            for (name, n) in children {
                let k = child_key(key, name);
                out.push((k.clone(), n.record()));
                if let Kind::Dir(c) = &n.kind {
                    walk(c, &k, out);
                }
            }
        }
        let mut out = Vec::new();
        if let Kind::Dir(children) = &self.root.kind {
            walk(children, "", &mut out);
        }
        for (k, rec) in &self.internal {
            out.push((k.clone(), serde_json::to_vec(rec).unwrap_or_default()));
        }
        out
    }

    /// Replaces the whole keyspace with persisted records (any order) at
    /// store index `index`: at startup, and after a raft snapshot is
    /// installed. Waiting watchers are dropped and the history restarts
    /// empty, so a `waitIndex` at or below `index` then gets 401 instead of
    /// silently missing events. On error the store is unchanged.
    pub fn load<I>(&mut self, records: I, index: u64) -> Result<(), LoadError>
    where
        I: IntoIterator<Item = (String, Vec<u8>)>,
    {
        let err = |path: &str, reason: String| LoadError {
            path: path.to_string(),
            reason,
        };
        let mut recs = Vec::new();
        let mut internal = BTreeMap::new();
        for (path, bytes) in records {
            let rec: NodeRecord =
                serde_json::from_slice(&bytes).map_err(|e| err(&path, e.to_string()))?;
            // Internal keys are persisted without the leading '/'.
            if !path.starts_with('/') {
                let key = internal_key(&path).map_err(|reason| err(&path, reason))?;
                internal.insert(key, rec);
                continue;
            }
            let comps: Vec<String> = components(&path, 0)
                .map_err(|e| err(&path, e.cause))?
                .into_iter()
                .map(str::to_string)
                .collect();
            if comps.is_empty() {
                return Err(err(&path, "the root is not a record".into()));
            }
            recs.push((comps, rec, path));
        }
        recs.sort_by_key(|(comps, _, _)| comps.len());
        let mut root = Node::new_dir(0, None);
        let mut ttls = BTreeSet::new();
        for (comps, rec, path) in recs {
            let Some((name, parents)) = comps.split_last() else {
                continue;
            };
            let mut children = match &mut root.kind {
                Kind::Dir(m) => m,
                Kind::File(_) => return Err(err(&path, "root is not a directory".into())),
            };
            for p in parents {
                children = match children.get_mut(p).map(|n| &mut n.kind) {
                    Some(Kind::Dir(m)) => m,
                    Some(Kind::File(_)) => return Err(err(&path, "parent is a file".into())),
                    None => return Err(err(&path, "parent directory missing".into())),
                };
            }
            if children.contains_key(name) {
                return Err(err(&path, "duplicate record".into()));
            }
            let refs: Vec<&str> = comps.iter().map(String::as_str).collect();
            if let Some(e) = rec.expiration {
                ttls.insert((e, key_of(&refs)));
            }
            children.insert(
                name.clone(),
                Node {
                    created: rec.created_index,
                    modified: rec.modified_index,
                    expiration: rec.expiration,
                    kind: if rec.dir {
                        Kind::Dir(BTreeMap::new())
                    } else {
                        Kind::File(rec.value.unwrap_or_default())
                    },
                },
            );
        }
        self.root = root;
        self.ttls = ttls;
        self.internal = internal;
        self.index = index;
        self.visible_index = index;
        self.hub.lock().reset(index);
        Ok(())
    }
}

/// An internal keyspace path ("/2/users/alice", "2/users/alice/") as its
/// map key ("2/users/alice"): cleaned like client keys, never the root.
fn internal_key(path: &str) -> Result<String, String> {
    let comps = components(path, 0).map_err(|e| e.cause)?;
    if comps.is_empty() {
        return Err("the internal root is not a key".into());
    }
    Ok(comps.join("/"))
}

/// How an internal record shows in an event (the internal keyspace has no
/// TTLs).
fn internal_node(key: &str, rec: &NodeRecord) -> V2Node {
    V2Node {
        key: key.to_string(),
        value: if rec.dir { None } else { rec.value.clone() },
        dir: rec.dir,
        modified_index: rec.modified_index,
        created_index: rec.created_index,
        ..Default::default()
    }
}

/// (key, expiration) of a node and everything under it, children first.
fn collect_subtree(n: &Node, key: String, out: &mut Vec<(String, Option<i64>)>) {
    if let Kind::Dir(children) = &n.kind {
        for (name, c) in children {
            collect_subtree(c, child_key(&key, name), out);
        }
    }
    out.push((key, n.expiration));
}

/// etcd's compare: "" and 0 match anything; the cause names what differed.
fn compare(n: &Node, prev_value: &str, prev_index: u64, index: u64) -> Result<(), V2Error> {
    let value = n.value();
    let index_ok = prev_index == 0 || n.modified == prev_index;
    let value_ok = prev_value.is_empty() || value == prev_value;
    let cause = match (value_ok, index_ok) {
        (true, true) => return Ok(()),
        (false, true) => format!("[{prev_value} != {value}]"),
        (true, false) => format!("[{prev_index} != {}]", n.modified),
        (false, false) => format!("[{prev_value} != {value}] [{prev_index} != {}]", n.modified),
    };
    Err(V2Error::new(TEST_FAILED, cause, index))
}

fn broken() -> V2Error {
    V2Error::raft_internal("v2 store: inconsistent tree")
}
