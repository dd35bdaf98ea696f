//! The mutational driver: seeds from `fuzz/corpus/<target>/`, mutates them
//! with a seeded generator, keeps inputs whose outcome is new, and records
//! every panic, broken invariant, hang and over-budget allocation with the
//! input that caused it.

use crate::alloc;
use crate::rng::Rng;
use std::collections::{HashMap, HashSet};
use std::fmt::Write as _;
use std::fs;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::io::Write as _;
use std::os::unix::fs::FileExt as _;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, Once};
use std::time::{Duration, Instant};

/// What one input did: `Ok(feature)` — a number summarizing the kind of
/// result (see [`feature`]); inputs with a feature not seen before are
/// kept and mutated further — or `Err(what invariant broke)`.
pub type Outcome = Result<u64, String>;

/// One fuzz target.
pub struct Target {
    pub name: &'static str,
    /// What it exercises, for `--list` and the docs.
    pub about: &'static str,
    pub run: fn(&[u8]) -> Outcome,
    /// Tokens the mutator inserts (format syntax, magic numbers).
    pub dict: &'static [&'static [u8]],
    /// Inputs are cut to this length.
    pub max_len: usize,
    /// An input whose run holds more heap than this at its peak (beyond
    /// what was live before) is a finding.
    pub heap_budget_bytes: usize,
}

