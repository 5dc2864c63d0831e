//! The fw XDP program: parse (bounded), `decide()` from the maps, count, return.
//!
//! Every decision is `fw_common::decide`, the same function userspace runs; this file only
//! supplies map-backed lookups and the frame. Malformed frames are dropped with a counted
//! reason; XDP_ABORTED is never returned.
#![no_std]
#![no_main]
#![cfg_attr(
    target_arch = "bpf",
    expect(
        unstable_features,
        reason = "inline asm for the atomic add of tables::flow_hint_add"
    ),
    feature(asm_experimental_arch)
)]

mod cookie;
mod frame;
mod obs;
mod tables;

use aya_ebpf::{
    bindings::{TC_ACT_OK, xdp_action},
    helpers::bpf_xdp_get_buff_len,
    macros::{classifier, xdp},
    programs::{TcContext, XdpContext},
};
use aya_ebpf::{macros::map, maps::PerCpuArray};
use aya_log_ebpf::info;
use fw_common::{
    Config, Counter, Decision, Parsed, Reason, Tables as _,
    decide::{decide_core, decide_early},
    egress,
    flood::{Source, decide_flood, needs_flood},
    parse,
    syncookie::{needs_step, takes_syn},
};

use crate::{frame::Frame, tables::MapTables};

/// The XDP program, multi-buffer aware (`xdp.frags`, Linux ≥ 5.18): native mode works on
/// interfaces whose MTU needs more than one buffer per frame (jumbo frames). The parser reads
/// the first buffer only; the frame's length is the whole packet's. Also the program fw loads
/// as an freplace extension into a libxdp dispatcher.
///
/// One BPF function with everything it runs inlined (aya's macro wraps this body in a function
/// of its own, hence `inline(always)`; fw-ebpf/build.rs raises LLVM's inline threshold): a
/// BPF-to-BPF call costs 10-12 ns here (kernel_lookup_cost's `lk_call`), and
/// tests/tests/bpf_object.rs checks that the XDP programs make none.
#[xdp(frags)]
#[inline(always)]
pub fn fw_xdp(ctx: XdpContext) -> u32 {
    judge(&ctx, frags_frame(&ctx))
}

/// The same program for kernels without multi-buffer XDP (< 5.18): every frame is one buffer.
#[xdp]
#[inline(always)]
pub fn fw_xdp_linear(ctx: XdpContext) -> u32 {
    judge(&ctx, Frame::new(ctx.data(), ctx.data_end()))
}

#[inline(always)]
fn frags_frame(ctx: &XdpContext) -> Frame {
    // SAFETY: the helper only reads the xdp_buff behind the context.
    let len = unsafe { bpf_xdp_get_buff_len(ctx.ctx) } as usize;
    Frame::with_len(ctx.data(), ctx.data_end(), len)
}

#[inline(always)]
fn parse_frame(frame: &Frame, out: &mut Result<Parsed, Reason>) {
    // Copied out as bytes from memory: stored field by field, the undefined bytes of the
    // enum's shorter variants would be registers the verifier refuses to read.
    let tmp = parse(frame);
    // SAFETY: `tmp` is a valid value of `out`'s type; the two do not overlap.
    unsafe { core::ptr::copy_nonoverlapping(core::hint::black_box(&tmp), out, 1) };
}

/// What [`decide_frame`] returns (as the slot of a decision that never counts) when the flood
/// step must run: the hand-off slot then holds the packet's source and the decision so far.
const TO_FLOOD: u32 = 1 << 28;
/// A bit [`decide_frame`] sets in the slot of a decision the SYN cookie step must finish
/// (`fw_common::syncookie::needs_step`) when the flood step need not run first; with
/// `syn_cookies = "off"` never set. No counter slot has it.
const TO_COOKIE: u32 = 1 << 27;

/// Everything but the flood step (block lists, bans, limits, default accept) and the SYN cookie
/// step, which run in tail-called programs of their own when they can change the decision
/// (the flood step first: a blocked source gets no answer).
#[inline(always)]
fn decide_frame(parsed: &Result<Parsed, Reason>, tables: &MapTables) -> Decision {
    let cfg = tables.config();
    let d = match decide_early(parsed, &cfg) {
        Some(d) => d,
        None => decide_core(parsed, tables, &cfg),
    };
    let Ok(Parsed::Ip(ip)) = parsed else {
        return d;
    };
    if !needs_flood(tables, &cfg, &d) {
        if needs_step(&cfg, ip, &d) {
            return Decision {
                pass: d.pass,
                slot: d.slot | TO_COOKIE,
            };
        }
        return d;
    }
    let Some(h) = tables::handoff() else {
        // Cannot happen (the array has its one entry); fail closed.
        return Decision::reason(Reason::Internal);
    };
    // SAFETY: this CPU's own slot; XDP runs with preemption off, so nothing else uses it until
    // the tail-called program has read it.
    unsafe {
        (*h).source = Source::of(ip);
        (*h).slot = d.slot;
        (*h).pass = d.pass as u32;
    }
    Decision {
        pass: false,
        slot: TO_FLOOD,
    }
}

