//! Network namespaces: [`NetNs`] creates `fw-<tag>-<pid>-<n>` and removes it on drop, with
//! everything fw left for it (after `fw down` inside it) and every process still running in it.
//!
//! Commands run in a namespace through `nsenter --net=/var/run/netns/NAME`, never
//! `ip netns exec`: that one remounts /sys and hides /sys/fs/bpf, so fw's pins would not be the
//! host's. Sockets are made by a short-lived thread that setns(2)s into the namespace; a socket
//! belongs to the namespace it was created in for its whole life, so the caller then uses it
//! directly.

use std::{
    ffi::OsStr,
    fs::{self, File},
    os::{fd::AsRawFd, unix::fs::MetadataExt as _},
    path::{Path, PathBuf},
    process::Command,
    sync::atomic::{AtomicU32, Ordering},
    thread,
    time::Duration,
};

use fw_common::maps::LAYOUT_VERSION;

use crate::{
    Error, Result,
    fw::{FW_TIMEOUT, fw_bin_path},
    proc::{CMD_TIMEOUT, Cmd, Output, Proc, host_cmd, run_with_timeout},
};

pub const NETNS_DIR: &str = "/var/run/netns";
/// fw's pins: /sys/fs/bpf/fw/v<layout>/<netns inode>/<iface>/.
pub const FW_PINS_ROOT: &str = "/sys/fs/bpf/fw";
/// fw's state: /run/fw/v<layout>/<netns inode>/<iface>/.
pub const FW_STATE_ROOT: &str = "/run/fw";

static SEQ: AtomicU32 = AtomicU32::new(0);

/// A number unique in this process (names, address blocks).
pub fn next_seq() -> u32 {
    SEQ.fetch_add(1, Ordering::Relaxed)
}

/// A network namespace `fw-<tag>-<pid>-<n>` (see the module documentation).
pub struct NetNs {
    name: String,
    path: PathBuf,
    inode: u64,
    closed: bool,
}

/// What removing a namespace did.
#[derive(Debug, Default)]
pub struct Cleanup {
    /// What was done, in order, in words.
    pub steps: Vec<String>,
    /// What could not be undone.
    pub failures: Vec<String>,
}

impl NetNs {
    /// Create the namespace (loopback up); panics if that fails.
    #[track_caller]
    pub fn new(tag: &str) -> NetNs {
        Self::create(tag).unwrap_or_else(|e| panic!("network namespace {tag}: {e}"))
    }

