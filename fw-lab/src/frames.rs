//! Frames for the tests, made with the product's builder ([`fw_common::frame::PacketSpec`],
//! which also holds the one Internet checksum routine): the well-formed frames it builds, and
//! the surgery that makes them malformed on purpose — cut, padded, retagged, lengths or
//! checksums broken, IPv6 extension headers inserted — plus ICMP messages for raw sockets and
//! small readers of captured frames.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

pub use fw_common::frame::{
    DEFAULT_MACS, FragSpec, L4Spec, PacketSpec, arp_frame, checksum, csum_add, csum_fold,
    l4_checksum_offset, l4_checksum_ok, pseudo_sum, set_l4_checksum,
};
use fw_common::packet as pkt;

/// A big-endian u16 at `off`.
pub fn be16(f: &[u8], off: usize) -> u16 {
    u16::from_be_bytes([f[off], f[off + 1]])
}

/// Write a big-endian u16 at `off`.
pub fn put16(f: &mut [u8], off: usize, v: u16) {
    f[off..off + 2].copy_from_slice(&v.to_be_bytes());
}

/// Offset of the IP header: after the MACs and any 802.1Q/802.1ad tags (at most 8 looked at).
pub fn l3(f: &[u8]) -> usize {
    let mut off = 12;
    for _ in 0..8 {
        if off + 2 > f.len() {
            break;
        }
        let t = be16(f, off);
        if t == pkt::ETH_P_8021Q || t == pkt::ETH_P_8021AD {
            off += 4;
        } else {
            break;
        }
    }
    off + 2
}

/// Offset of the transport header of an IPv4 frame (by its IHL).
pub fn l4_v4(f: &[u8]) -> usize {
    let o = l3(f);
    o + (f[o] & 0x0f) as usize * 4
}

/// Make the IP length field say the datagram ends where the frame ends.
pub fn fix_len(mut f: Vec<u8>) -> Vec<u8> {
    let o = l3(&f);
    let len = f.len();
    match f.get(o).map(|b| b >> 4) {
        Some(4) if len >= o + 4 => put16(&mut f, o + 2, (len - o) as u16),
        Some(6) if len >= o + 40 => put16(&mut f, o + 4, (len - o - 40) as u16),
        _ => {}
    }
    f
}

/// Cut the frame to `len` bytes and make the IP length agree.
pub fn cut(mut f: Vec<u8>, len: usize) -> Vec<u8> {
    f.truncate(len);
    fix_len(f)
}

/// Ethernet padding: `n` bytes after the IP datagram that its length does not cover.
pub fn padded(mut f: Vec<u8>, n: usize, byte: u8) -> Vec<u8> {
    f.resize(f.len() + n, byte);
    f
}

/// Zero-pad a frame to the Ethernet minimum of `len` bytes (60 without the FCS).
pub fn pad_to(mut f: Vec<u8>, len: usize) -> Vec<u8> {
    if f.len() < len {
        f.resize(len, 0);
    }
    f
}

/// Replace tag TPIDs (outermost first) with these.
pub fn tpids(mut f: Vec<u8>, t: &[u16]) -> Vec<u8> {
    for (i, v) in t.iter().enumerate() {
        put16(&mut f, 12 + 4 * i, *v);
    }
    f
}

/// An Ethernet header with ethertype `t` and `payload` bytes of 0x5a.
pub fn with_ethertype(t: u16, payload: usize) -> Vec<u8> {
    let mut f = DEFAULT_MACS.0.to_vec();
    f.extend_from_slice(&DEFAULT_MACS.1);
    f.extend_from_slice(&t.to_be_bytes());
    f.resize(14 + payload, 0x5a);
    f
}

/// Recompute the IPv4 header checksum of a frame (after a header was edited on purpose).
pub fn fix_v4_header_checksum(f: &mut [u8]) {
    let o = l3(f);
    let ihl = usize::from(f[o] & 0x0f) * 4;
    let end = (o + ihl).min(f.len());
    put16(f, o + 10, 0);
    let c = checksum(&f[o..end]);
    put16(f, o + 10, c);
}

/// Break the transport checksum of an untagged or tagged IPv4/IPv6 frame without extension
/// headers (flip its bits): a well-formed frame a real stack discards.
pub fn corrupt_l4_checksum(mut f: Vec<u8>) -> Vec<u8> {
    let o = l3(&f);
    let (proto, l4) = match f[o] >> 4 {
        4 => (f[o + 9], l4_v4(&f)),
        _ => (f[o + 6], o + 40),
    };
    if let Some(c) = l4_checksum_offset(proto)
        && f.len() >= l4 + c + 2
    {
        let v = be16(&f, l4 + c);
        put16(&mut f, l4 + c, !v);
    }
    f
}

