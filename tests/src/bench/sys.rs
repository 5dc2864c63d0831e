//! The little system plumbing the benchmark needs and the crates do not give: BPF_PROG_TEST_RUN
//! by fd (every program — fw, the floor, xdp-filter — is run through this one call, so they pay
//! the same overhead), program fds by id, network-namespace threads, CPU pinning, interface
//! counters, GRO, commands with time limits, and Ctrl-C.

use std::{
    fs::File,
    io::{Read as _, Seek as _, SeekFrom},
    os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd, RawFd},
    path::{Path, PathBuf},
    process::{Command, Stdio},
    sync::atomic::{AtomicBool, Ordering},
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, anyhow, bail};

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

/// Pin the calling thread to one CPU.
pub fn pin_to_cpu(cpu: usize) {
    // SAFETY: a zeroed cpu_set_t is valid; CPU_SET stays within it.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        libc::sched_setaffinity(0, size_of::<libc::cpu_set_t>(), &set);
    }
}

pub fn nr_cpus() -> usize {
    thread::available_parallelism().map_or(1, |n| n.get())
}

/// Put the calling thread into the network namespace at `path` (CLONE_NEWNET affects only this
/// thread).
pub fn enter_netns(path: &Path) -> anyhow::Result<()> {
    let f = File::open(path).with_context(|| format!("{}", path.display()))?;
    // SAFETY: a valid nsfs fd.
    if unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
        bail!(
            "setns {}: {}",
            path.display(),
            std::io::Error::last_os_error()
        );
    }
    Ok(())
}

/// Run `f` on a thread inside the namespace at `path` and wait for it (`f` must be bounded).
pub fn in_netns<T: Send + 'static>(
    path: &Path,
    f: impl FnOnce() -> anyhow::Result<T> + Send + 'static,
) -> anyhow::Result<T> {
    let path = path.to_path_buf();
    thread::spawn(move || {
        enter_netns(&path)?;
        f()
    })
    .join()
    .map_err(|_| anyhow!("a thread inside a network namespace panicked"))?
}

/// The index of `name` in the calling thread's namespace.
pub fn ifindex(name: &str) -> anyhow::Result<u32> {
    let c = std::ffi::CString::new(name)?;
    // SAFETY: valid C string.
    let idx = unsafe { libc::if_nametoindex(c.as_ptr()) };
    if idx == 0 {
        bail!("no interface {name} here");
    }
    Ok(idx)
}

/// Switch GRO on or off (legacy ETHTOOL_SGRO ioctl) for an interface of the calling thread's
/// namespace. veth runs its NAPI receive path (the one XDP frames take) only with GRO or XDP.
pub fn set_gro(name: &str, on: bool) -> anyhow::Result<()> {
    const SIOCETHTOOL: libc::c_ulong = 0x8946;
    const ETHTOOL_SGRO: u32 = 0x2c;
    #[repr(C)]
    struct EthtoolValue {
        cmd: u32,
        data: u32,
    }
    #[repr(C)]
    struct IfReq {
        name: [u8; 16],
        data: *mut EthtoolValue,
        _pad: [u8; 16],
    }
    let mut v = EthtoolValue {
        cmd: ETHTOOL_SGRO,
        data: on as u32,
    };
    let mut req = IfReq {
        name: [0; 16],
        data: &mut v,
        _pad: [0; 16],
    };
    req.name[..name.len()].copy_from_slice(name.as_bytes());
    // SAFETY: plain socket + ioctl with a valid ifreq.
    unsafe {
        let s = libc::socket(libc::AF_INET, libc::SOCK_DGRAM, 0);
        if s < 0 {
            bail!("socket: {}", std::io::Error::last_os_error());
        }
        let rc = libc::ioctl(s, SIOCETHTOOL, &mut req);
        let err = std::io::Error::last_os_error();
        libc::close(s);
        if rc != 0 {
            bail!("ETHTOOL_SGRO on {name}: {err}");
        }
    }
    Ok(())
}

/// `/proc/net/dev` of one namespace, opened from inside it: the open file keeps showing that
/// namespace's devices whoever reads it later.
pub struct NetDev {
    file: File,
}

/// Receive counters of one interface.
#[derive(Clone, Copy, Debug, Default)]
pub struct IfStats {
    pub rx_packets: u64,
}

impl NetDev {
    /// Open from a thread that is inside the namespace.
    pub fn open_here() -> anyhow::Result<Self> {
        Ok(NetDev {
            file: File::open("/proc/thread-self/net/dev").context("/proc/thread-self/net/dev")?,
        })
    }

