//! What the maps cannot hold: the policy with its comments, where it came from, the policy
//! history (in force, last confirmed, a pending confirmation), how the filter is attached.
//! Kept in /run (gone at reboot, like the pins), mode 0600 in a 0700 directory.
//!
//! **History, not toggles.** `current` is the policy in force (possibly flushed); `confirmed`
//! is the last policy an operator confirmed: the one a filter was attached with, one set by
//! `fw up --policy`/`fw restore`, or one made so by `fw confirm` (which works also when no
//! timer is pending). Every rollback, by command or by the timer, returns to `confirmed`,
//! whatever happened since, and is idempotent. `fw apply` (with or without `--confirm`) and a
//! flush put an entry in force without confirming it; a live edit of the confirmed policy
//! keeps it confirmed.
//!
//! **Write-ahead.** A change the kernel will see is first written here as a [`Txn`] (the whole
//! record as it will be afterwards, and for a generation flip the generation it flips to),
//! then made in the maps, then committed. Whatever point a crash interrupts, the next fw
//! command resolves the transaction from what the kernel shows: flipped → roll forward, not
//! flipped → forget it; an in-place edit is rolled forward.

use std::{
    fs::{self, OpenOptions},
    io::Write as _,
    os::unix::fs::OpenOptionsExt as _,
    time::{SystemTime, UNIX_EPOCH},
};

use fw_policy::Policy;
use serde::{Deserialize, Serialize};

use crate::{Error, paths::IfacePaths};

/// Bumped when the state file's shape changes incompatibly.
pub const STATE_VERSION: u32 = 2;
/// Operations kept in [`State::log`].
const LOG_KEEP: usize = 32;

/// How the XDP program is attached.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AttachMode {
    /// In the driver (native XDP): before the kernel allocates anything.
    Native,
    /// Generic XDP, after the kernel built an skb (slower; works everywhere).
    Skb,
}

impl AttachMode {
    pub fn name(self) -> &'static str {
        match self {
            AttachMode::Native => "native",
            AttachMode::Skb => "skb",
        }
    }
}

/// How the TC egress recorder is attached.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase", tag = "kind")]
pub enum EgressAttach {
    /// A TCX bpf_link (Linux ≥ 6.6), pinned as `tc_link`.
    Tcx,
    /// A cls_bpf filter on a clsact qdisc (older kernels): not a bpf_link, found again by its
    /// priority and handle.
    Clsact { priority: u16, handle: u32 },
}

/// fw's place in a libxdp dispatcher.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MultiProg {
    /// Run priority: lower runs first.
    pub priority: u32,
    /// fw's program (an freplace extension) in the dispatcher.
    pub prog_id: u32,
}

/// A policy as it is (or was) in force.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Entry {
    pub policy: Policy,
    /// Where the policy came from ("embedded seed policy" or a file path).
    pub source: String,
    /// `fw flush`: everything passes (the policy is kept for the way back).
    #[serde(default)]
    pub flushed: bool,
}

/// An `fw apply --confirm` waiting for `fw confirm`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pending {
    /// Identifies the rollback timer that owns this confirmation.
    pub token: u64,
    /// Unix time (seconds) at which the confirmed policy comes back.
    pub deadline: u64,
    /// The timer process, to tell whether it still runs.
    #[serde(default)]
    pub timer_pid: Option<u32>,
}

/// The parts of the state that change together with the kernel.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Record {
    /// The generation in force (0 or 1).
    pub generation: u32,
    pub current: Entry,
    pub confirmed: Entry,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pending: Option<Pending>,
}

/// A change written ahead of the kernel seeing it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Txn {
    /// The whole record once the change is made.
    pub after: Record,
    /// A flip to `after.generation`; `false`: an in-place edit of the active generation.
    pub flip: bool,
}

