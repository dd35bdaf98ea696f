//! The Watch service: one bidirectional stream carries many watchers.
//!
//! Each stream has one task that owns it: it handles create / cancel /
//! progress requests in order (so create responses come back in request
//! order, which clientv3 relies on), and turns the hub's messages for this
//! stream's watchers into responses, fragmenting large ones when asked.

use super::check_leader;
use crate::error::Error;
use crate::etcdserver::watch::{Held, HubMsg, HubSender, WatchSpec, hub_channel};
use crate::etcdserver::{EtcdServer, RequestCtx};
use crate::pb::etcdserverpb::watch_create_request::FilterType;
use crate::pb::etcdserverpb::watch_request::RequestUnion;
use crate::pb::etcdserverpb::watch_server::Watch;
use crate::pb::etcdserverpb::{WatchCreateRequest, WatchRequest, WatchResponse};
use crate::storage::mvcc::index::KeyRange;
use bytes::Bytes;
use prost::Message as _;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use tonic::{Request, Response, Status, Streaming};

/// Hub messages queued per stream before its watchers count as slow.
const STREAM_QUEUE: usize = 1024;
/// Event bytes (keys and values) a stream may hold between the hub and the
/// client before its watchers count as slow and are replayed from the
/// store: what a stalled client can pin in memory.
const STREAM_QUEUE_BYTES: usize = 4 << 20;
/// Responses queued towards the client.
const OUT_QUEUE: usize = 64;
/// Watchers one stream may hold.
const MAX_WATCHERS_PER_STREAM: usize = 100_000;
/// etcd cancels `hasleader` streams after this many election timeouts
/// without a leader.
const NO_LEADER_TIMEOUTS: u32 = 3;

/// etcd's error for a client-chosen ID already in use on the stream.
const DUPLICATE_ID: &str = "mvcc: duplicate watch ID provided on the WatchStream";

pub struct WatchService {
    pub srv: Arc<EtcdServer>,
    pub election_timeout: Duration,
}

pub type ResponseStream = tonic::codegen::BoxStream<WatchResponse>;

/// etcd's key normalisation for watches: an empty key means "\0", and a
/// range end of "\0" means "every key from here on".
pub fn watch_range(key: &Bytes, range_end: &Bytes) -> KeyRange {
    let key = if key.is_empty() {
        Bytes::from_static(b"\0")
    } else {
        key.clone()
    };
    KeyRange::new(&key, range_end)
}

/// A response to the client and the hub bytes it holds, if any.
type Outgoing = (Result<WatchResponse, Status>, Option<Arc<Held>>);

struct StreamState {
    srv: Arc<EtcdServer>,
    /// Who opened the stream: every watch created on it reads as them.
    ctx: RequestCtx,
    hub_tx: HubSender,
    /// Responses to the client, each holding (if it came from the hub) its
    /// message's bytes against the stream's budget until tonic takes it.
    out: mpsc::Sender<Outgoing>,
    /// watch id → hub handle.
    watchers: HashMap<i64, u64>,
    fragment: HashSet<i64>,
    next_id: i64,
}

impl StreamState {
    fn header(&self, revision: i64) -> Option<crate::pb::etcdserverpb::ResponseHeader> {
        Some(self.srv.header(revision))
    }

    async fn send(&self, r: WatchResponse) -> bool {
        self.out.send((Ok(r), None)).await.is_ok()
    }

    async fn send_held(&self, r: WatchResponse, held: &Arc<Held>) -> bool {
        self.out.send((Ok(r), Some(Arc::clone(held)))).await.is_ok()
    }

    async fn create(&mut self, c: WatchCreateRequest) -> bool {
        let current = self.srv.store().current_rev();
        let checked = match self.srv.check_read(&self.ctx, &c.key, &c.range_end) {
            Ok(()) => {
                let ctx = self.ctx.until(self.srv.deadline());
                self.srv.plugin_check_read(&ctx, &c.key, &c.range_end).await
            }
            Err(e) => Err(e),
        };
        if let Err(e) = checked {
            // etcd refuses a watch it may not serve with a canceled create
            // response whose reason is the gRPC error's text.
            let status = tonic::Status::from(e);
            return self
                .send(WatchResponse {
                    header: self.header(current),
                    watch_id: -1,
                    created: true,
                    canceled: true,
                    cancel_reason: format!(
                        "rpc error: code = {:?} desc = {}",
                        status.code(),
                        status.message()
                    ),
                    ..Default::default()
                })
                .await;
        }
        let start_rev = if c.start_revision == 0 {
            current + 1
        } else {
            c.start_revision
        };
        let id = if c.watch_id != 0 {
            if self.watchers.contains_key(&c.watch_id) {
                return self
                    .send(WatchResponse {
                        header: self.header(current),
                        watch_id: -1,
                        created: true,
                        canceled: true,
                        cancel_reason: DUPLICATE_ID.to_string(),
                        ..Default::default()
                    })
                    .await;
            }
            c.watch_id
        } else {
            while self.watchers.contains_key(&self.next_id) {
                self.next_id += 1;
            }
            let id = self.next_id;
            self.next_id += 1;
            id
        };
        if self.watchers.len() >= MAX_WATCHERS_PER_STREAM {
            return self
                .send(WatchResponse {
                    header: self.header(current),
                    watch_id: -1,
                    created: true,
                    canceled: true,
                    cancel_reason: format!(
                        "cairn: too many watchers on one stream (limit {MAX_WATCHERS_PER_STREAM})"
                    ),
                    ..Default::default()
                })
                .await;
        }
        // The created response goes out before the watcher is registered,
        // so no event can overtake it.
        if !self
            .send(WatchResponse {
                header: self.header(current),
                watch_id: id,
                created: true,
                ..Default::default()
            })
            .await
        {
            return false;
        }
        let spec = WatchSpec {
            range: watch_range(&c.key, &c.range_end),
            start_rev,
            no_put: c.filters.contains(&(FilterType::Noput as i32)),
            no_delete: c.filters.contains(&(FilterType::Nodelete as i32)),
            prev_kv: c.prev_kv,
            progress_notify: c.progress_notify,
        };
        let handle = self.srv.hub().add(spec, id, self.hub_tx.clone());
        self.watchers.insert(id, handle);
        if c.fragment {
            self.fragment.insert(id);
        }
        true
    }

