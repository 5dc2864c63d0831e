//! Tier 2, SYN cookies from XDP (`syn_cookies`): the real `fw_xdp` → `fw_cookie` →
//! `fw_cookie_tx` chain run with BPF_PROG_TEST_RUN next to the userspace `decide()`. A SYN to a
//! cookie-protected port comes back as XDP_TX with a SYN+ACK whose every field is checked here
//! (addresses, ports, numbers, options, both checksums, computed independently); the ACK that
//! answers it passes — the kernel's own `bpf_tcp_raw_check_syncookie_*` accepted the cookie —
//! and gets its connection entry; a forged ACK is dropped; the kernel's own cookie SYN+ACK,
//! leaving, stamps the listener. Kernel and userspace agree on every verdict and counter slot,
//! and on the flow and listener tables after every step. The userspace mirror cannot compute
//! the kernel's cookies (its secret): it is taught the ones the kernel answered with.
//!
//! Run: `cargo build -p fw-user && cargo test -p tests --test kernel_syncookie -- --nocapture`

use fw::{loader::Variant, sys::monotonic_coarse_ns};
use fw_common::{
    Family, Reason,
    frame::PacketSpec,
    syncookie::{
        self, CookieCfg, CookieTuple, Listener, ListenerKey, REFRESH_TICKS, STAT_KEEPALIVE,
        STAT_KERNEL_COOKIE, STAT_NO_PROGRAM, STAT_NOT_PLAIN, tick,
    },
    tcp::{ACK, PSH, RST, SYN},
};
use fw_policy::{Cidr, Policy, blocks::BlockSet, parse_policy};
use fw_testrun::{
    Expect, KernelFilter, MIN_FRAME, Tally, XDP_DROP, XDP_PASS, XDP_TX, require_root,
};

use Expect::{Is, Rule};

const H4: &str = "192.0.2.1";
const P4: &str = "198.51.100.7";
const H6: &str = "2001:db8::1";
const P6: &str = "2001:db8:1::7";
const ISN: u32 = 0x7000_0000;
const CLIENT_TS: u32 = 0x0102_0304;

fn policy(mode: &str) -> Policy {
    let text = format!(
        "[options]\nsyn_cookies = \"{mode}\"\n[[allow]]\nports = [80]\n[[allow]]\nports = [22]\nfrom = [\"198.51.100.0/24\", \"2001:db8:1::/48\"]\n"
    );
    parse_policy("cookies", &text).unwrap_or_else(|e| panic!("{e}"))
}

/// SYN cookies always on, port 80 open with `rule` (a limit line) on its rule.
fn web_policy(rule: &str) -> Policy {
    let text = format!("[options]\nsyn_cookies = \"always\"\n[[allow]]\nports = [80]\n{rule}\n");
    parse_policy("cookies", &text).unwrap_or_else(|e| panic!("{e}"))
}

fn load(p: &Policy) -> KernelFilter {
    require_root();
    KernelFilter::load(p).unwrap_or_else(|e| panic!("loading the fw programs: {e:#}"))
}

fn ends(v6: bool) -> (&'static str, &'static str) {
    if v6 { (H6, P6) } else { (H4, P4) }
}

fn addr16(s: &str) -> [u8; 16] {
    match s.parse::<std::net::IpAddr>().expect("address") {
        std::net::IpAddr::V4(a) => {
            let mut b = [0u8; 16];
            b[..4].copy_from_slice(&a.octets());
            b
        }
        std::net::IpAddr::V6(a) => a.octets(),
    }
}

/// The options Linux puts in a SYN: MSS 1460, SACK permitted, timestamp, NOP, window scale 7.
fn linux_syn_options() -> Vec<u8> {
    let mut o = vec![2, 4, 5, 0xb4, 4, 2, 8, 10];
    o.extend_from_slice(&CLIENT_TS.to_be_bytes());
    o.extend_from_slice(&[0, 0, 0, 0, 1, 3, 3, 7]);
    o
}

fn syn(v6: bool, port: u16, vlans: &[u16]) -> Vec<u8> {
    let (h, p) = ends(v6);
    PacketSpec::tcp(p, h, 40000, port, SYN)
        .seq_ack(ISN, 0)
        .tcp_options(&linux_syn_options())
        .vlans(vlans)
        .build()
}

fn key(v6: bool, port: u16) -> ListenerKey {
    let (h, _) = ends(v6);
    ListenerKey::new(if v6 { Family::V6 } else { Family::V4 }, &addr16(h), port)
}

