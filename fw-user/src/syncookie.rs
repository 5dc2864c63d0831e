//! SYN cookies from XDP, on the userspace side (`syn_cookies` in the policy; the kernel side is
//! `fw_common::syncookie`): the host facts the answers need, written into `FW_COOKIE_CFG`
//! whenever a policy is written; what the kernel must be set to for them to work — said by
//! `fw up`, `fw apply` and `fw status`, never changed by fw; and what the cookie path did.
//!
//! The sysctls are read in the network namespace fw runs in (that of the interface), where
//! they apply.

use std::path::Path;

use aya::maps::{Array, HashMap, MapData, PerCpuArray};
use fw_common::{
    maps::{MAP_COOKIE_CFG, MAP_COOKIE_STATS, MAP_LISTENERS},
    syncookie::{
        ACCEPT_TICKS, CHECK_TICKS, CookieCfg, Listener, ListenerKey, STAT_NAMES, STATS, tick,
    },
};
use fw_policy::{Options, SynCookies};
use serde::Serialize;

use crate::{Error, health::Problem, paths::IfacePaths};

/// The sysctls the cookie path depends on (`None`: could not be read).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Sysctls {
    /// net.ipv4.tcp_syncookies (also for IPv6).
    pub tcp_syncookies: Option<u64>,
    /// net.ipv4.tcp_timestamps.
    pub tcp_timestamps: Option<u64>,
    pub tcp_sack: Option<u64>,
    pub tcp_window_scaling: Option<u64>,
    /// The maximum of net.ipv4.tcp_rmem.
    pub tcp_rmem_max: Option<u64>,
    /// net.core.rmem_max.
    pub rmem_max: Option<u64>,
    /// net.ipv4.ip_default_ttl.
    pub ip_default_ttl: Option<u64>,
}

fn read_num(path: &str, field: usize) -> Option<u64> {
    std::fs::read_to_string(Path::new("/proc/sys").join(path))
        .ok()?
        .split_whitespace()
        .nth(field)?
        .parse()
        .ok()
}

impl Sysctls {
    /// The values in this network namespace.
    pub fn read() -> Self {
        Sysctls {
            tcp_syncookies: read_num("net/ipv4/tcp_syncookies", 0),
            tcp_timestamps: read_num("net/ipv4/tcp_timestamps", 0),
            tcp_sack: read_num("net/ipv4/tcp_sack", 0),
            tcp_window_scaling: read_num("net/ipv4/tcp_window_scaling", 0),
            tcp_rmem_max: read_num("net/ipv4/tcp_rmem", 2),
            rmem_max: read_num("net/core/rmem_max", 0),
            ip_default_ttl: read_num("net/ipv4/ip_default_ttl", 0),
        }
    }

    /// The window scale the kernel gives a cookie connection (`tcp_select_initial_window`:
    /// the receive space it could grow to, above 64 KiB, in powers of two).
    pub fn wscale(&self) -> u8 {
        let space = self
            .tcp_rmem_max
            .unwrap_or(6 << 20)
            .max(self.rmem_max.unwrap_or(0))
            .max(1);
        (space.ilog2().saturating_sub(15)).min(14) as u8
    }
}

/// Possible CPUs: each counts its own SYNs for `auto`.
fn cpus() -> u32 {
    aya::util::nr_cpus().map_or(1, |n| n.max(1) as u32)
}

