//! The apply loop: applies committed raft entries to the state machine, in
//! order, exactly once.
//!
//! Invariant: the applied index is written in the same fjall batch as the
//! changes of the entries it covers. After a crash, raft replays exactly the
//! entries past it (the raft log keeps them: see `CtlMsg::CompactLog`).
//! Clients are answered only after their entry's batch is committed and its
//! revision published, so a client that saw its write acknowledged can read
//! it back from this member.

use super::lease::Lessor;
use super::membership::Membership;
use super::node::{ApplyMsg, CtlMsg};
use super::txn::{self, WriteBackend};
use super::wait::Waiters;
use super::watch::WatchHub;
use super::{Applied, RaftStatus};
use crate::error::Error;
use crate::metrics::METRICS;
use crate::pb::cairnpb::{InternalRequest, MemberAttributes, internal_request::Request};
use crate::pb::etcdserverpb::{
    CompactionResponse, LeaseGrantResponse, LeaseRevokeResponse, ResponseHeader,
};
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
            let result = match queue.pop_front() {
                Some(ApplyMsg::Entries(mut entries)) => {
                    // Coalesce consecutive entry batches into one fjall batch.
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
            };
            if let Err(e) = result {
                tracing::error!(error = %e, "applying committed entries failed; stopping this member");
                std::process::exit(1);
            }
            self.maybe_generate_snapshot();
        }
        tracing::info!("apply loop stopped");
    }

    fn election_timeout(&self) -> Duration {
        Duration::from_millis(self.cfg.config.load().election_timeout_ms)
    }

    fn apply_entries(&mut self, entries: Vec<Entry>) -> storage::Result<()> {
        let started = Instant::now();
        let mut batch = self.store.begin_batch();
        let mut results: Vec<(u64, Result<Applied, Error>)> = Vec::new();
        let mut membership = None;
        let mut last = self.applied;
        for e in &entries {
            if e.index <= last.index {
                continue;
            }
            match e.get_entry_type() {
                EntryType::EntryNormal => {
                    if !e.data.is_empty() {
                        self.apply_normal(&mut batch, &e.data, &mut results, &mut membership)?;
                    } else if self.status.is_leader() {
                        // A new leader's first entry: everything before it is
                        // applied, so this member knows every lease; start
                        // their clocks (etcd's "promote").
                        self.lessor.promote(self.election_timeout());
                    }
                }
                EntryType::EntryConfChange => {
                    let mut cc = ConfChange::default();
                    cc.merge_from_bytes(&e.data).map_err(storage_err)?;
                    self.apply_conf_change(&mut batch, raft_proto::ConfChangeI::into_v2(cc))?;
                }
                EntryType::EntryConfChangeV2 => {
                    // Auto-leave entries of joint consensus carry no data:
                    // they still must be applied (empty ConfChangeV2).
                    let mut cc = ConfChangeV2::default();
                    cc.merge_from_bytes(&e.data).map_err(storage_err)?;
                    self.apply_conf_change(&mut batch, cc)?;
                }
            }
            last = AppliedState {
                index: e.index,
                term: e.term,
            };
        }
        if last == self.applied {
            return Ok(());
        }
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
        self.status.applied.store(last.index, Ordering::Release);
        self.applied_tx.send_replace(last.index);
        let _ = self.ctl.send(CtlMsg::Applied(last.index));

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

    fn apply_normal(
        &mut self,
        batch: &mut ApplyBatch,
        data: &[u8],
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
            Some(Request::LeaseGrant(g)) => {
                if lessor.grant(g.id, g.ttl) {
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
                } else {
                    Err(Error::LeaseExists)
                }
            }
            Some(Request::LeaseRevoke(r)) => match lessor.revoke(r.id) {
                None => Err(Error::LeaseNotFound),
                Some(keys) => {
                    meta::delete_lease(batch.raw(), &self.db, r.id);
                    // All of the lease's keys go in one revision.
                    with_write(batch, lessor, |b| {
                        for k in keys {
                            txn::Backend::delete(b, &KeyRange::Single(k)).map_err(Error::from)?;
                        }
                        Ok(())
                    })
                    .map(|()| {
                        Applied::LeaseRevoke(LeaseRevokeResponse {
                            header: Some(ResponseHeader {
                                revision: batch.rev(),
                                ..Default::default()
                            }),
                        })
                    })
                }
            },
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
            // Written by the v2 API (wired in with its module).
            Some(Request::V2(_)) => Err(Error::Internal(
                "v2 request in a build without the v2 store".into(),
            )),
            Some(Request::Publish(attrs)) => {
                let m = self.publish(batch, membership, &attrs);
                m.map(|_| Applied::Published)
            }
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

    fn apply_conf_change(
        &mut self,
        batch: &mut ApplyBatch,
        cc: ConfChangeV2,
    ) -> storage::Result<()> {
        let (tx, rx) = crossbeam_channel::bounded(1);
        self.ctl
            .send(CtlMsg::ApplyConfChange(cc, tx))
            .map_err(|_| storage_err("raft loop is gone"))?;
        match rx.recv() {
            Ok(Ok(cs)) => {
                meta::put_conf_state(batch.raw(), &self.db, &cs)?;
                self.conf_state = cs;
                Ok(())
            }
            // raft refused it (e.g. an invalid change); every member refuses
            // the same entry the same way.
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "raft rejected a configuration change");
                Ok(())
            }
            Err(_) => Err(storage_err("raft loop is gone")),
        }
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
        let spawned = std::thread::Builder::new()
            .name("snapshot-writer".into())
            .spawn(move || {
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

    fn install_snapshot(&mut self, index: u64, path: &std::path::Path) -> storage::Result<()> {
        let started = Instant::now();
        let header = snapfile::load(&self.db, path)?;
        if header.index != index {
            return Err(storage::Error::corrupt(
                "snapshot",
                format!("file holds index {}, raft expected {index}", header.index),
            ));
        }
        let attachments = self.store.reload().map_err(storage_err)?;
        self.lessor.restore(
            meta::leases(&self.db)?,
            attachments,
            self.election_timeout(),
        );
        self.membership.reload(&self.db)?;
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
            took_ms = started.elapsed().as_millis() as u64,
            "loaded snapshot into the state machine"
        );
        Ok(())
    }
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
