//! Tier 3, end to end: fw and another XDP program (xdp-filter, from xdp-tools) on one
//! interface. Where the kernel runs libxdp dispatchers, fw joins xdp-filter's dispatcher and
//! both act on traffic. Where it refuses freplace programs (this project's machines: EPERM
//! under lockdown), xdp-filter attaches alone and fw must refuse by name, say why and what to
//! do, and leave xdp-filter working. The full protocol in both orders runs in a VM:
//! `vm_*` below (ignored by default; it boots Debian's kernel under QEMU).

use std::{path::PathBuf, process::Command, time::Duration};

use fw_lab::{CONNECT_DROP, Connect, Pair, preflight, run_with_timeout, workspace_root};

const POLICY: &str = "[[allow]]\nports = [22, 80]\ncomment = \"ssh and web\"\n";

/// xdp-filter on the server veth, dropping TCP/UDP to `port`; unloaded on drop.
struct XdpFilter<'a> {
    pair: &'a Pair,
}

impl<'a> XdpFilter<'a> {
    fn load(pair: &'a Pair, port: u16) -> XdpFilter<'a> {
        let out = pair.server.run(
            "xdp-filter",
            &["load", Pair::SERVER_IF, "--mode", "native"],
            Duration::from_secs(30),
        );
        assert!(out.success(), "xdp-filter load: {out}");
        let f = XdpFilter { pair };
        let out = pair.server.run(
            "xdp-filter",
            &["port", &port.to_string()],
            Duration::from_secs(30),
        );
        assert!(out.success(), "xdp-filter port: {out}");
        f
    }
}

impl Drop for XdpFilter<'_> {
    fn drop(&mut self) {
        let _ = self.pair.server.run(
            "xdp-filter",
            &["unload", Pair::SERVER_IF],
            Duration::from_secs(30),
        );
        // libxdp's directory, if it is empty now (other runs may use it: rmdir only).
        let _ = std::fs::remove_dir("/sys/fs/bpf/xdp");
    }
}

fn policy_file(pair: &Pair) -> PathBuf {
    let p = std::env::temp_dir().join(format!(
        "fw-multiprog-{}-{}.toml",
        std::process::id(),
        pair.net
    ));
    std::fs::write(&p, POLICY).expect("policy file");
    p
}

fn reach(pair: &Pair, port: u16) -> Connect {
    pair.client
        .connect_tcp(pair.server_addr(false, port), None, CONNECT_DROP)
}

#[test]
fn fw_beside_xdp_filter_joins_or_refuses_by_name() {
    preflight(&["xdp-filter", "xdp-loader"]);
    let pair = Pair::new("mprog");
    let _l = [22u16, 80, 8081].map(|p| pair.listen(false, p));
    let filter = XdpFilter::load(&pair, 80);
    assert_eq!(
        reach(&pair, 80),
        Connect::TimedOut,
        "xdp-filter drops port 80"
    );
    assert_eq!(reach(&pair, 8081), Connect::Connected);
    let policy = policy_file(&pair);
    let up = pair.fw(&[
        "up",
        "--iface",
        Pair::SERVER_IF,
        "--policy",
        &policy.display().to_string(),
        "--force",
    ]);
    let _ = std::fs::remove_file(&policy);
    let components = fw::dispatcher::kernel_supports_components();
    match components {
        Ok(Some(())) => {
            // A kernel with dispatchers: fw joined xdp-filter's, both act.
            let up = up.check();
            assert!(up.stdout.contains("libxdp dispatcher"), "{up}");
            assert_eq!(reach(&pair, 22), Connect::Connected);
            assert_eq!(
                reach(&pair, 80),
                Connect::TimedOut,
                "xdp-filter still drops 80"
            );
            assert_eq!(reach(&pair, 8081), Connect::TimedOut, "fw drops 8081");
            pair.fw(&["down", "--iface", Pair::SERVER_IF]).check();
            assert_eq!(reach(&pair, 8081), Connect::Connected, "fw down left");
            assert_eq!(
                reach(&pair, 80),
                Connect::TimedOut,
                "xdp-filter kept working"
            );
        }
        Err(why) => {
            // No dispatcher possible: xdp-filter fell back to attaching alone. fw refuses,
            // names the program and the reason, and changes nothing.
            assert!(!up.success(), "fw must not replace xdp-filter: {up}");
            let text = up.text();
            for needle in [
                "xdpfilt_alw_all",
                "not through a libxdp dispatcher",
                "refuses freplace programs",
                "xdp-filter unload",
            ] {
                assert!(text.contains(needle), "no {needle:?} in: {up}");
            }
            assert!(why.contains("freplace"), "{why}");
            assert!(
                !pair.iface_pins().exists(),
                "a refused fw up left pins in {}",
                pair.iface_pins().display()
            );
            assert_eq!(
                reach(&pair, 80),
                Connect::TimedOut,
                "xdp-filter still drops 80"
            );
            assert_eq!(reach(&pair, 8081), Connect::Connected, "and nothing else");
            // Asking for a dispatcher explicitly says the same.
            let mp = pair.fw(&["up", "--iface", Pair::SERVER_IF, "--multiprog", "--force"]);
            assert!(!mp.success(), "{mp}");
            assert!(mp.text().contains("xdpfilt_alw_all"), "{mp}");
        }
        Ok(None) => panic!("libxdp's xdp-dispatcher.o is not installed (libxdp1)"),
    }
    drop(filter);
    pair.finish();
}

