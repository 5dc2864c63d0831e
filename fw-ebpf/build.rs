//! Link flags for the BPF object.
//!
//! `--disable-expand-memcpy-in-order`: by default bpf-linker passes LLVM
//! `-bpf-expand-memcpy-in-order`, which leaves every `memset` (and every copy LLVM does not
//! expand itself) as a call to the `memset`/`memcpy` bpf-linker exports: a BPF-to-BPF call into
//! a loop that moves one byte per turn. A 16-byte address zeroed for its 4 IPv4 bytes cost every
//! IPv4 packet two such calls, ~30 ns (tests/tests/kernel_cost.rs). Without it LLVM expands them
//! into plain stores, as clang does for C programs; only a copy of a variable length stays a
//! call, and tests/tests/bpf_object.rs fails on any call to those functions.
//!
//! `-inline-threshold=2000` (LLVM's default is 225): at the default, LLVM leaves the parser, the
//! connection-state path's per-table closures and aya's wrapped program bodies as functions of
//! their own, each a BPF-to-BPF call of 10-12 ns here (tests/tests/kernel_lookup_cost.rs,
//! `lk_call`). At 2000 every program is one function (fw_xdp: 400 bytes of stack of 512);
//! -20 to -30 ns per packet (tests/tests/kernel_cost.rs). bpf_object.rs checks the XDP programs
//! make no such call; LLVM refuses to build a program whose stack would pass 512 bytes.

fn main() {
    if std::env::var("CARGO_CFG_TARGET_ARCH").as_deref() == Ok("bpf") {
        println!("cargo::rustc-link-arg=--disable-expand-memcpy-in-order");
        println!("cargo::rustc-link-arg=--llvm-args=-inline-threshold=2000");
    }
}
