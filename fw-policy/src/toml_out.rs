//! Writing a policy back as a commented TOML policy file (what `fw import` produces). The text
//! parses back with [`crate::parse_policy`] to the same policy; rule ids come back numbered in
//! order, as the parser assigns them.

use std::{collections::BTreeMap, fmt::Write as _};

use crate::{Policy, Rule};

/// Comments to put into the file, besides the standard explanation of each option.
#[derive(Clone, Debug, Default)]
pub struct Annotations {
    /// Lines at the top of the file (written as `# line`).
    pub header: Vec<String>,
    /// Extra lines above an option, by its key (`"strict_tcp_flags"`).
    pub options: BTreeMap<String, Vec<String>>,
    /// Lines above a rule, by its index in `policy.rules`. A rule without lines of its own joins
    /// the `[[allow]]` table of the rule before it when protocol, sources and comment agree.
    pub rules: BTreeMap<usize, Vec<String>>,
}

/// The options in the order a reader wants them, with what each one means.
const OPTION_DOCS: &[(&str, &[&str])] = &[
    (
        "established",
        &["Accept replies to connections this host opened, and ICMP errors about them."],
    ),
    (
        "new_requires_syn",
        &["Drop TCP that is not a plain SYN and belongs to no tracked connection."],
    ),
    (
        "strict_tcp_flags",
        &[
            "true: drop every TCP flag combination no real stack sends (nmap -sX/-sF, SYN+FIN, ...).",
            "false: drop only NULL and XMAS scans (fw always drops those).",
        ],
    ),
    ("icmp_echo", &["Answer pings (ICMP/ICMPv6 echo request)."]),
    (
        "fragments",
        &[
            "Non-first IP fragments: \"pass\" (reassembled only with a first fragment fw let through) or \"drop\".",
        ],
    ),
    (
        "dhcp_client",
        &["Let DHCP/DHCPv6 replies reach this host's DHCP client."],
    ),
    ("max_flows", &["Entries of each connection table."]),
    (
        "tcp_established_timeout",
        &["Seconds an established TCP connection may stay idle."],
    ),
    (
        "udp_timeout",
        &["Seconds a UDP flow may wait for its first reply."],
    ),
    (
        "udp_stream_timeout",
        &["Seconds a UDP flow that got replies may stay idle."],
    ),
    ("icmp_timeout", &["Seconds a ping may wait for its reply."]),
    (
        "syn_cookies",
        &[
            "Answer SYNs to allowed TCP ports with SYN cookies from XDP: \"off\", \"auto\" (while",
            "SYNs arrive faster than syn_cookies_threshold) or \"always\". Needs the kernel to accept",
            "cookies: net.ipv4.tcp_syncookies = 2 (see the README).",
        ],
    ),
    (
        "syn_cookies_threshold",
        &["syn_cookies = \"auto\": SYNs a second above which fw answers them."],
    ),
    (
        "log",
        &[
            "\"drops\": log dropped packets (fw serve sends them to syslog; fw log follows them); \"off\".",
        ],
    ),
    ("log_rate", &["Drop-log records per second at most."]),
];

