//! The check: fw's `decide()` (through [`Judge`]) against iptables' walk on every kind of
//! packet, and the lines to blame for each difference.

use std::collections::{BTreeMap, HashMap};

use fw_common::{Decision, Family, Reason, maps::slot_rule, tcp};
use fw_policy::{Cidr, Compiled, Policy};

use crate::{
    FamilyExt, ProblemKind,
    addrset::AddrSet,
    error::Problem,
    gather::{Features, Run},
    iptables::rule::{SYN_MASK, Spec, ct},
    judge::Judge,
    model::{Ct, Pkt, Seg},
    translate::{Disp, short, state_names},
};

/// A packet both sides decide differently.
pub(crate) struct Diff {
    pub run: usize,
    pub pkt: Pkt,
    pub ipt_accept: bool,
    pub ipt_by: Option<usize>,
    pub fw: Decision,
}

#[derive(Default)]
pub(crate) struct Outcome {
    pub errors: Vec<Diff>,
    pub harmless: Vec<Diff>,
    /// Pieces of packet space compared.
    pub checked: u64,
    /// Decisions fw's `decide()` made.
    pub decisions: u64,
}

/// (family, deciding rule, iptables' verdict, kind of harmless difference).
type KeepKey = (usize, Option<u32>, bool, Option<&'static str>);

/// Examples kept per [`KeepKey`]: enough to name the lines.
const KEEP: usize = 4;

/// Sources the kernel drops before INPUT whatever the rules say (martians): a loopback source
/// on another interface, multicast, limited broadcast, "this network" sources.
pub(crate) fn martians(f: Family) -> AddrSet {
    let list: &[&str] = match f {
        Family::V4 => &[
            "0.0.0.0/8",
            "127.0.0.0/8",
            "224.0.0.0/4",
            "255.255.255.255/32",
        ],
        Family::V6 => &["::1/128", "ff00::/8", "::ffff:0.0.0.0/96"],
    };
    let c: Vec<fw_policy::Cidr> = list
        .iter()
        .map(|s| fw_policy::Cidr::parse_masked(s).expect("literal"))
        .collect();
    AddrSet::of(&c, f)
}

/// Cut `segs` at `cuts` (sorted addresses where a new piece starts).
fn atoms<'s>(segs: &'s [Seg], cuts: &'s [u128]) -> impl Iterator<Item = (u128, u128, &'s Seg)> {
    segs.iter().flat_map(move |s| {
        let from = cuts.partition_point(|c| *c <= s.lo);
        let to = cuts.partition_point(|c| *c <= s.hi);
        let inner = &cuts[from..to];
        let starts = std::iter::once(s.lo).chain(inner.iter().copied());
        let ends = inner.iter().map(|c| c - 1).chain(std::iter::once(s.hi));
        starts.zip(ends).map(move |(lo, hi)| (lo, hi, s))
    })
}

fn cut_points(intervals: impl Iterator<Item = (u128, u128)>) -> Vec<u128> {
    let mut v: Vec<u128> = intervals
        .flat_map(|(lo, hi)| [Some(lo), hi.checked_add(1)])
        .flatten()
        .collect();
    v.sort_unstable();
    v.dedup();
    v
}

/// An address of the piece for examples: the documentation address if it is in, else one
/// past its start (not a network address).
fn sample(f: Family, lo: u128, hi: u128) -> u128 {
    let ex = crate::addrset::value(crate::addrset::example_addr(f));
    if lo <= ex && ex <= hi {
        ex
    } else if hi > lo {
        lo + 1
    } else {
        lo
    }
}

