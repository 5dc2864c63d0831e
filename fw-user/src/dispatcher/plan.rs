//! Changing what runs in a dispatcher: fw joins (or is upgraded, or moves to another priority)
//! by building a new dispatcher and swapping it in; fw leaves the same way, or removes the
//! dispatcher when it was the only program.

use std::{
    os::fd::{AsFd as _, AsRawFd as _},
    path::Path,
};

use aya::{
    Ebpf,
    programs::{Extension, ProgramFd, Xdp, links::FdLink},
};

use super::{
    Component, DISPATCHER_NAME, Dispatcher, MAX_PROGS, Occupant, XDP_PASS, XdpLock, config_of,
    dispatcher_prog, load_dispatcher, not_a_dispatcher, occupant, remove_pins, xdp_dir,
};
use crate::{
    Error, dispatcher_sys as sys,
    xdp_netlink::{self as nl, XdpMode},
};

/// fw's place in a dispatcher.
#[derive(Clone, Copy, Debug)]
pub struct Slot {
    pub priority: u32,
    /// Whether fw's program handles multi-buffer frames.
    pub frags: bool,
}

/// A new dispatcher, loaded, waiting for fw's program to be loaded against its slot and for
/// [`Plan::commit`].
pub struct Plan {
    lock: XdpLock,
    ifindex: u32,
    old: Option<Dispatcher>,
    /// In run order; fw's entry has no pin.
    order: Vec<Component>,
    fw_slot: usize,
    dispatcher: Ebpf,
}

/// What [`Plan::commit`] did.
#[derive(Debug)]
pub struct Joined {
    pub mode: XdpMode,
    pub dispatcher_id: u32,
    pub fw_prog_id: u32,
    /// Every component in run order: (name, priority).
    pub order: Vec<(String, u32)>,
}

impl Plan {
    /// Plan fw's place on `ifindex` at `slot`, replacing fw's program `replace` (an
    /// upgrade) if it is there.
    pub fn new(ifindex: u32, slot: Slot, replace: Option<u32>) -> Result<Plan, Error> {
        let lock = XdpLock::acquire()?;
        let old = match occupant(ifindex, &lock)? {
            Occupant::Empty => None,
            Occupant::Dispatcher(d) => Some(d),
            Occupant::Program { id, name, mode } => {
                return Err(not_a_dispatcher(ifindex, id, &name, mode));
            }
        };
        let mut order: Vec<Component> = Vec::new();
        if let Some(d) = &old {
            for c in &d.components {
                if Some(c.prog_id) == replace {
                    continue;
                }
                order.push(Component {
                    prog_id: c.prog_id,
                    name: c.name.clone(),
                    priority: c.priority,
                    chain: c.chain,
                    frags: c.frags,
                    pin: c.pin.clone(),
                });
            }
        }
        if order.len() >= MAX_PROGS {
            return Err(Error::Other(format!(
                "the libxdp dispatcher on interface {ifindex} already runs {MAX_PROGS} programs, its maximum"
            )));
        }
        order.push(Component {
            prog_id: 0,
            name: fw_common::maps::PROG_XDP.into(),
            priority: slot.priority,
            chain: 1 << XDP_PASS,
            frags: slot.frags,
            pin: None,
        });
        order.sort_by(|a, b| {
            (a.priority, &a.name, a.pin.is_none(), a.prog_id).cmp(&(
                b.priority,
                &b.name,
                b.pin.is_none(),
                b.prog_id,
            ))
        });
        let fw_slot = order
            .iter()
            .position(|c| c.pin.is_none())
            .expect("fw is in the order");
        let dispatcher = load_dispatcher(&config_of(&order))?;
        Ok(Plan {
            lock,
            ifindex,
            old,
            order,
            fw_slot,
            dispatcher,
        })
    }

    /// The function fw's program replaces: load it as an extension of this.
    pub fn target(&self) -> Result<(ProgramFd, String), Error> {
        let prog: &Xdp = self
            .dispatcher
            .program(DISPATCHER_NAME)
            .ok_or_else(|| Error::Other(format!("{DISPATCHER_NAME} missing")))?
            .try_into()
            .map_err(|e| Error::bpf(DISPATCHER_NAME, e))?;
        let fd = prog
            .fd()
            .and_then(|fd| fd.try_clone().map_err(Into::into))
            .map_err(|e| Error::bpf("the new dispatcher's fd", e))?;
        Ok((fd, format!("prog{}", self.fw_slot)))
    }

