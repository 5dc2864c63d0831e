//! `fw-diff`: the differential test against iptables, full size (`cargo xtask diff` builds and
//! runs it as root). See src/lib.rs and the README section "Differential test
//! against iptables".
//!
//! fw-diff [--packets N] [--seed S] [--policy FILE]... [--case NAME]... [--iptables legacy|nft]
//!         [--no-testrun] [--markdown FILE] [--quiet]

use std::{fmt::Write as _, path::PathBuf, process::ExitCode, time::Instant};

use anyhow::{Context as _, bail};
use fw_diff::{
    Options,
    known::Known,
    policies,
    policies::Source,
    preflight,
    report::{self, Summary},
    run_case,
};
use fw_lab::{CMD_TIMEOUT, TempDir, host_cmd, run_with_timeout};

const USAGE: &str = "\
usage: fw-diff [--packets N] [--seed S] [--policy FILE]... [--case NAME]...
               [--iptables legacy|nft] [--no-testrun] [--markdown FILE] [--quiet]

Loads each policy into real iptables in one network namespace and into fw in another, sends
both the same generated packets, and compares what each lets through (root only).

  --packets N     packets per policy (default 100000)
  --seed S        generator seed (default: fixed, so runs repeat)
  --policy FILE   compare this instead of the built-in set: FILE.toml is an fw policy
                  (iptables gets its `fw export iptables`); any other FILE is iptables-save
                  output (fw gets its `fw import iptables`); IPT=FW.toml compares the two as
                  they are. May be repeated.
  --case NAME     only this built-in case (seed, seed-office, tutorial, tutorial-vs-seed,
                  webserver, centos). May be repeated.
  --iptables nft  load the rules with iptables-nft instead of iptables-legacy
  --no-testrun    skip the BPF_PROG_TEST_RUN cross-check of the XDP verdicts
  --markdown FILE write the report as Markdown (docs/differential.md for the full run)
  --quiet         no progress lines
  --show CLASS    print every packet of this class (or all) with what each host did
";

struct Args {
    opts: Options,
    policies: Vec<String>,
    cases: Vec<String>,
    markdown: Option<PathBuf>,
    show: Vec<String>,
}

fn parse_args() -> anyhow::Result<Args> {
    let mut a = Args {
        opts: Options {
            progress: true,
            ..Options::default()
        },
        policies: Vec::new(),
        cases: Vec::new(),
        markdown: None,
        show: Vec::new(),
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut value = |name: &str| {
            it.next()
                .with_context(|| format!("{name} needs a value\n\n{USAGE}"))
        };
        match arg.as_str() {
            "--packets" => {
                a.opts.packets = value("--packets")?
                    .replace('_', "")
                    .parse()
                    .context("--packets: not a number")?
            }
            "--seed" => a.opts.seed = value("--seed")?.parse().context("--seed: not a number")?,
            "--policy" => a.policies.push(value("--policy")?),
            "--case" => {
                let c = value("--case")?;
                if !policies::BUILTIN_NAMES.contains(&c.as_str()) {
                    bail!(
                        "--case {c}: no such case (built in: {})",
                        policies::BUILTIN_NAMES.join(", ")
                    );
                }
                a.cases.push(c);
            }
            "--iptables" => {
                let f = value("--iptables")?;
                if f != "legacy" && f != "nft" {
                    bail!("--iptables: legacy or nft, not {f:?}");
                }
                a.opts.iptables = f;
            }
            "--no-testrun" => a.opts.testrun = false,
            "--markdown" => a.markdown = Some(value("--markdown")?.into()),
            "--quiet" => a.opts.progress = false,
            "--show" => a.show.push(value("--show")?),
            "-h" | "--help" => {
                print!("{USAGE}");
                std::process::exit(0);
            }
            other => bail!("unknown argument {other:?}\n\n{USAGE}"),
        }
    }
    if a.opts.packets == 0 {
        bail!("--packets must be at least 1");
    }
    Ok(a)
}

fn version(tool: &str, args: &[&str]) -> String {
    let out = run_with_timeout(host_cmd(tool, args), CMD_TIMEOUT);
    out.stdout.lines().next().unwrap_or("?").trim().to_string()
}

