//! Walking each family's chain (iptables' side) and gathering what it asks of fw: the options
//! its live rules set and the ports it allows, each from the sources the walk found it
//! actually accepts (so a DROP of some sources before an ACCEPT restricts that ACCEPT).

use std::collections::{BTreeMap, HashMap};

use fw_common::{Family, L4, packet::IPPROTO_UDP, tcp};
use fw_policy::{
    BlockRule, Cidr, DefaultAction, FragmentPolicy, Limit, Options, Policy, PortRange, Proto, Rule,
};

use crate::{
    FamilyExt,
    addrset::AddrSet,
    iptables::{
        load::{InputRule, PolicyLine},
        rate::RateKind,
    },
    model::{Ct, Walk},
    translate::{Disp, disposition},
};

/// One family's chain: its rules, what each means for fw, and iptables' side of the check.
pub(crate) struct Run<'a> {
    pub fam: Family,
    pub rules: &'a [InputRule],
    pub policy: Option<&'a PolicyLine>,
    pub disps: Vec<Disp>,
    pub walk: Walk<'a>,
    /// Sources each rule accepts new connections from, by destination port class.
    accepted: HashMap<(u32, usize), AddrSet>,
    /// The same for ports the nat table redirects: (rule, protocol, pre-NAT port).
    pub nat_accepted: BTreeMap<(u32, u8, u16), AddrSet>,
    /// The rules drop IPv6 neighbour discovery or MLD (which fw always passes).
    pub drops_ndp: bool,
    /// Rules that accept ICMP echo requests (pings).
    accepts_echo: std::collections::HashSet<u32>,
    /// The destination port classes each rule accepted new connections in, by protocol.
    classes_of: [HashMap<u32, Vec<usize>>; 2],
    /// The sources its `[[block]]` entries drop ahead of every rule.
    blocked: AddrSet,
}

impl<'a> Run<'a> {
    pub(crate) fn new(
        fam: Family,
        rules: &'a [InputRule],
        policy: Option<&'a PolicyLine>,
        nat: &'a BTreeMap<(u8, u16), u16>,
    ) -> Self {
        let specs = rules.iter().map(|r| &r.spec).collect();
        let policy_accept = policy.is_none_or(|p| p.accept);
        let walk = Walk::new(fam, specs, policy_accept, nat, &[]);
        let disps = rules.iter().map(|r| disposition(&r.spec, fam)).collect();
        let mut accepted: HashMap<(u32, usize), AddrSet> = HashMap::new();
        let mut nat_accepted: BTreeMap<(u32, u8, u16), AddrSet> = BTreeMap::new();
        let mut drops_ndp = false;
        let mut classes_of: [HashMap<u32, Vec<usize>>; 2] = [HashMap::new(), HashMap::new()];
        let mut accepts_echo = std::collections::HashSet::new();
        let echo = crate::model::echo_types(fam).0;
        walk.for_each(|k| {
            let p = &k.pkt;
            if p.icmp_type().is_some_and(|(t, _)| t == echo) && p.ct == Ct::New {
                accepts_echo.extend(
                    k.painting
                        .segs
                        .iter()
                        .filter(|s| s.accept)
                        .filter_map(|s| s.by),
                );
            }
            if p.not_compared()
                && p.icmp_type().is_some()
                && k.painting.segs.iter().any(|s| !s.accept)
            {
                drops_ndp = true;
            }
            let new_conn = p.ct == Ct::New
                && match p.ip.l4 {
                    L4::Tcp { flags, .. } => flags == tcp::SYN,
                    L4::Udp { .. } => true,
                    _ => false,
                };
            let (Some(dc), true, true) = (k.dclass, new_conn, k.client_sport) else {
                return;
            };
            for s in k.painting.segs.iter().filter(|s| s.accept) {
                let Some(by) = s.by else { continue };
                match (p.nat_dport, p.ports()) {
                    (Some(_), Some((_, pre))) => nat_accepted
                        .entry((by, p.proto(), pre))
                        .or_default()
                        .insert(s.lo, s.hi),
                    _ => {
                        let pi = usize::from(p.proto() == IPPROTO_UDP);
                        let e = accepted.entry((by, dc)).or_insert_with(|| {
                            classes_of[pi].entry(by).or_default().push(dc);
                            AddrSet::default()
                        });
                        e.insert(s.lo, s.hi);
                    }
                }
            }
        });
        let mut run = Run {
            fam,
            rules,
            policy,
            disps,
            walk,
            accepted,
            nat_accepted,
            drops_ndp,
            classes_of,
            accepts_echo,
            blocked: AddrSet::default(),
        };
        let blocked: Vec<Cidr> = block_entries(&run).into_iter().flat_map(|b| b.0).collect();
        run.blocked = AddrSet::of(&blocked, fam);
        run
    }

