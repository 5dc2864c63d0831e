//! One iptables command (`-A INPUT -p tcp --dport 22 -j ACCEPT`) as data.

use std::net::Ipv4Addr;

use fw_common::tcp;

pub(crate) use super::icmp::parse_icmp_type;

use crate::FamilyExt;
use fw_common::Family;
use fw_policy::Cidr;

/// Conntrack states (`--state` / `--ctstate`), as bits.
pub(crate) mod ct {
    pub const NEW: u8 = 1;
    pub const ESTABLISHED: u8 = 2;
    pub const RELATED: u8 = 4;
    pub const INVALID: u8 = 8;
    pub const UNTRACKED: u8 = 16;
    /// `SNAT`/`DNAT` (conntrack's virtual states): never true for what fw sees.
    pub const NAT: u8 = 32;
}

pub(crate) const IPPROTO_ICMP: u8 = 1;
pub(crate) const IPPROTO_TCP: u8 = 6;
pub(crate) const IPPROTO_UDP: u8 = 17;
pub(crate) const IPPROTO_ICMPV6: u8 = 58;

/// `--syn`: SYN set, RST, ACK and FIN clear.
pub(crate) const SYN_MASK: u8 = tcp::FIN | tcp::SYN | tcp::RST | tcp::ACK;

pub(crate) type Ports = Vec<(u16, u16)>;

