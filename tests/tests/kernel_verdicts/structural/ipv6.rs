//! Structural cases: the IPv6 header and its extension headers (walked, bounded in count
//! and offset).

use super::prelude::*;

/// IPv6 header.
pub fn header(t: &mut Table, e: &Env) {
    let port = e.tcp_port();
    let ok = e.tcp_ok();
    {
        let mut f = syn6(port).build();
        f[14] = 0x40;
        t.odd("IPv6 ethertype, IP version 4", f, Is(Reason::BadHeader));
        let mut f = syn6(port).build();
        f[14] = 0x00;
        t.odd("IPv6 ethertype, IP version 0", f, Is(Reason::BadHeader));
        let mut f = v6_chain(syn6(port), &[Ext::Hbh(8)]);
        put16(&mut f, 18, 0);
        t.odd(
            "v6 jumbogram (payload 0, hop-by-hop)",
            f,
            Is(Reason::BadHeader),
        );
        let mut f = syn6(port).build();
        put16(&mut f, 18, 0);
        t.odd("v6 TCP, payload length 0", f, Is(Reason::Truncated));
        let mut f = syn6(port).build();
        put16(&mut f, 18, 21);
        t.odd(
            "v6 TCP, payload length one too long",
            f,
            Is(Reason::Truncated),
        );
        let mut f = syn6(port).build();
        put16(&mut f, 18, 19);
        t.odd(
            "v6 TCP, payload length one too short",
            f,
            Is(Reason::Truncated),
        );
        let mut f = syn6(port).build();
        put16(&mut f, 18, 0xffff);
        t.odd("v6 TCP, payload length 65535", f, Is(Reason::Truncated));
    }
    t.odd(
        "v6 SYN + 30 bytes of Ethernet padding",
        padded(syn6(port).build(), 30, 0),
        ok,
    );
    t.ok(
        "v6 no next header (59)",
        PacketSpec::new(S6, D6, L4Spec::Raw { proto: 59 })
            .payload(8)
            .build(),
        Is(Reason::DefaultDrop),
    );
    t.ok(
        "v6 ESP",
        PacketSpec::new(S6, D6, L4Spec::Raw { proto: 50 })
            .payload(40)
            .build(),
        Is(Reason::DefaultDrop),
    );
    t.ok(
        "v6 ICMP (v4 number 1) is not ICMPv6",
        PacketSpec::new(S6, D6, L4Spec::Raw { proto: 1 })
            .payload(8)
            .build(),
        Is(Reason::DefaultDrop),
    );
}