/// `FW_COOKIE_CFG` for `options` on a link of `mtu` bytes with these sysctls.
pub fn cookie_cfg(options: &Options, s: &Sysctls, mtu: Option<u32>) -> CookieCfg {
    let mtu = mtu.unwrap_or(1500).clamp(1280, 65535);
    let mut flags = 0;
    // Only without per-connection offsets does the echoed timestamp carry the options in the
    // bits the kernel reads (it subtracts an offset only it knows otherwise).
    if s.tcp_timestamps == Some(2) {
        flags |= CookieCfg::TIMESTAMPS;
    }
    if s.tcp_sack.unwrap_or(1) != 0 {
        flags |= CookieCfg::SACK;
    }
    if s.tcp_window_scaling.unwrap_or(1) != 0 {
        flags |= CookieCfg::WSCALE;
    }
    // SYNs a second over every CPU → SYNs a tick (2^30 ns) on one CPU.
    let per_tick = u64::from(options.syn_cookies_threshold) * (1 << 30) / 1_000_000_000;
    CookieCfg {
        threshold: (per_tick / u64::from(cpus())).clamp(1, u64::from(u32::MAX)) as u32,
        mss4: (mtu - 40) as u16,
        mss6: (mtu - 60) as u16,
        wscale: s.wscale(),
        flags,
        ttl: s.ip_default_ttl.map_or(64, |t| t.clamp(1, 255) as u8),
        _pad: 0,
    }
}

/// Write `FW_COOKIE_CFG` of the filter at `paths` for `options` (every time a policy is
/// written, so a changed MTU or sysctl is picked up by `fw apply` too).
pub fn write_cfg(paths: &IfacePaths, options: &Options) -> Result<(), Error> {
    let path = paths.map(MAP_COOKIE_CFG);
    let md = MapData::from_pin(&path).map_err(|e| Error::bpf(path.display().to_string(), e))?;
    let mut a: Array<_, CookieCfg> =
        Array::try_from(aya::maps::Map::Array(md)).map_err(|e| Error::bpf(MAP_COOKIE_CFG, e))?;
    let cfg = cookie_cfg(
        options,
        &Sysctls::read(),
        crate::native::ioctl_mtu(&paths.iface),
    );
    a.set(0, cfg, 0).map_err(|e| Error::bpf(MAP_COOKIE_CFG, e))
}

/// What the kernel's settings mean for `syn_cookies`, in words: one line each, for `fw up` and
/// `fw apply` to print (nothing with `syn_cookies = "off"`).
pub fn notes(options: &Options, s: &Sysctls) -> Vec<String> {
    if options.syn_cookies == SynCookies::Off {
        return Vec::new();
    }
    let mut out = Vec::new();
    let when = match options.syn_cookies {
        SynCookies::Auto => format!(
            "while more than {} SYNs a second arrive",
            options.syn_cookies_threshold
        ),
        _ => "always".to_string(),
    };
    out.push(format!(
        "syn_cookies = \"{}\": SYNs to allowed TCP ports are answered with SYN cookies by fw ({when}), for each listener the kernel is seen accepting cookies; fw changes no sysctl",
        options.syn_cookies.name()
    ));
    match s.tcp_syncookies {
        Some(2) => out.push(
            "net.ipv4.tcp_syncookies = 2: every listener accepts cookies (fw keeps that fresh with one SYN a listener every ~9 s)"
                .into(),
        ),
        Some(1) => out.push(
            "net.ipv4.tcp_syncookies = 1: a listener accepts cookies only for two minutes after its own SYN queue overflowed, so fw answers only during a flood that overflowed it, and hands SYNs back to the kernel when the queue drains; set it to 2 for answers that do not lapse (`sysctl -w net.ipv4.tcp_syncookies=2`, and in /etc/sysctl.d/ to keep it)"
                .into(),
        ),
        Some(0) => out.push(
            "net.ipv4.tcp_syncookies = 0: the kernel refuses every cookie, so fw never answers with one; set it to 2 (`sysctl -w net.ipv4.tcp_syncookies=2`)"
                .into(),
        ),
        _ => out.push("net.ipv4.tcp_syncookies could not be read".into()),
    }
    if s.tcp_timestamps != Some(2) {
        out.push(format!(
            "net.ipv4.tcp_timestamps = {}: connections completed through fw's cookies run without window scaling and SACK (the kernel can only read them from a timestamp without per-connection offset); `sysctl -w net.ipv4.tcp_timestamps=2` keeps them",
            s.tcp_timestamps.map_or("?".to_string(), |v| v.to_string())
        ));
    }
    out
}

