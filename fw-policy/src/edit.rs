//! Live edits of a policy (`fw allow`, `fw deny`), as pure functions on the policy model.
//! Surviving rules keep their ids, so their counters keep counting.

use crate::{Cidr, Policy, PortRange, Proto, Rule};

#[derive(Debug, PartialEq, Eq)]
pub enum Edit {
    /// The policy changed; the message says how, in words.
    Changed(String),
    /// Nothing to do; the message says why.
    Unchanged(String),
}

/// Allow `ports/proto` from `from` (empty: from everywhere).
pub fn allow(
    p: &mut Policy,
    proto: Proto,
    ports: PortRange,
    from: &[Cidr],
    comment: Option<String>,
) -> Result<Edit, String> {
    // Already covered entirely by one open-to-all rule?
    if let Some(r) = p.rules.iter().find(|r| {
        r.proto == proto && r.from.is_empty() && r.ports.lo <= ports.lo && ports.hi <= r.ports.hi
    }) {
        return Ok(Edit::Unchanged(format!(
            "{ports}/{} is already open to everyone (rule {}: {})",
            proto.name(),
            r.id,
            r.describe()
        )));
    }
    if !from.is_empty()
        && p.rules.iter().any(|r| {
            r.proto == proto && r.ports == ports && from.iter().all(|c| r.from.contains(c))
        })
    {
        return Ok(Edit::Unchanged(format!(
            "{ports}/{} is already allowed from those sources",
            proto.name()
        )));
    }
    if let Some(c) = &comment {
        crate::check_comment(c)?;
    }
    let id = p.next_id();
    if p.rules.len() >= fw_common::maps::MAX_RULES as usize || id >= fw_common::maps::RULE_IDS {
        return Err(format!(
            "the policy has reached {} rules; use port ranges",
            fw_common::maps::MAX_RULES
        ));
    }
    let rule = Rule {
        id,
        proto,
        ports,
        from: from.to_vec(),
        comment,
    };
    let msg = format!("allowed {}", rule.describe());
    p.rules.push(rule);
    if let Err(e) = p.check_capacity() {
        p.rules.pop();
        return Err(e);
    }
    Ok(Edit::Changed(msg))
}

