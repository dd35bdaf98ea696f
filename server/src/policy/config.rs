//! Plugins declared in the configuration (`[plugins.NAME]` tables of
//! `cairn.toml`) and how a member's declaration reaches the replicated set.
//!
//! The rule: **a member pushes its declaration when the declaration
//! changes** — at a live reload, or across a restart — and the latest push
//! wins. Each member remembers (in `<data-dir>/member/plugins.declared`) the
//! last declaration it pushed or considered; a declaration equal to that is
//! never pushed again, so a member whose file was not edited cannot roll
//! the cluster back, for instance when it restarts after the others were
//! changed, or when only another setting of its file changed. A brand-new
//! member only seeds a cluster that has no config-declared plugins yet.
//! Members whose declaration differs from the cluster's config-declared
//! set report it (`cairn_plugin_config_in_sync` 0, `cairn plugin list`, a
//! warning in the log) and enforce the cluster's set regardless: all
//! members always enforce the same set.
//!
//! To change config-declared plugins, edit the file on every member (each
//! reload then pushes the same declaration: the first changes the set, the
//! others find it already in force). Plugins deployed through the admin API
//! are kept when the config-declared part changes; a name declared in a
//! config file belongs to the config (the API refuses to replace it).

use super::Enforcer;
use super::model::{self, Declaration, Source};
use super::set::ActiveSet;
use crate::pb::cairnpb::{PluginOrigin, PluginRecord, PluginSet};
use bytes::Bytes;
use cairn_config::{ServerConfig, toml};
use cairn_plugin_host::Hooks;
use prost::Message as _;
use serde::Serialize;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// File (in the member directory) remembering the last declaration this
/// member pushed or considered.
const REMEMBERED_FILE: &str = "plugins.declared";
/// How long a reconciliation keeps trying to reach the cluster.
pub(crate) const RECONCILE_PATIENCE: Duration = Duration::from_secs(60);

/// This member's declaration, as last loaded.
#[derive(Debug, Clone, Default, Serialize)]
pub struct DeclaredState {
    /// Hex SHA-256 of the declaration ("" when nothing is declared).
    pub hash: String,
    pub plugins: Vec<String>,
    /// Why the declaration could not be loaded or pushed.
    pub error: Option<String>,
    /// What last loaded it: `startup` or `reload`.
    pub trigger: String,
    pub checked_unix: u64,
}

impl DeclaredState {
    /// Whether the cluster enforces exactly this declaration.
    pub fn in_sync_with(&self, set: &ActiveSet) -> bool {
        self.error.is_none() && self.hash == hex::encode(&set.config_hash)
    }
}

/// A declaration loaded and checked: the records it makes and the binaries.
pub(crate) struct Loaded {
    pub(crate) records: Vec<PluginRecord>,
    pub(crate) binaries: HashMap<Bytes, Bytes>,
    pub(crate) hash: Bytes,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trigger {
    Startup,
    Reload,
}

impl Trigger {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Trigger::Startup => "startup",
            Trigger::Reload => "reload",
        }
    }
}

/// The reload hook: a `[plugins]` table that does not parse refuses the
/// whole reload (as any bad setting does); otherwise the new table goes
/// into the running configuration (the config crate keeps the old one and
/// leaves plugins to us).
pub fn check_reload(fresh: &ServerConfig, mut next: ServerConfig) -> Result<ServerConfig, String> {
    model::declarations_from_toml(&fresh.plugins)?;
    next.plugins = fresh.plugins.clone();
    Ok(next)
}

pub(crate) fn now_unix() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn resolve_hooks(name: &str, declared: Option<Hooks>, exported: Hooks) -> Result<Hooks, String> {
    let Some(want) = declared else {
        return Ok(exported);
    };
    for (on, has, hook) in [
        (want.validator, exported.validator, "validator"),
        (want.authenticator, exported.authenticator, "authenticator"),
        (want.authorizer, exported.authorizer, "authorizer"),
    ] {
        if on && !has {
            return Err(format!(
                "plugin `{name}` is declared as a {hook} but does not export that hook (it exports: {})",
                model::hook_names(exported).join(", ")
            ));
        }
    }
    Ok(want)
}

