//! SYN cookies answered from XDP (`syn_cookies = "always" | "auto"`): the decision half, shared
//! by the kernel (`fw_cookie`, tail-called by `fw_xdp`; `fw_egress`) and userspace.
//!
//! A SYN to an allowed port is answered with a SYN+ACK whose sequence number is a cookie made
//! by the kernel's own function and secret (`bpf_tcp_raw_gen_syncookie_*`), so nothing of a
//! spoofed flood reaches the socket layer. The client's ACK is checked here
//! (`bpf_tcp_raw_check_syncookie_*`), gets its `In` entry and goes on to the listener, which
//! completes the handshake itself in `cookie_v4_check`/`cookie_v6_check` — but only if it
//! accepts cookies at that moment: `tcp_syncookies` is not 0 and the listener's SYN queue
//! overflowed in the last two minutes (`tcp_synq_no_recent_overflow`; with
//! `tcp_syncookies = 2` every SYN the kernel answers counts as one). fw cannot see that stamp,
//! but it sees its effect: a SYN+ACK the kernel sends with a cookie of its own. So:
//!
//! - the egress program checks the SYN+ACKs of allowed ports for a kernel cookie and stamps
//!   the listener ([`Listener::seen`]), learning the MSS, window and window scale it announces;
//! - a SYN is answered from XDP only while that stamp is fresh ([`ACCEPT_TICKS`], half of the
//!   kernel's two minutes); otherwise it goes on to the kernel, as without cookies;
//! - while answering, one SYN a tick goes on to the kernel once the stamp is
//!   [`REFRESH_TICKS`] old: with `tcp_syncookies = 2` the kernel answers it with a cookie,
//!   which renews both its own stamp and fw's.
//!
//! Only the host's own SYN+ACKs create [`Listener`] entries: a spoofed flood cannot fill that
//! table. Time is counted in ticks of 2^30 ns (about 1.07 s) of CLOCK_MONOTONIC_COARSE, the
//! unit of [`crate::flow::hint_time`].
//!
//! TCP options: a cookie keeps only the MSS (an index into the kernel's table of four). The
//! kernel recovers window scaling and SACK from the low 6 bits of the timestamp the client
//! echoes, after subtracting the per-connection timestamp offset — which only the kernel can
//! compute, unless `tcp_timestamps = 2` turns the offsets off. So the answer carries the
//! timestamp option (and with it window scaling and SACK) only when the host says so
//! ([`CookieCfg::TIMESTAMPS`]); otherwise it carries the MSS alone, as the kernel's own cookie
//! answer does for clients without timestamps.

use crate::{
    Reason,
    decide::{Decision, Tables, ingress_key},
    flow::{FlowTable, SOURCE_QUOTA, Segment, hint_slot, hint_time},
    maps::{Config, PortProto, SLOT_LIMITED},
    packet::{
        ETH_HLEN, ETH_P_8021AD, ETH_P_8021Q, ETH_P_IPV4, ETH_P_IPV6, Family, Fragment, IPPROTO_TCP,
        Ip, L4, PacketView,
    },
    tcp::{ACK, FlagClass, RST, SYN, classify},
    track::{established_state, source_key},
};

/// fw answers for a listener only this many ticks after the last cookie SYN+ACK the kernel
/// sent for it (~64 s; the kernel accepts cookie ACKs for 120 s after its last overflow).
pub const ACCEPT_TICKS: u32 = 60;
/// While answering for a listener, one SYN a tick goes on to the kernel once the kernel's last
/// cookie is this old (~8.6 s), so its cookie mode and fw's view of it stay fresh.
pub const REFRESH_TICKS: u32 = 8;
/// ACKs of no connection are checked for a cookie until this long after the listener's last
/// answer from XDP (a cookie is valid for at most two minutes: `MAX_SYNCOOKIE_AGE`).
pub const CHECK_TICKS: u32 = 120;
/// `auto`: answers go on this long after the SYN rate was last above the threshold.
pub const HOLD_TICKS: u32 = 30;

