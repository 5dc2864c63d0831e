//! Migration to fw: rule sets of other firewalls (iptables save files and scripts) turned into
//! fw policies, and fw policies written back as iptables rules. Every import is checked: the
//! original rules and the fw policy are both run over every kind of packet the rules tell apart,
//! fw's side by the same `fw_common::decide_parsed()` the XDP program runs.

pub mod iptables;
