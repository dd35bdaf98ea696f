//! Which process owns the other end of a loopback TCP connection.
//!
//! A member dials its peers at their advertised URLs from an ephemeral port
//! on 127.0.0.1, whatever address it listens on, so the source address says
//! nothing about the caller. The kernel does know: the caller's socket is
//! the row of `/proc/net/tcp` whose local address is the connection's source
//! and whose remote address is the proxy's listener; its inode appears as
//! `socket:[inode]` among the open files of exactly one process. The harness
//! tells the proxy how to recognise each member's process (a string unique
//! to its command line, e.g. its `--data-dir=` flag), so a restarted member
//! (new PID, same flags) is recognised without re-registration.
//!
//! Linux only; everything here reads `/proc` and is bounded by the number of
//! processes and their open files.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::sync::Mutex;

use super::Identify;

/// `/proc/net/tcp`'s form of an address: the IPv4 address as the hex of its
/// host-order u32 (little-endian on the machines we run on) and the port in
/// hex, e.g. `0100007F:1F90` for 127.0.0.1:8080.
fn proc_hex(addr: SocketAddr) -> Option<String> {
    match addr.ip() {
        IpAddr::V4(v4) => Some(format!(
            "{:08X}:{:04X}",
            u32::from_le_bytes(v4.octets()),
            addr.port()
        )),
        IpAddr::V6(_) => None,
    }
}

/// The inode of the socket whose local address is `local` and remote address
/// `remote`, from one `/proc/net/tcp` text.
pub(crate) fn find_inode(table: &str, local: SocketAddr, remote: SocketAddr) -> Option<u64> {
    let (l, r) = (proc_hex(local)?, proc_hex(remote)?);
    table.lines().skip(1).find_map(|line| {
        let f: Vec<&str> = line.split_whitespace().collect();
        // sl local rem st tx:rx tr:when retrnsmt uid timeout inode ...
        (f.len() > 9 && f[1] == l && f[2] == r)
            .then(|| f[9].parse().ok())
            .flatten()
    })
}

/// True when process `pid` has socket `inode` open.
fn owns(pid: u32, inode: u64) -> bool {
    let want = format!("socket:[{inode}]");
    let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
        return false;
    };
    dir.flatten().any(|e| {
        std::fs::read_link(e.path())
            .map(|t| t.as_os_str() == want.as_str())
            .unwrap_or(false)
    })
}

fn cmdline(pid: u32) -> Option<String> {
    let raw = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    Some(String::from_utf8_lossy(&raw).replace('\0', " "))
}

/// Identifies callers by the owner of their socket; member `i` is the
/// process whose command line contains `needles[i]`.
pub struct ProcIdentify {
    needles: Vec<String>,
    /// pid → member, from the last scan of `/proc`.
    known: Mutex<HashMap<u32, usize>>,
}

impl ProcIdentify {
    pub fn new(needles: Vec<String>) -> ProcIdentify {
        ProcIdentify {
            needles,
            known: Mutex::new(HashMap::new()),
        }
    }

    fn member_of(&self, pid: u32) -> Option<usize> {
        let line = cmdline(pid)?;
        self.needles.iter().position(|n| line.contains(n.as_str()))
    }

    /// Every process that is one of the members, now.
    fn scan(&self) -> HashMap<u32, usize> {
        let mut out = HashMap::new();
        let Ok(dir) = std::fs::read_dir("/proc") else {
            return out;
        };
        for e in dir.flatten() {
            let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
                continue;
            };
            if let Some(m) = self.member_of(pid) {
                out.insert(pid, m);
            }
        }
        out
    }

    fn search(&self, pids: &HashMap<u32, usize>, inode: u64) -> Option<usize> {
        pids.iter()
            .find(|(pid, m)| owns(**pid, inode) && self.member_of(**pid) == Some(**m))
            .map(|(_, m)| *m)
    }
}

impl Identify for ProcIdentify {
    fn caller(&self, peer: SocketAddr, local: SocketAddr) -> Option<usize> {
        let table = std::fs::read_to_string(Path::new("/proc/net/tcp")).ok()?;
        let inode = find_inode(&table, peer, local)?;
        if inode == 0 {
            return None;
        }
        let cached = self.known.lock().ok()?.clone();
        if let Some(m) = self.search(&cached, inode) {
            return Some(m);
        }
        // A member started (or restarted) since the last scan.
        let fresh = self.scan();
        let found = self.search(&fresh, inode);
        if let Ok(mut k) = self.known.lock() {
            *k = fresh;
        }
        found
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_socket_row() {
        let table = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n\
   0: 0100007F:A3C2 0201A8C0:0950 01 00000000:00000000 00:00000000 00000000     0        0 424242 1 0000000000000000 20 4 30 10 -1\n";
        let local: SocketAddr = "127.0.0.1:41922".parse().unwrap();
        let remote: SocketAddr = "192.168.1.2:2384".parse().unwrap();
        assert_eq!(find_inode(table, local, remote), Some(424242));
        assert_eq!(find_inode(table, remote, local), None);
    }

    #[test]
    fn identifies_this_process_by_its_command_line() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (_server, peer) = listener.accept().unwrap();
        let me = cmdline(std::process::id()).unwrap();
        let needle = me.split_whitespace().next().unwrap().to_string();
        let id = ProcIdentify::new(vec!["no such process anywhere".into(), needle]);
        assert_eq!(id.caller(peer, listener.local_addr().unwrap()), Some(1));
        drop(client);
    }
}
