//! `fw_cookie`: the SYN cookie step, tail-called by `fw_xdp` for the packets
//! `fw_common::syncookie::needs_step` picks (a SYN an allow rule admits, an ACK of no
//! connection), with a stack of its own. The decision is `fw_common::syncookie::step`, which
//! userspace runs too, on the parse result `fw_xdp` left in its per-CPU slot; this file only
//! builds the answer in place: the SYN becomes its SYN+ACK (MACs, addresses and ports swapped,
//! the cookie as sequence number, the options the kernel can decode from it, both checksums)
//! and goes back out with XDP_TX.
//!
//! Each program comes in the two builds of `fw_xdp`: a program array takes only programs of
//! its owner's kind, and since Linux 5.18 that includes `xdp.frags` (`__bpf_prog_map_compatible`
//! in kernel/bpf/core.c), so `fw_xdp` tail-calls the multi-buffer builds and `fw_xdp_linear`
//! the single-buffer ones (the loader puts the matching pair in the array).

use aya_ebpf::{
    bindings::{iphdr, ipv6hdr, tcphdr, xdp_action},
    helpers::{
        bpf_ktime_get_ns, bpf_tcp_raw_gen_syncookie_ipv4, bpf_tcp_raw_gen_syncookie_ipv6,
        bpf_xdp_adjust_tail, bpf_xdp_load_bytes,
    },
    macros::xdp,
    programs::XdpContext,
};
use fw_common::{
    Decision, Family, PacketView as _, Parsed, Reason, Tables as _,
    maps::{COOKIE_PROG_INDEX, COOKIE_TX_INDEX},
    syncookie::{
        self, AnswerParams, ListenerKey, Located, STAT_NO_OPTIONS, STAT_NO_PROGRAM, STAT_TX_FAILED,
        SynAck, ipv4_header, locate, syn_options, synack, tcp_checksum,
    },
    tcp::{ACK, SYN},
};

use crate::{frags_frame, frame::Frame, parsed, tables, tables::MapTables, verdict};

/// Hand the packet decided `d` so far (by `fw_xdp`, or by the flood step after it) to the SYN
/// cookie step. Call it from a program's own frame (a tail call from a BPF-to-BPF function is
/// limited to 256 bytes of stack below it). Without the step in its program array (fw loaded
/// as an extension of a libxdp dispatcher, whose programs cannot share a program array with
/// plain XDP programs) the packet keeps `d` — what the policy says without SYN cookies, a SYN
/// to the kernel spending its rule's `total` — and the event is counted.
#[inline(always)]
pub fn hand_off(ctx: &XdpContext, frame: &Frame, d: Decision) -> u32 {
    tables::hand_off(d.slot);
    // SAFETY: a tail call: on success this never returns.
    unsafe { tables::FW_COOKIE_PROG.tail_call(ctx, COOKIE_PROG_INDEX) };
    tables::cookie_event(STAT_NO_PROGRAM);
    // A SYN that goes on to the kernel here spends its rule's `total`, which the flood step
    // left to the cookie step.
    let d = match parsed() {
        Some(Ok(Parsed::Ip(ip))) => {
            let t = MapTables::active();
            syncookie::to_kernel(&t, &t.config(), ip, d)
        }
        _ => d,
    };
    verdict(ctx, frame, d)
}

/// The SYN cookie step, multi-buffer build (tail-called by `fw_xdp` and `fw_flood`).
#[xdp(frags)]
pub fn fw_cookie(ctx: XdpContext) -> u32 {
    step(&ctx, frags_frame(&ctx))
}

/// The SYN cookie step, single-buffer build (tail-called by `fw_xdp_linear` and
/// `fw_flood_linear`).
#[xdp]
pub fn fw_cookie_linear(ctx: XdpContext) -> u32 {
    step(&ctx, Frame::new(ctx.data(), ctx.data_end()))
}

