//! The .tar.gz for machines without dpkg: the binary, the unit (for /usr/local/sbin/fw, where
//! `fw install` puts it), man pages, completions, the default policy and the README's Install
//! section, under one fw-VERSION/ directory.

use std::{
    fs,
    os::unix::fs::PermissionsExt as _,
    path::{Path, PathBuf},
    time::Duration,
};

use anyhow::{Context as _, bail};

use super::{VERSION, assets::Assets, source_date_epoch};
use crate::{proc::cmd, repo_root, setup::MUSL_TARGET};

pub fn build(a: &Assets, stage: &Path, out: &Path) -> anyhow::Result<PathBuf> {
    let name = format!("fw-{VERSION}");
    let root = stage.join(&name);
    if stage.exists() {
        fs::remove_dir_all(stage).with_context(|| format!("removing {}", stage.display()))?;
    }
    let mut files: Vec<(String, &Path, u32)> = vec![
        ("fw".into(), &a.bin, 0o755),
        ("fw.service".into(), &a.unit_local, 0o644),
        ("fw-serve.service".into(), &a.serve_unit_local, 0o644),
        ("fw.toml".into(), &a.policy, 0o644),
        ("completions/bash/fw".into(), &a.bash, 0o644),
        ("completions/zsh/_fw".into(), &a.zsh, 0o644),
        ("completions/fish/fw.fish".into(), &a.fish, 0o644),
    ];
    for page in &a.man {
        let file = page
            .file_name()
            .expect("a page has a name")
            .to_string_lossy();
        files.push((format!("man/man8/{file}"), page, 0o644));
    }
    for (rel, src, mode) in files {
        let dest = root.join(rel);
        fs::create_dir_all(dest.parent().expect("has a parent"))?;
        fs::copy(src, &dest)
            .with_context(|| format!("copying {} to {}", src.display(), dest.display()))?;
        fs::set_permissions(&dest, fs::Permissions::from_mode(mode))?;
    }
    fs::write(root.join("README.md"), readme()?).context("writing the tarball's README")?;
    let arch = MUSL_TARGET.replace("-unknown", "");
    let tgz = out.join(format!("{name}-{arch}.tar.gz"));
    println!("[dist] tar {}", tgz.display());
    cmd("tar")
        .args(["--sort=name", "--owner=0", "--group=0", "--numeric-owner"])
        .arg(format!("--mtime=@{}", source_date_epoch()))
        .args(["--mode=go-w", "--use-compress-program=gzip -9n", "-cf"])
        .arg(&tgz)
        .arg("-C")
        .arg(stage)
        .arg(&name)
        .timeout(Duration::from_secs(10 * 60))
        .ok()?;
    Ok(tgz)
}

/// The repository README's `## Install` section, with a title.
fn readme() -> anyhow::Result<String> {
    let path = repo_root().join("README.md");
    let text = fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    let Some(section) = install_section(&text) else {
        bail!(
            "{} has no `## Install` section to put in the tarball",
            path.display()
        );
    };
    Ok(format!(
        "# fw {VERSION}: an XDP host firewall\n\nA static x86_64 Linux build. `fw --help` and `man ./man/man8/fw.8.gz` say the rest.\n\n{section}"
    ))
}

fn install_section(readme: &str) -> Option<String> {
    let mut lines = readme.lines().skip_while(|l| l.trim_end() != "## Install");
    let head = lines.next()?;
    let body: Vec<&str> = lines.take_while(|l| !l.starts_with("## ")).collect();
    Some(format!("{head}\n{}\n", body.join("\n").trim_end()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn install_section_stops_at_the_next_section() {
        let r = "# fw\n\nintro\n\n## Install\n\ntext\n### sub\nmore\n\n## Build\nno\n";
        assert_eq!(
            install_section(r).unwrap(),
            "## Install\n\ntext\n### sub\nmore\n"
        );
        assert_eq!(install_section("# fw\n## Other\n"), None);
    }

    #[test]
    fn the_readme_has_an_install_section() {
        let text = fs::read_to_string(repo_root().join("README.md")).unwrap();
        let s = install_section(&text).unwrap();
        assert!(s.contains("dpkg -i"), "{s}");
    }
}
