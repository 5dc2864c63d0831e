//! Structural cases: IP fragments, IPv4 and IPv6 — first, later, tiny (RFC 1858),
//! overlapping, atomic; passed or dropped by `fragments`.

use super::prelude::*;

/// Fragments, IPv4.
pub fn v4(t: &mut Table, e: &Env) {
    let port = e.tcp_port();
    let ok = e.tcp_ok();
    let uport = e.udp_port();
    let uok = e.udp_ok();
    t.ok(
        "v4 first fragment, full TCP header",
        syn4(port).frag(FragSpec::First).payload(16).build(),
        ok,
    );
    t.ok(
        "v4 first fragment, full TCP header, closed port",
        syn4(e.closed).frag(FragSpec::First).payload(16).build(),
        Is(Reason::DefaultDrop),
    );
    for keep in [0usize, 1, 8, 19] {
        t.odd(
            format!("v4 tiny first fragment, {keep} TCP bytes"),
            cut(syn4(port).frag(FragSpec::First).build(), 14 + 20 + keep),
            Is(Reason::TinyFragment),
        );
    }
    {
        // Data offset 8 (32-byte header), only 24 bytes in the first fragment.
        let mut f = syn4(port).frag(FragSpec::First).payload(12).build();
        let o = l4_v4(&f);
        f[o + 12] = 8 << 4;
        t.odd(
            "v4 first fragment cutting the TCP options",
            cut(f, 14 + 20 + 24),
            Is(Reason::TinyFragment),
        );
    }
    for keep in [0usize, 4, 7] {
        t.odd(
            format!("v4 tiny first fragment, {keep} UDP bytes"),
            cut(
                PacketSpec::udp(S4, D4, 1000, uport)
                    .frag(FragSpec::First)
                    .build(),
                14 + 20 + keep,
            ),
            Is(Reason::TinyFragment),
        );
    }
    t.odd(
        "v4 tiny first fragment, 4 ICMP bytes",
        cut(
            PacketSpec::icmp(S4, D4, 8, 0).frag(FragSpec::First).build(),
            14 + 24,
        ),
        Is(Reason::TinyFragment),
    );
    t.ok(
        "v4 first fragment, UDP length beyond the fragment",
        {
            let mut f = PacketSpec::udp(S4, D4, 1000, uport)
                .frag(FragSpec::First)
                .payload(8)
                .build();
            let o = l4_v4(&f);
            put16(&mut f, o + 4, 1400);
            f
        },
        uok,
    );
    t.ok(
        "v4 TCP fragment at offset 1 (RFC 1858 flag rewrite)",
        syn4(port).frag(FragSpec::Later(1)).build(),
        Is(Reason::TinyFragment),
    );
    t.ok(
        "v4 TCP fragment at offset 1 with more fragments",
        {
            let mut f = syn4(port).frag(FragSpec::Later(1)).build();
            f[20] |= 0x20;
            f
        },
        Is(Reason::TinyFragment),
    );
    t.ok(
        "v4 TCP fragment at offset 2",
        syn4(port).frag(FragSpec::Later(2)).build(),
        e.later_fragment(),
    );
    t.ok(
        "v4 UDP fragment at offset 1",
        PacketSpec::udp(S4, D4, 1000, uport)
            .frag(FragSpec::Later(1))
            .build(),
        e.later_fragment(),
    );
    t.ok(
        "v4 later TCP fragment (offset 185)",
        syn4(port).frag(FragSpec::Later(185)).payload(100).build(),
        e.later_fragment(),
    );
    t.ok(
        "v4 later fragment at the last offset (8191)",
        PacketSpec::udp(S4, D4, 1000, uport)
            .frag(FragSpec::Later(0x1fff))
            .build(),
        e.later_fragment(),
    );
    t.ok(
        "v4 later fragment with more fragments, closed port",
        {
            let mut f = syn4(e.closed).frag(FragSpec::Later(3)).build();
            f[20] |= 0x20;
            f
        },
        e.later_fragment(),
    );
    t.ok(
        "v4 later fragment, no payload",
        cut(syn4(port).frag(FragSpec::Later(7)).build(), 34),
        e.later_fragment(),
    );
    t.ok(
        "v4 later fragment, 3 payload bytes (TCP)",
        cut(syn4(port).frag(FragSpec::Later(7)).build(), 37),
        e.later_fragment(),
    );
    t.ok(
        "v4 later ICMP fragment",
        PacketSpec::icmp(S4, D4, 8, 0)
            .frag(FragSpec::Later(20))
            .build(),
        e.later_fragment(),
    );
    t.ok(
        "v4 DF set, offset 0 (not a fragment)",
        syn4(port).build(),
        ok,
    );
}

/// Fragments, IPv6.
pub fn v6(t: &mut Table, e: &Env) {
    let port = e.tcp_port();
    let ok = e.tcp_ok();
    let uport = e.udp_port();
    t.ok(
        "v6 first fragment, full TCP header",
        syn6(port).frag(FragSpec::First).payload(16).build(),
        ok,
    );
    t.ok(
        "v6 first fragment, then destination options, then TCP",
        v6_chain(
            syn6(port),
            &[
                Ext::Frag {
                    offset: 0,
                    more: true,
                },
                Ext::Dst(8),
            ],
        ),
        ok,
    );
    for keep in [0usize, 8, 19] {
        t.odd(
            format!("v6 tiny first fragment, {keep} TCP bytes"),
            cut(syn6(port).frag(FragSpec::First).build(), 14 + 48 + keep),
            Is(Reason::TinyFragment),
        );
    }
    t.odd(
        "v6 tiny first fragment, 4 UDP bytes",
        cut(
            PacketSpec::udp(S6, D6, 1000, uport)
                .frag(FragSpec::First)
                .build(),
            14 + 48 + 4,
        ),
        Is(Reason::TinyFragment),
    );
    t.odd(
        "v6 tiny first fragment behind a hop-by-hop, 10 TCP bytes",
        cut(
            v6_chain(
                syn6(port),
                &[
                    Ext::Hbh(8),
                    Ext::Frag {
                        offset: 0,
                        more: true,
                    },
                ],
            ),
            14 + 56 + 10,
        ),
        Is(Reason::TinyFragment),
    );
    t.ok(
        "v6 later fragment (offset 185)",
        syn6(port).frag(FragSpec::Later(185)).payload(64).build(),
        e.later_fragment(),
    );
    t.ok(
        "v6 TCP fragment at offset 1",
        syn6(port).frag(FragSpec::Later(1)).build(),
        e.later_fragment(),
    );
    t.ok(
        "v6 later fragment behind a hop-by-hop",
        v6_chain(
            syn6(port),
            &[
                Ext::Hbh(8),
                Ext::Frag {
                    offset: 50,
                    more: true,
                },
            ],
        ),
        e.later_fragment(),
    );
    t.ok(
        "v6 later fragment, nothing after the fragment header",
        cut(syn6(port).frag(FragSpec::Later(9)).build(), 14 + 48),
        e.later_fragment(),
    );
}
