//! How a new member learns its cluster: `--initial-cluster` (or its
//! derived default), discovery, and the checks of its own membership.

use super::*;

/// `--initial-cluster`, or `<name>=<each advertised peer URL>` when it was
/// not given (so `--name infra1` alone starts a one-member cluster).
pub(super) fn initial_cluster(
    inputs: &mut Inputs,
    name: &str,
    advertise_peer: &[Url],
) -> Result<Vec<InitialMember>, ConfigError> {
    const FLAG: &str = "initial-cluster";
    if !inputs.explicit(FLAG) {
        let members: Vec<InitialMember> = advertise_peer
            .iter()
            .map(|u| InitialMember {
                name: name.to_string(),
                peer_url: u.clone(),
            })
            .collect();
        let derived = join_members(&members);
        set_raw(inputs, FLAG, &derived);
        return Ok(members);
    }
    parse_initial_cluster(&inputs.text(FLAG)?).map_err(|e| inputs.bad(FLAG, e))
}

/// `--discovery`, `--discovery-srv` and their companions, with etcd's
/// rules: at most one of `--initial-cluster`, `--discovery` and
/// `--discovery-srv`.
pub(super) fn bootstrap(inputs: &Inputs, name: &str) -> Result<Bootstrap, ConfigError> {
    let url = inputs.text("discovery")?;
    let domain = inputs.text("discovery-srv")?;
    let service_name = inputs.text("discovery-srv-name")?;
    let set = [
        !url.is_empty(),
        inputs.explicit("initial-cluster"),
        !domain.is_empty(),
    ];
    if set.iter().filter(|s| **s).count() > 1 {
        return Err(ConfigError::invalid(CONFLICT_BOOTSTRAP_FLAGS));
    }
    if !url.is_empty() {
        check_discovery_url(&url).map_err(|e| inputs.bad("discovery", e))?;
        let proxy = discovery_proxy(&inputs.text("discovery-proxy")?)
            .map_err(|e| inputs.bad("discovery-proxy", e))?;
        let fallback = match inputs.text("discovery-fallback")?.as_str() {
            "exit" => DiscoveryFallback::Exit,
            _ => DiscoveryFallback::Proxy,
        };
        return Ok(Bootstrap::Discovery {
            url,
            proxy,
            fallback,
        });
    }
    if !domain.is_empty() {
        return Ok(Bootstrap::Srv {
            domain,
            service_name,
        });
    }
    if !service_name.is_empty() && !inputs.explicit("initial-cluster") {
        // etcd clears its default --initial-cluster for this flag too and
        // then finds no member at all; say why.
        return Err(ConfigError::invalid(format!(
            "couldn't find local name {name:?} in the initial cluster configuration: --discovery-srv-name{} is set without --discovery-srv, which leaves no initial cluster (as in etcd)",
            inputs.at("discovery-srv-name")
        )));
    }
    Ok(Bootstrap::Static)
}

/// A discovery URL must be one an HTTP client can fetch.
pub(super) fn check_discovery_url(text: &str) -> Result<(), String> {
    const SHAPE: &str = "a discovery URL such as https://discovery.etcd.io/<token> or http://host:2379/v2/keys/<dir>";
    let url = Url::parse(text).map_err(|e| format!("{SHAPE} ({e})"))?;
    if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none_or(str::is_empty) {
        return Err(format!("{SHAPE} (http or https, with a host)"));
    }
    Ok(())
}

/// `--discovery-proxy`, sanitized as etcd does (a bare `host:port` means
/// `http://host:port`). The proxy itself must speak plain HTTP (https
/// discovery URLs go through it in a CONNECT tunnel).
pub(super) fn discovery_proxy(text: &str) -> Result<Option<String>, String> {
    if text.is_empty() {
        return Ok(None);
    }
    let url = match Url::parse(text) {
        Ok(u) if u.scheme().starts_with("http") && u.host_str().is_some() => u,
        first => match Url::parse(&format!("http://{text}")) {
            Ok(u) if u.host_str().is_some_and(|h| !h.is_empty()) => u,
            _ => {
                let why = first.map_or_else(|e| e.to_string(), |_| "no host".to_string());
                return Err(format!(
                    "an HTTP proxy address such as http://proxy:3128 ({why})"
                ));
            }
        },
    };
    if url.scheme() != "http" {
        return Err("an http:// proxy (cairn does not speak TLS to a proxy)".into());
    }
    Ok(Some(format_url(&url)))
}

/// An explicit `--initial-cluster`; `Err` holds what was expected.
pub(super) fn parse_initial_cluster(text: &str) -> Result<Vec<InitialMember>, String> {
    const SHAPE: &str = "comma-separated name=peer-URL pairs such as infra1=http://10.0.0.1:2380";
    let mut members = Vec::new();
    let mut seen = BTreeSet::new();
    for item in text.split(',').map(str::trim).filter(|i| !i.is_empty()) {
        let Some((member, url_text)) = item.split_once('=') else {
            return Err(format!("{SHAPE} ({item:?} has no '=')"));
        };
        let (member, url_text) = (member.trim(), url_text.trim());
        if member.is_empty() {
            return Err(format!("{SHAPE} ({item:?} has an empty member name)"));
        }
        let url = parse_url(url_text)
            .map_err(|e| format!("{SHAPE} (member {member:?}: {})", e.describe(url_text)))?;
        if !seen.insert(format_url(&url)) {
            return Err(format!(
                "{SHAPE} (URL {} is listed twice)",
                format_url(&url)
            ));
        }
        members.push(InitialMember {
            name: member.to_string(),
            peer_url: url,
        });
    }
    if members.is_empty() {
        return Err(SHAPE.to_string());
    }
    Ok(members)
}

pub(super) fn join_members(members: &[InitialMember]) -> String {
    members
        .iter()
        .map(|m| format!("{}={}", m.name, format_url(&m.peer_url)))
        .collect::<Vec<_>>()
        .join(",")
}

pub(super) fn join_urls<'a>(urls: impl IntoIterator<Item = &'a Url>) -> String {
    urls.into_iter()
        .map(format_url)
        .collect::<Vec<_>>()
        .join(",")
}

/// When bootstrapping a new cluster, this member must be in
/// `--initial-cluster` with exactly the URLs it advertises, or the members
/// would compute different member IDs and never form a quorum.
pub(super) fn check_own_membership(
    inputs: &Inputs,
    name: &str,
    cluster: &[InitialMember],
    advertise_peer: &[Url],
) -> Result<(), ConfigError> {
    let mine: Vec<&Url> = cluster
        .iter()
        .filter(|m| m.name == name)
        .map(|m| &m.peer_url)
        .collect();
    let cluster_text = inputs.resolved("initial-cluster")?.raw.clone();
    let cluster_at = inputs.at("initial-cluster");
    if mine.is_empty() {
        return Err(ConfigError::invalid(format!(
            "couldn't find local name {name:?}{} in the initial cluster configuration (--initial-cluster={cluster_text}){cluster_at}",
            inputs.at("name"),
        )));
    }
    let in_cluster: BTreeSet<String> = mine.iter().map(|u| format_url(u)).collect();
    let advertised: BTreeSet<String> = advertise_peer.iter().map(format_url).collect();
    if in_cluster != advertised {
        return Err(ConfigError::invalid(format!(
            "--initial-cluster has {name}={}{cluster_at} but --initial-advertise-peer-urls={}{}; the member's own peer URLs must be the same in both when --initial-cluster-state is new",
            join_urls(mine.iter().copied()),
            join_urls(advertise_peer),
            inputs.at("initial-advertise-peer-urls"),
        )));
    }
    Ok(())
}
