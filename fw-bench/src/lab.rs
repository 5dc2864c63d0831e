//! The benchmark's lab: pairs of network namespaces joined by a veth, a filter on the receiving
//! end, and a generator program on the sending end. Every namespace, pin directory and loaded
//! program is owned by a guard whose Drop removes it (also on error or Ctrl-C). Traffic only
//! ever flows inside these pairs, to the addresses chosen here (RFC 2544 benchmarking ranges).

use std::{
    net::IpAddr,
    os::fd::{AsFd as _, AsRawFd as _, OwnedFd, RawFd},
    time::Duration,
};

use anyhow::{Context as _, bail};
use aya::{
    Ebpf, EbpfLoader,
    maps::{Array, MapInfo, PerCpuArray},
    programs::{LinkOrder, TcAttachType, Xdp, XdpMode, tc::TcAttachOptions},
};
use fw::loader::{egress_program, xdp_program};
use fw_common::maps::ALL_MAPS;
use fw_lab::{
    Cmd, NetNs,
    link::{End, NetDev, ifindex, set_gro, veth},
};
use fw_policy::Policy;
use fw_testrun::LoadedFw;

use super::{programs as bp, sys};

pub const RECV_V4: &str = "198.18.0.1";
pub const SEND_V4: &str = "198.18.0.2";
/// A source no rule allows (spoofed by the generator; nothing answers to it).
pub const OTHER_V4: &str = "198.18.0.3";
pub const RECV_V6: &str = "2001:2::1";
pub const SEND_V6: &str = "2001:2::2";

const SHORT: Duration = Duration::from_secs(30);
const LONG: Duration = Duration::from_secs(600);

/// Namespaces are `fw-bench-…-<pid>-<n>`, pin directories `/sys/fs/bpf/fw-bench-<pid>-<n>`.
pub const TAG: &str = "bench";

/// Remove what a killed earlier run (whose process is gone) left: its namespaces. (Its pin
/// directories go when the next [`FwInstance`] is loaded.)
pub fn sweep_stale() {
    for ns in fw_lab::netns::sweep_stale(TAG) {
        eprintln!("removed network namespace {ns}, left by an earlier run that was killed");
    }
}

/// `program args` with `input` on stdin, inside `ns` (nsenter keeps the host's /sys and bpffs).
fn nsenter(ns: &NetNs, program: &str, args: &[&str], input: &str) -> anyhow::Result<()> {
    ns.cmd(program).args(args).stdin(input).timeout(LONG).ok()?;
    Ok(())
}

/// What filters the receiving end.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Setup {
    /// Nothing: the kernel's stack drops what nobody listens for.
    None,
    /// iptables-legacy, filter table: the seed policy (conntrack, INPUT chain).
    IptSeed,
    /// iptables-legacy, raw table: a stateless version of the seed policy in PREROUTING.
    IptRaw,
    /// nftables (inet table): the seed policy.
    NftSeed,
    /// xdp-filter (xdp-tools), deny policy, the seed's ports allowed.
    XdpFilter,
    /// fw with the seed policy.
    Fw,
    /// The trivial XDP_DROP program: the fastest drop there is.
    Drop,
    /// A trivial XDP_PASS program: what any XDP program costs allowed traffic on a veth.
    Pass,
}

impl Setup {
    pub fn name(&self) -> &'static str {
        match self {
            Setup::None => "no filter",
            Setup::IptSeed => "iptables seed",
            Setup::IptRaw => "iptables raw drop",
            Setup::NftSeed => "nftables seed",
            Setup::XdpFilter => "xdp-filter",
            Setup::Fw => "fw",
            Setup::Drop => "XDP_DROP (limit)",
            Setup::Pass => "XDP_PASS (any XDP)",
        }
    }

    pub fn key(&self) -> &'static str {
        match self {
            Setup::None => "none",
            Setup::IptSeed => "iptables_seed",
            Setup::IptRaw => "iptables_raw",
            Setup::NftSeed => "nftables_seed",
            Setup::XdpFilter => "xdp_filter",
            Setup::Fw => "fw",
            Setup::Drop => "xdp_drop",
            Setup::Pass => "xdp_pass",
        }
    }
}

/// The seed policy's TCP ports, plus iperf3's (5201) so the throughput test can pass.
pub const SEED_PORTS: [u16; 10] = [22, 25, 80, 110, 143, 443, 465, 993, 995, 5201];

