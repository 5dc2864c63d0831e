//! `cargo xtask build` and `cargo xtask run`.

use std::{path::PathBuf, time::Duration};

use anyhow::bail;

use crate::{
    proc::{Cmd, is_root},
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

/// Build fw-ebpf's objects (the XDP/TC program and the benchmark's programs) here, as
/// aya-build would inside fw-user's build.rs, and point every later cargo command of this
/// process at them (FW_EBPF_OBJECTS). On fresh clones aya-build's nested cargo sometimes failed
/// at its very first step, inside the build script only; run from here it never did.
pub fn prebuild_ebpf() -> anyhow::Result<()> {
    let root = repo_root();
    let target = root.join("target").join("ebpf");
    println!("[build] the XDP programs: fw-ebpf for bpfel-unknown-none (nightly, build-std)");
    let arch = std::env::consts::ARCH;
    let attempt = || {
        // A clean environment: nothing of the cargo that runs xtask leaks into this build.
        let mut cmd = Cmd::new("rustup").env_clear();
        for k in [
            "PATH",
            "HOME",
            "CARGO_HOME",
            "RUSTUP_HOME",
            "TERM",
            "USER",
            "TMPDIR",
        ] {
            if let Some(v) = std::env::var_os(k) {
                cmd = cmd.env(k, v);
            }
        }
        cmd.env("PATH", crate::setup::child_path())
            .args([
                "run",
                "nightly",
                "cargo",
                "build",
                "--package",
                "fw-ebpf",
                "--bins",
            ])
            .args([
                "--release",
                "--target",
                "bpfel-unknown-none",
                "-Z",
                "build-std=core",
            ])
            .arg("--target-dir")
            .arg(&target)
            .env(
                "CARGO_ENCODED_RUSTFLAGS",
                format!("--cfg=bpf_target_arch=\"{arch}\"\x1f-Cdebuginfo=2\x1f-Clink-arg=--btf"),
            )
            .current_dir(&root)
            .inherit()
            .timeout(Duration::from_secs(60 * 60))
            .ok()
    };
    let mut tries = 0;
    while let Err(e) = attempt() {
        tries += 1;
        if tries == 3 {
            return Err(e);
        }
        println!("[build] building the XDP programs failed ({e:#}); trying again");
        std::thread::sleep(Duration::from_secs(2));
    }
    let objects = target.join("bpfel-unknown-none").join("release");
    // SAFETY: xtask is single-threaded here; the variable is read by the cargo children.
    unsafe { std::env::set_var("FW_EBPF_OBJECTS", &objects) };
    Ok(())
}

/// Just the cargo part, for callers that already ran setup.
pub fn cargo_build(release: bool) -> anyhow::Result<PathBuf> {
    let profile = if release { "release" } else { "dev" };
    println!(
        "[build] cargo build -p fw-user ({profile}; the XDP program is compiled by fw-user's build.rs)"
    );
    prebuild_ebpf()?;
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = Cmd::new(cargo).args(["build", "-p", "fw-user"]);
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
    let mut cmd = Cmd::new(&bin).arg("run").args(&args);
    // `--log` lines come through the `log` crate at info level (target fw_xdp); fw's own
    // default filter is warn, which would hide them.
    if args.iter().any(|a| a == "--log") && std::env::var_os("RUST_LOG").is_none() {
        cmd = cmd.env("RUST_LOG", "warn,fw_xdp=info");
    }
    Err(cmd.exec())
}