    /// Whether the interface has no dispatcher yet (this plan creates the first).
    pub fn creates(&self) -> bool {
        self.old.is_none()
    }

    /// Attach every component to the new dispatcher, pin them, swap the dispatcher onto the
    /// interface, remove the old one's pins. `fw` is fw's program, loaded against
    /// [`Plan::target`]. `mode` is used for a first dispatcher (a new one keeps the old one's);
    /// with `fallback`, generic mode is tried when native fails, and `why` says why.
    pub fn commit(
        self,
        fw: &mut Extension,
        mode: XdpMode,
        fallback: bool,
        why: &mut Option<String>,
    ) -> Result<Joined, Error> {
        let Plan {
            lock,
            ifindex,
            old,
            order,
            fw_slot,
            mut dispatcher,
        } = self;
        let prog = dispatcher_prog(&mut dispatcher)?;
        let target = prog
            .fd()
            .map_err(|e| Error::bpf("the new dispatcher's fd", e))?;
        let new_id = prog
            .info()
            .map_err(|e| Error::bpf("the new dispatcher", e))?
            .id();
        let dir = xdp_dir().join(format!("dispatch-{ifindex}-{new_id}"));
        let mut links = Vec::new();
        let mut fw_prog_id = 0;
        for (slot, c) in order.iter().enumerate() {
            let func = format!("prog{slot}");
            let link: FdLink = if slot == fw_slot {
                let id = fw.attach().map_err(|e| {
                    Error::bpf(format!("attaching fw to the dispatcher's {func}"), e)
                })?;
                fw_prog_id = fw.info().map_err(|e| Error::bpf("fw's extension", e))?.id();
                fw.take_link(id)
                    .map_err(|e| Error::bpf("fw's dispatcher link", e))?
                    .into()
            } else {
                let pin = c.pin.as_ref().expect("other components are pinned");
                let mut ext = Extension::from_pin(pin)
                    .map_err(|e| Error::bpf(format!("{}", pin.display()), e))?;
                let id = ext.attach_to_program(target, &func).map_err(|e| {
                    Error::bpf(
                        format!(
                            "attaching {} (program {}) to the new dispatcher's {func}",
                            c.name, c.prog_id
                        ),
                        e,
                    )
                })?;
                ext.take_link(id)
                    .map_err(|e| Error::bpf("a dispatcher link", e))?
                    .into()
            };
            links.push(link);
        }
        pin_all(&dir, &order, links, fw)?;
        let swapped = swap(ifindex, target, old.as_ref(), mode, fallback, why);
        let mode = match swapped {
            Ok(m) => m,
            Err(e) => {
                let _ = remove_pins(&dir);
                return Err(e);
            }
        };
        if let Some(o) = &old {
            remove_pins(&o.dir)?;
        }
        drop(lock);
        Ok(Joined {
            mode,
            dispatcher_id: new_id,
            fw_prog_id,
            order: order.iter().map(|c| (c.name.clone(), c.priority)).collect(),
        })
    }
}

/// Pin each component's link and program in `dir` (made here, 0700).
fn pin_all(
    dir: &Path,
    order: &[Component],
    links: Vec<FdLink>,
    fw: &mut Extension,
) -> Result<(), Error> {
    use std::os::unix::fs::DirBuilderExt as _;
    std::fs::DirBuilder::new()
        .mode(0o700)
        .create(dir)
        .map_err(|e| Error::io(dir, e))?;
    let r = (|| {
        for (slot, (c, link)) in order.iter().zip(links).enumerate() {
            let lp = dir.join(format!("prog{slot}-link"));
            link.pin(&lp)
                .map_err(|e| Error::bpf(format!("pinning {}", lp.display()), e))?;
            let pp = dir.join(format!("prog{slot}-prog"));
            match &c.pin {
                Some(from) => {
                    let fd = sys::obj_get(from).map_err(|e| Error::io(from, e))?;
                    sys::obj_pin(fd.as_fd(), &pp).map_err(|e| Error::io(&pp, e))?;
                }
                None => {
                    let fd = fw.fd().map_err(|e| Error::bpf("fw's extension", e))?;
                    sys::obj_pin(fd.as_fd(), &pp).map_err(|e| Error::io(&pp, e))?;
                }
            }
        }
        Ok(())
    })();
    if r.is_err() {
        let _ = remove_pins(dir);
    }
    r
}

