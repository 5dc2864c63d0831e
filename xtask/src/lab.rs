//! The demo's throwaway lab, built from fw-lab's pieces: two network namespaces joined by a
//! veth pair, greeting listeners in one, traffic from the other. Everything is owned by [`Lab`],
//! whose Drop removes it — the filter, the listeners, the namespaces and any pins — also when a
//! step fails or on Ctrl-C.
//!
//! Traffic only ever goes between these two namespaces, to the addresses chosen here.

use std::{
    collections::BTreeMap,
    io::{ErrorKind, Read as _},
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket},
    path::PathBuf,
    thread,
    time::Duration,
};

use anyhow::{Context as _, anyhow, bail};
use fw_lab::{
    Listener, NetNs, Output, Status,
    link::{End, veth},
};

pub const SRV_V4: Ipv4Addr = Ipv4Addr::new(10, 251, 0, 1);
pub const CLI_V4: Ipv4Addr = Ipv4Addr::new(10, 251, 0, 2);
pub const SRV_V6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0xfdde, 0, 0, 0, 0, 0, 1);
pub const CLI_V6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0xfdde, 0, 0, 0, 0, 0, 2);

/// The client's listener, for the server's own outgoing connection.
pub const CLIENT_PORT: u16 = 5555;

const SHORT: Duration = Duration::from_secs(30);

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

/// What a UDP probe saw.
#[derive(Debug, PartialEq, Eq)]
pub enum UdpProbe {
    /// ICMP port unreachable came back: the datagram reached the server's kernel.
    Refused,
    NoAnswer,
    Reply,
    Other(String),
}

#[derive(Clone, Debug)]
pub struct Counter {
    pub packets: u64,
    pub meaning: String,
}

/// The lab: two namespaces, a veth pair, listeners, and (once `fw up` ran) a filter.
pub struct Lab {
    // Drop order: the listeners' threads stop, then the namespaces go.
    listeners: Vec<Listener>,
    srv: Option<NetNs>,
    cli: Option<NetNs>,
    /// The server's veth end, where fw is attached.
    pub srv_if: String,
    pub cli_if: String,
    pub fw: PathBuf,
    filter_up: bool,
}

impl Lab {
    /// Create both namespaces and the veth pair between them (the host's own namespace never
    /// sees either end), addresses, and listeners on `ports` of the server (and on
    /// [`CLIENT_PORT`] of the client).
    pub fn create(fw: PathBuf, ports: &[u16]) -> anyhow::Result<Self> {
        let pid = std::process::id();
        let mut lab = Lab {
            listeners: Vec::new(),
            srv: Some(NetNs::create("demo-srv")?),
            cli: Some(NetNs::create("demo-cli")?),
            srv_if: format!("fwd{pid}s"),
            cli_if: format!("fwd{pid}c"),
            fw,
            filter_up: false,
        };
        let (srv, cli) = (lab.srv(), lab.cli());
        let end = |ns, name| End {
            ns,
            name,
            mac: None,
        };
        veth(end(srv, &lab.srv_if), end(cli, &lab.cli_if))?;
        for (ns, ifname, v4, v6) in [
            (srv, &lab.srv_if, SRV_V4, SRV_V6),
            (cli, &lab.cli_if, CLI_V4, CLI_V6),
        ] {
            ns.add_addr(ifname, v4.into(), 24)?;
            ns.add_addr(ifname, v6.into(), 64)?;
            ns.link_up(ifname)?;
        }
        let mut listeners = Vec::new();
        for (ns, ports, ips) in [
            (srv, ports, [IpAddr::from(SRV_V4), SRV_V6.into()]),
            (cli, &[CLIENT_PORT][..], [CLI_V4.into(), CLI_V6.into()]),
        ] {
            for &p in ports {
                for ip in ips {
                    let greeting = format!("hello from port {p}\n");
                    listeners.push(ns.listen_tcp_greeting(SocketAddr::new(ip, p), greeting));
                }
            }
        }
        lab.listeners = listeners;
        Ok(lab)
    }

    pub fn srv(&self) -> &NetNs {
        self.srv.as_ref().expect("server namespace exists")
    }

