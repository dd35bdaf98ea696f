//! `/v2/members`, `/v2/machines` and `/v2/stats/*`: the cluster as v2
//! clients see it, with etcd's bodies, status codes and checks.

use super::*;
use crate::v2::{MemberError, V2Member};
use axum::extract::State;

/// Largest `/v2/members` JSON body read.
pub const MAX_MEMBER_BODY_BYTES: usize = 1 << 20;

const MEMBERS_PREFIX: &str = "/v2/members";

pub(super) async fn members(State(st): State<Arc<V2State>>, req: Request) -> Response {
    let path = match decoded_path(&req) {
        Ok(p) => p,
        Err(resp) => return *resp,
    };
    if let Some(resp) = redirect_unclean(&path, &req) {
        return resp;
    }
    let method = req.method().clone();
    if !matches!(
        method,
        Method::GET | Method::POST | Method::DELETE | Method::PUT
    ) {
        return method_not_allowed("GET,POST,DELETE,PUT");
    }
    if !st
        .auth
        .has_write_root_access(
            &method,
            req.headers(),
            super::auth::client_cn(&req).as_deref(),
        )
        .await
    {
        return super::auth::no_auth();
    }
    let backend = st.backend.as_ref();
    let cluster = cluster_header(backend);
    let mut resp = members_inner(backend, &method, &path, req).await;
    resp.headers_mut().insert("x-etcd-cluster-id", cluster);
    resp
}

async fn members_inner(
    backend: &dyn V2Backend,
    method: &Method,
    path: &str,
    req: Request,
) -> Response {
    let rest = path[MEMBERS_PREFIX.len()..].trim_start_matches('/');
    if *method == Method::GET {
        return match rest {
            "" => {
                let mut ms = backend.members();
                ms.sort_by_key(|m| m.id);
                #[derive(serde::Serialize)]
                struct Collection<'a> {
                    members: Vec<MemberJson<'a>>,
                }
                let members = ms.iter().map(member_json).collect();
                json_response(StatusCode::OK, &Collection { members }, true)
            }
            "leader" => match backend.leader() {
                Some(m) => json_response(StatusCode::OK, &member_json(&m), true),
                None => http_error(StatusCode::SERVICE_UNAVAILABLE, "During election"),
            },
            _ => http_error(StatusCode::NOT_FOUND, "Not found"),
        };
    }
    if *method == Method::POST {
        let urls = match read_peer_urls(req).await {
            Ok(u) => u,
            Err(resp) => return resp,
        };
        return match backend.add_member(urls).await {
            Ok(m) => json_response(StatusCode::CREATED, &member_json(&m), true),
            Err(e) => member_error(e, None),
        };
    }
    // DELETE and PUT name a member.
    if rest.is_empty() {
        return plain_error(StatusCode::METHOD_NOT_ALLOWED, "Method Not Allowed");
    }
    let Some(id) = parse_member_id(rest) else {
        return http_error(StatusCode::NOT_FOUND, &format!("No such member: {rest}"));
    };
    if *method == Method::DELETE {
        return match backend.remove_member(id).await {
            Ok(()) => StatusCode::NO_CONTENT.into_response(),
            Err(e) => member_error(e, Some(id)),
        };
    }
    let urls = match read_peer_urls(req).await {
        Ok(u) => u,
        Err(resp) => return resp,
    };
    match backend.update_member(id, urls).await {
        Ok(()) => StatusCode::NO_CONTENT.into_response(),
        // etcd's update handler has no 410 case: a removed member is 500.
        Err(MemberError::Removed) => member_error(MemberError::Other(String::new()), Some(id)),
        Err(e) => member_error(e, Some(id)),
    }
}

