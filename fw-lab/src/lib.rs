//! fw's test lab: everything the end-to-end and kernel tests, the benchmark (`fw-bench`), the
//! differential test (`fw-diff`) and `cargo xtask demo` need around the firewall, in one place.
//!
//! - [`netns`]: [`NetNs`], a network namespace removed on drop with everything fw left for it;
//!   [`link`]: veth pairs, addresses, neighbours, counters, CPU pinning; [`pair`]: [`Pair`],
//!   the server/client stage of the end-to-end tests.
//! - [`proc`]: a command runner with timeouts and process groups ([`Cmd`], [`Proc`]);
//!   [`signal`]: Ctrl-C for the binaries.
//! - [`sock`]: connects, listeners, echo servers, UDP, raw ICMP; [`raw`]: packet sockets.
//! - [`frames`]: the product's frame builder (`fw_common::frame`, with the one checksum
//!   routine) and the surgery that makes its frames malformed on purpose.
//! - [`scan`]: nmap and hping3, run and parsed; [`fw`]: the `fw` binary under test and its
//!   `status --json`; [`fixtures`]: the seed policy's facts; [`dirs`]: temporary and private
//!   bpffs directories; [`rng`]: a seeded PRNG; [`observe`]: a real Prometheus server, a
//!   syslog socket and the frames of the observability tests.
//!
//! No part of it needs the BPF toolchain (it does not depend on `fw-user`, whose build script
//! compiles the XDP program), so `xtask` can use it before it has installed that toolchain.
//! Traffic only ever flows between namespaces and veths the lab creates, to addresses it
//! chooses; every resource is owned by a guard whose Drop removes it, also when a test fails.

pub mod dirs;
mod error;
pub mod fixtures;
pub mod frames;
pub mod fw;
pub mod link;
pub mod netns;
pub mod observe;
pub mod pair;
pub mod proc;
pub mod raw;
pub mod rng;
pub mod scan;
pub mod signal;
pub mod sock;

// What the tests use, at the root: `tests::netns::X` of old is `fw_lab::X`.
pub use dirs::{PrivateDirs, TempDir};
pub use error::{Error, Result};
pub use frames::{Tag, syn_frame, tcp_flags_of};
pub use fw::{
    FW_TIMEOUT, LinkIds, Status, TableCounts, fw_bin, preflight, require_root, require_tools,
    workspace_root,
};
pub use netns::{NetNs, netns_list};
pub use pair::{FAMILIES, Pair, family};
pub use proc::{CMD_TIMEOUT, Cmd, Output, Proc, host_cmd, run_with_timeout};
pub use raw::RawLink;
pub use rng::Rng;
pub use scan::{hping3, hping3_args, nmap, parse_hping3, port_arg, unpredictable_u32};
pub use sock::{
    CONNECT_DROP, CONNECT_OK, Connect, EchoServer, IcmpObserver, Listener, QUIET, echo_msg, echoes,
    udp_received,
};

/// Wait (bounded by `timeout`, polling every 50 ms) until `done` holds; returns whether it did.
pub fn wait_until(timeout: std::time::Duration, mut done: impl FnMut() -> bool) -> bool {
    let deadline = std::time::Instant::now() + timeout;
    loop {
        if done() {
            return true;
        }
        if std::time::Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

/// A path as a string argument.
pub fn path_str(p: &std::path::Path) -> String {
    p.display().to_string()
}
