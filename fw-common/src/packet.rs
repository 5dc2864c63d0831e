//! Bounded packet parsing, shared by the XDP program and userspace.
//!
//! Every read goes through [`PacketView::bytes`], which bounds-checks against the end of the
//! frame (in the kernel: against `data_end`, which is what the verifier wants to see). Parsing
//! has no unbounded loop: at most two VLAN tags and [`MAX_EXT_HEADERS`] IPv6 extension headers.
//! Anything cut short or impossible is an `Err(Reason)`, which `decide()` turns into a drop.

use crate::Reason;

/// Bounds-checked access to a frame's bytes.
pub trait PacketView {
    /// Frame length in bytes.
    fn len(&self) -> usize;

    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// `N` bytes at `off`, or `None` if they run past the end of the frame.
    fn bytes<const N: usize>(&self, off: usize) -> Option<&[u8; N]>;
}

impl PacketView for [u8] {
    #[inline(always)]
    fn len(&self) -> usize {
        <[u8]>::len(self)
    }

    #[inline(always)]
    fn bytes<const N: usize>(&self, off: usize) -> Option<&[u8; N]> {
        self.get(off..off.checked_add(N)?)?.try_into().ok()
    }
}

pub const ETH_HLEN: usize = 14;
pub const ETH_P_IPV4: u16 = 0x0800;
pub const ETH_P_IPV6: u16 = 0x86dd;
pub const ETH_P_ARP: u16 = 0x0806;
pub const ETH_P_8021Q: u16 = 0x8100;
pub const ETH_P_8021AD: u16 = 0x88a8;

pub const IPPROTO_HOPOPTS: u8 = 0;
pub const IPPROTO_ICMP: u8 = 1;
pub const IPPROTO_TCP: u8 = 6;
pub const IPPROTO_UDP: u8 = 17;
pub const IPPROTO_ROUTING: u8 = 43;
pub const IPPROTO_FRAGMENT: u8 = 44;
pub const IPPROTO_AH: u8 = 51;
pub const IPPROTO_ICMPV6: u8 = 58;
pub const IPPROTO_DSTOPTS: u8 = 60;

/// At most this many IPv6 extension headers are walked; a longer chain is dropped.
pub const MAX_EXT_HEADERS: usize = 6;
/// The transport header must start within this many bytes of the frame start; a longer header
/// chain is dropped. Keeps every offset small and known to the verifier.
pub const MAX_L4_OFFSET: usize = 512;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Family {
    V4,
    V6,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fragment {
    /// Not fragmented (or an IPv6 atomic fragment).
    No,
    /// The first fragment of a datagram: carries the transport header.
    First,
    /// A later fragment: no transport header, no ports.
    Later,
}

/// The transport facts `decide()` needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum L4 {
    Tcp {
        sport: u16,
        dport: u16,
        flags: u8,
        seq: u32,
        ack: u32,
        /// Payload bytes (what the segment adds to the sequence space, SYN and FIN aside).
        len: u16,
    },
    Udp {
        sport: u16,
        dport: u16,
    },
    /// ICMP or ICMPv6. `id` is the echo identifier (meaningful for echo request/reply);
    /// `quoted` the header an error message quotes.
    Icmp {
        ty: u8,
        code: u8,
        id: u16,
        quoted: Option<Quoted>,
    },
    /// A non-first fragment, or a protocol without ports that `fw` does not parse.
    None,
}

/// The packet an ICMP error quotes — one this host sent: `src` is local, `dst` remote. For a
/// quoted ICMP echo request, `sport` is its identifier and `dport` 0.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Quoted {
    pub proto: u8,
    pub src: [u8; 16],
    pub dst: [u8; 16],
    pub sport: u16,
    pub dport: u16,
}

/// ICMP (v4) types that quote the offending packet: destination unreachable (incl.
/// fragmentation needed), time exceeded, parameter problem.
pub const fn is_icmp_error(ty: u8) -> bool {
    matches!(ty, 3 | 11 | 12)
}