/// One line of the operations log (`fw status` shows the last ones).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogEntry {
    /// Unix time, seconds.
    pub at: u64,
    pub what: String,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct State {
    pub version: u32,
    pub iface: String,
    /// The interface index the filter was attached to (a recreated interface gets another).
    pub ifindex: u32,
    pub mode: AttachMode,
    /// Which build of the XDP program runs (states written before fw recorded it ran the
    /// single-buffer build).
    #[serde(default = "linear")]
    pub variant: crate::loader::Variant,
    /// fw runs as a component of a libxdp dispatcher (shares the hook with other programs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub multiprog: Option<MultiProg>,
    /// Why native mode was not used, when generic mode was chosen automatically.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub why_not_native: Option<String>,
    pub egress: EgressAttach,
    #[serde(flatten)]
    pub record: Record,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub txn: Option<Txn>,
    #[serde(default)]
    pub log: Vec<LogEntry>,
}

fn linear() -> crate::loader::Variant {
    crate::loader::Variant::Linear
}

/// Write `bytes` to `target` atomically: a new 0600 file beside it (O_EXCL, no symlink
/// followed), fsynced, renamed over the old one. A crash leaves the old or the new content; a
/// failed write leaves the old file and no temporary one.
pub(crate) fn write_private(target: &std::path::Path, bytes: &[u8]) -> Result<(), Error> {
    let name = target
        .file_name()
        .map_or_else(|| "state".into(), |n| n.to_string_lossy().into_owned());
    let tmp = target.with_file_name(format!(".{name}.{}", std::process::id()));
    let _ = fs::remove_file(&tmp);
    let write = || -> std::io::Result<()> {
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(&tmp)?;
        file.write_all(bytes)?;
        file.sync_all()
    };
    if let Err(e) = write() {
        let _ = fs::remove_file(&tmp);
        return Err(Error::io(&tmp, e));
    }
    fs::rename(&tmp, target).map_err(|e| {
        let _ = fs::remove_file(&tmp);
        Error::io(target, e)
    })
}

pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// The Unix second at which `secs` seconds from `now` have passed in full: rounded up, so a
/// deadline checked against [`unix_now`] (rounded down) never comes early (rounded down, a
/// `--confirm 3` rolled back after 2.4 s).
pub fn deadline_after(now: SystemTime, secs: u64) -> u64 {
    let d = now.duration_since(UNIX_EPOCH).unwrap_or_default();
    d.as_secs() + u64::from(d.subsec_nanos() > 0) + secs
}

impl State {
    pub fn load(paths: &IfacePaths) -> Result<Self, Error> {
        let f = paths.state_file();
        let text = fs::read_to_string(&f).map_err(|e| Error::io(&f, e))?;
        let corrupt = |detail: String| Error::CorruptState {
            iface: paths.iface.clone(),
            path: f.clone(),
            detail,
        };
        let st: State = serde_json::from_str(&text).map_err(|e| corrupt(e.to_string()))?;
        if st.version != STATE_VERSION {
            return Err(corrupt(format!(
                "state version {} (this fw writes {STATE_VERSION})",
                st.version
            )));
        }
        Ok(st)
    }

    /// Whether a state file exists (a filter fw attached, or one being attached).
    pub fn exists(paths: &IfacePaths) -> bool {
        paths.state_file().exists()
    }

    /// Write atomically: a new file (0600, never following a link) fsynced, then renamed over
    /// the old one. A crash leaves the old or the new state, never a mix; a full /run fails
    /// here, before anything changes in the kernel.
    pub fn save(&self, paths: &IfacePaths) -> Result<(), Error> {
        paths.prepare_state()?;
        let text = serde_json::to_string_pretty(self).expect("state serializes");
        write_private(&paths.state_file(), text.as_bytes())
    }

    /// Append to the operations log (bounded), and send it to syslog/journald.
    pub fn note(&mut self, what: impl Into<String>) {
        let what = what.into();
        crate::syslog::operation(&self.iface, &what);
        self.log.push(LogEntry {
            at: unix_now(),
            what,
        });
        let n = self.log.len();
        if n > LOG_KEEP {
            self.log.drain(..n - LOG_KEEP);
        }
    }

