use std::collections::HashMap;
use std::sync::atomic::AtomicUsize;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpSocket;

use super::*;

/// Identifies callers by the local port they dialed from.
#[derive(Default)]
struct ByPort(Mutex<HashMap<u16, usize>>);

impl Identify for ByPort {
    fn caller(&self, peer: SocketAddr, _local: SocketAddr) -> Option<usize> {
        self.0.lock().unwrap().get(&peer.port()).copied()
    }
}

/// A server that greets each connection with "hello\n", then echoes.
/// Returns its address and how many connections it accepted.
async fn greeting_echo() -> (SocketAddr, Arc<AtomicUsize>) {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let accepted = Arc::new(AtomicUsize::new(0));
    let count = Arc::clone(&accepted);
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            count.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                let _ = s.write_all(b"hello\n").await;
                let (mut r, mut w) = s.split();
                let _ = tokio::io::copy(&mut r, &mut w).await;
            });
        }
    });
    (addr, accepted)
}

fn free_addr() -> SocketAddr {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap()
}

struct Setup {
    proxy: PeerProxy,
    ids: Arc<ByPort>,
    listen: SocketAddr,
    accepted: Arc<AtomicUsize>,
}

/// Member 0 is the echo server behind the proxy; callers are members 1, 2.
async fn setup() -> Setup {
    let (upstream, accepted) = greeting_echo().await;
    let listen = free_addr();
    let ids = Arc::new(ByPort::default());
    let proxy = PeerProxy::start(
        3,
        &[Route {
            member: 0,
            listen,
            upstream,
        }],
        Arc::clone(&ids) as Arc<dyn Identify>,
        7,
    )
    .unwrap();
    Setup {
        proxy,
        ids,
        listen,
        accepted,
    }
}

/// Connects as member `m` (None: unidentified).
async fn dial(s: &Setup, m: Option<usize>) -> TcpStream {
    let sock = TcpSocket::new_v4().unwrap();
    sock.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    if let Some(m) = m {
        let port = sock.local_addr().unwrap().port();
        s.ids.0.lock().unwrap().insert(port, m);
    }
    sock.connect(s.listen).await.unwrap()
}

async fn read_line_within(r: &mut BufReader<TcpStream>, t: Duration) -> Option<String> {
    let mut line = String::new();
    match tokio::time::timeout(t, r.read_line(&mut line)).await {
        Ok(Ok(n)) if n > 0 => Some(line),
        _ => None,
    }
}

const QUIET: Duration = Duration::from_millis(300);
const SOON: Duration = Duration::from_secs(5);

