//! The `fw` command line: one module per subcommand, each with `execute()`.

pub mod allow;
pub mod apply;
pub mod block;
pub mod capture;
pub mod conns;
pub mod down;
pub mod explain;
pub mod export;
pub mod generate;
pub mod import;
pub mod limit;
pub mod log;
pub mod metrics;
pub mod persist;
pub mod policy_cmd;
pub mod run;
pub mod serve;
pub mod spec;
pub mod status;
pub mod top;
pub mod up;

use std::path::PathBuf;

use clap::{Parser, Subcommand};

use crate::{Error, paths::IfaceName};
use fw_policy::{Policy, SEED_POLICY, parse_policy, parse_policy_file};

#[derive(Debug, Parser)]
#[command(
    name = "fw",
    version,
    about = "XDP host firewall: default DROP for incoming traffic, allowed ports, scans dropped before the kernel allocates anything",
    long_about = None,
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Attach the filter to interfaces (or replace the running one atomically).
    Up(up::Args),
    /// Detach the filter and remove its pins.
    Down(down::Args),
    /// Rules with packet/byte counters, drops by reason (like `iptables -L -n -v`).
    Status(status::Args),
    /// Allow a port on the running filter, live (map update; no reload).
    Allow(allow::Args),
    /// Remove an allowed port (or one source of it) from the running filter, live.
    Deny(allow::Args),
    /// Block sources on every port: `fw block add|del|list|import`.
    #[command(subcommand)]
    Block(block::BlockCmd),
    /// Rate-limit new connections to a port, per source and in all (`fw limit 22/tcp 6/30s`).
    Limit(limit::Args),
    /// Replace the whole running policy atomically (optionally confirm-or-rollback).
    Apply(apply::ApplyArgs),
    /// Keep the policy of a pending `fw apply --confirm`.
    Confirm(apply::IfaceArgs),
    /// Put the previous policy back now.
    Rollback(apply::IfaceArgs),
    /// Let everything through now, keeping the program attached (like `iptables -F`).
    Flush(apply::IfaceArgs),
    #[command(hide = true)]
    RollbackTimer(apply::TimerArgs),
    /// Write the running policy to a file (default /etc/fw/fw.toml) for `fw restore` at boot.
    Save(persist::SaveArgs),
    /// Load a saved policy onto its interfaces (what the boot unit runs).
    Restore(persist::RestoreArgs),
    /// Install the systemd unit that restores the saved policy at boot.
    Install(persist::InstallArgs),
    /// Remove the systemd unit (the running filter stays).
    Uninstall,
    /// Tracked connections (like `conntrack -L`).
    Conns(conns::Args),
    /// Say what the filter does with one packet, and why.
    Explain(explain::Args),
    /// Check or print policy files.
    #[command(subcommand)]
    Policy(policy_cmd::PolicyCmd),
    /// Turn another firewall's rules into an fw policy file (`fw import iptables FILE`).
    #[command(subcommand)]
    Import(import::ImportCmd),
    /// Write a policy as another firewall's rules (`fw export iptables`).
    #[command(subcommand)]
    Export(export::ExportCmd),
    /// Load in the foreground, print live counters (and drops with --log), detach on Ctrl-C.
    Run(run::Args),
    /// Prometheus metrics of the running filters (text exposition format).
    Metrics(metrics::Args),
    /// The monitoring daemon: /metrics over HTTP and drop logs to syslog.
    Serve(serve::Args),
    /// Follow the drop log.
    Log(log::Args),
    /// Write the packets fw dropped (or passed) to a pcap file.
    Capture(capture::Args),
    /// A live view: packets/s per rule and reason, top dropped sources, table fill.
    Top(top::Args),
    /// Print shell completions (bash, zsh, fish, …) for fw.
    Completions(generate::CompletionsArgs),
    /// Print the man page fw(8), or write it and one page per subcommand with --out DIR.
    Man(generate::ManArgs),
    #[command(hide = true)]
    Unit(generate::UnitArgs),
}

