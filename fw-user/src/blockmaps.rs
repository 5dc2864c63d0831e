//! The pinned maps of block lists, bans and rate limits, and every write `fw` makes to them.
//!
//! A block set is replaced without a gap: the new entries go in first (in the representation
//! the new set uses), then the lengths the program looks up become the union of old and new,
//! then the old entries go, then the lengths become the new ones. A source on both the old and
//! the new list is blocked throughout; one on neither never is. Hash tables are written with
//! batched syscalls (a million entries in one or two seconds).

use std::{collections::HashMap as StdHashMap, hash::Hash, os::fd::AsFd as _};

use aya::maps::{Array, HashMap, LpmTrie, Map, MapData, lpm_trie::Key};
use fw_common::{
    block::{BlockKeyV4, BlockKeyV6, BlockMeta, BlockValue},
    limit::{BanKey, Bucket, BucketKey, LimitParams},
    maps::{
        MAP_BANS, MAP_BLOCK_LPM_V4, MAP_BLOCK_LPM_V6, MAP_BLOCK_META, MAP_BLOCK_V4, MAP_BLOCK_V6,
        MAP_LIMITS, MAP_RL_KNOWN, MAP_RL_NEW, RULE_SLOT_BASE,
    },
};
use fw_policy::blocks::BlockSet;

use crate::{
    Error,
    maps::{ctx, open},
    paths::IfacePaths,
};

pub struct FloodMaps {
    meta: Map,
    v4: Map,
    v4_raw: MapData,
    v6: Map,
    v6_raw: MapData,
    lpm4: Map,
    lpm6: Map,
    bans: Map,
    limits: Map,
    known: Map,
    new: Map,
    total: Map,
}

fn raw(paths: &IfacePaths, name: &str) -> Result<MapData, Error> {
    let p = paths.map(name);
    MapData::from_pin(&p).map_err(|e| Error::bpf(p.display().to_string(), e))
}

const BPF_MAP_DELETE_BATCH: libc::c_long = 27;
const BPF_MAP_UPDATE_BATCH: libc::c_long = 26;
const BATCH: usize = 131_072;

#[repr(C)]
#[derive(Default)]
struct BatchAttr {
    in_batch: u64,
    out_batch: u64,
    keys: u64,
    values: u64,
    count: u32,
    map_fd: u32,
    elem_flags: u64,
    flags: u64,
}

/// BPF_MAP_UPDATE_BATCH / BPF_MAP_DELETE_BATCH over `keys` (and `values`), in chunks.
fn batch<K, V>(data: &MapData, cmd: libc::c_long, keys: &[K], values: &[V]) -> Result<(), Error> {
    use std::os::fd::AsRawFd as _;
    for (i, chunk) in keys.chunks(BATCH).enumerate() {
        let vals = if values.is_empty() {
            0
        } else {
            values[i * BATCH..].as_ptr() as u64
        };
        let mut attr = BatchAttr {
            keys: chunk.as_ptr() as u64,
            values: vals,
            count: chunk.len() as u32,
            map_fd: data.fd().as_fd().as_raw_fd() as u32,
            ..Default::default()
        };
        // SAFETY: keys/values point at `count` elements of the map's key and value types.
        let rc = unsafe {
            libc::syscall(
                libc::SYS_bpf,
                cmd,
                &mut attr as *mut BatchAttr,
                size_of::<BatchAttr>() as u32,
            )
        };
        if rc < 0 {
            let e = std::io::Error::last_os_error();
            // A key already gone is not an error for a delete.
            if !(cmd == BPF_MAP_DELETE_BATCH && e.raw_os_error() == Some(libc::ENOENT)) {
                return Err(Error::io("block list batch update", e));
            }
        }
    }
    Ok(())
}

/// What changes between two sets of one family, in one representation.
struct Diff<K> {
    put: Vec<(K, BlockValue)>,
    del: Vec<K>,
}

fn diff<K: Copy + Eq + Hash>(
    old: &StdHashMap<K, BlockValue>,
    new: &StdHashMap<K, BlockValue>,
    same_rep: bool,
) -> Diff<K> {
    let put = new
        .iter()
        .filter(|(k, v)| !same_rep || old.get(*k) != Some(*v))
        .map(|(k, v)| (*k, *v))
        .collect();
    let del = old
        .keys()
        .filter(|k| !same_rep || !new.contains_key(*k))
        .copied()
        .collect();
    Diff { put, del }
}

