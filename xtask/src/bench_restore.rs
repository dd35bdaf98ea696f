//! `cargo xtask bench restore`: how long bringing a large etcd snapshot
//! into service takes, `etcdctl snapshot restore` (into an etcd data dir)
//! against `cairn snapshot restore` (into a Cairn data dir) and against
//! starting `cairn` on the etcd data dir etcdctl wrote (the import a
//! binary swap does), on the same file and disk; and, for reference, etcd
//! starting on the dir etcdctl wrote. Prints a markdown table for
//! docs/benchmarks.md.
//!
//! The snapshot is generated with the formats crate's writer
//! (`make_etcd_snapshot` example): keys created and half of them updated,
//! incompressible 1 KiB values. The file is in the page cache for every
//! contender alike; each round runs the three in a rotating order.

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::Args;

use crate::health::{self, Health};
use crate::util::{cargo, display_cmd, find_on_path, run_streamed, target_dir};

/// How long a member may take to import and serve before the round fails.
const SERVE_TIMEOUT: Duration = Duration::from_secs(600);
/// A port unlikely to be taken on loopback while benchmarking.
const CLIENT_PORT: u16 = 23_479;
const PEER_PORT: u16 = 23_480;

#[derive(Args)]
pub struct RestoreBenchArgs {
    /// Snapshot size in MiB.
    #[arg(long, default_value_t = 1024)]
    mib: u64,
    /// Bytes per value.
    #[arg(long, default_value_t = 1024)]
    value_bytes: usize,
    /// Rounds; the table shows medians.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..))]
    rounds: u32,
    /// Working directory (default: target/xtask/bench-restore; not /tmp,
    /// often tmpfs, where fsync is free). Needs about 4× the snapshot.
    #[arg(long)]
    dir: Option<PathBuf>,
    /// etcdctl 3.4 to compare against (default: `etcdctl` on PATH).
    #[arg(long, env = "ETCDCTL_BIN")]
    etcdctl_bin: Option<PathBuf>,
    /// Also write the table to this file.
    #[arg(long)]
    out: Option<PathBuf>,
}

#[allow(clippy::too_many_lines)] // a benchmark script: set up, measure each round, print the report
pub fn run(a: RestoreBenchArgs) -> Result<ExitCode> {
    let etcdctl = match a.etcdctl_bin.clone() {
        Some(p) => p,
        None => find_on_path("etcdctl")
            .context("etcdctl 3.4 not on PATH (apt-get install etcd-client)")?,
    };
    // Two builds: in one, the example's dev-dependencies would change the
    // features (and so the artifacts) of the server's dependencies.
    run_streamed(cargo().args(["build", "--release", "-p", "cairn", "--bin", "cairn"]))?;
    run_streamed(cargo().args([
        "build",
        "--release",
        "-p",
        "cairn-etcd-formats",
        "--example",
        "make_etcd_snapshot",
    ]))?;
    let release = target_dir().join("release");
    let cairn = release.join("cairn");
    let maker = release.join("examples").join("make_etcd_snapshot");
    let dir = a
        .dir
        .clone()
        .unwrap_or_else(|| target_dir().join("xtask").join("bench-restore"));
    if dir.exists() {
        std::fs::remove_dir_all(&dir).with_context(|| format!("removing {}", dir.display()))?;
    }
    std::fs::create_dir_all(&dir)?;
    let snapshot = dir.join("snapshot.db");
    let mut make = Command::new(&maker);
    make.arg("--out")
        .arg(&snapshot)
        .args(["--mib", &a.mib.to_string()])
        .args(["--value-bytes", &a.value_bytes.to_string()]);
    run_streamed(&mut make)?;
    let size = std::fs::metadata(&snapshot)?.len();

    let mut etcd_times = Vec::new();
    let mut restore_times = Vec::new();
    let mut import_times = Vec::new();
    let mut serve_times = Vec::new();
    let mut etcd_serve_times = Vec::new();
    let etcd = etcdctl.with_file_name("etcd");
    for round in 0..a.rounds {
        eprintln!("== round {} of {}", round + 1, a.rounds);
        let etcd_dir = dir.join(format!("etcd-{round}"));
        let cairn_dir = dir.join(format!("cairn-{round}"));
        // Rotate who goes first: the page cache and the disk's state
        // favour nobody on average.
        for step in 0..2 {
            if (step + round) % 2 == 0 {
                etcd_times.push(time(
                    Command::new(&etcdctl)
                        .env("ETCDCTL_API", "3")
                        .args(["snapshot", "restore"])
                        .arg(&snapshot)
                        .arg(format!("--data-dir={}", etcd_dir.display())),
                )?);
            } else {
                restore_times.push(time(
                    Command::new(&cairn)
                        .args(["snapshot", "restore"])
                        .arg(&snapshot)
                        .arg(format!("--data-dir={}", cairn_dir.display())),
                )?);
            }
        }
        std::fs::remove_dir_all(&cairn_dir)?;
        // For reference: etcd itself starting on (a copy of) that dir.
        let copy = dir.join(format!("etcd-start-{round}"));
        let status = Command::new("cp")
            .arg("-a")
            .arg(&etcd_dir)
            .arg(&copy)
            .status()?;
        if !status.success() {
            bail!("copying {} failed", etcd_dir.display());
        }
        etcd_serve_times.push(serve(&etcd, &copy)?);
        std::fs::remove_dir_all(&copy)?;
        // The etcd data dir etcdctl wrote, started as Cairn: import + serve.
        let (import, serve) = import_and_serve(&cairn, &etcd_dir)?;
        import_times.push(import);
        serve_times.push(serve);
        std::fs::remove_dir_all(&etcd_dir)?;
    }
    std::fs::remove_dir_all(&dir)?;

    let table = format!(
        "Snapshot: {:.0} MiB ({} bytes), {}-byte values, median of {} rounds.\n\n\
         | Step | Time (s) | vs `etcdctl snapshot restore` |\n|---|--:|--:|\n\
         | `etcdctl snapshot restore` (3.4.23) | {:.2} | 1.00 |\n\
         | `cairn snapshot restore` | {:.2} | {:.2} |\n\
         | `cairn` on etcd's data dir: import | {:.2} | {:.2} |\n\
         | `cairn` on etcd's data dir: import, start, serving | {:.2} | {:.2} |\n\
         | for reference: `etcd` starting on its restored dir, until serving | {:.2} | {:.2} |\n",
        size as f64 / 1048576.0,
        size,
        a.value_bytes,
        a.rounds,
        median(&etcd_times),
        median(&restore_times),
        median(&restore_times) / median(&etcd_times),
        median(&import_times),
        median(&import_times) / median(&etcd_times),
        median(&serve_times),
        median(&serve_times) / median(&etcd_times),
        median(&etcd_serve_times),
        median(&etcd_serve_times) / median(&etcd_times),
    );
    println!("{table}");
    if let Some(out) = a.out {
        std::fs::write(&out, &table).with_context(|| format!("writing {}", out.display()))?;
    }
    Ok(ExitCode::SUCCESS)
}

