//! `--experimental-enable-v2v3 <prefix>`: `/v2/keys` kept in v3 keys under
//! a prefix instead of in the v2 store, laid out exactly as etcd 3.4 lays
//! it out, so either server can take over the other's data:
//!
//! - the v2 key `/a/b` is the store path `/1/a/b` (`/1` is where etcd's v2
//!   store keeps client keys), kept as the v3 key `<prefix>/002/k//1/a/b`:
//!   the number is the path's depth (its `/`s, three digits), so the
//!   children of a directory are one v3 prefix and a listing is one range
//!   per level;
//! - a directory is the same key with a `/` appended and an empty value;
//! - every write also puts its action (`set`, `create`, …) in
//!   `<prefix>/act` in the same txn, which tells a watcher what a revision
//!   did;
//! - a v2 index is the v3 revision minus one.
//!
//! A write reads every key its outcome depends on, then commits a txn that
//! compares their mod revisions (what etcd's serializable STM does), and
//! reads again if someone got there first. Each write is one revision;
//! every write goes through the KV path like a client's (auth, quota,
//! policy plugins).
//!
//! The answers are the v2 store's (same codes, causes and events: see
//! `v2::store`), including where etcd's own emulation differs from its v2
//! API; docs/compatibility.md lists those places. TTLs are refused with
//! etcd's error, as etcd's emulation has nowhere to keep them.

use crate::etcdserver::watch::{HubMsg, WatchSpec, hub_channel};
use crate::etcdserver::{EtcdServer, RequestCtx};
use crate::pb::etcdserverpb::compare::{CompareResult, CompareTarget, TargetUnion};
use crate::pb::etcdserverpb::request_op::Request as Op;
use crate::pb::etcdserverpb::response_op::Response as OpResponse;
use crate::pb::etcdserverpb::{
    Compare, DeleteRangeRequest, PutRequest, RangeRequest, RequestOp, TxnRequest,
};
use crate::pb::mvccpb::event::EventType;
use crate::pb::mvccpb::{Event, KeyValue};
use crate::storage::mvcc::index::KeyRange;
use crate::v2::error::*;
use crate::v2::{V2Action, V2Error, V2Event, V2Keys, V2KeysWatch, V2Node, V2Op, V2Request};
use bytes::Bytes;
use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

/// etcd's `maxPathDepth`: the deepest store path (`/1` counts as one
/// level). A recursive delete must reach every level, so nothing deeper is
/// written.
const MAX_STORE_DEPTH: usize = 63;
/// A write whose reads keep changing under it gives up after this many
/// tries (each try is a read and a txn).
const MAX_ATTEMPTS: usize = 32;
/// Nodes one GET lists at most: the v2 store lists from memory, this reads
/// them from the MVCC store into one response.
pub const MAX_LISTED_NODES: usize = 100_000;
/// A watch's queue from the hub (messages, bytes): one-shot watches need
/// one event; a stream whose client falls this far behind is cut, as the
/// v2 store cuts a slow watcher.
const WATCH_QUEUE_MESSAGES: usize = 64;
const WATCH_QUEUE_BYTES: usize = 4 << 20;
/// etcd's error for a TTL in this mode.
const TTL_UNSUPPORTED: &str = "TTLs are unsupported";

pub struct V3Keyspace {
    srv: Arc<EtcdServer>,
    layout: Layout,
}

/// etcd's v2v3 key layout under one prefix (see the module doc).
struct Layout {
    prefix: String,
}

fn v2_index(rev: i64) -> u64 {
    if rev <= 0 { 0 } else { (rev - 1) as u64 }
}

/// The key's components, cleaned like the v2 store's: empty and `.` parts
/// vanish, `..` climbs but never above the root.
fn components(path: &str, index: u64) -> Result<Vec<String>, V2Error> {
    let mut out: Vec<String> = Vec::new();
    for c in path.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                out.pop();
            }
            c => out.push(c.to_string()),
        }
    }
    // The store path has one more level (`/1`).
    if out.len() + 1 > MAX_STORE_DEPTH {
        return Err(V2Error::new(
            INVALID_FIELD,
            format!("key has more than {} path components", MAX_STORE_DEPTH - 1),
            index,
        ));
    }
    Ok(out)
}

/// "/a/b" for `[a, b]`, "" for the root (shown without a key).
fn key_of(comps: &[String]) -> String {
    let mut s = String::new();
    for c in comps {
        s.push('/');
        s.push_str(c);
    }
    s
}

/// The key of the first `n` components (all of them if there are fewer).
fn key_of_first(comps: &[String], n: usize) -> String {
    key_of(comps.get(..n).unwrap_or(comps))
}

fn store_path(comps: &[String]) -> String {
    format!("/1{}", key_of(comps))
}

/// What a path's lookup found.
enum Found {
    Root,
    Dir(KeyValue),
    File(KeyValue),
}

/// A path's keys as read at one revision: for each prefix of the path, its
/// file key and its directory key.
struct PathRead {
    levels: Vec<(Option<KeyValue>, Option<KeyValue>)>,
    /// Every key read and what it held, for the txn's compares.
    reads: Vec<(Bytes, Option<KeyValue>)>,
    rev: i64,
}

impl PathRead {
    fn index(&self) -> u64 {
        v2_index(self.rev)
    }

