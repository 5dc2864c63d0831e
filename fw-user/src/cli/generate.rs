//! `fw completions SHELL`, `fw man [--out DIR]` and (hidden) `fw unit [--serve] --bin PATH`: shell
//! completions, man pages and the systemd unit, generated from the binary itself so that a
//! package ships exactly what this `fw` accepts. `cargo xtask dist` runs them.

use std::{
    fs,
    io::{self, Write as _},
    path::{Path, PathBuf},
};

use anyhow::Context as _;
use clap::{Command, CommandFactory as _};
use clap_complete::Shell;
use clap_mangen::{
    Man,
    roff::{Roff, bold, italic, roman},
};

use super::{Cli, persist};

/// Section 8: system administration commands.
const SECTION: &str = "8";

#[derive(Debug, clap::Args)]
pub struct CompletionsArgs {
    /// The shell to complete `fw` in (e.g. `fw completions bash > /etc/bash_completion.d/fw`).
    #[arg(value_enum)]
    pub shell: Shell,
}

#[derive(Debug, clap::Args)]
pub struct ManArgs {
    /// Write fw.8 and a page per subcommand (fw-up.8, fw-policy-check.8, …) into DIR, instead
    /// of printing fw.8.
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
}

#[derive(Debug, clap::Args)]
pub struct UnitArgs {
    /// The path the unit runs fw from.
    #[arg(long, value_name = "PATH", default_value = persist::INSTALLED_BIN)]
    pub bin: PathBuf,
    /// fw-serve.service (the monitoring daemon) instead of fw.service.
    #[arg(long)]
    pub serve: bool,
}

pub fn execute_completions(a: CompletionsArgs) -> anyhow::Result<()> {
    let mut out = io::stdout().lock();
    clap_complete::generate(a.shell, &mut Cli::command(), "fw", &mut out);
    out.flush().context("writing the completions")
}

pub fn execute_man(a: ManArgs) -> anyhow::Result<()> {
    let Some(dir) = a.out else {
        let pages = man_pages()?;
        let (_, top) = &pages[0];
        return io::stdout()
            .lock()
            .write_all(top)
            .context("writing the man page");
    };
    for path in write_man_pages(&dir)? {
        println!("{}", path.display());
    }
    Ok(())
}

/// Every page into `dir` (created if missing); returns their paths. `fw install` can use it
/// for /usr/local/share/man/man8, so that the unit's Documentation=man:fw(8) resolves.
pub fn write_man_pages(dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let mut out = Vec::new();
    for (name, text) in man_pages()? {
        let path = dir.join(name);
        fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
        out.push(path);
    }
    Ok(out)
}

pub fn execute_unit(a: UnitArgs) -> anyhow::Result<()> {
    if a.serve {
        print!("{}", super::serve::unit_text(&a.bin));
    } else {
        print!("{}", persist::unit_text(&a.bin));
    }
    Ok(())
}

/// Every man page: (file name, roff text); fw.8 first, then one per visible subcommand.
pub fn man_pages() -> anyhow::Result<Vec<(String, Vec<u8>)>> {
    let mut cmd = Cli::command().disable_help_subcommand(true);
    cmd.build();
    let version = cmd.get_version().unwrap_or_default().to_string();
    let mut pages = Vec::new();
    let mut top = render(&cmd, &version)?;
    top.extend_from_slice(top_extra_sections().as_bytes());
    pages.push((format!("fw.{SECTION}"), top));
    let mut stack: Vec<Command> = visible_subcommands(&cmd);
    // The tree is two levels deep; the bound only guards against a cycle that cannot exist.
    for _ in 0..1000 {
        let Some(sub) = stack.pop() else { break };
        stack.extend(visible_subcommands(&sub));
        let man = Man::new(sub.clone()).section(SECTION);
        pages.push((man.get_filename(), render(&sub, &version)?));
    }
    pages[1..].sort_by(|a, b| a.0.cmp(&b.0));
    Ok(pages)
}

fn visible_subcommands(cmd: &Command) -> Vec<Command> {
    cmd.get_subcommands()
        .filter(|s| !s.is_hide_set())
        .cloned()
        .collect()
}

fn render(cmd: &Command, version: &str) -> anyhow::Result<Vec<u8>> {
    let man = Man::new(cmd.clone())
        .section(SECTION)
        .source(format!("fw {version}"))
        .manual("System Administration");
    let mut buf = Vec::new();
    man.render(&mut buf).context("rendering a man page")?;
    Ok(buf)
}

