//! Tier 3, block lists end to end: `fw block` on the running filter cuts a source on every port,
//! IPv4 and IPv6, while neighbour discovery keeps working; a million-line list imports; a feed
//! with a garbage line is refused whole.

use std::{fmt::Write as _, time::Instant};

use fw_lab::{CONNECT_OK, Connect, Pair, TempDir, preflight};

const FAMILIES: [bool; 2] = [false, true];

fn blocked_entries(pair: &Pair) -> u64 {
    let out = pair.fw(&["block", "list", "--json"]).check();
    let v: serde_json::Value = serde_json::from_str(&out.stdout).expect("json");
    v[0]["blocks"]["lists"]
        .as_array()
        .map(|a| a.iter().map(|l| l["entries"].as_u64().unwrap_or(0)).sum())
        .unwrap_or(0)
}

#[test]
fn fw_block_of_one_address_cuts_it_on_every_port_v4_and_v6_and_nd_still_works() {
    preflight(&["ping"]);
    let pair = Pair::new("block");
    let _l80 = pair.listen_both(80);
    let _l22 = pair.listen_both(22);
    pair.fw_up(None);
    for v6 in FAMILIES {
        for port in [80, 22] {
            assert_eq!(
                pair.connect(v6, port),
                Connect::Connected,
                "v6={v6} {port} before"
            );
        }
    }
    let c4 = pair.client_ip(false).to_string();
    let c6 = pair.client_ip(true).to_string();
    pair.fw(&["block", "add", &c4, &c6, "--comment", "abuse"])
        .check();
    for v6 in FAMILIES {
        for port in [80, 22, 443] {
            assert_ne!(
                pair.probe(v6, port),
                Connect::Connected,
                "v6={v6} {port}: a blocked source connected"
            );
        }
    }
    // Another address of the same client is not blocked.
    let other = pair.v4(3);
    pair.add_client_address(other.into());
    assert_eq!(
        pair.client
            .connect_tcp(pair.server_addr(false, 80), Some(other.into()), CONNECT_OK),
        Connect::Connected
    );
    // Neighbour discovery from the blocked IPv6 source still passes: with its neighbour entry
    // flushed, the server can resolve it again (the echo reply itself is blocked).
    pair.server.ip(&["-6", "neigh", "flush", "dev", "fwsrv"]);
    pair.server
        .run("ping", &["-6", "-c", "1", "-W", "1", &c6], CONNECT_OK);
    let neigh = pair.server.ip(&["-6", "neigh", "show", &c6]).stdout;
    assert!(
        neigh.contains("lladdr"),
        "the server could not resolve the blocked client's address: {neigh:?}"
    );
    let s = pair.status_when(CONNECT_OK, |s| s.reason("blocked") >= 6);
    assert!(s.reason("blocked") >= 6, "{:#}", s.0);
    let list = pair.fw(&["block", "list"]).check().stdout;
    assert!(list.contains(&c4) && list.contains("abuse"), "{list}");
    let explain = pair
        .fw(&[
            "explain", "--proto", "tcp", "--dport", "443", "--flags", "S", "--src", &c4,
        ])
        .check()
        .stdout;
    assert!(
        explain.contains("blocked") && explain.contains("manual"),
        "{explain}"
    );
    pair.fw(&["block", "del", &c4, &c6]).check();
    for v6 in FAMILIES {
        assert_eq!(
            pair.connect(v6, 80),
            Connect::Connected,
            "v6={v6} after del"
        );
    }
    pair.finish();
}

#[test]
fn a_timed_block_shows_its_expiry_and_lifts() {
    preflight(&[]);
    let pair = Pair::new("btime");
    let _l = pair.listen(false, 80);
    pair.fw_up(None);
    let c4 = pair.client_ip(false).to_string();
    pair.fw(&["block", "add", &c4, "--timeout", "3"]).check();
    assert_ne!(pair.probe(false, 80), Connect::Connected);
    let list = pair.fw(&["block", "list"]).check().stdout;
    assert!(list.contains("expires in"), "{list}");
    std::thread::sleep(std::time::Duration::from_secs(4));
    assert_eq!(
        pair.connect(false, 80),
        Connect::Connected,
        "the block did not lift"
    );
    pair.finish();
}

#[test]
fn a_million_line_list_imports_and_blocks() {
    preflight(&[]);
    let pair = Pair::new("bigl");
    let dir = TempDir::new("bigl");
    let _l = pair.listen(false, 80);
    pair.fw_up(None);
    let mut text = String::with_capacity(16 * 1_000_000);
    text.push_str("# a million addresses\n");
    for i in 0..999_999u32 {
        let a = (0x6440_0000u32 + i).to_be_bytes();
        let _ = writeln!(text, "{}.{}.{}.{}", a[0], a[1], a[2], a[3]);
    }
    let _ = writeln!(text, "{}", pair.client_ip(false));
    let file = dir.write("big.txt", &text);
    let t = Instant::now();
    let out = pair
        .fw(&["block", "import", &file.display().to_string()])
        .check();
    println!(
        "fw block import of 1,000,000 lines: {:.2} s: {}",
        t.elapsed().as_secs_f64(),
        out.stdout.trim()
    );
    assert_eq!(blocked_entries(&pair), 1_000_000);
    assert_ne!(
        pair.probe(false, 80),
        Connect::Connected,
        "the list's last line is not blocked"
    );
    // Replacing the list as a whole, with one that no longer holds the client.
    let small = dir.write("big2.txt", "192.0.2.99\n");
    pair.fw(&[
        "block",
        "import",
        &small.display().to_string(),
        "--list",
        "big",
    ])
    .check();
    assert_eq!(blocked_entries(&pair), 1);
    assert_eq!(pair.connect(false, 80), Connect::Connected);
    pair.finish();
}

#[test]
fn a_feed_with_a_garbage_line_is_refused_naming_file_and_line_and_nothing_is_applied() {
    preflight(&[]);
    let pair = Pair::new("bgarb");
    let dir = TempDir::new("bgarb");
    let _l = pair.listen(false, 80);
    pair.fw_up(None);
    let c4 = pair.client_ip(false);
    let feed = dir.write(
        "drop.txt",
        &format!("; Spamhaus DROP\n{c4} ; SBL1\n<html>oops</html>\n198.51.100.0/24\n"),
    );
    let out = pair.fw(&["block", "import", &feed.display().to_string()]);
    assert!(!out.success(), "a garbage feed was accepted: {out}");
    let name = format!("{}:3", feed.display());
    assert!(
        out.stderr.contains(&name),
        "the error does not name {name}: {out}"
    );
    assert_eq!(blocked_entries(&pair), 0, "something was applied");
    assert_eq!(pair.connect(false, 80), Connect::Connected);
    pair.finish();
}
