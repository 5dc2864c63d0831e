//! The observability maps of a running filter (`fw_common::obs`): the observer programs
//! installed in the tail-call array, what to observe ([`ObsConfig`]), the record counters, and
//! the two ring buffers with their single reader each.
//!
//! Who writes the config: the policy's `log = "drops"` (synced by [`sync_policy_log`] whenever a
//! policy goes in force), `fw log` while it follows without one, and `fw capture` while it
//! runs — each under the interface lock, each touching only its own fields.

use std::{
    fs::{File, OpenOptions},
    os::{fd::AsRawFd as _, unix::fs::OpenOptionsExt as _},
    path::PathBuf,
};

use aya::{
    Ebpf,
    maps::{Array, Map, MapData, MapType, PerCpuArray, ProgramArray, RingBuf},
    programs::Xdp,
};
use fw_common::obs::{
    BUCKETS, CAPTURE_RING_BYTES, LOG_RING_BYTES, MAP_CAPTURE_RING, MAP_LOG_RING, MAP_OBS,
    MAP_OBS_BUCKETS, MAP_OBS_PROGS, MAP_OBS_SCRATCH, MAP_OBS_STATS, OBS_MAPS, OBS_PROG_DROP,
    OBS_PROG_PASS, ObsConfig, PROG_OBS_DROP, PROG_OBS_DROP_LINEAR, PROG_OBS_PASS,
    PROG_OBS_PASS_LINEAR, STAT_SLOTS,
};
use fw_policy::{LogMode, Options};
use serde::Serialize;

use crate::{Error, loader::Variant, paths::IfacePaths};

/// (name, type, key size, value size, max entries) of the observability maps.
pub const OBS_LAYOUT: [(&str, MapType, u32, u32, u32); 7] = [
    (MAP_OBS, MapType::Array, 4, size_of::<ObsConfig>() as u32, 1),
    (MAP_OBS_BUCKETS, MapType::Array, 4, 8, BUCKETS),
    (MAP_OBS_SCRATCH, MapType::PerCpuArray, 4, 4, 1),
    (MAP_OBS_STATS, MapType::PerCpuArray, 4, 8, STAT_SLOTS),
    (MAP_OBS_PROGS, MapType::ProgramArray, 4, 4, 2),
    (MAP_LOG_RING, MapType::RingBuf, 0, 0, LOG_RING_BYTES),
    (MAP_CAPTURE_RING, MapType::RingBuf, 0, 0, CAPTURE_RING_BYTES),
];

/// Refuse a pinned observability map of another type or size.
pub fn check_layout(paths: &IfacePaths) -> Result<(), Error> {
    crate::maps::check_entries(paths, &OBS_LAYOUT)
}

/// The pin paths of the observability maps, for the loader.
pub fn pin_paths(paths: &IfacePaths) -> Vec<(&'static str, PathBuf)> {
    OBS_MAPS.iter().map(|m| (*m, paths.map(m))).collect()
}

/// Load the observer programs of a loaded object and put them in the tail-call array, so the
/// main program can hand packets to them (it does only while something observes).
pub fn install_observers(ebpf: &mut Ebpf, variant: Variant) -> Result<(), Error> {
    let (drop, pass) = match variant {
        Variant::Frags => (PROG_OBS_DROP, PROG_OBS_PASS),
        Variant::Linear => (PROG_OBS_DROP_LINEAR, PROG_OBS_PASS_LINEAR),
    };
    let mut fds = Vec::new();
    for (name, index) in [(drop, OBS_PROG_DROP), (pass, OBS_PROG_PASS)] {
        let prog: &mut Xdp = ebpf
            .program_mut(name)
            .ok_or_else(|| Error::Other(format!("program {name} missing from the object")))?
            .try_into()
            .map_err(|e| Error::bpf(name, e))?;
        crate::loader::retry_eagain(|| prog.load())
            .map_err(|e| Error::bpf(format!("the kernel verifier refused {name}"), e))?;
        let fd = prog
            .fd()
            .map_err(|e| Error::bpf(name, e))?
            .try_clone()
            .map_err(|e| Error::io(name, e))?;
        fds.push((index, fd));
    }
    let map = ebpf
        .map_mut(MAP_OBS_PROGS)
        .ok_or_else(|| Error::Other(format!("map {MAP_OBS_PROGS} missing from the object")))?;
    let mut arr: ProgramArray<_> =
        ProgramArray::try_from(map).map_err(|e| Error::bpf(MAP_OBS_PROGS, e))?;
    for (index, fd) in &fds {
        arr.set(*index, fd, 0)
            .map_err(|e| Error::bpf(MAP_OBS_PROGS, e))?;
    }
    Ok(())
}

