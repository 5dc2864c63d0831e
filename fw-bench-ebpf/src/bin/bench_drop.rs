//! Benchmark floor: the cheapest XDP program that still does what every filter does per packet
//! (count it in a per-CPU array, drop it). `fw-bench` runs it next to `fw_xdp` with
//! BPF_PROG_TEST_RUN (the test-run overhead every program pays) and attaches it to the
//! receiving veth (the fastest drop the machine can do). Not part of `fw`.
#![no_std]
#![no_main]

use aya_ebpf::{
    bindings::xdp_action,
    macros::{map, xdp},
    maps::PerCpuArray,
    programs::XdpContext,
};

/// Packets dropped, per CPU.
#[map]
static BENCH_DROPS: PerCpuArray<u64> = PerCpuArray::with_max_entries(1, 0);

#[xdp]
pub fn bench_drop(_ctx: XdpContext) -> u32 {
    if let Some(c) = BENCH_DROPS.get_ptr_mut(0) {
        // SAFETY: this CPU's slot; XDP runs with preemption off.
        unsafe { *c += 1 };
    }
    xdp_action::XDP_DROP
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    // SAFETY: the verifier rejects any program that could reach this.
    unsafe { core::hint::unreachable_unchecked() }
}
