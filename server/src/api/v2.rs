//! The server side of the v2 API: replication, membership and stats for the
//! routes in `crate::v2::http`.
//!
//! v2 writes (and quorum reads) are raft entries like v3 requests; the apply
//! loop runs them against the `V2Store` and persists the changed nodes next
//! to the applied index. Key expiry is decided by the leader alone, which
//! proposes a `sync` twice a second while TTL keys exist, so every member
//! expires the same keys at the same log position.

use crate::error::Error;
use crate::etcdserver::EtcdServer;
use crate::pb::etcdserverpb::{MemberAddRequest, MemberRemoveRequest, MemberUpdateRequest};
use crate::v2::{
    MemberError, V2Applied, V2Backend, V2CountsStats, V2Error, V2FollowerStats, V2LatencyStats,
    V2LeaderInfo, V2LeaderStats, V2Member, V2Op, V2Request, V2SelfStats, V2Store,
    format_go_duration, format_rfc3339_nanos,
};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// etcd's v2 TTL sweep cadence.
const SYNC_INTERVAL: Duration = Duration::from_millis(500);

pub struct V2Api {
    pub srv: Arc<EtcdServer>,
    /// When this process started, for `/v2/stats/self`.
    started_unix_nanos: i64,
    /// `--experimental-enable-v2v3`: `/v2/keys` over v3 keys.
    v3_keys: Option<super::v2v3::V3Keyspace>,
}

impl V2Api {
    /// `v2v3_prefix`: the value of `--experimental-enable-v2v3` (empty:
    /// the v2 store serves `/v2/keys`).
    pub fn new(srv: Arc<EtcdServer>, v2v3_prefix: &str) -> Arc<V2Api> {
        let v3_keys = (!v2v3_prefix.is_empty())
            .then(|| super::v2v3::V3Keyspace::new(Arc::clone(&srv), v2v3_prefix.to_string()));
        Arc::new(V2Api {
            srv,
            started_unix_nanos: unix_nanos(),
            v3_keys,
        })
    }
}

fn unix_nanos() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as i64)
        .unwrap_or(0)
}

fn v2_member(m: &crate::pb::etcdserverpb::Member) -> V2Member {
    V2Member {
        id: m.id,
        name: m.name.clone(),
        peer_urls: m.peer_ur_ls.clone(),
        client_urls: m.client_ur_ls.clone(),
    }
}

fn member_error(e: Error) -> MemberError {
    match e {
        Error::MemberNotFound => MemberError::NotFound,
        Error::MemberExists => MemberError::IdExists,
        Error::PeerUrlExists => MemberError::PeerUrlExists,
        Error::MemberBadUrls => MemberError::BadRequest(e.to_string()),
        other => MemberError::Other(other.to_string()),
    }
}

/// Replicates one v2 request; `id` 0 (nobody waiting) is not used here:
/// even the leader's `sync` waits, so sweeps never pile up.
pub async fn propose_v2(srv: &EtcdServer, req: &V2Request) -> Result<V2Applied, V2Error> {
    let data = serde_json::to_vec(req).map_err(|e| V2Error::raft_internal(e.to_string()))?;
    match crate::etcdserver::policy::propose_v2_judged(srv, req, data.into()).await {
        Ok(crate::etcdserver::proposal::V2Outcome {
            outcome,
            raft_index,
            raft_term,
        }) => match outcome {
            Ok(Some(event)) => Ok(V2Applied {
                event,
                raft_index,
                raft_term,
            }),
            // Only `sync` has no event, and the HTTP layer never sends it.
            Ok(None) => Err(V2Error::raft_internal("etcdserver: unexpected v2 result")),
            Err(e) => Err(e),
        },
        Err(e) => Err(crate::policy::v2_error(e)),
    }
}

/// On the leader, while the v2 store holds keys with a TTL, expires them
/// through raft (etcd's `sync`).
pub async fn run_ttl_sweeper(srv: Arc<EtcdServer>) {
    let mut tick = tokio::time::interval(SYNC_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        if !srv.status().is_leader() {
            continue;
        }
        let now = unix_nanos();
        let due = {
            let store = srv.v2().read();
            store.has_ttl_keys() && store.next_expiration().is_some_and(|t| t <= now)
        };
        if !due {
            continue;
        }
        let req = V2Request::new(V2Op::Sync, "", now);
        let data = match serde_json::to_vec(&req) {
            Ok(d) => d,
            Err(_) => continue,
        };
        if let Err(e) = srv
            .propose_internal(crate::etcdserver::proposal::V2Entry(data.into()))
            .await
        {
            tracing::debug!(error = %e, "v2 TTL sweep failed; retrying on the next tick");
        }
    }
}

#[async_trait::async_trait]
impl V2Backend for V2Api {
    async fn propose(&self, req: V2Request) -> Result<V2Applied, V2Error> {
        propose_v2(&self.srv, &req).await
    }

    fn store(&self) -> &parking_lot::RwLock<V2Store> {
        self.srv.v2()
    }

    fn raft_index_term(&self) -> (u64, u64) {
        (
            self.srv.status().commit.load(Ordering::Acquire),
            self.srv.status().term(),
        )
    }

    fn cluster_id(&self) -> u64 {
        self.srv.cluster_id()
    }

    fn now_unix_nanos(&self) -> i64 {
        unix_nanos()
    }

    fn members(&self) -> Vec<V2Member> {
        self.srv
            .membership()
            .api_members()
            .iter()
            .map(v2_member)
            .collect()
    }

    fn leader(&self) -> Option<V2Member> {
        let leader = self.srv.status().leader();
        self.srv
            .membership()
            .api_members()
            .iter()
            .find(|m| m.id == leader && leader != 0)
            .map(v2_member)
    }

