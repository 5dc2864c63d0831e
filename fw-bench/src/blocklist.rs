//! Block lists at scale (issue 12, "How it is measured"): per-packet cost of a packet from a
//! blocked source (hit at a /32 and at a short prefix) and of a legitimate packet (miss) with
//! 1, 1k, 100k and 1M entries, in the representation fw itself chooses for the list; then, on
//! an attached filter, the load time of each list through the library call `fw block import`
//! makes, the block maps' memory and the drop rate of a blocked-source flood
//! ([`super::blocklist_load`]).
//!
//! Two list shapes, from a fixed-seed generator (no download):
//! - **feed**: a threat feed such as FireHOL level 1–3 or Spamhaus DROP — mostly single
//!   addresses, some /24s, fewer /16–/23, a few /11–/15. It uses more than four prefix lengths
//!   from 1k entries on, so fw holds it in its LPM trie;
//! - **hosts**: single addresses only (fail2ban exports, IP blacklists), which fw holds in a
//!   hash table (one prefix length: one lookup).

use std::{collections::HashSet, fmt::Write as _, time::Instant};

use fw::blocklist::{BlockStore, desired};
use fw_common::{block::BlockMeta, maps::ALL_MAPS, tcp::SYN};
use fw_lab::Rng;
use fw_policy::{Cidr, Policy, blocks::BlockSet};
use serde_json::{Value, json};

use super::{
    Opts, Progress,
    frames::syn_template,
    lab::{DropProg, FwInstance, SEND_V4, fw_seed_policy},
    stats::median,
    sys::{self, test_run},
};

/// The blocked /32 every list holds (TEST-NET-3; no generated entry covers 203.0.0.0/8).
pub const HIT_LONG: &str = "203.0.113.66";
/// A source inside the short prefix [`SHORT_NET`] (no generated entry covers 100.0.0.0/8).
pub const HIT_SHORT: &str = "100.100.1.1";
pub const SHORT_NET: ([u8; 4], u8) = ([100, 64, 0, 0], 10);
/// The port the packets go to: open in the seed policy, so a miss passes.
pub const DPORT: u16 = 80;
/// The name the lists are imported under (`fw block import FILE --list NAME`).
pub const LIST: &str = "bench";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Shape {
    Feed,
    Hosts,
}

/// What a cost point holds: a list in the form fw picks, or (the proposal measured beside it) a
/// feed expanded into at most four hash lengths ([`fw_policy::blocks_expand`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Series {
    Product(Shape),
    FeedExpanded,
}

impl Series {
    pub const ALL: [Series; 3] = [
        Series::Product(Shape::Feed),
        Series::Product(Shape::Hosts),
        Series::FeedExpanded,
    ];

    pub fn key(self) -> &'static str {
        match self {
            Series::Product(s) => s.key(),
            Series::FeedExpanded => "feed_expanded",
        }
    }

    pub fn shape(self) -> Shape {
        match self {
            Series::Product(s) => s,
            Series::FeedExpanded => Shape::Feed,
        }
    }
}

/// Hash lengths the expansion may use (fw's hash form probes at most this many).
pub const EXPAND_LENS: usize = fw_policy::blocks::HASH_MAX_LENS;

/// `set` expanded into at most [`EXPAND_LENS`] hash lengths (`None` when that would not fit the
/// hash map).
pub fn expanded(set: &BlockSet) -> Option<BlockSet> {
    use fw_policy::blocks_expand::{counts_v4, expand_v4, plan};
    let p = plan(
        &counts_v4(&set.v4),
        EXPAND_LENS,
        u64::from(fw_common::maps::BLOCK_V4_MAX),
    )?;
    let mut out = set.clone();
    out.v4 = expand_v4(&set.v4, &p);
    out.meta.lpm4 = 0;
    out.meta.n4 = p.lens.len() as u8;
    out.meta.lens4 = [0; fw_common::block::MAX_HASH_LENS];
    for (i, l) in p.lens.iter().rev().enumerate() {
        out.meta.lens4[i] = *l;
    }
    Some(out)
}

