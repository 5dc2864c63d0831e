//! Sockets inside the lab's namespaces: TCP connects and how they ended, listeners and echo
//! servers on bounded background threads, UDP, raw ICMP. Every loop is bounded in count and
//! time; every server stops when dropped.

use std::{
    io::{self, Read as _, Write as _},
    net::{IpAddr, SocketAddr, TcpListener, TcpStream, UdpSocket},
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
    thread::{self, JoinHandle},
    time::{Duration, Instant},
};

use socket2::{Domain, Protocol, Socket, Type};

use crate::NetNs;

/// How long a connect may take when it is expected to succeed (a bound, not an expectation: on
/// a veth it takes microseconds).
pub const CONNECT_OK: Duration = Duration::from_secs(10);
/// How long to wait for an answer that a dropped SYN would never get. An RST or SYN-ACK on a
/// veth comes back within microseconds; the kernel retransmits a SYN only after 1 s.
pub const CONNECT_DROP: Duration = Duration::from_millis(1000);

/// How long to wait for a packet that should not arrive (a reply on a veth takes
/// microseconds).
pub const QUIET: Duration = Duration::from_millis(500);

/// A message for an echo round trip, unique per call site.
pub fn echo_msg(what: &str, round: usize) -> Vec<u8> {
    format!("fw-e2e {what} round {round}\n").into_bytes()
}

/// The server's and the client's end of a stream held on the server (`server_side`) or the
/// client.
pub fn ends(s: &TcpStream, server_side: bool) -> (SocketAddr, SocketAddr) {
    let (l, p) = (
        s.local_addr().expect("local address"),
        s.peer_addr().expect("peer address"),
    );
    if server_side { (l, p) } else { (p, l) }
}

/// The local port of a stream.
pub fn local_port(s: &TcpStream) -> u16 {
    s.local_addr().expect("local address").port()
}

/// How a TCP connect ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Connect {
    /// The handshake completed.
    Connected,
    /// An RST came back: the SYN reached a stack with no listener.
    Refused,
    /// Nothing came back in time: the SYN was dropped.
    TimedOut,
    /// Anything else (host unreachable, ...).
    Failed(String),
}

impl Connect {
    /// What a failed connect's error means.
    pub fn of_error(e: &io::Error) -> Connect {
        match e.kind() {
            io::ErrorKind::ConnectionRefused => Connect::Refused,
            io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock => Connect::TimedOut,
            _ => Connect::Failed(e.to_string()),
        }
    }
}

