//! Structural cases: the TCP header, and every TCP flag byte to the open port and to a
//! closed one.

use super::prelude::*;

/// TCP header.
pub fn header(t: &mut Table, e: &Env) {
    let port = e.tcp_port();
    let ok = e.tcp_ok();
    for doff in 0..5u8 {
        let mut f = syn4(port).build();
        let o = l4_v4(&f);
        f[o + 12] = doff << 4;
        t.odd(
            format!("v4 TCP data offset {doff}"),
            f,
            Is(Reason::BadHeader),
        );
        let mut f = syn6(port).build();
        f[14 + 40 + 12] = doff << 4;
        t.odd(
            format!("v6 TCP data offset {doff}"),
            f,
            Is(Reason::BadHeader),
        );
    }
    for doff in [6u8, 10, 15] {
        let opt = (doff as usize - 5) * 4;
        let mut f = syn4(port).payload(opt).build();
        let o = l4_v4(&f);
        f[o + 12] = doff << 4;
        t.ok(format!("v4 TCP data offset {doff}"), f, ok);
        let mut f = syn4(port).payload(opt - 1).build();
        f[o + 12] = doff << 4;
        t.odd(
            format!("v4 TCP data offset {doff}, header one byte short"),
            f,
            Is(Reason::Truncated),
        );
    }
    t.odd(
        "v4 TCP header of 19 bytes",
        cut(syn4(port).build(), 14 + 20 + 19),
        Is(Reason::Truncated),
    );
    t.odd(
        "v6 TCP header of 12 bytes",
        cut(syn6(port).build(), 14 + 40 + 12),
        Is(Reason::Truncated),
    );
    t.ok(
        "v4 SYN with 1000 payload bytes",
        syn4(port).payload(1000).build(),
        ok,
    );
    t.ok("v4 SYN to port 0", syn4(0).build(), Is(Reason::DefaultDrop));
    t.ok(
        "v6 SYN to port 65535",
        syn6(65535).build(),
        Is(Reason::DefaultDrop),
    );
}

/// Every TCP flag byte, to the open port and to a closed one, both families.
pub fn flags(t: &mut Table, e: &Env) {
    let port = e.tcp_port();
    let ok = e.tcp_ok();
    for flags in 0..=255u8 {
        let tk = |s: &str, d: &str, dport| {
            PacketSpec::tcp(s, d, 40000, dport, flags)
                .payload(4)
                .build()
        };
        t.ok(
            format!("v4 TCP flags {flags:#04x} to port {port}"),
            tk(S4, D4, port),
            e.tcp_flags(flags, ok),
        );
        t.ok(
            format!("v6 TCP flags {flags:#04x} to port {port}"),
            tk(S6, D6, port),
            e.tcp_flags(flags, ok),
        );
        t.ok(
            format!("v4 TCP flags {flags:#04x} to closed port {}", e.closed),
            tk(S4, D4, e.closed),
            e.tcp_flags(flags, Is(Reason::DefaultDrop)),
        );
    }
}
