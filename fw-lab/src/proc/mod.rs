//! Running external commands: each with a timeout, each in its own process group (a timeout or
//! Ctrl-C ends the whole tree it started, and only that), output captured (or shown, or both).
//!
//! [`Cmd`] runs a command to its end; [`Proc`] (in [`background`]) keeps one running in the
//! background, killed with its group on drop. Tests use the panicking shorthands ([`run_with_timeout`],
//! [`Output::check`]); the binaries use the `Result`s.

use std::{
    ffi::OsStr,
    fmt,
    io::{BufRead as _, BufReader, Read, Write as _},
    os::unix::process::{CommandExt as _, ExitStatusExt as _},
    path::Path,
    process::{Child, Command, ExitStatus, Stdio},
    sync::mpsc,
    thread,
    time::{Duration, Instant},
};

use crate::{Error, Result, signal::interrupted};

mod background;

pub use background::Proc;

/// Bound for ordinary commands (ip, bpftool, sysctl).
pub const CMD_TIMEOUT: Duration = Duration::from_secs(15);
/// Output kept per stream of a command.
const MAX_OUTPUT: usize = 16 << 20;
/// How long Ctrl-C gives a command to end by itself before it is killed.
const INTERRUPT_GRACE: Duration = Duration::from_secs(5);

/// What a finished (or timed-out) command printed.
#[derive(Debug, Clone)]
pub struct Output {
    pub cmdline: String,
    /// `None`: it did not finish in time and was killed.
    pub status: Option<ExitStatus>,
    pub stdout: String,
    pub stderr: String,
    /// Every captured line in arrival order: (from stderr, text).
    pub lines: Vec<(bool, String)>,
}

impl Output {
    pub fn success(&self) -> bool {
        self.status.is_some_and(|s| s.success())
    }

    pub fn timed_out(&self) -> bool {
        self.status.is_none()
    }

    /// The exit code, 128 + signal like a shell, or 124 (like `timeout(1)`) if it timed out.
    pub fn code(&self) -> i32 {
        match self.status {
            Some(s) => s.code().unwrap_or_else(|| 128 + s.signal().unwrap_or(0)),
            None => 124,
        }
    }

    /// Panic with the whole output unless the command succeeded.
    #[track_caller]
    pub fn check(self) -> Self {
        assert!(self.success(), "command failed: {self}");
        self
    }

    /// stdout and stderr together.
    pub fn text(&self) -> String {
        format!("{}{}", self.stdout, self.stderr)
    }

    /// Both streams, trimmed, for messages.
    pub fn both(&self) -> String {
        let mut s = self.stdout.trim_end().to_string();
        if !self.stderr.trim().is_empty() {
            if !s.is_empty() {
                s.push('\n');
            }
            s.push_str(self.stderr.trim_end());
        }
        s
    }

    /// [`Error::Failed`] unless it succeeded.
    pub fn ok(self) -> Result<Self> {
        if self.success() {
            return Ok(self);
        }
        let both = self.both();
        Err(Error::Failed {
            cmd: self.cmdline.clone(),
            why: match self.status {
                Some(_) => format!("failed (exit status {})", self.code()),
                None => "did not finish in time and was stopped".into(),
            },
            output: if both.is_empty() {
                String::new()
            } else {
                format!(":\n{}", indent(&both, "    "))
            },
        })
    }
}

impl fmt::Display for Output {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.status {
            Some(s) => writeln!(f, "{} -> {s}", self.cmdline)?,
            None => writeln!(f, "{} -> timed out (killed)", self.cmdline)?,
        }
        writeln!(f, "--- stdout ---\n{}", self.stdout.trim_end())?;
        write!(f, "--- stderr ---\n{}", self.stderr.trim_end())
    }
}

/// `program args…` as one line, for messages.
pub fn cmdline(cmd: &Command) -> String {
    let mut s = cmd.get_program().to_string_lossy().into_owned();
    for a in cmd.get_args() {
        s.push(' ');
        s.push_str(&a.to_string_lossy());
    }
    s
}

