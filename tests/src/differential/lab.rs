//! The two hosts under test and their senders.
//!
//! ```text
//!   sender-ipt [peer] ==veth== [dut] host-ipt   iptables-legacy rules (the policy's iptables form)
//!   sender-fw  [peer] ==veth== [dut] host-fw    fw up --iface dut (the policy)
//! ```
//!
//! Both hosts are identical otherwise: the same addresses (10.77.0.1/24, fd00:77::1/64), MACs,
//! routes (default via the sender's side, a permanent neighbour entry), sysctls, GRO off, and
//! the same observation table (nftables, family inet):
//!
//! - `pre`: prerouting at priority -450, before defragmentation and conntrack: every frame that
//!   reached IP netfilter (the stack's own header checks passed);
//! - `in`: input at priority 10, after the iptables filter table (priority 0): every datagram
//!   the host's filter let through to its own stack. This is the verdict compared. Its `ct
//!   state` match loads conntrack in both hosts, so both reassemble fragments before INPUT
//!   (as any host with a stateful ruleset does).
//!
//! Both log to NFLOG group 7 in their namespace. On the fw host a packet socket on `dut`
//! additionally sees each frame XDP passed (packet sockets see frames after XDP, before IP).
//!
//! The senders have no addresses and answer nothing; a packet socket on `peer` sends the
//! probes and captures what the host sends back. After each batch an ARP request goes to the
//! host and its reply is awaited: the host handles frames in order, so when the reply is
//! back, every frame before it has been judged and logged.

use std::{
    io,
    os::fd::{AsRawFd, FromRawFd, OwnedFd},
    path::Path,
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};

use super::{
    frames::{self, ETHERTYPE_IPV4, ETHERTYPE_IPV6, PEER_MAC, PROBE_MAC},
    generator::{EPHEMERAL, H4, PEER4, PEER6},
    nflog::{LogMsg, NfLog},
};
use crate::netns::{CMD_TIMEOUT, NetNs, Output, TempDir};

pub const HOST_IF: &str = "dut";
pub const PEER_IF: &str = "peer";
const NFLOG_GROUP: u16 = 7;
/// How long the host may take to answer the barrier (a bound: it answers in microseconds).
const BARRIER_WAIT: Duration = Duration::from_secs(5);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Iptables,
    Fw,
}

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Kind::Iptables => "iptables",
            Kind::Fw => "fw",
        }
    }
}

/// An AF_PACKET socket bound to one interface; it ignores the frames it sends itself.
pub struct PacketSock {
    fd: OwnedFd,
    buf: Vec<u8>,
}

impl PacketSock {
    /// Open on `iface` of the calling thread's namespace.
    pub fn open(iface: &str) -> io::Result<PacketSock> {
        let c = std::ffi::CString::new(iface).expect("no NUL");
        // SAFETY: a valid C string.
        let idx = unsafe { libc::if_nametoindex(c.as_ptr()) };
        if idx == 0 {
            return Err(io::Error::last_os_error());
        }
        let proto = (libc::ETH_P_ALL as u16).to_be();
        // SAFETY: plain socket(2).
        let raw = unsafe {
            libc::socket(
                libc::AF_PACKET,
                libc::SOCK_RAW | libc::SOCK_CLOEXEC,
                i32::from(proto),
            )
        };
        if raw < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: a descriptor we own.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        let one: libc::c_int = 1;
        let size: libc::c_int = 32 << 20;
        // SAFETY: setsockopt with int values.
        unsafe {
            // PACKET_IGNORE_OUTGOING (Linux 4.20).
            libc::setsockopt(
                fd.as_raw_fd(),
                libc::SOL_PACKET,
                23,
                &one as *const libc::c_int as *const libc::c_void,
                4,
            );
            libc::setsockopt(
                fd.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_RCVBUFFORCE,
                &size as *const libc::c_int as *const libc::c_void,
                4,
            );
            libc::setsockopt(
                fd.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_SNDBUFFORCE,
                &size as *const libc::c_int as *const libc::c_void,
                4,
            );
        }
        // SAFETY: sockaddr_ll is plain data.
        let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        sll.sll_family = libc::AF_PACKET as u16;
        sll.sll_protocol = proto;
        sll.sll_ifindex = idx as i32;
        // SAFETY: a valid sockaddr_ll of the given length.
        let rc = unsafe {
            libc::bind(
                fd.as_raw_fd(),
                &sll as *const libc::sockaddr_ll as *const libc::sockaddr,
                size_of::<libc::sockaddr_ll>() as u32,
            )
        };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(PacketSock {
            fd,
            buf: vec![0u8; 65536],
        })
    }

