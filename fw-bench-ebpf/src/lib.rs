//! Empty library target: lets fw-bench list fw-bench-ebpf as a build dependency so cargo
//! rebuilds the embedded programs when their sources change.
#![no_std]