/// How a command ended, beyond success and error.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Exit {
    /// 0: done, or nothing to do.
    Ok,
    /// 3: `fw status` found a filter that does not work as its state says (see README).
    Degraded,
}

impl Exit {
    pub fn code(self) -> u8 {
        match self {
            Exit::Ok => 0,
            Exit::Degraded => 3,
        }
    }
}

impl Cli {
    pub fn execute(self) -> anyhow::Result<Exit> {
        let ok = |r: anyhow::Result<()>| r.map(|()| Exit::Ok);
        match self.command {
            Command::Up(a) => ok(up::execute(a)),
            Command::Down(a) => ok(down::execute(a)),
            Command::Status(a) => status::execute(a),
            Command::Allow(a) => ok(allow::execute(a, allow::Verb::Allow)),
            Command::Deny(a) => ok(allow::execute(a, allow::Verb::Deny)),
            Command::Conns(a) => ok(conns::execute(a)),
            Command::Block(c) => ok(block::execute(c)),
            Command::Limit(a) => ok(limit::execute(a)),
            Command::Save(a) => ok(persist::execute_save(a)),
            Command::Restore(a) => ok(persist::execute_restore(a)),
            Command::Install(a) => ok(persist::execute_install(a)),
            Command::Uninstall => ok(persist::execute_uninstall()),
            Command::Apply(a) => ok(apply::execute_apply(a)),
            Command::Confirm(a) => ok(apply::execute_confirm(a)),
            Command::Rollback(a) => ok(apply::execute_rollback(a)),
            Command::Flush(a) => ok(apply::execute_flush(a)),
            Command::RollbackTimer(a) => ok(apply::execute_timer(a)),
            Command::Explain(a) => ok(explain::execute(a)),
            Command::Policy(c) => ok(policy_cmd::execute(c)),
            Command::Import(c) => ok(import::execute(c)),
            Command::Export(c) => ok(export::execute(c)),
            Command::Run(a) => ok(run::execute(a)),
            Command::Metrics(a) => ok(metrics::execute(a)),
            Command::Serve(a) => ok(serve::execute(a)),
            Command::Log(a) => ok(log::execute(a)),
            Command::Capture(a) => ok(capture::execute(a)),
            Command::Top(a) => ok(top::execute(a)),
            Command::Completions(a) => ok(generate::execute_completions(a)),
            Command::Man(a) => ok(generate::execute_man(a)),
            Command::Unit(a) => ok(generate::execute_unit(a)),
        }
    }
}

/// An error as one line per cause, each said once (an OS error that a message already quotes
/// is not repeated), with a hint when the cause is a missing privilege.
pub fn error_text(e: &anyhow::Error) -> String {
    let mut out = String::new();
    let mut denied = false;
    for cause in e.chain() {
        let s = cause.to_string();
        if let Some(io) = cause.downcast_ref::<std::io::Error>() {
            denied |= matches!(io.raw_os_error(), Some(libc::EPERM | libc::EACCES));
        }
        if let Some(fw) = cause.downcast_ref::<Error>() {
            denied |= matches!(fw.os_error(), Some(libc::EPERM | libc::EACCES));
        }
        if s.is_empty() || out.contains(&s) {
            continue;
        }
        if !out.is_empty() {
            out.push_str(": ");
        }
        out.push_str(&s);
    }
    // SAFETY: geteuid has no preconditions.
    if denied && unsafe { libc::geteuid() } != 0 {
        out.push_str(
            "\nfw changes and reads kernel objects: run it as root (it needs CAP_BPF and CAP_NET_ADMIN, and CAP_SYS_ADMIN to mount bpffs)",
        );
    }
    out
}

/// The embedded default policy and its source name.
pub fn seed_policy() -> Result<(Policy, String), Error> {
    Ok((
        parse_policy("<embedded seed policy>", SEED_POLICY)?,
        "embedded seed policy".to_string(),
    ))
}

