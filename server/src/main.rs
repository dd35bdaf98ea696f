//! The `cairn` binary: etcd's command line, Cairn's server.

use std::process::ExitCode;

/// mimalloc rather than glibc's malloc: under a 64-client put load glibc's
/// allocator was about 15 % of a member's CPU, and a plugin call's short-lived
/// allocations (a store and instance per call) made it consolidate its free
/// lists on every call. See docs/benchmarks.md ("Allocator").
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    // Data, snapshots and logs are private to the user, as etcd's.
    cairn::files::restrict_umask();
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("config") {
        return cairn::cli::config_command(&args[1..]);
    }
    if args.first().map(String::as_str) == Some("snapshot") {
        return cairn::cli::snapshot_command(&args[1..]);
    }
    if args.first().map(String::as_str) == Some("plugin") {
        return cairn::cli::plugin::command(&args[1..]);
    }
    let invocation = match cairn_config::parse_process() {
        Ok(i) => i,
        Err(e) => {
            eprintln!("cairn: {e}");
            eprintln!("Run 'cairn --help' for the list of flags.");
            return ExitCode::from(e.exit_code() as u8);
        }
    };
    let cfg = match invocation {
        cairn_config::Invocation::Version => {
            print_version();
            return ExitCode::SUCCESS;
        }
        cairn_config::Invocation::Help(text) => {
            println!("{text}");
            return ExitCode::SUCCESS;
        }
        cairn_config::Invocation::Serve(cfg) => cfg,
    };
    if let Err(e) = cairn::logging::init(
        cfg.log_level.as_str(),
        cairn::logging::Style::from_config(&cfg.logger),
        &cairn::logging::Outputs::from_config(&cfg.log_outputs),
    ) {
        eprintln!("cairn: {e}");
        return ExitCode::FAILURE;
    }
    for w in &cfg.warnings {
        tracing::warn!("{w}");
    }
    print_version_log();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("cairn")
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("cairn: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let code = runtime.block_on(async move {
        tokio::spawn(cairn::logging::reopen_on_sigusr1());
        let member = match cairn::boot::start(&cfg).await {
            Ok(m) => m,
            Err(e) => {
                tracing::error!("cannot start: {e}");
                eprintln!("cairn: {e}");
                return ExitCode::FAILURE;
            }
        };
        tokio::spawn(cairn::api::maintenance::monitor_quota(
            std::sync::Arc::clone(&member.server),
        ));
        wait_for_signal().await;
        tracing::info!("received terminated signal, shutting down...");
        // A second signal stops at once (an operator who does not want to
        // wait for the hand-over and the drain).
        tokio::select! {
            _ = member.stop() => {}
            _ = wait_for_signal() => tracing::warn!("second signal: stopping now"),
        }
        ExitCode::SUCCESS
    });
    // Bounded: a blocking task still running (a snapshot being written, a
    // defragmentation) must not hold the process, and its ports, for long.
    // Everything acknowledged is durable already.
    runtime.shutdown_timeout(SHUTDOWN_TIMEOUT);
    code
}

/// How long the runtime's remaining tasks get after SIGTERM/SIGINT.
const SHUTDOWN_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

async fn wait_for_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        // Without signal handlers, run until killed.
        std::future::pending::<()>().await;
        return;
    };
    tokio::select! {
        _ = term.recv() => {},
        _ = int.recv() => {},
    }
}

fn print_version() {
    println!("cairn Version: {}", env!("CARGO_PKG_VERSION"));
    println!("etcd Version: {}", cairn::api::ETCD_COMPAT_VERSION);
    println!("Git SHA: {}", env!("CAIRN_GIT_SHA"));
    println!("API version: 3.4");
    println!(
        "OS/Arch: {}/{}",
        std::env::consts::OS,
        std::env::consts::ARCH
    );
}

fn print_version_log() {
    tracing::info!("cairn Version: {}", env!("CARGO_PKG_VERSION"));
    tracing::info!("Git SHA: {}", env!("CAIRN_GIT_SHA"));
    tracing::info!(
        "etcd Version: {} (the etcd API this server implements)",
        cairn::api::ETCD_COMPAT_VERSION
    );
    tracing::info!(
        "OS/Arch: {}/{}",
        std::env::consts::OS,
        std::env::consts::ARCH
    );
}