fn member_error(e: MemberError, id: Option<u64>) -> Response {
    let id = id.map(|i| format!("{i:x}")).unwrap_or_default();
    match e {
        MemberError::NotFound => {
            http_error(StatusCode::NOT_FOUND, &format!("No such member: {id}"))
        }
        MemberError::Removed => http_error(
            StatusCode::GONE,
            &format!("Member permanently removed: {id}"),
        ),
        MemberError::IdExists | MemberError::PeerUrlExists => {
            http_error(StatusCode::CONFLICT, &e.to_string())
        }
        MemberError::BadRequest(m) => http_error(StatusCode::BAD_REQUEST, &m),
        MemberError::Other(_) => {
            http_error(StatusCode::INTERNAL_SERVER_ERROR, "Internal Server Error")
        }
    }
}

/// etcd's `httptypes.Member`, fields in its order.
#[derive(serde::Serialize)]
struct MemberJson<'a> {
    id: String,
    name: &'a str,
    #[serde(rename = "peerURLs")]
    peer_urls: &'a [String],
    #[serde(rename = "clientURLs")]
    client_urls: &'a [String],
}

fn member_json(m: &V2Member) -> MemberJson<'_> {
    MemberJson {
        id: format!("{:x}", m.id),
        name: &m.name,
        peer_urls: &m.peer_urls,
        client_urls: &m.client_urls,
    }
}

/// The JSON body of a member add/update: `{"peerURLs":[...]}`, checked as
/// etcd does (content type, then JSON, then each URL).
async fn read_peer_urls(req: Request) -> Result<Vec<String>, Response> {
    let mut ctype = req
        .headers()
        .get(CONTENT_TYPE)
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
        .unwrap_or_default();
    // etcd normalizes the type only when it has parameters.
    if let Some(i) = ctype.find(';') {
        ctype = ctype[..i].trim().to_ascii_lowercase();
    }
    if ctype != JSON {
        return Err(http_error(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            &format!("Bad Content-Type {ctype}, accept application/json"),
        ));
    }
    let bad = |m: String| http_error(StatusCode::BAD_REQUEST, &m);
    let body = axum::body::to_bytes(req.into_body(), MAX_MEMBER_BODY_BYTES)
        .await
        .map_err(|e| bad(e.to_string()))?;
    let v: serde_json::Value = serde_json::from_slice(&body).map_err(|e| bad(e.to_string()))?;
    let serde_json::Value::Object(obj) = v else {
        return Err(bad("json: cannot unmarshal into member request".into()));
    };
    // Go matches JSON keys to fields case-insensitively (exact match first).
    let field = obj.get("peerURLs").or_else(|| {
        obj.iter()
            .find(|(k, _)| k.eq_ignore_ascii_case("peerURLs"))
            .map(|(_, v)| v)
    });
    let urls: Vec<String> = match field {
        None | Some(serde_json::Value::Null) => Vec::new(),
        Some(serde_json::Value::Array(a)) => a
            .iter()
            .map(|u| u.as_str().map(str::to_string))
            .collect::<Option<_>>()
            .ok_or_else(|| bad("json: cannot unmarshal non-string into peerURLs".into()))?,
        Some(_) => return Err(bad("json: cannot unmarshal peerURLs".into())),
    };
    check_urls(urls).map_err(bad)
}

/// etcd's `types.NewURLs`: at least one URL; each http, https, unix or
/// unixs, with `host:port` and no path. Returned trimmed and sorted.
fn check_urls(urls: Vec<String>) -> Result<Vec<String>, String> {
    if urls.is_empty() {
        return Err("no valid URLs given".into());
    }
    let mut out = Vec::with_capacity(urls.len());
    for u in urls {
        let u = u.trim().to_string();
        let (scheme, rest) = match u.split_once(':') {
            Some((s, r))
                if !s.is_empty()
                    && s.starts_with(|c: char| c.is_ascii_alphabetic())
                    && s.chars()
                        .all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c)) =>
            {
                (s.to_ascii_lowercase(), r)
            }
            _ => ("".to_string(), u.as_str()),
        };
        if !matches!(scheme.as_str(), "http" | "https" | "unix" | "unixs") {
            return Err(format!(
                "URL scheme must be http, https, unix, or unixs: {u}"
            ));
        }
        let rest = rest.split(['?', '#']).next().unwrap_or("");
        let (authority, path) = match rest.strip_prefix("//") {
            Some(r) => match r.find('/') {
                Some(i) => (&r[..i], &r[i..]),
                None => (r, ""),
            },
            None => ("", rest),
        };
        let host = authority.rsplit('@').next().unwrap_or("");
        if !is_host_port(host) {
            return Err(format!(
                "URL address does not have the form \"host:port\": {u}"
            ));
        }
        if !path.is_empty() {
            return Err(format!("URL must not contain a path: {u}"));
        }
        out.push(u);
    }
    out.sort();
    Ok(out)
}

