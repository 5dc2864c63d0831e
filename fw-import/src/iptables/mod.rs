//! iptables ⇄ fw: `fw import iptables` reads an `iptables-save` / `ip6tables-save` file or a
//! script of `iptables` commands and writes the equivalent fw policy; `fw export iptables`
//! writes a policy as iptables-save rules.
//!
//! iptables is first-match over ordered chains; fw's model is fixed: scan drops, connection
//! state, allowed ports (optionally per source), default drop. The importer therefore does not
//! trust the shape of the rules alone: it runs both the iptables chain and the fw policy it
//! built over every kind of packet the rules can tell apart and refuses the file, naming each
//! line at fault, when the two decide differently — unless fw only drops packets no real stack
//! sends (those differences are listed as notes).

mod export;
mod export_flood;
pub(crate) mod flatten;
mod icmp;
pub(crate) mod lex;
pub(crate) mod load;
pub(crate) mod rate;
pub(crate) mod rule;
pub(crate) mod script;

#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_flood;

pub use crate::{Family, ImportError, ImportOptions, Imported};
pub use export::export;

/// Parse `text` (named `file` in messages) and translate it; nothing is returned unless every
/// line could be imported and the policy decides as the rules do. Every problem of the file is
/// in the error, in line order.
pub fn import(file: &str, text: &str, opts: &ImportOptions) -> Result<Imported, ImportError> {
    let loaded = load::load(file, text, opts);
    crate::pipeline::import_loaded(file, loaded, opts)
}
