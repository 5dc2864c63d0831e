//! Policy features fw does not have yet, in one place.
//!
//! Rule sets that need them (an INPUT policy ACCEPT with DROP rules, blocklists ahead of the
//! allowed ports, `-m limit`/`hashlimit`/`recent`, ufw's `limit`) are refused today with a
//! message that names the missing feature. When fw-policy gains one (issue 12: `default =
//! "accept"`, `[[block]]`, `limit = "6/30s"`, automatic bans), switch it on in
//! [`Missing::available`] and translate the rules in the places that call [`refusal`].

/// A feature of the fw policy that some rule sets need.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Missing {
    /// `default = "accept"`: everything passes except blocks, scan drops and limits.
    DefaultAccept,
    /// `[[block]]` entries: sources dropped on every port, ahead of what is allowed.
    Blocklist,
    /// `limit = "6/30s"` on an allow rule: new connections per source per period.
    RateLimit,
    /// Sources over a limit blocked for a while (the `-m recent` / fail2ban pattern).
    Ban,
}

impl Missing {
    /// Whether the policy has it (all of them since issue 12; the importers translate them).
    pub const fn available(self) -> bool {
        match self {
            Missing::DefaultAccept | Missing::Blocklist => true,
            Missing::RateLimit | Missing::Ban => false,
        }
    }

    /// The feature in the words of the policy file.
    pub const fn what(self) -> &'static str {
        match self {
            Missing::DefaultAccept => "a default-accept mode (`default = \"accept\"`)",
            Missing::Blocklist => "blocklists (`[[block]]` entries)",
            Missing::RateLimit => "per-source rate limits (`limit = \"6/30s\"` on an allow rule)",
            Missing::Ban => "automatic bans of sources over a limit",
        }
    }
}

/// The sentence a refusal ends with.
pub fn refusal(m: Missing) -> String {
    format!(
        "this needs {}, which fw does not have yet (planned: issue 12)",
        m.what()
    )
}
