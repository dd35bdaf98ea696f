//! Starting a member: open (or create) its data, build the raft node and
//! apply loop, bind the listeners, and publish the member to the cluster.
//!
//! A new member of a new cluster starts from the static `--initial-cluster`:
//! every initial member computes the same member IDs, cluster ID and voter
//! set, and stores them before raft runs, so all of them start from the same
//! configuration at index 0 (no conf-change entries needed). A restarting
//! member ignores the `--initial-*` flags and recovers from its data dir.

mod force_new;
mod notify;
#[cfg(test)]
mod sim;

use crate::api;
use crate::etcdserver::apply::{ApplyConfig, ApplyLoop};
use crate::etcdserver::node::{Node, NodeConfig, RaftMsg};
use crate::etcdserver::wait::Waiters;
use crate::etcdserver::watch::WatchHub;
use crate::etcdserver::{EtcdServer, RaftStatus, ServerParts};
use crate::ids;
use crate::pb::cairnpb::{MemberAttributes, MemberRecord, Membership as MembershipPb};
use crate::pb::etcdserverpb::{
    LeaseRevokeRequest, cluster_server::ClusterServer, kv_server::KvServer,
    lease_server::LeaseServer, maintenance_server::MaintenanceServer, watch_server::WatchServer,
};
use crate::pb::v3electionpb::election_server::ElectionServer;
use crate::pb::v3lockpb::lock_server::LockServer;
use crate::state::lease::{Lessor, MAX_REVOKES_PER_SWEEP};
use crate::state::membership::Membership;
use crate::storage::meta::{self, AppliedState};
use crate::storage::mvcc::Store;
use crate::storage::raftlog::{self, RaftLog};
use crate::storage::snapfile::{self, SnapshotRegistry};
use crate::storage::{self, Db};
use crate::transport::{PEER_MAX_MESSAGE_BYTES, Transport};
use cairn_config::{Bootstrap, ClusterState, DiscoveryFallback, ServerConfig};
use raft::prelude::ConfState;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::watch;

/// Raft log entries kept behind the applied index when the log is
/// compacted, so a follower that is only a little behind catches up from
/// the log instead of a snapshot (etcd keeps 5000).
const SNAPSHOT_CATCHUP_ENTRIES: u64 = 5000;
const RAFT_INBOX: usize = 16 * 1024;
/// Where a new cluster's raft log begins (see `bootstrap_new`).
const INITIAL_INDEX: u64 = 5;
/// How long a joining member keeps asking the existing members who they are.
const JOIN_DISCOVERY_TIMEOUT: Duration = Duration::from_secs(30);
const APPLY_QUEUE: usize = 64;
/// HTTP/2 receive windows of the peer listener: a snapshot streams at
/// several 1 MiB chunks per round trip. The cost: a connection to the peer
/// port can make us buffer up to 16 MiB before we read it. That port is for
/// members (with `--peer-client-cert-auth`, only they can connect); client
/// listeners keep hyper's 1 MiB.
const PEER_H2_STREAM_WINDOW_BYTES: u32 = 8 << 20;
const PEER_H2_CONN_WINDOW_BYTES: u32 = 16 << 20;

