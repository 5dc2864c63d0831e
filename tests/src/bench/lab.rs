//! The benchmark's lab: pairs of network namespaces joined by a veth, a filter on the receiving
//! end, and a generator program on the sending end. Every namespace, pin directory and loaded
//! program is owned by a guard whose Drop removes it (also on error or Ctrl-C). Traffic only
//! ever flows inside these pairs, to the addresses chosen here (RFC 2544 benchmarking ranges).

use std::{
    fs,
    os::fd::{AsFd as _, AsRawFd as _, OwnedFd, RawFd},
    path::{Path, PathBuf},
    time::Duration,
};

use anyhow::{Context as _, bail};
use aya::{
    Ebpf, EbpfLoader,
    maps::{Array, MapInfo, PerCpuArray},
    programs::{LinkOrder, TcAttachType, Xdp, XdpMode, tc::TcAttachOptions},
};
use fw::{
    bench_programs as bp,
    loader::{egress_program, load_object, xdp_program},
    maps::PinnedMaps,
    paths::{BPFFS, IfacePaths},
};
use fw_common::maps::{ALL_MAPS, rule_slot};
use fw_policy::Compiled;
use fw_policy::Policy;

use super::sys::{self, NetDev, in_netns, run, run_stdin};

pub const RECV_V4: &str = "198.18.0.1";
pub const SEND_V4: &str = "198.18.0.2";
/// A source no rule allows (spoofed by the generator; nothing answers to it).
pub const OTHER_V4: &str = "198.18.0.3";
pub const RECV_V6: &str = "2001:2::1";
pub const SEND_V6: &str = "2001:2::2";

const SHORT: Duration = Duration::from_secs(30);
const LONG: Duration = Duration::from_secs(600);

/// Everything this process creates is named `fwb<pid>…`.
pub fn prefix() -> String {
    format!("fwb{}", std::process::id())
}

fn pins_root() -> PathBuf {
    Path::new(BPFFS).join(format!("fw-bench-{}", std::process::id()))
}

fn state_root() -> PathBuf {
    PathBuf::from(format!("/run/fw-bench-{}", std::process::id()))
}

/// Remove what a killed earlier run (whose process is gone) left: its namespaces and pins.
pub fn sweep_stale() {
    let alive = |pid: &str| Path::new(&format!("/proc/{pid}")).exists();
    for (root, pre) in [(BPFFS, "fw-bench-"), ("/run", "fw-bench-")] {
        let Ok(rd) = fs::read_dir(root) else { continue };
        for e in rd.flatten() {
            let name = e.file_name().to_string_lossy().to_string();
            if let Some(pid) = name.strip_prefix(pre)
                && !alive(pid)
            {
                let _ = fs::remove_dir_all(e.path());
            }
        }
    }
    if let Ok(rd) = fs::read_dir("/var/run/netns") {
        for e in rd.flatten() {
            let name = e.file_name().to_string_lossy().to_string();
            let Some(rest) = name.strip_prefix("fwb") else {
                continue;
            };
            let pid: String = rest.chars().take_while(|c| c.is_ascii_digit()).collect();
            if !pid.is_empty() && !alive(&pid) {
                let _ = sys::run_cleanup("ip", &["netns", "del", &name], SHORT);
            }
        }
    }
}

/// Removes this run's pin and state directories.
pub struct DirGuard;

impl Drop for DirGuard {
    fn drop(&mut self) {
        for d in [pins_root(), state_root()] {
            if d.exists()
                && let Err(e) = fs::remove_dir_all(&d)
            {
                eprintln!("warning: could not remove {}: {e}", d.display());
            }
        }
    }
}

/// A named network namespace, deleted on drop.
pub struct Netns {
    pub name: String,
}

impl Netns {
    pub fn create(name: &str) -> anyhow::Result<Self> {
        run("ip", &["netns", "add", name], SHORT)?;
        let ns = Netns {
            name: name.to_string(),
        };
        ns.ip(&["link", "set", "lo", "up"])?;
        Ok(ns)
    }

    pub fn path(&self) -> PathBuf {
        Path::new("/var/run/netns").join(&self.name)
    }

    pub fn ip(&self, args: &[&str]) -> anyhow::Result<sys::Output> {
        let mut a = vec!["-n", &self.name];
        a.extend_from_slice(args);
        run("ip", &a, SHORT)
    }

