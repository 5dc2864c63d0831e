//! The importer's cost grows with the rules, not with their square (issue 10: 10,000 rules
//! took 26 s). Not a timing test: the work the check does (rules looked at, source pieces
//! painted, decisions made) is counted for generated rule sets of two sizes, and must grow
//! about as much as the rule count (a quadratic importer grows with its square). The timing
//! of 10,000 and 100,000 rules is in `cargo bench -p fw-import`.

/// A web server's rules with `n` more: ports with and without sources, source lists on one
/// port, drops, across both protocols.
pub fn generated(n: usize) -> String {
    let mut s = String::from(
        "*filter\n:INPUT DROP [0:0]\n:FORWARD DROP [0:0]\n:OUTPUT ACCEPT [0:0]\n\
         -A INPUT -i lo -j ACCEPT\n\
         -A INPUT -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT\n\
         -A INPUT -m conntrack --ctstate INVALID -j DROP\n\
         -A INPUT -p tcp --tcp-flags ALL NONE -j DROP\n",
    );
    for i in 0..n {
        let a = (i >> 8) as u8;
        let b = i as u8;
        let port = 1024 + (i % 60_000) as u16;
        let line = match i % 4 {
            0 => format!("-A INPUT -p tcp --dport {port} -j ACCEPT"),
            1 => format!("-A INPUT -s 10.{a}.{b}.0/24 -p tcp --dport 22 -j ACCEPT"),
            2 => format!("-A INPUT -s 172.16.{b}.{a} -p udp --dport {port} -j ACCEPT"),
            _ => format!("-A INPUT -s 192.168.{a}.{b} -p tcp --dport {port} -j DROP"),
        };
        s.push_str(&line);
        s.push('\n');
    }
    s.push_str("COMMIT\n");
    s
}

#[cfg(test)]
fn work(n: usize) -> u64 {
    use crate::{ImportOptions, iptables};
    let i = iptables::import("generated", &generated(n), &ImportOptions::default())
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(i.policy.rules.len() >= n / 2, "{}", i.policy.rules.len());
    i.work
}

#[cfg(test)]
#[test]
fn import_work_grows_linearly_with_the_rules() {
    let small = work(1_000);
    let large = work(8_000);
    let ratio = large as f64 / small as f64;
    // 8 times the rules: linear is 8 (n log n a little more), quadratic would be 64.
    assert!(
        ratio < 16.0,
        "8x the rules cost {ratio:.1}x the work ({small} -> {large})"
    );
}
