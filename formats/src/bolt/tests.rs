//! Writer/reader round trips and hostile-input checks on files this crate
//! writes. (Files real etcd writes are tested in `tests/real_etcd.rs`.)

use super::page::{FLAG_BRANCH, PAGE_HEADER_BYTES};
use super::*;
use crate::snapshot;
use bytes::Bytes;

type Buckets = Vec<(Vec<u8>, Vec<(Vec<u8>, Vec<u8>)>)>;

fn sample() -> Buckets {
    let big: Vec<u8> = (0..(1 << 20) + 123).map(|i| (i % 251) as u8).collect();
    vec![
        (b"a-empty".to_vec(), vec![]),
        (
            b"b-small".to_vec(),
            vec![(b"k".to_vec(), b"v".to_vec()), (b"l".to_vec(), vec![])],
        ),
        (
            b"c-many".to_vec(),
            (0..5000u32)
                .map(|i| {
                    (
                        format!("key{i:06}").into_bytes(),
                        format!("value-{i}").repeat(3).into_bytes(),
                    )
                })
                .collect(),
        ),
        (
            b"d-big".to_vec(),
            vec![
                (b"before".to_vec(), b"x".to_vec()),
                (b"big".to_vec(), big),
                (b"zafter".to_vec(), b"y".to_vec()),
            ],
        ),
        // Just over the inline limit: its own leaf page.
        (
            b"e-quarter".to_vec(),
            (0..30u8).map(|i| (vec![b'q', i], vec![i; 20])).collect(),
        ),
    ]
}

fn write(path: &std::path::Path, buckets: &Buckets) -> WriteSummary {
    let mut w = BoltWriter::create(path).unwrap();
    for (name, kvs) in buckets {
        w.begin_bucket(name).unwrap();
        for (k, v) in kvs {
            w.put(k, v).unwrap();
        }
    }
    w.finish().unwrap()
}

fn read_all(r: &BoltReader) -> Result<Buckets, BoltError> {
    let mut out = Vec::new();
    for top in r.cursor(&r.root()) {
        let top = top?;
        let b = r.open_bucket(&top)?;
        let mut kvs = Vec::new();
        for e in r.cursor(&b) {
            let e = e?;
            kvs.push((e.key.to_vec(), e.value.to_vec()));
        }
        out.push((top.key.to_vec(), kvs));
    }
    Ok(out)
}

#[test]
fn round_trip_through_file_and_memory() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db");
    let buckets = sample();
    let summary = write(&path, &buckets);
    let len = std::fs::metadata(&path).unwrap().len();
    assert_eq!(len, summary.size_bytes);
    assert_eq!(summary.size_bytes, summary.page_count * 4096);

    let r = BoltReader::open(&path).unwrap();
    assert_eq!(r.meta().txid, summary.txid);
    assert_eq!(r.active_meta_page(), 0);
    assert_eq!(r.meta().freelist, 2);
    r.check().unwrap();
    assert_eq!(read_all(&r).unwrap(), buckets);
    assert_eq!(snapshot::status(&r).unwrap(), summary.status);
    assert_eq!(summary.status.total_key, 5 + 5000 + 30);

    let m = BoltReader::from_bytes(Bytes::from(std::fs::read(&path).unwrap()), "mem").unwrap();
    assert_eq!(read_all(&m).unwrap(), buckets);

    // Lookups, through branch pages and inline buckets.
    let many = r.bucket(b"c-many").unwrap().unwrap();
    for i in [0u32, 1, 2499, 4999] {
        let v = r
            .get(&many, format!("key{i:06}").as_bytes())
            .unwrap()
            .unwrap();
        assert_eq!(v, format!("value-{i}").repeat(3).as_bytes());
    }
    assert_eq!(r.get(&many, b"key005000").unwrap(), None);
    assert_eq!(r.get(&many, b"a").unwrap(), None);
    let small = r.bucket(b"b-small").unwrap().unwrap();
    assert_eq!(small.root_page(), None, "small buckets are inline");
    assert_eq!(r.get(&small, b"l").unwrap().unwrap(), Bytes::new());
    assert!(r.bucket(b"nope").unwrap().is_none());
    assert!(
        r.bucket(b"e-quarter")
            .unwrap()
            .unwrap()
            .root_page()
            .is_some()
    );
}

#[test]
fn writer_rejects_bad_input() {
    let dir = tempfile::tempdir().unwrap();
    let mut w = BoltWriter::create(dir.path().join("db")).unwrap();
    assert!(matches!(w.put(b"k", b"v"), Err(BoltError::BadInput { .. })));
    w.begin_bucket(b"b").unwrap();
    w.put(b"k2", b"v").unwrap();
    let e = w.put(b"k1", b"v").unwrap_err();
    assert!(e.to_string().contains("strictly ascend"), "{e}");
    assert!(w.put(b"k2", b"v").is_err());
    assert!(w.put(b"", b"v").is_err());
    assert!(w.begin_bucket(b"a").is_err());
    assert!(w.begin_bucket(b"b").is_err());
    w.begin_bucket(b"c").unwrap();
}

