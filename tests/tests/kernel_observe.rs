//! Kernel tier: the drop log and the capture, from the real observer programs (tail-called by
//! `fw_xdp` through BPF_PROG_TEST_RUN). Every record names the verdict and counter slot that
//! `decide()` gives the same bytes and carries the frame's bytes; the observer never changes a
//! verdict; the token bucket bounds the records; with nothing observing nothing is written.

use fw::{
    droplog,
    loader::Variant,
    obs::{ObsMaps, Ring, RingReader},
    paths::IfacePaths,
};
use fw_common::{
    Reason,
    frame::{PacketSpec, arp_frame},
    obs::ObsConfig,
    tcp::{ACK, FIN, PSH, RST, SYN, URG},
};
use fw_policy::{SEED_POLICY, parse_policy};
use fw_testrun::{KernelFilter, describe, expected_action, require_root};

fn seed() -> KernelFilter {
    require_root();
    let p = parse_policy("seed.toml", SEED_POLICY).expect("seed parses");
    KernelFilter::load(&p).expect("load")
}

/// The seed policy in the given build of the XDP program (each has its own observers: a
/// program array takes only programs with the caller's `xdp.frags`).
fn seed_variant(variant: Variant) -> KernelFilter {
    require_root();
    assert!(
        fw::probe::xdp_frags(),
        "the observers need Linux 5.18 (bpf_xdp_load_bytes), as the frags build does"
    );
    let p = parse_policy("seed.toml", SEED_POLICY).expect("seed parses");
    KernelFilter::load_variant(&p, variant)
        .unwrap_or_else(|e| panic!("loading the {variant:?} build: {e:#}"))
}

fn paths(f: &KernelFilter) -> IfacePaths {
    IfacePaths::at(
        "test",
        f.pins_dir().to_path_buf(),
        f.state_dir().to_path_buf(),
    )
}

fn drain(r: &mut RingReader) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    while let Some(item) = r.ring.next() {
        out.push(item.to_vec());
    }
    out
}

/// Frames that provoke each verdict the seed policy gives without connection state.
fn frames() -> Vec<(&'static str, Vec<u8>)> {
    let c = "192.0.2.1";
    let h = "192.0.2.2";
    let c6 = "2001:db8::1";
    let h6 = "2001:db8::2";
    let mut truncated = PacketSpec::syn(c, h, 80).build();
    truncated.truncate(30);
    vec![
        ("syn to an open port", PacketSpec::syn(c, h, 80).build()),
        ("syn to a closed port", PacketSpec::syn(c, h, 23).build()),
        ("null scan", PacketSpec::tcp(c, h, 40000, 80, 0).build()),
        (
            "xmas scan",
            PacketSpec::tcp(c, h, 40000, 80, FIN | SYN | RST | PSH | ACK | URG).build(),
        ),
        (
            "fin+psh+urg",
            PacketSpec::tcp(c, h, 40000, 80, FIN | PSH | URG).build(),
        ),
        (
            "ack nobody opened",
            PacketSpec::tcp(c, h, 40000, 80, ACK).build(),
        ),
        (
            "udp to a closed port",
            PacketSpec::udp(c, h, 5353, 9999).build(),
        ),
        ("ping", PacketSpec::icmp(c, h, 8, 0).build()),
        (
            "ipv6 syn to a closed port",
            PacketSpec::syn(c6, h6, 23).build(),
        ),
        ("truncated", truncated),
        ("arp", arp_frame()),
        (
            "a long frame",
            PacketSpec::syn(c, h, 23).payload(1400).build(),
        ),
    ]
}

#[test]
fn every_record_matches_decide_and_the_verdicts_stay_the_same() {
    records_match_decide(Variant::Frags);
}

#[test]
fn the_single_buffer_build_hands_packets_to_its_own_observers() {
    records_match_decide(Variant::Linear);
}

fn records_match_decide(variant: Variant) {
    let f = seed_variant(variant);
    let p = paths(&f);
    let mut obs = ObsMaps::open(&p).expect("obs maps");
    obs.set_config(ObsConfig {
        flags: ObsConfig::LOG_DROPS
            | ObsConfig::CAPTURE_DROPS
            | ObsConfig::CAPTURE_PASSES
            | ObsConfig::CAPTURE_RULES,
        capture_reasons: u64::MAX,
        ..Default::default()
    })
    .expect("config");
    let mut log = RingReader::open(&p, Ring::Log).ok().expect("log ring");
    let mut cap = RingReader::open(&p, Ring::Capture)
        .ok()
        .expect("capture ring");
    let mut failures = Vec::new();
    let mut drops = 0;
    for (name, frame) in frames() {
        let want = f.decide_user(&frame);
        let got = f.run(&frame).expect("test run");
        if got != expected_action(&want) {
            failures.push(format!(
                "{name}: kernel returned {got}, decide() says {}",
                describe(&want)
            ));
        }
        let logged = drain(&mut log);
        let captured = drain(&mut cap);
        let expect_log = usize::from(!want.pass);
        drops += expect_log;
        if logged.len() != expect_log {
            failures.push(format!(
                "{name}: {} log records, expected {expect_log}",
                logged.len()
            ));
        }
        if captured.len() != 1 {
            failures.push(format!(
                "{name}: {} capture records, expected 1",
                captured.len()
            ));
        }
        for (ring, rec, snap) in logged
            .iter()
            .map(|r| ("log", r, fw_common::obs::LOG_SNAP))
            .chain(
                captured
                    .iter()
                    .map(|r| ("capture", r, fw_common::obs::CAPTURE_SNAP)),
            )
        {
            let (h, data) = droplog::split(rec).expect("record header");
            if h.slot != want.slot || (h.pass != 0) != want.pass {
                failures.push(format!(
                    "{name} ({ring}): record says slot {} pass {}, decide() says {}",
                    h.slot,
                    h.pass,
                    describe(&want)
                ));
            }
            if h.len as usize != frame.len() || data != &frame[..frame.len().min(snap)] {
                failures.push(format!(
                    "{name} ({ring}): record carries {} of {} bytes, not the frame's first {}",
                    data.len(),
                    h.len,
                    frame.len().min(snap)
                ));
            }
            let e = droplog::decode(&h, data, "test", 0);
            let reason = want.why().map_or("rule", Reason::name);
            if e.reason != reason {
                failures.push(format!(
                    "{name} ({ring}): decoded reason {}, want {reason}",
                    e.reason
                ));
            }
        }
    }
    let stats = obs.stats().expect("stats");
    assert_eq!(stats.log_emitted, drops as u64, "log records counted");
    assert_eq!(stats.capture_emitted, frames().len() as u64);
    assert_eq!(stats.log_lost + stats.log_suppressed, 0);
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    assert!(drops >= 8, "the frames provoke drops of many reasons");
}

