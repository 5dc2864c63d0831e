//! `cargo xtask demo`: fw's seed policy on a throwaway server namespace, probed with real
//! traffic from a throwaway client namespace, told step by step in plain words. Every outcome
//! is checked against what the policy says, so the demo doubles as a smoke test: it exits
//! non-zero when one differs.

use std::{
    collections::BTreeMap,
    fmt::Display,
    net::IpAddr,
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};

use crate::{
    build_run,
    lab::{self, CLI_V4, CLI_V6, CLIENT_PORT, Connect, Counter, Lab, SRV_V4, SRV_V6, UdpProbe},
    proc::{self, check_interrupt, indent, is_root},
    setup,
};

/// Ports with a listener on the server: three the seed policy allows, one it does not.
const LISTEN: [u16; 4] = [22, 80, 443, 8080];
/// How long a connect may wait for an answer before it counts as "no answer".
const CONNECT_WAIT: Duration = Duration::from_secs(2);
/// A UDP port nothing listens on.
const UDP_PORT: u16 = 9999;

pub fn run() -> anyhow::Result<bool> {
    if !is_root() {
        bail!(
            "the demo creates network namespaces and loads an XDP program: run `cargo xtask demo` as root"
        );
    }
    println!("fw demo: the seed policy on a throwaway server, probed from a throwaway client");
    println!(
        "(everything happens inside two network namespaces created for this run and removed after it)"
    );
    println!();
    setup::run(setup::Steps::ALL)?;
    let fw = build_run::cargo_build(false)?;
    let started = Instant::now();
    let mut story = Story::default();
    let lab = {
        heading("1. A lab: two network namespaces joined by a veth pair");
        Lab::create(fw, &LISTEN).context("creating the lab")?
    };
    match story.tell(lab) {
        Err(e) if proc::is_interrupted(&e) => return Err(e),
        Err(e) => {
            println!();
            story.fail(format!("the demo stopped early: {e:#}"));
        }
        Ok(()) => {}
    }
    println!();
    println!("══ result ══");
    if story.failures.is_empty() {
        println!(
            "✓ all {} checks behaved as the policy says ({} s). Everything created for the demo is gone.",
            story.checks,
            started.elapsed().as_secs()
        );
        Ok(true)
    } else {
        println!(
            "✗ {} of {} checks did not behave as the policy says:",
            story.failures.len(),
            story.checks
        );
        for f in &story.failures {
            println!("  ✗ {f}");
        }
        Ok(false)
    }
}

fn heading(title: &str) {
    println!();
    let rule = "─".repeat(72usize.saturating_sub(title.chars().count() + 4));
    println!("── {title} {rule}");
}

fn say(text: impl Display) {
    for line in text.to_string().lines() {
        println!("   {line}");
    }
}

#[derive(Default)]
struct Story {
    checks: u32,
    failures: Vec<String>,
}

impl Story {
    fn check(&mut self, ok: bool, text: impl Display) -> bool {
        self.checks += 1;
        let text = text.to_string();
        println!("   {} {text}", if ok { "✓" } else { "✗" });
        if !ok {
            self.failures.push(text);
        }
        ok
    }

    fn fail(&mut self, text: impl Display) {
        self.check(false, text);
    }

    /// A step that could not run at all is a failure; the demo goes on with the next one
    /// (unless the user pressed Ctrl-C).
    fn step(&mut self, r: anyhow::Result<()>) -> anyhow::Result<()> {
        match r {
            Err(e) if proc::is_interrupted(&e) => Err(e),
            Err(e) => {
                self.fail(format!("{e:#}"));
                Ok(())
            }
            Ok(()) => Ok(()),
        }
    }

    /// Steps 1–10, then the lab is removed (by its Drop guard if a step returns early).
    fn tell(&mut self, mut lab: Lab) -> anyhow::Result<()> {
        let r = self.tell_steps(&mut lab);
        heading("Cleanup: removing everything the demo created");
        for f in lab.close() {
            self.failures.push(format!("cleanup: {f}"));
        }
        r
    }

