//! Loading the fw object into the kernel: its maps pinned (existing pins reused after a layout
//! check) and both programs verified, not yet attached anywhere. [`crate::attach`] attaches
//! them; the kernel tests run them with BPF_PROG_TEST_RUN.

use aya::{
    Ebpf, EbpfLoader,
    programs::{Extension, ProgramError, ProgramFd, SchedClassifier, Xdp},
};
use fw_common::maps::{
    ALL_MAPS, COOKIE_PROG_INDEX, COOKIE_TX_INDEX, MAP_COOKIE_PROG, MAP_COOKIE_PROG_EXT,
    MAP_COOKIE_PROG_LINEAR, MAP_EMBRYO, MAP_FLOWS_IN, MAP_FLOWS_OUT, MAP_PROGS, MAP_SOURCES,
    PIN_PROGS_LINEAR, PROG_COOKIE, PROG_COOKIE_LINEAR, PROG_COOKIE_TX, PROG_COOKIE_TX_LINEAR,
    PROG_EGRESS, PROG_FLOOD, PROG_FLOOD_LINEAR, PROG_XDP, PROG_XDP_LINEAR,
};
use serde::{Deserialize, Serialize};

use crate::{
    Error,
    maps::check_layout,
    paths::{IfacePaths, ensure_bpffs},
};

/// The compiled XDP object, embedded at build time by build.rs.
pub static PROGRAM: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/fw-xdp"));

/// Which build of the XDP program is loaded.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Variant {
    /// Multi-buffer aware (`xdp.frags`, BPF_F_XDP_HAS_FRAGS; Linux ≥ 5.18): native mode works
    /// with jumbo frames.
    Frags,
    /// One buffer per frame (kernels before 5.18): native mode only where a frame fits one
    /// buffer (MTU up to about 3,500 bytes on most drivers).
    Linear,
}

impl Variant {
    /// The best the running kernel supports.
    pub fn probe() -> Variant {
        if crate::probe::xdp_frags() {
            Variant::Frags
        } else {
            Variant::Linear
        }
    }

    /// The program's name in the object (and in the kernel).
    pub fn program(self) -> &'static str {
        match self {
            Variant::Frags => PROG_XDP,
            Variant::Linear => PROG_XDP_LINEAR,
        }
    }

    pub fn describe(self) -> &'static str {
        match self {
            Variant::Frags => "multi-buffer",
            Variant::Linear => "single-buffer",
        }
    }
}

/// How to load the object.
pub struct Load {
    /// aya-log drop logging (`fw run --log`).
    pub log: bool,
    /// Entries of each flow table when it is created (not when a pin is reused).
    pub max_flows: u32,
    pub variant: Variant,
    /// Load the XDP program as an freplace extension of this function of this (dispatcher)
    /// program, instead of as an XDP program of its own.
    pub extension_of: Option<(ProgramFd, String)>,
}

/// Load the object with its maps pinned under `paths` (existing pins are reused after a layout
/// check) and load the programs into the kernel, without attaching them: the XDP program in the
/// variant the kernel supports best. Flow tables are created with `max_flows` entries (when
/// they are created, not reused). `log` lets the program log drops through aya-log (`fw run
/// --log`); off in production, where the verifier then removes the logging code from the
/// per-packet path.
pub fn load_object(paths: &IfacePaths, log: bool, max_flows: u32) -> Result<Ebpf, Error> {
    load_object_with(
        paths,
        Load {
            log,
            max_flows,
            variant: Variant::probe(),
            extension_of: None,
        },
    )
}

