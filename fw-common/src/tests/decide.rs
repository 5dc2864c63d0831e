//! `decide()`: the order of the checks (cheapest first), the port and source lookups, the
//! connection state and its side effects on the flow tables, the options.

use std::vec::Vec;

use super::tables::{MemTables, slot};
use crate::{
    Config, Decision, FlowKey, FlowState, FlowTable, PortProto, Reason, decide,
    flow::state,
    frame::{FragSpec, PacketSpec, arp_frame},
    packet::IPPROTO_TCP,
    tcp::{ACK, FIN, PSH, RST, SYN, URG},
};

const REMOTE: &str = "198.51.100.7";
const HOST: &str = "192.0.2.1";
const REMOTE6: &str = "2001:db8:ff::7";
const HOST6: &str = "2001:db8::1";

fn is(r: Reason) -> Decision {
    Decision::reason(r)
}

fn rule(id: u32) -> Decision {
    Decision::rule(slot(id))
}

/// The seed's shape: 80 open to all (rule 0), 22 from 203.0.113.0/24 (rule 1) and
/// 2001:db8:1::/48 (rule 2), UDP 53 open (rule 3).
fn web_and_ssh() -> MemTables {
    MemTables::seed_options()
        .open(PortProto::Tcp, 80, 0)
        .restrict(PortProto::Tcp, 22, "203.0.113.0/24", 1)
        .restrict(PortProto::Tcp, 22, "2001:db8:1::/48", 2)
        .open(PortProto::Udp, 53, 3)
}

fn tcp(src: &str, dst: &str, sport: u16, dport: u16, flags: u8) -> Vec<u8> {
    PacketSpec::tcp(src, dst, sport, dport, flags).build()
}

/// The key of a flow this host opened from `HOST:lport` to `REMOTE:rport`.
fn out_key(proto: u8, rport: u16, lport: u16) -> FlowKey {
    let mut remote = [0u8; 16];
    let mut local = [0u8; 16];
    remote[..4].copy_from_slice(&[198, 51, 100, 7]);
    local[..4].copy_from_slice(&[192, 0, 2, 1]);
    FlowKey {
        remote,
        local,
        remote_port: rport,
        local_port: lport,
        proto,
        family: 4,
        _pad: [0; 2],
    }
}

fn entry(st: u8) -> FlowState {
    FlowState {
        state: st,
        ..FlowState::default()
    }
}

#[test]
fn a_syn_to_an_open_port_counts_under_its_rule_and_other_ports_drop() {
    let t = web_and_ssh();
    assert_eq!(decide(&tcp(REMOTE, HOST, 40000, 80, SYN)[..], &t), rule(0));
    assert_eq!(
        decide(&tcp(REMOTE6, HOST6, 40000, 80, SYN)[..], &t),
        rule(0)
    );
    for port in [79, 81, 443, 8080] {
        let d = decide(&tcp(REMOTE, HOST, 40000, port, SYN)[..], &t);
        assert_eq!(d, is(Reason::DefaultDrop), "port {port}");
    }
    let udp = PacketSpec::udp(REMOTE, HOST, 5353, 53).build();
    assert_eq!(decide(&udp[..], &t), rule(3));
    let tcp53 = tcp(REMOTE, HOST, 40000, 53, SYN);
    assert_eq!(
        decide(&tcp53[..], &t),
        is(Reason::DefaultDrop),
        "UDP rule, TCP packet"
    );
}

#[test]
fn a_source_restricted_port_admits_its_sources_only_in_both_families() {
    let t = web_and_ssh();
    let from = |src: &str, dst: &str| decide(&tcp(src, dst, 40000, 22, SYN)[..], &t);
    assert_eq!(from("203.0.113.9", HOST), rule(1));
    assert_eq!(from("2001:db8:1:2::9", HOST6), rule(2));
    assert_eq!(from("203.0.114.9", HOST), is(Reason::SourceNotAllowed));
    assert_eq!(from(REMOTE6, HOST6), is(Reason::SourceNotAllowed));
}

