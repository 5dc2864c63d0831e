//! `cargo xtask vm`: fw on another kernel. Boots a Debian kernel (6.1: Debian 12's own; 6.12:
//! bookworm-security's, TCX-capable) under QEMU with a tiny initramfs holding fw, and runs
//! vm/guest-test.sh in it: fw up, traffic (an allowed port open, a closed one dropped, the
//! reply to an outgoing connection let back in), status, conns, a replacing `fw up --policy`,
//! fw down. The scripts in vm/ also run by hand (see vm/README.md).

mod prereq;
mod qemu;

use std::{
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use anyhow::bail;

use crate::{
    build_run,
    proc::{Cmd, is_root},
    repo_root,
};

pub struct Args {
    /// Debian kernel series: 6.1 (Debian 12) or 6.12 (bookworm-security); any "X.Y" Debian ships.
    pub kernel: String,
    /// The fw binary to test (default: `cargo xtask build`'s).
    pub fw: Option<PathBuf>,
}

/// Returns whether every check in the guest passed.
pub fn run(a: Args) -> anyhow::Result<bool> {
    if !is_root() {
        bail!(
            "`cargo xtask vm` installs QEMU and unpacks kernels with apt and depmod: run it as root"
        );
    }
    if !a
        .kernel
        .split('.')
        .all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
    {
        bail!(
            "--kernel takes a Debian kernel series such as 6.1 or 6.12, not {:?}",
            a.kernel
        );
    }
    let cache = prereq::cache_dir();
    std::fs::create_dir_all(&cache)?;
    prereq::packages()?;
    let busybox = prereq::static_busybox(&cache)?;
    let qemu = qemu::qemu(&cache)?;
    let fw = match a.fw {
        Some(p) => std::path::absolute(&p)?,
        None => build_run::build(false)?,
    };
    if !fw.is_file() {
        bail!("{} is not a file", fw.display());
    }
    let vm_dir = repo_root().join("vm");
    let kroot = prereq::kernel(&vm_dir, &a.kernel, &cache)?;
    println!("[vm] kernel {}, fw {}", kroot.display(), fw.display());
    let started = Instant::now();
    let out = Cmd::new(vm_dir.join("run-vm.sh"))
        .arg(&kroot)
        .arg(&fw)
        .env("FW_VM_CACHE", &cache)
        .env("BUSYBOX", &busybox)
        .env("QEMU", &qemu)
        .merged_echo()
        .timeout(Duration::from_secs(12 * 60))
        .run()?;
    let wall = started.elapsed();
    let lines: Vec<&str> = out.lines.iter().map(|(_, l)| l.as_str()).collect();
    Ok(summarize(&kroot, &lines, out.code(), wall))
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