#[derive(Debug, thiserror::Error)]
pub enum BootError {
    #[error("{0}")]
    Storage(#[from] storage::Error),
    #[error("{0}")]
    Config(String),
    #[error("cannot listen on {url}: {source}")]
    Listen {
        url: String,
        #[source]
        source: std::io::Error,
    },
    #[error("raft: {0}")]
    Raft(#[from] raft::Error),
    /// etcd's words: "failed to join discovery cluster (<why>)".
    #[error("failed to join discovery cluster ({error}){}", proxy_note(.error, *.fallback))]
    Discovery {
        error: crate::discovery::DiscoveryError,
        fallback: DiscoveryFallback,
    },
}

/// etcd falls back to a v2 proxy when the discovery cluster is full and
/// `--discovery-fallback=proxy` (its default); Cairn has no proxy mode.
fn proxy_note(
    error: &crate::discovery::DiscoveryError,
    fallback: DiscoveryFallback,
) -> &'static str {
    match (error, fallback) {
        (crate::discovery::DiscoveryError::FullCluster, DiscoveryFallback::Proxy) => {
            "; etcd would fall back to a v2 proxy here (--discovery-fallback=proxy, the default), but cairn has no proxy mode (see docs/compatibility.md), so it exits as with --discovery-fallback=exit"
        }
        _ => "",
    }
}

/// URL strings exactly as etcd writes them (no trailing slash): member IDs
/// are hashed from these strings.
fn url_string(u: &url::Url) -> String {
    cairn_config::format_url(u)
}

fn url_strings(urls: &[url::Url]) -> Vec<String> {
    urls.iter().map(url_string).collect()
}

/// A new cluster's initial members (name, peer URLs) and the token their
/// IDs are hashed with: `--initial-cluster`, or what discovery found.
/// With `--discovery` the token is the discovery URL, as in etcd, so the
/// members get the IDs etcd members would.
async fn initial_members(
    cfg: &ServerConfig,
) -> Result<(Vec<(String, Vec<String>)>, String), BootError> {
    match &cfg.bootstrap {
        Bootstrap::Static => {
            let members = cfg
                .initial_cluster_members()
                .into_iter()
                .map(|(name, urls)| (name.to_string(), urls.into_iter().map(url_string).collect()))
                .collect();
            Ok((members, cfg.initial_cluster_token.clone()))
        }
        Bootstrap::Discovery {
            url,
            proxy,
            fallback,
        } => {
            tracing::info!("discovery URL= {url}");
            let mut own = url_strings(&cfg.initial_advertise_peer_urls);
            own.sort();
            let self_id = ids::member_id(&own, url);
            let config = crate::discovery::urls_map_string(&[(cfg.name.clone(), own)]);
            let found = crate::discovery::v2::join_cluster(url, proxy.as_deref(), self_id, &config)
                .await
                .map_err(|error| {
                    log_discovery_hints(cfg, url, &error);
                    BootError::Discovery {
                        error,
                        fallback: *fallback,
                    }
                })?;
            let members = crate::discovery::parse_urls_map(&found).map_err(BootError::Config)?;
            let mut all: Vec<&String> = members.iter().flat_map(|(_, u)| u).collect();
            let count = all.len();
            all.sort();
            all.dedup();
            if all.len() != count {
                return Err(BootError::Config(format!(
                    "discovery cluster {} has duplicate url",
                    crate::discovery::urls_map_string(&members)
                )));
            }
            Ok((members, url.clone()))
        }
        Bootstrap::Srv {
            domain,
            service_name,
        } => {
            let resolver = crate::discovery::Resolver::from_env().map_err(BootError::Config)?;
            let setup =
                |e: String| BootError::Config(format!("error setting up initial cluster: {e}"));
            let members = crate::discovery::srv::cluster(
                &resolver,
                &cfg.name,
                domain,
                service_name,
                &cfg.initial_advertise_peer_urls,
            )
            .await
            .map_err(setup)?;
            if let Some((_, own)) = members.iter().find(|(n, _)| *n == cfg.name) {
                crate::discovery::srv::check_advertised(
                    &resolver,
                    own,
                    &cfg.initial_advertise_peer_urls,
                )
                .await
                .map_err(BootError::Config)?;
            }
            Ok((members, cfg.initial_cluster_token.clone()))
        }
    }
}

/// What etcd tells the operator after a failed discovery, logged.
fn log_discovery_hints(cfg: &ServerConfig, url: &str, error: &crate::discovery::DiscoveryError) {
    use crate::discovery::DiscoveryError as E;
    match error {
        E::DuplicateId => {
            tracing::error!(
                "member {:?} has previously registered with discovery service token ({url}).",
                cfg.name
            );
            tracing::error!(
                "But cairn could not find valid cluster configuration in the given data dir ({}).",
                cfg.data_dir.display()
            );
            tracing::info!(
                "Please check the given data dir path if the previous bootstrap succeeded"
            );
            tracing::info!("or use a new discovery token if the previous bootstrap failed.");
        }
        E::DuplicateName => {
            tracing::error!(
                "member with duplicated name has registered with discovery service token({url})."
            );
            tracing::error!("please check (cURL) the discovery token for more information.");
            tracing::error!(
                "please do not reuse the discovery token and generate a new one to bootstrap the cluster."
            );
        }
        _ => {
            tracing::error!("failed to join discovery cluster ({error})");
            tracing::info!("discovery token {url} was used, but failed to bootstrap the cluster.");
            tracing::info!("please generate a new discovery token and try to bootstrap again.");
        }
    }
}

/// Creates the stored identity, membership and voter set of a brand-new
/// member of a brand-new cluster with these initial members, their IDs
/// hashed with `token`.
fn bootstrap_new(
    db: &Db,
    cfg: &ServerConfig,
    initial: &[(String, Vec<String>)],
    token: &str,
) -> Result<(u64, u64), BootError> {
    let mut members = Vec::new();
    for (name, urls) in initial {
        let peer_urls: Vec<String> = urls.clone();
        let id = ids::member_id(&peer_urls, token);
        members.push(MemberRecord {
            id,
            name: name.to_string(),
            peer_urls,
            client_urls: Vec::new(),
            is_learner: false,
        });
    }
    let ids_list: Vec<u64> = members.iter().map(|m| m.id).collect();
    let mut unique = ids_list.clone();
    unique.sort_unstable();
    unique.dedup();
    if unique.len() != ids_list.len() {
        return Err(BootError::Config(
            "--initial-cluster lists the same peer URLs under two names".into(),
        ));
    }
    let self_id = members
        .iter()
        .find(|m| m.name == cfg.name)
        .map(|m| m.id)
        .ok_or_else(|| {
            BootError::Config(format!(
                "--initial-cluster has no member named {:?} (--name)",
                cfg.name
            ))
        })?;
    let cluster_id = ids::cluster_id(&ids_list);
    let cs = ConfState {
        voters: ids_list,
        ..Default::default()
    };
    let membership = MembershipPb {
        cluster_id,
        members,
    };
    let mut batch = db.db.batch();
    // etcd's v2 store holds a record per initial member (`/0/members/<id>/
    // raftAttributes`), each taking a v2 index: count them the same way so
    // v2 indexes (`waitIndex`, `--after-index`) line up with etcd's.
    meta::put_v2_index(
        &mut batch,
        db,
        meta::V2Index {
            index: membership.members.len() as u64,
            visible: 0,
        },
    );
    meta::put_membership(&mut batch, db, &membership);
    meta::put_conf_state(&mut batch, db, &cs)?;
    // The log starts after index INITIAL_INDEX (as if compacted there), so
    // a member added later can never be sent entries from index 1 — which
    // would skip this bootstrap configuration — and always starts from a
    // snapshot that carries it.
    meta::put_applied(
        &mut batch,
        db,
        AppliedState {
            index: INITIAL_INDEX,
            term: INITIAL_INDEX,
        },
    );
    // With a separate raft log the two parts are two batches: the state
    // machine's first, then the log's with the identity, which marks the
    // member as bootstrapped (a crash between them bootstraps again).
    let mut log_batch = db.has_separate_wal().then(|| db.raft_batch());
    {
        let rb = log_batch.as_mut().unwrap_or(&mut batch);
        raftlog::put_initial_position(rb, db, INITIAL_INDEX, INITIAL_INDEX)?;
        raftlog::put_identity(rb, db, self_id, cluster_id);
    }
    commit_synced(batch, log_batch)?;
    for m in &membership.members {
        tracing::info!(
            "added member {:x} {:?} to cluster {:x}",
            m.id,
            m.peer_urls,
            cluster_id
        );
    }
    Ok((self_id, cluster_id))
}

/// A member's whole answer to `/members` must arrive within this; the join
/// asks again (or another member) until `JOIN_DISCOVERY_TIMEOUT`.
const MEMBERS_TIMEOUT: Duration = Duration::from_secs(3);
/// The most of a `/members` answer read: a member list is small.
const MAX_MEMBERS_BYTES: usize = 4 << 20;

/// GET `/members` from the member at peer URL `base`; `https` and `unixs`
/// URLs are dialed with the peer TLS client configuration (system roots
/// and no client certificate without one).
async fn get_members(
    base: &str,
    peer_tls: Option<&crate::tls::ReloadableTlsConfig>,
) -> Result<crate::net::http_client::Response, String> {
    use crate::net::http_client::{Client, Request};
    let url = url::Url::parse(&format!("{}/members", base.trim_end_matches('/')))
        .map_err(|e| format!("bad URL: {e}"))?;
    let mut client = Client::new(MEMBERS_TIMEOUT, MAX_MEMBERS_BYTES);
    if matches!(url.scheme(), "https" | "unixs") {
        client = client.tls(crate::tls::connect::peer_client_config(peer_tls)?);
    }
    client
        .send(Request::new(http::Method::GET, &url), MEMBERS_TIMEOUT)
        .await
        .map_err(|e| e.to_string())
}

/// A new member joining a running cluster (`--initial-cluster-state
/// existing`, after `etcdctl member add`): learns the member table and the
/// cluster ID from the running members' peer endpoints, finds itself in it
/// by its peer URLs, and starts with an empty raft configuration — the
/// leader brings it up to date with a snapshot.
async fn bootstrap_join(
    db: &Db,
    cfg: &ServerConfig,
    peer_tls: Option<&crate::tls::ReloadableTlsConfig>,
) -> Result<(u64, u64), BootError> {
    let mine: Vec<String> = url_strings(&cfg.initial_advertise_peer_urls);
    let others: Vec<String> = cfg
        .initial_cluster
        .iter()
        .map(|m| url_string(&m.peer_url))
        .filter(|u| !mine.contains(u))
        .collect();
    if others.is_empty() {
        return Err(BootError::Config(
            "--initial-cluster-state=existing needs --initial-cluster to list at least one running member".into(),
        ));
    }
    let deadline = tokio::time::Instant::now() + JOIN_DISCOVERY_TIMEOUT;
    let (cluster_id, members) = loop {
        let mut last_err = String::new();
        let mut found = None;
        for url in &others {
            match get_members(url, peer_tls).await {
                Ok(resp) if resp.status == http::StatusCode::OK => {
                    let cid = resp
                        .header("x-etcd-cluster-id")
                        .and_then(|v| u64::from_str_radix(v.trim(), 16).ok());
                    let list: Result<Vec<serde_json::Value>, _> =
                        serde_json::from_slice(&resp.body);
                    match (cid, list) {
                        (Some(cid), Ok(list)) => {
                            found = Some((cid, list));
                            break;
                        }
                        _ => last_err = format!("{url}: unexpected answer"),
                    }
                }
                Ok(resp) => last_err = format!("{url}: HTTP {}", resp.status),
                Err(e) => last_err = format!("{url}: {e}"),
            }
        }
        if let Some(f) = found {
            break f;
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(BootError::Config(format!(
                "could not retrieve cluster information from the peer URLs in --initial-cluster ({last_err})"
            )));
        }
        tracing::warn!("waiting for a running member to answer ({last_err})");
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    let mut records = Vec::new();
    for m in &members {
        let strs = |v: &serde_json::Value| -> Vec<String> {
            v.as_array()
                .into_iter()
                .flatten()
                .filter_map(|x| x.as_str().map(String::from))
                .collect()
        };
        records.push(MemberRecord {
            id: m["id"].as_u64().unwrap_or(0),
            name: m["name"].as_str().unwrap_or("").to_string(),
            peer_urls: strs(&m["peerURLs"]),
            client_urls: strs(&m["clientURLs"]),
            is_learner: m["isLearner"].as_bool().unwrap_or(false),
        });
    }
    let mut sorted_mine = mine.clone();
    sorted_mine.sort();
    let me = records.iter().find(|r| {
        let mut urls = r.peer_urls.clone();
        urls.sort();
        urls == sorted_mine
    });
    let Some(me) = me else {
        return Err(BootError::Config(format!(
            "this member ({}) is not in the cluster's member list; add it first with `etcdctl member add {} --peer-urls={}`",
            mine.join(","),
            cfg.name,
            mine.join(",")
        )));
    };
    let self_id = me.id;
    let membership = MembershipPb {
        cluster_id,
        members: records,
    };
    let mut batch = db.db.batch();
    meta::put_membership(&mut batch, db, &membership);
    meta::put_applied(&mut batch, db, AppliedState::default());
    let mut log_batch = db.has_separate_wal().then(|| db.raft_batch());
    raftlog::put_identity(
        log_batch.as_mut().unwrap_or(&mut batch),
        db,
        self_id,
        cluster_id,
    );
    commit_synced(batch, log_batch)?;
    tracing::info!("joining cluster {cluster_id:x} as member {self_id:x}");
    Ok((self_id, cluster_id))
}

/// Commits a bootstrap's state-machine batch, then (with a separate raft
/// log) the log's batch, each durably.
fn commit_synced(
    state: fjall::OwnedWriteBatch,
    log: Option<fjall::OwnedWriteBatch>,
) -> Result<(), BootError> {
    for batch in std::iter::once(state).chain(log) {
        batch
            .durability(Some(fjall::PersistMode::SyncData))
            .commit()
            .map_err(storage::Error::from)?;
    }
    Ok(())
}

/// Finishes a snapshot install that a crash interrupted: the state machine
/// may be half replaced, so load the file again before anything reads it.
fn finish_interrupted_install(db: &Db, snapshots: &SnapshotRegistry) -> Result<(), BootError> {
    let Some(path) = raftlog::interrupted_install(db)? else {
        return Ok(());
    };
    tracing::warn!(path = %path.display(), "redoing a snapshot install interrupted by a crash");
    // The store's index is built after this, from the keyspace.
    let header = snapfile::load(db, &path, |_, _| Ok(()))?;
    let mut log = RaftLog::open(
        db.clone(),
        Arc::new(SnapshotRegistry::new(snapshots.dir().to_path_buf(), 1)?),
    )?;
    let mut md = raft::prelude::SnapshotMetadata {
        index: header.index,
        term: header.term,
        ..Default::default()
    };
    md.set_conf_state(header.conf_state);
    log.apply_snapshot(&md)?;
    Ok(())
}

/// Binds a listen URL: a TCP socket for `http`/`https`, a unix socket file
/// for `unix`/`unixs` (named as etcd names it; see `net::unix`), which
/// `sockets` remembers so a stop removes it.
async fn bind(
    url: &url::Url,
    sockets: &mut SocketFiles,
) -> Result<crate::net::listener::Listener, BootError> {
    if cairn_config::values::is_unix(url) {
        let path = cairn_config::values::unix_socket_path(url);
        let (listener, file) =
            crate::net::unix::bind(&path)
                .await
                .map_err(|e| BootError::Listen {
                    url: url_string(url),
                    source: e,
                })?;
        sockets.0.push(file);
        return Ok(listener.into());
    }
    bind_tcp(url).await.map(Into::into)
}

async fn bind_tcp(url: &url::Url) -> Result<TcpListener, BootError> {
    let host = url.host_str().unwrap_or("localhost");
    let port = url.port_or_known_default().unwrap_or(0);
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host, port))
        .await
        .map_err(|e| BootError::Listen {
            url: url_string(url),
            source: e,
        })?
        .collect();
    let mut last_err = None;
    for addr in addrs {
        match TcpListener::bind(addr).await {
            Ok(l) => return Ok(l),
            Err(e) => last_err = Some(e),
        }
    }
    Err(BootError::Listen {
        url: url_string(url),
        source: last_err.unwrap_or_else(|| std::io::Error::other("no address")),
    })
}

