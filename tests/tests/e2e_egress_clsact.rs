//! Tier 3, end to end: the egress recorder through a clsact qdisc and a cls_bpf filter — the
//! path fw takes on kernels without TCX (< 6.6) — forced on this kernel with
//! `fw up --egress clsact`, so both paths are tested here (the VM test runs it on 6.1).
//! Root only; the test makes its own namespaces.

use std::net::SocketAddr;

use fw_lab::{CONNECT_OK, Connect, FAMILIES, Pair, family, preflight};

use Connect::{Connected, TimedOut};

/// fw's cls_bpf filters on the server veth's egress hook (`tc filter show … egress`).
fn egress_filters(pair: &Pair) -> String {
    pair.server
        .run(
            "tc",
            &["filter", "show", "dev", Pair::SERVER_IF, "egress"],
            fw_lab::CMD_TIMEOUT,
        )
        .check()
        .stdout
}

/// Replies to the server's own connections pass (the recorder saw them leave); the same port
/// probed unsolicited stays closed.
#[track_caller]
fn replies_pass(pair: &Pair, when: &str) {
    for v6 in FAMILIES {
        let to = SocketAddr::new(pair.client_ip(v6), 5555);
        assert_eq!(
            pair.server.connect_tcp(to, None, CONNECT_OK),
            Connected,
            "{when}, {}: the server's own connect got no reply: the egress recorder did not record it",
            family(v6)
        );
        assert_eq!(
            pair.probe(v6, 5555),
            TimedOut,
            "{when}, {}: unsolicited",
            family(v6)
        );
    }
}

#[test]
fn the_clsact_egress_path_records_connections_survives_upgrade_and_leaves_nothing() {
    preflight(&["tc"]);
    let pair = Pair::new("clsact");
    let _cli = [false, true].map(|v6| {
        pair.client
            .listen_tcp(SocketAddr::new(pair.client_ip(v6), 5555))
    });
    let out = pair
        .fw(&["up", "--iface", Pair::SERVER_IF, "--egress", "clsact"])
        .check();
    assert!(out.stdout.contains("egress clsact"), "{out}");
    let filters = egress_filters(&pair);
    assert!(
        filters.contains("bpf") && filters.contains("fw_egress"),
        "no fw cls_bpf filter on egress: {filters}"
    );
    let s = pair.status();
    assert_eq!(s.0["egress"]["kind"], "clsact", "{}", s.0);
    replies_pass(&pair, "clsact");

    // `fw up` again (an upgrade): the filter is replaced in place, still clsact, still one.
    let out = pair.fw(&["up", "--iface", Pair::SERVER_IF]).check();
    assert!(out.success(), "{out}");
    let again = egress_filters(&pair);
    assert_eq!(
        again.matches("name fw_egress").count(),
        1,
        "not exactly one fw filter after the upgrade: {again}"
    );
    assert_eq!(pair.status().0["egress"]["kind"], "clsact");
    replies_pass(&pair, "after fw up again");

    pair.fw(&["down", "--iface", Pair::SERVER_IF]).check();
    let after = egress_filters(&pair);
    assert!(
        !after.contains("fw_egress"),
        "fw down left its filter: {after}"
    );
    assert!(
        !pair.server.pins_dir().join(Pair::SERVER_IF).exists(),
        "pins left"
    );

    // The TCX path on the same interface afterwards: no cls_bpf filter, replies still pass.
    let out = pair
        .fw(&["up", "--iface", Pair::SERVER_IF, "--egress", "tcx"])
        .check();
    assert!(out.stdout.contains("egress tcx"), "{out}");
    assert!(!egress_filters(&pair).contains("fw_egress"));
    assert_eq!(pair.status().0["egress"]["kind"], "tcx");
    replies_pass(&pair, "tcx");
    pair.finish();
}
