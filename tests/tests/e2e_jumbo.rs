//! Tier 3, end to end: jumbo frames (MTU 9000 on a veth pair). fw loads its multi-buffer build
//! (`xdp.frags`) where the kernel has it, so it attaches in native mode; real TCP transfers in
//! 8 KB segments and a SYN scan are judged exactly as at MTU 1500. On a kernel without
//! multi-buffer XDP (simulated with `FW_XDP_FRAGS=0`), fw falls back to generic mode and says
//! why: the MTU, and what to do.

use std::{
    collections::BTreeMap,
    io::{Read as _, Write as _},
    net::{SocketAddr, TcpListener, TcpStream},
    process::Command,
    thread,
    time::{Duration, Instant},
};

use fw_lab::{CONNECT_DROP, Connect, Pair, nmap, preflight, run_with_timeout};
use socket2::{Domain, Protocol, Type};

/// Segments of 8 KB: the client writes this many of them on one connection.
const SEGMENTS: usize = 32;
const SEGMENT: usize = 8192;

/// What one run of the traffic saw.
#[derive(Debug, PartialEq, Eq)]
struct Outcome {
    /// Bytes the server received over an allowed port.
    received: usize,
    /// Connecting to a port the policy does not allow (a listener is there).
    blocked: Connect,
    /// `nmap -sS` states of a few ports.
    scan: BTreeMap<u16, String>,
}

fn set_mtu(pair: &Pair, mtu: u32) {
    let m = mtu.to_string();
    pair.server.ip(&["link", "set", Pair::SERVER_IF, "mtu", &m]);
    pair.client.ip(&["link", "set", Pair::CLIENT_IF, "mtu", &m]);
    // Without segmentation offloads the client sends frames of the MTU's size, as a NIC
    // would: the server sees real jumbo frames, not 64 KB GSO packets.
    let out = pair.client.run(
        "ethtool",
        &["-K", Pair::CLIENT_IF, "tso", "off", "gso", "off"],
        Duration::from_secs(15),
    );
    assert!(out.success(), "ethtool -K: {out}");
}

/// A TCP sink on `addr` in the server namespace: accepts one connection and counts the bytes
/// until EOF (bounded in time).
fn sink(pair: &Pair, addr: SocketAddr) -> thread::JoinHandle<usize> {
    let s = pair
        .server
        .socket(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP));
    s.set_reuse_address(true).expect("SO_REUSEADDR");
    s.bind(&addr.into()).expect("bind the sink");
    s.listen(4).expect("listen");
    let l: TcpListener = s.into();
    l.set_nonblocking(true).expect("nonblocking");
    thread::spawn(move || {
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut conn = loop {
            match l.accept() {
                Ok((c, _)) => break c,
                Err(_) if Instant::now() < deadline => thread::sleep(Duration::from_millis(5)),
                Err(e) => panic!("the sink accepted nothing in 30 s: {e}"),
            }
        };
        conn.set_nonblocking(false).expect("blocking");
        conn.set_read_timeout(Some(Duration::from_secs(10)))
            .expect("timeout");
        let mut buf = vec![0u8; 65536];
        let mut total = 0;
        while Instant::now() < deadline {
            match conn.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => total += n,
            }
        }
        total
    })
}

fn send(pair: &Pair, to: SocketAddr) {
    let s = pair
        .client
        .socket(Domain::for_address(to), Type::STREAM, Some(Protocol::TCP));
    s.connect_timeout(&to.into(), Duration::from_secs(10))
        .unwrap_or_else(|e| panic!("connecting to {to}: {e}"));
    let mut c: TcpStream = s.into();
    c.set_write_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let seg = vec![0x5au8; SEGMENT];
    for _ in 0..SEGMENTS {
        c.write_all(&seg).expect("write 8 KB");
    }
    c.shutdown(std::net::Shutdown::Write).expect("shutdown");
}