/// [`load_object`] with every choice explicit. The XDP program of the other variant stays
/// unloaded; [`xdp_program`] / [`extension_program`] find the one loaded.
pub fn load_object_with(paths: &IfacePaths, how: Load) -> Result<Ebpf, Error> {
    if PROGRAM.is_empty() {
        return Err(Error::NoProgram);
    }
    ensure_bpffs()?;
    paths.prepare_pins()?;
    check_layout(paths)?;
    crate::obs::check_layout(paths)?;
    let mut loader = EbpfLoader::new();
    let cookie = CookieStep::of(how.variant, how.extension_of.is_some());
    let mut pin_paths: Vec<_> = ALL_MAPS
        .iter()
        .map(|m| {
            let pin = if *m == MAP_COOKIE_PROG {
                cookie.pin()
            } else {
                m
            };
            (*m, paths.map(pin))
        })
        .collect();
    pin_paths.extend(crate::obs::pin_paths(paths));
    for (name, path) in &pin_paths {
        loader.map_pin_path(name, path.as_path());
    }
    // The XDP program runs with `xdp.frags` only in the multi-buffer build loaded as an XDP
    // program: aya loads an extension without the flag.
    let frags = how.variant == Variant::Frags && how.extension_of.is_none();
    let progs_pin = paths.map(if frags { MAP_PROGS } else { PIN_PROGS_LINEAR });
    loader.map_pin_path(MAP_PROGS, progs_pin.as_path());
    loader.map_max_entries(MAP_FLOWS_OUT, how.max_flows);
    loader.map_max_entries(MAP_FLOWS_IN, how.max_flows);
    loader.map_max_entries(MAP_EMBRYO, (how.max_flows / 4).max(1024));
    loader.map_max_entries(MAP_SOURCES, (how.max_flows / 4).max(1024));
    let level: u8 = if how.log { 3 } else { 0 }; // aya-log Level::Info = 3
    loader.override_global("AYA_LOG_LEVEL", &level, false);
    let name = how.variant.program();
    let extension = how.extension_of.is_some();
    if extension {
        loader.extension(name);
    }
    let mut ebpf = loader
        .load(PROGRAM)
        .map_err(|e| Error::bpf("loading the fw XDP object", e))?;
    // The flood program first, in the program array the XDP program's verification checks.
    load_flood(&mut ebpf, frags)?;
    match how.extension_of {
        None => {
            let prog: &mut Xdp = named(&mut ebpf, name)?;
            retry_eagain(|| prog.load())
                .map_err(|e| Error::bpf("the kernel verifier refused the fw XDP program", e))?;
        }
        Some((target, func)) => {
            let ext: &mut Extension = named(&mut ebpf, name)?;
            // `Extension::load` takes the target's fd by value: hand it a duplicate per try.
            retry_eagain(|| {
                let fd = target.try_clone().map_err(ProgramError::IOError)?;
                ext.load(fd, &func)
            })
            .map_err(|e| {
                Error::bpf(
                    format!("the kernel refused fw's XDP program as an extension of {func}"),
                    e,
                )
            })?;
        }
    }
    load_cookie_programs(&mut ebpf, cookie)?;
    let tc = egress_program(&mut ebpf)?;
    retry_eagain(|| tc.load())
        .map_err(|e| Error::bpf("the kernel verifier refused the fw egress program", e))?;
    // The filter does not depend on them: without them the main program's tail call finds
    // nothing and it goes on as always. They need Linux 5.18 (bpf_xdp_load_bytes); and a
    // program array takes only programs compatible with the one calling through it (same
    // `xdp.frags`, same expected attach type), so the observers match the variant loaded, and
    // an freplace extension in a libxdp dispatcher (attach type 0) cannot call them.
    if let Err(e) = crate::obs::install_observers(&mut ebpf, how.variant) {
        let why = if extension {
            "not while fw shares the interface through a libxdp dispatcher"
        } else {
            "they need Linux 5.18"
        };
        log::warn!("the drop log and capture are unavailable ({why}): {e}");
    }
    Ok(ebpf)
}

/// The build of the SYN cookie step the loaded `fw_xdp` can tail-call. A program array takes
/// only programs compatible with the first program that used it: the same type, `xdp.frags`
/// or not, and (Linux 6.18, backported to the stable kernels) the same expected attach type
/// (`__bpf_prog_map_compatible`, kernel/bpf/core.c). So each way of loading `fw_xdp` has its
/// own pinned array, and its matching pair of programs in it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum CookieStep {
    /// `fw_xdp` (`xdp.frags`) → `fw_cookie`, `fw_cookie_tx`.
    Frags,
    /// `fw_xdp_linear` → `fw_cookie_linear`, `fw_cookie_tx_linear`.
    Linear,
    /// `fw_xdp` as an freplace extension of a libxdp dispatcher: loaded without `xdp.frags`
    /// and without an expected attach type, which no XDP program can match; its array stays
    /// empty, and `fw_xdp` keeps the policy's verdict for the packets it would hand to the step
    /// (SYN cookies off; counted as judged without the cookie program).
    Extension,
}

impl CookieStep {
    fn of(variant: Variant, extension: bool) -> Self {
        match (extension, variant) {
            (true, _) => CookieStep::Extension,
            (false, Variant::Frags) => CookieStep::Frags,
            (false, Variant::Linear) => CookieStep::Linear,
        }
    }

    /// Where its program array is pinned.
    fn pin(self) -> &'static str {
        match self {
            CookieStep::Frags => MAP_COOKIE_PROG,
            CookieStep::Linear => MAP_COOKIE_PROG_LINEAR,
            CookieStep::Extension => MAP_COOKIE_PROG_EXT,
        }
    }

    /// The programs and their indexes in the array.
    fn programs(self) -> &'static [(&'static str, u32)] {
        match self {
            CookieStep::Frags => &[
                (PROG_COOKIE, COOKIE_PROG_INDEX),
                (PROG_COOKIE_TX, COOKIE_TX_INDEX),
            ],
            CookieStep::Linear => &[
                (PROG_COOKIE_LINEAR, COOKIE_PROG_INDEX),
                (PROG_COOKIE_TX_LINEAR, COOKIE_TX_INDEX),
            ],
            CookieStep::Extension => &[],
        }
    }
}

