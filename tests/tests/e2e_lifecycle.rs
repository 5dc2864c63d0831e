//! Tier 3, end to end: the filter's life cycle on a real veth — atomic replacement under
//! traffic, `fw run` in the foreground and what each way of ending it leaves behind.
//! Root only; namespaces are per test, so the tests run in parallel.

use std::{
    sync::atomic::{AtomicBool, Ordering},
    thread,
    time::{Duration, Instant},
};

use fw_lab::{CONNECT_OK, Connect, Pair, Proc, TempDir, fw_bin, parse_hping3, preflight};

use Connect::{Connected, TimedOut};

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

/// Start `fw run` on the server veth and wait (bounded) until it has attached.
fn start_run(pair: &Pair) -> Proc {
    let mut run = pair.server.spawn(
        fw_bin(),
        &["run", "--iface", Pair::SERVER_IF, "--interval", "1"],
    );
    assert!(
        run.wait_for_stdout("Ctrl-C detaches", Duration::from_secs(20)),
        "fw run did not attach: {}",
        run.describe()
    );
    assert!(
        pair.iface_pins().join("link").exists(),
        "fw run pinned no link"
    );
    run
}

#[test]
fn fw_run_killed_with_sigkill_leaves_the_filter_running() {
    preflight(&[]);
    let pair = Pair::new("kill");
    let _l80 = pair.listen(false, 80);
    let _l8080 = pair.listen(false, 8080);
    let mut run = start_run(&pair);
    let ids = pair.link().expect("link");
    assert_eq!(pair.connect(false, 80), Connected);
    assert_eq!(pair.probe(false, 8080), TimedOut);

    run.signal(libc::SIGKILL);
    let out = run.finish(Duration::from_secs(10));
    assert!(
        out.status.is_some_and(|s| !s.success()),
        "fw run was not killed: {out}"
    );
    assert_eq!(
        pair.link(),
        Some(ids),
        "the pinned link went away with fw run"
    );
    assert!(
        pair.xdp_on_iface().is_some(),
        "no XDP program on the interface"
    );
    assert_eq!(pair.probe(false, 8080), TimedOut, "8080 after kill -9");
    assert_eq!(pair.connect(false, 80), Connected, "80 after kill -9");
    pair.fw(&["status", "--iface", Pair::SERVER_IF]).check();

    pair.fw(&["down", "--iface", Pair::SERVER_IF]).check();
    assert!(!pair.iface_pins().exists(), "pins left after fw down");
    assert!(
        pair.wait_detached(CONNECT_OK),
        "still attached after fw down"
    );
    assert_eq!(pair.connect(false, 8080), Connected, "8080 after fw down");
    pair.finish();
}

#[test]
fn fw_run_detaches_cleanly_on_sigint_and_sigterm() {
    preflight(&[]);
    let pair = Pair::new("sig");
    let _l8080 = pair.listen(false, 8080);
    for (name, sig) in [("SIGINT", libc::SIGINT), ("SIGTERM", libc::SIGTERM)] {
        let mut run = start_run(&pair);
        assert_eq!(
            pair.probe(false, 8080),
            TimedOut,
            "{name}: 8080 under fw run"
        );
        run.signal(sig);
        let out = run.finish(Duration::from_secs(15));
        assert!(out.success(), "{name}: fw run did not exit cleanly: {out}");
        assert!(out.stdout.contains("detached"), "{name}: {out}");
        assert!(!pair.iface_pins().exists(), "{name}: pins left");
        assert!(
            !pair.server.state_dir().join(Pair::SERVER_IF).exists(),
            "{name}: state left"
        );
        assert!(pair.wait_detached(CONNECT_OK), "{name}: still attached");
        assert_eq!(
            pair.connect(false, 8080),
            Connected,
            "{name}: 8080 after exit"
        );
    }
    pair.finish();
}
