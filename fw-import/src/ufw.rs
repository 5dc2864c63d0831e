//! `fw import ufw`: ufw's rules — `/etc/ufw/user.rules` and `user6.rules` (iptables-save text
//! of the `ufw-user-*` chains), or the output of `ufw status numbered` — placed inside ufw's
//! own framework (Debian's default `before.rules`/`after.rules`: loopback, connection state,
//! the ICMP types and DHCP replies ufw accepts, the INPUT policy DROP) and imported through the
//! iptables importer, with the same check and notes.

use crate::{
    Family, ImportError, ImportOptions, Imported, Problem, ProblemKind,
    iptables::{lex::Line, load, script::Expanded},
};

/// ufw's framework for IPv4 (what `before.rules` and `after.rules` do to arriving traffic).
const BEFORE4: &str = "\
:INPUT DROP [0:0]
:FORWARD DROP [0:0]
:OUTPUT ACCEPT [0:0]
:ufw-before-input - [0:0]
:ufw-not-local - [0:0]
:ufw-after-input - [0:0]
:ufw-skip-to-policy-input - [0:0]
-A INPUT -j ufw-before-input
-A INPUT -j ufw-after-input
-A ufw-before-input -i lo -j ACCEPT
-A ufw-before-input -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT
-A ufw-before-input -m conntrack --ctstate INVALID -j DROP
-A ufw-before-input -p icmp --icmp-type destination-unreachable -j ACCEPT
-A ufw-before-input -p icmp --icmp-type time-exceeded -j ACCEPT
-A ufw-before-input -p icmp --icmp-type parameter-problem -j ACCEPT
-A ufw-before-input -p icmp --icmp-type echo-request -j ACCEPT
-A ufw-before-input -p udp --sport 67 --dport 68 -j ACCEPT
-A ufw-before-input -j ufw-not-local
-A ufw-not-local -m addrtype --dst-type LOCAL -j RETURN
-A ufw-not-local -j DROP
-A ufw-before-input -p udp -d 224.0.0.251 --dport 5353 -j ACCEPT
-A ufw-before-input -p udp -d 239.255.255.250 --dport 1900 -j ACCEPT
-A ufw-before-input -j ufw-user-input
";

const AFTER4: &str = "\
-A ufw-after-input -p udp --dport 137 -j ufw-skip-to-policy-input
-A ufw-after-input -p udp --dport 138 -j ufw-skip-to-policy-input
-A ufw-after-input -p tcp --dport 139 -j ufw-skip-to-policy-input
-A ufw-after-input -p tcp --dport 445 -j ufw-skip-to-policy-input
-A ufw-after-input -p udp --dport 67 -j ufw-skip-to-policy-input
-A ufw-after-input -p udp --dport 68 -j ufw-skip-to-policy-input
-A ufw-skip-to-policy-input -j DROP
";

/// The same for IPv6 (`before6.rules`; the hop-limit and routing-header matches left out: fw
/// always passes neighbour discovery and drops what its parser refuses).
const BEFORE6: &str = "\
:INPUT DROP [0:0]
:FORWARD DROP [0:0]
:OUTPUT ACCEPT [0:0]
:ufw6-before-input - [0:0]
:ufw6-after-input - [0:0]
:ufw6-skip-to-policy-input - [0:0]
-A INPUT -j ufw6-before-input
-A INPUT -j ufw6-after-input
-A ufw6-before-input -i lo -j ACCEPT
-A ufw6-before-input -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT
-A ufw6-before-input -p ipv6-icmp --icmpv6-type destination-unreachable -j ACCEPT
-A ufw6-before-input -p ipv6-icmp --icmpv6-type packet-too-big -j ACCEPT
-A ufw6-before-input -p ipv6-icmp --icmpv6-type time-exceeded -j ACCEPT
-A ufw6-before-input -p ipv6-icmp --icmpv6-type parameter-problem -j ACCEPT
-A ufw6-before-input -p ipv6-icmp --icmpv6-type router-solicitation -j ACCEPT
-A ufw6-before-input -p ipv6-icmp --icmpv6-type router-advertisement -j ACCEPT
-A ufw6-before-input -p ipv6-icmp --icmpv6-type neighbour-solicitation -j ACCEPT
-A ufw6-before-input -p ipv6-icmp --icmpv6-type neighbour-advertisement -j ACCEPT
-A ufw6-before-input -p ipv6-icmp --icmpv6-type 130 -j ACCEPT
-A ufw6-before-input -p ipv6-icmp --icmpv6-type 131 -j ACCEPT
-A ufw6-before-input -p ipv6-icmp --icmpv6-type 132 -j ACCEPT
-A ufw6-before-input -p ipv6-icmp --icmpv6-type 143 -j ACCEPT
-A ufw6-before-input -m conntrack --ctstate INVALID -j DROP
-A ufw6-before-input -p ipv6-icmp --icmpv6-type echo-request -j ACCEPT
-A ufw6-before-input -p udp --sport 547 --dport 546 -j ACCEPT
-A ufw6-before-input -p udp -d ff02::fb --dport 5353 -j ACCEPT
-A ufw6-before-input -p udp -d ff02::f --dport 1900 -j ACCEPT
-A ufw6-before-input -j ufw6-user-input
";