    /// The v2 store's lookup: a file on the way is 104 (naming the file),
    /// a missing node 100 (naming the first missing one).
    fn lookup(&self, comps: &[String]) -> Result<Found, V2Error> {
        let mut found = Found::Root;
        for (i, (file, dir)) in self.levels.iter().enumerate() {
            if let Found::File(_) = found {
                return Err(V2Error::new(NOT_DIR, key_of_first(comps, i), self.index()));
            }
            found = match (dir, file) {
                (Some(d), _) => Found::Dir(d.clone()),
                (None, Some(f)) => Found::File(f.clone()),
                (None, None) => {
                    return Err(V2Error::new(
                        KEY_NOT_FOUND,
                        key_of_first(comps, i + 1),
                        self.index(),
                    ));
                }
            };
        }
        Ok(found)
    }

    /// Before creating the last component: a file among the parents is 104;
    /// missing parents are returned (as their indexes) to be created.
    fn missing_parents(&self, comps: &[String]) -> Result<Vec<usize>, V2Error> {
        let mut missing = Vec::new();
        let parents = self.levels.len().saturating_sub(1);
        for (i, (file, dir)) in self.levels.iter().take(parents).enumerate() {
            match (dir, file) {
                (Some(_), _) => {}
                (None, Some(_)) => {
                    return Err(V2Error::new(
                        NOT_DIR,
                        key_of_first(comps, i + 1),
                        self.index(),
                    ));
                }
                (None, None) => missing.push(i),
            }
        }
        Ok(missing)
    }

    fn last(&self) -> (Option<&KeyValue>, Option<&KeyValue>) {
        self.levels
            .last()
            .map_or((None, None), |(f, d)| (f.as_ref(), d.as_ref()))
    }
}

/// A planned write: its ops (the action key is added on commit) and the
/// event it answers with, whose new indexes are filled in on commit.
struct Plan {
    ops: Vec<RequestOp>,
    /// Extra compares beyond the reads (e.g. "this directory has no
    /// children").
    guards: Vec<Compare>,
    event: V2Event,
    /// The node is new: its createdIndex is the write's.
    created_now: bool,
}

fn put(key: String, value: impl Into<Bytes>) -> RequestOp {
    RequestOp {
        request: Some(Op::RequestPut(PutRequest {
            key: key.into(),
            value: value.into(),
            ..Default::default()
        })),
    }
}

fn delete(key: String, range_end: Bytes) -> RequestOp {
    RequestOp {
        request: Some(Op::RequestDeleteRange(DeleteRangeRequest {
            key: key.into(),
            range_end,
            ..Default::default()
        })),
    }
}

fn range_op(key: Bytes) -> RequestOp {
    RequestOp {
        request: Some(Op::RequestRange(RangeRequest {
            key,
            ..Default::default()
        })),
    }
}

/// The compare that holds while `key` still holds `seen`.
fn unchanged(key: &Bytes, seen: &Option<KeyValue>) -> Compare {
    let (target, union) = match seen {
        Some(kv) => (
            CompareTarget::Mod,
            TargetUnion::ModRevision(kv.mod_revision),
        ),
        None => (CompareTarget::Create, TargetUnion::CreateRevision(0)),
    };
    Compare {
        result: CompareResult::Equal as i32,
        target: target as i32,
        key: key.clone(),
        target_union: Some(union),
        range_end: Bytes::new(),
    }
}

/// The compare that holds while no key lies in `[key, range_end)`.
fn empty_range(key: String, range_end: Bytes) -> Compare {
    Compare {
        result: CompareResult::Equal as i32,
        target: CompareTarget::Version as i32,
        key: key.into(),
        target_union: Some(TargetUnion::Version(0)),
        range_end,
    }
}

/// The v2 store's compare: "" and 0 match anything; the cause names what
/// differed.
fn compare(kv: &KeyValue, prev_value: &str, prev_index: u64, index: u64) -> Result<(), V2Error> {
    let value = String::from_utf8_lossy(&kv.value);
    let modified = v2_index(kv.mod_revision);
    let index_ok = prev_index == 0 || modified == prev_index;
    let value_ok = prev_value.is_empty() || value == prev_value;
    let cause = match (value_ok, index_ok) {
        (true, true) => return Ok(()),
        (false, true) => format!("[{prev_value} != {value}]"),
        (true, false) => format!("[{prev_index} != {modified}]"),
        (false, false) => format!("[{prev_value} != {value}] [{prev_index} != {modified}]"),
    };
    Err(V2Error::new(TEST_FAILED, cause, index))
}

fn parse_action(s: &[u8]) -> Option<V2Action> {
    Some(match s {
        b"get" => V2Action::Get,
        b"set" => V2Action::Set,
        b"create" => V2Action::Create,
        b"update" => V2Action::Update,
        b"delete" => V2Action::Delete,
        b"compareAndSwap" => V2Action::CompareAndSwap,
        b"compareAndDelete" => V2Action::CompareAndDelete,
        b"expire" => V2Action::Expire,
        _ => return None,
    })
}

impl V3Keyspace {
    pub fn new(srv: Arc<EtcdServer>, prefix: String) -> V3Keyspace {
        V3Keyspace {
            srv,
            layout: Layout { prefix },
        }
    }
}

impl Layout {
    /// `<prefix>/<depth + extra>/k/<store path>`.
    fn v3_key(&self, store_path: &str, extra_depth: usize) -> String {
        let depth = store_path.matches('/').count() + extra_depth;
        format!("{}/{depth:03}/k/{store_path}", self.prefix)
    }

    fn file_key(&self, comps: &[String]) -> String {
        self.v3_key(&store_path(comps), 0)
    }

    fn dir_key(&self, comps: &[String]) -> String {
        self.v3_key(&store_path(comps), 0) + "/"
    }