#[inline(always)]
fn step(ctx: &XdpContext, frame: Frame) -> u32 {
    let t = MapTables::active();
    let cfg = t.config();
    let base = Decision::from_slot(tables::handed());
    let Some(Ok(Parsed::Ip(ip))) = parsed() else {
        // fw_xdp parsed this very frame into the slot: not reached. Fail closed.
        return verdict(ctx, &frame, Decision::reason(Reason::Internal));
    };
    let mut d = syncookie::step(&t, &cfg, ip, base);
    if d.answers() && frame.len() != ctx.data_end() - ctx.data() {
        // The answer is built in the first buffer: a SYN whose payload spills into more
        // (jumbo frames) goes on to the kernel, as without cookies.
        d = syncookie::to_kernel(&t, &cfg, ip, base);
    }
    if d.answers() {
        // The answer is built by `fw_cookie_tx`, with a stack of its own again; it counts.
        // SAFETY: a tail call: on success this never returns.
        unsafe { tables::FW_COOKIE_PROG.tail_call(ctx, COOKIE_TX_INDEX) };
        // Without it the kernel gets the SYN, as without cookies.
        tables::cookie_event(STAT_NO_PROGRAM);
        d = syncookie::to_kernel(&t, &cfg, ip, base);
    }
    verdict(ctx, &frame, d)
}

/// Answer the SYN `fw_cookie` decided to answer: rewrite it into its SYN+ACK, XDP_TX.
#[xdp(frags)]
pub fn fw_cookie_tx(ctx: XdpContext) -> u32 {
    transmit(&ctx, frags_frame(&ctx))
}

/// [`fw_cookie_tx`], single-buffer build.
#[xdp]
pub fn fw_cookie_tx_linear(ctx: XdpContext) -> u32 {
    transmit(&ctx, Frame::new(ctx.data(), ctx.data_end()))
}

/// `syn`: the SYN as it arrived (for its length, counted).
#[inline(always)]
fn transmit(ctx: &XdpContext, syn: Frame) -> u32 {
    if answer(ctx, &MapTables::active()).is_some() {
        // Counted, not shown to the observers: one would return its own verdict for the
        // frame, and the answer must go out (XDP_TX).
        crate::count(&syn, &Decision::reason(Reason::SynCookie));
        return xdp_action::XDP_TX;
    }
    // Never a drop for want of an answer: the SYN goes on to the kernel (it answers with a
    // cookie of its own under pressure), with the policy's verdict without SYN cookies.
    tables::cookie_event(STAT_TX_FAILED);
    verdict(ctx, &syn, Decision::from_slot(tables::handed()))
}

/// `n` bytes at `off` of the frame as it is now, writable.
#[inline(always)]
fn at(ctx: &XdpContext, off: usize, n: usize) -> Option<*mut u8> {
    let (start, end) = (ctx.data(), ctx.data_end());
    if start + off + n > end {
        return None;
    }
    Some((start + off) as *mut u8)
}

#[inline(always)]
fn resize(ctx: &XdpContext, len: usize) -> Option<()> {
    let delta = len as i32 - (ctx.data_end() - ctx.data()) as i32;
    if delta == 0 {
        return Some(());
    }
    // SAFETY: the context pointer is the program's own; the helper checks the bounds.
    (unsafe { bpf_xdp_adjust_tail(ctx.ctx, delta) } == 0).then_some(())
}

/// The SYN's addresses (IPv4 in the first 4 bytes) and ports.
struct Syn {
    src: [u8; 16],
    dst: [u8; 16],
    sport: u16,
    dport: u16,
    seq: u32,
    th_len: u32,
}

#[inline(always)]
fn read_syn(frame: &Frame, loc: &Located) -> Option<Syn> {
    let (mut src, mut dst) = ([0u8; 16], [0u8; 16]);
    if loc.family == Family::V4 {
        let h: &[u8; 20] = frame.bytes(loc.l3)?;
        src[..4].copy_from_slice(&h[12..16]);
        dst[..4].copy_from_slice(&h[16..20]);
    } else {
        let h: &[u8; 40] = frame.bytes(loc.l3)?;
        src.copy_from_slice(&h[8..24]);
        dst.copy_from_slice(&h[24..40]);
    }
    let th: &[u8; 20] = frame.bytes(loc.l4)?;
    let th_len = ((th[12] >> 4) as u32 * 4) & 0x3c;
    if th_len < 20 || th[13] & (SYN | ACK) != SYN {
        return None;
    }
    Some(Syn {
        src,
        dst,
        sport: u16::from_be_bytes([th[0], th[1]]),
        dport: u16::from_be_bytes([th[2], th[3]]),
        seq: u32::from_be_bytes([th[4], th[5], th[6], th[7]]),
        th_len,
    })
}

