//! `fw serve`: the daemon of a monitored host. It serves `/metrics` over HTTP (plain std, one
//! request at a time: a scrape every few seconds needs nothing more) and forwards the drop log
//! of every filter whose policy says `log = "drops"` to syslog/journald — the ring buffer needs
//! one reader, and a daemon that is running anyway for the metrics is the natural one.
//!
//! Both loops end on SIGINT/SIGTERM ([`stop_flag`]).

use std::{
    collections::BTreeMap,
    io::{Read as _, Write as _},
    net::{TcpListener, TcpStream},
    sync::atomic::{AtomicBool, Ordering},
    time::{Duration, Instant},
};

use crate::{
    Error, droplog,
    obs::{Ring, RingBusy, RingReader},
    paths::{IfaceName, IfacePaths},
    syslog::{LOG_INFO, Syslog, TAG_DROPS},
};

static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    STOP.store(true, Ordering::SeqCst);
}

/// Set by SIGINT/SIGTERM once [`install_stop_handler`] ran.
pub fn stop_flag() -> &'static AtomicBool {
    &STOP
}

pub fn install_stop_handler() {
    for sig in [libc::SIGINT, libc::SIGTERM] {
        // SAFETY: the handler only stores to an atomic (async-signal-safe).
        unsafe {
            libc::signal(sig, on_signal as *const () as libc::sighandler_t);
        }
    }
}

pub fn stopped() -> bool {
    STOP.load(Ordering::SeqCst)
}

/// Answer one HTTP request: `GET /metrics` → the exposition; `/` → a pointer; else 404.
fn handle(mut s: TcpStream, ifaces: &[IfaceName]) {
    let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
    let _ = s.set_write_timeout(Some(Duration::from_secs(5)));
    let mut buf = [0u8; 4096];
    let mut n = 0;
    // Read until the end of the request head (or the buffer is full).
    while n < buf.len() {
        match s.read(&mut buf[n..]) {
            Ok(0) | Err(_) => break,
            Ok(k) => n += k,
        }
        if buf[..n].windows(4).any(|w| w == b"\r\n\r\n") {
            break;
        }
    }
    let head = String::from_utf8_lossy(&buf[..n]);
    let mut parts = head.split_whitespace();
    let (method, path) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let path = path.split('?').next().unwrap_or("");
    let (status, ctype, body) = match (method, path) {
        ("GET" | "HEAD", "/metrics") => match crate::metrics::exposition(ifaces) {
            Ok(text) => ("200 OK", "text/plain; version=0.0.4; charset=utf-8", text),
            Err(e) => (
                "500 Internal Server Error",
                "text/plain; charset=utf-8",
                format!("fw: {e}\n"),
            ),
        },
        ("GET" | "HEAD", "/") => (
            "200 OK",
            "text/plain; charset=utf-8",
            "fw metrics: /metrics\n".to_string(),
        ),
        ("GET" | "HEAD", _) => (
            "404 Not Found",
            "text/plain; charset=utf-8",
            "not found\n".into(),
        ),
        _ => (
            "405 Method Not Allowed",
            "text/plain; charset=utf-8",
            "GET only\n".into(),
        ),
    };
    let mut resp = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    if method != "HEAD" {
        resp.push_str(&body);
    }
    let _ = s.write_all(resp.as_bytes());
}

/// Serve `/metrics` on `listener` until stopped.
pub fn serve_metrics(listener: TcpListener, ifaces: &[IfaceName]) -> Result<(), Error> {
    listener
        .set_nonblocking(true)
        .map_err(|e| Error::io("metrics listener", e))?;
    while !stopped() {
        match listener.accept() {
            Ok((s, _)) => {
                let _ = s.set_nonblocking(false);
                handle(s, ifaces);
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                std::thread::sleep(Duration::from_millis(50));
            }
            Err(e) => {
                log::warn!("metrics: accept: {e}");
                std::thread::sleep(Duration::from_millis(200));
            }
        }
    }
    Ok(())
}

struct Follower {
    reader: RingReader,
    iface: String,
}

/// Forward the drop log of every filter whose policy logs drops to syslog, until stopped.
/// Interfaces are looked at again every few seconds (filters come and go, policies change).
pub fn forward_logs(ifaces: &[IfaceName]) {
    let syslog = Syslog::open();
    if !syslog.is_connected() {
        log::warn!("no syslog socket (/dev/log): the drop log is not forwarded");
    }
    let mut followers: BTreeMap<String, Follower> = BTreeMap::new();
    let mut warned: BTreeMap<String, ()> = BTreeMap::new();
    let mut rescan = Instant::now() - Duration::from_secs(60);
    while !stopped() {
        if rescan.elapsed() > Duration::from_secs(3) {
            rescan = Instant::now();
            rescan_followers(ifaces, &mut followers, &mut warned);
        }
        if followers.is_empty() {
            std::thread::sleep(Duration::from_millis(200));
            continue;
        }
        let offset = droplog::boot_to_unix_ns();
        for f in followers.values_mut() {
            while let Some(item) = f.reader.ring.next() {
                if let Some((h, data)) = droplog::split(&item) {
                    let e = droplog::decode(&h, data, &f.iface, offset);
                    syslog.send(LOG_INFO, TAG_DROPS, &droplog::syslog_line(&e));
                }
            }
        }
        // Poll the first ring; the others are drained on the same beat.
        if let Some(f) = followers.values().next() {
            f.reader.wait(250);
        }
    }
}

fn rescan_followers(
    given: &[IfaceName],
    followers: &mut BTreeMap<String, Follower>,
    warned: &mut BTreeMap<String, ()>,
) {
    let ifaces = if given.is_empty() {
        crate::paths::attached_ifaces().unwrap_or_default()
    } else {
        given.to_vec()
    };
    let mut wanted = Vec::new();
    for iface in &ifaces {
        let Ok(paths) = IfacePaths::new(iface) else {
            continue;
        };
        let logs = crate::state::State::load(&paths)
            .is_ok_and(|s| s.current().policy.options.log == fw_policy::LogMode::Drops);
        if !logs {
            continue;
        }
        wanted.push(iface.to_string());
        if followers.contains_key(iface.as_str()) {
            continue;
        }
        match RingReader::open(&paths, Ring::Log) {
            Ok(reader) => {
                log::info!("{iface}: forwarding the drop log to syslog");
                warned.remove(iface.as_str());
                followers.insert(
                    iface.to_string(),
                    Follower {
                        reader,
                        iface: iface.to_string(),
                    },
                );
            }
            Err(RingBusy::Held(pid)) => {
                if warned.insert(iface.to_string(), ()).is_none() {
                    log::warn!(
                        "{iface}: another process (pid {}) reads the drop log; not forwarding it",
                        pid.map_or("?".into(), |p| p.to_string())
                    );
                }
            }
            Err(RingBusy::Error(e)) => {
                if warned.insert(iface.to_string(), ()).is_none() {
                    log::warn!("{iface}: drop log: {e}");
                }
            }
        }
    }
    followers.retain(|k, _| wanted.contains(k));
}
