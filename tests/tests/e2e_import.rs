//! Tier 3, end to end: an imported iptables-save file (the seed tutorial's rules) admits the
//! same ports as the seed policy. Root only; every test makes its own namespaces (unique names), so they run in parallel.

use fw_lab::{
    CONNECT_OK, Connect, FAMILIES, Pair, TempDir, fixtures::SEED_IPTABLES_SAVE, path_str, preflight,
};

use Connect::{Connected, TimedOut};

/// `fw import iptables` of the seed's rules, put in force with `fw up --policy`, admits
/// exactly the ports the seed policy admits.
#[test]
fn imported_seed_rules_admit_the_same_ports_as_the_seed_policy() {
    preflight(&[]);
    const PORTS: [u16; 13] = [21, 22, 25, 53, 80, 110, 143, 443, 465, 993, 995, 3306, 8080];
    const SEED_OPEN: [u16; 9] = [22, 25, 80, 110, 143, 443, 465, 993, 995];
    let dir = TempDir::new("import");
    let rules = dir.write("iptables", SEED_IPTABLES_SAVE);
    let imported = dir.path().join("imported.toml");
    let pair = Pair::new("import");
    let out = pair.fw(&[
        "import",
        "iptables",
        &path_str(&rules),
        "-o",
        &path_str(&imported),
    ]);
    assert!(out.success(), "fw import iptables: {out}");
    assert!(imported.exists(), "{out}");
    let _l: Vec<_> = PORTS.iter().map(|&p| pair.listen_both(p)).collect();

    pair.fw_up(None);
    let seed: Vec<_> = FAMILIES.map(|v6| pair.reach(v6, &PORTS)).concat();
    pair.fw(&["down", "--iface", Pair::SERVER_IF]).check();
    assert!(pair.wait_detached(CONNECT_OK));
    pair.fw_up(Some(&imported));
    assert!(pair.source_is("imported.toml"));
    let from_iptables: Vec<_> = FAMILIES.map(|v6| pair.reach(v6, &PORTS)).concat();

    let want: Vec<_> = [false, true]
        .map(|_| {
            PORTS
                .map(|p| {
                    (
                        p,
                        if SEED_OPEN.contains(&p) {
                            Connected
                        } else {
                            TimedOut
                        },
                    )
                })
                .to_vec()
        })
        .concat();
    assert_eq!(seed, want, "the seed policy (IPv4 then IPv6)");
    assert_eq!(
        from_iptables, seed,
        "the imported policy differs from the seed"
    );
    pair.finish();
}
