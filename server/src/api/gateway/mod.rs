//! etcd's JSON gateway: every gRPC method of the client API as `POST /v3/…`
//! with the request message as JSON, on the client URLs (etcd 3.4's
//! `--enable-grpc-gateway`, on by default). `/v3beta/…` is the same.
//!
//! Each route decodes the body, builds a `tonic::Request` carrying the
//! gRPC metadata the gateway derives from HTTP headers (`Authorization` as
//! the auth `token`, `Grpc-Metadata-<key>` as `<key>`), and calls the very
//! service implementation the gRPC server uses, so both paths answer
//! alike. What the client sees around that — status codes, error bodies,
//! stream framing, decoding rules and their error texts — follows etcd
//! 3.4.23's gateway (grpc-gateway v1 with golang/protobuf 1.3's jsonpb), as
//! observed with curl:
//!
//! * Unary: `200` with the response JSON, or the status for the gRPC code
//!   (`respond::http_status`) with `{"error":m,"message":m,"code":c}`.
//! * A body that is not the request: `400` (`code` 3) with Go's text, e.g.
//!   `invalid character 'b' looking for beginning of object key string`.
//!   For the first message of a bidirectional stream etcd answers `500`
//!   (`code` 2) instead.
//! * Streams (`/v3/watch`, `/v3/lease/keepalive`, `/v3/maintenance/snapshot`,
//!   `/v3/election/observe`): chunked, one `{"result":…}` per line; a failure
//!   ends the body with `{"error":{"grpc_code":…,"http_code":…,"message":…,
//!   "http_status":…}}`, and becomes the HTTP status if nothing was sent yet.
//!   Watch and keep-alive bodies may carry several requests, read as they
//!   arrive (etcd 3.4 answers only once the body ends: Go's HTTP/1.1 server
//!   holds the response until then); a watch outlives the end of its
//!   request body, as in etcd, and ends when the client goes.
//! * Sizes: the request message is held to the gRPC limit
//!   (`--max-request-bytes` + 512 KiB, live) with grpc-go's error, as etcd's
//!   gateway passes it on; the JSON text of one message to twice that
//!   (base64 alone inflates bytes by a third).

mod body;
mod gojson;
mod jsonpb;
mod respond;

use self::body::{BodyReader, ReadError};
use self::jsonpb::HasSchema;
use super::auth::AuthService;
use super::cluster::ClusterService;
use super::election::ElectionService;
use super::kv::KvService;
use super::lease::LeaseService;
use super::lock::LockService;
use super::maintenance::MaintenanceService;
use super::{GRPC_OVERHEAD_BYTES, check_leader, check_size};
use crate::error::Error;
use crate::etcdserver::EtcdServer;
use crate::pb::etcdserverpb::auth_server::Auth as _;
use crate::pb::etcdserverpb::cluster_server::Cluster as _;
use crate::pb::etcdserverpb::kv_server::Kv as _;
use crate::pb::etcdserverpb::lease_server::Lease as _;
use crate::pb::etcdserverpb::maintenance_server::Maintenance as _;
use crate::pb::etcdserverpb::{self as pb, LeaseKeepAliveRequest, WatchRequest};
use crate::pb::v3electionpb::election_server::Election as _;
use crate::pb::v3electionpb::{self as electionpb};
use crate::pb::v3lockpb::lock_server::Lock as _;
use crate::pb::v3lockpb::{self as lockpb};
use axum::extract::Request;
use axum::response::Response;
use futures::future::BoxFuture;
use http::{HeaderMap, Method, header};
use serde::de::DeserializeOwned;
use std::collections::HashMap;
use std::sync::Arc;
use tokio::sync::{mpsc, oneshot};
use tonic::metadata::{AsciiMetadataKey, AsciiMetadataValue, MetadataMap};
use tonic::{Code, Status};

/// Requests queued from a stream's body towards its service.
const INCOMING_QUEUE: usize = 16;

type Handler = fn(Arc<Gateway>, Request) -> BoxFuture<'static, Response>;

