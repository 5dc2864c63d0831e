//! Output: tables on the terminal, results.json, the plots and docs/benchmarks.md.

use std::{fmt::Write as _, fs};

use anyhow::Context as _;
use serde_json::{Value, json};

use super::{Opts, lab::FwInstance, sys};

/// A plain-text table with aligned columns.
pub fn table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let mut w: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for r in rows {
        for (i, c) in r.iter().enumerate() {
            w[i] = w[i].max(c.chars().count());
        }
    }
    let line = |cells: Vec<String>| {
        let mut s = String::new();
        for (i, c) in cells.iter().enumerate() {
            let pad = w[i] - c.chars().count();
            if i == 0 {
                s += &format!("{c}{}", " ".repeat(pad));
            } else {
                s += &format!("  {}{c}", " ".repeat(pad));
            }
        }
        s.trim_end().to_string()
    };
    let mut out = line(headers.iter().map(|s| s.to_string()).collect()) + "\n";
    out += &line(w.iter().map(|n| "-".repeat(*n)).collect());
    out += "\n";
    for r in rows {
        out += &line(r.clone());
        out += "\n";
    }
    out
}

/// The same table in Markdown.
pub fn md_table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let mut s = format!("| {} |\n", headers.join(" | "));
    s += &format!(
        "|{}\n",
        headers
            .iter()
            .enumerate()
            .map(|(i, _)| if i == 0 { " --- |" } else { " ---: |" })
            .collect::<String>()
    );
    for r in rows {
        s += &format!("| {} |\n", r.join(" | "));
    }
    s
}

pub fn f(v: &Value, digits: usize) -> String {
    match v.as_f64() {
        Some(x) if x.is_finite() => format!("{x:.digits$}"),
        _ => "–".into(),
    }
}

pub fn pps(v: &Value) -> String {
    match v.as_f64() {
        Some(x) if x >= 1e6 => format!("{:.2} M", x / 1e6),
        Some(x) if x >= 1e3 => format!("{:.1} k", x / 1e3),
        Some(x) => format!("{x:.0}"),
        None => "–".into(),
    }
}

pub fn ratio(v: &Value) -> String {
    match v.as_f64() {
        Some(x) if x.is_finite() => format!("{x:.2}×"),
        _ => "–".into(),
    }
}

// ---- 1. cost ----

pub fn cost_rows(c: &Value) -> (Vec<&'static str>, Vec<Vec<String>>) {
    let has_xf = c["programs"]
        .as_array()
        .is_some_and(|a| a.iter().any(|p| p == "xdp_filter"));
    let mut h = vec!["class", "floor ns", "fw ns", "fw − floor", "fw verdict"];
    if has_xf {
        h.extend(["xdp-filter ns", "xdp-filter − floor", "xdp-filter verdict"]);
    }
    let rows = c["classes"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|r| {
                    let mut row = vec![
                        r["name"].as_str().unwrap_or("").to_string(),
                        f(&r["floor_ns"], 0),
                        f(&r["fw_ns"], 0),
                        f(&r["fw_above_floor_ns"], 1),
                        r["fw_verdict"].as_str().unwrap_or("").to_string(),
                    ];
                    if has_xf {
                        row.push(f(&r["xdp_filter_ns"], 0));
                        row.push(f(&r["xdp_filter_above_floor_ns"], 1));
                        row.push(r["xdp_filter_verdict"].as_str().unwrap_or("").to_string());
                    }
                    row
                })
                .collect()
        })
        .unwrap_or_default();
    (h, rows)
}

pub fn print_cost(c: &Value) {
    let (h, rows) = cost_rows(c);
    println!(
        "\n1. Per-packet cost, BPF_PROG_TEST_RUN (ns, median of {} rounds × {} runs)\n{}",
        c["rounds"],
        c["repeat"],
        table(&h, &rows)
    );
}

// ---- 2. drop rate ----

/// Per-packet CPU time of a row (generator + receiver, kernel-timed).
fn ns_of(r: &Value) -> Option<f64> {
    r["ns_per_packet"]
        .as_f64()
        .filter(|x| x.is_finite() && *x > 0.0)
}

/// `setup`'s CPU-timed packets/s divided by `other`'s, within one flood.
pub fn cpu_ratio(flood: &Value, setup: &str, other: &str) -> Option<f64> {
    let rows = flood["rows"].as_array()?;
    let ns = |k: &str| rows.iter().find(|r| r["setup"] == k).and_then(ns_of);
    Some(ns(other)? / ns(setup)?)
}

