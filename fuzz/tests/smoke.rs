//! Every fuzz target for a few seconds (what `cargo xtask test`, and so CI,
//! runs): the checked-in corpus and every saved crash input (regressions)
//! first, then mutations from a fixed seed. A finding fails the test with
//! its message; `cargo xtask fuzz <target>` saves the input.

use cairn_fuzz::engine::{self, Config};
use cairn_fuzz::targets;
use std::path::PathBuf;
use std::time::Duration;

/// Per target; 14 targets on two cores stay well under a minute.
const SECONDS: f64 = 3.0;

fn smoke(name: &str) {
    let target = targets::by_name(name).expect("target exists");
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let cfg = Config {
        duration: Duration::from_secs_f64(SECONDS),
        max_inputs: None,
        seed: 1,
        corpus_dir: root.join("corpus"),
        crash_dir: root.join("crashes"),
        save_findings: false,
        hang_after: Duration::from_secs(30),
        current_file: None,
    };
    let report = engine::run(&target, &cfg);
    targets::remove_scratch_dir();
    println!("{}", report.summary());
    assert!(
        report.seeds > 0,
        "{name} has no seed corpus in fuzz/corpus/{name}/"
    );
    assert!(
        report.inputs > report.seeds as u64,
        "{name} ran no mutations"
    );
    let findings: Vec<String> = report.findings.iter().map(engine::describe).collect();
    assert!(findings.is_empty(), "{name}: {}", findings.join("\n"));
}

macro_rules! smoke_tests {
    ($($test:ident => $name:literal),* $(,)?) => {
        $(#[test]
        fn $test() {
            smoke($name);
        })*

        #[test]
        fn every_target_has_a_smoke_test() {
            let mut tested = vec![$($name),*];
            tested.sort_unstable();
            let mut all: Vec<&str> = targets::all().iter().map(|t| t.name).collect();
            all.sort_unstable();
            assert_eq!(tested, all);
        }
    };
}

smoke_tests! {
    h2_authority => "h2-authority",
    hpack => "hpack",
    gateway_json => "gateway-json",
    v2_http => "v2-http",
    peer_messages => "peer-messages",
    snapshot_file => "snapshot-file",
    snapshot_restore => "snapshot-restore",
    etcd_bolt => "etcd-bolt",
    etcd_wal => "etcd-wal",
    config_envfile => "config-envfile",
    config_yaml => "config-yaml",
    config_toml => "config-toml",
    plugin_admin => "plugin-admin",
    discovery => "discovery",
}