/// ICMPv6 error types: destination unreachable, packet too big, time exceeded, parameter problem.
pub const fn is_icmpv6_error(ty: u8) -> bool {
    matches!(ty, 1..=4)
}

/// An IP packet's facts. IPv4 addresses sit in the first 4 bytes of `src`/`dst`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ip {
    pub family: Family,
    /// The transport protocol (after IPv6 extension headers).
    pub proto: u8,
    pub src: [u8; 16],
    pub dst: [u8; 16],
    pub frag: Fragment,
    /// IPv4 options or IPv6 extension headers sit between the IP and the transport header (the
    /// SYN cookie answer rewrites only plain headers).
    pub ip_options: bool,
    pub l4: L4,
}

impl Ip {
    pub fn src_v4(&self) -> [u8; 4] {
        [self.src[0], self.src[1], self.src[2], self.src[3]]
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Parsed {
    NonIp { ethertype: u16 },
    Ip(Ip),
}

#[inline(always)]
fn be16(b: [u8; 2]) -> u16 {
    u16::from_be_bytes(b)
}

/// Parse a frame that starts with an Ethernet header.
#[inline(always)]
pub fn parse<P: PacketView + ?Sized>(p: &P) -> Result<Parsed, Reason> {
    let eth: &[u8; ETH_HLEN] = p.bytes(0).ok_or(Reason::Truncated)?;
    let mut ethertype = be16([eth[12], eth[13]]);
    let mut off = ETH_HLEN;
    // Up to two 802.1Q / 802.1ad tags (QinQ); a third is refused rather than skipped over.
    for _ in 0..2 {
        if ethertype != ETH_P_8021Q && ethertype != ETH_P_8021AD {
            break;
        }
        let tag: &[u8; 4] = p.bytes(off).ok_or(Reason::Truncated)?;
        ethertype = be16([tag[2], tag[3]]);
        off += 4;
    }
    match ethertype {
        ETH_P_IPV4 => parse_v4(p, off),
        ETH_P_IPV6 => parse_v6(p, off),
        ETH_P_8021Q | ETH_P_8021AD => Err(Reason::TooManyVlans),
        _ => Ok(Parsed::NonIp { ethertype }),
    }
}

// parse_v4 and parse_v6 build the `Parsed` in place rather than an `Ip` that `parse` wraps: LLVM
// expands that move of the `Ip` (whose `L4` has unused bytes) into stores of undefined bytes from
// whatever register is at hand, and the verifier refuses a byte of a pointer written to the stack
// ("invalid size of register spill").
#[inline(always)]
fn parse_v4<P: PacketView + ?Sized>(p: &P, off: usize) -> Result<Parsed, Reason> {
    let h: &[u8; 20] = p.bytes(off).ok_or(Reason::Truncated)?;
    if h[0] >> 4 != 4 {
        return Err(Reason::BadHeader);
    }
    let ihl = ((h[0] & 0x0f) as usize) * 4;
    if ihl < 20 {
        return Err(Reason::BadHeader);
    }
    let total = be16([h[2], h[3]]) as usize;
    if total < ihl {
        return Err(Reason::BadHeader);
    }
    // The kernel drops datagrams longer than the frame; so do we. Shorter is Ethernet padding.
    let end = off + total;
    if end > p.len() {
        return Err(Reason::Truncated);
    }
    let mut src = [0u8; 16];
    let mut dst = [0u8; 16];
    src[..4].copy_from_slice(&h[12..16]);
    dst[..4].copy_from_slice(&h[16..20]);
    let proto = h[9];
    let frag_field = be16([h[6], h[7]]);
    let frag_off = frag_field & 0x1fff;
    let more = frag_field & 0x2000 != 0;
    let frag = if frag_off != 0 {
        // RFC 1858: a TCP fragment at offset 8 bytes can only serve to rewrite the flags.
        if frag_off == 1 && proto == IPPROTO_TCP {
            return Err(Reason::TinyFragment);
        }
        Fragment::Later
    } else if more {
        Fragment::First
    } else {
        Fragment::No
    };
    let l4 = if frag == Fragment::Later {
        L4::None
    } else {
        parse_l4(p, proto, off + ihl, end, frag, IPPROTO_ICMP)?
    };
    Ok(Parsed::Ip(Ip {
        family: Family::V4,
        proto,
        src,
        dst,
        frag,
        ip_options: ihl > 20,
        l4,
    }))
}

#[inline(always)]
fn parse_v6<P: PacketView + ?Sized>(p: &P, off: usize) -> Result<Parsed, Reason> {
    let h: &[u8; 40] = p.bytes(off).ok_or(Reason::Truncated)?;
    if h[0] >> 4 != 6 {
        return Err(Reason::BadHeader);
    }
    let payload = be16([h[4], h[5]]) as usize;
    let mut nh = h[6];
    if payload == 0 && nh == IPPROTO_HOPOPTS {
        // A jumbogram: no ordinary link carries one.
        return Err(Reason::BadHeader);
    }
    let end = off + 40 + payload;
    if end > p.len() {
        return Err(Reason::Truncated);
    }
    let mut src = [0u8; 16];
    let mut dst = [0u8; 16];
    src.copy_from_slice(&h[8..24]);
    dst.copy_from_slice(&h[24..40]);

    let mut cur = off + 40;
    let mut frag = Fragment::No;
    let mut walked = 0;
    while walked < MAX_EXT_HEADERS {
        let len = match nh {
            IPPROTO_HOPOPTS | IPPROTO_ROUTING | IPPROTO_DSTOPTS | IPPROTO_AH => {
                // Every extension header is at least 8 bytes.
                if cur + 8 > end {
                    return Err(Reason::Truncated);
                }
                let e: &[u8; 2] = p.bytes(cur).ok_or(Reason::Truncated)?;
                let len = if nh == IPPROTO_AH {
                    (e[1] as usize + 2) * 4
                } else {
                    (e[1] as usize + 1) * 8
                };
                nh = e[0];
                len
            }
            IPPROTO_FRAGMENT => {
                if cur + 8 > end {
                    return Err(Reason::Truncated);
                }
                let e: &[u8; 8] = p.bytes(cur).ok_or(Reason::Truncated)?;
                let fo = be16([e[2], e[3]]);
                nh = e[0];
                if fo & 0xfff8 != 0 {
                    // Later fragment: the rest is payload, not headers.
                    return Ok(Parsed::Ip(Ip {
                        family: Family::V6,
                        proto: nh,
                        src,
                        dst,
                        frag: Fragment::Later,
                        ip_options: true,
                        l4: L4::None,
                    }));
                }
                if fo & 1 != 0 {
                    frag = Fragment::First;
                }
                8
            }
            _ => break,
        };
        cur += len;
        if cur > MAX_L4_OFFSET {
            return Err(Reason::ExtHeaders);
        }
        walked += 1;
    }
    if is_ext_header(nh) {
        return Err(Reason::ExtHeaders);
    }
    let l4 = parse_l4(p, nh, cur, end, frag, IPPROTO_ICMPV6)?;
    Ok(Parsed::Ip(Ip {
        family: Family::V6,
        proto: nh,
        src,
        dst,
        frag,
        ip_options: walked > 0,
        l4,
    }))
}

#[inline(always)]
const fn is_ext_header(nh: u8) -> bool {
    matches!(
        nh,
        IPPROTO_HOPOPTS | IPPROTO_ROUTING | IPPROTO_FRAGMENT | IPPROTO_AH | IPPROTO_DSTOPTS
    )
}

/// Parse the transport header at `off`; `end` is the end of the IP datagram.
#[inline(always)]
fn parse_l4<P: PacketView + ?Sized>(
    p: &P,
    proto: u8,
    off: usize,
    end: usize,
    frag: Fragment,
    icmp_proto: u8,
) -> Result<L4, Reason> {
    // A first fragment that cannot hold the transport header hides it (RFC 1858): drop, and
    // say so apart from plain truncation.
    let short = if frag == Fragment::First {
        Reason::TinyFragment
    } else {
        Reason::Truncated
    };
    if proto == IPPROTO_TCP {
        if off + 20 > end {
            return Err(short);
        }
        let t: &[u8; 20] = p.bytes(off).ok_or(Reason::Truncated)?;
        let doff = ((t[12] >> 4) as usize) * 4;
        if doff < 20 {
            return Err(Reason::BadHeader);
        }
        if off + doff > end {
            return Err(short);
        }
        Ok(L4::Tcp {
            sport: be16([t[0], t[1]]),
            dport: be16([t[2], t[3]]),
            flags: t[13],
            seq: u32::from_be_bytes([t[4], t[5], t[6], t[7]]),
            ack: u32::from_be_bytes([t[8], t[9], t[10], t[11]]),
            len: (end - off - doff) as u16,
        })
    } else if proto == IPPROTO_UDP {
        if off + 8 > end {
            return Err(short);
        }
        let u: &[u8; 8] = p.bytes(off).ok_or(Reason::Truncated)?;
        let ulen = be16([u[4], u[5]]) as usize;
        // The UDP length covers the whole datagram, which a fragment does not hold.
        if frag == Fragment::No && (ulen < 8 || off + ulen > end) {
            return Err(Reason::BadHeader);
        }
        Ok(L4::Udp {
            sport: be16([u[0], u[1]]),
            dport: be16([u[2], u[3]]),
        })
    } else if proto == icmp_proto {
        if off + 8 > end {
            return Err(short);
        }
        let i: &[u8; 8] = p.bytes(off).ok_or(Reason::Truncated)?;
        let ty = i[0];
        let error = if icmp_proto == IPPROTO_ICMP {
            is_icmp_error(ty)
        } else {
            is_icmpv6_error(ty)
        };
        // Errors in a fragment would quote data the first fragment does not hold whole.
        let quoted = if error && frag == Fragment::No {
            Some(parse_quoted(p, off + 8, end, icmp_proto)?)
        } else {
            None
        };
        Ok(L4::Icmp {
            ty,
            code: i[1],
            id: be16([i[4], i[5]]),
            quoted,
        })
    } else {
        Ok(L4::None)
    }
}

/// Parse the IP header + first 8 transport bytes an ICMP error quotes (RFC 792 / RFC 4443).
/// Quoted IPv6 packets must carry their transport header right after the fixed header.
#[inline(always)]
fn parse_quoted<P: PacketView + ?Sized>(
    p: &P,
    off: usize,
    end: usize,
    icmp_proto: u8,
) -> Result<Quoted, Reason> {
    let mut src = [0u8; 16];
    let mut dst = [0u8; 16];
    let (proto, l4off) = if icmp_proto == IPPROTO_ICMP {
        if off + 20 > end {
            return Err(Reason::Truncated);
        }
        let h: &[u8; 20] = p.bytes(off).ok_or(Reason::Truncated)?;
        let ihl = ((h[0] & 0x0f) as usize) * 4;
        if h[0] >> 4 != 4 || ihl < 20 {
            return Err(Reason::BadHeader);
        }
        src[..4].copy_from_slice(&h[12..16]);
        dst[..4].copy_from_slice(&h[16..20]);
        (h[9], off + ihl)
    } else {
        if off + 40 > end {
            return Err(Reason::Truncated);
        }
        let h: &[u8; 40] = p.bytes(off).ok_or(Reason::Truncated)?;
        if h[0] >> 4 != 6 {
            return Err(Reason::BadHeader);
        }
        src.copy_from_slice(&h[8..24]);
        dst.copy_from_slice(&h[24..40]);
        (h[6], off + 40)
    };
    if l4off + 8 > end {
        return Err(Reason::Truncated);
    }
    let t: &[u8; 8] = p.bytes(l4off).ok_or(Reason::Truncated)?;
    let (sport, dport) = if proto == icmp_proto {
        (be16([t[4], t[5]]), 0)
    } else {
        (be16([t[0], t[1]]), be16([t[2], t[3]]))
    };
    Ok(Quoted {
        proto,
        src,
        dst,
        sport,
        dport,
    })
}
