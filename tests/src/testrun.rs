//! Running the real fw programs with BPF_PROG_TEST_RUN, next to the userspace mirror.
//!
//! [`KernelFilter::load`] loads the compiled object (the `fw_xdp` filter and the `fw_egress`
//! recorder) with its maps pinned in a private bpffs directory
//! (`/sys/fs/bpf/fw-testrun-<pid>-<n>`, state in `/run/fw-testrun-<pid>-<n>`), writes a policy
//! generation exactly as `fw up` does, and keeps the userspace mirror ([`fw_policy::mirror::Mirror`]:
//! the compiled policy plus in-memory flow tables). [`KernelFilter::check`] runs one arriving
//! frame through the kernel and `decide()` and reports where they disagree: return value,
//! counter slot, or XDP_ABORTED. [`KernelFilter::egress`] does the same for a leaving frame
//! (the TC recorder against `fw_common::egress::record`), and [`KernelFilter::flow_diff`]
//! compares the kernel's flow tables with the mirror's.
//!
//! Nothing is attached to any interface. Dropping the filter (also while a test panics) removes
//! both directories; directories left by a killed run of another process are swept on the next
//! load.
//!
//! Every userspace decision goes through [`KernelFilter::decide_user`] and every userspace
//! egress record through [`KernelFilter::egress`]: when `decide()` learns something new, those
//! and the mirror they read are the only places to teach it.

use std::{
    collections::BTreeMap,
    fmt, fs,
    net::IpAddr,
    path::{Path, PathBuf},
    sync::atomic::{AtomicU32, Ordering},
};

use anyhow::{Context as _, bail};
use aya::{
    Ebpf, TestRunOptions,
    programs::{SchedClassifier, TestRun as _, Xdp},
};
use fw::sys::monotonic_coarse_ns;
use fw::{
    loader::load_object,
    maps::PinnedMaps,
    paths::{BPFFS, IfacePaths, ensure_bpffs},
};
use fw_common::{
    Config, Counter, Decision, FlowKey, FlowState, FlowTable, Reason, decide, egress,
    maps::{GENERATIONS, PROG_EGRESS, PROG_XDP, rule_slot},
};
use fw_policy::Compiled;
use fw_policy::Policy;
use fw_policy::mirror::Mirror;

pub const XDP_ABORTED: u32 = 0;
pub const XDP_DROP: u32 = 1;
pub const XDP_PASS: u32 = 2;
/// What the egress recorder must always return: it never drops.
pub const TC_ACT_OK: u32 = 0;

/// Kernel and mirror stamp flows with CLOCK_MONOTONIC_COARSE read a few microseconds apart;
/// `last_seen` values may differ by this much (a few clock ticks) and still agree.
pub const LAST_SEEN_SLACK_NS: u64 = 200_000_000;

/// Every flow table, kernel or mirror, as one sorted map.
pub type Flows = BTreeMap<(FlowTable, FlowKey), FlowState>;

/// The kernel refuses XDP test buffers shorter than an Ethernet header.
pub const MIN_FRAME: usize = 14;

const DIR_PREFIX: &str = "fw-testrun-";
const STATE_ROOT: &str = "/run";

static NEXT: AtomicU32 = AtomicU32::new(0);

/// Fail loudly (never skip) when the kernel tier cannot run here.
pub fn require_root() {
    // SAFETY: geteuid has no preconditions.
    let euid = unsafe { libc::geteuid() };
    assert_eq!(
        euid, 0,
        "the kernel test tier loads an XDP program and pins maps: run it as root \
         (e.g. `sudo -E cargo test -p tests --test kernel_verdicts`)"
    );
    if let Err(e) = ensure_bpffs() {
        panic!("bpffs is needed for the kernel test tier: {e}");
    }
}

/// The XDP verdict `decide()` implies.
pub fn expected_action(d: &Decision) -> u32 {
    if d.pass { XDP_PASS } else { XDP_DROP }
}

pub fn action_name(ret: u32) -> &'static str {
    match ret {
        XDP_ABORTED => "XDP_ABORTED",
        XDP_DROP => "XDP_DROP",
        XDP_PASS => "XDP_PASS",
        3 => "XDP_TX",
        4 => "XDP_REDIRECT",
        _ => "XDP_?",
    }
}

/// A counter slot in words: a reason's name or "gen G rule I".
pub fn slot_name(slot: u32) -> String {
    if let Some(r) = Reason::from_slot(slot) {
        return r.name().to_string();
    }
    match fw_common::maps::slot_rule(slot) {
        Some((g, i)) => format!("gen {g} rule {i}"),
        None => format!("slot {slot}"),
    }
}

pub fn describe(d: &Decision) -> String {
    format!(
        "{} [{}]",
        if d.pass { "PASS" } else { "DROP" },
        slot_name(d.slot)
    )
}

