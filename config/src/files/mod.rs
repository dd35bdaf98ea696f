//! Config files: reading them, telling the three formats apart, and turning
//! each into flag-name → raw-text values that remember their line.
//!
//! Every format ends up in the same shape as the environment and the
//! command line (a raw string per setting), so values from a file are parsed
//! and validated by exactly the code that handles flags. What is specific
//! to a format stays in its module:
//!
//! - `envfile.rs`: the distro `/etc/etcd/etcd.conf` (`ETCD_NAME="m1"`);
//! - `yaml.rs`: etcd's `--config-file` YAML (flag names as keys, durations
//!   as nanoseconds, nested TLS maps);
//! - `tomlfile.rs`: Cairn's own TOML (flag names as keys, native types,
//!   a `[plugins]` table).

mod envfile;
mod tomlfile;
pub(crate) mod yaml;

use std::collections::BTreeMap;
use std::fmt;
use std::io::Read as _;
use std::path::{Path, PathBuf};

use crate::error::{ConfigError, Source};
use crate::registry::{self, SETTINGS, Setting};
use crate::values::closest;

/// Files larger than this are refused: a real config file is a few KiB, and
/// reading without a bound would let a wrong path (a log, a device) eat
/// memory at startup.
pub(crate) const MAX_FILE_BYTES: u64 = 1024 * 1024;

/// The three config-file formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileFormat {
    /// `KEY="value"` lines with `ETCD_*` keys (systemd `EnvironmentFile=`
    /// syntax), as shipped by distro packages in `/etc/etcd/etcd.conf`.
    EnvFile,
    /// etcd's YAML config file.
    Yaml,
    /// Cairn's TOML config file.
    Toml,
}

impl fmt::Display for FileFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            FileFormat::EnvFile => "etcd.conf env-file",
            FileFormat::Yaml => "etcd YAML",
            FileFormat::Toml => "cairn TOML",
        })
    }
}

/// One value read from a file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct FileValue {
    pub(crate) raw: String,
    /// 1-based line of the key.
    pub(crate) line: usize,
    /// The key as spelled in the file.
    pub(crate) key: String,
}

/// A config file after reading and format-specific parsing.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct LoadedFile {
    pub(crate) path: PathBuf,
    pub(crate) format: FileFormat,
    /// Winning value per setting within this file.
    pub(crate) values: BTreeMap<&'static str, FileValue>,
    /// Every value the file assigns, including ones a later line of the same
    /// env-file overrides, for `check` (which validates all of them).
    pub(crate) all_values: Vec<(&'static str, FileValue)>,
    /// The `[plugins]` table of a TOML file.
    pub(crate) plugins: Option<toml::Table>,
    /// Each one starts with `path:line:`.
    pub(crate) warnings: Vec<String>,
}

impl LoadedFile {
    pub(crate) fn source(&self, value: &FileValue) -> Source {
        Source::File {
            path: self.path.clone(),
            line: value.line,
            key: value.key.clone(),
        }
    }
}

/// Reads and parses one config file.
pub(crate) fn load(path: &Path) -> Result<LoadedFile, ConfigError> {
    let text = read_bounded(path)?;
    parse_text(path, &text)
}

/// Most syntax errors [`load_reporting_all`] looks for in one file.
const MAX_SYNTAX_ERRORS: usize = 32;

/// For `check`: every syntax error of the file, not only the first. Each
/// error's line is blanked and the file parsed again (line numbers stay),
/// until it parses or the error has no line; what then parses is returned
/// so its values can be checked too.
pub(crate) fn load_reporting_all(path: &Path) -> (Option<LoadedFile>, Vec<ConfigError>) {
    let mut text = match read_bounded(path) {
        Ok(t) => t,
        Err(e) => return (None, vec![e]),
    };
    let mut errors = Vec::new();
    for _ in 0..MAX_SYNTAX_ERRORS {
        match parse_text(path, &text) {
            Ok(file) => return (Some(file), errors),
            Err(e) => {
                let line = match &e {
                    ConfigError::File {
                        line: Some(line), ..
                    } => *line,
                    _ => {
                        errors.push(e);
                        return (None, errors);
                    }
                };
                let blanked = blank_line(&text, line);
                errors.push(e);
                if blanked == text {
                    return (None, errors);
                }
                text = blanked;
            }
        }
    }
    (None, errors)
}

