//! Tier 2: the real compiled XDP program, run with BPF_PROG_TEST_RUN, against the userspace
//! `decide()` on the same bytes. Needs root and bpffs; fails loudly without them.
//!
//! For every named packet: the kernel's return value is the verdict `decide()` gives (never
//! XDP_ABORTED), the kernel counted the packet in the slot `decide()` names, and both say what
//! the table says the policy does (so a bug shared by both sides is caught too). Every prefix
//! of every packet (14 bytes to full length) must get the same answer from both sides.
//!
//! Run: `cargo build -p fw-user && cargo test -p tests --test kernel_verdicts -- --nocapture`
//!
//! The tables live in modules, one topic a file: [`structural`] (link layer, VLAN tags, IPv4,
//! IPv6 and its extension headers, fragments, TCP, UDP, ICMP, DHCP), [`policies`] (whole
//! policies), [`random`] (mutated frames); [`env`] says what a policy's options make of the
//! structural cases, [`table`] runs a table.

mod env;
mod policies;
mod random;
mod structural;
mod table;

use std::net::IpAddr;

use fw::loader::Variant;
use fw_common::{Config, Reason, packet as pkt, tcp};
use fw_lab::frames::{L4Spec, PacketSpec, fix_len, put16};
use fw_policy::Policy;
use fw_testrun::{Expect, KernelFilter, MIN_FRAME, Rng, Tally, require_root};

use Expect::{Is, Rule};
use env::{Env, OPTIONS, RESTRICTED, policy, seed};
use policies::{options_table, restricted_table, seed_table, ssh_from};
use random::{mutate, near};
use structural::structural;
use table::{Case, D4, D6, S4, Table, load, run_table, syn4};

/// Both builds of the XDP program: multi-buffer (`xdp.frags`, what fw loads on Linux ≥ 5.18)
/// and single-buffer (older kernels). The tables must come out the same for both.
fn variants() -> Vec<Variant> {
    let mut v = vec![Variant::Linear];
    if fw::probe::xdp_frags() {
        v.insert(0, Variant::Frags);
    } else {
        eprintln!("this kernel has no multi-buffer XDP: only the single-buffer build runs");
    }
    v
}

/// Run `table` for `policy` through each build of the program.
fn run_both(name: &str, p: &Policy, table: &Table) {
    require_root();
    for v in variants() {
        let f = KernelFilter::load_variant(p, v)
            .unwrap_or_else(|e| panic!("loading the {v:?} build: {e:#}"));
        let mut tally = Tally::new(format!("{name} ({v:?})"));
        run_table(&mut tally, &f, table);
        tally.finish();
    }
}

#[test]
fn seed_policy_verdicts() {
    let p = seed();
    run_both("seed", &p, &seed_table(&p));
}

#[test]
fn source_restricted_policy_verdicts() {
    let p = policy("restricted", RESTRICTED);
    run_both("ssh-restricted", &p, &restricted_table(&p));
}

#[test]
fn options_policy_verdicts() {
    let p = policy("options", OPTIONS);
    run_both("options", &p, &options_table(&p));
}

#[test]
fn empty_policy_verdicts() {
    let p = policy("empty", "");
    let f = load(&p);
    let mut tally = Tally::new("empty");
    let mut t = structural(&Env::of(&p));
    for port in [22u16, 80, 443] {
        t.ok(
            format!("v4 SYN to {port}"),
            syn4(port).build(),
            Is(Reason::DefaultDrop),
        );
    }
    run_table(&mut tally, &f, &t);
    tally.finish();
}

/// `fw flush`: everything passes, counted as flushed; unflushing restores the policy.
#[test]
fn flush_passes_everything() {
    let p = seed();
    let mut f = load(&p);
    let table = seed_table(&p);
    let mut tally = Tally::new("flushed");
    f.set_flushed(true).expect("flush");
    let flushed: Vec<_> = table
        .0
        .iter()
        .map(|c| Case {
            name: format!("flushed: {}", c.name),
            frame: c.frame.clone(),
            expect: Is(Reason::Flushed),
            prefixes_truncated: false,
        })
        .collect();
    let flushed = Table(flushed);
    run_table(&mut tally, &f, &flushed);
    // Random bytes with an IP ethertype pass too.
    let mut rng = Rng::new(0xf105);
    for i in 0..200 {
        let mut fr: Vec<u8> = (0..14 + rng.below(200)).map(|_| rng.byte()).collect();
        put16(
            &mut fr,
            12,
            *rng.pick(&[pkt::ETH_P_IPV4, pkt::ETH_P_IPV6, pkt::ETH_P_8021Q]),
        );
        tally.packet(
            &f,
            &format!("flushed random frame {i}"),
            &fr,
            Is(Reason::Flushed),
        );
    }
    f.set_flushed(false).expect("unflush");
    run_table(&mut tally, &f, &table);
    tally.finish();
}

