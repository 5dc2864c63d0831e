//! Shell scripts around the iptables commands: simple variables (`IPT=/sbin/iptables`,
//! `SSH_PORT=22`) expanded, `for` loops over word lists unrolled, `if` blocks read as if their
//! condition held (noted), `case "$1" in start)` read for its `start` branch, several commands
//! on one line split, and redirections of output dropped. What the importer cannot follow is a
//! [`Problem`] naming the line.

use std::collections::HashMap;

use super::lex::Line;
use crate::{Problem, ProblemKind};

#[derive(Default)]
pub(crate) struct Expanded {
    pub lines: Vec<Line>,
    /// Lines that change no rule, with what they are.
    pub skipped: Vec<(Line, String)>,
    pub problems: Vec<Problem>,
}

/// Lines of an iptables-save file are left alone.
fn is_save_line(t: &str) -> bool {
    t.starts_with('-')
        || t.starts_with('*')
        || t.starts_with(':')
        || t.starts_with('[')
        || t.starts_with('#')
        || t == "COMMIT"
}

/// A plain `NAME=value` assignment (optionally `export`/`readonly`/`local`).
fn assignment(t: &str) -> Option<(&str, &str)> {
    let t = ["export ", "readonly ", "local ", "declare "]
        .iter()
        .find_map(|p| t.strip_prefix(p))
        .unwrap_or(t)
        .trim();
    let (name, value) = t.split_once('=')?;
    let ok = !name.is_empty()
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        && !name.starts_with(|c: char| c.is_ascii_digit());
    ok.then_some((name, value.trim()))
}

fn unquote(v: &str) -> String {
    let v = v.trim();
    if v.len() >= 2
        && ((v.starts_with('"') && v.ends_with('"')) || (v.starts_with('\'') && v.ends_with('\'')))
    {
        return v[1..v.len() - 1].to_string();
    }
    v.to_string()
}

/// Split at unquoted `;`, `&&` and `||` (the idioms `iptables -C … || iptables -A …` and
/// `iptables -D … || true` read as both commands, the second noted as allowed to fail).
fn split_commands(t: &str) -> Vec<(String, bool)> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let (mut sq, mut dq) = (false, false);
    let mut may_fail = false;
    let mut it = t.chars().peekable();
    while let Some(c) = it.next() {
        match c {
            '\'' if !dq => sq = !sq,
            '"' if !sq => dq = !dq,
            ';' | '&' | '|' if !sq && !dq => {
                let double = it.peek() == Some(&c);
                if c == ';' || double {
                    if double {
                        it.next();
                    }
                    let next_fails = c == '|';
                    out.push((std::mem::take(&mut cur), may_fail || next_fails));
                    may_fail = next_fails;
                    continue;
                }
            }
            _ => {}
        }
        cur.push(c);
    }
    out.push((cur, may_fail));
    out.into_iter()
        .map(|(s, f)| (s.trim().to_string(), f))
        .filter(|(s, _)| !s.is_empty())
        .collect()
}

/// Drop output redirections (`>/dev/null`, `2>&1`, `> file`): they change no rule.
fn strip_redirections(t: &str) -> (String, bool) {
    let words: Vec<&str> = t.split_whitespace().collect();
    let mut out: Vec<&str> = Vec::new();
    let mut silenced = false;
    let mut i = 0;
    while i < words.len() {
        let w = words[i];
        let redir = w.trim_start_matches(|c: char| c.is_ascii_digit() || c == '&');
        if redir.starts_with('>') {
            silenced = true;
            if redir.trim_start_matches('>').is_empty() {
                i += 1; // `> file`: the file is the next word
            }
        } else {
            out.push(w);
        }
        i += 1;
    }
    (out.join(" "), silenced)
}

struct Expander {
    vars: HashMap<String, String>,
    out: Expanded,
    /// Open `if` blocks: (line, in an `else` branch, whether a branch changed rules).
    ifs: Vec<(usize, bool, [bool; 2])>,
}

