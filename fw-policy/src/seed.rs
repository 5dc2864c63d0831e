//! The embedded default policy: the seed tutorial's host firewall.

pub const SEED_POLICY: &str = include_str!("../../policies/seed.toml");
