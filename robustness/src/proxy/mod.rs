//! A TCP proxy for cluster members' peer traffic on loopback, with faults
//! per ordered pair of members.
//!
//! # Where it sits
//!
//! One listener per member at the member's *advertised* peer URL, forwarding
//! to the member's real (listen) peer URL. Members dial each other at the
//! advertised URLs, so every peer connection passes through the listener of
//! the member called. The caller is found per accepted connection from the
//! kernel's socket table ([`procnet`]): its source port → socket inode →
//! the process holding that inode → which member that process is. This
//! works for etcd and Cairn alike and needs no protocol parsing. (Other
//! ways we considered: one advertised URL per member pair is impossible, a
//! member has one; network namespaces with `tc netem` and `iptables` would be
//! more faithful at the packet level but need root on every machine CI runs.)
//!
//! # What a fault means on a byte stream
//!
//! Faults act on the bytes flowing *from* one member *to* another, whichever
//! side dialed the connection. That matters for etcd: its rafthttp stream
//! connections are dialed by the receiver (member B dials A and reads A's
//! messages from the response body), while its pipeline posts are dialed by
//! the sender; "one-way loss from A to B" stalls both.
//!
//! - **Blackhole** (`Link::Blackhole`): bytes from A to B are held, not
//!   delivered; the sender's socket buffers fill and it blocks, as with a
//!   link that drops every packet. A new connection A → B is accepted (the
//!   proxy is local) but not connected onward until the fault heals, so B
//!   never sees it. On heal, held bytes flow, as TCP would deliver after
//!   retransmitting, unless an endpoint gave up and closed meanwhile.
//!   Partition = blackhole both ways; isolating a member = partition from
//!   everyone, including callers the proxy could not identify.
//! - **Delay** (`Link::Delay`): each chunk is delivered `base ± jitter` after
//!   it was read, never before an earlier chunk (order is kept: TCP does not
//!   reorder, and a later chunk cannot overtake).
//! - **Throttle** (`Link::Throttle`): bytes from A to B, over all their
//!   connections together, are delivered no faster than a set rate, like a
//!   thin link; chunks keep their order. A snapshot sent over it takes
//!   seconds, long enough to change the leader in the middle of it.
//! - **Reset** ([`PeerProxy::reset`]): open connections between two members
//!   are closed with RST.
//! - **Not modelled**: duplicating or reordering packets, and partial loss.
//!   They are not meaningful on a TCP byte stream (the kernel hides them, and
//!   dropping bytes from a stream corrupts it rather than emulating loss), so
//!   the proxy does not fake them.
//!
//! # Limits
//!
//! At most [`MAX_CONNECTIONS`] connections at once; at most
//! [`QUEUE_BYTES`] held per direction (read from the sender, not yet
//! delivered). Bounded by bytes, not chunks: a member that sends many small
//! messages must not be throttled under a delay fault by the proxy's own
//! queue (which would make the proxy, not the member, the bottleneck).

pub mod procnet;

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, mpsc, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::rng::Rng;

pub use procnet::ProcIdentify;

/// Largest read forwarded as one chunk.
pub const CHUNK_BYTES: usize = 16 * 1024;
/// Bytes held per direction (in flight or delayed) before the proxy stops
/// reading from the sender.
pub const QUEUE_BYTES: usize = 4 << 20;
/// Connections open at once; more are refused (closed on accept).
pub const MAX_CONNECTIONS: usize = 1024;
/// Longest the proxy waits for a member's real listener to accept.
const UPSTREAM_CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

/// Who called: the proxy's view of a connection's dialing side.
pub trait Identify: Send + Sync {
    /// The member that owns the socket at `peer` (the connection's source),
    /// connected to the proxy's listener at `local`; `None` if unknown.
    fn caller(&self, peer: SocketAddr, local: SocketAddr) -> Option<usize>;
}

/// One member's listener: the advertised address the proxy takes, and the
/// real one it forwards to.
#[derive(Debug, Clone, Copy)]
pub struct Route {
    pub member: usize,
    pub listen: SocketAddr,
    pub upstream: SocketAddr,
}

/// What happens to bytes flowing from one member to another.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Link {
    #[default]
    Pass,
    Blackhole,
    /// Each chunk is held `base` plus a uniform draw from `-jitter..=jitter`.
    Delay {
        base: Duration,
        jitter: Duration,
    },
    /// At most this many bytes per second, over every connection of the
    /// ordered pair together.
    Throttle {
        bytes_per_s: u64,
    },
}

/// Counters, for reports and tests.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProxyStats {
    pub accepted: u64,
    pub identified: u64,
    pub refused: u64,
    pub bytes: u64,
    pub resets: u64,
}

/// An open connection as the proxy sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnInfo {
    pub id: u64,
    /// `None`: the caller could not be identified.
    pub caller: Option<usize>,
    pub callee: usize,
}