/// The kernel answered a SYN for this listener with a cookie `ago` ticks ago.
fn seen(f: &KernelFilter, v6: bool, port: u16, ago: u32, l: Listener) {
    let mut l = l;
    l.seen = tick(monotonic_coarse_ns()) - ago;
    f.set_listener(&key(v6, port), &l)
        .unwrap_or_else(|e| panic!("{e:#}"));
}

fn learnt() -> Listener {
    Listener {
        mss: 1400,
        window: 65160,
        wscale: 9,
        ..Listener::new()
    }
}

/// CLOCK_MONOTONIC in ns (what `bpf_ktime_get_ns` reads).
fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: a valid timespec for the kernel to fill.
    let r = unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    assert_eq!(r, 0, "clock_gettime");
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// The one's complement sum over `b` (an odd last byte padded).
fn sum16(b: &[u8]) -> u64 {
    b.chunks(2)
        .map(|c| u64::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)])))
        .sum()
}

fn folds_to_ffff(mut s: u64) -> bool {
    while s > 0xffff {
        s = (s & 0xffff) + (s >> 16);
    }
    s == 0xffff
}

/// The fields of an answer, every one checked against the SYN it answers.
struct Answer {
    cookie: u32,
    tsval: Option<u32>,
    options: Vec<u8>,
}

fn l3_offset(f: &[u8]) -> usize {
    let mut off = 12;
    while matches!(u16::from_be_bytes([f[off], f[off + 1]]), 0x8100 | 0x88a8) {
        off += 4;
    }
    off + 2
}

/// Check `reply` is the SYN+ACK answering `syn` and return what it carries.
fn check_answer(syn: &[u8], reply: &[u8], v6: bool) -> Result<Answer, String> {
    let l3 = l3_offset(syn);
    if l3_offset(reply) != l3 || reply[12..l3] != syn[12..l3] {
        return Err("the VLAN tags and ethertype changed".into());
    }
    if reply[0..6] != syn[6..12] || reply[6..12] != syn[0..6] {
        return Err("the MAC addresses are not swapped".into());
    }
    let (ip_len, src, dst) = if v6 {
        (40, 8..24, 24..40)
    } else {
        (20, 12..16, 16..20)
    };
    let (ip, sip) = (&reply[l3..l3 + ip_len], &syn[l3..l3 + ip_len]);
    if ip[src.clone()] != sip[dst.clone()] || ip[dst.clone()] != sip[src.clone()] {
        return Err("the IP addresses are not swapped".into());
    }
    let l4 = l3 + ip_len;
    let tcp = &reply[l4..];
    let doff = usize::from(tcp[12] >> 4) * 4;
    if tcp.len() != doff {
        return Err(format!(
            "the frame ends {} bytes after the TCP header (data offset {doff})",
            tcp.len() as isize - doff as isize
        ));
    }
    if v6 {
        if ip[0] >> 4 != 6 || ip[6] != 6 || u16::from_be_bytes([ip[4], ip[5]]) as usize != doff {
            return Err(format!("IPv6 header {ip:02x?}"));
        }
    } else {
        if ip[0] != 0x45 || ip[9] != 6 || u16::from_be_bytes([ip[2], ip[3]]) as usize != 20 + doff {
            return Err(format!("IPv4 header {ip:02x?}"));
        }
        if !folds_to_ffff(sum16(ip)) {
            return Err("the IPv4 header checksum is wrong".into());
        }
    }
    let stcp = &syn[l4..];
    if tcp[0..2] != stcp[2..4] || tcp[2..4] != stcp[0..2] {
        return Err("the ports are not swapped".into());
    }
    let ack = u32::from_be_bytes([tcp[8], tcp[9], tcp[10], tcp[11]]);
    if ack != ISN.wrapping_add(1) {
        return Err(format!("acknowledges {ack:#x}, not the SYN's ISN + 1"));
    }
    if tcp[13] != SYN | ACK {
        return Err(format!("flags {:#04x}, not SYN+ACK", tcp[13]));
    }
    let mut pseudo = Vec::new();
    pseudo.extend_from_slice(&ip[src]);
    pseudo.extend_from_slice(&ip[dst]);
    pseudo.extend_from_slice(&[0, 6]);
    pseudo.extend_from_slice(&(doff as u16).to_be_bytes());
    if !folds_to_ffff(sum16(&pseudo) + sum16(tcp)) {
        return Err("the TCP checksum is wrong".into());
    }
    let options = tcp[20..doff].to_vec();
    let tsval = options.windows(2).position(|w| w == [8, 10]).map(|i| {
        u32::from_be_bytes([
            options[i + 2],
            options[i + 3],
            options[i + 4],
            options[i + 5],
        ])
    });
    Ok(Answer {
        cookie: u32::from_be_bytes([tcp[4], tcp[5], tcp[6], tcp[7]]),
        tsval,
        options,
    })
}

