//! `cargo xtask setup`: everything fw needs on a fresh machine, installed idempotently. Each
//! step checks first (cheaply) and installs only what is missing, so every other task runs the
//! steps it needs on every invocation.

use std::{
    env,
    ffi::OsString,
    fs,
    path::{Path, PathBuf},
    sync::OnceLock,
    time::Duration,
};

use anyhow::{Context as _, bail};

use crate::proc::{cmd, indent, is_root};

/// The bpf-linker release whose `llvm-NN` features match the nightly compilers used here.
const BPF_LINKER: &str = "bpf-linker@0.13.0";

/// What the tests and the demo run: traffic tools, packet capture, BPF and network tooling.
pub const DEBIAN_PACKAGES: &[&str] = &[
    "nmap",
    "hping3",
    "iptables",
    "nftables",
    "tcpdump",
    "bpftool",
    "iproute2",
    "iputils-ping",
    "netcat-openbsd",
    "curl",
    "ethtool",
    "xdp-tools",
    "iperf3",
    // Fault injection in the safe-operations tests (a kill or ENOSPC at a chosen syscall).
    "strace",
    // The observability e2e test scrapes `fw serve` with a real Prometheus server.
    "prometheus",
    // fw top is tested in a real terminal.
    "tmux",
];

/// Which steps a task needs.
#[derive(Clone, Copy, Debug)]
pub struct Steps {
    /// Nightly with rust-src, and bpf-linker: what building the XDP program needs.
    pub toolchain: bool,
    /// bpffs on /sys/fs/bpf (root).
    pub bpffs: bool,
    /// The Debian packages above (root).
    pub packages: bool,
}

impl Steps {
    pub const ALL: Steps = Steps {
        toolchain: true,
        bpffs: true,
        packages: true,
    };
    pub const TOOLCHAIN: Steps = Steps {
        toolchain: true,
        bpffs: false,
        packages: false,
    };
}

/// Directories to put in front of PATH for every command xtask runs (where bpf-linker is).
static EXTRA_PATH: OnceLock<Vec<PathBuf>> = OnceLock::new();

/// PATH with the directories setup found tools in, for child processes.
pub fn child_path() -> OsString {
    let mut dirs: Vec<PathBuf> = EXTRA_PATH.get().cloned().unwrap_or_default();
    if let Some(p) = env::var_os("PATH") {
        dirs.extend(env::split_paths(&p));
    }
    env::join_paths(dirs).unwrap_or_else(|_| env::var_os("PATH").unwrap_or_default())
}

pub fn run(steps: Steps) -> anyhow::Result<()> {
    if steps.toolchain {
        let sysroot = step("nightly toolchain", nightly_sysroot)?;
        step("rust-src for nightly", || rust_src(&sysroot))?;
        let dir = step("bpf-linker (built against nightly's LLVM)", || {
            bpf_linker(&sysroot)
        })?;
        let _ = EXTRA_PATH.set(vec![dir]);
    }
    if steps.bpffs {
        step("bpffs on /sys/fs/bpf", bpffs)?;
    }
    if steps.packages {
        step("debian packages", packages)?;
    }
    Ok(())
}

/// Run one step; failures name it.
fn step<T>(name: &str, f: impl FnOnce() -> anyhow::Result<T>) -> anyhow::Result<T> {
    f().with_context(|| format!("setup step \"{name}\" failed"))
}

fn say(step: &str, what: &str) {
    println!("[setup] {step}: {what}");
}

fn nightly_sysroot() -> anyhow::Result<PathBuf> {
    const STEP: &str = "nightly toolchain";
    let query = || {
        cmd("rustc")
            .args(["+nightly", "--print", "sysroot"])
            .timeout(Duration::from_secs(120))
            .run()
    };
    let out = query()?;
    if out.success() {
        say(STEP, "present");
        return Ok(PathBuf::from(out.stdout.trim()));
    }
    say(STEP, "missing; installing with rustup…");
    cmd("rustup")
        .args([
            "toolchain",
            "install",
            "nightly",
            "--profile",
            "minimal",
            "--component",
            "rust-src",
        ])
        .env("RUSTUP_AUTO_INSTALL", "1")
        .timeout(Duration::from_secs(20 * 60))
        .ok()?;
    let out = query()?;
    if !out.success() {
        bail!(
            "`rustc +nightly --print sysroot` still fails after installing nightly:\n{}",
            indent(&out.both(), "    ")
        );
    }
    say(STEP, "installed");
    Ok(PathBuf::from(out.stdout.trim()))
}