#[test]
fn the_longest_matching_source_prefix_names_the_rule() {
    let t = MemTables::seed_options()
        .restrict(PortProto::Tcp, 22, "10.0.0.0/8", 1)
        .restrict(PortProto::Tcp, 22, "10.1.0.0/16", 2);
    assert_eq!(decide(&tcp("10.1.2.3", HOST, 4, 22, SYN)[..], &t), rule(2));
    assert_eq!(decide(&tcp("10.2.2.3", HOST, 4, 22, SYN)[..], &t), rule(1));
}

#[test]
fn scan_flag_combinations_drop_before_any_lookup() {
    let t = web_and_ssh();
    let to80 = |flags| decide(&tcp(REMOTE, HOST, 40000, 80, flags)[..], &t);
    assert_eq!(to80(0), is(Reason::TcpNull));
    assert_eq!(to80(FIN | SYN | RST | PSH | ACK | URG), is(Reason::TcpXmas));
    assert_eq!(to80(FIN | PSH | URG), is(Reason::TcpBadFlags), "nmap -sX");
    assert_eq!(to80(SYN | FIN), is(Reason::TcpBadFlags));
    // Without strict checks an impossible combination goes to the port rules.
    let mut lax = web_and_ssh();
    lax.config.flags &= !Config::STRICT_TCP_FLAGS;
    let d = decide(&tcp(REMOTE, HOST, 40000, 80, SYN | FIN)[..], &lax);
    assert_eq!(d, rule(0));
    assert_eq!(
        decide(&tcp(REMOTE, HOST, 40000, 80, 0)[..], &lax),
        is(Reason::TcpNull)
    );
}

#[test]
fn tcp_that_is_not_a_syn_needs_a_tracked_connection() {
    let t = web_and_ssh();
    let ack = tcp(REMOTE, HOST, 40000, 80, ACK);
    assert_eq!(decide(&ack[..], &t), is(Reason::TcpNotSyn));
    // Without new_requires_syn the port rule takes it.
    let mut loose = web_and_ssh();
    loose.config.flags &= !Config::NEW_REQUIRES_SYN;
    assert_eq!(decide(&ack[..], &loose), rule(0));
}

/// An ACK flood at an open port: a packet whose embryo hint slot never held an embryo is
/// judged without reading the clock (a helper call in the kernel, ~25 ns).
#[test]
fn an_ack_whose_hint_slot_never_held_an_embryo_reads_no_clock() {
    let t = web_and_ssh();
    let ack = tcp(REMOTE, HOST, 40000, 80, ACK);
    t.embryo_hint.set(0);
    assert_eq!(decide(&ack[..], &t), is(Reason::TcpNotSyn));
    assert_eq!(t.clock_reads.get(), 0, "no clock for an empty slot");
    // A slot that held one: the clock says whether it may still live (same verdict).
    t.embryo_hint.set(1);
    assert_eq!(decide(&ack[..], &t), is(Reason::TcpNotSyn));
    assert!(t.clock_reads.get() > 0, "the clock decides for a used slot");
}

#[test]
fn replies_to_a_connection_this_host_opened_are_established_and_refresh_it() {
    let key = out_key(IPPROTO_TCP, 443, 40000);
    // Our SYN went out with sequence number 1000: the answer must acknowledge 1001.
    let syn_sent = FlowState {
        expect_ack: 1001,
        flags: FlowState::SEQ,
        ..entry(state::SYN_SENT)
    };
    let t = web_and_ssh().with_flow(FlowTable::Out, key, syn_sent, 5);
    let syn_ack = PacketSpec::tcp(REMOTE, HOST, 443, 40000, SYN | ACK)
        .seq_ack(5000, 1001)
        .build();
    assert_eq!(decide(&syn_ack[..], &t), is(Reason::Established));
    let st = t.flow_in(FlowTable::Out, &key).expect("still tracked");
    assert_eq!(st.state, state::ESTABLISHED);
    assert_eq!(st.last_seen, t.now.get(), "refreshed");
    // A RST with a guessed sequence number passes (the stack ignores it) and changes nothing;
    // one with the exact next number ends the connection.
    let blind = PacketSpec::tcp(REMOTE, HOST, 443, 40000, RST | ACK)
        .seq_ack(7, 1001)
        .build();
    assert_eq!(decide(&blind[..], &t), is(Reason::Established));
    assert_eq!(
        t.flow_in(FlowTable::Out, &key).map(|s| s.state),
        Some(state::ESTABLISHED)
    );
    let rst = PacketSpec::tcp(REMOTE, HOST, 443, 40000, RST | ACK)
        .seq_ack(5001, 1001)
        .build();
    assert_eq!(decide(&rst[..], &t), is(Reason::Established));
    assert_eq!(t.flow_in(FlowTable::Out, &key), None, "a real RST ends it");
    // The same packet from another port is no reply.
    let other = tcp(REMOTE, HOST, 444, 40000, ACK);
    assert_eq!(decide(&other[..], &t), is(Reason::TcpNotSyn));
}

