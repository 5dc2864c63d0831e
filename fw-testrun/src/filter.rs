//! [`KernelFilter`]: the real `fw_xdp` filter and `fw_egress` recorder next to the userspace
//! mirror ([`fw_policy::mirror::Mirror`]: the compiled policy plus in-memory flow tables).
//! [`KernelFilter::check`] runs one arriving frame through the kernel and `decide()` and reports
//! where they disagree: return value, counter slot, or XDP_ABORTED. [`KernelFilter::egress`]
//! does the same for a leaving frame (the TC recorder against `fw_common::egress::record`), and
//! [`KernelFilter::flow_diff`] compares the kernel's flow tables with the mirror's.
//!
//! Every userspace decision goes through [`KernelFilter::decide_user`] and every userspace
//! egress record through [`KernelFilter::egress`]: when `decide()` learns something new, those
//! and the mirror they read are the only places to teach it.

use std::{collections::BTreeMap, fmt, net::IpAddr, path::Path};

use anyhow::{Context as _, bail};
use aya::{
    TestRunOptions,
    programs::{SchedClassifier, TestRun as _, Xdp},
};
use fw::{loader::Variant, maps::PinnedMaps, sys::monotonic_coarse_ns};
use fw_common::{
    Config, Counter, Decision, FlowKey, FlowState, FlowTable, decide, egress,
    maps::{GENERATIONS, PROG_EGRESS},
};
use fw_policy::{Compiled, Policy, mirror::Mirror};

use crate::{
    LoadedFw, MIN_FRAME, TC_ACT_OK, action_name, describe, expected_action, hex, slot_name,
};

/// Kernel and mirror stamp flows with CLOCK_MONOTONIC_COARSE read a few microseconds apart;
/// `last_seen` values may differ by this much (a few clock ticks) and still agree.
pub const LAST_SEEN_SLACK_NS: u64 = 200_000_000;

/// Every flow table, kernel or mirror, as one sorted map.
pub type Flows = BTreeMap<(FlowTable, FlowKey), FlowState>;

fn same_flow(a: &FlowState, b: &FlowState) -> bool {
    a.state == b.state
        && a.expect_ack == b.expect_ack
        && a.flags == b.flags
        && a.last_seen.abs_diff(b.last_seen) <= LAST_SEEN_SLACK_NS
}

/// `tcp 198.51.100.7:443 -> 192.0.2.1:40000` (remote end first, as the key has it).
pub fn flow_name(k: &FlowKey) -> String {
    let addr = |a: &[u8; 16]| -> IpAddr {
        if k.family == 4 {
            IpAddr::from([a[0], a[1], a[2], a[3]])
        } else {
            IpAddr::from(*a)
        }
    };
    let proto = match k.proto {
        6 => "tcp".to_string(),
        17 => "udp".to_string(),
        1 => "icmp".to_string(),
        58 => "icmpv6".to_string(),
        p => format!("proto {p}"),
    };
    format!(
        "{proto} {}:{} -> {}:{}",
        addr(&k.remote),
        k.remote_port,
        addr(&k.local),
        k.local_port
    )
}

/// Where kernel and userspace disagreed on one frame.
#[derive(Debug, Clone)]
pub struct Mismatch {
    pub frame: Vec<u8>,
    pub user: Decision,
    pub kernel_ret: u32,
    /// Packets and bytes the slot `decide()` named gained during the run (1, len expected).
    pub slot_delta: (u64, u64),
}

impl fmt::Display for Mismatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} bytes: kernel returned {} ({}), userspace decide() says {} (expects {}); \
             counter slot {} gained {} packets / {} bytes (expected 1 / {}){}",
            self.frame.len(),
            self.kernel_ret,
            action_name(self.kernel_ret),
            describe(&self.user),
            action_name(expected_action(&self.user)),
            slot_name(self.user.slot),
            self.slot_delta.0,
            self.slot_delta.1,
            self.frame.len(),
            hex(&self.frame)
        )
    }
}

/// What became of a leaving frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Egress {
    /// Both recorders saw it.
    Recorded,
    /// BPF_PROG_TEST_RUN refused it (see [`tc_test_run_refuses`]); neither side saw it.
    Refused,
}

