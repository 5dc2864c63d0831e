//! Rule ids are counter identities. A rule's counter slot is its id (`fw_common::maps::rule_slot`),
//! the same in both generations, so a rule that stays in force across a policy replacement
//! (`fw apply`, `fw up --policy`, flush, rollback) keeps counting where it was: counters are
//! monotonic, as Prometheus' `rate()` needs. [`carry_ids`] gives the incoming policy the ids of
//! the rules it shares with the policy in force, and its other rules ids the policy in force
//! does not use — their slots may still be counting for the old generation until the flip, and
//! are zeroed before the new generation is written.

use std::collections::{BTreeMap, BTreeSet};

use fw_common::maps::RULE_IDS;

use crate::{Cidr, Policy, PortRange, Proto, Rule};

/// What makes two rules "the same rule" for counting: protocol, ports and the sources. The
/// comment is not part of it (editing a comment keeps the counter).
pub type Identity = (Proto, PortRange, Vec<Cidr>);

pub fn identity(r: &Rule) -> Identity {
    let mut from = r.from.clone();
    from.sort();
    from.dedup();
    (r.proto, r.ports, from)
}

/// Renumber `next` against `in_force`: shared rules take their ids over; the others get the
/// lowest ids used by neither `in_force` nor `avoid` (the confirmed policy, so a rollback finds
/// its ids free), or, if that cannot fit, by `in_force` alone. Returns the ids that are new to
/// the counters (not in `in_force`).
pub fn carry_ids(next: &mut Policy, in_force: &Policy, avoid: &Policy) -> Vec<u32> {
    let before: Vec<u32> = next.rules.iter().map(|r| r.id).collect();
    let fresh = renumber(next, in_force, avoid);
    // A rule's limit is keyed by its id: it follows the rule to its new id.
    let mut limits = std::mem::take(&mut next.limits);
    for (old_id, r) in before.into_iter().zip(&next.rules) {
        if let Some(l) = limits.remove(&old_id) {
            next.limits.insert(r.id, l);
        }
    }
    fresh
}