fn markdown(args: &Args, results: &[(fw_diff::CaseResult, Summary)], secs: f64) -> String {
    let mut out = String::new();
    out.push_str("# Differential test against iptables: full run\n\n");
    out.push_str(
        "Written by `cargo xtask diff` (`fw-diff`); how the test works and why each documented \
         difference is intended: README, section \"Differential test against iptables\".\n\n",
    );
    let _ = writeln!(
        out,
        "Kernel {}; {}; {}; {} packets per policy, seed {:#x}, iptables-{}; {:.0} s in all.\n",
        version("uname", &["-r"]),
        version("iptables-legacy", &["--version"]),
        version("nft", &["--version"]),
        args.opts.packets,
        args.opts.seed,
        args.opts.iptables,
        secs
    );
    out.push_str("| policy | packets | frames | iptables passed | fw passed | differences | documented | unexplained |\n|---|--:|--:|--:|--:|--:|--:|--:|\n");
    let mut tot = [0usize; 6];
    let mut frames = 0u64;
    for (r, s) in results {
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} | {} | {} | {} |",
            r.case.name,
            s.total.probes,
            r.frames[1],
            s.total.ipt_passed,
            s.total.fw_passed,
            s.total.differences,
            s.total.explained,
            s.unexplained_count
        );
        tot[0] += s.total.probes;
        tot[1] += s.total.ipt_passed;
        tot[2] += s.total.fw_passed;
        tot[3] += s.total.differences;
        tot[4] += s.total.explained;
        tot[5] += s.unexplained_count;
        frames += r.frames[1];
    }
    let _ = writeln!(
        out,
        "| **all** | {} | {} | {} | {} | {} | {} | {} |\n",
        tot[0], frames, tot[1], tot[2], tot[3], tot[4], tot[5]
    );
    out.push_str(
        "\"passed\" means: reached the host's INPUT hook after its filter (iptables' filter table, \
         or fw's XDP program), observed by the same nftables rule in both hosts. A packet is one \
         IP datagram (a fragmented one is several frames).\n\n",
    );
    // Which documented differences occurred, per policy.
    let seen: Vec<Known> = Known::ALL
        .into_iter()
        .filter(|k| results.iter().any(|(_, s)| s.known.contains_key(k)))
        .collect();
    if !seen.is_empty() {
        out.push_str(
            "## Documented differences

| difference | passes |",
        );
        for (r, _) in results {
            let _ = write!(out, " {} |", r.case.name);
        }
        out.push_str("\n|---|---|");
        for _ in results {
            out.push_str("--:|");
        }
        out.push('\n');
        for k in &seen {
            let _ = write!(
                out,
                "| {} | {} |",
                k.id(),
                if k.fw_passes() { "fw" } else { "iptables" }
            );
            for (_, s) in results {
                let n = s.known.get(k).map(|c| c.count).unwrap_or(0);
                let _ = write!(
                    out,
                    " {} |",
                    if n == 0 { "-".into() } else { n.to_string() }
                );
            }
            out.push('\n');
        }
        out.push('\n');
        for k in &seen {
            let _ = writeln!(out, "- **{}**: {}\n", k.id(), k.why());
        }
    }
    out.push_str("## Per policy\n\n");
    for (r, s) in results {
        out.push_str(&report::markdown(r, s));
    }
    out.push_str("## The policies\n\n");
    for (r, _) in results {
        let _ = writeln!(
            out,
            "<details><summary>{}: iptables rules as loaded, and the fw policy</summary>\n\n```\n{}\n```\n\n```toml\n{}\n```\n</details>\n",
            r.case.name,
            r.rules_ipt.trim(),
            r.case.fw_text.trim()
        );
    }
    out
}

fn main() -> ExitCode {
    match run() {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("fw-diff: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> anyhow::Result<bool> {
    let args = parse_args()?;
    preflight()?;
    let start = Instant::now();
    let dir = TempDir::new("diff-policies");
    let cases = if args.policies.is_empty() {
        let only: Vec<&str> = args.cases.iter().map(String::as_str).collect();
        policies::builtin(&dir, &only)?
    } else {
        args.policies
            .iter()
            .map(|p| policies::case(&Source::parse(p), None, &dir))
            .collect::<anyhow::Result<Vec<_>>>()?
    };
    let mut results = Vec::new();
    let mut ok = true;
    for case in &cases {
        eprintln!(
            "[fw-diff] case {}: {} ({} packets)",
            case.name, case.title, args.opts.packets
        );
        let r = run_case(case, &args.opts)?;
        let s = report::summarize(&r);
        for (p, o) in r.probes.iter().zip(&r.outcomes) {
            if args.show.iter().any(|c| c == "all" || c == p.class.name()) {
                println!(
                    "{} [{}] {}: ipt pre {} in {} | fw xdp {} in {} | test run {:?} reason {:?}",
                    if o.differs() { "DIFF" } else { "same" },
                    p.class,
                    p.what,
                    o.ipt.pre,
                    o.ipt.delivered,
                    o.fw.xdp,
                    o.fw.delivered,
                    o.testrun_pass,
                    o.fw_reason
                );
            }
        }
        print!("{}", report::text(&r, &s));
        println!();
        ok &= s.ok(&r);
        results.push((r, s));
    }
    let secs = start.elapsed().as_secs_f64();
    println!("== summary");
    println!(
        "{:<26} {:>8} {:>12} {:>11} {:>12}",
        "policy", "packets", "differences", "documented", "unexplained"
    );
    for (r, s) in &results {
        println!(
            "{:<26} {:>8} {:>12} {:>11} {:>12}{}",
            r.case.name,
            s.total.probes,
            s.total.differences,
            s.total.explained,
            s.unexplained_count,
            if r.harness.is_empty() {
                ""
            } else {
                "  (run not valid)"
            }
        );
    }
    println!(
        "{} packets in {:.0} s: {}",
        results.iter().map(|(_, s)| s.total.probes).sum::<usize>(),
        secs,
        if ok {
            "no unexplained difference"
        } else {
            "FAILED: unexplained differences or an invalid run (see above)"
        }
    );
    if let Some(md) = &args.markdown {
        if let Some(d) = md.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(d).with_context(|| d.display().to_string())?;
        }
        std::fs::write(md, markdown(&args, &results, secs))
            .with_context(|| md.display().to_string())?;
        println!("wrote {}", md.display());
    }
    Ok(ok)
}
