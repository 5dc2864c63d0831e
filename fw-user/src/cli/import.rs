//! `fw import iptables FILE [-o OUT.toml]`: iptables-save output or a script of iptables
//! commands, as an fw policy file. Nothing is written unless the whole file imports.

use std::{
    io::{Read as _, Write as _},
    path::{Path, PathBuf},
};

use anyhow::{Context as _, bail};
use clap::Subcommand;

use fw_import::iptables::{self, Family, ImportOptions};
use fw_policy::parse_policy;

#[derive(Debug, Subcommand)]
pub enum ImportCmd {
    /// Translate iptables-save / ip6tables-save output, or a script of iptables commands, into
    /// an fw policy; refuses (naming the line) what fw cannot do the same way.
    Iptables(Args),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum FamilyArg {
    #[value(name = "4")]
    V4,
    #[value(name = "6")]
    V6,
}

impl From<FamilyArg> for Family {
    fn from(f: FamilyArg) -> Self {
        match f {
            FamilyArg::V4 => Family::V4,
            FamilyArg::V6 => Family::V6,
        }
    }
}

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The rules: iptables-save output (e.g. /etc/sysconfig/iptables) or a script with one
    /// iptables command per line; `-` reads standard input.
    pub file: PathBuf,
    /// Write the policy here (default: standard output).
    #[arg(long, short = 'o')]
    pub output: Option<PathBuf>,
    /// Replace OUTPUT if it exists.
    #[arg(long)]
    pub force: bool,
    /// The family of rules the file does not mark (no ip6tables-save header, no ip6tables
    /// command, no address); default: IPv4.
    #[arg(long, value_enum)]
    pub family: Option<FamilyArg>,
}

pub fn execute(c: ImportCmd) -> anyhow::Result<()> {
    match c {
        ImportCmd::Iptables(a) => import_iptables(&a),
    }
}

fn read_input(file: &Path) -> anyhow::Result<(String, String)> {
    if file.as_os_str() == "-" {
        let mut text = String::new();
        std::io::stdin()
            .read_to_string(&mut text)
            .context("<stdin>: cannot read")?;
        return Ok(("<stdin>".into(), text));
    }
    let name = file.display().to_string();
    let text = std::fs::read_to_string(file).map_err(|source| iptables::ImportError::Read {
        file: name.clone(),
        source,
    })?;
    Ok((name, text))
}

fn import_iptables(a: &Args) -> anyhow::Result<()> {
    let output = a.output.as_deref().filter(|o| o.as_os_str() != "-");
    if let Some(out) = output {
        refuse_existing(out, a.force)?;
    }
    let (name, text) = read_input(&a.file)?;
    let opts = ImportOptions {
        family: a.family.map(Family::from),
    };
    let imported = iptables::import(&name, &text, &opts)?;
    // What is written must read back as exactly the policy that was checked.
    let back = parse_policy("<imported policy>", &imported.toml)
        .context("internal error: the imported policy does not parse")?;
    if back != imported.policy {
        bail!("internal error: the imported policy file does not read back as the checked policy");
    }
    match output {
        Some(out) => {
            write_file(out, &imported.toml, a.force)?;
            eprintln!(
                "{name}: wrote {} ({} rules); check it with `fw policy show {}`",
                out.display(),
                imported.policy.rules.len(),
                out.display()
            );
        }
        None => print!("{}", imported.toml),
    }
    for n in &imported.notes {
        eprintln!("note: {n}");
    }
    Ok(())
}

pub(crate) fn refuse_existing(out: &Path, force: bool) -> anyhow::Result<()> {
    if out.exists() && !force {
        bail!(
            "{} exists; nothing written (use --force to replace it)",
            out.display()
        );
    }
    Ok(())
}

