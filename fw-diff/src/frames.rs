//! Frames for the differential test: Ethernet + IPv4/IPv6 + TCP/UDP/ICMP with correct
//! checksums (conntrack checks them: a frame with a wrong checksum is a different test), IP
//! fragments, IPv4 options, IPv6 extension headers, and the helpers the generator uses to
//! break them on purpose.
//!
//! Why not `fw_common::frame::PacketSpec`: that builder makes a frame from a few facts; the
//! generator needs a datagram from arbitrary transport bytes (options, payloads, broken
//! headers), carrying a key in its IPv4 identification or IPv6 flow label, cut into fragments
//! at arbitrary offsets and orders. [`Dgram`] is that layer; its checksums are the product's
//! (`fw_common::frame`), so there is one Internet checksum in the workspace.
//!
//! Every datagram carries its probe's key where the host's stack keeps it: the IPv4
//! identification, or the IPv6 flow label. The observation points read it back.

use std::net::IpAddr;

/// The host under test's veth (the same in both hosts: they live in separate namespaces).
pub const HOST_MAC: [u8; 6] = [0x02, 0x77, 0, 0, 0, 0x01];
/// The sender's veth: where the host sends its own packets (a permanent neighbour entry).
pub const PEER_MAC: [u8; 6] = [0x02, 0x77, 0, 0, 0, 0x02];
/// The source MAC of every generated frame: the observation rules log only these, so the
/// sender's own kernel traffic (if any) is never counted.
pub const PROBE_MAC: [u8; 6] = [0x02, 0x77, 0, 0, 0, 0xaa];

pub const ETH_HLEN: usize = 14;
pub const ETHERTYPE_IPV4: u16 = 0x0800;
pub const ETHERTYPE_IPV6: u16 = 0x86dd;
pub const ETHERTYPE_ARP: u16 = 0x0806;

pub const TCP: u8 = 6;
pub const UDP: u8 = 17;
pub const ICMP: u8 = 1;
pub const ICMPV6: u8 = 58;
pub const HOPOPTS: u8 = 0;
pub const ROUTING: u8 = 43;
pub const FRAGMENT: u8 = 44;
pub const AH: u8 = 51;
pub const NONXT: u8 = 59;
pub const DSTOPTS: u8 = 60;

pub use fw_common::frame::{csum_add, csum_fold, pseudo_sum, set_l4_checksum};
pub use fw_lab::frames::fix_v4_header_checksum;

/// A TCP segment (checksum left 0): `opts` are padded with NOPs to a multiple of 4.
#[allow(clippy::too_many_arguments)]
pub fn tcp(
    sport: u16,
    dport: u16,
    seq: u32,
    ack: u32,
    flags: u8,
    opts: &[u8],
    payload: &[u8],
) -> Vec<u8> {
    let olen = opts.len().div_ceil(4) * 4;
    let mut b = Vec::with_capacity(20 + olen + payload.len());
    b.extend_from_slice(&sport.to_be_bytes());
    b.extend_from_slice(&dport.to_be_bytes());
    b.extend_from_slice(&seq.to_be_bytes());
    b.extend_from_slice(&ack.to_be_bytes());
    b.push((((20 + olen) / 4) as u8) << 4);
    b.push(flags);
    b.extend_from_slice(&64240u16.to_be_bytes());
    b.extend_from_slice(&[0, 0]); // checksum
    let urg = if flags & 0x20 != 0 { 1u16 } else { 0 };
    b.extend_from_slice(&urg.to_be_bytes());
    b.extend_from_slice(opts);
    b.resize(20 + olen, 1); // NOP padding
    b.extend_from_slice(payload);
    b
}

/// A TCP MSS option (what a SYN normally carries).
pub const MSS_OPT: [u8; 4] = [2, 4, 0x05, 0xb4];

/// A UDP datagram (checksum left 0); the length field covers header and payload.
pub fn udp(sport: u16, dport: u16, payload: &[u8]) -> Vec<u8> {
    let mut b = Vec::with_capacity(8 + payload.len());
    b.extend_from_slice(&sport.to_be_bytes());
    b.extend_from_slice(&dport.to_be_bytes());
    b.extend_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
    b.extend_from_slice(&[0, 0]);
    b.extend_from_slice(payload);
    b
}

