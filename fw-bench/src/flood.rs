//! Driving the generator: BPF_PROG_TEST_RUN with live frames in the sender's namespace, on one
//! CPU, in chunks sized so each call lasts ~20 ms (a slow receiver cannot stall the run), for a
//! fixed interval; the receiver's veth counts what it received in that interval.

use std::{
    path::PathBuf,
    sync::atomic::{AtomicBool, Ordering},
    thread,
    time::{Duration, Instant},
};

use anyhow::Context as _;
use fw_lab::link::NetDev;

use super::{
    lab::{Generator, Pair},
    sys::{self, test_run_live},
};

/// XDP frames per batch (≤ the veth ring of 256, so a batch never overflows it).
pub const BATCH: u32 = 64;

#[derive(Clone, Copy, Debug, Default)]
pub struct FloodStats {
    /// Wall-clock length of the measured interval.
    pub secs: f64,
    /// Frames the receiving veth took in (its NAPI poll saw them) in that interval.
    pub received: u64,
    /// Frames the generator produced.
    pub sent: u64,
    /// Kernel-timed nanoseconds per frame (generation, redirect and the receiver's processing,
    /// which runs in the same softirq), averaged over the interval's frames.
    pub kernel_ns: f64,
}

impl FloodStats {
    pub fn pps(&self) -> f64 {
        self.received as f64 / self.secs
    }
}

/// Each BPF_PROG_TEST_RUN call with live frames costs ~25 ms of set-up and tear-down (page pool)
/// on top of the frames: calls are sized to last about this long so that overhead stays small.
const CALL_TARGET: Duration = Duration::from_millis(400);
/// That fixed cost, roughly (measured on the development machine).
const CALL_OVERHEAD: Duration = Duration::from_millis(25);

/// Run `generator` of `pair` for `warmup` + `dur` on `cpu`; measure over `dur`. `stop` ends it
/// early (between calls).
pub fn flood(
    pair: &mut Pair,
    gen_idx: usize,
    dur: Duration,
    warmup: Duration,
    cpu: usize,
    stop: Option<&AtomicBool>,
) -> anyhow::Result<FloodStats> {
    let target = Target {
        sender: pair.sender.path().to_path_buf(),
        r_if: pair.r_if.clone(),
        ifindex: pair.s_ifindex,
        rx: &mut pair.rx,
        generator: &mut pair.generators[gen_idx].1,
    };
    flood_on(target, dur, warmup, cpu, stop)
}

/// What a flood needs of a pair (so the rest of it, e.g. fw's maps, stays free to use).
pub struct Target<'a> {
    pub sender: PathBuf,
    pub r_if: String,
    pub ifindex: u32,
    pub rx: &'a mut NetDev,
    pub generator: &'a mut Generator,
}

pub fn flood_on(
    t: Target<'_>,
    dur: Duration,
    warmup: Duration,
    cpu: usize,
    stop: Option<&AtomicBool>,
) -> anyhow::Result<FloodStats> {
    let Target {
        sender,
        r_if,
        ifindex,
        rx,
        generator,
    } = t;
    let fd = generator.prog_fd()?;
    let frame = vec![0u8; super::programs::GEN_FRAME_LEN];
    let generator = &*generator;
    let debug = std::env::var_os("FWB_DEBUG").is_some();
    thread::scope(|s| {
        s.spawn(move || -> anyhow::Result<FloodStats> {
            fw_lab::netns::join_path(&sender)?;
            let _pin = fw_lab::link::CpuPin::cpu(cpu)?;
            // Wall-clock ns per frame, learnt from the previous call (its fixed set-up cost
            // discounted); the first call is small so a slow receiver cannot make it long.
            let mut ns_per_frame = 20_000.0f64;
            let mut chunk: u32 = 1024;
            let mut go = |until: Instant, frames: &mut u64, kns: &mut f64| -> anyhow::Result<()> {
                loop {
                    let left = until.saturating_duration_since(Instant::now());
                    if left.is_zero()
                        || sys::interrupted()
                        || stop.is_some_and(|s| s.load(Ordering::Relaxed))
                    {
                        break;
                    }
                    let want = left.min(CALL_TARGET).as_nanos() as f64;
                    let next = (want / ns_per_frame) as u64;
                    chunk = next
                        .clamp(u64::from(BATCH), u64::from(chunk) * 8)
                        .min(1 << 26) as u32;
                    let t = Instant::now();
                    let r = test_run_live(fd, &frame, chunk, BATCH, ifindex)?;
                    let el = t.elapsed();
                    if debug {
                        eprintln!("chunk {chunk} took {el:?}, kernel {} ns/frame", r.ns);
                    }
                    let busy = el.saturating_sub(CALL_OVERHEAD).max(el / 4);
                    ns_per_frame = (busy.as_nanos() as f64 / f64::from(chunk)).max(1.0);
                    *frames += u64::from(chunk);
                    *kns += f64::from(r.ns) * f64::from(chunk);
                }
                Ok(())
            };
            let (mut f0, mut k0) = (0u64, 0f64);
            go(Instant::now() + warmup, &mut f0, &mut k0)?;
            let rx0 = rx.stats(&r_if)?.rx_packets;
            let s0 = generator.sent()?;
            let t0 = Instant::now();
            let (mut frames, mut kns) = (0u64, 0f64);
            go(t0 + dur, &mut frames, &mut kns)?;
            let secs = t0.elapsed().as_secs_f64();
            let rx1 = rx.stats(&r_if)?.rx_packets;
            let s1 = generator.sent()?;
            Ok(FloodStats {
                secs,
                received: rx1 - rx0,
                sent: s1 - s0,
                kernel_ns: if frames > 0 {
                    kns / frames as f64
                } else {
                    f64::NAN
                },
            })
        })
        .join()
        .map_err(|_| anyhow::anyhow!("the generator thread panicked"))?
    })
    .context("flood")
}
