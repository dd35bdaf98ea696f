//! Peer transport: raft messages between members over the peer URLs.
//!
//! Sending: two long-lived gRPC client streams per peer, each on its own
//! connection and fed from its own bounded queue: one for log appends, one
//! for everything else (heartbeats, votes, ReadIndex, responses). TCP
//! delivers a connection's bytes in order, so on a slow, lossy or jittery
//! link a heartbeat queued behind megabytes of appends would arrive late
//! and could cost an election; etcd splits its streams the same way. Raft
//! tolerates the reordering between the two. The raft loop never blocks on
//! the network: a full queue drops the message (raft retransmits) and
//! reports the peer unreachable. Snapshots go on a stream of their own.
//!
//! Receiving: `service::PeerService` (in the peer listener) checks the
//! cluster ID and destination of every stream, decodes the messages and
//! hands them to the raft loop's inbox.

pub mod prober;
pub mod stats;

use crate::metrics::METRICS;
use crate::pb::cairnpb::peer_client::PeerClient;
use crate::pb::cairnpb::{RaftBatch, SnapshotChunk, snapshot_chunk::Chunk};
use crate::state::membership::Membership;
use crate::storage::snapfile::{self, SnapshotRegistry};
use crate::tls::connect::PeerScheme;
use parking_lot::Mutex;
use protobuf::Message as _;
use raft::prelude::{Message, MessageType};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};
use tokio::io::AsyncReadExt;
use tokio::sync::mpsc;
use tonic::transport::{Channel, Endpoint};

/// Raft messages queued per peer before new ones are dropped.
const PEER_QUEUE_MESSAGES: usize = 4096;
/// Upper bounds for one batch on the wire.
const BATCH_MAX_MESSAGES: usize = 512;
const BATCH_MAX_BYTES: usize = 4 * 1024 * 1024;
/// Largest gRPC message a peer accepts (a batch, or one big entry).
pub const PEER_MAX_MESSAGE_BYTES: usize = 64 * 1024 * 1024;
const SNAPSHOT_CHUNK_BYTES: usize = 1024 * 1024;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
const MAX_BACKOFF: Duration = Duration::from_secs(1);
/// A stream that ended sooner than this after it opened (the peer refused
/// it, or something accepted the connection and closed it) is retried after
/// a growing backoff rather than at once.
const STREAM_STABLE: Duration = Duration::from_secs(1);
/// Deadline of one forwarded request (lease keep-alive, TTL).
const RPC_TIMEOUT: Duration = Duration::from_secs(2);

pub const HDR_CLUSTER_ID: &str = "x-cairn-cluster-id";
pub const HDR_FROM: &str = "x-cairn-from";
pub const HDR_TO: &str = "x-cairn-to";
/// The size of a snapshot file in bytes, announced before its data.
pub const HDR_SNAPSHOT_BYTES: &str = "x-cairn-snapshot-bytes";
/// What the transport tells raft about its deliveries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Report {
    /// Messages to this peer could not be delivered.
    Unreachable(u64),
    /// A snapshot stream to `to` ended (`ok`: the peer took it).
    SnapshotSent { to: u64, ok: bool },
}

/// Where the raft node sends its messages: the peer transport in a member,
/// an in-memory network in the core simulation (`boot/sim.rs`). Reports
/// about deliveries come back on the node's inbox (`Report`).
pub trait Outbox: Send + Sync {
    /// Queues messages for their peers. Never blocks.
    fn send(&self, msgs: Vec<Message>);
    /// "name at url: connected|unreachable" for every other member, for the
    /// node's no-leader warning.
    fn describe_peers(&self) -> String;
    /// How many other members are reachable now.
    fn connected_count(&self) -> usize;
}

impl Outbox for Arc<Transport> {
    fn send(&self, msgs: Vec<Message>) {
        Transport::send(self, msgs);
    }
    fn describe_peers(&self) -> String {
        Transport::describe_peers(self)
    }
    fn connected_count(&self) -> usize {
        self.connected_peers().len()
    }
}

/// A forwarded client request's token (see `auth::Credential`).
pub const HDR_CALLER_TOKEN: &str = "x-cairn-caller-token";
/// A forwarded client request's verified certificate common name; the
/// receiver believes it only from a peer that presented a verified
/// certificate itself.
pub const HDR_CALLER_CN: &str = "x-cairn-caller-cn";

/// Which of a peer's two streams a message goes on (see the module doc).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Lane {
    Append,
    Message,
}

impl Lane {
    fn of(m: &Message) -> Lane {
        if m.get_msg_type() == MessageType::MsgAppend {
            Lane::Append
        } else {
            Lane::Message
        }
    }
}