pub(crate) fn check(runs: &[Run], policy: &Policy) -> Outcome {
    let compiled = Compiled::new(policy, 0);
    let judge = Judge::new(&compiled);
    let mut out = Outcome::default();
    let mut kept: HashMap<KeepKey, usize> = HashMap::new();
    for (ri, run) in runs.iter().enumerate() {
        let fam = run.fam;
        let martian = martians(fam);
        // The blocks' bounds cut every painting: a block applies on every port.
        let blocked: Vec<Cidr> = policy.block_sources().copied().collect();
        let blocked = AddrSet::of(&blocked, fam);
        let martian_cuts = cut_points(martian.intervals().chain(blocked.intervals()));
        let bounds = match fam {
            Family::V4 => &judge.bounds_v4,
            Family::V6 => &judge.bounds_v6,
        };
        run.walk.for_each(|k| {
            if k.pkt.not_compared() {
                return;
            }
            let (d, by_source) = judge.decide(&k.pkt);
            let port_bounds = match (by_source, k.pkt.ports()) {
                (true, Some((_, dport))) => {
                    let proto = if k.pkt.proto() == fw_common::packet::IPPROTO_UDP {
                        fw_common::PortProto::Udp
                    } else {
                        fw_common::PortProto::Tcp
                    };
                    bounds.get(&(proto, dport))
                }
                _ => None,
            };
            let own;
            let cuts: &[u128] = match port_bounds {
                None => &martian_cuts,
                Some(b) => {
                    own = cut_points(
                        martian
                            .intervals()
                            .chain(blocked.intervals())
                            .chain(b.iter().copied()),
                    );
                    &own
                }
            };
            // The example address's piece first: the first difference found is the one shown.
            let ex = crate::addrset::value(crate::addrset::example_addr(fam));
            let mut list: Vec<(u128, u128, &Seg)> = atoms(&k.painting.segs, cuts).collect();
            if let Some(at) = list.iter().position(|(lo, hi, _)| *lo <= ex && ex <= *hi) {
                list[..=at].rotate_right(1);
            }
            for (lo, hi, seg) in list {
                if martian.contains(crate::addrset::addr(fam, lo)) {
                    continue;
                }
                out.checked += 1;
                let pkt = k.pkt.with_src(sample(fam, lo, hi));
                let fw = if by_source { judge.decide(&pkt).0 } else { d };
                if fw.pass == seg.accept {
                    continue;
                }
                let kind = pkt
                    .harmless(fw.pass)
                    .or_else(|| blocked_reply(&pkt, fw, seg.accept));
                let harmless = kind.is_some();
                let n = kept.entry((ri, seg.by, seg.accept, kind)).or_insert(0);
                *n += 1;
                if *n > KEEP {
                    continue;
                }
                let diff = Diff {
                    run: ri,
                    pkt,
                    ipt_accept: seg.accept,
                    ipt_by: seg.by.map(|b| b as usize),
                    fw,
                };
                if harmless {
                    out.harmless.push(diff);
                } else {
                    out.errors.push(diff);
                }
            }
        });
    }
    out.decisions = judge.decisions.get();
    out
}

/// A reply from a blocked source to a connection this host opened: iptables accepts it (its
/// ESTABLISHED rule comes before the DROP), fw's block drops the source in both directions.
pub(crate) fn blocked_reply(pkt: &Pkt, fw: Decision, ipt_accept: bool) -> Option<&'static str> {
    let reply = matches!(pkt.ct, Ct::Established | Ct::Related | Ct::InvalidTracked);
    (ipt_accept && !fw.pass && reply && fw.why() == Some(Reason::Blocked)).then_some(
        "replies from blocked sources to connections this host opened (a `[[block]]` entry drops the source in both directions; the rules' ESTABLISHED accept came before their DROP)",
    )
}

/// Why fw decides as it does, in words.
pub(crate) fn fw_why_text(d: Decision, f: &Features, policy: &Policy) -> String {
    let at = |v: &[usize]| {
        v.first()
            .map(|l| format!(" (line {l})"))
            .unwrap_or_default()
    };
    if let Some(k) = rule_of(d) {
        let r = &policy.rules[k];
        return format!(
            "the allowed port {}/{}{} accepts it",
            r.ports,
            r.proto.name(),
            at(&f.rules[k].lines)
        );
    }
    match d.why() {
        Some(Reason::TcpNull | Reason::TcpXmas) => "fw always drops NULL and XMAS scans".into(),
        Some(Reason::TcpBadFlags) => "strict_tcp_flags drops invalid flag combinations".into(),
        Some(Reason::TcpNotSyn) => format!(
            "new_requires_syn{} drops TCP that is neither a SYN nor part of a tracked connection, on every port",
            at(&f.nrs)
        ),
        Some(Reason::Established | Reason::Related) => {
            format!("established{} accepts it", at(&f.established))
        }
        Some(Reason::IcmpEcho) => format!("icmp_echo{} accepts it", at(&f.icmp_echo)),
        Some(Reason::SourceNotAllowed) => "its port is allowed only from other sources".into(),
        Some(Reason::IcmpUnrelated) => "it is an ICMP error about no connection fw tracks".into(),
        Some(r) if r.passes() => format!("fw always passes it: {}", r.describe()),
        _ => "no fw rule allows it".into(),
    }
}

