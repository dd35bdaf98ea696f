//! etcd's v2 discovery protocol (etcd 3.4 `etcdserver/api/v2discovery`),
//! client side. The discovery URL names a v2 keys directory (on
//! discovery.etcd.io, or on any etcd or Cairn cluster's v2 API) whose
//! `_config/size` key holds the cluster size. A new member:
//!
//! 1. reads the size and the directory; if `size` members are registered
//!    already and it is not among them, the cluster is full;
//! 2. registers itself: a create (`prevExist=false`) of `<dir>/<member ID
//!    in hex>` holding its `name=peer-url` pairs;
//! 3. waits, watching the directory, until `size` members are registered;
//!    the first `size` by creation index form the initial cluster.
//!
//! Differences from etcd, all about bounds: etcd retries an unreachable
//! discovery service practically forever and waits for the other members
//! without a deadline; here both are bounded ([`MAX_RETRIES`],
//! [`WAIT_FOR_MEMBERS`]). Waiting re-reads the directory after each watch
//! event instead of trusting events alone, so a cleared event history or a
//! deleted key cannot confuse it; the outcome is etcd's (the first `size`
//! registrations by creation index).

use super::DiscoveryError;
use crate::net::http_client::{self, HttpClientError, Request, Response};
use std::time::Duration;
use tokio::time::Instant;
use url::Url;

/// etcd's client request timeout (`client.DefaultRequestTimeout`); also
/// the bound on dialing the service (or the proxy, and its tunnel).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// The largest discovery response read: a discovery directory lists a
/// handful of members; anything near this is not a discovery service.
const MAX_RESPONSE_BYTES: usize = 4 << 20;
/// One long poll of the directory; then it is read again and re-watched.
const WATCH_POLL: Duration = Duration::from_secs(60);
/// How long a member waits for the others to register (etcd: forever).
pub const WAIT_FOR_MEMBERS: Duration = Duration::from_secs(15 * 60);
/// Failed exchanges with the discovery service tolerated before giving up
/// with etcd's "too many retries" (etcd: 2^32).
pub const MAX_RETRIES: u32 = 10;
/// Backoff before retry n is 2^min(n, this) units (etcd caps at 2^8 s).
const MAX_BACKOFF_EXPONENT: u32 = 5;
/// etcd's backoff unit.
const BACKOFF_UNIT: Duration = Duration::from_secs(1);
/// The most members a size key may ask for (a discovery directory listing
/// beyond this would be no cluster anyone runs).
const MAX_SIZE: u64 = 1000;

/// A registered member: its key, its `name=url,...` value, and when it
/// registered.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Node {
    key: String,
    value: String,
    created_index: u64,
}

/// A v2 error answer, printed as etcd's v2 client prints it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct V2Error {
    pub code: i64,
    pub message: String,
    pub cause: String,
    pub index: u64,
}

impl std::fmt::Display for V2Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}: {} ({}) [{}]",
            self.code, self.message, self.cause, self.index
        )
    }
}

/// etcd v2 error code "Key already exists".
const NODE_EXIST: i64 = 105;
/// etcd's v2 client's words for a body that is not its JSON.
const INVALID_JSON: &str =
    "client: response is invalid json. The endpoint is probably not valid etcd cluster endpoint.";

/// How one keys request failed.
#[derive(Debug)]
enum KeysError {
    /// The deadline passed without an answer (for a long poll: no event).
    TimedOut(String),
    /// Unreachable, or a 5xx: worth a retry.
    Transient(String),
    V2(V2Error),
    InvalidJson,
}

impl KeysError {
    /// No response from `url`: always worth a retry (etcd's
    /// `ClusterError`), unless only the deadline passed (a long poll that
    /// saw nothing ends so).
    fn transport(url: &Url, e: &HttpClientError) -> Self {
        let message = format!("{url}: {e}");
        if matches!(e, HttpClientError::TimedOut(_)) {
            KeysError::TimedOut(message)
        } else {
            KeysError::Transient(message)
        }
    }
}

