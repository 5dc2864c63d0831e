//! Loading, attaching, replacing and removing the XDP program.
//!
//! Attachment is a bpf_link pinned next to the maps, so the filter outlives `fw`. A second
//! `fw up` fills the inactive policy generation, swaps the program on the same link
//! (bpf_link_update: no moment without a filter) and flips the generation.

use std::{ffi::CString, fs};

use aya::{
    Ebpf, EbpfLoader,
    programs::{
        LinkOrder, ProgramError, SchedClassifier, TcAttachType, Xdp, XdpMode,
        links::{FdLink, LinkError, PinnedLink},
        tc::{SchedClassifierLink, TcAttachOptions},
        xdp::{XdpLink, XdpLinkId},
    },
};
use fw_common::maps::{
    ALL_MAPS, MAP_EMBRYO, MAP_FLOWS_IN, MAP_FLOWS_OUT, MAP_SOURCES, PROG_EGRESS, PROG_XDP,
    rule_slot,
};

use crate::{
    Error,
    pinned::{PinnedMaps, check_layout},
    pins::{IfacePaths, ensure_bpffs},
    state::{Lock, State},
};
use fw_policy::Compiled;
use fw_policy::Policy;

/// The compiled XDP object, embedded at build time by build.rs.
pub static PROGRAM: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/fw-xdp"));

/// How to attach to the interface.
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

#[derive(Debug)]
pub struct UpReport {
    pub iface: String,
    /// An existing filter was replaced (its maps and link kept).
    pub replaced: bool,
    pub mode: String,
    pub generation: u32,
}

pub struct Up<'a> {
    pub iface: &'a str,
    pub mode: Mode,
    pub policy: &'a Policy,
    /// Where the policy came from, for `fw status`.
    pub source: &'a str,
    /// Let the program log drops through aya-log (`fw run --log`); off in production: the
    /// verifier then removes the logging code from the per-packet path.
    pub log: bool,
}

/// Check that `iface` is something fw may attach to, and return its index.
pub fn check_iface(iface: &str) -> Result<u32, Error> {
    if iface == "lo" {
        return Err(Error::Loopback);
    }
    let c = CString::new(iface).map_err(|_| Error::NoSuchInterface(iface.to_string()))?;
    // SAFETY: valid C string.
    let idx = unsafe { libc::if_nametoindex(c.as_ptr()) };
    if idx == 0 {
        return Err(Error::NoSuchInterface(iface.to_string()));
    }
    let flags = fs::read_to_string(format!("/sys/class/net/{iface}/flags")).unwrap_or_default();
    if u32::from_str_radix(flags.trim().trim_start_matches("0x"), 16)
        .is_ok_and(|f| f & libc::IFF_LOOPBACK as u32 != 0)
    {
        return Err(Error::Loopback);
    }
    Ok(idx)
}

fn rule_slots(policy: &Policy, generation: u32) -> Vec<u32> {
    policy
        .rules
        .iter()
        .map(|r| rule_slot(generation, r.id))
        .collect()
}

/// Load the object with its maps pinned under `paths` (existing pins are reused after a layout
/// check) and load the program into the kernel, without attaching it anywhere (tests run it with
/// BPF_PROG_TEST_RUN).
pub fn load_object(paths: &IfacePaths, log: bool) -> Result<Ebpf, Error> {
    load_object_sized(paths, log, fw_common::maps::FLOWS_OUT_MAX)
}

