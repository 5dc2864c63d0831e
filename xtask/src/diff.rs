//! `cargo xtask diff [--packets N] [--policy FILE...] [-- ARGS]`: the differential test against
//! iptables, full size. Builds `fw` and `fw-diff` (the `fw-diff` crate) and runs it as
//! root: each policy goes into real iptables in one network namespace and into fw in another,
//! both get the same generated packets, and what each lets through is compared. The built-in
//! run (no --policy, at least 100,000 packets per policy) writes docs/differential.md; other
//! runs write target/differential.md. ARGS go to fw-diff (`-- --help` lists them).

use std::time::Duration;

use anyhow::bail;

use crate::{
    build_run::{self, profile_dir},
    proc::{cmd, is_root},
    repo_root, setup,
};

pub struct Args {
    pub packets: Option<usize>,
    pub policies: Vec<String>,
    pub extra: Vec<String>,
}

/// The full run's size: the issue asks for at least 100,000 packets.
pub const FULL_PACKETS: usize = 100_000;

pub fn run(a: Args) -> anyhow::Result<bool> {
    if !is_root() {
        bail!(
            "the differential test creates network namespaces, loads iptables rules and attaches XDP programs: run it as root"
        );
    }
    // iptables, nftables, ethtool and iproute2 are among setup's packages.
    setup::run(setup::Steps::ALL)?;
    let fw = build_run::cargo_build(false)?;
    println!("[diff] cargo build -p fw-diff --bin fw-diff");
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    cmd(cargo)
        .args(["build", "-p", "fw-diff", "--bin", "fw-diff"])
        .current_dir(repo_root())
        .inherit()
        .timeout(Duration::from_secs(60 * 60))
        .ok()?;
    let bin = profile_dir(false).join("fw-diff");
    if !bin.is_file() {
        bail!("cargo build succeeded but {} is missing", bin.display());
    }
    let packets = a.packets.unwrap_or(FULL_PACKETS);
    let full = a.policies.is_empty() && packets >= FULL_PACKETS;
    let md = if full {
        repo_root().join("docs/differential.md")
    } else {
        profile_dir(false)
            .parent()
            .unwrap_or(&repo_root())
            .join("differential.md")
    };
    let mut cmd = cmd(&bin)
        .current_dir(repo_root())
        .env("FW_BIN", &fw)
        .arg("--packets")
        .arg(packets.to_string())
        .arg("--markdown")
        .arg(&md);
    // fw-diff runs in the workspace root: make the files' paths absolute first.
    let abs = |f: &str| {
        std::path::absolute(f)
            .map(|p| p.display().to_string())
            .unwrap_or_else(|_| f.to_string())
    };
    for p in &a.policies {
        let p = match p.split_once('=') {
            Some((ipt, fw)) => format!("{}={}", abs(ipt), abs(fw)),
            None => abs(p),
        };
        cmd = cmd.arg("--policy").arg(p);
    }
    println!("[diff] {} (FW_BIN={})", bin.display(), fw.display());
    // Replace this process, so Ctrl-C reaches fw-diff directly and its guards clean up.
    Err(cmd.args(&a.extra).exec().into())
}