/// The policy rule a decision counts under.
fn rule_of(d: Decision) -> Option<usize> {
    slot_rule(d.slot).map(|(_, i)| i as usize)
}

/// The line of the fw feature that accepted a packet.
fn fw_origin(d: Decision, f: &Features) -> Option<usize> {
    if let Some(k) = rule_of(d) {
        return f.rules.get(k).and_then(|g| g.lines.first().copied());
    }
    match d.why() {
        Some(Reason::Established | Reason::Related) => f.established.first().copied(),
        Some(Reason::IcmpEcho) => f.icmp_echo.first().copied(),
        _ => None,
    }
}

/// What about an accepting rule makes iptables drop packets fw's version of it accepts.
fn restriction(s: &Spec) -> Option<String> {
    if let Some((false, bits)) = s.states.first()
        && bits & (ct::ESTABLISHED | ct::RELATED) != ct::ESTABLISHED | ct::RELATED
    {
        return Some(format!(
            "this rule matches only conntrack state {}; fw's version of it {}",
            state_names(*bits),
            if bits & ct::NEW != 0 {
                "allows the port for every packet"
            } else {
                "(established) accepts ESTABLISHED and RELATED packets alike"
            }
        ));
    }
    if s.tcp_flags.contains(&(false, SYN_MASK, tcp::SYN)) {
        return Some(
            "this rule matches only SYN packets; fw allows the port for every packet (new_requires_syn needs established = true to drop the others)"
                .into(),
        );
    }
    None
}

enum Blame {
    Default {
        line: Option<usize>,
        value: String,
    },
    Line {
        line: usize,
        value: String,
        reason: String,
        text: String,
    },
}

