//! Tier 3, end to end: FIN and RST close connection entries. Root only; every test makes its own namespaces (unique names), so they run in parallel.

use std::{
    io::Read as _,
    net::{Shutdown, SocketAddr},
    time::{Duration, Instant},
};

use fw_lab::{CONNECT_OK, FAMILIES, Pair, echo_msg, echoes, family, preflight, sock::ends};

/// FIN and RST close entries, whichever side opened the connection and whichever closes it:
/// `fw conns` shows ESTABLISHED before the close; once both FINs and the last ACK are through,
/// or after an RST, the entry is gone (a closed connection does not linger in the table).
#[test]
fn fin_and_rst_close_entries() {
    preflight(&[]);
    const WEB: u16 = 80;
    const SVC: u16 = 9000;
    let pair = Pair::new("close");
    let _servers = FAMILIES.map(|v6| {
        [
            pair.server.echo_tcp(pair.server_addr(v6, WEB)),
            pair.client
                .echo_tcp(SocketAddr::new(pair.client_ip(v6), SVC)),
        ]
    });
    pair.fw_up(None);

    #[derive(Clone, Copy, Debug)]
    enum Close {
        Fin,
        Rst,
    }
    // (what, stream, server port, client port, table, how to close)
    let mut sessions = Vec::new();
    for v6 in FAMILIES {
        for how in [Close::Fin, Close::Rst] {
            let s = pair.client.stream(pair.server_addr(v6, WEB), None);
            let (sp, cp) = ends(&s, false);
            sessions.push((
                format!("{} inbound {how:?}", family(v6)),
                s,
                sp,
                cp,
                "in",
                how,
            ));
            let s = pair
                .server
                .stream(SocketAddr::new(pair.client_ip(v6), SVC), None);
            let (sp, cp) = ends(&s, true);
            sessions.push((
                format!("{} outbound {how:?}", family(v6)),
                s,
                sp,
                cp,
                "out",
                how,
            ));
        }
    }
    for (what, s, sp, cp, table, _) in &mut sessions {
        assert!(echoes(s, &echo_msg(what, 0), CONNECT_OK), "{what}");
        let e = pair.conn_when("tcp", *sp, *cp, |e| e["state"] == "ESTABLISHED");
        assert!(
            e.as_ref()
                .is_some_and(|e| e["table"] == *table && e["state"] == "ESTABLISHED"),
            "{what}: before the close: {e:#?}"
        );
    }
    for (what, s, sp, cp, _, how) in sessions {
        match how {
            Close::Fin => {
                // Our FIN, then the echo server's once it reads the end.
                s.shutdown(Shutdown::Write).expect("shutdown");
                let mut rest = Vec::new();
                s.set_read_timeout(Some(CONNECT_OK)).expect("timeout");
                let _ = (&s).read_to_end(&mut rest);
            }
            Close::Rst => {
                socket2::SockRef::from(&s)
                    .set_linger(Some(Duration::ZERO))
                    .expect("SO_LINGER");
            }
        }
        drop(s);
        let deadline = Instant::now() + CONNECT_OK;
        let mut left = pair.conn_entries("tcp", sp, cp);
        while !left.is_empty() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
            left = pair.conn_entries("tcp", sp, cp);
        }
        assert!(left.is_empty(), "{what}: after the close: {left:#?}");
    }
    pair.finish();
}
