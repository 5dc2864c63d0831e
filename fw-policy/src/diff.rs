//! What changes between two policies, in words: printed by every command that replaces the
//! policy in force (`fw up --policy`, `fw apply`, `fw restore`, `fw rollback`), so an operator
//! sees what is opened and closed before finding out the hard way.

use std::collections::BTreeSet;

use crate::{Policy, Rule};

/// A rule as what it lets in, without its comment or id.
fn admits(r: &Rule) -> String {
    let from = if r.from.is_empty() {
        "from anywhere".to_string()
    } else {
        let list: Vec<String> = r.from.iter().map(|c| c.to_string()).collect();
        format!("only from {}", list.join(", "))
    };
    format!("{}/{} {from}", r.ports, r.proto.name())
}

/// Lines `+ …` (now let in), `- …` (no longer let in) and `~ option: old → new`; empty when
/// the two policies let in the same.
pub fn changes(old: &Policy, new: &Policy) -> Vec<String> {
    let a: BTreeSet<String> = old.rules.iter().map(admits).collect();
    let b: BTreeSet<String> = new.rules.iter().map(admits).collect();
    let mut out: Vec<String> = b.difference(&a).map(|r| format!("+ {r}")).collect();
    out.extend(a.difference(&b).map(|r| format!("- {r}")));
    let (o, n) = (
        toml::Value::try_from(&old.options),
        toml::Value::try_from(&new.options),
    );
    if let (Ok(toml::Value::Table(o)), Ok(toml::Value::Table(n))) = (o, n) {
        for (k, v) in &n {
            if o.get(k) != Some(v) {
                let was = o.get(k).map(|v| v.to_string()).unwrap_or_default();
                out.push(format!("~ {k}: {was} → {v}"));
            }
        }
    }
    flood_changes(old, new, &mut out);
    out
}

/// The default action, rate limits and `[[block]]` entries.
fn flood_changes(old: &Policy, new: &Policy, out: &mut Vec<String>) {
    if old.default != new.default {
        out.push(format!("~ default: {:?} → {:?}", old.default, new.default));
    }
    let limits = |p: &Policy| -> BTreeSet<String> {
        p.live_limits()
            .map(|(r, l)| format!("{}: {}", admits(r), l.describe()))
            .collect()
    };
    let (a, b) = (limits(old), limits(new));
    out.extend(b.difference(&a).map(|l| format!("+ limit {l}")));
    out.extend(a.difference(&b).map(|l| format!("- limit {l}")));
    let blocks = |p: &Policy| -> BTreeSet<crate::Cidr> { p.block_sources().copied().collect() };
    let (a, b) = (blocks(old), blocks(new));
    let (added, removed) = (b.difference(&a).count(), a.difference(&b).count());
    if added + removed > 0 {
        out.push(format!(
            "~ [[block]]: {added} sources blocked, {removed} unblocked"
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{SEED_POLICY, parse_policy};

    #[test]
    fn opened_closed_and_changed_options_are_listed() {
        let seed = parse_policy("seed", SEED_POLICY).unwrap();
        let new = parse_policy(
            "new",
            "[options]\nicmp_echo = true\n[[allow]]\nports = [22]\nfrom = [\"192.0.2.0/24\"]\n[[allow]]\nports = [80, 8080]\n",
        )
        .unwrap();
        let c = changes(&seed, &new);
        assert!(c.contains(&"+ 8080/tcp from anywhere".to_string()), "{c:?}");
        assert!(
            c.contains(&"+ 22/tcp only from 192.0.2.0/24".to_string()),
            "{c:?}"
        );
        assert!(c.contains(&"- 22/tcp from anywhere".to_string()), "{c:?}");
        assert!(c.contains(&"- 443/tcp from anywhere".to_string()), "{c:?}");
        assert!(!c.iter().any(|l| l.contains(" 80/tcp")), "{c:?}");
        assert!(
            c.contains(&"~ icmp_echo: false → true".to_string()),
            "{c:?}"
        );
        assert!(changes(&seed, &seed).is_empty());
    }
}
