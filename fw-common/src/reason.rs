//! Why a packet passed or was dropped. Each reason owns one slot in the per-CPU counter array;
//! rule matches use the slots from [`crate::maps::RULE_SLOT_BASE`] on.

/// A counted reason for a verdict that is not "matched allow rule N".
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Reason {
    // Passes.
    /// Not IPv4/IPv6 (ARP, LLDP, …): never filtered, so the link keeps working.
    NonIp = 1,
    /// ICMPv6 neighbour discovery or multicast listener messages: always pass.
    Ndp = 2,
    /// ICMP/ICMPv6 echo request, allowed by `icmp_echo = true`.
    IcmpEcho = 3,
    /// DHCP/DHCPv6 replies to this host's client, allowed by `dhcp_client = true`.
    DhcpClient = 4,
    /// A non-first fragment, passed by `fragments = "pass"` (see the README).
    FragmentPassed = 5,
    /// `fw flush` is in force: everything passes.
    Flushed = 6,
    /// Reply or continuation of a tracked connection (ESTABLISHED).
    Established = 7,
    /// ICMP error about a tracked connection (RELATED).
    Related = 8,
    /// `default = "accept"`: no rule admits it, and the default is to let it in.
    DefaultAccept = 9,
    /// A client's ACK that carries a valid SYN cookie this host answered from XDP: the
    /// handshake is complete, the kernel's listener takes it from here.
    SynCookieAck = 10,

    // Drops.
    /// A header is cut short by the end of the frame or of the IP datagram.
    Truncated = 16,
    /// A header field is impossible (IP version, header length, total length, TCP data offset,
    /// UDP length).
    BadHeader = 17,
    /// A first fragment too short to hold the transport header (RFC 1858), or a TCP fragment at
    /// offset 8 that would overwrite the flags.
    TinyFragment = 18,
    /// A non-first fragment, dropped by `fragments = "drop"`.
    FragmentDropped = 19,
    /// More than two VLAN tags.
    TooManyVlans = 20,
    /// IPv6 extension-header chain too long, or it does not end in the first fragment.
    ExtHeaders = 21,
    /// TCP without any flag (NULL scan).
    TcpNull = 22,
    /// TCP with FIN SYN RST PSH ACK URG all set (XMAS).
    TcpXmas = 23,
    /// Any other TCP flag combination that no real stack sends (SYN+FIN, FIN without ACK, …).
    TcpBadFlags = 24,
    /// TCP that claims to belong to a connection nobody opened (not a plain SYN, no state).
    TcpNotSyn = 25,
    /// The port only admits some sources and this one is not among them.
    SourceNotAllowed = 26,
    /// No rule let it in: the default DROP policy.
    DefaultDrop = 27,
    /// ICMP error quoting a connection that is not tracked.
    IcmpUnrelated = 28,
    /// The source is on a block list (`fw block`, `[[block]]`).
    Blocked = 29,
    /// The source is banned for a while: it exceeded a rule's rate limit too often.
    Banned = 30,
    /// The source exceeded the rule's per-source rate limit (`limit`).
    RateLimited = 31,
    /// All sources together exceeded the rule's aggregate rate limit (`total`).
    RateLimitTotal = 32,
    /// The XDP program could not run its flood step (block lists, limits): dropped, fail
    /// closed. Never seen unless fw is broken.
    Internal = 33,
    /// A SYN to an allowed port answered from XDP with a SYN cookie (XDP_TX): the socket
    /// layer never sees it. Counted apart from the rule, because nothing reached the host.
    SynCookie = 34,
    /// An ACK that belongs to no connection while SYN cookies are out, and whose
    /// acknowledgment number is no valid cookie (a blind or spoofed ACK).
    SynCookieBad = 35,
    /// A multi-buffer frame (jumbo frames, `xdp.frags`) whose headers do not all lie in its
    /// first buffer: the parser reads only that buffer, so the frame cannot be judged. Slot 39,
    /// apart from the sequence above, so reasons added meanwhile on other branches keep theirs
    /// (slots 36..=38 and 40.. are event counters, see [`crate::maps`]).
    HeadersSplit = 39,
}

impl Reason {
    /// Every reason, in slot order (for listings).
    pub const ALL: [Reason; 31] = [
        Reason::NonIp,
        Reason::Ndp,
        Reason::IcmpEcho,
        Reason::DhcpClient,
        Reason::FragmentPassed,
        Reason::Flushed,
        Reason::Established,
        Reason::Related,
        Reason::DefaultAccept,
        Reason::SynCookieAck,
        Reason::Truncated,
        Reason::BadHeader,
        Reason::TinyFragment,
        Reason::FragmentDropped,
        Reason::TooManyVlans,
        Reason::ExtHeaders,
        Reason::TcpNull,
        Reason::TcpXmas,
        Reason::TcpBadFlags,
        Reason::TcpNotSyn,
        Reason::SourceNotAllowed,
        Reason::DefaultDrop,
        Reason::IcmpUnrelated,
        Reason::Blocked,
        Reason::Banned,
        Reason::RateLimited,
        Reason::RateLimitTotal,
        Reason::Internal,
        Reason::SynCookie,
        Reason::SynCookieBad,
        Reason::HeadersSplit,
    ];

