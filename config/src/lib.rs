//! Configuration for the `cairn` server: the etcd 3.4 flag set, read from
//! config files, `ETCD_*` environment variables and the command line, and
//! layered with figment.
//!
//! ```no_run
//! match cairn_config::parse_process() {
//!     Ok(cairn_config::Invocation::Serve(cfg)) => {
//!         for w in &cfg.warnings {
//!             eprintln!("warning: {w}");
//!         }
//!         // run the server with *cfg
//!     }
//!     Ok(cairn_config::Invocation::Help(text)) => print!("{text}"),
//!     Ok(cairn_config::Invocation::Version) => println!("cairn ..."),
//!     Err(e) => {
//!         eprintln!("cairn: {e}");
//!         std::process::exit(e.exit_code());
//!     }
//! }
//! ```
//!
//! # Sources and precedence
//!
//! Lowest first: built-in defaults, then config files in the order given,
//! then `ETCD_*` environment variables, then command-line flags. Each is a
//! figment provider (see `layers.rs`); the merged figment tags every value
//! with its source, exposed as [`ServerConfig::source_of`] (for a file
//! value: the path, line and key).
//!
//! Config files come from `--config-file PATH` (repeatable) or
//! `ETCD_CONFIG_FILE` (comma-separated); when neither is set, from the
//! [`DEFAULT_CONFIG_FILES`] that exist. Three formats are read, told apart
//! by extension or content (see `files/`): the distro `etcd.conf` env-file,
//! etcd's YAML file and Cairn's TOML file.
//!
//! For the `cairn config` commands and live reload: [`show`], [`check`],
//! [`ServerConfig::reparse`], [`diff`] and [`apply_live`].
//! `docs/configuration.md` is the operator's guide; its table of settings is
//! generated from the registry and checked by a test.
//!
//! # Deliberate differences from etcd 3.4
//!
//! Cairn is a drop-in replacement, so it accepts everything etcd 3.4.23
//! accepts on the command line, in the environment and in its YAML config
//! file, with the same syntax and meaning, except:
//!
//! 1. **Flag and environment variable both set:** the flag wins and a
//!    warning names both. etcd 3.4 exits instead, which broke distro units
//!    that load `/etc/etcd/etcd.conf` and also pass `--name=${ETCD_NAME}`.
//! 2. **Defaults:** `--pre-vote` and `--enable-v2` default to `true` (etcd
//!    3.4: `false`). Pre-vote keeps a partitioned member from disrupting the
//!    cluster when it returns and is always wanted.
//! 3. **Unknown `ETCD_*` variables** produce a warning, as in etcd, with a
//!    did-you-mean suggestion added. `ETCD_VERSION` is ignored with a
//!    warning (as in etcd); empty variables count as unset (as in etcd);
//!    variables without the `ETCD_` prefix are ignored, and so is
//!    `ETCD_UNSUPPORTED_ARCH` (etcd's arm64 opt-in, meaningless for Cairn).
//! 4. **Not-yet-supported features** (the v2 proxy, v2-on-v3, ...)
//!    are recognised; setting one to anything but its default is an error
//!    rather than being silently ignored. Settings
//!    that only tune etcd internals Cairn lacks (`--max-wals`, bbolt tuning,
//!    `--log-package-levels`) or that Cairn does not vary (`--metrics`) are
//!    accepted with a warning.
//! 5. **Unknown flags** are an error that suggests the closest known flag;
//!    etcd prints its whole usage text instead.
//! 6. **`--help` and `--version`** win wherever they appear on the line, even
//!    after an error; Go's flag parser stops at the first error.
//! 7. **Exit codes:** 2 for malformed argv (unknown flag, missing value,
//!    stray argument), 1 for bad values. etcd also exits 2 for a value that
//!    fails to parse on the command line, and 1 for a stray argument.
//! 8. **URLs:** items of URL lists are trimmed of surrounding whitespace and
//!    keep the order given (etcd sorts them); URLs with a query or fragment
//!    are rejected (etcd ignores those parts).
//! 9. **`--initial-cluster`** items are trimmed and not URL-unescaped (etcd
//!    parses the list as a URL query string); a URL listed twice is an error.
//! 10. **`--quota-backend-bytes`** must be between 0 and 1 TiB; etcd takes a
//!     negative value to mean "no quota".
//! 11. **`--debug`, `--log-output`** and values above etcd's recommended
//!     maximums (`--quota-backend-bytes` over 8 GiB, `--max-request-bytes`
//!     over 10 MiB) produce warnings, where etcd logs the same advice.
//! 12. **A config file does not switch off flags and environment.** etcd
//!     reads only the file once `--config-file` is given and ignores every
//!     other flag and `ETCD_*` variable; Cairn layers them (defaults < files
//!     < environment < flags), so a flag can override one file value.
//!     Several files may be given, and without any, Cairn reads
//!     `/etc/etcd/etcd.conf` and `/etc/cairn/cairn.toml` if they exist (etcd
//!     reads no file by default). `--config-file=` (empty) reads none.
//! 13. **etcd's YAML file:** durations may also be Go duration strings
//!     (`10m`; etcd takes only integer nanoseconds), URL lists may also be
//!     YAML lists, and unknown keys, including anything inside a TLS section
//!     Cairn does not know, produce a warning with a suggestion (etcd
//!     ignores them silently). A setting given twice (also once flat and
//!     once in its TLS section) is an error, and so is a second YAML
//!     document. TLS flag names are also accepted at the top level.
//! 14. **The `etcd.conf` env-file** is read by Cairn itself, in systemd's
//!     syntax, except that a comment after a value (`ETCD_NAME="m1" # note`)
//!     is dropped with a warning, where systemd keeps it in the value.
//!     Unknown keys are warnings with a suggestion. etcd never reads this
//!     file; systemd exports it into etcd's environment.
//! 15. **`--auto-compaction-retention`** is read as a plain decimal number
//!     (as etcd's `Atoi`), not with the Go flag prefixes (`0x..`, leading-0
//!     octal) other integer flags take; a periodic retention longer than
//!     Go's duration limit is an error instead of overflowing.
//! 16. **TLS** (see [`TlsSettings`]): `--client-cert-auth` without
//!     `--trusted-ca-file` is an error (etcd would verify client certificates
//!     against the system roots); Go names of cipher suites rustls does not
//!     implement are dropped with a warning; `--*-crl-file`,
//!     `--*-cert-allowed-hostname` and `--peer-cert-allowed-cn` without
//!     client certificate checks warn that they have no effect. The server
//!     reloads certificates, CA bundles *and* CRL files when they change.

