//! Part 8, legitimate traffic under attack (issue 12; the XDP paper's method): web clients
//! make TCP transactions to port 80 while a flood runs at the generator's maximum, for each
//! filter × attack, each in a fresh lab ([`Cell`]). Reports transactions/s, the share that
//! succeeded within 1 s, latency, and the rate relative to the same filter without an attack.
//!
//! CPUs (see [`Cpus`]): CPU 0 runs the generator and both veth ends' receive processing, as
//! threaded NAPI at real-time priority (the filter, the kernel's TCP input, the sink), so the
//! flood goes as fast as the server's receive path disposes of it, in one closed loop as in
//! the drop-rate section, and never overruns the one ring the clients' frames share with it
//! (every setup has an XDP program on the server's veth: XDP_PASS for the non-XDP ones). CPU 1
//! runs the web server's and the clients' threads.

use std::{
    sync::atomic::{AtomicBool, Ordering},
    thread,
    time::Duration,
};

use anyhow::Context as _;
use serde_json::{Value, json};

use super::{
    Opts, Progress,
    attack_lab::{Attack, CLIENTS, Cell, Cpus, Filter, Limits},
    attack_txn::{self, Server, TxnStats},
    flood::{FloodStats, flood},
    stats::quantile,
    sys,
};

/// Clients alone before a measurement (connections the defences then know; fw sees the
/// kernel answer with a cookie; the flood is not yet running).
const WARMUP: Duration = Duration::from_millis(200);
/// The flood alone before the clients' measurement.
const RAMP: Duration = Duration::from_millis(100);
/// Interface indexes 40… (the other sections use 0…7).
const FIRST_PAIR: u8 = 40;

pub fn run(opts: &Opts, p: &mut Progress) -> anyhow::Result<Value> {
    let n = sys::nr_cpus();
    let cpus = Cpus {
        network: 0,
        apps: if n > 1 { 1 } else { 0 },
    };
    let dur = Duration::from_secs_f64(if opts.quick { 0.5 } else { 2.0 });
    let mut k = FIRST_PAIR;
    // The defences are sized from what the clients do without a filter and attack: twice
    // their rate, per source and in all (an operator sizes limits from the peak legitimate
    // load).
    p.step("attack: sizing the limits (no filter, no attack)");
    let base = measure(
        &mut k,
        Filter::None,
        Attack::None,
        placeholder(),
        &cpus,
        dur,
    )
    .context("legitimate traffic without filter or attack")?;
    let rate = base.txn.per_sec();
    let limits = Limits {
        per_source: round_rate(2.0 * rate / CLIENTS as f64),
        total: round_rate(2.0 * rate),
    };
    let mut rows = Vec::new();
    // FWB_ATTACK_FILTERS=key,key: only those filters (a debugging aid).
    let only: Vec<String> = std::env::var("FWB_ATTACK_FILTERS")
        .map(|v| v.split(',').map(str::to_string).collect())
        .unwrap_or_default();
    for filter in Filter::ALL
        .into_iter()
        .filter(|f| only.is_empty() || only.iter().any(|o| o == f.key()))
    {
        if let Some(t) = filter.tool().filter(|t| !sys::have(t)) {
            for attack in Attack::ALL {
                rows.push(cell_json(filter, attack, Err(format!("{t} not installed"))));
            }
            continue;
        }
        let mut baseline = None;
        for attack in Attack::ALL {
            sys::check_interrupt()?;
            p.step(&format!("attack: {} — {}", filter.name(), attack.name()));
            let m = if filter == Filter::None && attack == Attack::None {
                Ok(base.clone())
            } else {
                measure(&mut k, filter, attack, limits, &cpus, dur)
            };
            sys::check_interrupt()?;
            let m = m.map_err(|e| format!("{e:#}"));
            if let Err(e) = &m {
                eprintln!("warning: {} under {}: {e}", filter.name(), attack.name());
            }
            if attack == Attack::None {
                baseline = m.as_ref().ok().map(|m| m.txn.per_sec());
            }
            let mut row = cell_json(filter, attack, m);
            if let (Some(b), Some(r)) = (baseline, row["txn_per_sec"].as_f64()) {
                row["of_no_attack"] = json!(r / b);
            }
            rows.push(row);
        }
    }
    Ok(json!({
        "method": method(dur),
        "seconds_per_cell": dur.as_secs_f64(),
        "clients": CLIENTS,
        "server_threads": attack_txn::SERVERS,
        "timeout_s": attack_txn::TIMEOUT.as_secs_f64(),
        "cpu_generator_and_veth_receive": cpus.network,
        "cpu_server_and_client_threads": cpus.apps,
        "limits": {"per_source_per_sec": limits.per_source, "total_per_sec": limits.total},
        "iptables_defended_rules": super::attack_lab::iptables_defended(limits),
        "rows": rows,
    }))
}

