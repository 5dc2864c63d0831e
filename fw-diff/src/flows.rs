//! Stateful flows: the host under test opens real connections (TCP connect, UDP datagrams,
//! pings, other protocols) or accepts them on a listening socket, and the sender answers with
//! a script of packets built for exactly that host's 5-tuple and sequence numbers.
//!
//! Both hosts run the same scripts; only the numbers their own stacks chose (ephemeral ports,
//! initial sequence numbers) differ. Whatever the host sends is captured on the sender's side
//! (nothing answers it there) and fills in those numbers.

use std::{
    io,
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
};

use socket2::{Domain, Protocol, Socket, Type};

use super::{
    frames::{self, Dgram, ICMP, ICMPV6, TCP, UDP},
    generator::{EPHEMERAL, host},
    probes::{Class, traits as tr},
};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FlowKind {
    /// The host connects out over TCP.
    Tcp,
    /// The host sends a UDP datagram.
    Udp,
    /// The host pings.
    Echo,
    /// The host sends a packet of this IP protocol.
    Other(u8),
    /// A client connects to the host's listening socket.
    Inbound,
}

/// The sequence number of a TCP step, relative to the sender's side of the connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SeqRef {
    /// The sender's initial sequence number (SYN, SYN+ACK).
    Isn,
    /// The next one it would use.
    Next,
    /// The next one plus this much (outside the window).
    NextPlus(u32),
}

/// The acknowledgment number of a TCP step, relative to what the host sent.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AckRef {
    Zero,
    /// Everything the host sent so far.
    HostNext,
    /// Beyond it.
    HostNextPlus(u32),
}

/// A step sent from somewhere other than the flow's own ends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Tweak {
    None,
    WrongSport,
    WrongDport,
    WrongSrc,
}

#[derive(Clone, Debug)]
pub enum Step {
    Tcp {
        flags: u8,
        seq: SeqRef,
        ack: AckRef,
        payload: u16,
        tweak: Tweak,
        traits: u32,
    },
    Udp {
        payload: u16,
        tweak: Tweak,
        bad_csum: bool,
        fragmented: bool,
        traits: u32,
    },
    Echo {
        /// Echo reply (else: an echo request with the flow's identifier).
        reply: bool,
        id_delta: u16,
        tweak: Tweak,
        traits: u32,
    },
    /// An ICMP error quoting the host's first packet of the flow.
    IcmpError {
        ty: u8,
        code: u8,
        /// Sent by a router on the way (else by the remote end).
        from_router: bool,
        /// Added to the quoted destination port (0: the real one).
        inner_port_delta: u16,
        traits: u32,
    },
    Other {
        tweak: Tweak,
        traits: u32,
    },
}

impl Step {
    /// A TCP step of the connection (traits: tracked).
    pub fn tcp(flags: u8, seq: SeqRef, ack: AckRef, payload: u16) -> Step {
        Step::Tcp {
            flags,
            seq,
            ack,
            payload,
            tweak: Tweak::None,
            traits: tr::TRACKED,
        }
    }

    /// Add traits.
    pub fn with(mut self, t: u32) -> Step {
        let cur = self.traits();
        self.set_traits(cur | t);
        self
    }

    /// Send it from / to somewhere else: it no longer belongs to the connection.
    pub fn tweak(mut self, w: Tweak) -> Step {
        if let Step::Tcp { tweak, traits, .. } = &mut self {
            *tweak = w;
            *traits &= !tr::TRACKED;
        }
        self
    }

    pub fn traits(&self) -> u32 {
        match self {
            Step::Tcp { traits, .. }
            | Step::Udp { traits, .. }
            | Step::Echo { traits, .. }
            | Step::IcmpError { traits, .. }
            | Step::Other { traits, .. } => *traits,
        }
    }

    pub fn set_traits(&mut self, t: u32) {
        match self {
            Step::Tcp { traits, .. }
            | Step::Udp { traits, .. }
            | Step::Echo { traits, .. }
            | Step::IcmpError { traits, .. }
            | Step::Other { traits, .. } => *traits = t,
        }
    }

