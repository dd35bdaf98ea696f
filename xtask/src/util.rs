//! Small helpers shared by the subcommands: where things are, and running
//! child processes with streamed output and bounded waits.

use std::ffi::OsStr;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

/// The workspace root: xtask lives one level below it.
pub fn workspace_root() -> PathBuf {
    let manifest_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest_dir
        .parent()
        .expect("xtask's manifest dir has a parent")
        .to_path_buf()
}

/// Cargo's target directory, honouring `CARGO_TARGET_DIR` like cargo does.
pub fn target_dir() -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) if !dir.is_empty() => {
            let dir = PathBuf::from(dir);
            if dir.is_absolute() {
                dir
            } else {
                workspace_root().join(dir)
            }
        }
        _ => workspace_root().join("target"),
    }
}

/// A `cargo` command run from the workspace root. `cargo run` tells us which
/// cargo started us (`$CARGO`); use the same one so toolchain overrides hold.
pub fn cargo() -> Command {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.current_dir(workspace_root());
    cmd
}

/// Renders a command the way a user could paste it (for progress lines).
pub fn display_cmd(cmd: &Command) -> String {
    let mut parts = vec![shellish(cmd.get_program())];
    parts.extend(cmd.get_args().map(shellish));
    parts.join(" ")
}

fn shellish(s: &OsStr) -> String {
    let s = s.to_string_lossy();
    if s.is_empty() || s.contains(|c: char| c.is_whitespace() || "\"'$`\\*?()&|;<>".contains(c)) {
        format!("'{}'", s.replace('\'', r"'\''"))
    } else {
        s.into_owned()
    }
}

/// Runs `cmd` with inherited stdio (output streams straight to the user) and
/// fails if it does not exit successfully.
pub fn run_streamed(cmd: &mut Command) -> Result<()> {
    eprintln!("$ {}", display_cmd(cmd));
    let status = cmd
        .status()
        .with_context(|| format!("could not start `{}`", display_cmd(cmd)))?;
    if !status.success() {
        bail!("`{}` failed ({})", display_cmd(cmd), describe(status));
    }
    Ok(())
}

pub fn describe(status: ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exit code {code}"),
        (None, Some(sig)) => format!("killed by signal {sig}"),
        _ => status.to_string(),
    }
}

/// Output of a short-lived helper command.
pub struct Captured {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

/// Runs `cmd` capturing its output, killing it if it outlives `timeout`.
/// Used for probes (`etcdctl version`, `cargo nextest --version`,
/// `etcdctl endpoint health`) that must never hang the xtask.
pub fn run_captured(cmd: &mut Command, timeout: Duration) -> std::io::Result<Captured> {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn()?;
    // Drain the pipes on threads so a chatty child cannot block on a full pipe
    // while we wait for it.
    let out = drain(child.stdout.take());
    let err = drain(child.stderr.take());
    let status = match wait_timeout(&mut child, timeout)? {
        Some(status) => status,
        None => {
            let _ = child.kill();
            child.wait()?
        }
    };
    Ok(Captured {
        status,
        stdout: out.join().unwrap_or_default(),
        stderr: err.join().unwrap_or_default(),
    })
}

fn drain(pipe: Option<impl Read + Send + 'static>) -> thread::JoinHandle<String> {
    thread::spawn(move || {
        let mut buf = Vec::new();
        if let Some(mut pipe) = pipe {
            let _ = pipe.read_to_end(&mut buf);
        }
        String::from_utf8_lossy(&buf).into_owned()
    })
}

/// Waits up to `timeout` for `child` to exit; `None` if it is still running.
pub fn wait_timeout(child: &mut Child, timeout: Duration) -> std::io::Result<Option<ExitStatus>> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(status) = child.try_wait()? {
            return Ok(Some(status));
        }
        if Instant::now() >= deadline {
            return Ok(None);
        }
        thread::sleep(Duration::from_millis(50));
    }
}

/// Is there an executable file called `name` in one of PATH's directories?
pub fn find_on_path(name: &str) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|candidate| {
            candidate
                .metadata()
                .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
                .unwrap_or(false)
        })
}

/// The last `lines` lines of a (log) file, for error reports.
pub fn tail(path: &Path, lines: usize) -> String {
    match std::fs::read(path) {
        Ok(bytes) => {
            let text = String::from_utf8_lossy(&bytes);
            let all: Vec<&str> = text.lines().collect();
            let start = all.len().saturating_sub(lines);
            all[start..].join("\n")
        }
        Err(err) => format!("(cannot read {}: {err})", path.display()),
    }
}
