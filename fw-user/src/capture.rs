//! `fw capture`: packets the filter dropped (optionally also passed) as a pcap file, like
//! xdpcap. The kernel side selects by reason and is bounded by a token bucket (`rate` records
//! a second) and the ring buffer's size, so a capture during a flood costs a bounded amount;
//! ports and source ranges are filtered here, on the copied bytes. While no capture runs the
//! fast path reads one flag and pays nothing else.

use std::{io::Write, time::Duration};

use fw_common::{
    Reason,
    obs::{CAPTURE_SNAP, ObsConfig},
};
use serde::Serialize;

use crate::{
    Error,
    droplog::{self, Filter, PacketEvent},
    lock::Lock,
    obs::{ObsMaps, ObsStats, Ring, RingBusy, RingReader, rate_params},
    paths::{IfaceName, IfacePaths},
    pcap::PcapWriter,
};

/// Version of the `--json` summary of `fw capture`.
pub const CAPTURE_SCHEMA: u32 = 1;

/// Default records per second the kernel hands to a capture.
pub const DEFAULT_RATE: u32 = 10_000;

#[derive(Clone, Debug)]
pub struct CaptureSpec {
    /// Reasons to capture (empty: every reason that drops).
    pub reasons: Vec<Reason>,
    /// Also capture passed packets (every reason that passes, and allow-rule matches).
    pub passed: bool,
    pub filter: Filter,
    /// Stop after this many packets written.
    pub count: Option<u64>,
    /// Stop after this long.
    pub duration: Option<Duration>,
    /// Records per second at most, from the kernel.
    pub rate: u32,
}

#[derive(Debug, Serialize)]
pub struct CaptureSummary {
    pub schema: u32,
    pub iface: String,
    /// Packets written to the file.
    pub packets: u64,
    /// Records the kernel handed over but the port/source filter left out.
    pub filtered_out: u64,
    /// Records the kernel's token bucket held back meanwhile.
    pub suppressed: u64,
    /// Records lost because the ring buffer was full.
    pub lost: u64,
}

/// The kernel-side selection for `spec`.
pub fn obs_fields(spec: &CaptureSpec) -> (u32, u64) {
    let chosen: Vec<Reason> = if spec.reasons.is_empty() {
        Reason::ALL
            .iter()
            .copied()
            .filter(|r| !r.passes())
            .collect()
    } else {
        spec.reasons.clone()
    };
    let mut mask = 0u64;
    let mut flags = 0;
    for r in &chosen {
        mask |= 1u64 << r.slot();
        flags |= if r.passes() {
            ObsConfig::CAPTURE_PASSES
        } else {
            ObsConfig::CAPTURE_DROPS
        };
    }
    if spec.passed {
        for r in Reason::ALL.iter().filter(|r| r.passes()) {
            mask |= 1u64 << r.slot();
        }
        flags |= ObsConfig::CAPTURE_PASSES | ObsConfig::CAPTURE_RULES;
    }
    (flags, mask)
}

const CAPTURE_FLAGS: u32 =
    ObsConfig::CAPTURE_DROPS | ObsConfig::CAPTURE_PASSES | ObsConfig::CAPTURE_RULES;

/// Turns the kernel side of a capture off when dropped (also on error or panic).
struct Armed {
    paths: IfacePaths,
}

impl Drop for Armed {
    fn drop(&mut self) {
        let r = Lock::acquire(&self.paths).and_then(|_lock| {
            let mut m = ObsMaps::open(&self.paths)?;
            m.update(|c| c.flags &= !CAPTURE_FLAGS)
        });
        if let Err(e) = r {
            log::warn!("{}: turning the capture off: {e}", self.paths.iface);
        }
    }
}