    fn tell_steps(&mut self, lab: &mut Lab) -> anyhow::Result<()> {
        let (srv, cli) = (lab.srv(), lab.cli());
        say(format!(
            "client {} ({CLI_V4}, {CLI_V6})\n   └─veth {} ⇄ {}─┘\nserver {} ({SRV_V4}, {SRV_V6})",
            cli.name(),
            lab.cli_if,
            lab.srv_if,
            srv.name()
        ));
        say(
            "The server listens on TCP 22 (ssh), 80 (http), 443 (https) and 8080 (an app the policy does not allow).",
        );
        let t = wait_for_link(lab)?;
        self.check(
            true,
            format!(
                "the client reaches the server (TCP 80 answered after {} ms)",
                t.as_millis()
            ),
        );

        heading("2. Before fw: every packet reaches the server");
        let r = self.baseline(lab);
        self.step(r)?;

        heading(&format!(
            "3. fw up --iface {} (the embedded seed policy)",
            lab.srv_if
        ));
        say(format!(
            "Run inside the server namespace: nsenter --net=/var/run/netns/{} fw up --iface {}",
            lab.srv().name(),
            lab.srv_if
        ));
        let out = lab.fw_up()?;
        println!("{}", indent(out.both().trim_end(), "   │ "));
        if !self.check(out.success(), ok_or_failed("fw up", &out)) {
            bail!("fw up failed; the remaining steps need the filter");
        }
        let prog = lab.xdp_prog()?;
        let Some((prog_id, mode)) = prog else {
            self.fail("bpftool net shows no XDP program on the server's veth");
            bail!("no filter attached");
        };
        self.check(
            true,
            format!(
                "bpftool net (in the server namespace): {} xdp {mode} program id {prog_id}",
                lab.srv_if
            ),
        );

        heading("4. Connections from the client");
        let r = self.connections(lab);
        self.step(r)?;

        heading("5. The server's own outgoing connection");
        let r = self.outgoing(lab);
        self.step(r)?;

        heading("6. nmap -sS (SYN scan) from the client");
        let r = self.syn_scan(lab);
        self.step(r)?;

        heading("7. Stealth scans: NULL, XMAS, ACK, all flags");
        let r = self.stealth_scans(lab);
        self.step(r)?;

        heading(&format!("8. UDP to port {UDP_PORT} (not allowed)"));
        let r = self.udp(lab);
        self.step(r)?;

        heading("9. fw allow 8080/tcp: open a port live");
        let r = self.live_allow(lab, prog_id);
        self.step(r)?;

        heading("10. fw status: the rules and the counters");
        say(format!(
            "nsenter --net=/var/run/netns/{} fw status",
            lab.srv().name()
        ));
        let out = lab.fw(&["status", "--iface", &lab.srv_if])?;
        println!("{}", indent(out.both().trim_end(), "   │ "));
        self.check(out.success(), ok_or_failed("fw status", &out));
        Ok(())
    }

    fn baseline(&mut self, lab: &Lab) -> anyhow::Result<()> {
        let c = lab.connect(SRV_V4.into(), 8080, CONNECT_WAIT)?;
        self.check(
            matches!(c, Connect::Open(_)),
            format!("TCP 8080: {} (nothing filters yet)", describe_connect(&c)),
        );
        let u = lab.udp_probe(SRV_V4.into(), UDP_PORT, 1)?;
        self.check(
            u == UdpProbe::Refused,
            format!(
                "UDP {UDP_PORT}: {} — the server's kernel saw the datagram and answered",
                describe_udp(&u)
            ),
        );
        let m = lab::nmap(lab.cli(), "-sA", &[80], SRV_V4.into())?;
        let s = m.get(&80).map(String::as_str).unwrap_or("?");
        self.check(
            s == "unfiltered",
            format!(
                "nmap -sA (ACK scan) port 80: {s} — the kernel answered the stray ACK with RST"
            ),
        );
        let m = lab::nmap(lab.cli(), "-sN", &[25], SRV_V4.into())?;
        let s = m.get(&25).map(String::as_str).unwrap_or("?");
        self.check(
            s == "closed",
            format!("nmap -sN (NULL scan) port 25: {s} — the kernel answered the flagless probe with RST, so a scanner learns something"),
        );
        Ok(())
    }

