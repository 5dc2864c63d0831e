//! `fw top`: a live view like top/iftop — packets/s per rule and per reason, the top dropped
//! sources (sampled from the drop log), connection-table fill. `q` or Ctrl-C quits and the
//! terminal is restored; `--iterations` bounds it for scripts.

use std::{
    collections::BTreeMap,
    io::Write as _,
    net::IpAddr,
    time::{Duration, Instant},
};

use crate::{follow::Source, paths::IfaceName, status::IfaceStatus};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Interface (default: every one fw is attached to).
    #[arg(long = "iface", short = 'i')]
    pub ifaces: Vec<IfaceName>,
    /// Seconds between refreshes.
    #[arg(long, short = 'd', default_value_t = 1.0)]
    pub delay: f64,
    /// Stop after N refreshes.
    #[arg(long, short = 'n')]
    pub iterations: Option<u64>,
    /// Do not sample the drop log for the top sources.
    #[arg(long)]
    pub no_sources: bool,
}

/// Puts the terminal in non-canonical, no-echo mode (keys arrive one by one) and back on drop.
struct RawTerm {
    saved: Option<libc::termios>,
}

impl RawTerm {
    fn new() -> Self {
        // SAFETY: isatty/tcgetattr/tcsetattr on fd 0 with a valid termios.
        unsafe {
            if libc::isatty(0) != 1 {
                return RawTerm { saved: None };
            }
            let mut t: libc::termios = std::mem::zeroed();
            if libc::tcgetattr(0, &mut t) != 0 {
                return RawTerm { saved: None };
            }
            let saved = t;
            t.c_lflag &= !(libc::ICANON | libc::ECHO);
            t.c_cc[libc::VMIN] = 0;
            t.c_cc[libc::VTIME] = 0;
            libc::tcsetattr(0, libc::TCSANOW, &t);
            RawTerm { saved: Some(saved) }
        }
    }

