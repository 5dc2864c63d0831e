//! Block lists on an attached filter: fw put on the receiving veth of a namespace pair by the
//! library call `fw up` makes, each list imported by the calls `fw block import` makes (timed),
//! the block maps' memory, and the drop rate of a flood from blocked sources.

use std::{path::PathBuf, time::Instant};

use anyhow::Context as _;
use aya::maps::MapInfo;
use fw::{
    attach::{EgressMode, Mode},
    filter::{Filter, UpOptions},
    guard::Guard,
    multiprog::Share,
    paths::{IfaceName, IfacePaths},
};
use fw_common::{Reason, tcp::SYN};
use fw_lab::{PrivateDirs, TempDir};
use serde_json::{Value, json};

use super::{
    Opts, Progress,
    blocklist::{DPORT, HIT_LONG, LIST, Shape, feed_text, form, list, points},
    flood::flood,
    frames::syn_template,
    lab::{Pair, Setup, fw_seed_policy},
    stats::median,
    sys,
};

/// fw attached to a pair's receiver through [`Filter::up_at`], with private pin and state
/// directories. Drop takes it down (inside the namespace), then removes the directories and the
/// namespaces, also on error.
struct Attached {
    filter: Option<Filter>,
    dirs: Option<PrivateDirs>,
    pair: Pair,
}

impl Attached {
    fn up() -> anyhow::Result<Self> {
        let pair = Pair::create(30, Setup::None)?;
        let dirs = PrivateDirs::new("fw-bench")?;
        let iface = IfaceName::new(&pair.r_if).map_err(|e| anyhow::anyhow!("{e}"))?;
        let paths = IfacePaths::at(&pair.r_if, dirs.pins.clone(), dirs.state.clone());
        let policy = fw_seed_policy()?;
        let filter = pair.receiver.try_enter(|| -> anyhow::Result<Filter> {
            let ifindex = iface.index().context("the receiver's veth has no index")?;
            let opts = UpOptions {
                mode: Mode::Native,
                egress: EgressMode::Auto,
                policy: Some((&policy, "fw-bench seed+5201")),
                guard: Guard::Force,
                log: false,
                share: Share::Auto,
            };
            let (f, _report, _ebpf) = Filter::up_at(&iface, ifindex, paths, &opts)?;
            Ok(f)
        })??;
        Ok(Attached {
            filter: Some(filter),
            dirs: Some(dirs),
            pair,
        })
    }

    fn filter(&mut self) -> &mut Filter {
        self.filter.as_mut().expect("attached")
    }

    /// memlock bytes of each block map (fdinfo), as [`super::lab::FwInstance::memory`] reads them.
    fn block_memory(&mut self) -> Vec<(String, u64)> {
        let paths = self.filter().paths().clone();
        fw_common::maps::ALL_MAPS
            .iter()
            .filter(|n| n.starts_with("FW_BLOCK") || n.starts_with("FW_BLKLPM"))
            .filter_map(|n| {
                let info = MapInfo::from_pin(paths.map(n)).ok()?;
                let fd = info.fd().ok()?;
                use std::os::fd::{AsFd as _, AsRawFd as _};
                Some((n.to_string(), sys::fd_memlock(fd.as_fd().as_raw_fd())?))
            })
            .collect()
    }
}

impl Drop for Attached {
    fn drop(&mut self) {
        if let Some(f) = self.filter.take() {
            match self.pair.receiver.try_enter(|| f.down()) {
                Ok(Ok(())) => {}
                Ok(Err(e)) => eprintln!("warning: taking the block-list filter down: {e}"),
                Err(e) => eprintln!("warning: entering the receiver to take fw down: {e}"),
            }
        }
        self.dirs.take();
    }
}

