//! The lab of "legitimate traffic under attack" (issue 12): one fresh namespace pair per cell
//! (filter × attack), so no state an earlier flood left — conntrack entries, half-open
//! sockets, fw's embryo table — colours the next cell. On top of the bench's [`Pair`]: the
//! clients' addresses on the sender, a route that sends the server's answers to spoofed
//! sources back over the veth, the sink that drops those answers on the sender's end at XDP
//! cost, the filter's defences, and the attack generator (`bench_spoof`).

use std::net::Ipv4Addr;

use anyhow::{Context as _, bail};
use aya::{
    Ebpf, EbpfLoader,
    maps::{Array, PerCpuArray},
    programs::XdpMode,
};
use fw_common::tcp::{ACK, SYN};
use fw_lab::frames::PacketSpec;
use fw_policy::Policy;

use super::{
    frames::finish,
    lab::{self, Generator, Pair, RECV_V4, SEND_V4, Setup},
};

/// `bench_spoof`: `bench_gen` plus per-frame random sources (see fw-bench-ebpf).
static BENCH_SPOOF: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/bench_spoof"));
/// `bench_sink`: drops what the server sends to spoofed sources.
static BENCH_SINK: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/bench_sink"));
const VARY_SRC_ADDR: u32 = 1;
const VARY_SRC_PORT: u32 = 2;
const VARY_SEQ_ACK: u32 = 4;

/// The web port under attack.
pub const PORT: u16 = 80;
/// Real clients, each with its own address (198.18.0.10…): web users are many hosts, and a
/// per-source limit is sized for one of them.
pub const CLIENTS: usize = 8;
/// Spoofed sources: 198.18.0.0/15 (RFC 2544's benchmarking block, 131,072 addresses) except
/// the pair's own 198.18.0.0/24.
const SPOOF_BASE: u32 = u32::from_be_bytes([198, 18, 0, 0]);
const SPOOF_MASK: u32 = 0x1_ffff;
const LAB_NET: u32 = u32::from_be_bytes([198, 18, 0, 0]);
/// The single-source flood's address.
pub const SINGLE_SOURCE: &str = "198.18.7.7";

pub fn client_addr(i: usize) -> Ipv4Addr {
    Ipv4Addr::new(198, 18, 0, 10 + i as u8)
}

/// What filters the server.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Filter {
    None,
    IptSeed,
    /// The seed policy plus SYNPROXY on 80 and hashlimit (per source and in all) on its SYNs.
    IptDefended,
    XdpFilter,
    Fw,
    /// fw's seed policy with `syn_cookies = "always"` and `limit`/`total` on 80.
    FwDefended,
}

impl Filter {
    pub const ALL: [Filter; 6] = [
        Filter::None,
        Filter::IptSeed,
        Filter::IptDefended,
        Filter::XdpFilter,
        Filter::Fw,
        Filter::FwDefended,
    ];

    pub fn key(self) -> &'static str {
        match self {
            Filter::None => "none",
            Filter::IptSeed => "iptables_seed",
            Filter::IptDefended => "iptables_defended",
            Filter::XdpFilter => "xdp_filter",
            Filter::Fw => "fw",
            Filter::FwDefended => "fw_defended",
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Filter::None => "no filter",
            Filter::IptSeed => "iptables seed",
            Filter::IptDefended => "iptables + SYNPROXY + hashlimit",
            Filter::XdpFilter => "xdp-filter",
            Filter::Fw => "fw seed",
            Filter::FwDefended => "fw + SYN cookies + limits",
        }
    }

    /// The tool it needs, if any.
    pub fn tool(self) -> Option<&'static str> {
        match self {
            Filter::IptSeed | Filter::IptDefended => Some("iptables-legacy-restore"),
            Filter::XdpFilter => Some("xdp-filter"),
            _ => None,
        }
    }
}

/// What floods the server.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Attack {
    None,
    /// SYNs to 80 from random sources and ports.
    SynFlood,
    /// ACKs to 80 from random sources and ports, random sequence and acknowledgment numbers.
    AckFlood,
    /// SYNs to 80 from one address (random ports).
    SingleSource,
}

impl Attack {
    pub const ALL: [Attack; 4] = [
        Attack::None,
        Attack::SynFlood,
        Attack::AckFlood,
        Attack::SingleSource,
    ];

