//! [`Proc`]: a command in the background, in its own process group, its output collected as
//! it comes; killed with its group and reaped on drop.

use std::{
    io::Read,
    os::unix::process::CommandExt as _,
    process::{Child, Command, ExitStatus, Stdio},
    sync::{Arc, Mutex},
    thread::{self, JoinHandle},
    time::{Duration, Instant},
};

use super::{MAX_OUTPUT, Output, cmdline, kill_group, wait_timeout};
use crate::{Error, Result};

/// A background process in its own process group, killed (SIGKILL, with its group) and reaped
/// on drop if it is still running. Its stdout and stderr are collected continuously.
pub struct Proc {
    child: Child,
    cmdline: String,
    status: Option<ExitStatus>,
    stdout: Arc<Mutex<Vec<u8>>>,
    stderr: Arc<Mutex<Vec<u8>>>,
    readers: Vec<JoinHandle<()>>,
}

fn pump(mut r: impl Read + Send + 'static, buf: Arc<Mutex<Vec<u8>>>) -> JoinHandle<()> {
    thread::spawn(move || {
        let mut chunk = [0u8; 4096];
        loop {
            match r.read(&mut chunk) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    let mut b = buf.lock().unwrap_or_else(|e| e.into_inner());
                    if b.len() < MAX_OUTPUT {
                        b.extend_from_slice(&chunk[..n]);
                    }
                }
            }
        }
    })
}

impl Proc {
    /// Start `cmd` in the background; panics if it cannot be started.
    #[track_caller]
    pub fn spawn(cmd: Command) -> Proc {
        let line = cmdline(&cmd);
        Self::start(cmd, line).unwrap_or_else(|e| panic!("{e}"))
    }

    pub(super) fn start(mut cmd: Command, line: String) -> Result<Proc> {
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0);
        let mut child = cmd.spawn().map_err(|source| Error::Spawn {
            cmd: line.clone(),
            source,
        })?;
        let stdout = Arc::new(Mutex::new(Vec::new()));
        let stderr = Arc::new(Mutex::new(Vec::new()));
        let readers = vec![
            pump(child.stdout.take().expect("piped"), stdout.clone()),
            pump(child.stderr.take().expect("piped"), stderr.clone()),
        ];
        Ok(Proc {
            child,
            cmdline: line,
            status: None,
            stdout,
            stderr,
            readers,
        })
    }

    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    /// Whether it still runs (reaps it if it ended).
    pub fn running(&mut self) -> bool {
        if self.status.is_none()
            && let Ok(Some(s)) = self.child.try_wait()
        {
            self.status = Some(s);
        }
        self.status.is_none()
    }

    /// Send `sig` to it. Only while it has not been reaped, so the pid is still ours.
    pub fn signal(&mut self, sig: libc::c_int) {
        if self.running() {
            // SAFETY: kill(2) on our own, not yet reaped, child.
            unsafe { libc::kill(self.pid(), sig) };
        }
    }

    /// Wait up to `timeout` for it to end.
    pub fn wait_timeout(&mut self, timeout: Duration) -> Option<ExitStatus> {
        if self.status.is_none() {
            self.status = wait_timeout(&mut self.child, timeout);
        }
        self.status
    }

    pub fn stdout(&self) -> String {
        String::from_utf8_lossy(&self.stdout.lock().unwrap_or_else(|e| e.into_inner())).into()
    }

    pub fn stderr(&self) -> String {
        String::from_utf8_lossy(&self.stderr.lock().unwrap_or_else(|e| e.into_inner())).into()
    }

    /// Wait until stdout contains `needle`, it exits, or `timeout` passes.
    pub fn wait_for_stdout(&mut self, needle: &str, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if self.stdout().contains(needle) {
                return true;
            }
            if !self.running() {
                return self.stdout().contains(needle);
            }
            thread::sleep(Duration::from_millis(10));
        }
        false
    }

    /// Everything it printed so far, for assertion messages.
    pub fn describe(&self) -> String {
        format!(
            "{} ({:?})\n--- stdout ---\n{}\n--- stderr ---\n{}",
            self.cmdline,
            self.status,
            self.stdout().trim_end(),
            self.stderr().trim_end()
        )
    }

    /// Wait for the end (bounded), then return its output; killed with its group if it did
    /// not end in time.
    pub fn finish(mut self, timeout: Duration) -> Output {
        let status = self.wait_timeout(timeout);
        if status.is_none() {
            self.kill();
        }
        for r in self.readers.drain(..) {
            // The pipes close when the process ends; a reader cannot block beyond that unless a
            // grandchild holds them, and the group was killed.
            let _ = r.join();
        }
        let (stdout, stderr) = (self.stdout(), self.stderr());
        let lines = stdout
            .lines()
            .map(|l| (false, l.to_string()))
            .chain(stderr.lines().map(|l| (true, l.to_string())))
            .collect();
        Output {
            cmdline: self.cmdline.clone(),
            status,
            stdout,
            stderr,
            lines,
        }
    }

    /// SIGKILL to its process group (while the leader is not reaped), then reap it.
    fn kill(&mut self) {
        if self.running() {
            kill_group(self.pid(), libc::SIGKILL);
            let _ = self.child.wait();
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proc::host_cmd;

    #[test]
    fn a_background_process_is_killed_on_drop() {
        let mut p = Proc::spawn(host_cmd("sh", ["-c", "echo ready; exec sleep 30"]));
        assert!(
            p.wait_for_stdout("ready", Duration::from_secs(10)),
            "{}",
            p.describe()
        );
        let pid = p.pid();
        drop(p);
        // SAFETY: signal 0 only checks for existence.
        let alive = unsafe { libc::kill(pid, 0) } == 0;
        assert!(!alive, "pid {pid} survived the drop");
    }
}
