//! Rate limits on allow rules: `limit = "6/30s"` (new connections per source per period),
//! `burst`, the per-source prefix, an aggregate `total` for all sources together, and
//! automatic bans. Compiled into one [`LimitParams`] per rule.

use std::{fmt, str::FromStr};

use fw_common::limit::LimitParams;
use serde::{Deserialize, Serialize};

const NS: u64 = 1_000_000_000;

/// `COUNT/PERIOD`: `6/30s`, `100/s`, `10/1m`, `1000/1h`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rate {
    pub count: u32,
    /// The period in seconds.
    pub secs: u32,
}

impl Rate {
    /// Nanoseconds between events at this rate.
    pub fn interval_ns(&self) -> u64 {
        (u64::from(self.secs) * NS / u64::from(self.count)).max(1)
    }
}

impl fmt::Display for Rate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.count, duration_text(u64::from(self.secs)))
    }
}

impl FromStr for Rate {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || {
            format!(
                "{s:?} is not a rate: write COUNT/PERIOD, e.g. \"6/30s\", \"100/s\", \"10/1m\", \"1000/1h\""
            )
        };
        let (c, p) = s.trim().split_once('/').ok_or_else(bad)?;
        let count: u32 = c.trim().parse().map_err(|_| bad())?;
        if count == 0 || count > 10_000_000 {
            return Err(format!("{s:?}: the count must be 1 to 10000000"));
        }
        let p = p.trim();
        let p = if p.chars().next().is_some_and(|c| c.is_ascii_digit()) {
            p.to_string()
        } else {
            format!("1{p}")
        };
        let secs = parse_duration(&p).map_err(|_| bad())?;
        if secs == 0 || secs > 86_400 {
            return Err(format!("{s:?}: the period must be 1 s to 1 day"));
        }
        Ok(Rate {
            count,
            secs: secs as u32,
        })
    }
}

/// `30s`, `10m`, `1h`, `2d`, or plain seconds.
pub fn parse_duration(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let bad = || format!("{s:?} is not a duration (e.g. \"30s\", \"10m\", \"1h\", \"1d\")");
    let (num, unit) = match s.find(|c: char| !c.is_ascii_digit()) {
        Some(i) => s.split_at(i),
        None => (s, "s"),
    };
    let n: u64 = num.parse().map_err(|_| bad())?;
    let mul = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => return Err(bad()),
    };
    n.checked_mul(mul).ok_or_else(bad)
}

/// Seconds as the shortest exact text: `30s`, `10m`, `1h`, `1d`.
pub fn duration_text(secs: u64) -> String {
    for (unit, n) in [("d", 86_400), ("h", 3600), ("m", 60)] {
        if secs >= n && secs.is_multiple_of(n) {
            return format!("{}{unit}", secs / n);
        }
    }
    format!("{secs}s")
}

/// A `/LEN` per-source prefix.
pub fn parse_prefix(s: &str, max: u8) -> Result<u8, String> {
    let t = s.trim();
    let n = t.strip_prefix('/').unwrap_or(t);
    match n.parse::<u8>() {
        Ok(l) if (1..=max).contains(&l) => Ok(l),
        _ => Err(format!(
            "{s:?} is not a prefix length: write \"/N\" with N from 1 to {max}"
        )),
    }
}

/// The limits of one allow rule.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Limit {
    /// New connections per source (None: only the aggregate limit).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate: Option<Rate>,
    /// Connections a source may open at once before the rate applies (default: the rate's
    /// count, like ufw's "6 in 30 s").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub burst: Option<u32>,
    /// Per-source prefix lengths: sources in one prefix share a bucket.
    pub per4: u8,
    pub per6: u8,
    /// All sources together.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub total: Option<Rate>,
    /// Ban a source after this many over-limit connection attempts…
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ban_after: Option<u32>,
    /// …for this many seconds.
    #[serde(default)]
    pub ban_secs: u64,
}

impl Default for Limit {
    fn default() -> Self {
        Limit {
            rate: None,
            burst: None,
            per4: 32,
            per6: 64,
            total: None,
            ban_after: None,
            ban_secs: DEFAULT_BAN_SECS,
        }
    }
}

/// How long a ban lasts when the policy says `ban_after` without `ban_for`.
pub const DEFAULT_BAN_SECS: u64 = 600;

impl Limit {
    pub fn is_empty(&self) -> bool {
        self.rate.is_none() && self.total.is_none()
    }

    pub fn burst(&self) -> u32 {
        self.burst
            .unwrap_or_else(|| self.rate.map_or(1, |r| r.count))
            .max(1)
    }