    pub const fn slot(self) -> u32 {
        self as u32
    }

    /// Whether packets counted under this reason pass (reach the host's stack). A SYN
    /// answered with a cookie does not: see [`Reason::answers`].
    pub const fn passes(self) -> bool {
        (self as u32) < 16
    }

    /// Whether fw answers the packet itself (XDP_TX) instead of passing or dropping it.
    pub const fn answers(self) -> bool {
        matches!(self, Reason::SynCookie)
    }

    pub fn from_slot(slot: u32) -> Option<Reason> {
        Self::ALL.into_iter().find(|r| r.slot() == slot)
    }

    /// Short name, as `fw status` prints it.
    pub const fn name(self) -> &'static str {
        match self {
            Reason::NonIp => "non-ip",
            Reason::Ndp => "icmpv6-nd",
            Reason::IcmpEcho => "icmp-echo",
            Reason::DhcpClient => "dhcp-client",
            Reason::FragmentPassed => "fragment-pass",
            Reason::Flushed => "flushed",
            Reason::Established => "established",
            Reason::Related => "related",
            Reason::DefaultAccept => "default-accept",
            Reason::SynCookieAck => "syn-cookie-ack",
            Reason::Truncated => "truncated",
            Reason::BadHeader => "bad-header",
            Reason::TinyFragment => "tiny-fragment",
            Reason::FragmentDropped => "fragment-drop",
            Reason::TooManyVlans => "too-many-vlans",
            Reason::ExtHeaders => "ipv6-ext-headers",
            Reason::TcpNull => "tcp-null",
            Reason::TcpXmas => "tcp-xmas",
            Reason::TcpBadFlags => "tcp-bad-flags",
            Reason::TcpNotSyn => "tcp-new-not-syn",
            Reason::SourceNotAllowed => "source-not-allowed",
            Reason::DefaultDrop => "default-drop",
            Reason::IcmpUnrelated => "icmp-unrelated",
            Reason::Blocked => "blocked",
            Reason::Banned => "banned",
            Reason::RateLimited => "rate-limited",
            Reason::RateLimitTotal => "rate-limit-total",
            Reason::Internal => "internal",
            Reason::SynCookie => "syn-cookie",
            Reason::SynCookieBad => "syn-cookie-bad",
            Reason::HeadersSplit => "headers-split",
        }
    }

    /// One line in plain words, as `fw status` and `fw explain` print it.
    pub const fn describe(self) -> &'static str {
        match self {
            Reason::NonIp => "not IP (ARP, LLDP, ...): always passes so the link keeps working",
            Reason::Ndp => "ICMPv6 neighbour discovery / multicast listener: always passes",
            Reason::IcmpEcho => "ping (echo request), allowed by icmp_echo",
            Reason::DhcpClient => "DHCP reply to this host's client, allowed by dhcp_client",
            Reason::FragmentPassed => "non-first IP fragment, passed by fragments = \"pass\"",
            Reason::Flushed => "fw flush is in force: everything passes",
            Reason::Established => "part of a tracked connection (ESTABLISHED)",
            Reason::Related => "ICMP error about a tracked connection (RELATED)",
            Reason::DefaultAccept => "no rule matches; the policy's default is accept",
            Reason::SynCookieAck => {
                "handshake completed with a valid SYN cookie answered by fw (syn_cookies)"
            }
            Reason::Truncated => "header cut short",
            Reason::BadHeader => "impossible header field",
            Reason::TinyFragment => "first fragment too short for the transport header",
            Reason::FragmentDropped => "non-first IP fragment, dropped by fragments = \"drop\"",
            Reason::TooManyVlans => "more than two VLAN tags",
            Reason::ExtHeaders => "IPv6 extension headers too many or too long",
            Reason::TcpNull => "TCP NULL scan (no flags)",
            Reason::TcpXmas => "TCP XMAS scan (all flags)",
            Reason::TcpBadFlags => "TCP flag combination no real stack sends",
            Reason::TcpNotSyn => "TCP not starting with SYN and not part of a tracked connection",
            Reason::SourceNotAllowed => "port open only to other sources",
            Reason::DefaultDrop => "no rule allows it (default DROP)",
            Reason::IcmpUnrelated => "ICMP error about no tracked connection",
            Reason::Blocked => "source is on a block list (every port)",
            Reason::Banned => "source is banned for a while: it exceeded a rate limit too often",
            Reason::RateLimited => "source exceeded the rule's per-source rate limit",
            Reason::RateLimitTotal => "all sources together exceeded the rule's aggregate limit",
            Reason::Internal => "the flood step (block lists, limits) could not run: dropped",
            Reason::SynCookie => {
                "SYN answered by fw with a SYN cookie (syn_cookies): the host's stack never sees it"
            }
            Reason::SynCookieBad => {
                "ACK of no connection whose acknowledgment number is no valid SYN cookie"
            }
            Reason::HeadersSplit => {
                "multi-buffer frame whose headers do not fit in its first buffer"
            }
        }
    }
}