    /// The keys of everything `level` levels below the directory: one
    /// range, `[prefix, prefix_end)`.
    fn level_prefix(&self, comps: &[String], level: usize) -> String {
        self.v3_key(&store_path(comps), level) + "/"
    }

    fn action_key(&self) -> String {
        format!("{}/act", self.prefix)
    }

    /// The client key's components and whether it is a directory, for a
    /// v3 key in this layout; `None` for anything else under the prefix
    /// (the action key, etcd's internal `/0` and `/2` paths, foreign keys).
    fn decode(&self, key: &[u8]) -> Option<(Vec<String>, bool)> {
        let rest = key.strip_prefix(self.prefix.as_bytes())?;
        // "/NNN/k/"
        let (head, rest) = rest.split_at_checked(7)?;
        let [b'/', d1, d2, d3, b'/', b'k', b'/'] = head else {
            return None;
        };
        if ![d1, d2, d3].iter().all(|d| d.is_ascii_digit()) {
            return None;
        }
        let path = std::str::from_utf8(rest).ok()?;
        let path = path.strip_prefix("/1/")?;
        let dir = path.ends_with('/');
        let comps: Vec<String> = path
            .split('/')
            .filter(|c| !c.is_empty())
            .map(str::to_string)
            .collect();
        (!comps.is_empty()).then_some((comps, dir))
    }

    fn node_of(&self, kv: &KeyValue) -> Option<V2Node> {
        let (comps, dir) = self.decode(&kv.key)?;
        Some(V2Node {
            key: key_of(&comps),
            value: (!dir).then(|| String::from_utf8_lossy(&kv.value).into_owned()),
            dir,
            created_index: v2_index(kv.create_revision),
            modified_index: v2_index(kv.mod_revision),
            ..Default::default()
        })
    }

    /// The v2 event of one revision's v3 events: `None` unless the revision
    /// was a v2 write (it carries the action key).
    fn revision_event(&self, group: &[Event]) -> Option<V2Event> {
        let action_key = self.action_key();
        let act = group.iter().find_map(|e| {
            let kv = e.kv.as_ref()?;
            (kv.key.as_ref() == action_key.as_bytes()).then(|| parse_action(&kv.value))?
        })?;
        let removes = matches!(
            act,
            V2Action::Delete | V2Action::CompareAndDelete | V2Action::Expire
        );
        // The node written: the deepest put (parents a create added are
        // shallower), or for a removal the shallowest delete (the subtree
        // below it went with it).
        let mut best: Option<(&Event, usize, bool)> = None;
        for e in group {
            let Some(kv) = e.kv.as_ref() else { continue };
            let Some((comps, _)) = self.decode(&kv.key) else {
                continue;
            };
            let is_put = e.r#type == EventType::Put as i32;
            let better = match best {
                None => true,
                Some((_, depth, was_put)) if removes => {
                    comps.len() < depth || (comps.len() == depth && !is_put && was_put)
                }
                Some((_, depth, was_put)) => {
                    comps.len() > depth || (comps.len() == depth && is_put && !was_put)
                }
            };
            if better {
                best = Some((e, comps.len(), is_put));
            }
        }
        let (e, _, is_put) = best?;
        let kv = e.kv.as_ref()?;
        let index = v2_index(kv.mod_revision);
        let prev = e.prev_kv.as_ref().and_then(|p| self.node_of(p));
        let node = if is_put {
            self.node_of(kv)?
        } else {
            let (comps, dir) = self.decode(&kv.key)?;
            V2Node {
                key: key_of(&comps),
                dir,
                created_index: prev.as_ref().map_or(0, |p| p.created_index),
                modified_index: index,
                ..Default::default()
            }
        };
        Some(V2Event {
            action: act,
            node: Some(node),
            prev_node: prev,
            etcd_index: index,
            refresh: false,
        })
    }
}

impl V3Keyspace {
    fn error(e: crate::error::Error) -> V2Error {
        crate::policy::v2_error(e)
    }

    /// Reads `keys` at one (linearizable) revision.
    async fn read(
        &self,
        ctx: &RequestCtx,
        keys: Vec<Bytes>,
    ) -> Result<(Vec<(Bytes, Option<KeyValue>)>, i64), V2Error> {
        let txn = TxnRequest {
            compare: Vec::new(),
            success: keys.iter().cloned().map(range_op).collect(),
            failure: Vec::new(),
        };
        let resp = self.srv.txn(ctx, txn).await.map_err(Self::error)?;
        let rev = resp.header.as_ref().map_or(0, |h| h.revision);
        let mut out = Vec::with_capacity(keys.len());
        for (key, r) in keys.into_iter().zip(resp.responses) {
            let kv = match r.response {
                Some(OpResponse::ResponseRange(rr)) => rr.kvs.into_iter().next(),
                _ => None,
            };
            out.push((key, kv));
        }
        Ok((out, rev))
    }

    async fn read_path(&self, ctx: &RequestCtx, comps: &[String]) -> Result<PathRead, V2Error> {
        let mut keys = Vec::with_capacity(comps.len() * 2);
        for path in (1..=comps.len()).filter_map(|n| comps.get(..n)) {
            keys.push(Bytes::from(self.layout.file_key(path)));
            keys.push(Bytes::from(self.layout.dir_key(path)));
        }
        let (reads, rev) = self.read(ctx, keys).await?;
        let levels = reads
            .chunks(2)
            .map(|pair| match pair {
                [(_, f), (_, d)] => (f.clone(), d.clone()),
                _ => (None, None),
            })
            .collect();
        Ok(PathRead { levels, reads, rev })
    }