/// Put `new` on the interface in place of `old` (or where nothing is).
fn swap(
    ifindex: u32,
    new: &aya::programs::ProgramFd,
    old: Option<&Dispatcher>,
    mode: XdpMode,
    fallback: bool,
    why: &mut Option<String>,
) -> Result<XdpMode, Error> {
    let fd = Some(new.as_fd().as_raw_fd());
    if let Some(o) = old {
        nl::set(ifindex, fd, Some(o.fd.as_raw_fd()), o.mode).map_err(|e| {
            Error::Other(format!(
                "replacing the libxdp dispatcher (program {}) on interface {ifindex}: {e}{}",
                o.id,
                if e.raw_os_error() == Some(libc::EEXIST) {
                    " (another tool changed it meanwhile; run the command again)"
                } else {
                    ""
                }
            ))
        })?;
        return Ok(o.mode);
    }
    match nl::set(ifindex, fd, None, mode) {
        Ok(()) => Ok(mode),
        Err(e) if fallback && mode == XdpMode::Native && !busy(&e) => {
            *why = Some(format!(
                "the libxdp dispatcher could not attach in native mode ({e}); fw loads it without multi-buffer support, so jumbo-frame MTUs need generic mode"
            ));
            nl::set(ifindex, fd, None, XdpMode::Skb)
                .map(|()| XdpMode::Skb)
                .map_err(|e| {
                    Error::io(
                        format!("attaching the dispatcher to interface {ifindex}"),
                        e,
                    )
                })
        }
        Err(e) => Err(Error::io(
            format!("attaching the dispatcher to interface {ifindex}"),
            e,
        )),
    }
}

fn busy(e: &std::io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::EBUSY | libc::EEXIST))
}

/// Take fw's program `fw_prog` out of the dispatcher on `ifindex`: the others keep running
/// (in a new dispatcher), or, if fw was the only one, the dispatcher is removed. `Ok(false)`:
/// fw's program was not there.
pub fn leave(ifindex: u32, fw_prog: u32) -> Result<bool, Error> {
    let lock = XdpLock::acquire()?;
    let Occupant::Dispatcher(old) = occupant(ifindex, &lock)? else {
        return Ok(false);
    };
    if !old.components.iter().any(|c| c.prog_id == fw_prog) {
        return Ok(false);
    }
    let order: Vec<Component> = old
        .components
        .iter()
        .filter(|c| c.prog_id != fw_prog)
        .map(|c| Component {
            prog_id: c.prog_id,
            name: c.name.clone(),
            priority: c.priority,
            chain: c.chain,
            frags: c.frags,
            pin: c.pin.clone(),
        })
        .collect();
    if order.is_empty() {
        nl::set(ifindex, None, Some(old.fd.as_raw_fd()), old.mode).map_err(|e| {
            Error::io(
                format!("removing the dispatcher from interface {ifindex}"),
                e,
            )
        })?;
        remove_pins(&old.dir)?;
        return Ok(true);
    }
    let mut dispatcher = load_dispatcher(&config_of(&order))?;
    let prog = dispatcher_prog(&mut dispatcher)?;
    let target = prog
        .fd()
        .map_err(|e| Error::bpf("the new dispatcher's fd", e))?;
    let new_id = prog
        .info()
        .map_err(|e| Error::bpf("the new dispatcher", e))?
        .id();
    let dir = xdp_dir().join(format!("dispatch-{ifindex}-{new_id}"));
    let mut links = Vec::new();
    for (slot, c) in order.iter().enumerate() {
        let pin = c.pin.as_ref().expect("components are pinned");
        let mut ext =
            Extension::from_pin(pin).map_err(|e| Error::bpf(format!("{}", pin.display()), e))?;
        let id = ext
            .attach_to_program(target, &format!("prog{slot}"))
            .map_err(|e| Error::bpf(format!("re-attaching {}", c.name), e))?;
        links.push(FdLink::from(
            ext.take_link(id)
                .map_err(|e| Error::bpf("a dispatcher link", e))?,
        ));
    }
    pin_foreign(&dir, &order, links)?;
    if let Err(e) = nl::set(
        ifindex,
        Some(target.as_fd().as_raw_fd()),
        Some(old.fd.as_raw_fd()),
        old.mode,
    ) {
        let _ = remove_pins(&dir);
        return Err(Error::io(
            format!("replacing the dispatcher on interface {ifindex}"),
            e,
        ));
    }
    remove_pins(&old.dir)?;
    drop(lock);
    Ok(true)
}

