//! The `fw` binary under test, the tools a lab needs, and `fw status --json` read back.

use std::{
    path::{Path, PathBuf},
    time::Duration,
};

use serde_json::Value;

use crate::proc::{is_root, on_path};

/// Bound for one `fw` command.
pub const FW_TIMEOUT: Duration = Duration::from_secs(60);

/// The workspace root (the parent of this crate).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("fw-lab has a parent")
        .to_path_buf()
}

pub(crate) fn fw_bin_path() -> PathBuf {
    match std::env::var_os("FW_BIN") {
        Some(p) if !p.is_empty() => PathBuf::from(p),
        _ => workspace_root().join("target/debug/fw"),
    }
}

/// The `fw` binary under test: `$FW_BIN`, else `<workspace>/target/debug/fw`; panics if it is
/// missing.
#[track_caller]
pub fn fw_bin() -> PathBuf {
    let p = fw_bin_path();
    assert!(
        p.is_file(),
        "the fw binary is missing at {} (FW_BIN={:?}): build it with cargo xtask test \
         (or `cargo build -p fw-user` and set FW_BIN)",
        p.display(),
        std::env::var_os("FW_BIN")
    );
    p
}

/// Fail with a clear message unless running as root.
#[track_caller]
pub fn require_root() {
    assert!(
        is_root(),
        "the end-to-end tests (tests/tests/e2e_*.rs) create network namespaces and attach XDP \
         programs: they must run as root; run `cargo xtask test` as root"
    );
}

/// Fail with a clear message if a tool is missing.
#[track_caller]
pub fn require_tools(tools: &[&str]) {
    for t in tools {
        assert!(
            on_path(t),
            "`{t}` is not installed, and the end-to-end tests need it; `cargo xtask setup` \
             installs nmap, hping3, tcpdump, iproute2, iputils-ping, netcat-openbsd, bpftool"
        );
    }
}

/// Everything an e2e test needs before it starts: root, `ip`, `nsenter`, `bpftool`, the given
/// tools, and the fw binary.
#[track_caller]
pub fn preflight(tools: &[&str]) {
    require_root();
    require_tools(&["ip", "nsenter", "bpftool"]);
    require_tools(tools);
    fw_bin();
}

/// Ids of a pinned XDP link.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LinkIds {
    pub link_id: u64,
    pub prog_id: u64,
}

/// One connection table of `fw status --json` ("out", "in" or "embryo").
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TableCounts {
    pub entries: u64,
    pub created: u64,
    pub removed: u64,
    pub evicted: u64,
}

/// One interface of `fw status --json`.
#[derive(Clone, Debug)]
pub struct Status(pub Value);

impl Status {
    /// The first interface of `fw status --json` output.
    pub fn parse(json: &str) -> Result<Status, String> {
        let v: Value = serde_json::from_str(json)
            .map_err(|e| format!("fw status --json is not JSON ({e}): {json}"))?;
        v.as_array()
            .and_then(|a| a.first())
            .cloned()
            .map(Status)
            .ok_or_else(|| format!("fw status --json: no interface: {json}"))
    }

    /// Packets counted under a reason (`default-drop`, `tcp-null`, ...).
    #[track_caller]
    pub fn reason(&self, name: &str) -> u64 {
        self.0["reasons"]
            .as_array()
            .and_then(|a| a.iter().find(|r| r["reason"] == name))
            .and_then(|r| r["packets"].as_u64())
            .unwrap_or_else(|| panic!("no reason {name:?} in fw status: {:#}", self.0))
    }

    /// Packets counted by the rules that allow exactly `port`/`proto` (summed).
    #[track_caller]
    pub fn rule(&self, port: u16, proto: &str) -> u64 {
        let rules = self.rules_for(port, proto);
        assert!(
            !rules.is_empty(),
            "no rule for {port}/{proto} in fw status: {:#}",
            self.0
        );
        rules
            .iter()
            .map(|r| r["packets"].as_u64().unwrap_or(0))
            .sum()
    }

    /// The rules for exactly `port`/`proto`.
    pub fn rules_for(&self, port: u16, proto: &str) -> Vec<Value> {
        self.0["rules"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter(|r| {
                        r["proto"] == proto
                            && (r["ports"].as_u64() == Some(u64::from(port))
                                || r["ports"].as_str() == Some(&port.to_string()))
                    })
                    .cloned()
                    .collect()
            })
            .unwrap_or_default()
    }

    #[track_caller]
    pub fn generation(&self) -> u64 {
        self.0["generation"].as_u64().expect("generation")
    }

    /// The rules without their counters (to compare policies).
    pub fn rules_without_counters(&self) -> Vec<Value> {
        self.0["rules"]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .into_iter()
            .map(|mut r| {
                if let Some(o) = r.as_object_mut() {
                    o.remove("packets");
                    o.remove("bytes");
                }
                r
            })
            .collect()
    }

    /// The occupancy and counters of one connection table.
    #[track_caller]
    pub fn table(&self, name: &str) -> TableCounts {
        let t = self.0["connections"]
            .as_array()
            .and_then(|a| a.iter().find(|t| t["table"] == name))
            .unwrap_or_else(|| panic!("no connection table {name:?} in fw status: {:#}", self.0));
        let n = |k: &str| {
            t[k].as_u64()
                .unwrap_or_else(|| panic!("table {name}: no {k}: {t:#}"))
        };
        TableCounts {
            entries: n("entries"),
            created: n("created"),
            removed: n("removed"),
            evicted: n("evicted"),
        }
    }

    /// Where the policy in force came from.
    pub fn source(&self) -> String {
        self.0["policy_source"].as_str().unwrap_or("").to_string()
    }

    pub fn flushed(&self) -> bool {
        self.0["flushed"].as_bool().unwrap_or(false)
    }

    /// Reason name → packets, and "rule <ports/proto>" → packets, each with its description.
    pub fn counters(&self) -> Vec<(String, u64, String)> {
        let mut out = Vec::new();
        for r in self.0["reasons"].as_array().into_iter().flatten() {
            if let Some(name) = r["reason"].as_str() {
                out.push((
                    name.to_string(),
                    r["packets"].as_u64().unwrap_or(0),
                    r["description"].as_str().unwrap_or("").to_string(),
                ));
            }
        }
        for r in self.0["rules"].as_array().into_iter().flatten() {
            let d = r["description"].as_str().unwrap_or("");
            out.push((
                format!("rule {}", d.split_whitespace().next().unwrap_or("?")),
                r["packets"].as_u64().unwrap_or(0),
                d.to_string(),
            ));
        }
        out
    }
}
