extern crate std;

use std::{
    cell::{Cell, RefCell},
    collections::{BTreeMap, BTreeSet},
    vec,
    vec::Vec,
};

use super::*;
use crate::{
    FlowKey, FlowState,
    decide::decide,
    flow::state,
    maps::{Config, rule_slot},
    packet::{Parsed, parse},
    tcp::{FIN, PSH},
};

const SERVER: [u8; 4] = [192, 0, 2, 1];
const CLIENT: [u8; 4] = [198, 51, 100, 7];
const SEC: u64 = 1 << 30;

/// A frame with a TCP header carrying `opts` (a multiple of 4 bytes), IPv4 unless `v6`.
fn tcp_frame(v6: bool, flags: u8, seq: u32, ack: u32, opts: &[u8], ip_opts: usize) -> Vec<u8> {
    let mut f = vec![2, 0, 0, 0, 0, 2, 2, 0, 0, 0, 0, 1];
    f.extend_from_slice(if v6 { &[0x86, 0xdd] } else { &[0x08, 0x00] });
    let mut t = Vec::new();
    t.extend_from_slice(&40000u16.to_be_bytes());
    t.extend_from_slice(&80u16.to_be_bytes());
    t.extend_from_slice(&seq.to_be_bytes());
    t.extend_from_slice(&ack.to_be_bytes());
    t.push((((20 + opts.len()) / 4) as u8) << 4);
    t.push(flags);
    t.extend_from_slice(&[0xfa, 0xf0, 0, 0, 0, 0]);
    t.extend_from_slice(opts);
    if v6 {
        f.extend_from_slice(&[0x60, 0, 0, 0]);
        f.extend_from_slice(&(t.len() as u16).to_be_bytes());
        f.extend_from_slice(&[IPPROTO_TCP, 64]);
        f.extend_from_slice(&[0x20, 1, 0xd, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 7]);
        f.extend_from_slice(&[0x20, 1, 0xd, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]);
    } else {
        let ihl = 20 + ip_opts;
        f.push(0x40 | (ihl / 4) as u8);
        f.push(0);
        f.extend_from_slice(&((ihl + t.len()) as u16).to_be_bytes());
        f.extend_from_slice(&[0, 0, 0x40, 0, 64, IPPROTO_TCP, 0, 0]);
        f.extend_from_slice(&CLIENT);
        f.extend_from_slice(&SERVER);
        f.resize(f.len() + ip_opts, 1);
    }
    f.extend_from_slice(&t);
    f
}

/// The options Linux puts in a SYN: MSS 1460, SACK permitted, timestamp, NOP, window scale.
fn linux_syn_options(tsval: u32, wscale: u8) -> Vec<u8> {
    let mut o = vec![2, 4, 5, 0xb4, 4, 2, 8, 10];
    o.extend_from_slice(&tsval.to_be_bytes());
    o.extend_from_slice(&[0, 0, 0, 0, 1, 3, 3, wscale]);
    o
}

#[derive(Default)]
struct T {
    config: Cell<u32>,
    now: Cell<u64>,
    listeners: RefCell<BTreeMap<ListenerKey, Listener>>,
    rate: RefCell<CookieRate>,
    threshold: Cell<u32>,
    valid: RefCell<BTreeSet<CookieTuple>>,
    flows: RefCell<BTreeMap<(FlowTable, FlowKey), FlowState>>,
    sources: RefCell<BTreeMap<[u8; 16], u32>>,
    events: RefCell<BTreeMap<u32, u32>>,
}

impl T {
    fn new(flags: u32) -> Self {
        let t = T::default();
        t.config
            .set(flags | Config::ESTABLISHED | Config::NEW_REQUIRES_SYN | Config::SYN_COOKIES);
        t.now.set(1000 * SEC);
        t.threshold.set(u32::MAX);
        t
    }

    fn tick(&self) -> u32 {
        tick(self.now.get())
    }

    fn advance(&self, ticks: u64) {
        self.now.set(self.now.get() + ticks * SEC);
    }

    fn key(&self) -> ListenerKey {
        let mut a = [0u8; 16];
        a[..4].copy_from_slice(&SERVER);
        ListenerKey::new(Family::V4, &a, 80)
    }