/// BPF_PROG_TEST_RUN of a TC program refuses (EINVAL) a frame whose ethertype says IPv4 or
/// IPv6 but which is too short for that header; the stack would not hand such a frame to TC
/// egress either. (XDP test runs take anything from 14 bytes on.)
pub fn tc_test_run_refuses(frame: &[u8]) -> bool {
    let ethertype = frame.get(12..14).map(|b| u16::from_be_bytes([b[0], b[1]]));
    match ethertype {
        Some(0x0800) => frame.len() < 14 + 20,
        Some(0x86dd) => frame.len() < 14 + 40,
        _ => false,
    }
}
/// The real `fw_xdp` program, loaded but not attached, with its own pinned maps.
pub struct KernelFilter {
    pub(crate) fw: LoadedFw,
    /// The userspace side of each generation as last written.
    gens: [Option<Compiled>; GENERATIONS as usize],
    /// The active generation's policy and the mirror's flow tables.
    pub(crate) mirror: Mirror,
    active: u32,
}

impl KernelFilter {
    /// Load the program with `policy` in generation 0, active, its maps under
    /// `/sys/fs/bpf/fw-testrun-<pid>-<n>` (state under /run).
    pub fn load(policy: &Policy) -> anyhow::Result<Self> {
        Self::load_sized(policy, fw_common::maps::FLOWS_OUT_MAX)
    }

    /// [`KernelFilter::load`] with flow tables of `max_flows` entries (the policy option).
    pub fn load_sized(policy: &Policy, max_flows: u32) -> anyhow::Result<Self> {
        Self::load_full(policy, max_flows, Variant::probe())
    }

    /// [`KernelFilter::load`] with the build of the XDP program chosen: multi-buffer
    /// (`xdp.frags`, Linux ≥ 5.18) or single-buffer.
    pub fn load_variant(policy: &Policy, variant: Variant) -> anyhow::Result<Self> {
        Self::load_full(policy, fw_common::maps::FLOWS_OUT_MAX, variant)
    }

    fn load_full(policy: &Policy, max_flows: u32, variant: Variant) -> anyhow::Result<Self> {
        let fw = LoadedFw::load_with("fw-testrun", "test", max_flows, variant)?;
        let mut f = KernelFilter {
            fw,
            gens: [None, None],
            mirror: Mirror::new(Compiled::new(policy, 0)),
            active: 0,
        };
        f.write_generation(policy, 0)?;
        f.set_active(0)?;
        // The host facts for SYN cookie answers, as `fw up` writes them.
        fw::syncookie::write_cfg(&f.fw.paths, &policy.options).context("FW_COOKIE_CFG")?;
        f.mirror.cookie_cfg.set(f.kernel_cookie_cfg()?);
        if !f.kernel_flows()?.is_empty() {
            bail!("fresh flow tables are not empty");
        }
        Ok(f)
    }

    /// The bpffs directory holding this filter's map pins.
    pub fn pins_dir(&self) -> &Path {
        &self.fw.paths.pins
    }

    pub fn state_dir(&self) -> &Path {
        &self.fw.paths.state
    }

    pub fn maps(&self) -> &PinnedMaps {
        &self.fw.maps
    }

    /// The kernel's maps, bypassing the userspace mirror: what is written here makes the two
    /// sides disagree (for testing the harness itself, or a live edit before the mirror learns
    /// of it).
    pub fn kernel_maps_mut(&mut self) -> &mut PinnedMaps {
        &mut self.fw.maps
    }

    pub fn active_generation(&self) -> u32 {
        self.active
    }

    /// Fill generation `g` with `policy` (as `fw up` does for the inactive one), without
    /// flipping to it.
    pub fn write_generation(&mut self, policy: &Policy, g: u32) -> anyhow::Result<()> {
        self.gens[g as usize] = Some(self.fw.write_generation(policy, g)?);
        Ok(())
    }

