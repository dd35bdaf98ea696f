//! The distro `etcd.conf`: systemd `EnvironmentFile=` lines with `ETCD_*`
//! keys.
//!
//! ```text
//! #[Member]
//! ETCD_NAME="infra1"            # trailing comments load, with a warning
//! ETCD_DATA_DIR=/var/lib/etcd/default.etcd
//! #ETCD_SNAPSHOT_COUNT="100000"
//! ```
//!
//! Values are read the way systemd reads them, so the file means the same
//! whether systemd loads it into the environment or Cairn reads it: double
//! quotes with `\"`, `\\`, `\$` and `` \` `` escapes, single quotes without
//! escapes, unquoted values with backslash escapes and trailing blanks
//! trimmed. One difference is deliberate: systemd keeps a trailing
//! ` # comment` as part of the value (`"m1" # note` becomes `m1 # note`),
//! which is never what the operator meant; Cairn drops it and warns.

use super::{Collector, Duplicates, did_you_mean, suggest_env_key};
use crate::error::ConfigError;
use crate::registry;

pub(super) fn parse(text: &str, out: &mut Collector<'_>) -> Result<(), ConfigError> {
    for (index, line) in text.split('\n').enumerate() {
        let number = index + 1;
        let line = line.strip_suffix('\r').unwrap_or(line);
        let body = line.trim_start_matches([' ', '\t']);
        // `#` and `;` start comments in systemd env-files; distro files use
        // `#[Member]`-style section headers, which are comments too.
        if body.is_empty() || body.starts_with('#') || body.starts_with(';') {
            continue;
        }
        let assignment = split_line(body).map_err(|why| out.error(number, why))?;
        if assignment.trailing_comment {
            out.warn(
                number,
                format_args!(
                    "the comment after the value of {} is ignored (note that systemd's EnvironmentFile= would keep it as part of the value; put comments on their own line)",
                    assignment.key
                ),
            );
        }
        apply(out, number, assignment.key, assignment.value)?;
    }
    Ok(())
}

fn apply(
    out: &mut Collector<'_>,
    line: usize,
    key: &str,
    value: String,
) -> Result<(), ConfigError> {
    // The same exceptions as for the process environment (see `layers.rs`).
    match key {
        "ETCD_UNSUPPORTED_ARCH" => return Ok(()),
        "ETCD_VERSION" => {
            out.warn(
                line,
                "ignoring ETCD_VERSION: --version cannot be set from a config file",
            );
            return Ok(());
        }
        _ => {}
    }
    let Some(s) = registry::lookup_env(key) else {
        out.warn(
            line,
            format_args!(
                "unknown key {key} ignored{}",
                did_you_mean(suggest_env_key(key))
            ),
        );
        return Ok(());
    };
    // An empty value counts as unset, as an empty variable does.
    let raw = (!value.is_empty()).then_some(value);
    out.assign(s, raw, line, key, Duplicates::LastWins)
}

#[derive(Debug, PartialEq, Eq)]
struct Assignment<'a> {
    key: &'a str,
    value: String,
    trailing_comment: bool,
}

/// Splits `KEY=value` (leading blanks already removed). `Err` says what is
/// wrong, in words that complete "line N: ...".
fn split_line(body: &str) -> Result<Assignment<'_>, String> {
    const SHAPE: &str = "expected KEY=value, a # comment or a blank line";
    let key_len = body
        .bytes()
        .take_while(|b| b.is_ascii_alphanumeric() || *b == b'_')
        .count();
    let key = &body[..key_len];
    if key.is_empty() || key.as_bytes()[0].is_ascii_digit() {
        return Err(format!("{SHAPE}, found {:?}", shorten(body)));
    }
    let Some(rest) = body[key_len..]
        .trim_start_matches([' ', '\t'])
        .strip_prefix('=')
    else {
        return Err(format!("{SHAPE}; {key} is not followed by '='"));
    };
    let blank_after_equals = rest.starts_with([' ', '\t']);
    let rest = rest.trim_start_matches([' ', '\t']);
    let (value, after) = if let Some(quoted) = rest.strip_prefix('"') {
        double_quoted(quoted).ok_or_else(|| format!("the value of {key} has no closing '\"'"))?
    } else if let Some(quoted) = rest.strip_prefix('\'') {
        let end = quoted
            .find('\'')
            .ok_or_else(|| format!("the value of {key} has no closing \"'\""))?;
        (quoted[..end].to_string(), &quoted[end + 1..])
    } else {
        let (value, comment) = unquoted(rest, blank_after_equals)
            .map_err(|why| format!("the value of {key} {why}"))?;
        return Ok(Assignment {
            key,
            value,
            trailing_comment: comment,
        });
    };
    let after = after.trim_matches([' ', '\t']);
    if after.is_empty() {
        return Ok(Assignment {
            key,
            value,
            trailing_comment: false,
        });
    }
    if after.starts_with('#') {
        return Ok(Assignment {
            key,
            value,
            trailing_comment: true,
        });
    }
    Err(format!(
        "unexpected text {:?} after the quoted value of {key}",
        shorten(after)
    ))
}