struct Conn {
    info: ConnInfo,
    tasks: Vec<JoinHandle<()>>,
}

struct Shared {
    members: usize,
    /// `links[from][to]`; index `members` stands for unidentified callers.
    links: Mutex<Vec<Vec<Link>>>,
    changed: watch::Sender<u64>,
    conns: Mutex<HashMap<u64, Conn>>,
    next_id: AtomicU64,
    accepted: AtomicU64,
    identified: AtomicU64,
    refused: AtomicU64,
    bytes: AtomicU64,
    /// Bytes delivered per ordered pair, `from * (members + 1) + to`.
    link_bytes: Vec<AtomicU64>,
    /// When a throttled pair's link is next free, same indexing.
    link_free_at: Mutex<Vec<Instant>>,
    resets: AtomicU64,
    rng: Mutex<Rng>,
}

impl Shared {
    fn link(&self, from: usize, to: usize) -> Link {
        self.links.lock().expect("links lock")[from][to]
    }

    fn pair(&self, from: usize, to: usize) -> usize {
        from * (self.members + 1) + to
    }

    /// When a chunk of `len` bytes from `from` to `to` has gone through a
    /// throttled link, taking its turn after the chunks before it; `None`
    /// when the link is not throttled.
    fn paced(&self, from: usize, to: usize, len: usize) -> Option<Instant> {
        let Link::Throttle { bytes_per_s } = self.link(from, to) else {
            return None;
        };
        let took = Duration::from_secs_f64(len as f64 / bytes_per_s.max(1) as f64);
        let mut free_at = self.link_free_at.lock().expect("pacing lock");
        let slot = &mut free_at[self.pair(from, to)];
        let done = (*slot).max(Instant::now()) + took;
        *slot = done;
        Some(done)
    }

    fn jittered(&self, base: Duration, jitter: Duration) -> Duration {
        if jitter.is_zero() {
            return base;
        }
        let j = jitter.as_micros() as u64;
        let draw = self.rng.lock().expect("rng lock").below(2 * j + 1);
        (base + Duration::from_micros(draw)).saturating_sub(jitter)
    }
}

/// The proxy: its listeners run on a runtime of their own until dropped.
pub struct PeerProxy {
    shared: Arc<Shared>,
    runtime: Option<tokio::runtime::Runtime>,
    listeners: Vec<JoinHandle<()>>,
}

