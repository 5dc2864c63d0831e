//! `fw policy check|show|default`.

use std::path::PathBuf;

use clap::Subcommand;

use fw_policy::{SEED_POLICY, parse_policy_file};

#[derive(Debug, Subcommand)]
pub enum PolicyCmd {
    /// Validate a policy file; errors name the file, line and value. Exit status 1 if invalid.
    Check { file: PathBuf },
    /// Say in plain words what a policy file (default: the embedded seed policy) lets in.
    Show { file: Option<PathBuf> },
    /// Print the embedded default policy (the seed tutorial's), to start your own from.
    Default,
}

pub fn execute(c: PolicyCmd) -> anyhow::Result<()> {
    match c {
        PolicyCmd::Check { file } => {
            let p = parse_policy_file(&file)?;
            println!("{}: OK, {} rules", file.display(), p.rules.len());
            Ok(())
        }
        PolicyCmd::Show { file } => {
            let (p, source) = super::load_policy(file.as_ref())?;
            let blocked = p.block_sources().count();
            if blocked > 0 {
                println!(
                    "{source}: first, {blocked} blocked sources ([[block]]) are dropped on every port"
                );
            }
            if p.default == fw_policy::DefaultAction::Accept {
                println!(
                    "{source}: default ACCEPT: incoming traffic passes unless a block list, a ban, a scan/flag check or a rate limit drops it; the rules:"
                );
            } else {
                println!("{source}: incoming traffic is dropped unless it is one of:");
            }
            for line in p.describe() {
                println!("  - {line}");
            }
            println!("Outgoing traffic is not filtered. Loopback (lo) is not filtered.");
            Ok(())
        }
        PolicyCmd::Default => {
            print!("{SEED_POLICY}");
            Ok(())
        }
    }
}
