//! `cargo xtask dist --check`: the .deb installed on this machine with dpkg, exercised, removed
//! and purged, and nothing left behind. Files the package would overwrite are moved aside first
//! and put back at the end (`aside`); where the fw *package* is installed already, the check
//! leaves it alone and says so.

use std::{
    collections::BTreeSet,
    fs,
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use anyhow::bail;

use super::{
    VERSION,
    aside::{Aside, Lock},
    assets::{Assets, PACKAGED_BIN},
    deb::{
        BASH_COMPLETION, CONFFILE, FISH_COMPLETION, MAN_DIR, PACKAGE, SERVE_UNIT, UNIT,
        ZSH_COMPLETION,
    },
};
use crate::proc::{self, Output, cmd};

const LOCK: &str = "/run/lock/fw-dist-check.lock";

/// Counts and prints each check; after Ctrl-C, the remaining ones are skipped.
#[derive(Default)]
struct Checks {
    failed: Vec<String>,
    passed: usize,
    interrupted: bool,
}

impl Checks {
    fn check(&mut self, name: &str, r: anyhow::Result<String>) {
        if self.interrupted || fw_lab::signal::interrupted() {
            self.interrupted = true;
            return;
        }
        match r {
            Ok(detail) => {
                self.passed += 1;
                println!("[dist-check] ok   {name}{}", suffix(&detail));
            }
            Err(e) => {
                println!("[dist-check] FAIL {name}: {e:#}");
                self.failed.push(name.to_string());
            }
        }
    }
}

fn suffix(detail: &str) -> String {
    let first = detail.lines().next().unwrap_or("").trim();
    if first.is_empty() {
        String::new()
    } else {
        format!(": {first}")
    }
}

pub fn run(deb: &Path, assets: &Assets) -> anyhow::Result<bool> {
    let started = Instant::now();
    let _lock = Lock::take(Path::new(LOCK), Duration::from_secs(10 * 60))?;
    if let Some(state) = package_state()? {
        println!(
            "[dist-check] SKIPPED: the {PACKAGE} package is on this machine already ({state}); the check would replace it. Remove it (dpkg -P {PACKAGE}) to run the check."
        );
        return Ok(true);
    }
    let (files, dirs) = contents(deb)?;
    let before = traces();
    let store = super::dist_dir().join("check-aside");
    let mut aside = Aside::new(store, PACKAGE, &files, &dirs)?;
    let mut c = Checks::default();
    aside.installed = true;
    c.check("dpkg -i", dpkg(&["--install"], deb));
    installed_checks(&mut c, assets);
    c.check(
        "the postinst attached and enabled nothing",
        unchanged(&before),
    );
    c.check("reinstall keeps an edited conffile", reinstall(deb));
    c.check("dpkg -r keeps only the conffile", remove());
    c.check("dpkg -P", dpkg(&["--purge", PACKAGE], Path::new("")));
    aside.installed = package_state()?.is_some();
    c.check("nothing is left", nothing_left(&files, &dirs, &aside));
    drop(aside);
    if c.interrupted {
        return Err(fw_lab::Error::Interrupted.into());
    }
    println!(
        "[dist-check] {} passed, {} failed in {:.0} s{}",
        c.passed,
        c.failed.len(),
        started.elapsed().as_secs_f64(),
        if c.failed.is_empty() {
            String::new()
        } else {
            format!(": {}", c.failed.join(", "))
        }
    );
    Ok(c.failed.is_empty())
}

fn installed_checks(c: &mut Checks, a: &Assets) {
    c.check("dpkg status", status_is("install ok installed"));
    c.check(
        "fw --version",
        fw(&["--version"]).and_then(|o| {
            let v = o.stdout.trim().to_string();
            if v == format!("fw {VERSION}") {
                Ok(v)
            } else {
                bail!("says {v:?}")
            }
        }),
    );
    c.check(
        "fw policy check /etc/fw/fw.toml",
        fw(&["policy", "check", CONFFILE]).map(|o| o.stdout),
    );
    c.check("conffile", conffile());
    c.check("same files as built", same_as_built(a));
    c.check("systemd-analyze verify", verify_unit());
    c.check("man pages render", man_pages());
    c.check("bash completion", bash_completion());
    c.check(
        "zsh completion parses",
        shell(&["zsh", "-n", ZSH_COMPLETION]),
    );
    c.check(
        "fish completion parses",
        shell(&["fish", "--no-execute", FISH_COMPLETION]),
    );
}

/// The package's state when dpkg knows it (installed, or removed with its conffiles), else None.
fn package_state() -> anyhow::Result<Option<String>> {
    let out = cmd("dpkg-query")
        .args(["-W", "-f=${Status}", PACKAGE])
        .run()?;
    let s = out.stdout.trim().to_string();
    Ok((out.success() && !s.is_empty() && !s.ends_with("not-installed")).then_some(s))
}

fn status_is(want: &str) -> anyhow::Result<String> {
    let out = cmd("dpkg-query")
        .args(["-W", "-f=${Status} ${Version}", PACKAGE])
        .ok()?;
    let got = out.stdout.trim();
    if got != format!("{want} {VERSION}") {
        bail!("dpkg-query says {got:?}, want \"{want} {VERSION}\"");
    }
    Ok(got.to_string())
}

/// The package's regular files and directories (absolute), from `dpkg-deb --contents`.
fn contents(deb: &Path) -> anyhow::Result<(Vec<PathBuf>, Vec<PathBuf>)> {
    let out = cmd("dpkg-deb").arg("--contents").arg(deb).ok()?;
    let (mut files, mut dirs) = (Vec::new(), Vec::new());
    for line in out.stdout.lines() {
        let Some(name) = line.split_whitespace().last() else {
            continue;
        };
        let path = name.trim_start_matches('.');
        if path == "/" {
            continue;
        }
        if let Some(dir) = path.strip_suffix('/') {
            dirs.push(PathBuf::from(dir));
        } else {
            files.push(PathBuf::from(path));
        }
    }
    if !files.iter().any(|f| f == Path::new(PACKAGED_BIN)) {
        bail!("{} holds no {PACKAGED_BIN}:\n{}", deb.display(), out.stdout);
    }
    Ok((files, dirs))
}

/// dpkg ARGS [DEB], retried while another dpkg or apt holds its lock (bounded).
fn dpkg(args: &[&str], deb: &Path) -> anyhow::Result<String> {
    for _ in 0..60 {
        let mut cmd = cmd("dpkg")
            .args(["--force-confold"])
            .args(args)
            .env("DEBIAN_FRONTEND", "noninteractive")
            .timeout(Duration::from_secs(300));
        if !deb.as_os_str().is_empty() {
            cmd = cmd.arg(deb);
        }
        let out = cmd.run()?;
        if out.success() {
            return Ok(String::new());
        }
        let all = out.both();
        if !all.contains("lock") {
            bail!("dpkg {} failed:\n{all}", args.join(" "));
        }
        proc::sleep(Duration::from_secs(2))?;
    }
    bail!("dpkg stayed locked by another process for two minutes")
}

fn fw(args: &[&str]) -> anyhow::Result<Output> {
    Ok(cmd(PACKAGED_BIN)
        .args(args)
        .timeout(Duration::from_secs(60))
        .ok()?)
}

fn shell(argv: &[&str]) -> anyhow::Result<String> {
    let out = cmd(argv[0])
        .args(&argv[1..])
        .timeout(Duration::from_secs(60))
        .ok()?;
    Ok(out.both())
}

fn conffile() -> anyhow::Result<String> {
    let out = cmd("dpkg-query")
        .args(["-W", "-f=${Conffiles}", PACKAGE])
        .ok()?;
    if !out
        .stdout
        .lines()
        .any(|l| l.split_whitespace().next() == Some(CONFFILE))
    {
        bail!("{CONFFILE} is not a conffile; dpkg lists:{}", out.stdout);
    }
    Ok(format!("{CONFFILE} is a conffile"))
}

/// The installed binary, unit and policy are the ones built, and the unit is what that binary
/// generates for its own path.
fn same_as_built(a: &Assets) -> anyhow::Result<String> {
    let pairs = [
        (PACKAGED_BIN, &a.bin),
        (UNIT, &a.unit_packaged),
        (SERVE_UNIT, &a.serve_unit_packaged),
        (CONFFILE, &a.policy),
    ];
    for (installed, built) in pairs {
        if fs::read(installed)? != fs::read(built)? {
            bail!("{installed} differs from {}", built.display());
        }
    }
    let unit = fw(&["unit", "--bin", PACKAGED_BIN])?.stdout;
    if unit != fs::read_to_string(UNIT)? {
        bail!("{UNIT} is not what `fw unit --bin {PACKAGED_BIN}` prints");
    }
    let serve = fw(&["unit", "--serve", "--bin", PACKAGED_BIN])?.stdout;
    if serve != fs::read_to_string(SERVE_UNIT)? {
        bail!("{SERVE_UNIT} is not what `fw unit --serve --bin {PACKAGED_BIN}` prints");
    }
    Ok(String::new())
}

/// `systemd-analyze verify` on the installed units: no complaint at all (it also looks up the
/// man pages of Documentation=man:fw(8), man:fw-serve(8) and the executables).
fn verify_unit() -> anyhow::Result<String> {
    let out = cmd("systemd-analyze")
        .args(["verify", UNIT, SERVE_UNIT])
        .env("SYSTEMD_LOG_LEVEL", "notice")
        .timeout(Duration::from_secs(120))
        .run()?;
    let said = out.both();
    if !out.success() || !said.trim().is_empty() {
        bail!("exit status {}:\n{said}", out.code());
    }
    Ok("clean".into())
}

/// Every installed page renders with man-db (groff warnings on), and `man 8 fw` finds fw.8.
fn man_pages() -> anyhow::Result<String> {
    let found = cmd("man").args(["-w", "8", "fw"]).ok()?.stdout;
    if found.trim() != format!("{MAN_DIR}/fw.8.gz") {
        bail!("`man -w 8 fw` finds {:?}", found.trim());
    }
    let mut pages: Vec<PathBuf> = fs::read_dir(MAN_DIR)?
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            let n = p.file_name().unwrap_or_default().to_string_lossy();
            n == "fw.8.gz" || n.starts_with("fw-") && n.ends_with(".8.gz")
        })
        .collect();
    pages.sort();
    for page in &pages {
        let out = cmd("man")
            .args(["--warnings", "-l"])
            .arg(page)
            .env("MANWIDTH", "80")
            .env("LC_ALL", "C.UTF-8")
            .timeout(Duration::from_secs(60))
            .ok()?;
        if !out.stderr.trim().is_empty() || !out.stdout.contains("SYNOPSIS") {
            bail!("{}:\n{}", page.display(), out.both());
        }
    }
    Ok(format!("{} pages", pages.len()))
}

