//! Where log lines go (`--log-outputs`): stderr, stdout and files.
//!
//! Files are opened for appending (created `0600` under Cairn's umask if
//! missing). For logrotate, SIGUSR1 reopens every file by its path: rename
//! the file, then signal the process, and new lines go to a fresh file
//! under the old name. SIGHUP is taken (configuration reload). A file that
//! cannot be reopened keeps receiving lines at its old handle, so a failed
//! reopen loses nothing.

use parking_lot::Mutex;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tracing_subscriber::fmt::MakeWriter;

/// The streams and files log lines are written to, from `--log-outputs`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Outputs {
    pub stderr: bool,
    pub stdout: bool,
    /// Files to append to, each once, in the order given.
    pub files: Vec<PathBuf>,
}

impl Outputs {
    /// From the validated `--log-outputs` items. etcd's `default` is
    /// stderr (or journald under systemd with zap; Cairn has no journald
    /// writer, and systemd collects stderr anyway); any item other than
    /// `default`, `stderr` and `stdout` is a file path, as in etcd. A line
    /// goes to each stream or file named once, so `default,stderr` writes
    /// it once.
    pub fn from_config(items: &[String]) -> Outputs {
        let mut out = Outputs::default();
        for item in items {
            match item.as_str() {
                "stdout" => out.stdout = true,
                "stderr" | "default" => out.stderr = true,
                path => {
                    let path = PathBuf::from(path);
                    if !out.files.contains(&path) {
                        out.files.push(path);
                    }
                }
            }
        }
        if !out.stdout && !out.stderr && out.files.is_empty() {
            out.stderr = true;
        }
        out
    }
}

/// A log file could not be opened.
#[derive(Debug, thiserror::Error)]
#[error("cannot open log output {path:?}: {source}")]
pub struct OpenError {
    pub path: PathBuf,
    #[source]
    pub source: std::io::Error,
}

fn open_append(path: &Path) -> Result<File, OpenError> {
    OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(|source| OpenError {
            path: path.to_path_buf(),
            source,
        })
}

struct LogFile {
    path: PathBuf,
    file: Mutex<File>,
}

/// The open outputs; shared by every writer the formatter makes.
pub struct Sinks {
    stderr: bool,
    stdout: bool,
    files: Vec<LogFile>,
}

impl Sinks {
    /// Opens every file (all or nothing: the error names the first that
    /// failed).
    pub fn open(outputs: &Outputs) -> Result<Sinks, OpenError> {
        let files = outputs
            .files
            .iter()
            .map(|p| {
                Ok(LogFile {
                    path: p.clone(),
                    file: Mutex::new(open_append(p)?),
                })
            })
            .collect::<Result<Vec<_>, OpenError>>()?;
        Ok(Sinks {
            stderr: outputs.stderr,
            stdout: outputs.stdout,
            files,
        })
    }

    /// Reopens every file by its path (after logrotate renamed it). Returns
    /// how many were reopened, or the errors of those that were not (they
    /// keep their old handle).
    pub fn reopen(&self) -> Result<usize, Vec<OpenError>> {
        let mut errors = Vec::new();
        for f in &self.files {
            match open_append(&f.path) {
                Ok(new) => *f.file.lock() = new,
                Err(e) => errors.push(e),
            }
        }
        if errors.is_empty() {
            Ok(self.files.len())
        } else {
            Err(errors)
        }
    }

    fn write_line(&self, line: &[u8]) {
        // A closed stream or a full disk must not take the process down:
        // the line is lost either way.
        if self.stderr {
            let _ = std::io::stderr().lock().write_all(line);
        }
        if self.stdout {
            let mut out = std::io::stdout().lock();
            let _ = out.write_all(line);
            // stdout is line-buffered only on a terminal; flush so a log
            // collector reading a pipe sees each line as it happens.
            let _ = out.flush();
        }
        for f in &self.files {
            // One `write` of the whole line on an O_APPEND file: lines from
            // threads (and processes) sharing the file do not interleave.
            let _ = f.file.lock().write_all(line);
        }
    }
}