    /// The limit on allow rule `i`, and the line it comes from: the rule's own rate match,
    /// or the nearest rate DROP ahead of it for the same protocol and ports (the
    /// `recent --update` / `hashlimit-above` pattern).
    pub(crate) fn limit_for(&self, i: usize) -> Option<(Limit, usize)> {
        let s = &self.rules[i].spec;
        if let Some(r) = &s.rate {
            return match r.kind {
                RateKind::Under => r.limit(self.fam).map(|l| (l, i)),
                _ => None,
            };
        }
        (0..i).rev().find_map(|j| {
            let o = &self.rules[j].spec;
            let r = o.rate.as_ref().filter(|r| r.kind == RateKind::Over)?;
            let same = o.proto == s.proto
                && (o.dports.is_empty() || o.dports == s.dports)
                && (o.src.is_none() || o.src == s.src);
            same.then(|| r.limit(self.fam).map(|l| (l, j)))?
        })
    }

    pub(crate) fn live(&self, i: usize) -> bool {
        self.walk.live(i)
    }

    pub(crate) fn rule(&self, i: usize) -> &InputRule {
        &self.rules[i]
    }

    /// The ports rule `i` allows (within `ranges`), each with the sources it accepts new
    /// connections from there (`None`: every source), adjacent ports with the same sources
    /// joined.
    fn allow_pieces(&self, i: usize, proto: Proto, ranges: &[PortRange]) -> Vec<Piece> {
        let pi = usize::from(proto == Proto::Udp);
        let mut out: Vec<(u16, u16, &AddrSet)> = Vec::new();
        let classes = self.classes_of[pi].get(&(i as u32));
        for &c in classes.into_iter().flatten() {
            let class = &self.walk.dclasses[pi][c];
            let Some(set) = self.accepted.get(&(i as u32, c)) else {
                continue;
            };
            for &(lo, hi) in &class.ranges {
                for r in ranges {
                    let (a, b) = (lo.max(r.lo), hi.min(r.hi));
                    if a <= b {
                        out.push((a, b, set));
                    }
                }
            }
        }
        out.sort_unstable_by_key(|p| p.0);
        let own = self.rules[i]
            .spec
            .src
            .as_ref()
            .filter(|(neg, _)| !neg)
            .map(|(_, l)| l);
        let mut pieces: Vec<Piece> = Vec::new();
        let mut last: Option<(u16, u16, &AddrSet)> = None;
        for p in out {
            match &mut last {
                Some(l) if l.1.checked_add(1) == Some(p.0) && l.2 == p.2 => l.1 = p.1,
                _ => {
                    pieces.extend(last.map(|l| self.piece(l, own)));
                    last = Some(p);
                }
            }
        }
        pieces.extend(last.map(|l| self.piece(l, own)));
        pieces
    }

    fn piece(&self, (lo, hi, set): (u16, u16, &AddrSet), own: Option<&Vec<Cidr>>) -> Piece {
        Piece {
            ports: PortRange { lo, hi },
            sources: sources_of(set, self.fam, own, &self.blocked),
        }
    }
}

/// The sources of a set: `None` for all (sources the kernel drops anyway aside); the rule's
/// own list when it is exactly that.
/// Blocked sources count as accepted here: the block drops them first either way.
pub(crate) fn sources_of(
    set: &AddrSet,
    fam: Family,
    own: Option<&Vec<Cidr>>,
    blocked: &AddrSet,
) -> Option<Vec<Cidr>> {
    let mut with_martians = set.clone();
    with_martians.union(&crate::check::martians(fam));
    with_martians.union(blocked);
    if with_martians.is_full(fam) {
        return None;
    }
    if let Some(own) = own
        && AddrSet::of(own, fam) == *set
    {
        return Some(
            own.iter()
                .copied()
                .filter(|c| family_of(c) == fam)
                .collect(),
        );
    }
    Some(set.to_cidrs(fam))
}

