//! What an operator declares about a plugin (in `cairn.toml` or through the
//! admin API), its limits, and how a declaration becomes a replicated
//! [`PluginRecord`].

use crate::pb::cairnpb::{PluginConfigEntry, PluginMode, PluginOrigin, PluginRecord};
use bytes::Bytes;
use cairn_config::toml;
use cairn_plugin_host::{Hooks, Limits};
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// Plugins in one set. Each costs a compiled component in memory and a
/// call per write it applies to; a few dozen is already a lot.
pub const MAX_PLUGINS: usize = 32;
/// Largest plugin binary the cluster stores. It travels in one raft entry,
/// so it is kept well under the peer message limit.
pub const MAX_PLUGIN_BYTES: usize = 16 << 20;
/// All binaries of one set together (they are kept in memory and in every
/// snapshot).
pub const MAX_SET_BYTES: usize = 64 << 20;
/// Largest raft entry a plugin-set change may make (binaries plus records).
pub const MAX_CHANGE_ENTRY_BYTES: usize = MAX_PLUGIN_BYTES + (1 << 20);
/// Key prefixes one plugin may be limited to, and their length.
pub const MAX_PREFIXES: usize = 64;
pub const MAX_PREFIX_BYTES: usize = 4096;
/// Config entries of one plugin and their total size (the host's limits).
pub const MAX_CONFIG_ENTRIES: usize = 1024;
pub const MAX_CONFIG_BYTES: usize = 1 << 20;
/// Call deadline: default and the most an operator may set.
pub const DEFAULT_DEADLINE: Duration = Duration::from_millis(50);
pub const MAX_DEADLINE: Duration = Duration::from_secs(5);
pub const MIN_DEADLINE: Duration = EPOCH_TICK;
/// How often the engine's epoch advances: the granularity of deadlines. A
/// 1 ms tick (the host's default) woke each member a thousand times a
/// second, a measurable share of a loaded member's CPU; deadlines of tens
/// of milliseconds do not need it.
pub const EPOCH_TICK: Duration = Duration::from_millis(5);
/// Linear memory: default and ceiling (the host's pool slot size).
pub const DEFAULT_MEMORY_BYTES: usize = 16 << 20;
pub const MAX_MEMORY_BYTES: usize = 64 << 20;
pub const MIN_MEMORY_BYTES: usize = 64 << 10;
/// Longest plugin name (the host's rule: ASCII letters, digits, `-_.`).
pub const MAX_NAME_BYTES: usize = 128;

/// What the server does with a plugin's verdicts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum Mode {
    /// Verdicts apply: a denial refuses the request.
    #[default]
    Enforce,
    /// The plugin is called on live traffic, but a denial (or failure) is
    /// only logged and counted; the request proceeds. For trying a policy
    /// on real traffic before enforcing it.
    Audit,
    /// Deployed (replicated, compiled) but never called on live traffic:
    /// only `dry-run` evaluations use it. For staging a rollout.
    DryRun,
}

impl Mode {
    pub fn parse(s: &str) -> Result<Mode, String> {
        match s {
            "enforce" => Ok(Mode::Enforce),
            "audit" => Ok(Mode::Audit),
            "dry-run" | "dryrun" | "dry_run" => Ok(Mode::DryRun),
            other => Err(format!(
                "unknown mode {other:?}: expected enforce, audit or dry-run"
            )),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Enforce => "enforce",
            Mode::Audit => "audit",
            Mode::DryRun => "dry-run",
        }
    }

    pub fn to_pb(self) -> PluginMode {
        match self {
            Mode::Enforce => PluginMode::Enforce,
            Mode::Audit => PluginMode::Audit,
            Mode::DryRun => PluginMode::DryRun,
        }
    }

    pub fn from_pb(m: PluginMode) -> Mode {
        match m {
            PluginMode::Enforce => Mode::Enforce,
            PluginMode::Audit => Mode::Audit,
            PluginMode::DryRun => Mode::DryRun,
        }
    }
}

pub fn parse_failure_policy(s: &str) -> Result<bool, String> {
    match s {
        "fail-closed" | "closed" => Ok(false),
        "fail-open" | "open" => Ok(true),
        other => Err(format!(
            "unknown failure policy {other:?}: expected fail-closed or fail-open"
        )),
    }
}

pub fn failure_policy_name(fail_open: bool) -> &'static str {
    if fail_open {
        "fail-open"
    } else {
        "fail-closed"
    }
}

