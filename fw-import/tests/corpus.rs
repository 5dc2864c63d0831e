//! The corpus: rule sets shaped like the ones found in public repositories (see
//! tests/corpus/README.md for where each comes from), each imported as found, with the outcome
//! it must have: imported (these ports, these notes) or refused (these lines, for this reason).

use std::path::Path;

use fw_import::{ImportError, ImportOptions, Imported, ProblemKind, iptables, nft, ufw};

enum Expect {
    Imports {
        /// `Rule::describe()` of each rule, in order.
        rules: &'static [&'static str],
        /// Words some note must contain, one entry per note looked for.
        notes: &'static [&'static str],
    },
    Refused {
        /// The lines named, in order, and the kind of each problem.
        problems: &'static [(usize, ProblemKind)],
        /// Words the message must contain.
        says: &'static [&'static str],
    },
}

struct Case {
    files: &'static [&'static str],
    iface: Option<&'static str>,
    ignore_output: bool,
    expect: Expect,
}

const fn case(files: &'static [&'static str], expect: Expect) -> Case {
    Case {
        files,
        iface: None,
        ignore_output: false,
        expect,
    }
}

use Expect::*;
use ProblemKind::*;

const CASES: &[Case] = &[
    case(
        &["centos7-webserver.rules"],
        Imports {
            rules: &[
                "22/tcp from anywhere",
                "80/tcp from anywhere",
                "443/tcp from anywhere",
            ],
            notes: &[
                "FORWARD rules (line 8) are not imported",
                "REJECT (line 14)",
            ],
        },
    ),
    case(
        &["centos7-default.rules"],
        Refused {
            problems: &[(11, NotEquivalent), (12, NotEquivalent)],
            says: &["-p esp", "-p ah", "other protocols are dropped"],
        },
    ),
    case(
        &["debian-persistent.rules"],
        Imports {
            rules: &[
                "22/tcp from anywhere",
                "80/tcp from anywhere",
                "443/tcp from anywhere",
            ],
            notes: &[
                "Line 7 matches loopback destinations",
                "conntrack's INVALID (line 9)",
            ],
        },
    ),
    case(
        &["web_host_protected.sh"],
        Imports {
            rules: &["22/tcp from anywhere", "80/tcp from anywhere"],
            notes: &["IPv4 rules only"],
        },
    ),
    case(
        &["ipt-variables.sh"],
        Imports {
            rules: &[
                "25/tcp from anywhere",
                "80/tcp from anywhere",
                "443/tcp from anywhere",
                "22/tcp only from 192.0.2.10, 192.0.2.11",
            ],
            notes: &[],
        },
    ),
    case(
        &["arch-simple-stateful.rules"],
        Imports {
            rules: &[
                "53/udp from anywhere",
                "22/tcp from anywhere",
                "80/tcp from anywhere",
            ],
            notes: &["REJECT (lines 14, 15, 16)"],
        },
    ),
    case(
        &["docker-host.rules"],
        Imports {
            rules: &["22/tcp from anywhere"],
            notes: &[
                "Line 13 forwards packets to 172.17.0.2:80",
                "Rules for docker0 (line 12)",
                "MASQUERADE",
                "FORWARD rules",
            ],
        },
    ),
    case(
        &["anti-ddos-mangle.rules"],
        Imports {
            rules: &[
                "22/tcp from anywhere",
                "80/tcp from anywhere",
                "443/tcp from anywhere",
            ],
            notes: &[],
        },
    ),
    case(
        &["anti-ddos-martians-only.rules"],
        Imports {
            rules: &[
                "22/tcp from anywhere",
                "80/tcp from anywhere",
                "443/tcp from anywhere",
            ],
            notes: &[],
        },
    ),
    case(
        &["ssh-bruteforce-recent.sh"],
        Imports {
            rules: &["22/tcp from anywhere", "80/tcp from anywhere"],
            notes: &[
                "(line 8) becomes `limit = \"4/1m\", ban_after = 1, ban_for = \"1m\"` on 22/tcp",
                "(line 10) becomes `total = \"25/1m\"` on 80/tcp",
                "its burst of 100 is not carried",
            ],
        },
    ),
    case(
        &["accept-policy-with-drops.rules"],
        Refused {
            problems: &[(5, NotEquivalent), (6, NotEquivalent)],
            says: &[
                "cannot drop one port",
                "port 3306",
                "port 6379",
                "make the INPUT policy DROP",
            ],
        },
    ),
    case(
        &["accept-policy-blocklist.rules"],
        Imports {
            rules: &[],
            notes: &["replies from blocked sources", "REJECT (line 10)"],
        },
    ),
    case(
        &["cloudflare-only.rules"],
        Imports {
            rules: &[
                "22/tcp from anywhere",
                "80/tcp only from 103.21.244.0/22, 141.101.64.0/18, 173.245.48.0/20",
                "443/tcp only from 103.21.244.0/22, 141.101.64.0/18, 173.245.48.0/20",
            ],
            notes: &[],
        },
    ),
    case(
        &["output-drop.rules"],
        Refused {
            problems: &[(4, NeedsOption)],
            says: &["--ignore-output"],
        },
    ),
    Case {
        files: &["output-drop.rules"],
        iface: None,
        ignore_output: true,
        expect: Imports {
            rules: &["22/tcp from anywhere"],
            notes: &["WARNING: these iptables rules filter outgoing traffic (line 4)"],
        },
    },
    case(
        &["iface-rules.sh"],
        Refused {
            problems: &[(5, NeedsOption), (6, NeedsOption), (7, NeedsOption)],
            says: &["--iface eth0", "--iface eth1"],
        },
    ),
    Case {
        files: &["iface-rules.sh"],
        iface: Some("eth0"),
        ignore_output: false,
        expect: Imports {
            rules: &["22/tcp from anywhere", "443/tcp from anywhere"],
            notes: &[],
        },
    },
    case(
        &["redirect-8080.rules"],
        Imports {
            rules: &[
                "8080/tcp from anywhere",
                "22/tcp from anywhere",
                "80/tcp from anywhere  (redirected to port 8080 (nat table))",
            ],
            notes: &[
                "Port 80/tcp is allowed because the nat table redirects it to port 8080 (line 14)",
            ],
        },
    ),
    case(
        &["ssh-from-lan-only.sh"],
        Imports {
            rules: &[
                "22/tcp only from 10.0.0.0/8",
                "3306/tcp only from 192.0.2.10/31, 192.0.2.12/30, 192.0.2.16/30, 192.0.2.20",
            ],
            notes: &["ICMP types other than echo and errors"],
        },
    ),
    case(
        &["ufw-user.rules", "ufw-user6.rules"],
        Imports {
            rules: &[
                "22/tcp from anywhere",
                "80/tcp from anywhere",
                "443/tcp from anywhere",
                "5432/tcp only from 192.168.0.0/24",
            ],
            notes: &["before.rules"],
        },
    ),
    case(
        &["ufw-limit-ssh.rules"],
        Imports {
            rules: &["22/tcp from anywhere", "443/tcp from anywhere"],
            notes: &["becomes `limit = \"6/30s\", ban_after = 1, ban_for = \"30s\"` on 22/tcp"],
        },
    ),
    case(
        &["ufw-status-numbered.txt"],
        Imports {
            rules: &[
                "22/tcp from anywhere",
                "80/tcp from anywhere",
                "443/tcp from anywhere",
                "3000/tcp only from 192.168.1.0/24",
                "53/tcp from anywhere",
                "53/udp from anywhere",
            ],
            notes: &["`ufw status` does not show the default policies"],
        },
    ),
    case(
        &["nft-arch-tcp-udp.json"],
        Imports {
            rules: &[
                "53/udp from anywhere",
                "80/tcp from anywhere",
                "443/tcp from anywhere",
                "22/tcp only from 192.0.2.0/28, 198.51.100.7",
            ],
            notes: &["REJECT (lines 13, 14, 15)"],
        },
    ),
    case(
        &["nft-webserver.json"],
        Refused {
            problems: &[(7, NotEquivalent)],
            says: &["fw applies one policy to IPv4 and IPv6"],
        },
    ),
    case(
        &["nft-limit.json"],
        Imports {
            rules: &["22/tcp from anywhere", "443/tcp from anywhere"],
            notes: &[
                "`limit rate 10/minute burst 5 packets` (line 4) becomes `total = \"10/1m\"` on 22/tcp",
            ],
        },
    ),
];

