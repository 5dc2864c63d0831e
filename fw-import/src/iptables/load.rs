//! Replaying a file: iptables-save blocks (`*filter` … `COMMIT`) and iptables commands, into
//! the tables and chains each family ends up with; then [`super::flatten`] turns them into the
//! one INPUT chain fw's check walks. Every line that cannot be taken is a [`Problem`], and
//! replay goes on, so a file's problems are all reported at once.

use std::collections::BTreeMap;

use super::{
    lex::{self, LexError, Line},
    rule::{self, Bad, BadKind, Command, Op, Spec},
};
use crate::{Family, FamilyExt, ImportOptions, Problem, ProblemKind, pipeline::NatMap};

/// A rule of the final INPUT chain.
#[derive(Clone, Debug)]
pub(crate) struct InputRule {
    pub line: usize,
    /// The line as written (trimmed).
    pub text: String,
    pub spec: Spec,
    /// What fw cannot take in this rule: a problem only if the rule is reached from INPUT.
    pub bad: Option<Problem>,
}

#[derive(Clone, Debug)]
pub(crate) struct PolicyLine {
    pub accept: bool,
    pub line: usize,
    pub text: String,
}

/// What one family's INPUT comes to: the chain fw's check walks (user chains inlined, the
/// mangle and raw tables' drops in front) and its policy.
#[derive(Clone, Debug, Default)]
pub(crate) struct Chains {
    /// The file says something about this family's filter table.
    pub present: bool,
    pub input: Vec<InputRule>,
    /// `None`: never set, iptables' default (ACCEPT).
    pub policy: Option<PolicyLine>,
}

/// A chain as replayed.
#[derive(Clone, Debug, Default)]
pub(crate) struct Chain {
    pub rules: Vec<InputRule>,
    pub policy: Option<PolicyLine>,
    /// Where it was created (`-N` or `:NAME -`), for user-defined chains.
    pub created: Option<usize>,
}

/// One family's tables as replayed: table → chain → rules.
#[derive(Clone, Debug, Default)]
pub(crate) struct Replayed {
    pub present: bool,
    pub tables: BTreeMap<String, BTreeMap<String, Chain>>,
}

impl Replayed {
    pub(crate) fn chain(&self, table: &str, chain: &str) -> Option<&Chain> {
        self.tables.get(table).and_then(|t| t.get(chain))
    }

    fn chain_mut(&mut self, table: &str, chain: &str) -> &mut Chain {
        self.tables
            .entry(table.to_string())
            .or_default()
            .entry(chain.to_string())
            .or_default()
    }
}

/// What the importer did with a line that is not (or no longer) an INPUT rule.
#[derive(Clone, Debug)]
pub(crate) struct LineLog {
    pub line: usize,
    pub text: String,
    pub what: String,
}

#[derive(Debug, Default)]
pub(crate) struct Loaded {
    pub chains: [Chains; 2],
    pub log: Vec<LineLog>,
    pub problems: Vec<Problem>,
    /// Notes about the file as a whole (skipped tables, interfaces, NAT, ...).
    pub notes: Vec<String>,
    /// Ports the nat table redirects, by family.
    pub nat: [NatMap; 2],
    /// What the rules are for in messages ("iptables", "nftables"); empty: iptables.
    pub tool: &'static str,
    /// Lines of logging rules (skipped).
    pub log_lines: Vec<usize>,
}

struct Block {
    table: String,
    family: Family,
}

/// Programs whose lines are iptables commands.
fn program_family(word: &str) -> Option<Family> {
    let base = word.rsplit('/').next().unwrap_or(word);
    match base {
        "iptables" | "iptables-legacy" | "iptables-nft" => Some(Family::V4),
        "ip6tables" | "ip6tables-legacy" | "ip6tables-nft" => Some(Family::V6),
        _ => None,
    }
}