impl PeerProxy {
    /// Binds every route's listen address and starts forwarding. `seed`
    /// drives the delay jitter.
    pub fn start(
        members: usize,
        routes: &[Route],
        identify: Arc<dyn Identify>,
        seed: u64,
    ) -> io::Result<PeerProxy> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("peer-proxy")
            .enable_all()
            .build()?;
        let (changed, _) = watch::channel(0);
        let shared = Arc::new(Shared {
            members,
            links: Mutex::new(vec![vec![Link::Pass; members + 1]; members + 1]),
            changed,
            conns: Mutex::new(HashMap::new()),
            next_id: AtomicU64::new(1),
            accepted: AtomicU64::new(0),
            identified: AtomicU64::new(0),
            refused: AtomicU64::new(0),
            bytes: AtomicU64::new(0),
            link_bytes: (0..(members + 1) * (members + 1))
                .map(|_| AtomicU64::new(0))
                .collect(),
            link_free_at: Mutex::new(vec![Instant::now(); (members + 1) * (members + 1)]),
            resets: AtomicU64::new(0),
            rng: Mutex::new(Rng::new(seed)),
        });
        let mut listeners = Vec::new();
        for r in routes {
            let std_listener = std::net::TcpListener::bind(r.listen)?;
            std_listener.set_nonblocking(true)?;
            let listener = {
                let _guard = runtime.enter();
                TcpListener::from_std(std_listener)?
            };
            listeners.push(runtime.spawn(accept_loop(
                listener,
                *r,
                Arc::clone(&shared),
                Arc::clone(&identify),
            )));
        }
        Ok(PeerProxy {
            shared,
            runtime: Some(runtime),
            listeners,
        })
    }

    fn update(&self, f: impl FnOnce(&mut Vec<Vec<Link>>)) {
        {
            let mut links = self.shared.links.lock().expect("links lock");
            f(&mut links);
        }
        self.shared.changed.send_modify(|v| *v += 1);
    }

    /// Sets what happens to bytes from `from` to `to`.
    pub fn set_link(&self, from: usize, to: usize, link: Link) {
        self.update(|l| l[from][to] = link);
    }

    /// Blackholes every pair of members in different groups, both ways.
    pub fn partition(&self, groups: &[Vec<usize>]) {
        self.update(|l| {
            for (i, a) in groups.iter().enumerate() {
                for b in groups.iter().skip(i + 1) {
                    for &x in a {
                        for &y in b {
                            l[x][y] = Link::Blackhole;
                            l[y][x] = Link::Blackhole;
                        }
                    }
                }
            }
        });
    }

    /// Cuts member `m` off from every other member and from unidentified
    /// callers, both ways.
    pub fn isolate(&self, m: usize) {
        let n = self.shared.members;
        self.update(|l| {
            for (other, row) in l.iter_mut().enumerate().take(n + 1) {
                if other != m {
                    row[m] = Link::Blackhole;
                }
            }
            for (other, cell) in l[m].iter_mut().enumerate() {
                if other != m {
                    *cell = Link::Blackhole;
                }
            }
        });
    }

    /// The same link on every ordered pair of members.
    pub fn set_all(&self, link: Link) {
        let n = self.shared.members;
        self.update(|l| {
            for row in l.iter_mut().take(n + 1) {
                for cell in row.iter_mut() {
                    *cell = link;
                }
            }
        });
    }

    /// Every link passes again, except those into member `m` (from every
    /// other member and from unidentified callers), which become `into`.
    pub fn heal_except_into(&self, m: usize, into: Link) {
        let n = self.shared.members;
        self.update(|l| {
            for (a, row) in l.iter_mut().enumerate().take(n + 1) {
                for (b, cell) in row.iter_mut().enumerate() {
                    *cell = if b == m && a != m { into } else { Link::Pass };
                }
            }
        });
    }

    /// Every link passes again.
    pub fn heal(&self) {
        self.set_all(Link::Pass);
    }

    /// Closes (RST) every open connection between `a` and `b`, either way.
    pub fn reset(&self, a: usize, b: usize) {
        self.reset_where(|c| {
            (c.caller == Some(a) && c.callee == b) || (c.caller == Some(b) && c.callee == a)
        });
    }

    /// Closes every open connection to or from member `m`.
    pub fn reset_member(&self, m: usize) {
        self.reset_where(|c| c.caller == Some(m) || c.callee == m);
    }

    fn reset_where(&self, pred: impl Fn(&ConnInfo) -> bool) {
        let doomed: Vec<Conn> = {
            let mut conns = self.shared.conns.lock().expect("conns lock");
            let ids: Vec<u64> = conns
                .values()
                .filter(|c| pred(&c.info))
                .map(|c| c.info.id)
                .collect();
            ids.iter().filter_map(|id| conns.remove(id)).collect()
        };
        for c in doomed {
            self.shared.resets.fetch_add(1, Ordering::Relaxed);
            // The sockets have SO_LINGER 0: dropping them sends RST.
            for t in c.tasks {
                t.abort();
            }
        }
    }

    pub fn connections(&self) -> Vec<ConnInfo> {
        let mut v: Vec<ConnInfo> = self
            .shared
            .conns
            .lock()
            .expect("conns lock")
            .values()
            .map(|c| c.info.clone())
            .collect();
        v.sort_by_key(|c| c.id);
        v
    }

    /// Bytes delivered so far from member `from` to member `to`, over all
    /// their connections.
    pub fn link_bytes(&self, from: usize, to: usize) -> u64 {
        self.shared.link_bytes[self.shared.pair(from, to)].load(Ordering::Relaxed)
    }

    pub fn stats(&self) -> ProxyStats {
        let s = &self.shared;
        ProxyStats {
            accepted: s.accepted.load(Ordering::Relaxed),
            identified: s.identified.load(Ordering::Relaxed),
            refused: s.refused.load(Ordering::Relaxed),
            bytes: s.bytes.load(Ordering::Relaxed),
            resets: s.resets.load(Ordering::Relaxed),
        }
    }
}

impl Drop for PeerProxy {
    fn drop(&mut self) {
        for l in &self.listeners {
            l.abort();
        }
        self.reset_where(|_| true);
        // Without waiting: the proxy may be dropped inside another runtime,
        // where blocking is not allowed. The tasks were aborted above.
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
    }
}