    /// The policy in force.
    pub fn current(&self) -> &Entry {
        &self.record.current
    }
}

/// Record transitions: pure functions of the record, so every sequence of commands can be
/// checked without a kernel.
impl Record {
    /// A freshly attached filter: `entry` in force and confirmed.
    pub fn fresh(entry: Entry, generation: u32) -> Record {
        Record {
            generation,
            current: entry.clone(),
            confirmed: entry,
            pending: None,
        }
    }

    /// `fw apply` (or a policy given to `fw up`/`fw restore` on a running filter) into
    /// `generation`. The last confirmed policy stays what a rollback returns to. A new
    /// `pending` confirmation replaces one that was pending; without one, a pending
    /// confirmation keeps its deadline (a plain apply does not remove the safety net).
    pub fn applied(&self, entry: Entry, generation: u32, pending: Option<Pending>) -> Record {
        Record {
            generation,
            current: entry,
            confirmed: self.confirmed.clone(),
            pending: pending.or_else(|| self.pending.clone()),
        }
    }

    /// `fw flush`: the current policy flushed, in force; nothing is confirmed by it.
    pub fn flushed(&self, generation: u32) -> Record {
        Record {
            generation,
            current: Entry {
                flushed: true,
                ..self.current.clone()
            },
            confirmed: self.confirmed.clone(),
            pending: self.pending.clone(),
        }
    }

    /// `fw rollback` / the timer: the last confirmed policy, in force; nothing pending.
    pub fn rolled_back(&self, generation: u32) -> Record {
        Record {
            generation,
            current: self.confirmed.clone(),
            confirmed: self.confirmed.clone(),
            pending: None,
        }
    }

    /// `fw confirm`: what is in force becomes the confirmed policy.
    pub fn confirmed_now(&self) -> Record {
        Record {
            generation: self.generation,
            current: self.current.clone(),
            confirmed: self.current.clone(),
            pending: None,
        }
    }

    /// A live edit (`fw allow`/`fw deny`) of the policy in force, in place. An edit of the
    /// confirmed policy (nothing pending, not flushed, nothing applied since) is confirmed with
    /// it; otherwise it rides on the unconfirmed policy in force (a rollback drops both).
    pub fn edited(&self, policy: Policy) -> Record {
        let current = Entry {
            policy,
            ..self.current.clone()
        };
        let confirmed = if self.at_confirmed() {
            current.clone()
        } else {
            self.confirmed.clone()
        };
        Record {
            generation: self.generation,
            current,
            confirmed,
            pending: self.pending.clone(),
        }
    }

