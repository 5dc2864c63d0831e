//! The frame as `fw_common`'s parser sees it: one bounds check against `data_end` per header,
//! in the shape the verifier accepts (`data + off + N > data_end`).
//!
//! A multi-buffer frame (XDP frags: jumbo frames) is readable only up to the end of its first
//! buffer (`data_end`) but longer (`bpf_xdp_get_buff_len`): header lengths are checked against
//! the whole length, reads against `data_end`. A read that fails only because it runs into the
//! later buffers is remembered ([`Frame::split`]), so the drop is counted as what it is.

use core::cell::Cell;

use fw_common::PacketView;

pub struct Frame {
    start: usize,
    end: usize,
    len: usize,
    split: Cell<bool>,
}

impl Frame {
    #[inline(always)]
    pub fn new(start: usize, end: usize) -> Self {
        Frame {
            start,
            end,
            len: end - start,
            split: Cell::new(false),
        }
    }

    /// A frame whose readable bytes end at `end` but whose packet is `len` bytes long (TC: an
    /// skb with paged data or a GSO packet). Header lengths are checked against `len`, every
    /// read against `end`: a datagram longer than what is readable is not "truncated".
    #[inline(always)]
    pub fn with_len(start: usize, end: usize, len: usize) -> Self {
        Frame {
            start,
            end,
            len,
            split: Cell::new(false),
        }
    }

    /// The whole frame's length (all buffers), for the byte counters.
    #[inline(always)]
    pub fn len_u64(&self) -> u64 {
        self.len as u64
    }

    /// A header read ran past the first buffer of a multi-buffer frame (it would have been
    /// inside the frame).
    #[inline(always)]
    pub fn split(&self) -> bool {
        self.split.get()
    }
}

impl PacketView for Frame {
    /// Read through a volatile load on purpose: if LLVM could relate the length to `end`, it
    /// would prove some of `bytes()`' checks redundant (the parser already compared offsets with
    /// the IP length) and delete them — and the verifier needs every one of them.
    #[inline(always)]
    fn len(&self) -> usize {
        // SAFETY: reads a field of self.
        unsafe { core::ptr::read_volatile(&self.len) }
    }

    #[inline(always)]
    fn bytes<const N: usize>(&self, off: usize) -> Option<&[u8; N]> {
        let p = self.start + off;
        if p + N > self.end {
            if off + N <= self.len {
                self.split.set(true);
            }
            return None;
        }
        // SAFETY: [p, p + N) lies inside the frame, checked just above.
        Some(unsafe { &*(p as *const [u8; N]) })
    }
}