/// The drop log and capture need the observer programs in the XDP program's program array;
/// a program that runs as an extension in a libxdp dispatcher (`fw up --multiprog`) cannot
/// tail-call them (its attach type matches no XDP program), so there they are refused in words.
pub fn check_observable(state: &crate::state::State) -> Result<(), Error> {
    if state.multiprog.is_some() {
        return Err(Error::Refused(format!(
            "{}: fw runs as an extension in a libxdp dispatcher (fw up --multiprog), where the drop log and capture cannot run (an extension cannot tail-call the observer programs); the counters still work: fw status, fw metrics. Without --multiprog they do",
            state.iface
        )));
    }
    Ok(())
}

fn open_map(paths: &IfacePaths, name: &str) -> Result<Map, Error> {
    let path = paths.map(name);
    if !path.exists() {
        return Err(Error::Other(format!(
            "{}: this filter was attached by an fw without the drop log and capture ({} is missing); `fw up --iface {}` upgrades it in place",
            paths.iface,
            path.display(),
            paths.iface
        )));
    }
    let md = MapData::from_pin(&path).map_err(|e| Error::bpf(path.display().to_string(), e))?;
    Map::from_map_data(md).map_err(|e| Error::bpf(path.display().to_string(), e))
}

/// How many records the observer wrote, suppressed by the rate limit, or lost to a full ring.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct ObsStats {
    pub log_emitted: u64,
    pub log_suppressed: u64,
    pub log_lost: u64,
    pub capture_emitted: u64,
    pub capture_suppressed: u64,
    pub capture_lost: u64,
}

pub struct ObsMaps {
    config: Map,
    stats: Map,
}

impl ObsMaps {
    pub fn open(paths: &IfacePaths) -> Result<Self, Error> {
        check_layout(paths)?;
        Ok(ObsMaps {
            config: open_map(paths, MAP_OBS)?,
            stats: open_map(paths, MAP_OBS_STATS)?,
        })
    }

    pub fn config(&self) -> Result<ObsConfig, Error> {
        let a: Array<_, ObsConfig> = Array::try_from(&self.config).map_err(ctx)?;
        a.get(&0, 0).map_err(ctx)
    }

    pub fn set_config(&mut self, c: ObsConfig) -> Result<(), Error> {
        let mut a: Array<_, ObsConfig> = Array::try_from(&mut self.config).map_err(ctx)?;
        a.set(0, c, 0).map_err(ctx)
    }

    /// Change the config with `f` (call under the interface lock).
    pub fn update(&mut self, f: impl FnOnce(&mut ObsConfig)) -> Result<ObsConfig, Error> {
        let mut c = self.config()?;
        f(&mut c);
        self.set_config(c)?;
        Ok(c)
    }

    pub fn stats(&self) -> Result<ObsStats, Error> {
        let a: PerCpuArray<_, u64> =
            PerCpuArray::try_from(&self.stats).map_err(|e| Error::bpf(MAP_OBS_STATS, e))?;
        let mut v = [0u64; STAT_SLOTS as usize];
        for (i, slot) in v.iter_mut().enumerate() {
            *slot = a
                .get(&(i as u32), 0)
                .map_err(|e| Error::bpf(MAP_OBS_STATS, e))?
                .iter()
                .sum();
        }
        Ok(ObsStats {
            log_emitted: v[0],
            log_suppressed: v[1],
            log_lost: v[2],
            capture_emitted: v[3],
            capture_suppressed: v[4],
            capture_lost: v[5],
        })
    }
}

fn ctx(e: aya::maps::MapError) -> Error {
    Error::bpf(MAP_OBS, e)
}

/// `interval` and `burst` for a rate in records per second; 0 = no limit.
pub fn rate_params(per_sec: u32, burst: u32) -> (u64, u64) {
    if per_sec == 0 {
        return (0, 0);
    }
    let interval = 1_000_000_000 / u64::from(per_sec);
    (interval.max(1), interval * u64::from(burst.max(1) - 1))
}