/// `cairn config check`: every plugin the `[plugins]` table declares is
/// read, compiled and checked as a start would do it (one engine for all);
/// each problem is reported, not only the first.
pub fn check_declared(table: &toml::Table) -> Vec<String> {
    let mut errors = Vec::new();
    let mut host = None;
    for (name, value) in table {
        let mut one = toml::Table::new();
        one.insert(name.clone(), value.clone());
        let declared = match model::declarations_from_toml(&one) {
            Ok(d) => d,
            Err(e) => {
                errors.push(e);
                continue;
            }
        };
        if host.is_none() {
            match super::new_host() {
                Ok(h) => host = Some(h),
                Err(e) => return vec![format!("cannot start the plugin engine: {e}")],
            }
        }
        let Some(host) = &host else {
            continue;
        };
        for d in declared {
            if let Err(e) = load_declaration_with(host, &d, PluginOrigin::Config) {
                errors.push(e);
            }
        }
    }
    errors
}

/// Reads, compiles and checks one declared plugin: the record it makes.
pub(crate) fn load_declaration(
    e: &Enforcer,
    d: &Declaration,
    origin: PluginOrigin,
) -> Result<(PluginRecord, Bytes), String> {
    load_declaration_with(&e.host()?, d, origin)
}

fn load_declaration_with(
    host: &cairn_plugin_host::PluginHost,
    d: &Declaration,
    origin: PluginOrigin,
) -> Result<(PluginRecord, Bytes), String> {
    d.check()?;
    let bytes = match &d.source {
        Source::Bytes(b) => b.clone(),
        Source::File(path) => {
            let len = std::fs::metadata(path)
                .map_err(|err| {
                    format!("plugin `{}`: cannot read {}: {err}", d.name, path.display())
                })?
                .len();
            if len > model::MAX_PLUGIN_BYTES as u64 {
                return Err(format!(
                    "plugin `{}`: {} is {len} bytes, over the limit of {}",
                    d.name,
                    path.display(),
                    model::MAX_PLUGIN_BYTES
                ));
            }
            Bytes::from(std::fs::read(path).map_err(|err| {
                format!("plugin `{}`: cannot read {}: {err}", d.name, path.display())
            })?)
        }
    };
    let loaded = super::load_with(host, &d.name, bytes.clone(), d.limits(), d.config.clone())?;
    let hooks = resolve_hooks(&d.name, d.hooks, loaded.hooks())?;
    Ok((d.record(loaded.sha256(), hooks, origin), bytes))
}

pub(crate) fn load_declared(e: &Enforcer, table: &toml::Table) -> Result<Loaded, String> {
    let mut records = Vec::new();
    let mut binaries = HashMap::new();
    for d in model::declarations_from_toml(table)? {
        let (record, bytes) = load_declaration(e, &d, PluginOrigin::Config)?;
        binaries.insert(record.sha256.clone(), bytes);
        records.push(record);
    }
    records.sort_by(|a, b| (a.order, &a.name).cmp(&(b.order, &b.name)));
    let hash = if records.is_empty() {
        Bytes::new()
    } else {
        let canonical = PluginSet {
            plugins: records.clone(),
            ..Default::default()
        };
        Bytes::copy_from_slice(&Sha256::digest(canonical.encode_to_vec()))
    };
    Ok(Loaded {
        records,
        binaries,
        hash,
    })
}

pub(crate) fn remembered(e: &Enforcer) -> Option<String> {
    std::fs::read_to_string(e.member_dir().join(REMEMBERED_FILE))
        .ok()
        .map(|s| s.trim().to_owned())
}

pub(crate) fn remember(e: &Enforcer, hash_hex: &str) {
    let path = e.member_dir().join(REMEMBERED_FILE);
    let tmp = path.with_extension("tmp");
    let r = std::fs::write(&tmp, hash_hex).and_then(|()| std::fs::rename(&tmp, &path));
    if let Err(err) = r {
        tracing::warn!(path = %path.display(), error = %err, "plugins: cannot remember the pushed declaration");
    }
}
