//! The apply loop: applies committed raft entries to the state machine, in
//! order, exactly once.
//!
//! Invariant: the applied index is written in the same fjall batch as the
//! changes of the entries it covers. After a crash, raft replays exactly the
//! entries past it (the raft log keeps them: see `CtlMsg::CompactLog`).
//! Clients are answered only after their entry's batch is committed and its
//! revision published, so a client that saw its write acknowledged can read
//! it back from this member.

use super::node::{ApplyMsg, CtlMsg};
use super::wait::Waiters;
use super::watch::WatchHub;
use super::{Applied, RaftStatus};
use crate::auth::{Access, AuthError, AuthInfo};
use crate::error::Error;
use crate::metrics::METRICS;
use crate::pb::cairnpb::{
    InternalRequest, MemberAttributes, MemberChange, internal_request::Request, member_change::Kind,
};
use crate::pb::etcdserverpb::alarm_request::AlarmAction;
use crate::pb::etcdserverpb::{
    AlarmType, CompactionResponse, LeaseGrantResponse, LeaseRevokeResponse, ResponseHeader,
    TxnRequest, request_op,
};
use crate::state::lease::Lessor;
use crate::state::membership::Membership;
use crate::state::txn::{self, WriteBackend};
use crate::storage::alarm::{self, AlarmTable};
use crate::storage::meta::{self, AppliedState};
use crate::storage::mvcc::index::KeyRange;
use crate::storage::mvcc::{ApplyBatch, Store};
use crate::storage::snapfile::{self, SnapshotRegistry};
use crate::storage::{self, Db};
use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};
use prost::Message as _;
use protobuf::Message as _;
use raft::prelude::{ConfChange, ConfChangeV2, ConfState, Entry, EntryType};
use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};
use tokio::sync::watch;

/// Entries applied per fjall batch at most; bounds how long one batch holds
/// up its clients' answers.
const MAX_APPLY_BATCH_ENTRIES: usize = 2048;
/// How often an idle apply loop checks for snapshot requests.
const IDLE_POLL: Duration = Duration::from_millis(50);

/// How long a removed member lingers before it exits (see `apply_entries`).
const REMOVED_EXIT_GRACE: Duration = Duration::from_millis(500);

pub struct ApplyConfig {
    /// The live configuration (snapshot count, slow-apply warning).
    pub config: Arc<arc_swap::ArcSwap<cairn_config::ServerConfig>>,
    pub snapshot_catchup_entries: u64,
}

pub struct ApplyLoop {
    pub db: Db,
    pub store: Arc<Store>,
    pub membership: Arc<Membership>,
    pub lessor: Arc<Lessor>,
    pub hub: Arc<WatchHub>,
    pub rx: Receiver<ApplyMsg>,
    pub ctl: Sender<CtlMsg>,
    pub waiters: Arc<Waiters<Applied>>,
    pub status: Arc<RaftStatus>,
    pub applied_tx: watch::Sender<u64>,
    pub snapshots: Arc<SnapshotRegistry>,
    pub cfg: ApplyConfig,
    pub applied: AppliedState,
    pub conf_state: ConfState,
    pub last_log_compaction: u64,
    pub member_id: u64,
    /// Set once a committed change removed this member: it stops serving.
    pub removed: bool,
    /// etcd's v2 keyspace; nodes are persisted in `meta` (see `meta::v2_records`).
    pub v2: Arc<parking_lot::RwLock<crate::v2::V2Store>>,
    /// etcd's v3 auth store (persisted in `meta`, see `meta::auth`).
    pub auth: Arc<super::auth::AuthState>,
    /// Policy plugins: the replicated plugin set (changed only here).
    pub plugins: Arc<crate::policy::Enforcer>,
}

fn storage_err(e: impl std::fmt::Display) -> storage::Error {
    storage::Error::Raft(e.to_string())
}

impl ApplyLoop {
    pub fn run(mut self) {
        let mut queue: VecDeque<ApplyMsg> = VecDeque::new();
        loop {
            if queue.is_empty() {
                match self.rx.recv_timeout(IDLE_POLL) {
                    Ok(m) => queue.push_back(m),
                    Err(RecvTimeoutError::Timeout) => {
                        self.maybe_generate_snapshot();
                        continue;
                    }
                    Err(RecvTimeoutError::Disconnected) => break,
                }
            }
            while queue.len() < 64 {
                match self.rx.try_recv() {
                    Ok(m) => queue.push_back(m),
                    Err(_) => break,
                }
            }
            if let Err(e) = self.apply_next(&mut queue) {
                tracing::error!(error = %e, "applying committed entries failed; stopping this member");
                std::process::exit(1);
            }
            if self.removed {
                break;
            }
            self.maybe_generate_snapshot();
        }
        tracing::info!("apply loop stopped");
    }