/// After interface `ifindex` was deleted under a dispatcher that ran fw's program `fw_prog`,
/// its pins are all that keep that dispatcher's links: remove the directories of such
/// dispatchers that are no longer attached to `ifindex` (only those with fw's program in
/// them: the directory is shared by every network namespace, whose ifindexes overlap).
pub fn forget_stale(ifindex: u32, fw_prog: u32) -> Result<(), Error> {
    let _lock = XdpLock::acquire()?;
    let attached = nl::query(ifindex).ok().flatten().map(|(id, _)| id);
    let prefix = format!("dispatch-{ifindex}-");
    let dir = xdp_dir();
    let Ok(rd) = std::fs::read_dir(&dir) else {
        return Ok(());
    };
    for e in rd.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let Some(id) = name
            .strip_prefix(&prefix)
            .and_then(|d| d.parse::<u32>().ok())
        else {
            continue;
        };
        if Some(id) == attached {
            continue;
        }
        let has_fw = (0..MAX_PROGS).any(|slot| {
            sys::obj_get(&e.path().join(format!("prog{slot}-prog")))
                .ok()
                .and_then(|fd| sys::prog_info(fd.as_fd()).ok())
                .is_some_and(|p| p.id == fw_prog)
        });
        if has_fw {
            remove_pins(&e.path())?;
        }
    }
    Ok(())
}

fn pin_foreign(dir: &Path, order: &[Component], links: Vec<FdLink>) -> Result<(), Error> {
    use std::os::unix::fs::DirBuilderExt as _;
    std::fs::DirBuilder::new()
        .mode(0o700)
        .create(dir)
        .map_err(|e| Error::io(dir, e))?;
    for (slot, (c, link)) in order.iter().zip(links).enumerate() {
        let lp = dir.join(format!("prog{slot}-link"));
        link.pin(&lp)
            .map_err(|e| Error::bpf(format!("pinning {}", lp.display()), e))?;
        let from = c.pin.as_ref().expect("components are pinned");
        let fd = sys::obj_get(from).map_err(|e| Error::io(from, e))?;
        let pp = dir.join(format!("prog{slot}-prog"));
        sys::obj_pin(fd.as_fd(), &pp).map_err(|e| Error::io(&pp, e))?;
    }
    Ok(())
}

/// fw's place in the dispatcher on an interface.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Place {
    /// fw's position in `order`.
    pub position: usize,
    /// Every component, in run order: (name, priority).
    pub order: Vec<(String, u32)>,
    pub mode: XdpMode,
}

/// Whether fw's program `fw_prog` runs in the dispatcher on `ifindex`, and where (for `fw
/// status`).
pub fn find(ifindex: u32, fw_prog: u32) -> Result<Option<Place>, Error> {
    let lock = XdpLock::acquire()?;
    let Occupant::Dispatcher(d) = occupant(ifindex, &lock)? else {
        return Ok(None);
    };
    let order = d
        .components
        .iter()
        .map(|c| (c.name.clone(), c.priority))
        .collect();
    Ok(d.components
        .iter()
        .position(|c| c.prog_id == fw_prog)
        .map(|position| Place {
            position,
            order,
            mode: d.mode,
        }))
}