/// Turn the SYN into its answer. `None`: it could not be built, and nothing in the frame has
/// changed (the caller hands the SYN to the kernel). Everything that can fail — the cookie,
/// the frame's new size — comes before the first write.
#[inline(always)]
fn answer(ctx: &XdpContext, t: &MapTables) -> Option<()> {
    let frame = Frame::new(ctx.data(), ctx.data_end());
    let loc = locate(&frame)?;
    let Syn {
        src,
        dst,
        sport,
        dport,
        seq,
        th_len,
    } = read_syn(&frame, &loc)?;
    // The options, copied out of the packet (a walk over packet bytes at variable offsets is
    // more than the verifier can follow).
    // Masked and compared so the verifier knows the bounds (th_len is 20..=60).
    let opt_len = th_len.wrapping_sub(20) & 0x3c;
    if opt_len > 40 {
        return None;
    }
    let mut ob = [0u8; 40];
    // Through the stack, so LLVM cannot turn `n >= 4` into `opt_len != 0` (the same thing
    // here): Linux 6.1's verifier learns no lower bound from `!= 0` and refuses the helper's
    // "zero-sized read"; from `>= 4` it learns one.
    let n = core::hint::black_box(opt_len);
    if n >= 4 {
        // SAFETY: `ob` holds 40 ≥ n bytes; the helper checks the packet's bounds.
        let r =
            unsafe { bpf_xdp_load_bytes(ctx.ctx, (loc.l4 + 20) as u32, ob.as_mut_ptr().cast(), n) };
        if r != 0 {
            return None;
        }
    }
    let opts = syn_options(&ob[..], 0, opt_len as usize);
    let cookie = make_cookie(ctx, &loc, th_len)?;
    let key = ListenerKey::new(loc.family, &dst, dport);
    let cfg = t.cookie_cfg();
    // SAFETY: no arguments. The kernel's TCP timestamps count CLOCK_MONOTONIC milliseconds.
    let now_ms = (unsafe { bpf_ktime_get_ns() } / 1_000_000) as u32;
    let p = AnswerParams::of(&cfg, t.listener(&key).as_ref(), loc.family, now_ms);
    let mut a = synack(sport, dport, seq, cookie, &opts, &p);
    if resize(ctx, loc.l4 + a.len).is_none() {
        // No room to grow (an option-less SYN on veth, whose frames can lack tailroom): the
        // answer without options takes the SYN's own header's place.
        a = a.without_options();
        resize(ctx, loc.l4 + a.len)?;
        tables::cookie_event(STAT_NO_OPTIONS);
    }
    let c = tcp_checksum(loc.family, &dst, &src, &a.tcp[..a.len.min(40)]);
    a.tcp[16..18].copy_from_slice(&c.to_be_bytes());
    // The frame has the answer's size now: the writes below cannot miss.
    swap_macs(ctx)?;
    write_ip(ctx, &loc, &dst, &src, a.len, cfg.ttl)?;
    write_tcp(ctx, loc.l4, &a)
}

/// The answer's TCP header at `l4` of a frame sized to hold exactly it: the fixed 20 bytes,
/// then the options word by word (as many as the answer has).
#[inline(always)]
fn write_tcp(ctx: &XdpContext, l4: usize, a: &SynAck) -> Option<()> {
    let p = at(ctx, l4, 20)?;
    let mut head = [0u8; 20];
    head.copy_from_slice(&a.tcp[..20]);
    // SAFETY: 20 writable bytes at `p`, checked by `at`.
    unsafe { core::ptr::write_unaligned(p.cast::<[u8; 20]>(), head) };
    for w in 0..5 {
        let off = 20 + 4 * w;
        if off >= a.len {
            break;
        }
        let p = at(ctx, l4 + off, 4)?;
        let word = [a.tcp[off], a.tcp[off + 1], a.tcp[off + 2], a.tcp[off + 3]];
        // SAFETY: 4 writable bytes at `p`, checked by `at`.
        unsafe { core::ptr::write_unaligned(p.cast::<[u8; 4]>(), word) };
    }
    Some(())
}

