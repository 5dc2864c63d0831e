//! Tier 3, end to end: the policy's ports. fw on the server side of a veth pair between two
//! network namespaces, judged with real sockets from the client side: the seed policy lets its
//! TCP ports in and drops the rest, a UDP rule delivers its port only. Root only; every test makes its own namespaces (unique names), so they run in parallel.
//!
//! Each test first shows the traffic gets through without fw (so a drop afterwards is fw's
//! doing), and ends with `Pair::finish`, which checks the namespaces and fw's pins are gone.

use fw_lab::{
    CONNECT_OK, Connect, FAMILIES, Pair, TempDir, family, fixtures::SEED_OPEN, preflight,
};

use Connect::{Connected, Refused, TimedOut};

#[test]
fn seed_policy_lets_allowed_ports_in_and_drops_the_rest() {
    preflight(&[]);
    let pair = Pair::new("seed");
    let _l80 = pair.listen_both(80);
    let _l443 = pair.listen_both(443);
    let l8080 = pair.listen_both(8080);
    assert!(!SEED_OPEN.contains(&8080) && !SEED_OPEN.contains(&9999));

    // Without fw: every listener answers, a port without one refuses (RST).
    for v6 in FAMILIES {
        for port in [80, 443, 8080] {
            assert_eq!(
                pair.connect(v6, port),
                Connected,
                "{} {port} without fw",
                family(v6)
            );
        }
        assert_eq!(
            pair.connect(v6, 25),
            Refused,
            "{} 25 without fw",
            family(v6)
        );
        assert_eq!(
            pair.connect(v6, 9999),
            Refused,
            "{} 9999 without fw",
            family(v6)
        );
    }
    let accepted_8080: Vec<usize> = l8080
        .iter()
        .map(|l| l.wait_accepted(1, CONNECT_OK))
        .collect();
    assert_eq!(
        accepted_8080,
        [1, 1],
        "the 8080 listeners accepted the baseline connects"
    );

    pair.fw_up(None);
    for v6 in FAMILIES {
        for port in [80, 443] {
            assert_eq!(
                pair.connect(v6, port),
                Connected,
                "{} {port} with fw",
                family(v6)
            );
        }
        // Allowed but nobody listens: the SYN reaches the stack, which refuses.
        assert_eq!(pair.connect(v6, 25), Refused, "{} 25 with fw", family(v6));
        // Not allowed: dropped silently, with or without a listener (no RST).
        for port in [8080, 9999] {
            let r = pair.probe(v6, port);
            assert_ne!(
                r,
                Refused,
                "{} {port}: an RST came back, fw let the SYN through",
                family(v6)
            );
            assert_eq!(r, TimedOut, "{} {port} with fw", family(v6));
        }
    }
    let after: Vec<usize> = l8080.iter().map(|l| l.accepted()).collect();
    assert_eq!(
        after, accepted_8080,
        "the 8080 listener accepted a connection through fw"
    );
    drop(l8080);
    pair.finish();
}

#[test]
fn udp_allow_rule_delivers_only_its_port() {
    preflight(&[]);
    let dir = TempDir::new("udp");
    let policy = dir.write(
        "udp.toml",
        "# e2e: one UDP port\n[[allow]]\nproto = \"udp\"\nports = [5300]\ncomment = \"e2e udp\"\n\n[[allow]]\nports = [22]\n",
    );
    let pair = Pair::new("udp");
    let socks: Vec<_> = FAMILIES
        .iter()
        .map(|&v6| {
            (
                v6,
                pair.server.bind_udp(pair.server_addr(v6, 5300)),
                pair.server.bind_udp(pair.server_addr(v6, 5301)),
            )
        })
        .collect();
    let wait = std::time::Duration::from_millis(500);
    for (v6, allowed, other) in &socks {
        pair.client.send_udp(pair.server_addr(*v6, 5300), 3);
        pair.client.send_udp(pair.server_addr(*v6, 5301), 3);
        assert_eq!(
            fw_lab::udp_received(allowed, CONNECT_OK, 3),
            3,
            "{} 5300 without fw",
            family(*v6)
        );
        assert_eq!(
            fw_lab::udp_received(other, CONNECT_OK, 3),
            3,
            "{} 5301 without fw",
            family(*v6)
        );
    }

    pair.fw_up(Some(&policy));
    let before = pair.status();
    for (v6, allowed, other) in &socks {
        pair.client.send_udp(pair.server_addr(*v6, 5300), 5);
        pair.client.send_udp(pair.server_addr(*v6, 5301), 5);
        assert_eq!(
            fw_lab::udp_received(allowed, CONNECT_OK, 5),
            5,
            "{}: UDP to the allowed port 5300 was not delivered",
            family(*v6)
        );
        assert_eq!(
            fw_lab::udp_received(other, wait, 5),
            0,
            "{}: UDP to 5301 (not allowed) was delivered",
            family(*v6)
        );
    }
    let s = pair.status_when(CONNECT_OK, |s| {
        s.reason("default-drop") >= before.reason("default-drop") + 10
    });
    assert_eq!(
        s.rule(5300, "udp") - before.rule(5300, "udp"),
        10,
        "rule 5300/udp counter"
    );
    assert!(
        s.reason("default-drop") - before.reason("default-drop") >= 10,
        "default-drop did not count the UDP to 5301: {:#}",
        s.0
    );
    drop(socks);
    pair.finish();
}