impl Shape {
    pub const ALL: [Shape; 2] = [Shape::Feed, Shape::Hosts];

    pub fn key(self) -> &'static str {
        match self {
            Shape::Feed => "feed",
            Shape::Hosts => "hosts",
        }
    }
}

/// The list sizes measured. The full run's are the issue's; `--quick` keeps them too (the target
/// is about 1M) but measures fewer rounds.
pub fn points(_opts: &Opts) -> Vec<usize> {
    vec![1, 1_000, 100_000, 1_000_000]
}

fn octets(s: &str) -> [u8; 4] {
    s.parse::<std::net::Ipv4Addr>().expect("address").octets()
}

/// A prefix length drawn like a threat feed's: 85 % /32, 8 % /24, 4 % /20–/23, 2.5 % /16–/19,
/// 0.5 % /11–/15 (Spamhaus DROP is /11–/24; FireHOL level 3 and blocklist.de are mostly
/// single addresses).
fn feed_len(r: u64) -> u8 {
    let pick = (r % 1000) as u32;
    let sub = ((r >> 10) % 5) as u8;
    match pick {
        0..850 => 32,
        850..930 => 24,
        930..970 => 20 + sub % 4,
        970..995 => 16 + sub % 4,
        _ => 11 + sub,
    }
}

/// `n` distinct block list entries of `shape` (fixed seed: the same list every run). The first
/// is [`HIT_LONG`]/32; from `n` ≥ 2 on a feed holds [`SHORT_NET`] second. Generated entries stay
/// out of 0/8, 100/8, 127/8, 198/8 (the lab), 203/8 and 224/3, so the probes match only their
/// own entries and the lab's sources none.
pub fn list(shape: Shape, n: usize) -> Vec<Cidr> {
    let mut out = Vec::with_capacity(n);
    let mut seen: HashSet<(u32, u8)> = HashSet::with_capacity(n);
    let mut push = |out: &mut Vec<Cidr>, a: [u8; 4], l: u8| {
        let m = if l == 0 { 0 } else { u32::MAX << (32 - l) };
        let a = u32::from_be_bytes(a) & m;
        if seen.insert((a, l)) {
            out.push(Cidr::V4(a.to_be_bytes(), l));
        }
    };
    if n >= 1 {
        push(&mut out, octets(HIT_LONG), 32);
    }
    if n >= 2 && shape == Shape::Feed {
        push(&mut out, SHORT_NET.0, SHORT_NET.1);
    }
    let mut rng = Rng::new(0xb10c_0000 + n as u64);
    // Bounded: short lengths run out of distinct values, so some draws repeat.
    for _ in 0..n.saturating_mul(4) {
        if out.len() >= n {
            break;
        }
        let r = rng.next_u64();
        let a = ((r >> 32) as u32).to_be_bytes();
        if matches!(a[0], 0 | 100 | 127 | 198 | 203) || a[0] >= 224 {
            continue;
        }
        let l = match shape {
            Shape::Feed => feed_len(r),
            Shape::Hosts => 32,
        };
        push(&mut out, a, l);
    }
    assert_eq!(out.len(), n, "the generator could not make {n} entries");
    out
}

/// The list as a feed file: FireHOL's header comments, single addresses without `/32`, and some
/// lines in Spamhaus DROP's `CIDR ; SBLnnn` form.
pub fn feed_text(shape: Shape, cidrs: &[Cidr]) -> String {
    let mut s = String::with_capacity(cidrs.len() * 18 + 200);
    let _ = writeln!(
        s,
        "#\n# fw-bench {} list, {} entries (fixed seed)\n#",
        shape.key(),
        cidrs.len()
    );
    for (i, c) in cidrs.iter().enumerate() {
        match c {
            Cidr::V4(a, 32) => {
                let _ = writeln!(s, "{}.{}.{}.{}", a[0], a[1], a[2], a[3]);
            }
            c if i % 7 == 0 => {
                let _ = writeln!(s, "{c} ; SBL{}", 100_000 + i);
            }
            c => {
                let _ = writeln!(s, "{c}");
            }
        }
    }
    s
}

