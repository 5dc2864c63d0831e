//! Measurements (not a pass/fail test; run with `--ignored --nocapture`): what block lists and
//! rate limits cost per packet with BPF_PROG_TEST_RUN, as ns above the floor (the trivial
//! XDP_DROP program) in the same run, interleaved, medians of rounds; and the load time and
//! memory of a block list of a million entries, as hash tables per prefix length and as an LPM
//! trie.

use std::{os::fd::AsRawFd as _, time::Instant};

use aya::{TestRunOptions, programs::TestRun as _};
use fw_common::{frame::PacketSpec, maps::MAP_BLOCK_V4, tcp::SYN};
use fw_policy::{Cidr, blocks::BlockSet, parse_policy};
use fw_testrun::{KernelFilter, require_root};

const REPEAT: u32 = 200_000;
const ROUNDS: usize = 5;

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

/// Floor: the trivial XDP_DROP program on the same frame.
struct Floor(fw_bench::lab::DropProg);

impl Floor {
    fn load() -> Self {
        Floor(fw_bench::lab::DropProg::load().expect("bench_drop"))
    }

    fn ns(&self, frame: &[u8]) -> f64 {
        let r = self
            .0
            .xdp()
            .expect("bench_drop")
            .test_run(TestRunOptions {
                data_in: Some(frame),
                repeat: REPEAT,
                ..Default::default()
            })
            .unwrap();
        r.duration.as_nanos() as f64
    }
}

/// Median ns above the floor of each (name, frame) on `f`, interleaved with the floor.
fn measure(f: &KernelFilter, floor: &Floor, cases: &[(&str, Vec<u8>)]) -> Vec<(String, f64, u32)> {
    let mut samples: Vec<Vec<f64>> = vec![Vec::new(); cases.len()];
    let rets: Vec<u32> = cases.iter().map(|(_, fr)| f.run(fr).unwrap()).collect();
    for _ in 0..ROUNDS {
        for (i, (_, fr)) in cases.iter().enumerate() {
            let base = floor.ns(fr);
            let ns = f.time_ns(fr, REPEAT).unwrap();
            samples[i].push(ns as f64 - base);
        }
    }
    cases
        .iter()
        .zip(samples)
        .zip(rets)
        .map(|(((n, _), s), r)| (n.to_string(), median(s), r))
        .collect()
}

fn host_list(n: u32) -> BlockSet {
    let mut s = BlockSet::default();
    for i in 0..n {
        // 100.64.0.0/10 and up: never the test sources below.
        let a = (0x6440_0000u32 + i).to_be_bytes();
        s.add(2, &Cidr::V4(a, 32), 0);
    }
    s.add(2, &"198.51.100.66".parse().unwrap(), 0);
    s.finish();
    s
}

fn map_memory(f: &KernelFilter, name: &str) -> String {
    let md = aya::maps::MapData::from_pin(f.pins_dir().join(name)).unwrap();
    let fd = md.fd().as_fd().as_raw_fd();
    let info = std::fs::read_to_string(format!("/proc/self/fdinfo/{fd}")).unwrap_or_default();
    info.lines()
        .find(|l| l.starts_with("memlock:"))
        .map(|l| l.trim_start_matches("memlock:").trim().to_string())
        .unwrap_or_else(|| "?".into())
}

use std::os::fd::AsFd as _;

#[test]
#[ignore = "measurement: cargo test -p tests --test kernel_flood_cost -- --ignored --nocapture"]
fn flood_costs() {
    require_root();
    let floor = Floor::load();
    let p = parse_policy(
        "cost",
        "[[allow]]\nports = [22]\nlimit = \"1000000/1s\"\n[[allow]]\nports = [80]\n",
    )
    .unwrap();
    let mut f = KernelFilter::load(&p).unwrap();
    let syn80 = PacketSpec::tcp("198.51.100.7", "192.0.2.1", 40000, 80, SYN).build();
    let syn22 = PacketSpec::tcp("198.51.100.7", "192.0.2.1", 40000, 22, SYN).build();
    let blocked = PacketSpec::tcp("198.51.100.66", "192.0.2.1", 40000, 80, SYN).build();
    println!("ns above the XDP_DROP floor (median of {ROUNDS} rounds of {REPEAT} runs)");
    let base = measure(
        &f,
        &floor,
        &[
            ("SYN, rule without limit, empty block list", syn80.clone()),
            (
                "SYN, rule with a limit (per-source bucket hit)",
                syn22.clone(),
            ),
        ],
    );
    for (n, ns, r) in &base {
        println!("  {n:<55} {ns:>7.1} ns  (ret {r})");
    }
    for lpm in [false, true] {
        for n in [1u32, 1_000, 100_000, 1_000_000] {
            let mut set = host_list(n - 1);
            if lpm {
                set.meta = fw_common::block::BlockMeta {
                    lpm4: 1,
                    ..Default::default()
                };
            }
            let t = Instant::now();
            f.set_blocks(set).unwrap();
            let load = t.elapsed();
            let r = measure(
                &f,
                &floor,
                &[
                    ("blocked source", blocked.clone()),
                    ("other source (SYN to an open port)", syn80.clone()),
                ],
            );
            let mem = if lpm {
                map_memory(&f, fw_common::maps::MAP_BLOCK_LPM_V4)
            } else {
                map_memory(&f, MAP_BLOCK_V4)
            };
            for (name, ns, ret) in r {
                println!(
                    "  {:<4} {n:>8} entries: {name:<36} {ns:>7.1} ns (ret {ret})",
                    if lpm { "lpm" } else { "hash" }
                );
            }
            println!(
                "  {:<4} {n:>8} entries: written in {:.2} s (from the previous size), map memlock {mem} bytes",
                if lpm { "lpm" } else { "hash" },
                load.as_secs_f64()
            );
            f.set_blocks(BlockSet::default()).unwrap();
        }
    }
}
