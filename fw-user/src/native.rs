//! Why native (driver) XDP is not available on an interface, in words an operator can act on:
//! the MTU against what one buffer holds, the driver, a program already there. `fw up` prints
//! it when it falls back to generic mode, and the state keeps it for `fw status`.

use std::os::fd::{AsRawFd as _, FromRawFd as _};

use crate::loader::Variant;

/// The largest MTU at which most drivers put a whole frame into one buffer (a 4 KiB page less
/// XDP headroom and the skb_shared_info tail): 3,498 bytes for veth, similar elsewhere.
pub const ONE_BUFFER_MTU: u32 = 3498;

/// Facts about an interface that decide whether native XDP can work.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Facts {
    pub mtu: Option<u32>,
    /// The kernel driver (`ethtool -i`), e.g. "veth", "mlx5_core", "virtio_net".
    pub driver: Option<String>,
}

impl Facts {
    pub fn of(iface: &str) -> Facts {
        let mtu = std::fs::read_to_string(format!("/sys/class/net/{iface}/mtu"))
            .ok()
            .and_then(|m| m.trim().parse::<u32>().ok())
            .or_else(|| ioctl_mtu(iface));
        Facts {
            mtu,
            driver: driver(iface),
        }
    }
}

/// Why native XDP failed with OS error `errno` (0 if unknown), and what to do.
pub fn explain(iface: &str, errno: i32, variant: Variant, f: &Facts) -> String {
    let driver = f.driver.as_deref().unwrap_or("unknown");
    let big = f.mtu.filter(|m| *m > ONE_BUFFER_MTU);
    let mut s = match (variant, big) {
        (Variant::Linear, Some(mtu)) => format!(
            "the MTU of {iface} is {mtu}: a frame does not fit one buffer, and this kernel has no multi-buffer XDP (xdp.frags, Linux 5.18). Lower the MTU to {ONE_BUFFER_MTU} or less (`ip link set dev {iface} mtu 1500`) or run a kernel ≥ 5.18"
        ),
        (Variant::Frags, Some(mtu)) => format!(
            "the MTU of {iface} is {mtu} and driver {driver} does not take multi-buffer XDP programs at that MTU (fw's program is multi-buffer aware). Lower the MTU to {ONE_BUFFER_MTU} or less, or use a driver/kernel with XDP multi-buffer support (mlx5, i40e, ice, bnxt, ena, veth, virtio_net on recent kernels)"
        ),
        _ if errno == libc::EOPNOTSUPP => format!(
            "driver {driver} has no native XDP support; generic mode works everywhere, at the cost of an skb per packet"
        ),
        _ if errno == libc::ERANGE => format!(
            "driver {driver} refuses native XDP at the current MTU ({}); lower the MTU",
            f.mtu.map_or("unknown".into(), |m| m.to_string())
        ),
        _ if errno == libc::ENOMEM || errno == libc::ENOSPC => format!(
            "driver {driver} could not set up XDP queues (one per CPU is usual): reduce the channels (`ethtool -L {iface} combined N`) or check the driver's XDP requirements"
        ),
        _ => format!(
            "driver {driver} refused native XDP ({}); see `dmesg` for the driver's reason",
            std::io::Error::from_raw_os_error(errno)
        ),
    };
    if driver == "veth" && big.is_some() {
        s.push_str(" (on veth the MTU that counts is the peer's)");
    }
    s
}

