//! What a reload needs from the configuration: parse again from the same
//! command line and environment with freshly read files, compare, and keep
//! the restart-only settings as they were.
//!
//! ```no_run
//! # fn demo(running: &cairn_config::ServerConfig) -> Result<(), cairn_config::ConfigError> {
//! let fresh = running.reparse()?; // a bad file: keep running as before
//! for change in cairn_config::diff(running, &fresh) {
//!     println!("{change}"); // e.g. "--log-level: info -> debug (live)"
//! }
//! let now = cairn_config::apply_live(running, &fresh)?;
//! // apply `now`'s live settings; keep diffing against `now` next time
//! # Ok(()) }
//! ```
//!
//! Nothing here touches the server: this crate decides what changed and
//! whether it may change live (the registry's [`Reload`]); the server applies
//! it.

use std::fmt;

use crate::config::{self, Extras, ServerConfig};
use crate::error::{ConfigError, Source};
use crate::load;
use crate::registry::{Reload, SETTINGS};

/// One setting whose value differs between two configurations.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    /// The flag name, e.g. `heartbeat-interval`.
    pub name: &'static str,
    pub old_raw: String,
    pub new_raw: String,
    /// `Live`: the server may apply it now. `Restart`: report it as
    /// "changed, takes effect after restart".
    pub reload: Reload,
    /// Where the new value comes from (a default when a line was removed).
    pub source: Source,
}

impl Change {
    pub fn is_live(&self) -> bool {
        self.reload == Reload::Live
    }
}

impl fmt::Display for Change {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "--{}: {} -> {} (from {})",
            self.name,
            shown(&self.old_raw),
            shown(&self.new_raw),
            self.source.short()
        )?;
        match self.reload {
            Reload::Live => f.write_str(", applied live"),
            Reload::Restart => f.write_str(", changed, takes effect after restart"),
        }
    }
}

fn shown(raw: &str) -> String {
    if raw.is_empty() {
        "\"\"".to_string()
    } else {
        raw.to_string()
    }
}

/// The settings whose values differ, in registry order. Values are compared
/// by meaning, not spelling (`100` and `0x64` are the same heartbeat), and
/// derived defaults count (a new `name` also changes a derived `data-dir`).
/// The `[plugins]` table is not compared: plugins will define their own
/// reload rules.
pub fn diff(old: &ServerConfig, new: &ServerConfig) -> Vec<Change> {
    let (old_r, new_r) = (old.resolved(), new.resolved());
    SETTINGS
        .iter()
        .filter_map(|s| {
            let (a, b) = (old_r.get(s.name)?, new_r.get(s.name)?);
            if config::same_value(s, &a.raw, &b.raw) {
                return None;
            }
            Some(Change {
                name: s.name,
                old_raw: a.raw.clone(),
                new_raw: b.raw.clone(),
                reload: s.reload,
                source: b.source.clone(),
            })
        })
        .collect()
}

/// The configuration in force after a reload: `new`'s value for every
/// `Live` setting, `old`'s for every `Restart` one (and `old`'s plugins).
/// Keep it as the running configuration, so the next [`diff`] reports
/// restart-only changes again (they are still pending) but not the live
/// ones already applied.
///
/// The mix is validated like any configuration; an error means the new
/// live values do not fit the values that stay (which only cross-setting
/// rules can cause), and the reload should be refused as a whole.
/// `warnings` are `new`'s.
pub fn apply_live(old: &ServerConfig, new: &ServerConfig) -> Result<ServerConfig, ConfigError> {
    let mut resolved = old.resolved().clone();
    for s in SETTINGS.iter().filter(|s| s.reload == Reload::Live) {
        if let Some(r) = new.resolved().get(s.name) {
            resolved.insert(s.name, r.clone());
        }
    }
    let mut merged = config::build(
        resolved,
        Vec::new(),
        Extras {
            sources: new.sources().clone(),
            config_files: new.config_files.clone(),
            plugins: old.plugins.clone(),
            shadowed: new.shadowed_file_values().clone(),
        },
    )?;
    merged.warnings = new.warnings.clone();
    Ok(merged)
}

/// Edits to config files that change nothing because an environment
/// variable or a flag decides the setting: one message each, saying which
/// value wins, so a reload does not report "nothing changed" silently.
pub fn masked_edits(old: &ServerConfig, new: &ServerConfig) -> Vec<String> {
    let before = old.shadowed_file_values();
    SETTINGS
        .iter()
        .filter_map(|s| {
            let now = new.shadowed_file_values().get(s.name)?;
            if before
                .get(s.name)
                .is_some_and(|was| config::same_value(s, &was.raw, &now.raw))
            {
                return None;
            }
            let winner = new.resolved().get(s.name)?;
            let value = |raw: &str| {
                if s.secret {
                    "********".to_string()
                } else {
                    shown(raw)
                }
            };
            Some(format!(
                "--{}: the edit to {} ({}) has no effect: {} = {} overrides config files; unset it and restart for the file to count",
                s.name,
                now.source.short(),
                value(&now.raw),
                winner.source,
                value(&winner.raw),
            ))
        })
        .collect()
}

impl ServerConfig {
    /// Parses again from the same command line, environment and default
    /// paths, reading the config files afresh: the configuration a reload
    /// would switch to. An error leaves the caller's configuration as it is.
    pub fn reparse(&self) -> Result<ServerConfig, ConfigError> {
        load::load(self.sources().clone())
    }
}
