//! The structural cases: packets whose verdict follows from the policy's options and one open
//! port, whatever else the policy allows — one file per topic, run in this order.

mod dhcp;
mod fragments;
mod icmp;
mod ipv4;
mod ipv6;
mod link;
mod tcp;
mod udp;
mod vlan;

/// What every topic file uses.
mod prelude {
    pub use fw_common::{Reason, packet as pkt, tcp};
    pub use fw_lab::frames::{
        Ext, FragSpec, L4Spec, PacketSpec, arp_frame, cut, icmp_error, l4_v4, padded, put16, tpids,
        v6_chain, v6_chain_frame, with_ethertype,
    };
    pub use fw_testrun::Expect::Is;

    pub use crate::{
        env::Env,
        table::{D4, D6, S4, S6, Table, syn4, syn6},
    };
}

use crate::{env::Env, table::Table};

/// Cases whose verdict follows from the policy's options and one open port: link layer,
/// malformed headers, extension headers, fragments, TCP flags, ICMP, DHCP.
pub fn structural(e: &Env) -> Table {
    let mut t = Table::default();
    link::cases(&mut t, e);
    vlan::cases(&mut t, e);
    ipv4::header(&mut t, e);
    ipv6::header(&mut t, e);
    ipv6::extension_headers(&mut t, e);
    fragments::v4(&mut t, e);
    fragments::v6(&mut t, e);
    tcp::header(&mut t, e);
    udp::header(&mut t, e);
    icmp::messages(&mut t, e);
    icmp::errors(&mut t, e);
    dhcp::replies(&mut t, e);
    tcp::flags(&mut t, e);
    t
}
