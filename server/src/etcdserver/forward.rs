//! Requests only the leader can answer — lease renewals and TTLs (the leader
//! alone tracks expiry), membership changes — go through one loop: ask
//! whoever leads now, this member or another over the peer service, until
//! it gives a definite answer or the request's deadline passes.

use super::EtcdServer;
use crate::error::Error;
use crate::pb::cairnpb::peer_client::PeerClient;
use std::time::Duration;
use tonic::transport::Channel;

/// Pause between attempts while leadership settles or the leader's peer
/// service cannot be reached.
const RETRY_INTERVAL: Duration = Duration::from_millis(50);

/// Who leads, as seen when an attempt starts.
pub(crate) enum Leader {
    /// This member.
    Me,
    /// Another member: its ID and a client for its peer service.
    Peer(u64, PeerClient<Channel>),
}

impl EtcdServer {
    /// Runs `attempt` against the current leader until it returns an answer
    /// (`Some`), retrying on `None` (not the leader after all, not yet
    /// promoted, unreachable). Past `deadline` — also in the middle of an
    /// attempt, e.g. a peer call to a frozen leader — the answer is
    /// `Timeout`, or `NoLeader` while no leader is known.
    pub(crate) async fn on_leader<T, F, Fut>(
        &self,
        deadline: tokio::time::Instant,
        mut attempt: F,
    ) -> Result<T, Error>
    where
        // A closure returning a future rather than an async closure: the
        // futures of the latter are not provably `Send` for tonic's handlers.
        F: FnMut(Leader) -> Fut,
        Fut: std::future::Future<Output = Option<Result<T, Error>>>,
    {
        loop {
            if let Some(leader) = self.current_leader()
                && let Ok(Some(answer)) = tokio::time::timeout_at(deadline, attempt(leader)).await
            {
                return answer;
            }
            let now = tokio::time::Instant::now();
            if now >= deadline {
                return Err(if self.status.has_leader() {
                    Error::Timeout
                } else {
                    Error::NoLeader
                });
            }
            tokio::time::sleep(RETRY_INTERVAL.min(deadline - now)).await;
        }
    }

    /// What a forwarded call's failure means for `on_leader`: `None`, ask
    /// again (not the leader after all, or it could not be reached);
    /// otherwise the leader's own answer, final. Its verdict on the caller
    /// is final too: a leader that restarted has forgotten every simple
    /// token issued before (they live in memory, in etcd as well), and
    /// retrying its "invalid auth token" held the call to the deadline,
    /// where the client, told, logs in again and goes on.
    pub(crate) fn forwarded_failure(s: &tonic::Status) -> Option<Error> {
        use tonic::Code;
        if s.message() == Error::NotLeader.to_string() {
            return None;
        }
        match s.code() {
            // Unreachable, cut off mid-call, or "not the leader" from the
            // peer service (it answers a follower's forward that way).
            Code::Unavailable
            | Code::Unknown
            | Code::Cancelled
            | Code::DeadlineExceeded
            | Code::FailedPrecondition => None,
            _ => Some(Error::from_status(s)),
        }
    }

    fn current_leader(&self) -> Option<Leader> {
        if self.status.is_leader() {
            return Some(Leader::Me);
        }
        let id = self.status.leader();
        if id == 0 || id == self.member_id {
            return None;
        }
        self.transport.client(id).map(|c| Leader::Peer(id, c))
    }
}
