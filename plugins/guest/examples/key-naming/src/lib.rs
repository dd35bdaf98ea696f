//! Key naming rules: every key written under one of the configured prefixes
//! must match a regular expression.
//!
//! Config:
//! - `prefixes`: comma-separated key prefixes the rule applies to
//!   (e.g. `/apps/,/teams/`). Keys elsewhere are not checked.
//! - `pattern`: a regular expression (regex-lite syntax) the *whole* key
//!   must match (e.g. `^/apps/[a-z0-9-]+/[a-z0-9._-]+$`; anchors are added
//!   when missing).
//!
//! Only puts are checked: deletes are always allowed, so that badly named
//! keys can be cleaned up. Misconfiguration fails closed, with a reason
//! naming the setting: without `prefixes` every put is denied; without a
//! valid `pattern` every put under the prefixes is.

use cairn_plugin_sdk::host::{self, Config};
use cairn_plugin_sdk::{Operation, Validator, Verdict, WriteRequest, export_validator};
use regex_lite::Regex;

struct KeyNaming;

impl Validator for KeyNaming {
    fn validate(request: WriteRequest) -> Verdict {
        if request.op != Operation::Put {
            return Verdict::Allow;
        }
        match check(&host::config(), &request.key) {
            Ok(()) => Verdict::Allow,
            Err(reason) => {
                host::debug(&reason);
                Verdict::Deny(reason)
            }
        }
    }
}

fn check(config: &Config, key: &[u8]) -> Result<(), String> {
    let prefixes = config.list("prefixes");
    if prefixes.is_empty() {
        return Err("plugin misconfigured: setting `prefixes` is missing".into());
    }
    let Some(prefix) = prefixes.iter().find(|p| key.starts_with(p.as_bytes())) else {
        return Ok(());
    };
    let pattern = config.require("pattern")?;
    let regex = Regex::new(&anchored(pattern))
        .map_err(|e| format!("plugin misconfigured: `pattern` is not a valid regex: {e}"))?;
    let Ok(key) = std::str::from_utf8(key) else {
        return Err(format!("keys under {prefix:?} must be UTF-8 text"));
    };
    if regex.is_match(key) {
        Ok(())
    } else {
        Err(format!(
            "key {key:?} under {prefix:?} does not match the naming pattern {pattern}"
        ))
    }
}

/// Makes the pattern match whole keys only.
fn anchored(pattern: &str) -> String {
    let start = if pattern.starts_with('^') { "" } else { "^" };
    let end = if pattern.ends_with('$') { "" } else { "$" };
    format!(
        "{start}(?:{}){end}",
        pattern.trim_start_matches('^').trim_end_matches('$')
    )
}

export_validator!(KeyNaming);
