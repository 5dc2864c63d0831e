//! Per-packet cost of the connection-state paths, BPF_PROG_TEST_RUN, several builds side by side
//! in one run (interleaved, medians; the machines are shared and noisy). Not a pass/fail test:
//! it is `#[ignore]`d and prints a table. Run it with
//!
//! ```sh
//! FW_COST_OBJECTS=before=/tmp/fw-xdp-before,after=target/.../out/fw-xdp \
//!   flock /tmp/fw-heavy.lock cargo test -p tests --test kernel_cost -- --ignored --nocapture
//! ```
//!
//! `FW_COST_ONLY=TEXT` keeps the classes whose name contains TEXT (to profile one under `perf
//! record -a`). Without FW_COST_OBJECTS it measures the embedded program alone. `NAME=PATH@PROGRAM` measures
//! another XDP program of the object than `fw_xdp` (e.g. `fw_xdp_linear`, the build for kernels
//! without multi-buffer XDP), so two builds of one object compare in one run. Each object gets the seed
//! policy and the same connection state, made by running the handshakes through its own egress
//! and XDP programs (so objects with other flow-map layouts compare fairly). The floor is
//! `bench_drop` (count in a per-CPU array, return XDP_DROP), as in docs/benchmarks.md.

use std::time::Duration;

use anyhow::Context as _;
use aya::{
    Ebpf, EbpfLoader, TestRunOptions,
    maps::{Array, MapData},
    programs::{SchedClassifier, TestRun as _, Xdp},
};
use fw_common::{
    Config,
    frame::PacketSpec,
    maps::{MAP_ACTIVE, MAP_CONFIG, MAP_PORTS, PROG_EGRESS, PROG_XDP, port_index},
    tcp::{ACK, SYN},
};
use fw_policy::{Compiled, SEED_POLICY, parse_policy};

const HOST: &str = "192.0.2.1";
const PEER: &str = "198.51.100.7";

fn tcp(src: &str, dst: &str, sport: u16, dport: u16, flags: u8, seq: u32, ack: u32) -> Vec<u8> {
    PacketSpec::tcp(src, dst, sport, dport, flags)
        .seq_ack(seq, ack)
        .build()
}

/// The classes of issue 12.6, in the order of the report.
fn classes() -> Vec<(&'static str, Vec<u8>)> {
    vec![
        ("SYN allowed (80)", PacketSpec::syn(PEER, HOST, 80).build()),
        (
            "SYN closed (8080)",
            PacketSpec::syn(PEER, HOST, 8080).build(),
        ),
        (
            "established reply, out table",
            tcp(PEER, HOST, 443, 40000, ACK, 5001, 1001),
        ),
        (
            "established reply, in table",
            tcp(PEER, HOST, 50000, 80, ACK, 7001, 9001),
        ),
        (
            "unrelated ACK, open port (80)",
            tcp(PEER, HOST, 40001, 80, ACK, 1, 1),
        ),
        (
            "unrelated ACK, closed port (8080)",
            tcp(PEER, HOST, 40001, 8080, ACK, 1, 1),
        ),
        (
            "UDP closed port",
            PacketSpec::udp(PEER, HOST, 40000, 9999).build(),
        ),
    ]
}

struct Build {
    name: String,
    ebpf: Ebpf,
    /// The XDP program measured.
    prog: String,
}

fn map<'a>(ebpf: &'a mut Ebpf, name: &str) -> anyhow::Result<Array<&'a mut MapData, u32>> {
    Ok(Array::try_from(
        ebpf.map_mut(name)
            .with_context(|| format!("{name} missing"))?,
    )?)
}

fn xdp<'a>(ebpf: &'a Ebpf, name: &str) -> anyhow::Result<&'a Xdp> {
    Ok(ebpf
        .program(name)
        .with_context(|| format!("{name} missing"))?
        .try_into()?)
}

fn run(prog: &Xdp, frame: &[u8], repeat: u32) -> anyhow::Result<(u32, Duration)> {
    let r = prog.test_run(TestRunOptions {
        data_in: Some(frame),
        repeat,
        ..Default::default()
    })?;
    Ok((r.return_value, r.duration))
}

