//! 10,000 watchers on one member with writes flowing: memory stays bounded,
//! and every event arrives.
//!
//! 100 watch streams of 100 watchers each (one key per watcher) on one
//! follower, written to through the leader. Phase 1: small puts and
//! transactions reach every watcher. Phase 2: one stream's consumer stops
//! reading while far more data is written to its keys than the memory bound
//! allows, so the server has to stop buffering for that stream (the other 99
//! keep getting events) and later replay it from the store. Every watcher
//! must see exactly the writes to its key, in revision order, once; the
//! watched member's resident memory must stay bounded. Nothing here is timed.

use cairn_tests::{Cluster, Options, client, http_get, runtime};
use etcd_client::{Client, EventType, Txn, TxnOp, WatchOptions, WatchResponseStream};
use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const STREAMS: usize = 100;
const PER_STREAM: usize = 100;
/// The stream whose consumer stops reading in phase 2.
const STALLED: usize = 0;
/// Phase 1: one transaction per watcher column (every key written once) ...
const SPREAD_TXNS: usize = PER_STREAM;
/// ... then single puts spread over all 10,000 keys.
const SINGLE_PUTS: usize = 2_000;
/// Phase 2: transactions writing every key of the stalled stream once, with
/// `BIG`-byte values.
const STALL_TXNS: usize = 420;
const BIG: usize = 4096;
/// How much more the watched member's RSS may grow (peak over its baseline,
/// taken before any watcher exists) than the other follower's, which
/// applies exactly the same writes but serves no watcher.
///
/// Why relative: the write path alone grows every member by ~350 MiB in
/// phase 2 (measured, debug and release, watchers or not: fjall's memtables,
/// 64 MiB per keyspace, its 64 MiB block cache, allocator high-water marks),
/// so an absolute bound would measure the store, not the watchers.
///
/// What may legitimately differ: the 10,000 watchers (about 0.8 KiB each in
/// release, +8 MiB; the same in a debug build), the block cache filling with
/// the replay's and prev_kv's reads (≤ 64 MiB), and the stalled stream's
/// queues with h2 buffers. Those queues are bounded in bytes (4 MiB of
/// events per stream, counted until tonic takes the response): measured in
/// a debug build, +10–40 MiB at the end of the stall (members' store memory
/// differs by tens of MiB, so no tighter bound is stable) and about +90–130
/// MiB at the peak of the replay (block cache). Before the byte bound the queues were
/// bounded only in messages, and the stall alone cost +100 MiB.
///
/// What must not happen: the server holding the stalled stream's events in
/// memory. Phase 2 sends that stream STALL_TXNS × 100 events, each a 4 KiB
/// value plus its 4 KiB previous value (prev_kv): 42,000 × 8 KiB ≈ 330 MiB,
/// which alone crosses this bound.
const RSS_EXCESS_BOUND: u64 = 256 << 20;
const WAIT: Duration = Duration::from_secs(60);

fn key(s: usize, w: usize) -> String {
    format!("ws/{s:02}/{w:02}")
}

fn small_value(key: &str, seq: usize) -> Vec<u8> {
    format!("{key}@{seq}").into_bytes()
}

/// A `BIG`-byte value that names its key and write, so no two are alike.
fn big_value(key: &str, seq: usize) -> Vec<u8> {
    let mut v = format!("{key}@{seq}:").into_bytes();
    let fill = b'a' + (seq % 26) as u8;
    v.resize(BIG, fill);
    v
}

/// Identifies a value cheaply (the consumer must keep up with the server in
/// a debug build): its length, its head (which names key and write) and its
/// last byte (the fill).
fn digest(bytes: &[u8]) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    bytes.len().hash(&mut h);
    bytes[..bytes.len().min(32)].hash(&mut h);
    bytes.last().hash(&mut h);
    h.finish()
}

/// One event as a watcher saw it: (mod revision, value digest, previous
/// value digest if the event carried one).
type Seen = (i64, u64, Option<u64>);

#[derive(Default)]
struct StreamLog {
    /// Watch IDs in the order their `created` responses came (the order the
    /// create requests were sent, so index = watcher number).
    created: Vec<i64>,
    /// Per watch ID: (key of each event, what it saw).
    events: HashMap<i64, Vec<(String, Seen)>>,
    count: usize,
    problems: Vec<String>,
}

