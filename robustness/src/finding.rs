//! A violation found by the watch, lease or durability checker: what broke,
//! and the few calls and events that show it.

use serde::Serialize;

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Finding {
    /// "watch", "lease" or "durability".
    pub checker: &'static str,
    /// A short stable name ("missing-event", "early-expiry", ...).
    pub kind: &'static str,
    pub message: String,
    /// The history ops involved.
    pub ops: Vec<u64>,
    /// The slice: ops, events, watches, one per line.
    pub lines: Vec<String>,
}

impl Finding {
    pub fn render(&self) -> String {
        let mut s = format!(
            "{} violation [{}]: {}\n",
            self.checker, self.kind, self.message
        );
        for l in &self.lines {
            s.push_str(&format!("    {l}\n"));
        }
        s
    }
}