    async fn add_member(&self, peer_urls: Vec<String>) -> Result<V2Member, MemberError> {
        let resp = self
            .srv
            .member_add(
                &self.srv.request_ctx(None, None),
                MemberAddRequest {
                    peer_ur_ls: peer_urls,
                    is_learner: false,
                },
            )
            .await
            .map_err(member_error)?;
        resp.member
            .as_ref()
            .map(v2_member)
            .ok_or_else(|| MemberError::Other("member add returned no member".into()))
    }

    async fn remove_member(&self, id: u64) -> Result<(), MemberError> {
        self.srv
            .member_remove(
                &self.srv.request_ctx(None, None),
                MemberRemoveRequest { id },
            )
            .await
            .map(|_| ())
            .map_err(member_error)
    }

    async fn update_member(&self, id: u64, peer_urls: Vec<String>) -> Result<(), MemberError> {
        self.srv
            .member_update(
                &self.srv.request_ctx(None, None),
                MemberUpdateRequest {
                    id,
                    peer_ur_ls: peer_urls,
                },
            )
            .await
            .map(|_| ())
            .map_err(member_error)
    }

    fn self_stats(&self) -> V2SelfStats {
        let st = &self.srv.status();
        let state = if st.is_leader() {
            "StateLeader"
        } else {
            "StateFollower"
        };
        let leader = st.leader();
        let since = self.srv.leader_since_unix_nanos();
        let uptime = Duration::from_nanos(unix_nanos().saturating_sub(since).max(0) as u64);
        let counts = self.srv.transport().stats.append_counts();
        V2SelfStats {
            name: self.srv.name().to_string(),
            id: format!("{:x}", self.srv.member_id()),
            state: state.to_string(),
            start_time: format_rfc3339_nanos(self.started_unix_nanos),
            leader_info: V2LeaderInfo {
                leader: if leader == 0 {
                    String::new()
                } else {
                    format!("{leader:x}")
                },
                uptime: format_go_duration(uptime),
                start_time: format_rfc3339_nanos(since),
            },
            recv_append_request_cnt: counts.received,
            recv_pkg_rate: 0.0,
            recv_bandwidth_rate: 0.0,
            send_append_request_cnt: counts.sent,
            send_pkg_rate: 0.0,
            send_bandwidth_rate: 0.0,
        }
    }

    fn v3_keys(&self) -> Option<&dyn crate::v2::V2Keys> {
        self.v3_keys.as_ref().map(|k| k as &dyn crate::v2::V2Keys)
    }

    fn leader_stats(&self) -> Option<V2LeaderStats> {
        if !self.srv.status().is_leader() {
            return None;
        }
        let mut followers = BTreeMap::new();
        for id in self.srv.membership().ids() {
            if id == self.srv.member_id() {
                continue;
            }
            let p = self.srv.transport().stats.peer(id);
            followers.insert(
                format!("{id:x}"),
                V2FollowerStats {
                    latency: V2LatencyStats {
                        current: p.rtt_ms.current,
                        average: p.rtt_ms.average,
                        standard_deviation: p.rtt_ms.standard_deviation,
                        minimum: p.rtt_ms.minimum,
                        maximum: p.rtt_ms.maximum,
                    },
                    counts: V2CountsStats {
                        fail: p.fail,
                        success: p.success,
                    },
                },
            );
        }
        Some(V2LeaderStats {
            leader: format!("{:x}", self.srv.member_id()),
            followers,
        })
    }
}

/// etcd keeps v2 and v3 auth apart; Cairn does not let the v2 API become a
/// way around v3 auth: while auth is enabled, v2 keys (and membership
/// changes, and the v2 auth API) need HTTP Basic credentials of a user
/// holding the root role. Reads of membership, stats and machines stay open, as in etcd.
pub async fn auth_gate(
    axum::extract::State(srv): axum::extract::State<Arc<EtcdServer>>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    let path = req.uri().path();
    // The v2 auth API writes replicated state and lists users: under v3
    // auth it is for root only, like the keys.
    let guarded = path.starts_with("/v2/keys")
        || path.starts_with("/v2/auth")
        || (path.starts_with("/v2/members") && req.method() != http::Method::GET);
    if !guarded || !srv.auth_enabled() {
        return next.run(req).await;
    }
    let creds = req
        .headers()
        .get(http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Basic "))
        .and_then(|b| {
            use base64::Engine as _;
            base64::engine::general_purpose::STANDARD
                .decode(b.trim())
                .ok()
        })
        .and_then(|b| String::from_utf8(b).ok())
        .and_then(|s| {
            s.split_once(':')
                .map(|(u, p)| (u.to_string(), p.to_string()))
        });
    if let Some((user, password)) = creds
        && root_password_ok(&srv, &user, password).await
    {
        // The request runs as that user: with `--experimental-enable-v2v3`
        // its keys are v3 keys, checked like any other v3 request's.
        let info = crate::auth::AuthInfo {
            username: user,
            revision: srv.auth().store.read().revision(),
        };
        let mut req = req;
        req.extensions_mut()
            .insert(srv.request_ctx(Some(info), None));
        return next.run(req).await;
    }
    let err = V2Error::new(
        crate::v2::error::UNAUTHORIZED,
        "Insufficient credentials",
        0,
    );
    (
        err.status(),
        [(http::header::CONTENT_TYPE, "application/json")],
        format!("{}\n", err.to_body()),
    )
        .into_response()
}

async fn root_password_ok(srv: &EtcdServer, user: &str, password: String) -> bool {
    let check = {
        let store = srv.auth().store.read();
        if !store.has_role(user, crate::auth::ROOT_ROLE) {
            return false;
        }
        store.password_check(user)
    };
    let Ok(check) = check else { return false };
    srv.verify_password(user, check, password).await.is_ok()
}