#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Target {
    Accept,
    Drop,
    Reject,
    /// `-j CHAIN`: a user-defined chain.
    Chain(String),
    /// `-g CHAIN`: a user-defined chain that does not return here.
    Goto(String),
    /// `-j RETURN`.
    Return,
    /// In a flattened chain (user chains inlined): sources that match go on at rule `.0`
    /// (a RETURN, or the end of a chain entered by goto).
    Skip(usize),
    /// MASQUERADE, SNAT, DNAT, REDIRECT, NETMAP (with `--to-*` in [`Spec::nat_to`]).
    Nat(String),
    /// A target that decides no verdict in the filter sense (MARK, CT, TCPMSS, QUEUE, ...):
    /// judged by the table it is in.
    Other(String),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Op {
    Append(String),
    /// Chain and 1-based position.
    Insert(String, usize),
    Replace(String, usize),
    /// Chain and 1-based position, or the rule spec when `None`.
    Delete(String, Option<usize>),
    Policy(String, String),
    Flush(Option<String>),
    NewChain(String),
    /// `-X [CHAIN]`: without a name, every user-defined chain of the table.
    DeleteChain(Option<String>),
    /// `-X`, `-Z`, `-L`, `-S`, `-C`: no effect on what the rules do.
    NoEffect(&'static str),
}

/// What a rule matches and does. `(true, x)` is a negated match (`! -s x`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Spec {
    /// `None`: every protocol (`-p all` or no `-p`).
    pub proto: Option<(bool, u8)>,
    pub src: Option<(bool, Vec<Cidr>)>,
    pub dst: Option<(bool, Vec<Cidr>)>,
    pub in_iface: Option<(bool, String)>,
    pub out_iface: Option<(bool, String)>,
    /// `-f` (`Some(false)`) or `! -f` (`Some(true)`).
    pub fragment: Option<bool>,
    /// Every entry must hold (`--dport` and `-m multiport --dports` both land here).
    pub dports: Vec<(bool, Ports)>,
    pub sports: Vec<(bool, Ports)>,
    /// `(negated, mask, compare)`; `--syn` is `(false, SYN_MASK, SYN)`.
    pub tcp_flags: Vec<(bool, u8, u8)>,
    /// `(negated, type, code)`; `None` type means any.
    pub icmp: Option<(bool, u8, Option<u8>)>,
    pub states: Vec<(bool, u8)>,
    pub comment: Option<String>,
    pub target: Option<Target>,
    /// `-j LOG` / `NFLOG` / `ULOG`: the target's name (the rule decides nothing).
    pub log: Option<String>,
    /// `-m addrtype --dst-type T` / `-m pkttype --pkt-type T`: what kind of destination.
    pub dst_kind: Vec<(bool, String)>,
    /// A NAT target's `--to-ports` / `--to-destination` / `--to-source`.
    pub nat_to: Option<String>,
    /// `-m limit` / `hashlimit` / `recent` (the check sees the rule below the limit).
    pub rate: Option<super::rate::RateMatch>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Command {
    pub op: Op,
    pub table: String,
    /// `-4` / `-6`: only for that family (iptables-restore skips it in the other).
    pub only: Option<Family>,
    pub spec: Spec,
    /// The first part of the line fw cannot import; reported after the table and chain are
    /// known to matter.
    pub unsupported: Option<Bad>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Bad {
    /// The offending words, as written.
    pub value: String,
    pub kind: BadKind,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum BadKind {
    /// Not valid iptables (iptables itself would refuse it).
    Syntax(String),
    /// Valid iptables that fw has no equivalent for.
    Unsupported(String),
}

impl Bad {
    pub(crate) fn syntax(value: impl Into<String>, msg: impl Into<String>) -> Self {
        Bad {
            value: value.into(),
            kind: BadKind::Syntax(msg.into()),
        }
    }

    pub(crate) fn unsupported(value: impl Into<String>, why: impl Into<String>) -> Self {
        Bad {
            value: value.into(),
            kind: BadKind::Unsupported(why.into()),
        }
    }
}

/// Why a match module has no fw equivalent.
fn module_reason(name: &str) -> String {
    let why = match name {
        "connlimit" => {
            "fw limits the rate of new connections per source (`limit = \"N/period\"`), not how many are open at once: connlimit has no equivalent (a per-source rate limit on the port is the nearest)"
        }
        "set" => "fw has no ipsets; list the sources in the rule's `from`",
        "iprange" => "fw takes sources as CIDRs; write the range as CIDRs",
        "mac" => "fw does not match MAC addresses",
        "owner" => "owner matches apply to outgoing traffic, which fw does not filter",
        "addrtype" | "pkttype" => "fw does not match address or packet types",
        "mark" | "connmark" => "fw does not see packet marks",
        "length" | "string" | "u32" | "bpf" => "fw does not match packet contents or lengths",
        "time" => "fw rules do not depend on the time",
        "ttl" | "hl" => "fw does not match TTL or hop limit",
        "physdev" => "fw does not match bridge ports",
        "policy" => "fw does not match IPsec policy",
        "rpfilter" => "fw does not do reverse-path filtering (the kernel's rp_filter does)",
        "frag" => "fw judges IPv6 fragments with its `fragments` option only",
        "tos" | "dscp" | "ecn" => "fw does not match TOS, DSCP or ECN bits",
        _ => "fw has no equivalent",
    };
    why.to_string()
}

/// Targets that decide no verdict, with why fw has nothing like them.
pub(crate) fn target_reason(name: &str) -> Option<&'static str> {
    Some(match name {
        "QUEUE" | "NFQUEUE" => "fw cannot hand packets to userspace",
        "MASQUERADE" | "SNAT" | "DNAT" | "REDIRECT" | "NETMAP" => {
            "fw does not do NAT; keep NAT where it is"
        }
        "MARK" | "CONNMARK" | "CT" | "NOTRACK" | "TCPMSS" | "TRACE" | "SET" | "AUDIT"
        | "CHECKSUM" | "TEE" | "CLASSIFY" | "DSCP" | "TOS" | "TTL" | "HL" | "SECMARK"
        | "CONNSECMARK" | "TPROXY" | "SYNPROXY" | "LED" | "IDLETIMER" => {
            "fw only lets packets in or drops them"
        }
        _ => return None,
    })
}

/// Parse one command's words (without the program name).
pub(crate) fn parse_command(words: &[String], family: Family) -> Result<Command, Bad> {
    let mut p = Parser {
        w: words,
        i: 0,
        family,
        op: None,
        table: "filter".into(),
        only: None,
        spec: Spec::default(),
        unsupported: None,
        modules: Vec::new(),
        rate_opts: Vec::new(),
        target_opts: false,
    };
    p.run()?;
    let Some(op) = p.op else {
        return Err(Bad::syntax(
            words.join(" "),
            "no command: expected -A, -I, -D, -P, -F, -N or similar",
        ));
    };
    p.spec.check(&p.modules)?;
    p.spec.rate = super::rate::build(&p.modules, &p.rate_opts, family)?;
    if let Some(r) = &mut p.spec.rate
        && r.kind == super::rate::RateKind::Over
    {
        // Below the limit this rule matches nothing: the check sees it without its target.
        r.over_target = p.spec.target.take();
    }
    Ok(Command {
        op,
        table: p.table,
        only: p.only,
        spec: p.spec,
        unsupported: p.unsupported,
    })
}

struct Parser<'a> {
    w: &'a [String],
    i: usize,
    family: Family,
    op: Option<Op>,
    table: String,
    only: Option<Family>,
    spec: Spec,
    unsupported: Option<Bad>,
    modules: Vec<String>,
    /// Options of the rate modules, as written.
    rate_opts: Vec<super::rate::Opt>,
    /// After a `-j` whose options the parser need not understand.
    target_opts: bool,
}

impl Parser<'_> {
    fn peek(&self) -> Option<&str> {
        self.w.get(self.i).map(String::as_str)
    }

    /// The next word as the value of `opt`.
    fn value(&mut self, opt: &str) -> Result<String, Bad> {
        let v = self
            .w
            .get(self.i)
            .ok_or_else(|| Bad::syntax(opt, format!("{opt} needs a value")))?;
        self.i += 1;
        Ok(v.clone())
    }

    /// A value that may carry the old negation form (`-s ! 10.0.0.1`).
    fn value_neg(&mut self, opt: &str, neg: &mut bool) -> Result<String, Bad> {
        let v = self.value(opt)?;
        if v == "!" {
            *neg = !*neg;
            return self.value(opt);
        }
        Ok(v)
    }

    /// An optional value: the next word unless it is an option.
    fn optional(&mut self) -> Option<String> {
        let v = self.peek()?.to_string();
        if v.starts_with('-') || v == "!" {
            return None;
        }
        self.i += 1;
        Some(v)
    }

    fn set_op(&mut self, opt: &str, op: Op) -> Result<(), Bad> {
        if self.op.is_some() {
            return Err(Bad::syntax(opt, "two commands in one line"));
        }
        self.op = Some(op);
        Ok(())
    }

    fn defer(&mut self, value: impl Into<String>, why: impl Into<String>) {
        if self.unsupported.is_none() {
            self.unsupported = Some(Bad::unsupported(value, why));
        }
    }

    /// Skip the values of an option this parser does not know: words up to the next option.
    fn skip_values(&mut self) -> String {
        let mut out = Vec::new();
        while let Some(v) = self.optional() {
            out.push(v);
        }
        out.join(" ")
    }

    fn run(&mut self) -> Result<(), Bad> {
        // iptables-save -c puts the counters first: `[12:3456] -A INPUT ...`.
        if let Some(w) = self.peek()
            && w.starts_with('[')
            && w.ends_with(']')
            && w.contains(':')
        {
            self.i += 1;
        }
        let mut neg = false;
        while let Some(word) = self.peek().map(str::to_string) {
            self.i += 1;
            // Listing flags written together: `-nvL`, `-vnxL INPUT`.
            if word.len() > 2
                && word.starts_with('-')
                && !word.starts_with("--")
                && word[1..].chars().all(|c| "nvxLZSF".contains(c))
                && word[1..].chars().filter(|c| "LZSF".contains(*c)).count() == 1
            {
                let c = word.chars().last().unwrap_or('L');
                if !"LZSF".contains(c) {
                    return Err(Bad::syntax(
                        word.as_str(),
                        "the command letter (L, Z, S or F) must come last",
                    ));
                }
                self.option(&format!("-{c}"), &mut neg)?;
                continue;
            }
            if word == "!" {
                if neg {
                    return Err(Bad::syntax("! !", "double negation"));
                }
                neg = true;
                continue;
            }
            let negatable = self.option(&word, &mut neg)?;
            if neg && !negatable {
                return Err(Bad::syntax(
                    format!("! {word}"),
                    format!("{word} cannot be negated"),
                ));
            }
            neg = false;
        }
        if neg {
            return Err(Bad::syntax(
                "!",
                "`!` at the end of the line negates nothing",
            ));
        }
        Ok(())
    }

    /// Handle one option; returns whether it accepts `!`.
    fn option(&mut self, word: &str, neg: &mut bool) -> Result<bool, Bad> {
        let fam = self.family;
        match word {
            "-A" | "--append" => {
                let c = self.value(word)?;
                self.set_op(word, Op::Append(c))?;
            }
            "-I" | "--insert" | "-R" | "--replace" | "-D" | "--delete" => {
                let c = self.value(word)?;
                let n = match self.peek().map(|v| v.parse::<usize>()) {
                    Some(Ok(n)) => {
                        self.i += 1;
                        if n == 0 {
                            return Err(Bad::syntax(
                                format!("{word} {c} 0"),
                                "rule numbers start at 1",
                            ));
                        }
                        Some(n)
                    }
                    _ => None,
                };
                let op = match word {
                    "-I" | "--insert" => Op::Insert(c, n.unwrap_or(1)),
                    "-D" | "--delete" => Op::Delete(c, n),
                    _ => Op::Replace(
                        c,
                        n.ok_or_else(|| Bad::syntax(word, "-R needs a rule number"))?,
                    ),
                };
                self.set_op(word, op)?;
            }
            "-P" | "--policy" => {
                let c = self.value(word)?;
                let t = self.value(word)?;
                self.set_op(word, Op::Policy(c, t))?;
            }
            "-F" | "--flush" => {
                let c = self.optional();
                self.set_op(word, Op::Flush(c))?;
            }
            "-N" | "--new-chain" => {
                let c = self.value(word)?;
                self.set_op(word, Op::NewChain(c))?;
            }
            "-X" | "--delete-chain" => {
                let c = self.optional();
                self.set_op(word, Op::DeleteChain(c))?;
            }
            "-Z" | "--zero" | "-L" | "--list" | "-S" | "--list-rules" | "-C" | "--check" => {
                let what = match word {
                    "-Z" | "--zero" => "zeroes counters",
                    "-C" | "--check" => "only checks whether a rule exists",
                    _ => "only lists rules",
                };
                if matches!(word, "-C" | "--check") {
                    self.value(word)?;
                } else {
                    self.optional();
                    if matches!(word, "-Z" | "--zero" | "-L" | "--list") {
                        // An optional rule number.
                        if self.peek().is_some_and(|v| v.parse::<usize>().is_ok()) {
                            self.i += 1;
                        }
                    }
                }
                self.set_op(word, Op::NoEffect(what))?;
            }
            "-E" | "--rename-chain" => {
                let a = self.value(word)?;
                let b = self.value(word)?;
                self.set_op(word, Op::NoEffect("renames a chain"))?;
                self.defer(format!("{word} {a} {b}"), "fw has no user-defined chains");
            }
            "-t" | "--table" => self.table = self.value(word)?,
            "-4" | "--ipv4" => self.only = Some(Family::V4),
            "-6" | "--ipv6" => self.only = Some(Family::V6),
            "-w" | "--wait" => {
                if self.peek().is_some_and(|v| v.parse::<f64>().is_ok()) {
                    self.i += 1;
                }
            }
            "-W" | "--wait-interval" => {
                self.value(word)?;
            }
            "-n" | "--numeric" | "-v" | "--verbose" | "-x" | "--exact" | "--line-numbers" => {}
            w if w.starts_with("--modprobe") => {}
            "-c" | "--set-counters" => {
                let v = self.value(word)?;
                if !v.contains(':') && !v.contains(',') {
                    self.value(word)?;
                }
            }
            "-p" | "--protocol" => {
                let v = self.value_neg(word, neg)?;
                self.spec.proto = parse_proto(&v)?.map(|p| (*neg, p));
                if self.spec.proto.is_none() && *neg {
                    return Err(Bad::syntax(
                        format!("! {word} {v}"),
                        "`! -p all` matches nothing",
                    ));
                }
                return Ok(true);
            }
            "-s" | "--source" | "--src" | "-d" | "--destination" | "--dst" => {
                let v = self.value_neg(word, neg)?;
                let list = parse_addrs(&v, fam)?;
                let m = Some((*neg, list));
                if word.starts_with("-s") || word.starts_with("--s") {
                    self.spec.src = m;
                } else {
                    self.spec.dst = m;
                }
                return Ok(true);
            }
            "-i" | "--in-interface" => {
                let v = self.value_neg(word, neg)?;
                self.spec.in_iface = Some((*neg, v));
                return Ok(true);
            }
            "-o" | "--out-interface" => {
                let v = self.value_neg(word, neg)?;
                self.spec.out_iface = Some((*neg, v));
                return Ok(true);
            }
            "-f" | "--fragment" => {
                self.spec.fragment = Some(*neg);
                return Ok(true);
            }
            "-m" | "--match" => {
                let m = self.value(word)?.to_ascii_lowercase();
                match m.as_str() {
                    "tcp" | "udp" | "icmp" | "icmp6" | "icmpv6" | "ipv6-icmp" | "multiport"
                    | "state" | "conntrack" | "comment" | "iprange" | "addrtype" | "pkttype" => {}
                    "limit" | "hashlimit" | "recent" => {}
                    other => {
                        let why = module_reason(other);
                        self.defer(format!("-m {other}"), why);
                    }
                }
                self.modules.push(m);
            }
            "-j" | "--jump" | "-g" | "--goto" => {
                let t = self.value(word)?;
                if word == "-g" || word == "--goto" {
                    self.spec.target = Some(Target::Goto(t));
                    return Ok(false);
                }
                if matches!(t.as_str(), "LOG" | "NFLOG" | "ULOG") {
                    self.spec.log = Some(t);
                    return Ok(false);
                }
                self.spec.target = Some(match t.as_str() {
                    "ACCEPT" => Target::Accept,
                    "DROP" => Target::Drop,
                    "REJECT" => Target::Reject,
                    "RETURN" => Target::Return,
                    "MASQUERADE" | "SNAT" | "DNAT" | "REDIRECT" | "NETMAP" => {
                        self.target_opts = true;
                        Target::Nat(t.clone())
                    }
                    other if target_reason(other).is_some() => {
                        self.target_opts = true;
                        Target::Other(other.to_string())
                    }
                    other => Target::Chain(other.to_string()),
                });
            }
            "--reject-with" => {
                self.value(word)?;
            }
            "--to-ports" | "--to-port" | "--to-destination" | "--to-source" | "--to" => {
                self.spec.nat_to = Some(self.value(word)?);
            }
            w if w.starts_with("--log-")
                || w.starts_with("--nflog-")
                || w.starts_with("--ulog-") =>
            {
                // Options of the logging targets: they change what is logged, not the verdict.
                self.skip_values();
            }
            "--dport" | "--destination-port" | "--sport" | "--source-port" => {
                let v = self.value_neg(word, neg)?;
                let r = parse_port_range(&v)?;
                let m = (*neg, vec![r]);
                if matches!(
                    word,
                    "--dport" | "--destination-port" | "--dports" | "--destination-ports"
                ) {
                    self.spec.dports.push(m);
                } else {
                    self.spec.sports.push(m);
                }
                return Ok(true);
            }
            "--dports" | "--destination-ports" | "--sports" | "--source-ports" => {
                let v = self.value_neg(word, neg)?;
                let list = v
                    .split(',')
                    .map(parse_port_range)
                    .collect::<Result<Vec<_>, _>>()?;
                let m = (*neg, list);
                if matches!(
                    word,
                    "--dport" | "--destination-port" | "--dports" | "--destination-ports"
                ) {
                    self.spec.dports.push(m);
                } else {
                    self.spec.sports.push(m);
                }
                return Ok(true);
            }
            "--ports" => {
                let v = self.value_neg(word, neg)?;
                self.defer(
                    format!("--ports {v}"),
                    "it matches the source or the destination port; fw allows by destination port",
                );
                return Ok(true);
            }
            "--tcp-flags" => {
                let mask = self.value_neg(word, neg)?;
                let comp = self.value(word)?;
                let m = parse_tcp_flags(&mask)?;
                let c = parse_tcp_flags(&comp)?;
                self.spec.tcp_flags.push((*neg, m, c & m));
                return Ok(true);
            }
            "--syn" => {
                self.spec.tcp_flags.push((*neg, SYN_MASK, tcp::SYN));
                return Ok(true);
            }
            "--icmp-type" | "--icmpv6-type" => {
                let v = self.value_neg(word, neg)?;
                let want = if word == "--icmp-type" {
                    Family::V4
                } else {
                    Family::V6
                };
                if want != fam {
                    return Err(Bad::syntax(
                        format!("{word} {v}"),
                        format!(
                            "{word} in {} rules (use {})",
                            fam.name(),
                            if fam == Family::V4 {
                                "--icmp-type"
                            } else {
                                "--icmpv6-type"
                            }
                        ),
                    ));
                }
                self.spec.icmp = parse_icmp_type(&v, fam)?.map(|(t, c)| (*neg, t, c));
                return Ok(true);
            }
            "--state" | "--ctstate" => {
                let v = self.value_neg(word, neg)?;
                let mut bits = 0;
                for s in v.split(',') {
                    bits |= match s.to_ascii_uppercase().as_str() {
                        "NEW" => ct::NEW,
                        "ESTABLISHED" => ct::ESTABLISHED,
                        "RELATED" => ct::RELATED,
                        "INVALID" => ct::INVALID,
                        "UNTRACKED" => ct::UNTRACKED,
                        "SNAT" | "DNAT" => ct::NAT,
                        _ => {
                            return Err(Bad::syntax(
                                format!("{word} {v}"),
                                format!("unknown conntrack state {s:?}"),
                            ));
                        }
                    };
                }
                self.spec.states.push((*neg, bits));
                return Ok(true);
            }
            "--src-range" | "--dst-range" => {
                let v = self.value_neg(word, neg)?;
                let list = parse_range(&v, fam)?;
                let m = Some((*neg, list));
                if word == "--src-range" {
                    self.spec.src = m;
                } else {
                    self.spec.dst = m;
                }
                return Ok(true);
            }
            "--dst-type" | "--pkt-type" => {
                let v = self.value_neg(word, neg)?;
                for t in v.split(',') {
                    self.spec.dst_kind.push((*neg, t.to_ascii_uppercase()));
                }
                return Ok(true);
            }
            "--src-type" => {
                let v = self.value_neg(word, neg)?;
                self.defer(
                    format!("--src-type {v}"),
                    "fw does not match source address types",
                );
                return Ok(true);
            }
            "--limit-iface-in" | "--limit-iface-out" => {}
            w if super::rate::takes(w, &self.modules) => {
                let v = if super::rate::has_value(w) {
                    Some(self.value(w)?)
                } else {
                    None
                };
                self.rate_opts.push((*neg, w.to_string(), v));
                return Ok(true);
            }
            "--comment" => {
                let v = self.value(word)?;
                self.spec.comment = Some(match self.spec.comment.take() {
                    Some(c) => format!("{c}; {v}"),
                    None => v,
                });
            }
            w if w.starts_with("--ct") || w == "--tcp-option" => {
                let v = self.skip_values();
                self.defer(
                    format!("{w} {v}").trim_end().to_string(),
                    "fw has no equivalent",
                );
                return Ok(true);
            }
            w if w == "iptables" || w == "ip6tables" || w.ends_with("/iptables") => {
                return Err(Bad::syntax(
                    w,
                    "a second command on the same line: put one iptables command per line",
                ));
            }
            w if w.starts_with("--") && self.target_opts => {
                // Options of a target that decides no verdict (MARK, CT, TCPMSS, NAT, ...).
                self.skip_values();
            }
            w if w.starts_with('-') => {
                // Options of a module already refused, or one this importer does not know.
                let v = self.skip_values();
                self.defer(
                    format!("{w} {v}").trim_end().to_string(),
                    "an option fw's importer does not know",
                );
                return Ok(true);
            }
            w => {
                return Err(Bad::syntax(w, "unexpected word (not an option)"));
            }
        }
        Ok(false)
    }
}