/// Limits for the sizing run (no filter: unused).
fn placeholder() -> Limits {
    Limits {
        per_source: 1,
        total: 1,
    }
}

/// Two significant digits, at least 10.
fn round_rate(r: f64) -> u32 {
    let r = r.max(10.0);
    let mag = 10f64.powf(r.log10().floor() - 1.0);
    ((r / mag).round() * mag) as u32
}

#[derive(Clone)]
struct Measured {
    txn: TxnStats,
    flood: Option<FloodStats>,
    sink_drops: u64,
    served: u64,
    notes: Vec<String>,
}

/// One cell: a fresh lab, the server, the clients' warm-up, then the flood and the clients.
fn measure(
    k: &mut u8,
    filter: Filter,
    attack: Attack,
    limits: Limits,
    cpus: &Cpus,
    dur: Duration,
) -> anyhow::Result<Measured> {
    let id = *k;
    *k = k.wrapping_add(1).max(FIRST_PAIR);
    let mut cell = Cell::create(id, filter, limits, cpus)?;
    let server = Server::start(cell.pair.receiver.path(), cpus.apps)?;
    let sender = cell.pair.sender.path().to_path_buf();
    let warm_stop = AtomicBool::new(false);
    let warm = thread::scope(|s| {
        let _spin = s.spawn(|| keep_busy(cpus.network, &warm_stop));
        let w = attack_txn::run_clients(&sender, cpus.apps, WARMUP);
        warm_stop.store(true, Ordering::Relaxed);
        w
    })?;
    if warm.ok == 0 {
        anyhow::bail!(
            "no transaction succeeded before the attack ({} failed)",
            warm.failed
        );
    }
    let gen_idx = cell.generator(attack)?;
    let stop = AtomicBool::new(false);
    let (txn, flood) = thread::scope(|s| -> anyhow::Result<_> {
        let _spin = s.spawn(|| keep_busy(cpus.network, &stop));
        let pair = &mut cell.pair;
        let flooding = gen_idx.map(|gi| {
            let stop = &stop;
            let long = dur + RAMP + Duration::from_secs(10);
            s.spawn(move || flood(pair, gi, long, Duration::ZERO, cpus.network, Some(stop)))
        });
        if flooding.is_some() {
            thread::sleep(RAMP);
        }
        let txn = attack_txn::run_clients(&sender, cpus.apps, dur);
        stop.store(true, Ordering::Relaxed);
        let flood = match flooding {
            Some(h) => Some(
                h.join()
                    .map_err(|_| anyhow::anyhow!("the generator thread panicked"))??,
            ),
            None => None,
        };
        Ok((txn?, flood))
    })?;
    if std::env::var_os("FWB_DEBUG").is_some() && filter.tool() == Some("iptables-legacy-restore") {
        for t in ["raw", "filter"] {
            if let Ok(o) = cell
                .pair
                .receiver
                .cmd("iptables-legacy")
                .args(["-t", t, "-L", "-v", "-n", "-x"])
                .timeout(Duration::from_secs(10))
                .ok()
            {
                eprintln!("{}", o.stdout);
            }
        }
    }
    Ok(Measured {
        txn,
        flood,
        sink_drops: cell.sink_drops(),
        served: server.served(),
        notes: cell.notes.clone(),
    })
}

/// Spin on `cpu` at the lowest priority (SCHED_IDLE) until `stop`: the CPU of the veths' receive
/// processing never goes idle, with or without a flood. (An idle vCPU of this VM takes long to
/// wake: without this, the clients' frames were slower to process with no attack than under
/// one.) Everything else on that CPU preempts it at once.
fn keep_busy(cpu: usize, stop: &AtomicBool) {
    let Ok(_pin) = fw_lab::link::CpuPin::cpu(cpu) else {
        return;
    };
    let param = libc::sched_param { sched_priority: 0 };
    // SAFETY: changes the calling thread's policy only; `param` is valid.
    if unsafe { libc::sched_setscheduler(0, libc::SCHED_IDLE, &param) } != 0 {
        return;
    }
    while !stop.load(Ordering::Relaxed) && !sys::interrupted() {
        std::hint::spin_loop();
    }
}

