//! `fw import nft`: an nftables rule set as `nft -j list ruleset` prints it, turned into the
//! same tables and chains an iptables file replays to (base chains by hook: input → INPUT,
//! output → OUTPUT, forward → FORWARD, nat prerouting → the nat table, filter prerouting →
//! in front of INPUT; regular chains as user-defined chains) and imported with the same check
//! and notes. A rule is named by its handle (`nft -a list ruleset` shows them) where a line
//! number would be.

use std::collections::HashMap;

use fw_common::{
    Family,
    packet::{IPPROTO_ICMP, IPPROTO_ICMPV6, IPPROTO_TCP, IPPROTO_UDP},
};
use serde_json::Value;

mod limit;
mod values;

use values::{addrs, flag_bits, ports, render, strings};

use crate::{
    FamilyExt, ImportError, ImportOptions, Imported, Problem, ProblemKind,
    iptables::{
        load::{Chain, InputRule, LineLog, Loaded, PolicyLine, Replayed},
        rule::{Spec, Target, ct, parse_icmp_type, parse_proto},
    },
};

/// Why an expression cannot be imported (kind, the part, why).
type Bad = (ProblemKind, String, String);

fn unsupported(what: impl Into<String>, why: impl Into<String>) -> Bad {
    (ProblemKind::Unsupported, what.into(), why.into())
}

/// Import `nft -j list ruleset` output.
pub fn import(file: &str, text: &str, opts: &ImportOptions) -> Result<Imported, ImportError> {
    let root: Value = serde_json::from_str(text).map_err(|e| ImportError::Problems {
        file: file.to_string(),
        problems: vec![Problem {
            kind: ProblemKind::Syntax,
            line: Some(e.line()),
            value: "JSON".into(),
            message: format!("not `nft -j list ruleset` output: {e}"),
            text: String::new(),
        }],
    })?;
    let Some(items) = root.get("nftables").and_then(Value::as_array) else {
        return Err(ImportError::Nothing {
            file: file.to_string(),
            reason: "no \"nftables\" array (expected `nft -j list ruleset` output)".into(),
        });
    };
    let mut r = Reader::default();
    for it in items {
        r.item(it);
    }
    let mut loaded = Loaded {
        tool: "nftables",
        ..Loaded::default()
    };
    let replayed = r.replay(&mut loaded);
    for fam in [Family::V4, Family::V6] {
        crate::iptables::flatten::finish(&replayed[fam.idx()], fam, opts, &mut loaded);
    }
    crate::pipeline::import_loaded(file, loaded, opts)
}

#[derive(Clone, Debug)]
struct NftChain {
    family: String,
    table: String,
    name: String,
    base: Option<(String, String, i64, String)>, // (type, hook, priority, policy)
}

#[derive(Default)]
struct Reader {
    chains: Vec<NftChain>,
    rules: Vec<(String, String, String, u64, Vec<Value>)>, // family, table, chain, handle, expr
    sets: HashMap<(String, String), Vec<Value>>,
}

impl Reader {
    fn item(&mut self, it: &Value) {
        let s = |v: &Value, k: &str| v.get(k).and_then(Value::as_str).unwrap_or("").to_string();
        if let Some(c) = it.get("chain") {
            let base = c.get("hook").map(|_| {
                (
                    s(c, "type"),
                    s(c, "hook"),
                    c.get("prio").and_then(Value::as_i64).unwrap_or(0),
                    s(c, "policy"),
                )
            });
            self.chains.push(NftChain {
                family: s(c, "family"),
                table: s(c, "table"),
                name: s(c, "name"),
                base,
            });
        } else if let Some(rl) = it.get("rule") {
            let expr = rl
                .get("expr")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default();
            let handle = rl.get("handle").and_then(Value::as_u64).unwrap_or(0);
            self.rules.push((
                s(rl, "family"),
                s(rl, "table"),
                s(rl, "chain"),
                handle,
                expr,
            ));
        } else if let Some(set) = it.get("set") {
            let elem = set
                .get("elem")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default();
            self.sets.insert((s(set, "table"), s(set, "name")), elem);
        }
    }