/// The client's ACK of an answer: its ISN + 1, the cookie + 1, the timestamps echoed.
fn ack_of(v6: bool, port: u16, cookie: u32, tsval: Option<u32>, flags: u8) -> Vec<u8> {
    let (h, p) = ends(v6);
    let mut spec =
        PacketSpec::tcp(p, h, 40000, port, flags).seq_ack(ISN + 1, cookie.wrapping_add(1));
    if let Some(ts) = tsval {
        let mut o = vec![1, 1, 8, 10];
        o.extend_from_slice(&CLIENT_TS.wrapping_add(1).to_be_bytes());
        o.extend_from_slice(&ts.to_be_bytes());
        spec = spec.tcp_options(&o);
    }
    if flags & PSH != 0 {
        spec = spec.payload(64);
    }
    spec.build()
}

fn tuple(v6: bool, port: u16, cookie: u32) -> CookieTuple {
    let (h, p) = ends(v6);
    CookieTuple {
        family: if v6 { 6 } else { 4 },
        src: addr16(p),
        dst: addr16(h),
        sport: 40000,
        dport: port,
        seq: ISN + 1,
        ack: cookie.wrapping_add(1),
    }
}

/// Run a SYN that must be answered; check the answer; teach the mirror its cookie.
fn answered(
    t: &mut Tally,
    f: &KernelFilter,
    name: &str,
    v6: bool,
    port: u16,
    frame: &[u8],
) -> Option<Answer> {
    t.ingress(f, name, frame, Some(Is(Reason::SynCookie)));
    let (ret, reply) = f.run_out(frame).unwrap_or_else(|e| panic!("{e:#}"));
    if ret != XDP_TX {
        t.fail(format!("{name}: ran again, returned {ret}, not XDP_TX"));
        return None;
    }
    match check_answer(frame, &reply, v6) {
        Ok(a) => {
            f.learn_cookie(tuple(v6, port, a.cookie));
            Some(a)
        }
        Err(e) => {
            t.fail(format!(
                "{name}: {e}\n  syn   {frame:02x?}\n  reply {reply:02x?}"
            ));
            None
        }
    }
}

fn listeners_agree(t: &mut Tally, f: &KernelFilter, when: &str) {
    match f.listener_diff() {
        Ok(d) if d.is_empty() => {}
        Ok(d) => t.fail(format!(
            "{when}: LISTENER TABLES DIFFER:\n    {}",
            d.join("\n    ")
        )),
        Err(e) => t.fail(format!("{when}: {e:#}")),
    }
}

#[test]
fn a_syn_to_a_cookie_port_is_answered_with_a_correct_synack() {
    let p = policy("always");
    let f = load(&p);
    let mut t = Tally::new("answer");
    for (ts, what) in [(true, "timestamps carry options"), (false, "MSS only")] {
        let mut cfg = f.kernel_cookie_cfg().expect("cookie cfg");
        cfg.flags =
            CookieCfg::SACK | CookieCfg::WSCALE | if ts { CookieCfg::TIMESTAMPS } else { 0 };
        f.set_cookie_cfg(cfg).expect("cookie cfg");
        for v6 in [false, true] {
            for vlans in [&[][..], &[100][..], &[100, 200][..]] {
                seen(&f, v6, 80, 1, learnt());
                let name = format!("{what}, v6 {v6}, vlans {vlans:?}");
                let frame = syn(v6, 80, vlans);
                let Some(a) = answered(&mut t, &f, &name, v6, 80, &frame) else {
                    continue;
                };
                // MSS and window as the listener announced them.
                if a.options[..4] != [2, 4, 0x05, 0x78] {
                    t.fail(format!(
                        "{name}: MSS option {:02x?}, want 1400",
                        &a.options[..4]
                    ));
                }
                if ts {
                    let want_opts = [4, 2, 8, 10];
                    let tsval = a.tsval.unwrap_or(0);
                    // The precise clock the program reads (the coarse one lags it by up to a
                    // tick): like the kernel's, the answer's TSval is never ahead of it.
                    let now_ms = (monotonic_ns() / 1_000_000) as u32;
                    if a.options.len() != 20
                        || a.options[4..8] != want_opts
                        || a.options[12..16] != CLIENT_TS.to_be_bytes()
                        || a.options[16..20] != [1, 3, 3, 9]
                        || tsval & 0x3f != 0x10 | 7
                        || now_ms.wrapping_sub(tsval) > 10_000
                    {
                        t.fail(format!(
                            "{name}: options {:02x?} (TSval {tsval:#x}, now {now_ms:#x}): want SACK, TS echoing the client's with the client's wscale 7 and SACK in the low bits, then wscale 9",
                            a.options
                        ));
                    }
                } else if a.options.len() != 4 {
                    t.fail(format!(
                        "{name}: options {:02x?}, want the MSS alone",
                        a.options
                    ));
                }
            }
        }
    }
    listeners_agree(&mut t, &f, "after the answers");
    f.set_cookie_cfg(CookieCfg::default()).expect("cookie cfg");
    t.finish();
}

