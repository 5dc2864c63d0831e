//! End-to-end: sequences of ordinary fw commands, as an operator types them (issue 9). Each
//! test is one sequence that left the host open or the operator locked out before fw kept a
//! policy history with write-ahead state, healed recreated interfaces and refused a hidden
//! bpffs.

use std::{
    path::Path,
    thread,
    time::{Duration, Instant},
};

use fw_lab::{
    CMD_TIMEOUT, Connect::*, FW_TIMEOUT, Output, Pair, TempDir, fw_bin, preflight, run_with_timeout,
};
use serde_json::Value;

const SEED_OPEN: u16 = 80;
const A_PORT: u16 = 1111;
const B_PORT: u16 = 2222;

fn policy(port: u16) -> String {
    format!("[[allow]]\nports = [22, {port}]\n")
}

fn path_str(p: &Path) -> String {
    p.display().to_string()
}

/// `fw status --json` on the server veth, whatever its exit status (3 = degraded).
fn status(pair: &Pair) -> (Output, Value) {
    let out = pair.fw(&["status", "--json", "--iface", Pair::SERVER_IF]);
    let v: Value = serde_json::from_str(&out.stdout).unwrap_or(Value::Null);
    let one = v.get(0).cloned().unwrap_or(Value::Null);
    (out, one)
}

fn source(pair: &Pair) -> String {
    status(pair).1["policy_source"]
        .as_str()
        .unwrap_or("")
        .to_string()
}

