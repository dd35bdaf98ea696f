//! Small file-system helpers: the folders to watch for a file (config
//! reload, TLS files), and private data-dir permissions.

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

/// The data dir's mode, as etcd's (`fileutil.PrivateDirMode`).
pub const PRIVATE_DIR_MODE: u32 = 0o700;
/// The mode of the files in it, as etcd's (`fileutil.PrivateFileMode`).
pub const PRIVATE_FILE_MODE: u32 = 0o600;
/// Entries looked at when checking an existing data dir's permissions (a
/// data dir holds a few hundred files; the bound keeps a pathological one
/// from delaying the start).
const MAX_PERMISSION_CHECKS: usize = 10_000;

/// Makes every file and folder this process creates from now on private to
/// its user (0600 / 0700): the storage engine creates its own files, and a
/// umask is the one way to reach them all. An operator's `UMask=` in the
/// unit only narrows this further.
pub fn restrict_umask() {
    rustix::process::umask(rustix::fs::Mode::from_raw_mode(0o077));
}

/// Creates the data dir 0700 if it does not exist; if it does, says (in
/// etcd's words) when it or anything in it is open to other users. Existing
/// permissions are not changed: that is the operator's call, as in etcd.
pub fn prepare_data_dir(dir: &Path) -> std::io::Result<Vec<String>> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    if !dir.exists() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(PRIVATE_DIR_MODE)
            .create(dir)?;
        return Ok(Vec::new());
    }
    let mut warnings = Vec::new();
    let mode = std::fs::metadata(dir)?.permissions().mode() & 0o777;
    if mode & !PRIVATE_DIR_MODE != 0 {
        warnings.push(format!(
            "check file permission: directory {:?} exist, but the permission is {:?}. \
             The recommended permission is \"-rwx------\" to prevent possible unprivileged \
             access to the data.",
            dir.display().to_string(),
            mode_string(mode, true)
        ));
    }
    let (wide, first) = wider_than_private(dir);
    if let Some(first) = first {
        warnings.push(format!(
            "{wide} file(s) or folder(s) in the data dir are readable or writable by other \
             users (first: {}); Cairn creates them 0600 / 0700 as etcd does. \
             `chmod -R go-rwx {}` makes them private.",
            first.display(),
            dir.display()
        ));
    }
    Ok(warnings)
}

/// Counts entries under `dir` with group or other permission bits, and
/// names the first one.
fn wider_than_private(dir: &Path) -> (usize, Option<PathBuf>) {
    use std::os::unix::fs::PermissionsExt;
    let mut stack = vec![dir.to_path_buf()];
    let mut seen = 0usize;
    let mut wide = 0usize;
    let mut first = None;
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        for ent in rd.flatten() {
            seen += 1;
            if seen > MAX_PERMISSION_CHECKS {
                return (wide, first);
            }
            let Ok(md) = ent.metadata() else { continue };
            if md.permissions().mode() & 0o077 != 0 {
                wide += 1;
                first.get_or_insert_with(|| ent.path());
            }
            if md.is_dir() {
                stack.push(ent.path());
            }
        }
    }
    (wide, first)
}

/// `-rwxr-xr-x`-style, as Go prints an `os.FileMode` (etcd's message).
fn mode_string(mode: u32, dir: bool) -> String {
    let mut s = String::from(if dir { "d" } else { "-" });
    for shift in [6, 3, 0] {
        let bits = (mode >> shift) & 7;
        s.push(if bits & 4 != 0 { 'r' } else { '-' });
        s.push(if bits & 2 != 0 { 'w' } else { '-' });
        s.push(if bits & 1 != 0 { 'x' } else { '-' });
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mode_strings_read_like_go() {
        assert_eq!(mode_string(0o755, true), "drwxr-xr-x");
        assert_eq!(mode_string(0o600, false), "-rw-------");
    }
}
