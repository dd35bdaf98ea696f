//! The watch hub: delivers MVCC changes to watchers, in revision order,
//! exactly once, without ever slowing writes.
//!
//! The apply loop only pokes the hub after each commit; the hub reads the new
//! revisions back from the revision keyspace (`Store::changes`) on its own
//! task. Every watcher has a position (the next revision it needs):
//! - *synced* watchers are at the hub's position and get each new chunk of
//!   changes pushed into their stream's bounded queue;
//! - a watcher whose queue is full, or that starts in the past, becomes
//!   *unsynced* and is caught up from the store in bounded chunks until it
//!   reaches the hub's position again.
//!
//! Nothing is ever buffered without bound and nothing is dropped silently: a
//! watcher that falls behind a compaction is cancelled with the compaction
//! revision, as etcd does. Physical compaction waits for the hub to pass the
//! compacted revision (`Store::set_dispatched`).

use crate::pb::mvccpb::{Event, KeyValue, event::EventType};
use crate::storage::mvcc::index::KeyRange;
use crate::storage::mvcc::{Change, MvccError, Store};
use bytes::Bytes;
use parking_lot::Mutex;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};
use tokio::sync::{Notify, mpsc};

/// Changes read from the store per step (whole revisions are never split).
const CHUNK_CHANGES: usize = 4096;
/// And their bytes per step: 4096 values of up to `--max-request-bytes`
/// each would otherwise make one step gigabytes (docs/security.md).
const CHUNK_BYTES: usize = 8 << 20;
/// How often the hub looks at unsynced watchers even without new writes.
const IDLE_TICK: Duration = Duration::from_millis(50);

/// What a watch stream receives from the hub for one of its watchers.
#[derive(Debug)]
pub enum HubMsg {
    Events {
        watch_id: i64,
        events: Vec<Event>,
        revision: i64,
    },
    /// The watcher's next revision was compacted away: it is cancelled.
    Compacted {
        watch_id: i64,
        compact_revision: i64,
    },
    /// Periodic progress notification for an idle watcher.
    Progress { watch_id: i64, revision: i64 },
}

impl HubMsg {
    /// What the message holds in memory, roughly: keys and values of its
    /// events plus a fixed overhead per event and per message. Used to
    /// bound a stream's queue in bytes, not only in messages.
    pub fn size_bytes(&self) -> usize {
        const OVERHEAD: usize = 64;
        let kv = |kv: &Option<KeyValue>| kv.as_ref().map_or(0, |k| k.key.len() + k.value.len());
        match self {
            HubMsg::Events { events, .. } => events.iter().fold(OVERHEAD, |n, e| {
                n.saturating_add(OVERHEAD + kv(&e.kv) + kv(&e.prev_kv))
            }),
            HubMsg::Compacted { .. } | HubMsg::Progress { .. } => OVERHEAD,
        }
    }
}

/// A stream's queue from the hub: bounded in messages by the channel and
/// in bytes by a shared counter, so a stalled client holds at most
/// `limit_bytes` (plus one message, so any single message, however big,
/// can always get through an empty queue). A full queue makes the hub
/// treat the watcher as slow and replay it from the store later.
#[derive(Clone)]
pub struct HubSender {
    /// Each message travels with the bytes it was counted as.
    tx: mpsc::Sender<(HubMsg, usize)>,
    queued_bytes: Arc<AtomicUsize>,
    limit_bytes: usize,
}

pub struct HubReceiver {
    rx: mpsc::Receiver<(HubMsg, usize)>,
    queued_bytes: Arc<AtomicUsize>,
}

/// A received message's bytes stay counted against the queue until this
/// is dropped: the receiver drops it once the message left its hands
/// (for a gRPC stream, once the response is queued to the client).
pub struct Held {
    bytes: usize,
    queued_bytes: Arc<AtomicUsize>,
}

impl Drop for Held {
    fn drop(&mut self) {
        self.queued_bytes.fetch_sub(self.bytes, Ordering::AcqRel);
    }
}

