//! Network namespaces and veth pairs for the end-to-end tests (tier 3), and the traffic helpers
//! that run inside them.
//!
//! Every resource is a guard: [`NetNs`] removes fw's pins and state for its namespace (after
//! `fw down` inside it) and then the namespace; [`Proc`] kills its child; [`Listener`] stops its
//! accept thread; [`TempDir`] removes its directory. Every loop is bounded in count and time.
//!
//! Commands run in a namespace through `nsenter --net=/var/run/netns/NAME`, never
//! `ip netns exec`: that one remounts /sys and hides /sys/fs/bpf, so fw's pins would not be the
//! host's. Sockets are made by a short-lived thread that setns(2)s into the namespace; a socket
//! belongs to the namespace it was created in for its whole life, so the test thread then uses
//! it directly.
//!
//! Addresses (10.250.N.0/24, fd00:fa:N::/64) only ever exist inside the namespaces made here.

use std::{
    collections::BTreeMap,
    ffi::OsStr,
    fmt,
    fs::{self, File},
    io::{self, Read},
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener, UdpSocket},
    os::{fd::AsRawFd, unix::fs::MetadataExt as _},
    path::{Path, PathBuf},
    process::{Child, Command, ExitStatus, Stdio},
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicU32, AtomicUsize, Ordering},
        mpsc,
    },
    thread::{self, JoinHandle},
    time::{Duration, Instant},
};

use fw_common::maps::LAYOUT_VERSION;
use serde_json::Value;
use socket2::{Domain, Protocol, Socket, Type};

/// How long a connect may take when it is expected to succeed (a bound, not an expectation: on
/// a veth it takes microseconds).
pub const CONNECT_OK: Duration = Duration::from_secs(10);
/// How long to wait for an answer that a dropped SYN would never get. An RST or SYN-ACK on a
/// veth comes back within microseconds; the kernel retransmits a SYN only after 1 s.
pub const CONNECT_DROP: Duration = Duration::from_millis(1000);
/// Bound for one `fw` command.
pub const FW_TIMEOUT: Duration = Duration::from_secs(60);
/// Bound for ordinary commands (ip, bpftool).
pub const CMD_TIMEOUT: Duration = Duration::from_secs(15);

const NETNS_DIR: &str = "/var/run/netns";
/// Output kept per stream of a child process.
const MAX_OUTPUT: u64 = 16 << 20;

static SEQ: AtomicU32 = AtomicU32::new(0);

fn next_seq() -> u32 {
    SEQ.fetch_add(1, Ordering::Relaxed)
}

// ---------------------------------------------------------------------------------------------
// Preconditions

/// Fail with a clear message unless running as root.
pub fn require_root() {
    // SAFETY: geteuid has no preconditions.
    let euid = unsafe { libc::geteuid() };
    assert!(
        euid == 0,
        "the end-to-end tests (tests/tests/e2e_*.rs) create network namespaces and attach XDP \
         programs: they must run as root (euid is {euid}); run `cargo xtask test` as root"
    );
}

fn on_path(tool: &str) -> bool {
    std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join(tool).is_file()))
        .unwrap_or(false)
}

/// Fail with a clear message if a tool is missing.
pub fn require_tools(tools: &[&str]) {
    for t in tools {
        assert!(
            on_path(t),
            "`{t}` is not installed, and the end-to-end tests need it; `cargo xtask setup` \
             installs nmap, hping3, tcpdump, iproute2, iputils-ping, netcat-openbsd, bpftool"
        );
    }
}

/// Everything an e2e test needs before it starts: root, `ip`, `nsenter`, `bpftool`, the given
/// tools, and the fw binary.
pub fn preflight(tools: &[&str]) {
    require_root();
    require_tools(&["ip", "nsenter", "bpftool"]);
    require_tools(tools);
    fw_bin();
}

/// The workspace root (the parent of this crate).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_path_buf()
}

fn fw_bin_path() -> PathBuf {
    match std::env::var_os("FW_BIN") {
        Some(p) if !p.is_empty() => PathBuf::from(p),
        _ => workspace_root().join("target/debug/fw"),
    }
}

/// The `fw` binary under test: `$FW_BIN`, else `<workspace>/target/debug/fw`.
pub fn fw_bin() -> PathBuf {
    let p = fw_bin_path();
    assert!(
        p.is_file(),
        "the fw binary is missing at {} (FW_BIN={:?}): build it with cargo xtask test \
         (or `cargo build -p fw-user` and set FW_BIN)",
        p.display(),
        std::env::var_os("FW_BIN")
    );
    p
}

// ---------------------------------------------------------------------------------------------
// Running commands

/// What a finished (or timed out) command printed.
#[derive(Debug)]
pub struct Output {
    pub cmdline: String,
    /// `None`: it did not finish in time and was killed.
    pub status: Option<ExitStatus>,
    pub stdout: String,
    pub stderr: String,
}

impl Output {
    pub fn success(&self) -> bool {
        self.status.is_some_and(|s| s.success())
    }

    pub fn timed_out(&self) -> bool {
        self.status.is_none()
    }

    /// Panic with the whole output unless the command succeeded.
    #[track_caller]
    pub fn check(self) -> Self {
        assert!(self.success(), "command failed: {self}");
        self
    }

    /// stdout and stderr together.
    pub fn text(&self) -> String {
        format!("{}{}", self.stdout, self.stderr)
    }
}

impl fmt::Display for Output {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.status {
            Some(s) => writeln!(f, "{} -> {s}", self.cmdline)?,
            None => writeln!(f, "{} -> timed out (killed)", self.cmdline)?,
        }
        writeln!(f, "--- stdout ---\n{}", self.stdout.trim_end())?;
        write!(f, "--- stderr ---\n{}", self.stderr.trim_end())
    }
}

fn cmdline(cmd: &Command) -> String {
    let mut s = cmd.get_program().to_string_lossy().into_owned();
    for a in cmd.get_args() {
        s.push(' ');
        s.push_str(&a.to_string_lossy());
    }
    s
}

fn read_all(r: impl Read + Send + 'static) -> mpsc::Receiver<Vec<u8>> {
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let mut b = Vec::new();
        let _ = r.take(MAX_OUTPUT).read_to_end(&mut b);
        let _ = tx.send(b);
    });
    rx
}

fn collect(rx: mpsc::Receiver<Vec<u8>>) -> String {
    match rx.recv_timeout(Duration::from_secs(5)) {
        Ok(b) => String::from_utf8_lossy(&b).into_owned(),
        Err(_) => "<output still held open by another process>".into(),
    }
}