    pub fn describe(&self) -> String {
        let tw = |t: &Tweak| match t {
            Tweak::None => "",
            Tweak::WrongSport => " from another source port",
            Tweak::WrongDport => " to another port",
            Tweak::WrongSrc => " from another address",
        };
        match self {
            Step::Tcp {
                flags,
                seq,
                ack,
                payload,
                tweak,
                ..
            } => {
                let s = match seq {
                    SeqRef::Isn => "seq=ISN".to_string(),
                    SeqRef::Next => "seq=next".to_string(),
                    SeqRef::NextPlus(x) => format!("seq=next+{x:#x}"),
                };
                let a = match ack {
                    AckRef::Zero => String::new(),
                    AckRef::HostNext => ", ack=host's next".to_string(),
                    AckRef::HostNextPlus(x) => format!(", ack=host's next+{x:#x}"),
                };
                let p = if *payload > 0 {
                    format!(", {payload} bytes")
                } else {
                    String::new()
                };
                format!(
                    "TCP {} {s}{a}{p}{}",
                    super::generator::flag_names(*flags),
                    tw(tweak)
                )
            }
            Step::Udp {
                payload,
                tweak,
                bad_csum,
                fragmented,
                ..
            } => format!(
                "UDP reply, {payload} bytes{}{}{}",
                tw(tweak),
                if *bad_csum { ", bad checksum" } else { "" },
                if *fragmented { ", in 2 fragments" } else { "" }
            ),
            Step::Echo {
                reply,
                id_delta,
                tweak,
                ..
            } => format!(
                "echo {}{}{}",
                if *reply { "reply" } else { "request" },
                if *id_delta != 0 {
                    format!(", identifier +{id_delta}")
                } else {
                    String::new()
                },
                tw(tweak)
            ),
            Step::IcmpError {
                ty,
                code,
                from_router,
                inner_port_delta,
                ..
            } => format!(
                "ICMP error type {ty} code {code}{}{}",
                if *from_router {
                    " from a router"
                } else {
                    " from the remote end"
                },
                if *inner_port_delta != 0 {
                    ", quoting another port"
                } else {
                    ""
                }
            ),
            Step::Other { tweak, .. } => format!("reply{}", tw(tweak)),
        }
    }
}

/// One flow: who talks to whom, and the script the sender plays.
#[derive(Clone, Debug)]
pub struct FlowSpec {
    pub class: Class,
    pub v6: bool,
    pub kind: FlowKind,
    /// The other end: the server the host talks to, or the client connecting to it.
    pub remote: IpAddr,
    /// The other end's port (server port, or the client's source port).
    pub remote_port: u16,
    /// Inbound: the host's listening port (outbound: chosen by the host's stack).
    pub local_port: u16,
    /// Pings: the echo identifier.
    pub echo_id: u16,
    /// The sender's initial sequence number.
    pub s_isn: u32,
    /// The steps and each one's probe key.
    pub steps: Vec<(Step, u32)>,
    pub label: String,
}

/// What one host's side of a flow looks like while its script runs.
#[derive(Default)]
pub struct FlowRt {
    pub local_port: u16,
    pub h_isn: Option<u32>,
    pub h_next: u32,
    pub s_next: u32,
    /// The host's first packet of the flow (from its IP header), for ICMP errors to quote.
    pub first: Option<Vec<u8>>,
    pub socket: Option<Socket>,
}

/// Another address, for steps that must not belong to the flow.
fn other_addr(a: IpAddr) -> IpAddr {
    let (x, y): (IpAddr, IpAddr) = if a.is_ipv6() {
        (
            Ipv6Addr::new(0x2001, 0xdb8, 0xffff, 0, 0, 0, 0, 0xfe).into(),
            Ipv6Addr::new(0x2001, 0xdb8, 0xffff, 0, 0, 0, 0, 0xfd).into(),
        )
    } else {
        (
            Ipv4Addr::new(198, 51, 100, 254).into(),
            Ipv4Addr::new(198, 51, 100, 253).into(),
        )
    };
    if a == x { y } else { x }
}

/// A router on the way (the source of some ICMP errors).
fn router(v6: bool) -> IpAddr {
    if v6 {
        Ipv6Addr::new(0x2001, 0xdb8, 0xffff, 0, 0, 0, 0, 0x1).into()
    } else {
        Ipv4Addr::new(198, 51, 100, 1).into()
    }
}