/// What the kernel holds for `cidrs` imported as one list: the product's own derivation
/// (`fw::blocklist::desired`, as `fw block import` computes it).
pub fn block_set(cidrs: &[Cidr], policy: &Policy) -> anyhow::Result<BlockSet> {
    let mut store = BlockStore::default();
    let l = store.list_mut(LIST)?;
    l.entries = cidrs
        .iter()
        .map(|c| fw::blocklist::StoredEntry {
            cidr: *c,
            expires: None,
            comment: None,
        })
        .collect();
    Ok(desired(&store, policy))
}

pub fn form(m: &BlockMeta) -> String {
    if m.lpm4 != 0 {
        "LPM trie".into()
    } else if m.n4 == 0 {
        "none".into()
    } else {
        format!("hash, {} length{}", m.n4, if m.n4 == 1 { "" } else { "s" })
    }
}

/// memlock bytes of the block maps of `inst` (all five, whatever the form in use).
pub fn block_memory(maps: &[(String, u64, u32)]) -> u64 {
    maps.iter()
        .filter(|(n, ..)| n.starts_with("FW_BLOCK") || n.starts_with("FW_BLKLPM"))
        .map(|m| m.1)
        .sum()
}

/// The packets test-run on every point: (key, source).
pub const PACKETS: [(&str, &str); 3] = [
    ("hit_long", HIT_LONG),
    ("hit_short", HIT_SHORT),
    ("miss", SEND_V4),
];

struct Point {
    series: Option<Series>,
    n: usize,
    inst: FwInstance,
    form: String,
    write_ms: f64,
    block_bytes: u64,
    /// Entries in the map (an expanded list holds more than it has lines).
    map_entries: usize,
    /// Which of [`PACKETS`] apply (a short-prefix hit needs the feed's /10).
    applies: [bool; 3],
}

/// Instances loaded per list: identical instances differ by up to ~15 % in test-run time (where
/// the program and maps land in memory), more than the 10 % the target allows, so each point is
/// the median of several.
pub fn instances(opts: &Opts) -> usize {
    if opts.quick { 2 } else { 3 }
}

/// `instances(opts)` fw instances holding `set` (none: no block list).
fn load_copies(
    opts: &Opts,
    policy: &Policy,
    series: Option<Series>,
    n: usize,
    set: Option<&BlockSet>,
    pts: &mut Vec<Point>,
) -> anyhow::Result<()> {
    for _ in 0..instances(opts) {
        let mut inst = FwInstance::load_sized("blk0", policy, 1024)?;
        let t = Instant::now();
        if let Some(set) = set {
            inst.loaded
                .maps
                .flood
                .sync_blocks(&BlockSet::default(), set)?;
        }
        let write_ms = t.elapsed().as_secs_f64() * 1e3;
        let short = series.is_some_and(|s| s.shape() == Shape::Feed) && n >= 2;
        pts.push(Point {
            series,
            n,
            form: set.map_or("none".into(), |s| form(&s.meta)),
            block_bytes: block_memory(&inst.memory()),
            inst,
            write_ms,
            map_entries: set.map_or(0, |s| s.v4.len()),
            // With no list, the short-prefix source passes like any other.
            applies: [true, short || series.is_none(), true],
        });
    }
    Ok(())
}

