//! nft's `limit rate [over] N/unit [burst B packets]`, and meters / dynamic sets that key a
//! limit by source address (`meter m { ip saddr limit rate over 10/minute }`,
//! `add @s { ip saddr limit rate 10/minute }`), as the iptables side's [`RateMatch`].

use fw_common::Family;
use fw_policy::limit::duration_text;
use serde_json::Value;

use super::{Bad, unsupported};
use crate::iptables::rate::{RateKind, RateMatch};

/// `{"limit": {"rate": 10, "per": "minute", "burst": 5, "inv": true}}`; `per`: the
/// per-source prefix when a meter keys it by source address.
pub(super) fn limit(v: &Value, per: Option<u8>, what: String) -> Result<RateMatch, Bad> {
    if v.get("rate_unit")
        .and_then(Value::as_str)
        .is_some_and(|u| u != "packets")
    {
        return Err(unsupported(
            what,
            "a rate in bytes: fw limits new connections, not bytes",
        ));
    }
    let count = v.get("rate").and_then(Value::as_u64).unwrap_or(0);
    let secs = match v.get("per").and_then(Value::as_str).unwrap_or("second") {
        "second" => 1,
        "minute" => 60,
        "hour" => 3600,
        "day" => 86_400,
        "week" => 7 * 86_400,
        other => {
            return Err(unsupported(
                format!("{what} ({other})"),
                "an unknown rate unit",
            ));
        }
    };
    let rate = format!("{count}/{}", duration_text(secs))
        .parse()
        .map_err(|e: String| unsupported(what.clone(), e))?;
    let burst = v
        .get("burst")
        .and_then(Value::as_u64)
        .filter(|&b| b > 0)
        .map(|b| u32::try_from(b).unwrap_or(u32::MAX));
    let over = v.get("inv").and_then(Value::as_bool).unwrap_or(false);
    let unit = v.get("per").and_then(Value::as_str).unwrap_or("second");
    let mut text = format!(
        "limit rate {}{count}/{unit}",
        if over { "over " } else { "" }
    );
    if let Some(b) = burst {
        text.push_str(&format!(" burst {b} packets"));
    }
    let what = match per {
        Some(_) => format!("{what} {{ saddr {text} }}"),
        None => text,
    };
    Ok(RateMatch {
        kind: if over {
            RateKind::Over
        } else {
            RateKind::Under
        },
        rate: Some(rate),
        burst,
        per,
        ban_secs: None,
        over_target: None,
        what,
    })
}

/// A meter or a dynamic-set statement: a limit per source address, or refused.
pub(super) fn keyed(v: &Value, fam: Family, what: String) -> Result<RateMatch, Bad> {
    let by_source = v
        .get("key")
        .or_else(|| v.get("elem"))
        .and_then(|k| k.get("payload"))
        .and_then(|p| p.get("field"))
        .and_then(Value::as_str)
        == Some("saddr");
    let what = what
        .split_whitespace()
        .next()
        .unwrap_or("meter")
        .to_string();
    let stmt = v.get("stmt").map(|s| match s {
        Value::Array(a) => a.first().cloned().unwrap_or(Value::Null),
        other => other.clone(),
    });
    let lim = stmt.as_ref().and_then(|s| s.get("limit"));
    match (by_source, lim) {
        (true, Some(l)) => {
            let max = match fam {
                Family::V4 => 32,
                Family::V6 => 128,
            };
            let name = v.get("name").and_then(Value::as_str).unwrap_or("");
            limit(
                l,
                Some(max),
                format!("{what} {name}").trim_end().to_string(),
            )
        }
        _ => Err(unsupported(
            what,
            "a meter or dynamic set other than a rate limit per source address: fw's only per-source state is its rate limits and bans",
        )),
    }
}
