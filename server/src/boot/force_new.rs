//! `--force-new-cluster`: disaster recovery from one surviving member. As
//! etcd does, the member keeps its data, drops the raft entries that were
//! never committed (no quorum will ever vouch for them), and appends one
//! committed configuration change per other member that removes it. Raft
//! applies those like any membership change — the member table and raft's
//! voter set shrink together at the same index — after which the member is
//! the only voter, elects itself, and serves with its data. Peers later
//! added with `member add` join the new one-member cluster.

use super::BootError;
use crate::pb::cairnpb::{MemberChange, MemberRecord, member_change::Kind};
use crate::state::membership::Membership;
use crate::storage::{self, raftlog::RaftLog};
use prost::Message as _;
use protobuf::Message as _;
use raft::prelude::{ConfChangeSingle, ConfChangeType, ConfChangeV2, ConfState, Entry, EntryType};

/// Rewrites the log of a restarting member so that it comes up as the
/// only member of its cluster (see the module comment).
pub fn force_new_cluster(
    log: &mut RaftLog,
    membership: &Membership,
    conf_state: &ConfState,
    self_id: u64,
) -> Result<(), BootError> {
    let mut hs = log.hard_state().clone();
    let commit = hs.commit;
    tracing::warn!(
        "forcing restart of member {self_id:x} in cluster {:x} at commit index {commit}",
        membership.cluster_id()
    );
    let mut others: Vec<u64> = membership
        .ids()
        .into_iter()
        .chain(conf_state.voters.iter().copied())
        .chain(conf_state.learners.iter().copied())
        .chain(conf_state.voters_outgoing.iter().copied())
        .chain(conf_state.learners_next.iter().copied())
        .filter(|id| *id != self_id)
        .collect();
    others.sort_unstable();
    others.dedup();
    if others.is_empty() {
        tracing::info!("already the only member; nothing to remove");
        return Ok(());
    }
    let mut entries = Vec::with_capacity(others.len());
    for (i, id) in others.iter().enumerate() {
        let record = membership.member(*id).unwrap_or_else(|| MemberRecord {
            id: *id,
            ..Default::default()
        });
        // No request ID: nobody waits for these entries.
        let context = MemberChange {
            request_id: 0,
            kind: Kind::Remove as i32,
            member: Some(record),
        }
        .encode_to_vec();
        let mut single = ConfChangeSingle::default();
        single.set_change_type(ConfChangeType::RemoveNode);
        single.node_id = *id;
        let mut cc = ConfChangeV2::default();
        cc.set_changes(vec![single].into());
        let mut e = Entry::default();
        e.set_entry_type(EntryType::EntryConfChangeV2);
        e.index = commit + 1 + i as u64;
        e.term = hs.term;
        e.data = cc
            .write_to_bytes()
            .map_err(|e| storage::Error::Raft(format!("encoding a conf change: {e}")))?
            .into();
        e.context = context.into();
        entries.push(e);
        tracing::info!("removing member {id:x} from the forced new cluster");
    }
    let dropped = log.last_index_value().saturating_sub(commit);
    if dropped > 0 {
        tracing::warn!("discarding {dropped} uncommitted raft entries");
    }
    // Appending at commit + 1 drops every uncommitted entry after it.
    hs.commit = commit + entries.len() as u64;
    log.persist(&entries, Some(&hs), true)?;
    Ok(())
}