    /// The families a table of nft family `f` holds rules for.
    fn families(f: &str) -> &'static [Family] {
        match f {
            "ip" => &[Family::V4],
            "ip6" => &[Family::V6],
            "inet" => &[Family::V4, Family::V6],
            _ => &[],
        }
    }

    fn replay(&self, out: &mut Loaded) -> [Replayed; 2] {
        let mut rep = [Replayed::default(), Replayed::default()];
        // Where each nft chain goes: (iptables table, chain name).
        let mut place: HashMap<(String, String, String), (String, String)> = HashMap::new();
        let mut base_count: HashMap<(usize, String, String), Vec<&NftChain>> = HashMap::new();
        for c in &self.chains {
            let key = (c.family.clone(), c.table.clone(), c.name.clone());
            let Some((ty, hook, _, _)) = &c.base else {
                continue;
            };
            let (t, ch) = match (ty.as_str(), hook.as_str()) {
                ("filter", "input") => ("filter", "INPUT"),
                ("filter", "output") => ("filter", "OUTPUT"),
                ("filter", "forward") => ("filter", "FORWARD"),
                ("filter", "prerouting") => ("mangle", "PREROUTING"),
                ("nat", "prerouting") => ("nat", "PREROUTING"),
                ("nat", "postrouting") => ("nat", "POSTROUTING"),
                ("nat", "output") => ("nat", "OUTPUT"),
                ("nat", "input") => ("nat", "INPUT"),
                ("route", "output") => ("mangle", "OUTPUT"),
                _ => continue,
            };
            place.insert(key, (t.to_string(), ch.to_string()));
            for f in Self::families(&c.family) {
                base_count
                    .entry((f.idx(), t.to_string(), ch.to_string()))
                    .or_default()
                    .push(c);
            }
        }
        let has_rules = |c: &NftChain| {
            self.rules
                .iter()
                .any(|(f, t, ch, _, _)| *f == c.family && *t == c.table && *ch == c.name)
        };
        // Several base chains on one hook: only one may decide anything.
        for ((fi, t, ch), list) in &base_count {
            let deciding: Vec<&&NftChain> = list
                .iter()
                .filter(|c| has_rules(c) || c.base.as_ref().is_some_and(|b| b.3 == "drop"))
                .collect();
            if deciding.len() > 1 {
                out.problems.push(Problem {
                    kind: ProblemKind::Unsupported,
                    line: None,
                    value: format!("{t} {ch}"),
                    message: format!(
                        "{} base chains on one hook ({}) for {}: the importer takes one",
                        deciding.len(),
                        deciding
                            .iter()
                            .map(|c| format!("{} {} {}", c.family, c.table, c.name))
                            .collect::<Vec<_>>()
                            .join(", "),
                        if *fi == 0 { "IPv4" } else { "IPv6" }
                    ),
                    text: String::new(),
                });
            }
        }
        for c in &self.chains {
            let Some((ty, hook, _, policy)) = &c.base else {
                continue;
            };
            let key = (c.family.clone(), c.table.clone(), c.name.clone());
            let Some((t, ch)) = place.get(&key) else {
                continue;
            };
            for f in Self::families(&c.family) {
                let r = &mut rep[f.idx()];
                if t == "filter" {
                    r.present = true;
                }
                let chain = r
                    .tables
                    .entry(t.clone())
                    .or_default()
                    .entry(ch.clone())
                    .or_default();
                if !policy.is_empty() && (policy == "drop" || chain.policy.is_none()) {
                    chain.policy = Some(PolicyLine {
                        accept: policy != "drop",
                        line: 0,
                        text: format!(
                            "table {} {} chain {} {{ type {ty} hook {hook}; policy {policy}; }}",
                            c.family, c.table, c.name
                        ),
                    });
                }
            }
        }
        for (family, table, chain, handle, expr) in &self.rules {
            let key = (family.clone(), table.clone(), chain.clone());
            let (t, ch) = match place.get(&key) {
                Some(p) => p.clone(),
                None => {
                    // A regular chain: it lives in every table its base chains map to.
                    (String::new(), format!("{table}:{chain}"))
                }
            };
            for f in Self::families(family) {
                let (specs, text, bad) = self.rule(expr, *f, table);
                let line = *handle as usize;
                if let Some((kind, value, message)) = bad {
                    out.problems
                        .push(Problem::new(kind, line, value, message, text));
                    continue;
                }
                for spec in specs {
                    let rule = InputRule {
                        line,
                        text: text.clone(),
                        spec,
                        bad: None,
                    };
                    let Some(rule) = rule.filter_family(*f) else {
                        continue;
                    };
                    let r = &mut rep[f.idx()];
                    if t.is_empty() {
                        let names: Vec<String> = r.tables.keys().cloned().collect();
                        for tn in names {
                            r.tables
                                .entry(tn)
                                .or_default()
                                .entry(ch.clone())
                                .or_insert_with(|| Chain {
                                    created: Some(0),
                                    ..Chain::default()
                                })
                                .rules
                                .push(rule.clone());
                        }
                    } else {
                        r.tables
                            .entry(t.clone())
                            .or_default()
                            .entry(ch.clone())
                            .or_default()
                            .rules
                            .push(rule);
                    }
                }
            }
        }
        // Regular chains whose rules came before a table of theirs existed: declare them.
        for c in self.chains.iter().filter(|c| c.base.is_none()) {
            for f in Self::families(&c.family) {
                let r = &mut rep[f.idx()];
                let names: Vec<String> = r.tables.keys().cloned().collect();
                for tn in names {
                    r.tables
                        .entry(tn)
                        .or_default()
                        .entry(format!("{}:{}", c.table, c.name))
                        .or_insert_with(|| Chain {
                            created: Some(0),
                            ..Chain::default()
                        });
                }
            }
        }
        out.log.push(LineLog {
            line: 0,
            text: "nft -j list ruleset".into(),
            what: "rules named by their handle (nft -a list ruleset)".into(),
        });
        rep
    }

    /// One rule's expressions as a spec, its text, and what cannot be imported.
    /// One rule's expressions as specs (one per ICMP type of a set of types), its text, and
    /// what cannot be imported.
    fn rule(&self, expr: &[Value], fam: Family, table: &str) -> (Vec<Spec>, String, Option<Bad>) {
        let mut s = Spec::default();
        let mut alts = Vec::new();
        let mut words = Vec::new();
        let mut bad = None;
        for e in expr {
            words.push(render(e));
            if bad.is_some() {
                continue;
            }
            if let Err(b) = self.expr(e, fam, table, &mut s, &mut alts) {
                bad = Some(b);
            }
        }
        if let Some(r) = &mut s.rate
            && r.kind == crate::iptables::rate::RateKind::Over
        {
            // Below the limit this rule matches nothing: the check sees it without its verdict.
            r.over_target = s.target.take();
        }
        let specs = if alts.is_empty() {
            vec![s]
        } else {
            alts.into_iter()
                .map(|a| Spec {
                    icmp: Some(a),
                    ..s.clone()
                })
                .collect()
        };
        (specs, words.join(" "), bad)
    }

    fn expr(
        &self,
        e: &Value,
        fam: Family,
        table: &str,
        s: &mut Spec,
        alts: &mut Vec<(bool, u8, Option<u8>)>,
    ) -> Result<(), Bad> {
        let Some((k, v)) = e.as_object().and_then(|o| o.iter().next()) else {
            return Ok(());
        };
        match k.as_str() {
            "match" => self.matcher(v, fam, table, s, alts),
            "accept" => set_target(s, Target::Accept),
            "drop" => set_target(s, Target::Drop),
            "reject" => set_target(s, Target::Reject),
            "return" => set_target(s, Target::Return),
            "jump" | "goto" => {
                let t = v.get("target").and_then(Value::as_str).unwrap_or("");
                let name = format!("{table}:{t}");
                set_target(
                    s,
                    if k == "jump" {
                        Target::Chain(name)
                    } else {
                        Target::Goto(name)
                    },
                )
            }
            "counter" | "comment" | "notrack_off" => Ok(()),
            "log" => {
                s.log = Some("log".into());
                Ok(())
            }
            "limit" => {
                s.rate = Some(limit::limit(v, None, render(e))?);
                Ok(())
            }
            "meter" | "set" => {
                s.rate = Some(limit::keyed(v, fam, render(e))?);
                Ok(())
            }
            "masquerade" | "snat" => set_target(s, Target::Nat(k.to_uppercase())),
            "redirect" | "dnat" => {
                let port = v.get("port").map(|p| p.to_string()).unwrap_or_default();
                let addr = v.get("addr").and_then(Value::as_str).unwrap_or("");
                s.nat_to = Some(if k == "redirect" {
                    port
                } else {
                    format!("{addr}:{port}")
                });
                set_target(
                    s,
                    Target::Nat(if k == "redirect" {
                        "REDIRECT".into()
                    } else {
                        "DNAT".into()
                    }),
                )
            }
            other => Err(unsupported(
                other,
                "an nftables statement fw has no equivalent for",
            )),
        }
    }

    fn matcher(
        &self,
        m: &Value,
        fam: Family,
        table: &str,
        s: &mut Spec,
        alts: &mut Vec<(bool, u8, Option<u8>)>,
    ) -> Result<(), Bad> {
        let op = m.get("op").and_then(Value::as_str).unwrap_or("==");
        let neg = op == "!=";
        if !matches!(op, "==" | "!=" | "in") {
            return Err(unsupported(op, "a comparison other than ==, != or in"));
        }
        let left = m.get("left").unwrap_or(&Value::Null);
        let right = self.resolve_set(m.get("right").unwrap_or(&Value::Null), table);
        if let Some(p) = left.get("payload") {
            let proto = p.get("protocol").and_then(Value::as_str).unwrap_or("");
            let field = p.get("field").and_then(Value::as_str).unwrap_or("");
            return match (proto, field) {
                ("tcp" | "udp", "dport" | "sport") => {
                    let pn = if proto == "tcp" {
                        IPPROTO_TCP
                    } else {
                        IPPROTO_UDP
                    };
                    set_proto(s, pn)?;
                    let ranges = ports(&right).ok_or_else(|| {
                        unsupported(render(&right), "a port value the importer cannot read")
                    })?;
                    if field == "dport" {
                        s.dports.push((neg, ranges));
                    } else {
                        s.sports.push((neg, ranges));
                    }
                    Ok(())
                }
                ("ip" | "ip6", "saddr" | "daddr") => {
                    let f = if proto == "ip" {
                        Family::V4
                    } else {
                        Family::V6
                    };
                    if f != fam {
                        s.fragment = Some(false); // never matches this family: see filter_family
                        s.comment = Some("\u{0}other-family".into());
                        return Ok(());
                    }
                    let list = addrs(&right).ok_or_else(|| {
                        unsupported(render(&right), "an address value the importer cannot read")
                    })?;
                    if field == "saddr" {
                        s.src = Some((neg, list));
                    } else {
                        s.dst = Some((neg, list));
                    }
                    Ok(())
                }
                ("ip" | "ip6", "protocol" | "nexthdr") => l4proto(s, &right, neg),
                ("icmp" | "icmpv6", "type") => {
                    let want = if proto == "icmp" {
                        Family::V4
                    } else {
                        Family::V6
                    };
                    if want != fam {
                        s.comment = Some("\u{0}other-family".into());
                        return Ok(());
                    }
                    set_proto(
                        s,
                        if proto == "icmp" {
                            IPPROTO_ICMP
                        } else {
                            IPPROTO_ICMPV6
                        },
                    )?;
                    let names = strings(&right);
                    if names.len() > 1 && neg {
                        return Err(unsupported(
                            render(&right),
                            "all ICMP types but a set: write the types allowed",
                        ));
                    }
                    for name in &names {
                        let t = parse_icmp_type(name, fam)
                            .map_err(|b| unsupported(b.value, "an unknown ICMP type"))?;
                        match t {
                            Some((ty, c)) if names.len() > 1 => alts.push((neg, ty, c)),
                            t => s.icmp = t.map(|(ty, c)| (neg, ty, c)),
                        }
                    }
                    Ok(())
                }
                ("tcp", "flags") => Err(unsupported(
                    "tcp flags",
                    "TCP flag matches in nftables form: the importer reads `tcp flags & (fin|syn|rst|ack) == syn` only through iptables-nft",
                )),
                _ => Err(unsupported(
                    format!("{proto} {field}"),
                    "a header field fw does not match",
                )),
            };
        }
        if let Some(meta) = left.get("meta") {
            let key = meta.get("key").and_then(Value::as_str).unwrap_or("");
            return match key {
                "iifname" | "iif" => {
                    let name = right.as_str().unwrap_or("").to_string();
                    s.in_iface = Some((neg, name));
                    Ok(())
                }
                "l4proto" => l4proto(s, &right, neg),
                "nfproto" => {
                    let f = match right.as_str() {
                        Some("ipv4") => Family::V4,
                        Some("ipv6") => Family::V6,
                        _ => return Err(unsupported(render(&right), "an unknown nfproto")),
                    };
                    if (f == fam) == neg {
                        s.comment = Some("\u{0}other-family".into());
                    }
                    Ok(())
                }
                "pkttype" => {
                    for t in strings(&right) {
                        s.dst_kind.push((neg, t.to_ascii_uppercase()));
                    }
                    Ok(())
                }
                other => Err(unsupported(
                    format!("meta {other}"),
                    "a meta match fw has no equivalent for",
                )),
            };
        }
        if let Some(c) = left.get("ct") {
            let key = c.get("key").and_then(Value::as_str).unwrap_or("");
            if key != "state" {
                return Err(unsupported(
                    format!("ct {key}"),
                    "a conntrack match other than ct state",
                ));
            }
            let mut bits = 0;
            for st in strings(&right) {
                bits |= match st.as_str() {
                    "new" => ct::NEW,
                    "established" => ct::ESTABLISHED,
                    "related" => ct::RELATED,
                    "invalid" => ct::INVALID,
                    "untracked" => ct::UNTRACKED,
                    o => return Err(unsupported(o, "an unknown conntrack state")),
                };
            }
            s.states.push((neg, bits));
            return Ok(());
        }
        if let Some(fib) = left.get("fib") {
            let res = fib.get("result").and_then(Value::as_str).unwrap_or("");
            if res == "type" {
                for t in strings(&right) {
                    s.dst_kind.push((neg, t.to_ascii_uppercase()));
                }
                return Ok(());
            }
        }
        if let Some(and) = left.get("&") {
            // tcp flags & (fin | syn | rst | ack) == syn
            let arr = and.as_array().cloned().unwrap_or_default();
            let is_flags = arr
                .first()
                .and_then(|x| x.get("payload"))
                .and_then(|p| p.get("field"))
                .and_then(Value::as_str)
                == Some("flags");
            if is_flags && arr.len() == 2 {
                let mask = flag_bits(&arr[1]);
                let comp = flag_bits(&right);
                set_proto(s, IPPROTO_TCP)?;
                s.tcp_flags.push((neg, mask, comp & mask));
                return Ok(());
            }
        }
        Err(unsupported(
            render(left),
            "a match fw has no equivalent for",
        ))
    }

    /// `@name` → the set's elements.
    fn resolve_set(&self, v: &Value, table: &str) -> Value {
        if let Some(name) = v.as_str().and_then(|s| s.strip_prefix('@'))
            && let Some(elems) = self.sets.get(&(table.to_string(), name.to_string()))
        {
            return serde_json::json!({ "set": elems });
        }
        v.clone()
    }
}