impl Spec {
    /// What iptables itself would refuse: port and flag options without their protocol.
    fn check(&self, modules: &[String]) -> Result<(), Bad> {
        let proto = self.proto.filter(|(neg, _)| !neg).map(|(_, p)| p);
        let ports_ok = matches!(proto, Some(IPPROTO_TCP | IPPROTO_UDP | 132 | 33 | 136));
        if (!self.dports.is_empty() || !self.sports.is_empty()) && !ports_ok {
            return Err(Bad::syntax(
                "--dport/--sport",
                "port matches need -p tcp or -p udp",
            ));
        }
        if !self.tcp_flags.is_empty() && proto != Some(IPPROTO_TCP) {
            return Err(Bad::syntax(
                "--tcp-flags/--syn",
                "TCP flag matches need -p tcp",
            ));
        }
        if self.icmp.is_some() && !matches!(proto, Some(IPPROTO_ICMP | IPPROTO_ICMPV6)) {
            return Err(Bad::syntax(
                "--icmp-type",
                "ICMP type matches need -p icmp (ip6tables: -p ipv6-icmp)",
            ));
        }
        if modules.iter().any(|m| m == "multiport") && !ports_ok {
            return Err(Bad::syntax(
                "-m multiport",
                "multiport needs -p tcp or -p udp",
            ));
        }
        Ok(())
    }
}

