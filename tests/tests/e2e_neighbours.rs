//! Tier 3, end to end: ARP and IPv6 neighbour discovery pass under default DROP, so the host
//! stays reachable on its link. Root only; every test makes its own namespaces (unique names), so they run in parallel.

use fw_lab::{Connect, FAMILIES, Pair, family, preflight};

use Connect::Connected;

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
            family(v6)
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
