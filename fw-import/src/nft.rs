//! `fw import nft`: an nftables rule set (`nft -j list ruleset`).

use crate::{ImportError, ImportOptions, Imported};

/// Import `nft -j list ruleset` output.
pub fn import(file: &str, _text: &str, _opts: &ImportOptions) -> Result<Imported, ImportError> {
    Err(ImportError::Nothing {
        file: file.to_string(),
        reason: "not implemented yet".into(),
    })
}
