//! Tier 2, flood defence: block lists (hash and LPM representations), bans and rate limits run
//! through the real XDP program with BPF_PROG_TEST_RUN and through the userspace mirror; every
//! verdict and counter slot must agree, also as time passes (buckets and bans back-dated on
//! both sides). Plus what only the kernel can show: a spoofed flood that overflows the LRU
//! bucket table evicts no bucket of a client that completed a handshake, and touches no flow
//! table. Needs root and bpffs.

use fw::sys::monotonic_coarse_ns;
use fw_common::{
    FlowTable, Reason,
    frame::{PacketSpec, arp_frame},
    limit::{BanKey, Bucket, BucketKey},
    maps::{RL_NEW_MAX, rule_id, rule_slot},
    tcp::{ACK, SYN},
};
use fw_policy::{Cidr, Policy, blocks::BlockSet, parse_policy};
use fw_testrun::{KernelFilter, XDP_DROP, XDP_PASS, require_root};

const H4: &str = "192.0.2.1";
const H6: &str = "2001:db8::1";
const SEC: u64 = 1_000_000_000;

fn load(text: &str) -> KernelFilter {
    require_root();
    let p: Policy = parse_policy("test", text).unwrap_or_else(|e| panic!("{e}"));
    KernelFilter::load(&p).unwrap_or_else(|e| panic!("loading the fw programs: {e:#}"))
}

/// Kernel and mirror agree on `frame`; the reason (None: a rule) it got.
fn both(f: &KernelFilter, frame: &[u8]) -> Option<Reason> {
    match f.check(frame).expect("test run") {
        Ok(d) => d.why(),
        Err(m) => panic!("kernel and mirror disagree: {m}"),
    }
}

fn syn(src: &str, sport: u16, dport: u16) -> Vec<u8> {
    let dst = if src.contains(':') { H6 } else { H4 };
    PacketSpec::tcp(src, dst, sport, dport, SYN).build()
}

/// A whole inbound handshake to port 22 on both sides; the SYN's reason.
fn connect(f: &KernelFilter, src: &str, sport: u16) -> Option<Reason> {
    let r = both(f, &syn(src, sport, 22));
    if r.is_some() {
        return r;
    }
    let sa = PacketSpec::tcp(H4, src, 22, sport, SYN | ACK)
        .seq_ack(9000, 2)
        .build();
    f.egress(&sa).expect("egress run").expect("recorded");
    let ack = PacketSpec::tcp(src, H4, sport, 22, ACK)
        .seq_ack(2, 9001)
        .build();
    assert_eq!(both(f, &ack), Some(Reason::Established));
    None
}

fn blocked_set(cidrs: &[&str]) -> BlockSet {
    let mut s = BlockSet::default();
    for c in cidrs {
        s.add(0, &c.parse::<Cidr>().unwrap(), 0);
    }
    s.finish();
    s
}

#[test]
fn block_list_verdicts_match_the_mirror_in_hash_and_lpm_form() {
    let mut f = load("[[allow]]\nports = [22, 80]\n[[allow]]\nproto = \"udp\"\nports = [53]\n");
    let few = blocked_set(&["198.51.100.0/24", "203.0.113.7", "2001:db8:bad::/48"]);
    assert_eq!(few.meta.lpm4, 0);
    let mut many: Vec<String> = (8..=30).map(|l| format!("10.0.0.0/{l}")).collect();
    many.extend(["198.51.100.0/24".into(), "203.0.113.7".into()]);
    let mut many = blocked_set(&many.iter().map(String::as_str).collect::<Vec<_>>());
    for l in (16..=64).step_by(8) {
        many.add(
            0,
            &Cidr::parse_masked(&format!("2001:db8:bad::/{l}")).unwrap(),
            0,
        );
    }
    many.finish();
    assert_eq!((many.meta.lpm4, many.meta.lpm6), (1, 1));
    for set in [few, many.clone(), BlockSet::default(), many] {
        f.set_blocks(set).unwrap();
        for (src, port) in [
            ("198.51.100.9", 22),
            ("198.51.100.9", 443),
            ("203.0.113.7", 80),
            ("203.0.113.8", 80),
            ("10.1.2.3", 22),
            ("2001:db8:bad::1", 22),
            ("2001:db8:bad::1", 9),
            ("2001:db8:900d::1", 22),
        ] {
            both(&f, &syn(src, 1000, port));
        }
        both(&f, &PacketSpec::udp("198.51.100.9", H4, 5353, 53).build());
        both(&f, &PacketSpec::icmp("2001:db8:bad::1", H6, 135, 0).build());
        both(&f, &arp_frame());
    }
    f.set_blocks(blocked_set(&["198.51.100.0/24", "2001:db8:bad::/48"]))
        .unwrap();
    assert_eq!(both(&f, &syn("198.51.100.9", 1, 22)), Some(Reason::Blocked));
    assert_eq!(
        both(&f, &syn("2001:db8:bad::1", 1, 80)),
        Some(Reason::Blocked)
    );
    assert_eq!(
        both(&f, &PacketSpec::icmp("2001:db8:bad::1", H6, 135, 0).build()),
        Some(Reason::Ndp),
        "neighbour discovery from a blocked source still passes"
    );
    assert_eq!(both(&f, &arp_frame()), Some(Reason::NonIp));
}