pub fn e2e_rows(flood: &Value) -> Vec<Vec<String>> {
    let rows = flood["rows"].as_array().cloned().unwrap_or_default();
    let ns = |k: &str| rows.iter().find(|r| r["setup"] == k).and_then(ns_of);
    let (ipt, drop, xf) = (ns("iptables_seed"), ns("xdp_drop"), ns("xdp_filter"));
    let rel = |a: Option<f64>, b: Option<f64>| match (a, b) {
        (Some(a), Some(b)) => json!(a / b),
        _ => Value::Null,
    };
    rows.iter()
        .map(|r| {
            let me = ns_of(r);
            vec![
                r["name"].as_str().unwrap_or("").to_string(),
                pps(&r["pps"]),
                pps(&me.map_or(Value::Null, |n| json!(1e9 / n))),
                ratio(&rel(ipt, me)),
                format!(
                    "{:.0} %",
                    rel(drop, me).as_f64().unwrap_or(f64::NAN) * 100.0
                ),
                ratio(&rel(xf, me)),
                f(&r["ns_per_packet"], 0),
                f(&r["ns_above_xdp_drop"], 0),
            ]
        })
        .collect()
}

pub const E2E_HEAD: [&str; 8] = [
    "filter",
    "packets/s (wall clock)",
    "packets/s (CPU time)",
    "vs iptables seed",
    "of XDP_DROP",
    "vs xdp-filter",
    "ns/packet",
    "ns above XDP_DROP",
];

pub fn print_e2e(e: &Value) {
    println!(
        "\n2. Drop rate, 60-byte floods over veth (median of {} rounds × {:.1} s; generator and receiver share CPU {})",
        e["rounds"],
        e["seconds_per_measurement"].as_f64().unwrap_or(0.0),
        e["cpu"]
    );
    for fl in e["floods"].as_array().into_iter().flatten() {
        println!(
            "\n{}\n{}",
            fl["name"].as_str().unwrap_or(""),
            table(&E2E_HEAD, &e2e_rows(fl))
        );
    }
}

// ---- 3. scaling ----

pub fn print_scale(s: &Value) {
    if s.is_null() {
        return;
    }
    println!("\n3. Scaling");
    for part in ["cost", "e2e"] {
        for t in s[part].as_array().into_iter().flatten() {
            let (h, rows) = scale_rows(t);
            let hr: Vec<&str> = h.iter().map(|s| s.as_str()).collect();
            println!(
                "\n{}\n{}",
                t["title"].as_str().unwrap_or(""),
                table(&hr, &rows)
            );
        }
    }
}

pub fn scale_rows(t: &Value) -> (Vec<String>, Vec<Vec<String>>) {
    let cols: Vec<String> = t["columns"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|c| c.as_str().unwrap_or("").to_string())
                .collect()
        })
        .unwrap_or_default();
    let mut h = vec![t["x_label"].as_str().unwrap_or("").to_string()];
    h.extend(cols.iter().cloned());
    let unit = t["unit"].as_str().unwrap_or("");
    let rows = t["rows"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|r| {
                    let mut row = vec![r["x"].to_string()];
                    for c in &cols {
                        let v = &r[c.as_str()];
                        row.push(if unit == "pps" {
                            // The CPU-timed rate: steadier than the wall clock on a shared machine.
                            match r[format!("{c}_ns_per_packet")].as_f64() {
                                Some(ns) if ns > 0.0 => pps(&json!(1e9 / ns)),
                                _ => pps(v),
                            }
                        } else {
                            f(v, 1)
                        });
                    }
                    row
                })
                .collect()
        })
        .unwrap_or_default();
    (h, rows)
}

// ---- 4. live ----

pub fn print_live(l: &Value) {
    if l.is_null() {
        return;
    }
    println!("\n4. Live updates under a flood");
    let rows = live_rows(l);
    println!("{}", table(&LIVE_HEAD, &rows));
}

pub const LIVE_HEAD: [&str; 8] = [
    "update",
    "updates",
    "call µs (median)",
    "latency µs (median)",
    "latency µs (p99)",
    "latency µs (max)",
    "misclassified",
    "frames lost",
];

