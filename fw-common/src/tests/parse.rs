//! The parser: what it reads from well-formed frames, and which [`Reason`] it gives the
//! malformed ones (bounded walks, fail closed).

use std::{vec, vec::Vec};

use crate::{
    Family, Fragment, L4, Parsed, Quoted, Reason,
    frame::{FragSpec, L4Spec, PacketSpec, arp_frame},
    packet::{self as p, MAX_EXT_HEADERS, parse},
    tcp::{ACK, SYN},
};

fn ip_of(f: &[u8]) -> crate::Ip {
    match parse(f) {
        Ok(Parsed::Ip(ip)) => ip,
        other => panic!("not an IP packet: {other:?}"),
    }
}

fn reason_of(f: &[u8]) -> Reason {
    match parse(f) {
        Err(r) => r,
        Ok(other) => panic!("parsed although malformed: {other:?}"),
    }
}

/// Offset of the IP header of an untagged frame.
const L3: usize = 14;

#[test]
fn a_tcp_segment_yields_addresses_ports_flags_and_sequence_numbers() {
    let f = PacketSpec::tcp("192.0.2.7", "192.0.2.1", 40000, 443, SYN | ACK)
        .seq_ack(11, 22)
        .build();
    let ip = ip_of(&f);
    assert_eq!(ip.family, Family::V4);
    assert_eq!(ip.src_v4(), [192, 0, 2, 7]);
    assert_eq!(&ip.dst[..4], &[192, 0, 2, 1]);
    assert_eq!(ip.frag, Fragment::No);
    assert_eq!(
        ip.l4,
        L4::Tcp {
            sport: 40000,
            dport: 443,
            flags: SYN | ACK,
            seq: 11,
            ack: 22,
            len: 0
        }
    );
}

#[test]
fn non_ip_frames_are_reported_with_their_ethertype() {
    assert_eq!(
        parse(&arp_frame()[..]),
        Ok(Parsed::NonIp {
            ethertype: p::ETH_P_ARP
        })
    );
}

#[test]
fn frames_shorter_than_their_headers_are_truncated() {
    let f = PacketSpec::syn("192.0.2.7", "192.0.2.1", 22).build();
    for len in [0, 13, L3, L3 + 19, L3 + 20 + 19] {
        assert_eq!(parse(&f[..len]), Err(Reason::Truncated), "cut to {len}");
    }
    // A datagram longer than its frame is truncated; Ethernet padding after it is not.
    let mut long = f.clone();
    long[L3 + 3] += 1;
    assert_eq!(reason_of(&long), Reason::Truncated);
    let mut padded = f.clone();
    padded.extend_from_slice(&[0; 6]);
    assert!(matches!(ip_of(&padded).l4, L4::Tcp { dport: 22, .. }));
}

#[test]
fn two_vlan_tags_are_looked_through_and_a_third_is_refused() {
    for tags in [&[5][..], &[5, 6]] {
        let f = PacketSpec::syn("192.0.2.7", "192.0.2.1", 22)
            .vlans(tags)
            .build();
        assert!(
            matches!(ip_of(&f).l4, L4::Tcp { dport: 22, .. }),
            "{tags:?}"
        );
    }
    let f = PacketSpec::syn("2001:db8::7", "2001:db8::1", 22)
        .vlans(&[5, 6, 7])
        .build();
    assert_eq!(reason_of(&f), Reason::TooManyVlans);
}

#[test]
fn impossible_ipv4_header_fields_are_bad_headers() {
    let f = PacketSpec::syn("192.0.2.7", "192.0.2.1", 22).build();
    let with = |at: usize, v: u8| {
        let mut g = f.clone();
        g[at] = v;
        g
    };
    assert_eq!(reason_of(&with(L3, 0x55)), Reason::BadHeader, "version 5");
    assert_eq!(reason_of(&with(L3, 0x44)), Reason::BadHeader, "IHL 4");
    assert_eq!(
        reason_of(&with(L3 + 3, 10)),
        Reason::BadHeader,
        "total < IHL"
    );
    // TCP data offset below 5 words.
    assert_eq!(reason_of(&with(L3 + 20 + 12, 0x40)), Reason::BadHeader);
}

#[test]
fn ipv4_options_move_the_transport_header() {
    let f = PacketSpec::udp("192.0.2.7", "192.0.2.1", 5353, 53)
        .options(40)
        .build();
    assert_eq!(
        ip_of(&f).l4,
        L4::Udp {
            sport: 5353,
            dport: 53
        }
    );
}

#[test]
fn a_udp_length_that_does_not_fit_the_datagram_is_a_bad_header() {
    let f = PacketSpec::udp("192.0.2.7", "192.0.2.1", 5353, 53)
        .payload(4)
        .build();
    for ulen in [7u16, 13] {
        let mut g = f.clone();
        g[L3 + 20 + 4..L3 + 20 + 6].copy_from_slice(&ulen.to_be_bytes());
        assert_eq!(reason_of(&g), Reason::BadHeader, "UDP length {ulen}");
    }
}

#[test]
fn fragments_are_told_apart_and_later_ones_carry_no_ports() {
    let first = PacketSpec::syn("192.0.2.7", "192.0.2.1", 22)
        .frag(FragSpec::First)
        .build();
    let ip = ip_of(&first);
    assert_eq!(ip.frag, Fragment::First);
    assert!(matches!(ip.l4, L4::Tcp { dport: 22, .. }));
    let later = PacketSpec::udp("192.0.2.7", "192.0.2.1", 5, 53)
        .frag(FragSpec::Later(100))
        .build();
    assert_eq!(
        (ip_of(&later).frag, ip_of(&later).l4),
        (Fragment::Later, L4::None)
    );
    let later6 = PacketSpec::udp("2001:db8::7", "2001:db8::1", 5, 53)
        .frag(FragSpec::Later(100))
        .build();
    assert_eq!(ip_of(&later6).frag, Fragment::Later);
}