/// The gateway's routes, to merge into the client router.
pub fn routes(srv: Arc<EtcdServer>) -> axum::Router {
    let gw = Arc::new(Gateway::new(srv));
    let handler = move |req: Request| {
        let gw = Arc::clone(&gw);
        async move { gw.serve(req).await }
    };
    let mut router = axum::Router::new();
    // A catch-all does not match an empty rest, hence the bare prefixes.
    for path in [
        "/v3",
        "/v3/",
        "/v3/{*rest}",
        "/v3beta",
        "/v3beta/",
        "/v3beta/{*rest}",
    ] {
        router = router.route(path, axum::routing::any(handler.clone()));
    }
    router
}

/// How the gateway answers a failed call, for layers in front of it (a
/// token the auth layer refuses, say): etcd 3.4's status for the code and
/// its `{"error":…,"message":…,"code":…}` body.
pub fn error_response(status: &Status) -> Response {
    respond::call_error(status)
}

struct Gateway {
    srv: Arc<EtcdServer>,
    kv: KvService,
    lease: LeaseService,
    cluster: ClusterService,
    maintenance: MaintenanceService,
    lock: LockService,
    election: ElectionService,
    auth: AuthService,
    routes: HashMap<&'static str, Handler>,
}

/// Marks a request this member may not serve because it is a learner.
#[derive(Debug, Clone, Copy)]
struct RefusedForLearner;

/// Why a request body was refused before any call.
enum Rejected {
    /// Not the request message (Go's decoding error text).
    Decode(String),
    /// What the gRPC server would have refused it with (its size).
    Call(Status),
}

impl Rejected {
    fn unary(self) -> Response {
        match self {
            Rejected::Decode(m) => respond::gateway_error(Code::InvalidArgument, &m),
            Rejected::Call(st) => respond::call_error(&st),
        }
    }

    async fn server_stream(self) -> Response {
        match self {
            Rejected::Decode(m) => respond::gateway_error(Code::InvalidArgument, &m),
            Rejected::Call(st) => failed_stream(st).await,
        }
    }
}

/// A stream that fails before its first message (etcd: a stream-shaped
/// error, with the status for its code).
async fn failed_stream(st: Status) -> Response {
    respond::forward(respond::Forward::new(
        futures::stream::once(async move { Err::<pb::WatchResponse, _>(st) }),
        None,
        None,
    ))
    .await
}

fn too_large(n: usize, limit: usize) -> Status {
    // grpc-go's text, which etcd's gateway relays from its gRPC server.
    Status::resource_exhausted(format!(
        "grpc: received message larger than max ({n} vs. {limit})"
    ))
}

/// The gRPC metadata grpc-gateway derives from HTTP headers: the
/// `Authorization` header (etcd's auth token, which Cairn reads as `token`)
/// and every `Grpc-Metadata-<key>` header as `<key>`. A bare `hasleader`
/// header is honoured too, for clients that send it as on gRPC.
fn metadata(headers: &HeaderMap) -> MetadataMap {
    let mut md = MetadataMap::new();
    let mut add = |key: &str, value: &http::HeaderValue| {
        // Binary (`-bin`) keys would need base64 values; etcd reads none.
        if key.is_empty() || key.ends_with("-bin") {
            return;
        }
        if let (Ok(k), Ok(v)) = (
            AsciiMetadataKey::from_bytes(key.as_bytes()),
            AsciiMetadataValue::try_from(value.as_bytes()),
        ) {
            md.append(k, v);
        }
    };
    for (name, value) in headers {
        match name.as_str() {
            "authorization" => {
                add("token", value);
                add("authorization", value);
            }
            "hasleader" => add("hasleader", value),
            other => {
                if let Some(key) = other.strip_prefix("grpc-metadata-") {
                    add(key, value);
                }
            }
        }
    }
    md
}

/// The gRPC request a route hands its service: the headers as metadata,
/// and the request's context (who is calling, until when), which the caller
/// layer put in the HTTP request's extensions.
fn grpc_request<T>(head: &http::request::Parts, msg: T) -> tonic::Request<T> {
    let mut ext = tonic::Extensions::default();
    if let Some(ctx) = head.extensions.get::<crate::etcdserver::RequestCtx>() {
        ext.insert(ctx.clone());
    }
    tonic::Request::from_parts(metadata(&head.headers), ext, msg)
}

