//! [`Pair`]: a server and a client namespace joined by a veth pair, the end-to-end tests' (and
//! the demo's) stage: fw goes on the server's end, traffic comes from the client.

use std::{
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
    path::{Path, PathBuf},
    thread,
    time::{Duration, Instant},
};

use serde_json::Value;

use crate::{
    NetNs, Result,
    fw::{LinkIds, Status},
    link::{End, veth},
    netns::{netns_list, next_seq},
    proc::{CMD_TIMEOUT, Output},
    sock::{CONNECT_DROP, CONNECT_OK, Connect, Listener},
};

/// Both address families, IPv4 first (`for v6 in FAMILIES`).
pub const FAMILIES: [bool; 2] = [false, true];

/// "IPv4" or "IPv6", for messages.
pub fn family(v6: bool) -> &'static str {
    if v6 { "IPv6" } else { "IPv4" }
}

/// A server and a client namespace joined by a veth pair: server `fwsrv` with 10.250.N.1/24
/// and fd00:fa:N::1/64, client `fwcli` with .2 and ::2 (N unique in this process). Links and lo
/// are up; IPv6 addresses are added with `nodad` and waited for, so they are usable at once.
/// Addresses only ever exist inside these namespaces.
pub struct Pair {
    pub server: NetNs,
    pub client: NetNs,
    pub net: u8,
}

impl Pair {
    pub const SERVER_IF: &'static str = "fwsrv";
    pub const CLIENT_IF: &'static str = "fwcli";

    /// Create the pair; panics if that fails.
    #[track_caller]
    pub fn new(tag: &str) -> Pair {
        Self::create(tag).unwrap_or_else(|e| panic!("namespace pair {tag}: {e}"))
    }

    /// Create the pair.
    pub fn create(tag: &str) -> Result<Pair> {
        let server = NetNs::create(&format!("{tag}-s"))?;
        let client = NetNs::create(&format!("{tag}-c"))?;
        let net = (next_seq() % 250 + 1) as u8;
        let p = Pair {
            server,
            client,
            net,
        };
        veth(
            End {
                ns: &p.server,
                name: Self::SERVER_IF,
                mac: Some(p.server_mac()),
            },
            End {
                ns: &p.client,
                name: Self::CLIENT_IF,
                mac: Some(p.client_mac()),
            },
        )?;
        for (ns, ifname, host) in [
            (&p.server, Self::SERVER_IF, 1),
            (&p.client, Self::CLIENT_IF, 2),
        ] {
            ns.add_addr(ifname, p.v4(host).into(), 24)?;
            ns.add_addr(ifname, p.v6(host.into()).into(), 64)?;
            ns.link_up(ifname)?;
        }
        let wait = Duration::from_secs(10);
        p.server.wait_ipv6_ready(Self::SERVER_IF, p.v6(1), wait)?;
        p.client.wait_ipv6_ready(Self::CLIENT_IF, p.v6(2), wait)?;
        Ok(p)
    }

    pub fn server_mac(&self) -> [u8; 6] {
        [0x02, 0xfa, 0, 0, self.net, 1]
    }

    pub fn client_mac(&self) -> [u8; 6] {
        [0x02, 0xfa, 0, 0, self.net, 2]
    }

    /// An address of the server's net: 10.250.N.`host`.
    pub fn v4(&self, host: u8) -> Ipv4Addr {
        Ipv4Addr::new(10, 250, self.net, host)
    }

    /// An address of the server's net: fd00:fa:N::`host`.
    pub fn v6(&self, host: u16) -> Ipv6Addr {
        Ipv6Addr::new(0xfd00, 0xfa, u16::from(self.net), 0, 0, 0, 0, host)
    }

    /// The server's address of the given family (host part 1).
    pub fn server_ip(&self, v6: bool) -> IpAddr {
        if v6 {
            IpAddr::V6(self.v6(1))
        } else {
            IpAddr::V4(self.v4(1))
        }
    }

    /// The client's address of the given family (host part 2).
    pub fn client_ip(&self, v6: bool) -> IpAddr {
        if v6 {
            IpAddr::V6(self.v6(2))
        } else {
            IpAddr::V4(self.v4(2))
        }
    }

    pub fn server_addr(&self, v6: bool, port: u16) -> SocketAddr {
        SocketAddr::new(self.server_ip(v6), port)
    }

