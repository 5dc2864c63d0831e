//! A successful import in words: what became of each line, the notes, and the policy file
//! with comments tracing each rule and option to its lines.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use fw_policy::{
    Policy,
    toml_out::{Annotations, to_toml},
};

use crate::{
    Family, FamilyExt, Imported,
    check::Outcome,
    gather::{Features, Run},
    iptables::{load::LineLog, rate::RateKind, rule::Target},
    lines_text,
    translate::Disp,
};

pub(crate) struct Report<'a> {
    pub file: &'a str,
    /// "iptables", "nftables" or "ufw".
    pub tool: &'a str,
    pub loaded_log: &'a [LineLog],
    /// Notes the loader made (skipped lines, interfaces, nat, ...).
    pub loaded_notes: &'a [String],
    pub runs: &'a [Run<'a>],
    pub features: &'a Features,
    pub policy: &'a Policy,
    pub families: &'a [Family],
    /// The check's result (its differences are all harmless).
    pub outcome: &'a Outcome,
    /// The strict / new_requires_syn values the rules alone suggested.
    pub suggested: (bool, bool),
}

/// Lines quoted above one `[[allow]]` table at most.
const LINES_PER_RULE: usize = 8;

impl Report<'_> {
    pub(crate) fn finish(self) -> Imported {
        let f = self.features;
        let o = &self.policy.options;
        let mut notes: Vec<String> = self.loaded_notes.to_vec();
        let mut log: Vec<LineLog> = self.loaded_log.to_vec();
        let mut rejects: Vec<usize> = Vec::new();
        let mut loopback = false;
        let mut invalid_lines: Vec<usize> = Vec::new();
        let mut scan_only: Vec<usize> = Vec::new();
        for run in self.runs {
            for (i, d) in run.disps.iter().enumerate() {
                let r = run.rule(i);
                if r.spec.target == Some(Target::Reject) {
                    rejects.push(r.line);
                }
                let live = run.live(i);
                let dead = "no effect: earlier rules decide every packet it matches";
                let what: String = match d {
                    Disp::Loopback if r.spec.target == Some(Target::Accept) => {
                        loopback = true;
                        "loopback: fw never filters lo, nothing needed".into()
                    }
                    Disp::Loopback => {
                        notes.push(format!(
                            "Line {} drops loopback traffic; fw never filters lo, so it passes.",
                            r.line
                        ));
                        loopback = true;
                        "loopback: fw never filters lo, so this drop does not carry over".into()
                    }
                    Disp::Established if live => "options.established = true".into(),
                    Disp::Allow { proto, ranges, .. } if live => {
                        let r: Vec<String> = ranges.iter().map(|r| format!("{r}/{}", proto.name())).collect();
                        format!("[[allow]] {}", r.join(", "))
                    }
                    Disp::IcmpEcho if live => "options.icmp_echo = true".into(),
                    Disp::AlwaysPassed(w) => (*w).into(),
                    Disp::ScanAlways => {
                        scan_only.push(r.line);
                        "fw always drops NULL and XMAS scans".into()
                    }
                    Disp::ScanStrict | Disp::InvalidState => {
                        if matches!(d, Disp::InvalidState) {
                            invalid_lines.push(r.line);
                        }
                        if o.strict_tcp_flags && live {
                            "options.strict_tcp_flags = true".into()
                        } else {
                            "no effect in fw: every packet it drops fw drops as well".into()
                        }
                    }
                    Disp::NewNotSyn if o.new_requires_syn && live => "options.new_requires_syn = true".into(),
                    Disp::NewNotSyn => "no effect where it stands: what it drops is dropped anyway".into(),
                    Disp::DhcpDrop => "options.dhcp_client = false".into(),
                    Disp::FragmentsDrop => "options.fragments = \"drop\"".into(),
                    Disp::CatchAllDrop => "drops the rest: fw's default DROP".into(),
                    Disp::SourceDrop { .. } if f.blocks.iter().any(|b| b.1 == r.line) => {
                        let b = f.blocks.iter().find(|b| b.1 == r.line).map(|b| &b.0);
                        let from: Vec<String> = b.into_iter().flatten().map(|c| c.to_string()).collect();
                        let more = from.len().saturating_sub(4);
                        let tail = if more > 0 { format!(" and {more} more") } else { String::new() };
                        format!("[[block]] {}{tail}", from[..from.len().min(4)].join(", "))
                    }
                    Disp::OtherDrop { .. } | Disp::SourceDrop { .. } => {
                        "drops only packets fw drops anyway: nothing needed".into()
                    }
                    Disp::NoTarget | Disp::Return if r.spec.rate.as_ref().is_some_and(|m| m.kind == RateKind::Record) => {
                        "records sources for the rate limit that follows: part of that limit".into()
                    }
                    Disp::NoTarget | Disp::Return if r.spec.rate.as_ref().is_some_and(|m| m.kind == RateKind::Over) => {
                        "drops over a rate: the limit of the allow rule it guards (see the notes)".into()
                    }
                    Disp::Return if r.spec.rate.is_some() => "a rate match without a verdict: no effect".into(),
                    Disp::NoTarget => "no target (counts packets only): no effect".into(),
                    Disp::Return => "returns: the rules after it see only what it does not match".into(),
                    Disp::Unexpressible { .. } if live => {
                        "fw has no rule like it, but decides the packets it matches the same way (see the notes)".into()
                    }
                    _ => {
                        if r.spec.target == Some(Target::Accept) && r.line != 0 {
                            notes.push(format!(
                                "line {} accepts nothing: earlier rules decide every packet it matches, so it is left out.",
                                r.line
                            ));
                        }
                        dead.into()
                    }
                };
                log.push(LineLog {
                    line: r.line,
                    text: r.text.clone(),
                    what,
                });
            }
        }
        log.sort_by_key(|l| l.line);

        // Harmless differences, by kind.
        let mut kinds: BTreeMap<(bool, &'static str), BTreeSet<Option<usize>>> = BTreeMap::new();
        for d in &self.outcome.harmless {
            let fw_accepts = !d.ipt_accept;
            let kind = d
                .pkt
                .harmless(fw_accepts)
                .or_else(|| crate::check::blocked_reply(&d.pkt, d.fw, d.ipt_accept));
            if let Some(k) = kind {
                let line = d.ipt_by.map(|i| self.runs[d.run].rule(i).line);
                kinds.entry((fw_accepts, k)).or_default().insert(line);
            }
        }
        for ((fw_accepts, k), lines) in kinds {
            let named: Vec<usize> = lines.iter().flatten().copied().collect();
            let mut by = lines_text(&named);
            if lines.contains(&None) {
                if !by.is_empty() {
                    by.push_str(" and ");
                }
                by.push_str("the default policy");
            }
            notes.push(if fw_accepts {
                format!("fw accepts {k}, which iptables drops ({by}).")
            } else {
                format!("fw drops {k}, which iptables accepts ({by}).")
            });
        }
        for ((what, words, diff), at) in &f.limit_notes {
            let lines: Vec<usize> = at.iter().map(|a| a.0).collect();
            let mut ports: Vec<&str> = at.iter().map(|a| a.1.as_str()).collect();
            ports.dedup();
            let more = ports.len().saturating_sub(6);
            let ports = if more > 0 {
                format!("{} and {more} more", ports[..6].join(", "))
            } else {
                ports.join(", ")
            };
            notes.push(format!(
                "`{what}` ({}) becomes `{words}` on {ports}: {diff}. The check compared what the rules decide below the limit.",
                lines_text(&lines)
            ));
        }
        if !f.unlimited_echo.is_empty() {
            notes.push(format!(
                "The rate limit on ping ({}) is not carried: fw's limits belong to allow rules; with icmp_echo = true it answers every echo request (the kernel's own icmp_ratelimit still applies to the replies).",
                lines_text(&f.unlimited_echo)
            ));
        }
        if !f.unguarded.is_empty() {
            notes.push(format!(
                "The rate limits of {} guard no port fw allows (under `default = \"accept\"`, or ahead of a rule fw does not carry), so they are not carried: below the limit they drop nothing, which is what the check compared. Add an `[[allow]]` with a `limit` for the port to keep them.",
                lines_text(&f.unguarded)
            ));
        }
        if !f.limit_conflicts.is_empty() {
            notes.push(format!(
                "{} limit ports differently from an earlier line; fw has one limit per rule: the first is kept.",
                lines_text(&f.limit_conflicts)
            ));
        }
        for (proto, pre, to, line) in &f.redirected {
            notes.push(format!(
                "Port {pre}/{} is allowed because the nat table redirects it to port {to} (line {line}): fw sees packets before NAT, so the original port is the one it must let in.",
                proto.name()
            ));
        }
        if !rejects.is_empty() {
            notes.push(format!(
                "REJECT ({}): fw drops silently; it sends no ICMP error or TCP reset.",
                lines_text(&rejects)
            ));
        }
        if !loopback {
            notes.push(
                "These rules do not accept loopback traffic (-i lo); fw never filters lo, so it passes.".into(),
            );
        }
        if !invalid_lines.is_empty() {
            notes.push(format!(
                "conntrack's INVALID ({}) also covers TCP segments outside the window; fw does not track windows and judges those by port.",
                lines_text(&invalid_lines)
            ));
        }
        match self.families {
            [one] => {
                let other = if *one == Family::V4 { Family::V6 } else { Family::V4 };
                notes.push(format!(
                    "{} has {} rules only; fw applies this policy to {} too: ports open to everyone are open on {} as well, and rules with sources admit only the sources listed.",
                    self.file,
                    one.name(),
                    other.name(),
                    other.name()
                ));
            }
            _ => notes.push(
                "IPv4 and IPv6 rules are merged: a port allowed to everyone in one family only is allowed from 0.0.0.0/0 or ::/0.".into(),
            ),
        }
        for run in self.runs {
            if run.fam == Family::V6 && run.drops_ndp {
                notes.push(
                    "These IPv6 rules drop neighbour discovery or MLD; fw always passes them (IPv6 does not work without).".into(),
                );
            }
        }

        let mut ann = Annotations::default();
        ann.header.push(format!(
            "fw policy imported from {} by `fw import {}`.",
            self.file,
            match self.tool {
                "nftables" => "nft",
                "ufw" => "ufw",
                _ => "iptables",
            }
        ));
        ann.header.push(String::new());
        let cases = self.outcome.checked;
        ann.header.push(format!(
            "Checked on {cases} kinds of packets these rules tell apart (each port and source boundary, every TCP"
        ));
        ann.header.push(
            "flag combination, each connection state, ICMP types, other protocols): fw decides as iptables does,"
                .into(),
        );
        ann.header.push(if notes.is_empty() {
            "without exception.".into()
        } else {
            "except as the notes below say.".into()
        });
        ann.header.push(String::new());
        ann.header.push(match self.tool {
            "nftables" => "nftables rules (by handle) and what became of them:".into(),
            "ufw" => {
                "ufw's rules (by line; 0: ufw's own framework) and what became of them:".into()
            }
            _ => "iptables lines and what became of them:".into(),
        });
        for l in &log {
            ann.header.push(format!("  {:>4}: {}", l.line, l.text));
            ann.header.push(format!("        -> {}", l.what));
        }
        let mut seen = std::collections::HashSet::new();
        notes.retain(|n| seen.insert(n.clone()));
        if !notes.is_empty() {
            ann.header.push(String::new());
            ann.header.push("Notes:".into());
            for n in &notes {
                ann.header.push(format!("  - {n}"));
            }
        }
        let mut opt = |k: &str, v: String| {
            ann.options.entry(k.to_string()).or_default().push(v);
        };
        opt(
            "established",
            if f.established.is_empty() {
                "Imported: false — no rule accepts ESTABLISHED packets.".into()
            } else {
                format!("Imported from {}.", lines_text(&f.established))
            },
        );
        let (s0, _) = self.suggested;
        opt(
            "new_requires_syn",
            match (o.new_requires_syn, f.nrs.is_empty()) {
                (true, false) => format!("Imported from {}.", lines_text(&f.nrs)),
                (true, true) => "Imported: true — the rules accept TCP only as SYN or ESTABLISHED, which is what this does.".into(),
                (false, true) => "Imported: false — no `! --syn -m state --state NEW -j DROP` rule.".into(),
                (false, false) if f.established.is_empty() => format!(
                    "Imported: false — {} needs connection state, which these rules do not accept (and where it stands it changes nothing).",
                    lines_text(&f.nrs)
                ),
                (false, false) => format!(
                    "Imported: false — {} comes after the ACCEPT rules, so it only drops what is dropped anyway.",
                    lines_text(&f.nrs)
                ),
            },
        );
        opt(
            "strict_tcp_flags",
            match (o.strict_tcp_flags, s0) {
                (true, true) => format!("Imported: true, from {}.", lines_text(&f.strict)),
                (true, false) => "Imported: true — iptables drops invalid flag combinations here (conntrack marks them INVALID and no rule accepts those).".into(),
                (false, _) if !scan_only.is_empty() => format!(
                    "Imported: false — the rules drop only NULL and XMAS ({}), which fw always drops; true would also drop every other invalid combination.",
                    lines_text(&scan_only)
                ),
                (false, _) => "Imported: false — the rules drop no invalid flag combinations.".into(),
            },
        );
        opt(
            "icmp_echo",
            if f.icmp_echo.is_empty() {
                "Imported: false — no rule accepts echo requests.".into()
            } else {
                format!("Imported from {}.", lines_text(&f.icmp_echo))
            },
        );
        opt(
            "fragments",
            if f.frag_drop.is_empty() {
                "Imported: the default — iptables sees fragments reassembled (conntrack), so the rules have no say.".into()
            } else {
                format!("Imported from {}.", lines_text(&f.frag_drop))
            },
        );
        opt(
            "dhcp_client",
            if f.dhcp_drop.is_empty() {
                "Imported: true — iptables never sees DHCPv4 replies (clients read them from a packet socket), but fw runs before that.".into()
            } else {
                format!("Imported: false, from {}.", lines_text(&f.dhcp_drop))
            },
        );
        let texts: HashMap<usize, &str> = log.iter().map(|x| (x.line, x.text.as_str())).collect();
        for (k, g) in f.rules.iter().enumerate() {
            // Rules from the same lines (a multiport rule) share one comment and one table.
            if k > 0 && f.rules[k - 1].lines == g.lines {
                continue;
            }
            let mut seen = std::collections::HashSet::new();
            let distinct: Vec<usize> = g
                .lines
                .iter()
                .copied()
                .filter(|l| seen.insert(*l))
                .collect();
            let lines: Vec<String> = distinct
                .iter()
                .take(LINES_PER_RULE)
                .map(|l| {
                    let text = texts.get(l).copied().unwrap_or("");
                    format!("line {l}: {text}")
                })
                .chain(
                    (g.lines.len() > LINES_PER_RULE)
                        .then(|| format!("... and {} more lines", g.lines.len() - LINES_PER_RULE)),
                )
                .collect();
            ann.rules.insert(k, lines);
        }
        let toml = to_toml(self.policy, &ann);
        let work =
            self.runs.iter().map(|r| r.walk.work.get()).sum::<u64>() + self.outcome.decisions;
        Imported {
            work,
            policy: self.policy.clone(),
            toml,
            notes,
            families: self.families.to_vec(),
        }
    }
}
