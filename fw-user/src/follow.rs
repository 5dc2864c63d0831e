//! `fw log`: follow the drop log of one or more filters, like `journalctl -f`. A BPF ring
//! buffer has one reader: while `fw serve` forwards a filter's log to syslog, `fw log` says so
//! and points at the journal instead of stealing records. When the policy does not log drops,
//! `fw log` turns the log on for as long as it runs (at its own rate) and back off after.

use crate::{
    Error,
    droplog::{self, Filter, PacketEvent},
    lock::Lock,
    obs::{ObsMaps, Ring, RingBusy, RingReader, apply_log_options, rate_params},
    paths::{IfaceName, IfacePaths},
};
use fw_common::obs::ObsConfig;

pub struct FollowSpec {
    pub filter: Filter,
    /// Stop after this many records printed.
    pub count: Option<u64>,
    /// Records per second while following (default: the policy's `log_rate`).
    pub rate: Option<u32>,
}

/// One filter's drop log, read by this process.
pub struct Source {
    iface: String,
    reader: RingReader,
    /// Set when this process changed the log config and must restore the policy's.
    restore: Option<IfacePaths>,
}

impl Drop for Source {
    fn drop(&mut self) {
        let Some(paths) = &self.restore else {
            return;
        };
        let r = Lock::acquire(paths).and_then(|_l| {
            let opts = crate::state::State::load(paths)?
                .current()
                .policy
                .options
                .clone();
            let mut m = ObsMaps::open(paths)?;
            m.update(|c| apply_log_options(c, &opts))
        });
        if let Err(e) = r {
            log::warn!("{}: restoring the drop-log setting: {e}", self.iface);
        }
    }
}

/// Start reading `iface`'s drop log (turning it on at `rate` if the policy does not log).
pub fn open_source(iface: &IfaceName, rate: Option<u32>) -> Result<Source, Error> {
    let paths = IfacePaths::new(iface)?;
    if !paths.is_attached()? {
        return Err(Error::NotAttached(iface.to_string()));
    }
    crate::obs::check_observable(&crate::state::State::load(&paths)?)?;
    let mut reader = match RingReader::open(&paths, Ring::Log) {
        Ok(r) => r,
        Err(RingBusy::Held(pid)) => {
            return Err(Error::Refused(format!(
                "{iface}: the drop log is being read by pid {} (fw serve forwards it to syslog): follow it with `journalctl -f -t fw-drop` (or in /var/log/syslog)",
                pid.map_or("?".into(), |p| p.to_string())
            )));
        }
        Err(RingBusy::Error(e)) => return Err(e),
    };
    while reader.ring.next().is_some() {}
    let _lock = Lock::acquire(&paths)?;
    let opts = crate::state::State::load(&paths)?
        .current()
        .policy
        .options
        .clone();
    let mut m = ObsMaps::open(&paths)?;
    let policy_logs = opts.log == fw_policy::LogMode::Drops;
    let restore = if !policy_logs || rate.is_some() {
        let per_sec = rate.unwrap_or(opts.log_rate);
        let (i, b) = rate_params(per_sec, per_sec.clamp(1, 1000));
        m.update(|c| {
            c.flags |= ObsConfig::LOG_DROPS;
            c.log_interval_ns = i;
            c.log_burst_ns = b;
        })?;
        Some(paths.clone())
    } else {
        None
    };
    Ok(Source {
        iface: iface.to_string(),
        reader,
        restore,
    })
}

impl Source {
    /// Every record waiting now, decoded.
    pub fn drain(&mut self, on_event: &mut dyn FnMut(PacketEvent)) {
        let offset = droplog::boot_to_unix_ns();
        while let Some(item) = self.reader.ring.next() {
            if let Some((h, data)) = droplog::split(&item) {
                on_event(droplog::decode(&h, data, &self.iface, offset));
            }
        }
    }
}

/// Follow the drop log of `ifaces` until `stop()` or the count; `on_ready` runs once every
/// log is being read, `on_event` gets each record that passes the filter. Returns how many it
/// got.
pub fn follow(
    ifaces: &[IfaceName],
    spec: &FollowSpec,
    stop: &dyn Fn() -> bool,
    on_ready: &dyn Fn(),
    on_event: &mut dyn FnMut(&PacketEvent),
) -> Result<u64, Error> {
    let mut sources = Vec::new();
    for iface in ifaces {
        sources.push(open_source(iface, spec.rate)?);
    }
    on_ready();
    let mut n = 0u64;
    let done = |n: u64| spec.count.is_some_and(|c| n >= c);
    while !stop() && !done(n) {
        for s in &mut sources {
            s.drain(&mut |e| {
                if spec.filter.matches(&e) && !done(n) {
                    on_event(&e);
                    n += 1;
                }
            });
        }
        if let Some(s) = sources.first() {
            s.reader.wait(if sources.len() > 1 { 100 } else { 250 });
        }
    }
    Ok(n)
}