pub fn hub_channel(messages: usize, limit_bytes: usize) -> (HubSender, HubReceiver) {
    let (tx, rx) = mpsc::channel(messages);
    let queued_bytes = Arc::new(AtomicUsize::new(0));
    (
        HubSender {
            tx,
            queued_bytes: Arc::clone(&queued_bytes),
            limit_bytes,
        },
        HubReceiver { rx, queued_bytes },
    )
}

impl HubSender {
    fn try_send(&self, msg: HubMsg) -> Result<(), mpsc::error::TrySendError<HubMsg>> {
        let bytes = msg.size_bytes();
        let before = self.queued_bytes.fetch_add(bytes, Ordering::AcqRel);
        if before > 0 && before.saturating_add(bytes) > self.limit_bytes {
            self.queued_bytes.fetch_sub(bytes, Ordering::AcqRel);
            return Err(mpsc::error::TrySendError::Full(msg));
        }
        self.tx.try_send((msg, bytes)).map_err(|e| {
            self.queued_bytes.fetch_sub(bytes, Ordering::AcqRel);
            match e {
                mpsc::error::TrySendError::Full((m, _)) => mpsc::error::TrySendError::Full(m),
                mpsc::error::TrySendError::Closed((m, _)) => mpsc::error::TrySendError::Closed(m),
            }
        })
    }

    /// Bytes queued and not yet released by the receiver.
    pub fn queued_bytes(&self) -> usize {
        self.queued_bytes.load(Ordering::Acquire)
    }
}

impl HubReceiver {
    pub async fn recv(&mut self) -> Option<(HubMsg, Held)> {
        let (msg, bytes) = self.rx.recv().await?;
        let held = Held {
            bytes,
            queued_bytes: Arc::clone(&self.queued_bytes),
        };
        Some((msg, held))
    }
}

#[derive(Debug, Clone)]
pub struct WatchSpec {
    pub range: KeyRange,
    pub start_rev: i64,
    pub no_put: bool,
    pub no_delete: bool,
    pub prev_kv: bool,
    pub progress_notify: bool,
}

struct Watcher {
    spec: WatchSpec,
    watch_id: i64,
    tx: HubSender,
    /// Next revision this watcher needs.
    next_rev: i64,
    synced: bool,
    last_sent: Instant,
}

#[derive(Default)]
struct Inner {
    next_key: u64,
    watchers: HashMap<u64, Watcher>,
    /// Synced watchers on a single key, by key.
    single: HashMap<Bytes, HashSet<u64>>,
    /// Synced watchers on a range.
    ranged: HashSet<u64>,
    unsynced: HashSet<u64>,
}

impl Inner {
    fn set_synced(&mut self, key: u64, synced: bool) {
        let Some(w) = self.watchers.get_mut(&key) else {
            return;
        };
        if w.synced == synced {
            return;
        }
        w.synced = synced;
        let single = match &w.spec.range {
            KeyRange::Single(k) => Some(k.clone()),
            _ => None,
        };
        if synced {
            self.unsynced.remove(&key);
            match single {
                Some(k) => {
                    self.single.entry(k).or_default().insert(key);
                }
                None => {
                    self.ranged.insert(key);
                }
            }
        } else {
            self.unsynced.insert(key);
            match single {
                Some(k) => {
                    if let Some(set) = self.single.get_mut(&k) {
                        set.remove(&key);
                        if set.is_empty() {
                            self.single.remove(&k);
                        }
                    }
                }
                None => {
                    self.ranged.remove(&key);
                }
            }
        }
    }

    fn remove(&mut self, key: u64) {
        self.set_synced(key, false);
        self.unsynced.remove(&key);
        self.watchers.remove(&key);
    }
}

pub struct WatchHub {
    store: Arc<Store>,
    inner: Mutex<Inner>,
    wake: Notify,
    /// Every change up to here has been handed to the synced watchers.
    dispatched: AtomicI64,
    progress_interval: Duration,
}