/// The inside of a double-quoted value up to its closing quote, and what
/// follows the quote. `None` when the quote is not closed on this line
/// (systemd would continue on the next line; no etcd value spans lines).
fn double_quoted(s: &str) -> Option<(String, &str)> {
    let mut value = String::new();
    let mut chars = s.char_indices();
    while let Some((i, c)) = chars.next() {
        match c {
            '"' => return Some((value, &s[i + 1..])),
            '\\' => match chars.next() {
                Some((_, e @ ('"' | '\\' | '$' | '`'))) => value.push(e),
                Some((_, other)) => {
                    value.push('\\');
                    value.push(other);
                }
                None => return None,
            },
            c => value.push(c),
        }
    }
    None
}

/// An unquoted value: backslash escapes the next character, a `#` after a
/// blank starts a trailing comment, surrounding blanks are dropped. Returns
/// the value and whether a comment was cut off. `after_blank` says whether
/// blanks preceded `s` (`KEY= # note` is a comment, `KEY=#1` a value).
fn unquoted(s: &str, mut after_blank: bool) -> Result<(String, bool), &'static str> {
    let mut value = String::new();
    let mut chars = s.chars();
    let mut comment = false;
    while let Some(c) = chars.next() {
        match c {
            '\\' => match chars.next() {
                Some(e) => value.push(e),
                None => return Err("ends with '\\' (values cannot continue on the next line)"),
            },
            '#' if after_blank => {
                comment = true;
                break;
            }
            c => value.push(c),
        }
        after_blank = c == ' ' || c == '\t';
    }
    let trimmed = value.trim_end_matches([' ', '\t']).to_string();
    Ok((trimmed, comment))
}

/// The start of a long line, for messages.
fn shorten(s: &str) -> String {
    const MAX: usize = 40;
    match s.char_indices().nth(MAX) {
        Some((i, _)) => format!("{}...", &s[..i]),
        None => s.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(body: &str) -> (String, String, bool) {
        let a = split_line(body).unwrap_or_else(|e| panic!("{body:?}: {e}"));
        (a.key.to_string(), a.value, a.trailing_comment)
    }

    fn t(key: &str, value: &str, comment: bool) -> (String, String, bool) {
        (key.to_string(), value.to_string(), comment)
    }

    #[test]
    fn value_forms() {
        assert_eq!(ok("ETCD_NAME=m1"), t("ETCD_NAME", "m1", false));
        assert_eq!(ok("ETCD_NAME=\"m1\""), t("ETCD_NAME", "m1", false));
        assert_eq!(ok("ETCD_NAME='m1'"), t("ETCD_NAME", "m1", false));
        assert_eq!(ok("ETCD_NAME = m1  "), t("ETCD_NAME", "m1", false));
        assert_eq!(ok("ETCD_NAME="), t("ETCD_NAME", "", false));
        assert_eq!(ok("ETCD_NAME=\"\""), t("ETCD_NAME", "", false));
        assert_eq!(
            ok("ETCD_NAME=\"a \\\"b\\\" \\\\ \\n\""),
            t("ETCD_NAME", "a \"b\" \\ \\n", false)
        );
        assert_eq!(ok("ETCD_NAME='a \\ b'"), t("ETCD_NAME", "a \\ b", false));
        assert_eq!(ok("ETCD_NAME=a\\ b"), t("ETCD_NAME", "a b", false));
        assert_eq!(ok("ETCD_TOKEN=abc#1"), t("ETCD_TOKEN", "abc#1", false));
        assert_eq!(
            ok("ETCD_NAME=\"m1\" # this node"),
            t("ETCD_NAME", "m1", true)
        );
        assert_eq!(ok("ETCD_NAME='m1'#x"), t("ETCD_NAME", "m1", true));
        assert_eq!(ok("ETCD_NAME=m1 # this node"), t("ETCD_NAME", "m1", true));
        assert_eq!(ok("ETCD_NAME=#x"), t("ETCD_NAME", "#x", false));
        assert_eq!(ok("ETCD_NAME= #x"), t("ETCD_NAME", "", true));
    }

    #[test]
    fn malformed_lines() {
        for (body, want) in [
            ("ETCD_NAME", "ETCD_NAME is not followed by '='"),
            ("ETCD_NAME: m1", "ETCD_NAME is not followed by '='"),
            ("=x", "found \"=x\""),
            ("1ETCD=x", "found \"1ETCD=x\""),
            ("export ETCD_NAME=x", "export is not followed by '='"),
            ("ETCD_NAME=\"m1", "has no closing '\"'"),
            ("ETCD_NAME='m1", "has no closing \"'\""),
            (
                "ETCD_NAME=\"m1\"x",
                "unexpected text \"x\" after the quoted value",
            ),
            ("ETCD_NAME=m1\\", "ends with '\\'"),
        ] {
            let e = split_line(body).unwrap_err();
            assert!(e.contains(want), "{body:?}: {e}");
        }
    }
}
