//! The rollback timer of `fw apply --confirm`: a detached `fw rollback-timer` process, in its
//! own session, that outlives `fw apply`, a killed shell and a dropped SSH connection. It is
//! started before the new policy is in force and acts only through [`Filter::rollback`] with
//! its token, so a confirmation, a newer apply or a manual rollback makes it a no-op.

use std::{
    os::unix::process::CommandExt as _,
    process::{Command, Stdio},
    time::Duration,
};

use crate::{
    Error,
    filter::{Filter, RolledBack},
    paths::{IfaceName, IfacePaths},
    state::unix_now,
};

/// Start the timer for `token`, due at `deadline` (Unix seconds). Returns its pid.
pub fn spawn(iface: &IfaceName, token: u64, deadline: u64) -> Result<u32, Error> {
    let exe = std::env::current_exe().map_err(|e| Error::io("/proc/self/exe", e))?;
    let paths = IfacePaths::new(iface)?;
    paths.prepare_state()?;
    let log_path = paths.state.join("rollback.log");
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log_path)
        .map_err(|e| Error::io(&log_path, e))?;
    let log2 = log.try_clone().map_err(|e| Error::io(&log_path, e))?;
    let mut cmd = Command::new(exe);
    cmd.args([
        "rollback-timer",
        "--iface",
        iface.as_str(),
        "--token",
        &token.to_string(),
        "--deadline",
        &deadline.to_string(),
    ])
    .stdin(Stdio::null())
    .stdout(log)
    .stderr(log2);
    // SAFETY: setsid is async-signal-safe.
    unsafe {
        cmd.pre_exec(|| {
            if libc::setsid() < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let child = cmd
        .spawn()
        .map_err(|e| Error::io("starting the rollback timer", e))?;
    Ok(child.id())
}

/// Whether `pid` is the rollback timer of `token` (and not a recycled pid).
pub fn is_running(pid: u32, token: u64) -> bool {
    std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|c| {
        let args: Vec<&[u8]> = c.split(|b| *b == 0).collect();
        args.contains(&b"rollback-timer".as_slice()) && args.contains(&token.to_string().as_bytes())
    })
}

/// End a timer that has nothing left to do (confirmed, rolled back by hand, filter removed).
pub fn stop(pid: Option<u32>, token: u64) {
    if let Some(pid) = pid
        && is_running(pid, token)
    {
        // SAFETY: a signal to a process we verified is our timer.
        unsafe { libc::kill(pid as i32, libc::SIGTERM) };
    }
}

/// The timer's body: sleep until the deadline, then roll back if `token` is still pending.
/// Returns what it did, for its log.
pub fn run(iface: &IfaceName, token: u64, deadline: u64) -> Result<String, Error> {
    // A hang-up of the terminal we came from must not end the timer.
    // SAFETY: setting a signal disposition.
    unsafe { libc::signal(libc::SIGHUP, libc::SIG_IGN) };
    loop {
        let now = unix_now();
        if now >= deadline {
            break;
        }
        std::thread::sleep(Duration::from_secs((deadline - now).min(5)));
    }
    // The lock may be held by a long command; a timer never gives up.
    let mut f = loop {
        match Filter::open(iface) {
            Err(Error::LockTimeout { .. }) => continue,
            other => break other?,
        }
    };
    Ok(match f.rollback(Some(token))? {
        RolledBack::Restored(changes) => format!(
            "{iface}: not confirmed in time: the last confirmed policy is back ({} changes)",
            changes.len()
        ),
        RolledBack::AlreadyConfirmed | RolledBack::NotPending => {
            format!("{iface}: confirmed or superseded; nothing to roll back")
        }
    })
}
