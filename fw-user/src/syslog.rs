//! Messages to syslog/journald without a logging stack: one datagram per message to the local
//! syslog socket (`/dev/log`, where journald and rsyslog both listen), in the classic
//! `<PRI>TAG[PID]: MSG` form both parse. If nobody listens the message is dropped: logging must
//! never make a firewall command fail or wait.
//!
//! `FW_SYSLOG_SOCKET` names another socket (tests); `FW_SYSLOG=off` turns it off.

use std::{os::unix::net::UnixDatagram, path::PathBuf};

pub const LOG_DAEMON: u8 = 3 << 3;
pub const LOG_WARNING: u8 = 4;
pub const LOG_NOTICE: u8 = 5;
pub const LOG_INFO: u8 = 6;

/// Tag of operations (up, apply, rollback, …) and of the drop log.
pub const TAG_OPS: &str = "fw";
pub const TAG_DROPS: &str = "fw-drop";

fn socket_path() -> Option<PathBuf> {
    if std::env::var("FW_SYSLOG").is_ok_and(|v| v.eq_ignore_ascii_case("off") || v == "0") {
        return None;
    }
    Some(
        std::env::var_os("FW_SYSLOG_SOCKET")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from("/dev/log")),
    )
}

/// The datagram for one message: control characters become spaces (one message, one line).
pub fn format(severity: u8, tag: &str, msg: &str) -> String {
    let clean: String = msg
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    format!(
        "<{}>{tag}[{}]: {clean}",
        LOG_DAEMON | severity,
        std::process::id()
    )
}

/// A connected syslog socket, for a daemon that sends many messages.
pub struct Syslog {
    sock: Option<UnixDatagram>,
}

impl Syslog {
    pub fn open() -> Self {
        let sock = socket_path().and_then(|p| {
            let s = UnixDatagram::unbound().ok()?;
            s.connect(p).ok()?;
            s.set_nonblocking(true).ok()?;
            Some(s)
        });
        Syslog { sock }
    }

    pub fn is_connected(&self) -> bool {
        self.sock.is_some()
    }

    /// Send one message; a full or missing socket loses it (never blocks).
    pub fn send(&self, severity: u8, tag: &str, msg: &str) -> bool {
        match &self.sock {
            Some(s) => s.send(format(severity, tag, msg).as_bytes()).is_ok(),
            None => false,
        }
    }
}

/// An operation on a filter (`iface: what`), at notice level.
pub fn operation(iface: &str, what: &str) {
    let sev = if what.starts_with("rollback") || what.starts_with("recovered") {
        LOG_WARNING
    } else {
        LOG_NOTICE
    };
    Syslog::open().send(sev, TAG_OPS, &format!("{iface}: {what}"));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_have_priority_tag_and_one_line() {
        let m = format(LOG_NOTICE, "fw", "eth0: apply: a\nb");
        assert!(
            m.starts_with(&format!("<29>fw[{}]: ", std::process::id())),
            "{m}"
        );
        assert!(m.ends_with("eth0: apply: a b"), "{m}");
    }

    #[test]
    fn a_message_reaches_the_socket() {
        let dir = std::env::temp_dir().join(format!("fw-syslog-test-{}", std::process::id()));
        let _ = std::fs::create_dir_all(&dir);
        let path = dir.join("log");
        let _ = std::fs::remove_file(&path);
        let server = UnixDatagram::bind(&path).unwrap();
        let client = UnixDatagram::unbound().unwrap();
        client.connect(&path).unwrap();
        let s = Syslog { sock: Some(client) };
        assert!(s.send(LOG_INFO, TAG_DROPS, "DROP reason=tcp-null"));
        let mut buf = [0u8; 256];
        let n = server.recv(&mut buf).unwrap();
        let got = std::str::from_utf8(&buf[..n]).unwrap();
        assert!(got.starts_with("<30>fw-drop["), "{got}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
