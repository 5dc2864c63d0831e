//! Tier 3, end to end: real scanners (nmap, hping3) from the client namespace against fw on the
//! server veth. Each scan runs twice, without fw and with it, so the difference is fw's doing.
//! Root only; namespaces are per test, so the tests run in parallel.

use std::collections::BTreeMap;

use fw_lab::{Pair, fixtures::SEED_OPEN, hping3, nmap, preflight};

/// Ports that differ from `want`, as "port: got (want)".
fn differences(got: &BTreeMap<u16, String>, want: impl Fn(u16) -> &'static str) -> Vec<String> {
    got.iter()
        .filter(|(p, s)| s.as_str() != want(**p))
        .map(|(p, s)| format!("{p}: {s} (want {})", want(*p)))
        .collect()
}

#[track_caller]
fn assert_states(what: &str, got: &BTreeMap<u16, String>, want: impl Fn(u16) -> &'static str) {
    let diff = differences(got, want);
    assert!(
        diff.is_empty(),
        "{what}: {} ports in another state than expected:\n  {}",
        diff.len(),
        diff.join("\n  ")
    );
}

/// `nmap -sS` over 1-1100: without fw the listeners (two allowed ports, one not) are open and
/// everything else closed; with fw exactly the allowed ports with a listener are open, the
/// allowed ports without one closed, and everything else filtered.
fn syn_scan(v6: bool) {
    preflight(&["nmap"]);
    let pair = Pair::new(if v6 { "syn6" } else { "syn4" });
    const DISALLOWED_LISTENER: u16 = 1000;
    let _l = [80, 443, DISALLOWED_LISTENER].map(|p| pair.listen(v6, p));
    let ports: Vec<u16> = (1..=1100).collect();
    let target = pair.server_ip(v6);

    let before = nmap(&pair.client, "-sS", target, &ports);
    assert_states("nmap -sS without fw", &before, |p| {
        if [80, 443, DISALLOWED_LISTENER].contains(&p) {
            "open"
        } else {
            "closed"
        }
    });

    pair.fw_up(None);
    let after = nmap(&pair.client, "-sS", target, &ports);
    assert_states("nmap -sS with fw", &after, |p| match p {
        80 | 443 => "open",
        p if SEED_OPEN.contains(&p) => "closed",
        _ => "filtered",
    });
    let s = pair.status();
    assert!(
        s.reason("default-drop") >= (ports.len() - SEED_OPEN.len()) as u64,
        "default-drop did not count the probes: {:#}",
        s.0
    );
    pair.finish();
}

#[test]
fn nmap_syn_scan_v4_sees_only_the_allowed_ports() {
    syn_scan(false);
}

#[test]
fn nmap_syn_scan_v6_sees_only_the_allowed_ports() {
    syn_scan(true);
}

/// Ports for the flag scans: the seed ports with their neighbours, and a listener on a port
/// the policy does not allow.
fn flag_scan_ports() -> Vec<u16> {
    let mut p: Vec<u16> = [20..=26, 78..=82, 108..=112, 141..=145, 440..=466, 990..=996]
        .into_iter()
        .flatten()
        .collect();
    p.push(8080);
    p
}

/// `nmap -sN`, `-sX`, `-sF`: without fw the closed ports answer RST ("closed"); with fw no port
/// is "closed" or "open": everything is open|filtered, nothing learned.
fn flag_scans(v6: bool, scans: &[&str]) {
    preflight(&["nmap"]);
    let pair = Pair::new(if v6 { "flag6" } else { "flag4" });
    let _l = [80, 8080].map(|p| pair.listen(v6, p));
    let ports = flag_scan_ports();
    let target = pair.server_ip(v6);

    for scan in scans {
        let before = nmap(&pair.client, scan, target, &ports);
        assert_states(&format!("nmap {scan} without fw"), &before, |p| {
            if p == 80 || p == 8080 {
                "open|filtered"
            } else {
                "closed"
            }
        });
    }
    pair.fw_up(None);
    let s0 = pair.status();
    for scan in scans {
        let after = nmap(&pair.client, scan, target, &ports);
        assert_states(&format!("nmap {scan} with fw"), &after, |_| "open|filtered");
    }
    let s1 = pair.status();
    let scan_drops: u64 = ["tcp-null", "tcp-xmas", "tcp-bad-flags"]
        .iter()
        .map(|r| s1.reason(r) - s0.reason(r))
        .sum();
    assert!(
        scan_drops >= (scans.len() * ports.len()) as u64,
        "fw counted {scan_drops} scan drops for {} probes: {:#}",
        scans.len() * ports.len(),
        s1.0
    );
    pair.finish();
}

