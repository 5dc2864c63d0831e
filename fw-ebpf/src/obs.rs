//! The drop log and packet capture (see `fw_common::obs`). The main program pays one array read
//! per packet while nothing observes; otherwise it tail-calls an observer program below, which
//! runs in a fresh stack frame with its own verifier budget and returns the same verdict.

use aya_ebpf::{
    bindings::xdp_action,
    helpers::{
        bpf_ktime_get_coarse_ns, bpf_ktime_get_ns, bpf_xdp_get_buff_len, bpf_xdp_load_bytes,
    },
    macros::{map, xdp},
    maps::{Array, PerCpuArray, ProgramArray, RingBuf},
    programs::XdpContext,
};
use fw_common::obs::{
    BUCKET_CAPTURE, BUCKET_LOG, BUCKETS, CAPTURE_RING_BYTES, CAPTURE_SNAP, CaptureRecord,
    LOG_RING_BYTES, LOG_SNAP, LogRecord, OBS_PROG_DROP, OBS_PROG_PASS, ObsConfig, RecordHeader,
    STAT_CAP_EMITTED, STAT_CAP_LOST, STAT_CAP_SUPPRESSED, STAT_LOG_EMITTED, STAT_LOG_LOST,
    STAT_LOG_SUPPRESSED, STAT_SLOTS, bucket_take,
};

#[map]
static FW_OBS: Array<ObsConfig> = Array::with_max_entries(1, 0);
#[map]
static FW_OBS_BUCKET: Array<u64> = Array::with_max_entries(BUCKETS, 0);
#[map]
static FW_OBS_SCRATCH: PerCpuArray<u32> = PerCpuArray::with_max_entries(1, 0);
#[map]
static FW_OBS_STATS: PerCpuArray<u64> = PerCpuArray::with_max_entries(STAT_SLOTS, 0);
#[map]
static FW_OBS_PROGS: ProgramArray = ProgramArray::with_max_entries(2, 0);
#[map]
static FW_LOG_RING: RingBuf = RingBuf::with_byte_size(LOG_RING_BYTES, 0);
#[map]
static FW_CAP_RING: RingBuf = RingBuf::with_byte_size(CAPTURE_RING_BYTES, 0);

/// Called by the main program with its verdict. Returns at once unless something observes
/// packets with this verdict; then it does not return (the observer returns the verdict), or
/// returns if the observer is not installed.
#[inline(always)]
pub fn hook(ctx: &XdpContext, pass: bool, slot: u32) {
    let Some(cfg) = FW_OBS.get_ptr(0) else {
        return;
    };
    // SAFETY: a map value pointer; one aligned u32 read.
    let flags = unsafe { (*cfg).flags };
    if !ObsConfig::flags_want(flags, pass) {
        return;
    }
    if let Some(s) = FW_OBS_SCRATCH.get_ptr_mut(0) {
        // SAFETY: this CPU's value; XDP runs with preemption off.
        unsafe { *s = slot };
    }
    let index = if pass { OBS_PROG_PASS } else { OBS_PROG_DROP };
    // SAFETY: ctx is this program's context; on success control never comes back.
    unsafe { FW_OBS_PROGS.tail_call(ctx, index) };
}

// Two builds of the observers, like the main program's: a program array takes only programs
// whose `xdp_has_frags` matches its owner's (the main program that tail-calls through it;
// kernel/bpf/core.c, __bpf_prog_map_compatible, Linux >= 5.18). The loader installs the pair
// matching the main program it loaded. Both read the frame with bpf_xdp_load_bytes, which
// also reads the later buffers of a multi-buffer frame.

#[xdp(frags)]
pub fn fw_obs_drop(ctx: XdpContext) -> u32 {
    observe(&ctx, false);
    xdp_action::XDP_DROP
}

#[xdp(frags)]
pub fn fw_obs_pass(ctx: XdpContext) -> u32 {
    observe(&ctx, true);
    xdp_action::XDP_PASS
}

#[xdp]
pub fn fw_obs_drop_lin(ctx: XdpContext) -> u32 {
    observe(&ctx, false);
    xdp_action::XDP_DROP
}

#[xdp]
pub fn fw_obs_pass_lin(ctx: XdpContext) -> u32 {
    observe(&ctx, true);
    xdp_action::XDP_PASS
}

#[inline(always)]
fn stat(i: u32) {
    if let Some(c) = FW_OBS_STATS.get_ptr_mut(i) {
        // SAFETY: this CPU's value.
        unsafe { *c += 1 };
    }
}

