//! The bpf(2) calls the libxdp protocol needs that aya 0.14 does not offer for programs fw did
//! not load: a program's name, maps and BTF by id, a map's value by id, pinning an fd.

use std::{
    ffi::CString,
    os::fd::{AsFd as _, AsRawFd as _, BorrowedFd, FromRawFd as _, OwnedFd},
    os::unix::ffi::OsStrExt as _,
    path::Path,
};

const BPF_MAP_LOOKUP_ELEM: libc::c_long = 1;
const BPF_OBJ_PIN: libc::c_long = 6;
const BPF_OBJ_GET: libc::c_long = 7;
const BPF_PROG_GET_FD_BY_ID: libc::c_long = 13;
const BPF_MAP_GET_FD_BY_ID: libc::c_long = 14;
const BPF_OBJ_GET_INFO_BY_FD: libc::c_long = 15;
/// `map_flags` bit of a map the program may only read (a frozen .rodata).
pub const BPF_F_RDONLY_PROG: u32 = 1 << 7;

fn bpf(cmd: libc::c_long, attr: &mut [u8]) -> std::io::Result<i64> {
    // SAFETY: `attr` is a bpf_attr of the command's layout, and every pointer in it points at
    // memory that outlives the call.
    let rc = unsafe { libc::syscall(libc::SYS_bpf, cmd, attr.as_mut_ptr(), attr.len() as u32) };
    if rc < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(rc)
    }
}

fn fd_from(rc: i64) -> OwnedFd {
    // SAFETY: the kernel just returned this fd to us.
    unsafe { OwnedFd::from_raw_fd(rc as i32) }
}

fn put32(a: &mut [u8], off: usize, v: u32) {
    a[off..off + 4].copy_from_slice(&v.to_ne_bytes());
}

fn put64(a: &mut [u8], off: usize, v: u64) {
    a[off..off + 8].copy_from_slice(&v.to_ne_bytes());
}

fn get32(a: &[u8], off: usize) -> u32 {
    u32::from_ne_bytes(a[off..off + 4].try_into().expect("4 bytes"))
}

pub fn prog_fd_by_id(id: u32) -> std::io::Result<OwnedFd> {
    let mut attr = [0u8; 16];
    put32(&mut attr, 0, id);
    bpf(BPF_PROG_GET_FD_BY_ID, &mut attr).map(fd_from)
}

fn map_fd_by_id(id: u32) -> std::io::Result<OwnedFd> {
    let mut attr = [0u8; 16];
    put32(&mut attr, 0, id);
    bpf(BPF_MAP_GET_FD_BY_ID, &mut attr).map(fd_from)
}

/// A pinned object (program, link, map) at `path`.
pub fn obj_get(path: &Path) -> std::io::Result<OwnedFd> {
    let c = CString::new(path.as_os_str().as_bytes())?;
    let mut attr = [0u8; 16];
    put64(&mut attr, 0, c.as_ptr() as u64);
    bpf(BPF_OBJ_GET, &mut attr).map(fd_from)
}

/// Pin the object behind `fd` at `path`.
pub fn obj_pin(fd: BorrowedFd<'_>, path: &Path) -> std::io::Result<()> {
    let c = CString::new(path.as_os_str().as_bytes())?;
    let mut attr = [0u8; 16];
    put64(&mut attr, 0, c.as_ptr() as u64);
    put32(&mut attr, 8, fd.as_raw_fd() as u32);
    bpf(BPF_OBJ_PIN, &mut attr).map(|_| ())
}

fn info(fd: BorrowedFd<'_>, buf: &mut [u8]) -> std::io::Result<()> {
    let mut attr = [0u8; 16];
    put32(&mut attr, 0, fd.as_raw_fd() as u32);
    put32(&mut attr, 4, buf.len() as u32);
    put64(&mut attr, 8, buf.as_mut_ptr() as u64);
    bpf(BPF_OBJ_GET_INFO_BY_FD, &mut attr).map(|_| ())
}

/// What fw needs to know of a loaded program.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProgInfo {
    pub id: u32,
    /// `bpf_prog_type`.
    pub prog_type: u32,
    pub name: String,
    /// Its maps (at most the first 8).
    pub map_ids: Vec<u32>,
    pub btf_id: u32,
}

/// `struct bpf_prog_info` of the program behind `fd`.
pub fn prog_info(fd: BorrowedFd<'_>) -> std::io::Result<ProgInfo> {
    // type@0 id@4 … nr_map_ids@52 map_ids@56 name@64 … btf_id@128.
    let mut maps = [0u32; 8];
    let mut buf = [0u8; 232];
    put32(&mut buf, 52, maps.len() as u32);
    put64(&mut buf, 56, maps.as_mut_ptr() as u64);
    info(fd, &mut buf)?;
    let name = &buf[64..80];
    let end = name.iter().position(|b| *b == 0).unwrap_or(16);
    let nr = (get32(&buf, 52) as usize).min(maps.len());
    Ok(ProgInfo {
        id: get32(&buf, 4),
        prog_type: get32(&buf, 0),
        name: String::from_utf8_lossy(&name[..end]).into_owned(),
        map_ids: maps[..nr].to_vec(),
        btf_id: get32(&buf, 128),
    })
}

/// The value at key 0 of map `id`, if it is a single-entry map the program may only read (a
/// frozen .rodata, as a libxdp dispatcher's configuration is).
pub fn rodata_value(id: u32) -> std::io::Result<Vec<u8>> {
    let fd = map_fd_by_id(id)?;
    // struct bpf_map_info: type@0 id@4 key_size@8 value_size@12 max_entries@16 map_flags@20.
    let mut buf = [0u8; 88];
    info(fd.as_fd(), &mut buf)?;
    let (key_size, value_size, max_entries, flags) = (
        get32(&buf, 8),
        get32(&buf, 12),
        get32(&buf, 16),
        get32(&buf, 20),
    );
    if key_size != 4 || max_entries != 1 || flags & BPF_F_RDONLY_PROG == 0 || value_size > 4096 {
        return Err(std::io::Error::other(format!(
            "map {id} is not a configuration map (key size {key_size}, {max_entries} entries, flags {flags:#x})"
        )));
    }
    let key = 0u32;
    let mut value = vec![0u8; value_size as usize];
    // bpf_attr for BPF_MAP_LOOKUP_ELEM: map_fd@0 key@8 value@16 flags@24.
    let mut attr = [0u8; 32];
    put32(&mut attr, 0, fd.as_raw_fd() as u32);
    put64(&mut attr, 8, &key as *const u32 as u64);
    put64(&mut attr, 16, value.as_mut_ptr() as u64);
    bpf(BPF_MAP_LOOKUP_ELEM, &mut attr)?;
    Ok(value)
}