/// Indexes of [`crate::maps::MAP_COOKIE_STATS`].
pub const STAT_KEEPALIVE: u32 = 0;
/// SYN+ACKs with a cookie of the kernel's own seen leaving (listener stamps renewed).
pub const STAT_KERNEL_COOKIE: u32 = 1;
/// Answers that could not be built (the cookie helper failed, or the frame was too short for
/// it): the SYN went on to the kernel with the policy's verdict, as without cookies.
pub const STAT_TX_FAILED: u32 = 2;
/// `fw_cookie` was not in its program array (fw runs as an extension of a libxdp dispatcher,
/// where it cannot be): the packet kept the policy's verdict without the cookie step.
pub const STAT_NO_PROGRAM: u32 = 3;
/// SYNs with IPv4 options or IPv6 extension headers while answering: passed to the kernel
/// (the answer rewrites plain headers only).
pub const STAT_NOT_PLAIN: u32 = 4;
/// Answers sent without TCP options: the frame could not grow to hold them (no tailroom, as on
/// veth), so the SYN+ACK took the SYN's own 20-byte header's place.
pub const STAT_NO_OPTIONS: u32 = 5;
/// Entries of [`crate::maps::MAP_COOKIE_STATS`].
pub const STATS: u32 = 8;

/// The names of the statistics, by index (for `fw status`).
pub const STAT_NAMES: [(u32, &str); 6] = [
    (
        STAT_KEEPALIVE,
        "SYNs passed on to keep the kernel's cookie mode fresh",
    ),
    (
        STAT_KERNEL_COOKIE,
        "cookie SYN+ACKs of the kernel's own seen leaving",
    ),
    (
        STAT_TX_FAILED,
        "answers that could not be built (SYN passed to the kernel)",
    ),
    (
        STAT_NO_PROGRAM,
        "packets judged without the cookie program (missing: SYN cookies unavailable)",
    ),
    (
        STAT_NOT_PLAIN,
        "SYNs with IP options or extension headers passed to the kernel",
    ),
    (
        STAT_NO_OPTIONS,
        "answers sent without TCP options (no room to grow the frame)",
    ),
];

/// A local listener: address and port (the key of [`crate::maps::MAP_LISTENERS`]).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct ListenerKey {
    /// IPv4 in the first 4 bytes.
    pub addr: [u8; 16],
    pub port: u16,
    /// 4 or 6.
    pub family: u8,
    pub _pad: u8,
}
const _: () = assert!(size_of::<ListenerKey>() == 20);

impl ListenerKey {
    #[inline(always)]
    pub fn new(family: Family, addr: &[u8; 16], port: u16) -> Self {
        // Copies of a constant length only (a loop of 4 or 16 bytes is a byte-at-a-time
        // memset and memcpy call in BPF: tests/tests/bpf_object.rs).
        let a = if family == Family::V4 {
            let mut a = [0u8; 16];
            a[..4].copy_from_slice(&addr[..4]);
            a
        } else {
            *addr
        };
        ListenerKey {
            addr: a,
            port,
            family: if family == Family::V4 { 4 } else { 6 },
            _pad: 0,
        }
    }
}

/// What fw knows about one listener's cookie mode (the value of
/// [`crate::maps::MAP_LISTENERS`]). Times are ticks.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Listener {
    /// When the kernel last answered a SYN for it with a cookie (it accepts cookie ACKs).
    pub seen: u32,
    /// When fw last passed a SYN on to keep that fresh.
    pub passed: u32,
    /// When fw last answered a SYN for it (ACKs are checked for a cookie after that).
    pub answered: u32,
    /// What the kernel's SYN+ACK announced (0: not learnt yet).
    pub mss: u16,
    pub window: u16,
    /// The window scale the kernel announced ([`Listener::NO_WSCALE`]: not learnt yet).
    pub wscale: u8,
    pub _pad: [u8; 3],
}
const _: () = assert!(size_of::<Listener>() == 20);

impl Default for Listener {
    fn default() -> Self {
        Self::new()
    }
}

impl Listener {
    pub const NO_WSCALE: u8 = 0xff;

    pub const fn new() -> Self {
        Listener {
            seen: 0,
            passed: 0,
            answered: 0,
            mss: 0,
            window: 0,
            wscale: Self::NO_WSCALE,
            _pad: [0; 3],
        }
    }

