//! `--wal-dir`: which layout a member was created with, and the refusal to
//! start it with the other one.
//!
//! A member created with `--wal-dir` keeps its raft log in
//! `<wal-dir>/raft`; one created without keeps it in `<data-dir>/member/db`
//! with the state machine. Starting a member with the other layout would
//! open an empty raft log next to a state machine that needs the old one
//! (or the reverse): the member would lose its log, so it is refused with
//! the flag to use. The layout is recorded in `<data-dir>/member/wal-dir`
//! (the raft log's folder at creation), written before either database.

use super::{Error, Result};
use std::path::{Path, PathBuf};

/// The raft log's database folder inside `--wal-dir`.
pub const WAL_DB_DIR: &str = "raft";
/// The file in the member folder that records the `--wal-dir` a member was
/// created with.
const MARKER: &str = "wal-dir";

fn recorded(member_dir: &Path) -> Result<Option<PathBuf>> {
    let marker = member_dir.join(MARKER);
    match std::fs::read_to_string(&marker) {
        Ok(text) => Ok(Some(PathBuf::from(text.trim_end_matches('\n')))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(Error::io(marker, e)),
    }
}

/// Checks that `wal_dir` (`--wal-dir`, `None` when unset) is the layout
/// the member in `member_dir` was created with, and records it for a new
/// member. Call before opening the databases.
pub fn check_layout(member_dir: &Path, wal_dir: Option<&Path>) -> Result<()> {
    let member_db = member_dir.join("db");
    let has_data = member_db.exists();
    let recorded = recorded(member_dir)?;
    match (wal_dir, recorded) {
        (None, None) => Ok(()),
        (None, Some(was)) => Err(Error::Layout(format!(
            "member {} was created with --wal-dir={}: its raft log is there; start it with --wal-dir={}",
            member_dir.display(),
            was.display(),
            was.display()
        ))),
        (Some(w), recorded) => {
            let log_db = w.join(WAL_DB_DIR);
            if has_data && recorded.is_none() {
                return Err(Error::Layout(format!(
                    "member {} was created without --wal-dir: its raft log is in {}; start it without --wal-dir (given: {})",
                    member_dir.display(),
                    member_db.display(),
                    w.display()
                )));
            }
            if has_data && !log_db.exists() {
                return Err(Error::Layout(format!(
                    "--wal-dir {} holds no raft log ({} is missing) but member {} has data; its log was created in {}: point --wal-dir there",
                    w.display(),
                    log_db.display(),
                    member_dir.display(),
                    recorded.as_deref().unwrap_or(w).display()
                )));
            }
            if !has_data && log_db.exists() && recorded.is_some() {
                // The log's database is created first: a member killed
                // before its own database existed has no entries yet.
                return Ok(());
            }
            if !has_data && log_db.exists() {
                return Err(Error::Layout(format!(
                    "--wal-dir {} holds a raft log ({}) but the data dir has no member data ({} is missing); remove one or the other",
                    w.display(),
                    log_db.display(),
                    member_db.display()
                )));
            }
            if recorded.is_none() {
                record(member_dir, w)?;
            }
            Ok(())
        }
    }
}

/// Writes the marker durably (file, then its folder).
fn record(member_dir: &Path, wal_dir: &Path) -> Result<()> {
    std::fs::create_dir_all(member_dir).map_err(|e| Error::io(member_dir, e))?;
    let marker = member_dir.join(MARKER);
    let tmp = member_dir.join("wal-dir.tmp");
    {
        use std::io::Write;
        let mut f = std::fs::File::create(&tmp).map_err(|e| Error::io(&tmp, e))?;
        writeln!(f, "{}", wal_dir.display()).map_err(|e| Error::io(&tmp, e))?;
        f.sync_all().map_err(|e| Error::io(&tmp, e))?;
    }
    std::fs::rename(&tmp, &marker).map_err(|e| Error::io(&marker, e))?;
    super::snapfile::sync_dir(member_dir)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::Db;

    #[test]
    fn a_member_keeps_the_layout_it_was_created_with() {
        let dir = tempfile::tempdir().unwrap();
        let member = dir.path().join("data/member");
        let wal = dir.path().join("wal");
        // New member with a WAL dir: recorded, both databases made.
        check_layout(&member, Some(&wal)).unwrap();
        let db = Db::open_with_wal(&member, Some(&wal)).unwrap();
        assert!(db.has_separate_wal());
        db.raft.insert(b"k", b"v").unwrap();
        db.sync().unwrap();
        drop(db);
        assert!(wal.join(WAL_DB_DIR).exists());
        // Same flags: fine, and the entry is there.
        check_layout(&member, Some(&wal)).unwrap();
        let db = Db::open_with_wal(&member, Some(&wal)).unwrap();
        assert_eq!(db.raft.get(b"k").unwrap().as_deref(), Some(&b"v"[..]));
        assert!(
            db.db
                .keyspace("raft", Default::default)
                .unwrap()
                .get(b"k")
                .unwrap()
                .is_none()
        );
        drop(db);
        // Without the flag: refused, naming it.
        let e = check_layout(&member, None).unwrap_err().to_string();
        assert!(e.contains("was created with --wal-dir="), "{e}");
        assert!(e.contains(&wal.display().to_string()), "{e}");
        // A WAL dir without the log: refused.
        let elsewhere = dir.path().join("elsewhere");
        let e = check_layout(&member, Some(&elsewhere))
            .unwrap_err()
            .to_string();
        assert!(e.contains("holds no raft log"), "{e}");
        // The log moved with the flag: fine.
        std::fs::rename(&wal, &elsewhere).unwrap();
        check_layout(&member, Some(&elsewhere)).unwrap();
    }

    #[test]
    fn a_member_without_a_wal_dir_refuses_one() {
        let dir = tempfile::tempdir().unwrap();
        let member = dir.path().join("data/member");
        check_layout(&member, None).unwrap();
        drop(Db::open(&member).unwrap());
        let wal = dir.path().join("wal");
        let e = check_layout(&member, Some(&wal)).unwrap_err().to_string();
        assert!(e.contains("was created without --wal-dir"), "{e}");
        assert!(!wal.exists());
        check_layout(&member, None).unwrap();
    }

    #[test]
    fn a_leftover_log_without_member_data_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let wal = dir.path().join("wal");
        let first = dir.path().join("one/member");
        check_layout(&first, Some(&wal)).unwrap();
        drop(Db::open_with_wal(&first, Some(&wal)).unwrap());
        // A fresh data dir pointed at the old WAL dir.
        let fresh = dir.path().join("two/member");
        let e = check_layout(&fresh, Some(&wal)).unwrap_err().to_string();
        assert!(e.contains("holds a raft log"), "{e}");
    }
}