    pub fn send(&self, frame: &[u8]) -> io::Result<()> {
        // SAFETY: sending a buffer we own.
        let n = unsafe {
            libc::send(
                self.fd.as_raw_fd(),
                frame.as_ptr() as *const libc::c_void,
                frame.len(),
                0,
            )
        };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        if n as usize != frame.len() {
            return Err(io::Error::other("short send on the packet socket"));
        }
        Ok(())
    }

    /// One frame, waiting at most `wait` (zero: do not wait).
    pub fn recv(&mut self, wait: Duration) -> io::Result<Option<&[u8]>> {
        if !wait.is_zero() {
            let mut pfd = libc::pollfd {
                fd: self.fd.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            };
            let ms = wait.as_millis().clamp(1, 60_000) as libc::c_int;
            // SAFETY: one valid pollfd.
            let rc = unsafe { libc::poll(&mut pfd, 1, ms) };
            if rc < 0 {
                return Err(io::Error::last_os_error());
            }
            if rc == 0 {
                return Ok(None);
            }
        }
        // SAFETY: receiving into our own buffer, bounded by its length.
        let n = unsafe {
            libc::recv(
                self.fd.as_raw_fd(),
                self.buf.as_mut_ptr() as *mut libc::c_void,
                self.buf.len(),
                libc::MSG_DONTWAIT,
            )
        };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::WouldBlock {
                return Ok(None);
            }
            return Err(e);
        }
        Ok(Some(&self.buf[..n as usize]))
    }
}

/// What one barrier collected from a host.
#[derive(Default)]
pub struct Collected {
    /// (IPv6?, key) of each frame that reached IP netfilter.
    pub pre: Vec<(bool, u32)>,
    /// (IPv6?, key) of each datagram that passed the host's filter.
    pub delivered: Vec<(bool, u32)>,
    /// fw host: (IPv6?, key) of each frame XDP passed.
    pub xdp: Vec<(bool, u32)>,
    /// Frames the host sent (to the sender).
    pub sent: Vec<Vec<u8>>,
}

/// A host under test, its sender, and the observation sockets.
pub struct Host {
    pub kind: Kind,
    // Sockets first: they close before the namespaces go.
    wire: PacketSock,
    log: NfLog,
    tap: Option<PacketSock>,
    barriers: u32,
    pub xdp_mode: String,
    pub sender: NetNs,
    pub ns: NetNs,
}

/// The nftables observation table (see the module documentation).
fn observation_rules() -> String {
    let mac = PROBE_MAC
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":");
    format!(
        "table inet fwdiff {{\n\
         \tchain pre {{\n\
         \t\ttype filter hook prerouting priority -450; policy accept;\n\
         \t\tiifname \"{HOST_IF}\" ether saddr {mac} log prefix \"pre\" group {NFLOG_GROUP} snaplen 96 queue-threshold 1\n\
         \t}}\n\
         \tchain obs {{\n\
         \t\ttype filter hook input priority 10; policy accept;\n\
         \t\tiifname \"{HOST_IF}\" ether saddr {mac} ct state new,established,related,invalid,untracked log prefix \"in\" group {NFLOG_GROUP} snaplen 96 queue-threshold 1\n\
         \t}}\n\
         }}\n"
    )
}

fn check(out: Output, what: &str) -> anyhow::Result<Output> {
    if !out.success() {
        bail!("{what} failed: {out}");
    }
    Ok(out)
}

fn mac(m: [u8; 6]) -> String {
    m.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// What the iptables host loads: restore input per family, and which tool.
pub struct IptablesSetup<'a> {
    pub v4: &'a str,
    pub v6: &'a str,
    /// "legacy" (default) or "nft".
    pub flavour: &'a str,
}

