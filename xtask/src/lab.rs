//! The demo's throwaway lab: two network namespaces joined by a veth pair, listeners in one,
//! traffic from the other. Everything is owned by [`Lab`], whose Drop removes it — the filter,
//! the listeners, the namespaces and any pins — also when a step fails or on Ctrl-C.
//!
//! Traffic only ever goes between these two namespaces, to the addresses chosen here.

use std::{
    collections::BTreeMap,
    fs::{self, File},
    io::{ErrorKind, Read as _, Write as _},
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener, TcpStream, UdpSocket},
    os::{fd::AsRawFd as _, unix::fs::MetadataExt as _},
    path::{Path, PathBuf},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
        mpsc,
    },
    thread::{self, JoinHandle},
    time::{Duration, Instant},
};

use anyhow::{Context as _, anyhow, bail};

use crate::proc::{Cmd, Output};

pub const SRV_V4: Ipv4Addr = Ipv4Addr::new(10, 251, 0, 1);
pub const CLI_V4: Ipv4Addr = Ipv4Addr::new(10, 251, 0, 2);
pub const SRV_V6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0xfdde, 0, 0, 0, 0, 0, 1);
pub const CLI_V6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0xfdde, 0, 0, 0, 0, 0, 2);

/// The client's listener, for the server's own outgoing connection.
pub const CLIENT_PORT: u16 = 5555;

const NETNS_DIR: &str = "/var/run/netns";
/// The listeners stop by themselves after this, whatever happens to the demo.
const LISTENER_LIFETIME: Duration = Duration::from_secs(15 * 60);
const SHORT: Duration = Duration::from_secs(30);

/// A named network namespace (`ip netns add`).
pub struct Netns {
    pub name: String,
    /// Its inode: the directory name fw uses for it under /sys/fs/bpf/fw/vN/.
    pub ino: u64,
}

impl Netns {
    fn create(name: &str) -> anyhow::Result<Self> {
        Cmd::new("ip")
            .args(["netns", "add", name])
            .timeout(SHORT)
            .ok()?;
        let ino = fs::metadata(Self::path_of(name))
            .map(|m| m.ino())
            .with_context(|| format!("netns {name} was created but cannot be read"))?;
        Ok(Netns {
            name: name.to_string(),
            ino,
        })
    }

    fn path_of(name: &str) -> PathBuf {
        Path::new(NETNS_DIR).join(name)
    }

    pub fn path(&self) -> PathBuf {
        Self::path_of(&self.name)
    }

    /// `ip -n NS ARGS`.
    fn ip(&self, args: &[&str]) -> anyhow::Result<Output> {
        Cmd::new("ip")
            .args(["-n", &self.name])
            .args(args)
            .timeout(SHORT)
            .ok()
    }

    /// A command inside the namespace through nsenter, which (unlike `ip netns exec`) keeps the
    /// host's /sys, so fw and bpftool see the pins under /sys/fs/bpf.
    pub fn nsenter(&self, program: impl AsRef<std::ffi::OsStr>) -> Cmd {
        Cmd::new("nsenter")
            .arg(format!("--net={}", self.path().display()))
            .arg("--")
            .arg(program)
    }

    /// A traffic tool inside the namespace (`ip netns exec` also gives it the namespace's /sys,
    /// which tools that look up interfaces there want).
    pub fn exec(&self, program: &str) -> Cmd {
        Cmd::new("ip").args(["netns", "exec", &self.name, program])
    }
}

/// Put the calling thread into the network namespace at `path`.
fn enter_netns(path: &Path) -> std::io::Result<()> {
    let f = File::open(path)?;
    // SAFETY: a valid fd of an nsfs file; CLONE_NEWNET only affects this thread.
    if unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// Run `f` on a thread inside the namespace (`f` must be bounded in time).
pub fn in_netns<T: Send + 'static>(
    ns: &Netns,
    f: impl FnOnce() -> T + Send + 'static,
) -> anyhow::Result<T> {
    let path = ns.path();
    thread::spawn(move || {
        enter_netns(&path).map_err(|e| anyhow!("entering {}: {e}", path.display()))?;
        Ok(f())
    })
    .join()
    .map_err(|_| anyhow!("a thread inside the namespace panicked"))?
}