struct WatchedStream {
    log: Arc<Mutex<StreamLog>>,
    /// While false the consumer does not read (phase 2).
    reading: tokio::sync::watch::Sender<bool>,
    _requests: etcd_client::WatchRequestSender,
    task: tokio::task::JoinHandle<()>,
}

impl WatchedStream {
    fn count(&self) -> usize {
        self.log.lock().expect("log").count
    }
}

async fn open_stream(c: &mut Client, s: usize, start: i64, prev_kv: bool) -> WatchedStream {
    let opts = || {
        let o = WatchOptions::new().with_start_revision(start);
        if prev_kv { o.with_prev_key() } else { o }
    };
    let mut ws = c.watch(key(s, 0), Some(opts())).await.expect("watch");
    for w in 1..PER_STREAM {
        ws.watch(key(s, w), Some(opts())).await.expect("watch");
    }
    let (requests, responses) = ws.split();
    let log = Arc::new(Mutex::new(StreamLog::default()));
    let (reading, gate) = tokio::sync::watch::channel(true);
    let task = tokio::spawn(consume(responses, Arc::clone(&log), gate));
    WatchedStream {
        log,
        reading,
        _requests: requests,
        task,
    }
}

async fn consume(
    mut responses: WatchResponseStream,
    log: Arc<Mutex<StreamLog>>,
    mut gate: tokio::sync::watch::Receiver<bool>,
) {
    loop {
        if gate.wait_for(|open| *open).await.is_err() {
            return;
        }
        let msg = match responses.message().await {
            Ok(Some(m)) => m,
            other => {
                log.lock()
                    .expect("log")
                    .problems
                    .push(format!("stream ended: {other:?}"));
                return;
            }
        };
        let mut log = log.lock().expect("log");
        if msg.created() {
            log.created.push(msg.watch_id());
        }
        if msg.canceled() {
            let why = format!("watch {} canceled: {msg:?}", msg.watch_id());
            log.problems.push(why);
        }
        for ev in msg.events() {
            let Some(kv) = ev.kv() else {
                log.problems.push("event without kv".into());
                continue;
            };
            if ev.event_type() != EventType::Put {
                log.problems.push(format!("unexpected event {ev:?}"));
            }
            let seen = (
                kv.mod_revision(),
                digest(kv.value()),
                ev.prev_kv().map(|p| digest(p.value())),
            );
            let k = String::from_utf8_lossy(kv.key()).into_owned();
            log.events
                .entry(msg.watch_id())
                .or_default()
                .push((k, seen));
            log.count += 1;
        }
    }
}

/// What was written: key → [(revision, value digest)] (any order).
#[derive(Default, Clone)]
struct Written(Arc<Mutex<HashMap<String, Vec<Write>>>>);

/// One write to a key: (revision, value digest).
type Write = (i64, u64);

impl Written {
    fn add(&self, key: String, rev: i64, value: &[u8]) {
        let mut m = self.0.lock().expect("written");
        m.entry(key).or_default().push((rev, digest(value)));
    }

    fn count_for_stream(&self, s: usize) -> usize {
        let m = self.0.lock().expect("written");
        (0..PER_STREAM)
            .map(|w| m.get(&key(s, w)).map_or(0, Vec::len))
            .sum()
    }

    /// What a watcher on `key` must have seen, in order.
    fn expected(&self, key: &str, prev_kv: bool) -> Vec<(String, Seen)> {
        let m = self.0.lock().expect("written");
        let mut writes = m.get(key).cloned().unwrap_or_default();
        writes.sort();
        let mut prev = None;
        writes
            .into_iter()
            .map(|(rev, d)| {
                let seen = (rev, d, if prev_kv { prev } else { None });
                prev = Some(d);
                (key.to_string(), seen)
            })
            .collect()
    }
}

/// One request: a put, or a txn of puts when it holds several.
type Job = Vec<(String, Vec<u8>)>;

