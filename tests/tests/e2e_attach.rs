//! Tier 3, end to end: attaching and detaching — `fw up` again replaces the program atomically
//! under traffic, `fw down` restores connectivity and removes the pins, bad interfaces and
//! policies are refused with nothing changed, another tool's XDP program is left alone.
//! Root only; every test makes its own namespaces (unique names), so they run in parallel.

use std::{
    sync::atomic::{AtomicBool, Ordering},
    thread::{self},
    time::{Duration, Instant},
};

use fw_lab::{
    CONNECT_OK, Connect, FAMILIES, Pair, TempDir, family, host_cmd, parse_hping3, preflight,
    run_with_timeout,
};
use serde_json::Value;

use Connect::{Connected, TimedOut};

#[test]
fn down_restores_connectivity_and_removes_pins() {
    preflight(&[]);
    let pair = Pair::new("down");
    let _l8080 = pair.listen_both(8080);
    pair.fw_up(None);
    for v6 in FAMILIES {
        assert_eq!(pair.probe(v6, 8080), TimedOut, "{} with fw", family(v6));
    }
    assert!(pair.iface_pins().join("link").exists());
    assert!(pair.server.state_dir().join(Pair::SERVER_IF).exists());

    pair.fw(&["down", "--iface", Pair::SERVER_IF]).check();
    assert!(
        pair.wait_detached(CONNECT_OK),
        "an XDP program stays attached after fw down"
    );
    for v6 in FAMILIES {
        assert_eq!(
            pair.connect(v6, 8080),
            Connected,
            "{} after fw down",
            family(v6)
        );
    }
    assert!(
        !pair.iface_pins().exists(),
        "pins left: {}",
        pair.iface_pins().display()
    );
    assert!(
        !pair.server.state_dir().join(Pair::SERVER_IF).exists(),
        "state left"
    );
    assert_eq!(
        pair.xdp_on_iface(),
        None,
        "an XDP program is still attached"
    );
    // Idempotent, as configuration management needs: nothing to do, exit 0.
    let again = pair.fw(&["down", "--iface", Pair::SERVER_IF]).check();
    assert!(again.stdout.contains("not attached"), "{again}");
    pair.finish();
}

#[test]
fn bad_interfaces_and_bad_policies_are_refused_without_changes() {
    preflight(&[]);
    let pair = Pair::new("refuse");
    let _l80 = pair.listen(false, 80);
    let _l8080 = pair.listen(false, 8080);

    let lo = pair.fw(&["up", "--iface", "lo"]);
    assert!(!lo.success(), "fw up on lo succeeded: {lo}");
    assert!(lo.stderr.contains("loopback"), "no explanation: {lo}");
    assert!(!pair.server.pins_dir().exists(), "fw up lo left pins");

    let nx = pair.fw(&["up", "--iface", "doesnotexist"]);
    assert!(
        !nx.success(),
        "fw up on a missing interface succeeded: {nx}"
    );
    assert!(
        nx.stderr.contains("doesnotexist") && nx.stderr.contains("no network interface"),
        "unclear error: {nx}"
    );
    assert!(
        !pair.server.pins_dir().exists(),
        "fw up doesnotexist left pins"
    );
    assert!(
        !pair.server.state_dir().exists(),
        "fw up doesnotexist left state"
    );

    // A running filter is left alone by everything below.
    pair.fw_up(None);
    let ids = pair.link().expect("link");
    let s0 = pair.status();
    let unchanged = |what: &str| {
        assert_eq!(pair.link(), Some(ids), "{what}: the program changed");
        let s = pair.status();
        assert_eq!(
            s.generation(),
            s0.generation(),
            "{what}: the generation changed"
        );
        assert_eq!(
            s.rules_without_counters(),
            s0.rules_without_counters(),
            "{what}: the rules changed"
        );
        assert_eq!(pair.connect(false, 80), Connected, "{what}: 80");
        assert_eq!(pair.probe(false, 8080), TimedOut, "{what}: 8080");
    };

    let dir = TempDir::new("refuse");
    let cases = [
        (
            "port.toml",
            "# a port out of range\n[options]\nicmp_echo = false\n\n[[allow]]\nports = [80, 70000]\n",
            6,
        ),
        (
            "key.toml",
            "[[allow]]\nports = [22]\n\n[[allow]]\nportz = [8080]\n",
            5,
        ),
        (
            "syntax.toml",
            "[[allow]]\nports = [22]\nthis is not toml\n",
            3,
        ),
    ];
    for (name, text, line) in cases {
        let file = dir.write(name, text);
        let out = pair.fw(&[
            "up",
            "--iface",
            Pair::SERVER_IF,
            "--policy",
            &file.display().to_string(),
        ]);
        assert!(!out.success(), "{name} was accepted: {out}");
        let want = format!("{}:{line}:", file.display());
        assert!(
            out.stderr.contains(&want),
            "{name}: the error does not name {want}: {out}"
        );
        unchanged(name);
    }
    // Missing interface next to a good one: nothing is changed on the good one either.
    let good = dir.write("good.toml", "[[allow]]\nports = [22, 8080]\n");
    let out = pair.fw(&[
        "up",
        "--iface",
        Pair::SERVER_IF,
        "--iface",
        "doesnotexist",
        "--policy",
        &good.display().to_string(),
    ]);
    assert!(
        !out.success() && out.stderr.contains("doesnotexist"),
        "fw up with a missing interface succeeded or did not name it: {out}"
    );
    unchanged("fw up fwsrv + doesnotexist");
    pair.finish();
}

