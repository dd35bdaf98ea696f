//! `cairn config show` and `cairn config check`: the effective
//! configuration as text, and a config-file test in the spirit of `nginx -t`.
//! Both return text and exit codes; printing is the binary's job.

use std::fmt;
use std::path::PathBuf;

use crate::config::{self, ServerConfig};
use crate::error::ConfigError;
use crate::files;
use crate::load;
use crate::registry::{self, SETTINGS, Setting};

/// What `show` prints instead of a secret value.
const MASK: &str = "********";

/// The effective configuration, one `name = value` line per setting in
/// registry order. Hidden settings (etcd's undocumented and legacy flags)
/// are listed only when set. With `with_sources`, each line ends in
/// `  # from default`, `# from file PATH:LINE`, `# from env VAR` or
/// `# from flag --name`. Values of secret settings are masked. A `[plugins]`
/// table, if any, follows as TOML, its plugins' `config` values masked.
pub fn show(cfg: &ServerConfig, with_sources: bool) -> String {
    let mut out = String::new();
    for s in SETTINGS {
        let Some(r) = cfg.resolved().get(s.name) else {
            continue;
        };
        // Hidden settings only when set; `config-file` also when found at a
        // default path, so the output says which files were read.
        let found_file = s.name == "config-file" && !r.raw.is_empty();
        if s.hidden && !r.source.is_explicit() && !found_file {
            continue;
        }
        out.push_str(s.name);
        out.push_str(" = ");
        out.push_str(&display_value(s, &r.raw));
        if with_sources {
            out.push_str("  # from ");
            out.push_str(&r.source.short());
            if let Some(file) = cfg.shadowed_file_values().get(s.name) {
                out.push_str(&format!(
                    ", overriding {} = {}",
                    file.source.short(),
                    display_value(s, &file.raw)
                ));
            }
            let var = s.env_var();
            if cfg.sources().adopted_env().iter().any(|(v, _)| *v == var) {
                out.push_str(&format!(
                    " (also in the environment as {var}, a copy of the file)"
                ));
            }
        }
        out.push('\n');
    }
    if !cfg.plugins.is_empty() {
        let mut doc = toml::Table::new();
        doc.insert(
            "plugins".to_string(),
            toml::Value::Table(masked_plugin_config(&cfg.plugins)),
        );
        out.push('\n');
        out.push_str(&toml::to_string(&doc).unwrap_or_else(|e| format!("# plugins: {e}\n")));
    }
    out
}

/// `[plugins]` with every value of each plugin's `config` map masked: those
/// maps hold whatever the plugin needs, secrets included (the hmac-auth
/// example's signing key), and `show` output ends up in terminals and
/// tickets. The keys stay, so an operator can still see what is set.
fn masked_plugin_config(plugins: &toml::Table) -> toml::Table {
    let mut out = plugins.clone();
    for (_, decl) in out.iter_mut() {
        if let Some(toml::Value::Table(config)) =
            decl.as_table_mut().and_then(|d| d.get_mut("config"))
        {
            for (_, v) in config.iter_mut() {
                *v = toml::Value::String(MASK.to_string());
            }
        }
    }
    out
}

/// A raw value as `show` prints it: masked if secret, `""` if empty.
fn display_value(s: &Setting, raw: &str) -> String {
    if raw.is_empty() {
        "\"\"".to_string()
    } else if s.secret {
        MASK.to_string()
    } else {
        raw.to_string()
    }
}

/// The outcome of [`check`].
#[derive(Debug, Clone, PartialEq)]
pub struct CheckReport {
    /// No errors (warnings allowed).
    pub ok: bool,
    /// The files checked, in the order given.
    pub files: Vec<PathBuf>,
    /// Every problem found; each names the file, the line and the key
    /// where one is involved, and says what is allowed.
    pub errors: Vec<ConfigError>,
    pub warnings: Vec<String>,
    /// The merged configuration when every value and combination is
    /// valid: what the server checks further (TLS files, plugins).
    pub config: Option<Box<crate::ServerConfig>>,
}

impl CheckReport {
    /// The exit status for `cairn config check`: 0 valid, 1 invalid.
    pub fn exit_code(&self) -> i32 {
        if self.ok { 0 } else { 1 }
    }

    /// Records a problem found beyond the files' syntax and values (a TLS
    /// file that does not load, a plugin that does not compile).
    pub fn add_error(&mut self, message: impl Into<String>) {
        self.errors.push(ConfigError::invalid(message));
        self.ok = false;
    }
}

impl fmt::Display for CheckReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for w in &self.warnings {
            writeln!(f, "warning: {w}")?;
        }
        for e in &self.errors {
            writeln!(f, "error: {e}")?;
        }
        let what = match self.files.as_slice() {
            [] => "built-in defaults (no config file given)".to_string(),
            [one] => format!("config file {}", one.display()),
            many => format!(
                "config files {}",
                many.iter()
                    .map(|p| p.display().to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        };
        if self.ok {
            writeln!(f, "{what}: ok")
        } else {
            let n = self.errors.len();
            let plural = if n == 1 { "" } else { "s" };
            writeln!(f, "{what}: invalid ({n} error{plural})")
        }
    }
}

/// Checks config files on their own: each is read and parsed, every value in
/// it is checked (syntax, range and support; also a value that a later file
/// overrides, since the file is wrong either way), and then, when every
/// value is fine on its own, the files are merged over the built-in
/// defaults, without environment or flags, and every rule about
/// combinations of settings is checked. One problem never hides another
/// that can be judged without it.
pub fn check(paths: &[PathBuf]) -> CheckReport {
    let mut errors = Vec::new();
    let mut warnings = Vec::new();
    let mut loaded = Vec::new();
    for path in paths {
        let (file, found) = files::load_reporting_all(path);
        errors.extend(found);
        loaded.extend(file);
    }
    for file in &loaded {
        warnings.extend(file.warnings.iter().cloned());
        for (name, value) in &file.all_values {
            let Some(s) = registry::lookup(name) else {
                continue;
            };
            if let Err(e) = config::check_value(s, &value.raw, &file.source(value)) {
                errors.push(e);
            }
        }
    }
    let mut config = None;
    if errors.is_empty() {
        match load::assemble_files_only(loaded) {
            // The build repeats the files' warnings and adds its own.
            Ok(cfg) => {
                warnings = cfg.warnings.clone();
                config = Some(Box::new(cfg));
            }
            Err(all) => errors.extend(all),
        }
    }
    CheckReport {
        ok: errors.is_empty(),
        files: paths.to_vec(),
        errors,
        warnings,
        config,
    }
}
