//! Unit tier: block lists, bans, rate limits and default-accept through `decide()` and the
//! userspace mirror, with time passing (the mirror's clock).

use fw_common::{
    Decision, Reason, decide, egress,
    frame::{PacketSpec, arp_frame},
    maps::{EVENT_BAN, EVENT_BLOCK_LIST, limited_slot, rule_slot},
    tcp::{ACK, SYN},
};

use crate::{Cidr, Compiled, blocks::MANUAL_LIST, mirror::Mirror, parse_policy};

const HOST4: &str = "192.0.2.1";
const HOST6: &str = "2001:db8::1";
const SEC: u64 = 1_000_000_000;

fn mirror(text: &str) -> Mirror {
    let m = Mirror::new(Compiled::new(&parse_policy("test", text).unwrap(), 0));
    m.now.set(1_000 * SEC);
    m
}

fn why(d: Decision) -> Option<Reason> {
    d.why()
}

fn syn(m: &Mirror, src: &str, sport: u16, dport: u16) -> Decision {
    let f = PacketSpec::tcp(src, HOST4, sport, dport, SYN).build();
    decide(f.as_slice(), m)
}

/// A whole inbound handshake from `src:sport` to port 22: SYN, the host's SYN+ACK, the ACK.
fn connect(m: &Mirror, src: &str, sport: u16) -> Decision {
    let d = syn(m, src, sport, 22);
    if !d.pass {
        return d;
    }
    let sa = PacketSpec::tcp(HOST4, src, 22, sport, SYN | ACK)
        .seq_ack(7000, 2)
        .build();
    egress::record(sa.as_slice(), m);
    let ack = PacketSpec::tcp(src, HOST4, sport, 22, ACK)
        .seq_ack(2, 7001)
        .build();
    let a = decide(ack.as_slice(), m);
    assert_eq!(why(a), Some(Reason::Established), "handshake from {src}");
    d
}

const SSH_LIMIT: &str = "[[allow]]\nports = [22]\nlimit = \"6/30s\"\n[[allow]]\nports = [80]\n";

#[test]
fn seventh_ssh_connection_within_30s_is_dropped_another_source_still_connects() {
    let m = mirror(SSH_LIMIT);
    for i in 0..6 {
        assert!(
            connect(&m, "198.51.100.7", 40000 + i).pass,
            "connection {i}"
        );
    }
    assert_eq!(
        why(syn(&m, "198.51.100.7", 40100, 22)),
        Some(Reason::RateLimited)
    );
    assert!(connect(&m, "198.51.100.8", 40000).pass);
    // Counted under the reason and under the rule; a port without a limit is not touched.
    assert_eq!(m.events_at(limited_slot(rule_slot(0, 0))), 1);
    for i in 0..20 {
        assert!(syn(&m, "198.51.100.7", 41000 + i, 80).pass);
    }
    // 6/30s is one more every 5 s.
    m.now.set(m.now.get() + 5 * SEC);
    assert!(syn(&m, "198.51.100.7", 40101, 22).pass);
    assert_eq!(
        why(syn(&m, "198.51.100.7", 40102, 22)),
        Some(Reason::RateLimited)
    );
    m.now.set(m.now.get() + 30 * SEC);
    for i in 0..6 {
        assert!(
            syn(&m, "198.51.100.7", 40200 + i, 22).pass,
            "after 30 s: {i}"
        );
    }
}

#[test]
fn sources_in_one_prefix_share_a_bucket_with_per() {
    let m = mirror("[[allow]]\nports = [22]\nlimit = \"2/1m\"\nper = \"/24\"\n");
    assert!(syn(&m, "198.51.100.1", 1, 22).pass);
    assert!(syn(&m, "198.51.100.2", 1, 22).pass);
    assert_eq!(
        why(syn(&m, "198.51.100.3", 1, 22)),
        Some(Reason::RateLimited)
    );
    assert!(syn(&m, "198.51.101.3", 1, 22).pass);
}

#[test]
fn aggregate_limit_bounds_all_sources_together() {
    let m = mirror("[[allow]]\nports = [80]\ntotal = \"10/s\"\n");
    let passed = (0..100u16)
        .filter(|i| syn(&m, &format!("203.0.113.{}", i % 250), 1000 + i, 80).pass)
        .count();
    assert_eq!(passed, 10);
    m.now.set(m.now.get() + SEC / 2);
    let later = (0..100u16)
        .filter(|i| syn(&m, &format!("198.51.100.{}", i % 250), 2000 + i, 80).pass)
        .count();
    assert_eq!(later, 5);
}

#[test]
fn udp_datagrams_count_as_new_connections() {
    let m = mirror("[[allow]]\nproto = \"udp\"\nports = [53]\nlimit = \"3/1s\"\n");
    let q = |i: u16| PacketSpec::udp("198.51.100.7", HOST4, 5000 + i, 53).build();
    let passed = (0..10)
        .filter(|i| decide(q(*i).as_slice(), &m).pass)
        .count();
    assert_eq!(passed, 3);
}