impl FlowSpec {
    /// The host opens its side (inside the host's namespace): a connect, a datagram, a ping,
    /// a packet. Inbound flows need only the listener (see [`listen`]).
    pub fn open(&self) -> io::Result<FlowRt> {
        let mut rt = FlowRt {
            local_port: self.local_port,
            s_next: self.s_isn.wrapping_add(1),
            ..Default::default()
        };
        let h = host(self.v6);
        let remote = SocketAddr::new(self.remote, self.remote_port);
        let domain = if self.v6 { Domain::IPV6 } else { Domain::IPV4 };
        match self.kind {
            FlowKind::Inbound => {}
            FlowKind::Tcp => {
                let s = Socket::new(domain, Type::STREAM, Some(Protocol::TCP))?;
                s.set_nonblocking(true)?;
                if self.v6 {
                    s.set_only_v6(true)?;
                }
                s.bind(&SocketAddr::new(h, 0).into())?;
                match s.connect(&remote.into()) {
                    Ok(()) => {}
                    Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => {}
                    Err(e) => return Err(e),
                }
                rt.local_port = s.local_addr()?.as_socket().map(|a| a.port()).unwrap_or(0);
                rt.socket = Some(s);
            }
            FlowKind::Udp => {
                let s = Socket::new(domain, Type::DGRAM, Some(Protocol::UDP))?;
                s.set_nonblocking(true)?;
                if self.v6 {
                    s.set_only_v6(true)?;
                }
                s.bind(&SocketAddr::new(h, 0).into())?;
                s.send_to(b"fw differential test: a question", &remote.into())?;
                rt.local_port = s.local_addr()?.as_socket().map(|a| a.port()).unwrap_or(0);
                rt.socket = Some(s);
            }
            FlowKind::Echo => {
                let proto = if self.v6 {
                    Protocol::ICMPV6
                } else {
                    Protocol::ICMPV4
                };
                let s = Socket::new(domain, Type::RAW, Some(proto))?;
                s.set_nonblocking(true)?;
                s.bind(&SocketAddr::new(h, 0).into())?;
                let ty = if self.v6 { 128 } else { 8 };
                let id = self.echo_id.to_be_bytes();
                let mut m = frames::icmp(ty, 0, [id[0], id[1], 0, 1], b"fw differential");
                if !self.v6 {
                    // The kernel fills in only ICMPv6 checksums for raw sockets.
                    frames::set_l4_checksum(ICMP, h, self.remote, &mut m);
                }
                s.send_to(&m, &SocketAddr::new(self.remote, 0).into())?;
                rt.socket = Some(s);
            }
            FlowKind::Other(p) => {
                let s = Socket::new(domain, Type::RAW, Some(Protocol::from(i32::from(p))))?;
                s.set_nonblocking(true)?;
                s.bind(&SocketAddr::new(h, 0).into())?;
                s.send_to(&[0x42; 16], &SocketAddr::new(self.remote, 0).into())?;
                rt.socket = Some(s);
            }
        }
        Ok(rt)
    }

    /// Whether `seen` (a packet the host sent, captured on the sender's side) belongs to this
    /// flow, and if so learn from it.
    pub fn learn(&self, rt: &mut FlowRt, seen: &frames::Seen, ip: &[u8]) -> bool {
        let h = host(self.v6);
        if seen.src != h || seen.dst != self.remote {
            return false;
        }
        let mine = match self.kind {
            FlowKind::Tcp | FlowKind::Inbound => {
                seen.proto == TCP && seen.sport == rt.local_port && seen.dport == self.remote_port
            }
            FlowKind::Udp => {
                seen.proto == UDP
                    && seen.dport == self.remote_port
                    && (rt.local_port == 0 || seen.sport == rt.local_port)
            }
            FlowKind::Echo => {
                let (icmp, req) = if self.v6 { (ICMPV6, 128) } else { (ICMP, 8) };
                seen.proto == icmp && seen.flags == req && seen.sport == self.echo_id
            }
            // Flows of one protocol to one address look alike: each takes the first packet
            // no other flow has taken.
            FlowKind::Other(p) => seen.proto == p && rt.first.is_none(),
        };
        if !mine {
            return false;
        }
        if rt.first.is_none() {
            rt.first = Some(ip.to_vec());
        }
        if seen.proto == TCP {
            let end = seen.seq.wrapping_add(seen.seq_len);
            if seen.flags & 0x02 != 0 {
                rt.h_isn = Some(seen.seq);
                rt.h_next = end;
            } else if rt.h_isn.is_some() && end.wrapping_sub(rt.h_next) as i32 > 0 {
                rt.h_next = end;
            }
        }
        true
    }

