//! Controlled prefix expansion (Srinivasan & Varghese, 1999) of an IPv4 block set: a list that
//! uses many prefix lengths, held in hash tables of a few lengths only. Each prefix is written
//! as the 2^(t−l) prefixes of the next chosen length t at or above its own; a packet then costs
//! one hash lookup per chosen length, whatever the number of entries — where the LPM trie's walk
//! deepens with the list (measured by `cargo xtask bench --only blocklist`).
//!
//! Not wired into [`crate::blocks::BlockSet::finish`] yet: the benchmark measures it next to the
//! trie, so the choice (and the entry budget, bounded by the hash map's size and the
//! put-new-then-delete-old replacement) can be made on numbers.

use std::collections::{BTreeMap, HashMap};

use fw_common::block::{BlockKeyV4, BlockValue};

/// The lengths to expand into and the entries that makes (fewer where prefixes overlap).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Plan {
    /// Ascending; the longest length in use is always one of them.
    pub lens: Vec<u8>,
    pub entries: u64,
}

fn expanded(count: u64, from: u8, to: u8) -> u64 {
    let d = u32::from(to - from);
    if d >= 63 {
        return if count == 0 { 0 } else { u64::MAX };
    }
    count.saturating_mul(1u64 << d)
}

/// The at most `max_lens` lengths holding `counts` (entries per prefix length) in the fewest
/// entries (dynamic programming over the lengths in use, O(lengths² · max_lens)); `None` when the
/// best needs more than `budget` entries.
pub fn plan(counts: &BTreeMap<u8, u64>, max_lens: usize, budget: u64) -> Option<Plan> {
    let lens: Vec<u8> = counts.keys().copied().collect();
    let m = lens.len();
    if m == 0 || max_lens == 0 {
        return (m == 0).then(|| Plan {
            lens: Vec::new(),
            entries: 0,
        });
    }
    // cost(i, j): lengths i..=j expanded to lens[j].
    let cost = |i: usize, j: usize| {
        (i..=j).fold(0u64, |acc, x| {
            acc.saturating_add(expanded(counts[&lens[x]], lens[x], lens[j]))
        })
    };
    let k = max_lens.min(m);
    // best[t][j]: (entries, previous target index) covering lens[..=j] with t+1 targets, the
    // last at j.
    let mut best = vec![vec![(u64::MAX, usize::MAX); m]; k];
    for (j, b) in best[0].iter_mut().enumerate() {
        *b = (cost(0, j), usize::MAX);
    }
    for t in 1..k {
        for j in t..m {
            for p in (t - 1)..j {
                let prev = best[t - 1][p].0;
                if prev == u64::MAX {
                    continue;
                }
                let c = prev.saturating_add(cost(p + 1, j));
                if c < best[t][j].0 {
                    best[t][j] = (c, p);
                }
            }
        }
    }
    let (t, entries) = (0..k)
        .map(|t| (t, best[t][m - 1].0))
        .min_by_key(|(_, c)| *c)?;
    if entries > budget {
        return None;
    }
    let mut out = Vec::new();
    let (mut t, mut j) = (t, m - 1);
    loop {
        out.push(lens[j]);
        let p = best[t][j].1;
        if t == 0 {
            break;
        }
        (t, j) = (t - 1, p);
    }
    out.reverse();
    Some(Plan { lens: out, entries })
}

/// Entries per prefix length of `v4`.
pub fn counts_v4(v4: &HashMap<BlockKeyV4, BlockValue>) -> BTreeMap<u8, u64> {
    let mut c = BTreeMap::new();
    for k in v4.keys() {
        *c.entry(k.len).or_insert(0u64) += 1;
    }
    c
}

