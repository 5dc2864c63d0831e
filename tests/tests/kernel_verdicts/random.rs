//! The random differential: frames mutated from the table's, and addresses near the policy's
//! CIDRs.

use std::net::IpAddr;

use fw_lab::frames::{fix_len, put16};
use fw_testrun::{MIN_FRAME, Rng};

/// Byte values that steer the parser: IP versions/ihl, protocols and next headers, TPIDs.
pub const INTERESTING: [u8; 20] = [
    0x00, 0x01, 0x02, 0x05, 0x06, 0x08, 0x11, 0x20, 0x2b, 0x2c, 0x33, 0x3a, 0x3b, 0x3c, 0x45, 0x4f,
    0x60, 0x81, 0x86, 0xff,
];

pub fn mutate(rng: &mut Rng, base: &[u8]) -> Vec<u8> {
    let mut f = base.to_vec();
    let n = 1 + rng.below(4);
    for _ in 0..n {
        let hot = f.len().min(96);
        let i = if rng.chance(4, 5) {
            rng.below(hot)
        } else {
            rng.below(f.len())
        };
        match rng.below(8) {
            0 | 1 => f[i] = rng.byte(),
            2 => f[i] ^= 1 << rng.below(8),
            3 | 4 => f[i] = *rng.pick(&INTERESTING),
            5 => {
                // Insert or delete a few bytes (shifts every header after them).
                let k = 1 + rng.below(8);
                if rng.chance(1, 2) {
                    for _ in 0..k {
                        f.insert(i, rng.byte());
                    }
                } else {
                    let end = (i + k).min(f.len());
                    f.drain(i..end);
                }
            }
            6 => f.resize(f.len() + rng.below(64), rng.byte()),
            _ => {
                // A 16-bit field: a length, a port, an ethertype.
                let v = *rng.pick(&[
                    0u16, 1, 7, 8, 19, 20, 40, 0x0800, 0x86dd, 0x8100, 0x88a8, 0xffff,
                ]);
                if i + 1 < f.len() {
                    put16(&mut f, i, v);
                }
            }
        }
        if f.len() < MIN_FRAME {
            f.resize(MIN_FRAME, 0);
        }
    }
    if rng.chance(1, 2) {
        f = fix_len(f);
    }
    if rng.chance(1, 4) {
        let len = MIN_FRAME + rng.below(f.len() - MIN_FRAME + 1);
        f.truncate(len);
    }
    f
}

/// A random address near one of the policy's CIDRs (or anywhere), for LPM coverage.
pub fn near(rng: &mut Rng, v6: bool) -> IpAddr {
    if v6 {
        let bases: [[u8; 16]; 3] = [
            "2001:db8:1::"
                .parse::<std::net::Ipv6Addr>()
                .unwrap()
                .octets(),
            "2001:db8:1:2::"
                .parse::<std::net::Ipv6Addr>()
                .unwrap()
                .octets(),
            "2001:db8::7"
                .parse::<std::net::Ipv6Addr>()
                .unwrap()
                .octets(),
        ];
        let mut a = *rng.pick(&bases);
        let from = 4 + rng.below(12);
        for b in &mut a[from..] {
            *b = rng.byte();
        }
        if rng.chance(1, 3) {
            a[rng.below(8)] ^= 1 << rng.below(8);
        }
        if rng.chance(1, 8) {
            a = std::array::from_fn(|_| rng.byte());
        }
        IpAddr::from(a)
    } else {
        let bases = [
            [203u8, 0, 113, 7],
            [198, 51, 100, 0],
            [10, 0, 0, 0],
            [192, 0, 2, 0],
        ];
        let mut a = *rng.pick(&bases);
        a[3] = rng.byte();
        if rng.chance(1, 3) {
            a[2] = rng.byte();
        }
        if rng.chance(1, 4) {
            a[rng.below(3)] ^= 1 << rng.below(8);
        }
        if rng.chance(1, 8) {
            a = std::array::from_fn(|_| rng.byte());
        }
        IpAddr::from(a)
    }
}
