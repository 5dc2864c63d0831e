//! The few bpf(2) commands aya 0.14 does not wrap: batched array updates (a whole policy
//! generation, 131,072 port entries, in one call), detaching a pinned link now, and what a link
//! is attached to (aya's `LinkInfo` hides the interface index), plus the monotonic clock.

use std::os::fd::{AsFd as _, AsRawFd, BorrowedFd, FromRawFd as _};

const BPF_MAP_UPDATE_BATCH: libc::c_long = 26;

#[repr(C)]
#[derive(Default)]
struct BatchAttr {
    in_batch: u64,
    out_batch: u64,
    keys: u64,
    values: u64,
    count: u32,
    map_fd: u32,
    elem_flags: u64,
    flags: u64,
}

/// Update `keys[i] = values[i]` for every i in one syscall. Returns how many were written.
pub fn map_update_batch<K, V>(
    fd: BorrowedFd<'_>,
    keys: &[K],
    values: &[V],
) -> std::io::Result<u32> {
    assert_eq!(keys.len(), values.len());
    let mut attr = BatchAttr {
        keys: keys.as_ptr() as u64,
        values: values.as_ptr() as u64,
        count: u32::try_from(keys.len()).expect("batch too large"),
        map_fd: fd.as_raw_fd() as u32,
        ..Default::default()
    };
    // SAFETY: attr points at valid key/value arrays of `count` elements of the map's sizes
    // (the caller passes the map's own key and value types).
    let rc = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_MAP_UPDATE_BATCH,
            &mut attr as *mut BatchAttr,
            size_of::<BatchAttr>() as u32,
        )
    };
    if rc < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(attr.count)
}

const BPF_OBJ_GET: libc::c_long = 7;
const BPF_LINK_DETACH: libc::c_long = 34;

#[repr(C)]
#[derive(Default)]
struct ObjGetAttr {
    pathname: u64,
    bpf_fd: u32,
    file_flags: u32,
    path_fd: i32,
    _pad: u32,
}

#[repr(C)]
#[derive(Default)]
struct LinkDetachAttr {
    link_fd: u32,
}

/// Detach the bpf_link pinned at `path` now (BPF_LINK_DETACH), rather than when the kernel
/// gets round to releasing its last reference: `fw down` returns only once the program is off
/// the interface.
pub fn detach_pinned_link(path: &std::path::Path) -> std::io::Result<()> {
    use std::os::unix::ffi::OsStrExt as _;
    let c = std::ffi::CString::new(path.as_os_str().as_bytes())?;
    let mut get = ObjGetAttr {
        pathname: c.as_ptr() as u64,
        ..Default::default()
    };
    // SAFETY: attr points at a valid NUL-terminated path.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_OBJ_GET,
            &mut get as *mut ObjGetAttr,
            size_of::<ObjGetAttr>() as u32,
        )
    };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: the kernel just returned this fd to us.
    let fd = unsafe { std::os::fd::OwnedFd::from_raw_fd(fd as i32) };
    let mut det = LinkDetachAttr {
        link_fd: fd.as_raw_fd() as u32,
    };
    // SAFETY: valid attr with an open link fd.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_LINK_DETACH,
            &mut det as *mut LinkDetachAttr,
            size_of::<LinkDetachAttr>() as u32,
        )
    };
    if rc < 0 {
        let e = std::io::Error::last_os_error();
        // A link whose device is gone is already detached.
        if e.raw_os_error() != Some(libc::ENOLINK) {
            return Err(e);
        }
    }
    Ok(())
}

const BPF_PROG_GET_FD_BY_ID: libc::c_long = 13;
const BPF_OBJ_GET_INFO_BY_FD: libc::c_long = 15;

/// `bpf_link_type` values fw cares about.
pub const BPF_LINK_TYPE_XDP: u32 = 6;
pub const BPF_LINK_TYPE_TCX: u32 = 11;