const BANNING: &str = "[[allow]]\nports = [22]\nlimit = \"2/1m\"\nban_after = 3\nban_for = \"10m\"\n[[allow]]\nports = [80]\n";

#[test]
fn a_source_that_keeps_exceeding_after_a_handshake_is_banned_on_every_port_until_expiry() {
    let m = mirror(BANNING);
    assert!(connect(&m, "198.51.100.7", 1).pass);
    assert!(connect(&m, "198.51.100.7", 2).pass);
    for i in 0..3 {
        assert_eq!(
            why(syn(&m, "198.51.100.7", 10 + i, 22)),
            Some(Reason::RateLimited)
        );
    }
    assert_eq!(m.events_at(EVENT_BAN), 1);
    assert_eq!(why(syn(&m, "198.51.100.7", 20, 80)), Some(Reason::Banned));
    assert!(syn(&m, "198.51.100.8", 20, 80).pass);
    m.now.set(m.now.get() + 601 * SEC);
    assert!(syn(&m, "198.51.100.7", 21, 80).pass);
    assert!(m.bans.borrow().is_empty(), "the expired ban is removed");
}

#[test]
fn a_source_that_never_completed_a_handshake_is_limited_but_never_banned() {
    // Its source may be forged: banning it would let anyone get any address banned.
    let m = mirror(BANNING);
    for i in 0..20 {
        syn(&m, "198.51.100.9", 100 + i, 22);
    }
    assert_eq!(m.events_at(EVENT_BAN), 0);
    assert!(syn(&m, "198.51.100.9", 200, 80).pass);
}

#[test]
fn a_spoofed_flood_does_not_reset_a_known_clients_bucket() {
    let m = mirror(SSH_LIMIT);
    for i in 0..6 {
        connect(&m, "198.51.100.7", 100 + i);
    }
    // The flood's buckets are all in the `new` table; the client's is in `known`.
    for i in 0..2000u32 {
        let src = format!("10.{}.{}.{}", i >> 16 & 255, i >> 8 & 255, i & 255);
        syn(&m, &src, 1, 22);
    }
    let known: Vec<_> = m
        .buckets
        .borrow()
        .keys()
        .filter(|(k, _)| *k)
        .map(|(_, b)| b.addr[..4].to_vec())
        .collect();
    assert_eq!(known, [vec![198, 51, 100, 7]]);
    assert_eq!(
        why(syn(&m, "198.51.100.7", 999, 22)),
        Some(Reason::RateLimited)
    );
}

#[test]
fn blocked_sources_are_dropped_on_every_port_v4_and_v6_but_not_arp_or_nd() {
    let text = "[[allow]]\nports = [22, 80]\n[[block]]\nfrom = [\"198.51.100.0/24\", \"2001:db8:bad::/48\"]\ncomment = \"abuse\"\n";
    let m = mirror(text);
    for port in [22, 80, 443] {
        assert_eq!(why(syn(&m, "198.51.100.9", 1, port)), Some(Reason::Blocked));
    }
    let v6 = PacketSpec::tcp("2001:db8:bad::5", HOST6, 1, 22, SYN).build();
    assert_eq!(why(decide(v6.as_slice(), &m)), Some(Reason::Blocked));
    let ns = PacketSpec::icmp("2001:db8:bad::5", HOST6, 135, 0).build();
    assert_eq!(why(decide(ns.as_slice(), &m)), Some(Reason::Ndp));
    assert_eq!(why(decide(arp_frame().as_slice(), &m)), Some(Reason::NonIp));
    assert!(syn(&m, "198.51.101.9", 1, 22).pass);
    let udp = PacketSpec::udp("198.51.100.9", HOST4, 53, 5353).build();
    assert_eq!(why(decide(udp.as_slice(), &m)), Some(Reason::Blocked));
    assert_eq!(m.events_at(EVENT_BLOCK_LIST + 1), 5);
}

#[test]
fn a_timed_block_stops_blocking_when_it_expires() {
    let mut c = Compiled::new(&parse_policy("t", "[[allow]]\nports = [22]\n").unwrap(), 0);
    let a: Cidr = "198.51.100.7".parse().unwrap();
    c.blocks.add(MANUAL_LIST, &a, 1_060 * SEC);
    c.blocks.finish();
    let m = Mirror::new(c);
    m.now.set(1_000 * SEC);
    assert_eq!(why(syn(&m, "198.51.100.7", 1, 22)), Some(Reason::Blocked));
    m.now.set(1_061 * SEC);
    assert!(syn(&m, "198.51.100.7", 1, 22).pass);
}

#[test]
fn many_prefix_lengths_use_the_trie_with_the_same_verdicts() {
    let mut c = Compiled::new(&parse_policy("t", "[[allow]]\nports = [22]\n").unwrap(), 0);
    for l in 8..=24u8 {
        c.blocks.add(MANUAL_LIST, &Cidr::V4([10, 0, 0, 0], l), 0);
    }
    c.blocks
        .add(MANUAL_LIST, &"198.51.100.7".parse().unwrap(), 0);
    c.blocks.finish();
    assert_eq!(c.blocks.meta.lpm4, 1);
    let m = Mirror::new(c);
    assert_eq!(why(syn(&m, "10.200.0.1", 1, 22)), Some(Reason::Blocked));
    assert_eq!(why(syn(&m, "198.51.100.7", 1, 22)), Some(Reason::Blocked));
    assert!(syn(&m, "11.0.0.1", 1, 22).pass);
}

