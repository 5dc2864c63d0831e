//! TCP flag classification, branch-free: one shift into a 64-bit table.

pub const FIN: u8 = 0x01;
pub const SYN: u8 = 0x02;
pub const RST: u8 = 0x04;
pub const PSH: u8 = 0x08;
pub const ACK: u8 = 0x10;
pub const URG: u8 = 0x20;
pub const ECE: u8 = 0x40;
pub const CWR: u8 = 0x80;

/// The six classic flags (what iptables' `--tcp-flags ALL` means).
pub const ALL: u8 = FIN | SYN | RST | PSH | ACK | URG;

/// Every flag with its name (as iptables, nftables and the RFCs spell it) and its one-letter
/// form (tcpdump's, `fw explain --flags`), in bit order: the one flag-name table of fw.
pub const FLAG_NAMES: [(u8, &str, char); 8] = [
    (FIN, "FIN", 'F'),
    (SYN, "SYN", 'S'),
    (RST, "RST", 'R'),
    (PSH, "PSH", 'P'),
    (ACK, "ACK", 'A'),
    (URG, "URG", 'U'),
    (ECE, "ECE", 'E'),
    (CWR, "CWR", 'C'),
];

/// The flag named `name` (`"syn"`, `"ACK"`, any case).
pub fn flag_by_name(name: &str) -> Option<u8> {
    FLAG_NAMES
        .iter()
        .find(|(_, n, _)| n.eq_ignore_ascii_case(name))
        .map(|(f, _, _)| *f)
}

/// The names of the flags set in `flags`, in bit order.
pub fn flag_names(flags: u8) -> impl Iterator<Item = &'static str> {
    FLAG_NAMES
        .iter()
        .filter(move |(f, _, _)| flags & f != 0)
        .map(|(_, n, _)| *n)
}

/// The combinations a real TCP stack sends, as Linux conntrack's `tcp_valid_flags` table has
/// them: index = flags without PSH, ECE and CWR (those may accompany any valid combination).
const VALID: u64 = (1 << SYN)
    | (1 << (SYN | URG))
    | (1 << (SYN | ACK))
    | (1 << RST)
    | (1 << (RST | ACK))
    | (1 << (FIN | ACK))
    | (1 << (FIN | ACK | URG))
    | (1 << ACK)
    | (1 << (ACK | URG));

/// What a TCP packet's flags say before any lookup.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FlagClass {
    /// No flag at all (NULL scan): the seed drops it.
    Null,
    /// FIN SYN RST PSH ACK URG all set (XMAS): the seed drops it.
    Xmas,
    /// Another combination no real stack sends (nmap's FIN+PSH+URG "XMAS", SYN+FIN, SYN+RST,
    /// FIN without ACK …): dropped unless the policy keeps only the seed's two rules.
    Invalid,
    /// A plain SYN (optionally with URG/PSH/ECE/CWR): the start of a new connection.
    Syn,
    /// Any other valid combination: part of an existing connection.
    Other,
}

#[inline(always)]
pub fn classify(flags: u8) -> FlagClass {
    let six = flags & ALL;
    if six == 0 {
        return FlagClass::Null;
    }
    if six == ALL {
        return FlagClass::Xmas;
    }
    let idx = flags & (FIN | SYN | RST | ACK | URG);
    if (VALID >> idx) & 1 == 0 {
        return FlagClass::Invalid;
    }
    if idx & (SYN | ACK) == SYN {
        FlagClass::Syn
    } else {
        FlagClass::Other
    }
}

/// `flags` as a comma-separated list of names (`SYN,ACK`), `none` for no flag.
#[cfg(any(test, feature = "builder"))]
pub fn names(flags: u8) -> std::string::String {
    use std::string::ToString as _;
    let list: std::vec::Vec<&str> = flag_names(flags).collect();
    if list.is_empty() {
        "none".to_string()
    } else {
        list.join(",")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flag_names_cover_every_bit_once() {
        let all: u8 = FLAG_NAMES.iter().fold(0, |a, (f, _, _)| {
            assert_eq!(a & f, 0, "{f:#x} twice");
            a | f
        });
        assert_eq!(all, 0xff);
        assert_eq!(flag_by_name("syn"), Some(SYN));
        assert_eq!(flag_by_name("Cwr"), Some(CWR));
        assert_eq!(flag_by_name("NONE"), None);
        let mut it = flag_names(SYN | ACK);
        assert_eq!(
            (it.next(), it.next(), it.next()),
            (Some("SYN"), Some("ACK"), None)
        );
    }

    #[test]
    fn seed_scans_are_classified() {
        assert_eq!(classify(0), FlagClass::Null);
        assert_eq!(classify(ECE | CWR), FlagClass::Null);
        assert_eq!(classify(ALL), FlagClass::Xmas);
        assert_eq!(classify(0xff), FlagClass::Xmas);
    }

    #[test]
    fn nmap_and_impossible_combinations_are_invalid() {
        for f in [
            FIN | PSH | URG, // nmap -sX
            FIN,             // nmap -sF
            SYN | FIN,
            SYN | RST,
            FIN | RST,
            PSH,
            URG,
            SYN | FIN | PSH | URG,
            RST | FIN | ACK,
            SYN | ACK | FIN,
        ] {
            assert_eq!(classify(f), FlagClass::Invalid, "flags {f:#04x}");
        }
    }

    #[test]
    fn real_stack_combinations_are_valid() {
        assert_eq!(classify(SYN), FlagClass::Syn);
        assert_eq!(classify(SYN | ECE | CWR), FlagClass::Syn);
        assert_eq!(classify(SYN | PSH), FlagClass::Syn);
        for f in [
            SYN | ACK,
            ACK,
            ACK | PSH,
            FIN | ACK,
            RST,
            RST | ACK,
            ACK | URG,
            FIN | ACK | PSH,
        ] {
            assert_eq!(classify(f), FlagClass::Other, "flags {f:#04x}");
        }
    }
}