/// Commands a firewall script may contain that change no rule.
fn harmless_command(word: &str) -> Option<&'static str> {
    let base = word.rsplit('/').next().unwrap_or(word);
    Some(match base {
        "iptables-save"
        | "ip6tables-save"
        | "iptables-legacy-save"
        | "ip6tables-legacy-save"
        | "iptables-nft-save"
        | "ip6tables-nft-save" => "prints the rules",
        "service" | "systemctl" | "rc-service" | "update-rc.d" | "chkconfig" => "manages services",
        "netfilter-persistent" | "iptables-persistent" => "saves or loads the rules at boot",
        "echo" | "printf" | "true" | "false" | ":" | "set" | "exit" | "return" | "shift"
        | "sleep" | "logger" | "wait" | "unset" | "readonly" | "local" | "umask" | "cd" => {
            "shell housekeeping"
        }
        "modprobe" | "insmod" | "rmmod" | "lsmod" => "loads a kernel module",
        "sysctl" => "sets a kernel parameter",
        "yum" | "dnf" | "apt-get" | "apt" | "aptitude" | "pacman" | "zypper" | "apk" | "dpkg"
        | "rpm" | "snap" | "pip" => "manages packages",
        "sed" | "grep" | "cat" | "awk" | "cut" | "tr" | "sort" | "head" | "tail" | "tee"
        | "test" | "[" | "[[" | "mkdir" | "touch" | "chmod" | "chown" | "cp" | "mv" | "ln"
        | "rm" | "date" | "hostname" | "id" | "whoami" | "which" | "command" | "type" => {
            "reads or writes files"
        }
        "ip" | "ifconfig" | "route" | "tc" | "ethtool" | "brctl" | "ss" | "netstat" | "ping" => {
            "configures or shows the network, not the rules"
        }
        "ebtables" | "arptables" | "ebtables-save" | "arptables-save" => {
            "bridge/ARP rules, which fw does not replace"
        }
        "if" | "then" | "else" | "elif" | "fi" | "do" | "done" | "for" | "while" | "until"
        | "case" | "esac" | "{" | "}" => "shell control flow",
        _ => return None,
    })
}

/// Guess a block's family from what its rules contain.
fn infer_family<'a>(lines: impl Iterator<Item = &'a Line>) -> Option<Family> {
    let (mut v4, mut v6) = (false, false);
    for l in lines {
        let Ok(words) = lex::words(&l.text, false) else {
            continue;
        };
        let mut prev = "";
        for w in &words {
            match w.as_str() {
                "ipv6-icmp" | "icmpv6" | "icmp6" | "--icmpv6-type" => v6 = true,
                "--icmp-type" => v4 = true,
                "icmp" if prev == "-p" || prev == "--protocol" => v4 = true,
                _ => {}
            }
            if matches!(
                prev,
                "-s" | "--source" | "--src" | "-d" | "--destination" | "--dst"
            ) {
                for a in w.split(',') {
                    let a = a.split('/').next().unwrap_or(a);
                    if a.parse::<std::net::Ipv6Addr>().is_ok() {
                        v6 = true;
                    } else if a.parse::<std::net::Ipv4Addr>().is_ok() {
                        v4 = true;
                    }
                }
            }
            prev = w;
        }
    }
    match (v4, v6) {
        (true, false) => Some(Family::V4),
        (false, true) => Some(Family::V6),
        _ => None,
    }
}

pub(crate) fn load(file: &str, text: &str, opts: &ImportOptions) -> Loaded {
    load_lines(file, super::script::expand(lex::logical_lines(text)), opts)
}