    /// Create the namespace (loopback up).
    pub fn create(tag: &str) -> Result<NetNs> {
        let name = format!("fw-{tag}-{}-{}", std::process::id(), next_seq());
        Cmd::new("ip")
            .args(["netns", "add", &name])
            .timeout(CMD_TIMEOUT)
            .ok()?;
        let path = Path::new(NETNS_DIR).join(&name);
        // The guard exists from here on: an error below still removes the namespace.
        let mut ns = NetNs {
            name,
            path,
            inode: 0,
            closed: false,
        };
        ns.inode = fs::metadata(&ns.path)
            .map_err(|e| Error::io(ns.path.display().to_string(), e))?
            .ino();
        ns.try_ip(&["link", "set", "lo", "up"])?;
        Ok(ns)
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// /var/run/netns/NAME.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The namespace's inode: what fw names its pin and state directories after.
    pub fn inode(&self) -> u64 {
        self.inode
    }

    /// fw's bpffs directory for this namespace: /sys/fs/bpf/fw/v1/<inode>.
    pub fn pins_dir(&self) -> PathBuf {
        PathBuf::from(format!("{FW_PINS_ROOT}/v{LAYOUT_VERSION}/{}", self.inode))
    }

    /// fw's runtime state directory for this namespace: /run/fw/v1/<inode>.
    pub fn state_dir(&self) -> PathBuf {
        PathBuf::from(format!("{FW_STATE_ROOT}/v{LAYOUT_VERSION}/{}", self.inode))
    }

    /// `program` to run inside the namespace (through nsenter; /sys/fs/bpf stays the host's).
    pub fn command(&self, program: impl AsRef<OsStr>) -> Command {
        let mut c = Command::new("nsenter");
        c.arg(format!("--net={}", self.path.display()))
            .arg("--")
            .arg(program);
        c
    }

    /// As [`NetNs::command`], as a [`Cmd`] (timeout, stdin, `Result`s).
    pub fn cmd(&self, program: impl AsRef<OsStr>) -> Cmd {
        Cmd::from_command(self.command(program))
    }

    /// Run a command inside the namespace, bounded by `timeout`.
    #[track_caller]
    pub fn run(&self, program: &str, args: &[&str], timeout: Duration) -> Output {
        let mut c = self.command(program);
        c.args(args);
        run_with_timeout(c, timeout)
    }

    /// `ip ARGS` inside the namespace; panics if it fails.
    #[track_caller]
    pub fn ip(&self, args: &[&str]) -> Output {
        self.run("ip", args, CMD_TIMEOUT).check()
    }

    /// `ip ARGS` inside the namespace.
    pub fn try_ip(&self, args: &[&str]) -> Result<Output> {
        self.cmd("ip").args(args).timeout(CMD_TIMEOUT).ok()
    }

    /// The fw binary (`FW_BIN`) inside the namespace, bounded by [`FW_TIMEOUT`].
    #[track_caller]
    pub fn fw(&self, args: &[&str]) -> Output {
        let mut c = self.command(crate::fw::fw_bin());
        c.args(args);
        run_with_timeout(c, FW_TIMEOUT)
    }

    /// A background process inside the namespace.
    #[track_caller]
    pub fn spawn(&self, program: impl AsRef<OsStr>, args: &[&str]) -> Proc {
        let mut c = self.command(program);
        c.args(args);
        Proc::spawn(c)
    }

    /// Run `f` on a thread that has entered this namespace (setns), and return its result;
    /// panics if the namespace cannot be entered.
    #[track_caller]
    pub fn enter<R: Send>(&self, f: impl FnOnce() -> R + Send) -> R {
        self.try_enter(f)
            .unwrap_or_else(|e| panic!("entering {}: {e}", self.name))
    }

    /// Run `f` on a thread that has entered this namespace (setns), and return its result.
    pub fn try_enter<R: Send>(&self, f: impl FnOnce() -> R + Send) -> Result<R> {
        enter_path(&self.path, f)
    }

    /// Process ids running in this namespace (`ip netns pids`; none if that cannot run). A
    /// cleanup command: the teardown calls it from Drop, also after Ctrl-C, where a panic
    /// (Ctrl-C stopping the command) aborted the process with the namespace still there.
    pub fn pids(&self) -> Vec<i32> {
        let Ok(out) = Cmd::from_command(host_cmd("ip", ["netns", "pids", &self.name]))
            .timeout(CMD_TIMEOUT)
            .cleanup()
            .run()
        else {
            return Vec::new();
        };
        out.stdout
            .split_whitespace()
            .filter_map(|p| p.parse().ok())
            .collect()
    }

    /// The processes running in this namespace with their command lines (arguments joined by
    /// spaces), e.g. to find a detached helper such as fw's rollback timer.
    pub fn processes(&self) -> Vec<(i32, String)> {
        self.pids()
            .into_iter()
            .filter_map(|pid| {
                let raw = fs::read(format!("/proc/{pid}/cmdline")).ok()?;
                let line = raw
                    .split(|b| *b == 0)
                    .filter(|a| !a.is_empty())
                    .map(|a| String::from_utf8_lossy(a).into_owned())
                    .collect::<Vec<_>>()
                    .join(" ");
                Some((pid, line))
            })
            .collect()
    }

    /// Remove the namespace now, saying what was done (Drop does the same, silently).
    pub fn close(mut self) -> Cleanup {
        self.teardown()
    }

    /// `fw down` inside if fw left pins or state, then those removed, the processes still in
    /// the namespace ended, and the namespace deleted. Best effort; a second call does nothing.
    fn teardown(&mut self) -> Cleanup {
        let mut c = Cleanup::default();
        if std::mem::replace(&mut self.closed, true) {
            return c;
        }
        let (pins, state) = (self.pins_dir(), self.state_dir());
        if pins.exists() || state.exists() {
            let fw = fw_bin_path();
            if fw.is_file() {
                // If this fails, removing the pins below detaches the filter all the same.
                let down = Cmd::from_command(self.command(&fw))
                    .arg("down")
                    .timeout(FW_TIMEOUT)
                    .cleanup()
                    .run();
                match down {
                    Ok(o) if o.success() => c.steps.push(format!("fw down: {}", o.both())),
                    Ok(o) => c.steps.push(format!("fw down (failed): {}", o.both())),
                    Err(e) => c.steps.push(format!("fw down: {e}")),
                }
            }
            for d in [&pins, &state] {
                if d.exists() {
                    remove_pins(d);
                    match d.exists() {
                        false => c.steps.push(format!("removed leftover {}", d.display())),
                        true => c.failures.push(format!("could not remove {}", d.display())),
                    }
                }
            }
        }
        // Anything still running in the namespace was started by this lab (nobody else knows
        // the name): end it, by pid, so the namespace can go.
        let me = std::process::id() as i32;
        for pid in self.pids() {
            if pid != me {
                // SAFETY: kill(2) on a process inside our own namespace.
                unsafe { libc::kill(pid, libc::SIGKILL) };
                c.steps
                    .push(format!("killed process {pid} left in {}", self.name));
            }
        }
        match Cmd::new("ip")
            .args(["netns", "del", &self.name])
            .timeout(CMD_TIMEOUT)
            .cleanup()
            .ok()
        {
            Ok(_) => c
                .steps
                .push(format!("network namespace {} deleted", self.name)),
            Err(e) => c.failures.push(e.to_string()),
        }
        c
    }
}

impl Drop for NetNs {
    fn drop(&mut self) {
        for f in self.teardown().failures {
            eprintln!("warning: {f}");
        }
    }
}

/// Run `f` on a thread that has entered the network namespace at `path`.
pub fn enter_path<R: Send>(path: &Path, f: impl FnOnce() -> R + Send) -> Result<R> {
    let file = File::open(path).map_err(|e| Error::io(path.display().to_string(), e))?;
    thread::scope(|s| {
        s.spawn(|| {
            // SAFETY: a valid namespace fd; only this thread changes namespace.
            let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
            if rc != 0 {
                return Err(Error::last_os(format!("setns into {}", path.display())));
            }
            Ok(f())
        })
        .join()
        .unwrap_or_else(|e| std::panic::resume_unwind(e))
    })
}

/// Put the calling thread into the network namespace at `path` for good (for a long-lived
/// thread of its own; a socket made afterwards belongs to that namespace).
pub fn join_path(path: &Path) -> Result<()> {
    let f = File::open(path).map_err(|e| Error::io(path.display().to_string(), e))?;
    // SAFETY: a valid fd of an nsfs file; CLONE_NEWNET only affects this thread.
    if unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
        return Err(Error::last_os(format!("setns into {}", path.display())));
    }
    Ok(())
}

