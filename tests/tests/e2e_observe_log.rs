//! Tier 3, end to end: the drop log. A policy with `log = "drops"`: `fw log --json` prints one
//! record for each reason the test provokes, naming the reason, addresses and ports; `fw serve`
//! forwards the same records to syslog (a socket the test owns stands in for /dev/log), while
//! `fw log` is refused and pointed at the journal; operations reach syslog too.

use std::{collections::BTreeMap, time::Duration};

use fw_common::{
    frame::{FragSpec, PacketSpec},
    tcp::{ACK, FIN, PSH, RST, SYN, URG},
};
use fw_lab::observe::{SyslogSink, TempPolicy, frame, send};
use fw_lab::{Pair, Proc, fw_bin};
use serde_json::Value;

const POLICY: &str = r#"
[options]
log = "drops"
log_rate = 1000
fragments = "drop"

[[allow]]
ports = [80]

[[allow]]
ports = [22]
from = ["192.0.2.0/24"]
"#;

/// One frame per drop reason, with the destination port the log must name (None: no port).
fn provocations(pair: &Pair) -> Vec<(&'static str, Vec<u8>, Option<u16>)> {
    let (c, s) = (
        pair.client_ip(false).to_string(),
        pair.server_ip(false).to_string(),
    );
    let (c6, s6) = (
        pair.client_ip(true).to_string(),
        pair.server_ip(true).to_string(),
    );
    let f = |spec: PacketSpec| frame(pair, &spec);
    let mut bad_version = f(PacketSpec::syn(&c, &s, 81));
    bad_version[14] = 0x55;
    let mut truncated = f(PacketSpec::syn(&c, &s, 82));
    truncated.truncate(40);
    vec![
        ("default-drop", f(PacketSpec::syn(&c, &s, 23)), Some(23)),
        (
            "source-not-allowed",
            f(PacketSpec::syn(&c, &s, 22)),
            Some(22),
        ),
        (
            "tcp-null",
            f(PacketSpec::tcp(&c, &s, 40001, 80, 0)),
            Some(80),
        ),
        (
            "tcp-xmas",
            f(PacketSpec::tcp(
                &c,
                &s,
                40002,
                80,
                FIN | SYN | RST | PSH | ACK | URG,
            )),
            Some(80),
        ),
        (
            "tcp-bad-flags",
            f(PacketSpec::tcp(&c, &s, 40003, 80, FIN | PSH | URG)),
            Some(80),
        ),
        (
            "tcp-new-not-syn",
            f(PacketSpec::tcp(&c, &s, 40004, 80, ACK)),
            Some(80),
        ),
        (
            "too-many-vlans",
            f(PacketSpec::syn(&c, &s, 80).vlans(&[1, 2, 3])),
            None,
        ),
        (
            "ipv6-ext-headers",
            f(PacketSpec::syn(&c6, &s6, 80).ext(&[60, 60, 60, 60, 60, 60, 60])),
            None,
        ),
        (
            "tiny-fragment",
            f(PacketSpec::syn(&c, &s, 80).frag(FragSpec::Later(1))),
            None,
        ),
        (
            "fragment-drop",
            f(PacketSpec::udp(&c, &s, 5000, 5001).frag(FragSpec::Later(100))),
            None,
        ),
        ("bad-header", bad_version, None),
        ("truncated", truncated, None),
    ]
}

fn spawn_with_syslog(pair: &Pair, sink: &SyslogSink, args: &[&str]) -> Proc {
    let mut cmd = pair.server.command(fw_bin());
    cmd.args(args).env("FW_SYSLOG_SOCKET", sink.path());
    Proc::spawn(cmd)
}

