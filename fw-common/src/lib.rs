//! Everything the `fw` XDP program and its userspace share: the map layout, the bounded packet
//! parser and the one `decide()` both sides call, so userspace can say for any packet bytes what
//! the kernel will do with them.
#![no_std]

#[cfg(any(test, feature = "builder"))]
extern crate std;

pub mod block;
pub mod decide;
pub mod egress;
pub mod flood;
pub mod flow;
#[cfg(any(test, feature = "builder"))]
pub mod frame;
pub mod limit;
pub mod maps;
pub mod obs;
pub mod packet;
pub mod reason;
pub mod syncookie;
pub mod tcp;
#[cfg(test)]
mod tests;
pub mod track;

pub use decide::{Decision, Tables, decide, decide_parsed};
pub use flow::{FlowKey, FlowState, FlowTable};
pub use maps::{Config, Counter, PortProto};
pub use packet::{Family, Fragment, Ip, L4, PacketView, Parsed, Quoted, parse};
pub use reason::Reason;
