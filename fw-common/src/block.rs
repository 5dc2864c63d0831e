//! Block lists and automatic bans: checked first, for every IP packet, on every port (only the
//! ICMPv6 messages the link needs still pass, like ARP).
//!
//! Two representations of a block list, chosen by userspace per family from what the list
//! holds (see the README for the measurements behind the choice):
//! - **hash tables per prefix length in use**: one hash map keyed by (prefix length, masked
//!   address); the packet costs one lookup per distinct prefix length the list uses, whatever
//!   the number of entries (flat from 1 to 1,000,000 entries);
//! - **an LPM trie**, when the list uses more prefix lengths than that pays for.
//!
//! An empty list costs one array read (the meta entry) and no lookup.

use crate::{
    Decision, Reason, Tables,
    flood::Source,
    limit::{BanKey, mask_v4, mask_v6},
    maps::{BLOCK_LISTS, Config, EVENT_BLOCK_LIST},
    packet::Family,
};

/// Prefix lengths the hash representation can hold per family: the bound of the lookup loop
/// (the verifier walks every iteration). Userspace switches to the LPM trie before this.
pub const MAX_HASH_LENS: usize = 8;

/// Which representation each family uses, and the prefix lengths present in the hash tables,
/// longest first (the [`crate::maps::MAP_BLOCK_META`] value).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BlockMeta {
    /// 1: look the IPv4 source up in the LPM trie.
    pub lpm4: u8,
    pub lpm6: u8,
    /// Entries of `lens4` / `lens6` in use.
    pub n4: u8,
    pub n6: u8,
    pub lens4: [u8; MAX_HASH_LENS],
    pub lens6: [u8; MAX_HASH_LENS],
}
const _: () = assert!(size_of::<BlockMeta>() == 20);

impl Default for BlockMeta {
    fn default() -> Self {
        BlockMeta {
            lpm4: 0,
            lpm6: 0,
            n4: 0,
            n6: 0,
            lens4: [0; MAX_HASH_LENS],
            lens6: [0; MAX_HASH_LENS],
        }
    }
}

impl BlockMeta {
    pub fn is_empty(&self) -> bool {
        self.lpm4 == 0 && self.lpm6 == 0 && self.n4 == 0 && self.n6 == 0
    }
}

#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct BlockKeyV4 {
    pub len: u8,
    pub _pad: [u8; 3],
    /// The address with the bits past `len` cleared.
    pub addr: [u8; 4],
}
const _: () = assert!(size_of::<BlockKeyV4>() == 8);

#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct BlockKeyV6 {
    pub len: u8,
    pub _pad: [u8; 3],
    pub addr: [u8; 16],
}
const _: () = assert!(size_of::<BlockKeyV6>() == 20);

impl BlockKeyV4 {
    #[inline(always)]
    pub fn new(addr: &[u8; 4], len: u8) -> Self {
        BlockKeyV4 {
            len,
            _pad: [0; 3],
            addr: mask_v4(addr, len),
        }
    }
}

impl BlockKeyV6 {
    #[inline(always)]
    pub fn new(addr: &[u8; 16], len: u8) -> Self {
        BlockKeyV6 {
            len,
            _pad: [0; 3],
            addr: mask_v6(addr, len),
        }
    }
}

/// A blocked prefix.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct BlockValue {
    /// CLOCK_MONOTONIC_COARSE ns after which the entry no longer blocks (0: never expires).
    pub expires: u64,
    /// The lists the prefix is on (bit i: list id i); hits count under the lowest.
    pub lists: u32,
    pub _pad: u32,
}
const _: () = assert!(size_of::<BlockValue>() == 16);

#[inline(always)]
fn live<T: Tables>(t: &T, v: &BlockValue) -> bool {
    v.expires == 0 || t.now() <= v.expires
}

#[inline(always)]
fn hit<T: Tables>(t: &T, v: &BlockValue) -> Decision {
    let list = v.lists.trailing_zeros();
    if list < BLOCK_LISTS {
        t.event(EVENT_BLOCK_LIST + list);
    }
    Decision::reason(Reason::Blocked)
}

/// The block list's verdict on the source (`None`: not blocked), then the ban table's.
#[inline(always)]
pub fn check<T: Tables>(t: &T, cfg: &Config, s: &Source) -> Option<Decision> {
    let a = &s.src;
    if let Some(m) = t.block_meta()
        && let Some(v) = match s.family() {
            Family::V4 => lookup_v4(t, m, &[a[0], a[1], a[2], a[3]]),
            Family::V6 => lookup_v6(t, m, a),
        }
        && live(t, &v)
    {
        return Some(hit(t, &v));
    }
    banned(t, cfg, s)
}

#[inline(always)]
fn lookup_v4<T: Tables>(t: &T, m: &BlockMeta, addr: &[u8; 4]) -> Option<BlockValue> {
    if m.lpm4 != 0 {
        return t.block_lpm_v4(addr);
    }
    let n = m.n4 as usize;
    let mut i = 0;
    while i < MAX_HASH_LENS {
        if i >= n {
            break;
        }
        let len = m.lens4[i];
        if len <= 32
            && let Some(v) = t.block_v4(&BlockKeyV4::new(addr, len))
        {
            return Some(v);
        }
        i += 1;
    }
    None
}

#[inline(always)]
fn lookup_v6<T: Tables>(t: &T, m: &BlockMeta, addr: &[u8; 16]) -> Option<BlockValue> {
    if m.lpm6 != 0 {
        return t.block_lpm_v6(addr);
    }
    let n = m.n6 as usize;
    let mut i = 0;
    while i < MAX_HASH_LENS {
        if i >= n {
            break;
        }
        let len = m.lens6[i];
        if len <= 128
            && let Some(v) = t.block_v6(&BlockKeyV6::new(addr, len))
        {
            return Some(v);
        }
        i += 1;
    }
    None
}

/// An automatic ban of this source, if the policy bans sources of its family at all (the ban
/// prefix length is in the config: no lookup otherwise). An expired ban is removed.
#[inline(always)]
fn banned<T: Tables>(t: &T, cfg: &Config, s: &Source) -> Option<Decision> {
    let len = match s.family() {
        Family::V4 => cfg.ban_len4,
        Family::V6 => cfg.ban_len6,
    };
    if len == 0 {
        return None;
    }
    let key = BanKey::new(s.family(), &s.src, len);
    let until = t.ban(&key)?;
    if t.now() <= until {
        return Some(Decision::reason(Reason::Banned));
    }
    t.ban_remove(&key);
    None
}
