//! v2 watches: the event history (last 1000 events) and the hub of waiting
//! watchers, with etcd 3.4's matching rules.
//!
//! Everything here is in memory and outside the replicated state: the
//! store's `apply` publishes each event to the hub, which never blocks it —
//! a watcher whose queue is full is dropped, as etcd does (its HTTP
//! response then ends, and the v2 client re-watches from the last index it
//! saw).

use super::error::{EVENT_INDEX_CLEARED, V2Error};
use super::event::{V2Action, V2Event};
use parking_lot::Mutex;
use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;
use tokio::sync::mpsc;

/// Events kept for `waitIndex` (etcd: `newWatchHub(1000)`).
pub const HISTORY_CAPACITY: usize = 1000;
/// Events queued per watcher before it counts as too slow and is dropped
/// (etcd's watcher channel holds 100).
pub const WATCHER_QUEUE: usize = 100;

struct Entry {
    id: u64,
    recursive: bool,
    stream: bool,
    since: u64,
    tx: mpsc::Sender<Arc<V2Event>>,
}

#[derive(Default)]
pub(crate) struct Hub {
    next_id: u64,
    /// Waiting watchers by the key they watch.
    watchers: HashMap<String, Vec<Entry>>,
    count: usize,
    history: VecDeque<Arc<V2Event>>,
    /// The lowest index the history can answer for: 0 for a new store
    /// (etcd's StartIndex), just past the last client-visible event after a
    /// load (the events before it are gone, and the ones after it matched
    /// no watch), and just past the oldest forgotten event once the history
    /// is full.
    floor: u64,
}

/// A watch on the v2 store. Yields events until the watch is satisfied
/// (one event unless `stream`), the watcher is dropped for being too slow,
/// or the store is reloaded; then `next` returns `None`. Dropping it
/// unregisters it.
pub struct V2Watcher {
    rx: mpsc::Receiver<Arc<V2Event>>,
    start_index: u64,
    guard: Option<Guard>,
}

struct Guard {
    hub: Arc<Mutex<Hub>>,
    key: String,
    id: u64,
}

impl Drop for Guard {
    fn drop(&mut self) {
        self.hub.lock().remove(&self.key, self.id);
    }
}

impl V2Watcher {
    /// The store index when the watch started (`X-Etcd-Index` of the
    /// long-poll response).
    pub fn start_index(&self) -> u64 {
        self.start_index
    }

    /// The next event, or `None` when the watch is over.
    pub async fn next(&mut self) -> Option<Arc<V2Event>> {
        self.rx.recv().await
    }

    /// The next event if one is queued.
    pub fn try_next(&mut self) -> Option<Arc<V2Event>> {
        self.rx.try_recv().ok()
    }

    /// Whether the watcher is still registered for future events.
    pub fn is_registered(&self) -> bool {
        self.guard.is_some() && !self.rx.is_closed()
    }
}

impl Hub {
    pub(crate) fn count(&self) -> usize {
        self.count
    }

    /// Forgets every watcher and the history: used when the store is
    /// replaced wholesale (load or snapshot install). Watchers see the end of
    /// their stream; re-watching at an index before `index + 1` then gets 401.
    pub(crate) fn reset(&mut self, index: u64) {
        self.watchers.clear();
        self.count = 0;
        self.history.clear();
        self.floor = index.wrapping_add(1);
    }

    fn start_index(&self) -> u64 {
        self.floor
    }

    fn remove(&mut self, key: &str, id: u64) {
        if let Some(list) = self.watchers.get_mut(key) {
            let before = list.len();
            list.retain(|w| w.id != id);
            self.count -= before - list.len();
            if list.is_empty() {
                self.watchers.remove(key);
            }
        }
    }

    /// Registers a watch, or answers it from the history. `since` is the
    /// first index of interest (already resolved from `waitIndex=0`).
    pub(crate) fn watch(
        this: &Arc<Mutex<Hub>>,
        key: String,
        recursive: bool,
        stream: bool,
        since: u64,
        store_index: u64,
    ) -> Result<V2Watcher, V2Error> {
        let mut hub = this.lock();
        let start = hub.start_index();
        if since < start {
            return Err(V2Error::new(
                EVENT_INDEX_CLEARED,
                format!("the requested history has been cleared [{start}/{since}]"),
                store_index,
            ));
        }
        let (tx, rx) = mpsc::channel(WATCHER_QUEUE);
        let mut found = false;
        let mut overflow = false;
        let pos = hub.history.partition_point(|e| e.index() < since);
        for e in hub.history.range(pos..) {
            if e.refresh || !history_matches(e, &key, recursive) {
                continue;
            }
            found = true;
            if tx.try_send(e.clone()).is_err() {
                overflow = true;
                break;
            }
            if !stream {
                break;
            }
        }
        // etcd answers a one-shot watch from the history and is done. A
        // stream gets every matching past event and then stays registered
        // (etcd would send one and then hang); one whose backlog does not
        // fit its queue is treated as too slow, as a live one would be.
        if found && (!stream || overflow) {
            return Ok(V2Watcher {
                rx,
                start_index: store_index,
                guard: None,
            });
        }
        let since = if found {
            store_index.wrapping_add(1)
        } else {
            since
        };
        hub.next_id += 1;
        let id = hub.next_id;
        hub.watchers.entry(key.clone()).or_default().push(Entry {
            id,
            recursive,
            stream,
            since,
            tx,
        });
        hub.count += 1;
        drop(hub);
        Ok(V2Watcher {
            rx,
            start_index: store_index,
            guard: Some(Guard {
                hub: this.clone(),
                key,
                id,
            }),
        })
    }

