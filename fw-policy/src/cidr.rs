//! Source addresses and CIDRs, IPv4 or IPv6.
//!
//! What a user writes is parsed strictly ([`FromStr`]): host bits set (`203.0.113.7/0`) and
//! IPv4-mapped IPv6 addresses (`::ffff:203.0.113.7`, which never appear as the source of an IPv6
//! packet) are errors, as with `ip` and nft — a policy must mean what it says. Importers of
//! other firewalls' rules, which accept host bits, use [`Cidr::masked`].

use std::{
    fmt,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    str::FromStr,
};

use serde::{Deserialize, Deserializer, Serialize, Serializer};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Cidr {
    V4([u8; 4], u8),
    V6([u8; 16], u8),
}

impl Cidr {
    pub fn prefix_len(&self) -> u8 {
        match self {
            Cidr::V4(_, l) | Cidr::V6(_, l) => *l,
        }
    }

    /// Whether `addr` (4 or 16 bytes) lies inside.
    pub fn contains(&self, addr: &IpAddr) -> bool {
        match (self, addr) {
            (Cidr::V4(net, len), IpAddr::V4(a)) => masked(&a.octets(), *len) == *net,
            (Cidr::V6(net, len), IpAddr::V6(a)) => masked(&a.octets(), *len) == *net,
            _ => false,
        }
    }
}

fn masked<const N: usize>(addr: &[u8; N], len: u8) -> [u8; N] {
    let mut out = *addr;
    for (i, b) in out.iter_mut().enumerate() {
        let bits = (len as usize).saturating_sub(i * 8).min(8);
        *b &= if bits == 0 { 0 } else { 0xffu8 << (8 - bits) };
    }
    out
}

impl Cidr {
    /// `addr/len` with the host bits cleared (iptables' reading of `10.1.2.3/8`).
    pub fn masked(addr: IpAddr, len: u8) -> Result<Cidr, String> {
        let max = if addr.is_ipv4() { 32 } else { 128 };
        if len > max {
            return Err(format!("{addr}/{len}: prefix length must be 0..={max}"));
        }
        Ok(match addr {
            IpAddr::V4(a) => Cidr::V4(masked(&a.octets(), len), len),
            IpAddr::V6(a) => Cidr::V6(masked(&a.octets(), len), len),
        })
    }

    /// Parse like [`FromStr`] but clear host bits instead of refusing them.
    pub fn parse_masked(s: &str) -> Result<Cidr, String> {
        let (addr, len) = split(s.trim())?;
        Cidr::masked(addr, len)
    }
}

/// `ADDR[/LEN]` → address and prefix length (the full length without `/`).
fn split(s: &str) -> Result<(IpAddr, u8), String> {
    let (addr, len) = match s.split_once('/') {
        Some((a, l)) => (a, Some(l)),
        None => (s, None),
    };
    let addr: IpAddr = addr
        .parse()
        .map_err(|_| format!("{s:?} is not an IPv4/IPv6 address or CIDR"))?;
    let max = if addr.is_ipv4() { 32 } else { 128 };
    let len = match len {
        None => max,
        Some(l) => l
            .parse::<u8>()
            .ok()
            .filter(|l| *l <= max)
            .ok_or_else(|| format!("{s:?}: prefix length must be 0..={max}"))?,
    };
    Ok((addr, len))
}

impl FromStr for Cidr {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let s = s.trim();
        let (addr, len) = split(s)?;
        if let IpAddr::V6(a) = addr
            && let Some(v4) = a.to_ipv4_mapped()
        {
            return Err(format!(
                "{s:?} is an IPv4-mapped IPv6 address: IPv4 packets carry the IPv4 address, write {v4}{}",
                if len == 128 {
                    String::new()
                } else {
                    format!("/{}", len.saturating_sub(96))
                }
            ));
        }
        let c = Cidr::masked(addr, len)?;
        if c.addr() != addr {
            return Err(format!(
                "{s:?} has host bits set (the network is {c}): write {c}, or {addr} alone for the one address"
            ));
        }
        Ok(c)
    }
}

impl Cidr {
    /// The network address.
    pub fn addr(&self) -> IpAddr {
        match self {
            Cidr::V4(a, _) => IpAddr::from(*a),
            Cidr::V6(a, _) => IpAddr::from(*a),
        }
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Cidr::V4(a, 32) => write!(f, "{}", Ipv4Addr::from(*a)),
            Cidr::V4(a, l) => write!(f, "{}/{l}", Ipv4Addr::from(*a)),
            Cidr::V6(a, 128) => write!(f, "{}", Ipv6Addr::from(*a)),
            Cidr::V6(a, l) => write!(f, "{}/{l}", Ipv6Addr::from(*a)),
        }
    }
}

impl Serialize for Cidr {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Cidr {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_normalizes() {
        assert_eq!(
            "203.0.113.7".parse::<Cidr>().unwrap(),
            Cidr::V4([203, 0, 113, 7], 32)
        );
        assert_eq!(
            "10.0.0.0/8".parse::<Cidr>().unwrap(),
            Cidr::V4([10, 0, 0, 0], 8)
        );
        assert_eq!(
            Cidr::parse_masked("10.1.2.3/8").unwrap(),
            Cidr::V4([10, 0, 0, 0], 8)
        );
        assert_eq!(
            "2001:db8::/32".parse::<Cidr>().unwrap().to_string(),
            "2001:db8::/32"
        );
        assert_eq!("0.0.0.0/0".parse::<Cidr>().unwrap(), Cidr::V4([0; 4], 0));
    }

    #[test]
    fn rejects_bad_input_with_the_value() {
        let e = "10.0.0.0/33".parse::<Cidr>().unwrap_err();
        assert!(e.contains("10.0.0.0/33") && e.contains("0..=32"), "{e}");
        let e = "example.com".parse::<Cidr>().unwrap_err();
        assert!(e.contains("example.com"), "{e}");
        assert!("10.0.0.1/x".parse::<Cidr>().is_err());
        assert!("::1/129".parse::<Cidr>().is_err());
    }

    #[test]
    fn host_bits_are_refused_not_silently_dropped() {
        // `203.0.113.7/0` used to become 0.0.0.0/0: everyone.
        let e = "203.0.113.7/0".parse::<Cidr>().unwrap_err();
        assert!(e.contains("host bits") && e.contains("0.0.0.0/0"), "{e}");
        let e = "2001:db8::1/32".parse::<Cidr>().unwrap_err();
        assert!(
            e.contains("host bits") && e.contains("2001:db8::/32"),
            "{e}"
        );
    }

    #[test]
    fn ipv4_mapped_ipv6_is_refused_with_the_ipv4_form() {
        let e = "::ffff:203.0.113.7".parse::<Cidr>().unwrap_err();
        assert!(
            e.contains("IPv4-mapped") && e.contains("203.0.113.7"),
            "{e}"
        );
        let e = "::ffff:203.0.113.0/120".parse::<Cidr>().unwrap_err();
        assert!(e.contains("203.0.113.0/24"), "{e}");
    }

    #[test]
    fn contains_respects_prefix() {
        let c: Cidr = "192.0.2.0/24".parse().unwrap();
        assert!(c.contains(&"192.0.2.200".parse().unwrap()));
        assert!(!c.contains(&"192.0.3.1".parse().unwrap()));
        assert!(!c.contains(&"::ffff:192.0.2.1".parse().unwrap()));
    }
}