    /// Whether anything lies `level` levels below the directory, at `rev`.
    async fn has_level(
        &self,
        ctx: &RequestCtx,
        comps: &[String],
        level: usize,
        rev: i64,
    ) -> Result<bool, V2Error> {
        let prefix = self.layout.level_prefix(comps, level);
        let end = crate::state::prefix_end(prefix.as_bytes());
        let resp = self
            .srv
            .range(
                ctx,
                RangeRequest {
                    key: prefix.into(),
                    range_end: end,
                    revision: rev,
                    serializable: true,
                    count_only: true,
                    ..Default::default()
                },
            )
            .await
            .map_err(Self::error)?;
        Ok(resp.count > 0)
    }

    /// Commits `plan` if nothing it read changed; `None`: something did.
    async fn commit(
        &self,
        ctx: &RequestCtx,
        reads: &[(Bytes, Option<KeyValue>)],
        action: V2Action,
        mut plan: Plan,
    ) -> Result<Option<V2Event>, V2Error> {
        let mut compare: Vec<Compare> = reads.iter().map(|(k, v)| unchanged(k, v)).collect();
        compare.append(&mut plan.guards);
        plan.ops
            .push(put(self.layout.action_key(), action.as_str()));
        let txn = TxnRequest {
            compare,
            success: plan.ops,
            failure: Vec::new(),
        };
        let resp = self.srv.txn(ctx, txn).await.map_err(Self::error)?;
        if !resp.succeeded {
            return Ok(None);
        }
        let index = v2_index(resp.header.as_ref().map_or(0, |h| h.revision));
        let mut ev = plan.event;
        ev.etcd_index = index;
        if let Some(n) = ev.node.as_mut() {
            n.modified_index = index;
            if plan.created_now {
                n.created_index = index;
            }
        }
        Ok(Some(ev))
    }

    /// Plans against fresh reads and commits, until a commit holds.
    async fn write_loop<F>(
        &self,
        ctx: &RequestCtx,
        comps: &[String],
        action: V2Action,
        plan: F,
    ) -> Result<V2Event, V2Error>
    where
        F: Fn(&[String], &PathRead) -> Result<Plan, V2Error>,
    {
        self.write_loop_async(
            ctx,
            |_| comps.to_vec(),
            false,
            action,
            |comps, read| {
                let p = plan(&comps, &read).map(Some);
                async move { p }
            },
        )
        .await
    }

    /// The general form: `comps_of` gets, when `by_revision`, the
    /// cluster's revision read just before (linearizably, so a name derived
    /// from it is above every name committed before); `plan` may ask for
    /// another try with `None` (what it wanted to create appeared).
    async fn write_loop_async<F, Fut>(
        &self,
        ctx: &RequestCtx,
        comps_of: impl Fn(i64) -> Vec<String>,
        by_revision: bool,
        action: V2Action,
        plan: F,
    ) -> Result<V2Event, V2Error>
    where
        F: Fn(Vec<String>, PathRead) -> Fut,
        Fut: std::future::Future<Output = Result<Option<Plan>, V2Error>>,
    {
        for _ in 0..MAX_ATTEMPTS {
            let rev = if by_revision {
                self.read(ctx, Vec::new()).await?.1
            } else {
                0
            };
            let comps = comps_of(rev);
            let read = self.read_path(ctx, &comps).await?;
            let reads = read.reads.clone();
            let Some(p) = plan(comps, read).await? else {
                continue;
            };
            if let Some(ev) = self.commit(ctx, &reads, action, p).await? {
                return Ok(ev);
            }
        }
        Err(V2Error::raft_internal(
            "etcdserver: v2v3 write kept conflicting with other writes; try again",
        ))
    }

    /// The children (and, `recursive`, all descendants) of a directory at
    /// `rev`, sorted by name, hidden ones left out.
    async fn list(
        &self,
        ctx: &RequestCtx,
        comps: &[String],
        recursive: bool,
        rev: i64,
    ) -> Result<Vec<V2Node>, V2Error> {
        let max_levels = MAX_STORE_DEPTH - comps.len() - 1;
        let deepest = if recursive { max_levels } else { 1 };
        // Nodes per level, each keyed by its client key.
        let mut levels: Vec<Vec<V2Node>> = Vec::new();
        let mut total = 0usize;
        for level in 1..=deepest {
            let prefix = self.layout.level_prefix(comps, level);
            let end = crate::state::prefix_end(prefix.as_bytes());
            let resp = self
                .srv
                .range(
                    ctx,
                    RangeRequest {
                        key: prefix.into(),
                        range_end: end,
                        revision: rev,
                        serializable: true,
                        limit: (MAX_LISTED_NODES - total + 1) as i64,
                        ..Default::default()
                    },
                )
                .await
                .map_err(Self::error)?;
            if resp.kvs.is_empty() {
                break;
            }
            total += resp.kvs.len();
            if total > MAX_LISTED_NODES {
                return Err(V2Error::raft_internal(format!(
                    "etcdserver: the listing has more than {MAX_LISTED_NODES} nodes; list a smaller directory"
                )));
            }
            let mut nodes: Vec<V2Node> = resp
                .kvs
                .iter()
                .filter_map(|kv| {
                    let (c, _) = self.layout.decode(&kv.key)?;
                    // Hidden below the listed directory: left out with
                    // their subtrees.
                    let below = c.get(comps.len()..).unwrap_or_default();
                    if below.iter().any(|p| p.starts_with('_')) {
                        return None;
                    }
                    self.layout.node_of(kv)
                })
                .collect();
            nodes.sort_by(|a, b| a.key.cmp(&b.key));
            levels.push(nodes);
        }
        // Hang each level under its parents, deepest first.
        while levels.len() > 1 {
            let Some(children) = levels.pop() else { break };
            let Some(parents) = levels.last_mut() else {
                break;
            };
            let at: HashMap<String, usize> = parents
                .iter()
                .enumerate()
                .filter(|(_, n)| n.dir)
                .map(|(i, n)| (n.key.clone(), i))
                .collect();
            for child in children {
                let parent = child.key.rsplit_once('/').map_or("", |(p, _)| p);
                // A key whose parent directory is missing (written by a v3
                // client) is not shown, as the v2 tree could not hold it.
                if let Some(p) = at.get(parent).and_then(|&i| parents.get_mut(i)) {
                    p.nodes.push(child);
                }
            }
        }
        Ok(levels.pop().unwrap_or_default())
    }

