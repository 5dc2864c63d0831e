//! `cargo xtask bench [--quick] [-- ARGS]`: build the benchmark (the `fw-bench` crate, with fw's
//! XDP program and the benchmark's own, fw-bench-ebpf, embedded) in release mode and run it as
//! root. A full run writes
//! docs/benchmarks.md, docs/bench/results.json and the plots; `--quick` (under two minutes)
//! writes them under target/bench-quick/ instead. ARGS go to fw-bench (`-- --help` lists them).

use std::time::Duration;

use anyhow::bail;

use crate::{
    build_run::profile_dir,
    proc::{cmd, is_root},
    repo_root, setup,
};

pub struct Args {
    pub quick: bool,
    pub extra: Vec<String>,
}

pub fn run(a: Args) -> anyhow::Result<bool> {
    if !is_root() {
        bail!("the benchmark loads XDP programs and creates network namespaces: run it as root");
    }
    // iptables, nftables, xdp-tools and iperf3 are among setup's packages.
    setup::run(setup::Steps::ALL)?;
    println!("[bench] cargo build --release -p fw-bench --bin fw-bench");
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    cmd(cargo)
        .args(["build", "--release", "-p", "fw-bench", "--bin", "fw-bench"])
        .current_dir(repo_root())
        .inherit()
        .timeout(Duration::from_secs(60 * 60))
        .ok()?;
    let bin = profile_dir(true).join("fw-bench");
    if !bin.is_file() {
        bail!("cargo build succeeded but {} is missing", bin.display());
    }
    let mut cmd = cmd(&bin).current_dir(repo_root());
    if a.quick {
        cmd = cmd.arg("--quick");
    }
    println!(
        "[bench] {}{}",
        bin.display(),
        if a.quick { " --quick" } else { "" }
    );
    // Replace this process, so Ctrl-C reaches the benchmark directly and it cleans up.
    Err(cmd.args(&a.extra).exec().into())
}