    /// Add another address to the client's veth (IPv4 /24 or IPv6 /64 nodad).
    #[track_caller]
    pub fn add_client_address(&self, ip: IpAddr) {
        let prefix = if ip.is_ipv4() { 24 } else { 64 };
        self.client
            .add_addr(Self::CLIENT_IF, ip, prefix)
            .unwrap_or_else(|e| panic!("{e}"));
    }

    /// A listener on the server's address of the given family.
    #[track_caller]
    pub fn listen(&self, v6: bool, port: u16) -> Listener {
        self.server.listen_tcp(self.server_addr(v6, port))
    }

    /// Listeners on both families.
    #[track_caller]
    pub fn listen_both(&self, port: u16) -> [Listener; 2] {
        [self.listen(false, port), self.listen(true, port)]
    }

    /// Connect from the client to the server's `port`, expecting success (bound: CONNECT_OK).
    pub fn connect(&self, v6: bool, port: u16) -> Connect {
        self.client
            .connect_tcp(self.server_addr(v6, port), None, CONNECT_OK)
    }

    /// Connect from the client expecting a drop (bound: CONNECT_DROP).
    pub fn probe(&self, v6: bool, port: u16) -> Connect {
        self.client
            .connect_tcp(self.server_addr(v6, port), None, CONNECT_DROP)
    }