/// Finds the first page (below `page_count`) with the given flags.
fn find_page(bytes: &[u8], flags: u16) -> Option<usize> {
    (3..bytes.len() / 4096).find(|&p| {
        let h = &bytes[p * 4096..];
        u16::from_le_bytes([h[8], h[9]]) == flags
    })
}

fn open_mem(bytes: Vec<u8>) -> Result<BoltReader, BoltError> {
    BoltReader::from_bytes(Bytes::from(bytes), "corrupt")
}

#[test]
fn damaged_files_give_typed_errors() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db");
    write(&path, &sample());
    let good = std::fs::read(&path).unwrap();

    // Truncated: the meta page says more pages than there are bytes.
    let e = open_mem(good[..good.len() - 4096].to_vec()).err().unwrap();
    assert!(
        matches!(e, BoltError::Truncated { meta_page: 0, .. }),
        "{e}"
    );
    assert!(matches!(
        open_mem(good[..100].to_vec()),
        Err(BoltError::TooSmall { .. })
    ));

    // A bad meta 0 falls back to meta 1; both bad is an error naming both.
    let mut b = good.clone();
    b[70] ^= 1; // inside meta 0's txid
    let r = open_mem(b.clone()).unwrap();
    assert_eq!(r.active_meta_page(), 1);
    assert_eq!(read_all(&r).unwrap(), sample());
    b[4096 + 16] ^= 1; // meta 1's magic
    match open_mem(b).err().unwrap() {
        BoltError::NoValidMeta { meta0, meta1, .. } => {
            assert!(matches!(meta0, MetaProblem::Checksum { .. }), "{meta0}");
            assert!(matches!(meta1, MetaProblem::BadMagic(_)), "{meta1}");
        }
        e => panic!("{e}"),
    }

    // A branch whose child is itself: a cycle.
    let mut b = good.clone();
    let p = find_page(&b, FLAG_BRANCH).unwrap();
    let child = p * 4096 + PAGE_HEADER_BYTES + 8;
    b[child..child + 8].copy_from_slice(&(p as u64).to_le_bytes());
    let e = read_all(&open_mem(b).unwrap()).unwrap_err();
    assert!(matches!(e, BoltError::Cycle { .. }), "{e}");

    // A child beyond the pages in use.
    let mut b = good.clone();
    b[child..child + 8].copy_from_slice(&1_000_000u64.to_le_bytes());
    let e = read_all(&open_mem(b).unwrap()).unwrap_err();
    assert!(
        matches!(
            e,
            BoltError::PageOutOfRange {
                page: 1_000_000,
                ..
            }
        ),
        "{e}"
    );

    // A leaf element whose key runs off the page.
    let mut b = good.clone();
    let leaf = find_page(&b, super::page::FLAG_LEAF).unwrap();
    let ksize = leaf * 4096 + PAGE_HEADER_BYTES + 8;
    b[ksize..ksize + 4].copy_from_slice(&60_000u32.to_le_bytes());
    let e = read_all(&open_mem(b).unwrap()).unwrap_err();
    assert!(matches!(e, BoltError::BadElement { .. }), "{e}");

    // Swapped leaf keys: out of order.
    let mut b = good.clone();
    let key0 = leaf * 4096
        + PAGE_HEADER_BYTES
        + 16 * usize::from(u16::from_le_bytes([
            b[leaf * 4096 + 10],
            b[leaf * 4096 + 11],
        ]));
    b[key0] = 0xff;
    let e = read_all(&open_mem(b).unwrap()).unwrap_err();
    assert!(matches!(e, BoltError::KeysOutOfOrder { .. }), "{e}");

    // A page unreachable and not in the stored freelist.
    let mut b = good.clone();
    b.extend_from_slice(&[0u8; 4096]);
    let pc = b.len() as u64 / 4096;
    for meta in [0usize, 4096] {
        b[meta + 56..meta + 64].copy_from_slice(&pc.to_le_bytes());
        let sum = crate::checksum::fnv1a64(&b[meta + 16..meta + 72]);
        b[meta + 72..meta + 80].copy_from_slice(&sum.to_le_bytes());
    }
    let e = open_mem(b).unwrap().check().unwrap_err();
    assert!(matches!(e, BoltError::Integrity { .. }), "{e}");
}

/// Random bit flips and truncations: every outcome is a value or an error.
#[test]
fn random_corruptions_never_panic() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db");
    let buckets: Buckets = sample()
        .into_iter()
        .filter(|(n, _)| n != b"d-big")
        .collect();
    write(&path, &buckets);
    let good = std::fs::read(&path).unwrap();
    let mut rng = fastrand::Rng::with_seed(0x5eed);
    let (mut opened, mut failed) = (0, 0);
    for round in 0..400 {
        let mut b = good.clone();
        if round % 10 == 0 {
            b.truncate(rng.usize(..b.len()));
        } else {
            for _ in 0..rng.usize(1..8) {
                let i = rng.usize(..b.len());
                b[i] ^= 1 << rng.u8(..8);
            }
        }
        match open_mem(b) {
            Ok(r) => {
                opened += 1;
                let walked = read_all(&r);
                let checked = r.check();
                if walked.is_err() || checked.is_err() {
                    failed += 1;
                }
            }
            Err(_) => failed += 1,
        }
    }
    assert!(opened > 300, "{opened}");
    assert!(failed > 0);
}