    /// The kernel answered a SYN for port 80 with a cookie `ago` ticks ago.
    fn seen(&self, ago: u32) {
        let mut l = Listener::new();
        l.seen = self.tick() - ago;
        self.listeners.borrow_mut().insert(self.key(), l);
    }

    fn listener(&self) -> Listener {
        self.listeners.borrow()[&self.key()]
    }

    fn event(&self, i: u32) -> u32 {
        self.events.borrow().get(&i).copied().unwrap_or(0)
    }
}

impl Tables for T {
    fn config(&self) -> Config {
        Config {
            flags: self.config.get(),
            ..Config::default()
        }
    }
    fn port(&self, proto: PortProto, port: u16) -> u32 {
        if proto == PortProto::Tcp && port == 80 {
            rule_slot(0, 0)
        } else {
            0
        }
    }
    fn source_v4(&self, _: PortProto, _: u16, _: &[u8; 4]) -> u32 {
        0
    }
    fn source_v6(&self, _: PortProto, _: u16, _: &[u8; 16]) -> u32 {
        0
    }
    fn now(&self) -> u64 {
        self.now.get()
    }
    fn flow(&self, table: FlowTable, key: &FlowKey) -> Option<FlowState> {
        self.flows.borrow().get(&(table, *key)).copied()
    }
    fn flow_write(&self, table: FlowTable, key: &FlowKey, st: &FlowState, _new: bool) {
        self.flows.borrow_mut().insert((table, *key), *st);
    }
    fn flow_remove(&self, table: FlowTable, key: &FlowKey) {
        self.flows.borrow_mut().remove(&(table, *key));
    }
    fn flow_with<R>(
        &self,
        table: FlowTable,
        key: &FlowKey,
        f: impl FnOnce(&mut FlowState) -> R,
    ) -> Option<R> {
        let mut flows = self.flows.borrow_mut();
        let st = flows.get_mut(&(table, *key))?;
        Some(f(st))
    }
    fn source_count(&self, src: &[u8; 16]) -> u32 {
        self.sources.borrow().get(src).copied().unwrap_or(0)
    }
    fn source_count_set(&self, src: &[u8; 16], n: u32) {
        self.sources.borrow_mut().insert(*src, n);
    }
    fn listener(&self, key: &ListenerKey) -> Option<Listener> {
        self.listeners.borrow().get(key).copied()
    }
    fn listener_write(&self, key: &ListenerKey, l: &Listener) {
        self.listeners.borrow_mut().insert(*key, *l);
    }
    fn cookie_cfg(&self) -> CookieCfg {
        CookieCfg {
            threshold: self.threshold.get(),
            ..CookieCfg::default()
        }
    }
    fn cookie_rate_with<R>(&self, f: impl FnOnce(&mut CookieRate) -> R) -> Option<R> {
        Some(f(&mut self.rate.borrow_mut()))
    }
    fn syncookie_valid(&self, c: &CookieTuple) -> bool {
        self.valid.borrow().contains(c)
    }
    fn cookie_event(&self, stat: u32) {
        *self.events.borrow_mut().entry(stat).or_default() += 1;
    }
}

fn syn() -> Vec<u8> {
    tcp_frame(false, SYN, 5000, 0, &linux_syn_options(77, 7), 0)
}

fn ack(seq: u32, ack: u32) -> Vec<u8> {
    tcp_frame(false, ACK, seq, ack, &[], 0)
}

fn tuple(seq: u32, ack: u32) -> CookieTuple {
    let (mut src, mut dst) = ([0u8; 16], [0u8; 16]);
    src[..4].copy_from_slice(&CLIENT);
    dst[..4].copy_from_slice(&SERVER);
    CookieTuple {
        family: 4,
        src,
        dst,
        sport: 40000,
        dport: 80,
        seq,
        ack,
    }
}

fn in_key() -> FlowKey {
    let Ok(Parsed::Ip(ip)) = parse(ack(1, 1).as_slice()) else {
        panic!("parse")
    };
    ingress_key(&ip, 40000, 80)
}

