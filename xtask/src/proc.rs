//! Running external commands: every one with a timeout, each in its own process group so a
//! timeout or Ctrl-C ends the whole tree it started, and Ctrl-C turned into an error that
//! unwinds through the callers' Drop guards instead of killing xtask mid-step.

use std::{
    ffi::OsStr,
    io::{BufRead as _, BufReader, Read},
    os::unix::process::{CommandExt as _, ExitStatusExt as _},
    process::{Command, ExitStatus, Stdio},
    sync::{
        atomic::{AtomicU32, Ordering},
        mpsc,
    },
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, anyhow, bail};

static SIGNALS: AtomicU32 = AtomicU32::new(0);

extern "C" fn on_signal(_: libc::c_int) {
    // Async-signal-safe: an atomic add, and _exit when the user insists.
    if SIGNALS.fetch_add(1, Ordering::SeqCst) >= 2 {
        // SAFETY: _exit is async-signal-safe.
        unsafe { libc::_exit(130) };
    }
}

/// Catch SIGINT and SIGTERM: the first one sets a flag that every wait loop checks, so the
/// current step fails and the Drop guards clean up. A third one exits at once.
pub fn install_signal_handlers() {
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

/// The error a step returns when the user interrupted it.
#[derive(Debug)]
pub struct Interrupted;

impl std::fmt::Display for Interrupted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("interrupted (Ctrl-C)")
    }
}

impl std::error::Error for Interrupted {}

pub fn check_interrupt() -> anyhow::Result<()> {
    if interrupted() {
        bail!(Interrupted);
    }
    Ok(())
}

/// Sleep up to `d`, waking early (with an error) on Ctrl-C.
pub fn sleep(d: Duration) -> anyhow::Result<()> {
    let end = Instant::now() + d;
    while Instant::now() < end {
        check_interrupt()?;
        thread::sleep((end - Instant::now()).min(Duration::from_millis(50)));
    }
    check_interrupt()
}

/// What a finished command left.
#[derive(Debug)]
pub struct Output {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
    /// Every captured line in arrival order: (from stderr, text).
    pub lines: Vec<(bool, String)>,
}

impl Output {
    pub fn success(&self) -> bool {
        self.status.success()
    }

    /// The exit code, or 128 + signal like a shell.
    pub fn code(&self) -> i32 {
        self.status
            .code()
            .unwrap_or_else(|| 128 + self.status.signal().unwrap_or(0))
    }

    /// Both streams, trimmed, for error messages.
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
}

/// One external command, with a timeout.
pub struct Cmd {
    cmd: Command,
    desc: String,
    timeout: Duration,
    capture: bool,
    echo: bool,
    /// Cleanup: runs (to its timeout) even after Ctrl-C.
    cleanup: bool,
    /// stdout and stderr through one pipe, so their lines keep their order.
    merged: bool,
}

