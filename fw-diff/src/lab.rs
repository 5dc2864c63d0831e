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
    net::IpAddr,
    path::Path,
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use fw_lab::{
    CMD_TIMEOUT, FW_TIMEOUT, NetNs, RawLink, TempDir, fw_bin,
    link::{End, veth},
};

use super::{
    frames::{self, ETHERTYPE_IPV4, ETHERTYPE_IPV6, PEER_MAC, PROBE_MAC},
    generator::{EPHEMERAL, H4, H6, PEER4, PEER6},
    nflog::{LogMsg, NfLog},
};

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
    wire: RawLink,
    log: NfLog,
    tap: Option<RawLink>,
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
        let ns = NetNs::create(tag)?;
        let sender = NetNs::create(&format!("{tag}-s"))?;
        link(&ns, &sender)?;
        let obs = dir.write(&format!("{tag}-observe.nft"), &observation_rules());
        run_file(&ns, "nft", &["-f"], &obs)?;
        let xdp_mode = match kind {
            Kind::Iptables => {
                load_iptables(&ns, dir, ipt)?;
                String::new()
            }
            Kind::Fw => fw_up(&ns, fw_policy)?,
        };
        let log = ns
            .enter(|| NfLog::open(NFLOG_GROUP))
            .with_context(|| format!("NFLOG group {NFLOG_GROUP} in {}", ns.name()))?;
        // The sender's own frames are not read back: only what the host sends.
        let open = |ns: &NetNs, iface: &str| -> anyhow::Result<RawLink> {
            ns.try_enter(|| RawLink::open(iface)?.ignore_outgoing()?.big_buffers())?
                .with_context(|| format!("packet socket on {iface} in {}", ns.name()))
        };
        let wire = open(&sender, PEER_IF)?;
        let tap = match kind {
            Kind::Fw => Some(open(&ns, HOST_IF)?),
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
        self.wire.try_send(frame).with_context(|| {
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
        let out = self
            .sender
            .try_ip(&["-s", "-j", "link", "show", "dev", PEER_IF])?;
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

/// The host's veth to its sender, the same in both hosts: addresses, routes and a permanent
/// neighbour through the sender's side, sysctls, GRO off; the sender has no IPv6 at all.
fn link(ns: &NetNs, sender: &NetNs) -> anyhow::Result<()> {
    veth(
        End {
            ns,
            name: HOST_IF,
            mac: Some(frames::HOST_MAC),
        },
        End {
            ns: sender,
            name: PEER_IF,
            mac: Some(PEER_MAC),
        },
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
        ns.sysctl(s)?;
    }
    sender.sysctl(&format!("net.ipv6.conf.{PEER_IF}.disable_ipv6=1"))?;
    ns.add_addr(HOST_IF, H4.into(), 24)?;
    ns.add_addr(HOST_IF, H6.into(), 64)?;
    sender.link_up(PEER_IF)?;
    ns.link_up(HOST_IF)?;
    ns.cmd("ethtool")
        .args(["-K", HOST_IF, "gro", "off"])
        .timeout(CMD_TIMEOUT)
        .ok()?;
    ns.wait_ipv6_ready(HOST_IF, H6, Duration::from_secs(10))?;
    for (v6, via) in [(false, IpAddr::V4(PEER4)), (true, IpAddr::V6(PEER6))] {
        let via = via.to_string();
        let mut args = vec!["route", "add", "default", "via", &via, "dev", HOST_IF];
        if v6 {
            args.insert(0, "-6");
        }
        ns.try_ip(&args)?;
    }
    for a in [IpAddr::V4(PEER4), IpAddr::V6(PEER6)] {
        ns.neigh_permanent(HOST_IF, a, PEER_MAC)?;
    }
    Ok(())
}

/// `program ARGS FILE` inside `ns`.
fn run_file(ns: &NetNs, program: &str, args: &[&str], file: &Path) -> anyhow::Result<()> {
    ns.cmd(program)
        .args(args)
        .arg(file)
        .timeout(CMD_TIMEOUT)
        .ok()?;
    Ok(())
}

/// The policy's iptables form, with iptables-legacy (or iptables-nft).
fn load_iptables(ns: &NetNs, dir: &TempDir, ipt: &IptablesSetup<'_>) -> anyhow::Result<()> {
    let (t4, t6) = match ipt.flavour {
        "nft" => ("iptables-nft-restore", "ip6tables-nft-restore"),
        _ => ("iptables-legacy-restore", "ip6tables-legacy-restore"),
    };
    run_file(ns, t4, &[], &dir.write("rules.v4", ipt.v4))?;
    run_file(ns, t6, &[], &dir.write("rules.v6", ipt.v6))
}

/// `fw up --force` with the policy (no SSH session to guard); the XDP mode it got.
fn fw_up(ns: &NetNs, fw_policy: &Path) -> anyhow::Result<String> {
    let up = || {
        ns.cmd(fw_bin())
            .args(["up", "--iface", HOST_IF, "--force", "--policy"])
            .arg(fw_policy)
            .env_remove("SSH_CONNECTION")
            .env_remove("SSH_CLIENT")
            .timeout(FW_TIMEOUT)
            .run()
    };
    // BPF_PROG_LOAD may fail with EAGAIN (see engine::is_eagain): try again.
    let mut out = up()?;
    for _ in 0..4 {
        if out.success() || !out.text().contains("os error 11") {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
        out = up()?;
    }
    let out = out.ok()?;
    Ok(if out.text().contains("xdp native") {
        "native".into()
    } else if out.text().contains("skb") {
        "skb (generic)".into()
    } else {
        "?".into()
    })
}
