//! Rule sets that need fw's flood defences (issue 12): blocklists of source DROPs, an INPUT
//! policy ACCEPT with drops (`default = "accept"`), and the rate-limit modules.

use fw_policy::{Cidr, DefaultAction};

use super::tests::{imp, open, refused};
use crate::ProblemKind;

fn blocked(p: &fw_policy::Policy) -> Vec<String> {
    p.block_sources().map(Cidr::to_string).collect()
}

#[test]
fn source_drops_ahead_of_the_allowed_ports_become_blocks() {
    let i = imp(
        "-P INPUT DROP\n-A INPUT -s 198.51.100.0/24 -j DROP\n-A INPUT -p tcp --dport 22 -j ACCEPT\n",
    );
    assert_eq!(blocked(&i.policy), ["198.51.100.0/24"]);
    assert_eq!(i.policy.default, DefaultAction::Drop);
    assert_eq!(open(&i.policy), ["22/tcp from anywhere"]);
    assert!(i.toml.contains("[[block]]"), "{}", i.toml);
    // Sources the kernel drops anyway (martians) need no block.
    let i = imp(
        "-P INPUT DROP\n-A INPUT -s 127.0.0.0/8 -j DROP\n-A INPUT -s 224.0.0.0/4 -j DROP\n-A INPUT -p tcp --dport 22 -j ACCEPT\n",
    );
    assert!(i.policy.blocks.is_empty(), "{}", i.toml);
    // A DROP after the last ACCEPT changes nothing under a DROP policy: no block.
    let i = imp(
        "-P INPUT DROP\n-A INPUT -p tcp --dport 22 -j ACCEPT\n-A INPUT -s 198.51.100.7 -j DROP\n",
    );
    assert!(i.policy.blocks.is_empty(), "{}", i.toml);
}

/// The usual shape: loopback, replies, a blocklist of DROPs (bogons and abusers), the ports.
/// Replies from a blocked address to a connection the host opened differ (fw blocks both
/// directions): a note, not a refusal.
#[test]
fn blocklist_after_the_established_rule_imports_with_a_note() {
    let i = imp(
        "*filter\n:INPUT DROP [0:0]\n-A INPUT -i lo -j ACCEPT\n-A INPUT -m state --state ESTABLISHED,RELATED -j ACCEPT\n\
         -A INPUT -s 10.0.0.0/8 -j DROP\n-A INPUT -s 172.16.0.0/12 -j DROP\n-A INPUT -s 203.0.113.66/32 -m comment --comment abuser -j DROP\n\
         -A INPUT -p tcp --dport 22 -j ACCEPT\n-A INPUT -p tcp -m multiport --dports 80,443 -j ACCEPT\nCOMMIT\n",
    );
    assert_eq!(
        blocked(&i.policy),
        ["10.0.0.0/8", "172.16.0.0/12", "203.0.113.66"]
    );
    assert_eq!(i.policy.blocks[2].comment.as_deref(), Some("abuser"));
    assert!(
        i.notes
            .iter()
            .any(|n| n.contains("replies from blocked sources")),
        "{:?}",
        i.notes
    );
}

#[test]
fn input_accept_policy_with_a_blocklist_becomes_default_accept() {
    let i = imp(
        "*filter\n:INPUT ACCEPT [0:0]\n:FORWARD ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n-A INPUT -i lo -j ACCEPT\n\
         -A INPUT -s 192.0.2.0/24 -j DROP\n-A INPUT -s 198.51.100.23 -j REJECT --reject-with icmp-host-prohibited\n\
         -A INPUT -s 203.0.113.0/25 -j DROP\nCOMMIT\n",
    );
    assert_eq!(i.policy.default, DefaultAction::Accept);
    assert_eq!(
        blocked(&i.policy),
        ["192.0.2.0/24", "198.51.100.23", "203.0.113.0/25"]
    );
    assert!(i.toml.contains("default = \"accept\""), "{}", i.toml);
}