/// Replay lines made elsewhere (ufw's rules inside ufw's own framework).
pub(crate) fn load_lines(
    file: &str,
    lines: super::script::Expanded,
    opts: &ImportOptions,
) -> Loaded {
    let mut st = Loader {
        file,
        out: Loaded::default(),
        replayed: [Replayed::default(), Replayed::default()],
        block: None,
        header: None,
        default: opts.family,
    };
    for (l, note) in &lines.skipped {
        st.log(l, note.clone());
    }
    st.out.problems.extend(lines.problems.iter().cloned());
    let lines = lines.lines;
    for (idx, l) in lines.iter().enumerate() {
        if let Err(p) = st.line(l, &lines[idx..]) {
            st.out.problems.push(p);
        }
    }
    if let Some(b) = &st.block {
        let last = lines.last();
        st.out.problems.push(Problem::new(
            ProblemKind::Syntax,
            last.map_or(0, |l| l.no),
            format!("*{}", b.table),
            "the table is never committed (missing COMMIT)",
            last.map(|l| l.text.trim().to_string()).unwrap_or_default(),
        ));
    }
    let Loader {
        mut out, replayed, ..
    } = st;
    if !out.log_lines.is_empty() {
        out.notes.push(format!(
            "Logging rules ({}) are skipped: they decide nothing. fw counts every drop by its reason (`fw status`), and `fw run --log` prints each drop.",
            crate::lines_text(&out.log_lines)
        ));
    }
    for fam in [Family::V4, Family::V6] {
        super::flatten::finish(&replayed[fam.idx()], fam, opts, &mut out);
    }
    out
}

struct Loader<'a> {
    file: &'a str,
    out: Loaded,
    replayed: [Replayed; 2],
    block: Option<Block>,
    /// Family named by the last `# Generated by ip6tables-save` style header.
    header: Option<Family>,
    default: Option<Family>,
}

type Res = Result<(), Problem>;

