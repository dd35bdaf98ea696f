//! A small DNS client for `--discovery-srv`: SRV queries, and A/AAAA
//! queries for their targets, over UDP (TCP when the answer is truncated),
//! to the servers in `/etc/resolv.conf` as Go's resolver does.
//!
//! Why our own and not a resolver crate: discovery needs two record types,
//! once per start; a full resolver (hickory) is a large dependency tree for
//! that, and ours keeps the test hook simple. Tests point every lookup at a
//! DNS server of their own with [`TEST_DNS_SERVER_ENV`].
//!
//! Parsing never trusts the answer: every length and compression pointer
//! is checked (pointers only go backwards, a bounded number of times).

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// `127.0.0.1:5353`: every DNS lookup of discovery (SRV records and the
/// addresses of their targets and of this member's URLs) goes to this
/// server only. For tests, which run a DNS server on loopback.
pub const TEST_DNS_SERVER_ENV: &str = "CAIRN_TEST_DNS_SERVER";
const RESOLV_CONF: &str = "/etc/resolv.conf";
/// Go's resolver defaults: 5 s per try, 2 tries per server.
const TRY_TIMEOUT: Duration = Duration::from_secs(5);
const TRIES: usize = 2;
/// The UDP payload size we offer with EDNS0 (the DNS flag day's value).
const UDP_PAYLOAD_BYTES: u16 = 1232;
/// Longest DNS name (RFC 1035) and how many compression jumps we follow.
const MAX_NAME_BYTES: usize = 255;
const MAX_POINTER_JUMPS: usize = 16;
/// Most answer records read from one response.
const MAX_ANSWERS: usize = 1024;

const TYPE_A: u16 = 1;
const TYPE_AAAA: u16 = 28;
const TYPE_SRV: u16 = 33;
const TYPE_OPT: u16 = 41;
const CLASS_IN: u16 = 1;

/// One SRV record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Srv {
    pub priority: u16,
    pub weight: u16,
    pub port: u16,
    /// With its trailing dot, as Go returns it.
    pub target: String,
}

/// A failed lookup, worded as Go's `net.DNSError`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("lookup {name} on {server}: {what}")]
pub struct DnsError {
    pub name: String,
    pub server: String,
    pub what: String,
}

/// Where lookups go.
#[derive(Debug, Clone)]
pub struct Resolver {
    servers: Vec<SocketAddr>,
    /// Resolve host names through `servers` too (tests), instead of the
    /// system's resolver (which also reads /etc/hosts).
    hosts_by_dns: bool,
}

impl Resolver {
    /// The test server from [`TEST_DNS_SERVER_ENV`], or the system's.
    pub fn from_env() -> Result<Resolver, String> {
        match std::env::var(TEST_DNS_SERVER_ENV) {
            Ok(addr) if !addr.is_empty() => {
                let server = addr
                    .parse()
                    .map_err(|e| format!("{TEST_DNS_SERVER_ENV}={addr:?}: {e}"))?;
                Ok(Resolver::with_server(server))
            }
            _ => Ok(Resolver::system()),
        }
    }

    /// Every lookup to `server`.
    pub fn with_server(server: SocketAddr) -> Resolver {
        Resolver {
            servers: vec![server],
            hosts_by_dns: true,
        }
    }

    /// The name servers of `/etc/resolv.conf` (Go's default, the local
    /// host, when there are none).
    fn system() -> Resolver {
        let text = std::fs::read_to_string(RESOLV_CONF).unwrap_or_default();
        let mut servers: Vec<SocketAddr> = text
            .lines()
            .filter_map(|l| l.trim().strip_prefix("nameserver"))
            .filter_map(|rest| rest.trim().parse::<IpAddr>().ok())
            .map(|ip| SocketAddr::new(ip, 53))
            .collect();
        if servers.is_empty() {
            servers = vec![
                SocketAddr::from(([127, 0, 0, 1], 53)),
                SocketAddr::from((std::net::Ipv6Addr::LOCALHOST, 53)),
            ];
        }
        Resolver {
            servers,
            hosts_by_dns: false,
        }
    }