    fn connections(&mut self, lab: &Lab) -> anyhow::Result<()> {
        let cases: [(IpAddr, u16, bool, &str); 6] = [
            (SRV_V4.into(), 80, true, "allowed: web (http)"),
            (SRV_V4.into(), 443, true, "allowed: web (https)"),
            (SRV_V4.into(), 22, true, "allowed: ssh"),
            (SRV_V6.into(), 80, true, "allowed over IPv6 too"),
            (SRV_V4.into(), 8080, false, "not in the policy"),
            (SRV_V6.into(), 8080, false, "not in the policy"),
        ];
        for (ip, port, allowed, why) in cases {
            check_interrupt()?;
            let c = lab.connect(ip, port, CONNECT_WAIT)?;
            let target = match ip {
                IpAddr::V4(a) => format!("{a}:{port}"),
                IpAddr::V6(a) => format!("[{a}]:{port}"),
            };
            let (ok, verdict) = match (&c, allowed) {
                (Connect::Open(_), true) => (true, why.to_string()),
                (Connect::NoAnswer, false) => (
                    true,
                    format!("{why}: fw dropped the SYN before the server's kernel saw it; no RST came back, so the client cannot even tell whether anything listens"),
                ),
                (Connect::Refused, false) => (
                    false,
                    "an RST came back: the SYN reached the server's kernel, fw should have dropped it".to_string(),
                ),
                (_, true) => (false, format!("{why}, so this should have connected")),
                (_, false) => (false, format!("{why}, so the SYN should have been dropped silently")),
            };
            self.check(
                ok,
                format!("TCP {target:<22} {} — {verdict}", describe_connect(&c)),
            );
        }
        Ok(())
    }

    fn outgoing(&mut self, lab: &Lab) -> anyhow::Result<()> {
        say(format!(
            "The server connects out to the client's port {CLIENT_PORT}. The client's SYN+ACK is addressed to\na port no rule opens; it passes because fw's egress program recorded the connection\n(the seed's ESTABLISHED,RELATED rule)."
        ));
        let before = lab.counters()?;
        let c = lab.connect_out(CLI_V4.into(), CLIENT_PORT, CONNECT_WAIT)?;
        let after = lab.counters()?;
        self.check(
            matches!(c, Connect::Open(_)),
            format!(
                "TCP {CLI_V4}:{CLIENT_PORT} from the server: {}",
                describe_connect(&c)
            ),
        );
        let d = delta(&before, &after, "established");
        self.check(
            d >= 1,
            format!(
                "fw counted {d} replies as \"{}\" [established]",
                meaning(&after, "established")
            ),
        );
        Ok(())
    }

    fn syn_scan(&mut self, lab: &Lab) -> anyhow::Result<()> {
        let ports = [22, 25, 80, 443, 3306, 8080];
        say(format!(
            "ip netns exec {} nmap -n -Pn -sS -p 22,25,80,443,3306,8080 {SRV_V4}",
            lab.cli().name()
        ));
        let m = lab::nmap(lab.cli(), "-sS", &ports, SRV_V4.into())?;
        let expected: [(u16, &str, &str); 6] = [
            (22, "open", "allowed (ssh) and a server listens"),
            (
                25,
                "closed",
                "allowed (mail), nothing listens: the kernel answered RST",
            ),
            (80, "open", "allowed (http) and a server listens"),
            (443, "open", "allowed (https) and a server listens"),
            (3306, "filtered", "not allowed: dropped, no answer at all"),
            (
                8080,
                "filtered",
                "not allowed: dropped although a server listens",
            ),
        ];
        for (port, want, why) in expected {
            let got = m.get(&port).map(String::as_str).unwrap_or("?");
            self.check(
                got == want,
                format!("port {port:<5} nmap says {got:<14} expected {want:<9} {why}"),
            );
        }
        Ok(())
    }

