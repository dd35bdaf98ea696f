//! The Maintenance service: Status, Alarm, Defragment, Hash, HashKV,
//! Snapshot and MoveLeader (Downgrade is 3.5 and answers `Unimplemented`
//! from the generated default method). Also the quota monitor that raises
//! the NOSPACE alarm.
//!
//! Like etcd's, Status, Defragment, Hash, HashKV and Snapshot speak for the
//! member the client dialled; Alarm changes go through raft.

use super::{ETCD_COMPAT_VERSION, check_leader};
use crate::error::Error;
use crate::etcdserver::{EtcdServer, RequestCtx};
use crate::metrics::METRICS;
use crate::pb::cairnpb::AlarmEntry;
use crate::pb::etcdserverpb::alarm_request::AlarmAction;
use crate::pb::etcdserverpb::maintenance_server::Maintenance;
use crate::pb::etcdserverpb::{
    AlarmRequest, AlarmResponse, AlarmType, DefragmentRequest, DefragmentResponse, HashKvRequest,
    HashKvResponse, HashRequest, HashResponse, MoveLeaderRequest, MoveLeaderResponse,
    SnapshotRequest, SnapshotResponse, StatusRequest, StatusResponse,
};
use crate::storage::{alarm, checksum, etcd_snapshot};
use std::io::Read;
use std::sync::atomic::Ordering;
use std::sync::{Arc, LazyLock};
use std::time::{Duration, Instant};
use tokio::sync::Semaphore;
use tonic::{Request, Response, Status};

/// Bytes per Snapshot stream message (etcd sends 32 KiB).
const SNAPSHOT_CHUNK_BYTES: usize = 64 * 1024;
/// Messages read ahead of a slow client.
const SNAPSHOT_QUEUE_CHUNKS: usize = 4;
/// Snapshot downloads served at once: each holds a full copy on disk.
const MAX_CONCURRENT_SNAPSHOTS: usize = 2;
/// How often the quota monitor compares the state machine with the quota.
const QUOTA_POLL: Duration = Duration::from_millis(100);
/// Pause between attempts to raise NOSPACE when one did not get through.
const QUOTA_RETRY: Duration = Duration::from_secs(1);

static SNAPSHOT_SLOTS: LazyLock<Arc<Semaphore>> =
    LazyLock::new(|| Arc::new(Semaphore::new(MAX_CONCURRENT_SNAPSHOTS)));
/// Whole-database hashes (Hash, HashKV) computed at once: each reads every
/// record, so more would only split the same disk and CPU.
const MAX_CONCURRENT_SCANS: usize = 2;
static SCAN_SLOTS: Semaphore = Semaphore::const_new(MAX_CONCURRENT_SCANS);

/// A scan slot, waited for at most the request timeout; `too many
/// requests` otherwise (docs/security.md).
async fn scan_slot(srv: &EtcdServer) -> Result<tokio::sync::SemaphorePermit<'static>, Status> {
    match tokio::time::timeout(srv.request_timeout(), SCAN_SLOTS.acquire()).await {
        Ok(Ok(permit)) => Ok(permit),
        Ok(Err(_closed)) => Err(Error::Stopped.into()),
        Err(_elapsed) => Err(Error::TooManyRequests.into()),
    }
}

/// One defragmentation at a time (etcd serializes them too).
static DEFRAG: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

pub struct MaintenanceService {
    pub srv: Arc<EtcdServer>,
}

/// A blocking task that panicked or was cancelled: a bug, reported as such.
fn join_error(e: tokio::task::JoinError) -> Status {
    Error::Internal(format!("maintenance task failed: {e}")).into()
}

/// Sizes the way etcd logs and etcdctl prints them (go-humanize, SI units).
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 7] = ["B", "kB", "MB", "GB", "TB", "PB", "EB"];
    if n < 10 {
        return format!("{n} B");
    }
    let e = ((n as f64).ln() / 1000f64.ln()).floor().min(6.0);
    let val = ((n as f64) / 1000f64.powf(e) * 10.0 + 0.5).floor() / 10.0;
    // `e` is in 0..=6 (n >= 10, capped above); EB is the cap's unit.
    let unit = UNITS.get(e as usize).copied().unwrap_or("EB");
    if val < 10.0 {
        format!("{val:.1} {unit}")
    } else {
        format!("{val:.0} {unit}")
    }
}

