//! The per-class table, the documented differences with examples, and everything unexplained,
//! as plain text (terminal) and Markdown (docs/differential.md).

use std::{collections::BTreeMap, fmt::Write as _};

use super::{
    engine::CaseResult,
    known::{Known, explain},
    probes::{Body, Class, Outcome, Probe, traits},
};

#[derive(Clone, Debug, Default)]
pub struct Row {
    pub probes: usize,
    pub frames: u64,
    pub ipt_passed: usize,
    pub fw_passed: usize,
    pub differences: usize,
    pub explained: usize,
}

#[derive(Clone, Debug, Default)]
pub struct KnownCount {
    pub count: usize,
    /// Per class.
    pub classes: BTreeMap<Class, usize>,
    pub examples: Vec<String>,
}

pub struct Summary {
    pub rows: BTreeMap<Class, Row>,
    pub total: Row,
    pub known: BTreeMap<Known, KnownCount>,
    /// Differences that follow an explained one in the same flow.
    pub consequences: usize,
    pub unexplained: Vec<String>,
    pub unexplained_count: usize,
}

impl Summary {
    /// Whether the case passes: no unexplained difference and a trustworthy run.
    pub fn ok(&self, r: &CaseResult) -> bool {
        self.unexplained_count == 0 && r.harness.is_empty()
    }
}

const EXAMPLES: usize = 3;
const UNEXPLAINED_SHOWN: usize = 40;

fn seen_words(o: &Outcome) -> String {
    let v = |passed: bool| if passed { "passed" } else { "dropped" };
    let reason = o
        .fw_reason
        .map(|r| format!(", fw's reason: {r}"))
        .unwrap_or_default();
    format!(
        "iptables {} (reached netfilter: {}/{} frames), fw {} (XDP passed {}/{} frames{reason})",
        v(o.ipt.passed()),
        o.ipt.pre,
        o.frames,
        v(o.fw.passed()),
        o.fw.xdp,
        o.frames,
    )
}

pub fn summarize(r: &CaseResult) -> Summary {
    let mut rows: BTreeMap<Class, Row> = BTreeMap::new();
    let mut known: BTreeMap<Known, KnownCount> = BTreeMap::new();
    let mut unexplained = Vec::new();
    let mut unexplained_count = 0;
    let mut consequences = 0;
    // Flow → an earlier step differed, and whether that one was explained.
    let mut flow_state: BTreeMap<usize, bool> = BTreeMap::new();
    for (p, o) in r.probes.iter().zip(&r.outcomes) {
        let row = rows.entry(p.class).or_default();
        row.probes += 1;
        row.frames += u64::from(o.frames);
        row.ipt_passed += usize::from(o.ipt.passed());
        row.fw_passed += usize::from(o.fw.passed());
        let flow = match p.body {
            Body::Flow { flow, .. } => Some(flow),
            Body::Frames(_) => None,
        };
        if !o.differs() {
            continue;
        }
        row.differences += 1;
        let k = explain(p, o, &r.policy, r.iptables == "nft");
        let earlier = flow.and_then(|f| flow_state.get(&f).copied());
        match (k, earlier) {
            (Some(k), _) => {
                row.explained += 1;
                let e = known.entry(k).or_default();
                e.count += 1;
                *e.classes.entry(p.class).or_default() += 1;
                if e.examples.len() < EXAMPLES {
                    e.examples.push(p.what.clone());
                }
                if let Some(f) = flow {
                    flow_state.entry(f).or_insert(true);
                }
            }
            (None, Some(true)) => {
                row.explained += 1;
                consequences += 1;
            }
            (None, _) => {
                unexplained_count += 1;
                if let Some(f) = flow {
                    flow_state.insert(f, false);
                }
                if unexplained.len() < UNEXPLAINED_SHOWN {
                    let t = traits::names(p.traits);
                    unexplained.push(format!(
                        "[{}] {}: {}{}",
                        p.class,
                        p.what,
                        seen_words(o),
                        if t.is_empty() {
                            String::new()
                        } else {
                            format!("; traits: {}", t.join(", "))
                        }
                    ));
                }
            }
        }
    }
    let mut total = Row::default();
    for row in rows.values() {
        total.probes += row.probes;
        total.frames += row.frames;
        total.ipt_passed += row.ipt_passed;
        total.fw_passed += row.fw_passed;
        total.differences += row.differences;
        total.explained += row.explained;
    }
    Summary {
        rows,
        total,
        known,
        consequences,
        unexplained,
        unexplained_count,
    }
}

fn table(s: &Summary, md: bool) -> String {
    let mut out = String::new();
    let head = [
        "class",
        "packets",
        "frames",
        "iptables passed",
        "fw passed",
        "differences",
        "documented",
    ];
    let line = |cells: &[String]| -> String {
        if md {
            format!("| {} |\n", cells.join(" | "))
        } else {
            format!(
                "{:<17} {:>8} {:>8} {:>16} {:>10} {:>12} {:>11}\n",
                cells[0], cells[1], cells[2], cells[3], cells[4], cells[5], cells[6]
            )
        }
    };
    out.push_str(&line(&head.map(String::from)));
    if md {
        out.push_str("|---|--:|--:|--:|--:|--:|--:|\n");
    }
    let row = |name: &str, r: &Row| {
        line(&[
            name.to_string(),
            r.probes.to_string(),
            r.frames.to_string(),
            r.ipt_passed.to_string(),
            r.fw_passed.to_string(),
            r.differences.to_string(),
            r.explained.to_string(),
        ])
    };
    for (c, r) in &s.rows {
        out.push_str(&row(c.name(), r));
    }
    out.push_str(&row(if md { "**total**" } else { "total" }, &s.total));
    out
}

