//! The fw policy: what a user writes (TOML), checked whole before anything is applied; live
//! edits of it; and [`Compiled`], exactly the map entries the XDP program reads for it. The
//! loader writes the kernel maps from a `Compiled`, and `fw explain`, the lockout guard and the
//! importers run `fw_common::decide()` over the same `Compiled`: one decision engine.

mod cidr;
pub mod compiled;
pub mod diff;
pub mod edit;
mod file;
pub mod ids;
#[cfg(any(test, feature = "test-util"))]
pub mod mirror;
mod ports;
mod seed;
pub mod toml_out;

#[cfg(test)]
mod decide_table;

pub use compiled::Compiled;

pub use cidr::Cidr;
pub use file::{PolicyError, check_comment, parse_policy, parse_policy_file};
pub use ports::PortRange;
pub use seed::SEED_POLICY;

use fw_common::{Config, PortProto};
use serde::{Deserialize, Serialize};

/// What to do with non-first IP fragments (they carry no ports).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum FragmentPolicy {
    /// Pass them: the kernel reassembles a datagram only together with its first fragment,
    /// which `fw` judged by its ports (and overlapping fragments are discarded by the kernel).
    #[default]
    Pass,
    /// Drop them: fragmented datagrams never arrive.
    Drop,
}

/// What the filter logs (`log` in `[options]`): records go to the kernel ring buffer that
/// `fw serve` forwards to syslog/journald and `fw log` follows.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum LogMode {
    #[default]
    Off,
    /// Dropped packets, at most `log_rate` a second (a kernel-side token bucket).
    Drops,
}

/// Default and bounds of `log_rate` (records per second).
pub const LOG_RATE_DEFAULT: u32 = 20;
pub const LOG_RATE_MAX: u32 = 100_000;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Options {
    /// Drop every TCP flag combination no real stack sends; `false` keeps exactly the seed's
    /// NULL and XMAS rules.
    pub strict_tcp_flags: bool,
    /// Answer pings (ICMP and ICMPv6 echo request).
    pub icmp_echo: bool,
    pub fragments: FragmentPolicy,
    /// Let DHCP/DHCPv6 replies reach this host's DHCP client (a cloud VM that loses its lease
    /// loses its address).
    pub dhcp_client: bool,
    /// Accept replies to connections this host opened and ICMP errors about them (the seed's
    /// `-m state --state ESTABLISHED,RELATED -j ACCEPT`).
    pub established: bool,
    /// Drop TCP that is not a plain SYN and belongs to no tracked connection, even on allowed
    /// ports (the seed's `! --syn -m state --state NEW -j DROP`).
    pub new_requires_syn: bool,
    /// Entries of each connection table (flows this host opened; inbound connections). The
    /// table of inbound handshakes in progress gets a quarter. Takes effect when the filter is
    /// attached afresh (`fw down` + `fw up`); a replace keeps the tables and their entries.
    pub max_flows: u32,
    /// Seconds an established TCP connection may stay idle (conntrack:
    /// nf_conntrack_tcp_timeout_established).
    pub tcp_established_timeout: u32,
    /// Seconds a UDP flow may wait for its first reply (nf_conntrack_udp_timeout).
    pub udp_timeout: u16,
    /// Seconds a UDP flow that got replies may stay idle (nf_conntrack_udp_timeout_stream).
    pub udp_stream_timeout: u16,
    /// Seconds a ping may wait for its reply (nf_conntrack_icmp_timeout).
    pub icmp_timeout: u16,
    /// Log dropped packets (`"drops"`) or not (`"off"`).
    pub log: LogMode,
    /// Drop-log records per second at most (also the burst).
    pub log_rate: u32,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            strict_tcp_flags: true,
            icmp_echo: false,
            fragments: FragmentPolicy::Pass,
            dhcp_client: true,
            established: true,
            new_requires_syn: true,
            max_flows: fw_common::maps::FLOWS_OUT_MAX,
            tcp_established_timeout: Config::default().tcp_established_timeout,
            udp_timeout: Config::default().udp_timeout,
            udp_stream_timeout: Config::default().udp_stream_timeout,
            icmp_timeout: Config::default().icmp_timeout,
            log: LogMode::Off,
            log_rate: LOG_RATE_DEFAULT,
        }
    }
}

impl Options {
    pub fn config(&self) -> Config {
        let mut flags = 0;
        if self.strict_tcp_flags {
            flags |= Config::STRICT_TCP_FLAGS;
        }
        if self.icmp_echo {
            flags |= Config::ICMP_ECHO;
        }
        if self.fragments == FragmentPolicy::Pass {
            flags |= Config::FRAGMENTS_PASS;
        }
        if self.dhcp_client {
            flags |= Config::DHCP_CLIENT;
        }
        if self.established {
            flags |= Config::ESTABLISHED;
        }
        if self.new_requires_syn {
            flags |= Config::NEW_REQUIRES_SYN;
        }
        Config {
            flags,
            tcp_established_timeout: self.tcp_established_timeout,
            udp_timeout: self.udp_timeout,
            udp_stream_timeout: self.udp_stream_timeout,
            icmp_timeout: self.icmp_timeout,
            _pad: 0,
        }
    }
}

/// One allow rule: a protocol, a port or port range, and optionally the only sources allowed.
/// Each rule has its own counter.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rule {
    /// Stable index: the rule's counter slot within a generation. Kept across live edits so
    /// counters survive `fw allow` / `fw deny`.
    pub id: u32,
    pub proto: Proto,
    pub ports: PortRange,
    /// Empty: every source.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub from: Vec<Cidr>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub comment: Option<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Proto {
    Tcp,
    Udp,
}