    async fn cancel(&mut self, id: i64) -> bool {
        let Some(handle) = self.watchers.remove(&id) else {
            // etcd says nothing about an unknown ID.
            return true;
        };
        self.srv.hub().remove(handle);
        self.fragment.remove(&id);
        self.send(WatchResponse {
            header: self.header(self.srv.store().current_rev()),
            watch_id: id,
            canceled: true,
            ..Default::default()
        })
        .await
    }

    async fn progress(&self) -> bool {
        let handles: Vec<u64> = self.watchers.values().copied().collect();
        let rev = self.srv.hub().progress_rev(&handles);
        self.send(WatchResponse {
            header: self.header(rev),
            watch_id: -1,
            ..Default::default()
        })
        .await
    }

    async fn deliver(&mut self, msg: HubMsg, held: Held) -> bool {
        let held = Arc::new(held);
        match msg {
            HubMsg::Events {
                watch_id,
                events,
                revision,
            } => {
                if !self.watchers.contains_key(&watch_id) {
                    return true; // cancelled meanwhile
                }
                let resp = WatchResponse {
                    header: self.header(revision),
                    watch_id,
                    events,
                    ..Default::default()
                };
                let limit = self.srv.max_request_bytes();
                if self.fragment.contains(&watch_id)
                    && resp.encoded_len() >= limit
                    && resp.events.len() > 1
                {
                    for part in fragments(resp, limit) {
                        if !self.send_held(part, &held).await {
                            return false;
                        }
                    }
                    true
                } else {
                    self.send_held(resp, &held).await
                }
            }
            HubMsg::Compacted {
                watch_id,
                compact_revision,
            } => {
                let Some(handle) = self.watchers.remove(&watch_id) else {
                    return true;
                };
                self.srv.hub().remove(handle);
                self.send(WatchResponse {
                    // etcd leaves the revision out of this header.
                    header: self.header(0),
                    watch_id,
                    canceled: true,
                    // etcd 3.4 sets no cancel reason here: clients turn the
                    // compact revision itself into "required revision has
                    // been compacted".
                    compact_revision,
                    ..Default::default()
                })
                .await
            }
            HubMsg::Progress { watch_id, revision } => {
                if !self.watchers.contains_key(&watch_id) {
                    return true;
                }
                self.send(WatchResponse {
                    header: self.header(revision),
                    watch_id,
                    ..Default::default()
                })
                .await
            }
        }
    }

    fn close(&mut self) {
        for (_, handle) in self.watchers.drain() {
            self.srv.hub().remove(handle);
        }
    }
}

/// Splits a response whose events exceed the limit: every part but the last
/// is marked `fragment`, and a part holds at least one event.
fn fragments(resp: WatchResponse, limit: usize) -> Vec<WatchResponse> {
    let mut parts = Vec::new();
    let mut cur = WatchResponse {
        header: resp.header,
        watch_id: resp.watch_id,
        fragment: true,
        ..Default::default()
    };
    for ev in resp.events {
        if !cur.events.is_empty() && cur.encoded_len() + ev.encoded_len() + 16 > limit {
            let next = WatchResponse {
                header: resp.header,
                watch_id: resp.watch_id,
                fragment: true,
                ..Default::default()
            };
            parts.push(std::mem::replace(&mut cur, next));
        }
        cur.events.push(ev);
    }
    cur.fragment = false;
    parts.push(cur);
    parts
}

/// Watch streams open on this member (gRPC and gateway together), for the
/// console's metrics page.
static OPEN_STREAMS: std::sync::atomic::AtomicI64 = std::sync::atomic::AtomicI64::new(0);

