//! Tier 3, end to end: an idle UDP flow expires, and its replies are dropped after it.
//! Root only; every test makes its own namespaces (unique names), so they run in parallel.

use std::{
    net::SocketAddr,
    thread::{self},
    time::{Duration, Instant},
};

use fw_lab::{CONNECT_OK, Pair, QUIET, TempDir, preflight, udp_received};

/// With `udp_timeout = 2` and `udp_stream_timeout = 3`: a datagram from the peer of a flow
/// that got a reply passes while the flow is fresh and is dropped once it has been idle longer
/// than 3 s; an answer to a query left unanswered for more than 2 s is dropped. A new query
/// opens the flow again.
#[test]
fn an_idle_udp_flow_expires() {
    preflight(&[]);
    let dir = TempDir::new("udp-timeout");
    let policy = dir.write(
        "udp-timeout.toml",
        "# e2e: short UDP timeouts\n[options]\nudp_timeout = 2\nudp_stream_timeout = 3\n\n[[allow]]\nports = [22]\n",
    );
    let pair = Pair::new("udpexp");
    pair.fw_up(Some(&policy));
    let peer = pair
        .client
        .bind_udp(SocketAddr::new(pair.client_ip(false), 53));
    let to_peer = peer.local_addr().expect("addr");
    let streamed = pair
        .server
        .bind_udp(SocketAddr::new(pair.server_ip(false), 0));
    let unanswered = pair
        .server
        .bind_udp(SocketAddr::new(pair.server_ip(false), 0));
    let (a, b) = (
        streamed.local_addr().expect("addr"),
        unanswered.local_addr().expect("addr"),
    );
    peer.set_read_timeout(Some(CONNECT_OK)).expect("timeout");
    let mut buf = [0u8; 512];

    streamed.send_to(b"query A", to_peer).expect("send");
    assert_eq!(peer.recv_from(&mut buf).map(|r| r.1).ok(), Some(a));
    let t_b = Instant::now();
    unanswered.send_to(b"query B", to_peer).expect("send");
    assert_eq!(peer.recv_from(&mut buf).map(|r| r.1).ok(), Some(b));
    peer.send_to(b"answer A", a).expect("send");
    assert_eq!(udp_received(&streamed, CONNECT_OK, 1), 1, "the answer");
    // Fresh: more datagrams from the peer's port pass.
    peer.send_to(b"more A", a).expect("send");
    assert_eq!(
        udp_received(&streamed, CONNECT_OK, 1),
        1,
        "a datagram from the peer's port while the flow is fresh was dropped"
    );
    let t_a = Instant::now();
    let e = pair.conn_when("udp", a, to_peer, |e| e["state"] == "REPLIED");
    assert!(
        e.is_some(),
        "fw conns does not list flow A as REPLIED: {e:#?}"
    );

    // B waited for its answer longer than udp_timeout (2 s).
    thread::sleep(Duration::from_millis(2600).saturating_sub(t_b.elapsed()));
    peer.send_to(b"late answer B", b).expect("send");
    assert_eq!(
        udp_received(&unanswered, QUIET, 1),
        0,
        "an answer {:?} after an unanswered query was delivered (udp_timeout = 2)",
        t_b.elapsed()
    );
    // A was idle longer than udp_stream_timeout (3 s).
    thread::sleep(Duration::from_millis(4500).saturating_sub(t_a.elapsed()));
    let s0 = pair.status();
    peer.send_to(b"stale A", a).expect("send");
    assert_eq!(
        udp_received(&streamed, QUIET, 1),
        0,
        "a datagram {:?} after the flow went idle was delivered (udp_stream_timeout = 3)",
        t_a.elapsed()
    );
    let s1 = pair.status_when(CONNECT_OK, |s| {
        s.reason("default-drop") > s0.reason("default-drop")
    });
    assert!(
        s1.reason("default-drop") > s0.reason("default-drop"),
        "the stale datagram was not counted as default-drop: {:#}",
        s1.0
    );
    assert!(
        pair.conn_entries("udp", a, to_peer).is_empty(),
        "the expired flow is still listed"
    );

    // A new query opens the flow again.
    streamed.send_to(b"query A again", to_peer).expect("send");
    assert_eq!(peer.recv_from(&mut buf).map(|r| r.1).ok(), Some(a));
    peer.send_to(b"answer A again", a).expect("send");
    assert_eq!(
        udp_received(&streamed, CONNECT_OK, 1),
        1,
        "the answer to a new query after the expiry was dropped"
    );
    pair.finish();
}
