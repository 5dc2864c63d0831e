//! The block-list forms under floods from many sources. BPF_PROG_TEST_RUN repeats one packet, so
//! one source's path through the table stays in the CPU's caches; real traffic comes from many
//! sources. Here an attached fw instance (the lab's [`super::lab::FwInstance`]) holds each series'
//! list and the veth generator sends 60-byte SYNs from one blocked source, from 64 blocked
//! sources spread over the list, and from 64 sources on no list (to a closed port: the rules
//! drop them, after the block-list lookup every packet pays while a list is in use).

use std::time::Duration;

use fw_common::tcp::SYN;
use fw_lab::Rng;
use fw_policy::{Cidr, blocks::BlockSet};
use serde_json::{Value, json};

use super::{
    Opts, Progress,
    blocklist::{DPORT, HIT_LONG, Series, block_set, expanded, form, list, points},
    flood::flood,
    frames::syn_template,
    lab::{Pair, Setup, fw_seed_policy},
    stats::median,
    sys,
};

/// Up to 64 addresses, one inside each of entries drawn across `cidrs` (a fixed seed).
pub fn blocked_sources(cidrs: &[Cidr]) -> Vec<String> {
    let mut rng = Rng::new(0x5b12_ead0 + cidrs.len() as u64);
    (0..64)
        .map(|_| match cidrs[rng.below(cidrs.len())] {
            Cidr::V4(a, l) => {
                let host = if l >= 32 {
                    0
                } else {
                    (rng.next_u64() as u32) & (u32::MAX >> l)
                };
                std::net::Ipv4Addr::from(u32::from_be_bytes(a) | host).to_string()
            }
            Cidr::V6(..) => HIT_LONG.to_string(),
        })
        .collect()
}

/// 64 addresses spread over the address space that `set` does not block.
fn clean_sources(set: &BlockSet) -> Vec<String> {
    let mut rng = Rng::new(0xc1ea_0000);
    let mut out = Vec::new();
    // Bounded: almost every draw is clean (a list covers a tiny part of the space).
    for _ in 0..100_000 {
        if out.len() == 64 {
            break;
        }
        let a = (rng.next_u64() as u32).to_be_bytes();
        if matches!(a[0], 0 | 127) || a[0] >= 224 || set.longest_v4(&a).is_some() {
            continue;
        }
        out.push(std::net::Ipv4Addr::from(a).to_string());
    }
    out
}

const FLOODS: [&str; 3] = ["blocked_one", "blocked_64", "clean_64"];

fn flood_point(
    opts: &Opts,
    pair: &mut Pair,
    cidrs: &[Cidr],
    set: &BlockSet,
) -> anyhow::Result<Value> {
    let (d, s) = (pair.r_mac, pair.s_mac);
    let one: Vec<Vec<u8>> = (0..16)
        .map(|i| syn_template(HIT_LONG, 10000 + i, DPORT, SYN, &d, &s))
        .collect();
    let spread = |srcs: Vec<String>, dport: u16| -> Vec<Vec<u8>> {
        srcs.iter()
            .enumerate()
            .map(|(i, src)| syn_template(src, 10000 + i as u16, dport, SYN, &d, &s))
            .collect()
    };
    let blocked = spread(blocked_sources(cidrs), DPORT);
    // Port 0: closed in every policy, so these never reach the host's stack.
    let clean = spread(clean_sources(set), 0);
    pair.generators.clear();
    pair.add_generator(FLOODS[0], &one)?;
    pair.add_generator(FLOODS[1], &blocked)?;
    pair.add_generator(FLOODS[2], &clean)?;
    let cpu = sys::nr_cpus() - 1;
    let mut kns = vec![Vec::new(); FLOODS.len()];
    for round in 0..opts.rounds {
        for k in 0..FLOODS.len() {
            let g = (k + round) % FLOODS.len();
            sys::check_interrupt()?;
            let st = flood(
                pair,
                g,
                opts.flood_time,
                Duration::from_millis(50),
                cpu,
                None,
            )?;
            kns[g].push(st.kernel_ns);
        }
    }
    let mut out = json!({});
    for (g, key) in FLOODS.iter().enumerate() {
        out[*key] = json!(median(&kns[g]));
        out[format!("{key}_rounds")] = json!(kns[g]);
    }
    Ok(out)
}

pub fn run(opts: &Opts, p: &mut Progress) -> anyhow::Result<Value> {
    p.step("block lists: fw (lab instance) attached in a namespace pair for the forms' floods");
    let policy = fw_seed_policy()?;
    let mut pair = Pair::create(31, Setup::None)?;
    pair.install(Setup::Fw, Some(&policy))?;
    let mut held = BlockSet::default();
    let mut rows = Vec::new();
    for s in Series::ALL {
        for &n in &points(opts) {
            sys::check_interrupt()?;
            p.step(&format!("block lists: floods, {n}-entry {} list", s.key()));
            let cidrs = list(s.shape(), n);
            let mut set = block_set(&cidrs, &policy)?;
            if s == Series::FeedExpanded {
                match expanded(&set) {
                    Some(e) => set = e,
                    None => continue,
                }
            }
            let fw = pair.fw.as_mut().expect("fw installed");
            fw.loaded.maps.flood.sync_blocks(&held, &set)?;
            held = set.clone();
            let mut row = flood_point(opts, &mut pair, &cidrs, &set)?;
            row["series"] = json!(s.key());
            row["entries"] = json!(n);
            row["form"] = json!(form(&set.meta));
            rows.push(row);
        }
    }
    Ok(
        json!({"rows": rows, "rounds": opts.rounds, "seconds_per_flood": opts.flood_time.as_secs_f64()}),
    )
}