/// A bound client socket and how to serve it.
struct ClientListener {
    /// The listen URLs it serves (two when http and https share it).
    urls: Vec<String>,
    listener: crate::net::listener::Listener,
    tls: Option<Arc<crate::tls::ReloadableTlsConfig>>,
    plain_too: bool,
}

/// Binds the client listen URLs. As etcd, an `http` and an `https` URL with
/// the same host and port share one socket that serves both schemes (see
/// `net::listener`); any other repeated address fails to bind.
async fn bind_client_urls(
    urls: &[url::Url],
    tls: &Option<Arc<crate::tls::ReloadableTlsConfig>>,
    sockets: &mut SocketFiles,
) -> Result<Vec<ClientListener>, BootError> {
    let mut out: Vec<ClientListener> = Vec::new();
    // (unix socket?, host, port): `unix` and `unixs` share a socket file
    // as `http` and `https` share a port.
    let mut addrs: Vec<(bool, String, Option<u16>)> = Vec::new();
    for url in urls {
        let addr = (
            cairn_config::values::is_unix(url),
            url.host_str().unwrap_or("").to_string(),
            url.port_or_known_default(),
        );
        let this_tls = crate::tls::for_url(url, tls);
        if let Some(i) = addrs.iter().position(|a| *a == addr) {
            let shared = &mut out[i];
            if shared.tls.is_some() != this_tls.is_some() && !shared.plain_too {
                shared.tls = shared.tls.take().or(this_tls);
                shared.plain_too = true;
                shared.urls.push(url_string(url));
                continue;
            }
        }
        addrs.push(addr);
        out.push(ClientListener {
            urls: vec![url_string(url)],
            listener: bind(url, sockets).await?,
            tls: this_tls,
            plain_too: false,
        });
    }
    Ok(out)
}

