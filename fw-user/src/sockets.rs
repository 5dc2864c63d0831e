//! Seeding connection state from the sockets that exist when `fw up` runs, so the filter does
//! not cut them (the admin's SSH session above all). Read from /proc/net/{tcp,tcp6,udp,udp6} of
//! the caller's network namespace.

use std::{collections::BTreeSet, fs};

use fw_common::{
    FlowKey, FlowState, FlowTable,
    flow::state,
    packet::{IPPROTO_TCP, IPPROTO_UDP},
};

/// One socket line of /proc/net/{tcp,udp}[6].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Socket {
    pub family: u8,
    pub proto: u8,
    pub local: [u8; 16],
    pub local_port: u16,
    pub remote: [u8; 16],
    pub remote_port: u16,
    /// The kernel's TCP state number (1 ESTABLISHED … 10 LISTEN); 7 for unconnected UDP.
    pub st: u8,
}

const TCP_ESTABLISHED: u8 = 1;
const TCP_SYN_SENT: u8 = 2;
const TCP_LISTEN: u8 = 10;

/// Parse the text of one /proc/net table.
pub fn parse_proc_net(text: &str, proto: u8, v6: bool) -> Vec<Socket> {
    text.lines()
        .skip(1)
        .filter_map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            let (local, local_port) = parse_addr(f.get(1)?, v6)?;
            let (remote, remote_port) = parse_addr(f.get(2)?, v6)?;
            let st = u8::from_str_radix(f.get(3)?, 16).ok()?;
            // An IPv4-mapped IPv6 socket talks IPv4 on the wire.
            let mapped = v6 && local[..12] == [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff];
            let unmap = |a: [u8; 16]| {
                if mapped {
                    let mut o = [0u8; 16];
                    o[..4].copy_from_slice(&a[12..16]);
                    o
                } else {
                    a
                }
            };
            Some(Socket {
                family: if v6 && !mapped { 6 } else { 4 },
                proto,
                local: unmap(local),
                local_port,
                remote: unmap(remote),
                remote_port,
                st,
            })
        })
        .collect()
}

/// `0100007F:0016` (IPv4, one little-endian word) or 32 hex digits (IPv6, four words).
fn parse_addr(s: &str, v6: bool) -> Option<([u8; 16], u16)> {
    let (a, p) = s.split_once(':')?;
    let port = u16::from_str_radix(p, 16).ok()?;
    let mut out = [0u8; 16];
    let words = if v6 { 4 } else { 1 };
    if a.len() != words * 8 {
        return None;
    }
    for w in 0..words {
        let v = u32::from_str_radix(&a[w * 8..w * 8 + 8], 16).ok()?;
        out[w * 4..w * 4 + 4].copy_from_slice(&v.to_le_bytes());
    }
    Some((out, port))
}

/// The flow entries that keep `sockets` working: inbound TCP connections (local port is
/// listened on) in the In table, everything this host opened in the Out table.
pub fn entries(sockets: &[Socket], now: u64) -> Vec<(FlowTable, FlowKey, FlowState)> {
    let listening: BTreeSet<(u8, u16)> = sockets
        .iter()
        .filter(|s| s.proto == IPPROTO_TCP && s.st == TCP_LISTEN)
        .map(|s| (s.proto, s.local_port))
        .collect();
    let mut out = Vec::new();
    for s in sockets {
        if s.remote_port == 0 && s.remote == [0; 16] {
            continue; // listening or unconnected
        }
        let (table, st) = match (s.proto, s.st) {
            (IPPROTO_TCP, TCP_LISTEN) => continue,
            (IPPROTO_TCP, TCP_ESTABLISHED) => {
                if listening.contains(&(s.proto, s.local_port)) {
                    (FlowTable::In, state::ESTABLISHED)
                } else {
                    (FlowTable::Out, state::ESTABLISHED)
                }
            }
            (IPPROTO_TCP, TCP_SYN_SENT) => (FlowTable::Out, state::SYN_SENT),
            // SYN_RECV: the client's ACK is handled when the host retransmits its SYN+ACK.
            (IPPROTO_TCP, 3) => continue,
            (IPPROTO_TCP, _) => {
                if listening.contains(&(s.proto, s.local_port)) {
                    (FlowTable::In, state::CLOSING)
                } else {
                    (FlowTable::Out, state::CLOSING)
                }
            }
            (IPPROTO_UDP, _) => (FlowTable::Out, state::REPLIED),
            _ => continue,
        };
        let key = FlowKey {
            remote: s.remote,
            local: s.local,
            remote_port: s.remote_port,
            local_port: s.local_port,
            proto: s.proto,
            family: s.family,
            _pad: [0; 2],
        };
        let value = FlowState {
            last_seen: now,
            expect_ack: 0,
            state: st,
            flags: FlowState::SEEDED,
            _pad: [0; 2],
        };
        out.push((table, key, value));
    }
    out
}

