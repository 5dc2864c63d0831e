//! Where `fw` keeps its pins and runtime state, and bpffs itself.
//!
//! Layout: `/sys/fs/bpf/fw/v{LAYOUT_VERSION}/<netns inode>/<iface>/{link, FW_*}` for the kernel
//! objects and `/run/fw/v{LAYOUT_VERSION}/<netns inode>/<iface>/state.json` for what the maps
//! cannot hold (rule comments, the source policy). Two namespaces or two interfaces never share
//! a directory, and an upgrade with another map layout gets another directory.

use std::{
    ffi::CString,
    fs,
    os::unix::fs::MetadataExt as _,
    path::{Path, PathBuf},
};

use fw_common::maps::LAYOUT_VERSION;

use crate::Error;

pub const BPFFS: &str = "/sys/fs/bpf";
const BPF_FS_MAGIC: i64 = 0xcafe_4a11;

/// The network namespace this process is in, as the inode of /proc/self/ns/net.
pub fn netns_id() -> Result<u64, Error> {
    fs::metadata("/proc/self/ns/net")
        .map(|m| m.ino())
        .map_err(|e| Error::io("/proc/self/ns/net", e))
}

/// Mount bpffs on /sys/fs/bpf if nothing is mounted there (a fresh machine has none).
pub fn ensure_bpffs() -> Result<(), Error> {
    if is_bpffs(Path::new(BPFFS)) {
        return Ok(());
    }
    fs::create_dir_all(BPFFS).map_err(|e| Error::io(BPFFS, e))?;
    let src = CString::new("bpf").expect("no NUL");
    let dst = CString::new(BPFFS).expect("no NUL");
    // SAFETY: valid NUL-terminated strings, no data argument.
    let rc = unsafe {
        libc::mount(
            src.as_ptr(),
            dst.as_ptr(),
            src.as_ptr(),
            0,
            std::ptr::null(),
        )
    };
    if rc != 0 || !is_bpffs(Path::new(BPFFS)) {
        return Err(Error::Bpffs(std::io::Error::last_os_error()));
    }
    Ok(())
}

fn is_bpffs(p: &Path) -> bool {
    let Ok(c) = CString::new(p.as_os_str().as_encoded_bytes()) else {
        return false;
    };
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: valid path and out-pointer.
    let rc = unsafe { libc::statfs(c.as_ptr(), &mut st) };
    rc == 0 && st.f_type as i64 == BPF_FS_MAGIC
}

/// The pins and state of `fw` on one interface in this network namespace.
#[derive(Clone, Debug)]
pub struct IfacePaths {
    pub iface: String,
    /// bpffs directory: the link pin and the map pins.
    pub pins: PathBuf,
    /// Runtime state directory (state.json, lock).
    pub state: PathBuf,
}

impl IfacePaths {
    pub fn new(iface: &str) -> Result<Self, Error> {
        let ns = netns_id()?;
        Ok(IfacePaths {
            iface: iface.to_string(),
            pins: netns_pins_dir(ns).join(iface),
            state: netns_state_dir(ns).join(iface),
        })
    }

    /// Paths under explicit directories (tests: a private bpffs directory per test).
    pub fn at(iface: &str, pins: PathBuf, state: PathBuf) -> Self {
        IfacePaths {
            iface: iface.to_string(),
            pins,
            state,
        }
    }

    pub fn link(&self) -> PathBuf {
        self.pins.join("link")
    }

    /// The TC egress link (connection tracking of this host's own flows).
    pub fn tc_link(&self) -> PathBuf {
        self.pins.join("tc_link")
    }

    pub fn map(&self, name: &str) -> PathBuf {
        self.pins.join(name)
    }

    pub fn state_file(&self) -> PathBuf {
        self.state.join("state.json")
    }

    pub fn is_attached(&self) -> bool {
        self.link().exists()
    }

    /// Remove every pin and the state; the XDP link pin first, so the filter goes with it.
    pub fn remove_all(&self) -> Result<(), Error> {
        for link in [self.link(), self.tc_link()] {
            if link.exists() {
                if let Err(e) = crate::sys::detach_pinned_link(&link) {
                    log::warn!("{}: detach: {e}; removing the pin instead", link.display());
                }
                fs::remove_file(&link).map_err(|e| Error::io(&link, e))?;
            }
        }
        for dir in [&self.pins, &self.state] {
            if dir.exists() {
                fs::remove_dir_all(dir).map_err(|e| Error::io(dir, e))?;
            }
        }
        // Tidy empty parents (netns directory), ignoring failures: another interface may live there.
        for dir in [&self.pins, &self.state] {
            if let Some(parent) = dir.parent() {
                let _ = fs::remove_dir(parent);
            }
        }
        Ok(())
    }
}

fn netns_pins_dir(ns: u64) -> PathBuf {
    Path::new(BPFFS)
        .join("fw")
        .join(format!("v{LAYOUT_VERSION}"))
        .join(ns.to_string())
}

fn netns_state_dir(ns: u64) -> PathBuf {
    Path::new("/run/fw")
        .join(format!("v{LAYOUT_VERSION}"))
        .join(ns.to_string())
}

/// Interfaces of this network namespace that have `fw` attached.
pub fn attached_ifaces() -> Result<Vec<String>, Error> {
    let dir = netns_pins_dir(netns_id()?);
    let Ok(rd) = fs::read_dir(&dir) else {
        return Ok(Vec::new());
    };
    let mut out: Vec<String> = rd
        .filter_map(|e| e.ok())
        .filter(|e| e.path().join("link").exists())
        .filter_map(|e| e.file_name().into_string().ok())
        .collect();
    out.sort();
    Ok(out)
}