    async fn set(&self, ctx: &RequestCtx, req: &V2Request) -> Result<V2Event, V2Error> {
        let comps = components(&req.path, self.index())?;
        if comps.is_empty() {
            return Err(V2Error::new(ROOT_READ_ONLY, "/", self.index()));
        }
        self.write_loop(ctx, &comps, V2Action::Set, |comps, read| {
            let key = key_of(comps);
            let missing = read.missing_parents(comps)?;
            let (file, dir) = read.last();
            if dir.is_some() {
                return Err(V2Error::new(NOT_FILE, key, read.index()));
            }
            let mut ops: Vec<RequestOp> = missing
                .iter()
                .filter_map(|&i| comps.get(..=i))
                .map(|path| put(self.layout.dir_key(path), ""))
                .collect();
            let prev = file.and_then(|f| self.layout.node_of(f));
            let mut node = V2Node {
                key,
                dir: req.dir,
                ..Default::default()
            };
            // A file replaced in place keeps its v3 creation revision, so
            // its createdIndex stays (as in etcd's emulation).
            let created_now = if req.dir {
                if file.is_some() {
                    ops.push(delete(self.layout.file_key(comps), Bytes::new()));
                }
                ops.push(put(self.layout.dir_key(comps), ""));
                true
            } else {
                ops.push(put(self.layout.file_key(comps), req.value.clone()));
                node.value = Some(req.value.clone());
                match file {
                    Some(f) => {
                        node.created_index = v2_index(f.create_revision);
                        false
                    }
                    None => true,
                }
            };
            Ok(Plan {
                ops,
                guards: Vec::new(),
                event: V2Event {
                    action: V2Action::Set,
                    node: Some(node),
                    prev_node: prev,
                    etcd_index: 0,
                    refresh: false,
                },
                created_now,
            })
        })
        .await
    }

    async fn create(
        &self,
        ctx: &RequestCtx,
        req: &V2Request,
        in_order: bool,
    ) -> Result<V2Event, V2Error> {
        let base = components(&req.path, self.index())?;
        if in_order {
            // The name is one more level.
            components(&format!("{}/x", req.path), self.index())?;
        } else if base.is_empty() {
            return Err(V2Error::new(ROOT_READ_ONLY, "/", self.index()));
        }
        let comps_of = |rev: i64| {
            let mut c = base.clone();
            if in_order {
                // The v2 store names it by the new index; uncontended, the
                // write lands at revision `rev + 1`, which is index `rev`.
                c.push(format!("{:020}", rev.max(0)));
            }
            c
        };
        self.write_loop_async(
            ctx,
            comps_of,
            in_order,
            V2Action::Create,
            |comps, read| async move {
                let key = key_of(&comps);
                let missing = read.missing_parents(&comps)?;
                let (file, dir) = read.last();
                if file.is_some() || dir.is_some() {
                    if in_order {
                        // Another writer took this name first: name it again.
                        return Ok(None);
                    }
                    return Err(V2Error::new(NODE_EXIST, key, read.index()));
                }
                let mut ops: Vec<RequestOp> = missing
                    .iter()
                    .filter_map(|&i| comps.get(..=i))
                    .map(|path| put(self.layout.dir_key(path), ""))
                    .collect();
                let node = if req.dir {
                    ops.push(put(self.layout.dir_key(&comps), ""));
                    V2Node {
                        key,
                        dir: true,
                        ..Default::default()
                    }
                } else {
                    ops.push(put(self.layout.file_key(&comps), req.value.clone()));
                    V2Node {
                        key,
                        value: Some(req.value.clone()),
                        ..Default::default()
                    }
                };
                Ok(Some(Plan {
                    ops,
                    guards: Vec::new(),
                    event: V2Event {
                        action: V2Action::Create,
                        node: Some(node),
                        prev_node: None,
                        etcd_index: 0,
                        refresh: false,
                    },
                    created_now: true,
                }))
            },
        )
        .await
    }

