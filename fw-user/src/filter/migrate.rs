//! Upgrading across map layouts without a gap. An fw whose maps have another layout keeps its
//! pins under another versioned directory (`/sys/fs/bpf/fw/v1/…`); the maps cannot be reused,
//! but the links can: the new programs (with new maps) replace the old ones on the same XDP
//! and TCX links, the links are pinned where this fw keeps them, and the old pins and state are
//! removed. The policy in force comes along from the old state (its rule ids too, which are
//! the counter identities from layout 3 on). At no moment is the interface unfiltered — what
//! `apt upgrade` followed by `systemctl reload fw` needs. What lived only in the old maps
//! starts afresh: the counters (once, at the takeover: Prometheus sees one reset), the
//! tracked connections (seeded again from the host's sockets), and the drop log and capture
//! settings (the policy's `log` option is applied again; a running `fw capture` or `fw log`
//! must be restarted).

use std::path::{Path, PathBuf};

use aya::Ebpf;
use fw_policy::Policy;
use serde_json::Value;

use super::{Filter, UpKind, UpOptions, UpReport, write_record};
use crate::{
    Error, attach,
    lock::Lock,
    maps::PinnedMaps,
    paths::{self, IfaceName, IfacePaths},
    sockets::seed_flows,
    state::{AttachMode, Entry, Record, STATE_VERSION, State},
};

/// What the old fw's state says is in force.
struct Legacy {
    entry: Entry,
    mode: AttachMode,
}

/// Read the old state leniently: this fw's own shape (the current record), or the first
/// release's (`policy`, `source`, `flushed`, `mode` at the top).
fn read_legacy(file: &Path) -> Option<Legacy> {
    let v: Value = serde_json::from_str(&std::fs::read_to_string(file).ok()?).ok()?;
    let top = v.get("current").unwrap_or(&v);
    let policy: Policy = serde_json::from_value(top.get("policy")?.clone()).ok()?;
    let source = top
        .get("source")
        .and_then(Value::as_str)
        .unwrap_or("the policy of the previous fw")
        .to_string();
    let flushed = top.get("flushed").and_then(Value::as_bool).unwrap_or(false);
    let mode = match v.get("mode").and_then(Value::as_str) {
        Some("skb") => AttachMode::Skb,
        _ => AttachMode::Native,
    };
    Some(Legacy {
        entry: Entry {
            policy,
            source,
            flushed,
        },
        mode,
    })
}

/// The old fw's state directory for the pin directory `old_pins`
/// (`/sys/fs/bpf/fw/vN/<netns>/<iface>` ↔ `/run/fw/vN/<netns>/<iface>`).
fn old_state_dir(old_pins: &Path) -> Option<PathBuf> {
    let rel = old_pins
        .strip_prefix(Path::new(paths::BPFFS).join("fw"))
        .ok()?;
    Some(Path::new(paths::RUN_DIR).join(rel))
}

