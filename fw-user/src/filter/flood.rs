//! [`Filter`] methods for block lists, bans and rate limits (`fw block`, `fw limit`). Limits are
//! part of the policy and go through [`Filter::edit`] (write-ahead state, lockout guard, live
//! map edit); block lists live beside the policy ([`crate::blocklist`]) and are written ahead
//! in their own file.

use fw_common::limit::BanKey;
use fw_policy::{
    Cidr, Compiled, Limit, Policy, PortRange, Proto,
    blocks::BlockSet,
    edit::{self, Edit},
};
use serde::Serialize;

use crate::{
    Error,
    blocklist::{self, BlockStore, MANUAL, StoredEntry},
    filter::{Edited, Filter},
    guard::Guard,
    state::unix_now,
};

/// A ban the kernel holds.
#[derive(Clone, Debug, Serialize)]
pub struct Ban {
    pub source: Cidr,
    /// Seconds until it lifts.
    pub expires_in: u64,
    /// Unix time it lifts.
    pub expires: u64,
}

/// The block lists and bans of a filter (`fw block list`).
#[derive(Clone, Debug, Serialize)]
pub struct BlockReport {
    pub lists: Vec<ListReport>,
    pub policy_entries: usize,
    pub bans: Vec<Ban>,
    /// Representation per family: "hash (N prefix lengths)" or "lpm trie".
    pub v4_lookup: String,
    pub v6_lookup: String,
}

#[derive(Clone, Debug, Serialize)]
pub struct ListReport {
    pub name: String,
    pub source: String,
    pub entries: usize,
    /// Packets dropped because of this list since the filter was attached.
    pub hits: u64,
    /// Entries of `manual`, and of small lists (up to 1000 entries).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub items: Vec<StoredEntry>,
}

/// The bans the kernel holds, with their expiry in wall-clock terms.
pub fn bans(maps: &crate::maps::PinnedMaps) -> Result<Vec<Ban>, Error> {
    let mono = crate::sys::monotonic_coarse_ns();
    let now = unix_now();
    let mut out = Vec::new();
    for (k, until) in maps.flood.bans()? {
        if until <= mono {
            continue;
        }
        let left = (until - mono).div_ceil(1_000_000_000);
        out.push(Ban {
            source: ban_cidr(&k),
            expires_in: left,
            expires: now + left,
        });
    }
    out.sort_by_key(|b| b.expires);
    Ok(out)
}

fn ban_cidr(k: &BanKey) -> Cidr {
    if k.family == 4 {
        Cidr::V4([k.addr[0], k.addr[1], k.addr[2], k.addr[3]], k.len)
    } else {
        Cidr::V6(k.addr, k.len)
    }
}

fn lookup_text(lpm: u8, n: u8) -> String {
    if lpm != 0 {
        "lpm trie".into()
    } else {
        format!("hash, {n} prefix length(s)")
    }
}

/// Bring freshly made (or reused) block maps to the lists and `policy`, reading what they hold.
pub fn sync_from_maps(
    maps: &mut crate::maps::PinnedMaps,
    paths: &crate::paths::IfacePaths,
    policy: &Policy,
) -> Result<(), Error> {
    let store = BlockStore::load(paths)?;
    let have = maps.flood.read_blocks()?;
    let want = blocklist::desired(&store, policy);
    if have != want {
        blocklist::begin(paths)?;
        maps.flood.sync_blocks(&have, &want)?;
    }
    blocklist::end(paths)
}

impl Filter {
    /// The block lists beside the policy.
    pub fn block_store(&self) -> Result<BlockStore, Error> {
        BlockStore::load(self.paths())
    }

