//! Cairn's dev automation, run as `cargo xtask <command>` (the alias lives in
//! `.cargo/config.toml`).
//!
//! - `cargo xtask test`: the project's one test command (lint + whole suite).
//! - `cargo xtask cluster up|down|status|logs|stop|start|restart|kill|add|remove`:
//!   a local cluster (three members to start with), one config file per member.
//! - `cargo xtask fuzz [TARGET...] [--seconds N] [--seed S]`: the fuzz
//!   targets (`fuzz/`) on the checked-in corpus; findings in `fuzz/crashes/`.
//! - `cargo xtask deny [--advisories]`: cargo-deny's license, duplicate,
//!   ban and source checks (`deny.toml`); the advisory database on request.
//! - `cargo xtask plugins build`: builds the example WASM plugins into
//!   `plugins/dist/` (needs the wasm32-wasip2 target).
//! - `cargo xtask robustness`: fault-injection runs with history checks,
//!   against Cairn, etcd 3.4 or both (see `robustness.rs`).
//! - `cargo xtask bench [args]`: the `cairn-bench` load generator;
//!   `cargo xtask bench compare` runs it against Cairn and real etcd 3.4;
//!   `cargo xtask bench plugins` measures what a policy plugin costs;
//!   `cargo xtask bench restore` times restoring and importing a large etcd
//!   snapshot against `etcdctl snapshot restore`.
//!   `cargo xtask bench rolling-restart` what a rolling restart costs clients.
//!
//! The xtask builds on a machine that has only the Rust toolchain: it must not
//! depend on anything that needs `protoc` (see `protoc.rs`).

mod bench;
mod bench_console;
mod bench_net;
mod bench_plugins;
mod bench_restore;
mod bench_rolling;
mod bench_scale;
mod cluster;
mod deny;
mod fuzz;
mod gobench;
mod health;
mod layers;
mod plugins;
mod protoc;
mod robustness;
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
    /// Run a local cluster (three members by default) in the background.
    Cluster {
        #[command(subcommand)]
        action: ClusterAction,
    },
    /// Build and run the cairn-bench load generator (args after `bench` are
    /// passed through; `cargo xtask bench -- --help` shows them).
    Bench(BenchArgs),
    /// Fault-injection runs with history checks (linearizability, watches,
    /// leases, durability) against Cairn, etcd 3.4, or both side by side.
    Robustness(robustness::RobustnessArgs),
    /// Print the server's module layers and any import that goes up or
    /// sideways (the structural check `cargo xtask test` runs).
    Layers,
    /// Run the fuzz targets (all when none is named) for a while each.
    Fuzz(fuzz::FuzzArgs),
    /// Supply-chain checks with cargo-deny (licenses, bans, sources;
    /// advisories with --advisories).
    Deny(deny::DenyArgs),
    /// Build the example WASM policy plugins into plugins/dist/.
    Plugins {
        #[command(subcommand)]
        action: plugins::PluginsAction,
    },
}

