//! `cairn-fuzz [TARGET...] [--seconds N] [--inputs N] [--seed S]`: runs
//! fuzz targets (all when none is named), one after the other, each in a
//! child process of its own so that an input that kills the process (a
//! stack overflow, an abort) is still saved. Prints inputs tried and
//! inputs/second per target; exits 1 if anything was found.
//!
//! Usually run as `cargo xtask fuzz …` (which builds this and passes the
//! repository's `fuzz/corpus` and `fuzz/crashes`).

use anyhow::{Context as _, Result, bail};
use cairn_fuzz::engine::{self, Config, Report, say};
use cairn_fuzz::targets;
use std::path::PathBuf;
use std::process::{Command, ExitCode, Stdio};
use std::time::Duration;

/// tokio's worker threads have 2 MiB stacks; parsers run on them.
const DEFAULT_STACK_KIB: usize = 2048;

struct Args {
    targets: Vec<String>,
    seconds: f64,
    inputs: Option<u64>,
    seed: u64,
    corpus: PathBuf,
    crashes: PathBuf,
    stack_kib: usize,
    hang_secs: f64,
    list: bool,
    /// Internal: run one target in this process.
    worker: bool,
    current_file: Option<PathBuf>,
    report_file: Option<PathBuf>,
}

fn parse_args() -> Result<Args> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let mut a = Args {
        targets: Vec::new(),
        seconds: 10.0,
        inputs: None,
        seed: 1,
        corpus: root.join("corpus"),
        crashes: root.join("crashes"),
        stack_kib: DEFAULT_STACK_KIB,
        hang_secs: 10.0,
        list: false,
        worker: false,
        current_file: None,
        report_file: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut value = |name: &str| it.next().with_context(|| format!("{name} needs a value"));
        match arg.as_str() {
            "--seconds" => a.seconds = value("--seconds")?.parse()?,
            "--inputs" => a.inputs = Some(value("--inputs")?.parse()?),
            "--seed" => a.seed = value("--seed")?.parse()?,
            "--corpus" => a.corpus = value("--corpus")?.into(),
            "--crashes" => a.crashes = value("--crashes")?.into(),
            "--stack-kib" => a.stack_kib = value("--stack-kib")?.parse()?,
            "--hang-seconds" => a.hang_secs = value("--hang-seconds")?.parse()?,
            "--current-file" => a.current_file = Some(value("--current-file")?.into()),
            "--report-file" => a.report_file = Some(value("--report-file")?.into()),
            "--worker" => a.worker = true,
            "--list" => a.list = true,
            "-h" | "--help" => {
                say(
                    "cairn-fuzz [TARGET...] [--seconds N] [--inputs N] [--seed S] [--list]\n\
                     \x20 [--corpus DIR] [--crashes DIR] [--stack-kib K] [--hang-seconds N]",
                );
                std::process::exit(0);
            }
            t if !t.starts_with('-') => a.targets.push(t.to_string()),
            other => bail!("unknown argument {other}"),
        }
    }
    Ok(a)
}

