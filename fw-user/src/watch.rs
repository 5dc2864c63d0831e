//! Keep the saved policy on its interfaces while they come and go (`fw restore --watch`): a NIC
//! that appears late, is hot-plugged, or is deleted and recreated (container veth, bond
//! rebuild, network restart) gets its filter again within moments, without an operator.
//!
//! Events come from rtnetlink (RTMGRP_LINK: a link was added or changed); a periodic check
//! covers anything an event could miss. Healing is [`Filter::up`] — a recreated interface gets
//! the policy that was in force (live edits and history included), a new one the saved
//! policy.

use std::{
    os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd},
    time::{Duration, Instant},
};

use fw_policy::Policy;

use crate::{
    Error,
    attach::{self, EgressMode, LinkHealth, Mode},
    filter::{Filter, UpKind, UpOptions},
    guard::Guard,
    paths::{IfaceName, IfacePaths},
};

/// How often every watched interface is checked even without an event.
pub const RECHECK: Duration = Duration::from_secs(10);

/// What one check did.
#[derive(Debug, PartialEq, Eq)]
pub enum Healed {
    /// Filtered as it should be (or the interface does not exist yet).
    Nothing,
    Attached,
    Reattached(String),
}

impl std::fmt::Display for Healed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Healed::Nothing => f.write_str("filtered"),
            Healed::Attached => f.write_str("the saved policy is attached"),
            Healed::Reattached(why) => write!(f, "attached again ({why})"),
        }
    }
}

/// Check `iface` and attach the policy if it is not filtered. `policy` is the saved one (used
/// when fw is not attached at all); a filter whose interface was recreated keeps its own.
pub fn heal(iface: &IfaceName, policy: &Policy, source: &str, mode: Mode) -> Result<Healed, Error> {
    if iface.index().is_none() {
        return Ok(Healed::Nothing);
    }
    let paths = IfacePaths::new(iface)?;
    if paths.is_attached()? && attach::xdp_health(&paths, iface) == LinkHealth::Attached {
        return Ok(Healed::Nothing);
    }
    let opts = UpOptions {
        mode,
        egress: EgressMode::Auto,
        policy: if paths.is_attached()? {
            None
        } else {
            Some((policy, source))
        },
        // The saved policy was checked when it was saved and restored; a late NIC at boot has
        // no SSH session to protect yet, and refusing would leave it open.
        guard: Guard::Restore,
        log: false,
        share: crate::multiprog::Share::Auto,
    };
    let (_, report, _) = Filter::up(iface, &opts)?;
    Ok(match report.kind {
        UpKind::Healed(why) => Healed::Reattached(why),
        _ => Healed::Attached,
    })
}

/// A netlink socket subscribed to link events.
fn link_events() -> std::io::Result<OwnedFd> {
    const RTMGRP_LINK: u32 = 1;
    // SAFETY: plain socket(2).
    let fd = unsafe {
        libc::socket(
            libc::AF_NETLINK,
            libc::SOCK_RAW | libc::SOCK_CLOEXEC,
            libc::NETLINK_ROUTE,
        )
    };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: the kernel just returned this fd to us.
    let sock = unsafe { OwnedFd::from_raw_fd(fd) };
    // SAFETY: sockaddr_nl is plain data; zero is valid.
    let mut addr: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
    addr.nl_family = libc::AF_NETLINK as u16;
    addr.nl_groups = RTMGRP_LINK;
    // SAFETY: valid fd and address of the right size.
    let rc = unsafe {
        libc::bind(
            sock.as_raw_fd(),
            (&addr as *const libc::sockaddr_nl).cast(),
            size_of::<libc::sockaddr_nl>() as u32,
        )
    };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(sock)
}

/// Wait up to `timeout` for link events; returns whether any arrived (their content does not
/// matter: every watched interface is checked after one).
fn wait_event(sock: &OwnedFd, timeout: Duration) -> bool {
    let mut pfd = libc::pollfd {
        fd: sock.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one valid pollfd.
    let n = unsafe { libc::poll(&mut pfd, 1, timeout.as_millis().min(60_000) as i32) };
    if n <= 0 {
        return false;
    }
    let mut buf = [0u8; 16384];
    // Drain what is queued (bounded), without blocking.
    for _ in 0..64 {
        // SAFETY: valid buffer of its length.
        let r = unsafe {
            libc::recv(
                sock.as_raw_fd(),
                buf.as_mut_ptr().cast(),
                buf.len(),
                libc::MSG_DONTWAIT,
            )
        };
        if r <= 0 {
            break;
        }
    }
    true
}

/// Watch `ifaces` until `stop()` says so, healing each as needed; `report` hears what happened.
pub fn watch(
    ifaces: &[IfaceName],
    policy: &Policy,
    source: &str,
    mode: Mode,
    stop: &dyn Fn() -> bool,
    report: &mut dyn FnMut(&IfaceName, Result<Healed, Error>),
) -> Result<(), Error> {
    let sock = link_events().map_err(|e| Error::io("rtnetlink link events", e))?;
    let mut next_check = Instant::now();
    while !stop() {
        let event = wait_event(&sock, Duration::from_millis(500));
        if event || Instant::now() >= next_check {
            // Let a burst of events (a veth pair being set up) settle before acting.
            if event {
                std::thread::sleep(Duration::from_millis(200));
            }
            for iface in ifaces {
                let r = heal(iface, policy, source, mode);
                if !matches!(r, Ok(Healed::Nothing)) {
                    report(iface, r);
                }
            }
            next_check = Instant::now() + RECHECK;
        }
    }
    Ok(())
}
