//! The little system plumbing the benchmark needs and neither aya nor the lab (`fw-lab`:
//! namespaces, commands, CPU pinning, interface counters, GRO, Ctrl-C) gives: BPF_PROG_TEST_RUN
//! by fd (every program — fw, the floor, xdp-filter — is run through this one call, so they pay
//! the same overhead), program fds by id, memlock of a map, and the machine's CPU time.

use std::os::fd::{FromRawFd as _, OwnedFd, RawFd};

use anyhow::Context as _;

const BPF_PROG_TEST_RUN: libc::c_long = 10;
const BPF_PROG_GET_FD_BY_ID: libc::c_long = 13;
pub const BPF_F_TEST_XDP_LIVE_FRAMES: u32 = 1 << 1;

#[repr(C)]
#[derive(Default)]
struct TestAttr {
    prog_fd: u32,
    retval: u32,
    data_size_in: u32,
    data_size_out: u32,
    data_in: u64,
    data_out: u64,
    repeat: u32,
    duration: u32,
    ctx_size_in: u32,
    ctx_size_out: u32,
    ctx_in: u64,
    ctx_out: u64,
    flags: u32,
    cpu: u32,
    batch_size: u32,
    _pad: u32,
}

#[repr(C)]
#[derive(Default)]
struct GetFdAttr {
    id: u32,
    next_id: u32,
    open_flags: u32,
}

fn bpf<T>(cmd: libc::c_long, attr: &mut T) -> std::io::Result<libc::c_long> {
    // SAFETY: attr is a valid, initialized bpf_attr prefix of the size passed.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd,
            attr as *mut T as *mut libc::c_void,
            size_of::<T>() as libc::c_uint,
        )
    };
    if rc < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(rc)
    }
}

/// The outcome of one BPF_PROG_TEST_RUN.
#[derive(Clone, Copy, Debug)]
pub struct RunResult {
    pub retval: u32,
    /// Mean nanoseconds per repetition, as the kernel measured it (its timer pauses while the
    /// task is rescheduled).
    pub ns: u32,
}

/// BPF_PROG_TEST_RUN on an XDP program: `repeat` runs over `data`.
pub fn test_run(prog: RawFd, data: &[u8], repeat: u32) -> anyhow::Result<RunResult> {
    let mut out = vec![0u8; data.len() + 256];
    let mut a = TestAttr {
        prog_fd: prog as u32,
        data_size_in: data.len() as u32,
        data_in: data.as_ptr() as u64,
        data_size_out: out.len() as u32,
        data_out: out.as_mut_ptr() as u64,
        repeat,
        ..Default::default()
    };
    bpf(BPF_PROG_TEST_RUN, &mut a).context("BPF_PROG_TEST_RUN")?;
    Ok(RunResult {
        retval: a.retval,
        ns: a.duration,
    })
}

/// BPF_PROG_TEST_RUN with live frames: each run's frame is really transmitted (a program that
/// returns XDP_REDIRECT sends it). `ingress_ifindex` must be an interface of the calling thread's
/// network namespace.
pub fn test_run_live(
    prog: RawFd,
    data: &[u8],
    repeat: u32,
    batch: u32,
    ingress_ifindex: u32,
) -> anyhow::Result<RunResult> {
    // struct xdp_md: data, data_end, data_meta, ingress_ifindex, rx_queue_index, egress_ifindex.
    let ctx: [u32; 6] = [0, data.len() as u32, 0, ingress_ifindex, 0, 0];
    let mut a = TestAttr {
        prog_fd: prog as u32,
        data_size_in: data.len() as u32,
        data_in: data.as_ptr() as u64,
        repeat,
        ctx_size_in: size_of_val(&ctx) as u32,
        ctx_in: ctx.as_ptr() as u64,
        flags: BPF_F_TEST_XDP_LIVE_FRAMES,
        batch_size: batch,
        ..Default::default()
    };
    bpf(BPF_PROG_TEST_RUN, &mut a).context("BPF_PROG_TEST_RUN (live frames)")?;
    Ok(RunResult {
        retval: a.retval,
        ns: a.duration,
    })
}

/// A file descriptor for the loaded program with this id (e.g. xdp-filter's).
pub fn prog_fd_by_id(id: u32) -> anyhow::Result<OwnedFd> {
    let mut a = GetFdAttr {
        id,
        ..Default::default()
    };
    let fd = bpf(BPF_PROG_GET_FD_BY_ID, &mut a).with_context(|| format!("program id {id}"))?;
    // SAFETY: the kernel just returned this fd to us.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

/// `memlock:` of a bpf object's fd, from /proc/self/fdinfo (what `bpftool map show` prints).
pub fn fd_memlock(fd: RawFd) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/self/fdinfo/{fd}")).ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix("memlock:"))
        .and_then(|v| v.trim().parse().ok())
}

/// CPU time used by everything on the machine (busy, total) in clock ticks, from /proc/stat.
pub fn cpu_ticks() -> (u64, u64) {
    let text = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let Some(line) = text.lines().next() else {
        return (0, 0);
    };
    let v: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|x| x.parse().ok())
        .collect();
    let total: u64 = v.iter().sum();
    let idle = v.get(3).copied().unwrap_or(0) + v.get(4).copied().unwrap_or(0);
    (total - idle, total)
}

pub use fw_lab::{
    link::nr_cpus,
    proc::on_path as have,
    signal::{check_interrupt, install_handlers as install_signal_handlers, interrupted, sleep},
};

/// Run a command with a time limit; fail with its output when it fails. Ctrl-C stops it.
pub fn run(
    program: &str,
    args: &[&str],
    limit: std::time::Duration,
) -> anyhow::Result<fw_lab::Output> {
    Ok(fw_lab::Cmd::new(program).args(args).timeout(limit).ok()?)
}
