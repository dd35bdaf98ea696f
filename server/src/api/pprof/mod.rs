//! `--enable-pprof`: Go's `net/http/pprof` paths on the client URLs, as
//! etcd serves them, with what a Rust process can honestly produce.
//!
//! - `/debug/pprof/` — the index page, listing the profiles below.
//! - `/debug/pprof/profile?seconds=N` — a CPU profile sampled at 100 Hz
//!   for N seconds (default 30, as Go; at most [`MAX_PROFILE_SECONDS`]),
//!   gzip'd `profile.proto` that `go tool pprof` reads. One at a time; a
//!   second concurrent request gets Go's "already in use" error. A client
//!   that hangs up stops the sampling.
//! - `/debug/pprof/cmdline` — the command line, NUL-separated, as Go.
//! - Every other name (Go's `heap`, `goroutine`, `allocs`, `block`,
//!   `mutex`, `threadcreate`, `trace`, `symbol`) answers as Go does for an
//!   unknown profile: 404 `Unknown profile`. They describe the Go runtime;
//!   Cairn has no equivalent it could report truthfully.
//!
//! Sampling uses SIGPROF and unwinds the interrupted thread in the signal
//! handler (pprof-rs). Frames in libc, libgcc, libpthread and the vDSO are
//! skipped (pprof-rs's blocklist), which avoids the known deadlock of
//! unwinding through the unwinder's own lock. Off unless the flag is set.

mod proto;

use axum::extract::{Path, Query};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use std::collections::HashMap;
use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime};

/// Go's default profile length.
const DEFAULT_PROFILE_SECONDS: u64 = 30;
/// The longest CPU profile one request may ask for.
pub const MAX_PROFILE_SECONDS: u64 = 300;
/// Go's CPU profiling rate.
const PROFILE_HZ: i32 = 100;

/// Set while a CPU profile runs (the sampler is process-wide).
static PROFILING: AtomicBool = AtomicBool::new(false);

/// The routes, merged into the client router when `--enable-pprof` is set.
pub fn routes() -> axum::Router {
    axum::Router::new()
        // Go's ServeMux sends the bare path to the subtree.
        .route(
            "/debug/pprof",
            get(|| async {
                (
                    StatusCode::MOVED_PERMANENTLY,
                    [(header::LOCATION, "/debug/pprof/")],
                )
            }),
        )
        .route("/debug/pprof/", get(index))
        .route("/debug/pprof/{name}", get(named))
}

/// Go's `serveError`: a plain-text line with the status.
fn go_error(status: StatusCode, text: &str) -> Response {
    (
        status,
        [
            (header::CONTENT_TYPE, "text/plain; charset=utf-8"),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        ],
        format!("{text}\n"),
    )
        .into_response()
}

async fn index() -> Response {
    let page = format!(
        "<html>\n<head>\n<title>/debug/pprof/</title>\n</head>\n<body>\n/debug/pprof/<br>\n<br>\n\
         Types of profiles available:\n<table>\n<thead><td>Count</td><td>Profile</td></thead>\n\
         <tr><td>0</td><td><a href='cmdline?debug=1'>cmdline</a></td></tr>\n\
         <tr><td>0</td><td><a href='profile?debug=1'>profile</a></td></tr>\n\
         </table>\n<p>\nProfile Descriptions:\n<ul>\n\
         <li><div class=profile-name>cmdline: </div> The command line invocation of the current program</li>\n\
         <li><div class=profile-name>profile: </div> CPU profile. You can specify the duration in the seconds \
         GET parameter (at most {MAX_PROFILE_SECONDS}). After you get the profile file, use the go tool pprof \
         command to investigate the profile.</li>\n</ul>\n\
         Go runtime profiles (heap, goroutine, allocs, block, mutex, threadcreate, trace) have no \
         counterpart in cairn and answer 404.\n</p>\n</body>\n</html>\n"
    );
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        ],
        page,
    )
        .into_response()
}