/// Stop flag, counter and thread of a background server.
struct Worker {
    count: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Worker {
    /// Accept on `l` in a background loop bounded by `max` connections and `lifetime`, handing
    /// each connection to `on_conn` (with the stop flag and the deadline); the threads it
    /// returns are joined when the loop ends.
    fn accept_loop(
        l: TcpListener,
        max: usize,
        lifetime: Duration,
        on_conn: impl Fn(TcpStream, Arc<AtomicBool>, Instant) -> Option<JoinHandle<()>> + Send + 'static,
    ) -> Worker {
        l.set_nonblocking(true).expect("nonblocking listener");
        let count = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (n, st) = (count.clone(), stop.clone());
        let thread = thread::spawn(move || {
            let deadline = Instant::now() + lifetime;
            let mut handlers = Vec::new();
            while !st.load(Ordering::Relaxed)
                && Instant::now() < deadline
                && n.load(Ordering::Relaxed) < max
            {
                match l.accept() {
                    Ok((conn, _)) => {
                        n.fetch_add(1, Ordering::Relaxed);
                        handlers.extend(on_conn(conn, st.clone(), deadline));
                    }
                    Err(_) => thread::sleep(Duration::from_millis(2)),
                }
            }
            for h in handlers {
                let _ = h.join();
            }
        });
        Worker {
            count,
            stop,
            thread: Some(thread),
        }
    }

    fn stop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A TCP listener with a bounded accept loop on a background thread: each connection is
/// closed at once (after the greeting, if it has one).
pub struct Listener {
    addr: SocketAddr,
    w: Worker,
}

impl Listener {
    /// Upper bounds of the accept loop.
    const MAX_ACCEPTS: usize = 100_000;
    const MAX_LIFETIME: Duration = Duration::from_secs(900);

    fn start(addr: SocketAddr, l: TcpListener, greeting: Option<String>) -> Listener {
        let on_conn = move |mut conn: TcpStream, _: Arc<AtomicBool>, _: Instant| {
            if let Some(g) = &greeting {
                let _ = conn.set_nonblocking(false);
                let _ = conn.set_write_timeout(Some(Duration::from_secs(1)));
                let _ = conn.write_all(g.as_bytes());
            }
            None
        };
        let w = Worker::accept_loop(l, Self::MAX_ACCEPTS, Self::MAX_LIFETIME, on_conn);
        Listener { addr, w }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Connections accepted so far.
    pub fn accepted(&self) -> usize {
        self.w.count.load(Ordering::Relaxed)
    }

    /// Wait (bounded by `timeout`) until at least `n` connections were accepted; returns the
    /// count. A connect completes in the kernel before the accept loop picks it up.
    pub fn wait_accepted(&self, n: usize, timeout: Duration) -> usize {
        let deadline = Instant::now() + timeout;
        while self.accepted() < n && Instant::now() < deadline {
            thread::sleep(Duration::from_millis(5));
        }
        self.accepted()
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        self.w.stop();
    }
}

/// A TCP listener that keeps what it accepts open and echoes back whatever each connection
/// sends, until the peer closes (then it closes too, with a FIN), the connection fails, or the
/// server is dropped. Unlike [`Listener`], whose connections are closed at once, its sessions
/// can exchange data for as long as a test needs.
pub struct EchoServer {
    addr: SocketAddr,
    w: Worker,
}

impl EchoServer {
    /// Upper bounds of the accept loop and of each connection.
    const MAX_CONNS: usize = 10_000;
    const MAX_LIFETIME: Duration = Duration::from_secs(600);

    fn start(addr: SocketAddr, l: TcpListener) -> EchoServer {
        let on_conn = |conn, stop: Arc<AtomicBool>, deadline| {
            Some(thread::spawn(move || echo_loop(conn, &stop, deadline)))
        };
        let w = Worker::accept_loop(l, Self::MAX_CONNS, Self::MAX_LIFETIME, on_conn);
        EchoServer { addr, w }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Connections accepted so far.
    pub fn accepted(&self) -> usize {
        self.w.count.load(Ordering::Relaxed)
    }
}

fn echo_loop(mut conn: TcpStream, stop: &AtomicBool, deadline: Instant) {
    if conn.set_nonblocking(false).is_err()
        || conn
            .set_read_timeout(Some(Duration::from_millis(50)))
            .is_err()
    {
        return;
    }
    let mut buf = [0u8; 65536];
    while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
        match conn.read(&mut buf) {
            Ok(0) => return, // the peer closed: close too (FIN)
            Ok(n) => {
                if conn.write_all(&buf[..n]).is_err() {
                    return;
                }
            }
            Err(e)
                if e.kind() == io::ErrorKind::WouldBlock || e.kind() == io::ErrorKind::TimedOut => {
            }
            Err(_) => return,
        }
    }
}

impl Drop for EchoServer {
    fn drop(&mut self) {
        self.w.stop();
    }
}

/// Send `msg` on `stream` and read it back from an echo server within `wait`: whether the
/// whole message came back unchanged.
pub fn echoes(stream: &mut TcpStream, msg: &[u8], wait: Duration) -> bool {
    if stream.write_all(msg).is_err() {
        return false;
    }
    let deadline = Instant::now() + wait;
    let mut got = Vec::with_capacity(msg.len());
    let mut buf = [0u8; 65536];
    while got.len() < msg.len() {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return false;
        }
        if stream
            .set_read_timeout(Some(left.max(Duration::from_millis(1))))
            .is_err()
        {
            return false;
        }
        match stream.read(&mut buf) {
            Ok(0) | Err(_) => return false,
            Ok(n) => got.extend_from_slice(&buf[..n]),
        }
    }
    got == msg
}

/// Datagrams `sock` receives within `wait` (at most `max`).
pub fn udp_received(sock: &UdpSocket, wait: Duration, max: usize) -> usize {
    let deadline = Instant::now() + wait;
    let mut n = 0;
    let mut buf = [0u8; 2048];
    while n < max {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            break;
        }
        sock.set_read_timeout(Some(left.max(Duration::from_millis(1))))
            .expect("SO_RCVTIMEO");
        match sock.recv_from(&mut buf) {
            Ok(_) => n += 1,
            Err(_) => break,
        }
    }
    n
}

impl NetNs {
    /// A socket that lives in this namespace.
    #[track_caller]
    pub fn socket(&self, domain: Domain, ty: Type, proto: Option<Protocol>) -> Socket {
        self.enter(|| Socket::new(domain, ty, proto))
            .unwrap_or_else(|e| panic!("socket in {}: {e}", self.name()))
    }