/// Problems `fw status` reports for `syn_cookies` (none when it is off).
pub fn problems(options: &Options, s: &Sysctls) -> Vec<Problem> {
    if options.syn_cookies == SynCookies::Off {
        return Vec::new();
    }
    let mut out = Vec::new();
    match s.tcp_syncookies {
        Some(0) | None => out.push(Problem {
            code: "syncookies-off",
            detail: "syn_cookies is on, but net.ipv4.tcp_syncookies = 0: the kernel refuses every cookie, so fw never answers; `sysctl -w net.ipv4.tcp_syncookies=2`".into(),
            degraded: true,
        }),
        Some(1) => out.push(Problem {
            code: "syncookies-1",
            detail: "net.ipv4.tcp_syncookies = 1: fw answers only while a listener's own queue has overflowed in the last two minutes; 2 keeps answers on".into(),
            degraded: false,
        }),
        Some(_) => {}
    }
    if s.tcp_timestamps != Some(2) {
        out.push(Problem {
            code: "syncookies-no-options",
            detail: "net.ipv4.tcp_timestamps is not 2: connections completed through fw's cookies run without window scaling and SACK".into(),
            degraded: false,
        });
    }
    out
}

/// A listener whose cookie mode fw has seen.
#[derive(Clone, Debug, Serialize)]
pub struct ListenerStatus {
    pub addr: std::net::IpAddr,
    pub port: u16,
    /// fw answers for it now (the kernel was seen answering with a cookie recently).
    pub answering: bool,
    /// Seconds since the kernel last answered a SYN for it with a cookie of its own.
    pub kernel_cookie_age_s: f64,
    /// Seconds since fw last answered a SYN for it (`None`: never).
    pub answered_age_s: Option<f64>,
    pub mss: u16,
    pub wscale: Option<u8>,
}

/// What the cookie path did on one interface.
#[derive(Clone, Debug, Serialize)]
pub struct CookieStatus {
    pub mode: SynCookies,
    pub threshold: u32,
    pub sysctls: Sysctls,
    pub listeners: Vec<ListenerStatus>,
    /// Events by name (summed over CPUs).
    pub events: Vec<(String, u64)>,
}

const TICK_S: f64 = (1u64 << 30) as f64 / 1e9;

/// The cookie path's state on the filter at `paths`.
pub fn status(paths: &IfacePaths, options: &Options) -> Result<CookieStatus, Error> {
    let now = tick(crate::sys::monotonic_coarse_ns());
    let path = paths.map(MAP_LISTENERS);
    let md = MapData::from_pin(&path).map_err(|e| Error::bpf(path.display().to_string(), e))?;
    let m: HashMap<_, ListenerKey, Listener> = HashMap::try_from(aya::maps::Map::LruHashMap(md))
        .map_err(|e| Error::bpf(MAP_LISTENERS, e))?;
    let mut listeners = Vec::new();
    for kv in m.iter() {
        let (k, l) = kv.map_err(|e| Error::bpf(MAP_LISTENERS, e))?;
        let addr = if k.family == 4 {
            std::net::IpAddr::from([k.addr[0], k.addr[1], k.addr[2], k.addr[3]])
        } else {
            std::net::IpAddr::from(k.addr)
        };
        let age = |t: u32| f64::from(now.wrapping_sub(t)) * TICK_S;
        listeners.push(ListenerStatus {
            addr,
            port: k.port,
            answering: l.accepts(now),
            kernel_cookie_age_s: age(l.seen),
            answered_age_s: (l.answered != 0 && now.wrapping_sub(l.answered) <= CHECK_TICKS)
                .then(|| age(l.answered)),
            mss: l.mss,
            wscale: (l.wscale != Listener::NO_WSCALE).then_some(l.wscale),
        });
    }
    listeners.sort_by_key(|l| (l.addr, l.port));
    let path = paths.map(MAP_COOKIE_STATS);
    let md = MapData::from_pin(&path).map_err(|e| Error::bpf(path.display().to_string(), e))?;
    let a: PerCpuArray<_, u64> = PerCpuArray::try_from(aya::maps::Map::PerCpuArray(md))
        .map_err(|e| Error::bpf(MAP_COOKIE_STATS, e))?;
    let mut events = Vec::new();
    for (i, name) in STAT_NAMES {
        debug_assert!(i < STATS);
        let v = a.get(&i, 0).map_err(|e| Error::bpf(MAP_COOKIE_STATS, e))?;
        events.push((name.to_string(), v.iter().sum()));
    }
    Ok(CookieStatus {
        mode: options.syn_cookies,
        threshold: options.syn_cookies_threshold,
        sysctls: Sysctls::read(),
        listeners,
        events,
    })
}

