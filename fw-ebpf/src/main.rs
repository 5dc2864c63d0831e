//! The fw XDP program: parse (bounded), `decide()` from the maps, count, return.
//!
//! Every decision is `fw_common::decide`, the same function userspace runs; this file only
//! supplies map-backed lookups and the frame. Malformed frames are dropped with a counted
//! reason; XDP_ABORTED is never returned.
#![no_std]
#![no_main]

mod frame;
mod tables;

use aya_ebpf::{
    bindings::{TC_ACT_OK, xdp_action},
    macros::{classifier, xdp},
    programs::{TcContext, XdpContext},
};
use aya_log_ebpf::info;
use fw_common::{
    Counter, Decision, Parsed, Reason, Tables as _,
    decide::{decide_core, decide_early},
    egress,
    flood::{Source, decide_flood, needs_flood},
    parse,
};

use crate::{frame::Frame, tables::MapTables};

#[xdp]
pub fn fw_xdp(ctx: XdpContext) -> u32 {
    let frame = Frame::new(ctx.data(), ctx.data_end());
    let tables = MapTables::active();
    let cfg = tables.config();
    let parsed = parse(&frame);
    let d = match decide_early(&parsed, &cfg) {
        Some(d) => d,
        None => decide_core(&parsed, &tables, &cfg),
    };
    if let Ok(Parsed::Ip(ip)) = &parsed
        && needs_flood(&tables, &cfg, &d)
    {
        return flood(&ctx, &frame, ip, d);
    }
    verdict(&ctx, &frame, d)
}

/// Hand the source and the decision so far to `fw_flood` (a tail call: its stack is its own).
#[inline(always)]
fn flood(ctx: &XdpContext, frame: &Frame, ip: &fw_common::Ip, d: Decision) -> u32 {
    if let Some(h) = tables::handoff() {
        // SAFETY: this CPU's own slot; XDP runs with preemption off, so nothing else uses it
        // until the tail-called program has read it.
        unsafe {
            (*h).source = Source::of(ip);
            (*h).slot = d.slot;
            (*h).pass = d.pass as u32;
            tables::FW_PROGS.tail_call(ctx, 0);
        }
    }
    // Only if fw_flood is not in the program array: fail closed.
    verdict(ctx, frame, Decision::reason(Reason::Internal))
}

#[inline(always)]
fn verdict(ctx: &XdpContext, frame: &Frame, d: Decision) -> u32 {
    tables::count(d.slot, frame.len_u64());
    if !d.pass {
        // Compiled out by the verifier unless the loader raised AYA_LOG_LEVEL (`fw run --log`).
        info!(ctx, "drop slot={} len={}", d.slot, frame.len_u64());
        return xdp_action::XDP_DROP;
    }
    xdp_action::XDP_PASS
}

/// The flood step (block lists, bans, rate limits, default accept), tail-called by `fw_xdp`
/// with the packet's source in the per-CPU hand-off slot.
#[xdp]
pub fn fw_flood(ctx: XdpContext) -> u32 {
    let frame = Frame::new(ctx.data(), ctx.data_end());
    let tables = MapTables::active();
    let cfg = tables.config();
    let Some(h) = tables::handoff() else {
        return verdict(&ctx, &frame, Decision::reason(Reason::Internal));
    };
    // SAFETY: written by fw_xdp on this CPU just before the tail call.
    let (source, d) = unsafe {
        (
            (*h).source,
            Decision {
                pass: (*h).pass != 0,
                slot: (*h).slot,
            },
        )
    };
    verdict(&ctx, &frame, decide_flood(&tables, &cfg, &source, d))
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