    /// Applies the message at the head of `queue`: a snapshot from the
    /// leader, or entries, with the entry batches queued right behind them
    /// coalesced into one fjall batch. An error means the member must stop.
    pub fn apply_next(&mut self, queue: &mut VecDeque<ApplyMsg>) -> storage::Result<()> {
        match queue.pop_front() {
            Some(ApplyMsg::Entries(mut entries)) => {
                while entries.len() < MAX_APPLY_BATCH_ENTRIES {
                    match queue.front() {
                        Some(ApplyMsg::Entries(_)) => {
                            if let Some(ApplyMsg::Entries(more)) = queue.pop_front() {
                                entries.extend(more);
                            }
                        }
                        _ => break,
                    }
                }
                self.apply_entries(entries)
            }
            Some(ApplyMsg::Snapshot {
                metadata,
                path,
                done,
            }) => {
                let r = self.install_snapshot(metadata.index, &path);
                let _ = done.send(r.as_ref().map(|_| ()).map_err(|e| e.to_string()));
                r
            }
            None => Ok(()),
        }
    }

    /// Between batches: starts writing a snapshot file if raft asked for
    /// one (the file is written on its own thread).
    pub fn between_batches(&mut self) {
        self.maybe_generate_snapshot();
    }

    fn election_timeout(&self) -> Duration {
        Duration::from_millis(self.cfg.config.load().election_timeout_ms)
    }

    /// Applies a run of committed entries in one fjall batch (with the
    /// applied index), then answers their clients and publishes the new
    /// position.
    fn apply_entries(&mut self, entries: Vec<Entry>) -> storage::Result<()> {
        let started = Instant::now();
        let mut batch = self.store.begin_batch();
        let mut results: Vec<(u64, Result<Applied, Error>)> = Vec::new();
        let mut membership = None;
        let mut last = self.applied;
        for e in &entries {
            // Raft may hand over entries this member applied before a crash.
            if e.index <= last.index {
                continue;
            }
            self.apply_entry(&mut batch, e, &mut results, &mut membership)?;
            last = AppliedState {
                index: e.index,
                term: e.term,
            };
        }
        if last == self.applied {
            return Ok(());
        }
        debug_assert!(
            last.index > self.applied.index && last.term >= self.applied.term,
            "applied position went backwards: {:?} after {:?}",
            last,
            self.applied
        );
        meta::put_applied(batch.raw(), &self.db, last);
        let commit_started = Instant::now();
        batch.commit().map_err(|e| match e {
            storage::mvcc::MvccError::Storage(s) => s,
            other => storage_err(other),
        })?;
        METRICS
            .backend_commit
            .observe(commit_started.elapsed().as_secs_f64());
        METRICS.apply_batch_entries.observe(entries.len() as f64);
        METRICS.proposals_applied.set(last.index as i64);
        self.applied = last;
        if let Some(m) = membership {
            self.membership.set(m);
        }
        for (id, r) in results {
            self.waiters.complete(id, r);
        }
        self.hub.notify();
        if self.removed {
            tracing::warn!("the member has been permanently removed from the cluster; stopping");
            // etcd exits here too: a removed member must not keep serving
            // stale data or disturb the others. The grace period lets the
            // answer to the removal itself (this member may be the leader
            // that ran it) reach the client; nothing is applied meanwhile.
            std::thread::spawn(|| {
                std::thread::sleep(REMOVED_EXIT_GRACE);
                std::process::exit(0);
            });
            return Ok(());
        }
        self.publish_applied(last.index);
        let took = started.elapsed();
        let warn_after = self.cfg.config.load().experimental_warning_apply_duration;
        if took > warn_after {
            METRICS.slow_apply.inc();
            tracing::warn!(
                took_ms = took.as_millis() as u64,
                entries = entries.len(),
                expected_ms = warn_after.as_millis() as u64,
                "apply request took too long"
            );
        }
        self.maybe_compact_log();
        Ok(())
    }

    /// One committed entry into `batch`: a request, a new leader's empty
    /// entry, or a configuration change.
    fn apply_entry(
        &mut self,
        batch: &mut ApplyBatch,
        e: &Entry,
        results: &mut Vec<(u64, Result<Applied, Error>)>,
        membership: &mut Option<crate::pb::cairnpb::Membership>,
    ) -> storage::Result<()> {
        match e.get_entry_type() {
            EntryType::EntryNormal if !e.data.is_empty() => {
                self.apply_normal(batch, &e.data, (e.index, e.term), results, membership)
            }
            EntryType::EntryNormal => {
                if self.status.is_leader() {
                    // A new leader's first entry: everything before it is
                    // applied, so this member knows every lease; start
                    // their clocks (etcd's "promote").
                    let checkpoints = self.cfg.config.load().experimental_enable_lease_checkpoint;
                    self.lessor
                        .promote(self.election_timeout(), checkpoints, e.term);
                }
                Ok(())
            }
            EntryType::EntryConfChange => {
                let mut cc = ConfChange::default();
                cc.merge_from_bytes(&e.data).map_err(storage_err)?;
                let cc = raft_proto::ConfChangeI::into_v2(cc);
                self.apply_conf_change(batch, cc, &e.context, results, membership)
            }
            EntryType::EntryConfChangeV2 => {
                // Auto-leave entries of joint consensus carry no data:
                // they still must be applied (empty ConfChangeV2).
                let mut cc = ConfChangeV2::default();
                cc.merge_from_bytes(&e.data).map_err(storage_err)?;
                self.apply_conf_change(batch, cc, &e.context, results, membership)
            }
        }
    }

