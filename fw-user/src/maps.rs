//! The pinned maps of one filter: layout checks before reuse, and every write `fw` makes —
//! whole generations, live single-entry edits, the generation flip, counters, flow entries.

use std::{os::fd::AsFd as _, path::Path};

use aya::maps::{
    Array, HashMap, LpmTrie, Map, MapData, MapInfo, MapType, PerCpuArray, PerCpuValues,
    lpm_trie::Key,
};
use fw_common::{
    Config, Counter, FlowKey, FlowState, FlowTable,
    flow::{FLOW_HINT_STICKY, flow_hint_slot},
    maps::{
        BANS_MAX, BLOCK_V4_MAX, BLOCK_V6_MAX, COOKIE_PROGS, COUNTER_SLOTS, EMBRYO_MAX,
        FLOW_HINT_SLOTS, FLOWS_IN_MAX, FLOWS_OUT_MAX, GENERATIONS, HINT_SLOTS, LISTENERS_MAX,
        MAP_ACTIVE, MAP_BANS, MAP_BLOCK_LPM_V4, MAP_BLOCK_LPM_V6, MAP_BLOCK_META, MAP_BLOCK_V4,
        MAP_BLOCK_V6, MAP_CONFIG, MAP_COOKIE_CFG, MAP_COOKIE_HANDOFF, MAP_COOKIE_PROG,
        MAP_COOKIE_PROG_EXT, MAP_COOKIE_PROG_LINEAR, MAP_COOKIE_RATE, MAP_COOKIE_STATS,
        MAP_COUNTERS, MAP_EMBRYO, MAP_EMBRYO_HINT, MAP_FLOW_HINT, MAP_FLOWS_IN, MAP_FLOWS_OUT,
        MAP_HANDOFF, MAP_LIMITS, MAP_LISTENERS, MAP_PORTS, MAP_PROGS, MAP_RL_KNOWN, MAP_RL_NEW,
        MAP_RL_TOTAL, MAP_SOURCES, MAP_SRC_V4, MAP_SRC_V6, MAX_RULES, PIN_PROGS_LINEAR,
        PORT_ENTRIES, RL_KNOWN_MAX, RL_NEW_MAX, SOURCES_MAX, SRC_V4_MAX, SRC_V6_MAX, SrcKeyV4,
        SrcKeyV6, port_index,
    },
    syncookie::{CookieCfg, CookieRate, Listener, ListenerKey, STATS},
};

use crate::{Error, paths::IfacePaths};
use fw_policy::Compiled;