/// A successful keys answer: the JSON and the store index it was read at.
struct Answer {
    json: serde_json::Value,
    index: u64,
}

struct Client {
    /// `scheme://host[:port]` of the discovery service.
    base: Url,
    /// The directory's URL path, e.g. `/v2/keys/_etcd/registry/<token>`.
    cluster: String,
    /// `https` services are verified against the system's CAs
    /// (`$SSL_CERT_FILE` when set, as Go), with no client certificate, as
    /// etcd; `--discovery-proxy` is used as Go's transport uses a proxy.
    http: http_client::Client,
    self_id: u64,
    retries: u32,
    backoff_unit: Duration,
    deadline: Instant,
}

/// Registers this member (`self_id`, its `name=peer-url` pairs in
/// `config`) with the discovery service at `url` and waits for the rest;
/// returns the initial cluster as `name=url,...`.
pub async fn join_cluster(
    url: &str,
    proxy: Option<&str>,
    self_id: u64,
    config: &str,
) -> Result<String, DiscoveryError> {
    let c = Client::new(url, proxy, self_id, BACKOFF_UNIT)?;
    join(c, config).await
}

async fn join(mut c: Client, config: &str) -> Result<String, DiscoveryError> {
    // Fast path: a full cluster is refused before registering.
    c.check_cluster().await?;
    c.create_self(config).await?;
    let nodes = c.wait_nodes().await?;
    nodes_to_cluster(&nodes)
}

impl Client {
    fn new(
        url: &str,
        proxy: Option<&str>,
        self_id: u64,
        backoff_unit: Duration,
    ) -> Result<Self, DiscoveryError> {
        let parsed = Url::parse(url).map_err(|_| DiscoveryError::InvalidUrl)?;
        let cluster = parsed.path().trim_end_matches('/').to_string();
        if cluster.is_empty() || !matches!(parsed.scheme(), "http" | "https") {
            return Err(DiscoveryError::InvalidUrl);
        }
        let mut base = parsed.clone();
        base.set_path("");
        base.set_query(None);
        base.set_fragment(None);
        let proxy =
            match proxy {
                Some(p) => Some(Url::parse(p).map_err(|e| {
                    DiscoveryError::Other(format!("invalid proxy address {p:?}: {e}"))
                })?),
                None => None,
            };
        let mut http = http_client::Client::new(REQUEST_TIMEOUT, MAX_RESPONSE_BYTES);
        if base.scheme() == "https" {
            // System roots, no client certificate: etcd's `TLSInfo{}`.
            http = http.tls(crate::tls::fallback_client_config().map_err(DiscoveryError::Other)?);
        }
        if let Some(p) = proxy {
            http = http.proxy(p);
        }
        Ok(Client {
            base,
            cluster,
            http,
            self_id,
            retries: 0,
            backoff_unit,
            deadline: Instant::now() + WAIT_FOR_MEMBERS,
        })
    }

    fn self_name(&self) -> String {
        format!("{:x}", self.self_id)
    }

    fn url(&self, path: &str, query: &str) -> Url {
        let mut u = self.base.clone();
        u.set_path(path);
        if !query.is_empty() {
            u.set_query(Some(query));
        }
        u
    }

    async fn send(
        &self,
        method: http::Method,
        path: &str,
        query: &str,
        form: Option<String>,
        timeout: Duration,
    ) -> Result<Answer, KeysError> {
        let url = self.url(path, query);
        let mut req = Request::new(method, &url);
        if let Some(f) = form {
            req = req.body("application/x-www-form-urlencoded", f);
        }
        let resp = self
            .http
            .send(req, timeout)
            .await
            .map_err(|e| KeysError::transport(&url, &e))?;
        answer(&url, resp)
    }