    /// Adds an event to the history and, unless it is a refresh, hands it
    /// to the interested watchers. `removed` lists every node the event
    /// deleted (a deleted directory's whole subtree): watchers on those keys
    /// hear about it whatever their `recursive` flag, as in etcd.
    pub(crate) fn publish(&mut self, ev: Arc<V2Event>, removed: &[String]) {
        self.record(ev.clone());
        if ev.refresh || self.count == 0 {
            return;
        }
        let key = ev.key().to_string();
        let index = ev.index();
        // A watcher can be reached through several paths (the deleted node
        // itself and its ancestors); it gets each event once. (etcd sends a
        // stream watcher on a deleted directory the event twice.)
        let mut seen = HashSet::new();
        for path in removed {
            self.notify_path(&ev, path, &key, index, true, &mut seen);
        }
        for path in ancestors(&key) {
            self.notify_path(&ev, path, &key, index, false, &mut seen);
        }
    }

    /// Adds an event to the history without offering it to any watcher:
    /// internal writes (see `V2Event::internal`), which take an index in
    /// etcd's history too.
    pub(crate) fn record(&mut self, ev: Arc<V2Event>) {
        if self.history.len() == HISTORY_CAPACITY
            && let Some(old) = self.history.pop_front()
        {
            // From now on the history can answer only past what it forgot.
            self.floor = old.index().wrapping_add(1);
        }
        self.history.push_back(ev);
    }

    fn notify_path(
        &mut self,
        ev: &Arc<V2Event>,
        path: &str,
        key: &str,
        index: u64,
        deleted: bool,
        seen: &mut HashSet<u64>,
    ) {
        let Some(list) = self.watchers.get_mut(path) else {
            return;
        };
        let original = path == key;
        let visible = original || deleted || !is_hidden(path, key);
        let before = list.len();
        list.retain(|w| {
            let interested = (w.recursive || original || deleted) && visible && index >= w.since;
            if !interested || !seen.insert(w.id) {
                return true;
            }
            match w.tx.try_send(ev.clone()) {
                // A one-shot watch is done once it has its event.
                Ok(()) => w.stream,
                // Too slow (queue full) or gone: drop it; its response ends.
                Err(_) => false,
            }
        });
        self.count -= before - list.len();
        if list.is_empty() {
            self.watchers.remove(path);
        }
    }
}

/// Whether a watcher on `key` (root: "/") hears `e`: the history's rule
/// below, minus changes to hidden keys under the watched path. For
/// keyspaces other than the v2 store (`--experimental-enable-v2v3`), which
/// filter a stream of events themselves.
pub fn hears(e: &V2Event, key: &str, recursive: bool) -> bool {
    let ek = e.key();
    history_matches(e, key, recursive) && (ek == key || !is_hidden(key, ek))
}

/// etcd's history match: the key itself, keys under it for a recursive
/// watch, and deletions or expiries of a directory above it.
fn history_matches(e: &V2Event, key: &str, recursive: bool) -> bool {
    let ek = e.key();
    if ek == key || (recursive && is_under(ek, key)) {
        return true;
    }
    if matches!(e.action, V2Action::Delete | V2Action::Expire)
        && let Some(prev) = &e.prev_node
        && prev.dir
    {
        return is_under(key, &prev.key) || key == prev.key;
    }
    false
}

/// Whether `key` is strictly below directory `dir` (root is "/").
fn is_under(key: &str, dir: &str) -> bool {
    if dir == "/" || dir.is_empty() {
        return key.len() > 1;
    }
    key.strip_prefix(dir)
        .is_some_and(|below| below.starts_with('/'))
}

/// "/a/b" → "/", "/a", "/a/b".
fn ancestors(key: &str) -> impl Iterator<Item = &str> {
    std::iter::once("/").chain(
        key.match_indices('/')
            .skip(1)
            .map(move |(i, _)| &key[..i])
            .chain((key.len() > 1).then_some(key)),
    )
}

/// Whether `key` is hidden from a watcher on `watch_path`: some component
/// below the watched path starts with `_`.
fn is_hidden(watch_path: &str, key: &str) -> bool {
    if watch_path.len() > key.len() {
        return false;
    }
    key[watch_path.len()..]
        .split('/')
        .any(|c| c.starts_with('_'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ancestor_paths() {
        assert_eq!(ancestors("/a/b").collect::<Vec<_>>(), ["/", "/a", "/a/b"]);
        assert_eq!(ancestors("/a").collect::<Vec<_>>(), ["/", "/a"]);
        assert_eq!(ancestors("/").collect::<Vec<_>>(), ["/"]);
    }

    #[test]
    fn hidden_rules() {
        assert!(is_hidden("/", "/_a"));
        assert!(is_hidden("/", "/a/_b/c"));
        assert!(!is_hidden("/_a", "/_a/b"));
        assert!(is_hidden("/foo", "/foo/_bar"));
        assert!(!is_hidden("/foo/bar", "/foo"));
        assert!(!is_hidden("/", "/a/b"));
    }

    #[test]
    fn under() {
        assert!(is_under("/a/b", "/a"));
        assert!(!is_under("/ab", "/a"));
        assert!(!is_under("/a", "/a"));
        assert!(is_under("/a", "/"));
        assert!(!is_under("/", "/"));
    }
}