impl WatchHub {
    pub fn start(store: Arc<Store>, progress_interval: Duration) -> Arc<WatchHub> {
        let current = store.current_rev();
        store.set_dispatched(current);
        let hub = Arc::new(WatchHub {
            store,
            inner: Mutex::new(Inner::default()),
            wake: Notify::new(),
            dispatched: AtomicI64::new(current),
            progress_interval,
        });
        let weak = Arc::downgrade(&hub);
        crate::crash::spawn_task("watch hub", async move {
            let mut last_progress = Instant::now();
            loop {
                let Some(hub) = weak.upgrade() else { return };
                {
                    let notified = hub.wake.notified();
                    tokio::pin!(notified);
                    // Register interest before working, so a poke that
                    // arrives while we work is not lost.
                    notified.as_mut().enable();
                    if let Err(e) = hub.step() {
                        tracing::error!(error = %e, "watch hub failed to read changes");
                    }
                    if last_progress.elapsed() >= hub.progress_interval {
                        last_progress = Instant::now();
                        hub.send_progress();
                    }
                    let _ = tokio::time::timeout(IDLE_TICK, notified).await;
                }
                drop(hub);
            }
        });
        hub
    }

    /// Called by the apply loop after each commit.
    pub fn notify(&self) {
        self.wake.notify_one();
    }

    /// The revision up to which every synced watcher has been served.
    pub fn dispatched(&self) -> i64 {
        self.dispatched.load(Ordering::Acquire)
    }

    /// The store was replaced (snapshot install): everyone catches up from
    /// the new store, or learns that its position was compacted.
    pub fn reset(&self) {
        let current = self.store.current_rev();
        let mut inner = self.inner.lock();
        let keys: Vec<u64> = inner.watchers.keys().copied().collect();
        let dispatched = self.dispatched();
        for k in keys {
            if let Some(w) = inner.watchers.get_mut(&k)
                && w.synced
            {
                w.next_rev = w.next_rev.max(dispatched + 1);
            }
            inner.set_synced(k, false);
        }
        self.dispatched.store(current, Ordering::Release);
        self.store.set_dispatched(current);
        drop(inner);
        self.notify();
    }

    /// Registers a watcher; its events go to `tx`. Returns a handle for `remove`.
    pub fn add(&self, spec: WatchSpec, watch_id: i64, tx: HubSender) -> u64 {
        let mut inner = self.inner.lock();
        let key = inner.next_key;
        inner.next_key += 1;
        let dispatched = self.dispatched();
        let next_rev = spec.start_rev;
        inner.watchers.insert(
            key,
            Watcher {
                spec,
                watch_id,
                tx,
                next_rev,
                synced: false,
                last_sent: Instant::now(),
            },
        );
        if next_rev > dispatched {
            inner.set_synced(key, true);
        } else {
            inner.unsynced.insert(key);
        }
        drop(inner);
        self.notify();
        key
    }

    pub fn remove(&self, key: u64) {
        self.inner.lock().remove(key);
    }

    fn event(&self, c: &Change, prev_kv: bool) -> Event {
        let (ty, kv) = if c.deleted {
            (
                EventType::Delete,
                KeyValue {
                    key: c.kv.key.clone(),
                    mod_revision: c.rev.main,
                    ..Default::default()
                },
            )
        } else {
            (EventType::Put, c.kv.clone())
        };
        let prev = if prev_kv {
            self.store.get_at(&c.kv.key, c.rev.main - 1).ok().flatten()
        } else {
            None
        };
        Event {
            r#type: ty as i32,
            kv: Some(kv),
            prev_kv: prev,
        }
    }

    fn wants(spec: &WatchSpec, c: &Change) -> bool {
        c.rev.main >= spec.start_rev
            && spec.range.contains(&c.kv.key)
            && if c.deleted {
                !spec.no_delete
            } else {
                !spec.no_put
            }
    }