    /// A TCP socket bound to `addr` (SO_REUSEADDR; IPv6 only for IPv6 addresses) and
    /// listening, for a server of the caller's own.
    #[track_caller]
    pub fn tcp_listening(&self, addr: SocketAddr, backlog: i32) -> TcpListener {
        let s = self.socket(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP));
        s.set_reuse_address(true).expect("SO_REUSEADDR");
        if addr.is_ipv6() {
            s.set_only_v6(true).expect("IPV6_V6ONLY");
        }
        s.bind(&addr.into())
            .unwrap_or_else(|e| panic!("bind {addr} in {}: {e}", self.name()));
        s.listen(backlog).expect("listen");
        s.into()
    }

    /// A TCP listener on `addr` in this namespace, accepting (and closing) connections in a
    /// bounded background loop.
    #[track_caller]
    pub fn listen_tcp(&self, addr: SocketAddr) -> Listener {
        Listener::start(addr, self.tcp_listening(addr, 128), None)
    }

    /// As [`NetNs::listen_tcp`], writing `greeting` to each connection before closing it.
    #[track_caller]
    pub fn listen_tcp_greeting(&self, addr: SocketAddr, greeting: String) -> Listener {
        Listener::start(addr, self.tcp_listening(addr, 128), Some(greeting))
    }

    /// An [`EchoServer`] on `addr` in this namespace.
    #[track_caller]
    pub fn echo_tcp(&self, addr: SocketAddr) -> EchoServer {
        EchoServer::start(addr, self.tcp_listening(addr, 1024))
    }