#[test]
fn a_syn_goes_to_the_kernel_until_the_kernel_is_seen_answering_with_cookies() {
    let t = T::new(0);
    assert_eq!(
        decide(syn().as_slice(), &t),
        Decision::rule(rule_slot(0, 0))
    );
    t.seen(ACCEPT_TICKS + 1);
    assert_eq!(
        decide(syn().as_slice(), &t),
        Decision::rule(rule_slot(0, 0))
    );
    t.seen(1);
    let d = decide(syn().as_slice(), &t);
    assert_eq!(d, Decision::reason(Reason::SynCookie));
    assert!(d.answers() && d.admits() && !d.pass);
    assert_eq!(t.listener().answered, t.tick());
}

#[test]
fn a_syn_a_tick_goes_to_the_kernel_once_its_cookie_mode_is_getting_old() {
    let t = T::new(0);
    t.seen(REFRESH_TICKS);
    assert_eq!(
        decide(syn().as_slice(), &t),
        Decision::rule(rule_slot(0, 0))
    );
    assert_eq!(t.event(STAT_KEEPALIVE), 1);
    assert_eq!(t.listener().passed, t.tick());
    for _ in 0..3 {
        assert!(decide(syn().as_slice(), &t).answers());
    }
    t.advance(1);
    assert!(decide(syn().as_slice(), &t).pass);
    assert_eq!(t.event(STAT_KEEPALIVE), 2);
}

#[test]
fn auto_answers_only_above_the_threshold_and_for_the_hold_time_after() {
    let t = T::new(Config::SYN_COOKIES_AUTO);
    t.threshold.set(3);
    t.seen(1);
    for _ in 0..3 {
        assert!(decide(syn().as_slice(), &t).pass);
    }
    assert!(decide(syn().as_slice(), &t).answers());
    // A quiet tick later: still on (the hold time), the listener still accepting.
    t.advance(2);
    t.seen(1);
    assert!(decide(syn().as_slice(), &t).answers());
    t.advance(u64::from(HOLD_TICKS));
    t.seen(1);
    assert!(decide(syn().as_slice(), &t).pass);
}

#[test]
fn a_syn_with_ip_options_goes_to_the_kernel_even_while_answering() {
    let t = T::new(0);
    t.seen(1);
    let f = tcp_frame(false, SYN, 5000, 0, &[], 4);
    assert!(decide(f.as_slice(), &t).pass);
    assert_eq!(t.event(STAT_NOT_PLAIN), 1);
}

#[test]
fn an_ack_with_a_valid_cookie_completes_the_handshake_into_the_in_table() {
    let t = T::new(0);
    t.seen(1);
    assert!(decide(syn().as_slice(), &t).answers());
    t.valid.borrow_mut().insert(tuple(5001, 900));
    let d = decide(ack(5001, 900).as_slice(), &t);
    assert_eq!(d, Decision::reason(Reason::SynCookieAck));
    let st = t.flow(FlowTable::In, &in_key()).expect("In entry");
    assert_eq!((st.state, st.expect_ack), (state::ESTABLISHED, 5001));
    assert_eq!(st.flags, FlowState::SEQ);
    assert_eq!(t.source_count(&source_key(&in_key())), 1);
    // The connection goes on as tracked.
    let data = tcp_frame(false, ACK | PSH, 5001, 900, &[], 0);
    assert_eq!(
        decide(data.as_slice(), &t),
        Decision::reason(Reason::Established)
    );
}

#[test]
fn an_ack_without_a_valid_cookie_is_dropped_while_answers_are_out() {
    let t = T::new(0);
    // No answer yet: an unrelated ACK is what it always was.
    t.seen(1);
    assert_eq!(
        decide(ack(5001, 900).as_slice(), &t),
        Decision::reason(Reason::TcpNotSyn)
    );
    assert!(decide(syn().as_slice(), &t).answers());
    t.valid.borrow_mut().insert(tuple(5001, 900));
    for (seq, a) in [(5001, 901), (5002, 900), (1, 1)] {
        assert_eq!(
            decide(ack(seq, a).as_slice(), &t),
            Decision::reason(Reason::SynCookieBad),
            "seq {seq} ack {a}"
        );
    }
    let rst = tcp_frame(false, RST | ACK, 5001, 900, &[], 0);
    assert_eq!(
        decide(rst.as_slice(), &t),
        Decision::reason(Reason::TcpNotSyn)
    );
    assert!(t.flows.borrow().is_empty());
    // Long after the last answer, no cookie is checked any more.
    t.advance(u64::from(CHECK_TICKS) + 1);
    assert_eq!(
        decide(ack(5001, 900).as_slice(), &t),
        Decision::reason(Reason::TcpNotSyn)
    );
}