    /// One round: push new changes to synced watchers, then catch up
    /// unsynced ones by one chunk.
    fn step(&self) -> Result<(), MvccError> {
        loop {
            let from = self.dispatched() + 1;
            let to = self.store.current_rev();
            if from > to {
                break;
            }
            let (changes, covered) = match self.store.changes(from, to, CHUNK_CHANGES, CHUNK_BYTES)
            {
                Ok(r) => r,
                Err(MvccError::Compacted) => {
                    // Compaction overtook the hub (it waited and gave up):
                    // every synced watcher must now learn it was compacted.
                    let mut inner = self.inner.lock();
                    let keys: Vec<u64> = inner.watchers.keys().copied().collect();
                    for k in keys {
                        if let Some(w) = inner.watchers.get_mut(&k)
                            && w.synced
                        {
                            w.next_rev = from;
                        }
                        inner.set_synced(k, false);
                    }
                    self.dispatched.store(to, Ordering::Release);
                    self.store.set_dispatched(to);
                    break;
                }
                Err(e) => return Err(e),
            };
            self.dispatch(&changes, from, covered);
        }
        self.catch_up()
    }

    fn dispatch(&self, changes: &[Change], from: i64, covered: i64) {
        let mut inner = self.inner.lock();
        let mut per_watcher: HashMap<u64, Vec<Event>> = HashMap::new();
        for c in changes {
            let mut targets: Vec<u64> = Vec::new();
            if let Some(set) = inner.single.get(&c.kv.key) {
                targets.extend(set.iter().copied());
            }
            targets.extend(inner.ranged.iter().copied().filter(|k| {
                inner
                    .watchers
                    .get(k)
                    .is_some_and(|w| w.spec.range.contains(&c.kv.key))
            }));
            for k in targets {
                let Some(w) = inner.watchers.get(&k) else {
                    continue;
                };
                if Self::wants(&w.spec, c) {
                    let ev = self.event(c, w.spec.prev_kv);
                    per_watcher.entry(k).or_default().push(ev);
                }
            }
        }
        for (k, events) in per_watcher {
            let Some(w) = inner.watchers.get_mut(&k) else {
                continue;
            };
            let msg = HubMsg::Events {
                watch_id: w.watch_id,
                events,
                revision: covered,
            };
            match w.tx.try_send(msg) {
                Ok(()) => w.last_sent = Instant::now(),
                Err(mpsc::error::TrySendError::Full(_)) => {
                    // Too slow: catch it up from the store later, from the
                    // start of this chunk (it has everything before).
                    w.next_rev = from;
                    inner.set_synced(k, false);
                }
                Err(mpsc::error::TrySendError::Closed(_)) => inner.remove(k),
            }
        }
        // Synced watchers that got nothing are now at `covered` too.
        let synced: Vec<u64> = inner
            .watchers
            .iter()
            .filter(|(_, w)| w.synced)
            .map(|(k, _)| *k)
            .collect();
        for k in synced {
            if let Some(w) = inner.watchers.get_mut(&k) {
                w.next_rev = w.next_rev.max(covered + 1);
            }
        }
        self.dispatched.store(covered, Ordering::Release);
        self.store.set_dispatched(covered);
    }

    fn catch_up(&self) -> Result<(), MvccError> {
        let (min_next, compact) = {
            let inner = self.inner.lock();
            let min_next = inner
                .unsynced
                .iter()
                .filter_map(|k| inner.watchers.get(k))
                .map(|w| w.next_rev)
                .min();
            (min_next, self.store.compact_rev())
        };
        let Some(min_next) = min_next else {
            return Ok(());
        };
        if min_next < compact {
            self.cancel_compacted(compact);
        }
        let dispatched = self.dispatched();
        let from = min_next.max(compact);
        let (changes, covered) = if from > dispatched {
            (Vec::new(), dispatched)
        } else {
            match self
                .store
                .changes(from, dispatched, CHUNK_CHANGES, CHUNK_BYTES)
            {
                Ok(r) => r,
                Err(MvccError::Compacted) => {
                    self.cancel_compacted(self.store.compact_rev());
                    return Ok(());
                }
                Err(e) => return Err(e),
            }
        };
        let mut inner = self.inner.lock();
        let keys: Vec<u64> = inner.unsynced.iter().copied().collect();
        for k in keys {
            let Some(w) = inner.watchers.get_mut(&k) else {
                continue;
            };
            if w.next_rev > covered {
                // Nothing to replay; it can join the synced set if the hub
                // has not moved on meanwhile.
                if w.next_rev > self.dispatched() {
                    inner.set_synced(k, true);
                }
                continue;
            }
            let events: Vec<Event> = changes
                .iter()
                .filter(|c| c.rev.main >= w.next_rev && Self::wants(&w.spec, c))
                .map(|c| self.event(c, w.spec.prev_kv))
                .collect();
            if !events.is_empty() {
                let msg = HubMsg::Events {
                    watch_id: w.watch_id,
                    events,
                    revision: covered,
                };
                match w.tx.try_send(msg) {
                    Ok(()) => w.last_sent = Instant::now(),
                    // Still full: try again next round from the same place.
                    Err(mpsc::error::TrySendError::Full(_)) => continue,
                    Err(mpsc::error::TrySendError::Closed(_)) => {
                        inner.remove(k);
                        continue;
                    }
                }
            }
            w.next_rev = covered + 1;
            if w.next_rev > self.dispatched() {
                inner.set_synced(k, true);
            }
        }
        Ok(())
    }