/// Sends `jobs`, `parallel` at a time, and records every put in `written`
/// with the revision its request got.
async fn write_all(c: &Client, written: &Written, jobs: Vec<Job>, parallel: usize) {
    let jobs = Arc::new(Mutex::new(jobs.into_iter()));
    let mut tasks = Vec::new();
    for _ in 0..parallel {
        let mut c = c.clone();
        let jobs = Arc::clone(&jobs);
        let written = written.clone();
        tasks.push(tokio::spawn(async move {
            loop {
                let Some(job) = jobs.lock().expect("jobs").next() else {
                    return;
                };
                let rev = if job.len() == 1 {
                    let (k, v) = &job[0];
                    let r = c.put(k.as_str(), v.clone(), None).await.expect("put");
                    r.header().expect("header").revision()
                } else {
                    let ops: Vec<TxnOp> = job
                        .iter()
                        .map(|(k, v)| TxnOp::put(k.as_str(), v.clone(), None))
                        .collect();
                    let r = c.txn(Txn::new().and_then(ops)).await.expect("txn");
                    assert!(r.succeeded());
                    r.header().expect("header").revision()
                };
                for (k, v) in job {
                    written.add(k, rev, &v);
                }
            }
        }));
    }
    for t in tasks {
        t.await.expect("writer task");
    }
}

/// A process's resident set size (`VmRSS`), if it still runs.
fn rss_bytes(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())?;
    Some(kb * 1024)
}

/// Samples a member's RSS every 100 ms from its baseline on; keeps the peak.
struct RssSampler {
    baseline: u64,
    peak: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl RssSampler {
    fn start(pid: u32) -> RssSampler {
        let baseline = rss_bytes(pid).expect("member running");
        let peak = Arc::new(AtomicU64::new(baseline));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (peak, stop) = (Arc::clone(&peak), Arc::clone(&stop));
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    if let Some(rss) = rss_bytes(pid) {
                        peak.fetch_max(rss, Ordering::Relaxed);
                    }
                    std::thread::sleep(Duration::from_millis(100));
                }
            })
        };
        RssSampler {
            baseline,
            peak,
            stop,
            thread: Some(thread),
        }
    }

    /// Peak growth over the baseline so far.
    fn growth(&self) -> u64 {
        self.peak
            .load(Ordering::Relaxed)
            .saturating_sub(self.baseline)
    }
}

