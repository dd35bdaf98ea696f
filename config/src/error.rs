//! Where a value came from, and what can go wrong.

use std::fmt;
use std::path::PathBuf;

/// Where a resolved setting got its value. Ordered from lowest to highest
/// precedence.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Source {
    /// Cairn's built-in default (or a value derived from other settings,
    /// such as `data-dir` = `<name>.etcd`).
    Default,
    /// A config file: the path as given (or the default path it was found
    /// at), the 1-based line of the key, and the key as spelled in that file
    /// (`ETCD_NAME`, `name`, or `client-transport-security.cert-file`), so a
    /// message can point the operator at exactly what to edit.
    File {
        path: PathBuf,
        line: usize,
        key: String,
    },
    /// An `ETCD_*` environment variable, e.g. `ETCD_NAME`.
    Env { var: String },
    /// A command-line flag, always in its canonical `--name` spelling even if
    /// the user wrote `-name`.
    Flag { flag: String },
}

impl Source {
    /// Whether the operator set this value (anything but a default).
    pub fn is_explicit(&self) -> bool {
        !matches!(self, Source::Default)
    }

    /// The " (from ...)" suffix used in messages. A flag names itself
    /// already, so only other sources add a suffix.
    pub(crate) fn suffix(&self) -> String {
        match self {
            Source::Default | Source::Flag { .. } => String::new(),
            Source::Env { var } => format!(" (from environment variable {var})"),
            Source::File { .. } => self.file_suffix(),
        }
    }

    /// " (from file PATH:LINE, key KEY)" for a file value, else nothing.
    /// Used in messages about combinations of settings, which predate config
    /// files and name flags only: a file value must still be findable.
    pub(crate) fn file_suffix(&self) -> String {
        match self {
            Source::File { path, line, key } => {
                format!(" (from file {}:{line}, key {key})", path.display())
            }
            _ => String::new(),
        }
    }

    /// The short form used by `cairn config show --sources`:
    /// `default`, `file PATH:LINE`, `env VAR`, `flag --name`.
    pub fn short(&self) -> String {
        match self {
            Source::Default => "default".to_string(),
            Source::File { path, line, .. } => format!("file {}:{line}", path.display()),
            Source::Env { var } => format!("env {var}"),
            Source::Flag { flag } => format!("flag {flag}"),
        }
    }
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Source::Default => f.write_str("built-in default"),
            Source::File { path, line, key } => {
                write!(f, "config file {}:{line} (key {key})", path.display())
            }
            Source::Env { var } => write!(f, "environment variable {var}"),
            Source::Flag { flag } => write!(f, "command-line flag {flag}"),
        }
    }
}

/// The winning raw value of one setting and where it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolved {
    /// The text as given (for defaults derived from other settings, the
    /// derived text, e.g. `default.etcd`).
    pub raw: String,
    pub source: Source,
}

/// Why the command line and environment do not make a runnable server.
/// Every message is one line and names the flag (and the environment
/// variable when that is where the value came from).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// A flag that neither etcd 3.4 nor Cairn knows.
    #[error("unknown flag: {flag}{}", did_you_mean(.suggestion))]
    UnknownFlag {
        flag: String,
        suggestion: Option<String>,
    },

    /// A value-taking flag at the end of argv.
    #[error("flag needs an argument: {flag}")]
    MissingValue { flag: String },

    /// Something that starts with `-` but is not a flag (`---x`, `-=x`), or
    /// is not valid UTF-8.
    #[error("bad flag syntax: {arg:?}")]
    BadFlagSyntax { arg: String },

    /// A word that is not a flag. Cairn, like etcd, takes no positional
    /// arguments.
    #[error("unexpected argument {arg:?}: {hint}")]
    UnexpectedArgument { arg: String, hint: String },

    /// A value that does not parse or is out of range for its setting.
    #[error("invalid value {value:?} for {flag}{}: expected {expected}", .origin.suffix())]
    BadValue {
        flag: String,
        origin: Source,
        value: String,
        expected: String,
    },

    /// A recognised flag set to something Cairn cannot do yet.
    #[error("{flag}{}: {what} is not supported yet by cairn ({hint})", .origin.suffix())]
    NotSupportedYet {
        flag: String,
        origin: Source,
        what: String,
        hint: String,
    },

    /// Values that parse but do not fit together (election timeout vs
    /// heartbeat, initial cluster vs advertised URLs, ...).
    #[error("{message}")]
    Invalid { message: String },

    /// A config file that cannot be read or is not well-formed (a line
    /// that is not `KEY=value`, YAML or TOML syntax, a value of the wrong
    /// shape). `line` is 1-based; `None` when the problem is the whole file.
    #[error("{}{}: {message}", .path.display(), line_suffix(.line))]
    File {
        path: PathBuf,
        line: Option<usize>,
        message: String,
    },
}

fn line_suffix(line: &Option<usize>) -> String {
    match line {
        Some(l) => format!(":{l}"),
        None => String::new(),
    }
}

fn did_you_mean(suggestion: &Option<String>) -> String {
    match suggestion {
        Some(s) => format!(" (did you mean {s}?)"),
        None => String::new(),
    }
}

impl ConfigError {
    /// The process exit status for this error, following etcd: 2 when argv
    /// itself is malformed (unknown flag, missing value, stray argument), 1
    /// for every problem with a value or a combination of values.
    pub fn exit_code(&self) -> i32 {
        match self {
            ConfigError::UnknownFlag { .. }
            | ConfigError::MissingValue { .. }
            | ConfigError::BadFlagSyntax { .. }
            | ConfigError::UnexpectedArgument { .. } => 2,
            ConfigError::BadValue { .. }
            | ConfigError::NotSupportedYet { .. }
            | ConfigError::Invalid { .. }
            | ConfigError::File { .. } => 1,
        }
    }

    pub(crate) fn invalid(message: impl Into<String>) -> Self {
        ConfigError::Invalid {
            message: message.into(),
        }
    }

    pub(crate) fn file(
        path: impl Into<PathBuf>,
        line: Option<usize>,
        message: impl Into<String>,
    ) -> Self {
        ConfigError::File {
            path: path.into(),
            line,
            message: message.into(),
        }
    }
}
