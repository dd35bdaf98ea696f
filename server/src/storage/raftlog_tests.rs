//! `RaftLog` against raft's `Storage` contract, in milliseconds, on a real
//! fjall directory: what raft reads after appends, overwrites, compaction
//! and snapshots, and what a reopened log holds after each (the restart
//! path every member takes after `kill -9`).

use super::*;
use crate::storage::meta::{self, AppliedState};
use raft::Storage as _;
use std::path::Path;

fn open(dir: &Path) -> RaftLog {
    let db = Db::open(dir).expect("open db");
    let snaps = SnapshotRegistry::new(dir.join("snap"), 1).expect("snapshot registry");
    RaftLog::open(db, Arc::new(snaps)).expect("open raft log")
}

fn entry(index: u64, term: u64) -> Entry {
    Entry {
        index,
        term,
        data: format!("entry {index} of term {term}").into_bytes().into(),
        ..Default::default()
    }
}

/// Entries `from..=to`, each with the term `term_of` gives it.
fn entries(from: u64, to: u64, term_of: impl Fn(u64) -> u64) -> Vec<Entry> {
    (from..=to).map(|i| entry(i, term_of(i))).collect()
}

fn read(log: &RaftLog, low: u64, high: u64, max_bytes: Option<u64>) -> raft::Result<Vec<Entry>> {
    log.entries(low, high, max_bytes, GetEntriesContext::empty(false))
}

fn indexes(es: &[Entry]) -> Vec<u64> {
    es.iter().map(|e| e.index).collect()
}

fn is_compacted(r: raft::Result<impl std::fmt::Debug>) -> bool {
    matches!(r, Err(raft::Error::Store(RaftStorageError::Compacted)))
}

fn is_unavailable(r: raft::Result<impl std::fmt::Debug>) -> bool {
    matches!(r, Err(raft::Error::Store(RaftStorageError::Unavailable)))
}

fn hard_state(term: u64, vote: u64, commit: u64) -> HardState {
    HardState {
        term,
        vote,
        commit,
        ..Default::default()
    }
}

#[test]
fn a_new_log_is_empty_after_index_zero() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = open(dir.path());
    assert_eq!(log.first_index().unwrap(), 1);
    assert_eq!(log.last_index().unwrap(), 0);
    assert_eq!(log.term(0).unwrap(), 0);
    assert!(is_unavailable(log.term(1)));
    assert_eq!(read(&log, 1, 1, None).unwrap(), Vec::<Entry>::new());
    assert!(is_unavailable(read(&log, 1, 2, None)));
    assert!(!log.is_initialized());
}

#[test]
fn appended_entries_read_back_with_their_terms_and_size_limits() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut log = open(dir.path());
    let es = entries(1, 6, |i| i.div_ceil(2));
    log.persist(&es, Some(&hard_state(3, 1, 2)), true).unwrap();
    assert_eq!(
        (log.first_index().unwrap(), log.last_index().unwrap()),
        (1, 6)
    );
    for e in &es {
        assert_eq!(log.term(e.index).unwrap(), e.term);
    }
    assert_eq!(read(&log, 2, 5, None).unwrap(), es[1..4].to_vec());
    assert!(is_unavailable(read(&log, 5, 8, None)));
    // A size limit stops the read early, but never below one entry.
    let one = u64::from(es[0].compute_size());
    assert_eq!(indexes(&read(&log, 1, 7, Some(0)).unwrap()), [1]);
    assert_eq!(indexes(&read(&log, 1, 7, Some(one)).unwrap()), [1]);
    assert_eq!(
        indexes(&read(&log, 1, 7, Some(2 * one + 1)).unwrap()),
        [1, 2]
    );
    assert_eq!(log.initial_state().unwrap().hard_state, hard_state(3, 1, 2));
}

