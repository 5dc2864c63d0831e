//! Compiles fw-ebpf for the BPF target (nightly, build-std, bpf-linker) and leaves the object in
//! OUT_DIR/fw-xdp, which the `fw` binary embeds: the firewall only (the benchmark's programs
//! are fw-bench-ebpf, built by fw-bench). With AYA_BUILD_SKIP=1 (clippy, docs, hosts without
//! the BPF toolchain) an empty object is written instead; loading it then fails with a message
//! that says so.

use std::{env, fs, path::PathBuf};

fn main() -> anyhow::Result<()> {
    let out = PathBuf::from(env::var_os("OUT_DIR").expect("OUT_DIR"));
    let manifest = PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").expect("CARGO_MANIFEST_DIR"));
    let ebpf_dir = manifest.join("../fw-ebpf");
    let ebpf_dir = ebpf_dir.to_str().expect("utf-8 path");
    println!("cargo:rerun-if-changed={ebpf_dir}");
    println!("cargo:rerun-if-changed=../fw-common/src");
    // The skip path returns before aya-build prints this itself: without it, a build made once
    // with AYA_BUILD_SKIP=1 keeps its empty object after the variable is unset.
    println!("cargo:rerun-if-env-changed=AYA_BUILD_SKIP");
    let skip = env::var("AYA_BUILD_SKIP").is_ok_and(|v| v == "1" || v.eq_ignore_ascii_case("true"));
    if skip {
        fs::write(out.join("fw-xdp"), b"")?;
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