    /// The kernel accepts cookie ACKs for it now (as far as fw can tell).
    #[inline(always)]
    pub const fn accepts(&self, now: u32) -> bool {
        self.seen != 0 && now.wrapping_sub(self.seen) <= ACCEPT_TICKS
    }
}

/// The host's facts the answer needs (the value of [`crate::maps::MAP_COOKIE_CFG`]), written
/// by `fw up`/`fw apply` from the interface's MTU and the namespace's sysctls.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CookieCfg {
    /// `auto`: SYNs per tick on one CPU above which answers start.
    pub threshold: u32,
    /// The MSS to announce until a listener's own is learnt (MTU − 40, MTU − 60).
    pub mss4: u16,
    pub mss6: u16,
    /// The window scale the kernel computes for a cookie connection (from `tcp_rmem` and
    /// `rmem_max`), until a listener's own is learnt.
    pub wscale: u8,
    /// [`CookieCfg::TIMESTAMPS`], [`CookieCfg::SACK`], [`CookieCfg::WSCALE`].
    pub flags: u8,
    /// TTL / hop limit of the answer (`ip_default_ttl`).
    pub ttl: u8,
    pub _pad: u8,
}
const _: () = assert!(size_of::<CookieCfg>() == 12);

impl Default for CookieCfg {
    /// Linux's defaults on a 1500-byte link, no timestamp options (the safe side).
    fn default() -> Self {
        CookieCfg {
            threshold: 1000,
            mss4: 1460,
            mss6: 1440,
            wscale: 7,
            flags: Self::SACK | Self::WSCALE,
            ttl: 64,
            _pad: 0,
        }
    }
}

impl CookieCfg {
    /// `tcp_timestamps = 2`: no per-connection timestamp offset, so the answer's timestamp can
    /// carry window scaling and SACK the way the kernel decodes them.
    pub const TIMESTAMPS: u8 = 1;
    /// `tcp_sack` is on (the kernel refuses a cookie that claims SACK otherwise).
    pub const SACK: u8 = 2;
    /// `tcp_window_scaling` is on (likewise).
    pub const WSCALE: u8 = 4;

    #[inline(always)]
    pub const fn has(&self, f: u8) -> bool {
        self.flags & f != 0
    }
}

/// One CPU's SYN count for `auto` (the value of [`crate::maps::MAP_COOKIE_RATE`]).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct CookieRate {
    /// The tick `count` belongs to.
    pub tick: u32,
    pub count: u32,
    /// Answers go on until this tick.
    pub until: u32,
    pub _pad: u32,
}
const _: () = assert!(size_of::<CookieRate>() == 16);

/// A handshake's addresses and numbers as an ACK carries them: `src`/`sport` the client,
/// `seq` the client's ISN + 1, `ack` the cookie + 1.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct CookieTuple {
    pub family: u8,
    pub src: [u8; 16],
    pub dst: [u8; 16],
    pub sport: u16,
    pub dport: u16,
    pub seq: u32,
    pub ack: u32,
}

/// Ticks of CLOCK_MONOTONIC_COARSE nanoseconds (never 0, which means "never").
#[inline(always)]
pub const fn tick(ns: u64) -> u32 {
    let t = hint_time(ns);
    if t == 0 { 1 } else { t }
}

/// Whether `ip` is a SYN the cookie step sees if the rules admit it (the flood step then leaves
/// the rule's `total` to the cookie step: [`crate::flood::decide_flood`]).
#[inline(always)]
pub fn takes_syn(cfg: &Config, ip: &Ip) -> bool {
    if !cfg.has(Config::SYN_COOKIES) || ip.frag != Fragment::No {
        return false;
    }
    matches!(ip.l4, L4::Tcp { flags, .. } if classify(flags) == FlagClass::Syn)
}

