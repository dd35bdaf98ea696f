//! `cairn snapshot save FILE`: an etcd 3.4 snapshot (bbolt database and
//! SHA-256 trailer, see `storage::etcd_snapshot`) that `etcdctl snapshot
//! restore` and real etcd take, from a running member (as `etcdctl
//! snapshot save` does) or from a stopped member's data dir.

use crate::cli::{CliError, parse_flags};
use crate::pb::etcdserverpb::auth_client::AuthClient;
use crate::pb::etcdserverpb::maintenance_client::MaintenanceClient;
use crate::pb::etcdserverpb::{AuthenticateRequest, SnapshotRequest};
use crate::storage::{Db, etcd_snapshot};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// How long connecting to a member may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// No progress for this long fails a download.
const STALL_TIMEOUT: Duration = Duration::from_secs(60);

pub(crate) fn save(args: &[String]) -> Result<(), CliError> {
    let (positional, flags) = parse_flags(args, &["data-dir", "endpoints", "user"], &[])?;
    let [file] = positional.as_slice() else {
        return Err(CliError::Usage(
            "snapshot save requires exactly one argument".into(),
        ));
    };
    let file = PathBuf::from(file);
    // Like etcdctl: written aside, synced, then renamed into place.
    let mut part = file.clone().into_os_string();
    part.push(".part");
    let part = PathBuf::from(part);
    let result = match flags.get("data-dir") {
        Some(dir) => {
            if flags.contains_key("endpoints") || flags.contains_key("user") {
                return Err(CliError::Usage(
                    "--data-dir saves a stopped member's data: give it without --endpoints/--user"
                        .into(),
                ));
            }
            save_offline(Path::new(dir), &part)
        }
        None => {
            let endpoint = flags
                .get("endpoints")
                .map_or("127.0.0.1:2379", String::as_str)
                .split(',')
                .next()
                .unwrap_or_default()
                .to_string();
            save_online(&endpoint, flags.get("user").map(String::as_str), &part)
        }
    };
    let finish = result.and_then(|()| {
        std::fs::File::open(&part)
            .and_then(|f| f.sync_all())
            .and_then(|()| std::fs::rename(&part, &file))
            .map_err(|e| format!("{}: {e}", file.display()))
    });
    if let Err(e) = finish {
        let _ = std::fs::remove_file(&part);
        return Err(CliError::Failed(e));
    }
    println!("Snapshot saved at {}", file.display());
    Ok(())
}

/// From a stopped member's data dir (fjall refuses a dir a running member
/// holds open).
fn save_offline(data_dir: &Path, part: &Path) -> Result<(), String> {
    let member = data_dir.join("member");
    if !member.join("db").is_dir() {
        return Err(format!(
            "{} holds no Cairn data (no member/db)",
            data_dir.display()
        ));
    }
    let db = Db::open(&member).map_err(|e| format!("{}: {e}", member.display()))?;
    let view = db.db.snapshot();
    let size = etcd_snapshot::write_snapshot(&db, &view, part).map_err(|e| e.to_string())?;
    eprintln!(
        "saved the data of the stopped member in {} ({} bytes)",
        data_dir.display(),
        size
    );
    Ok(())
}

/// From a running member, through `Maintenance.Snapshot`.
fn save_online(endpoint: &str, user: Option<&str>, part: &Path) -> Result<(), String> {
    let url = if endpoint.contains("://") {
        endpoint.to_string()
    } else {
        format!("http://{endpoint}")
    };
    if let Some((scheme @ ("https" | "unix" | "unixs"), _)) = url.split_once("://") {
        return Err(format!(
            "{scheme} endpoints are not supported by `cairn snapshot save`: use etcdctl snapshot save"
        ));
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    rt.block_on(async {
        let channel = tonic::transport::Endpoint::from_shared(url.clone())
            .map_err(|e| format!("{url}: {e}"))?
            .connect_timeout(CONNECT_TIMEOUT)
            .connect()
            .await
            .map_err(|e| format!("{url}: {e}"))?;
        let token = match user {
            None => None,
            Some(u) => {
                let (name, password) = u.split_once(':').ok_or("--user expects NAME:PASSWORD")?;
                let r = AuthClient::new(channel.clone())
                    .authenticate(AuthenticateRequest {
                        name: name.into(),
                        password: password.into(),
                    })
                    .await
                    .map_err(|e| format!("authenticate: {}", e.message()))?;
                Some(r.into_inner().token)
            }
        };
        let mut req = tonic::Request::new(SnapshotRequest {});
        if let Some(t) = token {
            req.metadata_mut()
                .insert("token", t.parse().map_err(|_| "bad token")?);
        }
        let mut stream = MaintenanceClient::new(channel)
            .max_decoding_message_size(64 << 20)
            .snapshot(req)
            .await
            .map_err(|e| format!("snapshot: {}", e.message()))?
            .into_inner();
        let mut out =
            std::fs::File::create(part).map_err(|e| format!("{}: {e}", part.display()))?;
        let mut total = 0u64;
        loop {
            let msg = tokio::time::timeout(STALL_TIMEOUT, stream.message())
                .await
                .map_err(|_| format!("no data for {STALL_TIMEOUT:?}"))?
                .map_err(|e| format!("snapshot: {}", e.message()))?;
            let Some(msg) = msg else { break };
            out.write_all(&msg.blob)
                .map_err(|e| format!("{}: {e}", part.display()))?;
            total += msg.blob.len() as u64;
        }
        drop(out);
        // The stream ends with the SHA-256 of the database: check it as
        // etcdctl does before keeping the file.
        match etcd_formats::snapshot::check_trailer(part).map_err(|e| e.to_string())? {
            etcd_formats::snapshot::TrailerCheck::Valid => {
                eprintln!("fetched snapshot from {url} ({total} bytes)");
                Ok(())
            }
            other => Err(format!(
                "the snapshot from {url} does not end with a matching SHA-256 ({other:?})"
            )),
        }
    })
}
