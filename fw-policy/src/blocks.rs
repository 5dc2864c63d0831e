//! Block lists: reading feed files (one address or CIDR per line, the formats of Spamhaus DROP,
//! FireHOL netsets and plain lists) and the block set the kernel holds for any number of lists
//! (see `fw_common::block` for the per-packet side).

use std::collections::{BTreeSet, HashMap};

use fw_common::block::{BlockKeyV4, BlockKeyV6, BlockMeta, BlockValue, MAX_HASH_LENS};

use crate::Cidr;

/// List id of the policy's own `[[block]]` entries. Ids 0..16 have their own hit counter.
pub const POLICY_LIST: u32 = 1;
/// List id of `fw block add`.
pub const MANUAL_LIST: u32 = 0;
/// Lists a block set can hold (bits of [`BlockValue::lists`]).
pub const MAX_LISTS: u32 = 32;

/// Hash tables per prefix length in use cost one lookup per length; above this many lengths in
/// one family the LPM trie is cheaper (measured: README, "Blocklists at scale").
pub const HASH_MAX_LENS: usize = 4;

/// A feed line that is neither an address, a CIDR, a comment nor blank.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{file}:{line}: {message}\n    {text}")]
pub struct FeedError {
    pub file: String,
    pub line: usize,
    pub message: String,
    pub text: String,
}

/// Parse a block list: one address or CIDR per line; `#` and `;` start comments (Spamhaus DROP
/// writes `CIDR ; SBLnnn`, FireHOL `# …` headers); blank lines are skipped. Any other line is an
/// error naming the file and line, and nothing is returned.
pub fn parse_feed(file: &str, text: &str) -> Result<Vec<Cidr>, FeedError> {
    let mut out = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let line = raw.split(['#', ';']).next().unwrap_or("").trim();
        if line.is_empty() {
            continue;
        }
        let err = |message: String| FeedError {
            file: file.to_string(),
            line: i + 1,
            message,
            text: crate::display_safe(raw).chars().take(120).collect(),
        };
        let mut words = line.split_whitespace();
        let first = words.next().unwrap_or("");
        if words.next().is_some() {
            return Err(err(format!(
                "{:?}: one address or CIDR per line (comments start with # or ;)",
                crate::display_safe(line)
            )));
        }
        out.push(first.parse::<Cidr>().map_err(err)?);
    }
    Ok(out)
}

/// Read and parse a block list file.
pub fn read_feed(path: &std::path::Path) -> Result<Vec<Cidr>, FeedError> {
    let name = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|e| FeedError {
        file: name.clone(),
        line: 0,
        message: format!("cannot read: {e}"),
        text: String::new(),
    })?;
    parse_feed(&name, &text)
}

/// What the kernel holds for a set of block lists: one entry per distinct prefix (the lists it
/// is on, the latest expiry), and which representation each family uses.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct BlockSet {
    pub v4: HashMap<BlockKeyV4, BlockValue>,
    pub v6: HashMap<BlockKeyV6, BlockValue>,
    pub meta: BlockMeta,
}

fn merge(v: &mut BlockValue, list: u32, expires: u64) {
    if v.lists == 0 {
        v.expires = expires;
    } else if v.expires != 0 {
        v.expires = if expires == 0 {
            0
        } else {
            v.expires.max(expires)
        };
    }
    v.lists |= 1 << list;
}

impl BlockSet {
    /// Add `cidr` as a member of list `list` (< [`MAX_LISTS`]), blocking until `expires`
    /// (CLOCK_MONOTONIC_COARSE ns; 0: for good). Call [`BlockSet::finish`] after the last one.
    pub fn add(&mut self, list: u32, cidr: &Cidr, expires: u64) {
        let list = list.min(MAX_LISTS - 1);
        match cidr {
            Cidr::V4(a, l) => merge(
                self.v4.entry(BlockKeyV4::new(a, *l)).or_default(),
                list,
                expires,
            ),
            Cidr::V6(a, l) => merge(
                self.v6.entry(BlockKeyV6::new(a, *l)).or_default(),
                list,
                expires,
            ),
        }
    }