fn family_of(c: &Cidr) -> Family {
    match c {
        Cidr::V4(..) => Family::V4,
        Cidr::V6(..) => Family::V6,
    }
}

struct Piece {
    ports: PortRange,
    sources: Option<Vec<Cidr>>,
}

/// A port rule being gathered from both families' lines.
pub(crate) struct Gathered {
    pub proto: Proto,
    pub ports: PortRange,
    pub comment: Option<String>,
    /// Per family: `None` not allowed; `Some(None)` from everyone; `Some(Some(v))` from `v`.
    acc: [Option<Option<Vec<Cidr>>>; 2],
    pub lines: Vec<usize>,
    /// The rate limit the rules put on it (its own `-m limit`, or a rate DROP ahead of it).
    pub limit: Option<Limit>,
}

/// What the file asks of fw, gathered from the live rules.
#[derive(Default)]
pub(crate) struct Features {
    pub established: Vec<usize>,
    pub icmp_echo: Vec<usize>,
    pub strict: Vec<usize>,
    pub nrs: Vec<usize>,
    pub dhcp_drop: Vec<usize>,
    pub frag_drop: Vec<usize>,
    pub rules: Vec<Gathered>,
    index: HashMap<(Proto, PortRange, Option<String>), usize>,
    /// Ports allowed because the nat table redirects them: (pre-NAT port, rule's line).
    pub redirected: Vec<(Proto, u16, u16, usize)>,
    /// Source drops that become `[[block]]` entries: (sources, line, comment).
    pub blocks: Vec<(Vec<Cidr>, usize, Option<String>)>,
    /// Some family's INPUT chain lets in what no rule decides (policy ACCEPT).
    pub policy_accept: bool,
    /// What the rate limits became: (the match, the limit's words, how they differ) → the
    /// lines and ports.
    pub limit_notes: BTreeMap<(String, String, String), Vec<(usize, String)>>,
    /// Lines that limit a port differently from an earlier line (the first is kept).
    pub limit_conflicts: Vec<usize>,
    /// Rate-limited ping accepts (fw's limits are on allow rules, not on pings).
    pub unlimited_echo: Vec<usize>,
    /// Over-the-limit drops that guard no rule fw allows: their limit is not carried.
    pub unguarded: Vec<usize>,
}

impl Features {
    pub(crate) fn gather(runs: &[Run]) -> Self {
        let mut f = Features::default();
        for run in runs {
            // A chain that drops nothing filters nothing: that stays refused (the user almost
            // certainly meant to have a firewall); with drops, `default = "accept"` carries it.
            f.policy_accept |= run.policy.is_none_or(|p| p.accept)
                && (0..run.disps.len()).any(|i| run.live(i) && run.disps[i].drops());
            f.blocks.extend(block_entries(run));
            for (i, d) in run.disps.iter().enumerate() {
                let line = run.rule(i).line;
                let live = run.live(i);
                match d {
                    Disp::Established if live => f.established.push(line),
                    Disp::IcmpEcho if live && run.accepts_echo.contains(&(i as u32)) => {
                        f.icmp_echo.push(line);
                        if run.rule(i).spec.rate.is_some() {
                            f.unlimited_echo.push(line);
                        }
                    }
                    Disp::ScanStrict | Disp::InvalidState if live => f.strict.push(line),
                    Disp::NewNotSyn if live => f.nrs.push(line),
                    Disp::DhcpDrop => f.dhcp_drop.push(line),
                    Disp::FragmentsDrop => f.frag_drop.push(line),
                    Disp::Allow { proto, ranges } if live => {
                        let comment = run.rule(i).spec.comment.clone();
                        let mut pieces = run.allow_pieces(i, *proto, ranges);
                        if pieces.is_empty() {
                            // It accepts no new connection (earlier rules drop them all): fw's
                            // version still allows the port, and the check names the line
                            // that makes the difference.
                            let own = run.rule(i).spec.src.as_ref().filter(|(n, _)| !n);
                            pieces = ranges
                                .iter()
                                .map(|r| Piece {
                                    ports: *r,
                                    sources: own.map(|(_, l)| l.clone()),
                                })
                                .collect();
                        }
                        let limit = run.limit_for(i);
                        for p in pieces {
                            let pos =
                                f.add(run.fam, *proto, p.ports, comment.clone(), p.sources, line);
                            if let Some((l, by)) = &limit {
                                f.set_limit(pos, l, *by, run, line);
                            }
                        }
                    }
                    _ => {}
                }
            }
            let used: Vec<usize> = (0..run.rules.len())
                .filter(|&i| run.live(i) && matches!(run.disps[i], Disp::Allow { .. }))
                .filter_map(|i| run.limit_for(i).map(|(_, by)| run.rule(by).line))
                .collect();
            for r in run.rules {
                let over = r
                    .spec
                    .rate
                    .as_ref()
                    .is_some_and(|m| m.kind == RateKind::Over);
                if over && !used.contains(&r.line) && !f.unguarded.contains(&r.line) {
                    f.unguarded.push(r.line);
                }
            }
            for (&(i, proto, pre), set) in &run.nat_accepted {
                let line = run.rule(i as usize).line;
                let proto = if proto == IPPROTO_UDP {
                    Proto::Udp
                } else {
                    Proto::Tcp
                };
                let to = run.walk.nat_target(proto, pre);
                f.redirected.push((proto, pre, to, line));
                let comment = Some(format!("redirected to port {to} (nat table)"));
                let sources = sources_of(set, run.fam, None, &run.blocked);
                f.add(
                    run.fam,
                    proto,
                    PortRange::single(pre),
                    comment,
                    sources,
                    line,
                );
            }
        }
        f
    }