impl InputRule {
    /// Rules that only match another family (`ip saddr` in an inet table) are left out.
    fn filter_family(mut self, _f: Family) -> Option<Self> {
        if self.spec.comment.as_deref() == Some("\u{0}other-family") {
            return None;
        }
        self.spec.comment = None;
        Some(self)
    }
}

fn set_target(s: &mut Spec, t: Target) -> Result<(), Bad> {
    s.target = Some(t);
    Ok(())
}

fn set_proto(s: &mut Spec, p: u8) -> Result<(), Bad> {
    match s.proto {
        None => {
            s.proto = Some((false, p));
            Ok(())
        }
        Some((false, q)) if q == p => Ok(()),
        _ => Err(unsupported(
            "protocol",
            "two different protocols in one rule",
        )),
    }
}

fn l4proto(s: &mut Spec, right: &Value, neg: bool) -> Result<(), Bad> {
    let names = strings(right);
    if names.len() != 1 {
        return Err(unsupported(
            render(right),
            "a set of protocols: write one rule per protocol",
        ));
    }
    let p = parse_proto(&names[0]).map_err(|b| unsupported(b.value, "an unknown protocol"))?;
    if let Some(p) = p {
        if neg {
            s.proto = Some((true, p));
        } else {
            set_proto(s, p)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const RULESET: &str = r#"{"nftables": [
{"metainfo": {"version": "1.0.6", "release_name": "Lester Gooch #5", "json_schema_version": 1}},
{"table": {"family": "inet", "name": "filter", "handle": 1}},
{"chain": {"family": "inet", "table": "filter", "name": "input", "handle": 1, "type": "filter", "hook": "input", "prio": 0, "policy": "drop"}},
{"chain": {"family": "inet", "table": "filter", "name": "forward", "handle": 2, "type": "filter", "hook": "forward", "prio": 0, "policy": "drop"}},
{"chain": {"family": "inet", "table": "filter", "name": "output", "handle": 3, "type": "filter", "hook": "output", "prio": 0, "policy": "accept"}},
{"chain": {"family": "inet", "table": "filter", "name": "tcp_in", "handle": 9}},
{"set": {"family": "inet", "name": "admins", "table": "filter", "type": "ipv4_addr", "handle": 10, "flags": ["interval"], "elem": [{"prefix": {"addr": "192.0.2.0", "len": 24}}, "198.51.100.7"]}},
{"rule": {"family": "inet", "table": "filter", "chain": "input", "handle": 4, "expr": [{"match": {"op": "in", "left": {"ct": {"key": "state"}}, "right": ["established", "related"]}}, {"accept": null}]}},
{"rule": {"family": "inet", "table": "filter", "chain": "input", "handle": 5, "expr": [{"match": {"op": "in", "left": {"ct": {"key": "state"}}, "right": "invalid"}}, {"drop": null}]}},
{"rule": {"family": "inet", "table": "filter", "chain": "input", "handle": 6, "expr": [{"match": {"op": "==", "left": {"meta": {"key": "iifname"}}, "right": "lo"}}, {"accept": null}]}},
{"rule": {"family": "inet", "table": "filter", "chain": "input", "handle": 7, "expr": [{"match": {"op": "==", "left": {"meta": {"key": "l4proto"}}, "right": "icmp"}}, {"match": {"op": "==", "left": {"payload": {"protocol": "icmp", "field": "type"}}, "right": "echo-request"}}, {"accept": null}]}},
{"rule": {"family": "inet", "table": "filter", "chain": "input", "handle": 14, "expr": [{"match": {"op": "==", "left": {"meta": {"key": "l4proto"}}, "right": "ipv6-icmp"}}, {"match": {"op": "==", "left": {"payload": {"protocol": "icmpv6", "field": "type"}}, "right": "echo-request"}}, {"accept": null}]}},
{"rule": {"family": "inet", "table": "filter", "chain": "input", "handle": 8, "expr": [{"match": {"op": "==", "left": {"meta": {"key": "l4proto"}}, "right": "tcp"}}, {"jump": {"target": "tcp_in"}}]}},
{"rule": {"family": "inet", "table": "filter", "chain": "input", "handle": 12, "expr": [{"counter": {"packets": 0, "bytes": 0}}, {"log": {"prefix": "drop: "}}]}},
{"rule": {"family": "inet", "table": "filter", "chain": "tcp_in", "handle": 11, "expr": [{"match": {"op": "==", "left": {"payload": {"protocol": "tcp", "field": "dport"}}, "right": {"set": [80, 443]}}}, {"counter": {"packets": 0, "bytes": 0}}, {"accept": null}]}},
{"rule": {"family": "inet", "table": "filter", "chain": "tcp_in", "handle": 13, "expr": [{"match": {"op": "==", "left": {"payload": {"protocol": "ip", "field": "saddr"}}, "right": "@admins"}}, {"match": {"op": "==", "left": {"payload": {"protocol": "tcp", "field": "dport"}}, "right": 22}}, {"accept": null}]}}
]}"#;

    #[test]
    fn an_inet_ruleset_with_a_regular_chain_and_a_set_imports() {
        let i = import("ruleset.json", RULESET, &ImportOptions::default())
            .unwrap_or_else(|e| panic!("{e}"));
        let open: Vec<String> = i.policy.rules.iter().map(|r| r.describe()).collect();
        assert_eq!(
            open,
            [
                "80/tcp from anywhere",
                "443/tcp from anywhere",
                "22/tcp only from 192.0.2.0/24, 198.51.100.7"
            ]
        );
        let o = &i.policy.options;
        assert!(o.established && o.icmp_echo && o.strict_tcp_flags);
        assert_eq!(i.families, [Family::V4, Family::V6]);
    }

    #[test]
    fn limit_rate_becomes_a_total_and_a_source_meter_a_per_source_limit() {
        let text = RULESET.replace(
            r#"{"counter": {"packets": 0, "bytes": 0}}, {"accept": null}]}},"#,
            r#"{"limit": {"rate": 10, "per": "second"}}, {"accept": null}]}},"#,
        );
        let i =
            import("r.json", &text, &ImportOptions::default()).unwrap_or_else(|e| panic!("{e}"));
        let web = i.policy.rules.iter().find(|r| r.ports.lo == 80).unwrap();
        let l = &i.policy.limits[&web.id];
        assert_eq!(l.total.map(|r| r.to_string()).as_deref(), Some("10/1s"));
        assert!(l.rate.is_none());
        assert!(
            i.notes.iter().any(|n| n.contains("`limit rate 10/second`")),
            "{:?}",
            i.notes
        );
        // The nft wiki's SSH meter: over 10/minute per source address, dropped.
        let text = RULESET.replace(
            r#"{"counter": {"packets": 0, "bytes": 0}}, {"accept": null}]}},"#,
            r#"{"meter": {"name": "ssh", "key": {"payload": {"protocol": "ip", "field": "saddr"}}, "stmt": {"limit": {"rate": 10, "per": "minute", "inv": true}}}}, {"drop": null}]}}, {"rule": {"family": "inet", "table": "filter", "chain": "tcp_in", "handle": 15, "expr": [{"match": {"op": "==", "left": {"payload": {"protocol": "tcp", "field": "dport"}}, "right": {"set": [80, 443]}}}, {"accept": null}]}},"#,
        );
        let i =
            import("r.json", &text, &ImportOptions::default()).unwrap_or_else(|e| panic!("{e}"));
        let web = i.policy.rules.iter().find(|r| r.ports.lo == 80).unwrap();
        let l = &i.policy.limits[&web.id];
        assert_eq!(l.rate.map(|r| r.to_string()).as_deref(), Some("10/1m"));
        assert!(l.total.is_none() && l.ban_after.is_none());
        // A byte rate is no connection rate: refused, naming the line.
        let text = RULESET.replace(
            r#"{"counter": {"packets": 0, "bytes": 0}}, {"accept": null}]}},"#,
            r#"{"limit": {"rate": 10, "per": "second", "rate_unit": "mbytes"}}, {"accept": null}]}},"#,
        );
        let e = import("r.json", &text, &ImportOptions::default()).unwrap_err();
        assert_eq!(e.line(), Some(11), "{e}");
        assert!(e.to_string().contains("not bytes"), "{e}");
        let e = import("r.json", "{\n\"nftables\": [\n}", &ImportOptions::default()).unwrap_err();
        assert_eq!(e.line(), Some(3), "{e}");
    }
}