pub fn live_rows(l: &Value) -> Vec<Vec<String>> {
    l["modes"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|m| {
                    vec![
                        m["name"].as_str().unwrap_or("").to_string(),
                        m["updates"].to_string(),
                        f(&m["call_us_median"], 0),
                        f(&m["latency_us_median"], 0),
                        f(&m["latency_us_p99"], 0),
                        f(&m["latency_us_max"], 0),
                        m["misclassified"].to_string(),
                        m["frames_lost"].to_string(),
                    ]
                })
                .collect()
        })
        .unwrap_or_default()
}

// ---- 5. iperf ----

pub const IPERF_HEAD: [&str; 8] = [
    "filter",
    "TCP Gbit/s",
    "vs no filter",
    "vs XDP_PASS",
    "RTT µs (median)",
    "RTT µs (p99)",
    "RTT vs no filter",
    "RTT vs XDP_PASS",
];

pub fn iperf_rows(i: &Value) -> Vec<Vec<String>> {
    i["rows"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|r| {
                    vec![
                        r["name"].as_str().unwrap_or("").to_string(),
                        f(&r["gbps"], 2),
                        format!(
                            "{:+.1} %",
                            (r["gbps_vs_none"].as_f64().unwrap_or(f64::NAN) - 1.0) * 100.0
                        ),
                        format!(
                            "{:+.1} %",
                            (r["gbps_vs_xdp_pass"].as_f64().unwrap_or(f64::NAN) - 1.0) * 100.0
                        ),
                        f(&r["rtt_us_median"], 1),
                        f(&r["rtt_us_p99"], 1),
                        format!(
                            "{:+.1} %",
                            (r["rtt_vs_none"].as_f64().unwrap_or(f64::NAN) - 1.0) * 100.0
                        ),
                        format!(
                            "{:+.1} %",
                            (r["rtt_vs_xdp_pass"].as_f64().unwrap_or(f64::NAN) - 1.0) * 100.0
                        ),
                    ]
                })
                .collect()
        })
        .unwrap_or_default()
}

pub fn print_iperf(i: &Value) {
    if i.is_null() {
        return;
    }
    println!(
        "\n5. Allowed traffic: iperf3 TCP throughput and request/response latency (median of {} rounds)\n{}",
        i["rounds"],
        table(&IPERF_HEAD, &iperf_rows(i))
    );
}

// ---- 6. memory ----

fn maps_of_prog(prog_id: u32) -> Vec<(String, u64, u32)> {
    let bpftool = |args: &[&str]| -> Option<Value> {
        let out = sys::run("bpftool", args, std::time::Duration::from_secs(10)).ok()?;
        serde_json::from_str(&out.stdout).ok()
    };
    let id = prog_id.to_string();
    let Some(prog) = bpftool(&["-j", "prog", "show", "id", &id]) else {
        return Vec::new();
    };
    prog["map_ids"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|m| {
            let mid = m.as_u64()?.to_string();
            let map = bpftool(&["-j", "map", "show", "id", &mid])?;
            Some((
                map["name"].as_str().unwrap_or("?").to_string(),
                map["bytes_memlock"].as_u64()?,
                map["max_entries"].as_u64().unwrap_or(0) as u32,
            ))
        })
        .collect()
}

fn maps_json(maps: &[(String, u64, u32)]) -> Value {
    json!({
        "total_bytes": maps.iter().map(|m| m.1).sum::<u64>(),
        "maps": maps.iter().map(|(n, b, e)| json!({"name": n, "bytes": b, "max_entries": e})).collect::<Vec<_>>(),
    })
}

pub fn memory_json(fw: Option<&FwInstance>, xdp_filter_id: Option<u32>) -> Value {
    let mut v = json!({});
    if let Some(fw) = fw {
        v["fw_seed"] = maps_json(&fw.memory());
    }
    if let Some(id) = xdp_filter_id {
        v["xdp_filter"] = maps_json(&maps_of_prog(id));
    }
    v
}

pub fn memory_rows(m: &Value) -> Vec<Vec<String>> {
    let mut rows = Vec::new();
    for (key, name) in [
        ("fw_seed", "fw, seed policy"),
        ("largest", "fw, largest scale point"),
        ("xdp_filter", "xdp-filter"),
    ] {
        let Some(t) = m.get(key) else { continue };
        let detail: Vec<String> = t["maps"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|x| {
                format!(
                    "{} {:.1}",
                    x["name"].as_str().unwrap_or(""),
                    x["bytes"].as_f64().unwrap_or(0.0) / 1048576.0
                )
            })
            .collect();
        rows.push(vec![
            name.to_string(),
            format!(
                "{:.1}",
                t["total_bytes"].as_f64().unwrap_or(0.0) / 1048576.0
            ),
            detail.join(", "),
        ]);
    }
    rows
}