#[test]
fn the_token_bucket_bounds_the_log() {
    let f = seed();
    let p = paths(&f);
    let mut obs = ObsMaps::open(&p).expect("obs maps");
    // One record every 100 s, a burst of 3.
    let (interval, burst) = fw::obs::rate_params(1, 3);
    obs.set_config(ObsConfig {
        flags: ObsConfig::LOG_DROPS,
        log_interval_ns: interval * 100,
        log_burst_ns: burst * 100,
        ..Default::default()
    })
    .expect("config");
    let mut log = RingReader::open(&p, Ring::Log).ok().expect("log ring");
    let frame = PacketSpec::syn("192.0.2.1", "192.0.2.2", 23).build();
    for _ in 0..50 {
        assert_eq!(f.run(&frame).expect("run"), fw_testrun::XDP_DROP);
    }
    let records = drain(&mut log);
    let stats = obs.stats().expect("stats");
    assert_eq!(records.len(), 3, "the burst, then nothing within 100 s");
    assert_eq!(stats.log_emitted, 3);
    assert_eq!(stats.log_suppressed, 47);
}

#[test]
fn nothing_is_written_while_nothing_observes() {
    let f = seed();
    let p = paths(&f);
    let obs = ObsMaps::open(&p).expect("obs maps");
    assert_eq!(obs.config().expect("config"), ObsConfig::default());
    let mut log = RingReader::open(&p, Ring::Log).ok().expect("log ring");
    let mut cap = RingReader::open(&p, Ring::Capture)
        .ok()
        .expect("capture ring");
    for (name, frame) in frames() {
        let want = f.decide_user(&frame);
        assert_eq!(
            f.run(&frame).expect("run"),
            expected_action(&want),
            "{name}"
        );
    }
    assert!(drain(&mut log).is_empty());
    assert!(drain(&mut cap).is_empty());
    assert_eq!(obs.stats().expect("stats"), fw::obs::ObsStats::default());
}

#[test]
fn a_second_reader_of_a_ring_is_refused() {
    let f = seed();
    let p = paths(&f);
    let _first = RingReader::open(&p, Ring::Log).ok().expect("log ring");
    match RingReader::open(&p, Ring::Log) {
        Err(fw::obs::RingBusy::Held(pid)) => assert_eq!(pid, Some(std::process::id())),
        Err(fw::obs::RingBusy::Error(e)) => panic!("error instead of busy: {e}"),
        Ok(_) => panic!("two readers of one ring"),
    }
}

/// A frame in several buffers (first buffer 100 bytes): the capture record carries the whole
/// frame's length and its bytes across the buffers (bpf_xdp_load_bytes), and a jumbo frame's
/// record its first CAPTURE_SNAP bytes.
#[test]
fn a_multi_buffer_frame_is_captured_whole() {
    let f = seed_variant(Variant::Frags);
    let p = paths(&f);
    let mut obs = ObsMaps::open(&p).expect("obs maps");
    obs.set_config(ObsConfig {
        flags: ObsConfig::CAPTURE_DROPS,
        capture_reasons: u64::MAX,
        ..Default::default()
    })
    .expect("config");
    let mut cap = RingReader::open(&p, Ring::Capture)
        .ok()
        .expect("capture ring");
    let snap = fw_common::obs::CAPTURE_SNAP;
    let split = PacketSpec::syn("192.0.2.1", "192.0.2.2", 23)
        .payload(900)
        .build();
    let jumbo = PacketSpec::syn("192.0.2.1", "192.0.2.2", 23)
        .payload(8000)
        .build();
    let mut ran = Vec::new();
    match f.run_split(&split, 100).expect("split run") {
        Some(v) => {
            assert_eq!(v, fw_testrun::XDP_DROP);
            ran.push(("split at 100 bytes", &split));
        }
        None => eprintln!("this kernel cannot split a test frame: that case is skipped"),
    }
    assert_eq!(f.run(&jumbo).expect("jumbo run"), fw_testrun::XDP_DROP);
    ran.push(("jumbo", &jumbo));
    let records = drain(&mut cap);
    assert_eq!(records.len(), ran.len(), "one record per frame");
    for ((name, frame), rec) in ran.iter().zip(&records) {
        let (h, data) = droplog::split(rec).expect("record header");
        assert_eq!(
            h.len as usize,
            frame.len(),
            "{name}: the whole frame's length"
        );
        assert_eq!(h.slot, Reason::DefaultDrop.slot(), "{name}");
        let n = frame.len().min(snap);
        assert_eq!(h.caplen as usize, n, "{name}: caplen");
        assert!(
            data == &frame[..n],
            "{name}: the captured bytes differ from the frame's"
        );
    }
}
