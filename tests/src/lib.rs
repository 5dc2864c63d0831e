//! Helpers for fw's root-only test tiers. Everything a test creates (namespaces, veth pairs,
//! bpffs directories, attached filters) is owned by a guard whose Drop removes it, so a failing
//! test leaves nothing behind.

pub mod differential;
pub mod netns;
pub mod observe;
pub mod testrun;