/// How a run is set up.
#[derive(Debug, Clone)]
pub struct Config {
    /// Stop after this long (the seeds always all run).
    pub duration: Duration,
    /// Or after this many inputs, if given.
    pub max_inputs: Option<u64>,
    pub seed: u64,
    /// `fuzz/corpus` (seeds per target in `<dir>/<target>/`).
    pub corpus_dir: PathBuf,
    /// `fuzz/crashes`: regressions replayed first, findings saved here.
    pub crash_dir: PathBuf,
    /// Save findings (off for the smoke tests, which only assert).
    pub save_findings: bool,
    /// An input running longer than this is a hang: saved, then the
    /// process exits (a stuck thread cannot be stopped).
    pub hang_after: Duration,
    /// Each input is written here before it runs, so a parent process can
    /// save the one that killed this process (stack overflow, abort).
    pub current_file: Option<PathBuf>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FindingKind {
    Panic,
    Invariant,
    Memory,
}

#[derive(Debug, Clone)]
pub struct Finding {
    pub kind: FindingKind,
    pub message: String,
    pub input: Vec<u8>,
    /// Where the input was saved, if it was.
    pub saved: Option<PathBuf>,
}

#[derive(Debug, Clone, Default)]
pub struct Report {
    pub target: String,
    pub seed: u64,
    pub inputs: u64,
    pub elapsed: Duration,
    pub seeds: usize,
    pub kept: usize,
    pub features: usize,
    pub slowest: Duration,
    pub peak_heap_bytes: usize,
    pub findings: Vec<Finding>,
}

impl Report {
    pub fn rate(&self) -> f64 {
        self.inputs as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    /// One line for humans.
    pub fn summary(&self) -> String {
        format!(
            "{:<18} {:>10} inputs in {:>6.1}s = {:>8.0}/s  seeds {:>3}  kept {:>5}  outcomes {:>5}  slowest {:>7.1}ms  peak heap {:>6} KiB  findings {}",
            self.target,
            self.inputs,
            self.elapsed.as_secs_f64(),
            self.rate(),
            self.seeds,
            self.kept,
            self.features,
            self.slowest.as_secs_f64() * 1e3,
            self.peak_heap_bytes / 1024,
            self.findings.len()
        )
    }
}

/// A feature from an outcome's description: digits and quoted text are
/// dropped so that "error at byte 17" and "at byte 18" (or "invalid
/// character 'x'" and "'y'") count as one kind of outcome.
pub fn feature(parts: &[&str]) -> u64 {
    let mut h = DefaultHasher::new();
    for p in parts {
        // What error messages quote is input, not the kind of outcome.
        let mut quoted = None;
        for c in p.chars() {
            match quoted {
                Some(q) if c == q => quoted = None,
                Some(_) => {}
                None if c == '"' || c == '\'' || c == '`' => quoted = Some(c),
                None if c.is_ascii_digit() => {}
                None => c.hash(&mut h),
            }
        }
        0xffu8.hash(&mut h);
    }
    h.finish()
}

/// A number spelled in letters, to put in a [`feature`] (which drops digits).
pub fn tag(mut n: u64) -> String {
    let mut s = String::new();
    loop {
        s.push(char::from(b'a' + (n % 26) as u8));
        n /= 26;
        if n == 0 {
            return s;
        }
    }
}

/// Mixes a small number (bucketed by its bit length) into a feature.
pub fn with_count(f: u64, n: usize) -> u64 {
    let bucket = usize::BITS - n.leading_zeros();
    f ^ u64::from(bucket).wrapping_mul(0x9e37_79b9_7f4a_7c15)
}

// ---------------------------------------------------------------- panics

static PANICS: AtomicU64 = AtomicU64::new(0);
static LAST_PANIC: Mutex<Option<String>> = Mutex::new(None);
static HOOK: Once = Once::new();

thread_local! {
    /// Set while a reference implementation runs (see [`reference`]).
    static IN_REFERENCE: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Records every panic while an input runs (on any thread: a target's
/// runtime may catch a task's panic itself) with its backtrace, instead of
/// printing it. Other panics (a smoke test's assertion) print as usual.
fn install_panic_hook() {
    HOOK.call_once(|| {
        let default = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if STARTED.load(Ordering::SeqCst) == 0 {
                return default(info);
            }
            // Not ours to report; and no backtrace, whose symbol tables
            // (~100 MiB, cached for the process) would be charged to the input.
            if IN_REFERENCE.with(|r| r.get()) {
                return;
            }
            PANICS.fetch_add(1, Ordering::SeqCst);
            let text = format!("{info}\n{}", std::backtrace::Backtrace::force_capture());
            if let Ok(mut last) = LAST_PANIC.lock() {
                *last = Some(text);
            }
        }));
    });
}

/// Runs a *reference* implementation a target compares against (another
/// crate's decoder): its panics are its own bugs, not findings, so a panic
/// is returned as None and not counted. Its allocations are not charged to
/// the input either (the peak is reset afterwards): a target that calls
/// this checks its own parser's memory with [`held_since`].
pub fn reference<T>(f: impl FnOnce() -> T) -> Option<T> {
    IN_REFERENCE.with(|r| r.set(true));
    let r = catch_unwind(AssertUnwindSafe(f)).ok();
    IN_REFERENCE.with(|r| r.set(false));
    alloc::reset_peak();
    r
}

/// Heap held at peak since `base` (a value of [`alloc::reset_peak`]).
pub fn held_since(base: usize) -> usize {
    let (peak, largest) = alloc::peak_bytes();
    peak.saturating_sub(base).max(largest)
}

// ---------------------------------------------------------------- hangs

/// Nanoseconds since `EPOCH` when the current input started; 0 when idle.
static STARTED: AtomicU64 = AtomicU64::new(0);
/// The input running now, for the watchdog: (target, seed, input, crash dir).
type Running = (String, u64, Vec<u8>, PathBuf);
static CURRENT: Mutex<Option<Running>> = Mutex::new(None);
static WATCHDOG: Once = Once::new();

fn epoch() -> Instant {
    static E: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    *E.get_or_init(Instant::now)
}

fn now_nanos() -> u64 {
    epoch().elapsed().as_nanos() as u64 + 1
}

fn start_watchdog(hang_after: Duration) {
    WATCHDOG.call_once(|| {
        std::thread::spawn(move || {
            loop {
                std::thread::sleep(Duration::from_millis(100));
                let started = STARTED.load(Ordering::SeqCst);
                if started == 0 || now_nanos() - started < hang_after.as_nanos() as u64 {
                    continue;
                }
                let current = CURRENT.lock().ok().and_then(|c| c.clone());
                if let Some((target, seed, input, dir)) = current {
                    let msg = format!("input ran longer than {hang_after:?}");
                    let saved = save(&dir, &target, "hang", seed, &input, &msg);
                    eprintln!("HANG in {target}: {msg}; input saved as {saved:?}");
                }
                std::process::exit(86);
            }
        });
    });
}

// ---------------------------------------------------------------- corpus

/// The seed inputs of a target: every file in `dir` (sorted by name).
pub fn load_dir(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let Ok(rd) = fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut paths: Vec<PathBuf> = rd
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_file() && p.extension().is_none_or(|e| e != "txt"))
        .collect();
    paths.sort();
    paths
        .into_iter()
        .filter_map(|p| fs::read(&p).ok().map(|b| (p, b)))
        .collect()
}