/// An ICMP/ICMPv6 message (checksum left 0): type, code, the 4 bytes after the checksum, body.
pub fn icmp(ty: u8, code: u8, rest: [u8; 4], body: &[u8]) -> Vec<u8> {
    let mut b = vec![ty, code, 0, 0];
    b.extend_from_slice(&rest);
    b.extend_from_slice(body);
    b
}

/// An IPv6 extension header of `len8` 8-byte units (hop-by-hop / destination options carry
/// one option of the experimental type 0x1e, which a receiver skips: Linux refuses more than 7
/// bytes of padding; routing is type 0 with no segments left; AH has a 4-byte ICV).
/// The next-header byte is patched by [`Dgram`].
pub fn v6_ext(ty: u8, len8: usize) -> Vec<u8> {
    let len8 = len8.max(1);
    let total = len8 * 8;
    let mut b = vec![0u8; total];
    match ty {
        AH => {
            // AH length field: 4-octet units minus 2.
            b[1] = (total / 4 - 2) as u8;
            b[4..8].copy_from_slice(&0x0000_1234u32.to_be_bytes()); // SPI
            b[8..12].copy_from_slice(&1u32.to_be_bytes()); // sequence
        }
        ROUTING => {
            b[1] = (len8 - 1) as u8;
            b[2] = 0; // type 0
            b[3] = 0; // segments left: nothing to route
        }
        _ => {
            b[1] = (len8 - 1) as u8;
            // One option covering the rest: type 0x1e (RFC 4727, "skip if unknown").
            b[2] = 0x1e;
            b[3] = (total - 4) as u8;
        }
    }
    b
}

/// One IP datagram to be sent whole or in fragments.
#[derive(Clone, Debug)]
pub struct Dgram {
    pub src: IpAddr,
    pub dst: IpAddr,
    /// The protocol of `l4` (the last next-header value).
    pub proto: u8,
    /// The transport segment, checksum filled in by [`Dgram::new`] (callers that break it on
    /// purpose do so afterwards).
    pub l4: Vec<u8>,
    /// IPv4 identification / IPv6 flow label (the probe's key).
    pub key: u32,
    pub ttl: u8,
    /// IPv4 options (padded to a multiple of 4 when built).
    pub v4_opts: Vec<u8>,
    /// IPv6 extension headers before the fragment header: (type, bytes).
    pub v6_ext: Vec<(u8, Vec<u8>)>,
    pub dst_mac: [u8; 6],
}

impl Dgram {
    /// A datagram with the transport checksum computed.
    pub fn new(src: IpAddr, dst: IpAddr, proto: u8, mut l4: Vec<u8>, key: u32) -> Dgram {
        set_l4_checksum(proto, src, dst, &mut l4);
        Dgram {
            src,
            dst,
            proto,
            l4,
            key,
            ttl: 64,
            v4_opts: Vec::new(),
            v6_ext: Vec::new(),
            dst_mac: dst_mac_for(dst),
        }
    }

    pub fn is_v6(&self) -> bool {
        self.src.is_ipv6()
    }

    fn eth(&self, ethertype: u16) -> Vec<u8> {
        let mut f = Vec::with_capacity(128);
        f.extend_from_slice(&self.dst_mac);
        f.extend_from_slice(&PROBE_MAC);
        f.extend_from_slice(&ethertype.to_be_bytes());
        f
    }

    /// IPv4 header: `frag` is the flags+offset field.
    fn v4_header(&self, frag: u16, payload_len: usize) -> Vec<u8> {
        let (IpAddr::V4(s), IpAddr::V4(d)) = (self.src, self.dst) else {
            panic!("not IPv4")
        };
        let olen = self.v4_opts.len().div_ceil(4) * 4;
        let ihl = 20 + olen;
        let mut h = vec![0x40 | (ihl / 4) as u8, 0];
        h.extend_from_slice(&((ihl + payload_len) as u16).to_be_bytes());
        h.extend_from_slice(&(self.key as u16).to_be_bytes());
        h.extend_from_slice(&frag.to_be_bytes());
        h.extend_from_slice(&[self.ttl, self.proto, 0, 0]);
        h.extend_from_slice(&s.octets());
        h.extend_from_slice(&d.octets());
        h.extend_from_slice(&self.v4_opts);
        h.resize(ihl, 0); // EOL padding
        let c = csum_fold(csum_add(0, &h));
        h[10..12].copy_from_slice(&c.to_be_bytes());
        h
    }