/// Whether `d`, decided for `ip` without the cookie step, goes on to it: a SYN an allow rule
/// admits, or an ACK of no connection that would be dropped for that. `fw_xdp` tail-calls
/// `fw_cookie` for exactly these.
#[inline(always)]
pub fn needs_step(cfg: &Config, ip: &Ip, d: &Decision) -> bool {
    if !cfg.has(Config::SYN_COOKIES) || ip.frag != Fragment::No {
        return false;
    }
    let L4::Tcp { flags, .. } = ip.l4 else {
        return false;
    };
    match classify(flags) {
        FlagClass::Syn => d.pass && d.why().is_none(),
        FlagClass::Other => flags & (SYN | ACK | RST) == ACK && d.slot == Reason::TcpNotSyn.slot(),
        _ => false,
    }
}

/// The cookie step for a packet [`needs_step`] picked: a SYN is answered with a cookie
/// ([`Reason::SynCookie`]) or keeps `d` (the kernel answers it); an ACK with a valid cookie
/// completes its handshake ([`Reason::SynCookieAck`]), one without is [`Reason::SynCookieBad`]
/// while answers are out, else keeps `d`.
#[inline(always)]
pub fn step<T: Tables>(t: &T, cfg: &Config, ip: &Ip, d: Decision) -> Decision {
    let L4::Tcp {
        sport,
        dport,
        flags,
        seq,
        ack,
        len,
    } = ip.l4
    else {
        return d;
    };
    if flags & SYN != 0 {
        return on_syn(t, cfg, ip, dport, d);
    }
    let seg = Segment {
        flags,
        seq,
        ack,
        len,
    };
    on_ack(t, ip, sport, dport, &seg, d)
}

/// A SYN the cookie step does not answer goes on to the kernel: it spends its rule's `total`
/// now (the flood step left it: [`takes_syn`]).
#[inline(always)]
fn on_syn<T: Tables>(t: &T, cfg: &Config, ip: &Ip, dport: u16, d: Decision) -> Decision {
    let r = answer_syn(t, cfg, ip, dport, d);
    if r != d {
        return r;
    }
    to_kernel(t, cfg, ip, d)
}

/// `d` for a packet the cookie step saw that goes on to the kernel after all: a SYN
/// ([`takes_syn`]) spends its rule's `total` now, which the flood step left to this step. Also
/// for the XDP program's fallbacks (no cookie program to tail-call, an answer it cannot build).
#[inline(always)]
pub fn to_kernel<T: Tables>(t: &T, cfg: &Config, ip: &Ip, d: Decision) -> Decision {
    let L4::Tcp { dport, .. } = ip.l4 else {
        return d;
    };
    if !takes_syn(cfg, ip) || !d.pass {
        return d;
    }
    // The rule's flags from the policy itself (the decision carries none): a limit entry of a
    // rule no longer limited may linger, and must not be read.
    let slot = crate::limit::rule_for(t, ip.family, &ip.src, PortProto::Tcp, dport);
    if slot & SLOT_LIMITED != 0
        && let Some(over) = crate::limit::check_total(t, slot)
    {
        return over;
    }
    d
}

#[inline(always)]
fn answer_syn<T: Tables>(t: &T, cfg: &Config, ip: &Ip, dport: u16, d: Decision) -> Decision {
    let now = tick(t.now());
    if cfg.has(Config::SYN_COOKIES_AUTO) && !flooded(t, now) {
        return d;
    }
    let key = ListenerKey::new(ip.family, &ip.dst, dport);
    let Some(mut l) = t.listener(&key) else {
        return d;
    };
    if !l.accepts(now) {
        return d;
    }
    if ip.ip_options {
        t.cookie_event(STAT_NOT_PLAIN);
        return d;
    }
    if now.wrapping_sub(l.seen) >= REFRESH_TICKS && l.passed != now {
        l.passed = now;
        t.listener_write(&key, &l);
        t.cookie_event(STAT_KEEPALIVE);
        return d;
    }
    if l.answered != now {
        l.answered = now;
        t.listener_write(&key, &l);
    }
    Decision::reason(Reason::SynCookie)
}

