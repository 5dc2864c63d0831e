//! The rate-limit matches (`-m limit`, `-m hashlimit`, `-m recent`; nft's `limit rate`; ufw's
//! `limit`) as fw's flood defences carry them: a [`RateMatch`] on the rule, turned into the
//! `limit` of the allow rule it guards ([`RateMatch::limit`]).
//!
//! The equivalence check judges the rules as if no source ever went over a limit: a match
//! that holds under the rate (`-m limit` on an ACCEPT) always matches, one that holds only
//! over it (`hashlimit-above`, `recent --update --hitcount`) never does, and `recent --set`
//! only records. What happens over the limit is the limit's, and is written in the notes.

use fw_common::Family;
use fw_policy::{Limit, Rate, limit::duration_text};

use super::rule::{Bad, Target};

/// When the match holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum RateKind {
    /// Under the rate: the rule admits up to the limit.
    Under,
    /// Over the rate: the rule drops what goes beyond it.
    Over,
    /// `recent --set` / `--remove`: records the source, decides nothing.
    Record,
}

/// A rate condition of one rule.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct RateMatch {
    pub kind: RateKind,
    pub rate: Option<Rate>,
    pub burst: Option<u32>,
    /// Sources sharing a bucket: a prefix length; `None`: all sources together.
    pub per: Option<u8>,
    /// Over the limit, the source stays refused while it keeps trying (`recent --update`).
    pub ban_secs: Option<u64>,
    /// The target of an `Over` rule (the check sees the rule without it).
    pub over_target: Option<Target>,
    /// The options as written, for notes.
    pub what: String,
}

/// Whether `word` is an option of a rate module the rule loaded.
pub(crate) fn takes(word: &str, modules: &[String]) -> bool {
    let has = |m: &str| modules.iter().any(|x| x == m);
    (has("limit") && matches!(word, "--limit" | "--limit-burst"))
        || (has("hashlimit") && word.starts_with("--hashlimit"))
        || (has("recent")
            && matches!(
                word,
                "--set"
                    | "--update"
                    | "--rcheck"
                    | "--remove"
                    | "--seconds"
                    | "--hitcount"
                    | "--name"
                    | "--rsource"
                    | "--rdest"
                    | "--mask"
                    | "--rttl"
                    | "--reap"
            ))
}

/// Whether the option takes a value.
pub(crate) fn has_value(word: &str) -> bool {
    !matches!(
        word,
        "--set"
            | "--update"
            | "--rcheck"
            | "--remove"
            | "--rsource"
            | "--rdest"
            | "--rttl"
            | "--reap"
            | "--hashlimit-rate-match"
    )
}

/// One option as written: (negated, option, value).
pub(crate) type Opt = (bool, String, Option<String>);

fn get<'a>(opts: &'a [Opt], name: &str) -> Option<&'a str> {
    opts.iter()
        .rev()
        .find(|(_, o, _)| o == name)
        .and_then(|(_, _, v)| v.as_deref())
}

fn has(opts: &[Opt], name: &str) -> bool {
    opts.iter().any(|(_, o, _)| o == name)
}