fn load_points(opts: &Opts, p: &mut Progress, policy: &Policy) -> anyhow::Result<Vec<Point>> {
    let mut pts = Vec::new();
    // Reference: the seed policy with no block list (the flood program is not even called).
    load_copies(opts, policy, None, 0, None, &mut pts)?;
    for series in Series::ALL {
        for &n in &points(opts) {
            sys::check_interrupt()?;
            p.step(&format!(
                "block lists: fw with a {n}-entry {} list",
                series.key()
            ));
            let mut set = block_set(&list(series.shape(), n), policy)?;
            if series == Series::FeedExpanded {
                match expanded(&set) {
                    Some(e) => set = e,
                    None => continue,
                }
            }
            load_copies(opts, policy, Some(series), n, Some(&set), &mut pts)?;
        }
    }
    Ok(pts)
}

/// ns above the round's floor per [point][packet] and round; verdicts per [point][packet];
/// the floor of each round.
type Measured = (Vec<Vec<Vec<f64>>>, Vec<Vec<u32>>, Vec<f64>);

/// Per-packet cost, interleaved across every point and packet, round after round, with the
/// floor measured at the start and end of each round.
fn measure(
    opts: &Opts,
    p: &mut Progress,
    pts: &mut [Point],
    frames: &[Vec<u8>],
) -> anyhow::Result<Measured> {
    let mut floor = DropProg::load()?;
    let floor_fd = floor.prog_fd()?;
    let fds: Vec<_> = pts
        .iter_mut()
        .map(|pt| pt.inst.prog_fd())
        .collect::<anyhow::Result<_>>()?;
    let rounds = rounds(opts);
    let cpu = sys::nr_cpus() - 1;
    // above[point][packet] = ns above that round's floor, per round.
    let mut above = vec![vec![Vec::new(); PACKETS.len()]; pts.len()];
    let mut verdict = vec![vec![0u32; PACKETS.len()]; pts.len()];
    let mut floors = Vec::new();
    let applies: Vec<[bool; 3]> = pts.iter().map(|pt| pt.applies).collect();
    std::thread::scope(|s| {
        s.spawn(|| -> anyhow::Result<()> {
            let _pin = fw_lab::link::CpuPin::cpu(cpu)?;
            for round in 0..rounds {
                p.step(&format!(
                    "block lists: per-packet cost, round {}/{rounds}",
                    round + 1
                ));
                let f0 = f64::from(test_run(floor_fd, &frames[0], opts.repeat)?.ns);
                let mut got = Vec::new();
                for k in 0..fds.len() {
                    // Rotate the order so no point always runs right after another.
                    let i = (k + round) % fds.len();
                    for (j, fr) in frames.iter().enumerate() {
                        if !applies[i][j] {
                            continue;
                        }
                        sys::check_interrupt()?;
                        let r = test_run(fds[i], fr, opts.repeat)?;
                        got.push((i, j, f64::from(r.ns)));
                        verdict[i][j] = r.retval;
                    }
                }
                let f1 = f64::from(test_run(floor_fd, &frames[0], opts.repeat)?.ns);
                let fl = (f0 + f1) / 2.0;
                floors.push(fl);
                for (i, j, ns) in got {
                    above[i][j].push(ns - fl);
                }
            }
            Ok(())
        })
        .join()
        .map_err(|_| anyhow::anyhow!("block list cost thread panicked"))?
    })?;
    drop(floor);
    Ok((above, verdict, floors))
}

/// Rounds of this section: at least 5, since its target is a 10 % band.
pub fn rounds(opts: &Opts) -> usize {
    opts.rounds.max(5)
}