impl Proto {
    pub fn port_proto(self) -> PortProto {
        match self {
            Proto::Tcp => PortProto::Tcp,
            Proto::Udp => PortProto::Udp,
        }
    }

    pub fn name(self) -> &'static str {
        self.port_proto().name()
    }
}

impl std::str::FromStr for Proto {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "tcp" => Ok(Proto::Tcp),
            "udp" => Ok(Proto::Udp),
            _ => Err(format!(
                "unknown protocol {s:?} (expected \"tcp\" or \"udp\")"
            )),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct Policy {
    pub options: Options,
    pub rules: Vec<Rule>,
    /// Interfaces to filter (`interfaces = ["eth0"]` at the top of the file): what `fw restore`
    /// attaches to at boot, and `fw up` without `--iface`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub interfaces: Vec<String>,
}

impl Policy {
    /// The next free rule id: above every id in use, or the lowest unused one once that would
    /// leave the id space ([`fw_common::maps::RULE_IDS`]).
    pub fn next_id(&self) -> u32 {
        let next = self.rules.iter().map(|r| r.id + 1).max().unwrap_or(0);
        if next < fw_common::maps::RULE_IDS {
            return next;
        }
        (0..fw_common::maps::RULE_IDS)
            .find(|id| !self.rules.iter().any(|r| r.id == *id))
            .unwrap_or(fw_common::maps::RULE_IDS)
    }

    /// The policy in words: what it lets in, one line each, then what it drops.
    pub fn describe(&self) -> Vec<String> {
        let mut out = Vec::new();
        for r in &self.rules {
            out.push(r.describe());
        }
        let o = &self.options;
        if o.established {
            out.push(
                "replies to connections this host opened (TCP, UDP, ping) and ICMP errors about them"
                    .into(),
            );
        }
        if o.icmp_echo {
            out.push("ping (ICMP/ICMPv6 echo request) from anywhere".into());
        }
        if o.dhcp_client {
            out.push("DHCP/DHCPv6 replies to this host's DHCP client".into());
        }
        out.push("ARP, IPv6 neighbour discovery and other non-IP frames (never filtered)".into());
        if o.fragments == FragmentPolicy::Pass {
            out.push(
                "non-first IP fragments (reassembled only with a first fragment that passed)"
                    .into(),
            );
        }
        out
    }
}

/// `text` with control characters escaped (`\u{1b}`), safe to print on a terminal. Comments
/// are checked when a policy is read, but state written by older versions or other tools is
/// printed through this too.
pub fn display_safe(text: &str) -> std::borrow::Cow<'_, str> {
    if !text.chars().any(char::is_control) {
        return std::borrow::Cow::Borrowed(text);
    }
    std::borrow::Cow::Owned(
        text.chars()
            .map(|c| {
                if c.is_control() {
                    c.escape_unicode().to_string()
                } else {
                    c.to_string()
                }
            })
            .collect(),
    )
}

impl Policy {
    /// LPM entries this policy needs at most, per family: every port of a source-restricted
    /// rule times its sources, and for an open rule on such a port the two /0 entries. Counted
    /// without compiling (a policy of 1,000 CIDRs on every port would otherwise take minutes and
    /// gigabytes before failing).
    pub fn source_entries(&self) -> (u64, u64) {
        let mut v4 = 0u64;
        let mut v6 = 0u64;
        let restricted: Vec<&Rule> = self.rules.iter().filter(|r| !r.from.is_empty()).collect();
        for r in &self.rules {
            let ports = u64::from(r.ports.hi - r.ports.lo) + 1;
            if r.from.is_empty() {
                let overlap: u64 = restricted
                    .iter()
                    .filter(|s| s.proto == r.proto)
                    .map(|s| r.ports.overlap(&s.ports))
                    .sum::<u64>()
                    .min(ports);
                v4 += overlap;
                v6 += overlap;
                continue;
            }
            let n4 = r.from.iter().filter(|c| matches!(c, Cidr::V4(..))).count() as u64;
            let n6 = r.from.len() as u64 - n4;
            v4 += ports * n4;
            v6 += ports * n6;
        }
        (v4, v6)
    }

    /// Refuse a policy whose source entries do not fit one generation of the tries (the other
    /// generation holds the policy in force while this one is written).
    pub fn check_capacity(&self) -> Result<(), String> {
        let (v4, v6) = self.source_entries();
        let max = u64::from(fw_common::maps::SRC_V4_MAX / fw_common::maps::GENERATIONS);
        for (fam, n) in [("IPv4", v4), ("IPv6", v6)] {
            if n > max {
                return Err(format!(
                    "the source-restricted rules need up to {n} {fam} entries (each port of a rule times each of its sources), more than the {max} fw holds per policy: restrict fewer ports, or fewer sources per port"
                ));
            }
        }
        Ok(())
    }
}

impl Rule {
    pub fn describe(&self) -> String {
        let from = if self.from.is_empty() {
            "from anywhere".to_string()
        } else {
            let list: Vec<String> = self.from.iter().map(|c| c.to_string()).collect();
            format!("only from {}", list.join(", "))
        };
        let comment = self
            .comment
            .as_deref()
            .map(|c| format!("  ({})", display_safe(c)))
            .unwrap_or_default();
        format!("{}/{} {from}{comment}", self.ports, self.proto.name())
    }
}
