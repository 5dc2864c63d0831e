//! `fw-bench`: the benchmark behind `cargo xtask bench` (issue 6). See docs/benchmarks.md for
//! what it measures and how; every comparison is made inside one run, in interleaved rounds,
//! and reported as medians and ratios (the machines are shared and noisy).

pub mod attack;
pub mod attack_lab;
pub mod attack_txn;
pub mod blocklist;
pub mod blocklist_forms;
pub mod blocklist_load;
pub mod blocklist_report;
pub mod blocklist_same;
pub mod cost;
pub mod e2e;
pub mod flood;
pub mod frames;
pub mod iperf;
pub mod lab;
pub mod live;
pub mod observe;
pub mod programs;
pub mod report;
pub mod report_attack;
pub mod report_plots;
pub mod scale;
pub mod stats;
pub mod sys;

use std::{
    io::Write as _,
    path::PathBuf,
    time::{Duration, Instant},
};

use anyhow::Context as _;
use serde_json::{Value, json};

use lab::{Pair, Setup};

/// How much to measure.
#[derive(Clone, Debug)]
pub struct Opts {
    pub quick: bool,
    pub rounds: usize,
    /// BPF_PROG_TEST_RUN repetitions per measurement.
    pub repeat: u32,
    /// Length of one flood measurement.
    pub flood_time: Duration,
    /// Where results.json, the plots and benchmarks.md go (`<out>/benchmarks.md`,
    /// `<out>/bench/…`).
    pub out: PathBuf,
    /// Sections to run (empty: all): cost, e2e, scale, live, iperf, blocklist, attack.
    pub only: Vec<String>,
}

impl Opts {
    pub fn wants(&self, section: &str) -> bool {
        self.only.is_empty() || self.only.iter().any(|s| s == section)
    }
}

/// Progress lines with the time since the start.
pub struct Progress {
    start: Instant,
}

impl Progress {
    pub fn step(&mut self, what: &str) {
        let t = self.start.elapsed().as_secs_f64();
        eprintln!("[{t:6.1}s] {what}");
        let _ = std::io::stderr().flush();
    }
}

/// What the machine is and how busy it was.
fn machine() -> Value {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .map(|l| l.trim_start_matches([' ', '\t', ':']).to_string())
        .unwrap_or_default();
    let uname = sys::run("uname", &["-r"], Duration::from_secs(5))
        .map(|o| o.stdout.trim().to_string())
        .unwrap_or_default();
    let date = sys::run(
        "date",
        &["-u", "+%Y-%m-%d %H:%M UTC"],
        Duration::from_secs(5),
    )
    .map(|o| o.stdout.trim().to_string())
    .unwrap_or_default();
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let version = |pkg: &str| {
        sys::run(
            "dpkg-query",
            &["-W", "-f", "${Version}", pkg],
            Duration::from_secs(5),
        )
        .map(|o| o.stdout.trim().to_string())
        .unwrap_or_default()
    };
    json!({
        "nproc": sys::nr_cpus(),
        "cpu_model": model,
        "kernel": uname,
        "date": date,
        "loadavg_at_start": load.trim(),
        "packages": {
            "xdp-tools": version("xdp-tools"),
            "iptables": version("iptables"),
            "nftables": version("nftables"),
            "iperf3": version("iperf3"),
        },
    })
}

/// Redo the tables, plots and benchmarks.md from an earlier results.json (no measuring).
pub fn rewrite(opts: &Opts, json: &std::path::Path) -> anyhow::Result<()> {
    let text = std::fs::read_to_string(json).with_context(|| format!("{}", json.display()))?;
    let mut results: Value = serde_json::from_str(&text)?;
    report::targets(&mut results);
    report::print_targets(&results);
    report::write(opts, &results)
}