/// fw up on a fresh pair with `mtu`, then the traffic. Returns the pair (fw attached) too.
fn traffic(mtu: u32) -> (Pair, Outcome) {
    let pair = Pair::new(&format!("jumbo{mtu}"));
    set_mtu(&pair, mtu);
    let up = pair.fw_up(None);
    assert!(
        up.stdout.contains("xdp native"),
        "MTU {mtu}: fw did not attach in native mode: {up}"
    );
    let s = pair.status();
    assert_eq!(s.0["mode"], "native", "MTU {mtu}: {:#}", s.0);
    assert_eq!(s.0["variant"], "frags", "MTU {mtu}: {:#}", s.0);
    let rx = sink(&pair, pair.server_addr(false, 80));
    send(&pair, pair.server_addr(false, 80));
    let received = rx.join().expect("sink");
    let _listener = pair.listen(false, 8080);
    let blocked = pair
        .client
        .connect_tcp(pair.server_addr(false, 8080), None, CONNECT_DROP);
    let _web = pair.listen(false, 443);
    let scan = nmap(
        &pair.client,
        "-sS",
        pair.server_ip(false),
        &[22, 80, 443, 8080, 9000],
    );
    (
        pair,
        Outcome {
            received,
            blocked,
            scan,
        },
    )
}

#[test]
fn jumbo_frames_attach_native_and_are_judged_as_at_mtu_1500() {
    preflight(&["nmap", "ethtool"]);
    assert!(
        fw::probe::xdp_frags(),
        "this kernel has no multi-buffer XDP (< 5.18); the jumbo-frame test needs one"
    );
    let (small, at_1500) = traffic(1500);
    small.finish();
    let (jumbo, at_9000) = traffic(9000);
    assert_eq!(
        at_9000.received,
        SEGMENTS * SEGMENT,
        "the whole transfer arrived"
    );
    assert_eq!(
        at_9000.blocked,
        Connect::TimedOut,
        "a port the policy does not allow"
    );
    assert_eq!(at_1500, at_9000, "MTU 9000 is judged as MTU 1500");
    // The transfer's frames were judged in native mode as jumbo frames: the established
    // counter saw frames far larger than one page-sized buffer could hold at MTU 1500.
    let s = jumbo.status();
    let est = s.0["reasons"]
        .as_array()
        .and_then(|a| a.iter().find(|r| r["reason"] == "established"))
        .cloned()
        .expect("an established counter");
    let (pkts, bytes) = (
        est["packets"].as_u64().unwrap_or(0),
        est["bytes"].as_u64().unwrap_or(0),
    );
    let biggest_possible_average = bytes / pkts.max(1);
    assert!(
        bytes >= (SEGMENTS * SEGMENT) as u64 && biggest_possible_average > 4000,
        "the data segments were not judged as jumbo frames: {pkts} packets, {bytes} bytes"
    );
    assert_eq!(
        s.reason("headers-split"),
        0,
        "no frame of a normal stack is split"
    );
    jumbo.finish();
}

#[test]
fn without_multi_buffer_xdp_a_jumbo_mtu_falls_back_to_generic_and_says_why() {
    let pair = Pair::new("jumbold");
    set_mtu(&pair, 9000);
    let fw = |args: &[&str]| {
        let mut c: Command = pair.server.command(fw_lab::fw_bin());
        c.env("FW_XDP_FRAGS", "0").args(args);
        run_with_timeout(c, Duration::from_secs(60))
    };
    let native = fw(&["up", "--iface", Pair::SERVER_IF, "--mode", "native"]);
    assert!(!native.success(), "native mode cannot work here: {native}");
    let text = native.text();
    for needle in ["MTU", "9000", "5.18", "mtu 1500"] {
        assert!(
            text.contains(needle),
            "the error does not say {needle:?}: {native}"
        );
    }
    let up = fw(&["up", "--iface", Pair::SERVER_IF]).check();
    assert!(up.stdout.contains("xdp skb"), "{up}");
    assert!(
        up.stdout.contains("MTU"),
        "the warning does not name the MTU: {up}"
    );
    let s = pair.status();
    assert_eq!(s.0["mode"], "skb");
    assert_eq!(s.0["variant"], "linear");
    let note = s.0["problems"]
        .as_array()
        .and_then(|a| a.iter().find(|p| p["code"] == "generic-mode"))
        .cloned()
        .expect("a generic-mode note");
    assert!(
        note["detail"].as_str().is_some_and(|d| d.contains("MTU")),
        "fw status does not say why: {note:#}"
    );
    // Still a working filter in generic mode.
    let _l = pair.listen(false, 8080);
    assert_eq!(
        pair.client
            .connect_tcp(pair.server_addr(false, 8080), None, CONNECT_DROP),
        Connect::TimedOut
    );
    pair.fw(&["down", "--iface", Pair::SERVER_IF]).check();
    pair.finish();
}