/// Runs `cmd` to completion and returns its wall time in seconds.
fn time(cmd: &mut Command) -> Result<f64> {
    eprintln!("$ {}", display_cmd(cmd));
    let started = Instant::now();
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("could not start `{}`", display_cmd(cmd)))?;
    let took = started.elapsed().as_secs_f64();
    if !out.status.success() {
        bail!(
            "`{}` failed: {}",
            display_cmd(cmd),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    eprintln!("   {took:.2} s");
    Ok(took)
}

/// Starts `cairn` on `data_dir` (an etcd data dir) and waits until it
/// serves. Returns (the import's own time from its log, launch to
/// healthy), in seconds.
fn import_and_serve(cairn: &Path, data_dir: &Path) -> Result<(f64, f64)> {
    let served = serve(cairn, data_dir)?;
    let text = std::fs::read_to_string(data_dir.with_extension("log"))?;
    let import_ms = text
        .lines()
        .find(|l| l.contains("imported the etcd data dir"))
        .and_then(|l| l.split("took_ms=").nth(1))
        .and_then(|t| t.split_whitespace().next())
        .and_then(|t| t.parse::<f64>().ok())
        .context("no import line with took_ms in cairn's log")?;
    eprintln!("   import {:.2} s", import_ms / 1000.0);
    Ok((import_ms / 1000.0, served))
}

/// Starts `server` (cairn or etcd: the same flags) on `data_dir`, waits
/// until it serves, stops it. Returns launch to healthy, in seconds; the
/// log is `<data_dir>.log`.
fn serve(server: &Path, data_dir: &Path) -> Result<f64> {
    let log_path = data_dir.with_extension("log");
    let log = std::fs::File::create(&log_path)?;
    let url = |port| format!("http://127.0.0.1:{port}");
    let mut cmd = Command::new(server);
    cmd.arg("--name=default")
        .arg(format!("--data-dir={}", data_dir.display()))
        .arg(format!("--listen-client-urls={}", url(CLIENT_PORT)))
        .arg(format!("--advertise-client-urls={}", url(CLIENT_PORT)))
        .arg(format!("--listen-peer-urls={}", url(PEER_PORT)))
        .arg(format!("--initial-advertise-peer-urls={}", url(PEER_PORT)))
        .arg("--config-file=")
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log);
    eprintln!("$ {}", display_cmd(&cmd));
    let started = Instant::now();
    let mut child = cmd.spawn().context("starting the server")?;
    let addr = format!("127.0.0.1:{CLIENT_PORT}").parse()?;
    let served = loop {
        if let Some(status) = child.try_wait()? {
            bail!(
                "{} exited ({status}) before serving; see {}",
                server.display(),
                log_path.display()
            );
        }
        if matches!(health::probe(addr), Health::Healthy) {
            break started.elapsed().as_secs_f64();
        }
        if started.elapsed() > SERVE_TIMEOUT {
            let _ = child.kill();
            let _ = child.wait();
            bail!(
                "{} did not serve within {SERVE_TIMEOUT:?}",
                server.display()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let _ = child.kill();
    let _ = child.wait();
    eprintln!("   serving after {served:.2} s");
    Ok(served)
}

fn median(v: &[f64]) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    s.get(s.len() / 2).copied().unwrap_or(0.0)
}
