//! The lab of "legitimate traffic under attack" (issue 12): one fresh namespace pair per cell
//! (filter × attack), so no state an earlier flood left — conntrack entries, half-open
//! sockets, fw's embryo table — colours the next cell. On top of the bench's [`Pair`]: the
//! clients' addresses on the sender, a route that sends the server's answers to spoofed
//! sources back over the veth, the sink that drops those answers on the sender's end at XDP
//! cost, the filter's defences, and the attack generator (`bench_spoof`).

use std::{collections::BTreeSet, net::Ipv4Addr, time::Duration};

use anyhow::{Context as _, bail};
use aya::{
    Ebpf, EbpfLoader,
    maps::{Array, PerCpuArray},
    programs::XdpMode,
};
use fw_common::tcp::{ACK, SYN};
use fw_lab::{Cmd, NetNs, frames::PacketSpec};
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
    /// As [`Filter::FwDefended`] without `total`: what the aggregate limit costs real clients.
    FwCookiesPerSource,
}

impl Filter {
    pub const ALL: [Filter; 7] = [
        Filter::None,
        Filter::IptSeed,
        Filter::IptDefended,
        Filter::XdpFilter,
        Filter::Fw,
        Filter::FwDefended,
        Filter::FwCookiesPerSource,
    ];

    pub fn key(self) -> &'static str {
        match self {
            Filter::None => "none",
            Filter::IptSeed => "iptables_seed",
            Filter::IptDefended => "iptables_defended",
            Filter::XdpFilter => "xdp_filter",
            Filter::Fw => "fw",
            Filter::FwDefended => "fw_defended",
            Filter::FwCookiesPerSource => "fw_cookies_per_source",
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Filter::None => "no filter (XDP_PASS)",
            Filter::IptSeed => "iptables seed",
            Filter::IptDefended => "iptables + SYNPROXY + hashlimit",
            Filter::XdpFilter => "xdp-filter",
            Filter::Fw => "fw seed",
            Filter::FwDefended => "fw + SYN cookies + limits",
            Filter::FwCookiesPerSource => "fw + SYN cookies + per-source limit",
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
    pub fn create(k: u8, filter: Filter, limits: Limits, cpus: &Cpus) -> anyhow::Result<Cell> {
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
        // Last: attaching XDP may recreate a veth's NAPI instance.
        napi_thread(&pair.receiver, &r_if, cpus.network)?;
        napi_thread(&pair.sender, &s_if, cpus.network)?;
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

/// Where things run: the generator and both veth ends' receive processing (NAPI threads) on
/// `network`; the server's and the clients' threads on `apps`.
#[derive(Clone, Copy, Debug)]
pub struct Cpus {
    pub network: usize,
    pub apps: usize,
}

/// SCHED_FIFO priority of the NAPI threads (above every normal task, below the kernel's own).
const NAPI_PRIORITY: i32 = 50;

/// The kernel's NAPI threads (`napi/IFACE-ID`) by pid.
fn napi_threads() -> BTreeSet<(i32, String)> {
    let Ok(rd) = std::fs::read_dir("/proc") else {
        return BTreeSet::new();
    };
    rd.flatten()
        .filter_map(|e| {
            let pid: i32 = e.file_name().to_str()?.parse().ok()?;
            let comm = std::fs::read_to_string(e.path().join("comm")).ok()?;
            comm.starts_with("napi/")
                .then(|| (pid, comm.trim().to_string()))
        })
        .collect()
}

/// Switch `iface` (in `ns`) to threaded NAPI, its kernel thread pinned to `cpu` at real-time
/// priority: its receive processing then runs on that CPU whichever CPU sent the frames, as
/// soon as frames are queued (as a softirq would), and the generator on the same CPU runs only
/// while the receiver has nothing left to do, so the flood is as fast as the receiver can take
/// it and never overruns the ring that the clients' frames share. (A softirq NAPI runs on the
/// CPU that first scheduled it and keeps running there while frames keep coming: under a flood
/// that was the generator's CPU or the clients', by chance.)
fn napi_thread(ns: &NetNs, iface: &str, cpu: usize) -> anyhow::Result<()> {
    let before = napi_threads();
    // `ip netns exec` mounts the namespace's own /sys (nsenter would show the host's devices).
    Cmd::new("ip")
        .args(["netns", "exec", ns.name(), "sh", "-c"])
        .arg(format!("echo 1 > /sys/class/net/{iface}/threaded"))
        .timeout(Duration::from_secs(30))
        .ok()?;
    let prefix = format!("napi/{iface}-");
    let mine: Vec<i32> = napi_threads()
        .difference(&before)
        .filter(|(_, c)| c.starts_with(&prefix))
        .map(|(p, _)| *p)
        .collect();
    if mine.is_empty() {
        bail!("no NAPI thread appeared for {iface} in {}", ns.name());
    }
    for pid in mine {
        // SAFETY: cpu_set_t and sched_param are plain data; the CPU number is below
        // CPU_SETSIZE; both calls only read what is passed.
        let rc = unsafe {
            let mut set: libc::cpu_set_t = std::mem::zeroed();
            libc::CPU_SET(cpu, &mut set);
            let param = libc::sched_param {
                sched_priority: NAPI_PRIORITY,
            };
            match libc::sched_setaffinity(pid, size_of::<libc::cpu_set_t>(), &set) {
                0 => libc::sched_setscheduler(pid, libc::SCHED_FIFO, &param),
                e => e,
            }
        };
        if rc != 0 {
            return Err(std::io::Error::last_os_error())
                .with_context(|| format!("pinning {iface}'s NAPI thread {pid} to CPU {cpu}"));
        }
    }
    Ok(())
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
    let mut notes = Vec::new();
    if matches!(filter, Filter::None | Filter::IptSeed | Filter::IptDefended) {
        // Any XDP program makes the veth take every frame through its one NAPI ring, the
        // clients' with the flood's, as a NIC's receive queue does; without one, locally sent
        // frames would skip it.
        pair.install(Setup::Pass, None)?;
    }
    let r = &pair.receiver;
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
        Filter::FwDefended | Filter::FwCookiesPerSource => {
            // The listener accepts fw's cookie ACKs only in cookie mode (README): 2 = always.
            r.sysctl("net.ipv4.tcp_syncookies=2")?;
            let total = (filter == Filter::FwDefended).then_some(limits.total);
            let policy = fw_defended_policy(limits.per_source, total)?;
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

/// The seed rules with SYNPROXY on 80 (the iptables-extensions recipe, on the outside interface
/// only: SYNPROXY's own SYN to the server, on `lo`, must stay tracked) and hashlimit on its
/// SYNs: per source above `per_source`/s, all sources above `total`/s, dropped.
pub fn iptables_defended(l: Limits) -> String {
    let est = "-A INPUT -m state --state ESTABLISHED,RELATED -j ACCEPT\n";
    let seed = lab::iptables_seed();
    assert!(seed.contains(est), "the seed's ESTABLISHED rule");
    let (p, t) = (l.per_source, l.total);
    let defences = format!(
        "{est}\
         -A INPUT -i fbr+ -p tcp -m tcp --dport {PORT} --syn -m hashlimit --hashlimit-above {p}/sec --hashlimit-burst {p} --hashlimit-mode srcip --hashlimit-name fwb_src -j DROP\n\
         -A INPUT -i fbr+ -p tcp -m tcp --dport {PORT} --syn -m hashlimit --hashlimit-above {t}/sec --hashlimit-burst {t} --hashlimit-name fwb_all -j DROP\n\
         -A INPUT -i fbr+ -p tcp -m tcp --dport {PORT} -m state --state INVALID,UNTRACKED -j SYNPROXY --sack-perm --timestamp --wscale 7 --mss 1460\n\
         -A INPUT -i fbr+ -p tcp -m tcp --dport {PORT} -m state --state INVALID -j DROP\n"
    );
    format!(
        "*raw\n:PREROUTING ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n\
         -A PREROUTING -i fbr+ -p tcp -m tcp --dport {PORT} --syn -j CT --notrack\nCOMMIT\n{}",
        seed.replacen(est, &defences, 1)
    )
}

/// fw's seed policy (plus 5201, as the bench's) with `syn_cookies = "always"` and, on the web
/// rule, `limit`/`burst` per source and `total` if given.
pub fn fw_defended_policy(per_source: u32, total: Option<u32>) -> anyhow::Result<Policy> {
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
                "{web}limit = \"{per_source}/s\"\nburst = {per_source}\n{}",
                total.map_or(String::new(), |t| format!("total = \"{t}/s\"\n"))
            ),
            1,
        )
        + "\n[[allow]]\nports = [5201]\ncomment = \"iperf3 (benchmark)\"\n";
    fw_policy::parse_policy("seed+defences", &text).map_err(|e| anyhow::anyhow!("{e}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use fw_policy::SynCookies;

    /// The limits of the rule(s) for port 80.
    fn web_limits(p: &Policy) -> Vec<&fw_policy::Limit> {
        p.rules
            .iter()
            .filter(|r| r.ports.lo <= PORT && PORT <= r.ports.hi)
            .filter_map(|r| p.limits.get(&r.id))
            .collect()
    }

    #[test]
    fn fw_defences_turn_on_cookies_and_limit_port_80() {
        let p = fw_defended_policy(300, Some(2000)).unwrap();
        assert_eq!(p.options.syn_cookies, SynCookies::Always);
        let l = web_limits(&p);
        assert_eq!(l.len(), 1);
        assert!(l[0].rate.is_some() && l[0].total.is_some());
        let q = fw_defended_policy(300, None).unwrap();
        let l = web_limits(&q);
        assert!(l.len() == 1 && l[0].rate.is_some() && l[0].total.is_none());
    }

    #[test]
    fn iptables_defences_sit_before_the_seed_rules_on_the_outside_interface() {
        let r = iptables_defended(Limits {
            per_source: 300,
            total: 2000,
        });
        let synproxy = r.find("-j SYNPROXY").unwrap();
        assert!(synproxy < r.find("--dport 80 -j ACCEPT").unwrap());
        assert!(
            r.contains("--hashlimit-above 300/sec") && r.contains("--hashlimit-above 2000/sec")
        );
        assert!(
            r.contains("*raw\n")
                && r.contains("-i fbr+ -p tcp -m tcp --dport 80 --syn -j CT --notrack")
        );
    }
}