/// How many watch streams are open on this member now.
pub fn open_streams() -> i64 {
    OPEN_STREAMS.load(std::sync::atomic::Ordering::Relaxed)
}

/// Counts one open stream for as long as its task lives (however it ends).
struct OpenStream;

impl OpenStream {
    fn new() -> OpenStream {
        OPEN_STREAMS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        OpenStream
    }
}

impl Drop for OpenStream {
    fn drop(&mut self) {
        OPEN_STREAMS.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
    }
}

/// Serves one watch stream: `incoming` carries the client's requests, the
/// returned stream the responses. Shared by gRPC and the JSON gateway.
pub fn serve_stream<S>(
    srv: Arc<EtcdServer>,
    ctx: RequestCtx,
    election: Duration,
    require_leader: bool,
    mut incoming: S,
) -> ResponseStream
where
    S: tokio_stream::Stream<Item = Result<WatchRequest, Status>> + Send + Unpin + 'static,
{
    use tokio_stream::StreamExt;
    let (hub_tx, mut hub_rx) = hub_channel(STREAM_QUEUE, STREAM_QUEUE_BYTES);
    let (out_tx, out_rx) = mpsc::channel(OUT_QUEUE);
    let mut state = StreamState {
        srv,
        ctx,
        hub_tx,
        out: out_tx,
        watchers: HashMap::new(),
        fragment: HashSet::new(),
        next_id: 0,
    };
    // The stream runs in its own task; its state keeps who opened it.
    let open = OpenStream::new();
    tokio::spawn(async move {
        let _open = open;
        let mut leader_check = tokio::time::interval(election.max(Duration::from_millis(10)));
        let mut no_leader_since: Option<Instant> = None;
        loop {
            tokio::select! {
                req = incoming.next() => {
                    let keep = match req {
                        Some(Ok(r)) => match r.request_union {
                            Some(RequestUnion::CreateRequest(c)) => state.create(c).await,
                            Some(RequestUnion::CancelRequest(c)) => state.cancel(c.watch_id).await,
                            Some(RequestUnion::ProgressRequest(_)) => state.progress().await,
                            None => true,
                        },
                        // The client closed its side, or the stream broke.
                        None | Some(Err(_)) => false,
                    };
                    if !keep {
                        break;
                    }
                }
                msg = hub_rx.recv() => {
                    let Some((msg, held)) = msg else { break };
                    // The message's bytes stay counted until tonic takes its
                    // last response from the client queue, so the budget
                    // bounds everything a stalled client pins here.
                    if !state.deliver(msg, held).await {
                        break;
                    }
                }
                _ = leader_check.tick(), if require_leader => {
                    if state.srv.status().has_leader() {
                        no_leader_since = None;
                    } else {
                        let since = *no_leader_since.get_or_insert_with(Instant::now);
                        if since.elapsed() >= election * NO_LEADER_TIMEOUTS {
                            let _ = state.out.send((Err(Error::NoLeader.into()), None)).await;
                            break;
                        }
                    }
                }
            }
        }
        state.close();
    });
    // Dropping each item's `Held` as tonic takes it releases its bytes.
    Box::pin(tokio_stream::wrappers::ReceiverStream::new(out_rx).map(|(r, _held)| r))
}

#[tonic::async_trait]
impl Watch for WatchService {
    async fn watch(
        &self,
        req: Request<Streaming<WatchRequest>>,
    ) -> Result<Response<ResponseStream>, Status> {
        check_leader(&self.srv, &req)?;
        let ctx = super::request_ctx(&self.srv, &req);
        let require_leader = req
            .metadata()
            .get("hasleader")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v == "true");
        Ok(Response::new(serve_stream(
            Arc::clone(&self.srv),
            ctx,
            self.election_timeout,
            require_leader,
            req.into_inner(),
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pb::mvccpb::{Event, KeyValue};

    #[test]
    fn fragments_split_by_size_and_mark_all_but_last() {
        let ev = |n: usize| Event {
            kv: Some(KeyValue {
                key: Bytes::from(format!("k{n}")),
                value: Bytes::from(vec![b'x'; 100]),
                ..Default::default()
            }),
            ..Default::default()
        };
        let resp = WatchResponse {
            watch_id: 3,
            events: (0..10).map(ev).collect(),
            ..Default::default()
        };
        let parts = fragments(resp, 300);
        assert!(parts.len() > 1);
        assert!(parts[..parts.len() - 1].iter().all(|p| p.fragment));
        assert!(!parts[parts.len() - 1].fragment);
        assert_eq!(parts.iter().map(|p| p.events.len()).sum::<usize>(), 10);
        assert!(
            parts
                .iter()
                .all(|p| p.watch_id == 3 && !p.events.is_empty())
        );
    }

    #[test]
    fn empty_key_means_nul() {
        let r = watch_range(&Bytes::new(), &Bytes::from_static(b"\0"));
        assert!(r.contains(b"anything"));
        let r = watch_range(&Bytes::from_static(b"a"), &Bytes::new());
        assert!(r.contains(b"a") && !r.contains(b"b"));
    }
}
