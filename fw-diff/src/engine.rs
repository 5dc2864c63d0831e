//! Running one case: generate the probes, build both hosts, send every probe to both, and
//! record what each host let through.

use std::{
    collections::HashMap,
    path::PathBuf,
    time::{Duration, Instant},
};

use anyhow::Context as _;
use fw_policy::{Policy, parse_policy_file};

use super::{
    flows::{FlowRt, FlowSpec, listen},
    frames,
    generator::Gen,
    lab::{Collected, Host, IptablesSetup, Kind},
    probes::{Body, Class, Outcome, Probe},
};
use fw_lab::{TempDir, link::CpuPin};
use fw_testrun::{KernelFilter, XDP_PASS};

/// One comparison: a policy for fw and the iptables rules it is compared with.
#[derive(Clone, Debug)]
pub struct Case {
    pub name: String,
    /// What is compared with what, in words.
    pub title: String,
    pub fw_policy: PathBuf,
    /// The fw policy's text (for the report).
    pub fw_text: String,
    /// iptables-restore input per family.
    pub ipt_v4: String,
    pub ipt_v6: String,
    pub ipt_origin: String,
    pub fw_origin: String,
}

#[derive(Clone, Debug)]
pub struct Options {
    /// Probes per case (at least).
    pub packets: usize,
    pub seed: u64,
    /// "legacy" or "nft".
    pub iptables: String,
    /// Also run every stateless frame through BPF_PROG_TEST_RUN and check the XDP verdict seen
    /// on the wire is the same.
    pub testrun: bool,
    /// Print progress to stderr.
    pub progress: bool,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            packets: 100_000,
            seed: 0x00f1_d1ff,
            iptables: "legacy".into(),
            testrun: true,
            progress: false,
        }
    }
}

pub struct CaseResult {
    pub case: Case,
    pub policy: Policy,
    pub probes: Vec<Probe>,
    pub outcomes: Vec<Outcome>,
    pub flows: Vec<FlowSpec>,
    /// Frames sent to each host [iptables, fw].
    pub frames: [u64; 2],
    /// Anything that makes the observation untrustworthy (must be empty).
    pub harness: Vec<String>,
    /// Stateless probes whose frames went through BPF_PROG_TEST_RUN too.
    pub testrun_checked: usize,
    pub elapsed: Duration,
    pub xdp_mode: String,
    pub rules_ipt: String,
    pub rules_fw: String,
    /// "legacy" or "nft".
    pub iptables: String,
}

/// Frames per batch between two barriers (the veth queue holds 256).
const BATCH_FRAMES: usize = 48;
/// Stateful flows run side by side.
const CHUNK_FLOWS: usize = 24;
/// How long to wait for the host's first packet of its flows.
const FIRST_WAIT: Duration = Duration::from_secs(3);
const MAX_HARNESS_MESSAGES: usize = 20;

fn fnv(s: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in s.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

/// Every probe of a case (the stateless ones with their frames, the flows' steps) for `packets`.
pub fn generate(policy: &Policy, packets: usize, seed: u64) -> (Vec<Probe>, Vec<FlowSpec>) {
    let mut g = Gen::new(policy, seed);
    let total: usize = Class::ALL.iter().map(|c| c.weight()).sum();
    let mut probes = Vec::new();
    let mut flows: Vec<FlowSpec> = Vec::new();
    for class in Class::ALL {
        let quota = (packets * class.weight()).div_ceil(total).max(1);
        if class.stateful() {
            for f in g.flows(class, quota) {
                let fi = flows.len();
                for (k, (step, key)) in f.steps.iter().enumerate() {
                    probes.push(Probe {
                        class,
                        v6: f.v6,
                        key: *key,
                        traits: step.traits(),
                        what: format!(
                            "{} {}; step {}: {}",
                            if f.v6 { "v6" } else { "v4" },
                            f.label,
                            k + 1,
                            step.describe()
                        ),
                        body: Body::Flow { flow: fi, step: k },
                    });
                }
                flows.push(f);
            }
        } else {
            for i in 0..quota {
                probes.push(g.stateless(class, i));
            }
        }
    }
    (probes, flows)
}

struct Run<'a> {
    hosts: [Host; 2],
    outcomes: &'a mut [Outcome],
    harness: Vec<String>,
    strays: usize,
    frames: [u64; 2],
}