    /// What the kernel reads for this rule.
    pub fn params(&self) -> LimitParams {
        let mut p = LimitParams {
            per4: self.per4,
            per6: self.per6,
            ..LimitParams::default()
        };
        if let Some(r) = self.rate {
            p.interval_ns = r.interval_ns();
            p.tolerance_ns = p.interval_ns * u64::from(self.burst() - 1);
        }
        if let Some(t) = self.total {
            p.total_interval_ns = t.interval_ns();
            // The aggregate admits a whole period's worth at once.
            p.total_tolerance_ns = p.total_interval_ns * u64::from(t.count - 1);
        }
        if let Some(n) = self.ban_after {
            p.ban_after = n.max(1);
            p.ban_ns = self.ban_secs.max(1) * NS;
        }
        p
    }

    /// Check the values that the kernel cannot hold or that make no sense together.
    pub fn check(&self) -> Result<(), String> {
        if self.is_empty() {
            return Err("a limit needs a rate (`limit = \"6/30s\"`) or a `total`".into());
        }
        if let Some(b) = self.burst {
            if self.rate.is_none() {
                return Err("`burst` needs a per-source `limit`".into());
            }
            if b == 0 || b > 1_000_000 {
                return Err(format!("burst = {b}: must be 1 to 1000000"));
            }
        }
        if self.ban_after.is_some() && self.rate.is_none() {
            return Err("`ban_after` needs a per-source `limit`".into());
        }
        if self.ban_after == Some(0) {
            return Err("ban_after = 0: a ban needs at least one over-limit attempt".into());
        }
        if self.ban_after.is_some() && !(1..=30 * 86_400).contains(&self.ban_secs) {
            return Err("ban_for must be 1 s to 30 days".into());
        }
        Ok(())
    }

    /// In words: "6/30s per source (burst 6, per /32 and /64), 1000/s in all, ban after 3 for 10m".
    pub fn describe(&self) -> String {
        let mut parts = Vec::new();
        if let Some(r) = self.rate {
            let mut s = format!("{r} per source");
            let mut extra = Vec::new();
            if self.burst.is_some_and(|b| b != r.count) {
                extra.push(format!("burst {}", self.burst()));
            }
            if (self.per4, self.per6) != (32, 64) {
                extra.push(format!("per /{} and /{}", self.per4, self.per6));
            }
            if !extra.is_empty() {
                s.push_str(&format!(" ({})", extra.join(", ")));
            }
            parts.push(s);
        }
        if let Some(t) = self.total {
            parts.push(format!("{t} from all sources together"));
        }
        if let Some(n) = self.ban_after {
            parts.push(format!(
                "ban for {} after {n} over the limit",
                duration_text(self.ban_secs)
            ));
        }
        parts.join(", ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_parse_in_every_form_and_print_back() {
        let r: Rate = "6/30s".parse().unwrap();
        assert_eq!((r.count, r.secs), (6, 30));
        assert_eq!(r.interval_ns(), 5 * NS);
        assert_eq!("100/s".parse::<Rate>().unwrap().secs, 1);
        assert_eq!("10/1m".parse::<Rate>().unwrap().secs, 60);
        assert_eq!("5/h".parse::<Rate>().unwrap().to_string(), "5/1h");
        for bad in ["6", "0/30s", "6/0s", "6/30x", "x/1s", "6/2d"] {
            assert!(bad.parse::<Rate>().is_err(), "{bad}");
        }
    }

    #[test]
    fn ufw_limit_is_six_at_once_then_one_per_five_seconds() {
        let l = Limit {
            rate: Some("6/30s".parse().unwrap()),
            ..Limit::default()
        };
        let p = l.params();
        assert_eq!(p.interval_ns, 5 * NS);
        assert_eq!(p.tolerance_ns, 25 * NS);
        assert_eq!((p.per4, p.per6), (32, 64));
        assert_eq!(p.ban_ns, 0);
    }

    #[test]
    fn nonsense_combinations_are_refused() {
        let only_burst = Limit {
            burst: Some(3),
            total: Some("10/s".parse().unwrap()),
            ..Limit::default()
        };
        assert!(only_burst.check().unwrap_err().contains("burst"));
        assert!(Limit::default().check().is_err());
        assert!(parse_prefix("/0", 32).is_err());
        assert_eq!(parse_prefix("/24", 32), Ok(24));
        assert_eq!(parse_duration("10m"), Ok(600));
        assert_eq!(duration_text(600), "10m");
    }
}
