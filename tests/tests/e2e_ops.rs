//! Tier 3, end to end: safe operations (issue 5). `fw apply --confirm` rolls back by itself
//! unless confirmed, also when the `fw apply` process is killed; `fw rollback` and `fw flush`;
//! the lockout guard against a simulated SSH session; `fw save` and a reboot-like restore with
//! the systemd unit's own command; an imported iptables-save file behaves like the seed
//! policy; `fw up` leaves another tool's XDP program alone.
//!
//! Root only. Every test makes its own namespaces, so they run in parallel.

use std::{
    io,
    os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd},
    os::unix::process::CommandExt as _,
    path::Path,
    process::{Child, Stdio},
    thread,
    time::{Duration, Instant},
};

use serde_json::Value;
use tests::netns::{
    CONNECT_DROP, CONNECT_OK, Connect, FW_TIMEOUT, NetNs, Output, Pair, Proc, TempDir, echoes,
    fw_bin, host_cmd, preflight, run_with_timeout,
};

use Connect::{Connected, Refused, TimedOut};

const FAMILIES: [bool; 2] = [false, true];
/// Bound for a rollback timer of a few seconds to have acted.
const ROLLBACK_WAIT: Duration = Duration::from_secs(20);

fn fam(v6: bool) -> &'static str {
    if v6 { "IPv6" } else { "IPv4" }
}

fn path_str(p: &Path) -> String {
    p.display().to_string()
}

/// Wait (bounded) until `done` holds; returns whether it did.
fn wait_until(timeout: Duration, mut done: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if done() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        thread::sleep(Duration::from_millis(50));
    }
}

/// Connect from the client to each port at once (drops cost CONNECT_DROP each, not in turn).
fn reach(pair: &Pair, v6: bool, ports: &[u16]) -> Vec<(u16, Connect)> {
    thread::scope(|s| {
        let handles: Vec<_> = ports
            .iter()
            .map(|&p| {
                s.spawn(move || {
                    let to = pair.server_addr(v6, p);
                    (p, pair.client.connect_tcp(to, None, CONNECT_DROP))
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("connect thread"))
            .collect()
    })
}

/// Whether the policy in force on the server veth came from a file named `name`.
fn source_is(pair: &Pair, name: &str) -> bool {
    pair.status().source().ends_with(name)
}

/// fw's rollback timers running in the namespace.
fn timers(ns: &NetNs) -> Vec<(i32, String)> {
    ns.processes()
        .into_iter()
        .filter(|(_, c)| c.contains("rollback-timer"))
        .collect()
}

/// The confirmation `fw apply --confirm` left pending, if any.
fn pending(pair: &Pair) -> Option<Value> {
    pair.state_file()
        .and_then(|s| s.get("pending").cloned())
        .filter(|p| !p.is_null())
}

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

// ---------------------------------------------------------------------------------------------
// Confirm or roll back

const POLICY_A: &str = "# e2e A\n[[allow]]\nports = [22, 80]\n";
const POLICY_B: &str = "# e2e B: A and 8080\n[[allow]]\nports = [22, 80, 8080]\n";

/// `fw apply B --confirm 3` opens 8080 at once; without `fw confirm`, A (8080 closed) is back
/// after the 3 s; with `fw confirm` in time, B stays after the deadline.
#[test]
fn apply_with_confirm_rolls_back_unless_confirmed() {
    preflight(&[]);
    let dir = TempDir::new("confirm");
    let (a, b) = (dir.write("a.toml", POLICY_A), dir.write("b.toml", POLICY_B));
    let pair = Pair::new("confirm");
    let _l = pair.listen(false, 8080);
    pair.fw_up(Some(&a));
    assert_eq!(pair.probe(false, 8080), TimedOut, "8080 under A");
    let apply = [
        "apply",
        &path_str(&b),
        "--confirm",
        "3",
        "--iface",
        Pair::SERVER_IF,
    ];

    // Not confirmed.
    let t0 = Instant::now();
    let out = pair.fw(&apply).check();
    assert!(out.stdout.contains("comes back in 3 s"), "{out}");
    assert_eq!(pair.connect(false, 8080), Connected, "8080 under B");
    assert!(pending(&pair).is_some(), "no pending confirmation recorded");
    assert!(
        wait_until(ROLLBACK_WAIT, || source_is(&pair, "a.toml")),
        "A did not come back within {ROLLBACK_WAIT:?} without fw confirm: {:#}",
        pair.status().0
    );
    let took = t0.elapsed();
    println!("rolled back {took:?} after fw apply --confirm 3 started");
    assert!(took >= Duration::from_secs(3), "rolled back after {took:?}");
    assert_eq!(pair.probe(false, 8080), TimedOut, "8080 after the rollback");
    assert!(pending(&pair).is_none(), "still pending after the rollback");
    assert!(
        wait_until(CONNECT_OK, || timers(&pair.server).is_empty()),
        "the rollback timer still runs: {:?}",
        timers(&pair.server)
    );

    // Confirmed in time.
    let t1 = Instant::now();
    pair.fw(&apply).check();
    assert_eq!(pair.connect(false, 8080), Connected, "8080 under B");
    let out = pair.fw(&["confirm", "--iface", Pair::SERVER_IF]).check();
    assert!(out.stdout.contains("confirmed"), "{out}");
    assert!(pending(&pair).is_none(), "still pending after fw confirm");
    // `fw confirm` ends the timer, which has nothing left to do.
    assert!(
        wait_until(CONNECT_OK, || timers(&pair.server).is_empty()),
        "the rollback timer still runs after fw confirm: {:?}",
        timers(&pair.server)
    );
    // Past the deadline, B is still in force.
    thread::sleep(Duration::from_secs(4).saturating_sub(t1.elapsed()));
    assert!(t1.elapsed() >= Duration::from_secs(3));
    assert!(source_is(&pair, "b.toml"), "{:#}", pair.status().0);
    assert_eq!(
        pair.connect(false, 8080),
        Connected,
        "8080 after the deadline"
    );
    pair.finish();
}

/// A pipe whose buffer is full: a process writing to it blocks.
fn full_pipe() -> (OwnedFd, OwnedFd) {
    let mut fds = [0; 2];
    // SAFETY: pipe2 fills two fds on success.
    let rc = unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC | libc::O_NONBLOCK) };
    assert_eq!(rc, 0, "pipe2: {}", io::Error::last_os_error());
    // SAFETY: fresh fds that nothing else owns.
    let (r, w) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    let chunk = [b'x'; 4096];
    for _ in 0..10_000 {
        // SAFETY: writing from a valid buffer to our own fd.
        let n = unsafe { libc::write(w.as_raw_fd(), chunk.as_ptr().cast(), chunk.len()) };
        if n < 0 {
            break;
        }
    }
    for _ in 0..10_000 {
        // SAFETY: as above.
        if unsafe { libc::write(w.as_raw_fd(), chunk.as_ptr().cast(), 1) } < 0 {
            break;
        }
    }
    // Blocking again, for the writer that inherits it.
    // SAFETY: fcntl on our own fd.
    unsafe {
        let fl = libc::fcntl(w.as_raw_fd(), libc::F_GETFL);
        libc::fcntl(w.as_raw_fd(), libc::F_SETFL, fl & !libc::O_NONBLOCK);
    }
    (r, w)
}

/// A child process killed (SIGKILL) and reaped on drop.
struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
        }
        let _ = self.0.wait();
    }
}

