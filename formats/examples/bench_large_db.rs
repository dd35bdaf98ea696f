//! Times writing and reading a large etcd database with this crate, and
//! optionally `etcdctl snapshot restore` of the same file.
//!
//! ```text
//! cargo run --release -p cairn-etcd-formats --example bench_large_db -- \
//!     [--mib 1024] [--value-bytes 1024] [--dir /tmp] [--etcdctl] [--no-sync]
//! ```
//!
//! Write: every key revision through `EtcdDbWriter` (encode, pages, fsync),
//! then the SHA-256 trailer. Read: every revision back through
//! `EtcdDb::keys` (pages, `KeyValue` decode), then `status` (integrity
//! check + etcdctl's hash) and the trailer check. The file is usually in
//! the page cache when read: these are CPU-bound figures.

use etcd_formats::etcd::{AuthState, EtcdDb, EtcdDbWriter, MetaRecords, Revision};
use etcd_formats::pb::mvccpb::KeyValue;
use etcd_formats::snapshot;
use std::path::PathBuf;
use std::time::{Duration, Instant};

struct Args {
    mib: u64,
    value_bytes: usize,
    dir: PathBuf,
    etcdctl: bool,
    sync: bool,
}

fn args() -> Result<Args, String> {
    let mut a = Args {
        mib: 1024,
        value_bytes: 1024,
        dir: std::env::temp_dir(),
        etcdctl: false,
        sync: true,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut val = || it.next().ok_or(format!("{flag} needs a value"));
        match flag.as_str() {
            "--mib" => a.mib = val()?.parse().map_err(|e| format!("--mib: {e}"))?,
            "--value-bytes" => {
                a.value_bytes = val()?.parse().map_err(|e| format!("--value-bytes: {e}"))?
            }
            "--dir" => a.dir = PathBuf::from(val()?),
            "--etcdctl" => a.etcdctl = true,
            "--no-sync" => a.sync = false,
            f => return Err(format!("unknown flag {f}")),
        }
    }
    Ok(a)
}

fn rate(bytes: u64, d: Duration) -> String {
    format!(
        "{:>8.2?}  {:>7.0} MB/s",
        d,
        bytes as f64 / 1e6 / d.as_secs_f64()
    )
}

#[allow(clippy::too_many_lines)] // a benchmark script: build, then time each read, top to bottom
fn main() -> Result<(), Box<dyn std::error::Error>> {
    let a = args()?;
    let work = tempfile::Builder::new()
        .prefix("bench-etcd-db")
        .tempdir_in(&a.dir)?;
    let path = work.path().join("snapshot.db");
    // Bytes per key on disk: leaf element, revision key, KeyValue (value,
    // 28-byte key, framing), with whole entries per 4 KiB leaf page.
    let entry = 16 + 17 + a.value_bytes as u64 + 48;
    let per_page = (4096 - 16) / entry;
    let per_key = if per_page >= 1 {
        4096 / per_page
    } else {
        (entry + 16).div_ceil(4096) * 4096
    };
    let keys = a.mib * 1024 * 1024 / per_key;
    let mut value = vec![0u8; a.value_bytes];
    for (i, b) in value.iter_mut().enumerate() {
        *b = (i * 131 % 251) as u8;
    }
    let value = bytes::Bytes::from(value);

    let t = Instant::now();
    let mut w = EtcdDbWriter::create(&path)?;
    w.auth(&AuthState {
        enabled: Some(false),
        revision: Some(1),
    })?;
    w.cluster_version("3.4.0")?;
    for i in 0..keys {
        let rev = 2 + i as i64;
        let kv = KeyValue {
            key: format!("/registry/bench/{i:012}").into(),
            create_revision: rev,
            mod_revision: rev,
            version: 1,
            value: value.clone(),
            lease: 0,
        };
        w.put_key_parts(Revision::new(rev, 0), false, &kv)?;
    }
    w.meta(&MetaRecords {
        consistent_index: Some(keys + 1),
        ..Default::default()
    })?;
    let summary = if a.sync {
        w.finish()?
    } else {
        w.finish_without_sync()?
    };
    let write = t.elapsed();
    let size = summary.size_bytes;
    let t = Instant::now();
    snapshot::append_trailer(&path)?;
    let trailer = t.elapsed();

    let t = Instant::now();
    let db = EtcdDb::open(&path)?;
    let (mut n, mut value_total) = (0u64, 0u64);
    for r in db.keys()? {
        let r = r?;
        n += 1;
        value_total += r.kv.value.len() as u64;
    }
    let read = t.elapsed();
    assert_eq!(n, keys);
    assert_eq!(value_total, keys * a.value_bytes as u64);
    let t = Instant::now();
    let st = db.status()?;
    let status = t.elapsed();
    assert_eq!(st, summary.status);
    let t = Instant::now();
    let tc = snapshot::check_trailer(&path)?;
    let check = t.elapsed();
    assert_eq!(tc, snapshot::TrailerCheck::Valid);

    println!(
        "db: {} keys, {:.1} MiB ({} pages)",
        keys,
        size as f64 / 1048576.0,
        summary.page_count
    );
    let what = if a.sync {
        "write (encode, pages, fsync)  "
    } else {
        "write (encode, pages, no sync)"
    };
    println!("{what} {}", rate(size, write));
    println!("append SHA-256 trailer         {}", rate(size, trailer));
    println!("read every revision + decode   {}", rate(size, read));
    println!("status (check + CRC-32C hash)  {}", rate(size, status));
    println!("verify SHA-256 trailer         {}", rate(size, check));

    if a.etcdctl {
        let out_dir = work.path().join("restored");
        let t = Instant::now();
        let out = std::process::Command::new("etcdctl")
            .args(["snapshot", "restore"])
            .arg(&path)
            .arg("--data-dir")
            .arg(&out_dir)
            .output()?;
        let d = t.elapsed();
        if !out.status.success() {
            return Err(format!("etcdctl: {}", String::from_utf8_lossy(&out.stderr)).into());
        }
        println!("etcdctl snapshot restore       {}", rate(size, d));
    }
    Ok(())
}
