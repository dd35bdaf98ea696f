//! The configuration sources as figment providers, and their merge.
//!
//! Each source is a [`Layer`]: a flat map from flag name to raw text plus
//! figment metadata that identifies the source. figment merges the layers
//! (later wins) and tags every value with the layer it came from, so after
//! the merge each setting's provenance is read back from figment itself
//! ([`resolve`]) rather than tracked on the side.
//!
//! Values stay strings in every layer and are parsed once, after the merge,
//! by the same code whatever the source. Each config file (etcd YAML, TOML,
//! the distro env-file) is one more [`Layer`], merged between the defaults
//! and the environment in the order the files were given; the format
//! modules under `files/` have already turned YAML and TOML numbers,
//! booleans and lists into raw text.

use std::collections::BTreeMap;

use figment::value::{Dict, Map, Value};
use figment::{Figment, Metadata, Profile, Provider};

use crate::error::{ConfigError, Resolved, Source};
use crate::files::LoadedFile;
use crate::registry::{self, SETTINGS, Setting, env_var_for};
use crate::values::closest;

/// figment source tags naming our layers; read back in [`source_of`].
const DEFAULTS_TAG: &str = "cairn:defaults";
const ENV_TAG: &str = "cairn:env";
const FLAGS_TAG: &str = "cairn:flags";
/// Followed by the file's index in the list given to [`resolve`].
const FILE_TAG_PREFIX: &str = "cairn:file:";

/// Which source a [`Layer`] holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum LayerKind {
    Defaults,
    /// The n-th config file, lowest precedence first.
    File(usize),
    Env,
    Flags,
}

/// One source of raw setting values.
#[derive(Debug, Clone)]
pub(crate) struct Layer {
    kind: LayerKind,
    values: BTreeMap<&'static str, String>,
    /// For a file layer, where in the file each value is (figment metadata
    /// is per provider, so the line of a key has to be kept here).
    origins: BTreeMap<&'static str, Source>,
    /// For a file layer, its path, for the figment metadata name.
    name: String,
}

impl Layer {
    /// Every setting at its built-in default.
    pub(crate) fn defaults() -> Self {
        Layer::new(
            LayerKind::Defaults,
            SETTINGS
                .iter()
                .map(|s| (s.name, s.default.to_string()))
                .collect(),
        )
    }

