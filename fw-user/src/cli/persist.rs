//! `fw save`, `fw restore`, `fw install`, `fw uninstall`: the policy survives a reboot. At boot
//! a systemd unit runs `fw restore` before the network comes up.

use std::{
    fs,
    path::{Path, PathBuf},
    process::Command,
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};

use crate::{
    attach::{EgressMode, Mode},
    filter::{Filter, UpKind, UpOptions},
    guard::Guard,
    paths::{IfaceName, IfacePaths},
    persist::{DEFAULT_FILE, saved_file, saved_text, write_file},
    state::State,
};
use fw_policy::parse_policy_file;

pub const UNIT_PATH: &str = "/etc/systemd/system/fw.service";
pub const INSTALLED_BIN: &str = "/usr/local/sbin/fw";

#[derive(Debug, clap::Args)]
pub struct SaveArgs {
    /// Where to write (default /etc/fw/fw.toml or $FW_POLICY_FILE, which `fw restore` reads at
    /// boot); `-` prints it (like iptables-save).
    pub file: Option<PathBuf>,
    /// Interface(s) to save (default: every one fw is attached to; they must run one policy).
    #[arg(long = "iface", short = 'i')]
    pub ifaces: Vec<IfaceName>,
}

#[derive(Debug, clap::Args)]
pub struct RestoreArgs {
    /// The saved policy (default /etc/fw/fw.toml or $FW_POLICY_FILE).
    pub file: Option<PathBuf>,
    /// Interfaces (default: the file's `interfaces`).
    #[arg(long = "iface", short = 'i')]
    pub ifaces: Vec<IfaceName>,
    /// Wait up to SECS seconds for each interface to appear (at boot, drivers may be late).
    #[arg(long, default_value_t = 0, value_name = "SECS")]
    pub wait: u64,
    #[arg(long, value_enum, default_value_t = Mode::Auto)]
    pub mode: Mode,
    #[arg(long, value_enum, default_value_t = EgressMode::Auto)]
    pub egress: EgressMode,
    /// Restore even if the policy would cut a live SSH session.
    #[arg(long)]
    pub force: bool,
    /// Keep running and attach the policy again whenever one of the interfaces appears or is
    /// recreated (hot-plug, container veth, bond rebuild); stop with SIGTERM or Ctrl-C.
    #[arg(long)]
    pub watch: bool,
    #[command(flatten)]
    pub share: super::up::ShareArgs,
}

#[derive(Debug, clap::Args)]
pub struct InstallArgs {
    /// Print the unit instead of installing it.
    #[arg(long)]
    pub print: bool,
}