    /// Tells readers (status, ReadIndex waits) and the raft loop how far the
    /// state machine is, once the batch up to `index` is committed.
    fn publish_applied(&self, index: u64) {
        // The applied index only moves forward (a snapshot install, the
        // other writer, never runs concurrently with this loop).
        debug_assert!(
            index >= self.status.applied.load(Ordering::Acquire),
            "applied index went back to {index}"
        );
        self.status.applied.store(index, Ordering::Release);
        self.applied_tx.send_replace(index);
        let _ = self.ctl.send(CtlMsg::Applied(index));
    }

    fn apply_normal(
        &mut self,
        batch: &mut ApplyBatch,
        data: &[u8],
        (index, term): (u64, u64),
        results: &mut Vec<(u64, Result<Applied, Error>)>,
        membership: &mut Option<crate::pb::cairnpb::Membership>,
    ) -> storage::Result<()> {
        let req = match InternalRequest::decode(data) {
            Ok(r) => r,
            Err(e) => {
                // Every member fails the same way on the same bytes, so
                // skipping keeps them identical; it is still a bug to report.
                tracing::error!(error = %e, "skipping undecodable raft entry");
                return Ok(());
            }
        };
        let id = req.id;
        let wanted = id != 0 && self.waiters.is_registered(id);
        if let Some(e) = self.refusal(&req, term, batch) {
            if wanted {
                results.push((id, Err(e)));
            }
            return Ok(());
        }
        let caller = req.auth.as_ref().and_then(super::auth::entry_caller);
        let lessor = &*self.lessor;
        let result = match req.request {
            None => return Ok(()),
            Some(Request::Put(p)) => {
                with_write(batch, lessor, |b| txn::put(b, &p)).map(Applied::Put)
            }
            Some(Request::DeleteRange(d)) => {
                with_write(batch, lessor, |b| txn::delete_range(b, &d)).map(Applied::DeleteRange)
            }
            Some(Request::Txn(t)) => {
                let compact_rev = batch.compact_rev();
                with_write(batch, lessor, |b| txn::txn(b, &t, compact_rev)).map(Applied::Txn)
            }
            Some(Request::LeaseGrant(g)) => self.apply_lease_grant(batch, &g),
            Some(Request::LeaseCheckpoint(c)) => Ok(self.apply_lease_checkpoints(batch, &c)),
            Some(Request::LeaseRevoke(r)) => self.apply_lease_revoke(batch, r.id),
            Some(Request::Compaction(c)) => match batch.compact(c.revision) {
                Ok(()) => {
                    tracing::info!(revision = c.revision, "scheduled compaction");
                    Ok(Applied::Compaction(CompactionResponse {
                        header: Some(ResponseHeader {
                            revision: batch.rev(),
                            ..Default::default()
                        }),
                    }))
                }
                Err(storage::mvcc::MvccError::Storage(s)) => return Err(s),
                Err(e) => Err(e.into()),
            },
            Some(Request::V2(bytes)) => Ok(self.apply_v2(batch, &bytes, index, term)),
            Some(Request::PluginSet(change)) => self.apply_plugin_set(batch, change, index),
            Some(Request::Authenticate(a)) => self.apply_authenticate(&a, index, wanted),
            Some(
                r @ (Request::AuthEnable(_)
                | Request::AuthDisable(_)
                | Request::UserAdd(_)
                | Request::UserDelete(_)
                | Request::UserChangePassword(_)
                | Request::UserGrantRole(_)
                | Request::UserRevokeRole(_)
                | Request::RoleAdd(_)
                | Request::RoleDelete(_)
                | Request::RoleGrantPermission(_)
                | Request::RoleRevokePermission(_)),
            ) => self.apply_auth(batch, r, caller.as_ref()),
            Some(Request::MemberUpdate(record)) => {
                self.apply_member_update(batch, membership, &record)
            }
            Some(Request::Publish(attrs)) => {
                // The first publish of a cluster's life stands in for etcd's
                // first cluster-version record too (`/0/version`).
                let first = membership
                    .as_ref()
                    .map_or_else(|| self.membership.snapshot(), Clone::clone)
                    .members
                    .iter()
                    .all(|r| r.client_urls.is_empty());
                let m = self.publish(batch, membership, &attrs);
                if m.is_ok() {
                    self.bump_v2_membership(batch, if first { 2 } else { 1 });
                }
                m.map(|_| Applied::Published)
            }
            Some(Request::Alarm(entry)) => Ok(self.apply_alarm(batch, entry)),
        };
        if let Err(Error::Internal(msg)) = &result {
            // Storage failed mid-request: the member cannot continue safely.
            return Err(storage_err(msg));
        }
        if wanted {
            results.push((id, result));
        }
        Ok(())
    }

