//! `cargo xtask <task>`: fw's setup, build, run, test, demo, diff and bench, so a newcomer needs two
//! commands (`cargo xtask demo`, `cargo xtask test`) and CI runs exactly what the README says.

mod bench;
mod build_run;
mod demo;
mod diff;
mod dist;
mod lab;
mod proc;
mod setup;
mod test;
mod vm;

use std::{
    path::{Path, PathBuf},
    process::ExitCode,
};

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "cargo xtask",
    bin_name = "cargo xtask",
    about = "fw's development tasks"
)]
struct Cli {
    #[command(subcommand)]
    task: Task,
}

#[derive(Subcommand)]
enum Task {
    /// Install what fw needs (nightly rust-src, bpf-linker, bpffs, Debian packages); idempotent.
    Setup,
    /// Build the `fw` binary with its embedded XDP program.
    Build {
        #[arg(long)]
        release: bool,
    },
    /// Build, then run `fw run ARGS` in the foreground (e.g. `cargo xtask run -- --iface eth0 --log`).
    Run {
        #[arg(long)]
        release: bool,
        /// Arguments for `fw run` (after `--`).
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Run every test tier (unit, kernel, end-to-end; needs root), then check nothing is left behind.
    Test {
        /// Host unit tests only (no root needed).
        #[arg(long)]
        unit: bool,
        /// Passed on to `cargo test` (after `--`), e.g. a test name filter.
        #[arg(last = true)]
        extra: Vec<String>,
    },
    /// Show fw at work between two throwaway network namespaces (root); also a smoke test.
    Demo,
    /// Differential test against iptables (root): the same packets to fw and to iptables with the
    /// same policy; writes docs/differential.md.
    Diff {
        /// Packets per policy (default 100,000).
        #[arg(long)]
        packets: Option<usize>,
        /// Compare these instead of the built-in set: FILE.toml (fw policy, against its export),
        /// an iptables-save file (against its import), or IPT=FW.toml.
        #[arg(long, num_args = 1..)]
        policy: Vec<String>,
        /// Passed on to fw-diff (after `--`), e.g. `--case seed` or `--show tcp-flags`.
        #[arg(last = true)]
        extra: Vec<String>,
    },
    /// Packages in target/dist/: a static (musl) stripped `fw` with its XDP programs, a .deb and
    /// a .tar.gz (man pages, completions, systemd unit, default policy).
    Dist {
        /// Then install the .deb on this machine with dpkg, check it and purge it (root; `cargo
        /// xtask test` runs this after the other tiers).
        #[arg(long)]
        check: bool,
    },
    /// Boot a Debian kernel in QEMU and run fw's guest test there (root): fw up, traffic,
    /// status, conns, replace, down, each check printed.
    Vm {
        /// Debian kernel series: 6.1 (Debian 12's own, no TCX; the default) or 6.12
        /// (bookworm-security, has TCX).
        #[arg(long)]
        kernel: Option<String>,
        /// The fw binary to test (default: build it like `cargo xtask build`).
        #[arg(long, value_name = "PATH")]
        fw: Option<PathBuf>,
        /// Test fw.service under systemd instead: boot this machine's root file system
        /// (read-only, under an overlay) with systemd, install the .deb of `cargo xtask dist`,
        /// start, reload, restart and stop the unit.
        #[arg(long)]
        unit: bool,
    },
    /// Benchmarks against iptables, nftables and xdp-filter (root); writes docs/benchmarks.md.
    Bench {
        /// Fewer rounds and scale points (under two minutes); results go to target/bench-quick/.
        #[arg(long)]
        quick: bool,
        /// Passed on to fw-bench (after `--`), e.g. `--only cost,e2e`.
        #[arg(last = true)]
        extra: Vec<String>,
    },
}

/// The workspace root (xtask sits one level below it).
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives inside the workspace")
        .to_path_buf()
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    proc::install_signal_handlers();
    let result = match cli.task {
        Task::Setup => setup::run(setup::Steps::ALL).map(|()| {
            println!("[setup] done: everything fw needs is installed");
            true
        }),
        Task::Build { release } => build_run::build(release).map(|_| true),
        Task::Run { release, args } => build_run::run(release, args).map(|()| true),
        Task::Test { unit, extra } => test::run(test::Args { unit, extra }),
        Task::Demo => demo::run(),
        Task::Diff {
            packets,
            policy,
            extra,
        } => diff::run(diff::Args {
            packets,
            policies: policy,
            extra,
        }),
        Task::Dist { check } => dist::run(dist::Args { check }),
        Task::Vm { kernel, fw, unit } => vm::run(vm::Args { kernel, fw, unit }),
        Task::Bench { quick, extra } => bench::run(bench::Args { quick, extra }),
    };
    match result {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            if proc::is_interrupted(&e) {
                eprintln!("xtask: interrupted");
                return ExitCode::from(130);
            }
            eprintln!("xtask: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
