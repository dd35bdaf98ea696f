//! etcd's corruption checks: members that applied the same entries must
//! hold the same keys and values, so their KV hashes (HashKV) at one
//! revision must agree. A member whose disk silently lost or changed data
//! would otherwise serve wrong answers forever.
//!
//! - `--experimental-initial-corrupt-check`: before a restarting member
//!   serves anything, it asks every peer for the hash at its own revision
//!   and refuses to start if one differs at the same compaction point
//!   ([`check_initial`]).
//! - `--experimental-corrupt-check-time`: the leader periodically compares
//!   its hash with every peer's and raises the CORRUPT alarm (which stops
//!   all writes, see `apply`) when one differs ([`monitor`]).
//!
//! Peers answer over the peer service (`Peer.HashKV`), as etcd's members
//! answer on their peer URL's `/members/hashkv`. An unreachable peer, or
//! one that cannot hash that revision (compacted past it, or behind), is
//! reported and skipped, as etcd does: the check can only find a
//! difference, never prove there is none.

use super::EtcdServer;
use crate::error::Error;
use crate::pb::cairnpb::AlarmEntry;
use crate::pb::etcdserverpb::{
    AlarmRequest, AlarmType, HashKvRequest, HashKvResponse, alarm_request::AlarmAction,
};
use crate::storage::mvcc::KvHash;
use std::sync::Arc;

/// One peer's answer.
struct PeerHash {
    id: u64,
    result: Result<HashKvResponse, Error>,
}

/// The hash of this member's KV store at `rev` (0: the current revision).
async fn local_hash(srv: &EtcdServer, rev: i64) -> Result<KvHash, Error> {
    let store = Arc::clone(&srv.store);
    tokio::task::spawn_blocking(move || store.hash_kv(rev))
        .await
        .map_err(|e| Error::Internal(format!("hash task failed: {e}")))?
        .map_err(Error::from)
}

/// Asks every other member (learners too, as etcd) for its hash at `rev`,
/// all at once, each bounded by the request timeout.
async fn peer_hashes(srv: &EtcdServer, rev: i64) -> Vec<PeerHash> {
    let timeout = srv.request_timeout();
    let asks = srv
        .membership
        .ids()
        .into_iter()
        .filter(|id| *id != srv.member_id)
        .map(|id| async move {
            let result = match srv.transport.client(id) {
                None => Err(Error::Internal("no peer URL".into())),
                Some(mut c) => {
                    let req = srv.transport.request(id, HashKvRequest { revision: rev });
                    match tokio::time::timeout(timeout, c.hash_kv(req)).await {
                        Ok(Ok(resp)) => Ok(resp.into_inner()),
                        Ok(Err(status)) => Err(Error::from_status(&status)),
                        Err(_) => Err(Error::Timeout),
                    }
                }
            };
            PeerHash { id, result }
        });
    futures::future::join_all(asks).await
}

/// `--experimental-initial-corrupt-check`: compares this member's hash at
/// its current revision with every peer's. `Err` (the member must not
/// start) when a peer at the same compaction revision has another hash.
pub async fn check_initial(srv: &EtcdServer) -> Result<(), String> {
    let id = format!("{:x}", srv.member_id);
    tracing::info!(
        local_member_id = %id,
        timeout_ms = srv.request_timeout().as_millis() as u64,
        "starting initial corruption check"
    );
    let mine = local_hash(srv, 0)
        .await
        .map_err(|e| format!("{id} failed to fetch hash ({e})"))?;
    let mut mismatches = 0;
    for p in peer_hashes(srv, mine.revision).await {
        let peer = format!("{:x}", p.id);
        match p.result {
            Ok(resp) if resp.hash == mine.hash => {}
            Ok(resp) if resp.compact_revision == mine.compacted => {
                tracing::warn!(
                    local_member_id = %id,
                    local_member_revision = mine.revision,
                    local_member_compact_revision = mine.compacted,
                    local_member_hash = mine.hash,
                    remote_peer_id = %peer,
                    remote_peer_hash = resp.hash,
                    "found different hash values from remote peer"
                );
                mismatches += 1;
            }
            Ok(resp) => tracing::warn!(
                local_member_id = %id,
                local_member_compact_revision = mine.compacted,
                remote_peer_id = %peer,
                remote_peer_compact_revision = resp.compact_revision,
                "found different compact revision values from remote peer"
            ),
            Err(Error::FutureRev) => tracing::warn!(
                local_member_id = %id,
                local_member_revision = mine.revision,
                remote_peer_id = %peer,
                "cannot fetch hash from slow remote peer"
            ),
            Err(Error::Compacted) => tracing::warn!(
                local_member_id = %id,
                local_member_revision = mine.revision,
                remote_peer_id = %peer,
                "cannot fetch hash from remote peer; local member is behind"
            ),
            Err(e) => tracing::warn!(
                local_member_id = %id,
                remote_peer_id = %peer,
                error = %e,
                "failed hash kv request"
            ),
        }
    }
    if mismatches > 0 {
        return Err(format!("{id} found data inconsistency with peers"));
    }
    tracing::info!(
        local_member_id = %id,
        "initial corruption checking passed; no corruption"
    );
    Ok(())
}