impl Host {
    /// Build the namespaces, link, addresses and observation; then load iptables rules or fw.
    pub fn new(
        kind: Kind,
        dir: &TempDir,
        ipt: &IptablesSetup<'_>,
        fw_policy: &Path,
    ) -> anyhow::Result<Host> {
        let tag = match kind {
            Kind::Iptables => "diff-ipt",
            Kind::Fw => "diff-fw",
        };
        let ns = NetNs::new(tag);
        let sender = NetNs::new(&format!("{tag}-s"));
        let run = |n: &NetNs, prog: &str, args: &[&str]| -> anyhow::Result<Output> {
            check(
                n.run(prog, args, CMD_TIMEOUT),
                &format!("{prog} {}", args.join(" ")),
            )
        };
        run(
            &ns,
            "ip",
            &[
                "link",
                "add",
                HOST_IF,
                "address",
                &mac(frames::HOST_MAC),
                "type",
                "veth",
                "peer",
                "name",
                PEER_IF,
                "address",
                &mac(PEER_MAC),
                "netns",
                sender.name(),
            ],
        )?;
        let sysctls_host = [
            "net.ipv4.conf.all.rp_filter=0".to_string(),
            "net.ipv4.conf.default.rp_filter=0".into(),
            format!("net.ipv4.conf.{HOST_IF}.rp_filter=0"),
            format!(
                "net.ipv4.ip_local_port_range={} {}",
                EPHEMERAL.0, EPHEMERAL.1
            ),
            format!("net.ipv6.conf.{HOST_IF}.accept_ra=0"),
            format!("net.ipv6.conf.{HOST_IF}.accept_dad=0"),
            format!("net.ipv6.conf.{HOST_IF}.router_solicitations=0"),
        ];
        for s in &sysctls_host {
            run(&ns, "sysctl", &["-q", "-w", s])?;
        }
        run(
            &sender,
            "sysctl",
            &[
                "-q",
                "-w",
                &format!("net.ipv6.conf.{PEER_IF}.disable_ipv6=1"),
            ],
        )?;
        run(
            &ns,
            "ip",
            &["addr", "add", &format!("{H4}/24"), "dev", HOST_IF],
        )?;
        run(
            &ns,
            "ip",
            &[
                "-6",
                "addr",
                "add",
                &format!("{}/64", super::generator::H6),
                "dev",
                HOST_IF,
                "nodad",
            ],
        )?;
        run(&sender, "ip", &["link", "set", PEER_IF, "up"])?;
        run(&ns, "ip", &["link", "set", HOST_IF, "up"])?;
        run(&ns, "ethtool", &["-K", HOST_IF, "gro", "off"])?;
        wait_ipv6_ready(&ns)?;
        run(
            &ns,
            "ip",
            &[
                "route",
                "add",
                "default",
                "via",
                &PEER4.to_string(),
                "dev",
                HOST_IF,
            ],
        )?;
        run(
            &ns,
            "ip",
            &[
                "-6",
                "route",
                "add",
                "default",
                "via",
                &PEER6.to_string(),
                "dev",
                HOST_IF,
            ],
        )?;
        for a in [PEER4.to_string(), PEER6.to_string()] {
            run(
                &ns,
                "ip",
                &[
                    "neigh",
                    "replace",
                    &a,
                    "lladdr",
                    &mac(PEER_MAC),
                    "dev",
                    HOST_IF,
                    "nud",
                    "permanent",
                ],
            )?;
        }
        let obs = dir.write(&format!("{tag}-observe.nft"), &observation_rules());
        run(&ns, "nft", &["-f", &obs.display().to_string()])?;
        let mut xdp_mode = String::new();
        match kind {
            Kind::Iptables => {
                let (t4, t6) = match ipt.flavour {
                    "nft" => ("iptables-nft-restore", "ip6tables-nft-restore"),
                    _ => ("iptables-legacy-restore", "ip6tables-legacy-restore"),
                };
                let f4 = dir.write("rules.v4", ipt.v4);
                let f6 = dir.write("rules.v6", ipt.v6);
                run(&ns, t4, &[&f4.display().to_string()])?;
                run(&ns, t6, &[&f6.display().to_string()])?;
            }
            Kind::Fw => {
                let up = || {
                    let mut c = ns.command(crate::netns::fw_bin());
                    c.args(["up", "--iface", HOST_IF, "--force", "--policy"])
                        .arg(fw_policy)
                        .env_remove("SSH_CONNECTION")
                        .env_remove("SSH_CLIENT");
                    crate::netns::run_with_timeout(c, crate::netns::FW_TIMEOUT)
                };
                // BPF_PROG_LOAD may fail with EAGAIN (see engine::is_eagain): try again.
                let mut out = up();
                for _ in 0..4 {
                    if out.success() || !out.text().contains("os error 11") {
                        break;
                    }
                    std::thread::sleep(Duration::from_millis(50));
                    out = up();
                }
                let out = check(out, "fw up")?;
                xdp_mode = if out.text().contains("xdp native") {
                    "native".into()
                } else if out.text().contains("skb") {
                    "skb (generic)".into()
                } else {
                    "?".into()
                };
            }
        }
        let log = ns
            .enter(|| NfLog::open(NFLOG_GROUP))
            .with_context(|| format!("NFLOG group {NFLOG_GROUP} in {}", ns.name()))?;
        let wire = sender
            .enter(|| PacketSock::open(PEER_IF))
            .with_context(|| format!("packet socket on {PEER_IF} in {}", sender.name()))?;
        let tap = match kind {
            Kind::Fw => Some(
                ns.enter(|| PacketSock::open(HOST_IF))
                    .with_context(|| format!("packet socket on {HOST_IF} in {}", ns.name()))?,
            ),
            Kind::Iptables => None,
        };
        let mut h = Host {
            kind,
            wire,
            log,
            tap,
            barriers: 0,
            xdp_mode,
            sender,
            ns,
        };
        // Whatever the host sent while coming up is not part of the test.
        h.sync().context("first barrier")?;
        Ok(h)
    }