    /// `nsenter --net=NS program args` (keeps the host's /sys and bpffs).
    pub fn nsenter(&self, program: &str, args: &[&str], stdin: Option<&str>) -> anyhow::Result<()> {
        let net = format!("--net={}", self.path().display());
        let mut a = vec![net.as_str(), "--", program];
        a.extend_from_slice(args);
        run_stdin("nsenter", &a, stdin, LONG).map(|_| ())
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        if let Err(e) = sys::run_cleanup("ip", &["netns", "del", &self.name], SHORT) {
            eprintln!("warning: could not delete namespace {}: {e}", self.name);
        }
    }
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
pub struct FwInstance {
    // Field order is drop order: program and links first, then the maps, then the pins.
    pub ebpf: Ebpf,
    pub maps: PinnedMaps,
    pub paths: IfacePaths,
    pub generation: u32,
    pub policy: Policy,
}

impl FwInstance {
    /// Load fw with its maps pinned under this run's private directory, `policy` in
    /// generation 0. Not attached.
    pub fn load(tag: &str, iface: &str, policy: &Policy) -> anyhow::Result<Self> {
        Self::load_sized(tag, iface, policy, fw_common::maps::FLOWS_OUT_MAX)
    }

    /// As [`FwInstance::load`], with flow tables of `max_flows` entries.
    pub fn load_sized(
        tag: &str,
        iface: &str,
        policy: &Policy,
        max_flows: u32,
    ) -> anyhow::Result<Self> {
        // fw's own directory checks create one level only (IfacePaths::at): make the run's roots.
        for d in [pins_root(), state_root()] {
            fs::create_dir_all(&d).with_context(|| d.display().to_string())?;
        }
        let paths = IfacePaths::at(iface, pins_root().join(tag), state_root().join(tag));
        let ebpf = load_object(&paths, false, max_flows).context("loading fw")?;
        let mut maps = PinnedMaps::open(&paths)?;
        write_policy(&mut maps, policy, 0)?;
        maps.set_active(0)?;
        Ok(FwInstance {
            ebpf,
            maps,
            paths,
            generation: 0,
            policy: policy.clone(),
        })
    }

    pub fn prog_fd(&mut self) -> anyhow::Result<RawFd> {
        Ok(xdp_program(&mut self.ebpf)?.fd()?.as_fd().as_raw_fd())
    }

    /// What `fw apply` does to the maps: fill the inactive generation, flip.
    pub fn apply(&mut self, policy: &Policy) -> anyhow::Result<()> {
        let next = 1 - self.generation;
        write_policy(&mut self.maps, policy, next)?;
        self.maps.set_active(next)?;
        self.generation = next;
        self.policy = policy.clone();
        Ok(())
    }

    /// What `fw allow` / `fw deny` do to the maps: single-element edits of the active generation.
    pub fn edit(&mut self, policy: &Policy) -> anyhow::Result<()> {
        let g = self.generation;
        let old = Compiled::new(&self.policy, g);
        let new = Compiled::new(policy, g);
        let old_ids: Vec<u32> = self.policy.rules.iter().map(|r| r.id).collect();
        let slots: Vec<u32> = policy
            .rules
            .iter()
            .filter(|r| !old_ids.contains(&r.id))
            .map(|r| rule_slot(g, r.id))
            .collect();
        self.maps.apply_diff(&old, &new, &slots)?;
        self.policy = policy.clone();
        Ok(())
    }

