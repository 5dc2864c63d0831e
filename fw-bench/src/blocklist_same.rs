//! Flatness, measured as a crossover: two fw instances X and Y, one holding a 1-entry list and
//! the other the largest list, measured interleaved; then the lists are swapped and they are
//! measured again. Identical instances differ by up to ~15 % in test-run time (where the program
//! and maps land in memory) and the shared machine drifts by more than that within a minute,
//! both more than the target's 10 %. Within a phase X and Y are interleaved round by round, so
//! drift cancels in their difference; across the swap each instance is once small and once big,
//! so placement cancels in the mean of the two differences.

use serde_json::{Value, json};

use super::{
    Opts, Progress,
    blocklist::{DPORT, PACKETS, Series, block_set, expanded, form, list},
    frames::syn_template,
    lab::{DropProg, FwInstance, fw_seed_policy},
    stats::median,
    sys::{self, test_run},
};
use fw_common::tcp::SYN;
use fw_policy::blocks::BlockSet;

/// Rounds per phase.
const ROUNDS: usize = 5;
/// The packets compared: a blocked /32 and a source on no list (the short-prefix probe is only
/// in the big feed).
const KEYS: [usize; 2] = [0, 2];

/// One phase: per packet of [`KEYS`], per round, ns above the round's floor of (X, Y).
fn phase(
    opts: &Opts,
    fds: [i32; 2],
    floor: i32,
    frames: &[Vec<u8>],
) -> anyhow::Result<Vec<Vec<[f64; 2]>>> {
    let mut out = vec![Vec::new(); KEYS.len()];
    let cpu = sys::nr_cpus() - 1;
    std::thread::scope(|s| {
        s.spawn(|| -> anyhow::Result<()> {
            let _pin = fw_lab::link::CpuPin::cpu(cpu)?;
            for round in 0..ROUNDS {
                let f0 = f64::from(test_run(floor, &frames[0], opts.repeat)?.ns);
                let mut got = vec![[0f64; 2]; KEYS.len()];
                for (i, &j) in KEYS.iter().enumerate() {
                    for k in 0..2 {
                        // Alternate which instance goes first.
                        let x = (k + round) % 2;
                        sys::check_interrupt()?;
                        got[i][x] = f64::from(test_run(fds[x], &frames[j], opts.repeat)?.ns);
                    }
                }
                let f1 = f64::from(test_run(floor, &frames[0], opts.repeat)?.ns);
                let fl = (f0 + f1) / 2.0;
                for (i, g) in got.into_iter().enumerate() {
                    out[i].push([g[0] - fl, g[1] - fl]);
                }
            }
            Ok(())
        })
        .join()
        .map_err(|_| anyhow::anyhow!("block list phase thread panicked"))?
    })?;
    Ok(out)
}

/// The crossover for one series; big = `n` entries.
fn series(
    opts: &Opts,
    p: &mut Progress,
    s: Series,
    n: usize,
    frames: &[Vec<u8>],
) -> anyhow::Result<Value> {
    let policy = fw_seed_policy()?;
    let small = block_set(&list(s.shape(), 1), &policy)?;
    let mut big = block_set(&list(s.shape(), n), &policy)?;
    if s == Series::FeedExpanded {
        big = expanded(&big).ok_or_else(|| anyhow::anyhow!("the feed does not expand"))?;
    }
    let mut x = FwInstance::load_sized("blk1", &policy, 1024)?;
    let mut y = FwInstance::load_sized("blk1", &policy, 1024)?;
    let fds = [x.prog_fd()?, y.prog_fd()?];
    let mut floor = DropProg::load()?;
    let floor_fd = floor.prog_fd()?;
    let empty = BlockSet::default();
    // Phase 1: X small, Y big; phase 2: swapped (each instance's old list goes as the new one
    // comes in, the product's replacement).
    p.step(&format!("block lists, crossover: {} loading", s.key()));
    x.loaded.maps.flood.sync_blocks(&empty, &small)?;
    y.loaded.maps.flood.sync_blocks(&empty, &big)?;
    p.step(&format!("block lists, crossover: {} phase 1/2", s.key()));
    let one = phase(opts, fds, floor_fd, frames)?;
    sys::check_interrupt()?;
    x.loaded.maps.flood.sync_blocks(&small, &big)?;
    y.loaded.maps.flood.sync_blocks(&big, &small)?;
    p.step(&format!("block lists, crossover: {} phase 2/2", s.key()));
    let two = phase(opts, fds, floor_fd, frames)?;
    drop(floor);
    let mut out = json!({"series": s.key(), "entries": n, "map_entries": big.v4.len(), "form": form(&big.meta)});
    for (i, &j) in KEYS.iter().enumerate() {
        let key = PACKETS[j].0;
        // big − small per round: Y − X in phase 1, X − Y in phase 2.
        let diffs: Vec<f64> = one[i]
            .iter()
            .map(|r| r[1] - r[0])
            .chain(two[i].iter().map(|r| r[0] - r[1]))
            .collect();
        let smalls: Vec<f64> = one[i]
            .iter()
            .map(|r| r[0])
            .chain(two[i].iter().map(|r| r[1]))
            .collect();
        let bigs: Vec<f64> = one[i]
            .iter()
            .map(|r| r[1])
            .chain(two[i].iter().map(|r| r[0]))
            .collect();
        // Per phase, then the mean of the two phases: placement cancels.
        let d1 = median(&diffs[..ROUNDS]);
        let d2 = median(&diffs[ROUNDS..]);
        let small_ns = median(&smalls);
        out[key] = json!({
            "small_ns": small_ns,
            "big_ns": median(&bigs),
            "diff_ns": (d1 + d2) / 2.0,
            "diff_phase_ns": [d1, d2],
            "growth": (d1 + d2) / 2.0 / small_ns,
            "rounds_x_y": [one[i], two[i]],
        });
    }
    Ok(out)
}

pub fn run(opts: &Opts, p: &mut Progress, n: usize) -> anyhow::Result<Value> {
    let (mac, mac2) = ([2u8, 0, 0, 0, 0, 1], [2u8, 0, 0, 0, 0, 2]);
    let frames: Vec<Vec<u8>> = PACKETS
        .iter()
        .map(|(_, src)| syn_template(src, 40000, DPORT, SYN, &mac, &mac2))
        .collect();
    let mut out = Vec::new();
    for s in Series::ALL {
        out.push(series(opts, p, s, n, &frames)?);
    }
    Ok(json!(out))
}
