//! Benchmark attack generator: `bench_gen` (same entry name, globals and maps, so the bench's
//! `Generator` drives it unchanged) plus per-frame variation of the template, for floods that
//! must look like many sources: a random source address in `SPOOF_SRC_BASE | (r &
//! SPOOF_SRC_MASK)` (never inside `SPOOF_AVOID`/24, the lab's own subnet), a random source port,
//! random sequence and acknowledgment numbers. The IPv4 and TCP checksums are fixed
//! incrementally (RFC 1624), so every frame is valid. IPv4 + TCP templates without VLAN tags or
//! IP options only (the bench builds them). Not part of `fw`.
#![no_std]
#![no_main]

use aya_ebpf::{
    bindings::xdp_action,
    helpers::{bpf_get_prandom_u32, bpf_redirect, bpf_xdp_store_bytes},
    macros::{map, xdp},
    maps::{Array, PerCpuArray},
    programs::XdpContext,
};

pub const GEN_FRAME_LEN: usize = 60;
pub const GEN_MAX_FRAMES: u32 = 64;

/// Vary the source address.
pub const VARY_SRC_ADDR: u32 = 1;
/// Vary the source port.
pub const VARY_SRC_PORT: u32 = 2;
/// Vary the sequence and acknowledgment numbers.
pub const VARY_SEQ_ACK: u32 = 4;

const IP_CSUM: usize = 14 + 10;
const IP_SRC: usize = 14 + 12;
const TCP: usize = 14 + 20;
const TCP_SPORT: usize = TCP;
const TCP_SEQ: usize = TCP + 4;
const TCP_CSUM: usize = TCP + 16;

#[unsafe(no_mangle)]
static GEN_IFINDEX: u32 = 0;
#[unsafe(no_mangle)]
static GEN_NFRAMES: u32 = 0;
/// `VARY_*` bits.
#[unsafe(no_mangle)]
static SPOOF_VARY: u32 = 0;
/// Source addresses, host byte order.
#[unsafe(no_mangle)]
static SPOOF_SRC_BASE: u32 = 0;
#[unsafe(no_mangle)]
static SPOOF_SRC_MASK: u32 = 0;
/// A /24 (host byte order, low byte 0) no source may fall in: moved to the next /24.
#[unsafe(no_mangle)]
static SPOOF_AVOID: u32 = 0;

#[map]
static GEN_FRAMES: Array<[u8; GEN_FRAME_LEN]> = Array::with_max_entries(GEN_MAX_FRAMES, 0);
#[map]
static GEN_SENT: PerCpuArray<u64> = PerCpuArray::with_max_entries(1, 0);

/// Ones'-complement sum of the two 16-bit words of `v` (as they lie in memory).
#[inline(always)]
fn words(v: u32) -> u32 {
    (v & 0xffff) + (v >> 16)
}

/// RFC 1624: the checksum `hc` after 32-bit fields of `old` became `new` (raw memory order).
#[inline(always)]
fn csum_update(hc: u16, old: u32, new: u32) -> u16 {
    let mut acc = u32::from(!hc) + words(!old) + words(new);
    acc = (acc & 0xffff) + (acc >> 16);
    acc = (acc & 0xffff) + (acc >> 16);
    !(acc as u16)
}

/// # Safety
/// `p..p + 4` lies inside the packet, which the caller checked.
#[inline(always)]
unsafe fn replace32(p: *mut u8, off: usize, new: u32, csums: &mut [u16]) {
    // SAFETY: in bounds (the caller's check); unaligned access is allowed on packet data.
    unsafe {
        let q = p.add(off) as *mut u32;
        let old = q.read_unaligned();
        for c in csums.iter_mut() {
            *c = csum_update(*c, old, new);
        }
        q.write_unaligned(new);
    }
}

fn vary(ctx: &XdpContext, how: u32) {
    let (data, end) = (ctx.data(), ctx.data_end());
    if data + TCP + 20 > end {
        return;
    }
    let p = data as *mut u8;
    // SAFETY: every access below lies within the TCP header's end, checked above.
    unsafe {
        let ipc = p.add(IP_CSUM) as *mut u16;
        let tcpc = p.add(TCP_CSUM) as *mut u16;
        let mut ip = [ipc.read_unaligned()];
        let mut tcp = [tcpc.read_unaligned()];
        if how & VARY_SRC_ADDR != 0 {
            let (base, mask, avoid) = (
                core::ptr::read_volatile(&SPOOF_SRC_BASE),
                core::ptr::read_volatile(&SPOOF_SRC_MASK),
                core::ptr::read_volatile(&SPOOF_AVOID),
            );
            let mut a = base | (bpf_get_prandom_u32() & mask);
            if a & 0xffff_ff00 == avoid {
                a ^= 0x100;
            }
            let new = a.to_be();
            let old = (p.add(IP_SRC) as *const u32).read_unaligned();
            ip[0] = csum_update(ip[0], old, new);
            replace32(p, IP_SRC, new, &mut tcp);
        }
        if how & VARY_SRC_PORT != 0 {
            // The source port and the destination port are one 32-bit field: keep the latter.
            let q = p.add(TCP_SPORT) as *const u32;
            let old = q.read_unaligned();
            let sport = (bpf_get_prandom_u32() % 64512 + 1024) as u16;
            let new = (old & 0xffff_0000) | u32::from(sport.to_be());
            replace32(p, TCP_SPORT, new, &mut tcp);
        }
        if how & VARY_SEQ_ACK != 0 {
            replace32(p, TCP_SEQ, bpf_get_prandom_u32(), &mut tcp);
            replace32(p, TCP_SEQ + 4, bpf_get_prandom_u32(), &mut tcp);
        }
        ipc.write_unaligned(ip[0]);
        tcpc.write_unaligned(tcp[0]);
    }
}

#[xdp]
pub fn bench_gen(ctx: XdpContext) -> u32 {
    // Volatile: the loader rewrites these constants; the compiler must not fold them.
    // SAFETY: plain reads of statics.
    let (ifindex, n, how) = unsafe {
        (
            core::ptr::read_volatile(&GEN_IFINDEX),
            core::ptr::read_volatile(&GEN_NFRAMES),
            core::ptr::read_volatile(&SPOOF_VARY),
        )
    };
    let Some(sent) = GEN_SENT.get_ptr_mut(0) else {
        return xdp_action::XDP_ABORTED;
    };
    // SAFETY: this CPU's slot; XDP runs with preemption off.
    let i = unsafe {
        let i = *sent;
        *sent = i + 1;
        i
    };
    if n > 0
        && let Some(t) = GEN_FRAMES.get_ptr_mut((i % n as u64) as u32)
    {
        // SAFETY: `t` points at a map value of GEN_FRAME_LEN bytes; the helper checks the
        // frame's length itself.
        unsafe {
            bpf_xdp_store_bytes(ctx.ctx, 0, t.cast(), GEN_FRAME_LEN as u32);
        }
    }
    if how != 0 {
        vary(&ctx, how);
    }
    // SAFETY: no pointers involved.
    unsafe { bpf_redirect(ifindex, 0) as u32 }
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    // SAFETY: the verifier rejects any program that could reach this.
    unsafe { core::hint::unreachable_unchecked() }
}