/// Two generations in the kernel: fill the inactive one, flip, and the verdicts follow; the
/// other generation's entries (LPM included) never leak into the active one.
#[test]
fn generation_flip() {
    let seed = seed();
    let restricted = policy("restricted", RESTRICTED);
    // Another source-restricted policy for generation 0, overlapping generation 1's ports.
    let other = policy(
        "other",
        r#"
[[allow]]
ports = [22]
from = ["198.51.100.0/24"]
[[allow]]
ports = [8080]
"#,
    );
    let mut f = load(&seed);
    let mut tally = Tally::new("generations");
    let seed_t = seed_table(&seed);
    let restricted_t = restricted_table(&restricted);
    let mut other_t = structural(&Env::of(&other));
    for (src, port, want) in [
        ("198.51.100.5", 22, Rule(0)),
        ("198.51.100.200", 22, Rule(0)),
        ("203.0.113.7", 22, Is(Reason::SourceNotAllowed)),
        ("2001:db8:1::5", 22, Is(Reason::SourceNotAllowed)),
        ("10.1.2.3", 2222, Is(Reason::DefaultDrop)),
        ("203.0.113.7", 8080, Rule(1)),
        ("2001:db8:1::5", 8080, Rule(1)),
        ("203.0.113.7", 80, Is(Reason::DefaultDrop)),
    ] {
        other_t.ok(
            format!("SYN from {src} to {port}"),
            ssh_from(src, port),
            want,
        );
    }

    let phase = |f: &KernelFilter, label: &str, t: &Table, tally: &mut Tally| {
        let before = (tally.packets, tally.truncations);
        for c in &t.0 {
            tally.packet(f, &format!("{label}: {}", c.name), &c.frame, c.expect);
        }
        for c in t.0.iter().filter(|c| !c.name.contains("TCP flags")) {
            tally.truncations(
                f,
                &format!("{label}: {}", c.name),
                &c.frame,
                c.prefixes_truncated,
            );
        }
        println!(
            "  {label}: gen {} active, {} packets, {} truncations",
            f.active_generation(),
            tally.packets - before.0,
            tally.truncations - before.1
        );
    };

    assert_eq!(f.active_generation(), 0);
    phase(&f, "gen 0 = seed", &seed_t, &mut tally);
    f.write_generation(&restricted, 1).expect("write gen 1");
    phase(&f, "gen 1 written, gen 0 still active", &seed_t, &mut tally);
    f.set_active(1).expect("flip to 1");
    phase(
        &f,
        "flipped to gen 1 = restricted",
        &restricted_t,
        &mut tally,
    );
    // Gen 1's rules count in gen 1's slots: check one directly.
    let slot = fw_common::maps::rule_slot(1, 2);
    let c0 = f.counter(slot).expect("counter").packets;
    f.run(&ssh_from("203.0.113.7", 22)).expect("run");
    assert_eq!(
        f.counter(slot).expect("counter").packets,
        c0 + 1,
        "gen 1 rule 2 counter"
    );
    f.write_generation(&other, 0).expect("write gen 0");
    phase(
        &f,
        "gen 0 rewritten, gen 1 still active",
        &restricted_t,
        &mut tally,
    );
    f.set_active(0).expect("flip to 0");
    phase(&f, "flipped to gen 0 = other", &other_t, &mut tally);
    f.set_active(1).expect("flip back to 1");
    phase(&f, "flipped back to gen 1", &restricted_t, &mut tally);
    assert_eq!(f.apply(&seed).expect("apply"), 0);
    phase(&f, "apply(seed) into gen 0", &seed_t, &mut tally);
    tally.finish();
}

