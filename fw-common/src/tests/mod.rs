//! fw-common's own tests of the parser and `decide()`, on frames from the builder
//! ([`crate::frame`]) and a small in-memory [`Tables`](crate::Tables) ([`tables::MemTables`]).
//! The whole policy (compiled from TOML) and the kernel are tested elsewhere (fw-policy's
//! decide tables, the kernel tier); these pin down the rules of the two functions themselves.

mod decide;
mod parse;
mod slots;
mod tables;