/// The cost part; returns (rows, growth entries).
fn cost(opts: &Opts, p: &mut Progress) -> anyhow::Result<(Vec<Value>, Vec<Value>, f64)> {
    let policy = fw_seed_policy()?;
    let mut pts = load_points(opts, p, &policy)?;
    let (mac, mac2) = ([2u8, 0, 0, 0, 0, 1], [2u8, 0, 0, 0, 0, 2]);
    let frames: Vec<Vec<u8>> = PACKETS
        .iter()
        .map(|(_, src)| syn_template(src, 40000, DPORT, SYN, &mac, &mac2))
        .collect();
    let (above, verdict, floors) = measure(opts, p, &mut pts, &frames)?;
    let mut rows = Vec::new();
    let mut i = 0;
    while i < pts.len() {
        // The copies of one list are consecutive.
        let pt = &pts[i];
        let end = (i..pts.len())
            .find(|&x| pts[x].series != pt.series || pts[x].n != pt.n)
            .unwrap_or(pts.len());
        let copies = i..end;
        let mut row = json!({
            "shape": pt.series.map_or("none", Series::key),
            "entries": pt.n,
            "map_entries": pt.map_entries,
            "form": pt.form,
            "instances": end - i,
            "write_ms": median(&pts[copies.clone()].iter().map(|x| x.write_ms).collect::<Vec<_>>()),
            "block_maps_bytes": pt.block_bytes,
        });
        for (j, (k, _)) in PACKETS.iter().enumerate() {
            if pt.applies[j] {
                let per: Vec<f64> = copies.clone().map(|c| median(&above[c][j])).collect();
                row[*k] = json!(median(&per));
                row[format!("{k}_instances")] = json!(per);
                let v: std::collections::BTreeSet<u32> =
                    copies.clone().map(|c| verdict[c][j]).collect();
                row[format!("{k}_verdict")] = json!(match v.len() {
                    1 => super::cost::verdict(verdict[i][j]),
                    _ => "differs between instances",
                });
                row[format!("{k}_rounds")] = json!(
                    copies
                        .clone()
                        .map(|c| above[c][j].clone())
                        .collect::<Vec<_>>()
                );
            }
        }
        rows.push(row);
        i = end;
    }
    let growth = growth(&rows);
    Ok((rows, growth, median(&floors)))
}

/// Growth of each packet's cost above the floor from the smallest list that holds it to the
/// largest, per shape.
fn growth(rows: &[Value]) -> Vec<Value> {
    let mut out = Vec::new();
    for series in Series::ALL {
        let mine: Vec<&Value> = rows.iter().filter(|r| r["shape"] == series.key()).collect();
        for (k, _) in PACKETS {
            let have: Vec<(u64, f64)> = mine
                .iter()
                .filter_map(|r| Some((r["entries"].as_u64()?, r[k].as_f64()?)))
                .collect();
            if let (Some(a), Some(b)) = (have.first(), have.last())
                && a.0 < b.0
            {
                out.push(json!({
                    "shape": series.key(),
                    "packet": k,
                    "from": a.0,
                    "to": b.0,
                    "from_ns": a.1,
                    "to_ns": b.1,
                    "growth": b.1 / a.1 - 1.0,
                }));
            }
        }
    }
    out
}

