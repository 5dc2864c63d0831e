//! Tier 3, end to end: `fw run` in the foreground, and what each way of ending it leaves behind
//! (SIGKILL: the filter keeps running; SIGINT and SIGTERM: it detaches cleanly). Root only; every test makes its own namespaces (unique names), so they run in parallel.

use std::time::Duration;

use fw_lab::{CONNECT_OK, Connect, Pair, Proc, fw_bin, preflight};

use Connect::{Connected, TimedOut};

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