fn bpf(cmd: libc::c_long, attr: *mut u8, size: usize) -> std::io::Result<i64> {
    // SAFETY: the callers pass a pointer to a properly sized, initialized attr of `size` bytes.
    let rc = unsafe { libc::syscall(libc::SYS_bpf, cmd, attr, size as u32) };
    if rc < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(rc)
    }
}

/// What a bpf_link is and where it is attached.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LinkFacts {
    pub link_type: u32,
    pub id: u32,
    pub prog_id: u32,
    /// XDP/TCX: the interface index (0 once the device is gone: a severed link).
    pub ifindex: u32,
}

/// BPF_OBJ_GET_INFO_BY_FD into `info` (the kernel fills at most its length).
fn obj_info(fd: BorrowedFd<'_>, info: &mut [u8]) -> std::io::Result<()> {
    #[repr(C)]
    struct InfoAttr {
        bpf_fd: u32,
        info_len: u32,
        info: u64,
    }
    let mut attr = InfoAttr {
        bpf_fd: fd.as_raw_fd() as u32,
        info_len: info.len() as u32,
        info: info.as_mut_ptr() as u64,
    };
    bpf(
        BPF_OBJ_GET_INFO_BY_FD,
        (&mut attr as *mut InfoAttr).cast(),
        size_of::<InfoAttr>(),
    )?;
    Ok(())
}

fn link_facts(fd: BorrowedFd<'_>) -> std::io::Result<LinkFacts> {
    // struct bpf_link_info: type, id, prog_id, then a union aligned to 8 whose xdp/tcx member
    // starts with the ifindex.
    let mut info = [0u8; 64];
    obj_info(fd, &mut info)?;
    let u32_at = |o: usize| u32::from_ne_bytes(info[o..o + 4].try_into().expect("4 bytes"));
    Ok(LinkFacts {
        link_type: u32_at(0),
        id: u32_at(4),
        prog_id: u32_at(8),
        ifindex: u32_at(16),
    })
}

/// Facts about the link pinned at `path`.
pub fn pinned_link_facts(path: &std::path::Path) -> std::io::Result<LinkFacts> {
    let fd = obj_get(path)?;
    link_facts(fd.as_fd())
}

fn obj_get(path: &std::path::Path) -> std::io::Result<std::os::fd::OwnedFd> {
    use std::os::unix::ffi::OsStrExt as _;
    let c = std::ffi::CString::new(path.as_os_str().as_bytes())?;
    let mut get = ObjGetAttr {
        pathname: c.as_ptr() as u64,
        ..Default::default()
    };
    let fd = bpf(
        BPF_OBJ_GET,
        (&mut get as *mut ObjGetAttr).cast(),
        size_of::<ObjGetAttr>(),
    )?;
    // SAFETY: the kernel just returned this fd to us.
    Ok(unsafe { std::os::fd::OwnedFd::from_raw_fd(fd as i32) })
}

#[repr(C)]
#[derive(Default)]
struct IdAttr {
    id: u32,
    next_id: u32,
    open_flags: u32,
}

/// The name of a loaded program (at most 15 bytes, as the kernel keeps it).
pub fn prog_name(prog_id: u32) -> std::io::Result<String> {
    let mut get = IdAttr {
        id: prog_id,
        ..Default::default()
    };
    let fd = bpf(
        BPF_PROG_GET_FD_BY_ID,
        (&mut get as *mut IdAttr).cast(),
        size_of::<IdAttr>(),
    )?;
    // SAFETY: the kernel just returned this fd to us.
    let fd = unsafe { std::os::fd::OwnedFd::from_raw_fd(fd as i32) };
    // struct bpf_prog_info: name[16] at offset 64.
    let mut info = [0u8; 80];
    obj_info(fd.as_fd(), &mut info)?;
    let name = &info[64..80];
    let end = name.iter().position(|b| *b == 0).unwrap_or(16);
    Ok(String::from_utf8_lossy(&name[..end]).into_owned())
}