fn bash_completion() -> anyhow::Result<String> {
    shell(&["bash", "-n", BASH_COMPLETION])?;
    let script = format!("source {BASH_COMPLETION} && complete -p fw");
    let out = shell(&["bash", "-c", &script])?;
    Ok(out)
}

/// fw's pins and the systemd links that would enable a unit: what a postinst must not create.
fn traces() -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let sh = "find /sys/fs/bpf/fw /run/fw /etc/systemd/system -name '*fw*' 2>/dev/null";
    if let Ok(o) = cmd("sh").args(["-c", sh]).run() {
        out.extend(o.stdout.lines().map(str::to_string));
    }
    out
}

fn unchanged(before: &BTreeSet<String>) -> anyhow::Result<String> {
    let now = traces();
    let new: Vec<&String> = now.difference(before).collect();
    if !new.is_empty() {
        bail!("new after dpkg -i: {new:?}");
    }
    Ok(String::new())
}

/// An administrator's edit of the conffile survives installing the same package again.
fn reinstall(deb: &Path) -> anyhow::Result<String> {
    let edited = format!(
        "{}# edited by the package check\n",
        fs::read_to_string(CONFFILE)?
    );
    fs::write(CONFFILE, &edited)?;
    dpkg(&["--install"], deb)?;
    if fs::read_to_string(CONFFILE)? != edited {
        bail!("{CONFFILE} lost the edit");
    }
    fw(&["policy", "check", CONFFILE])?;
    status_is("install ok installed")
}