#[test]
fn a_cookie_handshake_over_the_source_quota_is_kept_in_the_embryo_table() {
    let t = T::new(0);
    t.seen(1);
    assert!(decide(syn().as_slice(), &t).answers());
    t.valid.borrow_mut().insert(tuple(5001, 900));
    t.source_count_set(&source_key(&in_key()), SOURCE_QUOTA);
    assert!(decide(ack(5001, 900).as_slice(), &t).pass);
    assert!(t.flow(FlowTable::In, &in_key()).is_none());
    let st = t
        .flow(FlowTable::Embryo, &in_key())
        .expect("overflow entry");
    assert_ne!(st.flags & FlowState::OVERFLOW, 0);
    let fin = tcp_frame(false, FIN | ACK, 5001, 900, &[], 0);
    assert!(decide(fin.as_slice(), &t).pass);
}

#[test]
fn without_the_option_nothing_changes() {
    let t = T::new(0);
    t.config.set(Config::ESTABLISHED | Config::NEW_REQUIRES_SYN);
    t.seen(1);
    assert!(decide(syn().as_slice(), &t).pass);
    let Ok(Parsed::Ip(ip)) = parse(syn().as_slice()) else {
        panic!()
    };
    assert!(!needs_step(
        &t.config(),
        &ip,
        &Decision::rule(rule_slot(0, 0))
    ));
}

/// A SYN+ACK as Linux sends it: MSS, SACK permitted + timestamp, NOP + window scale.
fn linux_synack(seq: u32, ack: u32, wscale: u8) -> Vec<u8> {
    let mut o = vec![
        2, 4, 5, 0xb4, 4, 2, 8, 10, 0, 0, 1, 0, 0, 0, 0, 77, 1, 3, 3, wscale,
    ];
    o.truncate(20);
    let mut f = tcp_frame(false, SYN | ACK, seq, ack, &o, 0);
    // Leaving: from the server's port 80 to the client.
    let ip = 14;
    f[ip + 12..ip + 16].copy_from_slice(&SERVER);
    f[ip + 16..ip + 20].copy_from_slice(&CLIENT);
    let l4 = ip + 20;
    f[l4..l4 + 2].copy_from_slice(&80u16.to_be_bytes());
    f[l4 + 2..l4 + 4].copy_from_slice(&40000u16.to_be_bytes());
    f
}

#[test]
fn a_kernel_cookie_leaving_stamps_its_listener_and_teaches_what_it_announces() {
    let t = T::new(0);
    let f = linux_synack(700, 5001, 10);
    crate::egress::record(f.as_slice(), &t);
    assert!(t.listeners.borrow().is_empty(), "no cookie: no stamp");
    t.valid.borrow_mut().insert(tuple(5001, 701));
    crate::egress::record(f.as_slice(), &t);
    let l = t.listener();
    assert_eq!(l.seen, t.tick());
    assert_eq!((l.mss, l.window, l.wscale), (1460, 0xfaf0, 10));
    assert_eq!(t.event(STAT_KERNEL_COOKIE), 1);
    // The embryo is recorded as for any SYN+ACK.
    assert!(t.flow(FlowTable::Embryo, &in_key()).is_some());
}