/// [`load_object`] with flow tables of `max_flows` entries (when they are created, not reused).
pub fn load_object_sized(paths: &IfacePaths, log: bool, max_flows: u32) -> Result<Ebpf, Error> {
    if PROGRAM.is_empty() {
        return Err(Error::NoProgram);
    }
    ensure_bpffs()?;
    fs::create_dir_all(&paths.pins).map_err(|e| Error::io(&paths.pins, e))?;
    check_layout(paths)?;
    let mut loader = EbpfLoader::new();
    let pin_paths: Vec<_> = ALL_MAPS.iter().map(|m| (*m, paths.map(m))).collect();
    for (name, path) in &pin_paths {
        loader.map_pin_path(name, path.as_path());
    }
    loader.map_max_entries(MAP_FLOWS_OUT, max_flows);
    loader.map_max_entries(MAP_FLOWS_IN, max_flows);
    loader.map_max_entries(MAP_EMBRYO, (max_flows / 4).max(1024));
    loader.map_max_entries(MAP_SOURCES, (max_flows / 4).max(1024));
    let level: u8 = if log { 3 } else { 0 }; // aya-log Level::Info = 3
    loader.override_global("AYA_LOG_LEVEL", &level, false);
    let mut ebpf = loader
        .load(PROGRAM)
        .map_err(|e| Error::bpf("loading the fw XDP object", e))?;
    let prog: &mut Xdp = program(&mut ebpf)?;
    retry_eagain(|| prog.load())
        .map_err(|e| Error::bpf("the kernel verifier refused the fw XDP program", e))?;
    let tc = egress_program(&mut ebpf)?;
    retry_eagain(|| tc.load())
        .map_err(|e| Error::bpf("the kernel verifier refused the fw egress program", e))?;
    Ok(ebpf)
}

/// BPF_PROG_LOAD gives up with EAGAIN when a signal arrives during verification (seen with
/// several loads at once); libbpf retries, and so do we, a bounded number of times.
fn retry_eagain(mut load: impl FnMut() -> Result<(), ProgramError>) -> Result<(), ProgramError> {
    let mut attempt = 0;
    loop {
        match load() {
            Err(ProgramError::LoadError { io_error, .. })
                if io_error.raw_os_error() == Some(libc::EAGAIN) && attempt < 5 =>
            {
                attempt += 1;
                std::thread::sleep(std::time::Duration::from_millis(20 * attempt));
            }
            other => return other,
        }
    }
}

/// The TC egress program of a loaded object.
pub fn egress_program(ebpf: &mut Ebpf) -> Result<&mut SchedClassifier, Error> {
    ebpf.program_mut(PROG_EGRESS)
        .ok_or_else(|| Error::Other(format!("program {PROG_EGRESS} missing from the object")))?
        .try_into()
        .map_err(|e| Error::bpf(PROG_EGRESS, e))
}

/// Attach the egress recorder with TCX (no qdisc needed) and pin its link.
fn attach_egress(ebpf: &mut Ebpf, paths: &IfacePaths) -> Result<(), Error> {
    let tc = egress_program(ebpf)?;
    let id = tc
        .attach_with_options(
            &paths.iface,
            TcAttachType::Egress,
            TcAttachOptions::TcxOrder(LinkOrder::default()),
        )
        .map_err(|e| {
            Error::bpf(
                format!("attaching the egress recorder to {}", paths.iface),
                e,
            )
        })?;
    let link = tc
        .take_link(id)
        .map_err(|e| Error::bpf("taking the TC link", e))?;
    let fd = FdLink::try_from(link).map_err(|e| {
        Error::bpf(
            format!(
                "{}: TC attached without a bpf_link (kernel older than 6.6?)",
                paths.iface
            ),
            e,
        )
    })?;
    fd.pin(paths.tc_link())
        .map_err(|e| Error::bpf(format!("pinning {}", paths.tc_link().display()), e))?;
    Ok(())
}

/// Swap the program on the pinned egress link (or attach one if there is none yet).
fn replace_egress(ebpf: &mut Ebpf, paths: &IfacePaths) -> Result<(), Error> {
    if !paths.tc_link().exists() {
        return attach_egress(ebpf, paths);
    }
    let pinned = PinnedLink::from_pin(paths.tc_link())
        .map_err(|e| Error::bpf(format!("{}", paths.tc_link().display()), e))?;
    let link = SchedClassifierLink::try_from(FdLink::from(pinned))
        .map_err(|e| Error::bpf("the pinned egress link is not TC", e))?;
    let tc = egress_program(ebpf)?;
    let id = tc
        .attach_to_link(link)
        .map_err(|e| Error::bpf("replacing the egress program", e))?;
    drop(tc.take_link(id).map_err(|e| Error::bpf("TC link", e))?);
    Ok(())
}

