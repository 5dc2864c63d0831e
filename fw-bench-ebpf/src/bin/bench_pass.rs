//! Benchmark baseline for allowed traffic: count the packet, return XDP_PASS. On a veth, any XDP
//! program makes the peer stop segmentation offload (TSO/GSO), so throughput through fw is
//! compared with this program as well as with no program at all. Not part of `fw`.
#![no_std]
#![no_main]

use aya_ebpf::{
    bindings::xdp_action,
    macros::{map, xdp},
    maps::PerCpuArray,
    programs::XdpContext,
};

/// Packets passed, per CPU.
#[map]
static BENCH_PASSES: PerCpuArray<u64> = PerCpuArray::with_max_entries(1, 0);

#[xdp]
pub fn bench_pass(_ctx: XdpContext) -> u32 {
    if let Some(c) = BENCH_PASSES.get_ptr_mut(0) {
        // SAFETY: this CPU's slot; XDP runs with preemption off.
        unsafe { *c += 1 };
    }
    xdp_action::XDP_PASS
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    // SAFETY: the verifier rejects any program that could reach this.
    unsafe { core::hint::unreachable_unchecked() }
}