    /// Connect from the client to each port at once (drops cost [`CONNECT_DROP`] each, not in
    /// turn); how each connect ended, in the order given.
    pub fn reach(&self, v6: bool, ports: &[u16]) -> Vec<(u16, Connect)> {
        thread::scope(|s| {
            let handles: Vec<_> = ports
                .iter()
                .map(|&p| {
                    s.spawn(move || {
                        let to = self.server_addr(v6, p);
                        (p, self.client.connect_tcp(to, None, CONNECT_DROP))
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().expect("connect thread"))
                .collect()
        })
    }

    /// `fw ARGS` in the server namespace.
    #[track_caller]
    pub fn fw(&self, args: &[&str]) -> Output {
        self.server.fw(args)
    }

    /// `fw up --iface fwsrv [--policy FILE]`; panics if it fails.
    #[track_caller]
    pub fn fw_up(&self, policy: Option<&Path>) -> Output {
        let mut args = vec!["up", "--iface", Self::SERVER_IF];
        let p;
        if let Some(f) = policy {
            p = f.display().to_string();
            args.extend(["--policy", p.as_str()]);
        }
        self.fw(&args).check()
    }

    /// `fw status --json` for the server veth.
    #[track_caller]
    pub fn status(&self) -> Status {
        let out = self
            .fw(&["status", "--json", "--iface", Self::SERVER_IF])
            .check();
        Status::parse(&out.stdout).unwrap_or_else(|e| panic!("{e}"))
    }

    /// Read `fw status` until `done` holds for it or `timeout` passes, and return the last one.
    /// (Native XDP on a veth runs in the receiving side's NAPI poll, a moment after the sender's
    /// send() returned: a counter may lag a dropped packet by a little.)
    #[track_caller]
    pub fn status_when(&self, timeout: Duration, done: impl Fn(&Status) -> bool) -> Status {
        let deadline = Instant::now() + timeout;
        loop {
            let s = self.status();
            if done(&s) || Instant::now() >= deadline {
                return s;
            }
            thread::sleep(Duration::from_millis(50));
        }
    }

    /// `fw conns --json` for the server veth: one JSON object per tracked flow.
    #[track_caller]
    pub fn conns(&self) -> Vec<Value> {
        let out = self
            .fw(&["conns", "--json", "--iface", Self::SERVER_IF])
            .check();
        let v: Value = serde_json::from_str(&out.stdout)
            .unwrap_or_else(|e| panic!("fw conns --json is not JSON ({e}): {out}"));
        v.as_array()
            .cloned()
            .unwrap_or_else(|| panic!("fw conns --json is not a list: {out}"))
    }

    /// `fw conns --json` entries for one TCP/UDP flow, by the server's and the client's address.
    #[track_caller]
    pub fn conn_entries(&self, proto: &str, local: SocketAddr, remote: SocketAddr) -> Vec<Value> {
        let (l, r) = (local.to_string(), remote.to_string());
        self.conns()
            .into_iter()
            .filter(|c| {
                c["proto"] == proto && c["local"] == l.as_str() && c["remote"] == r.as_str()
            })
            .collect()
    }

    /// Poll `fw conns` (bounded by [`CONNECT_OK`]) until the flow's single entry satisfies
    /// `done`; return it (or the first entry there is, or none).
    #[track_caller]
    pub fn conn_when(
        &self,
        proto: &str,
        local: SocketAddr,
        remote: SocketAddr,
        done: impl Fn(&Value) -> bool,
    ) -> Option<Value> {
        let deadline = Instant::now() + CONNECT_OK;
        loop {
            let e = self.conn_entries(proto, local, remote);
            if let [one] = e.as_slice()
                && done(one)
            {
                return Some(one.clone());
            }
            if Instant::now() >= deadline {
                return e.into_iter().next();
            }
            thread::sleep(Duration::from_millis(50));
        }
    }

    /// Whether the policy in force on the server veth came from a file named `name`.
    #[track_caller]
    pub fn source_is(&self, name: &str) -> bool {
        self.status().source().ends_with(name)
    }

    /// The confirmation `fw apply --confirm` left pending, if any.
    pub fn pending(&self) -> Option<Value> {
        self.state_file()
            .and_then(|s| s.get("pending").cloned())
            .filter(|p| !p.is_null())
    }

    /// The state file fw keeps for the server veth (`/run/fw/v1/<inode>/fwsrv/state.json`),
    /// parsed; `None` while fw is not attached.
    pub fn state_file(&self) -> Option<Value> {
        let p = self
            .server
            .state_dir()
            .join(Self::SERVER_IF)
            .join("state.json");
        let text = std::fs::read_to_string(p).ok()?;
        serde_json::from_str(&text).ok()
    }

    /// The server veth's fw pin directory.
    pub fn iface_pins(&self) -> PathBuf {
        self.server.pins_dir().join(Self::SERVER_IF)
    }

    /// The pinned link's id and program id (`bpftool link show pinned`), if the pin exists.
    pub fn link(&self) -> Option<LinkIds> {
        let pin = self.iface_pins().join("link");
        if !pin.exists() {
            return None;
        }
        let out = self.server.run(
            "bpftool",
            &["-j", "link", "show", "pinned", &pin.display().to_string()],
            CMD_TIMEOUT,
        );
        let v: Value = serde_json::from_str(&out.stdout).ok()?;
        Some(LinkIds {
            link_id: v["id"].as_u64()?,
            prog_id: v["prog_id"].as_u64()?,
        })
    }

    /// The XDP program attached to the server veth, as `bpftool -j net` inside the namespace
    /// reports it: (program id, mode).
    #[track_caller]
    pub fn xdp_on_iface(&self) -> Option<(u64, String)> {
        let out = self
            .server
            .run("bpftool", &["-j", "net"], CMD_TIMEOUT)
            .check();
        let v: Value = serde_json::from_str(&out.stdout)
            .unwrap_or_else(|e| panic!("bpftool -j net: {e}: {out}"));
        v.as_array()?
            .iter()
            .filter_map(|e| e["xdp"].as_array())
            .flatten()
            .find(|x| x["devname"] == Self::SERVER_IF)
            .map(|x| {
                (
                    x["id"].as_u64().unwrap_or(0),
                    x["mode"].as_str().unwrap_or("").to_string(),
                )
            })
    }

    /// Wait (bounded by `timeout`) until no XDP program is attached to the server veth; returns
    /// whether that happened. Removing the last reference to a bpf_link (its pin) detaches the
    /// program from a kernel work item, a moment after `fw down` returned.
    pub fn wait_detached(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            if self.xdp_on_iface().is_none() {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// Flush the neighbour caches (ARP and NDP) of both namespaces.
    #[track_caller]
    pub fn flush_neighbours(&self) {
        for ns in [&self.server, &self.client] {
            ns.ip(&["neigh", "flush", "all"]);
            ns.ip(&["-6", "neigh", "flush", "all"]);
        }
    }

    /// Remove everything and check it is gone: the namespaces from `ip netns list`, fw's pin
    /// and state directories for them.
    #[track_caller]
    pub fn finish(self) {
        let names = [
            self.server.name().to_string(),
            self.client.name().to_string(),
        ];
        let dirs = [
            self.server.pins_dir(),
            self.server.state_dir(),
            self.client.pins_dir(),
            self.client.state_dir(),
        ];
        drop(self);
        let left = netns_list();
        for n in &names {
            assert!(!left.contains(n), "namespace {n} still exists: {left:?}");
        }
        for d in &dirs {
            assert!(!d.exists(), "{} still exists after cleanup", d.display());
        }
    }
}