/// (name, type, key size, value size, max entries): what this build's program expects.
pub const LAYOUT: [(&str, MapType, u32, u32, u32); 33] = [
    (MAP_ACTIVE, MapType::Array, 4, 4, 1),
    (
        MAP_CONFIG,
        MapType::Array,
        4,
        size_of::<Config>() as u32,
        GENERATIONS,
    ),
    (MAP_PORTS, MapType::Array, 4, 4, PORT_ENTRIES),
    (MAP_SRC_V4, MapType::LpmTrie, 12, 4, SRC_V4_MAX),
    (MAP_SRC_V6, MapType::LpmTrie, 24, 4, SRC_V6_MAX),
    (MAP_COUNTERS, MapType::PerCpuArray, 4, 16, COUNTER_SLOTS),
    (MAP_FLOWS_OUT, MapType::LruHash, 40, 16, FLOWS_OUT_MAX),
    (MAP_FLOWS_IN, MapType::LruHash, 40, 16, FLOWS_IN_MAX),
    (MAP_EMBRYO, MapType::LruHash, 40, 16, EMBRYO_MAX),
    (MAP_SOURCES, MapType::LruHash, 16, 4, SOURCES_MAX),
    (MAP_EMBRYO_HINT, MapType::Array, 4, 4, HINT_SLOTS),
    (MAP_FLOW_HINT, MapType::Array, 4, 8, FLOW_HINT_SLOTS),
    (MAP_COOKIE_PROG, MapType::ProgramArray, 4, 4, COOKIE_PROGS),
    (
        MAP_COOKIE_PROG_LINEAR,
        MapType::ProgramArray,
        4,
        4,
        COOKIE_PROGS,
    ),
    (
        MAP_COOKIE_PROG_EXT,
        MapType::ProgramArray,
        4,
        4,
        COOKIE_PROGS,
    ),
    (
        MAP_LISTENERS,
        MapType::LruHash,
        size_of::<ListenerKey>() as u32,
        size_of::<Listener>() as u32,
        LISTENERS_MAX,
    ),
    (
        MAP_COOKIE_CFG,
        MapType::Array,
        4,
        size_of::<CookieCfg>() as u32,
        1,
    ),
    (
        MAP_COOKIE_RATE,
        MapType::PerCpuArray,
        4,
        size_of::<CookieRate>() as u32,
        1,
    ),
    (MAP_COOKIE_STATS, MapType::PerCpuArray, 4, 8, STATS),
    (MAP_COOKIE_HANDOFF, MapType::PerCpuArray, 4, 4, 1),
    (MAP_BLOCK_META, MapType::Array, 4, 20, 1),
    (MAP_BLOCK_V4, MapType::Hash, 8, 16, BLOCK_V4_MAX),
    (MAP_BLOCK_V6, MapType::Hash, 20, 16, BLOCK_V6_MAX),
    (MAP_BLOCK_LPM_V4, MapType::LpmTrie, 8, 16, BLOCK_V4_MAX),
    (MAP_BLOCK_LPM_V6, MapType::LpmTrie, 20, 16, BLOCK_V6_MAX),
    (MAP_BANS, MapType::LruHash, 20, 8, BANS_MAX),
    (MAP_LIMITS, MapType::Array, 4, 48, GENERATIONS * MAX_RULES),
    (MAP_RL_KNOWN, MapType::LruHash, 20, 16, RL_KNOWN_MAX),
    (MAP_RL_NEW, MapType::LruHash, 20, 16, RL_NEW_MAX),
    (MAP_RL_TOTAL, MapType::Array, 4, 8, MAX_RULES),
    (MAP_PROGS, MapType::ProgramArray, 4, 4, 1),
    (PIN_PROGS_LINEAR, MapType::ProgramArray, 4, 4, 1),
    (MAP_HANDOFF, MapType::PerCpuArray, 4, 28, 1),
];

/// Refuse a pinned map whose type or sizes differ from [`LAYOUT`] (aya reuses pins unchecked).
pub fn check_layout(paths: &IfacePaths) -> Result<(), Error> {
    check_entries(paths, &LAYOUT)
}

/// Refuse a pinned map of `layout` ((name, type, key size, value size, max entries)) whose
/// type or sizes differ.
pub(crate) fn check_entries(
    paths: &IfacePaths,
    layout: &[(&str, MapType, u32, u32, u32)],
) -> Result<(), Error> {
    for &(name, ty, key, value, max) in layout {
        let path = paths.map(name);
        if !path.exists() {
            continue;
        }
        let info =
            MapInfo::from_pin(&path).map_err(|e| Error::bpf(path.display().to_string(), e))?;
        let got = (
            info.map_type().ok(),
            info.key_size(),
            info.value_size(),
            info.max_entries(),
        );
        // Flow tables are sized by the policy (max_flows); their size is not part of the layout.
        let max = if ty == MapType::LruHash { got.3 } else { max };
        if got != (Some(ty), key, value, max) {
            return Err(Error::MapLayout {
                iface: paths.iface.clone(),
                path,
                detail: format!(
                    "found {:?} key {} value {} entries {}, expected {ty:?} key {key} value {value} entries {max}",
                    got.0, got.1, got.2, got.3
                ),
            });
        }
    }
    Ok(())
}

