//! Sharing the XDP hook with other programs through libxdp's multi-program protocol
//! (xdp-tools' lib/libxdp/protocol.org, dispatcher version 2), so fw runs beside xdp-filter,
//! programs loaded with `xdp-loader` and anything else that follows it, in an order set by
//! priorities.
//!
//! - A **dispatcher** (libxdp's precompiled `xdp-dispatcher.o`, named `xdp_dispatcher`) is the
//!   XDP program on the interface, attached through netlink (not a bpf_link, so the next tool
//!   can swap it). It calls up to ten stub functions `prog0`…`prog9` in turn; each component
//!   program is an freplace extension of one stub. Its frozen .rodata holds the run config:
//!   how many slots run, each one's priority, the XDP actions after which the next runs
//!   ("chain call actions"), and which components handle multi-buffer frames.
//! - Components are pinned in `/sys/fs/bpf/xdp/dispatch-IFINDEX-DISPATCHERID/progN-{prog,link}`;
//!   every change takes an exclusive flock on `/sys/fs/bpf/xdp`.
//! - **Every change builds a new dispatcher** (the config is frozen): load it with the new
//!   config, attach every component to its slot (freplace programs can be attached to several
//!   targets since Linux 5.10), pin them, swap the dispatcher on the interface atomically
//!   (XDP_FLAGS_REPLACE naming the old one: if someone else swapped meanwhile, start over),
//!   then remove the old dispatcher's pins. Adding, upgrading, reordering or removing fw never
//!   leaves the interface without the other programs, nor without fw until it is removed.
//!
//! fw's component is its own XDP program loaded as an extension; it returns only PASS or DROP,
//! and PASS continues with the next program. Lower priorities run first (libxdp's order; ties
//! by name, then program id).

use std::{
    os::fd::{AsFd as _, AsRawFd as _, OwnedFd},
    path::{Path, PathBuf},
};

use aya::{Ebpf, EbpfLoader, programs::Xdp};

use crate::{
    Error,
    dispatcher_sys::{self as sys, ProgInfo},
    xdp_netlink::{self as nl, XdpMode},
};

mod kernel;
mod plan;

pub use kernel::{explain_ext_refused, kernel_supports_components, not_a_dispatcher};
pub use plan::{Joined, Place, Plan, Slot, find, forget_stale, leave};

/// The dispatcher program's name (libxdp recognises dispatchers by it).
pub const DISPATCHER_NAME: &str = "xdp_dispatcher";
const MAGIC: u8 = 236;
const VERSION: u8 = 2;
/// What an empty stub returns; always a chain call action, so a missing component is skipped.
const RETVAL: u32 = 31;
pub const MAX_PROGS: usize = 10;
const CONFIG_SIZE: usize = 124;
const BPF_F_XDP_HAS_FRAGS: u32 = crate::probe::BPF_F_XDP_HAS_FRAGS;
const XDP_PASS: u32 = 2;
/// fw's default run priority: after cheap drop lists such as xdp-filter (10), before
/// programs at libxdp's default (50) that may redirect or transmit packets past fw.
pub const DEFAULT_PRIORITY: u32 = 20;

/// Where libxdp keeps its pins: `$LIBXDP_BPFFS/xdp`, by default `/sys/fs/bpf/xdp`.
pub fn xdp_dir() -> PathBuf {
    let root = std::env::var_os("LIBXDP_BPFFS").unwrap_or_else(|| "/sys/fs/bpf".into());
    Path::new(&root).join("xdp")
}

/// Where libxdp's precompiled dispatcher is looked for, as libxdp does.
pub fn dispatcher_object() -> Result<PathBuf, Error> {
    let mut dirs: Vec<PathBuf> = std::env::var_os("LIBXDP_OBJECT_PATH")
        .map(|p| std::env::split_paths(&p).collect())
        .unwrap_or_default();
    dirs.extend(
        [
            "/usr/lib/x86_64-linux-gnu/bpf",
            "/usr/lib/aarch64-linux-gnu/bpf",
            "/usr/lib64/bpf",
            "/usr/lib/bpf",
            "/usr/local/lib/bpf",
            "/usr/local/lib64/bpf",
        ]
        .map(PathBuf::from),
    );
    dirs.iter()
        .map(|d| d.join("xdp-dispatcher.o"))
        .find(|p| p.is_file())
        .ok_or_else(|| {
            Error::Other(
                "libxdp's dispatcher (xdp-dispatcher.o) is not installed: install libxdp (Debian/Ubuntu: `apt install libxdp1`, Fedora/RHEL: `dnf install libxdp`) or set LIBXDP_OBJECT_PATH".into(),
            )
        })
}

