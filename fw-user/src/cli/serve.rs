//! `fw serve`: the monitoring daemon — `/metrics` over HTTP and the drop log of every filter
//! whose policy says `log = "drops"` forwarded to syslog/journald. Runs until SIGINT/SIGTERM.

use std::{
    net::{SocketAddr, TcpListener},
    path::Path,
};

use crate::paths::IfaceName;

/// Where `fw serve` listens unless told otherwise (loopback: expose it on purpose).
pub const DEFAULT_LISTEN: &str = "127.0.0.1:9469";

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Address for /metrics.
    #[arg(long, default_value = DEFAULT_LISTEN)]
    pub listen: SocketAddr,
    /// Interface (default: every one fw is attached to, looked at again every few seconds).
    #[arg(long = "iface", short = 'i')]
    pub ifaces: Vec<IfaceName>,
    /// Do not forward drop logs to syslog (metrics only).
    #[arg(long)]
    pub no_log: bool,
}

pub fn execute(a: Args) -> anyhow::Result<()> {
    run(a.listen, &a.ifaces, !a.no_log)
}

pub fn run(addr: SocketAddr, ifaces: &[IfaceName], logs: bool) -> anyhow::Result<()> {
    crate::paths::ensure_bpffs()?;
    let listener =
        TcpListener::bind(addr).map_err(|e| anyhow::anyhow!("listening on {addr}: {e}"))?;
    crate::serve::install_stop_handler();
    eprintln!(
        "fw: serving metrics on http://{}/metrics{}",
        listener.local_addr().unwrap_or(addr),
        if logs {
            "; forwarding drop logs (policies with log = \"drops\") to syslog"
        } else {
            ""
        }
    );
    let forwarder = logs.then(|| {
        let ifaces = ifaces.to_vec();
        std::thread::spawn(move || crate::serve::forward_logs(&ifaces))
    });
    let r = crate::serve::serve_metrics(listener, ifaces);
    if let Some(t) = forwarder {
        let _ = t.join();
    }
    Ok(r?)
}

/// fw-serve.service, the unit that runs `fw serve` (shipped beside fw.service; `fw unit --serve
/// --bin PATH` prints it). It only reads what fw.service attached, so it starts after it and
/// never changes a filter.
pub fn unit_text(bin: &Path) -> String {
    let bin = bin.display();
    format!(
        "[Unit]
Description=fw metrics and drop log (Prometheus /metrics, syslog)
Documentation=man:fw-serve(8)
After=fw.service network-online.target
Wants=network-online.target

[Service]
ExecStart={bin} serve --listen {DEFAULT_LISTEN}
Restart=on-failure
RestartSec=2
# Runs as root like fw itself: it reads pinned BPF maps and ring buffers (CAP_BPF) and takes
# the reader lock files under /run/fw.
NoNewPrivileges=yes
ProtectHome=yes
PrivateTmp=yes

[Install]
WantedBy=multi-user.target
"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serve_unit_runs_this_binary_after_the_filter_on_loopback() {
        let u = unit_text(Path::new("/usr/sbin/fw"));
        assert!(
            u.contains("ExecStart=/usr/sbin/fw serve --listen 127.0.0.1:9469\n"),
            "{u}"
        );
        assert!(u.contains("After=fw.service"), "{u}");
        assert!(u.contains("Documentation=man:fw-serve(8)\n"), "{u}");
        assert!(!u.lines().any(|l| l.starts_with("ExecStop")), "{u}");
    }
}
