//! Part 3, scaling: fw's per-packet cost and drop rate with many allowed ports and many source CIDRs
//! in its LPM trie, next to iptables with as many rules and nftables with a set.

use std::time::{Duration, Instant};

use fw_common::tcp::SYN;
use fw_policy::{Cidr, Options, Policy, PortRange, Proto, Rule};
use serde_json::{Value, json};

use super::{
    Opts, Progress,
    cost::Prog,
    flood::flood,
    frames::syn_template,
    lab::{
        DropProg, FwInstance, OTHER_V4, Pair, SEED_PORTS, SEND_V4, Setup, iptables_policy,
        iptables_port_rules, nft_policy,
    },
    stats::{cidrs, median},
    sys::{self, test_run},
};

/// fw's policy with TCP ports 1..=n allowed (one range rule, as a user would write it).
pub fn ports_policy(n: u16) -> Policy {
    Policy {
        options: Options::default(),
        rules: vec![Rule {
            id: 0,
            proto: Proto::Tcp,
            ports: PortRange { lo: 1, hi: n },
            from: Vec::new(),
            comment: None,
        }],
        ..Default::default()
    }
}

/// The seed's ports open to all except 22, which admits only `list`.
pub fn cidr_policy(list: &[([u8; 4], u8)]) -> Policy {
    let mut rules: Vec<Rule> = SEED_PORTS
        .iter()
        .filter(|p| **p != 22)
        .enumerate()
        .map(|(i, p)| Rule {
            id: i as u32,
            proto: Proto::Tcp,
            ports: PortRange::single(*p),
            from: Vec::new(),
            comment: None,
        })
        .collect();
    rules.push(Rule {
        id: rules.len() as u32,
        proto: Proto::Tcp,
        ports: PortRange::single(22),
        from: list.iter().map(|(a, l)| Cidr::V4(*a, *l)).collect(),
        comment: None,
    });
    Policy {
        options: Options::default(),
        rules,
        ..Default::default()
    }
}

fn cidr_str((a, l): &([u8; 4], u8)) -> String {
    format!("{}.{}.{}.{}/{l}", a[0], a[1], a[2], a[3])
}

fn ipt_ports(n: u16) -> String {
    iptables_policy(&iptables_port_rules(1..=n))
}

fn nft_ports(n: u16) -> String {
    let elems: Vec<String> = (1..=n).map(|p| p.to_string()).collect();
    nft_policy(
        &format!(
            "set ports {{ type inet_service; elements = {{ {} }} }}\n",
            elems.join(", ")
        ),
        "tcp dport @ports accept\n",
    )
}

fn others() -> impl Iterator<Item = u16> {
    SEED_PORTS.into_iter().filter(|p| *p != 22)
}

fn ipt_cidrs(list: &[([u8; 4], u8)]) -> String {
    let mut accepts = iptables_port_rules(others());
    for c in list {
        accepts += &format!(
            "-A INPUT -p tcp -m tcp --dport 22 -s {} -j ACCEPT\n",
            cidr_str(c)
        );
    }
    iptables_policy(&accepts)
}

fn nft_cidrs(list: &[([u8; 4], u8)]) -> String {
    let elems: Vec<String> = list.iter().map(cidr_str).collect();
    let ports: Vec<String> = others().map(|p| p.to_string()).collect();
    nft_policy(
        &format!(
            "set src4 {{ type ipv4_addr; flags interval; elements = {{ {} }} }}\n",
            elems.join(", ")
        ),
        &format!(
            "tcp dport {{ {} }} accept\ntcp dport 22 ip saddr @src4 accept\n",
            ports.join(", ")
        ),
    )
}

fn addr(s: &str) -> [u8; 4] {
    s.parse::<std::net::Ipv4Addr>().expect("address").octets()
}

