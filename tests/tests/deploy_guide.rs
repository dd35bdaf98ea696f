//! The deploy guide (`docs/deploy/README.md`) run as written: every
//! command of its `sh` blocks, in order, on three loopback "hosts", so the
//! guide cannot drift from what Cairn does.
//!
//! Each host gets its own root folder standing in for `/`, and a free
//! loopback address standing in for the guide's 192.0.2.1x (ports 2379 and
//! 2380 as in the guide); the second client URL the guide's env-files add
//! (`http://127.0.0.1:2379`) becomes a free port on the host's address,
//! since three hosts on one machine cannot share it. Commands are
//! interpreted, not handed to a shell: `sudo` runs as the test, `useradd`
//! and `daemon-reload` have nothing to do here, `sudoedit` is the address
//! rewrite above, and `systemctl enable --now cairn` starts the member the
//! way the installed unit's `ExecStart=` says, reading the config files a
//! bare `cairn` reads, under the host's root. A command the interpreter
//! does not know fails the test: a new step in the guide needs a line here.
//!
//! Blocks that install or start something run on every host, with the
//! host's own file (`infra1` in the guide becomes `infra2`, `infra3` on
//! the others); the rest run once, "from any host", on the first.

use cairn_tests::{cairn_bin, eventually, free_host, free_port, health, stderr, stdout, tail};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

const GUIDE_ADDRS: [&str; 3] = ["192.0.2.11", "192.0.2.12", "192.0.2.13"];
const WAIT: Duration = Duration::from_secs(30);

struct Host {
    name: String,
    addr: String,
    local_port: u16,
    root: PathBuf,
    child: Option<Child>,
}

impl Host {
    fn path(&self, guide_path: &str) -> PathBuf {
        self.root.join(guide_path.trim_start_matches('/'))
    }

    fn log(&self) -> PathBuf {
        self.root.join("cairn.log")
    }
}

struct Guide {
    dir: PathBuf,
    hosts: Vec<Host>,
    /// Shell variables and exported environment (`ETCDCTL_API`).
    vars: BTreeMap<String, String>,
    exported: BTreeMap<String, String>,
}

impl Drop for Guide {
    fn drop(&mut self) {
        for h in &mut self.hosts {
            if let Some(mut c) = h.child.take() {
                let _ = c.kill();
                let _ = c.wait();
            }
        }
    }
}

/// `sh` blocks of the guide, in order.
fn blocks(text: &str) -> Vec<Vec<String>> {
    let mut out = Vec::new();
    let mut cur: Option<Vec<String>> = None;
    for line in text.lines() {
        match (&mut cur, line.trim_start().strip_prefix("```")) {
            (None, Some("sh")) => cur = Some(Vec::new()),
            (Some(_), Some(_)) => out.extend(cur.take()),
            (Some(b), None) => b.push(line.to_string()),
            _ => {}
        }
    }
    out
}

/// Splits a command line into words: single and double quotes, `\` line
/// continuations already joined; `$VAR` expanded outside single quotes.
fn words(line: &str, vars: &BTreeMap<String, String>) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut in_word = false;
    let mut chars = line.chars().peekable();
    let mut quote: Option<char> = None;
    while let Some(c) = chars.next() {
        match (quote, c) {
            (None, '#') if !in_word => break,
            (None, ' ' | '\t') => {
                if in_word {
                    out.push(std::mem::take(&mut cur));
                    in_word = false;
                }
            }
            (None, '\'' | '"') => {
                quote = Some(c);
                in_word = true;
            }
            (Some(q), c) if c == q => quote = None,
            (q, '$') if q != Some('\'') => {
                let mut name = String::new();
                while let Some(&n) = chars.peek() {
                    if n.is_ascii_alphanumeric() || n == '_' {
                        name.push(n);
                        chars.next();
                    } else {
                        break;
                    }
                }
                cur.push_str(vars.get(&name).map(String::as_str).unwrap_or(""));
                in_word = true;
            }
            (_, c) => {
                cur.push(c);
                in_word = true;
            }
        }
    }
    if in_word {
        out.push(cur);
    }
    out
}