/// IPv6 extension headers.
pub fn extension_headers(t: &mut Table, e: &Env) {
    let port = e.tcp_port();
    let ok = e.tcp_ok();
    let uport = e.udp_port();
    let uok = e.udp_ok();
    for (name, x) in [
        ("hop-by-hop", Ext::Hbh(8)),
        ("routing", Ext::Rt(24)),
        ("destination options", Ext::Dst(16)),
        ("AH (12 bytes)", Ext::Ah(12)),
        ("AH (24 bytes)", Ext::Ah(24)),
        (
            "atomic fragment",
            Ext::Frag {
                offset: 0,
                more: false,
            },
        ),
    ] {
        t.ok(
            format!("v6 SYN behind {name}"),
            v6_chain(syn6(port), &[x]),
            ok,
        );
        t.ok(
            format!("v6 UDP behind {name}"),
            v6_chain(PacketSpec::udp(S6, D6, 1000, uport), &[x]),
            uok,
        );
        t.ok(
            format!("v6 SYN to a closed port behind {name}"),
            v6_chain(syn6(e.closed), &[x]),
            Is(Reason::DefaultDrop),
        );
    }
    let h = |n: usize| Ext::Dst(8 * n);
    let six = [
        Ext::Hbh(8),
        Ext::Dst(8),
        Ext::Rt(8),
        Ext::Ah(16),
        Ext::Dst(16),
        Ext::Dst(8),
    ];
    t.ok("v6 SYN behind a chain of 6", v6_chain(syn6(port), &six), ok);
    t.ok(
        "v6 SYN behind a chain of 6, two VLAN tags",
        v6_chain(syn6(port).vlans(&[1, 2]), &six),
        ok,
    );
    let mut seven = six.to_vec();
    seven.push(Ext::Rt(8));
    t.ok(
        "v6 SYN behind a chain of 7",
        v6_chain(syn6(port), &seven),
        Is(Reason::ExtHeaders),
    );
    let mut five_frag = six[..5].to_vec();
    five_frag.push(Ext::Frag {
        offset: 0,
        more: true,
    });
    t.ok(
        "v6 first fragment behind a chain of 5 (6 headers)",
        v6_chain(syn6(port), &five_frag),
        ok,
    );
    let mut six_frag = six.to_vec();
    six_frag.push(Ext::Frag {
        offset: 0,
        more: true,
    });
    t.ok(
        "v6 first fragment behind a chain of 6 (7 headers)",
        v6_chain(syn6(port), &six_frag),
        Is(Reason::ExtHeaders),
    );
    let mut six_later = six.to_vec();
    six_later.push(Ext::Frag {
        offset: 100,
        more: false,
    });
    t.ok(
        "v6 later fragment behind a chain of 6 (7 headers)",
        v6_chain(syn6(port), &six_later),
        Is(Reason::ExtHeaders),
    );
    // The transport header must start within 512 bytes of the frame start: 14 + 40 + 456 = 510
    // passes, 518 does not.
    t.ok(
        "v6 SYN, ext headers end at byte 510",
        v6_chain(syn6(port), &[h(57)]),
        ok,
    );
    t.ok(
        "v6 SYN, ext headers end at byte 518",
        v6_chain(syn6(port), &[h(58)]),
        Is(Reason::ExtHeaders),
    );
    t.ok(
        "v6 SYN, two ext headers end at byte 510",
        v6_chain(syn6(port), &[Ext::Hbh(256), h(25)]),
        ok,
    );
    t.ok(
        "v6 SYN, two ext headers end at byte 518",
        v6_chain(syn6(port), &[Ext::Hbh(256), h(26)]),
        Is(Reason::ExtHeaders),
    );
    t.ok(
        "v6 SYN, a 2048-byte hop-by-hop header",
        v6_chain(syn6(port), &[Ext::Hbh(2048)]),
        Is(Reason::ExtHeaders),
    );
    t.ok(
        "v6 SYN, a 1028-byte AH",
        v6_chain(syn6(port), &[Ext::Ah(1028)]),
        Is(Reason::ExtHeaders),
    );
    t.ok(
        "v6 SYN, ext headers end at 510 with one VLAN tag (514)",
        v6_chain(syn6(port).vlans(&[5]), &[h(57)]),
        Is(Reason::ExtHeaders),
    );
    t.ok(
        "v6 SYN, ext headers end at 510 with a VLAN tag and 8 bytes less",
        v6_chain(syn6(port).vlans(&[5]), &[h(56)]),
        ok,
    );
    {
        // The datagram ends inside an extension header.
        let f = v6_chain(syn6(port), &[Ext::Hbh(8), Ext::Dst(64)]);
        t.odd(
            "v6 datagram ends inside the 2nd ext header",
            cut(f, 14 + 40 + 8 + 20),
            Is(Reason::Truncated),
        );
        let f = v6_chain(syn6(port), &[Ext::Hbh(8)]);
        t.odd(
            "v6 datagram ends 4 bytes into an ext header",
            cut(f, 14 + 40 + 4),
            Is(Reason::Truncated),
        );
        let f = v6_chain(syn6(port), &[Ext::Hbh(8)]);
        t.odd(
            "v6 datagram ends right after an ext header",
            cut(f, 14 + 40 + 8),
            Is(Reason::Truncated),
        );
        // Header length field running past the datagram.
        let mut f = v6_chain(syn6(port), &[Ext::Hbh(8)]);
        f[14 + 40 + 1] = 10;
        t.odd(
            "v6 hop-by-hop length field past the datagram",
            f,
            Is(Reason::Truncated),
        );
    }
}