    /// The gates every entry passes before it takes effect, each decided by
    /// replicated state only (the entry's term, alarms, the auth store and
    /// the plugin set at this point of the log), so every member refuses
    /// alike.
    fn refusal(&self, req: &InternalRequest, term: u64, batch: &mut ApplyBatch) -> Option<Error> {
        if req.leader_term != 0 && req.leader_term != term {
            // Decided by a leader of an earlier term and forwarded by raft to
            // a later one: its view of leases is stale (see `LeaderWork`).
            return Some(Error::LeaderChanged);
        }
        let request = req.request.as_ref()?;
        if let Some(e) = refused_by_alarms(&self.db.alarms, request) {
            return Some(e);
        }
        // Client requests carry their caller.
        if let Some(a) = req.auth.as_ref()
            && let Err(e) = self.check_entry_auth(&super::auth::entry_caller(a), request)
        {
            return Some(e.into());
        }
        // Writes judged by policy plugins carry the set version they were
        // judged under; a stale one is refused, and its proposer judges it
        // again.
        self.plugins.refuse_stale(req, batch, &self.lessor)
    }

    fn apply_lease_grant(
        &self,
        batch: &mut ApplyBatch,
        g: &crate::pb::etcdserverpb::LeaseGrantRequest,
    ) -> Result<Applied, Error> {
        if !self.lessor.grant(g.id, g.ttl) {
            return Err(Error::LeaseExists);
        }
        meta::put_lease(batch.raw(), &self.db, g.id, g.ttl);
        Ok(Applied::LeaseGrant(LeaseGrantResponse {
            header: Some(ResponseHeader {
                revision: batch.rev(),
                ..Default::default()
            }),
            id: g.id,
            ttl: g.ttl,
            error: String::new(),
        }))
    }

    fn apply_lease_checkpoints(
        &self,
        batch: &mut ApplyBatch,
        c: &crate::pb::etcdserverpb::LeaseCheckpointRequest,
    ) -> Applied {
        for cp in c
            .checkpoints
            .iter()
            .take(crate::state::lease::MAX_CHECKPOINTS_PER_ENTRY)
        {
            // A lease revoked since the leader looked is skipped.
            if let Some(ttl) = self.lessor.checkpoint(cp.id, cp.remaining_ttl) {
                meta::put_lease_record(
                    batch.raw(),
                    &self.db,
                    &crate::pb::cairnpb::LeaseRecord {
                        id: cp.id,
                        ttl,
                        remaining_ttl: cp.remaining_ttl.clamp(0, ttl),
                    },
                );
            }
        }
        Applied::LeaseCheckpointed
    }

    fn apply_lease_revoke(&self, batch: &mut ApplyBatch, id: i64) -> Result<Applied, Error> {
        let lessor = &*self.lessor;
        let Some(keys) = lessor.revoke(id) else {
            return Err(Error::LeaseNotFound);
        };
        meta::delete_lease(batch.raw(), &self.db, id);
        // All of the lease's keys go in one revision.
        with_write(batch, lessor, |b| {
            for k in keys {
                txn::Backend::delete(b, &KeyRange::Single(k)).map_err(Error::from)?;
            }
            Ok(())
        })?;
        Ok(Applied::LeaseRevoke(LeaseRevokeResponse {
            header: Some(ResponseHeader {
                revision: batch.rev(),
                ..Default::default()
            }),
        }))
    }

    fn apply_plugin_set(
        &self,
        batch: &mut ApplyBatch,
        change: crate::pb::cairnpb::PluginSetChange,
        index: u64,
    ) -> Result<Applied, Error> {
        let next_revision = batch.rev() + 1;
        // With auth on, only root may change the set (checked here, at this
        // point of the log, like every auth decision).
        let by_root = {
            let store = self.auth.store.read();
            store.is_enabled().then(|| {
                let admin = change.admin.as_ref().and_then(super::auth::entry_caller);
                store
                    .authorize_request(admin.as_ref(), crate::auth::Access::Admin, b"", b"")
                    .is_ok()
            })
        };
        self.plugins
            .apply_change(batch.raw(), &self.db, change, index, next_revision, by_root)
            .map(Applied::Plugins)
    }

    /// New peer URLs for a member, into the membership this batch builds.
    fn apply_member_update(
        &mut self,
        batch: &mut ApplyBatch,
        membership: &mut Option<crate::pb::cairnpb::Membership>,
        record: &crate::pb::cairnpb::MemberRecord,
    ) -> Result<Applied, Error> {
        let mut m = membership
            .take()
            .unwrap_or_else(|| self.membership.snapshot());
        let r = match m.members.iter_mut().find(|x| x.id == record.id) {
            Some(x) => {
                tracing::info!(
                    "updated member {:x} peer URLs to {:?}",
                    x.id,
                    record.peer_urls
                );
                x.peer_urls = record.peer_urls.clone();
                Ok(Applied::Member)
            }
            None => Err(Error::MemberNotFound),
        };
        meta::put_membership(batch.raw(), &self.db, &m);
        *membership = Some(m);
        if r.is_ok() {
            self.bump_v2_membership(batch, 1);
        }
        r
    }