#[test]
fn a_timed_block_lifts_at_its_expiry_in_kernel_and_mirror() {
    let mut f = load("[[allow]]\nports = [22]\n");
    let now = monotonic_coarse_ns();
    let mut s = BlockSet::default();
    s.add(0, &"198.51.100.7".parse().unwrap(), now + 60 * SEC);
    s.add(0, &"198.51.100.8".parse().unwrap(), now - SEC);
    s.finish();
    f.set_blocks(s).unwrap();
    assert_eq!(both(&f, &syn("198.51.100.7", 1, 22)), Some(Reason::Blocked));
    assert_eq!(both(&f, &syn("198.51.100.8", 1, 22)), None, "expired");
}

fn bucket_key(f: &KernelFilter, src: [u8; 4], id: u32) -> BucketKey {
    let _ = f;
    let mut addr = [0u8; 16];
    addr[..4].copy_from_slice(&src);
    BucketKey {
        addr,
        rule: rule_id(rule_slot(0, id)) as u16,
        family: 4,
        len: 32,
    }
}

/// Make `secs` pass for one bucket on both sides.
fn age_bucket(f: &mut KernelFilter, known: bool, key: &BucketKey, secs: u64) {
    let m = f.state_mirror();
    let mut b: Bucket = m.buckets.borrow()[&(known, *key)];
    b.tat = b.tat.saturating_sub(secs * SEC);
    m.buckets.borrow_mut().insert((known, *key), b);
    f.kernel_maps_mut()
        .flood
        .set_bucket(known, key, &b)
        .unwrap();
}

#[test]
fn token_buckets_agree_with_the_mirror_as_time_passes() {
    let mut f = load("[[allow]]\nports = [22]\nlimit = \"6/30s\"\n[[allow]]\nports = [80]\n");
    let reasons: Vec<_> = (0..8)
        .map(|i| both(&f, &syn("198.51.100.7", 100 + i, 22)))
        .collect();
    assert_eq!(&reasons[..6], &[None; 6]);
    assert_eq!(&reasons[6..], &[Some(Reason::RateLimited); 2]);
    assert_eq!(
        both(&f, &syn("198.51.100.8", 1, 22)),
        None,
        "another source"
    );
    assert_eq!(
        both(&f, &syn("198.51.100.7", 1, 80)),
        None,
        "a rule without a limit"
    );
    let key = bucket_key(&f, [198, 51, 100, 7], 0);
    age_bucket(&mut f, false, &key, 5);
    assert_eq!(
        both(&f, &syn("198.51.100.7", 200, 22)),
        None,
        "5 s later: one more"
    );
    assert_eq!(
        both(&f, &syn("198.51.100.7", 201, 22)),
        Some(Reason::RateLimited)
    );
    age_bucket(&mut f, false, &key, 31);
    for i in 0..6 {
        assert_eq!(both(&f, &syn("198.51.100.7", 300 + i, 22)), None);
    }
}

#[test]
fn the_aggregate_limit_agrees_with_the_mirror() {
    let f = load("[[allow]]\nports = [80]\ntotal = \"5/1m\"\n");
    let passed = (0..20u16)
        .filter(|i| both(&f, &syn(&format!("203.0.113.{i}"), 1000 + i, 80)).is_none())
        .count();
    assert_eq!(passed, 5);
}

#[test]
fn a_source_is_banned_after_handshakes_and_strikes_and_the_ban_expires() {
    let mut f = load(
        "[[allow]]\nports = [22]\nlimit = \"2/1m\"\nban_after = 3\nban_for = \"10m\"\n[[allow]]\nports = [80]\n",
    );
    assert_eq!(connect(&f, "198.51.100.7", 1), None);
    assert_eq!(connect(&f, "198.51.100.7", 2), None);
    for i in 0..3 {
        assert_eq!(
            both(&f, &syn("198.51.100.7", 10 + i, 22)),
            Some(Reason::RateLimited)
        );
    }
    assert_eq!(both(&f, &syn("198.51.100.7", 20, 80)), Some(Reason::Banned));
    assert_eq!(both(&f, &syn("198.51.100.9", 20, 80)), None);
    // Ten minutes pass for the ban.
    let mut addr = [0u8; 16];
    addr[..4].copy_from_slice(&[198, 51, 100, 7]);
    let key = BanKey {
        addr,
        family: 4,
        len: 32,
        _pad: [0; 2],
    };
    let past = monotonic_coarse_ns() - SEC;
    f.state_mirror().bans.borrow_mut().insert(key, past);
    f.kernel_maps_mut().flood.set_ban(&key, past).unwrap();
    assert_eq!(both(&f, &syn("198.51.100.7", 21, 80)), None);
    assert!(
        f.maps().flood.ban(&key).is_none(),
        "the kernel removed the expired ban"
    );
}