/// `text` with its 1-based line `line` emptied (the line break kept).
fn blank_line(text: &str, line: usize) -> String {
    text.split_inclusive('\n')
        .enumerate()
        .map(|(i, l)| {
            if i + 1 == line {
                if l.ends_with('\n') { "\n" } else { "" }
            } else {
                l
            }
        })
        .collect()
}

fn read_bounded(path: &Path) -> Result<String, ConfigError> {
    let unreadable =
        |e: std::io::Error| ConfigError::file(path, None, format!("cannot read config file: {e}"));
    let file = std::fs::File::open(path).map_err(unreadable)?;
    let meta = file.metadata().map_err(unreadable)?;
    if meta.is_dir() {
        return Err(ConfigError::file(
            path,
            None,
            "cannot read config file: it is a directory",
        ));
    }
    let mut bytes = Vec::new();
    file.take(MAX_FILE_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(unreadable)?;
    if bytes.len() as u64 > MAX_FILE_BYTES {
        return Err(ConfigError::file(
            path,
            None,
            format!("config file is larger than {MAX_FILE_BYTES} bytes"),
        ));
    }
    let mut text = String::from_utf8(bytes).map_err(|e| {
        let line = line_of_offset_bytes(e.as_bytes(), e.utf8_error().valid_up_to());
        ConfigError::file(path, Some(line), "config file is not valid UTF-8")
    })?;
    // Editors on Windows may save a byte-order mark; no format wants it.
    if text.starts_with('\u{feff}') {
        text.drain(..'\u{feff}'.len_utf8());
    }
    Ok(text)
}

/// Parses file contents; `path` decides the format by extension and is
/// used in messages.
pub(crate) fn parse_text(path: &Path, text: &str) -> Result<LoadedFile, ConfigError> {
    let format = detect(path, text);
    let mut out = Collector::new(path, format);
    match format {
        FileFormat::EnvFile => envfile::parse(text, &mut out)?,
        FileFormat::Yaml => yaml::parse(text, &mut out)?,
        FileFormat::Toml => tomlfile::parse(text, &mut out)?,
    }
    Ok(out.finish())
}

/// The format of a file: by extension (`.toml`, `.yml`, `.yaml`), otherwise
/// by its first line that is not blank or a comment.
///
/// `/etc/etcd/etcd.conf` is an env-file on distros but a YAML file is
/// often given a `.conf` name too, so the content decides: an upper-case
/// `KEY=` start is an env-file, a `[table]` or `key =` start is TOML, and
/// anything else (`key: value`, `---`) is YAML.
pub(crate) fn detect(path: &Path, text: &str) -> FileFormat {
    let ext = path
        .extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase);
    match ext.as_deref() {
        Some("toml") => return FileFormat::Toml,
        Some("yml" | "yaml") => return FileFormat::Yaml,
        _ => {}
    }
    let first = text
        .lines()
        .map(str::trim)
        .find(|l| !l.is_empty() && !l.starts_with('#') && !l.starts_with(';'));
    let Some(first) = first else {
        // Only comments: nothing to read, any format will do.
        return FileFormat::EnvFile;
    };
    if first.starts_with('[') {
        return FileFormat::Toml;
    }
    let key_len = first
        .bytes()
        .take_while(|b| b.is_ascii_alphanumeric() || *b == b'_' || *b == b'-')
        .count();
    let key = &first[..key_len];
    let after = first[key_len..].trim_start();
    if key_len > 0 && after.starts_with('=') {
        let env_like = key
            .bytes()
            .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_');
        return if env_like {
            FileFormat::EnvFile
        } else {
            FileFormat::Toml
        };
    }
    FileFormat::Yaml
}

