//! Tier 3, end to end: replies to the host's own connections (ESTABLISHED,RELATED). What the
//! protected host opens itself gets its answers — TCP, UDP, an HTTP download with curl, a
//! DNS-style query, ping — while the same packets sent to it unsolicited are dropped.
//! Root only; every test makes its own namespaces (unique names), so they run in parallel.

use std::{
    io::{Read as _, Write as _},
    net::{IpAddr, SocketAddr},
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
    thread::{self, JoinHandle},
    time::{Duration, Instant},
};

use fw_lab::{
    CONNECT_OK, Connect, FAMILIES, IcmpObserver, NetNs, Pair, QUIET, family, frames::echo_reply,
    hping3_args, preflight, udp_received, unpredictable_u32,
};

use Connect::{Connected, TimedOut};

/// Connection state: replies to what the protected host opens itself come back in (TCP, UDP,
/// ping), while the same kind of packet unsolicited is dropped.
#[test]
fn replies_to_connections_the_host_opens_pass() {
    preflight(&["ping"]);
    let pair = Pair::new("state");
    pair.fw_up(None);
    let _cli = [false, true].map(|v6| {
        pair.client
            .listen_tcp(SocketAddr::new(pair.client_ip(v6), 5555))
    });
    for v6 in FAMILIES {
        // TCP: the server connects out; the SYN-ACK is a reply to a tracked flow.
        let to = SocketAddr::new(pair.client_ip(v6), 5555);
        assert_eq!(
            pair.server.connect_tcp(to, None, CONNECT_OK),
            Connected,
            "{}: the server's own connect got no reply through fw",
            family(v6)
        );
        // Unsolicited TCP from the client to the same port is still dropped.
        assert_eq!(
            pair.probe(v6, 5555),
            TimedOut,
            "{}: unsolicited 5555",
            family(v6)
        );

        // UDP: a query out, its answer in; a datagram to a port that sent nothing is dropped.
        let asker = pair.server.bind_udp(SocketAddr::new(pair.server_ip(v6), 0));
        let quiet = pair.server.bind_udp(SocketAddr::new(pair.server_ip(v6), 0));
        let answerer = pair
            .client
            .bind_udp(SocketAddr::new(pair.client_ip(v6), 5353));
        asker
            .send_to(b"query", SocketAddr::new(pair.client_ip(v6), 5353))
            .expect("send query");
        answerer
            .set_read_timeout(Some(CONNECT_OK))
            .expect("timeout");
        let mut buf = [0u8; 64];
        let (_, from) = answerer
            .recv_from(&mut buf)
            .expect("the client got the query");
        assert_eq!(from, asker.local_addr().unwrap());
        answerer.send_to(b"answer", from).expect("send answer");
        assert_eq!(
            fw_lab::udp_received(&asker, CONNECT_OK, 1),
            1,
            "{}: the UDP answer was dropped",
            family(v6)
        );
        answerer
            .send_to(b"unsolicited", quiet.local_addr().unwrap())
            .expect("send");
        assert_eq!(
            fw_lab::udp_received(&quiet, std::time::Duration::from_millis(500), 1),
            0,
            "{}: an unsolicited datagram was delivered",
            family(v6)
        );

        // ICMP echo: the server's ping is answered; the client's ping is not (icmp_echo = false).
        let (srv, cli) = (
            pair.server_ip(v6).to_string(),
            pair.client_ip(v6).to_string(),
        );
        let out = pair.server.run(
            "ping",
            &["-c", "2", "-i", "0.2", "-W", "2", &cli],
            CONNECT_OK * 2,
        );
        assert!(
            out.success(),
            "{}: the server's ping got no reply: {out}",
            family(v6)
        );
        let out = pair.client.run(
            "ping",
            &["-c", "2", "-i", "0.2", "-W", "1", &srv],
            CONNECT_OK * 2,
        );
        assert!(!out.success(), "{}: fw answered pings: {out}", family(v6));
    }
    let s = pair.status();
    assert!(
        s.reason("established") > 0,
        "nothing counted as established: {:#}",
        s.0
    );
    pair.finish();
}

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
    let (server4, ack) = (pair.v4(1).to_string(), unpredictable_u32().to_string());
    // A stray ACK from the web server's port, as if answering a connection nobody opened.
    let stray_ack = |port: &str| {
        hping3_args(
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
        pair.client
            .send_icmp(pair.server_ip(v6), &echo_reply(v6, id));
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
            family(v6)
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
        assert!(
            out.success(),
            "{}: curl through fw failed: {out}",
            family(v6)
        );
        assert!(
            out.stdout.as_bytes() == body.as_slice(),
            "{}: curl got {} bytes, want {}",
            family(v6),
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
            family(v6)
        );

        let peer = pair.client_ip(v6).to_string();
        let out = pair.server.run(
            "ping",
            &["-c", "2", "-i", "0.2", "-W", "2", &peer],
            Duration::from_secs(20),
        );
        assert!(out.success(), "{}: ping through fw: {out}", family(v6));

        assert_eq!(
            unsolicited(v6, 1),
            (0, false),
            "{}: (datagram from 53 delivered, echo reply seen) with fw",
            family(v6)
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
        let l = ns.tcp_listening(addr, 16);
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