/// The rollback does not depend on the `fw apply` process: killed with SIGKILL at the worst
/// moment — its new policy in force, its output stuck (as on a dead SSH terminal) — the
/// previous policy still comes back.
#[test]
fn rollback_happens_although_fw_apply_is_killed_with_its_policy_in_force() {
    preflight(&[]);
    let dir = TempDir::new("killed");
    let (a, b) = (dir.write("a.toml", POLICY_A), dir.write("b.toml", POLICY_B));
    let pair = Pair::new("killed");
    let _l = pair.listen(false, 8080);
    pair.fw_up(Some(&a));

    let (stuck_r, stuck_w) = full_pipe();
    let mut cmd = pair.server.command(fw_bin());
    cmd.args([
        "apply",
        &path_str(&b),
        "--confirm",
        "4",
        "--iface",
        Pair::SERVER_IF,
    ])
    .stdin(Stdio::null())
    .stdout(Stdio::from(stuck_w))
    .stderr(Stdio::null());
    let mut apply = KillOnDrop(cmd.spawn().expect("start fw apply"));
    assert!(
        wait_until(FW_TIMEOUT, || pending(&pair).is_some()),
        "fw apply never put B in force"
    );
    // nsenter execs fw in place: this pid is fw's.
    apply.0.kill().expect("SIGKILL fw apply");
    let st = apply.0.wait().expect("reap fw apply");
    assert!(
        !st.success(),
        "fw apply ended by itself ({st}) before it was killed"
    );
    drop(stuck_r);
    assert!(source_is(&pair, "b.toml"), "{:#}", pair.status().0);
    assert_eq!(pair.connect(false, 8080), Connected, "8080 under B");
    assert!(
        wait_until(ROLLBACK_WAIT, || source_is(&pair, "a.toml")),
        "A did not come back within {ROLLBACK_WAIT:?} after fw apply was killed: {:#}\nrollback timers: {:?}",
        pair.status().0,
        timers(&pair.server)
    );
    assert_eq!(pair.probe(false, 8080), TimedOut, "8080 after the rollback");
    pair.finish();
}

