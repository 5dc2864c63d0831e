//! Compiles fw-ebpf for the BPF target (nightly, build-std, bpf-linker) and leaves the object in
//! OUT_DIR/fw-xdp, which the `fw` binary embeds (each other bin of fw-ebpf lands in
//! OUT_DIR/<bin name>). Three ways, first match wins:
//! - AYA_BUILD_SKIP=1 (clippy, docs, hosts without the BPF toolchain): empty objects; loading
//!   one then fails with a message that says so.
//! - FW_EBPF_OBJECTS=DIR: the objects were built already (`cargo xtask` builds them itself,
//!   outside this build script) and are copied from DIR.
//! - otherwise aya-build runs a nested `cargo build` for the BPF target.

use std::{
    env, fs,
    path::{Path, PathBuf},
};

/// The bins of fw-ebpf: the XDP/TC object and the benchmark's programs.
fn ebpf_bins(manifest: &Path) -> Vec<String> {
    let mut names = vec!["fw-xdp".to_string()];
    if let Ok(bins) = fs::read_dir(manifest.join("../fw-ebpf/src/bin")) {
        for bin in bins.flatten() {
            let path = bin.path();
            if path.extension().is_some_and(|e| e == "rs")
                && let Some(stem) = path.file_stem()
            {
                names.push(stem.to_string_lossy().into_owned());
            }
        }
    }
    names
}

fn main() -> anyhow::Result<()> {
    let out = PathBuf::from(env::var_os("OUT_DIR").expect("OUT_DIR"));
    let manifest = PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").expect("CARGO_MANIFEST_DIR"));
    let ebpf_dir = manifest.join("../fw-ebpf");
    let ebpf_dir = ebpf_dir.to_str().expect("utf-8 path");
    println!("cargo:rerun-if-changed={ebpf_dir}");
    println!("cargo:rerun-if-changed=../fw-common/src");
    // The early returns come before aya-build prints this itself: without it, a build made once
    // with AYA_BUILD_SKIP=1 keeps its empty object after the variable is unset.
    println!("cargo:rerun-if-env-changed=AYA_BUILD_SKIP");
    println!("cargo:rerun-if-env-changed=FW_EBPF_OBJECTS");
    let skip = env::var("AYA_BUILD_SKIP").is_ok_and(|v| v == "1" || v.eq_ignore_ascii_case("true"));
    if skip {
        for name in ebpf_bins(&manifest) {
            fs::write(out.join(name), b"")?;
        }
        return Ok(());
    }
    if let Some(dir) = env::var_os("FW_EBPF_OBJECTS") {
        // Fresh-clone CI runs sometimes saw aya-build's nested cargo fail at its first step
        // (cargo's "failed to run `rustc` to learn about target-specific information", the
        // probe having read another build's compiler output as source), repeatably within one
        // run; built by xtask outside any build script, the objects never failed.
        let dir = PathBuf::from(dir);
        for name in ebpf_bins(&manifest) {
            let src = dir.join(&name);
            println!("cargo:rerun-if-changed={}", src.display());
            fs::copy(&src, out.join(&name)).map_err(|e| {
                anyhow::anyhow!("FW_EBPF_OBJECTS: cannot copy {}: {e}", src.display())
            })?;
        }
        return Ok(());
    }
    aya_build::build_ebpf(
        [aya_build::Package {
            name: "fw-ebpf",
            root_dir: ebpf_dir,
            ..Default::default()
        }],
        aya_build::Toolchain::default(),
    )
}