    /// The flip: generation `g` is in force from the next packet on.
    pub fn set_active(&mut self, g: u32) -> anyhow::Result<()> {
        if self.gens[g as usize].is_none() {
            bail!("generation {g} was never written");
        }
        self.fw.set_active(g)?;
        self.active = g;
        let next = self.gens[g as usize].clone().expect("checked above");
        // Block lists are not per generation: the kernel's follow the policy put in force.
        let had = self.fw.maps.flood.read_blocks()?;
        if had != next.blocks {
            self.fw.maps.flood.sync_blocks(&had, &next.blocks)?;
        }
        self.mirror.policy = next;
        Ok(())
    }

    /// Replace the policy as `fw up` on a running filter does: fill the inactive generation,
    /// then flip. Returns the new active generation.
    pub fn apply(&mut self, policy: &Policy) -> anyhow::Result<u32> {
        let next = 1 - self.active;
        self.write_generation(policy, next)?;
        self.set_active(next)?;
        Ok(next)
    }

    /// Replace the active generation's config (e.g. `fw flush`: [`Config::PASS_ALL`]).
    pub fn set_config(&mut self, config: Config) -> anyhow::Result<()> {
        let g = self.active;
        self.fw
            .maps
            .set_config(g, config)
            .with_context(|| format!("FW_CONFIG[{g}]"))?;
        if let Some(c) = self.gens[g as usize].as_mut() {
            c.config = config;
        }
        self.mirror.policy.config = config;
        Ok(())
    }

    /// `fw flush` on (everything passes) or off (the policy's own config).
    pub fn set_flushed(&mut self, on: bool) -> anyhow::Result<()> {
        let mut c = self.mirror().config;
        if on {
            c.flags |= Config::PASS_ALL;
        } else {
            c.flags &= !Config::PASS_ALL;
        }
        self.set_config(c)
    }

    /// Put `blocks` in force on both sides: the kernel's block maps (as `fw block` writes them)
    /// and the mirror.
    pub fn set_blocks(&mut self, blocks: fw_policy::blocks::BlockSet) -> anyhow::Result<()> {
        let old = self.mirror.policy.blocks.clone();
        self.fw.maps.flood.sync_blocks(&old, &blocks)?;
        self.mirror.policy.blocks = blocks;
        Ok(())
    }

    /// The whole userspace mirror, to make time pass in its tables.
    pub fn state_mirror_mut(&mut self) -> &mut Mirror {
        &mut self.mirror
    }

    /// The userspace policy tables of the generation in force.
    pub fn mirror(&self) -> &Compiled {
        &self.mirror.policy
    }

    /// The whole userspace mirror: policy and flow tables.
    pub fn state_mirror(&self) -> &Mirror {
        &self.mirror
    }

    /// The userspace decision for an arriving `frame`, with the mirror's clock set to now.
    /// Like the kernel's, it may change the mirror's flow tables.
    pub fn decide_user(&self, frame: &[u8]) -> Decision {
        self.mirror.now.set(monotonic_coarse_ns());
        decide(frame, &self.mirror)
    }

    pub(crate) fn program(&self) -> anyhow::Result<&Xdp> {
        let name = self.variant().program();
        let p = self
            .fw
            .ebpf
            .program(name)
            .with_context(|| format!("program {name} missing"))?;
        Ok(p.try_into()?)
    }

    /// Mean run time of `frame` through the kernel program over `repeat` runs, in ns
    /// (BPF_PROG_TEST_RUN's own clock): for comparisons within one run, never for pass/fail.
    pub fn time_ns(&self, frame: &[u8], repeat: u32) -> anyhow::Result<u64> {
        let r = self.program()?.test_run(TestRunOptions {
            data_in: Some(frame),
            repeat,
            ..Default::default()
        })?;
        Ok(r.duration.as_nanos() as u64)
    }

    /// The build of the XDP program this filter runs.
    pub fn variant(&self) -> Variant {
        fw::loader::loaded_variant(&self.fw.ebpf)
    }

    /// The XDP program itself (to attach it in tests that need a real interface).
    pub fn xdp_mut(&mut self) -> anyhow::Result<&mut Xdp> {
        Ok(fw::loader::xdp_program(&mut self.fw.ebpf)?)
    }