async fn named(Path(name): Path<String>, Query(q): Query<HashMap<String, String>>) -> Response {
    match name.as_str() {
        "profile" => cpu_profile(&q).await,
        "cmdline" => {
            let args: Vec<String> = std::env::args().collect();
            (
                [
                    (header::CONTENT_TYPE, "text/plain; charset=utf-8"),
                    (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
                ],
                args.join("\0"),
            )
                .into_response()
        }
        _ => go_error(StatusCode::NOT_FOUND, "Unknown profile"),
    }
}

/// Go's rule: a missing, malformed or non-positive `seconds` means 30.
fn profile_seconds(q: &HashMap<String, String>) -> u64 {
    match q.get("seconds").and_then(|s| s.parse::<i64>().ok()) {
        Some(n) if n > 0 => u64::try_from(n).unwrap_or(u64::MAX),
        _ => DEFAULT_PROFILE_SECONDS,
    }
}

/// Clears [`PROFILING`] however the request ends (a client that hangs up
/// drops the handler's future mid-sleep).
struct Busy;

impl Drop for Busy {
    fn drop(&mut self) {
        PROFILING.store(false, Ordering::Release);
    }
}

async fn cpu_profile(q: &HashMap<String, String>) -> Response {
    let seconds = profile_seconds(q);
    if seconds > MAX_PROFILE_SECONDS {
        return go_error(
            StatusCode::BAD_REQUEST,
            &format!("profile duration exceeds cairn's limit of {MAX_PROFILE_SECONDS} seconds"),
        );
    }
    if PROFILING.swap(true, Ordering::AcqRel) {
        return go_error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "Could not enable CPU profiling: cpu profiling already in use",
        );
    }
    let busy = Busy;
    // Starting the sampler resolves the loaded libraries (the blocklist):
    // blocking work.
    let started = tokio::task::spawn_blocking(|| {
        pprof::ProfilerGuardBuilder::default()
            .frequency(PROFILE_HZ)
            .blocklist(&["libc", "libgcc", "pthread", "vdso"])
            .build()
    })
    .await;
    let guard = match started {
        Ok(Ok(g)) => g,
        Ok(Err(e)) => {
            return go_error(
                StatusCode::INTERNAL_SERVER_ERROR,
                &format!("Could not enable CPU profiling: {e}"),
            );
        }
        Err(e) => {
            return go_error(
                StatusCode::INTERNAL_SERVER_ERROR,
                &format!("Could not enable CPU profiling: {e}"),
            );
        }
    };
    let (start, clock) = (SystemTime::now(), Instant::now());
    tracing::info!(seconds, "CPU profile started");
    // If the client hangs up, this future is dropped here and so is the
    // guard, which stops the sampler.
    tokio::time::sleep(Duration::from_secs(seconds)).await;
    let built = tokio::task::spawn_blocking(move || {
        let report = guard.report().build();
        let took = clock.elapsed();
        drop(guard);
        drop(busy);
        let report = report.map_err(|e| e.to_string())?;
        let stacks = proto::stacks(&report);
        let profile = proto::cpu_profile(&stacks, i64::from(PROFILE_HZ), start, took);
        gzip(&prost::Message::encode_to_vec(&profile)).map_err(|e| e.to_string())
    })
    .await;
    match built {
        Ok(Ok(body)) => {
            tracing::info!(bytes = body.len(), "CPU profile served");
            let mut resp = body.into_response();
            let h = resp.headers_mut();
            h.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/octet-stream"),
            );
            h.insert(
                header::CONTENT_DISPOSITION,
                HeaderValue::from_static("attachment; filename=\"profile\""),
            );
            h.insert(
                header::X_CONTENT_TYPE_OPTIONS,
                HeaderValue::from_static("nosniff"),
            );
            resp
        }
        Ok(Err(e)) => go_error(
            StatusCode::INTERNAL_SERVER_ERROR,
            &format!("Could not build the CPU profile: {e}"),
        ),
        Err(e) => go_error(
            StatusCode::INTERNAL_SERVER_ERROR,
            &format!("Could not build the CPU profile: {e}"),
        ),
    }
}

fn gzip(data: &[u8]) -> std::io::Result<Vec<u8>> {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    enc.write_all(data)?;
    enc.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_string(), (*v).to_string()))
            .collect()
    }

    #[test]
    fn seconds_follow_go() {
        assert_eq!(profile_seconds(&q(&[])), 30);
        assert_eq!(profile_seconds(&q(&[("seconds", "2")])), 2);
        assert_eq!(profile_seconds(&q(&[("seconds", "0")])), 30);
        assert_eq!(profile_seconds(&q(&[("seconds", "-4")])), 30);
        assert_eq!(profile_seconds(&q(&[("seconds", "1.5")])), 30);
        assert_eq!(profile_seconds(&q(&[("seconds", "999")])), 999);
    }
}
