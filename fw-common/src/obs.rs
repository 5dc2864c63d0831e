//! Observability without cost on the fast path: the drop log and packet capture.
//!
//! The XDP program reads one word of [`MAP_OBS`] per packet. While no log and no capture is on
//! (the default) that is all it pays. Otherwise it tail-calls the observer program
//! ([`PROG_OBS_DROP`] after a drop, [`PROG_OBS_PASS`] after a pass) through [`MAP_OBS_PROGS`];
//! the observer applies a token bucket per consumer and copies the frame's first bytes into a
//! BPF ring buffer ([`MAP_LOG_RING`] for the drop log, [`MAP_CAPTURE_RING`] for `fw capture`),
//! then returns the same verdict. Userspace parses the bytes with the same [`crate::parse`] the
//! program used, so a record says exactly what the filter saw. The observer is a program of its
//! own, so the main program's verifier budget and 512-byte stack are not touched.

/// `Array<ObsConfig>`, 1 entry: what to observe.
pub const MAP_OBS: &str = "FW_OBS";
/// `Array<u64>`, [`BUCKETS`] entries: the token buckets' theoretical arrival times (GCRA), ns.
pub const MAP_OBS_BUCKETS: &str = "FW_OBS_BUCKET";
/// `PerCpuArray<u32>`, 1 entry: the verdict's counter slot, handed to the observer.
pub const MAP_OBS_SCRATCH: &str = "FW_OBS_SCRATCH";
/// `PerCpuArray<u64>`, [`STAT_SLOTS`] entries: records emitted, suppressed, lost.
pub const MAP_OBS_STATS: &str = "FW_OBS_STATS";
/// `ProgramArray`, 2 entries: [`OBS_PROG_DROP`], [`OBS_PROG_PASS`].
pub const MAP_OBS_PROGS: &str = "FW_OBS_PROGS";
/// Ring buffer of drop-log records (consumer: `fw serve` or `fw log`).
pub const MAP_LOG_RING: &str = "FW_LOG_RING";
/// Ring buffer of captured frames (consumer: `fw capture`).
pub const MAP_CAPTURE_RING: &str = "FW_CAP_RING";

/// The observer programs' names in the object: the multi-buffer builds (`xdp.frags`), for the
/// main program's multi-buffer build ([`crate::maps::PROG_XDP`]).
pub const PROG_OBS_DROP: &str = "fw_obs_drop";
pub const PROG_OBS_PASS: &str = "fw_obs_pass";
/// The single-buffer builds, for [`crate::maps::PROG_XDP_LINEAR`]: a program array takes only
/// programs whose `xdp.frags` matches the program that tail-calls through it.
pub const PROG_OBS_DROP_LINEAR: &str = "fw_obs_drop_lin";
pub const PROG_OBS_PASS_LINEAR: &str = "fw_obs_pass_lin";
pub const OBS_PROG_DROP: u32 = 0;
pub const OBS_PROG_PASS: u32 = 1;

/// Every observability map, in the order userspace checks them.
pub const OBS_MAPS: [&str; 7] = [
    MAP_OBS,
    MAP_OBS_BUCKETS,
    MAP_OBS_SCRATCH,
    MAP_OBS_STATS,
    MAP_OBS_PROGS,
    MAP_LOG_RING,
    MAP_CAPTURE_RING,
];

pub const LOG_RING_BYTES: u32 = 256 * 1024;
pub const CAPTURE_RING_BYTES: u32 = 4 * 1024 * 1024;

/// Bytes of each frame a drop-log record carries: enough for two VLAN tags, IPv6 with
/// extension headers, and the transport header.
pub const LOG_SNAP: usize = 192;
/// Bytes of each frame a capture record carries (a full-size Ethernet frame).
pub const CAPTURE_SNAP: usize = 1536;

pub const BUCKET_LOG: u32 = 0;
pub const BUCKET_CAPTURE: u32 = 1;
pub const BUCKETS: u32 = 2;

/// [`MAP_OBS_STATS`] slots.
pub const STAT_LOG_EMITTED: u32 = 0;
/// Drops not logged because the log's rate was exhausted.
pub const STAT_LOG_SUPPRESSED: u32 = 1;
/// Drops not logged because the ring buffer was full (no reader, or a slow one).
pub const STAT_LOG_LOST: u32 = 2;
pub const STAT_CAP_EMITTED: u32 = 3;
pub const STAT_CAP_SUPPRESSED: u32 = 4;
pub const STAT_CAP_LOST: u32 = 5;
pub const STAT_SLOTS: u32 = 8;

/// What the observer does (the [`MAP_OBS`] value). All zero: nothing, and the fast path pays
/// one array read.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ObsConfig {
    pub flags: u32,
    pub _pad: u32,
    /// Nanoseconds between log records at the sustained rate (1e9 / rate).
    pub log_interval_ns: u64,
    /// How far ahead of time the log bucket may run: `interval * (burst - 1)`.
    pub log_burst_ns: u64,
    pub capture_interval_ns: u64,
    pub capture_burst_ns: u64,
    /// Reasons (bit = reason slot, all < 64) whose drops the capture takes; with
    /// [`ObsConfig::CAPTURE_PASSES`], also passes by these reasons.
    pub capture_reasons: u64,
}
const _: () = assert!(size_of::<ObsConfig>() == 48);