/// The policy as TOML, with `notes` as comments.
pub fn to_toml(policy: &Policy, notes: &Annotations) -> String {
    let mut out = String::new();
    for line in &notes.header {
        comment(&mut out, line);
    }
    if !notes.header.is_empty() {
        out.push('\n');
    }
    if !policy.interfaces.is_empty() {
        let list: Vec<String> = policy.interfaces.iter().map(|i| string(i)).collect();
        let _ = writeln!(out, "interfaces = [{}]\n", list.join(", "));
    }
    if policy.default == crate::DefaultAction::Accept {
        out.push_str(
            "# What no rule admits passes; block lists, bans, scan drops and limits still drop.\ndefault = \"accept\"\n\n",
        );
    }
    out.push_str("[options]\n");
    let values = match toml::Value::try_from(&policy.options) {
        Ok(toml::Value::Table(t)) => t,
        // Options is a plain struct of scalars; it always serializes to a table.
        _ => toml::Table::new(),
    };
    let known: Vec<&str> = OPTION_DOCS.iter().map(|(k, _)| *k).collect();
    let mut keys: Vec<&str> = known
        .iter()
        .copied()
        .filter(|k| values.contains_key(*k))
        .collect();
    // Options this writer has no words for yet still round-trip.
    keys.extend(
        values
            .keys()
            .map(String::as_str)
            .filter(|k| !known.contains(k)),
    );
    for key in keys {
        let docs = OPTION_DOCS
            .iter()
            .find(|(k, _)| *k == key)
            .map_or(&[][..], |(_, d)| *d);
        for line in docs {
            comment(&mut out, line);
        }
        for line in notes.options.get(key).into_iter().flatten() {
            comment(&mut out, line);
        }
        let _ = writeln!(out, "{key} = {}", values[key]);
    }
    let mut i = 0;
    while i < policy.rules.len() {
        let first = &policy.rules[i];
        let mut group = vec![first];
        let mut j = i + 1;
        while j < policy.rules.len()
            && !notes.rules.contains_key(&j)
            && same_table(first, &policy.rules[j])
            && policy.limits.get(&first.id) == policy.limits.get(&policy.rules[j].id)
        {
            group.push(&policy.rules[j]);
            j += 1;
        }
        out.push('\n');
        for line in notes.rules.get(&i).into_iter().flatten() {
            comment(&mut out, line);
        }
        out.push_str("[[allow]]\n");
        let _ = writeln!(out, "proto = {}", string(first.proto.name()));
        let ports: Vec<String> = group
            .iter()
            .map(|r| {
                if r.ports.lo == r.ports.hi {
                    r.ports.lo.to_string()
                } else {
                    string(&r.ports.to_string())
                }
            })
            .collect();
        let _ = writeln!(out, "ports = [{}]", ports.join(", "));
        if !first.from.is_empty() {
            let from: Vec<String> = first.from.iter().map(|c| string(&c.to_string())).collect();
            let _ = writeln!(out, "from = [{}]", from.join(", "));
        }
        if let Some(c) = &first.comment {
            let _ = writeln!(out, "comment = {}", string(c));
        }
        if let Some(l) = policy.limits.get(&first.id) {
            limit_lines(&mut out, l);
        }
        i = j;
    }
    for b in &policy.blocks {
        out.push_str("\n[[block]]\n");
        match &b.file {
            Some(f) => {
                let _ = writeln!(out, "file = {}", string(f));
            }
            None => {
                let from: Vec<String> = b.from.iter().map(|c| string(&c.to_string())).collect();
                let _ = writeln!(out, "from = [{}]", from.join(", "));
            }
        }
        if let Some(c) = &b.comment {
            let _ = writeln!(out, "comment = {}", string(c));
        }
    }
    out
}

fn limit_lines(out: &mut String, l: &crate::Limit) {
    if let Some(r) = l.rate {
        let _ = writeln!(out, "limit = {}", string(&r.to_string()));
    }
    if let Some(b) = l.burst {
        let _ = writeln!(out, "burst = {b}");
    }
    if l.per4 != 32 {
        let _ = writeln!(out, "per = \"/{}\"", l.per4);
    }
    if l.per6 != 64 {
        let _ = writeln!(out, "per6 = \"/{}\"", l.per6);
    }
    if let Some(t) = l.total {
        let _ = writeln!(out, "total = {}", string(&t.to_string()));
    }
    if let Some(n) = l.ban_after {
        let _ = writeln!(out, "ban_after = {n}");
        let _ = writeln!(
            out,
            "ban_for = {}",
            string(&crate::limit::duration_text(l.ban_secs))
        );
    }
}

fn same_table(a: &Rule, b: &Rule) -> bool {
    a.proto == b.proto && a.from == b.from && a.comment == b.comment
}