#[test]
fn syn_options_are_read_as_the_kernel_reads_them() {
    let f = syn();
    let o = syn_options(f.as_slice(), 54, 20);
    assert_eq!(
        o,
        SynOptions {
            wscale: Some(7),
            sack: true,
            tsval: Some(77),
        }
    );
    let bare = tcp_frame(false, SYN, 1, 0, &[], 0);
    assert_eq!(syn_options(bare.as_slice(), 54, 0), SynOptions::default());
    // A window scale above 14 is taken as 14; a bad length ends the walk.
    let f = tcp_frame(false, SYN, 1, 0, &[1, 3, 3, 20, 4, 1, 0, 0], 0);
    assert_eq!(
        syn_options(f.as_slice(), 54, 8),
        SynOptions {
            wscale: Some(14),
            sack: false,
            tsval: None
        }
    );
    // Options past the given length are not read.
    let f = tcp_frame(false, SYN, 1, 0, &[1, 1, 4, 2], 0);
    assert_eq!(syn_options(f.as_slice(), 54, 2), SynOptions::default());
    assert!(syn_options(f.as_slice(), 54, 4).sack);
}

#[test]
fn the_cookie_timestamp_carries_the_options_and_is_never_ahead_of_the_clock() {
    for now in [0x1000_0000u32, 0x1000_0003, 0x1000_003f, 0x1000_0040] {
        for (ws, sack) in [
            (Some(7), true),
            (None, false),
            (Some(0), false),
            (None, true),
        ] {
            let ts = cookie_tsval(now, ws, sack);
            assert!(ts <= now && now - ts < 64, "now {now:#x} ts {ts:#x}");
            assert_eq!(ts & 0xf, ws.map_or(0xf, u32::from));
            assert_eq!(ts & 0x10 != 0, sack);
            assert_eq!(ts & 0x20, 0, "ECN is never offered");
        }
    }
}

fn params(host: u8) -> AnswerParams {
    AnswerParams {
        mss: 1460,
        window: 64240,
        wscale: 10,
        host,
        now_ms: 123_456,
    }
}

#[test]
fn the_answer_carries_every_option_when_timestamps_can_hold_them() {
    let o = SynOptions {
        wscale: Some(7),
        sack: true,
        tsval: Some(77),
    };
    let all = CookieCfg::TIMESTAMPS | CookieCfg::SACK | CookieCfg::WSCALE;
    let a = synack(40000, 80, 5000, 0xdead_beef, &o, &params(all));
    assert_eq!(a.len, 40);
    let h = &a.tcp;
    assert_eq!(&h[0..4], &[0, 80, 0x9c, 0x40]);
    assert_eq!(&h[4..8], &0xdead_beefu32.to_be_bytes());
    assert_eq!(&h[8..12], &5001u32.to_be_bytes());
    assert_eq!((h[12], h[13]), (10 << 4, SYN | ACK));
    assert_eq!(&h[14..16], &64240u16.to_be_bytes());
    assert_eq!(&h[20..28], &[2, 4, 5, 0xb4, 4, 2, 8, 10]);
    let tsval = u32::from_be_bytes([h[28], h[29], h[30], h[31]]);
    assert_eq!(tsval, cookie_tsval(123_456, Some(7), true));
    assert_eq!(&h[32..36], &77u32.to_be_bytes());
    assert_eq!(&h[36..40], &[1, 3, 3, 10]);
}

#[test]
fn without_timestamps_the_answer_carries_the_mss_alone() {
    let o = SynOptions {
        wscale: Some(7),
        sack: true,
        tsval: Some(77),
    };
    // The host's timestamps have per-connection offsets (tcp_timestamps = 1).
    let a = synack(
        1,
        80,
        5,
        6,
        &o,
        &params(CookieCfg::SACK | CookieCfg::WSCALE),
    );
    assert_eq!((a.len, a.tcp[12]), (24, 6 << 4));
    assert_eq!(&a.tcp[20..24], &[2, 4, 5, 0xb4]);
    // The client sent no timestamp.
    let bare = SynOptions { tsval: None, ..o };
    let a = synack(1, 80, 5, 6, &bare, &params(0xff));
    assert_eq!(a.len, 24);
    // Timestamps but no window scaling on the host, SACK off: NOP NOP TS, no WS.
    let a = synack(1, 80, 5, 6, &o, &params(CookieCfg::TIMESTAMPS));
    assert_eq!(a.len, 36);
    assert_eq!(&a.tcp[24..28], &[1, 1, 8, 10]);
    let tsval = u32::from_be_bytes([a.tcp[28], a.tcp[29], a.tcp[30], a.tcp[31]]);
    assert_eq!(tsval & 0x1f, 0xf);
}

