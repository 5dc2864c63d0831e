//! Ctrl-C for the lab's binaries (xtask, fw-bench, fw-diff): SIGINT and SIGTERM set a flag that
//! every wait loop of the lab checks, so the current step fails with [`Error::Interrupted`] and
//! unwinds through the Drop guards (namespaces, pins, programs) instead of dying mid-step. A
//! third signal exits at once, for a user who insists. Tests do not install it.

use std::{
    sync::atomic::{AtomicU32, Ordering},
    thread,
    time::{Duration, Instant},
};

use crate::{Error, Result};

static SIGNALS: AtomicU32 = AtomicU32::new(0);

extern "C" fn on_signal(_: libc::c_int) {
    // Async-signal-safe: an atomic add, and _exit when the user insists.
    if SIGNALS.fetch_add(1, Ordering::SeqCst) >= 2 {
        // SAFETY: _exit is async-signal-safe.
        unsafe { libc::_exit(130) };
    }
}

/// Catch SIGINT and SIGTERM (see the module documentation).
pub fn install_handlers() {
    for sig in [libc::SIGINT, libc::SIGTERM] {
        // SAFETY: installs a handler that only touches an atomic (or calls _exit).
        unsafe {
            let mut sa: libc::sigaction = std::mem::zeroed();
            sa.sa_sigaction = on_signal as *const () as usize;
            libc::sigemptyset(&mut sa.sa_mask);
            libc::sigaction(sig, &sa, std::ptr::null_mut());
        }
    }
}

/// Whether Ctrl-C (or SIGTERM) arrived.
pub fn interrupted() -> bool {
    SIGNALS.load(Ordering::SeqCst) > 0
}

/// [`Error::Interrupted`] once Ctrl-C was pressed.
pub fn check_interrupt() -> Result<()> {
    if interrupted() {
        return Err(Error::Interrupted);
    }
    Ok(())
}

/// Sleep up to `d`, waking early (with an error) on Ctrl-C.
pub fn sleep(d: Duration) -> Result<()> {
    let end = Instant::now() + d;
    while Instant::now() < end {
        check_interrupt()?;
        thread::sleep((end - Instant::now()).min(Duration::from_millis(50)));
    }
    check_interrupt()
}