/// Take a token from bucket `b`. The buckets are shared by all CPUs without atomics: a race
/// lets at most one extra record per CPU through, and the slot is written only when a record
/// goes out, so a flood that finds the bucket empty only reads it.
#[inline(always)]
fn take(b: u32, now: u64, interval: u64, burst: u64) -> bool {
    let Some(tat) = FW_OBS_BUCKET.get_ptr_mut(b) else {
        return false;
    };
    // SAFETY: a map value pointer.
    unsafe {
        match bucket_take(*tat, now, interval, burst) {
            Some(t) => {
                *tat = t;
                true
            }
            None => false,
        }
    }
}

#[inline(always)]
fn observe(ctx: &XdpContext, pass: bool) {
    let Some(cfg) = FW_OBS.get(0) else {
        return;
    };
    let Some(slot) = FW_OBS_SCRATCH.get(0).copied() else {
        return;
    };
    // SAFETY: no arguments.
    let now = unsafe { bpf_ktime_get_coarse_ns() };
    if !pass && cfg.flags & ObsConfig::LOG_DROPS != 0 {
        if take(BUCKET_LOG, now, cfg.log_interval_ns, cfg.log_burst_ns) {
            match FW_LOG_RING.reserve::<LogRecord>(0) {
                Some(mut e) => {
                    let r = e.as_mut_ptr();
                    // SAFETY: `r` points at a reserved record of the ring buffer.
                    unsafe {
                        header(ctx, &mut (*r).h, slot, pass, LOG_SNAP);
                        let n = core::ptr::read_volatile(&(*r).h.caplen);
                        copy_frame::<LOG_SNAP>(ctx, &mut (*r).data, u32::from(n));
                    }
                    e.submit(0);
                    stat(STAT_LOG_EMITTED);
                }
                None => stat(STAT_LOG_LOST),
            }
        } else {
            stat(STAT_LOG_SUPPRESSED);
        }
    }
    if cfg.captures(slot, pass) {
        if take(
            BUCKET_CAPTURE,
            now,
            cfg.capture_interval_ns,
            cfg.capture_burst_ns,
        ) {
            match FW_CAP_RING.reserve::<CaptureRecord>(0) {
                Some(mut e) => {
                    let r = e.as_mut_ptr();
                    // SAFETY: as above.
                    unsafe {
                        header(ctx, &mut (*r).h, slot, pass, CAPTURE_SNAP);
                        let n = core::ptr::read_volatile(&(*r).h.caplen);
                        copy_frame::<CAPTURE_SNAP>(ctx, &mut (*r).data, u32::from(n));
                    }
                    e.submit(0);
                    stat(STAT_CAP_EMITTED);
                }
                None => stat(STAT_CAP_LOST),
            }
        } else {
            stat(STAT_CAP_SUPPRESSED);
        }
    }
}

#[inline(always)]
fn header(ctx: &XdpContext, h: &mut RecordHeader, slot: u32, pass: bool, snap: usize) {
    // The whole packet's length, all buffers of a multi-buffer frame included (the first
    // buffer's alone for a single-buffer one).
    // SAFETY: the helper only reads the xdp_buff behind the context.
    let len = unsafe { bpf_xdp_get_buff_len(ctx.ctx) } as usize;
    // SAFETY: no arguments.
    h.ts_ns = unsafe { bpf_ktime_get_ns() };
    h.slot = slot;
    // SAFETY: reads the xdp_md the kernel handed us.
    h.ifindex = unsafe { (*ctx.ctx).ingress_ifindex };
    h.len = len as u32;
    h.caplen = if len < snap { len as u16 } else { snap as u16 };
    h.pass = pass as u8;
    h._pad = 0;
    // SAFETY: as above.
    h.rx_queue = unsafe { (*ctx.ctx).rx_queue_index };
    h._pad2 = 0;
}

/// Copy the frame's first `n` bytes into `out` with bpf_xdp_load_bytes (Linux 5.18; it also
/// reads frames in several buffers). `n` must come from a 16-bit volatile load (the record's
/// `caplen`): LLVM would otherwise check a zero-extended copy of the length and pass the
/// unchecked 64-bit one, which the verifier refuses as a helper's size.
#[inline(always)]
fn copy_frame<const N: usize>(ctx: &XdpContext, out: &mut [u8; N], n: u32) {
    if n == 0 || n > N as u32 {
        return;
    }
    // SAFETY: `out` holds N >= n bytes; the helper bounds-checks the frame itself.
    unsafe {
        bpf_xdp_load_bytes(ctx.ctx, 0, out.as_mut_ptr().cast(), n);
    }
}