struct CostPoint {
    what: &'static str,
    x: usize,
    inst: FwInstance,
    apply_ms: f64,
    /// (packet key, frame)
    packets: Vec<(&'static str, Vec<u8>)>,
}

pub fn run(opts: &Opts, p: &mut Progress) -> anyhow::Result<(Value, Option<Value>)> {
    let port_points: Vec<u16> = vec![1, 100, 10_000, 65_535];
    let cidr_points: Vec<usize> = if opts.quick {
        vec![1, 100, 10_000, 100_000]
    } else {
        vec![1, 100, 10_000, 100_000, 1_000_000]
    };
    let mac = [2u8, 0, 0, 0, 0, 1];
    let mac2 = [2u8, 0, 0, 0, 0, 2];

    // ---- cost (BPF_PROG_TEST_RUN) ----
    let mut points: Vec<CostPoint> = Vec::new();
    for &n in &port_points {
        p.step(&format!("scaling: fw with {n} allowed ports"));
        let t = Instant::now();
        let inst = FwInstance::load_sized("scale0", &ports_policy(n), 1024)?;
        points.push(CostPoint {
            what: "ports",
            x: n as usize,
            inst,
            apply_ms: t.elapsed().as_secs_f64() * 1e3,
            packets: vec![
                (
                    "syn_last_allowed",
                    syn_template(SEND_V4, 40000, n, SYN, &mac, &mac2),
                ),
                (
                    "syn_closed",
                    syn_template(SEND_V4, 40000, 0, SYN, &mac, &mac2),
                ),
            ],
        });
    }
    let largest = *cidr_points.last().expect("points");
    for &m in &cidr_points {
        p.step(&format!("scaling: fw with {m} source CIDRs on port 22"));
        sys::check_interrupt()?;
        let list = cidrs(m, Some(addr(SEND_V4)));
        let policy = cidr_policy(&list);
        let t = Instant::now();
        // The largest point keeps the default flow tables, so its memory is what a user gets.
        let flows = if m == largest {
            fw_common::maps::FLOWS_OUT_MAX
        } else {
            1024
        };
        let inst = FwInstance::load_sized("scale0", &policy, flows)?;
        points.push(CostPoint {
            what: "cidrs",
            x: m,
            inst,
            apply_ms: t.elapsed().as_secs_f64() * 1e3,
            packets: vec![
                (
                    "syn_allowed_source",
                    syn_template(SEND_V4, 40000, 22, SYN, &mac, &mac2),
                ),
                (
                    "syn_other_source",
                    syn_template(OTHER_V4, 40000, 22, SYN, &mac, &mac2),
                ),
            ],
        });
    }
    let mut floor = DropProg::load()?;
    let floor_fd = floor.prog_fd()?;
    let mut progs: Vec<Prog> = Vec::new();
    for pt in &mut points {
        progs.push(Prog {
            key: pt.what,
            fd: pt.inst.prog_fd()?,
        });
    }
    let cpu = sys::nr_cpus() - 1;
    // samples[point][packet], floor samples per round
    let mut samples = vec![vec![Vec::new(); 2]; points.len()];
    let mut floor_s = Vec::new();
    let mut verdict = vec![vec![0u32; 2]; points.len()];
    let floor_frame = points[0].packets[0].1.clone();
    std::thread::scope(|s| {
        s.spawn(|| -> anyhow::Result<()> {
            let _pin = fw_lab::link::CpuPin::cpu(cpu)?;
            for round in 0..opts.rounds {
                p.step(&format!(
                    "scaling: per-packet cost, round {}/{}",
                    round + 1,
                    opts.rounds
                ));
                floor_s.push(f64::from(test_run(floor_fd, &floor_frame, opts.repeat)?.ns));
                for (i, pt) in points.iter().enumerate() {
                    for (j, (_, frame)) in pt.packets.iter().enumerate() {
                        sys::check_interrupt()?;
                        let r = test_run(progs[i].fd, frame, opts.repeat)?;
                        samples[i][j].push(f64::from(r.ns));
                        verdict[i][j] = r.retval;
                    }
                }
                floor_s.push(f64::from(test_run(floor_fd, &floor_frame, opts.repeat)?.ns));
            }
            Ok(())
        })
        .join()
        .map_err(|_| anyhow::anyhow!("scaling thread panicked"))?
    })?;
    let floor_med = median(&floor_s);
    let mut cost_tables = Vec::new();
    let mut growth = Vec::new();
    for (what, title, x_label, cols) in [
        (
            "ports",
            "fw per-packet cost (ns above the floor) with N allowed TCP ports",
            "allowed ports",
            ["syn_last_allowed", "syn_closed"],
        ),
        (
            "cidrs",
            "fw per-packet cost (ns above the floor) with M source CIDRs on port 22 (LPM trie)",
            "source CIDRs",
            ["syn_allowed_source", "syn_other_source"],
        ),
    ] {
        let mut rows = Vec::new();
        let mut first: Option<Vec<f64>> = None;
        let mut last = Vec::new();
        for (i, pt) in points.iter().enumerate().filter(|(_, p)| p.what == what) {
            let mut row = json!({"x": pt.x, "load_ms": pt.apply_ms});
            let mut vals = Vec::new();
            for (j, c) in cols.iter().enumerate() {
                let v = median(&samples[i][j]) - floor_med;
                row[*c] = json!(v);
                row[format!("{c}_verdict")] = json!(super::cost::verdict(verdict[i][j]));
                row[format!("{c}_samples")] = json!(samples[i][j]);
                vals.push(median(&samples[i][j]));
            }
            if first.is_none() {
                first = Some(vals.clone());
            }
            last = vals;
            rows.push(row);
        }
        if let Some(f) = first {
            for (j, c) in cols.iter().enumerate() {
                // Growth of the whole per-packet time (floor included), as a user sees it.
                growth.push(json!({
                    "what": format!("test-run cost, {what}, {c}"),
                    "growth": last[j] / f[j] - 1.0,
                    "growth_above_floor": (last[j] - floor_med) / (f[j] - floor_med) - 1.0,
                }));
            }
        }
        let mut columns: Vec<String> = cols.iter().map(|c| c.to_string()).collect();
        columns.push("load_ms".into());
        cost_tables.push(json!({
            "title": title,
            "x_label": x_label,
            "unit": "ns",
            "columns": columns,
            "rows": rows,
            "plot": format!("scale_cost_{what}"),
        }));
    }
    let largest_mem = points
        .iter()
        .find(|pt| pt.what == "cidrs" && pt.x == largest)
        .map(|pt| {
            let m = pt.inst.memory();
            json!({
                "point": format!("{largest} source CIDRs"),
                "total_bytes": m.iter().map(|x| x.1).sum::<u64>(),
                "maps": m.iter().map(|(n, b, e)| json!({"name": n, "bytes": b, "max_entries": e})).collect::<Vec<_>>(),
            })
        });
    drop(points);
    drop(floor);

    // ---- drop rate (floods) ----
    let e2e = e2e_scale(opts, p, &port_points, &cidr_points)?;
    for g in e2e.1 {
        growth.push(g);
    }
    Ok((
        json!({
            "method": "Per-packet cost: one fw instance per scale point (maps written by the same code as `fw up`/`fw apply`), \
                       BPF_PROG_TEST_RUN interleaved across points, median above the XDP_DROP floor. Allowed ports are one \
                       range rule 1-N (fw stores ports in a 65,536-entry array, so N does not matter by design). \
                       Source CIDRs: non-overlapping prefixes (/24, /28, /32) spread over the whole IPv4 space plus the \
                       sender's /32, all on port 22; one packet from an allowed source, one from a source in no entry. \
                       load_ms is the time to load fw and write that policy into its maps (what `fw up` does). Drop rate: one namespace pair each for fw, \
                       iptables-legacy (one rule per port or per CIDR after the seed's rules) and nftables (a set), \
                       flooded with SYNs to port 0 (closed at every point) or to port 22 from a source in no entry.",
            "cost": cost_tables,
            "e2e": e2e.0,
            "growth": growth,
        }),
        largest_mem,
    ))
}

/// The flood part: returns (tables, growth entries).
fn e2e_scale(
    opts: &Opts,
    p: &mut Progress,
    port_points: &[u16],
    cidr_points: &[usize],
) -> anyhow::Result<(Vec<Value>, Vec<Value>)> {
    let have_ipt = sys::have("iptables-legacy-restore");
    let have_nft = sys::have("nft");
    let ports_e2e: Vec<u16> = if opts.quick {
        vec![1, 10_000]
    } else {
        port_points.to_vec()
    };
    let cidrs_e2e: Vec<usize> = if opts.quick {
        vec![1, 10_000]
    } else {
        cidr_points.to_vec()
    };
    // iptables evaluates its rules one by one: beyond this many, a packet takes milliseconds.
    let ipt_max = if opts.quick { 10_000 } else { 100_000 };
    p.step("scaling: namespace pairs for fw, iptables, nftables");
    let mut pairs = vec![Pair::create(20, Setup::None)?];
    pairs[0].install(Setup::Fw, Some(&ports_policy(1)))?;
    if have_ipt {
        pairs.push(Pair::create(21, Setup::None)?);
    }
    if have_nft {
        pairs.push(Pair::create(22, Setup::None)?);
    }
    let names: Vec<&str> = std::iter::once("fw")
        .chain(have_ipt.then_some("iptables"))
        .chain(have_nft.then_some("nftables"))
        .collect();
    for pair in &mut pairs {
        let (d, s) = (pair.r_mac, pair.s_mac);
        let closed: Vec<Vec<u8>> = (0..16)
            .map(|i| syn_template(SEND_V4, 10000 + i, 0, SYN, &d, &s))
            .collect();
        let other: Vec<Vec<u8>> = (0..16)
            .map(|i| syn_template(OTHER_V4, 10000 + i, 22, SYN, &d, &s))
            .collect();
        pair.add_generator("syn_port0", &closed)?;
        pair.add_generator("syn_22_other", &other)?;
    }
    let cpu = sys::nr_cpus() - 1;
    let mut tables = Vec::new();
    let mut growth = Vec::new();
    for what in ["ports", "cidrs"] {
        let xs: Vec<usize> = if what == "ports" {
            ports_e2e.iter().map(|x| *x as usize).collect()
        } else {
            cidrs_e2e.clone()
        };
        let mut rows = Vec::new();
        let mut fw_ns = Vec::new();
        for &x in &xs {
            sys::check_interrupt()?;
            p.step(&format!("scaling: drop rate with {x} {what}"));
            let list = (what == "cidrs").then(|| cidrs(x, Some(addr(SEND_V4))));
            let mut active = vec![true; pairs.len()];
            let mut cfg_ms = vec![f64::NAN; pairs.len()];
            for (i, pair) in pairs.iter_mut().enumerate() {
                let t = Instant::now();
                match (names[i], &list) {
                    ("fw", None) => pair
                        .fw
                        .as_mut()
                        .expect("fw")
                        .apply(&ports_policy(x as u16))?,
                    ("fw", Some(l)) => pair.fw.as_mut().expect("fw").apply(&cidr_policy(l))?,
                    ("iptables", Some(_)) if x > ipt_max => active[i] = false,
                    ("iptables", None) => pair.iptables_restore(&ipt_ports(x as u16))?,
                    ("iptables", Some(l)) => pair.iptables_restore(&ipt_cidrs(l))?,
                    ("nftables", None) => pair.nft(&nft_ports(x as u16))?,
                    ("nftables", Some(l)) => pair.nft(&nft_cidrs(l))?,
                    _ => unreachable!(),
                }
                cfg_ms[i] = t.elapsed().as_secs_f64() * 1e3;
            }
            let gen_key = if what == "ports" {
                "syn_port0"
            } else {
                "syn_22_other"
            };
            let mut pps = vec![Vec::new(); pairs.len()];
            let mut kns = vec![Vec::new(); pairs.len()];
            for round in 0..opts.rounds {
                for k in 0..pairs.len() {
                    let i = (k + round) % pairs.len();
                    if !active[i] {
                        continue;
                    }
                    let gi = pairs[i].generator_index(gen_key).expect("generator");
                    let s = flood(
                        &mut pairs[i],
                        gi,
                        opts.flood_time,
                        Duration::from_millis(50),
                        cpu,
                        None,
                    )?;
                    pps[i].push(s.pps());
                    kns[i].push(s.kernel_ns);
                }
            }
            let mut row = json!({"x": x});
            for (i, n) in names.iter().enumerate() {
                if active[i] {
                    row[*n] = json!(median(&pps[i]));
                    row[format!("{n}_ns_per_packet")] = json!(median(&kns[i]));
                    row[format!("{n}_config_ms")] = json!(cfg_ms[i]);
                }
            }
            fw_ns.push(median(&kns[0]));
            rows.push(row);
        }
        if let (Some(a), Some(b)) = (fw_ns.first(), fw_ns.last()) {
            growth.push(json!({
                "what": format!("drop rate, {what} (ns per packet, generator included)"),
                "growth": b / a - 1.0,
            }));
        }
        tables.push(json!({
            "title": format!("Drop rate (packets/s per CPU, CPU-timed) with N {}", if what == "ports" { "allowed ports (SYN flood to a closed port)" } else { "source CIDRs on port 22 (SYN flood from a source in no entry)" }),
            "x_label": if what == "ports" { "allowed ports" } else { "source CIDRs" },
            "unit": "pps",
            "columns": names,
            "rows": rows,
            "plot": format!("scale_e2e_{what}"),
        }));
    }
    Ok((tables, growth))
}