/// The run configuration in a dispatcher's .rodata (`struct xdp_dispatcher_config`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Config {
    pub num_progs: u8,
    pub is_xdp_frags: bool,
    pub chain_call_actions: [u32; MAX_PROGS],
    pub run_prios: [u32; MAX_PROGS],
    pub program_flags: [u32; MAX_PROGS],
}

impl Config {
    pub fn to_bytes(&self) -> [u8; CONFIG_SIZE] {
        let mut b = [0u8; CONFIG_SIZE];
        b[0] = MAGIC;
        b[1] = VERSION;
        b[2] = self.num_progs;
        b[3] = u8::from(self.is_xdp_frags);
        for i in 0..MAX_PROGS {
            b[4 + 4 * i..8 + 4 * i].copy_from_slice(&self.chain_call_actions[i].to_ne_bytes());
            b[44 + 4 * i..48 + 4 * i].copy_from_slice(&self.run_prios[i].to_ne_bytes());
            b[84 + 4 * i..88 + 4 * i].copy_from_slice(&self.program_flags[i].to_ne_bytes());
        }
        b
    }

    /// A version-2 configuration, or why not (libxdp refuses others the same way).
    pub fn parse(b: &[u8]) -> Result<Config, String> {
        if b.len() != CONFIG_SIZE {
            return Err(format!(
                "configuration of {} bytes, not {CONFIG_SIZE}",
                b.len()
            ));
        }
        if b[0] != MAGIC || b[1] != VERSION {
            return Err(format!(
                "dispatcher version {} (magic {}); fw speaks version {VERSION}",
                b[1], b[0]
            ));
        }
        let word = |o: usize| u32::from_ne_bytes(b[o..o + 4].try_into().expect("4 bytes"));
        let mut c = Config {
            num_progs: b[2],
            is_xdp_frags: b[3] != 0,
            ..Config::default()
        };
        if usize::from(c.num_progs) > MAX_PROGS {
            return Err(format!("{} programs in a dispatcher of {MAX_PROGS}", b[2]));
        }
        for i in 0..MAX_PROGS {
            c.chain_call_actions[i] = word(4 + 4 * i);
            c.run_prios[i] = word(44 + 4 * i);
            c.program_flags[i] = word(84 + 4 * i);
        }
        Ok(c)
    }
}

/// One program in a dispatcher.
#[derive(Debug)]
pub struct Component {
    pub prog_id: u32,
    pub name: String,
    pub priority: u32,
    /// Chain call actions as a bitmap of XDP actions (without the stub's [`RETVAL`]).
    pub chain: u32,
    /// Handles multi-buffer frames (BPF_F_XDP_HAS_FRAGS).
    pub frags: bool,
    /// Where it is pinned now (`progN-prog`); `None` for fw's new program.
    pin: Option<PathBuf>,
}

/// A dispatcher attached to an interface.
#[derive(Debug)]
pub struct Dispatcher {
    pub id: u32,
    pub mode: XdpMode,
    pub config: Config,
    /// In run order.
    pub components: Vec<Component>,
    pub dir: PathBuf,
    fd: OwnedFd,
}

/// What holds an interface's XDP hook.
#[derive(Debug)]
pub enum Occupant {
    Empty,
    Dispatcher(Dispatcher),
    /// A program attached on its own (a bpf_link or netlink), not through a dispatcher.
    Program {
        id: u32,
        name: String,
        mode: XdpMode,
    },
}

/// The exclusive lock of libxdp's pin directory (flock on the directory), held while reading
/// or changing any dispatcher.
pub struct XdpLock {
    _fd: OwnedFd,
}