/// Protocol by name or number; `None` for `all`.
pub(crate) fn parse_proto(s: &str) -> Result<Option<u8>, Bad> {
    let p = match s.to_ascii_lowercase().as_str() {
        "all" | "0" => return Ok(None),
        "tcp" => IPPROTO_TCP,
        "udp" => IPPROTO_UDP,
        "icmp" => IPPROTO_ICMP,
        "ipv6-icmp" | "icmpv6" | "icmp6" => IPPROTO_ICMPV6,
        "igmp" => 2,
        "ipip" | "ipencap" | "ipv4" => 4,
        "ipv6" => 41,
        "gre" => 47,
        "esp" => 50,
        "ah" => 51,
        "ospf" => 89,
        "pim" => 103,
        "vrrp" => 112,
        "l2tp" => 115,
        "sctp" => 132,
        "udplite" => 136,
        "dccp" => 33,
        n => n
            .parse::<u8>()
            .map_err(|_| Bad::syntax(format!("-p {s}"), format!("unknown protocol {s:?}")))?,
    };
    Ok(Some(p))
}

pub(crate) fn proto_name(p: u8) -> String {
    match p {
        IPPROTO_TCP => "tcp".into(),
        IPPROTO_UDP => "udp".into(),
        IPPROTO_ICMP => "icmp".into(),
        IPPROTO_ICMPV6 => "ipv6-icmp".into(),
        47 => "gre".into(),
        50 => "esp".into(),
        51 => "ah".into(),
        132 => "sctp".into(),
        n => format!("protocol {n}"),
    }
}