    fn add(
        &mut self,
        fam: Family,
        proto: Proto,
        ports: PortRange,
        comment: Option<String>,
        sources: Option<Vec<Cidr>>,
        line: usize,
    ) -> usize {
        let sources = sources.filter(|v| !v.iter().any(|c| c.prefix_len() == 0));
        let key = (proto, ports, comment.clone());
        let pos = *self.index.entry(key).or_insert_with(|| {
            self.rules.push(Gathered {
                proto,
                ports,
                comment,
                acc: [None, None],
                lines: Vec::new(),
                limit: None,
            });
            self.rules.len() - 1
        });
        let g = &mut self.rules[pos];
        let at = pos;
        if g.lines.last() != Some(&line) {
            g.lines.push(line);
        }
        let slot = &mut g.acc[fam.idx()];
        *slot = Some(match (slot.take(), sources) {
            (None, s) => s,
            (Some(None), _) | (_, None) => None,
            (Some(Some(mut a)), Some(b)) => {
                a.extend(b);
                Some(a)
            }
        });
        at
    }

    /// Put the limit of rule `by` (a line of `run`) on gathered rule `pos`, with its note.
    fn set_limit(&mut self, pos: usize, l: &Limit, by: usize, run: &Run, line: usize) {
        let g = &mut self.rules[pos];
        let r = run.rule(by);
        let Some(m) = &r.spec.rate else { return };
        let port = format!("{}/{}", g.ports, g.proto.name());
        match &mut g.limit {
            None => {
                g.limit = Some(l.clone());
                let key = (m.what.clone(), limit_toml(l), m.differences());
                let v = self.limit_notes.entry(key).or_default();
                if !v.contains(&(r.line, port.clone())) {
                    v.push((r.line, port));
                }
            }
            Some(have) => {
                // The other family's prefix, or a second line's limit on the same port.
                match run.fam {
                    Family::V4 => have.per4 = l.per4,
                    Family::V6 => have.per6 = l.per6,
                }
                let mut a = have.clone();
                let mut b = l.clone();
                (a.per4, a.per6, b.per4, b.per6) = (0, 0, 0, 0);
                if a != b && !self.limit_conflicts.contains(&line) {
                    self.limit_conflicts.push(line);
                }
            }
        }
    }

    fn rules(&self, families: &[Family]) -> Vec<Rule> {
        let both = families.len() == 2;
        let all4: Cidr = "0.0.0.0/0".parse().expect("literal");
        let all6: Cidr = "::/0".parse().expect("literal");
        self.rules
            .iter()
            .enumerate()
            .map(|(i, g)| {
                let from = if both {
                    let part = |a: &Option<Option<Vec<Cidr>>>, all: Cidr| match a {
                        None => (false, vec![]),
                        Some(None) => (true, vec![all]),
                        Some(Some(v)) => (false, v.clone()),
                    };
                    let (all_4, mut v4) = part(&g.acc[0], all4);
                    let (all_6, v6) = part(&g.acc[1], all6);
                    if all_4 && all_6 {
                        vec![]
                    } else {
                        v4.extend(v6);
                        v4
                    }
                } else {
                    g.acc
                        .iter()
                        .flatten()
                        .next()
                        .cloned()
                        .flatten()
                        .unwrap_or_default()
                };
                let mut seen = std::collections::HashSet::new();
                let from = from.into_iter().filter(|c| seen.insert(*c)).collect();
                Rule {
                    id: i as u32,
                    proto: g.proto,
                    ports: g.ports,
                    from,
                    comment: g.comment.clone(),
                }
            })
            .collect()
    }