    /// A UDP socket bound to `addr` in this namespace.
    #[track_caller]
    pub fn bind_udp(&self, addr: SocketAddr) -> UdpSocket {
        let s = self.socket(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP));
        if addr.is_ipv6() {
            s.set_only_v6(true).expect("IPV6_V6ONLY");
        }
        s.bind(&addr.into())
            .unwrap_or_else(|e| panic!("bind udp {addr} in {}: {e}", self.name()));
        s.into()
    }

    /// Send `count` datagrams to `to` from this namespace.
    #[track_caller]
    pub fn send_udp(&self, to: SocketAddr, count: usize) {
        let s = self.socket(Domain::for_address(to), Type::DGRAM, Some(Protocol::UDP));
        for i in 0..count {
            let msg = format!("fw-e2e {i}");
            s.send_to(msg.as_bytes(), &to.into())
                .unwrap_or_else(|e| panic!("udp send to {to}: {e}"));
        }
    }

    /// A TCP connect from this namespace to `to` (from `from` if given), bounded by `timeout`.
    #[track_caller]
    pub fn connect_tcp(&self, to: SocketAddr, from: Option<IpAddr>, timeout: Duration) -> Connect {
        match self.try_stream(to, from, timeout) {
            Ok(_) => Connect::Connected,
            Err(c) => c,
        }
    }

    /// A TCP connection from this namespace to `to` (from `from` if given) within `timeout`,
    /// or how the connect ended.
    #[track_caller]
    pub fn try_stream(
        &self,
        to: SocketAddr,
        from: Option<IpAddr>,
        timeout: Duration,
    ) -> Result<TcpStream, Connect> {
        let s = self.socket(Domain::for_address(to), Type::STREAM, Some(Protocol::TCP));
        if let Some(ip) = from {
            s.bind(&SocketAddr::new(ip, 0).into())
                .unwrap_or_else(|e| panic!("bind {ip} in {}: {e}", self.name()));
        }
        match s.connect_timeout(&to.into(), timeout) {
            Ok(()) => Ok(s.into()),
            Err(e) => Err(Connect::of_error(&e)),
        }
    }

    /// A TCP connection from this namespace to `to` (from the local address `from` if given),
    /// which must succeed within [`CONNECT_OK`]. The stream lives in this namespace.
    #[track_caller]
    pub fn stream(&self, to: SocketAddr, from: Option<SocketAddr>) -> TcpStream {
        let s = self.socket(Domain::for_address(to), Type::STREAM, Some(Protocol::TCP));
        if let Some(a) = from {
            s.set_reuse_address(true).expect("SO_REUSEADDR");
            s.bind(&a.into())
                .unwrap_or_else(|e| panic!("bind {a} in {}: {e}", self.name()));
        }
        s.connect_timeout(&to.into(), CONNECT_OK)
            .unwrap_or_else(|e| panic!("connect {to} from {}: {e}", self.name()));
        let t: TcpStream = s.into();
        t.set_nodelay(true).expect("TCP_NODELAY");
        t
    }

    /// Send an ICMP (or ICMPv6) message from this namespace to `to` through a raw socket; the
    /// kernel adds the IP header (and fills in an ICMPv6 checksum).
    #[track_caller]
    pub fn send_icmp(&self, to: IpAddr, m: &[u8]) {
        let s = if to.is_ipv6() {
            self.socket(Domain::IPV6, Type::RAW, Some(Protocol::ICMPV6))
        } else {
            self.socket(Domain::IPV4, Type::RAW, Some(Protocol::ICMPV4))
        };
        let n = s
            .send_to(m, &SocketAddr::new(to, 0).into())
            .unwrap_or_else(|e| panic!("raw ICMP send to {to}: {e}"));
        assert_eq!(n, m.len(), "short raw ICMP send");
    }
}

/// A raw ICMP (or ICMPv6) socket in a namespace: it gets a copy of every ICMP message that
/// reaches that host's stack (so, on a host behind fw, every one XDP let through).
pub struct IcmpObserver {
    sock: Socket,
    v6: bool,
}

impl IcmpObserver {
    #[track_caller]
    pub fn new(ns: &NetNs, v6: bool) -> IcmpObserver {
        let sock = if v6 {
            ns.socket(Domain::IPV6, Type::RAW, Some(Protocol::ICMPV6))
        } else {
            ns.socket(Domain::IPV4, Type::RAW, Some(Protocol::ICMPV4))
        };
        IcmpObserver { sock, v6 }
    }

    /// Read messages for up to `wait` (at most 100,000) until one (the ICMP part, from its type
    /// on) matches.
    pub fn saw(&self, wait: Duration, pred: impl Fn(&[u8]) -> bool) -> bool {
        let v6 = self.v6;
        crate::raw::read_until(
            wait,
            |buf, left| {
                self.sock
                    .set_read_timeout(Some(left.max(Duration::from_millis(1))))
                    .expect("SO_RCVTIMEO");
                io::Read::read(&mut &self.sock, buf).map(Some)
            },
            |buf| {
                // IPv4 raw sockets deliver the IP header too; ICMPv6 ones do not.
                let icmp = if v6 {
                    buf
                } else {
                    let ihl = usize::from(buf.first().map_or(0, |b| b & 0x0f)) * 4;
                    &buf[ihl.min(buf.len())..]
                };
                pred(icmp)
            },
        )
    }
}
