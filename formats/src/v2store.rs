//! The v2 store etcd 3.4 keeps in each raft snapshot (`.snap` data): a
//! JSON node tree. Membership lives under `/0` — it is where etcd 3.4 boots
//! its member list from (the `members` bucket of the db can be stale after
//! `etcdctl snapshot restore`); v2 API keys live under `/1`.
//!
//! ```text
//! {"Root": {"Path": "/", "CreatedIndex": 0, "ModifiedIndex": 0,
//!           "ExpireTime": "0001-01-01T00:00:00Z", "Value": "",
//!           "Children": {"0": {…}, "1": {…}}},          (null for a key)
//!  "WatcherHub": …, "CurrentIndex": 13, "Stats": …, "CurrentVersion": 2}
//! /0/members/<id hex>/raftAttributes   {"peerURLs":[…],"isLearner":true}
//! /0/members/<id hex>/attributes       {"name":"…","clientURLs":[…]}
//! /0/removed_members/<id hex>          (empty value)
//! /0/version                           "3.4.0"
//! ```

use crate::etcd::Member;
use serde::Deserialize;

/// Go's zero `time.Time`: a node without a TTL.
pub const NO_EXPIRY: &str = "0001-01-01T00:00:00Z";
/// Nodes a store may hold before the parser gives up (the `.snap` file is
/// already bounded; this bounds the flattened copy).
pub const MAX_V2_NODES: usize = 10_000_000;

/// One node of the tree, flattened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct V2Node {
    pub path: String,
    /// `None` for a directory.
    pub value: Option<String>,
    pub created_index: u64,
    pub modified_index: u64,
    /// RFC 3339, or [`NO_EXPIRY`].
    pub expire_time: String,
}

/// The parsed store.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct V2Store {
    /// Every node, parents before children, siblings in name order.
    pub nodes: Vec<V2Node>,
    pub current_index: u64,
}