fn wait_timeout(child: &mut Child, timeout: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + timeout;
    loop {
        match child.try_wait() {
            Ok(Some(s)) => return Some(s),
            Ok(None) if Instant::now() < deadline => thread::sleep(Duration::from_millis(5)),
            _ => return None,
        }
    }
}

/// Run `cmd` to completion, killing it after `timeout`.
pub fn run_with_timeout(mut cmd: Command, timeout: Duration) -> Output {
    let line = cmdline(&cmd);
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start `{line}`: {e}"));
    let out = read_all(child.stdout.take().expect("piped stdout"));
    let err = read_all(child.stderr.take().expect("piped stderr"));
    let status = wait_timeout(&mut child, timeout);
    if status.is_none() {
        let _ = child.kill();
        let _ = child.wait();
    }
    Output {
        cmdline: line,
        status,
        stdout: collect(out),
        stderr: collect(err),
    }
}

/// A command in the host namespace.
pub fn host_cmd<I, S>(program: &str, args: I) -> Command
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let mut c = Command::new(program);
    c.args(args);
    c
}

/// A background process, killed (SIGKILL) and reaped on drop if it is still running. Its
/// stdout and stderr are collected continuously.
pub struct Proc {
    child: Child,
    cmdline: String,
    status: Option<ExitStatus>,
    stdout: Arc<Mutex<Vec<u8>>>,
    stderr: Arc<Mutex<Vec<u8>>>,
    readers: Vec<JoinHandle<()>>,
}

fn pump(mut r: impl Read + Send + 'static, buf: Arc<Mutex<Vec<u8>>>) -> JoinHandle<()> {
    thread::spawn(move || {
        let mut chunk = [0u8; 4096];
        loop {
            match r.read(&mut chunk) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    let mut b = buf.lock().unwrap_or_else(|e| e.into_inner());
                    if (b.len() as u64) < MAX_OUTPUT {
                        b.extend_from_slice(&chunk[..n]);
                    }
                }
            }
        }
    })
}

impl Proc {
    pub fn spawn(mut cmd: Command) -> Proc {
        let line = cmdline(&cmd);
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start `{line}`: {e}"));
        let stdout = Arc::new(Mutex::new(Vec::new()));
        let stderr = Arc::new(Mutex::new(Vec::new()));
        let readers = vec![
            pump(child.stdout.take().expect("piped"), stdout.clone()),
            pump(child.stderr.take().expect("piped"), stderr.clone()),
        ];
        Proc {
            child,
            cmdline: line,
            status: None,
            stdout,
            stderr,
            readers,
        }
    }

    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    /// Whether it still runs (reaps it if it ended).
    pub fn running(&mut self) -> bool {
        if self.status.is_none()
            && let Ok(Some(s)) = self.child.try_wait()
        {
            self.status = Some(s);
        }
        self.status.is_none()
    }

    /// Send `sig` to it. Only while it has not been reaped, so the pid is still ours.
    pub fn signal(&mut self, sig: libc::c_int) {
        if self.running() {
            // SAFETY: kill(2) on our own, not yet reaped, child.
            unsafe { libc::kill(self.pid(), sig) };
        }
    }

    /// Wait up to `timeout` for it to end.
    pub fn wait_timeout(&mut self, timeout: Duration) -> Option<ExitStatus> {
        if self.status.is_none() {
            self.status = wait_timeout(&mut self.child, timeout);
        }
        self.status
    }

    pub fn stdout(&self) -> String {
        String::from_utf8_lossy(&self.stdout.lock().unwrap_or_else(|e| e.into_inner())).into()
    }

    pub fn stderr(&self) -> String {
        String::from_utf8_lossy(&self.stderr.lock().unwrap_or_else(|e| e.into_inner())).into()
    }