#[test]
fn the_ack_with_the_cookie_passes_and_a_forged_ack_is_dropped() {
    let p = policy("always");
    let f = load(&p);
    let mut t = Tally::new("ack");
    for v6 in [false, true] {
        seen(&f, v6, 80, 1, Listener::new());
        let Some(a) = answered(&mut t, &f, "syn", v6, 80, &syn(v6, 80, &[])) else {
            continue;
        };
        // The kernel's check (fw's too) recovers the MSS index (0..3) as the cookie minus a
        // hash and the client's ISN: a number off by one or two can name another valid index
        // and pass, in the kernel's own cookie check as well. Forged numbers here are off by
        // 4096, which never does.
        for (what, frame) in [
            (
                "ack number off by 4096",
                ack_of(v6, 80, a.cookie.wrapping_add(0x1000), a.tsval, ACK),
            ),
            (
                "another cookie",
                ack_of(v6, 80, a.cookie ^ 0x00ff_0000, a.tsval, ACK),
            ),
        ] {
            t.ingress(
                &f,
                &format!("v6 {v6}: forged ACK, {what}"),
                &frame,
                Some(Is(Reason::SynCookieBad)),
            );
        }
        let (h, pe) = ends(v6);
        let wrong_seq = PacketSpec::tcp(pe, h, 40000, 80, ACK)
            .seq_ack(ISN + 1 + 0x1000, a.cookie.wrapping_add(1))
            .build();
        t.ingress(
            &f,
            &format!("v6 {v6}: forged ACK, sequence number off by 4096"),
            &wrong_seq,
            Some(Is(Reason::SynCookieBad)),
        );
        let rst = ack_of(v6, 80, a.cookie, None, RST | ACK);
        t.ingress(
            &f,
            &format!("v6 {v6}: RST+ACK"),
            &rst,
            Some(Is(Reason::TcpNotSyn)),
        );
        // The real ACK (carrying the request, as some clients do): the kernel's cookie check
        // accepts what the kernel made; the connection is tracked from here on.
        let ack = ack_of(v6, 80, a.cookie, a.tsval, ACK | PSH);
        t.ingress(
            &f,
            &format!("v6 {v6}: the ACK with the cookie"),
            &ack,
            Some(Is(Reason::SynCookieAck)),
        );
        let next = PacketSpec::tcp(pe, h, 40000, 80, ACK)
            .seq_ack(ISN + 1 + 64, a.cookie.wrapping_add(1))
            .build();
        t.ingress(
            &f,
            &format!("v6 {v6}: the next segment"),
            &next,
            Some(Is(Reason::Established)),
        );
    }
    listeners_agree(&mut t, &f, "after the handshakes");
    t.finish();
}

#[test]
fn a_kernel_cookie_leaving_stamps_its_listener_and_teaches_its_options() {
    let p = policy("always");
    let f = load(&p);
    let mut t = Tally::new("egress");
    for v6 in [false, true] {
        // Learn a real cookie for this SYN: the answer XDP makes is exactly the SYN+ACK the
        // kernel sends for it with tcp_syncookies = 2 (same function, same secret).
        seen(&f, v6, 80, 1, Listener::new());
        let frame = syn(v6, 80, &[]);
        let Some(_) = answered(&mut t, &f, "syn", v6, 80, &frame) else {
            continue;
        };
        let (_, synack) = f.run_out(&frame).expect("run");
        // A listener fw never saw in cookie mode; and one seen long ago.
        f.set_listener(
            &key(v6, 80),
            &Listener {
                seen: 1,
                ..Listener::new()
            },
        )
        .expect("listener");
        let before = f.cookie_event(STAT_KERNEL_COOKIE).expect("stats");
        t.egress(
            &f,
            &format!("v6 {v6}: the kernel's cookie SYN+ACK"),
            &synack,
        );
        listeners_agree(&mut t, &f, "after the kernel's cookie");
        let l = f.kernel_listeners().expect("listeners")[&key(v6, 80)];
        let now = tick(monotonic_coarse_ns());
        let cfg = f.kernel_cookie_cfg().expect("cfg");
        let mss = if v6 { cfg.mss6 } else { cfg.mss4 };
        if now.abs_diff(l.seen) > 1 || l.mss != mss || l.window != 64240 {
            t.fail(format!(
                "v6 {v6}: listener after the kernel's cookie: {l:?} (now {now})"
            ));
        }
        if f.cookie_event(STAT_KERNEL_COOKIE).expect("stats") != before + 1 {
            t.fail(format!("v6 {v6}: the kernel cookie was not counted"));
        }
        // A SYN+ACK whose sequence number is no cookie (a listener with room in its queue)
        // stamps nothing.
        let mut plain = synack.clone();
        let l4 = l3_offset(&plain) + if v6 { 40 } else { 20 };
        plain[l4 + 4] ^= 0x55;
        f.set_listener(
            &key(v6, 80),
            &Listener {
                seen: 1,
                ..Listener::new()
            },
        )
        .expect("listener");
        t.egress(&f, &format!("v6 {v6}: a SYN+ACK without cookie"), &plain);
        listeners_agree(&mut t, &f, "after a SYN+ACK without cookie");
        if f.kernel_listeners().expect("listeners")[&key(v6, 80)].seen != 1 {
            t.fail(format!(
                "v6 {v6}: a SYN+ACK without cookie stamped the listener"
            ));
        }
    }
    t.finish();
}