impl Loader<'_> {
    fn err(&self, l: &Line, bad: Bad) -> Problem {
        let text = l.text.trim().to_string();
        let _ = self.file;
        match bad.kind {
            BadKind::Syntax(message) => {
                Problem::new(ProblemKind::Syntax, l.no, bad.value, message, text)
            }
            BadKind::Unsupported(reason) => {
                Problem::new(ProblemKind::Unsupported, l.no, bad.value, reason, text)
            }
        }
    }

    fn log(&mut self, l: &Line, what: impl Into<String>) {
        self.out.log.push(LineLog {
            line: l.no,
            text: l.text.trim().to_string(),
            what: what.into(),
        });
    }

    fn fam(&mut self, f: Family) -> &mut Replayed {
        &mut self.replayed[f.idx()]
    }

    fn line(&mut self, l: &Line, rest: &[Line]) -> Res {
        let t = l.text.trim();
        if t.is_empty() {
            return Ok(());
        }
        if t.starts_with('#') {
            if self.block.is_none() && t.contains("Generated by") {
                if t.contains("ip6tables") {
                    self.header = Some(Family::V6);
                } else if t.contains("iptables") {
                    self.header = Some(Family::V4);
                }
            }
            return Ok(());
        }
        if let Some(table) = t.strip_prefix('*') {
            return self.table(l, table.trim(), rest);
        }
        if let Some(chain) = t.strip_prefix(':') {
            return self.chain_line(l, chain);
        }
        if t == "COMMIT" {
            if self.block.take().is_none() {
                return Err(self.err(l, Bad::syntax("COMMIT", "COMMIT without a table (*filter)")));
            }
            return Ok(());
        }
        self.command(l, t)
    }

    fn table(&mut self, l: &Line, name: &str, rest: &[Line]) -> Res {
        if let Some(b) = self.block.take() {
            // Read on as if the COMMIT had been there, so later lines are still checked.
            let e = self.err(
                l,
                Bad::syntax(
                    format!("*{name}"),
                    format!("a new table before the {} table's COMMIT", b.table),
                ),
            );
            self.open(l, name, rest);
            return Err(e);
        }
        self.open(l, name, rest);
        Ok(())
    }

    fn open(&mut self, l: &Line, name: &str, rest: &[Line]) {
        let until_commit = rest
            .iter()
            .skip(1)
            .take_while(|x| x.text.trim() != "COMMIT");
        let family = self
            .header
            .or_else(|| infer_family(until_commit))
            .or(self.default)
            .unwrap_or(Family::V4);
        // iptables-restore replaces the whole table.
        let r = self.fam(family);
        r.tables.insert(name.to_string(), BTreeMap::new());
        if name == "filter" {
            r.present = true;
        }
        self.log(
            l,
            format!(
                "{} {name} table ({} rules replace any before)",
                family.name(),
                family.tool()
            ),
        );
        self.block = Some(Block {
            table: name.to_string(),
            family,
        });
    }

    /// `:INPUT DROP [0:0]` or `:user-chain - [0:0]`.
    fn chain_line(&mut self, l: &Line, s: &str) -> Res {
        let Some(b) = &self.block else {
            return Err(self.err(
                l,
                Bad::syntax(
                    format!(":{s}"),
                    "a chain line outside a table (*filter … COMMIT)",
                ),
            ));
        };
        let (table, family) = (b.table.clone(), b.family);
        let mut parts = s.split_whitespace();
        let (Some(chain), Some(policy)) = (parts.next(), parts.next()) else {
            return Err(self.err(
                l,
                Bad::syntax(format!(":{s}"), "expected `:CHAIN POLICY [packets:bytes]`"),
            ));
        };
        if policy == "-" {
            self.fam(family).chain_mut(&table, chain).created = Some(l.no);
            self.log(l, "a user-defined chain");
            return Ok(());
        }
        self.policy(
            l,
            &table,
            family,
            chain,
            policy,
            &format!(":{chain} {policy}"),
        )
    }

    fn policy(
        &mut self,
        l: &Line,
        table: &str,
        family: Family,
        chain: &str,
        policy: &str,
        value: &str,
    ) -> Res {
        let accept = match policy {
            "ACCEPT" => true,
            "DROP" => false,
            _ => {
                return Err(self.err(l, Bad::syntax(value, "a chain policy is ACCEPT or DROP")));
            }
        };
        if !matches!(
            chain,
            "INPUT" | "OUTPUT" | "FORWARD" | "PREROUTING" | "POSTROUTING"
        ) {
            return Err(self.err(
                l,
                Bad::syntax(
                    value,
                    format!("{chain} is not a built-in chain; only those have a policy"),
                ),
            ));
        }
        let r = self.fam(family);
        if table == "filter" {
            r.present = true;
        }
        r.chain_mut(table, chain).policy = Some(PolicyLine {
            accept,
            line: l.no,
            text: l.text.trim().to_string(),
        });
        let what = match (table, chain, accept) {
            ("filter", "INPUT", true) => "INPUT default ACCEPT (checked below: fw is default-drop)",
            ("filter", "INPUT", false) => "INPUT default DROP: fw drops what no rule allows",
            (_, "OUTPUT", true) => "outgoing traffic not filtered: what fw does",
            (_, "OUTPUT", false) => "OUTPUT default DROP (see below)",
            (_, "FORWARD", _) => {
                "FORWARD: forwarded traffic is not fw's (keep these rules in iptables)"
            }
            (_, _, true) => "no effect (ACCEPT)",
            (_, _, false) => "a DROP policy (see below)",
        };
        self.log(l, what);
        Ok(())
    }

    fn command(&mut self, l: &Line, t: &str) -> Res {
        let first = t.split_whitespace().next().unwrap_or("");
        let (words, family, in_script) = if first.starts_with('-') || first.starts_with('[') {
            let shell = self.block.is_none();
            let words = lex::words(t, shell).map_err(|e| self.lex_err(l, e))?;
            let family = match &self.block {
                Some(b) => b.family,
                None => self
                    .default
                    .or_else(|| infer_family(std::iter::once(l)))
                    .unwrap_or(Family::V4),
            };
            (words, family, false)
        } else {
            // Lines that change no rule may use any shell syntax (`iptables-save | tee ...`).
            let prog = t
                .split_whitespace()
                .find(|w| *w != "sudo" && !w.contains('='))
                .unwrap_or_default();
            if let Some(what) = harmless_command(prog) {
                self.log(l, format!("skipped: {what}"));
                return Ok(());
            }
            let base = prog.rsplit('/').next().unwrap_or(prog);
            if base.starts_with("iptables-restore") || base.starts_with("ip6tables-restore") {
                return Err(self.err(
                    l,
                    Bad::unsupported(
                        prog,
                        "loads rules from another file: import that file instead",
                    ),
                ));
            }
            if let Some(why) = foreign_firewall(base) {
                return Err(self.err(l, Bad::unsupported(prog, why)));
            }
            let mut words = lex::words(t, true).map_err(|e| self.lex_err(l, e))?;
            while words
                .first()
                .is_some_and(|w| w == "sudo" || w.contains('='))
            {
                words.remove(0);
            }
            let prog = words.first().cloned().unwrap_or_default();
            let Some(family) = program_family(&prog) else {
                return Err(self.err(
                    l,
                    Bad::unsupported(
                        prog.as_str(),
                        "not an iptables command, iptables-save line or comment, nor a command known to leave the rules alone: the importer cannot tell what it does to the rules (remove the line if it changes none)",
                    ),
                ));
            };
            words.remove(0);
            (words, family, true)
        };
        if in_script && self.block.is_some() {
            return Err(self.err(
                l,
                Bad::syntax(
                    first,
                    "an iptables command inside an iptables-save table (before COMMIT)",
                ),
            ));
        }
        if words.is_empty() {
            return Ok(());
        }
        let mut cmd = rule::parse_command(&words, family).map_err(|b| self.err(l, b))?;
        if let Some(b) = &self.block {
            if words.iter().any(|w| w == "-t" || w == "--table") && cmd.table != b.table {
                return Err(self.err(
                    l,
                    Bad::syntax(format!("-t {}", cmd.table), "-t inside a table block"),
                ));
            }
            cmd.table = b.table.clone();
        }
        if let Some(only) = cmd.only
            && only != family
        {
            self.log(
                l,
                format!(
                    "only for {}: skipped in {} rules",
                    only.name(),
                    family.name()
                ),
            );
            return Ok(());
        }
        self.apply(l, cmd, family)
    }

    fn lex_err(&self, l: &Line, e: LexError) -> Problem {
        match e {
            LexError::Unterminated(q) => self.err(
                l,
                Bad::syntax(q.to_string(), "a quote that is never closed"),
            ),
            LexError::Shell(s) => self.err(
                l,
                Bad::unsupported(
                    s,
                    "shell syntax the importer does not follow (command substitution, pipes into iptables, `&&` chains of rule changes): run the script with `iptables` replaced by `echo iptables` and import what it prints",
                ),
            ),
        }
    }

    fn apply(&mut self, l: &Line, cmd: Command, family: Family) -> Res {
        let Command {
            op,
            table,
            spec,
            unsupported,
            ..
        } = cmd;
        let text = l.text.trim().to_string();
        let mut rule = InputRule {
            line: l.no,
            text,
            spec,
            bad: None,
        };
        let rule_op = matches!(
            op,
            Op::Append(_) | Op::Insert(..) | Op::Replace(..) | Op::Delete(..)
        );
        if rule_op && rule.spec.log.is_some() && rule.spec.target.is_none() {
            // LOG decides nothing, whatever it matches (with -m limit or not).
            let t = rule.spec.log.clone().unwrap_or_default();
            self.out.log_lines.push(l.no);
            self.log(
                l,
                format!("skipped: -j {t} only logs (fw counts every drop by reason: `fw status`; `fw run --log` prints them)"),
            );
            return Ok(());
        }
        if let Some(b) = unsupported {
            if !rule_op {
                return Err(self.err(l, b));
            }
            rule.bad = Some(self.err(l, b));
        }
        let r = self.fam(family);
        if table == "filter" {
            r.present = true;
        }
        match op {
            Op::Append(c) => r.chain_mut(&table, &c).rules.push(rule),
            Op::Insert(c, n) => {
                let rules = &mut r.chain_mut(&table, &c).rules;
                if n > rules.len() + 1 {
                    let len = rules.len();
                    return Err(self.err(
                        l,
                        Bad::syntax(
                            format!("-I {c} {n}"),
                            format!("{c} has {len} rules here; iptables refuses index {n}"),
                        ),
                    ));
                }
                rules.insert(n - 1, rule);
            }
            Op::Replace(c, n) => {
                let rules = &mut r.chain_mut(&table, &c).rules;
                let len = rules.len();
                let Some(slot) = rules.get_mut(n - 1) else {
                    return Err(self.err(
                        l,
                        Bad::syntax(format!("-R {c} {n}"), format!("{c} has {len} rules here")),
                    ));
                };
                let old = std::mem::replace(slot, rule);
                self.log_replaced(&old, l.no);
            }
            Op::Delete(c, n) => {
                let rules = &mut r.chain_mut(&table, &c).rules;
                let pos = match n {
                    Some(n) if n <= rules.len() => Some(n - 1),
                    Some(_) => None,
                    None => rules.iter().position(|x| x.spec == rule.spec),
                };
                let Some(pos) = pos else {
                    if l.may_fail {
                        self.log(
                            l,
                            "deletes a rule that is not there; the script ignores the failure",
                        );
                        return Ok(());
                    }
                    return Err(self.err(
                        l,
                        Bad::syntax(
                            format!("-D {c}"),
                            format!("no such rule in {c} here (iptables would refuse the delete)"),
                        ),
                    ));
                };
                let old = rules.remove(pos);
                self.log_replaced(&old, l.no);
                self.log(l, format!("deletes line {}'s rule", old.line));
            }
            Op::Policy(chain, p) => {
                let v = if table == "filter" {
                    format!("-P {chain} {p}")
                } else {
                    format!("-t {table} -P {chain} {p}")
                };
                return self.policy(l, &table, family, &chain, &p, &v);
            }
            Op::Flush(chain) => {
                let t = r.tables.entry(table.clone()).or_default();
                let mut removed = Vec::new();
                for (name, ch) in t.iter_mut() {
                    if chain.as_deref().is_none_or(|c| c == name) {
                        removed.append(&mut ch.rules);
                    }
                }
                for old in &removed {
                    self.log_replaced(old, l.no);
                }
                self.log(
                    l,
                    format!(
                        "flushes {} {}",
                        family.tool(),
                        chain.as_deref().unwrap_or("every chain of the table")
                    ),
                );
            }
            Op::NewChain(c) => {
                r.chain_mut(&table, &c).created = Some(l.no);
                self.log(l, "a user-defined chain");
            }
            Op::DeleteChain(c) => {
                let t = r.tables.entry(table.clone()).or_default();
                match c {
                    Some(c) => {
                        t.remove(&c);
                    }
                    None => t.retain(|_, ch| ch.created.is_none()),
                }
                self.log(l, "deletes user-defined chains");
            }
            Op::NoEffect(what) => self.log(l, format!("skipped: {what}")),
        }
        Ok(())
    }

    fn log_replaced(&mut self, old: &InputRule, by: usize) {
        self.out.log.push(LineLog {
            line: old.line,
            text: old.text.clone(),
            what: format!("removed again by line {by}"),
        });
    }
}

/// Commands of other firewalls: their rules are not iptables rules the importer can follow.
fn foreign_firewall(base: &str) -> Option<&'static str> {
    Some(match base {
        "ufw" => {
            "ufw commands change ufw's rules: import those with `fw import ufw /etc/ufw/user.rules`"
        }
        "nft" => {
            "nft commands change nftables rules: import them with `nft -j list ruleset | fw import nft -`"
        }
        "firewall-cmd" => {
            "firewalld commands: import the rules it makes (`iptables-save` or `nft -j list ruleset`)"
        }
        "ipset" => {
            "ipsets: fw has no sets; list the addresses in the rules (or, for blocklists, wait for fw's blocklists)"
        }
        "source" | "." | "bash" | "sh" | "eval" | "exec" => {
            "runs other commands the importer cannot see: import what they do"
        }
        _ => return None,
    })
}

/// No condition beyond a comment and `! -i lo` (fw never sees lo).
pub(crate) fn matches_everything(s: &Spec) -> bool {
    let bare = Spec {
        comment: None,
        target: None,
        log: None,
        in_iface: s.in_iface.clone().filter(|(neg, i)| !(*neg && i == "lo")),
        ..s.clone()
    };
    bare == Spec::default()
}