fn wait_stderr(p: &mut Proc, needle: &str) {
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while !p.stderr().contains(needle) {
        assert!(
            p.running() && std::time::Instant::now() < deadline,
            "no {needle:?}: {}",
            p.describe()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn fw_log_prints_a_record_for_each_reason_provoked() {
    let pair = Pair::new("obslog");
    let policy = TempPolicy::new("log", POLICY);
    pair.fw_up(Some(policy.path()));
    let cases = provocations(&pair);
    let n = cases.len().to_string();
    let mut log = pair
        .server
        .spawn(fw_bin(), &["log", "--json", "-n", &n, "--iface", "fwsrv"]);
    wait_stderr(&mut log, "following the drop log");
    for (_, f, _) in &cases {
        send(&pair, std::slice::from_ref(f), 1);
    }
    let out = log.finish(Duration::from_secs(30));
    assert!(out.success(), "fw log: {out}");
    let mut by_reason: BTreeMap<String, Value> = BTreeMap::new();
    for line in out.stdout.lines() {
        let v: Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"));
        assert_eq!(v["schema"], 1);
        assert_eq!(v["iface"], "fwsrv");
        assert_eq!(v["verdict"], "drop");
        by_reason.insert(v["reason"].as_str().unwrap().to_string(), v);
    }
    let client = pair.client_ip(false).to_string();
    let mut missing = Vec::new();
    for (reason, _, dport) in &cases {
        match by_reason.get(*reason) {
            None => missing.push(reason.to_string()),
            Some(v) => {
                if let Some(p) = dport {
                    assert_eq!(v["dport"], *p, "{reason}: {v}");
                    assert_eq!(v["src"], client.as_str(), "{reason}: {v}");
                }
            }
        }
    }
    assert!(
        missing.is_empty(),
        "no record for {missing:?} in:\n{}",
        out.stdout
    );
    let flags = &by_reason["tcp-bad-flags"]["tcp_flags"];
    assert_eq!(flags, "FPU");
    pair.finish();
}

#[test]
fn fw_serve_forwards_drops_and_operations_reach_syslog() {
    let pair = Pair::new("obssys");
    let sink = SyslogSink::new("serve");
    let policy = TempPolicy::new("sys", POLICY);
    let mut up = pair.server.command(fw_bin());
    up.args([
        "up",
        "--iface",
        "fwsrv",
        "--policy",
        policy.path().to_str().unwrap(),
    ])
    .env("FW_SYSLOG_SOCKET", sink.path());
    fw_lab::run_with_timeout(up, fw_lab::FW_TIMEOUT).check();
    let ops = sink.collect_until(Duration::from_secs(5), |m| {
        m.iter().any(|l| l.contains("fwsrv: up: attached"))
    });
    assert!(
        ops.iter()
            .any(|l| l.starts_with("<29>fw[") && l.contains("fwsrv: up: attached")),
        "{ops:#?}"
    );
    let port = 19_300 + (std::process::id() % 500) as u16;
    let listen = format!("127.0.0.1:{port}");
    let mut serve = spawn_with_syslog(&pair, &sink, &["serve", "--listen", &listen]);
    // The daemon holds the drop log once the reader file names it.
    let reader = pair.server.state_dir().join("fwsrv").join("log.reader");
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while std::fs::read_to_string(&reader)
        .ok()
        .and_then(|s| s.trim().parse::<i32>().ok())
        != Some(serve.pid())
    {
        assert!(
            std::time::Instant::now() < deadline && serve.running(),
            "fw serve never took the drop log: {}",
            serve.describe()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let (c, s) = (
        pair.client_ip(false).to_string(),
        pair.server_ip(false).to_string(),
    );
    send(
        &pair,
        &[frame(&pair, &PacketSpec::tcp(&c, &s, 40100, 80, 0))],
        1,
    );
    send(&pair, &[frame(&pair, &PacketSpec::syn(&c, &s, 23))], 1);
    let got = sink.collect_until(Duration::from_secs(15), |m| {
        m.iter().any(|l| l.contains("reason=tcp-null")) && m.iter().any(|l| l.contains("DPT=23"))
    });
    let null = got.iter().find(|l| l.contains("reason=tcp-null"));
    assert!(
        null.is_some_and(|l| l.starts_with("<30>fw-drop[")
            && l.contains(&format!("SRC={c} DST={s}"))
            && l.contains("PROTO=TCP SPT=40100 DPT=80 FLAGS=none")),
        "{got:#?}"
    );
    // One reader per ring: fw log says where the records go instead of stealing them.
    let refused = pair.fw(&["log", "-n", "1"]);
    assert!(!refused.success(), "{refused}");
    assert!(
        refused.stderr.contains("journalctl -f -t fw-drop"),
        "{refused}"
    );
    // Operations: apply and rollback (a warning), then down.
    let mut apply = pair.server.command(fw_bin());
    apply
        .args(["apply", policy.path().to_str().unwrap(), "--confirm", "60"])
        .env("FW_SYSLOG_SOCKET", sink.path());
    fw_lab::run_with_timeout(apply, fw_lab::FW_TIMEOUT).check();
    let mut rb = pair.server.command(fw_bin());
    rb.arg("rollback").env("FW_SYSLOG_SOCKET", sink.path());
    fw_lab::run_with_timeout(rb, fw_lab::FW_TIMEOUT).check();
    let ops = sink.collect_until(Duration::from_secs(10), |m| {
        m.iter().any(|l| l.contains("fwsrv: apply:"))
            && m.iter().any(|l| l.contains("fwsrv: rollback"))
    });
    assert!(
        ops.iter()
            .any(|l| l.contains("fwsrv: apply:") && l.contains("confirm within 60 s")),
        "{ops:#?}"
    );
    assert!(
        ops.iter()
            .any(|l| l.starts_with("<28>fw[") && l.contains("fwsrv: rollback")),
        "{ops:#?}"
    );
    serve.signal(libc::SIGTERM);
    let out = serve.finish(Duration::from_secs(10));
    assert!(out.success(), "{out}");
    pair.finish();
}
