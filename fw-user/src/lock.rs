//! One fw command at a time per interface: an exclusive flock on a file only root can open.
//!
//! The lock file lives in the 0700 state directory and is created 0600 without following
//! symlinks, so no other user can open it — flock works on any open descriptor, even a
//! read-only one, so a world-readable lock file would let anyone freeze fw (and hold back a
//! rollback timer). A holder that does not let go within [`WAIT`] is named in the error.

use std::{
    fs::{File, OpenOptions},
    io::{Read as _, Seek as _, Write as _},
    os::{
        fd::AsRawFd as _,
        unix::fs::{MetadataExt as _, OpenOptionsExt as _, PermissionsExt as _},
    },
    time::{Duration, Instant},
};

use crate::{Error, paths::IfacePaths};

/// How long a command waits for another fw command on the same interface.
pub const WAIT: Duration = Duration::from_secs(60);

/// An exclusive lock on one interface's fw state, released on drop.
#[derive(Debug)]
pub struct Lock {
    _file: File,
}

impl Lock {
    pub fn acquire(paths: &IfacePaths) -> Result<Self, Error> {
        Self::acquire_within(paths, WAIT)
    }

    pub fn acquire_within(paths: &IfacePaths, wait: Duration) -> Result<Self, Error> {
        paths.prepare_state()?;
        let p = paths.lock_file();
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(&p)
            .map_err(|e| Error::io(&p, e))?;
        let md = file.metadata().map_err(|e| Error::io(&p, e))?;
        // SAFETY: geteuid has no preconditions.
        let me = unsafe { libc::geteuid() };
        if !md.is_file() || (md.uid() != 0 && md.uid() != me) {
            return Err(Error::UnsafePath {
                path: p,
                why: format!("is not a regular file owned by root (uid {})", md.uid()),
            });
        }
        if md.mode() & 0o077 != 0 {
            file.set_permissions(std::fs::Permissions::from_mode(0o600))
                .map_err(|e| Error::io(&p, e))?;
        }
        let deadline = Instant::now() + wait;
        loop {
            // SAFETY: valid fd.
            if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0 {
                break;
            }
            let err = std::io::Error::last_os_error();
            if err.raw_os_error() != Some(libc::EWOULDBLOCK) {
                return Err(Error::io(&p, err));
            }
            if Instant::now() >= deadline {
                let mut holder = String::new();
                let _ = file.read_to_string(&mut holder);
                return Err(Error::LockTimeout {
                    iface: paths.iface.clone(),
                    path: p,
                    holder: holder.trim().to_string(),
                    secs: wait.as_secs(),
                });
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        // Who holds it, for the message another command prints while waiting in vain.
        let _ = file.set_len(0);
        let _ = file.rewind();
        let _ = write!(file, "{}", std::process::id());
        Ok(Lock { _file: file })
    }
}

/// Whether another fw command holds the lock of `paths` right now (a change in progress), found
/// without waiting and without keeping the lock.
pub fn held(paths: &IfacePaths) -> bool {
    let Ok(file) = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(paths.lock_file())
    else {
        return false;
    };
    // SAFETY: valid fd; a shared lock is dropped with the file.
    let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_SH | libc::LOCK_NB) };
    rc != 0 && std::io::Error::last_os_error().raw_os_error() == Some(libc::EWOULDBLOCK)
}
