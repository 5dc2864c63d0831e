//! `fw-bench`: fw's benchmark suite (issue 6). Normally run through `cargo xtask bench
//! [--quick]`, which builds it in release mode and runs it as root. Needs root, bpffs,
//! iptables-legacy, nftables, xdp-tools and iperf3 (`cargo xtask setup` installs them).

use fw_bench as bench;

use std::{path::PathBuf, process::ExitCode, time::Duration};

fn usage() -> ! {
    eprintln!(
        "usage: fw-bench [--quick] [--out DIR] [--only cost,observe,e2e,scale,live,iperf,blocklist,attack] [--rounds N] [--repeat N] [--seconds S] [--from-json FILE]\n\
         Writes DIR/bench/results.json, DIR/bench/*.svg and DIR/benchmarks.md (default DIR: docs for a full run, \
         target/bench-quick with --quick). --from-json only redoes the tables, plots and report of an earlier run."
    );
    std::process::exit(2)
}

fn main() -> ExitCode {
    let mut args = std::env::args().skip(1);
    let mut quick = false;
    let mut out: Option<PathBuf> = None;
    let mut only = Vec::new();
    let mut rounds = None;
    let mut repeat = None;
    let mut seconds = None;
    let mut from_json: Option<PathBuf> = None;
    while let Some(a) = args.next() {
        let mut val = || args.next().unwrap_or_else(|| usage());
        match a.as_str() {
            "--quick" => quick = true,
            "--out" => out = Some(PathBuf::from(val())),
            "--only" => only = val().split(',').map(str::to_string).collect(),
            "--rounds" => rounds = Some(val().parse().unwrap_or_else(|_| usage())),
            "--repeat" => repeat = Some(val().parse().unwrap_or_else(|_| usage())),
            "--seconds" => seconds = Some(val().parse::<f64>().unwrap_or_else(|_| usage())),
            "--from-json" => from_json = Some(PathBuf::from(val())),
            _ => usage(),
        }
    }
    let root = fw_lab::workspace_root();
    let opts = bench::Opts {
        quick,
        rounds: rounds.unwrap_or(if quick { 2 } else { 5 }),
        repeat: repeat.unwrap_or(1_000_000),
        flood_time: Duration::from_secs_f64(seconds.unwrap_or(if quick { 0.3 } else { 1.0 })),
        out: out.unwrap_or_else(|| {
            if quick {
                root.join("target/bench-quick")
            } else {
                root.join("docs")
            }
        }),
        only,
    };
    let result = match from_json {
        Some(j) => bench::rewrite(&opts, &j),
        None => bench::run(opts),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("fw-bench: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