struct Peer {
    appends: mpsc::Sender<Message>,
    messages: mpsc::Sender<Message>,
    /// The message stream's state: it carries heartbeats and votes, so it
    /// is what says the peer is reachable.
    connected: Arc<AtomicBool>,
    /// When the current stream to the peer was established; `None` while
    /// disconnected. Membership changes use it to judge cluster health.
    active_since: Arc<Mutex<Option<Instant>>>,
}

/// The sender task's view of its peer's connection state.
struct Link {
    connected: Arc<AtomicBool>,
    active_since: Arc<Mutex<Option<Instant>>>,
    /// etcd's labels for the peer metrics: this member's and the peer's ID.
    local: String,
    remote: String,
}

impl Link {
    fn set(&self, up: bool) {
        self.connected.store(up, Ordering::Release);
        let mut since = self.active_since.lock();
        let labels = [self.local.as_str(), self.remote.as_str()];
        match (up, since.is_some()) {
            (true, false) => {
                *since = Some(Instant::now());
                METRICS.active_peers.with_label_values(&labels).set(1);
            }
            (false, true) => {
                *since = None;
                METRICS.active_peers.with_label_values(&labels).set(0);
                METRICS.disconnected_peers.with_label_values(&labels).inc();
            }
            (false, false) | (true, true) => {}
        }
    }

    /// The peer was removed from the cluster: its series go.
    fn forget(&self) {
        let _ = METRICS
            .active_peers
            .remove_label_values(&[self.local.as_str(), self.remote.as_str()]);
    }
}

pub struct Transport {
    self_id: u64,
    cluster_id: u64,
    membership: Arc<Membership>,
    snapshots: Arc<SnapshotRegistry>,
    peers: Mutex<HashMap<u64, Peer>>,
    /// Channels for request/response RPCs to peers (lease forwarding),
    /// connected lazily and reused.
    rpc_channels: Mutex<HashMap<u64, Channel>>,
    /// Where delivery reports go (the raft loop; see `attach`).
    reports: OnceLock<Box<dyn Fn(Report) + Send + Sync>>,
    /// Peer TLS (`--peer-*`), for `https` peer URLs; unset without it.
    tls: OnceLock<Arc<crate::tls::ReloadableTlsConfig>>,
    rt: tokio::runtime::Handle,
    pub stats: stats::TransportStats,
    /// The last successful probe of each peer (see `prober`).
    pub probes: prober::ProbeTable,
}

impl Transport {
    pub fn new(
        self_id: u64,
        cluster_id: u64,
        membership: Arc<Membership>,
        snapshots: Arc<SnapshotRegistry>,
        rt: tokio::runtime::Handle,
    ) -> Arc<Transport> {
        Arc::new(Transport {
            self_id,
            cluster_id,
            membership,
            snapshots,
            peers: Mutex::new(HashMap::new()),
            rpc_channels: Mutex::new(HashMap::new()),
            reports: OnceLock::new(),
            tls: OnceLock::new(),
            rt,
            stats: stats::TransportStats::default(),
            probes: prober::ProbeTable::default(),
        })
    }

    /// Sets the peer TLS configuration used to dial `https` peer URLs
    /// (before `start`). Each new connection takes its current certificate
    /// and CA bundle, so reloads apply from the next reconnect on.
    pub fn set_tls(&self, tls: Arc<crate::tls::ReloadableTlsConfig>) {
        let _ = self.tls.set(tls);
    }

    /// Connects the transport's delivery reports to the raft loop (they
    /// are built in a cycle). Reports are advisory: the sink may drop them
    /// (raft notices a silent peer on its own), and must not block.
    pub fn attach(&self, sink: impl Fn(Report) + Send + Sync + 'static) {
        let _ = self.reports.set(Box::new(sink));
    }

    fn report(&self, r: Report) {
        if let Some(sink) = self.reports.get() {
            sink(r);
        }
    }

    /// Starts senders for every other member now, so connections (and the
    /// "waiting for peers" picture) exist before raft has anything to say.
    pub fn start(self: &Arc<Self>) {
        for id in self.membership.ids() {
            if id != self.self_id {
                self.with_peer(id, |_| {});
            }
        }
        self.rt.spawn(prober::run(Arc::clone(self)));
    }