/// What the flood defences of an imported policy must be: the default, the `[[block]]`
/// sources, and each rule's limit (`Rule::describe()` → the limit's TOML words).
struct Flood {
    file: &'static str,
    default_accept: bool,
    blocks: &'static [&'static str],
    limits: &'static [(&'static str, &'static str)],
}

const FLOOD: &[Flood] = &[
    Flood {
        file: "accept-policy-blocklist.rules",
        default_accept: true,
        blocks: &[
            "185.220.101.0/24",
            "45.155.205.0/24",
            "193.32.162.0/24",
            "89.248.165.0/24",
        ],
        limits: &[],
    },
    Flood {
        file: "ssh-bruteforce-recent.sh",
        default_accept: false,
        blocks: &[],
        limits: &[
            ("22/tcp from anywhere", "4/1m ban=1/60s"),
            ("80/tcp from anywhere", "total=25/1m"),
        ],
    },
    Flood {
        file: "ufw-limit-ssh.rules",
        default_accept: false,
        blocks: &[],
        limits: &[("22/tcp from anywhere", "6/30s ban=1/30s")],
    },
    Flood {
        file: "nft-limit.json",
        default_accept: false,
        blocks: &[],
        limits: &[("22/tcp from anywhere", "total=10/1m")],
    },
    Flood {
        file: "anti-ddos-mangle.rules",
        default_accept: false,
        blocks: &["224.0.0.0/3", "169.254.0.0/16"],
        limits: &[],
    },
];

