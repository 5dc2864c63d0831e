//! Part 1, per-packet program cost with BPF_PROG_TEST_RUN: fw on each packet class next to the
//! trivial XDP_DROP program (the floor: what test-run itself costs) and xdp-filter, interleaved
//! (class by class, program by program, round after round), medians of the rounds.

use std::os::fd::RawFd;

use fw_common::{FlowKey, FlowState, FlowTable, flow::state, packet::IPPROTO_TCP};
use serde_json::{Value, json};

use super::{
    Opts, Progress,
    frames::{self, EST_LOCAL_PORT, EST_REMOTE_PORT},
    lab::{DropProg, FwInstance, RECV_V4, SEND_V4},
    stats::median,
    sys::{self, test_run},
};

/// One program under test.
pub struct Prog {
    pub key: &'static str,
    pub fd: RawFd,
}

/// The flow entry that makes the "established reply" class a reply to a connection the
/// receiver opened.
pub fn insert_established_flow(fw: &mut FwInstance) -> anyhow::Result<()> {
    let v4 = |s: &str| {
        let a: std::net::Ipv4Addr = s.parse().expect("address");
        let mut b = [0u8; 16];
        b[..4].copy_from_slice(&a.octets());
        b
    };
    let key = FlowKey {
        remote: v4(SEND_V4),
        local: v4(RECV_V4),
        remote_port: EST_REMOTE_PORT,
        local_port: EST_LOCAL_PORT,
        proto: IPPROTO_TCP,
        family: 4,
        _pad: [0; 2],
    };
    let st = FlowState {
        last_seen: fw::sys::monotonic_coarse_ns(),
        state: state::ESTABLISHED,
        ..Default::default()
    };
    fw.loaded.maps.flow_insert(FlowTable::Out, &key, &st)?;
    Ok(())
}

pub const VERDICTS: [&str; 5] = ["ABORTED", "DROP", "PASS", "TX", "REDIRECT"];

pub fn verdict(r: u32) -> &'static str {
    VERDICTS.get(r as usize).copied().unwrap_or("?")
}

/// Measure every class on every program; returns the JSON section.
pub fn run(
    opts: &Opts,
    p: &mut Progress,
    fw: &mut FwInstance,
    xdp_filter: Option<RawFd>,
) -> anyhow::Result<Value> {
    insert_established_flow(fw)?;
    let mut floor = DropProg::load()?;
    let mut progs = vec![
        Prog {
            key: "floor",
            fd: floor.prog_fd()?,
        },
        Prog {
            key: "fw",
            fd: fw.prog_fd()?,
        },
    ];
    if let Some(fd) = xdp_filter {
        progs.push(Prog {
            key: "xdp_filter",
            fd,
        });
    }
    let classes = frames::classes();
    let cpu = sys::nr_cpus() - 1;
    let rounds = opts.rounds;
    let repeat = opts.repeat;
    // samples[class][prog] = ns of each round; verdict[class][prog].
    let mut samples = vec![vec![Vec::new(); progs.len()]; classes.len()];
    let mut verdicts = vec![vec![0u32; progs.len()]; classes.len()];
    std::thread::scope(|s| {
        s.spawn(|| -> anyhow::Result<()> {
            let _pin = fw_lab::link::CpuPin::cpu(cpu)?;
            for round in 0..rounds {
                p.step(&format!("per-packet cost, round {}/{rounds}", round + 1));
                for (ci, c) in classes.iter().enumerate() {
                    for k in 0..progs.len() {
                        // Rotate the order so no program always runs right after another.
                        let pi = (k + round + ci) % progs.len();
                        sys::check_interrupt()?;
                        let r = test_run(progs[pi].fd, &c.frame, repeat)?;
                        samples[ci][pi].push(r.ns as f64);
                        verdicts[ci][pi] = r.retval;
                    }
                }
            }
            Ok(())
        })
        .join()
        .map_err(|_| anyhow::anyhow!("cost thread panicked"))?
    })?;
    let mut rows = Vec::new();
    for (ci, c) in classes.iter().enumerate() {
        let floor_s = &samples[ci][0];
        let mut row = json!({
            "class": c.key,
            "name": c.name,
            "bytes": c.frame.len(),
            "floor_ns": median(floor_s),
        });
        for (pi, prog) in progs.iter().enumerate().skip(1) {
            let diffs: Vec<f64> = samples[ci][pi]
                .iter()
                .zip(floor_s)
                .map(|(a, b)| a - b)
                .collect();
            row[format!("{}_ns", prog.key)] = json!(median(&samples[ci][pi]));
            row[format!("{}_above_floor_ns", prog.key)] = json!(median(&diffs));
            row[format!("{}_verdict", prog.key)] = json!(verdict(verdicts[ci][pi]));
            row[format!("{}_samples", prog.key)] = json!(samples[ci][pi]);
        }
        row["floor_samples"] = json!(floor_s);
        rows.push(row);
    }
    Ok(json!({
        "repeat": repeat,
        "rounds": rounds,
        "cpu": cpu,
        "programs": progs.iter().map(|p| p.key).collect::<Vec<_>>(),
        "classes": rows,
    }))
}