/// fw's seed policy plus 5201/tcp (the same extra rule every filter gets).
pub fn fw_seed_policy() -> anyhow::Result<Policy> {
    let text = format!(
        "{}\n[[allow]]\nports = [5201]\ncomment = \"iperf3 (benchmark)\"\n",
        fw_policy::SEED_POLICY
    );
    fw_policy::parse_policy("seed+5201", &text).map_err(|e| anyhow::anyhow!("{e}"))
}

fn port_list() -> String {
    SEED_PORTS.map(|p| p.to_string()).join(",")
}

/// The seed tutorial's rules, as iptables-restore input (ESTABLISHED first, as its `-I` puts
/// it); `accepts` are its `-j ACCEPT` port rules.
pub fn iptables_policy(accepts: &str) -> String {
    let mut s =
        String::from("*filter\n:INPUT DROP [0:0]\n:FORWARD ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n");
    s += "-A INPUT -m state --state ESTABLISHED,RELATED -j ACCEPT\n";
    s += "-A INPUT -p tcp --tcp-flags ALL NONE -j DROP\n";
    s += "-A INPUT -p tcp ! --syn -m state --state NEW -j DROP\n";
    s += "-A INPUT -p tcp --tcp-flags ALL ALL -j DROP\n";
    s += "-A INPUT -i lo -j ACCEPT\n";
    s += accepts;
    s += "COMMIT\n";
    s
}

/// `-A INPUT -p tcp --dport P -j ACCEPT` for each port.
pub fn iptables_port_rules(ports: impl IntoIterator<Item = u16>) -> String {
    ports
        .into_iter()
        .map(|p| format!("-A INPUT -p tcp -m tcp --dport {p} -j ACCEPT\n"))
        .collect()
}

pub fn iptables_seed() -> String {
    iptables_policy(&iptables_port_rules(SEED_PORTS))
}

fn iptables_raw() -> String {
    format!(
        "*raw\n:PREROUTING ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n\
         -A PREROUTING -p tcp --tcp-flags ALL NONE -j DROP\n\
         -A PREROUTING -p tcp --tcp-flags ALL ALL -j DROP\n\
         -A PREROUTING -p tcp --syn -m multiport ! --dports {} -j DROP\n\
         -A PREROUTING -p udp -j DROP\nCOMMIT\n",
        port_list()
    )
}

/// The seed policy's structure in nftables (one inet table); `sets` are set definitions,
/// `accepts` the accept rules (each ending in a newline).
pub fn nft_policy(sets: &str, accepts: &str) -> String {
    format!(
        "table inet fwbench {{\n{sets}\
         chain input {{\n type filter hook input priority 0; policy drop;\n\
         ct state established,related accept\n\
         tcp flags & (fin|syn|rst|psh|ack|urg) == 0x0 drop\n\
         tcp flags & (fin|syn|rst|ack) != syn ct state new drop\n\
         tcp flags & (fin|syn|rst|psh|ack|urg) == fin|syn|rst|psh|ack|urg drop\n\
         iif lo accept\n{accepts}}}\n}}\n"
    )
}

pub fn nft_seed() -> String {
    nft_policy("", &format!("tcp dport {{ {} }} accept\n", port_list()))
}

/// fw loaded on a receiver (private pins), with handles to its maps.
///
/// fw loaded for the benchmark. Its policy changes go through the product's own protocol —
/// [`PinnedMaps::write_policy`] + flip for `fw apply`, [`PinnedMaps::edit_policy`] for
/// `fw allow`/`fw deny` — so the benchmark measures what fw does to the maps (without the
/// state file and lock, which cost the command, not the packets).
pub struct FwInstance {
    pub loaded: LoadedFw,
    pub generation: u32,
    pub policy: Policy,
}

impl FwInstance {
    /// Load fw with its maps pinned under a private directory (`fw-bench-<pid>-<n>`), `policy`
    /// in generation 0. Not attached.
    pub fn load(iface: &str, policy: &Policy) -> anyhow::Result<Self> {
        Self::load_sized(iface, policy, fw_common::maps::FLOWS_OUT_MAX)
    }

