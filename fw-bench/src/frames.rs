//! The frames the benchmark sends or test-runs: the packet classes of the per-packet cost table
//! and the 60-byte flood templates (real MACs of the pair, valid checksums, so the kernel's stack
//! treats them as it would real traffic when no filter drops them first).

use fw_common::tcp::{ACK, ALL, SYN};
use fw_lab::frames::{L4Spec, PacketSpec, arp_frame, pad_to};

use super::lab::{RECV_V4, RECV_V6, SEND_V4, SEND_V6};

/// One packet class of the per-packet cost table.
pub struct Class {
    pub key: &'static str,
    pub name: &'static str,
    pub frame: Vec<u8>,
}

/// The local port of the connection the "established reply" class belongs to (the receiver
/// opened it to SEND_V4:443).
pub const EST_LOCAL_PORT: u16 = 40000;
pub const EST_REMOTE_PORT: u16 = 443;

pub fn classes() -> Vec<Class> {
    let syn = |dport| PacketSpec::syn(SEND_V4, RECV_V4, dport);
    let tcp = |dport, flags| PacketSpec::tcp(SEND_V4, RECV_V4, 40000, dport, flags);
    let mut truncated = syn(8080).build();
    truncated.truncate(14 + 20 + 6); // IPv4 header, then only 6 bytes of TCP
    let c = |key, name, frame: Vec<u8>| Class { key, name, frame };
    vec![
        c("allowed_syn", "allowed SYN (80)", syn(80).build()),
        c("disallowed_syn", "disallowed SYN (8080)", syn(8080).build()),
        c("null", "NULL scan (80)", tcp(80, 0).build()),
        c("xmas", "XMAS scan (80)", tcp(80, ALL).build()),
        c("unrelated_ack", "unrelated ACK (80)", tcp(80, ACK).build()),
        c(
            "udp",
            "UDP to a closed port",
            PacketSpec::udp(SEND_V4, RECV_V4, 40000, 9999).build(),
        ),
        c(
            "ipv6",
            "IPv6 SYN (8080)",
            PacketSpec::syn(SEND_V6, RECV_V6, 8080).build(),
        ),
        c("vlan", "VLAN SYN (8080)", syn(8080).vlans(&[100]).build()),
        c("arp", "ARP request", arp_frame()),
        c("truncated", "truncated TCP header", truncated),
        c(
            "established",
            "established reply (ACK)",
            PacketSpec::tcp(SEND_V4, RECV_V4, EST_REMOTE_PORT, EST_LOCAL_PORT, ACK)
                .seq_ack(1000, 2000)
                .build(),
        ),
    ]
}

/// A 60-byte template: `spec` with the pair's MACs (the builder computes the checksums),
/// zero-padded to the Ethernet minimum.
pub fn finish(spec: PacketSpec, dst_mac: &[u8; 6], src_mac: &[u8; 6]) -> Vec<u8> {
    pad_to(spec.macs(*dst_mac, *src_mac).build(), 60)
}

/// A flood: what it sends, as templates the generator cycles through.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Flood {
    /// UDP to a closed port.
    Udp,
    /// TCP SYN to a closed port.
    Syn,
    /// TCP without flags to an allowed port (80).
    Null,
}

impl Flood {
    pub const ALL: [Flood; 3] = [Flood::Udp, Flood::Syn, Flood::Null];

    pub fn key(self) -> &'static str {
        match self {
            Flood::Udp => "udp_closed",
            Flood::Syn => "syn_closed",
            Flood::Null => "null_allowed",
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Flood::Udp => "UDP to a closed port",
            Flood::Syn => "SYN to a closed port",
            Flood::Null => "NULL to an allowed port",
        }
    }

    /// 16 templates that differ in the source port (a flood from many connections, not one).
    pub fn templates(self, dst_mac: &[u8; 6], src_mac: &[u8; 6]) -> Vec<Vec<u8>> {
        (0..16u16)
            .map(|i| {
                let sport = 10000 + i;
                let spec = match self {
                    Flood::Udp => PacketSpec::udp(SEND_V4, RECV_V4, sport, 9999).payload(18),
                    Flood::Syn => PacketSpec::tcp(SEND_V4, RECV_V4, sport, 8080, SYN),
                    Flood::Null => PacketSpec::tcp(SEND_V4, RECV_V4, sport, 80, 0),
                };
                finish(spec, dst_mac, src_mac)
            })
            .collect()
    }
}

/// SYN from `src` to `dport`, as a finished 60-byte template.
pub fn syn_template(
    src: &str,
    sport: u16,
    dport: u16,
    flags: u8,
    dst_mac: &[u8; 6],
    src_mac: &[u8; 6],
) -> Vec<u8> {
    let spec = PacketSpec::new(
        src,
        RECV_V4,
        L4Spec::Tcp {
            sport,
            dport,
            flags,
        },
    );
    finish(spec, dst_mac, src_mac)
}

#[cfg(test)]
mod tests {
    use super::*;
    use fw_lab::frames::l4_checksum_ok;

    #[test]
    fn tcp_checksum_verifies() {
        let f = syn_template(SEND_V4, 1234, 80, SYN, &[2; 6], &[4; 6]);
        assert_eq!(f.len(), 60);
        assert_eq!((&f[..6], &f[6..12]), (&[2u8; 6][..], &[4u8; 6][..]));
        let (src, dst) = (SEND_V4.parse().unwrap(), RECV_V4.parse().unwrap());
        assert!(l4_checksum_ok(6, src, dst, &f[34..54]));
    }
}