fn expand_vars(t: &str, vars: &HashMap<String, String>) -> String {
    let mut out = String::new();
    let mut sq = false;
    let cs: Vec<char> = t.chars().collect();
    let mut i = 0;
    while i < cs.len() {
        let c = cs[i];
        if c == '\'' {
            sq = !sq;
        }
        if c == '$' && !sq {
            let (name, len) = if cs.get(i + 1) == Some(&'{') {
                let end = cs[i + 2..].iter().position(|c| *c == '}');
                match end {
                    Some(e) => (cs[i + 2..i + 2 + e].iter().collect::<String>(), e + 3),
                    None => (String::new(), 0),
                }
            } else {
                let n: String = cs[i + 1..]
                    .iter()
                    .take_while(|c| c.is_ascii_alphanumeric() || **c == '_')
                    .collect();
                let l = n.len() + 1;
                (n, l)
            };
            if let Some(v) = vars.get(&name) {
                out.push_str(v);
                i += len;
                continue;
            }
        }
        out.push(c);
        i += 1;
    }
    out
}

fn is_iptables(t: &str) -> bool {
    t.split_whitespace()
        .find(|w| *w != "sudo" && !w.contains('='))
        .is_some_and(|w| {
            let b = w.rsplit('/').next().unwrap_or(w);
            b.starts_with("iptables") || b.starts_with("ip6tables")
        })
}

impl Expander {
    fn skip(&mut self, l: &Line, what: impl Into<String>) {
        self.out.skipped.push((l.clone(), what.into()));
    }

    fn problem(&mut self, l: &Line, value: &str, message: impl Into<String>) {
        self.out.problems.push(Problem::new(
            ProblemKind::Unsupported,
            l.no,
            value,
            message,
            l.text.trim(),
        ));
    }

    fn lines(&mut self, lines: &[Line]) {
        let mut i = 0;
        while i < lines.len() {
            i += self.line(lines, i);
        }
    }

    /// Handle `lines[i]`; returns how many lines it took.
    fn line(&mut self, lines: &[Line], i: usize) -> usize {
        let l = &lines[i];
        let t = l.text.trim();
        if t.is_empty() || is_save_line(t) {
            self.out.lines.push(l.clone());
            return 1;
        }
        let first = t.split_whitespace().next().unwrap_or("");
        if first == "for" {
            return self.for_loop(lines, i);
        }
        if first == "case" {
            return self.case(lines, i);
        }
        if t.ends_with("() {") || t.ends_with("(){") || first == "function" {
            self.skip(
                l,
                "defines a shell function (its lines are read where they stand)",
            );
            return 1;
        }
        for (part, may_fail) in split_commands(t) {
            let line = Line {
                no: l.no,
                text: part,
                may_fail: may_fail || l.may_fail,
            };
            self.command(&line);
        }
        1
    }

