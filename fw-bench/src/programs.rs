//! The benchmark's own XDP programs (fw-bench-ebpf/src/bin/bench_*.rs), compiled by this
//! crate's build.rs and embedded here as fw-user embeds `fw_xdp`. They are not part of the
//! firewall (the `fw` binary does not carry them): `fw-bench` uses them as the floor and limit
//! it compares `fw` with, and as its traffic generator.

/// `bench_drop`: count in a per-CPU array (`BENCH_DROPS`), return XDP_DROP.
pub static BENCH_DROP: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/bench_drop"));
pub const BENCH_DROP_PROG: &str = "bench_drop";
pub const BENCH_DROP_MAP: &str = "BENCH_DROPS";

/// `bench_pass`: count in a per-CPU array, return XDP_PASS (the cost of having any XDP program
/// on a veth, for allowed traffic).
pub static BENCH_PASS: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/bench_pass"));
pub const BENCH_PASS_PROG: &str = "bench_pass";

/// `bench_gen`: `bpf_redirect(GEN_IFINDEX, 0)`, optionally rewriting each frame with the next of
/// `GEN_NFRAMES` templates in `GEN_FRAMES`; counts frames in `GEN_SENT`. Run it with
/// BPF_PROG_TEST_RUN and `BPF_F_TEST_XDP_LIVE_FRAMES`.
pub static BENCH_GEN: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/bench_gen"));
pub const BENCH_GEN_PROG: &str = "bench_gen";
pub const GEN_IFINDEX: &str = "GEN_IFINDEX";
pub const GEN_NFRAMES: &str = "GEN_NFRAMES";
pub const GEN_FRAMES: &str = "GEN_FRAMES";
pub const GEN_SENT: &str = "GEN_SENT";
/// Bytes of one `GEN_FRAMES` template.
pub const GEN_FRAME_LEN: usize = 60;
pub const GEN_MAX_FRAMES: u32 = 64;

/// `bench_lookup`: one flow-table-like lookup per program (`lk_lru40`, `lk_lru16`, `lk_hash40`,
/// `lk_hash16`, `lk_lru40x2`, `lk_clock`), for tests/tests/kernel_lookup_cost.rs.
pub static BENCH_LOOKUP: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/bench_lookup"));