fn cell_json(filter: Filter, attack: Attack, m: Result<Measured, String>) -> Value {
    let mut v = json!({
        "filter": filter.key(),
        "filter_name": filter.name(),
        "attack": attack.key(),
        "attack_name": attack.name(),
    });
    match m {
        Err(e) => v["error"] = json!(e),
        Ok(m) => {
            let lat = &m.txn.latency_us;
            v["txn_per_sec"] = json!(m.txn.per_sec());
            v["ok"] = json!(m.txn.ok);
            v["failed"] = json!(m.txn.failed);
            v["success"] = json!(m.txn.success());
            v["seconds"] = json!(m.txn.secs);
            if !lat.is_empty() {
                v["latency_us_p50"] = json!(quantile(lat, 0.5));
                v["latency_us_p99"] = json!(quantile(lat, 0.99));
            }
            if let Some(f) = m.flood {
                v["flood_pps"] = json!(f.pps());
                v["flood_sent"] = json!(f.sent);
                v["flood_ns_per_frame"] = json!(f.kernel_ns);
            }
            v["sink_drops"] = json!(m.sink_drops);
            v["served_total"] = json!(m.served);
            v["sysctls"] = json!(m.notes);
        }
    }
    v
}

fn method(dur: Duration) -> String {
    format!(
        "{CLIENTS} web clients (one thread and one address each, 198.18.0.10–17) make \
         transactions back to back against a server on port 80 ({} threads, backlog 511): a new \
         TCP connection each, a 31-byte request, a 138-byte reply read to the end, then close \
         (SO_LINGER 0, so no TIME_WAIT piles up). A transaction not done within {} s of its \
         connect() fails (a SYN lost to the flood costs the client its 1 s retransmission). \
         Each cell (filter × attack) gets a fresh pair of namespaces, so nothing one flood left \
         (conntrack entries, half-open sockets, fw's tables) colours the next; the clients run \
         {} ms alone first (connections the defences then know), then the flood starts, and \
         {:.1} s later the clients are measured for {:.1} s while it runs. The flood is the \
         bench's generator (BPF_PROG_TEST_RUN with live frames, CPU 0) with a program that \
         rewrites each frame's source address (random in 198.18.0.0/15 outside the lab's /24), \
         port and, for the ACK flood, sequence and acknowledgment numbers, fixing the checksums \
         incrementally. Both veth ends process what they receive in NAPI threads pinned to \
         CPU 0 at real-time priority: the generator runs only while the server's receive path \
         (the filter, the kernel's TCP input) has nothing left to do, so the flood is as fast \
         as that path disposes of it (the closed loop of the drop-rate section: *flood at the \
         server* shows how fast that is), and the one veth ring the clients' frames share with \
         it never overflows. Every setup has an XDP program on the server's veth (XDP_PASS for \
         no filter and iptables), so every frame takes that ring, as on a NIC's queue. A \
         lowest-priority spinner keeps CPU 0 from idling when there is no flood (waking an \
         idle vCPU made the no-attack runs slower than the attacked ones). The web server's \
         and the clients' threads run on CPU 1. The \
         server's answers to spoofed sources go back over the veth and are dropped there by an \
         XDP program (which also lets fw's XDP_TX cookie answers reach the clients). Limits are \
         twice the clients' rate without filter or attack, per client address and in all. \
         *of no attack* is the rate relative to the same filter without an attack. One \
         measurement per cell.",
        attack_txn::SERVERS,
        attack_txn::TIMEOUT.as_secs_f64(),
        WARMUP.as_millis(),
        RAMP.as_secs_f64(),
        dur.as_secs_f64(),
    )
}

#[cfg(test)]
mod tests {
    use super::round_rate;

    #[test]
    fn limits_are_rounded_to_two_significant_digits() {
        assert_eq!(round_rate(1234.0), 1200);
        assert_eq!(round_rate(98.7), 99);
        assert_eq!(round_rate(3.0), 10);
        assert_eq!(round_rate(15_550.0), 16_000);
    }
}