/// A unary route: decode, call `$svc.$method`, answer.
macro_rules! unary {
    ($svc:ident . $method:ident, $req:ty) => {{
        fn handle(gw: Arc<Gateway>, req: Request) -> BoxFuture<'static, Response> {
            Box::pin(async move {
                match gw.read_one::<$req>(req).await {
                    Ok((headers, msg)) => {
                        respond::unary(gw.$svc.$method(grpc_request(&headers, msg)).await)
                    }
                    Err(rejected) => rejected.unary(),
                }
            })
        }
        handle as Handler
    }};
}

/// A server-streaming route: decode, call, stream the responses.
macro_rules! server_stream {
    ($svc:ident . $method:ident, $req:ty) => {{
        fn handle(gw: Arc<Gateway>, req: Request) -> BoxFuture<'static, Response> {
            Box::pin(async move {
                match gw.read_one::<$req>(req).await {
                    Ok((headers, msg)) => {
                        match gw.$svc.$method(grpc_request(&headers, msg)).await {
                            Ok(stream) => {
                                respond::forward(respond::Forward::new(
                                    stream.into_inner(),
                                    None,
                                    None,
                                ))
                                .await
                            }
                            Err(st) => failed_stream(st).await,
                        }
                    }
                    Err(rejected) => rejected.server_stream().await,
                }
            })
        }
        handle as Handler
    }};
}

