//! The fw policy: what a user writes (TOML), checked whole before anything is applied; live
//! edits of it; and [`Compiled`], exactly the map entries the XDP program reads for it. The
//! loader writes the kernel maps from a `Compiled`, and `fw explain`, the lockout guard and the
//! importers run `fw_common::decide()` over the same `Compiled`: one decision engine.

pub mod blocks;
pub mod blocks_expand;
mod cidr;
pub mod compiled;
pub mod diff;
pub mod edit;
mod file;
pub mod ids;
pub mod limit;
#[cfg(any(test, feature = "test-util"))]
pub mod mirror;
mod ports;
mod seed;
pub mod toml_out;

#[cfg(test)]
mod decide_table;
#[cfg(test)]
mod flood_table;

pub use compiled::Compiled;

pub use cidr::Cidr;
pub use file::{PolicyError, check_comment, parse_policy, parse_policy_file, parse_policy_in};
pub use limit::{Limit, Rate};
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

/// Whether SYNs to allowed TCP ports are answered with SYN cookies from XDP (the socket layer
/// then never sees a spoofed SYN flood; see `fw_common::syncookie`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum SynCookies {
    /// Every SYN goes to the kernel (which answers with cookies of its own when a listener's
    /// queue overflows, `net.ipv4.tcp_syncookies`).
    #[default]
    Off,
    /// Answer from XDP while SYNs arrive faster than `syn_cookies_threshold`.
    Auto,
    /// Answer from XDP whenever the listener accepts cookies.
    Always,
}

impl SynCookies {
    pub fn name(self) -> &'static str {
        match self {
            SynCookies::Off => "off",
            SynCookies::Auto => "auto",
            SynCookies::Always => "always",
        }
    }
}

/// `syn_cookies_threshold` when the policy does not say (SYNs per second, every allowed TCP
/// port and source together).
pub const DEFAULT_SYN_COOKIES_THRESHOLD: u32 = 1000;
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
    /// Answer SYNs to allowed TCP ports with SYN cookies from XDP: `"off"`, `"auto"` or
    /// `"always"` (see [`SynCookies`] and the README).
    pub syn_cookies: SynCookies,
    /// `syn_cookies = "auto"`: SYNs per second (allowed TCP ports, all sources together) above
    /// which fw answers.
    pub syn_cookies_threshold: u32,
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
            syn_cookies: SynCookies::Off,
            syn_cookies_threshold: DEFAULT_SYN_COOKIES_THRESHOLD,
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
        match self.syn_cookies {
            SynCookies::Off => {}
            SynCookies::Auto => flags |= Config::SYN_COOKIES | Config::SYN_COOKIES_AUTO,
            SynCookies::Always => flags |= Config::SYN_COOKIES,
        }
        Config {
            flags,
            tcp_established_timeout: self.tcp_established_timeout,
            udp_timeout: self.udp_timeout,
            udp_stream_timeout: self.udp_stream_timeout,
            icmp_timeout: self.icmp_timeout,
            ban_len4: 0,
            ban_len6: 0,
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

/// What happens to traffic no rule admits.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum DefaultAction {
    /// Dropped (iptables INPUT policy DROP): the allow rules are an allowlist.
    #[default]
    Drop,
    /// Let in (INPUT policy ACCEPT, xdp-filter's deny mode): only block lists, bans, scan/flag
    /// drops and rate limits drop anything.
    Accept,
}

impl DefaultAction {
    pub fn is_drop(&self) -> bool {
        *self == DefaultAction::Drop
    }
}

/// A `[[block]]` entry: sources dropped first, on every port.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlockRule {
    /// The sources (for `file`: what the file held when the policy was read).
    pub from: Vec<Cidr>,
    /// The list file these came from (kept so `fw save` writes the file name, not its lines).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub comment: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct Policy {
    pub options: Options,
    pub rules: Vec<Rule>,
    /// Interfaces to filter (`interfaces = ["eth0"]` at the top of the file): what `fw restore`
    /// attaches to at boot, and `fw up` without `--iface`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub interfaces: Vec<String>,
    /// `default = "drop"` (the default) or `"accept"`.
    #[serde(default, skip_serializing_if = "DefaultAction::is_drop")]
    pub default: DefaultAction,
    /// Rate limits, by rule id (a rule without an entry has none). Stored as a list of
    /// `[id, limit]` pairs: a map with number keys does not survive serde's `flatten` (the state
    /// file flattens the policy record).
    #[serde(
        default,
        skip_serializing_if = "std::collections::BTreeMap::is_empty",
        with = "limit_pairs"
    )]
    pub limits: std::collections::BTreeMap<u32, Limit>,
    /// `[[block]]` entries.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub blocks: Vec<BlockRule>,
}