/// `auto`: count this SYN on this CPU; whether answers are on (the rate was above the
/// threshold within [`HOLD_TICKS`]).
#[inline(always)]
fn flooded<T: Tables>(t: &T, now: u32) -> bool {
    let threshold = t.cookie_cfg().threshold;
    t.cookie_rate_with(|r| {
        if r.tick != now {
            r.tick = now;
            r.count = 0;
        }
        r.count = r.count.saturating_add(1);
        if r.count > threshold {
            r.until = now.wrapping_add(HOLD_TICKS);
        }
        r.until != 0 && (r.until.wrapping_sub(now) as i32) > 0
    })
    .unwrap_or(false)
}

#[inline(always)]
fn on_ack<T: Tables>(
    t: &T,
    ip: &Ip,
    sport: u16,
    dport: u16,
    seg: &Segment,
    d: Decision,
) -> Decision {
    let now = tick(t.now());
    let key = ListenerKey::new(ip.family, &ip.dst, dport);
    let Some(l) = t.listener(&key) else {
        return d;
    };
    if l.answered == 0 || now.wrapping_sub(l.answered) > CHECK_TICKS {
        return d;
    }
    let c = CookieTuple {
        family: key.family,
        src: ip.src,
        dst: ip.dst,
        sport,
        dport,
        seq: seg.seq,
        ack: seg.ack,
    };
    if !t.syncookie_valid(&c) {
        return Decision::reason(Reason::SynCookieBad);
    }
    admit(t, &ingress_key(ip, sport, dport), seg);
    // A completed handshake, as a promoted embryo's: its source is known to the rate limits.
    crate::limit::on_handshake(t, &crate::flood::Source::of(ip), dport);
    Decision::reason(Reason::SynCookieAck)
}

/// A handshake completed through a cookie: the connection's `In` entry, or (its source holds
/// [`SOURCE_QUOTA`] already) an established entry in the Embryo table, as a promoted embryo
/// gets.
#[inline(always)]
fn admit<T: Tables>(t: &T, key: &crate::FlowKey, seg: &Segment) {
    let mut st = established_state(t.now(), seg, 0);
    let src = source_key(key);
    let n = t.source_count(&src);
    if n >= SOURCE_QUOTA {
        st.flags |= crate::FlowState::OVERFLOW;
        t.flow_write(FlowTable::Embryo, key, &st, true);
        t.embryo_hint_set(hint_slot(key), u32::MAX);
    } else {
        t.flow_write(FlowTable::In, key, &st, true);
        t.source_count_set(&src, n + 1);
    }
}

/// A SYN+ACK this host sends (egress): if its sequence number is a cookie of the kernel's own,
/// the listener accepts cookie ACKs now — stamp it, and learn what it announces.
#[inline(always)]
pub fn observe<P: PacketView + ?Sized, T: Tables>(
    t: &T,
    pkt: &P,
    ip: &Ip,
    sport: u16,
    dport: u16,
    seq: u32,
    ack: u32,
) {
    if t.port(PortProto::Tcp, sport) == 0 {
        return;
    }
    let now = tick(t.now());
    let key = ListenerKey::new(ip.family, &ip.src, sport);
    let old = t.listener(&key);
    if old.is_some_and(|l| l.seen == now) {
        return;
    }
    // The ACK that would answer it: the client's ISN + 1 and the cookie + 1.
    let c = CookieTuple {
        family: key.family,
        src: ip.dst,
        dst: ip.src,
        sport: dport,
        dport: sport,
        seq: ack,
        ack: seq.wrapping_add(1),
    };
    if !t.syncookie_valid(&c) {
        return;
    }
    t.cookie_event(STAT_KERNEL_COOKIE);
    let mut l = old.unwrap_or_default();
    l.seen = now;
    if let Some(a) = announced(pkt) {
        l.mss = a.mss;
        l.window = a.window;
        if a.wscale != Listener::NO_WSCALE {
            l.wscale = a.wscale;
        }
    }
    t.listener_write(&key, &l);
}

/// What a SYN+ACK of Linux's announces, read where Linux puts it: the MSS option first, the
/// window scale option (NOP, WS) last. Untagged frames with plain headers only.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Announced {
    pub mss: u16,
    pub window: u16,
    pub wscale: u8,
}