    /// Go's `net.LookupSRV("", "", name)`: the records of `name`, by
    /// priority, heavier weight first within one (Go shuffles by weight;
    /// discovery only needs every record).
    pub async fn lookup_srv(&self, name: &str) -> Result<Vec<Srv>, DnsError> {
        let answer = self.query(name, TYPE_SRV).await?;
        let mut records: Vec<Srv> = answer
            .records
            .into_iter()
            .filter_map(|r| match r {
                Record::Srv(s) => Some(s),
                _ => None,
            })
            .collect();
        if records.is_empty() {
            return Err(not_found(name, &answer.server));
        }
        records.sort_by(|a, b| {
            a.priority
                .cmp(&b.priority)
                .then(b.weight.cmp(&a.weight))
                .then(a.target.cmp(&b.target))
                .then(a.port.cmp(&b.port))
        });
        Ok(records)
    }

    /// Go's `net.ResolveTCPAddr("tcp", host:port)`: an IP literal as it
    /// is, a name to its first IPv4 address (else its first address).
    pub async fn resolve(&self, host: &str, port: u16) -> Result<SocketAddr, DnsError> {
        let bare = host.trim_start_matches('[').trim_end_matches(']');
        if let Ok(ip) = bare.parse::<IpAddr>() {
            return Ok(SocketAddr::new(ip, port));
        }
        if !self.hosts_by_dns {
            let found: Vec<SocketAddr> = tokio::time::timeout(
                TRY_TIMEOUT * TRIES as u32,
                tokio::net::lookup_host((bare, port)),
            )
            .await
            .map_err(|_| dns_error(bare, "system resolver", "i/o timeout"))?
            .map_err(|e| dns_error(bare, "system resolver", &e.to_string()))?
            .collect();
            return found
                .iter()
                .find(|a| a.is_ipv4())
                .or(found.first())
                .copied()
                .ok_or_else(|| not_found(bare, "system resolver"));
        }
        let a = self.query(bare, TYPE_A).await?;
        let mut ips: Vec<IpAddr> = a.records.iter().filter_map(Record::ip).collect();
        if ips.is_empty() {
            let aaaa = self.query(bare, TYPE_AAAA).await?;
            ips = aaaa.records.iter().filter_map(Record::ip).collect();
        }
        ips.first()
            .map(|ip| SocketAddr::new(*ip, port))
            .ok_or_else(|| not_found(bare, &a.server))
    }

    /// Asks each server in turn; the first real answer wins.
    async fn query(&self, name: &str, qtype: u16) -> Result<Answer, DnsError> {
        let fqdn = if name.ends_with('.') {
            name.to_string()
        } else {
            format!("{name}.")
        };
        let mut last = dns_error(&fqdn, "no name server", "no such host");
        for server in &self.servers {
            for _ in 0..TRIES {
                match query_server(*server, &fqdn, qtype).await {
                    Ok(Reply::Records(records)) => {
                        return Ok(Answer {
                            records,
                            server: server.to_string(),
                        });
                    }
                    Ok(Reply::NotFound) => return Err(not_found(&fqdn, &server.to_string())),
                    Ok(Reply::Failed(rcode)) => {
                        last = dns_error(
                            &fqdn,
                            &server.to_string(),
                            &format!("server misbehaving (rcode {rcode})"),
                        );
                        break;
                    }
                    Err(what) => last = dns_error(&fqdn, &server.to_string(), &what),
                }
            }
        }
        Err(last)
    }
}