    pub(crate) fn flags(flags: Vec<(&'static Setting, String)>) -> Self {
        Layer::new(
            LayerKind::Flags,
            flags.into_iter().map(|(s, v)| (s.name, v)).collect(),
        )
    }

    /// The values of config file number `index` (lowest precedence first).
    pub(crate) fn file(index: usize, file: &LoadedFile) -> Self {
        let mut layer = Layer::new(
            LayerKind::File(index),
            file.values
                .iter()
                .map(|(name, v)| (*name, v.raw.clone()))
                .collect(),
        );
        layer.origins = file
            .values
            .iter()
            .map(|(name, v)| (*name, file.source(v)))
            .collect();
        layer.name = file.path.display().to_string();
        layer
    }

    fn new(kind: LayerKind, values: BTreeMap<&'static str, String>) -> Self {
        Layer {
            kind,
            values,
            origins: BTreeMap::new(),
            name: String::new(),
        }
    }

    /// The `ETCD_*` variables that name a setting. Returns the layer and
    /// warnings for variables that are ignored.
    ///
    /// Like etcd, an empty variable counts as unset (systemd env-files often
    /// carry `ETCD_FOO=` lines), variables without the `ETCD_` prefix are
    /// none of our business, and `ETCD_VERSION` is ignored because container
    /// images set it to describe themselves.
    pub(crate) fn env(env: impl IntoIterator<Item = (String, String)>) -> (Self, Vec<String>) {
        let mut vars: Vec<(String, String)> = env
            .into_iter()
            .filter(|(k, _)| k.starts_with("ETCD_"))
            .collect();
        // Sorted so warnings come out in a stable order whatever the
        // order of the process environment.
        vars.sort();
        let mut values = BTreeMap::new();
        let mut warnings = Vec::new();
        for (var, value) in vars {
            // etcd reads this one itself (to allow running on arm64); it is
            // not a flag, and Cairn runs on every architecture it builds for.
            if var == "ETCD_UNSUPPORTED_ARCH" {
                continue;
            }
            if var == "ETCD_VERSION" {
                warnings.push(format!(
                    "ignoring environment variable ETCD_VERSION={value:?}: --version cannot be set from the environment"
                ));
                continue;
            }
            match registry::lookup_env(&var) {
                Some(s) => {
                    if !value.is_empty() {
                        values.insert(s.name, value);
                    }
                }
                None => warnings.push(unknown_env_warning(&var, &value)),
            }
        }
        (Layer::new(LayerKind::Env, values), warnings)
    }

    pub(crate) fn get(&self, name: &str) -> Option<&str> {
        self.values.get(name).map(String::as_str)
    }

    /// Where in its file a file layer's value of `name` is.
    pub(crate) fn origin(&self, name: &str) -> Option<&Source> {
        self.origins.get(name)
    }
}

fn unknown_env_warning(var: &str, value: &str) -> String {
    // Compare in flag form so `ETCD_INITAL_CLUSTER` finds `initial-cluster`.
    let as_flag = var
        .trim_start_matches("ETCD_")
        .to_ascii_lowercase()
        .replace('_', "-");
    let visible = SETTINGS.iter().filter(|s| !s.hidden).map(|s| s.name);
    let hint = match closest(&as_flag, visible) {
        Some(name) => format!(" (did you mean {}?)", env_var_for(name)),
        None => String::new(),
    };
    format!("unrecognized environment variable {var}={value:?}{hint}")
}

impl Provider for Layer {
    fn metadata(&self) -> Metadata {
        match self.kind {
            LayerKind::Defaults => {
                Metadata::named("cairn built-in defaults").source(DEFAULTS_TAG.to_string())
            }
            LayerKind::File(index) => Metadata::named(format!("config file {}", self.name))
                .source(format!("{FILE_TAG_PREFIX}{index}")),
            LayerKind::Env => Metadata::named("ETCD_* environment variables")
                .source(ENV_TAG.to_string())
                .interpolater(|_: &Profile, keys: &[&str]| env_var_for(&keys.join("."))),
            LayerKind::Flags => Metadata::named("command-line flags")
                .source(FLAGS_TAG.to_string())
                .interpolater(|_: &Profile, keys: &[&str]| format!("--{}", keys.join("."))),
        }
    }

    fn data(&self) -> Result<Map<Profile, Dict>, figment::Error> {
        let dict: Dict = self
            .values
            .iter()
            .map(|(k, v)| ((*k).to_string(), Value::from(v.clone())))
            .collect();
        Ok(Map::from([(Profile::Default, dict)]))
    }
}

/// Merges the layers, lowest precedence first: defaults, the config files in
/// the order given, the environment, the command line.
pub(crate) fn merge_layers(
    defaults: &Layer,
    files: &[Layer],
    env: &Layer,
    flags: &Layer,
) -> Figment {
    let mut figment = Figment::from(defaults);
    for file in files {
        figment = figment.merge(file);
    }
    figment.merge(env).merge(flags)
}

/// Reads every setting's winning value and its source back from figment.
/// `files` are the file layers given to [`merge_layers`], which hold the
/// line of each file value.
pub(crate) fn resolve(
    figment: &Figment,
    files: &[Layer],
) -> Result<BTreeMap<&'static str, Resolved>, ConfigError> {
    // The empty path is the whole merged dictionary of the selected profile.
    // Taking it once matters: every `find_value` call re-merges all layers.
    let merged = figment
        .find_value("")
        .map_err(|e| ConfigError::invalid(format!("configuration sources: {e}")))?;
    let Value::Dict(_, dict) = merged else {
        return Err(ConfigError::invalid(
            "configuration sources did not merge into a dictionary",
        ));
    };
    let mut out = BTreeMap::new();
    for s in SETTINGS {
        let value = dict.get(s.name).ok_or_else(|| {
            ConfigError::invalid(format!("internal error: --{} has no value", s.name))
        })?;
        let source = source_of(figment.get_metadata(value.tag()), s.name, files);
        let raw = value_to_raw(value).ok_or_else(|| ConfigError::BadValue {
            flag: s.flag(),
            origin: source.clone(),
            value: format!("{value:?}"),
            expected: "a single value or a list of values".into(),
        })?;
        out.insert(s.name, Resolved { raw, source });
    }
    Ok(out)
}