/// The unix socket files this member bound. They are removed at a clean
/// stop, as etcd's listeners remove theirs when closed, and when dropped
/// (a start that fails after binding leaves none behind). A killed process
/// leaves them; the next start clears them (`net::unix`).
#[derive(Default)]
struct SocketFiles(Vec<crate::net::unix::SocketFile>);

impl SocketFiles {
    fn remove_all(&mut self) {
        for f in self.0.drain(..) {
            f.remove();
        }
    }
}

impl Drop for SocketFiles {
    fn drop(&mut self) {
        self.remove_all();
    }
}

/// A started member. Dropping it does not stop the threads; the process
/// exits to stop (everything acknowledged is already durable).
pub struct Member {
    pub server: Arc<EtcdServer>,
    /// Closes the client listeners gracefully (see [`Member::stop`]).
    client_drain: crate::net::listener::Drain,
    sockets: parking_lot::Mutex<SocketFiles>,
}

impl Member {
    /// A graceful stop (SIGTERM, SIGINT), in etcd's spirit: a leader first
    /// hands leadership to its most caught-up voter (bounded by the request
    /// timeout), then the client listeners stop accepting and let requests
    /// already received finish (bounded again), then everything is flushed.
    /// The peer listener keeps serving until the process exits, so raft
    /// traffic of the hand-over still flows.
    pub async fn stop(&self) {
        self.server.hand_over_leadership().await;
        if !self.client_drain.drain(self.server.request_timeout()).await {
            tracing::warn!("some client connections were still open at stop (long-lived streams)");
        }
        // Everything acknowledged is already durable; this flushes the rest.
        if let Err(e) = self.server.db().sync() {
            tracing::warn!(error = %e, "final flush failed");
        }
        self.sockets.lock().remove_all();
    }
}

/// Starts a member, step by step: check the settings' files, open and
/// recover its data (or bootstrap it), build the server with its raft node
/// and apply loop, bind every listener (so a taken port fails before any
/// thread runs), then run the loops, serve peers at once and clients once
/// the member has joined, and start the background tasks.
pub async fn start(cfg: &ServerConfig) -> Result<Member, BootError> {
    log_settings(cfg);
    // Every certificate, key and CA file is read and checked before any
    // data is touched, so a bad file stops the member with a clear error.
    let tls = crate::tls::Sides::load(cfg).map_err(BootError::Config)?;
    prepare_dirs(cfg)?;
    let member_dir = cfg.data_dir.join("member");
    let db = Db::open_with_wal(&member_dir, cfg.wal_dir.as_deref())?;
    let snapshots = Arc::new(SnapshotRegistry::new(
        member_dir.join("snap"),
        cfg.max_snapshots as usize,
    )?);
    finish_interrupted_install(&db, &snapshots)?;
    let identity = identify(&db, cfg, tls.peer.as_deref()).await?;
    let state = recover(&db, &snapshots, cfg, &identity)?;
    let parts = assemble(cfg, db, snapshots, &identity, state, &tls)?;
    let server = Arc::clone(&parts.server);

    // Bind everything before any thread runs, so a taken port fails fast.
    let mut sockets = SocketFiles::default();
    let listeners = Listeners::bind(cfg, &tls, &mut sockets).await?;

    // Before raft runs or anyone is served: a member whose data differs
    // from its peers' must not answer (or vote) at all.
    if identity.restarting && cfg.experimental_initial_corrupt_check {
        crate::etcdserver::corrupt::check_initial(&server)
            .await
            .map_err(BootError::Config)?;
    }

    let Assembled {
        node,
        apply,
        raft_tx,
        ..
    } = parts;
    crate::crash::spawn_thread("raft", move || node.run())
        .map_err(|e| BootError::Config(format!("cannot start the raft thread: {e}")))?;
    crate::crash::spawn_thread("apply", move || apply.run())
        .map_err(|e| BootError::Config(format!("cannot start the apply thread: {e}")))?;

    serve_peers(&server, raft_tx, listeners.peer);
    server.transport().start();
    tls.spawn_watchers();
    let client_drain = serve_clients_once_ready(&server, cfg, listeners.client, listeners.metrics);
    spawn_background_tasks(&server, cfg);
    Ok(Member {
        server,
        client_drain,
        sockets: parking_lot::Mutex::new(sockets),
    })
}

fn log_settings(cfg: &ServerConfig) {
    tracing::info!("name = {}", cfg.name);
    tracing::info!("data dir = {}", cfg.data_dir.display());
    tracing::info!("member dir = {}", cfg.data_dir.join("member").display());
    if let Some(w) = &cfg.wal_dir {
        tracing::info!("dedicated WAL dir = {}", w.display());
    }
    tracing::info!("heartbeat = {}ms", cfg.heartbeat_interval_ms);
    tracing::info!("election = {}ms", cfg.election_timeout_ms);
    tracing::info!("snapshot count = {}", cfg.snapshot_count);
    tracing::info!(
        "advertise client URLs = {}",
        url_strings(&cfg.advertise_client_urls).join(",")
    );
}

/// Takes over a stopped etcd member's data dir, creates the data (and WAL)
/// dirs with etcd's permissions, and checks the raft log's layout.
fn prepare_dirs(cfg: &ServerConfig) -> Result<(), BootError> {
    // A stopped etcd member's data dir becomes this member's data first.
    crate::etcd_datadir::import_if_etcd(cfg).map_err(|e| BootError::Config(e.to_string()))?;
    let dirs =
        std::iter::once(("data", &cfg.data_dir)).chain(cfg.wal_dir.iter().map(|w| ("wal", w)));
    for (what, dir) in dirs {
        match crate::files::prepare_data_dir(dir) {
            Ok(warnings) => warnings.iter().for_each(|w| tracing::warn!("{w}")),
            Err(e) => {
                return Err(BootError::Config(format!(
                    "cannot create {what} dir {}: {e}",
                    dir.display()
                )));
            }
        }
    }
    // A member keeps the raft log layout it was created with.
    crate::storage::wal::check_layout(&cfg.data_dir.join("member"), cfg.wal_dir.as_deref())
        .map_err(|e| BootError::Config(e.to_string()))
}

/// Who this member is.
struct Identity {
    member_id: u64,
    cluster_id: u64,
    /// It has data from an earlier run (etcd checks only such members
    /// against their peers: a new one has nothing to compare).
    restarting: bool,
}

