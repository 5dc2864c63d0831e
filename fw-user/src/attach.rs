//! Attaching fw's two programs to an interface, replacing them without a gap, and finding out
//! what is really attached.
//!
//! - XDP: a bpf_link pinned as `link` (Linux ≥ 5.9). Replacing the program is a
//!   bpf_link_update on the same link: there is no moment without a filter.
//! - TC egress (the recorder of this host's own flows): a TCX bpf_link pinned as `tc_link`
//!   where the kernel has TCX (≥ 6.6), else a cls_bpf filter on a clsact qdisc (netlink; found
//!   again by priority and handle, replaced in place). Chosen by probing, or forced.

use aya::{
    Ebpf,
    programs::{
        LinkOrder, ProgramError, TcAttachType, Xdp, XdpMode,
        links::{FdLink, LinkError, PinnedLink},
        tc::{self, NlOptions, SchedClassifierLink, TcAttachOptions, TcHandle},
        xdp::XdpLink,
    },
};
use fw_common::maps::{PROG_XDP, PROG_XDP_LINEAR};

use crate::{
    Error,
    loader::{Variant, egress_program, xdp_program},
    paths::{IfaceName, IfacePaths},
    state::{AttachMode, EgressAttach},
    sys::{self, BPF_LINK_TYPE_TCX, BPF_LINK_TYPE_XDP},
};

/// How to attach the XDP program.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, Default)]
pub enum Mode {
    /// Native (driver) XDP where the driver supports it, generic (skb) XDP otherwise.
    #[default]
    Auto,
    /// Native XDP only: fail if the driver cannot.
    Native,
    /// Generic XDP (after the kernel allocated an skb; slower, works everywhere).
    Skb,
}

/// How to attach the egress recorder.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, Default)]
pub enum EgressMode {
    /// TCX where the kernel has it (Linux ≥ 6.6), a clsact qdisc otherwise.
    #[default]
    Auto,
    /// TCX only.
    Tcx,
    /// A clsact qdisc and a cls_bpf filter (any kernel fw supports).
    Clsact,
}

/// The priority fw's clsact egress filter uses (tc's `pref`), so fw finds and replaces its own.
pub const CLSACT_PRIORITY: u16 = 0xf0;
const CLSACT_HANDLE: u32 = 0xf0;

/// Attach the loaded XDP program to `iface` and pin its link. Returns the mode in use; `why`
/// receives the reason native mode was not used.
pub fn attach_xdp(
    ebpf: &mut Ebpf,
    paths: &IfacePaths,
    mode: Mode,
    why: &mut Option<String>,
) -> Result<AttachMode, Error> {
    let iface = paths.iface.as_str();
    let variant = crate::loader::loaded_variant(ebpf);
    let prog = xdp_program(ebpf)?;
    let (id, got) = match mode {
        Mode::Native => (
            try_xdp(prog, iface, XdpMode::Driver).map_err(|e| {
                if is_busy(&e) {
                    xdp_error(iface, e, "native")
                } else {
                    let why = native_unavailable(iface, &e, variant);
                    Error::Other(format!(
                        "{iface}: native XDP is not available: {why}. `--mode auto` falls back to generic (skb) mode"
                    ))
                }
            })?,
            AttachMode::Native,
        ),
        Mode::Skb => (
            try_xdp(prog, iface, XdpMode::Skb).map_err(|e| xdp_error(iface, e, "skb"))?,
            AttachMode::Skb,
        ),
        Mode::Auto => match try_xdp(prog, iface, XdpMode::Driver) {
            Ok(id) => (id, AttachMode::Native),
            Err(e) if is_busy(&e) => return Err(xdp_error(iface, e, "native")),
            Err(e) => {
                *why = Some(native_unavailable(iface, &e, variant));
                (
                    try_xdp(prog, iface, XdpMode::Skb).map_err(|e| xdp_error(iface, e, "skb"))?,
                    AttachMode::Skb,
                )
            }
        },
    };
    let link = prog
        .take_link(id)
        .map_err(|e| Error::bpf("taking the XDP link", e))?;
    let fd_link = match FdLink::try_from(link) {
        Ok(l) => l,
        Err(LinkError::InvalidLink) => {
            // aya fell back to a netlink attachment, which cannot be pinned or replaced
            // atomically: undo it rather than leave an unmanaged program behind.
            let status = std::process::Command::new("ip")
                .args(["link", "set", "dev", iface, "xdp", "off"])
                .status();
            if !status.is_ok_and(|s| s.success()) {
                return Err(Error::Other(format!(
                    "{iface}: attached with netlink instead of a bpf_link (old kernel or driver), and removing it failed: run `ip link set dev {iface} xdp off`"
                )));
            }
            return Err(Error::NetlinkOnly {
                iface: iface.to_string(),
            });
        }
        Err(e) => return Err(Error::bpf("XDP link", e)),
    };
    fd_link
        .pin(paths.link())
        .map_err(|e| Error::bpf(format!("pinning {}", paths.link().display()), e))?;
    Ok(got)
}