    pub fn cli(&self) -> &NetNs {
        self.cli.as_ref().expect("client namespace exists")
    }

    /// `fw ARGS` inside the server namespace.
    pub fn fw(&self, args: &[&str]) -> anyhow::Result<Output> {
        Ok(self
            .srv()
            .cmd(&self.fw)
            .args(args)
            .timeout(Duration::from_secs(60))
            .run()?)
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
        let status = Status::parse(&out.stdout).map_err(|e| anyhow!(e))?;
        Ok(status
            .counters()
            .into_iter()
            .map(|(name, packets, meaning)| (name, Counter { packets, meaning }))
            .collect())
    }

    /// The XDP program on the server's veth, as `bpftool net` shows it: (program id, mode).
    pub fn xdp_prog(&self) -> anyhow::Result<Option<(u64, String)>> {
        let out = self
            .srv()
            .cmd("bpftool")
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
        Ok(connect_from(self.cli(), SocketAddr::new(ip, port), timeout))
    }

    /// TCP connect from the server namespace out to the client (the host's own connection).
    pub fn connect_out(&self, ip: IpAddr, port: u16, timeout: Duration) -> anyhow::Result<Connect> {
        Ok(connect_from(self.srv(), SocketAddr::new(ip, port), timeout))
    }

    /// `count` UDP datagrams from the client namespace; then wait for anything coming back.
    pub fn udp_probe(&self, ip: IpAddr, port: u16, count: u32) -> anyhow::Result<UdpProbe> {
        let addr = SocketAddr::new(ip, port);
        let any: IpAddr = if ip.is_ipv4() {
            Ipv4Addr::UNSPECIFIED.into()
        } else {
            Ipv6Addr::UNSPECIFIED.into()
        };
        let s = self.cli().try_enter(|| UdpSocket::bind((any, 0)))??;
        let run = || -> std::io::Result<UdpProbe> {
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
        Ok(run().unwrap_or_else(|e| UdpProbe::Other(e.to_string())))
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
            // If this fails, removing the namespace's pins below detaches the filter all the same.
            let down = self
                .srv()
                .cmd(&self.fw)
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
            self.listeners.clear();
            println!("   ✓ listeners stopped");
        }
        let mut dirs = Vec::new();
        for ns in [self.cli.take(), self.srv.take()].into_iter().flatten() {
            dirs.extend([ns.pins_dir(), ns.state_dir()]);
            let c = ns.close();
            for s in c.steps {
                println!("   ✓ {s}");
            }
            failures.extend(c.failures);
        }
        // fw keeps pins and state per namespace inode: none may be left for these two.
        match dirs.iter().find(|d| d.exists()) {
            None => println!(
                "   ✓ no pins or state left under /sys/fs/bpf/fw, /run/fw for these namespaces"
            ),
            Some(d) => failures.push(format!("{} is left behind", d.display())),
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

/// A TCP connect from inside `ns`; reads the listener's greeting.
fn connect_from(ns: &NetNs, addr: SocketAddr, timeout: Duration) -> Connect {
    match ns.try_stream(addr, None, timeout) {
        Ok(s) => {
            let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
            // The listener writes one line and closes: read to the end (bounded in size).
            let mut buf = Vec::new();
            let _ = s.take(64).read_to_end(&mut buf);
            Connect::Open(String::from_utf8_lossy(&buf).trim().to_string())
        }
        Err(fw_lab::Connect::Refused) => Connect::Refused,
        Err(fw_lab::Connect::TimedOut) => Connect::NoAnswer,
        Err(fw_lab::Connect::Failed(e)) => Connect::Other(e),
        Err(fw_lab::Connect::Connected) => Connect::Other("connected without a stream".into()),
    }
}

/// Run nmap from the client namespace; returns port → state ("open", "closed", "filtered",
/// "open|filtered").
pub fn nmap(
    cli: &NetNs,
    scan: &str,
    ports: &[u16],
    target: IpAddr,
) -> anyhow::Result<BTreeMap<u16, String>> {
    Ok(fw_lab::scan::try_nmap(cli, scan, target, ports)?)
}
