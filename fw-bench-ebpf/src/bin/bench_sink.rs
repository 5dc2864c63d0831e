//! Benchmark sink for the attacking side of a pair: what the server sends back to spoofed
//! sources (SYN+ACKs, RSTs, fw's XDP_TX cookie answers) is dropped here, at the cost of an XDP
//! drop, so it does not load the CPU the measurement runs on; frames for the lab's own subnet
//! (`SINK_KEEP`/24: the real clients), and everything that is not IPv4 (ARP), pass. Also, a veth
//! delivers frames its peer sends back with XDP_TX only when it runs an XDP program itself.
//! Not part of `fw`.
#![no_std]
#![no_main]

use aya_ebpf::{
    bindings::xdp_action,
    macros::{map, xdp},
    maps::PerCpuArray,
    programs::XdpContext,
};

/// The /24 whose frames pass (host byte order, low byte 0).
#[unsafe(no_mangle)]
static SINK_KEEP: u32 = 0;

/// Frames dropped, per CPU.
#[map]
static SINK_DROPS: PerCpuArray<u64> = PerCpuArray::with_max_entries(1, 0);

#[xdp]
pub fn bench_sink(ctx: XdpContext) -> u32 {
    let (data, end) = (ctx.data(), ctx.data_end());
    if data + 14 + 20 > end {
        return xdp_action::XDP_PASS;
    }
    let p = data as *const u8;
    // SAFETY: the Ethernet and IPv4 headers lie within the frame (checked above).
    let (ethertype, dst) = unsafe {
        (
            u16::from_be((p.add(12) as *const u16).read_unaligned()),
            u32::from_be((p.add(14 + 16) as *const u32).read_unaligned()),
        )
    };
    // SAFETY: a plain read of a static the loader sets.
    let keep = unsafe { core::ptr::read_volatile(&SINK_KEEP) };
    if ethertype != 0x0800 || dst & 0xffff_ff00 == keep {
        return xdp_action::XDP_PASS;
    }
    if let Some(c) = SINK_DROPS.get_ptr_mut(0) {
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
