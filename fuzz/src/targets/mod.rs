//! The fuzz targets, one per parser that sees bytes from outside. Each
//! module says what its input bytes mean and which invariants it checks.

use crate::engine::Target;
use std::path::PathBuf;
use std::sync::OnceLock;

mod config;
mod discovery;
mod etcd;
mod gateway;
mod h2;
mod peer;
mod plugin;
mod snapshot;
mod v2;

const MIB: usize = 1 << 20;

/// Every target, in the order `cargo xtask fuzz` runs them.
pub fn all() -> Vec<Target> {
    vec![
        h2::AUTHORITY_STREAM,
        h2::HPACK,
        gateway::TARGET,
        v2::TARGET,
        peer::TARGET,
        snapshot::FILE,
        snapshot::RESTORE,
        etcd::BOLT,
        etcd::WAL,
        config::ENVFILE,
        config::YAML,
        config::TOML,
        plugin::TARGET,
        discovery::TARGET,
    ]
}

pub fn by_name(name: &str) -> Option<Target> {
    all().into_iter().find(|t| t.name == name)
}

/// A scratch directory for targets whose parser reads files: on tmpfs
/// when there is one, removed when the process ends normally. One per
/// process; targets make their own files under it and remove them.
pub(crate) fn scratch_dir() -> &'static PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = scratch_dir_of(std::process::id());
        let _ = std::fs::remove_dir_all(&dir);
        let _ = std::fs::create_dir_all(&dir);
        dir
    })
}

/// The scratch directory process `pid` uses (the parent removes a dead
/// child's).
pub fn scratch_dir_of(pid: u32) -> PathBuf {
    let base = if std::path::Path::new("/dev/shm").is_dir() {
        PathBuf::from("/dev/shm")
    } else {
        std::env::temp_dir()
    };
    base.join(format!("cairn-fuzz-{pid}"))
}

/// Removes the scratch directory (the binary calls this before exiting).
pub fn remove_scratch_dir() {
    let _ = std::fs::remove_dir_all(scratch_dir());
}

/// Input bytes read front to back, with defaults once they run out: lets a
/// target take a few selector bytes and hand the rest to the parser.
pub(crate) struct Cursor<'a> {
    data: &'a [u8],
}

impl<'a> Cursor<'a> {
    pub(crate) fn new(data: &'a [u8]) -> Self {
        Cursor { data }
    }

    pub(crate) fn byte(&mut self) -> u8 {
        match self.data.split_first() {
            Some((b, rest)) => {
                self.data = rest;
                *b
            }
            None => 0,
        }
    }

    pub(crate) fn u16(&mut self) -> u16 {
        u16::from_le_bytes([self.byte(), self.byte()])
    }

    /// Up to `n` bytes.
    pub(crate) fn take(&mut self, n: usize) -> &'a [u8] {
        let (head, rest) = self.data.split_at(n.min(self.data.len()));
        self.data = rest;
        head
    }

    pub(crate) fn rest(self) -> &'a [u8] {
        self.data
    }
}