/// This member's identity from its data, or a new one: bootstrapped from
/// `--initial-cluster` (or discovery), or joined to an existing cluster.
async fn identify(
    db: &Db,
    cfg: &ServerConfig,
    peer_tls: Option<&crate::tls::ReloadableTlsConfig>,
) -> Result<Identity, BootError> {
    if let Some((member_id, cluster_id)) = raftlog::identity(db)? {
        tracing::info!(
            "restarting member {member_id:x} in cluster {cluster_id:x} from {}",
            cfg.data_dir.display()
        );
        return Ok(Identity {
            member_id,
            cluster_id,
            restarting: true,
        });
    }
    let (member_id, cluster_id) = if cfg.initial_cluster_state == ClusterState::Existing {
        bootstrap_join(db, cfg, peer_tls).await?
    } else {
        let (initial, token) = initial_members(cfg).await?;
        let ids = bootstrap_new(db, cfg, &initial, &token)?;
        tracing::info!("starting member {:x} in cluster {:x}", ids.0, ids.1);
        ids
    };
    Ok(Identity {
        member_id,
        cluster_id,
        restarting: false,
    })
}

/// The state machine and raft log as the data dir holds them.
struct Recovered {
    store: Arc<Store>,
    lessor: Arc<Lessor>,
    hub: Arc<WatchHub>,
    membership: Arc<Membership>,
    applied: AppliedState,
    conf_state: ConfState,
    log: RaftLog,
}

fn recover(
    db: &Db,
    snapshots: &Arc<SnapshotRegistry>,
    cfg: &ServerConfig,
    identity: &Identity,
) -> Result<Recovered, BootError> {
    let (store, attachments) =
        Store::open(db.clone(), cfg.experimental_compaction_batch_limit as usize)
            .map_err(|e| BootError::Config(format!("opening the MVCC store: {e}")))?;
    let lessor = Arc::new(Lessor::default());
    lessor.restore(
        meta::lease_records(db)?
            .into_iter()
            .map(|r| (r.id, r.ttl, r.remaining_ttl))
            .collect(),
        attachments,
        Duration::from_millis(cfg.election_timeout_ms),
    );
    let hub = WatchHub::start(
        Arc::clone(&store),
        cfg.experimental_watch_progress_notify_interval,
    );
    let membership_pb =
        meta::membership(db)?.ok_or_else(|| storage::Error::corrupt("membership", "missing"))?;
    let membership = Arc::new(Membership::new(membership_pb));
    let applied = meta::applied(db)?;
    let conf_state = meta::conf_state(db)?;
    let mut log = RaftLog::open(db.clone(), Arc::clone(snapshots))?;
    log.set_conf_state(conf_state.clone());
    if cfg.force_new_cluster {
        if identity.restarting {
            force_new::force_new_cluster(&mut log, &membership, &conf_state, identity.member_id)?;
        } else {
            // As etcd: a new member has no data to recover; it starts from
            // --initial-cluster as usual.
            tracing::warn!("--force-new-cluster has no effect on a member without data");
        }
    }
    Ok(Recovered {
        store,
        lessor,
        hub,
        membership,
        applied,
        conf_state,
        log,
    })
}

fn load_v2(db: &Db) -> Result<Arc<parking_lot::RwLock<crate::v2::V2Store>>, BootError> {
    let (records, index) = meta::v2_records(db)?;
    let mut store = crate::v2::V2Store::new();
    store
        .load(records, index.index)
        .map_err(|e| BootError::Config(format!("the v2 store on disk is corrupt: {e:?}")))?;
    store.set_visible_index(index.visible);
    Ok(Arc::new(parking_lot::RwLock::new(store)))
}

fn load_auth(
    db: &Db,
    cfg: &ServerConfig,
) -> Result<Arc<crate::etcdserver::auth::AuthState>, BootError> {
    let store = match meta::auth(db)? {
        Some(blob) => crate::auth::AuthStore::load(&blob)
            .map_err(|e| BootError::Config(format!("the auth store on disk is corrupt: {e}")))?,
        None => crate::auth::AuthStore::new(),
    };
    let tokens = crate::auth::TokenProvider::from_option(
        &cfg.auth_token,
        Duration::from_secs(cfg.auth_token_ttl_secs),
    )
    .map_err(|e| BootError::Config(format!("--auth-token: {e}")))?;
    Ok(Arc::new(crate::etcdserver::auth::AuthState {
        store: parking_lot::RwLock::new(store),
        tokens,
        bcrypt_cost: cfg.bcrypt_cost,
        verified: Default::default(),
        bcrypt_slots: crate::etcdserver::auth::bcrypt_slots(),
    }))
}

fn raft_config(cfg: &ServerConfig, member_id: u64, applied: u64) -> raft::Config {
    raft::Config {
        id: member_id,
        election_tick: cfg.election_ticks().max(2),
        heartbeat_tick: 1,
        applied,
        pre_vote: cfg.pre_vote,
        check_quorum: true,
        max_size_per_msg: 1024 * 1024,
        max_inflight_msgs: 256,
        max_uncommitted_size: 512 * 1024 * 1024,
        max_committed_size_per_ready: 64 * 1024 * 1024,
        read_only_option: raft::ReadOnlyOption::Safe,
        ..Default::default()
    }
}

/// The server and its two loops, wired to each other but not yet running.
struct Assembled {
    server: Arc<EtcdServer>,
    node: Node,
    apply: ApplyLoop,
    raft_tx: crossbeam_channel::Sender<RaftMsg>,
}

/// The composition root's middle: every shared part made once and handed
/// to the server, the raft node and the apply loop.
fn assemble(
    cfg: &ServerConfig,
    db: Db,
    snapshots: Arc<SnapshotRegistry>,
    identity: &Identity,
    state: Recovered,
    tls: &crate::tls::Sides,
) -> Result<Assembled, BootError> {
    let raft_cfg = raft_config(cfg, identity.member_id, state.applied.index);
    let config = Arc::new(arc_swap::ArcSwap::from_pointee(cfg.clone()));
    let core = Core::new(cfg, config, db, snapshots, identity, state, raft_cfg)?;
    let transport = Transport::new(
        identity.member_id,
        identity.cluster_id,
        Arc::clone(&core.membership),
        Arc::clone(&core.snapshots),
        tokio::runtime::Handle::current(),
    );
    let reports = core.raft_tx.clone();
    transport.attach(move |r| {
        let _ = reports.try_send(RaftMsg::Transport(r));
    });
    if let Some(peer_tls) = &tls.peer {
        transport.set_tls(Arc::clone(peer_tls));
    }
    let server = Arc::new(EtcdServer::new(ServerParts {
        member_id: identity.member_id,
        cluster_id: identity.cluster_id,
        name: cfg.name.clone(),
        db: core.db.clone(),
        store: Arc::clone(&core.store),
        membership: Arc::clone(&core.membership),
        status: Arc::clone(&core.status),
        snapshots: Arc::clone(&core.snapshots),
        lessor: Arc::clone(&core.lessor),
        hub: Arc::clone(&core.hub),
        transport: Arc::clone(&transport),
        v2: Arc::clone(&core.v2),
        auth: Arc::clone(&core.auth),
        plugins: Arc::clone(&core.plugins),
        config: Arc::clone(&core.config),
        raft_tx: core.raft_tx.clone(),
        waiters: Arc::clone(&core.waiters),
        applied_rx: core.applied_rx.clone(),
    }));
    let raft_tx = core.raft_tx.clone();
    let (node, apply) = core.into_loops(Box::new(transport));
    Ok(Assembled {
        server,
        node,
        apply,
        raft_tx,
    })
}