    pub fn send(&self, frame: &[u8]) -> anyhow::Result<()> {
        self.wire.send(frame).with_context(|| {
            format!(
                "sending a {}-byte frame to the {} host",
                frame.len(),
                self.kind.name()
            )
        })
    }

    /// Barrier, then everything the host logged, passed and sent since the last one.
    pub fn sync(&mut self) -> anyhow::Result<Collected> {
        self.barriers += 1;
        let spa = [10, 77, 0, 10 + (self.barriers % 240) as u8];
        let req = frames::arp_request(spa, H4.octets());
        let mut c = Collected::default();
        let mut answered = false;
        'attempts: for _ in 0..2 {
            self.send(&req)?;
            let deadline = Instant::now() + BARRIER_WAIT;
            // Bounded: at most this many frames per barrier.
            for _ in 0..1_000_000 {
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    continue 'attempts;
                }
                let Some(f) = self.wire.recv(left)? else {
                    continue;
                };
                if frames::arp_reply_to(f, spa) {
                    answered = true;
                    break 'attempts;
                }
                if matches!(
                    u16::from_be_bytes([f[12], f[13]]),
                    ETHERTYPE_IPV4 | ETHERTYPE_IPV6
                ) {
                    c.sent.push(f.to_vec());
                }
            }
        }
        if !answered {
            bail!(
                "the {} host did not answer the barrier ARP request within {:?} (twice)",
                self.kind.name(),
                BARRIER_WAIT
            );
        }
        let mut msgs: Vec<LogMsg> = Vec::new();
        self.log
            .drain(&mut msgs)
            .with_context(|| format!("reading NFLOG of the {} host", self.kind.name()))?;
        for m in msgs {
            let v6 = m.family == libc::AF_INET6 as u8;
            let Some(key) = frames::key_of_ip(v6, &m.payload) else {
                continue;
            };
            match m.prefix.as_str() {
                "pre" => c.pre.push((v6, key)),
                "in" => c.delivered.push((v6, key)),
                _ => {}
            }
        }
        if let Some(tap) = &mut self.tap {
            for _ in 0..1_000_000 {
                let Some(f) = tap.recv(Duration::ZERO)? else {
                    break;
                };
                if f.len() < 14 || f[6..12] != PROBE_MAC {
                    continue;
                }
                // Skip up to two VLAN tags.
                let mut off = 12;
                for _ in 0..2 {
                    if matches!(u16::from_be_bytes([f[off], f[off + 1]]), 0x8100 | 0x88a8)
                        && f.len() >= off + 6
                    {
                        off += 4;
                    }
                }
                let et = u16::from_be_bytes([f[off], f[off + 1]]);
                let v6 = match et {
                    ETHERTYPE_IPV4 => false,
                    ETHERTYPE_IPV6 => true,
                    _ => continue,
                };
                if let Some(key) = frames::key_of_ip(v6, &f[off + 2..]) {
                    c.xdp.push((v6, key));
                }
            }
        }
        Ok(c)
    }

    /// Frames the sender's veth dropped on the way to the host (a full queue): must be 0, or
    /// a lost frame would pass for a dropped one.
    pub fn wire_drops(&self) -> anyhow::Result<u64> {
        let out = check(
            self.sender.run(
                "ip",
                &["-s", "-j", "link", "show", "dev", PEER_IF],
                CMD_TIMEOUT,
            ),
            "ip -s link",
        )?;
        let v: serde_json::Value =
            serde_json::from_str(&out.stdout).with_context(|| format!("ip -s -j link: {out}"))?;
        Ok(v[0]["stats64"]["tx"]["dropped"].as_u64().unwrap_or(0))
    }

    /// The rules as the host reports them (for the record).
    pub fn describe_rules(&self, flavour: &str) -> String {
        match self.kind {
            Kind::Iptables => {
                let tool = if flavour == "nft" {
                    ["iptables-nft-save", "ip6tables-nft-save"]
                } else {
                    ["iptables-legacy-save", "ip6tables-legacy-save"]
                };
                tool.iter()
                    .map(|t| self.ns.run(t, &[], CMD_TIMEOUT).stdout)
                    .collect::<Vec<_>>()
                    .join("\n")
            }
            Kind::Fw => self.ns.fw(&["status", "--iface", HOST_IF]).stdout,
        }
    }
}