/// CLOCK_MONOTONIC_COARSE now, in nanoseconds: the clock the kernel programs stamp flows with
/// (`bpf_ktime_get_coarse_ns`).
pub fn monotonic_coarse_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: valid out-pointer.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC_COARSE, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// The id of the XDP program attached to interface `ifindex` of this network namespace, if
/// any (rtnetlink RTM_GETLINK, IFLA_XDP → IFLA_XDP_PROG_ID). Link info has the ifindex but not
/// the namespace, so this is how fw tells what is attached to *its* interface.
pub fn xdp_prog_id(ifindex: u32) -> std::io::Result<Option<u32>> {
    const RTM_NEWLINK: u16 = 16;
    const RTM_GETLINK: u16 = 18;
    const NLMSG_ERROR: u16 = 2;
    const NLM_F_REQUEST: u16 = 1;
    const IFLA_XDP: u16 = 43;
    const IFLA_XDP_PROG_ID: u16 = 4;
    const NLA_TYPE_MASK: u16 = 0x3fff;
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
    let sock = unsafe { std::os::fd::OwnedFd::from_raw_fd(fd) };
    // nlmsghdr (16) + ifinfomsg (16).
    let mut req = [0u8; 32];
    req[0..4].copy_from_slice(&32u32.to_ne_bytes());
    req[4..6].copy_from_slice(&RTM_GETLINK.to_ne_bytes());
    req[6..8].copy_from_slice(&NLM_F_REQUEST.to_ne_bytes());
    req[8..12].copy_from_slice(&1u32.to_ne_bytes());
    req[16] = libc::AF_UNSPEC as u8;
    req[20..24].copy_from_slice(&(ifindex as i32).to_ne_bytes());
    // SAFETY: valid buffer and fd; the default destination of a netlink socket is the kernel.
    if unsafe { libc::send(sock.as_raw_fd(), req.as_ptr().cast(), req.len(), 0) } < 0 {
        return Err(std::io::Error::last_os_error());
    }
    let mut buf = vec![0u8; 65536];
    // SAFETY: valid buffer of its length.
    let n = unsafe { libc::recv(sock.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
    if n < 0 {
        return Err(std::io::Error::last_os_error());
    }
    let buf = &buf[..n as usize];
    let u16_at = |b: &[u8], o: usize| u16::from_ne_bytes([b[o], b[o + 1]]);
    let u32_at = |b: &[u8], o: usize| u32::from_ne_bytes(b[o..o + 4].try_into().expect("4"));
    if buf.len() < 16 {
        return Err(std::io::Error::other("short netlink answer"));
    }
    let ty = u16_at(buf, 4);
    if ty == NLMSG_ERROR {
        let err = i32::from_ne_bytes(buf[16..20].try_into().expect("4"));
        return Err(std::io::Error::from_raw_os_error(-err));
    }
    if ty != RTM_NEWLINK {
        return Err(std::io::Error::other("unexpected netlink answer"));
    }
    let len = (u32_at(buf, 0) as usize).min(buf.len());
    // Attributes after nlmsghdr (16) and ifinfomsg (16), each 4-byte aligned.
    let attrs = |mut off: usize, end: usize, want: u16| -> Option<(usize, usize)> {
        while off + 4 <= end {
            let alen = u16_at(buf, off) as usize;
            if alen < 4 || off + alen > end {
                return None;
            }
            if u16_at(buf, off + 2) & NLA_TYPE_MASK == want {
                return Some((off + 4, off + alen));
            }
            off += (alen + 3) & !3;
        }
        None
    };
    let Some((xs, xe)) = attrs(32, len, IFLA_XDP) else {
        return Ok(None);
    };
    Ok(attrs(xs, xe, IFLA_XDP_PROG_ID)
        .filter(|(s, e)| e - s >= 4)
        .map(|(s, _)| u32_at(buf, s))
        .filter(|id| *id != 0))
}
