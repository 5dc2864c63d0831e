//! Tier 2, the trusted flows' hint (`Tables::flow_hint`): a packet of no tracked flow skips the
//! `In` and `Out` lookups when its hint slot is empty, so the slot must never read zero while
//! an entry of it lives. Sequences through the real egress recorder and XDP program
//! (BPF_PROG_TEST_RUN), each arriving frame also judged by `decide()` over the mirror (which
//! never skips a lookup): kernel and mirror must agree, and the slot counts must be exact.
//! Needs root and bpffs.

use fw_common::{
    FlowKey, Reason,
    decide::Decision,
    flow::{FLOW_HINT_STICKY, flow_hint_slot},
    frame::PacketSpec,
    tcp::{ACK, PSH, RST, SYN},
};
use fw_policy::{SEED_POLICY, parse_policy};
use fw_testrun::{KernelFilter, require_root};

const H: &str = "192.0.2.1";
const P: &str = "198.51.100.7";

fn load() -> KernelFilter {
    require_root();
    let p = parse_policy("seed", SEED_POLICY).expect("the seed policy parses");
    KernelFilter::load(&p).unwrap_or_else(|e| panic!("loading the fw programs: {e:#}"))
}

fn tcp(src: &str, dst: &str, sport: u16, dport: u16, flags: u8, seq: u32, ack: u32) -> Vec<u8> {
    PacketSpec::tcp(src, dst, sport, dport, flags)
        .seq_ack(seq, ack)
        .payload(if flags & PSH != 0 { 100 } else { 0 })
        .build()
}

fn v4(s: &str) -> [u8; 16] {
    let a: std::net::Ipv4Addr = s.parse().expect("address");
    let mut o = [0u8; 16];
    o[..4].copy_from_slice(&a.octets());
    o
}

/// The key of `P:rport` ↔ `H:lport` (TCP).
fn key(rport: u16, lport: u16) -> FlowKey {
    key_from(P, rport, lport)
}

/// The key of `remote:rport` ↔ `H:lport` (TCP).
fn key_from(remote: &str, rport: u16, lport: u16) -> FlowKey {
    FlowKey {
        remote: v4(remote),
        local: v4(H),
        remote_port: rport,
        local_port: lport,
        proto: 6,
        family: 4,
        _pad: [0; 2],
    }
}

fn hint(f: &KernelFilter, k: &FlowKey) -> u64 {
    f.maps()
        .flow_hint(flow_hint_slot(k))
        .expect("reading FW_FLOW_HINT")
}

/// Judge an arriving frame on both sides; panics on a mismatch.
fn arrive(f: &KernelFilter, what: &str, frame: &[u8]) -> Decision {
    match f.check(frame).expect("test run") {
        Ok(d) => d,
        Err(m) => panic!("{what}: kernel and decide() disagree: {m}"),
    }
}

fn leave(f: &KernelFilter, frame: &[u8]) {
    f.egress(frame)
        .expect("egress test run")
        .expect("the recorder passes");
}

/// A client at `P:cport` connects to `H:80`: SYN, our SYN+ACK, its ACK (promoted to `In`).
fn inbound(f: &KernelFilter, cport: u16) {
    inbound_from(f, P, cport);
}

fn inbound_from(f: &KernelFilter, p: &str, cport: u16) {
    assert!(arrive(f, "SYN", &tcp(p, H, cport, 80, SYN, 7000, 0)).pass);
    leave(f, &tcp(H, p, 80, cport, SYN | ACK, 9000, 7001));
    let d = arrive(f, "handshake ACK", &tcp(p, H, cport, 80, ACK, 7001, 9001));
    assert!(d.pass, "the handshake completes");
}

