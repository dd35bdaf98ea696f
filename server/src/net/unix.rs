//! Unix domain socket listeners for `unix://` and `unixs://` URLs, as etcd
//! 3.4 serves them.
//!
//! etcd names the socket file by the URL's `host:port`, relative to the
//! working directory (`cairn_config::values::unix_socket_path`). Where an
//! old file is in the way, etcd differs by side: its peer listener deletes
//! whatever is at the path, its client listener fails with "address already
//! in use" even when the file is only left over from a crash. Cairn treats
//! both sides alike and more carefully:
//! - a socket file nobody answers on (left by a crash) is removed and bound
//!   again, so a member restarts after `kill -9`;
//! - a socket file a live process answers on is left alone and the bind
//!   fails with "address already in use" (two members on one socket would
//!   take each other's connections);
//! - anything that is not a socket (a typo naming a data file) is never
//!   deleted: the bind fails and says why.
//!
//! The file's permissions come from the umask, as in etcd; Cairn's umask is
//! 077 (`files::restrict_umask`), so only the owner can connect. A clean
//! stop removes the file (Go's listener does so on close), but only if it
//! is still the socket this process created.

use std::io;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

/// A bound socket file, remembered so a clean stop removes exactly it.
#[derive(Debug, Clone)]
pub struct SocketFile {
    /// Absolute, so a later change of working directory cannot redirect it.
    path: PathBuf,
    dev: u64,
    ino: u64,
}

impl SocketFile {
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Removes the file if it is still the socket this process bound (a
    /// newer process may have replaced it; that one is not ours to delete).
    pub fn remove(&self) {
        match std::fs::symlink_metadata(&self.path) {
            Ok(m) if m.dev() == self.dev && m.ino() == self.ino => {
                if let Err(e) = std::fs::remove_file(&self.path) {
                    tracing::warn!(path = %self.path.display(), error = %e, "cannot remove socket file");
                }
            }
            _ => {}
        }
    }
}

/// Binds a listening unix socket at `path` (see the module docs for what
/// happens to a file already there). Errors read like Go's (`listen unix
/// <path>: bind: address already in use`) plus the reason.
pub async fn bind(path: &str) -> io::Result<(tokio::net::UnixListener, SocketFile)> {
    clear_stale(path).await?;
    let listener = tokio::net::UnixListener::bind(path)?;
    let meta = std::fs::symlink_metadata(path)?;
    let file = SocketFile {
        path: std::path::absolute(path)?,
        dev: meta.dev(),
        ino: meta.ino(),
    };
    Ok((listener, file))
}

/// Removes a socket file left by a process that is gone; refuses to touch
/// a live socket or a file that is not a socket.
async fn clear_stale(path: &str) -> io::Result<()> {
    let meta = match std::fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    if !meta.file_type().is_socket() {
        return Err(io::Error::new(
            io::ErrorKind::AddrInUse,
            format!(
                "bind: address already in use ({path:?} exists and is not a socket; it is left untouched)"
            ),
        ));
    }
    match tokio::time::timeout(PROBE_TIMEOUT, tokio::net::UnixStream::connect(path)).await {
        // Someone answers: a live server owns it.
        Ok(Ok(_)) | Err(_) => Err(io::Error::new(
            io::ErrorKind::AddrInUse,
            format!("bind: address already in use (another process is serving on {path:?})"),
        )),
        Ok(Err(e)) if e.kind() == io::ErrorKind::ConnectionRefused => {
            tracing::warn!(
                path,
                "removing a stale socket file left by a stopped process"
            );
            std::fs::remove_file(path).or_else(|e| {
                if e.kind() == io::ErrorKind::NotFound {
                    Ok(())
                } else {
                    Err(e)
                }
            })
        }
        Ok(Err(e)) => Err(e),
    }
}

/// How long a connection attempt may take to tell a live socket from a
/// stale one. A live listener answers at once (the kernel completes the
/// connection from its backlog); a full backlog blocks, which also means
/// live.
const PROBE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(1);

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn stale_live_and_foreign_files() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("localhost:2379");
        let p = path.to_str().unwrap();

        // Fresh bind; a second bind while the first serves is refused.
        let (l, file) = bind(p).await.unwrap();
        assert!(
            std::fs::symlink_metadata(&path)
                .unwrap()
                .file_type()
                .is_socket()
        );
        let err = bind(p).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::AddrInUse, "{err}");
        assert!(err.to_string().contains("another process"), "{err}");

        // Dropped without removal (as after a crash): the stale file goes.
        drop(l);
        assert!(path.exists());
        let (_l2, file2) = bind(p).await.unwrap();
        file2.remove();
        assert!(!path.exists());
        // Gone already: removing again is quiet.
        file.remove();

        // A regular file is never deleted.
        std::fs::write(&path, b"precious").unwrap();
        let err = bind(p).await.unwrap_err();
        assert!(err.to_string().contains("not a socket"), "{err}");
        assert_eq!(std::fs::read(&path).unwrap(), b"precious");
    }
}
