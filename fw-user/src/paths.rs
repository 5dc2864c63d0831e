//! Where `fw` keeps its pins and runtime state, and the checks that make them safe to use.
//!
//! Layout: `/sys/fs/bpf/fw/v{LAYOUT_VERSION}/<netns inode>/<iface>/{link, tc_link, FW_*}` for
//! the kernel objects and `/run/fw/v{LAYOUT_VERSION}/<netns inode>/<iface>/{state.json, lock}`
//! for what the maps cannot hold. Two namespaces or two interfaces never share a directory, and
//! an upgrade with another map layout gets another directory.
//!
//! bpffs' root is world-writable (mode 1777), so a local user could create `/sys/fs/bpf/fw`
//! before fw does. Every directory fw uses is created mode 0700 and checked before use: a real
//! directory (not a symlink), owned by root, writable by nobody else, holding only what fw puts
//! there. Interface names are validated as the kernel does (`dev_valid_name`), so `--iface ..`
//! can never reach outside these directories.

use std::{
    ffi::CString,
    fmt, fs,
    os::unix::fs::{DirBuilderExt as _, MetadataExt as _, PermissionsExt as _},
    path::{Path, PathBuf},
};

use fw_common::maps::{ALL_MAPS, COOKIE_PROG_PINS, LAYOUT_VERSION, PIN_PROGS_LINEAR};

use crate::Error;

pub const BPFFS: &str = "/sys/fs/bpf";
pub const RUN_DIR: &str = "/run/fw";
const BPF_FS_MAGIC: i64 = 0xcafe_4a11;
/// IFNAMSIZ - 1.
const IFNAME_MAX: usize = 15;

/// An interface name as the kernel accepts it: 1–15 bytes, not `.` or `..`, no `/`, `:`,
/// whitespace or NUL.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct IfaceName(String);