/// One list on the attached filter: import it (from empty, then again unchanged), read the
/// memory, flood it.
fn point(
    opts: &Opts,
    at: &mut Attached,
    dir: &TempDir,
    shape: Shape,
    n: usize,
) -> anyhow::Result<Value> {
    let cidrs = list(shape, n);
    let file: PathBuf = dir.write(
        &format!("{}-{n}.txt", shape.key()),
        &feed_text(shape, &cidrs),
    );
    let source = file.display().to_string();
    // From empty: drop the previous list first (untimed).
    if at.filter().block_store()?.lists.contains_key(LIST) {
        at.filter().block_drop_list(LIST)?;
    }
    let t = Instant::now();
    let parsed = fw_policy::blocks::read_feed(&file)?;
    let parse_ms = t.elapsed().as_secs_f64() * 1e3;
    at.filter()
        .block_import(LIST, &source, parsed, Guard::Force)?;
    let import_ms = t.elapsed().as_secs_f64() * 1e3;
    // A feed refreshed without changes: parse, compare, write blocks.json, no map write.
    let t = Instant::now();
    let again = fw_policy::blocks::read_feed(&file)?;
    at.filter()
        .block_import(LIST, &source, again, Guard::Force)?;
    let reimport_ms = t.elapsed().as_secs_f64() * 1e3;
    let meta = at.filter().maps().flood.meta()?;
    let mem = at.block_memory();
    let file_bytes = std::fs::metadata(&file).map(|m| m.len()).unwrap_or(0);
    let _ = std::fs::remove_file(&file);

    let (d, s) = (at.pair.r_mac, at.pair.s_mac);
    let probe: Vec<Vec<u8>> = (0..16)
        .map(|i| syn_template(HIT_LONG, 10000 + i, DPORT, SYN, &d, &s))
        .collect();
    let spread: Vec<Vec<u8>> = super::blocklist_forms::blocked_sources(&cidrs)
        .iter()
        .enumerate()
        .map(|(i, src)| syn_template(src, 10000 + i as u16, DPORT, SYN, &d, &s))
        .collect();
    at.pair.generators.clear();
    at.pair.add_generator("probe", &probe)?;
    at.pair.add_generator("spread", &spread)?;
    let cpu = sys::nr_cpus() - 1;
    let mut out = json!({
        "shape": shape.key(),
        "entries": n,
        "form": form(&meta),
        "file_bytes": file_bytes,
        "parse_ms": parse_ms,
        "import_ms": import_ms,
        "reimport_unchanged_ms": reimport_ms,
        "block_maps_bytes": mem.iter().map(|m| m.1).sum::<u64>(),
        "block_maps": mem.iter().map(|(k, b)| json!({"name": k, "bytes": b})).collect::<Vec<_>>(),
    });
    for (gi, key) in ["probe", "spread"].into_iter().enumerate() {
        let (mut kns, mut pps, mut dropped) = (Vec::new(), Vec::new(), Vec::new());
        for _ in 0..opts.rounds {
            sys::check_interrupt()?;
            let b0 = at.filter().maps().counter(Reason::Blocked.slot())?.packets;
            let s0 = at.pair.generators[gi].1.sent()?;
            let st = flood(
                &mut at.pair,
                gi,
                opts.flood_time,
                std::time::Duration::from_millis(50),
                cpu,
                None,
            )?;
            let b1 = at.filter().maps().counter(Reason::Blocked.slot())?.packets;
            let s1 = at.pair.generators[gi].1.sent()?;
            kns.push(st.kernel_ns);
            pps.push(st.pps());
            // Counted as blocked vs sent over the whole call (warm-up included).
            dropped.push(if s1 > s0 {
                (b1 - b0) as f64 / (s1 - s0) as f64
            } else {
                f64::NAN
            });
        }
        out[format!("{key}_ns_per_packet")] = json!(median(&kns));
        out[format!("{key}_pps")] = json!(median(&pps));
        out[format!("{key}_ns_rounds")] = json!(kns);
        out[format!("{key}_blocked_per_sent")] = json!(median(&dropped));
    }
    Ok(out)
}

pub fn run(opts: &Opts, p: &mut Progress) -> anyhow::Result<Value> {
    p.step("block lists: fw attached in a namespace pair (Filter::up_at)");
    let mut at = Attached::up()?;
    let dir = TempDir::new("fw-bench-blocklists");
    let mut rows = Vec::new();
    for shape in [Shape::Feed, Shape::Hosts] {
        for &n in &points(opts) {
            sys::check_interrupt()?;
            p.step(&format!(
                "block lists: import and flood a {n}-entry {} list",
                shape.key()
            ));
            rows.push(point(opts, &mut at, &dir, shape, n)?);
        }
    }
    at.filter().block_drop_list(LIST)?;
    Ok(
        json!({"rows": rows, "seconds_per_flood": opts.flood_time.as_secs_f64(), "rounds": opts.rounds}),
    )
}