fn parse_addrs(s: &str, fam: Family) -> Result<Vec<Cidr>, Bad> {
    s.split(',').map(|a| parse_addr(a, fam)).collect()
}

/// iptables' short IPv4 forms: `10` is 10.0.0.0, `10.1` is 10.1.0.0 (missing parts are 0).
fn expand_short_v4(s: &str) -> Option<String> {
    let (a, len) = match s.split_once('/') {
        Some((a, l)) => (a, Some(l)),
        None => (s, None),
    };
    let parts: Vec<&str> = a.split('.').collect();
    if a.contains(':') || parts.len() >= 4 || parts.iter().any(|p| p.parse::<u8>().is_err()) {
        return None;
    }
    let mut full: Vec<&str> = parts;
    full.resize(4, "0");
    Some(match len {
        Some(l) => format!("{}/{l}", full.join(".")),
        None => full.join("."),
    })
}

/// `-m iprange --src-range A-B`: the range as CIDRs.
fn parse_range(s: &str, fam: Family) -> Result<Vec<Cidr>, Bad> {
    let (a, b) = s.split_once('-').unwrap_or((s, s));
    let one = |x: &str| -> Result<u128, Bad> {
        let c = parse_addr(x, fam)?;
        let (_, lo, _) = crate::addrset::cidr_range(&c);
        Ok(lo)
    };
    let (lo, hi) = (one(a)?, one(b)?);
    if lo > hi {
        return Err(Bad::syntax(s, "the range ends before it starts"));
    }
    let mut set = crate::addrset::AddrSet::default();
    set.insert(lo, hi);
    Ok(set.to_cidrs(fam))
}