/// What fw(8) says beyond the option list: files, the boot unit, requirements.
fn top_extra_sections() -> String {
    let mut r = Roff::new();
    r.control("SH", ["POLICY FILE"]);
    r.text([roman(
        "A TOML file: [options] and [[allow]] entries (ports, proto, from, comment); \
         everything else addressed to the host is dropped. ",
    )]);
    r.text([
        bold("fw policy default"),
        roman(" prints the embedded default with comments, "),
        bold("fw policy check"),
        roman(" validates a file and "),
        bold("fw policy show"),
        roman(" says in words what it lets in."),
    ]);
    files_section(&mut r);
    systemd_section(&mut r);
    r.control("SH", ["REQUIREMENTS"]);
    r.text([roman(
        "Linux 5.15 or newer: XDP through a bpf_link (5.9), the BPF ring buffer (5.8), \
         bpf_ktime_get_coarse_ns (5.11); the egress recorder attaches through TCX (6.6) or a \
         clsact qdisc. Root, or the capabilities CAP_BPF and CAP_NET_ADMIN (CAP_SYS_ADMIN to \
         mount bpffs on /sys/fs/bpf, and on kernels without CAP_BPF; CAP_PERFMON lets the \
         verifier accept the program without Spectre hardening).",
    )]);
    r.control("SH", ["EXIT STATUS"]);
    r.text([roman(
        "0 on success; 1 on any error, which is printed after \"fw: error:\". fw policy check \
         exits 1 if the file is invalid.",
    )]);
    r.control("SH", ["SEE ALSO"]);
    r.text([
        bold("fw-up"),
        roman("(8), "),
        bold("fw-status"),
        roman("(8), "),
        bold("fw-apply"),
        roman("(8), "),
        bold("systemctl"),
        roman("(1), "),
        bold("bpftool"),
        roman("(8), "),
        bold("iptables"),
        roman("(8)"),
    ]);
    let preamble = Roff::new().render();
    let text = r.render();
    text.strip_prefix(&preamble).unwrap_or(&text).to_string()
}

fn files_section(r: &mut Roff) {
    r.control("SH", ["FILES"]);
    let entries = [
        (
            crate::persist::DEFAULT_FILE,
            "The saved policy and its interfaces: written by fw save, read by fw restore and \
             the boot unit.",
        ),
        (
            "/sys/fs/bpf/fw/",
            "Pins of the attached programs and their maps (bpffs), per network namespace and \
             interface. They keep the filter attached after fw exits.",
        ),
        (
            "/run/fw/",
            "Runtime state: rule comments, the policy's source, a pending fw apply --confirm.",
        ),
    ];
    for (path, what) in entries {
        r.control("TP", []);
        r.text([italic(path)]);
        r.text([roman(what)]);
    }
}

fn systemd_section(r: &mut Roff) {
    r.control("SH", ["BOOT"]);
    r.text([
        bold("fw.service"),
        roman(" runs "),
        bold(format!("fw restore {}", crate::persist::DEFAULT_FILE)),
        roman(
            " at boot, before the network comes up. Enable it once the file holds the \
             interfaces and policy you want: ",
        ),
        bold("fw up --iface IF"),
        roman(", "),
        bold("fw save"),
        roman(", "),
        bold("systemctl enable fw"),
        roman(". "),
        bold("systemctl reload fw"),
        roman(
            " re-applies the saved file atomically. Stopping or restarting the unit leaves \
             the filter attached (so a restart opens no window); ",
        ),
        bold("fw down"),
        roman(" removes it."),
    ]);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn man_pages_cover_every_visible_subcommand_in_section_8() {
        let pages = man_pages().unwrap();
        let names: Vec<&str> = pages.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names[0], "fw.8");
        for n in [
            "fw-up.8",
            "fw-down.8",
            "fw-policy-check.8",
            "fw-completions.8",
        ] {
            assert!(names.contains(&n), "{n} missing from {names:?}");
        }
        assert!(!names.iter().any(|n| n.contains("rollback-timer")));
        assert!(!names.iter().any(|n| n.contains("unit")), "{names:?}");
        let top = String::from_utf8(pages[0].1.clone()).unwrap();
        assert!(top.starts_with(".ie"), "one apostrophe preamble: {top}");
        assert_eq!(top.matches(".ie \\n(.g").count(), 1);
        assert!(top.contains(".TH fw 8"), "{top}");
        assert!(top.contains("FILES") && top.contains("/etc/fw/fw.toml"));
    }

    #[test]
    fn completions_name_the_subcommands() {
        for shell in [Shell::Bash, Shell::Zsh, Shell::Fish] {
            let mut buf = Vec::new();
            clap_complete::generate(shell, &mut Cli::command(), "fw", &mut buf);
            let text = String::from_utf8(buf).unwrap();
            for sub in ["up", "down", "status", "restore"] {
                assert!(text.contains(sub), "{shell}: no {sub}");
            }
        }
    }
}
