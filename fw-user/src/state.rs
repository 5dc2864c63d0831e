//! What the maps cannot hold: the policy with its comments and rule ids, the mode, the
//! generation in force. Kept in /run (gone at reboot, like the pins). Writers hold a lock so
//! two `fw` commands on one interface never interleave.

use std::{
    fs::{self, File},
    io::Write as _,
    os::fd::AsRawFd as _,
};

use serde::{Deserialize, Serialize};

use crate::{Error, pins::IfacePaths};
use fw_policy::Policy;

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct State {
    pub iface: String,
    /// XDP attach mode actually in use ("native" or "skb").
    pub mode: String,
    /// The generation in force (0 or 1).
    pub generation: u32,
    /// `fw flush` in force.
    #[serde(default)]
    pub flushed: bool,
    pub policy: Policy,
    /// Where the policy came from ("embedded seed policy" or a file path).
    pub source: String,
    /// The policy before the last `fw apply` / `fw flush` (what `fw rollback` restores).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous: Option<Previous>,
    /// An `fw apply --confirm` waiting for `fw confirm`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pending: Option<Pending>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Previous {
    pub policy: Policy,
    pub source: String,
    pub flushed: bool,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Pending {
    /// Identifies the rollback timer that owns this confirmation.
    pub token: u64,
    /// Unix time (seconds) at which the previous policy comes back.
    pub deadline: u64,
}

impl State {
    pub fn load(paths: &IfacePaths) -> Result<Self, Error> {
        let f = paths.state_file();
        let text = fs::read_to_string(&f).map_err(|e| Error::io(&f, e))?;
        serde_json::from_str(&text)
            .map_err(|e| Error::Other(format!("{}: corrupt state ({e})", f.display())))
    }

    /// Write atomically (temp file + rename): a crash leaves the old or the new state.
    pub fn save(&self, paths: &IfacePaths) -> Result<(), Error> {
        fs::create_dir_all(&paths.state).map_err(|e| Error::io(&paths.state, e))?;
        let f = paths.state_file();
        let tmp = f.with_extension("json.tmp");
        let text = serde_json::to_string_pretty(self).expect("state serializes");
        let mut file = File::create(&tmp).map_err(|e| Error::io(&tmp, e))?;
        file.write_all(text.as_bytes())
            .and_then(|_| file.sync_all())
            .map_err(|e| Error::io(&tmp, e))?;
        fs::rename(&tmp, &f).map_err(|e| Error::io(&f, e))
    }
}

/// An exclusive lock on one interface's fw state, released on drop.
pub struct Lock {
    _file: File,
}

impl Lock {
    pub fn acquire(paths: &IfacePaths) -> Result<Self, Error> {
        fs::create_dir_all(&paths.state).map_err(|e| Error::io(&paths.state, e))?;
        let p = paths.state.join("lock");
        let file = File::create(&p).map_err(|e| Error::io(&p, e))?;
        // SAFETY: valid fd.
        if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) } != 0 {
            return Err(Error::io(&p, std::io::Error::last_os_error()));
        }
        Ok(Lock { _file: file })
    }
}