fn parse_addr(s: &str, fam: Family) -> Result<Cidr, Bad> {
    if let Some(long) = expand_short_v4(s)
        && long != s
    {
        return parse_addr(&long, fam);
    }
    let cidr = match s.split_once('/') {
        // A dotted netmask, as older tools write it: 10.0.0.0/255.0.0.0.
        Some((a, m)) if m.contains('.') => {
            let mask: Ipv4Addr = m
                .parse()
                .map_err(|_| Bad::syntax(s, format!("{m:?} is not a netmask")))?;
            let bits = u32::from(mask);
            let len = bits.leading_ones();
            if bits.checked_shl(len).unwrap_or(0) != 0 {
                return Err(Bad::syntax(s, format!("{m:?} is not a contiguous netmask")));
            }
            Cidr::parse_masked(&format!("{a}/{len}"))
        }
        _ => Cidr::parse_masked(s),
    };
    let cidr = cidr.map_err(|e| {
        if s.chars().any(|c| c.is_ascii_alphabetic()) && !s.contains(':') {
            Bad::unsupported(s, "a host name: write the address (iptables resolves names once, when the rule is added)")
        } else {
            Bad::syntax(s, e)
        }
    })?;
    let is_v6 = matches!(cidr, Cidr::V6(..));
    if is_v6 != (fam == Family::V6) {
        return Err(Bad::syntax(
            s,
            format!(
                "an {} address in {} rules{}",
                if is_v6 { "IPv6" } else { "IPv4" },
                fam.name(),
                if is_v6 {
                    " (ip6tables rules need an ip6tables-save header, `ip6tables` commands or --family 6)"
                } else {
                    ""
                }
            ),
        ));
    }
    Ok(cidr)
}

