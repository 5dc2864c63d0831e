//! Part 4, live updates under load: while a flood runs, switch between two policies many times a
//! second, both ways fw does it — single-element edits of the running generation (`fw allow` /
//! `fw deny`) and a whole inactive generation plus a flip (`fw apply`) — and watch the verdict
//! counters: how long from the start of the update to the first packet judged by the new policy,
//! and whether any packet was judged wrongly.

use std::{
    sync::atomic::{AtomicBool, Ordering},
    time::{Duration, Instant},
};

use fw_common::{
    FlowKey, FlowState, FlowTable, Reason, flow::state, maps::rule_slot, packet::IPPROTO_UDP,
};
use fw_policy::{Cidr, Policy, PortRange, Proto, Rule};
use serde_json::{Value, json};

use super::{
    Opts, Progress,
    flood::{Target, flood_on},
    frames::{finish, syn_template},
    lab::{FwInstance, Pair, RECV_V4, SEND_V4, Setup, fw_seed_policy},
    stats::{median, quantile},
    sys,
};

const T_PORT: u16 = 8080;
const C_PORT: u16 = 2222;
/// Local port of the UDP flow the receiver "opened" (the always-pass class).
const K_LOCAL: u16 = 40001;
const K_REMOTE: u16 = 53;

/// Policies A and B: A allows 8080 from everyone (rule 6) and 2222 from the sender's /24
/// (rule 7); B has neither. Both keep 2222 restricted to 203.0.113.0/24 (rule 8), so in B
/// the sender's 2222 SYNs are "source not allowed", not "default drop".
fn policies() -> anyhow::Result<(Policy, Policy)> {
    let base = fw_seed_policy()?;
    let next = base.next_id();
    let rule = |id: u32, port: u16, from: Vec<Cidr>| Rule {
        id,
        proto: Proto::Tcp,
        ports: PortRange::single(port),
        from,
        comment: None,
    };
    let keep = rule(next + 2, C_PORT, vec![Cidr::V4([203, 0, 113, 0], 24)]);
    let mut a = base.clone();
    a.rules.push(rule(next, T_PORT, Vec::new()));
    a.rules
        .push(rule(next + 1, C_PORT, vec![Cidr::V4([198, 18, 0, 0], 24)]));
    a.rules.push(keep.clone());
    let mut b = base;
    b.rules.push(keep);
    Ok((a, b))
}

fn v4(s: &str) -> [u8; 16] {
    let a: std::net::Ipv4Addr = s.parse().expect("address");
    let mut b = [0u8; 16];
    b[..4].copy_from_slice(&a.octets());
    b
}

/// The four classes, in round-robin order: K (UDP reply to a tracked flow: always passes as
/// ESTABLISHED), N (NULL scan: always dropped), T (SYN to 8080), C (SYN to 2222 from the sender).
fn templates(pair: &Pair) -> Vec<Vec<u8>> {
    let (d, s) = (pair.r_mac, pair.s_mac);
    let mut out = Vec::new();
    for i in 0..16u16 {
        let k = fw_common::frame::PacketSpec::udp(SEND_V4, RECV_V4, K_REMOTE, K_LOCAL).payload(18);
        out.push(finish(k, &d, &s));
        out.push(syn_template(SEND_V4, 20000 + i, 80, 0, &d, &s));
        out.push(syn_template(
            SEND_V4,
            20000 + i,
            T_PORT,
            fw_common::tcp::SYN,
            &d,
            &s,
        ));
        out.push(syn_template(
            SEND_V4,
            20000 + i,
            C_PORT,
            fw_common::tcp::SYN,
            &d,
            &s,
        ));
    }
    out
}

/// Frames with index in [a, b) of class `c` (round robin over 4 classes).
fn class_count(a: u64, b: u64, c: u64) -> u64 {
    let upto = |n: u64| n / 4 + u64::from(n % 4 > c);
    upto(b) - upto(a)
}

struct Slots {
    t_allow: u32,
    c_allow: u32,
}

fn slots(g: u32, a: &Policy) -> Slots {
    let id = |port: u16| {
        a.rules
            .iter()
            .find(|r| {
                r.ports.lo == port
                    && (port == T_PORT || r.from.contains(&Cidr::V4([198, 18, 0, 0], 24)))
            })
            .map(|r| r.id)
            .expect("rule")
    };
    Slots {
        t_allow: rule_slot(g, id(T_PORT)),
        c_allow: rule_slot(g, id(C_PORT)),
    }
}