    pub fn key(self) -> &'static str {
        match self {
            Attack::None => "none",
            Attack::SynFlood => "syn_flood",
            Attack::AckFlood => "ack_flood",
            Attack::SingleSource => "single_source",
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Attack::None => "no attack",
            Attack::SynFlood => "spoofed SYN flood",
            Attack::AckFlood => "ACK flood",
            Attack::SingleSource => "single-source SYN flood",
        }
    }

    /// The template and what `bench_spoof` varies in it.
    fn template(self, dst_mac: &[u8; 6], src_mac: &[u8; 6]) -> Option<(Vec<u8>, u32)> {
        let (src, flags, vary) = match self {
            Attack::None => return None,
            Attack::SynFlood => ("198.18.1.1", SYN, VARY_SRC_ADDR | VARY_SRC_PORT),
            Attack::AckFlood => (
                "198.18.1.1",
                ACK,
                VARY_SRC_ADDR | VARY_SRC_PORT | VARY_SEQ_ACK,
            ),
            Attack::SingleSource => (SINGLE_SOURCE, SYN, VARY_SRC_PORT),
        };
        let spec = PacketSpec::tcp(src, RECV_V4, 1024, PORT, flags).seq_ack(1, 1);
        Some((finish(spec, dst_mac, src_mac), vary))
    }
}

/// Rates the defences are sized with (new connections per second).
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    pub per_source: u32,
    pub total: u32,
}

/// One cell's lab: a pair with its filter, the sink on the sender's end, the sender's client
/// addresses. Dropping it removes everything (sink first, then the pair's programs and
/// namespaces).
pub struct Cell {
    pub sink: Ebpf,
    pub pair: Pair,
    pub notes: Vec<String>,
}

impl Cell {
    pub fn create(k: u8, filter: Filter, limits: Limits) -> anyhow::Result<Cell> {
        let mut pair = Pair::create(k, Setup::None)?;
        let s_if = format!("fbs{k}");
        let r_if = pair.r_if.clone();
        for i in 0..CLIENTS {
            let a = client_addr(i).into();
            pair.sender.add_addr(&s_if, a, 24)?;
            pair.receiver.neigh_permanent(&r_if, a, pair.s_mac)?;
        }
        // Answers to spoofed sources go back over the veth (to die in the sink), as a real
        // server's go out to the internet.
        pair.receiver.try_ip(&[
            "route",
            "add",
            "198.18.0.0/15",
            "via",
            SEND_V4,
            "dev",
            &r_if,
        ])?;
        let sink = load_sink(&pair, &s_if)?;
        let notes = install(&mut pair, filter, limits)?;
        Ok(Cell { sink, pair, notes })
    }

    /// Load the attack's generator on the pair; its index, or None for no attack.
    pub fn generator(&mut self, attack: Attack) -> anyhow::Result<Option<usize>> {
        let Some((template, vary)) = attack.template(&self.pair.r_mac, &self.pair.s_mac) else {
            return Ok(None);
        };
        if BENCH_SPOOF.is_empty() {
            bail!("the benchmark programs were not built (AYA_BUILD_SKIP?)");
        }
        let n = 1u32;
        let mut ebpf = EbpfLoader::new()
            .override_global("GEN_IFINDEX", &self.pair.s_ifindex, true)
            .override_global("GEN_NFRAMES", &n, true)
            .override_global("SPOOF_VARY", &vary, true)
            .override_global("SPOOF_SRC_BASE", &SPOOF_BASE, true)
            .override_global("SPOOF_SRC_MASK", &SPOOF_MASK, true)
            .override_global("SPOOF_AVOID", &LAB_NET, true)
            .load(BENCH_SPOOF)
            .context("loading bench_spoof")?;
        {
            let mut frames: Array<_, [u8; super::programs::GEN_FRAME_LEN]> =
                Array::try_from(ebpf.map_mut("GEN_FRAMES").context("GEN_FRAMES missing")?)?;
            let v: [u8; super::programs::GEN_FRAME_LEN] = template
                .as_slice()
                .try_into()
                .context("a template is not GEN_FRAME_LEN bytes")?;
            frames.set(0, v, 0)?;
        }
        lab::xdp(&mut ebpf, super::programs::BENCH_GEN_PROG)?.load()?;
        self.pair
            .generators
            .push((attack.key().to_string(), Generator { ebpf }));
        Ok(Some(self.pair.generators.len() - 1))
    }

    /// Frames the sink dropped (the server's answers to spoofed sources).
    pub fn sink_drops(&self) -> u64 {
        self.sink
            .map("SINK_DROPS")
            .and_then(|m| PerCpuArray::<_, u64>::try_from(m).ok())
            .and_then(|a| a.get(&0, 0).ok())
            .map_or(0, |v| v.iter().sum())
    }
}

