//! Lines and words: iptables-save files and shell scripts of iptables commands.

/// One logical line: physical lines joined where a line ends in `\` (shell continuation).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Line {
    /// 1-based number of its first physical line.
    pub no: usize,
    pub text: String,
    /// A script line whose failure the script ignores (`|| true`, `2>/dev/null`).
    pub may_fail: bool,
}

pub(crate) fn logical_lines(text: &str) -> Vec<Line> {
    let mut out: Vec<Line> = Vec::new();
    let mut pending: Option<Line> = None;
    for (i, raw) in text.lines().enumerate() {
        let raw = raw.strip_suffix('\r').unwrap_or(raw);
        let (body, continues) = match raw.strip_suffix('\\') {
            Some(b) if !raw.trim_start().starts_with('#') => (b.trim_end(), true),
            _ => (raw, false),
        };
        let line = match pending.take() {
            Some(mut p) => {
                p.text.push(' ');
                p.text.push_str(body.trim_start());
                p
            }
            None => Line {
                no: i + 1,
                text: body.to_string(),
                may_fail: false,
            },
        };
        if continues {
            pending = Some(line);
        } else {
            out.push(line);
        }
    }
    out.extend(pending);
    out
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum LexError {
    /// A quote that is never closed.
    Unterminated(char),
    /// Shell syntax beyond plain words (`$VAR`, `;`, `|`, `&&`, redirections, ...).
    Shell(String),
}

/// Split a line into words. Double quotes allow `\"` and `\\` inside; single quotes take
/// everything literally. With `shell`, an unquoted `#` starting a word begins a comment, and
/// other shell syntax is refused rather than misread.
pub(crate) fn words(line: &str, shell: bool) -> Result<Vec<String>, LexError> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut in_word = false;
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            c if c.is_whitespace() => {
                if in_word {
                    out.push(std::mem::take(&mut cur));
                    in_word = false;
                }
            }
            '"' => {
                in_word = true;
                loop {
                    match chars.next() {
                        None => return Err(LexError::Unterminated('"')),
                        Some('"') => break,
                        Some('\\') => match chars.next() {
                            Some(e @ ('"' | '\\' | '$' | '`')) => cur.push(e),
                            Some(e) => {
                                cur.push('\\');
                                cur.push(e);
                            }
                            None => return Err(LexError::Unterminated('"')),
                        },
                        Some(ch @ ('$' | '`')) if shell => {
                            return Err(LexError::Shell(ch.to_string()));
                        }
                        Some(ch) => cur.push(ch),
                    }
                }
            }
            '\'' => {
                in_word = true;
                loop {
                    match chars.next() {
                        None => return Err(LexError::Unterminated('\'')),
                        Some('\'') => break,
                        Some(ch) => cur.push(ch),
                    }
                }
            }
            '\\' => {
                in_word = true;
                if let Some(e) = chars.next() {
                    cur.push(e);
                }
            }
            '#' if shell && !in_word => break,
            ';' | '|' | '&' | '<' | '>' | '$' | '`' | '(' | ')' if shell => {
                let mut s = c.to_string();
                if let Some(&n) = chars.peek()
                    && matches!((c, n), ('&', '&') | ('|', '|') | ('$', '('))
                {
                    s.push(n);
                }
                return Err(LexError::Shell(s));
            }
            c => {
                in_word = true;
                cur.push(c);
            }
        }
    }
    if in_word {
        out.push(cur);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn continuation_lines_join_and_keep_the_first_number() {
        let l = logical_lines("a\r\niptables -A INPUT \\\n   -j DROP\n# x \\\nb");
        assert_eq!(
            l,
            [
                Line {
                    no: 1,
                    text: "a".into(),
                    may_fail: false
                },
                Line {
                    no: 2,
                    text: "iptables -A INPUT -j DROP".into(),
                    may_fail: false
                },
                Line {
                    no: 4,
                    text: "# x \\".into(),
                    may_fail: false
                },
                Line {
                    no: 5,
                    text: "b".into(),
                    may_fail: false
                },
            ]
        );
    }

    #[test]
    fn quotes_and_escapes() {
        assert_eq!(
            words(r#"-m comment --comment "a \"b\" \\ c" 'd e' f\ g"#, false).unwrap(),
            ["-m", "comment", "--comment", "a \"b\" \\ c", "d e", "f g"]
        );
        assert_eq!(words("--comment \"\"", false).unwrap(), ["--comment", ""]);
        assert_eq!(words("-j \"DROP", false), Err(LexError::Unterminated('"')));
    }

    #[test]
    fn shell_comments_and_syntax() {
        assert_eq!(
            words("iptables -F # flush it", true).unwrap(),
            ["iptables", "-F"]
        );
        assert_eq!(
            words("iptables -A INPUT -m comment --comment a#b -j DROP", true).unwrap(),
            [
                "iptables",
                "-A",
                "INPUT",
                "-m",
                "comment",
                "--comment",
                "a#b",
                "-j",
                "DROP"
            ]
        );
        assert_eq!(words("$IPT -F", true), Err(LexError::Shell("$".into())));
        assert_eq!(
            words("iptables -F && iptables -X", true),
            Err(LexError::Shell("&&".into()))
        );
        assert_eq!(
            words("-m comment --comment \"a;b|c\"", true).unwrap()[3],
            "a;b|c"
        );
        // iptables-save files have no shell syntax: `;` is a plain character there.
        assert_eq!(words("a;b", false).unwrap(), ["a;b"]);
    }
}