fn ctr(fw: &FwInstance, slot: u32) -> anyhow::Result<u64> {
    Ok(fw.loaded.maps.counter(slot)?.packets)
}

pub fn run(opts: &Opts, p: &mut Progress) -> anyhow::Result<Value> {
    let (a, b) = policies()?;
    let mut pair = Pair::create(30, Setup::None)?;
    pair.install(Setup::Fw, Some(&a))?;
    {
        let fw = pair.fw.as_mut().expect("fw");
        let key = FlowKey {
            remote: v4(SEND_V4),
            local: v4(RECV_V4),
            remote_port: K_REMOTE,
            local_port: K_LOCAL,
            proto: IPPROTO_UDP,
            family: 4,
            _pad: [0; 2],
        };
        let st = FlowState {
            last_seen: fw::sys::monotonic_coarse_ns(),
            state: state::REPLIED,
            ..Default::default()
        };
        fw.loaded.maps.flow_insert(FlowTable::Out, &key, &st)?;
    }
    let t = templates(&pair);
    let gi = pair.add_generator("live", &t)?;
    let run_for = if opts.quick {
        Duration::from_secs(2)
    } else {
        Duration::from_secs(8)
    };
    let period = Duration::from_millis(50);
    let cpu_flood = sys::nr_cpus() - 1;
    let mut modes = Vec::new();
    for mode in ["edit", "apply"] {
        p.step(&format!(
            "live updates ({}) under a flood, {} per second for {:?}",
            if mode == "edit" {
                "fw allow/deny: single-entry edits"
            } else {
                "fw apply: generation flip"
            },
            1000 / period.as_millis(),
            run_for
        ));
        // Start from A in generation 0 or wherever the last mode left it.
        {
            let fw = pair.fw.as_mut().expect("fw");
            if fw.policy != a {
                fw.apply(&a)?;
            }
        }
        let stop = AtomicBool::new(false);
        let established0 = ctr(pair.fw.as_ref().expect("fw"), Reason::Established.slot())?;
        let null0 = ctr(pair.fw.as_ref().expect("fw"), Reason::TcpNull.slot())?;
        let sent0 = pair.generators[gi].1.sent()?;
        let rx0 = pair.rx_packets()?;
        let (fl, upd) = {
            let target = Target {
                sender: pair.sender.path().to_path_buf(),
                r_if: pair.r_if.clone(),
                ifindex: pair.s_ifindex,
                rx: &mut pair.rx,
                generator: &mut pair.generators[gi].1,
            };
            let fw_part = pair.fw.as_mut().expect("fw");
            std::thread::scope(|s| {
                let h = s.spawn(|| {
                    flood_on(
                        target,
                        run_for + Duration::from_secs(2),
                        Duration::ZERO,
                        cpu_flood,
                        Some(&stop),
                    )
                });
                let r = updater(fw_part, mode, &a, &b, run_for, period);
                stop.store(true, Ordering::SeqCst);
                let f = h
                    .join()
                    .map_err(|_| anyhow::anyhow!("flood thread panicked"));
                (f, r)
            })
        };
        let _ = fl??;
        let upd = upd?;
        std::thread::sleep(Duration::from_millis(100));
        let sent1 = pair.generators[gi].1.sent()?;
        let rx1 = pair.rx_packets()?;
        let fw = pair.fw.as_ref().expect("fw");
        let k_sent = class_count(sent0, sent1, 0);
        let n_sent = class_count(sent0, sent1, 1);
        let k_got = ctr(fw, Reason::Established.slot())? - established0;
        let n_got = ctr(fw, Reason::TcpNull.slot())? - null0;
        let lost = (sent1 - sent0).saturating_sub(rx1 - rx0);
        let mis_k = k_sent.saturating_sub(k_got);
        let mis_n = n_sent.saturating_sub(n_got);
        let mis = upd.stale + if lost == 0 { mis_k + mis_n } else { 0 };
        modes.push(json!({
            "mode": mode,
            "name": if mode == "edit" { "fw allow/deny (edit in place)" } else { "fw apply (generation flip)" },
            "updates": upd.latencies.len(),
            "timeouts": upd.timeouts,
            "call_us_median": median(&upd.calls),
            "latency_us_median": median(&upd.latencies),
            "latency_us_p99": quantile(&upd.latencies, 0.99),
            "latency_us_max": quantile(&upd.latencies, 1.0),
            "misclassified": mis,
            "stale_after_switch": upd.stale,
            "always_pass_dropped": mis_k,
            "always_drop_passed_or_miscounted": mis_n,
            "frames_sent": sent1 - sent0,
            "frames_lost": lost,
        }));
    }
    Ok(json!({
        "method": format!(
            "A flood cycles through four kinds of frames: a UDP reply to a flow the receiver opened (must always pass, \
             counted as ESTABLISHED), a NULL scan (must always drop), a SYN to {T_PORT} (allowed in policy A, not in B) \
             and a SYN to {C_PORT} from the sender (its source allowed in A, not in B). Every {} ms the running filter \
             switches A↔B. *edit*: the single map-element edits `fw allow`/`fw deny` make (PinnedMaps::apply_diff); \
             *apply*: what `fw apply` does (fill the inactive generation, flip one value). Latency: from the start of \
             the update call to the first packet counted under the new verdict (both switched kinds), polled from the \
             other CPU. Misclassified: packets judged by the old verdict after a packet was judged by the new one, plus \
             always-pass packets not passed and always-drop packets not dropped.",
            period.as_millis()
        ),
        "period_ms": period.as_millis() as u64,
        "seconds": run_for.as_secs_f64(),
        "modes": modes,
    }))
}