#[test]
fn a_first_fragment_too_short_for_its_transport_header_is_tiny() {
    // A first IPv4 fragment holding 8 of the 20 bytes of its TCP header.
    let mut f = PacketSpec::tcp("192.0.2.7", "192.0.2.1", 40000, 22, SYN)
        .frag(FragSpec::First)
        .build();
    f.truncate(L3 + 20 + 8);
    let total = (20 + 8) as u16;
    f[L3 + 2..L3 + 4].copy_from_slice(&total.to_be_bytes());
    assert_eq!(reason_of(&f), Reason::TinyFragment);
    // RFC 1858: a TCP fragment at offset 8 bytes could only rewrite the flags.
    let at8 = PacketSpec::tcp("192.0.2.7", "192.0.2.1", 40000, 22, SYN)
        .frag(FragSpec::Later(1))
        .build();
    assert_eq!(reason_of(&at8), Reason::TinyFragment);
    let udp_at8 = PacketSpec::udp("192.0.2.7", "192.0.2.1", 5, 53)
        .frag(FragSpec::Later(1))
        .build();
    assert_eq!(ip_of(&udp_at8).frag, Fragment::Later);
}

#[test]
fn ipv6_extension_headers_are_walked_up_to_the_limit() {
    let chain: Vec<u8> = vec![p::IPPROTO_HOPOPTS, p::IPPROTO_DSTOPTS, p::IPPROTO_AH];
    let f = PacketSpec::tcp("2001:db8::7", "2001:db8::1", 40000, 22, SYN)
        .ext(&chain)
        .build();
    let ip = ip_of(&f);
    assert_eq!((ip.family, ip.proto), (Family::V6, p::IPPROTO_TCP));
    assert!(matches!(ip.l4, L4::Tcp { dport: 22, .. }));
    let at_limit = vec![p::IPPROTO_DSTOPTS; MAX_EXT_HEADERS];
    let f = PacketSpec::udp("2001:db8::7", "2001:db8::1", 5, 53)
        .ext(&at_limit)
        .build();
    assert_eq!(
        ip_of(&f).l4,
        L4::Udp {
            sport: 5,
            dport: 53
        }
    );
    let over = vec![p::IPPROTO_DSTOPTS; MAX_EXT_HEADERS + 1];
    let f = PacketSpec::udp("2001:db8::7", "2001:db8::1", 5, 53)
        .ext(&over)
        .build();
    assert_eq!(reason_of(&f), Reason::ExtHeaders);
}

#[test]
fn an_ipv6_jumbogram_is_a_bad_header() {
    let mut f = PacketSpec::udp("2001:db8::7", "2001:db8::1", 5, 53)
        .ext(&[p::IPPROTO_HOPOPTS])
        .build();
    f[L3 + 4..L3 + 6].copy_from_slice(&[0, 0]);
    assert_eq!(reason_of(&f), Reason::BadHeader);
}

#[test]
fn an_icmp_error_yields_the_packet_it_quotes() {
    // What this host sent: 192.0.2.1:40000 -> 198.51.100.9:443.
    let sent = PacketSpec::tcp("192.0.2.1", "198.51.100.9", 40000, 443, SYN).build();
    let quote = &sent[L3..L3 + 28];
    let mut f = PacketSpec::icmp("198.51.100.9", "192.0.2.1", 3, 4)
        .payload(quote.len())
        .build();
    let n = f.len();
    f[n - quote.len()..].copy_from_slice(quote);
    let L4::Icmp {
        ty, code, quoted, ..
    } = ip_of(&f).l4
    else {
        panic!("not ICMP")
    };
    let mut src = [0u8; 16];
    let mut dst = [0u8; 16];
    src[..4].copy_from_slice(&[192, 0, 2, 1]);
    dst[..4].copy_from_slice(&[198, 51, 100, 9]);
    assert_eq!((ty, code), (3, 4));
    assert_eq!(
        quoted,
        Some(Quoted {
            proto: p::IPPROTO_TCP,
            src,
            dst,
            sport: 40000,
            dport: 443
        })
    );
    // A quote cut short is a truncated packet, not an error about nothing.
    let mut cut = f.clone();
    cut.truncate(n - 4);
    cut[L3 + 2..L3 + 4].copy_from_slice(&((n - 4 - L3) as u16).to_be_bytes());
    assert_eq!(reason_of(&cut), Reason::Truncated);
}

#[test]
fn the_parser_never_panics_on_any_prefix_or_byte_flip() {
    let frames = [
        PacketSpec::syn("192.0.2.7", "192.0.2.1", 22)
            .options(8)
            .build(),
        PacketSpec::udp("2001:db8::7", "2001:db8::1", 5, 53)
            .ext(&[p::IPPROTO_HOPOPTS, p::IPPROTO_ROUTING])
            .frag(FragSpec::First)
            .build(),
        PacketSpec::new("192.0.2.7", "192.0.2.1", L4Spec::Icmp { ty: 11, code: 0 })
            .payload(28)
            .vlans(&[1, 2])
            .build(),
    ];
    for f in &frames {
        for len in 0..=f.len() {
            let _ = parse(&f[..len]);
        }
        for i in 0..f.len() {
            for v in [0x00, 0x45, 0x60, 0x81, 0xff] {
                let mut g = f.clone();
                g[i] = v;
                let _ = parse(&g[..]);
            }
        }
    }
}
