//! Tier 3, end to end: ICMP errors about tracked flows (path-MTU discovery) reach the host
//! (RELATED), and errors about nothing are dropped. Root only; every test makes its own namespaces (unique names), so they run in parallel.

use std::{
    net::{IpAddr, SocketAddr},
    thread::{self},
    time::{Duration, Instant},
};

use fw_lab::{
    CONNECT_OK, FAMILIES, IcmpObserver, Pair, QUIET, echo_msg, echoes, family,
    frames::{frag_needed, packet_too_big, quotes},
    preflight,
    raw::next_seqs,
    sock::local_port,
};

/// Path-MTU discovery: a "fragmentation needed" (ICMP 3/4) or "packet too big" (ICMPv6 2)
/// error quoting a TCP connection the host opened reaches it (counted as `related`; the host
/// lowers its path MTU, as `ip route get` shows), while the same error quoting a flow the host
/// never opened, which reaches it without fw, is dropped (`icmp-unrelated`).
#[test]
fn pmtu_errors_about_tracked_flows_reach_the_host_and_others_do_not() {
    preflight(&[]);
    const SVC: u16 = 9000;
    const NEVER: u16 = 9999; // the host never talked to this port
    const MTU4: u16 = 1300;
    const MTU6: u32 = 1400;
    let pair = Pair::new("pmtu");
    let _echo = FAMILIES.map(|v6| {
        pair.client
            .echo_tcp(SocketAddr::new(pair.client_ip(v6), SVC))
    });
    let raw = pair.client.raw_link(Pair::CLIENT_IF);
    let observers = FAMILIES.map(|v6| IcmpObserver::new(&pair.server, v6));
    let error = |v6: bool, sport: u16, dport: u16, seq: u32| -> Vec<u8> {
        match (pair.server_ip(v6), pair.client_ip(v6)) {
            (IpAddr::V4(s), IpAddr::V4(c)) => frag_needed(MTU4, s, c, sport, dport, seq),
            (IpAddr::V6(s), IpAddr::V6(c)) => packet_too_big(MTU6, s, c, sport, dport, seq),
            _ => unreachable!(),
        }
    };
    let ty = |v6: bool| if v6 { 2 } else { 3 };
    let route = |v6: bool| {
        let peer = pair.client_ip(v6).to_string();
        let fam_arg = if v6 { "-6" } else { "-4" };
        pair.server.ip(&[fam_arg, "route", "get", &peer]).stdout
    };
    let mtu_word = |v6: bool| {
        if v6 {
            format!("mtu {MTU6}")
        } else {
            format!("mtu {MTU4}")
        }
    };

    // Without fw the error about an unknown flow reaches the host (the stack ignores it: no
    // socket, so no MTU change).
    for v6 in FAMILIES {
        pair.client
            .send_icmp(pair.server_ip(v6), &error(v6, 40001, NEVER, 1));
        assert!(
            observers[usize::from(v6)].saw(CONNECT_OK, |m| quotes(m, ty(v6), v6, NEVER)),
            "{}: the ICMP error did not reach the host even without fw",
            family(v6)
        );
        assert!(!route(v6).contains("mtu"), "{}: {}", family(v6), route(v6));
    }

    pair.fw_up(None);
    let s0 = pair.status();
    let mut streams = Vec::new();
    for v6 in FAMILIES {
        let mut s = pair
            .server
            .stream(SocketAddr::new(pair.client_ip(v6), SVC), None);
        assert!(
            echoes(&mut s, &echo_msg("pmtu", 0), CONNECT_OK),
            "{}",
            family(v6)
        );
        streams.push(s);
    }
    for v6 in FAMILIES {
        let i = usize::from(v6);
        pair.client
            .send_icmp(pair.server_ip(v6), &error(v6, 40001, NEVER, 1));
        assert!(
            !observers[i].saw(QUIET, |m| quotes(m, ty(v6), v6, NEVER)),
            "{}: an ICMP error about an untracked flow reached the host",
            family(v6)
        );
    }
    let s1 = pair.status_when(CONNECT_OK, |s| {
        s.reason("icmp-unrelated") >= s0.reason("icmp-unrelated") + 2
    });
    assert_eq!(
        s1.reason("icmp-unrelated") - s0.reason("icmp-unrelated"),
        2,
        "icmp-unrelated: {:#}",
        s1.0
    );

    // The stack acts only on errors quoting a sequence number it has sent.
    let flows = FAMILIES.map(|v6| {
        (
            pair.server_ip(v6),
            local_port(&streams[usize::from(v6)]),
            SVC,
        )
    });
    let seqs = next_seqs(&raw, &flows, QUIET);
    for v6 in FAMILIES {
        let i = usize::from(v6);
        let sport = flows[i].1;
        let seq =
            seqs[i].unwrap_or_else(|| panic!("{}: no segment of the session captured", family(v6)));
        assert!(!route(v6).contains("mtu"), "{}: {}", family(v6), route(v6));
        pair.client
            .send_icmp(pair.server_ip(v6), &error(v6, sport, SVC, seq));
        assert!(
            observers[i].saw(CONNECT_OK, |m| quotes(m, ty(v6), v6, SVC)),
            "{}: the error about the tracked flow did not reach the host",
            family(v6)
        );
        let deadline = Instant::now() + CONNECT_OK;
        while !route(v6).contains(&mtu_word(v6)) && Instant::now() < deadline {
            thread::sleep(Duration::from_millis(20));
        }
        let r = route(v6);
        assert!(
            r.contains(&mtu_word(v6)),
            "{}: the path MTU was not lowered to {}: {r}",
            family(v6),
            mtu_word(v6)
        );
        assert!(
            echoes(&mut streams[i], &echo_msg("pmtu", 1), CONNECT_OK),
            "{}",
            family(v6)
        );
    }
    let s2 = pair.status_when(CONNECT_OK, |s| {
        s.reason("related") >= s1.reason("related") + 2
    });
    assert_eq!(
        s2.reason("related") - s1.reason("related"),
        2,
        "related: {:#}",
        s2.0
    );
    assert_eq!(s2.reason("icmp-unrelated"), s1.reason("icmp-unrelated"));
    drop(streams);
    pair.finish();
}