/// Maps figment metadata back to our [`Source`], using the interpolater to
/// name the exact variable or flag.
fn source_of(metadata: Option<&Metadata>, name: &str, files: &[Layer]) -> Source {
    let Some(md) = metadata else {
        return Source::Default;
    };
    match md.source.as_ref().and_then(|s| s.custom()) {
        Some(ENV_TAG) => Source::Env {
            var: md.interpolate(&Profile::Default, &[name]),
        },
        Some(FLAGS_TAG) => Source::Flag {
            flag: md.interpolate(&Profile::Default, &[name]),
        },
        Some(tag) if tag.starts_with(FILE_TAG_PREFIX) => tag[FILE_TAG_PREFIX.len()..]
            .parse::<usize>()
            .ok()
            .and_then(|i| files.get(i))
            .and_then(|layer| layer.origins.get(name))
            .cloned()
            .unwrap_or(Source::Default),
        _ => Source::Default,
    }
}

/// A figment value as the raw text our parsers read. Lists become
/// comma-separated text, which is how etcd's YAML file spells URL lists too.
fn value_to_raw(value: &Value) -> Option<String> {
    match value {
        Value::String(_, s) => Some(s.clone()),
        Value::Char(_, c) => Some(c.to_string()),
        Value::Bool(_, b) => Some(b.to_string()),
        Value::Num(_, n) => n
            .to_u128()
            .map(|v| v.to_string())
            .or_else(|| n.to_i128().map(|v| v.to_string()))
            .or_else(|| n.to_f64().map(|v| v.to_string())),
        Value::Empty(..) => Some(String::new()),
        Value::Array(_, items) => {
            let parts: Option<Vec<String>> = items.iter().map(value_to_raw).collect();
            parts.map(|p| p.join(","))
        }
        Value::Dict(..) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn provenance_comes_from_figment_metadata() {
        let defaults = Layer::defaults();
        let (env, _) = Layer::env([
            ("ETCD_NAME".to_string(), "from-env".to_string()),
            ("ETCD_SNAPSHOT_COUNT".to_string(), "5".to_string()),
        ]);
        let flags = Layer::flags(vec![(
            registry::lookup("name").unwrap(),
            "from-flag".into(),
        )]);
        let fig = merge_layers(&defaults, &[], &env, &flags);
        let r = resolve(&fig, &[]).unwrap();
        assert_eq!(
            r["name"],
            Resolved {
                raw: "from-flag".into(),
                source: Source::Flag {
                    flag: "--name".into()
                }
            }
        );
        assert_eq!(
            r["snapshot-count"],
            Resolved {
                raw: "5".into(),
                source: Source::Env {
                    var: "ETCD_SNAPSHOT_COUNT".into()
                }
            }
        );
        assert_eq!(r["max-txn-ops"].source, Source::Default);
        assert_eq!(r["max-txn-ops"].raw, "128");
    }

    #[test]
    fn non_string_values_become_raw_text() {
        assert_eq!(value_to_raw(&Value::from(true)).as_deref(), Some("true"));
        assert_eq!(value_to_raw(&Value::from(100u64)).as_deref(), Some("100"));
        assert_eq!(value_to_raw(&Value::from(-1i64)).as_deref(), Some("-1"));
        let list = Value::from(vec!["http://a:1".to_string(), "http://b:2".to_string()]);
        assert_eq!(
            value_to_raw(&list).as_deref(),
            Some("http://a:1,http://b:2")
        );
        assert_eq!(value_to_raw(&Value::from(Dict::new())), None);
    }

    #[test]
    fn empty_and_foreign_env_vars() {
        let (env, warnings) = Layer::env([
            ("ETCD_NAME".to_string(), String::new()),
            ("PATH".to_string(), "/bin".to_string()),
            ("ETCDCTL_API".to_string(), "3".to_string()),
            ("ETCD_UNSUPPORTED_ARCH".to_string(), "arm64".to_string()),
        ]);
        assert!(env.get("name").is_none());
        assert!(warnings.is_empty(), "{warnings:?}");
    }
}
