//! Why a rule set was not imported: every problem of the file, in line order, at once.

use std::fmt;

/// What kind of problem a line has.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProblemKind {
    /// Not valid input (iptables itself would refuse it).
    Syntax,
    /// Valid, but fw has no equivalent.
    Unsupported,
    /// Fine alone, but where it stands it makes the rules decide some packets differently than
    /// fw's fixed order can.
    NotEquivalent,
    /// The INPUT chain's default is ACCEPT.
    DefaultAccept,
    /// Needs a command-line option to be imported (named in the message).
    NeedsOption,
}

/// One problem: the line, the part of it at fault, why, and the line as written.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Problem {
    pub kind: ProblemKind,
    /// `None`: the file as a whole (e.g. no INPUT policy line).
    pub line: Option<usize>,
    pub value: String,
    pub message: String,
    pub text: String,
}

impl Problem {
    pub(crate) fn new(
        kind: ProblemKind,
        line: usize,
        value: impl Into<String>,
        message: impl Into<String>,
        text: impl Into<String>,
    ) -> Self {
        Problem {
            kind,
            line: Some(line),
            value: value.into(),
            message: message.into(),
            text: text.into(),
        }
    }

    fn fmt_in(&self, file: &str, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let at = self.line.map(|l| format!(":{l}")).unwrap_or_default();
        match self.kind {
            ProblemKind::Syntax => write!(f, "{file}{at}: {}: `{}`", self.message, self.value)?,
            _ => write!(
                f,
                "{file}{at}: cannot import `{}`: {}",
                self.value, self.message
            )?,
        }
        if !self.text.is_empty() {
            write!(f, "\n    {}", self.text)?;
        }
        Ok(())
    }
}

/// Problems shown in full; the rest are counted and their lines listed.
const SHOWN: usize = 40;

/// Why a file was not imported.
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    /// The OS error is part of the message (and not a `source`, so it is not printed twice).
    #[error("{file}: cannot read: {error}")]
    Read { file: String, error: std::io::Error },
    #[error("{}", Listing(.file, .problems))]
    Problems {
        file: String,
        problems: Vec<Problem>,
    },
    #[error("{file}: nothing to import: {reason}")]
    Nothing { file: String, reason: String },
}

struct Listing<'a>(&'a String, &'a Vec<Problem>);

impl fmt::Display for Listing<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (file, problems) = (self.0, self.1);
        for (i, p) in problems.iter().take(SHOWN).enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            p.fmt_in(file, f)?;
        }
        if problems.len() > SHOWN {
            let rest: Vec<usize> = problems[SHOWN..].iter().filter_map(|p| p.line).collect();
            write!(
                f,
                "\n... and {} more problems ({})",
                problems.len() - SHOWN,
                crate::lines_text(&rest)
            )?;
        }
        if problems.len() > 1 {
            let mut lines: Vec<usize> = problems.iter().filter_map(|p| p.line).collect();
            lines.dedup();
            let on = match lines.len() {
                0 => String::new(),
                1 => " on 1 line".to_string(),
                n => format!(" on {n} lines"),
            };
            write!(
                f,
                "\n{file}: {} problems{on}; nothing imported",
                problems.len()
            )?;
        }
        Ok(())
    }
}

impl ImportError {
    pub(crate) fn problems(file: &str, mut problems: Vec<Problem>) -> Self {
        problems.sort_by_key(|p| (p.line.is_none(), p.line));
        problems.dedup();
        ImportError::Problems {
            file: file.to_string(),
            problems,
        }
    }

    fn first(&self) -> Option<&Problem> {
        match self {
            ImportError::Problems { problems, .. } => problems.first(),
            _ => None,
        }
    }

    /// The line of the first problem.
    pub fn line(&self) -> Option<usize> {
        self.first().and_then(|p| p.line)
    }

    /// The part of the first problem's line that could not be imported.
    pub fn value(&self) -> Option<&str> {
        self.first().map(|p| p.value.as_str())
    }

    /// The kind of the first problem.
    pub fn kind(&self) -> Option<ProblemKind> {
        self.first().map(|p| p.kind)
    }

    /// Every problem, in line order.
    pub fn all(&self) -> &[Problem] {
        match self {
            ImportError::Problems { problems, .. } => problems,
            _ => &[],
        }
    }
}
