//! The fw XDP program: parse (bounded), `decide()` from the maps, count, return.
//!
//! Every decision is `fw_common::decide`, the same function userspace runs; this file only
//! supplies map-backed lookups and the frame. Malformed frames are dropped with a counted
//! reason; XDP_ABORTED is never returned.
#![no_std]
#![no_main]

mod frame;
mod obs;
mod tables;

use aya_ebpf::{
    bindings::{TC_ACT_OK, xdp_action},
    macros::{classifier, xdp},
    programs::{TcContext, XdpContext},
};
use aya_log_ebpf::info;
use fw_common::{Counter, decide, egress};

use crate::{frame::Frame, tables::MapTables};

#[xdp]
pub fn fw_xdp(ctx: XdpContext) -> u32 {
    let frame = Frame::new(ctx.data(), ctx.data_end());
    let tables = MapTables::active();
    let d = decide(&frame, &tables);
    tables::count(d.slot, frame.len_u64());
    obs::hook(&ctx, d.pass, d.slot);
    if !d.pass {
        // Compiled out by the verifier unless the loader raised AYA_LOG_LEVEL (`fw run --log`).
        info!(&ctx, "drop slot={} len={}", d.slot, frame.len_u64());
        return xdp_action::XDP_DROP;
    }
    xdp_action::XDP_PASS
}

/// TC egress: record this host's own outgoing flows so their replies pass (ESTABLISHED).
/// Never drops: outgoing traffic is not filtered.
#[classifier]
pub fn fw_egress(ctx: TcContext) -> i32 {
    // Locally generated packets normally carry their headers in the linear area; pull them in
    // when they do not (the parser needs at most the first few hundred bytes).
    let want = ctx.len().min(256);
    if ((ctx.data_end() - ctx.data()) as u32) < want {
        let _ = ctx.pull_data(want);
    }
    let frame = Frame::with_len(ctx.data(), ctx.data_end(), ctx.len() as usize);
    egress::record(&frame, &MapTables::active());
    TC_ACT_OK
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