/// The lengths of old and new together, longest first (for the moment both are in the map).
fn union(a: &[u8], b: &[u8], out: &mut [u8]) -> Option<u8> {
    let mut all: Vec<u8> = a.iter().chain(b).copied().collect();
    all.sort_unstable_by(|x, y| y.cmp(x));
    all.dedup();
    if all.len() > out.len() {
        return None;
    }
    out[..all.len()].copy_from_slice(&all);
    Some(all.len() as u8)
}

impl FloodMaps {
    pub fn open(paths: &IfacePaths) -> Result<Self, Error> {
        Ok(FloodMaps {
            meta: open(&paths.map(MAP_BLOCK_META))?,
            v4: open(&paths.map(MAP_BLOCK_V4))?,
            v4_raw: raw(paths, MAP_BLOCK_V4)?,
            v6: open(&paths.map(MAP_BLOCK_V6))?,
            v6_raw: raw(paths, MAP_BLOCK_V6)?,
            lpm4: open(&paths.map(MAP_BLOCK_LPM_V4))?,
            lpm6: open(&paths.map(MAP_BLOCK_LPM_V6))?,
            bans: open(&paths.map(MAP_BANS))?,
            limits: open(&paths.map(MAP_LIMITS))?,
            known: open(&paths.map(MAP_RL_KNOWN))?,
            new: open(&paths.map(MAP_RL_NEW))?,
            total: open(&paths.map(fw_common::maps::MAP_RL_TOTAL))?,
        })
    }

    pub fn set_limit(&mut self, slot: u32, p: LimitParams) -> Result<(), Error> {
        let mut a: Array<_, LimitParams> =
            Array::try_from(&mut self.limits).map_err(ctx("FW_LIMITS"))?;
        a.set(slot - RULE_SLOT_BASE, p, 0).map_err(ctx("FW_LIMITS"))
    }

    pub fn limit(&self, slot: u32) -> Result<LimitParams, Error> {
        let a: Array<_, LimitParams> = Array::try_from(&self.limits).map_err(ctx("FW_LIMITS"))?;
        a.get(&(slot - RULE_SLOT_BASE), 0).map_err(ctx("FW_LIMITS"))
    }

    pub fn meta(&self) -> Result<BlockMeta, Error> {
        let a: Array<_, BlockMeta> = Array::try_from(&self.meta).map_err(ctx("FW_BLOCK_META"))?;
        a.get(&0, 0).map_err(ctx("FW_BLOCK_META"))
    }

    fn set_meta(&mut self, m: &BlockMeta) -> Result<(), Error> {
        let mut a: Array<_, BlockMeta> =
            Array::try_from(&mut self.meta).map_err(ctx("FW_BLOCK_META"))?;
        a.set(0, *m, 0).map_err(ctx("FW_BLOCK_META"))
    }

    /// What the block maps hold now (for a resync after an interrupted change).
    pub fn read_blocks(&self) -> Result<BlockSet, Error> {
        let mut s = BlockSet::default();
        let h4: HashMap<_, BlockKeyV4, BlockValue> =
            HashMap::try_from(&self.v4).map_err(ctx("FW_BLOCK_V4"))?;
        for kv in h4.iter() {
            let (k, v) = kv.map_err(ctx("FW_BLOCK_V4"))?;
            s.v4.insert(k, v);
        }
        let h6: HashMap<_, BlockKeyV6, BlockValue> =
            HashMap::try_from(&self.v6).map_err(ctx("FW_BLOCK_V6"))?;
        for kv in h6.iter() {
            let (k, v) = kv.map_err(ctx("FW_BLOCK_V6"))?;
            s.v6.insert(k, v);
        }
        let t4: LpmTrie<_, [u8; 4], BlockValue> =
            LpmTrie::try_from(&self.lpm4).map_err(ctx("FW_BLKLPM_V4"))?;
        for kv in t4.iter() {
            let (k, v) = kv.map_err(ctx("FW_BLKLPM_V4"))?;
            s.v4.insert(BlockKeyV4::new(&k.data(), k.prefix_len() as u8), v);
        }
        let t6: LpmTrie<_, [u8; 16], BlockValue> =
            LpmTrie::try_from(&self.lpm6).map_err(ctx("FW_BLKLPM_V6"))?;
        for kv in t6.iter() {
            let (k, v) = kv.map_err(ctx("FW_BLKLPM_V6"))?;
            s.v6.insert(BlockKeyV6::new(&k.data(), k.prefix_len() as u8), v);
        }
        s.meta = self.meta()?;
        Ok(s)
    }