    fn with_peer(self: &Arc<Self>, id: u64, f: impl FnOnce(&Peer)) {
        let mut peers = self.peers.lock();
        let peer = peers.entry(id).or_insert_with(|| {
            let (appends, appends_rx) = mpsc::channel(PEER_QUEUE_MESSAGES);
            let (messages, messages_rx) = mpsc::channel(PEER_QUEUE_MESSAGES);
            let connected = Arc::new(AtomicBool::new(false));
            let active_since = Arc::new(Mutex::new(None));
            let link = Link {
                connected: Arc::clone(&connected),
                active_since: Arc::clone(&active_since),
                local: format!("{:x}", self.self_id),
                remote: format!("{id:x}"),
            };
            let this = Arc::clone(self);
            crate::crash::spawn_task_on(&self.rt, "peer sender", async move {
                this.run_sender(id, messages_rx, Some(link)).await
            });
            let this = Arc::clone(self);
            crate::crash::spawn_task_on(&self.rt, "peer append sender", async move {
                this.run_sender(id, appends_rx, None).await
            });
            Peer {
                appends,
                messages,
                connected,
                active_since,
            }
        });
        f(peer);
    }

    /// Queues messages for their peers. Never blocks.
    pub fn send(self: &Arc<Self>, msgs: Vec<Message>) {
        for m in msgs {
            let to = m.to;
            if to == self.self_id || to == 0 {
                continue;
            }
            if m.get_msg_type() == MessageType::MsgSnapshot {
                let this = Arc::clone(self);
                self.rt.spawn(async move { this.send_snapshot(m).await });
                continue;
            }
            if m.get_msg_type() == MessageType::MsgAppend {
                self.stats.append_sent();
            }
            let mut dropped = false;
            self.with_peer(to, |p| {
                let queue = match Lane::of(&m) {
                    Lane::Append => &p.appends,
                    Lane::Message => &p.messages,
                };
                dropped = queue.try_send(m).is_err();
            });
            self.stats.delivery(to, !dropped);
            if dropped {
                sent_failure(to, 1);
                self.report(Report::Unreachable(to));
            }
        }
    }

    pub fn connected_peers(&self) -> Vec<u64> {
        self.peers
            .lock()
            .iter()
            .filter(|(_, p)| p.connected.load(Ordering::Acquire))
            .map(|(id, _)| *id)
            .collect()
    }

    /// Since when the stream to `id` has been up; `None` if it is down (or
    /// `id` is this member).
    pub fn active_since(&self, id: u64) -> Option<Instant> {
        self.peers
            .lock()
            .get(&id)
            .and_then(|p| *p.active_since.lock())
    }

    /// "name at url: connected|unreachable" for every other member.
    pub fn describe_peers(&self) -> String {
        let connected = self.connected_peers();
        let mut parts = Vec::new();
        for id in self.membership.ids() {
            if id == self.self_id {
                continue;
            }
            let rec = self.membership.member(id);
            let name = rec.as_ref().map(|r| r.name.clone()).unwrap_or_default();
            let url = rec
                .and_then(|r| r.peer_urls.first().cloned())
                .unwrap_or_default();
            let state = if connected.contains(&id) {
                "connected"
            } else {
                "unreachable"
            };
            parts.push(format!("{name} {id:x} at {url}: {state}"));
        }
        parts.join("; ")
    }

    /// The tonic endpoint for a peer URL. For `https`, `unix` and `unixs`
    /// URLs tonic gets the URL with an `http` scheme and a connector of
    /// ours (`tls::connect::PeerConnector`) does the dialing, so TLS never
    /// depends on tonic's own TLS features.
    fn endpoint(&self, url: &str) -> Option<Endpoint> {
        let plain = match url.split_once("://") {
            Some(("https" | "unix" | "unixs", rest)) => format!("http://{rest}"),
            _ => url.to_string(),
        };
        Endpoint::from_shared(plain).ok().map(|e| {
            e.connect_timeout(CONNECT_TIMEOUT)
                .tcp_nodelay(true)
                .http2_keep_alive_interval(Duration::from_secs(5))
                .keep_alive_timeout(Duration::from_secs(5))
        })
    }

    async fn connect(&self, id: u64, attempt: usize) -> Option<PeerClient<Channel>> {
        let urls = self.membership.peer_urls(id);
        if urls.is_empty() {
            return None;
        }
        let url = &urls[attempt % urls.len()];
        let endpoint = self.endpoint(url)?;
        let channel = match PeerScheme::of(url) {
            Some(scheme) => endpoint
                .connect_with_connector(self.connector(scheme))
                .await
                .ok()?,
            None => endpoint.connect().await.ok()?,
        };
        Some(
            PeerClient::new(channel)
                .max_decoding_message_size(PEER_MAX_MESSAGE_BYTES)
                .max_encoding_message_size(PEER_MAX_MESSAGE_BYTES),
        )
    }

