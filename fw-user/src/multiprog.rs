//! fw as one program among several on an interface: the glue between [`crate::filter::Filter`]
//! and the libxdp protocol ([`crate::dispatcher`]). Chooses how fw attaches (alone through its
//! own bpf_link, or in a dispatcher), joins, upgrades in place, leaves, and checks that fw's
//! program still runs in the dispatcher on its interface.

use aya::Ebpf;

use crate::{
    Error,
    attach::{LinkHealth, Mode},
    dispatcher::{self, DEFAULT_PRIORITY, Occupant, Plan, Slot},
    loader::{Load, Variant, extension_program, load_object_with},
    paths::{IfaceName, IfacePaths},
    state::{AttachMode, MultiProg, State},
    xdp_netlink::{self as nl, XdpMode},
};

/// Whether fw shares the interface's XDP hook.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Share {
    /// Join a libxdp dispatcher if one is on the interface; attach alone otherwise.
    #[default]
    Auto,
    /// Run in a libxdp dispatcher, creating one if none is there (`--multiprog`,
    /// `--priority N`).
    Dispatcher { priority: Option<u32> },
}

impl Share {
    fn priority(self) -> Option<u32> {
        match self {
            Share::Auto => None,
            Share::Dispatcher { priority } => priority,
        }
    }
}

/// For a fresh attach: the priority to join a dispatcher at, or `None` to attach alone. A
/// program that holds the interface without a dispatcher is refused here, by name.
pub fn choose(ifindex: u32, share: Share) -> Result<Option<u32>, Error> {
    let netlink = |e| Error::io(format!("netlink: XDP of interface {ifindex}"), e);
    let on_iface = nl::query(ifindex).map_err(netlink)?;
    let name = on_iface.and_then(|(id, _)| crate::sys::prog_name(id).ok());
    match (share, on_iface, name.as_deref()) {
        (Share::Dispatcher { priority }, _, _) => Ok(Some(priority.unwrap_or(DEFAULT_PRIORITY))),
        (Share::Auto, None, _) => Ok(None),
        (Share::Auto, Some(_), Some(dispatcher::DISPATCHER_NAME)) => Ok(Some(DEFAULT_PRIORITY)),
        (Share::Auto, Some((id, mode)), name) => Err(dispatcher::not_a_dispatcher(
            ifindex,
            id,
            name.unwrap_or("?"),
            mode,
        )),
    }
}

/// A dispatcher planned with fw's slot in it, and fw's object loaded against that slot.
pub struct Joining {
    plan: Plan,
    priority: u32,
}

impl Joining {
    /// Plan fw's place at `priority` on `ifindex` (taking the place of fw's program
    /// `replace`, an upgrade), then load fw's object with its XDP program as the component.
    pub fn load(
        ifindex: u32,
        priority: u32,
        replace: Option<u32>,
        paths: &IfacePaths,
        log: bool,
        max_flows: u32,
    ) -> Result<(Joining, Ebpf), Error> {
        let variant = Variant::probe();
        let slot = Slot {
            priority,
            frags: variant == Variant::Frags,
        };
        let plan = Plan::new(ifindex, slot, replace)?;
        let how = Load {
            log,
            max_flows,
            variant,
            extension_of: Some(plan.target()?),
        };
        let ebpf =
            load_object_with(paths, how).map_err(|e| {
                match dispatcher::explain_ext_refused(&e) {
                    Some(why) => Error::Other(format!("{}: {why}", paths.iface)),
                    None => e,
                }
            })?;
        Ok((Joining { plan, priority }, ebpf))
    }