    /// As [`FwInstance::load`], with flow tables of `max_flows` entries.
    pub fn load_sized(iface: &str, policy: &Policy, max_flows: u32) -> anyhow::Result<Self> {
        let mut loaded = LoadedFw::load_sized("fw-bench", iface, max_flows)?;
        loaded.write_generation(policy, 0)?;
        loaded.set_active(0)?;
        Ok(FwInstance {
            loaded,
            generation: 0,
            policy: policy.clone(),
        })
    }

    pub fn prog_fd(&mut self) -> anyhow::Result<RawFd> {
        Ok(xdp_program(&mut self.loaded.ebpf)?
            .fd()?
            .as_fd()
            .as_raw_fd())
    }

    /// What `fw apply` does to the maps: fill the inactive generation, flip.
    pub fn apply(&mut self, policy: &Policy) -> anyhow::Result<()> {
        let next = 1 - self.generation;
        self.loaded.maps.write_policy(policy, next, false)?;
        self.loaded.maps.set_active(next)?;
        self.generation = next;
        self.policy = policy.clone();
        Ok(())
    }

    /// What `fw allow` / `fw deny` do to the maps: single-element edits of the active generation.
    pub fn edit(&mut self, policy: &Policy) -> anyhow::Result<()> {
        self.loaded
            .maps
            .edit_policy(self.generation, &self.policy, policy)?;
        self.policy = policy.clone();
        Ok(())
    }

    /// (map name, memlock bytes, max entries) for every map.
    pub fn memory(&self) -> Vec<(String, u64, u32)> {
        ALL_MAPS
            .iter()
            .filter_map(|m| {
                let info = MapInfo::from_pin(self.loaded.paths.map(m)).ok()?;
                let fd = info.fd().ok()?;
                let mem = sys::fd_memlock(fd.as_fd().as_raw_fd())?;
                Some((m.to_string(), mem, info.max_entries()))
            })
            .collect()
    }
}

/// The trivial XDP_DROP program, loaded (not attached).
pub struct DropProg {
    pub ebpf: Ebpf,
}

impl DropProg {
    pub fn load() -> anyhow::Result<Self> {
        if bp::BENCH_DROP.is_empty() {
            bail!("the benchmark programs were not built (AYA_BUILD_SKIP?)");
        }
        let mut ebpf = EbpfLoader::new()
            .load(bp::BENCH_DROP)
            .context("loading bench_drop")?;
        xdp(&mut ebpf, bp::BENCH_DROP_PROG)?.load()?;
        Ok(DropProg { ebpf })
    }

    /// The loaded program, for test runs (the floor every per-packet cost is measured against).
    pub fn xdp(&self) -> anyhow::Result<&Xdp> {
        Ok(self
            .ebpf
            .program(bp::BENCH_DROP_PROG)
            .context("bench_drop")?
            .try_into()?)
    }

    pub fn prog_fd(&mut self) -> anyhow::Result<RawFd> {
        Ok(xdp(&mut self.ebpf, bp::BENCH_DROP_PROG)?
            .fd()?
            .as_fd()
            .as_raw_fd())
    }
}

pub fn xdp<'a>(ebpf: &'a mut Ebpf, name: &str) -> anyhow::Result<&'a mut Xdp> {
    Ok(ebpf
        .program_mut(name)
        .with_context(|| format!("{name} missing"))?
        .try_into()?)
}

/// The generator, loaded for one sending interface.
pub struct Generator {
    pub ebpf: Ebpf,
}

impl Generator {
    /// `templates` are cycled through (each exactly `GEN_FRAME_LEN` bytes).
    pub fn load(ifindex: u32, templates: &[Vec<u8>]) -> anyhow::Result<Self> {
        if bp::BENCH_GEN.is_empty() {
            bail!("the benchmark programs were not built (AYA_BUILD_SKIP?)");
        }
        let n = templates.len() as u32;
        assert!((1..=bp::GEN_MAX_FRAMES).contains(&n));
        let mut ebpf = EbpfLoader::new()
            .override_global(bp::GEN_IFINDEX, &ifindex, true)
            .override_global(bp::GEN_NFRAMES, &n, true)
            .load(bp::BENCH_GEN)
            .context("loading bench_gen")?;
        {
            let mut frames: Array<_, [u8; bp::GEN_FRAME_LEN]> =
                Array::try_from(ebpf.map_mut(bp::GEN_FRAMES).context("GEN_FRAMES missing")?)?;
            for (i, t) in templates.iter().enumerate() {
                let v: [u8; bp::GEN_FRAME_LEN] = t
                    .as_slice()
                    .try_into()
                    .context("a template is not GEN_FRAME_LEN bytes")?;
                frames.set(i as u32, v, 0)?;
            }
        }
        xdp(&mut ebpf, bp::BENCH_GEN_PROG)?.load()?;
        Ok(Generator { ebpf })
    }

