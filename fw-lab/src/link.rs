//! Links inside the lab's namespaces: veth pairs, addresses, neighbours, sysctls, interface
//! indexes and counters, GRO, and pinning a thread to one CPU.

use std::{
    fs::File,
    io::{Read as _, Seek as _, SeekFrom},
    net::{IpAddr, Ipv6Addr},
    thread,
    time::{Duration, Instant},
};

use crate::{Error, NetNs, Result};

/// `02:fa:00:00:01:02`.
pub fn mac_str(m: [u8; 6]) -> String {
    m.map(|b| format!("{b:02x}")).join(":")
}

/// One end of a veth pair: its namespace, name and (optionally) MAC address.
#[derive(Clone, Copy)]
pub struct End<'a> {
    pub ns: &'a NetNs,
    pub name: &'a str,
    pub mac: Option<[u8; 6]>,
}

/// A veth pair from `a` to `b`, created inside `a`'s namespace with the peer moved into `b`'s
/// (the host's own namespace never sees either end). Both ends stay down.
pub fn veth(a: End<'_>, b: End<'_>) -> Result<()> {
    let (ma, mb) = (a.mac.map(mac_str), b.mac.map(mac_str));
    let mut args = vec!["link", "add", a.name];
    if let Some(m) = &ma {
        args.extend(["address", m]);
    }
    args.extend(["type", "veth", "peer", "name", b.name]);
    if let Some(m) = &mb {
        args.extend(["address", m]);
    }
    args.extend(["netns", b.ns.name()]);
    a.ns.try_ip(&args).map(drop)
}

impl NetNs {
    /// Add `addr/prefix` to `iface` (IPv6 with `nodad`: usable at once on a link whose both
    /// ends the lab owns).
    pub fn add_addr(&self, iface: &str, addr: IpAddr, prefix: u8) -> Result<()> {
        let a = format!("{addr}/{prefix}");
        match addr {
            IpAddr::V4(_) => self.try_ip(&["addr", "add", &a, "dev", iface]),
            IpAddr::V6(_) => self.try_ip(&["-6", "addr", "add", &a, "dev", iface, "nodad"]),
        }
        .map(drop)
    }

    pub fn link_up(&self, iface: &str) -> Result<()> {
        self.try_ip(&["link", "set", iface, "up"]).map(drop)
    }