impl Run<'_> {
    fn problem(&mut self, msg: String) {
        if self.harness.len() < MAX_HARNESS_MESSAGES {
            self.harness.push(msg);
        }
    }

    /// Count what each host collected against the probes in flight.
    fn record(&mut self, which: usize, c: &Collected, inflight: &HashMap<(bool, u32), usize>) {
        let mut stray = 0;
        for (list, field) in [(&c.pre, 0), (&c.delivered, 1), (&c.xdp, 2)] {
            for k in list {
                let Some(&i) = inflight.get(k) else {
                    stray += 1;
                    continue;
                };
                let o = &mut self.outcomes[i];
                let seen = if which == 0 { &mut o.ipt } else { &mut o.fw };
                match field {
                    0 => seen.pre += 1,
                    1 => seen.delivered += 1,
                    _ => seen.xdp += 1,
                }
            }
        }
        if stray > 0 {
            self.strays += stray;
            let name = self.hosts[which].kind.name();
            self.problem(format!(
                "{stray} observations on the {name} host belong to no probe in flight"
            ));
        }
    }
}

/// Run one case. Nothing is left behind, also on error (the hosts' guards remove the
/// namespaces, fw's pins and the test-run program).
// `w` indexes the two hosts and their per-host state side by side.
#[allow(clippy::needless_range_loop)]
pub fn run_case(case: &Case, opts: &Options) -> anyhow::Result<CaseResult> {
    let start = Instant::now();
    let policy = parse_policy_file(&case.fw_policy)
        .map_err(|e| anyhow::anyhow!("{e}"))
        .with_context(|| format!("case {}", case.name))?;
    let (probes, flows) = generate(&policy, opts.packets, opts.seed ^ fnv(&case.name));
    let mut outcomes = vec![Outcome::default(); probes.len()];

    let _pin = CpuPin::first()?;
    let dir = TempDir::new(&format!("diff-{}", case.name));
    let setup = IptablesSetup {
        v4: &case.ipt_v4,
        v6: &case.ipt_v6,
        flavour: &opts.iptables,
    };
    let ipt = Host::new(Kind::Iptables, &dir, &setup, &case.fw_policy)
        .with_context(|| format!("case {}: the iptables host", case.name))?;
    let fw = Host::new(Kind::Fw, &dir, &setup, &case.fw_policy)
        .with_context(|| format!("case {}: the fw host", case.name))?;
    let xdp_mode = fw.xdp_mode.clone();
    let rules_ipt = ipt.describe_rules(&opts.iptables);
    let rules_fw = fw.describe_rules(&opts.iptables);
    let kf = if opts.testrun {
        Some(load_testrun(&policy)?)
    } else {
        None
    };
    let mut run = Run {
        hosts: [ipt, fw],
        outcomes: &mut outcomes,
        harness: Vec::new(),
        strays: 0,
        frames: [0, 0],
    };
    let drops_before = [run.hosts[0].wire_drops()?, run.hosts[1].wire_drops()?];

    // Stateless probes: the same bytes to both hosts, in batches between barriers.
    let stateless: Vec<usize> = (0..probes.len())
        .filter(|&i| matches!(probes[i].body, Body::Frames(_)))
        .collect();
    let mut testrun_checked = 0;
    let mut testrun_bad = 0;
    let mut i = 0;
    let mut last_progress = Instant::now();
    while i < stateless.len() {
        let mut batch = Vec::new();
        let mut nframes = 0;
        while i < stateless.len() && (batch.is_empty() || nframes < BATCH_FRAMES) {
            let Body::Frames(f) = &probes[stateless[i]].body else {
                unreachable!()
            };
            nframes += f.len();
            batch.push(stateless[i]);
            i += 1;
        }
        let mut inflight = HashMap::new();
        for &p in &batch {
            inflight.insert((probes[p].v6, probes[p].key), p);
        }
        for (w, host) in run.hosts.iter().enumerate() {
            for &p in &batch {
                let Body::Frames(fs) = &probes[p].body else {
                    unreachable!()
                };
                for f in fs {
                    host.send(f)?;
                    run.frames[w] += 1;
                }
            }
        }
        for w in 0..2 {
            let c = run.hosts[w].sync()?;
            run.record(w, &c, &inflight);
        }
        for &p in &batch {
            let Body::Frames(fs) = &probes[p].body else {
                unreachable!()
            };
            run.outcomes[p].frames = fs.len() as u16;
            if let Some(kf) = &kf {
                let mut kernel_pass = 0u16;
                let mut reason: Option<&'static str> = None;
                let mut dropped = false;
                for f in fs {
                    if kf.run(f).context("BPF_PROG_TEST_RUN")? == XDP_PASS {
                        kernel_pass += 1;
                    }
                    let d = kf.decide_user(f);
                    if !dropped {
                        reason = Some(match d.why() {
                            Some(r) => r.name(),
                            None => "allow rule",
                        });
                        dropped = !d.pass;
                    }
                }
                let o = &mut run.outcomes[p];
                o.testrun_pass = Some(kernel_pass);
                o.fw_reason = reason;
                testrun_checked += 1;
                if kernel_pass != o.fw.xdp {
                    testrun_bad += 1;
                    if testrun_bad <= 5 {
                        let msg = format!(
                            "the XDP verdict on the wire differs from BPF_PROG_TEST_RUN: {} frames passed on the wire, {kernel_pass} in the test run: {}",
                            o.fw.xdp, probes[p].what
                        );
                        run.problem(msg);
                    }
                }
            }
        }
        if opts.progress && last_progress.elapsed() > Duration::from_secs(5) {
            last_progress = Instant::now();
            eprintln!("[{}] {}/{} stateless probes", case.name, i, stateless.len());
        }
    }
    if testrun_bad > 5 {
        run.problem(format!(
            "... {testrun_bad} probes in all where the wire and the test run disagree"
        ));
    }

    // Stateful flows, a chunk at a time.
    let mut probe_of: HashMap<(usize, usize), usize> = HashMap::new();
    for (pi, p) in probes.iter().enumerate() {
        if let Body::Flow { flow, step } = p.body {
            probe_of.insert((flow, step), pi);
        }
    }
    let mut not_ready = 0;
    for (ci, chunk) in (0..flows.len())
        .collect::<Vec<_>>()
        .chunks(CHUNK_FLOWS)
        .enumerate()
    {
        let specs: Vec<&FlowSpec> = chunk.iter().map(|&f| &flows[f]).collect();
        let mut rts: [Vec<FlowRt>; 2] = [Vec::new(), Vec::new()];
        let mut listeners = [Vec::new(), Vec::new()];
        for w in 0..2 {
            let ns = &run.hosts[w].ns;
            listeners[w] = ns
                .enter(|| listen(&specs))
                .with_context(|| format!("listening sockets in {}", ns.name()))?;
            rts[w] = ns
                .enter(|| {
                    specs
                        .iter()
                        .map(|f| f.open())
                        .collect::<std::io::Result<Vec<_>>>()
                })
                .with_context(|| format!("opening the host's flows in {}", ns.name()))?;
        }
        // The host's first packets (SYN, datagram, echo request).
        for w in 0..2 {
            let deadline = Instant::now() + FIRST_WAIT;
            loop {
                let c = run.hosts[w].sync()?;
                learn(&specs, &mut rts[w], &c);
                if specs.iter().zip(&rts[w]).all(|(f, rt)| f.ready(rt))
                    || Instant::now() >= deadline
                {
                    break;
                }
                std::thread::sleep(Duration::from_millis(5));
            }
            for (f, rt) in specs.iter().zip(&rts[w]) {
                if !f.ready(rt) {
                    not_ready += 1;
                    if not_ready <= 5 {
                        let msg = format!(
                            "the {} host's first packet of a flow was not seen: {}",
                            run.hosts[w].kind.name(),
                            f.label
                        );
                        run.problem(msg);
                    }
                }
            }
        }
        let steps = specs.iter().map(|f| f.steps.len()).max().unwrap_or(0);
        for k in 0..steps {
            let mut inflight = HashMap::new();
            for (&fi, f) in chunk.iter().zip(&specs) {
                if k < f.steps.len() {
                    inflight.insert((f.v6, f.steps[k].1), probe_of[&(fi, k)]);
                }
            }
            for w in 0..2 {
                for ((&fi, f), rt) in chunk.iter().zip(&specs).zip(rts[w].iter_mut()) {
                    if k >= f.steps.len() {
                        continue;
                    }
                    let fs = f.frames(rt, k);
                    if w == 1 {
                        run.outcomes[probe_of[&(fi, k)]].frames = fs.len() as u16;
                    }
                    for fr in &fs {
                        run.hosts[w].send(fr)?;
                        run.frames[w] += 1;
                    }
                }
            }
            for w in 0..2 {
                let c = run.hosts[w].sync()?;
                run.record(w, &c, &inflight);
                learn(&specs, &mut rts[w], &c);
            }
        }
        drop(listeners);
        drop(rts);
        if opts.progress && last_progress.elapsed() > Duration::from_secs(5) {
            last_progress = Instant::now();
            eprintln!(
                "[{}] {}/{} flows",
                case.name,
                (ci + 1) * CHUNK_FLOWS,
                flows.len()
            );
        }
    }
    if not_ready > 5 {
        run.problem(format!(
            "... {not_ready} flows in all whose first packet was not seen"
        ));
    }
    for w in 0..2 {
        let d = run.hosts[w].wire_drops()?.saturating_sub(drops_before[w]);
        if d > 0 {
            let name = run.hosts[w].kind.name();
            run.problem(format!(
                "{d} frames were dropped on the way to the {name} host (full veth queue): the run is not valid"
            ));
        }
    }
    let Run {
        hosts,
        harness,
        frames,
        ..
    } = run;
    drop(kf);
    drop(hosts);
    Ok(CaseResult {
        case: case.clone(),
        policy,
        probes,
        outcomes,
        flows,
        frames,
        harness,
        testrun_checked,
        elapsed: start.elapsed(),
        xdp_mode,
        rules_ipt,
        rules_fw,
        iptables: opts.iptables.clone(),
    })
}

/// Whether an error is BPF_PROG_LOAD's EAGAIN: the verifier gave up because the loading
/// thread had a signal pending (it happens now and then when several programs load at once);
/// libbpf retries those, and so does this.
pub fn is_eagain(e: &anyhow::Error) -> bool {
    format!("{e:#}").contains("os error 11")
}

fn load_testrun(policy: &Policy) -> anyhow::Result<KernelFilter> {
    let mut attempt = 1;
    loop {
        match KernelFilter::load(policy) {
            Ok(k) => return Ok(k),
            Err(e) if attempt < 5 && is_eagain(&e) => {
                attempt += 1;
                std::thread::sleep(Duration::from_millis(50));
            }
            Err(e) => return Err(e.context("loading fw for BPF_PROG_TEST_RUN")),
        }
    }
}

fn learn(specs: &[&FlowSpec], rts: &mut [FlowRt], c: &Collected) {
    for f in &c.sent {
        let Some((seen, ip)) = frames::parse_sent(f) else {
            continue;
        };
        for (spec, rt) in specs.iter().zip(rts.iter_mut()) {
            if spec.learn(rt, &seen, ip) {
                break;
            }
        }
    }
}
