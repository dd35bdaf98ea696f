//! `cargo build --release -p cairn` for `cluster up`, summarised: one
//! progress line (crates compiled so far, the one being compiled) instead of
//! cargo's hundreds, and cargo's full output only when the build fails. A
//! fresh release build takes minutes, so silence would look like a hang and
//! the raw output would bury the cluster's own messages.

use std::collections::VecDeque;
use std::io::{BufRead, BufReader, IsTerminal, Write};
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use crate::util::{cargo, describe, display_cmd, target_dir};

/// Without a terminal (CI logs, pipes), how often to print a progress line.
const PLAIN_PROGRESS_EVERY: Duration = Duration::from_secs(10);
/// How often the progress line on a terminal is redrawn.
const TICK: Duration = Duration::from_secs(1);
/// Lines of cargo output kept for the failure report.
const KEEP_LINES: usize = 400;

/// The one line about a build that succeeded.
fn say_built(took: f64, compiled: usize, warnings: usize) {
    let warned = if warnings > 0 {
        format!(
            ", {} (run the cargo command above to see them)",
            plural(warnings, "warning")
        )
    } else {
        String::new()
    };
    if compiled == 0 {
        eprintln!("xtask: cairn is up to date ({took:.1}s{warned})");
    } else {
        eprintln!(
            "xtask: built cairn in {took:.1}s: {} compiled{warned}",
            plural(compiled, "crate")
        );
    }
}

pub fn build_cairn_release() -> Result<PathBuf> {
    let mut cmd = cargo();
    cmd.args(["build", "--release", "-p", "cairn", "--color", "never"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    eprintln!("xtask: building cairn: {}", display_cmd(&cmd));
    let started = Instant::now();
    let mut child = cmd
        .spawn()
        .with_context(|| format!("could not start `{}`", display_cmd(&cmd)))?;
    let stderr = child.stderr.take().expect("stderr is piped");

    // Lines arrive on a thread so the progress line can tick on while one
    // long crate (cairn itself, at the end) compiles without a word.
    let (tx, rx) = mpsc::channel::<String>();
    thread::spawn(move || {
        for line in BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });

    let tty = std::io::stderr().is_terminal();
    let mut kept: VecDeque<String> = VecDeque::new();
    let mut compiled = 0usize;
    let mut latest = String::new();
    let mut warnings = 0usize;
    let mut said_lock = false;
    let mut last_plain = Instant::now();
    let mut progress_shown = false;
    loop {
        let line = match rx.recv_timeout(TICK) {
            Ok(line) => Some(line),
            Err(mpsc::RecvTimeoutError::Timeout) => None,
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
        };
        if let Some(line) = line {
            let trimmed = line.trim_start();
            if let Some(rest) = trimmed.strip_prefix("Compiling ") {
                compiled += 1;
                latest = rest.split_whitespace().next().unwrap_or(rest).to_string();
            } else if trimmed.starts_with("Blocking waiting for file lock") && !said_lock {
                // Another cargo (an IDE, a test run) holds the build directory.
                if progress_shown {
                    eprintln!();
                    progress_shown = false;
                }
                eprintln!("xtask: waiting for another cargo to release the build directory lock");
                said_lock = true;
            } else if trimmed.starts_with("warning:") && !trimmed.starts_with("warning: `") {
                warnings += 1;
            }
            kept.push_back(line);
            if kept.len() > KEEP_LINES {
                kept.pop_front();
            }
        }
        if compiled == 0 {
            continue;
        }
        let msg = format!(
            "xtask: building cairn: {} compiled, last started {latest} ({:.0}s)",
            plural(compiled, "crate"),
            started.elapsed().as_secs_f64()
        );
        if tty {
            // Overwrite one line; pad to wipe a longer previous one.
            eprint!("\r{msg:<79.79}");
            let _ = std::io::stderr().flush();
            progress_shown = true;
        } else if last_plain.elapsed() >= PLAIN_PROGRESS_EVERY {
            eprintln!("{msg}");
            last_plain = Instant::now();
        }
    }
    let status = child.wait()?;
    if progress_shown {
        eprintln!();
    }
    if !status.success() {
        eprintln!("----- cargo's output (last {} lines) -----", kept.len());
        for line in &kept {
            eprintln!("{line}");
        }
        eprintln!("-----");
        bail!("`{}` failed ({})", display_cmd(&cmd), describe(status));
    }
    say_built(started.elapsed().as_secs_f64(), compiled, warnings);
    let path = target_dir().join("release").join("cairn");
    if !path.is_file() {
        bail!("cargo built cairn but {} is missing", path.display());
    }
    Ok(path)
}

fn plural(n: usize, what: &str) -> String {
    if n == 1 {
        format!("1 {what}")
    } else {
        format!("{n} {what}s")
    }
}