/// An ICMP (ICMPv6 for IPv6) error from `from` to `to` quoting the IP packet of `quoted` (a
/// frame), cut to `keep` bytes. Its own checksum is not recomputed (fw does not check it).
pub fn icmp_error(from: &str, to: &str, ty: u8, code: u8, quoted: &[u8], keep: usize) -> Vec<u8> {
    let q = &quoted[l3(quoted)..];
    let q = &q[..keep.min(q.len())];
    let mut f = PacketSpec::icmp(from, to, ty, code)
        .payload(q.len())
        .build();
    let n = f.len();
    f[n - q.len()..].copy_from_slice(q);
    f
}

/// An IPv6 extension header for [`v6_chain`]: type and total length in bytes.
#[derive(Clone, Copy, Debug)]
pub enum Ext {
    Hbh(usize),
    Rt(usize),
    Dst(usize),
    Ah(usize),
    Frag { offset: u16, more: bool },
}

impl Ext {
    fn next_header(&self) -> u8 {
        match self {
            Ext::Hbh(_) => pkt::IPPROTO_HOPOPTS,
            Ext::Rt(_) => pkt::IPPROTO_ROUTING,
            Ext::Dst(_) => pkt::IPPROTO_DSTOPTS,
            Ext::Ah(_) => pkt::IPPROTO_AH,
            Ext::Frag { .. } => pkt::IPPROTO_FRAGMENT,
        }
    }
}

/// An IPv6 frame from the builder (without `ext`/`frag`), with these extension headers
/// inserted before its transport header; the payload length is fixed up.
pub fn v6_chain(spec: PacketSpec, chain: &[Ext]) -> Vec<u8> {
    v6_chain_frame(spec.build(), chain)
}

/// An IPv6 frame with these extension headers inserted after its fixed header.
pub fn v6_chain_frame(f: Vec<u8>, chain: &[Ext]) -> Vec<u8> {
    let o = l3(&f);
    assert_eq!(f[o] >> 4, 6, "v6_chain needs an IPv6 spec");
    let proto = f[o + 6];
    let mut out = f[..o + 40].to_vec();
    out[o + 6] = chain.first().map_or(proto, Ext::next_header);
    for (i, e) in chain.iter().enumerate() {
        let next = chain.get(i + 1).map_or(proto, Ext::next_header);
        match *e {
            Ext::Hbh(n) | Ext::Rt(n) | Ext::Dst(n) => {
                assert!(n >= 8 && n % 8 == 0 && n <= 2048);
                out.extend_from_slice(&[next, (n / 8 - 1) as u8]);
                // Pad1 options (zeros) fill the rest; a routing header of type 0, segments 0.
                out.resize(out.len() + n - 2, 0);
            }
            Ext::Ah(n) => {
                assert!(n >= 8 && n % 4 == 0 && n <= 1028);
                out.extend_from_slice(&[next, (n / 4 - 2) as u8]);
                out.resize(out.len() + n - 2, 0);
            }
            Ext::Frag { offset, more } => {
                out.extend_from_slice(&[next, 0]);
                out.extend_from_slice(&((offset << 3) | u16::from(more)).to_be_bytes());
                out.extend_from_slice(&0x1234_5678u32.to_be_bytes());
            }
        }
    }
    out.extend_from_slice(&f[o + 40..]);
    fix_len(out)
}

/// A VLAN tag: (TPID, VLAN id), e.g. (0x8100, 100) or (0x88a8, 0).
pub type Tag = (u16, u16);

/// An Ethernet frame carrying an IPv4 TCP SYN (valid checksums), with `tags` outermost first.
pub fn syn_frame(
    dst_mac: [u8; 6],
    src_mac: [u8; 6],
    tags: &[Tag],
    src: Ipv4Addr,
    dst: Ipv4Addr,
    sport: u16,
    dport: u16,
) -> Vec<u8> {
    let spec = PacketSpec::tcp(
        &src.to_string(),
        &dst.to_string(),
        sport,
        dport,
        fw_common::tcp::SYN,
    )
    .seq_ack(0x1000_0000u32.wrapping_add(u32::from(sport)), 0)
    .vlans(&tags.iter().map(|t| t.1).collect::<Vec<_>>())
    .macs(dst_mac, src_mac);
    let t: Vec<u16> = tags.iter().map(|t| t.0).collect();
    tpids(spec.build(), &t)
}