/// fw's accept mode has no per-port DROP: the line is named, with what to do instead.
#[test]
fn port_drop_under_an_accept_policy_is_refused_naming_the_line() {
    let e = refused(
        "*filter\n:INPUT ACCEPT [0:0]\n-A INPUT -s 192.0.2.0/24 -j DROP\n-A INPUT -p tcp --dport 3306 -j DROP\nCOMMIT\n",
        Some(4),
        "--dport",
    );
    assert_eq!(e.kind(), Some(ProblemKind::NotEquivalent));
    let msg = e.to_string();
    assert!(msg.contains("cannot drop one port"), "{msg}");
    assert!(msg.contains("port 3306"), "{msg}");
    assert!(msg.contains("INPUT policy DROP"), "{msg}");
}

/// An ACCEPT of a source ahead of the DROP that blocks its network: a block would drop it.
#[test]
fn block_of_a_source_an_earlier_line_accepts_is_refused_at_the_drop() {
    let e = refused(
        "-P INPUT DROP\n-A INPUT -s 198.51.100.7 -p tcp --dport 22 -j ACCEPT\n-A INPUT -s 198.51.100.0/24 -j DROP\n-A INPUT -p tcp --dport 80 -j ACCEPT\n",
        Some(3),
        "198.51.100.0/24",
    );
    assert!(e.to_string().contains("line 2 accepts"), "{e}");
}

fn limit_of(i: &crate::Imported, port: u16) -> Option<&fw_policy::Limit> {
    let r = i.policy.rules.iter().find(|r| r.ports.lo == port)?;
    i.policy.limits.get(&r.id)
}

fn text(r: Option<fw_policy::Rate>) -> Option<String> {
    r.map(|r| r.to_string())
}

/// The classic SSH brute-force pair: `recent --set`, then `--update --seconds 60 --hitcount 4`
/// DROP, then the ACCEPT.
#[test]
fn recent_ssh_brute_force_pair_becomes_a_per_source_limit_with_a_ban() {
    let i = imp(
        "*filter\n:INPUT DROP [0:0]\n-A INPUT -i lo -j ACCEPT\n-A INPUT -m state --state ESTABLISHED,RELATED -j ACCEPT\n\
         -A INPUT -p tcp -m tcp --dport 22 -m state --state NEW -m recent --set --name SSH --rsource\n\
         -A INPUT -p tcp -m tcp --dport 22 -m state --state NEW -m recent --update --seconds 60 --hitcount 4 --rttl --name SSH --rsource -j DROP\n\
         -A INPUT -p tcp -m tcp --dport 22 -j ACCEPT\n-A INPUT -p tcp -m tcp --dport 80 -j ACCEPT\nCOMMIT\n",
    );
    let l = limit_of(&i, 22).expect("22 is limited");
    assert_eq!(text(l.rate).as_deref(), Some("4/1m"));
    assert_eq!((l.per4, l.ban_after, l.ban_secs), (32, Some(1), 60));
    assert!(l.total.is_none());
    assert!(limit_of(&i, 80).is_none(), "{}", i.toml);
    assert!(i.toml.contains("limit = \"4/1m\""), "{}", i.toml);
    assert!(
        i.notes
            .iter()
            .any(|n| n.contains("(line 6)") && n.contains("sliding window of 1m")),
        "{:?}",
        i.notes
    );
    // `--rcheck` does not refresh the entry: the limit without the ban.
    let i = imp(
        "-P INPUT DROP\n-A INPUT -p tcp --dport 22 -m recent --set\n\
         -A INPUT -p tcp --dport 22 -m recent --rcheck --seconds 30 --hitcount 6 -j REJECT\n-A INPUT -p tcp --dport 22 -j ACCEPT\n",
    );
    let l = limit_of(&i, 22).expect("22 is limited");
    assert_eq!(text(l.rate).as_deref(), Some("6/30s"));
    assert_eq!(l.ban_after, None);
}

