//! Scanners run from a namespace, and one parser for what they print: nmap's greppable output
//! (`-oG -`) and hping3's statistics. The parsers are tolerant of layout (a missing `Ports:`
//! field when nmap folds every port into "Ignored State", spacing) and strict about meaning
//! (every scanned port gets exactly one state, or it is an error naming the output).

use std::{collections::BTreeMap, net::IpAddr, time::Duration};

use crate::{Error, NetNs, Result, proc::Output};

/// `-p` argument for nmap from a sorted list of ports (runs compressed to ranges).
pub fn port_arg(ports: &[u16]) -> String {
    let mut parts = Vec::new();
    let mut i = 0;
    while i < ports.len() {
        let lo = ports[i];
        let mut hi = lo;
        while i + 1 < ports.len() && ports[i + 1] == hi.wrapping_add(1) && hi < u16::MAX {
            i += 1;
            hi = ports[i];
        }
        parts.push(if lo == hi {
            lo.to_string()
        } else {
            format!("{lo}-{hi}")
        });
        i += 1;
    }
    parts.join(",")
}

fn bad(what: String, text: &str) -> Error {
    Error::Other(format!("{what} in nmap output:\n{text}"))
}

/// Port → state ("open", "closed", "filtered", "open|filtered", …) from nmap's greppable
/// output, for every port in `scanned`: listed ports with their state, the rest with the
/// "Ignored State". An error if the output has no host line with ports, or if the counts do
/// not add up to the ports scanned (nmap failed, or its format changed).
pub fn parse_nmap_grepable(text: &str, scanned: &[u16]) -> Result<BTreeMap<u16, String>> {
    let line = text
        .lines()
        .find(|l| l.starts_with("Host:") && (l.contains("Ports:") || l.contains("Ignored State:")))
        .ok_or_else(|| bad("no Host line with ports".into(), text))?;
    let mut states = BTreeMap::new();
    let mut ignored: Option<(String, usize)> = None;
    for field in line.split('\t').map(str::trim) {
        if let Some(list) = field.strip_prefix("Ports:") {
            for entry in list.split(',').map(str::trim).filter(|e| !e.is_empty()) {
                let mut it = entry.split('/');
                let port: u16 = it
                    .next()
                    .and_then(|p| p.trim().parse().ok())
                    .ok_or_else(|| bad(format!("bad port entry {entry:?}"), text))?;
                let state = it.next().unwrap_or("").trim().to_string();
                states.insert(port, state);
            }
        } else if let Some(rest) = field.strip_prefix("Ignored State:") {
            let rest = rest.trim();
            let (state, count) = rest
                .split_once(char::is_whitespace)
                .ok_or_else(|| bad(format!("bad Ignored State {rest:?}"), text))?;
            let count = count
                .trim()
                .trim_matches(|c| c == '(' || c == ')')
                .parse()
                .map_err(|_| bad(format!("bad Ignored State count {rest:?}"), text))?;
            ignored = Some((state.to_string(), count));
        }
    }
    let listed = states.len();
    if let Some(p) = states.keys().find(|p| !scanned.contains(p)) {
        return Err(bad(format!("port {p} was not scanned but is"), text));
    }
    for p in scanned {
        if !states.contains_key(p) {
            let (state, _) = ignored
                .as_ref()
                .ok_or_else(|| bad(format!("port {p} missing and no Ignored State"), text))?;
            states.insert(*p, state.clone());
        }
    }
    let ignored_n = ignored.map_or(0, |(_, n)| n);
    if listed + ignored_n != scanned.len() {
        return Err(bad(
            format!(
                "{listed} ports listed + {ignored_n} ignored, {} scanned",
                scanned.len()
            ),
            text,
        ));
    }
    Ok(states)
}

/// Run nmap from `ns` with `scan` (e.g. "-sS") against `target` over `ports` and return the
/// state of every port. -T4 with two retries, no ping, no DNS: fast on a veth, and an answer
/// delayed on a loaded machine is still waited for (with -T5 and one retry a late RST or
/// SYN-ACK would turn into "filtered").
pub fn try_nmap(
    ns: &NetNs,
    scan: &str,
    target: IpAddr,
    ports: &[u16],
) -> Result<BTreeMap<u16, String>> {
    let p = port_arg(ports);
    let t = target.to_string();
    let mut args = vec![
        scan,
        "-p",
        &p,
        "-T4",
        "--max-retries",
        "2",
        "--host-timeout",
        "100s",
        "-Pn",
        "-n",
        "-oG",
        "-",
    ];
    if target.is_ipv6() {
        args.push("-6");
    }
    args.push(&t);
    let out = ns
        .cmd("nmap")
        .args(&args)
        .timeout(Duration::from_secs(120))
        .ok()?;
    parse_nmap_grepable(&out.stdout, ports)
}

/// [`try_nmap`], panicking on failure.
#[track_caller]
pub fn nmap(ns: &NetNs, scan: &str, target: IpAddr, ports: &[u16]) -> BTreeMap<u16, String> {
    try_nmap(ns, scan, target, ports).unwrap_or_else(|e| panic!("nmap failed: {e}"))
}