    /// The cluster size, the registered members (sorted by creation
    /// index) and the directory's index; `FullCluster` when `size` members
    /// registered before this one.
    async fn check_cluster(&mut self) -> Result<(Vec<Node>, u64, u64), DiscoveryError> {
        loop {
            match self.try_check_cluster().await {
                Err(KeysFailure::Transient(e)) => {
                    self.backoff("cluster status check", &e).await?;
                }
                Err(KeysFailure::Final(e)) => return Err(e),
                Ok(found) => return Ok(found),
            }
        }
    }

    async fn try_check_cluster(&self) -> Result<(Vec<Node>, u64, u64), KeysFailure> {
        let size_path = format!("{}/_config/size", self.cluster);
        let size = match self
            .send(http::Method::GET, &size_path, "", None, REQUEST_TIMEOUT)
            .await
        {
            Ok(a) => a,
            // etcd 3.4 prints the service's error itself here, e.g.
            // "100: Key not found (/_etcd/registry/x) [4]".
            Err(KeysError::V2(e)) => return Err(KeysFailure::Final(DiscoveryError::V2(e))),
            Err(KeysError::InvalidJson) => {
                return Err(KeysFailure::Final(DiscoveryError::BadDiscoveryEndpoint));
            }
            Err(KeysError::Transient(e) | KeysError::TimedOut(e)) => {
                return Err(KeysFailure::Transient(e));
            }
        };
        let size = parse_size(size.json["node"]["value"].as_str().unwrap_or(""))
            .ok_or(KeysFailure::Final(DiscoveryError::BadSizeKey))?;
        let dir = match self
            .send(http::Method::GET, &self.cluster, "", None, REQUEST_TIMEOUT)
            .await
        {
            Ok(a) => a,
            Err(KeysError::V2(e)) => return Err(KeysFailure::Final(DiscoveryError::V2(e))),
            Err(KeysError::InvalidJson) => {
                return Err(KeysFailure::Final(DiscoveryError::Other(
                    INVALID_JSON.to_string(),
                )));
            }
            Err(KeysError::Transient(e) | KeysError::TimedOut(e)) => {
                return Err(KeysFailure::Transient(e));
            }
        };
        let mut nodes: Vec<Node> = dir.json["node"]["nodes"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(node_of)
            .filter(|n| base_name(&n.key) != "_config")
            .collect();
        nodes.sort_by_key(|n| n.created_index);
        let me = self.self_name();
        let position = nodes
            .iter()
            .position(|n| base_name(&n.key) == me)
            .unwrap_or(nodes.len());
        if position as u64 >= size {
            nodes.truncate(size as usize);
            return Err(KeysFailure::Final(DiscoveryError::FullCluster));
        }
        Ok((nodes, size, dir.index))
    }

    /// Registers this member, then waits until the service shows the key
    /// (etcd does, in case the service is a cluster with lagging members).
    async fn create_self(&self, config: &str) -> Result<(), DiscoveryError> {
        let key = format!("{}/{}", self.cluster, self.self_name());
        let form = format!("value={}", form_escape(config));
        let created = match self
            .send(
                http::Method::PUT,
                &key,
                "prevExist=false",
                Some(form),
                REQUEST_TIMEOUT,
            )
            .await
        {
            Ok(a) => a,
            Err(KeysError::V2(e)) if e.code == NODE_EXIST => {
                return Err(DiscoveryError::DuplicateId);
            }
            Err(KeysError::V2(e)) => return Err(DiscoveryError::V2(e)),
            Err(KeysError::InvalidJson) => {
                return Err(DiscoveryError::Other(INVALID_JSON.to_string()));
            }
            // etcd does not retry a failed registration either.
            Err(KeysError::Transient(e) | KeysError::TimedOut(e)) => return Err(unavailable(&e)),
        };
        let Some(index) = created.json["node"]["createdIndex"]
            .as_u64()
            .filter(|i| *i > 0)
        else {
            // Nothing to wait for; the directory reads that follow show
            // whether the registration is there.
            return Ok(());
        };
        let query = format!("wait=true&waitIndex={index}");
        match self
            .send(http::Method::GET, &key, &query, None, WATCH_POLL)
            .await
        {
            Ok(_) => Ok(()),
            Err(KeysError::V2(e)) => Err(DiscoveryError::V2(e)),
            Err(KeysError::InvalidJson) => Err(DiscoveryError::Other(INVALID_JSON.to_string())),
            Err(KeysError::Transient(e) | KeysError::TimedOut(e)) => Err(unavailable(&e)),
        }
    }

    /// Waits until `size` members registered; the first `size` of them.
    async fn wait_nodes(&mut self) -> Result<Vec<Node>, DiscoveryError> {
        let me = self.self_name();
        let mut reported = 0;
        loop {
            let (mut nodes, size, index) = self.check_cluster().await?;
            for n in nodes.iter().skip(reported) {
                let id = base_name(&n.key);
                if id == me {
                    tracing::info!("found self {id} in the cluster");
                } else {
                    tracing::info!("found peer {id} in the cluster");
                }
            }
            reported = nodes.len();
            if nodes.len() as u64 >= size {
                nodes.truncate(size as usize);
                tracing::info!("found {} needed peer(s)", nodes.len());
                return Ok(nodes);
            }
            tracing::info!(
                "found {} peer(s), waiting for {} more",
                nodes.len(),
                size - nodes.len() as u64
            );
            let now = Instant::now();
            if now >= self.deadline {
                return Err(DiscoveryError::Timeout {
                    waited: WAIT_FOR_MEMBERS,
                    missing: size - nodes.len() as u64,
                });
            }
            let poll = WATCH_POLL.min(self.deadline - now);
            let query = format!("wait=true&recursive=true&waitIndex={}", index + 1);
            match self
                .send(http::Method::GET, &self.cluster, &query, None, poll)
                .await
            {
                // Something changed, or the poll ended quietly: read it all
                // again. A v2 error (e.g. 401, the event history moved past
                // the index) is handled the same way: the next read starts
                // from the current index.
                Ok(_) | Err(KeysError::TimedOut(_) | KeysError::V2(_) | KeysError::InvalidJson) => {
                }
                Err(KeysError::Transient(e)) => {
                    self.backoff("waiting for other nodes", &e).await?;
                }
            }
        }
    }

    /// etcd's backoff: 2^n seconds before retry n, here capped and counted.
    async fn backoff(&mut self, step: &str, error: &str) -> Result<(), DiscoveryError> {
        self.retries += 1;
        if self.retries > MAX_RETRIES {
            tracing::warn!("{step}: {error}");
            return Err(DiscoveryError::TooManyRetries);
        }
        let wait = self.backoff_unit * (1 << self.retries.min(MAX_BACKOFF_EXPONENT));
        tracing::info!(
            "{step}: error connecting to {}, retrying in {wait:?} ({error})",
            self.base
        );
        tokio::time::sleep(wait).await;
        Ok(())
    }
}

/// A keys request's failure as the retry loop sees it.
enum KeysFailure {
    Transient(String),
    Final(DiscoveryError),
}

/// etcd's v2 client's words when no endpoint answered.
fn unavailable(error: &str) -> DiscoveryError {
    DiscoveryError::Other(format!(
        "client: etcd cluster is unavailable or misconfigured; error #0: {error}"
    ))
}

/// Reads a keys answer as etcd's v2 client does: 5xx is a failed endpoint,
/// 200/201 must be JSON, anything else is a v2 error document.
fn answer(url: &Url, resp: Response) -> Result<Answer, KeysError> {
    let status = resp.status.as_u16();
    if status / 100 == 5 {
        return Err(KeysError::Transient(format!(
            "{url}: server error {status}"
        )));
    }
    let json: serde_json::Value =
        serde_json::from_slice(&resp.body).map_err(|_| KeysError::InvalidJson)?;
    if status == 200 || status == 201 {
        let index = resp
            .header("x-etcd-index")
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0);
        if !json.is_object() {
            return Err(KeysError::InvalidJson);
        }
        return Ok(Answer { json, index });
    }
    let code = json["errorCode"].as_i64().ok_or(KeysError::InvalidJson)?;
    Err(KeysError::V2(V2Error {
        code,
        message: json["message"].as_str().unwrap_or("").to_string(),
        cause: json["cause"].as_str().unwrap_or("").to_string(),
        index: json["index"].as_u64().unwrap_or(0),
    }))
}

