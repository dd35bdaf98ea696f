//! The workload: KV clients (put, get linearizable and serializable, delete,
//! CAS txns, txns over a key group, range reads), lease clients (grant, put
//! attached keys, keep alive, revoke or let expire) and watchers (one per
//! member, resumed on another member when their stream breaks). Every call
//! is recorded with its invocation and completion instants.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use cairn_robustness::history::{
    Compare, CompareOp, CompareTarget, Event, EventKind, ReceivedEvent, Request, Response, TxnOp,
    Watch, prefix_end,
};
use cairn_robustness::rng::Rng;
use etcd_client::{GetOptions, PutOptions, WatchOptions};

use super::record::{Recorder, call, get_response, kv, txn_response, unreachable};

/// Every key of the workload starts with this.
pub const PREFIX: &str = "/rb/";
/// Key groups: `/rb/g<i>/a` and `/rb/g<i>/b`; txns stay inside one group, so
/// each group is one object for the linearizability check.
pub const GROUPS: u64 = 8;
/// The key the harness writes at the end to learn how far watchers got.
pub const FENCE_KEY: &str = "/rb/fence";
/// Pause after a call that could not reach its member.
const UNREACHABLE_PAUSE: Duration = Duration::from_millis(100);

fn group_key(g: u64, k: &str) -> String {
    format!("{PREFIX}g{g}/{k}")
}

/// A connected client per member, and the flag that stops the workload.
#[derive(Clone)]
pub struct Ctx {
    pub rec: Recorder,
    pub clients: Vec<etcd_client::Client>,
    pub stop: Arc<AtomicBool>,
}

impl Ctx {
    fn stopped(&self) -> bool {
        self.stop.load(Ordering::Relaxed)
    }
}

/// The user the workload runs as when a run turns auth on.
pub const USER: (&str, &str) = ("root", "rb-root-password");

/// A client of one member; with `auth`, logged in as [`USER`], and logging
/// in again when a member no longer knows its token (simple tokens live in
/// a member's memory, so a restarted member forgets them), as etcd's own
/// clients do.
pub async fn connect(
    endpoint: &str,
    auth: bool,
) -> Result<etcd_client::Client, etcd_client::Error> {
    let mut opts = etcd_client::ConnectOptions::new()
        .with_connect_timeout(Duration::from_secs(2))
        .with_timeout(super::record::OP_TIMEOUT)
        // Find a dead or stopped member's connections without waiting for
        // TCP: watch streams would otherwise hang on them forever.
        .with_keep_alive(Duration::from_secs(1), Duration::from_secs(2))
        .with_keep_alive_while_idle(true);
    if auth {
        opts = opts.with_user(USER.0, USER.1).with_auto_token_refresh(true);
    }
    etcd_client::Client::connect([endpoint], Some(opts)).await
}

/// Adds [`USER`] with the root role and turns auth on, through `c`.
pub async fn enable_auth(c: &etcd_client::Client) -> Result<(), etcd_client::Error> {
    let mut c = c.clone();
    c.user_add(USER.0, USER.1, None).await?;
    c.user_grant_role(USER.0, "root").await?;
    c.auth_enable().await?;
    Ok(())
}

