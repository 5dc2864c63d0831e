//! Block lists kept beside the policy (`fw block add`, `fw block import`): what they hold, where
//! they came from, when entries expire. Stored in `blocks.json` next to the state (a million
//! entries do not belong in the policy history). The kernel's block maps are derived from these
//! lists plus the policy's own `[[block]]` entries.
//!
//! **Write-ahead.** A change is saved here first, with a `blocks.pending` marker; then the maps
//! are brought to it; then the marker goes. A command that finds the marker (a crash in
//! between) resyncs the maps from what they hold.

use std::{collections::BTreeMap, fs, path::PathBuf};

use fw_policy::{
    Cidr, Policy,
    blocks::{BlockSet, MANUAL_LIST, MAX_LISTS, POLICY_LIST},
};
use serde::{Deserialize, Serialize};

use crate::{Error, paths::IfacePaths, state::unix_now};

/// The name of `fw block add`'s list.
pub const MANUAL: &str = "manual";

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlockStore {
    pub lists: BTreeMap<String, StoredList>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredList {
    /// Bit of the kernel's list mask and index of its hit counter.
    pub id: u32,
    /// Where it came from: "fw block add" or the imported file.
    pub source: String,
    /// Unix time of the last change.
    pub updated: u64,
    pub entries: Vec<StoredEntry>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredEntry {
    pub cidr: Cidr,
    /// Unix time (s) when the block lifts; none: never.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub comment: Option<String>,
}

impl StoredEntry {
    pub fn live(&self, now: u64) -> bool {
        self.expires.is_none_or(|e| e > now)
    }
}

fn file(paths: &IfacePaths) -> PathBuf {
    paths.state.join("blocks.json")
}

fn marker(paths: &IfacePaths) -> PathBuf {
    paths.state.join("blocks.pending")
}

impl BlockStore {
    pub fn load(paths: &IfacePaths) -> Result<Self, Error> {
        let f = file(paths);
        match fs::read(&f) {
            Ok(b) => serde_json::from_slice(&b)
                .map_err(|e| Error::Other(format!("{}: {e}", f.display()))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(BlockStore::default()),
            Err(e) => Err(Error::io(&f, e)),
        }
    }

    /// Write atomically (a new 0600 file, fsynced, renamed over the old one).
    pub fn save(&self, paths: &IfacePaths) -> Result<(), Error> {
        paths.prepare_state()?;
        let text = serde_json::to_vec(self).expect("block lists serialize");
        crate::state::write_private(&file(paths), &text)
    }

    /// The id a new list gets: the lowest free one (0 and 1 are `manual` and the policy's).
    pub fn free_id(&self) -> Result<u32, Error> {
        (2..MAX_LISTS)
            .find(|i| self.lists.values().all(|l| l.id != *i))
            .ok_or_else(|| {
                Error::Refused(format!(
                    "fw holds at most {} block lists; remove one first (fw block del --list NAME)",
                    MAX_LISTS - 2
                ))
            })
    }

    pub fn list_mut(&mut self, name: &str) -> Result<&mut StoredList, Error> {
        if !self.lists.contains_key(name) {
            let id = if name == MANUAL {
                MANUAL_LIST
            } else {
                self.free_id()?
            };
            self.lists.insert(
                name.to_string(),
                StoredList {
                    id,
                    source: if name == MANUAL {
                        "fw block add".into()
                    } else {
                        name.into()
                    },
                    updated: unix_now(),
                    entries: Vec::new(),
                },
            );
        }
        Ok(self.lists.get_mut(name).expect("just inserted"))
    }

    /// Forget entries whose time is up; lists left empty go (except `manual`).
    pub fn prune(&mut self, now: u64) -> bool {
        let mut changed = false;
        for l in self.lists.values_mut() {
            let n = l.entries.len();
            l.entries.retain(|e| e.live(now));
            changed |= n != l.entries.len();
        }
        changed
    }

    pub fn entries(&self) -> usize {
        self.lists.values().map(|l| l.entries.len()).sum()
    }
}

/// What the kernel must hold for `store` and the policy's `[[block]]` entries.
pub fn desired(store: &BlockStore, policy: &Policy) -> BlockSet {
    build(store, policy, false)
}

/// What the kernel was given for `store` (expired entries included: they are still in the maps
/// until the next change removes them).
pub fn held(store: &BlockStore, policy: &Policy) -> BlockSet {
    build(store, policy, true)
}

fn build(store: &BlockStore, policy: &Policy, keep_expired: bool) -> BlockSet {
    let now = unix_now();
    let mono = crate::sys::monotonic_coarse_ns();
    let mut s = BlockSet::default();
    for c in policy.block_sources() {
        s.add(POLICY_LIST, c, 0);
    }
    for l in store.lists.values() {
        for e in &l.entries {
            let expires = match e.expires {
                None => 0,
                Some(t) if t > now => mono + (t - now) * 1_000_000_000,
                Some(_) if keep_expired => 1,
                Some(_) => continue,
            };
            s.add(l.id, &e.cidr, expires);
        }
    }
    s.finish();
    s
}

/// Start a change of the block maps (the marker says "maps may differ from the lists").
pub fn begin(paths: &IfacePaths) -> Result<(), Error> {
    paths.prepare_state()?;
    fs::write(marker(paths), b"").map_err(|e| Error::io(marker(paths), e))
}

pub fn end(paths: &IfacePaths) -> Result<(), Error> {
    match fs::remove_file(marker(paths)) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(Error::io(marker(paths), e)),
    }
}

pub fn interrupted(paths: &IfacePaths) -> bool {
    marker(paths).exists()
}
