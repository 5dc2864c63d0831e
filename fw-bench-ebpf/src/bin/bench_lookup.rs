//! Micro-benchmark programs (not part of `fw`): what one flow-table lookup costs by key size and
//! map kind, so the connection-state path's design can be measured, not guessed
//! (tests/tests/kernel_lookup_cost.rs runs them with BPF_PROG_TEST_RUN next to `bench_drop`).
//! Each program builds its key from the frame's IPv4 and TCP headers (as fw does), looks it up,
//! counts in a per-CPU array like the floor, and returns XDP_PASS on a hit, XDP_DROP on a miss.
#![no_std]
#![no_main]

use aya_ebpf::{
    bindings::xdp_action,
    helpers::bpf_ktime_get_coarse_ns,
    macros::{map, xdp},
    maps::{HashMap, LruHashMap, PerCpuArray, ProgramArray},
    programs::XdpContext,
};

#[map]
static LK_COUNT: PerCpuArray<u64> = PerCpuArray::with_max_entries(1, 0);
#[map]
static LK_LRU40: LruHashMap<[u32; 10], [u64; 2]> = LruHashMap::with_max_entries(65_536, 0);
#[map]
static LK_LRU16: LruHashMap<[u32; 4], [u64; 2]> = LruHashMap::with_max_entries(65_536, 0);
#[map]
static LK_HASH40: HashMap<[u32; 10], [u64; 2]> = HashMap::with_max_entries(65_536, 0);
#[map]
static LK_HASH16: HashMap<[u32; 4], [u64; 2]> = HashMap::with_max_entries(65_536, 0);

#[inline(always)]
fn count() {
    if let Some(c) = LK_COUNT.get_ptr_mut(0) {
        // SAFETY: this CPU's slot; XDP runs with preemption off.
        unsafe { *c += 1 };
    }
}

/// The 40 bytes after the Ethernet header (IPv4 + TCP without options) as 10 words, or None.
#[inline(always)]
fn words(ctx: &XdpContext) -> Option<[u32; 10]> {
    let (start, end) = (ctx.data(), ctx.data_end());
    if start + 54 > end {
        return None;
    }
    let p = (start + 14) as *const [u32; 10];
    // SAFETY: bounds checked above; unaligned read of packet bytes.
    Some(unsafe { p.read_unaligned() })
}

/// A 40-byte key shaped like fw's FlowKey: remote (16), local (16), ports, proto, family.
#[inline(always)]
fn key40(w: &[u32; 10]) -> [u32; 10] {
    [w[3], 0, 0, 0, w[4], 0, 0, 0, w[5], 0x0406]
}

/// A 16-byte IPv4 key: remote, local, ports, proto/family.
#[inline(always)]
fn key16(w: &[u32; 10]) -> [u32; 4] {
    [w[3], w[4], w[5], 0x0406]
}

#[inline(always)]
fn verdict(hit: bool) -> u32 {
    count();
    if hit {
        xdp_action::XDP_PASS
    } else {
        xdp_action::XDP_DROP
    }
}

#[xdp]
pub fn lk_lru40(ctx: XdpContext) -> u32 {
    let Some(w) = words(&ctx) else {
        return verdict(false);
    };
    // SAFETY: the value is only tested for presence.
    verdict(unsafe { LK_LRU40.get(&key40(&w)) }.is_some())
}

#[xdp]
pub fn lk_lru16(ctx: XdpContext) -> u32 {
    let Some(w) = words(&ctx) else {
        return verdict(false);
    };
    // SAFETY: the value is only tested for presence.
    verdict(unsafe { LK_LRU16.get(&key16(&w)) }.is_some())
}

#[xdp]
pub fn lk_hash40(ctx: XdpContext) -> u32 {
    let Some(w) = words(&ctx) else {
        return verdict(false);
    };
    // SAFETY: the value is only tested for presence.
    verdict(unsafe { LK_HASH40.get(&key40(&w)) }.is_some())
}

#[xdp]
pub fn lk_hash16(ctx: XdpContext) -> u32 {
    let Some(w) = words(&ctx) else {
        return verdict(false);
    };
    // SAFETY: the value is only tested for presence.
    verdict(unsafe { LK_HASH16.get(&key16(&w)) }.is_some())
}

/// Two misses in a row on the 40-byte LRU (fw's unrelated-ACK path before one table).
#[xdp]
pub fn lk_lru40x2(ctx: XdpContext) -> u32 {
    let Some(w) = words(&ctx) else {
        return verdict(false);
    };
    let k = key40(&w);
    // SAFETY: the values are only tested for presence.
    let hit = unsafe { LK_LRU40.get(&k).is_some() || LK_HASH40.get(&k).is_some() };
    verdict(hit)
}

/// The clock fw reads on a hit.
#[xdp]
pub fn lk_clock(ctx: XdpContext) -> u32 {
    let Some(w) = words(&ctx) else {
        return verdict(false);
    };
    // SAFETY: no preconditions.
    let t = unsafe { bpf_ktime_get_coarse_ns() };
    verdict(t == w[0] as u64)
}

/// A function the compiler keeps apart (a BPF-to-BPF call): what one call and return cost.
#[inline(never)]
fn apart(w: &[u32; 10]) -> bool {
    core::hint::black_box(w[0]) == 7
}

/// One BPF-to-BPF call, nothing else (no lookup).
#[xdp]
pub fn lk_call(ctx: XdpContext) -> u32 {
    let Some(w) = words(&ctx) else {
        return verdict(false);
    };
    verdict(apart(&w))
}

/// Programs `lk_tail` jumps to (index 0: `lk_tail_to`).
#[map]
static LK_PROGS: ProgramArray = ProgramArray::with_max_entries(1, 0);

/// One tail call with a constant index (the verifier patches it into a direct jump).
#[xdp]
pub fn lk_tail(ctx: XdpContext) -> u32 {
    // SAFETY: the context is this program's.
    let _ = unsafe { LK_PROGS.tail_call(&ctx, 0) };
    verdict(true)
}

/// The program `lk_tail` jumps to: what the floor does.
#[xdp]
pub fn lk_tail_to(ctx: XdpContext) -> u32 {
    let Some(w) = words(&ctx) else {
        return verdict(false);
    };
    verdict(w[0] == 7)
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    // SAFETY: the verifier rejects any program that could reach this.
    unsafe { core::hint::unreachable_unchecked() }
}
