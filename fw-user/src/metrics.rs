//! Prometheus metrics: the text exposition format (0.0.4) of every attached filter's status,
//! for node_exporter's textfile collector (`fw metrics`) or a scrape (`fw serve`).
//!
//! Counters are monotonic while a filter stays attached: rule counters keep their slot across
//! `fw apply`, `fw allow`, flush, rollback and `fw up` with a policy (see `fw_policy::ids`).
//! They restart only when the filter is attached afresh (`fw down` + `fw up`, or a heal after
//! the interface was recreated); `fw_attached_timestamp_seconds` changes then, so a dashboard
//! can tell (Prometheus' `rate()` treats the drop as a reset either way).
//!
//! Label names and metric names are versioned by [`METRICS_SCHEMA`] (in `fw_build_info`).
//! To add a family (rate-limit hits, blocklist hits once they exist), add it in
//! [`families_of`] from the status (or a new source read there), with a `help` text: the
//! writer takes care of escaping and grouping.

use std::fmt::Write as _;

use crate::{obs::ObsStats, status::IfaceStatus};

/// Version of the metric and label names: bumped when one changes meaning or goes away.
pub const METRICS_SCHEMA: u32 = 1;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Counter,
    Gauge,
}

/// One metric family: name, help, type, and its samples (labels, value).
#[derive(Clone, Debug)]
pub struct Family {
    pub name: &'static str,
    pub help: &'static str,
    pub kind: Kind,
    pub samples: Vec<(Vec<(&'static str, String)>, f64)>,
}

impl Family {
    pub fn new(name: &'static str, kind: Kind, help: &'static str) -> Self {
        Family {
            name,
            help,
            kind,
            samples: Vec::new(),
        }
    }

    pub fn add(&mut self, labels: Vec<(&'static str, String)>, v: impl Into<f64>) {
        self.samples.push((labels, v.into()));
    }
}

/// A label value as the exposition format wants it: backslash, double quote and newline
/// escaped.
pub fn escape_label(v: &str) -> String {
    let mut s = String::with_capacity(v.len());
    for c in v.chars() {
        match c {
            '\\' => s.push_str("\\\\"),
            '"' => s.push_str("\\\""),
            '\n' => s.push_str("\\n"),
            c => s.push(c),
        }
    }
    s
}

/// HELP text escaping: backslash and newline.
fn escape_help(v: &str) -> String {
    v.replace('\\', "\\\\").replace('\n', "\\n")
}

fn value(v: f64) -> String {
    if v.is_finite() && v.fract() == 0.0 && v.abs() < 1e15 {
        format!("{}", v as i64)
    } else if v.is_nan() {
        "NaN".into()
    } else {
        format!("{v}")
    }
}

/// The families as exposition text. Families with the same name are merged (one HELP/TYPE).
pub fn render(families: &[Family]) -> String {
    let mut order: Vec<&'static str> = Vec::new();
    for f in families {
        if !order.contains(&f.name) {
            order.push(f.name);
        }
    }
    let mut out = String::new();
    for name in order {
        let parts: Vec<&Family> = families.iter().filter(|f| f.name == name).collect();
        let first = parts[0];
        let _ = writeln!(out, "# HELP {name} {}", escape_help(first.help));
        let kind = match first.kind {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
        };
        let _ = writeln!(out, "# TYPE {name} {kind}");
        for f in parts {
            for (labels, v) in &f.samples {
                out.push_str(name);
                if !labels.is_empty() {
                    out.push('{');
                    for (i, (k, lv)) in labels.iter().enumerate() {
                        if i > 0 {
                            out.push(',');
                        }
                        let _ = write!(out, "{k}=\"{}\"", escape_label(lv));
                    }
                    out.push('}');
                }
                let _ = writeln!(out, " {}", value(*v));
            }
        }
    }
    out
}

/// Everything about one interface that the metrics show.
pub struct IfaceMetrics {
    pub status: IfaceStatus,
    /// The drop log and capture counters (`None`: a filter without them).
    pub obs: Option<ObsStats>,
    /// When the filter was attached afresh (Unix seconds), if known.
    pub attached_at: Option<u64>,
}

fn b(v: bool) -> f64 {
    if v { 1.0 } else { 0.0 }
}

/// The metric families of some interfaces, plus `fw_build_info`.
pub fn families(ifaces: &[IfaceMetrics]) -> Vec<Family> {
    let mut build = Family::new(
        "fw_build_info",
        Kind::Gauge,
        "fw version and the metrics schema (metric and label names)",
    );
    build.add(
        vec![
            ("version", env!("CARGO_PKG_VERSION").to_string()),
            ("schema", METRICS_SCHEMA.to_string()),
        ],
        1,
    );
    let mut out = vec![build];
    for m in ifaces {
        out.extend(families_of(m));
    }
    out
}

fn rule_labels(iface: &str, r: &crate::status::RuleStatus) -> Vec<(&'static str, String)> {
    let source = if r.rule.from.is_empty() {
        "any".to_string()
    } else {
        r.rule
            .from
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(",")
    };
    vec![
        ("iface", iface.to_string()),
        ("rule", r.rule.id.to_string()),
        ("proto", r.rule.proto.name().to_string()),
        ("ports", r.rule.ports.to_string()),
        ("source", source),
        ("comment", r.rule.comment.clone().unwrap_or_default()),
    ]
}

/// The families of one interface. Add new ones here.
pub fn families_of(m: &IfaceMetrics) -> Vec<Family> {
    let s = &m.status;
    let iface = || ("iface", s.iface.clone());
    let mut up = Family::new(
        "fw_up",
        Kind::Gauge,
        "1 while fw is attached to the interface",
    );
    up.add(vec![iface()], 1);
    let mut healthy = Family::new(
        "fw_healthy",
        Kind::Gauge,
        "1 when no problem affects filtering (fw status exit 0)",
    );
    healthy.add(vec![iface()], b(s.healthy));
    let mut problems = Family::new(
        "fw_problem",
        Kind::Gauge,
        "a problem fw status reports (1 per problem; code is stable)",
    );
    for p in &s.problems {
        problems.add(
            vec![
                iface(),
                ("code", p.code.to_string()),
                ("degraded", p.degraded.to_string()),
            ],
            1,
        );
    }
    let mut attach = Family::new(
        "fw_attach_info",
        Kind::Gauge,
        "how the filter is attached (xdp mode: native or skb)",
    );
    attach.add(
        vec![
            iface(),
            ("mode", s.mode.name().to_string()),
            ("egress", crate::cli::up::egress_name(&s.egress).to_string()),
        ],
        1,
    );
    let mut generation = Family::new(
        "fw_policy_generation",
        Kind::Gauge,
        "policy generation in force (0 or 1; flips on every policy replacement)",
    );
    generation.add(vec![iface()], s.generation);
    let mut flushed = Family::new(
        "fw_flushed",
        Kind::Gauge,
        "1 while fw flush is in force (everything passes)",
    );
    flushed.add(vec![iface()], b(s.flushed));
    let mut pending = Family::new(
        "fw_confirm_pending",
        Kind::Gauge,
        "1 while an fw apply --confirm waits for fw confirm",
    );
    pending.add(vec![iface()], b(s.pending.is_some()));
    let mut deadline = Family::new(
        "fw_confirm_deadline_timestamp_seconds",
        Kind::Gauge,
        "when a pending confirmation rolls back (Unix time)",
    );
    if let Some(p) = &s.pending {
        deadline.add(vec![iface()], p.deadline as f64);
    }
    let mut rules_n = Family::new("fw_rules", Kind::Gauge, "allow rules in force");
    rules_n.add(vec![iface()], s.rules.len() as f64);
    let mut attached = Family::new(
        "fw_attached_timestamp_seconds",
        Kind::Gauge,
        "when the filter was attached afresh (counters restart only then)",
    );
    if let Some(t) = m.attached_at {
        attached.add(vec![iface()], t as f64);
    }
    let mut rp = Family::new(
        "fw_rule_packets_total",
        Kind::Counter,
        "packets an allow rule let in",
    );
    let mut rb = Family::new(
        "fw_rule_bytes_total",
        Kind::Counter,
        "bytes an allow rule let in",
    );
    for r in &s.rules {
        rp.add(rule_labels(&s.iface, r), r.packets as f64);
        rb.add(rule_labels(&s.iface, r), r.bytes as f64);
    }
    let mut qp = Family::new(
        "fw_reason_packets_total",
        Kind::Counter,
        "packets passed or dropped for a reason other than an allow rule",
    );
    let mut qb = Family::new(
        "fw_reason_bytes_total",
        Kind::Counter,
        "bytes passed or dropped for a reason other than an allow rule",
    );
    for r in &s.reasons {
        let labels = vec![
            iface(),
            ("reason", r.reason.to_string()),
            (
                "verdict",
                if r.verdict == "DROP" { "drop" } else { "pass" }.to_string(),
            ),
        ];
        qp.add(labels.clone(), r.packets as f64);
        qb.add(labels, r.bytes as f64);
    }
    let mut out = vec![
        up, healthy, problems, attach, generation, flushed, pending, deadline, rules_n, attached,
        rp, rb, qp, qb,
    ];
    out.extend(flow_families(s));
    if let Some(o) = &m.obs {
        out.extend(obs_families(&s.iface, o));
    }
    out
}

fn flow_families(s: &IfaceStatus) -> Vec<Family> {
    let mut entries = Family::new(
        "fw_flow_entries",
        Kind::Gauge,
        "entries in a connection-tracking table",
    );
    let mut max = Family::new(
        "fw_flow_max_entries",
        Kind::Gauge,
        "size of a connection-tracking table",
    );
    let mut created = Family::new(
        "fw_flow_created_total",
        Kind::Counter,
        "entries created in a connection-tracking table",
    );
    let mut removed = Family::new(
        "fw_flow_removed_total",
        Kind::Counter,
        "entries removed (expired, closed, promoted)",
    );
    let mut evicted = Family::new(
        "fw_flow_evicted_total",
        Kind::Counter,
        "entries pushed out by the LRU because the table was full",
    );
    for t in &s.connections {
        let l = vec![("iface", s.iface.clone()), ("table", t.table.to_string())];
        entries.add(l.clone(), t.entries as f64);
        max.add(l.clone(), t.max_entries);
        created.add(l.clone(), t.created as f64);
        removed.add(l.clone(), t.removed as f64);
        evicted.add(l, t.evicted as f64);
    }
    vec![entries, max, created, removed, evicted]
}

fn obs_families(iface: &str, o: &ObsStats) -> Vec<Family> {
    let mut log = Family::new(
        "fw_log_records_total",
        Kind::Counter,
        "drop-log records: emitted, suppressed by log_rate, or lost (ring buffer full, no reader)",
    );
    let mut cap = Family::new(
        "fw_capture_records_total",
        Kind::Counter,
        "fw capture records: emitted, suppressed by the capture rate, or lost",
    );
    for (outcome, l, c) in [
        ("emitted", o.log_emitted, o.capture_emitted),
        ("suppressed", o.log_suppressed, o.capture_suppressed),
        ("lost", o.log_lost, o.capture_lost),
    ] {
        let labels = vec![
            ("iface", iface.to_string()),
            ("outcome", outcome.to_string()),
        ];
        log.add(labels.clone(), l as f64);
        cap.add(labels, c as f64);
    }
    vec![log, cap]
}

/// The metrics of every filter attached in this network namespace (or of `ifaces`).
pub fn collect(ifaces: &[crate::paths::IfaceName]) -> Result<Vec<IfaceMetrics>, crate::Error> {
    let mut out = Vec::new();
    for iface in ifaces {
        let status = match crate::status::read(iface) {
            Ok(s) => s,
            Err(crate::Error::NotAttached(_)) => continue,
            Err(e) => return Err(e),
        };
        let paths = crate::paths::IfacePaths::new(iface)?;
        let obs = crate::obs::ObsMaps::open(&paths)
            .and_then(|m| m.stats())
            .ok();
        let attached_at = crate::state::State::load(&paths).ok().and_then(|st| {
            st.log
                .iter()
                .rev()
                .find(|e| e.what.starts_with("up: attached") || e.what.starts_with("heal"))
                .map(|e| e.at)
        });
        out.push(IfaceMetrics {
            status,
            obs,
            attached_at,
        });
    }
    Ok(out)
}

/// The exposition text for these interfaces (all attached ones when empty).
pub fn exposition(ifaces: &[crate::paths::IfaceName]) -> Result<String, crate::Error> {
    let list = if ifaces.is_empty() {
        crate::paths::ensure_bpffs()?;
        crate::paths::attached_ifaces()?
    } else {
        ifaces.to_vec()
    };
    Ok(render(&families(&collect(&list)?)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(escape_label(r#"a"b\c"#), r#"a\"b\\c"#);
        assert_eq!(escape_label("x\ny"), "x\\ny");
    }

    #[test]
    fn families_render_with_help_type_and_merged_samples() {
        let mut a = Family::new("fw_x_total", Kind::Counter, "x things\\n");
        a.add(
            vec![("iface", "eth0".into()), ("comment", "say \"hi\"".into())],
            3,
        );
        let mut b = Family::new("fw_x_total", Kind::Counter, "x things");
        b.add(vec![("iface", "eth1".into())], 4.5);
        let mut g = Family::new("fw_g", Kind::Gauge, "g");
        g.add(vec![], 0);
        let text = render(&[a, g, b]);
        assert_eq!(
            text,
            "# HELP fw_x_total x things\\\\n\n\
             # TYPE fw_x_total counter\n\
             fw_x_total{iface=\"eth0\",comment=\"say \\\"hi\\\"\"} 3\n\
             fw_x_total{iface=\"eth1\"} 4.5\n\
             # HELP fw_g g\n\
             # TYPE fw_g gauge\n\
             fw_g 0\n"
        );
    }

    #[test]
    fn large_counters_are_exact_integers() {
        assert_eq!(value(123_456_789_012.0), "123456789012");
        assert_eq!(value(0.25), "0.25");
    }

    #[test]
    fn build_info_names_the_schema() {
        let text = render(&families(&[]));
        assert!(text.contains(&format!(
            "fw_build_info{{version=\"{}\",schema=\"{METRICS_SCHEMA}\"}} 1",
            env!("CARGO_PKG_VERSION")
        )));
    }
}