    /// Swap the new dispatcher in and pin fw's program as `prog` in fw's pin directory.
    /// Returns the mode and fw's place.
    pub fn commit(
        self,
        ebpf: &mut Ebpf,
        paths: &IfacePaths,
        mode: Mode,
        why: &mut Option<String>,
    ) -> Result<(AttachMode, MultiProg), Error> {
        let (want, fallback) = match mode {
            Mode::Auto => (XdpMode::Native, true),
            Mode::Native => (XdpMode::Native, false),
            Mode::Skb => (XdpMode::Skb, false),
        };
        let ext = extension_program(ebpf)?;
        let joined = self.plan.commit(ext, want, fallback, why)?;
        // Pin under another name first: the old `prog` pin names the old program until the
        // new one is in place (bpffs renames atomically).
        let next = paths.prog_next();
        let _ = std::fs::remove_file(&next);
        ext.pin(&next)
            .map_err(|e| Error::bpf(format!("pinning {}", next.display()), e))?;
        std::fs::rename(&next, paths.prog()).map_err(|e| Error::io(paths.prog(), e))?;
        let mode = match joined.mode {
            XdpMode::Skb => AttachMode::Skb,
            _ => AttachMode::Native,
        };
        Ok((
            mode,
            MultiProg {
                priority: self.priority,
                prog_id: joined.fw_prog_id,
            },
        ))
    }
}

/// The priority an upgrade runs fw at: the one asked for, else the one it has.
pub fn upgrade_priority(share: Share, current: &MultiProg) -> u32 {
    share.priority().unwrap_or(current.priority)
}

/// fw's program id from its `prog` pin.
fn pinned_prog_id(paths: &IfacePaths) -> Option<u32> {
    let fd = crate::dispatcher_sys::obj_get(&paths.prog()).ok()?;
    crate::dispatcher_sys::prog_info(std::os::fd::AsFd::as_fd(&fd))
        .ok()
        .map(|i| i.id)
}

/// Take fw out of the dispatcher on `iface` (the other programs keep running); nothing if fw
/// is not in one.
pub fn leave(iface: &IfaceName, paths: &IfacePaths, state: Option<&State>) -> Result<(), Error> {
    let id = state
        .and_then(|s| s.multiprog.map(|m| m.prog_id))
        .or_else(|| pinned_prog_id(paths));
    let (Some(id), Some(ifindex)) = (id, iface.index()) else {
        return Ok(());
    };
    dispatcher::leave(ifindex, id).map(|_| ())
}

/// Whether fw's program runs in the dispatcher on `iface`, as [`LinkHealth`].
pub fn health(paths: &IfacePaths, iface: &IfaceName) -> LinkHealth {
    let Some(id) = pinned_prog_id(paths) else {
        return LinkHealth::Foreign("the pin `prog` is not a program".into());
    };
    let Some(ifindex) = iface.index() else {
        return LinkHealth::Severed;
    };
    match dispatcher::find(ifindex, id) {
        Ok(Some(_)) => LinkHealth::Attached,
        Ok(None) => LinkHealth::Missing,
        Err(e) => LinkHealth::Foreign(e.to_string()),
    }
}

/// fw's place among the programs on `iface`, in words (for `fw status`).
pub fn describe(iface: &IfaceName, mp: &MultiProg) -> String {
    let place = iface.index().map(|i| dispatcher::find(i, mp.prog_id));
    match place {
        Some(Ok(Some(dispatcher::Place {
            position: pos,
            order,
            ..
        }))) => {
            let list: Vec<String> = order
                .iter()
                .enumerate()
                .map(|(i, (name, prio))| {
                    let me = if i == pos { " ← fw" } else { "" };
                    format!("{}. {name} (priority {prio}){me}", i + 1)
                })
                .collect();
            format!(
                "in a libxdp dispatcher, program {} of {} at priority {}: {}",
                pos + 1,
                order.len(),
                mp.priority,
                list.join(", ")
            )
        }
        Some(Ok(None)) => format!(
            "fw's program (id {}) is not in the dispatcher on {iface}",
            mp.prog_id
        ),
        Some(Err(e)) => format!("in a libxdp dispatcher (cannot read it: {e})"),
        None => format!("{iface} is gone"),
    }
}

/// The interface's XDP hook as fw would find it, for error messages: `None` when empty.
pub fn occupant_words(ifindex: u32) -> Option<String> {
    let lock = dispatcher::XdpLock::acquire().ok()?;
    match dispatcher::occupant(ifindex, &lock).ok()? {
        Occupant::Empty => None,
        Occupant::Dispatcher(d) => Some(format!(
            "a libxdp dispatcher (program {}) with {} programs",
            d.id,
            d.components.len()
        )),
        Occupant::Program { id, name, .. } => Some(format!("program {name:?} (id {id})")),
    }
}
