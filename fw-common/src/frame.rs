//! Frames built from a description (feature `builder`, std): for `fw explain` and the lockout
//! guard, which judge packets with `decide()`, and for the tests, which feed the same bytes to
//! the kernel (BPF_PROG_TEST_RUN) and to the userspace `decide()`.

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
    /// TCP options (a multiple of 4 bytes, at most 40).
    pub tcp_options: Vec<u8>,
}

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
            tcp_options: Vec::new(),
        }
    }

    /// TCP options after the fixed header (padded with NOPs to a multiple of 4 bytes).
    pub fn tcp_options(mut self, o: &[u8]) -> Self {
        let mut o = o.to_vec();
        while !o.len().is_multiple_of(4) {
            o.push(1);
        }
        self.tcp_options = o;
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
                b.push((((20 + self.tcp_options.len()) / 4) << 4) as u8);
                b.push(flags);
                b.extend_from_slice(&64240u16.to_be_bytes());
                b.extend_from_slice(&[0, 0, 0, 0]); // checksum, urgent
                b.extend_from_slice(&self.tcp_options);
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
        let mut f = vec![0x02, 0, 0, 0, 0, 0x02, 0x02, 0, 0, 0, 0, 0x01];
        let v6 = self.src.is_ipv6();
        for vid in &self.vlans {
            f.extend_from_slice(&p::ETH_P_8021Q.to_be_bytes());
            f.extend_from_slice(&vid.to_be_bytes());
        }
        f.extend_from_slice(&if v6 { p::ETH_P_IPV6 } else { p::ETH_P_IPV4 }.to_be_bytes());
        let (proto, l4) = self.l4_bytes(v6);
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

fn checksum(b: &[u8]) -> u16 {
    let mut sum: u32 = 0;
    for c in b.chunks(2) {
        sum += u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]));
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
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
    fn hex_dump_round_trip() {
        let b = parse_hex("0x0000:  4500 0028\n0x0010: ab cd").unwrap();
        assert_eq!(b, [0x45, 0, 0, 0x28, 0xab, 0xcd]);
        assert!(parse_hex("abc").is_err());
        assert!(parse_hex("zz").is_err());
    }
}
