//! The fw XDP program: parse (bounded), `decide()` from the maps, count, return.
//!
//! Every decision is `fw_common::decide`, the same function userspace runs; this file only
//! supplies map-backed lookups and the frame. Malformed frames are dropped with a counted
//! reason; XDP_ABORTED is never returned.
#![no_std]
#![no_main]

mod frame;
mod tables;

use aya_ebpf::{bindings::xdp_action, macros::xdp, programs::XdpContext};
use aya_log_ebpf::info;
use fw_common::{Counter, decide};

use crate::{frame::Frame, tables::MapTables};

#[xdp]
pub fn fw_xdp(ctx: XdpContext) -> u32 {
    let frame = Frame::new(ctx.data(), ctx.data_end());
    let tables = MapTables::active();
    let d = decide(&frame, &tables);
    tables::count(d.slot, frame.len_u64());
    if !d.pass {
        // Compiled out by the verifier unless the loader raised AYA_LOG_LEVEL (`fw run --log`).
        info!(&ctx, "drop slot={} len={}", d.slot, frame.len_u64());
        return xdp_action::XDP_DROP;
    }
    xdp_action::XDP_PASS
}

// Kept so the counter type is part of this object's BTF for tools like bpftool.
#[unsafe(no_mangle)]
static FW_COUNTER_LAYOUT: Counter = Counter {
    packets: 0,
    bytes: 0,
};

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    // SAFETY: the verifier rejects any program that could reach this.
    unsafe { core::hint::unreachable_unchecked() }
}