/// Remove a pin directory tree: in each interface directory the link pin(s) first (the pin is
/// the last reference: the kernel detaches the program), then the rest.
pub fn remove_pins(dir: &Path) {
    let Ok(rd) = fs::read_dir(dir) else { return };
    for e in rd.flatten() {
        let p = e.path();
        if p.is_dir() {
            if let Ok(inner) = fs::read_dir(&p) {
                for f in inner.flatten() {
                    if f.file_name().to_string_lossy().starts_with("link") {
                        let _ = fs::remove_file(f.path());
                    }
                }
            }
            let _ = fs::remove_dir_all(&p);
        } else {
            let _ = fs::remove_file(&p);
        }
    }
    let _ = fs::remove_dir(dir);
}

/// Names of the network namespaces that exist now (`ip netns list`).
#[track_caller]
pub fn netns_list() -> Vec<String> {
    run_with_timeout(host_cmd("ip", ["netns", "list"]), CMD_TIMEOUT)
        .check()
        .stdout
        .lines()
        .filter_map(|l| l.split_whitespace().next().map(str::to_string))
        .collect()
}

/// The pid in a lab name `…-<pid>-<n>` ([`NetNs`], [`crate::dirs`]).
pub fn pid_of_name(name: &str) -> Option<u32> {
    let mut it = name.rsplit('-');
    let _seq: u32 = it.next()?.parse().ok()?;
    it.next()?.parse().ok()
}

/// Whether a process with this pid exists.
pub fn pid_alive(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

/// Delete the namespaces named `fw-<tag>…-<pid>-<n>` whose process is gone (a run killed by a
/// signal cannot run its destructors). Returns their names.
pub fn sweep_stale(tag: &str) -> Vec<String> {
    let prefix = format!("fw-{tag}");
    let mut swept = Vec::new();
    let Ok(rd) = fs::read_dir(NETNS_DIR) else {
        return swept;
    };
    for e in rd.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if !name.starts_with(&prefix) {
            continue;
        }
        if let Some(pid) = pid_of_name(&name)
            && !pid_alive(pid)
            && Cmd::new("ip")
                .args(["netns", "del", &name])
                .timeout(CMD_TIMEOUT)
                .cleanup()
                .ok()
                .is_ok()
        {
            swept.push(name);
        }
    }
    swept
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_pid_is_read_from_the_end_of_a_lab_name() {
        assert_eq!(pid_of_name("fw-diff-ipt-s-4242-7"), Some(4242));
        assert_eq!(pid_of_name("fw-bench-r0-17-0"), Some(17));
        assert_eq!(pid_of_name("fw-x"), None);
        assert_eq!(pid_of_name("fw-x-12-"), None);
    }
}