pub fn execute_save(a: SaveArgs) -> anyhow::Result<()> {
    let ifaces = super::target_ifaces(&a.ifaces)?;
    let mut states = Vec::new();
    for iface in &ifaces {
        states.push(State::load(&IfacePaths::new(iface)?)?);
    }
    let first = &states[0];
    let same = |s: &State| {
        s.current().policy.rules == first.current().policy.rules
            && s.current().policy.options == first.current().policy.options
    };
    if let Some(other) = states.iter().find(|s| !same(s)) {
        bail!(
            "{} and {} run different policies; save each with `fw save FILE --iface IF`",
            first.iface,
            other.iface
        );
    }
    if let Some(s) = states.iter().find(|s| s.record.pending.is_some()) {
        bail!(
            "{}: an `fw apply --confirm` is still waiting for `fw confirm`; confirm (or roll back) before saving",
            s.iface
        );
    }
    let names: Vec<String> = ifaces.iter().map(|i| i.to_string()).collect();
    let policy = &first.current().policy;
    let text = saved_text(policy, &names, &first.current().source);
    let to_stdout = a.file.as_deref() == Some(Path::new("-"));
    let file = a.file.unwrap_or_else(saved_file);
    // Never save something restore could not read back.
    fw_policy::parse_policy(&file.display().to_string(), &text)
        .context("internal error: the saved policy does not parse back")?;
    if to_stdout {
        print!("{text}");
        return Ok(());
    }
    if let Some(dir) = file.parent().filter(|d| !d.as_os_str().is_empty()) {
        fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    write_file(&file, &text)?;
    if states.iter().any(|s| s.current().flushed) {
        println!(
            "note: the filter is flushed right now; the saved file holds the policy itself, not the flush"
        );
    }
    println!(
        "saved the policy of {} to {} ({} rules)",
        names.join(", "),
        file.display(),
        policy.rules.len()
    );
    Ok(())
}

fn wait_for(iface: &IfaceName, secs: u64) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while iface.index().is_none() {
        if Instant::now() >= deadline {
            bail!(crate::Error::NoSuchInterface(iface.to_string()));
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    Ok(())
}

pub fn execute_restore(a: RestoreArgs) -> anyhow::Result<()> {
    let file = a.file.unwrap_or_else(saved_file);
    let policy = parse_policy_file(&file)?;
    let ifaces = if a.ifaces.is_empty() {
        policy
            .interfaces
            .iter()
            .map(|i| IfaceName::new(i))
            .collect::<Result<Vec<_>, _>>()
            .with_context(|| format!("{}: interfaces", file.display()))?
    } else {
        a.ifaces.clone()
    };
    if ifaces.is_empty() {
        bail!(
            "{}: no `interfaces = [...]` in the file and no --iface given: nothing to attach to",
            file.display()
        );
    }
    let source = file.display().to_string();
    let guard = if a.force {
        Guard::Force
    } else {
        Guard::Restore
    };
    let mut failed = Vec::new();
    // Each interface on its own: one late or missing NIC must not leave the others unprotected.
    for iface in &ifaces {
        let opts = UpOptions {
            mode: a.mode,
            egress: a.egress,
            policy: Some((&policy, &source)),
            guard,
            log: false,
            share: a.share.share(),
        };
        let r = wait_for(iface, a.wait)
            .and_then(|_| Filter::up(iface, &opts).map_err(anyhow::Error::from));
        match r {
            Ok((_, rep, _)) => {
                let how = match rep.kind {
                    UpKind::Attached => "attached",
                    UpKind::Upgraded => "replaced the running policy",
                    UpKind::Healed(_) => "attached again",
                };
                println!(
                    "{iface}: restored {} ({how}, xdp {})",
                    file.display(),
                    rep.mode.name()
                );
                if let Some(c) = &rep.changes {
                    super::print_changes(iface, c);
                }
                for n in &rep.notes {
                    println!("{iface}: note: {n}");
                }
            }
            Err(e) => {
                eprintln!("fw: {iface}: {}", super::error_text(&e));
                failed.push(iface.to_string());
            }
        }
    }
    if a.watch {
        return watch_ifaces(&ifaces, &policy, &source, a.mode);
    }
    if !failed.is_empty() {
        bail!("could not restore on {}", failed.join(", "));
    }
    Ok(())
}

static STOP: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

extern "C" fn on_stop(_: libc::c_int) {
    STOP.store(true, std::sync::atomic::Ordering::Relaxed);
}

/// `fw restore --watch`: heal the interfaces as they come and go, until SIGTERM/SIGINT.
fn watch_ifaces(
    ifaces: &[IfaceName],
    policy: &fw_policy::Policy,
    source: &str,
    mode: Mode,
) -> anyhow::Result<()> {
    // SAFETY: the handler only stores to an atomic.
    unsafe {
        libc::signal(libc::SIGTERM, on_stop as *const () as libc::sighandler_t);
        libc::signal(libc::SIGINT, on_stop as *const () as libc::sighandler_t);
    }
    let names: Vec<String> = ifaces.iter().map(|i| i.to_string()).collect();
    println!(
        "watching {} for interfaces that appear or are recreated",
        names.join(", ")
    );
    crate::watch::watch(
        ifaces,
        policy,
        source,
        mode,
        &|| STOP.load(std::sync::atomic::Ordering::Relaxed),
        &mut |iface, r| match r {
            Ok(h) => println!("{iface}: {h}"),
            Err(e) => eprintln!("fw: {iface}: {e}"),
        },
    )?;
    println!("stopped watching; the filters stay attached");
    Ok(())
}

/// The systemd unit that restores the saved policy at boot, before the network comes up.
///
/// No ExecStop: like netfilter-persistent, stopping or restarting the unit leaves the filter
/// attached (the pins hold it), so `systemctl restart fw` never opens a window; `fw down`
/// removes it. The sandbox keeps what fw needs: BPF and netlink, the host's /sys/fs/bpf (an API
/// file system, writable under ProtectSystem=strict) and /run/fw (RuntimeDirectory, preserved so
/// the state outlives the unit like the pins do). A bpffs mounted inside the sandbox would die
/// with it, and the filter with its pins, so the sandbox cannot mount (the system call filter
/// has no mount), and the ExecStartPre mounts it in PID 1's mount namespace if it is missing
/// (`+` lifts the sandbox, but systemd still runs the command in a mount namespace of its own).
pub fn unit_text(bin: &Path) -> String {
    let bin = bin.display();
    format!(
        "[Unit]
Description=fw XDP host firewall (restores {DEFAULT_FILE})
Documentation=man:fw(8)
DefaultDependencies=no
After=local-fs.target systemd-udevd.service systemd-modules-load.service
Wants=network-pre.target
Before=network-pre.target shutdown.target
Conflicts=shutdown.target
ConditionPathExists={DEFAULT_FILE}

[Service]
Type=oneshot
RemainAfterExit=yes
ExecStartPre=+/usr/bin/nsenter -t 1 -m /bin/sh -c 'findmnt -n -t bpf -M /sys/fs/bpf >/dev/null || mount -t bpf -o mode=0700 bpf /sys/fs/bpf'
ExecStart={bin} restore {DEFAULT_FILE} --wait 30
# Atomic: each interface's program and maps are replaced through its pinned link.
ExecReload={bin} restore {DEFAULT_FILE}
# No ExecStop: stop and restart leave the filter attached. `fw down` removes it.
CapabilityBoundingSet=CAP_BPF CAP_NET_ADMIN CAP_SYS_ADMIN CAP_PERFMON
NoNewPrivileges=yes
ProtectSystem=strict
RuntimeDirectory=fw
RuntimeDirectoryMode=0700
RuntimeDirectoryPreserve=yes
ProtectHome=yes
PrivateTmp=yes
PrivateDevices=yes
ProtectKernelLogs=yes
ProtectControlGroups=yes
ProtectClock=yes
ProtectHostname=yes
RestrictNamespaces=yes
RestrictRealtime=yes
RestrictSUIDSGID=yes
LockPersonality=yes
MemoryDenyWriteExecute=yes
RestrictAddressFamilies=AF_UNIX AF_NETLINK AF_INET AF_INET6
SystemCallArchitectures=native
SystemCallFilter=@system-service bpf
SystemCallErrorNumber=EPERM

[Install]
WantedBy=multi-user.target
"
    )
}

fn systemctl(args: &[&str]) -> bool {
    Command::new("systemctl")
        .args(args)
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

fn systemd_running() -> bool {
    Path::new("/run/systemd/system").exists()
}

pub fn execute_install(a: InstallArgs) -> anyhow::Result<()> {
    let bin = PathBuf::from(INSTALLED_BIN);
    if a.print {
        print!("{}", unit_text(&bin));
        return Ok(());
    }
    let me = std::env::current_exe().context("locating the fw binary")?;
    if me != bin {
        fs::create_dir_all(bin.parent().expect("has a parent"))?;
        let tmp = bin.with_extension("new");
        fs::copy(&me, &tmp)
            .with_context(|| format!("copying {} to {}", me.display(), tmp.display()))?;
        fs::rename(&tmp, &bin)?;
    }
    fs::write(UNIT_PATH, unit_text(&bin)).with_context(|| format!("writing {UNIT_PATH}"))?;
    println!("installed {} and {UNIT_PATH}", bin.display());
    if !Path::new(DEFAULT_FILE).exists() {
        println!(
            "note: {DEFAULT_FILE} does not exist yet; run `fw save` once the running policy is what you want at boot"
        );
    }
    if systemd_running() {
        if systemctl(&["daemon-reload"]) && systemctl(&["enable", "fw.service"]) {
            println!(
                "enabled fw.service: the saved policy is restored at every boot, before the network comes up"
            );
        } else {
            bail!(
                "systemctl could not enable fw.service; run `systemctl enable fw.service` yourself"
            );
        }
    } else {
        println!(
            "systemd is not running here: enable the unit with `systemctl enable fw.service` on the real system"
        );
    }
    Ok(())
}

pub fn execute_uninstall() -> anyhow::Result<()> {
    if systemd_running() {
        systemctl(&["disable", "fw.service"]);
    }
    if Path::new(UNIT_PATH).exists() {
        fs::remove_file(UNIT_PATH).with_context(|| format!("removing {UNIT_PATH}"))?;
        println!("removed {UNIT_PATH}");
    } else {
        println!("{UNIT_PATH} was not installed");
    }
    if systemd_running() {
        systemctl(&["daemon-reload"]);
    }
    println!(
        "kept {DEFAULT_FILE} and {INSTALLED_BIN}; the running filter is untouched (`fw down` removes it)"
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use fw_policy::{Policy, SEED_POLICY, parse_policy};

    #[test]
    fn saved_text_parses_back_to_the_same_policy_and_interfaces() {
        let mut p = parse_policy("seed", SEED_POLICY).unwrap();
        p.options.icmp_echo = true;
        let ifaces = vec!["eth0".to_string(), "eth1".to_string()];
        let text = saved_text(&p, &ifaces, "seed");
        let back = parse_policy("saved", &text).unwrap();
        assert_eq!(back.interfaces, ifaces);
        // execute_save passes a policy whose interfaces are already set.
        p.interfaces = ifaces.clone();
        let again = saved_text(&p, &ifaces, "seed");
        assert_eq!(again, text);
        assert_eq!(parse_policy("saved", &again).unwrap().interfaces, ifaces);
        assert_eq!(back.options, p.options);
        let ports = |p: &Policy| {
            p.rules
                .iter()
                .map(|r| (r.proto, r.ports, r.from.clone()))
                .collect::<Vec<_>>()
        };
        assert_eq!(ports(&back), ports(&p));
    }

    #[test]
    fn unit_restores_before_the_network() {
        let u = unit_text(Path::new("/usr/sbin/fw"));
        assert!(u.contains("Before=network-pre.target"));
        assert!(u.contains("ExecStart=/usr/sbin/fw restore /etc/fw/fw.toml"));
        assert!(u.contains("WantedBy=multi-user.target"));
    }

    #[test]
    fn unit_reloads_atomically_and_never_detaches() {
        let u = unit_text(Path::new("/usr/local/sbin/fw"));
        assert!(u.contains("ExecReload=/usr/local/sbin/fw restore /etc/fw/fw.toml\n"));
        let exec = |l: &&str| l.starts_with("Exec");
        assert!(
            !u.lines().any(|l| l.starts_with("ExecStop")),
            "a stop or restart must not detach:\n{u}"
        );
        assert!(!u.lines().filter(exec).any(|l| l.contains(" down")), "{u}");
        assert!(u.contains("Documentation=man:fw(8)\n"));
    }

    #[test]
    fn unit_sandbox_keeps_bpf_and_the_host_pins() {
        let u = unit_text(Path::new("/usr/sbin/fw"));
        let caps = u
            .lines()
            .find_map(|l| l.strip_prefix("CapabilityBoundingSet="))
            .unwrap();
        for cap in ["CAP_BPF", "CAP_NET_ADMIN", "CAP_SYS_ADMIN"] {
            assert!(caps.split(' ').any(|c| c == cap), "{cap} missing: {caps}");
        }
        // /sys must stay writable (pins) and bpffs must be mounted outside the sandbox.
        assert!(!u.contains("ProtectKernelTunables"), "{u}");
        assert!(!u.contains("PrivateNetwork"), "{u}");
        assert!(
            u.contains("ExecStartPre=+/usr/bin/nsenter -t 1 -m "),
            "bpffs must be mounted in the host's namespace: {u}"
        );
        assert!(!u.contains("@mount"), "the sandbox must not mount: {u}");
        assert!(u.contains("RuntimeDirectoryPreserve=yes"), "{u}");
    }
}