#[test]
fn syns_go_to_the_kernel_until_it_is_seen_accepting_cookies_and_to_keep_it_so() {
    let p = policy("always");
    let f = load(&p);
    let mut t = Tally::new("listener");
    let frame = syn(false, 80, &[]);
    // Never seen, seen too long ago: the kernel answers (the rule's verdict).
    t.ingress(&f, "unknown listener", &frame, Some(Rule(0)));
    seen(&f, false, 80, syncookie::ACCEPT_TICKS + 2, Listener::new());
    t.ingress(&f, "listener seen too long ago", &frame, Some(Rule(0)));
    // Getting old: one SYN goes on to the kernel to renew its cookie mode, the rest of the
    // tick is answered.
    seen(&f, false, 80, REFRESH_TICKS + 1, Listener::new());
    let before = f.cookie_event(STAT_KEEPALIVE).expect("stats");
    t.ingress(&f, "keepalive", &frame, Some(Rule(0)));
    t.ingress(
        &f,
        "after the keepalive",
        &frame,
        Some(Is(Reason::SynCookie)),
    );
    if f.cookie_event(STAT_KEEPALIVE).expect("stats") != before + 1 {
        t.fail("the keepalive was not counted".into());
    }
    listeners_agree(&mut t, &f, "after the keepalive");
    // Source-restricted rule: the policy first, then the answer.
    seen(&f, false, 22, 1, Listener::new());
    t.ingress(
        &f,
        "ssh from an allowed source",
        &syn(false, 22, &[]),
        Some(Is(Reason::SynCookie)),
    );
    let other = PacketSpec::tcp("203.0.113.9", H4, 40000, 22, SYN).build();
    t.ingress(
        &f,
        "ssh from another source",
        &other,
        Some(Is(Reason::SourceNotAllowed)),
    );
    // A closed port: no cookie, no state.
    let closed = PacketSpec::tcp(P4, H4, 40000, 8080, SYN).build();
    t.ingress(&f, "closed port", &closed, Some(Is(Reason::DefaultDrop)));
    // IPv4 options: the answer rewrites plain headers only; the kernel answers it.
    seen(&f, false, 80, 1, Listener::new());
    let before = f.cookie_event(STAT_NOT_PLAIN).expect("stats");
    let opts = PacketSpec::tcp(P4, H4, 40000, 80, SYN).options(4).build();
    t.ingress(&f, "SYN with IP options", &opts, Some(Rule(0)));
    if f.cookie_event(STAT_NOT_PLAIN).expect("stats") != before + 1 {
        t.fail("the SYN with IP options was not counted".into());
    }
    listeners_agree(&mut t, &f, "at the end");
    t.finish();
}

#[test]
fn cookie_frames_cut_anywhere_agree() {
    let p = policy("always");
    let f = load(&p);
    let mut t = Tally::new("truncations");
    seen(&f, false, 80, 1, Listener::new());
    seen(&f, true, 80, 1, Listener::new());
    for v6 in [false, true] {
        let s = syn(v6, 80, &[100]);
        // Whole frames first (so answers are out and ACKs get checked), then every prefix.
        answered(&mut t, &f, "syn", v6, 80, &s);
        for frame in [s.clone(), ack_of(v6, 80, 0x1234_5678, Some(9), ACK)] {
            for len in MIN_FRAME..frame.len() {
                t.any(&f, &format!("v6 {v6}: cut to {len}"), &frame[..len]);
            }
        }
    }
    t.flows(&f, "after the truncations");
    t.finish();
}

