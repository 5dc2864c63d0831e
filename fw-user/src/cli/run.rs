//! `fw run`: the foreground mode behind `cargo xtask run`. Loads, prints counter changes (and
//! each drop with --log, through aya-log), and detaches cleanly on Ctrl-C or SIGTERM.

use std::{collections::BTreeMap, path::PathBuf, time::Duration};

use anyhow::{Context as _, bail};
use tokio::signal::unix::{SignalKind, signal};

use crate::{
    attach::{EgressMode, Mode},
    filter::{self, Filter, UpOptions},
    guard::Guard,
    paths::{IfaceName, IfacePaths},
};

#[derive(Debug, clap::Args)]
pub struct Args {
    #[arg(long = "iface", short = 'i', required = true)]
    pub ifaces: Vec<IfaceName>,
    #[arg(long, short = 'p')]
    pub policy: Option<PathBuf>,
    #[arg(long, value_enum, default_value_t = Mode::Auto)]
    pub mode: Mode,
    /// Log every dropped packet from the XDP program (aya-log; costs a ring-buffer write per drop).
    #[arg(long)]
    pub log: bool,
    /// Seconds between counter reports.
    #[arg(long, default_value_t = 2)]
    pub interval: u64,
}

pub fn execute(a: Args) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(run(a))
}

async fn run(a: Args) -> anyhow::Result<()> {
    let (policy, source) = super::load_policy(a.policy.as_ref())?;
    for iface in &a.ifaces {
        if IfacePaths::new(iface)?.is_attached()? {
            bail!(
                "fw is already attached to {iface} (see `fw status`); `fw run` loads its own filter and removes it on exit, so stop the other one first with `fw down --iface {iface}`"
            );
        }
    }
    let mut objects = Vec::new();
    let mut attached = Vec::new();
    for iface in &a.ifaces {
        let opts = UpOptions {
            mode: a.mode,
            egress: EgressMode::Auto,
            policy: Some((&policy, &source)),
            guard: Guard::Check,
            log: a.log,
            share: crate::multiprog::Share::Auto,
        };
        match Filter::up(iface, &opts) {
            Ok((_, report, ebpf)) => {
                println!(
                    "{iface}: attached (xdp {}), policy: {source}",
                    report.mode.name()
                );
                attached.push(iface.clone());
                objects.push(ebpf);
            }
            Err(e) => {
                for i in &attached {
                    let _ = filter::down(i);
                }
                return Err(e).with_context(|| format!("fw run on {iface}"));
            }
        }
    }
    if a.log {
        for ebpf in &mut objects {
            let logger = aya_log::EbpfLogger::init(ebpf).context("aya-log")?;
            // SAFETY: the logger owns its ring-buffer fd for as long as the AsyncFd holds it.
            let mut fd = unsafe {
                tokio::io::unix::AsyncFd::register_with_interest(
                    logger,
                    tokio::io::Interest::READABLE,
                )
            }
            .map_err(|e| anyhow::anyhow!("aya-log fd: {e}"))?;
            tokio::spawn(async move {
                loop {
                    let Ok(mut guard) = fd.readable_mut().await else {
                        break;
                    };
                    guard.get_inner_mut().flush();
                    guard.clear_ready();
                }
            });
        }
    }
    println!("Ctrl-C detaches and exits.");
    let mut term = signal(SignalKind::terminate())?;
    let mut tick = tokio::time::interval(Duration::from_secs(a.interval.max(1)));
    let mut last: BTreeMap<(String, String), u64> = BTreeMap::new();
    let result = loop {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => break Ok(()),
            _ = term.recv() => break Ok(()),
            _ = tick.tick() => {
                if let Err(e) = report(&attached, &mut last) {
                    break Err(e);
                }
            }
        }
    };
    for iface in &attached {
        filter::down(iface).with_context(|| format!("detaching from {iface}"))?;
        println!("{iface}: detached");
    }
    result
}

fn report(ifaces: &[IfaceName], last: &mut BTreeMap<(String, String), u64>) -> anyhow::Result<()> {
    for iface in ifaces {
        let s = crate::status::read(iface)?;
        let mut parts = Vec::new();
        let rules = s.rules.iter().map(|r| {
            (
                format!("{}/{}", r.rule.ports, r.rule.proto.name()),
                "ACCEPT",
                r.packets,
            )
        });
        let reasons = s
            .reasons
            .iter()
            .map(|r| (r.reason.to_string(), r.verdict, r.packets));
        for (name, verdict, packets) in rules.chain(reasons) {
            let prev = last
                .insert((iface.to_string(), name.clone()), packets)
                .unwrap_or(0);
            if packets > prev {
                parts.push(format!("{verdict} {name} +{}", packets - prev));
            }
        }
        if !parts.is_empty() {
            println!("{iface}: {}", parts.join(", "));
        }
    }
    Ok(())
}