/// `v4` written at the lengths of `plan` (which must cover every length in `v4`). Where
/// prefixes overlap, the longest one's value wins, as in the trie: the result answers every
/// address as [`crate::blocks::BlockSet::longest_v4`] does on `v4`.
pub fn expand_v4(
    v4: &HashMap<BlockKeyV4, BlockValue>,
    plan: &Plan,
) -> HashMap<BlockKeyV4, BlockValue> {
    let mut sorted: Vec<(&BlockKeyV4, &BlockValue)> = v4.iter().collect();
    sorted.sort_by_key(|(k, _)| (k.len, k.addr));
    let mut out = HashMap::with_capacity(plan.entries.min(1 << 24) as usize);
    for (k, v) in sorted {
        let to = *plan
            .lens
            .iter()
            .find(|t| **t >= k.len)
            .expect("the plan covers every length");
        let base = u32::from_be_bytes(k.addr);
        let n = 1u64 << (to - k.len);
        for i in 0..n {
            let addr = if to == 0 {
                0
            } else {
                base | ((i as u32) << (32 - u32::from(to)))
            };
            out.insert(BlockKeyV4::new(&addr.to_be_bytes(), to), *v);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Cidr, blocks::BlockSet};

    fn counts(c: &[(u8, u64)]) -> BTreeMap<u8, u64> {
        c.iter().copied().collect()
    }

    #[test]
    fn few_lengths_are_kept_as_they_are() {
        let p = plan(&counts(&[(24, 10), (32, 100)]), 4, u64::MAX).unwrap();
        assert_eq!(
            p,
            Plan {
                lens: vec![24, 32],
                entries: 110
            }
        );
    }

    #[test]
    fn the_plan_is_the_cheapest_expansion_and_respects_the_budget() {
        // /20 ×1 → /24 costs 16; /23 ×1 → /24 costs 2; keeping /23 and /24 apart costs a length.
        let c = counts(&[(20, 1), (23, 1), (24, 5), (32, 100)]);
        let p = plan(&c, 2, u64::MAX).unwrap();
        assert_eq!(
            p,
            Plan {
                lens: vec![24, 32],
                entries: 16 + 2 + 5 + 100
            }
        );
        let p = plan(&c, 3, u64::MAX).unwrap();
        assert_eq!(
            p,
            Plan {
                lens: vec![20, 24, 32],
                entries: 1 + 2 + 5 + 100
            }
        );
        assert_eq!(plan(&c, 3, 107), None);
        // A /8 in a /32-only world: 2^24 entries, or one length more.
        let c = counts(&[(8, 1), (32, 10)]);
        assert_eq!(plan(&c, 1, 1 << 20), None);
        assert_eq!(plan(&c, 2, 1 << 20).unwrap().lens, vec![8, 32]);
    }

    #[test]
    fn the_expanded_set_answers_every_address_like_the_trie() {
        let mut s = BlockSet::default();
        for (i, c) in [
            "10.0.0.0/8",
            "10.1.0.0/16",
            "10.1.2.0/23",
            "10.1.2.128/25",
            "10.1.3.7",
            "192.0.2.0/24",
            "198.51.100.64/26",
        ]
        .iter()
        .enumerate()
        {
            s.add(i as u32, &c.parse::<Cidr>().unwrap(), 0);
        }
        let p = plan(&counts_v4(&s.v4), 3, u64::MAX).unwrap();
        assert!(p.lens.len() <= 3 && p.lens.contains(&32));
        let e = expand_v4(&s.v4, &p);
        // Overlapping prefixes expand onto the same keys: at most the plan's count.
        assert!(e.len() as u64 <= p.entries);
        let x = BlockSet {
            v4: e,
            ..Default::default()
        };
        let mut rng = 0x1234_5678u32;
        for probe in 0..200_000u32 {
            // Addresses in and around the entries, and some anywhere.
            rng = rng.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            let a = match probe % 4 {
                0 => 0x0a01_0200 | (rng & 0x3ff),
                1 => 0x0a00_0000 | (rng & 0x00ff_ffff),
                2 => 0xc633_6400 | (rng & 0xff),
                _ => rng,
            }
            .to_be_bytes();
            assert_eq!(x.longest_v4(&a), s.longest_v4(&a), "{a:?}");
        }
    }
}