    /// IPv6 header and the extension headers, `tail` being the chain's last next-header value
    /// and `rest` the length of what follows them.
    fn v6_header(&self, tail: u8, rest: usize) -> Vec<u8> {
        let (IpAddr::V6(s), IpAddr::V6(d)) = (self.src, self.dst) else {
            panic!("not IPv6")
        };
        let mut ext = Vec::new();
        for (i, (_, bytes)) in self.v6_ext.iter().enumerate() {
            let next = self.v6_ext.get(i + 1).map(|e| e.0).unwrap_or(tail);
            let mut b = bytes.clone();
            b[0] = next;
            ext.extend_from_slice(&b);
        }
        let first = self.v6_ext.first().map(|e| e.0).unwrap_or(tail);
        let flow = self.key & 0x000f_ffff;
        let mut h = Vec::with_capacity(40 + ext.len());
        h.extend_from_slice(&(0x6000_0000u32 | flow).to_be_bytes());
        h.extend_from_slice(&((ext.len() + rest) as u16).to_be_bytes());
        h.extend_from_slice(&[first, self.ttl]);
        h.extend_from_slice(&s.octets());
        h.extend_from_slice(&d.octets());
        h.extend_from_slice(&ext);
        h
    }

    /// The whole datagram in one frame.
    pub fn frame(&self) -> Vec<u8> {
        if self.is_v6() {
            let mut f = self.eth(ETHERTYPE_IPV6);
            f.extend_from_slice(&self.v6_header(self.proto, self.l4.len()));
            f.extend_from_slice(&self.l4);
            f
        } else {
            let mut f = self.eth(ETHERTYPE_IPV4);
            f.extend_from_slice(&self.v4_header(0x4000, self.l4.len())); // DF
            f.extend_from_slice(&self.l4);
            f
        }
    }

    /// Fragments carrying the byte ranges `pieces` (start, end) of the transport segment,
    /// in the order given; the one that reaches the segment's end has no more-fragments flag
    /// unless `more_at_end`. IPv6 fragments carry `frag_id` (IPv4 uses the key).
    pub fn fragments(&self, pieces: &[(usize, usize)], frag_id: u32) -> Vec<Vec<u8>> {
        let total = self.l4.len();
        pieces
            .iter()
            .map(|&(start, end)| {
                let end = end.min(total);
                let more = end < total;
                self.fragment(start, end, more, frag_id)
            })
            .collect()
    }

    /// One fragment: bytes `start..end` of the segment, at offset `start` (a multiple of 8).
    pub fn fragment(&self, start: usize, end: usize, more: bool, frag_id: u32) -> Vec<u8> {
        let data = &self.l4[start.min(self.l4.len())..end.min(self.l4.len())];
        let units = (start / 8) as u16;
        if self.is_v6() {
            let mut f = self.eth(ETHERTYPE_IPV6);
            f.extend_from_slice(&self.v6_header(FRAGMENT, 8 + data.len()));
            f.push(self.proto);
            f.push(0);
            f.extend_from_slice(&((units << 3) | u16::from(more)).to_be_bytes());
            f.extend_from_slice(&frag_id.to_be_bytes());
            f.extend_from_slice(data);
            f
        } else {
            let mut f = self.eth(ETHERTYPE_IPV4);
            let field = (if more { 0x2000 } else { 0 }) | (units & 0x1fff);
            f.extend_from_slice(&self.v4_header(field, data.len()));
            f.extend_from_slice(data);
            f
        }
    }

    /// An IPv6 "atomic fragment": a fragment header with offset 0 and no more fragments.
    pub fn atomic_fragment(&self, frag_id: u32) -> Vec<u8> {
        self.fragment(0, self.l4.len(), false, frag_id)
    }
}

/// The Ethernet destination for an IP destination: the host's MAC for unicast, the
/// multicast / broadcast MAC otherwise.
pub fn dst_mac_for(dst: IpAddr) -> [u8; 6] {
    match dst {
        IpAddr::V4(a) if a.is_broadcast() || a.octets()[3] == 255 => [0xff; 6],
        IpAddr::V4(a) if a.is_multicast() => {
            let o = a.octets();
            [0x01, 0x00, 0x5e, o[1] & 0x7f, o[2], o[3]]
        }
        IpAddr::V6(a) if a.is_multicast() => {
            let o = a.octets();
            [0x33, 0x33, o[12], o[13], o[14], o[15]]
        }
        _ => HOST_MAC,
    }
}