#[derive(Subcommand)]
enum ClusterAction {
    /// Build cairn (release) and start the members, showing progress; waits
    /// until healthy. Restarts an existing cluster from its data and configs
    /// unless --fresh.
    Up(cluster::UpArgs),
    /// Stop the members (SIGTERM, then SIGKILL); keeps data unless --clean.
    Down(cluster::DownArgs),
    /// A table of the members: process, ID, client and peer URLs, leader,
    /// raft term and index, health. Exits non-zero unless every member runs
    /// and is healthy.
    Status(cluster::DirArgs),
    /// Follow the members' logs (all, name-prefixed, or one); Ctrl-C stops.
    Logs(cluster::LogsArgs),
    /// Stop one member (SIGTERM, waiting for it to exit; SIGKILL after 10s).
    Stop(cluster::MemberArgs),
    /// Start a stopped member from its existing data and config.
    Start(cluster::MemberArgs),
    /// Stop, then start one member (picks up every change to its config).
    Restart(cluster::MemberArgs),
    /// SIGKILL one member, like a crash.
    Kill(cluster::MemberArgs),
    /// Add a member: etcdctl member add, then start it on the next free
    /// address and wait until it is healthy.
    Add(cluster::AddArgs),
    /// Remove a member: etcdctl member remove, then stop it and delete its
    /// data dir (unless --keep-data).
    Remove(cluster::RemoveArgs),
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
    /// What a policy plugin costs: the put workload on fresh clusters with
    /// and without a plugin (default: the allow-all validator).
    Plugins(bench_plugins::PluginBenchArgs),
    /// What an open web console costs: put throughput with and without
    /// console viewers on every member (ABBA on the same cluster).
    Console(bench_console::ConsoleBenchArgs),
    /// Bringing a large etcd snapshot into service: `etcdctl snapshot
    /// restore` against `cairn snapshot restore` and against starting
    /// cairn on the etcd data dir (import); print a markdown table.
    Restore(bench_restore::RestoreBenchArgs),
    /// A rolling restart (SIGTERM, start, healthy; each member in turn) of
    /// fresh Cairn and etcd 3.4 clusters under steady writes: failed writes
    /// and the worst latency.
    RollingRestart(bench_rolling::RollingArgs),
    /// What a large keyspace costs (default a million keys plus as many
    /// overwrites), Cairn and etcd 3.4 side by side: load throughput and
    /// CPU, RSS, data dir size, a paged full scan, restart after kill -9,
    /// and a new member's catch-up; print a markdown table.
    Scale(bench_scale::ScaleArgs),
    /// Members a network apart (default 1 ms and 10 ms round trips, through
    /// the robustness peer proxy): put and linearizable-read throughput and
    /// latency, Cairn and etcd 3.4 side by side; print a markdown table.
    Net(bench_net::NetArgs),
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
    /// The load generator: `rust` (cairn-bench, on the etcd-client crate)
    /// or `go` (xtask/gobench, on etcd's clientv3; needs Debian's
    /// golang-go and golang-etcd-server-dev). Both take the same flags.
    #[arg(long, value_enum, default_value_t = BenchClient::Rust)]
    client: BenchClient,
    /// Extra arguments for cairn-bench, e.g. `--clients 16 --total 5000`.
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    bench_args: Vec<String>,
}

/// Which load generator `bench compare` drives.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum BenchClient {
    Rust,
    Go,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Test(args) => test::run(args),
        Command::Cluster { action } => match action {
            ClusterAction::Up(args) => cluster::up(args),
            ClusterAction::Down(args) => cluster::down(args),
            ClusterAction::Status(args) => cluster::status(args),
            ClusterAction::Logs(args) => cluster::logs(args),
            ClusterAction::Stop(args) => cluster::stop(args),
            ClusterAction::Start(args) => cluster::start_member(args),
            ClusterAction::Restart(args) => cluster::restart(args),
            ClusterAction::Kill(args) => cluster::kill_member(args),
            ClusterAction::Add(args) => cluster::add(args),
            ClusterAction::Remove(args) => cluster::remove(args),
        },
        Command::Bench(args) => match args.compare {
            Some(BenchCommand::Compare(c)) => bench::compare(c),
            Some(BenchCommand::Plugins(p)) => bench_plugins::run(p),
            Some(BenchCommand::Console(c)) => bench_console::run(c),
            Some(BenchCommand::Restore(r)) => bench_restore::run(r),
            Some(BenchCommand::RollingRestart(r)) => bench_rolling::run(r),
            Some(BenchCommand::Scale(s)) => bench_scale::run(s),
            Some(BenchCommand::Net(n)) => bench_net::run(n),
            None => bench::run(args.args),
        },
        Command::Plugins { action } => plugins::run(action),
        Command::Robustness(args) => robustness::run(args),
        Command::Layers => layers::run(&layers::server_src()),
        Command::Fuzz(args) => fuzz::run(args),
        Command::Deny(args) => deny::run(args),
    };
    match result {
        Ok(code) => code,
        Err(err) => {
            eprintln!("xtask: error: {err:#}");
            ExitCode::FAILURE
        }
    }
}