fn remove() -> anyhow::Result<String> {
    dpkg(&["--remove", PACKAGE], Path::new(""))?;
    if [PACKAGED_BIN, UNIT, SERVE_UNIT]
        .iter()
        .any(|f| Path::new(f).exists())
    {
        bail!("{PACKAGED_BIN}, {UNIT} or {SERVE_UNIT} is still there");
    }
    if !Path::new(CONFFILE).exists() {
        bail!("{CONFFILE} went with dpkg -r (only dpkg -P may remove it)");
    }
    status_is("deinstall ok config-files")
}

/// After the purge: dpkg has forgotten the package, and no file of it and no directory it
/// created is left.
fn nothing_left(files: &[PathBuf], dirs: &[PathBuf], aside: &Aside) -> anyhow::Result<String> {
    if let Some(s) = package_state()? {
        bail!("dpkg still knows {PACKAGE}: {s}");
    }
    let mut left: Vec<&Path> = files
        .iter()
        .filter(|f| fs::symlink_metadata(f).is_ok())
        .map(PathBuf::as_path)
        .collect();
    left.extend(
        dirs.iter()
            .filter(|d| d.is_dir() && !aside.existed(d))
            .map(PathBuf::as_path),
    );
    if !left.is_empty() {
        bail!("left behind: {left:?}");
    }
    Ok(format!(
        "{} files, {} directories checked",
        files.len(),
        dirs.len()
    ))
}
