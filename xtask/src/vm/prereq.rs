//! What `cargo xtask vm` needs on the host, installed idempotently: QEMU and the tools that
//! unpack a Debian kernel, a static busybox for the guest, and the kernel itself (downloaded
//! from Debian's archive, not installed). Everything downloaded lives in the cache directory.

use std::{
    env, fs,
    os::unix::fs::PermissionsExt as _,
    path::{Path, PathBuf},
    time::Duration,
};

use anyhow::{Context as _, bail};

use crate::{
    proc::cmd,
    setup::{apt, install_packages},
};

/// kmod (depmod, modprobe --show-depends for the guest's modules); the decompressors of
/// Debian's kernel images and modules; python3 (extract-vmlinux.py); bpftool (shown in the
/// guest). QEMU: see qemu.rs.
const PACKAGES: &[&str] = &[
    "kmod", "iproute2", "xz-utils", "zstd", "lz4", "python3", "bpftool",
];

/// `${FW_VM_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/fw-vm}`, as the scripts in vm/ compute it.
pub fn cache_dir() -> PathBuf {
    if let Some(d) = env::var_os("FW_VM_CACHE").filter(|d| !d.is_empty()) {
        return PathBuf::from(d);
    }
    let base = env::var_os("XDG_CACHE_HOME")
        .filter(|d| !d.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env::var_os("HOME").unwrap_or_else(|| "/root".into())).join(".cache")
        });
    base.join("fw-vm")
}

pub fn packages() -> anyhow::Result<()> {
    // --no-remove: refuse rather than remove a package someone else installed.
    install_packages("vm packages", PACKAGES, &["--no-remove"])
}

fn is_static(bin: &Path) -> bool {
    cmd("ldd").arg(bin).env("LC_ALL", "C").run().is_ok_and(|o| {
        let s = o.both();
        s.contains("not a dynamic executable") || s.contains("statically linked")
    })
}

/// /bin/busybox if it is static, else busybox-static's binary, unpacked into the cache (the
/// package itself would conflict with Debian's dynamic `busybox`).
pub fn static_busybox(cache: &Path) -> anyhow::Result<PathBuf> {
    const STEP: &str = "[setup] static busybox";
    for candidate in [PathBuf::from("/bin/busybox"), cache.join("busybox")] {
        if candidate.is_file() && is_static(&candidate) {
            println!("{STEP}: present ({})", candidate.display());
            return Ok(candidate);
        }
    }
    println!(
        "{STEP}: missing; apt-get download busybox-static into {}…",
        cache.display()
    );
    let tmp = cache.join("busybox-download");
    if tmp.exists() {
        fs::remove_dir_all(&tmp)?;
    }
    fs::create_dir_all(&tmp)?;
    // apt-get download runs as the _apt user, which must be able to write here.
    fs::set_permissions(&tmp, fs::Permissions::from_mode(0o777))?;
    download(&tmp, "busybox-static")?;
    let deb = fs::read_dir(&tmp)?
        .flatten()
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|e| e == "deb"))
        .context("apt-get download left no .deb")?;
    cmd("dpkg-deb")
        .arg("-x")
        .arg(&deb)
        .arg(tmp.join("root"))
        .ok()?;
    let bin = cache.join("busybox");
    fs::copy(tmp.join("root/bin/busybox"), &bin).context("busybox-static has no bin/busybox")?;
    fs::set_permissions(&bin, fs::Permissions::from_mode(0o755))?;
    fs::remove_dir_all(&tmp)?;
    if !is_static(&bin) {
        bail!("{} from busybox-static is not static", bin.display());
    }
    println!("{STEP}: installed ({})", bin.display());
    Ok(bin)
}

/// `apt-get download PKG` into `dir`, with an `apt-get update` first if apt does not know it.
fn download(dir: &Path, pkg: &str) -> anyhow::Result<()> {
    let get = || {
        cmd("apt-get")
            .args(["download", "-q", pkg])
            .current_dir(dir)
            .timeout(Duration::from_secs(10 * 60))
            .run()
    };
    if get()?.success() {
        return Ok(());
    }
    apt(&["update"], 10 * 60)?;
    let out = get()?;
    if !out.success() {
        bail!("apt-get download {pkg} failed:\n{}", out.both());
    }
    Ok(())
}

/// vm/get-kernel.sh SERIES: the newest Debian kernel of that series, unpacked in the cache;
/// returns its root. Retried once after `apt-get update` (old ABI packages leave the archive).
pub fn kernel(vm_dir: &Path, series: &str, cache: &Path) -> anyhow::Result<PathBuf> {
    let get = || {
        cmd(vm_dir.join("get-kernel.sh"))
            .arg(series)
            .env("FW_VM_CACHE", cache)
            .timeout(Duration::from_secs(15 * 60))
            .run()
    };
    let mut out = get()?;
    if !out.success() {
        println!(
            "[vm] get-kernel.sh: {}; apt-get update and again",
            out.both()
        );
        apt(&["update"], 10 * 60)?;
        out = get()?;
    }
    if !out.success() {
        bail!("vm/get-kernel.sh {series} failed:\n{}", out.both());
    }
    let root = PathBuf::from(out.stdout.lines().last().unwrap_or("").trim());
    if !root.join("boot").is_dir() {
        bail!("vm/get-kernel.sh {series} printed {root:?}, which holds no boot/");
    }
    Ok(root)
}