/// etcd's Maintenance service requires the root role for defragment,
/// snapshot and the hashes, and answers a refusal untranslated (code
/// Unknown, `auth: permission denied`), which clients show as is.
fn check_maintenance_admin(srv: &EtcdServer, ctx: &RequestCtx) -> Result<(), Status> {
    match srv.check_admin(ctx) {
        Ok(()) => Ok(()),
        Err(Error::Auth(e)) => Err(e.untranslated_status()),
        Err(e) => Err(e.into()),
    }
}

#[tonic::async_trait]
impl Maintenance for MaintenanceService {
    async fn move_leader(
        &self,
        req: Request<MoveLeaderRequest>,
    ) -> Result<Response<MoveLeaderResponse>, Status> {
        check_leader(&self.srv, &req)?;
        let ctx = super::request_ctx(&self.srv, &req);
        self.srv.check_admin(&ctx)?;
        Ok(Response::new(
            self.srv.move_leader(&ctx, req.into_inner()).await?,
        ))
    }

    async fn status(
        &self,
        req: Request<StatusRequest>,
    ) -> Result<Response<StatusResponse>, Status> {
        check_leader(&self.srv, &req)?;
        let srv = &self.srv;
        let st = &srv.status();
        let db_size = srv.db().disk_space() as i64;
        let is_learner = srv
            .membership()
            .member(srv.member_id())
            .is_some_and(|m| m.is_learner);
        // etcd 3.4 lists a missing leader and every active alarm here.
        let mut errors = Vec::new();
        if !st.has_leader() {
            errors.push(Error::NoLeader.to_string());
        }
        errors.extend(
            srv.db()
                .alarms
                .list(AlarmType::None as i32)
                .iter()
                .map(alarm::describe),
        );
        Ok(Response::new(StatusResponse {
            header: Some(srv.header(srv.store().current_rev())),
            version: ETCD_COMPAT_VERSION.to_string(),
            db_size,
            leader: st.leader(),
            raft_index: st.last_index.load(Ordering::Acquire),
            raft_term: st.term(),
            raft_applied_index: st.applied.load(Ordering::Acquire),
            errors,
            // The state machine alone (what the quota limits); `db_size`
            // also counts the raft log, which shares the database.
            db_size_in_use: srv.db().state_machine_space() as i64,
            is_learner,
            ..Default::default()
        }))
    }

    /// GET answers from this member's alarm table after a linearizable
    /// read barrier (etcd 3.4 sends it through raft: the same guarantee);
    /// ACTIVATE and DEACTIVATE are applied through raft on every member.
    async fn alarm(&self, req: Request<AlarmRequest>) -> Result<Response<AlarmResponse>, Status> {
        check_leader(&self.srv, &req)?;
        let ctx = super::request_ctx(&self.srv, &req);
        let srv = &self.srv;
        let r = req.into_inner();
        let alarms = match AlarmAction::try_from(r.action) {
            Ok(AlarmAction::Get) => {
                srv.linearizable_read_until(ctx.deadline()).await?;
                srv.db().alarms.list(r.alarm)
            }
            Ok(AlarmAction::Activate | AlarmAction::Deactivate) => {
                let entry = AlarmEntry {
                    request: Some(r),
                    reply_token: 0,
                };
                srv.propose(&ctx, entry).await?
            }
            // An action etcd does not know either: nothing to report.
            Err(_) => Vec::new(),
        };
        // etcd 3.4's AlarmResponse carries no header.
        Ok(Response::new(AlarmResponse {
            header: None,
            alarms,
        }))
    }