/// The keys of an LPM trie that belong to generation `g` (first key byte). An error while
/// listing is an error: a half-listed generation would leave entries behind.
fn keys_of_generation<K>(
    keys: impl Iterator<Item = Result<Key<K>, aya::maps::MapError>>,
    g: u32,
    what: &'static str,
) -> Result<Vec<Key<K>>, Error>
where
    K: aya::Pod + Copy + AsRef<[u8]>,
{
    let mut out = Vec::new();
    for k in keys {
        let k = k.map_err(ctx(what))?;
        if u32::from(k.data().as_ref()[0]) == g {
            out.push(k);
        }
    }
    Ok(out)
}

pub(crate) fn remove_tolerant(
    r: Result<(), aya::maps::MapError>,
    what: &'static str,
) -> Result<(), Error> {
    match r {
        Ok(()) | Err(aya::maps::MapError::KeyNotFound) => Ok(()),
        Err(aya::maps::MapError::SyscallError(e))
            if e.io_error.raw_os_error() == Some(libc::ENOENT) =>
        {
            Ok(())
        }
        Err(e) => Err(Error::bpf(what, e)),
    }
}

pub struct PinnedMaps {
    listeners: Map,
    active: Map,
    config: Map,
    ports: Map,
    ports_raw: MapData,
    src_v4: Map,
    src_v6: Map,
    counters: Map,
    flows_out: Map,
    flows_in: Map,
    embryo: Map,
    flow_hint: Map,
    /// Block lists, bans and rate limits.
    pub flood: crate::blockmaps::FloodMaps,
}

pub(crate) fn open(path: &Path) -> Result<Map, Error> {
    let md = MapData::from_pin(path).map_err(|e| Error::bpf(path.display().to_string(), e))?;
    Map::from_map_data(md).map_err(|e| Error::bpf(path.display().to_string(), e))
}

pub(crate) fn ctx<E: std::error::Error + Send + Sync + 'static>(
    what: &'static str,
) -> impl FnOnce(E) -> Error {
    move |e| Error::bpf(what, e)
}

impl PinnedMaps {
    pub fn open(paths: &IfacePaths) -> Result<Self, Error> {
        check_layout(paths)?;
        let ports_path = paths.map(MAP_PORTS);
        Ok(PinnedMaps {
            listeners: open(&paths.map(MAP_LISTENERS))?,
            active: open(&paths.map(MAP_ACTIVE))?,
            config: open(&paths.map(MAP_CONFIG))?,
            ports: open(&ports_path)?,
            ports_raw: MapData::from_pin(&ports_path)
                .map_err(|e| Error::bpf(ports_path.display().to_string(), e))?,
            src_v4: open(&paths.map(MAP_SRC_V4))?,
            src_v6: open(&paths.map(MAP_SRC_V6))?,
            counters: open(&paths.map(MAP_COUNTERS))?,
            flows_out: open(&paths.map(MAP_FLOWS_OUT))?,
            flows_in: open(&paths.map(MAP_FLOWS_IN))?,
            embryo: open(&paths.map(MAP_EMBRYO))?,
            flow_hint: open(&paths.map(MAP_FLOW_HINT))?,
            flood: crate::blockmaps::FloodMaps::open(paths)?,
        })
    }

    fn flow_map(&self, table: FlowTable) -> &Map {
        match table {
            FlowTable::Out => &self.flows_out,
            FlowTable::In => &self.flows_in,
            FlowTable::Embryo => &self.embryo,
        }
    }

    fn flow_map_mut(&mut self, table: FlowTable) -> &mut Map {
        match table {
            FlowTable::Out => &mut self.flows_out,
            FlowTable::In => &mut self.flows_in,
            FlowTable::Embryo => &mut self.embryo,
        }
    }

    /// What the kernel knows of a listener's SYN cookie mode (`None` also when unreadable:
    /// only `fw explain` asks).
    pub fn listener(&self, key: &ListenerKey) -> Option<Listener> {
        let m: HashMap<_, ListenerKey, Listener> = HashMap::try_from(&self.listeners).ok()?;
        m.get(key, 0).ok()
    }

