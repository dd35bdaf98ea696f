//! `cargo xtask cluster logs [member]`: `tail -f` for the members' log
//! files. One member: its lines as they are. No member: every member's
//! lines interleaved as they arrive, each prefixed with the member's name;
//! members added while following are picked up. Ctrl-C stops (the members
//! run in their own process groups, so it does not reach them).
//!
//! Polling rather than inotify keeps xtask free of a watcher dependency; a
//! quarter second is quick enough for a human watching. A log that shrinks
//! or is replaced (truncated, rotated, the member folder recreated by
//! `up --fresh`) is read again from its start.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::process::ExitCode;
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use clap::Args;

use super::{ClusterSpec, DirArgs, resolve_dir};

const POLL: Duration = Duration::from_millis(250);
/// How often to look for members added (or removed) while following all.
const RESCAN: Duration = Duration::from_secs(2);
/// Never read more than this per file per poll: a member logging at debug
/// level must not starve the others' lines.
const MAX_READ: u64 = 1 << 20;

#[derive(Args)]
pub struct LogsArgs {
    #[command(flatten)]
    dir: DirArgs,
    /// Only this member's log (default: all, interleaved, name-prefixed).
    member: Option<String>,
    /// How many lines of each log to show before following.
    #[arg(short = 'n', long, default_value_t = 10)]
    lines: usize,
    /// Print the last lines and exit instead of following.
    #[arg(long)]
    no_follow: bool,
}

/// One log being followed.
struct Follower {
    name: String,
    path: PathBuf,
    file: Option<File>,
    /// Identity of the open file, to notice it being replaced.
    inode: u64,
    pos: u64,
    /// The end of the last read when it stopped mid-line.
    partial: Vec<u8>,
}

impl Follower {
    fn new(name: &str, path: PathBuf) -> Self {
        Follower {
            name: name.to_string(),
            path,
            file: None,
            inode: 0,
            pos: 0,
            partial: Vec::new(),
        }
    }

    /// Opens the log and returns its last `lines` lines, leaving the
    /// position at its end. A missing log is not an error: the member may
    /// not have started yet.
    fn open_at_tail(&mut self, lines: usize) -> Vec<String> {
        let Ok(mut file) = File::open(&self.path) else {
            return Vec::new();
        };
        let Ok(meta) = file.metadata() else {
            return Vec::new();
        };
        let len = meta.len();
        // Enough for the requested lines of any sane log; the first,
        // probably partial, line of the window is dropped below.
        let window = (lines as u64 + 1).saturating_mul(4096).min(len);
        let mut buf = Vec::new();
        if file.seek(SeekFrom::Start(len - window)).is_ok() {
            let _ = (&mut file).take(window).read_to_end(&mut buf);
        }
        let text = String::from_utf8_lossy(&buf);
        let mut all: Vec<&str> = text.lines().collect();
        if window < len && !all.is_empty() {
            all.remove(0);
        }
        let tail = all[all.len().saturating_sub(lines)..]
            .iter()
            .map(|s| (*s).to_string())
            .collect();
        self.inode = meta.ino();
        self.pos = len;
        self.file = Some(file);
        self.partial.clear();
        tail
    }

    /// Complete lines written since the last call.
    fn poll(&mut self) -> Vec<String> {
        let replaced = match std::fs::metadata(&self.path) {
            Ok(meta) => meta.ino() != self.inode || meta.len() < self.pos,
            Err(_) => return Vec::new(),
        };
        if replaced || self.file.is_none() {
            let Ok(file) = File::open(&self.path) else {
                return Vec::new();
            };
            self.inode = file.metadata().map(|m| m.ino()).unwrap_or(0);
            self.file = Some(file);
            self.pos = 0;
            self.partial.clear();
        }
        let Some(file) = &mut self.file else {
            return Vec::new();
        };
        let mut buf = std::mem::take(&mut self.partial);
        let before = buf.len();
        if file.seek(SeekFrom::Start(self.pos)).is_ok() {
            let _ = file.take(MAX_READ).read_to_end(&mut buf);
        }
        self.pos += (buf.len() - before) as u64;
        let mut lines = Vec::new();
        let mut start = 0;
        while let Some(nl) = buf[start..].iter().position(|&b| b == b'\n') {
            lines.push(String::from_utf8_lossy(&buf[start..start + nl]).into_owned());
            start += nl + 1;
        }
        self.partial = buf[start..].to_vec();
        lines
    }
}

pub fn logs(args: LogsArgs) -> Result<ExitCode> {
    let dir = resolve_dir(&args.dir)?;
    let spec = ClusterSpec::load_existing(&dir)?;
    let single = args.member.is_some();
    let mut followers: Vec<Follower> = match &args.member {
        Some(name) => {
            let i = spec.member_index(name)?;
            vec![Follower::new(name, spec.members[i].log.clone())]
        }
        None => spec
            .members
            .iter()
            .map(|m| Follower::new(&m.name, m.log.clone()))
            .collect(),
    };
    if followers.is_empty() {
        bail!("the cluster in {} has no members", dir.display());
    }

    let mut out = std::io::stdout().lock();
    // A closed pipe (`... | head`) ends the command quietly, like tail.
    let mut emit = |followers: &[Follower], who: usize, lines: Vec<String>| -> bool {
        let width = followers.iter().map(|f| f.name.len()).max().unwrap_or(0);
        for line in lines {
            let written = if single {
                writeln!(out, "{line}")
            } else {
                writeln!(out, "{:<width$} | {line}", followers[who].name)
            };
            if written.is_err() {
                return false;
            }
        }
        out.flush().is_ok()
    };

    for i in 0..followers.len() {
        let lines = followers[i].open_at_tail(args.lines);
        if !emit(&followers, i, lines) {
            return Ok(ExitCode::SUCCESS);
        }
    }
    if args.no_follow {
        return Ok(ExitCode::SUCCESS);
    }

    let mut last_scan = Instant::now();
    loop {
        thread::sleep(POLL);
        for i in 0..followers.len() {
            let lines = followers[i].poll();
            if !emit(&followers, i, lines) {
                return Ok(ExitCode::SUCCESS);
            }
        }
        if !single && last_scan.elapsed() >= RESCAN {
            last_scan = Instant::now();
            // Members come and go with `add` and `remove`; the state file
            // is rewritten atomically, so a read sees old or new, never half.
            if let Ok(Some(now)) = ClusterSpec::load(&dir) {
                for m in &now.members {
                    if !followers.iter().any(|f| f.name == m.name) {
                        // Like at the start: the last lines, then follow.
                        // (A re-added name's log holds its earlier life.)
                        let mut f = Follower::new(&m.name, m.log.clone());
                        let lines = f.open_at_tail(args.lines);
                        followers.push(f);
                        if !emit(&followers, followers.len() - 1, lines) {
                            return Ok(ExitCode::SUCCESS);
                        }
                    }
                }
            }
        }
    }
}