/// A member's core: the raft node, the apply loop and what they share with
/// each other and with the server (channels, status, waiters, the state
/// machine's parts), before the network is attached. `assemble` adds the
/// peer transport and the server; the core simulation (`sim.rs`) an
/// in-memory network.
struct Core {
    member_id: u64,
    restarting: bool,
    voters: usize,
    election_ticks: usize,
    raw: raft::RawNode<RaftLog>,
    config: Arc<arc_swap::ArcSwap<ServerConfig>>,
    db: Db,
    snapshots: Arc<SnapshotRegistry>,
    store: Arc<Store>,
    lessor: Arc<Lessor>,
    hub: Arc<WatchHub>,
    membership: Arc<Membership>,
    applied: AppliedState,
    conf_state: ConfState,
    raft_tx: crossbeam_channel::Sender<RaftMsg>,
    raft_rx: crossbeam_channel::Receiver<RaftMsg>,
    status: Arc<RaftStatus>,
    waiters: Arc<Waiters<crate::etcdserver::Applied>>,
    applied_tx: watch::Sender<u64>,
    applied_rx: watch::Receiver<u64>,
    v2: Arc<parking_lot::RwLock<crate::v2::V2Store>>,
    auth: Arc<crate::etcdserver::auth::AuthState>,
    plugins: Arc<crate::policy::Enforcer>,
}

impl Core {
    fn new(
        cfg: &ServerConfig,
        config: Arc<arc_swap::ArcSwap<ServerConfig>>,
        db: Db,
        snapshots: Arc<SnapshotRegistry>,
        identity: &Identity,
        state: Recovered,
        raft_cfg: raft::Config,
    ) -> Result<Core, BootError> {
        let Recovered {
            store,
            lessor,
            hub,
            membership,
            applied,
            conf_state,
            log,
        } = state;
        let hs = log.hard_state().clone();
        let last_index = log.last_index_value();
        let election_ticks = raft_cfg.election_tick;
        let raw = raft::RawNode::new(&raft_cfg, log, &crate::logging::raft_logger())?;
        let (raft_tx, raft_rx) = crossbeam_channel::bounded::<RaftMsg>(RAFT_INBOX);
        let (applied_tx, applied_rx) = watch::channel(applied.index);
        let status = Arc::new(RaftStatus::default());
        status.term.store(hs.term, Ordering::Release);
        status.commit.store(hs.commit, Ordering::Release);
        status.applied.store(applied.index, Ordering::Release);
        status.last_index.store(last_index, Ordering::Release);
        let v2 = load_v2(&db)?;
        let auth = load_auth(&db, cfg)?;
        // Policy plugins: a malformed [plugins] table stops the start.
        let plugins = crate::policy::Enforcer::open(&db, Arc::clone(&store), cfg)
            .map_err(BootError::Config)?;
        Ok(Core {
            member_id: identity.member_id,
            restarting: identity.restarting,
            voters: conf_state.voters.len(),
            election_ticks,
            raw,
            config,
            db,
            snapshots,
            store,
            lessor,
            hub,
            membership,
            applied,
            conf_state,
            raft_tx,
            raft_rx,
            status,
            waiters: Arc::new(Waiters::new(crate::etcdserver::MAX_PENDING_PROPOSALS)),
            applied_tx,
            applied_rx,
            v2,
            auth,
            plugins,
        })
    }

    /// The raft node and the apply loop, wired to each other; the node
    /// sends its messages to `outbox`.
    fn into_loops(self, outbox: Box<dyn crate::transport::Outbox>) -> (Node, ApplyLoop) {
        let cfg = self.config.load();
        let (ctl_tx, ctl_rx) = crossbeam_channel::unbounded();
        let (apply_tx, apply_rx) = crossbeam_channel::bounded(APPLY_QUEUE);
        // A lone voter needs no peers: skip most of the first election
        // timeout, as etcd does with --initial-election-tick-advance.
        let fast_forward = if cfg.initial_election_tick_advance && self.voters == 1 {
            self.election_ticks.saturating_sub(1)
        } else {
            0
        };
        let node = Node::new(
            self.raw,
            self.member_id,
            self.raft_rx,
            ctl_rx,
            apply_tx,
            outbox,
            Arc::clone(&self.status),
            Arc::clone(&self.waiters),
            Arc::clone(&self.snapshots),
            NodeConfig {
                config: Arc::clone(&self.config),
                election_ticks: self.election_ticks,
                fast_forward_ticks: fast_forward,
                lessor: Arc::clone(&self.lessor),
                // A restarted member of a multi-voter cluster first hears
                // from a leader before it votes or campaigns (bounded): its
                // journal may have lost a tail it had acknowledged.
                hold_votes_for: if self.restarting && self.voters > 1 {
                    Duration::from_millis(cfg.election_timeout_ms) * 2
                } else {
                    Duration::ZERO
                },
            },
            self.applied.index,
        );
        let apply = ApplyLoop {
            db: self.db,
            store: self.store,
            membership: self.membership,
            lessor: self.lessor,
            hub: self.hub,
            rx: apply_rx,
            ctl: ctl_tx,
            waiters: self.waiters,
            status: self.status,
            applied_tx: self.applied_tx,
            snapshots: self.snapshots,
            cfg: ApplyConfig {
                config: Arc::clone(&self.config),
                snapshot_catchup_entries: SNAPSHOT_CATCHUP_ENTRIES,
            },
            last_log_compaction: self.applied.index,
            applied: self.applied,
            conf_state: self.conf_state,
            member_id: self.member_id,
            removed: false,
            v2: self.v2,
            auth: self.auth,
            plugins: self.plugins,
        };
        (node, apply)
    }
}

/// A bound peer or metrics socket: its URL and TLS, if https.
type UrlListener = (
    String,
    crate::net::listener::Listener,
    Option<Arc<crate::tls::ReloadableTlsConfig>>,
);

/// Every socket this member listens on, bound before anything runs.
struct Listeners {
    peer: Vec<UrlListener>,
    client: Vec<ClientListener>,
    metrics: Vec<UrlListener>,
}

impl Listeners {
    async fn bind(
        cfg: &ServerConfig,
        tls: &crate::tls::Sides,
        sockets: &mut SocketFiles,
    ) -> Result<Listeners, BootError> {
        let mut peer = Vec::new();
        for url in &cfg.listen_peer_urls {
            peer.push((
                url_string(url),
                bind(url, sockets).await?,
                crate::tls::for_url(url, &tls.peer),
            ));
        }
        let client = bind_client_urls(&cfg.listen_client_urls, &tls.client, sockets).await?;
        let mut metrics = Vec::new();
        for url in &cfg.listen_metrics_urls {
            // etcd serves https metrics URLs with the client certificate.
            metrics.push((
                url_string(url),
                bind(url, sockets).await?,
                crate::tls::for_url(url, &tls.client),
            ));
        }
        Ok(Listeners {
            peer,
            client,
            metrics,
        })
    }
}