/// The kernel driver behind `iface` (ETHTOOL_GDRVINFO), e.g. "veth".
pub fn driver(iface: &str) -> Option<String> {
    if let Ok(p) = std::fs::read_link(format!("/sys/class/net/{iface}/device/driver"))
        && let Some(n) = p.file_name()
    {
        return Some(n.to_string_lossy().into_owned());
    }
    const ETHTOOL_GDRVINFO: u32 = 0x3;
    const SIOCETHTOOL: libc::c_ulong = 0x8946;
    // struct ethtool_drvinfo: cmd, driver[32], version[32], fw_version[32], bus_info[32],
    // erom_version[32], reserved2[12], five u32 counts.
    let mut info = [0u8; 196];
    info[0..4].copy_from_slice(&ETHTOOL_GDRVINFO.to_ne_bytes());
    let mut ifr = ifreq(iface)?;
    ifr.data = info.as_mut_ptr() as u64;
    ioctl(SIOCETHTOOL, &mut ifr)?;
    let name = &info[4..36];
    let end = name.iter().position(|b| *b == 0).unwrap_or(name.len());
    (end > 0).then(|| String::from_utf8_lossy(&name[..end]).into_owned())
}

/// The MTU through SIOCGIFMTU (where /sys shows another namespace's devices: `nsenter --net`).
fn ioctl_mtu(iface: &str) -> Option<u32> {
    let mut ifr = ifreq(iface)?;
    ioctl(libc::SIOCGIFMTU, &mut ifr)?;
    Some(ifr.data as u32)
}

#[repr(C)]
struct IfReq {
    name: [u8; 16],
    /// The union: a pointer (ETHTOOL) or an int (MTU) in its first bytes.
    data: u64,
    _pad: [u8; 16],
}

fn ifreq(iface: &str) -> Option<IfReq> {
    let b = iface.as_bytes();
    if b.is_empty() || b.len() >= 16 {
        return None;
    }
    let mut name = [0u8; 16];
    name[..b.len()].copy_from_slice(b);
    Some(IfReq {
        name,
        data: 0,
        _pad: [0; 16],
    })
}

fn ioctl(req: libc::c_ulong, ifr: &mut IfReq) -> Option<()> {
    // SAFETY: plain socket(2).
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return None;
    }
    // SAFETY: the kernel just returned this fd to us.
    let sock = unsafe { std::os::fd::OwnedFd::from_raw_fd(fd) };
    // SAFETY: ifr is a valid struct ifreq (and any buffer it points to outlives the call).
    let rc = unsafe { libc::ioctl(sock.as_raw_fd(), req as _, ifr as *mut IfReq) };
    (rc == 0).then_some(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts(mtu: u32, driver: &str) -> Facts {
        Facts {
            mtu: Some(mtu),
            driver: Some(driver.into()),
        }
    }

    #[test]
    fn a_jumbo_mtu_on_an_old_kernel_names_the_mtu_and_the_kernel() {
        let s = explain("eth0", libc::EINVAL, Variant::Linear, &facts(9000, "ixgbe"));
        assert!(s.contains("MTU of eth0 is 9000"), "{s}");
        assert!(s.contains("5.18"), "{s}");
        assert!(s.contains("ip link set dev eth0 mtu 1500"), "{s}");
    }

    #[test]
    fn a_jumbo_mtu_with_a_driver_without_multi_buffer_names_the_driver() {
        let s = explain("eth0", libc::EINVAL, Variant::Frags, &facts(9000, "r8169"));
        assert!(s.contains("driver r8169"), "{s}");
        assert!(s.contains("multi-buffer"), "{s}");
    }

    #[test]
    fn a_driver_without_xdp_says_so() {
        let s = explain(
            "eth0",
            libc::EOPNOTSUPP,
            Variant::Frags,
            &facts(1500, "foo"),
        );
        assert!(s.contains("driver foo has no native XDP support"), "{s}");
    }

    #[test]
    fn veth_points_at_the_peer() {
        let s = explain("v0", libc::ERANGE, Variant::Linear, &facts(9000, "veth"));
        assert!(s.contains("peer"), "{s}");
    }

    #[test]
    fn loopback_driver_and_mtu_are_read() {
        // lo exists in every namespace; its MTU is 65536 unless someone changed it.
        let f = Facts::of("lo");
        assert!(f.mtu.is_some_and(|m| m > 0), "{f:?}");
    }
}