pub fn run(opts: &Opts, p: &mut Progress) -> anyhow::Result<Value> {
    let (rows, growth, floor) = cost(opts, p)?;
    let largest = points(opts).last().copied().unwrap_or(1);
    let same = super::blocklist_same::run(opts, p, largest)?;
    let load = super::blocklist_load::run(opts, p)?;
    let forms = super::blocklist_forms::run(opts, p)?;
    let maps: Vec<&str> = ALL_MAPS
        .iter()
        .copied()
        .filter(|n| n.starts_with("FW_BLOCK") || n.starts_with("FW_BLKLPM"))
        .collect();
    Ok(json!({
        "method": "Per-packet cost: several fw instances per list (seed policy plus 5201/tcp, connection state on), \
                   the list written into its block maps by fw's own code (the set `fw block import` derives, \
                   `FloodMaps::sync_blocks`), in the representation fw chooses for it; BPF_PROG_TEST_RUN of a SYN \
                   to port 80 from a blocked /32 (hit_long), from inside a blocked /10 (hit_short, feed lists \
                   of 2 entries or more) and from a source on no list (miss: what every legitimate packet pays), \
                   interleaved across lists round after round, ns above the XDP_DROP floor of the same round, \
                   medians (of each instance, then across instances). Flatness, the target: a crossover per series, two \
                   more instances, one holding 1 entry and one the largest list, measured interleaved, then the \
                   lists swapped and measured again; growth = mean over both phases of (big − 1 entry) over the \
                   1-entry cost (instance placement and machine drift cancel). Load, memory and drop rate: fw attached to a veth in a namespace pair by the \
                   library call `fw up` makes (`Filter::up_at`), each list written to a file and imported by \
                   the calls `fw block import` makes (`read_feed`, then `Filter::block_import`, which writes \
                   blocks.json ahead and then the maps; the lockout guard is forced off), memlock of the \
                   block maps from their fdinfo, then a 60-byte SYN flood from blocked sources through the \
                   bench's veth generator. The forms under floods from many sources: a lab fw instance attached \
                   to a veth holds each series' list; floods from one blocked source, from 64 blocked sources \
                   spread over the list and from 64 sources on no list (to closed port 0), since test-run's one \
                   repeated address keeps a lookup's path in the CPU caches.",
        "repeat": opts.repeat,
        "rounds": rounds(opts),
        "instances": instances(opts),
        "floor_ns": floor,
        "block_maps": maps,
        "cost": rows,
        "growth": growth,
        "same_instance": same,
        "load": load,
        "forms_flood": forms,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn feed_lists_are_distinct_use_many_lengths_and_hold_the_probes_only_where_placed() {
        let l = list(Shape::Feed, 20_000);
        assert_eq!(l.len(), 20_000);
        assert_eq!(l[0], Cidr::V4(octets(HIT_LONG), 32));
        assert_eq!(l[1], Cidr::V4(SHORT_NET.0, SHORT_NET.1));
        let lens: HashSet<u8> = l
            .iter()
            .map(|c| match c {
                Cidr::V4(_, n) => *n,
                Cidr::V6(..) => 0,
            })
            .collect();
        assert!(lens.len() > 4 && lens.contains(&32) && lens.contains(&24));
        let set = block_set(&l, &Policy::default()).unwrap();
        assert_eq!(set.meta.lpm4, 1, "a feed goes into the trie");
        for (a, want) in [(HIT_LONG, true), (HIT_SHORT, true), (SEND_V4, false)] {
            assert_eq!(set.longest_v4(&octets(a)).is_some(), want, "{a}");
        }
        assert_eq!(
            list(Shape::Feed, 20_000),
            l,
            "the generator is deterministic"
        );
    }

    #[test]
    fn host_lists_are_single_addresses_in_one_hash_length() {
        let l = list(Shape::Hosts, 5_000);
        let set = block_set(&l, &Policy::default()).unwrap();
        assert_eq!((set.meta.lpm4, set.meta.n4, set.meta.lens4[0]), (0, 1, 32));
        assert_eq!(set.v4.len(), 5_000);
        assert!(set.longest_v4(&octets(HIT_SHORT)).is_none());
    }

    #[test]
    fn an_expanded_feed_uses_at_most_four_hash_lengths_and_blocks_the_same_sources() {
        let set = block_set(&list(Shape::Feed, 20_000), &Policy::default()).unwrap();
        let e = expanded(&set).unwrap();
        assert_eq!(e.meta.lpm4, 0);
        assert!((1..=4).contains(&e.meta.n4), "{:?}", e.meta);
        assert!(e.v4.len() > set.v4.len());
        for a in [HIT_LONG, HIT_SHORT, SEND_V4, "1.2.3.4", "45.67.89.10"] {
            assert_eq!(e.longest_v4(&octets(a)), set.longest_v4(&octets(a)), "{a}");
        }
    }

    #[test]
    fn the_feed_file_parses_back_to_the_list() {
        let l = list(Shape::Feed, 3_000);
        let back = fw_policy::blocks::parse_feed("f", &feed_text(Shape::Feed, &l)).unwrap();
        assert_eq!(back, l);
    }
}