/// Peers are served at once: raft needs them before this member can join.
fn serve_peers(
    server: &Arc<EtcdServer>,
    raft_tx: crossbeam_channel::Sender<RaftMsg>,
    listeners: Vec<UrlListener>,
) {
    let peer_router = api::grpc_and_http(
        tonic::service::Routes::new(
            crate::pb::cairnpb::peer_server::PeerServer::new(api::peer::PeerService {
                self_id: server.member_id(),
                cluster_id: server.cluster_id(),
                raft_tx,
                snapshots: Arc::clone(server.snapshots()),
                srv: Arc::clone(server),
                receiving: Default::default(),
            })
            .max_decoding_message_size(PEER_MAX_MESSAGE_BYTES)
            .max_encoding_message_size(PEER_MAX_MESSAGE_BYTES),
        ),
        api::http::peer_routes(Arc::clone(server)),
        api::grpc_methods::Surface::Peer,
        None,
    );
    for (url, l, peer_tls) in listeners {
        tracing::info!("listening for peers on {url}");
        crate::crash::spawn_task(
            "peer listener",
            crate::net::listener::serve(
                l,
                peer_router.clone(),
                crate::net::listener::ServeOptions {
                    tls: peer_tls,
                    h2_window_bytes: Some((PEER_H2_STREAM_WINDOW_BYTES, PEER_H2_CONN_WINDOW_BYTES)),
                    ..Default::default()
                },
            ),
        );
    }
}

/// Clients (and metrics) are served once this member has joined the
/// cluster, as etcd does; until then their connections wait in the
/// backlog. Returns what drains the client listeners at a graceful stop.
fn serve_clients_once_ready(
    server: &Arc<EtcdServer>,
    cfg: &ServerConfig,
    client_listeners: Vec<ClientListener>,
    metrics_listeners: Vec<UrlListener>,
) -> crate::net::listener::Drain {
    let reloader = crate::etcdserver::reload::Reloader::new(Arc::clone(server));
    reloader.spawn_triggers();
    let (health_reporter, health_service) = tonic_health::server::health_reporter();
    let client_router = client_router(server, cfg, Arc::clone(&reloader), health_service);
    let client_drain = crate::net::listener::Drain::default();
    let serve_opts = crate::net::listener::ServeOptions {
        max_concurrent_streams: cfg.max_concurrent_streams,
        keepalive_interval: if cfg.grpc_keepalive_interval.is_zero() {
            None
        } else {
            Some(cfg.grpc_keepalive_interval)
        },
        keepalive_timeout: cfg.grpc_keepalive_timeout,
        tls: None,
        drain: Some(client_drain.receiver()),
        plain_too: false,
        h2_window_bytes: None,
    };
    if cfg.metrics == cairn_config::MetricsLevel::Extensive {
        // etcd's `--metrics=extensive`: gRPC latency histograms.
        crate::metrics::METRICS.enable_extensive();
    }
    let metrics_router = api::http::metrics_routes(Arc::clone(server));
    let mut ready = server.ready_watch();
    tokio::spawn(async move {
        if ready.wait_for(|r| *r).await.is_err() {
            return;
        }
        // The gRPC health service says SERVING once this member serves.
        health_reporter
            .set_service_status("", tonic_health::ServingStatus::Serving)
            .await;
        for (url, l, client_tls) in metrics_listeners {
            tracing::info!("serving metrics and health on {url}");
            crate::crash::spawn_task(
                "metrics listener",
                crate::net::listener::serve(
                    l,
                    metrics_router.clone(),
                    crate::net::listener::ServeOptions {
                        tls: client_tls,
                        ..Default::default()
                    },
                ),
            );
        }
        for l in client_listeners {
            for url in &l.urls {
                let (scheme, addr) = url.split_once("://").unwrap_or(("", url));
                if matches!(scheme, "https" | "unixs") {
                    tracing::info!("serving client requests on {addr}");
                } else {
                    tracing::info!(
                        "serving insecure client requests on {addr}, this is strongly discouraged!"
                    );
                }
            }
            crate::crash::spawn_task(
                "client listener",
                crate::net::listener::serve(
                    l.listener,
                    client_router.clone(),
                    crate::net::listener::ServeOptions {
                        tls: l.tls,
                        plain_too: l.plain_too,
                        ..serve_opts.clone()
                    },
                ),
            );
        }
        notify::ready();
    });
    client_drain
}

/// The member's own chores: lease expiry, corruption checks, the v2 TTL
/// and token sweepers, auto-compaction, publishing itself, and plugin
/// reconciliation.
fn spawn_background_tasks(server: &Arc<EtcdServer>, cfg: &ServerConfig) {
    crate::crash::spawn_task("lease expiry", expire_leases(Arc::clone(server)));
    crate::crash::spawn_task(
        "corruption check",
        crate::etcdserver::corrupt::monitor(
            Arc::clone(server),
            cfg.experimental_corrupt_check_time,
        ),
    );
    crate::crash::spawn_task(
        "v2 TTL sweeper",
        api::v2::run_ttl_sweeper(Arc::clone(server)),
    );
    crate::crash::spawn_task(
        "token sweeper",
        crate::etcdserver::auth::sweep_tokens(Arc::clone(server)),
    );
    crate::crash::spawn_task(
        "auto-compaction",
        crate::etcdserver::compactor::run(Arc::clone(server)),
    );
    tokio::spawn(publish(
        Arc::clone(server),
        cfg.name.clone(),
        url_strings(&cfg.advertise_client_urls),
    ));
    tokio::spawn(crate::etcdserver::policy::reconcile_at_startup(Arc::clone(
        server,
    )));
}

