//! Structural cases: 802.1Q and 802.1ad tags, one to three.

use super::prelude::*;

/// VLAN tags: up to two (802.1Q or 802.1ad outer) are looked through, a third is refused.
pub fn cases(t: &mut Table, e: &Env) {
    let port = e.tcp_port();
    let ok = e.tcp_ok();
    for (v6, name) in [(false, "v4"), (true, "v6")] {
        let s = |tags: &[u16]| if v6 { syn6(port) } else { syn4(port) }.vlans(tags);
        t.ok(format!("{name} SYN, no VLAN tag"), s(&[]).build(), ok);
        t.ok(format!("{name} SYN, one 802.1Q tag"), s(&[7]).build(), ok);
        t.ok(
            format!("{name} SYN, one 802.1ad tag"),
            tpids(s(&[7]).build(), &[pkt::ETH_P_8021AD]),
            ok,
        );
        t.ok(
            format!("{name} SYN, 802.1Q in 802.1Q"),
            s(&[7, 8]).build(),
            ok,
        );
        t.ok(
            format!("{name} SYN, 802.1Q in 802.1ad (QinQ)"),
            tpids(s(&[7, 8]).build(), &[pkt::ETH_P_8021AD]),
            ok,
        );
        t.ok(
            format!("{name} SYN, 802.1ad in 802.1ad"),
            tpids(s(&[7, 8]).build(), &[pkt::ETH_P_8021AD, pkt::ETH_P_8021AD]),
            ok,
        );
        t.odd(
            format!("{name} SYN, three 802.1Q tags"),
            s(&[7, 8, 9]).build(),
            Is(Reason::TooManyVlans),
        );
        t.odd(
            format!("{name} SYN, three tags 802.1ad/802.1Q/802.1Q"),
            tpids(s(&[7, 8, 9]).build(), &[pkt::ETH_P_8021AD]),
            Is(Reason::TooManyVlans),
        );
        t.odd(
            format!("{name} SYN, three 802.1ad tags"),
            tpids(s(&[7, 8, 9]).build(), &[pkt::ETH_P_8021AD; 3]),
            Is(Reason::TooManyVlans),
        );
        t.odd(
            format!("{name} SYN to a closed port, two tags"),
            if v6 { syn6(e.closed) } else { syn4(e.closed) }
                .vlans(&[1, 2])
                .build(),
            Is(Reason::DefaultDrop),
        );
    }
}