/// Every route, at etcd's paths (`rpc.proto`'s `google.api.http` options in
/// etcd 3.4, plus the 3.5 additions).
#[allow(clippy::too_many_lines)] // a route table: one entry per route
fn route_table() -> Vec<(&'static str, Handler)> {
    vec![
        // KV
        ("/v3/kv/range", unary!(kv.range, pb::RangeRequest)),
        ("/v3/kv/put", unary!(kv.put, pb::PutRequest)),
        (
            "/v3/kv/deleterange",
            unary!(kv.delete_range, pb::DeleteRangeRequest),
        ),
        ("/v3/kv/txn", unary!(kv.txn, pb::TxnRequest)),
        (
            "/v3/kv/compaction",
            unary!(kv.compact, pb::CompactionRequest),
        ),
        // Watch
        ("/v3/watch", watch as Handler),
        // Lease; 3.4 also serves three of them under /v3/kv/lease/.
        (
            "/v3/lease/grant",
            unary!(lease.lease_grant, pb::LeaseGrantRequest),
        ),
        (
            "/v3/lease/revoke",
            unary!(lease.lease_revoke, pb::LeaseRevokeRequest),
        ),
        (
            "/v3/kv/lease/revoke",
            unary!(lease.lease_revoke, pb::LeaseRevokeRequest),
        ),
        ("/v3/lease/keepalive", keep_alive as Handler),
        (
            "/v3/lease/timetolive",
            unary!(lease.lease_time_to_live, pb::LeaseTimeToLiveRequest),
        ),
        (
            "/v3/kv/lease/timetolive",
            unary!(lease.lease_time_to_live, pb::LeaseTimeToLiveRequest),
        ),
        (
            "/v3/lease/leases",
            unary!(lease.lease_leases, pb::LeaseLeasesRequest),
        ),
        (
            "/v3/kv/lease/leases",
            unary!(lease.lease_leases, pb::LeaseLeasesRequest),
        ),
        // Cluster
        (
            "/v3/cluster/member/add",
            unary!(cluster.member_add, pb::MemberAddRequest),
        ),
        (
            "/v3/cluster/member/remove",
            unary!(cluster.member_remove, pb::MemberRemoveRequest),
        ),
        (
            "/v3/cluster/member/update",
            unary!(cluster.member_update, pb::MemberUpdateRequest),
        ),
        (
            "/v3/cluster/member/list",
            unary!(cluster.member_list, pb::MemberListRequest),
        ),
        (
            "/v3/cluster/member/promote",
            unary!(cluster.member_promote, pb::MemberPromoteRequest),
        ),
        // Maintenance. etcd 3.4 (and 3.5 before 3.5.10) gives Hash and
        // HashKV the same path, where its gateway serves Hash (checked with
        // curl: no `compact_revision`, and the whole-database hash);
        // HashKV got its own path in 3.5.10.
        (
            "/v3/maintenance/alarm",
            unary!(maintenance.alarm, pb::AlarmRequest),
        ),
        (
            "/v3/maintenance/status",
            unary!(maintenance.status, pb::StatusRequest),
        ),
        (
            "/v3/maintenance/defragment",
            unary!(maintenance.defragment, pb::DefragmentRequest),
        ),
        (
            "/v3/maintenance/hash",
            unary!(maintenance.hash, pb::HashRequest),
        ),
        (
            "/v3/maintenance/hashkv",
            unary!(maintenance.hash_kv, pb::HashKvRequest),
        ),
        (
            "/v3/maintenance/snapshot",
            server_stream!(maintenance.snapshot, pb::SnapshotRequest),
        ),
        (
            "/v3/maintenance/transfer-leadership",
            unary!(maintenance.move_leader, pb::MoveLeaderRequest),
        ),
        // 3.5's; etcd 3.4 has no such path.
        (
            "/v3/maintenance/downgrade",
            unary!(maintenance.downgrade, pb::DowngradeRequest),
        ),
        // Auth
        (
            "/v3/auth/enable",
            unary!(auth.auth_enable, pb::AuthEnableRequest),
        ),
        (
            "/v3/auth/disable",
            unary!(auth.auth_disable, pb::AuthDisableRequest),
        ),
        // 3.5's; etcd 3.4 has no such path.
        (
            "/v3/auth/status",
            unary!(auth.auth_status, pb::AuthStatusRequest),
        ),
        (
            "/v3/auth/authenticate",
            unary!(auth.authenticate, pb::AuthenticateRequest),
        ),
        (
            "/v3/auth/user/add",
            unary!(auth.user_add, pb::AuthUserAddRequest),
        ),
        (
            "/v3/auth/user/get",
            unary!(auth.user_get, pb::AuthUserGetRequest),
        ),
        (
            "/v3/auth/user/list",
            unary!(auth.user_list, pb::AuthUserListRequest),
        ),
        (
            "/v3/auth/user/delete",
            unary!(auth.user_delete, pb::AuthUserDeleteRequest),
        ),
        (
            "/v3/auth/user/changepw",
            unary!(auth.user_change_password, pb::AuthUserChangePasswordRequest),
        ),
        (
            "/v3/auth/user/grant",
            unary!(auth.user_grant_role, pb::AuthUserGrantRoleRequest),
        ),
        (
            "/v3/auth/user/revoke",
            unary!(auth.user_revoke_role, pb::AuthUserRevokeRoleRequest),
        ),
        (
            "/v3/auth/role/add",
            unary!(auth.role_add, pb::AuthRoleAddRequest),
        ),
        (
            "/v3/auth/role/get",
            unary!(auth.role_get, pb::AuthRoleGetRequest),
        ),
        (
            "/v3/auth/role/list",
            unary!(auth.role_list, pb::AuthRoleListRequest),
        ),
        (
            "/v3/auth/role/delete",
            unary!(auth.role_delete, pb::AuthRoleDeleteRequest),
        ),
        (
            "/v3/auth/role/grant",
            unary!(
                auth.role_grant_permission,
                pb::AuthRoleGrantPermissionRequest
            ),
        ),
        (
            "/v3/auth/role/revoke",
            unary!(
                auth.role_revoke_permission,
                pb::AuthRoleRevokePermissionRequest
            ),
        ),
        // Lock
        ("/v3/lock/lock", unary!(lock.lock, lockpb::LockRequest)),
        (
            "/v3/lock/unlock",
            unary!(lock.unlock, lockpb::UnlockRequest),
        ),
        // Election
        (
            "/v3/election/campaign",
            unary!(election.campaign, electionpb::CampaignRequest),
        ),
        (
            "/v3/election/proclaim",
            unary!(election.proclaim, electionpb::ProclaimRequest),
        ),
        (
            "/v3/election/leader",
            unary!(election.leader, electionpb::LeaderRequest),
        ),
        (
            "/v3/election/observe",
            server_stream!(election.observe, electionpb::LeaderRequest),
        ),
        (
            "/v3/election/resign",
            unary!(election.resign, electionpb::ResignRequest),
        ),
    ]
}