    fn command(&mut self, l: &Line) {
        let t = l.text.trim().to_string();
        let first = t.split_whitespace().next().unwrap_or("");
        match first {
            "if" | "elif" => {
                if first == "if" {
                    self.ifs.push((l.no, false, [false; 2]));
                }
                self.skip(
                    l,
                    "shell `if`: the lines inside are read as if its condition held",
                );
                return;
            }
            "else" => {
                if let Some(top) = self.ifs.last_mut() {
                    top.1 = true;
                }
                self.skip(l, "shell `else`");
                return;
            }
            "fi" => {
                if let Some((no, _, [a, b])) = self.ifs.pop()
                    && a
                    && b
                {
                    self.problem(
                        l,
                        "fi",
                        format!("both branches of the `if` on line {no} change rules: the importer cannot tell which one runs; keep one"),
                    );
                }
                self.skip(l, "end of `if`");
                return;
            }
            "then" | "do" | "done" | "esac" | ";;" | "{" | "}" => {
                self.skip(l, "shell control flow");
                return;
            }
            _ => {}
        }
        if let Some((name, value)) = assignment(&t) {
            let quoted = value.len() >= 2
                && ((value.starts_with('"') && value.ends_with('"'))
                    || (value.starts_with('\'') && value.ends_with('\'')));
            if quoted || !value.contains(char::is_whitespace) {
                let v = expand_vars(&unquote(value), &self.vars);
                if v.contains("$(") || v.contains('`') {
                    self.skip(
                        l,
                        format!("sets {name} from a command (its value is unknown here)"),
                    );
                } else {
                    self.skip(l, format!("sets the shell variable {name}"));
                    self.vars.insert(name.to_string(), v);
                }
                return;
            }
        }
        let expanded = expand_vars(&t, &self.vars);
        let (text, silenced) = strip_redirections(&expanded);
        if is_iptables(&text) {
            if let Some(top) = self.ifs.last_mut() {
                let branch = usize::from(top.1);
                top.2[branch] = true;
            }
            if text.contains("$(") || text.contains('`') {
                self.problem(
                    l,
                    if text.contains("$(") { "$(" } else { "`" },
                    "command substitution: the importer cannot run commands; run the script with `iptables` replaced by `echo iptables` and import what it prints",
                );
                return;
            }
            if let Some(pos) = text.find('$') {
                let name: String = text[pos + 1..]
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || "_{}".contains(*c))
                    .collect();
                self.problem(
                    l,
                    &format!("${name}"),
                    "a shell variable this file does not set (set it above, e.g. `NAME=value`, or run the script with `iptables` replaced by `echo iptables` and import what it prints)",
                );
                return;
            }
        }
        self.out.lines.push(Line {
            no: l.no,
            text,
            may_fail: l.may_fail || silenced,
        });
    }

    /// `for x in a b c; do … done`, on one line or several.
    fn for_loop(&mut self, lines: &[Line], i: usize) -> usize {
        let l = &lines[i];
        let t = expand_vars(l.text.trim(), &self.vars);
        let parse = || -> Option<(String, Vec<String>, String)> {
            let rest = t.strip_prefix("for ")?;
            let (var, rest) = rest.split_once(" in ")?;
            let (words, body) = match rest.split_once(';') {
                Some((w, b)) => (w, b.trim().strip_prefix("do").unwrap_or(b).to_string()),
                None => (rest, String::new()),
            };
            let words = words.split_whitespace().map(unquote).collect();
            Some((var.trim().to_string(), words, body))
        };
        let Some((var, words, inline)) = parse() else {
            self.problem(
                l,
                "for",
                "a `for` loop the importer cannot read (expected `for VAR in WORDS; do`)",
            );
            return 1;
        };
        // The body: the rest of this line up to `done`, or the lines up to the matching `done`.
        let (body, used): (Vec<Line>, usize) = if let Some(b) = inline.strip_suffix("done") {
            let b = b.trim().trim_end_matches(';').to_string();
            (
                vec![Line {
                    no: l.no,
                    text: b,
                    may_fail: false,
                }],
                1,
            )
        } else {
            let mut depth = 1;
            let mut j = i + 1;
            let mut body = Vec::new();
            if !inline.trim().is_empty() {
                body.push(Line {
                    no: l.no,
                    text: inline.clone(),
                    may_fail: false,
                });
            }
            while j < lines.len() {
                let w = lines[j].text.trim();
                let f = w.split_whitespace().next().unwrap_or("");
                if f == "for" || f == "while" || f == "until" {
                    depth += 1;
                }
                if f == "done" || w.ends_with("; done") || w.ends_with(";done") {
                    depth -= 1;
                    if depth == 0 {
                        break;
                    }
                }
                if !(f == "do" && w == "do") {
                    body.push(lines[j].clone());
                }
                j += 1;
            }
            (body, j + 1 - i)
        };
        self.skip(
            l,
            format!(
                "shell `for` over {} values: its body is read once for each",
                words.len()
            ),
        );
        for w in words {
            let saved = self.vars.insert(var.clone(), w);
            self.lines(&body);
            match saved {
                Some(v) => self.vars.insert(var.clone(), v),
                None => self.vars.remove(&var),
            };
        }
        used.min(lines.len() - i)
    }

    /// `case "$1" in start) … ;; stop) … ;; esac`: the `start` branch is what sets up the
    /// firewall; other branches are skipped (noted).
    fn case(&mut self, lines: &[Line], i: usize) -> usize {
        let mut j = i + 1;
        let mut branches: Vec<(String, Vec<Line>)> = Vec::new();
        while j < lines.len() && lines[j].text.trim() != "esac" {
            let t = lines[j].text.trim();
            let label = t
                .split_once(')')
                .filter(|(lbl, _)| !lbl.contains(' ') || lbl.contains('|'))
                .map(|(lbl, rest)| (lbl.trim_matches(|c| c == '(' || c == '"').to_string(), rest));
            match label {
                Some((lbl, rest)) if !t.starts_with('-') && !lbl.is_empty() => {
                    let mut body = Vec::new();
                    let rest = rest.trim().trim_end_matches(";;").trim();
                    if !rest.is_empty() {
                        body.push(Line {
                            no: lines[j].no,
                            text: rest.to_string(),
                            may_fail: false,
                        });
                    }
                    branches.push((lbl, body));
                }
                _ => {
                    if let Some(b) = branches.last_mut()
                        && t != ";;"
                    {
                        b.1.push(lines[j].clone());
                    }
                }
            }
            j += 1;
        }
        let start = branches
            .iter()
            .position(|(lbl, _)| lbl.split('|').any(|x| x == "start"));
        let chosen = start.or_else(|| {
            let with: Vec<usize> = (0..branches.len())
                .filter(|k| branches[*k].1.iter().any(|l| is_iptables(&l.text)))
                .collect();
            (with.len() == 1).then(|| with[0])
        });
        match chosen {
            Some(k) => {
                self.skip(&lines[i], format!("shell `case`: the `{}` branch is read, the others skipped", branches[k].0));
                let body = branches[k].1.clone();
                self.lines(&body);
            }
            None => self.problem(
                &lines[i],
                "case",
                "several branches of this `case` change rules and none is `start`: the importer cannot tell which runs",
            ),
        }
        (j + 1 - i).min(lines.len() - i)
    }
}