const AFTER6: &str = "\
-A ufw6-after-input -p udp --dport 137 -j ufw6-skip-to-policy-input
-A ufw6-after-input -p udp --dport 138 -j ufw6-skip-to-policy-input
-A ufw6-after-input -p tcp --dport 139 -j ufw6-skip-to-policy-input
-A ufw6-after-input -p tcp --dport 445 -j ufw6-skip-to-policy-input
-A ufw6-after-input -p udp --dport 546 -j ufw6-skip-to-policy-input
-A ufw6-after-input -p udp --dport 547 -j ufw6-skip-to-policy-input
-A ufw6-skip-to-policy-input -j DROP
";

/// Framework lines carry line number 0 and say where they come from.
fn framework(text: &str, out: &mut Vec<Line>) {
    for l in text.lines() {
        out.push(Line {
            no: 0,
            text: l.to_string(),
            may_fail: false,
        });
    }
}

/// Import ufw's rules: each input is `(name, text)`.
pub fn import(inputs: &[(String, String)], opts: &ImportOptions) -> Result<Imported, ImportError> {
    let name = inputs
        .iter()
        .map(|(n, _)| n.as_str())
        .collect::<Vec<_>>()
        .join(" + ");
    let mut ex = Expanded::default();
    let mut notes = vec![
        "ufw's own rules (before.rules, after.rules) are taken as Debian ships them: loopback, connection state, ICMP errors and echo requests, DHCP replies, INPUT policy DROP (DEFAULT_INPUT_POLICY in /etc/default/ufw); edits to those files are not seen.".to_string(),
    ];
    for (file, text) in inputs {
        let six = text.contains("ufw6-") || file.contains("user6");
        let status = text.contains("ALLOW") && text.contains("--") && !text.contains("*filter");
        let user = if status {
            status_rules(file, text, six, &mut ex, &mut notes)
        } else {
            user_rules(text)
        };
        for (fam, lines) in user {
            ex.lines.push(Line {
                no: 0,
                text: format!(
                    "# Generated by {}-save (ufw framework)",
                    if fam == Family::V6 {
                        "ip6tables"
                    } else {
                        "iptables"
                    }
                ),
                may_fail: false,
            });
            ex.lines.push(Line {
                no: 0,
                text: "*filter".into(),
                may_fail: false,
            });
            let v6 = fam == Family::V6;
            framework(if v6 { BEFORE6 } else { BEFORE4 }, &mut ex.lines);
            ex.lines.extend(lines);
            framework(if v6 { AFTER6 } else { AFTER4 }, &mut ex.lines);
            ex.lines.push(Line {
                no: 0,
                text: "COMMIT".into(),
                may_fail: false,
            });
        }
    }
    let mut loaded = load::load_lines(&name, ex, opts);
    loaded.tool = "ufw";
    loaded.notes.splice(0..0, notes);
    crate::pipeline::import_loaded(&name, loaded, opts)
}

