//! The Go load generator `xtask/gobench` (on etcd's own clientv3 3.4), for
//! `cargo xtask bench compare --client go`. Built offline from Debian's
//! packages: `golang-go` and `golang-etcd-server-dev`, which holds the etcd
//! 3.4 sources, clientv3 among them, with their dependencies in GOPATH
//! layout under /usr/share/gocode. No module download.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};

use crate::util::{find_on_path, run_streamed, target_dir, workspace_root};

/// Where Debian's Go library packages put their sources.
const DEBIAN_GOPATH: &str = "/usr/share/gocode";
const INSTALL_HINT: &str = "apt-get install golang-go golang-etcd-server-dev";

/// Builds gobench into target/xtask/gobench and returns the binary.
pub(crate) fn build() -> Result<PathBuf> {
    let go = find_on_path("go").with_context(|| format!("no `go` on PATH; {INSTALL_HINT}"))?;
    let gopath = Path::new(DEBIAN_GOPATH);
    if !gopath.join("src/go.etcd.io/etcd/clientv3").is_dir() {
        bail!("etcd's Go client sources are not in {DEBIAN_GOPATH}; {INSTALL_HINT}");
    }
    let out = target_dir().join("xtask").join("gobench");
    let mut cmd = Command::new(go);
    cmd.args(["build", "-o"])
        .arg(&out)
        .arg(".")
        .current_dir(workspace_root().join("xtask").join("gobench"))
        // GOPATH mode against the packaged sources, with a build cache of
        // our own (the default one may be unwritable or shared).
        .env("GO111MODULE", "off")
        .env("GOPATH", gopath)
        .env("GOFLAGS", "")
        .env("GOCACHE", target_dir().join("xtask").join("gocache"));
    run_streamed(&mut cmd)?;
    Ok(out)
}
