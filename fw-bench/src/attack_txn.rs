//! The legitimate traffic of "legitimate traffic under attack": what a web client feels. Each
//! transaction is a new TCP connection (connect, send a small request, read the reply to the
//! end, close), within [`TIMEOUT`] from the first SYN or it counts as failed — a SYN the flood
//! crowds out costs the client its 1 s retransmission, which is what a spoofed SYN flood does
//! to a web server's users. [`CLIENTS`] clients, one thread and one address each, run back to
//! back; the server answers from [`SERVERS`] threads sharing one listener. Both sides are
//! pinned to one CPU and live in their namespaces (threads that setns(2)).
//!
//! The client closes with SO_LINGER 0 (a RST after the server's FIN): no TIME_WAIT on either
//! side, so the next cells' ephemeral ports never meet an old connection's leftovers.
//! Transactions start during the measured interval and each runs to its end (success, error or
//! timeout), so a run shorter than the timeout still counts its timeouts.

use std::{
    io::{ErrorKind, Read as _, Write as _},
    net::{SocketAddr, TcpListener, TcpStream},
    os::fd::AsRawFd as _,
    path::{Path, PathBuf},
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    thread::{self, JoinHandle},
    time::{Duration, Instant},
};

use anyhow::Context as _;
use socket2::{Domain, Protocol, SockAddr, Socket, Type};

use super::{
    attack_lab::{CLIENTS, PORT, client_addr},
    lab::RECV_V4,
    sys,
};

/// A transaction not done within this fails.
pub const TIMEOUT: Duration = Duration::from_secs(1);
/// Server threads sharing the listener.
pub const SERVERS: usize = 4;
/// The listen backlog (nginx's default).
const BACKLOG: i32 = 511;
const REQUEST: &[u8] = b"GET / HTTP/1.0\r\nHost: bench\r\n\r\n";
const REPLY_BODY: usize = 100;

fn reply() -> Vec<u8> {
    let mut r = format!("HTTP/1.0 200 OK\r\nContent-Length: {REPLY_BODY}\r\n\r\n").into_bytes();
    r.resize(r.len() + REPLY_BODY, b'x');
    r
}

fn server_addr() -> SocketAddr {
    SocketAddr::new(RECV_V4.parse().expect("a lab address"), PORT)
}

/// The web server: a listener on RECV_V4:80 in the receiver's namespace and its threads.
/// Dropping it stops them (they poll a flag every 50 ms) and closes the listener.
pub struct Server {
    stop: Arc<AtomicBool>,
    served: Arc<AtomicU64>,
    threads: Vec<JoinHandle<()>>,
}

impl Server {
    pub fn start(ns: &Path, cpu: usize) -> anyhow::Result<Server> {
        let listener = listen_in(ns)?;
        let stop = Arc::new(AtomicBool::new(false));
        let served = Arc::new(AtomicU64::new(0));
        let mut threads = Vec::new();
        for _ in 0..SERVERS {
            let l = listener.try_clone()?;
            let (stop, served) = (stop.clone(), served.clone());
            threads.push(thread::spawn(move || serve(&l, cpu, &stop, &served)));
        }
        Ok(Server {
            stop,
            served,
            threads,
        })
    }