#[inline(always)]
pub fn announced<P: PacketView + ?Sized>(pkt: &P) -> Option<Announced> {
    let eth: &[u8; ETH_HLEN] = pkt.bytes(0)?;
    let l4 = match u16::from_be_bytes([eth[12], eth[13]]) {
        ETH_P_IPV4 => {
            let v: &[u8; 2] = pkt.bytes(ETH_HLEN)?;
            if v[0] != 0x45 {
                return None;
            }
            ETH_HLEN + 20
        }
        ETH_P_IPV6 => {
            let h: &[u8; 8] = pkt.bytes(ETH_HLEN)?;
            if h[6] != IPPROTO_TCP {
                return None;
            }
            ETH_HLEN + 40
        }
        _ => return None,
    };
    let th: &[u8; 24] = pkt.bytes(l4)?;
    let doff = ((th[12] >> 4) as usize) * 4;
    if doff < 24 || th[20] != 2 || th[21] != 4 {
        return None;
    }
    let window = u16::from_be_bytes([th[14], th[15]]);
    let mss = u16::from_be_bytes([th[22], th[23]]);
    // The option area's last word, at a masked offset the verifier can follow (doff ≤ 60).
    let last: &[u8; 4] = pkt.bytes(l4 + ((doff - 4) & 0x3c))?;
    let wscale = if last[0] == 1 && last[1] == 3 && last[2] == 3 {
        last[3]
    } else {
        Listener::NO_WSCALE
    };
    Some(Announced {
        mss,
        window,
        wscale,
    })
}

/// Where the headers of a frame the answer can rewrite are: Ethernet, up to two VLAN tags, an
/// IPv4 header without options or an IPv6 header followed by TCP.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Located {
    pub family: Family,
    pub l3: usize,
    pub l4: usize,
}

#[inline(always)]
pub fn locate<P: PacketView + ?Sized>(pkt: &P) -> Option<Located> {
    let eth: &[u8; ETH_HLEN] = pkt.bytes(0)?;
    let mut ethertype = u16::from_be_bytes([eth[12], eth[13]]);
    let mut off = ETH_HLEN;
    for _ in 0..2 {
        if ethertype != ETH_P_8021Q && ethertype != ETH_P_8021AD {
            break;
        }
        let tag: &[u8; 4] = pkt.bytes(off)?;
        ethertype = u16::from_be_bytes([tag[2], tag[3]]);
        off += 4;
    }
    match ethertype {
        ETH_P_IPV4 => {
            let h: &[u8; 20] = pkt.bytes(off)?;
            (h[0] == 0x45 && h[9] == IPPROTO_TCP).then_some(Located {
                family: Family::V4,
                l3: off,
                l4: off + 20,
            })
        }
        ETH_P_IPV6 => {
            let h: &[u8; 40] = pkt.bytes(off)?;
            (h[0] >> 4 == 6 && h[6] == IPPROTO_TCP).then_some(Located {
                family: Family::V6,
                l3: off,
                l4: off + 40,
            })
        }
        _ => None,
    }
}

pub const TCPOPT_EOL: u8 = 0;
pub const TCPOPT_NOP: u8 = 1;
pub const TCPOPT_MSS: u8 = 2;
pub const TCPOPT_WINDOW: u8 = 3;
pub const TCPOPT_SACK_PERM: u8 = 4;
pub const TCPOPT_TIMESTAMP: u8 = 8;

/// The options of a client's SYN that shape the answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct SynOptions {
    /// The client's window scale (clamped to 14, as the kernel does), if it offered one.
    pub wscale: Option<u8>,
    pub sack: bool,
    /// The client's timestamp value, if it sent the option.
    pub tsval: Option<u32>,
}

/// The most options any TCP header holds.
pub const MAX_OPTIONS: usize = 40;