    pub fn prog_fd(&mut self) -> anyhow::Result<RawFd> {
        Ok(xdp(&mut self.ebpf, bp::BENCH_GEN_PROG)?
            .fd()?
            .as_fd()
            .as_raw_fd())
    }

    pub fn sent(&self) -> anyhow::Result<u64> {
        let a: PerCpuArray<_, u64> =
            PerCpuArray::try_from(self.ebpf.map(bp::GEN_SENT).context("GEN_SENT missing")?)?;
        Ok(a.get(&0, 0)?.iter().sum())
    }
}

/// Two namespaces joined by a veth: the generator sends from `sender`, `setup` filters on
/// `receiver`.
pub struct Pair {
    // Drop order: programs (detach), then namespaces.
    pub fw: Option<FwInstance>,
    pub drop: Option<DropProg>,
    /// Loaded generators (by name), each for `s_if`.
    pub generators: Vec<(String, Generator)>,
    pub xdp_filter_prog: Option<OwnedFd>,
    pub xdp_filter_id: Option<u32>,
    pub rx: NetDev,
    pub setup: Setup,
    pub r_if: String,
    pub s_mac: [u8; 6],
    pub r_mac: [u8; 6],
    pub s_ifindex: u32,
    pub receiver: NetNs,
    pub sender: NetNs,
}

fn ip(s: &str) -> IpAddr {
    s.parse().expect("a lab address")
}

impl Pair {
    /// Create the namespaces and the veth (GRO on both ends, static neighbours), then the
    /// filter.
    pub fn create(k: u8, setup: Setup) -> anyhow::Result<Self> {
        let sender = NetNs::create(&format!("{TAG}-s{k}"))?;
        let receiver = NetNs::create(&format!("{TAG}-r{k}"))?;
        let s_if = format!("fbs{k}");
        let r_if = format!("fbr{k}");
        let s_mac = [0x02, 0xfb, 0, 0, k, 2];
        let r_mac = [0x02, 0xfb, 0, 0, k, 1];
        veth(
            End {
                ns: &sender,
                name: &s_if,
                mac: Some(s_mac),
            },
            End {
                ns: &receiver,
                name: &r_if,
                mac: Some(r_mac),
            },
        )?;
        for (ns, dev, v4, v6, peer4, peer6, peer_mac) in [
            (&sender, &s_if, SEND_V4, SEND_V6, RECV_V4, RECV_V6, r_mac),
            (&receiver, &r_if, RECV_V4, RECV_V6, SEND_V4, SEND_V6, s_mac),
        ] {
            ns.add_addr(dev, ip(v4), 24)?;
            ns.add_addr(dev, ip(v6), 64)?;
            ns.link_up(dev)?;
            for peer in [peer4, peer6] {
                ns.neigh_permanent(dev, ip(peer), peer_mac)?;
            }
            ns.try_enter(|| set_gro(dev, true))??;
        }
        let s_ifindex = sender.try_enter(|| ifindex(&s_if))??;
        let rx = receiver.try_enter(NetDev::open_here)??;
        let mut pair = Pair {
            fw: None,
            drop: None,
            generators: Vec::new(),
            xdp_filter_prog: None,
            xdp_filter_id: None,
            rx,
            setup: Setup::None,
            r_if,
            s_mac,
            r_mac,
            s_ifindex,
            receiver,
            sender,
        };
        pair.install(setup, None)?;
        Ok(pair)
    }

