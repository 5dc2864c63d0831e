//! Tier 3, end to end: connection state (issue 4). fw on the server side of a veth pair, real
//! sockets on both sides: the protected host's own clients (curl, a DNS-style exchange, ping)
//! get their replies while the same packets unsolicited are dropped; sessions opened before
//! `fw up` survive it; idle UDP flows expire; ICMP errors about tracked flows (path-MTU
//! discovery) reach the host and others do not; inbound connections are promoted from the
//! embryo table by the handshake, blind ACKs are dropped and a SYN flood does not evict
//! established sessions; FIN and RST close entries.
//!
//! Root only. Every test makes its own namespaces, so they run in parallel. Where it matters, a
//! test first shows the packet in question does reach the host without fw, so the drop is fw's.

use std::{
    cell::Cell,
    io::{Read as _, Write as _},
    net::{IpAddr, Ipv4Addr, Ipv6Addr, Shutdown, SocketAddr, TcpStream},
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
    thread::{self, JoinHandle},
    time::{Duration, Instant},
};

use fw_lab::{
    CONNECT_OK, Connect, EchoServer, NetNs, Pair, TempDir, echoes, parse_hping3, preflight,
    udp_received,
};
use serde_json::Value;
use socket2::{Domain, Protocol, Socket, Type};

use Connect::{Connected, TimedOut};

const FAMILIES: [bool; 2] = [false, true];
/// How long to wait for a packet that should not arrive.
const QUIET: Duration = Duration::from_millis(500);

fn fam(v6: bool) -> &'static str {
    if v6 { "IPv6" } else { "IPv4" }
}

/// A message for an echo round trip, unique per call site.
fn msg(what: &str, round: usize) -> Vec<u8> {
    format!("fw-e2e {what} round {round}\n").into_bytes()
}

// ---------------------------------------------------------------------------------------------
// A tiny HTTP server (curl's counterpart) and an observer of ICMP that reaches a host

/// A minimal HTTP/1.0 server in a namespace: answers every GET with `body`, then closes.
struct HttpServer {
    stop: Arc<AtomicBool>,
    served: Arc<AtomicUsize>,
    thread: Option<JoinHandle<()>>,
}

impl HttpServer {
    const MAX_REQUESTS: usize = 100;
    const MAX_LIFETIME: Duration = Duration::from_secs(300);

    fn start(ns: &NetNs, addr: SocketAddr, body: Arc<Vec<u8>>) -> HttpServer {
        let s = ns.socket(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP));
        s.set_reuse_address(true).expect("SO_REUSEADDR");
        if addr.is_ipv6() {
            s.set_only_v6(true).expect("IPV6_V6ONLY");
        }
        s.bind(&addr.into())
            .unwrap_or_else(|e| panic!("bind {addr}: {e}"));
        s.listen(16).expect("listen");
        let l: std::net::TcpListener = s.into();
        l.set_nonblocking(true).expect("nonblocking");
        let stop = Arc::new(AtomicBool::new(false));
        let served = Arc::new(AtomicUsize::new(0));
        let (st, sv) = (stop.clone(), served.clone());
        let thread = thread::spawn(move || {
            let deadline = Instant::now() + Self::MAX_LIFETIME;
            while !st.load(Ordering::Relaxed)
                && Instant::now() < deadline
                && sv.load(Ordering::Relaxed) < Self::MAX_REQUESTS
            {
                let Ok((mut c, _)) = l.accept() else {
                    thread::sleep(Duration::from_millis(2));
                    continue;
                };
                let _ = c.set_nonblocking(false);
                let _ = c.set_read_timeout(Some(Duration::from_secs(5)));
                let mut req = Vec::new();
                let mut buf = [0u8; 4096];
                while !req.windows(4).any(|w| w == b"\r\n\r\n") && req.len() < 65536 {
                    match c.read(&mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => req.extend_from_slice(&buf[..n]),
                    }
                }
                if req.starts_with(b"GET ") {
                    let head = format!(
                        "HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                        body.len()
                    );
                    let _ = c.write_all(head.as_bytes());
                    let _ = c.write_all(&body);
                    sv.fetch_add(1, Ordering::Relaxed);
                }
            }
        });
        HttpServer {
            stop,
            served,
            thread: Some(thread),
        }
    }

    fn served(&self) -> usize {
        self.served.load(Ordering::Relaxed)
    }
}

impl Drop for HttpServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A raw ICMP (or ICMPv6) socket in a namespace: it gets a copy of every ICMP message that
/// reaches that host's stack, i.e. that XDP let through.
struct IcmpObserver {
    sock: Socket,
    v6: bool,
}

impl IcmpObserver {
    fn new(ns: &NetNs, v6: bool) -> IcmpObserver {
        let sock = if v6 {
            ns.socket(Domain::IPV6, Type::RAW, Some(Protocol::ICMPV6))
        } else {
            ns.socket(Domain::IPV4, Type::RAW, Some(Protocol::ICMPV4))
        };
        IcmpObserver { sock, v6 }
    }

    /// Read messages for up to `wait` until one (the ICMP part, from its type on) matches.
    fn saw(&self, wait: Duration, pred: impl Fn(&[u8]) -> bool) -> bool {
        let deadline = Instant::now() + wait;
        let mut buf = vec![0u8; 65536];
        for _ in 0..100_000 {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            self.sock
                .set_read_timeout(Some(left.max(Duration::from_millis(1))))
                .expect("SO_RCVTIMEO");
            let Ok(n) = std::io::Read::read(&mut &self.sock, &mut buf) else {
                return false;
            };
            // IPv4 raw sockets deliver the IP header too; ICMPv6 ones do not.
            let icmp = if self.v6 {
                &buf[..n]
            } else {
                let ihl = usize::from(buf[0] & 0x0f) * 4;
                &buf[ihl.min(n)..n]
            };
            if pred(icmp) {
                return true;
            }
        }
        false
    }
}

