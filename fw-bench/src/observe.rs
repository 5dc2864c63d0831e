//! Part "observe": what the drop log and the capture cost per packet (BPF_PROG_TEST_RUN, ns
//! above the trivial XDP_DROP floor, modes interleaved round by round, medians). Modes:
//! nothing observing (the fast path's one extra flag read), the drop log during a flood (every
//! drop is handed to the observer and suppressed by the token bucket), the drop log with no
//! reader (every drop tries the ring buffer, which is full), and a capture armed for another
//! reason (handed over, not taken).

use fw::obs::{ObsMaps, rate_params};
use fw_common::{Reason, obs::ObsConfig};
use serde_json::{Value, json};

use super::{
    Opts, Progress,
    frames::{self},
    lab::{DropProg, FwInstance},
    stats::median,
    sys::{self, test_run},
};

fn modes() -> Vec<(&'static str, &'static str, ObsConfig)> {
    let (i, _) = rate_params(1, 1);
    vec![
        ("off", "nothing observes (default)", ObsConfig::default()),
        (
            "log_flood",
            "drop log on, rate exhausted (a flood)",
            ObsConfig {
                flags: ObsConfig::LOG_DROPS,
                log_interval_ns: i * 1000,
                log_burst_ns: 0,
                ..Default::default()
            },
        ),
        (
            "log_ring_full",
            "drop log on, no rate limit, ring full (no reader)",
            ObsConfig {
                flags: ObsConfig::LOG_DROPS,
                ..Default::default()
            },
        ),
        (
            "capture_other",
            "capture armed for another reason",
            ObsConfig {
                flags: ObsConfig::CAPTURE_DROPS,
                capture_reasons: 1 << Reason::TcpXmas.slot(),
                ..Default::default()
            },
        ),
    ]
}

/// The `fw_xdp` of another build (`FW_BENCH_BASE_OBJ`: an fw-xdp object from before the
/// observer existed), loaded on the same pinned maps, so "nothing observes" can be compared
/// with "no hook at all" in the same run.
fn load_base(fw: &FwInstance) -> anyhow::Result<Option<aya::Ebpf>> {
    let Some(path) = std::env::var_os("FW_BENCH_BASE_OBJ") else {
        return Ok(None);
    };
    let bytes = std::fs::read(&path)?;
    let mut loader = aya::EbpfLoader::new();
    let pins: Vec<_> = fw_common::maps::ALL_MAPS
        .iter()
        .map(|m| (*m, fw.loaded.paths.map(m)))
        .collect();
    for (name, path) in &pins {
        loader.map_pin_path(name, path.as_path());
    }
    let level: u8 = 0;
    loader.override_global("AYA_LOG_LEVEL", &level, false);
    let mut ebpf = loader.load(&bytes)?;
    let prog: &mut aya::programs::Xdp = ebpf
        .program_mut(fw_common::maps::PROG_XDP)
        .ok_or_else(|| anyhow::anyhow!("no fw_xdp in the base object"))?
        .try_into()?;
    prog.load()?;
    Ok(Some(ebpf))
}

fn prog_fd(ebpf: &aya::Ebpf) -> anyhow::Result<std::os::fd::RawFd> {
    use std::os::fd::{AsFd as _, AsRawFd as _};
    let prog: &aya::programs::Xdp = ebpf
        .program(fw_common::maps::PROG_XDP)
        .ok_or_else(|| anyhow::anyhow!("no fw_xdp"))?
        .try_into()?;
    Ok(prog.fd()?.as_fd().as_raw_fd())
}

pub fn run(opts: &Opts, p: &mut Progress) -> anyhow::Result<Value> {
    let mut fw = FwInstance::load("obs0", &super::lab::fw_seed_policy()?)?;
    let mut floor = DropProg::load()?;
    let floor_fd = floor.prog_fd()?;
    let fw_fd = fw.prog_fd()?;
    let base = load_base(&fw)?;
    let base_fd = base.as_ref().map(prog_fd).transpose()?;
    let mut obs = ObsMaps::open(&fw.loaded.paths)?;
    let classes: Vec<_> = frames::classes()
        .into_iter()
        .filter(|c| ["disallowed_syn", "allowed_syn", "null"].contains(&c.key))
        .collect();
    let modes = modes();
    let cpu = sys::nr_cpus() - 1;
    // samples[mode][class] = fw ns − floor ns of each round; the last row is the base build.
    let mut samples = vec![vec![Vec::new(); classes.len()]; modes.len() + 1];
    let _pin = fw_lab::link::CpuPin::cpu(cpu)?;
    for round in 0..opts.rounds {
        p.step(&format!(
            "observability cost, round {}/{}",
            round + 1,
            opts.rounds
        ));
        for k in 0..modes.len() {
            let mi = (k + round) % modes.len();
            obs.set_config(modes[mi].2)?;
            for (ci, c) in classes.iter().enumerate() {
                sys::check_interrupt()?;
                let f = test_run(floor_fd, &c.frame, opts.repeat)?;
                let r = test_run(fw_fd, &c.frame, opts.repeat)?;
                samples[mi][ci].push(r.ns as f64 - f.ns as f64);
                if mi == 0
                    && let Some(b) = base_fd
                {
                    let r = test_run(b, &c.frame, opts.repeat)?;
                    samples[modes.len()][ci].push(r.ns as f64 - f.ns as f64);
                }
            }
        }
    }
    obs.set_config(ObsConfig::default())?;
    let stats = obs.stats()?;
    let mut rows = Vec::new();
    for (mi, (key, name, _)) in modes.iter().enumerate() {
        let mut row = json!({ "mode": key, "name": name });
        for (ci, c) in classes.iter().enumerate() {
            row[c.key] = json!(median(&samples[mi][ci]));
        }
        rows.push(row);
    }
    if base_fd.is_some() {
        let mut row = json!({ "mode": "base", "name": "the build before the observer (no hook)" });
        for (ci, c) in classes.iter().enumerate() {
            row[c.key] = json!(median(&samples[modes.len()][ci]));
        }
        rows.push(row);
    }
    drop(base);
    Ok(json!({
        "rows": rows,
        "classes": classes.iter().map(|c| c.key).collect::<Vec<_>>(),
        "records": { "log_emitted": stats.log_emitted, "log_suppressed": stats.log_suppressed,
                     "log_lost": stats.log_lost, "capture_emitted": stats.capture_emitted },
    }))
}

pub fn print(v: &Value) {
    println!("\nObservability cost (ns per packet above the XDP_DROP floor, medians):");
    let classes: Vec<&str> = v["classes"]
        .as_array()
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    print!("  {:<52}", "mode");
    for c in &classes {
        print!(" {c:>15}");
    }
    println!();
    for r in v["rows"].as_array().into_iter().flatten() {
        print!("  {:<52}", r["name"].as_str().unwrap_or(""));
        for c in &classes {
            print!(" {:>15.1}", r[*c].as_f64().unwrap_or(f64::NAN));
        }
        println!();
    }
    println!("  records: {}", v["records"]);
}