impl Cmd {
    pub fn new(program: impl AsRef<OsStr>) -> Self {
        let program = program.as_ref();
        let mut cmd = Command::new(program);
        cmd.stdin(Stdio::null());
        // Tools setup installed (bpf-linker) are found even when their directory is not on PATH.
        cmd.env("PATH", crate::setup::child_path());
        Cmd {
            cmd,
            desc: program.to_string_lossy().into_owned(),
            timeout: Duration::from_secs(60),
            capture: true,
            echo: false,
            cleanup: false,
            merged: false,
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

    pub fn current_dir(mut self, d: impl AsRef<std::path::Path>) -> Self {
        self.cmd.current_dir(d);
        self
    }

    pub fn timeout(mut self, t: Duration) -> Self {
        self.timeout = t;
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

    /// Run to the end (or the timeout, or Ctrl-C). A non-zero exit is not an error here.
    pub fn run(mut self) -> anyhow::Result<Output> {
        if !self.cleanup {
            check_interrupt()?;
        }
        let mut merged_reader = None;
        if self.merged {
            let (r, w) = std::io::pipe().context("creating a pipe")?;
            self.cmd
                .stdout(w.try_clone().context("creating a pipe")?)
                .stderr(w);
            merged_reader = Some(r);
        } else if self.capture {
            self.cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
        }
        // Own process group: a timeout or Ctrl-C can end the command and everything it started.
        self.cmd.process_group(0);
        let mut child = self.cmd.spawn().with_context(|| {
            format!(
                "cannot start `{}` (is it installed? `cargo xtask setup` installs what fw needs)",
                self.desc
            )
        })?;
        let (tx, rx) = mpsc::channel::<(bool, String)>();
        // The Command holds the write end of a merged pipe: drop it, or the reader never ends.
        let cmd = std::mem::replace(&mut self.cmd, Command::new("true"));
        drop(cmd);
        if let Some(r) = merged_reader {
            spawn_reader(r, false, tx.clone());
        } else if self.capture {
            let out = child.stdout.take().expect("piped");
            let err = child.stderr.take().expect("piped");
            spawn_reader(out, false, tx.clone());
            spawn_reader(err, true, tx.clone());
        }
        drop(tx);
        let pgid = child.id() as libc::pid_t;
        let deadline = Instant::now() + self.timeout;
        let mut sink = Sink {
            echo: self.echo,
            stdout: String::new(),
            stderr: String::new(),
            lines: Vec::new(),
        };
        let mut failure = None;
        let mut grace_end = None;
        let status = loop {
            // Drain output first so a chatty command never blocks on a full pipe.
            if let Ok(m) = rx.recv_timeout(Duration::from_millis(20)) {
                sink.take(m);
                for m in rx.try_iter().take(10_000) {
                    sink.take(m);
                }
            }
            // Every kill below happens before the child is reaped, so its group id cannot have
            // been reused by an unrelated process.
            if let Some(st) = child.try_wait()? {
                break st;
            }
            let now = Instant::now();
            match grace_end {
                None if interrupted() && !self.cleanup => {
                    failure = Some(anyhow!(Interrupted));
                    // Give it a moment to clean up after itself, then insist.
                    kill_group(pgid, libc::SIGINT);
                    grace_end = Some(now + Duration::from_secs(5));
                }
                None if now > deadline => {
                    failure = Some(anyhow!(
                        "`{}` did not finish within {} s and was stopped",
                        self.desc,
                        self.timeout.as_secs()
                    ));
                    kill_group(pgid, libc::SIGKILL);
                    grace_end = Some(now);
                }
                Some(end) if now > end => kill_group(pgid, libc::SIGKILL),
                _ => {}
            }
        };
        // The rest of the output; a daemon the command left behind may hold the pipe open, so
        // do not wait for end-of-file forever.
        let drain_end = Instant::now() + Duration::from_secs(2);
        while let Some(left) = drain_end.checked_duration_since(Instant::now()) {
            match rx.recv_timeout(left) {
                Ok(m) => sink.take(m),
                Err(_) => break,
            }
        }
        let Sink {
            stdout,
            stderr,
            lines,
            ..
        } = sink;
        if let Some(e) = failure {
            return Err(e);
        }
        Ok(Output {
            status,
            stdout,
            stderr,
            lines,
        })
    }

    /// Run and require exit status 0; the error quotes the command's output.
    pub fn ok(self) -> anyhow::Result<Output> {
        let desc = self.desc.clone();
        let capture = self.capture;
        let out = self.run()?;
        if !out.success() {
            let detail = if capture {
                format!(":\n{}", indent(&out.both(), "    "))
            } else {
                String::new()
            };
            bail!("`{desc}` failed (exit status {}){detail}", out.code());
        }
        Ok(out)
    }

    /// Replace this process with the command (its exit status becomes ours, signals go to it).
    pub fn exec(mut self) -> anyhow::Error {
        self.cmd.stdin(Stdio::inherit());
        let e = self.cmd.exec();
        anyhow!("cannot run `{}`: {e}", self.desc)
    }
}

struct Sink {
    echo: bool,
    stdout: String,
    stderr: String,
    lines: Vec<(bool, String)>,
}

impl Sink {
    fn take(&mut self, (is_err, line): (bool, String)) {
        if self.echo {
            if is_err {
                eprintln!("{line}");
            } else {
                println!("{line}");
            }
        }
        let buf = if is_err {
            &mut self.stderr
        } else {
            &mut self.stdout
        };
        buf.push_str(&line);
        buf.push('\n');
        self.lines.push((is_err, line));
    }
}

fn spawn_reader(r: impl Read + Send + 'static, is_err: bool, tx: mpsc::Sender<(bool, String)>) {
    thread::spawn(move || {
        let mut r = BufReader::new(r);
        let mut buf = Vec::new();
        loop {
            buf.clear();
            match r.read_until(b'\n', &mut buf) {
                Ok(0) | Err(_) => break,
                Ok(_) => {
                    while buf.last().is_some_and(|b| *b == b'\n' || *b == b'\r') {
                        buf.pop();
                    }
                    if tx
                        .send((is_err, String::from_utf8_lossy(&buf).into_owned()))
                        .is_err()
                    {
                        break;
                    }
                }
            }
        }
    });
}

fn kill_group(pgid: libc::pid_t, sig: libc::c_int) {
    // SAFETY: plain syscall; the group is the one we created for this child.
    unsafe {
        libc::kill(-pgid, sig);
    }
}

/// Every line of `s` with `prefix` in front.
pub fn indent(s: &str, prefix: &str) -> String {
    s.lines()
        .map(|l| format!("{prefix}{l}"))
        .collect::<Vec<_>>()
        .join("\n")
}

pub fn is_root() -> bool {
    // SAFETY: no arguments, cannot fail.
    unsafe { libc::geteuid() == 0 }
}