    /// Run `frame` once as a multi-buffer frame whose first buffer holds `linear` bytes (the
    /// rest in fragments), where the kernel lets a test choose that (`data_end` in the
    /// context shorter than the frame: Linux 6.18). `Ok(None)`: this kernel cannot.
    pub fn run_split(&self, frame: &[u8], linear: usize) -> anyhow::Result<Option<u32>> {
        // struct xdp_md: data, data_end, data_meta, ingress_ifindex, rx_queue_index,
        // egress_ifindex.
        let mut ctx = [0u8; 24];
        ctx[4..8].copy_from_slice(&(linear as u32).to_ne_bytes());
        let r = self.program()?.test_run(TestRunOptions {
            data_in: Some(frame),
            ctx_in: Some(&ctx),
            repeat: 1,
            ..Default::default()
        });
        match r {
            Ok(r) => Ok(Some(r.return_value)),
            Err(e) if os_errno(&e) == Some(libc::EINVAL) => Ok(None),
            Err(e) => Err(e).context("BPF_PROG_TEST_RUN with a split frame"),
        }
    }

    /// Run `frame` through the kernel program once; the XDP return value.
    pub fn run(&self, frame: &[u8]) -> anyhow::Result<u32> {
        if frame.len() < MIN_FRAME {
            bail!(
                "BPF_PROG_TEST_RUN refuses XDP frames under {MIN_FRAME} bytes (got {})",
                frame.len()
            );
        }
        let r = self
            .program()?
            .test_run(TestRunOptions {
                data_in: Some(frame),
                repeat: 1,
                ..Default::default()
            })
            .with_context(|| format!("BPF_PROG_TEST_RUN of a {}-byte frame", frame.len()))?;
        Ok(r.return_value)
    }

    fn egress_program(&self) -> anyhow::Result<&SchedClassifier> {
        let p = self
            .fw
            .ebpf
            .program(PROG_EGRESS)
            .with_context(|| format!("program {PROG_EGRESS} missing"))?;
        Ok(p.try_into()?)
    }

    /// Run a leaving `frame` through the kernel's egress recorder once; the TC return value.
    pub fn run_egress(&self, frame: &[u8]) -> anyhow::Result<u32> {
        if frame.len() < MIN_FRAME {
            bail!("BPF_PROG_TEST_RUN refuses frames under {MIN_FRAME} bytes");
        }
        let r = self
            .egress_program()?
            .test_run(TestRunOptions {
                data_in: Some(frame),
                repeat: 1,
                ..Default::default()
            })
            .with_context(|| format!("egress BPF_PROG_TEST_RUN of a {}-byte frame", frame.len()))?;
        Ok(r.return_value)
    }

    /// A leaving frame, on both sides: the kernel's recorder and `egress::record` on the
    /// mirror. `Ok(Err(..))` if the recorder returned anything but TC_ACT_OK.
    pub fn egress(&self, frame: &[u8]) -> anyhow::Result<Result<Egress, String>> {
        let now = monotonic_coarse_ns();
        let ret = match self.run_egress(frame) {
            Ok(r) => r,
            Err(_) if tc_test_run_refuses(frame) => return Ok(Ok(Egress::Refused)),
            Err(e) => return Err(e),
        };
        self.mirror.now.set(now);
        egress::record(frame, &self.mirror);
        if ret != TC_ACT_OK {
            return Ok(Err(format!(
                "the egress recorder returned {ret}, not TC_ACT_OK: it must never drop{}",
                hex(frame)
            )));
        }
        Ok(Ok(Egress::Recorded))
    }

    /// Every entry of the kernel's flow tables.
    pub fn kernel_flows(&self) -> anyhow::Result<Flows> {
        let mut out = Flows::new();
        for t in [FlowTable::Out, FlowTable::In, FlowTable::Embryo] {
            for (k, v) in self
                .fw
                .maps
                .flows(t)
                .with_context(|| format!("{t:?} flows"))?
            {
                out.insert((t, k), v);
            }
        }
        Ok(out)
    }