fn client_router(
    server: &Arc<EtcdServer>,
    cfg: &ServerConfig,
    reloader: Arc<crate::etcdserver::reload::Reloader>,
    health: tonic_health::pb::health_server::HealthServer<
        impl tonic_health::pb::health_server::Health,
    >,
) -> axum::Router {
    // `--max-request-bytes` is live, so tonic gets a ceiling no reload can
    // exceed; the limit in force is applied by `api::grpc_limit` as each
    // message header arrives (nothing larger is buffered) and by
    // `api::check_size` and the proposal size check.
    let decode_limit = api::grpc_limit::DECODE_CEILING;
    let kv = KvServer::new(api::kv::KvService {
        srv: Arc::clone(server),
    })
    .max_decoding_message_size(decode_limit)
    .max_encoding_message_size(usize::MAX);
    let maintenance = MaintenanceServer::new(api::maintenance::MaintenanceService {
        srv: Arc::clone(server),
    })
    .max_decoding_message_size(decode_limit);
    let cluster = ClusterServer::new(api::cluster::ClusterService {
        srv: Arc::clone(server),
    })
    .max_decoding_message_size(decode_limit);
    let watch = WatchServer::new(api::watch::WatchService {
        srv: Arc::clone(server),
        election_timeout: server.election_timeout(),
    })
    .max_decoding_message_size(decode_limit)
    .max_encoding_message_size(usize::MAX);
    let lease = LeaseServer::new(api::lease::LeaseService {
        srv: Arc::clone(server),
    })
    .max_decoding_message_size(decode_limit);
    let lock = LockServer::new(api::lock::LockService {
        srv: Arc::clone(server),
    })
    .max_decoding_message_size(decode_limit);
    let election = ElectionServer::new(api::election::ElectionService {
        srv: Arc::clone(server),
    })
    .max_decoding_message_size(decode_limit);
    // Anything not registered here answers gRPC's Unimplemented from the
    // gRPC router's fallback.
    let auth = crate::pb::etcdserverpb::auth_server::AuthServer::new(api::auth::AuthService {
        srv: Arc::clone(server),
    })
    .max_decoding_message_size(decode_limit);
    let grpc = tonic::service::Routes::new(kv)
        .add_service(auth)
        .add_service(maintenance)
        .add_service(cluster)
        .add_service(watch)
        .add_service(lease)
        .add_service(lock)
        .add_service(election)
        .add_service(health);
    let http = api::http::client_routes(Arc::clone(server))
        // The operator console, /ui/ (`--enable-ui`, checked per request).
        .merge(api::console::routes(
            Arc::clone(server),
            Arc::clone(&reloader),
        ))
        .merge(api::config::routes(reloader, Arc::clone(server)))
        // Policy plugins' admin API: /cairn/v1/plugins.
        .merge(crate::api::plugins::routes(Arc::clone(server)));
    // etcd's JSON gateway: POST /v3/... (and /v3beta/...), unless
    // `--enable-grpc-gateway=false`.
    let http = if cfg.enable_grpc_gateway {
        http.merge(api::gateway::routes(Arc::clone(server)))
    } else {
        http
    };
    let http = if cfg.enable_pprof {
        tracing::info!(path = "/debug/pprof", "pprof is enabled");
        http.merge(api::pprof::routes())
    } else {
        http
    };
    let http = if cfg.enable_v2 {
        http.merge(
            crate::v2::routes(api::v2::V2Api::new(
                Arc::clone(server),
                &cfg.experimental_enable_v2v3,
            ))
            .layer(axum::middleware::from_fn_with_state(
                Arc::clone(server),
                api::v2::auth_gate,
            )),
        )
    } else {
        http
    };
    api::grpc_and_http(
        grpc,
        http,
        api::grpc_methods::Surface::Client,
        Some(Arc::clone(server)),
    )
}

/// Publishes this member's name and client URLs through raft (etcd's
/// "publish"), retrying until it is applied; then the member serves clients.
async fn publish(server: Arc<EtcdServer>, name: String, client_urls: Vec<String>) {
    let attrs = MemberAttributes {
        member_id: server.member_id(),
        name: name.clone(),
        client_urls: client_urls.clone(),
    };
    loop {
        match server.propose_internal(attrs.clone()).await {
            Ok(_) => break,
            Err(e) => {
                tracing::debug!(error = %e, "publishing this member failed; retrying");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
    tracing::info!(
        "published local member to cluster through raft: {{Name:{} ClientURLs:[{}]}} to cluster {:x}",
        name,
        client_urls.join(" "),
        server.cluster_id()
    );
    // Logged before clients are let in: scripts (and tests) that see the
    // member healthy may look for this line at once.
    tracing::info!("ready to serve client requests");
    tracing::info!("enabled capabilities for version 3.4");
    server.set_ready();
}

/// etcd 3.4's lease checkpoint interval.
const LEASE_CHECKPOINT_INTERVAL: Duration = Duration::from_secs(300);
/// Tests shorten the checkpoint interval with this variable (milliseconds);
/// etcd 3.4 has no flag for it.
pub const TEST_LEASE_CHECKPOINT_INTERVAL_ENV: &str = "CAIRN_TEST_LEASE_CHECKPOINT_INTERVAL_MS";

fn lease_checkpoint_interval() -> Duration {
    std::env::var(TEST_LEASE_CHECKPOINT_INTERVAL_ENV)
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
        .map(|ms| Duration::from_millis(ms.max(100)))
        .unwrap_or(LEASE_CHECKPOINT_INTERVAL)
}

/// The leader revokes expired leases through raft (at most
/// `MAX_REVOKES_PER_SWEEP` per half second, as etcd limits the rate), and
/// with `--experimental-enable-lease-checkpoint` records leases' remaining
/// TTLs every checkpoint interval and clears renewed leases' records.
async fn expire_leases(server: Arc<EtcdServer>) {
    let mut tick = tokio::time::interval(Duration::from_millis(500));
    let interval = lease_checkpoint_interval();
    let mut last_checkpoint = tokio::time::Instant::now();
    // One checkpoint entry in flight at a time: a slow cluster gets fewer
    // of them rather than a queue.
    let in_flight = Arc::new(tokio::sync::Semaphore::new(1));
    loop {
        tick.tick().await;
        if !server.status().is_leader() {
            continue;
        }
        if server.config().load().experimental_enable_lease_checkpoint
            && let Ok(permit) = Arc::clone(&in_flight).try_acquire_owned()
        {
            let due = last_checkpoint.elapsed() >= interval;
            let checkpoints = server.lessor().checkpoints(due, interval);
            if due {
                last_checkpoint = tokio::time::Instant::now();
            }
            if !checkpoints.items.is_empty() {
                let srv = Arc::clone(&server);
                tokio::spawn(async move {
                    let term = checkpoints.term;
                    let checkpoints = checkpoints.items;
                    let clears: Vec<i64> = checkpoints
                        .iter()
                        .filter(|(_, left)| *left == 0)
                        .map(|(id, _)| *id)
                        .collect();
                    let request =
                        crate::pb::etcdserverpb::LeaseCheckpointRequest {
                            checkpoints: checkpoints
                                .into_iter()
                                .map(|(id, remaining_ttl)| {
                                    crate::pb::etcdserverpb::LeaseCheckpoint { id, remaining_ttl }
                                })
                                .collect(),
                        };
                    if let Err(e) = srv.propose_as_leader_of(term, request).await {
                        // Renewed leases' records must still be cleared.
                        srv.lessor().requeue_clears(&clears);
                        tracing::warn!(error = %e, "proposing lease checkpoints failed; the next round retries");
                    }
                    drop(permit);
                });
            }
        }
        let expired = server.lessor().expired(MAX_REVOKES_PER_SWEEP);
        for id in expired.items {
            let srv = Arc::clone(&server);
            let term = expired.term;
            tokio::spawn(async move {
                let r = srv
                    .propose_as_leader_of(term, LeaseRevokeRequest { id })
                    .await;
                // Not found: revoked meanwhile. Leader changed: no longer
                // this member's to revoke.
                if let Err(e) = r
                    && e != crate::error::Error::LeaseNotFound
                    && e != crate::error::Error::LeaderChanged
                {
                    tracing::warn!(lease = %format!("{id:016x}"), error = %e, "revoking an expired lease failed; will retry");
                }
            });
        }
    }
}