    fn stealth_scans(&mut self, lab: &Lab) -> anyhow::Result<()> {
        let ports = [22, 25, 80, 8080];
        say(
            "Probes with flag combinations no real TCP stack sends, and ACKs that belong to no\nconnection. Without fw, port 25 answered the NULL probe and port 80 the ACK with RST\n(step 2); with fw every probe must go unanswered, and each is counted under its reason.",
        );
        for (scan, name, reason) in [
            ("-sN", "NULL scan (no flags)", "tcp-null"),
            ("-sX", "XMAS scan (FIN PSH URG)", "tcp-bad-flags"),
            (
                "-sA",
                "ACK scan (ACK without a connection)",
                "tcp-new-not-syn",
            ),
        ] {
            check_interrupt()?;
            let before = lab.counters()?;
            let m = lab::nmap(lab.cli(), scan, &ports, SRV_V4.into())?;
            let after = lab.counters()?;
            let states: Vec<String> = ports
                .iter()
                .map(|p| format!("{p} {}", m.get(p).map(String::as_str).unwrap_or("?")))
                .collect();
            // No answer reads "open|filtered" for NULL/XMAS and "filtered" for ACK scans.
            let quiet = if scan == "-sA" {
                "filtered"
            } else {
                "open|filtered"
            };
            let silent = ports.iter().all(|p| m.get(p).is_some_and(|s| s == quiet));
            self.check(
                silent,
                format!(
                    "nmap {scan} {name}: {} — no answer from any port",
                    states.join(", ")
                ),
            );
            let d = delta(&before, &after, reason);
            self.check(
                d >= ports.len() as u64,
                format!(
                    "fw counted {d} drops as \"{}\" [{reason}]",
                    meaning(&after, reason)
                ),
            );
        }
        check_interrupt()?;
        let before = lab.counters()?;
        say(format!(
            "ip netns exec {} hping3 -c 3 -p 25 -F -S -R -P -A -U {SRV_V4}   (all six classic flags: the seed's XMAS rule)",
            lab.cli().name()
        ));
        let out = lab
            .cli()
            .cmd("hping3")
            .args([
                "-c", "3", "-i", "u200000", "-p", "25", "-F", "-S", "-R", "-P", "-A", "-U",
            ])
            .arg(SRV_V4.to_string())
            .timeout(Duration::from_secs(30))
            .run()?;
        let after = lab.counters()?;
        let received = fw_lab::scan::parse_hping3_text(&out.both())
            .ok()
            .map(|(_, received)| received);
        self.check(
            received == Some(0),
            format!(
                "hping3: {} replies to 3 packets",
                received
                    .map(|n| n.to_string())
                    .unwrap_or_else(|| "? (no statistics line)".into())
            ),
        );
        let d = delta(&before, &after, "tcp-xmas");
        self.check(
            d >= 3,
            format!(
                "fw counted {d} drops as \"{}\" [tcp-xmas]",
                meaning(&after, "tcp-xmas")
            ),
        );
        Ok(())
    }

