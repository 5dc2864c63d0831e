//! Measurement (not a pass/fail test; run with `--ignored --nocapture`): what one hash lookup
//! costs by key size (fw's 40-byte FlowKey vs a 16-byte IPv4 key), map kind (LRU vs plain
//! hash), hit or miss, and what the clock read on a hit costs, as ns above the floor
//! (`bench_drop`) in the same run, interleaved, medians of rounds. The numbers behind the
//! connection-state path's shape (issue 12.6).

use anyhow::Context as _;
use aya::{
    Ebpf, EbpfLoader, TestRunOptions,
    maps::{HashMap, MapData, ProgramArray},
    programs::{TestRun as _, Xdp},
};
use fw_common::{frame::PacketSpec, tcp::ACK};

const REPEAT: u32 = 1_000_000;
const ROUNDS: usize = 7;
const FILL: u32 = 10_000;
const PROGS: [&str; 8] = [
    "lk_lru40",
    "lk_lru16",
    "lk_hash40",
    "lk_hash16",
    "lk_lru40x2",
    "lk_clock",
    "lk_call",
    "lk_tail",
];

fn frame(sport: u16) -> Vec<u8> {
    PacketSpec::tcp("198.51.100.7", "192.0.2.1", sport, 80, ACK)
        .seq_ack(1, 1)
        .build()
}

/// The keys `bench_lookup` builds from `f` (see key40/key16 there).
fn keys(f: &[u8]) -> ([u32; 10], [u32; 4]) {
    let w = |i: usize| u32::from_ne_bytes(f[14 + 4 * i..18 + 4 * i].try_into().unwrap());
    (
        [w(3), 0, 0, 0, w(4), 0, 0, 0, w(5), 0x0406],
        [w(3), w(4), w(5), 0x0406],
    )
}

fn fill(e: &mut Ebpf, hit: &[u8]) -> anyhow::Result<()> {
    let mut frames: Vec<Vec<u8>> = (0..FILL).map(|i| frame(1000 + i as u16)).collect();
    frames.push(hit.to_vec());
    {
        let mut m: HashMap<&mut MapData, [u32; 10], [u64; 2]> =
            HashMap::try_from(e.map_mut("LK_LRU40").context("LK_LRU40")?)?;
        for f in &frames {
            m.insert(keys(f).0, [1, 2], 0)?;
        }
    }
    {
        let mut m: HashMap<&mut MapData, [u32; 4], [u64; 2]> =
            HashMap::try_from(e.map_mut("LK_LRU16").context("LK_LRU16")?)?;
        for f in &frames {
            m.insert(keys(f).1, [1, 2], 0)?;
        }
    }
    {
        let mut m: HashMap<&mut MapData, [u32; 10], [u64; 2]> =
            HashMap::try_from(e.map_mut("LK_HASH40").context("LK_HASH40")?)?;
        for f in &frames {
            m.insert(keys(f).0, [1, 2], 0)?;
        }
    }
    let mut m: HashMap<&mut MapData, [u32; 4], [u64; 2]> =
        HashMap::try_from(e.map_mut("LK_HASH16").context("LK_HASH16")?)?;
    for f in &frames {
        m.insert(keys(f).1, [1, 2], 0)?;
    }
    Ok(())
}

fn ns(e: &Ebpf, prog: &str, f: &[u8]) -> anyhow::Result<(u32, f64)> {
    run(e.program(prog).context("program")?.try_into()?, f)
}

fn run(p: &Xdp, f: &[u8]) -> anyhow::Result<(u32, f64)> {
    let r = p.test_run(TestRunOptions {
        data_in: Some(f),
        repeat: REPEAT,
        ..Default::default()
    })?;
    Ok((r.return_value, r.duration.as_nanos() as f64))
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

#[test]
#[ignore = "a measurement, not a check: run with --ignored --nocapture"]
fn one_lookup_costs_by_key_size_and_map_kind() -> anyhow::Result<()> {
    fw_testrun::require_root();
    let floor = fw_bench::lab::DropProg::load()?;
    let mut e = EbpfLoader::new().load(fw_bench::programs::BENCH_LOOKUP)?;
    for name in PROGS {
        let p: &mut Xdp = e.program_mut(name).context("program")?.try_into()?;
        p.load()?;
    }
    {
        let p: &mut Xdp = e
            .program_mut("lk_tail_to")
            .context("lk_tail_to")?
            .try_into()?;
        p.load()?;
    }
    let to: &Xdp = e.program("lk_tail_to").context("lk_tail_to")?.try_into()?;
    let to = to.fd()?.try_clone()?;
    let mut progs = ProgramArray::try_from(e.map_mut("LK_PROGS").context("LK_PROGS")?)?;
    progs.set(0, &to, 0)?;
    let hit = frame(50_000);
    let miss = frame(60_000);
    fill(&mut e, &hit)?;
    let cases = [("hit", &hit), ("miss", &miss)];
    let mut diffs = vec![vec![Vec::new(); cases.len()]; PROGS.len()];
    let mut verdicts = vec![vec![0u32; cases.len()]; PROGS.len()];
    for _ in 0..ROUNDS {
        for (ci, (_, f)) in cases.iter().enumerate() {
            let (_, fl) = run(floor.xdp()?, f)?;
            for (pi, name) in PROGS.iter().enumerate() {
                let (ret, t) = ns(&e, name, f)?;
                diffs[pi][ci].push(t - fl);
                verdicts[pi][ci] = ret;
            }
        }
    }
    println!("\nns above the floor, median of {ROUNDS} rounds ({FILL} entries per map)");
    for (pi, name) in PROGS.iter().enumerate() {
        print!("{name:<12}");
        for (ci, (case, _)) in cases.iter().enumerate() {
            let v = if verdicts[pi][ci] == 2 {
                "PASS"
            } else {
                "DROP"
            };
            print!(
                "  {case}: {:>6.1} {v}",
                median(std::mem::take(&mut diffs[pi][ci]))
            );
        }
        println!();
    }
    Ok(())
}