#[test]
fn random_differential() {
    require_root();
    const MUTATED: usize = 4000;
    const RANDOM: usize = 500;
    const SOURCES: usize = 1000;
    let policies = [
        ("seed", seed()),
        ("restricted", policy("restricted", RESTRICTED)),
        ("options", policy("options", OPTIONS)),
    ];
    let bases: Vec<Vec<u8>> = {
        let mut b: Vec<Vec<u8>> = seed_table(&policies[0].1)
            .0
            .into_iter()
            .filter(|c| !c.name.contains("TCP flags"))
            .map(|c| c.frame)
            .collect();
        b.extend(
            restricted_table(&policies[1].1)
                .0
                .into_iter()
                .rev()
                .take(60)
                .map(|c| c.frame),
        );
        b
    };
    let mut f = load(&policies[0].1);
    let mut tally = Tally::new("random");
    let mut rng = Rng::new(0x5eed_f00d_1234_abcd);
    let mut verdicts = std::collections::BTreeMap::<String, usize>::new();
    for (i, (name, pol)) in policies.iter().enumerate() {
        if i > 0 {
            f.apply(pol).expect("apply");
        }
        for n in 0..MUTATED {
            let base = rng.pick(&bases);
            let fr = mutate(&mut rng, base);
            if let Some(d) = tally.any(&f, &format!("{name}: mutated frame {n}"), &fr) {
                *verdicts.entry(fw_testrun::describe(&d)).or_default() += 1;
            }
        }
        for n in 0..RANDOM {
            let len = MIN_FRAME + rng.below(300);
            let mut fr: Vec<u8> = (0..len).map(|_| rng.byte()).collect();
            if rng.chance(3, 4) {
                put16(
                    &mut fr,
                    12,
                    *rng.pick(&[pkt::ETH_P_IPV4, pkt::ETH_P_IPV6, pkt::ETH_P_8021Q]),
                );
            }
            if rng.chance(1, 2) && fr.len() > 14 {
                fr[14] = *rng.pick(&[0x45, 0x46, 0x4f, 0x60, 0x81]);
                fr = fix_len(fr);
            }
            tally.any(&f, &format!("{name}: random frame {n}"), &fr);
        }
        for _ in 0..SOURCES {
            let v6 = rng.chance(1, 2);
            let src = near(&mut rng, v6);
            let dport = *rng.pick(&[22u16, 2222, 3000, 4000, 53, 80]);
            let (dst, l4): (IpAddr, L4Spec) = (
                if v6 {
                    D6.parse().unwrap()
                } else {
                    D4.parse().unwrap()
                },
                if rng.chance(3, 4) {
                    L4Spec::Tcp {
                        sport: 40000,
                        dport,
                        flags: *rng.pick(&[tcp::SYN, tcp::ACK, tcp::SYN | tcp::ACK, 0, tcp::FIN]),
                    }
                } else {
                    L4Spec::Udp { sport: 5353, dport }
                },
            );
            let mut spec = PacketSpec::new(D4, D4, l4);
            spec.src = src;
            spec.dst = dst;
            let fr = spec.build();
            if let Some(d) = tally.any(&f, &format!("{name}: SYN from {src} to {dport}"), &fr) {
                *verdicts.entry(fw_testrun::describe(&d)).or_default() += 1;
            }
        }
    }
    println!("[random] verdicts seen: {verdicts:?}");
    tally.finish();
}

/// The harness leaves no pins behind: not after a normal drop, not after a panic.
#[test]
fn pins_are_removed() {
    let p = seed();
    let f = load(&p);
    let (pins, state) = (f.pins_dir().to_path_buf(), f.state_dir().to_path_buf());
    assert!(
        pins.join(fw_common::maps::MAP_PORTS).exists(),
        "maps are pinned"
    );
    drop(f);
    assert!(!pins.exists(), "{} left behind", pins.display());
    assert!(!state.exists(), "{} left behind", state.display());

    let dirs = std::sync::Mutex::new(None);
    let r = std::panic::catch_unwind(|| {
        let f = load(&p);
        *dirs.lock().unwrap() = Some((f.pins_dir().to_path_buf(), f.state_dir().to_path_buf()));
        panic!("(expected) a test failing while the filter is loaded");
    });
    assert!(r.is_err());
    let (pins, state) = dirs.lock().unwrap().take().expect("filter was loaded");
    assert!(
        !pins.exists(),
        "{} left behind after a panic",
        pins.display()
    );
    assert!(
        !state.exists(),
        "{} left behind after a panic",
        state.display()
    );
}

/// The harness notices a kernel that disagrees with the mirror: in the verdict, and in the
/// counter slot alone (same verdict, another slot).
#[test]
fn harness_detects_disagreement() {
    let p = seed();
    let mut f = load(&p);
    let ping = PacketSpec::icmp(S4, D4, 8, 0).payload(56).build();
    let web = syn4(80).build();
    assert!(f.check(&ping).unwrap().is_ok() && f.check(&web).unwrap().is_ok());

    let g = f.active_generation();
    let mut cfg = f.mirror().config;
    cfg.flags |= Config::ICMP_ECHO;
    f.kernel_maps_mut()
        .set_config(g, cfg)
        .expect("kernel-only config");
    let m = f
        .check(&ping)
        .unwrap()
        .expect_err("echo: kernel passes, decide() drops");
    assert_eq!(
        (m.kernel_ret, m.slot_delta),
        (fw_testrun::XDP_PASS, (0, 0)),
        "{m}"
    );
    assert!(!m.user.pass);

    cfg.flags |= Config::PASS_ALL;
    f.kernel_maps_mut()
        .set_config(g, cfg)
        .expect("kernel-only config");
    let m = f
        .check(&web)
        .unwrap()
        .expect_err("kernel counts flushed, decide() rule 0");
    assert_eq!(
        (m.kernel_ret, m.slot_delta),
        (fw_testrun::XDP_PASS, (0, 0)),
        "{m}"
    );
    assert!(m.user.pass);

    let mut tally = Tally::new("self-test");
    tally.packet(&f, "wrong on purpose", &web, Rule(0));
    assert_eq!(tally.failures(), 1, "a disagreement is a failure");
    f.set_config(f.mirror().config).expect("restore");
    tally = Tally::new("self-test");
    tally.packet(&f, "web SYN, table says rule 1 on purpose", &web, Rule(1));
    assert_eq!(tally.failures(), 1, "a wrong expectation is a failure");
    tally = Tally::new("self-test");
    tally.packet(&f, "web SYN", &web, Rule(0));
    tally.packet(&f, "ping", &ping, Is(Reason::DefaultDrop));
    tally.finish();
}