/// Listeners on the server side: they accept, say which port answered, and close.
struct Listeners {
    stop: Arc<AtomicBool>,
    handle: Option<JoinHandle<()>>,
}

impl Listeners {
    fn start(ns: &Netns, ports: &[u16]) -> anyhow::Result<Self> {
        let stop = Arc::new(AtomicBool::new(false));
        let (tx, rx) = mpsc::channel::<Result<(), String>>();
        let path = ns.path();
        let ports = ports.to_vec();
        let stop2 = stop.clone();
        let handle = thread::spawn(move || {
            if let Err(e) = enter_netns(&path) {
                let _ = tx.send(Err(format!("entering {}: {e}", path.display())));
                return;
            }
            let mut listeners = Vec::new();
            for p in ports {
                // [::] takes IPv4 too (net.ipv6.bindv6only is 0 in a new namespace).
                let l = TcpListener::bind((Ipv6Addr::UNSPECIFIED, p))
                    .and_then(|l| l.set_nonblocking(true).map(|()| l));
                match l {
                    Ok(l) => listeners.push((p, l)),
                    Err(e) => {
                        let _ = tx.send(Err(format!("listening on port {p}: {e}")));
                        return;
                    }
                }
            }
            let _ = tx.send(Ok(()));
            let end = Instant::now() + LISTENER_LIFETIME;
            while !stop2.load(Ordering::SeqCst) && Instant::now() < end {
                for (p, l) in &listeners {
                    if let Ok((mut s, _)) = l.accept() {
                        let _ = s.set_nonblocking(false);
                        let _ = s.set_write_timeout(Some(Duration::from_secs(1)));
                        let _ = writeln!(s, "hello from port {p}");
                    }
                }
                thread::sleep(Duration::from_millis(10));
            }
        });
        let mut me = Listeners {
            stop,
            handle: Some(handle),
        };
        match rx.recv_timeout(Duration::from_secs(10)) {
            Ok(Ok(())) => Ok(me),
            Ok(Err(e)) => Err(anyhow!(e)),
            Err(_) => {
                me.stop_now();
                bail!("the listeners did not start within 10 s")
            }
        }
    }

