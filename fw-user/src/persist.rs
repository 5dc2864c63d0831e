//! The saved policy (what the boot unit restores) and writing policy files safely.
//!
//! Files are written the way a root tool must write into directories others may share: a new
//! file with an unguessable name created exclusively (`O_EXCL | O_NOFOLLOW`, mode 0600) in the
//! target's own directory, fsynced, then renamed over the target. A symlink planted at the
//! target is replaced, never followed; a file another user planted in a sticky directory
//! cannot be replaced (the rename fails, and so does the command), never reused with its owner
//! and mode.

use std::{
    fs::{self, OpenOptions},
    io::Write as _,
    os::unix::fs::OpenOptionsExt as _,
    path::Path,
};

use fw_policy::{
    Policy,
    toml_out::{Annotations, to_toml},
};

use crate::Error;

pub const DEFAULT_FILE: &str = "/etc/fw/fw.toml";

/// The saved policy's path: `$FW_POLICY_FILE` if set (hosts with another layout, and tests),
/// else [`DEFAULT_FILE`].
pub fn saved_file() -> std::path::PathBuf {
    std::env::var_os("FW_POLICY_FILE")
        .filter(|v| !v.is_empty())
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| std::path::PathBuf::from(DEFAULT_FILE))
}

/// The text `fw save` writes for `policy` attached to `ifaces`.
pub fn saved_text(policy: &Policy, ifaces: &[String], source: &str) -> String {
    let notes = Annotations {
        header: vec![
            "fw policy saved by `fw save`; `fw restore` (run at boot by fw.service) loads it."
                .to_string(),
            format!(
                "Saved from the running filter (its policy came from: {}).",
                fw_policy::display_safe(source)
            ),
            "`interfaces`: what fw restore attaches to.".to_string(),
        ],
        ..Default::default()
    };
    // to_toml writes `interfaces` itself (before the first table, where TOML wants it).
    let mut policy = policy.clone();
    policy.interfaces = ifaces.to_vec();
    to_toml(&policy, &notes)
}

/// Write `text` to `path` atomically and safely (see the module comment), mode 0600.
pub fn write_file(path: &Path, text: &str) -> Result<(), Error> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => std::path::PathBuf::from("."),
    };
    let name = path
        .file_name()
        .ok_or_else(|| Error::Other(format!("{}: not a file name", path.display())))?;
    let mut rnd = [0u8; 8];
    // SAFETY: valid buffer of its length.
    unsafe { libc::getrandom(rnd.as_mut_ptr().cast(), rnd.len(), 0) };
    let tmp = dir.join(format!(
        ".{}.{}.{:016x}.tmp",
        name.to_string_lossy(),
        std::process::id(),
        u64::from_le_bytes(rnd)
    ));
    let write = || -> std::io::Result<()> {
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(&tmp)?;
        f.write_all(text.as_bytes())?;
        f.sync_all()
    };
    if let Err(e) = write() {
        let _ = fs::remove_file(&tmp);
        return Err(Error::io(&tmp, e));
    }
    if let Err(e) = fs::rename(&tmp, path) {
        let _ = fs::remove_file(&tmp);
        return Err(Error::io(path, e));
    }
    if let Ok(d) = fs::File::open(&dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};

    #[test]
    fn a_planted_symlink_is_replaced_not_followed() {
        let dir = std::env::temp_dir().join(format!("fw-persist-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        let victim = dir.join("victim");
        fs::write(&victim, "precious").unwrap();
        let target = dir.join("saved.toml");
        std::os::unix::fs::symlink(&victim, &target).unwrap();
        write_file(&target, "policy").unwrap();
        assert_eq!(fs::read_to_string(&victim).unwrap(), "precious");
        assert!(
            !fs::symlink_metadata(&target)
                .unwrap()
                .file_type()
                .is_symlink()
        );
        assert_eq!(fs::read_to_string(&target).unwrap(), "policy");
        // A planted regular file (any mode) is replaced by a fresh 0600 one.
        fs::remove_file(&target).unwrap();
        fs::write(&target, "planted").unwrap();
        fs::set_permissions(&target, fs::Permissions::from_mode(0o666)).unwrap();
        write_file(&target, "policy2").unwrap();
        let md = fs::metadata(&target).unwrap();
        assert_eq!(md.mode() & 0o777, 0o600);
        assert_eq!(fs::read_to_string(&target).unwrap(), "policy2");
        assert_eq!(fs::read_dir(&dir).unwrap().count(), 2, "no temp file left");
        fs::remove_dir_all(&dir).unwrap();
    }
}
