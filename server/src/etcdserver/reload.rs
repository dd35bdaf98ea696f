//! Live configuration reload.
//!
//! Triggers: an edit of a config file (its folder is watched, so editors'
//! rename-on-save and symlink swaps count; events are debounced), SIGHUP,
//! and `POST /config/reload`. A reload re-reads everything and validates the
//! whole new configuration first: if anything is wrong nothing changes and
//! the error is reported (log, `/metrics`, `GET /config/status`). Otherwise
//! the live settings are swapped in at once (one `ArcSwap` store) — every
//! part of the server reads them from there — and restart-only changes are
//! reported as such.

use super::EtcdServer;
use crate::metrics::METRICS;
use cairn_config::{ServerConfig, apply_live, diff, masked_edits};
use parking_lot::Mutex;
use serde::Serialize;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Quiet time after the last file event before reloading.
const DEBOUNCE: Duration = Duration::from_millis(100);
/// A burst of events still reloads at least this often.
const MAX_DEBOUNCE: Duration = Duration::from_secs(1);

const OUTCOME_APPLIED: &str = "applied";
const OUTCOME_PARTIAL: &str = "partial";
const OUTCOME_FAILED: &str = "failed";

/// The outcome of the last reload, as `GET /config/status` shows it.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ReloadStatus {
    pub last_attempt_unix: u64,
    pub last_trigger: String,
    pub last_reload_successful: bool,
    pub last_success_unix: u64,
    pub last_error: Option<String>,
    /// `applied` (the files were taken in full), `partial` (the reload
    /// went through, but some of what the files say was ignored: see
    /// `warnings`) or `failed` (nothing changed: see `last_error`).
    pub outcome: String,
    /// What the last reload ignored, as at startup: unknown keys (with a
    /// did-you-mean), values with a trailing comment, deprecated names.
    pub warnings: Vec<String>,
    /// Settings applied by the last successful reload.
    pub applied: Vec<String>,
    /// Settings changed in the files but waiting for a restart.
    pub pending_restart: Vec<String>,
    pub config_files: Vec<String>,
}

impl ReloadStatus {
    /// What anyone may see while auth is on: the outcome and which settings
    /// changed, not their values, the error text (it quotes values) or the
    /// files.
    pub fn redacted(&self) -> ReloadStatus {
        let name_only = |changes: &[String]| -> Vec<String> {
            changes
                .iter()
                .map(|c| c.split(':').next().unwrap_or_default().to_string())
                .collect()
        };
        ReloadStatus {
            last_attempt_unix: self.last_attempt_unix,
            last_trigger: self.last_trigger.clone(),
            last_reload_successful: self.last_reload_successful,
            last_success_unix: self.last_success_unix,
            last_error: self.last_error.as_ref().map(|_| {
                "the last reload failed; root sees why (GET /config/status with a root token)"
                    .to_string()
            }),
            outcome: self.outcome.clone(),
            // They quote keys and values of the files.
            warnings: self
                .warnings
                .iter()
                .map(|_| "hidden while auth is on; root sees it".to_string())
                .collect(),
            applied: name_only(&self.applied),
            pending_restart: name_only(&self.pending_restart),
            config_files: Vec::new(),
        }
    }
}

pub struct Reloader {
    srv: Arc<EtcdServer>,
    status: Mutex<ReloadStatus>,
    /// One reload at a time.
    running: Mutex<()>,
    /// What the config files looked like at the last reload, so events from
    /// other files in the same folders (logs, say) do not cause reloads.
    fingerprint: Mutex<Vec<u8>>,
}

/// A digest of the config files' resolved paths and contents.
fn fingerprint(files: &[PathBuf]) -> Vec<u8> {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    for f in files {
        h.update(f.as_os_str().as_encoded_bytes());
        if let Ok(target) = std::fs::canonicalize(f) {
            h.update(target.as_os_str().as_encoded_bytes());
        }
        // Config files are capped at 1 MiB by the parser; read a little more
        // so an oversized file still changes the digest.
        match std::fs::File::open(f) {
            Ok(file) => {
                use std::io::Read;
                let mut buf = Vec::new();
                let _ = file.take(2 << 20).read_to_end(&mut buf);
                h.update((buf.len() as u64).to_be_bytes());
                h.update(&buf);
            }
            Err(_) => h.update(b"missing"),
        }
    }
    h.finalize().to_vec()
}

fn now_unix() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