    /// The kernel's per-source counts of `In` entries (`FW_SOURCES`).
    pub fn kernel_sources(&self) -> anyhow::Result<BTreeMap<[u8; 16], u32>> {
        let path = self.fw.paths.map(fw_common::maps::MAP_SOURCES);
        let md = aya::maps::MapData::from_pin(&path).with_context(|| path.display().to_string())?;
        let map = aya::maps::Map::from_map_data(md)?;
        let h: aya::maps::HashMap<_, [u8; 16], u32> = aya::maps::HashMap::try_from(&map)?;
        Ok(h.iter().filter_map(|r| r.ok()).collect())
    }

    /// The mirror's flow tables.
    pub fn mirror_flows(&self) -> Flows {
        self.mirror.flows.borrow().clone()
    }

    /// Where the kernel's flow tables differ from the mirror's (empty: they agree). Entries
    /// agree when everything but `last_seen` is equal and `last_seen` is within
    /// [`LAST_SEEN_SLACK_NS`].
    pub fn flow_diff(&self) -> anyhow::Result<Vec<String>> {
        let k = self.kernel_flows()?;
        let m = self.mirror_flows();
        let mut out = Vec::new();
        for (key, kv) in &k {
            match m.get(key) {
                None => out.push(format!(
                    "kernel only: {:?} {} {kv:?}",
                    key.0,
                    flow_name(&key.1)
                )),
                Some(mv) if !same_flow(kv, mv) => out.push(format!(
                    "{:?} {}: kernel {kv:?}, mirror {mv:?}",
                    key.0,
                    flow_name(&key.1)
                )),
                Some(_) => {}
            }
        }
        for (key, mv) in &m {
            if !k.contains_key(key) {
                out.push(format!(
                    "mirror only: {:?} {} {mv:?}",
                    key.0,
                    flow_name(&key.1)
                ));
            }
        }
        let ks = self.kernel_sources()?;
        let ms = self.mirror.sources.borrow().clone();
        if ks != ms {
            out.push(format!(
                "per-source counts differ: kernel {ks:?}, mirror {ms:?}"
            ));
        }
        Ok(out)
    }

    /// Put the same flow entry in the kernel's table and the mirror's (e.g. an old one, to see
    /// both sides expire it).
    pub fn insert_flow(
        &mut self,
        table: FlowTable,
        key: &FlowKey,
        st: &FlowState,
    ) -> anyhow::Result<()> {
        self.fw
            .maps
            .flow_insert(table, key, st)
            .with_context(|| format!("inserting into {table:?}"))?;
        self.mirror.flows.borrow_mut().insert((table, *key), *st);
        Ok(())
    }

    /// A counter slot summed over CPUs.
    pub fn counter(&self, slot: u32) -> anyhow::Result<Counter> {
        self.fw
            .maps
            .counter(slot)
            .with_context(|| format!("FW_COUNTERS[{slot}]"))
    }

    /// Run `frame` through the kernel and `decide()`: `Ok(decision)` when the kernel returned
    /// the verdict `decide()` implies and counted the frame in the slot `decide()` names,
    /// `Err(mismatch)` otherwise (XDP_ABORTED is always a mismatch).
    pub fn check(&self, frame: &[u8]) -> anyhow::Result<Result<Decision, Mismatch>> {
        let user = self.decide_user(frame);
        let before = self.counter(user.slot)?;
        let kernel_ret = self.run(frame)?;
        let after = self.counter(user.slot)?;
        let slot_delta = (
            after.packets.wrapping_sub(before.packets),
            after.bytes.wrapping_sub(before.bytes),
        );
        if kernel_ret == expected_action(&user) && slot_delta == (1, frame.len() as u64) {
            Ok(Ok(user))
        } else {
            Ok(Err(Mismatch {
                frame: frame.to_vec(),
                user,
                kernel_ret,
                slot_delta,
            }))
        }
    }
}

/// The OS error at the root of `e`, if any.
fn os_errno(e: &(dyn std::error::Error + 'static)) -> Option<i32> {
    let mut cur = Some(e);
    while let Some(err) = cur {
        if let Some(io) = err.downcast_ref::<std::io::Error>()
            && let Some(c) = io.raw_os_error()
        {
            return Some(c);
        }
        cur = err.source();
    }
    None
}
