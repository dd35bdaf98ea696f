//! `cargo xtask fuzz [TARGET...] [--seconds N] [--seed S]`: builds the
//! `cairn-fuzz` driver and runs the fuzz targets (all when none is named)
//! on the checked-in corpus, `fuzz/corpus/<target>/`. Findings are saved
//! under `fuzz/crashes/<target>/` with the seed that found them. See
//! docs/testing.md.

use std::process::ExitCode;

use anyhow::{Result, bail};
use clap::Args;

use crate::util::{cargo, run_streamed, workspace_root};

#[derive(Args)]
pub struct FuzzArgs {
    /// Targets to run (default: all; `--list` names them).
    targets: Vec<String>,
    /// Seconds per target.
    #[arg(long, default_value_t = 10.0)]
    seconds: f64,
    /// Seed of the mutation sequence (the same seed repeats a run).
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Build the driver with optimizations (faster inputs, a slow first build).
    #[arg(long)]
    release: bool,
    /// List the targets and exit.
    #[arg(long)]
    list: bool,
}

pub fn run(args: FuzzArgs) -> Result<ExitCode> {
    let root = workspace_root();
    let mut cmd = cargo();
    cmd.args(["run", "--locked", "-p", "cairn-fuzz", "--bin", "cairn-fuzz"]);
    if args.release {
        cmd.arg("--release");
    }
    cmd.arg("--");
    if args.list {
        cmd.arg("--list");
    } else {
        cmd.args(&args.targets)
            .args(["--seconds", &args.seconds.to_string()])
            .args(["--seed", &args.seed.to_string()])
            .arg("--corpus")
            .arg(root.join("fuzz/corpus"))
            .arg("--crashes")
            .arg(root.join("fuzz/crashes"));
    }
    match run_streamed(&mut cmd) {
        Ok(()) => Ok(ExitCode::SUCCESS),
        Err(e) => bail!("fuzzing found problems or failed: {e:#}"),
    }
}
