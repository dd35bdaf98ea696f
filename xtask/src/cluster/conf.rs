//! Each member's configuration file, `<cluster dir>/<member>/etcd.conf`, in
//! the env-file format distro etcd packages install as /etc/etcd/etcd.conf
//! (`#[Member]`-style section comments, `KEY="value"` lines, commented-out
//! defaults): the format operators already edit, and one that Cairn reads
//! with `--config-file` and reloads live when it changes.
//!
//! The file is written once, when the member is created; after that it is
//! the user's. xtask only reads it back to build flags for servers that
//! cannot read it themselves (real etcd, see `ConfigVia::Flags`).

use std::fs;
use std::path::Path;

use anyhow::{Context, Result, bail};

use super::{ClusterSpec, ConfigVia, Member};

pub const CONFIG_FILE: &str = "etcd.conf";

/// `ETCD_INITIAL_CLUSTER_STATE`: a member of the first three bootstraps a
/// new cluster; one added later joins the existing one.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum State {
    New,
    Existing,
}

/// Settings a developer is likely to try, with etcd's defaults, commented
/// out. All of them reload live in Cairn (docs/configuration.md, Reload
/// column), which is the point of listing them here.
const LIVE_MEMBER: &[(&str, &str)] = &[
    ("ETCD_SNAPSHOT_COUNT", "100000"),
    ("ETCD_HEARTBEAT_INTERVAL", "100"),
    ("ETCD_ELECTION_TIMEOUT", "1000"),
    ("ETCD_MAX_TXN_OPS", "128"),
    ("ETCD_MAX_REQUEST_BYTES", "1572864"),
    ("ETCD_QUOTA_BACKEND_BYTES", "0"),
];
const LIVE_CLUSTERING: &[(&str, &str)] = &[
    ("ETCD_AUTO_COMPACTION_MODE", "periodic"),
    ("ETCD_AUTO_COMPACTION_RETENTION", "0"),
    ("ETCD_STRICT_RECONFIG_CHECK", "true"),
];
const LIVE_LOGGING: &[(&str, &str)] = &[("ETCD_LOG_LEVEL", "info")];

/// The text of `m`'s config file.
pub fn render(spec: &ClusterSpec, m: &Member, initial_cluster: &str, state: State) -> String {
    let path = m.config_path();
    let mut out = String::new();
    let mut line = |s: &str| {
        out.push_str(s);
        out.push('\n');
    };
    line(&format!(
        "# Member {} of the local cluster in {}",
        m.name,
        spec.dir.display()
    ));
    line("# (written by `cargo xtask cluster`; yours to edit from now on).");
    line("#");
    match spec.config_via {
        ConfigVia::File => {
            line(&format!(
                "# The member runs as `cairn --config-file {}`: this file is its whole",
                path.display()
            ));
            line("# configuration. Save an edit and the running member reloads it:");
            line("# settings whose Reload column in docs/configuration.md says \"live\"");
            line("# (all the commented-out ones below) apply at once; the others at the");
            line(&format!(
                "# next `cargo xtask cluster restart {}`. See the outcome with",
                m.name
            ));
            line(&format!(
                "#   cairn config status --endpoint {}",
                m.client_url()
            ));
            line("# A bad edit is refused as a whole; the member keeps its old settings.");
        }
        ConfigVia::Flags => {
            line(&format!(
                "# {} cannot read this file itself: xtask passes its settings as flags",
                spec.binary.display()
            ));
            line(&format!(
                "# at each start, so edits apply at the next `cargo xtask cluster restart {}`.",
                m.name
            ));
        }
    }
    line("# Keep the name, data dir and URLs: xtask finds the member by them.");
    line("# Put comments on their own lines, as systemd's EnvironmentFile= needs.");
    line("");
    line("#[Member]");
    line(&setting("ETCD_NAME", &m.name));
    line(&setting("ETCD_DATA_DIR", &m.data_dir.to_string_lossy()));
    line(&setting("ETCD_LISTEN_PEER_URLS", &m.peer_url()));
    line(&setting("ETCD_LISTEN_CLIENT_URLS", &m.client_url()));
    for (key, default) in LIVE_MEMBER {
        line(&format!("#{}", setting(key, default)));
    }
    line("");
    line("#[Clustering]");
    line(&setting("ETCD_INITIAL_ADVERTISE_PEER_URLS", &m.peer_url()));
    line(&setting("ETCD_ADVERTISE_CLIENT_URLS", &m.client_url()));
    line(&setting("ETCD_INITIAL_CLUSTER", initial_cluster));
    line(&setting("ETCD_INITIAL_CLUSTER_TOKEN", &spec.token));
    line(&setting(
        "ETCD_INITIAL_CLUSTER_STATE",
        match state {
            State::New => "new",
            State::Existing => "existing",
        },
    ));
    for (key, default) in LIVE_CLUSTERING {
        line(&format!("#{}", setting(key, default)));
    }
    line("");
    line("#[Logging]");
    for (key, default) in LIVE_LOGGING {
        line(&format!("#{}", setting(key, default)));
    }
    out
}

/// `KEY="value"`, escaping what a double-quoted env-file value must escape.
fn setting(key: &str, value: &str) -> String {
    let mut quoted = String::with_capacity(value.len() + 2);
    for c in value.chars() {
        if matches!(c, '"' | '\\' | '$' | '`') {
            quoted.push('\\');
        }
        quoted.push(c);
    }
    format!("{key}=\"{quoted}\"")
}