/// Parse the TCP options in the `len` bytes at `off` (the kernel program copies them out of
/// the packet first). Bounded: every step moves on by at least one byte of at most
/// [`MAX_OPTIONS`] (no step counter: the verifier can then tell two visits of the loop with the
/// same offset apart only by what was found, which keeps its walk short). A malformed option
/// ends the walk (what was read stays).
#[inline(always)]
pub fn syn_options<P: PacketView + ?Sized>(pkt: &P, off: usize, len: usize) -> SynOptions {
    let mut o = SynOptions::default();
    let end = off + len.min(MAX_OPTIONS);
    let mut off = off;
    while off < end {
        // Kind and length read together: a lone NOP or EOL in the frame's last byte carries
        // nothing (and a 1-byte bounds check is one the verifier cannot use).
        let Some(h) = pkt.bytes::<2>(off) else { break };
        let kind = h[0];
        if kind == TCPOPT_EOL {
            break;
        }
        if kind == TCPOPT_NOP {
            off += 1;
            continue;
        }
        let len = h[1] as usize;
        if len < 2 || off + len > end {
            break;
        }
        match (kind, len) {
            (TCPOPT_WINDOW, 3) => {
                if let Some(b) = pkt.bytes::<3>(off) {
                    o.wscale = Some(if b[2] > 14 { 14 } else { b[2] });
                }
            }
            (TCPOPT_SACK_PERM, 2) => o.sack = true,
            (TCPOPT_TIMESTAMP, 10) => {
                if let Some(b) = pkt.bytes::<6>(off) {
                    o.tsval = Some(u32::from_be_bytes([b[2], b[3], b[4], b[5]]));
                }
            }
            _ => {}
        }
        off += len;
    }
    o
}

/// What the answer announces for this host.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AnswerParams {
    pub mss: u16,
    pub window: u16,
    pub wscale: u8,
    /// [`CookieCfg`] flags.
    pub host: u8,
    /// The kernel's TCP timestamp clock: CLOCK_MONOTONIC milliseconds.
    pub now_ms: u32,
}

impl AnswerParams {
    /// What the listener announced itself where fw learnt it, else the host's defaults.
    #[inline(always)]
    pub fn of(cfg: &CookieCfg, l: Option<&Listener>, family: Family, now_ms: u32) -> Self {
        let mut p = AnswerParams {
            mss: if family == Family::V4 {
                cfg.mss4
            } else {
                cfg.mss6
            },
            window: 64240,
            wscale: cfg.wscale,
            host: cfg.flags,
            now_ms,
        };
        if let Some(l) = l {
            if l.mss != 0 {
                p.mss = l.mss;
            }
            if l.window != 0 {
                p.window = l.window;
            }
            if l.wscale != Listener::NO_WSCALE {
                p.wscale = l.wscale;
            }
        }
        p
    }
}

/// The TCP header of a SYN+ACK answer (options included) and its length.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SynAck {
    pub tcp: [u8; 40],
    pub len: usize,
}

/// The timestamp value that carries the options the kernel decodes from a cookie ACK
/// (`cookie_init_timestamp`): the clock with its low 6 bits replaced, never ahead of it.
#[inline(always)]
pub const fn cookie_tsval(now_ms: u32, wscale: Option<u8>, sack: bool) -> u32 {
    let mut opts: u32 = match wscale {
        Some(w) => w as u32,
        None => 0xf,
    };
    if sack {
        opts |= 0x10;
    }
    let mut ts = (now_ms & !0x3f) | opts;
    if ts > now_ms {
        ts = ts.wrapping_sub(64);
    }
    ts
}