/// Where the IP header of a frame starts, its family, and the header length (IPv4 IHL or 40).
pub fn ip_at(frame: &[u8]) -> Option<(bool, usize)> {
    let et = u16::from_be_bytes([*frame.get(12)?, *frame.get(13)?]);
    match et {
        ETHERTYPE_IPV4 => Some((false, ETH_HLEN)),
        ETHERTYPE_IPV6 => Some((true, ETH_HLEN)),
        _ => None,
    }
}

/// The probe key an IP header carries: IPv4 identification or IPv6 flow label; `ip` starts at
/// the IP header.
pub fn key_of_ip(v6: bool, ip: &[u8]) -> Option<u32> {
    if v6 {
        let w = u32::from_be_bytes([*ip.first()?, *ip.get(1)?, *ip.get(2)?, *ip.get(3)?]);
        (w >> 28 == 6).then_some(w & 0x000f_ffff)
    } else {
        if ip.first()? >> 4 != 4 {
            return None;
        }
        Some(u32::from(u16::from_be_bytes([*ip.get(4)?, *ip.get(5)?])))
    }
}

/// An ARP request from the probe MAC: `spa` asks who has `tpa`.
pub fn arp_request(spa: [u8; 4], tpa: [u8; 4]) -> Vec<u8> {
    let mut f = Vec::with_capacity(42);
    f.extend_from_slice(&HOST_MAC);
    f.extend_from_slice(&PROBE_MAC);
    f.extend_from_slice(&ETHERTYPE_ARP.to_be_bytes());
    f.extend_from_slice(&[0, 1, 8, 0, 6, 4, 0, 1]);
    f.extend_from_slice(&PROBE_MAC);
    f.extend_from_slice(&spa);
    f.extend_from_slice(&[0; 6]);
    f.extend_from_slice(&tpa);
    f
}

/// If `frame` is an ARP reply telling `spa` (the requester), the address it answers for.
pub fn arp_reply_to(frame: &[u8], spa: [u8; 4]) -> bool {
    frame.len() >= 42
        && frame[12..14] == ETHERTYPE_ARP.to_be_bytes()
        && frame[20..22] == [0, 2]
        && frame[38..42] == spa
}

/// A transport header parsed from a frame the host sent (for the stateful scripts).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Seen {
    pub src: IpAddr,
    pub dst: IpAddr,
    pub proto: u8,
    pub sport: u16,
    pub dport: u16,
    pub seq: u32,
    pub ack: u32,
    pub flags: u8,
    /// TCP payload length (plus SYN/FIN, which take a sequence number each).
    pub seq_len: u32,
}

/// Parse what the host sent: plain IPv4/IPv6 (no extension headers) with TCP, UDP or ICMP
/// (for ICMP, `sport` is the echo identifier). Returns the IP packet too (for quoting).
pub fn parse_sent(frame: &[u8]) -> Option<(Seen, &[u8])> {
    let (v6, off) = ip_at(frame)?;
    let ip = frame.get(off..)?;
    let (src, dst, proto, l4off, total): (IpAddr, IpAddr, u8, usize, usize) = if v6 {
        let h = ip.get(..40)?;
        let mut s = [0u8; 16];
        let mut d = [0u8; 16];
        s.copy_from_slice(&h[8..24]);
        d.copy_from_slice(&h[24..40]);
        let plen = usize::from(u16::from_be_bytes([h[4], h[5]]));
        (s.into(), d.into(), h[6], 40, 40 + plen)
    } else {
        let h = ip.get(..20)?;
        let ihl = usize::from(h[0] & 0x0f) * 4;
        let s: [u8; 4] = h[12..16].try_into().ok()?;
        let d: [u8; 4] = h[16..20].try_into().ok()?;
        let total = usize::from(u16::from_be_bytes([h[2], h[3]]));
        (s.into(), d.into(), h[9], ihl, total)
    };
    let ip = ip.get(..total.min(ip.len()))?;
    let l4 = ip.get(l4off..)?;
    let be16 =
        |o: usize| -> Option<u16> { Some(u16::from_be_bytes([*l4.get(o)?, *l4.get(o + 1)?])) };
    let be32 = |o: usize| -> Option<u32> {
        Some(u32::from_be_bytes([
            *l4.get(o)?,
            *l4.get(o + 1)?,
            *l4.get(o + 2)?,
            *l4.get(o + 3)?,
        ]))
    };
    let seen = match proto {
        TCP => {
            let doff = usize::from(l4.get(12)? >> 4) * 4;
            let flags = *l4.get(13)?;
            let data = l4.len().saturating_sub(doff) as u32;
            Seen {
                src,
                dst,
                proto,
                sport: be16(0)?,
                dport: be16(2)?,
                seq: be32(4)?,
                ack: be32(8)?,
                flags,
                seq_len: data + u32::from(flags & 0x02 != 0) + u32::from(flags & 0x01 != 0),
            }
        }
        UDP => Seen {
            src,
            dst,
            proto,
            sport: be16(0)?,
            dport: be16(2)?,
            seq: 0,
            ack: 0,
            flags: 0,
            seq_len: 0,
        },
        ICMP | ICMPV6 => Seen {
            src,
            dst,
            proto,
            sport: be16(4)?,
            dport: 0,
            seq: 0,
            ack: 0,
            flags: *l4.first()?,
            seq_len: 0,
        },
        _ => Seen {
            src,
            dst,
            proto,
            sport: 0,
            dport: 0,
            seq: 0,
            ack: 0,
            flags: 0,
            seq_len: 0,
        },
    };
    Some((seen, ip))
}

