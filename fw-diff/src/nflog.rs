//! A minimal nfnetlink_log (NFLOG) client: the observation rules in each host (`log group N`)
//! send every probe they see here, with the first bytes of the packet from its IP header on.
//!
//! The socket must be created inside the host's network namespace (NFLOG instances are per
//! namespace). Each message is delivered at once (queue threshold 1): when the host has
//! processed a frame, its log message is already in this socket's queue. The instance numbers
//! its messages; a gap, or ENOBUFS from the kernel, means messages were lost, and the run
//! fails rather than count a lost message as a drop.

use std::{
    io,
    os::fd::{AsRawFd, FromRawFd, OwnedFd},
};

const NETLINK_NETFILTER: libc::c_int = 12;
const NFNL_SUBSYS_ULOG: u16 = 4;
const NFULNL_MSG_PACKET: u16 = 0;
const NFULNL_MSG_CONFIG: u16 = 1;
const NFULA_CFG_CMD: u16 = 1;
const NFULA_CFG_MODE: u16 = 2;
const NFULA_CFG_NLBUFSIZ: u16 = 3;
const NFULA_CFG_TIMEOUT: u16 = 4;
const NFULA_CFG_QTHRESH: u16 = 5;
const NFULA_CFG_FLAGS: u16 = 6;
const NFULNL_CFG_CMD_BIND: u8 = 1;
const NFULNL_COPY_PACKET: u8 = 2;
const NFULNL_CFG_F_SEQ: u16 = 1;
const NFULA_PAYLOAD: u16 = 9;
const NFULA_PREFIX: u16 = 10;
const NFULA_SEQ: u16 = 12;
const NLMSG_ERROR: u16 = 2;
const NLMSG_HDRLEN: usize = 16;

/// Bytes of each packet copied to us: enough for the IPv4 identification / IPv6 flow label and
/// the transport ports.
pub const COPY_RANGE: u32 = 96;

/// One logged packet.
#[derive(Clone, Debug)]
pub struct LogMsg {
    /// AF_INET or AF_INET6.
    pub family: u8,
    /// The rule's `log prefix`.
    pub prefix: String,
    /// The packet from its network header on (at most [`COPY_RANGE`] bytes).
    pub payload: Vec<u8>,
}

pub struct NfLog {
    fd: OwnedFd,
    group: u16,
    buf: Vec<u8>,
    next_seq: Option<u32>,
}

fn nlmsg(
    ty: u16,
    flags: u16,
    seq: u32,
    family: u8,
    res_id: u16,
    attrs: &[(u16, Vec<u8>)],
) -> Vec<u8> {
    let mut m = vec![0u8; NLMSG_HDRLEN];
    m.extend_from_slice(&[family, 0]);
    m.extend_from_slice(&res_id.to_be_bytes());
    for (t, data) in attrs {
        let len = 4 + data.len();
        m.extend_from_slice(&(len as u16).to_ne_bytes());
        m.extend_from_slice(&t.to_ne_bytes());
        m.extend_from_slice(data);
        m.resize(m.len().div_ceil(4) * 4, 0);
    }
    let len = m.len() as u32;
    m[0..4].copy_from_slice(&len.to_ne_bytes());
    m[4..6].copy_from_slice(&ty.to_ne_bytes());
    m[6..8].copy_from_slice(&flags.to_ne_bytes());
    m[8..12].copy_from_slice(&seq.to_ne_bytes());
    m
}

fn ne16(b: &[u8]) -> u16 {
    u16::from_ne_bytes([b[0], b[1]])
}

fn ne32(b: &[u8]) -> u32 {
    u32::from_ne_bytes([b[0], b[1], b[2], b[3]])
}

impl NfLog {
    /// Bind NFLOG group `group` in the calling thread's network namespace.
    pub fn open(group: u16) -> io::Result<NfLog> {
        // SAFETY: plain socket(2).
        let raw = unsafe {
            libc::socket(
                libc::AF_NETLINK,
                libc::SOCK_RAW | libc::SOCK_CLOEXEC,
                NETLINK_NETFILTER,
            )
        };
        if raw < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: a descriptor we just opened and own.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        // SAFETY: sockaddr_nl is plain data.
        let mut sa: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
        sa.nl_family = libc::AF_NETLINK as u16;
        // SAFETY: a valid sockaddr_nl of the given length.
        let rc = unsafe {
            libc::bind(
                fd.as_raw_fd(),
                &sa as *const libc::sockaddr_nl as *const libc::sockaddr,
                size_of::<libc::sockaddr_nl>() as u32,
            )
        };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
        let size: libc::c_int = 64 << 20;
        // SAFETY: setsockopt with an int value (SO_RCVBUFFORCE: root may exceed rmem_max).
        unsafe {
            libc::setsockopt(
                fd.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_RCVBUFFORCE,
                &size as *const libc::c_int as *const libc::c_void,
                size_of::<libc::c_int>() as u32,
            );
        }
        let mut me = NfLog {
            fd,
            group,
            buf: vec![0u8; 1 << 20],
            next_seq: None,
        };
        let mut mode = COPY_RANGE.to_be_bytes().to_vec();
        mode.extend_from_slice(&[NFULNL_COPY_PACKET, 0]);
        let cfg = nlmsg(
            (NFNL_SUBSYS_ULOG << 8) | NFULNL_MSG_CONFIG,
            (libc::NLM_F_REQUEST | libc::NLM_F_ACK) as u16,
            1,
            libc::AF_UNSPEC as u8,
            group,
            &[
                (NFULA_CFG_CMD, vec![NFULNL_CFG_CMD_BIND]),
                (NFULA_CFG_MODE, mode),
                (NFULA_CFG_NLBUFSIZ, 512u32.to_be_bytes().to_vec()),
                (NFULA_CFG_TIMEOUT, 1u32.to_be_bytes().to_vec()),
                (NFULA_CFG_QTHRESH, 1u32.to_be_bytes().to_vec()),
                (NFULA_CFG_FLAGS, NFULNL_CFG_F_SEQ.to_be_bytes().to_vec()),
            ],
        );
        me.send(&cfg)?;
        me.wait_ack()?;
        Ok(me)
    }