fn try_xdp(
    prog: &mut Xdp,
    iface: &str,
    mode: XdpMode,
) -> Result<aya::programs::xdp::XdpLinkId, ProgramError> {
    prog.attach(iface, mode)
}

fn is_busy(e: &ProgramError) -> bool {
    matches!(e, ProgramError::SyscallError(s)
        if matches!(s.io_error.raw_os_error(), Some(libc::EBUSY | libc::EEXIST)))
}

fn xdp_error(iface: &str, e: ProgramError, what: &str) -> Error {
    if is_busy(&e) {
        Error::Busy {
            iface: iface.to_string(),
            detail: e.to_string(),
        }
    } else {
        Error::bpf(format!("attaching to {iface} in {what} mode"), e)
    }
}

/// Why native XDP failed, in words an operator can act on.
fn native_unavailable(iface: &str, e: &ProgramError, variant: Variant) -> String {
    let errno = os_error_of(e).unwrap_or(0);
    crate::native::explain(iface, errno, variant, &crate::native::Facts::of(iface))
}

/// Swap the program on the pinned XDP link (bpf_link_update): no gap.
pub fn replace_xdp(ebpf: &mut Ebpf, paths: &IfacePaths) -> Result<(), Error> {
    let pinned = PinnedLink::from_pin(paths.link())
        .map_err(|e| Error::bpf(format!("{}", paths.link().display()), e))?;
    let link = XdpLink::try_from(FdLink::from(pinned))
        .map_err(|e| Error::bpf("the pinned link is not XDP", e))?;
    let prog = xdp_program(ebpf)?;
    match prog.attach_to_link(link) {
        Ok(id) => {
            // The pin keeps the link alive; dropping our handle only closes an fd.
            drop(prog.take_link(id).map_err(|e| Error::bpf("XDP link", e))?);
            Ok(())
        }
        Err(ProgramError::SyscallError(s)) if s.io_error.raw_os_error() == Some(libc::ENOLINK) => {
            Err(Error::LinkSevered {
                iface: paths.iface.clone(),
                detail: "the pinned XDP link has lost its device".into(),
            })
        }
        Err(e) => Err(Error::bpf("replacing the program on the pinned link", e)),
    }
}

/// Take over the links another fw (another map layout) pinned in `old_dir`: replace their
/// programs with this object's (no gap: the same links), pin them where this fw keeps its
/// links, and remove the old pins. Returns how the egress recorder is attached (attached anew
/// if the old fw had none).
pub fn adopt_links(
    ebpf: &mut Ebpf,
    old_dir: &std::path::Path,
    paths: &IfacePaths,
) -> Result<EgressAttach, Error> {
    let pinned = |p: &std::path::Path| {
        PinnedLink::from_pin(p).map_err(|e| Error::bpf(p.display().to_string(), e))
    };
    let old_tc = old_dir.join("tc_link");
    let egress = if old_tc.exists() {
        let link = SchedClassifierLink::try_from(FdLink::from(pinned(&old_tc)?))
            .map_err(|e| Error::bpf("the old egress link is not TC", e))?;
        let tc = egress_program(ebpf)?;
        let id = tc
            .attach_to_link(link)
            .map_err(|e| Error::bpf("replacing the old fw's egress program", e))?;
        let link = tc.take_link(id).map_err(|e| Error::bpf("TC link", e))?;
        FdLink::try_from(link)
            .map_err(|e| Error::bpf("the old egress link", e))?
            .pin(paths.tc_link())
            .map_err(|e| Error::bpf(format!("pinning {}", paths.tc_link().display()), e))?;
        std::fs::remove_file(&old_tc).map_err(|e| Error::io(&old_tc, e))?;
        EgressAttach::Tcx
    } else {
        attach_egress(ebpf, paths, EgressMode::Auto)?
    };
    let old_link = old_dir.join("link");
    let link = XdpLink::try_from(FdLink::from(pinned(&old_link)?))
        .map_err(|e| Error::bpf("the old XDP link is not XDP", e))?;
    let prog = xdp_program(ebpf)?;
    let id = prog
        .attach_to_link(link)
        .map_err(|e| Error::bpf("replacing the old fw's XDP program", e))?;
    let link = prog.take_link(id).map_err(|e| Error::bpf("XDP link", e))?;
    FdLink::try_from(link)
        .map_err(|e| Error::bpf("the old XDP link", e))?
        .pin(paths.link())
        .map_err(|e| Error::bpf(format!("pinning {}", paths.link().display()), e))?;
    std::fs::remove_file(&old_link).map_err(|e| Error::io(&old_link, e))?;
    Ok(egress)
}