    async fn update(&self, ctx: &RequestCtx, req: &V2Request) -> Result<V2Event, V2Error> {
        let comps = components(&req.path, self.index())?;
        if comps.is_empty() {
            return Err(V2Error::new(ROOT_READ_ONLY, "/", self.index()));
        }
        self.write_loop(ctx, &comps, V2Action::Update, |comps, read| {
            let key = key_of(comps);
            let (ops, node, prev) = match read.lookup(comps)? {
                Found::Root => return Err(V2Error::new(ROOT_READ_ONLY, "/", read.index())),
                Found::Dir(d) => {
                    if !req.value.is_empty() {
                        return Err(V2Error::new(NOT_FILE, key, read.index()));
                    }
                    // Only a TTL could change on a directory; without one
                    // the write just takes an index, as in the v2 store.
                    let prev = self.layout.node_of(&d);
                    (Vec::new(), prev.clone(), prev)
                }
                Found::File(f) => {
                    let prev = self.layout.node_of(&f);
                    let node = V2Node {
                        key,
                        value: Some(req.value.clone()),
                        created_index: v2_index(f.create_revision),
                        ..Default::default()
                    };
                    (
                        vec![put(self.layout.file_key(comps), req.value.clone())],
                        Some(node),
                        prev,
                    )
                }
            };
            Ok(Plan {
                ops,
                guards: Vec::new(),
                event: V2Event {
                    action: V2Action::Update,
                    node,
                    prev_node: prev,
                    etcd_index: 0,
                    refresh: false,
                },
                created_now: false,
            })
        })
        .await
    }

    async fn compare_and_swap(
        &self,
        ctx: &RequestCtx,
        req: &V2Request,
    ) -> Result<V2Event, V2Error> {
        let comps = components(&req.path, self.index())?;
        if comps.is_empty() {
            return Err(V2Error::new(ROOT_READ_ONLY, "/", self.index()));
        }
        self.write_loop(ctx, &comps, V2Action::CompareAndSwap, |comps, read| {
            let key = key_of(comps);
            let f = match read.lookup(comps)? {
                Found::File(f) => f,
                Found::Dir(_) | Found::Root => {
                    return Err(V2Error::new(NOT_FILE, key, read.index()));
                }
            };
            compare(&f, &req.prev_value, req.prev_index, read.index())?;
            let node = V2Node {
                key,
                value: Some(req.value.clone()),
                created_index: v2_index(f.create_revision),
                ..Default::default()
            };
            Ok(Plan {
                ops: vec![put(self.layout.file_key(comps), req.value.clone())],
                guards: Vec::new(),
                event: V2Event {
                    action: V2Action::CompareAndSwap,
                    node: Some(node),
                    prev_node: self.layout.node_of(&f),
                    etcd_index: 0,
                    refresh: false,
                },
                created_now: false,
            })
        })
        .await
    }

    async fn compare_and_delete(
        &self,
        ctx: &RequestCtx,
        req: &V2Request,
    ) -> Result<V2Event, V2Error> {
        let comps = components(&req.path, self.index())?;
        self.write_loop(ctx, &comps, V2Action::CompareAndDelete, |comps, read| {
            let key = key_of(comps);
            let f = match read.lookup(comps)? {
                Found::File(f) => f,
                // No root check in the v2 store either: the root is a
                // directory, so 102 with the root's empty key.
                Found::Dir(_) | Found::Root => {
                    return Err(V2Error::new(NOT_FILE, key, read.index()));
                }
            };
            compare(&f, &req.prev_value, req.prev_index, read.index())?;
            Ok(Plan {
                ops: vec![delete(self.layout.file_key(comps), Bytes::new())],
                guards: Vec::new(),
                event: V2Event {
                    action: V2Action::CompareAndDelete,
                    node: Some(V2Node {
                        key,
                        created_index: v2_index(f.create_revision),
                        ..Default::default()
                    }),
                    prev_node: self.layout.node_of(&f),
                    etcd_index: 0,
                    refresh: false,
                },
                created_now: false,
            })
        })
        .await
    }

    async fn delete(&self, ctx: &RequestCtx, req: &V2Request) -> Result<V2Event, V2Error> {
        let comps = components(&req.path, self.index())?;
        if comps.is_empty() {
            return Err(V2Error::new(ROOT_READ_ONLY, "/", self.index()));
        }
        // `recursive` implies `dir`.
        let dir_ok = req.dir || req.recursive;
        let recursive = req.recursive;
        self.write_loop_async(
            ctx,
            |_| comps.clone(),
            false,
            V2Action::Delete,
            |comps, read| async move {
                let key = key_of(&comps);
                let (kv, is_dir) = match read.lookup(&comps)? {
                    Found::Root => return Err(V2Error::new(ROOT_READ_ONLY, "/", read.index())),
                    Found::File(f) => (f, false),
                    Found::Dir(d) => (d, true),
                };
                let mut ops = Vec::new();
                let mut guards = Vec::new();
                if is_dir {
                    if !dir_ok {
                        return Err(V2Error::new(NOT_FILE, key, read.index()));
                    }
                    // Every level down to the deepest present, then a guard
                    // that nothing appeared one level further.
                    let deepest = MAX_STORE_DEPTH - comps.len() - 1;
                    let mut level = 1;
                    while level <= deepest && self.has_level(ctx, &comps, level, read.rev).await? {
                        if !recursive {
                            return Err(V2Error::new(DIR_NOT_EMPTY, key, read.index()));
                        }
                        let prefix = self.layout.level_prefix(&comps, level);
                        let end = crate::state::prefix_end(prefix.as_bytes());
                        ops.push(delete(prefix, end));
                        level += 1;
                    }
                    if level <= deepest {
                        let prefix = self.layout.level_prefix(&comps, level);
                        let end = crate::state::prefix_end(prefix.as_bytes());
                        guards.push(empty_range(prefix, end));
                    }
                    ops.push(delete(self.layout.dir_key(&comps), Bytes::new()));
                } else {
                    ops.push(delete(self.layout.file_key(&comps), Bytes::new()));
                }
                Ok(Some(Plan {
                    ops,
                    guards,
                    event: V2Event {
                        action: V2Action::Delete,
                        node: Some(V2Node {
                            key,
                            dir: is_dir,
                            created_index: v2_index(kv.create_revision),
                            ..Default::default()
                        }),
                        prev_node: self.layout.node_of(&kv),
                        etcd_index: 0,
                        refresh: false,
                    },
                    created_now: false,
                }))
            },
        )
        .await
    }
}