/// `22`, `1024:65535`, `:1023`, `1024:`, or a service name.
pub(crate) fn parse_port_range(s: &str) -> Result<(u16, u16), Bad> {
    let one = |t: &str, default: u16| -> Result<u16, Bad> {
        if t.is_empty() {
            return Ok(default);
        }
        t.parse::<u16>()
            .ok()
            .or_else(|| service_port(t))
            .ok_or_else(|| Bad::syntax(s, format!("{t:?} is not a port number (0-65535)")))
    };
    let (lo, hi) = match s.split_once(':') {
        Some((a, b)) => (one(a, 0)?, one(b, 65535)?),
        None => {
            let p = one(s, 0)?;
            (p, p)
        }
    };
    // iptables swaps a backwards range; so does the importer.
    Ok((lo.min(hi), lo.max(hi)))
}

fn service_port(name: &str) -> Option<u16> {
    Some(match name {
        "ftp-data" => 20,
        "ftp" => 21,
        "ssh" => 22,
        "telnet" => 23,
        "smtp" => 25,
        "domain" => 53,
        "bootps" => 67,
        "bootpc" => 68,
        "http" | "www" => 80,
        "pop3" => 110,
        "ntp" => 123,
        "imap" | "imap2" => 143,
        "snmp" => 161,
        "ldap" => 389,
        "https" => 443,
        "smtps" | "submissions" => 465,
        "submission" => 587,
        "ldaps" => 636,
        "imaps" => 993,
        "pop3s" => 995,
        "mysql" => 3306,
        "postgresql" => 5432,
        _ => return None,
    })
}

/// `FIN,SYN,RST,PSH,ACK,URG`, `ALL`, `NONE`.
pub(crate) fn parse_tcp_flags(s: &str) -> Result<u8, Bad> {
    let mut f = 0;
    for name in s.split(',') {
        f |= match name.to_ascii_uppercase().as_str() {
            "ALL" => tcp::ALL,
            "NONE" => 0,
            n => tcp::flag_by_name(n).ok_or_else(|| {
                Bad::syntax(
                    format!("--tcp-flags {s}"),
                    format!("unknown TCP flag {name:?}"),
                )
            })?,
        };
    }
    Ok(f)
}