#[test]
fn a_conflicting_suffix_is_replaced_in_memory_and_on_disk() {
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let mut log = open(dir.path());
        log.persist(&entries(1, 5, |_| 1), None, true).unwrap();
        // A new leader's entries at 3 and 4 win over the old 3..=5.
        log.persist(&entries(3, 4, |_| 2), None, true).unwrap();
        assert_eq!(log.last_index().unwrap(), 4);
        assert_eq!(log.term(3).unwrap(), 2);
        assert!(is_unavailable(log.term(5)));
        assert_eq!(read(&log, 1, 5, None).unwrap().len(), 4);
    }
    // The stale entry 5 must not come back after a restart.
    let log = open(dir.path());
    assert_eq!(log.last_index().unwrap(), 4);
    assert_eq!(
        read(&log, 1, 5, None).unwrap(),
        [entries(1, 2, |_| 1), entries(3, 4, |_| 2)].concat()
    );
}

#[test]
fn appends_with_a_gap_or_below_the_truncation_point_are_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut log = open(dir.path());
    log.persist(&entries(1, 3, |_| 1), None, true).unwrap();
    assert!(log.persist(&entries(5, 6, |_| 1), None, true).is_err());
    log.compact(2).unwrap();
    assert!(log.persist(&entries(2, 4, |_| 1), None, true).is_err());
    // Nothing changed.
    assert_eq!(
        (log.first_index().unwrap(), log.last_index().unwrap()),
        (3, 3)
    );
}

#[test]
fn compaction_moves_the_first_index_and_survives_a_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let mut log = open(dir.path());
        log.persist(&entries(1, 10, |i| 1 + i / 4), None, true)
            .unwrap();
        log.compact(6).unwrap();
        // Compacting to where the log already starts is a no-op.
        log.compact(3).unwrap();
        assert!(log.compact(11).is_err(), "beyond the last index");
    }
    let log = open(dir.path());
    assert_eq!(
        (log.first_index().unwrap(), log.last_index().unwrap()),
        (7, 10)
    );
    // The entry at the truncation point keeps its term; before it, nothing.
    assert_eq!(log.term(6).unwrap(), 2);
    assert!(is_compacted(log.term(5)));
    assert!(is_compacted(read(&log, 6, 8, None)));
    assert_eq!(indexes(&read(&log, 7, 11, None).unwrap()), [7, 8, 9, 10]);
}

#[test]
fn reads_past_the_cache_come_from_disk() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut log = open(dir.path());
    let total = CACHE_MAX_ENTRIES as u64 + 1000;
    for chunk in (1..=total).collect::<Vec<_>>().chunks(4096) {
        let es = entries(chunk[0], chunk[chunk.len() - 1], |_| 1);
        log.persist(&es, None, false).unwrap();
    }
    // The oldest entries fell out of the cache.
    assert!(log.cached(1).is_none());
    assert!(log.cached(total).is_some());
    let es = read(&log, 1, 2001, None).unwrap();
    assert_eq!(indexes(&es), (1..=2000).collect::<Vec<_>>());
    // A read spanning disk and cache stays contiguous.
    let start = total - CACHE_MAX_ENTRIES as u64 - 10;
    let es = read(&log, start, start + 40, None).unwrap();
    assert_eq!(indexes(&es), (start..start + 40).collect::<Vec<_>>());
}

#[test]
fn a_snapshot_replaces_the_log_and_lifts_the_hard_state() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut md = SnapshotMetadata {
        index: 50,
        term: 7,
        ..Default::default()
    };
    md.mut_conf_state().voters = vec![1, 2, 3];
    {
        let mut log = open(dir.path());
        log.persist(&entries(1, 20, |_| 2), Some(&hard_state(2, 1, 15)), true)
            .unwrap();
        log.mark_installing(Path::new("/snap/0000000000000032.snap"))
            .unwrap();
        log.apply_snapshot(&md).unwrap();
        assert_eq!(
            (log.first_index().unwrap(), log.last_index().unwrap()),
            (51, 50)
        );
        assert_eq!(log.term(50).unwrap(), 7);
        let hs = log.hard_state();
        assert_eq!((hs.term, hs.vote, hs.commit), (7, 1, 50));
        assert_eq!(
            log.initial_state().unwrap().conf_state.voters,
            vec![1, 2, 3]
        );
    }
    let mut log = open(dir.path());
    assert_eq!(
        (log.first_index().unwrap(), log.last_index().unwrap()),
        (51, 50)
    );
    assert!(is_compacted(log.term(20)));
    assert_eq!(log.hard_state().commit, 50);
    // Installed: a restart does not redo it.
    assert_eq!(interrupted_install(&log.db).unwrap(), None);
    // Replication resumes right after the snapshot.
    log.persist(&entries(51, 52, |_| 7), None, true).unwrap();
    assert_eq!(indexes(&read(&log, 51, 53, None).unwrap()), [51, 52]);
}