    /// A client for request/response calls to a peer, on a cached lazily
    /// connected channel.
    pub fn client(&self, id: u64) -> Option<PeerClient<Channel>> {
        let mut channels = self.rpc_channels.lock();
        let channel = match channels.get(&id) {
            Some(c) => c.clone(),
            None => {
                let url = self.membership.peer_urls(id).into_iter().next()?;
                let endpoint = self.endpoint(&url)?.timeout(RPC_TIMEOUT);
                let c = match PeerScheme::of(&url) {
                    Some(scheme) => endpoint.connect_with_connector_lazy(self.connector(scheme)),
                    None => endpoint.connect_lazy(),
                };
                channels.insert(id, c.clone());
                c
            }
        };
        Some(PeerClient::new(channel))
    }

    fn connector(&self, scheme: PeerScheme) -> crate::tls::connect::PeerConnector {
        crate::tls::connect::PeerConnector {
            tls: self.tls.get().cloned(),
            scheme,
        }
    }

    /// A request carrying this cluster's and both members' IDs.
    pub fn request<T>(&self, to: u64, body: T) -> tonic::Request<T> {
        let mut req = tonic::Request::new(body);
        let md = req.metadata_mut();
        if let Ok(v) = format!("{:x}", self.cluster_id).parse() {
            md.insert(HDR_CLUSTER_ID, v);
        }
        if let Ok(v) = format!("{:x}", self.self_id).parse() {
            md.insert(HDR_FROM, v);
        }
        if let Ok(v) = format!("{to:x}").parse() {
            md.insert(HDR_TO, v);
        }
        req
    }

    /// A request on behalf of a client who presented `credential`, for the
    /// leader to check again (see `HDR_CALLER_TOKEN`).
    pub fn request_for<T>(
        &self,
        to: u64,
        body: T,
        credential: Option<&crate::auth::Credential>,
    ) -> tonic::Request<T> {
        let mut req = self.request(to, body);
        let (name, value) = match credential {
            Some(crate::auth::Credential::Token(t)) => (HDR_CALLER_TOKEN, t),
            Some(crate::auth::Credential::CommonName(cn)) => (HDR_CALLER_CN, cn),
            None => return req,
        };
        if let Ok(v) = value.parse() {
            req.metadata_mut().insert(name, v);
        }
        req
    }

    /// Feeds one of a peer's streams from its queue, reconnecting as
    /// needed. `link` is the message lane's: it alone reports the peer's
    /// state (logs, `connected`, metrics).
    async fn run_sender(
        self: Arc<Self>,
        id: u64,
        mut queue: mpsc::Receiver<Message>,
        link: Option<Link>,
    ) {
        let mut attempt = 0usize;
        let mut backoff = Duration::from_millis(50);
        let mut was_connected = false;
        let set_link = |up: bool| {
            if let Some(l) = &link {
                l.set(up);
            }
        };
        loop {
            if self.membership.member(id).is_none() {
                // Removed from the cluster: nothing will be sent to it again.
                if let Some(l) = &link {
                    tracing::info!(peer = %format!("{id:x}"), "stopped the sender of a removed member");
                    l.forget();
                }
                // (Dropping the entry ends the other lane's sender too.)
                self.peers.lock().remove(&id);
                self.stats.forget(id);
                self.rpc_channels.lock().remove(&id);
                return;
            }
            let Some(mut client) = self.connect(id, attempt).await else {
                if was_connected && link.is_some() {
                    tracing::warn!(peer = %format!("{id:x}"), "lost the connection to peer");
                }
                was_connected = false;
                set_link(false);
                attempt += 1;
                // Drop what piled up for an unreachable peer; raft resends.
                let mut dropped = 0u64;
                while queue.try_recv().is_ok() {
                    dropped += 1;
                }
                if dropped > 0 {
                    sent_failure(id, dropped);
                    self.report(Report::Unreachable(id));
                }
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(MAX_BACKOFF);
                continue;
            };
            let (tx, rx) = mpsc::channel::<RaftBatch>(8);
            let req = self.request(id, tokio_stream::wrappers::ReceiverStream::new(rx));
            let mut call = tokio::spawn(async move { client.stream(req).await });
            let opened = Instant::now();
            set_link(true);
            if !was_connected && link.is_some() {
                tracing::info!(peer = %format!("{id:x}"), "established a stream to peer");
            }
            was_connected = true;
            loop {
                let first = tokio::select! {
                    biased;
                    // The stream ended while idle: the peer restarted or
                    // the link broke. Reconnect now. A follower sends
                    // nothing to another follower until an election, and
                    // its vote request must not be the message that finds
                    // the stream dead (lost, it costs the election a full
                    // timeout).
                    _ = &mut call => break,
                    m = queue.recv() => match m {
                        Some(m) => m,
                        None => {
                            // Transport shut down, or the peer was removed
                            // (the other lane's sender dropped the entry).
                            call.abort();
                            if let Some(l) = &link
                                && self.membership.member(id).is_none()
                            {
                                l.forget();
                            }
                            return;
                        }
                    },
                };
                let mut batch = RaftBatch::default();
                let mut bytes = 0usize;
                let mut next = Some(first);
                while let Some(m) = next.take() {
                    if let Ok(b) = m.write_to_bytes() {
                        bytes += b.len();
                        batch.messages.push(b.into());
                    }
                    if batch.messages.len() < BATCH_MAX_MESSAGES && bytes < BATCH_MAX_BYTES {
                        next = queue.try_recv().ok();
                    }
                }
                let count = batch.messages.len() as u64;
                if tx.send(batch).await.is_err() || call.is_finished() {
                    sent_failure(id, count);
                    self.report(Report::Unreachable(id));
                    break;
                }
                METRICS
                    .peer_sent_bytes
                    .with_label_values(&[&format!("{id:x}")])
                    .inc_by(bytes as u64);
            }
            call.abort();
            set_link(false);
            attempt += 1;
            if opened.elapsed() < STREAM_STABLE {
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(MAX_BACKOFF);
            } else {
                backoff = Duration::from_millis(50);
            }
        }
    }

