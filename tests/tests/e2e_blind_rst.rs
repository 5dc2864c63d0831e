//! Tier 3, end to end: a blind attacker cannot end an idle session (issue 10.1). fw on the
//! server side of a veth pair, a real TCP session from the client namespace to the server's
//! SSH port, idle; hping3 in the client namespace sweeps RSTs (bare, and with ACK) and FIN+ACKs
//! across the client port range with sequence numbers it cannot know. Before fw checked
//! sequence numbers, one of them moved the flow to CLOSED (10 s) or CLOSING (120 s) and the
//! session's next packet after that idle time was dropped as new-not-SYN.
//!
//! Root only; namespaces named after the pid; every loop bounded.

use std::{
    net::{SocketAddr, TcpStream},
    thread,
    time::{Duration, Instant},
};

use fw_lab::{CONNECT_OK, NetNs, Pair, echoes, parse_hping3, preflight};
use serde_json::Value;

/// The CLOSED timeout (10 s) and a margin: the session must outlive it after the sweep.
const PAST_CLOSED_TIMEOUT: Duration = Duration::from_secs(12);

/// The client's ephemeral port range in a fresh namespace (net.ipv4.ip_local_port_range).
const PORTS: (u16, u16) = (32768, 60999);

/// hping3 from `ns`: one packet per client port of the ephemeral range, to `to`, with `flags`
/// and the fixed sequence number `seq`; returns the packets sent.
fn sweep(ns: &NetNs, flags: &[&str], to: SocketAddr, seq: u32) -> u64 {
    let count = (PORTS.1 - PORTS.0 + 1).to_string();
    let (base, port, seq, target) = (
        PORTS.0.to_string(),
        to.port().to_string(),
        seq.to_string(),
        to.ip().to_string(),
    );
    let mut args = vec!["-q", "-c", &count, "-i", "u20", "-s", &base, "-p", &port];
    args.extend_from_slice(flags);
    args.extend(["-M", &seq, "-L", "1", &target]);
    let out = ns.run("hping3", &args, Duration::from_secs(120));
    assert!(!out.timed_out(), "hping3 did not finish: {out}");
    parse_hping3(&out).0
}

/// A session as `fw conns` names it: (server end, client end).
fn ends(s: &TcpStream) -> (String, String) {
    (
        s.peer_addr().expect("peer").to_string(),
        s.local_addr().expect("local").to_string(),
    )
}

/// The session's entry in `fw conns` (`None`: not tracked).
fn conn(pair: &Pair, (server, client): &(String, String)) -> Option<Value> {
    pair.conns().into_iter().find(|c| {
        c["proto"] == "tcp" && c["local"] == server.as_str() && c["remote"] == client.as_str()
    })
}

/// Poll `fw conns` (bounded) until the session's entry is gone.
fn gone(pair: &Pair, e: &(String, String)) -> bool {
    let deadline = Instant::now() + CONNECT_OK;
    while Instant::now() < deadline {
        if conn(pair, e).is_none() {
            return true;
        }
        thread::sleep(Duration::from_millis(50));
    }
    false
}

#[test]
fn blind_rst_and_fin_sweeps_do_not_end_an_idle_session() {
    preflight(&["hping3"]);
    let pair = Pair::new("blindrst");
    let ssh = pair.server_addr(false, 22);
    let _server = pair.server.echo_tcp(ssh);
    pair.fw_up(None);
    let mut s = pair.client.stream(ssh, None);
    let cport = s.local_addr().expect("local").port();
    assert!(
        (PORTS.0..=PORTS.1).contains(&cport),
        "the client port {cport} is outside the swept range"
    );
    assert!(echoes(&mut s, b"before the sweep\n", CONNECT_OK));
    let e = ends(&s);
    let before = conn(&pair, &e).expect("the session is tracked");
    assert_eq!(before["state"], "ESTABLISHED", "{before:#}");
    let per_sweep = u64::from(PORTS.1 - PORTS.0 + 1);

    // RSTs, bare and with ACK, on every client port, with two sequence numbers each.
    let mut sent = 0;
    for seq in [0x1234_5678u32, 0x9abc_def0] {
        for flags in [&["-R"][..], &["-R", "-A"]] {
            sent += sweep(&pair.client, flags, ssh, seq);
        }
    }
    assert!(sent >= 4 * per_sweep * 9 / 10, "hping3 sent {sent} RSTs");
    let after = conn(&pair, &e).expect("the session is still tracked after the RSTs");
    assert_eq!(
        after["state"], "ESTABLISHED",
        "the RST sweep changed the session's state: {after:#}"
    );
    // Idle past the CLOSED timeout: the session still works.
    thread::sleep(PAST_CLOSED_TIMEOUT);
    assert!(
        echoes(&mut s, b"after the RST sweep\n", CONNECT_OK),
        "the idle session no longer works after the RST sweep: {:#?}",
        conn(&pair, &e)
    );

    // FIN+ACKs likewise (before, one moved the flow to CLOSING: 120 s to live).
    let mut sent = 0;
    for seq in [0x1234_5678u32, 0x9abc_def0] {
        sent += sweep(&pair.client, &["-F", "-A"], ssh, seq);
    }
    assert!(sent >= 2 * per_sweep * 9 / 10, "hping3 sent {sent} FINs");
    let after = conn(&pair, &e).expect("the session is still tracked after the FINs");
    assert_eq!(
        after["state"], "ESTABLISHED",
        "the FIN sweep changed the session's state: {after:#}"
    );
    assert!(echoes(&mut s, b"after the FIN sweep\n", CONNECT_OK));

    // The real RST ends it at once (SO_LINGER 0: close sends a RST with the right number).
    socket2::SockRef::from(&s)
        .set_linger(Some(Duration::ZERO))
        .expect("SO_LINGER");
    drop(s);
    assert!(gone(&pair, &e), "a real RST left the entry behind");

    // A real FIN close too (ours first, then the echo server's, then our last ACK).
    let mut s = pair.client.stream(ssh, None);
    assert!(echoes(&mut s, b"second session\n", CONNECT_OK));
    let e = ends(&s);
    s.shutdown(std::net::Shutdown::Write).expect("shutdown");
    let mut rest = Vec::new();
    s.set_read_timeout(Some(CONNECT_OK)).expect("timeout");
    let _ = std::io::Read::read_to_end(&mut s, &mut rest);
    assert!(gone(&pair, &e), "a real FIN close left the entry behind");
    pair.finish();
}
