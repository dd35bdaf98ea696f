//! Cairn's dev automation, run as `cargo xtask <command>` (the alias lives in
//! `.cargo/config.toml`).
//!
//! - `cargo xtask test`: the project's one test command (lint + whole suite).
//! - `cargo xtask cluster up|down|status`: a local three-member cluster.
//! - `cargo xtask plugins build`: builds the example WASM plugins into
//!   `plugins/dist/` (needs the wasm32-wasip2 target).
//! - `cargo xtask bench [args]`: the `cairn-bench` load generator;
//!   `cargo xtask bench compare` runs it against Cairn and real etcd 3.4.
//!
//! The xtask builds on a machine that has only the Rust toolchain: it must not
//! depend on anything that needs `protoc` (see `protoc.rs`).

mod bench;
mod cluster;
mod health;
mod plugins;
mod protoc;
mod test;
mod util;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "cargo xtask",
    bin_name = "cargo xtask",
    about = "Cairn's dev automation",
    version
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Lint and run the whole test suite (what CI runs).
    ///
    /// Checks that etcdctl 3.4 is installed (the cross-process tests drive it),
    /// then runs `cargo fmt --check`, `cargo clippy -D warnings`, builds
    /// target/debug/cairn and runs `cargo nextest run --workspace` (or
    /// `cargo test` when nextest is missing). Arguments after `--` go to
    /// nextest.
    Test(test::TestArgs),
    /// Run a local three-member cluster in the background.
    Cluster {
        #[command(subcommand)]
        action: ClusterAction,
    },
    /// Build and run the cairn-bench load generator (args after `bench` are
    /// passed through; `cargo xtask bench -- --help` shows them).
    Bench(BenchArgs),
    /// Build the example WASM policy plugins into plugins/dist/.
    Plugins {
        #[command(subcommand)]
        action: plugins::PluginsAction,
    },
}

#[derive(Subcommand)]
enum ClusterAction {
    /// Build cairn (release) and start m1, m2, m3; waits until healthy.
    Up(cluster::UpArgs),
    /// Stop the members (SIGTERM, then SIGKILL); keeps data unless --clean.
    Down(cluster::DownArgs),
    /// Show each member's process, client URL and /health; exits non-zero
    /// unless every member is up.
    Status(cluster::DirArgs),
}

#[derive(Args)]
#[command(args_conflicts_with_subcommands = true)]
struct BenchArgs {
    #[command(subcommand)]
    compare: Option<BenchCommand>,
    /// Arguments for cairn-bench, e.g. `--workload put --clients 16`.
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    args: Vec<String>,
}

#[derive(Subcommand)]
enum BenchCommand {
    /// Run the standard workloads against a fresh three-member Cairn cluster
    /// and a fresh three-member etcd 3.4 cluster; print a markdown table.
    Compare(CompareArgs),
}

#[derive(Args)]
pub struct CompareArgs {
    /// Put every member on 127.0.0.1 with distinct ports (for systems where
    /// only 127.0.0.1 is a loopback address, e.g. macOS).
    #[arg(long)]
    one_address: bool,
    /// etcd binary to compare against (default: `etcd` on PATH).
    #[arg(long, env = "ETCD_BIN")]
    etcd_bin: Option<PathBuf>,
    /// Where the two clusters keep their data while they run (removed
    /// afterwards). Default: target/xtask/bench-compare. On purpose not /tmp,
    /// which is often tmpfs and would make fsync free.
    #[arg(long)]
    dir: Option<PathBuf>,
    /// Rounds per side. Each round starts fresh clusters; the order of the
    /// two sides alternates; the table reports medians.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..))]
    rounds: u32,
    /// Also write the markdown table to this file.
    #[arg(long)]
    out: Option<PathBuf>,
    /// Extra arguments for cairn-bench, e.g. `--clients 16 --total 5000`.
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    bench_args: Vec<String>,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Test(args) => test::run(args),
        Command::Cluster { action } => match action {
            ClusterAction::Up(args) => cluster::up(args),
            ClusterAction::Down(args) => cluster::down(args),
            ClusterAction::Status(args) => cluster::status(args),
        },
        Command::Bench(args) => match args.compare {
            Some(BenchCommand::Compare(c)) => bench::compare(c),
            None => bench::run(args.args),
        },
        Command::Plugins { action } => plugins::run(action),
    };
    match result {
        Ok(code) => code,
        Err(err) => {
            eprintln!("xtask: error: {err:#}");
            ExitCode::FAILURE
        }
    }
}
