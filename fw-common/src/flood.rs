//! The flood step of the decision: block lists, bans, rate limits and the default action,
//! after the policy's rules ([`crate::decide::decide_core`]). It needs only the packet's source,
//! so the XDP program hands a [`Source`] to a tail-called program for it (the whole decision
//! does not fit one 512-byte BPF stack).

use crate::{
    Decision, Reason, Tables, block, limit,
    maps::{Config, PORT_SLOT_MASK, SLOT_HANDSHAKE, SLOT_LIMITED},
    packet::{Family, Ip},
};

/// What the flood step needs of a packet: its source address. Plain data, so the XDP program
/// can hand it over in map memory. (Nothing of the transport header: reading an enum's fields
/// outside the match arm that owns them lets LLVM load bytes the verifier calls uninitialized.
/// What the step needs of it travels in the decision: [`Reason::Ndp`] for neighbour discovery,
/// the port with [`SLOT_HANDSHAKE`].)
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Source {
    pub src: [u8; 16],
    /// 4 or 6.
    pub family: u8,
    pub _pad: [u8; 3],
}
const _: () = assert!(size_of::<Source>() == 20);

/// What the XDP program hands to the tail-called flood program (a
/// [`crate::maps::MAP_HANDOFF`] value): the packet's source and the decision so far.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Handoff {
    pub source: Source,
    pub slot: u32,
    /// 1 when the decision so far passes the packet.
    pub pass: u32,
}
const _: () = assert!(size_of::<Handoff>() == 28);

/// The decision of a packet that completed an inbound TCP handshake to `port` (see
/// [`SLOT_HANDSHAKE`]): established, with the port in bits 8..24.
#[inline(always)]
pub const fn handshake(port: u16) -> Decision {
    Decision {
        pass: true,
        slot: Reason::Established.slot() | SLOT_HANDSHAKE | (port as u32) << 8,
    }
}

impl Source {
    #[inline(always)]
    pub fn of(ip: &Ip) -> Self {
        Source {
            src: ip.src,
            family: if ip.family == Family::V6 { 6 } else { 4 },
            _pad: [0; 3],
        }
    }

    #[inline(always)]
    pub fn family(&self) -> Family {
        if self.family == 6 {
            Family::V6
        } else {
            Family::V4
        }
    }
}

/// Whether the flood step can change `d`: a block list or bans are in use, the rule that
/// matched has limits, or the default is accept. Otherwise the XDP program skips it.
#[inline(always)]
pub fn needs_flood<T: Tables>(t: &T, cfg: &Config, d: &Decision) -> bool {
    if d.slot == Reason::Ndp.slot() {
        // Neighbour discovery passes even from blocked sources, like ARP.
        return false;
    }
    d.slot & (SLOT_LIMITED | SLOT_HANDSHAKE) != 0
        || cfg.has(Config::DEFAULT_ACCEPT)
        || cfg.ban_len4 != 0
        || cfg.ban_len6 != 0
        || t.block_meta().is_some_and(|m| !m.is_empty())
}

/// Block lists and bans first (a blocked source is dropped whatever the rules said), then the
/// limits of the rule that admitted a new connection, then the default action. `cookie_syn`
/// ([`crate::syncookie::takes_syn`]): a SYN the cookie step sees next, which spends the rule's
/// `total` there only if it goes on to the kernel (answered in XDP, it costs the host nothing;
/// spent here, a spoofed flood would use up the total and real clients' SYNs be dropped before
/// a cookie could answer them).
#[inline(always)]
pub fn decide_flood<T: Tables>(
    t: &T,
    cfg: &Config,
    s: &Source,
    d: Decision,
    cookie_syn: bool,
) -> Decision {
    if d.slot == Reason::Ndp.slot() {
        return d;
    }
    if let Some(b) = block::check(t, cfg, s) {
        return b;
    }
    if d.slot & SLOT_HANDSHAKE != 0 {
        limit::on_handshake(t, s, (d.slot >> 8) as u16);
        return Decision::reason(Reason::Established);
    }
    if d.slot & SLOT_LIMITED != 0 {
        if let Some(l) = limit::check(t, s, d.slot, !cookie_syn) {
            return l;
        }
        return Decision::rule(d.slot & PORT_SLOT_MASK);
    }
    if cfg.has(Config::DEFAULT_ACCEPT) && closed(d.slot) {
        return Decision::reason(Reason::DefaultAccept);
    }
    d
}

/// Verdicts that only say "no rule admits it": `default = "accept"` lets these in.
#[inline(always)]
fn closed(slot: u32) -> bool {
    slot == Reason::DefaultDrop.slot()
        || slot == Reason::SourceNotAllowed.slot()
        || slot == Reason::IcmpUnrelated.slot()
        || slot == Reason::TcpNotSyn.slot()
}
