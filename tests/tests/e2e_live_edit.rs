//! Tier 3, end to end: `fw allow` and `fw deny` edit the running filter, live. Root only; every test makes its own namespaces (unique names), so they run in parallel.

use fw_lab::{CONNECT_DROP, CONNECT_OK, Connect, FAMILIES, Pair, family, preflight};

use Connect::{Connected, TimedOut};

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
            family(v6)
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
            family(v6)
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
            family(v6)
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
            family(v6)
        );
        let r = pair.client.connect_tcp(to, Some(other), CONNECT_DROP);
        assert_eq!(
            r,
            TimedOut,
            "{}: 2222 from the other source {other}",
            family(v6)
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