/// Parses a hook list (`validator`, `authenticator`, `authorizer`).
pub fn parse_hooks<'a>(names: impl IntoIterator<Item = &'a str>) -> Result<Hooks, String> {
    let mut hooks = Hooks::default();
    for n in names {
        match n.trim() {
            "validator" | "validate" | "validation" => hooks.validator = true,
            "authenticator" | "authenticate" | "authentication" => hooks.authenticator = true,
            "authorizer" | "authorize" | "authorization" => hooks.authorizer = true,
            other => {
                return Err(format!(
                    "unknown hook {other:?}: expected validator, authenticator or authorizer"
                ));
            }
        }
    }
    if !(hooks.validator || hooks.authenticator || hooks.authorizer) {
        return Err("the hook list is empty".into());
    }
    Ok(hooks)
}

pub fn hook_names(h: Hooks) -> Vec<&'static str> {
    let mut v = Vec::new();
    if h.validator {
        v.push("validator");
    }
    if h.authenticator {
        v.push("authenticator");
    }
    if h.authorizer {
        v.push("authorizer");
    }
    v
}

/// Where a declared plugin's binary comes from.
#[derive(Debug, Clone)]
pub enum Source {
    File(std::path::PathBuf),
    Bytes(Bytes),
}

/// A plugin as an operator declares it, before its binary is looked at.
#[derive(Debug, Clone)]
pub struct Declaration {
    pub name: String,
    pub source: Source,
    /// `None`: every hook the component exports.
    pub hooks: Option<Hooks>,
    /// Keys the plugin applies to; empty: all keys.
    pub prefixes: Vec<Bytes>,
    pub mode: Mode,
    pub fail_open: bool,
    pub deadline: Duration,
    pub memory_bytes: usize,
    pub config: Vec<(String, String)>,
    /// Plugins are called in (order, name) order; the first denial wins.
    pub order: i64,
}

impl Declaration {
    pub fn new(name: impl Into<String>, source: Source) -> Declaration {
        Declaration {
            name: name.into(),
            source,
            hooks: None,
            prefixes: Vec::new(),
            mode: Mode::Enforce,
            fail_open: false,
            deadline: DEFAULT_DEADLINE,
            memory_bytes: DEFAULT_MEMORY_BYTES,
            config: Vec::new(),
            order: 0,
        }
    }

    pub fn limits(&self) -> Limits {
        Limits {
            deadline: self.deadline,
            memory_bytes: self.memory_bytes,
        }
    }

    /// The checks that need no binary: name, limits, sizes.
    pub fn check(&self) -> Result<(), String> {
        check_name(&self.name)?;
        let n = &self.name;
        if self.deadline < MIN_DEADLINE || self.deadline > MAX_DEADLINE {
            return Err(format!(
                "plugin {n:?}: deadline {:?} is outside [{:?}, {:?}]",
                self.deadline, MIN_DEADLINE, MAX_DEADLINE
            ));
        }
        if self.memory_bytes < MIN_MEMORY_BYTES || self.memory_bytes > MAX_MEMORY_BYTES {
            return Err(format!(
                "plugin {n:?}: memory limit {} bytes is outside [{MIN_MEMORY_BYTES}, {MAX_MEMORY_BYTES}]",
                self.memory_bytes
            ));
        }
        if self.prefixes.len() > MAX_PREFIXES {
            return Err(format!(
                "plugin {n:?}: at most {MAX_PREFIXES} prefixes, got {}",
                self.prefixes.len()
            ));
        }
        if let Some(p) = self
            .prefixes
            .iter()
            .find(|p| p.is_empty() || p.len() > MAX_PREFIX_BYTES)
        {
            return Err(format!(
                "plugin {n:?}: a prefix must be 1 to {MAX_PREFIX_BYTES} bytes (got {} bytes; leave `prefixes` out for every key)",
                p.len()
            ));
        }
        let bytes: usize = self.config.iter().map(|(k, v)| k.len() + v.len()).sum();
        if self.config.len() > MAX_CONFIG_ENTRIES || bytes > MAX_CONFIG_BYTES {
            return Err(format!(
                "plugin {n:?}: config too large ({} entries, {bytes} bytes; limits {MAX_CONFIG_ENTRIES} and {MAX_CONFIG_BYTES})",
                self.config.len()
            ));
        }
        if let Source::Bytes(b) = &self.source
            && b.len() > MAX_PLUGIN_BYTES
        {
            return Err(format!(
                "plugin {n:?}: the binary is {} bytes, over the limit of {MAX_PLUGIN_BYTES}",
                b.len()
            ));
        }
        Ok(())
    }