fn node_of(v: &serde_json::Value) -> Option<Node> {
    Some(Node {
        key: v["key"].as_str()?.to_string(),
        value: v["value"].as_str().unwrap_or("").to_string(),
        created_index: v["createdIndex"].as_u64().unwrap_or(0),
    })
}

/// Go's `strconv.ParseUint(s, 10, 0)`: decimal digits only. A size of zero
/// (which etcd would choke on) or beyond [`MAX_SIZE`] is bad too.
fn parse_size(text: &str) -> Option<u64> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse().ok().filter(|n| (1..=MAX_SIZE).contains(n))
}

/// The last segment of a key (Go's `path.Base`).
fn base_name(key: &str) -> &str {
    let trimmed = key.trim_end_matches('/');
    trimmed.rsplit('/').next().unwrap_or(trimmed)
}

/// `application/x-www-form-urlencoded` escaping, as Go's `url.Values`.
fn form_escape(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

/// The registrations' values joined as etcd's `nodesToCluster`: they must
/// parse as a `name=url` map and name exactly `nodes.len()` members.
fn nodes_to_cluster(nodes: &[Node]) -> Result<String, DiscoveryError> {
    let joined = nodes
        .iter()
        .map(|n| n.value.as_str())
        .collect::<Vec<_>>()
        .join(",");
    let map = super::parse_urls_map(&joined).map_err(|_| DiscoveryError::InvalidUrl)?;
    if map.len() != nodes.len() {
        return Err(DiscoveryError::DuplicateName);
    }
    Ok(joined)
}

/// For the fuzz target.
pub mod fuzzing {
    use super::{answer, base_name, node_of, nodes_to_cluster, parse_size};

    /// A keys answer (`status`, `body`) read as the discovery client reads
    /// it: as a size key, and as a directory listing turned into a
    /// cluster. A description of the outcome; `Err` for a broken invariant.
    pub fn keys_answer(status: u16, body: &[u8]) -> Result<String, String> {
        let url = url::Url::parse("http://fuzz:2379/v2/keys/d").map_err(|e| e.to_string())?;
        let Ok(status) = http::StatusCode::from_u16(status) else {
            return Ok(format!("status {status} is no HTTP status"));
        };
        let resp = super::Response {
            status,
            headers: http::HeaderMap::new(),
            body: bytes::Bytes::copy_from_slice(body),
        };
        let a = match answer(&url, resp) {
            Err(e) => return Ok(format!("error {e:?}")),
            Ok(a) => a,
        };
        let size = parse_size(a.json["node"]["value"].as_str().unwrap_or(""));
        if size.is_some_and(|n| n == 0 || n > super::MAX_SIZE) {
            return Err(format!("size {size:?} out of bounds"));
        }
        let mut nodes: Vec<super::Node> = a.json["node"]["nodes"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(node_of)
            .filter(|n| base_name(&n.key) != "_config")
            .collect();
        nodes.sort_by_key(|n| n.created_index);
        let cluster = nodes_to_cluster(&nodes);
        if let Ok(text) = &cluster {
            let parsed = super::super::parse_urls_map(text)
                .map_err(|e| format!("a cluster nodes_to_cluster accepted does not parse: {e}"))?;
            if parsed.len() != nodes.len() {
                return Err("nodes_to_cluster accepted a cluster with a duplicate name".into());
            }
        }
        Ok(format!(
            "size {} nodes {} cluster {}",
            size.is_some(),
            nodes.len(),
            cluster.is_ok()
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(key: &str, value: &str, created_index: u64) -> Node {
        Node {
            key: key.into(),
            value: value.into(),
            created_index,
        }
    }

    /// A discovery service on loopback that answers every request with
    /// `reply(request line)`; counts requests.
    async fn fake_service(
        reply: impl Fn(&str) -> String + Send + Sync + 'static,
    ) -> (String, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let count = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let seen = std::sync::Arc::clone(&count);
        let reply = std::sync::Arc::new(reply);
        tokio::spawn(async move {
            while let Ok((mut s, _)) = listener.accept().await {
                let reply = std::sync::Arc::clone(&reply);
                let seen = std::sync::Arc::clone(&seen);
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 8192];
                    let mut got = 0;
                    while !buf[..got].windows(4).any(|w| w == b"\r\n\r\n") {
                        match s.read(&mut buf[got..]).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => got += n,
                        }
                    }
                    seen.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    let head = String::from_utf8_lossy(&buf[..got]).into_owned();
                    let line = head.lines().next().unwrap_or("").to_string();
                    let _ = s.write_all(reply(&line).as_bytes()).await;
                });
            }
        });
        (format!("http://{addr}/v2/keys/d"), count)
    }

    fn http(status: &str, index: u64, body: &str) -> String {
        format!(
            "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nX-Etcd-Index: {index}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )
    }

    async fn join_fast(url: &str) -> Result<String, DiscoveryError> {
        let c = Client::new(url, None, 0xabc, Duration::from_millis(1)).unwrap();
        join(c, "me=http://10.0.0.1:2380").await
    }

    #[tokio::test]
    async fn retries_are_bounded() {
        let (url, count) = fake_service(|_| http("503 Service Unavailable", 1, "")).await;
        let e = join_fast(&url).await.unwrap_err();
        assert_eq!(e.to_string(), "discovery: too many retries");
        assert_eq!(
            count.load(std::sync::atomic::Ordering::Relaxed),
            MAX_RETRIES as usize + 1
        );
        // Nobody listening at all.
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let e = join_fast(&format!("http://127.0.0.1:{port}/v2/keys/d"))
            .await
            .unwrap_err();
        assert_eq!(e.to_string(), "discovery: too many retries");
    }

    #[tokio::test]
    async fn malformed_answers_are_errors() {
        let size = r#"{"action":"get","node":{"key":"/d/_config/size","value":"1"}}"#;
        // A listing whose nodes are not objects, keys not strings.
        let (url, _) = fake_service(move |line| {
            if line.contains("_config/size") {
                http("200 OK", 3, size)
            } else if line.starts_with("PUT") {
                http("201 Created", 4, r#"{"node":{"createdIndex":"x"}}"#)
            } else {
                http(
                    "200 OK",
                    4,
                    r#"{"node":{"nodes":[1,"a",{"key":7},{"key":"/d/abc","value":5}]}}"#,
                )
            }
        })
        .await;
        let e = join_fast(&url).await.unwrap_err();
        // The one usable node (this member's) has no value: no member
        // named, as etcd's nodesToCluster reports it.
        assert_eq!(e.to_string(), "discovery: found duplicate name");
        // A registration that someone else already made under our ID.
        let (url, _) = fake_service(move |line| {
            if line.contains("_config/size") {
                http("200 OK", 3, size)
            } else if line.starts_with("PUT") {
                http(
                    "412 Precondition Failed",
                    4,
                    r#"{"errorCode":105,"message":"Key already exists","cause":"/d/abc","index":4}"#,
                )
            } else {
                http("200 OK", 4, r#"{"node":{"key":"/d","dir":true}}"#)
            }
        })
        .await;
        assert_eq!(
            join_fast(&url).await.unwrap_err().to_string(),
            "discovery: found duplicate id"
        );
        // A chunked, endless body is cut at the limit, not buffered.
        let (url, _) = fake_service(|_| {
            let mut r = String::from("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n");
            for _ in 0..1100 {
                r.push_str(&format!("1000\r\n{}\r\n", "x".repeat(4096)));
            }
            r
        })
        .await;
        let e = join_fast(&url).await.unwrap_err();
        assert_eq!(e.to_string(), "discovery: too many retries");
    }

    #[test]
    fn sizes_parse_as_go_parse_uint() {
        assert_eq!(parse_size("3"), Some(3));
        assert_eq!(parse_size("+3"), None);
        assert_eq!(parse_size(" 3"), None);
        assert_eq!(parse_size("abc"), None);
        assert_eq!(parse_size(""), None);
        assert_eq!(parse_size("0"), None);
        assert_eq!(parse_size("99999999999999999999999"), None);
    }

    #[test]
    fn v2_errors_print_as_etcds_client() {
        let e = V2Error {
            code: 100,
            message: "Key not found".into(),
            cause: "/_etcd".into(),
            index: 4,
        };
        assert_eq!(e.to_string(), "100: Key not found (/_etcd) [4]");
        assert_eq!(
            base_name("/_etcd/registry/t/7e48c47444dc14f7"),
            "7e48c47444dc14f7"
        );
        assert_eq!(base_name("/a/_config/"), "_config");
    }

    #[test]
    fn the_cluster_is_every_registration() {
        let ok = [
            node("/d/1", "a=http://10.0.0.1:2380", 5),
            node("/d/2", "b=http://10.0.0.2:2380,b=http://10.0.0.22:2380", 6),
        ];
        assert_eq!(
            nodes_to_cluster(&ok).unwrap(),
            "a=http://10.0.0.1:2380,b=http://10.0.0.2:2380,b=http://10.0.0.22:2380"
        );
        let dup = [
            node("/d/1", "a=http://10.0.0.1:2380", 5),
            node("/d/2", "a=http://10.0.0.2:2380", 6),
        ];
        assert_eq!(
            nodes_to_cluster(&dup).unwrap_err().to_string(),
            "discovery: found duplicate name"
        );
        let bad = [node("/d/1", "a=10.0.0.1:2380", 5)];
        assert_eq!(
            nodes_to_cluster(&bad).unwrap_err().to_string(),
            "discovery: invalid URL"
        );
    }

    #[test]
    fn answers_are_read_as_etcds_client_reads_them() {
        let url = Url::parse("http://h:1/x").unwrap();
        let resp = |status: u16, body: &str| Response {
            status: http::StatusCode::from_u16(status).unwrap(),
            headers: http::HeaderMap::new(),
            body: bytes::Bytes::from(body.to_string()),
        };
        assert!(matches!(
            answer(&url, resp(503, "")),
            Err(KeysError::Transient(_))
        ));
        assert!(matches!(
            answer(&url, resp(200, "<html>")),
            Err(KeysError::InvalidJson)
        ));
        assert!(matches!(
            answer(&url, resp(404, "not json")),
            Err(KeysError::InvalidJson)
        ));
        match answer(
            &url,
            resp(
                412,
                r#"{"errorCode":105,"message":"Key already exists","cause":"/d/1","index":9}"#,
            ),
        ) {
            Err(KeysError::V2(e)) => assert_eq!(e.code, NODE_EXIST),
            other => panic!("{:?}", other.err()),
        }
        // Malformed shapes never panic.
        assert!(node_of(&serde_json::json!({"key": 5})).is_none());
        assert!(node_of(&serde_json::json!([1, 2])).is_none());
    }
}