#[test]
fn fw_up_again_replaces_the_program_atomically_under_traffic() {
    preflight(&["hping3"]);
    const SWAPS: usize = 20;
    const CLOSED: u16 = 9000; // allowed by neither policy, with a listener
    let dir = TempDir::new("swap");
    let policies = [
        dir.write("a.toml", "# e2e A\n[[allow]]\nports = [22, 80]\n"),
        dir.write("b.toml", "# e2e B\n[[allow]]\nports = [22, 80, 8443]\n"),
    ];
    let pair = Pair::new("swap");
    let _l80 = pair.listen(false, 80);
    let l_closed = pair.listen(false, CLOSED);
    pair.fw_up(Some(&policies[0]));
    let first = pair.link().expect("link");
    assert_eq!(pair.probe(false, CLOSED), TimedOut);

    // SYNs to the closed port at 1 kpps from hping3 (bounded: 120 s worth), plus a loop of
    // real connects: any SYN-ACK or completed connect on CLOSED means a moment without fw, a
    // failed connect to 80 a moment where fw dropped what both policies allow.
    let target = pair.v4(1).to_string();
    let mut flood = pair.client.spawn(
        "hping3",
        &[
            "-S",
            "-p",
            &CLOSED.to_string(),
            "-i",
            "u1000",
            "-c",
            "120000",
            &target,
        ],
    );
    let stop = AtomicBool::new(false);
    let (ok80, closed_results, prog_ids) = thread::scope(|s| {
        let traffic = s.spawn(|| {
            let mut ok80 = Vec::new();
            let mut closed = Vec::new();
            let deadline = Instant::now() + Duration::from_secs(120);
            for _ in 0..100_000 {
                if stop.load(Ordering::Relaxed) || Instant::now() > deadline {
                    break;
                }
                ok80.push(
                    pair.client
                        .connect_tcp(pair.server_addr(false, 80), None, CONNECT_OK),
                );
                closed.push(pair.client.connect_tcp(
                    pair.server_addr(false, CLOSED),
                    None,
                    Duration::from_millis(50),
                ));
            }
            (ok80, closed)
        });
        let mut prog_ids = vec![first.prog_id];
        for i in 0..SWAPS {
            let policy = &policies[(i + 1) % 2];
            let out = pair.fw(&[
                "up",
                "--iface",
                Pair::SERVER_IF,
                "--policy",
                &policy.display().to_string(),
            ]);
            assert!(out.success(), "swap {i}: {out}");
            assert!(
                out.stdout.contains("replaced atomically"),
                "swap {i}: {out}"
            );
            let ids = pair.link().expect("link after swap");
            assert_eq!(
                ids.link_id, first.link_id,
                "swap {i}: the link was replaced"
            );
            assert!(
                !prog_ids.contains(&ids.prog_id),
                "swap {i}: program id {} was not new ({prog_ids:?})",
                ids.prog_id
            );
            assert_eq!(
                pair.xdp_on_iface().map(|(id, _)| id),
                Some(ids.prog_id),
                "swap {i}: bpftool net shows another program on the interface"
            );
            prog_ids.push(ids.prog_id);
        }
        // Let the traffic run a little after the last swap too.
        thread::sleep(Duration::from_millis(200));
        stop.store(true, Ordering::Relaxed);
        let (ok80, closed) = traffic.join().expect("traffic thread");
        (ok80, closed, prog_ids)
    });
    flood.signal(libc::SIGINT);
    let flood = flood.finish(Duration::from_secs(10));
    let (sent, answered) = parse_hping3(&flood);
    println!(
        "{SWAPS} swaps, programs {prog_ids:?}; {} connects to 80, {} to {CLOSED}, {sent} SYNs from hping3",
        ok80.len(),
        closed_results.len()
    );
    assert!(
        sent > 0 && !ok80.is_empty(),
        "no traffic ran during the swaps: {flood}"
    );
    assert_eq!(
        answered, 0,
        "a SYN to {CLOSED} was answered during the swaps: {flood}"
    );
    let bad80: Vec<_> = ok80.iter().filter(|r| **r != Connected).collect();
    assert!(
        bad80.is_empty(),
        "connects to 80 failed during the swaps: {bad80:?}"
    );
    let through: Vec<_> = closed_results.iter().filter(|r| **r != TimedOut).collect();
    assert!(
        through.is_empty(),
        "connects to {CLOSED} got an answer: {through:?}"
    );
    assert_eq!(
        l_closed.accepted(),
        0,
        "the {CLOSED} listener accepted a connection"
    );
    let s = pair.status();
    assert_eq!(
        s.generation(),
        (SWAPS % 2) as u64,
        "generation after {SWAPS} swaps"
    );
    assert!(
        s.0["policy_source"]
            .as_str()
            .is_some_and(|p| p.ends_with("a.toml"))
    );

    // Control: the same detector does see a gap when there is one (down, then up again).
    let mut flood = pair.client.spawn(
        "hping3",
        &[
            "-S",
            "-p",
            &CLOSED.to_string(),
            "-i",
            "u1000",
            "-c",
            "20000",
            &target,
        ],
    );
    thread::sleep(Duration::from_millis(100));
    pair.fw(&["down", "--iface", Pair::SERVER_IF]).check();
    assert!(
        pair.wait_detached(CONNECT_OK),
        "control: still attached after fw down"
    );
    thread::sleep(Duration::from_millis(200));
    pair.fw_up(Some(&policies[0]));
    thread::sleep(Duration::from_millis(100));
    flood.signal(libc::SIGINT);
    let flood = flood.finish(Duration::from_secs(10));
    let (_, answered) = parse_hping3(&flood);
    assert!(
        answered > 0,
        "control: down/up left no visible gap, so the detector is blind: {flood}"
    );
    pair.finish();
}

