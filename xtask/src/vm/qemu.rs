//! QEMU for the VM test, without touching the host's QEMU packages. These machines carry a
//! backported qemu-utils 10 that Breaks bookworm's qemu-system-common 7.2, so `apt-get install
//! qemu-system-x86` would have to remove it. Instead, QEMU's libraries are installed with
//! `apt-get satisfy` (only what the dependencies name), and QEMU with its firmware is unpacked
//! into the cache, where it finds the firmware relative to itself (../share/seabios, …).

use std::{
    env, fs,
    os::unix::fs::PermissionsExt as _,
    path::{Path, PathBuf},
    time::Duration,
};

use anyhow::{Context as _, bail};

use crate::{proc::cmd, setup::apt};

/// Unpacked into the cache; their dependencies, apart from each other, are installed.
const PACKAGES: [&str; 5] = [
    "qemu-system-x86",
    "qemu-system-common",
    "qemu-system-data",
    "seabios",
    "ipxe-qemu",
];

/// The qemu-system-x86_64 to run: the installed one, or one unpacked into the cache.
pub fn qemu(cache: &Path) -> anyhow::Result<PathBuf> {
    const STEP: &str = "[setup] qemu-system-x86_64";
    if let Some(bin) = on_path("qemu-system-x86_64") {
        println!("{STEP}: present ({})", bin.display());
        return Ok(bin);
    }
    let root = cache.join("qemu");
    let unpacked = root.join("usr/bin/qemu-system-x86_64");
    if runs(&unpacked) {
        println!("{STEP}: present ({})", unpacked.display());
        return Ok(unpacked);
    }
    println!(
        "{STEP}: missing; installing its libraries and unpacking it into {}…",
        root.display()
    );
    apt(&["update"], 10 * 60)?;
    let deps = dependencies()?;
    apt(
        &[
            "satisfy",
            "-y",
            "--no-install-recommends",
            "--no-remove",
            &deps,
        ],
        30 * 60,
    )?;
    unpack(&root)?;
    if !runs(&unpacked) {
        bail!("{} was unpacked but does not run", unpacked.display());
    }
    println!("{STEP}: installed ({})", unpacked.display());
    Ok(unpacked)
}

fn on_path(name: &str) -> Option<PathBuf> {
    env::split_paths(&env::var_os("PATH")?)
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

fn runs(bin: &Path) -> bool {
    bin.is_file()
        && cmd(bin)
            .arg("--version")
            .timeout(Duration::from_secs(30))
            .run()
            .is_ok_and(|o| o.success())
}

/// The candidate versions' Depends, without the unpacked packages, as one relation list.
fn dependencies() -> anyhow::Result<String> {
    let mut deps: Vec<String> = Vec::new();
    for pkg in PACKAGES {
        let out = cmd("apt-cache")
            .args(["show", "--no-all-versions", pkg])
            .ok()?;
        let line = out
            .stdout
            .lines()
            .find_map(|l| l.strip_prefix("Depends:"))
            .unwrap_or("");
        for dep in line.split(',').map(str::trim).filter(|d| !d.is_empty()) {
            let name = dep.split_whitespace().next().unwrap_or("");
            if !PACKAGES.contains(&name) && !deps.iter().any(|d| d == dep) {
                deps.push(dep.to_string());
            }
        }
    }
    if deps.is_empty() {
        bail!("apt-cache knows no dependencies of {PACKAGES:?}");
    }
    Ok(deps.join(", "))
}

/// `apt-get download` the QEMU packages and `dpkg-deb -x` them into `root` (replaced).
fn unpack(root: &Path) -> anyhow::Result<()> {
    let tmp = root.with_extension("download");
    for d in [root, tmp.as_path()] {
        if d.exists() {
            fs::remove_dir_all(d).with_context(|| format!("removing {}", d.display()))?;
        }
    }
    fs::create_dir_all(&tmp)?;
    // apt-get download fetches as the _apt user, which must be able to write here.
    fs::set_permissions(&tmp, fs::Permissions::from_mode(0o777))?;
    cmd("apt-get")
        .args(["download", "-q"])
        .args(PACKAGES)
        .current_dir(&tmp)
        .timeout(Duration::from_secs(15 * 60))
        .ok()?;
    for e in fs::read_dir(&tmp)?.flatten() {
        if e.path().extension().is_some_and(|x| x == "deb") {
            cmd("dpkg-deb")
                .arg("-x")
                .arg(e.path())
                .arg(root)
                .timeout(Duration::from_secs(5 * 60))
                .ok()?;
        }
    }
    fs::remove_dir_all(&tmp)?;
    Ok(())
}
