//! What a failed plugin call means for the request: one rule, applied the
//! same way everywhere the server calls a plugin.

use crate::state::truncate_utf8;
use crate::{AuthOutcome, PluginError, Verdict};

/// Longest deny reason passed on to a client (bytes); longer ones are cut.
pub const MAX_DENY_REASON_BYTES: usize = 1024;

/// What to do when a plugin could not give an answer (trap, timeout, out of
/// memory, busy host, missing hook...).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub enum FailurePolicy {
    /// Treat a failure as a denial (validators, authorizers) or a refusal
    /// (authenticators). The safe default: a broken policy blocks writes
    /// rather than letting everything through.
    #[default]
    FailClosed,
    /// Treat a failure as "no objection": allow (validators, authorizers) or
    /// abstain (authenticators: failing open never authenticates anybody,
    /// it lets the next authenticator decide).
    FailOpen,
}

impl FailurePolicy {
    /// Turns the result of [`LoadedPlugin::validate`] or
    /// [`LoadedPlugin::authorize`] into the verdict to enforce. A failure is
    /// logged here (with the plugin's name) so callers need not.
    ///
    /// [`LoadedPlugin::validate`]: crate::LoadedPlugin::validate
    /// [`LoadedPlugin::authorize`]: crate::LoadedPlugin::authorize
    pub fn verdict(self, result: Result<Verdict, PluginError>) -> Verdict {
        match result {
            Ok(verdict) => verdict,
            Err(err) => {
                log_failure(self, &err);
                match self {
                    FailurePolicy::FailClosed => {
                        Verdict::Deny(format!("plugin failed ({}): {err}", err.kind()))
                    }
                    FailurePolicy::FailOpen => Verdict::Allow,
                }
            }
        }
    }

    /// Turns the result of [`LoadedPlugin::authenticate`] into the outcome
    /// to enforce.
    ///
    /// [`LoadedPlugin::authenticate`]: crate::LoadedPlugin::authenticate
    pub fn auth_outcome(self, result: Result<AuthOutcome, PluginError>) -> AuthOutcome {
        match result {
            Ok(outcome) => outcome,
            Err(err) => {
                log_failure(self, &err);
                match self {
                    FailurePolicy::FailClosed => {
                        AuthOutcome::Refused(format!("plugin failed ({}): {err}", err.kind()))
                    }
                    FailurePolicy::FailOpen => AuthOutcome::Abstain,
                }
            }
        }
    }
}

fn log_failure(policy: FailurePolicy, err: &PluginError) {
    tracing::warn!(
        target: "cairn_plugin",
        plugin = err.plugin(),
        kind = err.kind(),
        ?policy,
        "plugin call failed: {err}"
    );
}

/// The text a client gets when plugin `plugin` denied its request with
/// `reason`: names the plugin, keeps the reason (cut to
/// [`MAX_DENY_REASON_BYTES`]).
pub fn denial_message(plugin: &str, reason: &str) -> String {
    format!(
        "denied by plugin `{plugin}`: {}",
        truncate_utf8(reason, MAX_DENY_REASON_BYTES)
    )
}