#[test]
fn a_connection_counts_in_its_hint_slot_until_it_ends_in_either_direction() {
    let f = load();
    // Inbound, ended by our RST.
    let k = key(50_000, 80);
    assert_eq!(hint(&f, &k), 0, "an empty table has empty slots");
    let stray = tcp(P, H, 50_000, 80, ACK, 7001, 9001);
    assert_eq!(
        arrive(&f, "ACK before any connection", &stray).why(),
        Some(Reason::TcpNotSyn)
    );
    inbound(&f, 50_000);
    assert_eq!(hint(&f, &k), 1, "the In entry is counted");
    assert!(arrive(&f, "data", &tcp(P, H, 50_000, 80, PSH | ACK, 7001, 9001)).pass);
    leave(&f, &tcp(H, P, 80, 50_000, RST | ACK, 9001, 7101));
    assert_eq!(hint(&f, &k), 0, "the ended connection gives its count back");
    assert!(!arrive(&f, "ACK after the end", &stray).pass);

    // Outbound, ended by the peer's exact RST.
    let k = key(443, 40_000);
    leave(&f, &tcp(H, P, 40_000, 443, SYN, 1000, 0));
    assert_eq!(hint(&f, &k), 1, "our SYN's Out entry is counted");
    leave(&f, &tcp(H, P, 40_000, 443, SYN, 1000, 0));
    assert_eq!(hint(&f, &k), 1, "a retransmitted SYN is not counted twice");
    assert!(
        arrive(
            &f,
            "SYN+ACK",
            &tcp(P, H, 443, 40_000, SYN | ACK, 5000, 1001)
        )
        .pass
    );
    leave(&f, &tcp(H, P, 40_000, 443, ACK, 1001, 5001));
    assert!(arrive(&f, "reply", &tcp(P, H, 443, 40_000, PSH | ACK, 5001, 1001)).pass);
    assert!(arrive(&f, "peer's RST", &tcp(P, H, 443, 40_000, RST, 5101, 0)).pass);
    assert_eq!(hint(&f, &k), 0, "the reset connection gives its count back");
    let d = arrive(
        &f,
        "reply after the RST",
        &tcp(P, H, 443, 40_000, ACK, 5101, 1001),
    );
    assert!(!d.pass);
}

/// Two clients (address, port) whose flows to port 80 share a hint slot, found by search.
fn colliding_clients() -> ((String, u16), (String, u16)) {
    let mut seen = std::collections::HashMap::new();
    for host in 1..=254u8 {
        let addr = format!("198.51.100.{host}");
        for port in (20_000..=u16::MAX).step_by(7) {
            let slot = flow_hint_slot(&key_from(&addr, port, 80));
            if let Some(first) = seen.insert(slot, (addr.clone(), port)) {
                return (first, (addr, port));
            }
        }
    }
    panic!("no two clients share a hint slot");
}

#[test]
fn flows_sharing_a_hint_slot_stay_tracked_when_one_of_them_ends() {
    let f = load();
    let ((pa, a), (pb, b)) = colliding_clients();
    let (ka, kb) = (key_from(&pa, a, 80), key_from(&pb, b, 80));
    assert_eq!(flow_hint_slot(&ka), flow_hint_slot(&kb));
    inbound_from(&f, &pa, a);
    inbound_from(&f, &pb, b);
    assert_eq!(hint(&f, &ka), 2);
    leave(&f, &tcp(H, &pa, 80, a, RST | ACK, 9001, 7001));
    assert_eq!(hint(&f, &kb), 1, "one of two ended");
    let d = arrive(
        &f,
        "the other's data",
        &tcp(&pb, H, b, 80, PSH | ACK, 7001, 9001),
    );
    assert!(d.pass, "the surviving connection is still found");
    let d = arrive(
        &f,
        "the ended one's data",
        &tcp(&pa, H, a, 80, PSH | ACK, 7001, 9001),
    );
    assert!(!d.pass);
    leave(&f, &tcp(H, &pb, 80, b, RST | ACK, 9001, 7101));
    assert_eq!(hint(&f, &kb), 0);
}

#[test]
fn a_flow_userspace_writes_is_marked_for_good_and_found() {
    let mut f = load();
    let k = key(52_000, 22);
    let st = fw_common::FlowState {
        last_seen: fw::sys::monotonic_coarse_ns(),
        state: fw_common::flow::state::ESTABLISHED,
        flags: fw_common::FlowState::SEEDED,
        ..Default::default()
    };
    f.insert_flow(fw_common::FlowTable::In, &k, &st)
        .expect("seeding a flow");
    assert_eq!(hint(&f, &k), FLOW_HINT_STICKY);
    let d = arrive(&f, "seeded ACK", &tcp(P, H, 52_000, 22, ACK, 1, 1));
    assert!(
        d.pass,
        "a seeded connection is found through its marked slot"
    );
    leave(&f, &tcp(H, P, 22, 52_000, RST | ACK, 1, 1));
    assert_ne!(hint(&f, &k), 0, "a marked slot never counts down to empty");
}