struct Updates {
    calls: Vec<f64>,
    latencies: Vec<f64>,
    stale: u64,
    timeouts: u64,
}

fn updater(
    fw: &mut FwInstance,
    mode: &str,
    a: &Policy,
    b: &Policy,
    run_for: Duration,
    period: Duration,
) -> anyhow::Result<Updates> {
    let _pin = fw_lab::link::CpuPin::cpu(0)?;
    let mut out = Updates {
        calls: Vec::new(),
        latencies: Vec::new(),
        stale: 0,
        timeouts: 0,
    };
    // Let the flood start.
    sys::sleep(Duration::from_millis(300))?;
    let end = Instant::now() + run_for;
    let mut to_b = true;
    let dd = Reason::DefaultDrop.slot();
    let sna = Reason::SourceNotAllowed.slot();
    while Instant::now() < end {
        sys::check_interrupt()?;
        let next_at = Instant::now() + period;
        let g_old = fw.generation;
        let s_old = slots(g_old, a);
        // Counters of the verdicts that must appear (new) and must stop (old).
        let (new_t, new_c, old_t, old_c, base) = if to_b {
            let base = [ctr(fw, dd)?, ctr(fw, sna)?];
            (dd, sna, s_old.t_allow, s_old.c_allow, base)
        } else {
            (0, 0, dd, sna, [0, 0])
        };
        let t0 = Instant::now();
        match mode {
            "edit" => fw.edit(if to_b { b } else { a })?,
            _ => fw.apply(if to_b { b } else { a })?,
        }
        let call = t0.elapsed();
        out.calls.push(call.as_secs_f64() * 1e6);
        // After the call the new-verdict slots of A are fresh (zeroed by the update itself).
        let (new_t, new_c, base) = if to_b {
            (new_t, new_c, base)
        } else {
            let s_new = slots(fw.generation, a);
            (s_new.t_allow, s_new.c_allow, [0, 0])
        };
        let deadline = t0 + Duration::from_millis(40).max(call * 2);
        let mut seen: Option<(Instant, [u64; 2])> = None;
        while Instant::now() < deadline {
            let nt = ctr(fw, new_t)?;
            let nc = ctr(fw, new_c)?;
            if nt > base[0] && nc > base[1] {
                // Old-verdict counters as of (just after) the first new-verdict packet.
                let ot = ctr(fw, old_t)?;
                let oc = ctr(fw, old_c)?;
                seen = Some((Instant::now(), [ot, oc]));
                break;
            }
        }
        match seen {
            Some((when, old)) => {
                out.latencies.push((when - t0).as_secs_f64() * 1e6);
                // Wait out the period, then any growth of the old verdicts is a stale judgement.
                while Instant::now() + Duration::from_millis(2) < next_at {
                    std::thread::sleep(Duration::from_millis(1));
                }
                let ot = ctr(fw, old_t)?;
                let oc = ctr(fw, old_c)?;
                out.stale += ot.saturating_sub(old[0]) + oc.saturating_sub(old[1]);
            }
            None => out.timeouts += 1,
        }
        while Instant::now() < next_at {
            std::thread::sleep(Duration::from_micros(200));
        }
        to_b = !to_b;
    }
    Ok(out)
}