impl Build {
    /// Load `bytes` (an fw object), write the seed policy, and make the connection state the
    /// classes need through its own programs.
    fn load(name: &str, bytes: &[u8], prog: &str) -> anyhow::Result<Self> {
        // As `fw up` loads it: aya-log compiled out by the verifier (level 0).
        let mut ebpf = EbpfLoader::new()
            .override_global("AYA_LOG_LEVEL", &0u8, false)
            .load(bytes)
            .with_context(|| format!("loading {name}"))?;
        let p: &mut Xdp = ebpf.program_mut(prog).context("xdp")?.try_into()?;
        p.load()?;
        let e: &mut SchedClassifier = ebpf.program_mut(PROG_EGRESS).context("tc")?.try_into()?;
        e.load()?;
        let policy = parse_policy("seed", SEED_POLICY)?;
        let c = Compiled::new(&policy, 0);
        {
            let mut cfg: Array<_, Config> =
                Array::try_from(ebpf.map_mut(MAP_CONFIG).context("config")?)?;
            cfg.set(0, c.config, 0)?;
        }
        {
            let mut ports = map(&mut ebpf, MAP_PORTS)?;
            for (&(proto, port), &v) in &c.ports {
                ports.set(port_index(0, proto, port), v, 0)?;
            }
        }
        map(&mut ebpf, MAP_ACTIVE)?.set(0, 0, 0)?;
        let b = Build {
            name: name.to_string(),
            ebpf,
            prog: prog.to_string(),
        };
        b.egress(&tcp(HOST, PEER, 40000, 443, SYN, 1000, 0))?;
        b.ingress(&tcp(PEER, HOST, 443, 40000, SYN | ACK, 5000, 1001))?;
        b.egress(&tcp(HOST, PEER, 40000, 443, ACK, 1001, 5001))?;
        b.ingress(&PacketSpec::syn(PEER, HOST, 80).build())?;
        b.egress(&tcp(HOST, PEER, 80, 50000, SYN | ACK, 9000, 7001))?;
        b.ingress(&tcp(PEER, HOST, 50000, 80, ACK, 7001, 9001))?;
        Ok(b)
    }

    fn ingress(&self, frame: &[u8]) -> anyhow::Result<u32> {
        Ok(run(xdp(&self.ebpf, &self.prog)?, frame, 1)?.0)
    }

    fn egress(&self, frame: &[u8]) -> anyhow::Result<()> {
        self.egress_timed(frame, 1)?;
        Ok(())
    }

    /// Run the egress recorder `repeat` times on `frame`: the mean time per run.
    fn egress_timed(&self, frame: &[u8], repeat: u32) -> anyhow::Result<Duration> {
        let p: &SchedClassifier = self.ebpf.program(PROG_EGRESS).context("tc")?.try_into()?;
        let r = p.test_run(TestRunOptions {
            data_in: Some(frame),
            repeat,
            ..Default::default()
        })?;
        Ok(r.duration)
    }
}

/// Median and minimum (the least disturbed round, on a shared machine).
fn median_min(v: &mut [f64]) -> (f64, f64) {
    v.sort_by(f64::total_cmp);
    (v[v.len() / 2], v[0])
}

fn pin_to_last_cpu() {
    let cpu = std::thread::available_parallelism().map_or(1, |n| n.get()) - 1;
    // SAFETY: a zeroed cpu_set_t is valid; CPU_SET stays within it.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        libc::sched_setaffinity(0, size_of::<libc::cpu_set_t>(), &set);
    }
}