/// Enter the sockets that exist now into the flow tables (entries already there are kept), so
/// loading the filter does not cut them. Returns how many were added.
pub fn seed_flows(maps: &mut PinnedMaps) -> Result<usize, Error> {
    let now = crate::sys::monotonic_coarse_ns();
    let mut n = 0;
    for (table, key, st) in crate::seed::entries(&crate::seed::current_sockets(), now) {
        if maps.flow(table, &key)?.is_none() {
            maps.flow_insert(table, &key, &st)?;
            n += 1;
        }
    }
    Ok(n)
}

/// The XDP program of a loaded object.
pub fn program(ebpf: &mut Ebpf) -> Result<&mut Xdp, Error> {
    ebpf.program_mut(PROG_XDP)
        .ok_or_else(|| Error::Other(format!("program {PROG_XDP} missing from the object")))?
        .try_into()
        .map_err(|e| Error::bpf(PROG_XDP, e))
}

/// Attach or replace. Returns the loaded object too (for `fw run`, which streams its logs).
pub fn up(opts: &Up<'_>) -> Result<(UpReport, Ebpf), Error> {
    check_iface(opts.iface)?;
    let paths = IfacePaths::new(opts.iface)?;
    let _lock = Lock::acquire(&paths)?;
    if paths.is_attached() {
        match replace(&paths, opts) {
            Err(Error::Bpf { context, source }) if context == "severed" => {
                log::warn!(
                    "{}: the pinned link no longer has its device ({source}); attaching afresh",
                    opts.iface
                );
                paths.remove_all()?;
            }
            other => return other,
        }
    }
    fresh(&paths, opts)
}

fn fresh(paths: &IfacePaths, opts: &Up<'_>) -> Result<(UpReport, Ebpf), Error> {
    // No link: any maps here are leftovers of an interrupted run, and nothing reads them.
    if paths.pins.exists() {
        paths.remove_all()?;
    }
    let result = (|| {
        let mut ebpf = load_object_sized(paths, opts.log, opts.policy.options.max_flows)?;
        let mut maps = PinnedMaps::open(paths)?;
        let compiled = Compiled::new(opts.policy, 0);
        maps.write_generation(&compiled, &rule_slots(opts.policy, 0))?;
        maps.set_active(0)?;
        // Order matters for connections that exist or start meanwhile: the egress recorder
        // first (flows opened from now on get recorded), then the sockets that exist, then the
        // filter, then the sockets once more for those that completed in between.
        attach_egress(&mut ebpf, paths)?;
        seed_flows(&mut maps)?;
        let prog = program(&mut ebpf)?;
        let (id, mode) = attach(prog, opts.iface, opts.mode)?;
        let link = prog
            .take_link(id)
            .map_err(|e| Error::bpf("taking the XDP link", e))?;
        let fd_link = match FdLink::try_from(link) {
            Ok(l) => l,
            Err(LinkError::InvalidLink) => {
                // aya fell back to a netlink attachment, which cannot be pinned or replaced
                // atomically: undo it rather than leave an unmanaged program behind.
                let _ = std::process::Command::new("ip")
                    .args(["link", "set", "dev", opts.iface, "xdp", "off"])
                    .status();
                return Err(Error::NetlinkOnly {
                    iface: opts.iface.to_string(),
                });
            }
            Err(e) => return Err(Error::bpf("XDP link", e)),
        };
        fd_link
            .pin(paths.link())
            .map_err(|e| Error::bpf(format!("pinning {}", paths.link().display()), e))?;
        seed_flows(&mut maps)?;
        State {
            iface: opts.iface.to_string(),
            mode: mode.to_string(),
            generation: 0,
            flushed: false,
            policy: opts.policy.clone(),
            source: opts.source.to_string(),
            previous: None,
            pending: None,
        }
        .save(paths)?;
        Ok((
            UpReport {
                iface: opts.iface.to_string(),
                replaced: false,
                mode: mode.to_string(),
                generation: 0,
            },
            ebpf,
        ))
    })();
    if result.is_err() {
        let _ = paths.remove_all();
    }
    result
}