/// Load the SYN cookie step `fw_xdp` tail-calls and the answer it tail-calls in turn, in the
/// build `step` names, and put them in their program array. The array is pinned, so a running
/// filter's `fw_xdp` tail-calls the new programs from here on (an upgrade replaces them before
/// it replaces `fw_xdp`; both versions read the same maps).
fn load_cookie_programs(ebpf: &mut Ebpf, step: CookieStep) -> Result<(), Error> {
    let mut fds = Vec::new();
    for &(name, index) in step.programs() {
        let prog: &mut Xdp = named(ebpf, name)?;
        retry_eagain(|| prog.load()).map_err(|e| {
            Error::bpf(
                format!("the kernel verifier refused the fw SYN cookie program {name}"),
                e,
            )
        })?;
        let fd = prog
            .fd()
            .map_err(|e| Error::bpf(name, e))?
            .try_clone()
            .map_err(|e| Error::io("SYN cookie program fd", e))?;
        fds.push((index, fd));
    }
    if fds.is_empty() {
        return Ok(());
    }
    let mut progs: aya::maps::ProgramArray<_> = ebpf
        .map_mut(MAP_COOKIE_PROG)
        .ok_or_else(|| Error::Other(format!("map {MAP_COOKIE_PROG} missing from the object")))?
        .try_into()
        .map_err(|e| Error::bpf(MAP_COOKIE_PROG, e))?;
    for (index, fd) in &fds {
        progs
            .set(*index, fd, 0)
            .map_err(|e| Error::bpf("putting the SYN cookie programs in their array", e))?;
    }
    Ok(())
}

/// Load the flood program (block lists, bans, limits) and put it in the program array the XDP
/// program tail-calls. The kernel takes into a program array only programs whose `xdp.frags`
/// flag (and type, JIT, expected attach type) match the array's owner — the first program
/// loaded with it or put in it (kernel/bpf/core.c, `__bpf_prog_map_compatible`) — so the build
/// loaded is the one whose flag matches the XDP program's (`frags`).
fn load_flood(ebpf: &mut Ebpf, frags: bool) -> Result<(), Error> {
    let name = if frags { PROG_FLOOD } else { PROG_FLOOD_LINEAR };
    let flood: &mut Xdp = named(ebpf, name)?;
    retry_eagain(|| flood.load())
        .map_err(|e| Error::bpf("the kernel verifier refused the fw flood program", e))?;
    let fd = flood
        .fd()
        .map_err(|e| Error::bpf(name, e))?
        .try_clone()
        .map_err(|e| Error::io(format!("{name} fd"), e))?;
    let mut progs: aya::maps::ProgramArray<_> = ebpf
        .map_mut(MAP_PROGS)
        .ok_or_else(|| Error::Other(format!("map {MAP_PROGS} missing from the object")))?
        .try_into()
        .map_err(|e| Error::bpf(MAP_PROGS, e))?;
    progs
        .set(0, &fd, 0)
        .map_err(|e| Error::bpf(format!("{MAP_PROGS}[0] = {name}"), e))
}

/// BPF_PROG_LOAD gives up with EAGAIN when a signal arrives during verification (seen with
/// several loads at once); libbpf retries, and so do we, a bounded number of times.
pub(crate) fn retry_eagain(
    mut load: impl FnMut() -> Result<(), ProgramError>,
) -> Result<(), ProgramError> {
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

/// The XDP program of a loaded object (the variant that was loaded).
pub fn xdp_program(ebpf: &mut Ebpf) -> Result<&mut Xdp, Error> {
    let name = loaded_variant(ebpf).program();
    named(ebpf, name)
}

/// The XDP program of an object loaded as an extension ([`Load::extension_of`]).
pub fn extension_program(ebpf: &mut Ebpf) -> Result<&mut Extension, Error> {
    let name = loaded_variant(ebpf).program();
    named(ebpf, name)
}

fn named<'e, P>(ebpf: &'e mut Ebpf, name: &str) -> Result<&'e mut P, Error>
where
    &'e mut P: TryFrom<&'e mut aya::programs::Program, Error = ProgramError>,
{
    ebpf.program_mut(name)
        .ok_or_else(|| Error::Other(format!("program {name} missing from the object")))?
        .try_into()
        .map_err(|e| Error::bpf(name.to_string(), e))
}

/// The variant a loaded object runs (the other stays unloaded in the object).
pub fn loaded_variant(ebpf: &Ebpf) -> Variant {
    if ebpf.program(PROG_XDP).is_some_and(|p| p.fd().is_ok()) {
        Variant::Frags
    } else {
        Variant::Linear
    }
}

/// The TC egress program of a loaded object.
pub fn egress_program(ebpf: &mut Ebpf) -> Result<&mut SchedClassifier, Error> {
    ebpf.program_mut(PROG_EGRESS)
        .ok_or_else(|| Error::Other(format!("program {PROG_EGRESS} missing from the object")))?
        .try_into()
        .map_err(|e| Error::bpf(PROG_EGRESS, e))
}