/// The TCP header answering a SYN (`sport`, `dport`, `seq` are the SYN's) with `cookie`: the
/// options the kernel's own cookie answer would carry (MSS; with timestamps allowed and
/// offered: SACK permitted, the timestamp, the window scale). The checksum is left 0.
#[inline(always)]
pub fn synack(
    sport: u16,
    dport: u16,
    seq: u32,
    cookie: u32,
    o: &SynOptions,
    p: &AnswerParams,
) -> SynAck {
    let mut h = [0u8; 40];
    h[0..2].copy_from_slice(&dport.to_be_bytes());
    h[2..4].copy_from_slice(&sport.to_be_bytes());
    h[4..8].copy_from_slice(&cookie.to_be_bytes());
    h[8..12].copy_from_slice(&seq.wrapping_add(1).to_be_bytes());
    h[13] = SYN | ACK;
    h[14..16].copy_from_slice(&p.window.to_be_bytes());
    h[20] = TCPOPT_MSS;
    h[21] = 4;
    h[22..24].copy_from_slice(&p.mss.to_be_bytes());
    let mut len = 24;
    let ts_ok = p.host & CookieCfg::TIMESTAMPS != 0;
    if let (true, Some(tsecr)) = (ts_ok, o.tsval) {
        let ws = if p.host & CookieCfg::WSCALE != 0 {
            o.wscale
        } else {
            None
        };
        let sack = o.sack && p.host & CookieCfg::SACK != 0;
        let tsval = cookie_tsval(p.now_ms, ws, sack);
        if sack {
            h[24] = TCPOPT_SACK_PERM;
            h[25] = 2;
        } else {
            h[24] = TCPOPT_NOP;
            h[25] = TCPOPT_NOP;
        }
        h[26] = TCPOPT_TIMESTAMP;
        h[27] = 10;
        h[28..32].copy_from_slice(&tsval.to_be_bytes());
        h[32..36].copy_from_slice(&tsecr.to_be_bytes());
        len = 36;
        if ws.is_some() {
            h[36] = TCPOPT_NOP;
            h[37] = TCPOPT_WINDOW;
            h[38] = 3;
            h[39] = if p.wscale > 14 { 14 } else { p.wscale };
            len = 40;
        }
    }
    h[12] = ((len / 4) as u8) << 4;
    SynAck { tcp: h, len }
}

impl SynAck {
    /// The same answer without any option (20 bytes): it fits where the SYN's own header was,
    /// for a frame that cannot grow. The client then assumes the default MSS (536) and uses no
    /// window scaling, SACK or timestamps, which the cookie does not need.
    #[inline(always)]
    pub fn without_options(mut self) -> SynAck {
        let mut i = 20;
        while i < 40 {
            self.tcp[i] = 0;
            i += 1;
        }
        self.tcp[12] = 5 << 4;
        self.len = 20;
        self
    }
}

/// One's complement sum of `b` (big-endian 16-bit words, an odd last byte padded) added to `s`.
#[inline(always)]
pub fn csum_add(mut s: u32, b: &[u8]) -> u32 {
    let mut i = 0;
    while i + 1 < b.len() {
        s += u16::from_be_bytes([b[i], b[i + 1]]) as u32;
        i += 2;
    }
    if i < b.len() {
        s += (b[i] as u32) << 8;
    }
    s
}

/// Fold a 32-bit sum and complement it: the checksum field's value.
#[inline(always)]
pub const fn csum_fold(mut s: u32) -> u16 {
    s = (s & 0xffff) + (s >> 16);
    s = (s & 0xffff) + (s >> 16);
    !(s as u16)
}

/// The TCP checksum of `tcp` from `src` to `dst` (IPv4 addresses in the first 4 bytes).
#[inline(always)]
pub fn tcp_checksum(family: Family, src: &[u8; 16], dst: &[u8; 16], tcp: &[u8]) -> u16 {
    let n = if family == Family::V4 { 4 } else { 16 };
    let mut s = csum_add(0, &src[..n]);
    s = csum_add(s, &dst[..n]);
    s += IPPROTO_TCP as u32 + tcp.len() as u32;
    csum_fold(csum_add(s, tcp))
}

/// The IPv4 header of an answer from `src` to `dst` carrying `payload` bytes: DF, ID 0, as
/// Linux sends its SYN+ACKs.
#[inline(always)]
pub fn ipv4_header(src: &[u8; 16], dst: &[u8; 16], payload: usize, ttl: u8) -> [u8; 20] {
    let mut h = [0u8; 20];
    h[0] = 0x45;
    h[2..4].copy_from_slice(&((20 + payload) as u16).to_be_bytes());
    h[6] = 0x40;
    h[8] = ttl;
    h[9] = IPPROTO_TCP;
    h[12..16].copy_from_slice(&src[..4]);
    h[16..20].copy_from_slice(&dst[..4]);
    let c = csum_fold(csum_add(0, &h));
    h[10..12].copy_from_slice(&c.to_be_bytes());
    h
}

#[cfg(test)]
mod tests;
