//! `cargo xtask test`: every test tier, then a check that the tests left nothing behind.
//!
//! Tiers: host unit tests (fw-common, fw-policy, fw-user, the lab and its harnesses: fw-lab,
//! fw-testrun, fw-bench, fw-diff, and xtask), kernel tests (the real XDP program under
//! BPF_PROG_TEST_RUN) and end-to-end tests (real traffic between network namespaces, and a
//! sample of the differential test). The last two live in the `tests` crate and need root;
//! `--workspace` picks up every crate, so a crate added to the workspace is tested too.
//! After them, the package check (`cargo xtask dist --check`) and the VM tests (`cargo xtask
//! vm`): Debian 12's 6.1 by default (the older kernel fw must run on: clsact egress, no TCX),
//! the kernels FW_TEST_VM names (e.g. `FW_TEST_VM=6.12,6.1`), none with `FW_TEST_VM=none`.

use std::{
    collections::{BTreeMap, BTreeSet},
    fs,
    os::unix::fs::MetadataExt as _,
    path::{Path, PathBuf},
    time::Duration,
};

use anyhow::bail;

use crate::{
    build_run,
    proc::{cmd, is_root},
    repo_root, setup,
};

pub struct Args {
    pub unit: bool,
    pub extra: Vec<String>,
}

/// Not built for the host: fw-ebpf and fw-bench-ebpf are BPF-target code (their binaries have no
/// `main` on the host); fw-ebpf's logic lives in fw-common, which is tested. `--workspace` would
/// include them, default members or not.
const HOST_ONLY_EXCLUDES: [&str; 4] = ["--exclude", "fw-ebpf", "--exclude", "fw-bench-ebpf"];

/// Returns whether everything passed.
pub fn run(a: Args) -> anyhow::Result<bool> {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    if a.unit {
        setup::run(setup::Steps::TOOLCHAIN)?;
        println!(
            "[test] host unit tests: cargo test --workspace --exclude tests --exclude fw-ebpf --exclude fw-bench-ebpf"
        );
        let out = cmd(cargo)
            .args(["test", "--workspace", "--exclude", "tests"])
            .args(HOST_ONLY_EXCLUDES)
            .arg("--no-fail-fast")
            .args(&a.extra)
            .current_dir(repo_root())
            .merged_echo()
            .timeout(Duration::from_secs(60 * 60))
            .run()?;
        let results = Results::parse(&out.lines);
        results.print(out.success(), None);
        return Ok(out.success() && results.failed == 0);
    }
    if !is_root() {
        bail!(
            "the kernel and end-to-end tests load XDP programs and create network namespaces: run `cargo xtask test` as root (or `cargo xtask test --unit` for the host unit tests only)"
        );
    }
    setup::run(setup::Steps::ALL)?;
    let bin = build_run::cargo_build(false)?;
    let before = Snapshot::take();
    println!(
        "[test] all tiers: cargo test --workspace --exclude fw-ebpf --exclude fw-bench-ebpf (FW_BIN={})",
        bin.display()
    );
    let out = cmd(cargo)
        .args(["test", "--workspace"])
        .args(HOST_ONLY_EXCLUDES)
        .arg("--no-fail-fast")
        .args(&a.extra)
        .env("FW_BIN", &bin)
        .current_dir(repo_root())
        .merged_echo()
        .timeout(Duration::from_secs(80 * 60))
        .run()?;
    let results = Results::parse(&out.lines);
    let leftovers = Snapshot::take().leftovers_since(&before);
    results.print(out.success(), Some(&leftovers));
    let tiers_ok = out.success() && results.failed == 0 && leftovers.is_empty();
    let after_ok = after_tiers(&a.extra, &bin)?;
    Ok(tiers_ok && after_ok)
}