/// The TCP flags of `frame` if it is an untagged IPv4 TCP segment from `src:sport` to
/// `dst:dport`.
pub fn tcp_flags_of(
    frame: &[u8],
    src: Ipv4Addr,
    sport: u16,
    dst: Ipv4Addr,
    dport: u16,
) -> Option<u8> {
    if frame.len() < 14 + 20 + 20 || frame[12..14] != [0x08, 0x00] {
        return None;
    }
    let ip = &frame[14..];
    let ihl = usize::from(ip[0] & 0x0f) * 4;
    if ip[0] >> 4 != 4 || ip[9] != 6 || ip.len() < ihl + 20 {
        return None;
    }
    if ip[12..16] != src.octets() || ip[16..20] != dst.octets() {
        return None;
    }
    let tcp = &ip[ihl..];
    let (sp, dp) = (be16(tcp, 0), be16(tcp, 2));
    (sp == sport && dp == dport).then_some(tcp[13])
}

/// The first 8 bytes of a TCP header: ports and sequence number (what an ICMP error quotes).
pub fn tcp8(sport: u16, dport: u16, seq: u32) -> Vec<u8> {
    let mut t = Vec::with_capacity(8);
    t.extend_from_slice(&sport.to_be_bytes());
    t.extend_from_slice(&dport.to_be_bytes());
    t.extend_from_slice(&seq.to_be_bytes());
    t
}

/// ICMP "fragmentation needed" (type 3 code 4) quoting a 1500-byte TCP segment `src:sport →
/// dst:dport` with sequence number `seq` (valid checksums; a raw socket adds the outer header).
pub fn frag_needed(
    mtu: u16,
    src: Ipv4Addr,
    dst: Ipv4Addr,
    sport: u16,
    dport: u16,
    seq: u32,
) -> Vec<u8> {
    let mut ip = vec![0x45, 0];
    ip.extend_from_slice(&1500u16.to_be_bytes());
    ip.extend_from_slice(&[0x12, 0x34, 0x40, 0x00, 64, 6, 0, 0]);
    ip.extend_from_slice(&src.octets());
    ip.extend_from_slice(&dst.octets());
    let c = checksum(&ip);
    put16(&mut ip, 10, c);
    let mut m = vec![3, 4, 0, 0, 0, 0];
    m.extend_from_slice(&mtu.to_be_bytes());
    m.extend_from_slice(&ip);
    m.extend_from_slice(&tcp8(sport, dport, seq));
    let c = checksum(&m);
    put16(&mut m, 2, c);
    m
}

/// ICMPv6 "packet too big" (type 2) quoting a TCP segment `src:sport → dst:dport`. The kernel
/// fills in the checksum of ICMPv6 raw sockets.
pub fn packet_too_big(
    mtu: u32,
    src: Ipv6Addr,
    dst: Ipv6Addr,
    sport: u16,
    dport: u16,
    seq: u32,
) -> Vec<u8> {
    let mut m = vec![2, 0, 0, 0];
    m.extend_from_slice(&mtu.to_be_bytes());
    m.extend_from_slice(&[0x60, 0, 0, 0]);
    m.extend_from_slice(&1460u16.to_be_bytes());
    m.extend_from_slice(&[6, 64]);
    m.extend_from_slice(&src.octets());
    m.extend_from_slice(&dst.octets());
    m.extend_from_slice(&tcp8(sport, dport, seq));
    m
}

/// An echo reply nobody asked for (ICMP type 0 / ICMPv6 type 129) with identifier `id`, for a
/// raw socket (which fills in an ICMPv6 checksum itself).
pub fn echo_reply(v6: bool, id: u16) -> Vec<u8> {
    let mut m = vec![if v6 { 129 } else { 0 }, 0, 0, 0];
    m.extend_from_slice(&id.to_be_bytes());
    m.extend_from_slice(&1u16.to_be_bytes());
    m.extend_from_slice(b"fw-e2e unsolicited echo reply");
    if !v6 {
        let c = checksum(&m);
        put16(&mut m, 2, c);
    }
    m
}

/// Whether an ICMP error (from its type on) is `ty` and quotes a TCP segment to `dport`.
pub fn quotes(icmp: &[u8], ty: u8, v6: bool, dport: u16) -> bool {
    let inner = if v6 { 8 + 40 } else { 8 + 20 };
    icmp.len() >= inner + 4 && icmp[0] == ty && be16(icmp, inner + 2) == dport
}