impl Drop for RssSampler {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

async fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + WAIT;
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn mib(b: u64) -> f64 {
    b as f64 / (1 << 20) as f64
}

#[test]
fn ten_thousand_watchers_bounded_memory_every_event() {
    let cluster = Cluster::start(Options::default());
    let leader = cluster.wait_leader(WAIT);
    // Both followers apply the same entries; one serves the watchers, the
    // other is the memory control.
    let watched = (leader + 1) % 3;
    let control = (leader + 2) % 3;
    let watched_ep = vec![cluster.members[watched].endpoint()];
    let writer_ep = vec![cluster.members[leader].endpoint()];
    let report = |phase: &str, w: &RssSampler, c: &RssSampler| {
        eprintln!(
            "{phase}: peak RSS growth {:.1} MiB on the watched member, {:.1} MiB on the control",
            mib(w.growth()),
            mib(c.growth())
        );
    };
    runtime().block_on(async {
        let writer = client(&writer_ep).await;
        let written = Written::default();
        let start = {
            let mut w = writer.clone();
            let r = w.put("ws/start", "", None).await.expect("put");
            r.header().expect("header").revision() + 1
        };
        let rss = RssSampler::start(cluster.members[watched].pid());
        let rss_control = RssSampler::start(cluster.members[control].pid());

        // The stalled stream gets a connection of its own, so that what it
        // leaves unread (up to the h2 windows) cannot hold up the others.
        let mut stalled_client = client(&watched_ep).await;
        let mut others = client(&watched_ep).await;
        let mut streams = Vec::new();
        for s in 0..STREAMS {
            let c = if s == STALLED {
                &mut stalled_client
            } else {
                &mut others
            };
            streams.push(open_stream(c, s, start, s == STALLED).await);
        }
        wait_until("10,000 created responses", || {
            streams
                .iter()
                .all(|s| s.log.lock().expect("log").created.len() == PER_STREAM)
        })
        .await;
        let (status, metrics) =
            http_get(&cluster.members[watched].client_addr(), "/metrics").expect("metrics");
        assert_eq!(status, 200);
        let want = format!("etcd_debugging_mvcc_watcher_total {}", STREAMS * PER_STREAM);
        assert!(
            metrics.lines().any(|l| l == want),
            "the watched member does not count 10,000 watchers"
        );
        report("10,000 watchers open", &rss, &rss_control);

        // Phase 1: every key once (transaction j writes column j + s of
        // every stream s), then single puts spread over all keys.
        let mut jobs: Vec<Job> = (0..SPREAD_TXNS)
            .map(|j| {
                (0..STREAMS)
                    .map(|s| {
                        let k = key(s, (s + j) % PER_STREAM);
                        let v = small_value(&k, j);
                        (k, v)
                    })
                    .collect()
            })
            .collect();
        for i in 0..SINGLE_PUTS {
            let idx = (i * 7919 + 13) % (STREAMS * PER_STREAM);
            let k = key(idx / PER_STREAM, idx % PER_STREAM);
            let v = small_value(&k, SPREAD_TXNS + i);
            jobs.push(vec![(k, v)]);
        }
        write_all(&writer, &written, jobs, 8).await;
        wait_until("phase 1 events", || {
            streams
                .iter()
                .enumerate()
                .all(|(s, st)| st.count() >= written.count_for_stream(s))
        })
        .await;
        report("phase 1 delivered", &rss, &rss_control);

        // Phase 2: the stalled stream's consumer stops reading while its
        // keys get STALL_TXNS × 100 big values.
        streams[STALLED].reading.send_replace(false);
        let before_stall = streams[STALLED].count();
        let seq = SPREAD_TXNS + SINGLE_PUTS;
        let jobs: Vec<Job> = (0..STALL_TXNS)
            .map(|j| {
                (0..PER_STREAM)
                    .map(|w| {
                        let k = key(STALLED, w);
                        let v = big_value(&k, seq + j);
                        (k, v)
                    })
                    .collect()
            })
            .collect();
        write_all(&writer, &written, jobs, 4).await;
        // The other streams still get their events.
        let seq = seq + STALL_TXNS;
        let jobs: Vec<Job> = (0..STREAMS)
            .filter(|s| *s != STALLED)
            .map(|s| {
                let k = key(s, s % PER_STREAM);
                let v = small_value(&k, seq + s);
                vec![(k, v)]
            })
            .collect();
        write_all(&writer, &written, jobs, 8).await;
        wait_until("the other streams' events during the stall", || {
            streams
                .iter()
                .enumerate()
                .filter(|(s, _)| *s != STALLED)
                .all(|(s, st)| st.count() >= written.count_for_stream(s))
        })
        .await;
        let read_while_stalled = streams[STALLED].count() - before_stall;
        assert!(
            read_while_stalled < STALL_TXNS * PER_STREAM,
            "the stalled consumer read everything: there was no stall"
        );
        report("stalled", &rss, &rss_control);
        // Resume: the server replays the rest from the store.
        streams[STALLED].reading.send_replace(true);
        wait_until("the stalled stream's events", || {
            streams[STALLED].count() >= written.count_for_stream(STALLED)
        })
        .await;
        // Late duplicates would arrive now.
        tokio::time::sleep(Duration::from_millis(500)).await;
        report("replayed", &rss, &rss_control);

        for (s, st) in streams.iter().enumerate() {
            let log = st.log.lock().expect("log");
            assert!(log.problems.is_empty(), "stream {s}: {:?}", log.problems);
            assert_eq!(log.created.len(), PER_STREAM, "stream {s}");
            for (w, id) in log.created.iter().enumerate() {
                let k = key(s, w);
                let want = written.expected(&k, s == STALLED);
                assert!(!want.is_empty(), "{k} was never written");
                let got = log.events.get(id).map(Vec::as_slice).unwrap_or_default();
                if got != want {
                    let first = got.iter().zip(&want).position(|(a, b)| a != b);
                    panic!(
                        "watcher on {k} (stream {s}, id {id}): {} events, want {}; first difference at {first:?}: got {:?}, want {:?}",
                        got.len(),
                        want.len(),
                        first.and_then(|i| got.get(i)),
                        first.and_then(|i| want.get(i)),
                    );
                }
            }
            assert_eq!(log.count, written.count_for_stream(s), "stream {s}");
        }
        for st in &streams {
            st.task.abort();
        }
        let excess = rss.growth().saturating_sub(rss_control.growth());
        assert!(
            excess < RSS_EXCESS_BOUND,
            "the watched member grew {:.1} MiB more than the control (bound {:.1} MiB): {:.1} vs {:.1} MiB",
            mib(excess),
            mib(RSS_EXCESS_BOUND),
            mib(rss.growth()),
            mib(rss_control.growth())
        );
    });
}