    pub fn flow(&self, table: FlowTable, key: &FlowKey) -> Result<Option<FlowState>, Error> {
        let m: HashMap<_, FlowKey, FlowState> =
            HashMap::try_from(self.flow_map(table)).map_err(ctx("flow table"))?;
        match m.get(key, 0) {
            Ok(v) => Ok(Some(v)),
            Err(aya::maps::MapError::KeyNotFound) => Ok(None),
            Err(e) => Err(Error::bpf("flow table", e)),
        }
    }

    pub fn flow_insert(
        &mut self,
        table: FlowTable,
        key: &FlowKey,
        st: &FlowState,
    ) -> Result<(), Error> {
        if table != FlowTable::Embryo {
            // Before the entry exists (the programs skip lookups in an empty slot); userspace
            // cannot add atomically beside them, so the slot is marked for good instead.
            let mut h: Array<_, u64> =
                Array::try_from(&mut self.flow_hint).map_err(ctx("FW_FLOW_HINT"))?;
            let slot = flow_hint_slot(key);
            let v = h.get(&slot, 0).map_err(ctx("FW_FLOW_HINT"))?;
            h.set(slot, v | FLOW_HINT_STICKY, 0)
                .map_err(ctx("FW_FLOW_HINT"))?;
        }
        let mut m: HashMap<_, FlowKey, FlowState> =
            HashMap::try_from(self.flow_map_mut(table)).map_err(ctx("flow table"))?;
        m.insert(key, st, 0).map_err(ctx("flow table insert"))
    }

    /// A trusted-flow hint slot ([`fw_common::decide::Tables::flow_hint`]), for tests and
    /// `fw status`.
    pub fn flow_hint(&self, slot: u32) -> Result<u64, Error> {
        let h: Array<_, u64> = Array::try_from(&self.flow_hint).map_err(ctx("FW_FLOW_HINT"))?;
        h.get(&slot, 0).map_err(ctx("FW_FLOW_HINT"))
    }

    /// Every entry of a flow table (a snapshot: the kernel keeps changing it, so an entry that
    /// expires between listing its key and reading it is skipped).
    pub fn flows(&self, table: FlowTable) -> Result<Vec<(FlowKey, FlowState)>, Error> {
        let m: HashMap<_, FlowKey, FlowState> =
            HashMap::try_from(self.flow_map(table)).map_err(ctx("flow table"))?;
        let mut out = Vec::new();
        for r in m.iter() {
            match r {
                Ok(kv) => out.push(kv),
                Err(aya::maps::MapError::KeyNotFound) => {}
                Err(e) => return Err(Error::bpf("reading a flow table", e)),
            }
        }
        Ok(out)
    }

    pub fn active_generation(&self) -> Result<u32, Error> {
        let a: Array<_, u32> = Array::try_from(&self.active).map_err(ctx("FW_ACTIVE"))?;
        Ok(a.get(&0, 0).map_err(ctx("FW_ACTIVE"))? & 1)
    }

    /// The flip: from the next packet on, `generation` is in force.
    pub fn set_active(&mut self, generation: u32) -> Result<(), Error> {
        let mut a: Array<_, u32> = Array::try_from(&mut self.active).map_err(ctx("FW_ACTIVE"))?;
        a.set(0, generation & 1, 0).map_err(ctx("FW_ACTIVE"))
    }

    pub fn config(&self, generation: u32) -> Result<Config, Error> {
        let a: Array<_, Config> = Array::try_from(&self.config).map_err(ctx("FW_CONFIG"))?;
        a.get(&generation, 0).map_err(ctx("FW_CONFIG"))
    }

    pub fn set_config(&mut self, generation: u32, c: Config) -> Result<(), Error> {
        let mut a: Array<_, Config> =
            Array::try_from(&mut self.config).map_err(ctx("FW_CONFIG"))?;
        a.set(generation, c, 0).map_err(ctx("FW_CONFIG"))
    }

    pub fn port(&self, index: u32) -> Result<u32, Error> {
        let a: Array<_, u32> = Array::try_from(&self.ports).map_err(ctx("FW_PORTS"))?;
        a.get(&index, 0).map_err(ctx("FW_PORTS"))
    }