/// Membership as the v2 store records it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct V2Membership {
    /// In ID order.
    pub members: Vec<Member>,
    pub removed: Vec<u64>,
    pub cluster_version: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum V2Error {
    #[error("v2 store: {0}")]
    Json(#[from] serde_json::Error),
    #[error("v2 store: more than {MAX_V2_NODES} nodes")]
    TooManyNodes,
    #[error("v2 store: {path}: {problem}")]
    BadMember { path: String, problem: String },
}

#[derive(Deserialize)]
struct RawStore {
    #[serde(rename = "Root")]
    root: RawNode,
    #[serde(rename = "CurrentIndex", default)]
    current_index: u64,
}

#[derive(Deserialize)]
struct RawNode {
    #[serde(rename = "Path")]
    path: String,
    #[serde(rename = "CreatedIndex", default)]
    created_index: u64,
    #[serde(rename = "ModifiedIndex", default)]
    modified_index: u64,
    #[serde(rename = "ExpireTime", default)]
    expire_time: String,
    #[serde(rename = "Value", default)]
    value: String,
    #[serde(rename = "Children", default)]
    children: Option<std::collections::BTreeMap<String, RawNode>>,
}

/// Parses the v2 store JSON of a 3.4 raft snapshot.
pub fn parse(data: &[u8]) -> Result<V2Store, V2Error> {
    // serde_json bounds nesting (128 levels), so hostile depth is an error.
    let raw: RawStore = serde_json::from_slice(data)?;
    let mut nodes = Vec::new();
    let mut todo = vec![raw.root];
    while let Some(n) = todo.pop() {
        if nodes.len() >= MAX_V2_NODES {
            return Err(V2Error::TooManyNodes);
        }
        let (value, children) = match n.children {
            Some(c) => (None, c),
            None => (Some(n.value), Default::default()),
        };
        nodes.push(V2Node {
            path: n.path,
            value,
            created_index: n.created_index,
            modified_index: n.modified_index,
            expire_time: n.expire_time,
        });
        // Reversed so the stack pops them in name order.
        todo.extend(children.into_values().rev());
    }
    Ok(V2Store {
        nodes,
        current_index: raw.current_index,
    })
}

#[derive(Deserialize, Default)]
struct RaftAttributes {
    #[serde(rename = "peerURLs", default)]
    peer_urls: Option<Vec<String>>,
    #[serde(rename = "isLearner", default)]
    is_learner: bool,
}

#[derive(Deserialize, Default)]
struct Attributes {
    #[serde(default)]
    name: String,
    #[serde(rename = "clientURLs", default)]
    client_urls: Option<Vec<String>>,
}

impl V2Store {
    /// The node at `path`.
    pub fn get(&self, path: &str) -> Option<&V2Node> {
        self.nodes.iter().find(|n| n.path == path)
    }

    /// Members, removed members and cluster version under `/0`.
    pub fn membership(&self) -> Result<V2Membership, V2Error> {
        let mut out = V2Membership::default();
        let mut members: std::collections::BTreeMap<u64, Member> = Default::default();
        for n in &self.nodes {
            let bad = |problem: String| V2Error::BadMember {
                path: n.path.clone(),
                problem,
            };
            let hex_id =
                |s: &str| u64::from_str_radix(s, 16).map_err(|e| bad(format!("member ID: {e}")));
            if n.path == "/0/version" {
                out.cluster_version = n.value.clone();
            } else if let Some(id) = n.path.strip_prefix("/0/removed_members/") {
                out.removed.push(hex_id(id)?);
            } else if let Some(rest) = n.path.strip_prefix("/0/members/") {
                let Some(value) = &n.value else { continue };
                let Some((id, attr)) = rest.split_once('/') else {
                    continue;
                };
                let id = hex_id(id)?;
                let m = members.entry(id).or_insert_with(|| Member {
                    id,
                    ..Default::default()
                });
                match attr {
                    "raftAttributes" => {
                        let a: RaftAttributes =
                            serde_json::from_str(value).map_err(|e| bad(e.to_string()))?;
                        m.peer_urls = a.peer_urls.unwrap_or_default();
                        m.is_learner = a.is_learner;
                    }
                    "attributes" => {
                        let a: Attributes =
                            serde_json::from_str(value).map_err(|e| bad(e.to_string()))?;
                        m.name = a.name;
                        m.client_urls = a.client_urls.unwrap_or_default();
                    }
                    _ => {}
                }
            }
        }
        out.members = members.into_values().collect();
        out.removed.sort_unstable();
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(path: &str, value: Option<&str>, children: &[serde_json::Value]) -> serde_json::Value {
        let kids: serde_json::Map<String, serde_json::Value> = children
            .iter()
            .map(|c| {
                let p = c["Path"].as_str().unwrap();
                (p.rsplit('/').next().unwrap().to_string(), c.clone())
            })
            .collect();
        serde_json::json!({
            "Path": path, "CreatedIndex": 1, "ModifiedIndex": 2, "ExpireTime": NO_EXPIRY,
            "Value": value.unwrap_or(""),
            "Children": if value.is_some() { serde_json::Value::Null } else { kids.into() },
        })
    }

    #[test]
    fn membership_from_a_store_tree() {
        let m1 = node(
            "/0/members/8e9e05c52164694d",
            None,
            &[
                node(
                    "/0/members/8e9e05c52164694d/raftAttributes",
                    Some(r#"{"peerURLs":["http://localhost:2380"]}"#),
                    &[],
                ),
                node(
                    "/0/members/8e9e05c52164694d/attributes",
                    Some(r#"{"name":"default","clientURLs":["http://localhost:2379"]}"#),
                    &[],
                ),
            ],
        );
        let m2 = node(
            "/0/members/a",
            None,
            &[node(
                "/0/members/a/raftAttributes",
                Some(r#"{"peerURLs":["http://x:2380"],"isLearner":true}"#),
                &[],
            )],
        );
        let removed = node(
            "/0/removed_members",
            None,
            &[node("/0/removed_members/ff", Some(""), &[])],
        );
        let zero = node(
            "/0",
            None,
            &[
                node("/0/members", None, &[m1, m2]),
                removed,
                node("/0/version", Some("3.4.0"), &[]),
            ],
        );
        let root = node("/", None, &[zero, node("/1", None, &[])]);
        let data = serde_json::json!({"Root": root, "CurrentIndex": 13}).to_string();
        let store = parse(data.as_bytes()).unwrap();
        assert_eq!(store.current_index, 13);
        assert_eq!(store.nodes[0].path, "/");
        assert_eq!(
            store.get("/0/version").unwrap().value.as_deref(),
            Some("3.4.0")
        );
        assert_eq!(store.get("/1").unwrap().value, None);
        let m = store.membership().unwrap();
        assert_eq!(m.cluster_version.as_deref(), Some("3.4.0"));
        assert_eq!(m.removed, vec![0xff]);
        assert_eq!(m.members.len(), 2);
        assert_eq!(m.members[0].id, 0xa);
        assert!(m.members[0].is_learner);
        assert_eq!(m.members[1].id, 0x8e9e_05c5_2164_694d);
        assert_eq!(m.members[1].name, "default");
        assert_eq!(m.members[1].client_urls, vec!["http://localhost:2379"]);
        assert!(parse(b"{\"Root\": 5}").is_err());
    }
}
