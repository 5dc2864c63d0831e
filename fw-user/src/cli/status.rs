//! `fw status`: what is let in, in plain words, with counters — like `iptables -L -n -v` — and
//! everything that is not working as it should. Exit status 3 when a filter is degraded.

use crate::{
    paths::{IfaceName, attached_ifaces},
    status::{IfaceStatus, Saved, read},
};

use super::Exit;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Interface (default: every one fw is attached to).
    #[arg(long = "iface", short = 'i')]
    pub ifaces: Vec<IfaceName>,
    /// Machine-readable output.
    #[arg(long)]
    pub json: bool,
    /// Print again every SECS seconds (default 2) until Ctrl-C: plain text for dumb terminals
    /// and logs (`fw top` is the live view).
    #[arg(long, value_name = "SECS", num_args = 0..=1, default_missing_value = "2")]
    pub watch: Option<f64>,
    /// With --watch: stop after N prints.
    #[arg(long, requires = "watch")]
    pub count: Option<u64>,
}

pub fn execute(a: Args) -> anyhow::Result<Exit> {
    let Some(secs) = a.watch else {
        return once(&a);
    };
    crate::serve::install_stop_handler();
    let delay = std::time::Duration::from_secs_f64(secs.clamp(0.1, 86_400.0));
    let mut n = 0u64;
    loop {
        if !a.json {
            println!(
                "--- {} ---",
                crate::droplog::rfc3339(
                    std::time::SystemTime::now()
                        .duration_since(std::time::UNIX_EPOCH)
                        .map_or(0, |d| d.as_nanos() as u64)
                )
            );
        }
        let exit = once(&a)?;
        n += 1;
        if a.count.is_some_and(|c| n >= c) {
            return Ok(exit);
        }
        let until = std::time::Instant::now() + delay;
        while std::time::Instant::now() < until {
            if crate::serve::stopped() {
                return Ok(exit);
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
    }
}

fn once(a: &Args) -> anyhow::Result<Exit> {
    let ifaces = if a.ifaces.is_empty() {
        crate::paths::ensure_bpffs()?;
        attached_ifaces()?
    } else {
        a.ifaces.clone()
    };
    let mut all = Vec::new();
    let mut missing = Vec::new();
    for iface in &ifaces {
        match read(iface) {
            Ok(s) => all.push(s),
            Err(crate::Error::NotAttached(i)) if !a.ifaces.is_empty() => missing.push(i),
            Err(e) => return Err(e.into()),
        }
    }
    let degraded = !missing.is_empty() || all.iter().any(|s| !s.healthy);
    if a.json {
        println!("{}", serde_json::to_string_pretty(&all)?);
    } else if all.is_empty() && missing.is_empty() {
        println!(
            "fw is not attached to any interface in this network namespace: nothing is filtered."
        );
    } else {
        for s in &all {
            print_text(s);
        }
        for i in &missing {
            println!("{i}: fw is not attached: nothing is filtered");
        }
    }
    Ok(if degraded { Exit::Degraded } else { Exit::Ok })
}

fn print_text(s: &IfaceStatus) {
    println!(
        "fw on {} (xdp {}, egress {}), policy: {}, generation {}",
        s.iface,
        s.mode.name(),
        super::up::egress_name(&s.egress),
        fw_policy::display_safe(&s.policy_source),
        s.generation
    );
    println!(
        "XDP: {}{}",
        s.xdp,
        s.mtu.map_or(String::new(), |m| format!("; MTU {m}"))
    );
    for p in &s.problems {
        let tag = if p.degraded { "PROBLEM" } else { "note" };
        println!("*** {tag} [{}]: {} ***", p.code, p.detail);
    }
    if s.flushed {
        println!(
            "*** FLUSHED: everything passes (`fw rollback` restores the last confirmed policy) ***"
        );
    }
    if let Some(p) = &s.pending {
        let left = p.deadline.saturating_sub(crate::state::unix_now());
        println!(
            "Pending: `fw confirm` within {left} s keeps this policy; otherwise {} comes back",
            fw_policy::display_safe(&s.confirmed_source)
        );
    }
    match s.saved {
        Saved::Differs => println!(
            "Saved policy ({}) differs from the running one: `fw save` to keep it after a reboot",
            crate::persist::saved_file().display()
        ),
        Saved::Invalid => println!(
            "Saved policy ({}) does not parse: the boot unit would fail to restore it",
            crate::persist::saved_file().display()
        ),
        Saved::None | Saved::Same => {}
    }
    let drops: u64 = s
        .reasons
        .iter()
        .filter(|r| r.verdict == "DROP")
        .map(|r| r.packets)
        .sum();
    println!(
        "Incoming: policy {} ({drops} packets dropped); outgoing: not filtered; loopback: not filtered",
        s.default_policy
    );
    println!();
    println!(
        "{:>10} {:>12}  {:<7} {:<5} {:<12} {:<24} comment",
        "pkts", "bytes", "target", "prot", "dport", "source"
    );
    for r in &s.rules {
        let src = if r.rule.from.is_empty() {
            "anywhere".to_string()
        } else {
            r.rule
                .from
                .iter()
                .map(|c| c.to_string())
                .collect::<Vec<_>>()
                .join(",")
        };
        println!(
            "{:>10} {:>12}  {:<7} {:<5} {:<12} {:<24} {}",
            r.packets,
            r.bytes,
            "ACCEPT",
            r.rule.proto.name(),
            r.rule.ports.to_string(),
            src,
            fw_policy::display_safe(r.rule.comment.as_deref().unwrap_or(""))
        );
    }
    crate::filter::flood::print_flood_status(&s.flood);
    let o = &s.options;
    println!();
    println!(
        "Options: strict_tcp_flags={} icmp_echo={} fragments={:?} dhcp_client={}",
        o.strict_tcp_flags, o.icmp_echo, o.fragments, o.dhcp_client
    );
    if o.established {
        println!();
        println!(
            "Connection tracking (ESTABLISHED/RELATED{}):",
            if o.new_requires_syn {
                "; TCP not starting with SYN and not tracked is dropped"
            } else {
                ""
            }
        );
        for t in &s.connections {
            println!(
                "  {:<7} {:>8}/{:<8} created {:>8}  removed {:>8}  evicted {:>6}   {}",
                t.table, t.entries, t.max_entries, t.created, t.removed, t.evicted, t.meaning
            );
        }
    }
    if let Some(c) = &s.syn_cookies {
        print_cookies(c);
    }
    println!();
    println!(
        "{:>10} {:>12}  {:<7} {:<20} meaning",
        "pkts", "bytes", "target", "reason"
    );
    for r in &s.reasons {
        println!(
            "{:>10} {:>12}  {:<7} {:<20} {}",
            r.packets, r.bytes, r.verdict, r.reason, r.description
        );
    }
    println!();
}

fn print_cookies(c: &crate::syncookie::CookieStatus) {
    println!();
    let sysctl = |v: Option<u64>| v.map_or("?".to_string(), |v| v.to_string());
    println!(
        "SYN cookies ({}{}): net.ipv4.tcp_syncookies={} tcp_timestamps={} (fw reads these, never sets them)",
        c.mode.name(),
        if c.mode == fw_policy::SynCookies::Auto {
            format!(", above {} SYNs/s", c.threshold)
        } else {
            String::new()
        },
        sysctl(c.sysctls.tcp_syncookies),
        sysctl(c.sysctls.tcp_timestamps),
    );
    if c.listeners.is_empty() {
        println!("  no listener seen answering with a cookie yet: every SYN goes to the kernel");
    }
    for l in &c.listeners {
        let addr = std::net::SocketAddr::new(l.addr, l.port);
        println!(
            "  {addr:<28} {}  kernel cookie {:.0} s ago, fw answered {}, mss {} wscale {}",
            if l.answering {
                "answering"
            } else {
                "not answering (the kernel must be seen accepting cookies first)"
            },
            l.kernel_cookie_age_s,
            l.answered_age_s
                .map_or("never (in 2 min)".to_string(), |a| format!("{a:.0} s ago")),
            l.mss,
            l.wscale.map_or("-".to_string(), |w| w.to_string()),
        );
    }
    for (name, n) in &c.events {
        if *n > 0 {
            println!("  {n:>10}  {name}");
        }
    }
}