#[cfg(test)]
mod tests {
    use super::*;
    use fw_common::{Fragment, L4, Parsed, parse};

    fn a(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn checksums_verify() {
        for (src, dst) in [("192.0.2.1", "10.77.0.1"), ("2001:db8::1", "fd00:77::1")] {
            for proto in [TCP, UDP] {
                let l4 = if proto == TCP {
                    tcp(1234, 80, 7, 0, 0x02, &MSS_OPT, b"hello")
                } else {
                    udp(1234, 53, b"hello")
                };
                let d = Dgram::new(a(src), a(dst), proto, l4, 5);
                let s = csum_add(pseudo_sum(d.src, d.dst, proto, d.l4.len()), &d.l4);
                assert_eq!(csum_fold(s), 0, "{src} proto {proto}");
            }
        }
        let d = Dgram::new(
            a("192.0.2.1"),
            a("10.77.0.1"),
            ICMP,
            icmp(8, 0, [0, 1, 0, 1], b"x"),
            1,
        );
        assert_eq!(csum_fold(csum_add(0, &d.l4)), 0);
        let f = d.frame();
        assert_eq!(
            csum_fold(csum_add(0, &f[14..34])),
            0,
            "IPv4 header checksum"
        );
    }

    #[test]
    fn frames_parse_in_fw_and_carry_the_key() {
        let d = Dgram::new(
            a("2001:db8::1"),
            a("fd00:77::1"),
            TCP,
            tcp(1, 22, 0, 0, 0x02, &[], &[0; 40]),
            0x12345,
        );
        let mut d2 = d.clone();
        d2.v6_ext = vec![(HOPOPTS, v6_ext(HOPOPTS, 1)), (DSTOPTS, v6_ext(DSTOPTS, 2))];
        for f in [d.frame(), d2.frame()] {
            let Ok(Parsed::Ip(ip)) = parse(&f[..]) else {
                panic!("not parsed")
            };
            assert!(matches!(ip.l4, L4::Tcp { dport: 22, .. }));
            assert_eq!(key_of_ip(true, &f[14..]), Some(0x12345));
        }
        let frags = d2.fragments(&[(0, 24), (24, 60)], 99);
        let Ok(Parsed::Ip(ip)) = parse(&frags[0][..]) else {
            panic!()
        };
        assert_eq!(ip.frag, Fragment::First);
        let Ok(Parsed::Ip(ip)) = parse(&frags[1][..]) else {
            panic!()
        };
        assert_eq!(ip.frag, Fragment::Later);
        let v4 = Dgram::new(
            a("192.0.2.1"),
            a("10.77.0.1"),
            UDP,
            udp(5, 53, &[0; 30]),
            0x8001,
        );
        let fr = v4.fragments(&[(16, 38), (0, 16)], 0);
        assert_eq!(key_of_ip(false, &fr[0][14..]), Some(0x8001));
        let Ok(Parsed::Ip(ip)) = parse(&fr[1][..]) else {
            panic!()
        };
        assert_eq!(ip.frag, Fragment::First);
        let (seen, _) = parse_sent(&v4.frame()).unwrap();
        assert_eq!((seen.sport, seen.dport, seen.proto), (5, 53, UDP));
    }
}
