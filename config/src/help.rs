//! `cairn --help`: etcd-style usage, grouped by section, generated from the
//! registry so it can never list a flag the parser does not know (or miss
//! one it does).

use std::fmt::Write as _;

use crate::registry::{SETTINGS, Section, Status};

/// The full help text, ending in a newline.
pub fn help_text() -> String {
    let mut out = String::new();
    out.push_str(
        "Usage:

  cairn [flags]
    Start a cairn server (an etcd 3.4 compatible key-value store).

  cairn --version
    Print the version and exit.

  cairn -h | --help
    Print this help and exit.

  cairn --config-file PATH [--config-file PATH ...] [flags]
    Read settings from config files: etcd's YAML file, the distro etcd.conf
    (ETCD_NAME=\"...\" lines) or cairn TOML. Later files win over earlier ones;
    ETCD_* variables and flags win over files. ETCD_CONFIG_FILE may name files
    too (comma-separated). Without either, /etc/default/etcd,
    /etc/etcd/etcd.conf and /etc/cairn/cairn.toml are read if they exist;
    --config-file= reads none. An ETCD_* variable equal to a file's value at
    start (systemd's EnvironmentFile= loading that file) counts as the
    file's, so edits to the file still reload live.

  cairn config show|check|status ...
    Print the effective configuration, validate config files (TLS files and
    plugins included), or ask a running member for its last reload outcome.

  cairn snapshot save|restore|status ...
    etcdctl's snapshot tools, for etcd's snapshots (bbolt files) and Cairn's.

  cairn plugin deploy|list|remove|dry-run|check ...
    Manage the cluster's WebAssembly policy plugins.

  Run a subcommand without arguments (or with --help) for its usage. The
  ones that talk to a cluster take etcdctl's connection flags (--endpoints,
  --cacert, --cert, --key, --user) and their ETCDCTL_* variables.

Flags take the forms --flag=value, --flag value, -flag=value and -flag value;
boolean flags may be given bare (--pre-vote) or as --pre-vote=false. Every flag
can also be set with an environment variable named ETCD_ plus the flag in upper
case with dashes as underscores (--initial-cluster-token is
ETCD_INITIAL_CLUSTER_TOKEN), and in a config file under its flag name. A flag
wins over its environment variable.
Flags marked (not supported yet) are recognised but refuse any value other
than their default.
",
    );
    for section in Section::ALL {
        let rows: Vec<_> = SETTINGS
            .iter()
            .filter(|s| s.section == section && !s.hidden)
            .collect();
        if rows.is_empty() {
            continue;
        }
        let _ = write!(out, "\n{}:\n", section.title());
        for s in rows {
            let default = s.shown_default.unwrap_or(s.default);
            let note = match s.status {
                Status::Supported => "",
                Status::NotYet { .. } => " (not supported yet)",
                Status::NoEffect { .. } => " (accepted; no effect in cairn)",
            };
            let _ = writeln!(out, "  --{} '{}'{}", s.name, default, note);
            let _ = writeln!(out, "    {}", s.help);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_every_visible_flag_once_with_its_default() {
        let text = help_text();
        for s in SETTINGS.iter().filter(|s| !s.hidden) {
            let needle = format!("\n  --{} '", s.name);
            assert_eq!(text.matches(&needle).count(), 1, "--{} in help", s.name);
        }
        assert!(text.contains("\n  --name 'default'\n"));
        assert!(text.contains("\n  --data-dir '${name}.etcd'\n"));
        assert!(text.contains("\n  --pre-vote 'true'\n"));
        assert!(text.contains("\n  --max-concurrent-streams 'math.MaxUint32'\n"));
        assert!(text.contains("\n  --discovery ''\n"));
        assert!(text.contains("\n  --proxy 'off' (not supported yet)\n"));
        assert!(text.contains("\n  --client-crl-file ''\n"));
        assert!(text.contains("\n  --max-wals '5' (accepted; no effect in cairn)\n"));
        assert!(!text.contains("--peer-heartbeat-interval"));
        assert!(text.contains("\n  cairn --config-file PATH [--config-file PATH ...] [flags]\n"));
        // Sections in etcd's order.
        let member = text.find("\nMember:\n").unwrap();
        let clustering = text.find("\nClustering:\n").unwrap();
        let deprecated = text.find("\nTo be deprecated:\n").unwrap();
        assert!(member < clustering && clustering < deprecated);
    }
}
