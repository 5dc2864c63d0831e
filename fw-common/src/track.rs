//! Connection state on the ingress path: finding a packet's flow entry, moving it on, ending
//! it, and promoting a completed handshake, with the same side effects in the kernel's maps and
//! the userspace mirror ([`Tables`]). The transitions themselves are `flow`'s.

use crate::{
    decide::Tables,
    flow::{
        FlowKey, FlowState, FlowTable, REFRESH_NS, SOURCE_QUOTA, Segment, Step, flow_hint_slot,
        hint_slot, hint_time, state, tcp_ingress,
    },
    maps::PortProto,
    tcp::{ACK, RST, SYN},
};

/// An Embryo entry of `key` may live until `now + ttl_ns`: extend its hint slot to cover it.
#[inline(always)]
pub(crate) fn hint_embryo<T: Tables>(t: &T, key: &FlowKey, now: u64, ttl_ns: u64) {
    let slot = hint_slot(key);
    let until = hint_time(now.wrapping_add(ttl_ns)).wrapping_add(1);
    if t.embryo_hint(slot) < until {
        t.embryo_hint_set(slot, until);
    }
}

/// The quota key of a flow's remote end: an IPv4 address, or an IPv6 /64 (what one host
/// usually has); the last byte tells the families apart.
#[inline(always)]
pub fn source_key(key: &FlowKey) -> [u8; 16] {
    // Copies of a constant length only: a loop of 4 or 8 bytes compiles to a memset and a
    // memcpy of a variable length, which the BPF build calls as byte-at-a-time functions
    // (tests/tests/bpf_object.rs).
    let mut s = [0u8; 16];
    s[..4].copy_from_slice(&key.remote[..4]);
    if key.family != 4 {
        s[4..8].copy_from_slice(&key.remote[4..8]);
    }
    s[15] = key.family;
    s
}

/// What a packet found in a table.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Found {
    /// A live entry, now updated.
    Hit,
    /// A live entry whose connection this packet ended.
    Ended,
    /// An entry past its timeout.
    Expired,
}

/// Remove an entry that ended or expired; an `In` entry gives its source's quota back.
#[inline(always)]
pub(crate) fn forget<T: Tables>(t: &T, table: FlowTable, key: &FlowKey) {
    if t.flow_take(table, key) && table == FlowTable::In {
        let src = source_key(key);
        let n = t.source_count(&src);
        if n > 0 {
            t.source_count_set(&src, n - 1);
        }
    }
}

/// Apply `step` to a live entry and refresh it: `last_seen` moves when the state changed or
/// once per [`REFRESH_NS`]. The clock is read only on a hit: a miss (a scan) costs the lookup
/// alone.
#[inline(always)]
fn advance<T: Tables>(
    t: &T,
    st: &mut FlowState,
    proto: u8,
    step: impl FnOnce(&mut FlowState) -> Step,
) -> Found {
    let now = t.now();
    if !st.alive(proto, now, &t.config()) {
        return Found::Expired;
    }
    match step(st) {
        Step::Remove => return Found::Ended,
        Step::Moved => st.last_seen = now,
        Step::Keep => {
            if now.wrapping_sub(st.last_seen) > REFRESH_NS {
                st.last_seen = now;
            }
        }
    }
    Found::Hit
}

/// A live entry in `table`, moved on by this packet (`step`); one that expired or whose
/// connection the packet ended is removed. True when the packet belongs to a tracked flow.
#[inline(always)]
fn track<T: Tables>(
    t: &T,
    table: FlowTable,
    key: &FlowKey,
    step: impl FnOnce(&mut FlowState) -> Step,
) -> bool {
    match t.flow_with(table, key, |st| advance(t, st, key.proto, step)) {
        None => false,
        Some(Found::Hit) => true,
        Some(Found::Ended) => {
            forget(t, table, key);
            true
        }
        Some(Found::Expired) => {
            forget(t, table, key);
            false
        }
    }
}

/// Whether a non-SYN TCP segment belongs to a tracked connection.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Tracked {
    No,
    Yes,
    /// Yes, and this segment completed an inbound handshake (the embryo was promoted): the
    /// flood step gives its source a trusted rate-limit bucket.
    Handshake,
}

