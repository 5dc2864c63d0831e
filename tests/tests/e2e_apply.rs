//! Tier 3, end to end: replacing the whole policy safely (issue 5). `fw apply --confirm` rolls
//! back by itself unless confirmed, also when the `fw apply` process or its shell is killed;
//! `fw rollback` puts the previous policy back at once, and `fw flush` lets everything in
//! until rolled back. Root only; every test makes its own namespaces (unique names), so they run in parallel.

use std::{
    io,
    os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd},
    os::unix::process::CommandExt as _,
    process::{Child, Stdio},
    time::{Duration, Instant},
};

use fw_lab::{
    CONNECT_OK, Connect, FAMILIES, FW_TIMEOUT, NetNs, Pair, Proc, TempDir, family, fw_bin,
    path_str, preflight, wait_until,
};

use Connect::{Connected, Refused, TimedOut};

/// Bound for a rollback timer of a few seconds to have acted.
const ROLLBACK_WAIT: Duration = Duration::from_secs(20);

/// fw's rollback timers running in the namespace.
fn timers(ns: &NetNs) -> Vec<(i32, String)> {
    ns.processes()
        .into_iter()
        .filter(|(_, c)| c.contains("rollback-timer"))
        .collect()
}

const POLICY_A: &str = "# e2e A\n[[allow]]\nports = [22, 80]\n";

const POLICY_B: &str = "# e2e B: A and 8080\n[[allow]]\nports = [22, 80, 8080]\n";

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
    assert!(pair.pending().is_some(), "no pending confirmation recorded");
    assert!(
        wait_until(ROLLBACK_WAIT, || pair.source_is("a.toml")),
        "A did not come back within {ROLLBACK_WAIT:?} without fw confirm: {:#}",
        pair.status().0
    );
    let took = t0.elapsed();
    println!("rolled back {took:?} after fw apply --confirm 3 started");
    assert!(took >= Duration::from_secs(3), "rolled back after {took:?}");
    assert_eq!(pair.probe(false, 8080), TimedOut, "8080 after the rollback");
    assert!(pair.pending().is_none(), "still pending after the rollback");
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
    assert!(pair.pending().is_none(), "still pending after fw confirm");
    // `fw confirm` ends the timer, which has nothing left to do.
    assert!(
        wait_until(CONNECT_OK, || timers(&pair.server).is_empty()),
        "the rollback timer still runs after fw confirm: {:?}",
        timers(&pair.server)
    );
    // Past the deadline, B is still in force.
    std::thread::sleep(Duration::from_secs(4).saturating_sub(t1.elapsed()));
    assert!(t1.elapsed() >= Duration::from_secs(3));
    assert!(pair.source_is("b.toml"), "{:#}", pair.status().0);
    assert_eq!(
        pair.connect(false, 8080),
        Connected,
        "8080 after the deadline"
    );
    pair.finish();
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
        wait_until(FW_TIMEOUT, || pair.pending().is_some()),
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
    assert!(pair.source_is("b.toml"), "{:#}", pair.status().0);
    assert_eq!(pair.connect(false, 8080), Connected, "8080 under B");
    assert!(
        wait_until(ROLLBACK_WAIT, || pair.source_is("a.toml")),
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
    assert!(pair.source_is("b.toml"), "{:#}", pair.status().0);
    assert_eq!(pair.connect(false, 8080), Connected, "8080 under B");
    assert!(
        wait_until(ROLLBACK_WAIT, || pair.source_is("a.toml")),
        "A did not come back within {ROLLBACK_WAIT:?} after the shell was killed: {:#}",
        pair.status().0
    );
    assert_eq!(pair.probe(false, 8080), TimedOut, "8080 after the rollback");
    pair.finish();
}

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
        assert_eq!(
            pair.probe(v6, DISALLOWED),
            TimedOut,
            "{} under A",
            family(v6)
        );
    }

    pair.fw(&["apply", &path_str(&b), "--iface", Pair::SERVER_IF])
        .check();
    assert_eq!(pair.connect(false, DISALLOWED), Connected, "under B");
    let out = pair.fw(&["rollback", "--iface", Pair::SERVER_IF]).check();
    assert!(out.stdout.contains("a.toml"), "{out}");
    assert!(pair.source_is("a.toml"));
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
            family(v6)
        );
        // Nobody listens: the stack's RST comes back, so the SYN got in.
        assert_eq!(
            pair.probe(v6, NOBODY),
            Refused,
            "{}: {NOBODY} while flushed",
            family(v6)
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
        assert_eq!(pair.probe(v6, DISALLOWED), TimedOut, "{} after", family(v6));
        assert_eq!(pair.connect(v6, 80), Connected, "{} 80 after", family(v6));
    }
    assert_eq!(pair.link(), Some(ids), "fw rollback replaced the program");
    pair.finish();
}
