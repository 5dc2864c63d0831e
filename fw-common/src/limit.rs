//! Per-source and aggregate rate limits on allow rules, and automatic bans.
//!
//! Each limit is a GCRA (the "virtual scheduling" form of a token bucket): a bucket is one
//! timestamp, the theoretical arrival time `tat`. A packet conforms when `tat - now <= tolerance`
//! (`tolerance = (burst - 1) * interval`); a conforming packet moves `tat` to
//! `max(tat, now) + interval`. A bucket with `tat <= now` is exactly a fresh one, so losing it
//! loses nothing.
//!
//! **Flood-proof buckets.** Per-source buckets live in two LRU tables:
//! - `known`: sources that completed a TCP handshake with this host (a spoofed source cannot).
//!   Entries are created only by that trusted event ([`on_handshake`]);
//! - `new`: everyone else. A spoofed flood creates entries here and evicts only entries here.
//!
//! A source's new connections are charged to its `known` bucket when it has one, else to its
//! `new` bucket (whose state the handshake copies into `known`). So a flood of spoofed SYNs
//! never evicts the bucket of a client that ever connected, and never touches a flow table.
//!
//! **Bans** come only from strikes on `known` buckets: over-limit packets from a source that has
//! completed a handshake, counted until its bucket is full again.

use crate::{
    Decision, Reason, Tables,
    decide::family_byte,
    flood::Source,
    maps::{
        EVENT_BAN, EVENT_RL_KNOWN, PORT_HAS_SOURCES, PORT_SLOT_MASK, PortProto, SLOT_LIMITED,
        limited_slot, rule_id,
    },
    packet::Family,
};

/// A rule's limits (a [`crate::maps::MAP_LIMITS`] value). All zero: no limit.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct LimitParams {
    /// Per source: ns between new connections at the sustained rate (0: no per-source limit).
    pub interval_ns: u64,
    /// Per source: `(burst - 1) * interval_ns`.
    pub tolerance_ns: u64,
    /// All sources together (0: no aggregate limit).
    pub total_interval_ns: u64,
    pub total_tolerance_ns: u64,
    /// How long a ban lasts (0: this rule bans nobody).
    pub ban_ns: u64,
    /// Over-limit packets (strikes) before a ban.
    pub ban_after: u32,
    /// Per-source prefix lengths.
    pub per4: u8,
    pub per6: u8,
    pub _pad: [u8; 2],
}
const _: () = assert!(size_of::<LimitParams>() == 48);

/// A per-source bucket's key: the rule, the source prefix.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct BucketKey {
    pub addr: [u8; 16],
    /// The rule id (stable across live edits).
    pub rule: u16,
    pub family: u8,
    pub len: u8,
}
const _: () = assert!(size_of::<BucketKey>() == 20);

#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Bucket {
    /// GCRA theoretical arrival time, CLOCK_MONOTONIC_COARSE ns.
    pub tat: u64,
    /// Over-limit packets since the bucket was last full.
    pub strikes: u32,
    pub _pad: u32,
}
const _: () = assert!(size_of::<Bucket>() == 16);

/// A ban's key: a source prefix.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct BanKey {
    pub addr: [u8; 16],
    pub family: u8,
    pub len: u8,
    pub _pad: [u8; 2],
}
const _: () = assert!(size_of::<BanKey>() == 20);

impl BanKey {
    #[inline(always)]
    pub fn new(family: Family, src: &[u8; 16], len: u8) -> Self {
        BanKey {
            addr: mask_addr(family, src, len),
            family: family_byte(family),
            len,
            _pad: [0; 2],
        }
    }
}

/// `addr` with the bits past `len` cleared.
#[inline(always)]
pub fn mask_v4(addr: &[u8; 4], len: u8) -> [u8; 4] {
    let len = if len > 32 { 32 } else { len as u64 };
    let mask = (u64::MAX << (32 - len)) as u32;
    (u32::from_be_bytes(*addr) & mask).to_be_bytes()
}

#[inline(always)]
pub fn mask_v6(addr: &[u8; 16], len: u8) -> [u8; 16] {
    let len = if len > 128 { 128 } else { len as u32 };
    let hi = u64::from_be_bytes([
        addr[0], addr[1], addr[2], addr[3], addr[4], addr[5], addr[6], addr[7],
    ]);
    let lo = u64::from_be_bytes([
        addr[8], addr[9], addr[10], addr[11], addr[12], addr[13], addr[14], addr[15],
    ]);
    let (mh, ml) = if len == 0 {
        (0, 0)
    } else if len <= 64 {
        (u64::MAX << (64 - len), 0)
    } else {
        (u64::MAX, u64::MAX << (128 - len))
    };
    let h = (hi & mh).to_be_bytes();
    let l = (lo & ml).to_be_bytes();
    [
        h[0], h[1], h[2], h[3], h[4], h[5], h[6], h[7], l[0], l[1], l[2], l[3], l[4], l[5], l[6],
        l[7],
    ]
}

/// `src` (IPv4 in the first 4 bytes) masked to `len` for its family, as 16 bytes.
#[inline(always)]
pub fn mask_addr(family: Family, src: &[u8; 16], len: u8) -> [u8; 16] {
    match family {
        Family::V4 => {
            let m = mask_v4(&[src[0], src[1], src[2], src[3]], len);
            let mut a = [0u8; 16];
            a[0] = m[0];
            a[1] = m[1];
            a[2] = m[2];
            a[3] = m[3];
            a
        }
        Family::V6 => mask_v6(src, len),
    }
}