/// An anti-DDoS set: hashlimit-above DROPs per /24 ahead of the web port, hashlimit-upto
/// ACCEPTs per address, and a plain `-m limit` on a port (all sources together).
#[test]
fn hashlimit_anti_ddos_set_becomes_per_source_limits_with_prefixes() {
    let i = imp(
        "*filter\n:INPUT DROP [0:0]\n-A INPUT -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT\n\
         -A INPUT -p tcp --dport 80 -m conntrack --ctstate NEW -m hashlimit --hashlimit-above 20/sec --hashlimit-burst 50 --hashlimit-mode srcip --hashlimit-srcmask 24 --hashlimit-name http --hashlimit-htable-expire 300000 -j DROP\n\
         -A INPUT -p tcp --dport 80 -j ACCEPT\n\
         -A INPUT -p tcp --dport 443 -m hashlimit --hashlimit-upto 50/second --hashlimit-burst 100 --hashlimit-mode srcip,dstport --hashlimit-name https -j ACCEPT\n\
         -A INPUT -p tcp --dport 25 -m limit --limit 30/minute -j ACCEPT\n\
         -A INPUT -p icmp --icmp-type echo-request -m limit --limit 1/s --limit-burst 4 -j ACCEPT\nCOMMIT\n",
    );
    let l = limit_of(&i, 80).expect("80 is limited");
    assert_eq!(text(l.rate).as_deref(), Some("20/1s"));
    assert_eq!((l.burst, l.per4), (Some(50), 24));
    let l = limit_of(&i, 443).expect("443 is limited");
    assert_eq!(text(l.rate).as_deref(), Some("50/1s"));
    assert_eq!((l.burst, l.per4), (Some(100), 32));
    let l = limit_of(&i, 25).expect("25 is limited");
    assert_eq!(text(l.total).as_deref(), Some("30/1m"));
    assert!(l.rate.is_none());
    assert!(i.policy.options.icmp_echo);
    assert!(
        i.notes
            .iter()
            .any(|n| n.contains("rate limit on ping (line 8) is not carried")),
        "{:?}",
        i.notes
    );
}

/// Bad values name the file, the line and the value; what fw cannot carry says why.
#[test]
fn bad_or_unsupported_rate_matches_are_refused_with_line_and_value() {
    let d = "-P INPUT DROP\n";
    let e = refused(
        &format!("{d}-A INPUT -p tcp --dport 22 -m limit --limit 5/fortnight -j ACCEPT\n"),
        Some(2),
        "--limit 5/fortnight",
    );
    assert_eq!(e.kind(), Some(ProblemKind::Syntax));
    refused(
        &format!(
            "{d}-A INPUT -p tcp --dport 22 -m hashlimit --hashlimit-upto 5/min --hashlimit-mode srcip --hashlimit-srcmask 40 --hashlimit-name x -j ACCEPT\n"
        ),
        Some(2),
        "--hashlimit-srcmask 40",
    );
    refused(
        &format!(
            "{d}-A INPUT -p tcp --dport 22 -m hashlimit --hashlimit-upto 1mb/s --hashlimit-name x -j ACCEPT\n"
        ),
        Some(2),
        "1mb/s",
    );
    // Port knocking: a list other rules fill, checked without a rate.
    let e = refused(
        &format!(
            "{d}-A INPUT -p tcp --dport 22 -m recent --rcheck --seconds 10 --name KNOCK -j ACCEPT\n"
        ),
        Some(2),
        "-m recent",
    );
    assert_eq!(e.kind(), Some(ProblemKind::Unsupported));
    assert!(e.to_string().contains("port knocking"), "{e}");
    // Concurrent connections are not a rate.
    let e = refused(
        &format!(
            "{d}-A INPUT -p tcp --syn --dport 80 -m connlimit --connlimit-above 20 -j REJECT\n-A INPUT -p tcp --dport 80 -j ACCEPT\n"
        ),
        Some(2),
        "-m connlimit",
    );
    assert!(
        e.to_string().contains("not how many are open at once"),
        "{e}"
    );
}

/// A brute-force limit under an ACCEPT policy guards no allow rule: said, not lost silently.
#[test]
fn rate_drop_that_guards_no_allowed_port_is_noted() {
    let i = imp(
        "*filter\n:INPUT ACCEPT [0:0]\n-A INPUT -s 192.0.2.0/24 -j DROP\n\
         -A INPUT -p tcp --dport 22 -m recent --set\n\
         -A INPUT -p tcp --dport 22 -m recent --update --seconds 60 --hitcount 4 -j DROP\nCOMMIT\n",
    );
    assert_eq!(i.policy.default, DefaultAction::Accept);
    assert!(i.policy.limits.is_empty());
    assert!(
        i.notes
            .iter()
            .any(|n| n.contains("rate limits of line 5 guard no port")),
        "{:?}",
        i.notes
    );
}