/// The source, ports, sequence number and sequence length (payload + SYN/FIN) of an untagged
/// TCP segment without IPv6 extension headers.
pub fn tcp_segment(f: &[u8]) -> Option<(IpAddr, u16, u16, u32, u32)> {
    if f.len() < 14 {
        return None;
    }
    let (ip, l4, src): (&[u8], usize, IpAddr) = match be16(f, 12) {
        0x0800 if f.len() >= 34 => {
            let ip = &f[14..];
            let ihl = usize::from(ip[0] & 0x0f) * 4;
            let total = usize::from(be16(ip, 2));
            if ip[9] != 6 {
                return None;
            }
            let src = Ipv4Addr::new(ip[12], ip[13], ip[14], ip[15]);
            (&ip[..total.min(ip.len())], ihl, src.into())
        }
        0x86dd if f.len() >= 54 => {
            let ip = &f[14..];
            let total = 40 + usize::from(be16(ip, 4));
            if ip[6] != 6 {
                return None;
            }
            let src: [u8; 16] = ip[8..24].try_into().ok()?;
            (&ip[..total.min(ip.len())], 40, Ipv6Addr::from(src).into())
        }
        _ => return None,
    };
    if ip.len() < l4 + 20 {
        return None;
    }
    let t = &ip[l4..];
    let seq = u32::from_be_bytes([t[4], t[5], t[6], t[7]]);
    let doff = usize::from(t[12] >> 4) * 4;
    let syn_fin = u32::from(t[13] & 0x03 != 0);
    let len = t.len().saturating_sub(doff) as u32 + syn_fin;
    Some((src, be16(t, 0), be16(t, 2), seq, len))
}

#[cfg(test)]
mod tests {
    use super::*;
    use fw_common::{L4, Parsed, parse, tcp};

    #[test]
    fn a_tagged_syn_frame_parses_back_with_its_checksums_valid() {
        let (s, d) = (Ipv4Addr::new(10, 0, 0, 2), Ipv4Addr::new(10, 0, 0, 1));
        let f = syn_frame([1; 6], [2; 6], &[(0x88a8, 5), (0x8100, 0)], s, d, 4000, 80);
        assert_eq!(&f[..6], &[1; 6]);
        assert_eq!((be16(&f, 12), be16(&f, 16)), (0x88a8, 0x8100));
        let Ok(Parsed::Ip(ip)) = parse(&f[..]) else {
            panic!("not parsed")
        };
        assert!(matches!(
            ip.l4,
            L4::Tcp {
                sport: 4000,
                dport: 80,
                flags: tcp::SYN,
                ..
            }
        ));
        let o = l3(&f);
        assert_eq!(checksum(&f[o..o + 20]), 0);
        assert!(l4_checksum_ok(6, s.into(), d.into(), &f[o + 20..]));
        assert!(!l4_checksum_ok(
            6,
            s.into(),
            d.into(),
            &corrupt_l4_checksum(f.clone())[o + 20..]
        ));
        // The reply's flags are read only from an untagged frame of the right flow.
        let reply = PacketSpec::tcp("10.0.0.1", "10.0.0.2", 80, 4000, 0x12).build();
        assert_eq!(tcp_flags_of(&reply, d, 80, s, 4000), Some(0x12));
        assert_eq!(tcp_flags_of(&reply, d, 80, s, 4001), None);
        assert_eq!(tcp_flags_of(&f, s, 4000, d, 80), None);
    }

    #[test]
    fn surgery_keeps_the_ip_length_in_step_with_the_frame() {
        let f = PacketSpec::syn("192.0.2.1", "192.0.2.2", 22)
            .payload(10)
            .build();
        let c = cut(f.clone(), 40);
        assert_eq!(be16(&c, 16), 40 - 14);
        let p = padded(f.clone(), 6, 0);
        assert_eq!(
            be16(&p, 16),
            be16(&f, 16),
            "padding is not part of the datagram"
        );
        let v6 = v6_chain(
            PacketSpec::syn("2001:db8::1", "2001:db8::2", 22),
            &[
                Ext::Hbh(8),
                Ext::Frag {
                    offset: 0,
                    more: true,
                },
            ],
        );
        assert_eq!((v6[14 + 6], be16(&v6, 18)), (0, 8 + 8 + 20));
        let Ok(Parsed::Ip(ip)) = parse(&v6[..]) else {
            panic!("not parsed")
        };
        assert!(matches!(ip.l4, L4::Tcp { dport: 22, .. }));
    }

    #[test]
    fn icmp_messages_for_raw_sockets_carry_their_checksums_and_quotes() {
        let (a, b) = (Ipv4Addr::new(10, 0, 0, 1), Ipv4Addr::new(10, 0, 0, 2));
        let m = frag_needed(1400, a, b, 40000, 80, 7);
        assert_eq!(checksum(&m), 0);
        assert!(quotes(&m, 3, false, 80));
        assert_eq!(checksum(&echo_reply(false, 9)), 0);
        let (a6, b6) = (
            "2001:db8::1".parse().unwrap(),
            "2001:db8::2".parse().unwrap(),
        );
        assert!(quotes(
            &packet_too_big(1280, a6, b6, 40000, 443, 7),
            2,
            true,
            443
        ));
        let f = PacketSpec::tcp("2001:db8::1", "2001:db8::2", 5, 6, tcp::SYN)
            .seq_ack(100, 0)
            .payload(3)
            .build();
        assert_eq!(tcp_segment(&f), Some((a6.into(), 5, 6, 100, 4)));
    }
}