    /// The replicated record, once the binary's digest and hooks are known.
    pub fn record(&self, sha256: &[u8; 32], hooks: Hooks, origin: PluginOrigin) -> PluginRecord {
        PluginRecord {
            name: self.name.clone(),
            sha256: Bytes::copy_from_slice(sha256),
            validator: hooks.validator,
            authenticator: hooks.authenticator,
            authorizer: hooks.authorizer,
            prefixes: self.prefixes.clone(),
            deadline_us: self.deadline.as_micros() as u64,
            memory_bytes: self.memory_bytes as u64,
            fail_open: self.fail_open,
            mode: self.mode.to_pb() as i32,
            config: self
                .config
                .iter()
                .map(|(key, value)| PluginConfigEntry {
                    key: key.clone(),
                    value: value.clone(),
                })
                .collect(),
            origin: origin as i32,
            order: self.order,
            since_version: 0,
            // Set by apply.
            vouched_under_auth: false,
        }
    }
}

pub fn check_name(name: &str) -> Result<(), String> {
    if name.is_empty()
        || name.len() > MAX_NAME_BYTES
        || !name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
    {
        return Err(format!(
            "invalid plugin name {name:?}: use 1 to {MAX_NAME_BYTES} ASCII letters, digits, '-', '_' or '.'"
        ));
    }
    Ok(())
}

/// Whether a record's hooks are all known and its numbers in bounds: what
/// the apply loop checks before accepting a set (the same on every member).
pub fn check_record(r: &PluginRecord) -> Result<(), String> {
    check_name(&r.name)?;
    let n = &r.name;
    if r.sha256.len() != 32 {
        return Err(format!("plugin {n:?}: sha256 must be 32 bytes"));
    }
    if !(r.validator || r.authenticator || r.authorizer) {
        return Err(format!("plugin {n:?}: no hook enabled"));
    }
    let deadline = Duration::from_micros(r.deadline_us);
    if deadline < MIN_DEADLINE || deadline > MAX_DEADLINE {
        return Err(format!("plugin {n:?}: deadline {deadline:?} out of bounds"));
    }
    let mem = r.memory_bytes as usize;
    if !(MIN_MEMORY_BYTES..=MAX_MEMORY_BYTES).contains(&mem) {
        return Err(format!("plugin {n:?}: memory limit {mem} out of bounds"));
    }
    if r.prefixes.len() > MAX_PREFIXES
        || r.prefixes
            .iter()
            .any(|p| p.is_empty() || p.len() > MAX_PREFIX_BYTES)
    {
        return Err(format!("plugin {n:?}: prefixes out of bounds"));
    }
    let bytes: usize = r.config.iter().map(|e| e.key.len() + e.value.len()).sum();
    if r.config.len() > MAX_CONFIG_ENTRIES || bytes > MAX_CONFIG_BYTES {
        return Err(format!("plugin {n:?}: config too large"));
    }
    if PluginMode::try_from(r.mode).is_err() || PluginOrigin::try_from(r.origin).is_err() {
        return Err(format!("plugin {n:?}: unknown mode or origin"));
    }
    Ok(())
}

/// Record helpers.
pub trait RecordExt {
    fn mode_(&self) -> Mode;
    fn limits(&self) -> Limits;
    fn hooks(&self) -> Hooks;
    fn config_pairs(&self) -> Vec<(String, String)>;
    fn declared_in_config(&self) -> bool;
    /// Whether the plugin applies to `[key, range_end)` (`range_end`
    /// `None`: the single key; etcd's encoding otherwise, `[0]` = to the end).
    fn applies_to(&self, key: &[u8], range_end: Option<&[u8]>) -> bool;
}

impl RecordExt for PluginRecord {
    fn mode_(&self) -> Mode {
        Mode::from_pb(PluginMode::try_from(self.mode).unwrap_or(PluginMode::Enforce))
    }

    fn limits(&self) -> Limits {
        Limits {
            deadline: Duration::from_micros(self.deadline_us),
            memory_bytes: self.memory_bytes as usize,
        }
    }

    fn hooks(&self) -> Hooks {
        Hooks {
            validator: self.validator,
            authenticator: self.authenticator,
            authorizer: self.authorizer,
        }
    }

    fn config_pairs(&self) -> Vec<(String, String)> {
        self.config
            .iter()
            .map(|e| (e.key.clone(), e.value.clone()))
            .collect()
    }

