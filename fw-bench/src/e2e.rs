//! Part 2, end-to-end drop rate: 60-byte floods from one namespace into another over a veth, one pair
//! per filter, measured in interleaved rounds (flood by flood, filter by filter).

use std::time::Duration;

use serde_json::{Value, json};

use super::{
    Opts, Progress,
    flood::flood,
    frames::Flood,
    lab::{Pair, Setup},
    stats::median,
    sys,
};

/// The filters compared, in table order.
pub const SETUPS: [Setup; 8] = [
    Setup::None,
    Setup::IptSeed,
    Setup::IptRaw,
    Setup::NftSeed,
    Setup::XdpFilter,
    Setup::Fw,
    Setup::Drop,
    Setup::Pass,
];

/// Load one generator per flood on every pair (index = flood index).
pub fn load_generators(pairs: &mut [Pair]) -> anyhow::Result<()> {
    for pair in pairs.iter_mut().filter(|p| p.setup != Setup::Pass) {
        for f in Flood::ALL {
            let t = f.templates(&pair.r_mac, &pair.s_mac);
            pair.add_generator(f.key(), &t)?;
        }
    }
    Ok(())
}

pub fn run(opts: &Opts, p: &mut Progress, all: &mut [Pair]) -> anyhow::Result<Value> {
    // The XDP_PASS pair is only there for the allowed-traffic test.
    let mut pairs: Vec<&mut Pair> = all.iter_mut().filter(|p| p.setup != Setup::Pass).collect();
    let cpu = sys::nr_cpus() - 1;
    let dur = opts.flood_time;
    let warm = Duration::from_millis(50);
    // pps[flood][pair] per round.
    let mut pps = vec![vec![Vec::new(); pairs.len()]; Flood::ALL.len()];
    let mut delivered = vec![vec![Vec::new(); pairs.len()]; Flood::ALL.len()];
    let mut kns = vec![vec![Vec::new(); pairs.len()]; Flood::ALL.len()];
    for round in 0..opts.rounds {
        for (fi, f) in Flood::ALL.iter().enumerate() {
            p.step(&format!(
                "drop rate, round {}/{}: {}",
                round + 1,
                opts.rounds,
                f.name()
            ));
            for k in 0..pairs.len() {
                let pi = (k + round + fi) % pairs.len();
                let gi = pairs[pi]
                    .generator_index(f.key())
                    .expect("generator loaded");
                let s = flood(pairs[pi], gi, dur, warm, cpu, None)?;
                pps[fi][pi].push(s.pps());
                kns[fi][pi].push(s.kernel_ns);
                delivered[fi][pi].push(if s.sent > 0 {
                    s.received as f64 / s.sent as f64
                } else {
                    0.0
                });
            }
        }
    }
    let idx = |s: Setup| pairs.iter().position(|p| p.setup == s);
    let mut floods = Vec::new();
    for (fi, f) in Flood::ALL.iter().enumerate() {
        let med: Vec<f64> = pps[fi].iter().map(|v| median(v)).collect();
        let ipt = idx(Setup::IptSeed).map(|i| med[i]);
        let drop = idx(Setup::Drop).map(|i| med[i]);
        let xf = idx(Setup::XdpFilter).map(|i| med[i]);
        let kmed: Vec<f64> = kns[fi].iter().map(|v| median(v)).collect();
        let kdrop = idx(Setup::Drop).map(|i| kmed[i]);
        let mut rows = Vec::new();
        for (pi, pair) in pairs.iter().enumerate() {
            let m = med[pi];
            let k = kmed[pi];
            rows.push(json!({
                "setup": pair.setup.key(),
                "name": pair.setup.name(),
                "pps": m,
                "pps_rounds": pps[fi][pi],
                "delivered_fraction": median(&delivered[fi][pi]),
                "ratio_to_iptables_seed": ipt.map(|i| m / i),
                "ratio_to_xdp_drop": drop.map(|d| m / d),
                "ratio_to_xdp_filter": xf.map(|x| m / x),
                "ns_per_packet": k,
                "ns_per_packet_rounds": kns[fi][pi],
                "ns_above_xdp_drop": kdrop.map(|d| k - d),
            }));
        }
        floods.push(json!({"flood": f.key(), "name": f.name(), "rows": rows}));
    }
    Ok(json!({
        "seconds_per_measurement": dur.as_secs_f64(),
        "rounds": opts.rounds,
        "cpu": cpu,
        "batch": super::flood::BATCH,
        "floods": floods,
    }))
}
