//! `cargo xtask plugins build`: builds the guest workspace (`plugins/guest`:
//! the SDK and the example plugins) for `wasm32-wasip2` and copies each
//! example's component into `plugins/dist/`, where the host's tests and the
//! server load them. The dist files are committed, so building and testing
//! Cairn itself never needs a wasm toolchain; run this after changing the
//! WIT, the SDK or an example, and commit the new files.

use std::ffi::OsString;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

use anyhow::{Context, Result, bail};
use clap::Subcommand;

use crate::util::{run_streamed, workspace_root};

const TARGET: &str = "wasm32-wasip2";

/// A component starts with the wasm magic, version 0x0d and layer 1; a core
/// module has version 1 and layer 0.
const COMPONENT_HEADER: &[u8] = b"\0asm\x0d\0\x01\0";

#[derive(Subcommand)]
pub enum PluginsAction {
    /// Build the example plugins (release, wasm32-wasip2) into plugins/dist/.
    Build,
}

pub fn run(action: PluginsAction) -> Result<ExitCode> {
    match action {
        PluginsAction::Build => build(),
    }
}

fn build() -> Result<ExitCode> {
    check_target_installed()?;
    let root = workspace_root();
    let guest = root.join("plugins").join("guest");
    let dist = root.join("plugins").join("dist");

    let mut cargo = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    cargo
        .current_dir(&guest)
        .args(["build", "--release", "--workspace", "--target", TARGET])
        // The guest workspace has its own target dir, whatever the outer
        // build uses.
        .env("CARGO_TARGET_DIR", guest.join("target"));
    if std::env::var_os("RUSTFLAGS").is_none()
        && std::env::var_os("CARGO_ENCODED_RUSTFLAGS").is_none()
    {
        // Panic locations embed source paths; map them to fixed names so
        // the committed binaries do not depend on who built them where.
        cargo.env("CARGO_ENCODED_RUSTFLAGS", remap_flags(&root));
    }
    run_streamed(&mut cargo).context("building the guest workspace (plugins/guest)")?;

    let out = guest.join("target").join(TARGET).join("release");
    fs::create_dir_all(&dist).with_context(|| format!("creating {}", dist.display()))?;
    let mut built = 0;
    for example in examples(&guest)? {
        let artifact = out.join(format!("{}.wasm", example.replace('-', "_")));
        let bytes =
            fs::read(&artifact).with_context(|| format!("reading {}", artifact.display()))?;
        if !bytes.starts_with(COMPONENT_HEADER) {
            bail!(
                "{} is not a WebAssembly component (is the target {TARGET}?)",
                artifact.display()
            );
        }
        let dest = dist.join(format!("{example}.wasm"));
        fs::write(&dest, &bytes).with_context(|| format!("writing {}", dest.display()))?;
        eprintln!("xtask: {} ({} bytes)", relative(&root, &dest), bytes.len());
        built += 1;
    }
    if built == 0 {
        bail!(
            "no example plugins found under {}",
            guest.join("examples").display()
        );
    }
    eprintln!("xtask: {built} plugins in plugins/dist/; commit them with the sources that changed");
    Ok(ExitCode::SUCCESS)
}

/// The example crates: every directory under `plugins/guest/examples/`.
fn examples(guest: &Path) -> Result<Vec<String>> {
    let dir = guest.join("examples");
    let mut names = Vec::new();
    for entry in fs::read_dir(&dir).with_context(|| format!("listing {}", dir.display()))? {
        let entry = entry?;
        if entry.path().join("Cargo.toml").is_file() {
            names.push(entry.file_name().to_string_lossy().into_owned());
        }
    }
    names.sort();
    Ok(names)
}

/// Fails with the install command when rustc has no standard library for
/// the wasm target.
fn check_target_installed() -> Result<()> {
    let rustc = std::env::var_os("RUSTC").unwrap_or_else(|| "rustc".into());
    let output = Command::new(&rustc)
        .args(["--print", "target-libdir", "--target", TARGET])
        .output()
        .context("running rustc --print target-libdir")?;
    let libdir = PathBuf::from(String::from_utf8_lossy(&output.stdout).trim());
    if !output.status.success() || !libdir.is_dir() {
        bail!(
            "the Rust target {TARGET} is not installed; install it with\n\n    \
             rustup target add {TARGET}\n\nand run `cargo xtask plugins build` again"
        );
    }
    Ok(())
}

/// `--remap-path-prefix` flags (0x1f-separated, as CARGO_ENCODED_RUSTFLAGS
/// wants) for the repository and cargo's registry sources.
fn remap_flags(root: &Path) -> OsString {
    let mut flags = vec![format!("--remap-path-prefix={}=/cairn", root.display())];
    let cargo_home = std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cargo")));
    if let Some(home) = cargo_home {
        flags.push(format!("--remap-path-prefix={}=/cargo", home.display()));
    }
    flags.join("\x1f").into()
}

fn relative(root: &Path, path: &Path) -> String {
    path.strip_prefix(root)
        .unwrap_or(path)
        .display()
        .to_string()
}
