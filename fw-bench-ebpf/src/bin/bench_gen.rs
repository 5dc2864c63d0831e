//! Benchmark traffic generator: run with BPF_PROG_TEST_RUN and BPF_F_TEST_XDP_LIVE_FRAMES, it
//! turns every test frame into a real frame transmitted on `GEN_IFINDEX` (bpf_redirect), with no
//! socket and no skb at the sender — far cheaper per packet than AF_PACKET, so the receiver is
//! what limits the rate. With `GEN_NFRAMES` > 0 each frame is overwritten by the next of
//! `GEN_NFRAMES` templates from `GEN_FRAMES` (round robin), so one flood can mix packet kinds.
//! Not part of `fw`.
#![no_std]
#![no_main]

use aya_ebpf::{
    bindings::xdp_action,
    helpers::{bpf_redirect, bpf_xdp_store_bytes},
    macros::{map, xdp},
    maps::{Array, PerCpuArray},
    programs::XdpContext,
};

/// Bytes of a template frame (a minimum-size Ethernet frame without the FCS).
pub const GEN_FRAME_LEN: usize = 60;
pub const GEN_MAX_FRAMES: u32 = 64;

/// The interface to transmit on (set by the loader with `override_global`).
#[unsafe(no_mangle)]
static GEN_IFINDEX: u32 = 0;
/// How many templates of `GEN_FRAMES` to cycle through; 0: send the test frame as it is.
#[unsafe(no_mangle)]
static GEN_NFRAMES: u32 = 0;

#[map]
static GEN_FRAMES: Array<[u8; GEN_FRAME_LEN]> = Array::with_max_entries(GEN_MAX_FRAMES, 0);
/// Frames generated, per CPU (also the round-robin position).
#[map]
static GEN_SENT: PerCpuArray<u64> = PerCpuArray::with_max_entries(1, 0);

#[xdp]
pub fn bench_gen(ctx: XdpContext) -> u32 {
    // Volatile: the loader rewrites these constants; the compiler must not fold them.
    // SAFETY: plain reads of statics.
    let (ifindex, n) = unsafe {
        (
            core::ptr::read_volatile(&GEN_IFINDEX),
            core::ptr::read_volatile(&GEN_NFRAMES),
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
    // SAFETY: no pointers involved.
    unsafe { bpf_redirect(ifindex, 0) as u32 }
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    // SAFETY: the verifier rejects any program that could reach this.
    unsafe { core::hint::unreachable_unchecked() }
}