impl Guide {
    /// The guide's addresses and the shared loopback client URL, as this
    /// run has them.
    fn rewrite(&self, text: &str) -> String {
        let mut t = text.to_string();
        for (i, a) in GUIDE_ADDRS.iter().enumerate() {
            t = t.replace(a, &self.hosts[i].addr);
        }
        t
    }

    /// An env-file from the guide, made this host's: addresses, the
    /// loopback client URL, and paths under the host's root.
    fn host_file(&self, h: usize, text: &str) -> String {
        let host = &self.hosts[h];
        self.rewrite(text)
            .replace(
                "http://127.0.0.1:2379",
                &format!("http://{}:{}", host.addr, host.local_port),
            )
            .replace(
                "\"/var/lib/etcd",
                &format!("\"{}/var/lib/etcd", host.root.display()),
            )
    }

    fn cairn(&self, h: usize, args: &[String]) -> Output {
        let host = &self.hosts[h];
        let args: Vec<String> = args
            .iter()
            .map(|a| {
                if a.starts_with("/etc/") {
                    host.path(a).display().to_string()
                } else if a == "http://127.0.0.1:2379" {
                    format!("http://{}:{}", host.addr, host.local_port)
                } else {
                    a.clone()
                }
            })
            .collect();
        let child = Command::new(cairn_bin())
            .args(&args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("cairn");
        cairn_tests::wait_output(child, WAIT)
    }

    fn etcdctl(&self, args: &[String]) -> Output {
        let mut cmd = Command::new("etcdctl");
        for (k, _) in std::env::vars() {
            if k.starts_with("ETCDCTL_") {
                cmd.env_remove(k);
            }
        }
        cmd.envs(&self.exported)
            .args(args.iter().map(|a| self.rewrite(a)));
        if self.exported.get("ETCDCTL_API").map(String::as_str) != Some("2") {
            cmd.arg("--command-timeout=10s");
        }
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        cairn_tests::wait_output(cmd.spawn().expect("etcdctl"), WAIT)
    }

    /// `systemctl enable --now cairn`: the unit's `ExecStart=`, its
    /// `WorkingDirectory=`, and the config files a bare `cairn` reads,
    /// under the host's root.
    fn start(&mut self, h: usize) {
        let unit_path = self.hosts[h].path("/etc/systemd/system/cairn.service");
        let unit = std::fs::read_to_string(&unit_path).expect("the unit is installed");
        let exec = unit
            .lines()
            .find_map(|l| l.strip_prefix("ExecStart="))
            .expect("ExecStart=");
        let mut argv = exec.split_whitespace();
        assert_eq!(argv.next(), Some("/usr/bin/cairn"), "{exec}");
        let args: Vec<String> = argv.map(str::to_owned).collect();
        assert!(
            !args.iter().any(|a| a.starts_with("--config-file")),
            "the guide's unit reads the default files: {exec}"
        );
        let host = &self.hosts[h];
        // The files a bare `cairn` reads (cairn_config::DEFAULT_CONFIG_FILES).
        let defaults: Vec<String> = [
            "/etc/default/etcd",
            "/etc/etcd/etcd.conf",
            "/etc/cairn/cairn.toml",
        ]
        .iter()
        .map(|p| host.path(p))
        .filter(|p| p.exists())
        .map(|p| p.display().to_string())
        .collect();
        let workdir = unit
            .lines()
            .find_map(|l| l.strip_prefix("WorkingDirectory="))
            .map(|d| host.path(d))
            .unwrap_or_else(|| host.root.clone());
        std::fs::create_dir_all(&workdir).expect("working dir");
        let installed = host.path("/usr/bin/cairn");
        assert!(
            installed.exists(),
            "cairn is not installed on {}",
            host.name
        );
        let child = Command::new(&installed)
            .args(&args)
            .env("ETCD_CONFIG_FILE", defaults.join(","))
            .current_dir(&workdir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(host.log()).expect("log"))
            .spawn()
            .expect("start cairn");
        self.hosts[h].child = Some(child);
    }

    fn run_block(&mut self, block: &[String], h: usize) {
        let mut joined = Vec::new();
        let mut cont = String::new();
        for line in block {
            if let Some(head) = line.strip_suffix('\\') {
                cont.push_str(head);
                continue;
            }
            cont.push_str(line);
            joined.push(std::mem::take(&mut cont));
        }
        for line in joined {
            let w = words(line.trim(), &self.vars);
            if w.is_empty() {
                continue;
            }
            self.run_command(&line, &w, h);
        }
    }

    fn run_command(&mut self, line: &str, w: &[String], h: usize) {
        let w: Vec<String> = match w.first().map(String::as_str) {
            Some("sudo") => w[1..].to_vec(),
            _ => w.to_vec(),
        };
        let host_name = self.hosts[h].name.clone();
        let args: Vec<&str> = w.iter().map(String::as_str).collect();
        match args.as_slice() {
            // VAR=value, export VAR=value
            [assign] if assign.contains('=') && !assign.starts_with('-') => {
                let (k, v) = assign.split_once('=').unwrap_or_default();
                self.vars.insert(k.into(), v.into());
            }
            ["export", assign] => {
                let (k, v) = assign.split_once('=').expect("export VAR=value");
                self.vars.insert(k.into(), v.into());
                self.exported.insert(k.into(), v.into());
            }
            ["install", "-m", mode, src, dst] => {
                let dst = self.hosts[h].path(dst);
                std::fs::create_dir_all(dst.parent().expect("parent")).expect("mkdir");
                if *src == "cairn" {
                    // The binary under test, linked rather than copied.
                    std::os::unix::fs::symlink(cairn_bin(), &dst).expect("install cairn");
                    return;
                }
                let src = self.dir.join(src.replace("infra1", &host_name));
                if src.extension().is_some_and(|e| e == "conf") {
                    let text = std::fs::read_to_string(&src).expect("guide file");
                    std::fs::write(&dst, self.host_file(h, &text)).expect("install");
                } else {
                    std::fs::copy(&src, &dst)
                        .unwrap_or_else(|e| panic!("install {}: {e}", src.display()));
                }
                use std::os::unix::fs::PermissionsExt;
                let mode = u32::from_str_radix(mode, 8).expect("octal mode");
                std::fs::set_permissions(&dst, std::fs::Permissions::from_mode(mode))
                    .expect("chmod");
            }
            ["install", "-d", .., dir] => {
                std::fs::create_dir_all(self.hosts[h].path(dir)).expect("install -d");
            }
            // Users and systemd's unit cache have no stand-in here.
            ["useradd", ..] | ["systemctl", "daemon-reload"] => {}
            // "your addresses": done by `host_file`.
            ["sudoedit", _] => {}
            ["systemctl", "enable", "--now", "cairn"] => self.start(h),
            // Following the log: the member must come up. A lone first
            // member waits for its peers, so each is checked once the last
            // host has started.
            ["journalctl", "-u", "cairn", "-f"] if h + 1 == self.hosts.len() => {
                for i in 0..self.hosts.len() {
                    let up = eventually(WAIT, || {
                        let addr = format!("{}:2379", self.hosts[i].addr).parse().ok()?;
                        (health(&addr) == Some(true)).then_some(())
                    });
                    assert!(
                        up.is_some(),
                        "{} never became healthy:\n{}",
                        self.hosts[i].name,
                        self.logs()
                    );
                }
            }
            ["journalctl", "-u", "cairn", "-f"] => {}
            ["cairn", rest @ ..] => {
                let rest: Vec<String> = rest.iter().map(|s| s.to_string()).collect();
                let out = self.cairn(h, &rest);
                let text = format!("{}{}", stdout(&out), stderr(&out));
                if rest.first().map(String::as_str) == Some("config") && rest[1] == "status" {
                    // The reload the previous line triggered may still be
                    // under way: ask until it shows.
                    let done = eventually(WAIT, || {
                        let out = self.cairn(h, &rest);
                        stdout(&out).contains("log-level").then_some(out)
                    });
                    let out = done.unwrap_or_else(|| panic!("{line}: {text}\n{}", self.logs()));
                    assert!(out.status.success(), "{line}: {}", stderr(&out));
                    assert!(
                        stdout(&out).contains("--log-level: info -> debug"),
                        "{line}: {}",
                        stdout(&out)
                    );
                } else {
                    assert!(out.status.success(), "{line}: {text}");
                    assert!(text.contains(": ok"), "{line}: {text}");
                }
            }
            ["etcdctl", ..] => {
                let out = self.etcdctl(&w[1..]);
                assert!(
                    out.status.success(),
                    "{line}: {}{}\n{}",
                    stdout(&out),
                    stderr(&out),
                    self.logs()
                );
                self.check_output(&args, &format!("{}{}", stdout(&out), stderr(&out)));
            }
            ["sed", "-i", script, file] => {
                let path = self.hosts[h].path(file);
                let out = Command::new("sed")
                    .args(["-i", script, &path.display().to_string()])
                    .output()
                    .expect("sed");
                assert!(out.status.success(), "{line}: {}", stderr(&out));
            }
            _ => panic!("the deploy guide has a command this test does not know: {line}"),
        }
    }

    /// What the guide's prose says each command shows.
    fn check_output(&self, args: &[&str], out: &str) {
        let has = |s: &str| assert!(out.contains(s), "{args:?}: no {s:?} in:\n{out}");
        match args.get(2..) {
            Some(["member", "list", ..]) => {
                for h in &self.hosts {
                    has(&format!("| started | {} |", h.name));
                }
            }
            Some(["endpoint", "health"]) => {
                assert_eq!(out.matches("is healthy").count(), 3, "{out}");
            }
            Some(["endpoint", "status", ..]) => {
                assert_eq!(out.matches(" true |").count(), 1, "one leader:\n{out}");
            }
            Some(["get", "greeting"]) => has("greeting\nhello"),
            Some(["get", "/greeting"]) => has("hello"),
            Some(["cluster-health"]) => has("cluster is healthy"),
            _ => {}
        }
    }

    fn logs(&self) -> String {
        self.hosts
            .iter()
            .map(|h| {
                format!(
                    "--- {} ---\n{}",
                    h.name,
                    tail(&std::fs::read_to_string(h.log()).unwrap_or_default(), 30)
                )
            })
            .collect::<Vec<_>>()
            .join("\n")
    }
}

#[test]
fn the_deploy_guide_runs_as_written() {
    if cairn_tests::target() == cairn_tests::Target::Etcd {
        return; // The guide installs and starts Cairn.
    }
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let dir = repo.join("docs/deploy");
    let text = std::fs::read_to_string(dir.join("README.md")).expect("deploy guide");
    let tmp = tempfile::tempdir().expect("tempdir");
    let hosts = (1..=3)
        .map(|i| Host {
            name: format!("infra{i}"),
            addr: free_host(&[2379, 2380]),
            local_port: free_port(),
            root: tmp.path().join(format!("infra{i}")),
            child: None,
        })
        .collect();
    let mut g = Guide {
        dir,
        hosts,
        vars: BTreeMap::new(),
        exported: BTreeMap::new(),
    };
    let blocks = blocks(&text);
    assert!(blocks.len() >= 5, "sh blocks found: {}", blocks.len());
    for block in &blocks {
        let per_host = block
            .iter()
            .any(|l| l.contains("install ") || l.contains("systemctl"));
        if per_host {
            for h in 0..g.hosts.len() {
                g.run_block(block, h);
            }
        } else {
            g.run_block(block, 0);
        }
    }
    // Every member is still up at the end.
    for h in &mut g.hosts {
        let running = h
            .child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)));
        assert!(running, "{} exited", h.name);
    }
}