/// Attach the egress recorder. `Auto` tries TCX and falls back to clsact where the kernel has
/// no TCX (EINVAL from bpf_link_create before 6.6).
pub fn attach_egress(
    ebpf: &mut Ebpf,
    paths: &IfacePaths,
    mode: EgressMode,
) -> Result<EgressAttach, Error> {
    if mode != EgressMode::Clsact {
        match attach_tcx(ebpf, paths) {
            Ok(()) => return Ok(EgressAttach::Tcx),
            Err(e) if mode == EgressMode::Auto && tcx_unsupported(&e) => {
                log::info!(
                    "{}: no TCX on this kernel (< 6.6); using a clsact qdisc",
                    paths.iface
                );
            }
            Err(e) => return Err(e),
        }
    }
    attach_clsact(ebpf, paths)
}

fn tcx_unsupported(e: &Error) -> bool {
    matches!(e.os_error(), Some(libc::EINVAL | libc::EOPNOTSUPP))
}

fn attach_tcx(ebpf: &mut Ebpf, paths: &IfacePaths) -> Result<(), Error> {
    let tc = egress_program(ebpf)?;
    let id = tc
        .attach_with_options(
            &paths.iface,
            TcAttachType::Egress,
            TcAttachOptions::TcxOrder(LinkOrder::default()),
        )
        .map_err(|e| {
            Error::bpf(
                format!("attaching the egress recorder to {} (TCX)", paths.iface),
                e,
            )
        })?;
    let link = tc
        .take_link(id)
        .map_err(|e| Error::bpf("taking the TC link", e))?;
    let fd = FdLink::try_from(link).map_err(|e| Error::bpf("the TCX link", e))?;
    fd.pin(paths.tc_link())
        .map_err(|e| Error::bpf(format!("pinning {}", paths.tc_link().display()), e))?;
    Ok(())
}

fn attach_clsact(ebpf: &mut Ebpf, paths: &IfacePaths) -> Result<EgressAttach, Error> {
    let iface = paths.iface.as_str();
    match tc::qdisc_add_clsact(iface) {
        Ok(()) => {}
        // Already there (ours from before, or another tool's): filters share it.
        Err(tc::TcError::NetlinkError(e)) if e.raw_os_error() == Some(libc::EEXIST) => {}
        Err(e) => return Err(Error::bpf(format!("adding a clsact qdisc to {iface}"), e)),
    }
    let options = || NlOptions {
        priority: CLSACT_PRIORITY,
        handle: TcHandle::from(CLSACT_HANDLE),
        ..Default::default()
    };
    let tc = egress_program(ebpf)?;
    let attached = tc.attach_with_options(
        iface,
        TcAttachType::Egress,
        TcAttachOptions::Netlink(options()),
    );
    let id = match attached {
        Ok(id) => id,
        // A filter of ours from an earlier run (`fw down` not run): replace it in place.
        Err(e) if os_error_of(&e) == Some(libc::EEXIST) => {
            let link = SchedClassifierLink::attached(
                iface,
                TcAttachType::Egress,
                CLSACT_PRIORITY,
                TcHandle::from(CLSACT_HANDLE),
                None,
            )
            .map_err(|e| Error::io(format!("/sys/class/net/{iface}"), e))?;
            tc.attach_to_link(link)
                .map_err(|e| Error::bpf(format!("replacing fw's egress filter on {iface}"), e))?
        }
        Err(e) => {
            return Err(Error::bpf(
                format!("attaching the egress recorder to {iface} (clsact)"),
                e,
            ));
        }
    };
    // A netlink filter stays attached by itself; dropping aya's handle would detach it.
    std::mem::forget(
        tc.take_link(id)
            .map_err(|e| Error::bpf("taking the TC link", e))?,
    );
    Ok(EgressAttach::Clsact {
        priority: CLSACT_PRIORITY,
        handle: CLSACT_HANDLE,
    })
}