/// Saves an input and a `.txt` beside it saying what it did.
fn save(dir: &Path, target: &str, kind: &str, seed: u64, input: &[u8], msg: &str) -> PathBuf {
    let dir = dir.join(target);
    let _ = fs::create_dir_all(&dir);
    let mut h = DefaultHasher::new();
    input.hash(&mut h);
    let path = dir.join(format!("{kind}-seed{seed}-{:016x}", h.finish()));
    let _ = fs::write(&path, input);
    let mut note = path.clone().into_os_string();
    note.push(".txt");
    let _ = fs::write(
        PathBuf::from(note),
        format!("target: {target}\nkind: {kind}\nseed: {seed}\n\n{msg}\n"),
    );
    path
}

// ---------------------------------------------------------------- mutation

const INTERESTING_8: &[u8] = &[0, 1, 0x7f, 0x80, 0xff, b'0', b'9', b'\n', b'"', b'%'];
const INTERESTING_32: &[u32] = &[
    0,
    1,
    0x7f,
    0x80,
    0xff,
    0x100,
    0x7fff,
    0x8000,
    0xffff,
    0x1_0000,
    0x4000_0000,
    0x7fff_ffff,
    0x8000_0000,
    0xffff_ffff,
];

/// Applies 1, 2, 4 or 8 random edits to `data`.
pub fn mutate(rng: &mut Rng, data: &mut Vec<u8>, dict: &[&[u8]], pool: &[Vec<u8>], max_len: usize) {
    let edits = 1 << rng.below(4);
    for _ in 0..edits {
        let len = data.len();
        match rng.below(13) {
            0 if len > 0 => {
                let i = rng.below(len);
                data[i] ^= 1 << rng.below(8);
            }
            1 if len > 0 => {
                let i = rng.below(len);
                data[i] = rng.byte();
            }
            2 if len > 0 => {
                let i = rng.below(len);
                data[i] = INTERESTING_8[rng.below(INTERESTING_8.len())];
            }
            3 if len > 0 => {
                let i = rng.below(len);
                let d = rng.below(16) as u8 + 1;
                data[i] = if rng.chance(2) {
                    data[i].wrapping_add(d)
                } else {
                    data[i].wrapping_sub(d)
                };
            }
            4 => {
                let at = rng.below(len + 1);
                let n = 1 + rng.below(16);
                let fill: Vec<u8> = if rng.chance(2) {
                    (0..n).map(|_| rng.byte()).collect()
                } else {
                    vec![rng.byte(); n]
                };
                data.splice(at..at, fill);
            }
            5 if len > 0 => {
                let at = rng.below(len);
                let n = 1 + rng.below((len - at).min(64));
                data.drain(at..at + n);
            }
            6 if len > 0 => {
                // Duplicate a range somewhere (repeats structure).
                let from = rng.below(len);
                let n = 1 + rng.below((len - from).min(128));
                let chunk = data[from..from + n].to_vec();
                let at = rng.below(len + 1);
                data.splice(at..at, chunk);
            }
            7 | 8 if !dict.is_empty() => {
                let tok = dict[rng.below(dict.len())];
                let at = rng.below(len + 1);
                if rng.chance(2) || at == len {
                    data.splice(at..at, tok.iter().copied());
                } else {
                    let end = (at + tok.len()).min(len);
                    data.splice(at..end, tok.iter().copied());
                }
            }
            9 if !pool.is_empty() => {
                // Splice: our head, another input's tail.
                let other = &pool[rng.below(pool.len())];
                let cut = rng.below(len + 1);
                let from = rng.below(other.len() + 1);
                data.truncate(cut);
                data.extend_from_slice(&other[from..]);
            }
            10 if len > 0 => {
                let v = INTERESTING_32[rng.below(INTERESTING_32.len())];
                let bytes = match rng.below(4) {
                    0 => v.to_le_bytes().to_vec(),
                    1 => v.to_be_bytes().to_vec(),
                    2 => (v as u16).to_le_bytes().to_vec(),
                    _ => (v as u16).to_be_bytes().to_vec(),
                };
                let at = rng.below(len);
                let end = (at + bytes.len()).min(len);
                data.splice(at..end, bytes);
            }
            11 if len > 0 => data.truncate(rng.below(len)),
            12 if len > 1 => {
                // Swap two bytes.
                let (a, b) = (rng.below(len), rng.below(len));
                data.swap(a, b);
            }
            _ => data.push(rng.byte()),
        }
    }
    data.truncate(max_len);
}

