//! Errors with the context a user needs: which interface, which file, which map.

use std::path::{Path, PathBuf};

use fw_policy::PolicyError;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Policy(#[from] PolicyError),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "bpffs is not mounted on /sys/fs/bpf and mounting it failed ({0}); mount it with: mount -t bpf bpf /sys/fs/bpf"
    )]
    Bpffs(std::io::Error),
    #[error("no network interface named {0:?} in this network namespace (see `ip -br link`)")]
    NoSuchInterface(String),
    #[error(
        "fw does not filter the loopback interface: traffic on lo never leaves this host and the seed policy accepts it (`-A INPUT -i lo -j ACCEPT`). Attach fw to the interfaces that face the network"
    )]
    Loopback,
    #[error(
        "fw is not attached to {0} in this network namespace (nothing to do; `fw status` lists what is)"
    )]
    NotAttached(String),
    #[error(
        "another XDP program is already attached to {iface} ({detail}); fw will not replace a program it does not own. Remove it first (e.g. `ip link set dev {iface} xdp off`, or `bpftool net` to see who owns it)"
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
    #[error("{context}: {source}")]
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
}