    /// The policy for one combination of the choices the check tries: strict flags,
    /// new-requires-SYN, default accept.
    pub(crate) fn policy(
        &self,
        families: &[Family],
        strict: bool,
        nrs: bool,
        accept: bool,
    ) -> Policy {
        debug_assert!(self.rules.iter().all(|g| !g.lines.is_empty()));
        let options = Options {
            established: !self.established.is_empty(),
            new_requires_syn: nrs,
            strict_tcp_flags: strict,
            icmp_echo: !self.icmp_echo.is_empty(),
            fragments: if self.frag_drop.is_empty() {
                FragmentPolicy::Pass
            } else {
                FragmentPolicy::Drop
            },
            dhcp_client: self.dhcp_drop.is_empty(),
            ..Options::default()
        };
        let blocks = self
            .blocks
            .iter()
            .map(|(from, line, comment)| BlockRule {
                from: from.clone(),
                file: None,
                comment: Some(comment.clone().unwrap_or_else(|| format!("line {line}"))),
            })
            .collect();
        let limits = self
            .rules
            .iter()
            .enumerate()
            .filter_map(|(i, g)| g.limit.clone().map(|l| (i as u32, l)))
            .collect();
        Policy {
            options,
            limits,
            rules: self.rules(families),
            default: if accept {
                DefaultAction::Accept
            } else {
                DefaultAction::Drop
            },
            blocks,
            ..Policy::default()
        }
    }
}

/// The chain's drops of sources on every port and protocol that matter: live, for sources
/// the kernel does not drop anyway, and (under a DROP policy) ahead of something the chain
/// accepts. Each becomes a `[[block]]` entry with the line's own addresses (or, for `! -s`,
/// everything else).
pub(crate) fn block_entries(run: &Run) -> Vec<(Vec<Cidr>, usize, Option<String>)> {
    let martian = crate::check::martians(run.fam);
    let policy_accept = run.policy.is_none_or(|p| p.accept);
    let last_accept = (0..run.disps.len()).rev().find(|&j| {
        run.live(j)
            && matches!(
                run.disps[j],
                Disp::Allow { .. } | Disp::IcmpEcho | Disp::Established
            )
    });
    let mut out = Vec::new();
    for (i, d) in run.disps.iter().enumerate() {
        if !matches!(d, Disp::SourceDrop { .. }) || !run.live(i) {
            continue;
        }
        if !policy_accept && last_accept.is_none_or(|j| j < i) {
            continue;
        }
        let r = run.rule(i);
        let (neg, list) = match &r.spec.src {
            Some((neg, l)) => (*neg, l.as_slice()),
            None => (false, &[][..]),
        };
        let mut outside = AddrSet::of(list, run.fam);
        if neg {
            outside = outside.complement(run.fam);
        }
        outside.take(&martian);
        if outside.is_empty() {
            continue;
        }
        let from: Vec<Cidr> = if neg {
            outside.to_cidrs(run.fam)
        } else {
            list.iter()
                .copied()
                .filter(|c| family_of(c) == run.fam)
                .collect()
        };
        out.push((from, r.line, r.spec.comment.clone()));
    }
    out
}

/// A limit in the policy file's words: `limit = "6/30s", ban_after = 1, ...`.
pub(crate) fn limit_toml(l: &Limit) -> String {
    let mut w = Vec::new();
    if let Some(r) = l.rate {
        w.push(format!("limit = \"{r}\""));
    }
    if let Some(b) = l.burst {
        w.push(format!("burst = {b}"));
    }
    if l.rate.is_some() && l.per4 != 32 {
        w.push(format!("per = \"/{}\"", l.per4));
    }
    if let Some(t) = l.total {
        w.push(format!("total = \"{t}\""));
    }
    if let Some(n) = l.ban_after {
        w.push(format!(
            "ban_after = {n}, ban_for = \"{}\"",
            fw_policy::limit::duration_text(l.ban_secs)
        ));
    }
    w.join(", ")
}