/// A v2 watch over the hub: v3 events in, the v2 events it hears out.
struct WatchState {
    rx: crate::etcdserver::watch::HubReceiver,
    _guard: HubGuard,
    pending: VecDeque<V2Event>,
    space: Layout,
    key: String,
    recursive: bool,
}

impl WatchState {
    async fn next(&mut self) -> Option<V2Event> {
        loop {
            if let Some(ev) = self.pending.pop_front() {
                return Some(ev);
            }
            match self.rx.recv().await.map(|(m, _)| m) {
                Some(HubMsg::Events { events, .. }) => {
                    for group in events.chunk_by(|a, b| {
                        a.kv.as_ref().map(|k| k.mod_revision)
                            == b.kv.as_ref().map(|k| k.mod_revision)
                    }) {
                        if let Some(ev) = self.space.revision_event(group)
                            && crate::v2::watch::hears(&ev, &self.key, self.recursive)
                        {
                            self.pending.push_back(ev);
                        }
                    }
                }
                Some(HubMsg::Progress { .. }) => {}
                // Compacted past it, or the hub let it go: the response
                // ends and the client watches again.
                Some(HubMsg::Compacted { .. }) | None => return None,
            }
        }
    }
}

/// Removes the hub watcher however the watch ends (the client going away
/// drops the response body, and with it this).
struct HubGuard {
    srv: Arc<EtcdServer>,
    handle: u64,
}

impl Drop for HubGuard {
    fn drop(&mut self) {
        self.srv.hub().remove(self.handle);
    }
}

#[async_trait::async_trait]
impl V2Keys for V3Keyspace {
    async fn get(
        &self,
        ext: &::http::Extensions,
        path: &str,
        recursive: bool,
        _sorted: bool,
    ) -> Result<V2Event, V2Error> {
        let ctx = super::ctx_from(&self.srv, ext);
        let comps = components(path, self.index())?;
        let read = self.read_path(&ctx, &comps).await?;
        let found = read.lookup(&comps)?;
        let mut node = match &found {
            Found::Root => V2Node {
                dir: true,
                ..Default::default()
            },
            Found::Dir(kv) | Found::File(kv) => self.layout.node_of(kv).unwrap_or_default(),
        };
        if node.dir {
            node.nodes = self.list(&ctx, &comps, recursive, read.rev).await?;
        }
        Ok(V2Event {
            action: V2Action::Get,
            node: Some(node),
            prev_node: None,
            etcd_index: read.index(),
            refresh: false,
        })
    }

    async fn write(&self, ext: &::http::Extensions, req: V2Request) -> Result<V2Event, V2Error> {
        if req.expiration.is_some() || req.refresh {
            return Err(V2Error::raft_internal(TTL_UNSUPPORTED));
        }
        let ctx = &super::ctx_from(&self.srv, ext);
        match req.op {
            V2Op::Set => self.set(ctx, &req).await,
            V2Op::Create => self.create(ctx, &req, false).await,
            V2Op::CreateInOrder => self.create(ctx, &req, true).await,
            V2Op::Update => self.update(ctx, &req).await,
            V2Op::CompareAndSwap => self.compare_and_swap(ctx, &req).await,
            V2Op::Delete => self.delete(ctx, &req).await,
            V2Op::CompareAndDelete => self.compare_and_delete(ctx, &req).await,
            V2Op::QGet => self.get(ext, &req.path, req.recursive, req.sorted).await,
            // The TTL sweep: the v2 store's alone (this keyspace keeps no
            // TTLs), never sent by the HTTP layer.
            V2Op::Sync => Err(V2Error::raft_internal(
                "etcdserver: sync is not a client request",
            )),
        }
    }

    async fn watch(
        &self,
        _ext: &::http::Extensions,
        path: &str,
        recursive: bool,
        stream: bool,
        wait_index: u64,
    ) -> Result<V2KeysWatch, V2Error> {
        let comps = components(path, self.index())?;
        let key = if comps.is_empty() {
            "/".to_string()
        } else {
            key_of(&comps)
        };
        let current = self.srv.store().current_rev();
        let compacted = self.srv.store().compact_rev();
        let start_rev = if wait_index == 0 {
            current + 1
        } else {
            i64::try_from(wait_index).unwrap_or(i64::MAX - 1) + 1
        };
        if start_rev <= compacted {
            return Err(V2Error::new(
                EVENT_INDEX_CLEARED,
                format!(
                    "the requested history has been cleared [{}/{wait_index}]",
                    v2_index(compacted + 1)
                ),
                v2_index(current),
            ));
        }
        let (tx, rx) = hub_channel(WATCH_QUEUE_MESSAGES, WATCH_QUEUE_BYTES);
        let prefix = Bytes::from(self.layout.prefix.clone());
        let end = crate::state::prefix_end(&prefix);
        let handle = self.srv.hub().add(
            WatchSpec {
                range: KeyRange::Range(prefix, end),
                start_rev,
                no_put: false,
                no_delete: false,
                prev_kv: true,
                progress_notify: false,
            },
            0,
            tx,
        );
        let guard = HubGuard {
            srv: Arc::clone(&self.srv),
            handle,
        };
        let state = WatchState {
            rx,
            _guard: guard,
            pending: VecDeque::new(),
            space: Layout {
                prefix: self.layout.prefix.clone(),
            },
            key,
            recursive,
        };
        let _ = stream; // one-shot watches: the HTTP layer takes one event
        let events = futures::stream::unfold(state, |mut st| async move {
            let ev = st.next().await?;
            Some((ev, st))
        });
        Ok(V2KeysWatch {
            start_index: v2_index(current),
            events: Box::pin(events),
        })
    }

