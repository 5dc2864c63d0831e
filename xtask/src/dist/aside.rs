//! What the package check needs to leave the machine as it found it: a lock so two checks never
//! run dpkg on the same package at once, and a guard that moves aside every file the package
//! would overwrite (an fw installed from source, a saved /etc/fw/fw.toml), purges the package
//! and puts everything back, also when a step fails or Ctrl-C arrives.

use std::{
    fs,
    os::{fd::AsRawFd as _, unix::fs::PermissionsExt as _},
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};

use crate::proc::{self, cmd};

/// An exclusive flock(2), released when dropped (or when the process dies).
pub struct Lock(#[expect(dead_code, reason = "held for its file descriptor")] fs::File);

impl Lock {
    /// Wait (up to `wait`) for the lock at `path`.
    pub fn take(path: &Path, wait: Duration) -> anyhow::Result<Lock> {
        let f = fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(path)
            .with_context(|| format!("opening {}", path.display()))?;
        let end = Instant::now() + wait;
        let mut said = false;
        loop {
            // SAFETY: flock on a descriptor we own.
            if unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0 {
                return Ok(Lock(f));
            }
            if Instant::now() > end {
                bail!(
                    "another package check holds {} for more than {} s",
                    path.display(),
                    wait.as_secs()
                );
            }
            if !said {
                println!(
                    "[dist-check] waiting for another package check ({})",
                    path.display()
                );
                said = true;
            }
            proc::sleep(Duration::from_millis(500))?;
        }
    }
}

/// One path the package installs that existed before: its saved copy.
enum Saved {
    File {
        path: PathBuf,
        copy: PathBuf,
        mode: u32,
    },
    Link {
        path: PathBuf,
        target: PathBuf,
    },
    Dir {
        path: PathBuf,
        mode: u32,
    },
}

/// Files moved out of the package's way; on drop: purge the package if `installed`, then put
/// them back.
pub struct Aside {
    store: PathBuf,
    saved: Vec<Saved>,
    pub installed: bool,
    package: &'static str,
}

impl Aside {
    /// Move aside whatever exists at the package's `files`, remember which of its `dirs` exist.
    pub fn new(
        store: PathBuf,
        package: &'static str,
        files: &[PathBuf],
        dirs: &[PathBuf],
    ) -> anyhow::Result<Aside> {
        if store.exists() {
            bail!(
                "{} exists: a previous package check did not put these files back; restore them by hand, then remove it",
                store.display()
            );
        }
        fs::create_dir_all(&store).with_context(|| format!("creating {}", store.display()))?;
        let mut me = Aside {
            store,
            saved: Vec::new(),
            installed: false,
            package,
        };
        for d in dirs {
            if let Some(m) = fs::metadata(d).ok().filter(|m| m.is_dir()) {
                let mode = m.permissions().mode();
                me.saved.push(Saved::Dir {
                    path: d.clone(),
                    mode,
                });
            }
        }
        for (i, path) in files.iter().enumerate() {
            let Ok(meta) = fs::symlink_metadata(path) else {
                continue;
            };
            println!(
                "[dist-check] moving {} aside (put back afterwards)",
                path.display()
            );
            if meta.file_type().is_symlink() {
                let target = fs::read_link(path)?;
                fs::remove_file(path)?;
                me.saved.push(Saved::Link {
                    path: path.clone(),
                    target,
                });
                continue;
            }
            let copy = me.store.join(i.to_string());
            fs::copy(path, &copy).with_context(|| format!("saving {}", path.display()))?;
            me.saved.push(Saved::File {
                path: path.clone(),
                copy,
                mode: meta.permissions().mode(),
            });
            fs::remove_file(path).with_context(|| format!("moving {} aside", path.display()))?;
        }
        Ok(me)
    }

    /// Whether `dir` was there before the check.
    pub fn existed(&self, dir: &Path) -> bool {
        self.saved
            .iter()
            .any(|s| matches!(s, Saved::Dir { path, .. } if path == dir))
    }

    fn restore(&self) -> anyhow::Result<()> {
        for s in &self.saved {
            match s {
                Saved::Dir { path, mode } => {
                    if !path.is_dir() {
                        fs::create_dir_all(path)?;
                        fs::set_permissions(path, fs::Permissions::from_mode(*mode))?;
                    }
                }
                Saved::Link { path, target } => {
                    fs::create_dir_all(path.parent().expect("absolute"))?;
                    std::os::unix::fs::symlink(target, path)?;
                }
                Saved::File { path, copy, mode } => {
                    fs::create_dir_all(path.parent().expect("absolute"))?;
                    fs::copy(copy, path)?;
                    fs::set_permissions(path, fs::Permissions::from_mode(*mode))?;
                }
            }
        }
        Ok(())
    }
}

impl Drop for Aside {
    fn drop(&mut self) {
        if self.installed {
            println!("[dist-check] cleanup: dpkg --purge {}", self.package);
            let _ = cmd("dpkg")
                .args(["--purge", self.package])
                .env("DEBIAN_FRONTEND", "noninteractive")
                .timeout(Duration::from_secs(300))
                .cleanup()
                .run();
        }
        match self.restore() {
            Ok(()) => {
                let _ = fs::remove_dir_all(&self.store);
            }
            Err(e) => eprintln!(
                "[dist-check] could not put every file back ({e:#}); the copies are in {}",
                self.store.display()
            ),
        }
    }
}
