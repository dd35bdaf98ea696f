//! A wall clock of its own per member, jumped while the member runs.
//!
//! Each member is started with libfaketime preloaded and a file of its own
//! naming its offset (`+0`, `+7`, `-4`: seconds). Writing the file jumps
//! that member's wall clock (`CLOCK_REALTIME`, what `SystemTime` reads)
//! within about two seconds — libfaketime rereads it once a second — and
//! leaves its monotonic clock alone, as an NTP step does on a real machine.
//!
//! It shifts only programs that read the clock through libc: Cairn does;
//! Go programs (etcd) read it through the vDSO and are not shifted, so
//! [`Clocks::new`] refuses for them rather than pretend.

use std::path::{Path, PathBuf};

use crate::Target;

/// Where Debian's `libfaketime` package puts the thread-safe library.
pub const LIBFAKETIME: &str = "/usr/lib/x86_64-linux-gnu/faketime/libfaketimeMT.so.1";
/// Seconds between libfaketime's rereads of the offset file.
const REREAD_SECS: &str = "1";

pub struct Clocks {
    dir: tempfile::TempDir,
    members: usize,
}

impl Clocks {
    /// Offset files for `members` members, all at `+0`. Errors say why the
    /// clocks cannot be shifted here.
    pub fn new(members: usize, target: Target) -> Result<Clocks, String> {
        if target != Target::Cairn {
            return Err(
                "etcd is a Go program: it reads the wall clock through the vDSO, \
                        which a preloaded libfaketime cannot shift (and a real clock jump \
                        would hit the whole machine)"
                    .into(),
            );
        }
        if !Path::new(LIBFAKETIME).exists() {
            return Err(format!(
                "{LIBFAKETIME} is missing (apt-get install libfaketime)"
            ));
        }
        let dir = tempfile::Builder::new()
            .prefix("cairn-clocks-")
            .tempdir()
            .map_err(|e| e.to_string())?;
        let clocks = Clocks { dir, members };
        for m in 0..members {
            clocks.set(m, 0).map_err(|e| e.to_string())?;
        }
        Ok(clocks)
    }

    fn file(&self, m: usize) -> PathBuf {
        self.dir.path().join(format!("m{}.offset", m + 1))
    }

    /// `Options::member_env` entries that give every member its clock.
    pub fn member_env(&self) -> Vec<(usize, String, String)> {
        let mut env = Vec::new();
        for m in 0..self.members {
            let file = self.file(m).display().to_string();
            for (k, v) in [
                ("LD_PRELOAD", LIBFAKETIME),
                ("FAKETIME_TIMESTAMP_FILE", file.as_str()),
                ("FAKETIME_CACHE_DURATION", REREAD_SECS),
                // Timeouts, tick and lease timers run on the monotonic
                // clock, which a wall-clock step does not move.
                ("FAKETIME_DONT_FAKE_MONOTONIC", "1"),
                // File times come from the kernel's clock, not the process's.
                ("NO_FAKE_STAT", "1"),
            ] {
                env.push((m, k.to_string(), v.to_string()));
            }
        }
        env
    }

    /// Jumps member `m`'s wall clock to `offset_s` seconds from the real one.
    pub fn set(&self, m: usize, offset_s: i64) -> std::io::Result<()> {
        // Written aside and renamed: libfaketime must never read half a line.
        let tmp = self.dir.path().join(format!("m{}.tmp", m + 1));
        std::fs::write(&tmp, format!("{offset_s:+}\n"))?;
        std::fs::rename(&tmp, self.file(m))
    }
}
