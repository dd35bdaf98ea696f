//! Prints what the crate reads from an etcd file or data dir.
//!
//! ```text
//! cargo run -p cairn-etcd-formats --example etcd_inspect -- snapshot.db
//! cargo run -p cairn-etcd-formats --example etcd_inspect -- <data-dir>
//! cargo run -p cairn-etcd-formats --example etcd_inspect -- <file.snap>
//! ```

use etcd_formats::datadir::MemberData;
use etcd_formats::etcd::EtcdDb;
use etcd_formats::request::{EntryPayload, decode_entry};
use std::path::Path;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let Some(arg) = std::env::args().nth(1) else {
        return Err("usage: etcd_inspect <snapshot-or-db-file | data-dir>".into());
    };
    let path = Path::new(&arg);
    if path.is_dir() {
        let m = MemberData::read(path)?;
        println!("member id:  {:x}", m.member_id().unwrap_or(0));
        println!("cluster id: {:x}", m.cluster_id().unwrap_or(0));
        println!("hard state: {:?}", m.wal.hard_state);
        println!(
            "snapshot:   {:?}",
            m.snapshot.as_ref().map(|s| (&s.path, s.index(), s.term()))
        );
        println!("backend:    {:?}", m.backend);
        println!("torn tail:  {:?}", m.wal.torn_tail);
        println!(
            "entries:    {} after the snapshot, {} to apply",
            m.wal.entries.len(),
            m.entries_to_apply().len()
        );
        for e in m.entries_to_apply().iter().take(20) {
            let what = match decode_entry(e)? {
                EntryPayload::Empty => "empty".to_string(),
                EntryPayload::ConfChange(cc) => format!("{cc:?}"),
                EntryPayload::ConfChangeV2(cc) => format!("{cc:?}"),
                EntryPayload::V3(r) => format!("v3 {:?}", r.request().map(|(k, _)| k)),
                EntryPayload::V2(r) => format!(
                    "v2 {} {}",
                    String::from_utf8_lossy(&r.method),
                    String::from_utf8_lossy(&r.path)
                ),
            };
            println!("  {} (term {}): {what}", e.index, e.term);
        }
        return Ok(());
    }
    if arg.ends_with(".snap") {
        let s = etcd_formats::snap::read_snap_file(path)?;
        println!("metadata:   {:?}", s.metadata);
        println!("data:       {}", String::from_utf8_lossy(&s.data));
        return Ok(());
    }
    let db = EtcdDb::open(path)?;
    println!(
        "meta page:  {} {:?}",
        db.bolt().active_meta_page(),
        db.bolt().meta()
    );
    println!("status:     {:?}", db.status()?);
    println!(
        "buckets:    {:?}",
        db.bucket_names()?
            .iter()
            .map(|b| String::from_utf8_lossy(b).into_owned())
            .collect::<Vec<_>>()
    );
    println!("meta:       {:?}", db.meta()?);
    println!("auth:       {:?}", db.auth()?);
    println!("cluster:    {:?}", db.cluster_version()?);
    println!("members:    {:?}", db.members()?);
    println!("removed:    {:?}", db.removed_members()?);
    println!("alarms:     {:?}", db.alarms()?);
    println!("users:      {}", db.users()?.len());
    println!("roles:      {}", db.roles()?.len());
    println!("leases:     {}", db.leases()?.count());
    let (mut revs, mut tombstones) = (0u64, 0u64);
    for r in db.keys()? {
        let r = r?;
        revs += 1;
        tombstones += u64::from(r.tombstone);
    }
    println!("key revs:   {revs} ({tombstones} tombstones)");
    Ok(())
}