impl Filter {
    /// Take over the filter an fw of another map layout attached to `iface` (see the module
    /// comment). The policy is the old one, or `opts.policy` if given.
    pub(super) fn migrate(
        iface: &IfaceName,
        ifindex: u32,
        old_layout: &str,
        old_pins: &Path,
        opts: &UpOptions<'_>,
    ) -> Result<(Filter, UpReport, Ebpf), Error> {
        let paths = IfacePaths::new(iface)?;
        let lock = Lock::acquire(&paths)?;
        let old_state = old_state_dir(old_pins);
        let legacy = old_state
            .as_ref()
            .and_then(|d| read_legacy(&d.join("state.json")));
        let entry = match (opts.policy, &legacy) {
            (Some((p, source)), _) => {
                opts.guard.check(p)?;
                Entry {
                    policy: p.clone(),
                    source: source.to_string(),
                    flushed: false,
                }
            }
            (None, Some(l)) => l.entry.clone(),
            (None, None) => {
                return Err(Error::Other(format!(
                    "{iface}: an fw of map layout {old_layout} is attached, and its state (the policy it runs) cannot be read; give the policy to carry on with: fw up --iface {iface} --policy FILE (the programs are replaced on the same links, without a gap)"
                )));
            }
        };
        let record = Record::fresh(entry, 0);
        let max_flows = record.current.policy.options.max_flows;
        let r = (|| {
            let mut ebpf = crate::loader::load_object(&paths, opts.log, max_flows)?;
            let mut maps = PinnedMaps::open(&paths)?;
            write_record(&mut maps, &paths, &record, None)?;
            super::flood::sync_from_maps(&mut maps, &paths, &record.current.policy)?;
            maps.set_active(0)?;
            seed_flows(&mut maps)?;
            let egress = attach::adopt_links(&mut ebpf, old_pins, &paths)?;
            seed_flows(&mut maps)?;
            Ok((ebpf, maps, egress))
        })();
        let (ebpf, maps, egress) = match r {
            Ok(v) => v,
            Err(e) => {
                // The old filter still runs on its links if adopting them failed before the
                // XDP swap; only what this run made is removed.
                if !paths.is_attached().unwrap_or(true) {
                    let _ = paths.remove_pins();
                }
                return Err(e);
            }
        };
        let mode = legacy.as_ref().map_or(AttachMode::Native, |l| l.mode);
        let mut state = State {
            version: STATE_VERSION,
            iface: iface.to_string(),
            ifindex,
            mode,
            variant: crate::loader::loaded_variant(&ebpf),
            multiprog: None,
            why_not_native: None,
            egress,
            record,
            txn: None,
            log: Vec::new(),
        };
        state.note(format!(
            "up: took over the filter of an fw of map layout {old_layout} (same links, no gap)"
        ));
        state.save(&paths)?;
        crate::obs::sync_policy_log(&paths, &state.current().policy.options)?;
        // The old maps and state: nothing uses them any more.
        if let Err(e) = std::fs::remove_dir_all(old_pins) {
            log::warn!("{}: {e}", old_pins.display());
        }
        if let Some(d) = old_state {
            let _ = std::fs::remove_dir_all(d);
        }
        let report = UpReport {
            kind: UpKind::Healed(format!(
                "took over the filter of an fw of map layout {old_layout} on the same links, without a gap"
            )),
            mode,
            egress,
            native_unavailable: None,
            changes: None,
            notes: Vec::new(),
        };
        Ok((
            Filter {
                iface: iface.clone(),
                paths,
                _lock: lock,
                state,
                maps,
            },
            report,
            ebpf,
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_state_shapes_of_earlier_fws_are_read() {
        let dir = std::env::temp_dir().join(format!("fw-migrate-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let f = dir.join("state.json");
        let first = r#"{"iface":"eth0","mode":"skb","generation":1,"flushed":false,
            "policy":{"options":{},"rules":[{"id":0,"proto":"tcp","ports":22}]},
            "source":"/etc/fw/fw.toml"}"#;
        std::fs::write(&f, first).unwrap();
        let l = read_legacy(&f).expect("first release's state");
        assert_eq!(l.entry.source, "/etc/fw/fw.toml");
        assert_eq!(l.mode, AttachMode::Skb);
        assert_eq!(l.entry.policy.rules.len(), 1);
        let second = r#"{"version":2,"iface":"eth0","mode":"native",
            "current":{"policy":{"options":{},"rules":[]},"source":"seed","flushed":true}}"#;
        std::fs::write(&f, second).unwrap();
        let l = read_legacy(&f).expect("this fw's state shape");
        assert!(l.entry.flushed);
        assert_eq!(l.entry.source, "seed");
        std::fs::write(&f, "garbage").unwrap();
        assert!(read_legacy(&f).is_none());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn the_old_state_directory_mirrors_the_old_pin_directory() {
        let pins = Path::new("/sys/fs/bpf/fw/v1/4026531840/eth0");
        assert_eq!(
            old_state_dir(pins).unwrap(),
            Path::new("/run/fw/v1/4026531840/eth0")
        );
        assert!(old_state_dir(Path::new("/tmp/x")).is_none());
    }
}
