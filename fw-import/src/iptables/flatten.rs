//! From the replayed tables of one family to the single INPUT chain fw's check walks:
//! user-defined chains inlined (RETURN and goto become skips), the drops of the raw and mangle
//! tables put in front, interfaces and destinations resolved for the imported interface; what
//! OUTPUT, FORWARD and the nat table mean for fw, in notes or problems.

use fw_common::{
    Family,
    packet::{IPPROTO_TCP, IPPROTO_UDP},
};

use super::{
    load::{Chains, InputRule, LineLog, Loaded, Replayed},
    rule::{Spec, Target, target_reason},
};
use crate::{
    FamilyExt, ImportOptions, Problem, ProblemKind, addrset::AddrSet, lines_text, pipeline::NatMap,
};

/// Chains inlined deeper than this are refused (iptables allows 32 levels of jumps... and
/// loops are refused before that).
const MAX_DEPTH: usize = 32;

struct Flattener<'a> {
    fam: Family,
    opts: &'a ImportOptions,
    r: &'a Replayed,
    rules: Vec<InputRule>,
    out: &'a mut Loaded,
    /// Rules for virtual interfaces taken as not for fw's (line, interface).
    virtual_ifaces: Vec<(usize, String)>,
}

/// Interface names of bridges, tunnels, VPNs and containers.
fn is_virtual(name: &str) -> bool {
    const PREFIXES: [&str; 17] = [
        "docker",
        "br-",
        "virbr",
        "veth",
        "cni",
        "flannel",
        "cali",
        "tun",
        "tap",
        "wg",
        "lxc",
        "lxd",
        "kube",
        "vmnet",
        "tailscale",
        "zt",
        "vboxnet",
    ];
    PREFIXES.iter().any(|p| name.starts_with(p))
}

/// Resolve `r` (one family's replayed tables) into `out`.
pub(crate) fn finish(r: &Replayed, fam: Family, opts: &ImportOptions, out: &mut Loaded) {
    if !r.present && r.tables.is_empty() {
        return;
    }
    let mut f = Flattener {
        fam,
        opts,
        r,
        rules: Vec::new(),
        out,
        virtual_ifaces: Vec::new(),
    };
    // Packets for this host pass raw PREROUTING, mangle PREROUTING and mangle INPUT before
    // the filter table: their drops come first; their ACCEPT ends only that chain.
    for (table, chain) in [
        ("raw", "PREROUTING"),
        ("mangle", "PREROUTING"),
        ("mangle", "INPUT"),
    ] {
        f.prelude(table, chain);
    }
    f.block("filter", "INPUT", false);
    f.output();
    f.forward();
    let nat = f.nat();
    let policy = r.chain("filter", "INPUT").and_then(|c| c.policy.clone());
    let rules = std::mem::take(&mut f.rules);
    if !f.virtual_ifaces.is_empty() {
        let mut names: Vec<String> = f.virtual_ifaces.iter().map(|(_, n)| n.clone()).collect();
        names.sort();
        names.dedup();
        let lines: Vec<usize> = f.virtual_ifaces.iter().map(|(l, _)| *l).collect();
        f.out.notes.push(format!(
            "Rules for {} ({}) are taken as not applying: attach fw to the host's external interface, not to bridges, tunnels or container interfaces (or import for one with --iface).",
            names.join(", "),
            lines_text(&lines)
        ));
    }
    out.nat[fam.idx()] = nat;
    out.chains[fam.idx()] = Chains {
        present: r.present,
        input: rules,
        policy,
    };
}