async fn accept_loop(
    listener: TcpListener,
    route: Route,
    shared: Arc<Shared>,
    identify: Arc<dyn Identify>,
) {
    loop {
        let Ok((sock, peer)) = listener.accept().await else {
            // Out of file descriptors and the like: back off, bounded.
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        shared.accepted.fetch_add(1, Ordering::Relaxed);
        if shared.conns.lock().expect("conns lock").len() >= MAX_CONNECTIONS {
            shared.refused.fetch_add(1, Ordering::Relaxed);
            let _ = sock.set_zero_linger();
            continue;
        }
        let shared = Arc::clone(&shared);
        let identify = Arc::clone(&identify);
        tokio::spawn(async move {
            let local = route.listen;
            let caller = tokio::task::spawn_blocking(move || identify.caller(peer, local))
                .await
                .ok()
                .flatten();
            if caller.is_some() {
                shared.identified.fetch_add(1, Ordering::Relaxed);
            }
            start_conn(sock, caller, route, shared);
        });
    }
}

/// Registers a connection and starts its two directions.
fn start_conn(client: TcpStream, caller: Option<usize>, route: Route, shared: Arc<Shared>) {
    let id = shared.next_id.fetch_add(1, Ordering::Relaxed);
    let from = caller.unwrap_or(shared.members);
    let to = route.member;
    let _ = client.set_zero_linger();
    let _ = client.set_nodelay(true);
    // Registered before the task starts, so that the task's removal of the
    // entry when the connection ends can never come first.
    shared.conns.lock().expect("conns lock").insert(
        id,
        Conn {
            info: ConnInfo {
                id,
                caller,
                callee: route.member,
            },
            tasks: vec![],
        },
    );
    let s = Arc::clone(&shared);
    // One task owns the connection; the registry can abort it (reset).
    let task = tokio::spawn(async move {
        // The caller's first bytes cannot reach the member while the link
        // is down, and neither can the connection itself.
        wait_passable(&s, from, to).await;
        let upstream = match tokio::time::timeout(
            UPSTREAM_CONNECT_TIMEOUT,
            TcpStream::connect(route.upstream),
        )
        .await
        {
            Ok(Ok(u)) => u,
            // The member is down: the caller sees its connection reset.
            _ => {
                s.conns.lock().expect("conns lock").remove(&id);
                return;
            }
        };
        let _ = upstream.set_zero_linger();
        let _ = upstream.set_nodelay(true);
        let (cr, cw) = client.into_split();
        let (ur, uw) = upstream.into_split();
        let up = pump(cr, uw, from, to, Arc::clone(&s));
        let down = pump(ur, cw, to, from, Arc::clone(&s));
        tokio::join!(up, down);
        s.conns.lock().expect("conns lock").remove(&id);
    });
    match shared.conns.lock().expect("conns lock").get_mut(&id) {
        Some(c) => c.tasks.push(task),
        // Already over (the member was down).
        None => drop(task),
    }
}

/// Waits until bytes from `from` to `to` may flow.
async fn wait_passable(shared: &Shared, from: usize, to: usize) {
    let mut rx = shared.changed.subscribe();
    while shared.link(from, to) == Link::Blackhole {
        if rx.changed().await.is_err() {
            return;
        }
    }
}

/// Forwards one direction: reads chunks, stamps each with its delivery
/// time, and writes them in order once due and while the link passes.
async fn pump(
    mut r: tokio::net::tcp::OwnedReadHalf,
    mut w: tokio::net::tcp::OwnedWriteHalf,
    from: usize,
    to: usize,
    shared: Arc<Shared>,
) {
    // The channel is unbounded in chunks; the semaphore bounds it in bytes
    // (a permit per byte, taken before reading, returned once delivered).
    let (tx, mut rx) = mpsc::unbounded_channel::<(Vec<u8>, Instant)>();
    let budget = Arc::new(Semaphore::new(QUEUE_BYTES));
    let writer_budget = Arc::clone(&budget);
    let reader_shared = Arc::clone(&shared);
    let reader = async move {
        let mut last_due = Instant::now();
        loop {
            let Ok(permits) = Arc::clone(&budget)
                .acquire_many_owned(CHUNK_BYTES as u32)
                .await
            else {
                break;
            };
            let mut buf = vec![0u8; CHUNK_BYTES];
            let n = match r.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            buf.truncate(n);
            // Keep only what this chunk holds; the writer gives it back.
            permits.forget();
            budget.add_permits(CHUNK_BYTES - n);
            let now = Instant::now();
            let due = match reader_shared.link(from, to) {
                Link::Delay { base, jitter } => now + reader_shared.jittered(base, jitter),
                _ => now,
            };
            // Never overtake an earlier chunk.
            last_due = last_due.max(due);
            if tx.send((buf, last_due)).is_err() {
                break;
            }
        }
        // Dropping `tx` tells the writer the sender is done.
    };
    let writer = async move {
        while let Some((buf, due)) = rx.recv().await {
            tokio::time::sleep_until(due).await;
            wait_passable(&shared, from, to).await;
            if let Some(through) = shared.paced(from, to, buf.len()) {
                tokio::time::sleep_until(through).await;
            }
            if w.write_all(&buf).await.is_err() {
                return;
            }
            writer_budget.add_permits(buf.len());
            shared.bytes.fetch_add(buf.len() as u64, Ordering::Relaxed);
            shared.link_bytes[shared.pair(from, to)].fetch_add(buf.len() as u64, Ordering::Relaxed);
        }
        // Pass the half-close on.
        let _ = w.shutdown().await;
    };
    tokio::join!(reader, writer);
}

#[cfg(test)]
mod tests;