/// `fw apply` run from a shell whose whole process group is killed (SIGKILL) right after fw
/// printed its first line, as when a terminal session dies: the timer is not part of that
/// group (it has its own session), so the previous policy still comes back.
#[test]
fn rollback_happens_although_the_shell_of_fw_apply_is_killed() {
    preflight(&["sh"]);
    let dir = TempDir::new("killed1");
    let (a, b) = (dir.write("a.toml", POLICY_A), dir.write("b.toml", POLICY_B));
    let pair = Pair::new("killed1");
    let _l = pair.listen(false, 8080);
    pair.fw_up(Some(&a));
    let script = format!(
        "'{}' apply '{}' --confirm 4 --iface {}; exec sleep 60",
        path_str(&fw_bin()),
        path_str(&b),
        Pair::SERVER_IF
    );
    let mut c = pair.server.command("sh");
    c.args(["-c", &script]).process_group(0);
    let mut shell = Proc::spawn(c);
    // The shell lives on (sleep) after fw apply, so this cannot miss the line.
    assert!(
        shell.wait_for_stdout("in force", FW_TIMEOUT),
        "{}",
        shell.describe()
    );
    assert!(shell.running(), "the shell ended: {}", shell.describe());
    // SAFETY: kill(2) on the process group this test created (its leader not yet reaped).
    let rc = unsafe { libc::kill(-shell.pid(), libc::SIGKILL) };
    assert_eq!(rc, 0, "kill the group: {}", io::Error::last_os_error());
    let out = shell.finish(CONNECT_OK);
    assert!(
        !out.timed_out() && !out.success(),
        "the shell was not killed: {out}"
    );
    assert!(source_is(&pair, "b.toml"), "{:#}", pair.status().0);
    assert_eq!(pair.connect(false, 8080), Connected, "8080 under B");
    assert!(
        wait_until(ROLLBACK_WAIT, || source_is(&pair, "a.toml")),
        "A did not come back within {ROLLBACK_WAIT:?} after the shell was killed: {:#}",
        pair.status().0
    );
    assert_eq!(pair.probe(false, 8080), TimedOut, "8080 after the rollback");
    pair.finish();
}

// ---------------------------------------------------------------------------------------------
// Rollback and flush

/// `fw rollback` puts the previous policy back at once; `fw flush` lets everything in while the
/// same program stays attached, and `fw rollback` undoes the flush.
#[test]
fn rollback_restores_now_and_flush_lets_everything_in_until_rolled_back() {
    preflight(&[]);
    const DISALLOWED: u16 = 9999;
    const NOBODY: u16 = 7777; // allowed by no policy, no listener
    let dir = TempDir::new("flush");
    let a = dir.write("a.toml", POLICY_A);
    let b = dir.write("b.toml", "# e2e B\n[[allow]]\nports = [22, 80, 9999]\n");
    let pair = Pair::new("flush");
    let _l = [pair.listen_both(80), pair.listen_both(DISALLOWED)];
    pair.fw_up(Some(&a));
    let ids = pair.link().expect("link");
    for v6 in FAMILIES {
        assert_eq!(pair.probe(v6, DISALLOWED), TimedOut, "{} under A", fam(v6));
    }

    pair.fw(&["apply", &path_str(&b), "--iface", Pair::SERVER_IF])
        .check();
    assert_eq!(pair.connect(false, DISALLOWED), Connected, "under B");
    let out = pair.fw(&["rollback", "--iface", Pair::SERVER_IF]).check();
    assert!(out.stdout.contains("a.toml"), "{out}");
    assert!(source_is(&pair, "a.toml"));
    assert_eq!(pair.probe(false, DISALLOWED), TimedOut, "after fw rollback");

    let s0 = pair.status();
    pair.fw(&["flush", "--iface", Pair::SERVER_IF]).check();
    let s1 = pair.status();
    assert!(s1.flushed(), "fw status does not say flushed: {:#}", s1.0);
    for v6 in FAMILIES {
        assert_eq!(
            pair.connect(v6, DISALLOWED),
            Connected,
            "{}: {DISALLOWED} while flushed",
            fam(v6)
        );
        // Nobody listens: the stack's RST comes back, so the SYN got in.
        assert_eq!(
            pair.probe(v6, NOBODY),
            Refused,
            "{}: {NOBODY} while flushed",
            fam(v6)
        );
    }
    assert_eq!(pair.link(), Some(ids), "fw flush replaced the program");
    let s2 = pair.status();
    assert!(
        s2.reason("flushed") >= s0.reason("flushed") + 4,
        "flushed counter: {:#}",
        s2.0
    );

    pair.fw(&["rollback", "--iface", Pair::SERVER_IF]).check();
    assert!(!pair.status().flushed(), "still flushed after fw rollback");
    for v6 in FAMILIES {
        assert_eq!(pair.probe(v6, DISALLOWED), TimedOut, "{} after", fam(v6));
        assert_eq!(pair.connect(v6, 80), Connected, "{} 80 after", fam(v6));
    }
    assert_eq!(pair.link(), Some(ids), "fw rollback replaced the program");
    pair.finish();
}

