//! The differential test against iptables, a sample of it (the full run, 100,000 packets per
//! policy, is `cargo xtask diff`): each built-in policy goes into real iptables-legacy in one
//! network namespace and into fw in another, both get the same generated packets (TCP flag
//! combinations, ports, sources, UDP, ICMP, fragments, malformed headers, replies to the host's
//! own connections, inbound handshakes), and every packet one lets through and the other does
//! not must be one of the documented differences (README, "Differential test against
//! iptables"). Root only; each case makes and removes its own namespaces.

use fw_diff::{Options, policies, report};
use fw_lab::TempDir;

/// Packets per policy in the sample: every class gets its share (a few dozen to a hundred).
const SAMPLE: usize = 1_000;

fn run(case: &str) {
    fw_diff::preflight().unwrap_or_else(|e| panic!("{e:#}"));
    let dir = TempDir::new("diff-sample");
    let cases = policies::builtin(&dir, &[case]).unwrap_or_else(|e| panic!("{e:#}"));
    assert_eq!(cases.len(), 1, "no built-in case {case}");
    let opts = Options {
        packets: SAMPLE,
        progress: false,
        ..Options::default()
    };
    let r = fw_diff::run_case(&cases[0], &opts).unwrap_or_else(|e| panic!("{e:#}"));
    let s = report::summarize(&r);
    let text = report::text(&r, &s);
    println!("{text}");
    assert!(
        s.total.probes >= SAMPLE,
        "only {} packets were generated",
        s.total.probes
    );
    assert!(
        r.harness.is_empty(),
        "the observation is not trustworthy:\n{text}"
    );
    assert!(
        r.testrun_checked > 0,
        "no packet went through BPF_PROG_TEST_RUN"
    );
    assert!(
        s.ok(&r),
        "fw and iptables decided packets differently, and not as documented:\n{text}"
    );
}

#[test]
fn seed_policy_against_its_iptables_export() {
    run("seed");
}

#[test]
fn seed_policy_with_ssh_from_the_office_against_its_export() {
    run("seed-office");
}

#[test]
fn tutorial_rules_against_their_import() {
    run("tutorial");
}

#[test]
fn tutorial_rules_against_the_strict_seed_policy() {
    run("tutorial-vs-seed");
}

#[test]
fn web_server_rules_against_their_import() {
    run("webserver");
}

#[test]
fn centos_rules_against_their_import() {
    run("centos");
}

#[test]
fn arch_wiki_stateful_chains_against_their_import() {
    run("arch-stateful");
}

#[test]
fn cdn_only_web_ports_against_their_import() {
    run("cdn-only");
}

#[test]
fn mangle_table_anti_ddos_rules_against_their_import() {
    run("anti-ddos");
}
