//! Writes an etcd 3.4 snapshot of about the asked size, for restore and
//! import benchmarks (`cargo xtask bench restore`): every key created,
//! then half of them updated (create/mod revisions and versions as etcd
//! writes them), incompressible values, a consistent index, the SHA-256
//! trailer. `etcdctl snapshot status|restore` and real etcd take it.
//!
//! ```text
//! cargo run --release -p cairn-etcd-formats --example make_etcd_snapshot -- \
//!     --out FILE [--mib 1024] [--value-bytes 1024]
//! ```

use etcd_formats::etcd::{AuthState, EtcdDbWriter, MetaRecords, Revision};
use etcd_formats::pb::mvccpb::KeyValue;
use etcd_formats::snapshot;
use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut out: Option<PathBuf> = None;
    let mut mib = 1024u64;
    let mut value_bytes = 1024usize;
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut val = || it.next().ok_or(format!("{flag} needs a value"));
        match flag.as_str() {
            "--out" => out = Some(PathBuf::from(val()?)),
            "--mib" => mib = val()?.parse()?,
            "--value-bytes" => value_bytes = val()?.parse()?,
            f => return Err(format!("unknown flag {f}").into()),
        }
    }
    let out = out.ok_or("--out FILE is required")?;
    // Bytes per revision on disk: leaf element, revision key, KeyValue
    // (value, key, framing), in leaf pages about 4/5 full.
    let per_revision = (16 + 17 + value_bytes + 48) as u64 * 5 / 4;
    let revisions = (mib << 20) / per_revision;
    let keys = (revisions * 2 / 3).max(1);
    let mut w = EtcdDbWriter::create(&out)?;
    w.auth(&AuthState {
        enabled: None,
        revision: Some(1),
    })?;
    w.cluster_version("3.4.0")?;
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let mut value = vec![0u8; value_bytes];
    let mut rev = 1i64;
    for i in 0..revisions {
        rev += 1;
        // Keys 0..keys are created in order, then the first half updated.
        let (k, create, version) = if i < keys {
            (i, rev, 1)
        } else {
            let k = i - keys;
            (k, 2 + k as i64, 2)
        };
        for chunk in value.chunks_mut(8) {
            // xorshift64: incompressible, like most real values.
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            let b = state.to_le_bytes();
            chunk.copy_from_slice(&b[..chunk.len()]);
        }
        let kv = KeyValue {
            key: format!("/registry/bench/{k:012}").into(),
            create_revision: create,
            mod_revision: rev,
            version,
            value: value.clone().into(),
            lease: 0,
        };
        w.put_key_parts(Revision::new(rev, 0), false, &kv)?;
    }
    w.meta(&MetaRecords {
        consistent_index: Some(revisions + 10),
        ..Default::default()
    })?;
    let summary = w.finish()?;
    snapshot::append_trailer(&out)?;
    println!(
        "{}: {} revisions of {} keys, revision {}, {} bytes",
        out.display(),
        revisions,
        keys,
        rev,
        summary.size_bytes + snapshot::TRAILER_BYTES
    );
    Ok(())
}