#[test]
fn auto_answers_only_above_the_threshold() {
    // The SYN count is per CPU: keep this thread (and its test runs) on one.
    // SAFETY: a zeroed cpu_set_t with one bit set, for this thread.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(0, &mut set);
        libc::sched_setaffinity(0, size_of::<libc::cpu_set_t>(), &set);
    }
    let p = policy("auto");
    let f = load(&p);
    let mut t = Tally::new("auto");
    let mut cfg = f.kernel_cookie_cfg().expect("cfg");
    cfg.threshold = 3;
    f.set_cookie_cfg(cfg).expect("cfg");
    seen(&f, false, 80, 1, Listener::new());
    let frame = syn(false, 80, &[]);
    let mut verdicts = Vec::new();
    for i in 0..6 {
        if let Some(d) = t.ingress(&f, &format!("SYN {i}"), &frame, None) {
            verdicts.push(d.answers());
        }
    }
    // Three go to the kernel, then answers start and stay on (a tick boundary may restart
    // the count once before the first answer: then up to five pass).
    let passed = verdicts.iter().take_while(|a| !**a).count();
    if verdicts.len() != 6 || !(3..=5).contains(&passed) || verdicts[passed..].iter().any(|a| !a) {
        t.fail(format!("answered, in order: {verdicts:?}"));
    }
    t.finish();
}

#[test]
fn syn_cookies_off_changes_nothing() {
    let p = policy("off");
    let f = load(&p);
    let mut t = Tally::new("off");
    // Even for a listener seen accepting cookies, the kernel answers every SYN (the rule's
    // verdict) and an ACK of no connection is what it is without cookies.
    seen(&f, false, 80, 1, Listener::new());
    seen(&f, true, 80, 1, Listener::new());
    for v6 in [false, true] {
        for i in 0..3 {
            t.ingress(
                &f,
                &format!("v6 {v6}: SYN {i}"),
                &syn(v6, 80, &[]),
                Some(Rule(0)),
            );
        }
        t.ingress(
            &f,
            &format!("v6 {v6}: ACK of no connection"),
            &ack_of(v6, 80, 0x1234_5678, None, ACK),
            Some(Is(Reason::TcpNotSyn)),
        );
        let (h, pe) = ends(v6);
        let other = PacketSpec::tcp(pe, h, 40000, 22, SYN).build();
        t.ingress(
            &f,
            &format!("v6 {v6}: ssh from an allowed source"),
            &other,
            Some(Rule(1)),
        );
    }
    for (stat, _) in syncookie::STAT_NAMES {
        let n = f.cookie_event(stat).expect("stats");
        if n != 0 {
            t.fail(format!(
                "cookie event {stat} counted {n} times with syn_cookies off"
            ));
        }
    }
    listeners_agree(&mut t, &f, "with syn_cookies off");
    t.flows(&f, "with syn_cookies off");
    t.finish();
}

/// The flood step runs before the cookie step: a SYN from a blocked source, or one beyond its
/// rule's rate limit, is dropped and never answered; the same source's SYNs are answered
/// again once it is unblocked, until the limit. Kernel and mirror agree at every step.
#[test]
fn blocked_and_rate_limited_sources_get_no_answer() {
    let p = web_policy("limit = \"4/1m\"");
    let mut f = load(&p);
    let mut t = Tally::new("flood first");
    seen(&f, false, 80, 1, learnt());
    let frame = syn(false, 80, &[]);
    // `answered` runs the frame through the kernel twice (the second time for the answer's
    // bytes): the mirror's bucket is charged the second time too.
    answered(&mut t, &f, "SYN 1", false, 80, &frame);
    f.decide_user(&frame);
    let mut blocked = BlockSet::default();
    blocked.add(0, &"198.51.100.0/24".parse::<Cidr>().expect("cidr"), 0);
    blocked.finish();
    f.set_blocks(blocked).expect("block list");
    t.ingress(
        &f,
        "SYN from a blocked source",
        &frame,
        Some(Is(Reason::Blocked)),
    );
    match f.run_out(&frame) {
        Ok((XDP_DROP, _)) => {}
        Ok((ret, reply)) => t.fail(format!(
            "a blocked source's SYN returned {ret}, not XDP_DROP: {reply:02x?}"
        )),
        Err(e) => t.fail(format!("{e:#}")),
    }
    f.set_blocks(BlockSet::default()).expect("block list");
    // A blocked SYN is charged to no bucket: the source has used 2 of its 4.
    answered(&mut t, &f, "SYN 2, unblocked", false, 80, &frame);
    f.decide_user(&frame);
    t.ingress(
        &f,
        "SYN 3, over the limit",
        &frame,
        Some(Is(Reason::RateLimited)),
    );
    t.finish();
}

