//! `fw capture`: packets fw dropped (and with `--passed`, passed) as a pcap file that tcpdump
//! and Wireshark read.

use std::{fs::File, io::BufWriter, path::PathBuf, time::Duration};

use fw_policy::Cidr;

use crate::{
    capture::{CaptureSpec, DEFAULT_RATE, reason_by_name, run},
    droplog::{Filter, text_line},
    paths::IfaceName,
};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Interface (default: the one fw is attached to, if there is only one).
    #[arg(long = "iface", short = 'i')]
    pub iface: Option<IfaceName>,
    /// Only these reasons (repeatable; default: every reason that drops).
    #[arg(long = "reason", value_parser = super::log::parse_reason)]
    pub reasons: Vec<String>,
    /// Also packets that passed (allow rules, established, ...).
    #[arg(long)]
    pub passed: bool,
    /// Only packets to or from this port.
    #[arg(long)]
    pub port: Option<u16>,
    /// Only packets from this address or CIDR.
    #[arg(long)]
    pub from: Option<Cidr>,
    /// Stop after N packets.
    #[arg(short = 'c', long = "count")]
    pub count: Option<u64>,
    /// Stop after this many seconds.
    #[arg(long)]
    pub duration: Option<u64>,
    /// Packets per second the kernel hands over at most (bounds the cost during a flood).
    #[arg(long, default_value_t = DEFAULT_RATE, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub rate: u32,
    /// The pcap file to write ("-": standard output).
    #[arg(short = 'w', long = "write")]
    pub file: PathBuf,
    /// Print a line per packet on standard error.
    #[arg(short = 'v', long)]
    pub verbose: bool,
    /// The summary as JSON on standard output (not with -w -).
    #[arg(long)]
    pub json: bool,
}

pub fn execute(a: Args) -> anyhow::Result<()> {
    let iface = match a.iface {
        Some(i) => i,
        None => {
            let all = super::target_ifaces(&[])?;
            if all.len() != 1 {
                anyhow::bail!(
                    "fw is attached to {} interfaces; say which with --iface",
                    all.len()
                );
            }
            all[0].clone()
        }
    };
    let to_stdout = a.file.as_os_str() == "-";
    if to_stdout && a.json {
        anyhow::bail!("--json prints to standard output, which -w - already uses");
    }
    let spec = CaptureSpec {
        reasons: a
            .reasons
            .iter()
            .map(|r| reason_by_name(r))
            .collect::<Result<_, _>>()
            .map_err(anyhow::Error::msg)?,
        passed: a.passed,
        filter: Filter {
            reasons: Vec::new(),
            port: a.port,
            from: a.from,
        },
        count: a.count,
        duration: a.duration.map(Duration::from_secs),
        rate: a.rate,
    };
    crate::serve::install_stop_handler();
    let out: Box<dyn std::io::Write> = if to_stdout {
        Box::new(std::io::stdout().lock())
    } else {
        let f = File::create(&a.file)
            .map_err(|e| anyhow::anyhow!("creating {}: {e}", a.file.display()))?;
        Box::new(BufWriter::new(f))
    };
    let ready = || {
        eprintln!(
            "fw: capturing on {iface} into {} (Ctrl-C stops)",
            a.file.display()
        );
    };
    let verbose = a.verbose;
    let (summary, _) = run(
        &iface,
        &spec,
        out,
        &crate::serve::stopped,
        &ready,
        &mut |e| {
            if verbose {
                eprintln!("{}", text_line(e));
            }
        },
    )?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&summary)?);
    } else {
        eprintln!(
            "fw: {} packets captured{}{}",
            summary.packets,
            if summary.suppressed + summary.lost > 0 {
                format!(
                    "; {} held back by --rate, {} lost (ring full)",
                    summary.suppressed, summary.lost
                )
            } else {
                String::new()
            },
            if summary.filtered_out > 0 {
                format!("; {} did not match --port/--from", summary.filtered_out)
            } else {
                String::new()
            }
        );
    }
    Ok(())
}