#[test]
#[ignore = "a measurement, not a check: run with --ignored --nocapture"]
fn connection_state_cost_side_by_side() -> anyhow::Result<()> {
    fw_testrun::require_root();
    let rounds: usize = std::env::var("FW_COST_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(7);
    let repeat: u32 = 1_000_000;
    let mut builds = Vec::new();
    match std::env::var("FW_COST_OBJECTS") {
        Ok(list) => {
            for item in list.split(',') {
                let (name, path) = item.split_once('=').context("NAME=PATH[@PROGRAM]")?;
                let (path, prog) = path.split_once('@').unwrap_or((path, PROG_XDP));
                let bytes = std::fs::read(path).with_context(|| path.to_string())?;
                builds.push(Build::load(name, &bytes, prog)?);
            }
        }
        Err(_) => builds.push(Build::load("embedded", fw::loader::PROGRAM, PROG_XDP)?),
    }
    let floor = fw_bench::lab::DropProg::load()?;
    let floor_prog = floor.xdp()?;
    pin_to_last_cpu();
    // FW_COST_ONLY=TEXT keeps the classes whose name contains TEXT (one class under `perf`).
    let only = std::env::var("FW_COST_ONLY").unwrap_or_default();
    let classes: Vec<_> = classes()
        .into_iter()
        .filter(|(name, _)| name.contains(only.as_str()))
        .collect();
    // ns[class][build] = per-round differences to the floor; verdicts[class][build].
    let n = builds.len();
    let mut diffs = vec![vec![Vec::new(); n]; classes.len()];
    let mut floors = vec![Vec::new(); classes.len()];
    let mut verdicts = vec![vec![0u32; n]; classes.len()];
    for round in 0..rounds {
        for (ci, (_, frame)) in classes.iter().enumerate() {
            let f = run(floor_prog, frame, repeat)?.1.as_nanos() as f64;
            floors[ci].push(f);
            for k in 0..n {
                let bi = (k + round + ci) % n;
                let b = &builds[bi];
                let (ret, d) = run(xdp(&b.ebpf, &b.prog)?, frame, repeat)?;
                diffs[ci][bi].push(d.as_nanos() as f64 - f);
                verdicts[ci][bi] = ret;
            }
        }
    }
    let verdict = |r: u32| match r {
        1 => "DROP",
        2 => "PASS",
        _ => "?",
    };
    print!(
        "\n{:<36} {:>6}",
        "ns above the floor: median (min)", "floor"
    );
    for b in &builds {
        print!(" {:>22}", b.name);
    }
    println!();
    for (ci, (name, _)) in classes.iter().enumerate() {
        print!("{name:<36} {:>6.1}", median_min(&mut floors[ci]).0);
        for bi in 0..n {
            let (med, min) = median_min(&mut diffs[ci][bi]);
            print!(" {med:>7.1} ({min:>6.1}) {:<5}", verdict(verdicts[ci][bi]));
        }
        println!();
    }
    println!("({rounds} rounds of {repeat} runs, interleaved)");
    egress_costs(&builds, rounds)
}

/// This host's own segments through the TC egress recorder (absolute ns per run: TC test runs
/// build an skb, so there is no XDP floor to subtract; compare the columns).
fn egress_costs(builds: &[Build], rounds: usize) -> anyhow::Result<()> {
    let classes = [
        (
            "our ACK, out connection",
            tcp(HOST, PEER, 40000, 443, ACK, 1001, 5001),
        ),
        (
            "our data, in connection",
            PacketSpec::tcp(HOST, PEER, 80, 50000, ACK | fw_common::tcp::PSH)
                .seq_ack(9001, 7001)
                .payload(100)
                .build(),
        ),
        (
            "our RST to an untracked peer",
            tcp(HOST, PEER, 80, 40999, fw_common::tcp::RST | ACK, 1, 1),
        ),
    ];
    let n = builds.len();
    let mut ns = vec![vec![Vec::new(); n]; classes.len()];
    for round in 0..rounds {
        for (ci, (_, frame)) in classes.iter().enumerate() {
            for k in 0..n {
                let bi = (k + round + ci) % n;
                let d = builds[bi].egress_timed(frame, 100_000)?;
                ns[ci][bi].push(d.as_nanos() as f64);
            }
        }
    }
    print!("\n{:<36}", "egress ns per run: median (min)");
    for b in builds {
        print!(" {:>16}", b.name);
    }
    println!();
    for (ci, (name, _)) in classes.iter().enumerate() {
        print!("{name:<36}");
        for v in &mut ns[ci] {
            let (med, min) = median_min(v);
            print!(" {med:>7.1} ({min:>6.1})");
        }
        println!();
    }
    Ok(())
}
