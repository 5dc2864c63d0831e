//! `fw import iptables|ufw FILE [-o OUT.toml]`: iptables-save output, a script of iptables
//! commands, or ufw's rules, as an fw policy file. Nothing is written unless the whole file
//! imports; otherwise every problem of the file is listed, in line order.

use std::{
    io::{Read as _, Write as _},
    path::{Path, PathBuf},
};

use anyhow::{Context as _, bail};
use clap::Subcommand;

use fw_import::{Family, ImportError, ImportOptions, iptables};
use fw_policy::parse_policy;

#[derive(Debug, Subcommand)]
pub enum ImportCmd {
    /// Translate iptables-save / ip6tables-save output, or a script of iptables commands, into
    /// an fw policy; refuses (naming every line) what fw cannot do the same way.
    Iptables(Args),
    /// Translate ufw's rules (/etc/ufw/user.rules and user6.rules, or `ufw status numbered`
    /// output) into an fw policy, checked the same way.
    Ufw(UfwArgs),
    /// Translate an nftables rule set (`nft -j list ruleset`) into an fw policy, checked the
    /// same way.
    Nft(NftArgs),
}

#[derive(Debug, clap::Args)]
pub struct UfwArgs {
    /// user.rules and/or user6.rules (or a file with `ufw status numbered` output); `-` reads
    /// standard input.
    #[arg(required = true)]
    pub files: Vec<PathBuf>,
    /// Write the policy here (default: standard output).
    #[arg(long, short = 'o')]
    pub output: Option<PathBuf>,
    /// Replace OUTPUT if it exists.
    #[arg(long)]
    pub force: bool,
    /// The interface fw will filter (for rules with `on IFACE`).
    #[arg(long)]
    pub iface: Option<String>,
}

#[derive(Debug, clap::Args)]
pub struct NftArgs {
    /// `nft -j list ruleset` output; `-` reads standard input.
    pub file: PathBuf,
    /// Write the policy here (default: standard output).
    #[arg(long, short = 'o')]
    pub output: Option<PathBuf>,
    /// Replace OUTPUT if it exists.
    #[arg(long)]
    pub force: bool,
    /// The interface fw will filter (for rules with `iifname`).
    #[arg(long)]
    pub iface: Option<String>,
    /// Import the input side of rule sets that also filter outgoing traffic.
    #[arg(long)]
    pub ignore_output: bool,
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
    /// The interface fw will filter: rules with `-i IFACE` apply, rules for other interfaces
    /// do not; the policy gets `interfaces = [IFACE]`.
    #[arg(long)]
    pub iface: Option<String>,
    /// Import the INPUT side of rules that also filter outgoing traffic (OUTPUT DROP), which
    /// fw does not do: everything the host sends is then let out.
    #[arg(long)]
    pub ignore_output: bool,
}

impl Args {
    fn options(&self) -> ImportOptions {
        ImportOptions {
            family: self.family.map(Family::from),
            iface: self.iface.clone(),
            ignore_output: self.ignore_output,
        }
    }
}

pub fn execute(c: ImportCmd) -> anyhow::Result<()> {
    match c {
        ImportCmd::Iptables(a) => import_iptables(&a),
        ImportCmd::Ufw(a) => import_ufw(&a),
        ImportCmd::Nft(a) => import_nft(&a),
    }
}

/// The file's text, and a note when it is not valid UTF-8 (read with replacement characters:
/// only comments can hold other text, and a rule that does fails with its line named).
fn read_input(file: &Path) -> anyhow::Result<(String, String, Option<String>)> {
    let (name, bytes) = if file.as_os_str() == "-" {
        let mut b = Vec::new();
        std::io::stdin()
            .read_to_end(&mut b)
            .map_err(|error| ImportError::Read {
                file: "<stdin>".into(),
                error,
            })?;
        ("<stdin>".to_string(), b)
    } else {
        let name = file.display().to_string();
        let b = std::fs::read(file).map_err(|error| ImportError::Read {
            file: name.clone(),
            error,
        })?;
        (name, b)
    };
    match String::from_utf8(bytes) {
        Ok(t) => Ok((name, t, None)),
        Err(e) => {
            let at = e.utf8_error().valid_up_to();
            let bytes = e.into_bytes();
            let line = bytes[..at].iter().filter(|b| **b == b'\n').count() + 1;
            let note = format!(
                "{name} is not UTF-8 text (first at byte {at}, line {line}): read with replacement characters (U+FFFD)"
            );
            Ok((
                name,
                String::from_utf8_lossy(&bytes).into_owned(),
                Some(note),
            ))
        }
    }
}

fn import_iptables(a: &Args) -> anyhow::Result<()> {
    let output = output_path(a.output.as_deref());
    if let Some(out) = output {
        refuse_existing(out, a.force)?;
    }
    let (name, text, lossy) = read_input(&a.file)?;
    let imported = iptables::import(&name, &text, &a.options())?;
    finish(&name, imported, output, a.force, lossy)
}

fn import_ufw(a: &UfwArgs) -> anyhow::Result<()> {
    let output = output_path(a.output.as_deref());
    if let Some(out) = output {
        refuse_existing(out, a.force)?;
    }
    let mut inputs = Vec::new();
    let mut lossy_notes = Vec::new();
    for f in &a.files {
        let (name, text, lossy) = read_input(f)?;
        lossy_notes.extend(lossy);
        inputs.push((name, text));
    }
    let opts = ImportOptions {
        iface: a.iface.clone(),
        ..ImportOptions::default()
    };
    let imported = fw_import::ufw::import(&inputs, &opts)?;
    let name = inputs
        .iter()
        .map(|(n, _)| n.as_str())
        .collect::<Vec<_>>()
        .join(" + ");
    finish(
        &name,
        imported,
        output,
        a.force,
        lossy_notes.into_iter().next(),
    )
}