/// The answer for a frame that cannot grow: the same header, no option, 20 bytes, data
/// offset 5; the fields before the options are untouched.
#[test]
fn an_answer_without_options_keeps_its_header_and_drops_every_option() {
    let o = SynOptions {
        wscale: Some(7),
        sack: true,
        tsval: Some(99),
    };
    let full = synack(40000, 80, 5000, 0xdead_beef, &o, &params(0xff));
    assert_eq!(full.len, 40);
    let bare = full.without_options();
    assert_eq!((bare.len, bare.tcp[12]), (20, 5 << 4));
    assert_eq!(&bare.tcp[..12], &full.tcp[..12]);
    assert_eq!(&bare.tcp[13..20], &full.tcp[13..20]);
    assert!(bare.tcp[20..].iter().all(|&b| b == 0));
}

/// The one's complement sum over a whole segment with its pseudo-header is 0xffff when the
/// checksum is right (RFC 1071), computed here independently of `tcp_checksum`.
fn verifies(family: Family, src: &[u8], dst: &[u8], tcp: &[u8]) -> bool {
    let mut words: Vec<u32> = Vec::new();
    let mut push = |b: &[u8]| {
        for c in b.chunks(2) {
            words.push(u32::from(u16::from_be_bytes([
                c[0],
                *c.get(1).unwrap_or(&0),
            ])));
        }
    };
    push(src);
    push(dst);
    push(&[0, IPPROTO_TCP]);
    if family == Family::V6 {
        push(&(tcp.len() as u32).to_be_bytes());
    } else {
        push(&(tcp.len() as u16).to_be_bytes());
    }
    push(tcp);
    let mut s: u64 = words.iter().map(|&w| u64::from(w)).sum();
    while s > 0xffff {
        s = (s & 0xffff) + (s >> 16);
    }
    s == 0xffff
}

#[test]
fn checksums_verify() {
    let o = SynOptions {
        wscale: Some(7),
        sack: true,
        tsval: Some(0xffff_fff7),
    };
    let (mut src, mut dst) = ([0u8; 16], [0u8; 16]);
    src[..4].copy_from_slice(&SERVER);
    dst[..4].copy_from_slice(&CLIENT);
    for host in [0u8, 0xff] {
        let mut a = synack(40000, 80, u32::MAX, 0xffff_ffff, &o, &params(host));
        let c = tcp_checksum(Family::V4, &src, &dst, &a.tcp[..a.len]);
        a.tcp[16..18].copy_from_slice(&c.to_be_bytes());
        assert!(verifies(Family::V4, &SERVER, &CLIENT, &a.tcp[..a.len]));
        let v6s = [0xfe; 16];
        let v6d = [0x20; 16];
        a.tcp[16..18].copy_from_slice(&[0, 0]);
        let c = tcp_checksum(Family::V6, &v6s, &v6d, &a.tcp[..a.len]);
        a.tcp[16..18].copy_from_slice(&c.to_be_bytes());
        assert!(verifies(Family::V6, &v6s, &v6d, &a.tcp[..a.len]));
    }
    let h = ipv4_header(&src, &dst, 40, 64);
    assert_eq!(csum_fold(csum_add(0, &h)), 0);
    assert_eq!(&h[2..4], &60u16.to_be_bytes());
    assert_eq!((h[6], h[8], h[9]), (0x40, 64, IPPROTO_TCP));
}

#[test]
fn only_plain_headers_are_located() {
    let f = syn();
    assert_eq!(
        locate(f.as_slice()),
        Some(Located {
            family: Family::V4,
            l3: 14,
            l4: 34
        })
    );
    assert_eq!(locate(tcp_frame(false, SYN, 1, 0, &[], 4).as_slice()), None);
    let v6 = tcp_frame(true, SYN, 1, 0, &[], 0);
    assert_eq!(
        locate(v6.as_slice()),
        Some(Located {
            family: Family::V6,
            l3: 14,
            l4: 54
        })
    );
    let mut tagged = syn();
    tagged.splice(12..12, [0x81, 0x00, 0, 100]);
    assert_eq!(locate(tagged.as_slice()).map(|l| l.l4), Some(38));
}