    /// Wait until stdout contains `needle`, it exits, or `timeout` passes.
    pub fn wait_for_stdout(&mut self, needle: &str, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if self.stdout().contains(needle) {
                return true;
            }
            if !self.running() {
                return self.stdout().contains(needle);
            }
            thread::sleep(Duration::from_millis(10));
        }
        false
    }

    /// Everything it printed so far, for assertion messages.
    pub fn describe(&self) -> String {
        format!(
            "{} ({:?})\n--- stdout ---\n{}\n--- stderr ---\n{}",
            self.cmdline,
            self.status,
            self.stdout().trim_end(),
            self.stderr().trim_end()
        )
    }

    /// Wait for the end (bounded), then return its output.
    pub fn finish(mut self, timeout: Duration) -> Output {
        let status = self.wait_timeout(timeout);
        if status.is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        for r in self.readers.drain(..) {
            // The pipes close when the process ends; a reader cannot block beyond that.
            let _ = r.join();
        }
        Output {
            cmdline: self.cmdline.clone(),
            status,
            stdout: self.stdout(),
            stderr: self.stderr(),
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if self.running() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Namespaces

/// A network namespace `fw-<tag>-<pid>-<n>`. Drop runs `fw down` inside it, removes fw's pins
/// and state for it, kills what still runs in it, and deletes it.
pub struct NetNs {
    name: String,
    path: PathBuf,
    inode: u64,
}

impl NetNs {
    pub fn new(tag: &str) -> NetNs {
        let name = format!("fw-{tag}-{}-{}", std::process::id(), next_seq());
        run_with_timeout(host_cmd("ip", ["netns", "add", &name]), CMD_TIMEOUT).check();
        let path = Path::new(NETNS_DIR).join(&name);
        // The guard exists from here on: a panic below still removes the namespace.
        let mut ns = NetNs {
            name,
            path,
            inode: 0,
        };
        ns.inode = fs::metadata(&ns.path)
            .unwrap_or_else(|e| panic!("{}: {e}", ns.path.display()))
            .ino();
        ns.ip(&["link", "set", "lo", "up"]);
        ns
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// /var/run/netns/NAME.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The namespace's inode: what fw names its pin and state directories after.
    pub fn inode(&self) -> u64 {
        self.inode
    }

    /// fw's bpffs directory for this namespace: /sys/fs/bpf/fw/v1/<inode>.
    pub fn pins_dir(&self) -> PathBuf {
        PathBuf::from(format!("/sys/fs/bpf/fw/v{LAYOUT_VERSION}/{}", self.inode))
    }

    /// fw's runtime state directory for this namespace: /run/fw/v1/<inode>.
    pub fn state_dir(&self) -> PathBuf {
        PathBuf::from(format!("/run/fw/v{LAYOUT_VERSION}/{}", self.inode))
    }

    /// `program` to run inside the namespace (through nsenter; /sys/fs/bpf stays the host's).
    pub fn command(&self, program: impl AsRef<OsStr>) -> Command {
        let mut c = Command::new("nsenter");
        c.arg(format!("--net={}", self.path.display()))
            .arg("--")
            .arg(program);
        c
    }

    /// Run a command inside the namespace, bounded by `timeout`.
    pub fn run(&self, program: &str, args: &[&str], timeout: Duration) -> Output {
        let mut c = self.command(program);
        c.args(args);
        run_with_timeout(c, timeout)
    }

    /// `ip ARGS` inside the namespace; panics if it fails.
    #[track_caller]
    pub fn ip(&self, args: &[&str]) -> Output {
        self.run("ip", args, CMD_TIMEOUT).check()
    }

    /// The fw binary inside the namespace.
    pub fn fw(&self, args: &[&str]) -> Output {
        let mut c = self.command(fw_bin());
        c.args(args);
        run_with_timeout(c, FW_TIMEOUT)
    }

    /// A background process inside the namespace.
    pub fn spawn(&self, program: impl AsRef<OsStr>, args: &[&str]) -> Proc {
        let mut c = self.command(program);
        c.args(args);
        Proc::spawn(c)
    }

    /// Run `f` on a thread that has entered this namespace (setns), and return its result.
    pub fn enter<R: Send>(&self, f: impl FnOnce() -> R + Send) -> R {
        let file =
            File::open(&self.path).unwrap_or_else(|e| panic!("{}: {e}", self.path.display()));
        thread::scope(|s| {
            s.spawn(|| {
                // SAFETY: a valid namespace fd; only this thread changes namespace.
                let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
                assert_eq!(
                    rc,
                    0,
                    "setns into {}: {}",
                    self.name,
                    io::Error::last_os_error()
                );
                f()
            })
            .join()
            .unwrap_or_else(|e| std::panic::resume_unwind(e))
        })
    }

    /// A socket that lives in this namespace.
    pub fn socket(&self, domain: Domain, ty: Type, proto: Option<Protocol>) -> Socket {
        self.enter(|| Socket::new(domain, ty, proto))
            .unwrap_or_else(|e| panic!("socket in {}: {e}", self.name))
    }

    /// A TCP listener on `addr` in this namespace, accepting (and closing) connections in a
    /// bounded background loop.
    pub fn listen_tcp(&self, addr: SocketAddr) -> Listener {
        let s = self.socket(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP));
        s.set_reuse_address(true).expect("SO_REUSEADDR");
        if addr.is_ipv6() {
            s.set_only_v6(true).expect("IPV6_V6ONLY");
        }
        s.bind(&addr.into())
            .unwrap_or_else(|e| panic!("bind {addr} in {}: {e}", self.name));
        s.listen(128).expect("listen");
        Listener::start(addr, s.into())
    }

    /// A UDP socket bound to `addr` in this namespace.
    pub fn bind_udp(&self, addr: SocketAddr) -> UdpSocket {
        let s = self.socket(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP));
        if addr.is_ipv6() {
            s.set_only_v6(true).expect("IPV6_V6ONLY");
        }
        s.bind(&addr.into())
            .unwrap_or_else(|e| panic!("bind udp {addr} in {}: {e}", self.name));
        s.into()
    }

    /// Send `count` datagrams to `to` from this namespace.
    pub fn send_udp(&self, to: SocketAddr, count: usize) {
        let s = self.socket(Domain::for_address(to), Type::DGRAM, Some(Protocol::UDP));
        for i in 0..count {
            let msg = format!("fw-e2e {i}");
            s.send_to(msg.as_bytes(), &to.into())
                .unwrap_or_else(|e| panic!("udp send to {to}: {e}"));
        }
    }

    /// A TCP connect from this namespace to `to` (from `from` if given), bounded by `timeout`.
    pub fn connect_tcp(&self, to: SocketAddr, from: Option<IpAddr>, timeout: Duration) -> Connect {
        let s = self.socket(Domain::for_address(to), Type::STREAM, Some(Protocol::TCP));
        if let Some(ip) = from {
            s.bind(&SocketAddr::new(ip, 0).into())
                .unwrap_or_else(|e| panic!("bind {ip} in {}: {e}", self.name));
        }
        match s.connect_timeout(&to.into(), timeout) {
            Ok(()) => Connect::Connected,
            Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => Connect::Refused,
            Err(e)
                if e.kind() == io::ErrorKind::TimedOut || e.kind() == io::ErrorKind::WouldBlock =>
            {
                Connect::TimedOut
            }
            Err(e) => Connect::Failed(e.to_string()),
        }
    }

    /// An AF_PACKET socket on `iface` of this namespace, for raw frames.
    pub fn raw_link(&self, iface: &str) -> RawLink {
        self.enter(|| RawLink::open(iface))
            .unwrap_or_else(|e| panic!("packet socket on {iface} in {}: {e}", self.name))
    }

    /// Process ids running in this namespace (`ip netns pids`).
    fn pids(&self) -> Vec<i32> {
        let out = run_with_timeout(host_cmd("ip", ["netns", "pids", &self.name]), CMD_TIMEOUT);
        out.stdout
            .split_whitespace()
            .filter_map(|p| p.parse().ok())
            .collect()
    }
}

/// Remove every pin under `dir`: in each interface directory the link pin(s) first (the pin is
/// the last reference: the kernel detaches the program), then the rest.
fn remove_pins(dir: &Path) {
    let Ok(rd) = fs::read_dir(dir) else { return };
    for e in rd.flatten() {
        let p = e.path();
        if p.is_dir() {
            if let Ok(inner) = fs::read_dir(&p) {
                for f in inner.flatten() {
                    if f.file_name().to_string_lossy().starts_with("link") {
                        let _ = fs::remove_file(f.path());
                    }
                }
            }
            let _ = fs::remove_dir_all(&p);
        } else {
            let _ = fs::remove_file(&p);
        }
    }
    let _ = fs::remove_dir(dir);
}

impl Drop for NetNs {
    fn drop(&mut self) {
        let (pins, state) = (self.pins_dir(), self.state_dir());
        if pins.exists() || state.exists() {
            let fw = fw_bin_path();
            if fw.is_file() {
                let mut c = self.command(&fw);
                c.arg("down");
                let _ = run_with_timeout(c, FW_TIMEOUT);
            }
            remove_pins(&pins);
            let _ = fs::remove_dir_all(&state);
        }
        // Anything still running in the namespace was started by this test (nobody else knows
        // the name): end it, by pid, so the namespace can go.
        let me = std::process::id() as i32;
        for pid in self.pids() {
            if pid != me {
                // SAFETY: kill(2) on a process inside our own namespace.
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
        }
        let _ = run_with_timeout(host_cmd("ip", ["netns", "del", &self.name]), CMD_TIMEOUT);
    }
}

/// Names of the network namespaces that exist now (`ip netns list`).
pub fn netns_list() -> Vec<String> {
    run_with_timeout(host_cmd("ip", ["netns", "list"]), CMD_TIMEOUT)
        .check()
        .stdout
        .lines()
        .filter_map(|l| l.split_whitespace().next().map(str::to_string))
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Sockets

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

/// A TCP listener with a bounded accept loop on a background thread.
pub struct Listener {
    addr: SocketAddr,
    accepted: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Listener {
    /// Upper bounds of the accept loop.
    const MAX_ACCEPTS: usize = 100_000;
    const MAX_LIFETIME: Duration = Duration::from_secs(600);

    fn start(addr: SocketAddr, l: TcpListener) -> Listener {
        l.set_nonblocking(true).expect("nonblocking listener");
        let accepted = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (a, st) = (accepted.clone(), stop.clone());
        let thread = thread::spawn(move || {
            let deadline = Instant::now() + Self::MAX_LIFETIME;
            while !st.load(Ordering::Relaxed)
                && Instant::now() < deadline
                && a.load(Ordering::Relaxed) < Self::MAX_ACCEPTS
            {
                match l.accept() {
                    Ok((conn, _)) => {
                        a.fetch_add(1, Ordering::Relaxed);
                        drop(conn);
                    }
                    Err(_) => thread::sleep(Duration::from_millis(2)),
                }
            }
        });
        Listener {
            addr,
            accepted,
            stop,
            thread: Some(thread),
        }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Connections accepted so far.
    pub fn accepted(&self) -> usize {
        self.accepted.load(Ordering::Relaxed)
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
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
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

/// An AF_PACKET socket bound to one interface: sends raw Ethernet frames and reads every frame
/// that passes the interface.
pub struct RawLink {
    sock: Socket,
}

impl RawLink {
    fn open(iface: &str) -> io::Result<RawLink> {
        let c = std::ffi::CString::new(iface).expect("no NUL");
        // SAFETY: valid C string.
        let idx = unsafe { libc::if_nametoindex(c.as_ptr()) };
        if idx == 0 {
            return Err(io::Error::last_os_error());
        }
        let proto = (libc::ETH_P_ALL as u16).to_be();
        let sock = Socket::new(
            Domain::PACKET,
            Type::RAW,
            Some(Protocol::from(i32::from(proto))),
        )?;
        // SAFETY: sockaddr_ll is plain data; zero is a valid start.
        let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        sll.sll_family = libc::AF_PACKET as u16;
        sll.sll_protocol = proto;
        sll.sll_ifindex = idx as i32;
        // SAFETY: a valid sockaddr_ll of the given length.
        let rc = unsafe {
            libc::bind(
                sock.as_raw_fd(),
                &sll as *const libc::sockaddr_ll as *const libc::sockaddr,
                size_of::<libc::sockaddr_ll>() as u32,
            )
        };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(RawLink { sock })
    }

    pub fn send(&self, frame: &[u8]) {
        let n = self.sock.send(frame).expect("send raw frame");
        assert_eq!(n, frame.len(), "short raw send");
    }

    /// Read frames for up to `wait` (at most 100,000) until `pred` matches one.
    pub fn wait_for(&self, wait: Duration, pred: impl Fn(&[u8]) -> bool) -> bool {
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
            let n = match io::Read::read(&mut &self.sock, &mut buf) {
                Ok(n) => n,
                Err(_) => return false,
            };
            if pred(&buf[..n]) {
                return true;
            }
        }
        false
    }
}

fn csum_add(mut sum: u32, data: &[u8]) -> u32 {
    for c in data.chunks(2) {
        let w = if c.len() == 2 {
            u16::from_be_bytes([c[0], c[1]])
        } else {
            u16::from_be_bytes([c[0], 0])
        };
        sum += u32::from(w);
    }
    sum
}

fn csum_fold(mut sum: u32) -> u16 {
    while sum >> 16 != 0 {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// A VLAN tag: (TPID, VLAN id), e.g. (0x8100, 100) or (0x88a8, 0).
pub type Tag = (u16, u16);

/// An Ethernet frame carrying an IPv4 TCP SYN (valid checksums), with `tags` outermost first.
pub fn syn_frame(
    dst_mac: [u8; 6],
    src_mac: [u8; 6],
    tags: &[Tag],
    src: Ipv4Addr,
    dst: Ipv4Addr,
    sport: u16,
    dport: u16,
) -> Vec<u8> {
    let mut f = Vec::with_capacity(80);
    f.extend_from_slice(&dst_mac);
    f.extend_from_slice(&src_mac);
    for (tpid, vid) in tags {
        f.extend_from_slice(&tpid.to_be_bytes());
        f.extend_from_slice(&vid.to_be_bytes());
    }
    f.extend_from_slice(&0x0800u16.to_be_bytes());
    let mut tcp = Vec::with_capacity(20);
    tcp.extend_from_slice(&sport.to_be_bytes());
    tcp.extend_from_slice(&dport.to_be_bytes());
    tcp.extend_from_slice(&0x1000_0000u32.wrapping_add(u32::from(sport)).to_be_bytes());
    tcp.extend_from_slice(&0u32.to_be_bytes());
    tcp.push(5 << 4);
    tcp.push(0x02); // SYN
    tcp.extend_from_slice(&64240u16.to_be_bytes());
    tcp.extend_from_slice(&[0, 0, 0, 0]);
    let mut pseudo = Vec::new();
    pseudo.extend_from_slice(&src.octets());
    pseudo.extend_from_slice(&dst.octets());
    pseudo.extend_from_slice(&[0, 6]);
    pseudo.extend_from_slice(&(tcp.len() as u16).to_be_bytes());
    let c = csum_fold(csum_add(csum_add(0, &pseudo), &tcp));
    tcp[16..18].copy_from_slice(&c.to_be_bytes());
    let mut ip = vec![0x45, 0];
    ip.extend_from_slice(&((20 + tcp.len()) as u16).to_be_bytes());
    ip.extend_from_slice(&sport.to_be_bytes()); // id
    ip.extend_from_slice(&0x4000u16.to_be_bytes()); // DF
    ip.extend_from_slice(&[64, 6, 0, 0]);
    ip.extend_from_slice(&src.octets());
    ip.extend_from_slice(&dst.octets());
    let c = csum_fold(csum_add(0, &ip));
    ip[10..12].copy_from_slice(&c.to_be_bytes());
    f.extend_from_slice(&ip);
    f.extend_from_slice(&tcp);
    f
}

/// The TCP flags of `frame` if it is an untagged IPv4 TCP segment from `src:sport` to
/// `dst:dport`.
pub fn tcp_flags_of(
    frame: &[u8],
    src: Ipv4Addr,
    sport: u16,
    dst: Ipv4Addr,
    dport: u16,
) -> Option<u8> {
    if frame.len() < 14 + 20 + 20 || frame[12..14] != [0x08, 0x00] {
        return None;
    }
    let ip = &frame[14..];
    let ihl = usize::from(ip[0] & 0x0f) * 4;
    if ip[0] >> 4 != 4 || ip[9] != 6 || ip.len() < ihl + 20 {
        return None;
    }
    if ip[12..16] != src.octets() || ip[16..20] != dst.octets() {
        return None;
    }
    let tcp = &ip[ihl..];
    let (sp, dp) = (
        u16::from_be_bytes([tcp[0], tcp[1]]),
        u16::from_be_bytes([tcp[2], tcp[3]]),
    );
    (sp == sport && dp == dport).then_some(tcp[13])
}

// ---------------------------------------------------------------------------------------------
// Two namespaces joined by a veth pair

/// A server and a client namespace joined by a veth pair: server `fwsrv` with 10.250.N.1/24
/// and fd00:fa:N::1/64, client `fwcli` with .2 and ::2. Links and lo are up; IPv6 addresses
/// are added with `nodad`, so they are usable at once.
pub struct Pair {
    pub server: NetNs,
    pub client: NetNs,
    pub net: u8,
}

impl Pair {
    pub const SERVER_IF: &'static str = "fwsrv";
    pub const CLIENT_IF: &'static str = "fwcli";

    pub fn new(tag: &str) -> Pair {
        let server = NetNs::new(&format!("{tag}-s"));
        let client = NetNs::new(&format!("{tag}-c"));
        let net = (next_seq() % 250 + 1) as u8;
        let p = Pair {
            server,
            client,
            net,
        };
        let (smac, cmac) = (mac_str(p.server_mac()), mac_str(p.client_mac()));
        p.server.ip(&[
            "link",
            "add",
            Self::SERVER_IF,
            "address",
            &smac,
            "type",
            "veth",
            "peer",
            "name",
            Self::CLIENT_IF,
            "address",
            &cmac,
            "netns",
            p.client.name(),
        ]);
        for (ns, ifname, host) in [
            (&p.server, Self::SERVER_IF, 1),
            (&p.client, Self::CLIENT_IF, 2),
        ] {
            ns.ip(&["addr", "add", &format!("{}/24", p.v4(host)), "dev", ifname]);
            ns.ip(&[
                "-6",
                "addr",
                "add",
                &format!("{}/64", p.v6(host.into())),
                "dev",
                ifname,
                "nodad",
            ]);
            ns.ip(&["link", "set", ifname, "up"]);
        }
        p.wait_ipv6_ready();
        p
    }

    /// Wait (bounded) until no IPv6 address on either veth is tentative. `nodad` skips
    /// duplicate address detection, but an address stays tentative until the kernel has seen
    /// the link come up with carrier (both ends up), which happens a moment later.
    fn wait_ipv6_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        for (ns, ifname) in [
            (&self.server, Self::SERVER_IF),
            (&self.client, Self::CLIENT_IF),
        ] {
            loop {
                let out = ns.ip(&["-6", "-o", "addr", "show", "dev", ifname]);
                let ready = out.stdout.contains(&self.v6(0).to_string())
                    && !out.stdout.contains("tentative");
                if ready {
                    break;
                }
                assert!(
                    Instant::now() < deadline,
                    "IPv6 addresses on {ifname} in {} stay tentative: {out}",
                    ns.name()
                );
                thread::sleep(Duration::from_millis(20));
            }
        }
    }

    pub fn server_mac(&self) -> [u8; 6] {
        [0x02, 0xfa, 0, 0, self.net, 1]
    }

    pub fn client_mac(&self) -> [u8; 6] {
        [0x02, 0xfa, 0, 0, self.net, 2]
    }

    /// An address of the server: 10.250.N.`host` or fd00:fa:N::`host`.
    pub fn v4(&self, host: u8) -> Ipv4Addr {
        Ipv4Addr::new(10, 250, self.net, host)
    }

    pub fn v6(&self, host: u16) -> Ipv6Addr {
        Ipv6Addr::new(0xfd00, 0xfa, u16::from(self.net), 0, 0, 0, 0, host)
    }

    /// The server's address of the given family (host part 1).
    pub fn server_ip(&self, v6: bool) -> IpAddr {
        if v6 {
            IpAddr::V6(self.v6(1))
        } else {
            IpAddr::V4(self.v4(1))
        }
    }

    /// The client's address of the given family (host part 2).
    pub fn client_ip(&self, v6: bool) -> IpAddr {
        if v6 {
            IpAddr::V6(self.v6(2))
        } else {
            IpAddr::V4(self.v4(2))
        }
    }

    pub fn server_addr(&self, v6: bool, port: u16) -> SocketAddr {
        SocketAddr::new(self.server_ip(v6), port)
    }

    /// Add another address to the client's veth (IPv4 /24 or IPv6 /64 nodad).
    pub fn add_client_address(&self, ip: IpAddr) {
        match ip {
            IpAddr::V4(a) => {
                self.client
                    .ip(&["addr", "add", &format!("{a}/24"), "dev", Self::CLIENT_IF])
            }
            IpAddr::V6(a) => self.client.ip(&[
                "-6",
                "addr",
                "add",
                &format!("{a}/64"),
                "dev",
                Self::CLIENT_IF,
                "nodad",
            ]),
        };
    }

    /// A listener on the server's address of the given family.
    pub fn listen(&self, v6: bool, port: u16) -> Listener {
        self.server.listen_tcp(self.server_addr(v6, port))
    }

    /// Listeners on both families.
    pub fn listen_both(&self, port: u16) -> [Listener; 2] {
        [self.listen(false, port), self.listen(true, port)]
    }

    /// Connect from the client to the server's `port`, expecting success (bound: CONNECT_OK).
    pub fn connect(&self, v6: bool, port: u16) -> Connect {
        self.client
            .connect_tcp(self.server_addr(v6, port), None, CONNECT_OK)
    }

    /// Connect from the client expecting a drop (bound: CONNECT_DROP).
    pub fn probe(&self, v6: bool, port: u16) -> Connect {
        self.client
            .connect_tcp(self.server_addr(v6, port), None, CONNECT_DROP)
    }

    /// `fw ARGS` in the server namespace.
    pub fn fw(&self, args: &[&str]) -> Output {
        self.server.fw(args)
    }

    /// `fw up --iface fwsrv [--policy FILE]`; panics if it fails.
    #[track_caller]
    pub fn fw_up(&self, policy: Option<&Path>) -> Output {
        let mut args = vec!["up", "--iface", Self::SERVER_IF];
        let p;
        if let Some(f) = policy {
            p = f.display().to_string();
            args.extend(["--policy", p.as_str()]);
        }
        self.fw(&args).check()
    }

    /// `fw status --json` for the server veth.
    #[track_caller]
    pub fn status(&self) -> Status {
        let out = self
            .fw(&["status", "--json", "--iface", Self::SERVER_IF])
            .check();
        let v: Value = serde_json::from_str(&out.stdout)
            .unwrap_or_else(|e| panic!("fw status --json is not JSON ({e}): {out}"));
        let one = v
            .as_array()
            .and_then(|a| a.first())
            .cloned()
            .unwrap_or_else(|| panic!("fw status --json: no interface: {out}"));
        Status(one)
    }

    /// The server veth's fw pin directory.
    pub fn iface_pins(&self) -> PathBuf {
        self.server.pins_dir().join(Self::SERVER_IF)
    }

    /// The pinned link's id and program id (`bpftool link show pinned`), if the pin exists.
    pub fn link(&self) -> Option<LinkIds> {
        let pin = self.iface_pins().join("link");
        if !pin.exists() {
            return None;
        }
        let out = self.server.run(
            "bpftool",
            &["-j", "link", "show", "pinned", &pin.display().to_string()],
            CMD_TIMEOUT,
        );
        let v: Value = serde_json::from_str(&out.stdout).ok()?;
        Some(LinkIds {
            link_id: v["id"].as_u64()?,
            prog_id: v["prog_id"].as_u64()?,
        })
    }

    /// The XDP program attached to the server veth, as `bpftool -j net` inside the namespace
    /// reports it: (program id, mode).
    pub fn xdp_on_iface(&self) -> Option<(u64, String)> {
        let out = self
            .server
            .run("bpftool", &["-j", "net"], CMD_TIMEOUT)
            .check();
        let v: Value = serde_json::from_str(&out.stdout)
            .unwrap_or_else(|e| panic!("bpftool -j net: {e}: {out}"));
        v.as_array()?
            .iter()
            .filter_map(|e| e["xdp"].as_array())
            .flatten()
            .find(|x| x["devname"] == Self::SERVER_IF)
            .map(|x| {
                (
                    x["id"].as_u64().unwrap_or(0),
                    x["mode"].as_str().unwrap_or("").to_string(),
                )
            })
    }

    /// Wait (bounded by `timeout`) until no XDP program is attached to the server veth; returns
    /// whether that happened. Removing the last reference to a bpf_link (its pin) detaches the
    /// program from a kernel work item, a moment after `fw down` returned.
    pub fn wait_detached(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            if self.xdp_on_iface().is_none() {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// Flush the neighbour caches (ARP and NDP) of both namespaces.
    pub fn flush_neighbours(&self) {
        for ns in [&self.server, &self.client] {
            ns.ip(&["neigh", "flush", "all"]);
            ns.ip(&["-6", "neigh", "flush", "all"]);
        }
    }

    /// Remove everything and check it is gone: the namespaces from `ip netns list`, fw's pin
    /// and state directories for them.
    pub fn finish(self) {
        let names = [
            self.server.name().to_string(),
            self.client.name().to_string(),
        ];
        let dirs = [
            self.server.pins_dir(),
            self.server.state_dir(),
            self.client.pins_dir(),
            self.client.state_dir(),
        ];
        drop(self);
        let left = netns_list();
        for n in &names {
            assert!(!left.contains(n), "namespace {n} still exists: {left:?}");
        }
        for d in &dirs {
            assert!(!d.exists(), "{} still exists after cleanup", d.display());
        }
    }
}

fn mac_str(m: [u8; 6]) -> String {
    m.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// Ids of the pinned XDP link.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LinkIds {
    pub link_id: u64,
    pub prog_id: u64,
}

/// One interface of `fw status --json`.
#[derive(Clone, Debug)]
pub struct Status(pub Value);

impl Status {
    /// Packets counted under a reason (`default-drop`, `tcp-null`, ...).
    #[track_caller]
    pub fn reason(&self, name: &str) -> u64 {
        self.0["reasons"]
            .as_array()
            .and_then(|a| a.iter().find(|r| r["reason"] == name))
            .and_then(|r| r["packets"].as_u64())
            .unwrap_or_else(|| panic!("no reason {name:?} in fw status: {:#}", self.0))
    }

    /// Packets counted by the rules that allow exactly `port`/`proto` (summed).
    #[track_caller]
    pub fn rule(&self, port: u16, proto: &str) -> u64 {
        let rules = self.rules_for(port, proto);
        assert!(
            !rules.is_empty(),
            "no rule for {port}/{proto} in fw status: {:#}",
            self.0
        );
        rules
            .iter()
            .map(|r| r["packets"].as_u64().unwrap_or(0))
            .sum()
    }

    /// The rules for exactly `port`/`proto`.
    pub fn rules_for(&self, port: u16, proto: &str) -> Vec<Value> {
        self.0["rules"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter(|r| {
                        r["proto"] == proto
                            && (r["ports"].as_u64() == Some(u64::from(port))
                                || r["ports"].as_str() == Some(&port.to_string()))
                    })
                    .cloned()
                    .collect()
            })
            .unwrap_or_default()
    }

    pub fn generation(&self) -> u64 {
        self.0["generation"].as_u64().expect("generation")
    }

    /// The rules without their counters (to compare policies).
    pub fn rules_without_counters(&self) -> Vec<Value> {
        self.0["rules"]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .into_iter()
            .map(|mut r| {
                if let Some(o) = r.as_object_mut() {
                    o.remove("packets");
                    o.remove("bytes");
                }
                r
            })
            .collect()
    }
}

// ---------------------------------------------------------------------------------------------
// Temporary files

/// A directory under the system temp dir, removed on drop.
pub struct TempDir(PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        let p = std::env::temp_dir().join(format!(
            "fw-e2e-{tag}-{}-{}",
            std::process::id(),
            next_seq()
        ));
        fs::create_dir_all(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
        TempDir(p)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }

    /// Write `name` in the directory and return its path.
    pub fn write(&self, name: &str, contents: &str) -> PathBuf {
        let p = self.0.join(name);
        fs::write(&p, contents).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
        p
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

// ---------------------------------------------------------------------------------------------
// Scanners

/// `-p` argument for nmap from a sorted list of ports (ranges compressed).
pub fn port_arg(ports: &[u16]) -> String {
    let mut parts = Vec::new();
    let mut i = 0;
    while i < ports.len() {
        let lo = ports[i];
        let mut hi = lo;
        while i + 1 < ports.len() && ports[i + 1] == hi + 1 {
            i += 1;
            hi = ports[i];
        }
        parts.push(if lo == hi {
            lo.to_string()
        } else {
            format!("{lo}-{hi}")
        });
        i += 1;
    }
    parts.join(",")
}

/// Port → state from nmap's greppable output (`-oG -`), for every port in `scanned`: listed
/// ports with their state, the rest with the "Ignored State". Panics if the counts do not add
/// up (nmap failed, or the output format changed).
pub fn parse_nmap_grepable(out: &Output, scanned: &[u16]) -> BTreeMap<u16, String> {
    let line = out
        .stdout
        .lines()
        .find(|l| l.starts_with("Host:") && l.contains("Ports:"))
        .unwrap_or_else(|| panic!("no Ports line in nmap output: {out}"));
    let mut states = BTreeMap::new();
    let mut ignored: Option<(String, usize)> = None;
    for field in line.split('\t') {
        if let Some(list) = field.strip_prefix("Ports:") {
            for entry in list.split(',').map(str::trim).filter(|e| !e.is_empty()) {
                let mut it = entry.split('/');
                let port: u16 = it
                    .next()
                    .and_then(|p| p.trim().parse().ok())
                    .unwrap_or_else(|| panic!("bad nmap entry {entry:?}: {out}"));
                let state = it.next().unwrap_or("").to_string();
                states.insert(port, state);
            }
        } else if let Some(rest) = field.strip_prefix("Ignored State:") {
            let rest = rest.trim();
            let (state, count) = rest
                .split_once(' ')
                .unwrap_or_else(|| panic!("bad Ignored State {rest:?}: {out}"));
            let count = count
                .trim_matches(|c| c == '(' || c == ')')
                .parse()
                .unwrap_or_else(|_| panic!("bad Ignored State count {rest:?}: {out}"));
            ignored = Some((state.to_string(), count));
        }
    }
    let listed = states.len();
    for p in scanned {
        if !states.contains_key(p) {
            let (state, _) = ignored
                .as_ref()
                .unwrap_or_else(|| panic!("port {p} missing and no Ignored State: {out}"));
            states.insert(*p, state.clone());
        }
    }
    let ignored_n = ignored.map(|(_, n)| n).unwrap_or(0);
    assert_eq!(
        listed + ignored_n,
        scanned.len(),
        "nmap reported {listed} ports + {ignored_n} ignored, {} were scanned: {out}",
        scanned.len()
    );
    assert_eq!(
        states.len(),
        scanned.len(),
        "nmap reported other ports: {out}"
    );
    states
}

/// Run nmap from `ns` with `scan` (e.g. "-sS") against `target` over `ports` and return the
/// state of every port. -T4 with two retries, no ping, no DNS: fast on a veth, and an answer
/// delayed on a loaded machine is still waited for (with -T5 and one retry a late RST or
/// SYN-ACK would turn into "filtered").
pub fn nmap(ns: &NetNs, scan: &str, target: IpAddr, ports: &[u16]) -> BTreeMap<u16, String> {
    let p = port_arg(ports);
    let t = target.to_string();
    let mut args = vec![
        scan,
        "-p",
        &p,
        "-T4",
        "--max-retries",
        "2",
        "-Pn",
        "-n",
        "-oG",
        "-",
    ];
    if target.is_ipv6() {
        args.push("-6");
    }
    args.push(&t);
    let out = ns.run("nmap", &args, Duration::from_secs(120));
    assert!(out.success(), "nmap failed: {out}");
    parse_nmap_grepable(&out, ports)
}

/// (transmitted, received) from hping3's statistics.
pub fn parse_hping3(out: &Output) -> (u64, u64) {
    let text = out.text();
    let line = text
        .lines()
        .find(|l| l.contains("packets transmitted"))
        .unwrap_or_else(|| panic!("no statistics in hping3 output: {out}"));
    let nums: Vec<u64> = line
        .split(|c: char| !c.is_ascii_digit())
        .filter_map(|w| w.parse().ok())
        .collect();
    assert!(nums.len() >= 2, "bad hping3 statistics line {line:?}");
    (nums[0], nums[1])
}

/// Send `count` TCP probes with hping3 flag arguments (e.g. `&["-F", "-P", "-U"]`, or none for
/// a NULL probe) from `ns` to `target:port`, 50 ms apart; returns (sent, replies received).
pub fn hping3(ns: &NetNs, flags: &[&str], target: Ipv4Addr, port: u16, count: u32) -> (u64, u64) {
    let c = count.to_string();
    let p = port.to_string();
    let t = target.to_string();
    let mut args = vec!["-c", &c, "-i", "u50000", "-p", &p];
    args.extend_from_slice(flags);
    args.push(&t);
    let out = ns.run("hping3", &args, Duration::from_secs(30));
    assert!(!out.timed_out(), "hping3 did not finish: {out}");
    parse_hping3(&out)
}

impl Pair {
    /// Read `fw status` until `done` holds for it or `timeout` passes, and return the last one.
    /// (Native XDP on a veth runs in the receiving side's NAPI poll, a moment after the sender's
    /// send() returned: a counter may lag a dropped packet by a little.)
    pub fn status_when(&self, timeout: Duration, done: impl Fn(&Status) -> bool) -> Status {
        let deadline = Instant::now() + timeout;
        loop {
            let s = self.status();
            if done(&s) || Instant::now() >= deadline {
                return s;
            }
            thread::sleep(Duration::from_millis(50));
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Connections that stay open: echo servers, sessions, the tracked-connection listing

/// A TCP listener that keeps what it accepts open and echoes back whatever each connection
/// sends, until the peer closes (then it closes too, with a FIN), the connection fails, or the
/// server is dropped. Unlike [`Listener`], whose connections are closed at once, its sessions
/// can exchange data for as long as a test needs.
pub struct EchoServer {
    addr: SocketAddr,
    accepted: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl EchoServer {
    /// Upper bounds of the accept loop and of each connection.
    const MAX_CONNS: usize = 10_000;
    const MAX_LIFETIME: Duration = Duration::from_secs(600);

    fn start(addr: SocketAddr, l: TcpListener) -> EchoServer {
        l.set_nonblocking(true).expect("nonblocking listener");
        let accepted = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (a, st) = (accepted.clone(), stop.clone());
        let thread = thread::spawn(move || {
            let deadline = Instant::now() + Self::MAX_LIFETIME;
            let mut conns = Vec::new();
            while !st.load(Ordering::Relaxed)
                && Instant::now() < deadline
                && a.load(Ordering::Relaxed) < Self::MAX_CONNS
            {
                match l.accept() {
                    Ok((conn, _)) => {
                        a.fetch_add(1, Ordering::Relaxed);
                        let st = st.clone();
                        conns.push(thread::spawn(move || echo_loop(conn, &st, deadline)));
                    }
                    Err(_) => thread::sleep(Duration::from_millis(2)),
                }
            }
            for c in conns {
                let _ = c.join();
            }
        });
        EchoServer {
            addr,
            accepted,
            stop,
            thread: Some(thread),
        }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Connections accepted so far.
    pub fn accepted(&self) -> usize {
        self.accepted.load(Ordering::Relaxed)
    }
}

fn echo_loop(mut conn: std::net::TcpStream, stop: &AtomicBool, deadline: Instant) {
    use std::io::Write as _;
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
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl NetNs {
    /// An [`EchoServer`] on `addr` in this namespace.
    pub fn echo_tcp(&self, addr: SocketAddr) -> EchoServer {
        let s = self.socket(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP));
        s.set_reuse_address(true).expect("SO_REUSEADDR");
        if addr.is_ipv6() {
            s.set_only_v6(true).expect("IPV6_V6ONLY");
        }
        s.bind(&addr.into())
            .unwrap_or_else(|e| panic!("bind {addr} in {}: {e}", self.name));
        s.listen(1024).expect("listen");
        EchoServer::start(addr, s.into())
    }

    /// A TCP connection from this namespace to `to` (from the local address `from` if given),
    /// which must succeed within [`CONNECT_OK`]. The stream lives in this namespace.
    #[track_caller]
    pub fn stream(&self, to: SocketAddr, from: Option<SocketAddr>) -> std::net::TcpStream {
        let s = self.socket(Domain::for_address(to), Type::STREAM, Some(Protocol::TCP));
        if let Some(a) = from {
            s.set_reuse_address(true).expect("SO_REUSEADDR");
            s.bind(&a.into())
                .unwrap_or_else(|e| panic!("bind {a} in {}: {e}", self.name));
        }
        s.connect_timeout(&to.into(), CONNECT_OK)
            .unwrap_or_else(|e| panic!("connect {to} from {}: {e}", self.name));
        let t: std::net::TcpStream = s.into();
        t.set_nodelay(true).expect("TCP_NODELAY");
        t
    }
}

/// Send `msg` on `stream` and read it back from an echo server within `wait`: whether the
/// whole message came back unchanged.
pub fn echoes(stream: &mut std::net::TcpStream, msg: &[u8], wait: Duration) -> bool {
    use std::io::Write as _;
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

impl Pair {
    /// `fw conns --json` for the server veth: one JSON object per tracked flow.
    #[track_caller]
    pub fn conns(&self) -> Vec<Value> {
        let out = self
            .fw(&["conns", "--json", "--iface", Self::SERVER_IF])
            .check();
        let v: Value = serde_json::from_str(&out.stdout)
            .unwrap_or_else(|e| panic!("fw conns --json is not JSON ({e}): {out}"));
        v.as_array()
            .cloned()
            .unwrap_or_else(|| panic!("fw conns --json is not a list: {out}"))
    }

    /// The state file fw keeps for the server veth (`/run/fw/v1/<inode>/fwsrv/state.json`),
    /// parsed; `None` while fw is not attached.
    pub fn state_file(&self) -> Option<Value> {
        let p = self
            .server
            .state_dir()
            .join(Self::SERVER_IF)
            .join("state.json");
        let text = fs::read_to_string(p).ok()?;
        serde_json::from_str(&text).ok()
    }
}

/// One connection table of `fw status --json` ("out", "in" or "embryo").
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TableCounts {
    pub entries: u64,
    pub created: u64,
    pub removed: u64,
    pub evicted: u64,
}

impl Status {
    /// The occupancy and counters of one connection table.
    #[track_caller]
    pub fn table(&self, name: &str) -> TableCounts {
        let t = self.0["connections"]
            .as_array()
            .and_then(|a| a.iter().find(|t| t["table"] == name))
            .unwrap_or_else(|| panic!("no connection table {name:?} in fw status: {:#}", self.0));
        let n = |k: &str| {
            t[k].as_u64()
                .unwrap_or_else(|| panic!("table {name}: no {k}: {t:#}"))
        };
        TableCounts {
            entries: n("entries"),
            created: n("created"),
            removed: n("removed"),
            evicted: n("evicted"),
        }
    }

    /// Where the policy in force came from.
    pub fn source(&self) -> String {
        self.0["policy_source"].as_str().unwrap_or("").to_string()
    }

    pub fn flushed(&self) -> bool {
        self.0["flushed"].as_bool().unwrap_or(false)
    }
}

impl NetNs {
    /// The processes running in this namespace with their command lines (arguments joined by
    /// spaces), e.g. to find a detached helper such as fw's rollback timer.
    pub fn processes(&self) -> Vec<(i32, String)> {
        self.pids()
            .into_iter()
            .filter_map(|pid| {
                let raw = fs::read(format!("/proc/{pid}/cmdline")).ok()?;
                let line = raw
                    .split(|b| *b == 0)
                    .filter(|a| !a.is_empty())
                    .map(|a| String::from_utf8_lossy(a).into_owned())
                    .collect::<Vec<_>>()
                    .join(" ");
                Some((pid, line))
            })
            .collect()
    }
}