    /// Whether the host's first packet was seen (outbound flows need it before the script).
    pub fn ready(&self, rt: &FlowRt) -> bool {
        match self.kind {
            FlowKind::Inbound => true,
            FlowKind::Tcp => rt.h_isn.is_some(),
            _ => rt.first.is_some(),
        }
    }

    /// The frames of step `i` for this host.
    pub fn frames(&self, rt: &mut FlowRt, i: usize) -> Vec<Vec<u8>> {
        let (step, key) = &self.steps[i];
        let key = *key;
        let h = host(self.v6);
        let addr = |t: &Tweak| {
            if *t == Tweak::WrongSrc {
                other_addr(self.remote)
            } else {
                self.remote
            }
        };
        // "Another" port must be nobody's, on either host (the hosts choose their own
        // ephemeral ports): no flow's remote port is in the hosts' ephemeral range, and no
        // flow's local port is just below it.
        let sport = |t: &Tweak| {
            if *t == Tweak::WrongSport {
                EPHEMERAL.0 + self.remote_port % 10_000
            } else {
                self.remote_port
            }
        };
        let dport = |t: &Tweak| {
            if *t == Tweak::WrongDport {
                EPHEMERAL.0 - 1 - self.remote_port % 1_000
            } else {
                rt.local_port
            }
        };
        match step {
            Step::Tcp {
                flags,
                seq,
                ack,
                payload,
                tweak,
                ..
            } => {
                let s = match seq {
                    SeqRef::Isn => self.s_isn,
                    SeqRef::Next => rt.s_next,
                    SeqRef::NextPlus(x) => rt.s_next.wrapping_add(*x),
                };
                let a = match ack {
                    AckRef::Zero => 0,
                    AckRef::HostNext => rt.h_next,
                    AckRef::HostNextPlus(x) => rt.h_next.wrapping_add(*x),
                };
                let data: Vec<u8> = (0..*payload).map(|b| b as u8).collect();
                let opts: &[u8] = if flags & 0x02 != 0 {
                    &frames::MSS_OPT
                } else {
                    &[]
                };
                let l4 = frames::tcp(sport(tweak), dport(tweak), s, a, *flags, opts, &data);
                if *seq == SeqRef::Next && *tweak == Tweak::None {
                    rt.s_next = rt
                        .s_next
                        .wrapping_add(u32::from(*payload))
                        .wrapping_add(u32::from(flags & 0x01 != 0));
                }
                vec![Dgram::new(addr(tweak), h, TCP, l4, key).frame()]
            }
            Step::Udp {
                payload,
                tweak,
                bad_csum,
                fragmented,
                ..
            } => {
                let data: Vec<u8> = (0..*payload).map(|b| b as u8).collect();
                let l4 = frames::udp(sport(tweak), dport(tweak), &data);
                let mut d = Dgram::new(addr(tweak), h, UDP, l4, key);
                if *bad_csum {
                    d.l4[6] ^= 0x33;
                }
                if *fragmented {
                    let n = d.l4.len();
                    d.fragments(&[(0, 304), (304, n)], 0x4000_0000 | key)
                } else {
                    vec![d.frame()]
                }
            }
            Step::Echo {
                reply,
                id_delta,
                tweak,
                ..
            } => {
                let (proto, ty) = match (self.v6, reply) {
                    (false, true) => (ICMP, 0),
                    (false, false) => (ICMP, 8),
                    (true, true) => (ICMPV6, 129),
                    (true, false) => (ICMPV6, 128),
                };
                let id = self.echo_id.wrapping_add(*id_delta).to_be_bytes();
                let m = frames::icmp(ty, 0, [id[0], id[1], 0, 1], b"fw differential");
                vec![Dgram::new(addr(tweak), h, proto, m, key).frame()]
            }
            Step::IcmpError {
                ty,
                code,
                from_router,
                inner_port_delta,
                ..
            } => {
                let mut inner = rt
                    .first
                    .clone()
                    .unwrap_or_else(|| self.synthetic_first(rt.local_port));
                let (hl, l4proto) = if self.v6 {
                    (40, inner.get(6).copied().unwrap_or(0))
                } else {
                    (
                        usize::from(inner.first().copied().unwrap_or(0x45) & 0x0f) * 4,
                        inner.get(9).copied().unwrap_or(0),
                    )
                };
                inner.truncate(hl + 8);
                if *inner_port_delta != 0 && inner.len() >= hl + 8 {
                    // The destination port, or an echo's identifier.
                    let at = if l4proto == ICMP || l4proto == ICMPV6 {
                        hl + 4
                    } else {
                        hl + 2
                    };
                    let p = u16::from_be_bytes([inner[at], inner[at + 1]])
                        .wrapping_add(*inner_port_delta);
                    inner[at..at + 2].copy_from_slice(&p.to_be_bytes());
                }
                let rest = match (self.v6, *ty, *code) {
                    (false, 3, 4) => [0, 0, 0x05, 0x00],
                    (true, 2, _) => 1280u32.to_be_bytes(),
                    _ => [0; 4],
                };
                let proto = if self.v6 { ICMPV6 } else { ICMP };
                let src = if *from_router {
                    router(self.v6)
                } else {
                    self.remote
                };
                let m = frames::icmp(*ty, *code, rest, &inner);
                vec![Dgram::new(src, h, proto, m, key).frame()]
            }
            Step::Other { tweak, .. } => {
                let FlowKind::Other(p) = self.kind else {
                    panic!("an Other step in a {:?} flow", self.kind)
                };
                vec![Dgram::new(addr(tweak), h, p, vec![0x24; 16], key).frame()]
            }
        }
    }