    /// Reclaims the space deleted and compacted data still takes (see
    /// `Db::defragment`); local to this member, like etcd's.
    async fn defragment(
        &self,
        req: Request<DefragmentRequest>,
    ) -> Result<Response<DefragmentResponse>, Status> {
        check_leader(&self.srv, &req)?;
        let ctx = super::request_ctx(&self.srv, &req);
        check_maintenance_admin(&self.srv, &ctx)?;
        let srv = &self.srv;
        let _one_at_a_time = DEFRAG.lock().await;
        let before = srv.db().disk_space();
        tracing::info!(
            current_db_size_bytes = before,
            current_db_size = %human_bytes(before),
            "starting to defragment the storage backend"
        );
        let db = srv.db().clone();
        let report = tokio::task::spawn_blocking(move || db.defragment())
            .await
            .map_err(join_error)?;
        let report = match report {
            Ok(r) => r,
            Err(e) => {
                tracing::error!(error = %e, "failed to defragment the storage backend");
                return Err(Error::from(e).into());
            }
        };
        METRICS.defrag_duration.observe(report.took.as_secs_f64());
        tracing::info!(
            current_db_size_bytes_diff = report.after as i64 - report.before as i64,
            current_db_size_bytes = report.after,
            current_db_size = %human_bytes(report.after),
            previous_db_size = %human_bytes(report.before),
            took_ms = report.took.as_millis() as u64,
            "finished defragmenting the storage backend"
        );
        // etcd 3.4 answers with an empty message: no header.
        Ok(Response::new(DefragmentResponse { header: None }))
    }

    async fn hash(&self, req: Request<HashRequest>) -> Result<Response<HashResponse>, Status> {
        check_leader(&self.srv, &req)?;
        let ctx = super::request_ctx(&self.srv, &req);
        check_maintenance_admin(&self.srv, &ctx)?;
        let srv = &self.srv;
        let _slot = scan_slot(srv).await?;
        let rev = srv.store().current_rev();
        let db = srv.db().clone();
        let hash = tokio::task::spawn_blocking(move || checksum::hash_state_machine(&db))
            .await
            .map_err(join_error)?
            .map_err(Error::from)?;
        Ok(Response::new(HashResponse {
            header: Some(srv.header(rev)),
            hash,
        }))
    }

    async fn hash_kv(
        &self,
        req: Request<HashKvRequest>,
    ) -> Result<Response<HashKvResponse>, Status> {
        check_leader(&self.srv, &req)?;
        let ctx = super::request_ctx(&self.srv, &req);
        check_maintenance_admin(&self.srv, &ctx)?;
        let srv = &self.srv;
        let rev = req.into_inner().revision;
        let _slot = scan_slot(srv).await?;
        let store = Arc::clone(srv.store());
        let h = tokio::task::spawn_blocking(move || store.hash_kv(rev))
            .await
            .map_err(join_error)?
            .map_err(Error::from)?;
        Ok(Response::new(HashKvResponse {
            header: Some(srv.header(h.current)),
            hash: h.hash,
            compact_revision: h.compacted,
            hash_revision: h.revision,
        }))
    }

