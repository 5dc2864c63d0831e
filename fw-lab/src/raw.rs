//! Packet sockets: [`RawLink`], an AF_PACKET socket bound to one interface, sends whole
//! Ethernet frames and reads every frame that passes the interface (after XDP, before IP).

use std::{
    cell::Cell,
    io,
    net::IpAddr,
    os::fd::{AsRawFd, FromRawFd, OwnedFd},
    time::{Duration, Instant},
};

use crate::{NetNs, frames::tcp_segment};

/// Linux 4.20: do not deliver the frames this host sends itself.
const PACKET_IGNORE_OUTGOING: libc::c_int = 23;

/// An AF_PACKET socket bound to one interface of the namespace it was opened in.
pub struct RawLink {
    fd: OwnedFd,
    buf: Vec<u8>,
}

fn setsockopt_int(
    fd: &OwnedFd,
    level: libc::c_int,
    name: libc::c_int,
    v: libc::c_int,
) -> io::Result<()> {
    // SAFETY: setsockopt with a pointer to an int of the size passed.
    let rc = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            level,
            name,
            &v as *const libc::c_int as *const libc::c_void,
            size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

impl RawLink {
    /// Open on `iface` of the calling thread's namespace (see [`NetNs::raw_link`]).
    pub fn open(iface: &str) -> io::Result<RawLink> {
        let c = std::ffi::CString::new(iface).map_err(io::Error::other)?;
        // SAFETY: a valid C string.
        let idx = unsafe { libc::if_nametoindex(c.as_ptr()) };
        if idx == 0 {
            return Err(io::Error::last_os_error());
        }
        let proto = (libc::ETH_P_ALL as u16).to_be();
        // SAFETY: plain socket(2).
        let raw = unsafe {
            libc::socket(
                libc::AF_PACKET,
                libc::SOCK_RAW | libc::SOCK_CLOEXEC,
                i32::from(proto),
            )
        };
        if raw < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: a descriptor we just got and own.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        // SAFETY: sockaddr_ll is plain data; zero is a valid start.
        let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        sll.sll_family = libc::AF_PACKET as u16;
        sll.sll_protocol = proto;
        sll.sll_ifindex = idx as i32;
        // SAFETY: a valid sockaddr_ll of the given length.
        let rc = unsafe {
            libc::bind(
                fd.as_raw_fd(),
                &sll as *const libc::sockaddr_ll as *const libc::sockaddr,
                size_of::<libc::sockaddr_ll>() as u32,
            )
        };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(RawLink {
            fd,
            buf: vec![0u8; 65536],
        })
    }

    /// Do not read back the frames sent through this interface (by anyone in its namespace).
    pub fn ignore_outgoing(self) -> io::Result<Self> {
        setsockopt_int(&self.fd, libc::SOL_PACKET, PACKET_IGNORE_OUTGOING, 1)?;
        Ok(self)
    }

    /// 32 MiB receive and send buffers (bursts of frames without a loss).
    pub fn big_buffers(self) -> io::Result<Self> {
        let size = 32 << 20;
        setsockopt_int(&self.fd, libc::SOL_SOCKET, libc::SO_RCVBUFFORCE, size)?;
        setsockopt_int(&self.fd, libc::SOL_SOCKET, libc::SO_SNDBUFFORCE, size)?;
        Ok(self)
    }

    /// Send one whole frame.
    pub fn try_send(&self, frame: &[u8]) -> io::Result<()> {
        // SAFETY: sending a buffer we own, of its length.
        let n = unsafe {
            libc::send(
                self.fd.as_raw_fd(),
                frame.as_ptr() as *const libc::c_void,
                frame.len(),
                0,
            )
        };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        if n as usize != frame.len() {
            return Err(io::Error::other("short send on the packet socket"));
        }
        Ok(())
    }

    /// Send one whole frame; panics if it cannot.
    #[track_caller]
    pub fn send(&self, frame: &[u8]) {
        self.try_send(frame)
            .unwrap_or_else(|e| panic!("send a {}-byte raw frame: {e}", frame.len()));
    }

    /// One frame into `buf`, waiting at most `wait` (zero: do not wait).
    fn recv_into(&self, buf: &mut [u8], wait: Duration) -> io::Result<Option<usize>> {
        if !wait.is_zero() {
            let mut pfd = libc::pollfd {
                fd: self.fd.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            };
            let ms = wait.as_millis().clamp(1, 60_000) as libc::c_int;
            // SAFETY: one valid pollfd.
            let rc = unsafe { libc::poll(&mut pfd, 1, ms) };
            if rc < 0 {
                return Err(io::Error::last_os_error());
            }
            if rc == 0 {
                return Ok(None);
            }
        }
        // SAFETY: receiving into a buffer we own, bounded by its length.
        let n = unsafe {
            libc::recv(
                self.fd.as_raw_fd(),
                buf.as_mut_ptr() as *mut libc::c_void,
                buf.len(),
                libc::MSG_DONTWAIT,
            )
        };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::WouldBlock {
                return Ok(None);
            }
            return Err(e);
        }
        Ok(Some(n as usize))
    }

    /// One frame, waiting at most `wait` (zero: do not wait).
    pub fn recv(&mut self, wait: Duration) -> io::Result<Option<&[u8]>> {
        let mut buf = std::mem::take(&mut self.buf);
        let r = self.recv_into(&mut buf, wait);
        self.buf = buf;
        Ok(r?.map(|n| &self.buf[..n]))
    }

    /// Read frames for up to `wait` (at most 100,000) until `pred` matches one.
    pub fn wait_for(&self, wait: Duration, pred: impl Fn(&[u8]) -> bool) -> bool {
        read_until(wait, |buf, left| self.recv_into(buf, left), pred)
    }
}

/// Read messages with `recv` (into a 64 KiB buffer, waiting at most the time left) for up to
/// `wait` and at most 100,000 messages, until `pred` matches one. A receive error ends it.
pub(crate) fn read_until(
    wait: Duration,
    mut recv: impl FnMut(&mut [u8], Duration) -> io::Result<Option<usize>>,
    pred: impl Fn(&[u8]) -> bool,
) -> bool {
    let deadline = Instant::now() + wait;
    let mut buf = vec![0u8; 65536];
    for _ in 0..100_000 {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return false;
        }
        match recv(&mut buf, left) {
            Ok(Some(n)) if pred(&buf[..n]) => return true,
            Ok(_) => {}
            Err(_) => return false,
        }
    }
    false
}

/// For each TCP flow `(src, sport, dport)`, the sequence number that follows its last segment
/// among the frames `raw` captures within `wait` (its SND.NXT once everything was sent).
pub fn next_seqs(raw: &RawLink, flows: &[(IpAddr, u16, u16)], wait: Duration) -> Vec<Option<u32>> {
    let last: Vec<Cell<Option<u32>>> = flows.iter().map(|_| Cell::new(None)).collect();
    raw.wait_for(wait, |f| {
        if let Some((src, sport, dport, seq, len)) = tcp_segment(f)
            && let Some(i) = flows.iter().position(|f| *f == (src, sport, dport))
        {
            last[i].set(Some(seq.wrapping_add(len)));
        }
        false
    });
    last.iter().map(Cell::get).collect()
}

impl NetNs {
    /// An AF_PACKET socket on `iface` of this namespace, for raw frames; panics if it cannot
    /// be opened.
    #[track_caller]
    pub fn raw_link(&self, iface: &str) -> RawLink {
        self.enter(|| RawLink::open(iface))
            .unwrap_or_else(|e| panic!("packet socket on {iface} in {}: {e}", self.name()))
    }
}
