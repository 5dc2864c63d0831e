//! The policies of the verdict tables, and [`Env`]: what a policy's options and one open port
//! make of the structural cases.

use fw_common::{Config, Reason, tcp};
use fw_policy::{Policy, SEED_POLICY, parse_policy};
use fw_testrun::Expect::{self, Is, Rule};

pub fn seed() -> Policy {
    parse_policy("seed", SEED_POLICY).expect("the seed policy parses")
}

/// Web open to all; SSH and a few other ports restricted to sources, nested CIDRs so the
/// longest prefix decides which rule counts.
pub const RESTRICTED: &str = r#"
[[allow]]
ports = [80, 443]                 # rules 0, 1
[[allow]]
ports = [22]                      # rule 2
from = ["203.0.113.7", "198.51.100.0/24", "2001:db8:1::/48", "2001:db8::7"]
[[allow]]
ports = [22]                      # rule 3: inside rule 2's CIDRs, longer prefixes
from = ["198.51.100.128/25", "2001:db8:1:2::/64"]
[[allow]]
ports = [2222]                    # rule 4
from = ["10.0.0.0/8"]
[[allow]]
proto = "udp"
ports = [53]                      # rule 5
from = ["192.0.2.0/24"]
[[allow]]
ports = [3000]                    # rule 6: every IPv6 source, no IPv4 one
from = ["::/0"]
[[allow]]
ports = [4000]                    # rule 7: every IPv4 source, no IPv6 one
from = ["0.0.0.0/0"]
"#;

/// Every option away from its default (stateless), UDP ranges.
pub const OPTIONS: &str = r#"
[options]
strict_tcp_flags = false
icmp_echo = true
fragments = "drop"
dhcp_client = false
established = false
new_requires_syn = false

[[allow]]
proto = "udp"
ports = [53, "6000-6010"]         # rules 0, 1
[[allow]]
ports = [80]                      # rule 2
[[allow]]
proto = "udp"
ports = ["60000-65535"]           # rule 3
[[allow]]
ports = ["1-21"]                  # rule 4
"#;

pub fn policy(name: &str, text: &str) -> Policy {
    parse_policy(name, text).unwrap_or_else(|e| panic!("{name}: {e}"))
}

/// What a policy's options and one open TCP port make of the structural cases.
#[derive(Clone, Copy)]
pub struct Env {
    pub strict: bool,
    pub echo: bool,
    pub frag_pass: bool,
    pub dhcp: bool,
    /// Connection state in use (ESTABLISHED/RELATED).
    pub stateful: bool,
    /// TCP that is not a SYN needs a tracked connection.
    pub syn_only: bool,
    /// An open-to-all TCP port and its rule id; `None`: no TCP port is open (the structural
    /// cases then go to [`Self::closed`]).
    pub tcp: Option<(u16, u32)>,
    /// An open-to-all UDP port and its rule id.
    pub udp: Option<(u16, u32)>,
    /// A TCP/UDP port no rule mentions.
    pub closed: u16,
}

impl Env {
    pub fn of(p: &Policy) -> Self {
        let c = p.options.config();
        let open = |proto: fw_policy::Proto| {
            p.rules
                .iter()
                .find(|r| r.proto == proto && r.from.is_empty())
                .map(|r| (r.ports.lo, r.id))
        };
        Env {
            strict: c.has(Config::STRICT_TCP_FLAGS),
            echo: c.has(Config::ICMP_ECHO),
            frag_pass: c.has(Config::FRAGMENTS_PASS),
            dhcp: c.has(Config::DHCP_CLIENT),
            stateful: c.has(Config::ESTABLISHED),
            syn_only: c.has(Config::ESTABLISHED | Config::NEW_REQUIRES_SYN)
                && c.has(Config::NEW_REQUIRES_SYN),
            tcp: open(fw_policy::Proto::Tcp),
            udp: open(fw_policy::Proto::Udp),
            closed: (9..)
                .find(|n| !p.rules.iter().any(|r| r.ports.contains(*n)))
                .expect("a port no rule mentions"),
        }
    }

    pub fn tcp_port(&self) -> u16 {
        self.tcp.map_or(self.closed, |t| t.0)
    }

    /// A well-formed SYN to [`Self::tcp_port`].
    pub fn tcp_ok(&self) -> Expect {
        self.tcp.map_or(Is(Reason::DefaultDrop), |t| Rule(t.1))
    }

    pub fn udp_port(&self) -> u16 {
        self.udp.map_or(self.closed, |u| u.0)
    }

    pub fn udp_ok(&self) -> Expect {
        self.udp.map_or(Is(Reason::DefaultDrop), |u| Rule(u.1))
    }

    pub fn later_fragment(&self) -> Expect {
        Is(if self.frag_pass {
            Reason::FragmentPassed
        } else {
            Reason::FragmentDropped
        })
    }

    pub fn echo(&self) -> Expect {
        Is(if self.echo {
            Reason::IcmpEcho
        } else {
            Reason::DefaultDrop
        })
    }

    pub fn dhcp(&self) -> Expect {
        Is(if self.dhcp {
            Reason::DhcpClient
        } else {
            Reason::DefaultDrop
        })
    }

    /// An ICMP error quoting a well-formed packet of no tracked flow (these tables start with
    /// empty flow tables).
    pub fn icmp_error(&self) -> Expect {
        Is(if self.stateful {
            Reason::IcmpUnrelated
        } else {
            Reason::DefaultDrop
        })
    }

    /// TCP with `flags` to a port whose well-formed SYN gets `ok`, with no tracked flow.
    ///
    /// Written from Linux conntrack's `tcp_valid_flags` table, independently of
    /// `fw_common::tcp`: PSH, ECE and CWR may accompany any valid combination. A SYN (without
    /// ACK) goes to the port lookup; any other combination the strict check lets through is
    /// not a new connection, so with `new_requires_syn` it is dropped (no flow is tracked
    /// here), and without it goes to the port lookup too.
    pub fn tcp_flags(&self, flags: u8, ok: Expect) -> Expect {
        let six = flags & 0x3f;
        if six == 0 {
            return Is(Reason::TcpNull);
        }
        if six == 0x3f {
            return Is(Reason::TcpXmas);
        }
        let base = flags & !(tcp::PSH | tcp::ECE | tcp::CWR);
        const VALID: [u8; 9] = [
            0x02, // SYN
            0x22, // SYN URG
            0x12, // SYN ACK
            0x04, // RST
            0x14, // RST ACK
            0x11, // FIN ACK
            0x31, // FIN ACK URG
            0x10, // ACK
            0x30, // ACK URG
        ];
        let valid = VALID.contains(&base);
        if self.strict && !valid {
            return Is(Reason::TcpBadFlags);
        }
        let syn = valid && base & (tcp::SYN | tcp::ACK) == tcp::SYN;
        if !syn && self.syn_only {
            return Is(Reason::TcpNotSyn);
        }
        ok
    }
}
