//! Flatness in one fw instance: its block list switched between 1 entry and the largest list,
//! back and forth (1, N, 1, N, 1), with the per-packet cost measured in each phase. Identical
//! instances differ by up to ~15 % in test-run time (where the program and maps land), so
//! comparing instances cannot resolve the target's 10 %; one instance, A-B-A-B-A, can: a drift of
//! the machine shows as a difference between the A phases, an effect of the list's size as B
//! against both neighbours.

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
const ROUNDS: usize = 3;

/// One phase: (ns above the floor per packet, per round), packets as in [`PACKETS`].
fn phase(
    opts: &Opts,
    fw: i32,
    floor: i32,
    frames: &[Vec<u8>],
    applies: &[bool],
) -> anyhow::Result<Vec<Vec<f64>>> {
    let mut out = vec![Vec::new(); frames.len()];
    let cpu = sys::nr_cpus() - 1;
    std::thread::scope(|s| {
        s.spawn(|| -> anyhow::Result<()> {
            let _pin = fw_lab::link::CpuPin::cpu(cpu)?;
            for _ in 0..ROUNDS {
                let f0 = f64::from(test_run(floor, &frames[0], opts.repeat)?.ns);
                let mut got = Vec::new();
                for (j, fr) in frames.iter().enumerate().filter(|(j, _)| applies[*j]) {
                    sys::check_interrupt()?;
                    got.push((j, f64::from(test_run(fw, fr, opts.repeat)?.ns)));
                }
                let f1 = f64::from(test_run(floor, &frames[0], opts.repeat)?.ns);
                for (j, ns) in got {
                    out[j].push(ns - (f0 + f1) / 2.0);
                }
            }
            Ok(())
        })
        .join()
        .map_err(|_| anyhow::anyhow!("block list phase thread panicked"))?
    })?;
    Ok(out)
}

/// A-B-A-B-A for one series; B = `n` entries.
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
    let mut inst = FwInstance::load_sized("blk1", &policy, 1024)?;
    let fd = inst.prog_fd()?;
    let mut floor = DropProg::load()?;
    let floor_fd = floor.prog_fd()?;
    // The short-prefix probe is only in the big feed: measured in B phases, and in A phases
    // (where it passes) only as a reference.
    let applies = [true, false, true];
    let mut held = BlockSet::default();
    let mut phases = Vec::new();
    for (k, set) in [&small, &big, &small, &big, &small].into_iter().enumerate() {
        sys::check_interrupt()?;
        p.step(&format!(
            "block lists, one instance: {} phase {}/5 ({} entries)",
            s.key(),
            k + 1,
            set.v4.len()
        ));
        inst.loaded.maps.flood.sync_blocks(&held, set)?;
        held = set.clone();
        let got = phase(opts, fd, floor_fd, frames, &applies)?;
        let mut ph = json!({"map_entries": set.v4.len(), "form": form(&set.meta)});
        for (j, (key, _)) in PACKETS.iter().enumerate().filter(|(j, _)| applies[*j]) {
            ph[*key] = json!(median(&got[j]));
            ph[format!("{key}_rounds")] = json!(got[j]);
        }
        phases.push(ph);
    }
    drop(floor);
    let mut growth = json!({});
    for (key, _) in PACKETS
        .iter()
        .zip(applies)
        .filter(|(_, a)| *a)
        .map(|(k, _)| k)
    {
        let at = |i: usize| phases[i][*key].as_f64().unwrap_or(f64::NAN);
        let smalls = [at(0), at(2), at(4)];
        let a = median(&smalls);
        let b = median(&[at(1), at(3)]);
        let spread = smalls.iter().copied().fold(f64::NAN, f64::max)
            - smalls.iter().copied().fold(f64::NAN, f64::min);
        growth[*key] = json!({
            "small_ns": a,
            "big_ns": b,
            "growth": b / a - 1.0,
            "small_spread_ns": spread,
        });
    }
    Ok(json!({"series": s.key(), "entries": n, "phases": phases, "growth": growth}))
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