    fn set_port(&mut self, index: u32, v: u32) -> Result<(), Error> {
        let mut a: Array<_, u32> = Array::try_from(&mut self.ports).map_err(ctx("FW_PORTS"))?;
        a.set(index, v, 0).map_err(ctx("FW_PORTS"))
    }

    pub fn source_v4(&self, prefix_len: u32, data: SrcKeyV4) -> Result<Option<u32>, Error> {
        let t: LpmTrie<_, SrcKeyV4, u32> =
            LpmTrie::try_from(&self.src_v4).map_err(ctx("FW_SRC_V4"))?;
        match t.get(&Key::new(prefix_len, data), 0) {
            Ok(v) => Ok(Some(v)),
            Err(aya::maps::MapError::KeyNotFound) => Ok(None),
            Err(e) => Err(Error::bpf("FW_SRC_V4", e)),
        }
    }

    pub fn source_v6(&self, prefix_len: u32, data: SrcKeyV6) -> Result<Option<u32>, Error> {
        let t: LpmTrie<_, SrcKeyV6, u32> =
            LpmTrie::try_from(&self.src_v6).map_err(ctx("FW_SRC_V6"))?;
        match t.get(&Key::new(prefix_len, data), 0) {
            Ok(v) => Ok(Some(v)),
            Err(aya::maps::MapError::KeyNotFound) => Ok(None),
            Err(e) => Err(Error::bpf("FW_SRC_V6", e)),
        }
    }

    /// Write the whole of `c`'s generation, which must not be the active one: every port entry
    /// of that generation (one batched syscall), its LPM entries (old ones of that generation
    /// removed first), its config, and zeroed counters for its rules. If a write fails, the
    /// generation's source entries are removed again, so an abandoned attempt cannot fill the
    /// tries for the next command.
    pub fn write_generation(&mut self, c: &Compiled, rule_slots: &[u32]) -> Result<(), Error> {
        let r = self.write_generation_inner(c, rule_slots);
        if r.is_err()
            && let Err(e) = self.clear_sources(c.generation)
        {
            log::warn!(
                "clearing generation {} after a failed write: {e}",
                c.generation
            );
        }
        r
    }

    fn write_generation_inner(&mut self, c: &Compiled, rule_slots: &[u32]) -> Result<(), Error> {
        let g = c.generation;
        let half = PORT_ENTRIES / GENERATIONS;
        let mut keys = Vec::with_capacity(half as usize);
        let mut values = Vec::with_capacity(half as usize);
        for proto in [fw_common::PortProto::Tcp, fw_common::PortProto::Udp] {
            for port in 0..=u16::MAX {
                keys.push(port_index(g, proto, port));
                values.push(c.ports.get(&(proto, port)).copied().unwrap_or(0));
            }
        }
        let n = crate::sys::map_update_batch(self.ports_raw.fd().as_fd(), &keys, &values)
            .map_err(|e| Error::bpf("FW_PORTS batch update", e))?;
        if n as usize != keys.len() {
            return Err(Error::Other(format!(
                "FW_PORTS batch update wrote {n} of {} entries",
                keys.len()
            )));
        }
        self.clear_sources(g)?;
        {
            let mut t: LpmTrie<_, SrcKeyV4, u32> =
                LpmTrie::try_from(&mut self.src_v4).map_err(ctx("FW_SRC_V4"))?;
            for ((len, data), slot) in &c.src_v4 {
                t.insert(&Key::new(*len, *data), *slot, 0)
                    .map_err(ctx("FW_SRC_V4 insert"))?;
            }
        }
        {
            let mut t: LpmTrie<_, SrcKeyV6, u32> =
                LpmTrie::try_from(&mut self.src_v6).map_err(ctx("FW_SRC_V6"))?;
            for ((len, data), slot) in &c.src_v6 {
                t.insert(&Key::new(*len, *data), *slot, 0)
                    .map_err(ctx("FW_SRC_V6 insert"))?;
            }
        }
        self.set_config(g, c.config)?;
        for slot in rule_slots {
            self.zero_counter(*slot)?;
            self.zero_counter(fw_common::maps::limited_slot(*slot))?;
            let p = c.limits.get(slot).copied().unwrap_or_default();
            self.flood.set_limit(*slot, p)?;
        }
        Ok(())
    }

