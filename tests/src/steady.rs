//! A steady write load that fails over the way etcd's clientv3 does, for
//! rolling restarts (`rolling_restart.rs`, `cairn-bench --failover`).
//!
//! Each writer keeps one put in flight on one member at a time. A put that
//! provably never reached a server (the connection was refused or could not
//! be made: the member is stopping or stopped) is offered to the next member,
//! as clientv3 retries a mutating RPC only when it was not sent. Any other
//! error is a failed request: the write may or may not have happened, so a
//! client cannot retry it blindly. A request's latency runs from its first
//! attempt to its answer, failovers included.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use etcd_client::{Client, ConnectOptions};

/// How long one put may take before it counts as failed.
pub const PUT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a writer keeps offering one put to members that refuse
/// connections (all of them down) before it counts as failed.
pub const FAILOVER_BUDGET: Duration = Duration::from_secs(15);
/// Distinct error messages kept.
const MAX_ERROR_MESSAGES: usize = 5;

#[derive(Debug, Default, Clone)]
pub struct Outcome {
    /// Latency of every acknowledged put, in microseconds.
    pub latencies_us: Vec<u64>,
    pub failed: u64,
    /// Puts that moved to another member because theirs refused.
    pub failovers: u64,
    pub error_messages: Vec<String>,
}

impl Outcome {
    pub fn merge(&mut self, other: Outcome) {
        self.latencies_us.extend(other.latencies_us);
        self.failed += other.failed;
        self.failovers += other.failovers;
        for m in other.error_messages {
            if self.error_messages.len() < MAX_ERROR_MESSAGES && !self.error_messages.contains(&m) {
                self.error_messages.push(m);
            }
        }
    }

    pub fn max_ms(&self) -> f64 {
        self.latencies_us.iter().max().copied().unwrap_or(0) as f64 / 1000.0
    }
}

/// True when the error shows the request never left the client: no
/// connection could be made to the member, or the connection closed before
/// the request was written to it.
pub fn never_sent(e: &etcd_client::Error) -> bool {
    let text = match e {
        etcd_client::Error::GRpcStatus(s)
            if matches!(
                s.code(),
                tonic::Code::Unavailable | tonic::Code::Cancelled | tonic::Code::Internal
            ) =>
        {
            format!("{} {:?}", s.message(), s)
        }
        etcd_client::Error::TransportError(t) => format!("{t} {t:?}"),
        _ => return false,
    };
    text.contains("Connection refused")
        || text.contains("tcp connect error")
        || text.contains("error trying to connect")
        // hyper cancels the requests still queued for a connection that
        // closed (the server's GOAWAY): they were never written to it.
        // grpc-go retries these transparently too.
        || (text.contains("Canceled") && text.contains("connection closed"))
        // A stream the client opened after the server's graceful GOAWAY
        // (its ID above the frame's last stream ID): h2 fails it with the
        // GOAWAY's reason, and the server never processed it (RFC 9113,
        // 6.8). grpc-go retries these transparently too.
        || (text.contains("GoAway(") && text.contains("NO_ERROR") && text.contains("Remote"))
}

async fn connect(endpoint: &str) -> Option<Client> {
    let opts = ConnectOptions::new()
        .with_connect_timeout(Duration::from_secs(2))
        .with_timeout(PUT_TIMEOUT);
    Client::connect([endpoint], Some(opts)).await.ok()
}

/// One writer: puts `key` with an increasing value until `stop`, starting
/// on member `first`. Connections are made lazily and remade after errors.
pub async fn writer(
    endpoints: Arc<Vec<String>>,
    first: usize,
    key: String,
    stop: Arc<AtomicBool>,
) -> Outcome {
    let mut out = Outcome::default();
    let mut at = first % endpoints.len();
    let mut client: Option<Client> = None;
    let mut n: u64 = 0;
    while !stop.load(Ordering::Relaxed) {
        n += 1;
        let value = format!("{n}");
        let started = Instant::now();
        loop {
            if client.is_none() {
                client = connect(&endpoints[at]).await;
            }
            let result = match client.as_mut() {
                // The connect itself was refused: nothing was sent.
                None => None,
                Some(c) => Some(
                    tokio::time::timeout(PUT_TIMEOUT, c.put(key.as_str(), value.as_str(), None))
                        .await,
                ),
            };
            match result {
                Some(Ok(Ok(_))) => {
                    out.latencies_us.push(started.elapsed().as_micros() as u64);
                    break;
                }
                Some(Ok(Err(e))) if !never_sent(&e) => {
                    out.failed += 1;
                    let since = std::time::SystemTime::now()
                        .duration_since(std::time::UNIX_EPOCH)
                        .unwrap_or_default()
                        .saturating_sub(started.elapsed());
                    let m = format!(
                        "{} (sent at unix {:.3}): {e}",
                        endpoints[at],
                        since.as_secs_f64()
                    );
                    if out.error_messages.len() < MAX_ERROR_MESSAGES {
                        out.error_messages.push(m);
                    }
                    client = None;
                    at = (at + 1) % endpoints.len();
                    break;
                }
                Some(Err(_)) => {
                    out.failed += 1;
                    if out.error_messages.len() < MAX_ERROR_MESSAGES {
                        out.error_messages.push(format!(
                            "{}: no answer within {PUT_TIMEOUT:?}",
                            endpoints[at]
                        ));
                    }
                    client = None;
                    at = (at + 1) % endpoints.len();
                    break;
                }
                None | Some(Ok(Err(_))) => {
                    out.failovers += 1;
                    client = None;
                    at = (at + 1) % endpoints.len();
                    if started.elapsed() > FAILOVER_BUDGET {
                        out.failed += 1;
                        if out.error_messages.len() < MAX_ERROR_MESSAGES {
                            out.error_messages
                                .push("no member accepted a connection".to_string());
                        }
                        break;
                    }
                    // Every member refusing at once is a full outage, not
                    // a rolling restart: don't spin on it.
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            }
        }
    }
    out
}