    /// Whether a rollback would change anything.
    pub fn at_confirmed(&self) -> bool {
        self.pending.is_none() && self.current == self.confirmed
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_deadline_never_comes_before_its_seconds_have_passed() {
        use std::time::Duration;
        for ms in [0, 1, 400, 999] {
            let now = UNIX_EPOCH + Duration::from_millis(100_000 + ms);
            let d = super::deadline_after(now, 3);
            let due = UNIX_EPOCH + Duration::from_secs(d);
            assert!(due >= now + Duration::from_secs(3), "{ms} ms: due at {d}");
            assert!(
                due < now + Duration::from_secs(4),
                "{ms} ms: due at {d}, a second late"
            );
        }
    }

    use super::*;
    use fw_policy::{SEED_POLICY, parse_policy};

    fn entry(source: &str, port: u16) -> Entry {
        let text = format!("[[allow]]\nports = [{port}]\n");
        Entry {
            policy: parse_policy(source, &text).unwrap(),
            source: source.into(),
            flushed: false,
        }
    }

    fn pending(token: u64) -> Option<Pending> {
        Some(Pending {
            token,
            deadline: 100,
            timer_pid: None,
        })
    }

    #[test]
    fn two_confirm_applies_in_a_row_roll_back_to_the_last_confirmed_policy() {
        let base = Record::fresh(entry("base", 22), 0);
        let a = base.applied(entry("A", 1), 1, pending(1));
        let b = a.applied(entry("B", 2), 0, pending(2));
        assert_eq!(b.confirmed.source, "base");
        let back = b.rolled_back(1);
        assert_eq!(back.current.source, "base");
        assert_eq!(back.pending, None);
    }

    #[test]
    fn rollback_is_idempotent_and_flush_is_not_a_toggle() {
        let base = Record::fresh(entry("base", 22), 0);
        let f = base.flushed(1);
        assert!(f.current.flushed && !f.confirmed.flushed);
        let r1 = f.rolled_back(0);
        let r2 = r1.rolled_back(1);
        assert!(!r1.current.flushed && !r2.current.flushed);
        assert_eq!(r2.current, base.current);
        assert!(r2.at_confirmed());
    }

    #[test]
    fn an_edit_of_the_confirmed_policy_stays_confirmed_and_others_ride_along() {
        let base = Record::fresh(entry("base", 22), 0);
        let mut p = base.current.policy.clone();
        p.rules.clear();
        let e = base.edited(p.clone());
        assert_eq!(e.confirmed.policy, p);
        assert!(e.at_confirmed());
        let pend = base.applied(entry("A", 1), 1, pending(7));
        let e = pend.edited(p.clone());
        assert_eq!(e.current.policy, p);
        assert_eq!(e.confirmed.source, "base");
        assert_eq!(e.pending, pending(7));
        let plain = base.applied(entry("A", 1), 1, None);
        assert_eq!(plain.edited(p.clone()).confirmed.source, "base");
    }

    #[test]
    fn a_plain_apply_is_undone_by_rollback_and_keeps_a_pending_deadline() {
        let base = Record::fresh(entry("base", 22), 0);
        let a = base.applied(entry("A", 1), 1, None);
        assert!(!a.at_confirmed());
        assert_eq!(a.rolled_back(0).current.source, "base");
        let pend = base.applied(entry("A", 1), 1, pending(1));
        let b = pend.applied(entry("B", 2), 0, None);
        assert_eq!(b.pending, pending(1), "the safety net stays");
        assert_eq!(b.rolled_back(1).current.source, "base");
        let c = b.confirmed_now();
        assert_eq!((c.confirmed.source.as_str(), c.pending), ("B", None));
    }

    fn sample() -> State {
        State {
            version: STATE_VERSION,
            iface: "eth0".into(),
            ifindex: 2,
            mode: AttachMode::Native,
            variant: crate::loader::Variant::Frags,
            why_not_native: Some("the MTU".into()),
            multiprog: Some(MultiProg {
                priority: 20,
                prog_id: 7,
            }),
            egress: EgressAttach::Clsact {
                priority: 1,
                handle: 7,
            },
            record: Record::fresh(
                Entry {
                    policy: parse_policy("seed", SEED_POLICY).unwrap(),
                    source: "seed".into(),
                    flushed: false,
                },
                0,
            ),
            txn: None,
            log: Vec::new(),
        }
    }

    #[test]
    fn state_round_trips_through_json() {
        let st = sample();
        let text = serde_json::to_string(&st).unwrap();
        assert_eq!(serde_json::from_str::<State>(&text).unwrap(), st);
    }

    #[test]
    fn the_drop_log_and_capture_are_refused_in_words_under_a_dispatcher() {
        let mut st = sample();
        let e = crate::obs::check_observable(&st).expect_err("multiprog");
        let msg = e.to_string();
        assert!(msg.contains("eth0") && msg.contains("--multiprog"), "{msg}");
        st.multiprog = None;
        assert!(crate::obs::check_observable(&st).is_ok());
    }
}
