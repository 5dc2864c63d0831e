//! Output of part 8, legitimate traffic under attack: a summary (transactions/s per filter ×
//! attack, with the share of the filter's own no-attack rate and of transactions that
//! succeeded) and a detail table (latency, the flood's rate at the server).

use std::fmt::Write as _;

use serde_json::Value;

use super::{
    attack_lab::{Attack, Filter},
    report::{md_table, pps, table},
};

fn row(a: &Value, filter: Filter, attack: Attack) -> Option<&Value> {
    a["rows"]
        .as_array()?
        .iter()
        .find(|r| r["filter"] == filter.key() && r["attack"] == attack.key())
}

fn pct(v: &Value) -> String {
    v.as_f64()
        .filter(|x| x.is_finite())
        .map_or("–".into(), |x| format!("{:.0} %", x * 100.0))
}

/// "1,234/s (56 %, ok 78 %)", or why the cell did not run.
fn cell(r: Option<&Value>, attack: Attack) -> String {
    let Some(r) = r else {
        return "not run".into();
    };
    if let Some(e) = r["error"].as_str() {
        return format!("not run: {}", e.lines().next().unwrap_or(e));
    }
    let rate = r["txn_per_sec"].as_f64().unwrap_or(f64::NAN);
    if attack == Attack::None {
        return format!("{rate:.0}/s (ok {})", pct(&r["success"]));
    }
    format!(
        "{rate:.0}/s ({}, ok {})",
        pct(&r["of_no_attack"]),
        pct(&r["success"])
    )
}

pub fn summary_head() -> Vec<String> {
    std::iter::once("filter".to_string())
        .chain(Attack::ALL.iter().map(|a| a.name().to_string()))
        .collect()
}

pub fn summary_rows(a: &Value) -> Vec<Vec<String>> {
    Filter::ALL
        .iter()
        .map(|&f| {
            std::iter::once(f.name().to_string())
                .chain(Attack::ALL.iter().map(|&at| cell(row(a, f, at), at)))
                .collect()
        })
        .collect()
}

pub const DETAIL_HEAD: [&str; 8] = [
    "filter",
    "attack",
    "transactions/s",
    "of no attack",
    "succeeded",
    "latency p50 (ms)",
    "latency p99 (ms)",
    "flood at the server (packets/s)",
];

pub fn detail_rows(a: &Value) -> Vec<Vec<String>> {
    let ms = |v: &Value| {
        v.as_f64()
            .map_or("–".into(), |us| format!("{:.2}", us / 1000.0))
    };
    a["rows"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|r| r["error"].is_null())
        .map(|r| {
            vec![
                r["filter_name"].as_str().unwrap_or("").to_string(),
                r["attack_name"].as_str().unwrap_or("").to_string(),
                format!("{:.0}", r["txn_per_sec"].as_f64().unwrap_or(f64::NAN)),
                pct(&r["of_no_attack"]),
                pct(&r["success"]),
                ms(&r["latency_us_p50"]),
                ms(&r["latency_us_p99"]),
                pps(&r["flood_pps"]),
            ]
        })
        .collect()
}

pub fn print(a: &Value) {
    let head = summary_head();
    let h: Vec<&str> = head.iter().map(String::as_str).collect();
    println!(
        "\n8. Legitimate traffic under attack: transactions/s (share of the same filter's rate without attack, share that succeeded within {} s)\n{}",
        a["timeout_s"].as_f64().unwrap_or(1.0),
        table(&h, &summary_rows(a))
    );
    println!("{}", table(&DETAIL_HEAD, &detail_rows(a)));
}

/// The section of benchmarks.md.
pub fn markdown(a: &Value) -> String {
    let mut s = String::new();
    let head = summary_head();
    let h: Vec<&str> = head.iter().map(String::as_str).collect();
    let l = &a["limits"];
    let _ = writeln!(
        s,
        "## 8. Legitimate traffic under attack\n\n{}\n\n\
         Defences: *iptables + SYNPROXY + hashlimit* is the seed's rules with the \
         iptables-extensions SYNPROXY recipe on port 80 (`-t raw … --syn -j CT --notrack`, \
         `-m state --state INVALID,UNTRACKED -j SYNPROXY --sack-perm --timestamp --wscale 7 \
         --mss 1460`, INVALID dropped, `nf_conntrack_tcp_loose=0`, `tcp_syncookies=1`) and \
         `hashlimit` DROP rules ahead of it on SYNs to 80: above {p}/s per source address, above \
         {t}/s in all. *fw + SYN cookies + limits* is fw's seed policy with `syn_cookies = \
         \"always\"` (and `net.ipv4.tcp_syncookies = 2`, as the README asks) and, on the web \
         rule, `limit = \"{p}/s\"`, `burst = {p}`, `total = \"{t}/s\"`; *fw + SYN cookies + \
         per-source limit* is the same without `total`. xdp-filter runs `-p deny` with the \
         seed's ports allowed. *no filter*, and the iptables rows, run a trivial XDP_PASS \
         program on the server's veth (see above).\n\n\
         Each cell: transactions/s (share of the same filter's rate without an attack, share \
         of transactions that succeeded within {to} s).\n\n{}\n{}",
        a["method"].as_str().unwrap_or(""),
        md_table(&h, &summary_rows(a)),
        md_table(&DETAIL_HEAD, &detail_rows(a)),
        p = l["per_source_per_sec"],
        t = l["total_per_sec"],
        to = a["timeout_s"].as_f64().unwrap_or(1.0),
    );
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn every_row_has_as_many_cells_as_its_header() {
        let a = json!({"rows": [
            {"filter": "fw", "attack": "none", "filter_name": "fw seed", "attack_name": "no attack",
             "txn_per_sec": 100.0, "success": 1.0},
            {"filter": "fw", "attack": "syn_flood", "error": "xdp-filter not installed"},
        ]});
        assert!(detail_rows(&a).iter().all(|r| r.len() == DETAIL_HEAD.len()));
        assert!(
            summary_rows(&a)
                .iter()
                .all(|r| r.len() == summary_head().len())
        );
    }

    #[test]
    fn a_cell_that_did_not_run_says_why() {
        let a = json!({"rows": [
            {"filter": "xdp_filter", "attack": "none", "error": "xdp-filter not installed"},
        ]});
        let rows = summary_rows(&a);
        let xf = rows.iter().find(|r| r[0] == "xdp-filter").unwrap();
        assert_eq!(xf[1], "not run: xdp-filter not installed");
        assert_eq!(xf[2], "not run");
    }
}