#[test]
fn default_accept_agrees_with_the_mirror() {
    let mut f = load(
        "default = \"accept\"\n[[allow]]\nports = [22]\nlimit = \"1/1m\"\n[[block]]\nfrom = [\"203.0.113.0/24\"]\n",
    );
    assert_eq!(
        both(&f, &syn("198.51.100.7", 1, 8080)),
        Some(Reason::DefaultAccept)
    );
    assert_eq!(
        both(&f, &PacketSpec::tcp("198.51.100.7", H4, 1, 8080, 0).build()),
        Some(Reason::TcpNull)
    );
    assert_eq!(
        both(&f, &syn("203.0.113.9", 1, 8080)),
        Some(Reason::Blocked)
    );
    assert_eq!(both(&f, &syn("198.51.100.7", 2, 22)), None);
    assert_eq!(
        both(&f, &syn("198.51.100.7", 3, 22)),
        Some(Reason::RateLimited)
    );
    // The policy's [[block]] follows the policy: replaced by one without it, the block goes.
    let p = parse_policy("t", "default = \"accept\"\n").unwrap();
    f.apply(&p).unwrap();
    assert_eq!(
        both(&f, &syn("203.0.113.9", 1, 8080)),
        Some(Reason::DefaultAccept)
    );
}

/// A spoofed SYN flood from more sources than the `new` bucket table holds: the LRU evicts
/// flood entries only; the bucket of the client that completed its handshakes stays, so its
/// 7th connection is still refused; no flow table gains or loses an entry. (6 an hour: the
/// flood takes seconds of real time, which must not refill the bucket.)
#[test]
fn a_spoofed_flood_overflowing_the_bucket_table_evicts_no_known_client() {
    let f = load("[[allow]]\nports = [22]\nlimit = \"6/1h\"\n");
    for i in 0..6 {
        assert_eq!(connect(&f, "198.51.100.7", 100 + i), None);
    }
    let flows_before = f.kernel_flows().unwrap();
    let n = RL_NEW_MAX + RL_NEW_MAX / 4;
    let mut frame = syn("10.0.0.1", 1, 22);
    let (ip_src, sport) = (14 + 12, 14 + 20);
    let started = std::time::Instant::now();
    for i in 0..n {
        frame[ip_src..ip_src + 4].copy_from_slice(&(0x0a00_0000u32 + i).to_be_bytes());
        frame[sport..sport + 2].copy_from_slice(&(i as u16).to_be_bytes());
        let r = f.run(&frame).unwrap();
        assert!(r == XDP_PASS || r == XDP_DROP);
        assert!(started.elapsed().as_secs() < 120, "flood took too long");
    }
    let new = f.maps().flood.buckets(false).unwrap();
    assert!(
        new.len() as u32 > RL_NEW_MAX * 9 / 10,
        "the flood filled the new table ({} entries)",
        new.len()
    );
    let known = f.maps().flood.buckets(true).unwrap();
    assert_eq!(known.len(), 1, "{known:?}");
    assert_eq!(&known[0].0.addr[..4], &[198, 51, 100, 7]);
    assert_eq!(f.run(&syn("198.51.100.7", 999, 22)).unwrap(), XDP_DROP);
    let flows_after = f.kernel_flows().unwrap();
    let keys = |m: &fw_testrun::Flows| m.keys().copied().collect::<Vec<_>>();
    assert_eq!(keys(&flows_before), keys(&flows_after));
    assert_eq!(
        flows_after
            .keys()
            .filter(|(t, _)| *t == FlowTable::In)
            .count(),
        6
    );
}

/// Both builds of the XDP program (multi-buffer `xdp.frags` and single-buffer) reach their own
/// build of the flood program: the kernel lets a program array hold only programs whose frags
/// flag matches its owner's, and a missing tail call would count the packet as `internal`.
#[test]
fn the_flood_step_runs_behind_both_builds_of_the_xdp_program() {
    require_root();
    let p = parse_policy("test", "[[allow]]\nports = [22]\nlimit = \"1/1h\"\n").unwrap();
    for variant in [fw::loader::Variant::Frags, fw::loader::Variant::Linear] {
        if variant == fw::loader::Variant::Frags && !fw::probe::xdp_frags() {
            continue;
        }
        let mut f = KernelFilter::load_variant(&p, variant)
            .unwrap_or_else(|e| panic!("loading the {variant:?} build: {e:#}"));
        assert_eq!(f.variant(), variant);
        f.set_blocks(blocked_set(&["198.51.100.0/24"])).unwrap();
        assert_eq!(
            both(&f, &syn("198.51.100.9", 1, 22)),
            Some(Reason::Blocked),
            "{variant:?}"
        );
        assert_eq!(connect(&f, "203.0.113.7", 1000), None, "{variant:?}");
        assert_eq!(
            both(&f, &syn("203.0.113.7", 1001, 22)),
            Some(Reason::RateLimited),
            "{variant:?}"
        );
    }
}
