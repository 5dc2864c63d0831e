//! Tier 3, end to end: the live views. `fw top` in a real terminal (tmux) shows rules, reasons
//! and the dropped sources, quits on `q` and leaves the terminal as it found it; bounded runs
//! of `fw top` and `fw status --watch` for scripts and dumb terminals.

use std::time::{Duration, Instant};

use fw_common::frame::PacketSpec;
use fw_lab::observe::{frame, send};
use fw_lab::{CMD_TIMEOUT, Pair, fw_bin, host_cmd, preflight, run_with_timeout};

/// A tmux session, killed on drop.
struct Tmux(String);

impl Tmux {
    fn capture(&self) -> String {
        run_with_timeout(
            host_cmd("tmux", ["capture-pane", "-p", "-t", &self.0]),
            CMD_TIMEOUT,
        )
        .stdout
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = run_with_timeout(
            host_cmd("tmux", ["kill-session", "-t", &self.0]),
            CMD_TIMEOUT,
        );
    }
}

#[test]
fn fw_top_shows_the_view_quits_on_q_and_restores_the_terminal() {
    preflight(&["tmux"]);
    let pair = Pair::new("obstop");
    pair.fw_up(None);
    let session = format!("fwtop{}", std::process::id());
    let stty = std::env::temp_dir().join(format!("fw-top-stty-{}", std::process::id()));
    let _ = std::fs::remove_file(&stty);
    // The terminal modes are written to a temporary file and renamed: the test waits for the
    // file to exist, and `stty -a > FILE` creates it empty before writing (read in between, it
    // looked like a terminal left raw).
    let shell = format!(
        "nsenter --net={} -- {} top -d 0.3; echo exit=$? > {s}.rc; stty -a > {s}.tmp; mv {s}.tmp {s}; sleep 30",
        pair.server.path().display(),
        fw_bin().display(),
        s = stty.display()
    );
    run_with_timeout(
        host_cmd(
            "tmux",
            [
                "new-session",
                "-d",
                "-s",
                &session,
                "-x",
                "160",
                "-y",
                "60",
                &shell,
            ],
        ),
        CMD_TIMEOUT,
    )
    .check();
    let tmux = Tmux(session.clone());
    let (c, s) = (
        pair.client_ip(false).to_string(),
        pair.server_ip(false).to_string(),
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut screen = String::new();
    while Instant::now() < deadline {
        send(&pair, &[frame(&pair, &PacketSpec::syn(&c, &s, 23))], 20);
        screen = tmux.capture();
        if screen.contains("default-drop") && screen.contains(&c) {
            break;
        }
        std::thread::sleep(Duration::from_millis(300));
    }
    assert!(screen.contains("pkts/s"), "{screen}");
    assert!(screen.contains("80/tcp from anywhere"), "{screen}");
    assert!(screen.contains("default-drop"), "{screen}");
    assert!(
        screen.contains(&c),
        "the client among the dropped sources: {screen}"
    );
    run_with_timeout(
        host_cmd("tmux", ["send-keys", "-t", &session, "q"]),
        CMD_TIMEOUT,
    )
    .check();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !stty.exists() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    let modes = std::fs::read_to_string(&stty).expect("fw top did not quit on q");
    let rc = std::fs::read_to_string(format!("{}.rc", stty.display())).unwrap_or_default();
    let _ = std::fs::remove_file(&stty);
    let _ = std::fs::remove_file(format!("{}.rc", stty.display()));
    assert_eq!(rc.trim(), "exit=0");
    let words: Vec<&str> = modes.split_whitespace().collect();
    assert!(
        words.contains(&"icanon") && words.contains(&"echo"),
        "terminal left raw: {modes}"
    );
    drop(tmux);
    pair.finish();
}

#[test]
fn bounded_top_and_status_watch_print_and_exit() {
    let pair = Pair::new("obswatch");
    pair.fw_up(None);
    let top = pair
        .fw(&["top", "-n", "2", "-d", "0.2", "--no-sources"])
        .check();
    assert_eq!(top.stdout.matches("q or Ctrl-C quits").count(), 2, "{top}");
    let watch = pair
        .fw(&["status", "--watch", "0.2", "--count", "2"])
        .check();
    assert_eq!(
        watch.stdout.matches("\n--- ").count() + usize::from(watch.stdout.starts_with("--- ")),
        2,
        "{watch}"
    );
    pair.finish();
}
