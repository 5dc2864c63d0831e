//! Part 5, allowed traffic is not slowed: iperf3 TCP throughput, and the round-trip time of a
//! one-byte TCP request/response, through fw, through no filter and through iptables with the
//! seed policy (port 5201 allowed in each), in interleaved rounds.

use std::{
    io::{Read as _, Write as _},
    net::{SocketAddr, TcpListener, TcpStream},
    time::{Duration, Instant},
};

use anyhow::Context as _;
use serde_json::{Value, json};

use super::{
    Opts, Progress,
    lab::{Pair, RECV_V4, Setup},
    stats::{median, quantile},
    sys,
};

const PORT: u16 = 5201;

fn iperf_once(pair: &Pair, secs: u64) -> anyhow::Result<(f64, f64)> {
    let port = PORT.to_string();
    let _server = fw_lab::Cmd::new("ip")
        .args([
            "netns",
            "exec",
            pair.receiver.name(),
            "iperf3",
            "-s",
            "-1",
            "-B",
            RECV_V4,
            "-p",
            &port,
        ])
        .spawn()?;
    std::thread::sleep(Duration::from_millis(300));
    let t = secs.to_string();
    let out = sys::run(
        "ip",
        &[
            "netns",
            "exec",
            pair.sender.name(),
            "iperf3",
            "-c",
            RECV_V4,
            "-p",
            &port,
            "-t",
            &t,
            "-J",
        ],
        Duration::from_secs(secs + 20),
    )?;
    let v: Value = serde_json::from_str(&out.stdout).context("iperf3 -J output")?;
    let bps = v["end"]["sum_received"]["bits_per_second"]
        .as_f64()
        .context("iperf3: no end.sum_received")?;
    let rtt = v["end"]["streams"][0]["sender"]["mean_rtt"]
        .as_f64()
        .unwrap_or(f64::NAN);
    Ok((bps / 1e9, rtt))
}

/// One-byte ping-pong over one TCP connection for `dur`: RTTs in µs.
fn rr_once(pair: &Pair, dur: Duration) -> anyhow::Result<Vec<f64>> {
    let rpath = pair.receiver.path().to_path_buf();
    let spath = pair.sender.path().to_path_buf();
    let addr: SocketAddr = format!("{RECV_V4}:{PORT}").parse()?;
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::scope(|s| {
        let server = s.spawn(move || -> anyhow::Result<()> {
            fw_lab::netns::join_path(&rpath)?;
            let l = TcpListener::bind(addr)?;
            l.set_nonblocking(true)?;
            let _ = tx.send(());
            let end = Instant::now() + dur + Duration::from_secs(5);
            let (mut c, _) = loop {
                match l.accept() {
                    Ok(c) => break c,
                    Err(_) if Instant::now() < end => std::thread::sleep(Duration::from_millis(5)),
                    Err(e) => return Err(e.into()),
                }
            };
            c.set_nonblocking(false)?;
            c.set_read_timeout(Some(Duration::from_secs(5)))?;
            c.set_nodelay(true)?;
            let mut b = [0u8; 1];
            while Instant::now() < end {
                match c.read(&mut b) {
                    Ok(0) | Err(_) => break,
                    Ok(_) => c.write_all(&b)?,
                }
            }
            Ok(())
        });
        let client = s.spawn(move || -> anyhow::Result<Vec<f64>> {
            fw_lab::netns::join_path(&spath)?;
            rx.recv_timeout(Duration::from_secs(5))?;
            let mut c = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
            c.set_nodelay(true)?;
            c.set_read_timeout(Some(Duration::from_secs(5)))?;
            let mut out = Vec::new();
            let end = Instant::now() + dur;
            let mut b = [7u8; 1];
            while Instant::now() < end && out.len() < 200_000 && !sys::interrupted() {
                let t = Instant::now();
                c.write_all(&b)?;
                c.read_exact(&mut b)?;
                out.push(t.elapsed().as_secs_f64() * 1e6);
            }
            Ok(out)
        });
        let r = client
            .join()
            .map_err(|_| anyhow::anyhow!("client panicked"))?;
        let _ = server.join();
        r
    })
}

pub fn run(opts: &Opts, p: &mut Progress, pairs: &mut [Pair]) -> anyhow::Result<Value> {
    let wanted = [
        Setup::None,
        Setup::Pass,
        Setup::Fw,
        Setup::XdpFilter,
        Setup::IptSeed,
        Setup::NftSeed,
    ];
    let idx: Vec<usize> = wanted
        .iter()
        .filter_map(|w| pairs.iter().position(|p| p.setup == *w))
        .collect();
    let secs = if opts.quick { 1 } else { 3 };
    let rr_dur = Duration::from_millis(if opts.quick { 400 } else { 1500 });
    let mut gbps = vec![Vec::new(); idx.len()];
    let mut rtts = vec![Vec::new(); idx.len()];
    for round in 0..opts.rounds {
        p.step(&format!(
            "iperf3 and TCP request/response, round {}/{}",
            round + 1,
            opts.rounds
        ));
        for k in 0..idx.len() {
            let j = (k + round) % idx.len();
            sys::check_interrupt()?;
            let pair = &pairs[idx[j]];
            let (g, _) = iperf_once(pair, secs)
                .with_context(|| format!("iperf3 through {}", pair.setup.name()))?;
            gbps[j].push(g);
            let r = rr_once(pair, rr_dur)
                .with_context(|| format!("request/response through {}", pair.setup.name()))?;
            rtts[j].extend(r);
        }
    }
    let base_g = median(&gbps[0]);
    let base_rtt = median(&rtts[0]);
    let pass = idx.iter().position(|&i| pairs[i].setup == Setup::Pass);
    let pass_g = pass.map(|j| median(&gbps[j]));
    let pass_rtt = pass.map(|j| median(&rtts[j]));
    let rows: Vec<Value> = idx
        .iter()
        .enumerate()
        .map(|(j, &i)| {
            let g = median(&gbps[j]);
            let rtt = median(&rtts[j]);
            json!({
                "setup": pairs[i].setup.key(),
                "name": pairs[i].setup.name(),
                "gbps": g,
                "gbps_rounds": gbps[j],
                "gbps_vs_none": g / base_g,
                "gbps_vs_xdp_pass": pass_g.map(|p| g / p),
                "rtt_us_median": rtt,
                "rtt_us_p99": quantile(&rtts[j], 0.99),
                "rtt_samples": rtts[j].len(),
                "rtt_vs_none": rtt / base_rtt,
                "rtt_vs_xdp_pass": pass_rtt.map(|p| rtt / p),
            })
        })
        .collect();
    Ok(json!({
        "method": format!(
            "iperf3 -c for {secs} s (one TCP stream) from the sender namespace to the receiver's port {PORT}, which \
             every filter allows; then one TCP connection doing one-byte request/response for {:.1} s (the RTT a \
             latency-bound client sees). fw judges every packet of both through its connection table. Medians of \
             {} interleaved rounds. Both ends and the veth share the machine's 2 vCPUs with everything else, so \
             throughput is CPU-bound and noisy; compare within the table.",
            rr_dur.as_secs_f64(),
            opts.rounds
        ),
        "rounds": opts.rounds,
        "rows": rows,
    }))
}