/// Hex of a frame, 32 bytes a line, for failure messages.
pub fn hex(frame: &[u8]) -> String {
    let mut s = String::new();
    for (i, c) in frame.chunks(32).enumerate() {
        s.push_str(&format!("\n    {:04x}:", i * 32));
        for b in c {
            s.push_str(&format!(" {b:02x}"));
        }
    }
    s
}

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

/// Removes a test's bpffs and state directories on drop.
struct Dirs {
    pins: PathBuf,
    state: PathBuf,
}

impl Drop for Dirs {
    fn drop(&mut self) {
        for d in [&self.pins, &self.state] {
            if d.exists()
                && let Err(e) = fs::remove_dir_all(d)
            {
                eprintln!("warning: could not remove {}: {e}", d.display());
            }
        }
    }
}

/// Remove `fw-testrun-<pid>-*` directories whose process is gone (a run killed by a signal
/// cannot run its destructors).
fn sweep_stale() {
    for root in [BPFFS, STATE_ROOT] {
        let Ok(rd) = fs::read_dir(root) else { continue };
        for e in rd.flatten() {
            let name = e.file_name();
            let Some(rest) = name.to_str().and_then(|n| n.strip_prefix(DIR_PREFIX)) else {
                continue;
            };
            let Some(pid) = rest.split('-').next().and_then(|p| p.parse::<u32>().ok()) else {
                continue;
            };
            if !Path::new(&format!("/proc/{pid}")).exists() {
                let _ = fs::remove_dir_all(e.path());
            }
        }
    }
}

fn rule_slots(policy: &Policy, generation: u32) -> Vec<u32> {
    policy
        .rules
        .iter()
        .map(|r| rule_slot(generation, r.id))
        .collect()
}

/// The real `fw_xdp` program, loaded but not attached, with its own pinned maps.
pub struct KernelFilter {
    // Field order is drop order: close the program and maps, then remove the pins.
    ebpf: Ebpf,
    maps: PinnedMaps,
    /// The userspace side of each generation as last written.
    gens: [Option<Compiled>; GENERATIONS as usize],
    /// The active generation's policy and the mirror's flow tables.
    mirror: Mirror,
    active: u32,
    paths: IfacePaths,
    _dirs: Dirs,
}

impl KernelFilter {
    /// Load the program with `policy` in generation 0, active.
    pub fn load(policy: &Policy) -> anyhow::Result<Self> {
        ensure_bpffs().context("bpffs")?;
        sweep_stale();
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let name = format!("{DIR_PREFIX}{}-{n}", std::process::id());
        let dirs = Dirs {
            pins: Path::new(BPFFS).join(&name),
            state: Path::new(STATE_ROOT).join(&name),
        };
        for d in [&dirs.pins, &dirs.state] {
            if d.exists() {
                bail!("{} exists already", d.display());
            }
        }
        let paths = IfacePaths::at("test", dirs.pins.clone(), dirs.state.clone());
        fs::create_dir_all(&paths.state).with_context(|| paths.state.display().to_string())?;
        let ebpf = load_object(&paths, false, fw_common::maps::FLOWS_OUT_MAX)
            .context("loading the fw XDP object")?;
        let maps = PinnedMaps::open(&paths).context("opening the pinned maps")?;
        let mut f = KernelFilter {
            ebpf,
            maps,
            gens: [None, None],
            mirror: Mirror::new(Compiled::new(policy, 0)),
            active: 0,
            paths,
            _dirs: dirs,
        };
        f.write_generation(policy, 0)?;
        f.set_active(0)?;
        if !f.kernel_flows()?.is_empty() {
            bail!("fresh flow tables are not empty");
        }
        Ok(f)
    }

    /// The bpffs directory holding this filter's map pins.
    pub fn pins_dir(&self) -> &Path {
        &self.paths.pins
    }

    pub fn state_dir(&self) -> &Path {
        &self.paths.state
    }

    pub fn maps(&self) -> &PinnedMaps {
        &self.maps
    }

    /// The kernel's maps, bypassing the userspace mirror: what is written here makes the two
    /// sides disagree (for testing the harness itself, or a live edit before the mirror learns
    /// of it).
    pub fn kernel_maps_mut(&mut self) -> &mut PinnedMaps {
        &mut self.maps
    }

    pub fn active_generation(&self) -> u32 {
        self.active
    }

    /// Fill generation `g` with `policy` (as `fw up` does for the inactive one), without
    /// flipping to it.
    pub fn write_generation(&mut self, policy: &Policy, g: u32) -> anyhow::Result<()> {
        let c = Compiled::new(policy, g);
        self.maps
            .write_generation(&c, &rule_slots(policy, g))
            .with_context(|| format!("writing generation {g}"))?;
        self.gens[g as usize] = Some(c);
        Ok(())
    }

