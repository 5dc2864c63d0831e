//! `cargo xtask build` and `cargo xtask run`.

use std::{path::PathBuf, time::Duration};

use anyhow::bail;

use crate::{
    proc::{cmd, is_root},
    repo_root, setup,
};

/// `target/<profile>/`.
pub fn profile_dir(release: bool) -> PathBuf {
    let target = match std::env::var_os("CARGO_TARGET_DIR").filter(|d| !d.is_empty()) {
        Some(d) => {
            std::path::absolute(PathBuf::from(d)).unwrap_or_else(|_| repo_root().join("target"))
        }
        None => repo_root().join("target"),
    };
    target.join(if release { "release" } else { "debug" })
}

/// Toolchain setup, then `cargo build -p fw-user` (its build.rs compiles the XDP program).
/// Returns the absolute path of the `fw` binary.
pub fn build(release: bool) -> anyhow::Result<PathBuf> {
    setup::run(setup::Steps::TOOLCHAIN)?;
    cargo_build(release)
}

/// Just the cargo part, for callers that already ran setup.
pub fn cargo_build(release: bool) -> anyhow::Result<PathBuf> {
    let profile = if release { "release" } else { "dev" };
    println!(
        "[build] cargo build -p fw-user ({profile}; the XDP program is compiled by fw-user's build.rs)"
    );
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = cmd(cargo).args(["build", "-p", "fw-user"]);
    if release {
        cmd = cmd.arg("--release");
    }
    cmd.current_dir(repo_root())
        .inherit()
        .timeout(Duration::from_secs(60 * 60))
        .ok()?;
    let bin = profile_dir(release).join("fw");
    if !bin.is_file() {
        bail!("cargo build succeeded but {} is missing", bin.display());
    }
    println!("[build] {}", bin.display());
    Ok(bin)
}

/// Build, then replace this process with `fw run ARGS` (its exit status is ours, and Ctrl-C
/// reaches it directly so it detaches cleanly).
pub fn run(release: bool, args: Vec<String>) -> anyhow::Result<()> {
    if args.is_empty() {
        bail!(
            "say which interface to filter: cargo xtask run -- --iface IF [--log] [--policy FILE]"
        );
    }
    if !is_root() {
        bail!(
            "`fw run` loads an XDP program and needs root (CAP_BPF and CAP_NET_ADMIN); run as root"
        );
    }
    setup::run(setup::Steps {
        toolchain: true,
        bpffs: true,
        packages: false,
    })?;
    let bin = cargo_build(release)?;
    println!("[run] {} run {}", bin.display(), args.join(" "));
    let mut cmd = cmd(&bin).arg("run").args(&args);
    // `--log` lines come through the `log` crate at info level (target fw_xdp); fw's own
    // default filter is warn, which would hide them.
    if args.iter().any(|a| a == "--log") && std::env::var_os("RUST_LOG").is_none() {
        cmd = cmd.env("RUST_LOG", "warn,fw_xdp=info");
    }
    Err(cmd.exec().into())
}