/// Where a packet's parse result lives while it is judged: a per-CPU slot, which the programs
/// `fw_xdp` tail-calls (flood, SYN cookie) read instead of parsing again, and which keeps it
/// out of `fw_xdp`'s 512 bytes of stack. XDP runs with preemption off, so one slot per CPU
/// serves one packet at a time.
#[map]
static FW_PARSED: PerCpuArray<Result<Parsed, Reason>> = PerCpuArray::with_max_entries(1, 0);

/// The parse result of the packet this CPU judges (for the programs `fw_xdp` tail-calls).
#[inline(always)]
pub(crate) fn parsed() -> Option<&'static Result<Parsed, Reason>> {
    FW_PARSED.get(0)
}

#[inline(always)]
fn judge(ctx: &XdpContext, frame: Frame) -> u32 {
    let tables = MapTables::active();
    let Some(slot) = FW_PARSED.get_ptr_mut(0) else {
        // Cannot happen (the array has its one entry); fail closed.
        return verdict(ctx, &frame, Decision::reason(Reason::BadHeader));
    };
    // SAFETY: this CPU's slot, used by this packet alone (XDP does not nest on a CPU).
    let parsed = unsafe { &mut *slot };
    parse_frame(&frame, parsed);
    let d = decide_frame(parsed, &tables);
    if d.slot == TO_FLOOD {
        // A tail call from the program's own frame (from a BPF-to-BPF function it would be
        // limited to 256 bytes of stack below it).
        // SAFETY: the context is this program's.
        unsafe { tables::FW_PROGS.tail_call(ctx, 0) };
        // Only if the flood program is not in the program array: fail closed.
        return verdict(ctx, &frame, Decision::reason(Reason::Internal));
    }
    if d.slot & TO_COOKIE != 0 {
        return cookie::hand_off(
            ctx,
            &frame,
            Decision {
                pass: d.pass,
                slot: d.slot & !TO_COOKIE,
            },
        );
    }
    verdict(ctx, &frame, d)
}

/// The end of every path: count the packet at its decision's slot and return the verdict.
#[inline(always)]
fn verdict(ctx: &XdpContext, frame: &Frame, d: Decision) -> u32 {
    let slot = count(frame, &d);
    obs::hook(ctx, d.pass, slot);
    if !d.pass {
        // Compiled out by the verifier unless the loader raised AYA_LOG_LEVEL (`fw run --log`).
        info!(ctx, "drop slot={} len={}", slot, frame.len_u64());
        return xdp_action::XDP_DROP;
    }
    xdp_action::XDP_PASS
}

/// Count the packet at its decision's slot; returns the slot counted. Without the observers:
/// a SYN cookie answer (XDP_TX) is counted here alone, since an observer would return its own
/// verdict for the frame.
#[inline(always)]
fn count(frame: &Frame, d: &Decision) -> u32 {
    // Fail closed: headers beyond the first buffer cannot be read, so the frame is dropped
    // (as truncated); counted apart so `fw status` can say why.
    let slot = if d.slot == Reason::Truncated.slot() && frame.split() {
        Reason::HeadersSplit.slot()
    } else {
        d.slot
    };
    tables::count(slot, frame.len_u64());
    slot
}

/// The flood step, tail-called by `fw_xdp` with the packet's source and the decision so far in
/// the per-CPU hand-off slot. Multi-buffer aware like `fw_xdp`: the kernel lets a program
/// array hold only programs whose `xdp.frags` flag matches its owner's.
#[xdp(frags)]
pub fn fw_flood(ctx: XdpContext) -> u32 {
    flood_step(&ctx, frags_frame(&ctx))
}

/// The flood step for `fw_xdp_linear` (and `fw_xdp` loaded as an extension, without frags).
#[xdp]
pub fn fw_flood_linear(ctx: XdpContext) -> u32 {
    flood_step(&ctx, Frame::new(ctx.data(), ctx.data_end()))
}

#[inline(always)]
fn flood_step(ctx: &XdpContext, frame: Frame) -> u32 {
    let tables = MapTables::active();
    let cfg = tables.config();
    let Some(h) = tables::handoff() else {
        return verdict(ctx, &frame, Decision::reason(Reason::Internal));
    };
    // SAFETY: written by the XDP program on this CPU just before the tail call.
    let (source, d) = unsafe {
        (
            (*h).source,
            Decision {
                pass: (*h).pass != 0,
                slot: (*h).slot,
            },
        )
    };
    // The parse result once, and only with SYN cookies on: with `syn_cookies = "off"` the
    // flood step reads nothing more.
    let ip = match cfg.has(Config::SYN_COOKIES).then(parsed).flatten() {
        Some(Ok(Parsed::Ip(ip))) => Some(ip),
        _ => None,
    };
    let cookie_syn = ip.is_some_and(|ip| takes_syn(&cfg, ip));
    let d = decide_flood(&tables, &cfg, &source, d, cookie_syn);
    // The SYN cookie step after the flood step: only what passed block lists, bans and limits
    // is answered.
    if let Some(ip) = ip
        && needs_step(&cfg, ip, &d)
    {
        return cookie::hand_off(ctx, &frame, d);
    }
    verdict(ctx, &frame, d)
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