impl IfaceName {
    pub fn new(name: &str) -> Result<Self, Error> {
        let bad = |why| Err(Error::BadIfaceName(name.to_string(), why));
        if name.is_empty() {
            return bad("empty");
        }
        if name.len() > IFNAME_MAX {
            return bad("longer than 15 bytes (IFNAMSIZ)");
        }
        if name == "." || name == ".." {
            return bad("`.` and `..` are not interface names");
        }
        if name
            .chars()
            .any(|c| c == '/' || c == ':' || c.is_whitespace() || c.is_control())
        {
            return bad("contains `/`, `:`, whitespace or a control character");
        }
        Ok(IfaceName(name.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The interface's index in this network namespace, if it exists.
    pub fn index(&self) -> Option<u32> {
        let c = CString::new(self.0.as_str()).ok()?;
        // SAFETY: valid NUL-terminated string.
        let idx = unsafe { libc::if_nametoindex(c.as_ptr()) };
        (idx != 0).then_some(idx)
    }
}

impl std::str::FromStr for IfaceName {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        IfaceName::new(s).map_err(|e| e.to_string())
    }
}

impl fmt::Display for IfaceName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The network namespace this process is in, as the inode of /proc/self/ns/net.
pub fn netns_id() -> Result<u64, Error> {
    fs::metadata("/proc/self/ns/net")
        .map(|m| m.ino())
        .map_err(|e| Error::io("/proc/self/ns/net", e))
}

fn is_bpffs(p: &Path) -> bool {
    let Ok(c) = CString::new(p.as_os_str().as_encoded_bytes()) else {
        return false;
    };
    // SAFETY: statfs is plain old data; zero is a valid bit pattern.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: valid path and out-pointer.
    let rc = unsafe { libc::statfs(c.as_ptr(), &mut st) };
    rc == 0 && st.f_type as i64 == BPF_FS_MAGIC
}

/// Processes whose view of the mounts is the host's: PID 1, and the process that started fw
/// (`ip netns exec` unshares the mount namespace in the process it then turns into fw, so the
/// shell that ran it still has the host's view; some sandboxes hide PID 1's).
fn reference_pids() -> Vec<u32> {
    // SAFETY: getppid has no preconditions.
    let ppid = unsafe { libc::getppid() } as u32;
    let mut pids = vec![1];
    if ppid > 1 {
        pids.push(ppid);
    }
    pids
}

/// Whether a reference process (see [`reference_pids`]) we can inspect is in another mount
/// namespace than this process.
fn foreign_mount_ns() -> bool {
    let Ok(mine) = fs::metadata("/proc/self/ns/mnt") else {
        return false;
    };
    reference_pids().into_iter().any(|pid| {
        fs::metadata(format!("/proc/{pid}/ns/mnt"))
            .is_ok_and(|m| (m.dev(), m.ino()) != (mine.dev(), mine.ino()))
    })
}

/// The bpffs a reference process sees at /sys/fs/bpf, if any and if visible.
fn reference_bpffs() -> Option<fs::Metadata> {
    reference_pids().into_iter().find_map(|pid| {
        let p = PathBuf::from(format!("/proc/{pid}/root/sys/fs/bpf"));
        if is_bpffs(&p) {
            fs::metadata(p).ok()
        } else {
            None
        }
    })
}

/// Make sure /sys/fs/bpf is the host's bpffs: mount it if nothing is there (a fresh machine
/// has none), but refuse a private mount namespace whose /sys hides the host's (`ip netns
/// exec`): pins made there vanish with the process.
pub fn ensure_bpffs() -> Result<(), Error> {
    let here = Path::new(BPFFS);
    if is_bpffs(here) {
        if let (Some(host), Ok(mine)) = (reference_bpffs(), fs::metadata(here))
            && host.dev() != mine.dev()
        {
            return Err(Error::HiddenBpffs);
        }
        return Ok(());
    }
    if foreign_mount_ns() {
        return Err(Error::HiddenBpffs);
    }
    fs::create_dir_all(BPFFS).map_err(|e| Error::io(BPFFS, e))?;
    let src = CString::new("bpf").expect("no NUL");
    let dst = CString::new(BPFFS).expect("no NUL");
    // mode=0700: only root may create entries at the top of the bpffs fw mounts itself.
    let data = CString::new("mode=0700").expect("no NUL");
    // SAFETY: valid NUL-terminated strings.
    let rc = unsafe {
        libc::mount(
            src.as_ptr(),
            dst.as_ptr(),
            src.as_ptr(),
            0,
            data.as_ptr().cast(),
        )
    };
    if rc != 0 || !is_bpffs(here) {
        return Err(Error::Bpffs(std::io::Error::last_os_error()));
    }
    Ok(())
}

/// Check that `dir` is a directory only root can change: not a symlink, owned by root, not
/// writable by group or others.
fn check_dir(dir: &Path) -> Result<(), Error> {
    let md = fs::symlink_metadata(dir).map_err(|e| Error::io(dir, e))?;
    let unsafe_path = |why: String| Error::UnsafePath {
        path: dir.to_path_buf(),
        why,
    };
    if md.file_type().is_symlink() {
        return Err(unsafe_path("is a symbolic link".into()));
    }
    if !md.is_dir() {
        return Err(unsafe_path("is not a directory".into()));
    }
    // SAFETY: geteuid has no preconditions.
    let me = unsafe { libc::geteuid() };
    if md.uid() != 0 && md.uid() != me {
        return Err(unsafe_path(format!(
            "is owned by uid {}, not root: someone else created it",
            md.uid()
        )));
    }
    if md.mode() & 0o022 != 0 {
        return Err(unsafe_path(format!(
            "is writable by group or others (mode {:o})",
            md.mode() & 0o7777
        )));
    }
    Ok(())
}

/// Create `dir` and its missing parents below `root` with mode 0700, and check each level
/// from `root` down (existing ones included).
fn secure_dirs(root: &Path, dir: &Path) -> Result<(), Error> {
    let rel = dir.strip_prefix(root).map_err(|_| Error::UnsafePath {
        path: dir.to_path_buf(),
        why: format!("is not below {}", root.display()),
    })?;
    let mut cur = root.to_path_buf();
    let mut levels = vec![cur.clone()];
    for c in rel.components() {
        cur.push(c);
        levels.push(cur.clone());
    }
    for level in levels {
        match fs::DirBuilder::new().mode(0o700).create(&level) {
            Ok(()) => {
                // The umask may have cleared bits, never added them; make it exact.
                fs::set_permissions(&level, fs::Permissions::from_mode(0o700))
                    .map_err(|e| Error::io(&level, e))?;
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(Error::io(&level, e)),
        }
        check_dir(&level)?;
    }
    Ok(())
}

/// The pins and state of `fw` on one interface in this network namespace.
#[derive(Clone, Debug)]
pub struct IfacePaths {
    pub iface: String,
    /// bpffs directory: the link pins and the map pins.
    pub pins: PathBuf,
    /// Runtime state directory (state.json, lock).
    pub state: PathBuf,
    /// The directories fw owns, below which every level is created and checked.
    pins_root: PathBuf,
    state_root: PathBuf,
}

impl IfacePaths {
    pub fn new(iface: &IfaceName) -> Result<Self, Error> {
        let ns = netns_id()?;
        Ok(IfacePaths {
            iface: iface.to_string(),
            pins: netns_pins_dir(ns).join(iface.as_str()),
            state: netns_state_dir(ns).join(iface.as_str()),
            pins_root: Path::new(BPFFS).join("fw"),
            state_root: PathBuf::from(RUN_DIR),
        })
    }

    /// Paths under explicit directories (tests: a private bpffs directory per test).
    pub fn at(iface: &str, pins: PathBuf, state: PathBuf) -> Self {
        IfacePaths {
            iface: iface.to_string(),
            pins_root: pins.clone(),
            state_root: state.clone(),
            pins,
            state,
        }
    }

    pub fn link(&self) -> PathBuf {
        self.pins.join("link")
    }

    /// fw's XDP program when it runs in a libxdp dispatcher (multi-program mode): the
    /// dispatcher's own pins hold the links; this pin names fw's program among them.
    pub fn prog(&self) -> PathBuf {
        self.pins.join("prog")
    }

    /// Where the next program is pinned before it replaces [`IfacePaths::prog`] (bpffs
    /// refuses names with a dot).
    pub fn prog_next(&self) -> PathBuf {
        self.pins.join("prog_next")
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

    pub fn lock_file(&self) -> PathBuf {
        self.state.join("lock")
    }

    /// Whether the XDP link pin exists. An error (not a "no") when fw may not look, so a
    /// command run without privileges never concludes "not attached".
    pub fn is_attached(&self) -> Result<bool, Error> {
        Ok(present(&self.link())? || present(&self.prog())?)
    }

    /// Whether anything of fw's is here for this interface (pins or state).
    pub fn has_anything(&self) -> Result<bool, Error> {
        Ok(present(&self.pins)? || present(&self.state)?)
    }

    /// Create (0700) and check the pin directory: every level root-owned and writable by
    /// nobody else, and nothing inside that fw did not put there.
    pub fn prepare_pins(&self) -> Result<(), Error> {
        secure_dirs(&self.pins_root, &self.pins)?;
        let known = |name: &str| {
            ["link", "tc_link", "prog", "prog_next", PIN_PROGS_LINEAR].contains(&name)
                || ALL_MAPS.contains(&name)
                || COOKIE_PROG_PINS.contains(&name)
                || fw_common::obs::OBS_MAPS.contains(&name)
        };
        let rd = fs::read_dir(&self.pins).map_err(|e| Error::io(&self.pins, e))?;
        for entry in rd {
            let entry = entry.map_err(|e| Error::io(&self.pins, e))?;
            let name = entry.file_name();
            if !name.to_str().is_some_and(known) {
                return Err(Error::UnsafePath {
                    path: entry.path(),
                    why: "is not something fw creates in its pin directory".into(),
                });
            }
        }
        Ok(())
    }

    /// Create (0700) and check the state directory.
    pub fn prepare_state(&self) -> Result<(), Error> {
        secure_dirs(&self.state_root, &self.state)
    }

    /// Remove the link pins (detaching the programs), then the pin directory. The state
    /// directory is removed only with `state` (never a state fw did not create).
    pub fn remove_pins(&self) -> Result<(), Error> {
        for link in [self.link(), self.tc_link()] {
            if fs::symlink_metadata(&link).is_ok() {
                if let Err(e) = crate::sys::detach_pinned_link(&link) {
                    log::warn!("{}: detach: {e}; removing the pin instead", link.display());
                }
                fs::remove_file(&link).map_err(|e| Error::io(&link, e))?;
            }
        }
        remove_dir_tidy(&self.pins, &self.pins_root)
    }

    pub fn remove_state(&self) -> Result<(), Error> {
        remove_dir_tidy(&self.state, &self.state_root)
    }
}

/// Whether `p` exists; permission problems are errors.
fn present(p: &Path) -> Result<bool, Error> {
    match fs::symlink_metadata(p) {
        Ok(_) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(Error::io(p, e)),
    }
}

/// Remove `dir`, then its empty parents up to (not including) `root`.
fn remove_dir_tidy(dir: &Path, root: &Path) -> Result<(), Error> {
    if fs::symlink_metadata(dir).is_ok() {
        fs::remove_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    }
    let mut cur = dir.parent();
    while let Some(p) = cur {
        if p == root || !p.starts_with(root) || fs::remove_dir(p).is_err() {
            break;
        }
        cur = p.parent();
    }
    Ok(())
}

fn netns_pins_dir(ns: u64) -> PathBuf {
    Path::new(BPFFS)
        .join("fw")
        .join(format!("v{LAYOUT_VERSION}"))
        .join(ns.to_string())
}

fn netns_state_dir(ns: u64) -> PathBuf {
    Path::new(RUN_DIR)
        .join(format!("v{LAYOUT_VERSION}"))
        .join(ns.to_string())
}

/// Interfaces of this network namespace that have `fw` attached (a link pin exists).
pub fn attached_ifaces() -> Result<Vec<IfaceName>, Error> {
    let dir = netns_pins_dir(netns_id()?);
    let rd = match fs::read_dir(&dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(Error::io(&dir, e)),
    };
    let mut out: Vec<IfaceName> = rd
        .filter_map(|e| e.ok())
        .filter(|e| e.path().join("link").exists() || e.path().join("prog").exists())
        .filter_map(|e| e.file_name().to_str().and_then(|n| IfaceName::new(n).ok()))
        .collect();
    out.sort();
    Ok(out)
}

/// The pin directory of an fw of another map layout attached to `iface` here, if any (an
/// upgrade that changed the layout, or an older fw still installed).
pub fn other_layout(iface: &IfaceName) -> Result<Option<(String, PathBuf)>, Error> {
    let ns = netns_id()?;
    let Ok(rd) = fs::read_dir(Path::new(BPFFS).join("fw")) else {
        return Ok(None);
    };
    for e in rd.filter_map(|e| e.ok()) {
        let name = e.file_name().to_string_lossy().into_owned();
        if name == format!("v{LAYOUT_VERSION}") {
            continue;
        }
        let dir = e.path().join(ns.to_string()).join(iface.as_str());
        if dir.join("link").exists() {
            return Ok(Some((name, dir)));
        }
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interface_names_are_checked_like_the_kernel_does() {
        for ok in ["eth0", "veth-fw.12", "enp0s31f6", "a", "x23456789012345"] {
            assert!(IfaceName::new(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            ".",
            "..",
            "../../..",
            "a/b",
            "eth0:1",
            "eth 0",
            "x234567890123456",
            "tab\t",
        ] {
            let e = IfaceName::new(bad).unwrap_err();
            assert!(matches!(e, Error::BadIfaceName(..)), "{bad:?}: {e}");
        }
    }

    #[test]
    fn directories_owned_by_someone_else_or_open_to_others_are_refused() {
        let base = std::env::temp_dir().join(format!("fw-paths-test-{}", std::process::id()));
        let _ = fs::remove_dir_all(&base);
        fs::create_dir_all(&base).unwrap();
        fs::set_permissions(&base, fs::Permissions::from_mode(0o700)).unwrap();
        let dir = base.join("a/b");
        secure_dirs(&base, &dir).unwrap();
        assert_eq!(fs::metadata(base.join("a")).unwrap().mode() & 0o777, 0o700);
        fs::set_permissions(base.join("a"), fs::Permissions::from_mode(0o777)).unwrap();
        let e = secure_dirs(&base, &dir).unwrap_err();
        assert!(e.to_string().contains("writable by group or others"), "{e}");
        fs::set_permissions(base.join("a"), fs::Permissions::from_mode(0o700)).unwrap();
        std::os::unix::fs::symlink("/", base.join("a/link")).unwrap();
        let e = secure_dirs(&base, &base.join("a/link")).unwrap_err();
        assert!(e.to_string().contains("symbolic link"), "{e}");
        let e = secure_dirs(&base, Path::new("/etc")).unwrap_err();
        assert!(e.to_string().contains("is not below"), "{e}");
        fs::remove_dir_all(&base).unwrap();
    }
}
