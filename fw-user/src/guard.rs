//! The lockout guard: refuse a policy that would cut the SSH session the command runs in (or
//! any SSH session to this host), or, with no session to check, a policy that admits SSH from
//! nowhere. Checked with the same `decide()` the kernel runs, on the packets the session sends.
//!
//! SSH ports come from everywhere sshd takes them: the ports sshd processes listen on now
//! (/proc), `sshd -T` (the effective configuration, with `Include`d files and `Match` blocks),
//! systemd's ssh.socket (socket activation), and 22.

use std::net::IpAddr;

use fw_common::{decide, frame::PacketSpec, tcp};
use fw_policy::{Compiled, Policy};

use crate::sockets;

/// An SSH session to this host: the client's address and port, ours.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Session {
    pub client: IpAddr,
    pub client_port: u16,
    pub server: IpAddr,
    pub server_port: u16,
}

/// `SSH_CONNECTION` = "client_ip client_port server_ip server_port".
pub fn parse_ssh_connection(v: &str) -> Option<Session> {
    let f: Vec<&str> = v.split_whitespace().collect();
    if f.len() != 4 {
        return None;
    }
    let unmap = |a: IpAddr| match a {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(a),
        v4 => v4,
    };
    Some(Session {
        client: unmap(f[0].parse().ok()?),
        client_port: f[1].parse().ok()?,
        server: unmap(f[2].parse().ok()?),
        server_port: f[3].parse().ok()?,
    })
}

/// TCP ports sshd takes connections on (see the module comment).
pub fn ssh_ports() -> Vec<u16> {
    let mut ports = vec![22];
    ports.extend(sshd_listening_ports());
    ports.extend(sshd_t_ports());
    ports.extend(ssh_socket_ports());
    ports.sort();
    ports.dedup();
    ports
}

/// `port N` lines of `sshd -T` (what sshd would use: Include and Match resolved).
fn sshd_t_ports() -> Vec<u16> {
    let out = ["/usr/sbin/sshd", "/usr/bin/sshd", "/sbin/sshd"]
        .iter()
        .find(|p| std::path::Path::new(p).exists())
        .and_then(|p| {
            std::process::Command::new(p)
                .arg("-T")
                .stdin(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .output()
                .ok()
        });
    let Some(out) = out else {
        return Vec::new();
    };
    parse_sshd_t(&String::from_utf8_lossy(&out.stdout))
}

pub fn parse_sshd_t(text: &str) -> Vec<u16> {
    let mut ports = Vec::new();
    for line in text.lines() {
        let mut w = line.split_whitespace();
        match w.next() {
            Some("port") => ports.extend(w.next().and_then(|p| p.parse::<u16>().ok())),
            // listenaddress 0.0.0.0:2222 / [::]:2222
            Some("listenaddress") => ports.extend(
                w.next()
                    .and_then(|a| a.rsplit_once(':'))
                    .and_then(|(_, p)| p.parse::<u16>().ok()),
            ),
            _ => {}
        }
    }
    ports
}

/// `ListenStream=` of systemd's ssh.socket and its drop-ins (socket-activated sshd).
fn ssh_socket_ports() -> Vec<u16> {
    let mut files = Vec::new();
    for dir in [
        "/lib/systemd/system",
        "/usr/lib/systemd/system",
        "/etc/systemd/system",
    ] {
        for unit in ["ssh.socket", "sshd.socket"] {
            files.push(std::path::Path::new(dir).join(unit));
            if let Ok(rd) = std::fs::read_dir(std::path::Path::new(dir).join(format!("{unit}.d"))) {
                files.extend(rd.filter_map(|e| e.ok()).map(|e| e.path()));
            }
        }
    }
    let texts: Vec<String> = files
        .iter()
        .filter_map(|f| std::fs::read_to_string(f).ok())
        .collect();
    parse_listen_stream(&texts.join("\n"))
}

/// The ports of `ListenStream=` lines (`22`, `0.0.0.0:2222`, `[::]:2222`); an empty
/// `ListenStream=` resets the list, as in systemd.
pub fn parse_listen_stream(text: &str) -> Vec<u16> {
    let mut ports = Vec::new();
    for line in text.lines() {
        let Some(v) = line.trim().strip_prefix("ListenStream=") else {
            continue;
        };
        let v = v.trim();
        if v.is_empty() {
            ports.clear();
            continue;
        }
        let port = v.rsplit_once(':').map_or(v, |(_, p)| p);
        ports.extend(port.parse::<u16>().ok());
    }
    ports
}

/// Ports that processes named sshd listen on in this network namespace (/proc/net/tcp{,6}
/// LISTEN sockets whose inode an sshd process holds).
fn sshd_listening_ports() -> Vec<u16> {
    let mut inodes = std::collections::BTreeSet::new();
    let Ok(procs) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    for p in procs.filter_map(|e| e.ok()) {
        let comm = std::fs::read_to_string(p.path().join("comm")).unwrap_or_default();
        if comm.trim() != "sshd" {
            continue;
        }
        let Ok(fds) = std::fs::read_dir(p.path().join("fd")) else {
            continue;
        };
        for fd in fds.filter_map(|e| e.ok()) {
            if let Ok(target) = std::fs::read_link(fd.path())
                && let Some(ino) = target
                    .to_str()
                    .and_then(|t| t.strip_prefix("socket:["))
                    .and_then(|t| t.strip_suffix(']'))
                    .and_then(|t| t.parse::<u64>().ok())
            {
                inodes.insert(ino);
            }
        }
    }
    if inodes.is_empty() {
        return Vec::new();
    }
    let mut ports = Vec::new();
    for file in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let text = std::fs::read_to_string(file).unwrap_or_default();
        for line in text.lines().skip(1) {
            let f: Vec<&str> = line.split_whitespace().collect();
            // local_address is f[1] (ADDR:PORT in hex), st is f[3] (0A = LISTEN), inode f[9].
            if f.len() > 9
                && f[3] == "0A"
                && f[9].parse::<u64>().is_ok_and(|i| inodes.contains(&i))
                && let Some(port) = f[1]
                    .rsplit_once(':')
                    .and_then(|(_, p)| u16::from_str_radix(p, 16).ok())
            {
                ports.push(port);
            }
        }
    }
    ports
}

