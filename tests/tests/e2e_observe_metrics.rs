//! Tier 3, end to end: a real Prometheus server scrapes `fw serve` inside the server namespace,
//! and the values it stored — queried back through its HTTP API — are the traffic the test
//! sent: packets per rule and per drop reason, also across `fw apply` and `fw allow` (the rule
//! counters must not restart, or `rate()` would see resets).

use std::time::Duration;

use fw_common::{
    frame::PacketSpec,
    tcp::{ACK, SYN},
};
use fw_lab::observe::{Prometheus, TempPolicy, frame, http_get, port, send, wait_http};
use fw_lab::{Pair, fw_bin, preflight};

const WAIT: Duration = Duration::from_secs(40);

const POLICY: &str = r#"
[[allow]]
ports = [80]
comment = "web \"front\""

[[allow]]
ports = [22]
comment = "ssh"
"#;

/// The same two rules (in another order) and one more: 80 and 22 must keep their counters.
const POLICY2: &str = r#"
[[allow]]
ports = [22]
comment = "ssh"

[[allow]]
ports = [8080]
comment = "app"

[[allow]]
ports = [80]
comment = "web \"front\""
"#;

#[test]
fn prometheus_scrapes_counters_that_match_the_traffic_and_survive_apply() {
    preflight(&["prometheus", "curl"]);
    let pair = Pair::new("obsprom");
    let p1 = TempPolicy::new("prom1", POLICY);
    let p2 = TempPolicy::new("prom2", POLICY2);
    pair.fw_up(Some(p1.path()));
    let metrics_port = port(19_100);
    let listen = format!("127.0.0.1:{metrics_port}");
    let mut serve = pair.server.spawn(fw_bin(), &["serve", "--listen", &listen]);
    assert!(
        wait_http(&pair.server, &format!("http://{listen}/metrics"), WAIT),
        "fw serve did not answer: {}",
        serve.describe()
    );
    let prom = Prometheus::start(&pair.server, &listen, port(19_700));

    let (c, s) = (
        pair.client_ip(false).to_string(),
        pair.server_ip(false).to_string(),
    );
    let syn = |dport| frame(&pair, &PacketSpec::syn(&c, &s, dport));
    let before = pair.status();
    let base_drop = before.reason("default-drop");
    let base_null = before.reason("tcp-null");
    send(&pair, &[syn(80)], 5);
    send(&pair, &[syn(23)], 25);
    send(
        &pair,
        &[frame(&pair, &PacketSpec::tcp(&c, &s, 40000, 80, 0))],
        7,
    );
    // An ACK nobody opened, to a closed port: dropped as tcp-new-not-syn.
    send(
        &pair,
        &[frame(&pair, &PacketSpec::tcp(&c, &s, 40001, 23, ACK))],
        3,
    );

    let q80 = r#"fw_rule_packets_total{iface="fwsrv",ports="80"}"#;
    let got = prom.wait_value(&pair.server, q80, WAIT, |v| v >= 5.0);
    assert_eq!(
        got,
        Some(5.0),
        "rule 80 in Prometheus; its log:\n{}",
        prom.logs()
    );
    let qd = r#"fw_reason_packets_total{iface="fwsrv",reason="default-drop"}"#;
    let want = (base_drop + 25) as f64;
    assert_eq!(
        prom.wait_value(&pair.server, qd, WAIT, |v| v >= want),
        Some(want)
    );
    let qn = r#"fw_reason_packets_total{iface="fwsrv",reason="tcp-null"}"#;
    let want = (base_null + 7) as f64;
    assert_eq!(
        prom.wait_value(&pair.server, qn, WAIT, |v| v >= want),
        Some(want)
    );
    let qa = r#"fw_reason_packets_total{iface="fwsrv",reason="tcp-new-not-syn"}"#;
    assert_eq!(
        prom.wait_value(&pair.server, qa, WAIT, |v| v >= 3.0),
        Some(3.0)
    );
    // The comment label arrives whole, quotes unescaped again by Prometheus.
    let series = prom.query(&pair.server, q80).expect("query");
    assert_eq!(series[0].0["comment"], "web \"front\"", "{series:?}");
    assert_eq!(series[0].0["source"], "any");

    // Replace the policy, then edit it live: 80 keeps counting from 5.
    pair.fw(&["apply", p2.path().to_str().unwrap()]).check();
    pair.fw(&["allow", "9090/tcp", "--comment", "metrics"])
        .check();
    send(&pair, &[syn(80)], 3);
    send(&pair, &[syn(8080)], 2);
    let got = prom.wait_value(&pair.server, q80, WAIT, |v| v >= 8.0);
    assert_eq!(got, Some(8.0), "rule 80 after fw apply and fw allow");
    let q8080 = r#"fw_rule_packets_total{iface="fwsrv",ports="8080"}"#;
    assert_eq!(
        prom.wait_value(&pair.server, q8080, WAIT, |v| v >= 2.0),
        Some(2.0)
    );
    let qgen = r#"fw_policy_generation{iface="fwsrv"}"#;
    assert_eq!(
        prom.wait_value(&pair.server, qgen, WAIT, |v| v == 1.0),
        Some(1.0)
    );
    // No series of a rule counter ever went down in Prometheus' view.
    let resets = prom
        .query(&pair.server, "sum(resets(fw_rule_packets_total[10m]))")
        .expect("resets query");
    assert_eq!(resets.len(), 1, "{resets:?}");
    assert_eq!(resets[0].1, 0.0, "a rule counter restarted: {resets:?}");
    // The text format itself: one HELP/TYPE per family, build info with the schema.
    let text = http_get(&pair.server, &format!("http://{listen}/metrics")).expect("scrape");
    assert_eq!(
        text.matches("# TYPE fw_rule_packets_total counter").count(),
        1
    );
    assert!(text.contains("fw_build_info{version="), "{text}");
    assert!(http_get(&pair.server, &format!("http://{listen}/nope")).is_none());
    drop(prom);
    serve.signal(libc::SIGTERM);
    let out = serve.finish(Duration::from_secs(10));
    assert!(out.success(), "fw serve exits 0 on SIGTERM: {out}");
    pair.finish();
}

#[test]
fn fw_metrics_prints_the_exposition_and_writes_a_textfile() {
    let pair = Pair::new("obsmet");
    pair.fw_up(None);
    let (c, s) = (
        pair.client_ip(false).to_string(),
        pair.server_ip(false).to_string(),
    );
    send(
        &pair,
        &[frame(&pair, &PacketSpec::tcp(&c, &s, 40000, 443, SYN))],
        4,
    );
    let out = pair.fw(&["metrics"]).check();
    let line = out
        .stdout
        .lines()
        .find(|l| l.starts_with("fw_rule_packets_total{") && l.contains("ports=\"443\""))
        .unwrap_or_else(|| panic!("no 443 rule line: {out}"));
    assert!(line.ends_with(" 4"), "{line}");
    let file = std::env::temp_dir().join(format!("fw-obs-{}.prom", std::process::id()));
    pair.fw(&["metrics", "-o", file.to_str().unwrap()]).check();
    let text = std::fs::read_to_string(&file).expect("textfile");
    let _ = std::fs::remove_file(&file);
    assert!(text.contains(line), "the file holds the same sample");
    pair.finish();
}
