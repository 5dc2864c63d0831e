//! The fw XDP program: parse (bounded), `decide()` from the maps, count, return.
//!
//! Every decision is `fw_common::decide`, the same function userspace runs; this file only
//! supplies map-backed lookups and the frame. Malformed frames are dropped with a counted
//! reason; XDP_ABORTED is never returned.
#![no_std]
#![no_main]

mod cookie;
mod frame;
mod tables;

use aya_ebpf::{
    bindings::{TC_ACT_OK, xdp_action},
    macros::{classifier, xdp},
    programs::{TcContext, XdpContext},
};
use aya_log_ebpf::info;
use fw_common::{
    Counter, Parsed, Tables as _,
    decide::decide_base,
    egress,
    maps::COOKIE_PROG_INDEX,
    parse,
    syncookie::{STAT_NO_PROGRAM, needs_step},
};

use crate::{frame::Frame, tables::MapTables};

#[xdp]
pub fn fw_xdp(ctx: XdpContext) -> u32 {
    let frame = Frame::new(ctx.data(), ctx.data_end());
    let tables = MapTables::active();
    let parsed = parse(&frame);
    let d = decide_base(&parsed, &tables);
    if let Ok(Parsed::Ip(ip)) = &parsed
        && needs_step(&tables.config(), ip, &d)
    {
        // The SYN cookie step runs in `fw_cookie` (cookie.rs), which counts the packet.
        tables::hand_off(d.slot);
        // SAFETY: a tail call: on success this never returns.
        unsafe { tables::FW_COOKIE_PROG.tail_call(&ctx, COOKIE_PROG_INDEX) };
        // Only if fw_cookie is not in its program array: fail closed.
        tables::cookie_event(STAT_NO_PROGRAM);
        return xdp_action::XDP_DROP;
    }
    tables::count(d.slot, frame.len_u64());
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