fn rust_src(sysroot: &Path) -> anyhow::Result<()> {
    const STEP: &str = "rust-src for nightly";
    let lib = sysroot.join("lib/rustlib/src/rust/library");
    if lib.is_dir() {
        say(STEP, "present");
        return Ok(());
    }
    say(
        STEP,
        "missing; installing (rustup component add rust-src --toolchain nightly)…",
    );
    cmd("rustup")
        .args(["component", "add", "rust-src", "--toolchain", "nightly"])
        .timeout(Duration::from_secs(15 * 60))
        .ok()?;
    if !lib.is_dir() {
        bail!(
            "rustup reported success but {} is still missing",
            lib.display()
        );
    }
    say(STEP, "installed");
    Ok(())
}

fn cargo_home() -> PathBuf {
    if let Some(h) = env::var_os("CARGO_HOME").filter(|h| !h.is_empty()) {
        return PathBuf::from(h);
    }
    let home = env::var_os("HOME").unwrap_or_else(|| "/root".into());
    PathBuf::from(home).join(".cargo")
}

/// Where `cargo install` puts binaries (its own precedence, minus config files).
fn install_bin_dir() -> PathBuf {
    match env::var_os("CARGO_INSTALL_ROOT").filter(|r| !r.is_empty()) {
        Some(r) => PathBuf::from(r).join("bin"),
        None => cargo_home().join("bin"),
    }
}

/// A bpf-linker that runs and whose libLLVM (if linked dynamically) is nightly's own.
fn usable_bpf_linker(path: &Path, sysroot: &Path) -> Result<(), String> {
    match cmd(path)
        .arg("--version")
        .timeout(Duration::from_secs(30))
        .run()
    {
        Ok(o) if o.success() => {}
        Ok(o) => {
            return Err(format!(
                "`{} --version` fails ({})",
                path.display(),
                o.both().lines().next().unwrap_or("no output")
            ));
        }
        Err(e) => return Err(format!("{} does not run ({e:#})", path.display())),
    }
    // A linker built against an older nightly links to a libLLVM soname this nightly does not
    // ship any more: rebuild it rather than link objects with another LLVM than rustc's.
    if let Ok(ldd) = cmd("ldd").arg(path).timeout(Duration::from_secs(30)).run() {
        for line in ldd.stdout.lines() {
            let name = line.split_whitespace().next().unwrap_or("");
            if name.starts_with("libLLVM") && !sysroot.join("lib").join(name).exists() {
                return Err(format!(
                    "{} uses {name}, which the current nightly does not ship",
                    path.display()
                ));
            }
        }
    }
    Ok(())
}

/// Find bpf-linker on PATH or in cargo's bin directory.
fn find_bpf_linker() -> Option<PathBuf> {
    let mut dirs = vec![install_bin_dir(), cargo_home().join("bin")];
    if let Some(p) = env::var_os("PATH") {
        dirs.extend(env::split_paths(&p));
    }
    dirs.into_iter()
        .map(|d| d.join("bpf-linker"))
        .find(|p| p.is_file())
}

/// Returns the directory bpf-linker lives in.
fn bpf_linker(sysroot: &Path) -> anyhow::Result<PathBuf> {
    const STEP: &str = "bpf-linker";
    let mut force = false;
    if let Some(found) = find_bpf_linker() {
        match usable_bpf_linker(&found, sysroot) {
            Ok(()) => {
                say(STEP, &format!("present ({})", found.display()));
                return Ok(found.parent().expect("a file has a parent").to_path_buf());
            }
            Err(why) => {
                say(STEP, &format!("{why}; rebuilding"));
                force = true;
            }
        }
    }
    let llvm = llvm_major()?;
    let prefix = cargo_home().join("fw-llvm");
    say(
        STEP,
        &format!(
            "installing {BPF_LINKER} against nightly's LLVM {llvm} (LLVM_PREFIX={}; takes a minute or two)…",
            prefix.display()
        ),
    );
    llvm_prefix(sysroot, &prefix)?;
    let cargo = env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = cmd(cargo).args([
        "install",
        BPF_LINKER,
        "--locked",
        "--no-default-features",
        "--features",
        &format!("llvm-{llvm}"),
    ]);
    if force {
        cmd = cmd.arg("--force");
    }
    let out = cmd
        .env("LLVM_PREFIX", &prefix)
        .timeout(Duration::from_secs(30 * 60))
        .run()?;
    if !out.success() {
        let tail: Vec<&str> = out.stderr.lines().rev().take(40).collect();
        let tail: Vec<&str> = tail.into_iter().rev().collect();
        bail!(
            "cargo install {BPF_LINKER} failed (exit status {}):\n{}",
            out.code(),
            indent(&tail.join("\n"), "    ")
        );
    }
    let bin = install_bin_dir().join("bpf-linker");
    match usable_bpf_linker(&bin, sysroot) {
        Ok(()) => {
            say(STEP, &format!("installed ({})", bin.display()));
            Ok(install_bin_dir())
        }
        Err(why) => bail!("{BPF_LINKER} was installed but is not usable: {why}"),
    }
}