    /// Put `policy` into generation `generation`, which must not be the one in force (`flushed`:
    /// with `fw flush` in force): what every generation flip writes before flipping. The one
    /// copy of that protocol; [`crate::filter::Filter`], the kernel tests and the benchmark
    /// call it.
    /// Every rule's counter starts at zero.
    pub fn write_policy(
        &mut self,
        policy: &fw_policy::Policy,
        generation: u32,
        flushed: bool,
    ) -> Result<Compiled, Error> {
        let ids: Vec<u32> = policy.rules.iter().map(|r| r.id).collect();
        self.write_policy_carrying(policy, generation, flushed, &ids)
    }

    /// [`PinnedMaps::write_policy`] for a policy whose rules took over the ids of the rules they
    /// share with the policy in force (`fw_policy::ids::carry_ids`): only the counters of
    /// `fresh_ids` start at zero, the others keep counting across the flip.
    pub fn write_policy_carrying(
        &mut self,
        policy: &fw_policy::Policy,
        generation: u32,
        flushed: bool,
        fresh_ids: &[u32],
    ) -> Result<Compiled, Error> {
        let mut compiled = Compiled::new(policy, generation);
        if flushed {
            compiled = compiled.flushed();
        }
        let slots: Vec<u32> = fresh_ids
            .iter()
            .map(|id| fw_common::maps::rule_slot(generation, *id))
            .collect();
        self.write_generation(&compiled, &slots)?;
        Ok(compiled)
    }

    /// Change the policy of generation `generation` (the one in force) from `before` to
    /// `after` in place, element by element (see [`PinnedMaps::apply_diff`]): what a live edit
    /// (`fw allow`, `fw deny`) writes. The counters of rules that are new start at zero.
    pub fn edit_policy(
        &mut self,
        generation: u32,
        before: &fw_policy::Policy,
        after: &fw_policy::Policy,
    ) -> Result<(), Error> {
        let old = Compiled::new(before, generation);
        let new = Compiled::new(after, generation);
        let old_ids: Vec<u32> = before.rules.iter().map(|r| r.id).collect();
        let new_slots: Vec<u32> = after
            .rules
            .iter()
            .filter(|r| !old_ids.contains(&r.id))
            .map(|r| fw_common::maps::rule_slot(generation, r.id))
            .collect();
        self.apply_diff(&old, &new, &new_slots)
    }

    /// Remove every LPM entry of generation `g`.
    fn clear_sources(&mut self, g: u32) -> Result<(), Error> {
        let mut t: LpmTrie<_, SrcKeyV4, u32> =
            LpmTrie::try_from(&mut self.src_v4).map_err(ctx("FW_SRC_V4"))?;
        let old = keys_of_generation(t.keys(), g, "FW_SRC_V4")?;
        for k in old {
            t.remove(&k).map_err(ctx("FW_SRC_V4 remove"))?;
        }
        let mut t: LpmTrie<_, SrcKeyV6, u32> =
            LpmTrie::try_from(&mut self.src_v6).map_err(ctx("FW_SRC_V6"))?;
        let old = keys_of_generation(t.keys(), g, "FW_SRC_V6")?;
        for k in old {
            t.remove(&k).map_err(ctx("FW_SRC_V6 remove"))?;
        }
        Ok(())
    }

