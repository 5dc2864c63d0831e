//! XDP attachments through rtnetlink (RTM_SETLINK / RTM_GETLINK, IFLA_XDP): what is attached
//! to an interface and in which mode, and an atomic replace that names the program it expects
//! to replace (XDP_FLAGS_REPLACE + IFLA_XDP_EXPECTED_FD). The libxdp multi-program protocol
//! attaches its dispatcher this way (not through a bpf_link), so that any tool following the
//! protocol can swap it for the next one; aya only exposes attach-if-empty.

use std::os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd, RawFd};

const RTM_NEWLINK: u16 = 16;
const RTM_SETLINK: u16 = 19;
const RTM_GETLINK: u16 = 18;
const NLMSG_ERROR: u16 = 2;
const NLM_F_REQUEST: u16 = 1;
const NLM_F_ACK: u16 = 4;
const IFLA_XDP: u16 = 43;
const NLA_F_NESTED: u16 = 1 << 15;
const IFLA_XDP_FD: u16 = 1;
const IFLA_XDP_ATTACHED: u16 = 2;
const IFLA_XDP_FLAGS: u16 = 3;
const IFLA_XDP_PROG_ID: u16 = 4;
const IFLA_XDP_DRV_PROG_ID: u16 = 5;
const IFLA_XDP_SKB_PROG_ID: u16 = 6;
const IFLA_XDP_EXPECTED_FD: u16 = 8;

pub const XDP_FLAGS_UPDATE_IF_NOEXIST: u32 = 1;
pub const XDP_FLAGS_SKB_MODE: u32 = 1 << 1;
pub const XDP_FLAGS_DRV_MODE: u32 = 1 << 2;
pub const XDP_FLAGS_REPLACE: u32 = 1 << 4;

const XDP_ATTACHED_DRV: u8 = 1;
const XDP_ATTACHED_SKB: u8 = 2;
const XDP_ATTACHED_MULTI: u8 = 4;

/// How a program is attached to an interface.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum XdpMode {
    Native,
    Skb,
    /// Offloaded to the NIC, or several at once: fw leaves these alone.
    Other,
}

impl XdpMode {
    pub fn flag(self) -> u32 {
        match self {
            XdpMode::Native => XDP_FLAGS_DRV_MODE,
            XdpMode::Skb => XDP_FLAGS_SKB_MODE,
            XdpMode::Other => 0,
        }
    }
}

/// The XDP program attached to interface `ifindex` (of this network namespace) and its mode.
pub fn query(ifindex: u32) -> std::io::Result<Option<(u32, XdpMode)>> {
    let sock = socket()?;
    let mut req = Vec::with_capacity(32);
    header(&mut req, RTM_GETLINK, NLM_F_REQUEST, ifindex);
    finish(&mut req);
    send(&sock, &req)?;
    let buf = recv(&sock)?;
    let ty = u16_at(&buf, 4);
    if ty == NLMSG_ERROR {
        return Err(nl_error(&buf).unwrap_or_else(|| std::io::Error::other("netlink error")));
    }
    if ty != RTM_NEWLINK {
        return Err(std::io::Error::other("unexpected netlink answer"));
    }
    let len = (u32_at(&buf, 0) as usize).min(buf.len());
    let Some((xs, xe)) = find_attr(&buf, 32, len, IFLA_XDP) else {
        return Ok(None);
    };
    let attached = find_attr(&buf, xs, xe, IFLA_XDP_ATTACHED).map_or(0, |(s, _)| buf[s]);
    let id_of = |a: u16| {
        find_attr(&buf, xs, xe, a)
            .filter(|(s, e)| e - s >= 4)
            .map(|(s, _)| u32_at(&buf, s))
            .filter(|id| *id != 0)
    };
    Ok(match attached {
        XDP_ATTACHED_DRV => id_of(IFLA_XDP_PROG_ID).map(|id| (id, XdpMode::Native)),
        XDP_ATTACHED_SKB => id_of(IFLA_XDP_PROG_ID).map(|id| (id, XdpMode::Skb)),
        XDP_ATTACHED_MULTI => id_of(IFLA_XDP_DRV_PROG_ID)
            .map(|id| (id, XdpMode::Native))
            .or_else(|| id_of(IFLA_XDP_SKB_PROG_ID).map(|id| (id, XdpMode::Skb))),
        0 => None,
        _ => id_of(IFLA_XDP_PROG_ID).map(|id| (id, XdpMode::Other)),
    })
}