    /// Bring the block maps from `old` (what they hold) to `new`, without a gap (see the module
    /// comment).
    pub fn sync_blocks(&mut self, old: &BlockSet, new: &BlockSet) -> Result<(), Error> {
        let (om, nm) = (old.meta, new.meta);
        let same4 = om.lpm4 == nm.lpm4;
        let same6 = om.lpm6 == nm.lpm6;
        let d4 = diff(&old.v4, &new.v4, same4);
        let d6 = diff(&old.v6, &new.v6, same6);
        self.put_v4(&d4.put, nm.lpm4 != 0)?;
        self.put_v6(&d6.put, nm.lpm6 != 0)?;
        let mut mid = nm;
        if same4 && nm.lpm4 == 0 {
            match union(
                &om.lens4[..om.n4 as usize],
                &nm.lens4[..nm.n4 as usize],
                &mut mid.lens4,
            ) {
                Some(n) => mid.n4 = n,
                None => mid = nm,
            }
        }
        if same6 && nm.lpm6 == 0 {
            let mut lens = mid.lens6;
            if let Some(n) = union(
                &om.lens6[..om.n6 as usize],
                &nm.lens6[..nm.n6 as usize],
                &mut lens,
            ) {
                mid.lens6 = lens;
                mid.n6 = n;
            }
        }
        self.set_meta(&mid)?;
        self.del_v4(&d4.del, om.lpm4 != 0)?;
        self.del_v6(&d6.del, om.lpm6 != 0)?;
        self.set_meta(&nm)
    }

    fn put_v4(&mut self, put: &[(BlockKeyV4, BlockValue)], lpm: bool) -> Result<(), Error> {
        if put.is_empty() {
            return Ok(());
        }
        if lpm {
            let mut t: LpmTrie<_, [u8; 4], BlockValue> =
                LpmTrie::try_from(&mut self.lpm4).map_err(ctx("FW_BLKLPM_V4"))?;
            for (k, v) in put {
                t.insert(&Key::new(u32::from(k.len), k.addr), *v, 0)
                    .map_err(ctx("FW_BLKLPM_V4 insert"))?;
            }
            return Ok(());
        }
        let (keys, values): (Vec<_>, Vec<_>) = put.iter().copied().unzip();
        batch(&self.v4_raw, BPF_MAP_UPDATE_BATCH, &keys, &values)
    }

    fn put_v6(&mut self, put: &[(BlockKeyV6, BlockValue)], lpm: bool) -> Result<(), Error> {
        if put.is_empty() {
            return Ok(());
        }
        if lpm {
            let mut t: LpmTrie<_, [u8; 16], BlockValue> =
                LpmTrie::try_from(&mut self.lpm6).map_err(ctx("FW_BLKLPM_V6"))?;
            for (k, v) in put {
                t.insert(&Key::new(u32::from(k.len), k.addr), *v, 0)
                    .map_err(ctx("FW_BLKLPM_V6 insert"))?;
            }
            return Ok(());
        }
        let (keys, values): (Vec<_>, Vec<_>) = put.iter().copied().unzip();
        batch(&self.v6_raw, BPF_MAP_UPDATE_BATCH, &keys, &values)
    }

    fn del_v4(&mut self, del: &[BlockKeyV4], lpm: bool) -> Result<(), Error> {
        if del.is_empty() {
            return Ok(());
        }
        if lpm {
            let mut t: LpmTrie<_, [u8; 4], BlockValue> =
                LpmTrie::try_from(&mut self.lpm4).map_err(ctx("FW_BLKLPM_V4"))?;
            for k in del {
                crate::maps::remove_tolerant(
                    t.remove(&Key::new(u32::from(k.len), k.addr)),
                    "FW_BLKLPM_V4 remove",
                )?;
            }
            return Ok(());
        }
        batch::<_, u8>(&self.v4_raw, BPF_MAP_DELETE_BATCH, del, &[])
    }

    fn del_v6(&mut self, del: &[BlockKeyV6], lpm: bool) -> Result<(), Error> {
        if del.is_empty() {
            return Ok(());
        }
        if lpm {
            let mut t: LpmTrie<_, [u8; 16], BlockValue> =
                LpmTrie::try_from(&mut self.lpm6).map_err(ctx("FW_BLKLPM_V6"))?;
            for k in del {
                crate::maps::remove_tolerant(
                    t.remove(&Key::new(u32::from(k.len), k.addr)),
                    "FW_BLKLPM_V6 remove",
                )?;
            }
            return Ok(());
        }
        batch::<_, u8>(&self.v6_raw, BPF_MAP_DELETE_BATCH, del, &[])
    }

