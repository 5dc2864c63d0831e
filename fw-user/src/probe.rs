//! Kernel feature probes: what this kernel can do, found by asking it (never by version
//! strings). Each probe loads a two-instruction program and unloads it at once.

use std::{os::fd::FromRawFd as _, sync::OnceLock};

const BPF_PROG_LOAD: libc::c_long = 5;
const BPF_PROG_TYPE_XDP: u32 = 6;
/// `BPF_F_XDP_HAS_FRAGS`: the program handles multi-buffer frames (Linux ≥ 5.18).
pub const BPF_F_XDP_HAS_FRAGS: u32 = 1 << 5;

/// Whether the kernel accepts multi-buffer XDP programs (`xdp.frags`, Linux ≥ 5.18). Asked
/// once per process. `FW_XDP_FRAGS=0` answers "no" without asking: it exercises on a new
/// kernel the path fw takes on an old one.
pub fn xdp_frags() -> bool {
    static FRAGS: OnceLock<bool> = OnceLock::new();
    *FRAGS.get_or_init(|| {
        if std::env::var("FW_XDP_FRAGS").is_ok_and(|v| v == "0") {
            return false;
        }
        load_xdp_pass(BPF_F_XDP_HAS_FRAGS).is_ok()
    })
}

/// Load `r0 = XDP_PASS; exit` with `flags`; the program is closed again at once.
fn load_xdp_pass(flags: u32) -> std::io::Result<()> {
    // mov64 r0, 2 ; exit
    let insns: [u64; 2] = [
        u64::from_le_bytes([0xb7, 0, 0, 0, 2, 0, 0, 0]),
        u64::from_le_bytes([0x95, 0, 0, 0, 0, 0, 0, 0]),
    ];
    let license = c"GPL";
    // union bpf_attr, BPF_PROG_LOAD: prog_type@0 insn_cnt@4 insns@8 license@16 … prog_flags@44.
    let mut attr = [0u8; 128];
    attr[0..4].copy_from_slice(&BPF_PROG_TYPE_XDP.to_ne_bytes());
    attr[4..8].copy_from_slice(&(insns.len() as u32).to_ne_bytes());
    attr[8..16].copy_from_slice(&(insns.as_ptr() as u64).to_ne_bytes());
    attr[16..24].copy_from_slice(&(license.as_ptr() as u64).to_ne_bytes());
    attr[44..48].copy_from_slice(&flags.to_ne_bytes());
    // SAFETY: attr is a valid bpf_attr for BPF_PROG_LOAD; the pointers in it outlive the call.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_PROG_LOAD,
            attr.as_mut_ptr(),
            attr.len() as u32,
        )
    };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: the kernel just returned this fd to us; dropping it unloads the program.
    drop(unsafe { std::os::fd::OwnedFd::from_raw_fd(fd as i32) });
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_plain_xdp_program_loads_where_bpf_is_allowed() {
        // Without privileges the kernel refuses every load (EPERM): then there is nothing to
        // compare. With them, the flagless load must work, or the probe's "no" means nothing.
        match load_xdp_pass(0) {
            Ok(()) => {}
            Err(e) => assert_eq!(e.raw_os_error(), Some(libc::EPERM), "{e}"),
        }
    }
}
