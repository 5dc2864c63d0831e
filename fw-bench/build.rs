//! Compiles fw-bench-ebpf (the benchmark's own XDP programs) for the BPF target, as fw-user's
//! build.rs does for the firewall, and leaves each object in OUT_DIR/<bin name> for
//! src/programs.rs to embed. With AYA_BUILD_SKIP=1 (clippy, docs, hosts without the BPF
//! toolchain) empty objects are written instead; loading one then fails with a message that
//! says so.

use std::{env, fs, path::PathBuf};

const BINS: [&str; 6] = [
    "bench_drop",
    "bench_gen",
    "bench_lookup",
    "bench_pass",
    "bench_sink",
    "bench_spoof",
];

fn main() -> anyhow::Result<()> {
    let out = PathBuf::from(env::var_os("OUT_DIR").expect("OUT_DIR"));
    let manifest = PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").expect("CARGO_MANIFEST_DIR"));
    let ebpf_dir = manifest.join("../fw-bench-ebpf");
    let ebpf_dir = ebpf_dir.to_str().expect("utf-8 path");
    println!("cargo:rerun-if-changed={ebpf_dir}");
    // The skip path returns before aya-build prints this itself: without it, a build made once
    // with AYA_BUILD_SKIP=1 keeps its empty objects after the variable is unset.
    println!("cargo:rerun-if-env-changed=AYA_BUILD_SKIP");
    let skip = env::var("AYA_BUILD_SKIP").is_ok_and(|v| v == "1" || v.eq_ignore_ascii_case("true"));
    if skip {
        for bin in BINS {
            fs::write(out.join(bin), b"")?;
        }
        return Ok(());
    }
    aya_build::build_ebpf(
        [aya_build::Package {
            name: "fw-bench-ebpf",
            root_dir: ebpf_dir,
            ..Default::default()
        }],
        aya_build::Toolchain::default(),
    )
}