    pub fn stats(&mut self, iface: &str) -> anyhow::Result<IfStats> {
        self.file.seek(SeekFrom::Start(0))?;
        let mut text = String::new();
        self.file.read_to_string(&mut text)?;
        for line in text.lines() {
            let Some((name, rest)) = line.split_once(':') else {
                continue;
            };
            if name.trim() != iface {
                continue;
            }
            let v: Vec<u64> = rest
                .split_whitespace()
                .filter_map(|x| x.parse().ok())
                .collect();
            if v.len() < 12 {
                bail!("odd /proc/net/dev line: {line}");
            }
            return Ok(IfStats { rx_packets: v[1] });
        }
        bail!("{iface} not in /proc/net/dev")
    }
}

static INTERRUPTED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    INTERRUPTED.store(true, Ordering::SeqCst);
}

/// Ctrl-C and SIGTERM set a flag that every loop checks; the run then unwinds through its guards.
pub fn install_signal_handlers() {
    // SAFETY: the handler only stores to an atomic.
    unsafe {
        let handler = on_signal as extern "C" fn(libc::c_int);
        libc::signal(libc::SIGINT, handler as libc::sighandler_t);
        libc::signal(libc::SIGTERM, handler as libc::sighandler_t);
    }
}

pub fn interrupted() -> bool {
    INTERRUPTED.load(Ordering::SeqCst)
}

/// Fail with "interrupted" once Ctrl-C was pressed.
pub fn check_interrupt() -> anyhow::Result<()> {
    if interrupted() {
        bail!("interrupted");
    }
    Ok(())
}

/// Sleep up to `d`, waking early on Ctrl-C.
pub fn sleep(d: Duration) -> anyhow::Result<()> {
    let end = Instant::now() + d;
    while Instant::now() < end {
        check_interrupt()?;
        thread::sleep((end - Instant::now()).min(Duration::from_millis(50)));
    }
    Ok(())
}

/// Output of a finished command.
pub struct Output {
    pub stdout: String,
}

/// Run a command with a time limit; fail with its stderr when it fails. Ctrl-C stops it.
pub fn run(program: &str, args: &[&str], limit: Duration) -> anyhow::Result<Output> {
    run_inner(program, args, None, limit, true)
}

/// A cleanup command: runs to its end (or its time limit) even after Ctrl-C.
pub fn run_cleanup(program: &str, args: &[&str], limit: Duration) -> anyhow::Result<Output> {
    run_inner(program, args, None, limit, false)
}

/// As [`run`], feeding `stdin`.
pub fn run_stdin(
    program: &str,
    args: &[&str],
    stdin: Option<&str>,
    limit: Duration,
) -> anyhow::Result<Output> {
    run_inner(program, args, stdin, limit, true)
}

fn run_inner(
    program: &str,
    args: &[&str],
    stdin: Option<&str>,
    limit: Duration,
    interruptible: bool,
) -> anyhow::Result<Output> {
    use std::io::Write as _;
    let shown = format!("{program} {}", args.join(" "));
    let shown: String = shown.chars().take(200).collect();
    let mut child = Command::new(program)
        .args(args)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("starting {shown}"))?;
    if let Some(input) = stdin {
        let mut pipe = child.stdin.take().expect("piped");
        let input = input.to_string();
        // A writer thread, so a big input cannot deadlock against a full stdout pipe.
        thread::spawn(move || {
            let _ = pipe.write_all(input.as_bytes());
        });
    }
    let mut out_pipe = child.stdout.take().expect("piped");
    let mut err_pipe = child.stderr.take().expect("piped");
    let out_t = thread::spawn(move || {
        let mut s = String::new();
        let _ = out_pipe.read_to_string(&mut s);
        s
    });
    let err_t = thread::spawn(move || {
        let mut s = String::new();
        let _ = err_pipe.read_to_string(&mut s);
        s
    });
    let end = Instant::now() + limit;
    let status = loop {
        if let Some(st) = child.try_wait()? {
            break st;
        }
        if Instant::now() > end || (interruptible && interrupted()) {
            let _ = child.kill();
            let _ = child.wait();
            bail!("{shown}: killed after {limit:?} (or interrupted)");
        }
        thread::sleep(Duration::from_millis(5));
    };
    let stdout = out_t.join().unwrap_or_default();
    let stderr = err_t.join().unwrap_or_default();
    if !status.success() {
        bail!("{shown}: {status}: {}", stderr.trim());
    }
    Ok(Output { stdout })
}

/// A background child process killed (and reaped) on drop.
pub struct Child {
    child: std::process::Child,
}

impl Child {
    pub fn spawn(program: &str, args: &[&str]) -> anyhow::Result<Self> {
        let child = Command::new(program)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .with_context(|| format!("starting {program}"))?;
        Ok(Child { child })
    }
}

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Does this program exist on PATH?
pub fn have(program: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|p| std::env::split_paths(&p).any(|d: PathBuf| d.join(program).is_file()))
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