impl Policy {
    /// The kernel's options for this policy: [`Options::config`], the default action and the
    /// ban prefix lengths.
    pub fn config(&self) -> Config {
        let mut c = self.options.config();
        if self.default == DefaultAction::Accept {
            c.flags |= Config::DEFAULT_ACCEPT;
        }
        let (b4, b6) = self.ban_lens();
        c.ban_len4 = b4;
        c.ban_len6 = b6;
        c
    }

    /// The per-source prefix lengths bans use (0: no rule bans), per family. [`Policy::check_limits`]
    /// makes sure all banning rules agree.
    pub fn ban_lens(&self) -> (u8, u8) {
        self.live_limits()
            .filter(|(_, l)| l.ban_after.is_some())
            .map(|(_, l)| (l.per4, l.per6))
            .next()
            .unwrap_or((0, 0))
    }

    /// The limits of rules that exist.
    pub fn live_limits(&self) -> impl Iterator<Item = (&Rule, &Limit)> {
        self.rules
            .iter()
            .filter_map(|r| self.limits.get(&r.id).map(|l| (r, l)))
    }

    /// Limits that cannot work as written: each one alone ([`Limit::check`]), bans on rules
    /// where no handshake proves the source (UDP, no connection state), and banning rules that
    /// disagree on the per-source prefix.
    pub fn check_limits(&self) -> Result<(), String> {
        let mut ban_lens: Option<(u8, u8)> = None;
        for (r, l) in self.live_limits() {
            l.check().map_err(|e| format!("{}: {e}", r.describe()))?;
            if l.ban_after.is_none() {
                continue;
            }
            if r.proto != Proto::Tcp || !self.options.established {
                return Err(format!(
                    "{}: bans need TCP and established = true: fw bans only sources that completed a handshake, because any other packet's source can be forged (and a forged source would get someone else banned)",
                    r.describe()
                ));
            }
            match ban_lens {
                Some(b) if b != (l.per4, l.per6) => {
                    return Err(format!(
                        "{}: every rule that bans must use the same per-source prefixes (here /{} and /{}, elsewhere /{} and /{})",
                        r.describe(),
                        l.per4,
                        l.per6,
                        b.0,
                        b.1
                    ));
                }
                _ => ban_lens = Some((l.per4, l.per6)),
            }
        }
        if self.default == DefaultAction::Accept && self.options.new_requires_syn {
            return Err("default = \"accept\" with new_requires_syn = true would drop every connection to ports no rule names after its SYN: set new_requires_syn = false".into());
        }
        Ok(())
    }

    /// Sources of the policy's `[[block]]` entries.
    pub fn block_sources(&self) -> impl Iterator<Item = &Cidr> {
        self.blocks.iter().flat_map(|b| b.from.iter())
    }

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
            match self.limits.get(&r.id) {
                Some(l) => out.push(format!("{}; limit {}", r.describe(), l.describe())),
                None => out.push(r.describe()),
            }
        }
        if self.default == DefaultAction::Accept {
            out.push(
                "everything else (default accept): only block lists, bans, scan/flag drops and rate limits drop"
                    .into(),
            );
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
        match o.syn_cookies {
            SynCookies::Off => {}
            SynCookies::Auto => out.push(format!(
                "SYNs to these TCP ports answered with SYN cookies by fw while more than {} a second arrive (syn_cookies = \"auto\")",
                o.syn_cookies_threshold
            )),
            SynCookies::Always => out.push(
                "SYNs to these TCP ports answered with SYN cookies by fw (syn_cookies = \"always\")"
                    .into(),
            ),
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

mod limit_pairs {
    use std::collections::BTreeMap;

    use serde::{Deserialize, Deserializer, Serializer};

    use crate::Limit;

    pub fn serialize<S: Serializer>(m: &BTreeMap<u32, Limit>, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(m.iter())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<BTreeMap<u32, Limit>, D::Error> {
        Ok(Vec::<(u32, Limit)>::deserialize(d)?.into_iter().collect())
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