/// A policy from `--policy FILE`, or the embedded seed policy. Returns it and its source name.
pub fn load_policy(file: Option<&PathBuf>) -> Result<(Policy, String), Error> {
    match file {
        Some(f) => Ok((parse_policy_file(f)?, f.display().to_string())),
        None => seed_policy(),
    }
}

/// `--iface` values, or every interface fw is attached to in this namespace.
pub fn target_ifaces(given: &[IfaceName]) -> Result<Vec<IfaceName>, Error> {
    if !given.is_empty() {
        return Ok(given.to_vec());
    }
    crate::paths::ensure_bpffs()?;
    let all = crate::paths::attached_ifaces()?;
    if all.is_empty() {
        return Err(Error::Other(
            "fw is not attached to any interface in this network namespace (start it with `fw up --iface IF`)".into(),
        ));
    }
    Ok(all)
}

/// Print what a policy replacement changes.
pub fn print_changes(iface: &IfaceName, changes: &[String]) {
    if changes.is_empty() {
        println!("{iface}: what is let in does not change");
        return;
    }
    println!("{iface}: changes:");
    for c in changes {
        println!("  {c}");
    }
}

/// What `syn_cookies` needs of the kernel (the sysctls fw reads but never changes), after a
/// command that put a policy in force.
pub fn print_syncookie_notes(iface: &IfaceName, options: &fw_policy::Options) {
    for n in crate::syncookie::notes(options, &crate::syncookie::Sysctls::read()) {
        println!("{iface}: syn cookies: {n}");
    }
}

