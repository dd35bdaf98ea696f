//! From sources to a [`ServerConfig`]: which config files to read, the
//! layer merge, and the record of the inputs that lets a reload parse again.

use std::path::PathBuf;

use crate::config::{self, Extras, ServerConfig};
use crate::error::ConfigError;
use crate::files::{self, LoadedFile};
use crate::layers::{self, Layer};
use crate::registry::{self, SETTINGS};
use crate::values::split_list;

/// Where Cairn looks for config files when neither `--config-file` nor
/// `ETCD_CONFIG_FILE` names any: the distro env-file and Cairn's own TOML.
/// Those that exist are read, in this order (so the TOML file wins).
pub const DEFAULT_CONFIG_FILES: [&str; 2] = ["/etc/etcd/etcd.conf", "/etc/cairn/cairn.toml"];

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
        }
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
pub(crate) fn load(sources: Sources) -> Result<ServerConfig, ConfigError> {
    let (env, mut warnings) = Layer::env(sources.env.clone());
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
    assemble(sources, &env, &flags, loaded, warnings, discovered)
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
    config::build_all(
        resolved,
        warnings,
        Extras {
            sources,
            config_files,
            plugins,
        },
    )
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
