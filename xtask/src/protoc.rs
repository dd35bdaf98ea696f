//! Makes a `protoc` available to cargo builds of `cairn-tests`.
//!
//! `etcd-client` (used by the cross-process tests and cairn-bench) compiles
//! etcd's .proto files with prost-build, which needs `protoc` either in
//! `$PROTOC` or on `PATH`. CI machines have only the Rust toolchain, so we ship
//! one through the `protoc-bin-vendored` crate.
//!
//! It must go on `PATH`, never into `$PROTOC`: the `raft` crate (a dependency
//! of the server, built in the same cargo invocation by `--workspace`
//! commands) panics when `$PROTOC` names a protoc whose version is not 3.x,
//! which the vendored one is not. Found on `PATH`, raft just falls back to its
//! own bundled protoc, while prost-build happily uses ours.

use std::ffi::OsString;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result};

use crate::util::{find_on_path, target_dir};

/// Prepares `cmd` (a cargo command that may build cairn-tests) so that a
/// `protoc` is on its `PATH`: the user's own if they have one, else the
/// vendored one linked into `target/xtask/bin/`.
pub fn add_protoc_to_path(cmd: &mut Command) -> Result<()> {
    if find_on_path("protoc").is_some() {
        return Ok(());
    }
    let dir = shim_dir()?;
    let mut dirs = vec![dir];
    if let Some(path) = std::env::var_os("PATH") {
        dirs.extend(std::env::split_paths(&path));
    }
    let path: OsString = std::env::join_paths(dirs).context("cannot build PATH")?;
    cmd.env("PATH", path);
    Ok(())
}

/// `target/xtask/bin`, holding `protoc` -> the vendored binary.
fn shim_dir() -> Result<PathBuf> {
    let vendored = protoc_bin_vendored::protoc_bin_path()
        .context("protoc-bin-vendored has no protoc for this platform; install protoc")?;
    let dir = target_dir().join("xtask").join("bin");
    fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let link = dir.join("protoc");
    // A symlink rather than a copy: protoc finds the well-known .proto
    // includes next to its real location (../include), which the vendored
    // crate ships.
    if fs::read_link(&link).ok().as_deref() != Some(vendored.as_path()) {
        replace_link(&vendored, &link)?;
    }
    Ok(dir)
}

fn replace_link(target: &Path, link: &Path) -> Result<()> {
    // Create under a temporary name and rename over the old link, so two
    // xtasks running at once never see a missing protoc.
    let tmp = link.with_file_name(format!("protoc.tmp{}", std::process::id()));
    let _ = fs::remove_file(&tmp);
    std::os::unix::fs::symlink(target, &tmp)
        .with_context(|| format!("cannot link {} to {}", tmp.display(), target.display()))?;
    fs::rename(&tmp, link).with_context(|| format!("cannot create {}", link.display()))?;
    Ok(())
}