#[test]
fn a_cookie_handshake_makes_its_source_known_to_the_rate_limits() {
    let p = web_policy("limit = \"4/1m\"");
    let f = load(&p);
    let mut t = Tally::new("cookie handshake, known source");
    seen(&f, false, 80, 1, learnt());
    let frame = syn(false, 80, &[]);
    let known = |f: &KernelFilter| f.maps().flood.buckets(true).expect("known buckets").len();
    assert_eq!(known(&f), 0, "no source is known before a handshake");
    let Some(a) = answered(&mut t, &f, "SYN", false, 80, &frame) else {
        t.finish();
        return;
    };
    f.decide_user(&frame);
    t.ingress(
        &f,
        "the ACK with the cookie",
        &ack_of(false, 80, a.cookie, a.tsval, ACK),
        Some(Is(Reason::SynCookieAck)),
    );
    assert_eq!(
        known(&f),
        1,
        "the source that completed a cookie handshake has a bucket in the known table"
    );
    t.finish();
}

/// A rule's aggregate `total` bounds what goes on to the kernel: SYNs fw answers with cookies do
/// not spend it (a spoofed flood would otherwise use it up and real clients' SYNs be dropped
/// before a cookie could answer them); SYNs the kernel gets do.
#[test]
fn syns_answered_with_cookies_do_not_spend_the_rules_total() {
    let p = web_policy("total = \"3/1m\"");
    let f = load(&p);
    let mut t = Tally::new("cookies and total");
    seen(&f, false, 80, 1, learnt());
    for i in 0..12u16 {
        let frame = PacketSpec::tcp(&format!("198.51.100.{}", 10 + i), H4, 40000, 80, SYN)
            .seq_ack(ISN, 0)
            .tcp_options(&linux_syn_options())
            .build();
        t.ingress(
            &f,
            &format!("SYN {i}, answered"),
            &frame,
            Some(Is(Reason::SynCookie)),
        );
    }
    // The kernel stops sending cookies: SYNs go to it, and spend the total.
    seen(&f, false, 80, syncookie::ACCEPT_TICKS + 10, learnt());
    let mut over = 0;
    for i in 0..8u16 {
        let frame = PacketSpec::syn(&format!("198.51.100.{}", 40 + i), H4, 80).build();
        if let Some(d) = t.ingress(&f, &format!("SYN {i} to the kernel"), &frame, None) {
            over += usize::from(d.why() == Some(Reason::RateLimitTotal));
        }
    }
    assert!(
        (1..8).contains(&over),
        "of 8 SYNs to the kernel under a total of 3/1m, some pass and the rest are dropped as rate-limit-total ({over} dropped)"
    );
    t.finish();
}

/// A program array takes only programs of its first program's kind (`xdp.frags` or not, since
/// Linux 5.18): each build of `fw_xdp` tail-calls its own build of the step.
#[test]
fn both_builds_of_the_program_answer_and_check_cookies() {
    require_root();
    for variant in [Variant::Frags, Variant::Linear] {
        let f = KernelFilter::load_variant(&policy("always"), variant)
            .unwrap_or_else(|e| panic!("loading the {variant:?} build: {e:#}"));
        assert_eq!(f.variant(), variant);
        let mut t = Tally::new(format!("{variant:?}"));
        for v6 in [false, true] {
            seen(&f, v6, 80, 1, Listener::new());
            let name = format!("{variant:?}, v6 {v6}: SYN");
            let Some(a) = answered(&mut t, &f, &name, v6, 80, &syn(v6, 80, &[])) else {
                continue;
            };
            t.ingress(
                &f,
                &format!("{variant:?}, v6 {v6}: forged ACK"),
                &ack_of(v6, 80, a.cookie ^ 0x00ff_0000, a.tsval, ACK),
                Some(Is(Reason::SynCookieBad)),
            );
            t.ingress(
                &f,
                &format!("{variant:?}, v6 {v6}: the ACK with the cookie"),
                &ack_of(v6, 80, a.cookie, a.tsval, ACK),
                Some(Is(Reason::SynCookieAck)),
            );
        }
        t.finish();
    }
}