#[tokio::test]
async fn passes_bytes_both_ways_and_knows_the_caller() {
    let s = setup().await;
    let mut c = BufReader::new(dial(&s, Some(1)).await);
    assert_eq!(
        read_line_within(&mut c, SOON).await.as_deref(),
        Some("hello\n")
    );
    c.get_mut().write_all(b"ping\n").await.unwrap();
    assert_eq!(
        read_line_within(&mut c, SOON).await.as_deref(),
        Some("ping\n")
    );
    let conns = s.proxy.connections();
    assert_eq!(conns.len(), 1);
    assert_eq!((conns[0].caller, conns[0].callee), (Some(1), 0));
    // "hello\n", "ping\n" up, "ping\n" down; counted just after each write.
    let deadline = Instant::now() + SOON;
    while s.proxy.stats().bytes < 16 {
        assert!(Instant::now() < deadline, "{:?}", s.proxy.stats());
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn one_way_blackhole_holds_one_direction_until_heal() {
    let s = setup().await;
    // Bytes from the server (0) to the caller (1) are held.
    s.proxy.set_link(0, 1, Link::Blackhole);
    let mut c = BufReader::new(dial(&s, Some(1)).await);
    c.get_mut().write_all(b"ping\n").await.unwrap();
    assert_eq!(read_line_within(&mut c, QUIET).await, None);
    // The other direction flowed: the server accepted and got the ping
    // (it echoed it into the held direction).
    assert_eq!(s.accepted.load(Ordering::SeqCst), 1);
    s.proxy.heal();
    assert_eq!(
        read_line_within(&mut c, SOON).await.as_deref(),
        Some("hello\n")
    );
    assert_eq!(
        read_line_within(&mut c, SOON).await.as_deref(),
        Some("ping\n")
    );
}

#[tokio::test]
async fn blackholed_caller_does_not_even_connect() {
    let s = setup().await;
    s.proxy.set_link(1, 0, Link::Blackhole);
    let mut c = BufReader::new(dial(&s, Some(1)).await);
    assert_eq!(read_line_within(&mut c, QUIET).await, None);
    assert_eq!(s.accepted.load(Ordering::SeqCst), 0);
    // Another member is not affected.
    let mut other = BufReader::new(dial(&s, Some(2)).await);
    assert_eq!(
        read_line_within(&mut other, SOON).await.as_deref(),
        Some("hello\n")
    );
    s.proxy.heal();
    assert_eq!(
        read_line_within(&mut c, SOON).await.as_deref(),
        Some("hello\n")
    );
    assert_eq!(s.accepted.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn partition_and_isolation_cut_both_ways() {
    let s = setup().await;
    let mut c1 = BufReader::new(dial(&s, Some(1)).await);
    let mut c2 = BufReader::new(dial(&s, Some(2)).await);
    assert!(read_line_within(&mut c1, SOON).await.is_some());
    assert!(read_line_within(&mut c2, SOON).await.is_some());
    s.proxy.partition(&[vec![0, 2], vec![1]]);
    c1.get_mut().write_all(b"one\n").await.unwrap();
    c2.get_mut().write_all(b"two\n").await.unwrap();
    assert_eq!(read_line_within(&mut c1, QUIET).await, None);
    assert_eq!(
        read_line_within(&mut c2, SOON).await.as_deref(),
        Some("two\n")
    );

    // Isolating 0 cuts unidentified callers too.
    s.proxy.heal();
    assert_eq!(
        read_line_within(&mut c1, SOON).await.as_deref(),
        Some("one\n")
    );
    s.proxy.isolate(0);
    let mut stranger = BufReader::new(dial(&s, None).await);
    assert_eq!(read_line_within(&mut stranger, QUIET).await, None);
    c2.get_mut().write_all(b"two\n").await.unwrap();
    assert_eq!(read_line_within(&mut c2, QUIET).await, None);
    s.proxy.heal();
    assert_eq!(
        read_line_within(&mut stranger, SOON).await.as_deref(),
        Some("hello\n")
    );
    assert_eq!(
        read_line_within(&mut c2, SOON).await.as_deref(),
        Some("two\n")
    );
}

#[tokio::test]
async fn delay_with_jitter_keeps_order() {
    let s = setup().await;
    let base = Duration::from_millis(30);
    s.proxy.set_all(Link::Delay {
        base,
        jitter: Duration::from_millis(25),
    });
    let t = Instant::now();
    let mut c = BufReader::new(dial(&s, Some(1)).await);
    assert_eq!(
        read_line_within(&mut c, SOON).await.as_deref(),
        Some("hello\n")
    );
    // One way at least base - jitter.
    assert!(t.elapsed() >= Duration::from_millis(5));
    for i in 0..50 {
        c.get_mut()
            .write_all(format!("{i}\n").as_bytes())
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let mut got = String::new();
    while got.lines().count() < 50 {
        let line = read_line_within(&mut c, SOON).await.expect("echo");
        got.push_str(&line);
    }
    let want: String = (0..50).map(|i| format!("{i}\n")).collect();
    assert_eq!(got, want);
}

#[tokio::test]
async fn reset_closes_open_connections() {
    let s = setup().await;
    let mut c = BufReader::new(dial(&s, Some(1)).await);
    assert!(read_line_within(&mut c, SOON).await.is_some());
    s.proxy.reset(0, 1);
    let mut buf = [0u8; 16];
    let r = tokio::time::timeout(SOON, c.get_mut().read(&mut buf))
        .await
        .expect("the reset arrives");
    assert!(matches!(r, Ok(0)) || r.is_err(), "read after reset: {r:?}");
    assert_eq!(s.proxy.stats().resets, 1);
    assert!(s.proxy.connections().is_empty());
}

/// Real processes as callers, recognised through /proc by a marker in their
/// command line.
#[tokio::test]
async fn identifies_caller_processes_through_proc() {
    let (upstream, _) = greeting_echo().await;
    let listen = free_addr();
    let proxy = PeerProxy::start(
        3,
        &[Route {
            member: 0,
            listen,
            upstream,
        }],
        Arc::new(ProcIdentify::new(vec![
            "cairn-proxy-test-member-0".into(),
            "cairn-proxy-test-member-1".into(),
            "cairn-proxy-test-member-2".into(),
        ])),
        1,
    )
    .unwrap();
    // bash opens the connection itself (/dev/tcp) and holds it open; $0 is
    // the marker.
    let script = format!(
        "exec 3<>/dev/tcp/{}/{}; read -t 10 line <&3; sleep 5",
        listen.ip(),
        listen.port()
    );
    let mut children = Vec::new();
    for m in [2, 1] {
        children.push(
            tokio::process::Command::new("bash")
                .args(["-c", &script, &format!("cairn-proxy-test-member-{m}")])
                .kill_on_drop(true)
                .spawn()
                .expect("bash"),
        );
        // One at a time, so the connections' order is known.
        let deadline = Instant::now() + SOON;
        while proxy.connections().len() < children.len() {
            assert!(Instant::now() < deadline, "no connection from bash");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    let callers: Vec<Option<usize>> = proxy.connections().iter().map(|c| c.caller).collect();
    assert_eq!(callers, vec![Some(2), Some(1)]);
    assert_eq!(proxy.stats().identified, 2);
}

#[tokio::test]
async fn throttle_paces_one_direction_and_counts_bytes() {
    let s = setup().await;
    const RATE: u64 = 200_000;
    const SENT: usize = 300_000;
    s.proxy.set_link(1, 0, Link::Throttle { bytes_per_s: RATE });
    let mut c = BufReader::new(dial(&s, Some(1)).await);
    assert_eq!(
        read_line_within(&mut c, SOON).await.as_deref(),
        Some("hello\n")
    );
    let t = Instant::now();
    let (mut r, mut w) = c.into_inner().into_split();
    let writer = tokio::spawn(async move {
        w.write_all(&vec![b'x'; SENT]).await.unwrap();
        w
    });
    let mut got = 0;
    let mut buf = vec![0u8; 64 * 1024];
    while got < SENT {
        let n = tokio::time::timeout(Duration::from_secs(10), r.read(&mut buf))
            .await
            .expect("echo within 10 s")
            .unwrap();
        assert!(n > 0, "closed after {got} bytes");
        got += n;
    }
    let _w = writer.await.unwrap();
    // The throttled way cannot have carried SENT bytes faster than RATE
    // (less one chunk, which may go at once).
    let floor = Duration::from_secs_f64((SENT - CHUNK_BYTES) as f64 / RATE as f64);
    assert!(t.elapsed() >= floor, "{:?} < {floor:?}", t.elapsed());
    // A chunk is counted just after it was written, so the reader can be
    // a step ahead of the count.
    let counted = Instant::now() + SOON;
    while (s.proxy.link_bytes(1, 0), s.proxy.link_bytes(0, 1)) != (SENT as u64, SENT as u64 + 6)
        && Instant::now() < counted
    {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(s.proxy.link_bytes(1, 0), SENT as u64);
    assert_eq!(s.proxy.link_bytes(0, 1), SENT as u64 + 6);
    assert_eq!(s.proxy.link_bytes(2, 0), 0);
}
