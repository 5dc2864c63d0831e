//! Tier 3, end to end: 802.1Q / 802.1ad tagged frames arriving at the server veth, which has fw
//! on it. Root only.
//!
//! Why raw frames and not a VLAN sub-interface: this kernel has no 802.1Q support
//! (CONFIG_VLAN_8021Q is off and modules cannot be loaded), so `ip link add ... type vlan`
//! fails. And even where it exists, a VLAN device on a veth hands the tag to the veth as
//! metadata (veth offloads VLAN insertion), so an XDP program on the peer would see an untagged
//! frame and the test would not exercise fw's VLAN parsing. Frames written to an AF_PACKET
//! socket carry their tags in the data, exactly as a switch port delivers them.
//!
//! Without the 802.1Q module the kernel itself still accepts priority-tagged frames (VLAN id 0,
//! also stacked 0/0) and drops other VLAN ids after XDP. So: VLAN id 0 proves end to end that an
//! allowed port answers through a tag and a disallowed one does not; non-zero ids are judged by
//! fw's counters (parsed as IP and dropped by default-drop, rather than passed as "not IP").

use std::time::Duration;

use fw_lab::{CONNECT_DROP, CONNECT_OK, Pair, Status, Tag, preflight, syn_frame, tcp_flags_of};

const Q: u16 = 0x8100;
const AD: u16 = 0x88a8;
const SYN_ACK: u8 = 0x12;

#[test]
fn vlan_tagged_frames_are_filtered_like_untagged_ones() {
    preflight(&[]);
    let pair = Pair::new("vlan");
    // No ARP during the test: the counters' windows below must see the test's frames alone.
    // The server learns the client's address from its ARP request (a STALE entry), and ~5 s
    // after its first SYN-ACK to it would probe it (delay_first_probe_time): the client's ARP
    // reply, counted as "non-ip", landed in whichever window was open then.
    let mac = |m: [u8; 6]| m.map(|b| format!("{b:02x}")).join(":");
    pair.server.ip(&[
        "neigh",
        "replace",
        &pair.v4(2).to_string(),
        "lladdr",
        &mac(pair.client_mac()),
        "dev",
        Pair::SERVER_IF,
        "nud",
        "permanent",
    ]);
    pair.client.ip(&[
        "neigh",
        "replace",
        &pair.v4(1).to_string(),
        "lladdr",
        &mac(pair.server_mac()),
        "dev",
        Pair::CLIENT_IF,
        "nud",
        "permanent",
    ]);
    let _l80 = pair.listen(false, 80);
    let _l8080 = pair.listen(false, 8080);
    let raw = pair.client.raw_link(Pair::CLIENT_IF);
    let (client, server) = (pair.v4(2), pair.v4(1));
    let mut sport = 41000u16;
    let mut send = |tags: &[Tag], dport: u16| -> u16 {
        sport += 1;
        let f = syn_frame(
            pair.server_mac(),
            pair.client_mac(),
            tags,
            client,
            server,
            sport,
            dport,
        );
        raw.send(&f);
        sport
    };
    // Whether the server answered a SYN from `sport` to `dport` with a SYN-ACK (bounded wait).
    let answered = |raw: &fw_lab::RawLink, sport: u16, dport: u16, wait: Duration| {
        raw.wait_for(wait, |f| {
            tcp_flags_of(f, server, dport, client, sport).is_some_and(|fl| fl & SYN_ACK == SYN_ACK)
        })
    };
    let delivered: [&[Tag]; 3] = [&[(Q, 0)], &[(AD, 0), (Q, 0)], &[(Q, 0), (Q, 0)]];

    // Without fw: tagged SYNs with VLAN id 0 reach the listeners on both ports.
    for tags in delivered {
        for port in [80, 8080] {
            let sp = send(tags, port);
            assert!(
                answered(&raw, sp, port, CONNECT_OK),
                "without fw, a SYN tagged {tags:x?} to {port} got no SYN-ACK: the setup is broken"
            );
        }
    }

    pair.fw_up(None);
    let total = |s: &Status| s.reason("default-drop") + s.rule(80, "tcp");
    for tags in delivered {
        let s0 = pair.status();
        let sp = send(tags, 80);
        assert!(
            answered(&raw, sp, 80, CONNECT_OK),
            "with fw, {tags:x?} to 80 (allowed) got no SYN-ACK"
        );
        let sp = send(tags, 8080);
        assert!(
            !answered(&raw, sp, 8080, CONNECT_DROP),
            "with fw, {tags:x?} to 8080 (not allowed) was answered: the tag hid the packet from fw"
        );
        let s1 = pair.status_when(CONNECT_OK, |s| total(s) >= total(&s0) + 2);
        assert!(
            s1.rule(80, "tcp") > s0.rule(80, "tcp"),
            "{tags:x?}: rule 80 did not count"
        );
        assert!(
            s1.reason("default-drop") > s0.reason("default-drop"),
            "{tags:x?}: default-drop did not count the SYN to 8080: {:#}",
            s1.0
        );
        assert_eq!(
            s1.reason("non-ip"),
            s0.reason("non-ip"),
            "{tags:x?} passed as not IP"
        );
    }

    // Other VLAN ids: the kernel here drops them after XDP whatever fw says, so fw's counters
    // are the witness: judged as IP (rule 80 / default-drop), not passed as "not IP".
    for tags in [&[(Q, 100)][..], &[(AD, 100), (Q, 200)], &[(Q, 4094)]] {
        let s0 = pair.status();
        send(tags, 80);
        send(tags, 8080);
        let s1 = pair.status_when(CONNECT_OK, |s| total(s) >= total(&s0) + 2);
        assert_eq!(
            s1.rule(80, "tcp") - s0.rule(80, "tcp"),
            1,
            "{tags:x?}: rule 80: {:#}",
            s1.0
        );
        assert_eq!(
            s1.reason("default-drop") - s0.reason("default-drop"),
            1,
            "{tags:x?}: default-drop: {:#}",
            s1.0
        );
        assert_eq!(
            s1.reason("non-ip"),
            s0.reason("non-ip"),
            "{tags:x?} passed as not IP"
        );
    }

    // Three tags: more than fw parses; dropped as such, even to an allowed port.
    let s0 = pair.status();
    let sp = send(&[(AD, 0), (Q, 0), (Q, 0)], 80);
    let s1 = pair.status_when(CONNECT_OK, |s| {
        s.reason("too-many-vlans") > s0.reason("too-many-vlans")
    });
    assert_eq!(
        s1.reason("too-many-vlans") - s0.reason("too-many-vlans"),
        1,
        "{:#}",
        s1.0
    );
    assert_eq!(s1.rule(80, "tcp"), s0.rule(80, "tcp"));
    assert!(
        !answered(&raw, sp, 80, CONNECT_DROP),
        "three tags to 80 were answered"
    );
    drop(raw);
    pair.finish();
}