/// One KV client bound to one member until stopped.
pub async fn kv_client(ctx: Ctx, client: u32, member: usize, seed: u64) {
    let mut rng = Rng::new(seed);
    let mut c = ctx.clients[member].clone();
    let m = member as u32;
    let mut seq = 0u64;
    // The mod revision this client last saw per key, for CAS.
    let mut seen_mod: HashMap<String, i64> = HashMap::new();
    while !ctx.stopped() {
        seq += 1;
        let g = rng.below(GROUPS);
        let key = group_key(g, if rng.chance(0.5) { "a" } else { "b" });
        let value = format!("c{client}-{seq}");
        let invoked = ctx.rec.now();
        let (request, outcome) = match rng.below(100) {
            0..=29 => {
                let (o, _) = call(c.put(key.clone(), value.clone(), None), |r| Response::Put {
                    revision: r.header().map_or(0, |h| h.revision()),
                })
                .await;
                (
                    Request::Put {
                        key,
                        value,
                        lease: 0,
                    },
                    o,
                )
            }
            30..=57 => {
                let serializable = rng.below(100) >= 70;
                let opts = serializable.then(|| GetOptions::new().with_serializable());
                let (o, r) = call(c.get(key.clone(), opts), get_response).await;
                if let Some(r) = r {
                    let m = r.kvs().first().map_or(0, |kv| kv.mod_revision());
                    seen_mod.insert(key.clone(), m);
                }
                (
                    Request::Get {
                        key,
                        range_end: None,
                        serializable,
                    },
                    o,
                )
            }
            58..=62 => {
                let (o, _) = call(c.delete(key.clone(), None), |r| Response::Delete {
                    revision: r.header().map_or(0, |h| h.revision()),
                    deleted: r.deleted(),
                })
                .await;
                (Request::Delete { key }, o)
            }
            63..=82 => {
                // Compare-and-swap on what this client last saw.
                let expect = seen_mod.get(&key).copied().unwrap_or(0);
                let txn = etcd_client::Txn::new()
                    .when([etcd_client::Compare::mod_revision(
                        key.clone(),
                        etcd_client::CompareOp::Equal,
                        expect,
                    )])
                    .and_then([etcd_client::TxnOp::put(key.clone(), value.clone(), None)])
                    .or_else([etcd_client::TxnOp::get(key.clone(), None)]);
                let (o, r) = call(c.txn(txn), txn_response).await;
                if let Some(r) = r {
                    for op in r.op_responses() {
                        if let etcd_client::TxnOpResponse::Get(gr) = op {
                            let m = gr.kvs().first().map_or(0, |kv| kv.mod_revision());
                            seen_mod.insert(key.clone(), m);
                        }
                    }
                }
                (
                    Request::Txn {
                        compares: vec![Compare {
                            key: key.clone(),
                            op: CompareOp::Equal,
                            target: CompareTarget::ModRevision(expect),
                        }],
                        success: vec![TxnOp::Put {
                            key: key.clone(),
                            value,
                            lease: 0,
                        }],
                        failure: vec![TxnOp::Get { key }],
                    },
                    o,
                )
            }
            83..=89 => {
                // Both keys of a group at once, or clear b.
                let (a, b) = (group_key(g, "a"), group_key(g, "b"));
                let min_version = rng.below(3) as i64;
                let txn = etcd_client::Txn::new()
                    .when([etcd_client::Compare::version(
                        a.clone(),
                        etcd_client::CompareOp::Greater,
                        min_version,
                    )])
                    .and_then([
                        etcd_client::TxnOp::put(a.clone(), format!("{value}a"), None),
                        etcd_client::TxnOp::put(b.clone(), format!("{value}b"), None),
                    ])
                    .or_else([etcd_client::TxnOp::delete(b.clone(), None)]);
                let (o, _) = call(c.txn(txn), txn_response).await;
                (
                    Request::Txn {
                        compares: vec![Compare {
                            key: a.clone(),
                            op: CompareOp::Greater,
                            target: CompareTarget::Version(min_version),
                        }],
                        success: vec![
                            TxnOp::Put {
                                key: a,
                                value: format!("{value}a"),
                                lease: 0,
                            },
                            TxnOp::Put {
                                key: b.clone(),
                                value: format!("{value}b"),
                                lease: 0,
                            },
                        ],
                        failure: vec![TxnOp::Delete { key: b }],
                    },
                    o,
                )
            }
            _ => {
                let start = format!("{PREFIX}g{g}/");
                let end = prefix_end(&start);
                let (o, _) = call(
                    c.get(
                        start.clone(),
                        Some(GetOptions::new().with_range(end.clone())),
                    ),
                    get_response,
                )
                .await;
                (
                    Request::Get {
                        key: start,
                        range_end: Some(end),
                        serializable: false,
                    },
                    o,
                )
            }
        };
        let pause = unreachable(&outcome);
        ctx.rec.record(client, m, request, invoked, outcome);
        let think = Duration::from_millis(rng.range(1, 15));
        tokio::time::sleep(if pause { UNREACHABLE_PAUSE } else { think }).await;
    }
}

/// Leases granted by a lease client and not revoked: their keys must be gone
/// once they expire (checked at the end).
pub type OpenLeases = Arc<std::sync::Mutex<Vec<(i64, u32)>>>;

