//! From sources to a [`ServerConfig`]: which config files to read, the
//! layer merge, and the record of the inputs that lets a reload parse again.

use std::collections::BTreeMap;
use std::path::PathBuf;

use crate::config::{self, Extras, ServerConfig};
use crate::error::{ConfigError, Resolved, Source};
use crate::files::{self, LoadedFile};
use crate::layers::{self, Layer};
use crate::registry::{self, SETTINGS};
use crate::values::split_list;

/// Where Cairn looks for config files when neither `--config-file` nor
/// `ETCD_CONFIG_FILE` names any: the distro env-files (Debian's and
/// Ubuntu's /etc/default/etcd, the RPM distros' /etc/etcd/etcd.conf) and
/// Cairn's own TOML. Those that exist are read, in this order (so the TOML
/// file wins).
pub const DEFAULT_CONFIG_FILES: [&str; 3] = [
    "/etc/default/etcd",
    "/etc/etcd/etcd.conf",
    "/etc/cairn/cairn.toml",
];

/// The inputs a configuration was parsed from: the command line (already
/// normalised to one value per flag), the `ETCD_*` environment, and the
/// default config-file paths in use. Config files themselves are not kept:
/// [`ServerConfig::reparse`] reads them again, which is the point of a
/// reload.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Sources {
    flags: Vec<(&'static str, String)>,
    env: Vec<(String, String)>,
    default_config_files: Vec<PathBuf>,
    /// Whether environment variables that merely repeat a config file's
    /// value are still to be recognised (the first parse only; see
    /// [`adopt_env_copies`]).
    adopt_pending: bool,
    /// The variables recognised as copies, with the file line they copy.
    adopted: Vec<(String, Source)>,
}