impl Gateway {
    fn new(srv: Arc<EtcdServer>) -> Gateway {
        Gateway {
            kv: KvService {
                srv: Arc::clone(&srv),
            },
            lease: LeaseService {
                srv: Arc::clone(&srv),
            },
            cluster: ClusterService {
                srv: Arc::clone(&srv),
            },
            maintenance: MaintenanceService {
                srv: Arc::clone(&srv),
            },
            lock: LockService {
                srv: Arc::clone(&srv),
            },
            election: ElectionService {
                srv: Arc::clone(&srv),
            },
            auth: AuthService {
                srv: Arc::clone(&srv),
            },
            srv,
            routes: route_table().into_iter().collect(),
        }
    }

    /// The gRPC receive limit, read live (it is reloadable).
    fn limit(&self) -> usize {
        self.srv.max_request_bytes() + GRPC_OVERHEAD_BYTES
    }

    async fn serve(self: Arc<Self>, req: Request) -> Response {
        // etcd rewrites `/v3beta/` to `/v3/` first; then Go's ServeMux,
        // working on the decoded path, redirects to its cleaned form
        // (`/v3//kv/range` → `/v3/kv/range`, `/v3` → `/v3/`).
        let path = percent_decode(req.uri().path());
        let path = match path.strip_prefix("/v3beta/") {
            Some(rest) => format!("/v3/{rest}"),
            // Not under the gateway in etcd: its mux's not-found page.
            None if path == "/v3beta" => return respond::mux_not_found(),
            None => path,
        };
        let cleaned = crate::net::gohttp::clean_path(&path);
        let redirect_to = if cleaned != path {
            Some(cleaned)
        } else if path == "/v3" {
            Some("/v3/".to_string())
        } else {
            None
        };
        if let Some(location) = redirect_to {
            return crate::net::gohttp::redirect_to_clean(
                &location,
                req.uri().query(),
                req.method(),
            );
        }
        let Some(&handler) = self.routes.get(path.as_str()) else {
            return respond::not_found();
        };
        if req.method() != Method::POST {
            return respond::method_not_allowed();
        }
        let mut req = req;
        if self.srv.is_learner()
            && !matches!(path.as_str(), "/v3/kv/range" | "/v3/maintenance/status")
        {
            // etcd's rule for learners (applied to gRPC by `learner_gate`):
            // only Status and Range (which checks `serializable` itself).
            req.extensions_mut().insert(RefusedForLearner);
        }
        handler(self, req).await
    }