#[test]
fn nmap_null_xmas_fin_scans_v4_learn_nothing() {
    flag_scans(false, &["-sN", "-sX", "-sF"]);
}

#[test]
fn nmap_null_xmas_fin_scans_v6_learn_nothing() {
    flag_scans(true, &["-sN", "-sX", "-sF"]);
}

/// hping3 NULL and XMAS probes to an allowed port (no listener, so an unfiltered stack answers
/// with RST): no reply with fw, and fw's scan counters count every probe.
#[test]
fn hping3_null_and_xmas_probes_get_no_reply() {
    preflight(&["hping3"]);
    let pair = Pair::new("hping");
    let server = pair.v4(1);
    const N: u32 = 3;
    // (name, hping3 flags, reasons fw may count it under, unfiltered stack answers)
    let probes: [(&str, &[&str], &[&str], bool); 3] = [
        ("NULL", &[], &["tcp-null"], true),
        // nmap's XMAS: FIN PSH URG.
        (
            "XMAS -F -P -U",
            &["-F", "-P", "-U"],
            &["tcp-xmas", "tcp-bad-flags"],
            true,
        ),
        // Every flag: RST is among them, and a stack never answers an RST (RFC 793), so this
        // one gets no reply even unfiltered; the counters show fw dropped it.
        (
            "XMAS -F -S -R -P -A -U",
            &["-F", "-S", "-R", "-P", "-A", "-U"],
            &["tcp-xmas"],
            false,
        ),
    ];
    for (name, flags, _, answered) in probes {
        let (sent, got) = hping3(&pair.client, flags, server, 80, N);
        assert_eq!(sent, u64::from(N), "{name} without fw: sent");
        if answered {
            assert!(
                got > 0,
                "{name} without fw: no reply, so the test proves nothing"
            );
        }
        println!("{name} without fw: {got} of {sent} answered");
    }
    pair.fw_up(None);
    for (name, flags, reasons, _) in probes {
        let s0 = pair.status();
        let (sent, got) = hping3(&pair.client, flags, server, 80, N);
        assert_eq!(
            (sent, got),
            (u64::from(N), 0),
            "{name} with fw: (sent, answered)"
        );
        let counted = |s: &fw_lab::Status| reasons.iter().map(|r| s.reason(r)).sum::<u64>();
        let s1 = pair.status_when(fw_lab::CONNECT_OK, |s| counted(s) >= counted(&s0) + 3);
        assert_eq!(
            counted(&s1) - counted(&s0),
            u64::from(N),
            "{name}: fw counted another number of drops under {reasons:?}: {:#}",
            s1.0
        );
    }
    pair.finish();
}

/// `nmap -sA` (ACK scan, which maps firewalls): without fw every port answers the stray ACK
/// with RST ("unfiltered"); with fw an ACK that belongs to no tracked connection is dropped, so
/// every port is "filtered".
#[test]
fn nmap_ack_scan_finds_every_port_filtered() {
    preflight(&["nmap"]);
    let pair = Pair::new("ack");
    let _l = [80, 8080].map(|p| pair.listen(false, p));
    let ports = flag_scan_ports();
    let target = pair.server_ip(false);
    let before = nmap(&pair.client, "-sA", target, &ports);
    assert_states("nmap -sA without fw", &before, |_| "unfiltered");
    pair.fw_up(None);
    let after = nmap(&pair.client, "-sA", target, &ports);
    assert_states("nmap -sA with fw", &after, |_| "filtered");
    pair.finish();
}