fn load_sink(pair: &Pair, s_if: &str) -> anyhow::Result<Ebpf> {
    if BENCH_SINK.is_empty() {
        bail!("the benchmark programs were not built (AYA_BUILD_SKIP?)");
    }
    let mut ebpf = EbpfLoader::new()
        .override_global("SINK_KEEP", &LAB_NET, true)
        .load(BENCH_SINK)
        .context("loading bench_sink")?;
    lab::xdp(&mut ebpf, "bench_sink")?.load()?;
    pair.sender.try_enter(|| -> anyhow::Result<()> {
        lab::xdp(&mut ebpf, "bench_sink")?
            .attach(s_if, XdpMode::Driver)
            .context("attaching the sink")?;
        Ok(())
    })??;
    Ok(ebpf)
}

/// Install `filter` and its sysctls on the receiver; notes on what was set.
fn install(pair: &mut Pair, filter: Filter, limits: Limits) -> anyhow::Result<Vec<String>> {
    let r = &pair.receiver;
    let mut notes = Vec::new();
    match filter {
        Filter::None => {}
        Filter::IptSeed => pair.install(Setup::IptSeed, None)?,
        Filter::IptDefended => {
            r.sysctl("net.netfilter.nf_conntrack_tcp_loose=0")?;
            r.sysctl("net.ipv4.tcp_syncookies=1")?;
            r.sysctl("net.ipv4.tcp_timestamps=1")?;
            pair.iptables_restore(&iptables_defended(limits))?;
            notes.push("nf_conntrack_tcp_loose=0, tcp_syncookies=1, tcp_timestamps=1".into());
        }
        Filter::XdpFilter => pair.install(Setup::XdpFilter, None)?,
        Filter::Fw => pair.install(Setup::Fw, None)?,
        Filter::FwDefended => {
            // The listener accepts fw's cookie ACKs only in cookie mode (README): 2 = always.
            r.sysctl("net.ipv4.tcp_syncookies=2")?;
            let policy = fw_defended_policy(limits)?;
            pair.install(Setup::Fw, Some(&policy))?;
            let paths = &pair.fw.as_ref().context("fw not loaded")?.loaded.paths;
            // The host facts (sysctls, MTU) are read in the receiver's namespace.
            pair.receiver
                .try_enter(|| fw::syncookie::write_cfg(paths, &policy.options))??;
            notes.push("tcp_syncookies=2".into());
        }
    }
    Ok(notes)
}

/// The seed rules with SYNPROXY on 80 (the iptables-extensions recipe) and hashlimit on its
/// SYNs: per source above `per_source`/s, all sources above `total`/s, dropped.
pub fn iptables_defended(l: Limits) -> String {
    let est = "-A INPUT -m state --state ESTABLISHED,RELATED -j ACCEPT\n";
    let seed = lab::iptables_seed();
    assert!(seed.contains(est), "the seed's ESTABLISHED rule");
    let (p, t) = (l.per_source, l.total);
    let defences = format!(
        "{est}\
         -A INPUT -p tcp -m tcp --dport {PORT} --syn -m hashlimit --hashlimit-above {p}/sec --hashlimit-burst {p} --hashlimit-mode srcip --hashlimit-name fwb_src -j DROP\n\
         -A INPUT -p tcp -m tcp --dport {PORT} --syn -m hashlimit --hashlimit-above {t}/sec --hashlimit-burst {t} --hashlimit-name fwb_all -j DROP\n\
         -A INPUT -p tcp -m tcp --dport {PORT} -m state --state INVALID,UNTRACKED -j SYNPROXY --sack-perm --timestamp --wscale 7 --mss 1460\n\
         -A INPUT -p tcp -m tcp --dport {PORT} -m state --state INVALID -j DROP\n"
    );
    format!(
        "*raw\n:PREROUTING ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n\
         -A PREROUTING -p tcp -m tcp --dport {PORT} --syn -j CT --notrack\nCOMMIT\n{}",
        seed.replacen(est, &defences, 1)
    )
}

/// fw's seed policy (plus 5201, as the bench's) with `syn_cookies = "always"` and, on the web
/// rule, `limit`/`burst` per source and `total`.
pub fn fw_defended_policy(l: Limits) -> anyhow::Result<Policy> {
    let web = "ports = [80, 443]\n";
    let seed = fw_policy::SEED_POLICY;
    if !seed.contains(web) || !seed.contains("[options]\n") {
        bail!(
            "the seed policy has no `{}` rule or no [options]",
            web.trim()
        );
    }
    let text = seed
        .replacen("[options]\n", "[options]\nsyn_cookies = \"always\"\n", 1)
        .replacen(
            web,
            &format!(
                "{web}limit = \"{p}/s\"\nburst = {p}\ntotal = \"{t}/s\"\n",
                p = l.per_source,
                t = l.total
            ),
            1,
        )
        + "\n[[allow]]\nports = [5201]\ncomment = \"iperf3 (benchmark)\"\n";
    fw_policy::parse_policy("seed+defences", &text).map_err(|e| anyhow::anyhow!("{e}"))
}