/// The terminal report of one case.
pub fn text(r: &CaseResult, s: &Summary) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "== case {}: {}", r.case.name, r.case.title);
    let _ = writeln!(
        out,
        "   iptables: {}; fw: {} (XDP {}); {:.1} s, {} / {} frames sent",
        r.case.ipt_origin,
        r.case.fw_origin,
        r.xdp_mode,
        r.elapsed.as_secs_f64(),
        r.frames[0],
        r.frames[1]
    );
    out.push_str(&table(s, false));
    if !s.known.is_empty() {
        out.push_str("documented differences:\n");
        for (k, c) in &s.known {
            let _ = writeln!(
                out,
                "  {} ({} passes): {} packets",
                k.id(),
                if k.fw_passes() { "fw" } else { "iptables" },
                c.count
            );
            for e in &c.examples {
                let _ = writeln!(out, "      e.g. {e}");
            }
        }
        if s.consequences > 0 {
            let _ = writeln!(
                out,
                "  (and {} later packets of the same flows, which the hosts then saw in different states)",
                s.consequences
            );
        }
    }
    if s.unexplained_count > 0 {
        let _ = writeln!(out, "UNEXPLAINED DIFFERENCES: {}", s.unexplained_count);
        for u in &s.unexplained {
            let _ = writeln!(out, "  - {u}");
        }
    }
    if r.testrun_checked > 0 {
        let _ = writeln!(
            out,
            "BPF_PROG_TEST_RUN: {} stateless packets run through the same fw program; the XDP verdicts seen on the wire {}",
            r.testrun_checked,
            if r.harness.iter().any(|h| h.contains("test run")) {
                "DIFFER (see below)"
            } else {
                "are the same"
            }
        );
    }
    if r.harness.is_empty() {
        out.push_str("observation: no frame lost, no stray observation\n");
    } else {
        out.push_str("THE RUN IS NOT VALID:\n");
        for h in &r.harness {
            let _ = writeln!(out, "  - {h}");
        }
    }
    let _ = writeln!(
        out,
        "result: {}",
        if s.ok(r) {
            if s.total.differences == 0 {
                "0 differences".to_string()
            } else {
                format!("{} differences, all documented", s.total.differences)
            }
        } else {
            "FAILED".to_string()
        }
    );
    out
}

/// The Markdown report of one case.
pub fn markdown(r: &CaseResult, s: &Summary) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "### {}: {}\n", r.case.name, r.case.title);
    let _ = writeln!(
        out,
        "iptables: {}. fw: {} (XDP {}). {} packets ({} frames to each host), {:.0} s.\n",
        r.case.ipt_origin,
        r.case.fw_origin,
        r.xdp_mode,
        s.total.probes,
        r.frames[1],
        r.elapsed.as_secs_f64()
    );
    out.push_str(&table(s, true));
    out.push('\n');
    if s.known.is_empty() {
        out.push_str("No differences.\n\n");
    } else {
        out.push_str("| documented difference | passes | packets | classes | example |\n|---|---|--:|---|---|\n");
        for (k, c) in &s.known {
            let classes: Vec<String> = c
                .classes
                .iter()
                .map(|(cl, n)| format!("{cl} {n}"))
                .collect();
            let _ = writeln!(
                out,
                "| {} | {} | {} | {} | {} |",
                k.id(),
                if k.fw_passes() { "fw" } else { "iptables" },
                c.count,
                classes.join(", "),
                c.examples
                    .first()
                    .cloned()
                    .unwrap_or_default()
                    .replace('|', "\\|")
            );
        }
        if s.consequences > 0 {
            let _ = writeln!(
                out,
                "| (later packets of those flows) | | {} | | the hosts' connection states differ after the first difference |",
                s.consequences
            );
        }
        out.push('\n');
    }
    if s.unexplained_count > 0 {
        let _ = writeln!(
            out,
            "**{} unexplained differences:**\n",
            s.unexplained_count
        );
        for u in &s.unexplained {
            let _ = writeln!(out, "- {}", u.replace('|', "\\|"));
        }
        out.push('\n');
    }
    if !r.harness.is_empty() {
        out.push_str("**The run is not valid:**\n\n");
        for h in &r.harness {
            let _ = writeln!(out, "- {h}");
        }
        out.push('\n');
    }
    out
}

/// Probes that passed differently, with their description (for callers that want them all).
pub fn differences(r: &CaseResult) -> Vec<(&Probe, &Outcome)> {
    r.probes
        .iter()
        .zip(&r.outcomes)
        .filter(|(_, o)| o.differs())
        .collect()
}
