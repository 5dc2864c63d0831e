//! `cargo xtask dist`: fw the way an administrator installs it. A static (musl), stripped `fw`
//! with the XDP programs inside, a .deb and a .tar.gz, in target/dist/. With `--check`, the .deb
//! is then installed on this machine, exercised and purged again (`check`).

mod aside;
pub mod assets;
mod check;
mod deb;
mod tarball;

use std::{
    fs,
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};

use crate::{
    build_run,
    proc::{cmd, is_root},
    repo_root,
    setup::{self, MUSL_TARGET},
};

/// The workspace version (xtask's own, `version.workspace = true`).
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// The cargo profile of the packaged binary (see the workspace Cargo.toml).
const PROFILE: &str = "dist-release";

pub struct Args {
    /// Install the .deb here afterwards, check it and purge it (root).
    pub check: bool,
}

/// Returns whether everything (the build, and the check if asked for) passed.
pub fn run(a: Args) -> anyhow::Result<bool> {
    if a.check && !is_root() {
        bail!(
            "`cargo xtask dist --check` installs the package with dpkg: run it as root (plain `cargo xtask dist` needs no root)"
        );
    }
    setup::dist(a.check)?;
    let built = build_packages()?;
    if a.check {
        return check::run(&built.deb, &built.assets);
    }
    Ok(true)
}

/// What `build_packages` made.
pub struct Built {
    pub deb: PathBuf,
    pub assets: assets::Assets,
}

/// The static binary, then the .deb and the .tar.gz (setup done by the caller).
pub fn build_packages() -> anyhow::Result<Built> {
    let started = Instant::now();
    let bin = build()?;
    let out = dist_dir();
    let stage = out.join("stage");
    if stage.exists() {
        fs::remove_dir_all(&stage).with_context(|| format!("removing {}", stage.display()))?;
    }
    fs::create_dir_all(&stage).with_context(|| format!("creating {}", stage.display()))?;
    let assets = assets::generate(&bin, &stage.join("assets"))?;
    let deb = deb::build(&assets, &stage.join("deb"), &out)?;
    let tgz = tarball::build(&assets, &stage.join("tar"), &out)?;
    checksums(&out, &[&deb, &tgz])?;
    println!(
        "[dist] built in {:.0} s:\n  {}  {}\n  {}  {}\n  {}  {} (static, stripped)",
        started.elapsed().as_secs_f64(),
        size(&deb),
        deb.display(),
        size(&tgz),
        tgz.display(),
        size(&bin),
        bin.display()
    );
    Ok(Built { deb, assets })
}

/// target/dist: the packages (and their staging directory).
pub fn dist_dir() -> PathBuf {
    target_dir().join("dist")
}

fn target_dir() -> PathBuf {
    build_run::profile_dir(false)
        .parent()
        .expect("a profile directory has a parent")
        .to_path_buf()
}

/// `cargo build` of the static binary; checks it is static and says the workspace version.
fn build() -> anyhow::Result<PathBuf> {
    println!(
        "[dist] cargo build -p fw-user --profile {PROFILE} --target {MUSL_TARGET} (the XDP programs are compiled and embedded by fw-user's build.rs)"
    );
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    cmd(cargo)
        .args(["build", "--locked", "-p", "fw-user", "--profile", PROFILE])
        .args(["--target", MUSL_TARGET])
        .current_dir(repo_root())
        .inherit()
        .timeout(Duration::from_secs(60 * 60))
        .ok()?;
    let bin = target_dir().join(MUSL_TARGET).join(PROFILE).join("fw");
    if !bin.is_file() {
        bail!("cargo build succeeded but {} is missing", bin.display());
    }
    let ldd = cmd("ldd")
        .arg(&bin)
        .env("LC_ALL", "C")
        .timeout(Duration::from_secs(30))
        .run()?;
    let said = ldd.both();
    if !(said.contains("not a dynamic executable") || said.contains("statically linked")) {
        bail!("{} is not static; ldd says:\n{said}", bin.display());
    }
    let version = cmd(&bin).arg("--version").ok()?.stdout;
    if version.trim() != format!("fw {VERSION}") {
        bail!(
            "{} --version says {:?}, the workspace version is {VERSION}",
            bin.display(),
            version.trim()
        );
    }
    Ok(bin)
}

/// SHA256SUMS beside the packages.
fn checksums(out: &Path, files: &[&Path]) -> anyhow::Result<()> {
    let names: Vec<&std::ffi::OsStr> = files.iter().filter_map(|f| f.file_name()).collect();
    let sums = cmd("sha256sum").args(names).current_dir(out).ok()?;
    let path = out.join("SHA256SUMS");
    fs::write(&path, sums.stdout).with_context(|| format!("writing {}", path.display()))
}

/// "5.3 MiB (5 510 304 bytes)".
fn size(p: &Path) -> String {
    let n = fs::metadata(p).map(|m| m.len()).unwrap_or(0);
    format!("{:.1} MiB ({n} bytes)", n as f64 / (1024.0 * 1024.0))
}

/// The commit time of HEAD, for reproducible timestamps in the packages (or 0 outside git).
pub fn source_date_epoch() -> String {
    cmd("git")
        .args(["log", "-1", "--format=%ct"])
        .current_dir(repo_root())
        .ok()
        .map(|o| o.stdout.trim().to_string())
        .ok()
        .filter(|s| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
        .unwrap_or_else(|| "0".to_string())
}