    /// Work out the prefix lengths in use and the representation of each family.
    pub fn finish(&mut self) {
        let l4: BTreeSet<u8> = self.v4.keys().map(|k| k.len).collect();
        let l6: BTreeSet<u8> = self.v6.keys().map(|k| k.len).collect();
        let mut m = BlockMeta::default();
        if l4.len() > HASH_MAX_LENS.min(MAX_HASH_LENS) {
            m.lpm4 = 1;
        } else {
            for (i, l) in l4.iter().rev().enumerate() {
                m.lens4[i] = *l;
            }
            m.n4 = l4.len() as u8;
        }
        if l6.len() > HASH_MAX_LENS.min(MAX_HASH_LENS) {
            m.lpm6 = 1;
        } else {
            for (i, l) in l6.iter().rev().enumerate() {
                m.lens6[i] = *l;
            }
            m.n6 = l6.len() as u8;
        }
        self.meta = m;
    }

    pub fn len(&self) -> usize {
        self.v4.len() + self.v6.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The longest-prefix entry holding `addr` (what the LPM trie answers).
    pub fn longest_v4(&self, addr: &[u8; 4]) -> Option<BlockValue> {
        (0..=32u8)
            .rev()
            .find_map(|l| self.v4.get(&BlockKeyV4::new(addr, l)).copied())
    }

    pub fn longest_v6(&self, addr: &[u8; 16]) -> Option<BlockValue> {
        (0..=128u8)
            .rev()
            .find_map(|l| self.v6.get(&BlockKeyV6::new(addr, l)).copied())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spamhaus_firehol_and_plain_lists_parse() {
        let spamhaus = "; Spamhaus DROP List 2026/12/07\n; Last-Modified: x\n1.10.16.0/20 ; SBL256894\n2.56.192.0/22 ; SBL459831\n";
        let firehol = "#\n# firehol_level1\n#\n0.0.0.0/8\n1.10.16.0/20\n\n";
        let plain = "203.0.113.7\n2001:db8::/32\n  198.51.100.1  \n";
        assert_eq!(parse_feed("s", spamhaus).unwrap().len(), 2);
        assert_eq!(parse_feed("f", firehol).unwrap().len(), 2);
        let p = parse_feed("p", plain).unwrap();
        assert_eq!(p[1], "2001:db8::/32".parse().unwrap());
    }

    #[test]
    fn a_garbage_line_is_an_error_naming_file_and_line() {
        let e = parse_feed("feed.txt", "1.2.3.4\n# ok\nnot-an-address\n5.6.7.8\n").unwrap_err();
        assert_eq!((e.file.as_str(), e.line), ("feed.txt", 3));
        assert!(e.to_string().starts_with("feed.txt:3:"), "{e}");
        let e = parse_feed("f", "1.2.3.4 5.6.7.8\n").unwrap_err();
        assert_eq!(e.line, 1);
        let e = parse_feed("f", "10.0.0.1/8\n").unwrap_err();
        assert!(e.message.contains("host bits"), "{e}");
    }

    #[test]
    fn few_prefix_lengths_use_hash_tables_many_use_the_trie() {
        let mut s = BlockSet::default();
        s.add(0, &"10.0.0.0/8".parse().unwrap(), 0);
        s.add(0, &"192.0.2.1".parse().unwrap(), 0);
        s.finish();
        assert_eq!((s.meta.lpm4, s.meta.n4), (0, 2));
        assert_eq!(&s.meta.lens4[..2], &[32, 8]);
        for l in [9, 10, 11, 12, 13] {
            s.add(2, &Cidr::V4([10, 0, 0, 0], l), 0);
        }
        s.finish();
        assert_eq!(s.meta.lpm4, 1);
        assert_eq!(s.longest_v4(&[10, 1, 2, 3]).unwrap().lists, 1 << 2);
        assert_eq!(s.longest_v4(&[10, 200, 2, 3]).unwrap().lists, 1);
    }

    #[test]
    fn a_prefix_on_two_lists_expires_only_when_both_do() {
        let mut s = BlockSet::default();
        let c: Cidr = "192.0.2.0/24".parse().unwrap();
        s.add(0, &c, 100);
        s.add(3, &c, 0);
        let v = s.v4[&BlockKeyV4::new(&[192, 0, 2, 0], 24)];
        assert_eq!((v.expires, v.lists), (0, 0b1001));
    }
}