    fn send(&self, m: &[u8]) -> io::Result<()> {
        // SAFETY: sending a buffer we own; the socket is connected to the kernel by default.
        let n = unsafe {
            libc::send(
                self.fd.as_raw_fd(),
                m.as_ptr() as *const libc::c_void,
                m.len(),
                0,
            )
        };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    fn recv(&mut self, flags: libc::c_int) -> io::Result<usize> {
        // SAFETY: receiving into a buffer we own, bounded by its length.
        let n = unsafe {
            libc::recv(
                self.fd.as_raw_fd(),
                self.buf.as_mut_ptr() as *mut libc::c_void,
                self.buf.len(),
                flags,
            )
        };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(n as usize)
    }

    fn wait_ack(&mut self) -> io::Result<()> {
        let tv = libc::timeval {
            tv_sec: 5,
            tv_usec: 0,
        };
        // SAFETY: SO_RCVTIMEO with a timeval.
        unsafe {
            libc::setsockopt(
                self.fd.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_RCVTIMEO,
                &tv as *const libc::timeval as *const libc::c_void,
                size_of::<libc::timeval>() as u32,
            );
        }
        for _ in 0..16 {
            let n = self.recv(0)?;
            let mut off = 0;
            while off + NLMSG_HDRLEN <= n {
                let len = ne32(&self.buf[off..]) as usize;
                let ty = ne16(&self.buf[off + 4..]);
                if len < NLMSG_HDRLEN || off + len > n {
                    break;
                }
                if ty == NLMSG_ERROR {
                    let err = ne32(&self.buf[off + NLMSG_HDRLEN..]) as i32;
                    if err == 0 {
                        return Ok(());
                    }
                    return Err(io::Error::from_raw_os_error(-err));
                }
                off += len.div_ceil(4) * 4;
            }
        }
        Err(io::Error::other(format!(
            "no answer to the NFLOG group {} configuration",
            self.group
        )))
    }

    /// Everything logged so far (non-blocking). Fails if the kernel dropped messages.
    pub fn drain(&mut self, out: &mut Vec<LogMsg>) -> io::Result<()> {
        loop {
            let n = match self.recv(libc::MSG_DONTWAIT) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) if e.raw_os_error() == Some(libc::ENOBUFS) => {
                    return Err(io::Error::other(
                        "NFLOG messages were lost (ENOBUFS): the socket buffer overflowed",
                    ));
                }
                Err(e) => return Err(e),
            };
            let mut off = 0;
            while off + NLMSG_HDRLEN + 4 <= n {
                let len = ne32(&self.buf[off..]) as usize;
                let ty = ne16(&self.buf[off + 4..]);
                if len < NLMSG_HDRLEN || off + len > n {
                    break;
                }
                if ty == (NFNL_SUBSYS_ULOG << 8) | NFULNL_MSG_PACKET {
                    let msg = &self.buf[off..off + len];
                    let family = msg[NLMSG_HDRLEN];
                    let mut prefix = String::new();
                    let mut payload = Vec::new();
                    let mut seq = None;
                    let mut a = NLMSG_HDRLEN + 4;
                    while a + 4 <= msg.len() {
                        let alen = usize::from(ne16(&msg[a..]));
                        let aty = ne16(&msg[a + 2..]) & 0x3fff;
                        if alen < 4 || a + alen > msg.len() {
                            break;
                        }
                        let data = &msg[a + 4..a + alen];
                        match aty {
                            NFULA_PAYLOAD => payload = data.to_vec(),
                            NFULA_PREFIX => {
                                prefix = String::from_utf8_lossy(data)
                                    .trim_end_matches('\0')
                                    .to_string()
                            }
                            NFULA_SEQ if data.len() >= 4 => {
                                seq = Some(u32::from_be_bytes([data[0], data[1], data[2], data[3]]))
                            }
                            _ => {}
                        }
                        a += alen.div_ceil(4) * 4;
                    }
                    if let Some(s) = seq {
                        if let Some(want) = self.next_seq
                            && s != want
                        {
                            return Err(io::Error::other(format!(
                                "NFLOG group {}: message {s} arrived where {want} was due: messages were lost",
                                self.group
                            )));
                        }
                        self.next_seq = Some(s.wrapping_add(1));
                    }
                    out.push(LogMsg {
                        family,
                        prefix,
                        payload,
                    });
                }
                off += len.div_ceil(4) * 4;
            }
        }
    }
}
