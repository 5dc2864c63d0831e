//! The .deb, laid out in a staging directory and packed with dpkg-deb (no other packaging
//! tools). Maintainer scripts and docs live in packaging/debian/.

use std::{
    fs,
    os::unix::fs::PermissionsExt as _,
    path::{Path, PathBuf},
    time::Duration,
};

use anyhow::{Context as _, bail};

use super::{
    VERSION,
    assets::{Assets, PACKAGED_BIN},
    source_date_epoch,
};
use crate::proc::cmd;

pub const PACKAGE: &str = "fw";
pub const ARCH: &str = "amd64";
/// The shipped default policy: a conffile, so an administrator's edits (and `fw save`) survive
/// upgrades.
pub const CONFFILE: &str = "/etc/fw/fw.toml";
pub const UNIT: &str = "/lib/systemd/system/fw.service";
/// The monitoring daemon's unit (`fw serve`), shipped disabled: `systemctl enable --now fw-serve`.
pub const SERVE_UNIT: &str = "/lib/systemd/system/fw-serve.service";
pub const BASH_COMPLETION: &str = "/usr/share/bash-completion/completions/fw";
pub const ZSH_COMPLETION: &str = "/usr/share/zsh/vendor-completions/_fw";
pub const FISH_COMPLETION: &str = "/usr/share/fish/vendor_completions.d/fw.fish";
pub const MAN_DIR: &str = "/usr/share/man/man8";
pub const DOC_DIR: &str = "/usr/share/doc/fw";
const MAINTAINER: &str = "fw developers <fw-dev@example.invalid>";

const POSTINST: &str = include_str!("../../../packaging/debian/postinst");
const PRERM: &str = include_str!("../../../packaging/debian/prerm");
const POSTRM: &str = include_str!("../../../packaging/debian/postrm");
const README_DEBIAN: &str = include_str!("../../../packaging/debian/README.Debian");
const COPYRIGHT: &str = include_str!("../../../packaging/debian/copyright");

/// Lays out `root` and packs it into `out`/fw_VERSION_amd64.deb.
pub fn build(a: &Assets, root: &Path, out: &Path) -> anyhow::Result<PathBuf> {
    if root.exists() {
        fs::remove_dir_all(root).with_context(|| format!("removing {}", root.display()))?;
    }
    put_file(root, PACKAGED_BIN, &a.bin, 0o755)?;
    put_file(root, UNIT, &a.unit_packaged, 0o644)?;
    put_file(root, SERVE_UNIT, &a.serve_unit_packaged, 0o644)?;
    put_file(root, CONFFILE, &a.policy, 0o644)?;
    put_file(root, BASH_COMPLETION, &a.bash, 0o644)?;
    put_file(root, ZSH_COMPLETION, &a.zsh, 0o644)?;
    put_file(root, FISH_COMPLETION, &a.fish, 0o644)?;
    for page in &a.man {
        let name = page
            .file_name()
            .expect("a page has a name")
            .to_string_lossy();
        put_file(root, &format!("{MAN_DIR}/{name}"), page, 0o644)?;
    }
    put(
        root,
        &format!("{DOC_DIR}/README.Debian"),
        README_DEBIAN,
        0o644,
    )?;
    put(root, &format!("{DOC_DIR}/copyright"), COPYRIGHT, 0o644)?;
    let installed_kib = installed_size_kib(root)?;
    let md5sums = md5sums(root)?;
    put(root, "/DEBIAN/control", &control(installed_kib), 0o644)?;
    put(root, "/DEBIAN/conffiles", &format!("{CONFFILE}\n"), 0o644)?;
    put(root, "/DEBIAN/md5sums", &md5sums, 0o644)?;
    put(root, "/DEBIAN/postinst", POSTINST, 0o755)?;
    put(root, "/DEBIAN/prerm", PRERM, 0o755)?;
    put(root, "/DEBIAN/postrm", POSTRM, 0o755)?;
    let deb = out.join(format!("{PACKAGE}_{VERSION}_{ARCH}.deb"));
    println!("[dist] dpkg-deb --build {}", deb.display());
    cmd("dpkg-deb")
        .args(["--root-owner-group", "-Zxz", "--build"])
        .arg(root)
        .arg(&deb)
        .env("SOURCE_DATE_EPOCH", source_date_epoch())
        .timeout(Duration::from_secs(10 * 60))
        .ok()?;
    Ok(deb)
}

