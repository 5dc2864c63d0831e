//! Sets of source addresses of one family, as disjoint inclusive intervals. The importer walks
//! the iptables chain over sets of sources rather than sample addresses, so a long list of
//! `-s` rules costs one interval operation each instead of multiplying every other sample.

use std::{
    collections::BTreeMap,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
};

use fw_common::Family;
use fw_policy::Cidr;

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct AddrSet(BTreeMap<u128, u128>);

pub(crate) fn top(f: Family) -> u128 {
    match f {
        Family::V4 => u32::MAX as u128,
        Family::V6 => u128::MAX,
    }
}

/// The family and first and last address of a CIDR.
pub(crate) fn cidr_range(c: &Cidr) -> (Family, u128, u128) {
    match *c {
        Cidr::V4(a, len) => {
            let net = u32::from_be_bytes(a) as u128;
            let host = u32::MAX.checked_shr(len as u32).unwrap_or(0) as u128;
            (Family::V4, net, net | host)
        }
        Cidr::V6(a, len) => {
            let net = u128::from_be_bytes(a);
            let host = u128::MAX.checked_shr(len as u32).unwrap_or(0);
            (Family::V6, net, net | host)
        }
    }
}

pub(crate) fn addr(f: Family, v: u128) -> IpAddr {
    match f {
        Family::V4 => IpAddr::V4(Ipv4Addr::from(v as u32)),
        Family::V6 => IpAddr::V6(Ipv6Addr::from(v)),
    }
}

/// The address examples prefer: a documentation address.
pub(crate) fn example_addr(f: Family) -> IpAddr {
    match f {
        Family::V4 => IpAddr::V4(Ipv4Addr::new(198, 51, 100, 23)),
        Family::V6 => IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0xffff, 0, 0, 0, 0, 0x23)),
    }
}

pub(crate) fn value(a: IpAddr) -> u128 {
    match a {
        IpAddr::V4(a) => u32::from(a) as u128,
        IpAddr::V6(a) => u128::from(a),
    }
}

impl AddrSet {
    /// Every address of the family.
    pub(crate) fn full(f: Family) -> Self {
        AddrSet(BTreeMap::from([(0, top(f))]))
    }

    /// The addresses of `f` in `cidrs`.
    pub(crate) fn of(cidrs: &[Cidr], f: Family) -> Self {
        let mut s = AddrSet::default();
        for c in cidrs {
            let (cf, lo, hi) = cidr_range(c);
            if cf == f {
                s.insert(lo, hi);
            }
        }
        s
    }

    pub(crate) fn insert(&mut self, mut lo: u128, mut hi: u128) {
        let touching: Vec<(u128, u128)> = self
            .0
            .range(..=hi.saturating_add(1))
            .rev()
            .take_while(|(_, e)| e.saturating_add(1) >= lo)
            .map(|(s, e)| (*s, *e))
            .collect();
        for (s, e) in touching {
            self.0.remove(&s);
            lo = lo.min(s);
            hi = hi.max(e);
        }
        self.0.insert(lo, hi);
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub(crate) fn complement(&self, f: Family) -> Self {
        let mut out = AddrSet::full(f);
        out.take(self);
        out
    }

    pub(crate) fn contains(&self, a: IpAddr) -> bool {
        let v = value(a);
        self.0.range(..=v).next_back().is_some_and(|(_, e)| *e >= v)
    }

    /// Remove `other` from this set; returns what was removed (the intersection).
    pub(crate) fn take(&mut self, other: &AddrSet) -> AddrSet {
        let mut out = AddrSet::default();
        for (&lo, &hi) in &other.0 {
            let overlapping: Vec<(u128, u128)> = self
                .0
                .range(..=hi)
                .rev()
                .take_while(|(_, e)| **e >= lo)
                .map(|(s, e)| (*s, *e))
                .collect();
            for (s, e) in overlapping {
                self.0.remove(&s);
                if s < lo {
                    self.0.insert(s, lo - 1);
                }
                if e > hi {
                    self.0.insert(hi + 1, e);
                }
                out.0.insert(s.max(lo), e.min(hi));
            }
        }
        out
    }

    /// Add every address of `other`.
    pub(crate) fn union(&mut self, other: &AddrSet) {
        for (&lo, &hi) in &other.0 {
            self.insert(lo, hi);
        }
    }

    /// The disjoint intervals, in order.
    pub(crate) fn intervals(&self) -> impl Iterator<Item = (u128, u128)> + '_ {
        self.0.iter().map(|(a, b)| (*a, *b))
    }

    pub(crate) fn len(&self) -> usize {
        self.0.len()
    }

    pub(crate) fn is_full(&self, f: Family) -> bool {
        self.0.len() == 1 && self.0.get(&0) == Some(&top(f))
    }

