//! xtask runs its commands with the lab's runner ([`fw_lab::Cmd`]: a timeout, its own process
//! group, Ctrl-C turned into an error that unwinds through the Drop guards), with the tools
//! setup installed put on PATH.

use std::ffi::OsStr;

pub use fw_lab::{
    Output,
    proc::{indent, is_root},
    signal::{check_interrupt, install_handlers as install_signal_handlers, sleep},
};

/// `program`, with the tools setup installed (bpf-linker) found even when their directory is
/// not on PATH; default timeout 60 s.
pub fn cmd(program: impl AsRef<OsStr>) -> fw_lab::Cmd {
    fw_lab::Cmd::new(program).env("PATH", crate::setup::child_path())
}

/// Whether the user pressed Ctrl-C (the error of a step that stopped for it).
pub fn is_interrupted(e: &anyhow::Error) -> bool {
    e.downcast_ref::<fw_lab::Error>()
        .is_some_and(fw_lab::Error::is_interrupted)
}
