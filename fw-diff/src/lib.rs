//! The differential test against iptables (issue 5's proof): the same policy in real iptables
//! in one network namespace and in `fw` in another, the same generated packets sent to both,
//! and a comparison of which packets each let through to the host's own stack.
//!
//! - [`policies`]: the cases (an fw policy against its `fw export iptables`, an iptables-save
//!   file against its `fw import iptables`, or a given pair).
//! - [`generator`]: the seeded generator: TCP flag combinations, ports and sources, unrelated TCP,
//!   UDP, ICMP, other protocols, IPv4 options, IPv6 extension headers, fragments, malformed
//!   and truncated headers (the same bytes to both hosts), and stateful flows (the host's own
//!   sockets open connections or accept them; the sender answers each host's 5-tuple).
//! - [`lab`]: the two hosts and how a verdict is observed (NFLOG from an nftables chain right
//!   after the filter, in both hosts), [`nflog`] the NFLOG reader, [`frames`] the packets.
//! - [`engine`]: one case, start to end; [`known`]: the documented differences;
//!   [`report`]: the per-class table and the Markdown for docs/differential.md.
//!
//! Root only. Everything lives in namespaces the run creates (names with its pid) and is
//! removed by guards, also on failure.

pub mod engine;
pub mod flows;
pub mod frames;
pub mod generator;
pub mod known;
pub mod lab;
pub mod nflog;
pub mod policies;
pub mod probes;
pub mod report;

pub use engine::{Case, CaseResult, Options, run_case};

/// Tools the run needs, with the Debian package that has each.
pub const TOOLS: [(&str, &str); 7] = [
    ("ip", "iproute2"),
    ("nsenter", "util-linux"),
    ("sysctl", "procps"),
    ("ethtool", "ethtool"),
    ("nft", "nftables"),
    ("iptables-legacy-restore", "iptables"),
    ("ip6tables-legacy-restore", "iptables"),
];

/// Fail with a clear message unless the run can work here.
pub fn preflight() -> anyhow::Result<()> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        anyhow::bail!(
            "the differential test creates network namespaces, loads iptables rules and attaches XDP programs: run it as root"
        );
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    for (tool, pkg) in TOOLS {
        if !std::env::split_paths(&path).any(|d| d.join(tool).is_file()) {
            anyhow::bail!(
                "`{tool}` is missing (Debian package {pkg}; `cargo xtask setup` installs it)"
            );
        }
    }
    fw_lab::fw_bin();
    fw::paths::ensure_bpffs().map_err(|e| anyhow::anyhow!("bpffs: {e}"))?;
    Ok(())
}