// ---------------------------------------------------------------------------------------------
// Hand-made ICMP messages

fn checksum(data: &[u8]) -> u16 {
    let mut sum = 0u32;
    for c in data.chunks(2) {
        let w = if c.len() == 2 {
            u16::from_be_bytes([c[0], c[1]])
        } else {
            u16::from_be_bytes([c[0], 0])
        };
        sum += u32::from(w);
    }
    while sum >> 16 != 0 {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// The first 8 bytes of a TCP header: ports and sequence number.
fn tcp8(sport: u16, dport: u16, seq: u32) -> Vec<u8> {
    let mut t = Vec::with_capacity(8);
    t.extend_from_slice(&sport.to_be_bytes());
    t.extend_from_slice(&dport.to_be_bytes());
    t.extend_from_slice(&seq.to_be_bytes());
    t
}

/// ICMP "fragmentation needed" (type 3 code 4) quoting a 1500-byte TCP segment `src:sport →
/// dst:dport` with sequence number `seq` (valid checksums; the kernel adds the outer header).
fn frag_needed(
    mtu: u16,
    src: Ipv4Addr,
    dst: Ipv4Addr,
    sport: u16,
    dport: u16,
    seq: u32,
) -> Vec<u8> {
    let mut ip = vec![0x45, 0];
    ip.extend_from_slice(&1500u16.to_be_bytes());
    ip.extend_from_slice(&[0x12, 0x34, 0x40, 0x00, 64, 6, 0, 0]);
    ip.extend_from_slice(&src.octets());
    ip.extend_from_slice(&dst.octets());
    let c = checksum(&ip);
    ip[10..12].copy_from_slice(&c.to_be_bytes());
    let mut m = vec![3, 4, 0, 0, 0, 0];
    m.extend_from_slice(&mtu.to_be_bytes());
    m.extend_from_slice(&ip);
    m.extend_from_slice(&tcp8(sport, dport, seq));
    let c = checksum(&m);
    m[2..4].copy_from_slice(&c.to_be_bytes());
    m
}

/// ICMPv6 "packet too big" (type 2) quoting a TCP segment `src:sport → dst:dport`. The kernel
/// fills in the checksum of ICMPv6 raw sockets.
fn packet_too_big(
    mtu: u32,
    src: Ipv6Addr,
    dst: Ipv6Addr,
    sport: u16,
    dport: u16,
    seq: u32,
) -> Vec<u8> {
    let mut m = vec![2, 0, 0, 0];
    m.extend_from_slice(&mtu.to_be_bytes());
    m.extend_from_slice(&[0x60, 0, 0, 0]);
    m.extend_from_slice(&1460u16.to_be_bytes());
    m.extend_from_slice(&[6, 64]);
    m.extend_from_slice(&src.octets());
    m.extend_from_slice(&dst.octets());
    m.extend_from_slice(&tcp8(sport, dport, seq));
    m
}

/// An echo reply nobody asked for (ICMP type 0 / ICMPv6 type 129) with identifier `id`.
fn echo_reply(v6: bool, id: u16) -> Vec<u8> {
    let mut m = vec![if v6 { 129 } else { 0 }, 0, 0, 0];
    m.extend_from_slice(&id.to_be_bytes());
    m.extend_from_slice(&1u16.to_be_bytes());
    m.extend_from_slice(b"fw-e2e unsolicited echo reply");
    if !v6 {
        let c = checksum(&m);
        m[2..4].copy_from_slice(&c.to_be_bytes());
    }
    m
}

/// Send an ICMP message from `ns` to `to` through a raw socket.
fn send_icmp(ns: &NetNs, to: IpAddr, m: &[u8]) {
    let s = if to.is_ipv6() {
        ns.socket(Domain::IPV6, Type::RAW, Some(Protocol::ICMPV6))
    } else {
        ns.socket(Domain::IPV4, Type::RAW, Some(Protocol::ICMPV4))
    };
    let n = s
        .send_to(m, &SocketAddr::new(to, 0).into())
        .unwrap_or_else(|e| panic!("raw ICMP send to {to}: {e}"));
    assert_eq!(n, m.len(), "short raw ICMP send");
}

/// Whether an ICMP error (from its type on) is `ty` and quotes a TCP segment to `dport`.
fn quotes(icmp: &[u8], ty: u8, v6: bool, dport: u16) -> bool {
    let inner = if v6 { 8 + 40 } else { 8 + 20 };
    icmp.len() >= inner + 4
        && icmp[0] == ty
        && u16::from_be_bytes([icmp[inner + 2], icmp[inner + 3]]) == dport
}

/// For each TCP flow `(src, sport, dport)`, the sequence number that follows its last segment
/// among the frames `raw` captured (its SND.NXT once everything was sent): frames are read for
/// `wait`.
fn next_seqs(
    raw: &fw_lab::RawLink,
    flows: &[(IpAddr, u16, u16)],
    wait: Duration,
) -> Vec<Option<u32>> {
    let last: Vec<Cell<Option<u32>>> = flows.iter().map(|_| Cell::new(None)).collect();
    raw.wait_for(wait, |f| {
        if f.len() < 14 {
            return false;
        }
        let (ip, l4, src): (&[u8], usize, IpAddr) = match u16::from_be_bytes([f[12], f[13]]) {
            0x0800 if f.len() >= 34 => {
                let ip = &f[14..];
                let ihl = usize::from(ip[0] & 0x0f) * 4;
                let total = usize::from(u16::from_be_bytes([ip[2], ip[3]]));
                let src = Ipv4Addr::new(ip[12], ip[13], ip[14], ip[15]);
                if ip[9] != 6 {
                    return false;
                }
                (&ip[..total.min(ip.len())], ihl, src.into())
            }
            0x86dd if f.len() >= 54 => {
                let ip = &f[14..];
                let total = 40 + usize::from(u16::from_be_bytes([ip[4], ip[5]]));
                let src: [u8; 16] = ip[8..24].try_into().expect("16 bytes");
                if ip[6] != 6 {
                    return false;
                }
                (&ip[..total.min(ip.len())], 40, Ipv6Addr::from(src).into())
            }
            _ => return false,
        };
        if ip.len() < l4 + 20 {
            return false;
        }
        let t = &ip[l4..];
        let (sport, dport) = (
            u16::from_be_bytes([t[0], t[1]]),
            u16::from_be_bytes([t[2], t[3]]),
        );
        let Some(i) = flows.iter().position(|f| *f == (src, sport, dport)) else {
            return false;
        };
        let seq = u32::from_be_bytes([t[4], t[5], t[6], t[7]]);
        let doff = usize::from(t[12] >> 4) * 4;
        let syn_fin = u32::from(t[13] & 0x03 != 0);
        let len = t.len().saturating_sub(doff) as u32 + syn_fin;
        last[i].set(Some(seq.wrapping_add(len)));
        false
    });
    last.iter().map(Cell::get).collect()
}

// ---------------------------------------------------------------------------------------------
// Small helpers

/// `fw conns --json` entries for one TCP/UDP flow, by the server's and the client's address.
fn conn_entries(pair: &Pair, proto: &str, local: SocketAddr, remote: SocketAddr) -> Vec<Value> {
    let (l, r) = (local.to_string(), remote.to_string());
    pair.conns()
        .into_iter()
        .filter(|c| c["proto"] == proto && c["local"] == l.as_str() && c["remote"] == r.as_str())
        .collect()
}

/// Poll `fw conns` (bounded) until the flow's single entry satisfies `done`; return it.
fn conn_when(
    pair: &Pair,
    proto: &str,
    local: SocketAddr,
    remote: SocketAddr,
    done: impl Fn(&Value) -> bool,
) -> Option<Value> {
    let deadline = Instant::now() + CONNECT_OK;
    loop {
        let e = conn_entries(pair, proto, local, remote);
        if let [one] = e.as_slice()
            && done(one)
        {
            return Some(one.clone());
        }
        if Instant::now() >= deadline {
            return e.into_iter().next();
        }
        thread::sleep(Duration::from_millis(50));
    }
}

/// The server's and the client's end of a stream held on the server (`server_side`) or the
/// client.
fn ends(s: &TcpStream, server_side: bool) -> (SocketAddr, SocketAddr) {
    let (l, p) = (
        s.local_addr().expect("local address"),
        s.peer_addr().expect("peer address"),
    );
    if server_side { (l, p) } else { (p, l) }
}

fn local_port(s: &TcpStream) -> u16 {
    s.local_addr().expect("local address").port()
}

/// A DNS query for `fw-e2e.test. A` with identifier `id`.
fn dns_query(id: u16) -> Vec<u8> {
    let mut q = id.to_be_bytes().to_vec();
    q.extend_from_slice(&[0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0]);
    for label in ["fw-e2e", "test"] {
        q.push(label.len() as u8);
        q.extend_from_slice(label.as_bytes());
    }
    q.extend_from_slice(&[0, 0, 1, 0, 1]);
    q
}

/// hping3 from `ns` with `args` (target last), bounded; returns (sent, replies).
fn hping(ns: &NetNs, args: &[&str]) -> (u64, u64) {
    let out = ns.run("hping3", args, Duration::from_secs(60));
    assert!(!out.timed_out(), "hping3 did not finish: {out}");
    parse_hping3(&out)
}

/// A number for hping3's `-L` (acknowledgment) that nobody could have predicted.
fn random_ack() -> String {
    let n = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .subsec_nanos();
    (n ^ 0x5a5a_5a5a).to_string()
}

// ---------------------------------------------------------------------------------------------
// The protected host's own clients

/// With default DROP in force, what the protected host opens itself gets its answers: an HTTP
/// download with curl, a DNS-style UDP query from an ephemeral port, ping. The same kind of
/// packets sent to it unsolicited (a stray ACK from the web server's port, a datagram from port
/// 53 to a port that asked nothing, an echo reply to no ping) reach it without fw and are
/// dropped with fw.
#[test]
fn the_hosts_own_clients_get_replies_and_unsolicited_replies_are_dropped() {
    preflight(&["curl", "hping3", "ping"]);
    const HTTP: u16 = 8000;
    let pair = Pair::new("own");
    // Big enough for a few hundred segments through the ESTABLISHED path.
    let body: Arc<Vec<u8>> = Arc::new(
        (0..256 * 1024)
            .map(|i| b"fw-e2e-http-body\n"[i % 17])
            .collect(),
    );
    let http = FAMILIES.map(|v6| {
        HttpServer::start(
            &pair.client,
            SocketAddr::new(pair.client_ip(v6), HTTP),
            body.clone(),
        )
    });
    let _l80 = pair.listen(false, 80);
    let dns = FAMILIES.map(|v6| {
        pair.client
            .bind_udp(SocketAddr::new(pair.client_ip(v6), 53))
    });
    let quiet = FAMILIES.map(|v6| pair.server.bind_udp(SocketAddr::new(pair.server_ip(v6), 0)));
    let observers = FAMILIES.map(|v6| IcmpObserver::new(&pair.server, v6));
    let (server4, ack) = (pair.v4(1).to_string(), random_ack());
    // A stray ACK from the web server's port, as if answering a connection nobody opened.
    let stray_ack = |port: &str| {
        hping(
            &pair.client,
            &[
                "-A", "-L", &ack, "-s", "8000", "-k", "-p", port, "-c", "3", "-i", "u50000",
                &server4,
            ],
        )
    };
    let unsolicited = |v6: bool, round: u16| {
        let i = usize::from(v6);
        dns[i]
            .send_to(
                &dns_query(0xbad0 + round),
                quiet[i].local_addr().expect("addr"),
            )
            .expect("send");
        let id = 0x7e00 + round * 2 + u16::from(v6);
        send_icmp(&pair.client, pair.server_ip(v6), &echo_reply(v6, id));
        let delivered = udp_received(&quiet[i], QUIET, 1);
        let seen = observers[i].saw(QUIET, |m| {
            m.len() >= 6 && m[0] == if v6 { 129 } else { 0 } && m[4..6] == id.to_be_bytes()
        });
        (delivered, seen)
    };

    // Without fw the unsolicited packets reach the host: their absence later is fw's doing.
    for v6 in FAMILIES {
        assert_eq!(
            unsolicited(v6, 0),
            (1, true),
            "{}: (datagram from 53 delivered, echo reply seen) without fw",
            fam(v6)
        );
    }
    for port in ["80", "40000"] {
        assert_eq!(
            stray_ack(port),
            (3, 3),
            "stray ACKs to {port} without fw: the stack answers each with an RST"
        );
    }

    pair.fw_up(None);
    let s0 = pair.status();
    for v6 in FAMILIES {
        let url = match pair.client_ip(v6) {
            IpAddr::V4(a) => format!("http://{a}:{HTTP}/"),
            IpAddr::V6(a) => format!("http://[{a}]:{HTTP}/"),
        };
        let out = pair.server.run(
            "curl",
            &["-sS", "-g", "--max-time", "10", "-o", "-", &url],
            Duration::from_secs(20),
        );
        assert!(out.success(), "{}: curl through fw failed: {out}", fam(v6));
        assert!(
            out.stdout.as_bytes() == body.as_slice(),
            "{}: curl got {} bytes, want {}",
            fam(v6),
            out.stdout.len(),
            body.len()
        );

        // DNS-style: a query from an ephemeral port, the answer from port 53.
        let i = usize::from(v6);
        let asker = pair.server.bind_udp(SocketAddr::new(pair.server_ip(v6), 0));
        let q = dns_query(0x1000 + i as u16);
        asker
            .send_to(&q, SocketAddr::new(pair.client_ip(v6), 53))
            .expect("send query");
        dns[i].set_read_timeout(Some(CONNECT_OK)).expect("timeout");
        let mut buf = [0u8; 512];
        let (n, from) = dns[i].recv_from(&mut buf).expect("the query arrived");
        assert_eq!(&buf[..n], q.as_slice());
        let mut answer = q.clone();
        answer[2] |= 0x80; // QR: a response
        dns[i].send_to(&answer, from).expect("send answer");
        asker.set_read_timeout(Some(CONNECT_OK)).expect("timeout");
        let got = asker.recv_from(&mut buf).map(|(n, _)| buf[..n].to_vec());
        assert_eq!(
            got.ok(),
            Some(answer),
            "{}: the DNS-style answer from port 53 was not delivered",
            fam(v6)
        );

        let peer = pair.client_ip(v6).to_string();
        let out = pair.server.run(
            "ping",
            &["-c", "2", "-i", "0.2", "-W", "2", &peer],
            Duration::from_secs(20),
        );
        assert!(out.success(), "{}: ping through fw: {out}", fam(v6));

        assert_eq!(
            unsolicited(v6, 1),
            (0, false),
            "{}: (datagram from 53 delivered, echo reply seen) with fw",
            fam(v6)
        );
    }
    for port in ["80", "40000"] {
        assert_eq!(
            stray_ack(port),
            (3, 0),
            "stray ACKs to {port} with fw: an RST came back, so fw let them in"
        );
    }
    let s1 = pair.status_when(CONNECT_OK, |s| {
        s.reason("tcp-new-not-syn") >= s0.reason("tcp-new-not-syn") + 6
    });
    assert_eq!(
        s1.reason("tcp-new-not-syn") - s0.reason("tcp-new-not-syn"),
        6,
        "tcp-new-not-syn counts the 6 stray ACKs: {:#}",
        s1.0
    );
    assert!(
        s1.reason("default-drop") >= s0.reason("default-drop") + 4,
        "default-drop counts the 2 datagrams and 2 echo replies: {:#}",
        s1.0
    );
    assert!(
        s1.reason("established") >= s0.reason("established") + 100,
        "the downloads' segments did not pass as established: {:#}",
        s1.0
    );
    assert!(http.iter().all(|h| h.served() == 1));
    pair.finish();
}

// ---------------------------------------------------------------------------------------------
// Sessions that exist before the filter

/// TCP sessions opened before `fw up` keep exchanging data after it, whichever side opened
/// them and whether or not the policy allows their port: `fw up` seeded them from the sockets
/// it found (`fw conns` says so). A new connection to the port the policy does not allow is
/// dropped, so it is the seeding that keeps the old one alive.
#[test]
fn sessions_opened_before_fw_up_survive_it() {
    preflight(&[]);
    const SSH: u16 = 22; // allowed by the seed policy
    const OTHER: u16 = 7000; // not allowed
    const CLIENT_SVC: u16 = 9000;
    const HTTPS: u16 = 443; // allowed; used below as the server's own source port
    let pair = Pair::new("seeded");
    let _servers: Vec<EchoServer> = FAMILIES
        .iter()
        .flat_map(|&v6| {
            [
                pair.server.echo_tcp(pair.server_addr(v6, SSH)),
                pair.server.echo_tcp(pair.server_addr(v6, OTHER)),
                pair.client
                    .echo_tcp(SocketAddr::new(pair.client_ip(v6), CLIENT_SVC)),
            ]
        })
        .collect();

    // (what, stream, server end, client end, the table fw must seed it in)
    let mut sessions = Vec::new();
    for v6 in FAMILIES {
        let f = fam(v6);
        for port in [SSH, OTHER] {
            let s = pair.client.stream(pair.server_addr(v6, port), None);
            let (sa, ca) = ends(&s, false);
            sessions.push((format!("{f} client→server:{port}"), s, sa, ca, "in"));
        }
        let to = SocketAddr::new(pair.client_ip(v6), CLIENT_SVC);
        let s = pair.server.stream(to, None);
        let (sa, ca) = ends(&s, true);
        sessions.push((format!("{f} server→client:{CLIENT_SVC}"), s, sa, ca, "out"));
        let from = pair.server_addr(v6, HTTPS);
        let s = pair.server.stream(to, Some(from));
        let (sa, ca) = ends(&s, true);
        sessions.push((
            format!("{f} server:{HTTPS}→client:{CLIENT_SVC}"),
            s,
            sa,
            ca,
            "out",
        ));
    }
    for (what, s, ..) in &mut sessions {
        assert!(echoes(s, &msg(what, 0), CONNECT_OK), "{what}: before fw up");
    }

    pair.fw_up(None);
    let s0 = pair.status();
    for round in 1..=3 {
        for (what, s, ..) in &mut sessions {
            assert!(
                echoes(s, &msg(what, round), CONNECT_OK),
                "{what}: no echo after fw up (round {round})"
            );
        }
    }
    for (what, _, sa, ca, table) in &sessions {
        let e = conn_entries(&pair, "tcp", *sa, *ca);
        assert_eq!(e.len(), 1, "{what}: fw conns entries: {e:#?}");
        assert_eq!(e[0]["table"], *table, "{what}: {:#}", e[0]);
        assert_eq!(
            e[0]["seeded"], true,
            "{what}: not marked seeded: {:#}",
            e[0]
        );
        assert_eq!(e[0]["state"], "ESTABLISHED", "{what}: {:#}", e[0]);
    }
    for v6 in FAMILIES {
        assert_eq!(
            pair.probe(v6, OTHER),
            TimedOut,
            "{}: a new connection to {OTHER} (not allowed) got through",
            fam(v6)
        );
        assert_eq!(pair.connect(v6, SSH), Connected, "{}: a new SSH", fam(v6));
    }
    let s1 = pair.status();
    assert_eq!(
        s1.reason("tcp-new-not-syn"),
        s0.reason("tcp-new-not-syn"),
        "a segment of the seeded sessions was dropped (and retransmitted): {:#}",
        s1.0
    );
    assert!(s1.reason("default-drop") >= s0.reason("default-drop") + 2);
    drop(sessions);
    pair.finish();
}

// ---------------------------------------------------------------------------------------------
// Timeouts

/// With `udp_timeout = 2` and `udp_stream_timeout = 3`: a datagram from the peer of a flow
/// that got a reply passes while the flow is fresh and is dropped once it has been idle longer
/// than 3 s; an answer to a query left unanswered for more than 2 s is dropped. A new query
/// opens the flow again.
#[test]
fn an_idle_udp_flow_expires() {
    preflight(&[]);
    let dir = TempDir::new("udp-timeout");
    let policy = dir.write(
        "udp-timeout.toml",
        "# e2e: short UDP timeouts\n[options]\nudp_timeout = 2\nudp_stream_timeout = 3\n\n[[allow]]\nports = [22]\n",
    );
    let pair = Pair::new("udpexp");
    pair.fw_up(Some(&policy));
    let peer = pair
        .client
        .bind_udp(SocketAddr::new(pair.client_ip(false), 53));
    let to_peer = peer.local_addr().expect("addr");
    let streamed = pair
        .server
        .bind_udp(SocketAddr::new(pair.server_ip(false), 0));
    let unanswered = pair
        .server
        .bind_udp(SocketAddr::new(pair.server_ip(false), 0));
    let (a, b) = (
        streamed.local_addr().expect("addr"),
        unanswered.local_addr().expect("addr"),
    );
    peer.set_read_timeout(Some(CONNECT_OK)).expect("timeout");
    let mut buf = [0u8; 512];

    streamed.send_to(b"query A", to_peer).expect("send");
    assert_eq!(peer.recv_from(&mut buf).map(|r| r.1).ok(), Some(a));
    let t_b = Instant::now();
    unanswered.send_to(b"query B", to_peer).expect("send");
    assert_eq!(peer.recv_from(&mut buf).map(|r| r.1).ok(), Some(b));
    peer.send_to(b"answer A", a).expect("send");
    assert_eq!(udp_received(&streamed, CONNECT_OK, 1), 1, "the answer");
    // Fresh: more datagrams from the peer's port pass.
    peer.send_to(b"more A", a).expect("send");
    assert_eq!(
        udp_received(&streamed, CONNECT_OK, 1),
        1,
        "a datagram from the peer's port while the flow is fresh was dropped"
    );
    let t_a = Instant::now();
    let e = conn_when(&pair, "udp", a, to_peer, |e| e["state"] == "REPLIED");
    assert!(
        e.is_some(),
        "fw conns does not list flow A as REPLIED: {e:#?}"
    );

    // B waited for its answer longer than udp_timeout (2 s).
    thread::sleep(Duration::from_millis(2600).saturating_sub(t_b.elapsed()));
    peer.send_to(b"late answer B", b).expect("send");
    assert_eq!(
        udp_received(&unanswered, QUIET, 1),
        0,
        "an answer {:?} after an unanswered query was delivered (udp_timeout = 2)",
        t_b.elapsed()
    );
    // A was idle longer than udp_stream_timeout (3 s).
    thread::sleep(Duration::from_millis(4500).saturating_sub(t_a.elapsed()));
    let s0 = pair.status();
    peer.send_to(b"stale A", a).expect("send");
    assert_eq!(
        udp_received(&streamed, QUIET, 1),
        0,
        "a datagram {:?} after the flow went idle was delivered (udp_stream_timeout = 3)",
        t_a.elapsed()
    );
    let s1 = pair.status_when(CONNECT_OK, |s| {
        s.reason("default-drop") > s0.reason("default-drop")
    });
    assert!(
        s1.reason("default-drop") > s0.reason("default-drop"),
        "the stale datagram was not counted as default-drop: {:#}",
        s1.0
    );
    assert!(
        conn_entries(&pair, "udp", a, to_peer).is_empty(),
        "the expired flow is still listed"
    );

    // A new query opens the flow again.
    streamed.send_to(b"query A again", to_peer).expect("send");
    assert_eq!(peer.recv_from(&mut buf).map(|r| r.1).ok(), Some(a));
    peer.send_to(b"answer A again", a).expect("send");
    assert_eq!(
        udp_received(&streamed, CONNECT_OK, 1),
        1,
        "the answer to a new query after the expiry was dropped"
    );
    pair.finish();
}

// ---------------------------------------------------------------------------------------------
// RELATED: ICMP errors

/// Path-MTU discovery: a "fragmentation needed" (ICMP 3/4) or "packet too big" (ICMPv6 2)
/// error quoting a TCP connection the host opened reaches it (counted as `related`; the host
/// lowers its path MTU, as `ip route get` shows), while the same error quoting a flow the host
/// never opened, which reaches it without fw, is dropped (`icmp-unrelated`).
#[test]
fn pmtu_errors_about_tracked_flows_reach_the_host_and_others_do_not() {
    preflight(&[]);
    const SVC: u16 = 9000;
    const NEVER: u16 = 9999; // the host never talked to this port
    const MTU4: u16 = 1300;
    const MTU6: u32 = 1400;
    let pair = Pair::new("pmtu");
    let _echo = FAMILIES.map(|v6| {
        pair.client
            .echo_tcp(SocketAddr::new(pair.client_ip(v6), SVC))
    });
    let raw = pair.client.raw_link(Pair::CLIENT_IF);
    let observers = FAMILIES.map(|v6| IcmpObserver::new(&pair.server, v6));
    let error = |v6: bool, sport: u16, dport: u16, seq: u32| -> Vec<u8> {
        match (pair.server_ip(v6), pair.client_ip(v6)) {
            (IpAddr::V4(s), IpAddr::V4(c)) => frag_needed(MTU4, s, c, sport, dport, seq),
            (IpAddr::V6(s), IpAddr::V6(c)) => packet_too_big(MTU6, s, c, sport, dport, seq),
            _ => unreachable!(),
        }
    };
    let ty = |v6: bool| if v6 { 2 } else { 3 };
    let route = |v6: bool| {
        let peer = pair.client_ip(v6).to_string();
        let fam_arg = if v6 { "-6" } else { "-4" };
        pair.server.ip(&[fam_arg, "route", "get", &peer]).stdout
    };
    let mtu_word = |v6: bool| {
        if v6 {
            format!("mtu {MTU6}")
        } else {
            format!("mtu {MTU4}")
        }
    };

    // Without fw the error about an unknown flow reaches the host (the stack ignores it: no
    // socket, so no MTU change).
    for v6 in FAMILIES {
        send_icmp(
            &pair.client,
            pair.server_ip(v6),
            &error(v6, 40001, NEVER, 1),
        );
        assert!(
            observers[usize::from(v6)].saw(CONNECT_OK, |m| quotes(m, ty(v6), v6, NEVER)),
            "{}: the ICMP error did not reach the host even without fw",
            fam(v6)
        );
        assert!(!route(v6).contains("mtu"), "{}: {}", fam(v6), route(v6));
    }

    pair.fw_up(None);
    let s0 = pair.status();
    let mut streams = Vec::new();
    for v6 in FAMILIES {
        let mut s = pair
            .server
            .stream(SocketAddr::new(pair.client_ip(v6), SVC), None);
        assert!(echoes(&mut s, &msg("pmtu", 0), CONNECT_OK), "{}", fam(v6));
        streams.push(s);
    }
    for v6 in FAMILIES {
        let i = usize::from(v6);
        send_icmp(
            &pair.client,
            pair.server_ip(v6),
            &error(v6, 40001, NEVER, 1),
        );
        assert!(
            !observers[i].saw(QUIET, |m| quotes(m, ty(v6), v6, NEVER)),
            "{}: an ICMP error about an untracked flow reached the host",
            fam(v6)
        );
    }
    let s1 = pair.status_when(CONNECT_OK, |s| {
        s.reason("icmp-unrelated") >= s0.reason("icmp-unrelated") + 2
    });
    assert_eq!(
        s1.reason("icmp-unrelated") - s0.reason("icmp-unrelated"),
        2,
        "icmp-unrelated: {:#}",
        s1.0
    );

    // The stack acts only on errors quoting a sequence number it has sent.
    let flows = FAMILIES.map(|v6| {
        (
            pair.server_ip(v6),
            local_port(&streams[usize::from(v6)]),
            SVC,
        )
    });
    let seqs = next_seqs(&raw, &flows, QUIET);
    for v6 in FAMILIES {
        let i = usize::from(v6);
        let sport = flows[i].1;
        let seq =
            seqs[i].unwrap_or_else(|| panic!("{}: no segment of the session captured", fam(v6)));
        assert!(!route(v6).contains("mtu"), "{}: {}", fam(v6), route(v6));
        send_icmp(
            &pair.client,
            pair.server_ip(v6),
            &error(v6, sport, SVC, seq),
        );
        assert!(
            observers[i].saw(CONNECT_OK, |m| quotes(m, ty(v6), v6, SVC)),
            "{}: the error about the tracked flow did not reach the host",
            fam(v6)
        );
        let deadline = Instant::now() + CONNECT_OK;
        while !route(v6).contains(&mtu_word(v6)) && Instant::now() < deadline {
            thread::sleep(Duration::from_millis(20));
        }
        let r = route(v6);
        assert!(
            r.contains(&mtu_word(v6)),
            "{}: the path MTU was not lowered to {}: {r}",
            fam(v6),
            mtu_word(v6)
        );
        assert!(
            echoes(&mut streams[i], &msg("pmtu", 1), CONNECT_OK),
            "{}",
            fam(v6)
        );
    }
    let s2 = pair.status_when(CONNECT_OK, |s| {
        s.reason("related") >= s1.reason("related") + 2
    });
    assert_eq!(
        s2.reason("related") - s1.reason("related"),
        2,
        "related: {:#}",
        s2.0
    );
    assert_eq!(s2.reason("icmp-unrelated"), s1.reason("icmp-unrelated"));
    drop(streams);
    pair.finish();
}

// ---------------------------------------------------------------------------------------------
// Inbound connections

/// An inbound connection to an allowed port is an embryo from the host's SYN+ACK until the
/// client's handshake ACK, then an `in` entry; a blind ACK to the same port (which the stack
/// answers without fw) is dropped as `tcp-new-not-syn`; a SYN flood to the port fills only the
/// embryo table: the established session keeps exchanging data and the `in`/`out` tables do
/// not change.
#[test]
fn handshakes_promote_embryos_and_floods_do_not_evict_sessions() {
    preflight(&["hping3", "iptables-legacy"]);
    const WEB: u16 = 80;
    const FLOOD: u32 = 3000;
    const FLOOD_BASE: u16 = 20_000;
    let pair = Pair::new("inbound");
    let _echo = pair.server.echo_tcp(pair.server_addr(false, WEB));
    let server4 = pair.v4(1);
    let blind = |ack: &str| {
        hping(
            &pair.client,
            &[
                "-A",
                "-L",
                ack,
                "-p",
                "80",
                "-c",
                "3",
                "-i",
                "u50000",
                &server4.to_string(),
            ],
        )
    };
    let ack = random_ack();
    assert_eq!(
        blind(&ack),
        (3, 3),
        "blind ACKs without fw: the stack answers each with an RST"
    );

    pair.fw_up(None);
    let s0 = pair.status();
    let mut session = pair.client.stream(pair.server_addr(false, WEB), None);
    assert!(echoes(&mut session, &msg("inbound", 0), CONNECT_OK));
    let s1 = pair.status();
    let (e0, e1) = (s0.table("embryo"), s1.table("embryo"));
    let (i0, i1) = (s0.table("in"), s1.table("in"));
    assert_eq!(
        (e1.created - e0.created, e1.removed - e0.removed, e1.entries),
        (1, 1, e0.entries),
        "embryo (created, removed, entries): the handshake was not promoted: {:#}",
        s1.0
    );
    assert_eq!(
        (i1.created - i0.created, i1.entries - i0.entries),
        (1, 1),
        "in (created, entries): {:#}",
        s1.0
    );
    let (sa, ca) = ends(&session, false);
    let e = conn_entries(&pair, "tcp", sa, ca);
    assert!(
        e.len() == 1 && e[0]["table"] == "in" && e[0]["state"] == "ESTABLISHED",
        "fw conns: {e:#?}"
    );

    assert_eq!(blind(&ack), (3, 0), "blind ACKs with fw: an RST came back");
    let s2 = pair.status_when(CONNECT_OK, |s| {
        s.reason("tcp-new-not-syn") >= s1.reason("tcp-new-not-syn") + 3
    });
    assert_eq!(
        s2.reason("tcp-new-not-syn") - s1.reason("tcp-new-not-syn"),
        3,
        "tcp-new-not-syn: {:#}",
        s2.0
    );
    assert_eq!(
        s2.table("in"),
        s1.table("in"),
        "a blind ACK changed the in table"
    );

    // The flood: SYNs from source ports FLOOD_BASE, FLOOD_BASE + 1, ..., 100 µs apart. Like a
    // spoofed flood, nothing answers the host's SYN+ACKs: the client's own stack would refuse
    // each with an RST (which fw lets through, ending that embryo), so its RSTs are dropped
    // inside the client namespace for the flood.
    let rst_drop = [
        "OUTPUT",
        "-p",
        "tcp",
        "--tcp-flags",
        "RST",
        "RST",
        "-d",
        "SERVER",
        "-j",
        "DROP",
    ];
    let server_s = server4.to_string();
    let rule: Vec<&str> = rst_drop
        .iter()
        .map(|a| {
            if *a == "SERVER" {
                server_s.as_str()
            } else {
                *a
            }
        })
        .collect();
    let add: Vec<&str> = std::iter::once("-A").chain(rule.iter().copied()).collect();
    pair.client
        .run("iptables-legacy", &add, Duration::from_secs(10))
        .check();
    let (sent, _) = hping(
        &pair.client,
        &[
            "-S",
            "-s",
            &FLOOD_BASE.to_string(),
            "-p",
            "80",
            "-i",
            "u100",
            "-c",
            &FLOOD.to_string(),
            &server4.to_string(),
        ],
    );
    assert!(sent >= u64::from(FLOOD) * 9 / 10, "hping3 sent {sent} SYNs");
    let s3 = pair.status_when(CONNECT_OK, |s| {
        s.table("embryo").created >= s2.table("embryo").created + sent / 2
    });
    let grew = s3.table("embryo").created - s2.table("embryo").created;
    println!(
        "SYN flood: {sent} SYNs, {grew} embryos created; tables after: {:?} / {:?} / {:?}",
        s3.table("out"),
        s3.table("in"),
        s3.table("embryo")
    );
    assert!(
        grew >= sent / 2,
        "the flood's handshakes did not land in the embryo table: {:#}",
        s3.0
    );
    assert!(s3.table("embryo").entries > s2.table("embryo").entries);
    let del: Vec<&str> = std::iter::once("-D").chain(rule.iter().copied()).collect();
    pair.client
        .run("iptables-legacy", &del, Duration::from_secs(10))
        .check();
    for round in 1..=3 {
        assert!(
            echoes(&mut session, &msg("inbound after flood", round), CONNECT_OK),
            "the established session stopped after the flood (round {round})"
        );
    }
    let s4 = pair.status();
    for t in ["in", "out"] {
        assert_eq!(
            s4.table(t),
            s2.table(t),
            "the flood changed the {t} table: {:#}",
            s4.0
        );
    }
    assert_eq!(s4.table("embryo").evicted, 0, "{:#}", s4.0);

    // Blind ACKs from the flood's last source ports, whose handshakes are embryos: without
    // the acknowledgment number of the host's SYN+ACK they promote nothing and are dropped.
    // (Judged by the counters: the host may still be retransmitting SYN+ACKs to these ports.)
    let late = (FLOOD_BASE + FLOOD as u16 - 10).to_string();
    hping(
        &pair.client,
        &[
            "-A",
            "-L",
            &ack,
            "-s",
            &late,
            "-p",
            "80",
            "-c",
            "3",
            "-i",
            "u50000",
            &server4.to_string(),
        ],
    );
    let s5 = pair.status_when(CONNECT_OK, |s| {
        s.reason("tcp-new-not-syn") >= s4.reason("tcp-new-not-syn") + 3
    });
    assert!(
        s5.reason("tcp-new-not-syn") >= s4.reason("tcp-new-not-syn") + 3,
        "blind ACKs to embryos were not dropped: {:#}",
        s5.0
    );
    assert_eq!(
        s5.table("in").created,
        s4.table("in").created,
        "a blind ACK promoted an embryo: {:#}",
        s5.0
    );
    assert_eq!(
        pair.connect(false, WEB),
        Connected,
        "a new client after the flood"
    );
    drop(session);
    pair.finish();
}

// ---------------------------------------------------------------------------------------------
// Closing

/// FIN and RST close entries, whichever side opened the connection and whichever closes it:
/// `fw conns` shows ESTABLISHED before the close, CLOSING after FINs, CLOSED after an RST.
#[test]
fn fin_and_rst_close_entries() {
    preflight(&[]);
    const WEB: u16 = 80;
    const SVC: u16 = 9000;
    let pair = Pair::new("close");
    let _servers = FAMILIES.map(|v6| {
        [
            pair.server.echo_tcp(pair.server_addr(v6, WEB)),
            pair.client
                .echo_tcp(SocketAddr::new(pair.client_ip(v6), SVC)),
        ]
    });
    pair.fw_up(None);

    #[derive(Clone, Copy, Debug)]
    enum Close {
        Fin,
        Rst,
    }
    // (what, stream, server port, client port, table, how to close)
    let mut sessions = Vec::new();
    for v6 in FAMILIES {
        for how in [Close::Fin, Close::Rst] {
            let s = pair.client.stream(pair.server_addr(v6, WEB), None);
            let (sp, cp) = ends(&s, false);
            sessions.push((format!("{} inbound {how:?}", fam(v6)), s, sp, cp, "in", how));
            let s = pair
                .server
                .stream(SocketAddr::new(pair.client_ip(v6), SVC), None);
            let (sp, cp) = ends(&s, true);
            sessions.push((
                format!("{} outbound {how:?}", fam(v6)),
                s,
                sp,
                cp,
                "out",
                how,
            ));
        }
    }
    for (what, s, sp, cp, table, _) in &mut sessions {
        assert!(echoes(s, &msg(what, 0), CONNECT_OK), "{what}");
        let e = conn_when(&pair, "tcp", *sp, *cp, |e| e["state"] == "ESTABLISHED");
        assert!(
            e.as_ref()
                .is_some_and(|e| e["table"] == *table && e["state"] == "ESTABLISHED"),
            "{what}: before the close: {e:#?}"
        );
    }
    for (what, s, sp, cp, _, how) in sessions {
        let want = match how {
            Close::Fin => {
                // Our FIN, then the echo server's once it reads the end.
                s.shutdown(Shutdown::Write).expect("shutdown");
                let mut rest = Vec::new();
                s.set_read_timeout(Some(CONNECT_OK)).expect("timeout");
                let _ = (&s).read_to_end(&mut rest);
                "CLOSING"
            }
            Close::Rst => {
                socket2::SockRef::from(&s)
                    .set_linger(Some(Duration::ZERO))
                    .expect("SO_LINGER");
                "CLOSED"
            }
        };
        drop(s);
        let e = conn_when(&pair, "tcp", sp, cp, |e| e["state"] == want);
        assert!(
            e.as_ref().is_some_and(|e| e["state"] == want),
            "{what}: after the close, want {want}: {e:#?}"
        );
    }
    pair.finish();
}