/// The `MakeWriter` over shared [`Sinks`].
#[derive(Clone)]
pub struct SinkWriter(pub Arc<Sinks>);

impl<'a> MakeWriter<'a> for SinkWriter {
    type Writer = LineWriter;

    fn make_writer(&'a self) -> LineWriter {
        LineWriter {
            sinks: Arc::clone(&self.0),
            buf: Vec::new(),
        }
    }
}

/// Collects one formatted event and writes it to each output in one call
/// when dropped, so lines from different threads never interleave (the
/// formatter may write an event in several pieces).
pub struct LineWriter {
    sinks: Arc<Sinks>,
    buf: Vec<u8>,
}

impl Write for LineWriter {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.buf.extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Drop for LineWriter {
    fn drop(&mut self) {
        if !self.buf.is_empty() {
            self.sinks.write_line(&self.buf);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn items(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| (*s).to_string()).collect()
    }

    #[test]
    fn outputs_from_config() {
        let only_stderr = Outputs {
            stderr: true,
            ..Outputs::default()
        };
        assert_eq!(Outputs::from_config(&items(&["default"])), only_stderr);
        assert_eq!(
            Outputs::from_config(&items(&["default", "stderr"])),
            only_stderr
        );
        assert_eq!(
            Outputs::from_config(&items(&["stdout"])),
            Outputs {
                stdout: true,
                ..Outputs::default()
            }
        );
        assert_eq!(
            Outputs::from_config(&items(&["stdout", "default"])),
            Outputs {
                stderr: true,
                stdout: true,
                files: vec![]
            }
        );
        assert_eq!(Outputs::from_config(&[]), only_stderr);
        assert_eq!(
            Outputs::from_config(&items(&["/var/log/a.log", "journal", "/var/log/a.log"])),
            Outputs {
                files: vec!["/var/log/a.log".into(), "journal".into()],
                ..Outputs::default()
            }
        );
    }

    #[test]
    fn files_are_appended_to_and_reopened_after_a_rename() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cairn.log");
        std::fs::write(&path, "earlier\n").unwrap();
        let sinks = Arc::new(
            Sinks::open(&Outputs {
                files: vec![path.clone()],
                ..Outputs::default()
            })
            .unwrap(),
        );
        let writer = SinkWriter(Arc::clone(&sinks));
        let mut w = writer.make_writer();
        w.write_all(b"one ").unwrap();
        w.write_all(b"line\n").unwrap();
        drop(w);
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            "earlier\none line\n"
        );

        // logrotate: rename, then signal (here: call reopen).
        let rotated = dir.path().join("cairn.log.1");
        std::fs::rename(&path, &rotated).unwrap();
        writer.make_writer().write_all(b"before reopen\n").unwrap();
        assert_eq!(sinks.reopen().unwrap(), 1);
        writer.make_writer().write_all(b"after reopen\n").unwrap();
        assert_eq!(
            std::fs::read_to_string(&rotated).unwrap(),
            "earlier\none line\nbefore reopen\n"
        );
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "after reopen\n");

        // A reopen that fails keeps the old handle: nothing is lost.
        std::fs::remove_file(&path).unwrap();
        std::fs::create_dir(&path).unwrap();
        let errors = sinks.reopen().unwrap_err();
        assert_eq!(errors.len(), 1);
        assert!(errors[0].to_string().contains("cairn.log"), "{}", errors[0]);
        writer.make_writer().write_all(b"still here\n").unwrap();
        let orphan = std::fs::read_dir(dir.path()).unwrap().count();
        assert_eq!(orphan, 2);
    }

    #[test]
    fn a_missing_folder_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("no/such/dir/cairn.log");
        let e = Sinks::open(&Outputs {
            files: vec![path],
            ..Outputs::default()
        })
        .err()
        .unwrap();
        let text = e.to_string();
        assert!(text.starts_with("cannot open log output"), "{text}");
        assert!(text.contains("no/such/dir/cairn.log"), "{text}");
    }
}