impl Flattener<'_> {
    fn log(&mut self, r: &InputRule, what: impl Into<String>) {
        self.out.log.push(LineLog {
            line: r.line,
            text: r.text.clone(),
            what: what.into(),
        });
    }

    fn problem(&mut self, kind: ProblemKind, r: &InputRule, value: &str, msg: impl Into<String>) {
        self.out
            .problems
            .push(Problem::new(kind, r.line, value, msg, r.text.clone()));
    }

    fn prelude(&mut self, table: &str, chain: &str) {
        let Some(c) = self.r.chain(table, chain) else {
            return;
        };
        if let Some(p) = c.policy.as_ref().filter(|p| !p.accept) {
            self.out.problems.push(Problem::new(
                ProblemKind::Unsupported,
                p.line,
                format!("-t {table} -P {chain} DROP"),
                "a DROP policy before the filter table: write these drops as INPUT rules",
                p.text.clone(),
            ));
        }
        if !c.rules.is_empty() {
            self.block(table, chain, true);
        }
    }

    /// Inline `chain` and fix its RETURNs to skip to its end.
    fn block(&mut self, table: &str, chain: &str, accept_returns: bool) {
        let mut returns = Vec::new();
        let mut stack = vec![chain.to_string()];
        self.inline(
            table,
            chain,
            &Spec::default(),
            &mut stack,
            accept_returns,
            &mut returns,
        );
        let end = self.rules.len();
        for i in returns {
            self.rules[i].spec.target = Some(Target::Skip(end));
        }
    }

    fn inline(
        &mut self,
        table: &str,
        chain: &str,
        ctx: &Spec,
        stack: &mut Vec<String>,
        accept_returns: bool,
        returns: &mut Vec<usize>,
    ) {
        let rules = self
            .r
            .chain(table, chain)
            .map(|c| c.rules.clone())
            .unwrap_or_default();
        for rule in rules {
            if let Some(p) = &rule.bad {
                self.out.problems.push(p.clone());
                continue;
            }
            let Some(spec) = self.resolve(&rule) else {
                continue;
            };
            let eff = match conjoin(ctx, &spec, self.fam) {
                Ok(Some(s)) => s,
                Ok(None) => {
                    self.log(&rule, format!("never matches where {chain} is entered"));
                    continue;
                }
                Err(why) => {
                    self.problem(ProblemKind::Unsupported, &rule, chain, why);
                    continue;
                }
            };
            let push = |me: &mut Self, target: Target| {
                let mut s = eff.clone();
                s.target = Some(target);
                me.rules.push(InputRule {
                    line: rule.line,
                    text: rule.text.clone(),
                    spec: s,
                    bad: None,
                });
                me.rules.len() - 1
            };
            match spec.target.clone() {
                Some(Target::Chain(c) | Target::Goto(c)) => {
                    let goto = matches!(spec.target, Some(Target::Goto(_)));
                    if self.r.chain(table, &c).is_none() {
                        self.problem(
                            ProblemKind::Syntax,
                            &rule,
                            &format!("-j {c}"),
                            format!(
                                "no chain {c} in the {table} table (iptables refuses the jump)"
                            ),
                        );
                        continue;
                    }
                    if stack.contains(&c) || stack.len() > MAX_DEPTH {
                        self.problem(
                            ProblemKind::Syntax,
                            &rule,
                            &format!("-j {c}"),
                            "a loop of jumps between chains (iptables refuses it)",
                        );
                        continue;
                    }
                    self.log(&rule, format!("jumps to {c}: its rules are inlined here"));
                    let mut inner = Vec::new();
                    stack.push(c.clone());
                    let ctx = Spec {
                        target: None,
                        comment: None,
                        ..eff.clone()
                    };
                    self.inline(table, &c, &ctx, stack, false, &mut inner);
                    stack.pop();
                    let end = self.rules.len();
                    for i in inner {
                        self.rules[i].spec.target = Some(Target::Skip(end));
                    }
                    if goto {
                        // What falls through a goto'd chain leaves this chain too.
                        returns.push(push(self, Target::Skip(usize::MAX)));
                    }
                }
                Some(Target::Return) => returns.push(push(self, Target::Skip(usize::MAX))),
                Some(Target::Accept) if accept_returns => {
                    returns.push(push(self, Target::Skip(usize::MAX)))
                }
                Some(Target::Other(t))
                    if accept_returns
                        && !matches!(
                            t.as_str(),
                            "CT" | "NOTRACK" | "SYNPROXY" | "QUEUE" | "NFQUEUE"
                        ) =>
                {
                    self.log(
                        &rule,
                        format!("skipped: -j {t} in the {table} table decides no verdict"),
                    );
                }
                Some(Target::Other(t)) => {
                    let why = target_reason(&t).unwrap_or("fw has no equivalent");
                    let why = if matches!(t.as_str(), "CT" | "NOTRACK") {
                        "it changes what conntrack tracks; fw tracks every TCP, UDP and ICMP connection"
                    } else {
                        why
                    };
                    self.problem(ProblemKind::Unsupported, &rule, &format!("-j {t}"), why);
                }
                Some(Target::Nat(t)) if table == "nat" => {
                    push(self, Target::Nat(t));
                }
                Some(Target::Nat(t)) => {
                    self.problem(
                        ProblemKind::Syntax,
                        &rule,
                        &format!("-j {t}"),
                        format!("{t} belongs in the nat table"),
                    );
                }
                Some(t) => {
                    push(self, t);
                }
                // A rate match below its limit decides nothing, but the limit it carries
                // belongs to a later allow rule: kept as a step to the next rule.
                None if spec.rate.is_some() => {
                    let next = self.rules.len() + 1;
                    push(self, Target::Skip(next));
                }
                None => self.log(&rule, "no target (counts packets only): no effect"),
            }
        }
    }

    /// The rule as seen by packets arriving on the imported interface: `None` when it never
    /// matches them (logged) or cannot be judged (a problem).
    fn resolve(&mut self, r: &InputRule) -> Option<Spec> {
        let mut s = r.spec.clone();
        if let Some((neg, i)) = &s.out_iface {
            self.problem(
                ProblemKind::Syntax,
                r,
                &format!("{}-o {i}", if *neg { "! " } else { "" }),
                "an output interface on INPUT (iptables refuses it)",
            );
            return None;
        }
        if let Some((neg, name)) = s.in_iface.clone()
            && name != "lo"
            && name != "lo+"
        {
            let value = format!("{}-i {name}", if neg { "! " } else { "" });
            let assumed = self.opts.iface.is_none() && is_virtual(&name);
            if assumed && !neg {
                // Bridges, tunnels and container interfaces: fw is attached to the host's
                // external interface, not to these.
                self.log(r, format!("{name} is a bridge, tunnel or container interface: taken as not the interface fw filters"));
                self.virtual_ifaces.push((r.line, name.clone()));
                return None;
            }
            let iface = match &self.opts.iface {
                _ if assumed => "\u{0}".to_string(),
                Some(i) => i.clone(),
                None => String::new(),
            };
            if iface.is_empty() {
                self.problem(
                    ProblemKind::NeedsOption,
                    r,
                    &value,
                    format!("a rule for interface {name}: fw filters the interfaces it is attached to, each with its own policy; import for one with `--iface IFACE` (e.g. `--iface {name}`)"),
                );
                return None;
            }
            let hit = match name.strip_suffix('+') {
                Some(prefix) => iface.starts_with(prefix),
                None => iface == name,
            };
            if hit == neg {
                self.log(r, format!("not for {iface}: never matches its traffic"));
                return None;
            }
            s.in_iface = None;
        }
        if let Some((neg, list)) = s.dst.clone() {
            match dst_kind(&list, self.fam) {
                DstKind::Any => s.dst = None,
                DstKind::Martian if !neg => {
                    self.log(r, "destination 127.0.0.0/8 (or ::1) arriving on a real interface: the kernel drops these martians before INPUT, so this rule never matches");
                    self.out.notes.push(format!("Line {} matches loopback destinations arriving on a real interface; the kernel drops those (martians) before any rule, so it is not needed.", r.line));
                    return None;
                }
                DstKind::Multicast if !neg => {
                    self.log(r, "multicast or broadcast destination: never matches unicast traffic to this host");
                    if r.line != 0 {
                        self.out.notes.push(format!("Line {} is about multicast or broadcast destinations; fw judges those by their port like unicast packets (it does not tell destinations apart), so what it allows for unicast it allows for multicast too, and a port opened only for multicast here is closed in fw: allow it if this host needs it (e.g. 5353/udp for mDNS).", r.line));
                    }
                    return None;
                }
                DstKind::Martian | DstKind::Multicast => s.dst = None,
                DstKind::Unicast => {
                    self.problem(
                        ProblemKind::Unsupported,
                        r,
                        &format!("{}-d {}", if neg { "! " } else { "" }, list.iter().map(|c| c.to_string()).collect::<Vec<_>>().join(",")),
                        "fw does not filter by destination address: it judges everything arriving on the interfaces it is attached to",
                    );
                    return None;
                }
            }
        }
        let kinds = std::mem::take(&mut s.dst_kind);
        for (neg, k) in kinds {
            // Unicast packets addressed to this host are LOCAL, UNICAST and `host`.
            let holds = matches!(k.as_str(), "LOCAL" | "UNICAST" | "HOST");
            if holds == neg {
                self.log(
                    r,
                    format!(
                        "{}{k}: never matches unicast traffic to this host",
                        if neg { "not " } else { "" }
                    ),
                );
                if r.line != 0 && matches!(k.as_str(), "BROADCAST" | "MULTICAST" | "ANYCAST") {
                    self.out.notes.push(format!("Line {} is about {} packets; fw judges multicast and broadcast packets by their port like unicast ones.", r.line, k.to_ascii_lowercase()));
                }
                return None;
            }
        }
        Some(s)
    }

    /// OUTPUT: fine when it drops nothing; otherwise only with `--ignore-output`, loudly.
    fn output(&mut self) {
        let mut drops: Vec<InputRule> = Vec::new();
        let mut policies = Vec::new();
        for table in ["filter", "mangle", "raw"] {
            if let Some(c) = self.r.chain(table, "OUTPUT") {
                if let Some(p) = c.policy.as_ref().filter(|p| !p.accept) {
                    policies.push(p.clone());
                }
                let mut stack = vec!["OUTPUT".to_string()];
                self.output_drops(table, "OUTPUT", &mut stack, &mut drops);
            }
        }
        if policies.is_empty() && drops.is_empty() {
            return;
        }
        let mut lines: Vec<usize> = policies.iter().map(|p| p.line).collect();
        lines.extend(drops.iter().map(|d| d.line));
        lines.sort_unstable();
        if self.opts.ignore_output {
            self.out.notes.push(format!(
                "WARNING: these {} rules filter outgoing traffic ({}); fw does not, so with this policy everything this host sends is let out (--ignore-output). Keep the OUTPUT rules in iptables if you need them.",
                self.fam.tool(),
                lines_text(&lines)
            ));
            return;
        }
        let msg = "fw does not filter outgoing traffic, and this rule set does; import the INPUT side anyway with `--ignore-output` (everything this host sends is then let out), or keep the OUTPUT rules in iptables";
        for p in policies {
            self.out.problems.push(Problem::new(
                ProblemKind::NeedsOption,
                p.line,
                "-P OUTPUT DROP",
                msg,
                p.text.clone(),
            ));
        }
        for d in drops {
            let v = match d.spec.target {
                Some(Target::Reject) => "-j REJECT",
                _ => "-j DROP",
            };
            self.problem(ProblemKind::NeedsOption, &d, v, msg);
        }
    }

    fn output_drops(
        &self,
        table: &str,
        chain: &str,
        stack: &mut Vec<String>,
        out: &mut Vec<InputRule>,
    ) {
        for rule in self
            .r
            .chain(table, chain)
            .map(|c| c.rules.as_slice())
            .unwrap_or(&[])
        {
            match &rule.spec.target {
                Some(Target::Drop | Target::Reject) => out.push(rule.clone()),
                Some(Target::Chain(c) | Target::Goto(c))
                    if !stack.contains(c) && stack.len() < MAX_DEPTH =>
                {
                    stack.push(c.clone());
                    self.output_drops(table, c, stack, out);
                    stack.pop();
                }
                _ => {}
            }
        }
    }

    fn forward(&mut self) {
        let Some(c) = self.r.chain("filter", "FORWARD") else {
            return;
        };
        let lines: Vec<usize> = c.rules.iter().map(|r| r.line).collect();
        for r in &c.rules.clone() {
            self.log(
                r,
                "FORWARD: not imported (forwarded traffic; see the notes)",
            );
        }
        if !lines.is_empty() {
            self.out.notes.push(format!(
                "FORWARD rules ({}) are not imported: they decide traffic this host routes on, which fw, a host firewall, judges by the INPUT rules when it arrives on the interface fw filters. Keep them in iptables; they still apply after fw lets a packet in.",
                lines_text(&lines)
            ));
        }
    }

    /// The nat table: redirects to local ports become allowed pre-NAT ports; the rest is noted.
    fn nat(&mut self) -> NatMap {
        let mut map = NatMap::new();
        if !self.r.tables.contains_key("nat") {
            return map;
        }
        let start = self.rules.len();
        self.block("nat", "PREROUTING", false);
        let pre: Vec<InputRule> = self.rules.drain(start..).collect();
        let mut outgoing = Vec::new();
        for chain in ["POSTROUTING", "OUTPUT"] {
            for r in self
                .r
                .chain("nat", chain)
                .map(|c| c.rules.clone())
                .unwrap_or_default()
            {
                self.log(
                    &r,
                    "nat: outgoing traffic, does not change what this host accepts",
                );
                outgoing.push(r.line);
            }
        }
        if !outgoing.is_empty() {
            self.out.notes.push(format!(
                "The nat table's outgoing rules ({}: MASQUERADE, SNAT, ...) do not change what this host accepts; fw does no NAT, so keep them in iptables or nftables.",
                lines_text(&outgoing)
            ));
        }
        for r in &pre {
            let Some(Target::Nat(t)) = &r.spec.target else {
                if !matches!(r.spec.target, Some(Target::Skip(_) | Target::Accept)) {
                    self.log(
                        r,
                        "nat: no address translation, no effect on what is accepted",
                    );
                }
                continue;
            };
            self.redirect(r, t, &mut map);
        }
        map
    }

    fn redirect(&mut self, r: &InputRule, t: &str, map: &mut NatMap) {
        let s = &r.spec;
        let to = s.nat_to.clone().unwrap_or_default();
        // REDIRECT --to-ports P, or DNAT --to-destination [ADDR]:P to this host.
        let (addr, port) = match t {
            "REDIRECT" => ("", to.as_str()),
            "DNAT" => match to.rsplit_once(':') {
                Some((a, p)) if !a.ends_with(':') || a.starts_with('[') => {
                    (a.trim_matches(|c| c == '[' || c == ']'), p)
                }
                _ => (to.as_str(), ""),
            },
            _ => {
                self.log(r, format!("{t}: not a redirect to this host"));
                return;
            }
        };
        let local = addr.is_empty() || addr.starts_with("127.") || addr == "::1";
        if !local {
            self.log(
                r,
                format!("forwards to {to}: forwarded traffic (see the notes)"),
            );
            self.out.notes.push(format!(
                "Line {} forwards packets to {to} (DNAT): fw sees them before NAT and judges them by the INPUT rules; allow the forwarded port in the policy if it must keep working (the FORWARD chain is not imported).",
                r.line
            ));
            return;
        }
        let proto = match s.proto {
            Some((false, p @ (IPPROTO_TCP | IPPROTO_UDP))) => p,
            _ => {
                self.problem(
                    ProblemKind::Unsupported,
                    r,
                    &format!("-j {t}"),
                    "a redirect without `-p tcp` or `-p udp`: fw allows ports per protocol",
                );
                return;
            }
        };
        let to_port = port.split('-').next().and_then(|p| p.parse::<u16>().ok());
        let from: Vec<(u16, u16)> = match s.dports.as_slice() {
            [(false, ranges)] => ranges.clone(),
            _ => Vec::new(),
        };
        let conditions_ok = s.src.is_none()
            && s.sports.is_empty()
            && s.tcp_flags.is_empty()
            && s.states.is_empty()
            && s.icmp.is_none();
        let Some(to_port) = to_port.filter(|_| conditions_ok && !from.is_empty()) else {
            self.problem(
                ProblemKind::Unsupported,
                r,
                &format!("-j {t}"),
                "a redirect the importer cannot follow: it takes `-p tcp|udp --dport P[:Q] -j REDIRECT --to-ports N` (or DNAT to this host) without other conditions",
            );
            return;
        };
        let n: u32 = from.iter().map(|(a, b)| (*b - *a) as u32 + 1).sum();
        if n > 1024 {
            self.problem(
                ProblemKind::Unsupported,
                r,
                &format!("-j {t}"),
                "a redirect of more than 1,024 ports",
            );
            return;
        }
        for (a, b) in from {
            for p in a..=b {
                map.insert((proto, p), to_port);
            }
        }
        self.log(r, format!("redirects to port {to_port}: fw sees the packets before NAT, so it allows the original port"));
    }
}

