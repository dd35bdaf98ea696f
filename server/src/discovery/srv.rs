//! `--discovery-srv`: the initial cluster from DNS SRV records, as etcd's
//! `pkg/srv.GetCluster` builds it. `_etcd-server-ssl._tcp.<domain>` lists
//! `https` peers, `_etcd-server._tcp.<domain>` `http` ones (with
//! `--discovery-srv-name x`: `_etcd-server-ssl-x._tcp`, `_etcd-server-x._tcp`).
//! Each target is resolved; the one whose address is one of this member's
//! advertised peer URLs' is this member (named `--name`), the others get
//! temporary names `0`, `1`, ... until they publish their own.
//!
//! Both record kinds are combined and either may be missing, as in etcd
//! 3.5 (commit 603d975). etcd 3.4.23 drops the `http` records when the
//! `https` lookup succeeds and fails when it does not, so an http-only SRV
//! setup cannot bootstrap there; Cairn follows the fix.

use super::dns::Resolver;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use url::Url;

/// The `name=url` pairs the SRV records give for this member (`name`,
/// advertising `advertise_peer`), both kinds combined. An error when
/// neither kind gave any, or this member is not among them.
pub async fn cluster(
    resolver: &Resolver,
    name: &str,
    domain: &str,
    service_name: &str,
    advertise_peer: &[Url],
) -> Result<Vec<(String, Vec<String>)>, String> {
    let suffix = if service_name.is_empty() {
        String::new()
    } else {
        format!("-{service_name}")
    };
    let mut pairs = Vec::new();
    let mut errors = Vec::new();
    for (scheme, service) in [
        ("https", format!("etcd-server-ssl{suffix}")),
        ("http", format!("etcd-server{suffix}")),
    ] {
        match get_cluster(resolver, scheme, &service, name, domain, advertise_peer).await {
            Ok(found) => {
                tracing::info!(
                    "got bootstrap from DNS for {service}: {}",
                    if found.is_empty() {
                        "nothing".to_string()
                    } else {
                        found.join(",")
                    }
                );
                pairs.extend(found);
            }
            Err(e) => errors.push(e),
        }
    }
    if pairs.is_empty() {
        return Err(if errors.is_empty() {
            format!("no SRV records for {domain}")
        } else {
            errors.join("; ")
        });
    }
    let members = super::parse_urls_map(&pairs.join(","))?;
    if !members.iter().any(|(n, _)| n == name) {
        return Err(format!(
            "cannot find local etcd member {name:?} in SRV records"
        ));
    }
    Ok(members)
}

/// One service's records as `name=scheme://target:port` pairs (etcd's
/// `srv.GetCluster`).
async fn get_cluster(
    resolver: &Resolver,
    scheme: &str,
    service: &str,
    name: &str,
    domain: &str,
    advertise_peer: &[Url],
) -> Result<Vec<String>, String> {
    // This member's advertised peer URLs by address.
    let mut mine: BTreeMap<SocketAddr, &Url> = BTreeMap::new();
    for u in advertise_peer {
        let host = u.host_str().unwrap_or("");
        let port = u.port_or_known_default().unwrap_or(0);
        let addr = resolver
            .resolve(host, port)
            .await
            .map_err(|e| e.to_string())?;
        mine.insert(addr, u);
    }
    let records = resolver
        .lookup_srv(&format!("_{service}._tcp.{domain}"))
        .await
        .map_err(|e| format!("error querying DNS SRV records for _{service} {e}"))?;
    let mut pairs = Vec::new();
    let mut last_error = None;
    let mut temp_name = 0;
    for srv in records {
        let addr = match resolver.resolve(&srv.target, srv.port).await {
            Ok(a) => a,
            Err(e) => {
                last_error = Some(e.to_string());
                continue;
            }
        };
        // SRV targets end with a dot; URLs do not.
        let host = srv.target.trim_end_matches('.');
        let url_host = if host.contains(':') {
            format!("[{host}]:{}", srv.port)
        } else {
            format!("{host}:{}", srv.port)
        };
        let own = mine.get(&addr);
        let n = match own {
            Some(_) => name.to_string(),
            None => {
                temp_name += 1;
                (temp_name - 1).to_string()
            }
        };
        match own {
            Some(u) if u.scheme() != scheme => {
                last_error = Some(format!(
                    "bootstrap at {scheme}://{url_host} from DNS for {service} has scheme mismatch with expected peer {}",
                    cairn_config::format_url(u)
                ));
            }
            _ => pairs.push(format!("{n}={scheme}://{url_host}")),
        }
    }
    match (pairs.is_empty(), last_error) {
        (true, Some(e)) => Err(format!("error querying DNS SRV records for _{service} {e}")),
        _ => Ok(pairs),
    }
}

/// etcd's bootstrap check for SRV: this member's URLs from the records
/// must be exactly the ones it advertises, compared by address (the
/// records name hosts, the flags may give IPs).
pub async fn check_advertised(
    resolver: &Resolver,
    from_dns: &[String],
    advertise_peer: &[Url],
) -> Result<(), String> {
    let mut dns_addrs = Vec::new();
    for u in from_dns {
        let url = Url::parse(u).map_err(|e| format!("{u}: {e}"))?;
        let addr = resolver
            .resolve(
                url.host_str().unwrap_or(""),
                url.port_or_known_default().unwrap_or(0),
            )
            .await
            .map_err(|e| e.to_string())?;
        dns_addrs.push((url.scheme().to_string(), addr));
    }
    let mut own_addrs = Vec::new();
    for u in advertise_peer {
        let addr = resolver
            .resolve(
                u.host_str().unwrap_or(""),
                u.port_or_known_default().unwrap_or(0),
            )
            .await
            .map_err(|e| e.to_string())?;
        own_addrs.push((u.scheme().to_string(), addr));
    }
    dns_addrs.sort();
    dns_addrs.dedup();
    own_addrs.sort();
    own_addrs.dedup();
    if dns_addrs != own_addrs {
        let mut own: Vec<String> = advertise_peer
            .iter()
            .map(cairn_config::format_url)
            .collect();
        own.sort();
        return Err(format!(
            "--initial-cluster has {} but missing from --initial-advertise-peer-urls={} (the SRV records and the advertised URLs name different addresses)",
            from_dns.join(","),
            own.join(",")
        ));
    }
    Ok(())
}