// ---------------------------------------------------------------------------------------------
// Lockout guard

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
    assert!(source_is(&pair, "ok.toml"));
    assert_eq!(pair.connect(false, 22), Connected, "SSH under ok.toml");

    // Without SSH_CONNECTION, the established session to port 22 in /proc/net/tcp counts.
    refused(
        &fw_ssh(&pair, &apply_bad, None),
        "fw apply bad.toml (session from /proc)",
    );
    assert!(source_is(&pair, "ok.toml"), "changed by a refused apply");

    // --force: applied; new SSH connections are dropped, the session itself lives on.
    let forced = ["apply", &bad_s, "--iface", Pair::SERVER_IF, "--force"];
    fw_ssh(&pair, &forced, None).check();
    assert!(source_is(&pair, "bad.toml"));
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
    assert!(source_is(&pair, "bad.toml"), "changed by a refused apply");
    pair.finish();
}

// ---------------------------------------------------------------------------------------------
// Save and restore

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
    assert!(source_is(&before, "custom.toml"));
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
        assert_eq!(pair.connect(v6, 8080), Connected, "{} 8080", fam(v6));
        assert_eq!(pair.probe(v6, 80), TimedOut, "{} 80", fam(v6));
        let out = pair.client.run(
            "ping",
            &["-c", "1", "-W", "2", &pair.server_ip(v6).to_string()],
            CONNECT_OK * 2,
        );
        assert!(
            out.success(),
            "{}: icmp_echo was not restored: {out}",
            fam(v6)
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

// ---------------------------------------------------------------------------------------------
// iptables import

/// The seed tutorial's rules as `iptables-save` writes them (/etc/sysconfig/iptables).
const SEED_IPTABLES_SAVE: &str = "\
# Generated by iptables-save v1.4.7
*filter
:INPUT DROP [0:0]
:FORWARD ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
-A INPUT -m state --state RELATED,ESTABLISHED -j ACCEPT
-A INPUT -p tcp -m tcp --tcp-flags FIN,SYN,RST,PSH,ACK,URG NONE -j DROP
-A INPUT -p tcp -m tcp ! --tcp-flags FIN,SYN,RST,ACK SYN -m state --state NEW -j DROP
-A INPUT -p tcp -m tcp --tcp-flags FIN,SYN,RST,PSH,ACK,URG FIN,SYN,RST,PSH,ACK,URG -j DROP
-A INPUT -i lo -j ACCEPT
-A INPUT -p tcp -m tcp --dport 80 -j ACCEPT
-A INPUT -p tcp -m tcp --dport 443 -j ACCEPT
-A INPUT -p tcp -m tcp --dport 25 -j ACCEPT
-A INPUT -p tcp -m tcp --dport 465 -j ACCEPT
-A INPUT -p tcp -m tcp --dport 110 -j ACCEPT
-A INPUT -p tcp -m tcp --dport 995 -j ACCEPT
-A INPUT -p tcp -m tcp --dport 143 -j ACCEPT
-A INPUT -p tcp -m tcp --dport 993 -j ACCEPT
-A INPUT -p tcp -m tcp --dport 22 -j ACCEPT
COMMIT
";

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
    let seed: Vec<_> = FAMILIES.map(|v6| reach(&pair, v6, &PORTS)).concat();
    pair.fw(&["down", "--iface", Pair::SERVER_IF]).check();
    assert!(pair.wait_detached(CONNECT_OK));
    pair.fw_up(Some(&imported));
    assert!(source_is(&pair, "imported.toml"));
    let from_iptables: Vec<_> = FAMILIES.map(|v6| reach(&pair, v6, &PORTS)).concat();

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

// ---------------------------------------------------------------------------------------------
// Another XDP program

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
