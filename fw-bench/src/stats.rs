//! Medians and quantiles, and the CIDR sets of the scaling runs (the lab's seeded PRNG: the
//! same sets every run).

use fw_lab::Rng;

pub fn median(v: &[f64]) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    let mut s = v.to_vec();
    s.sort_by(|a, b| a.total_cmp(b));
    let n = s.len();
    if n % 2 == 1 {
        s[n / 2]
    } else {
        (s[n / 2 - 1] + s[n / 2]) / 2.0
    }
}

/// The `q` quantile (0..=1), nearest rank.
pub fn quantile(v: &[f64], q: f64) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    let mut s = v.to_vec();
    s.sort_by(|a, b| a.total_cmp(b));
    let i = ((s.len() as f64 - 1.0) * q).round() as usize;
    s[i.min(s.len() - 1)]
}

/// `n` non-overlapping IPv4 CIDRs spread over the whole address space (each in its own /24,
/// none in 198.18.0.0/15 where the lab's addresses live): half /32, a third /24, the rest /28.
/// With `include` first (a /32), when given.
pub fn cidrs(n: usize, include: Option<[u8; 4]>) -> Vec<([u8; 4], u8)> {
    let mut rng = Rng::new(0x5eed_f1a7 + n as u64);
    let mut seen = std::collections::HashSet::with_capacity(n);
    let mut out = Vec::with_capacity(n);
    if let Some(a) = include {
        seen.insert([a[0], a[1], a[2]]);
        out.push((a, 32));
    }
    while out.len() < n {
        let r = rng.next_u64();
        let b = [(r >> 56) as u8, (r >> 48) as u8, (r >> 40) as u8];
        if b[0] == 0 || b[0] >= 224 || b[0] == 127 || (b[0] == 198 && (b[1] & 0xfe) == 18) {
            continue;
        }
        if !seen.insert(b) {
            continue;
        }
        let (len, host) = match r % 6 {
            0..=2 => (32u8, (r >> 8) as u8),
            3 | 4 => (24, 0),
            _ => (28, ((r >> 8) as u8) & 0xf0),
        };
        out.push(([b[0], b[1], b[2], host], len));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn medians() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), 2.5);
        assert_eq!(quantile(&[1.0, 2.0, 3.0, 4.0, 5.0], 1.0), 5.0);
    }

    #[test]
    fn cidrs_are_distinct_and_avoid_the_lab() {
        let c = cidrs(1000, Some([198, 18, 0, 2]));
        assert_eq!(c.len(), 1000);
        assert_eq!(c[0], ([198, 18, 0, 2], 32));
        let blocks: std::collections::HashSet<_> =
            c.iter().map(|(a, _)| [a[0], a[1], a[2]]).collect();
        assert_eq!(blocks.len(), 1000);
        assert!(c[1..].iter().all(|(a, _)| !(a[0] == 198 && a[1] == 18)));
    }
}