/// Go's `net.SplitHostPort` succeeds: `host:port` or `[v6]:port`.
fn is_host_port(s: &str) -> bool {
    if let Some(r) = s.strip_prefix('[') {
        return match r.find(']') {
            Some(i) => r[i + 1..].starts_with(':') && !r[i + 2..].contains([':', '[', ']']),
            None => false,
        };
    }
    match s.rfind(':') {
        Some(i) => !s[..i].contains(':') && !s.contains(['[', ']']),
        None => false,
    }
}

/// etcd's `types.IDFromString`: hex, at most 64 bits.
fn parse_member_id(s: &str) -> Option<u64> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    u64::from_str_radix(s, 16).ok()
}

pub(super) async fn machines(State(st): State<Arc<V2State>>, req: Request) -> Response {
    let head = req.method() == Method::HEAD;
    if !head && req.method() != Method::GET {
        return method_not_allowed("GET,HEAD");
    }
    let mut urls: Vec<String> = st
        .backend
        .members()
        .into_iter()
        .flat_map(|m| m.client_urls)
        .collect();
    urls.sort();
    let mut headers = HeaderMap::new();
    headers.insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    body_response(StatusCode::OK, headers, urls.join(", "), head)
}

pub(super) async fn stats_store(State(st): State<Arc<V2State>>, req: Request) -> Response {
    if req.method() != Method::GET {
        return method_not_allowed("GET");
    }
    let body = st.backend.store().read().stats_json();
    ([(CONTENT_TYPE, JSON)], body).into_response()
}

pub(super) async fn stats_self(State(st): State<Arc<V2State>>, req: Request) -> Response {
    if req.method() != Method::GET {
        return method_not_allowed("GET");
    }
    json_response(StatusCode::OK, &st.backend.self_stats(), false)
}

pub(super) async fn stats_leader(State(st): State<Arc<V2State>>, req: Request) -> Response {
    if req.method() != Method::GET {
        return method_not_allowed("GET");
    }
    match st.backend.leader_stats() {
        Some(s) => json_response(StatusCode::OK, &s, false),
        None => http_error(StatusCode::FORBIDDEN, "not current leader"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_and_ids() {
        assert_eq!(
            check_urls(vec![" http://b:2 ".into(), "https://a:1".into()]),
            Ok(vec!["http://b:2".to_string(), "https://a:1".to_string()])
        );
        assert_eq!(
            check_urls(vec!["unix://sock:1".into(), "http://[::1]:2380".into()]).map(|v| v.len()),
            Ok(2)
        );
        assert_eq!(check_urls(vec![]), Err("no valid URLs given".into()));
        assert_eq!(
            check_urls(vec!["foo".into()]),
            Err("URL scheme must be http, https, unix, or unixs: foo".into())
        );
        assert_eq!(
            check_urls(vec!["http://host".into()]),
            Err("URL address does not have the form \"host:port\": http://host".into())
        );
        assert_eq!(
            check_urls(vec!["http://h:1/p".into()]),
            Err("URL must not contain a path: http://h:1/p".into())
        );
        assert_eq!(
            parse_member_id("8e9e05c52164694d"),
            Some(0x8e9e05c52164694d)
        );
        assert_eq!(parse_member_id("0x1"), None);
        assert_eq!(parse_member_id("zz"), None);
        assert_eq!(parse_member_id("11112222333344445"), None);
    }
}