/// Capture on `iface` into `out` until `spec`'s count or duration, or until `stop()` says so.
/// `on_ready` runs once the kernel hands packets over; `on_packet` sees every packet written
/// (for a live line per packet).
pub fn run<W: Write>(
    iface: &IfaceName,
    spec: &CaptureSpec,
    out: W,
    stop: &dyn Fn() -> bool,
    on_ready: &dyn Fn(),
    on_packet: &mut dyn FnMut(&PacketEvent),
) -> Result<(CaptureSummary, W), Error> {
    crate::paths::ensure_bpffs()?;
    let paths = IfacePaths::new(iface)?;
    if !paths.is_attached()? {
        return Err(Error::NotAttached(iface.to_string()));
    }
    let mut reader = match RingReader::open(&paths, Ring::Capture) {
        Ok(r) => r,
        Err(RingBusy::Held(pid)) => {
            return Err(Error::Refused(format!(
                "{iface}: a capture is already running (pid {}); one at a time per interface",
                pid.map_or("?".into(), |p| p.to_string())
            )));
        }
        Err(RingBusy::Error(e)) => return Err(e),
    };
    // Records a killed capture left behind are not this capture's.
    while reader.ring.next().is_some() {}
    let (flags, mask) = obs_fields(spec);
    let (interval, burst) = rate_params(spec.rate, spec.rate.clamp(1, 1000));
    let before = arm(&paths, flags, mask, interval, burst)?;
    let armed = Armed {
        paths: paths.clone(),
    };
    let mut pcap =
        PcapWriter::new(out, CAPTURE_SNAP as u32).map_err(|e| Error::io("capture file", e))?;
    on_ready();
    let mut filtered_out = 0;
    let started = std::time::Instant::now();
    let offset = droplog::boot_to_unix_ns();
    let done = |n: u64| spec.count.is_some_and(|c| n >= c);
    'outer: while !stop() && !done(pcap.packets()) {
        if spec.duration.is_some_and(|d| started.elapsed() >= d) {
            break;
        }
        reader.wait(200);
        while let Some(item) = reader.ring.next() {
            let Some((h, data)) = droplog::split(&item) else {
                continue;
            };
            let e = droplog::decode(&h, data, iface.as_str(), offset);
            if !spec.filter.matches(&e) {
                filtered_out += 1;
                continue;
            }
            pcap.write(e.unix_ns, data, h.len)
                .map_err(|e| Error::io("capture file", e))?;
            on_packet(&e);
            if done(pcap.packets()) {
                break 'outer;
            }
        }
        pcap.flush().map_err(|e| Error::io("capture file", e))?;
    }
    drop(armed);
    pcap.flush().map_err(|e| Error::io("capture file", e))?;
    let after = ObsMaps::open(&paths)?.stats()?;
    let summary = CaptureSummary {
        schema: CAPTURE_SCHEMA,
        iface: iface.to_string(),
        packets: pcap.packets(),
        filtered_out,
        suppressed: after.capture_suppressed - before.capture_suppressed,
        lost: after.capture_lost - before.capture_lost,
    };
    Ok((summary, pcap.into_inner()))
}

/// Turn the kernel side on (under the interface lock). Returns the counters before.
fn arm(
    paths: &IfacePaths,
    flags: u32,
    mask: u64,
    interval: u64,
    burst: u64,
) -> Result<ObsStats, Error> {
    let _lock = Lock::acquire(paths)?;
    crate::obs::check_observable(&crate::state::State::load(paths)?)?;
    let mut m = ObsMaps::open(paths)?;
    let before = m.stats()?;
    m.update(|c| {
        c.flags = (c.flags & !CAPTURE_FLAGS) | flags;
        c.capture_reasons = mask;
        c.capture_interval_ns = interval;
        c.capture_burst_ns = burst;
    })?;
    Ok(before)
}

/// A reason by its name as `fw status` prints it.
pub fn reason_by_name(name: &str) -> Result<Reason, String> {
    Reason::ALL
        .iter()
        .copied()
        .find(|r| r.name() == name)
        .ok_or_else(|| {
            format!(
                "unknown reason {name:?}; one of: {}",
                Reason::ALL
                    .iter()
                    .map(|r| r.name())
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(reasons: &[Reason], passed: bool) -> CaptureSpec {
        CaptureSpec {
            reasons: reasons.to_vec(),
            passed,
            filter: Filter::default(),
            count: None,
            duration: None,
            rate: DEFAULT_RATE,
        }
    }

    #[test]
    fn by_default_every_drop_reason_and_no_pass_is_captured() {
        let (flags, mask) = obs_fields(&spec(&[], false));
        assert_eq!(flags, ObsConfig::CAPTURE_DROPS);
        let c = ObsConfig {
            flags,
            capture_reasons: mask,
            ..Default::default()
        };
        for r in Reason::ALL {
            assert_eq!(c.captures(r.slot(), r.passes()), !r.passes(), "{r:?}");
        }
        assert!(
            !c.captures(fw_common::maps::RULE_SLOT_BASE, true),
            "rule matches are passes"
        );
    }

    #[test]
    fn one_reason_or_passes_as_asked() {
        let (flags, mask) = obs_fields(&spec(&[Reason::TcpNull], true));
        let c = ObsConfig {
            flags,
            capture_reasons: mask,
            ..Default::default()
        };
        assert!(c.captures(Reason::TcpNull.slot(), false));
        assert!(!c.captures(Reason::DefaultDrop.slot(), false));
        assert!(c.captures(Reason::Established.slot(), true));
        assert!(c.captures(70, true));
    }

    #[test]
    fn reasons_are_found_by_name() {
        assert_eq!(reason_by_name("tcp-null"), Ok(Reason::TcpNull));
        let e = reason_by_name("nope").unwrap_err();
        assert!(e.contains("default-drop"), "{e}");
    }
}