fn control(installed_kib: u64) -> String {
    format!(
        "Package: {PACKAGE}
Version: {VERSION}
Architecture: {ARCH}
Maintainer: {MAINTAINER}
Installed-Size: {installed_kib}
Section: net
Priority: optional
Description: XDP host firewall: default-drop incoming, allowed ports, state
 fw judges every incoming packet in the network driver (XDP), before the
 kernel allocates anything for it: new connections only to the ports a TOML
 policy opens (optionally only from given sources), replies to the host's own
 connections, scan packets and impossible TCP flags dropped. The fw command
 attaches it, edits it live, shows counters and explains its verdicts.
 .
 The binary is static and holds its XDP programs. Installing the package
 attaches nothing: see /usr/share/doc/fw/README.Debian.
"
    )
}

/// `contents` at `root` + `path` with `mode`; parent directories 0755 whatever the umask.
fn put(root: &Path, path: &str, contents: &str, mode: u32) -> anyhow::Result<()> {
    let dest = dest(root, path)?;
    fs::write(&dest, contents).with_context(|| format!("writing {}", dest.display()))?;
    chmod(&dest, mode)
}

fn put_file(root: &Path, path: &str, src: &Path, mode: u32) -> anyhow::Result<()> {
    let dest = dest(root, path)?;
    fs::copy(src, &dest)
        .with_context(|| format!("copying {} to {}", src.display(), dest.display()))?;
    chmod(&dest, mode)
}

fn dest(root: &Path, path: &str) -> anyhow::Result<PathBuf> {
    let rel = path.trim_start_matches('/');
    let dest = root.join(rel);
    let mut dir = root.to_path_buf();
    fs::create_dir_all(root).with_context(|| format!("creating {}", root.display()))?;
    chmod(root, 0o755)?;
    for part in Path::new(rel).parent().into_iter().flat_map(|p| p.iter()) {
        dir.push(part);
        if !dir.is_dir() {
            fs::create_dir(&dir).with_context(|| format!("creating {}", dir.display()))?;
        }
        chmod(&dir, 0o755)?;
    }
    Ok(dest)
}

fn chmod(p: &Path, mode: u32) -> anyhow::Result<()> {
    fs::set_permissions(p, fs::Permissions::from_mode(mode))
        .with_context(|| format!("chmod {mode:o} {}", p.display()))
}

/// Every regular file under `root` (DEBIAN/ excluded), relative, sorted.
fn files(root: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    let mut dirs = vec![root.to_path_buf()];
    // A package tree is a few levels deep; the bound only guards against a symlink loop.
    for _ in 0..10_000 {
        let Some(dir) = dirs.pop() else {
            out.sort();
            return Ok(out);
        };
        for e in fs::read_dir(&dir).with_context(|| format!("reading {}", dir.display()))? {
            let e = e?;
            let path = e.path();
            let rel = path.strip_prefix(root).expect("under root").to_path_buf();
            if rel.starts_with("DEBIAN") {
                continue;
            }
            if e.file_type()?.is_dir() {
                dirs.push(path);
            } else {
                out.push(rel);
            }
        }
    }
    bail!("{}: too many directories", root.display())
}

/// Installed-Size as dpkg-gencontrol counts it: KiB per file (rounded up), one per directory.
fn installed_size_kib(root: &Path) -> anyhow::Result<u64> {
    let files = files(root)?;
    let mut dirs = std::collections::BTreeSet::new();
    let mut kib = 0;
    for f in &files {
        kib += fs::metadata(root.join(f))?.len().div_ceil(1024);
        dirs.extend(f.ancestors().skip(1).filter(|d| !d.as_os_str().is_empty()));
    }
    Ok(kib + dirs.len() as u64)
}

/// DEBIAN/md5sums: `md5sum` over every file but the conffile (dpkg keeps its sum itself).
fn md5sums(root: &Path) -> anyhow::Result<String> {
    let conffile = Path::new(CONFFILE.trim_start_matches('/'));
    let files: Vec<PathBuf> = files(root)?.into_iter().filter(|f| f != conffile).collect();
    let out = cmd("md5sum")
        .args(files)
        .current_dir(root)
        .timeout(Duration::from_secs(120))
        .ok()?;
    Ok(out.stdout)
}