/// One lease client: grant, attach keys, keep alive for a while, then revoke
/// or abandon; rotates over the members.
pub async fn lease_client(ctx: Ctx, client: u32, seed: u64, open: OpenLeases) {
    let mut rng = Rng::new(seed);
    let members = ctx.clients.len();
    let mut round = 0u64;
    while !ctx.stopped() {
        round += 1;
        let member = (round as usize + client as usize) % members;
        let m = member as u32;
        let mut c = ctx.clients[member].clone();
        let ttl = rng.range(2, 4) as i64;
        let invoked = ctx.rec.now();
        let (o, r) = call(c.lease_grant(ttl, None), |r| Response::LeaseGrant {
            lease: r.id(),
            ttl_s: r.ttl(),
        })
        .await;
        ctx.rec
            .record(client, m, Request::LeaseGrant { ttl_s: ttl }, invoked, o);
        let Some(grant) = r else {
            tokio::time::sleep(UNREACHABLE_PAUSE).await;
            continue;
        };
        let lease = grant.id();
        open.lock().expect("leases lock").push((lease, m));
        for j in 0..rng.range(1, 2) {
            let key = format!("{PREFIX}lease/{lease:x}/k{j}");
            let value = format!("l{client}-{round}-{j}");
            let invoked = ctx.rec.now();
            let (o, _) = call(
                c.put(
                    key.clone(),
                    value.clone(),
                    Some(PutOptions::new().with_lease(lease)),
                ),
                |r| Response::Put {
                    revision: r.header().map_or(0, |h| h.revision()),
                },
            )
            .await;
            ctx.rec
                .record(client, m, Request::Put { key, value, lease }, invoked, o);
        }
        // Keep alive for a few rounds, reading a key now and then.
        let rounds = rng.range(0, 6);
        for _ in 0..rounds {
            if ctx.stopped() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(ttl as u64 * 1000 / 3)).await;
            keepalive(&ctx, &mut c, client, m, lease).await;
            if rng.chance(0.5) {
                let key = format!("{PREFIX}lease/{lease:x}/k0");
                let invoked = ctx.rec.now();
                let (o, _) = call(c.get(key.clone(), None), get_response).await;
                ctx.rec.record(
                    client,
                    m,
                    Request::Get {
                        key,
                        range_end: None,
                        serializable: false,
                    },
                    invoked,
                    o,
                );
            }
        }
        if rng.chance(0.5) {
            let invoked = ctx.rec.now();
            let (o, _) = call(c.lease_revoke(lease), |r| Response::LeaseRevoke {
                revision: r.header().map_or(0, |h| h.revision()),
            })
            .await;
            ctx.rec
                .record(client, m, Request::LeaseRevoke { lease }, invoked, o);
        }
        tokio::time::sleep(Duration::from_millis(rng.range(10, 200))).await;
    }
}

/// Keep-alive requests and the response to the last, on a stream of their
/// own (so a response can never be matched with the wrong request).
/// `lease_keep_alive` itself sends a first request and reads its response
/// (failing with "lease not found" when the TTL is 0); then one more is sent
/// and its TTL recorded. Both refreshes fall inside the recorded window.
pub async fn keepalive(ctx: &Ctx, c: &mut etcd_client::Client, client: u32, m: u32, lease: i64) {
    let invoked = ctx.rec.now();
    let fut = async {
        let (mut keeper, mut stream) = c.lease_keep_alive(lease).await?;
        keeper.keep_alive().await?;
        match stream.message().await? {
            Some(r) => Ok(r),
            None => Err(etcd_client::Error::LeaseKeepAliveError(
                "stream ended without a response".into(),
            )),
        }
    };
    let (o, _) = call(fut, |r| Response::LeaseKeepAlive { ttl_s: r.ttl() }).await;
    ctx.rec
        .record(client, m, Request::LeaseKeepAlive { lease }, invoked, o);
}

pub async fn time_to_live(ctx: &Ctx, client: u32, m: usize, lease: i64) -> Option<i64> {
    let mut c = ctx.clients[m].clone();
    let invoked = ctx.rec.now();
    let (o, r) = call(c.lease_time_to_live(lease, None), |r| {
        Response::LeaseTimeToLive { ttl_s: r.ttl() }
    })
    .await;
    ctx.rec.record(
        client,
        m as u32,
        Request::LeaseTimeToLive { lease },
        invoked,
        o,
    );
    r.map(|r| r.ttl())
}