/// Writes through a temporary file and a rename, so a member watching the
/// folder never reads half a file.
pub fn write(path: &Path, text: &str) -> Result<()> {
    if let Some(dir) = path.parent() {
        fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    let tmp = path.with_extension("conf.tmp");
    fs::write(&tmp, text).with_context(|| format!("cannot write {}", tmp.display()))?;
    fs::rename(&tmp, path).with_context(|| format!("cannot write {}", path.display()))?;
    Ok(())
}

/// The settings in an env-file, in order, later lines overriding earlier
/// ones; empty values (which mean "unset") are left out.
pub fn read(path: &Path) -> Result<Vec<(String, String)>> {
    let text =
        fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    parse(&text).with_context(|| format!("in {}", path.display()))
}

fn parse(text: &str) -> Result<Vec<(String, String)>> {
    let mut out: Vec<(String, String)> = Vec::new();
    for (n, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let Some((key, value)) = line.split_once('=') else {
            bail!("line {}: expected KEY=\"value\", found {raw:?}", n + 1);
        };
        let key = key.trim();
        if key.is_empty() || !key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            bail!("line {}: {key:?} is not a variable name", n + 1);
        }
        let value = unquote(value.trim()).with_context(|| format!("line {}", n + 1))?;
        out.retain(|(k, _)| k != key);
        if !value.is_empty() {
            out.push((key.to_string(), value));
        }
    }
    Ok(out)
}

/// A value as systemd's EnvironmentFile= reads it: double quotes with
/// backslash escapes, single quotes taken literally, or bare.
fn unquote(v: &str) -> Result<String> {
    let mut chars = v.chars();
    match chars.next() {
        Some('"') => {
            let mut out = String::new();
            let mut escaped = false;
            for c in chars.by_ref() {
                match (escaped, c) {
                    (false, '\\') => escaped = true,
                    (false, '"') => return Ok(out),
                    (true, c) => {
                        if !matches!(c, '"' | '\\' | '$' | '`') {
                            out.push('\\');
                        }
                        out.push(c);
                        escaped = false;
                    }
                    (false, c) => out.push(c),
                }
            }
            bail!("unterminated double quote")
        }
        Some('\'') => {
            let rest: String = chars.collect();
            match rest.split_once('\'') {
                Some((inside, _)) => Ok(inside.to_string()),
                None => bail!("unterminated single quote"),
            }
        }
        _ => Ok(v.to_string()),
    }
}

/// `ETCD_INITIAL_CLUSTER` → `--initial-cluster=<value>`: etcd's variables
/// are its flag names, upper-cased, `-` turned into `_`.
pub fn flag(key: &str, value: &str) -> Option<String> {
    let name = key.strip_prefix("ETCD_")?;
    if name.is_empty() {
        return None;
    }
    Some(format!(
        "--{}={value}",
        name.to_ascii_lowercase().replace('_', "-")
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::{Layout, Slot};
    use std::net::Ipv4Addr;
    use std::path::PathBuf;

    fn spec(via: ConfigVia) -> ClusterSpec {
        let slots: Vec<Slot> = (1..=3)
            .map(|n| (Ipv4Addr::new(127, 0, 0, n), 2379, 2380))
            .collect();
        let mut spec = ClusterSpec::new(
            Layout::ThreeAddresses,
            PathBuf::from("/nonexistent/cairn"),
            "tok",
            Path::new("/tmp/c \"x\""),
            "cairn.log",
            &slots,
        );
        spec.config_via = via;
        spec
    }

    #[test]
    fn rendered_file_reads_back() {
        let spec = spec(ConfigVia::File);
        let m = &spec.members[1];
        let text = render(&spec, m, &spec.initial_cluster(), State::New);
        assert!(text.contains("#[Member]\nETCD_NAME=\"m2\"\n"), "{text}");
        assert!(text.contains("\n#ETCD_LOG_LEVEL=\"info\"\n"), "{text}");
        let settings = parse(&text).unwrap();
        let get = |k: &str| {
            settings
                .iter()
                .find(|(key, _)| key == k)
                .map(|(_, v)| v.as_str())
        };
        assert_eq!(get("ETCD_DATA_DIR"), Some("/tmp/c \"x\"/m2/data"));
        assert_eq!(
            get("ETCD_LISTEN_CLIENT_URLS"),
            Some("http://127.0.0.2:2379")
        );
        assert_eq!(
            get("ETCD_INITIAL_CLUSTER"),
            Some("m1=http://127.0.0.1:2380,m2=http://127.0.0.2:2380,m3=http://127.0.0.3:2380")
        );
        assert_eq!(get("ETCD_INITIAL_CLUSTER_STATE"), Some("new"));
        assert_eq!(get("ETCD_LOG_LEVEL"), None, "commented out");
        assert_eq!(settings.len(), 9);
    }

    #[test]
    fn env_file_values() {
        let got =
            parse("# c\n\nA='x \"y\"'\nB = bare value \nC=\"a\\$b\\\\c\"\nD=\"\"\nA=\"again\"\n")
                .unwrap();
        assert_eq!(
            got,
            [
                ("B".to_string(), "bare value".to_string()),
                ("C".to_string(), "a$b\\c".to_string()),
                ("A".to_string(), "again".to_string()),
            ]
        );
        assert!(parse("NOT A SETTING\n").is_err());
        assert!(parse("A=\"open\n").is_err());
    }

    #[test]
    fn flags_from_variables() {
        assert_eq!(
            flag("ETCD_INITIAL_CLUSTER_TOKEN", "t").as_deref(),
            Some("--initial-cluster-token=t")
        );
        assert_eq!(flag("PATH", "/bin"), None);
    }
}