struct Answer {
    records: Vec<Record>,
    server: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Record {
    Srv(Srv),
    Ip(IpAddr),
}

impl Record {
    fn ip(&self) -> Option<IpAddr> {
        match self {
            Record::Ip(ip) => Some(*ip),
            Record::Srv(_) => None,
        }
    }
}

/// What a server said.
#[derive(Debug, PartialEq, Eq)]
enum Reply {
    Records(Vec<Record>),
    /// NXDOMAIN.
    NotFound,
    /// Another error code (SERVFAIL, REFUSED, ...).
    Failed(u8),
}

fn dns_error(name: &str, server: &str, what: &str) -> DnsError {
    DnsError {
        name: name.to_string(),
        server: server.to_string(),
        what: what.to_string(),
    }
}

fn not_found(name: &str, server: &str) -> DnsError {
    dns_error(name, server, "no such host")
}

/// One query to one server: UDP first, TCP when the answer is truncated.
async fn query_server(server: SocketAddr, name: &str, qtype: u16) -> Result<Reply, String> {
    let id: u16 = rand::random();
    let query = encode_query(id, name, qtype)?;
    let udp = tokio::time::timeout(TRY_TIMEOUT, async {
        let bind: SocketAddr = if server.is_ipv4() {
            SocketAddr::from(([0, 0, 0, 0], 0))
        } else {
            SocketAddr::from((std::net::Ipv6Addr::UNSPECIFIED, 0))
        };
        let sock = tokio::net::UdpSocket::bind(bind).await?;
        sock.connect(server).await?;
        sock.send(&query).await?;
        let mut buf = vec![0u8; usize::from(UDP_PAYLOAD_BYTES)];
        loop {
            let n = sock.recv(&mut buf).await?;
            // A stray datagram with another ID is not our answer.
            if n >= 2 && u16::from_be_bytes([buf[0], buf[1]]) == id {
                buf.truncate(n);
                return Ok::<_, std::io::Error>(buf);
            }
        }
    })
    .await
    .map_err(|_| "i/o timeout".to_string())?
    .map_err(|e| e.to_string())?;
    match decode_reply(&udp, id) {
        Err(Truncated) => {}
        Ok(reply) => return reply,
    }
    let tcp = tokio::time::timeout(TRY_TIMEOUT, async {
        let mut s = tokio::net::TcpStream::connect(server).await?;
        let len = u16::try_from(query.len()).unwrap_or(u16::MAX);
        s.write_all(&len.to_be_bytes()).await?;
        s.write_all(&query).await?;
        let n = usize::from(s.read_u16().await?);
        let mut buf = vec![0u8; n];
        s.read_exact(&mut buf).await?;
        Ok::<_, std::io::Error>(buf)
    })
    .await
    .map_err(|_| "i/o timeout".to_string())?
    .map_err(|e| e.to_string())?;
    decode_reply(&tcp, id).unwrap_or_else(|Truncated| Err("truncated answer over TCP".into()))
}

/// The answer was truncated: ask again over TCP.
struct Truncated;

/// A query for `name` (absolute, with its dot) with an EDNS0 record.
fn encode_query(id: u16, name: &str, qtype: u16) -> Result<Vec<u8>, String> {
    let mut q = Vec::with_capacity(64);
    q.extend_from_slice(&id.to_be_bytes());
    q.extend_from_slice(&0x0100u16.to_be_bytes()); // RD
    q.extend_from_slice(&1u16.to_be_bytes()); // QDCOUNT
    q.extend_from_slice(&0u16.to_be_bytes());
    q.extend_from_slice(&0u16.to_be_bytes());
    q.extend_from_slice(&1u16.to_be_bytes()); // ARCOUNT: OPT
    if name.len() > MAX_NAME_BYTES {
        return Err(format!("{name:?} is too long for a DNS name"));
    }
    for label in name.trim_end_matches('.').split('.') {
        if label.is_empty() || label.len() > 63 {
            return Err(format!("{name:?} is not a valid DNS name"));
        }
        q.push(label.len() as u8);
        q.extend_from_slice(label.as_bytes());
    }
    q.push(0);
    q.extend_from_slice(&qtype.to_be_bytes());
    q.extend_from_slice(&CLASS_IN.to_be_bytes());
    // OPT: root name, type, UDP payload size, extended rcode/flags, no data.
    q.push(0);
    q.extend_from_slice(&TYPE_OPT.to_be_bytes());
    q.extend_from_slice(&UDP_PAYLOAD_BYTES.to_be_bytes());
    q.extend_from_slice(&0u32.to_be_bytes());
    q.extend_from_slice(&0u16.to_be_bytes());
    Ok(q)
}

/// Reads a response to query `id`: its SRV, A and AAAA answers.
fn decode_reply(msg: &[u8], id: u16) -> Result<Result<Reply, String>, Truncated> {
    let bad = |why: &str| Ok(Err(format!("malformed DNS answer: {why}")));
    if msg.len() < 12 {
        return bad("shorter than a header");
    }
    let word = |at: usize| u16::from_be_bytes([msg[at], msg[at + 1]]);
    if word(0) != id {
        return bad("wrong ID");
    }
    let flags = word(2);
    if flags & 0x8000 == 0 {
        return bad("not a response");
    }
    if flags & 0x0200 != 0 {
        return Err(Truncated);
    }
    let rcode = (flags & 0x000f) as u8;
    match rcode {
        0 => {}
        3 => return Ok(Ok(Reply::NotFound)),
        other => return Ok(Ok(Reply::Failed(other))),
    }
    let (qdcount, ancount) = (word(4), usize::from(word(6)));
    let mut at = 12;
    for _ in 0..qdcount {
        let Some(next) = skip_name(msg, at) else {
            return bad("question name");
        };
        at = next + 4;
        if at > msg.len() {
            return bad("question");
        }
    }
    let mut records = Vec::new();
    for _ in 0..ancount.min(MAX_ANSWERS) {
        let Some(next) = skip_name(msg, at) else {
            return bad("record name");
        };
        if next + 10 > msg.len() {
            return bad("record header");
        }
        let rtype = word(next);
        let rdlen = usize::from(word(next + 8));
        let data = next + 10;
        let end = data + rdlen;
        if end > msg.len() {
            return bad("record data");
        }
        let rdata = &msg[data..end];
        match rtype {
            TYPE_A if rdlen == 4 => {
                records.push(Record::Ip(IpAddr::from([
                    rdata[0], rdata[1], rdata[2], rdata[3],
                ])));
            }
            TYPE_AAAA if rdlen == 16 => {
                let mut b = [0u8; 16];
                b.copy_from_slice(rdata);
                records.push(Record::Ip(IpAddr::from(b)));
            }
            TYPE_SRV if rdlen > 6 => {
                let Some(target) = read_name(msg, data + 6) else {
                    return bad("SRV target");
                };
                records.push(Record::Srv(Srv {
                    priority: word(data),
                    weight: word(data + 2),
                    port: word(data + 4),
                    target,
                }));
            }
            // CNAMEs and anything else: the resolver already followed them.
            _ => {}
        }
        at = end;
    }
    Ok(Ok(Reply::Records(records)))
}

/// The offset after the name at `at` (a pointer ends a name).
fn skip_name(msg: &[u8], mut at: usize) -> Option<usize> {
    loop {
        let len = *msg.get(at)?;
        match len {
            0 => return Some(at + 1),
            l if l & 0xc0 == 0xc0 => {
                msg.get(at + 1)?;
                return Some(at + 2);
            }
            l if l & 0xc0 == 0 => at += 1 + usize::from(l),
            _ => return None,
        }
    }
}

/// The name at `at`, following compression pointers (only backwards, a
/// bounded number of times), with its trailing dot.
fn read_name(msg: &[u8], mut at: usize) -> Option<String> {
    let mut name = String::new();
    let mut jumps = 0;
    loop {
        let len = *msg.get(at)?;
        match len {
            0 => break,
            l if l & 0xc0 == 0xc0 => {
                let target = (usize::from(l & 0x3f) << 8) | usize::from(*msg.get(at + 1)?);
                jumps += 1;
                if target >= at || jumps > MAX_POINTER_JUMPS {
                    return None;
                }
                at = target;
            }
            l if l & 0xc0 == 0 => {
                let label = msg.get(at + 1..at + 1 + usize::from(l))?;
                name.push_str(&String::from_utf8_lossy(label));
                name.push('.');
                if name.len() > MAX_NAME_BYTES {
                    return None;
                }
                at += 1 + usize::from(l);
            }
            _ => return None,
        }
    }
    if name.is_empty() {
        name.push('.');
    }
    Some(name)
}

/// For the fuzz target.
pub mod fuzzing {
    use super::{Record, Reply, decode_reply};