// ---------------------------------------------------------------- driver

/// Most inputs kept in memory to mutate (seeds are always kept).
const MAX_POOL: usize = 4096;
/// Findings recorded per kind of finding and per run.
const MAX_FINDINGS: usize = 20;

struct Runner<'a> {
    target: &'a Target,
    cfg: &'a Config,
    current: Option<fs::File>,
    report: Report,
    finding_kinds: HashSet<u64>,
}

impl Runner<'_> {
    /// Runs one input; true if its outcome was new.
    fn run_one(&mut self, input: &[u8], features: &mut HashSet<u64>) -> bool {
        if let Some(f) = &self.current {
            let _ = f.set_len(0);
            let _ = f.write_at(input, 0);
        }
        if let Ok(mut c) = CURRENT.lock() {
            match c.as_mut() {
                Some((_, _, buf, _)) => {
                    buf.clear();
                    buf.extend_from_slice(input);
                }
                None => {
                    *c = Some((
                        self.target.name.to_string(),
                        self.cfg.seed,
                        input.to_vec(),
                        self.cfg.crash_dir.clone(),
                    ))
                }
            }
        }
        let panics_before = PANICS.load(Ordering::SeqCst);
        let base = alloc::reset_peak();
        let t0 = Instant::now();
        STARTED.store(now_nanos(), Ordering::SeqCst);
        let result = catch_unwind(AssertUnwindSafe(|| (self.target.run)(input)));
        STARTED.store(0, Ordering::SeqCst);
        let took = t0.elapsed();
        let (peak, largest) = alloc::peak_bytes();
        let held = peak.saturating_sub(base).max(largest);
        self.report.inputs += 1;
        self.report.slowest = self.report.slowest.max(took);
        self.report.peak_heap_bytes = self.report.peak_heap_bytes.max(held);

        let panicked = PANICS.load(Ordering::SeqCst) != panics_before;
        let outcome = match result {
            Ok(o) if !panicked => o,
            _ => {
                let text = LAST_PANIC
                    .lock()
                    .ok()
                    .and_then(|mut l| l.take())
                    .unwrap_or_else(|| "panic without a message".into());
                self.finding(FindingKind::Panic, text, input);
                return false;
            }
        };
        if held > self.target.heap_budget_bytes {
            self.finding(
                FindingKind::Memory,
                format!(
                    "held {held} heap bytes at peak (largest allocation {largest}) for a {}-byte input; budget {}",
                    input.len(),
                    self.target.heap_budget_bytes
                ),
                input,
            );
        }
        match outcome {
            Ok(f) => features.insert(f),
            Err(msg) => {
                self.finding(FindingKind::Invariant, msg, input);
                false
            }
        }
    }

    fn finding(&mut self, kind: FindingKind, message: String, input: &[u8]) {
        // One report per kind of message: its first line up to a colon
        // (targets put the details after one), digits and quotes dropped.
        let first_line = message.lines().next().unwrap_or("");
        let head = first_line.split(": ").next().unwrap_or("");
        let key = feature(&[&format!("{kind:?}"), head]);
        if !self.finding_kinds.insert(key) || self.report.findings.len() >= MAX_FINDINGS {
            return;
        }
        let saved = self.cfg.save_findings.then(|| {
            let label = match kind {
                FindingKind::Panic => "panic",
                FindingKind::Invariant => "invariant",
                FindingKind::Memory => "memory",
            };
            save(
                &self.cfg.crash_dir,
                self.target.name,
                label,
                self.cfg.seed,
                input,
                &message,
            )
        });
        self.report.findings.push(Finding {
            kind,
            message,
            input: input.to_vec(),
            saved,
        });
    }
}

