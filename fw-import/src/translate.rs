//! What each rule of a (flattened) INPUT chain means in fw's model.

use fw_common::{
    Family,
    packet::{IPPROTO_ICMP, IPPROTO_ICMPV6, IPPROTO_TCP, IPPROTO_UDP},
    tcp::{self, FlagClass, classify},
};
use fw_policy::{Cidr, PortRange, Proto};

use crate::{
    iptables::{
        load::matches_everything,
        rule::{SYN_MASK, Spec, Target, ct},
    },
    model,
};

/// What one INPUT rule means for fw.
#[derive(Clone, Debug)]
pub(crate) enum Disp {
    /// `-i lo`: fw never filters loopback.
    Loopback,
    /// `-m state --state ESTABLISHED,RELATED -j ACCEPT`.
    Established,
    /// A port allowed; from the sources the walk finds it accepts.
    Allow {
        proto: Proto,
        ranges: Vec<PortRange>,
    },
    IcmpEcho,
    /// Something fw lets through on its own.
    AlwaysPassed(&'static str),
    /// Drops NULL/XMAS only.
    ScanAlways,
    /// Drops invalid flag combinations (and maybe NULL/XMAS).
    ScanStrict,
    /// `! --syn -m state --state NEW -j DROP`.
    NewNotSyn,
    /// `-m conntrack --ctstate INVALID -j DROP`.
    InvalidState,
    DhcpDrop,
    FragmentsDrop,
    /// Drops everything that reaches it.
    CatchAllDrop,
    /// A drop fw has no rule for: fine only if fw drops those packets anyway.
    OtherDrop {
        value: String,
        reason: String,
    },
    /// A drop of some sources on every port and protocol (a blocklist entry).
    SourceDrop {
        value: String,
    },
    /// No `-j`: counts only.
    NoTarget,
    /// `-j RETURN` (or the end of a chain entered by goto) in a flattened chain.
    Return,
    /// An accept fw has no rule for: fine only if fw decides its packets the same anyway.
    Unexpressible {
        value: String,
        reason: String,
    },
}

impl Disp {
    /// Whether the rule drops what it matches.
    pub(crate) fn drops(&self) -> bool {
        matches!(
            self,
            Disp::ScanAlways
                | Disp::ScanStrict
                | Disp::NewNotSyn
                | Disp::InvalidState
                | Disp::DhcpDrop
                | Disp::FragmentsDrop
                | Disp::CatchAllDrop
                | Disp::OtherDrop { .. }
                | Disp::SourceDrop { .. }
        )
    }
}

/// The rule's text without the command in front (`iptables -A INPUT`).
pub(crate) fn short(text: &str) -> String {
    let words: Vec<&str> = text.split_whitespace().collect();
    let start = words
        .iter()
        .position(|w| matches!(*w, "-A" | "-I" | "--append" | "--insert" | "-R"))
        .map_or(0, |i| {
            // Skip the chain and an insert position.
            let mut j = i + 2;
            if words.get(j).is_some_and(|w| w.parse::<usize>().is_ok()) {
                j += 1;
            }
            j
        });
    words[start.min(words.len())..].join(" ")
}

fn join_cidrs(v: &[Cidr]) -> String {
    v.iter()
        .map(|c| c.to_string())
        .collect::<Vec<_>>()
        .join(",")
}

fn icmp_of(f: Family) -> u8 {
    match f {
        Family::V4 => IPPROTO_ICMP,
        Family::V6 => IPPROTO_ICMPV6,
    }
}

/// The flag bytes a list of `--tcp-flags` conditions lets through.
fn matched_flags(conds: &[(bool, u8, u8)]) -> Vec<u8> {
    (0..=255u8)
        .filter(|f| conds.iter().all(|(neg, m, c)| ((f & m) == *c) != *neg))
        .collect()
}

pub(crate) fn disposition(s: &Spec, fam: Family) -> Disp {
    let Some(target) = &s.target else {
        return Disp::NoTarget;
    };
    if matches!(target, Target::Skip(_) | Target::Return) {
        return Disp::Return;
    }
    if let Some((false, i)) = &s.in_iface
        && (i == "lo" || i == "lo+")
    {
        return Disp::Loopback;
    }
    let proto = s.proto.filter(|(neg, _)| !neg).map(|(_, p)| p);
    let plain = |s: &Spec| {
        s.src.is_none()
            && s.dports.is_empty()
            && s.sports.is_empty()
            && s.icmp.is_none()
            && s.fragment.is_none()
    };
    let dhcp = match fam {
        Family::V4 => (67, 68),
        Family::V6 => (547, 546),
    };
    let is_dhcp = proto == Some(IPPROTO_UDP)
        && s.sports == [(false, vec![(dhcp.0, dhcp.0)])]
        && s.dports == [(false, vec![(dhcp.1, dhcp.1)])]
        && s.src.is_none()
        && s.states.is_empty();
    match target {
        Target::Accept => {
            if s.states.len() == 1
                && !s.states[0].0
                && s.states[0].1 & ct::ESTABLISHED != 0
                && s.states[0].1 & !(ct::ESTABLISHED | ct::RELATED) == 0
                && s.proto.is_none()
                && s.tcp_flags.is_empty()
                && plain(s)
            {
                return Disp::Established;
            }
            if is_dhcp {
                return Disp::AlwaysPassed("DHCP replies: fw passes them with dhcp_client = true");
            }
            accept_disposition(s, fam, proto)
        }
        Target::Drop | Target::Reject => {
            if is_dhcp {
                return Disp::DhcpDrop;
            }
            if matches_everything(s) {
                return Disp::CatchAllDrop;
            }
            if fam == Family::V4 && s.fragment == Some(false) && {
                let mut bare = s.clone();
                bare.fragment = None;
                matches_everything(&bare)
            } {
                return Disp::FragmentsDrop;
            }
            let tcp_only = proto == Some(IPPROTO_TCP) && plain(s);
            if tcp_only
                && s.states == [(false, ct::NEW)]
                && s.tcp_flags == [(true, SYN_MASK, tcp::SYN)]
            {
                return Disp::NewNotSyn;
            }
            if (s.proto.is_none() || proto == Some(IPPROTO_TCP))
                && plain(s)
                && s.tcp_flags.is_empty()
                && s.states == [(false, ct::INVALID)]
            {
                return Disp::InvalidState;
            }
            if tcp_only && s.states.is_empty() && !s.tcp_flags.is_empty() {
                let flags = matched_flags(&s.tcp_flags);
                let real: Vec<u8> = flags
                    .iter()
                    .copied()
                    .filter(|f| matches!(classify(*f), FlagClass::Syn | FlagClass::Other))
                    .collect();
                if let Some(f) = real.first() {
                    return Disp::OtherDrop {
                        value: flag_part(s),
                        reason: format!(
                            "it drops TCP packets real stacks send ({}); fw drops only scan patterns",
                            model::flag_letters(*f)
                        ),
                    };
                }
                if flags
                    .iter()
                    .all(|f| matches!(classify(*f), FlagClass::Null | FlagClass::Xmas))
                {
                    return Disp::ScanAlways;
                }
                return Disp::ScanStrict;
            }
            if let Some((neg, list)) = &s.src {
                let only_src = Spec {
                    src: None,
                    ..s.clone()
                };
                if matches_everything(&only_src) {
                    return Disp::SourceDrop {
                        value: format!("{}-s {}", if *neg { "! " } else { "" }, join_cidrs(list)),
                    };
                }
            }
            let (value, reason) = if let Some((_, list)) = &s.src {
                (
                    format!("-s {}", join_cidrs(list)),
                    "fw has no blocklists: it cannot drop some sources ahead of what it allows"
                        .to_string(),
                )
            } else if !s.dports.is_empty() {
                (
                    "--dport".to_string(),
                    "fw has no DROP rules for ports: a port is allowed (to some or all sources) or not".to_string(),
                )
            } else {
                (
                    short_spec(s),
                    "fw has no DROP rules besides its scan patterns, so this DROP cannot take precedence over what fw allows".to_string(),
                )
            };
            Disp::OtherDrop { value, reason }
        }
        // Inlined while loading.
        Target::Chain(c) | Target::Goto(c) => Disp::Unexpressible {
            value: format!("-j {c}"),
            reason: "jumps to a user-defined chain".into(),
        },
        Target::Skip(_) | Target::Return => Disp::Return,
        Target::Nat(t) | Target::Other(t) => Disp::Unexpressible {
            value: format!("-j {t}"),
            reason: "a target that decides no verdict".into(),
        },
    }
}

fn flag_part(s: &Spec) -> String {
    s.tcp_flags
        .iter()
        .map(|(neg, m, c)| {
            format!(
                "{}--tcp-flags {} {}",
                if *neg { "! " } else { "" },
                crate::iptables::rule::tcp_flag_names(*m),
                crate::iptables::rule::tcp_flag_names(*c)
            )
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// A compact rendering of a spec's matches, for messages.
fn short_spec(s: &Spec) -> String {
    let mut v = Vec::new();
    if let Some((neg, p)) = s.proto {
        v.push(format!(
            "{}-p {}",
            if neg { "! " } else { "" },
            crate::iptables::rule::proto_name(p)
        ));
    }
    if !s.tcp_flags.is_empty() {
        v.push(flag_part(s));
    }
    for (neg, bits) in &s.states {
        v.push(format!(
            "{}--state {}",
            if *neg { "! " } else { "" },
            state_names(*bits)
        ));
    }
    if v.is_empty() {
        "-j DROP".into()
    } else {
        v.join(" ")
    }
}

pub(crate) fn state_names(bits: u8) -> String {
    let names = [
        (ct::NEW, "NEW"),
        (ct::ESTABLISHED, "ESTABLISHED"),
        (ct::RELATED, "RELATED"),
        (ct::INVALID, "INVALID"),
        (ct::UNTRACKED, "UNTRACKED"),
        (ct::NAT, "SNAT/DNAT"),
    ];
    names
        .iter()
        .filter(|(b, _)| bits & b != 0)
        .map(|(_, n)| *n)
        .collect::<Vec<_>>()
        .join(",")
}

fn accept_disposition(s: &Spec, fam: Family, proto: Option<u8>) -> Disp {
    let un = |value: String, reason: &str| Disp::Unexpressible {
        value,
        reason: reason.to_string(),
    };
    if let Some((true, p)) = s.proto {
        return un(
            format!("! -p {}", crate::iptables::rule::proto_name(p)),
            "fw cannot accept every protocol but one",
        );
    }
    for (neg, bits) in &s.states {
        if *neg && bits & ct::NEW != 0 || !*neg && bits & ct::NEW == 0 {
            return un(
                format!(
                    "{}--state {}",
                    if *neg { "! " } else { "" },
                    state_names(*bits)
                ),
                "it accepts no new connections; fw allows a port for new connections and the rest alike",
            );
        }
    }
    let Some(proto) = proto else {
        return match &s.src {
            Some((_, list)) => un(
                format!("-s {}", join_cidrs(list)),
                "it accepts every protocol and port from these sources; fw allows ports (from some or all sources), not whole hosts: list the ports",
            ),
            None => un(
                "-j ACCEPT".into(),
                "it accepts every packet that reaches it; fw is default-drop and allows ports",
            ),
        };
    };
    if proto == icmp_of(fam) {
        if let Some((_, list)) = &s.src {
            return un(
                format!("-s {}", join_cidrs(list)),
                "fw answers pings from everyone or no one (icmp_echo)",
            );
        }
        let echo = match fam {
            Family::V4 => 8,
            Family::V6 => 128,
        };
        return match s.icmp {
            None | Some((false, _, None)) if s.icmp.is_none_or(|(_, t, _)| t == echo) => {
                Disp::IcmpEcho
            }
            Some((false, t, _))
                if fam == Family::V6 && fw_common::decide::is_icmpv6_link_essential(t) =>
            {
                Disp::AlwaysPassed("fw always passes IPv6 neighbour discovery and MLD")
            }
            _ => un(
                "--icmp-type".into(),
                "fw accepts ICMP echo requests (icmp_echo) and, with established, ICMP errors about this host's connections; no other ICMP",
            ),
        };
    }
    let p = match proto {
        IPPROTO_TCP => Proto::Tcp,
        IPPROTO_UDP => Proto::Udp,
        other => {
            return un(
                format!("-p {}", crate::iptables::rule::proto_name(other)),
                "fw allows TCP and UDP ports and pings; other protocols are dropped",
            );
        }
    };
    if let Some((neg, r)) = s.sports.first() {
        return un(
            format!("{}--sport {}", if *neg { "! " } else { "" }, ranges_text(r)),
            "fw allows by destination port; it cannot match source ports",
        );
    }
    if s.fragment.is_some() {
        return un("-f".into(), "fw does not match fragments in rules");
    }
    if let Some(f) = s
        .tcp_flags
        .iter()
        .find(|f| **f != (false, SYN_MASK, tcp::SYN))
    {
        return un(
            flag_part(&Spec {
                tcp_flags: vec![*f],
                ..Spec::default()
            }),
            "fw cannot accept by TCP flags",
        );
    }
    let ranges: Vec<(u16, u16)> = match s.dports.as_slice() {
        [] => vec![(1, 65535)],
        [(false, r)] => r.clone(),
        [(true, r)] => {
            return un(
                format!("! --dport {}", ranges_text(r)),
                "fw cannot allow every port but some; list the ranges",
            );
        }
        _ => {
            return un("--dport".into(), "two port matches in one rule");
        }
    };
    let ranges: Vec<PortRange> = ranges
        .into_iter()
        .filter(|(_, hi)| *hi > 0)
        .map(|(lo, hi)| PortRange { lo: lo.max(1), hi })
        .collect();
    if ranges.is_empty() {
        return un("--dport 0".into(), "port 0 is not a port fw can allow");
    }
    Disp::Allow { proto: p, ranges }
}

fn ranges_text(r: &[(u16, u16)]) -> String {
    r.iter()
        .map(|(a, b)| {
            if a == b {
                a.to_string()
            } else {
                format!("{a}:{b}")
            }
        })
        .collect::<Vec<_>>()
        .join(",")
}