/// Stop allowing `ports/proto`: from everyone (empty `from`), or only from the given sources.
pub fn deny(p: &mut Policy, proto: Proto, ports: PortRange, from: &[Cidr]) -> Result<Edit, String> {
    let overlaps = |r: &Rule| r.proto == proto && r.ports.lo <= ports.hi && ports.lo <= r.ports.hi;
    if !p.rules.iter().any(overlaps) {
        return Ok(Edit::Unchanged(format!(
            "{ports}/{} is not allowed by any rule; nothing to deny",
            proto.name()
        )));
    }
    if !from.is_empty()
        && let Some(r) = p.rules.iter().find(|r| overlaps(r) && r.from.is_empty())
    {
        return Err(format!(
            "{ports}/{} is open to everyone (rule {}: {}); an allowlist cannot exclude single sources. Run `fw deny {ports}/{}` and then allow only the sources you want",
            proto.name(),
            r.id,
            r.describe(),
            proto.name()
        ));
    }
    let mut next_id = p.next_id();
    let mut out: Vec<Rule> = Vec::new();
    let mut removed = 0usize;
    for r in std::mem::take(&mut p.rules) {
        if !overlaps(&r) {
            out.push(r);
            continue;
        }
        // The parts of the rule's range outside `ports` stay as they were.
        let below = (r.ports.lo < ports.lo).then(|| PortRange {
            lo: r.ports.lo,
            hi: ports.lo - 1,
        });
        let above = (r.ports.hi > ports.hi).then(|| PortRange {
            lo: ports.hi + 1,
            hi: r.ports.hi,
        });
        let inside = PortRange {
            lo: r.ports.lo.max(ports.lo),
            hi: r.ports.hi.min(ports.hi),
        };
        let kept_from: Vec<Cidr> = if from.is_empty() {
            Vec::new()
        } else {
            r.from
                .iter()
                .filter(|c| !from.contains(c))
                .copied()
                .collect()
        };
        if kept_from.len() == r.from.len() && !from.is_empty() {
            out.push(r);
            continue;
        }
        removed += 1;
        let mut first = true;
        let mut push = |ports: PortRange, from: Vec<Cidr>, out: &mut Vec<Rule>| {
            let id = if first {
                first = false;
                r.id
            } else {
                next_id += 1;
                next_id - 1
            };
            out.push(Rule {
                id,
                proto: r.proto,
                ports,
                from,
                comment: r.comment.clone(),
            });
        };
        if let Some(b) = below {
            push(b, r.from.clone(), &mut out);
        }
        // With sources given, the remaining sources keep the port; never widen to everyone.
        if !kept_from.is_empty() {
            push(inside, kept_from, &mut out);
        }
        if let Some(a) = above {
            push(a, r.from.clone(), &mut out);
        }
    }
    p.rules = out;
    if removed == 0 {
        return Ok(Edit::Unchanged(format!(
            "{ports}/{} is not allowed from those sources; nothing to deny",
            proto.name()
        )));
    }
    let what = if from.is_empty() {
        "from everyone".to_string()
    } else {
        format!(
            "from {}",
            from.iter()
                .map(|c| c.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        )
    };
    let mut ids: Vec<u32> = p.rules.iter().map(|r| r.id).collect();
    ids.sort_unstable();
    ids.dedup();
    if p.rules.len() > fw_common::maps::MAX_RULES as usize
        || p.next_id() > fw_common::maps::RULE_IDS
        || ids.len() != p.rules.len()
    {
        return Err("splitting the range would exceed the rule limit".into());
    }
    Ok(Edit::Changed(format!(
        "denied {ports}/{} {what}",
        proto.name()
    )))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{SEED_POLICY, parse_policy};

    fn seed() -> Policy {
        parse_policy("seed", SEED_POLICY).unwrap()
    }

    fn open_ports(p: &Policy) -> Vec<String> {
        p.rules.iter().map(|r| r.describe()).collect()
    }

    #[test]
    fn allow_appends_with_a_fresh_id_and_is_idempotent() {
        let mut p = seed();
        let e = allow(&mut p, Proto::Tcp, PortRange::single(8080), &[], None).unwrap();
        assert!(matches!(e, Edit::Changed(_)));
        assert_eq!(p.rules.last().unwrap().id, 9);
        let e = allow(&mut p, Proto::Tcp, PortRange::single(8080), &[], None).unwrap();
        assert!(matches!(e, Edit::Unchanged(_)));
        assert_eq!(p.rules.len(), 10);
    }

    #[test]
    fn deny_removes_a_port_and_keeps_other_ids() {
        let mut p = seed();
        let e = deny(&mut p, Proto::Tcp, PortRange::single(25), &[]).unwrap();
        assert!(matches!(e, Edit::Changed(_)));
        assert!(!p.rules.iter().any(|r| r.ports.contains(25)));
        assert_eq!(p.rules.len(), 8);
        let ids: Vec<u32> = p.rules.iter().map(|r| r.id).collect();
        assert_eq!(ids, [0, 1, 3, 4, 5, 6, 7, 8]);
        assert!(matches!(
            deny(&mut p, Proto::Tcp, PortRange::single(25), &[]).unwrap(),
            Edit::Unchanged(_)
        ));
    }

    #[test]
    fn allow_refuses_what_the_tries_cannot_hold_and_leaves_the_policy_alone() {
        let mut p = seed();
        let before = p.clone();
        let many: Vec<Cidr> = (0..40u8)
            .map(|i| format!("10.{i}.0.0/16").parse().unwrap())
            .collect();
        let e = allow(
            &mut p,
            Proto::Tcp,
            PortRange { lo: 1, hi: 65535 },
            &many,
            None,
        )
        .unwrap_err();
        assert!(e.contains("IPv4 entries"), "{e}");
        assert_eq!(p, before);
    }

    #[test]
    fn allow_refuses_a_comment_with_escape_sequences() {
        let mut p = seed();
        let e = allow(
            &mut p,
            Proto::Tcp,
            PortRange::single(8080),
            &[],
            Some("\u{1b}[2Jowned".into()),
        )
        .unwrap_err();
        assert!(e.contains("U+001B"), "{e}");
    }

    #[test]
    fn deny_inside_a_range_splits_it() {
        let mut p = Policy::default();
        allow(
            &mut p,
            Proto::Udp,
            PortRange { lo: 100, hi: 200 },
            &[],
            None,
        )
        .unwrap();
        deny(&mut p, Proto::Udp, PortRange::single(150), &[]).unwrap();
        assert_eq!(
            open_ports(&p),
            ["100-149/udp from anywhere", "151-200/udp from anywhere"]
        );
        assert_eq!(p.rules[0].id, 0);
    }

    #[test]
    fn deny_one_source_never_opens_the_port_to_everyone() {
        let mut p = Policy::default();
        let a: Cidr = "192.0.2.1".parse().unwrap();
        let b: Cidr = "192.0.2.2".parse().unwrap();
        allow(&mut p, Proto::Tcp, PortRange::single(22), &[a, b], None).unwrap();
        deny(&mut p, Proto::Tcp, PortRange::single(22), &[a]).unwrap();
        assert_eq!(open_ports(&p), ["22/tcp only from 192.0.2.2"]);
        deny(&mut p, Proto::Tcp, PortRange::single(22), &[b]).unwrap();
        assert!(p.rules.is_empty());
    }

    #[test]
    fn deny_one_source_of_an_open_port_is_refused() {
        let mut p = seed();
        let a: Cidr = "192.0.2.1".parse().unwrap();
        let e = deny(&mut p, Proto::Tcp, PortRange::single(22), &[a]).unwrap_err();
        assert!(e.contains("open to everyone"), "{e}");
        assert_eq!(p, seed());
    }
}