enum DstKind {
    Any,
    Unicast,
    Martian,
    Multicast,
}

/// What a list of destination CIDRs is about, for packets arriving at this host.
fn dst_kind(list: &[fw_policy::Cidr], fam: Family) -> DstKind {
    if list.iter().any(|c| c.prefix_len() == 0) {
        return DstKind::Any;
    }
    let set = AddrSet::of(list, fam);
    let of = |s: &[&str]| {
        let c: Vec<fw_policy::Cidr> = s.iter().map(|x| x.parse().expect("literal")).collect();
        AddrSet::of(&c, fam)
    };
    let martian = of(&["127.0.0.0/8", "::1/128"]);
    let multicast = of(&["224.0.0.0/4", "255.255.255.255/32", "ff00::/8"]);
    let within = |outer: &AddrSet| {
        let mut rest = set.clone();
        rest.take(outer);
        rest.is_empty()
    };
    if within(&martian) {
        DstKind::Martian
    } else if within(&multicast) {
        DstKind::Multicast
    } else {
        DstKind::Unicast
    }
}

/// Both rules' conditions at once: `Ok(None)` when no packet can meet both.
pub(crate) fn conjoin(a: &Spec, b: &Spec, fam: Family) -> Result<Option<Spec>, String> {
    let mut s = b.clone();
    s.proto = match (a.proto, b.proto) {
        (None, x) | (x, None) => x,
        (Some(x), Some(y)) if x == y => Some(x),
        (Some((false, x)), Some((false, y))) if x != y => return Ok(None),
        (Some((false, x)), Some((true, y))) | (Some((true, y)), Some((false, x))) => {
            if x == y {
                return Ok(None);
            }
            Some((false, x))
        }
        _ => return Err("two negated protocol matches along one path of jumps".into()),
    };
    s.src = addrs(&a.src, &b.src, fam);
    if s.src.as_ref().is_some_and(|(_, l)| l.is_empty()) {
        return Ok(None);
    }
    s.dst = match (&a.dst, &b.dst) {
        (None, x) | (x, None) => x.clone(),
        _ => addrs(&a.dst, &b.dst, fam),
    };
    s.in_iface = match (&a.in_iface, &b.in_iface) {
        (None, x) | (x, None) => x.clone(),
        (Some(x), Some(y)) if x == y => Some(x.clone()),
        _ => return Ok(None),
    };
    s.fragment = match (a.fragment, b.fragment) {
        (None, x) | (x, None) => x,
        (Some(x), Some(y)) if x == y => Some(x),
        _ => return Ok(None),
    };
    s.icmp = match (a.icmp, b.icmp) {
        (None, x) | (x, None) => x,
        (Some(x), Some(y)) if x == y => Some(x),
        _ => return Err("two ICMP type matches along one path of jumps".into()),
    };
    fn cat<T: Clone>(x: &[T], y: &[T]) -> Vec<T> {
        let mut v = x.to_vec();
        v.extend(y.iter().cloned());
        v
    }
    s.dports = cat(&a.dports, &b.dports);
    s.sports = cat(&a.sports, &b.sports);
    s.tcp_flags = cat(&a.tcp_flags, &b.tcp_flags);
    s.states = cat(&a.states, &b.states);
    s.dst_kind = cat(&a.dst_kind, &b.dst_kind);
    if s.comment.is_none() {
        s.comment = a.comment.clone();
    }
    if s.rate.is_none() {
        s.rate = a.rate.clone();
    }
    Ok(Some(s))
}

/// Two source (or destination) conditions at once, as one positive list.
fn addrs(
    a: &Option<(bool, Vec<fw_policy::Cidr>)>,
    b: &Option<(bool, Vec<fw_policy::Cidr>)>,
    fam: Family,
) -> Option<(bool, Vec<fw_policy::Cidr>)> {
    let set = |x: &(bool, Vec<fw_policy::Cidr>)| {
        let s = AddrSet::of(&x.1, fam);
        if x.0 { s.complement(fam) } else { s }
    };
    match (a, b) {
        (None, x) | (x, None) => x.clone(),
        (Some(x), Some(y)) => {
            let mut sx = set(x);
            let both = sx.take(&set(y));
            Some((false, both.to_cidrs(fam)))
        }
    }
}
