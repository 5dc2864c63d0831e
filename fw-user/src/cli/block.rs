//! `fw block add|del|list|import`: block lists beside the policy, on the running filter.

use std::path::PathBuf;

use anyhow::Context as _;

use crate::{filter::Filter, filter::flood::BlockReport, guard::Guard, paths::IfaceName};
use fw_policy::{Cidr, blocks::read_feed, display_safe, limit::duration_text};

#[derive(Debug, clap::Subcommand)]
pub enum BlockCmd {
    /// Drop every packet from these sources, on every port, before anything else.
    Add(AddArgs),
    /// Unblock sources (added by `fw block add`, or banned); or remove a whole list.
    Del(DelArgs),
    /// Block lists, their sizes and hits, and the current bans with their expiry.
    List(ListArgs),
    /// Replace a named block list by a file (one address/CIDR per line; `#`/`;` comments).
    Import(ImportArgs),
}

#[derive(Debug, clap::Args)]
pub struct AddArgs {
    /// Addresses or CIDRs, IPv4 or IPv6.
    #[arg(required = true)]
    pub cidrs: Vec<Cidr>,
    /// Lift the block after this many seconds.
    #[arg(long)]
    pub timeout: Option<u64>,
    #[arg(long)]
    pub comment: Option<String>,
    #[arg(long = "iface", short = 'i')]
    pub ifaces: Vec<IfaceName>,
    /// Block even if the lockout guard objects (it would cut your SSH session).
    #[arg(long)]
    pub force: bool,
}

#[derive(Debug, clap::Args)]
pub struct DelArgs {
    pub cidrs: Vec<Cidr>,
    /// Remove this whole list (from `fw block import`).
    #[arg(long)]
    pub list: Option<String>,
    #[arg(long = "iface", short = 'i')]
    pub ifaces: Vec<IfaceName>,
}

#[derive(Debug, clap::Args)]
pub struct ListArgs {
    #[arg(long)]
    pub json: bool,
    #[arg(long = "iface", short = 'i')]
    pub ifaces: Vec<IfaceName>,
}

#[derive(Debug, clap::Args)]
pub struct ImportArgs {
    pub file: PathBuf,
    /// The list's name (default: the file name without extension). Importing again into the
    /// same name replaces the list as a whole.
    #[arg(long)]
    pub list: Option<String>,
    #[arg(long = "iface", short = 'i')]
    pub ifaces: Vec<IfaceName>,
    #[arg(long)]
    pub force: bool,
}

fn guard(force: bool) -> Guard {
    if force { Guard::Force } else { Guard::Check }
}

pub fn execute(c: BlockCmd) -> anyhow::Result<()> {
    match c {
        BlockCmd::Add(a) => {
            for iface in super::target_ifaces(&a.ifaces)? {
                let mut f = Filter::open(&iface).with_context(|| format!("fw block on {iface}"))?;
                let m = f
                    .block_add(&a.cidrs, a.timeout, a.comment.clone(), guard(a.force))
                    .with_context(|| format!("fw block add on {iface}"))?;
                println!("{iface}: {m}");
            }
        }
        BlockCmd::Del(a) => {
            if a.cidrs.is_empty() && a.list.is_none() {
                anyhow::bail!("say what to unblock: addresses/CIDRs, or --list NAME");
            }
            for iface in super::target_ifaces(&a.ifaces)? {
                let mut f = Filter::open(&iface).with_context(|| format!("fw block on {iface}"))?;
                if let Some(l) = &a.list {
                    println!("{iface}: {}", f.block_drop_list(l)?);
                }
                if !a.cidrs.is_empty() {
                    for m in f.block_del(&a.cidrs)? {
                        println!("{iface}: {m}");
                    }
                }
            }
        }
        BlockCmd::List(a) => {
            let mut all = Vec::new();
            for iface in super::target_ifaces(&a.ifaces)? {
                let f = Filter::open(&iface).with_context(|| format!("fw block on {iface}"))?;
                all.push((iface.to_string(), f.block_report()?));
            }
            if a.json {
                let v: Vec<_> = all
                    .iter()
                    .map(|(i, r)| serde_json::json!({"iface": i, "blocks": r}))
                    .collect();
                println!("{}", serde_json::to_string_pretty(&v)?);
            } else {
                for (iface, r) in &all {
                    print_report(iface, r);
                }
            }
        }
        BlockCmd::Import(a) => {
            // The whole file is read and checked before anything changes.
            let cidrs = read_feed(&a.file)?;
            let name = match &a.list {
                Some(n) => n.clone(),
                None => a
                    .file
                    .file_stem()
                    .and_then(|s| s.to_str())
                    .unwrap_or("imported")
                    .to_string(),
            };
            check_list_name(&name)?;
            let source = a.file.display().to_string();
            for iface in super::target_ifaces(&a.ifaces)? {
                let mut f = Filter::open(&iface).with_context(|| format!("fw block on {iface}"))?;
                let t = std::time::Instant::now();
                let m = f.block_import(&name, &source, cidrs.clone(), guard(a.force))?;
                println!("{iface}: {m} ({:.2} s)", t.elapsed().as_secs_f64());
            }
        }
    }
    Ok(())
}

fn check_list_name(n: &str) -> anyhow::Result<()> {
    if n.is_empty()
        || n.len() > 64
        || !n
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
    {
        anyhow::bail!(
            "{:?} is not a list name (letters, digits, - _ . ; at most 64)",
            display_safe(n)
        );
    }
    Ok(())
}

fn print_report(iface: &str, r: &BlockReport) {
    println!(
        "{iface}: block lists (IPv4 lookup: {}; IPv6 lookup: {})",
        r.v4_lookup, r.v6_lookup
    );
    if r.policy_entries > 0 {
        println!("  policy [[block]]: {} entries", r.policy_entries);
    }
    for l in &r.lists {
        println!(
            "  {}: {} entries, {} packets dropped  (from {})",
            l.name,
            l.entries,
            l.hits,
            display_safe(&l.source)
        );
        let now = crate::state::unix_now();
        for e in l
            .items
            .iter()
            .take(if l.name == "manual" { usize::MAX } else { 20 })
        {
            let exp = e.expires.map_or(String::new(), |t| {
                format!("  expires in {}", duration_text(t.saturating_sub(now)))
            });
            let c = e
                .comment
                .as_deref()
                .map_or(String::new(), |c| format!("  ({})", display_safe(c)));
            println!("    {}{exp}{c}", e.cidr);
        }
    }
    if r.bans.is_empty() {
        println!("  bans: none");
    } else {
        println!("  bans ({}):", r.bans.len());
        for b in &r.bans {
            println!(
                "    {}  expires in {} (automatic: over a rate limit too often)",
                b.source,
                duration_text(b.expires_in)
            );
        }
    }
}