fn os_error_of(e: &ProgramError) -> Option<i32> {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = cur {
        if let Some(io) = err.downcast_ref::<std::io::Error>()
            && let Some(c) = io.raw_os_error()
        {
            return Some(c);
        }
        cur = err.source();
    }
    None
}

/// Swap the egress program in place (or attach one if the recorder is missing).
pub fn replace_egress(
    ebpf: &mut Ebpf,
    paths: &IfacePaths,
    how: EgressAttach,
) -> Result<EgressAttach, Error> {
    match how {
        EgressAttach::Tcx if paths.tc_link().exists() => {
            let pinned = PinnedLink::from_pin(paths.tc_link())
                .map_err(|e| Error::bpf(format!("{}", paths.tc_link().display()), e))?;
            let link = SchedClassifierLink::try_from(FdLink::from(pinned))
                .map_err(|e| Error::bpf("the pinned egress link is not TC", e))?;
            let tc = egress_program(ebpf)?;
            let id = tc
                .attach_to_link(link)
                .map_err(|e| Error::bpf("replacing the egress program", e))?;
            drop(tc.take_link(id).map_err(|e| Error::bpf("TC link", e))?);
            Ok(EgressAttach::Tcx)
        }
        EgressAttach::Tcx => attach_egress(ebpf, paths, EgressMode::Tcx),
        EgressAttach::Clsact { .. } => attach_clsact(ebpf, paths),
    }
}

/// Remove fw's clsact egress filter (the qdisc stays: other filters may use it).
pub fn detach_clsact(iface: &str, priority: u16, handle: u32) -> Result<(), Error> {
    let Ok(link) = SchedClassifierLink::attached(
        iface,
        TcAttachType::Egress,
        priority,
        TcHandle::from(handle),
        None,
    ) else {
        return Ok(()); // the interface is gone, and the filter with it
    };
    // Dropping the handle detaches the netlink filter.
    drop(link);
    Ok(())
}

/// What is really attached, for `fw status` and the decision to heal.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LinkHealth {
    /// Attached to the interface of this name, as recorded.
    Attached,
    /// No pin.
    Missing,
    /// The link lost its device (the interface was deleted).
    Severed,
    /// Attached to another interface index than the one of this name now (deleted and
    /// recreated).
    Moved { link: u32, now: Option<u32> },
    /// The pin is not what fw made.
    Foreign(String),
}

fn check_link(path: &std::path::Path, iface: &IfaceName, want_type: u32) -> LinkHealth {
    if std::fs::symlink_metadata(path).is_err() {
        return LinkHealth::Missing;
    }
    let facts = match sys::pinned_link_facts(path) {
        Ok(f) => f,
        Err(e) => return LinkHealth::Foreign(format!("cannot read the link: {e}")),
    };
    if facts.link_type != want_type {
        return LinkHealth::Foreign(format!("link type {}", facts.link_type));
    }
    if facts.ifindex == 0 {
        return LinkHealth::Severed;
    }
    let now = iface.index();
    if now != Some(facts.ifindex) {
        return LinkHealth::Moved {
            link: facts.ifindex,
            now,
        };
    }
    LinkHealth::Attached
}

pub fn xdp_health(paths: &IfacePaths, iface: &IfaceName) -> LinkHealth {
    if std::fs::symlink_metadata(paths.link()).is_err() && paths.prog().exists() {
        // In a libxdp dispatcher: no link of fw's own.
        return crate::multiprog::health(paths, iface);
    }
    check_link(&paths.link(), iface, BPF_LINK_TYPE_XDP)
}

pub fn tcx_health(paths: &IfacePaths, iface: &IfaceName) -> LinkHealth {
    check_link(&paths.tc_link(), iface, BPF_LINK_TYPE_TCX)
}

/// The fw XDP program attached to interface `ifindex` (of this network namespace) by a link
/// fw cannot see through its pins (pins moved aside, another layout's directory): its program
/// id. Another tool's XDP program is not reported (attaching then fails with EBUSY, named).
pub fn fw_program_on(ifindex: u32) -> Option<u32> {
    let id = sys::xdp_prog_id(ifindex).ok().flatten()?;
    let name = sys::prog_name(id).ok()?;
    [PROG_XDP, PROG_XDP_LINEAR]
        .contains(&name.as_str())
        .then_some(id)
}