#[test]
fn multiprog_where_the_kernel_refuses_freplace_says_so_and_leaves_nothing() {
    preflight(&["xdp-loader"]);
    if let Ok(Some(())) = fw::dispatcher::kernel_supports_components() {
        eprintln!("this kernel runs dispatcher components: the VM test covers --multiprog");
        return;
    }
    let pair = Pair::new("mprogno");
    let out = pair.fw(&["up", "--iface", Pair::SERVER_IF, "--multiprog", "--force"]);
    assert!(!out.success(), "{out}");
    let text = out.text();
    assert!(text.contains("refuses freplace programs"), "{out}");
    assert!(text.contains("without --multiprog"), "{out}");
    assert!(
        !pair.iface_pins().exists(),
        "pins left after a refused fw up"
    );
    assert_eq!(pair.xdp_on_iface(), None, "nothing attached");
    let _ = std::fs::remove_dir("/sys/fs/bpf/xdp");
    // Alone, fw works as ever.
    pair.fw_up(None);
    pair.fw(&["down", "--iface", Pair::SERVER_IF]).check();
    pair.finish();
}

/// The whole protocol in a VM (Debian's kernel under QEMU; 2–3 minutes): xdp-filter first then
/// fw, fw first then xdp-filter, fw's upgrade and reordering, fw down and xdp-filter unload
/// each leaving the other working. Kernel: `FW_VM_KERNEL` (an unpacked Debian linux-image),
/// default the 6.12 one `cargo xtask vm` caches.
#[test]
#[ignore = "boots a VM for 2-3 minutes: cargo test -p tests --test e2e_multiprog -- --ignored"]
fn vm_fw_and_xdp_filter_share_a_dispatcher_in_both_orders() {
    preflight(&["xdp-filter", "xdp-loader"]);
    let kernel = std::env::var_os("FW_VM_KERNEL")
        .map(PathBuf::from)
        .or_else(|| {
            let dir = dirs_cache().join("kernels");
            std::fs::read_dir(dir)
                .ok()?
                .flatten()
                .map(|e| e.path())
                .find(|p| {
                    p.file_name()
                        .is_some_and(|n| n.to_string_lossy().starts_with("6.12"))
                })
        })
        .expect("no kernel: set FW_VM_KERNEL, or run `cargo xtask vm --kernel 6.12` once");
    let mut c = Command::new(workspace_root().join("tests/vm/multiprog.sh"));
    c.arg(&kernel).arg(fw_lab::fw_bin());
    let out = run_with_timeout(c, Duration::from_secs(600));
    let text = out.text();
    let fails: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with("FWVM-CHECK FAIL"))
        .collect();
    assert!(fails.is_empty(), "{}", fails.join("\n"));
    assert!(out.success(), "the VM test did not finish: {out}");
    let oks = text
        .lines()
        .filter(|l| l.starts_with("FWVM-CHECK ok"))
        .count();
    assert!(oks >= 50, "only {oks} checks ran");
}

fn dirs_cache() -> PathBuf {
    std::env::var_os("FW_VM_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            let base = std::env::var_os("XDG_CACHE_HOME")
                .map(PathBuf::from)
                .unwrap_or_else(|| {
                    PathBuf::from(std::env::var_os("HOME").unwrap_or_default()).join(".cache")
                });
            base.join("fw-vm")
        })
}