/// The SSH sessions this command may be running in: `SSH_CONNECTION` (when sudo kept it) and
/// every established TCP connection to an sshd port of this network namespace.
pub fn current_sessions() -> Vec<Session> {
    let mut out = Vec::new();
    if let Some(s) = std::env::var("SSH_CONNECTION")
        .ok()
        .and_then(|v| parse_ssh_connection(&v))
    {
        out.push(s);
    }
    let ports = ssh_ports();
    for s in sockets::current_sockets() {
        if s.proto == 6 && s.st == 1 && ports.contains(&s.local_port) {
            let addr = |a: [u8; 16]| -> IpAddr {
                if s.family == 4 {
                    IpAddr::from([a[0], a[1], a[2], a[3]])
                } else {
                    IpAddr::from(a)
                }
            };
            let sess = Session {
                client: addr(s.remote),
                client_port: s.remote_port,
                server: addr(s.local),
                server_port: s.local_port,
            };
            if !out.contains(&sess) {
                out.push(sess);
            }
        }
    }
    out
}

/// How a policy change is guarded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Guard {
    /// Refuse a policy that cuts an SSH session, or admits SSH from nowhere.
    Check,
    /// `fw restore` (at boot, sessions do not exist yet): refuse only a policy that cuts a live
    /// session; a policy without SSH is what was saved, and only noted.
    Restore,
    /// `--force`: the operator has console access.
    Force,
}

impl Guard {
    /// `Err(Lockout)` if the policy would lock the admin out; `Ok(Some(note))` for what is
    /// only worth saying.
    pub fn check(self, policy: &Policy) -> Result<Option<String>, crate::Error> {
        self.check_compiled(policy, &Compiled::new(policy, 0))
    }

    /// [`Guard::check`] of `policy` as compiled into `t`, which may hold more than the policy
    /// (the `fw block` lists beside it).
    pub fn check_compiled(
        self,
        policy: &Policy,
        t: &Compiled,
    ) -> Result<Option<String>, crate::Error> {
        if self == Guard::Force {
            return Ok(None);
        }
        let sessions = current_sessions();
        match check_with(policy, t, &sessions) {
            Ok(()) => Ok(None),
            Err(why) if self == Guard::Restore && sessions.is_empty() => Ok(Some(why)),
            Err(why) => Err(crate::Error::Lockout { why }),
        }
    }
}

/// Why `policy` would lock the admin out, or `Ok` if it would not.
pub fn check(policy: &Policy, sessions: &[Session]) -> Result<(), String> {
    check_with(policy, &Compiled::new(policy, 0), sessions)
}