/// user.rules / user6.rules: the lines between `*filter` and `COMMIT`; a `limit` tuple is one
/// problem (ufw's `limit` needs rate limits fw does not have yet), not one per rule line.
fn user_rules(text: &str) -> Vec<(Family, Vec<Line>)> {
    let six = text.contains("ufw6-");
    let mut out = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let t = raw.trim();
        let no = i + 1;
        // A `limit` tuple's rules (`recent --set`, `--update --seconds 30 --hitcount 6`, the
        // accept) become a per-source limit like any such rules.
        if t.is_empty() || t.starts_with('#') || t == "*filter" || t == "COMMIT" {
            continue;
        }
        out.push(Line {
            no,
            text: t.to_string(),
            may_fail: false,
        });
    }
    vec![(if six { Family::V6 } else { Family::V4 }, out)]
}

/// Known application profiles (`ufw app list`): name → (tcp ports, udp ports).
fn app_profile(name: &str) -> Option<(&'static str, &'static str)> {
    Some(match name {
        "OpenSSH" | "SSH" => ("22", ""),
        "Nginx HTTP" | "Apache" | "WWW" => ("80", ""),
        "Nginx HTTPS" | "Apache Secure" | "WWW Secure" => ("443", ""),
        "Nginx Full" | "Apache Full" | "WWW Full" => ("80,443", ""),
        "Postfix" | "SMTP" => ("25", ""),
        "Postfix SMTPS" => ("465", ""),
        "Postfix Submission" => ("587", ""),
        "Dovecot IMAP" => ("143", ""),
        "Dovecot Secure IMAP" => ("993", ""),
        "Dovecot POP3" => ("110", ""),
        "Dovecot Secure POP3" => ("995", ""),
        "Bind9" | "DNS" => ("53", "53"),
        "Samba" => ("139,445", "137,138"),
        _ => return None,
    })
}

/// `ufw status [numbered|verbose]` output: each rule as the iptables rules ufw makes of it.
fn status_rules(
    file: &str,
    text: &str,
    six_file: bool,
    ex: &mut Expanded,
    notes: &mut Vec<String>,
) -> Vec<(Family, Vec<Line>)> {
    let _ = (file, six_file);
    let mut rules4 = Vec::new();
    let mut rules6 = Vec::new();
    let mut outgoing = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let no = i + 1;
        let t = raw.trim();
        let body = match t.strip_prefix('[') {
            Some(r) => match r.split_once(']') {
                Some((_, rest)) => rest.trim(),
                None => continue,
            },
            None => t,
        };
        let Some((to, action, from)) = split_status(body) else {
            continue;
        };
        let action_u = action.to_ascii_uppercase();
        let target = if action_u.starts_with("ALLOW") {
            "ACCEPT"
        } else if action_u.starts_with("DENY") {
            "DROP"
        } else if action_u.starts_with("REJECT") {
            "REJECT"
        } else if action_u.starts_with("LIMIT") {
            // ufw's own rules for `limit`: 6 new connections in 30 s per source.
            "LIMIT"
        } else {
            continue;
        };
        if action_u.contains("OUT") {
            outgoing.push(no);
            continue;
        }
        if action_u.contains("FWD") {
            continue;
        }
        let v6 = to.contains("(v6)") || from.contains("(v6)");
        let to = to.replace("(v6)", "");
        let from = from.replace("(v6)", "");
        let (to, iface) = match to.split_once(" on ") {
            Some((a, b)) => (a.trim().to_string(), Some(b.trim().to_string())),
            None => (to.trim().to_string(), None),
        };
        let src = match from.trim() {
            "Anywhere" | "" => String::new(),
            f => format!(" -s {}", f.split_whitespace().next().unwrap_or(f)),
        };
        let iface = iface.map(|i| format!(" -i {i}")).unwrap_or_default();
        let mut specs: Vec<String> = Vec::new();
        if to == "Anywhere" {
            specs.push(String::new());
        } else if let Some((tcp, udp)) = app_profile(&to) {
            for (p, ports) in [("tcp", tcp), ("udp", udp)] {
                if !ports.is_empty() {
                    specs.push(format!(" -p {p} -m multiport --dports {ports}"));
                }
            }
        } else {
            let (ports, proto) = match to.split_once('/') {
                Some((a, p)) => (a.to_string(), Some(p.to_string())),
                None => (to.clone(), None),
            };
            if ports.chars().any(|c| c.is_ascii_alphabetic()) {
                ex.problems.push(Problem::new(
                    ProblemKind::Unsupported,
                    no,
                    to.clone(),
                    "an application profile the importer does not know: write its ports (`ufw app info NAME`)",
                    t,
                ));
                continue;
            }
            for p in proto.map_or(vec!["tcp".to_string(), "udp".to_string()], |p| vec![p]) {
                specs.push(format!(" -p {p} -m multiport --dports {ports}"));
            }
        }
        let chain = if v6 {
            "ufw6-user-input"
        } else {
            "ufw-user-input"
        };
        for spec in specs {
            let head = format!("-A {chain}{iface}{src}{spec}");
            let mut texts = Vec::new();
            let target = if target == "LIMIT" {
                let new = format!("{head} -m conntrack --ctstate NEW -m recent");
                texts.push(format!("{new} --set"));
                texts.push(format!(
                    "{new} --update --seconds 30 --hitcount 6 -j REJECT"
                ));
                "ACCEPT"
            } else {
                target
            };
            texts.push(format!("{head} -j {target}"));
            for text in texts {
                let line = Line {
                    no,
                    text,
                    may_fail: false,
                };
                if v6 {
                    rules6.push(line);
                } else {
                    rules4.push(line);
                }
            }
        }
    }
    if !outgoing.is_empty() {
        notes.push(format!(
            "Rules for outgoing traffic ({}) are not imported: fw does not filter what this host sends.",
            crate::lines_text(&outgoing)
        ));
    }
    notes.push("`ufw status` does not show the default policies: taken as ufw's defaults (deny incoming, allow outgoing).".into());
    let decl = |v6: bool| Line {
        no: 0,
        text: format!(":{}-user-input - [0:0]", if v6 { "ufw6" } else { "ufw" }),
        may_fail: false,
    };
    rules4.insert(0, decl(false));
    rules6.insert(0, decl(true));
    vec![(Family::V4, rules4), (Family::V6, rules6)]
}

