//! The one decision. The XDP program calls it with map-backed [`Tables`]; userspace calls it
//! with tables built from the same policy (or read from the pinned maps) — same bytes in, same
//! verdict and counter slot out.
//!
//! Cheapest first: flags-only checks need no lookup; a port lookup is one array read; the LPM
//! trie is consulted only for ports that admit some sources only.

use crate::{
    Reason,
    maps::{Config, PORT_HAS_SOURCES, PORT_SLOT_MASK, PortProto},
    packet::{Family, Fragment, Ip, L4, PacketView, Parsed, parse},
    tcp::{FlagClass, classify},
};

/// What the policy says, however it is stored.
pub trait Tables {
    /// The options of the generation in force.
    fn config(&self) -> Config;
    /// The [`crate::maps::MAP_PORTS`] value for this port (0 = closed).
    fn port(&self, proto: PortProto, port: u16) -> u32;
    /// The rule slot whose source CIDR holds `addr` for this port (0 = none).
    fn source_v4(&self, proto: PortProto, port: u16, addr: &[u8; 4]) -> u32;
    fn source_v6(&self, proto: PortProto, port: u16, addr: &[u8; 16]) -> u32;
}

/// A verdict and the counter slot that accounts for it (a [`Reason`] or a rule slot).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Decision {
    pub pass: bool,
    pub slot: u32,
}

impl Decision {
    #[inline(always)]
    pub const fn reason(r: Reason) -> Self {
        Decision {
            pass: r.passes(),
            slot: r.slot(),
        }
    }

    #[inline(always)]
    pub const fn rule(slot: u32) -> Self {
        Decision { pass: true, slot }
    }

    /// The reason, when the slot is not a rule's.
    pub fn why(&self) -> Option<Reason> {
        Reason::from_slot(self.slot)
    }
}

/// Parse `pkt` and decide.
#[inline(always)]
pub fn decide<P: PacketView + ?Sized, T: Tables>(pkt: &P, t: &T) -> Decision {
    decide_parsed(&parse(pkt), t)
}

#[inline(always)]
pub fn decide_parsed<T: Tables>(parsed: &Result<Parsed, Reason>, t: &T) -> Decision {
    let cfg = t.config();
    if cfg.has(Config::PASS_ALL) {
        return Decision::reason(Reason::Flushed);
    }
    let ip = match parsed {
        Err(r) => return Decision::reason(*r),
        Ok(Parsed::NonIp { .. }) => return Decision::reason(Reason::NonIp),
        Ok(Parsed::Ip(ip)) => ip,
    };
    if ip.frag == Fragment::Later {
        return Decision::reason(if cfg.has(Config::FRAGMENTS_PASS) {
            Reason::FragmentPassed
        } else {
            Reason::FragmentDropped
        });
    }
    match ip.l4 {
        L4::Tcp { dport, flags, .. } => match classify(flags) {
            FlagClass::Null => Decision::reason(Reason::TcpNull),
            FlagClass::Xmas => Decision::reason(Reason::TcpXmas),
            FlagClass::Invalid if cfg.has(Config::STRICT_TCP_FLAGS) => {
                Decision::reason(Reason::TcpBadFlags)
            }
            _ => port_policy(t, ip, PortProto::Tcp, dport),
        },
        L4::Udp { sport, dport } => {
            if cfg.has(Config::DHCP_CLIENT) && is_dhcp_reply(ip.family, sport, dport) {
                return Decision::reason(Reason::DhcpClient);
            }
            port_policy(t, ip, PortProto::Udp, dport)
        }
        L4::Icmp { ty, .. } => icmp_policy(&cfg, ip.family, ty),
        L4::None => Decision::reason(Reason::DefaultDrop),
    }
}

#[inline(always)]
fn is_dhcp_reply(family: Family, sport: u16, dport: u16) -> bool {
    match family {
        Family::V4 => sport == 67 && dport == 68,
        Family::V6 => sport == 547 && dport == 546,
    }
}

#[inline(always)]
fn port_policy<T: Tables>(t: &T, ip: &Ip, proto: PortProto, dport: u16) -> Decision {
    let v = t.port(proto, dport);
    let open = v & PORT_SLOT_MASK;
    if open != 0 {
        return Decision::rule(open);
    }
    if v & PORT_HAS_SOURCES == 0 {
        return Decision::reason(Reason::DefaultDrop);
    }
    let slot = match ip.family {
        Family::V4 => t.source_v4(proto, dport, &ip.src_v4()),
        Family::V6 => t.source_v6(proto, dport, &ip.src),
    };
    if slot != 0 {
        Decision::rule(slot)
    } else {
        Decision::reason(Reason::SourceNotAllowed)
    }
}

pub const ICMP_ECHO_REQUEST: u8 = 8;
pub const ICMPV6_ECHO_REQUEST: u8 = 128;

/// ICMPv6 types the link needs: multicast listener query/report/done (130–132), router
/// solicitation/advertisement, neighbour solicitation/advertisement, redirect (133–137), MLDv2
/// report (143).
#[inline(always)]
pub const fn is_icmpv6_link_essential(ty: u8) -> bool {
    matches!(ty, 130..=137 | 143)
}

#[inline(always)]
fn icmp_policy(cfg: &Config, family: Family, ty: u8) -> Decision {
    match family {
        Family::V6 if is_icmpv6_link_essential(ty) => Decision::reason(Reason::Ndp),
        Family::V4 if ty == ICMP_ECHO_REQUEST && cfg.has(Config::ICMP_ECHO) => {
            Decision::reason(Reason::IcmpEcho)
        }
        Family::V6 if ty == ICMPV6_ECHO_REQUEST && cfg.has(Config::ICMP_ECHO) => {
            Decision::reason(Reason::IcmpEcho)
        }
        _ => Decision::reason(Reason::DefaultDrop),
    }
}
