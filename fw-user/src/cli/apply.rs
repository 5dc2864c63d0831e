//! `fw apply`, `fw confirm`, `fw rollback`, `fw flush`: replace the whole running policy
//! atomically, with a way back that does not depend on the caller staying alive.

use std::{
    os::unix::process::CommandExt as _,
    path::PathBuf,
    process::{Command, Stdio},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use anyhow::{Context as _, bail};

use crate::{
    apply::{self, apply_policy},
    guard,
    pins::IfacePaths,
    state::{Lock, Pending, State},
};

#[derive(Debug, clap::Args)]
pub struct ApplyArgs {
    /// The new policy (TOML).
    pub file: PathBuf,
    /// Interface (default: every one fw is attached to).
    #[arg(long = "iface", short = 'i')]
    pub ifaces: Vec<String>,
    /// Bring the previous policy back after SECS seconds unless `fw confirm` runs first — also
    /// if this process or your SSH session dies.
    #[arg(long, value_name = "SECS")]
    pub confirm: Option<u64>,
    /// Apply even if the lockout guard objects.
    #[arg(long)]
    pub force: bool,
}

#[derive(Debug, clap::Args)]
pub struct IfaceArgs {
    /// Interface (default: every one fw is attached to).
    #[arg(long = "iface", short = 'i')]
    pub ifaces: Vec<String>,
}

/// The detached rollback timer (started by `fw apply --confirm`).
#[derive(Debug, clap::Args)]
pub struct TimerArgs {
    #[arg(long)]
    pub iface: String,
    #[arg(long)]
    pub token: u64,
    #[arg(long)]
    pub seconds: u64,
}

/// Refuse, unless `force`, a policy that would lock the admin out.
pub fn guard_or_refuse(policy: &fw_policy::Policy, force: bool) -> anyhow::Result<()> {
    if force {
        return Ok(());
    }
    if let Err(why) = guard::check(policy, &guard::current_sessions()) {
        bail!(
            "refusing: {why}.\nAdd a rule that admits your address to SSH (see `fw policy show`), or pass --force if you have console access."
        );
    }
    Ok(())
}

pub fn execute_apply(a: ApplyArgs) -> anyhow::Result<()> {
    let (policy, source) = super::load_policy(Some(&a.file))?;
    guard_or_refuse(&policy, a.force)?;
    let ifaces = super::target_ifaces(&a.ifaces)?;
    let now = SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs();
    for iface in &ifaces {
        let pending = a.confirm.map(|secs| Pending {
            token: token(),
            deadline: now + secs,
        });
        let r = (|| -> anyhow::Result<_> {
            let paths = apply::attached(iface)?;
            let lock = Lock::acquire(&paths)?;
            // The timer starts before the new policy is in force, and acts only once it gets
            // this lock: whenever this process dies (killed, or its SSH session gone), the
            // policy it put in force still has a timer that takes it back.
            if let (Some(p), Some(secs)) = (&pending, a.confirm) {
                spawn_timer(iface, p.token, secs)?;
            }
            Ok(apply::apply_locked(
                &paths,
                &lock,
                &policy,
                &source,
                false,
                pending.clone(),
            )?)
        })()
        .with_context(|| format!("fw apply on {iface}"))?;
        println!(
            "{iface}: policy from {source} in force (generation {}), {} rules",
            r.generation,
            policy.rules.len()
        );
        if let Some(secs) = a.confirm {
            println!(
                "{iface}: the previous policy comes back in {secs} s unless you run `fw confirm`"
            );
        }
    }
    Ok(())
}

fn token() -> u64 {
    let mut b = [0u8; 8];
    if std::fs::File::open("/dev/urandom")
        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut b))
        .is_err()
    {
        let n = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos() as u64;
        b = (n ^ u64::from(std::process::id())).to_le_bytes();
    }
    u64::from_le_bytes(b)
}

/// Start the rollback timer as its own process, in its own session, detached from this
/// terminal: it outlives `fw apply`, a killed shell and a dropped SSH connection.
fn spawn_timer(iface: &str, token: u64, secs: u64) -> anyhow::Result<()> {
    let exe = std::env::current_exe().context("locating the fw binary")?;
    let paths = IfacePaths::new(iface)?;
    let log = std::fs::File::create(paths.state.join("rollback.log"))
        .context("creating the rollback log")?;
    let mut cmd = Command::new(exe);
    cmd.args([
        "rollback-timer",
        "--iface",
        iface,
        "--token",
        &token.to_string(),
        "--seconds",
        &secs.to_string(),
    ])
    .stdin(Stdio::null())
    .stdout(log.try_clone()?)
    .stderr(log);
    // SAFETY: setsid is async-signal-safe.
    unsafe {
        cmd.pre_exec(|| {
            if libc::setsid() < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    cmd.spawn().context("starting the rollback timer")?;
    Ok(())
}

pub fn execute_timer(a: TimerArgs) -> anyhow::Result<()> {
    // A hang-up of the terminal we came from must not end the timer.
    // SAFETY: setting a signal disposition.
    unsafe { libc::signal(libc::SIGHUP, libc::SIG_IGN) };
    std::thread::sleep(Duration::from_secs(a.seconds));
    if apply::rollback(&a.iface, Some(a.token))? {
        println!(
            "{}: not confirmed within {} s: previous policy restored",
            a.iface, a.seconds
        );
    }
    Ok(())
}

pub fn execute_confirm(a: IfaceArgs) -> anyhow::Result<()> {
    for iface in super::target_ifaces(&a.ifaces)? {
        if apply::confirm(&iface)? {
            println!("{iface}: confirmed; the new policy stays");
        } else {
            println!("{iface}: nothing to confirm");
        }
    }
    Ok(())
}

pub fn execute_rollback(a: IfaceArgs) -> anyhow::Result<()> {
    for iface in super::target_ifaces(&a.ifaces)? {
        apply::rollback(&iface, None).with_context(|| format!("fw rollback on {iface}"))?;
        let s = State::load(&IfacePaths::new(&iface)?)?;
        println!(
            "{iface}: previous policy restored ({}{})",
            s.source,
            if s.flushed { ", flushed" } else { "" }
        );
    }
    Ok(())
}

pub fn execute_flush(a: IfaceArgs) -> anyhow::Result<()> {
    for iface in super::target_ifaces(&a.ifaces)? {
        let paths = IfacePaths::new(&iface)?;
        let s = State::load(&paths)?;
        apply_policy(&iface, &s.policy, &s.source, true, None)
            .with_context(|| format!("fw flush on {iface}"))?;
        println!(
            "{iface}: FLUSHED — all incoming traffic passes; the program stays attached. `fw rollback` puts the policy back."
        );
    }
    Ok(())
}
