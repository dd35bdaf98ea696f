//! `cargo xtask test`: the one command that decides whether the tree is good.
//! CI runs exactly this, on a clean machine with only the Rust toolchain and
//! cargo-nextest, so every prerequisite is checked here rather than assumed.

use std::process::{Command, ExitCode};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::Args;

use crate::protoc::add_protoc_to_path;
use crate::util::{cargo, run_captured, run_streamed};

#[derive(Args)]
pub struct TestArgs {
    /// Skip `cargo fmt --check` and `cargo clippy`.
    #[arg(long)]
    no_lint: bool,
    /// Extra arguments for `cargo nextest run` (after `--`).
    #[arg(last = true)]
    extra: Vec<String>,
}

pub fn run(args: TestArgs) -> Result<ExitCode> {
    check_etcdctl()?;
    check_etcd()?;
    check_curl()?;

    if args.no_lint {
        eprintln!("xtask: --no-lint: skipping cargo fmt and cargo clippy");
    } else {
        run_streamed(cargo().args(["fmt", "--all", "--", "--check"]))
            .context("formatting differs; run `cargo fmt --all`")?;
        let mut clippy = cargo();
        clippy.args([
            "clippy",
            "--locked",
            "--workspace",
            "--all-targets",
            "--",
            "-D",
            "warnings",
        ]);
        add_protoc_to_path(&mut clippy)?;
        run_streamed(&mut clippy)?;
    }

    // Supply chain (deny.toml). cargo-deny is a dev tool that takes minutes
    // to build, so CI does not install it: checked here when present.
    if crate::deny::available() {
        crate::deny::check(false).context("cargo deny found a problem (deny.toml)")?;
    } else {
        eprintln!(
            "xtask: cargo-deny not installed: skipping the license, ban and source checks \
             (cargo install cargo-deny --locked)"
        );
    }

    if let Some(bin) = std::env::var_os("CAIRN_BIN").filter(|b| !b.is_empty()) {
        eprintln!(
            "xtask: warning: CAIRN_BIN={} is set; the cross-process tests will run that \
             binary instead of target/debug/cairn",
            bin.to_string_lossy()
        );
    }
    // The cross-process tests run target/debug/cairn (and xtask_cluster.rs
    // runs target/debug/xtask), which neither test runner builds for another
    // package's tests. xtask is normally the binary running this very code
    // (`cargo xtask` builds it in the same profile), so that part is a no-op.
    run_streamed(cargo().args([
        "build", "--locked", "-p", "cairn", "--bin", "cairn", "-p", "xtask", "--bin", "xtask",
    ]))?;

    let mut suite = if nextest_available() {
        eprintln!("xtask: running the suite with cargo-nextest");
        let mut cmd = cargo();
        cmd.args(["nextest", "run", "--locked", "--workspace"]);
        // CI gets the `ci` profile from .config/nextest.toml (no retries,
        // every test on a timeout); locally the default profile is the same
        // apart from that being implicit.
        if std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "false" && v != "0") {
            cmd.args(["--profile", "ci"]);
        }
        cmd.args(&args.extra);
        cmd
    } else {
        eprintln!(
            "xtask: cargo-nextest not found, running the suite with `cargo test` \
             (install nextest for per-test timeouts: `cargo install cargo-nextest --locked`)"
        );
        let mut cmd = cargo();
        cmd.args(["test", "--locked", "--workspace"]);
        // nextest's arguments mean nothing to libtest; the most useful common
        // ground is a test-name filter, which both accept before `--`.
        cmd.args(&args.extra);
        // Cluster tests start several processes each: two at a time on the
        // two-core machines we have.
        cmd.args(["--", "--test-threads", "2"]);
        cmd
    };
    add_protoc_to_path(&mut suite)?;
    run_streamed(&mut suite)?;
    eprintln!("xtask: all checks passed");
    Ok(ExitCode::SUCCESS)
}

/// The HTTP tests (the /v3 gateway, /v2, health) use curl, as operators do.
fn check_curl() -> Result<()> {
    match Command::new("curl").arg("--version").output() {
        Ok(out) if out.status.success() => Ok(()),
        _ => bail!(
            "curl is not on PATH; the HTTP tests need it: sudo apt-get install -y curl \
             (Debian/Ubuntu)"
        ),
    }
}

/// The cross-process tests drive the real `etcdctl` 3.4 against Cairn, so a
/// missing or different etcdctl is an error, never a reason to skip them.
fn check_etcdctl() -> Result<()> {
    let install = "install it with `sudo apt-get install -y etcd-client` (Debian/Ubuntu; \
                   it provides etcdctl 3.4), or put an etcd 3.4 release's etcdctl on PATH";
    let out = match run_captured(
        Command::new("etcdctl").arg("version"),
        Duration::from_secs(10),
    ) {
        Ok(out) => out,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
            bail!("etcdctl is not on PATH; the test suite needs etcdctl 3.4: {install}")
        }
        Err(err) => bail!("cannot run `etcdctl version`: {err}; {install}"),
    };
    // etcdctl 3.4 prints "etcdctl version: 3.4.23\nAPI version: 3.4".
    let version = out
        .stdout
        .lines()
        .find_map(|line| line.strip_prefix("etcdctl version:"))
        .map(str::trim);
    match version {
        Some(v) if v.starts_with("3.4.") => {
            eprintln!("xtask: using etcdctl {v}");
            Ok(())
        }
        Some(v) => bail!("etcdctl on PATH is version {v}, the test suite needs 3.4.x: {install}"),
        None => bail!(
            "`etcdctl version` printed no version ({}; stdout: {:?}, stderr: {:?}): {install}",
            crate::util::describe(out.status),
            out.stdout.trim(),
            out.stderr.trim()
        ),
    }
}

/// The data-format tests read files real etcd 3.4 wrote, and the
/// side-by-side tests run it next to Cairn: a missing etcd is an error.
fn check_etcd() -> Result<()> {
    let install = "install it with `sudo apt-get install -y etcd-server` (Debian/Ubuntu; \
                   it provides etcd 3.4)";
    let out = match run_captured(
        Command::new("etcd").arg("--version"),
        Duration::from_secs(10),
    ) {
        Ok(out) => out,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
            bail!("etcd is not on PATH; the test suite needs etcd 3.4: {install}")
        }
        Err(err) => bail!("cannot run `etcd --version`: {err}; {install}"),
    };
    // etcd 3.4 prints "etcd Version: 3.4.23\nGit SHA: ...".
    match out
        .stdout
        .lines()
        .find_map(|line| line.strip_prefix("etcd Version:"))
        .map(str::trim)
    {
        Some(v) if v.starts_with("3.4.") => {
            eprintln!("xtask: using etcd {v}");
            Ok(())
        }
        Some(v) => bail!("etcd on PATH is version {v}, the test suite needs 3.4.x: {install}"),
        None => bail!("`etcd --version` printed no version: {install}"),
    }
}

fn nextest_available() -> bool {
    run_captured(
        cargo().args(["nextest", "--version"]),
        Duration::from_secs(30),
    )
    .map(|out| out.status.success())
    .unwrap_or(false)
}