#[test]
fn an_interrupted_snapshot_install_is_found_on_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = Path::new("/data/member/snap/000000000000002a.snap");
    {
        let mut log = open(dir.path());
        log.persist(&entries(1, 3, |_| 1), None, true).unwrap();
        log.mark_installing(path).unwrap();
        // Crash before apply_snapshot.
    }
    let log = open(dir.path());
    assert_eq!(interrupted_install(&log.db).unwrap().as_deref(), Some(path));
    // The log itself is as it was.
    assert_eq!(log.last_index().unwrap(), 3);
}

#[test]
fn restart_lifts_the_commit_index_to_what_the_state_machine_applied() {
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let mut log = open(dir.path());
        log.persist(&entries(1, 8, |_| 1), Some(&hard_state(1, 1, 3)), true)
            .unwrap();
        // The commit index of a LightReady is not synced; the state
        // machine got further (and recorded it) before the crash.
        let mut batch = log.db.db.batch();
        meta::put_applied(&mut batch, &log.db, AppliedState { index: 6, term: 1 });
        batch.commit().unwrap();
    }
    let log = open(dir.path());
    assert_eq!(log.hard_state().commit, 6);
    assert_eq!((log.hard_state().term, log.hard_state().vote), (1, 1));
}

#[test]
fn set_commit_only_moves_forward() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut log = open(dir.path());
    log.persist(&entries(1, 5, |_| 1), Some(&hard_state(1, 0, 2)), true)
        .unwrap();
    log.set_commit(4).unwrap();
    log.set_commit(3).unwrap();
    assert_eq!(log.hard_state().commit, 4);
}

#[test]
fn a_bootstrapped_position_and_identity_read_back() {
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let db = Db::open(dir.path()).unwrap();
        let mut batch = db.db.batch();
        put_initial_position(&mut batch, &db, 3, 1).unwrap();
        put_identity(&mut batch, &db, 0xaa, 0xbb);
        batch.commit().unwrap();
    }
    let log = open(dir.path());
    assert_eq!(
        (log.first_index().unwrap(), log.last_index().unwrap()),
        (4, 3)
    );
    assert_eq!(log.term(3).unwrap(), 1);
    assert_eq!(log.hard_state().commit, 3);
    assert_eq!(identity(&log.db).unwrap(), Some((0xaa, 0xbb)));
}

/// The journal's tail was cut on recovery after `meta` had been flushed
/// past the cut: the state machine applied entries the log lost. The log
/// restarts after the applied entry (raft would stop at a commit index
/// beyond its last entry), and stays so across another restart.
#[test]
fn a_log_that_lost_applied_entries_restarts_after_them() {
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let mut log = open(dir.path());
        log.persist(&entries(1, 5, |_| 1), Some(&hard_state(1, 1, 5)), true)
            .unwrap();
        let mut batch = log.db.db.batch();
        meta::put_applied(&mut batch, &log.db, AppliedState { index: 8, term: 2 });
        batch.commit().unwrap();
    }
    for _ in 0..2 {
        let log = open(dir.path());
        assert_eq!(
            (log.first_index().unwrap(), log.last_index().unwrap()),
            (9, 8)
        );
        assert_eq!(log.term(8).unwrap(), 2);
        assert!(is_compacted(log.term(5)));
        let hs = log.hard_state();
        assert_eq!((hs.term, hs.commit), (2, 8));
        let state = log.initial_state().unwrap();
        assert_eq!(state.hard_state.commit, 8);
    }
}