/// After the cargo tiers: the package check (`cargo xtask dist --check`: builds the static
/// binary and the .deb, installs, checks and purges it), and the VM tests of the kernels listed
/// in FW_TEST_VM (default `6.1`, about a minute under TCG; `none` skips them). Skipped when a
/// test filter was given.
fn after_tiers(extra: &[String], bin: &Path) -> anyhow::Result<bool> {
    if !extra.is_empty() {
        println!("[test] a test filter was given: the package check and the VM tests are skipped");
        return Ok(true);
    }
    println!();
    println!("[test] package check: cargo xtask dist --check");
    let mut ok = crate::dist::run(crate::dist::Args { check: true })?;
    let kernels = std::env::var("FW_TEST_VM").unwrap_or_else(|_| "6.1".to_string());
    for kernel in kernels
        .split(',')
        .map(str::trim)
        .filter(|k| !k.is_empty() && *k != "none")
    {
        println!();
        println!("[test] FW_TEST_VM: cargo xtask vm --kernel {kernel}");
        ok &= crate::vm::run(crate::vm::Args {
            kernel: Some(kernel.to_string()),
            fw: Some(bin.to_path_buf()),
            unit: false,
        })?;
    }
    Ok(ok)
}

#[derive(Default)]
struct Suite {
    passed: u64,
    failed: u64,
    ignored: u64,
}

#[derive(Default)]
struct Results {
    suites: Vec<(String, Suite)>,
    failed_tests: Vec<String>,
    passed: u64,
    failed: u64,
    ignored: u64,
}

impl Results {
    /// Read cargo test's output: `Running …` / `Doc-tests …` headers (stderr), `test … FAILED`
    /// and `test result:` lines (stdout).
    fn parse(lines: &[(bool, String)]) -> Self {
        let mut r = Results::default();
        let mut current = String::from("?");
        for (_, line) in lines {
            let l = line.trim();
            if let Some(rest) = l.strip_prefix("Running ") {
                // "unittests src/lib.rs (target/debug/deps/fw_common-0123abcd)"
                current = suite_name(rest);
            } else if let Some(rest) = l.strip_prefix("Doc-tests ") {
                current = format!("doc-tests {rest}");
            } else if let Some(rest) = l.strip_prefix("test result: ") {
                let mut s = Suite::default();
                for part in rest.split(';') {
                    let mut w = part.split_whitespace().rev();
                    let (Some(what), Some(n)) = (w.next(), w.next()) else {
                        continue;
                    };
                    let Ok(n) = n.parse::<u64>() else { continue };
                    match what {
                        "passed" => s.passed = n,
                        "failed" => s.failed = n,
                        "ignored" => s.ignored = n,
                        _ => {}
                    }
                }
                r.passed += s.passed;
                r.failed += s.failed;
                r.ignored += s.ignored;
                r.suites.push((current.clone(), s));
            } else if let Some(name) = l
                .strip_prefix("test ")
                .and_then(|t| t.strip_suffix(" ... FAILED"))
            {
                r.failed_tests.push(format!("{current}: {name}"));
            }
        }
        r
    }

    fn print(&self, cargo_ok: bool, leftovers: Option<&[String]>) {
        println!();
        println!("==================== summary ====================");
        if self.suites.is_empty() {
            println!("no test suite ran (did the build fail? see above)");
        } else {
            println!(
                "{:<48} {:>6} {:>6} {:>7}",
                "suite", "passed", "failed", "ignored"
            );
            for (name, s) in &self.suites {
                if s.passed + s.failed + s.ignored == 0 {
                    continue;
                }
                println!(
                    "{:<48} {:>6} {:>6} {:>7}",
                    name, s.passed, s.failed, s.ignored
                );
            }
            let empty = self
                .suites
                .iter()
                .filter(|(_, s)| s.passed + s.failed + s.ignored == 0)
                .count();
            if empty > 0 {
                println!("({empty} suites without tests not listed)");
            }
        }
        if !self.failed_tests.is_empty() {
            println!();
            println!("failed tests:");
            for t in &self.failed_tests {
                println!("  ✗ {t}");
            }
        }
        if !cargo_ok && self.failed == 0 {
            println!();
            println!(
                "✗ cargo test failed without a failing test (a build error, a crash or a timeout; see above)"
            );
        }
        match leftovers {
            None => {}
            Some([]) => {
                println!();
                println!(
                    "✓ nothing left behind (no new fw* network namespaces, nothing new under /sys/fs/bpf/fw*)"
                );
            }
            Some(left) => {
                println!();
                println!("✗ the tests left these behind (a Drop guard is missing or failed):");
                for l in left {
                    println!("  {l}");
                }
            }
        }
        println!();
        if self.suites.is_empty() {
            println!("summary: no test ran");
        } else {
            println!(
                "summary: {} passed, {} failed, {} skipped",
                self.passed, self.failed, self.ignored
            );
        }
    }
}

