//! [`TopologyError`]: one problem in a topology file, located by file, line and column.
//!
//! Every check in this module reports through [`Diagnostics`], which turns toml's byte spans into
//! 1-based `line:column` (columns count characters, not bytes) and collects every error, so a
//! user fixes a file in one pass instead of one error per deploy.

use std::fmt;
use std::ops::Range;

use serde::{Deserialize, Serialize};

/// One problem in a topology: `my_topology.toml:3:1: group task.http.lb: missing required key
/// "tasks"`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopologyError {
    /// The file name as the user gave it (`my_topology.toml`).
    pub file: String,
    /// 1-based line.
    pub line: usize,
    /// 1-based column, in characters.
    pub column: usize,
    /// The group (its table path) the problem is in, when there is one.
    pub group: Option<String>,
    /// What is wrong and what to do, lowercase, without a trailing period.
    pub message: String,
}

impl fmt::Display for TopologyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}: ", self.file, self.line, self.column)?;
        if let Some(group) = &self.group {
            write!(f, "group {group}: ")?;
        }
        f.write_str(&self.message)
    }
}

impl std::error::Error for TopologyError {}

/// Every error found in one topology file, in file order (never empty).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct TopologyErrors(pub Vec<TopologyError>);

impl TopologyErrors {
    /// The first error in file order.
    pub fn first(&self) -> &TopologyError {
        &self.0[0]
    }

    pub fn iter(&self) -> impl Iterator<Item = &TopologyError> {
        self.0.iter()
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// One error per line.
impl fmt::Display for TopologyErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, error) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{error}")?;
        }
        Ok(())
    }
}

impl std::error::Error for TopologyErrors {}

/// Collects errors for one file and locates byte spans in its text.
pub(super) struct Diagnostics<'a> {
    file: &'a str,
    text: &'a str,
    line_starts: Vec<usize>,
    errors: Vec<TopologyError>,
}

impl<'a> Diagnostics<'a> {
    pub(super) fn new(file: &'a str, text: &'a str) -> Self {
        let line_starts = std::iter::once(0)
            .chain(text.match_indices('\n').map(|(i, _)| i + 1))
            .collect();
        Diagnostics {
            file,
            text,
            line_starts,
            errors: Vec::new(),
        }
    }

    /// Records an error at the start of `span`.
    pub(super) fn report(
        &mut self,
        span: &Range<usize>,
        group: Option<&str>,
        message: impl Into<String>,
    ) {
        let (line, column) = self.line_column(span.start);
        self.errors.push(TopologyError {
            file: self.file.to_string(),
            line,
            column,
            group: group.map(str::to_string),
            message: message.into(),
        });
    }

    /// 1-based line and character column of a byte offset.
    pub(super) fn line_column(&self, offset: usize) -> (usize, usize) {
        let mut offset = offset.min(self.text.len());
        while !self.text.is_char_boundary(offset) {
            offset -= 1;
        }
        let line = self.line_starts.partition_point(|&start| start <= offset);
        let line_start = self.line_starts[line - 1];
        let column = self.text[line_start..offset].chars().count() + 1;
        (line, column)
    }

    /// How many errors have been reported so far.
    pub(super) fn count(&self) -> usize {
        self.errors.len()
    }

    /// The errors in file order, or `None` when the file is clean.
    pub(super) fn finish(mut self) -> Option<TopologyErrors> {
        if self.errors.is_empty() {
            return None;
        }
        // A stable sort keeps the order of several errors found at one position.
        self.errors.sort_by_key(|e| (e.line, e.column));
        Some(TopologyErrors(self.errors))
    }
}
