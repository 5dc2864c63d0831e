//! `fw metrics`: Prometheus text exposition of every attached filter — to stdout, to a file for
//! node_exporter's textfile collector (`-o`, written atomically), or served (`--listen`).

use std::{net::SocketAddr, path::PathBuf};

use crate::paths::IfaceName;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Interface (default: every one fw is attached to).
    #[arg(long = "iface", short = 'i')]
    pub ifaces: Vec<IfaceName>,
    /// Write to this file (atomically: node_exporter's textfile collector reads *.prom).
    #[arg(long, short = 'o', conflicts_with = "listen")]
    pub output: Option<PathBuf>,
    /// Serve /metrics on this address instead (like `fw serve --no-log`).
    #[arg(long)]
    pub listen: Option<SocketAddr>,
}

pub fn execute(a: Args) -> anyhow::Result<()> {
    if let Some(addr) = a.listen {
        return super::serve::run(addr, &a.ifaces, false);
    }
    let text = crate::metrics::exposition(&a.ifaces)?;
    match a.output {
        None => print!("{text}"),
        Some(path) => {
            let tmp = path.with_extension(format!("tmp.{}", std::process::id()));
            std::fs::write(&tmp, &text)
                .map_err(|e| anyhow::anyhow!("writing {}: {e}", tmp.display()))?;
            std::fs::rename(&tmp, &path)
                .map_err(|e| anyhow::anyhow!("renaming to {}: {e}", path.display()))?;
        }
    }
    Ok(())
}
