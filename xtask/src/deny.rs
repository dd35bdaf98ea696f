//! `cargo xtask deny [--advisories]`: supply-chain checks with cargo-deny
//! (`deny.toml`): licenses, duplicate and banned crates, and sources always;
//! the RustSec advisory database only with `--advisories`, since fetching
//! it needs network access that CI and the dev machines here do not have.

use std::process::ExitCode;

use anyhow::{Result, bail};
use clap::Args;

use crate::util::{cargo, run_captured, run_streamed};

#[derive(Args)]
pub struct DenyArgs {
    /// Also check the advisory database (fetches it; needs network).
    #[arg(long)]
    advisories: bool,
}

/// Whether `cargo deny` is installed.
pub fn available() -> bool {
    run_captured(
        cargo().args(["deny", "--version"]),
        std::time::Duration::from_secs(30),
    )
    .map(|out| out.status.success())
    .unwrap_or(false)
}

pub fn run(args: DenyArgs) -> Result<ExitCode> {
    if !available() {
        bail!("cargo-deny is not installed: cargo install cargo-deny --locked");
    }
    check(args.advisories)?;
    Ok(ExitCode::SUCCESS)
}

/// Runs the checks; `advisories` adds the advisory database.
pub fn check(advisories: bool) -> Result<()> {
    let mut cmd = cargo();
    // Duplicates are warnings (deny.toml); the graph of each would be
    // hundreds of lines in every CI log.
    cmd.args([
        "deny",
        "--workspace",
        "--locked",
        "check",
        "--hide-inclusion-graph",
    ]);
    if advisories {
        cmd.args(["advisories", "licenses", "bans", "sources"]);
    } else {
        cmd.args(["licenses", "bans", "sources"]);
    }
    run_streamed(&mut cmd)
}
