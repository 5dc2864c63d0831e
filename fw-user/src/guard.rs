//! The lockout guard: refuse a policy that would cut the SSH session the command runs in (or
//! any SSH session to this host), or, with no session to check, a policy that admits SSH from
//! nowhere. Checked with the same `decide()` the kernel runs, on the packets the session sends.

use std::net::IpAddr;

use fw_common::{decide, tcp};

use crate::seed;
use fw_common::frame::PacketSpec;
use fw_policy::Compiled;
use fw_policy::Policy;

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

/// TCP ports sshd listens on: 22 and the `Port` lines of /etc/ssh/sshd_config.
pub fn ssh_ports() -> Vec<u16> {
    let mut ports = vec![22];
    if let Ok(text) = std::fs::read_to_string("/etc/ssh/sshd_config") {
        for line in text.lines() {
            let mut w = line.split_whitespace();
            if w.next().is_some_and(|k| k.eq_ignore_ascii_case("port"))
                && let Some(p) = w.next().and_then(|p| p.parse().ok())
            {
                ports.push(p);
            }
        }
    }
    ports.sort();
    ports.dedup();
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
    for s in seed::current_sockets() {
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

/// Why `policy` would lock the admin out, or `Ok` if it would not.
pub fn check(policy: &Policy, sessions: &[Session]) -> Result<(), String> {
    let t = Compiled::new(policy, 0);
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
        if !decide(syn.as_slice(), &t).pass {
            return Err(format!(
                "this policy drops new SSH connections from {c} to port {} — the address your SSH session comes from; you would be locked out once this session ends",
                s.server_port
            ));
        }
        // The session itself: its packets are not SYNs. With connection state, fw up/apply
        // seed it; without, only the port rule can let it through.
        if !policy.options.established {
            let ack = PacketSpec::tcp(&c, &v, s.client_port, s.server_port, tcp::ACK).build();
            if !decide(ack.as_slice(), &t).pass {
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
    fn no_ssh_rule_is_refused_without_a_session() {
        let p = parse_policy("p", "[[allow]]\nports = [80]\n").unwrap();
        assert!(check(&p, &[]).unwrap_err().contains("from nowhere"));
    }
}
