//! Tier 2: the multi-buffer build of the XDP program (`xdp.frags`, what fw loads on Linux ≥
//! 5.18 so native mode works with jumbo frames) on frames longer than one buffer. The parser
//! reads only the first buffer; the verdict must be what `decide()` says of the whole frame,
//! the byte counters count the whole frame, and a frame whose headers reach past the first
//! buffer is dropped and counted as `headers-split` (fail closed).
//!
//! The packet tables of `kernel_verdicts.rs` run against both builds there; this file covers
//! what only frames longer than a page can show.

use fw::loader::Variant;
use fw_common::{Reason, frame::PacketSpec, tcp};
use fw_policy::{Policy, SEED_POLICY, parse_policy};
use fw_testrun::{KernelFilter, XDP_DROP, XDP_PASS, require_root};

fn seed() -> Policy {
    parse_policy("seed", SEED_POLICY).expect("seed policy")
}

fn load(variant: Variant) -> KernelFilter {
    require_root();
    assert!(
        fw::probe::xdp_frags() || variant == Variant::Linear,
        "this kernel has no multi-buffer XDP (< 5.18): the frags build cannot be tested here"
    );
    KernelFilter::load_variant(&seed(), variant)
        .unwrap_or_else(|e| panic!("loading the {variant:?} build: {e:#}"))
}

/// A jumbo TCP segment: an IPv4 datagram of 8,000+ bytes (MTU 9000), to port `dport`.
fn jumbo(dport: u16, flags: u8) -> Vec<u8> {
    PacketSpec::tcp("198.51.100.7", "192.0.2.1", 40000, dport, flags)
        .payload(8000)
        .build()
}

#[test]
fn jumbo_frames_get_the_verdict_decide_gives_and_count_every_byte() {
    let f = load(Variant::Frags);
    let syn = jumbo(80, tcp::SYN);
    let want = f.decide_user(&syn);
    assert!(want.pass, "decide() passes a SYN to 80 of any length");
    let slot = want.slot;
    assert!(
        slot >= fw_common::maps::RULE_SLOT_BASE,
        "counted under the web rule"
    );
    let before = f.counter(slot).expect("counter");
    assert_eq!(f.run(&syn).expect("test run"), XDP_PASS);
    let after = f.counter(slot).expect("counter");
    assert_eq!(after.packets - before.packets, 1);
    assert_eq!(
        after.bytes - before.bytes,
        syn.len() as u64,
        "the byte counter counts the whole frame, not its first buffer"
    );
    // Closed port, scan flags: dropped for the same reasons as a small frame.
    for (frame, reason) in [
        (jumbo(8080, tcp::SYN), Reason::DefaultDrop),
        (jumbo(80, 0), Reason::TcpNull),
        (jumbo(80, tcp::ACK), Reason::TcpNotSyn),
    ] {
        let before = f.counter(reason.slot()).expect("counter").packets;
        assert_eq!(f.run(&frame).expect("test run"), XDP_DROP, "{reason:?}");
        let after = f.counter(reason.slot()).expect("counter").packets;
        assert_eq!(after - before, 1, "counted as {reason:?}");
    }
}

#[test]
fn jumbo_frames_match_the_single_buffer_build_on_small_frames() {
    // The same small frames through both builds: same verdicts and counter slots.
    let frags = load(Variant::Frags);
    let linear = load(Variant::Linear);
    for dport in [22u16, 25, 80, 443, 8080, 3306] {
        for flags in [
            tcp::SYN,
            tcp::ACK,
            0,
            tcp::FIN | tcp::PSH | tcp::URG,
            tcp::SYN | tcp::FIN,
        ] {
            let frame = PacketSpec::tcp("198.51.100.7", "192.0.2.1", 40000, dport, flags).build();
            let a = frags
                .check(&frame)
                .expect("run")
                .expect("frags agrees with decide()");
            let b = linear
                .check(&frame)
                .expect("run")
                .expect("linear agrees with decide()");
            assert_eq!(
                (a.pass, a.slot),
                (b.pass, b.slot),
                "port {dport} flags {flags:#x}"
            );
        }
    }
}

#[test]
fn headers_past_the_first_buffer_are_dropped_and_counted_as_split() {
    let f = load(Variant::Frags);
    // An allowed SYN whose first buffer ends inside the TCP header.
    let syn = jumbo(80, tcp::SYN);
    let split = Reason::HeadersSplit.slot();
    let before = f.counter(split).expect("counter").packets;
    match f.run_split(&syn, 40).expect("test run") {
        None => {
            eprintln!(
                "skipped: this kernel's BPF_PROG_TEST_RUN cannot make the first buffer shorter than a page (Linux ≥ 6.18 can)"
            );
        }
        Some(ret) => {
            assert_eq!(ret, XDP_DROP, "a frame that cannot be judged is dropped");
            let after = f.counter(split).expect("counter").packets;
            assert_eq!(after - before, 1, "counted as headers-split");
            // With the headers in the first buffer, the same frame passes.
            assert_eq!(f.run_split(&syn, 200).expect("run"), Some(XDP_PASS));
        }
    }
}

/// The cost of the multi-buffer build against the single-buffer one, same frames, same run
/// (one helper call, bpf_xdp_get_buff_len, and a flag per failed read). Prints; asserts
/// nothing about time. `cargo test -p tests --test kernel_frags -- --ignored --nocapture`
#[test]
#[ignore = "a measurement, not a test"]
fn cost_of_the_multi_buffer_build() {
    let frags = load(Variant::Frags);
    let linear = load(Variant::Linear);
    let frames = [
        (
            "SYN to 80",
            PacketSpec::syn("198.51.100.7", "192.0.2.1", 80).build(),
        ),
        (
            "SYN to 8080 (dropped)",
            PacketSpec::syn("198.51.100.7", "192.0.2.1", 8080).build(),
        ),
        (
            "ACK, no flow (dropped)",
            PacketSpec::tcp("198.51.100.7", "192.0.2.1", 1, 80, tcp::ACK).build(),
        ),
    ];
    for (name, frame) in &frames {
        let mut best = [u64::MAX; 2];
        for _ in 0..5 {
            for (i, f) in [&frags, &linear].iter().enumerate() {
                best[i] = best[i].min(f.time_ns(frame, 200_000).expect("test run"));
            }
        }
        println!(
            "{name:24} frags {:>4} ns  linear {:>4} ns",
            best[0], best[1]
        );
    }
}