/// The kernel's cookie for this SYN (its own function and secret), computed on the SYN in
/// place. The helper reads `th_len` bytes of TCP header, a length the verifier must see
/// bounded by the bytes proven in the frame: one call per bound, the smallest that holds it.
#[inline(always)]
fn make_cookie(ctx: &XdpContext, loc: &Located, th_len: u32) -> Option<u32> {
    if th_len <= 20 {
        cookie_within::<20>(ctx, loc, th_len)
    } else if th_len <= 40 {
        cookie_within::<40>(ctx, loc, th_len)
    } else {
        cookie_within::<60>(ctx, loc, th_len)
    }
}

/// [`make_cookie`] for a TCP header of at most `N` bytes, `N` of them in the frame.
#[inline(always)]
fn cookie_within<const N: usize>(ctx: &XdpContext, loc: &Located, th_len: u32) -> Option<u32> {
    if th_len as usize > N {
        return None;
    }
    let ip_len = if loc.family == Family::V4 { 20 } else { 40 };
    let iph = at(ctx, loc.l3, ip_len)?;
    let th = at(ctx, loc.l4, N)?;
    // Bounded again right before the call, through the stack (20 ≤ th_len ≤ N already, so
    // the clamp changes nothing): LLVM otherwise passes a copy reloaded without the checks
    // above, or merges two checks into one range test the verifier cannot follow, and Linux
    // 6.1's verifier then sees a length that may be 0 ("invalid access to packet … size=0").
    let len = core::hint::black_box(th_len).clamp(20, N as u32);
    // SAFETY: `iph` and `th` point into the packet with the bytes the helpers read (an IP
    // header; N ≥ len bytes of TCP header), checked just above.
    let r = unsafe {
        if loc.family == Family::V4 {
            bpf_tcp_raw_gen_syncookie_ipv4(iph.cast::<iphdr>(), th.cast::<tcphdr>(), len)
        } else {
            bpf_tcp_raw_gen_syncookie_ipv6(iph.cast::<ipv6hdr>(), th.cast::<tcphdr>(), len)
        }
    };
    (r >= 0).then_some(r as u32)
}

#[inline(always)]
fn swap_macs(ctx: &XdpContext) -> Option<()> {
    let p = at(ctx, 0, 12)?;
    // SAFETY: 12 bytes at `p`, checked by `at`.
    unsafe {
        let m = core::ptr::read_unaligned(p.cast::<[u8; 12]>());
        let mut s = [0u8; 12];
        s[..6].copy_from_slice(&m[6..]);
        s[6..].copy_from_slice(&m[..6]);
        core::ptr::write_unaligned(p.cast::<[u8; 12]>(), s);
    }
    Some(())
}

/// The answer's IP header, from `from` to `to`.
#[inline(always)]
fn write_ip(
    ctx: &XdpContext,
    loc: &Located,
    from: &[u8; 16],
    to: &[u8; 16],
    tcp_len: usize,
    ttl: u8,
) -> Option<()> {
    if loc.family == Family::V4 {
        let h = ipv4_header(from, to, tcp_len, ttl);
        let p = at(ctx, loc.l3, 20)?;
        // SAFETY: 20 bytes at `p`, checked by `at`.
        unsafe { core::ptr::write_unaligned(p.cast::<[u8; 20]>(), h) };
    } else {
        let mut h = [0u8; 40];
        h[0] = 0x60;
        h[4..6].copy_from_slice(&(tcp_len as u16).to_be_bytes());
        h[6] = fw_common::packet::IPPROTO_TCP;
        h[7] = ttl;
        h[8..24].copy_from_slice(from);
        h[24..40].copy_from_slice(to);
        let p = at(ctx, loc.l3, 40)?;
        // SAFETY: 40 bytes at `p`, checked by `at`.
        unsafe { core::ptr::write_unaligned(p.cast::<[u8; 40]>(), h) };
    }
    Some(())
}
