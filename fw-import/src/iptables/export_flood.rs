//! `fw export iptables` for block lists and rate limits: `-s CIDR -j DROP` first, and
//! `-m hashlimit` before a limited rule's ACCEPT (kept apart from export.rs, which is moving).

use std::fmt::Write as _;

use fw_policy::{Cidr, Limit, Policy, Rate};

/// The policy's `[[block]]` sources of one family, dropped before anything else. (fw lets
/// IPv6 neighbour discovery from blocked sources through; these rules do not.)
pub fn blocks(out: &mut String, p: &Policy, v6: bool) {
    for c in p.block_sources() {
        if matches!(c, Cidr::V6(..)) == v6 {
            let _ = writeln!(out, "-A INPUT -s {c} -j DROP");
        }
    }
}

/// iptables can say N per second, minute, hour or day: the finest unit that keeps the rate
/// exact, else per minute rounded up.
fn rate_text(r: &Rate) -> String {
    for (unit, secs) in [
        ("second", 1u64),
        ("minute", 60),
        ("hour", 3600),
        ("day", 86_400),
    ] {
        let n = u64::from(r.count) * secs;
        if n.is_multiple_of(u64::from(r.secs)) {
            return format!("{}/{unit}", n / u64::from(r.secs));
        }
    }
    format!(
        "{}/minute",
        (u64::from(r.count) * 60).div_ceil(u64::from(r.secs))
    )
}

/// Match-and-DROP parts (after `-p … --dport …`) for a limited rule's new connections.
pub fn hashlimit(id: u32, l: &Limit, v6: bool) -> Vec<String> {
    let mut out = Vec::new();
    if let Some(r) = l.rate {
        let mask = if v6 {
            format!("--hashlimit-srcmask {}", l.per6)
        } else {
            format!("--hashlimit-srcmask {}", l.per4)
        };
        out.push(format!(
            "-m conntrack --ctstate NEW -m hashlimit --hashlimit-name fw_r{id} --hashlimit-mode srcip {mask} --hashlimit-above {} --hashlimit-burst {} -j DROP",
            rate_text(&r),
            l.burst()
        ));
    }
    if let Some(t) = l.total {
        out.push(format!(
            "-m conntrack --ctstate NEW -m hashlimit --hashlimit-name fw_t{id} --hashlimit-above {} --hashlimit-burst {} -j DROP",
            rate_text(&t),
            t.count
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_become_iptables_units() {
        assert_eq!(rate_text(&"6/30s".parse().unwrap()), "12/minute");
        assert_eq!(rate_text(&"100/s".parse().unwrap()), "100/second");
        assert_eq!(rate_text(&"7/1h".parse().unwrap()), "7/hour");
    }

    #[test]
    fn default_accept_blocks_and_limits_are_exported() {
        let p = fw_policy::parse_policy(
            "p",
            "default = \"accept\"\n[[allow]]\nports = [22]\nlimit = \"6/30s\"\n[[block]]\nfrom = [\"192.0.2.0/24\", \"2001:db8::/32\"]\n",
        )
        .unwrap();
        let text = super::super::export::export(&p, &[super::super::Family::V4], "p");
        assert!(text.contains(":INPUT ACCEPT"), "{text}");
        assert!(text.contains("-A INPUT -s 192.0.2.0/24 -j DROP"), "{text}");
        assert!(!text.contains("2001:db8"), "{text}");
        assert!(
            text.contains("--hashlimit-above 12/minute --hashlimit-burst 6 -j DROP"),
            "{text}"
        );
    }
}