/// 1-based line number of a byte offset.
pub(crate) fn line_of_offset(text: &str, offset: usize) -> usize {
    line_of_offset_bytes(text.as_bytes(), offset)
}

fn line_of_offset_bytes(bytes: &[u8], offset: usize) -> usize {
    let end = offset.min(bytes.len());
    bytes[..end].iter().filter(|b| **b == b'\n').count() + 1
}

/// Gathers values and warnings while a format module walks its file.
pub(crate) struct Collector<'a> {
    path: &'a Path,
    format: FileFormat,
    values: BTreeMap<&'static str, FileValue>,
    all_values: Vec<(&'static str, FileValue)>,
    /// Where each setting was last assigned, also when it was assigned
    /// "unset" (an empty env-file value, a YAML null), for duplicate checks.
    assigned: BTreeMap<&'static str, (usize, String)>,
    plugins: Option<toml::Table>,
    warnings: Vec<String>,
}

/// What to do when a file assigns the same setting twice.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Duplicates {
    /// systemd lets a later line win; so do we, with a warning.
    LastWins,
    /// YAML: two keys for one setting are a mistake (also across the
    /// flat and the nested TLS spelling).
    Error,
}

impl<'a> Collector<'a> {
    fn new(path: &'a Path, format: FileFormat) -> Self {
        Collector {
            path,
            format,
            values: BTreeMap::new(),
            all_values: Vec::new(),
            assigned: BTreeMap::new(),
            plugins: None,
            warnings: Vec::new(),
        }
    }

    fn finish(self) -> LoadedFile {
        LoadedFile {
            path: self.path.to_path_buf(),
            format: self.format,
            values: self.values,
            all_values: self.all_values,
            plugins: self.plugins,
            warnings: self.warnings,
        }
    }

    pub(crate) fn warn(&mut self, line: usize, message: impl fmt::Display) {
        self.warnings
            .push(format!("{}:{line}: {message}", self.path.display()));
    }

    pub(crate) fn error(&self, line: usize, message: impl Into<String>) -> ConfigError {
        ConfigError::file(self.path, Some(line), message)
    }

    pub(crate) fn set_plugins(&mut self, table: toml::Table) {
        self.plugins = Some(table);
    }

    /// Records `key` (spelled as in the file, on `line`) as setting `s`.
    /// `None` means "unset": an empty env-file value or a YAML null, which
    /// leaves the setting to lower layers, as an empty `ETCD_*` variable does.
    pub(crate) fn assign(
        &mut self,
        s: &'static Setting,
        raw: Option<String>,
        line: usize,
        key: &str,
        duplicates: Duplicates,
    ) -> Result<(), ConfigError> {
        if s.name == "config-file" {
            self.warn(
                line,
                format_args!(
                    "{key} is ignored in a config file; name every config file with --config-file or ETCD_CONFIG_FILE"
                ),
            );
            return Ok(());
        }
        if let Some((first_line, first_key)) = self.assigned.get(s.name) {
            let what = if first_key == key {
                format!("{key} is set again (first on line {first_line})")
            } else {
                format!(
                    "{key} sets --{} again (first as {first_key} on line {first_line})",
                    s.name
                )
            };
            match duplicates {
                Duplicates::Error => return Err(self.error(line, what)),
                Duplicates::LastWins => {
                    self.warn(line, format_args!("{what}; the later value wins"))
                }
            }
        }
        self.assigned.insert(s.name, (line, key.to_string()));
        match raw {
            Some(raw) => {
                let value = FileValue {
                    raw,
                    line,
                    key: key.to_string(),
                };
                self.all_values.push((s.name, value.clone()));
                self.values.insert(s.name, value);
            }
            None => {
                self.values.remove(s.name);
            }
        }
        Ok(())
    }
}