fn words(opts: &[Opt]) -> String {
    opts.iter()
        .map(|(n, o, v)| {
            let n = if *n { "! " } else { "" };
            match v {
                Some(v) => format!("{n}{o} {v}"),
                None => format!("{n}{o}"),
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// iptables' `N/second`, `N/sec`, `N/s`, `N/minute`, `N/hour`, `N/day` (any prefix of the unit).
pub(crate) fn parse_ipt_rate(opt: &str, v: &str) -> Result<Rate, Bad> {
    let bad = |why: &str| Bad::syntax(format!("{opt} {v}"), why.to_string());
    let (n, unit) = v.split_once('/').unwrap_or((v, "second"));
    let count: u32 = n
        .trim()
        .parse()
        .map_err(|_| bad("the rate must be N/second, N/minute, N/hour or N/day"))?;
    let unit = unit.trim().to_ascii_lowercase();
    let secs = [
        ("second", 1),
        ("minute", 60),
        ("hour", 3600),
        ("day", 86_400),
    ]
    .iter()
    .find(|(u, _)| !unit.is_empty() && (u.starts_with(&unit) || unit == "sec" || unit == "min"))
    .map(|(_, s)| *s);
    let secs = match unit.as_str() {
        "sec" => Some(1),
        "min" => Some(60),
        _ => secs,
    };
    let Some(secs) = secs else {
        if unit.ends_with('b') || unit.contains("b/") || n.ends_with('b') {
            return Err(bad("a rate in bytes: fw limits new connections, not bytes"));
        }
        return Err(bad("the rate must be N/second, N/minute, N/hour or N/day"));
    };
    format!("{count}/{}", duration_text(secs))
        .parse()
        .map_err(|e: String| bad(&e))
}

fn number(opts: &[Opt], name: &str, lo: u64, hi: u64) -> Result<Option<u64>, Bad> {
    let Some(v) = get(opts, name) else {
        return Ok(None);
    };
    match v.parse::<u64>() {
        Ok(n) if (lo..=hi).contains(&n) => Ok(Some(n)),
        _ => Err(Bad::syntax(
            format!("{name} {v}"),
            format!("must be a number from {lo} to {hi}"),
        )),
    }
}

/// The rate condition of a rule from its modules and their options.
pub(crate) fn build(
    modules: &[String],
    opts: &[Opt],
    fam: Family,
) -> Result<Option<RateMatch>, Bad> {
    let rate_mods: Vec<&String> = modules
        .iter()
        .filter(|m| matches!(m.as_str(), "limit" | "hashlimit" | "recent"))
        .collect();
    let Some(m) = rate_mods.first() else {
        return Ok(None);
    };
    let what = format!("-m {m} {}", words(opts)).trim_end().to_string();
    if rate_mods.len() > 1 {
        return Err(Bad::unsupported(
            what,
            "two rate modules on one rule: fw has one limit per allow rule",
        ));
    }
    if let Some((_, o, _)) = opts.iter().find(|(n, _, _)| *n) {
        return Err(Bad::unsupported(
            format!("! {o}"),
            "a negated rate match (matches over the limit): write it as `--hashlimit-above` or a DROP after the limited ACCEPT",
        ));
    }
    let max_prefix = match fam {
        Family::V4 => 32,
        Family::V6 => 128,
    };
    let mut r = RateMatch {
        kind: RateKind::Under,
        rate: None,
        burst: None,
        per: None,
        ban_secs: None,
        over_target: None,
        what: what.clone(),
    };
    match m.as_str() {
        "limit" => {
            r.rate = Some(parse_ipt_rate(
                "--limit",
                get(opts, "--limit").unwrap_or("3/hour"),
            )?);
            r.burst = Some(number(opts, "--limit-burst", 1, 10_000)?.unwrap_or(5) as u32);
        }
        "hashlimit" => {
            let upto = get(opts, "--hashlimit-upto").or(get(opts, "--hashlimit"));
            let above = get(opts, "--hashlimit-above");
            let (opt, v) = match (upto, above) {
                (Some(v), None) => ("--hashlimit-upto", v),
                (None, Some(v)) => {
                    r.kind = RateKind::Over;
                    ("--hashlimit-above", v)
                }
                _ => {
                    return Err(Bad::syntax(
                        what,
                        "-m hashlimit needs one of --hashlimit-upto and --hashlimit-above",
                    ));
                }
            };
            r.rate = Some(parse_ipt_rate(opt, v)?);
            r.burst = Some(number(opts, "--hashlimit-burst", 1, 1_000_000)?.unwrap_or(5) as u32);
            let mode = get(opts, "--hashlimit-mode").unwrap_or("");
            if mode.split(',').any(|x| x.trim() == "srcip") {
                let mask = number(opts, "--hashlimit-srcmask", 1, max_prefix)?;
                r.per = Some(mask.unwrap_or(max_prefix) as u8);
            }
        }
        _ => {
            let ops: Vec<&str> = ["--set", "--update", "--rcheck", "--remove"]
                .into_iter()
                .filter(|o| has(opts, o))
                .collect();
            match ops.as_slice() {
                ["--set"] | ["--remove"] => r.kind = RateKind::Record,
                ["--update"] | ["--rcheck"] => {
                    let secs = number(opts, "--seconds", 1, 86_400)?;
                    let hits = number(opts, "--hitcount", 1, 10_000)?;
                    let (Some(secs), Some(hits)) = (secs, hits) else {
                        return Err(Bad::unsupported(
                            what,
                            "a check of a list of sources other rules fill (port knocking, trap ports): fw has no such lists; its bans follow rate limits (`--seconds S --hitcount N` is the form fw can carry)",
                        ));
                    };
                    r.kind = RateKind::Over;
                    r.rate = Some(
                        format!("{hits}/{}", duration_text(secs))
                            .parse()
                            .map_err(|e: String| Bad::syntax(what.clone(), e))?,
                    );
                    let mask = get(opts, "--mask")
                        .map(|m| {
                            fw_policy::Cidr::parse_masked(&format!("{m}/{max_prefix}"))
                                .ok()
                                .and_then(|_| mask_len(m))
                                .ok_or_else(|| Bad::syntax(format!("--mask {m}"), "not a netmask"))
                        })
                        .transpose()?;
                    r.per = Some(mask.unwrap_or(max_prefix as u8));
                    if ops == ["--update"] {
                        r.ban_secs = Some(secs);
                    }
                }
                _ => {
                    return Err(Bad::syntax(
                        what,
                        "-m recent needs one of --set, --update, --rcheck and --remove",
                    ));
                }
            }
        }
    }
    Ok(Some(r))
}

/// The prefix length of a netmask written as an address (`255.255.255.0` → 24).
fn mask_len(m: &str) -> Option<u8> {
    let a: std::net::IpAddr = m.parse().ok()?;
    let bits: u128 = match a {
        std::net::IpAddr::V4(v) => u128::from(u32::from(v)) << 96,
        std::net::IpAddr::V6(v) => u128::from(v),
    };
    let len = bits.leading_ones();
    (bits.checked_shl(len).unwrap_or(0) == 0 && len > 0).then_some(len as u8)
}

impl RateMatch {
    /// The limit of the allow rule this guards, in `fam`'s prefix.
    pub(crate) fn limit(&self, fam: Family) -> Option<Limit> {
        let rate = self.rate?;
        let mut l = Limit::default();
        match self.per {
            None => l.total = Some(rate),
            Some(p) => {
                l.rate = Some(rate);
                l.burst = self.burst.filter(|&b| b != rate.count);
                match fam {
                    Family::V4 => l.per4 = p.clamp(1, 32),
                    Family::V6 => l.per6 = p.clamp(1, 128),
                }
                if let Some(s) = self.ban_secs {
                    l.ban_after = Some(1);
                    l.ban_secs = s;
                }
            }
        }
        Some(l)
    }

    /// How fw's limit differs from what the rules do over it, in words.
    pub(crate) fn differences(&self) -> String {
        let mut d = Vec::new();
        match (self.per, self.kind) {
            (None, _) => {
                d.push(
                    "it counts every packet the rule matches, fw's `total` counts new connections"
                        .to_string(),
                );
                if let (Some(b), Some(r)) = (self.burst, self.rate)
                    && b != r.count
                {
                    d.push(format!(
                        "its burst of {b} is not carried: fw's aggregate admits one period's worth ({}) at once",
                        r.count
                    ));
                }
            }
            (Some(_), RateKind::Over) => {
                let (n, w) = self
                    .rate
                    .map(|r| (r.count, duration_text(u64::from(r.secs))))
                    .unwrap_or_default();
                d.push(format!(
                    "the rules count hits of a source in a sliding window of {w} (and drop at {n}); fw's bucket admits {n} at once, then one every {w}/{n}"
                ));
                if self.ban_secs.is_some() {
                    d.push(format!(
                        "`--update` keeps a source refused while it keeps trying: fw bans a source over the limit for {w} (`ban_after = 1`)"
                    ));
                }
            }
            (Some(_), _) => d.push(
                "fw's buckets hold new connections, iptables' hold every matching packet".into(),
            ),
        }
        d.join("; ")
    }
}