/// Without the step in its array (fw as an extension of a libxdp dispatcher), `fw_xdp` keeps
/// the policy's verdict: a SYN to an open port passes to the kernel, an ACK of no connection
/// is dropped, and both are counted as missing the step; nothing is answered.
#[test]
fn without_the_cookie_step_packets_keep_the_policy_verdict() {
    let f = load(&policy("always"));
    seen(&f, false, 80, 1, Listener::new());
    f.remove_cookie_step().expect("removing the step");
    let rule = f
        .counter(fw_common::maps::rule_slot(0, 0))
        .expect("counter");
    let not_syn = f.counter(Reason::TcpNotSyn.slot()).expect("counter");
    let (ret, _) = f.run_out(&syn(false, 80, &[])).expect("run");
    assert_eq!(ret, XDP_PASS, "a SYN to an open port without the step");
    let ack = ack_of(false, 80, 0x1234_5678, None, ACK);
    assert_eq!(
        f.run(&ack).expect("run"),
        fw_testrun::XDP_DROP,
        "an ACK of no connection without the step"
    );
    let rule_after = f
        .counter(fw_common::maps::rule_slot(0, 0))
        .expect("counter");
    let not_syn_after = f.counter(Reason::TcpNotSyn.slot()).expect("counter");
    assert_eq!(
        rule_after.packets,
        rule.packets + 1,
        "the SYN counted under its rule"
    );
    assert_eq!(
        not_syn_after.packets,
        not_syn.packets + 1,
        "the ACK counted as not SYN"
    );
    assert_eq!(f.cookie_event(STAT_NO_PROGRAM).expect("stats"), 2);
}

/// Without the step (fw in a libxdp dispatcher), every SYN goes on to the kernel from `fw_xdp`'s
/// fallback: each spends the rule's `total`, which the flood step leaves to the cookie step
/// (it did not before, so `total` bounded nothing there).
#[test]
fn without_the_cookie_step_syns_to_the_kernel_spend_the_total() {
    let p = web_policy("total = \"3/1m\"");
    let f = load(&p);
    seen(&f, false, 80, 1, learnt());
    f.remove_cookie_step().expect("removing the step");
    let total = f.counter(Reason::RateLimitTotal.slot()).expect("counter");
    let mut passed = 0;
    for i in 0..8u16 {
        let frame = PacketSpec::syn(&format!("198.51.100.{}", 60 + i), H4, 80).build();
        let (ret, _) = f.run_out(&frame).expect("run");
        passed += usize::from(ret == XDP_PASS);
    }
    let dropped = f
        .counter(Reason::RateLimitTotal.slot())
        .expect("counter")
        .packets
        - total.packets;
    assert!(
        (1..8).contains(&passed) && dropped as usize == 8 - passed,
        "of 8 SYNs to the kernel without the cookie step under a total of 3/1m, some pass and the rest are dropped as rate-limit-total ({passed} passed, {dropped} counted over the total)"
    );
    assert_eq!(f.cookie_event(STAT_NO_PROGRAM).expect("stats"), 8);
}

/// The median of `n` single runs of `frame`, in ns (BPF_PROG_TEST_RUN's own clock). One run
/// each: an answered SYN leaves a SYN+ACK behind, which a repeated run would judge instead.
fn median_single_runs(f: &KernelFilter, frame: &[u8], n: usize) -> u64 {
    let mut v: Vec<u64> = (0..n)
        .map(|_| f.time_ns(frame, 1).expect("test run"))
        .collect();
    v.sort_unstable();
    v[n / 2]
}

/// What the cookie path costs per packet, next to the same packets with `syn_cookies = off`
/// (same method, same run). A measurement, not a check.
#[test]
#[ignore = "a measurement, not a check: run with --ignored --nocapture"]
fn cookie_path_cost() {
    const N: usize = 4001;
    let off = load(&policy("off"));
    let on = load(&policy("always"));
    let mut t = Tally::new("cost");
    seen(&on, false, 80, 1, Listener::new());
    let s = syn(false, 80, &[]);
    let Some(a) = answered(&mut t, &on, "syn", false, 80, &s) else {
        t.finish();
        return;
    };
    let forged = ack_of(false, 80, a.cookie ^ 0x00ff_0000, a.tsval, ACK);
    let closed = PacketSpec::tcp(P4, H4, 40000, 8080, SYN).build();
    println!("ns per packet, median of {N} single runs (BPF_PROG_TEST_RUN)");
    for round in 0..2 {
        let rows = [
            (
                "SYN to a closed port, off",
                median_single_runs(&off, &closed, N),
            ),
            (
                "SYN to a closed port, always",
                median_single_runs(&on, &closed, N),
            ),
            (
                "SYN to port 80, off (to the kernel)",
                median_single_runs(&off, &s, N),
            ),
            (
                "SYN to port 80, always (answered)",
                median_single_runs(&on, &s, N),
            ),
            (
                "ACK, no connection, off",
                median_single_runs(&off, &forged, N),
            ),
            (
                "ACK, forged cookie, always",
                median_single_runs(&on, &forged, N),
            ),
        ];
        for (what, ns) in rows {
            println!("  round {round}: {what:<40} {ns:>6}");
        }
    }
    t.finish();
}