pub fn print_memory(m: &Value) {
    println!(
        "\n6. Map memory (memlock, MiB)\n{}",
        table(&["filter", "total MiB", "per map (MiB)"], &memory_rows(m))
    );
}

// ---- targets ----

/// Check each target of the issue; adds `targets` to the results.
pub fn targets(r: &mut Value) {
    let mut t = Vec::new();
    if let Some(classes) = r["cost"]["classes"].as_array() {
        let worst = classes
            .iter()
            .filter_map(|c| Some((c["fw_above_floor_ns"].as_f64()?, c["name"].as_str()?)))
            .max_by(|a, b| a.0.total_cmp(&b.0));
        if let Some((ns, name)) = worst {
            t.push(json!({"target": "fw cost above the floor ≤ 30 ns on every class", "value": format!("worst {ns:.1} ns ({name})"), "met": ns <= 30.0}));
        }
    }
    if let Some(floods) = r["e2e"]["floods"].as_array() {
        for fl in floods {
            let rows = fl["rows"].as_array().cloned().unwrap_or_default();
            let Some(fw) = rows.iter().find(|x| x["setup"] == "fw") else {
                continue;
            };
            let name = fl["name"].as_str().unwrap_or("");
            let wall = |k: &str| fw[k].as_f64().unwrap_or(f64::NAN);
            if let Some(v) = cpu_ratio(fl, "fw", "xdp_drop") {
                t.push(json!({"target": format!("{name}: ≥ 90 % of XDP_DROP"), "value": format!("{:.1} % (wall clock {:.1} %)", v * 100.0, wall("ratio_to_xdp_drop") * 100.0), "met": v >= 0.9}));
            }
            if let Some(v) = cpu_ratio(fl, "fw", "xdp_filter") {
                t.push(json!({"target": format!("{name}: ≥ 1.35× xdp-filter"), "value": format!("{v:.2}× (wall clock {:.2}×)", wall("ratio_to_xdp_filter")), "met": v >= 1.35}));
            }
            if let Some(v) = cpu_ratio(fl, "fw", "iptables_seed") {
                t.push(json!({"target": format!("{name}: ≥ 7× iptables seed"), "value": format!("{v:.2}× (wall clock {:.2}×)", wall("ratio_to_iptables_seed")), "met": v >= 7.0}));
            }
        }
    }
    for s in r["scale"]["growth"].as_array().into_iter().flatten() {
        if let Some(g) = s["growth"].as_f64() {
            t.push(json!({"target": format!("{}: fw within +10 % from smallest to largest", s["what"].as_str().unwrap_or("")), "value": format!("{:+.1} %", g * 100.0), "met": g <= 0.10}));
        }
    }
    for m in r["live"]["modes"].as_array().into_iter().flatten() {
        if let Some(n) = m["misclassified"].as_u64() {
            t.push(json!({"target": format!("live updates ({}): 0 misclassified", m["name"].as_str().unwrap_or("")), "value": n.to_string(), "met": n == 0}));
        }
    }
    for row in r["iperf"]["rows"].as_array().into_iter().flatten() {
        if row["setup"] == "fw"
            && let Some(v) = row["gbps_vs_none"].as_f64()
        {
            t.push(json!({"target": "iperf3 through fw within 5 % of no filter", "value": format!("{:+.1} %", (v - 1.0) * 100.0), "met": v >= 0.95}));
            if let Some(p) = row["gbps_vs_xdp_pass"].as_f64() {
                t.push(json!({"target": "iperf3 through fw within 5 % of a trivial XDP_PASS program (same veth offload loss)", "value": format!("{:+.1} %", (p - 1.0) * 100.0), "met": p >= 0.95}));
            }
            if let Some(r) = row["rtt_vs_none"].as_f64() {
                t.push(json!({"target": "TCP request/response RTT through fw within 5 % of no filter", "value": format!("{:+.1} %", (r - 1.0) * 100.0), "met": r <= 1.05}));
            }
            if let Some(r) = row["rtt_vs_xdp_pass"].as_f64() {
                t.push(json!({"target": "TCP request/response RTT through fw within 5 % of a trivial XDP_PASS program", "value": format!("{:+.1} %", (r - 1.0) * 100.0), "met": r <= 1.05}));
            }
        }
    }
    t.extend(super::blocklist_report::targets(r));
    r["targets"] = json!(t);
}