/// Every line of `s` with `prefix` in front.
pub fn indent(s: &str, prefix: &str) -> String {
    s.lines()
        .map(|l| format!("{prefix}{l}"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// A command in the host namespace.
pub fn host_cmd<I, S>(program: &str, args: I) -> Command
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let mut c = Command::new(program);
    c.args(args);
    c
}

/// Run `cmd` to completion, killing it (and its process group) after `timeout`; panics only if
/// it cannot be started.
#[track_caller]
pub fn run_with_timeout(cmd: Command, timeout: Duration) -> Output {
    Cmd::from_command(cmd)
        .timeout(timeout)
        .run()
        .unwrap_or_else(|e| panic!("{e}"))
}

/// One external command, with a timeout (default 60 s).
pub struct Cmd {
    cmd: Command,
    desc: String,
    timeout: Duration,
    capture: bool,
    echo: bool,
    /// stdout and stderr through one pipe, so their lines keep their order.
    merged: bool,
    /// A cleanup command: Ctrl-C does not stop it (its timeout still does).
    cleanup: bool,
    stdin: Option<Vec<u8>>,
}

impl Cmd {
    pub fn new(program: impl AsRef<OsStr>) -> Self {
        Self::from_command(Command::new(program))
    }

    /// Wrap a prepared [`Command`] (its program, arguments, environment and directory).
    pub fn from_command(cmd: Command) -> Self {
        Cmd {
            desc: cmdline(&cmd),
            cmd,
            timeout: Duration::from_secs(60),
            capture: true,
            echo: false,
            merged: false,
            cleanup: false,
            stdin: None,
        }
    }

    pub fn arg(mut self, a: impl AsRef<OsStr>) -> Self {
        self.desc.push(' ');
        self.desc.push_str(&a.as_ref().to_string_lossy());
        self.cmd.arg(a);
        self
    }

    pub fn args<I: IntoIterator<Item = S>, S: AsRef<OsStr>>(mut self, args: I) -> Self {
        for a in args {
            self = self.arg(a);
        }
        self
    }

    pub fn env(mut self, k: impl AsRef<OsStr>, v: impl AsRef<OsStr>) -> Self {
        self.cmd.env(k, v);
        self
    }

    pub fn env_remove(mut self, k: impl AsRef<OsStr>) -> Self {
        self.cmd.env_remove(k);
        self
    }

    pub fn current_dir(mut self, d: impl AsRef<Path>) -> Self {
        self.cmd.current_dir(d);
        self
    }

    pub fn timeout(mut self, t: Duration) -> Self {
        self.timeout = t;
        self
    }

    /// Feed these bytes to its stdin (default: /dev/null).
    pub fn stdin(mut self, input: impl Into<Vec<u8>>) -> Self {
        self.stdin = Some(input.into());
        self
    }

    /// Let the output go straight to the terminal (nothing is captured).
    pub fn inherit(mut self) -> Self {
        self.capture = false;
        self
    }

    /// Capture stdout and stderr as one stream (in the order the command wrote them), and
    /// print it as it comes.
    pub fn merged_echo(mut self) -> Self {
        self.capture = true;
        self.echo = true;
        self.merged = true;
        self
    }

    /// A cleanup command: Ctrl-C does not stop it (its timeout still does).
    pub fn cleanup(mut self) -> Self {
        self.cleanup = true;
        self
    }

    /// The command line, for messages.
    pub fn desc(&self) -> &str {
        &self.desc
    }

    /// Run to the end, the timeout (then `status` is `None`) or Ctrl-C
    /// ([`Error::Interrupted`]). A non-zero exit is not an error here; see [`Cmd::ok`].
    pub fn run(mut self) -> Result<Output> {
        if !self.cleanup {
            crate::signal::check_interrupt()?;
        }
        let mut merged_reader = None;
        if self.merged {
            let (r, w) = std::io::pipe().map_err(|e| Error::io("creating a pipe", e))?;
            let w2 = w.try_clone().map_err(|e| Error::io("creating a pipe", e))?;
            self.cmd.stdout(w2).stderr(w);
            merged_reader = Some(r);
        } else if self.capture {
            self.cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
        }
        self.cmd.stdin(if self.stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        });
        // Own process group: a timeout or Ctrl-C can end the command and everything it started.
        self.cmd.process_group(0);
        let mut child = self.cmd.spawn().map_err(|source| Error::Spawn {
            cmd: self.desc.clone(),
            source,
        })?;
        // The Command holds the write end of a merged pipe: drop it, or the reader never ends.
        drop(std::mem::replace(&mut self.cmd, Command::new("true")));
        if let Some(input) = self.stdin.take() {
            let mut pipe = child.stdin.take().expect("piped stdin");
            // A writer thread, so a big input cannot deadlock against a full stdout pipe.
            thread::spawn(move || {
                let _ = pipe.write_all(&input);
            });
        }
        let (tx, rx) = mpsc::channel::<(bool, Vec<u8>)>();
        if let Some(r) = merged_reader {
            spawn_line_reader(r, false, tx.clone());
        } else if self.capture {
            spawn_line_reader(child.stdout.take().expect("piped"), false, tx.clone());
            spawn_line_reader(child.stderr.take().expect("piped"), true, tx.clone());
        }
        drop(tx);
        let mut sink = Sink {
            echo: self.echo,
            ..Sink::default()
        };
        let waited = self.wait(&mut child, &rx, &mut sink);
        // The rest of the output; a daemon the command left behind may hold the pipe open, so
        // do not wait for end-of-file forever.
        let drain_end = Instant::now() + Duration::from_secs(2);
        while let Some(left) = drain_end.checked_duration_since(Instant::now()) {
            match rx.recv_timeout(left) {
                Ok(m) => sink.take(m),
                Err(_) => break,
            }
        }
        let status = waited?;
        Ok(Output {
            cmdline: self.desc,
            status,
            stdout: String::from_utf8_lossy(&sink.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&sink.stderr).into_owned(),
            lines: sink.lines,
        })
    }

    /// Wait for the child, draining its output; kill its group on timeout or Ctrl-C.
    /// `Ok(None)`: timed out.
    fn wait(
        &self,
        child: &mut Child,
        rx: &mpsc::Receiver<(bool, Vec<u8>)>,
        sink: &mut Sink,
    ) -> Result<Option<ExitStatus>> {
        let pgid = child.id() as libc::pid_t;
        let deadline = Instant::now() + self.timeout;
        let mut stop: Option<(Instant, bool)> = None; // (kill at, interrupted?)
        loop {
            // Drain output first so a chatty command never blocks on a full pipe.
            if let Ok(m) = rx.recv_timeout(Duration::from_millis(5)) {
                sink.take(m);
                for m in rx.try_iter().take(10_000) {
                    sink.take(m);
                }
            }
            // Every kill below happens before the child is reaped, so its group id cannot have
            // been reused by an unrelated process.
            let reaped = child
                .try_wait()
                .map_err(|e| Error::io(format!("waiting for `{}`", self.desc), e))?;
            let now = Instant::now();
            match (reaped, stop) {
                (Some(st), None) => return Ok(Some(st)),
                (Some(_), Some((_, true))) => return Err(Error::Interrupted),
                (Some(_), Some((_, false))) => return Ok(None),
                (None, None) if interrupted() && !self.cleanup => {
                    // Give it a moment to clean up after itself, then insist.
                    kill_group(pgid, libc::SIGINT);
                    stop = Some((now + INTERRUPT_GRACE, true));
                }
                (None, None) if now > deadline => {
                    kill_group(pgid, libc::SIGKILL);
                    stop = Some((now, false));
                }
                (None, Some((at, _))) if now > at => kill_group(pgid, libc::SIGKILL),
                _ => {}
            }
        }
    }

    /// Run and require exit status 0; the error quotes the command's output.
    pub fn ok(self) -> Result<Output> {
        let timeout = self.timeout;
        let out = self.run()?;
        out.ok().map_err(|e| match e {
            Error::Failed { cmd, why, output } if why.starts_with("did not finish") => {
                Error::Failed {
                    cmd,
                    why: format!(
                        "did not finish within {} s and was stopped",
                        timeout.as_secs()
                    ),
                    output,
                }
            }
            e => e,
        })
    }

    /// Start it in the background (output collected, see [`Proc`]).
    pub fn spawn(self) -> Result<Proc> {
        Proc::start(self.cmd, self.desc)
    }

    /// Replace this process with the command (its exit status becomes ours, signals go to it).
    pub fn exec(mut self) -> Error {
        self.cmd.stdin(Stdio::inherit());
        let e = self.cmd.exec();
        Error::Spawn {
            cmd: self.desc,
            source: e,
        }
    }
}

/// What a command printed: each stream byte for byte, and its lines in arrival order.
#[derive(Default)]
struct Sink {
    echo: bool,
    stdout: Vec<u8>,
    stderr: Vec<u8>,
    lines: Vec<(bool, String)>,
}

impl Sink {
    /// One line as read, with its line end (the last one may have none).
    fn take(&mut self, (is_err, raw): (bool, Vec<u8>)) {
        let buf = if is_err {
            &mut self.stderr
        } else {
            &mut self.stdout
        };
        if buf.len() >= MAX_OUTPUT {
            return;
        }
        buf.extend_from_slice(&raw);
        let mut text = &raw[..];
        while let [rest @ .., b'\n' | b'\r'] = text {
            text = rest;
        }
        let line = String::from_utf8_lossy(text).into_owned();
        if self.echo {
            if is_err {
                eprintln!("{line}");
            } else {
                println!("{line}");
            }
        }
        self.lines.push((is_err, line));
    }
}

fn spawn_line_reader(
    r: impl Read + Send + 'static,
    is_err: bool,
    tx: mpsc::Sender<(bool, Vec<u8>)>,
) {
    thread::spawn(move || {
        let mut r = BufReader::new(r);
        loop {
            let mut buf = Vec::new();
            match r.read_until(b'\n', &mut buf) {
                Ok(0) | Err(_) => break,
                Ok(_) => {
                    if tx.send((is_err, buf)).is_err() {
                        break;
                    }
                }
            }
        }
    });
}

fn kill_group(pgid: libc::pid_t, sig: libc::c_int) {
    // SAFETY: plain syscall; the group is the one created for this child, not yet reaped.
    unsafe {
        libc::kill(-pgid, sig);
    }
}

fn wait_timeout(child: &mut Child, timeout: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + timeout;
    loop {
        match child.try_wait() {
            Ok(Some(s)) => return Some(s),
            Ok(None) if Instant::now() < deadline => thread::sleep(Duration::from_millis(5)),
            _ => return None,
        }
    }
}

/// Does this program exist on PATH?
pub fn on_path(program: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(program).is_file()))
}