    fn declared_in_config(&self) -> bool {
        self.origin == PluginOrigin::Config as i32
    }

    fn applies_to(&self, key: &[u8], range_end: Option<&[u8]>) -> bool {
        if self.prefixes.is_empty() {
            return true;
        }
        self.prefixes
            .iter()
            .any(|p| range_meets_prefix(key, range_end, p))
    }
}

/// Whether `[key, range_end)` holds any key starting with `prefix`.
pub fn range_meets_prefix(key: &[u8], range_end: Option<&[u8]>, prefix: &[u8]) -> bool {
    match range_end {
        None => key.starts_with(prefix),
        Some(end) => {
            // Keys with the prefix form [prefix, prefix_end).
            let p_end = crate::state::prefix_end(prefix);
            let before_prefix_end = p_end.as_ref() == b"\0" || key < p_end.as_ref();
            let reaches_prefix = end == b"\0" || end > prefix;
            before_prefix_end && reaches_prefix
        }
    }
}

/// `host.config()` pairs from a TOML value: strings as they are, numbers
/// and booleans as TOML writes them.
fn toml_scalar(v: &toml::Value) -> Option<String> {
    match v {
        toml::Value::String(s) => Some(s.clone()),
        toml::Value::Integer(i) => Some(i.to_string()),
        toml::Value::Float(f) => Some(f.to_string()),
        toml::Value::Boolean(b) => Some(b.to_string()),
        _ => None,
    }
}

/// Parses a size: an integer number of bytes, or a string with a unit
/// (`"16MiB"`, `"512KiB"`, `"1GiB"`, `"4096"`).
pub fn parse_size(s: &str) -> Result<usize, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: usize = num
        .parse()
        .map_err(|_| format!("{s:?} is not a size (e.g. 16MiB)"))?;
    let mult: usize = match unit.trim() {
        "" | "B" => 1,
        "KiB" | "K" | "KB" | "k" => 1 << 10,
        "MiB" | "M" | "MB" => 1 << 20,
        "GiB" | "G" | "GB" => 1 << 30,
        other => return Err(format!("unknown size unit {other:?} (use KiB, MiB or GiB)")),
    };
    n.checked_mul(mult)
        .ok_or_else(|| format!("{s:?} is too large"))
}