/// Set the log fields of `c` from the policy's options.
pub fn apply_log_options(c: &mut ObsConfig, o: &Options) {
    match o.log {
        LogMode::Drops => {
            c.flags |= ObsConfig::LOG_DROPS;
            let (i, b) = rate_params(o.log_rate, o.log_rate.clamp(1, 1000));
            c.log_interval_ns = i;
            c.log_burst_ns = b;
        }
        LogMode::Off => {
            c.flags &= !ObsConfig::LOG_DROPS;
        }
    }
}

/// Make the drop log what the policy in force says (called by [`crate::filter::Filter`] under
/// its lock whenever a policy goes in force). A filter without the observability maps (attached
/// by an older fw and not upgraded) is left alone.
pub fn sync_policy_log(paths: &IfacePaths, o: &Options) -> Result<(), Error> {
    if !paths.map(MAP_OBS).exists() {
        return Ok(());
    }
    let mut m = ObsMaps::open(paths)?;
    let capture_alive = reader_alive(paths, Ring::Capture);
    // `fw log` or `fw top` may have turned the log on for as long as they run; they put the
    // policy's setting back when they end.
    let follower = o.log == LogMode::Off && reader_alive(paths, Ring::Log);
    m.update(|c| {
        if !follower {
            apply_log_options(c, o);
        }
        // A capture killed before it could disarm leaves the kernel handing packets to a ring
        // nobody reads: disarm it here, at the next change of the filter.
        if !capture_alive {
            c.flags &=
                !(ObsConfig::CAPTURE_DROPS | ObsConfig::CAPTURE_PASSES | ObsConfig::CAPTURE_RULES);
        }
    })?;
    Ok(())
}

/// Whether a process holds the reader lock of `which` right now.
pub fn reader_alive(paths: &IfacePaths, which: Ring) -> bool {
    let Ok(f) = File::open(paths.state.join(which.lock_name())) else {
        return false;
    };
    // SAFETY: flock on a descriptor we own; released at once if we got it.
    unsafe {
        if libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) == 0 {
            libc::flock(f.as_raw_fd(), libc::LOCK_UN);
            return false;
        }
    }
    true
}

/// Which ring buffer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ring {
    Log,
    Capture,
}

impl Ring {
    fn map(self) -> &'static str {
        match self {
            Ring::Log => MAP_LOG_RING,
            Ring::Capture => MAP_CAPTURE_RING,
        }
    }

    fn lock_name(self) -> &'static str {
        match self {
            Ring::Log => "log.reader",
            Ring::Capture => "capture.reader",
        }
    }
}

/// The one reader of a ring buffer (a BPF ring buffer has one consumer position): holds an
/// exclusive flock on a file in the state directory for as long as it lives.
pub struct RingReader {
    pub ring: RingBuf<MapData>,
    _lock: File,
}

/// Why a ring could not be opened.
pub enum RingBusy {
    /// Another process reads it: its pid, if it wrote one.
    Held(Option<u32>),
    Error(Error),
}

impl From<Error> for RingBusy {
    fn from(e: Error) -> Self {
        RingBusy::Error(e)
    }
}

impl RingReader {
    pub fn open(paths: &IfacePaths, which: Ring) -> Result<RingReader, RingBusy> {
        paths.prepare_state()?;
        let lock_path = paths.state.join(which.lock_name());
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&lock_path)
            .map_err(|e| Error::io(&lock_path, e))?;
        // SAFETY: flock on a descriptor we own.
        if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
            let pid = std::fs::read_to_string(&lock_path)
                .ok()
                .and_then(|s| s.trim().parse().ok());
            return Err(RingBusy::Held(pid));
        }
        use std::io::{Seek as _, Write as _};
        let _ = file.set_len(0);
        let _ = file.rewind();
        let _ = write!(file, "{}", std::process::id());
        let map = open_map(paths, which.map())?;
        let ring = RingBuf::try_from(map).map_err(|e| Error::bpf(which.map(), e))?;
        Ok(RingReader { ring, _lock: file })
    }

    /// Wait up to `timeout_ms` for records (poll(2) on the ring's fd).
    pub fn wait(&self, timeout_ms: i32) {
        let mut pfd = libc::pollfd {
            fd: self.ring.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd.
        unsafe { libc::poll(&mut pfd, 1, timeout_ms) };
    }
}