/// Write `text` to `out` whole or not at all: a temporary file beside it, renamed over it.
pub(crate) fn write_file(out: &Path, text: &str, force: bool) -> anyhow::Result<()> {
    refuse_existing(out, force)?;
    let dir = out
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let base = out
        .file_name()
        .with_context(|| format!("{}: not a file name", out.display()))?;
    let tmp = dir.join(format!(
        ".{}.fw-tmp-{}",
        base.to_string_lossy(),
        std::process::id()
    ));
    let result = (|| -> std::io::Result<()> {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(text.as_bytes())?;
        f.sync_all()?;
        std::fs::rename(&tmp, out)
    })();
    if let Err(e) = result {
        let _ = std::fs::remove_file(&tmp);
        return Err(crate::Error::io(out, e).into());
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
        let Command::Import(ImportCmd::Iptables(a)) = c.command else {
            panic!("not fw import iptables")
        };
        a
    }

    /// A fresh directory for one test.
    fn scratch(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("fw-import-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn arguments() {
        let a = args(parse(&["import", "iptables", "/etc/sysconfig/iptables"]).unwrap());
        assert_eq!(a.file, PathBuf::from("/etc/sysconfig/iptables"));
        assert!(a.output.is_none() && !a.force && a.family.is_none());
        let a = args(
            parse(&[
                "import", "iptables", "-", "-o", "fw.toml", "--force", "--family", "6",
            ])
            .unwrap(),
        );
        assert_eq!(a.file, PathBuf::from("-"));
        assert_eq!(a.output, Some(PathBuf::from("fw.toml")));
        assert!(a.force);
        assert_eq!(a.family, Some(FamilyArg::V6));
        assert!(parse(&["import", "iptables"]).is_err(), "FILE is required");
        assert!(parse(&["import", "iptables", "f", "--family", "5"]).is_err());
        assert!(parse(&["import", "nftables", "f"]).is_err());
        assert!(parse(&["import"]).is_err());
    }

    #[test]
    fn writes_the_policy_and_refuses_to_overwrite() {
        let d = scratch("ok");
        let input = d.join("iptables");
        std::fs::write(
            &input,
            "*filter\n:INPUT DROP [0:0]\n-A INPUT -p tcp --dport 22 -j ACCEPT\nCOMMIT\n",
        )
        .unwrap();
        let out = d.join("fw.toml");
        let run = |force: bool| {
            import_iptables(&Args {
                file: input.clone(),
                output: Some(out.clone()),
                force,
                family: None,
            })
        };
        run(false).unwrap();
        let p = fw_policy::parse_policy_file(&out).unwrap();
        assert_eq!(p.rules.len(), 1);
        let e = run(false).unwrap_err().to_string();
        assert!(e.contains("exists") && e.contains("--force"), "{e}");
        run(true).unwrap();
        let leftovers: Vec<_> = std::fs::read_dir(&d)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(leftovers.len(), 2, "{leftovers:?}");
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn nothing_is_written_when_a_line_cannot_be_imported() {
        let d = scratch("bad");
        let input = d.join("rules.sh");
        std::fs::write(
            &input,
            "iptables -P INPUT DROP\niptables -A INPUT -p tcp --dport 22 -j ACCEPT\niptables -A INPUT -p tcp --dport 80 -m limit --limit 10/s -j ACCEPT\n",
        )
        .unwrap();
        let out = d.join("fw.toml");
        let e = import_iptables(&Args {
            file: input.clone(),
            output: Some(out.clone()),
            force: false,
            family: None,
        })
        .unwrap_err();
        let msg = format!("{e:#}");
        assert!(
            msg.contains("rules.sh:3:") && msg.contains("-m limit"),
            "{msg}"
        );
        assert!(!out.exists());
        assert_eq!(std::fs::read_dir(&d).unwrap().count(), 1);
        let e = import_iptables(&Args {
            file: d.join("missing"),
            output: Some(out.clone()),
            force: false,
            family: None,
        })
        .unwrap_err();
        assert!(format!("{e:#}").contains("missing: cannot read"), "{e:#}");
        assert!(!out.exists());
        std::fs::remove_dir_all(&d).unwrap();
    }
}