/// [`check`] with the policy compiled into `t` (block lists included).
pub fn check_with(policy: &Policy, t: &Compiled, sessions: &[Session]) -> Result<(), String> {
    if sessions.is_empty() {
        let ports = ssh_ports();
        let open = policy.rules.iter().any(|r| {
            r.proto == fw_policy::Proto::Tcp && ports.iter().any(|p| r.ports.contains(*p))
        });
        if !open {
            return Err(format!(
                "this policy admits SSH (tcp {}) from nowhere: if you lose the console you cannot get back in",
                ports
                    .iter()
                    .map(|p| p.to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
        return Ok(());
    }
    for s in sessions {
        let (c, v) = (s.client.to_string(), s.server.to_string());
        if s.client.is_ipv4() != s.server.is_ipv4() {
            continue;
        }
        // A new connection from the same client: can the admin log in again?
        let syn = PacketSpec::tcp(
            &c,
            &v,
            s.client_port.wrapping_add(1),
            s.server_port,
            tcp::SYN,
        )
        .build();
        // A SYN answered with a SYN cookie still gets its connection.
        if !decide(syn.as_slice(), t).admits() {
            return Err(format!(
                "this policy drops new SSH connections from {c} to port {} — the address your SSH session comes from; you would be locked out once this session ends",
                s.server_port
            ));
        }
        // The session itself: its packets are not SYNs. With connection state, fw up/apply
        // seed it; without, only the port rule can let it through.
        if !policy.options.established {
            let ack = PacketSpec::tcp(&c, &v, s.client_port, s.server_port, tcp::ACK).build();
            if !decide(ack.as_slice(), t).pass {
                return Err(format!(
                    "this policy drops the packets of your SSH session from {c}:{}",
                    s.client_port
                ));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use fw_policy::{SEED_POLICY, parse_policy};

    fn sess(client: &str) -> Session {
        parse_ssh_connection(&format!("{client} 50000 192.0.2.1 22")).unwrap()
    }

    #[test]
    fn parses_ssh_connection() {
        let s = parse_ssh_connection("::ffff:203.0.113.7 51234 ::ffff:192.0.2.1 22").unwrap();
        assert_eq!(s.client, "203.0.113.7".parse::<IpAddr>().unwrap());
        assert_eq!((s.client_port, s.server_port), (51234, 22));
        assert!(parse_ssh_connection("garbage").is_none());
    }

    #[test]
    fn seed_policy_keeps_the_session() {
        let p = parse_policy("seed", SEED_POLICY).unwrap();
        assert!(check(&p, &[sess("203.0.113.7")]).is_ok());
        assert!(check(&p, &[]).is_ok());
    }

    #[test]
    fn ssh_from_another_address_is_refused() {
        let p = parse_policy(
            "p",
            "[[allow]]\nports = [22]\nfrom = [\"198.51.100.0/24\"]\n",
        )
        .unwrap();
        let e = check(&p, &[sess("203.0.113.7")]).unwrap_err();
        assert!(e.contains("203.0.113.7"), "{e}");
        assert!(check(&p, &[sess("198.51.100.9")]).is_ok());
    }

    #[test]
    fn sshd_t_and_socket_units_name_the_ports() {
        let t = "port 2222\nport 22\nlistenaddress 0.0.0.0:2200\nlistenaddress [::]:2201\naddressfamily any\n";
        assert_eq!(parse_sshd_t(t), [2222, 22, 2200, 2201]);
        let unit = "[Socket]\nListenStream=22\nAccept=yes\n";
        assert_eq!(parse_listen_stream(unit), [22]);
        // A drop-in that replaces the port: empty ListenStream= resets.
        let with_dropin = format!("{unit}\n[Socket]\nListenStream=\nListenStream=0.0.0.0:4422\n");
        assert_eq!(parse_listen_stream(&with_dropin), [4422]);
    }

    #[test]
    fn a_block_of_the_sessions_address_is_refused_in_the_policy_and_beside_it() {
        let p = parse_policy(
            "p",
            "[[allow]]\nports = [22]\n[[block]]\nfrom = [\"203.0.113.0/24\"]\n",
        )
        .unwrap();
        let e = check(&p, &[sess("203.0.113.7")]).unwrap_err();
        assert!(e.contains("203.0.113.7"), "{e}");
        let open = parse_policy("p", "[[allow]]\nports = [22]\n").unwrap();
        let mut t = Compiled::new(&open, 0);
        t.blocks.add(0, &"203.0.113.7".parse().unwrap(), 0);
        t.blocks.finish();
        assert!(check_with(&open, &t, &[sess("203.0.113.7")]).is_err());
        assert!(check_with(&open, &t, &[sess("203.0.113.8")]).is_ok());
    }

    #[test]
    fn no_ssh_rule_is_refused_without_a_session() {
        let p = parse_policy("p", "[[allow]]\nports = [80]\n").unwrap();
        assert!(check(&p, &[]).unwrap_err().contains("from nowhere"));
    }
}