    /// Change the active generation in place from `old` to `new` (same generation), one
    /// element at a time in an order where every intermediate state is a sound policy: new
    /// source entries before the ports that point at them, ports, then removals. Running it
    /// again after an interruption finishes the job (an entry already removed is not an error).
    pub fn apply_diff(
        &mut self,
        old: &Compiled,
        new: &Compiled,
        new_slots: &[u32],
    ) -> Result<(), Error> {
        assert_eq!(old.generation, new.generation);
        let g = new.generation;
        for slot in new_slots {
            self.zero_counter(*slot)?;
            self.zero_counter(fw_common::maps::limited_slot(*slot))?;
        }
        // Limits before the slots that point at them; a limit that goes away stays until its
        // slot no longer says "limited" (harmless: nothing reads it then).
        for (slot, p) in &new.limits {
            if old.limits.get(slot) != Some(p) {
                self.flood.set_limit(*slot, *p)?;
            }
        }
        {
            let mut t: LpmTrie<_, SrcKeyV4, u32> =
                LpmTrie::try_from(&mut self.src_v4).map_err(ctx("FW_SRC_V4"))?;
            for (k, v) in &new.src_v4 {
                if old.src_v4.get(k) != Some(v) {
                    t.insert(&Key::new(k.0, k.1), *v, 0)
                        .map_err(ctx("FW_SRC_V4 insert"))?;
                }
            }
        }
        {
            let mut t: LpmTrie<_, SrcKeyV6, u32> =
                LpmTrie::try_from(&mut self.src_v6).map_err(ctx("FW_SRC_V6"))?;
            for (k, v) in &new.src_v6 {
                if old.src_v6.get(k) != Some(v) {
                    t.insert(&Key::new(k.0, k.1), *v, 0)
                        .map_err(ctx("FW_SRC_V6 insert"))?;
                }
            }
        }
        let mut keys: Vec<_> = old.ports.keys().chain(new.ports.keys()).copied().collect();
        keys.sort();
        keys.dedup();
        for (proto, port) in keys {
            let o = old.ports.get(&(proto, port)).copied().unwrap_or(0);
            let n = new.ports.get(&(proto, port)).copied().unwrap_or(0);
            if o != n {
                self.set_port(port_index(g, proto, port), n)?;
            }
        }
        if old.config != new.config {
            self.set_config(g, new.config)?;
        }
        {
            let mut t: LpmTrie<_, SrcKeyV4, u32> =
                LpmTrie::try_from(&mut self.src_v4).map_err(ctx("FW_SRC_V4"))?;
            for k in old.src_v4.keys().filter(|k| !new.src_v4.contains_key(k)) {
                remove_tolerant(t.remove(&Key::new(k.0, k.1)), "FW_SRC_V4 remove")?;
            }
        }
        {
            let mut t: LpmTrie<_, SrcKeyV6, u32> =
                LpmTrie::try_from(&mut self.src_v6).map_err(ctx("FW_SRC_V6"))?;
            for k in old.src_v6.keys().filter(|k| !new.src_v6.contains_key(k)) {
                remove_tolerant(t.remove(&Key::new(k.0, k.1)), "FW_SRC_V6 remove")?;
            }
        }
        Ok(())
    }

    /// A counter summed over all CPUs.
    pub fn counter(&self, slot: u32) -> Result<Counter, Error> {
        let a: PerCpuArray<_, Counter> =
            PerCpuArray::try_from(&self.counters).map_err(ctx("FW_COUNTERS"))?;
        let v = a.get(&slot, 0).map_err(ctx("FW_COUNTERS"))?;
        Ok(v.iter().fold(Counter::default(), |acc, c| Counter {
            packets: acc.packets + c.packets,
            bytes: acc.bytes + c.bytes,
        }))
    }

    pub fn zero_counter(&mut self, slot: u32) -> Result<(), Error> {
        let ncpu = aya::util::nr_cpus().map_err(|(what, e)| Error::io(what, e))?;
        let mut a: PerCpuArray<_, Counter> =
            PerCpuArray::try_from(&mut self.counters).map_err(ctx("FW_COUNTERS"))?;
        let zero = PerCpuValues::try_from(vec![Counter::default(); ncpu])
            .map_err(|e| Error::io("per-cpu values", e))?;
        a.set(slot, zero, 0).map_err(ctx("FW_COUNTERS"))
    }
}