    /// Every ban the kernel holds (expired ones included: the program removes those lazily).
    pub fn bans(&self) -> Result<Vec<(BanKey, u64)>, Error> {
        let m: HashMap<_, BanKey, u64> = HashMap::try_from(&self.bans).map_err(ctx("FW_BANS"))?;
        let mut out = Vec::new();
        for kv in m.iter() {
            match kv {
                Ok(kv) => out.push(kv),
                Err(aya::maps::MapError::KeyNotFound) => {}
                Err(e) => return Err(Error::bpf("FW_BANS", e)),
            }
        }
        Ok(out)
    }

    pub fn remove_ban(&mut self, key: &BanKey) -> Result<(), Error> {
        let mut m: HashMap<_, BanKey, u64> =
            HashMap::try_from(&mut self.bans).map_err(ctx("FW_BANS"))?;
        crate::maps::remove_tolerant(m.remove(key), "FW_BANS remove")
    }

    /// Entries of the per-source bucket tables (known, new).
    pub fn bucket_counts(&self) -> Result<(usize, usize), Error> {
        let count = |m: &Map| -> Result<usize, Error> {
            let h: HashMap<_, BucketKey, Bucket> =
                HashMap::try_from(m).map_err(ctx("rate-limit buckets"))?;
            Ok(h.keys().filter(|k| k.is_ok()).count())
        };
        Ok((count(&self.known)?, count(&self.new)?))
    }

    pub fn bucket(&self, known: bool, key: &BucketKey) -> Option<Bucket> {
        let m = if known { &self.known } else { &self.new };
        let h: HashMap<_, BucketKey, Bucket> = HashMap::try_from(m).ok()?;
        h.get(key, 0).ok()
    }

    pub fn total(&self, rule: u32) -> Result<u64, Error> {
        let a: Array<_, u64> = Array::try_from(&self.total).map_err(ctx("FW_RL_TOTAL"))?;
        a.get(&rule, 0).map_err(ctx("FW_RL_TOTAL"))
    }

    /// Write a per-source bucket (tests that make time pass).
    pub fn set_bucket(&mut self, known: bool, key: &BucketKey, b: &Bucket) -> Result<(), Error> {
        let m = if known {
            &mut self.known
        } else {
            &mut self.new
        };
        let mut h: HashMap<_, BucketKey, Bucket> =
            HashMap::try_from(m).map_err(ctx("rate-limit buckets"))?;
        h.insert(key, b, 0).map_err(ctx("rate-limit bucket insert"))
    }

    /// Every per-source bucket of one table.
    pub fn buckets(&self, known: bool) -> Result<Vec<(BucketKey, Bucket)>, Error> {
        let m = if known { &self.known } else { &self.new };
        let h: HashMap<_, BucketKey, Bucket> =
            HashMap::try_from(m).map_err(ctx("rate-limit buckets"))?;
        Ok(h.iter().filter_map(|kv| kv.ok()).collect())
    }

    /// Write a ban (tests that make time pass).
    pub fn set_ban(&mut self, key: &BanKey, until: u64) -> Result<(), Error> {
        let mut h: HashMap<_, BanKey, u64> =
            HashMap::try_from(&mut self.bans).map_err(ctx("FW_BANS"))?;
        h.insert(key, until, 0).map_err(ctx("FW_BANS insert"))
    }

    pub fn ban(&self, key: &BanKey) -> Option<u64> {
        let h: HashMap<_, BanKey, u64> = HashMap::try_from(&self.bans).ok()?;
        h.get(key, 0).ok()
    }

    pub fn block_v4(&self, key: &BlockKeyV4) -> Option<BlockValue> {
        let h: HashMap<_, BlockKeyV4, BlockValue> = HashMap::try_from(&self.v4).ok()?;
        h.get(key, 0).ok()
    }

    pub fn block_v6(&self, key: &BlockKeyV6) -> Option<BlockValue> {
        let h: HashMap<_, BlockKeyV6, BlockValue> = HashMap::try_from(&self.v6).ok()?;
        h.get(key, 0).ok()
    }

    pub fn block_lpm_v4(&self, addr: &[u8; 4]) -> Option<BlockValue> {
        let t: LpmTrie<_, [u8; 4], BlockValue> = LpmTrie::try_from(&self.lpm4).ok()?;
        t.get(&Key::new(32, *addr), 0).ok()
    }

    pub fn block_lpm_v6(&self, addr: &[u8; 16]) -> Option<BlockValue> {
        let t: LpmTrie<_, [u8; 16], BlockValue> = LpmTrie::try_from(&self.lpm6).ok()?;
        t.get(&Key::new(128, *addr), 0).ok()
    }
}