/// "unittests src/lib.rs (target/debug/deps/fw_common-0123)" → "fw_common unittests src/lib.rs"
fn suite_name(running: &str) -> String {
    let (what, bin) = match running.rsplit_once(" (") {
        Some((w, b)) => (w, b.trim_end_matches(')')),
        None => (running, ""),
    };
    let crate_name = Path::new(bin)
        .file_name()
        .map(|f| f.to_string_lossy().into_owned())
        .and_then(|f| f.rsplit_once('-').map(|(n, _)| n.to_string()))
        .unwrap_or_default();
    if crate_name.is_empty() {
        what.to_string()
    } else {
        format!("{crate_name}: {what}")
    }
}

/// fw's traces on the machine: network namespaces named fw*, and everything under
/// /sys/fs/bpf/fw*.
struct Snapshot {
    /// Namespace name → its inode.
    netns: BTreeMap<String, u64>,
    pins: BTreeSet<PathBuf>,
}

const NETNS_DIR: &str = "/var/run/netns";
const BPFFS: &str = "/sys/fs/bpf";

impl Snapshot {
    fn take() -> Self {
        let mut netns = BTreeMap::new();
        if let Ok(rd) = fs::read_dir(NETNS_DIR) {
            for e in rd.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                if name.starts_with("fw") {
                    let ino = fs::metadata(e.path()).map(|m| m.ino()).unwrap_or(0);
                    netns.insert(name, ino);
                }
            }
        }
        let mut pins = BTreeSet::new();
        if let Ok(rd) = fs::read_dir(BPFFS) {
            for e in rd.flatten() {
                if e.file_name().to_string_lossy().starts_with("fw") {
                    walk(&e.path(), 0, &mut pins);
                }
            }
        }
        Snapshot { netns, pins }
    }

    /// What appeared since `before` and no running process accounts for (other developers'
    /// tests may run on the same machine at the same time; their names carry their pid).
    fn leftovers_since(&self, before: &Snapshot) -> Vec<String> {
        let live_ns = live_netns_inodes();
        let mut out = Vec::new();
        let mut busy_ns = BTreeSet::new();
        for (name, ino) in &self.netns {
            if before.netns.contains_key(name) {
                busy_ns.insert(*ino);
                continue;
            }
            if let Some(pid) = live_pid_in(name) {
                println!(
                    "[test] note: network namespace {name} is new but belongs to running process {pid}; not counted"
                );
                busy_ns.insert(*ino);
                continue;
            }
            out.push(format!(
                "network namespace {name} (remove: ip netns del {name})"
            ));
        }
        for p in self.pins.difference(&before.pins) {
            if is_layout_skeleton(p) {
                continue;
            }
            // /sys/fs/bpf/fw/v1/<netns inode>/…: in use while that namespace is.
            if let Some(ino) = netns_inode_of(p)
                && (live_ns.contains(&ino) || busy_ns.contains(&ino))
            {
                continue;
            }
            if live_pid_in(&p.to_string_lossy()).is_some() {
                continue;
            }
            // Report the topmost new path only.
            if p.ancestors().skip(1).any(|a| {
                self.pins.contains(a) && !before.pins.contains(a) && !is_layout_skeleton(a)
            }) {
                continue;
            }
            out.push(format!("{} (remove: rm -r {})", p.display(), p.display()));
        }
        out
    }
}

fn walk(p: &Path, depth: usize, out: &mut BTreeSet<PathBuf>) {
    if out.len() > 10_000 {
        return;
    }
    out.insert(p.to_path_buf());
    if depth > 8 {
        return;
    }
    if let Ok(rd) = fs::read_dir(p) {
        for e in rd.flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                walk(&e.path(), depth + 1, out);
            } else {
                out.insert(e.path());
            }
        }
    }
}

