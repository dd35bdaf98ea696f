//! Command-line parsing.
//!
//! etcd parses argv with Go's `flag` package, and operators' systemd units
//! and scripts are written for it: `-name x`, `--name=x`, `-pre-vote`, and
//! `--initial-cluster-token -abc` (Go hands the next token to a value flag
//! even if it starts with a dash). clap does not speak that dialect, so a
//! small lexer first rewrites argv into one canonical token per flag,
//! `--flag=value`, using the registry to know which flags are boolean.
//! clap then matches those tokens against a command generated from the same
//! registry and reports unknown flags.
//!
//! `-h`, `-help`, `--help` and `--version` are found by the lexer and win
//! over everything else on the line, including errors before them.

use std::ffi::OsString;

use clap::error::{ContextKind, ContextValue, ErrorKind};
use clap::parser::ValueSource;
use clap::{Arg, ArgAction, ColorChoice, Command};

use crate::error::{ConfigError, Source};
use crate::registry::{self, SETTINGS, Setting};
use crate::values::{closest, parse_go_bool};

/// What argv asks for.
#[derive(Debug)]
pub(crate) enum Argv {
    Help,
    Version,
    /// The flags given, in registry order, last occurrence winning, except
    /// for `--config-file`: every occurrence counts, joined with commas (the
    /// same list syntax `ETCD_CONFIG_FILE` uses).
    Flags(Vec<(&'static Setting, String)>),
}

/// Lexes `args` (without argv\[0\]) Go-style and matches them with clap.
pub(crate) fn parse_argv(args: Vec<OsString>) -> Result<Argv, ConfigError> {
    let lexed = match lex(&args) {
        Lexed::Help => return Ok(Argv::Help),
        Lexed::Version => return Ok(Argv::Version),
        Lexed::Tokens { tokens, error } => (tokens, error),
    };
    let (tokens, lex_error) = lexed;
    // clap sees the tokens before the first lexing error, so an unknown flag
    // earlier on the line is reported first, as Go would.
    let matches = match command().try_get_matches_from(&tokens) {
        Ok(m) => m,
        Err(e) => return Err(from_clap(&e)),
    };
    if let Some(e) = lex_error {
        return Err(e);
    }
    let mut flags = Vec::new();
    for s in SETTINGS {
        if matches.value_source(s.name) != Some(ValueSource::CommandLine) {
            continue;
        }
        if let Some(values) = matches.get_many::<String>(s.name) {
            let values: Vec<&str> = values.map(String::as_str).collect();
            flags.push((s, values.join(",")));
        }
    }
    Ok(Argv::Flags(flags))
}

enum Lexed {
    Help,
    Version,
    Tokens {
        tokens: Vec<String>,
        error: Option<ConfigError>,
    },
}

/// `--version[=bool]`: whether the version is asked for.
fn version_wanted(value: Option<&str>) -> Result<bool, ConfigError> {
    match value.map(parse_go_bool) {
        None | Some(Some(true)) => Ok(true),
        Some(Some(false)) => Ok(false),
        Some(None) => Err(ConfigError::BadValue {
            flag: "--version".into(),
            origin: Source::Flag {
                flag: "--version".into(),
            },
            value: value.unwrap_or_default().to_string(),
            expected: "true or false".into(),
        }),
    }
}

/// A flag's value given as the next argument (`--name value`).
fn separate_value(setting: &Setting, next: Option<&OsString>) -> Result<String, ConfigError> {
    let Some(next) = next else {
        return Err(ConfigError::MissingValue {
            flag: setting.flag(),
        });
    };
    next.to_str()
        .map(str::to_string)
        .ok_or_else(|| ConfigError::BadValue {
            flag: setting.flag(),
            origin: Source::Flag {
                flag: setting.flag(),
            },
            value: next.to_string_lossy().into_owned(),
            expected: "valid UTF-8 text".into(),
        })
}

/// Go `flag` syntax → canonical `--flag=value` tokens.
fn lex(args: &[OsString]) -> Lexed {
    let mut tokens = Vec::new();
    let mut error: Option<ConfigError> = None;
    // After the first error we keep scanning only to find --help/--version.
    let mut record = |tokens: &mut Vec<String>, e: Result<String, ConfigError>| match e {
        Ok(t) if error.is_none() => tokens.push(t),
        Ok(_) => {}
        Err(e) => {
            if error.is_none() {
                error = Some(e);
            }
        }
    };
    let mut only_positional = false;
    // The last flag if it was a bare boolean, for a hint on `--pre-vote false`.
    let mut bare_bool: Option<&str> = None;
    let mut i = 0;
    while i < args.len() {
        let Some(arg) = args[i].to_str() else {
            let lossy = args[i].to_string_lossy().into_owned();
            record(&mut tokens, Err(ConfigError::BadFlagSyntax { arg: lossy }));
            i += 1;
            continue;
        };
        i += 1;
        let previous_bare_bool = bare_bool.take();

        if only_positional || arg == "-" || !arg.starts_with('-') {
            record(
                &mut tokens,
                Err(positional(arg, i == 1, previous_bare_bool)),
            );
            continue;
        }
        if arg == "--" {
            // Go's terminator: everything after it is positional.
            only_positional = true;
            continue;
        }
        let body = arg.strip_prefix("--").unwrap_or(&arg[1..]);
        if body.is_empty() || body.starts_with('-') || body.starts_with('=') {
            record(
                &mut tokens,
                Err(ConfigError::BadFlagSyntax {
                    arg: arg.to_string(),
                }),
            );
            continue;
        }
        let (name, value) = match body.split_once('=') {
            Some((n, v)) => (n, Some(v)),
            None => (body, None),
        };
        match name {
            "h" | "help" => return Lexed::Help,
            "version" => match version_wanted(value) {
                Ok(true) => return Lexed::Version,
                Ok(false) => continue,
                Err(e) => {
                    record(&mut tokens, Err(e));
                    continue;
                }
            },
            _ => {}
        }
        let Some(setting) = registry::lookup(name) else {
            // Let clap report it (with our suggestion) in argv order.
            record(&mut tokens, Ok(format!("--{body}")));
            continue;
        };
        if setting.kind.is_boolean() {
            if value.is_none() {
                bare_bool = Some(setting.name);
            }
            let v = value.unwrap_or("true");
            record(&mut tokens, Ok(format!("--{}={v}", setting.name)));
            continue;
        }
        let value = match value {
            Some(v) => v.to_string(),
            None => {
                let next = args.get(i);
                if next.is_some() {
                    i += 1;
                }
                match separate_value(setting, next) {
                    Ok(v) => v,
                    Err(e) => {
                        record(&mut tokens, Err(e));
                        continue;
                    }
                }
            }
        };
        record(&mut tokens, Ok(format!("--{}={value}", setting.name)));
    }
    Lexed::Tokens { tokens, error }
}

fn positional(arg: &str, first: bool, after_bare_bool: Option<&str>) -> ConfigError {
    let hint = if first && (arg == "gateway" || arg == "grpc-proxy") {
        format!("cairn has no {arg} mode; it only runs as a server")
    } else if let Some(flag) = after_bare_bool.filter(|_| parse_go_bool(arg).is_some()) {
        format!("boolean flags take their value after '=', as in --{flag}={arg}")
    } else {
        "cairn takes only flags, such as --name=infra1".to_string()
    };
    ConfigError::UnexpectedArgument {
        arg: arg.to_string(),
        hint,
    }
}

/// The one flag whose occurrences add up instead of overriding each other.
const REPEATABLE: &str = "config-file";

/// The clap command for the canonical tokens. Every setting takes exactly
/// one value after `=`; the lexer already turned bare booleans into
/// `--flag=true`.
fn command() -> Command {
    let mut cmd = Command::new("cairn")
        .no_binary_name(true)
        .disable_help_flag(true)
        .disable_version_flag(true)
        .disable_help_subcommand(true)
        // Go's flag package lets a repeated flag overwrite the earlier one.
        .args_override_self(true)
        .color(ColorChoice::Never);
    for s in SETTINGS {
        let action = if s.name == REPEATABLE {
            ArgAction::Append
        } else {
            ArgAction::Set
        };
        cmd = cmd.arg(
            Arg::new(s.name)
                .long(s.name)
                .action(action)
                .num_args(1)
                .require_equals(true)
                .allow_hyphen_values(true),
        );
    }
    cmd
}

/// Turns clap's (multi-line, styled) error into our single-line one.
fn from_clap(e: &clap::Error) -> ConfigError {
    let context = |kind| match e.get(kind) {
        Some(ContextValue::String(s)) => Some(s.clone()),
        _ => None,
    };
    match e.kind() {
        ErrorKind::UnknownArgument => {
            let raw = context(ContextKind::InvalidArg).unwrap_or_default();
            let flag = raw.split('=').next().unwrap_or_default().to_string();
            let suggestion = suggest_flag(flag.trim_start_matches('-'));
            ConfigError::UnknownFlag { flag, suggestion }
        }
        _ => {
            // The lexer only hands clap well-formed `--known=value` tokens
            // and unknown flags, so this is not expected; keep clap's first
            // line rather than losing the information.
            let text = e.to_string();
            let first = text.lines().next().unwrap_or("invalid arguments");
            let arg = first.trim_start_matches("error: ").to_string();
            ConfigError::BadFlagSyntax { arg }
        }
    }
}

/// The visible flag closest to `name`, as `--flag`.
pub(crate) fn suggest_flag(name: &str) -> Option<String> {
    let visible = SETTINGS.iter().filter(|s| !s.hidden).map(|s| s.name);
    closest(name, visible.chain(["help", "version"])).map(|n| format!("--{n}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flags(args: &[&str]) -> Vec<(&'static str, String)> {
        match parse_argv(args.iter().map(OsString::from).collect()) {
            Ok(Argv::Flags(f)) => f.into_iter().map(|(s, v)| (s.name, v)).collect(),
            other => panic!("unexpected {other:?}"),
        }
    }

    fn err(args: &[&str]) -> ConfigError {
        match parse_argv(args.iter().map(OsString::from).collect()) {
            Err(e) => e,
            other => panic!("unexpected {other:?}"),
        }
    }

    fn one(name: &'static str, v: &str) -> Vec<(&'static str, String)> {
        vec![(name, v.to_string())]
    }

    #[test]
    fn go_syntax_forms() {
        for form in [
            &["--name", "x"][..],
            &["--name=x"],
            &["-name", "x"],
            &["-name=x"],
        ] {
            assert_eq!(flags(form), one("name", "x"), "{form:?}");
        }
    }

    #[test]
    fn value_may_start_with_dash_or_contain_equals() {
        assert_eq!(
            flags(&["--initial-cluster-token", "-abc"]),
            one("initial-cluster-token", "-abc")
        );
        assert_eq!(flags(&["--name", "--help"]), one("name", "--help"));
        assert_eq!(
            flags(&["--initial-cluster=a=http://1.2.3.4:2380"]),
            one("initial-cluster", "a=http://1.2.3.4:2380")
        );
        assert_eq!(flags(&["--name="]), one("name", ""));
    }

    #[test]
    fn bare_boolean_does_not_swallow_next_token() {
        assert_eq!(
            flags(&["--pre-vote", "--name", "x"]),
            vec![("name", "x".to_string()), ("pre-vote", "true".to_string())]
        );
        assert_eq!(flags(&["-pre-vote=false"]), one("pre-vote", "false"));
        let e = err(&["--pre-vote", "false"]);
        assert_eq!(
            e.to_string(),
            "unexpected argument \"false\": boolean flags take their value after '=', as in --pre-vote=false"
        );
        assert_eq!(e.exit_code(), 2);
    }

    #[test]
    fn last_occurrence_wins() {
        assert_eq!(flags(&["--name=a", "-name", "b"]), one("name", "b"));
    }

    #[test]
    fn unknown_flag_with_suggestion() {
        let e = err(&["--nmae=x"]);
        assert_eq!(e.to_string(), "unknown flag: --nmae (did you mean --name?)");
        assert_eq!(e.exit_code(), 2);
        let e = err(&["-heartbeat-intervall", "10"]);
        assert_eq!(
            e.to_string(),
            "unknown flag: --heartbeat-intervall (did you mean --heartbeat-interval?)"
        );
        assert_eq!(
            err(&["--zzzzzzzzzzzz"]).to_string(),
            "unknown flag: --zzzzzzzzzzzz"
        );
    }

    #[test]
    fn first_error_in_argv_order() {
        assert_eq!(
            err(&["--bogus", "--name"]).to_string(),
            "unknown flag: --bogus"
        );
        assert_eq!(
            err(&["--name"]).to_string(),
            "flag needs an argument: --name"
        );
        assert_eq!(err(&["--name"]).exit_code(), 2);
    }

    #[test]
    fn bad_syntax_and_positionals() {
        assert_eq!(
            err(&["---name=x"]).to_string(),
            "bad flag syntax: \"---name=x\""
        );
        assert_eq!(err(&["-=x"]).to_string(), "bad flag syntax: \"-=x\"");
        assert_eq!(
            err(&["foo"]).to_string(),
            "unexpected argument \"foo\": cairn takes only flags, such as --name=infra1"
        );
        assert_eq!(
            err(&["--", "--name=x"]).to_string(),
            "unexpected argument \"--name=x\": cairn takes only flags, such as --name=infra1"
        );
        assert_eq!(
            err(&["gateway", "start"]).to_string(),
            "unexpected argument \"gateway\": cairn has no gateway mode; it only runs as a server"
        );
    }

    #[test]
    fn help_and_version_win() {
        for args in [
            &["-h"][..],
            &["--help"],
            &["-help"],
            &["--bogus", "--help"],
            &["--name", "x", "-h", "--version"],
            &["--heartbeat-interval=abc", "--help"],
            &["stray", "--help"],
        ] {
            let got = parse_argv(args.iter().map(OsString::from).collect());
            assert!(matches!(got, Ok(Argv::Help)), "{args:?}: {got:?}");
        }
        for args in [
            &["--version"][..],
            &["-version"],
            &["--version=true", "--help"],
        ] {
            let got = parse_argv(args.iter().map(OsString::from).collect());
            assert!(matches!(got, Ok(Argv::Version)), "{args:?}: {got:?}");
        }
        assert!(flags(&["--version=false"]).is_empty());
    }

    #[test]
    fn config_file_is_repeatable() {
        assert_eq!(
            flags(&["--config-file=a.yml", "-config-file", "b.toml", "--name=x"]),
            vec![
                ("name", "x".to_string()),
                ("config-file", "a.yml,b.toml".to_string())
            ]
        );
        // Other flags still override themselves.
        assert_eq!(flags(&["--name=a", "--name=b"]), one("name", "b"));
    }

    #[test]
    fn legacy_ignored_flags_are_boolean_like() {
        assert_eq!(flags(&["-v"]), one("v", "true"));
        assert_eq!(
            flags(&["--peer-heartbeat-interval=50"]),
            one("peer-heartbeat-interval", "50")
        );
    }
}