fn problem_codes(v: &Value) -> Vec<String> {
    v["problems"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|p| p["code"].as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

fn wait_until(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if f() {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        thread::sleep(Duration::from_millis(100));
    }
}

/// `fw apply A --confirm 40; fw apply B --confirm 3`: after 3 s the timer restores the last
/// confirmed policy (the seed), not A, which was never confirmed.
#[test]
fn two_confirm_applies_in_a_row_roll_back_to_the_last_confirmed_policy() {
    preflight(&[]);
    let dir = TempDir::new("twice");
    let a = dir.write("a.toml", &policy(A_PORT));
    let b = dir.write("b.toml", &policy(B_PORT));
    let pair = Pair::new("twice");
    let _l = [
        pair.listen(false, SEED_OPEN),
        pair.listen(false, A_PORT),
        pair.listen(false, B_PORT),
    ];
    pair.fw_up(None);
    let iface = Pair::SERVER_IF;
    pair.fw(&["apply", &path_str(&a), "--confirm", "40", "-i", iface])
        .check();
    assert_eq!(pair.connect(false, A_PORT), Connected, "A in force");
    let out = pair
        .fw(&["apply", &path_str(&b), "--confirm", "3", "-i", iface])
        .check();
    assert!(out.stdout.contains("embedded seed policy"), "{out}");
    assert_eq!(pair.connect(false, B_PORT), Connected, "B in force");
    assert!(
        wait_until(Duration::from_secs(20), || source(&pair)
            == "embedded seed policy"),
        "the seed policy did not come back: {}",
        status(&pair).0
    );
    assert_eq!(pair.connect(false, SEED_OPEN), Connected, "seed port");
    assert_eq!(
        pair.probe(false, A_PORT),
        TimedOut,
        "A's port after the rollback"
    );
    assert_eq!(
        pair.probe(false, B_PORT),
        TimedOut,
        "B's port after the rollback"
    );
    let out = pair.fw(&["confirm", "-i", iface]).check();
    assert!(out.stdout.contains("nothing to confirm"), "{out}");
    // A's timer (40 s) was superseded: it must not bring A back later.
    let (_, v) = status(&pair);
    assert!(v["pending"].is_null(), "{v:#}");
    pair.finish();
}

/// `fw flush; fw rollback; fw rollback` ends with the policy enforced, not flushed; a
/// rollback with nothing to undo says so and exits 0.
#[test]
fn rollback_after_flush_is_idempotent_and_never_ends_flushed() {
    preflight(&[]);
    let pair = Pair::new("flushrb");
    let _l = pair.listen(false, 7777);
    pair.fw_up(None);
    let iface = Pair::SERVER_IF;
    assert_eq!(pair.probe(false, 7777), TimedOut, "under the seed");
    pair.fw(&["flush", "-i", iface]).check();
    assert_eq!(pair.connect(false, 7777), Connected, "flushed");
    let out = pair.fw(&["rollback", "-i", iface]).check();
    assert!(out.stdout.contains("flush ends"), "{out}");
    let out = pair.fw(&["rollback", "-i", iface]).check();
    assert!(out.stdout.contains("nothing to roll back"), "{out}");
    let (_, v) = status(&pair);
    assert_eq!(v["flushed"], false, "{v:#}");
    assert_eq!(pair.probe(false, 7777), TimedOut, "after two rollbacks");
    // A second flush is a no-op, not a toggle.
    pair.fw(&["flush", "-i", iface]).check();
    let out = pair.fw(&["flush", "-i", iface]).check();
    assert!(out.stdout.contains("already flushed"), "{out}");
    assert_eq!(pair.connect(false, 7777), Connected, "still flushed");
    pair.finish();
}

/// `fw up` on a running filter keeps its policy, live edits and counters (replacing the policy
/// takes `--policy` or `--default`), and says so.
#[test]
fn fw_up_again_keeps_the_running_policy_its_edits_and_counters() {
    preflight(&[]);
    let pair = Pair::new("upkeep");
    let _l = [pair.listen(false, 8080), pair.listen(false, SEED_OPEN)];
    pair.fw_up(None);
    let iface = Pair::SERVER_IF;
    pair.fw(&["allow", "8080/tcp", "-i", iface]).check();
    assert_eq!(pair.connect(false, 8080), Connected, "8080 allowed live");
    let before = pair.status().0["rules"].clone();
    let out = pair.fw(&["up", "-i", iface]).check();
    assert!(out.stdout.contains("kept the running policy"), "{out}");
    assert_eq!(pair.connect(false, 8080), Connected, "8080 after fw up");
    let after = pair.status().0["rules"].clone();
    let count = |rules: &Value, port: u64| -> u64 {
        rules
            .as_array()
            .and_then(|a| a.iter().find(|r| r["ports"] == port))
            .and_then(|r| r["packets"].as_u64())
            .unwrap_or(0)
    };
    assert!(count(&before, 8080) > 0, "{before:#}");
    assert!(
        count(&after, 8080) > count(&before, 8080),
        "counters reset by fw up: before {before:#}, after {after:#}"
    );
    // Replacing needs --default (or --policy), and prints what changes.
    let out = pair.fw(&["up", "-i", iface, "--default"]).check();
    assert!(out.stdout.contains("- 8080/tcp from anywhere"), "{out}");
    assert_eq!(pair.probe(false, 8080), TimedOut, "8080 after --default");
    pair.finish();
}

/// The interface is deleted and recreated under a running filter: `fw status` says so and exits
/// 3, `fw allow` refuses instead of reporting success, and `fw up` attaches the running policy
/// (with its live edits) to the new interface.
#[test]
fn a_recreated_interface_is_reported_refused_for_edits_and_healed_by_up() {
    preflight(&[]);
    let pair = Pair::new("recreate");
    pair.fw_up(None);
    let iface = Pair::SERVER_IF;
    pair.fw(&["allow", "8080/tcp", "--comment", "live edit", "-i", iface])
        .check();
    // Recreate the veth pair with the same names and addresses.
    pair.server.ip(&["link", "del", iface]);
    pair.server.ip(&[
        "link",
        "add",
        iface,
        "type",
        "veth",
        "peer",
        "name",
        Pair::CLIENT_IF,
        "netns",
        pair.client.name(),
    ]);
    for (ns, ifname, host) in [(&pair.server, iface, 1), (&pair.client, Pair::CLIENT_IF, 2)] {
        ns.ip(&[
            "addr",
            "add",
            &format!("{}/24", pair.v4(host)),
            "dev",
            ifname,
        ]);
        ns.ip(&["link", "set", ifname, "up"]);
    }
    let _l = [pair.listen(false, 8080), pair.listen(false, 7777)];
    let (out, v) = status(&pair);
    assert_eq!(out.status.and_then(|s| s.code()), Some(3), "{out}");
    let codes = problem_codes(&v);
    assert!(
        codes.iter().any(|c| c == "xdp-severed" || c == "xdp-moved"),
        "{codes:?}"
    );
    assert_eq!(pair.connect(false, 7777), Connected, "unfiltered meanwhile");
    let out = pair.fw(&["allow", "9090", "-i", iface]);
    assert_eq!(
        out.status.and_then(|s| s.code()),
        Some(1),
        "fw allow on a dead link: {out}"
    );
    assert!(out.stderr.contains("fw up --iface"), "{out}");
    let out = pair.fw(&["up", "-i", iface]).check();
    assert!(out.stdout.contains("attached again"), "{out}");
    let (out, v) = status(&pair);
    assert!(out.success(), "{out}");
    assert!(problem_codes(&v).is_empty(), "{v:#}");
    assert_eq!(
        pair.connect(false, 8080),
        Connected,
        "the live edit survived"
    );
    assert_eq!(pair.probe(false, 7777), TimedOut, "filtered again");
    pair.finish();
}

/// `ip netns exec NS fw …` hides the host's bpffs: fw refuses, names the fix, and touches
/// nothing — the filter and its state stay.
#[test]
fn ip_netns_exec_is_refused_and_the_running_filter_is_left_alone() {
    preflight(&["ip"]);
    let pair = Pair::new("nsexec");
    pair.fw_up(None);
    for args in [
        &["up", "-i", Pair::SERVER_IF][..],
        &["down", "-i", Pair::SERVER_IF],
        &["status"],
    ] {
        let mut c = std::process::Command::new("ip");
        c.args(["netns", "exec", pair.server.name()])
            .arg(fw_bin())
            .args(args);
        let out = run_with_timeout(c, FW_TIMEOUT);
        assert_eq!(
            out.status.and_then(|s| s.code()),
            Some(1),
            "{args:?}: {out}"
        );
        assert!(out.stderr.contains("nsenter --net="), "{args:?}: {out}");
    }
    assert!(
        pair.state_file().is_some(),
        "the state file of the running filter was deleted"
    );
    let (out, v) = status(&pair);
    assert!(out.success() && problem_codes(&v).is_empty(), "{out}");
    pair.finish();
}

/// fw killed between the flip of the policy generation and the state commit (strace injects
/// SIGKILL at the second state write): the next command finds the change in force and records
/// it, `fw status` names the policy the kernel actually runs, and the timer still rolls back.
/// A failure to write the state before the flip (ENOSPC injected) changes nothing.
#[test]
fn a_crash_or_a_full_disk_around_the_flip_leaves_no_unrecorded_policy() {
    preflight(&["strace"]);
    let dir = TempDir::new("crash");
    let b = dir.write("b.toml", &policy(B_PORT));
    let pair = Pair::new("crash");
    let _l = pair.listen(false, B_PORT);
    pair.fw_up(None);
    let strace = |inject: &str| {
        let mut c = pair.server.command("strace");
        c.args(["-qq", "-o", "/dev/null", "-e", "trace=rename", "-e", inject])
            .arg(fw_bin())
            .args([
                "apply",
                &path_str(&b),
                "--confirm",
                "4",
                "-i",
                Pair::SERVER_IF,
            ]);
        run_with_timeout(c, FW_TIMEOUT)
    };
    // The write-ahead record fails: nothing changes.
    let out = strace("inject=rename:error=ENOSPC:when=1");
    assert_eq!(out.status.and_then(|s| s.code()), Some(1), "{out}");
    assert!(out.stderr.contains("No space left"), "{out}");
    assert_eq!(source(&pair), "embedded seed policy");
    assert_eq!(
        pair.probe(false, B_PORT),
        TimedOut,
        "B must not be in force"
    );
    // Killed after the flip: B is in force; status says so.
    let t0 = Instant::now();
    let out = strace("inject=rename:signal=SIGKILL:when=2");
    assert!(!out.success(), "{out}");
    assert_eq!(pair.connect(false, B_PORT), Connected, "B in force");
    assert!(source(&pair).ends_with("b.toml"), "{}", status(&pair).0);
    // The timer, started before the flip, brings the seed back at the deadline.
    assert!(
        wait_until(Duration::from_secs(20), || source(&pair)
            == "embedded seed policy"),
        "no rollback after the crash: {}",
        status(&pair).0
    );
    assert!(t0.elapsed() >= Duration::from_secs(3));
    assert_eq!(pair.probe(false, B_PORT), TimedOut, "after the rollback");
    let (out, v) = status(&pair);
    assert!(out.success() && problem_codes(&v).is_empty(), "{out}");
    pair.finish();
}

/// Silent degradation is reported: a removed egress link pin (replies to this host's own
/// connections stop) and a killed rollback timer; past the deadline without a timer, the next
/// fw command rolls back.
#[test]
fn a_missing_egress_recorder_and_a_dead_timer_are_reported_and_repaired() {
    preflight(&[]);
    let dir = TempDir::new("degraded");
    let b = dir.write("b.toml", &policy(B_PORT));
    let pair = Pair::new("degraded");
    let _l = pair.listen(false, B_PORT);
    pair.fw_up(None);
    let iface = Pair::SERVER_IF;
    std::fs::remove_file(pair.iface_pins().join("tc_link")).expect("remove tc_link");
    let (out, v) = status(&pair);
    assert_eq!(out.status.and_then(|s| s.code()), Some(3), "{out}");
    assert!(
        problem_codes(&v).contains(&"egress-missing".to_string()),
        "{v:#}"
    );
    pair.fw(&["up", "-i", iface]).check();
    let (out, _) = status(&pair);
    assert!(out.success(), "egress not re-attached by fw up: {out}");

    pair.fw(&["apply", &path_str(&b), "--confirm", "3", "-i", iface])
        .check();
    let timers: Vec<i32> = pair
        .server
        .processes()
        .into_iter()
        .filter(|(_, c)| c.contains("rollback-timer"))
        .map(|(p, _)| p)
        .collect();
    assert_eq!(timers.len(), 1, "{timers:?}");
    // SAFETY: a signal to the timer process this test's fw started.
    unsafe { libc::kill(timers[0], libc::SIGKILL) };
    assert!(
        wait_until(CMD_TIMEOUT, || problem_codes(&status(&pair).1)
            .contains(&"timer-gone".to_string())),
        "{}",
        status(&pair).0
    );
    assert!(
        wait_until(Duration::from_secs(15), || problem_codes(&status(&pair).1)
            .contains(&"confirm-overdue".to_string())),
        "{}",
        status(&pair).0
    );
    let (out, _) = status(&pair);
    assert_eq!(out.status.and_then(|s| s.code()), Some(3), "{out}");
    // Any command on the interface keeps the promise of --confirm.
    pair.fw(&["allow", "9999", "-i", iface]).check();
    assert_eq!(source(&pair), "embedded seed policy");
    assert_eq!(pair.probe(false, B_PORT), TimedOut, "B rolled back");
    pair.finish();
}

/// Exit codes an automation can rely on: `fw down` twice is 0 both times; `fw deny` of
/// something not allowed is 0; a usage error is 2; `fw status` of an interface fw is not on
/// is 3.
#[test]
fn exit_codes_are_idempotent_and_documented() {
    preflight(&[]);
    let pair = Pair::new("exits");
    pair.fw_up(None);
    let iface = Pair::SERVER_IF;
    let out = pair.fw(&["deny", "4444", "-i", iface]).check();
    assert!(out.stdout.contains("nothing to deny"), "{out}");
    pair.fw(&["down", "-i", iface]).check();
    let out = pair.fw(&["down", "-i", iface]).check();
    assert!(out.stdout.contains("nothing to do"), "{out}");
    let out = pair.fw(&["status", "-i", iface]);
    assert_eq!(out.status.and_then(|s| s.code()), Some(3), "{out}");
    let out = pair.fw(&["allow", "--bogus"]);
    assert_eq!(out.status.and_then(|s| s.code()), Some(2), "{out}");
    let out = pair.fw(&["policy", "check", "/nonexistent/p.toml"]);
    assert_eq!(out.status.and_then(|s| s.code()), Some(1), "{out}");
    assert_eq!(
        out.stderr.matches("No such file or directory").count(),
        1,
        "the OS error is printed once: {out}"
    );
    pair.finish();
}

/// Live edits say when the saved policy (what the boot unit restores) no longer matches, and
/// `fw save -` prints the running policy instead of writing a file named `-`.
#[test]
fn live_edits_say_the_saved_policy_differs_and_save_dash_prints() {
    preflight(&[]);
    let dir = TempDir::new("saved");
    let saved = dir.path().join("fw.toml");
    let pair = Pair::new("saved");
    pair.fw_up(None);
    let iface = Pair::SERVER_IF;
    let fw = |args: &[&str]| {
        let mut c = pair.server.command(fw_bin());
        c.args(args).env("FW_POLICY_FILE", &saved);
        run_with_timeout(c, FW_TIMEOUT)
    };
    let out = fw(&["save"]).check();
    assert!(out.stdout.contains(&path_str(&saved)), "{out}");
    let out = fw(&["allow", "8080", "-i", iface]).check();
    assert!(
        out.stdout.contains("differs from the running policy"),
        "{out}"
    );
    let out = fw(&["status", "-i", iface]).check();
    assert!(out.stdout.contains("fw save"), "{out}");
    let out = fw(&["save", "-"]).check();
    assert!(out.stdout.contains("8080"), "{out}");
    assert!(!pair.server.path().join("-").exists() && !Path::new("-").exists());
    fw(&["save"]).check();
    let out = fw(&["allow", "8081", "-i", iface]).check();
    assert!(out.stdout.contains("differs"), "{out}");
    fw(&["save"]).check();
    let out = fw(&["deny", "8081", "-i", iface]).check();
    assert!(out.stdout.contains("differs"), "{out}");
    pair.finish();
}

/// `fw restore` is guarded too: a saved policy that would cut the SSH session the command runs
/// in is refused (with a live session), and only noted at boot (no session).
#[test]
fn restore_refuses_a_policy_that_cuts_the_ssh_session() {
    preflight(&[]);
    let dir = TempDir::new("restoreguard");
    let pair = Pair::new("restoreguard");
    let file = dir.write(
        "bad.toml",
        &format!(
            "interfaces = [\"{}\"]\n[[allow]]\nports = [22]\nfrom = [\"192.0.2.1\"]\n",
            Pair::SERVER_IF
        ),
    );
    let ssh = format!(
        "{} 50000 {} 22",
        pair.client_ip(false),
        pair.server_ip(false)
    );
    let restore = |ssh: Option<&str>| {
        let mut c = pair.server.command(fw_bin());
        c.args(["restore", &path_str(&file)]);
        match ssh {
            Some(v) => c.env("SSH_CONNECTION", v),
            None => c.env_remove("SSH_CONNECTION"),
        };
        run_with_timeout(c, FW_TIMEOUT)
    };
    let out = restore(Some(&ssh));
    assert_eq!(out.status.and_then(|s| s.code()), Some(1), "{out}");
    assert!(
        out.stderr.contains(&pair.client_ip(false).to_string()),
        "{out}"
    );
    assert!(
        pair.state_file().is_none(),
        "refused restore attached anyway"
    );
    let out = restore(None).check();
    assert!(out.stdout.contains("restored"), "{out}");
    pair.finish();
}

/// Recreate the server's veth (same names and addresses), as a hot-plug or a container restart
/// does.
fn recreate_veth(pair: &Pair) {
    let iface = Pair::SERVER_IF;
    pair.server.ip(&["link", "del", iface]);
    pair.server.ip(&[
        "link",
        "add",
        iface,
        "type",
        "veth",
        "peer",
        "name",
        Pair::CLIENT_IF,
        "netns",
        pair.client.name(),
    ]);
    for (ns, ifname, host) in [(&pair.server, iface, 1), (&pair.client, Pair::CLIENT_IF, 2)] {
        ns.ip(&[
            "addr",
            "add",
            &format!("{}/24", pair.v4(host)),
            "dev",
            ifname,
        ]);
        ns.ip(&["link", "set", ifname, "up"]);
    }
}

/// `fw restore --watch` (what the boot unit can run) attaches the policy again when its
/// interface is deleted and recreated, with the live edits that were in force, and leaves the
/// filter attached when stopped.
#[test]
fn restore_watch_reattaches_a_recreated_interface() {
    preflight(&[]);
    let dir = TempDir::new("watch");
    let file = dir.write(
        "saved.toml",
        &format!(
            "interfaces = [\"{}\"]\n[[allow]]\nports = [22, 80]\n",
            Pair::SERVER_IF
        ),
    );
    let pair = Pair::new("watch");
    let mut watcher = pair.server.spawn(
        fw_bin().display().to_string(),
        &["restore", &path_str(&file), "--watch"],
    );
    assert!(
        watcher.wait_for_stdout("watching", FW_TIMEOUT),
        "{}",
        watcher.stdout()
    );
    pair.fw(&["allow", "8080", "-i", Pair::SERVER_IF]).check();
    recreate_veth(&pair);
    let _l = [pair.listen(false, 8080), pair.listen(false, 7777)];
    assert!(
        wait_until(Duration::from_secs(30), || {
            let (out, v) = status(&pair);
            out.success() && problem_codes(&v).is_empty()
        }),
        "not healed: {}\nwatcher: {}{}",
        status(&pair).0,
        watcher.stdout(),
        watcher.stderr()
    );
    assert!(
        watcher.stdout().contains("attached again"),
        "{}",
        watcher.stdout()
    );
    assert_eq!(
        pair.connect(false, 8080),
        Connected,
        "the live edit survived"
    );
    assert_eq!(pair.probe(false, 7777), TimedOut, "filtered again");
    watcher.signal(libc::SIGTERM);
    let st = watcher.wait_timeout(Duration::from_secs(15));
    assert!(st.is_some_and(|s| s.success()), "{}", watcher.stderr());
    assert_eq!(
        pair.probe(false, 7777),
        TimedOut,
        "still filtered after the watcher"
    );
    pair.finish();
}

/// An fw of another map layout (an older release) is running: `fw up` takes its links over —
/// new programs and maps on the same XDP and TCX links, the policy in force carried over, the
/// old pins and state removed — and no packet passes unfiltered meanwhile.
#[test]
fn an_older_layouts_filter_is_taken_over_on_the_same_links_without_a_gap() {
    preflight(&["bpftool"]);
    let pair = Pair::new("layout");
    let _l = [pair.listen(false, 8080), pair.listen(false, 7777)];
    pair.fw_up(None);
    pair.fw(&["allow", "8080", "-i", Pair::SERVER_IF]).check();
    let before = pair.link().expect("link");
    // Make it look like an older release's filter: its pins and state under layout v1.
    let ours = format!("v{}", fw_common::maps::LAYOUT_VERSION);
    let ns = pair.server.inode().to_string();
    for root in ["/sys/fs/bpf/fw", "/run/fw"] {
        let from = Path::new(root).join(&ours).join(&ns).join(Pair::SERVER_IF);
        let to_dir = Path::new(root).join("v1").join(&ns);
        std::fs::create_dir_all(&to_dir).expect("mkdir");
        std::fs::rename(&from, to_dir.join(Pair::SERVER_IF)).expect("move to v1");
    }
    struct Cleanup(String);
    impl Drop for Cleanup {
        fn drop(&mut self) {
            for root in ["/sys/fs/bpf/fw/v1", "/run/fw/v1"] {
                let _ = std::fs::remove_dir_all(Path::new(root).join(&self.0));
                // The layout directory too, if this test made it and nothing else is in it.
                let _ = std::fs::remove_dir(root);
            }
        }
    }
    let _c = Cleanup(ns.clone());
    // Probes to a port the policy closes while fw takes over: none may get through.
    let stop = std::sync::atomic::AtomicBool::new(false);
    let leaked = thread::scope(|s| {
        let probes = s.spawn(|| {
            let mut leaked = 0;
            for _ in 0..2_000 {
                if stop.load(std::sync::atomic::Ordering::Relaxed) {
                    break;
                }
                let c = pair.client.connect_tcp(
                    pair.server_addr(false, 7777),
                    None,
                    Duration::from_millis(50),
                );
                if c != TimedOut {
                    leaked += 1;
                }
            }
            leaked
        });
        let out = pair.fw(&["up", "-i", Pair::SERVER_IF]).check();
        assert!(out.stdout.contains("took over"), "{out}");
        thread::sleep(Duration::from_millis(300));
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        probes.join().expect("probes")
    });
    assert_eq!(
        leaked, 0,
        "closed-port connects got through during the takeover"
    );
    let after = pair.link().expect("link after the takeover");
    assert_eq!(after.link_id, before.link_id, "not the same XDP link");
    assert_ne!(
        after.prog_id, before.prog_id,
        "the program was not replaced"
    );
    assert_eq!(
        pair.connect(false, 8080),
        Connected,
        "the live edit came along"
    );
    assert!(
        !Path::new("/sys/fs/bpf/fw/v1")
            .join(&ns)
            .join(Pair::SERVER_IF)
            .exists(),
        "old pins left"
    );
    let (out, v) = status(&pair);
    assert!(out.success() && problem_codes(&v).is_empty(), "{out}");
    pair.finish();
}