/// The major LLVM version of nightly rustc ("LLVM version: 22.1.4" → 22).
fn llvm_major() -> anyhow::Result<u32> {
    let out = cmd("rustc")
        .args(["+nightly", "-vV"])
        .timeout(Duration::from_secs(60))
        .ok()?;
    let ver = out
        .stdout
        .lines()
        .find_map(|l| l.strip_prefix("LLVM version:"))
        .map(str::trim)
        .context("`rustc +nightly -vV` does not say which LLVM it uses")?;
    ver.split('.')
        .next()
        .and_then(|m| m.parse().ok())
        .with_context(|| format!("cannot read the LLVM major version from {ver:?}"))
}

/// A directory bpf-linker's build takes for an LLVM install: nightly's own libLLVM, symlinked.
/// bpf-linker keeps it as its rpath, so it lives in CARGO_HOME (it survives clean checkouts).
fn llvm_prefix(sysroot: &Path, prefix: &Path) -> anyhow::Result<()> {
    let lib = prefix.join("lib");
    if lib.exists() {
        // Only our own symlinks live here; stale ones would point at a removed nightly.
        fs::remove_dir_all(&lib).with_context(|| format!("removing {}", lib.display()))?;
    }
    fs::create_dir_all(&lib).with_context(|| format!("creating {}", lib.display()))?;
    let src = sysroot.join("lib");
    let mut versioned = None;
    let mut names: Vec<OsString> = fs::read_dir(&src)
        .with_context(|| format!("reading {}", src.display()))?
        .filter_map(|e| e.ok())
        .map(|e| e.file_name())
        .filter(|n| n.to_string_lossy().starts_with("libLLVM"))
        .collect();
    names.sort();
    for name in &names {
        std::os::unix::fs::symlink(src.join(name), lib.join(name))
            .with_context(|| format!("linking {}", lib.join(name).display()))?;
        if versioned.is_none() && name.to_string_lossy().starts_with("libLLVM.so.") {
            versioned = Some(name.clone());
        }
    }
    let Some(versioned) = versioned else {
        bail!(
            "nightly ships no libLLVM.so.* in {} (is the nightly toolchain complete?)",
            src.display()
        );
    };
    if !lib.join("libLLVM.so").exists() {
        std::os::unix::fs::symlink(src.join(&versioned), lib.join("libLLVM.so"))
            .context("linking libLLVM.so")?;
    }
    Ok(())
}

fn bpffs() -> anyhow::Result<()> {
    const STEP: &str = "bpffs on /sys/fs/bpf";
    if bpffs_mounted()? {
        say(STEP, "mounted");
        return Ok(());
    }
    if !is_root() {
        bail!("bpffs is not mounted and mounting it needs root: mount -t bpf bpf /sys/fs/bpf");
    }
    say(STEP, "not mounted; mounting…");
    fs::create_dir_all("/sys/fs/bpf").context("creating /sys/fs/bpf")?;
    cmd("mount")
        .args(["-t", "bpf", "bpf", "/sys/fs/bpf"])
        .timeout(Duration::from_secs(30))
        .ok()?;
    if !bpffs_mounted()? {
        bail!("mount reported success but /sys/fs/bpf is still not a bpffs");
    }
    say(STEP, "mounted");
    Ok(())
}

pub fn bpffs_mounted() -> anyhow::Result<bool> {
    let mounts = fs::read_to_string("/proc/mounts").context("reading /proc/mounts")?;
    Ok(mounts.lines().any(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        f.len() > 2 && f[1] == "/sys/fs/bpf" && f[2] == "bpf"
    }))
}

fn installed(pkg: &str) -> anyhow::Result<bool> {
    let out = cmd("dpkg-query")
        .args(["-W", "-f=${Status}", pkg])
        .timeout(Duration::from_secs(30))
        .run()
        .context("dpkg-query is missing: this setup knows Debian only; install by hand")?;
    Ok(out.success() && out.stdout.contains("install ok installed"))
}

fn packages() -> anyhow::Result<()> {
    install_packages("debian packages", DEBIAN_PACKAGES, &[])
}

