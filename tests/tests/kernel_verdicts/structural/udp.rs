//! Structural cases: the UDP header.

use super::prelude::*;

/// UDP header.
pub fn header(t: &mut Table, e: &Env) {
    let uport = e.udp_port();
    let uok = e.udp_ok();
    let u4 = || PacketSpec::udp(S4, D4, 1000, uport);
    for ulen in 0..8u16 {
        let mut f = u4().payload(4).build();
        let o = l4_v4(&f);
        put16(&mut f, o + 4, ulen);
        t.odd(format!("v4 UDP length {ulen}"), f, Is(Reason::BadHeader));
    }
    {
        let mut f = u4().payload(4).build();
        let o = l4_v4(&f);
        put16(&mut f, o + 4, 13);
        t.odd(
            "v4 UDP length one past the datagram",
            f,
            Is(Reason::BadHeader),
        );
        let mut f = u4().payload(4).build();
        put16(&mut f, o + 4, 65535);
        t.odd("v4 UDP length 65535", f, Is(Reason::BadHeader));
        let mut f = u4().payload(4).build();
        put16(&mut f, o + 4, 8);
        t.odd("v4 UDP length shorter than the datagram", f, uok);
        let mut f = PacketSpec::udp(S6, D6, 1000, uport).payload(4).build();
        put16(&mut f, 14 + 40 + 4, 40);
        t.odd("v6 UDP length past the datagram", f, Is(Reason::BadHeader));
        let mut f = PacketSpec::udp(S6, D6, 1000, uport).payload(4).build();
        put16(&mut f, 14 + 40 + 4, 0);
        t.odd("v6 UDP length 0 (jumbo)", f, Is(Reason::BadHeader));
    }
    t.ok("v4 UDP, empty", u4().build(), uok);
    t.ok("v4 UDP with payload", u4().payload(100).build(), uok);
    t.ok(
        "v6 UDP with payload",
        PacketSpec::udp(S6, D6, 1000, uport).payload(100).build(),
        uok,
    );
    t.ok(
        "v4 UDP to a closed port",
        PacketSpec::udp(S4, D4, 1000, e.closed).build(),
        Is(Reason::DefaultDrop),
    );
    t.odd(
        "v4 UDP header of 7 bytes",
        cut(u4().build(), 14 + 20 + 7),
        Is(Reason::Truncated),
    );
}