    /// Wait up to `d` for a key; true if it was `q`.
    fn quit_pressed(&self, d: Duration) -> bool {
        if self.saved.is_none() {
            std::thread::sleep(d);
            return false;
        }
        let mut pfd = libc::pollfd {
            fd: 0,
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd; read into a stack buffer of its size.
        unsafe {
            if libc::poll(&mut pfd, 1, d.as_millis() as i32) > 0 {
                let mut b = [0u8; 16];
                let n = libc::read(0, b.as_mut_ptr().cast(), b.len());
                return n > 0 && b[..n as usize].iter().any(|c| *c == b'q' || *c == b'Q');
            }
        }
        false
    }
}

impl Drop for RawTerm {
    fn drop(&mut self) {
        if let Some(t) = &self.saved {
            // SAFETY: restoring the attributes read in new().
            unsafe { libc::tcsetattr(0, libc::TCSANOW, t) };
        }
    }
}

type Counts = BTreeMap<(String, String), u64>;

fn counts(all: &[IfaceStatus]) -> Counts {
    let mut c = Counts::new();
    for s in all {
        for r in &s.rules {
            c.insert((s.iface.clone(), format!("rule {}", r.rule.id)), r.packets);
        }
        for r in &s.reasons {
            c.insert((s.iface.clone(), r.reason.to_string()), r.packets);
        }
    }
    c
}

fn rate(now: &Counts, before: &Counts, key: &(String, String), secs: f64) -> f64 {
    let n = now.get(key).copied().unwrap_or(0);
    let b = before.get(key).copied().unwrap_or(n);
    n.saturating_sub(b) as f64 / secs.max(1e-3)
}

/// One screen of the view.
pub fn render(
    all: &[IfaceStatus],
    now: &Counts,
    before: &Counts,
    secs: f64,
    sources: &BTreeMap<IpAddr, u64>,
    sources_note: &str,
) -> String {
    let mut o = String::new();
    for s in all {
        o += &format!(
            "fw on {} (xdp {}), generation {}{}{}\n\n",
            s.iface,
            s.mode.name(),
            s.generation,
            if s.flushed { ", FLUSHED" } else { "" },
            if s.pending.is_some() {
                ", confirmation pending"
            } else {
                ""
            }
        );
        o += &format!(
            "{:>10} {:>12}  {:<36} {}\n",
            "pkts/s", "pkts", "rule", "comment"
        );
        for r in &s.rules {
            let key = (s.iface.clone(), format!("rule {}", r.rule.id));
            o += &format!(
                "{:>10.1} {:>12}  {}\n",
                rate(now, before, &key, secs),
                r.packets,
                r.description
            );
        }
        o += &format!(
            "\n{:>10} {:>12}  {:<20} {}\n",
            "pkts/s", "pkts", "reason", "verdict"
        );
        let mut reasons: Vec<_> = s
            .reasons
            .iter()
            .map(|r| {
                let key = (s.iface.clone(), r.reason.to_string());
                (rate(now, before, &key, secs), r)
            })
            .filter(|(rt, r)| *rt > 0.0 || r.packets > 0)
            .collect();
        reasons.sort_by(|a, b| b.0.total_cmp(&a.0).then(b.1.packets.cmp(&a.1.packets)));
        for (rt, r) in reasons {
            o += &format!(
                "{rt:>10.1} {:>12}  {:<20} {}\n",
                r.packets, r.reason, r.verdict
            );
        }
        o += "\nconnection tables:";
        for t in &s.connections {
            let pct = if t.max_entries > 0 {
                100.0 * t.entries as f64 / f64::from(t.max_entries)
            } else {
                0.0
            };
            o += &format!(
                "  {} {}/{} ({pct:.1}%, {} evicted)",
                t.table, t.entries, t.max_entries, t.evicted
            );
        }
        o += "\n\n";
    }
    o += &format!("top dropped sources (sampled from the drop log{sources_note}):\n");
    let mut top: Vec<_> = sources.iter().collect();
    top.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
    for (a, n) in top.into_iter().take(10) {
        o += &format!("  {n:>8}  {a}\n");
    }
    o += "\nq or Ctrl-C quits\n";
    o
}

pub fn execute(a: Args) -> anyhow::Result<()> {
    let ifaces = super::target_ifaces(&a.ifaces)?;
    crate::serve::install_stop_handler();
    let mut logs: Vec<Source> = Vec::new();
    let mut note = String::new();
    if !a.no_sources {
        for i in &ifaces {
            match crate::follow::open_source(i, Some(1000)) {
                Ok(s) => logs.push(s),
                Err(e) => note = format!("; {i}: {e}"),
            }
        }
    }
    let term = RawTerm::new();
    let tty = term.saved.is_some();
    let delay = Duration::from_secs_f64(a.delay.clamp(0.1, 3600.0));
    let mut before = Counts::new();
    let mut last = Instant::now();
    let mut sources: BTreeMap<IpAddr, u64> = BTreeMap::new();
    let mut n = 0u64;
    loop {
        let all: Vec<IfaceStatus> = ifaces
            .iter()
            .map(crate::status::read)
            .collect::<Result<_, _>>()?;
        let now = counts(&all);
        for l in &mut logs {
            l.drain(&mut |e| {
                if let Some(src) = e.src
                    && e.verdict == "drop"
                {
                    *sources.entry(src).or_default() += 1;
                }
            });
        }
        let secs = last.elapsed().as_secs_f64();
        last = Instant::now();
        let screen = render(&all, &now, &before, secs, &sources, &note);
        let mut out = std::io::stdout().lock();
        if tty {
            let _ = write!(out, "\x1b[H\x1b[2J");
        }
        let _ = write!(out, "{screen}");
        let _ = out.flush();
        drop(out);
        before = now;
        n += 1;
        if a.iterations.is_some_and(|max| n >= max) || crate::serve::stopped() {
            break;
        }
        if term.quit_pressed(delay) || crate::serve::stopped() {
            break;
        }
    }
    Ok(())
}