    fn apply_alarm(
        &self,
        batch: &mut ApplyBatch,
        entry: crate::pb::cairnpb::AlarmEntry,
    ) -> Applied {
        let req = entry.request.unwrap_or_default();
        let change = self.db.alarms.apply(&req);
        if change.changed {
            meta::put_alarms(batch.raw(), &self.db, self.db.alarms.snapshot());
            let what = if req.action == AlarmAction::Activate as i32 {
                "raised"
            } else {
                "cleared"
            };
            tracing::warn!(
                "alarm {} {what} for member {:x}",
                alarm::type_name(req.alarm),
                req.member_id
            );
        }
        Applied::Alarms(change.alarms)
    }

    fn publish(
        &mut self,
        batch: &mut ApplyBatch,
        pending: &mut Option<crate::pb::cairnpb::Membership>,
        attrs: &MemberAttributes,
    ) -> Result<(), Error> {
        let mut m = pending.take().unwrap_or_else(|| self.membership.snapshot());
        let found = m.members.iter_mut().find(|r| r.id == attrs.member_id);
        let res = match found {
            Some(rec) => {
                rec.name = attrs.name.clone();
                rec.client_urls = attrs.client_urls.clone();
                Ok(())
            }
            // A member removed before its publish was applied.
            None => Err(Error::MemberNotFound),
        };
        meta::put_membership(batch.raw(), &self.db, &m);
        *pending = Some(m);
        res
    }

