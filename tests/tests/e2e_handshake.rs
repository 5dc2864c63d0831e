//! Tier 3, end to end: inbound connections are promoted from the embryo table by the handshake,
//! blind ACKs are dropped, and a SYN flood does not evict established sessions. Root only; every test makes its own namespaces (unique names), so they run in parallel.

use std::time::Duration;

use fw_lab::{
    CONNECT_OK, Connect, Pair, echo_msg, echoes, hping3_args, preflight, sock::ends,
    unpredictable_u32,
};

use Connect::Connected;

/// An inbound connection to an allowed port is an embryo from the host's SYN+ACK until the
/// client's handshake ACK, then an `in` entry; a blind ACK to the same port (which the stack
/// answers without fw) is dropped as `tcp-new-not-syn`; a SYN flood to the port fills only the
/// embryo table: the established session keeps exchanging data and the `in`/`out` tables do
/// not change.
#[test]
fn handshakes_promote_embryos_and_floods_do_not_evict_sessions() {
    preflight(&["hping3", "iptables-legacy"]);
    const WEB: u16 = 80;
    const FLOOD: u32 = 3000;
    const FLOOD_BASE: u16 = 20_000;
    let pair = Pair::new("inbound");
    let _echo = pair.server.echo_tcp(pair.server_addr(false, WEB));
    let server4 = pair.v4(1);
    let blind = |ack: &str| {
        hping3_args(
            &pair.client,
            &[
                "-A",
                "-L",
                ack,
                "-p",
                "80",
                "-c",
                "3",
                "-i",
                "u50000",
                &server4.to_string(),
            ],
        )
    };
    let ack = unpredictable_u32().to_string();
    assert_eq!(
        blind(&ack),
        (3, 3),
        "blind ACKs without fw: the stack answers each with an RST"
    );

    pair.fw_up(None);
    let s0 = pair.status();
    let mut session = pair.client.stream(pair.server_addr(false, WEB), None);
    assert!(echoes(&mut session, &echo_msg("inbound", 0), CONNECT_OK));
    let s1 = pair.status();
    let (e0, e1) = (s0.table("embryo"), s1.table("embryo"));
    let (i0, i1) = (s0.table("in"), s1.table("in"));
    assert_eq!(
        (e1.created - e0.created, e1.removed - e0.removed, e1.entries),
        (1, 1, e0.entries),
        "embryo (created, removed, entries): the handshake was not promoted: {:#}",
        s1.0
    );
    assert_eq!(
        (i1.created - i0.created, i1.entries - i0.entries),
        (1, 1),
        "in (created, entries): {:#}",
        s1.0
    );
    let (sa, ca) = ends(&session, false);
    let e = pair.conn_entries("tcp", sa, ca);
    assert!(
        e.len() == 1 && e[0]["table"] == "in" && e[0]["state"] == "ESTABLISHED",
        "fw conns: {e:#?}"
    );

    assert_eq!(blind(&ack), (3, 0), "blind ACKs with fw: an RST came back");
    let s2 = pair.status_when(CONNECT_OK, |s| {
        s.reason("tcp-new-not-syn") >= s1.reason("tcp-new-not-syn") + 3
    });
    assert_eq!(
        s2.reason("tcp-new-not-syn") - s1.reason("tcp-new-not-syn"),
        3,
        "tcp-new-not-syn: {:#}",
        s2.0
    );
    assert_eq!(
        s2.table("in"),
        s1.table("in"),
        "a blind ACK changed the in table"
    );

    // The flood: SYNs from source ports FLOOD_BASE, FLOOD_BASE + 1, ..., 100 µs apart. Like a
    // spoofed flood, nothing answers the host's SYN+ACKs: the client's own stack would refuse
    // each with an RST (which fw lets through, ending that embryo), so its RSTs are dropped
    // inside the client namespace for the flood.
    let rst_drop = [
        "OUTPUT",
        "-p",
        "tcp",
        "--tcp-flags",
        "RST",
        "RST",
        "-d",
        "SERVER",
        "-j",
        "DROP",
    ];
    let server_s = server4.to_string();
    let rule: Vec<&str> = rst_drop
        .iter()
        .map(|a| {
            if *a == "SERVER" {
                server_s.as_str()
            } else {
                *a
            }
        })
        .collect();
    let add: Vec<&str> = std::iter::once("-A").chain(rule.iter().copied()).collect();
    pair.client
        .run("iptables-legacy", &add, Duration::from_secs(10))
        .check();
    let (sent, _) = hping3_args(
        &pair.client,
        &[
            "-S",
            "-s",
            &FLOOD_BASE.to_string(),
            "-p",
            "80",
            "-i",
            "u100",
            "-c",
            &FLOOD.to_string(),
            &server4.to_string(),
        ],
    );
    assert!(sent >= u64::from(FLOOD) * 9 / 10, "hping3 sent {sent} SYNs");
    let s3 = pair.status_when(CONNECT_OK, |s| {
        s.table("embryo").created >= s2.table("embryo").created + sent / 2
    });
    let grew = s3.table("embryo").created - s2.table("embryo").created;
    println!(
        "SYN flood: {sent} SYNs, {grew} embryos created; tables after: {:?} / {:?} / {:?}",
        s3.table("out"),
        s3.table("in"),
        s3.table("embryo")
    );
    assert!(
        grew >= sent / 2,
        "the flood's handshakes did not land in the embryo table: {:#}",
        s3.0
    );
    assert!(s3.table("embryo").entries > s2.table("embryo").entries);
    let del: Vec<&str> = std::iter::once("-D").chain(rule.iter().copied()).collect();
    pair.client
        .run("iptables-legacy", &del, Duration::from_secs(10))
        .check();
    for round in 1..=3 {
        assert!(
            echoes(
                &mut session,
                &echo_msg("inbound after flood", round),
                CONNECT_OK
            ),
            "the established session stopped after the flood (round {round})"
        );
    }
    let s4 = pair.status();
    for t in ["in", "out"] {
        assert_eq!(
            s4.table(t),
            s2.table(t),
            "the flood changed the {t} table: {:#}",
            s4.0
        );
    }
    assert_eq!(s4.table("embryo").evicted, 0, "{:#}", s4.0);

    // Blind ACKs from the flood's last source ports, whose handshakes are embryos: without
    // the acknowledgment number of the host's SYN+ACK they promote nothing and are dropped.
    // (Judged by the counters: the host may still be retransmitting SYN+ACKs to these ports.)
    let late = (FLOOD_BASE + FLOOD as u16 - 10).to_string();
    hping3_args(
        &pair.client,
        &[
            "-A",
            "-L",
            &ack,
            "-s",
            &late,
            "-p",
            "80",
            "-c",
            "3",
            "-i",
            "u50000",
            &server4.to_string(),
        ],
    );
    let s5 = pair.status_when(CONNECT_OK, |s| {
        s.reason("tcp-new-not-syn") >= s4.reason("tcp-new-not-syn") + 3
    });
    assert!(
        s5.reason("tcp-new-not-syn") >= s4.reason("tcp-new-not-syn") + 3,
        "blind ACKs to embryos were not dropped: {:#}",
        s5.0
    );
    assert_eq!(
        s5.table("in").created,
        s4.table("in").created,
        "a blind ACK promoted an embryo: {:#}",
        s5.0
    );
    assert_eq!(
        pair.connect(false, WEB),
        Connected,
        "a new client after the flood"
    );
    drop(session);
    pair.finish();
}