pub fn run(opts: Opts) -> anyhow::Result<()> {
    sys::install_signal_handlers();
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        anyhow::bail!("fw-bench loads XDP programs and creates namespaces: run it as root");
    }
    fw::paths::ensure_bpffs()?;
    for tool in [
        "ip",
        "nsenter",
        "unshare",
        "iptables-legacy-restore",
        "nft",
        "xdp-filter",
        "iperf3",
    ] {
        if !sys::have(tool) {
            eprintln!(
                "warning: {tool} not found; the parts that need it are skipped (cargo xtask setup installs it)"
            );
        }
    }
    lab::sweep_stale();
    let mut p = Progress {
        start: Instant::now(),
    };
    let busy0 = sys::cpu_ticks();
    let mut results = json!({
        "machine": machine(),
        "mode": if opts.quick { "quick" } else { "full" },
        "rounds": opts.rounds,
        "repeat": opts.repeat,
        "flood_seconds": opts.flood_time.as_secs_f64(),
    });

    let needs_pairs = ["cost", "memory", "e2e", "iperf"]
        .iter()
        .any(|s| opts.wants(s));
    if needs_pairs {
        p.step("setting up one namespace pair per filter");
    }
    let mut pairs = Vec::new();
    for (k, s) in e2e::SETUPS.iter().enumerate().filter(|_| needs_pairs) {
        let skip = match s {
            Setup::IptSeed | Setup::IptRaw => !sys::have("iptables-legacy-restore"),
            Setup::NftSeed => !sys::have("nft"),
            Setup::XdpFilter => !sys::have("xdp-filter"),
            _ => false,
        };
        if skip {
            continue;
        }
        sys::check_interrupt()?;
        pairs.push(
            Pair::create(k as u8, s.clone()).with_context(|| format!("setting up {}", s.name()))?,
        );
    }
    let xf_fd = pairs
        .iter()
        .find_map(|p| p.xdp_filter_prog.as_ref())
        .map(std::os::fd::AsRawFd::as_raw_fd);

    if opts.wants("cost") {
        let mut fw_inst = lab::FwInstance::load("cost0", &lab::fw_seed_policy()?)?;
        results["cost"] = cost::run(&opts, &mut p, &mut fw_inst, xf_fd)?;
        report::print_cost(&results["cost"]);
    }
    if opts.wants("observe") {
        results["observe"] = observe::run(&opts, &mut p)?;
        observe::print(&results["observe"]);
    }
    if opts.wants("memory") || opts.wants("cost") {
        let fw = pairs.iter().find_map(|p| p.fw.as_ref());
        let xf_id = pairs.iter().find_map(|p| p.xdp_filter_id);
        results["memory"] = report::memory_json(fw, xf_id);
    }
    if opts.wants("e2e") {
        e2e::load_generators(&mut pairs)?;
        results["e2e"] = e2e::run(&opts, &mut p, &mut pairs)?;
        report::print_e2e(&results["e2e"]);
    }
    if opts.wants("iperf") && sys::have("iperf3") {
        results["iperf"] = iperf::run(&opts, &mut p, &mut pairs)?;
        report::print_iperf(&results["iperf"]);
    }
    drop(pairs);
    if opts.wants("live") {
        results["live"] = live::run(&opts, &mut p)?;
        report::print_live(&results["live"]);
    }
    if opts.wants("scale") {
        let (scale, mem) = scale::run(&opts, &mut p)?;
        results["scale"] = scale;
        if let Some(m) = mem {
            results["memory"]["largest"] = m;
        }
        report::print_scale(&results["scale"]);
    }
    if opts.wants("blocklist") {
        results["blocklist"] = blocklist::run(&opts, &mut p)?;
        blocklist_report::print(&results["blocklist"]);
    }
    if opts.wants("attack") {
        results["attack"] = attack::run(&opts, &mut p)?;
        report_attack::print(&results["attack"]);
    }
    if results.get("memory").is_some() {
        report::print_memory(&results["memory"]);
    }
    let busy1 = sys::cpu_ticks();
    let total = (busy1.1 - busy0.1).max(1) as f64;
    results["machine"]["cpu_busy_fraction_during_run"] = json!((busy1.0 - busy0.0) as f64 / total);
    results["machine"]["loadavg_at_end"] = json!(
        std::fs::read_to_string("/proc/loadavg")
            .unwrap_or_default()
            .trim()
    );
    results["seconds"] = json!(p.start.elapsed().as_secs_f64());
    report::targets(&mut results);
    report::print_targets(&results);
    report::write(&opts, &results)?;
    p.step(&format!("done; results in {}", opts.out.display()));
    Ok(())
}
