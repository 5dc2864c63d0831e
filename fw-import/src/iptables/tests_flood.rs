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