/// (transmitted, received) from hping3's statistics (on stdout or stderr).
pub fn parse_hping3_text(text: &str) -> Result<(u64, u64)> {
    let line = text
        .lines()
        .find(|l| l.contains("packets transmitted"))
        .ok_or_else(|| Error::Other(format!("no statistics in hping3 output:\n{text}")))?;
    let nums: Vec<u64> = line
        .split(|c: char| !c.is_ascii_digit())
        .filter_map(|w| w.parse().ok())
        .collect();
    match nums[..] {
        [sent, received, ..] => Ok((sent, received)),
        _ => Err(Error::Other(format!("bad hping3 statistics line {line:?}"))),
    }
}

/// (transmitted, received) from a finished hping3; panics if it printed no statistics.
#[track_caller]
pub fn parse_hping3(out: &Output) -> (u64, u64) {
    parse_hping3_text(&out.text()).unwrap_or_else(|e| panic!("{e}\n{out}"))
}

/// Send `count` TCP probes with hping3 flag arguments (e.g. `&["-F", "-P", "-U"]`, or none for
/// a NULL probe) from `ns` to `target:port`, 50 ms apart; returns (sent, replies received).
#[track_caller]
pub fn hping3(
    ns: &NetNs,
    flags: &[&str],
    target: std::net::Ipv4Addr,
    port: u16,
    count: u32,
) -> (u64, u64) {
    let c = count.to_string();
    let p = port.to_string();
    let t = target.to_string();
    let mut args = vec!["-c", &c, "-i", "u50000", "-p", &p];
    args.extend_from_slice(flags);
    args.push(&t);
    let out = ns.run("hping3", &args, Duration::from_secs(30));
    assert!(!out.timed_out(), "hping3 did not finish: {out}");
    parse_hping3(&out)
}

/// hping3 from `ns` with `args` (target last), bounded by 60 s; returns (sent, replies).
#[track_caller]
pub fn hping3_args(ns: &NetNs, args: &[&str]) -> (u64, u64) {
    let out = ns.run("hping3", args, Duration::from_secs(60));
    assert!(!out.timed_out(), "hping3 did not finish: {out}");
    parse_hping3(&out)
}

/// A number for hping3's `-L` (acknowledgment) or `-M` (sequence) that nobody could have
/// predicted.
pub fn unpredictable_u32() -> u32 {
    let n = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .subsec_nanos();
    n ^ 0x5a5a_5a5a
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn port_lists_are_compressed_to_ranges() {
        assert_eq!(
            port_arg(&[22, 25, 26, 27, 80, 65534, 65535]),
            "22,25-27,80,65534-65535"
        );
        assert_eq!(port_arg(&[]), "");
    }

    #[test]
    fn listed_and_ignored_ports_both_get_a_state() {
        let text = "# Nmap 7.93 scan initiated\nHost: 10.251.0.1 ()\tStatus: Up\nHost: 10.251.0.1 ()\tPorts: 22/open/tcp//ssh///, 25/closed/tcp//smtp///, 80/open/tcp//http///\tIgnored State: filtered (2)\n# Nmap done\n";
        let m = parse_nmap_grepable(text, &[22, 25, 80, 3306, 8080]).unwrap();
        assert_eq!(m[&22], "open");
        assert_eq!(m[&25], "closed");
        assert_eq!(m[&3306], "filtered");
        assert_eq!(m[&8080], "filtered");
    }

    #[test]
    fn a_missing_ports_field_is_fine_when_every_port_is_ignored() {
        let text = "Host: 10.251.0.1 ()\tIgnored State: open|filtered (2)\n";
        let m = parse_nmap_grepable(text, &[22, 25]).unwrap();
        assert_eq!(m[&22], "open|filtered");
        assert_eq!(m[&25], "open|filtered");
    }

    #[test]
    fn output_that_does_not_account_for_every_port_is_an_error() {
        // A host that is down: no ports at all.
        let down = "Host: 10.0.0.1 ()\tStatus: Down\n";
        assert!(parse_nmap_grepable(down, &[22]).is_err());
        // A port missing, and nothing ignored.
        let short = "Host: 10.0.0.1 ()\tPorts: 22/open/tcp//ssh///\n";
        let e = parse_nmap_grepable(short, &[22, 80])
            .unwrap_err()
            .to_string();
        assert!(e.contains("port 80 missing"), "{e}");
        // The counts do not add up.
        let odd = "Host: 10.0.0.1 ()\tPorts: 22/open/tcp//ssh///\tIgnored State: filtered (5)\n";
        assert!(parse_nmap_grepable(odd, &[22, 80]).is_err());
        // A port that was not asked for.
        let other = "Host: 10.0.0.1 ()\tPorts: 23/open/tcp//telnet///\n";
        assert!(parse_nmap_grepable(other, &[23, 22]).is_err());
        let garbage = "Host: 10.0.0.1 ()\tPorts: x/open/tcp\n";
        assert!(parse_nmap_grepable(garbage, &[22]).is_err());
    }

    #[test]
    fn hping3_statistics_are_read_from_either_stream() {
        let text = "HPING 10.0.0.1 (fwcli 10.0.0.1): NO FLAGS are set, 40 headers + 0 data bytes\n\n--- 10.0.0.1 hping statistic ---\n5 packets transmitted, 0 packets received, 100% packet loss\n";
        assert_eq!(parse_hping3_text(text).unwrap(), (5, 0));
        assert!(parse_hping3_text("hping3: command failed").is_err());
    }
}