    /// A DNS response to query ID `id`, decoded; the records as text, or
    /// why it was refused. `Err` only for a broken invariant.
    pub fn dns_reply(msg: &[u8], id: u16) -> Result<Result<Vec<String>, String>, String> {
        let reply = match decode_reply(msg, id) {
            Err(super::Truncated) => return Ok(Err("truncated".into())),
            Ok(Err(e)) => return Ok(Err(e)),
            Ok(Ok(r)) => r,
        };
        let Reply::Records(records) = reply else {
            return Ok(Err(format!("{reply:?}")));
        };
        if records.len() > super::MAX_ANSWERS {
            return Err(format!("{} records, over the bound", records.len()));
        }
        let mut out = Vec::new();
        for r in records {
            match r {
                Record::Srv(s) => {
                    if !s.target.ends_with('.') || s.target.len() > super::MAX_NAME_BYTES + 1 {
                        return Err(format!(
                            "SRV target {:?} is not a bounded absolute name",
                            s.target
                        ));
                    }
                    out.push(format!(
                        "SRV {} {} {} {}",
                        s.priority, s.weight, s.port, s.target
                    ));
                }
                Record::Ip(ip) => out.push(format!("IP {ip}")),
            }
        }
        Ok(Ok(out))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A response to `query` with these answer records (type, rdata).
    fn response(query: &[u8], rcode: u8, answers: &[(u16, Vec<u8>)]) -> Vec<u8> {
        // Header, then the question as asked (without the OPT record).
        let qend = skip_name(query, 12).unwrap() + 4;
        let mut r = query[..qend].to_vec();
        r[2] = 0x81;
        r[3] = 0x80 | rcode;
        r[6..8].copy_from_slice(&(answers.len() as u16).to_be_bytes());
        r[10..12].copy_from_slice(&0u16.to_be_bytes());
        for (t, data) in answers {
            r.extend_from_slice(&[0xc0, 12]);
            r.extend_from_slice(&t.to_be_bytes());
            r.extend_from_slice(&CLASS_IN.to_be_bytes());
            r.extend_from_slice(&60u32.to_be_bytes());
            r.extend_from_slice(&(data.len() as u16).to_be_bytes());
            r.extend_from_slice(data);
        }
        r
    }

    #[test]
    fn srv_answers_decode_with_compressed_targets() {
        let q = encode_query(7, "_etcd-server._tcp.example.test.", TYPE_SRV).unwrap();
        // Target "m1" + pointer to "example.test." inside the question
        // (offset 12 + len("_etcd-server") + 1 + len("_tcp") + 1 = 30).
        let mut srv = vec![0, 1, 0, 5, 0x09, 0x4c];
        srv.extend_from_slice(&[2, b'm', b'1', 0xc0, 30]);
        let r = response(&q, 0, &[(TYPE_SRV, srv), (TYPE_A, vec![127, 0, 0, 1])]);
        let Ok(Ok(Reply::Records(records))) = decode_reply(&r, 7) else {
            panic!("no records");
        };
        assert_eq!(
            records,
            vec![
                Record::Srv(Srv {
                    priority: 1,
                    weight: 5,
                    port: 2380,
                    target: "m1.example.test.".into()
                }),
                Record::Ip(IpAddr::from([127, 0, 0, 1]))
            ]
        );
        assert_eq!(
            decode_reply(&response(&q, 3, &[]), 7).ok(),
            Some(Ok(Reply::NotFound))
        );
        assert_eq!(
            decode_reply(&response(&q, 2, &[]), 7).ok(),
            Some(Ok(Reply::Failed(2)))
        );
        let mut truncated = response(&q, 0, &[]);
        truncated[2] |= 0x02;
        assert!(decode_reply(&truncated, 7).is_err());
    }

    #[test]
    fn hostile_answers_are_errors_not_panics() {
        let q = encode_query(9, "a.example.", TYPE_SRV).unwrap();
        // A reserved label type, a forward pointer, a label past the end.
        for target in [vec![0x80u8, 1], vec![0xc0, 0xff], vec![40, b'x']] {
            let mut srv = vec![0, 1, 0, 1, 0, 1];
            srv.extend_from_slice(&target);
            let r = response(&q, 0, &[(TYPE_SRV, srv)]);
            assert!(matches!(decode_reply(&r, 9), Ok(Err(_))), "{target:?}");
        }
        let good = response(&q, 0, &[(TYPE_A, vec![1, 2, 3, 4])]);
        for cut in 0..good.len() {
            let _ = decode_reply(&good[..cut], 9);
        }
        // Random bytes: any outcome but a panic.
        for seed in 0..2000u32 {
            let bytes: Vec<u8> = (0..(seed % 97))
                .map(|i| (seed.wrapping_mul(2_654_435_761).wrapping_add(i * 40_503) >> 7) as u8)
                .collect();
            let _ = decode_reply(&bytes, 9);
            let _ = read_name(&bytes, 0);
        }
        assert!(encode_query(1, &format!("{}.example.", "x".repeat(64)), TYPE_A).is_err());
    }
}