    async fn send_snapshot(self: Arc<Self>, m: Message) {
        let to = m.to;
        let md = m.get_snapshot().get_metadata().clone();
        let ok = match self.stream_snapshot(&m).await {
            Ok(()) => {
                tracing::info!(
                    peer = %format!("{to:x}"),
                    index = md.index,
                    "sent snapshot to peer"
                );
                true
            }
            Err(e) => {
                tracing::warn!(peer = %format!("{to:x}"), index = md.index, error = %e, "failed to send snapshot");
                false
            }
        };
        self.report(Report::SnapshotSent { to, ok });
    }

    async fn stream_snapshot(&self, m: &Message) -> Result<(), String> {
        let md = m.get_snapshot().get_metadata();
        let path = self
            .snapshots
            .dir()
            .join(snapfile::file_name(md.term, md.index));
        let mut file = tokio::fs::File::open(&path)
            .await
            .map_err(|e| format!("open {}: {e}", path.display()))?;
        let size_bytes = file
            .metadata()
            .await
            .map_err(|e| format!("stat {}: {e}", path.display()))?
            .len();
        let header = m.write_to_bytes().map_err(|e| e.to_string())?;
        let mut client = self
            .connect(m.to, 0)
            .await
            .ok_or_else(|| "peer unreachable".to_string())?;
        let (tx, rx) = mpsc::channel::<SnapshotChunk>(4);
        let mut req = self.request(m.to, tokio_stream::wrappers::ReceiverStream::new(rx));
        if let Ok(v) = size_bytes.to_string().parse() {
            req.metadata_mut().insert(HDR_SNAPSHOT_BYTES, v);
        }
        let call = tokio::spawn(async move { client.snapshot(req).await });
        let feed = async {
            tx.send(SnapshotChunk {
                chunk: Some(Chunk::Message(header.into())),
            })
            .await
            .map_err(|_| "stream closed".to_string())?;
            let mut buf = vec![0u8; SNAPSHOT_CHUNK_BYTES];
            loop {
                let n = file.read(&mut buf).await.map_err(|e| e.to_string())?;
                if n == 0 {
                    break;
                }
                tx.send(SnapshotChunk {
                    chunk: Some(Chunk::Data(bytes::Bytes::copy_from_slice(&buf[..n]))),
                })
                .await
                .map_err(|_| "stream closed".to_string())?;
            }
            Ok::<(), String>(())
        };
        let fed = feed.await;
        drop(tx);
        let answer = call.await.map_err(|e| e.to_string())?;
        fed?;
        answer.map(|_| ()).map_err(|s| s.message().to_string())
    }
}

/// etcd's `etcd_network_peer_sent_failures_total{To}`: messages that could
/// not be handed to a peer's stream (queue full, peer unreachable, stream
/// broken). The "members down" alert watches it.
fn sent_failure(to: u64, messages: u64) {
    METRICS
        .peer_sent_failures
        .with_label_values(&[&format!("{to:x}")])
        .inc_by(messages);
}