/// Non-SYN TCP: part of a tracked connection? A segment of no trusted flow (an ACK flood)
/// costs no hash lookup when its hint slot is empty ([`Tables::flow_hint`]); otherwise inbound
/// connections to an allowed port are looked up first in the inbound tables, everything else in
/// the outbound table first, so the common case costs one hash lookup.
#[inline(always)]
pub(crate) fn tcp_established<T: Tables>(
    t: &T,
    key: &FlowKey,
    seg: &Segment,
    dport: u16,
) -> Tracked {
    // Each lookup is its own call site with its own map, written out: the verifier inlines a
    // map lookup only where one map reaches the call (a loop over the tables would make it a
    // helper call), and distinct closures keep LLVM from outlining the shared code into a
    // subprogram with a stack frame of its own (fw_xdp has no room for one).
    let inbound_first = t.port(PortProto::Tcp, dport) != 0;
    // An empty hint slot: no trusted flow, only an embryo can be ours.
    let trusted = t.flow_hint(flow_hint_slot(key)) != 0;
    if trusted && inbound_first {
        if track(t, FlowTable::In, key, |st| tcp_ingress(st, seg))
            || track(t, FlowTable::Out, key, |st| tcp_ingress(st, seg))
        {
            return Tracked::Yes;
        }
    } else if trusted
        && (track(t, FlowTable::Out, key, |st| tcp_ingress(st, seg))
            || track(t, FlowTable::In, key, |st| tcp_ingress(st, seg)))
    {
        return Tracked::Yes;
    }
    // Embryos (and connections over their source's quota) exist only for ports the policy
    // admits SYNs to, so other ports skip the lookup; so does a flow whose hint slot no live
    // embryo has (an ACK flood: one array read instead of a hash lookup), and a slot no embryo
    // was ever written to (0) without reading the clock (a helper call, ~25 ns).
    let hint = if inbound_first {
        t.embryo_hint(hint_slot(key))
    } else {
        0
    };
    if hint != 0 && hint >= hint_time(t.now()) {
        embryo(t, key, seg)
    } else {
        Tracked::No
    }
}

/// What the Embryo table says about a segment.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Handshake {
    /// Not ours: no entry, a wrong acknowledgment number, or an expired entry.
    No,
    /// The client completed the handshake: this is its `In` entry.
    Complete(FlowState),
    /// A connection kept here (over quota), or a handshake the client refused or aborted.
    Found(Found),
}

/// The client's handshake ACK promotes the embryo if it acknowledges our SYN+ACK exactly. A
/// client that did not ask for our SYN+ACK answers it with a bare RST, or aborts with a RST+ACK
/// that acknowledges it: let those through so the host drops the half-open connection at once
/// (and forget the embryo).
#[inline(always)]
fn embryo<T: Tables>(t: &T, key: &FlowKey, seg: &Segment) -> Tracked {
    let handshake_ack = seg.flags & (SYN | ACK) == ACK;
    let refusal = seg.flags & (SYN | ACK | RST) == RST;
    if !(handshake_ack || refusal) {
        return Tracked::No;
    }
    let h = t.flow_with(FlowTable::Embryo, key, |e| {
        if e.flags & FlowState::OVERFLOW != 0 {
            return Handshake::Found(advance(t, e, key.proto, |st| tcp_ingress(st, seg)));
        }
        let now = t.now();
        if !e.alive(key.proto, now, &t.config()) {
            return Handshake::No;
        }
        if refusal {
            return Handshake::Found(Found::Ended);
        }
        if e.expect_ack != seg.ack {
            return Handshake::No;
        }
        if seg.flags & RST != 0 {
            return Handshake::Found(Found::Ended);
        }
        // The exact acknowledgment authenticates the segment.
        let mut st = established_state(now, seg, e.flags & FlowState::SEEDED);
        if t.source_count(&source_key(key)) >= SOURCE_QUOTA {
            st.flags |= FlowState::OVERFLOW;
            *e = st;
            return Handshake::Found(Found::Hit);
        }
        Handshake::Complete(st)
    });
    match h {
        None | Some(Handshake::No) => Tracked::No,
        Some(Handshake::Found(Found::Hit)) => {
            // An established connection kept here lives as long as it is used (and a policy
            // may lengthen its timeout later): its hint slot never expires.
            t.embryo_hint_set(hint_slot(key), u32::MAX);
            Tracked::Yes
        }
        Some(Handshake::Found(Found::Ended)) => {
            forget(t, FlowTable::Embryo, key);
            Tracked::Yes
        }
        Some(Handshake::Found(Found::Expired)) => {
            forget(t, FlowTable::Embryo, key);
            Tracked::No
        }
        Some(Handshake::Complete(st)) => {
            let src = source_key(key);
            t.flow_write(FlowTable::In, key, &st, true);
            t.source_count_set(&src, t.source_count(&src) + 1);
            forget(t, FlowTable::Embryo, key);
            Tracked::Handshake
        }
    }
}

/// The entry of a connection whose client just completed the handshake with `seg` (its
/// acknowledgment authenticated it): its sequence number is the client's, the next this host
/// expects; data or a FIN in the same segment move it on like any segment in order.
#[inline(always)]
pub(crate) fn established_state(now: u64, seg: &Segment, flags: u8) -> FlowState {
    let mut st = FlowState {
        last_seen: now,
        expect_ack: seg.seq,
        state: state::ESTABLISHED,
        flags: flags | FlowState::SEQ,
        _pad: [0; 2],
    };
    let _ = tcp_ingress(&mut st, seg);
    st
}

/// UDP or ICMP echo reply to something this host sent.
#[inline(always)]
pub(crate) fn reply_seen<T: Tables>(t: &T, key: &FlowKey) -> bool {
    if t.flow_hint(flow_hint_slot(key)) == 0 {
        return false;
    }
    track(t, FlowTable::Out, key, |st| {
        if st.state == state::REPLIED {
            Step::Keep
        } else {
            st.state = state::REPLIED;
            Step::Moved
        }
    })
}