/// Enter the sockets that exist now into the flow tables (entries already there are kept), so
/// loading the filter does not cut them. Returns how many were added.
pub fn seed_flows(maps: &mut crate::maps::PinnedMaps) -> Result<usize, crate::Error> {
    let now = crate::sys::monotonic_coarse_ns();
    let mut n = 0;
    for (table, key, st) in entries(&current_sockets(), now) {
        if maps.flow(table, &key)?.is_none() {
            maps.flow_insert(table, &key, &st)?;
            n += 1;
        }
    }
    Ok(n)
}

/// Every socket of this network namespace.
pub fn current_sockets() -> Vec<Socket> {
    let mut all = Vec::new();
    for (file, proto, v6) in [
        ("/proc/net/tcp", IPPROTO_TCP, false),
        ("/proc/net/tcp6", IPPROTO_TCP, true),
        ("/proc/net/udp", IPPROTO_UDP, false),
        ("/proc/net/udp6", IPPROTO_UDP, true),
    ] {
        if let Ok(text) = fs::read_to_string(file) {
            all.extend(parse_proc_net(&text, proto, v6));
        }
    }
    all
}

#[cfg(test)]
mod tests {
    use super::*;

    const TCP: &str = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 00000000:0016 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1 1 0000000000000000 100 0 0 10 0
   1: 0100FA0A:0016 0200FA0A:D431 01 00000000:00000000 02:000A7CB1 00000000     0        0 2 4 0000000000000000 20 4 29 10 -1
   2: 0100FA0A:9C40 0200FA0A:01BB 01 00000000:00000000 02:000A7CB1 00000000     0        0 3 4 0000000000000000 20 4 29 10 -1
";

    #[test]
    fn inbound_ssh_goes_to_in_and_outbound_to_out() {
        let s = parse_proc_net(TCP, IPPROTO_TCP, false);
        assert_eq!(s.len(), 3);
        assert_eq!(s[1].local[..4], [10, 250, 0, 1]);
        assert_eq!(s[1].remote_port, 0xd431);
        let e = entries(&s, 7);
        assert_eq!(e.len(), 2);
        assert_eq!(e[0].0, FlowTable::In);
        assert_eq!(e[0].1.local_port, 22);
        assert_eq!(e[1].0, FlowTable::Out);
        assert_eq!(e[1].1.remote_port, 443);
        assert!(
            e.iter()
                .all(|(_, _, v)| v.last_seen == 7 && v.flags == FlowState::SEEDED)
        );
    }

    #[test]
    fn v4_mapped_v6_sockets_become_v4_flows() {
        let t = "hdr\n 0: 0000000000000000FFFF00000100FA0A:0016 0000000000000000FFFF00000200FA0A:D431 01 0\n";
        let s = parse_proc_net(t, IPPROTO_TCP, true);
        assert_eq!(s[0].family, 4);
        assert_eq!(s[0].local[..4], [10, 250, 0, 1]);
        assert_eq!(s[0].local[4..], [0; 12]);
    }
}
