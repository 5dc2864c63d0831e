//! iptables ⇄ fw: `fw import iptables` reads an `iptables-save` / `ip6tables-save` file or a
//! script of `iptables` commands and writes the equivalent fw policy; `fw export iptables`
//! writes a policy as iptables-save rules.
//!
//! iptables is first-match over an ordered chain; fw's model is fixed: scan drops, connection
//! state, allowed ports (optionally per source), default drop. The importer therefore does not
//! trust the shape of the rules alone: it runs both the iptables chain and the fw policy it
//! built over every kind of packet the rules can tell apart (each port and source boundary
//! they mention, every TCP flag combination, each connection state, ICMP types, other
//! protocols) and refuses the file, naming the line, when the two decide differently — unless
//! fw only drops packets no real stack sends (those differences are listed as notes).

mod addrset;
mod export;
mod export_flood;
mod lex;
mod load;
mod model;
mod rule;
mod translate;

#[cfg(test)]
mod tests;

pub use export::export;
pub use translate::{ImportOptions, Imported, import};

/// An address family: iptables rules are IPv4, ip6tables rules IPv6.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Family {
    V4,
    V6,
}

impl Family {
    pub fn name(self) -> &'static str {
        match self {
            Family::V4 => "IPv4",
            Family::V6 => "IPv6",
        }
    }

    /// The tool that loads rules of this family.
    pub fn tool(self) -> &'static str {
        match self {
            Family::V4 => "iptables",
            Family::V6 => "ip6tables",
        }
    }

    pub(crate) fn idx(self) -> usize {
        match self {
            Family::V4 => 0,
            Family::V6 => 1,
        }
    }
}

/// Why a file was not imported. Every variant names the file and, where there is one, the line
/// and the part of it that fw cannot take.
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    #[error("{file}: cannot read: {source}")]
    Read {
        file: String,
        #[source]
        source: std::io::Error,
    },
    /// Not valid iptables input (iptables itself would refuse it).
    #[error("{file}:{line}: {message}: `{value}`\n    {text}")]
    Syntax {
        file: String,
        line: usize,
        value: String,
        message: String,
        text: String,
    },
    /// Valid iptables that fw has no equivalent for.
    #[error("{file}:{line}: cannot import `{value}`: {reason}\n    {text}")]
    Unsupported {
        file: String,
        line: usize,
        value: String,
        reason: String,
        text: String,
    },
    /// The rule is fine alone, but where it stands it makes iptables decide some packets
    /// differently than fw's fixed order can.
    #[error("{file}:{line}: cannot import `{value}`: {reason}\n    {text}{}", also_lines(.also))]
    NotEquivalent {
        file: String,
        line: usize,
        value: String,
        reason: String,
        text: String,
        /// Other lines with the same kind of problem.
        also: Box<[usize]>,
    },
    /// The INPUT chain ends in ACCEPT: fw is default-drop.
    #[error(
        "{file}{}: cannot import `{value}`: the INPUT chain's default is ACCEPT, so iptables accepts {example}, which fw would drop ({fw_reason}). fw is default-drop: end the chain with `-P INPUT DROP` (or a final `-A INPUT -j DROP`/`REJECT`) and allow what must stay open",
        at_line(.line)
    )]
    DefaultAccept {
        file: String,
        /// The line that sets the policy, if any (without one, iptables' default is ACCEPT).
        line: Option<usize>,
        value: String,
        example: String,
        fw_reason: String,
    },
    #[error("{file}: nothing to import: {reason}")]
    Nothing { file: String, reason: String },
}

fn also_lines(also: &[usize]) -> String {
    if also.is_empty() {
        return String::new();
    }
    let v: Vec<String> = also.iter().map(|l| l.to_string()).collect();
    format!(
        "\n    (the same problem on line{} {})",
        if v.len() > 1 { "s" } else { "" },
        v.join(", ")
    )
}

fn at_line(line: &Option<usize>) -> String {
    line.map(|l| format!(":{l}")).unwrap_or_default()
}

impl ImportError {
    /// The line the error is about.
    pub fn line(&self) -> Option<usize> {
        match self {
            ImportError::Syntax { line, .. }
            | ImportError::Unsupported { line, .. }
            | ImportError::NotEquivalent { line, .. } => Some(*line),
            ImportError::DefaultAccept { line, .. } => *line,
            ImportError::Read { .. } | ImportError::Nothing { .. } => None,
        }
    }

    /// The part of the line that could not be imported.
    pub fn value(&self) -> Option<&str> {
        match self {
            ImportError::Syntax { value, .. }
            | ImportError::Unsupported { value, .. }
            | ImportError::NotEquivalent { value, .. }
            | ImportError::DefaultAccept { value, .. } => Some(value),
            ImportError::Read { .. } | ImportError::Nothing { .. } => None,
        }
    }
}
