//! Tier 3, end to end: SYN cookies answered from XDP (`syn_cookies = "always"`). A spoofed SYN
//! flood at an open port (hping3, random sources) is answered by fw and never reaches the
//! server's socket layer, while a real client still connects and exchanges data: its handshake
//! completes through a cookie fw checked, handed to the listener. Root only; its own namespaces.

use std::time::{Duration, Instant};

use fw_lab::{CONNECT_OK, Connect, NetNs, Pair, TempDir, echo_msg, echoes, preflight};

const WEB: u16 = 80;
/// SYNs the flood sends (bounded: hping3 stops by itself).
const FLOOD: u32 = 20_000;

/// A TcpExt counter of the namespace (`nstat -az NAME`).
fn tcp_ext(ns: &NetNs, name: &str) -> u64 {
    let out = ns.run("nstat", &["-az", name], Duration::from_secs(10));
    assert!(out.success(), "nstat: {out}");
    out.stdout
        .lines()
        .find_map(|l| {
            let mut w = l.split_whitespace();
            (w.next() == Some(name)).then(|| w.next()?.parse().ok())?
        })
        .unwrap_or_else(|| panic!("{name} missing from nstat: {out}"))
}

#[test]
#[ignore = "fails today: most hping3 SYNs (no TCP options) end as 'answers that could not be built' (fw_cookie_tx grows the 54-byte frame by 40 bytes, more tailroom than a veth buffer has), and veth counts xdp_tx_errors for the rest, so real clients time out during the flood; run with --ignored"]
fn a_spoofed_syn_flood_is_answered_by_fw_and_a_real_client_still_connects() {
    preflight(&["hping3", "nstat", "ethtool"]);
    let dir = TempDir::new("syncookie");
    let policy = dir.write(
        "cookies.toml",
        "[options]\nsyn_cookies = \"always\"\n[[allow]]\nports = [80]\ncomment = \"web\"\n[[allow]]\nports = [22]\n",
    );
    let pair = Pair::new("syncookie");
    // The listener accepts cookie ACKs only while the kernel itself answers with cookies:
    // tcp_syncookies = 2 makes it do so for every SYN it sees (fw sees that leaving).
    let sysctl = pair.server.run(
        "sysctl",
        &["-w", "net.ipv4.tcp_syncookies=2"],
        Duration::from_secs(10),
    );
    assert!(sysctl.success(), "{sysctl}");
    // A veth delivers frames sent back with XDP_TX only to a peer that runs NAPI: GRO on (or
    // an XDP program) at the client's end. A real NIC needs nothing.
    let gro = pair.client.run(
        "ethtool",
        &["-K", Pair::CLIENT_IF, "gro", "on"],
        Duration::from_secs(10),
    );
    assert!(gro.success(), "{gro}");
    let _echo = pair.server.echo_tcp(pair.server_addr(false, WEB));
    pair.fw_up(Some(&policy));

    // A first connection: the kernel answers its SYN with a cookie of its own, which the egress
    // recorder sees leaving; from then on fw answers for this listener.
    let mut first = pair.client.stream(pair.server_addr(false, WEB), None);
    assert!(echoes(&mut first, &echo_msg("syncookie", 0), CONNECT_OK));
    drop(first);
    let s0 = pair.status();
    let kernel_sent0 = tcp_ext(&pair.server, "TcpExtSyncookiesSent");
    let recv0 = tcp_ext(&pair.server, "TcpExtSyncookiesRecv");

    let server = pair.v4(1).to_string();
    let count = FLOOD.to_string();
    let mut flood = pair.client.spawn(
        "hping3",
        &[
            "-S",
            "-p",
            "80",
            "--rand-source",
            "-c",
            &count,
            "-i",
            "u20",
            "-q",
            &server,
        ],
    );
    // A real client during the flood: connects, and its data goes both ways.
    let started = Instant::now();
    let mut during = Vec::new();
    for _ in 1..=5 {
        during.push(pair.connect(false, WEB));
        std::thread::sleep(Duration::from_millis(100));
    }
    let done = flood.wait_timeout(Duration::from_secs(60));
    assert!(done.is_some(), "hping3 did not finish in 60 s");
    let diag = || {
        let st = pair
            .server
            .run("ethtool", &["-S", Pair::SERVER_IF], Duration::from_secs(10));
        let ct = pair
            .client
            .run("ethtool", &["-S", Pair::CLIENT_IF], Duration::from_secs(10));
        format!(
            "status {:#}\nserver {}\nclient {}",
            pair.status().0,
            st.stdout,
            ct.stdout
        )
    };
    assert!(
        during.iter().all(|c| *c == Connect::Connected),
        "connections during the flood: {during:?}\n{}",
        diag()
    );
    let s1 = pair.status();
    let answered = s1.reason("syn-cookie") - s0.reason("syn-cookie");
    let completed = s1.reason("syn-cookie-ack") - s0.reason("syn-cookie-ack");
    let kernel_sent = tcp_ext(&pair.server, "TcpExtSyncookiesSent") - kernel_sent0;
    let recv = tcp_ext(&pair.server, "TcpExtSyncookiesRecv") - recv0;
    println!(
        "flood of {FLOOD} SYNs in {:?}: fw answered {answered}, the kernel answered {kernel_sent} with cookies of its own; handshakes completed through fw's cookies: {completed} (listener: {recv})",
        started.elapsed()
    );
    // hping3 may lose a few SYNs to its own send buffer; the kernel sees only the one SYN a
    // tick that keeps its cookie mode fresh.
    assert!(
        answered >= u64::from(FLOOD) * 9 / 10,
        "fw answered {answered} of {FLOOD} flood SYNs: {:#}",
        s1.0
    );
    assert!(
        kernel_sent <= 20,
        "the kernel answered {kernel_sent} SYNs itself during the flood"
    );
    assert!(
        completed >= 5 && recv >= 5,
        "the real client's handshakes through fw's cookies: fw {completed}, listener {recv}"
    );
    pair.finish();
}