    fn reader(&self, req: Request) -> (http::request::Parts, BodyReader) {
        let (parts, body) = req.into_parts();
        let content_length = parts
            .headers
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|s| s.parse().ok());
        let reader = BodyReader::new(body, 2 * self.limit(), content_length);
        (parts, reader)
    }

    /// The request message of a unary or server-streaming call: the body's
    /// first JSON value (anything after it is ignored, as Go's decoder
    /// does); an empty body is the default message.
    async fn read_one<T>(&self, req: Request) -> Result<(http::request::Parts, T), Rejected>
    where
        T: HasSchema + DeserializeOwned + Default + prost::Message,
    {
        let refused = req.extensions().get::<RefusedForLearner>().is_some();
        let (headers, mut reader) = self.reader(req);
        let msg = match reader.next_value().await {
            Ok(None) => T::default(),
            Ok(Some(raw)) => jsonpb::decode::<T>(&raw).map_err(Rejected::Decode)?,
            Err(ReadError::TooLarge(n)) => return Err(Rejected::Call(too_large(n, self.limit()))),
            Err(e) => return Err(Rejected::Decode(e.message())),
        };
        check_size(&self.srv, &msg).map_err(Rejected::Call)?;
        if refused {
            return Err(Rejected::Call(Error::NotSupportedForLearner.into()));
        }
        Ok((headers, msg))
    }

    /// A bidirectional stream: requests are decoded from the body as they
    /// arrive and fed to `start`'s stream; responses go back as they come.
    /// `keep_open`: the service must not see the end of the requests when
    /// the body ends (etcd's watch outlives its client's half-close; only
    /// the client leaving ends it).
    async fn bidi<Req, M, S>(
        self: Arc<Self>,
        req: Request,
        keep_open: bool,
        start: impl FnOnce(
            &Arc<EtcdServer>,
            &tonic::Request<()>,
            tokio_stream::wrappers::ReceiverStream<Result<Req, Status>>,
        ) -> Result<S, Status>,
    ) -> Response
    where
        Req: HasSchema + DeserializeOwned + prost::Message + Send + 'static,
        M: serde::Serialize,
        S: futures::Stream<Item = Result<M, Status>> + Send + 'static,
    {
        let limit = self.limit();
        let refused = req.extensions().get::<RefusedForLearner>().is_some();
        let (headers, mut reader) = self.reader(req);
        // etcd's gateway decodes the first request before it relays
        // anything; a bad one is answered as a plain error, with gRPC's
        // Unknown code because the Go error carries no status.
        let mut failed = None;
        let first = match reader.next_value().await {
            Ok(None) => None,
            Ok(Some(raw)) => match jsonpb::decode::<Req>(&raw) {
                Ok(msg) => match check_size(&self.srv, &msg) {
                    Ok(()) => Some(msg),
                    Err(st) => {
                        failed = Some(st);
                        None
                    }
                },
                Err(m) => return respond::gateway_error(Code::Unknown, &m),
            },
            Err(ReadError::TooLarge(n)) => {
                failed = Some(too_large(n, limit));
                None
            }
            Err(e) => return respond::gateway_error(Code::Unknown, &e.message()),
        };
        if refused && failed.is_none() {
            return failed_stream(Error::NotSupportedForLearner.into()).await;
        }
        let probe = grpc_request(&headers, ());
        let (tx, rx) = mpsc::channel(INCOMING_QUEUE);
        let out = match start(
            &self.srv,
            &probe,
            tokio_stream::wrappers::ReceiverStream::new(rx),
        ) {
            Ok(out) => out,
            Err(st) => return failed_stream(st).await,
        };
        let (fail_tx, fail_rx) = oneshot::channel();
        let (alive_tx, alive_rx) = oneshot::channel();
        if let Some(st) = failed {
            // The server refuses an oversized message by ending the stream.
            let _ = fail_tx.send(Some(st));
        } else {
            if let Some(msg) = first {
                // A fresh channel has room for one.
                let _ = tx.try_send(Ok(msg));
            }
            tokio::spawn(pump(
                Arc::clone(&self.srv),
                reader,
                tx,
                fail_tx,
                alive_rx,
                keep_open,
                limit,
            ));
        }
        respond::forward(respond::Forward::new(out, Some(fail_rx), Some(alive_tx))).await
    }
}

/// Feeds a stream's later requests from the body to its service.
async fn pump<Req>(
    srv: Arc<EtcdServer>,
    mut reader: BodyReader,
    tx: mpsc::Sender<Result<Req, Status>>,
    fail: oneshot::Sender<Option<Status>>,
    mut alive: oneshot::Receiver<()>,
    keep_open: bool,
    limit: usize,
) where
    Req: HasSchema + DeserializeOwned + prost::Message,
{
    loop {
        let next = tokio::select! {
            next = reader.next_value() => next,
            // The response is gone (client left, or the stream ended).
            _ = &mut alive => return,
        };
        match next {
            Ok(Some(raw)) => {
                // A request that does not decode closes the request side,
                // as etcd's gateway does, without failing the stream.
                let Ok(msg) = jsonpb::decode::<Req>(&raw) else {
                    break;
                };
                if let Err(st) = check_size(&srv, &msg) {
                    let _ = fail.send(Some(st));
                    return;
                }
                if tx.send(Ok(msg)).await.is_err() {
                    return;
                }
            }
            Err(ReadError::TooLarge(n)) => {
                let _ = fail.send(Some(too_large(n, limit)));
                return;
            }
            Err(ReadError::Io(_)) => {
                // The connection broke mid-body (the client went away).
                // hyper keeps a half-closed connection until a write fails,
                // which a quiet watch might never attempt: end the response
                // so the stream and its watchers go now.
                let _ = fail.send(None);
                return;
            }
            Ok(None) | Err(_) => break,
        }
    }
    if keep_open {
        let _ = alive.await;
    }
    drop(tx);
}