impl ObsConfig {
    /// Log dropped packets to [`MAP_LOG_RING`].
    pub const LOG_DROPS: u32 = 1 << 0;
    /// Capture dropped packets (of `capture_reasons`) to [`MAP_CAPTURE_RING`].
    pub const CAPTURE_DROPS: u32 = 1 << 1;
    /// Capture passed packets too: those of `capture_reasons` and, with
    /// [`ObsConfig::CAPTURE_RULES`], those an allow rule let in.
    pub const CAPTURE_PASSES: u32 = 1 << 2;
    pub const CAPTURE_RULES: u32 = 1 << 3;

    /// Whether a packet with this verdict goes to the observer at all.
    #[inline(always)]
    pub const fn wants(&self, pass: bool) -> bool {
        Self::flags_want(self.flags, pass)
    }

    /// [`ObsConfig::wants`] from the flags word alone (the main program reads only that).
    #[inline(always)]
    pub const fn flags_want(flags: u32, pass: bool) -> bool {
        if pass {
            flags & Self::CAPTURE_PASSES != 0
        } else {
            flags & (Self::LOG_DROPS | Self::CAPTURE_DROPS) != 0
        }
    }

    /// Whether the capture takes a packet counted under `slot` with verdict `pass`.
    #[inline(always)]
    pub const fn captures(&self, slot: u32, pass: bool) -> bool {
        let on = if pass {
            Self::CAPTURE_PASSES
        } else {
            Self::CAPTURE_DROPS
        };
        if self.flags & on == 0 {
            return false;
        }
        if slot >= crate::maps::REASON_SLOTS {
            return pass && self.flags & Self::CAPTURE_RULES != 0;
        }
        self.capture_reasons & (1u64 << slot) != 0
    }
}

/// A token bucket as GCRA: `tat` is when the bucket is next full. A record may go out when
/// `tat` is at most `burst_ns` ahead of `now`; it then moves `tat` on by `interval_ns`.
/// Returns the new `tat`, or `None` to suppress. `interval_ns == 0` means no limit.
#[inline(always)]
pub const fn bucket_take(tat: u64, now: u64, interval_ns: u64, burst_ns: u64) -> Option<u64> {
    if interval_ns == 0 {
        return Some(tat);
    }
    let t = if tat > now { tat } else { now };
    if t - now > burst_ns {
        return None;
    }
    Some(t + interval_ns)
}

/// The header of a ring-buffer record; `caplen` bytes of the frame follow it.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RecordHeader {
    /// CLOCK_MONOTONIC nanoseconds (bpf_ktime_get_ns).
    pub ts_ns: u64,
    /// The counter slot: a [`crate::Reason`] or a rule slot.
    pub slot: u32,
    /// The interface the frame arrived on.
    pub ifindex: u32,
    /// The frame's length on the wire.
    pub len: u32,
    pub caplen: u16,
    /// 1: passed, 0: dropped.
    pub pass: u8,
    pub _pad: u8,
    /// The receive queue (RSS), for `fw top` and capture metadata.
    pub rx_queue: u32,
    pub _pad2: u32,
}
pub const RECORD_HEADER_LEN: usize = size_of::<RecordHeader>();
const _: () = assert!(RECORD_HEADER_LEN == 32);

/// A drop-log record as the kernel writes it.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct LogRecord {
    pub h: RecordHeader,
    pub data: [u8; LOG_SNAP],
}

/// A capture record as the kernel writes it.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct CaptureRecord {
    pub h: RecordHeader,
    pub data: [u8; CAPTURE_SNAP],
}

#[cfg(feature = "user")]
mod user {
    use super::{ObsConfig, RecordHeader};
    // SAFETY: repr(C), explicit padding, every bit pattern valid.
    unsafe impl aya::Pod for ObsConfig {}
    // SAFETY: as above.
    unsafe impl bytemuck::Zeroable for RecordHeader {}
    // SAFETY: as above.
    unsafe impl bytemuck::Pod for RecordHeader {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucket_allows_the_burst_then_the_rate() {
        let (interval, burst) = (1_000, 2_000); // 1 per µs, 3 at once
        let mut tat = 0;
        let mut sent = 0;
        for _ in 0..10 {
            if let Some(t) = bucket_take(tat, 10_000, interval, burst) {
                tat = t;
                sent += 1;
            }
        }
        assert_eq!(sent, 3, "burst of three at one instant");
        assert!(bucket_take(tat, 10_500, interval, burst).is_none());
        assert!(bucket_take(tat, 11_000, interval, burst).is_some());
    }

    #[test]
    fn bucket_without_interval_is_unlimited() {
        assert_eq!(bucket_take(5, 1, 0, 0), Some(5));
    }

    #[test]
    fn capture_selects_by_reason_and_verdict() {
        let c = ObsConfig {
            flags: ObsConfig::CAPTURE_DROPS,
            capture_reasons: 1 << 27,
            ..Default::default()
        };
        assert!(c.captures(27, false));
        assert!(!c.captures(22, false));
        assert!(!c.captures(64 + 3, true));
        assert!(!c.wants(true));
        assert!(c.wants(false));
        let p = ObsConfig {
            flags: ObsConfig::CAPTURE_PASSES | ObsConfig::CAPTURE_RULES,
            ..Default::default()
        };
        assert!(p.captures(64 + 3, true));
        assert!(p.wants(true));
    }
}
