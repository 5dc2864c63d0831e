//! The lab's one error type. Most of the lab is used from tests, which panic with it; the
//! binaries (xtask, fw-bench, fw-diff) carry it up through anyhow and look for
//! [`Error::Interrupted`] to exit quietly after Ctrl-C.

use std::io;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Ctrl-C or SIGTERM arrived (see [`crate::signal`]); the step stopped so that the Drop
    /// guards could clean up.
    #[error("interrupted (Ctrl-C)")]
    Interrupted,
    #[error(
        "cannot start `{cmd}`: {source} (is it installed? `cargo xtask setup` installs what fw needs)"
    )]
    Spawn { cmd: String, source: io::Error },
    /// A command ended unsuccessfully, or did not end in time.
    #[error("`{cmd}` {why}{output}")]
    Failed {
        cmd: String,
        /// "failed (exit status 1)", "did not finish within 15 s and was stopped", …
        why: String,
        /// What it printed, indented, after a colon and a newline (empty if nothing).
        output: String,
    },
    #[error("{what}: {source}")]
    Io { what: String, source: io::Error },
    #[error("{0}")]
    Other(String),
}

impl Error {
    pub fn is_interrupted(&self) -> bool {
        matches!(self, Error::Interrupted)
    }

    /// An I/O error with what was being done.
    pub fn io(what: impl Into<String>, source: io::Error) -> Self {
        Error::Io {
            what: what.into(),
            source,
        }
    }

    /// The last OS error (errno), with what was being done.
    pub fn last_os(what: impl Into<String>) -> Self {
        Self::io(what, io::Error::last_os_error())
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