#[test]
fn an_expired_flow_is_removed_and_its_packets_judged_as_new() {
    let key = out_key(IPPROTO_TCP, 443, 40000);
    // Conntrack's 120 s for a connection still being opened.
    let t = web_and_ssh().with_flow(FlowTable::Out, key, entry(state::SYN_SENT), 121);
    let syn_ack = tcp(REMOTE, HOST, 443, 40000, SYN | ACK);
    assert_eq!(decide(&syn_ack[..], &t), is(Reason::TcpNotSyn));
    assert_eq!(
        t.flow_in(FlowTable::Out, &key),
        None,
        "the expired entry is gone"
    );
}

#[test]
fn the_handshake_ack_promotes_an_embryo_only_with_the_expected_number() {
    let mut key = out_key(IPPROTO_TCP, 40000, 80);
    key.remote_port = 40000;
    key.local_port = 80;
    let embryo = FlowState {
        expect_ack: 5000,
        ..entry(state::SYN_RECV)
    };
    let wrong = PacketSpec::tcp(REMOTE, HOST, 40000, 80, ACK)
        .seq_ack(1, 4999)
        .build();
    let right = PacketSpec::tcp(REMOTE, HOST, 40000, 80, ACK)
        .seq_ack(1, 5000)
        .build();
    let t = web_and_ssh().with_flow(FlowTable::Embryo, key, embryo, 1);
    assert_eq!(decide(&wrong[..], &t), is(Reason::TcpNotSyn), "a blind ACK");
    assert!(t.flow_in(FlowTable::In, &key).is_none());
    assert_eq!(decide(&right[..], &t), is(Reason::Established));
    assert_eq!(t.flow_in(FlowTable::Embryo, &key), None, "promoted");
    assert_eq!(
        t.flow_in(FlowTable::In, &key).map(|s| s.state),
        Some(state::ESTABLISHED)
    );
    // A bare RST refusing the handshake passes and forgets the embryo.
    let t = web_and_ssh().with_flow(FlowTable::Embryo, key, embryo, 1);
    let rst = tcp(REMOTE, HOST, 40000, 80, RST);
    assert_eq!(decide(&rst[..], &t), is(Reason::Established));
    assert_eq!(t.flow_in(FlowTable::Embryo, &key), None);
}

#[test]
fn udp_to_a_closed_port_passes_only_as_a_reply() {
    let dns = PacketSpec::udp(REMOTE, HOST, 53, 40001).build();
    let t = web_and_ssh();
    assert_eq!(decide(&dns[..], &t), is(Reason::DefaultDrop));
    let key = out_key(17, 53, 40001);
    let t = web_and_ssh().with_flow(FlowTable::Out, key, entry(state::UNREPLIED), 1);
    assert_eq!(decide(&dns[..], &t), is(Reason::Established));
    assert_eq!(
        t.flow_in(FlowTable::Out, &key).map(|s| s.state),
        Some(state::REPLIED)
    );
}