/// Runs `target`: regressions from the crash dir, then the seeds, then
/// mutations until the time or input budget is spent.
pub fn run(target: &Target, cfg: &Config) -> Report {
    install_panic_hook();
    start_watchdog(cfg.hang_after);
    let current = cfg.current_file.as_ref().and_then(|p| {
        fs::OpenOptions::new()
            .create(true)
            .truncate(true)
            .write(true)
            .open(p)
            .ok()
    });
    let mut runner = Runner {
        target,
        cfg,
        current,
        report: Report {
            target: target.name.to_string(),
            seed: cfg.seed,
            ..Report::default()
        },
        finding_kinds: HashSet::new(),
    };
    let started = Instant::now();
    let mut features = HashSet::new();
    let mut rng = Rng::new(cfg.seed ^ feature(&[target.name]));

    let regressions = load_dir(&cfg.crash_dir.join(target.name));
    let seeds = load_dir(&cfg.corpus_dir.join(target.name));
    runner.report.seeds = seeds.len();
    let mut pool: Vec<Vec<u8>> = Vec::new();
    for (_, input) in regressions.iter().chain(seeds.iter()) {
        let mut input = input.clone();
        input.truncate(target.max_len);
        runner.run_one(&input, &mut features);
        pool.push(input);
    }
    if pool.is_empty() {
        pool.push(Vec::new());
    }
    let fixed = pool.len();
    // How often each pool entry was picked, to favour fresh ones a little.
    let mut picks: HashMap<usize, u32> = HashMap::new();

    let done = |r: &Runner<'_>| {
        started.elapsed() >= cfg.duration || cfg.max_inputs.is_some_and(|m| r.report.inputs >= m)
    };
    let mut scratch = Vec::new();
    while !done(&runner) {
        // Pick twice and take the less used: new finds get explored first.
        let a = rng.below(pool.len());
        let b = rng.below(pool.len());
        let pick = if picks.get(&a).copied().unwrap_or(0) <= picks.get(&b).copied().unwrap_or(0) {
            a
        } else {
            b
        };
        *picks.entry(pick).or_default() += 1;
        scratch.clear();
        scratch.extend_from_slice(&pool[pick]);
        mutate(&mut rng, &mut scratch, target.dict, &pool, target.max_len);
        if runner.run_one(&scratch, &mut features) {
            if pool.len() < MAX_POOL {
                pool.push(scratch.clone());
            } else {
                let slot = fixed + rng.below(MAX_POOL - fixed);
                pool[slot] = scratch.clone();
                picks.remove(&slot);
            }
        }
    }
    if let Ok(mut c) = CURRENT.lock() {
        *c = None;
    }
    runner.report.elapsed = started.elapsed();
    runner.report.kept = pool.len() - fixed;
    runner.report.features = features.len();
    runner.report
}

/// A finding's report for humans: what, where saved, and the message.
pub fn describe(f: &Finding) -> String {
    let mut s = String::new();
    let _ = write!(s, "{:?}", f.kind);
    if let Some(p) = &f.saved {
        let _ = write!(s, " (input saved as {})", p.display());
    }
    let _ = write!(s, ": {}", f.message);
    s
}

/// Prints and flushes (progress lines from long runs).
pub fn say(line: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}
