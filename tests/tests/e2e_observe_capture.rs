//! Tier 3, end to end: `fw capture` writes a pcap file of what fw dropped (or passed) that
//! tcpdump reads back, with the packet count and the 5-tuples the test sent.

use std::time::Duration;

use fw_common::{frame::PacketSpec, tcp::FIN};
use fw_lab::observe::{frame, send};
use fw_lab::{CMD_TIMEOUT, Pair, fw_bin, host_cmd, preflight, run_with_timeout};

struct TempFile(std::path::PathBuf);

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// `tcpdump -nr FILE` lines (tcpdump's own reading of the file).
fn tcpdump(file: &std::path::Path) -> Vec<String> {
    let out = run_with_timeout(
        host_cmd("tcpdump", ["-nn", "-r", file.to_str().unwrap()]),
        CMD_TIMEOUT,
    )
    .check();
    out.stdout.lines().map(str::to_string).collect()
}

/// Wait until `fw capture` has armed the kernel side (it says so on stderr).
fn wait_armed(p: &mut fw_lab::Proc) {
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while !p.stderr().contains("capturing on") {
        assert!(
            p.running() && std::time::Instant::now() < deadline,
            "fw capture did not start: {}",
            p.describe()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// `fw_capture_records_total{outcome="emitted"}` from `fw metrics`.
fn captured_total(pair: &Pair) -> u64 {
    let out = pair.fw(&["metrics"]).check();
    out.stdout
        .lines()
        .find(|l| l.starts_with("fw_capture_records_total{") && l.contains("emitted"))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
        .unwrap_or_else(|| panic!("no capture counter: {out}"))
}

#[test]
fn capture_of_drops_is_read_back_by_tcpdump_with_the_five_tuples() {
    preflight(&["tcpdump"]);
    let pair = Pair::new("obscap");
    pair.fw_up(None);
    let file = TempFile(std::env::temp_dir().join(format!("fw-cap-{}.pcap", std::process::id())));
    let mut cap = pair.server.spawn(
        fw_bin(),
        &[
            "capture",
            "--iface",
            "fwsrv",
            "--reason",
            "default-drop",
            "-c",
            "5",
            "--duration",
            "60",
            "-w",
            file.0.to_str().unwrap(),
        ],
    );
    wait_armed(&mut cap);
    let (c, s) = (
        pair.client_ip(false).to_string(),
        pair.server_ip(false).to_string(),
    );
    // Not captured: a NULL scan (another reason) and a SYN to an open port (passes).
    send(
        &pair,
        &[frame(&pair, &PacketSpec::tcp(&c, &s, 40000, 80, 0))],
        3,
    );
    send(&pair, &[frame(&pair, &PacketSpec::syn(&c, &s, 80))], 2);
    let ports = [23u16, 24, 3306, 5432, 8081];
    for (i, p) in ports.iter().enumerate() {
        let spec = PacketSpec::tcp(&c, &s, 41000 + i as u16, *p, fw_common::tcp::SYN);
        send(&pair, &[frame(&pair, &spec)], 1);
    }
    let out = cap.finish(Duration::from_secs(30));
    assert!(out.success(), "fw capture: {out}");
    assert!(out.stderr.contains("5 packets captured"), "{out}");
    let lines = tcpdump(&file.0);
    assert_eq!(lines.len(), 5, "tcpdump reads 5 packets: {lines:#?}");
    for (i, p) in ports.iter().enumerate() {
        let want = format!("IP {c}.{} > {s}.{p}: Flags [S]", 41000 + i);
        assert!(
            lines[i].contains(&want),
            "packet {i}: {} (want {want})",
            lines[i]
        );
    }
    pair.finish();
}

#[test]
fn capture_with_passed_and_a_port_keeps_only_that_port_ipv6_too() {
    preflight(&["tcpdump"]);
    let pair = Pair::new("obscap6");
    pair.fw_up(None);
    let file = TempFile(std::env::temp_dir().join(format!("fw-cap6-{}.pcap", std::process::id())));
    let mut cap = pair.server.spawn(
        fw_bin(),
        &[
            "capture",
            "--passed",
            "--port",
            "443",
            "-c",
            "3",
            "--duration",
            "60",
            "--json",
            "-w",
            file.0.to_str().unwrap(),
        ],
    );
    wait_armed(&mut cap);
    let (c, s) = (
        pair.client_ip(true).to_string(),
        pair.server_ip(true).to_string(),
    );
    send(&pair, &[frame(&pair, &PacketSpec::syn(&c, &s, 80))], 4);
    send(
        &pair,
        &[frame(&pair, &PacketSpec::tcp(&c, &s, 42000, 443, FIN))],
        1,
    );
    send(&pair, &[frame(&pair, &PacketSpec::syn(&c, &s, 443))], 2);
    let out = cap.finish(Duration::from_secs(30));
    assert!(out.success(), "fw capture: {out}");
    let summary: serde_json::Value = serde_json::from_str(&out.stdout).expect("summary JSON");
    assert_eq!(summary["schema"], 1);
    assert_eq!(summary["packets"], 3);
    // The SYNs to port 80, and whatever else passed meanwhile (IPv6 neighbour discovery).
    let other = summary["filtered_out"].as_u64().unwrap_or(0);
    assert!(
        other >= 4,
        "the SYNs to port 80 were handed over and left out: {summary}"
    );
    let lines = tcpdump(&file.0);
    assert_eq!(lines.len(), 3, "{lines:#?}");
    assert!(
        lines[0].contains(&format!("IP6 {c}.42000 > {s}.443: Flags [F]")),
        "{}",
        lines[0]
    );
    assert!(
        lines[1].contains(&format!("> {s}.443: Flags [S]")),
        "{}",
        lines[1]
    );
    pair.finish();
}

#[test]
fn a_second_capture_on_the_same_interface_is_refused() {
    let pair = Pair::new("obscap2");
    pair.fw_up(None);
    let file = TempFile(std::env::temp_dir().join(format!("fw-cap2-{}.pcap", std::process::id())));
    let mut first = pair.server.spawn(
        fw_bin(),
        &[
            "capture",
            "--duration",
            "30",
            "-w",
            file.0.to_str().unwrap(),
        ],
    );
    wait_armed(&mut first);
    let other = format!("{}.other", file.0.display());
    let second = pair.fw(&["capture", "--duration", "1", "-w", &other]);
    let _ = std::fs::remove_file(&other);
    assert!(!second.success(), "{second}");
    assert!(second.stderr.contains("already running"), "{second}");
    first.signal(libc::SIGINT);
    let out = first.finish(Duration::from_secs(20));
    assert!(out.success(), "Ctrl-C ends a capture cleanly: {out}");
    // The kernel side is off again: drops are no longer handed to a capture.
    let before = captured_total(&pair);
    let (c, s) = (
        pair.client_ip(false).to_string(),
        pair.server_ip(false).to_string(),
    );
    send(&pair, &[frame(&pair, &PacketSpec::syn(&c, &s, 23))], 5);
    let after_drops = pair.status().reason("default-drop");
    assert!(after_drops >= 5);
    assert_eq!(
        captured_total(&pair),
        before,
        "capture still armed after it ended"
    );
    pair.finish();
}