    fn stop_now(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

impl Drop for Listeners {
    fn drop(&mut self) {
        self.stop_now();
    }
}

/// What a TCP connect saw.
#[derive(Debug, PartialEq, Eq)]
pub enum Connect {
    /// Connected; the server's greeting.
    Open(String),
    /// An RST came back: the SYN reached the server's kernel.
    Refused,
    /// Nothing came back: the SYN was dropped on the way.
    NoAnswer,
    Other(String),
}

/// A TCP connect from inside `ns`; reads the listener's greeting.
fn connect_from(ns: &Netns, addr: SocketAddr, timeout: Duration) -> anyhow::Result<Connect> {
    in_netns(ns, move || {
        match TcpStream::connect_timeout(&addr, timeout) {
            Ok(s) => {
                let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
                // The listener writes one line and closes: read to the end (bounded in size).
                let mut buf = Vec::new();
                let _ = s.take(64).read_to_end(&mut buf);
                Connect::Open(String::from_utf8_lossy(&buf).trim().to_string())
            }
            Err(e) if e.kind() == ErrorKind::ConnectionRefused => Connect::Refused,
            Err(e) if matches!(e.kind(), ErrorKind::TimedOut | ErrorKind::WouldBlock) => {
                Connect::NoAnswer
            }
            Err(e) => Connect::Other(e.to_string()),
        }
    })
}

/// What a UDP probe saw.
#[derive(Debug, PartialEq, Eq)]
pub enum UdpProbe {
    /// ICMP port unreachable came back: the datagram reached the server's kernel.
    Refused,
    NoAnswer,
    Reply,
    Other(String),
}

/// The lab: two namespaces, a veth pair, listeners, and (once `fw up` ran) a filter.
pub struct Lab {
    pub srv: Option<Netns>,
    pub cli: Option<Netns>,
    /// The server's veth end, where fw is attached.
    pub srv_if: String,
    pub cli_if: String,
    pub fw: PathBuf,
    /// Listeners on the server, and one on the client (for the server's own outgoing connection).
    listeners: Vec<Listeners>,
    filter_up: bool,
}

impl Lab {
    /// Create both namespaces and the veth pair between them, straight inside the namespaces
    /// (the host's own namespace never sees either end).
    pub fn create(fw: PathBuf, ports: &[u16]) -> anyhow::Result<Self> {
        let pid = std::process::id();
        let mut lab = Lab {
            srv: None,
            cli: None,
            srv_if: format!("fwd{pid}s"),
            cli_if: format!("fwd{pid}c"),
            fw,
            listeners: Vec::new(),
            filter_up: false,
        };
        lab.srv = Some(Netns::create(&format!("fwdemo-{pid}-srv"))?);
        lab.cli = Some(Netns::create(&format!("fwdemo-{pid}-cli"))?);
        let (srv, cli) = (lab.srv(), lab.cli());
        Cmd::new("ip")
            .args(["link", "add", &lab.srv_if, "netns", &srv.name])
            .args([
                "type",
                "veth",
                "peer",
                "name",
                &lab.cli_if,
                "netns",
                &cli.name,
            ])
            .timeout(SHORT)
            .ok()?;
        for (ns, ifname, v4, v6) in [
            (srv, &lab.srv_if, SRV_V4, SRV_V6),
            (cli, &lab.cli_if, CLI_V4, CLI_V6),
        ] {
            ns.ip(&["link", "set", "lo", "up"])?;
            ns.ip(&["addr", "add", &format!("{v4}/24"), "dev", ifname])?;
            // nodad: usable at once, no duplicate-address wait on a link we own both ends of.
            ns.ip(&[
                "-6",
                "addr",
                "add",
                &format!("{v6}/64"),
                "dev",
                ifname,
                "nodad",
            ])?;
            ns.ip(&["link", "set", ifname, "up"])?;
        }
        let srv_listeners = Listeners::start(srv, ports)?;
        lab.listeners.push(srv_listeners);
        let cli_listeners = Listeners::start(lab.cli(), &[CLIENT_PORT])?;
        lab.listeners.push(cli_listeners);
        Ok(lab)
    }

    pub fn srv(&self) -> &Netns {
        self.srv.as_ref().expect("server namespace exists")
    }

    pub fn cli(&self) -> &Netns {
        self.cli.as_ref().expect("client namespace exists")
    }

    /// `fw ARGS` inside the server namespace.
    pub fn fw(&self, args: &[&str]) -> anyhow::Result<Output> {
        self.srv()
            .nsenter(&self.fw)
            .args(args)
            .timeout(Duration::from_secs(60))
            .run()
    }

    pub fn fw_up(&mut self) -> anyhow::Result<Output> {
        // Marked first: a failed or interrupted `fw up` may still have left pins to remove.
        self.filter_up = true;
        let iface = self.srv_if.clone();
        self.fw(&["up", "--iface", &iface])
    }

    /// Counters of the running filter: reason name → packets, and "rule PORTS/PROTO" → packets.
    pub fn counters(&self) -> anyhow::Result<BTreeMap<String, Counter>> {
        let out = self.fw(&["status", "--json", "--iface", &self.srv_if])?;
        if !out.success() {
            bail!("fw status failed:\n{}", out.both());
        }
        let v: serde_json::Value =
            serde_json::from_str(&out.stdout).context("fw status --json printed no JSON")?;
        let iface = v
            .as_array()
            .and_then(|a| a.first())
            .context("fw status --json: no interface")?;
        let mut m = BTreeMap::new();
        for r in iface["reasons"].as_array().into_iter().flatten() {
            if let Some(name) = r["reason"].as_str() {
                m.insert(
                    name.to_string(),
                    Counter {
                        packets: r["packets"].as_u64().unwrap_or(0),
                        meaning: r["description"].as_str().unwrap_or("").to_string(),
                    },
                );
            }
        }
        for r in iface["rules"].as_array().into_iter().flatten() {
            let d = r["description"].as_str().unwrap_or("");
            let key = format!("rule {}", d.split_whitespace().next().unwrap_or("?"));
            m.insert(
                key,
                Counter {
                    packets: r["packets"].as_u64().unwrap_or(0),
                    meaning: d.to_string(),
                },
            );
        }
        Ok(m)
    }

    /// The XDP program on the server's veth, as `bpftool net` shows it: (program id, mode).
    pub fn xdp_prog(&self) -> anyhow::Result<Option<(u64, String)>> {
        let out = self
            .srv()
            .nsenter("bpftool")
            .args(["-j", "net", "show", "dev", &self.srv_if])
            .timeout(SHORT)
            .ok()?;
        let v: serde_json::Value =
            serde_json::from_str(&out.stdout).context("bpftool -j net printed no JSON")?;
        let x = &v[0]["xdp"][0];
        Ok(x["id"]
            .as_u64()
            .map(|id| (id, x["mode"].as_str().unwrap_or("?").to_string())))
    }

    /// TCP connect from the client namespace to the server.
    pub fn connect(&self, ip: IpAddr, port: u16, timeout: Duration) -> anyhow::Result<Connect> {
        connect_from(self.cli(), SocketAddr::new(ip, port), timeout)
    }

    /// TCP connect from the server namespace out to the client (the host's own connection).
    pub fn connect_out(&self, ip: IpAddr, port: u16, timeout: Duration) -> anyhow::Result<Connect> {
        connect_from(self.srv(), SocketAddr::new(ip, port), timeout)
    }

    /// `count` UDP datagrams from the client namespace; then wait for anything coming back.
    pub fn udp_probe(&self, ip: IpAddr, port: u16, count: u32) -> anyhow::Result<UdpProbe> {
        let addr = SocketAddr::new(ip, port);
        in_netns(self.cli(), move || {
            let any: IpAddr = if ip.is_ipv4() {
                Ipv4Addr::UNSPECIFIED.into()
            } else {
                Ipv6Addr::UNSPECIFIED.into()
            };
            let run = || -> std::io::Result<UdpProbe> {
                let s = UdpSocket::bind((any, 0))?;
                s.connect(addr)?;
                s.set_read_timeout(Some(Duration::from_millis(1500)))?;
                for _ in 0..count {
                    // A connected socket reports an ICMP error of an earlier datagram here.
                    if let Err(e) = s.send(b"fw demo probe") {
                        if e.kind() == ErrorKind::ConnectionRefused {
                            return Ok(UdpProbe::Refused);
                        }
                        return Err(e);
                    }
                    thread::sleep(Duration::from_millis(100));
                }
                let mut buf = [0u8; 64];
                Ok(match s.recv(&mut buf) {
                    Ok(_) => UdpProbe::Reply,
                    Err(e) if e.kind() == ErrorKind::ConnectionRefused => UdpProbe::Refused,
                    Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                        UdpProbe::NoAnswer
                    }
                    Err(e) => UdpProbe::Other(e.to_string()),
                })
            };
            run().unwrap_or_else(|e| UdpProbe::Other(e.to_string()))
        })
    }

    /// Remove everything now; returns what could not be removed. (Drop does the same for a
    /// lab that is never closed: on an error or Ctrl-C.)
    pub fn close(mut self) -> Vec<String> {
        self.teardown()
    }

    /// Everything in reverse order of creation; best effort, each failure recorded. A second
    /// call finds nothing left to do.
    fn teardown(&mut self) -> Vec<String> {
        let mut failures = Vec::new();
        if self.srv.is_none() && self.cli.is_none() && self.listeners.is_empty() {
            return failures;
        }
        if std::mem::take(&mut self.filter_up) && self.srv.is_some() {
            // If this fails, removing the pins below detaches the filter all the same.
            let down = self
                .srv()
                .nsenter(&self.fw)
                .args(["down", "--iface", &self.srv_if])
                .timeout(SHORT)
                .cleanup()
                .run();
            match down {
                Ok(o) if o.success() => println!("   ✓ fw down: {}", o.stdout.trim()),
                Ok(o) => println!("   · fw down: {}", o.both().trim()),
                Err(e) => println!("   · fw down: {e:#}"),
            }
        }
        if !self.listeners.is_empty() {
            for mut l in self.listeners.drain(..) {
                l.stop_now();
            }
            println!("   ✓ listeners stopped");
        }
        let mut inodes = Vec::new();
        for ns in [self.cli.take(), self.srv.take()].into_iter().flatten() {
            inodes.push(ns.ino);
            match Cmd::new("ip")
                .args(["netns", "del", &ns.name])
                .timeout(SHORT)
                .cleanup()
                .run()
            {
                Ok(o) if o.success() => println!("   ✓ network namespace {} deleted", ns.name),
                Ok(o) => failures.push(format!("ip netns del {}: {}", ns.name, o.both())),
                Err(e) => failures.push(format!("ip netns del {}: {e:#}", ns.name)),
            }
        }
        // fw keeps pins per namespace inode; whatever `fw down` did not remove goes now
        // (removing a link pin detaches its program).
        let mut removed = 0;
        for ino in inodes {
            for root in ["/sys/fs/bpf/fw", "/run/fw"] {
                let Ok(rd) = fs::read_dir(root) else { continue };
                for v in rd.flatten() {
                    let dir = v.path().join(ino.to_string());
                    if dir.exists() {
                        match fs::remove_dir_all(&dir) {
                            Ok(()) => {
                                println!("   ✓ removed leftover {}", dir.display());
                                removed += 1;
                            }
                            Err(e) => failures.push(format!("removing {}: {e}", dir.display())),
                        }
                    }
                }
            }
        }
        if removed == 0 && failures.is_empty() {
            println!("   ✓ no pins left under /sys/fs/bpf/fw for these namespaces");
        }
        for f in &failures {
            println!("   ✗ cleanup: {f}");
        }
        failures
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        let _ = self.teardown();
    }
}

#[derive(Clone, Debug)]
pub struct Counter {
    pub packets: u64,
    pub meaning: String,
}

/// Run nmap from the client namespace; returns port → state ("open", "closed", "filtered",
/// "open|filtered").
pub fn nmap(
    cli: &Netns,
    scan: &str,
    ports: &[u16],
    target: IpAddr,
) -> anyhow::Result<BTreeMap<u16, String>> {
    let list: Vec<String> = ports.iter().map(|p| p.to_string()).collect();
    let out = cli
        .exec("nmap")
        .args([
            "-n",
            "-Pn",
            scan,
            "-T4",
            "--max-retries",
            "1",
            "--host-timeout",
            "60s",
        ])
        .args(["-p", &list.join(","), "-oG", "-"])
        .arg(target.to_string())
        .timeout(Duration::from_secs(120))
        .ok()?;
    parse_nmap_grepable(&out.stdout, ports)
}

/// Read nmap's grepable output. Ports it folds into "Ignored State: filtered (N)" get that state.
fn parse_nmap_grepable(text: &str, ports: &[u16]) -> anyhow::Result<BTreeMap<u16, String>> {
    let line = text
        .lines()
        .find(|l| l.starts_with("Host:") && (l.contains("Ports:") || l.contains("Ignored State:")))
        .with_context(|| format!("nmap reported no ports:\n{text}"))?;
    let mut m = BTreeMap::new();
    let mut ignored = None;
    for field in line.split('\t') {
        if let Some(list) = field.strip_prefix("Ports: ") {
            for entry in list.split(", ") {
                let mut f = entry.split('/');
                if let (Some(p), Some(state)) = (f.next(), f.next())
                    && let Ok(p) = p.trim().parse::<u16>()
                {
                    m.insert(p, state.to_string());
                }
            }
        } else if let Some(rest) = field.strip_prefix("Ignored State: ") {
            ignored = rest.split_whitespace().next().map(str::to_string);
        }
    }
    for p in ports {
        if !m.contains_key(p)
            && let Some(s) = &ignored
        {
            m.insert(*p, s.clone());
        }
    }
    Ok(m)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nmap_grepable_output_with_ignored_ports() {
        let text = "# Nmap 7.93 scan initiated\nHost: 10.251.0.1 ()\tStatus: Up\nHost: 10.251.0.1 ()\tPorts: 22/open/tcp//ssh///, 25/closed/tcp//smtp///, 80/open/tcp//http///\tIgnored State: filtered (2)\n# Nmap done\n";
        let m = parse_nmap_grepable(text, &[22, 25, 80, 3306, 8080]).unwrap();
        assert_eq!(m[&22], "open");
        assert_eq!(m[&25], "closed");
        assert_eq!(m[&3306], "filtered");
        assert_eq!(m[&8080], "filtered");
    }

    #[test]
    fn nmap_all_ports_ignored() {
        let text = "Host: 10.251.0.1 ()\tIgnored State: open|filtered (4)\n";
        let m = parse_nmap_grepable(text, &[22, 25]).unwrap();
        assert_eq!(m[&22], "open|filtered");
        assert_eq!(m[&25], "open|filtered");
    }
}