/// After a live change: say when the saved policy (what comes back at boot) now differs.
pub fn note_saved(st: &crate::state::State) {
    if crate::status::saved_differs(st) == crate::status::Saved::Differs {
        println!(
            "note: {} (restored at boot) differs from the running policy now; `fw save` keeps this change after a reboot",
            crate::persist::saved_file().display()
        );
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser as _;

    use super::{Cli, Command};
    use crate::attach::Mode;
    use fw_policy::Proto;

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("fw").chain(args.iter().copied()))
    }

    #[test]
    fn up_takes_several_interfaces_a_policy_and_a_mode() {
        let c = parse(&[
            "up", "--iface", "eth0", "-i", "eth1", "--policy", "p.toml", "--mode", "skb",
        ])
        .unwrap();
        let Command::Up(a) = c.command else { panic!() };
        let names: Vec<&str> = a.ifaces.iter().map(|i| i.as_str()).collect();
        assert_eq!(names, ["eth0", "eth1"]);
        assert_eq!(a.policy.unwrap().to_str(), Some("p.toml"));
        assert_eq!(a.mode, Mode::Skb);
        assert!(parse(&["up"]).is_err(), "--iface is required");
        assert!(parse(&["up", "-i", "eth0", "--mode", "fast"]).is_err());
    }

    #[test]
    fn allow_parses_port_specs_and_sources() {
        let c = parse(&[
            "allow",
            "8080/tcp",
            "--from",
            "203.0.113.7",
            "--from",
            "2001:db8::/32",
        ])
        .unwrap();
        let Command::Allow(a) = c.command else {
            panic!()
        };
        assert_eq!(a.spec.proto, Proto::Tcp);
        assert_eq!(a.spec.ports.lo, 8080);
        assert_eq!(a.from.len(), 2);
        let c = parse(&["deny", "6000-6010/udp"]).unwrap();
        let Command::Deny(a) = c.command else {
            panic!()
        };
        assert_eq!(
            (a.spec.ports.lo, a.spec.ports.hi, a.spec.proto),
            (6000, 6010, Proto::Udp)
        );
    }

    #[test]
    fn bad_arguments_are_refused_with_the_value() {
        let e = parse(&["allow", "70000/tcp"]).unwrap_err().to_string();
        assert!(e.contains("70000"), "{e}");
        let e = parse(&["allow", "22", "--from", "10.0.0.0/99"])
            .unwrap_err()
            .to_string();
        assert!(e.contains("10.0.0.0/99"), "{e}");
        let e = parse(&["explain", "--proto", "tcp", "--flags", "SQ"])
            .unwrap_err()
            .to_string();
        assert!(e.contains("SQ"), "{e}");
        assert!(parse(&["frobnicate"]).is_err());
    }

    #[test]
    fn status_and_conns_take_json() {
        let Command::Status(a) = parse(&["status", "--json"]).unwrap().command else {
            panic!()
        };
        assert!(a.json && a.ifaces.is_empty());
        let Command::Conns(a) = parse(&["conns", "-i", "eth0", "--json"]).unwrap().command else {
            panic!()
        };
        assert!(a.json);
        assert_eq!(a.ifaces[0].as_str(), "eth0");
    }

    #[test]
    fn interface_names_are_validated_by_every_verb() {
        for verb in [
            &["down", "--iface"][..],
            &["status", "-i"],
            &["allow", "22", "-i"],
            &["confirm", "-i"],
            &["rollback", "-i"],
            &["flush", "-i"],
            &["conns", "-i"],
            &["save", "--iface"],
        ] {
            for bad in ["..", "../../..", "a/b", "x234567890123456"] {
                let mut args = verb.to_vec();
                args.push(bad);
                let e = parse(&args).unwrap_err().to_string();
                assert!(e.contains("not an interface name"), "{args:?}: {e}");
            }
        }
    }

    #[test]
    fn block_and_limit_parse_their_arguments() {
        let c = parse(&[
            "block",
            "add",
            "192.0.2.1",
            "2001:db8::/32",
            "--timeout",
            "60",
        ])
        .unwrap();
        let Command::Block(super::block::BlockCmd::Add(a)) = c.command else {
            panic!()
        };
        assert_eq!((a.cidrs.len(), a.timeout), (2, Some(60)));
        assert!(parse(&["block", "add"]).is_err());
        assert!(parse(&["block", "add", "10.0.0.1/8"]).is_err(), "host bits");
        let c = parse(&[
            "limit", "22/tcp", "6/30s", "--burst", "3", "--per", "/24", "--total", "100/s",
        ])
        .unwrap();
        let Command::Limit(a) = c.command else {
            panic!()
        };
        let l = a.limit();
        assert_eq!((l.per4, l.per6, l.burst), (24, 64, Some(3)));
        assert!(parse(&["limit", "22", "6 per 30s"]).is_err());
        assert!(parse(&["limit", "22", "--remove", "--burst", "3"]).is_err());
        assert!(parse(&["limit", "22", "--per", "/40"]).is_err());
    }

    #[test]
    fn up_takes_a_policy_or_the_default_not_both() {
        assert!(parse(&["up", "-i", "eth0", "--default"]).is_ok());
        assert!(parse(&["up", "-i", "eth0", "--default", "--policy", "p.toml"]).is_err());
    }

    #[test]
    fn up_shares_the_interface_when_asked_and_priority_implies_it() {
        use crate::multiprog::Share;
        let share = |args: &[&str]| match parse(args).unwrap().command {
            Command::Up(a) => a.share.share(),
            _ => panic!("not up"),
        };
        assert_eq!(share(&["up", "-i", "eth0"]), Share::Auto);
        assert_eq!(
            share(&["up", "-i", "eth0", "--multiprog"]),
            Share::Dispatcher { priority: None }
        );
        assert_eq!(
            share(&["up", "-i", "eth0", "--priority", "5"]),
            Share::Dispatcher { priority: Some(5) }
        );
        assert!(parse(&["up", "-i", "eth0", "--priority", "-1"]).is_err());
        assert!(parse(&["up", "-i", "eth0", "--priority", "5000"]).is_err());
        assert!(parse(&["restore", "--multiprog", "--priority", "30"]).is_ok());
    }

    #[test]
    fn policy_subcommands() {
        assert!(matches!(
            parse(&["policy", "check", "f.toml"]).unwrap().command,
            Command::Policy(_)
        ));
        assert!(parse(&["policy", "check"]).is_err());
        assert!(matches!(
            parse(&["policy", "default"]).unwrap().command,
            Command::Policy(_)
        ));
    }
}