/// The progress of one watcher (the current stream and everything before).
pub struct WatcherState {
    /// Highest revision delivered so far over all its streams.
    pub last_revision: std::sync::atomic::AtomicI64,
    /// The id of the current stream's record.
    pub current: std::sync::atomic::AtomicU32,
}

/// A watcher on the whole workload range, starting on `member`, resumed on
/// the next member whenever its stream breaks, until `stop_watch`.
pub async fn watcher(
    ctx: Ctx,
    member: usize,
    stop_watch: Arc<AtomicBool>,
    state: Arc<WatcherState>,
    start_revision: i64,
) {
    let members = ctx.clients.len();
    let mut m = member;
    let mut resumes: Option<u32> = None;
    let mut start = start_revision;
    let end = prefix_end(PREFIX);
    while !stop_watch.load(Ordering::Relaxed) {
        let id = ctx.rec.watch_id();
        state.current.store(id, Ordering::Relaxed);
        ctx.rec.add_watch(Watch {
            id,
            member: m as u32,
            key: PREFIX.into(),
            range_end: Some(end.clone()),
            start_revision: start,
            created_revision: None,
            events: vec![],
            resumes,
            complete_through: None,
            end: String::new(),
        });
        let set_end = |why: String| {
            ctx.rec.edit_watch(id, |w| w.end = why);
        };
        let mut c = ctx.clients[m].clone();
        let mut opts = WatchOptions::new().with_range(end.clone());
        if start > 0 {
            opts = opts.with_start_revision(start);
        }
        let stream =
            tokio::time::timeout(Duration::from_secs(3), c.watch(PREFIX, Some(opts))).await;
        let mut stream = match stream {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => {
                set_end(format!("could not start: {e}"));
                m = (m + 1) % members;
                tokio::time::sleep(UNREACHABLE_PAUSE).await;
                continue;
            }
            Err(_) => {
                set_end("could not start: timeout".into());
                m = (m + 1) % members;
                continue;
            }
        };
        loop {
            let next = tokio::select! {
                r = stream.message() => r,
                _ = wait_flag(&stop_watch) => break,
            };
            match next {
                Ok(Some(resp)) => {
                    let at = ctx.rec.now();
                    let created = resp
                        .created()
                        .then(|| resp.header().map(|h| h.revision()))
                        .flatten();
                    let events: Vec<ReceivedEvent> = resp
                        .events()
                        .iter()
                        .filter_map(|e| {
                            let kind = match e.event_type() {
                                etcd_client::EventType::Put => EventKind::Put,
                                etcd_client::EventType::Delete => EventKind::Delete,
                            };
                            Some(ReceivedEvent {
                                at,
                                event: Event {
                                    kind,
                                    kv: kv(e.kv()?),
                                },
                            })
                        })
                        .collect();
                    if let Some(r) = events.iter().map(|e| e.event.revision()).max() {
                        state.last_revision.fetch_max(r, Ordering::Relaxed);
                    }
                    ctx.rec.edit_watch(id, |w| {
                        if created.is_some() {
                            w.created_revision = created;
                        }
                        w.events.extend(events);
                    });
                    if resp.canceled() {
                        set_end(format!(
                            "canceled: {} (compact revision {})",
                            resp.cancel_reason(),
                            resp.compact_revision()
                        ));
                        break;
                    }
                }
                Ok(None) => {
                    set_end("stream ended".into());
                    break;
                }
                Err(e) => {
                    set_end(format!("stream error: {e}"));
                    break;
                }
            }
        }
        if stop_watch.load(Ordering::Relaxed) {
            break;
        }
        // Resume right after what was delivered, elsewhere.
        let last = state.last_revision.load(Ordering::Relaxed);
        let first = ctx
            .rec
            .edit_watch(id, |w| w.first_revision())
            .flatten()
            .unwrap_or(1);
        start = if last > 0 { last + 1 } else { first };
        resumes = Some(id);
        m = (m + 1) % members;
        tokio::time::sleep(UNREACHABLE_PAUSE).await;
    }
}

async fn wait_flag(flag: &AtomicBool) {
    while !flag.load(Ordering::Relaxed) {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