fn wait_ipv6_ready(ns: &NetNs) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let out = ns.run(
            "ip",
            &["-6", "-o", "addr", "show", "dev", HOST_IF],
            CMD_TIMEOUT,
        );
        if out.success() && out.stdout.contains("fd00:77::1") && !out.stdout.contains("tentative") {
            return Ok(());
        }
        if Instant::now() >= deadline {
            bail!(
                "the IPv6 address on {HOST_IF} in {} stays tentative: {out}",
                ns.name()
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Pins the calling thread to one CPU while alive, so every frame it sends lands in the same
/// receive queue (frames from two CPUs could be handled out of order, and a barrier would
/// not mean what it says). Restores the previous mask on drop.
pub struct CpuPin {
    old: libc::cpu_set_t,
}

impl CpuPin {
    pub fn new() -> anyhow::Result<CpuPin> {
        // SAFETY: cpu_set_t is plain data; sched_{get,set}affinity on the calling thread.
        unsafe {
            let mut old: libc::cpu_set_t = std::mem::zeroed();
            if libc::sched_getaffinity(0, size_of::<libc::cpu_set_t>(), &mut old) != 0 {
                bail!("sched_getaffinity: {}", io::Error::last_os_error());
            }
            let cpu = (0..libc::CPU_SETSIZE as usize)
                .find(|c| libc::CPU_ISSET(*c, &old))
                .unwrap_or(0);
            let mut one: libc::cpu_set_t = std::mem::zeroed();
            libc::CPU_SET(cpu, &mut one);
            if libc::sched_setaffinity(0, size_of::<libc::cpu_set_t>(), &one) != 0 {
                bail!("sched_setaffinity: {}", io::Error::last_os_error());
            }
            Ok(CpuPin { old })
        }
    }
}

impl Drop for CpuPin {
    fn drop(&mut self) {
        // SAFETY: restoring the mask read in new().
        unsafe {
            libc::sched_setaffinity(0, size_of::<libc::cpu_set_t>(), &self.old);
        }
    }
}
