//! A tiny DNS server on loopback for the `--discovery-srv` tests: answers
//! SRV and A queries over UDP from a fixed table (names are absolute and
//! matched case-insensitively), NXDOMAIN for names it does not know.
//! Members find it through `CAIRN_TEST_DNS_SERVER`.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

/// The variable that points a Cairn member's discovery lookups here.
pub const DNS_SERVER_ENV: &str = "CAIRN_TEST_DNS_SERVER";

const TYPE_A: u16 = 1;
const TYPE_SRV: u16 = 33;

/// One SRV record.
#[derive(Debug, Clone)]
pub struct SrvRecord {
    pub priority: u16,
    pub weight: u16,
    pub port: u16,
    /// Absolute, e.g. `localhost.`.
    pub target: String,
}

/// What the server knows.
#[derive(Debug, Clone, Default)]
pub struct Zone {
    pub srv: BTreeMap<String, Vec<SrvRecord>>,
    pub a: BTreeMap<String, Vec<Ipv4Addr>>,
}

impl Zone {
    pub fn add_srv(&mut self, name: &str, port: u16, target: &str) {
        self.srv
            .entry(name.to_ascii_lowercase())
            .or_default()
            .push(SrvRecord {
                priority: 0,
                weight: 10,
                port,
                target: target.to_string(),
            });
    }

    pub fn add_a(&mut self, name: &str, ip: Ipv4Addr) {
        self.a
            .entry(name.to_ascii_lowercase())
            .or_default()
            .push(ip);
    }
}

/// The running server; stops when dropped.
pub struct DnsServer {
    pub addr: SocketAddr,
    /// Queries answered so far.
    pub queries: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl DnsServer {
    pub fn start(zone: Zone) -> DnsServer {
        let sock = UdpSocket::bind("127.0.0.1:0").expect("bind the test DNS server");
        sock.set_read_timeout(Some(Duration::from_millis(100)))
            .expect("read timeout");
        let addr = sock.local_addr().expect("DNS server address");
        let stop = Arc::new(AtomicBool::new(false));
        let queries = Arc::new(AtomicUsize::new(0));
        let (s, q) = (Arc::clone(&stop), Arc::clone(&queries));
        let thread = std::thread::spawn(move || {
            let mut buf = [0u8; 1500];
            while !s.load(Ordering::Relaxed) {
                let Ok((n, from)) = sock.recv_from(&mut buf) else {
                    continue;
                };
                if let Some(reply) = answer(&zone, &buf[..n]) {
                    q.fetch_add(1, Ordering::Relaxed);
                    let _ = sock.send_to(&reply, from);
                }
            }
        });
        DnsServer {
            addr,
            queries,
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for DnsServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The reply to one query, or `None` for bytes that are not one.
fn answer(zone: &Zone, query: &[u8]) -> Option<Vec<u8>> {
    if query.len() < 12 {
        return None;
    }
    // The question: uncompressed labels, then type and class.
    let mut at = 12;
    let mut name = String::new();
    loop {
        let len = usize::from(*query.get(at)?);
        at += 1;
        if len == 0 {
            break;
        }
        if len > 63 {
            return None;
        }
        name.push_str(std::str::from_utf8(query.get(at..at + len)?).ok()?);
        name.push('.');
        at += len;
    }
    let qtype = u16::from_be_bytes([*query.get(at)?, *query.get(at + 1)?]);
    let qend = at + 4;
    query.get(..qend)?;
    let name = name.to_ascii_lowercase();
    let known = zone.srv.contains_key(&name) || zone.a.contains_key(&name);
    let mut records: Vec<(u16, Vec<u8>)> = Vec::new();
    match qtype {
        TYPE_SRV => {
            for r in zone.srv.get(&name).into_iter().flatten() {
                let mut data = Vec::new();
                data.extend_from_slice(&r.priority.to_be_bytes());
                data.extend_from_slice(&r.weight.to_be_bytes());
                data.extend_from_slice(&r.port.to_be_bytes());
                for label in r.target.trim_end_matches('.').split('.') {
                    data.push(label.len() as u8);
                    data.extend_from_slice(label.as_bytes());
                }
                data.push(0);
                records.push((TYPE_SRV, data));
            }
        }
        TYPE_A => {
            for ip in zone.a.get(&name).into_iter().flatten() {
                records.push((TYPE_A, ip.octets().to_vec()));
            }
        }
        _ => {}
    }
    let mut r = query[..qend].to_vec();
    // QR, RD, RA; NXDOMAIN for an unknown name.
    r[2] = 0x81;
    r[3] = if known { 0x80 } else { 0x83 };
    r[4..6].copy_from_slice(&1u16.to_be_bytes());
    r[6..8].copy_from_slice(&(records.len() as u16).to_be_bytes());
    r[8..12].copy_from_slice(&[0, 0, 0, 0]);
    for (t, data) in records {
        r.extend_from_slice(&[0xc0, 12]);
        r.extend_from_slice(&t.to_be_bytes());
        r.extend_from_slice(&1u16.to_be_bytes());
        r.extend_from_slice(&60u32.to_be_bytes());
        r.extend_from_slice(&(data.len() as u16).to_be_bytes());
        r.extend_from_slice(&data);
    }
    Some(r)
}