fn renumber(next: &mut Policy, in_force: &Policy, avoid: &Policy) -> Vec<u32> {
    let mut old: BTreeMap<Identity, Vec<u32>> = BTreeMap::new();
    for r in in_force.rules.iter().rev() {
        old.entry(identity(r)).or_default().push(r.id);
    }
    let mut taken: BTreeSet<u32> = BTreeSet::new();
    let mut pending = Vec::new();
    for (i, r) in next.rules.iter_mut().enumerate() {
        match old.get_mut(&identity(r)).and_then(|ids| ids.pop()) {
            Some(id) => {
                r.id = id;
                taken.insert(id);
            }
            None => pending.push(i),
        }
    }
    let in_force_ids: BTreeSet<u32> = in_force.rules.iter().map(|r| r.id).collect();
    let avoid_ids: BTreeMap<u32, Identity> =
        avoid.rules.iter().map(|r| (r.id, identity(r))).collect();
    // A rule keeps its own id when nothing else claims it (a rollback brings the confirmed
    // policy back with its ids unchanged).
    let mut rest = Vec::new();
    for i in pending {
        let r = &next.rules[i];
        let own_ok = r.id < RULE_IDS
            && !in_force_ids.contains(&r.id)
            && !taken.contains(&r.id)
            && avoid_ids
                .get(&r.id)
                .is_none_or(|ident| *ident == identity(r));
        if own_ok {
            taken.insert(r.id);
        } else {
            rest.push(i);
        }
    }
    let kept: Vec<u32> = next
        .rules
        .iter()
        .enumerate()
        .filter(|(i, r)| !rest.contains(i) && !in_force_ids.contains(&r.id))
        .map(|(_, r)| r.id)
        .collect();
    let pending = rest;
    let free = |strict: bool, taken: &BTreeSet<u32>| {
        (0..RULE_IDS)
            .filter(|id| !in_force_ids.contains(id) && !taken.contains(id))
            .filter(|id| !strict || !avoid_ids.contains_key(id))
            .take(pending.len())
            .collect::<Vec<u32>>()
    };
    let mut ids = free(true, &taken);
    if ids.len() < pending.len() {
        ids = free(false, &taken);
    }
    let mut fresh = kept;
    for (i, id) in pending.into_iter().zip(ids) {
        next.rules[i].id = id;
        fresh.push(id);
    }
    fresh.sort_unstable();
    fresh
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::parse_policy;

    fn policy(text: &str) -> Policy {
        parse_policy("test.toml", text).expect("valid policy")
    }

    #[test]
    fn a_rules_limit_follows_it_to_its_new_id() {
        let old = policy("[[allow]]\nports = [22]\n[[allow]]\nports = [80]\n");
        let mut next =
            policy("[[allow]]\nports = [80]\n[[allow]]\nports = [22]\nlimit = \"6/30s\"\n");
        let ssh = next.rules.iter().find(|r| r.ports.lo == 22).unwrap().id;
        assert!(
            next.limits.contains_key(&ssh),
            "the parser keys the limit by the rule's id"
        );
        carry_ids(&mut next, &old, &old);
        let ssh_now = next.rules.iter().find(|r| r.ports.lo == 22).unwrap().id;
        assert_eq!(ssh_now, 0, "port 22 takes its id in force");
        assert_eq!(next.limits.len(), 1);
        assert!(
            next.limits.contains_key(&ssh_now),
            "the limit stayed with the old id: {:?}",
            next.limits.keys().collect::<Vec<_>>()
        );
    }

    #[test]
    fn shared_rules_keep_their_ids_and_new_ones_get_unused_ids() {
        let old =
            policy("[[allow]]\nports = [22]\n[[allow]]\nports = [80]\n[[allow]]\nports = [443]\n");
        let mut next = policy(
            "[[allow]]\nports = [443]\ncomment = \"web\"\n[[allow]]\nports = [8080]\n[[allow]]\nports = [22]\n",
        );
        let fresh = carry_ids(&mut next, &old, &old);
        let ids: Vec<u32> = next.rules.iter().map(|r| r.id).collect();
        assert_eq!(ids, vec![2, 3, 0], "443 keeps 2, 22 keeps 0, 8080 gets 3");
        assert_eq!(fresh, vec![3]);
    }

    #[test]
    fn new_ids_avoid_the_confirmed_policy_when_they_can() {
        let confirmed = policy("[[allow]]\nports = [22]\n[[allow]]\nports = [25]\n");
        let in_force = policy("[[allow]]\nports = [22]\n");
        let mut next = policy("[[allow]]\nports = [22]\n[[allow]]\nports = [993]\n");
        carry_ids(&mut next, &in_force, &confirmed);
        assert_eq!(next.rules[1].id, 2, "id 1 belongs to the confirmed 25/tcp");
    }

    #[test]
    fn two_applies_then_a_rollback_keep_every_shared_counter() {
        // Confirmed C, then A1 and A2 applied without confirming, then a rollback to C: each
        // flip renumbers the incoming policy against the one in force.
        let c = policy("[[allow]]\nports = [22]\n[[allow]]\nports = [25]\n");
        let mut a1 = policy("[[allow]]\nports = [22]\n[[allow]]\nports = [80]\n");
        carry_ids(&mut a1, &c, &c);
        let mut a2 =
            policy("[[allow]]\nports = [443]\n[[allow]]\nports = [80]\n[[allow]]\nports = [22]\n");
        carry_ids(&mut a2, &a1, &c);
        let id = |p: &Policy, port: u16| p.rules.iter().find(|r| r.ports.lo == port).unwrap().id;
        assert_eq!(
            id(&a2, 22),
            id(&c, 22),
            "22 kept its counter through both applies"
        );
        assert_eq!(id(&a2, 80), id(&a1, 80));
        assert_ne!(
            id(&a2, 443),
            id(&c, 25),
            "a new rule avoids the confirmed policy's ids"
        );
        let mut back = c.clone();
        let fresh = carry_ids(&mut back, &a2, &c);
        assert_eq!(
            back, c,
            "rolling back changes no id of the confirmed policy"
        );
        assert_eq!(fresh, vec![id(&c, 25)], "only 25 starts from zero again");
    }

    #[test]
    fn sources_in_another_order_are_the_same_rule() {
        let old = policy("[[allow]]\nports = [22]\nfrom = [\"192.0.2.1\", \"10.0.0.0/8\"]\n");
        let mut next = policy(
            "[[allow]]\nports = [80]\n[[allow]]\nports = [22]\nfrom = [\"10.0.0.0/8\", \"192.0.2.1\"]\n",
        );
        let fresh = carry_ids(&mut next, &old, &old);
        assert_eq!(next.rules[1].id, 0);
        assert_eq!(fresh, vec![1]);
    }

    #[test]
    fn a_full_replacement_still_finds_ids() {
        let n = fw_common::maps::MAX_RULES as usize;
        let mut old = Policy::default();
        let mut next = Policy::default();
        for i in 0..n {
            let r = |port: usize, id: usize| Rule {
                id: id as u32,
                proto: Proto::Tcp,
                ports: PortRange {
                    lo: port as u16,
                    hi: port as u16,
                },
                from: Vec::new(),
                comment: None,
            };
            old.rules.push(r(i + 1, i));
            next.rules.push(r(i + 30_000, i));
        }
        let fresh = carry_ids(&mut next, &old, &old);
        assert_eq!(fresh.len(), n);
        assert!(
            next.rules
                .iter()
                .all(|r| r.id >= n as u32 && r.id < RULE_IDS)
        );
    }
}