/// With xdp-filter attached to the interface (native or generic XDP), `fw up` refuses, names
/// the interface, and leaves the other program attached and nothing of its own behind.
#[test]
fn fw_up_refuses_an_interface_that_another_xdp_program_holds() {
    preflight(&["xdp-filter", "unshare"]);
    let pair = Pair::new("busy");
    let _l = pair.listen(false, 8080);
    let tc_on_iface = || {
        let out = pair
            .server
            .run("bpftool", &["-j", "net"], CONNECT_OK)
            .check();
        let v: Value = serde_json::from_str(&out.stdout).expect("bpftool json");
        v.as_array()
            .into_iter()
            .flatten()
            .filter_map(|e| e["tc"].as_array())
            .flatten()
            .filter(|t| t["devname"] == Pair::SERVER_IF)
            .count()
    };
    for (mode, off) in [("native", "xdp"), ("skb", "xdpgeneric")] {
        // In a private bpffs (its own mount namespace), so xdp-filter's global pins
        // (/sys/fs/bpf/xdp-filter) never meet another user's; the program stays attached
        // (netlink) after that mount is gone, until `ip link ... off`.
        let script = format!(
            "mount -t bpf bpf /sys/fs/bpf && nsenter --net={} -- xdp-filter load --mode {mode} {}",
            pair.server.path().display(),
            Pair::SERVER_IF
        );
        run_with_timeout(
            host_cmd(
                "unshare",
                ["-m", "--propagation", "private", "sh", "-c", &script],
            ),
            CONNECT_OK * 3,
        )
        .check();
        let theirs = pair
            .xdp_on_iface()
            .unwrap_or_else(|| panic!("xdp-filter ({mode}) did not attach"));
        let out = pair.fw(&["up", "--iface", Pair::SERVER_IF]);
        assert!(
            !out.success(),
            "fw up over xdp-filter ({mode}) succeeded: {out}"
        );
        assert!(
            out.stderr.contains(Pair::SERVER_IF) && out.stderr.contains("another XDP program"),
            "{mode}: the refusal does not name the interface: {out}"
        );
        assert_eq!(
            pair.xdp_on_iface(),
            Some(theirs.clone()),
            "{mode}: xdp-filter was replaced"
        );
        assert!(!pair.iface_pins().exists(), "{mode}: fw left pins");
        assert_eq!(tc_on_iface(), 0, "{mode}: fw left its egress program");
        assert_eq!(
            pair.connect(false, 8080),
            Connected,
            "{mode}: xdp-filter passes"
        );
        pair.server
            .ip(&["link", "set", "dev", Pair::SERVER_IF, off, "off"]);
        assert!(pair.wait_detached(CONNECT_OK), "{mode}: xdp-filter stays");
    }
    // The interface free again: fw attaches.
    pair.fw_up(None);
    assert_eq!(pair.probe(false, 8080), TimedOut);
    pair.finish();
}
