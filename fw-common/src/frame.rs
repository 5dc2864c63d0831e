//! Frames built from a description (feature `builder`, std): for `fw explain` and the lockout
//! guard, which judge packets with `decide()`, and for the tests, which feed the same bytes to
//! the kernel (BPF_PROG_TEST_RUN) and to the userspace `decide()`, and send them on veths.
//!
//! A built frame is well-formed: IP header, TCP/UDP/ICMP/ICMPv6 checksums included (whole,
//! unfragmented datagrams), so a real stack treats it as real traffic. The Internet checksum
//! here ([`csum_add`], [`csum_fold`], [`set_l4_checksum`]) is the one the tests use too; the
//! malformed variants are made from these frames by the test lab (`fw-lab`).

use std::{format, net::IpAddr, string::String, vec, vec::Vec};

use crate::{packet as p, tcp};

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum L4Spec {
    Tcp {
        sport: u16,
        dport: u16,
        flags: u8,
    },
    Udp {
        sport: u16,
        dport: u16,
    },
    /// ICMP for IPv4 sources, ICMPv6 for IPv6.
    Icmp {
        ty: u8,
        code: u8,
    },
    /// Another protocol number with `len` bytes of payload.
    Raw {
        proto: u8,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum FragSpec {
    #[default]
    None,
    /// Offset 0, more fragments.
    First,
    /// Offset in 8-byte units (> 0).
    Later(u16),
}

#[derive(Clone, Debug)]
pub struct PacketSpec {
    pub src: IpAddr,
    pub dst: IpAddr,
    pub l4: L4Spec,
    /// 802.1Q tag ids, outermost first (0, 1 or 2 usually; more to test refusal).
    pub vlans: Vec<u16>,
    /// IPv4 options bytes (a multiple of 4, ≤ 40), NOPs.
    pub ipv4_options: usize,
    /// IPv6 extension headers to insert before the transport header, by next-header number
    /// (0 hop-by-hop, 43 routing, 60 destination options, 51 AH); the fragment header comes
    /// from `frag`.
    pub v6_ext: Vec<u8>,
    pub frag: FragSpec,
    pub payload: usize,
    /// TCP sequence and acknowledgment numbers.
    pub seq: u32,
    pub ack: u32,
    /// Destination and source MAC addresses.
    pub macs: ([u8; 6], [u8; 6]),
}

/// The MACs a frame gets unless [`PacketSpec::macs`] says otherwise: (destination, source).
pub const DEFAULT_MACS: ([u8; 6], [u8; 6]) = ([0x02, 0, 0, 0, 0, 0x02], [0x02, 0, 0, 0, 0, 0x01]);

impl PacketSpec {
    pub fn tcp(src: &str, dst: &str, sport: u16, dport: u16, flags: u8) -> Self {
        Self::new(
            src,
            dst,
            L4Spec::Tcp {
                sport,
                dport,
                flags,
            },
        )
    }

    pub fn syn(src: &str, dst: &str, dport: u16) -> Self {
        Self::tcp(src, dst, 40000, dport, tcp::SYN)
    }

    pub fn udp(src: &str, dst: &str, sport: u16, dport: u16) -> Self {
        Self::new(src, dst, L4Spec::Udp { sport, dport })
    }

    pub fn icmp(src: &str, dst: &str, ty: u8, code: u8) -> Self {
        Self::new(src, dst, L4Spec::Icmp { ty, code })
    }

    pub fn new(src: &str, dst: &str, l4: L4Spec) -> Self {
        PacketSpec {
            src: src.parse().expect("src address"),
            dst: dst.parse().expect("dst address"),
            l4,
            vlans: Vec::new(),
            ipv4_options: 0,
            v6_ext: Vec::new(),
            frag: FragSpec::None,
            payload: 0,
            seq: 1,
            ack: 0,
            macs: DEFAULT_MACS,
        }
    }

    /// Destination and source MAC addresses.
    pub fn macs(mut self, dst: [u8; 6], src: [u8; 6]) -> Self {
        self.macs = (dst, src);
        self
    }

    pub fn seq_ack(mut self, seq: u32, ack: u32) -> Self {
        self.seq = seq;
        self.ack = ack;
        self
    }

    pub fn vlans(mut self, v: &[u16]) -> Self {
        self.vlans = v.to_vec();
        self
    }

    pub fn options(mut self, n: usize) -> Self {
        self.ipv4_options = n;
        self
    }

    pub fn ext(mut self, e: &[u8]) -> Self {
        self.v6_ext = e.to_vec();
        self
    }

    pub fn frag(mut self, f: FragSpec) -> Self {
        self.frag = f;
        self
    }

    pub fn payload(mut self, n: usize) -> Self {
        self.payload = n;
        self
    }

    fn l4_bytes(&self, v6: bool) -> (u8, Vec<u8>) {
        let mut b = Vec::new();
        let proto = match self.l4 {
            L4Spec::Tcp {
                sport,
                dport,
                flags,
            } => {
                b.extend_from_slice(&sport.to_be_bytes());
                b.extend_from_slice(&dport.to_be_bytes());
                b.extend_from_slice(&self.seq.to_be_bytes());
                b.extend_from_slice(&self.ack.to_be_bytes());
                b.push(5 << 4);
                b.push(flags);
                b.extend_from_slice(&64240u16.to_be_bytes());
                b.extend_from_slice(&[0, 0, 0, 0]); // checksum, urgent
                p::IPPROTO_TCP
            }
            L4Spec::Udp { sport, dport } => {
                b.extend_from_slice(&sport.to_be_bytes());
                b.extend_from_slice(&dport.to_be_bytes());
                b.extend_from_slice(&((8 + self.payload) as u16).to_be_bytes());
                b.extend_from_slice(&[0, 0]);
                p::IPPROTO_UDP
            }
            L4Spec::Icmp { ty, code } => {
                b.extend_from_slice(&[ty, code, 0, 0, 0, 1, 0, 1]);
                if v6 {
                    p::IPPROTO_ICMPV6
                } else {
                    p::IPPROTO_ICMP
                }
            }
            L4Spec::Raw { proto } => proto,
        };
        b.resize(b.len() + self.payload, 0xab);
        (proto, b)
    }

    /// The Ethernet frame.
    pub fn build(&self) -> Vec<u8> {
        let mut f = Vec::with_capacity(128);
        f.extend_from_slice(&self.macs.0);
        f.extend_from_slice(&self.macs.1);
        let v6 = self.src.is_ipv6();
        for vid in &self.vlans {
            f.extend_from_slice(&p::ETH_P_8021Q.to_be_bytes());
            f.extend_from_slice(&vid.to_be_bytes());
        }
        f.extend_from_slice(&if v6 { p::ETH_P_IPV6 } else { p::ETH_P_IPV4 }.to_be_bytes());
        let (proto, mut l4) = self.l4_bytes(v6);
        if self.frag == FragSpec::None {
            set_l4_checksum(proto, self.src, self.dst, &mut l4);
        }
        match (self.src, self.dst) {
            (IpAddr::V4(s), IpAddr::V4(d)) => {
                let ihl = 20 + self.ipv4_options;
                let total = ihl + l4.len();
                let frag: u16 = match self.frag {
                    FragSpec::None => 0x4000, // DF
                    FragSpec::First => 0x2000,
                    FragSpec::Later(off) => off & 0x1fff,
                };
                let mut h = vec![(4 << 4) | (ihl / 4) as u8, 0];
                h.extend_from_slice(&(total as u16).to_be_bytes());
                h.extend_from_slice(&0x1234u16.to_be_bytes());
                h.extend_from_slice(&frag.to_be_bytes());
                h.extend_from_slice(&[64, proto, 0, 0]);
                h.extend_from_slice(&s.octets());
                h.extend_from_slice(&d.octets());
                h.resize(ihl, 1); // NOP options
                let c = checksum(&h);
                h[10..12].copy_from_slice(&c.to_be_bytes());
                f.extend_from_slice(&h);
            }
            (IpAddr::V6(s), IpAddr::V6(d)) => {
                let mut ext = Vec::new();
                let mut chain: Vec<u8> = self.v6_ext.clone();
                if self.frag != FragSpec::None {
                    chain.push(p::IPPROTO_FRAGMENT);
                }
                for (i, ty) in chain.iter().enumerate() {
                    let next = chain.get(i + 1).copied().unwrap_or(proto);
                    match *ty {
                        p::IPPROTO_FRAGMENT => {
                            let (off, m) = match self.frag {
                                FragSpec::Later(o) => (o, 0),
                                _ => (0, 1),
                            };
                            ext.extend_from_slice(&[next, 0]);
                            ext.extend_from_slice(&((off << 3) | m).to_be_bytes());
                            ext.extend_from_slice(&0xabcdu32.to_be_bytes());
                        }
                        p::IPPROTO_AH => {
                            // 12 bytes: payload len field = (12 / 4) - 2 = 1.
                            ext.extend_from_slice(&[next, 1, 0, 0]);
                            ext.extend_from_slice(&[0; 8]);
                        }
                        _ => {
                            // 8 bytes: PadN option filling the header.
                            ext.extend_from_slice(&[next, 0, 1, 4, 0, 0, 0, 0]);
                        }
                    }
                }
                let first = chain.first().copied().unwrap_or(proto);
                let payload = ext.len() + l4.len();
                f.extend_from_slice(&[0x60, 0, 0, 0]);
                f.extend_from_slice(&(payload as u16).to_be_bytes());
                f.extend_from_slice(&[first, 64]);
                f.extend_from_slice(&s.octets());
                f.extend_from_slice(&d.octets());
                f.extend_from_slice(&ext);
            }
            _ => panic!("source and destination must be of one family"),
        }
        f.extend_from_slice(&l4);
        f
    }
}

/// An ARP request frame.
pub fn arp_frame() -> Vec<u8> {
    let mut f = vec![0xff; 6];
    f.extend_from_slice(&[0x02, 0, 0, 0, 0, 0x01]);
    f.extend_from_slice(&p::ETH_P_ARP.to_be_bytes());
    f.extend_from_slice(&[0, 1, 8, 0, 6, 4, 0, 1]);
    f.extend_from_slice(&[0x02, 0, 0, 0, 0, 0x01, 10, 0, 0, 1]);
    f.extend_from_slice(&[0, 0, 0, 0, 0, 0, 10, 0, 0, 2]);
    f
}

/// Internet checksum accumulation (RFC 1071): `data` as 16-bit big-endian words (an odd last
/// byte padded with zero) added to `sum`.
pub fn csum_add(mut sum: u32, data: &[u8]) -> u32 {
    let mut it = data.chunks_exact(2);
    for c in &mut it {
        sum += u32::from(u16::from_be_bytes([c[0], c[1]]));
    }
    if let [b] = it.remainder() {
        sum += u32::from(u16::from_be_bytes([*b, 0]));
    }
    sum
}

/// The checksum of an accumulated sum: carries folded in, complemented. A header that carries
/// its correct checksum sums to 0 here.
pub fn csum_fold(mut sum: u32) -> u16 {
    while sum >> 16 != 0 {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// The Internet checksum of `b` (e.g. an IPv4 header with its checksum field zero).
pub fn checksum(b: &[u8]) -> u16 {
    csum_fold(csum_add(0, b))
}

/// The pseudo-header sum of a transport segment of `len` bytes (RFC 793 / RFC 8200 8.1).
pub fn pseudo_sum(src: IpAddr, dst: IpAddr, proto: u8, len: usize) -> u32 {
    match (src, dst) {
        (IpAddr::V4(a), IpAddr::V4(b)) => {
            let s = csum_add(csum_add(0, &a.octets()), &b.octets());
            csum_add(csum_add(s, &[0, proto]), &(len as u16).to_be_bytes())
        }
        (IpAddr::V6(a), IpAddr::V6(b)) => {
            let s = csum_add(csum_add(0, &a.octets()), &b.octets());
            csum_add(csum_add(s, &(len as u32).to_be_bytes()), &[0, 0, 0, proto])
        }
        _ => panic!("source and destination must be of one family"),
    }
}

/// Where the checksum of `proto`'s header sits, for the protocols that carry one here.
pub fn l4_checksum_offset(proto: u8) -> Option<usize> {
    match proto {
        p::IPPROTO_TCP => Some(16),
        p::IPPROTO_UDP => Some(6),
        p::IPPROTO_ICMP | p::IPPROTO_ICMPV6 => Some(2),
        _ => None,
    }
}

/// Fill in the checksum of `l4`, a whole TCP, UDP, ICMP or ICMPv6 segment from `src` to `dst`
/// (ICMP has no pseudo-header; a UDP checksum of 0 is sent as 0xffff). Other protocols, and
/// segments too short to hold the field, are left alone.
pub fn set_l4_checksum(proto: u8, src: IpAddr, dst: IpAddr, l4: &mut [u8]) {
    let Some(off) = l4_checksum_offset(proto) else {
        return;
    };
    if l4.len() < off + 2 {
        return;
    }
    l4[off..off + 2].copy_from_slice(&[0, 0]);
    let start = if proto == p::IPPROTO_ICMP {
        0
    } else {
        pseudo_sum(src, dst, proto, l4.len())
    };
    let mut c = csum_fold(csum_add(start, l4));
    if proto == p::IPPROTO_UDP && c == 0 {
        c = 0xffff;
    }
    l4[off..off + 2].copy_from_slice(&c.to_be_bytes());
}

/// Whether the checksum of `l4` (a whole segment, as [`set_l4_checksum`] takes it) verifies.
pub fn l4_checksum_ok(proto: u8, src: IpAddr, dst: IpAddr, l4: &[u8]) -> bool {
    let start = if proto == p::IPPROTO_ICMP {
        0
    } else {
        pseudo_sum(src, dst, proto, l4.len())
    };
    csum_fold(csum_add(start, l4)) == 0
}

/// Parse hex bytes as `tcpdump -xx` or a hex dump prints them (whitespace, `0x0000:` offsets
/// and `:` separators ignored).
pub fn parse_hex(text: &str) -> Result<Vec<u8>, String> {
    let mut digits = String::new();
    for line in text.lines() {
        let line = line.trim();
        let body = match line.split_once(':') {
            Some((off, rest))
                if off
                    .trim_start_matches("0x")
                    .chars()
                    .all(|c| c.is_ascii_hexdigit())
                    && off.len() >= 4 =>
            {
                rest
            }
            _ => line,
        };
        digits.extend(body.chars().filter(|c| !c.is_whitespace() && *c != ':'));
    }
    // Work on characters, not bytes: `aé0` must be an error, not a slice inside a character.
    if let Some(c) = digits.chars().find(|c| !c.is_ascii_hexdigit()) {
        return Err(format!("{c:?} is not a hex digit"));
    }
    if !digits.len().is_multiple_of(2) {
        return Err("odd number of hex digits".into());
    }
    (0..digits.len())
        .step_by(2)
        .map(|i| {
            u8::from_str_radix(&digits[i..i + 2], 16)
                .map_err(|_| format!("{:?} is not a hex byte", &digits[i..i + 2]))
        })
        .collect()
}

/// A parsed packet in words, as people write it: `TCP 198.51.100.7:40000 → 192.0.2.1:22
/// flags SYN`.
pub fn describe(parsed: &Result<crate::Parsed, crate::Reason>) -> String {
    use crate::{Family, Fragment, L4, Parsed};
    use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
    let ip = match parsed {
        Err(r) => return format!("unparseable: {}", r.describe()),
        Ok(Parsed::NonIp { ethertype }) => return format!("not IP (ethertype {ethertype:#06x})"),
        Ok(Parsed::Ip(ip)) => ip,
    };
    let addr = |a: &[u8; 16]| -> IpAddr {
        match ip.family {
            Family::V4 => IpAddr::V4(Ipv4Addr::new(a[0], a[1], a[2], a[3])),
            Family::V6 => IpAddr::V6(Ipv6Addr::from(*a)),
        }
    };
    let end = |a: &[u8; 16], port: u16| match addr(a) {
        IpAddr::V6(v6) => format!("[{v6}]:{port}"),
        v4 => format!("{v4}:{port}"),
    };
    let (src, dst) = (addr(&ip.src), addr(&ip.dst));
    let frag = match ip.frag {
        Fragment::No => "",
        Fragment::First => " (first fragment)",
        Fragment::Later => " (later fragment)",
    };
    let body = match ip.l4 {
        L4::Tcp {
            sport,
            dport,
            flags,
            ..
        } => format!(
            "TCP {} → {} flags {}",
            end(&ip.src, sport),
            end(&ip.dst, dport),
            crate::tcp::names(flags)
        ),
        L4::Udp { sport, dport } => {
            format!("UDP {} → {}", end(&ip.src, sport), end(&ip.dst, dport))
        }
        L4::Icmp { ty, code, .. } => {
            let name = if ip.family == Family::V6 {
                "ICMPv6"
            } else {
                "ICMP"
            };
            format!("{name} type {ty} code {code} {src} → {dst}")
        }
        L4::None => format!("IP protocol {} {src} → {dst}", ip.proto),
    };
    format!("{body}{frag}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Fragment, L4, Parsed, parse};

    #[test]
    fn hex_with_a_multibyte_character_is_an_error_not_a_panic() {
        let e = parse_hex("aé0").unwrap_err();
        assert!(e.contains("'é'"), "{e}");
        assert_eq!(parse_hex("0a ff").unwrap(), [0x0a, 0xff]);
    }

    #[test]
    fn packets_are_described_as_people_write_them() {
        let f =
            PacketSpec::tcp("198.51.100.7", "192.0.2.1", 40000, 22, tcp::SYN | tcp::ACK).build();
        assert_eq!(
            describe(&crate::parse(f.as_slice())),
            "TCP 198.51.100.7:40000 → 192.0.2.1:22 flags SYN,ACK"
        );
        let f = PacketSpec::tcp("2001:db8::7", "2001:db8::1", 1, 2, 0).build();
        assert_eq!(
            describe(&crate::parse(f.as_slice())),
            "TCP [2001:db8::7]:1 → [2001:db8::1]:2 flags none"
        );
    }

    #[test]
    fn built_frames_parse_back() {
        let f = PacketSpec::syn("192.0.2.1", "192.0.2.2", 22)
            .vlans(&[5, 6])
            .options(8)
            .build();
        let Ok(Parsed::Ip(ip)) = parse(f.as_slice()) else {
            panic!("not parsed")
        };
        assert_eq!(
            ip.l4,
            L4::Tcp {
                sport: 40000,
                dport: 22,
                flags: tcp::SYN,
                seq: 1,
                ack: 0,
                len: 0
            }
        );
        let f = PacketSpec::udp("2001:db8::1", "2001:db8::2", 5, 53)
            .ext(&[0, 60, 51])
            .frag(FragSpec::First)
            .build();
        let Ok(Parsed::Ip(ip)) = parse(f.as_slice()) else {
            panic!("not parsed")
        };
        assert_eq!(ip.frag, Fragment::First);
        assert_eq!(
            ip.l4,
            L4::Udp {
                sport: 5,
                dport: 53
            }
        );
    }

    #[test]
    fn built_frames_carry_valid_checksums() {
        let cases = [
            PacketSpec::syn("192.0.2.1", "192.0.2.2", 22).payload(3),
            PacketSpec::udp("192.0.2.1", "192.0.2.2", 5, 53).payload(7),
            PacketSpec::icmp("192.0.2.1", "192.0.2.2", 8, 0),
            PacketSpec::syn("2001:db8::1", "2001:db8::2", 22),
            PacketSpec::udp("2001:db8::1", "2001:db8::2", 5, 53).payload(1),
            PacketSpec::icmp("2001:db8::1", "2001:db8::2", 128, 0),
        ];
        for spec in cases {
            let f = spec.build();
            let v6 = spec.src.is_ipv6();
            let (l3, hl) = if v6 { (14, 40) } else { (14, 20) };
            if !v6 {
                assert_eq!(checksum(&f[l3..l3 + hl]), 0, "IPv4 header of {spec:?}");
            }
            let proto = if v6 { f[l3 + 6] } else { f[l3 + 9] };
            assert!(
                l4_checksum_ok(proto, spec.src, spec.dst, &f[l3 + hl..]),
                "{spec:?}"
            );
        }
        let f = PacketSpec::syn("192.0.2.1", "192.0.2.2", 22)
            .macs([1; 6], [2; 6])
            .build();
        assert_eq!((&f[..6], &f[6..12]), (&[1u8; 6][..], &[2u8; 6][..]));
    }

    #[test]
    fn a_zero_udp_checksum_is_sent_as_all_ones() {
        // A segment whose sum folds to 0xffff would get checksum 0, which UDP reserves.
        let mut l4 = [0u8; 8];
        let (s, d): (IpAddr, IpAddr) = ("0.0.0.0".parse().unwrap(), "0.0.0.0".parse().unwrap());
        // Pseudo-header (proto 17, length 8) + length field 8 + this source port = 0xffff.
        l4[..2].copy_from_slice(&(0xffffu16 - 17 - 8 - 8).to_be_bytes());
        l4[4..6].copy_from_slice(&8u16.to_be_bytes());
        set_l4_checksum(p::IPPROTO_UDP, s, d, &mut l4);
        assert_eq!(&l4[6..8], &[0xff, 0xff]);
    }

    #[test]
    fn hex_dump_round_trip() {
        let b = parse_hex("0x0000:  4500 0028\n0x0010: ab cd").unwrap();
        assert_eq!(b, [0x45, 0, 0, 0x28, 0xab, 0xcd]);
        assert!(parse_hex("abc").is_err());
        assert!(parse_hex("zz").is_err());
    }
}
