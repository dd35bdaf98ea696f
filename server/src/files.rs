//! Small file-system helpers shared by the parts that watch files (config
//! reload, TLS files).

use std::path::{Path, PathBuf};

/// The folders to watch for a config file: its own folder, and — when it is
/// a symlink — the folder of its target, so swapping either is noticed.
pub fn watch_dirs(file: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let Some(parent) = file.parent() {
        out.push(if parent.as_os_str().is_empty() {
            PathBuf::from(".")
        } else {
            parent.to_path_buf()
        });
    }
    if let Ok(target) = std::fs::canonicalize(file)
        && let Some(parent) = target.parent()
    {
        out.push(parent.to_path_buf());
    }
    out
}