    /// Streams a point-in-time copy of the state machine as an etcd 3.4
    /// snapshot (bbolt database + SHA-256, see `etcd_snapshot`). It is written to a temporary file
    /// first (so the size is known and the read view is released early),
    /// then sent in bounded chunks with `remaining_bytes`, as etcd does.
    async fn snapshot(
        &self,
        req: Request<SnapshotRequest>,
    ) -> Result<Response<tonic::codegen::BoxStream<SnapshotResponse>>, Status> {
        check_leader(&self.srv, &req)?;
        let ctx = super::request_ctx(&self.srv, &req);
        check_maintenance_admin(&self.srv, &ctx)?;
        let srv = Arc::clone(&self.srv);
        let permit = tokio::time::timeout(
            srv.request_timeout(),
            Arc::clone(&SNAPSHOT_SLOTS).acquire_owned(),
        )
        .await
        .map_err(|_| Error::TooManyRequests)?
        .map_err(|_| Error::Stopped)?;
        let path = srv
            .snapshots()
            .dir()
            .join(format!("client-{:016x}.tmp", srv.next_request_id()));
        let rev = srv.store().current_rev();
        let db = srv.db().clone();
        let started = Instant::now();
        let written = tokio::task::spawn_blocking(move || {
            let view = db.db.snapshot();
            let result = etcd_snapshot::write_snapshot(&db, &view, &path).and_then(|size| {
                let file =
                    std::fs::File::open(&path).map_err(|e| crate::storage::Error::io(&path, e))?;
                Ok((file, size))
            });
            // Open (or failed): the name is no longer needed, and a crash
            // must not leave the copy behind.
            let _ = std::fs::remove_file(&path);
            result
        })
        .await
        .map_err(join_error)?;
        let (mut file, total) = match written {
            Ok(w) => w,
            Err(e) => {
                tracing::error!(error = %e, "failed to write a snapshot for a client");
                return Err(Error::from(e).into());
            }
        };
        tracing::info!(
            total_bytes = total,
            size = %human_bytes(total),
            revision = rev,
            "sending database snapshot to client"
        );
        let (tx, rx) = tokio::sync::mpsc::channel(SNAPSHOT_QUEUE_CHUNKS);
        tokio::task::spawn_blocking(move || {
            let _permit = permit;
            let mut sent = 0u64;
            loop {
                let mut buf = Vec::with_capacity(SNAPSHOT_CHUNK_BYTES);
                match (&mut file)
                    .take(SNAPSHOT_CHUNK_BYTES as u64)
                    .read_to_end(&mut buf)
                {
                    Ok(0) => break,
                    Ok(n) => sent += n as u64,
                    Err(e) => {
                        tracing::error!(error = %e, "reading the snapshot copy failed");
                        let _ = tx.blocking_send(Err(Status::from(Error::Internal(format!(
                            "reading the snapshot: {e}"
                        )))));
                        return;
                    }
                }
                // etcd 3.4 sends only the bytes and what remains: no
                // header, no version (3.5 added both to the first message).
                let msg = SnapshotResponse {
                    header: None,
                    remaining_bytes: total.saturating_sub(sent),
                    blob: buf.into(),
                    version: String::new(),
                };
                if tx.blocking_send(Ok(msg)).is_err() {
                    tracing::warn!(sent_bytes = sent, "snapshot client went away");
                    return;
                }
            }
            tracing::info!(
                total_bytes = sent,
                size = %human_bytes(sent),
                took_ms = started.elapsed().as_millis() as u64,
                "sent database snapshot to client"
            );
        });
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(rx),
        )))
    }
}

/// Raises the NOSPACE alarm for this member, through raft, once its state
/// machine (`Db::state_machine_space`) outgrows `--quota-backend-bytes`
/// (etcd raises it when a write would not fit). From then on every member
/// refuses puts, txns with puts and lease grants until `etcdctl alarm
/// disarm` (see `apply::refused_by_alarms`). The size is measured here
/// rather than in the apply loop because it differs between members, while
/// what the apply loop decides must not. Runs for the life of the process.
pub async fn monitor_quota(srv: Arc<EtcdServer>) {
    let mut tick = tokio::time::interval(QUOTA_POLL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut last_attempt: Option<Instant> = None;
    loop {
        tick.tick().await;
        let quota = srv.quota_backend_bytes();
        METRICS.quota_backend_bytes.set(quota as i64);
        let used = srv.db().state_machine_space();
        if used <= quota
            || srv.db().alarms.has(srv.member_id(), AlarmType::Nospace)
            || !srv.status().has_leader()
            || last_attempt.is_some_and(|t| t.elapsed() < QUOTA_RETRY)
        {
            continue;
        }
        last_attempt = Some(Instant::now());
        tracing::warn!(
            used_bytes = used,
            quota_bytes = quota,
            used = %human_bytes(used),
            quota = %human_bytes(quota),
            "database space exceeded; raising the NOSPACE alarm"
        );
        let entry = AlarmEntry {
            request: Some(AlarmRequest {
                action: AlarmAction::Activate as i32,
                member_id: srv.member_id(),
                alarm: AlarmType::Nospace as i32,
            }),
            reply_token: 0,
        };
        if let Err(e) = srv.propose_internal(entry).await {
            tracing::warn!(error = %e, "raising the NOSPACE alarm failed; will retry");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::human_bytes;

    #[test]
    fn sizes_print_like_go_humanize() {
        assert_eq!(human_bytes(0), "0 B");
        assert_eq!(human_bytes(9), "9 B");
        assert_eq!(human_bytes(512), "512 B");
        assert_eq!(human_bytes(20_480), "20 kB");
        assert_eq!(human_bytes(832_000), "832 kB");
        assert_eq!(human_bytes(1_134_592), "1.1 MB");
        assert_eq!(human_bytes(2_147_483_648), "2.1 GB");
    }
}
