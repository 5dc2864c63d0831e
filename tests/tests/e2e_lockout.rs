//! Tier 3, end to end: the lockout guard, against a simulated SSH session: a policy that would
//! cut the session is refused (unless `--force`), whichever command brings it. Root only; every test makes its own namespaces (unique names), so they run in parallel.

use fw_lab::{
    CONNECT_OK, Connect, FW_TIMEOUT, Output, Pair, TempDir, echoes, fw_bin, path_str, preflight,
    run_with_timeout, wait_until,
};

use Connect::{Connected, TimedOut};

/// `fw ARGS` in the server namespace with `SSH_CONNECTION` set to `ssh` (or removed).
fn fw_ssh(pair: &Pair, args: &[&str], ssh: Option<&str>) -> Output {
    let mut c = pair.server.command(fw_bin());
    c.args(args);
    match ssh {
        Some(v) => c.env("SSH_CONNECTION", v),
        None => c.env_remove("SSH_CONNECTION"),
    };
    run_with_timeout(c, FW_TIMEOUT)
}

/// An SSH-like session from the client to port 22 of the protected host. `fw up`, `fw apply`
/// and `fw deny` refuse a policy that would drop new SSH connections from the client's address
/// (naming the address, changing nothing), whether the session is known from `SSH_CONNECTION`
/// or found in /proc/net/tcp; a policy admitting the client's network is accepted; `--force`
/// overrides (and then new SSH connections are indeed dropped, while the session lives on).
#[test]
fn lockout_guard_refuses_policies_that_would_cut_the_ssh_session() {
    preflight(&[]);
    let pair = Pair::new("guard");
    let client = pair.client_ip(false).to_string();
    let net = format!("10.250.{}.0/24", pair.net);
    let dir = TempDir::new("guard");
    let bad = dir.write(
        "bad.toml",
        "# SSH only from elsewhere\n[[allow]]\nports = [22]\nfrom = [\"192.0.2.0/24\"]\n\n[[allow]]\nports = [80]\n",
    );
    let ok = dir.write(
        "ok.toml",
        &format!("# SSH from the admin's network\n[[allow]]\nports = [22]\nfrom = [\"{net}\"]\n"),
    );
    let no_ssh = dir.write("nossh.toml", "# no SSH at all\n[[allow]]\nports = [80]\n");
    let (bad_s, ok_s, no_ssh_s) = (path_str(&bad), path_str(&ok), path_str(&no_ssh));
    let sshd = pair.server.echo_tcp(pair.server_addr(false, 22));
    let mut session = pair.client.stream(pair.server_addr(false, 22), None);
    assert!(echoes(&mut session, b"SSH-2.0-e2e\r\n", CONNECT_OK));
    let ssh_env = format!(
        "{client} {} {} 22",
        session.local_addr().expect("addr").port(),
        pair.server_ip(false)
    );
    let ssh = Some(ssh_env.as_str());
    let refused = |out: &Output, what: &str| {
        assert!(!out.success(), "{what} was accepted: {out}");
        assert!(
            out.stderr.contains("refusing") && out.stderr.contains(&client),
            "{what}: the refusal does not name {client}: {out}"
        );
    };

    // Nothing attached yet: refused, nothing attached.
    let up_bad = ["up", "--iface", Pair::SERVER_IF, "--policy", &bad_s];
    refused(&fw_ssh(&pair, &up_bad, ssh), "fw up bad.toml (first)");
    assert!(!pair.iface_pins().exists(), "a refused fw up left pins");
    assert_eq!(pair.xdp_on_iface(), None, "a refused fw up attached");

    fw_ssh(&pair, &["up", "--iface", Pair::SERVER_IF], ssh).check();
    let ids = pair.link().expect("link");
    let s0 = pair.status();
    let unchanged = |what: &str| {
        let s = pair.status();
        assert_eq!(pair.link(), Some(ids), "{what}: the program changed");
        assert_eq!(s.generation(), s0.generation(), "{what}: generation");
        assert_eq!(s.source(), s0.source(), "{what}: policy source");
        assert_eq!(
            s.rules_without_counters(),
            s0.rules_without_counters(),
            "{what}: rules"
        );
    };
    let apply_bad = ["apply", &bad_s, "--iface", Pair::SERVER_IF];
    refused(&fw_ssh(&pair, &up_bad, ssh), "fw up bad.toml");
    unchanged("fw up bad.toml");
    refused(&fw_ssh(&pair, &apply_bad, ssh), "fw apply bad.toml");
    unchanged("fw apply bad.toml");
    refused(
        &fw_ssh(&pair, &["deny", "22", "--iface", Pair::SERVER_IF], ssh),
        "fw deny 22",
    );
    unchanged("fw deny 22");
    assert_eq!(pair.connect(false, 22), Connected, "a new SSH connection");

    // The client's network may log in: accepted.
    fw_ssh(&pair, &["apply", &ok_s, "--iface", Pair::SERVER_IF], ssh).check();
    assert!(pair.source_is("ok.toml"));
    assert_eq!(pair.connect(false, 22), Connected, "SSH under ok.toml");

    // Without SSH_CONNECTION, the established session to port 22 in /proc/net/tcp counts.
    refused(
        &fw_ssh(&pair, &apply_bad, None),
        "fw apply bad.toml (session from /proc)",
    );
    assert!(pair.source_is("ok.toml"), "changed by a refused apply");

    // --force: applied; new SSH connections are dropped, the session itself lives on.
    let forced = ["apply", &bad_s, "--iface", Pair::SERVER_IF, "--force"];
    fw_ssh(&pair, &forced, None).check();
    assert!(pair.source_is("bad.toml"));
    assert_eq!(pair.probe(false, 22), TimedOut, "new SSH under bad.toml");
    assert!(
        echoes(&mut session, b"still here\n", CONNECT_OK),
        "the session was cut"
    );

    // The session ends: with no session to protect, only "no SSH rule at all" is refused.
    drop(session);
    drop(sshd);
    let established_22 = || {
        let out = pair.server.run("cat", &["/proc/net/tcp"], CONNECT_OK);
        out.stdout.lines().skip(1).any(|l| {
            l.split_whitespace()
                .nth(1)
                .is_some_and(|a| a.ends_with(":0016"))
                && l.split_whitespace().nth(3) == Some("01")
        })
    };
    assert!(
        wait_until(CONNECT_OK, || !established_22()),
        "the session to 22 stays established"
    );
    fw_ssh(&pair, &["apply", &ok_s, "--iface", Pair::SERVER_IF], None).check();
    fw_ssh(&pair, &apply_bad, None).check();
    let out = fw_ssh(
        &pair,
        &["apply", &no_ssh_s, "--iface", Pair::SERVER_IF],
        None,
    );
    assert!(
        !out.success() && out.stderr.contains("from nowhere"),
        "a policy without SSH was accepted: {out}"
    );
    assert!(pair.source_is("bad.toml"), "changed by a refused apply");
    pair.finish();
}