    /// `fw block list`.
    pub fn block_report(&self) -> Result<BlockReport, Error> {
        let store = self.block_store()?;
        let now = unix_now();
        let mut lists = Vec::new();
        for (name, l) in &store.lists {
            let hits = if l.id < fw_common::maps::BLOCK_LISTS {
                self.maps()
                    .counter(fw_common::maps::EVENT_BLOCK_LIST + l.id)?
                    .packets
            } else {
                0
            };
            let live: Vec<StoredEntry> =
                l.entries.iter().filter(|e| e.live(now)).cloned().collect();
            lists.push(ListReport {
                name: name.clone(),
                source: l.source.clone(),
                entries: live.len(),
                hits,
                items: if live.len() <= 1000 { live } else { Vec::new() },
            });
        }
        let meta = self.maps().flood.meta()?;
        Ok(BlockReport {
            lists,
            policy_entries: self.state().current().policy.block_sources().count(),
            bans: bans(self.maps())?,
            v4_lookup: lookup_text(meta.lpm4, meta.n4),
            v6_lookup: lookup_text(meta.lpm6, meta.n6),
        })
    }

    /// Change the block lists to `next`: checked by the lockout guard, written ahead, then
    /// made in the maps without a gap.
    fn set_blocks(
        &mut self,
        old: &BlockStore,
        next: &BlockStore,
        guard: Guard,
    ) -> Result<(), Error> {
        let policy = self.state().current().policy.clone();
        let want = blocklist::desired(next, &policy);
        let mut t = Compiled::new(&policy, 0);
        t.blocks = want.clone();
        guard.check_compiled(&policy, &t)?;
        let have = self.blocks_in_maps(old, &policy)?;
        blocklist::begin(self.paths())?;
        next.save(self.paths())?;
        self.maps_mut().flood.sync_blocks(&have, &want)?;
        blocklist::end(self.paths())
    }

    /// What the maps hold: derived from the lists, or read back after an interrupted change.
    fn blocks_in_maps(&self, store: &BlockStore, policy: &Policy) -> Result<BlockSet, Error> {
        if blocklist::interrupted(self.paths()) {
            return self.maps().flood.read_blocks();
        }
        let mut s = blocklist::held(store, policy);
        s.meta = self.maps().flood.meta()?;
        Ok(s)
    }

    /// Resync the block maps after a crash between writing the lists and the maps, or after
    /// the policy's own `[[block]]` entries changed (`old` is the policy they were synced for).
    pub fn resync_blocks(&mut self, old: Option<&Policy>) -> Result<(), Error> {
        let store = self.block_store()?;
        let policy = self.state().current().policy.clone();
        let have = match old {
            Some(p) if !blocklist::interrupted(self.paths()) => self.blocks_in_maps(&store, p)?,
            _ => self.maps().flood.read_blocks()?,
        };
        let want = blocklist::desired(&store, &policy);
        if have == want {
            return blocklist::end(self.paths());
        }
        blocklist::begin(self.paths())?;
        self.maps_mut().flood.sync_blocks(&have, &want)?;
        blocklist::end(self.paths())
    }

    /// `fw block add`: block `cidrs` on every port, for `timeout` seconds or for good.
    pub fn block_add(
        &mut self,
        cidrs: &[Cidr],
        timeout: Option<u64>,
        comment: Option<String>,
        guard: Guard,
    ) -> Result<String, Error> {
        if let Some(c) = &comment {
            fw_policy::check_comment(c).map_err(Error::Edit)?;
        }
        let old = self.block_store()?;
        let mut next = old.clone();
        next.prune(unix_now());
        let expires = timeout.map(|t| unix_now() + t);
        let list = next.list_mut(MANUAL)?;
        for c in cidrs {
            list.entries.retain(|e| e.cidr != *c);
            list.entries.push(StoredEntry {
                cidr: *c,
                expires,
                comment: comment.clone(),
            });
        }
        list.updated = unix_now();
        self.set_blocks(&old, &next, guard)?;
        let what: Vec<String> = cidrs.iter().map(|c| c.to_string()).collect();
        let how = timeout.map_or("".to_string(), |t| {
            format!(" for {}", fw_policy::limit::duration_text(t))
        });
        Ok(format!("blocked {} on every port{how}", what.join(", ")))
    }