/// `22/tcp   ALLOW IN   Anywhere` → (to, action, from): columns are two or more spaces apart.
fn split_status(body: &str) -> Option<(String, String, String)> {
    let cols: Vec<&str> = body
        .split("  ")
        .map(str::trim)
        .filter(|c| !c.is_empty())
        .collect();
    if cols.len() < 3 || cols[0] == "To" || cols[0].starts_with("--") {
        return None;
    }
    let action = cols[1];
    let known = ["ALLOW", "DENY", "REJECT", "LIMIT"];
    if !known
        .iter()
        .any(|k| action.to_ascii_uppercase().starts_with(k))
    {
        return None;
    }
    Some((cols[0].to_string(), action.to_string(), cols[2].to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    const USER_RULES: &str = "*filter
:ufw-user-input - [0:0]
:ufw-user-output - [0:0]
:ufw-user-forward - [0:0]
:ufw-before-logging-input - [0:0]
:ufw-user-logging-input - [0:0]
:ufw-user-limit - [0:0]
:ufw-user-limit-accept - [0:0]
### RULES ###

### tuple ### allow tcp 22 0.0.0.0/0 any 0.0.0.0/0 in
-A ufw-user-input -p tcp --dport 22 -j ACCEPT

### tuple ### allow any 80,443 0.0.0.0/0 any 0.0.0.0/0 in
-A ufw-user-input -p tcp -m multiport --dports 80,443 -j ACCEPT
-A ufw-user-input -p udp -m multiport --dports 80,443 -j ACCEPT

### tuple ### allow tcp 5432 0.0.0.0/0 any 192.0.2.0/24 in
-A ufw-user-input -p tcp --dport 5432 -s 192.0.2.0/24 -j ACCEPT

### END RULES ###

### LOGGING ###
-A ufw-after-logging-input -j LOG --log-prefix \"[UFW BLOCK] \" -m limit --limit 3/min --limit-burst 10
-I ufw-user-logging-input -j RETURN
### END LOGGING ###

### RATE LIMITING ###
-A ufw-user-limit -m limit --limit 3/minute -j LOG --log-prefix \"[UFW LIMIT BLOCK] \"
-A ufw-user-limit -j REJECT
-A ufw-user-limit-accept -j ACCEPT
### END RATE LIMITING ###
COMMIT
";

    fn open(i: &Imported) -> Vec<String> {
        i.policy.rules.iter().map(|r| r.describe()).collect()
    }

    #[test]
    fn user_rules_import_inside_ufws_framework() {
        let i = import(
            &[("user.rules".into(), USER_RULES.into())],
            &ImportOptions::default(),
        )
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            open(&i),
            [
                "22/tcp from anywhere",
                "80/tcp from anywhere",
                "443/tcp from anywhere",
                "80/udp from anywhere",
                "443/udp from anywhere",
                "5432/tcp only from 192.0.2.0/24",
            ]
        );
        let o = &i.policy.options;
        assert!(o.established && o.icmp_echo && o.dhcp_client && o.strict_tcp_flags);
        assert!(
            i.notes.iter().any(|n| n.contains("before.rules")),
            "{:?}",
            i.notes
        );
    }

    #[test]
    fn ufw_limit_becomes_six_per_thirty_seconds_with_a_ban() {
        let text = USER_RULES.replace(
            "### tuple ### allow tcp 22 0.0.0.0/0 any 0.0.0.0/0 in\n-A ufw-user-input -p tcp --dport 22 -j ACCEPT",
            "### tuple ### limit tcp 22 0.0.0.0/0 any 0.0.0.0/0 in\n-A ufw-user-input -p tcp --dport 22 -m conntrack --ctstate NEW -m recent --set\n-A ufw-user-input -p tcp --dport 22 -m conntrack --ctstate NEW -m recent --update --seconds 30 --hitcount 6 -j ufw-user-limit\n-A ufw-user-input -p tcp --dport 22 -j ufw-user-limit-accept",
        );
        let i = import(&[("user.rules".into(), text)], &ImportOptions::default())
            .unwrap_or_else(|e| panic!("{e}"));
        let ssh = i.policy.rules.iter().find(|r| r.ports.lo == 22).unwrap();
        let l = &i.policy.limits[&ssh.id];
        assert_eq!(l.rate.map(|r| r.to_string()).as_deref(), Some("6/30s"));
        assert_eq!((l.ban_after, l.ban_secs), (Some(1), 30));
        assert!(l.total.is_none() && l.burst.is_none());
        // The other ports carry no limit.
        assert_eq!(i.policy.limits.len(), 1, "{}", i.toml);
        assert!(i.toml.contains("limit = \"6/30s\""), "{}", i.toml);
        assert!(
            i.notes.iter().any(|n| n.contains("sliding window of 30s")),
            "{:?}",
            i.notes
        );
    }

    #[test]
    fn status_limit_is_ufws_own_six_per_thirty_seconds() {
        let text = "Status: active

     To                         Action      From
     --                         ------      ----
[ 1] 22/tcp                     LIMIT IN    Anywhere
[ 2] 443/tcp                    ALLOW IN    Anywhere
";
        let i = import(
            &[("status.txt".into(), text.into())],
            &ImportOptions::default(),
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let ssh = i.policy.rules.iter().find(|r| r.ports.lo == 22).unwrap();
        let l = &i.policy.limits[&ssh.id];
        assert_eq!(l.rate.map(|r| r.to_string()).as_deref(), Some("6/30s"));
        assert_eq!(i.policy.limits.len(), 1, "{}", i.toml);
    }

    #[test]
    fn status_output_imports() {
        let text = "Status: active

     To                         Action      From
     --                         ------      ----
[ 1] OpenSSH                    ALLOW IN    Anywhere
[ 2] 8080/tcp                   ALLOW IN    198.51.100.0/24
[ 3] 53                         ALLOW IN    Anywhere
[ 4] 25/tcp                     ALLOW OUT   Anywhere (out)
[ 5] OpenSSH (v6)               ALLOW IN    Anywhere (v6)
";
        let i = import(
            &[("status.txt".into(), text.into())],
            &ImportOptions::default(),
        )
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            open(&i),
            [
                "22/tcp from anywhere",
                "8080/tcp only from 198.51.100.0/24",
                "53/tcp only from 0.0.0.0/0",
                "53/udp only from 0.0.0.0/0",
            ]
        );
        assert!(
            i.notes.iter().any(|n| n.contains("outgoing")),
            "{:?}",
            i.notes
        );
    }
}
