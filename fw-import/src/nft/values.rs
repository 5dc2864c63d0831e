//! Reading the values of `nft -j` expressions: ports, addresses, names, flags, and a compact
//! nft-like rendering of any expression for messages.

use fw_common::tcp;
use fw_policy::Cidr;
use serde_json::Value;

pub(super) fn strings(v: &Value) -> Vec<String> {
    let one = |x: &Value| {
        x.as_str()
            .map(str::to_string)
            .or_else(|| x.as_u64().map(|n| n.to_string()))
    };
    match v {
        Value::Array(a) => a.iter().filter_map(one).collect(),
        Value::Object(o) if o.contains_key("set") => o["set"]
            .as_array()
            .map(|a| a.iter().filter_map(one).collect())
            .unwrap_or_default(),
        other => one(other).into_iter().collect(),
    }
}

pub(super) fn flag_bits(v: &Value) -> u8 {
    let list = match v.get("|") {
        Some(Value::Array(a)) => a.iter().flat_map(strings).collect(),
        _ => strings(v),
    };
    list.iter()
        .filter_map(|n| tcp::flag_by_name(n))
        .fold(0, |a, b| a | b)
}

/// `22`, `{"range": [1, 2]}`, `{"set": [...]}`.
pub(super) fn ports(v: &Value) -> Option<Vec<(u16, u16)>> {
    let one = |x: &Value| -> Option<(u16, u16)> {
        if let Some(n) = x.as_u64() {
            let p = u16::try_from(n).ok()?;
            return Some((p, p));
        }
        if let Some(r) = x.get("range").and_then(Value::as_array) {
            let a = u16::try_from(r.first()?.as_u64()?).ok()?;
            let b = u16::try_from(r.get(1)?.as_u64()?).ok()?;
            return Some((a.min(b), a.max(b)));
        }
        let p = crate::iptables::rule::parse_port_range(x.as_str()?).ok()?;
        Some(p)
    };
    match v.get("set").and_then(Value::as_array) {
        Some(list) => list.iter().map(one).collect(),
        None => one(v).map(|p| vec![p]),
    }
}

/// `"10.0.0.1"`, `{"prefix": {"addr": .., "len": ..}}`, `{"range": [a, b]}`, a set of those.
pub(super) fn addrs(v: &Value) -> Option<Vec<Cidr>> {
    let one = |x: &Value| -> Option<Vec<Cidr>> {
        if let Some(s) = x.as_str() {
            return Some(vec![s.parse().ok()?]);
        }
        if let Some(p) = x.get("prefix") {
            let a = p.get("addr")?.as_str()?;
            let l = p.get("len")?.as_u64()?;
            return Some(vec![format!("{a}/{l}").parse().ok()?]);
        }
        if let Some(r) = x.get("range").and_then(Value::as_array) {
            let a: Cidr = r.first()?.as_str()?.parse().ok()?;
            let b: Cidr = r.get(1)?.as_str()?.parse().ok()?;
            let (f, lo, _) = crate::addrset::cidr_range(&a);
            let (_, hi, _) = crate::addrset::cidr_range(&b);
            let mut set = crate::addrset::AddrSet::default();
            set.insert(lo, hi);
            return Some(set.to_cidrs(f));
        }
        None
    };
    match v.get("set").and_then(Value::as_array) {
        Some(list) => {
            let mut out = Vec::new();
            for x in list {
                out.extend(one(x)?);
            }
            Some(out)
        }
        None => one(v),
    }
}

/// A compact nft-like rendering of an expression, for messages.
pub(super) fn render(e: &Value) -> String {
    match e {
        Value::Object(o) => {
            if let Some(m) = o.get("match") {
                let op = m.get("op").and_then(Value::as_str).unwrap_or("==");
                let op = if op == "==" || op == "in" {
                    String::new()
                } else {
                    format!("{op} ")
                };
                return format!(
                    "{} {op}{}",
                    render(m.get("left").unwrap_or(&Value::Null)),
                    render(m.get("right").unwrap_or(&Value::Null))
                );
            }
            if let Some(p) = o.get("payload") {
                return format!(
                    "{} {}",
                    p.get("protocol").and_then(Value::as_str).unwrap_or(""),
                    p.get("field").and_then(Value::as_str).unwrap_or("")
                );
            }
            for k in ["meta", "ct"] {
                if let Some(x) = o.get(k) {
                    return format!("{k} {}", x.get("key").and_then(Value::as_str).unwrap_or(""));
                }
            }
            if let Some(s) = o.get("set") {
                let items: Vec<String> = s
                    .as_array()
                    .map(|a| a.iter().map(render).collect())
                    .unwrap_or_default();
                return format!("{{ {} }}", items.join(", "));
            }
            if let Some(r) = o.get("range").and_then(Value::as_array) {
                let items: Vec<String> = r.iter().map(render).collect();
                return items.join("-");
            }
            if let Some(p) = o.get("prefix") {
                return format!(
                    "{}/{}",
                    render(p.get("addr").unwrap_or(&Value::Null)),
                    render(p.get("len").unwrap_or(&Value::Null))
                );
            }
            let (k, v) = o
                .iter()
                .next()
                .map(|(k, v)| (k.as_str(), v))
                .unwrap_or(("", &Value::Null));
            match (k, v) {
                (_, Value::Null) => k.to_string(),
                ("jump" | "goto", v) => format!(
                    "{k} {}",
                    v.get("target").and_then(Value::as_str).unwrap_or("")
                ),
                ("counter" | "log" | "comment", _) => k.to_string(),
                (k, v) => format!("{k} {}", render(v)),
            }
        }
        Value::Array(a) => {
            let items: Vec<String> = a.iter().map(render).collect();
            format!("{{ {} }}", items.join(", "))
        }
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}