/// One GCRA step: does a packet at `now` conform? If so, `tat` moves on.
#[inline(always)]
pub fn gcra(tat: &mut u64, now: u64, interval: u64, tolerance: u64) -> bool {
    let base = if *tat > now { *tat } else { now };
    if base - now > tolerance {
        return false;
    }
    *tat = base + interval;
    true
}

#[inline(always)]
fn bucket_key(family: Family, src: &[u8; 16], slot: u32, p: &LimitParams) -> BucketKey {
    let len = match family {
        Family::V4 => p.per4,
        Family::V6 => p.per6,
    };
    BucketKey {
        addr: mask_addr(family, src, len),
        rule: rule_id(slot) as u16,
        family: family_byte(family),
        len,
    }
}

/// A rule matched a new connection (SYN, or a UDP datagram) from `ip`: the rule's limits, if
/// its slot says it has any. `None`: within the limits (or none). `slot` carries
/// [`SLOT_LIMITED`]; the caller counts the packet under the rule itself. Without `with_total`
/// the aggregate is left to [`check_total`] (a SYN the SYN cookie step may answer in XDP: only
/// what goes on to the kernel spends the rule's `total`).
#[inline(always)]
pub fn check<T: Tables>(t: &T, s: &Source, slot: u32, with_total: bool) -> Option<Decision> {
    if slot & SLOT_LIMITED == 0 {
        return None;
    }
    let slot = slot & PORT_SLOT_MASK;
    let p = t.limit(slot)?;
    let now = t.now();
    if p.interval_ns != 0 {
        let key = bucket_key(s.family(), &s.src, slot, &p);
        let (known, mut b) = match t.bucket(true, &key) {
            Some(b) => (true, b),
            None => (false, t.bucket(false, &key).unwrap_or_default()),
        };
        if b.tat <= now {
            b.strikes = 0;
        }
        if !gcra(&mut b.tat, now, p.interval_ns, p.tolerance_ns) {
            b.strikes = b.strikes.saturating_add(1);
            t.bucket_write(known, &key, &b);
            t.event(limited_slot(slot));
            if known && p.ban_ns != 0 && b.strikes >= p.ban_after {
                let ban = BanKey::new(s.family(), &s.src, key.len);
                t.ban_write(&ban, now + p.ban_ns);
                t.event(EVENT_BAN);
            }
            return Some(Decision::reason(Reason::RateLimited));
        }
        t.bucket_write(known, &key, &b);
    }
    if with_total {
        return total(t, slot, &p, now);
    }
    None
}

/// The aggregate `total` of rule slot `slot` (flag bits ignored; the caller checked
/// [`SLOT_LIMITED`]), for a new connection that goes on to the kernel: `None` within it.
#[inline(always)]
pub fn check_total<T: Tables>(t: &T, slot: u32) -> Option<Decision> {
    let slot = slot & PORT_SLOT_MASK;
    let p = t.limit(slot)?;
    total(t, slot, &p, t.now())
}

#[inline(always)]
fn total<T: Tables>(t: &T, slot: u32, p: &LimitParams, now: u64) -> Option<Decision> {
    if p.total_interval_ns == 0 {
        return None;
    }
    let rid = rule_id(slot);
    let mut tat = t.total(rid);
    if !gcra(&mut tat, now, p.total_interval_ns, p.total_tolerance_ns) {
        t.event(limited_slot(slot));
        return Some(Decision::reason(Reason::RateLimitTotal));
    }
    t.total_write(rid, tat);
    None
}

/// The rule slot (with its flag bits) that admits a new connection from `src` to `port`: 0 if
/// the port is closed, [`PORT_HAS_SOURCES`] alone if it admits other sources only. The port
/// entry first, then the source trie for ports that admit some sources only.
#[inline(always)]
pub fn rule_for<T: Tables>(
    t: &T,
    family: Family,
    src: &[u8; 16],
    proto: PortProto,
    port: u16,
) -> u32 {
    let v = t.port(proto, port);
    if v & PORT_SLOT_MASK != 0 {
        return v & !PORT_HAS_SOURCES;
    }
    if v & PORT_HAS_SOURCES == 0 {
        return 0;
    }
    let s = match family {
        Family::V4 => t.source_v4(proto, port, &[src[0], src[1], src[2], src[3]]),
        Family::V6 => t.source_v6(proto, port, src),
    };
    if s == 0 { PORT_HAS_SOURCES } else { s }
}

/// A client completed a TCP handshake (the trusted event): give its source a bucket in the
/// `known` table, carrying over what its `new` bucket was charged.
#[inline(always)]
pub fn on_handshake<T: Tables>(t: &T, s: &Source, port: u16) {
    let family = s.family();
    let slot = rule_for(t, family, &s.src, PortProto::Tcp, port);
    if slot & SLOT_LIMITED == 0 {
        return;
    }
    let slot = slot & PORT_SLOT_MASK;
    let Some(p) = t.limit(slot) else {
        return;
    };
    if p.interval_ns == 0 {
        return;
    }
    let bk = bucket_key(family, &s.src, slot, &p);
    if t.bucket(true, &bk).is_some() {
        return;
    }
    let b = match t.bucket(false, &bk) {
        Some(b) => b,
        None => Bucket {
            tat: t.now() + p.interval_ns,
            strikes: 0,
            _pad: 0,
        },
    };
    t.bucket_write(true, &bk, &b);
    t.event(EVENT_RL_KNOWN);
}