fn attach(prog: &mut Xdp, iface: &str, mode: Mode) -> Result<(XdpLinkId, &'static str), Error> {
    let try_mode = |prog: &mut Xdp, m: XdpMode| prog.attach(iface, m);
    let busy = |e: &ProgramError| {
        matches!(e, ProgramError::SyscallError(s)
            if s.io_error.raw_os_error() == Some(libc::EBUSY)
            || s.io_error.raw_os_error() == Some(libc::EEXIST))
    };
    let to_err = |e: ProgramError, what: &str| {
        if busy(&e) {
            Error::Busy {
                iface: iface.to_string(),
                detail: e.to_string(),
            }
        } else {
            Error::bpf(format!("attaching to {iface} in {what} mode"), e)
        }
    };
    match mode {
        Mode::Native => try_mode(prog, XdpMode::Driver)
            .map(|id| (id, "native"))
            .map_err(|e| to_err(e, "native")),
        Mode::Skb => try_mode(prog, XdpMode::Skb)
            .map(|id| (id, "skb"))
            .map_err(|e| to_err(e, "skb")),
        Mode::Auto => match try_mode(prog, XdpMode::Driver) {
            Ok(id) => Ok((id, "native")),
            Err(e) if busy(&e) => Err(to_err(e, "native")),
            Err(e) => {
                log::warn!("{iface}: native XDP not available ({e}); using generic (skb) mode");
                try_mode(prog, XdpMode::Skb)
                    .map(|id| (id, "skb"))
                    .map_err(|e| to_err(e, "skb"))
            }
        },
    }
}

fn replace(paths: &IfacePaths, opts: &Up<'_>) -> Result<(UpReport, Ebpf), Error> {
    let old = State::load(paths).ok();
    let mut ebpf = load_object_sized(paths, opts.log, opts.policy.options.max_flows)?;
    let mut maps = PinnedMaps::open(paths)?;
    let next = 1 - maps.active_generation()?;
    let compiled = Compiled::new(opts.policy, next);
    maps.write_generation(&compiled, &rule_slots(opts.policy, next))?;
    // A stateless policy may be replaced by a stateful one: know today's sockets first.
    replace_egress(&mut ebpf, paths)?;
    seed_flows(&mut maps)?;

    let pinned = PinnedLink::from_pin(paths.link())
        .map_err(|e| Error::bpf(format!("{}", paths.link().display()), e))?;
    let fd: FdLink = pinned.into();
    let link = XdpLink::try_from(fd).map_err(|e| Error::bpf("the pinned link is not XDP", e))?;
    let prog = program(&mut ebpf)?;
    match prog.attach_to_link(link) {
        Ok(id) => {
            // The pin keeps the link alive; dropping our handle only closes an fd.
            drop(prog.take_link(id).map_err(|e| Error::bpf("XDP link", e))?);
        }
        Err(ProgramError::SyscallError(s)) if s.io_error.raw_os_error() == Some(libc::ENOLINK) => {
            return Err(Error::bpf("severed", s.io_error));
        }
        Err(e) => return Err(Error::bpf("replacing the program on the pinned link", e)),
    }
    maps.set_active(next)?;
    let mode = old
        .as_ref()
        .map(|s| s.mode.clone())
        .unwrap_or_else(|| "unknown".into());
    State {
        iface: opts.iface.to_string(),
        mode: mode.clone(),
        generation: next,
        flushed: false,
        policy: opts.policy.clone(),
        source: opts.source.to_string(),
        previous: old.as_ref().map(|o| crate::state::Previous {
            policy: o.policy.clone(),
            source: o.source.clone(),
            flushed: o.flushed,
        }),
        pending: None,
    }
    .save(paths)?;
    Ok((
        UpReport {
            iface: opts.iface.to_string(),
            replaced: true,
            mode,
            generation: next,
        },
        ebpf,
    ))
}

/// Detach and remove every pin and the state of `iface`.
pub fn down(iface: &str) -> Result<(), Error> {
    let paths = IfacePaths::new(iface)?;
    if !paths.pins.exists() && !paths.state.exists() {
        return Err(Error::NotAttached(iface.to_string()));
    }
    let _lock = Lock::acquire(&paths)?;
    // Removing the link pin drops the last reference: the kernel detaches the program.
    paths.remove_all()
}
