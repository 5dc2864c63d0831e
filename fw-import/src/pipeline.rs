//! From loaded chains to an imported policy: walk each family's chain, gather the policy it
//! asks for, check it packet kind by packet kind with fw's `decide()`, and report every problem
//! of the file at once.

use std::collections::BTreeMap;

use crate::{
    Family, FamilyExt, ImportError, ImportOptions, Imported, ProblemKind,
    check::{self, Outcome},
    error::Problem,
    gather::{Features, Run},
    iptables::load::Loaded,
    report::Report,
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
    let features = Features::gather(&runs);
    let established = !features.established.is_empty();
    let s0 = !features.strict.is_empty();
    let n0 = !features.nrs.is_empty() && established;
    let mut flags = vec![(s0, n0), (!s0, n0), (s0, !n0), (!s0, !n0)];
    flags.retain(|(_, n)| !*n || established);
    flags.dedup();
    // Default drop first (a chain that ends in a catch-all DROP is default-drop whatever its
    // policy says); `default = "accept"` only for a chain whose policy is ACCEPT.
    let defaults: &[bool] = if features.policy_accept {
        &[false, true]
    } else {
        &[false]
    };
    let combos: Vec<(bool, bool, bool)> = defaults
        .iter()
        .flat_map(|&a| flags.iter().map(move |&(s, n)| (s, n, a)))
        .collect();
    let mut best: Option<((bool, bool, bool), Outcome)> = None;
    // Without a combination that decides as the rules do: the one with the fewest lines to
    // blame, nearest to what the rules say.
    let mut fewest: Option<(Vec<Problem>, bool)> = None;
    for &(s, n, a) in &combos {
        let policy = features.policy(&families, s, n, a);
        let out = check::check(&runs, &policy);
        // The first combination that decides as iptables does, nearest to what the rules say.
        if out.errors.is_empty() {
            best = Some(((s, n, a), out));
            break;
        }
        let ps = check::problems(&runs, &features, &policy, &out.errors);
        // Under an ACCEPT policy with drops, the default-accept attempt names the lines fw
        // cannot carry (port drops), which says more than "the default is ACCEPT".
        let names_lines = a && ps.iter().all(|p| p.line.is_some());
        let better = fewest.as_ref().is_none_or(|(f, named)| {
            let blames_default = f.iter().any(|p| p.kind == ProblemKind::DefaultAccept);
            (names_lines && !named && blames_default)
                || (names_lines == *named && ps.len() < f.len())
        });
        if better {
            fewest = Some((ps, names_lines));
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
        Some(((strict, nrs, accept), outcome)) => {
            let mut policy = features.policy(&families, strict, nrs, accept);
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

/// Redirects of the nat table, by family: (protocol, pre-NAT port) → the port INPUT sees.
pub(crate) type NatMap = BTreeMap<(u8, u16), u16>;
