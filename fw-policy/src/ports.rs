//! Ports and port ranges: `22`, `"6000-6010"`.

use std::{fmt, str::FromStr};

use serde::{Deserialize, Deserializer, Serialize, Serializer};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PortRange {
    pub lo: u16,
    pub hi: u16,
}

impl PortRange {
    pub fn single(p: u16) -> Self {
        PortRange { lo: p, hi: p }
    }

    pub fn contains(&self, p: u16) -> bool {
        self.lo <= p && p <= self.hi
    }

    /// How many ports the two ranges share.
    pub fn overlap(&self, other: &PortRange) -> u64 {
        let lo = self.lo.max(other.lo);
        let hi = self.hi.min(other.hi);
        if lo > hi { 0 } else { u64::from(hi - lo) + 1 }
    }

    pub fn iter(&self) -> impl Iterator<Item = u16> {
        self.lo..=self.hi
    }
}

impl FromStr for PortRange {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let one = |t: &str| -> Result<u16, String> {
            t.trim()
                .parse::<u16>()
                .ok()
                .filter(|p| *p != 0)
                .ok_or_else(|| format!("{s:?} is not a port (1-65535) or range (\"lo-hi\")"))
        };
        let (lo, hi) = match s.split_once(['-', ':']) {
            Some((a, b)) => (one(a)?, one(b)?),
            None => {
                let p = one(s)?;
                (p, p)
            }
        };
        if lo > hi {
            return Err(format!(
                "port range {s:?} is backwards (low end above high end)"
            ));
        }
        Ok(PortRange { lo, hi })
    }
}

impl fmt::Display for PortRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.lo == self.hi {
            write!(f, "{}", self.lo)
        } else {
            write!(f, "{}-{}", self.lo, self.hi)
        }
    }
}

impl Serialize for PortRange {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if self.lo == self.hi {
            s.serialize_u16(self.lo)
        } else {
            s.collect_str(self)
        }
    }
}

impl<'de> Deserialize<'de> for PortRange {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Num(i64),
            Str(String),
        }
        match Raw::deserialize(d)? {
            Raw::Num(n) => u16::try_from(n)
                .ok()
                .filter(|p| *p != 0)
                .map(PortRange::single)
                .ok_or_else(|| serde::de::Error::custom(format!("{n} is not a port (1-65535)"))),
            Raw::Str(s) => s.parse().map_err(serde::de::Error::custom),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_ports_and_ranges() {
        assert_eq!("22".parse::<PortRange>().unwrap(), PortRange::single(22));
        assert_eq!(
            "6000-6010".parse::<PortRange>().unwrap(),
            PortRange { lo: 6000, hi: 6010 }
        );
        assert_eq!(
            "1:65535".parse::<PortRange>().unwrap(),
            PortRange { lo: 1, hi: 65535 }
        );
    }

    #[test]
    fn rejects_bad_ports() {
        for bad in ["0", "65536", "-1", "80-", "ssh", "90-80", ""] {
            assert!(bad.parse::<PortRange>().is_err(), "{bad:?} accepted");
        }
    }
}
