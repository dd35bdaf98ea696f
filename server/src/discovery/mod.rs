//! How a brand-new member learns its initial cluster when it is not given
//! with `--initial-cluster`: etcd's v2 discovery protocol (`--discovery`,
//! `v2.rs`) or DNS SRV records (`--discovery-srv`, `srv.rs`, over the small
//! DNS client in `dns.rs`). Used by `boot` on a member's first start only.
//!
//! Error texts are etcd 3.4's, so operators' runbooks and log searches
//! still match.

mod dns;
pub mod srv;
pub mod v2;

pub use dns::{Resolver, TEST_DNS_SERVER_ENV};

/// The parsers of what a DNS server and a discovery service send, for the
/// fuzz targets (`crate::fuzz_api`). Not an API.
pub mod fuzzing {
    pub use super::dns::fuzzing::dns_reply;
    pub use super::v2::fuzzing::keys_answer;
}

/// Why discovery failed; the `discovery: ...` texts are etcd's.
#[derive(Debug, thiserror::Error)]
pub enum DiscoveryError {
    #[error("discovery: invalid URL")]
    InvalidUrl,
    #[error("discovery: size key is bad")]
    BadSizeKey,
    #[error("discovery: found duplicate id")]
    DuplicateId,
    #[error("discovery: found duplicate name")]
    DuplicateName,
    #[error("discovery: cluster is full")]
    FullCluster,
    #[error("discovery: too many retries")]
    TooManyRetries,
    #[error("discovery: bad discovery endpoint")]
    BadDiscoveryEndpoint,
    /// Cairn's bound on etcd's unbounded wait.
    #[error("discovery: gave up after {waited:?} waiting for {missing} more member(s) to register")]
    Timeout {
        waited: std::time::Duration,
        missing: u64,
    },
    /// The discovery service's own v2 error, printed as etcd prints it.
    #[error("{0}")]
    V2(v2::V2Error),
    #[error("{0}")]
    Other(String),
}

/// etcd's `types.NewURLsMap`: `name=url` pairs separated by commas, a name
/// repeated for each of its URLs; every URL must be a peer URL
/// (`http`, `https`, `unix` or `unixs`, with a port and no path). Returns
/// the members in order of first appearance, each URL list sorted (as
/// etcd's `types.URLs`).
pub fn parse_urls_map(text: &str) -> Result<Vec<(String, Vec<String>)>, String> {
    let mut members: Vec<(String, Vec<String>)> = Vec::new();
    for item in text.split(',').filter(|i| !i.is_empty()) {
        let (name, url) = item.split_once('=').unwrap_or((item, ""));
        check_peer_url(url)?;
        match members.iter_mut().find(|(n, _)| n == name) {
            Some((_, urls)) => urls.push(url.to_string()),
            None => members.push((name.to_string(), vec![url.to_string()])),
        }
    }
    for (_, urls) in &mut members {
        urls.sort();
    }
    Ok(members)
}

/// etcd's `types.NewURLs` rules for one URL.
fn check_peer_url(text: &str) -> Result<(), String> {
    let url = url::Url::parse(text.trim()).map_err(|e| format!("{text:?}: {e}"))?;
    if !matches!(url.scheme(), "http" | "https" | "unix" | "unixs") {
        return Err(format!(
            "URL scheme must be http, https, unix, or unixs: {text}"
        ));
    }
    if url.host_str().is_none_or(str::is_empty) || url.port().is_none() {
        return Err(format!(
            "URL address does not have the form \"host:port\": {text}"
        ));
    }
    if !matches!(url.path(), "" | "/") || text.trim_end().ends_with('/') {
        return Err(format!("URL must not contain a path: {text}"));
    }
    Ok(())
}

/// etcd's `URLsMap.String()`: every `name=url` pair, sorted.
pub fn urls_map_string(members: &[(String, Vec<String>)]) -> String {
    let mut pairs: Vec<String> = members
        .iter()
        .flat_map(|(n, urls)| urls.iter().map(move |u| format!("{n}={u}")))
        .collect();
    pairs.sort();
    pairs.join(",")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_maps_parse_as_etcds() {
        let m = parse_urls_map("b=http://h2:2380,a=http://h1:2380,b=http://h0:2380").unwrap();
        assert_eq!(
            m,
            vec![
                (
                    "b".to_string(),
                    vec!["http://h0:2380".to_string(), "http://h2:2380".to_string()]
                ),
                ("a".to_string(), vec!["http://h1:2380".to_string()]),
            ]
        );
        assert_eq!(
            urls_map_string(&m),
            "a=http://h1:2380,b=http://h0:2380,b=http://h2:2380"
        );
        assert!(parse_urls_map("a=h1:2380").is_err());
        assert!(parse_urls_map("a=http://h1").is_err());
        assert!(parse_urls_map("a=http://h1:2380/x").is_err());
        assert!(parse_urls_map("a").is_err());
        assert_eq!(parse_urls_map("").unwrap(), vec![]);
    }
}