/// /sys/fs/bpf/fw and /sys/fs/bpf/fw/vN: the loader leaves these on purpose.
fn is_layout_skeleton(p: &Path) -> bool {
    let Ok(rel) = p.strip_prefix(BPFFS) else {
        return false;
    };
    let parts: Vec<_> = rel.iter().map(|c| c.to_string_lossy()).collect();
    match parts.as_slice() {
        [fw] => fw == "fw",
        [fw, v] => fw == "fw" && v.starts_with('v') && v[1..].parse::<u32>().is_ok(),
        _ => false,
    }
}

/// The `<netns inode>` of a path under /sys/fs/bpf/fw/vN/<inode>/….
fn netns_inode_of(p: &Path) -> Option<u64> {
    let rel = p.strip_prefix(BPFFS).ok()?;
    let parts: Vec<_> = rel.iter().map(|c| c.to_string_lossy()).collect();
    match parts.as_slice() {
        [fw, _, ino, ..] if fw == "fw" => ino.parse().ok(),
        _ => None,
    }
}

/// Network namespaces some process is in right now.
fn live_netns_inodes() -> BTreeSet<u64> {
    let mut out = BTreeSet::new();
    if let Ok(rd) = fs::read_dir("/proc") {
        for e in rd.flatten() {
            if e.file_name().to_string_lossy().parse::<u32>().is_err() {
                continue;
            }
            if let Ok(m) = fs::metadata(e.path().join("ns/net")) {
                out.insert(m.ino());
            }
        }
    }
    out
}

/// A number in `name` that is the pid of a running user-space process other than this one.
fn live_pid_in(name: &str) -> Option<u32> {
    let me = std::process::id();
    name.split(|c: char| !c.is_ascii_digit())
        .filter(|d| d.len() >= 2)
        .filter_map(|d| d.parse::<u32>().ok())
        .find(|&pid| {
            pid != me && fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|c| !c.is_empty())
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cargo_test_output_is_summed_per_suite() {
        let lines: Vec<(bool, String)> = [
            (true, "     Running unittests src/lib.rs (target/debug/deps/fw_common-0123abcd)"),
            (false, "test tcp::tests::a ... ok"),
            (false, "test tcp::tests::b ... FAILED"),
            (false, "test result: FAILED. 1 passed; 1 failed; 2 ignored; 0 measured; 0 filtered out; finished in 0.01s"),
            (true, "   Doc-tests fw"),
            (false, "test result: ok. 3 passed; 0 failed; 0 ignored; 0 measured; 0 filtered out; finished in 0.00s"),
        ]
        .into_iter()
        .map(|(e, l)| (e, l.to_string()))
        .collect();
        let r = Results::parse(&lines);
        assert_eq!((r.passed, r.failed, r.ignored), (4, 1, 2));
        assert_eq!(r.suites.len(), 2);
        assert_eq!(r.suites[0].0, "fw_common: unittests src/lib.rs");
        assert_eq!(r.suites[1].0, "doc-tests fw");
        assert_eq!(
            r.failed_tests,
            ["fw_common: unittests src/lib.rs: tcp::tests::b"]
        );
    }

    #[test]
    fn layout_skeleton_and_netns_inode() {
        assert!(is_layout_skeleton(Path::new("/sys/fs/bpf/fw")));
        assert!(is_layout_skeleton(Path::new("/sys/fs/bpf/fw/v1")));
        assert!(!is_layout_skeleton(Path::new(
            "/sys/fs/bpf/fw/v1/4026532177"
        )));
        assert!(!is_layout_skeleton(Path::new("/sys/fs/bpf/fwtest")));
        assert_eq!(
            netns_inode_of(Path::new("/sys/fs/bpf/fw/v1/4026532177/eth0/link")),
            Some(4026532177)
        );
        assert_eq!(netns_inode_of(Path::new("/sys/fs/bpf/fw/v1")), None);
    }
}
