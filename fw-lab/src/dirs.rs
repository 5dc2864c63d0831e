//! Directories a run owns: [`TempDir`] for files, [`PrivateDirs`] for a bpffs pin directory
//! and a state directory of its own (the kernel tests' and the benchmark's private copies of
//! fw, which must never touch the real /sys/fs/bpf/fw). Both are removed on drop; what a
//! killed run left is swept by the next one.

use std::{
    fs,
    path::{Path, PathBuf},
};

use crate::{
    Error, Result,
    netns::{next_seq, pid_alive, pid_of_name},
};

/// Where bpffs is mounted.
pub const BPFFS: &str = "/sys/fs/bpf";
/// Where private state directories go.
pub const RUN: &str = "/run";

/// A directory under the system temp dir, removed on drop.
pub struct TempDir(PathBuf);

impl TempDir {
    /// `$TMPDIR/fw-e2e-<tag>-<pid>-<n>`; panics if it cannot be created.
    #[track_caller]
    pub fn new(tag: &str) -> TempDir {
        let p = std::env::temp_dir().join(format!(
            "fw-e2e-{tag}-{}-{}",
            std::process::id(),
            next_seq()
        ));
        fs::create_dir_all(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
        TempDir(p)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }

    /// Write `name` in the directory and return its path; panics if it cannot.
    #[track_caller]
    pub fn write(&self, name: &str, contents: &str) -> PathBuf {
        let p = self.0.join(name);
        fs::write(&p, contents).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
        p
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// `/sys/fs/bpf/<prefix>-<pid>-<n>` (pins) and `/run/<prefix>-<pid>-<n>` (state), removed on
/// drop. Neither exists yet when created; the caller (fw's loader) makes them.
pub struct PrivateDirs {
    pub pins: PathBuf,
    pub state: PathBuf,
}

impl PrivateDirs {
    /// New names for this process, after sweeping `<prefix>-<pid>-*` directories whose
    /// process is gone (a run killed by a signal cannot run its destructors).
    pub fn new(prefix: &str) -> Result<PrivateDirs> {
        sweep_stale(prefix);
        let name = format!("{prefix}-{}-{}", std::process::id(), next_seq());
        let d = PrivateDirs {
            pins: Path::new(BPFFS).join(&name),
            state: Path::new(RUN).join(&name),
        };
        for p in [&d.pins, &d.state] {
            if p.exists() {
                return Err(Error::Other(format!("{} exists already", p.display())));
            }
        }
        Ok(d)
    }
}

impl Drop for PrivateDirs {
    fn drop(&mut self) {
        for d in [&self.pins, &self.state] {
            if d.exists()
                && let Err(e) = fs::remove_dir_all(d)
            {
                eprintln!("warning: could not remove {}: {e}", d.display());
            }
        }
    }
}

/// Remove `<prefix>-<pid>-<n>` under bpffs and /run whose process is gone.
fn sweep_stale(prefix: &str) {
    for root in [BPFFS, RUN] {
        let Ok(rd) = fs::read_dir(root) else { continue };
        for e in rd.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            let Some(rest) = name.strip_prefix(prefix) else {
                continue;
            };
            if rest.starts_with('-')
                && let Some(pid) = pid_of_name(&name)
                && !pid_alive(pid)
            {
                let _ = fs::remove_dir_all(e.path());
            }
        }
    }
}
