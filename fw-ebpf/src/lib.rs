//! Empty library target: lets fw-user list fw-ebpf as a build dependency so cargo rebuilds the
//! embedded program when its sources change.
#![no_std]