/// The `[plugins]` table of the configuration: one `[plugins.NAME]` table
/// per plugin. Every key is checked (a typo in a policy must not be
/// silently ignored).
pub fn declarations_from_toml(table: &toml::Table) -> Result<Vec<Declaration>, String> {
    if table.len() > MAX_PLUGINS {
        return Err(format!(
            "[plugins] declares {} plugins; at most {MAX_PLUGINS}",
            table.len()
        ));
    }
    let mut out = Vec::new();
    for (name, value) in table {
        let at = |msg: String| format!("[plugins.{name}]: {msg}");
        let t = value
            .as_table()
            .ok_or_else(|| at("must be a table (write [plugins.NAME] with its keys)".into()))?;
        let file = t
            .get("file")
            .and_then(toml::Value::as_str)
            .ok_or_else(|| at("`file` (the plugin's .wasm path) is required".into()))?;
        let mut d = Declaration::new(name.clone(), Source::File(file.into()));
        for (key, v) in t {
            let string = || {
                v.as_str()
                    .map(str::to_owned)
                    .ok_or_else(|| at(format!("`{key}` must be a string")))
            };
            let strings = || -> Result<Vec<String>, String> {
                match v {
                    toml::Value::String(s) => Ok(s
                        .split(',')
                        .map(|x| x.trim().to_owned())
                        .filter(|x| !x.is_empty())
                        .collect()),
                    toml::Value::Array(a) => a
                        .iter()
                        .map(|x| {
                            x.as_str()
                                .map(str::to_owned)
                                .ok_or_else(|| at(format!("`{key}` must list strings")))
                        })
                        .collect(),
                    _ => Err(at(format!("`{key}` must be a list of strings"))),
                }
            };
            match key.as_str() {
                "file" => {}
                "hooks" => {
                    let list = strings()?;
                    d.hooks = Some(parse_hooks(list.iter().map(String::as_str)).map_err(at)?);
                }
                "prefixes" | "prefix" => {
                    // A prefix list is never split on commas: keys may hold them.
                    d.prefixes = match v {
                        toml::Value::String(s) => vec![Bytes::from(s.clone())],
                        _ => strings()?.into_iter().map(Bytes::from).collect(),
                    };
                }
                "mode" => d.mode = Mode::parse(&string()?).map_err(at)?,
                "failure-policy" => d.fail_open = parse_failure_policy(&string()?).map_err(at)?,
                "deadline" => {
                    let s = string()?;
                    d.deadline = cairn_config::parse_go_duration(&s)
                        .map_err(|e| at(format!("`deadline` {s:?}: {e}")))?;
                }
                "memory" | "memory-limit" => {
                    d.memory_bytes = match v {
                        toml::Value::Integer(i) => usize::try_from(*i)
                            .map_err(|_| at("`memory` must be positive".into()))?,
                        toml::Value::String(s) => parse_size(s).map_err(at)?,
                        _ => return Err(at("`memory` must be a size such as \"16MiB\"".into())),
                    }
                }
                "order" => {
                    d.order = v
                        .as_integer()
                        .ok_or_else(|| at("`order` must be an integer".into()))?
                }
                "config" => {
                    let c = v
                        .as_table()
                        .ok_or_else(|| at("`config` must be a table of settings".into()))?;
                    d.config = c
                        .iter()
                        .map(|(k, v)| {
                            toml_scalar(v).map(|s| (k.clone(), s)).ok_or_else(|| {
                                at(format!("config `{k}` must be a string, number or boolean"))
                            })
                        })
                        .collect::<Result<_, _>>()?;
                }
                other => {
                    return Err(at(format!(
                        "unknown key `{other}` (known: file, hooks, prefixes, mode, failure-policy, deadline, memory, order, config)"
                    )));
                }
            }
        }
        d.check().map_err(|e| format!("[plugins.{name}]: {e}"))?;
        out.push(d);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes_and_ranges() {
        assert!(range_meets_prefix(b"/a/b", None, b"/a/"));
        assert!(!range_meets_prefix(b"/b", None, b"/a/"));
        // [/a, /c) holds /b/...
        assert!(range_meets_prefix(b"/a", Some(b"/c"), b"/b/"));
        // [/c, /d) does not hold /b/...
        assert!(!range_meets_prefix(b"/c", Some(b"/d"), b"/b/"));
        // [/b/x, end of keyspace)
        assert!(range_meets_prefix(b"/b/x", Some(b"\0"), b"/b/"));
        // [/a, /b/) ends right where /b/ starts
        assert!(!range_meets_prefix(b"/a", Some(b"/b/"), b"/b/"));
    }

    #[test]
    fn toml_declarations() {
        let t: toml::Table = toml::from_str(
            r#"
[naming]
file = "/x/key-naming.wasm"
hooks = ["validator"]
prefixes = ["/apps/", "/teams/"]
mode = "audit"
failure-policy = "fail-open"
deadline = "20ms"
memory = "8MiB"
order = 3
[naming.config]
pattern = "^/apps/[a-z]+$"
limit = 5
"#,
        )
        .unwrap();
        let d = declarations_from_toml(&t).unwrap();
        assert_eq!(d.len(), 1);
        let d = &d[0];
        assert_eq!(d.name, "naming");
        assert_eq!(d.mode, Mode::Audit);
        assert!(d.fail_open);
        assert_eq!(d.deadline, Duration::from_millis(20));
        assert_eq!(d.memory_bytes, 8 << 20);
        assert_eq!(d.order, 3);
        assert_eq!(d.prefixes.len(), 2);
        assert!(d.hooks.unwrap().validator);
        assert!(d.config.contains(&("limit".into(), "5".into())));

        for bad in [
            "[a]\nfile = 1\n",
            "[a]\nhooks = [\"validator\"]\n",
            "[a]\nfile = \"x\"\nmdoe = \"audit\"\n",
            "[a]\nfile = \"x\"\nmode = \"strict\"\n",
            "[a]\nfile = \"x\"\ndeadline = \"1h\"\n",
            "[\"bad name\"]\nfile = \"x\"\n",
            "[a]\nfile = \"x\"\nmemory = \"1TiB\"\n",
            "[a]\nfile = \"x\"\nprefixes = [\"\"]\n",
        ] {
            let t: toml::Table = toml::from_str(bad).unwrap();
            assert!(declarations_from_toml(&t).is_err(), "{bad}");
        }
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("16MiB"), Ok(16 << 20));
        assert_eq!(parse_size("512KiB"), Ok(512 << 10));
        assert_eq!(parse_size("4096"), Ok(4096));
        assert!(parse_size("lots").is_err());
    }
}
