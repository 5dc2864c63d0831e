//! Small argument grammars shared by subcommands: `PORT[-PORT][/PROTO]`, TCP flag letters.

use fw_common::tcp;

use fw_policy::{PortRange, Proto};

/// `8080`, `8080/tcp`, `6000-6010/udp` (protocol defaults to tcp, as in ufw).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PortSpec {
    pub ports: PortRange,
    pub proto: Proto,
}

impl std::str::FromStr for PortSpec {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let (ports, proto) = match s.split_once('/') {
            Some((p, proto)) => (p, proto.parse::<Proto>()?),
            None => (s, Proto::Tcp),
        };
        Ok(PortSpec {
            ports: ports.parse()?,
            proto,
        })
    }
}

impl std::fmt::Display for PortSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.ports, self.proto.name())
    }
}

/// TCP flags as letters (`S`, `SA`, `FPU`, as tcpdump and hping3 spell them), `none`, `all`,
/// or a number (`0x29`).
pub fn parse_tcp_flags(s: &str) -> Result<u8, String> {
    match s.to_ascii_lowercase().as_str() {
        "none" | "null" => return Ok(0),
        "all" | "xmas" => return Ok(tcp::ALL),
        _ => {}
    }
    if let Some(hex) = s.strip_prefix("0x") {
        return u8::from_str_radix(hex, 16).map_err(|_| format!("bad flags {s:?}"));
    }
    if let Ok(n) = s.parse::<u8>() {
        return Ok(n);
    }
    // Comma-separated names (`SYN,ACK`, as `fw explain` prints them), or letters (`SA`).
    if s.contains(',') || tcp::flag_by_name(s).is_some() {
        return s.split(',').try_fold(0u8, |f, n| {
            tcp::flag_by_name(n.trim())
                .map(|b| f | b)
                .ok_or_else(|| format!("bad TCP flag {n:?} in {s:?}"))
        });
    }
    let mut f = 0;
    for c in s.chars() {
        let up = match c.to_ascii_uppercase() {
            '.' => 'A', // tcpdump's ACK
            'W' => 'C', // hping3's CWR
            u => u,
        };
        f |= tcp::FLAG_NAMES
            .iter()
            .find(|(_, _, l)| *l == up)
            .map(|(b, _, _)| *b)
            .ok_or_else(|| {
                format!("bad TCP flag {c:?} in {s:?} (letters F S R P A U E C, or none/all)")
            })?;
    }
    Ok(f)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn port_specs() {
        let p: PortSpec = "8080".parse().unwrap();
        assert_eq!((p.ports, p.proto), (PortRange::single(8080), Proto::Tcp));
        let p: PortSpec = "6000-6010/udp".parse().unwrap();
        assert_eq!(
            (p.ports, p.proto),
            (PortRange { lo: 6000, hi: 6010 }, Proto::Udp)
        );
        assert!("80/icmp".parse::<PortSpec>().is_err());
        assert!("http".parse::<PortSpec>().is_err());
        assert!("0/tcp".parse::<PortSpec>().is_err());
    }

    #[test]
    fn flag_letters() {
        assert_eq!(parse_tcp_flags("S").unwrap(), tcp::SYN);
        assert_eq!(parse_tcp_flags("SA").unwrap(), tcp::SYN | tcp::ACK);
        assert_eq!(
            parse_tcp_flags("FPU").unwrap(),
            tcp::FIN | tcp::PSH | tcp::URG
        );
        assert_eq!(parse_tcp_flags("none").unwrap(), 0);
        assert_eq!(parse_tcp_flags("xmas").unwrap(), 0x3f);
        assert_eq!(parse_tcp_flags("0x12").unwrap(), 0x12);
        assert!(parse_tcp_flags("SX").is_err());
    }
}