impl Reloader {
    pub fn new(srv: Arc<EtcdServer>) -> Arc<Reloader> {
        let cfg = srv.config.load_full();
        let now = now_unix();
        METRICS.config_reload_successful.set(1);
        METRICS.config_reload_success_timestamp.set(now as i64);
        Arc::new(Reloader {
            status: Mutex::new(ReloadStatus {
                last_attempt_unix: now,
                last_trigger: "startup".into(),
                last_reload_successful: true,
                last_success_unix: now,
                outcome: if cfg.warnings.is_empty() {
                    OUTCOME_APPLIED
                } else {
                    OUTCOME_PARTIAL
                }
                .into(),
                warnings: cfg.warnings.clone(),
                config_files: files(&cfg)
                    .iter()
                    .map(|p| p.display().to_string())
                    .collect(),
                ..Default::default()
            }),
            fingerprint: Mutex::new(fingerprint(&files(&cfg))),
            srv,
            running: Mutex::new(()),
        })
    }

    /// The configuration in effect.
    pub fn config(&self) -> Arc<ServerConfig> {
        self.srv.config.load_full()
    }

    pub fn status(&self) -> ReloadStatus {
        self.status.lock().clone()
    }

    /// Re-reads and applies the configuration. Never leaves a half-applied
    /// configuration: either the new one is swapped in whole or nothing.
    pub fn reload(&self, trigger: &str) -> ReloadStatus {
        let _one = self.running.lock();
        // Certificates and CA bundles are re-read on every trigger too
        // (they also reload by themselves when their files change).
        crate::tls::reload_all(trigger);
        let running = self.srv.config.load_full();
        *self.fingerprint.lock() = fingerprint(&files(&running));
        let now = now_unix();
        // Errors as text: the config error type is large, and `[plugins]`
        // (checked by the plugins module) has errors of its own.
        let outcome: Result<_, String> = match running.reparse() {
            Ok(fresh) => {
                let changes = diff(&running, &fresh);
                // An edit an environment variable or a flag overrides is
                // reported like an ignored line (outcome `partial`).
                let masked = masked_edits(&running, &fresh);
                apply_live(&running, &fresh)
                    .map_err(|e| e.to_string())
                    .and_then(|next| crate::policy::config::check_reload(&fresh, next))
                    .map(|mut next| {
                        next.warnings.extend(masked);
                        (changes, next)
                    })
            }
            Err(e) => Err(e.to_string()),
        };
        let mut st = self.status.lock();
        st.last_attempt_unix = now;
        st.last_trigger = trigger.to_string();
        match outcome {
            Err(e) => {
                let msg = e.to_string();
                tracing::error!(trigger, error = %msg, "configuration reload failed; still serving on the previous configuration");
                st.last_reload_successful = false;
                st.last_error = Some(msg);
                st.outcome = OUTCOME_FAILED.into();
                st.warnings.clear();
                METRICS.config_reload_successful.set(0);
                METRICS
                    .config_reloads
                    .with_label_values(&[trigger, "failure"])
                    .inc();
            }
            Ok((changes, next)) => {
                let next = Arc::new(next);
                self.apply(&running, &next);
                st.applied.clear();
                st.pending_restart.clear();
                for c in &changes {
                    tracing::info!(trigger, "config: {c}");
                    if c.is_live() {
                        st.applied.push(c.to_string());
                    } else {
                        st.pending_restart.push(c.to_string());
                    }
                }
                // What the files say but the reload could not take: the
                // same lines startup logs, so an edit with a typo is seen.
                for w in &next.warnings {
                    tracing::warn!(trigger, "config reload: {w}");
                }
                if changes.is_empty() && next.warnings.is_empty() {
                    tracing::info!(trigger, "configuration reloaded: nothing changed");
                } else if changes.is_empty() {
                    tracing::warn!(
                        trigger,
                        "configuration reloaded partially: nothing changed, {} line(s) ignored",
                        next.warnings.len()
                    );
                } else if !next.warnings.is_empty() {
                    tracing::warn!(
                        trigger,
                        "configuration reloaded partially: {} line(s) ignored",
                        next.warnings.len()
                    );
                }
                st.outcome = if next.warnings.is_empty() {
                    OUTCOME_APPLIED
                } else {
                    OUTCOME_PARTIAL
                }
                .into();
                st.warnings = next.warnings.clone();
                st.last_reload_successful = true;
                st.last_success_unix = now;
                st.last_error = None;
                st.config_files = files(&next)
                    .iter()
                    .map(|p| p.display().to_string())
                    .collect();
                METRICS.config_reload_successful.set(1);
                METRICS.config_reload_success_timestamp.set(now as i64);
                METRICS
                    .config_reloads
                    .with_label_values(&[trigger, "success"])
                    .inc();
                // Swapped in last, so whoever sees the new configuration also
                // sees the reload reported.
                self.srv.config.store(Arc::clone(&next));
                // Plugins compare and push their declaration in the background.
                crate::etcdserver::policy::reloaded(&self.srv);
            }
        }
        st.clone()
    }