// `ConfigError` carries the offending value and its full source (a file
// path, line and key), which makes it larger than clippy likes in a
// `Result`. Errors are made at most once per start or reload, so boxing them
// would buy nothing and cost clarity at every construction site.
#![allow(clippy::result_large_err)]

mod argv;
mod config;
mod error;
mod files;
mod help;
mod layers;
mod load;
pub mod registry;
mod reload;
mod show;
mod tls;
pub mod values;

#[cfg(test)]
mod docs;
#[cfg(test)]
mod file_tests;
#[cfg(test)]
mod tests;

use std::ffi::OsString;
use std::path::PathBuf;

pub use config::{
    AutoCompactionMode, AutoCompactionRetention, Bootstrap, CONFLICT_BOOTSTRAP_FLAGS, ClusterState,
    DEFAULT_QUOTA_BACKEND_BYTES, DiscoveryFallback, InitialMember, LogLevel,
    MAX_ELECTION_TIMEOUT_MS, MAX_QUOTA_BACKEND_BYTES, MetricsLevel,
    RECOMMENDED_MAX_QUOTA_BACKEND_BYTES, ServerConfig,
};
pub use error::{ConfigError, Resolved, Source};
pub use files::FileFormat;
pub use help::help_text;
pub use load::{DEFAULT_CONFIG_FILES, Sources};
pub use registry::{Kind, Reload, SETTINGS, Section, Setting, Status};
pub use reload::{Change, apply_live, diff, masked_edits};
pub use show::{CheckReport, check, show};
pub use tls::{TLS12_CIPHER_SUITES, TlsFlags, TlsIdentity, TlsSettings, TlsSide};
/// The TOML crate whose `Table` holds [`ServerConfig::plugins`].
pub use toml;
pub use values::{format_go_duration, format_url, parse_go_duration};