fn main() -> ExitCode {
    match real_main() {
        Ok(code) => code,
        Err(e) => {
            eprintln!("cairn-fuzz: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn real_main() -> Result<ExitCode> {
    let args = parse_args()?;
    if args.list {
        for t in targets::all() {
            say(&format!("{:<18} {}", t.name, t.about));
        }
        return Ok(ExitCode::SUCCESS);
    }
    if args.worker {
        return worker(&args);
    }
    let names: Vec<String> = if args.targets.is_empty() {
        targets::all().iter().map(|t| t.name.to_string()).collect()
    } else {
        args.targets.clone()
    };
    for n in &names {
        if targets::by_name(n).is_none() {
            bail!("no target {n} (see --list)");
        }
    }
    let exe = std::env::current_exe()?;
    let scratch = std::env::temp_dir().join(format!("cairn-fuzz-parent-{}", std::process::id()));
    std::fs::create_dir_all(&scratch)?;
    let mut found = 0usize;
    let (mut total_inputs, mut total_secs) = (0u64, 0f64);
    for name in &names {
        let current = scratch.join(format!("{name}.current"));
        let report = scratch.join(format!("{name}.report"));
        let mut cmd = Command::new(&exe);
        cmd.arg("--worker")
            .arg(name)
            .args(["--seconds", &args.seconds.to_string()])
            .args(["--seed", &args.seed.to_string()])
            .args(["--stack-kib", &args.stack_kib.to_string()])
            .args(["--hang-seconds", &args.hang_secs.to_string()])
            .arg("--corpus")
            .arg(&args.corpus)
            .arg("--crashes")
            .arg(&args.crashes)
            .arg("--current-file")
            .arg(&current)
            .arg("--report-file")
            .arg(&report)
            .stdin(Stdio::null())
            .stderr(Stdio::piped());
        if let Some(n) = args.inputs {
            cmd.args(["--inputs", &n.to_string()]);
        }
        let child = cmd.spawn()?;
        let pid = child.id();
        let out = child.wait_with_output()?;
        // A child that died (or was stopped by the watchdog) left its files.
        let _ = std::fs::remove_dir_all(targets::scratch_dir_of(pid));
        let stderr = String::from_utf8_lossy(&out.stderr);
        match out.status.code() {
            Some(0) => {}
            Some(1) => found += 1,
            // 86: the watchdog saved a hang and exited.
            Some(86) => {
                found += 1;
                say(&format!("{name}: HANG\n{stderr}"));
            }
            _ => {
                found += 1;
                save_crash(&args, name, &out, &current, &stderr)?;
            }
        }
        if let Ok(text) = std::fs::read_to_string(&report) {
            for line in text.lines() {
                if let Some(rest) = line.strip_prefix("totals ") {
                    let mut f = rest.split(' ');
                    total_inputs += f.next().and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
                    total_secs += f.next().and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
                }
            }
        }
    }
    let _ = std::fs::remove_dir_all(&scratch);
    say(&format!(
        "fuzz: {} target(s), {total_inputs} inputs in {total_secs:.1}s, {} with findings",
        names.len(),
        found
    ));
    Ok(if found == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// A worker that died: its current input goes to the crashes directory,
/// with a note holding the end of its stderr.
fn save_crash(
    args: &Args,
    name: &str,
    out: &std::process::Output,
    current: &std::path::Path,
    stderr: &str,
) -> Result<()> {
    let input = std::fs::read(current).unwrap_or_default();
    let dir = args.crashes.join(name);
    std::fs::create_dir_all(&dir)?;
    let path = dir.join(format!("crash-seed{}-{:016x}", args.seed, hash(&input)));
    std::fs::write(&path, &input)?;
    let tail: String = stderr
        .lines()
        .rev()
        .take(40)
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
        .collect::<Vec<_>>()
        .join("\n");
    let mut note = path.clone().into_os_string();
    note.push(".txt");
    std::fs::write(
        PathBuf::from(note),
        format!(
            "target: {name}\nkind: crash ({})\nseed: {}\n\n{tail}\n",
            out.status, args.seed
        ),
    )?;
    say(&format!(
        "{name}: the process died ({}); input saved as {}\n{tail}",
        out.status,
        path.display()
    ));
    Ok(())
}

fn hash(b: &[u8]) -> u64 {
    use std::hash::{DefaultHasher, Hash, Hasher};
    let mut h = DefaultHasher::new();
    b.hash(&mut h);
    h.finish()
}

fn worker(args: &Args) -> Result<ExitCode> {
    let [name] = &args.targets[..] else {
        bail!("--worker takes one target");
    };
    let target = targets::by_name(name).with_context(|| format!("no target {name}"))?;
    let cfg = Config {
        duration: Duration::from_secs_f64(args.seconds),
        max_inputs: args.inputs,
        seed: args.seed,
        corpus_dir: args.corpus.clone(),
        crash_dir: args.crashes.clone(),
        save_findings: true,
        hang_after: Duration::from_secs_f64(args.hang_secs),
        current_file: args.current_file.clone(),
    };
    // Parsers run on tokio worker threads in the server: same stack size.
    let report: Report = std::thread::Builder::new()
        .name(format!("fuzz-{name}"))
        .stack_size(args.stack_kib * 1024)
        .spawn(move || engine::run(&target, &cfg))?
        .join()
        .map_err(|_| anyhow::anyhow!("the fuzz thread panicked"))?;
    targets::remove_scratch_dir();
    say(&report.summary());
    for f in &report.findings {
        say(&format!("  {}", engine::describe(f)));
    }
    if let Some(path) = &args.report_file {
        std::fs::write(
            path,
            format!(
                "totals {} {:.3}\n{}\n",
                report.inputs,
                report.elapsed.as_secs_f64(),
                report.summary()
            ),
        )?;
    }
    Ok(if report.findings.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}
