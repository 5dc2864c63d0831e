//! Tier 3, end to end: `fw save`, and a reboot-like restore with the systemd unit's own
//! commands (`fw install --print`). Root only; every test makes its own namespaces (unique names), so they run in parallel.

use std::path::Path;

use fw_lab::{
    CONNECT_OK, Connect, FAMILIES, FW_TIMEOUT, NetNs, Output, Pair, TempDir, family, fw_bin,
    host_cmd, path_str, preflight, run_with_timeout,
};

use Connect::{Connected, TimedOut};

const POLICY_A: &str = "# e2e A\n[[allow]]\nports = [22, 80]\n";

/// The unit's ExecStart/ExecReload commands (`fw install --print`), as argument lists with the
/// installed binary replaced by the one under test and /etc/fw/fw.toml by `file`. The unit has
/// no ExecStop: stopping or restarting it must not open a window (`fw down` removes the filter).
fn unit_commands(file: &Path) -> (Vec<String>, Vec<String>) {
    let out = run_with_timeout(
        host_cmd(&path_str(&fw_bin()), ["install", "--print"]),
        FW_TIMEOUT,
    )
    .check();
    let line = |key: &str| -> Vec<String> {
        let l = out
            .stdout
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .unwrap_or_else(|| panic!("no {key} in the unit: {out}"));
        let mut w: Vec<String> = l.split_whitespace().map(str::to_string).collect();
        assert!(w[0].ends_with("/fw"), "{key} does not run fw: {l}");
        w[0] = path_str(&fw_bin());
        for a in &mut w {
            if a == "/etc/fw/fw.toml" {
                *a = path_str(file);
            }
        }
        w
    };
    assert!(
        !out.stdout.lines().any(|l| l.starts_with("ExecStop")),
        "the unit detaches on stop: {out}"
    );
    (line("ExecStart="), line("ExecReload="))
}

fn run_in(ns: &NetNs, argv: &[String]) -> Output {
    let mut c = ns.command(&argv[0]);
    c.args(&argv[1..]);
    run_with_timeout(c, FW_TIMEOUT)
}

/// `fw save` writes the running policy (refusing while an `apply --confirm` is pending); on a
/// fresh pair of namespaces (a rebooted host, same interface name) the unit's ExecStart puts
/// the same policy in force and ExecReload puts it back over a live edit. A broken saved file
/// makes ExecStart fail with file:line and attach nothing.
#[test]
fn save_then_reboot_like_restore_with_the_units_commands() {
    preflight(&["ping"]);
    let dir = TempDir::new("save");
    let custom = dir.write(
        "custom.toml",
        "# e2e custom\n[options]\nicmp_echo = true\n\n[[allow]]\nports = [22, 8080]\n",
    );
    let other = dir.write("other.toml", POLICY_A);
    let saved = dir.path().join("saved.toml");
    let saved_s = path_str(&saved);
    let (start, reload) = unit_commands(&saved);
    println!("ExecStart: {start:?}\nExecReload: {reload:?}");

    let before = Pair::new("save");
    before.fw_up(Some(&custom));
    before
        .fw(&[
            "apply",
            &path_str(&other),
            "--confirm",
            "60",
            "--iface",
            Pair::SERVER_IF,
        ])
        .check();
    let out = before.fw(&["save", &saved_s]);
    assert!(
        !out.success() && out.stderr.contains("fw confirm"),
        "fw save while a confirmation is pending: {out}"
    );
    assert!(!saved.exists(), "a refused fw save wrote the file");
    before.fw(&["rollback", "--iface", Pair::SERVER_IF]).check();
    assert!(before.source_is("custom.toml"));
    let out = before.fw(&["save", &saved_s]).check();
    assert!(out.stdout.contains(&saved_s), "{out}");
    let text = std::fs::read_to_string(&saved).expect("saved file");
    assert!(
        text.contains(&format!("interfaces = [\"{}\"]", Pair::SERVER_IF)),
        "{text}"
    );
    before.fw(&["down", "--iface", Pair::SERVER_IF]).check();
    before.finish();

    // The "rebooted" host: new namespaces, nothing attached, everything reachable.
    let pair = Pair::new("boot");
    let _l = [pair.listen_both(8080), pair.listen_both(80)];
    assert_eq!(pair.connect(false, 80), Connected, "80 before the restore");
    let out = run_in(&pair.server, &start);
    assert!(out.success(), "ExecStart failed: {out}");
    let s = pair.status();
    assert_eq!(s.source(), saved_s, "{:#}", s.0);
    assert_eq!(s.0["options"]["icmp_echo"], true, "{:#}", s.0);
    for v6 in FAMILIES {
        assert_eq!(pair.connect(v6, 8080), Connected, "{} 8080", family(v6));
        assert_eq!(pair.probe(v6, 80), TimedOut, "{} 80", family(v6));
        let out = pair.client.run(
            "ping",
            &["-c", "1", "-W", "2", &pair.server_ip(v6).to_string()],
            CONNECT_OK * 2,
        );
        assert!(
            out.success(),
            "{}: icmp_echo was not restored: {out}",
            family(v6)
        );
    }
    pair.fw(&["allow", "80/tcp", "--iface", Pair::SERVER_IF])
        .check();
    assert_eq!(pair.connect(false, 80), Connected, "80 after fw allow");
    run_in(&pair.server, &reload).check();
    assert_eq!(pair.probe(false, 80), TimedOut, "80 after ExecReload");
    assert_eq!(
        pair.connect(false, 8080),
        Connected,
        "8080 after ExecReload"
    );
    pair.fw(&["down", "--iface", Pair::SERVER_IF]).check();
    assert!(pair.wait_detached(CONNECT_OK), "fw down left the filter");
    assert_eq!(pair.connect(false, 80), Connected, "80 after fw down");

    // A broken saved file: ExecStart fails, names the file and line, attaches nothing.
    let bad = dir.write(
        "broken.toml",
        "interfaces = [\"fwsrv\"]\n\n[[allow]]\nports = [22, 70000]\n",
    );
    let (bad_start, _) = unit_commands(&bad);
    let out = run_in(&pair.server, &bad_start);
    assert!(
        !out.success(),
        "ExecStart with a broken file succeeded: {out}"
    );
    let want = format!("{}:4:", path_str(&bad));
    assert!(out.stderr.contains(&want), "no {want} in: {out}");
    assert!(!pair.iface_pins().exists(), "a failed restore left pins");
    assert_eq!(pair.xdp_on_iface(), None, "a failed restore attached");
    assert_eq!(
        pair.connect(false, 80),
        Connected,
        "80 after a failed restore"
    );
    pair.finish();
}
