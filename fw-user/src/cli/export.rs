//! `fw export iptables|nft [--policy FILE]`: a policy as iptables-save rules or an nftables
//! rule set, for comparison and for running iptables/nftables and fw side by side.

use std::path::PathBuf;

use clap::Subcommand;

use fw_import::iptables::{self, Family};

#[derive(Debug, Subcommand)]
pub enum ExportCmd {
    /// Write a policy as iptables-save rules (iptables-restore input), in the seed tutorial's
    /// order; `fw import iptables` reads them back to the same policy.
    Iptables(Args),
    /// Write a policy as an nftables rule set (`nft -f` input, one inet table for both
    /// families), in the same order as `fw export iptables`.
    Nft(NftArgs),
}

#[derive(Debug, clap::Args)]
pub struct NftArgs {
    /// Policy file (TOML); default: the embedded seed policy.
    #[arg(long, short = 'p')]
    pub policy: Option<PathBuf>,
    /// Write here (default: standard output).
    #[arg(long, short = 'o')]
    pub output: Option<PathBuf>,
    /// Replace OUTPUT if it exists.
    #[arg(long)]
    pub force: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Families {
    /// iptables rules only.
    #[value(name = "4")]
    V4,
    /// ip6tables rules only.
    #[value(name = "6")]
    V6,
    /// Both, as two sections with their own headers (load each with its tool).
    Both,
}

impl Families {
    pub fn list(self) -> &'static [Family] {
        match self {
            Families::V4 => &[Family::V4],
            Families::V6 => &[Family::V6],
            Families::Both => &[Family::V4, Family::V6],
        }
    }
}

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Policy file (TOML); default: the embedded seed policy.
    #[arg(long, short = 'p')]
    pub policy: Option<PathBuf>,
    /// Which rules to write.
    #[arg(long, value_enum, default_value_t = Families::Both)]
    pub family: Families,
    /// Write here (default: standard output).
    #[arg(long, short = 'o')]
    pub output: Option<PathBuf>,
    /// Replace OUTPUT if it exists.
    #[arg(long)]
    pub force: bool,
}

pub fn execute(c: ExportCmd) -> anyhow::Result<()> {
    match c {
        ExportCmd::Iptables(a) => export_iptables(&a),
        ExportCmd::Nft(a) => export_nft(&a),
    }
}

fn export_iptables(a: &Args) -> anyhow::Result<()> {
    let output = a.output.as_deref().filter(|o| o.as_os_str() != "-");
    if let Some(out) = output {
        super::import::refuse_existing(out, a.force)?;
    }
    let (policy, source) = super::load_policy(a.policy.as_ref())?;
    let text = iptables::export(&policy, a.family.list(), &source);
    match output {
        Some(out) => {
            super::import::write_file(out, &text, a.force)?;
            eprintln!("{source}: wrote {}", out.display());
        }
        None => print!("{text}"),
    }
    Ok(())
}

fn export_nft(a: &NftArgs) -> anyhow::Result<()> {
    let output = a.output.as_deref().filter(|o| o.as_os_str() != "-");
    if let Some(out) = output {
        super::import::refuse_existing(out, a.force)?;
    }
    let (policy, source) = super::load_policy(a.policy.as_ref())?;
    let text = fw_import::nft_export::export(&policy, &source);
    match output {
        Some(out) => {
            super::import::write_file(out, &text, a.force)?;
            eprintln!("{source}: wrote {}", out.display());
        }
        None => print!("{text}"),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use clap::Parser as _;

    use super::*;
    use crate::cli::{Cli, Command};

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("fw").chain(args.iter().copied()))
    }

    fn args(c: Cli) -> Args {
        let Command::Export(ExportCmd::Iptables(a)) = c.command else {
            panic!("not fw export iptables")
        };
        a
    }

    #[test]
    fn arguments() {
        let a = args(parse(&["export", "iptables"]).unwrap());
        assert!(a.policy.is_none() && a.output.is_none() && !a.force);
        assert_eq!(a.family, Families::Both);
        let a = args(
            parse(&[
                "export", "iptables", "-p", "p.toml", "--family", "4", "-o", "rules.v4",
            ])
            .unwrap(),
        );
        assert_eq!(a.policy, Some(PathBuf::from("p.toml")));
        assert_eq!(a.family.list(), [Family::V4]);
        assert_eq!(a.output, Some(PathBuf::from("rules.v4")));
        let a = args(parse(&["export", "iptables", "--family", "6"]).unwrap());
        assert_eq!(a.family.list(), [Family::V6]);
        assert!(parse(&["export", "iptables", "--family", "ipv4"]).is_err());
        assert!(parse(&["export", "iptables", "extra"]).is_err());
        let Command::Export(ExportCmd::Nft(n)) =
            parse(&["export", "nft", "-o", "fw.nft"]).unwrap().command
        else {
            panic!("not fw export nft")
        };
        assert_eq!(n.output, Some(PathBuf::from("fw.nft")));
    }

    #[test]
    fn writes_a_file_that_imports_back() {
        let d = std::env::temp_dir().join(format!("fw-export-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        let out = d.join("rules");
        let run = |force: bool| {
            export_iptables(&Args {
                policy: None,
                family: Families::Both,
                output: Some(out.clone()),
                force,
            })
        };
        run(false).unwrap();
        assert!(run(false).is_err(), "overwrote without --force");
        let text = std::fs::read_to_string(&out).unwrap();
        let back = iptables::import("rules", &text, &Default::default()).unwrap();
        let seed = fw_policy::parse_policy("seed", fw_policy::SEED_POLICY).unwrap();
        assert_eq!(back.policy, seed);
        std::fs::remove_dir_all(&d).unwrap();
    }
}