/// apt-get install (with `extra` options) whichever of `wanted` is missing.
pub fn install_packages(step: &str, wanted: &[&str], extra: &[&str]) -> anyhow::Result<()> {
    let mut missing = Vec::new();
    for p in wanted {
        if !installed(p)? {
            missing.push(*p);
        }
    }
    if missing.is_empty() {
        say(step, &format!("present ({})", wanted.join(" ")));
        return Ok(());
    }
    if !is_root() {
        bail!(
            "missing {}; installing them needs root: apt-get install {}",
            missing.join(" "),
            missing.join(" ")
        );
    }
    say(
        step,
        &format!("missing {}; running apt-get update…", missing.join(" ")),
    );
    apt(&["update"], 10 * 60)?;
    say(step, &format!("installing {}…", missing.join(" ")));
    let mut args = vec!["install", "-y", "--no-install-recommends"];
    args.extend(extra);
    args.extend(&missing);
    apt(&args, 30 * 60)?;
    let still: Vec<&str> = missing
        .iter()
        .copied()
        .filter(|p| !installed(p).unwrap_or(false))
        .collect();
    if !still.is_empty() {
        bail!("apt-get did not install {}", still.join(" "));
    }
    say(step, &format!("installed {}", missing.join(" ")));
    Ok(())
}

/// The Rust target of the packaged binary: static, with musl's C library inside.
pub const MUSL_TARGET: &str = "x86_64-unknown-linux-musl";

/// What `cargo xtask dist --check` runs on the installed package besides dpkg: systemd-analyze,
/// man and groff, and the shells whose completion files it parses.
const DIST_CHECK_PACKAGES: &[&str] = &["systemd", "man-db", "groff-base", "bash", "zsh", "fish"];

/// `cargo xtask dist`: the toolchain, the musl target, and (`check`) the tools the package
/// check runs. Rust ships musl's C runtime and libc.a with the target, and fw's dependencies
/// hold no C code, so no musl-gcc (Debian's musl-tools) is needed.
pub fn dist(check: bool) -> anyhow::Result<()> {
    run(Steps::TOOLCHAIN)?;
    step("rust target x86_64-unknown-linux-musl", musl_target)?;
    if check {
        const STEP: &str = "debian packages for the package check";
        step(STEP, || install_packages(STEP, DIST_CHECK_PACKAGES, &[]))?;
    }
    Ok(())
}

/// `rustup target add` for the toolchain cargo uses in the workspace, unless its sysroot has
/// the target's standard library already.
fn musl_target() -> anyhow::Result<()> {
    const STEP: &str = "rust target x86_64-unknown-linux-musl";
    let has_std = || -> anyhow::Result<bool> {
        let out = cmd("rustc")
            .args(["--print", "sysroot"])
            .current_dir(crate::repo_root())
            .timeout(Duration::from_secs(120))
            .ok()?;
        let lib = Path::new(out.stdout.trim()).join(format!("lib/rustlib/{MUSL_TARGET}/lib"));
        Ok(fs::read_dir(&lib).is_ok_and(|rd| {
            rd.flatten()
                .any(|e| e.file_name().to_string_lossy().starts_with("libstd-"))
        }))
    };
    if has_std()? {
        say(STEP, "present");
        return Ok(());
    }
    say(STEP, &format!("missing; rustup target add {MUSL_TARGET}…"));
    cmd("rustup")
        .args(["target", "add", MUSL_TARGET])
        .current_dir(crate::repo_root())
        .timeout(Duration::from_secs(15 * 60))
        .ok()?;
    if !has_std()? {
        bail!("rustup reported success but the {MUSL_TARGET} standard library is still missing");
    }
    say(STEP, "installed");
    Ok(())
}

pub fn apt(args: &[&str], timeout_s: u64) -> anyhow::Result<()> {
    // Wait for a lock another apt holds instead of failing at once.
    let out = cmd("apt-get")
        .args(["-o", "DPkg::Lock::Timeout=300"])
        .args(args)
        .env("DEBIAN_FRONTEND", "noninteractive")
        .timeout(Duration::from_secs(timeout_s))
        .run()?;
    if !out.success() {
        let all = out.both();
        let tail: Vec<&str> = all.lines().rev().take(30).collect();
        let tail: Vec<&str> = tail.into_iter().rev().collect();
        bail!(
            "`apt-get {}` failed (exit status {}):\n{}",
            args.join(" "),
            out.code(),
            indent(&tail.join("\n"), "    ")
        );
    }
    Ok(())
}