fn string(s: &str) -> String {
    toml::Value::String(s.to_string()).to_string()
}

fn comment(out: &mut String, line: &str) {
    let line = line.replace(['\n', '\r'], " ");
    if line.is_empty() {
        out.push_str("#\n");
    } else {
        let _ = writeln!(out, "# {line}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_default_accept_and_blocks_round_trip() {
        let text = "default = \"accept\"\n[[allow]]\nports = [22, 2222]\nlimit = \"6/30s\"\nburst = 3\nper = \"/24\"\ntotal = \"100/s\"\nban_after = 4\nban_for = \"1h\"\n[[allow]]\nports = [80]\n[[block]]\nfrom = [\"192.0.2.0/24\"]\ncomment = \"x\"\n";
        let p = crate::parse_policy("p", text).unwrap();
        let back = crate::parse_policy("out", &to_toml(&p, &Annotations::default())).unwrap();
        assert_eq!(back, p);
    }
    use crate::{FragmentPolicy, PortRange, Proto, SEED_POLICY, parse_policy};

    fn round_trip(p: &Policy, notes: &Annotations) -> Policy {
        let text = to_toml(p, notes);
        parse_policy("out.toml", &text).unwrap_or_else(|e| panic!("{e}\n{text}"))
    }

    #[test]
    fn seed_policy_round_trips_and_keeps_its_port_groups() {
        let p = parse_policy("seed", SEED_POLICY).unwrap();
        assert_eq!(round_trip(&p, &Annotations::default()), p);
        let text = to_toml(&p, &Annotations::default());
        assert!(text.contains("ports = [80, 443]"), "{text}");
    }

    #[test]
    fn every_field_round_trips_with_awkward_strings() {
        let mut p = Policy::default();
        p.options.strict_tcp_flags = false;
        p.options.icmp_echo = true;
        p.options.fragments = FragmentPolicy::Drop;
        p.options.dhcp_client = false;
        p.options.new_requires_syn = false;
        p.options.max_flows = 4096;
        p.interfaces = vec!["eth0".into()];
        p.rules = vec![
            Rule {
                id: 0,
                proto: Proto::Udp,
                ports: PortRange { lo: 6000, hi: 6010 },
                from: vec![
                    "192.0.2.0/24".parse().unwrap(),
                    "2001:db8::1".parse().unwrap(),
                ],
                comment: Some("quote \" backslash \\ 'single' \u{e9}".into()),
            },
            Rule {
                id: 1,
                proto: Proto::Tcp,
                ports: PortRange::single(22),
                from: vec![],
                comment: None,
            },
        ];
        let mut notes = Annotations::default();
        notes.header.push("multi\nline header".into());
        notes
            .options
            .insert("icmp_echo".into(), vec!["from line 3".into()]);
        notes
            .rules
            .insert(1, vec!["from line 9".into(), String::new()]);
        assert_eq!(round_trip(&p, &notes), p);
        let text = to_toml(&p, &notes);
        assert!(text.starts_with("# multi line header\n"), "{text}");
        assert!(text.contains("# from line 3\nicmp_echo = true"), "{text}");
        assert!(text.contains("# from line 9\n#\n[[allow]]"), "{text}");
    }

    #[test]
    fn annotated_rules_start_their_own_table() {
        let mut p = Policy::default();
        for (id, port) in [80u16, 443].into_iter().enumerate() {
            p.rules.push(Rule {
                id: id as u32,
                proto: Proto::Tcp,
                ports: PortRange::single(port),
                from: vec![],
                comment: None,
            });
        }
        let grouped = to_toml(&p, &Annotations::default());
        assert_eq!(grouped.matches("[[allow]]").count(), 1, "{grouped}");
        let mut notes = Annotations::default();
        notes.rules.insert(1, vec!["line 7".into()]);
        let split = to_toml(&p, &notes);
        assert_eq!(split.matches("[[allow]]").count(), 2, "{split}");
        assert_eq!(round_trip(&p, &notes), p);
    }
}