impl Sources {
    pub(crate) fn new(
        flags: Vec<(&'static str, String)>,
        env: impl IntoIterator<Item = (String, String)>,
        default_config_files: &[PathBuf],
    ) -> Self {
        // Only `ETCD_*` variables can matter; keeping the rest would hold on
        // to unrelated (possibly secret) values and make two configurations
        // from the same settings compare unequal.
        let mut env: Vec<(String, String)> = env
            .into_iter()
            .filter(|(k, _)| k.starts_with("ETCD_"))
            .collect();
        env.sort();
        Sources {
            flags,
            env,
            default_config_files: default_config_files.to_vec(),
            adopt_pending: true,
            adopted: Vec::new(),
        }
    }

    /// `ETCD_*` variables set to exactly what a config file says, taken as
    /// copies of that file (systemd's `EnvironmentFile=`, as the Debian and
    /// RPM etcd units load /etc/default/etcd and /etc/etcd/etcd.conf):
    /// the file decides those settings, so its edits reload live.
    pub fn adopted_env(&self) -> &[(String, Source)] {
        &self.adopted
    }

    /// The command-line flags, as `(flag name, value)` in registry order.
    pub fn flags(&self) -> &[(&'static str, String)] {
        &self.flags
    }

    /// The `ETCD_*` environment variables, sorted.
    pub fn env(&self) -> &[(String, String)] {
        &self.env
    }

    /// The paths looked at when no config file is named.
    pub fn default_config_files(&self) -> &[PathBuf] {
        &self.default_config_files
    }
}

/// Parses everything: flags, environment, and the config files they name
/// (or the default ones), read now.
pub(crate) fn load(mut sources: Sources) -> Result<ServerConfig, ConfigError> {
    let (mut env, mut warnings) = Layer::env(sources.env.clone());
    let flag_settings = sources
        .flags
        .iter()
        .map(|(name, value)| {
            registry::lookup(name)
                .map(|s| (s, value.clone()))
                .ok_or_else(|| ConfigError::invalid(format!("internal error: no setting --{name}")))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let flags = Layer::flags(flag_settings);
    warnings.extend(conflict_warnings(&env, &flags));

    let (paths, discovered) = config_file_paths(&flags, &env, &sources.default_config_files);
    let mut loaded = Vec::with_capacity(paths.len());
    for path in &paths {
        loaded.push(files::load(path)?);
    }
    if std::mem::take(&mut sources.adopt_pending) {
        sources.adopted = adopt_env_copies(&env, &loaded);
        if !sources.adopted.is_empty() {
            let copies: Vec<&str> = sources.adopted.iter().map(|(v, _)| v.as_str()).collect();
            sources.env.retain(|(k, _)| !copies.contains(&k.as_str()));
            env = Layer::env(sources.env.clone()).0;
        }
    }
    assemble(sources, &env, &flags, loaded, warnings, discovered)
}

/// The environment variables whose value is the one a config file gives
/// the same setting (the last file that sets it): under systemd's
/// `EnvironmentFile=` every line of the file is also in the environment,
/// which would otherwise override the file for good and make every later
/// edit of it a no-op. Recognised once, at startup: a variable that only
/// comes to equal a file's value after an edit stays an override.
fn adopt_env_copies(env: &Layer, files: &[LoadedFile]) -> Vec<(String, Source)> {
    let layers: Vec<Layer> = files
        .iter()
        .enumerate()
        .map(|(i, f)| Layer::file(i, f))
        .collect();
    SETTINGS
        .iter()
        .filter(|s| s.name != "config-file")
        .filter_map(|s| {
            let value = env.get(s.name)?;
            let file = last_setting(&layers, s.name)?;
            let in_file = file.get(s.name)?;
            if !config::same_value(s, value, in_file) {
                return None;
            }
            Some((s.env_var(), file.origin(s.name)?.clone()))
        })
        .collect()
}

/// The last (highest-precedence) file layer that sets `name`.
fn last_setting<'a>(file_layers: &'a [Layer], name: &str) -> Option<&'a Layer> {
    file_layers.iter().rev().find(|l| l.get(name).is_some())
}

/// File values that an environment variable or a flag overrides: for each
/// such setting, the value of the last file that sets it.
fn shadowed_file_values(
    resolved: &BTreeMap<&'static str, Resolved>,
    file_layers: &[Layer],
) -> BTreeMap<&'static str, Resolved> {
    SETTINGS
        .iter()
        .filter(|s| s.name != "config-file")
        .filter_map(|s| {
            let r = resolved.get(s.name)?;
            if !matches!(r.source, Source::Env { .. } | Source::Flag { .. }) {
                return None;
            }
            let file = last_setting(file_layers, s.name)?;
            Some((
                s.name,
                Resolved {
                    raw: file.get(s.name)?.to_string(),
                    source: file.origin(s.name)?.clone(),
                },
            ))
        })
        .collect()
}

/// Merges the layers and builds the configuration. `discovered` says the
/// files were found at default paths (no `--config-file`), which is then
/// shown as the derived value of `config-file`. The error is the first
/// problem found.
pub(crate) fn assemble(
    sources: Sources,
    env: &Layer,
    flags: &Layer,
    files: Vec<LoadedFile>,
    warnings: Vec<String>,
    discovered: bool,
) -> Result<ServerConfig, ConfigError> {
    assemble_all(sources, env, flags, files, warnings, discovered).map_err(|errors| {
        errors.into_iter().next().unwrap_or_else(|| {
            ConfigError::invalid("internal error: validation failed without a reason")
        })
    })
}

/// [`assemble`], reporting every problem (see [`config::build_all`]).
fn assemble_all(
    sources: Sources,
    env: &Layer,
    flags: &Layer,
    files: Vec<LoadedFile>,
    mut warnings: Vec<String>,
    discovered: bool,
) -> Result<ServerConfig, Vec<ConfigError>> {
    let defaults = Layer::defaults();
    let file_layers: Vec<Layer> = files
        .iter()
        .enumerate()
        .map(|(i, f)| Layer::file(i, f))
        .collect();
    let figment = layers::merge_layers(&defaults, &file_layers, env, flags);
    let mut resolved = layers::resolve(&figment, &file_layers).map_err(|e| vec![e])?;
    let shadowed = shadowed_file_values(&resolved, &file_layers);

    let config_files: Vec<PathBuf> = files.iter().map(|f| f.path.clone()).collect();
    if discovered
        && !config_files.is_empty()
        && let Some(r) = resolved.get_mut("config-file")
    {
        r.raw = join_paths(&config_files);
    }
    let mut plugins = toml::Table::new();
    for file in &files {
        warnings.extend(file.warnings.iter().cloned());
        if let Some(table) = &file.plugins {
            for (name, value) in table {
                plugins.insert(name.clone(), value.clone());
            }
        }
    }
    let annotate = shadowed.clone();
    config::build_all(
        resolved,
        warnings,
        Extras {
            sources,
            config_files,
            plugins,
            shadowed,
        },
    )
    .map_err(|errors| {
        errors
            .into_iter()
            .map(|e| say_what_it_overrides(e, &annotate))
            .collect()
    })
}

/// A bad value from the environment or a flag, for a setting a config file
/// also sets: says so, since the operator may be looking at the file.
fn say_what_it_overrides(
    e: ConfigError,
    shadowed: &BTreeMap<&'static str, Resolved>,
) -> ConfigError {
    let ConfigError::BadValue { flag, .. } = &e else {
        return e;
    };
    let name = flag.trim_start_matches('-');
    match shadowed.get(name) {
        Some(file) => {
            ConfigError::invalid(format!("{e} (it overrides {}: {})", file.source, file.raw))
        }
        None => e,
    }
}

/// The config files to read, and whether they came from the default paths.
/// `--config-file` wins over `ETCD_CONFIG_FILE`; when neither is set, the
/// default paths that exist are used. `--config-file=` (empty) reads none.
fn config_file_paths(flags: &Layer, env: &Layer, defaults: &[PathBuf]) -> (Vec<PathBuf>, bool) {
    if let Some(list) = flags.get("config-file").or_else(|| env.get("config-file")) {
        return (
            split_list(list).into_iter().map(PathBuf::from).collect(),
            false,
        );
    }
    let found = defaults
        .iter()
        // A path that exists but cannot be inspected (permissions) is kept,
        // so that reading it reports the problem instead of skipping the
        // operator's file silently.
        .filter(|p| match std::fs::metadata(p) {
            Ok(_) => true,
            Err(e) => e.kind() != std::io::ErrorKind::NotFound,
        })
        .cloned()
        .collect();
    (found, true)
}

fn join_paths(paths: &[PathBuf]) -> String {
    paths
        .iter()
        .map(|p| p.display().to_string())
        .collect::<Vec<_>>()
        .join(",")
}

/// One warning per setting given both ways (etcd 3.4 would exit).
fn conflict_warnings(env: &Layer, flags: &Layer) -> Vec<String> {
    SETTINGS
        .iter()
        .filter_map(|s| {
            let env_value = env.get(s.name)?;
            let flag_value = flags.get(s.name)?;
            Some(format!(
                "both {}={flag_value:?} (command line) and {}={env_value:?} (environment) are set; using the command-line value",
                s.flag(),
                s.env_var(),
            ))
        })
        .collect()
}

/// Config files checked on their own, for [`crate::check`]: defaults under
/// them, no environment, no flags; every problem found.
pub(crate) fn assemble_files_only(
    files: Vec<LoadedFile>,
) -> Result<ServerConfig, Vec<ConfigError>> {
    let (env, _) = Layer::env(Vec::new());
    let flags = Layer::flags(Vec::new());
    assemble_all(Sources::default(), &env, &flags, files, Vec::new(), false)
}
