//! Loading the fw object into the kernel: its maps pinned (existing pins reused after a layout
//! check) and both programs verified, not yet attached anywhere. [`crate::attach`] attaches
//! them; the kernel tests run them with BPF_PROG_TEST_RUN.

use aya::{
    Ebpf, EbpfLoader,
    programs::{ProgramError, SchedClassifier, Xdp},
};
use fw_common::maps::{
    ALL_MAPS, MAP_EMBRYO, MAP_FLOWS_IN, MAP_FLOWS_OUT, MAP_PROGS, PROG_EGRESS, PROG_FLOOD, PROG_XDP,
};

use crate::{
    Error,
    maps::check_layout,
    paths::{IfacePaths, ensure_bpffs},
};

/// The compiled XDP object, embedded at build time by build.rs.
pub static PROGRAM: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/fw-xdp"));

/// Load the object with its maps pinned under `paths` (existing pins are reused after a layout
/// check) and load the programs into the kernel, without attaching them. Flow tables are
/// created with `max_flows` entries (when they are created, not reused). `log` lets the program
/// log drops through aya-log (`fw run --log`); off in production, where the verifier then
/// removes the logging code from the per-packet path.
pub fn load_object(paths: &IfacePaths, log: bool, max_flows: u32) -> Result<Ebpf, Error> {
    if PROGRAM.is_empty() {
        return Err(Error::NoProgram);
    }
    ensure_bpffs()?;
    paths.prepare_pins()?;
    check_layout(paths)?;
    let mut loader = EbpfLoader::new();
    let pin_paths: Vec<_> = ALL_MAPS.iter().map(|m| (*m, paths.map(m))).collect();
    for (name, path) in &pin_paths {
        loader.map_pin_path(name, path.as_path());
    }
    loader.map_max_entries(MAP_FLOWS_OUT, max_flows);
    loader.map_max_entries(MAP_FLOWS_IN, max_flows);
    loader.map_max_entries(MAP_EMBRYO, (max_flows / 4).max(1024));
    let level: u8 = if log { 3 } else { 0 }; // aya-log Level::Info = 3
    loader.override_global("AYA_LOG_LEVEL", &level, false);
    let mut ebpf = loader
        .load(PROGRAM)
        .map_err(|e| Error::bpf("loading the fw XDP object", e))?;
    let flood: &mut Xdp = ebpf
        .program_mut(PROG_FLOOD)
        .ok_or_else(|| Error::Other(format!("program {PROG_FLOOD} missing from the object")))?
        .try_into()
        .map_err(|e| Error::bpf(PROG_FLOOD, e))?;
    retry_eagain(|| flood.load())
        .map_err(|e| Error::bpf("the kernel verifier refused the fw flood program", e))?;
    let flood_fd = flood
        .fd()
        .map_err(|e| Error::bpf(PROG_FLOOD, e))?
        .try_clone()
        .map_err(|e| Error::io("fw_flood fd", e))?;
    let mut progs: aya::maps::ProgramArray<_> = ebpf
        .map_mut(MAP_PROGS)
        .ok_or_else(|| Error::Other(format!("map {MAP_PROGS} missing from the object")))?
        .try_into()
        .map_err(|e| Error::bpf(MAP_PROGS, e))?;
    progs
        .set(0, &flood_fd, 0)
        .map_err(|e| Error::bpf("FW_PROGS[0] = fw_flood", e))?;
    let prog = xdp_program(&mut ebpf)?;
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

/// The XDP program of a loaded object.
pub fn xdp_program(ebpf: &mut Ebpf) -> Result<&mut Xdp, Error> {
    ebpf.program_mut(PROG_XDP)
        .ok_or_else(|| Error::Other(format!("program {PROG_XDP} missing from the object")))?
        .try_into()
        .map_err(|e| Error::bpf(PROG_XDP, e))
}

/// The TC egress program of a loaded object.
pub fn egress_program(ebpf: &mut Ebpf) -> Result<&mut SchedClassifier, Error> {
    ebpf.program_mut(PROG_EGRESS)
        .ok_or_else(|| Error::Other(format!("program {PROG_EGRESS} missing from the object")))?
        .try_into()
        .map_err(|e| Error::bpf(PROG_EGRESS, e))
}