    /// Transactions answered so far.
    pub fn served(&self) -> u64 {
        self.served.load(Ordering::Relaxed)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

fn listen_in(ns: &Path) -> anyhow::Result<TcpListener> {
    let ns = ns.to_path_buf();
    thread::spawn(move || -> anyhow::Result<TcpListener> {
        fw_lab::netns::join_path(&ns)?;
        let s = Socket::new(Domain::IPV4, Type::STREAM, Some(Protocol::TCP))?;
        s.set_reuse_address(true)?;
        s.bind(&server_addr().into())
            .context("binding the web server")?;
        s.listen(BACKLOG)?;
        // accept() honours SO_RCVTIMEO: the threads see the stop flag.
        s.set_read_timeout(Some(Duration::from_millis(50)))?;
        Ok(s.into())
    })
    .join()
    .map_err(|_| anyhow::anyhow!("the listener thread panicked"))?
}

fn serve(l: &TcpListener, cpu: usize, stop: &AtomicBool, served: &AtomicU64) {
    let _pin = fw_lab::link::CpuPin::cpu(cpu);
    let reply = reply();
    let mut buf = [0u8; 512];
    while !stop.load(Ordering::Relaxed) && !sys::interrupted() {
        let Ok((mut c, _)) = l.accept() else {
            continue;
        };
        let _ = c.set_read_timeout(Some(TIMEOUT));
        let _ = c.set_write_timeout(Some(TIMEOUT));
        let _ = c.set_nodelay(true);
        let mut got = 0;
        while got < buf.len() && !buf[..got].windows(4).any(|w| w == b"\r\n\r\n") {
            match c.read(&mut buf[got..]) {
                Ok(0) | Err(_) => break,
                Ok(n) => got += n,
            }
        }
        if buf[..got].ends_with(b"\r\n\r\n") && c.write_all(&reply).is_ok() {
            served.fetch_add(1, Ordering::Relaxed);
        }
        // Dropping `c` closes it: FIN, the client reads to the end and resets.
    }
}

/// What the clients saw.
#[derive(Clone, Debug, Default)]
pub struct TxnStats {
    pub secs: f64,
    pub ok: u64,
    pub failed: u64,
    /// Latency of successful transactions, µs (every one, bounded by the run's length).
    pub latency_us: Vec<f64>,
}

impl TxnStats {
    pub fn per_sec(&self) -> f64 {
        self.ok as f64 / self.secs
    }

    pub fn success(&self) -> f64 {
        let n = self.ok + self.failed;
        if n == 0 {
            0.0
        } else {
            self.ok as f64 / n as f64
        }
    }
}

/// Run the clients in `ns` on `cpu`: transactions start during `dur`, and each started one
/// runs to its end (≤ [`TIMEOUT`] more); the rate is per second of `dur`.
pub fn run_clients(ns: &Path, cpu: usize, dur: Duration) -> anyhow::Result<TxnStats> {
    let t0 = Instant::now();
    let end = t0 + dur;
    let results: Vec<anyhow::Result<TxnStats>> = thread::scope(|s| {
        let hs: Vec<_> = (0..CLIENTS)
            .map(|i| {
                let ns: PathBuf = ns.to_path_buf();
                s.spawn(move || client(&ns, cpu, i, end))
            })
            .collect();
        hs.into_iter()
            .map(|h| {
                h.join()
                    .map_err(|_| anyhow::anyhow!("a client thread panicked"))?
            })
            .collect()
    });
    let mut all = TxnStats {
        secs: dur.as_secs_f64(),
        ..Default::default()
    };
    for r in results {
        let r = r?;
        all.ok += r.ok;
        all.failed += r.failed;
        all.latency_us.extend(r.latency_us);
    }
    Ok(all)
}

fn client(ns: &Path, cpu: usize, i: usize, end: Instant) -> anyhow::Result<TxnStats> {
    fw_lab::netns::join_path(ns)?;
    let _pin = fw_lab::link::CpuPin::cpu(cpu)?;
    let from: SockAddr = SocketAddr::new(client_addr(i).into(), 0).into();
    let to: SockAddr = server_addr().into();
    let mut st = TxnStats::default();
    let mut buf = [0u8; 1024];
    while Instant::now() < end && !sys::interrupted() {
        let t = Instant::now();
        match transaction(&from, &to, t + TIMEOUT, &mut buf) {
            Ok(()) => {
                st.ok += 1;
                st.latency_us.push(t.elapsed().as_secs_f64() * 1e6);
            }
            Err(e) if e.kind() == ErrorKind::AddrNotAvailable => {
                return Err(e).context("client ports ran out");
            }
            Err(_) => st.failed += 1,
        }
    }
    Ok(st)
}

/// One transaction, done by `deadline` or failed.
fn transaction(
    from: &SockAddr,
    to: &SockAddr,
    deadline: Instant,
    buf: &mut [u8],
) -> std::io::Result<()> {
    let left = || {
        let d = deadline.saturating_duration_since(Instant::now());
        if d.is_zero() {
            Err(std::io::Error::from(ErrorKind::TimedOut))
        } else {
            Ok(d)
        }
    };
    let s = Socket::new(Domain::IPV4, Type::STREAM, Some(Protocol::TCP))?;
    no_port_at_bind(&s)?;
    s.bind(from)?;
    s.set_tcp_nodelay(true)?;
    s.connect_timeout(to, left()?)?;
    let mut c: TcpStream = s.into();
    c.set_write_timeout(Some(left()?))?;
    c.write_all(REQUEST)?;
    let mut got = 0;
    loop {
        c.set_read_timeout(Some(left()?))?;
        match c.read(buf) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) => return Err(e),
        }
    }
    let _ = socket2::SockRef::from(&c).set_linger(Some(Duration::ZERO));
    if got < REPLY_BODY {
        return Err(ErrorKind::UnexpectedEof.into());
    }
    Ok(())
}

/// IP_BIND_ADDRESS_NO_PORT: the port is chosen at connect(), by the whole 4-tuple, so eight
/// clients do not compete for one ephemeral range at bind().
fn no_port_at_bind(s: &Socket) -> std::io::Result<()> {
    let one: libc::c_int = 1;
    // SAFETY: a valid socket fd and an int option of the right size.
    let rc = unsafe {
        libc::setsockopt(
            s.as_raw_fd(),
            libc::IPPROTO_IP,
            libc::IP_BIND_ADDRESS_NO_PORT,
            (&one as *const libc::c_int).cast(),
            size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}