fn watch(gw: Arc<Gateway>, req: Request) -> BoxFuture<'static, Response> {
    Box::pin(
        gw.bidi::<WatchRequest, _, _>(req, true, |srv, probe, incoming| {
            // What `WatchService::watch` does with its gRPC stream.
            check_leader(srv, probe)?;
            let require_leader = probe
                .metadata()
                .get("hasleader")
                .and_then(|v| v.to_str().ok())
                .is_some_and(|v| v == "true");
            Ok(super::watch::serve_stream(
                Arc::clone(srv),
                super::request_ctx(srv, probe),
                srv.election_timeout(),
                require_leader,
                incoming,
            ))
        }),
    )
}

fn keep_alive(gw: Arc<Gateway>, req: Request) -> BoxFuture<'static, Response> {
    Box::pin(
        gw.bidi::<LeaseKeepAliveRequest, _, _>(req, false, |srv, probe, incoming| {
            // What `LeaseService::lease_keep_alive` does with its stream.
            check_leader(srv, probe)?;
            Ok(super::lease::keep_alive_stream(
                Arc::clone(srv),
                super::request_ctx(srv, probe),
                incoming,
            ))
        }),
    )
}

/// `%XX` escapes resolved, as Go's `URL.Path`; a malformed escape is kept.
fn percent_decode(path: &str) -> String {
    let b = path.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while let Some(&c) = b.get(i) {
        if c == b'%'
            && let Some(v) = b
                .get(i + 1..i + 3)
                .and_then(|h| std::str::from_utf8(h).ok())
                .and_then(|h| u8::from_str_radix(h, 16).ok())
        {
            out.push(v);
            i += 3;
            continue;
        }
        out.push(c);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The gateway's parsers, for `crate::fuzz_api` only.
pub(crate) mod fuzzing {
    use super::body::BodyReader;
    use super::jsonpb::{self, HasSchema};
    use serde::Serialize;
    use serde::de::DeserializeOwned;

    /// Every JSON value `BodyReader` takes off `body` (sent in frames of
    /// `chunk_bytes`, values bounded by `limit_bytes`) until the body ends or
    /// a value is refused.
    pub(crate) fn read_values(body: &[u8], chunk_bytes: usize, limit_bytes: usize) -> Vec<Vec<u8>> {
        let frames: Vec<Result<bytes::Bytes, std::convert::Infallible>> = body
            .chunks(chunk_bytes.max(1))
            .map(|c| Ok(bytes::Bytes::copy_from_slice(c)))
            .collect();
        let body = axum::body::Body::from_stream(futures::stream::iter(frames));
        let mut reader = BodyReader::new(body, limit_bytes, None);
        let mut values = Vec::new();
        futures::executor::block_on(async {
            while let Ok(Some(v)) = reader.next_value().await {
                values.push(v);
            }
        });
        values
    }

    pub(crate) fn check_document(data: &[u8]) -> Result<(), String> {
        super::gojson::check_document(data)
    }

    pub(crate) fn base64_decode(src: &[u8]) -> Result<Vec<u8>, String> {
        super::gojson::base64_decode(src)
    }

    pub(crate) fn path(p: &str) -> (String, String) {
        let decoded = super::percent_decode(p);
        let cleaned = crate::net::gohttp::clean_path(&decoded);
        (decoded, cleaned)
    }

    /// Decodes `raw` as a `T`; if that works, the message's JSON rendition
    /// must decode to the same message. `Ok(true)` if `raw` decoded.
    pub(crate) fn round_trip<T>(raw: &[u8]) -> Result<bool, String>
    where
        T: HasSchema + DeserializeOwned + Serialize + PartialEq + std::fmt::Debug,
    {
        let Ok(msg) = jsonpb::decode::<T>(raw) else {
            return Ok(false);
        };
        let json = serde_json::to_vec(&msg).map_err(|e| format!("re-encoding failed: {e}"))?;
        match jsonpb::decode::<T>(&json) {
            Ok(again) if again == msg => Ok(true),
            Ok(again) => Err(format!(
                "round trip changed the message: {msg:?} -> {} -> {again:?}",
                String::from_utf8_lossy(&json)
            )),
            Err(e) => Err(format!(
                "the JSON rendition of {msg:?} does not decode: {} ({e})",
                String::from_utf8_lossy(&json)
            )),
        }
    }
}

#[cfg(test)]
mod tests;
