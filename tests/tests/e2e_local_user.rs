//! End-to-end: what a local unprivileged user or a careless root command can do to fw
//! (issue 10.3–10.8). Each test failed on the fw before these fixes.

use std::{
    fs,
    os::unix::fs::{MetadataExt as _, PermissionsExt as _},
    path::Path,
    process::Command,
    time::{Duration, Instant},
};

use fw_lab::{FW_TIMEOUT, Output, Pair, TempDir, fw_bin, preflight, run_with_timeout};

const NOBODY: &str = "65534";

/// `cmd` as user nobody (setpriv drops every capability with the uid change).
fn as_nobody(pair: &Pair, program: &str, args: &[&str]) -> Output {
    let mut c = pair.server.command("setpriv");
    c.args([
        "--reuid",
        NOBODY,
        "--regid",
        NOBODY,
        "--clear-groups",
        program,
    ])
    .args(args);
    run_with_timeout(c, FW_TIMEOUT)
}

fn code(out: &Output) -> Option<i32> {
    out.status.and_then(|s| s.code())
}

/// The lock and the state are root's alone: nobody cannot even open them, so `flock` as
/// nobody cannot freeze `fw allow` (or a rollback timer), and the state (policy, admin
/// addresses) is not readable.
#[test]
fn an_unprivileged_user_cannot_lock_or_read_fws_state() {
    preflight(&["setpriv", "flock"]);
    let pair = Pair::new("nobodylock");
    pair.fw_up(None);
    let state_dir = pair.server.state_dir().join(Pair::SERVER_IF);
    let lock = state_dir.join("lock");
    let st = fs::metadata(&state_dir).expect("state dir");
    assert_eq!(st.mode() & 0o777, 0o700, "state dir mode");
    for f in [&lock, &state_dir.join("state.json")] {
        let m = fs::metadata(f).expect("state file");
        assert_eq!((m.uid(), m.mode() & 0o777), (0, 0o600), "{}", f.display());
    }
    let pins = fs::metadata(pair.iface_pins()).expect("pins");
    assert_eq!(pins.mode() & 0o777, 0o700, "pin dir mode");
    // flock -x on the lock file as nobody, holding it for 30 s if it could.
    let mut c = pair.server.command("setpriv");
    c.args([
        "--reuid",
        NOBODY,
        "--regid",
        NOBODY,
        "--clear-groups",
        "flock",
        "-x",
    ])
    .arg(&lock)
    .args(["sleep", "30"]);
    let started = Instant::now();
    let out = run_with_timeout(c, FW_TIMEOUT);
    assert!(
        !out.success() && started.elapsed() < Duration::from_secs(10),
        "nobody could take fw's lock: {out}"
    );
    let out = pair.fw(&["allow", "8080", "-i", Pair::SERVER_IF]).check();
    assert!(out.stdout.contains("allowed"), "{out}");
    let out = as_nobody(
        &pair,
        "cat",
        &[&state_dir.join("state.json").display().to_string()],
    );
    assert!(!out.success(), "nobody read the state: {out}");
    pair.finish();
}

/// Run without privileges, fw says to run it as root — once — and never concludes "not
/// attached" (which `fw down` would turn into "nothing to do").
#[test]
fn without_privileges_fw_says_run_as_root_and_changes_nothing() {
    preflight(&["setpriv"]);
    let pair = Pair::new("nobodyfw");
    pair.fw_up(None);
    let bin = std::env::temp_dir().join(format!("fw-nobody-{}", std::process::id()));
    fs::copy(fw_bin(), &bin).expect("copy fw");
    fs::set_permissions(&bin, fs::Permissions::from_mode(0o755)).expect("chmod");
    let b = bin.display().to_string();
    for args in [
        &["status"][..],
        &["down", "-i", Pair::SERVER_IF],
        &["allow", "99", "-i", Pair::SERVER_IF],
        &["flush", "-i", Pair::SERVER_IF],
    ] {
        let out = as_nobody(&pair, &b, args);
        assert_eq!(code(&out), Some(1), "{args:?}: {out}");
        assert!(out.stderr.contains("run it as root"), "{args:?}: {out}");
        assert_eq!(
            out.stderr.matches("Permission denied").count(),
            1,
            "{args:?}: the OS error is printed once: {out}"
        );
    }
    let _ = fs::remove_file(&bin);
    assert!(
        pair.status().0["problems"]
            .as_array()
            .is_some_and(|p| p.is_empty())
    );
    pair.finish();
}

/// `--iface` is an interface name everywhere: `..`, paths and over-long names are usage
/// errors, and nothing outside fw's directories is touched.
#[test]
fn interface_names_that_are_paths_are_refused_by_every_verb() {
    preflight(&[]);
    let pair = Pair::new("ifname");
    pair.fw_up(None);
    for bad in ["..", "../../..", "x/../..", "aaaaaaaaaaaaaaaa"] {
        for verb in [
            &["down", "--iface", bad][..],
            &["confirm", "--iface", bad],
            &["status", "--iface", bad],
            &["allow", "22", "--iface", bad],
        ] {
            let out = pair.fw(verb);
            assert_eq!(code(&out), Some(2), "{verb:?}: {out}");
            assert!(
                out.stderr.contains("not an interface name"),
                "{verb:?}: {out}"
            );
        }
    }
    assert!(
        pair.iface_pins().join("link").exists(),
        "the filter was removed"
    );
    pair.fw(&["status", "-i", Pair::SERVER_IF]).check();
    pair.finish();
}