    /// (map name, memlock bytes, max entries) for every map.
    pub fn memory(&self) -> Vec<(String, u64, u32)> {
        ALL_MAPS
            .iter()
            .filter_map(|m| {
                let info = MapInfo::from_pin(self.paths.map(m)).ok()?;
                let fd = info.fd().ok()?;
                let mem = sys::fd_memlock(fd.as_fd().as_raw_fd())?;
                Some((m.to_string(), mem, info.max_entries()))
            })
            .collect()
    }
}

pub fn write_policy(maps: &mut PinnedMaps, policy: &Policy, generation: u32) -> anyhow::Result<()> {
    let c = Compiled::new(policy, generation);
    let slots: Vec<u32> = policy
        .rules
        .iter()
        .map(|r| rule_slot(generation, r.id))
        .collect();
    maps.write_generation(&c, &slots)?;
    Ok(())
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
    pub receiver: Netns,
    pub sender: Netns,
}

fn mac_str(m: &[u8; 6]) -> String {
    m.map(|b| format!("{b:02x}")).join(":")
}

impl Pair {
    /// Create the namespaces and the veth (GRO on both ends, static neighbours), then the
    /// filter.
    pub fn create(k: u8, setup: Setup) -> anyhow::Result<Self> {
        let p = prefix();
        let sender = Netns::create(&format!("{p}s{k}"))?;
        let receiver = Netns::create(&format!("{p}r{k}"))?;
        let s_if = format!("fbs{k}");
        let r_if = format!("fbr{k}");
        let s_mac = [0x02, 0xfb, 0, 0, k, 2];
        let r_mac = [0x02, 0xfb, 0, 0, k, 1];
        run(
            "ip",
            &[
                "link",
                "add",
                &s_if,
                "address",
                &mac_str(&s_mac),
                "netns",
                &sender.name,
                "type",
                "veth",
                "peer",
                "name",
                &r_if,
                "address",
                &mac_str(&r_mac),
                "netns",
                &receiver.name,
            ],
            SHORT,
        )?;
        for (ns, dev, v4, v6, peer4, peer6, peer_mac) in [
            (&sender, &s_if, SEND_V4, SEND_V6, RECV_V4, RECV_V6, &r_mac),
            (&receiver, &r_if, RECV_V4, RECV_V6, SEND_V4, SEND_V6, &s_mac),
        ] {
            ns.ip(&["addr", "add", &format!("{v4}/24"), "dev", dev])?;
            ns.ip(&["addr", "add", &format!("{v6}/64"), "dev", dev, "nodad"])?;
            ns.ip(&["link", "set", dev, "up"])?;
            let m = mac_str(peer_mac);
            for peer in [peer4, peer6] {
                ns.ip(&[
                    "neigh",
                    "replace",
                    peer,
                    "lladdr",
                    &m,
                    "dev",
                    dev,
                    "nud",
                    "permanent",
                ])?;
            }
            let d = dev.clone();
            in_netns(&ns.path(), move || sys::set_gro(&d, true))?;
        }
        let s = s_if.clone();
        let s_ifindex = in_netns(&sender.path(), move || sys::ifindex(&s))?;
        let rx = in_netns(&receiver.path(), NetDev::open_here)?;
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
            Setup::IptSeed => r.nsenter(
                "iptables-legacy-restore",
                &["-w", "10"],
                Some(&iptables_seed()),
            )?,
            Setup::IptRaw => r.nsenter(
                "iptables-legacy-restore",
                &["-w", "10"],
                Some(&iptables_raw()),
            )?,
            Setup::NftSeed => r.nsenter("nft", &["-f", "-"], Some(&nft_seed()))?,
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
                run(
                    "unshare",
                    &["-m", "--propagation", "private", "sh", "-c", &script],
                    SHORT,
                )?;
                let out = r.ip(&["-o", "link", "show", "dev", &self.r_if])?.stdout;
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
                let tag = self.receiver.name.clone();
                let inst = FwInstance::load(&tag, &self.r_if, &policy)?;
                let iface = self.r_if.clone();
                let inst = in_netns(&r.path(), move || {
                    let mut inst = inst;
                    xdp_program(&mut inst.ebpf)?
                        .attach(&iface, XdpMode::Driver)
                        .context("attaching fw (native)")?;
                    egress_program(&mut inst.ebpf)?
                        .attach_with_options(
                            &iface,
                            TcAttachType::Egress,
                            TcAttachOptions::TcxOrder(LinkOrder::default()),
                        )
                        .context("attaching fw's egress recorder")?;
                    Ok(inst)
                })?;
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
                let iface = self.r_if.clone();
                let ebpf = in_netns(&r.path(), move || {
                    let mut ebpf = ebpf;
                    xdp(&mut ebpf, name)?
                        .attach(&iface, XdpMode::Driver)
                        .context("attaching a bench program")?;
                    Ok(ebpf)
                })?;
                self.drop = Some(DropProg { ebpf });
            }
        }
        self.setup = setup;
        Ok(())
    }

    /// Replace the iptables/nftables rules of the receiver.
    pub fn iptables_restore(&self, rules: &str) -> anyhow::Result<()> {
        self.receiver
            .nsenter("iptables-legacy-restore", &["-w", "10"], Some(rules))
    }

    pub fn nft(&self, rules: &str) -> anyhow::Result<()> {
        self.receiver.nsenter(
            "nft",
            &["-f", "-"],
            Some(&format!("flush ruleset\n{rules}")),
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