    /// Install a filter on the receiving end (nothing must be installed yet, except for the
    /// same iptables/nftables kind, whose rules are replaced).
    pub fn install(&mut self, setup: Setup, fw_policy: Option<&Policy>) -> anyhow::Result<()> {
        let r = &self.receiver;
        match setup {
            Setup::None => {}
            Setup::IptSeed => nsenter(
                r,
                "iptables-legacy-restore",
                &["-w", "10"],
                &iptables_seed(),
            )?,
            Setup::IptRaw => nsenter(r, "iptables-legacy-restore", &["-w", "10"], &iptables_raw())?,
            Setup::NftSeed => nsenter(r, "nft", &["-f", "-"], &nft_seed())?,
            Setup::XdpFilter => {
                // A private bpffs: xdp-filter's pins vanish with this mount namespace, the
                // program stays attached (netlink) until the namespace is deleted.
                let net = format!("--net={}", r.path().display());
                let mut script = format!(
                    "mount -t bpf bpf /sys/fs/bpf && nsenter {net} -- xdp-filter load -p deny -m native {}",
                    self.r_if
                );
                for p in SEED_PORTS {
                    script += &format!(" && nsenter {net} -- xdp-filter port {p}");
                }
                Cmd::new("unshare")
                    .args(["-m", "--propagation", "private", "sh", "-c", &script])
                    .timeout(SHORT)
                    .ok()?;
                let out = r.try_ip(&["-o", "link", "show", "dev", &self.r_if])?.stdout;
                let id: u32 = out
                    .split("prog/xdp id ")
                    .nth(1)
                    .and_then(|s| s.split_whitespace().next())
                    .and_then(|s| s.parse().ok())
                    .with_context(|| format!("no XDP program on {}: {out}", self.r_if))?;
                self.xdp_filter_prog = Some(sys::prog_fd_by_id(id)?);
                self.xdp_filter_id = Some(id);
            }
            Setup::Fw => {
                let policy = match fw_policy {
                    Some(p) => p.clone(),
                    None => fw_seed_policy()?,
                };
                let mut inst = FwInstance::load(&self.r_if, &policy)?;
                let iface = &self.r_if;
                r.try_enter(|| -> anyhow::Result<()> {
                    xdp_program(&mut inst.loaded.ebpf)?
                        .attach(iface, XdpMode::Driver)
                        .context("attaching fw (native)")?;
                    egress_program(&mut inst.loaded.ebpf)?
                        .attach_with_options(
                            iface,
                            TcAttachType::Egress,
                            TcAttachOptions::TcxOrder(LinkOrder::default()),
                        )
                        .context("attaching fw's egress recorder")?;
                    Ok(())
                })??;
                self.fw = Some(inst);
            }
            Setup::Drop | Setup::Pass => {
                let (obj, name) = if setup == Setup::Drop {
                    (bp::BENCH_DROP, bp::BENCH_DROP_PROG)
                } else {
                    (bp::BENCH_PASS, bp::BENCH_PASS_PROG)
                };
                if obj.is_empty() {
                    bail!("the benchmark programs were not built (AYA_BUILD_SKIP?)");
                }
                let mut ebpf = EbpfLoader::new()
                    .load(obj)
                    .context("loading a bench program")?;
                xdp(&mut ebpf, name)?.load()?;
                let iface = &self.r_if;
                r.try_enter(|| -> anyhow::Result<()> {
                    xdp(&mut ebpf, name)?
                        .attach(iface, XdpMode::Driver)
                        .context("attaching a bench program")?;
                    Ok(())
                })??;
                self.drop = Some(DropProg { ebpf });
            }
        }
        self.setup = setup;
        Ok(())
    }

    /// Replace the iptables/nftables rules of the receiver.
    pub fn iptables_restore(&self, rules: &str) -> anyhow::Result<()> {
        nsenter(
            &self.receiver,
            "iptables-legacy-restore",
            &["-w", "10"],
            rules,
        )
    }

    pub fn nft(&self, rules: &str) -> anyhow::Result<()> {
        nsenter(
            &self.receiver,
            "nft",
            &["-f", "-"],
            &format!("flush ruleset\n{rules}"),
        )
    }

    /// Load a generator for this pair's sending veth; returns its index.
    pub fn add_generator(&mut self, key: &str, templates: &[Vec<u8>]) -> anyhow::Result<usize> {
        let g = Generator::load(self.s_ifindex, templates)?;
        self.generators.push((key.to_string(), g));
        Ok(self.generators.len() - 1)
    }

    pub fn generator_index(&self, key: &str) -> Option<usize> {
        self.generators.iter().position(|(k, _)| k == key)
    }

    pub fn rx_packets(&mut self) -> anyhow::Result<u64> {
        let r = self.r_if.clone();
        Ok(self.rx.stats(&r)?.rx_packets)
    }
}