    fn udp(&mut self, lab: &Lab) -> anyhow::Result<()> {
        let before = lab.counters()?;
        let u = lab.udp_probe(SRV_V4.into(), UDP_PORT, 3)?;
        let u6 = lab.udp_probe(SRV_V6.into(), UDP_PORT, 1)?;
        let after = lab.counters()?;
        self.check(
            u == UdpProbe::NoAnswer,
            format!(
                "UDP {SRV_V4}:{UDP_PORT} ×3: {} — before fw the kernel answered \"port unreachable\"; now the datagrams never reach it",
                describe_udp(&u)
            ),
        );
        self.check(
            u6 == UdpProbe::NoAnswer,
            format!("UDP [{SRV_V6}]:{UDP_PORT}: {}", describe_udp(&u6)),
        );
        let d = delta(&before, &after, "default-drop");
        self.check(
            d >= 4,
            format!(
                "fw counted {d} drops as \"{}\" [default-drop]",
                meaning(&after, "default-drop")
            ),
        );
        Ok(())
    }

    fn live_allow(&mut self, lab: &Lab, prog_id: u64) -> anyhow::Result<()> {
        say(format!(
            "nsenter --net=/var/run/netns/{} fw allow 8080/tcp --iface {}",
            lab.srv().name(),
            lab.srv_if
        ));
        let out = lab.fw(&[
            "allow",
            "8080/tcp",
            "--iface",
            &lab.srv_if,
            "--comment",
            "demo app",
        ])?;
        println!("{}", indent(out.both().trim_end(), "   │ "));
        self.check(out.success(), ok_or_failed("fw allow", &out));
        let now = lab.xdp_prog()?;
        self.check(
            now.as_ref().is_some_and(|(id, _)| *id == prog_id),
            format!(
                "program id still {prog_id} (bpftool net: {}): a map update, no reload, no gap",
                now.map(|(id, m)| format!("xdp {m} id {id}"))
                    .unwrap_or_else(|| "no XDP program".into())
            ),
        );
        let c = lab.connect(SRV_V4.into(), 8080, CONNECT_WAIT)?;
        self.check(
            matches!(c, Connect::Open(_)),
            format!("TCP {SRV_V4}:8080 {} — allowed now", describe_connect(&c)),
        );
        Ok(())
    }
}

/// Until the client reaches the server's port 80 (the link and the listeners are up).
fn wait_for_link(lab: &Lab) -> anyhow::Result<Duration> {
    let start = Instant::now();
    for _ in 0..40 {
        check_interrupt()?;
        if let Connect::Open(_) = lab.connect(SRV_V4.into(), 80, Duration::from_millis(500))? {
            return Ok(start.elapsed());
        }
        proc::sleep(Duration::from_millis(250))?;
    }
    bail!(
        "the client could not reach the server's port 80 within {} s",
        start.elapsed().as_secs()
    )
}

fn ok_or_failed(what: &str, out: &proc::Output) -> String {
    if out.success() {
        format!("{what} succeeded")
    } else {
        format!(
            "{what} failed (exit status {}; its output is above)",
            out.code()
        )
    }
}

fn describe_connect(c: &Connect) -> String {
    match c {
        Connect::Open(greeting) if greeting.is_empty() => "connected".into(),
        Connect::Open(greeting) => format!("connected (\"{greeting}\")"),
        Connect::Refused => "refused (RST)".into(),
        Connect::NoAnswer => format!("no answer within {} s", CONNECT_WAIT.as_secs()),
        Connect::Other(e) => format!("error: {e}"),
    }
}

fn describe_udp(u: &UdpProbe) -> String {
    match u {
        UdpProbe::Refused => "ICMP port unreachable came back".into(),
        UdpProbe::NoAnswer => "no answer at all".into(),
        UdpProbe::Reply => "a reply came back".into(),
        UdpProbe::Other(e) => format!("error: {e}"),
    }
}

fn delta(before: &BTreeMap<String, Counter>, after: &BTreeMap<String, Counter>, key: &str) -> u64 {
    let b = before.get(key).map(|c| c.packets).unwrap_or(0);
    let a = after.get(key).map(|c| c.packets).unwrap_or(0);
    a.saturating_sub(b)
}

fn meaning(m: &BTreeMap<String, Counter>, key: &str) -> String {
    m.get(key)
        .map(|c| c.meaning.clone())
        .unwrap_or_else(|| format!("(no counter named {key})"))
}
