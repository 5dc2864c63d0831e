//! Errors with the context a user needs: which interface, which file, which map — and typed
//! variants for what callers act on (a severed link, a lockout, a refused edit).

use std::path::{Path, PathBuf};

use fw_policy::PolicyError;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Policy(#[from] PolicyError),
    /// An OS error on a file. Displayed without the OS error itself, which is the source: the
    /// CLI prints the chain once (`{path}: {source}`).
    #[error("{path}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "bpffs is not mounted on /sys/fs/bpf and mounting it failed; mount it with: mount -t bpf bpf /sys/fs/bpf"
    )]
    Bpffs(#[source] std::io::Error),
    #[error(
        "this fw runs in a mount namespace of its own where /sys/fs/bpf is not the host's bpffs (`ip netns exec` remounts /sys): pins made here would vanish with this process, and the host's filters are invisible. Run fw in the network namespace with `nsenter --net=/var/run/netns/NAME fw …` instead"
    )]
    HiddenBpffs,
    #[error("{path}: {why}; fw will not use it. Inspect it, and remove it if nobody should own it")]
    UnsafePath { path: PathBuf, why: String },
    #[error("{0:?} is not an interface name: {1}")]
    BadIfaceName(String, &'static str),
    #[error("no network interface named {0:?} in this network namespace (see `ip -br link`)")]
    NoSuchInterface(String),
    #[error(
        "fw does not filter the loopback interface: traffic on lo never leaves this host and the seed policy accepts it (`-A INPUT -i lo -j ACCEPT`). Attach fw to the interfaces that face the network"
    )]
    Loopback,
    #[error(
        "fw is not attached to {0} in this network namespace (`fw status` lists what is; `fw up --iface {0}` attaches)"
    )]
    NotAttached(String),
    #[error(
        "{iface}: the interface this filter was attached to is gone ({detail}); nothing filters {iface} now. Run `fw up --iface {iface}` to attach the running policy again"
    )]
    LinkSevered { iface: String, detail: String },
    #[error(
        "another XDP program is already attached to {iface} ({detail}); fw will not replace a program it does not own. Remove it first (`bpftool net show dev {iface}` shows who owns it)"
    )]
    Busy { iface: String, detail: String },
    #[error(
        "{iface}: attached with netlink instead of a bpf_link (old kernel or driver); fw cannot pin or replace it safely, so it was removed again"
    )]
    NetlinkOnly { iface: String },
    #[error(
        "the pinned map {path} has another layout than this fw expects ({detail}); it belongs to another fw build. Run `fw down --iface {iface}` and `fw up` again"
    )]
    MapLayout {
        iface: String,
        path: PathBuf,
        detail: String,
    },
    #[error(
        "this fw binary was built without its XDP program (AYA_BUILD_SKIP was set); rebuild with `cargo xtask build`"
    )]
    NoProgram,
    /// The lockout guard refused a policy change.
    #[error(
        "refusing: {why}.\nAdd a rule that admits your address to SSH (see `fw policy show`), or pass --force if you have console access"
    )]
    Lockout { why: String },
    /// A live edit that cannot be made (the policy is unchanged).
    #[error("{0}")]
    Edit(String),
    /// The operation conflicts with the filter's current state (e.g. flushed).
    #[error("{0}")]
    Refused(String),
    #[error(
        "{iface}: another fw command holds the lock {path} (pid {holder}) and did not release it within {secs} s"
    )]
    LockTimeout {
        iface: String,
        path: PathBuf,
        holder: String,
        secs: u64,
    },
    #[error("{path}: corrupt state ({detail}); `fw down --iface {iface}` and `fw up` start afresh")]
    CorruptState {
        iface: String,
        path: PathBuf,
        detail: String,
    },
    #[error("{context}")]
    Bpf {
        context: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync + 'static>,
    },
    #[error("{0}")]
    Other(String),
}

impl Error {
    pub fn io(path: impl AsRef<Path>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.as_ref().to_path_buf(),
            source,
        }
    }

    pub fn bpf<E: std::error::Error + Send + Sync + 'static>(
        context: impl Into<String>,
        e: E,
    ) -> Self {
        Error::Bpf {
            context: context.into(),
            source: Box::new(e),
        }
    }

    /// The OS error at the root of this error, if any (for "run as root" hints and tests).
    pub fn os_error(&self) -> Option<i32> {
        let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(self);
        while let Some(e) = cur {
            if let Some(io) = e.downcast_ref::<std::io::Error>()
                && let Some(code) = io.raw_os_error()
            {
                return Some(code);
            }
            cur = e.source();
        }
        None
    }
}
