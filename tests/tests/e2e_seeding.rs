//! Tier 3, end to end: connections opened before `fw up` (read from /proc/net) survive it.
//! Root only; every test makes its own namespaces (unique names), so they run in parallel.

use std::net::SocketAddr;

use fw_lab::{
    CONNECT_OK, Connect, EchoServer, FAMILIES, Pair, echo_msg, echoes, family, preflight,
    sock::ends,
};

use Connect::{Connected, TimedOut};

/// TCP sessions opened before `fw up` keep exchanging data after it, whichever side opened
/// them and whether or not the policy allows their port: `fw up` seeded them from the sockets
/// it found (`fw conns` says so). A new connection to the port the policy does not allow is
/// dropped, so it is the seeding that keeps the old one alive.
#[test]
fn sessions_opened_before_fw_up_survive_it() {
    preflight(&[]);
    const SSH: u16 = 22; // allowed by the seed policy
    const OTHER: u16 = 7000; // not allowed
    const CLIENT_SVC: u16 = 9000;
    const HTTPS: u16 = 443; // allowed; used below as the server's own source port
    let pair = Pair::new("seeded");
    let _servers: Vec<EchoServer> = FAMILIES
        .iter()
        .flat_map(|&v6| {
            [
                pair.server.echo_tcp(pair.server_addr(v6, SSH)),
                pair.server.echo_tcp(pair.server_addr(v6, OTHER)),
                pair.client
                    .echo_tcp(SocketAddr::new(pair.client_ip(v6), CLIENT_SVC)),
            ]
        })
        .collect();

    // (what, stream, server end, client end, the table fw must seed it in)
    let mut sessions = Vec::new();
    for v6 in FAMILIES {
        let f = family(v6);
        for port in [SSH, OTHER] {
            let s = pair.client.stream(pair.server_addr(v6, port), None);
            let (sa, ca) = ends(&s, false);
            sessions.push((format!("{f} client→server:{port}"), s, sa, ca, "in"));
        }
        let to = SocketAddr::new(pair.client_ip(v6), CLIENT_SVC);
        let s = pair.server.stream(to, None);
        let (sa, ca) = ends(&s, true);
        sessions.push((format!("{f} server→client:{CLIENT_SVC}"), s, sa, ca, "out"));
        let from = pair.server_addr(v6, HTTPS);
        let s = pair.server.stream(to, Some(from));
        let (sa, ca) = ends(&s, true);
        sessions.push((
            format!("{f} server:{HTTPS}→client:{CLIENT_SVC}"),
            s,
            sa,
            ca,
            "out",
        ));
    }
    for (what, s, ..) in &mut sessions {
        assert!(
            echoes(s, &echo_msg(what, 0), CONNECT_OK),
            "{what}: before fw up"
        );
    }

    pair.fw_up(None);
    let s0 = pair.status();
    for round in 1..=3 {
        for (what, s, ..) in &mut sessions {
            assert!(
                echoes(s, &echo_msg(what, round), CONNECT_OK),
                "{what}: no echo after fw up (round {round})"
            );
        }
    }
    for (what, _, sa, ca, table) in &sessions {
        let e = pair.conn_entries("tcp", *sa, *ca);
        assert_eq!(e.len(), 1, "{what}: fw conns entries: {e:#?}");
        assert_eq!(e[0]["table"], *table, "{what}: {:#}", e[0]);
        assert_eq!(
            e[0]["seeded"], true,
            "{what}: not marked seeded: {:#}",
            e[0]
        );
        assert_eq!(e[0]["state"], "ESTABLISHED", "{what}: {:#}", e[0]);
    }
    for v6 in FAMILIES {
        assert_eq!(
            pair.probe(v6, OTHER),
            TimedOut,
            "{}: a new connection to {OTHER} (not allowed) got through",
            family(v6)
        );
        assert_eq!(
            pair.connect(v6, SSH),
            Connected,
            "{}: a new SSH",
            family(v6)
        );
    }
    let s1 = pair.status();
    assert_eq!(
        s1.reason("tcp-new-not-syn"),
        s0.reason("tcp-new-not-syn"),
        "a segment of the seeded sessions was dropped (and retransmitted): {:#}",
        s1.0
    );
    assert!(s1.reason("default-drop") >= s0.reason("default-drop") + 2);
    drop(sessions);
    pair.finish();
}
