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
    loader::{self, Mode, Up},
    pins::IfacePaths,
    state::State,
};
use fw_policy::{
    Policy, parse_policy_file,
    toml_out::{Annotations, to_toml},
};

pub const DEFAULT_FILE: &str = "/etc/fw/fw.toml";
pub const UNIT_PATH: &str = "/etc/systemd/system/fw.service";
pub const INSTALLED_BIN: &str = "/usr/local/sbin/fw";

#[derive(Debug, clap::Args)]
pub struct SaveArgs {
    /// Where to write (default /etc/fw/fw.toml, which `fw restore` reads at boot).
    pub file: Option<PathBuf>,
    /// Interface(s) to save (default: every one fw is attached to; they must run one policy).
    #[arg(long = "iface", short = 'i')]
    pub ifaces: Vec<String>,
}

#[derive(Debug, clap::Args)]
pub struct RestoreArgs {
    /// The saved policy (default /etc/fw/fw.toml).
    pub file: Option<PathBuf>,
    /// Interfaces (default: the file's `interfaces`).
    #[arg(long = "iface", short = 'i')]
    pub ifaces: Vec<String>,
    /// Wait up to SECS seconds for each interface to appear (at boot, drivers may be late).
    #[arg(long, default_value_t = 0, value_name = "SECS")]
    pub wait: u64,
    #[arg(long, value_enum, default_value_t = Mode::Auto)]
    pub mode: Mode,
}

#[derive(Debug, clap::Args)]
pub struct InstallArgs {
    /// Print the unit instead of installing it.
    #[arg(long)]
    pub print: bool,
}

/// The text `fw save` writes for `policy` attached to `ifaces`.
pub fn saved_text(policy: &Policy, ifaces: &[String], source: &str) -> String {
    let notes = Annotations {
        header: vec![
            "fw policy saved by `fw save`; `fw restore` (run at boot by fw.service) loads it."
                .to_string(),
            format!("Saved from the running filter (its policy came from: {source})."),
            "`interfaces`: what fw restore attaches to.".to_string(),
        ],
        ..Default::default()
    };
    // to_toml writes `interfaces` itself (before the first table, where TOML wants it); adding
    // a line here as well would make the file unreadable (duplicate key).
    let mut policy = policy.clone();
    policy.interfaces = ifaces.to_vec();
    to_toml(&policy, &notes)
}

pub fn execute_save(a: SaveArgs) -> anyhow::Result<()> {
    let ifaces = super::target_ifaces(&a.ifaces)?;
    let mut states = Vec::new();
    for iface in &ifaces {
        states.push(State::load(&IfacePaths::new(iface)?)?);
    }
    let first = &states[0];
    if let Some(other) = states
        .iter()
        .find(|s| s.policy.rules != first.policy.rules || s.policy.options != first.policy.options)
    {
        bail!(
            "{} and {} run different policies; save each with `fw save FILE --iface IF`",
            first.iface,
            other.iface
        );
    }
    if let Some(s) = states.iter().find(|s| s.pending.is_some()) {
        bail!(
            "{}: an `fw apply --confirm` is still waiting for `fw confirm`; confirm (or roll back) before saving",
            s.iface
        );
    }
    let file = a.file.unwrap_or_else(|| PathBuf::from(DEFAULT_FILE));
    let mut policy = first.policy.clone();
    policy.interfaces = ifaces.clone();
    let text = saved_text(&policy, &ifaces, &first.source);
    // Never save something restore could not read back.
    fw_policy::parse_policy(&file.display().to_string(), &text)
        .context("internal error: the saved policy does not parse back")?;
    if let Some(dir) = file.parent() {
        fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let tmp = file.with_extension("toml.tmp");
    fs::write(&tmp, &text).with_context(|| format!("writing {}", tmp.display()))?;
    fs::rename(&tmp, &file).with_context(|| format!("writing {}", file.display()))?;
    if states.iter().any(|s| s.flushed) {
        println!(
            "note: the filter is flushed right now; the saved file holds the policy itself, not the flush"
        );
    }
    println!(
        "saved the policy of {} to {} ({} rules)",
        ifaces.join(", "),
        file.display(),
        policy.rules.len()
    );
    Ok(())
}

fn wait_for(iface: &str, secs: u64) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        match loader::check_iface(iface) {
            Ok(_) => return Ok(()),
            Err(e) if Instant::now() >= deadline => return Err(e.into()),
            Err(_) => std::thread::sleep(Duration::from_millis(200)),
        }
    }
}

pub fn execute_restore(a: RestoreArgs) -> anyhow::Result<()> {
    let file = a.file.unwrap_or_else(|| PathBuf::from(DEFAULT_FILE));
    let policy = parse_policy_file(&file)?;
    let ifaces = if a.ifaces.is_empty() {
        policy.interfaces.clone()
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
    let mut failed = Vec::new();
    // Each interface on its own: one late or missing NIC must not leave the others unprotected.
    for iface in &ifaces {
        let r = wait_for(iface, a.wait).and_then(|_| {
            loader::up(&Up {
                iface,
                mode: a.mode,
                policy: &policy,
                source: &source,
                log: false,
            })
            .map_err(anyhow::Error::from)
        });
        match r {
            Ok((rep, _)) => println!("{iface}: restored {} (xdp {})", file.display(), rep.mode),
            Err(e) => {
                eprintln!("fw: {iface}: {e:#}");
                failed.push(iface.clone());
            }
        }
    }
    if !failed.is_empty() {
        bail!("could not restore on {}", failed.join(", "));
    }
    Ok(())
}

/// The systemd unit that restores the saved policy at boot, before the network comes up.
pub fn unit_text(bin: &Path) -> String {
    let bin = bin.display();
    format!(
        "[Unit]
Description=fw XDP host firewall (restores {DEFAULT_FILE})
Documentation=https://github.com/ (see README: fw save / fw restore)
DefaultDependencies=no
After=local-fs.target systemd-udevd.service systemd-modules-load.service
Wants=network-pre.target
Before=network-pre.target shutdown.target
Conflicts=shutdown.target
ConditionPathExists={DEFAULT_FILE}

[Service]
Type=oneshot
RemainAfterExit=yes
ExecStart={bin} restore {DEFAULT_FILE} --wait 30
ExecStop={bin} down

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
    use fw_policy::{SEED_POLICY, parse_policy};

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
        let u = unit_text(Path::new("/usr/local/sbin/fw"));
        assert!(u.contains("Before=network-pre.target"));
        assert!(u.contains("ExecStart=/usr/local/sbin/fw restore /etc/fw/fw.toml"));
        assert!(u.contains("WantedBy=multi-user.target"));
    }
}