    /// Wait (bounded by `timeout`) until `addr` on `iface` is no longer tentative. `nodad`
    /// skips duplicate address detection, but an address stays tentative until the kernel has
    /// seen the link come up with carrier (both ends up), which happens a moment later.
    pub fn wait_ipv6_ready(&self, iface: &str, addr: Ipv6Addr, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            let out = self.try_ip(&["-6", "-o", "addr", "show", "dev", iface])?;
            if out.stdout.contains(&addr.to_string()) && !out.stdout.contains("tentative") {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(Error::Other(format!(
                    "the IPv6 address {addr} on {iface} in {} stays tentative: {out}",
                    self.name()
                )));
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// A permanent neighbour entry (no ARP/NDP needed to reach `ip`).
    pub fn neigh_permanent(&self, iface: &str, ip: IpAddr, mac: [u8; 6]) -> Result<()> {
        let (ip, mac) = (ip.to_string(), mac_str(mac));
        self.try_ip(&[
            "neigh",
            "replace",
            &ip,
            "lladdr",
            &mac,
            "dev",
            iface,
            "nud",
            "permanent",
        ])
        .map(drop)
    }

    /// `sysctl -q -w KEY=VALUE` inside the namespace.
    pub fn sysctl(&self, setting: &str) -> Result<()> {
        self.cmd("sysctl")
            .args(["-q", "-w", setting])
            .timeout(crate::proc::CMD_TIMEOUT)
            .ok()
            .map(drop)
    }

    /// The index of `iface` in this namespace.
    pub fn ifindex(&self, iface: &str) -> Result<u32> {
        self.try_enter(|| ifindex(iface))?
    }
}

/// The index of `name` in the calling thread's namespace.
pub fn ifindex(name: &str) -> Result<u32> {
    let c = std::ffi::CString::new(name).map_err(|_| Error::Other(format!("{name:?}: NUL")))?;
    // SAFETY: a valid C string.
    let idx = unsafe { libc::if_nametoindex(c.as_ptr()) };
    if idx == 0 {
        return Err(Error::last_os(format!("no interface {name} here")));
    }
    Ok(idx)
}

/// Switch GRO on or off (legacy ETHTOOL_SGRO ioctl) for an interface of the calling thread's
/// namespace. veth runs its NAPI receive path (the one XDP frames take) only with GRO or XDP.
pub fn set_gro(name: &str, on: bool) -> Result<()> {
    const SIOCETHTOOL: libc::c_ulong = 0x8946;
    const ETHTOOL_SGRO: u32 = 0x2c;
    #[repr(C)]
    struct EthtoolValue {
        cmd: u32,
        data: u32,
    }
    #[repr(C)]
    struct IfReq {
        name: [u8; 16],
        data: *mut EthtoolValue,
        _pad: [u8; 16],
    }
    if name.len() >= 16 {
        return Err(Error::Other(format!("interface name {name:?} is too long")));
    }
    let mut v = EthtoolValue {
        cmd: ETHTOOL_SGRO,
        data: on as u32,
    };
    let mut req = IfReq {
        name: [0; 16],
        data: &mut v,
        _pad: [0; 16],
    };
    req.name[..name.len()].copy_from_slice(name.as_bytes());
    // SAFETY: plain socket + ioctl with a valid ifreq whose data pointer outlives the call.
    unsafe {
        let s = libc::socket(libc::AF_INET, libc::SOCK_DGRAM, 0);
        if s < 0 {
            return Err(Error::last_os("socket"));
        }
        let rc = libc::ioctl(s, SIOCETHTOOL, &mut req);
        let err = std::io::Error::last_os_error();
        libc::close(s);
        if rc != 0 {
            return Err(Error::io(format!("ETHTOOL_SGRO on {name}"), err));
        }
    }
    Ok(())
}

/// `/proc/net/dev` of one namespace, opened from inside it: the open file keeps showing that
/// namespace's devices whoever reads it later.
pub struct NetDev {
    file: File,
}

/// Receive counters of one interface.
#[derive(Clone, Copy, Debug, Default)]
pub struct IfStats {
    pub rx_packets: u64,
}

impl NetDev {
    /// Open from a thread that is inside the namespace.
    pub fn open_here() -> Result<Self> {
        let p = "/proc/thread-self/net/dev";
        Ok(NetDev {
            file: File::open(p).map_err(|e| Error::io(p, e))?,
        })
    }

    pub fn stats(&mut self, iface: &str) -> Result<IfStats> {
        let mut text = String::new();
        self.file
            .seek(SeekFrom::Start(0))
            .and_then(|_| self.file.read_to_string(&mut text))
            .map_err(|e| Error::io("/proc/net/dev", e))?;
        for line in text.lines() {
            let Some((name, rest)) = line.split_once(':') else {
                continue;
            };
            if name.trim() != iface {
                continue;
            }
            let v: Vec<u64> = rest
                .split_whitespace()
                .filter_map(|x| x.parse().ok())
                .collect();
            if v.len() < 12 {
                return Err(Error::Other(format!("odd /proc/net/dev line: {line}")));
            }
            return Ok(IfStats { rx_packets: v[1] });
        }
        Err(Error::Other(format!("{iface} not in /proc/net/dev")))
    }
}

/// Pins the calling thread to one CPU while alive (the first it may run on, or `cpu`), so every
/// frame it sends lands in the same receive queue. Restores the previous mask on drop.
pub struct CpuPin {
    old: libc::cpu_set_t,
}

impl CpuPin {
    /// To the first CPU the thread may run on.
    pub fn first() -> Result<CpuPin> {
        Self::to(None)
    }

    /// To CPU `cpu`.
    pub fn cpu(cpu: usize) -> Result<CpuPin> {
        Self::to(Some(cpu))
    }

    fn to(cpu: Option<usize>) -> Result<CpuPin> {
        // SAFETY: cpu_set_t is plain data; sched_{get,set}affinity on the calling thread; CPU
        // numbers stay below CPU_SETSIZE.
        unsafe {
            let mut old: libc::cpu_set_t = std::mem::zeroed();
            if libc::sched_getaffinity(0, size_of::<libc::cpu_set_t>(), &mut old) != 0 {
                return Err(Error::last_os("sched_getaffinity"));
            }
            let cpu = cpu
                .or_else(|| (0..libc::CPU_SETSIZE as usize).find(|c| libc::CPU_ISSET(*c, &old)))
                .unwrap_or(0)
                .min(libc::CPU_SETSIZE as usize - 1);
            let mut one: libc::cpu_set_t = std::mem::zeroed();
            libc::CPU_SET(cpu, &mut one);
            if libc::sched_setaffinity(0, size_of::<libc::cpu_set_t>(), &one) != 0 {
                return Err(Error::last_os(format!("sched_setaffinity to CPU {cpu}")));
            }
            Ok(CpuPin { old })
        }
    }
}

impl Drop for CpuPin {
    fn drop(&mut self) {
        // SAFETY: restoring the mask read when pinning.
        unsafe {
            libc::sched_setaffinity(0, size_of::<libc::cpu_set_t>(), &self.old);
        }
    }
}

/// CPUs this process may use.
pub fn nr_cpus() -> usize {
    thread::available_parallelism().map_or(1, |n| n.get())
}