/// Whether this process runs as root.
pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_command_that_outlives_its_timeout_is_killed_with_its_children() {
        let started = Instant::now();
        let out = Cmd::new("sh")
            .args(["-c", "sleep 30 & echo started; wait"])
            .timeout(Duration::from_millis(300))
            .run()
            .unwrap();
        assert!(out.timed_out(), "{out}");
        assert!(started.elapsed() < Duration::from_secs(10), "{out}");
        assert_eq!(out.stdout, "started\n");
        let e = out.ok().unwrap_err();
        assert!(e.to_string().contains("did not finish"), "{e}");
    }

    #[test]
    fn output_is_kept_byte_for_byte_and_line_by_line() {
        let out = Cmd::new("printf").arg("a\\r\\nb\\n\\nc").run().unwrap();
        assert_eq!(out.stdout, "a\r\nb\n\nc");
        let lines: Vec<&str> = out.lines.iter().map(|(_, l)| l.as_str()).collect();
        assert_eq!(lines, ["a", "b", "", "c"]);
    }

    #[test]
    fn output_stdin_and_exit_codes_are_reported() {
        let out = Cmd::new("sh")
            .args(["-c", "cat; echo oops >&2; exit 3"])
            .stdin("fed\n")
            .run()
            .unwrap();
        assert_eq!(
            (out.stdout.as_str(), out.stderr.as_str()),
            ("fed\n", "oops\n")
        );
        assert_eq!(out.code(), 3);
        let e = Cmd::new("sh")
            .args(["-c", "echo why; exit 2"])
            .ok()
            .unwrap_err();
        assert_eq!(
            e.to_string(),
            "`sh -c echo why; exit 2` failed (exit status 2):\n    why"
        );
        assert!(matches!(
            Cmd::new("/nonexistent/fw-lab-test").run(),
            Err(Error::Spawn { .. })
        ));
    }
}