    /// The set as the fewest CIDRs that cover exactly it.
    pub(crate) fn to_cidrs(&self, f: Family) -> Vec<Cidr> {
        let bits: u32 = if f == Family::V4 { 32 } else { 128 };
        let mut out = Vec::new();
        for (&lo, &hi) in &self.0 {
            let mut cur = lo;
            loop {
                // The largest block that starts at `cur` and ends at or before `hi`.
                let align = if cur == 0 {
                    bits
                } else {
                    cur.trailing_zeros().min(bits)
                };
                let mut size = align;
                while size > 0 && block_end(cur, size).is_none_or(|e| e > hi) {
                    size -= 1;
                }
                out.push(cidr(f, cur, (bits - size) as u8));
                match block_end(cur, size) {
                    Some(e) if e < hi => cur = e + 1,
                    _ => break,
                }
            }
        }
        out
    }

    /// Everything: the set is left empty.
    pub(crate) fn take_all(&mut self) -> AddrSet {
        std::mem::take(self)
    }
}

/// The last address of the block of 2^`size` addresses starting at `start`.
fn block_end(start: u128, size: u32) -> Option<u128> {
    if size >= 128 {
        return (start == 0).then_some(u128::MAX);
    }
    start.checked_add((1u128 << size) - 1)
}

fn cidr(f: Family, net: u128, len: u8) -> Cidr {
    match f {
        Family::V4 => Cidr::V4((net as u32).to_be_bytes(), len),
        Family::V6 => Cidr::V6(net.to_be_bytes(), len),
    }
}

/// An address as the 16 bytes of `fw_common::Ip::src` (IPv4 in the first 4).
pub(crate) fn ip_bytes(f: Family, v: u128) -> [u8; 16] {
    match f {
        Family::V4 => {
            let mut b = [0u8; 16];
            b[..4].copy_from_slice(&(v as u32).to_be_bytes());
            b
        }
        Family::V6 => v.to_be_bytes(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(list: &[&str], f: Family) -> AddrSet {
        let c: Vec<Cidr> = list.iter().map(|s| s.parse().unwrap()).collect();
        AddrSet::of(&c, f)
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn union_merges_overlapping_and_adjacent_ranges() {
        let s = set(
            &["10.0.0.0/25", "10.0.0.128/25", "10.0.0.5", "2001:db8::/32"],
            Family::V4,
        );
        assert_eq!(s.0.len(), 1);
        assert!(s.contains(ip("10.0.0.255")) && !s.contains(ip("10.0.1.0")));
    }

    #[test]
    fn take_splits_and_returns_the_intersection() {
        let mut all = AddrSet::full(Family::V4);
        let got = all.take(&set(&["10.0.0.0/8"], Family::V4));
        assert_eq!(got, set(&["10.0.0.0/8"], Family::V4));
        assert!(!all.contains(ip("10.1.2.3")) && all.contains(ip("9.255.255.255")));
        assert!(all.contains(ip("11.0.0.0")) && all.contains(ip("255.255.255.255")));
        let again = all.take(&set(&["10.1.0.0/16"], Family::V4));
        assert!(again.is_empty());
        let rest = all.take_all();
        assert!(all.is_empty() && !rest.is_empty());
    }

    #[test]
    fn sets_become_the_fewest_cidrs() {
        let list = |s: &AddrSet, f| -> Vec<String> {
            s.to_cidrs(f).iter().map(|c| c.to_string()).collect()
        };
        assert_eq!(list(&AddrSet::full(Family::V4), Family::V4), ["0.0.0.0/0"]);
        assert_eq!(list(&AddrSet::full(Family::V6), Family::V6), ["::/0"]);
        let s = set(&["10.0.0.0/8", "192.0.2.7"], Family::V4);
        assert_eq!(list(&s, Family::V4), ["10.0.0.0/8", "192.0.2.7"]);
        let c = set(&["10.0.0.0/8"], Family::V4).complement(Family::V4);
        assert_eq!(
            list(&c, Family::V4),
            [
                "0.0.0.0/5",
                "8.0.0.0/7",
                "11.0.0.0/8",
                "12.0.0.0/6",
                "16.0.0.0/4",
                "32.0.0.0/3",
                "64.0.0.0/2",
                "128.0.0.0/1"
            ]
        );
        let mut r = AddrSet::default();
        r.insert(value(ip("192.0.2.1")), value(ip("192.0.2.6")));
        assert_eq!(
            list(&r, Family::V4),
            ["192.0.2.1", "192.0.2.2/31", "192.0.2.4/31", "192.0.2.6"]
        );
        let back = AddrSet::of(&r.to_cidrs(Family::V4), Family::V4);
        assert_eq!(back, r);
        let v6 = set(&["2001:db8::/32"], Family::V6).complement(Family::V6);
        assert_eq!(AddrSet::of(&v6.to_cidrs(Family::V6), Family::V6), v6);
    }

    #[test]
    fn complement() {
        let s = set(&["198.51.100.0/24"], Family::V4);
        let c = s.complement(Family::V4);
        assert!(!c.contains(ip("198.51.100.1")) && c.contains(ip("198.51.101.0")));
        assert!(AddrSet::full(Family::V6).is_full(Family::V6));
    }
}