    /// Applies a raft configuration change and the member-table change its
    /// context describes, in the same batch (so the two never disagree).
    fn apply_conf_change(
        &mut self,
        batch: &mut ApplyBatch,
        cc: ConfChangeV2,
        context: &[u8],
        results: &mut Vec<(u64, Result<Applied, Error>)>,
        pending: &mut Option<crate::pb::cairnpb::Membership>,
    ) -> storage::Result<()> {
        let change = if context.is_empty() {
            None
        } else {
            match MemberChange::decode(context) {
                Ok(c) => Some(c),
                Err(e) => {
                    tracing::error!(error = %e, "undecodable membership change context");
                    None
                }
            }
        };
        let (tx, rx) = crossbeam_channel::bounded(1);
        self.ctl
            .send(CtlMsg::ApplyConfChange(cc, tx))
            .map_err(|_| storage_err("raft loop is gone"))?;
        let outcome = match rx.recv() {
            Ok(Ok(cs)) => {
                meta::put_conf_state(batch.raw(), &self.db, &cs)?;
                self.conf_state = cs;
                Ok(())
            }
            // raft refused it (e.g. an invalid change); every member refuses
            // the same entry the same way.
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "raft rejected a configuration change");
                Err(Error::Internal(format!("raft rejected the change: {e}")))
            }
            Err(_) => return Err(storage_err("raft loop is gone")),
        };
        let Some(change) = change else {
            return Ok(());
        };
        let id = change.request_id;
        let wanted = id != 0 && self.waiters.is_registered(id);
        let result = outcome.map(|()| {
            let record = change.member.unwrap_or_default();
            let mut m = pending.take().unwrap_or_else(|| self.membership.snapshot());
            match Kind::try_from(change.kind).unwrap_or(Kind::Add) {
                Kind::Add => {
                    tracing::info!(
                        "added member {:x} {:?} to cluster {:x}{}",
                        record.id,
                        record.peer_urls,
                        m.cluster_id,
                        if record.is_learner {
                            " as a learner"
                        } else {
                            ""
                        }
                    );
                    m.members.retain(|x| x.id != record.id);
                    m.members.push(record);
                }
                Kind::Remove => {
                    tracing::info!(
                        "removed member {:x} from cluster {:x}",
                        record.id,
                        m.cluster_id
                    );
                    m.members.retain(|x| x.id != record.id);
                    if record.id == self.member_id {
                        self.removed = true;
                    }
                }
                Kind::Promote => {
                    tracing::info!("promoted learner {:x} to a voting member", record.id);
                    if let Some(x) = m.members.iter_mut().find(|x| x.id == record.id) {
                        x.is_learner = false;
                    }
                }
            }
            meta::put_membership(batch.raw(), &self.db, &m);
            *pending = Some(m);
            Applied::Member
        });
        if result.is_ok() {
            // etcd's v2 records: a new member's raftAttributes (add), the
            // member's tree deleted and a removed_members record (remove),
            // raftAttributes rewritten (promote).
            let records = match Kind::try_from(change.kind).unwrap_or(Kind::Add) {
                Kind::Remove => 2,
                Kind::Add | Kind::Promote => 1,
            };
            self.bump_v2_membership(batch, records);
        }
        if wanted {
            results.push((id, result));
        }
        Ok(())
    }

    /// Lets the raft log drop entries the state machine no longer needs,
    /// every `--snapshot-count` applied entries, keeping some for followers
    /// that are only a little behind.
    fn maybe_compact_log(&mut self) {
        let applied = self.applied.index;
        let snapshot_count = self.cfg.config.load().snapshot_count.max(1);
        if applied.saturating_sub(self.last_log_compaction) < snapshot_count {
            return;
        }
        self.last_log_compaction = applied;
        let catchup = self.cfg.snapshot_catchup_entries.min(snapshot_count);
        let to = applied.saturating_sub(catchup);
        tracing::info!(
            applied_index = applied,
            compact_to = to,
            snapshot_count,
            "triggering raft log compaction"
        );
        if to > 0 {
            // Ordering: this request is sent after the apply batch covering
            // `applied` was committed to the shared journal, so the log's
            // deletions can never become durable before the data they free.
            let _ = self.ctl.send(CtlMsg::CompactLog(to));
        }
    }

    fn maybe_generate_snapshot(&mut self) {
        if !self.snapshots.take_request() {
            return;
        }
        // The view is consistent with `self.applied`: only this loop writes
        // the state machine, and it is between batches now.
        let view = self.db.db.snapshot();
        let (index, term) = (self.applied.index, self.applied.term);
        let cs = self.conf_state.clone();
        let db = self.db.clone();
        let reg = Arc::clone(&self.snapshots);
        let spawned = crate::crash::spawn_thread("snapshot-writer", move || {
            let started = Instant::now();
            match snapfile::write(&db, &view, reg.dir(), index, term, &cs) {
                Ok(info) => {
                    tracing::info!(
                        index,
                        term,
                        size_bytes = info.size_bytes,
                        took_ms = started.elapsed().as_millis() as u64,
                        "saved snapshot"
                    );
                    reg.finish_generation(Some(info));
                }
                Err(e) => {
                    tracing::error!(error = %e, "failed to save snapshot");
                    reg.finish_generation(None);
                }
            }
        });
        if spawned.is_err() {
            self.snapshots.finish_generation(None);
        }
    }

    /// etcd keeps the member table in its v2 store too, so every change to
    /// it takes v2 indexes there; counting them the same way keeps v2
    /// indexes (`X-Etcd-Index`, `waitIndex`) in line with etcd's.
    fn bump_v2_membership(&self, batch: &mut ApplyBatch, records: u64) {
        let mut store = self.v2.write();
        store.bump_internal(records);
        let i = meta::V2Index {
            index: store.index(),
            visible: store.visible_index(),
        };
        meta::put_v2_index(batch.raw(), &self.db, i);
    }

    /// A v2 write, quorum read or TTL sweep. The store's refusals (key not
    /// found, compare failed) are answers, not failures.
    fn apply_v2(&mut self, batch: &mut ApplyBatch, bytes: &[u8], index: u64, term: u64) -> Applied {
        let outcome = match serde_json::from_slice::<crate::v2::V2Request>(bytes) {
            // Every member fails alike on the same bytes.
            Err(e) => Err(crate::v2::V2Error::raft_internal(format!(
                "undecodable v2 request: {e}"
            ))),
            Ok(req) => {
                let mut store = self.v2.write();
                let before = store.index();
                match store.apply(&req) {
                    Err(e) => Err(e),
                    Ok(out) => {
                        for (path, record) in &out.changes {
                            meta::put_v2_node(batch.raw(), &self.db, path, record.as_deref());
                        }
                        if out.index != before {
                            let i = meta::V2Index {
                                index: out.index,
                                visible: store.visible_index(),
                            };
                            meta::put_v2_index(batch.raw(), &self.db, i);
                        }
                        if out.expired > 0 {
                            tracing::debug!(expired = out.expired, "v2 keys expired");
                        }
                        Ok(out.event)
                    }
                }
            }
        };
        Applied::V2 {
            outcome,
            raft_index: index,
            raft_term: term,
        }
    }

    /// etcd's auth checks of a client entry, against the auth state here.
    fn check_entry_auth(&self, info: &Option<AuthInfo>, r: &Request) -> Result<(), AuthError> {
        let store = self.auth.store.read();
        if !store.is_enabled() {
            return Ok(());
        }
        let info = info.as_ref();
        // WRITE on every key already attached to a lease (etcd's rule for
        // attaching to or revoking a lease).
        let lease_keys = |id: i64| -> Result<(), AuthError> {
            match self.lessor.time_to_live(id, true) {
                Some(l) => store.check_keys_writable(info, l.keys.iter().map(|k| k.as_ref())),
                None => Ok(()),
            }
        };
        match r {
            Request::Put(p) => {
                store.check_put_request(info, p)?;
                if p.lease != 0 {
                    lease_keys(p.lease)?;
                }
                Ok(())
            }
            Request::DeleteRange(d) => store.check_delete_range_request(info, d),
            Request::Txn(t) => store.check_txn(info, t),
            Request::LeaseRevoke(l) => {
                if info.is_none_or(|i| i.username.is_empty()) {
                    return Err(AuthError::UserEmpty);
                }
                lease_keys(l.id)
            }
            Request::LeaseGrant(_) => match info {
                Some(i) if !i.username.is_empty() => Ok(()),
                _ => Err(AuthError::UserEmpty),
            },
            Request::AuthEnable(_)
            | Request::AuthDisable(_)
            | Request::UserAdd(_)
            | Request::UserDelete(_)
            | Request::UserChangePassword(_)
            | Request::UserGrantRole(_)
            | Request::UserRevokeRole(_)
            | Request::RoleAdd(_)
            | Request::RoleDelete(_)
            | Request::RoleGrantPermission(_)
            | Request::RoleRevokePermission(_) => {
                store.authorize_request(info, Access::Admin, b"", b"")
            }
            // Stricter than etcd 3.4, which lets any client do both:
            // compaction destroys history every client may depend on, and
            // an alarm stops (or resumes) writes for the whole cluster, so
            // both are root's. The server's own compactions and NOSPACE
            // alarms are internal entries and are not checked.
            Request::Compaction(_) | Request::Alarm(_) => {
                store.authorize_request(info, Access::Admin, b"", b"")
            }
            // The rest are the server's own requests.
            _ => Ok(()),
        }
    }

    /// A replicated login: the password was checked by the member the
    /// client asked. Every member registers a simple token; a JWT is signed
    /// only where the client waits for it.
    fn apply_authenticate(
        &mut self,
        a: &crate::pb::cairnpb::AuthenticateEntry,
        index: u64,
        wanted: bool,
    ) -> Result<Applied, Error> {
        // A plugin-admitted principal is not a built-in user: there is no
        // user to re-check, and the login is valid whether or not etcd auth
        // is enabled (plugin principals are asked about by authorizers
        // either way). Its plugin-set stamp was checked by `refuse_stale`.
        // The token stands for the auth state now, as a built-in login's.
        let revision = if a.plugin_principal {
            self.auth.store.read().revision()
        } else {
            self.auth.store.read().authenticate(&a.name)?
        };
        let simple = matches!(self.auth.tokens, crate::auth::TokenProvider::Simple(_));
        if !simple && !wanted {
            return Ok(Applied::AuthDone);
        }
        let token = self.auth.tokens.assign(
            &a.name,
            revision,
            &a.simple_token_prefix,
            index,
            crate::auth::Now::current(),
        )?;
        Ok(Applied::Authenticated { token, revision })
    }

    /// An auth-management write (already checked by `check_entry_auth`).
    fn apply_auth(
        &mut self,
        batch: &mut ApplyBatch,
        r: Request,
        _caller: Option<&AuthInfo>,
    ) -> Result<Applied, Error> {
        let mut store = self.auth.store.write();
        let before = store.revision();
        let was_enabled = store.is_enabled();
        let mut invalidate = None;
        match &r {
            Request::AuthEnable(x) => store.auth_enable(x).map(drop),
            Request::AuthDisable(x) => store.auth_disable(x).map(drop),
            Request::UserAdd(x) => store.user_add(x).map(drop),
            Request::UserDelete(x) => {
                invalidate = Some(x.name.clone());
                store.user_delete(x).map(drop)
            }
            Request::UserChangePassword(x) => {
                invalidate = Some(x.name.clone());
                store.user_change_password(x).map(drop)
            }
            Request::UserGrantRole(x) => store.user_grant_role(x).map(drop),
            Request::UserRevokeRole(x) => store.user_revoke_role(x).map(drop),
            Request::RoleAdd(x) => store.role_add(x).map(drop),
            Request::RoleDelete(x) => store.role_delete(x).map(drop),
            Request::RoleGrantPermission(x) => store.role_grant_permission(x).map(drop),
            Request::RoleRevokePermission(x) => store.role_revoke_permission(x).map(drop),
            _ => Ok(()),
        }?;
        if store.revision() != before || store.is_enabled() != was_enabled {
            meta::put_auth(batch.raw(), &self.db, store.save());
        }
        if let Some(name) = invalidate {
            self.auth.tokens.invalidate_user(&name);
        }
        if was_enabled && !store.is_enabled() {
            self.auth.tokens.disable();
        }
        if !was_enabled && store.is_enabled() {
            tracing::info!("enabled authentication");
            // Loudly, on every member: an authenticator anyone could deploy
            // while auth was off is not consulted from now on.
            for p in self.plugins.current().plugins.iter() {
                if p.live_for(cairn_plugin_host::Hook::Authenticator)
                    && !p.record.vouched_under_auth
                {
                    tracing::warn!(
                        plugin = %p.record.name,
                        "authentication enabled: authenticator plugin {:?} was deployed while auth was off, \
                         so it is suspended until root deploys it again (`cairn plugin deploy`)",
                        p.record.name
                    );
                }
            }
        } else if was_enabled && !store.is_enabled() {
            tracing::info!("disabled authentication");
        }
        Ok(Applied::AuthDone)
    }

    /// Rebuilds the in-memory auth store from its persisted blob.
    fn reload_auth(&self) -> storage::Result<()> {
        let store = match meta::auth(&self.db)? {
            Some(blob) => crate::auth::AuthStore::load(&blob)
                .map_err(|e| storage::Error::corrupt("auth store", e))?,
            None => crate::auth::AuthStore::new(),
        };
        *self.auth.store.write() = store;
        Ok(())
    }

    /// Rebuilds the in-memory v2 store from its persisted nodes.
    fn reload_v2(&self) -> storage::Result<()> {
        let (records, index) = meta::v2_records(&self.db)?;
        let mut store = self.v2.write();
        store
            .load(records, index.index)
            .map_err(|e| storage::Error::corrupt("v2 store", format!("{e:?}")))?;
        store.set_visible_index(index.visible);
        Ok(())
    }

    fn install_snapshot(&mut self, index: u64, path: &std::path::Path) -> storage::Result<()> {
        let started = Instant::now();
        let mut records = storage::mvcc::IndexRecords::default();
        let header = snapfile::load(&self.db, path, |k, v| {
            records
                .add(k, v)
                .map_err(|e| storage::Error::corrupt("snapshot record", e))
        })?;
        if header.index != index {
            return Err(storage::Error::corrupt(
                "snapshot",
                format!("file holds index {}, raft expected {index}", header.index),
            ));
        }
        let load_ms = started.elapsed().as_millis() as u64;
        let attachments = self.store.reload(records).map_err(storage_err)?;
        self.lessor.restore(
            meta::lease_records(&self.db)?
                .into_iter()
                .map(|r| (r.id, r.ttl, r.remaining_ttl))
                .collect(),
            attachments,
            self.election_timeout(),
        );
        self.membership.reload(&self.db)?;
        self.reload_v2()?;
        self.plugins.reload(&self.db)?;
        self.reload_auth()?;
        self.hub.reset();
        self.applied = meta::applied(&self.db)?;
        self.conf_state = meta::conf_state(&self.db)?;
        self.last_log_compaction = self.applied.index;
        self.status
            .applied
            .store(self.applied.index, Ordering::Release);
        self.applied_tx.send_replace(self.applied.index);
        tracing::info!(
            index,
            revision = self.store.current_rev(),
            load_ms,
            took_ms = started.elapsed().as_millis() as u64,
            "loaded snapshot into the state machine"
        );
        Ok(())
    }
}