/// `--experimental-corrupt-check-time`: every `interval`, the leader
/// compares the members' hashes (followers skip the round). Runs until the
/// process ends.
pub async fn monitor(srv: Arc<EtcdServer>, interval: std::time::Duration) {
    if interval.is_zero() {
        return;
    }
    tracing::info!(
        local_member_id = %format!("{:x}", srv.member_id),
        interval_ms = interval.as_millis() as u64,
        "enabled corruption checking"
    );
    loop {
        tokio::time::sleep(interval).await;
        if !srv.status.is_leader() {
            continue;
        }
        if let Err(e) = check_peers(&srv).await {
            tracing::warn!(error = %e, "failed to check hash KV");
        }
    }
}

/// One leader round, etcd's rules: hash here, ask the peers at that
/// revision, confirm this member is still current (ReadIndex), and hash
/// again. A peer is corrupt if it is ahead of the leader (revision or
/// compaction) or has another hash at the same compaction revision; the
/// leader itself is if its own hash moved without the revision moving.
async fn check_peers(srv: &EtcdServer) -> Result<(), Error> {
    let before = local_hash(srv, 0).await?;
    let peers = peer_hashes(srv, before.revision).await;
    srv.linearizable_read_notify().await?;
    let after = local_hash(srv, 0).await?;

    let mut suspect = None;
    if after.hash != before.hash
        && after.revision == before.revision
        && after.compacted == before.compacted
    {
        tracing::warn!(
            revision = after.revision,
            compact_revision = after.compacted,
            hash_before = before.hash,
            hash_after = after.hash,
            "found hash mismatch"
        );
        suspect = Some(srv.member_id);
    }
    let mut checked = 0;
    for p in &peers {
        let Ok(resp) = &p.result else { continue };
        checked += 1;
        let peer = format!("{:x}", p.id);
        let peer_rev = resp.header.as_ref().map_or(0, |h| h.revision);
        let why = if peer_rev > after.revision {
            Some("revision from follower must be less than or equal to leader's")
        } else if resp.compact_revision > after.compacted {
            Some("compact revision from follower must be less than or equal to leader's")
        } else if resp.compact_revision == before.compacted && resp.hash != before.hash {
            Some("same compact revision then hashes must match")
        } else {
            None
        };
        if let Some(why) = why {
            tracing::warn!(
                leader_revision = after.revision,
                leader_compact_revision = after.compacted,
                leader_hash = before.hash,
                follower_id = %peer,
                follower_revision = peer_rev,
                follower_compact_revision = resp.compact_revision,
                follower_hash = resp.hash,
                "{why}"
            );
            suspect.get_or_insert(p.id);
        }
    }
    tracing::info!(
        number_of_peers_checked = checked,
        "finished peer corruption check"
    );
    if let Some(member_id) = suspect {
        raise_corrupt(srv, member_id).await?;
    }
    Ok(())
}

/// Raises the CORRUPT alarm for `member_id` through raft: every member
/// refuses writes from the index it applies at (etcd's corrupt applier).
async fn raise_corrupt(srv: &EtcdServer, member_id: u64) -> Result<(), Error> {
    if srv.db.alarms.has(member_id, AlarmType::Corrupt) {
        return Ok(());
    }
    let entry = AlarmEntry {
        request: Some(AlarmRequest {
            action: AlarmAction::Activate as i32,
            member_id,
            alarm: AlarmType::Corrupt as i32,
        }),
        reply_token: 0,
    };
    srv.propose_internal(entry).await.map(|_| ())
}