    fn index(&self) -> u64 {
        v2_index(self.srv.store().current_rev())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layout() -> Layout {
        Layout {
            prefix: "v2/".into(),
        }
    }

    fn comps(p: &str) -> Vec<String> {
        components(p, 0).unwrap()
    }

    fn kv(key: &str, value: &str, create: i64, modified: i64) -> KeyValue {
        KeyValue {
            key: Bytes::copy_from_slice(key.as_bytes()),
            value: Bytes::copy_from_slice(value.as_bytes()),
            create_revision: create,
            mod_revision: modified,
            ..Default::default()
        }
    }

    #[test]
    fn keys_are_etcds() {
        let l = layout();
        // Depth counts the `/1` store prefix, as etcd's does.
        assert_eq!(l.file_key(&comps("/foo")), "v2//002/k//1/foo");
        assert_eq!(l.dir_key(&comps("a/b")), "v2//003/k//1/a/b/");
        assert_eq!(l.level_prefix(&comps("/a"), 1), "v2//003/k//1/a/");
        assert_eq!(l.level_prefix(&[], 1), "v2//002/k//1/");
        assert_eq!(l.action_key(), "v2//act");
        // Cleaned like the v2 store's paths.
        assert_eq!(comps("//a/./b/../c/"), ["a", "c"]);
        assert_eq!(comps("/../.."), Vec::<String>::new());
    }

    #[test]
    fn decode_reads_only_client_keys() {
        let l = layout();
        assert_eq!(
            l.decode(b"v2//004/k//1/a/b/c"),
            Some((vec!["a".into(), "b".into(), "c".into()], false))
        );
        assert_eq!(l.decode(b"v2//002/k//1/d/"), Some((vec!["d".into()], true)));
        // etcd's internal paths, the action key and anything foreign.
        assert_eq!(l.decode(b"v2//003/k//2/users/x"), None);
        assert_eq!(l.decode(b"v2//act"), None);
        assert_eq!(l.decode(b"v2//0x2/k//1/a"), None);
        assert_eq!(l.decode(b"other/002/k//1/a"), None);
        assert_eq!(l.decode(b"v2//002/k//1/"), None);
        let n = l.node_of(&kv("v2//002/k//1/foo", "bar", 3, 7)).unwrap();
        assert_eq!(
            (
                n.key.as_str(),
                n.value.as_deref(),
                n.created_index,
                n.modified_index
            ),
            ("/foo", Some("bar"), 2, 6)
        );
        assert!(
            l.node_of(&kv("v2//002/k//1/d/", "", 3, 3))
                .unwrap()
                .value
                .is_none()
        );
    }

    #[test]
    fn depth_is_bounded() {
        let deep = "/x".repeat(MAX_STORE_DEPTH - 1);
        assert_eq!(components(&deep, 0).unwrap().len(), MAX_STORE_DEPTH - 1);
        let e = components(&format!("{deep}/y"), 9).unwrap_err();
        assert_eq!((e.code, e.index), (INVALID_FIELD, 9));
    }

    fn event(t: EventType, key: &str, rev: i64, prev: Option<KeyValue>) -> Event {
        Event {
            r#type: t as i32,
            kv: Some(kv(key, "v", if t == EventType::Put { rev } else { 0 }, rev)),
            prev_kv: prev,
        }
    }

    #[test]
    fn a_revision_becomes_one_v2_event() {
        let l = layout();
        // A create that also made its parent: the deepest put is the node.
        let group = [
            event(EventType::Put, "v2//002/k//1/a/", 5, None),
            event(EventType::Put, "v2//003/k//1/a/b", 5, None),
            event(EventType::Put, "v2//act", 5, None),
        ];
        let mut group = group.to_vec();
        if let Some(kv) = group[2].kv.as_mut() {
            kv.value = Bytes::from_static(b"create");
        }
        let ev = l.revision_event(&group).unwrap();
        assert_eq!(
            (ev.action, ev.key(), ev.etcd_index),
            (V2Action::Create, "/a/b", 4)
        );
        // A recursive delete: the shallowest delete is the node, with its
        // createdIndex from the previous value.
        let mut group = vec![
            event(EventType::Delete, "v2//003/k//1/a/b", 9, None),
            event(
                EventType::Delete,
                "v2//002/k//1/a/",
                9,
                Some(kv("v2//002/k//1/a/", "", 5, 5)),
            ),
            event(EventType::Put, "v2//act", 9, None),
        ];
        if let Some(kv) = group[2].kv.as_mut() {
            kv.value = Bytes::from_static(b"delete");
        }
        let ev = l.revision_event(&group).unwrap();
        let node = ev.node.clone().unwrap();
        assert_eq!(
            (ev.action, node.key.as_str(), node.dir),
            (V2Action::Delete, "/a", true)
        );
        assert_eq!((node.created_index, node.modified_index), (4, 8));
        assert!(ev.prev_node.unwrap().dir);
        // A plain v3 write under the prefix carries no action: not a v2 event.
        let group = [event(EventType::Put, "v2//002/k//1/z", 10, None)];
        assert!(l.revision_event(&group).is_none());
    }
}