fn blame(d: &Diff, runs: &[Run], f: &Features, policy: &Policy) -> Blame {
    let run = &runs[d.run];
    let example = d.pkt.describe();
    let fw_why = fw_why_text(d.fw, f, policy);
    let value_of = |i: usize| match &run.disps[i] {
        Disp::OtherDrop { value, .. }
        | Disp::SourceDrop { value }
        | Disp::Unexpressible { value, .. } => value.clone(),
        _ => short(&run.rule(i).text),
    };
    match (d.ipt_accept, d.ipt_by) {
        (false, Some(i)) => {
            let why = match &run.disps[i] {
                Disp::OtherDrop { .. } if !policy.default.is_drop() => "under `default = \"accept\"` fw drops only blocked sources (`[[block]]`), bans, rate limits and scan/flag drops: it cannot drop one port or protocol while accepting the rest. To import this, make the INPUT policy DROP (or end the chain with `-A INPUT -j DROP`) and allow what must stay open".into(),
                Disp::SourceDrop { .. } => "it drops these sources after rules that accept them, but a `[[block]]` entry drops a source ahead of everything fw allows".into(),
                Disp::OtherDrop { reason, .. } => reason.clone(),
                Disp::NewNotSyn if f.established.is_empty() => {
                    "fw drops non-SYN packets of no connection only with connection tracking (established = true), which these rules do not use".into()
                }
                Disp::CatchAllDrop => {
                    "it drops everything that reaches it, ahead of rules fw applies first".into()
                }
                _ => "fw applies its steps in a fixed order (scan drops, connection state, allowed ports, default drop), so this DROP cannot take precedence over what fw allows".into(),
            };
            Blame::Line {
                line: run.rule(i).line,
                value: value_of(i),
                reason: format!(
                    "{why}; here iptables drops {example}, which fw would accept ({fw_why})"
                ),
                text: run.rule(i).text.clone(),
            }
        }
        (false, None) => {
            // fw accepts through a feature taken from some line: that line over-reaches.
            let line = fw_origin(d.fw, f).unwrap_or(0);
            let (text, spec, fam) = runs
                .iter()
                .flat_map(|r| r.rules.iter().map(move |x| (x, r.fam)))
                .find(|(r, _)| r.line == line)
                .map(|(r, fam)| (r.text.clone(), Some(&r.spec), Some(fam)))
                .unwrap_or_default();
            let why = if fam.is_some_and(|f| f != run.fam) {
                format!(
                    "fw applies one policy to IPv4 and IPv6, and the {} rules do not accept it",
                    run.fam.name()
                )
            } else {
                spec.and_then(restriction)
                    .unwrap_or_else(|| "no rule accepts it before the default DROP".into())
            };
            Blame::Line {
                line,
                value: short(&text),
                reason: format!(
                    "fw would accept {example} ({fw_why}), which iptables drops: {why}"
                ),
                text,
            }
        }
        (true, Some(i)) if d.fw.why() == Some(Reason::Blocked) => {
            // fw's block of a source drops what an earlier line accepts: blame the block.
            let src = d.pkt.src();
            let block = f
                .blocks
                .iter()
                .find(|(from, _, _)| AddrSet::of(from, run.fam).contains(src));
            let (line, text) = block
                .and_then(|(_, l, _)| run.rules.iter().find(|r| r.line == *l))
                .map_or((run.rule(i).line, run.rule(i).text.clone()), |r| {
                    (r.line, r.text.clone())
                });
            Blame::Line {
                line,
                value: short(&text),
                reason: format!(
                    "it becomes a `[[block]]` entry, which fw applies ahead of every rule, but line {} accepts {example} before this DROP; move the DROP above that line (or narrow it) so the block means the same",
                    run.rule(i).line
                ),
                text,
            }
        }
        (true, Some(i)) => {
            let why = match &run.disps[i] {
                Disp::Unexpressible { reason, .. } => format!("{reason}; here "),
                _ => String::new(),
            };
            Blame::Line {
                line: run.rule(i).line,
                value: value_of(i),
                reason: format!("{why}iptables accepts {example}, which fw would drop ({fw_why})"),
                text: run.rule(i).text.clone(),
            }
        }
        (true, None) => {
            let p = run.policy;
            Blame::Default {
                line: p.map(|p| p.line),
                value: p.map_or_else(
                    || format!("no -P INPUT: {}'s default is ACCEPT", run.fam.tool()),
                    |p| p.text.clone(),
                ),
            }
        }
    }
}

/// The problems behind the differences: the default ACCEPT, and each line to blame (once).
pub(crate) fn problems(
    runs: &[Run],
    f: &Features,
    policy: &Policy,
    errors: &[Diff],
) -> Vec<Problem> {
    let mut out: BTreeMap<Option<usize>, Problem> = BTreeMap::new();
    for d in errors {
        match blame(d, runs, f, policy) {
            Blame::Default { line, value } => {
                let has_drops = runs[d.run]
                    .disps
                    .iter()
                    .enumerate()
                    .any(|(i, x)| runs[d.run].live(i) && x.drops());
                let message = format!(
                    "the INPUT chain's default is ACCEPT, so {} accepts {}, which fw would drop ({}). fw is default-drop: end the chain with `-P INPUT DROP` (or a final `-A INPUT -j DROP`/`REJECT`) and allow what must stay open{}",
                    runs[d.run].fam.tool(),
                    d.pkt.describe(),
                    fw_why_text(d.fw, f, policy),
                    if has_drops {
                        "; fw's `default = \"accept\"` keeps everything open except blocked sources, bans, rate limits and scan/flag drops, which cannot express these rules' drops either".to_string()
                    } else {
                        String::new()
                    }
                );
                out.entry(line).or_insert(Problem {
                    kind: ProblemKind::DefaultAccept,
                    line,
                    value,
                    message,
                    text: String::new(),
                });
            }
            Blame::Line {
                line,
                value,
                reason,
                text,
            } => {
                out.entry(Some(line)).or_insert(Problem {
                    kind: ProblemKind::NotEquivalent,
                    line: Some(line),
                    value,
                    message: reason,
                    text,
                });
            }
        }
    }
    out.into_values().collect()
}