impl XdpLock {
    pub fn acquire() -> Result<XdpLock, Error> {
        let dir = xdp_dir();
        crate::paths::ensure_bpffs()?;
        match std::fs::create_dir(&dir) {
            Ok(()) => {
                use std::os::unix::fs::PermissionsExt as _;
                let _ = std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700));
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(Error::io(&dir, e)),
        }
        let f = std::fs::File::open(&dir).map_err(|e| Error::io(&dir, e))?;
        // SAFETY: flock on an open fd.
        if unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX) } != 0 {
            return Err(Error::io(&dir, std::io::Error::last_os_error()));
        }
        Ok(XdpLock { _fd: f.into() })
    }
}

/// What is on interface `ifindex`. Call with the [`XdpLock`] held.
pub fn occupant(ifindex: u32, _lock: &XdpLock) -> Result<Occupant, Error> {
    let netlink = |e| Error::io(format!("netlink: XDP of interface {ifindex}"), e);
    let Some((id, mode)) = nl::query(ifindex).map_err(netlink)? else {
        return Ok(Occupant::Empty);
    };
    let fd = sys::prog_fd_by_id(id).map_err(|e| Error::io(format!("BPF program {id}"), e))?;
    let info = sys::prog_info(fd.as_fd()).map_err(|e| Error::io(format!("BPF program {id}"), e))?;
    if info.name != DISPATCHER_NAME {
        return Ok(Occupant::Program {
            id,
            name: info.name,
            mode,
        });
    }
    let config = read_config(&info)?;
    let dir = xdp_dir().join(format!("dispatch-{ifindex}-{id}"));
    let mut components = Vec::new();
    for slot in 0..usize::from(config.num_progs) {
        let pin = dir.join(format!("prog{slot}-prog"));
        let pfd = sys::obj_get(&pin).map_err(|e| {
            Error::Other(format!(
                "the libxdp dispatcher on interface {ifindex} (program {id}) has {} programs, but {} cannot be opened ({e}): its pins are damaged; `xdp-loader status` shows it, `xdp-loader unload --all` removes it",
                config.num_progs,
                pin.display()
            ))
        })?;
        let p = sys::prog_info(pfd.as_fd()).map_err(|e| Error::io(&pin, e))?;
        components.push(Component {
            prog_id: p.id,
            name: p.name,
            priority: config.run_prios[slot],
            chain: config.chain_call_actions[slot] & !(1 << RETVAL),
            frags: config.program_flags[slot] & BPF_F_XDP_HAS_FRAGS != 0,
            pin: Some(pin),
        });
    }
    Ok(Occupant::Dispatcher(Dispatcher {
        id,
        mode,
        config,
        components,
        dir,
        fd,
    }))
}

fn read_config(info: &ProgInfo) -> Result<Config, Error> {
    let [map] = info.map_ids[..] else {
        return Err(Error::Other(format!(
            "program {} is named {DISPATCHER_NAME} but has {} maps, not one configuration map",
            info.id,
            info.map_ids.len()
        )));
    };
    let value = sys::rodata_value(map)
        .map_err(|e| Error::Other(format!("the dispatcher's configuration: {e}")))?;
    Config::parse(&value).map_err(|why| {
        Error::Other(format!(
            "the libxdp dispatcher (program {}) uses another protocol version: {why}. Remove it with the libxdp tool that made it (`xdp-loader unload --all`), or update fw",
            info.id
        ))
    })
}

/// The name of interface `ifindex` in this network namespace.
pub fn ifname(ifindex: u32) -> Option<String> {
    let mut buf = [0u8; libc::IF_NAMESIZE];
    // SAFETY: buf holds IF_NAMESIZE bytes, as if_indextoname requires.
    let p = unsafe { libc::if_indextoname(ifindex, buf.as_mut_ptr().cast()) };
    if p.is_null() {
        return None;
    }
    let end = buf.iter().position(|b| *b == 0).unwrap_or(buf.len());
    Some(String::from_utf8_lossy(&buf[..end]).into_owned())
}

fn config_of(order: &[Component]) -> Config {
    let mut c = Config {
        num_progs: order.len() as u8,
        // fw loads the dispatcher through aya, which sets BPF_F_XDP_HAS_FRAGS only for
        // programs in an `xdp.frags` section; libxdp's dispatcher is in `xdp`.
        is_xdp_frags: false,
        ..Config::default()
    };
    for (i, p) in order.iter().enumerate() {
        c.chain_call_actions[i] = p.chain | 1 << RETVAL;
        c.run_prios[i] = p.priority;
        c.program_flags[i] = if p.frags { BPF_F_XDP_HAS_FRAGS } else { 0 };
    }
    c
}