/// A did-you-mean for an unknown env-file key: the same key in upper case
/// if that is a setting, else the closest `ETCD_*` name.
pub(crate) fn suggest_env_key(key: &str) -> Option<String> {
    if let Some(s) = registry::lookup_env(&key.to_ascii_uppercase()) {
        return Some(s.env_var());
    }
    let names: Vec<String> = SETTINGS
        .iter()
        .filter(|s| !s.hidden)
        .map(Setting::env_var)
        .collect();
    closest(key, names.iter().map(String::as_str)).map(str::to_string)
}

/// A did-you-mean for an unknown YAML or TOML key: the flag name if the key
/// is an `ETCD_*` variable, else the closest flag name (or extra key, such
/// as the YAML TLS sections).
pub(crate) fn suggest_flag_key(key: &str, extra: &[&'static str]) -> Option<String> {
    if let Some(s) = registry::lookup_env(&key.to_ascii_uppercase()) {
        return Some(s.name.to_string());
    }
    if let Some(s) = registry::lookup(&key.to_ascii_lowercase().replace('_', "-")) {
        return Some(s.name.to_string());
    }
    let visible = SETTINGS.iter().filter(|s| !s.hidden).map(|s| s.name);
    closest(key, visible.chain(extra.iter().copied())).map(str::to_string)
}

pub(crate) fn did_you_mean(suggestion: Option<String>) -> String {
    match suggestion {
        Some(s) => format!(" (did you mean {s}?)"),
        None => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fmt(path: &str, text: &str) -> FileFormat {
        detect(Path::new(path), text)
    }

    #[test]
    fn format_by_extension_then_content() {
        assert_eq!(fmt("a.toml", "ETCD_NAME=x"), FileFormat::Toml);
        assert_eq!(fmt("a.YML", ""), FileFormat::Yaml);
        assert_eq!(fmt("a.yaml", ""), FileFormat::Yaml);
        let distro = "#[Member]\n#ETCD_CORS=\"\"\n\nETCD_NAME=\"default\"\n";
        assert_eq!(fmt("/etc/etcd/etcd.conf", distro), FileFormat::EnvFile);
        assert_eq!(fmt("etcd.conf", "  ETCD_NAME = x"), FileFormat::EnvFile);
        assert_eq!(fmt("etcd.conf", "# c\nname: m1\n"), FileFormat::Yaml);
        assert_eq!(fmt("etcd.conf", "---\nname: m1\n"), FileFormat::Yaml);
        assert_eq!(fmt("cairn.conf", "name = \"m1\"\n"), FileFormat::Toml);
        assert_eq!(fmt("cairn.conf", "[plugins]\n"), FileFormat::Toml);
        assert_eq!(fmt("empty", "# nothing\n\n"), FileFormat::EnvFile);
    }

    #[test]
    fn line_numbers() {
        let t = "a\nb\nc";
        assert_eq!(line_of_offset(t, 0), 1);
        assert_eq!(line_of_offset(t, 2), 2);
        assert_eq!(line_of_offset(t, 4), 3);
        assert_eq!(line_of_offset(t, 99), 3);
    }

    #[test]
    fn suggestions() {
        assert_eq!(
            suggest_env_key("CD_MAX_SNAPSHOTS").as_deref(),
            Some("ETCD_MAX_SNAPSHOTS")
        );
        assert_eq!(
            suggest_env_key("ETCD_MAX_SNAPSHOT").as_deref(),
            Some("ETCD_MAX_SNAPSHOTS")
        );
        assert_eq!(suggest_env_key("etcd_name").as_deref(), Some("ETCD_NAME"));
        assert_eq!(suggest_env_key("DAEMON_ARGS"), None);
        assert_eq!(suggest_flag_key("ETCD_NAME", &[]).as_deref(), Some("name"));
        assert_eq!(
            suggest_flag_key("data_dir", &[]).as_deref(),
            Some("data-dir")
        );
        assert_eq!(
            suggest_flag_key("heartbeat-intervall", &[]).as_deref(),
            Some("heartbeat-interval")
        );
        assert_eq!(
            suggest_flag_key("client-transport-securty", &["client-transport-security"]).as_deref(),
            Some("client-transport-security")
        );
    }
}
