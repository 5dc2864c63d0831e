//! Reading a policy file. Errors name the file, line, column and the offending value, and
//! nothing is returned unless the whole file is valid.

use std::{fmt, ops::Range, path::Path};

use serde::Deserialize;
use toml::Spanned;

use crate::{BlockRule, Cidr, DefaultAction, Limit, Options, Policy, PortRange, Proto, Rule};

#[derive(Debug, thiserror::Error)]
pub struct PolicyError {
    pub file: String,
    pub line: usize,
    pub column: usize,
    pub message: String,
    /// The offending line of the file, for context.
    pub source_line: String,
}

impl fmt::Display for PolicyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.line == 0 {
            write!(f, "{}: {}", self.file, self.message)?;
        } else {
            write!(
                f,
                "{}:{}:{}: {}",
                self.file, self.line, self.column, self.message
            )?;
        }
        if !self.source_line.is_empty() {
            write!(f, "\n    {}", self.source_line.trim_end())?;
        }
        Ok(())
    }
}

impl PolicyError {
    fn at(file: &str, text: &str, span: Option<Range<usize>>, message: String) -> Self {
        let start = span.map(|s| s.start).unwrap_or(0).min(text.len());
        let before = &text[..start];
        let line = before.matches('\n').count() + 1;
        let line_start = before.rfind('\n').map(|i| i + 1).unwrap_or(0);
        let column = text[line_start..start].chars().count() + 1;
        let source_line = text[line_start..].lines().next().unwrap_or("").to_string();
        PolicyError {
            file: file.to_string(),
            line,
            column,
            message,
            source_line,
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPolicy {
    #[serde(default)]
    interfaces: Vec<String>,
    #[serde(default)]
    options: Options,
    #[serde(default)]
    allow: Vec<Spanned<RawRule>>,
    #[serde(default)]
    default: Option<Spanned<String>>,
    #[serde(default)]
    block: Vec<Spanned<RawBlock>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawBlock {
    #[serde(default)]
    from: Option<Spanned<Vec<Cidr>>>,
    #[serde(default)]
    file: Option<Spanned<String>>,
    #[serde(default)]
    comment: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRule {
    #[serde(default)]
    proto: Option<Proto>,
    ports: Spanned<Vec<PortRange>>,
    #[serde(default)]
    from: Option<Spanned<Vec<Cidr>>>,
    #[serde(default)]
    comment: Option<Spanned<String>>,
    #[serde(default)]
    limit: Option<Spanned<String>>,
    #[serde(default)]
    burst: Option<Spanned<u32>>,
    #[serde(default)]
    per: Option<Spanned<String>>,
    #[serde(default)]
    per6: Option<Spanned<String>>,
    #[serde(default)]
    total: Option<Spanned<String>>,
    #[serde(default)]
    ban_after: Option<Spanned<u32>>,
    #[serde(default)]
    ban_for: Option<Spanned<String>>,
}

impl RawRule {
    /// The rule's limits (`None`: no limit keys). Errors carry the span of the bad value.
    fn limit(&self) -> Result<Option<Limit>, (Range<usize>, String)> {
        let any = self.limit.is_some()
            || self.burst.is_some()
            || self.per.is_some()
            || self.per6.is_some()
            || self.total.is_some()
            || self.ban_after.is_some()
            || self.ban_for.is_some();
        if !any {
            return Ok(None);
        }
        let mut l = Limit::default();
        let at = |s: &Spanned<String>| s.span();
        if let Some(r) = &self.limit {
            l.rate = Some(r.get_ref().parse().map_err(|e| (at(r), e))?);
        }
        if let Some(t) = &self.total {
            l.total = Some(t.get_ref().parse().map_err(|e| (at(t), e))?);
        }
        if let Some(p) = &self.per {
            l.per4 = crate::limit::parse_prefix(p.get_ref(), 32).map_err(|e| (at(p), e))?;
        }
        if let Some(p) = &self.per6 {
            l.per6 = crate::limit::parse_prefix(p.get_ref(), 128).map_err(|e| (at(p), e))?;
        }
        l.burst = self.burst.as_ref().map(|b| *b.get_ref());
        l.ban_after = self.ban_after.as_ref().map(|b| *b.get_ref());
        if let Some(d) = &self.ban_for {
            l.ban_secs = crate::limit::parse_duration(d.get_ref()).map_err(|e| (at(d), e))?;
        }
        let whole = self
            .limit
            .as_ref()
            .map(|s| s.span())
            .or_else(|| self.total.as_ref().map(|s| s.span()))
            .unwrap_or(self.ports.span());
        l.check().map_err(|e| (whole, e))?;
        Ok(Some(l))
    }
}

impl<'de> Deserialize<'de> for Proto {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// Parse policy text; `file` names it in errors. Block list files it names are read relative
/// to the current directory.
pub fn parse_policy(file: &str, text: &str) -> Result<Policy, PolicyError> {
    parse_policy_in(file, text, None)
}

/// Parse policy text whose relative block list files are in `base`.
pub fn parse_policy_in(file: &str, text: &str, base: Option<&Path>) -> Result<Policy, PolicyError> {
    let raw: RawPolicy = toml::from_str(text)
        .map_err(|e| PolicyError::at(file, text, e.span(), e.message().trim().to_string()))?;
    let mut rules = Vec::new();
    let mut limits = std::collections::BTreeMap::new();
    for r in raw.allow {
        let span = r.span();
        let r = r.into_inner();
        if r.ports.get_ref().is_empty() {
            return Err(PolicyError::at(
                file,
                text,
                Some(r.ports.span()),
                "an [[allow]] rule needs at least one port".into(),
            ));
        }
        let from = match &r.from {
            None => Vec::new(),
            Some(f) if f.get_ref().is_empty() => {
                return Err(PolicyError::at(
                    file,
                    text,
                    Some(f.span()),
                    "`from = []` admits nobody (it does not mean \"from anywhere\"): list the sources, or leave `from` out to allow every source".into(),
                ));
            }
            Some(f) => f.get_ref().clone(),
        };
        let comment = match &r.comment {
            None => None,
            Some(c) => {
                check_comment(c.get_ref())
                    .map_err(|m| PolicyError::at(file, text, Some(c.span()), m))?;
                Some(c.get_ref().clone())
            }
        };
        let limit = r
            .limit()
            .map_err(|(span, m)| PolicyError::at(file, text, Some(span), m))?;
        for ports in r.ports.get_ref() {
            let id = u32::try_from(rules.len()).unwrap_or(u32::MAX);
            if let Some(l) = &limit {
                limits.insert(id, l.clone());
            }
            if id >= fw_common::maps::MAX_RULES {
                return Err(PolicyError::at(
                    file,
                    text,
                    Some(span.clone()),
                    format!(
                        "more than {} port rules; use port ranges (\"lo-hi\") instead of long lists",
                        fw_common::maps::MAX_RULES
                    ),
                ));
            }
            rules.push(Rule {
                id,
                proto: r.proto.unwrap_or(Proto::Tcp),
                ports: *ports,
                from: from.clone(),
                comment: comment.clone(),
            });
        }
    }
    if !(1024..=16_777_216).contains(&raw.options.max_flows) {
        let at = text.find("max_flows");
        return Err(PolicyError::at(
            file,
            text,
            at.map(|a| a..a),
            format!(
                "max_flows = {} is out of range (1024 to 16777216)",
                raw.options.max_flows
            ),
        ));
    }
    let o = &raw.options;
    for (key, v) in [
        ("tcp_established_timeout", o.tcp_established_timeout),
        ("udp_timeout", u32::from(o.udp_timeout)),
        ("udp_stream_timeout", u32::from(o.udp_stream_timeout)),
        ("icmp_timeout", u32::from(o.icmp_timeout)),
    ] {
        if v == 0 {
            let at = text.find(key);
            return Err(PolicyError::at(
                file,
                text,
                at.map(|a| a..a),
                format!("{key} = 0: a timeout must be at least 1 second"),
            ));
        }
    }
    if !(1..=100_000_000).contains(&raw.options.syn_cookies_threshold) {
        let at = text.find("syn_cookies_threshold");
        return Err(PolicyError::at(
            file,
            text,
            at.map(|a| a..a),
            format!(
                "syn_cookies_threshold = {} is out of range (1 to 100000000 SYNs a second)",
                raw.options.syn_cookies_threshold
            ),
        ));
    }
    if !(1..=crate::LOG_RATE_MAX).contains(&raw.options.log_rate) {
        let at = text.find("log_rate");
        return Err(PolicyError::at(
            file,
            text,
            at.map(|a| a..a),
            format!(
                "log_rate = {} is out of range (1 to {})",
                raw.options.log_rate,
                crate::LOG_RATE_MAX
            ),
        ));
    }
    if raw.options.new_requires_syn && !raw.options.established {
        let at = text
            .find("new_requires_syn")
            .or_else(|| text.find("established"));
        return Err(PolicyError::at(
            file,
            text,
            at.map(|a| a..a),
            "new_requires_syn = true needs established = true: without connection state every TCP packet after the SYN would be dropped".into(),
        ));
    }
    let default = match &raw.default {
        None => DefaultAction::Drop,
        Some(d) => match d.get_ref().as_str() {
            "drop" => DefaultAction::Drop,
            "accept" => DefaultAction::Accept,
            other => {
                return Err(PolicyError::at(
                    file,
                    text,
                    Some(d.span()),
                    format!("default = {other:?}: expected \"drop\" or \"accept\""),
                ));
            }
        },
    };
    let mut options = raw.options;
    // In accept mode "new TCP must start with SYN" would drop every connection to ports no rule
    // names (their handshake ACK belongs to no tracked flow): off unless the file says so.
    if default == DefaultAction::Accept && !options_key_given(text, "new_requires_syn") {
        options.new_requires_syn = false;
    }
    let mut blocks = Vec::new();
    for b in &raw.block {
        blocks.push(block_rule(file, text, b, base)?);
    }
    let policy = Policy {
        options,
        rules,
        interfaces: raw.interfaces,
        default,
        limits,
        blocks,
    };
    policy
        .check_capacity()
        .map_err(|m| PolicyError::at(file, text, None, m))?;
    policy.check_limits().map_err(|m| {
        let at = text.find("ban_after").or_else(|| text.find("default"));
        PolicyError::at(file, text, at.map(|a| a..a), m)
    })?;
    Ok(policy)
}

/// Whether `[options]` sets `key` (an option whose default depends on others).
fn options_key_given(text: &str, key: &str) -> bool {
    toml::from_str::<toml::Table>(text)
        .ok()
        .and_then(|t| t.get("options").and_then(|o| o.as_table()).cloned())
        .is_some_and(|o| o.contains_key(key))
}

fn block_rule(
    file: &str,
    text: &str,
    b: &Spanned<RawBlock>,
    base: Option<&Path>,
) -> Result<BlockRule, PolicyError> {
    let r = b.get_ref();
    let comment = match &r.comment {
        None => None,
        Some(c) => {
            check_comment(c.get_ref())
                .map_err(|m| PolicyError::at(file, text, Some(c.span()), m))?;
            Some(c.get_ref().clone())
        }
    };
    let mut from = match &r.from {
        Some(f) if f.get_ref().is_empty() => {
            return Err(PolicyError::at(
                file,
                text,
                Some(f.span()),
                "`from = []` blocks nothing: list the sources, or leave `from` out and name a `file`".into(),
            ));
        }
        Some(f) => f.get_ref().clone(),
        None => Vec::new(),
    };
    let list_file = r.file.as_ref().map(|f| f.get_ref().clone());
    if let Some(f) = &r.file {
        let path = std::path::Path::new(f.get_ref());
        let path = match base {
            Some(b) if path.is_relative() => b.join(path),
            _ => path.to_path_buf(),
        };
        let cidrs = crate::blocks::read_feed(&path)
            .map_err(|e| PolicyError::at(file, text, Some(f.span()), e.to_string()))?;
        from.extend(cidrs);
    }
    if r.from.is_none() && r.file.is_none() {
        return Err(PolicyError::at(
            file,
            text,
            Some(b.span()),
            "a [[block]] entry needs `from = [...]` or `file = \"...\"`".into(),
        ));
    }
    Ok(BlockRule {
        from,
        file: list_file,
        comment,
    })
}

/// Comments are printed on terminals (`fw status`, `fw policy show`): no control characters.
pub fn check_comment(c: &str) -> Result<(), String> {
    match c.chars().find(|ch| ch.is_control()) {
        Some(ch) => Err(format!(
            "comment {:?} contains the control character U+{:04X}: comments are shown on terminals, so they may not carry escape sequences or line breaks",
            crate::display_safe(c),
            ch as u32
        )),
        None => Ok(()),
    }
}

/// Read and parse a policy file.
pub fn parse_policy_file(path: &Path) -> Result<Policy, PolicyError> {
    let name = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|e| PolicyError {
        file: name.clone(),
        line: 0,
        column: 0,
        message: format!("cannot read: {e}"),
        source_line: String::new(),
    })?;
    parse_policy_in(&name, &text, path.parent())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(text: &str) -> PolicyError {
        parse_policy("p.toml", text).expect_err("accepted a bad policy")
    }

    #[test]
    fn empty_from_is_an_error_not_everyone() {
        let e = err("[[allow]]\nports = [22]\nfrom = []\n");
        assert_eq!((e.line, e.column), (3, 8), "{e}");
        assert!(e.message.contains("admits nobody"), "{e}");
    }

    #[test]
    fn ambiguous_sources_are_errors_naming_the_line() {
        let e = err("[[allow]]\nports = [22]\nfrom = [\"203.0.113.7/0\"]\n");
        assert_eq!(e.line, 3, "{e}");
        assert!(e.message.contains("host bits"), "{e}");
        let e = err("[[allow]]\nports = [22]\nfrom = [\"::ffff:203.0.113.7\"]\n");
        assert!(e.message.contains("IPv4-mapped"), "{e}");
    }

    #[test]
    fn comments_with_control_characters_are_refused() {
        let e = err("[[allow]]\nports = [22]\ncomment = \"a\\u001b[31mred\"\n");
        assert_eq!(e.line, 3, "{e}");
        assert!(e.message.contains("U+001B"), "{e}");
    }

    #[test]
    fn a_policy_the_source_tries_cannot_hold_fails_the_check() {
        let from: Vec<String> = (0..40).map(|i| format!("\"10.{i}.0.0/16\"")).collect();
        let text = format!(
            "[[allow]]\nports = [\"1-65535\"]\nfrom = [{}]\n",
            from.join(", ")
        );
        let e = err(&text);
        assert!(e.message.contains("2621400 IPv4 entries"), "{e}");
    }

    #[test]
    fn seed_policy_parses_to_the_seed_ports() {
        let p = parse_policy("seed", crate::SEED_POLICY).unwrap();
        let tcp: Vec<u16> = p.rules.iter().map(|r| r.ports.lo).collect();
        assert_eq!(tcp, [80, 443, 25, 465, 110, 995, 143, 993, 22]);
        assert!(
            p.rules
                .iter()
                .all(|r| r.proto == Proto::Tcp && r.from.is_empty())
        );
        assert!(p.options.strict_tcp_flags);
        assert!(!p.options.icmp_echo);
        let ids: Vec<u32> = p.rules.iter().map(|r| r.id).collect();
        assert_eq!(ids, (0..9).collect::<Vec<_>>());
    }

    #[test]
    fn full_rule_form_parses() {
        let p = parse_policy(
            "p",
            r#"
[options]
strict_tcp_flags = false
icmp_echo = true
fragments = "drop"
dhcp_client = false

[[allow]]
proto = "udp"
ports = [53, "6000-6010"]
from = ["192.0.2.0/24", "2001:db8::1"]
comment = "dns"
"#,
        )
        .unwrap();
        assert_eq!(p.rules.len(), 2);
        assert_eq!(p.rules[1].ports, PortRange { lo: 6000, hi: 6010 });
        assert_eq!(p.rules[0].proto, Proto::Udp);
        assert_eq!(p.rules[0].from.len(), 2);
        assert_eq!(p.options.fragments, crate::FragmentPolicy::Drop);
        assert!(!p.options.strict_tcp_flags && p.options.icmp_echo && !p.options.dhcp_client);
    }

    #[test]
    fn empty_file_is_default_drop() {
        let p = parse_policy("p", "").unwrap();
        assert!(p.rules.is_empty());
    }

    #[test]
    fn bad_port_names_line_and_value() {
        let e = err("[[allow]]\nports = [80, 70000]\n");
        assert_eq!((e.file.as_str(), e.line), ("p.toml", 2));
        assert!(e.message.contains("70000"), "{e}");
        assert!(e.to_string().starts_with("p.toml:2:"), "{e}");
    }

    #[test]
    fn bad_cidr_names_line_and_value() {
        let e = err("[[allow]]\nports = [22]\n\nfrom = [\"10.0.0.0/40\"]\n");
        assert_eq!(e.line, 4, "{e}");
        assert!(e.message.contains("10.0.0.0/40"), "{e}");
    }

    #[test]
    fn unknown_keys_and_protocols_are_refused() {
        let e = err("[[allow]]\nports = [22]\nproto = \"icmp\"\n");
        assert_eq!(e.line, 3, "{e}");
        assert!(e.message.contains("icmp"), "{e}");
        let e = err("[[allow]]\nport = [22]\n");
        assert!(e.message.contains("port"), "{e}");
        let e = err("[options]\nstrict = true\n");
        assert!(e.message.contains("strict"), "{e}");
    }

    #[test]
    fn syn_rule_without_state_is_refused() {
        let e = err("[options]\nestablished = false\n");
        assert_eq!(e.line, 2, "{e}");
        assert!(e.message.contains("new_requires_syn"), "{e}");
        let p = parse_policy(
            "p",
            "[options]\nestablished = false\nnew_requires_syn = false\n",
        )
        .unwrap();
        assert!(!p.options.established);
    }

    #[test]
    fn empty_ports_and_syntax_errors_are_refused() {
        let e = err("[[allow]]\nports = []\n");
        assert_eq!(e.line, 2, "{e}");
        let e = err("[[allow]\nports = [1]\n");
        assert_eq!(e.line, 1, "{e}");
        let e = err("[options]\nfragments = \"maybe\"\n");
        assert!(e.message.contains("maybe"), "{e}");
    }
}