fn import_nft(a: &NftArgs) -> anyhow::Result<()> {
    let output = output_path(a.output.as_deref());
    if let Some(out) = output {
        refuse_existing(out, a.force)?;
    }
    let (name, text, lossy) = read_input(&a.file)?;
    let opts = ImportOptions {
        iface: a.iface.clone(),
        ignore_output: a.ignore_output,
        ..ImportOptions::default()
    };
    let imported = fw_import::nft::import(&name, &text, &opts)?;
    finish(&name, imported, output, a.force, lossy)
}

/// `-o -` is standard output; so is no `-o`.
fn output_path(o: Option<&Path>) -> Option<&Path> {
    o.filter(|o| o.as_os_str() != "-")
}

/// Check the policy reads back, write it, print the notes.
fn finish(
    name: &str,
    mut imported: fw_import::Imported,
    output: Option<&Path>,
    force: bool,
    lossy: Option<String>,
) -> anyhow::Result<()> {
    // What is written must read back as exactly the policy that was checked.
    let back = parse_policy("<imported policy>", &imported.toml)
        .context("internal error: the imported policy does not parse")?;
    if back != imported.policy {
        bail!("internal error: the imported policy file does not read back as the checked policy");
    }
    imported.notes.extend(lossy);
    match output {
        Some(out) => {
            write_file(out, &imported.toml, force)?;
            let check = if is_special(out) {
                String::new()
            } else {
                format!("; check it with `fw policy show {}`", out.display())
            };
            eprintln!(
                "{name}: wrote {} ({} rules){check}",
                out.display(),
                imported.policy.rules.len(),
            );
        }
        None => print!("{}", imported.toml),
    }
    for n in &imported.notes {
        eprintln!("note: {n}");
    }
    Ok(())
}

/// A regular file that exists is not replaced without `--force`; a device or pipe
/// (`/dev/stdout`) is written to as it is.
pub(crate) fn refuse_existing(out: &Path, force: bool) -> anyhow::Result<()> {
    if is_special(out) {
        return Ok(());
    }
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
    if is_special(out) {
        return std::fs::OpenOptions::new()
            .write(true)
            .open(out)
            .and_then(|mut f| f.write_all(text.as_bytes()))
            .map_err(|e| crate::Error::io(out, e).into());
    }
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

/// A character device, pipe or socket (not a regular file or directory).
fn is_special(p: &Path) -> bool {
    std::fs::metadata(p).is_ok_and(|m| !m.is_file() && !m.is_dir())
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
        let a = args(
            parse(&[
                "import",
                "iptables",
                "f",
                "--iface",
                "eth0",
                "--ignore-output",
            ])
            .unwrap(),
        );
        assert_eq!(a.iface.as_deref(), Some("eth0"));
        assert!(a.ignore_output);
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
                iface: None,
                ignore_output: false,
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
    fn dev_stdout_is_written_to_and_not_utf8_input_is_read_with_a_note() {
        let d = scratch("special");
        let input = d.join("latin1.rules");
        let mut bytes = b"*filter\n:INPUT DROP [0:0]\n# caf\xe9 admin rule\n".to_vec();
        bytes.extend_from_slice(b"-A INPUT -p tcp --dport 22 -j ACCEPT\nCOMMIT\n");
        std::fs::write(&input, &bytes).unwrap();
        let (name, text, note) = read_input(&input).unwrap();
        assert!(text.contains("caf\u{fffd}"), "{text}");
        let note = note.unwrap();
        assert!(
            note.contains("byte 31") && note.contains("line 3"),
            "{note}"
        );
        assert!(name.ends_with("latin1.rules"));
        // A character device is written to in place, without --force and without a temp file.
        let out = Path::new("/dev/null");
        import_iptables(&Args {
            file: input.clone(),
            output: Some(out.to_path_buf()),
            force: false,
            family: None,
            iface: None,
            ignore_output: false,
        })
        .unwrap();
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn nothing_is_written_when_a_line_cannot_be_imported() {
        let d = scratch("bad");
        let input = d.join("rules.sh");
        std::fs::write(
            &input,
            "iptables -P INPUT DROP\niptables -A INPUT -p tcp --dport 22 -j ACCEPT\niptables -A INPUT -p tcp --dport 80 -m connlimit --connlimit-upto 10 -j ACCEPT\n",
        )
        .unwrap();
        let out = d.join("fw.toml");
        let e = import_iptables(&Args {
            file: input.clone(),
            output: Some(out.clone()),
            force: false,
            family: None,
            iface: None,
            ignore_output: false,
        })
        .unwrap_err();
        let msg = format!("{e:#}");
        assert!(
            msg.contains("rules.sh:3:") && msg.contains("-m connlimit"),
            "{msg}"
        );
        assert!(msg.contains("not how many are open at once"), "{msg}");
        assert!(!out.exists());
        assert_eq!(std::fs::read_dir(&d).unwrap().count(), 1);
        let e = import_iptables(&Args {
            file: d.join("missing"),
            output: Some(out.clone()),
            force: false,
            family: None,
            iface: None,
            ignore_output: false,
        })
        .unwrap_err();
        let msg = format!("{e:#}");
        assert!(msg.contains("missing: cannot read"), "{msg}");
        // The OS error once, not twice.
        assert_eq!(msg.matches("os error 2").count(), 1, "{msg}");
        assert!(!out.exists());
        std::fs::remove_dir_all(&d).unwrap();
    }
}