/// Flags as iptables-save prints them (`FIN,SYN,RST,PSH,ACK,URG`, `NONE`).
pub(crate) fn tcp_flag_names(f: u8) -> String {
    let v: Vec<&str> = tcp::flag_names(f).collect();
    if v.is_empty() {
        "NONE".into()
    } else {
        v.join(",")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cmd(s: &str) -> Command {
        let w: Vec<String> = s.split_whitespace().map(String::from).collect();
        parse_command(&w, Family::V4).unwrap_or_else(|e| panic!("{s}: {e:?}"))
    }

    fn bad(s: &str, fam: Family) -> Bad {
        let w: Vec<String> = s.split_whitespace().map(String::from).collect();
        parse_command(&w, fam).expect_err(s)
    }

    #[test]
    fn seed_rules_parse() {
        let c = cmd("-A INPUT -p tcp -m tcp --tcp-flags FIN,SYN,RST,PSH,ACK,URG NONE -j DROP");
        assert_eq!(c.op, Op::Append("INPUT".into()));
        assert_eq!(c.spec.tcp_flags, [(false, tcp::ALL, 0)]);
        assert_eq!(c.spec.target, Some(Target::Drop));
        let c = cmd("-A INPUT -p tcp ! --syn -m state --state NEW -j DROP");
        assert_eq!(c.spec.tcp_flags, [(true, SYN_MASK, tcp::SYN)]);
        assert_eq!(c.spec.states, [(false, ct::NEW)]);
        let c = cmd(
            "-A INPUT -p tcp -m tcp ! --tcp-flags FIN,SYN,RST,ACK SYN -m state --state NEW -j DROP",
        );
        assert_eq!(c.spec.tcp_flags, [(true, SYN_MASK, tcp::SYN)]);
        let c = cmd("-I INPUT -m state --state ESTABLISHED,RELATED -j ACCEPT");
        assert_eq!(c.op, Op::Insert("INPUT".into(), 1));
        assert_eq!(c.spec.states, [(false, ct::ESTABLISHED | ct::RELATED)]);
        let c = cmd("-A INPUT -s 203.0.113.7/32 -p tcp -m tcp --dport 22 -j ACCEPT");
        assert_eq!(
            c.spec.src,
            Some((false, vec!["203.0.113.7".parse().unwrap()]))
        );
        assert_eq!(c.spec.dports, [(false, vec![(22, 22)])]);
        let c = cmd("-P INPUT DROP");
        assert_eq!(c.op, Op::Policy("INPUT".into(), "DROP".into()));
    }

    #[test]
    fn ports_lists_ranges_names_and_old_negation() {
        let c = cmd("-A INPUT -p udp -m multiport --dports 53,6000:6010,ntp -j ACCEPT");
        assert_eq!(
            c.spec.dports,
            [(false, vec![(53, 53), (6000, 6010), (123, 123)])]
        );
        let c = cmd("-A INPUT -p tcp --dport :1023 -s ! 10.0.0.0/255.0.0.0 -j DROP");
        assert_eq!(c.spec.dports, [(false, vec![(0, 1023)])]);
        assert_eq!(
            c.spec.src,
            Some((true, vec!["10.0.0.0/8".parse().unwrap()]))
        );
        let c = cmd("-A INPUT -p tcp --dport 2000:1000 -j DROP");
        assert_eq!(c.spec.dports, [(false, vec![(1000, 2000)])]);
    }

    #[test]
    fn counters_and_noise_options_are_skipped() {
        let c = cmd("[5:300] -A INPUT -w 5 -p tcp --dport 80 -c 1 2 -j ACCEPT");
        assert_eq!(c.spec.dports, [(false, vec![(80, 80)])]);
        assert_eq!(cmd("-L -n -v").op, Op::NoEffect("only lists rules"));
        assert_eq!(cmd("-F").op, Op::Flush(None));
        assert_eq!(cmd("-F INPUT").op, Op::Flush(Some("INPUT".into())));
    }

    #[test]
    fn unsupported_parts_are_kept_for_later() {
        let c = cmd("-A INPUT -p tcp --dport 22 -m limit --limit 3/min --limit-burst 5 -j ACCEPT");
        assert!(c.unsupported.is_none());
        let r = c.spec.rate.unwrap();
        assert_eq!(r.rate.map(|r| r.to_string()).as_deref(), Some("3/1m"));
        assert_eq!(r.burst, Some(5));
        let c = cmd("-A INPUT -j LOG --log-prefix x --log-level 4");
        assert!(c.unsupported.is_none() && c.spec.target.is_none());
        assert_eq!(c.spec.log.as_deref(), Some("LOG"));
        let c = cmd("-A INPUT -j MYCHAIN");
        assert_eq!(c.spec.target, Some(Target::Chain("MYCHAIN".into())));
        let b = bad("-A INPUT -s example.com -j ACCEPT", Family::V4);
        assert!(matches!(b.kind, BadKind::Unsupported(ref w) if w.contains("host name")));
    }

    #[test]
    fn syntax_errors_name_the_value() {
        assert_eq!(
            bad("-A INPUT --dport 22 -j ACCEPT", Family::V4).value,
            "--dport/--sport"
        );
        assert_eq!(bad("-A INPUT -p foo -j ACCEPT", Family::V4).value, "-p foo");
        assert_eq!(
            bad("-A INPUT -s 10.0.0.0/33 -j DROP", Family::V4).value,
            "10.0.0.0/33"
        );
        assert_eq!(
            bad("-A INPUT -s 2001:db8::1 -j DROP", Family::V4).value,
            "2001:db8::1"
        );
        assert_eq!(
            bad("-A INPUT -s 192.0.2.1 -j DROP", Family::V6).value,
            "192.0.2.1"
        );
        assert_eq!(
            bad(
                "-A INPUT -p tcp --dport 80 -j ACCEPT iptables -A INPUT",
                Family::V4
            )
            .value,
            "iptables"
        );
        assert_eq!(
            bad("-A INPUT -p icmp --icmpv6-type 128 -j ACCEPT", Family::V4).value,
            "--icmpv6-type 128"
        );
        assert_eq!(bad("-p tcp", Family::V4).value, "-p tcp");
        assert_eq!(bad("-A INPUT ! -j DROP", Family::V4).value, "! -j");
        assert_eq!(
            bad("-A INPUT -m state --state OLD -j DROP", Family::V4).value,
            "--state OLD"
        );
    }

    #[test]
    fn icmp_types_by_name_and_number() {
        assert_eq!(
            parse_icmp_type("echo-request", Family::V4).unwrap(),
            Some((8, None))
        );
        assert_eq!(
            parse_icmp_type("3/4", Family::V4).unwrap(),
            Some((3, Some(4)))
        );
        assert_eq!(
            parse_icmp_type("fragmentation-needed", Family::V4).unwrap(),
            Some((3, Some(4)))
        );
        assert_eq!(
            parse_icmp_type("echo-request", Family::V6).unwrap(),
            Some((128, None))
        );
        assert_eq!(
            parse_icmp_type("neighbor-solicitation", Family::V6).unwrap(),
            Some((135, None))
        );
        assert_eq!(parse_icmp_type("any", Family::V4).unwrap(), None);
        assert!(parse_icmp_type("bogus", Family::V4).is_err());
    }

    #[test]
    fn flag_names_round_trip() {
        for f in [0u8, tcp::ALL, SYN_MASK, tcp::SYN | tcp::FIN, 0xff] {
            assert_eq!(parse_tcp_flags(&tcp_flag_names(f)).unwrap(), f);
        }
        assert_eq!(tcp_flag_names(tcp::ALL), "FIN,SYN,RST,PSH,ACK,URG");
    }
}