/// fw's pins moved aside (what a hijacked pin directory allowed): `fw down` must not print
/// "filter removed" while the program stays attached, and `fw up` must say what is attached.
#[test]
fn fw_down_does_not_claim_success_while_an_fw_program_stays_attached() {
    preflight(&["bpftool"]);
    let pair = Pair::new("moved");
    pair.fw_up(None);
    let aside = Path::new("/sys/fs/bpf").join(format!("fw-moved-{}", std::process::id()));
    fs::create_dir_all(&aside).expect("mkdir");
    struct Cleanup(std::path::PathBuf);
    impl Drop for Cleanup {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }
    let _c = Cleanup(aside.clone());
    fs::rename(pair.iface_pins().join("link"), aside.join("link")).expect("move the link pin");
    let out = pair.fw(&["down", "-i", Pair::SERVER_IF]);
    assert_eq!(code(&out), Some(1), "{out}");
    assert!(out.stderr.contains("still attached"), "{out}");
    assert!(!out.stdout.contains("filter removed"), "{out}");
    let out = pair.fw(&["up", "-i", Pair::SERVER_IF]);
    assert_eq!(code(&out), Some(1), "{out}");
    assert!(out.stderr.contains("moved fw's pins aside"), "{out}");
    fs::remove_file(aside.join("link")).expect("unpin");
    pair.fw_up(None);
    pair.finish();
}

/// `fw save` into a directory where someone planted a symlink (or a file of their own) at the
/// target name: the symlink's target is untouched and the saved policy is root's, mode 0600.
#[test]
fn fw_save_replaces_a_planted_symlink_instead_of_following_it() {
    preflight(&[]);
    let dir = TempDir::new("plant");
    fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o1777)).expect("chmod");
    let victim = dir.write("victim", "precious\n");
    let target = dir.path().join("saved.toml");
    std::os::unix::fs::symlink(&victim, &target).expect("symlink");
    let pair = Pair::new("plant");
    pair.fw_up(None);
    pair.fw(&["save", &target.display().to_string(), "-i", Pair::SERVER_IF])
        .check();
    assert_eq!(fs::read_to_string(&victim).unwrap(), "precious\n");
    let m = fs::symlink_metadata(&target).unwrap();
    assert!(m.is_file(), "still a symlink");
    assert_eq!((m.uid(), m.mode() & 0o777), (0, 0o600));
    // A file planted by another user in a sticky directory is not taken over.
    fs::remove_file(&target).unwrap();
    fs::write(&target, "planted").unwrap();
    std::os::unix::fs::chown(&target, Some(65534), Some(65534)).unwrap();
    fs::set_permissions(&target, fs::Permissions::from_mode(0o666)).unwrap();
    let out = pair.fw(&["save", &target.display().to_string(), "-i", Pair::SERVER_IF]);
    // Root may replace it (root passes the sticky check); either way the result is root's
    // 0600 file or an error — never the planted file rewritten in place.
    let m = fs::symlink_metadata(&target).unwrap();
    if out.success() {
        assert_eq!((m.uid(), m.mode() & 0o777), (0, 0o600), "{out}");
    } else {
        assert_eq!(fs::read_to_string(&target).unwrap(), "planted", "{out}");
    }
    pair.finish();
}

/// Policies that do not mean what they say are refused by `fw policy check` (file, line,
/// value); a policy whose source tries cannot fit is refused before anything changes, fast,
/// and the running filter still takes live edits afterwards.
#[test]
fn ambiguous_or_oversized_policies_are_refused_before_anything_changes() {
    preflight(&[]);
    let dir = TempDir::new("ambig");
    let cases = [
        (
            "empty.toml",
            "[[allow]]\nports = [22]\nfrom = []\n",
            "admits nobody",
        ),
        (
            "hostbits.toml",
            "[[allow]]\nports = [22]\nfrom = [\"203.0.113.7/0\"]\n",
            "host bits",
        ),
        (
            "mapped.toml",
            "[[allow]]\nports = [22]\nfrom = [\"::ffff:203.0.113.7\"]\n",
            "IPv4-mapped",
        ),
        (
            "escape.toml",
            "[[allow]]\nports = [22]\ncomment = \"\\u001b[2J\"\n",
            "control character",
        ),
    ];
    for (name, text, want) in cases {
        let f = dir.write(name, text);
        let mut c = Command::new(fw_bin());
        c.args(["policy", "check", &f.display().to_string()]);
        let out = run_with_timeout(c, FW_TIMEOUT);
        assert_eq!(code(&out), Some(1), "{name}: {out}");
        assert!(
            out.stderr.contains(want) && out.stderr.contains(":3:"),
            "{name}: {out}"
        );
    }
    let from: Vec<String> = (0..40).map(|i| format!("\"10.{i}.0.0/16\"")).collect();
    let big = dir.write(
        "big.toml",
        &format!(
            "[[allow]]\nports = [\"1-65535\"]\nfrom = [{}]\n",
            from.join(", ")
        ),
    );
    let pair = Pair::new("ambig");
    pair.fw_up(None);
    let t0 = Instant::now();
    let out = pair.fw(&["apply", &big.display().to_string(), "-i", Pair::SERVER_IF]);
    assert_eq!(code(&out), Some(1), "{out}");
    assert!(out.stderr.contains("IPv4 entries"), "{out}");
    assert!(
        t0.elapsed() < Duration::from_secs(20),
        "took {:?}",
        t0.elapsed()
    );
    assert_eq!(pair.status().source(), "embedded seed policy");
    pair.fw(&[
        "allow",
        "2200",
        "--from",
        "192.0.2.0/24",
        "-i",
        Pair::SERVER_IF,
    ])
    .check();
    let out = pair.fw(&[
        "allow",
        "8080",
        "--comment",
        "\u{1b}[2J",
        "-i",
        Pair::SERVER_IF,
    ]);
    assert_eq!(code(&out), Some(1), "{out}");
    pair.finish();
}
