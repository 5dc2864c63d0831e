//! From loaded chains to an imported policy: walk each family's chain, gather the policy it
//! asks for, check it packet kind by packet kind with fw's `decide()`, and report every problem
//! of the file at once.

use std::collections::BTreeMap;

use crate::{
    Family, FamilyExt, ImportError, ImportOptions, Imported, ProblemKind,
    check::{self, Outcome},
    error::Problem,
    features::{Missing, refusal},
    gather::{Features, Run},
    iptables::load::Loaded,
    report::Report,
    translate::Disp,
};

/// The policy for what `loaded` holds; nothing unless the whole file imports.
pub(crate) fn import_loaded(
    file: &str,
    loaded: Loaded,
    opts: &ImportOptions,
) -> Result<Imported, ImportError> {
    let families: Vec<Family> = [Family::V4, Family::V6]
        .into_iter()
        .filter(|f| loaded.chains[f.idx()].present)
        .collect();
    let mut problems: Vec<Problem> = loaded.problems.clone();
    if families.is_empty() {
        if !problems.is_empty() {
            return Err(ImportError::problems(file, problems));
        }
        return Err(ImportError::Nothing {
            file: file.to_string(),
            reason: "no INPUT rules or INPUT policy in the filter table (expected iptables-save output or iptables commands)".into(),
        });
    }
    let runs: Vec<Run> = families
        .iter()
        .map(|&fam| {
            let c = &loaded.chains[fam.idx()];
            Run::new(fam, &c.input, c.policy.as_ref(), &loaded.nat[fam.idx()])
        })
        .collect();
    problems.extend(needs_missing_features(&runs));
    let features = Features::gather(&runs);
    let established = !features.established.is_empty();
    let s0 = !features.strict.is_empty();
    let n0 = !features.nrs.is_empty() && established;
    let mut combos = vec![(s0, n0), (!s0, n0), (s0, !n0), (!s0, !n0)];
    combos.retain(|(_, n)| !*n || established);
    combos.dedup();
    let mut best: Option<((bool, bool), Outcome)> = None;
    // Without a combination that decides as the rules do: the one with the fewest lines to
    // blame, nearest to what the rules say.
    let mut fewest: Option<(Vec<Problem>, usize)> = None;
    for &(s, n) in &combos {
        let policy = features.policy(&families, s, n);
        let out = check::check(&runs, &policy);
        // The first combination that decides as iptables does, nearest to what the rules say.
        if out.errors.is_empty() {
            best = Some(((s, n), out));
            break;
        }
        let ps = check::problems(&runs, &features, &policy, &out.errors);
        if fewest.as_ref().is_none_or(|(f, _)| ps.len() < f.len()) {
            let n = ps.len();
            fewest = Some((ps, n));
        }
    }
    match best {
        None => {
            let (ps, _) = fewest.unwrap_or_default();
            // A line already refused for what it is needs no second message for where it is.
            let refused: std::collections::HashSet<Option<usize>> =
                problems.iter().map(|p| p.line).collect();
            problems.extend(ps.into_iter().filter(|p| !refused.contains(&p.line)));
        }
        Some(_) if !problems.is_empty() => {}
        Some(((strict, nrs), outcome)) => {
            let mut policy = features.policy(&families, strict, nrs);
            policy.interfaces = opts.iface.iter().cloned().collect();
            let report = Report {
                file,
                tool: loaded.tool,
                loaded_log: &loaded.log,
                loaded_notes: &loaded.notes,
                runs: &runs,
                features: &features,
                policy: &policy,
                families: &families,
                outcome: &outcome,
                suggested: (s0, n0),
            };
            let mut imported = report.finish();
            if !loaded.tool.is_empty() && loaded.tool != "iptables" {
                for n in &mut imported.notes {
                    *n = n.replace("iptables ", &format!("{} ", loaded.tool));
                }
            }
            return Ok(imported);
        }
    }
    Err(ImportError::problems(
        file,
        in_words_of(loaded.tool, problems),
    ))
}

/// Messages say "iptables" for the rules' side; other rule sets get their own name.
fn in_words_of(tool: &str, mut problems: Vec<Problem>) -> Vec<Problem> {
    if !tool.is_empty() && tool != "iptables" {
        for p in &mut problems {
            p.message = p.message.replace("iptables ", &format!("{tool} "));
        }
    }
    problems
}

/// Rules that only a policy feature fw lacks could carry over (see [`crate::features`]).
fn needs_missing_features(runs: &[Run]) -> Vec<Problem> {
    let mut out = Vec::new();
    for run in runs {
        let martian = crate::check::martians(run.fam);
        let last_accept = (0..run.disps.len()).rev().find(|&j| {
            run.live(j)
                && matches!(
                    run.disps[j],
                    Disp::Allow { .. } | Disp::IcmpEcho | Disp::Established
                )
        });
        for (i, d) in run.disps.iter().enumerate() {
            let Disp::SourceDrop { value } = d else {
                continue;
            };
            if !run.live(i) || last_accept.is_none_or(|j| j < i) {
                continue;
            }
            let r = run.rule(i);
            let mut outside = crate::addrset::AddrSet::of(
                r.spec.src.as_ref().map_or(&[][..], |(_, l)| l.as_slice()),
                run.fam,
            );
            if r.spec.src.as_ref().is_some_and(|(neg, _)| *neg) {
                outside = outside.complement(run.fam);
            }
            outside.take(&martian);
            if outside.is_empty() {
                continue;
            }
            if Missing::Blocklist.available() {
                continue;
            }
            out.push(Problem::new(
                ProblemKind::MissingFeature,
                r.line,
                value.clone(),
                format!(
                    "it drops these sources on every port, ahead of what the rules allow; {}",
                    refusal(Missing::Blocklist)
                ),
                r.text.clone(),
            ));
        }
    }
    out
}

/// Redirects of the nat table, by family: (protocol, pre-NAT port) → the port INPUT sees.
pub(crate) type NatMap = BTreeMap<(u8, u16), u16>;