    /// What the host's first packet would look like (only if the capture missed it).
    fn synthetic_first(&self, local_port: u16) -> Vec<u8> {
        let h = host(self.v6);
        let (proto, l4) = match self.kind {
            FlowKind::Tcp | FlowKind::Inbound => (
                TCP,
                frames::tcp(local_port, self.remote_port, 0, 0, 0x02, &[], &[]),
            ),
            FlowKind::Udp => (UDP, frames::udp(local_port, self.remote_port, &[0; 8])),
            FlowKind::Echo => {
                let id = self.echo_id.to_be_bytes();
                (
                    if self.v6 { ICMPV6 } else { ICMP },
                    frames::icmp(if self.v6 { 128 } else { 8 }, 0, [id[0], id[1], 0, 1], &[]),
                )
            }
            FlowKind::Other(p) => (p, vec![0x42; 16]),
        };
        let f = Dgram::new(h, self.remote, proto, l4, 0).frame();
        f[frames::ETH_HLEN..].to_vec()
    }
}

/// Listening sockets (inside the host's namespace) for the inbound flows among `flows`: one
/// per family and port. They never accept: the kernel completes handshakes into the backlog.
pub fn listen(flows: &[&FlowSpec]) -> io::Result<Vec<Socket>> {
    let mut done: Vec<(bool, u16)> = Vec::new();
    let mut out = Vec::new();
    for f in flows.iter().filter(|f| f.kind == FlowKind::Inbound) {
        if done.contains(&(f.v6, f.local_port)) {
            continue;
        }
        done.push((f.v6, f.local_port));
        let domain = if f.v6 { Domain::IPV6 } else { Domain::IPV4 };
        let s = Socket::new(domain, Type::STREAM, Some(Protocol::TCP))?;
        s.set_reuse_address(true)?;
        if f.v6 {
            s.set_only_v6(true)?;
        }
        s.bind(&SocketAddr::new(host(f.v6), f.local_port).into())?;
        s.listen(4096)?;
        out.push(s);
    }
    Ok(out)
}