/// What the command line asks `cairn` to do.
#[derive(Debug, Clone, PartialEq)]
pub enum Invocation {
    /// Run the server with this configuration.
    Serve(Box<ServerConfig>),
    /// `--version`: print the version and exit 0.
    Version,
    /// `-h` / `--help`: print this text (to stdout) and exit 0.
    Help(String),
}

/// Parses a command line and an environment, and reads the config files
/// they name or, if none, the [`DEFAULT_CONFIG_FILES`] that exist.
///
/// `args` are the arguments **after** the program name (argv\[0\] must not be
/// included). `env` is the whole environment as `(name, value)` pairs;
/// only `ETCD_*` names are looked at. Nothing else is read from the process.
pub fn parse<A, T, E>(args: A, env: E) -> Result<Invocation, ConfigError>
where
    A: IntoIterator<Item = T>,
    T: Into<OsString>,
    E: IntoIterator<Item = (String, String)>,
{
    let defaults: Vec<PathBuf> = DEFAULT_CONFIG_FILES.iter().map(PathBuf::from).collect();
    parse_with(args, env, &defaults)
}

/// [`parse`] with other default config-file paths (looked at, in order, only
/// when neither `--config-file` nor `ETCD_CONFIG_FILE` names a file), so
/// tests never depend on what is in `/etc`. Pass `&[]` for none.
pub fn parse_with<A, T, E>(
    args: A,
    env: E,
    default_config_files: &[PathBuf],
) -> Result<Invocation, ConfigError>
where
    A: IntoIterator<Item = T>,
    T: Into<OsString>,
    E: IntoIterator<Item = (String, String)>,
{
    let args: Vec<OsString> = args.into_iter().map(Into::into).collect();
    let flags = match argv::parse_argv(args)? {
        argv::Argv::Help => return Ok(Invocation::Help(help_text())),
        argv::Argv::Version => return Ok(Invocation::Version),
        argv::Argv::Flags(flags) => flags,
    };
    let flags = flags.into_iter().map(|(s, v)| (s.name, v)).collect();
    let sources = Sources::new(flags, env, default_config_files);
    let config = load::load(sources)?;
    Ok(Invocation::Serve(Box::new(config)))
}

/// [`parse`] on this process's arguments (skipping argv\[0\]) and
/// environment. An `ETCD_*` variable whose value is not UTF-8 is an error;
/// other variables are not looked at.
pub fn parse_process() -> Result<Invocation, ConfigError> {
    let mut env = Vec::new();
    for (key, value) in std::env::vars_os() {
        let Some(key) = key.to_str().filter(|k| k.starts_with("ETCD_")) else {
            continue;
        };
        match value.into_string() {
            Ok(v) => env.push((key.to_string(), v)),
            Err(v) => {
                return Err(ConfigError::BadValue {
                    flag: registry::lookup_env(key).map_or_else(|| key.to_string(), |s| s.flag()),
                    origin: Source::Env {
                        var: key.to_string(),
                    },
                    value: v.to_string_lossy().into_owned(),
                    expected: "valid UTF-8 text".into(),
                });
            }
        }
    }
    parse(std::env::args_os().skip(1), env)
}
