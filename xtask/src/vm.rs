//! `cargo xtask vm`: fw on another kernel. Boots a Debian kernel (6.1: Debian 12's own; 6.12:
//! bookworm-security's, TCX-capable) under QEMU with a tiny initramfs holding fw, and runs
//! vm/guest-test.sh in it: fw up, traffic (an allowed port open, a closed one dropped, the
//! reply to an outgoing connection let back in), status, conns, a replacing `fw up --policy`,
//! fw down. With `--unit`, the guest boots the host's own root file system (read-only, under a
//! tmpfs overlay) with systemd as PID 1 instead, installs the .deb of `cargo xtask dist` and
//! puts fw.service through start, reload, restart and stop (vm/unit-test.sh). The scripts in
//! vm/ also run by hand (see vm/README.md).

mod prereq;
mod qemu;

use std::{
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use anyhow::bail;

use crate::{
    build_run, dist,
    proc::{cmd, is_root},
    repo_root, setup,
};

pub struct Args {
    /// Debian kernel series: 6.1 (Debian 12; the default) or 6.12 (bookworm-security); any
    /// "X.Y" Debian ships.
    pub kernel: Option<String>,
    /// The fw binary to test (default: `cargo xtask build`'s).
    pub fw: Option<PathBuf>,
    /// Test fw.service under systemd instead (the .deb of `cargo xtask dist`).
    pub unit: bool,
}

/// Returns whether every check in the guest passed.
pub fn run(a: Args) -> anyhow::Result<bool> {
    if !is_root() {
        bail!(
            "`cargo xtask vm` installs QEMU and unpacks kernels with apt and depmod: run it as root"
        );
    }
    let series = a.kernel.unwrap_or_else(|| "6.1".to_string());
    if !series
        .split('.')
        .all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
    {
        bail!("--kernel takes a Debian kernel series such as 6.1 or 6.12, not {series:?}");
    }
    if a.unit && a.fw.is_some() {
        bail!("--unit tests the .deb that `cargo xtask dist` builds; --fw does not go with it");
    }
    let cache = prereq::cache_dir();
    std::fs::create_dir_all(&cache)?;
    prereq::packages()?;
    let busybox = prereq::static_busybox(&cache)?;
    let qemu = qemu::qemu(&cache)?;
    let vm_dir = repo_root().join("vm");
    let (fw, env) = if a.unit {
        setup::dist(false)?;
        let built = dist::build_packages()?;
        let env = unit_env(&vm_dir, &built.deb, &busybox);
        (built.assets.bin, env)
    } else {
        let fw = match a.fw {
            Some(p) => std::path::absolute(&p)?,
            None => build_run::build(false)?,
        };
        (fw, Vec::new())
    };
    if !fw.is_file() {
        bail!("{} is not a file", fw.display());
    }
    let kroot = prereq::kernel(&vm_dir, &series, &cache)?;
    println!("[vm] kernel {}, fw {}", kroot.display(), fw.display());
    let started = Instant::now();
    let mut cmd = cmd(vm_dir.join("run-vm.sh"))
        .arg(&kroot)
        .arg(&fw)
        .env("FW_VM_CACHE", &cache)
        .env("BUSYBOX", &busybox)
        .env("QEMU", &qemu);
    for (k, v) in env {
        cmd = cmd.env(k, v);
    }
    if a.unit {
        let kver = kroot.file_name().unwrap_or_default().to_string_lossy();
        cmd = cmd.env("OUTDIR", cache.join("out").join(format!("unit-{kver}")));
    }
    let out = cmd
        .merged_echo()
        .timeout(Duration::from_secs(12 * 60))
        .run()?;
    let wall = started.elapsed();
    let lines: Vec<&str> = out.lines.iter().map(|(_, l)| l.as_str()).collect();
    Ok(summarize(&kroot, &lines, out.code(), wall))
}

/// The environment of run-vm.sh for the unit test: the systemd /init, unit-test.sh, the .deb
/// and busybox inside, 9p and overlay modules, the host's / shared read-only.
fn unit_env(vm_dir: &Path, deb: &Path, busybox: &Path) -> Vec<(&'static str, String)> {
    vec![
        (
            "INIT_SCRIPT",
            vm_dir.join("guest-init-systemd.sh").display().to_string(),
        ),
        ("TEST_SCRIPT", vm_dir.join("unit-test.sh").display().to_string()),
        (
            "EXTRA",
            format!(
                "{}=/fwtest/fw.deb {}=/fwtest/busybox",
                deb.display(),
                busybox.display()
            ),
        ),
        ("MODULES", "veth sch_ingress cls_bpf virtio_pci 9p 9pnet_virtio overlay".into()),
        (
            "QEMU_ARGS",
            "-virtfs local,path=/,mount_tag=hostroot,security_model=none,readonly=on,multidevs=remap"
                .into(),
        ),
        ("APPEND", "systemd.unit=fwtest.target systemd.show_status=0".into()),
        ("TIMEOUT", "600".into()),
    ]
}

/// Print the checks' outcome; true if the guest ran them all and all passed.
fn summarize(kroot: &Path, lines: &[&str], code: i32, wall: Duration) -> bool {
    let checks: Vec<&str> = lines
        .iter()
        .filter_map(|l| l.strip_prefix("FWVM-CHECK "))
        .collect();
    let failed: Vec<&&str> = checks.iter().filter(|c| c.starts_with("FAIL")).collect();
    let kernel = kroot.file_name().unwrap_or_default().to_string_lossy();
    println!();
    println!("==================== vm: {kernel} ====================");
    for f in &failed {
        println!("  ✗ {}", f.trim_start_matches("FAIL").trim());
    }
    let verdict = match code {
        0 if failed.is_empty() && !checks.is_empty() => "passed",
        3 => "gave no result (boot or VM failure; see the console above)",
        _ => "FAILED",
    };
    println!(
        "vm {kernel}: {} checks, {} failed; {verdict} in {:.0} s (boot, test and power-off)",
        checks.len(),
        failed.len(),
        wall.as_secs_f64()
    );
    verdict == "passed"
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summary_needs_checks_and_no_failure() {
        let k = Path::new("/c/kernels/6.12.9+deb12-amd64");
        let ok = ["FWVM-CHECK ok   fw up: 0", "FWVM-EXIT rc=0"];
        assert!(summarize(k, &ok, 0, Duration::from_secs(30)));
        let bad = [
            "FWVM-CHECK ok   a: 1",
            "FWVM-CHECK FAIL fw up: want 0, got 1",
        ];
        assert!(!summarize(k, &bad, 1, Duration::from_secs(30)));
        assert!(!summarize(k, &["FWVM-BOOTED"], 0, Duration::from_secs(30)));
        assert!(!summarize(k, &ok, 3, Duration::from_secs(30)));
    }
}
