//! Tier 3, end to end: fw on the server side of a veth pair between two network namespaces,
//! judged with real sockets from the client side. Root only; every test makes its own
//! namespaces (unique names), so they run in parallel.
//!
//! Each test first shows the traffic gets through without fw (so a drop afterwards is fw's
//! doing), and ends with `Pair::finish`, which checks the namespaces and fw's pins are gone.

use std::net::SocketAddr;

use fw_lab::{CONNECT_DROP, CONNECT_OK, Connect, Pair, TempDir, hping3, preflight};

use Connect::{Connected, Refused, TimedOut};

/// The seed policy's TCP ports.
const SEED_OPEN: [u16; 9] = [80, 443, 25, 465, 110, 995, 143, 993, 22];

const FAMILIES: [bool; 2] = [false, true];

fn fam(v6: bool) -> &'static str {
    if v6 { "IPv6" } else { "IPv4" }
}

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
                fam(v6)
            );
        }
        assert_eq!(pair.connect(v6, 25), Refused, "{} 25 without fw", fam(v6));
        assert_eq!(
            pair.connect(v6, 9999),
            Refused,
            "{} 9999 without fw",
            fam(v6)
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
                fam(v6)
            );
        }
        // Allowed but nobody listens: the SYN reaches the stack, which refuses.
        assert_eq!(pair.connect(v6, 25), Refused, "{} 25 with fw", fam(v6));
        // Not allowed: dropped silently, with or without a listener (no RST).
        for port in [8080, 9999] {
            let r = pair.probe(v6, port);
            assert_ne!(
                r,
                Refused,
                "{} {port}: an RST came back, fw let the SYN through",
                fam(v6)
            );
            assert_eq!(r, TimedOut, "{} {port} with fw", fam(v6));
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
            fam(*v6)
        );
        assert_eq!(
            fw_lab::udp_received(other, CONNECT_OK, 3),
            3,
            "{} 5301 without fw",
            fam(*v6)
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
            fam(*v6)
        );
        assert_eq!(
            fw_lab::udp_received(other, wait, 5),
            0,
            "{}: UDP to 5301 (not allowed) was delivered",
            fam(*v6)
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

#[test]
fn live_allow_and_deny_edit_the_running_filter() {
    preflight(&[]);
    let pair = Pair::new("allow");
    let _l8080 = pair.listen_both(8080);
    let _l2222 = pair.listen_both(2222);
    pair.fw_up(None);
    let ids = pair.link().expect("fw up pinned a link");
    let (xdp_prog, mode) = pair
        .xdp_on_iface()
        .expect("bpftool net shows the XDP program");
    assert_eq!(
        xdp_prog, ids.prog_id,
        "bpftool net and the pinned link disagree"
    );
    assert_eq!(mode, "driver", "native XDP on veth");
    for v6 in FAMILIES {
        assert_eq!(
            pair.probe(v6, 8080),
            TimedOut,
            "{} 8080 before fw allow",
            fam(v6)
        );
    }

    pair.fw(&["allow", "8080/tcp", "--iface", Pair::SERVER_IF])
        .check();
    assert_eq!(
        pair.link(),
        Some(ids),
        "fw allow reloaded the program or replaced the link"
    );
    for v6 in FAMILIES {
        assert_eq!(
            pair.connect(v6, 8080),
            Connected,
            "{} 8080 after fw allow",
            fam(v6)
        );
    }
    pair.fw(&["deny", "8080/tcp", "--iface", Pair::SERVER_IF])
        .check();
    assert_eq!(
        pair.link(),
        Some(ids),
        "fw deny reloaded the program or replaced the link"
    );
    for v6 in FAMILIES {
        assert_eq!(
            pair.probe(v6, 8080),
            TimedOut,
            "{} 8080 after fw deny",
            fam(v6)
        );
    }

    // 2222 only from the client's first address; a second address on the client is refused.
    let (c4, c6) = (
        pair.client_ip(false).to_string(),
        pair.client_ip(true).to_string(),
    );
    pair.fw(&[
        "allow",
        "2222/tcp",
        "--from",
        &c4,
        "--from",
        &c6,
        "--iface",
        Pair::SERVER_IF,
    ])
    .check();
    assert_eq!(
        pair.link(),
        Some(ids),
        "fw allow --from reloaded the program"
    );
    let before = pair.status();
    for v6 in FAMILIES {
        let other = if v6 {
            pair.v6(3).into()
        } else {
            pair.v4(3).into()
        };
        pair.add_client_address(other);
        let to = pair.server_addr(v6, 2222);
        let from = pair.client_ip(v6);
        assert_eq!(
            pair.client.connect_tcp(to, Some(from), CONNECT_OK),
            Connected,
            "{}: 2222 from the allowed source {from}",
            fam(v6)
        );
        let r = pair.client.connect_tcp(to, Some(other), CONNECT_DROP);
        assert_eq!(
            r,
            TimedOut,
            "{}: 2222 from the other source {other}",
            fam(v6)
        );
    }
    let s = pair.status_when(CONNECT_OK, |s| {
        s.reason("source-not-allowed") >= before.reason("source-not-allowed") + 2
    });
    assert!(
        s.reason("source-not-allowed") >= before.reason("source-not-allowed") + 2,
        "source-not-allowed did not count the other source: {:#}",
        s.0
    );
    assert!(
        s.rule(2222, "tcp") > before.rule(2222, "tcp"),
        "rule 2222 did not count"
    );
    pair.finish();
}

#[test]
fn status_counters_follow_the_traffic() {
    preflight(&["hping3"]);
    let pair = Pair::new("count");
    let _l80 = pair.listen(false, 80);
    pair.fw_up(None);
    let s0 = pair.status();

    assert_eq!(pair.connect(false, 80), Connected);
    let s1 = pair.status_when(CONNECT_OK, |s| s.rule(80, "tcp") > s0.rule(80, "tcp"));
    assert!(
        s1.rule(80, "tcp") > s0.rule(80, "tcp"),
        "rule 80 did not count the connect: {:#}",
        s1.0
    );
    assert_eq!(s1.reason("tcp-null"), s0.reason("tcp-null"));

    let server = pair.v4(1);
    let (sent, got) = hping3(&pair.client, &[], server, 80, 3);
    assert_eq!((sent, got), (3, 0), "NULL probes: (sent, answered)");
    assert_eq!(pair.probe(false, 8080), TimedOut);
    pair.client
        .send_udp(SocketAddr::new(server.into(), 9999), 2);
    let s2 = pair.status_when(CONNECT_OK, |s| {
        s.reason("default-drop") >= s1.reason("default-drop") + 3
    });
    assert_eq!(
        s2.reason("tcp-null") - s1.reason("tcp-null"),
        3,
        "tcp-null counts exactly the 3 NULL probes"
    );
    assert!(
        s2.reason("default-drop") - s1.reason("default-drop") >= 3,
        "default-drop counts the SYN to 8080 and 2 datagrams to 9999: {:#}",
        s2.0
    );
    let bytes = |s: &fw_lab::Status| {
        s.0["reasons"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["reason"] == "tcp-null")
            .and_then(|r| r["bytes"].as_u64())
            .unwrap()
    };
    assert!(bytes(&s2) >= bytes(&s1) + 3 * 54, "tcp-null bytes");
    pair.finish();
}

#[test]
fn down_restores_connectivity_and_removes_pins() {
    preflight(&[]);
    let pair = Pair::new("down");
    let _l8080 = pair.listen_both(8080);
    pair.fw_up(None);
    for v6 in FAMILIES {
        assert_eq!(pair.probe(v6, 8080), TimedOut, "{} with fw", fam(v6));
    }
    assert!(pair.iface_pins().join("link").exists());
    assert!(pair.server.state_dir().join(Pair::SERVER_IF).exists());

    pair.fw(&["down", "--iface", Pair::SERVER_IF]).check();
    assert!(
        pair.wait_detached(CONNECT_OK),
        "an XDP program stays attached after fw down"
    );
    for v6 in FAMILIES {
        assert_eq!(
            pair.connect(v6, 8080),
            Connected,
            "{} after fw down",
            fam(v6)
        );
    }
    assert!(
        !pair.iface_pins().exists(),
        "pins left: {}",
        pair.iface_pins().display()
    );
    assert!(
        !pair.server.state_dir().join(Pair::SERVER_IF).exists(),
        "state left"
    );
    assert_eq!(
        pair.xdp_on_iface(),
        None,
        "an XDP program is still attached"
    );
    let again = pair.fw(&["down", "--iface", Pair::SERVER_IF]);
    assert!(!again.success(), "fw down twice succeeded: {again}");
    assert!(again.stderr.contains("not attached"), "{again}");
    pair.finish();
}

#[test]
fn bad_interfaces_and_bad_policies_are_refused_without_changes() {
    preflight(&[]);
    let pair = Pair::new("refuse");
    let _l80 = pair.listen(false, 80);
    let _l8080 = pair.listen(false, 8080);

    let lo = pair.fw(&["up", "--iface", "lo"]);
    assert!(!lo.success(), "fw up on lo succeeded: {lo}");
    assert!(lo.stderr.contains("loopback"), "no explanation: {lo}");
    assert!(!pair.server.pins_dir().exists(), "fw up lo left pins");

    let nx = pair.fw(&["up", "--iface", "doesnotexist"]);
    assert!(
        !nx.success(),
        "fw up on a missing interface succeeded: {nx}"
    );
    assert!(
        nx.stderr.contains("doesnotexist") && nx.stderr.contains("no network interface"),
        "unclear error: {nx}"
    );
    assert!(
        !pair.server.pins_dir().exists(),
        "fw up doesnotexist left pins"
    );
    assert!(
        !pair.server.state_dir().exists(),
        "fw up doesnotexist left state"
    );

    // A running filter is left alone by everything below.
    pair.fw_up(None);
    let ids = pair.link().expect("link");
    let s0 = pair.status();
    let unchanged = |what: &str| {
        assert_eq!(pair.link(), Some(ids), "{what}: the program changed");
        let s = pair.status();
        assert_eq!(
            s.generation(),
            s0.generation(),
            "{what}: the generation changed"
        );
        assert_eq!(
            s.rules_without_counters(),
            s0.rules_without_counters(),
            "{what}: the rules changed"
        );
        assert_eq!(pair.connect(false, 80), Connected, "{what}: 80");
        assert_eq!(pair.probe(false, 8080), TimedOut, "{what}: 8080");
    };

    let dir = TempDir::new("refuse");
    let cases = [
        (
            "port.toml",
            "# a port out of range\n[options]\nicmp_echo = false\n\n[[allow]]\nports = [80, 70000]\n",
            6,
        ),
        (
            "key.toml",
            "[[allow]]\nports = [22]\n\n[[allow]]\nportz = [8080]\n",
            5,
        ),
        (
            "syntax.toml",
            "[[allow]]\nports = [22]\nthis is not toml\n",
            3,
        ),
    ];
    for (name, text, line) in cases {
        let file = dir.write(name, text);
        let out = pair.fw(&[
            "up",
            "--iface",
            Pair::SERVER_IF,
            "--policy",
            &file.display().to_string(),
        ]);
        assert!(!out.success(), "{name} was accepted: {out}");
        let want = format!("{}:{line}:", file.display());
        assert!(
            out.stderr.contains(&want),
            "{name}: the error does not name {want}: {out}"
        );
        unchanged(name);
    }
    // Missing interface next to a good one: nothing is changed on the good one either.
    let good = dir.write("good.toml", "[[allow]]\nports = [22, 8080]\n");
    let out = pair.fw(&[
        "up",
        "--iface",
        Pair::SERVER_IF,
        "--iface",
        "doesnotexist",
        "--policy",
        &good.display().to_string(),
    ]);
    assert!(
        !out.success() && out.stderr.contains("doesnotexist"),
        "fw up with a missing interface succeeded or did not name it: {out}"
    );
    unchanged("fw up fwsrv + doesnotexist");
    pair.finish();
}

#[test]
fn arp_and_neighbour_discovery_pass_under_default_drop() {
    preflight(&[]);
    let pair = Pair::new("nd");
    let _l80 = pair.listen_both(80);
    pair.fw_up(None);
    pair.flush_neighbours();
    let neigh = pair
        .client
        .ip(&["neigh", "show", "dev", Pair::CLIENT_IF])
        .stdout;
    let neigh6 = pair
        .client
        .ip(&["-6", "neigh", "show", "dev", Pair::CLIENT_IF])
        .stdout;
    for (table, ip) in [
        (&neigh, pair.server_ip(false)),
        (&neigh6, pair.server_ip(true)),
    ] {
        let entry = table.lines().find(|l| l.starts_with(&format!("{ip} ")));
        assert!(
            entry.is_none_or(|l| !l.contains("lladdr")),
            "the client still knows {ip}: {table}"
        );
    }
    let s0 = pair.status();
    for v6 in FAMILIES {
        assert_eq!(
            pair.connect(v6, 80),
            Connected,
            "{} 80 after flushing the neighbours",
            fam(v6)
        );
    }
    let s1 = pair.status();
    assert!(
        s1.reason("non-ip") > s0.reason("non-ip"),
        "no ARP counted: {:#}",
        s1.0
    );
    assert!(
        s1.reason("icmpv6-nd") > s0.reason("icmpv6-nd"),
        "no neighbour discovery counted: {:#}",
        s1.0
    );
    pair.finish();
}

/// Connection state: replies to what the protected host opens itself come back in (TCP, UDP,
/// ping), while the same kind of packet unsolicited is dropped.
#[test]
fn replies_to_connections_the_host_opens_pass() {
    preflight(&["ping"]);
    let pair = Pair::new("state");
    pair.fw_up(None);
    let _cli = [false, true].map(|v6| {
        pair.client
            .listen_tcp(SocketAddr::new(pair.client_ip(v6), 5555))
    });
    for v6 in FAMILIES {
        // TCP: the server connects out; the SYN-ACK is a reply to a tracked flow.
        let to = SocketAddr::new(pair.client_ip(v6), 5555);
        assert_eq!(
            pair.server.connect_tcp(to, None, CONNECT_OK),
            Connected,
            "{}: the server's own connect got no reply through fw",
            fam(v6)
        );
        // Unsolicited TCP from the client to the same port is still dropped.
        assert_eq!(
            pair.probe(v6, 5555),
            TimedOut,
            "{}: unsolicited 5555",
            fam(v6)
        );

        // UDP: a query out, its answer in; a datagram to a port that sent nothing is dropped.
        let asker = pair.server.bind_udp(SocketAddr::new(pair.server_ip(v6), 0));
        let quiet = pair.server.bind_udp(SocketAddr::new(pair.server_ip(v6), 0));
        let answerer = pair
            .client
            .bind_udp(SocketAddr::new(pair.client_ip(v6), 5353));
        asker
            .send_to(b"query", SocketAddr::new(pair.client_ip(v6), 5353))
            .expect("send query");
        answerer
            .set_read_timeout(Some(CONNECT_OK))
            .expect("timeout");
        let mut buf = [0u8; 64];
        let (_, from) = answerer
            .recv_from(&mut buf)
            .expect("the client got the query");
        assert_eq!(from, asker.local_addr().unwrap());
        answerer.send_to(b"answer", from).expect("send answer");
        assert_eq!(
            fw_lab::udp_received(&asker, CONNECT_OK, 1),
            1,
            "{}: the UDP answer was dropped",
            fam(v6)
        );
        answerer
            .send_to(b"unsolicited", quiet.local_addr().unwrap())
            .expect("send");
        assert_eq!(
            fw_lab::udp_received(&quiet, std::time::Duration::from_millis(500), 1),
            0,
            "{}: an unsolicited datagram was delivered",
            fam(v6)
        );

        // ICMP echo: the server's ping is answered; the client's ping is not (icmp_echo = false).
        let (srv, cli) = (
            pair.server_ip(v6).to_string(),
            pair.client_ip(v6).to_string(),
        );
        let out = pair.server.run(
            "ping",
            &["-c", "2", "-i", "0.2", "-W", "2", &cli],
            CONNECT_OK * 2,
        );
        assert!(
            out.success(),
            "{}: the server's ping got no reply: {out}",
            fam(v6)
        );
        let out = pair.client.run(
            "ping",
            &["-c", "2", "-i", "0.2", "-W", "1", &srv],
            CONNECT_OK * 2,
        );
        assert!(!out.success(), "{}: fw answered pings: {out}", fam(v6));
    }
    let s = pair.status();
    assert!(
        s.reason("established") > 0,
        "nothing counted as established: {:#}",
        s.0
    );
    pair.finish();
}