fn load_dispatcher(config: &Config) -> Result<Ebpf, Error> {
    let path = dispatcher_object()?;
    let obj = std::fs::read(&path).map_err(|e| Error::io(&path, e))?;
    let bytes = config.to_bytes();
    let mut ebpf = EbpfLoader::new()
        .override_global("conf", &bytes, true)
        .load(&obj)
        .map_err(|e| Error::bpf(format!("loading {}", path.display()), e))?;
    dispatcher_prog(&mut ebpf)?
        .load()
        .map_err(|e| Error::bpf(format!("the kernel refused {}", path.display()), e))?;
    Ok(ebpf)
}

fn dispatcher_prog(ebpf: &mut Ebpf) -> Result<&mut Xdp, Error> {
    ebpf.program_mut(DISPATCHER_NAME)
        .ok_or_else(|| Error::Other(format!("{DISPATCHER_NAME} missing from the object")))?
        .try_into()
        .map_err(|e| Error::bpf(DISPATCHER_NAME, e))
}

/// Remove a dispatcher's pin directory (its links and program references).
fn remove_pins(dir: &Path) -> Result<(), Error> {
    match std::fs::read_dir(dir) {
        Ok(rd) => {
            for e in rd.flatten() {
                let name = e.file_name();
                let ours = name.to_str().is_some_and(|n| {
                    n.starts_with("prog") && (n.ends_with("-link") || n.ends_with("-prog"))
                });
                if ours {
                    std::fs::remove_file(e.path()).map_err(|err| Error::io(e.path(), err))?;
                }
            }
            std::fs::remove_dir(dir).map_err(|e| Error::io(dir, e))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(Error::io(dir, e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_round_trips_in_libxdp_layout() {
        let mut c = Config {
            num_progs: 2,
            ..Config::default()
        };
        c.chain_call_actions[0] = 1 << XDP_PASS | 1 << RETVAL;
        c.run_prios[0] = 10;
        c.run_prios[1] = 20;
        c.program_flags[1] = BPF_F_XDP_HAS_FRAGS;
        let b = c.to_bytes();
        assert_eq!((b[0], b[1], b[2]), (MAGIC, VERSION, 2));
        // chain_call_actions at 4, run_prios at 44, program_flags at 84 (bits 32, 352, 672
        // in libxdp's BTF).
        assert_eq!(u32::from_ne_bytes(b[44..48].try_into().unwrap()), 10);
        assert_eq!(
            u32::from_ne_bytes(b[88..92].try_into().unwrap()),
            BPF_F_XDP_HAS_FRAGS
        );
        assert_eq!(Config::parse(&b), Ok(c));
    }

    #[test]
    fn another_protocol_version_is_refused() {
        let mut b = Config::default().to_bytes();
        b[1] = 3;
        assert!(Config::parse(&b).unwrap_err().contains("version 3"));
        assert!(Config::parse(&b[..100]).is_err());
    }

    #[test]
    fn run_order_is_priority_then_name() {
        let comp = |name: &str, priority, pinned: bool| Component {
            prog_id: 7,
            name: name.into(),
            priority,
            chain: 1 << XDP_PASS,
            frags: false,
            pin: pinned.then(|| PathBuf::from("/x")),
        };
        let mut order = [
            comp("zz", 50, true),
            comp("fw_xdp", 20, false),
            comp("xdpfilt_alw_all", 10, true),
            comp("aa", 50, true),
        ];
        order.sort_by(|a, b| {
            (a.priority, &a.name, a.pin.is_none(), a.prog_id).cmp(&(
                b.priority,
                &b.name,
                b.pin.is_none(),
                b.prog_id,
            ))
        });
        let names: Vec<&str> = order.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(names, ["xdpfilt_alw_all", "fw_xdp", "aa", "zz"]);
        let c = config_of(&order);
        assert_eq!(c.num_progs, 4);
        assert_eq!(c.run_prios[..4], [10, 20, 50, 50]);
        assert!(
            c.chain_call_actions
                .iter()
                .take(4)
                .all(|a| a & 1 << RETVAL != 0)
        );
    }
}
