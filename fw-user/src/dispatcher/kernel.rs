//! What the kernel and the interface allow: whether this kernel runs freplace components at
//! all, and what to tell the operator when a program holds the interface on its own.

use aya::{
    EbpfLoader,
    programs::{Extension, Xdp},
};

use super::{dispatcher_object, ifname};
use crate::{Error, xdp_netlink::XdpMode};

/// The error for an interface whose XDP program does not use a dispatcher.
pub fn not_a_dispatcher(ifindex: u32, id: u32, name: &str, mode: XdpMode) -> Error {
    let iface = ifname(ifindex).unwrap_or_else(|| format!("interface {ifindex}"));
    let remove = format!(
        "remove it first (`bpftool net show dev {iface}` shows it; `ip link set dev {iface} xdp off`, or `bpftool link detach id N` for a bpf_link; for xdp-filter: `xdp-filter unload {iface}`)"
    );
    let what_to_do = match kernel_supports_components() {
        Err(why) => format!(
            "Two XDP programs cannot share {iface} on this machine: {why}. To run fw here, {remove}, or put its rules into fw's policy"
        ),
        Ok(_) => format!(
            "If it comes from a libxdp tool (xdp-loader, xdp-filter, …), {remove}, run `fw up --iface {iface} --multiprog`, then load it again: it joins fw's dispatcher. Otherwise {remove}"
        ),
    };
    Error::Other(format!(
        "{iface}: another XDP program, {name:?} (id {id}, {}), holds the interface on its own, not through a libxdp dispatcher, so nothing can run beside it. {what_to_do}",
        match mode {
            XdpMode::Native => "native mode",
            XdpMode::Skb => "generic mode",
            XdpMode::Other => "offloaded",
        }
    ))
}
const EXT_REFUSED: &str = "this kernel refuses freplace programs (BPF_PROG_TYPE_EXT; EPERM before verification even with every capability: a lockdown or security module forbids BPF trampolines here), so no libxdp dispatcher can run components on this machine; libxdp's own tools (xdp-loader, xdp-filter) fall back to attaching one program alone for the same reason";

/// Why loading fw's program as a dispatcher component failed, when the kernel refused the
/// program type itself.
pub fn explain_ext_refused(e: &Error) -> Option<String> {
    (e.os_error() == Some(libc::EPERM))
        .then(|| format!("{EXT_REFUSED}. Run fw alone on the interface (without --multiprog)"))
}

/// Whether this kernel runs dispatcher components, asked the way libxdp does: load the
/// dispatcher object's `xdp_pass`, then an extension replacing it. `Err` says why not;
/// `Ok(None)`: unknown (libxdp's dispatcher object is not installed).
pub fn kernel_supports_components() -> Result<Option<()>, String> {
    let Ok(path) = dispatcher_object() else {
        return Ok(None);
    };
    let obj = std::fs::read(&path).map_err(|e| format!("{}: {e}", path.display()))?;
    let load = |ext: bool| {
        let mut l = EbpfLoader::new();
        if ext {
            l.extension("xdp_pass");
        }
        l.load(&obj).map_err(|e| format!("{}: {e}", path.display()))
    };
    let mut target = load(false)?;
    let t: &mut Xdp = target
        .program_mut("xdp_pass")
        .ok_or("xdp_pass missing from the dispatcher object")?
        .try_into()
        .map_err(|e| format!("{e}"))?;
    t.load().map_err(|e| format!("loading xdp_pass: {e}"))?;
    let fd = t
        .fd()
        .and_then(|f| f.try_clone().map_err(Into::into))
        .map_err(|e| format!("{e}"))?;
    let mut test = load(true)?;
    let ext: &mut Extension = test
        .program_mut("xdp_pass")
        .ok_or("xdp_pass missing from the dispatcher object")?
        .try_into()
        .map_err(|e| format!("{e}"))?;
    match ext.load(fd, "xdp_pass") {
        Ok(()) => Ok(Some(())),
        Err(e) if os_error_of(&e) == Some(libc::EPERM) => Err(EXT_REFUSED.into()),
        Err(e) => Err(format!("this kernel cannot load freplace programs: {e}")),
    }
}

fn os_error_of(e: &(dyn std::error::Error + 'static)) -> Option<i32> {
    let mut cur = Some(e);
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