#[test]
fn flood_defences_of_the_corpus_carry_over() {
    let mut failures = Vec::new();
    for f in FLOOD {
        let c = CASES
            .iter()
            .find(|c| c.files[0] == f.file)
            .unwrap_or_else(|| panic!("{} has no case", f.file));
        let i = match run(c) {
            Ok(i) => i,
            Err(e) => {
                failures.push(format!("{}: refused\n{e}", f.file));
                continue;
            }
        };
        let p = &i.policy;
        if p.default.is_drop() == f.default_accept {
            failures.push(format!("{}: default {:?}", f.file, p.default));
        }
        let blocks: Vec<String> = p.block_sources().map(|c| c.to_string()).collect();
        if blocks != f.blocks {
            failures.push(format!("{}: blocks {blocks:?}", f.file));
        }
        let limits: Vec<(String, String)> = p
            .rules
            .iter()
            .filter_map(|r| p.limits.get(&r.id).map(|l| (r.describe(), limit_words(l))))
            .collect();
        let want: Vec<(String, String)> = f
            .limits
            .iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect();
        if limits != want {
            failures.push(format!("{}: limits {limits:?}\n{}", f.file, i.toml));
        }
        let back = fw_policy::parse_policy("imported.toml", &i.toml).unwrap();
        assert_eq!(&back, p, "{}", f.file);
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

/// A limit in the policy file's words: `rate burst=B per=/P total=T ban=N/S`.
fn limit_words(l: &fw_policy::Limit) -> String {
    let mut w = Vec::new();
    if let Some(r) = l.rate {
        w.push(r.to_string());
    }
    if let Some(b) = l.burst {
        w.push(format!("burst={b}"));
    }
    if l.rate.is_some() && l.per4 != 32 {
        w.push(format!("per=/{}", l.per4));
    }
    if let Some(t) = l.total {
        w.push(format!("total={t}"));
    }
    if let Some(n) = l.ban_after {
        w.push(format!("ban={n}/{}s", l.ban_secs));
    }
    w.join(" ")
}

fn run(c: &Case) -> Result<Imported, ImportError> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/corpus");
    let read =
        |f: &str| std::fs::read_to_string(dir.join(f)).unwrap_or_else(|e| panic!("{f}: {e}"));
    let opts = ImportOptions {
        iface: c.iface.map(String::from),
        ignore_output: c.ignore_output,
        ..ImportOptions::default()
    };
    let first = c.files[0];
    if first.starts_with("ufw") {
        let inputs: Vec<(String, String)> =
            c.files.iter().map(|f| (f.to_string(), read(f))).collect();
        ufw::import(&inputs, &opts)
    } else if first.ends_with(".json") {
        nft::import(first, &read(first), &opts)
    } else {
        iptables::import(first, &read(first), &opts)
    }
}

#[test]
fn every_rule_set_of_the_corpus_has_its_outcome() {
    let mut failures = Vec::new();
    for c in CASES {
        let name = format!(
            "{:?} (iface {:?}, ignore_output {})",
            c.files, c.iface, c.ignore_output
        );
        match (run(c), &c.expect) {
            (Ok(i), Imports { rules, notes }) => {
                let got: Vec<String> = i.policy.rules.iter().map(|r| r.describe()).collect();
                if got != *rules {
                    failures.push(format!("{name}: rules {got:#?}"));
                }
                for n in *notes {
                    if !i.notes.iter().any(|x| x.contains(n)) {
                        failures.push(format!("{name}: no note with {n:?} in {:#?}", i.notes));
                    }
                }
                // What is written reads back as the policy that was checked.
                let back = fw_policy::parse_policy("imported.toml", &i.toml).unwrap();
                assert_eq!(back.rules, i.policy.rules, "{name}");
            }
            (Err(e), Refused { problems, says }) => {
                let got: Vec<(usize, ProblemKind)> = e
                    .all()
                    .iter()
                    .map(|p| (p.line.unwrap_or(0), p.kind))
                    .collect();
                if got != *problems {
                    failures.push(format!("{name}: problems {got:?}\n{e}"));
                }
                let msg = e.to_string();
                for s in *says {
                    if !msg.contains(s) {
                        failures.push(format!("{name}: message lacks {s:?}:\n{msg}"));
                    }
                }
            }
            (Ok(i), Refused { .. }) => failures.push(format!("{name}: imported\n{}", i.toml)),
            (Err(e), Imports { .. }) => failures.push(format!("{name}: refused\n{e}")),
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

#[test]
fn every_corpus_file_has_a_case() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/corpus");
    for e in std::fs::read_dir(&dir).unwrap() {
        let name = e.unwrap().file_name().into_string().unwrap();
        if name == "README.md" || name.ends_with(".nft") {
            continue;
        }
        assert!(
            CASES.iter().any(|c| c.files.contains(&name.as_str())),
            "{name} has no case"
        );
    }
}