    fn cancel_compacted(&self, compact: i64) {
        let mut inner = self.inner.lock();
        let doomed: Vec<u64> = inner
            .unsynced
            .iter()
            .copied()
            .filter(|k| inner.watchers.get(k).is_some_and(|w| w.next_rev < compact))
            .collect();
        for k in doomed {
            let Some(w) = inner.watchers.get(&k) else {
                continue;
            };
            let msg = HubMsg::Compacted {
                watch_id: w.watch_id,
                compact_revision: compact,
            };
            match w.tx.try_send(msg) {
                Ok(()) | Err(mpsc::error::TrySendError::Closed(_)) => inner.remove(k),
                // The stream is backed up; tell it next round.
                Err(mpsc::error::TrySendError::Full(_)) => {}
            }
        }
    }

    /// Tells idle synced watchers that asked for it how far the store is.
    fn send_progress(&self) {
        let rev = self.dispatched();
        let mut inner = self.inner.lock();
        let now = Instant::now();
        for w in inner.watchers.values_mut() {
            if w.synced
                && w.spec.progress_notify
                && now.duration_since(w.last_sent) >= self.progress_interval
            {
                let msg = HubMsg::Progress {
                    watch_id: w.watch_id,
                    revision: rev,
                };
                if w.tx.try_send(msg).is_ok() {
                    w.last_sent = now;
                }
            }
        }
    }

    /// The revision a progress response may report for a set of watchers:
    /// every event at or below it has been queued for them.
    pub fn progress_rev(&self, keys: &[u64]) -> i64 {
        let inner = self.inner.lock();
        let mut rev = self.dispatched();
        for k in keys {
            if let Some(w) = inner.watchers.get(k)
                && !w.synced
            {
                rev = rev.min(w.next_rev - 1);
            }
        }
        rev
    }

    pub fn watcher_count(&self) -> usize {
        self.inner.lock().watchers.len()
    }
}

#[cfg(test)]
mod queue_tests {
    use super::*;

    fn events(value_bytes: usize) -> HubMsg {
        HubMsg::Events {
            watch_id: 0,
            events: vec![Event {
                kv: Some(KeyValue {
                    key: b"k".to_vec().into(),
                    value: vec![0; value_bytes].into(),
                    ..Default::default()
                }),
                ..Default::default()
            }],
            revision: 1,
        }
    }

    #[tokio::test]
    async fn the_queue_is_bounded_in_bytes_until_the_receiver_lets_go() {
        let (tx, mut rx) = hub_channel(100, 10_000);
        tx.try_send(events(6_000)).expect("fits");
        assert!(
            matches!(
                tx.try_send(events(6_000)),
                Err(mpsc::error::TrySendError::Full(_))
            ),
            "over the byte limit"
        );
        let (_, held) = rx.recv().await.expect("message");
        assert!(
            tx.try_send(events(6_000)).is_err(),
            "still held by the receiver"
        );
        drop(held);
        assert_eq!(tx.queued_bytes(), 0);
        // One message bigger than the whole limit still gets through an
        // empty queue, so a huge event can never wedge its watcher.
        tx.try_send(events(50_000))
            .expect("empty queue takes anything");
        assert!(tx.try_send(events(10)).is_err());
    }
}