pub(crate) fn expand(lines: Vec<Line>) -> Expanded {
    let mut e = Expander {
        vars: HashMap::new(),
        out: Expanded {
            lines: Vec::new(),
            skipped: Vec::new(),
            problems: Vec::new(),
        },
        ifs: Vec::new(),
    };
    e.lines(&lines);
    e.out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(text: &str) -> Expanded {
        expand(super::super::lex::logical_lines(text))
    }

    fn texts(e: &Expanded) -> Vec<String> {
        e.lines.iter().map(|l| l.text.clone()).collect()
    }

    #[test]
    fn variables_loops_and_several_commands_per_line() {
        let e = run(
            "IPT=/sbin/iptables\nPORTS=\"80 443\"\nfor p in $PORTS; do $IPT -A INPUT -p tcp --dport $p -j ACCEPT; done\n$IPT -F; $IPT -X && ${IPT} -P INPUT DROP >/dev/null 2>&1\n",
        );
        assert_eq!(
            texts(&e),
            [
                "/sbin/iptables -A INPUT -p tcp --dport 80 -j ACCEPT",
                "/sbin/iptables -A INPUT -p tcp --dport 443 -j ACCEPT",
                "/sbin/iptables -F",
                "/sbin/iptables -X",
                "/sbin/iptables -P INPUT DROP",
            ]
        );
        assert!(e.lines[4].may_fail && !e.lines[2].may_fail);
        assert!(e.problems.is_empty());
        assert_eq!(e.lines[0].no, 3);
    }

    #[test]
    fn multi_line_loops_ifs_and_case() {
        let e = run(
            "for ip in 192.0.2.1 192.0.2.2\ndo\n  iptables -A INPUT -s $ip -j ACCEPT\ndone\nif [ -x /sbin/modprobe ]; then\n  modprobe nf_conntrack\nfi\ncase \"$1\" in\n  start)\n    iptables -P INPUT DROP\n    ;;\n  stop)\n    iptables -F\n    ;;\nesac\n",
        );
        assert_eq!(
            texts(&e),
            [
                "iptables -A INPUT -s 192.0.2.1 -j ACCEPT",
                "iptables -A INPUT -s 192.0.2.2 -j ACCEPT",
                "modprobe nf_conntrack",
                "iptables -P INPUT DROP",
            ]
        );
        assert!(e.problems.is_empty(), "{:?}", e.problems);
    }

    #[test]
    fn unknown_variables_and_two_branches_are_problems() {
        let e = run(
            "iptables -A INPUT -s $ADMIN -j ACCEPT\nif x; then\niptables -P INPUT DROP\nelse\niptables -P INPUT ACCEPT\nfi\n",
        );
        let values: Vec<&str> = e.problems.iter().map(|p| p.value.as_str()).collect();
        assert_eq!(values, ["$ADMIN", "fi"]);
    }
}
