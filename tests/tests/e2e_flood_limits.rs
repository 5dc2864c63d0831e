//! Tier 3, rate limits end to end: `fw` with a limited SSH rule on a veth between two
//! namespaces, real connections from the client side, and a spoofed SYN flood (hping3
//! --rand-source) inside the test namespaces.

use std::time::Duration;

use fw_lab::{CONNECT_OK, Connect, Pair, TempDir, echoes, parse_hping3, preflight};

const SSH: u16 = 22;

fn limited_policy(dir: &TempDir, rate: &str) -> std::path::PathBuf {
    dir.write(
        "limit.toml",
        &format!("[[allow]]\nports = [22]\nlimit = \"{rate}\"\ncomment = \"ssh\"\n"),
    )
}

/// ufw's `limit`: six connections from one source in 30 s, the seventh is dropped; another
/// source still connects; counted under `rate-limited` and under the rule.
#[test]
fn a_seventh_ssh_connection_within_30s_is_dropped_while_another_source_connects() {
    preflight(&[]);
    let pair = Pair::new("limit");
    let dir = TempDir::new("limit");
    let _l = pair.listen(false, SSH);
    pair.fw_up(Some(&limited_policy(&dir, "6/30s")));
    for i in 0..6 {
        assert_eq!(
            pair.connect(false, SSH),
            Connect::Connected,
            "connection {i}"
        );
    }
    assert_eq!(
        pair.probe(false, SSH),
        Connect::TimedOut,
        "the 7th connection within 30 s got through"
    );
    let other = pair.v4(3);
    pair.add_client_address(other.into());
    assert_eq!(
        pair.client
            .connect_tcp(pair.server_addr(false, SSH), Some(other.into()), CONNECT_OK),
        Connect::Connected,
        "another source is not limited by the first one's bucket"
    );
    let s = pair.status_when(CONNECT_OK, |s| s.reason("rate-limited") >= 1);
    assert!(s.reason("rate-limited") >= 1, "{:#}", s.0);
    let dropped = s.0["flood"]["limits"][0]["dropped"].as_u64().unwrap_or(0);
    assert!(dropped >= 1, "the rule's own counter: {:#}", s.0["flood"]);
    let text = pair.fw(&["status"]).check().stdout;
    assert!(text.contains("6/30s per source"), "{text}");
    let explain = pair
        .fw(&[
            "explain",
            "--proto",
            "tcp",
            "--dport",
            "22",
            "--flags",
            "S",
            "--src",
            &pair.client_ip(false).to_string(),
        ])
        .check()
        .stdout;
    assert!(explain.contains("rate-limited"), "{explain}");
    pair.finish();
}

/// A spoofed SYN flood from more sources than the bucket table holds: the client that
/// completed its handshakes keeps its (drained) bucket — its next connection is still dropped —
/// and its established session keeps working; the `in` connection table does not change.
#[test]
fn a_spoofed_syn_flood_neither_evicts_a_real_clients_bucket_nor_its_session() {
    preflight(&["hping3"]);
    let pair = Pair::new("spoof");
    let dir = TempDir::new("spoof");
    let _echo = pair.server.echo_tcp(pair.server_addr(false, SSH));
    // 6 an hour: the flood's seconds of real time must not refill the bucket.
    pair.fw_up(Some(&limited_policy(&dir, "6/1h")));
    let mut session = pair.client.stream(pair.server_addr(false, SSH), None);
    assert!(echoes(&mut session, b"before", CONNECT_OK));
    for i in 0..5 {
        assert_eq!(
            pair.connect(false, SSH),
            Connect::Connected,
            "connection {i}"
        );
    }
    assert_eq!(
        pair.probe(false, SSH),
        Connect::TimedOut,
        "7th before the flood"
    );
    let before = pair.status();
    let flood = 300_000u32;
    let out = pair.client.run(
        "hping3",
        &[
            "-S",
            "--rand-source",
            "-p",
            "22",
            "-i",
            "u1",
            "-c",
            &flood.to_string(),
            &pair.v4(1).to_string(),
        ],
        Duration::from_secs(240),
    );
    assert!(!out.timed_out(), "hping3 did not finish: {out}");
    let (sent, _) = parse_hping3(&out);
    let after = pair.status();
    println!(
        "spoofed flood: {sent} SYNs; buckets known {} new {}",
        after.0["flood"]["buckets_known"], after.0["flood"]["buckets_new"]
    );
    assert!(sent >= u64::from(flood) * 9 / 10, "hping3 sent {sent}");
    assert!(
        after.0["flood"]["buckets_new"].as_u64().unwrap_or(0) > 200_000,
        "the flood did not fill the new-source bucket table: {:#}",
        after.0["flood"]
    );
    assert_eq!(after.0["flood"]["buckets_known"].as_u64(), Some(1));
    assert!(
        echoes(&mut session, b"after", CONNECT_OK),
        "the session died"
    );
    assert_eq!(
        pair.probe(false, SSH),
        Connect::TimedOut,
        "the client's bucket was evicted: its 7th connection got through"
    );
    assert_eq!(
        (after.table("in").entries, after.table("in").evicted),
        (before.table("in").entries, before.table("in").evicted),
        "the flood touched the in table"
    );
    drop(session);
    pair.finish();
}