#[test]
fn default_accept_passes_what_no_rule_names_but_still_drops_blocks_scans_and_limits() {
    let text = "default = \"accept\"\n[[allow]]\nports = [22]\nlimit = \"1/1m\"\n[[block]]\nfrom = [\"203.0.113.0/24\"]\n";
    let m = mirror(text);
    assert_eq!(
        why(syn(&m, "198.51.100.7", 1, 8080)),
        Some(Reason::DefaultAccept)
    );
    let udp = PacketSpec::udp("198.51.100.7", HOST4, 1, 9999).build();
    assert!(decide(udp.as_slice(), &m).pass);
    let ack = PacketSpec::tcp("198.51.100.7", HOST4, 1, 8080, ACK).build();
    assert_eq!(why(decide(ack.as_slice(), &m)), Some(Reason::DefaultAccept));
    let null = PacketSpec::tcp("198.51.100.7", HOST4, 1, 8080, 0).build();
    assert_eq!(why(decide(null.as_slice(), &m)), Some(Reason::TcpNull));
    assert_eq!(why(syn(&m, "203.0.113.5", 1, 8080)), Some(Reason::Blocked));
    assert!(syn(&m, "198.51.100.7", 2, 22).pass);
    assert_eq!(
        why(syn(&m, "198.51.100.7", 3, 22)),
        Some(Reason::RateLimited)
    );
}

#[test]
fn limit_keys_parse_and_bad_ones_name_the_line() {
    let p = parse_policy(
        "p",
        "[[allow]]\nports = [22, 2222]\nlimit = \"6/30s\"\nburst = 3\nper = \"/24\"\nper6 = \"/48\"\ntotal = \"100/s\"\nban_after = 5\nban_for = \"1h\"\n",
    )
    .unwrap();
    assert_eq!(p.limits.len(), 2, "each port of the entry gets the limit");
    let l = &p.limits[&1];
    assert_eq!((l.per4, l.per6, l.burst(), l.ban_secs), (24, 48, 3, 3600));
    let e = parse_policy("p", "[[allow]]\nports = [22]\n\nlimit = \"6 per 30s\"\n").unwrap_err();
    assert_eq!(e.line, 4, "{e}");
    let e = parse_policy(
        "p",
        "[[allow]]\nproto = \"udp\"\nports = [53]\nlimit = \"1/s\"\nban_after = 2\n",
    )
    .unwrap_err();
    assert!(e.message.contains("handshake"), "{e}");
    let e = parse_policy("p", "default = \"maybe\"\n").unwrap_err();
    assert_eq!(e.line, 1, "{e}");
    let p = parse_policy("p", "default = \"accept\"\n").unwrap();
    assert!(
        !p.options.new_requires_syn,
        "accept mode turns it off by default"
    );
    let e = parse_policy(
        "p",
        "default = \"accept\"\n[options]\nnew_requires_syn = true\n",
    )
    .unwrap_err();
    assert!(e.message.contains("new_requires_syn"), "{e}");
}

#[test]
fn a_block_file_in_the_policy_is_read_relative_to_it_and_garbage_is_refused() {
    let dir = std::env::temp_dir().join(format!("fw-block-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("drop.txt"), "; spamhaus\n192.0.2.0/24 ; SBL1\n").unwrap();
    std::fs::write(dir.join("bad.txt"), "192.0.2.0/24\nhello world\n").unwrap();
    std::fs::write(dir.join("p.toml"), "[[block]]\nfile = \"drop.txt\"\n").unwrap();
    std::fs::write(dir.join("q.toml"), "[[block]]\nfile = \"bad.txt\"\n").unwrap();
    let p = crate::parse_policy_file(&dir.join("p.toml")).unwrap();
    assert_eq!(p.blocks[0].from.len(), 1);
    let e = crate::parse_policy_file(&dir.join("q.toml")).unwrap_err();
    assert!(e.to_string().contains("bad.txt:2"), "{e}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn limits_survive_a_flattened_json_round_trip() {
    // The state file flattens the record holding the policy; number-keyed maps do not survive.
    #[derive(serde::Serialize, serde::Deserialize)]
    struct Outer {
        #[serde(flatten)]
        inner: Inner,
    }
    #[derive(serde::Serialize, serde::Deserialize)]
    struct Inner {
        policy: crate::Policy,
    }
    let p = parse_policy("p", SSH_LIMIT).unwrap();
    let text = serde_json::to_string(&Outer {
        inner: Inner { policy: p.clone() },
    })
    .unwrap();
    let back: Outer = serde_json::from_str(&text).unwrap();
    assert_eq!(back.inner.policy, p);
}