#[test]
fn icmp_errors_are_related_only_to_a_tracked_flow() {
    let sent = tcp(HOST, REMOTE, 40000, 443, SYN);
    let error = |quote: &[u8]| {
        let q = &quote[14..14 + 28];
        let mut f = PacketSpec::icmp(REMOTE, HOST, 3, 4)
            .payload(q.len())
            .build();
        let n = f.len();
        f[n - q.len()..].copy_from_slice(q);
        f
    };
    let t = web_and_ssh();
    assert_eq!(decide(&error(&sent)[..], &t), is(Reason::IcmpUnrelated));
    let key = out_key(IPPROTO_TCP, 443, 40000);
    let t = web_and_ssh().with_flow(FlowTable::Out, key, entry(state::ESTABLISHED), 1);
    assert_eq!(decide(&error(&sent)[..], &t), is(Reason::Related));
    // Without connection state no error passes.
    let mut stateless = web_and_ssh();
    stateless.config.flags &= !Config::ESTABLISHED;
    assert_eq!(
        decide(&error(&sent)[..], &stateless),
        is(Reason::DefaultDrop)
    );
}

#[test]
fn echo_dhcp_and_fragments_follow_their_options() {
    let t = web_and_ssh();
    let ping = PacketSpec::icmp(REMOTE, HOST, 8, 0).build();
    let ping6 = PacketSpec::icmp(REMOTE6, HOST6, 128, 0).build();
    assert_eq!(decide(&ping[..], &t), is(Reason::DefaultDrop));
    let mut echo = web_and_ssh();
    echo.config.flags |= Config::ICMP_ECHO;
    assert_eq!(decide(&ping[..], &echo), is(Reason::IcmpEcho));
    assert_eq!(decide(&ping6[..], &echo), is(Reason::IcmpEcho));
    let dhcp = PacketSpec::udp("192.0.2.254", HOST, 67, 68).build();
    let dhcp6 = PacketSpec::udp("fe80::1", "fe80::2", 547, 546).build();
    assert_eq!(decide(&dhcp[..], &t), is(Reason::DhcpClient));
    assert_eq!(decide(&dhcp6[..], &t), is(Reason::DhcpClient));
    let later = PacketSpec::udp(REMOTE, HOST, 5, 9999)
        .frag(FragSpec::Later(100))
        .build();
    assert_eq!(decide(&later[..], &t), is(Reason::FragmentPassed));
    let mut no_frags = web_and_ssh();
    no_frags.config.flags &= !(Config::FRAGMENTS_PASS | Config::DHCP_CLIENT);
    assert_eq!(decide(&later[..], &no_frags), is(Reason::FragmentDropped));
    assert_eq!(decide(&dhcp[..], &no_frags), is(Reason::DefaultDrop));
}

#[test]
fn the_link_always_works_and_flush_passes_everything() {
    let t = web_and_ssh();
    assert_eq!(decide(&arp_frame()[..], &t), is(Reason::NonIp));
    for ty in [130u8, 133, 134, 135, 136, 137, 143] {
        let nd = PacketSpec::icmp(REMOTE6, HOST6, ty, 0).build();
        assert_eq!(decide(&nd[..], &t), is(Reason::Ndp), "ICMPv6 type {ty}");
    }
    let mut flushed = web_and_ssh();
    flushed.config.flags |= Config::PASS_ALL;
    for f in [
        tcp(REMOTE, HOST, 1, 9999, 0),
        arp_frame(),
        Vec::from(&[0u8; 14][..]),
    ] {
        assert_eq!(decide(&f[..], &flushed), is(Reason::Flushed), "{f:02x?}");
    }
}

#[test]
fn malformed_frames_are_dropped_with_the_parsers_reason_never_passed() {
    let t = web_and_ssh();
    let f = tcp(REMOTE, HOST, 40000, 80, SYN);
    for len in 0..f.len() {
        let d = decide(&f[..len], &t);
        assert!(!d.pass, "cut to {len}: {d:?}");
        assert_eq!(d, is(Reason::Truncated), "cut to {len}");
    }
    let three_tags = PacketSpec::syn(REMOTE, HOST, 80).vlans(&[1, 2, 3]).build();
    assert_eq!(decide(&three_tags[..], &t), is(Reason::TooManyVlans));
}
