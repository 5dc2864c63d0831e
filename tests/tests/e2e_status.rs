//! Tier 3, end to end: `fw status` counts what the traffic did, per rule and per reason.
//! Root only; every test makes its own namespaces (unique names), so they run in parallel.

use std::net::SocketAddr;

use fw_lab::{CONNECT_OK, Connect, Pair, hping3, preflight};

use Connect::{Connected, TimedOut};

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