/// Attach `fd` (or detach, with `None`) on `ifindex` in `mode`. With `expected`, only if that
/// program is the one attached now (XDP_FLAGS_REPLACE: EEXIST if another is); without, only
/// if nothing is attached (XDP_FLAGS_UPDATE_IF_NOEXIST: EBUSY if something is).
pub fn set(
    ifindex: u32,
    fd: Option<RawFd>,
    expected: Option<RawFd>,
    mode: XdpMode,
) -> std::io::Result<()> {
    let mut flags = mode.flag();
    flags |= if expected.is_some() {
        XDP_FLAGS_REPLACE
    } else {
        XDP_FLAGS_UPDATE_IF_NOEXIST
    };
    let sock = socket()?;
    let mut req = Vec::with_capacity(64);
    header(&mut req, RTM_SETLINK, NLM_F_REQUEST | NLM_F_ACK, ifindex);
    let nest = req.len();
    attr(&mut req, IFLA_XDP | NLA_F_NESTED, &[]);
    attr(&mut req, IFLA_XDP_FD, &fd.unwrap_or(-1).to_ne_bytes());
    attr(&mut req, IFLA_XDP_FLAGS, &flags.to_ne_bytes());
    if let Some(old) = expected {
        attr(&mut req, IFLA_XDP_EXPECTED_FD, &old.to_ne_bytes());
    }
    let nest_len = (req.len() - nest) as u16;
    req[nest..nest + 2].copy_from_slice(&nest_len.to_ne_bytes());
    finish(&mut req);
    send(&sock, &req)?;
    let buf = recv(&sock)?;
    if u16_at(&buf, 4) == NLMSG_ERROR {
        if let Some(e) = nl_error(&buf) {
            return Err(e);
        }
        return Ok(());
    }
    Err(std::io::Error::other("no netlink acknowledgement"))
}