    /// The flip: generation `g` is in force from the next packet on.
    pub fn set_active(&mut self, g: u32) -> anyhow::Result<()> {
        if self.gens[g as usize].is_none() {
            bail!("generation {g} was never written");
        }
        self.maps.set_active(g).context("flipping FW_ACTIVE")?;
        let got = self.maps.active_generation()?;
        if got != g {
            bail!("FW_ACTIVE reads {got} after setting {g}");
        }
        self.active = g;
        let next = self.gens[g as usize].clone().expect("checked above");
        // Block lists are not per generation: the kernel's follow the policy put in force.
        let had = self.maps.flood.read_blocks()?;
        if had != next.blocks {
            self.maps.flood.sync_blocks(&had, &next.blocks)?;
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
        self.maps
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
        self.maps.flood.sync_blocks(&old, &blocks)?;
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

    fn program(&self) -> anyhow::Result<&Xdp> {
        let p = self
            .ebpf
            .program(PROG_XDP)
            .with_context(|| format!("program {PROG_XDP} missing"))?;
        Ok(p.try_into()?)
    }

    /// Run `frame` through the kernel program `repeat` times: the XDP return value and the mean
    /// time per run (BPF_PROG_TEST_RUN's own timing).
    pub fn time(&self, frame: &[u8], repeat: u32) -> anyhow::Result<(u32, std::time::Duration)> {
        let r = self.program()?.test_run(TestRunOptions {
            data_in: Some(frame),
            repeat,
            ..Default::default()
        })?;
        Ok((r.return_value, r.duration))
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
            for (k, v) in self.maps.flows(t).with_context(|| format!("{t:?} flows"))? {
                out.insert((t, k), v);
            }
        }
        Ok(out)
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
        self.maps
            .flow_insert(table, key, st)
            .with_context(|| format!("inserting into {table:?}"))?;
        self.mirror.flows.borrow_mut().insert((table, *key), *st);
        Ok(())
    }

    /// A counter slot summed over CPUs.
    pub fn counter(&self, slot: u32) -> anyhow::Result<Counter> {
        self.maps
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

/// What a table entry says the policy does with a packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Expect {
    /// Passed by the rule with this id (its counter slot in the active generation).
    Rule(u32),
    /// Counted under this reason (passes or drops as the reason does).
    Is(Reason),
}

impl Expect {
    pub fn slot(self, generation: u32) -> u32 {
        match self {
            Expect::Rule(id) => rule_slot(generation, id),
            Expect::Is(r) => r.slot(),
        }
    }

    pub fn pass(self) -> bool {
        match self {
            Expect::Rule(_) => true,
            Expect::Is(r) => r.passes(),
        }
    }

    pub fn decision(self, generation: u32) -> Decision {
        Decision {
            pass: self.pass(),
            slot: self.slot(generation),
        }
    }
}

/// Counts what a test checked and collects every failure, so one run reports all of them.
pub struct Tally {
    label: String,
    pub packets: usize,
    pub truncations: usize,
    pub random: usize,
    pub egress: usize,
    /// Leaving frames BPF_PROG_TEST_RUN refused (too short for their IP header).
    pub egress_refused: usize,
    pub flow_checks: usize,
    failures: usize,
    messages: Vec<String>,
}

const MAX_MESSAGES: usize = 25;

impl Tally {
    pub fn new(label: impl Into<String>) -> Self {
        Tally {
            label: label.into(),
            packets: 0,
            truncations: 0,
            random: 0,
            egress: 0,
            egress_refused: 0,
            flow_checks: 0,
            failures: 0,
            messages: Vec::new(),
        }
    }

    /// Failures so far.
    pub fn failures(&self) -> usize {
        self.failures
    }

    pub fn fail(&mut self, msg: String) {
        self.failures += 1;
        if self.messages.len() < MAX_MESSAGES {
            self.messages.push(msg);
        }
    }

    fn agree(&mut self, f: &KernelFilter, what: &str, frame: &[u8]) -> Option<Decision> {
        match f.check(frame) {
            Ok(Ok(d)) => Some(d),
            Ok(Err(m)) => {
                self.fail(format!("{what}: KERNEL/USERSPACE MISMATCH: {m}"));
                None
            }
            Err(e) => {
                self.fail(format!("{what}: {e:#}"));
                None
            }
        }
    }

    /// One named packet: kernel and `decide()` agree, and both say `expect`.
    pub fn packet(&mut self, f: &KernelFilter, name: &str, frame: &[u8], expect: Expect) {
        self.packets += 1;
        let what = format!("[{}] {name}", self.label);
        let Some(d) = self.agree(f, &what, frame) else {
            return;
        };
        let want = expect.decision(f.active_generation());
        if d != want {
            self.fail(format!(
                "{what}: the table says {}, kernel and decide() agree on {}{}",
                describe(&want),
                describe(&d),
                hex(frame)
            ));
        }
    }

    /// Every prefix `frame[..len]`, `MIN_FRAME <= len < frame.len()`: kernel and `decide()`
    /// agree. With `all_truncated`, each must also be dropped as truncated (a well-formed IP
    /// datagram with no Ethernet padding, cut anywhere).
    pub fn truncations(&mut self, f: &KernelFilter, name: &str, frame: &[u8], all_truncated: bool) {
        for len in MIN_FRAME..frame.len() {
            self.truncations += 1;
            let what = format!(
                "[{}] {name} cut to {len} of {} bytes",
                self.label,
                frame.len()
            );
            let Some(d) = self.agree(f, &what, &frame[..len]) else {
                continue;
            };
            if all_truncated && d != Decision::reason(Reason::Truncated) {
                self.fail(format!(
                    "{what}: expected DROP [truncated], kernel and decide() agree on {}{}",
                    describe(&d),
                    hex(&frame[..len])
                ));
            }
        }
    }

    /// One step of a stateful sequence, an arriving frame: kernel and `decide()` agree (and
    /// say `expect`, if given), and afterwards so do their flow tables.
    pub fn ingress(
        &mut self,
        f: &KernelFilter,
        name: &str,
        frame: &[u8],
        expect: Option<Expect>,
    ) -> Option<Decision> {
        let d = match expect {
            Some(e) => {
                let before = self.failures;
                self.packet(f, name, frame, e);
                (self.failures == before).then(|| e.decision(f.active_generation()))
            }
            None => self.any(f, name, frame),
        };
        self.flows(f, &format!("after {name}"));
        d
    }

    /// One step of a stateful sequence, a leaving frame: the kernel's recorder passes it, and
    /// afterwards the kernel's flow tables are the mirror's.
    pub fn egress(&mut self, f: &KernelFilter, name: &str, frame: &[u8]) {
        self.egress += 1;
        let what = format!("[{}] egress {name}", self.label);
        match f.egress(frame) {
            Ok(Ok(Egress::Recorded)) => {}
            Ok(Ok(Egress::Refused)) => self.egress_refused += 1,
            Ok(Err(m)) => self.fail(format!("{what}: {m}")),
            Err(e) => self.fail(format!("{what}: {e:#}")),
        }
        self.flows(f, &format!("after egress {name}"));
    }

    /// The kernel's flow tables equal the mirror's.
    pub fn flows(&mut self, f: &KernelFilter, when: &str) {
        self.flow_checks += 1;
        match f.flow_diff() {
            Ok(d) if d.is_empty() => {}
            Ok(d) => self.fail(format!(
                "[{}] {when}: KERNEL/MIRROR FLOW TABLES DIFFER:\n    {}",
                self.label,
                d.join("\n    ")
            )),
            Err(e) => self.fail(format!("[{}] {when}: {e:#}", self.label)),
        }
    }

    /// Any frame (random, mutated): kernel and `decide()` agree. Returns the decision.
    pub fn any(&mut self, f: &KernelFilter, name: &str, frame: &[u8]) -> Option<Decision> {
        self.random += 1;
        let what = format!("[{}] {name}", self.label);
        self.agree(f, &what, frame)
    }

    /// Print the counts; panic with every failure (up to a limit) if there was one.
    pub fn finish(self) -> (usize, usize, usize) {
        let state = if self.egress + self.flow_checks > 0 {
            format!(
                ", {} egress frames ({} refused by the TC test run), {} flow-table comparisons",
                self.egress, self.egress_refused, self.flow_checks
            )
        } else {
            String::new()
        };
        println!(
            "[{}] checked {} packets, {} truncations, {} random frames{state} against the kernel: {} failures",
            self.label, self.packets, self.truncations, self.random, self.failures
        );
        if self.failures > 0 {
            let more = self.failures.saturating_sub(self.messages.len());
            panic!(
                "[{}] {} failures:\n{}{}",
                self.label,
                self.failures,
                self.messages.join("\n"),
                if more > 0 {
                    format!("\n... and {more} more")
                } else {
                    String::new()
                }
            );
        }
        (self.packets, self.truncations, self.random)
    }
}

/// A small deterministic PRNG (SplitMix64): the same seed gives the same frames on every run.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (n > 0).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }

    pub fn byte(&mut self) -> u8 {
        self.next_u64() as u8
    }

    /// True with probability `num / den`.
    pub fn chance(&mut self, num: u64, den: u64) -> bool {
        self.next_u64() % den < num
    }

    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }
}