    /// `fw block del`: unblock `cidrs` (from `manual`, and lift bans of them). Returns what
    /// happened to each, in words.
    pub fn block_del(&mut self, cidrs: &[Cidr]) -> Result<Vec<String>, Error> {
        let old = self.block_store()?;
        let mut next = old.clone();
        let mut out = Vec::new();
        let bans = self.maps().flood.bans()?;
        for c in cidrs {
            let mut did = false;
            if let Some(l) = next.lists.get_mut(MANUAL) {
                let n = l.entries.len();
                l.entries.retain(|e| e.cidr != *c);
                did = n != l.entries.len();
            }
            for (k, _) in bans.iter().filter(|(k, _)| ban_cidr(k) == *c) {
                self.maps_mut().flood.remove_ban(k)?;
                did = true;
            }
            let others: Vec<&str> = next
                .lists
                .iter()
                .filter(|(n, l)| *n != MANUAL && l.entries.iter().any(|e| e.cidr == *c))
                .map(|(n, _)| n.as_str())
                .collect();
            let in_policy = self
                .state()
                .current()
                .policy
                .block_sources()
                .any(|p| p == c);
            out.push(match (did, others.is_empty() && !in_policy) {
                (true, true) => format!("unblocked {c}"),
                (false, true) => format!("{c} was not blocked by `fw block add` or a ban"),
                (_, false) => format!(
                    "{c} stays blocked by {}",
                    others
                        .iter()
                        .map(|n| format!("list {n}"))
                        .chain(in_policy.then(|| "the policy's [[block]]".to_string()))
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            });
        }
        if next != old {
            self.set_blocks(&old, &next, Guard::Force)?;
        }
        Ok(out)
    }

    /// `fw block import`: replace list `name` with `cidrs` as a whole (no moment with neither
    /// the old nor the new list in force).
    pub fn block_import(
        &mut self,
        name: &str,
        source: &str,
        cidrs: Vec<Cidr>,
        guard: Guard,
    ) -> Result<String, Error> {
        if name == MANUAL {
            return Err(Error::Refused(
                "the list `manual` belongs to `fw block add`; import into another name".into(),
            ));
        }
        let old = self.block_store()?;
        let mut next = old.clone();
        let list = next.list_mut(name)?;
        let before = list.entries.len();
        list.source = source.to_string();
        list.updated = unix_now();
        list.entries = cidrs
            .into_iter()
            .map(|cidr| StoredEntry {
                cidr,
                expires: None,
                comment: None,
            })
            .collect();
        let after = list.entries.len();
        self.set_blocks(&old, &next, guard)?;
        Ok(format!(
            "block list {name}: {after} entries (was {before}), from {source}"
        ))
    }

    /// `fw block del --list NAME`.
    pub fn block_drop_list(&mut self, name: &str) -> Result<String, Error> {
        let old = self.block_store()?;
        let mut next = old.clone();
        let Some(l) = next.lists.remove(name) else {
            return Err(Error::Edit(format!("there is no block list {name:?}")));
        };
        self.set_blocks(&old, &next, Guard::Force)?;
        Ok(format!(
            "removed block list {name} ({} entries)",
            l.entries.len()
        ))
    }

    /// `fw limit PORTS/PROTO RATE …`: limit the rule for exactly these ports (allowing them
    /// first, like ufw's `limit`, when no rule does).
    pub fn limit_set(
        &mut self,
        proto: Proto,
        ports: PortRange,
        limit: Limit,
        guard: Guard,
    ) -> Result<Edited, Error> {
        limit.check().map_err(Error::Edit)?;
        self.edit(
            |p| {
                let mut msg = String::new();
                let id = match rule_for(p, proto, ports)? {
                    Some(id) => id,
                    None => {
                        if let Edit::Changed(m) = edit::allow(p, proto, ports, &[], None)? {
                            msg = format!("{m}; ");
                        }
                        p.rules.last().map(|r| r.id).expect("allow added a rule")
                    }
                };
                if p.limits.get(&id) == Some(&limit) {
                    return Ok(Edit::Unchanged(format!(
                        "{ports}/{} already has that limit",
                        proto.name()
                    )));
                }
                p.limits.insert(id, limit.clone());
                p.check_limits()?;
                Ok(Edit::Changed(format!(
                    "{msg}limited {ports}/{}: {}",
                    proto.name(),
                    limit.describe()
                )))
            },
            guard,
        )
    }

    /// `fw limit PORTS/PROTO --remove`.
    pub fn limit_remove(&mut self, proto: Proto, ports: PortRange) -> Result<Edited, Error> {
        self.edit(
            |p| {
                let Some(id) = rule_for(p, proto, ports)? else {
                    return Ok(Edit::Unchanged(format!(
                        "no rule allows {ports}/{}",
                        proto.name()
                    )));
                };
                if p.limits.remove(&id).is_none() {
                    return Ok(Edit::Unchanged(format!(
                        "{ports}/{} has no limit",
                        proto.name()
                    )));
                }
                Ok(Edit::Changed(format!(
                    "removed the limit of {ports}/{}",
                    proto.name()
                )))
            },
            Guard::Force,
        )
    }
}

/// The id of the rule that opens exactly `ports/proto` (to everyone or some sources); an error
/// if a wider range covers them (limits belong to whole rules).
fn rule_for(p: &Policy, proto: Proto, ports: PortRange) -> Result<Option<u32>, String> {
    if let Some(r) = p
        .rules
        .iter()
        .find(|r| r.proto == proto && r.ports == ports)
    {
        return Ok(Some(r.id));
    }
    if let Some(r) = p
        .rules
        .iter()
        .find(|r| r.proto == proto && r.ports.lo <= ports.hi && ports.lo <= r.ports.hi)
    {
        return Err(format!(
            "{ports}/{} is part of the rule {}: a limit applies to a whole rule; limit {}/{} instead",
            proto.name(),
            r.describe(),
            r.ports,
            proto.name()
        ));
    }
    Ok(None)
}

/// More words for `fw explain` about a packet dropped by a block list, a ban or a rate limit:
/// which list holds the source, which rule's limit, when the source may try again.
pub fn explain_detail<T: fw_common::Tables>(
    parsed: &Result<fw_common::Parsed, fw_common::Reason>,
    d: &fw_common::Decision,
    t: &T,
    policy: &Policy,
    store: Option<&BlockStore>,
) -> Vec<String> {
    use fw_common::{L4, Parsed, Reason, limit::rule_for, maps::PORT_SLOT_MASK};
    let Ok(Parsed::Ip(ip)) = parsed else {
        return Vec::new();
    };
    let addr: std::net::IpAddr = match ip.family {
        fw_common::Family::V4 => ip.src_v4().into(),
        fw_common::Family::V6 => ip.src.into(),
    };
    let mut out = Vec::new();
    match d.why() {
        Some(Reason::Blocked) => {
            for b in &policy.blocks {
                if let Some(c) = b.from.iter().find(|c| c.contains(&addr)) {
                    let from = b.file.as_deref().map_or(String::new(), |f| format!(" (file {f})"));
                    out.push(format!("{addr} is in {c}, blocked by the policy's [[block]]{from}"));
                }
            }
            for (name, l) in store.map(|s| s.lists.iter()).into_iter().flatten() {
                if let Some(e) = l.entries.iter().find(|e| e.cidr.contains(&addr)) {
                    let c = e
                        .comment
                        .as_deref()
                        .map_or(String::new(), |c| format!(" ({})", fw_policy::display_safe(c)));
                    out.push(format!("{addr} is in {}, on block list {name}{c}", e.cidr));
                }
            }
        }
        Some(Reason::Banned) => out.push(format!(
            "{addr} is banned: it went over a rate limit too often (fw block list shows when the ban lifts; fw block del {addr} lifts it now)"
        )),
        Some(Reason::RateLimited | Reason::RateLimitTotal) => {
            let (proto, port) = match ip.l4 {
                L4::Tcp { dport, .. } => (fw_common::PortProto::Tcp, dport),
                L4::Udp { dport, .. } => (fw_common::PortProto::Udp, dport),
                _ => return out,
            };
            let slot = rule_for(t, ip.family, &ip.src, proto, port) & PORT_SLOT_MASK;
            if let Some((_, id)) = fw_common::maps::slot_rule(slot)
                && let (Some(r), Some(l)) = (
                    policy.rules.iter().find(|r| r.id == id),
                    policy.limits.get(&id),
                )
            {
                out.push(format!("rule {id}: {}; limit {}", r.describe(), l.describe()));
            }
        }
        _ => {}
    }
    out
}

/// Rate limits, block lists and bans of a running filter (part of `fw status`).
#[derive(Debug, Serialize)]
pub struct FloodStatus {
    pub limits: Vec<LimitStatus>,
    pub blocks: BlockReport,
    /// Entries of the per-source bucket tables: sources that completed a handshake, others.
    pub buckets_known: usize,
    pub buckets_new: usize,
    /// Bans issued since the filter was attached.
    pub bans_issued: u64,
}

#[derive(Debug, Serialize)]
pub struct LimitStatus {
    pub rule: u32,
    pub rule_description: String,
    pub limit: Limit,
    pub description: String,
    /// Packets this rule's limits dropped.
    pub dropped: u64,
}

/// [`FloodStatus`] of the filter whose maps and state are given.
pub fn flood_status(
    paths: &crate::paths::IfacePaths,
    maps: &crate::maps::PinnedMaps,
    policy: &Policy,
    generation: u32,
) -> Result<FloodStatus, Error> {
    use fw_common::maps::{EVENT_BAN, EVENT_BLOCK_LIST, limited_slot, rule_slot};
    let mut limits = Vec::new();
    for (r, l) in policy.live_limits() {
        limits.push(LimitStatus {
            rule: r.id,
            rule_description: r.describe(),
            limit: l.clone(),
            description: l.describe(),
            dropped: maps
                .counter(limited_slot(rule_slot(generation, r.id)))?
                .packets,
        });
    }
    let store = BlockStore::load(paths)?;
    let now = unix_now();
    let mut lists = Vec::new();
    for (name, l) in &store.lists {
        lists.push(ListReport {
            name: name.clone(),
            source: l.source.clone(),
            entries: l.entries.iter().filter(|e| e.live(now)).count(),
            hits: maps.counter(EVENT_BLOCK_LIST + l.id.min(15))?.packets,
            items: Vec::new(),
        });
    }
    let meta = maps.flood.meta()?;
    let policy_hits = maps
        .counter(EVENT_BLOCK_LIST + fw_policy::blocks::POLICY_LIST)?
        .packets;
    let n_policy = policy.block_sources().count();
    if n_policy > 0 {
        lists.push(ListReport {
            name: "policy".into(),
            source: "[[block]] in the policy".into(),
            entries: n_policy,
            hits: policy_hits,
            items: Vec::new(),
        });
    }
    let (buckets_known, buckets_new) = maps.flood.bucket_counts()?;
    Ok(FloodStatus {
        limits,
        blocks: BlockReport {
            lists,
            policy_entries: n_policy,
            bans: bans(maps)?,
            v4_lookup: lookup_text(meta.lpm4, meta.n4),
            v6_lookup: lookup_text(meta.lpm6, meta.n6),
        },
        buckets_known,
        buckets_new,
        bans_issued: maps.counter(EVENT_BAN)?.packets,
    })
}

/// `fw status`'s lines about limits, block lists and bans.
pub fn print_flood_status(f: &FloodStatus) {
    if !f.limits.is_empty() {
        println!();
        println!(
            "Rate limits (per-source buckets: {} of clients that completed a handshake, {} others):",
            f.buckets_known, f.buckets_new
        );
        for l in &f.limits {
            println!(
                "  {:>10} dropped  rule {}: {}; {}",
                l.dropped, l.rule, l.rule_description, l.description
            );
        }
    }
    let b = &f.blocks;
    if !b.lists.is_empty() || !b.bans.is_empty() || f.bans_issued > 0 {
        println!();
        println!(
            "Block lists (dropped first, every port; IPv4 lookup: {}, IPv6: {}):",
            b.v4_lookup, b.v6_lookup
        );
        for l in &b.lists {
            println!(
                "  {:>10} dropped  {}: {} entries  ({})",
                l.hits,
                l.name,
                l.entries,
                fw_policy::display_safe(&l.source)
            );
        }
        println!(
            "  bans: {} in force, {} issued since attach",
            b.bans.len(),
            f.bans_issued
        );
        for ban in b.bans.iter().take(20) {
            println!(
                "    {}  lifts in {}",
                ban.source,
                fw_policy::limit::duration_text(ban.expires_in)
            );
        }
    }
}