fn socket() -> std::io::Result<OwnedFd> {
    // SAFETY: plain socket(2).
    let fd = unsafe {
        libc::socket(
            libc::AF_NETLINK,
            libc::SOCK_RAW | libc::SOCK_CLOEXEC,
            libc::NETLINK_ROUTE,
        )
    };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: the kernel just returned this fd to us.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// nlmsghdr (length filled by [`finish`]) + ifinfomsg for `ifindex`.
fn header(req: &mut Vec<u8>, ty: u16, flags: u16, ifindex: u32) {
    req.extend_from_slice(&0u32.to_ne_bytes());
    req.extend_from_slice(&ty.to_ne_bytes());
    req.extend_from_slice(&flags.to_ne_bytes());
    req.extend_from_slice(&1u32.to_ne_bytes()); // seq
    req.extend_from_slice(&0u32.to_ne_bytes()); // pid
    req.push(libc::AF_UNSPEC as u8);
    req.extend_from_slice(&[0u8; 3]);
    req.extend_from_slice(&(ifindex as i32).to_ne_bytes());
    req.extend_from_slice(&0u32.to_ne_bytes()); // flags
    req.extend_from_slice(&0u32.to_ne_bytes()); // change
}

fn attr(req: &mut Vec<u8>, ty: u16, data: &[u8]) {
    let len = 4 + data.len();
    req.extend_from_slice(&(len as u16).to_ne_bytes());
    req.extend_from_slice(&ty.to_ne_bytes());
    req.extend_from_slice(data);
    while !req.len().is_multiple_of(4) {
        req.push(0);
    }
}

fn finish(req: &mut [u8]) {
    let len = req.len() as u32;
    req[0..4].copy_from_slice(&len.to_ne_bytes());
}

fn send(sock: &OwnedFd, req: &[u8]) -> std::io::Result<()> {
    // SAFETY: valid buffer and fd; a netlink socket's default destination is the kernel.
    if unsafe { libc::send(sock.as_raw_fd(), req.as_ptr().cast(), req.len(), 0) } < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

fn recv(sock: &OwnedFd) -> std::io::Result<Vec<u8>> {
    let mut buf = vec![0u8; 65536];
    // SAFETY: valid buffer of its length.
    let n = unsafe { libc::recv(sock.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
    if n < 0 {
        return Err(std::io::Error::last_os_error());
    }
    buf.truncate(n as usize);
    if buf.len() < 16 {
        return Err(std::io::Error::other("short netlink answer"));
    }
    Ok(buf)
}

/// The error of an NLMSG_ERROR answer (`None`: an acknowledgement).
fn nl_error(buf: &[u8]) -> Option<std::io::Error> {
    if buf.len() < 20 {
        return Some(std::io::Error::other("short netlink error"));
    }
    let err = i32::from_ne_bytes(buf[16..20].try_into().expect("4 bytes"));
    (err != 0).then(|| std::io::Error::from_raw_os_error(-err))
}

fn u16_at(b: &[u8], o: usize) -> u16 {
    u16::from_ne_bytes([b[o], b[o + 1]])
}

fn u32_at(b: &[u8], o: usize) -> u32 {
    u32::from_ne_bytes(b[o..o + 4].try_into().expect("4 bytes"))
}

/// The payload range of attribute `want` among the attributes in `buf[off..end]`.
fn find_attr(buf: &[u8], mut off: usize, end: usize, want: u16) -> Option<(usize, usize)> {
    while off + 4 <= end {
        let alen = u16_at(buf, off) as usize;
        if alen < 4 || off + alen > end {
            return None;
        }
        if u16_at(buf, off + 2) & 0x3fff == want {
            return Some((off + 4, off + alen));
        }
        off += (alen + 3) & !3;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_set_request_nests_fd_flags_and_expected_fd() {
        let mut req = Vec::new();
        header(&mut req, RTM_SETLINK, NLM_F_REQUEST | NLM_F_ACK, 7);
        let nest = req.len();
        attr(&mut req, IFLA_XDP | NLA_F_NESTED, &[]);
        attr(&mut req, IFLA_XDP_FD, &5i32.to_ne_bytes());
        attr(&mut req, IFLA_XDP_FLAGS, &XDP_FLAGS_REPLACE.to_ne_bytes());
        attr(&mut req, IFLA_XDP_EXPECTED_FD, &4i32.to_ne_bytes());
        let nest_len = (req.len() - nest) as u16;
        req[nest..nest + 2].copy_from_slice(&nest_len.to_ne_bytes());
        finish(&mut req);
        assert_eq!(u32_at(&req, 0) as usize, req.len());
        assert_eq!(i32::from_ne_bytes(req[20..24].try_into().unwrap()), 7);
        let (s, e) = find_attr(&req, 32, req.len(), IFLA_XDP).expect("IFLA_XDP");
        assert_eq!(e - s, 3 * 8, "three 4-byte attributes inside");
        let (fs, _) = find_attr(&req, s, e, IFLA_XDP_FD).expect("fd");
        assert_eq!(u32_at(&req, fs), 5);
        let (xs, _) = find_attr(&req, s, e, IFLA_XDP_EXPECTED_FD).expect("expected fd");
        assert_eq!(u32_at(&req, xs), 4);
    }

    #[test]
    fn loopback_has_no_xdp_program() {
        // lo is ifindex 1 in every network namespace; nobody attaches XDP to it.
        match query(1) {
            Ok(found) => assert_eq!(found, None),
            Err(e) => panic!("RTM_GETLINK for lo: {e}"),
        }
    }
}