pub fn target_rows(r: &Value) -> Vec<Vec<String>> {
    r["targets"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|t| {
            vec![
                t["target"].as_str().unwrap_or("").to_string(),
                t["value"].as_str().unwrap_or("").to_string(),
                if t["met"].as_bool() == Some(true) {
                    "met".into()
                } else {
                    "MISSED".into()
                },
            ]
        })
        .collect()
}

pub fn print_targets(r: &Value) {
    println!(
        "\nTargets\n{}",
        table(&["target", "measured", ""], &target_rows(r))
    );
}

/// results.json, plots, benchmarks.md.
pub fn write(opts: &Opts, r: &Value) -> anyhow::Result<()> {
    let dir = opts.out.join("bench");
    fs::create_dir_all(&dir).with_context(|| format!("{}", dir.display()))?;
    fs::write(dir.join("results.json"), serde_json::to_string_pretty(r)?)?;
    let plots = super::report_plots::all(r, &dir)?;
    let md = markdown(r, &plots);
    fs::write(opts.out.join("benchmarks.md"), md)?;
    Ok(())
}

/// The three load averages of a /proc/loadavg line.
fn loadavg(v: &Value) -> String {
    v.as_str()
        .unwrap_or("")
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

fn markdown(r: &Value, plots: &[(String, String)]) -> String {
    let m = &r["machine"];
    let mut s = String::new();
    let _ = writeln!(s, "# fw benchmarks\n");
    let _ = writeln!(
        s,
        "Generated by `cargo xtask bench` ({} run, {:.0} s) on {} — {} vCPU, {}, kernel {}. \
         Load average at start {}, at end {}; the whole machine's CPUs were {:.0} % busy during the run \
         (this benchmark included: it keeps one CPU busy). The machine is shared: other engineers' \
         builds and tests ran at the same time, so every comparison below is made within this run, \
         in interleaved rounds, as medians and ratios.\n",
        r["mode"].as_str().unwrap_or(""),
        r["seconds"].as_f64().unwrap_or(0.0),
        m["date"].as_str().unwrap_or(""),
        m["nproc"],
        m["cpu_model"].as_str().unwrap_or(""),
        m["kernel"].as_str().unwrap_or(""),
        loadavg(&m["loadavg_at_start"]),
        loadavg(&m["loadavg_at_end"]),
        m["cpu_busy_fraction_during_run"].as_f64().unwrap_or(0.0) * 100.0,
    );
    let pk = &m["packages"];
    if pk.is_object() {
        let _ = writeln!(
            s,
            "Compared with (Debian packages): xdp-tools {}, iptables {} (iptables-legacy), nftables {}, iperf3 {}.\n",
            pk["xdp-tools"].as_str().unwrap_or("?"),
            pk["iptables"].as_str().unwrap_or("?"),
            pk["nftables"].as_str().unwrap_or("?"),
            pk["iperf3"].as_str().unwrap_or("?"),
        );
    }
    let _ = writeln!(
        s,
        "Raw numbers (every round): [bench/results.json](bench/results.json). Rerun: `cargo xtask bench` \
         (about 10 minutes) or `cargo xtask bench --quick` (under 2 minutes, fewer rounds and points).\n"
    );
    let _ = writeln!(
        s,
        "## Targets\n\n{}",
        md_table(&["target", "measured", ""], &target_rows(r))
    );
    let plot = |name: &str| {
        plots
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, f)| format!("\n![{name}](bench/{f})\n"))
            .unwrap_or_default()
    };
    if !r["cost"].is_null() {
        let (h, rows) = cost_rows(&r["cost"]);
        let _ = writeln!(
            s,
            "## 1. Per-packet cost (BPF_PROG_TEST_RUN)\n\n\
             Each packet class run {} times per measurement through BPF_PROG_TEST_RUN, on one CPU, \
             {} interleaved rounds; the table shows medians. *floor* is a program that only counts \
             the packet in a per-CPU array and returns XDP_DROP: the cost of test-run itself, which \
             every program pays. *fw − floor* is the median over rounds of the difference, i.e. \
             what fw's own work costs. fw runs the seed policy (plus 5201/tcp) with connection \
             state on; the established reply has an entry in the flow table. xdp-filter (xdp-tools) \
             runs with `-p deny` and the same ports allowed.\n\n{}{}",
            r["cost"]["repeat"],
            r["cost"]["rounds"],
            md_table(&h, &rows),
            plot("cost")
        );
    }
    if !r["e2e"].is_null() {
        let _ = writeln!(
            s,
            "## 2. Drop rate under a flood\n\n\
             Two namespaces joined by a veth. The sender runs a tiny XDP program with \
             BPF_PROG_TEST_RUN and `BPF_F_TEST_XDP_LIVE_FRAMES` that redirects each frame into its \
             veth (batches of {}, no skb at the sender); the receiver has GRO on, so veth uses its \
             NAPI path, and the filter under test. 60-byte frames from 16 source ports with valid \
             checksums. The receiver's NAPI poll runs in the sender's softirq, on the same CPU, so \
             one CPU does all the work and nothing queues up or is lost between them \
             (the receiver's counters saw every frame). Each measurement lasts {:.1} s; {} \
             interleaved rounds, medians.\n\n\
             Two clocks: *packets/s (wall clock)* is what the receiving veth counted per second; \
             on this shared 2-vCPU machine it moves by ±15 % from round to round as other work \
             takes the CPU. *ns/packet* is the kernel's own timing of the test run (generation, \
             redirect and the receiver's processing; it pauses while the task is preempted), \
             steady to ~2 % across rounds; *packets/s (CPU time)* is its inverse, and the ratios \
             and targets use it. Every packet pays a fixed ~155 ns (generator, veth, NAPI) that \
             the XDP_DROP row shows, so *ns above XDP_DROP* is what each filter itself costs. \
             iptables and nftables rules live inside the receiver's namespace only.\n",
            r["e2e"]["batch"],
            r["e2e"]["seconds_per_measurement"].as_f64().unwrap_or(0.0),
            r["e2e"]["rounds"]
        );
        for fl in r["e2e"]["floods"].as_array().into_iter().flatten() {
            let _ = writeln!(
                s,
                "### {}\n\n{}",
                fl["name"].as_str().unwrap_or(""),
                md_table(&E2E_HEAD, &e2e_rows(fl))
            );
        }
        s += &plot("e2e");
        s += "\n";
    }
    if !r["scale"].is_null() {
        let _ = writeln!(
            s,
            "## 3. Scaling\n\n{}\n",
            r["scale"]["method"].as_str().unwrap_or("")
        );
        for part in ["cost", "e2e"] {
            for t in r["scale"][part].as_array().into_iter().flatten() {
                let (h, rows) = scale_rows(t);
                let hr: Vec<&str> = h.iter().map(|s| s.as_str()).collect();
                let _ = writeln!(
                    s,
                    "### {}\n\n{}",
                    t["title"].as_str().unwrap_or(""),
                    md_table(&hr, &rows)
                );
                if let Some(k) = t["plot"].as_str() {
                    s += &plot(k);
                    s += "\n";
                }
            }
        }
    }
    if !r["live"].is_null() {
        let _ = writeln!(
            s,
            "## 4. Live updates under load\n\n{}\n\n{}",
            r["live"]["method"].as_str().unwrap_or(""),
            md_table(&LIVE_HEAD, &live_rows(&r["live"]))
        );
    }
    if !r["iperf"].is_null() {
        let _ = writeln!(
            s,
            "## 5. Allowed traffic is not slowed\n\n{}\n\n{}",
            r["iperf"]["method"].as_str().unwrap_or(""),
            md_table(&IPERF_HEAD, &iperf_rows(&r["iperf"]))
        );
    }
    if !r["memory"].is_null() {
        let _ = writeln!(
            s,
            "## 6. Map memory\n\nmemlock of each map as the kernel accounts it (`bpftool map show` \
             prints the same). The flow tables are preallocated LRU hashes: most of fw's memory, \
             whatever the policy.\n\n{}",
            md_table(
                &["filter", "total MiB", "per map (MiB)"],
                &memory_rows(&r["memory"])
            )
        );
    }
    s += &super::blocklist_report::markdown(r);
    if !r["attack"].is_null() {
        s += &super::report_attack::markdown(&r["attack"]);
    }
    if let Ok(a) = fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/bench/analysis.md"),
    ) {
        s += "\n";
        s += &a;
    }
    s
}