/// Which requests an active alarm refuses, as etcd's appliers do: with
/// CORRUPT every write (etcd's corrupt applier), with NOSPACE whatever
/// could grow the store — puts, txns holding a put, lease grants (etcd's
/// capped applier). Deletes, compaction and revokes still run under NOSPACE
/// so space can be freed.
fn refused_by_alarms(alarms: &AlarmTable, r: &Request) -> Option<Error> {
    if alarms.is_raised(AlarmType::Corrupt)
        && matches!(
            r,
            Request::Put(_)
                | Request::DeleteRange(_)
                | Request::Txn(_)
                | Request::Compaction(_)
                | Request::LeaseGrant(_)
                | Request::LeaseRevoke(_)
        )
    {
        return Some(Error::Corrupt);
    }
    if alarms.is_raised(AlarmType::Nospace) {
        let grows = match r {
            Request::Put(_) | Request::LeaseGrant(_) => true,
            Request::Txn(t) => txn_puts(t),
            _ => false,
        };
        if grows {
            return Some(Error::NoSpace);
        }
    }
    None
}

/// Whether a txn holds a put in either branch, nested txns included.
fn txn_puts(t: &TxnRequest) -> bool {
    t.success
        .iter()
        .chain(t.failure.iter())
        .any(|op| match &op.request {
            Some(request_op::Request::RequestPut(_)) => true,
            Some(request_op::Request::RequestTxn(inner)) => txn_puts(inner),
            _ => false,
        })
}

/// Runs one write request: one main revision for all its changes.
fn with_write<T>(
    batch: &mut ApplyBatch,
    lessor: &Lessor,
    f: impl FnOnce(&mut WriteBackend<'_>) -> Result<T, Error>,
) -> Result<T, Error> {
    let w = batch.begin_write();
    let mut backend = WriteBackend { batch, w, lessor };
    let result = f(&mut backend);
    let WriteBackend { batch, w, .. } = backend;
    if result.is_err() && w.changed() {
        // Checks run before the first write, so only a storage failure can
        // get here; keep the revision accounting in step with what was written.
        tracing::error!("request failed after writing; its partial changes stay");
    }
    batch.end_write(w);
    result
}