/// How long fw keeps answering for a listener after the kernel's last cookie, in seconds.
pub fn accept_window_s() -> f64 {
    f64::from(ACCEPT_TICKS) * TICK_S
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sysctls(syncookies: u64, timestamps: u64) -> Sysctls {
        Sysctls {
            tcp_syncookies: Some(syncookies),
            tcp_timestamps: Some(timestamps),
            tcp_sack: Some(1),
            tcp_window_scaling: Some(1),
            tcp_rmem_max: Some(6 << 20),
            rmem_max: Some(212_992),
            ip_default_ttl: Some(64),
        }
    }

    #[test]
    fn the_window_scale_is_the_kernels_for_the_largest_receive_buffer() {
        assert_eq!(sysctls(2, 2).wscale(), 7);
        let mut s = sysctls(2, 2);
        s.tcp_rmem_max = Some(32 << 20);
        assert_eq!(s.wscale(), 10);
        s.rmem_max = Some(1 << 40);
        assert_eq!(s.wscale(), 14);
        s.tcp_rmem_max = Some(4096);
        s.rmem_max = Some(4096);
        assert_eq!(s.wscale(), 0);
    }

    #[test]
    fn options_ride_on_timestamps_only_without_offsets() {
        let o = Options {
            syn_cookies: SynCookies::Always,
            ..Options::default()
        };
        let c = cookie_cfg(&o, &sysctls(2, 2), Some(9000));
        assert_eq!(
            c.flags,
            CookieCfg::TIMESTAMPS | CookieCfg::SACK | CookieCfg::WSCALE
        );
        assert_eq!((c.mss4, c.mss6, c.ttl), (8960, 8940, 64));
        let c = cookie_cfg(&o, &sysctls(2, 1), None);
        assert_eq!(c.flags, CookieCfg::SACK | CookieCfg::WSCALE);
        assert_eq!(c.mss4, 1460);
    }

    #[test]
    fn what_fw_needs_is_said_and_nothing_when_off() {
        let mut o = Options::default();
        assert!(notes(&o, &sysctls(1, 1)).is_empty());
        assert!(problems(&o, &sysctls(0, 1)).is_empty());
        o.syn_cookies = SynCookies::Auto;
        let n = notes(&o, &sysctls(1, 1)).join("\n");
        assert!(
            n.contains("tcp_syncookies = 1") && n.contains("tcp_timestamps = 1"),
            "{n}"
        );
        assert!(n.contains("fw changes no sysctl"), "{n}");
        assert_eq!(notes(&o, &sysctls(2, 2)).len(), 2);
        let p = problems(&o, &sysctls(0, 2));
        assert!(p.iter().any(|p| p.code == "syncookies-off" && p.degraded));
        assert!(problems(&o, &sysctls(2, 2)).is_empty());
        assert!(problems(&o, &sysctls(1, 2)).iter().all(|p| !p.degraded));
    }
}