    /// Pushes the live settings that are not simply read on demand (the
    /// parts that hold them live below the server and never see its config).
    fn apply(&self, old: &ServerConfig, new: &ServerConfig) {
        if old.log_level != new.log_level {
            crate::logging::set_level(new.log_level.as_str());
        }
        if old.max_snapshots != new.max_snapshots {
            self.srv.snapshots.set_max_files(new.max_snapshots as usize);
        }
        if old.experimental_compaction_batch_limit != new.experimental_compaction_batch_limit {
            self.srv
                .store
                .set_compaction_batch_limit(new.experimental_compaction_batch_limit as usize);
        }
    }

    /// Reloads on file changes and on SIGHUP, for as long as the process runs.
    pub fn spawn_triggers(self: &Arc<Self>) {
        let this = Arc::clone(self);
        tokio::spawn(async move {
            let Ok(mut hup) =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
            else {
                tracing::warn!("cannot listen for SIGHUP; reload with POST /config/reload instead");
                return;
            };
            while hup.recv().await.is_some() {
                let r = Arc::clone(&this);
                let _ = tokio::task::spawn_blocking(move || r.reload("sighup")).await;
            }
        });
        let cfg = self.srv.config.load_full();
        let watched = files(&cfg);
        if watched.is_empty() {
            return;
        }
        let (tx, mut rx) = tokio::sync::mpsc::channel::<()>(1);
        let names: Vec<PathBuf> = watched.clone();
        let handler = move |res: notify::Result<notify::Event>| {
            if let Ok(ev) = res
                && ev.paths.iter().any(|p| relevant(p, &names))
            {
                // A full channel already holds a pending trigger.
                let _ = tx.try_send(());
            }
        };
        let mut watcher = match notify::recommended_watcher(handler) {
            Ok(w) => w,
            Err(e) => {
                tracing::warn!(error = %e, "cannot watch config files; reload with SIGHUP or POST /config/reload");
                return;
            }
        };
        use notify::Watcher;
        let mut dirs: Vec<PathBuf> = Vec::new();
        for f in &watched {
            for dir in crate::files::watch_dirs(f) {
                if !dirs.contains(&dir) {
                    dirs.push(dir);
                }
            }
        }
        for d in &dirs {
            if let Err(e) = watcher.watch(d, notify::RecursiveMode::NonRecursive) {
                tracing::warn!(dir = %d.display(), error = %e, "cannot watch config folder");
            } else {
                tracing::info!(dir = %d.display(), "watching config folder for changes");
            }
        }
        let this = Arc::clone(self);
        tokio::spawn(async move {
            // The watcher lives as long as this task.
            let _watcher = watcher;
            while rx.recv().await.is_some() {
                // Debounce: wait for a quiet moment, but not forever.
                let burst = tokio::time::Instant::now();
                loop {
                    match tokio::time::timeout(DEBOUNCE, rx.recv()).await {
                        Ok(Some(())) if burst.elapsed() < MAX_DEBOUNCE => continue,
                        Ok(None) => return,
                        _ => break,
                    }
                }
                let r = Arc::clone(&this);
                let _ = tokio::task::spawn_blocking(move || {
                    let now = fingerprint(&files(&r.srv.config.load()));
                    if *r.fingerprint.lock() != now {
                        r.reload("file");
                    }
                })
                .await;
            }
        });
    }
}

/// The config files in effect (the ones given, or the defaults that exist).
fn files(cfg: &ServerConfig) -> Vec<PathBuf> {
    cfg.config_files.clone()
}

/// Whether an event on `p` may have changed one of the config files: the
/// file itself, a temp file being renamed over it, or (for symlink swaps,
/// e.g. Kubernetes' `..data`) anything in the folder. Reloading on a
/// false positive is harmless: nothing changes.
fn relevant(p: &Path, files: &[PathBuf]) -> bool {
    files.iter().any(|f| {
        p == f
            || p.parent() == f.parent()
            || std::fs::canonicalize(f)
                .ok()
                .is_some_and(|t| t.parent() == p.parent())
    })
}
